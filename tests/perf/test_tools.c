/* The libzmq-compatible perf tools (perf/tools/tool.h): argument checking, and tiny runs
 * over tcp://127.0.0.1 with each side Monocoque's or libzmq's. No timing is asserted. */
#include <criterion/criterion.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define EXIT_USAGE 2
#define RESULT_FD 3
#define RUN_TIMEOUT_MS 10000
#define OUT_MAX 2048
#define PATH_LEN 4096

struct proc {
    pid_t pid;
    int out_fd;    /* the tool's stdout */
    int result_fd; /* its MCQ_PERF_RESULT_FD lines */
};

static const char *const impls[] = {"mcq", "zmq", "raw"};
static const char *const roles[] = {"local_thr", "remote_thr", "local_lat", "remote_lat"};

/* The tools are built into <build>/perf, this test into <build>/tests. */
static void tool_path(const char *name, char *out)
{
    char self[PATH_LEN / 2];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    cr_assert(n > 0);
    self[n] = '\0';
    *strrchr(self, '/') = '\0';
    int w = snprintf(out, PATH_LEN, "%s/../perf/%s", self, name);
    cr_assert(w > 0 && w < PATH_LEN);
    cr_assert(access(out, X_OK) == 0, "%s is not built", out);
}

/* Starts tool `name` with args (NULL-terminated) and an extra environment entry (or NULL),
 * stdout and result lines on pipes, stderr silenced. */
static struct proc spawn(const char *name, const char *const *args, const char *env)
{
    char path[PATH_LEN];
    tool_path(name, path);
    const char *argv[8] = {path};
    for (int i = 0; args[i]; i++)
        argv[i + 1] = args[i];
    int out[2], res[2];
    cr_assert(pipe2(out, O_CLOEXEC) == 0 && pipe2(res, O_CLOEXEC) == 0);
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        int devnull = open("/dev/null", O_WRONLY);
        dup2(out[1], STDOUT_FILENO);
        dup2(res[1], RESULT_FD);
        dup2(devnull, STDERR_FILENO);
        setenv("MCQ_PERF_RESULT_FD", "3", 1);
        if (env)
            putenv((char *)env);
        execv(path, (char *const *)argv);
        _exit(127);
    }
    close(out[1]);
    close(res[1]);
    return (struct proc){.pid = pid, .out_fd = out[0], .result_fd = res[0]};
}

/* Reads fd until EOF or the deadline into buf (NUL-terminated); returns the length. */
static size_t read_until(int fd, char *buf, size_t cap, const char *stop_at, int timeout_ms)
{
    size_t len = 0;
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        buf[len] = '\0';
        if (stop_at && strstr(buf, stop_at) && strchr(strstr(buf, stop_at), '\n'))
            return len;
        struct timespec t;
        clock_gettime(CLOCK_MONOTONIC, &t);
        long left =
            timeout_ms - ((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000);
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        if (left <= 0 || poll(&pfd, 1, (int)left) <= 0 || len + 1 >= cap)
            return len;
        ssize_t n = read(fd, buf + len, cap - 1 - len);
        if (n <= 0)
            return len;
        len += (size_t)n;
    }
}

/* Waits for the tool to exit within timeout_ms (killing it otherwise) and returns its exit
 * status, or -1 when it was killed or crashed. Closes its pipes. */
