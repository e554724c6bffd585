/* Client side of the echo benchmarks, shared by every echo server measured (the raw
 * blocking-socket baseline and the Monocoque server): the server must send back every byte
 * it receives, in order. Messages are `size`-byte chunks of that byte stream. */
#ifndef MCQ_PERF_ECHO_CLIENT_H
#define MCQ_PERF_ECHO_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "hist.h"

#define ECHO_INFLIGHT_MAX (64 * 1024) /* bytes sent but not yet echoed, in the stream */
#define ECHO_TIMEOUT_S 5              /* no progress for this long fails the measurement */

struct echo_opts {
    size_t size;        /* bytes per message, 1..ECHO_INFLIGHT_MAX */
    unsigned warmup;    /* round trips before the timed ones */
    unsigned rtts;      /* timed round trips */
    uint64_t stream_ns; /* how long the pipelined stream keeps sending */
};

struct echo_result {
    double p50_us, p99_us, p999_us; /* ping-pong round trip */
    double msgs_per_s;              /* pipelined stream */
};

/* Connects to 127.0.0.1:port with TCP_NODELAY; returns the fd or a negative errno. */
int echo_connect_loopback(uint16_t port);

/* Ping-pong: sends one message, reads its echo, checks it, warmup + rtts times; records
 * each timed round trip (ns) into rtt. Blocking I/O; bounded by SO_RCVTIMEO/SO_SNDTIMEO,
 * which it sets on fd. Returns 0 or a negative errno (-ETIMEDOUT, -EPROTO on a bad echo). */
int echo_pingpong(int fd, size_t size, unsigned warmup, unsigned rtts, struct hist *rtt);

/* Pipelined stream: writes messages for duration_ns while reading echoes, never more than
 * ECHO_INFLIGHT_MAX bytes unechoed (so neither side blocks on a full buffer), then drains.
 * *msgs_per_s = echoed messages / time from first send to last echo. 0 or a negative errno. */
int echo_stream(int fd, size_t size, uint64_t duration_ns, double *msgs_per_s);

/* echo_pingpong then echo_stream on one connection (borrowed, left open). */
int echo_measure(int fd, const struct echo_opts *o, struct echo_result *out);

#endif
