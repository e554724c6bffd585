/* mcq-bench thr / lat: Monocoque, libzmq and plain sockets side by side in one run, as
 * separate sender and receiver processes: the perf tools (tools/tool.h) next to mcq-bench,
 * the receiver (or REP) pinned to the second allowed CPU and the sender (or REQ) to the
 * first, over tcp://127.0.0.1. Implementations alternate within each size, so the noise of
 * this shared machine spreads over all of them. A failing implementation is reported and
 * the others still run; the bench then fails.
 *
 * thr: PUSH->PULL (raw: one byte stream), the receiver times from its first message for
 *      a fixed window; rate = (msgs - 1) / window.
 * lat: REQ->REP round trips after a warm-up, percentiles of every timed round trip
 *      (raw: a TCP ping-pong with the same spin policy as Monocoque). */
#include "affinity.h"
#include "bench.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Throughput windows, from the receiver's first message: quick mode measures fewer sizes
 * but keeps the full 1 s window, so its records mean the same as a full run's. */
#define THR_WINDOW_MS 1000
#define THR_WINDOW_MS_QUICK 1000
#define THR_COUNT_UNBOUNDED 1000000000000ull /* the window ends the run, not the count */
#define LAT_WARMUP 2000
#define LAT_WARMUP_QUICK 200
#define LAT_RTTS 15000
#define LAT_RTTS_QUICK 2000
#define BIND_EP "tcp://127.0.0.1:0"
#define RESULT_FD 3               /* where a tool writes its machine-readable lines */
#define START_TIMEOUT_MS 5000     /* until the receiver has bound */
#define RESULT_SLACK_MS 20000     /* beyond the expected run time, before giving up */
#define EXIT_TIMEOUT_MS 5000      /* for a tool to exit once it reported */
#define LAT_BUDGET_US_PER_RTT 500 /* generous round trip bound for the result timeout */
#define REAP_POLL_NS 5000000L
#define POLL_SLICE_MS 100     /* longest single wait, to notice a partner's exit */
#define SEND_REPORTS_MAX 4096 /* sender reports kept (a 1 s window makes at most ~700) */
#define PARTNER_GRACE_MS 2000 /* to read a result still in the pipe once the partner exited */
#define LINE_MAX_LEN 512
#define PATH_LEN 4096
#define MB 1e6
#define GOAL_THR_SMALL 4.0 /* 64 B: mcq msg/s >= 4x libzmq */
#define GOAL_THR_LARGE 0.9 /* 64 KiB: mcq bytes/s >= 90% of raw */
#define GOAL_LAT_RAW 1.5   /* 64 B p50: mcq <= 1.5x raw ping-pong */
#define GOAL_LAT_ZMQ 0.2   /* 64 B p50: mcq <= 0.2x libzmq */

enum impl { IMPL_RAW, IMPL_ZMQ, IMPL_MCQ, IMPL_COUNT };
static const char *const impl_tool[IMPL_COUNT] = {"raw", "zmq", "mcq"};
static const char *const impl_name[IMPL_COUNT] = {"raw", "libzmq", "mcq"};

static const size_t thr_sizes[] = {64, 256, 1024, 4096, 16384, 65536};
static const size_t thr_sizes_quick[] = {64, 1024, 65536};
static const size_t lat_sizes[] = {64, 1024};
#define THR_SIZES_MAX (sizeof(thr_sizes) / sizeof(thr_sizes[0]))
#define LAT_SIZES (sizeof(lat_sizes) / sizeof(lat_sizes[0]))

struct tool_proc {
    pid_t pid;     /* 0 once collected */
    int status;    /* wait status once collected */
    double cpu_ns; /* user + system time of its whole life, once collected */
    int fd;        /* read end of the tool's result lines */
    int err_fd;    /* read end of its stderr when quiet, else -1 */
    char buf[LINE_MAX_LEN];
    size_t len;
};

/* One measurement's outcome; NAN fields mean it failed. */
struct thr_res {
    double msgs_per_s, mb_per_s, allocs_per_msg, sender_allocs_per_msg;
    double cpu_ns_per_msg; /* receiver + sender, whole lives */
};
struct lat_res {
    double p50_us, p99_us, p999_us, allocs_per_msg;
    double cpu_us_per_rtt; /* REQ + REP, whole lives, warm-up included */
};