static int finish(struct proc *p, int timeout_ms)
{
    int status = 0;
    for (int waited = 0; waitpid(p->pid, &status, WNOHANG) == 0; waited += 10) {
        if (waited >= timeout_ms) {
            kill(p->pid, SIGKILL);
            waitpid(p->pid, &status, 0);
            status = -1;
            break;
        }
        nanosleep(&(struct timespec){.tv_nsec = 10000000}, NULL);
    }
    close(p->out_fd);
    close(p->result_fd);
    return status >= 0 && WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static int run_status(const char *name, const char *const *args, const char *env)
{
    struct proc p = spawn(name, args, env);
    return finish(&p, RUN_TIMEOUT_MS);
}

Test(perf_tools, bad_arguments_exit_2, .timeout = 60)
{
    static const char *const bad[][6] = {
        {NULL},
        {"tcp://127.0.0.1:0", "64", NULL},
        {"tcp://127.0.0.1:0", "64", "10", "1", "2", NULL},
        {"tcp://127.0.0.1:0", "abc", "10", NULL},
        {"tcp://127.0.0.1:0", "-1", "10", NULL},
        {"tcp://127.0.0.1:0", "64", "0", NULL},
        {"tcp://127.0.0.1:0", "64", "12x", NULL},
        {"tcp://127.0.0.1:0", "99999999999999", "10", NULL},
        {"", "64", "10", NULL},
    };
    char name[64];
    for (size_t i = 0; i < sizeof(impls) / sizeof(impls[0]); i++) {
        for (size_t r = 0; r < sizeof(roles) / sizeof(roles[0]); r++) {
            snprintf(name, sizeof(name), "%s_%s", impls[i], roles[r]);
            for (size_t b = 0; b < sizeof(bad) / sizeof(bad[0]); b++)
                cr_expect_eq(run_status(name, bad[b], NULL), EXIT_USAGE, "%s, case %zu", name, b);
            static const char *const good[] = {"tcp://127.0.0.1:0", "64", "10", NULL};
            cr_expect_eq(run_status(name, good, "MCQ_PERF_WINDOW_MS=soon"), EXIT_USAGE, "%s", name);
        }
    }
}

/* Starts <local> on an ephemeral port, points <remote> at it, and returns local's stdout. */
static void run_pair(const char *local, const char *remote, const char *size, const char *count,
                     char *out)
{
    const char *largs[] = {"tcp://127.0.0.1:0", size, count, NULL};
    struct proc l = spawn(local, largs, NULL);
    char line[OUT_MAX];
    read_until(l.result_fd, line, sizeof(line), "endpoint ", RUN_TIMEOUT_MS);
    char *ep = strstr(line, "endpoint ");
    cr_assert(ep, "%s reported no endpoint", local);
    ep += strlen("endpoint ");
    *strchr(ep, '\n') = '\0';
    const char *rargs[] = {ep, size, count, NULL};
    struct proc r = spawn(remote, rargs, NULL);
    read_until(l.out_fd, out, OUT_MAX, NULL, RUN_TIMEOUT_MS);
    cr_assert_eq(finish(&r, RUN_TIMEOUT_MS), 0, "%s failed", remote);
    cr_assert_eq(finish(&l, RUN_TIMEOUT_MS), 0, "%s failed", local);
}

Test(perf_tools, libzmq_and_raw_pairs_over_tcp, .timeout = 30)
{
    char out[OUT_MAX];
    run_pair("zmq_local_thr", "zmq_remote_thr", "64", "1000", out);
    cr_expect(strstr(out, "message count: 1000\n"), "%s", out);
    run_pair("raw_local_thr", "raw_remote_thr", "64", "1000", out);
    cr_expect(strstr(out, "message count: 1000\n"), "%s", out);
    run_pair("raw_local_lat", "raw_remote_lat", "64", "100", out);
}

Test(perf_tools, mcq_thr_pair_over_tcp, .timeout = 30)
{
    char out[OUT_MAX];
    run_pair("mcq_local_thr", "mcq_remote_thr", "64", "1000", out);
    cr_expect(strstr(out, "message size: 64 [B]\n"), "%s", out);
    cr_expect(strstr(out, "message count: 1000\n"), "%s", out);
    cr_expect(strstr(out, "[msg/s]\n") && strstr(out, "[Mb/s]\n"), "%s", out);
}

Test(perf_tools, libzmq_receiver_mcq_sender, .timeout = 30)
{
    char out[OUT_MAX];
    run_pair("zmq_local_thr", "mcq_remote_thr", "1024", "500", out);
    cr_expect(strstr(out, "message count: 500\n"), "%s", out);
}

Test(perf_tools, mcq_rep_libzmq_req, .timeout = 30)
{
    char out[OUT_MAX];
    run_pair("mcq_local_lat", "zmq_remote_lat", "64", "200", out);
    /* local_lat prints nothing; the REQ side checked every reply's size. */
    cr_expect_eq(out[0], '\0', "%s", out);
}

Test(perf_tools, libzmq_rep_mcq_req, .timeout = 30)
{
    char out[OUT_MAX];
    run_pair("zmq_local_lat", "mcq_remote_lat", "1024", "200", out);
}
