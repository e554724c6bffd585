/* Test helper: run an app binary as a user would (argv, stdin, stdout, stderr pipes), wait
 * for its "ready" line, read its output lines and its exit, every wait bounded. A child
 * dies with the test process (PR_SET_PDEATHSIG), and proc_reap_all kills what is left. */
#ifndef MCQ_TESTS_PROC_UTIL_H
#define MCQ_TESTS_PROC_UTIL_H

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <criterion/criterion.h>

/* Bound on any single wait for a child, in ms. */
#define PROC_WAIT_MS 10000
#define PROC_BUF 65536
#define PROC_MAX_CHILDREN 32
#define PROC_MAX_ENDPOINTS 4
#define PROC_EP_LEN 256

struct proc_lines {
    int fd;
    bool eof;
    char data[PROC_BUF];
    size_t len;
};

struct proc {
    pid_t pid;
    int pidfd;
    int in; /* the child's stdin, -1 once closed */
    struct proc_lines out, err;
    char errlog[PROC_BUF]; /* everything the child wrote to stderr, for failure messages */
    size_t errlog_len;
    bool reaped;
    int status;                                      /* exit code, or 128 + signal */
    char endpoints[PROC_MAX_ENDPOINTS][PROC_EP_LEN]; /* from "listening on" lines */
    unsigned nendpoints;
};

static struct proc *proc_children[PROC_MAX_CHILDREN];
static unsigned proc_nchildren;

static inline long proc_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

/* Starts argv[0] with argv (NULL-terminated). Fails the test when it cannot. */
static inline struct proc *proc_spawn(const char *const *argv)
{
    cr_assert(proc_nchildren < PROC_MAX_CHILDREN);
    int in[2], out[2], err[2];
    cr_assert(pipe2(in, O_CLOEXEC) == 0 && pipe2(out, O_CLOEXEC) == 0 &&
              pipe2(err, O_CLOEXEC) == 0);
    pid_t parent = getpid();
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(127);
        dup2(in[0], 0);
        dup2(out[1], 1);
        dup2(err[1], 2);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    struct proc *p = calloc(1, sizeof(*p));
    cr_assert(p);
    proc_children[proc_nchildren++] = p;
    p->pid = pid;
    p->pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    cr_assert(p->pidfd >= 0, "pidfd_open: %s", strerror(errno));
    close(in[0]);
    close(out[1]);
    close(err[1]);
    p->in = in[1];
    p->out.fd = out[0];
    p->err.fd = err[0];
    return p;
}

/* Reads what is available on l->fd into its buffer (and the stderr log). -1 at EOF. */
static inline int proc_fill(struct proc *p, struct proc_lines *l)
{
    if (l->eof)
        return -1;
    if (l->len == sizeof(l->data))
        return 0;
    ssize_t n = read(l->fd, l->data + l->len, sizeof(l->data) - l->len);
    if (n < 0 && errno == EINTR)
        return 0;
    if (n <= 0) {
        l->eof = true;
        return -1;
    }
    if (l == &p->err) {
        size_t room = sizeof(p->errlog) - 1 - p->errlog_len;
        size_t k = (size_t)n < room ? (size_t)n : room;
        memcpy(p->errlog + p->errlog_len, l->data + l->len, k);
        p->errlog_len += k;
        p->errlog[p->errlog_len] = '\0';
    }
    l->len += (size_t)n;
    return 0;
}

/* Next line (without '\n') from the child's stdout or stderr into line; its length, or -1
 * on timeout or EOF. */
static inline int proc_read_line(struct proc *p, struct proc_lines *l, char *line, size_t cap,
                                 int timeout_ms)
{
    long deadline = proc_now_ms() + timeout_ms;
    for (;;) {
        char *nl = memchr(l->data, '\n', l->len);
        if (nl) {
            size_t n = (size_t)(nl - l->data);
            size_t k = n < cap - 1 ? n : cap - 1;
            memcpy(line, l->data, k);
            line[k] = '\0';
            memmove(l->data, nl + 1, l->len - n - 1);
            l->len -= n + 1;
            return (int)k;
        }
        long left = deadline - proc_now_ms();
        struct pollfd pfd = {.fd = l->fd, .events = POLLIN};
        if (left <= 0 || poll(&pfd, 1, (int)left) <= 0)
            return -1;
        if (proc_fill(p, l) < 0 && !memchr(l->data, '\n', l->len))
            return -1;
    }
}