static struct thr_res thr_table[IMPL_COUNT][THR_SIZES_MAX];
static struct lat_res lat_table[IMPL_COUNT][LAT_SIZES];

static int tool_path(const char *impl, const char *role, char *out, size_t len)
{
    char self[PATH_LEN];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n < 0)
        return -errno;
    self[n] = '\0';
    char *slash = strrchr(self, '/');
    if (slash)
        *slash = '\0';
    int w = snprintf(out, len, "%s/%s_%s", self, impl, role);
    return w > 0 && (size_t)w < len ? 0 : -ENAMETOOLONG;
}

struct spawn_opts {
    unsigned cpu; /* nth allowed CPU */
    uint64_t window_ms, warmup;
    unsigned spin_us;
    bool quiet;
};

/* Starts `<impl>_<role> endpoint size count` pinned to o->cpu, with its result lines on a
 * pipe (non-blocking for the tool: a report it cannot write is dropped, never waited for)
 * and its libzmq-style report discarded. With o->quiet its stderr is kept on a pipe too,
 * shown only if the measurement fails (a sender that is cut off complains as it dies).
 * 0 or a negative errno. */
static int spawn_tool(const char *impl, const char *role, const char *endpoint, size_t size,
                      uint64_t count, const struct spawn_opts *o, struct tool_proc *p)
{
    char path[PATH_LEN], size_s[32], count_s[32], win_s[32], warm_s[32], spin_s[32];
    int rc = tool_path(impl, role, path, sizeof(path));
    if (rc < 0)
        return rc;
    if (access(path, X_OK) != 0) {
        fprintf(stderr, "mcq-bench: %s: %s\n", path, strerror(errno));
        return -ENOENT;
    }
    snprintf(size_s, sizeof(size_s), "%zu", size);
    snprintf(count_s, sizeof(count_s), "%" PRIu64, count);
    snprintf(win_s, sizeof(win_s), "%" PRIu64, o->window_ms);
    snprintf(warm_s, sizeof(warm_s), "%" PRIu64, o->warmup);
    snprintf(spin_s, sizeof(spin_s), "%u", o->spin_us);
    int pfd[2], efd[2] = {-1, -1};
    if (pipe2(pfd, O_CLOEXEC) < 0)
        return -errno;
    if (fcntl(pfd[1], F_SETFL, O_NONBLOCK) < 0 || (o->quiet && pipe2(efd, O_CLOEXEC) < 0)) {
        rc = -errno;
        close(pfd[0]);
        close(pfd[1]);
        return rc;
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        rc = -errno;
        close(pfd[0]);
        close(pfd[1]);
        if (o->quiet) {
            close(efd[0]);
            close(efd[1]);
        }
        return rc;
    }
    if (pid == 0) {
        int devnull = open("/dev/null", O_WRONLY);
        if (dup2(pfd[1], RESULT_FD) < 0 || devnull < 0 || dup2(devnull, STDOUT_FILENO) < 0 ||
            (o->quiet && dup2(efd[1], STDERR_FILENO) < 0) || bench_pin_thread(o->cpu) < 0)
            _exit(127);
        setenv("MCQ_PERF_RESULT_FD", "3", 1);
        setenv("MCQ_PERF_WINDOW_MS", win_s, 1);
        setenv("MCQ_PERF_WARMUP", warm_s, 1);
        setenv("MCQ_SPIN_US", spin_s, 1);
        setenv("MCQ_SHARDS", "1", 1);
        execl(path, path, endpoint, size_s, count_s, (char *)NULL);
        _exit(127);
    }
    close(pfd[1]);
    if (o->quiet)
        close(efd[1]);
    *p = (struct tool_proc){.pid = pid, .fd = pfd[0], .err_fd = efd[0]};
    return 0;
}

