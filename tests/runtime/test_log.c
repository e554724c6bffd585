#include <criterion/criterion.h>
#include <criterion/redirect.h>

#include "runtime/log.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void redirect(void)
{
    cr_redirect_stderr();
}

Test(log, direct_line_has_level_and_text, .init = redirect)
{
    setenv("MCQ_LOG", "info", 1);
    mcq_log_info("hello %d", 42);
    fflush(stderr);
    cr_assert_stderr_neq_str("");
}

Test(log, below_level_is_silent, .init = redirect)
{
    setenv("MCQ_LOG", "error", 1);
    mcq_log_info("should not appear");
    fflush(stderr);
    cr_assert_stderr_eq_str("");
}

static void *shard_like(void *arg)
{
    (void)arg;
    cr_assert_eq(mcq_log_attach_thread(7), 0);
    for (int i = 0; i < 100; i++)
        mcq_log_warn("line %d", i);
    mcq_log_detach_thread();
    return NULL;
}

Test(log, shard_lines_reach_stderr_through_logger_thread)
{
    char path[] = "/tmp/mcq-log-XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    int saved = dup(2);
    dup2(fd, 2);
    setenv("MCQ_LOG", "warn", 1);
    cr_assert_eq(mcq_log_start(), 0);
    pthread_t t;
    pthread_create(&t, NULL, shard_like, NULL);
    pthread_join(t, NULL);
    mcq_log_stop();
    dup2(saved, 2);
    FILE *f = fopen(path, "r");
    char line[512];
    int count = 0, last = -1;
    while (fgets(line, sizeof(line), f)) {
        cr_assert(strstr(line, "shard7 WARN: line "), "bad line: %s", line);
        int v = atoi(strstr(line, "line ") + 5);
        cr_assert_gt(v, last, "lines out of order");
        last = v;
        count++;
    }
    fclose(f);
    unlink(path);
    /* The ring holds 256 lines, so none of the 100 may be dropped. */
    cr_assert_eq(count, 100);
    cr_assert_eq(mcq_log_dropped(), 0);
}
