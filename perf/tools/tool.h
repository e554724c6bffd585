/* The perf tools: libzmq's local_thr / remote_thr / local_lat / remote_lat, with the same
 * positional arguments and output, for three implementations (mcq_*, zmq_*, raw_*), so
 * either side of a measurement can be swapped for another one's (or for libzmq's own).
 * tool.c holds main() and argument parsing; each implementation file provides the four
 * roles below. One executable = tool.c + one implementation, built with TOOL_ROLE set.
 *
 * Extensions for mcq-bench (environment; the libzmq-compatible output is unchanged):
 *   MCQ_PERF_RESULT_FD=n   machine-readable lines go to fd n: "endpoint EP" once bound,
 *                          "thr msgs=.. ns=.. allocs=.. malloc_bytes=.." (local_thr),
 *                          "lat n=.. p50_ns=.. p99_ns=.. p999_ns=.. mean_ns=.. allocs=..
 *                          malloc_bytes=.." (remote_lat), and from mcq_remote_thr now and
 *                          then "send msgs=.. allocs=.. malloc_bytes=.." with its running
 *                          totals (mcq-bench takes the difference between two of them);
 *                          allocs -1 = not measured
 *   MCQ_PERF_WINDOW_MS=ms  local_thr stops this long after the first message (the
 *                          message count is then an upper bound)
 *   MCQ_PERF_WARMUP=n      remote_lat leaves the first n round trips out of the figures
 *   MCQ_SPIN_US=us         spin policy: Monocoque's runtime knob; the raw tools busy-poll
 *                          this long before blocking */
#ifndef MCQ_PERF_TOOL_H
#define MCQ_PERF_TOOL_H

#include <stddef.h>
#include <stdint.h>

#include "../hist.h"

#define TOOL_LOCAL_THR 1
#define TOOL_REMOTE_THR 2
#define TOOL_LOCAL_LAT 3
#define TOOL_REMOTE_LAT 4

#define TOOL_EXIT_USAGE 2   /* bad arguments */
#define TOOL_EXIT_FAILURE 1 /* bind/connect/transfer error */
#define TOOL_TIMEOUT_S 30   /* no progress for this long fails a run instead of hanging */

struct tool_args {
    const char *endpoint;
    size_t size;
    uint64_t count;     /* messages (thr) or round trips (lat), >= 1 */
    uint64_t window_ns; /* local_thr: 0 = run until count */
    uint64_t warmup;    /* remote_lat: untimed leading round trips (< count) */
    unsigned spin_us;
};

/* What local_thr measured: msgs received, ns from the first to the last, and allocation
 * counters over that interval (-1 when the implementation cannot count them). */
struct tool_thr_result {
    uint64_t msgs;
    uint64_t elapsed_ns;
    int64_t allocs;
    int64_t malloc_bytes;
};

/* What remote_lat measured: every timed round trip in rtt (ns), their total time, and
 * allocation counters over them as above. */
struct tool_lat_result {
    struct hist *rtt;
    uint64_t elapsed_ns;
    int64_t allocs;
    int64_t malloc_bytes;
};

/* The four roles, implemented once per implementation. Each returns 0 or a negative errno
 * and has printed the reason to stderr on failure. local_* call tool_report_endpoint once
 * bound. */
int tool_local_thr(const struct tool_args *a, struct tool_thr_result *out);
int tool_remote_thr(const struct tool_args *a);
int tool_local_lat(const struct tool_args *a);
int tool_remote_lat(const struct tool_args *a, struct tool_lat_result *out);

/* Tells mcq-bench (MCQ_PERF_RESULT_FD) the endpoint actually bound; no-op otherwise. */
void tool_report_endpoint(const char *endpoint);

/* Writes "send msgs=.. allocs=.. malloc_bytes=.." (running totals) for mcq-bench; no-op
 * without MCQ_PERF_RESULT_FD. */
void tool_report_sender(uint64_t msgs, int64_t allocs, int64_t malloc_bytes);

/* Monotonic clock in ns. */
uint64_t tool_now_ns(void);

#endif