/* waitpid that also keeps the tool's CPU time. */
static pid_t wait_tool(struct tool_proc *p, int flags)
{
    struct rusage ru;
    pid_t r = wait4(p->pid, &p->status, flags, &ru);
    if (r == p->pid)
        p->cpu_ns = (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e9 +
                    (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1e3;
    return r;
}

/* Waits for the tool's next line starting with `prefix` and copies the rest into out.
 * When `partner` (the other tool of the pair, or NULL) exits first, the wait is cut short. */
static int read_line(struct tool_proc *p, const char *prefix, int timeout_ms,
                     struct tool_proc *partner, char *out, size_t out_len)
{
    uint64_t deadline = bench_now_ns() + (uint64_t)timeout_ms * 1000000ull;
    size_t plen = strlen(prefix);
    for (;;) {
        char *nl;
        while ((nl = memchr(p->buf, '\n', p->len))) {
            *nl = '\0';
            bool match = strncmp(p->buf, prefix, plen) == 0 && p->buf[plen] == ' ';
            if (match)
                snprintf(out, out_len, "%s", p->buf + plen + 1);
            size_t used = (size_t)(nl + 1 - p->buf);
            memmove(p->buf, nl + 1, p->len - used);
            p->len -= used;
            if (match)
                return 0;
        }
        uint64_t now = bench_now_ns();
        if (partner && partner->pid > 0 && wait_tool(partner, WNOHANG) > 0) {
            partner->pid = 0;
            uint64_t grace = now + PARTNER_GRACE_MS * 1000000ull;
            deadline = grace < deadline ? grace : deadline;
        }
        /* Looks at the pipe at least once, so a zero timeout still reads what is there. */
        int wait_ms = now >= deadline ? 0 : (int)((deadline - now) / 1000000) + 1;
        struct pollfd pfd = {.fd = p->fd, .events = POLLIN};
        int rc = poll(&pfd, 1, wait_ms < POLL_SLICE_MS ? wait_ms : POLL_SLICE_MS);
        if (rc < 0 && errno != EINTR)
            return -errno;
        if (rc == 0 && now >= deadline)
            return -ETIMEDOUT;
        if (rc <= 0)
            continue;
        if (p->len == sizeof(p->buf))
            return -EPROTO;
        ssize_t n = read(p->fd, p->buf + p->len, sizeof(p->buf) - p->len);
        if (n == 0)
            return -EPIPE; /* exited without the line */
        if (n < 0 && errno != EINTR)
            return -errno;
        if (n > 0)
            p->len += (size_t)n;
    }
}

/* Waits up to timeout_ms for the tool to exit, then kills it. Returns its exit status, or
 * -1 when it died of a signal (or had to be killed). Its pipes stay open. */
static int collect(struct tool_proc *p, int timeout_ms)
{
    uint64_t deadline = bench_now_ns() + (uint64_t)timeout_ms * 1000000ull;
    while (p->pid > 0) {
        pid_t r = wait_tool(p, WNOHANG);
        if (r == p->pid || (r < 0 && errno != EINTR)) {
            p->pid = 0;
        } else if (bench_now_ns() >= deadline) {
            kill(p->pid, SIGKILL);
            wait_tool(p, 0);
            p->pid = 0;
        } else {
            nanosleep(&(struct timespec){.tv_nsec = REAP_POLL_NS}, NULL);
        }
    }
    return WIFEXITED(p->status) ? WEXITSTATUS(p->status) : -1;
}

/* collect(), then closes the tool's pipes. */
static int reap(struct tool_proc *p, int timeout_ms)
{
    int status = collect(p, timeout_ms);
    if (p->fd >= 0)
        close(p->fd);
    if (p->err_fd >= 0)
        close(p->err_fd);
    p->fd = p->err_fd = -1;
    return status;
}

/* Kills the tool now (if it still runs) and waits for it; pipes stay open. */
static void stop_tool(struct tool_proc *p)
{
    if (p->pid > 0)
        kill(p->pid, SIGKILL);
    collect(p, EXIT_TIMEOUT_MS);
}

static void kill_tool(struct tool_proc *p)
{
    stop_tool(p);
    reap(p, 0);
}

/* "key=value" from a result line, as a double; NAN when absent. */
static double field(const char *line, const char *key)
{
    size_t klen = strlen(key);
    for (const char *p = line; (p = strstr(p, key)); p += klen) {
        if ((p == line || p[-1] == ' ') && p[klen] == '=')
            return strtod(p + klen + 1, NULL);
    }
    return NAN;
}

/* Shows what a quiet tool wrote to stderr (it has exited or been killed). */
static void show_stderr(struct tool_proc *p, const char *who)
{
    char buf[LINE_MAX_LEN];
    ssize_t n;
    while (p->err_fd >= 0 && (n = read(p->err_fd, buf, sizeof(buf))) > 0)
        fprintf(stderr, "mcq-bench: %s said: %.*s", who, (int)n, buf);
}

/* After the sender was stopped: its allocations per message over the second half of its
 * "send" reports (the first half covers the ramp-up, when caches and queues fill), or NAN
 * with fewer than three reports. */
static double sender_allocs_per_msg(struct tool_proc *p)
{
    static double msgs[SEND_REPORTS_MAX], allocs[SEND_REPORTS_MAX];
    unsigned n = 0;
    char line[LINE_MAX_LEN];
    while (n < SEND_REPORTS_MAX && read_line(p, "send", 0, NULL, line, sizeof(line)) == 0) {
        msgs[n] = field(line, "msgs");
        allocs[n++] = field(line, "allocs");
    }
    if (n < 3 || !(allocs[0] >= 0))
        return NAN;
    unsigned mid = n / 2;
    return (allocs[n - 1] - allocs[mid]) / (msgs[n - 1] - msgs[mid]);
}

static double per_msg(double allocs, double msgs)
{
    return allocs >= 0 && msgs > 0 ? allocs / msgs : NAN;
}

static const char *policy(enum impl i, bool lat, unsigned spin_us, char *buf, size_t len)
{
    switch (i) {
    case IMPL_MCQ:
        snprintf(buf, len, "1 shard/process, spin %u us then io_uring wait", spin_us);
        break;
    case IMPL_RAW:
        snprintf(buf, len, "%sspin %u us on send/recv(MSG_DONTWAIT), then blocking",
                 lat ? "" : "one TCP stream in 256 KiB blocks, ", spin_us);
        break;
    default:
        snprintf(buf, len,
                 "blocking; default context: its I/O thread shares the pinned CPU; HWM 1000");
        break;
    }
    return buf;
}

#define FAILURES_MAX 32
#define FAILURE_LEN 160
static char failures[FAILURES_MAX][FAILURE_LEN];
static unsigned failure_count;

/* Reports a failed measurement now (stderr) and again under the table. */
static void fail_note(enum impl i, const char *bench, size_t size, int rc, const char *stage)
{
    char text[FAILURE_LEN];
    snprintf(text, sizeof(text), "%s %s %zu B: %s: %s", bench, impl_name[i], size, stage,
             strerror(-rc));
    fprintf(stderr, "mcq-bench: FAILED %s\n", text);
    if (failure_count < FAILURES_MAX)
        memcpy(failures[failure_count++], text, sizeof(text));
}

static void print_failures(void)
{
    for (unsigned f = 0; f < failure_count; f++)
        printf("FAILED: %s\n", failures[f]);
    failure_count = 0;
}

static int thr_one(struct bench_ctx *ctx, enum impl i, size_t size, struct thr_res *res)
{
    *res = (struct thr_res){NAN, NAN, NAN, NAN, NAN};
    uint64_t window_ms = ctx->quick ? THR_WINDOW_MS_QUICK : THR_WINDOW_MS;
    struct spawn_opts ro = {.cpu = 1, .window_ms = window_ms, .spin_us = ctx->spin_us};
    struct spawn_opts so = {.cpu = 0, .spin_us = ctx->spin_us, .quiet = true};
    struct tool_proc rx = {.fd = -1, .err_fd = -1}, tx = {.fd = -1, .err_fd = -1};
    char ep[LINE_MAX_LEN], line[LINE_MAX_LEN];
    const char *stage = "start receiver";
    int rc = spawn_tool(impl_tool[i], "local_thr", BIND_EP, size, THR_COUNT_UNBOUNDED, &ro, &rx);
    if (rc == 0 && (stage = "bind",
                    rc = read_line(&rx, "endpoint", START_TIMEOUT_MS, NULL, ep, sizeof(ep))) == 0)
        rc = (stage = "start sender",
              spawn_tool(impl_tool[i], "remote_thr", ep, size, THR_COUNT_UNBOUNDED, &so, &tx));
    if (rc == 0)
        rc = (stage = "transfer",
              read_line(&rx, "thr", (int)window_ms + RESULT_SLACK_MS, &tx, line, sizeof(line)));
    stop_tool(&tx);
    if (rc < 0) {
        kill_tool(&rx);
        show_stderr(&tx, "sender");
        reap(&tx, 0);
        fail_note(i, "thr", size, rc, stage);
        return rc;
    }
    res->sender_allocs_per_msg = sender_allocs_per_msg(&tx);
    reap(&tx, 0);
    if (reap(&rx, EXIT_TIMEOUT_MS) != 0)
        fprintf(stderr, "mcq-bench: thr %s %zu B: receiver did not exit cleanly\n", impl_name[i],
                size);
    double msgs = field(line, "msgs"), ns = field(line, "ns");
    if (!(msgs > 1 && ns > 0)) {
        fail_note(i, "thr", size, -EPROTO, "result");
        return -EPROTO;
    }
    res->msgs_per_s = (msgs - 1) * 1e9 / ns;
    res->mb_per_s = res->msgs_per_s * (double)size / MB;
    res->allocs_per_msg = per_msg(field(line, "allocs"), msgs);
    res->cpu_ns_per_msg = (rx.cpu_ns + tx.cpu_ns) / msgs;
    char pol[128];
    struct bench_rec *r = bench_rec_begin("thr", impl_name[i]);
    bench_rec_int(r, "size", (int64_t)size);
    bench_rec_num(r, "msgs_per_s", res->msgs_per_s);
    bench_rec_num(r, "mb_per_s", res->mb_per_s);
    bench_rec_num(r, "window_s", ns / 1e9);
    /* CPU time is robust where the rates are not: on a busy machine a pinned process gets
     * only part of its CPU. Whole lives, divided by the messages counted. */
    bench_rec_num(r, "rx_cpu_ns_per_msg", rx.cpu_ns / msgs);
    bench_rec_num(r, "tx_cpu_ns_per_msg", tx.cpu_ns / msgs);
    if (i != IMPL_ZMQ)
        bench_rec_int(r, "spin_us", ctx->spin_us);
    if (i == IMPL_MCQ) {
        bench_rec_num(r, "allocs_per_msg", res->allocs_per_msg);
        bench_rec_num(r, "malloc_bytes_per_msg", per_msg(field(line, "malloc_bytes"), msgs));
        bench_rec_num(r, "sender_allocs_per_msg", res->sender_allocs_per_msg);
    }
    bench_rec_str(r, "policy", policy(i, false, ctx->spin_us, pol, sizeof(pol)));
    bench_rec_end(r);
    return 0;
}

static int lat_one(struct bench_ctx *ctx, enum impl i, size_t size, struct lat_res *res)
{
    *res = (struct lat_res){NAN, NAN, NAN, NAN, NAN};
    uint64_t warm = ctx->quick ? LAT_WARMUP_QUICK : LAT_WARMUP;
    uint64_t count = warm + (ctx->quick ? LAT_RTTS_QUICK : LAT_RTTS);
    struct spawn_opts so = {.cpu = 1, .spin_us = ctx->spin_us};
    struct spawn_opts co = {.cpu = 0, .warmup = warm, .spin_us = ctx->spin_us};
    struct tool_proc srv = {.fd = -1, .err_fd = -1}, cli = {.fd = -1, .err_fd = -1};
    char ep[LINE_MAX_LEN], line[LINE_MAX_LEN];
    const char *stage = "start REP";
    int rc = spawn_tool(impl_tool[i], "local_lat", BIND_EP, size, count, &so, &srv);
    if (rc == 0 && (stage = "bind",
                    rc = read_line(&srv, "endpoint", START_TIMEOUT_MS, NULL, ep, sizeof(ep))) == 0)
        rc = (stage = "start REQ",
              spawn_tool(impl_tool[i], "remote_lat", ep, size, count, &co, &cli));
    int timeout_ms = (int)(count * LAT_BUDGET_US_PER_RTT / 1000) + RESULT_SLACK_MS;
    if (rc == 0)
        rc = (stage = "round trips", read_line(&cli, "lat", timeout_ms, &srv, line, sizeof(line)));
    if (rc < 0) {
        kill_tool(&cli);
        kill_tool(&srv);
        fail_note(i, "lat", size, rc, stage);
        return rc;
    }
    int cli_status = reap(&cli, EXIT_TIMEOUT_MS), srv_status = reap(&srv, EXIT_TIMEOUT_MS);
    if (cli_status != 0 || srv_status != 0)
        fprintf(stderr, "mcq-bench: lat %s %zu B: a tool did not exit cleanly\n", impl_name[i],
                size);
    double n = field(line, "n");
    res->p50_us = field(line, "p50_ns") / 1e3;
    res->p99_us = field(line, "p99_ns") / 1e3;
    res->p999_us = field(line, "p999_ns") / 1e3;
    /* Each round trip is one message sent and one received by the measuring process. */
    res->allocs_per_msg = per_msg(field(line, "allocs"), 2 * n);
    res->cpu_us_per_rtt = (cli.cpu_ns + srv.cpu_ns) / 1e3 / (double)count;
    char pol[128];
    struct bench_rec *r = bench_rec_begin("lat", impl_name[i]);
    bench_rec_int(r, "size", (int64_t)size);
    bench_rec_num(r, "p50_us", res->p50_us);
    bench_rec_num(r, "p99_us", res->p99_us);
    bench_rec_num(r, "p999_us", res->p999_us);
    bench_rec_num(r, "mean_us", field(line, "mean_ns") / 1e3);
    bench_rec_int(r, "rtts", (int64_t)n);
    bench_rec_num(r, "req_cpu_us_per_rtt", cli.cpu_ns / 1e3 / (double)count);
    bench_rec_num(r, "rep_cpu_us_per_rtt", srv.cpu_ns / 1e3 / (double)count);
    if (i != IMPL_ZMQ)
        bench_rec_int(r, "spin_us", ctx->spin_us);
    if (i == IMPL_MCQ) {
        bench_rec_num(r, "allocs_per_msg", res->allocs_per_msg);
        bench_rec_num(r, "malloc_bytes_per_msg", per_msg(field(line, "malloc_bytes"), 2 * n));
    }
    bench_rec_str(r, "policy", policy(i, true, ctx->spin_us, pol, sizeof(pol)));
    bench_rec_end(r);
    return 0;
}

static const char *verdict(double ratio, double goal, bool at_least)
{
    if (isnan(ratio))
        return "not measured";
    return (at_least ? ratio >= goal : ratio <= goal) ? "met" : "NOT met";
}

static void print_policies(bool lat, unsigned spin_us)
{
    char pol[128];
    printf("spin policy:\n");
    for (int i = 0; i < IMPL_COUNT; i++)
        printf("  %-7s %s\n", impl_name[i], policy((enum impl)i, lat, spin_us, pol, sizeof(pol)));
}

static int bench_thr(struct bench_ctx *ctx)
{
    const size_t *sizes = ctx->quick ? thr_sizes_quick : thr_sizes;
    size_t nsizes =
        ctx->quick ? sizeof(thr_sizes_quick) / sizeof(thr_sizes_quick[0]) : THR_SIZES_MAX;
    int failed = 0;
    for (size_t s = 0; s < nsizes; s++)
        for (int i = 0; i < IMPL_COUNT; i++)
            failed |= thr_one(ctx, (enum impl)i, sizes[s], &thr_table[i][s]) < 0;

    printf("\nthr: PUSH->PULL, tcp://127.0.0.1, receiver on CPU %d, sender on CPU %d, %d ms "
           "windows from the first message; CPU = receiver + sender, whole lives\n",
           1, 0, ctx->quick ? THR_WINDOW_MS_QUICK : THR_WINDOW_MS);
    printf("%8s %9s %12s %12s %9s %10s %10s %17s %17s\n", "size", "raw MB/s", "libzmq msg/s",
           "mcq msg/s", "mcq MB/s", "mcq/libzmq", "mcq/raw(B)", "CPU ns/msg zmq mcq",
           "mcq allocs/msg rx tx");
    for (size_t s = 0; s < nsizes; s++) {
        struct thr_res *raw = &thr_table[IMPL_RAW][s], *zmq = &thr_table[IMPL_ZMQ][s],
                       *mcq = &thr_table[IMPL_MCQ][s];
        printf("%8zu %9.0f %12.0f %12.0f %9.0f %10.2f %10.2f %8.0f %8.0f %8.2g %8.2g\n", sizes[s],
               raw->mb_per_s, zmq->msgs_per_s, mcq->msgs_per_s, mcq->mb_per_s,
               mcq->msgs_per_s / zmq->msgs_per_s, mcq->mb_per_s / raw->mb_per_s,
               zmq->cpu_ns_per_msg, mcq->cpu_ns_per_msg, mcq->allocs_per_msg,
               mcq->sender_allocs_per_msg);
    }
    print_policies(false, ctx->spin_us);
    double small = thr_table[IMPL_MCQ][0].msgs_per_s / thr_table[IMPL_ZMQ][0].msgs_per_s;
    double large =
        thr_table[IMPL_MCQ][nsizes - 1].mb_per_s / thr_table[IMPL_RAW][nsizes - 1].mb_per_s;
    printf("goals: 64 B mcq >= %.0fx libzmq: %.3fx %s; %zu B mcq >= %.0f%% of raw bytes: %.1f%% "
           "%s\n",
           GOAL_THR_SMALL, small, verdict(small, GOAL_THR_SMALL, true), sizes[nsizes - 1],
           GOAL_THR_LARGE * 100, large * 100, verdict(large, GOAL_THR_LARGE, true));
    print_failures();
    return failed ? -EIO : 0;
}

static int bench_lat(struct bench_ctx *ctx)
{
    int failed = 0;
    for (size_t s = 0; s < LAT_SIZES; s++)
        for (int i = 0; i < IMPL_COUNT; i++)
            failed |= lat_one(ctx, (enum impl)i, lat_sizes[s], &lat_table[i][s]) < 0;

    printf("\nlat: REQ->REP round trip (us), tcp://127.0.0.1, REP on CPU 1, REQ on CPU 0, %d "
           "timed after %d warm-up\n",
           ctx->quick ? LAT_RTTS_QUICK : LAT_RTTS, ctx->quick ? LAT_WARMUP_QUICK : LAT_WARMUP);
    printf("%8s %18s %18s %18s %12s %12s %21s %15s\n", "size", "raw p50/p99", "libzmq p50/p99",
           "mcq p50/p99", "p50 mcq/raw", "p50 mcq/zmq", "CPU us/RTT raw zmq mcq", "mcq allocs/msg");
    for (size_t s = 0; s < LAT_SIZES; s++) {
        struct lat_res *raw = &lat_table[IMPL_RAW][s], *zmq = &lat_table[IMPL_ZMQ][s],
                       *mcq = &lat_table[IMPL_MCQ][s];
        printf(
            "%8zu %8.1f/%-9.1f %8.1f/%-9.1f %8.1f/%-9.1f %12.2f %12.2f %7.1f %6.1f %6.1f %15.2g\n",
            lat_sizes[s], raw->p50_us, raw->p99_us, zmq->p50_us, zmq->p99_us, mcq->p50_us,
            mcq->p99_us, mcq->p50_us / raw->p50_us, mcq->p50_us / zmq->p50_us, raw->cpu_us_per_rtt,
            zmq->cpu_us_per_rtt, mcq->cpu_us_per_rtt, mcq->allocs_per_msg);
    }
    print_policies(true, ctx->spin_us);
    double vs_raw = lat_table[IMPL_MCQ][0].p50_us / lat_table[IMPL_RAW][0].p50_us;
    double vs_zmq = lat_table[IMPL_MCQ][0].p50_us / lat_table[IMPL_ZMQ][0].p50_us;
    printf("goals: 64 B p50 mcq <= %.1fx raw: %.3fx %s; <= %.1fx libzmq: %.3fx %s\n", GOAL_LAT_RAW,
           vs_raw, verdict(vs_raw, GOAL_LAT_RAW, false), GOAL_LAT_ZMQ, vs_zmq,
           verdict(vs_zmq, GOAL_LAT_ZMQ, false));
    print_failures();
    return failed ? -EIO : 0;
}

MCQ_BENCH("thr", "push_pull", bench_thr)
MCQ_BENCH("lat", "req_rep", bench_lat)