static inline int proc_out_line(struct proc *p, char *line, size_t cap)
{
    return proc_read_line(p, &p->out, line, cap, PROC_WAIT_MS);
}

/* Waits for "<prog>: ready" on stderr, collecting "listening on EP" endpoints. */
static inline void proc_wait_ready(struct proc *p)
{
    char line[1024];
    while (proc_read_line(p, &p->err, line, sizeof(line), PROC_WAIT_MS) >= 0) {
        const char *ep = strstr(line, ": listening on ");
        if (ep && p->nendpoints < PROC_MAX_ENDPOINTS)
            snprintf(p->endpoints[p->nendpoints++], PROC_EP_LEN, "%s",
                     ep + strlen(": listening on "));
        if (strstr(line, ": ready"))
            return;
    }
    cr_assert_fail("app never got ready; stderr:\n%s", p->errlog);
}

static inline void proc_write(struct proc *p, const char *text)
{
    size_t len = strlen(text);
    cr_assert(write(p->in, text, len) == (ssize_t)len);
}

static inline void proc_close_stdin(struct proc *p)
{
    if (p->in >= 0)
        close(p->in);
    p->in = -1;
}

/* Waits up to timeout_ms for the child to exit while draining its output; returns its exit
 * code (128 + signal when killed), or -1 after killing it on timeout. */
static inline int proc_wait_exit(struct proc *p, int timeout_ms)
{
    long deadline = proc_now_ms() + timeout_ms;
    while (!p->reaped) {
        long left = deadline - proc_now_ms();
        if (left <= 0) {
            kill(p->pid, SIGKILL);
            waitpid(p->pid, NULL, 0);
            p->reaped = true;
            p->status = -1;
            break;
        }
        struct proc_lines *ls[2] = {&p->err, &p->out};
        struct pollfd pfd[3] = {{.fd = p->pidfd, .events = POLLIN}};
        for (int i = 0; i < 2; i++) {
            /* A full buffer the test did not read is dropped so the child never blocks. */
            if (ls[i]->len == sizeof(ls[i]->data))
                ls[i]->len = 0;
            pfd[i + 1] = (struct pollfd){.fd = ls[i]->eof ? -1 : ls[i]->fd, .events = POLLIN};
        }
        if (poll(pfd, 3, (int)left) < 0)
            continue;
        for (int i = 0; i < 2; i++)
            if (pfd[i + 1].revents)
                proc_fill(p, ls[i]);
        int status;
        if (pfd[0].revents && waitpid(p->pid, &status, WNOHANG) == p->pid) {
            p->reaped = true;
            p->status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        }
    }
    /* Whatever the child wrote last is still in the pipes. */
    while (proc_fill(p, &p->err) == 0 && p->err.len < sizeof(p->err.data))
        ;
    while (proc_fill(p, &p->out) == 0 && p->out.len < sizeof(p->out.data))
        ;
    return p->status;
}

/* Sends sig and waits for the exit code. */
static inline int proc_signal_and_wait(struct proc *p, int sig)
{
    cr_assert(kill(p->pid, sig) == 0);
    return proc_wait_exit(p, PROC_WAIT_MS);
}

/* Runs argv to completion with stdin closed; returns the exit code. */
static inline int proc_run(const char *const *argv, struct proc **out)
{
    struct proc *p = proc_spawn(argv);
    proc_close_stdin(p);
    int rc = proc_wait_exit(p, PROC_WAIT_MS);
    if (out)
        *out = p;
    return rc;
}

/* Criterion .fini: no child outlives its test. */
static inline void proc_reap_all(void)
{
    for (unsigned i = 0; i < proc_nchildren; i++) {
        struct proc *p = proc_children[i];
        if (!p->reaped) {
            kill(p->pid, SIGKILL);
            waitpid(p->pid, NULL, 0);
        }
        close(p->pidfd);
        close(p->out.fd);
        close(p->err.fd);
        proc_close_stdin(p);
        free(p);
    }
    proc_nchildren = 0;
}

#endif
