#include "tool.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#if !defined(TOOL_ROLE) || !defined(TOOL_NAME)
#error "build with -DTOOL_ROLE=TOOL_<role> -DTOOL_NAME=\"<executable name>\""
#endif

#define TOOL_SIZE_MAX (1ull << 30) /* bytes per message accepted on the command line */
#define NS_PER_MS 1000000ull
#define NS_PER_US 1000.0
#define BITS_PER_BYTE 8
#define BITS_PER_MBIT 1e6

static int result_fd = -1;

uint64_t tool_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void tool_report_endpoint(const char *endpoint)
{
    if (result_fd >= 0)
        dprintf(result_fd, "endpoint %s\n", endpoint);
}

void tool_report_sender(uint64_t msgs, int64_t allocs, int64_t malloc_bytes)
{
    if (result_fd >= 0)
        dprintf(result_fd, "send msgs=%llu allocs=%lld malloc_bytes=%lld\n",
                (unsigned long long)msgs, (long long)allocs, (long long)malloc_bytes);
}

/* A decimal number with nothing around it, at most max. */
static bool parse_u64(const char *s, uint64_t max, uint64_t *out)
{
    if (!s || *s < '0' || *s > '9')
        return false;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || v > max)
        return false;
    *out = v;
    return true;
}

static bool env_u64(const char *name, uint64_t max, uint64_t *out)
{
    const char *s = getenv(name);
    if (!s)
        return true;
    if (parse_u64(s, max, out))
        return true;
    fprintf(stderr, "%s: bad %s=%s\n", TOOL_NAME, name, s);
    return false;
}

static int usage(void)
{
#if TOOL_ROLE == TOOL_LOCAL_THR
    const char *args = "<bind-to> <message-size> <message-count>";
#elif TOOL_ROLE == TOOL_REMOTE_THR
    const char *args = "<connect-to> <message-size> <message-count>";
#elif TOOL_ROLE == TOOL_LOCAL_LAT
    const char *args = "<bind-to> <message-size> <roundtrip-count>";
#else
    const char *args = "<connect-to> <message-size> <roundtrip-count>";
#endif
    fprintf(stderr, "usage: %s %s\n", TOOL_NAME, args);
    return TOOL_EXIT_USAGE;
}

static bool parse_args(int argc, char **argv, struct tool_args *a)
{
    bool thr = TOOL_ROLE == TOOL_LOCAL_THR || TOOL_ROLE == TOOL_REMOTE_THR;
    /* libzmq's thr tools take an optional <enable_curve>; only "0" (off) is supported. */
    if (thr && argc == 5 && strcmp(argv[4], "0") == 0)
        argc = 4;
    if (argc != 4 || !*argv[1])
        return false;
    uint64_t size, win_ms = 0, spin = 0, fd = 0;
    a->endpoint = argv[1];
    if (!parse_u64(argv[2], TOOL_SIZE_MAX, &size) || !parse_u64(argv[3], UINT64_MAX, &a->count) ||
        a->count == 0)
        return false;
    a->size = (size_t)size;
    if (!env_u64("MCQ_PERF_WINDOW_MS", UINT64_MAX / NS_PER_MS, &win_ms) ||
        !env_u64("MCQ_PERF_WARMUP", a->count - 1, &a->warmup) ||
        !env_u64("MCQ_SPIN_US", UINT32_MAX, &spin) || !env_u64("MCQ_PERF_RESULT_FD", 1024, &fd))
        return false;
    a->window_ns = win_ms * NS_PER_MS;
    a->spin_us = (unsigned)spin;
    if (getenv("MCQ_PERF_RESULT_FD"))
        result_fd = (int)fd;
    return true;
}

#if TOOL_ROLE == TOOL_LOCAL_THR
static int run(const struct tool_args *a)
{
    struct tool_thr_result r = {0};
    int rc = tool_local_thr(a, &r);
    if (rc < 0)
        return rc;
    double ns = r.elapsed_ns ? (double)r.elapsed_ns : 1.0;
    double msgs_per_s = (double)r.msgs * 1e9 / ns;
    printf("message size: %zu [B]\n", a->size);
    printf("message count: %llu\n", (unsigned long long)r.msgs);
    printf("mean throughput: %.0f [msg/s]\n", msgs_per_s);
    printf("mean throughput: %.3f [Mb/s]\n",
           msgs_per_s * (double)a->size * BITS_PER_BYTE / BITS_PER_MBIT);
    if (result_fd >= 0)
        dprintf(result_fd, "thr msgs=%llu ns=%llu allocs=%lld malloc_bytes=%lld\n",
                (unsigned long long)r.msgs, (unsigned long long)r.elapsed_ns, (long long)r.allocs,
                (long long)r.malloc_bytes);
    return 0;
}
#elif TOOL_ROLE == TOOL_REMOTE_THR
static int run(const struct tool_args *a)
{
    return tool_remote_thr(a);
}
#elif TOOL_ROLE == TOOL_LOCAL_LAT
static int run(const struct tool_args *a)
{
    return tool_local_lat(a);
}
#else
static int run(const struct tool_args *a)
{
    struct tool_lat_result r = {.rtt = hist_new()};
    if (!r.rtt)
        return -ENOMEM;
    int rc = tool_remote_lat(a, &r);
    if (rc == 0) {
        uint64_t timed = a->count - a->warmup;
        printf("message size: %zu [B]\n", a->size);
        printf("roundtrip count: %llu\n", (unsigned long long)timed);
        /* libzmq's figure: one way, i.e. half the mean round trip. */
        printf("average latency: %.3f [us]\n",
               (double)r.elapsed_ns / NS_PER_US / (double)(2 * timed));
        if (result_fd >= 0)
            dprintf(result_fd,
                    "lat n=%llu p50_ns=%llu p99_ns=%llu p999_ns=%llu mean_ns=%.0f allocs=%lld "
                    "malloc_bytes=%lld\n",
                    (unsigned long long)r.rtt->count,
                    (unsigned long long)hist_percentile(r.rtt, 50),
                    (unsigned long long)hist_percentile(r.rtt, 99),
                    (unsigned long long)hist_percentile(r.rtt, 99.9), hist_mean(r.rtt),
                    (long long)r.allocs, (long long)r.malloc_bytes);
    }
    hist_free(r.rtt);
    return rc;
}
#endif

int main(int argc, char **argv)
{
    struct tool_args a = {0};
    if (!parse_args(argc, argv, &a))
        return usage();
    int rc = run(&a);
    fflush(stdout);
    if (rc < 0) {
        fprintf(stderr, "%s: %s\n", TOOL_NAME, strerror(-rc));
        return TOOL_EXIT_FAILURE;
    }
    return 0;
}
