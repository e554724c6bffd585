/* The perf tools on plain sockets (raw_local_thr etc.): the floor the messaging
 * implementations are measured against, over the same tcp:// (or ipc://) endpoints.
 * Throughput is one byte stream written and read in RAW_CHUNK blocks, counted in
 * message-size units: the byte rate of the connection, with no framing or per-message
 * work at all. Latency is a ping-pong of message-size blocks with TCP_NODELAY. Every wait
 * (a read with nothing to read, a write into a full buffer) busy-polls for MCQ_SPIN_US, as
 * Monocoque's shard loop does, then blocks. */
#include "tool.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "runtime/endpoint.h"

#define RAW_CHUNK (256 * 1024) /* bytes per write()/read() of the stream (as baseline.md 4a) */
#define NS_PER_US 1000ull

static int sys_err(const char *what)
{
    int err = errno;
    fprintf(stderr, "raw: %s: %s\n", what, strerror(err));
    return -err;
}

static int set_timeouts(int fd)
{
    struct timeval tv = {.tv_sec = TOOL_TIMEOUT_S};
    if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) ||
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)))
        return sys_err("setsockopt");
    return 0;
}

static int resolve(const char *text, bool passive, struct mcq_sockaddr *addr)
{
    struct mcq_endpoint ep;
    int rc = mcq_endpoint_parse(text, &ep);
    if (rc == 0)
        rc = mcq_endpoint_resolve(&ep, passive, addr);
    if (rc < 0)
        fprintf(stderr, "raw: bad endpoint %s: %s\n", text, strerror(-rc));
    return rc;
}

static void set_nodelay(int fd, const struct mcq_sockaddr *addr)
{
    int one = 1;
    if (addr->sa.sa_family != AF_UNIX)
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

/* Binds, reports the endpoint, accepts one connection and returns its fd (or -errno). */
static int accept_one(const char *endpoint, bool nodelay)
{
    struct mcq_sockaddr addr;
    int rc = resolve(endpoint, true, &addr);
    if (rc < 0)
        return rc;
    int lfd = socket(addr.sa.sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (lfd < 0)
        return sys_err("socket");
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(lfd, &addr.sa, addr.len) || listen(lfd, 1)) {
        rc = sys_err(endpoint);
        close(lfd);
        return rc;
    }
    addr.len = sizeof(addr.ss);
    char text[MCQ_ENDPOINT_TEXT_MAX];
    if (getsockname(lfd, &addr.sa, &addr.len) == 0 &&
        mcq_endpoint_format(&addr, text, sizeof(text)) > 0)
        tool_report_endpoint(text);
    int fd = set_timeouts(lfd);
    if (fd == 0) {
        fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0)
            fd = errno == EAGAIN ? -ETIMEDOUT : sys_err("accept");
    }
    close(lfd);
    if (fd >= 0 && (rc = set_timeouts(fd)) < 0) {
        close(fd);
        return rc;
    }
    if (fd >= 0 && nodelay)
        set_nodelay(fd, &addr);
    return fd;
}

static int connect_to(const char *endpoint, bool nodelay)
{
    struct mcq_sockaddr addr;
    int rc = resolve(endpoint, false, &addr);
    if (rc < 0)
        return rc;
    int fd = socket(addr.sa.sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return sys_err("socket");
    if (nodelay)
        set_nodelay(fd, &addr);
    if (connect(fd, &addr.sa, addr.len) || (rc = set_timeouts(fd)) < 0) {
        rc = rc < 0 ? rc : sys_err(endpoint);
        close(fd);
        return rc;
    }
    return fd;
}

static int io_err(const char *what)
{
    return errno == EAGAIN || errno == EWOULDBLOCK ? -ETIMEDOUT : sys_err(what);
}

/* One send or recv of up to len (> 0) bytes: busy-polls up to spin_us while it would block,
 * then blocks. Returns the bytes moved or a negative errno (-ECONNRESET at end of stream). */
static ssize_t xfer_some(int fd, char *p, size_t len, bool out, unsigned spin_us)
{
    uint64_t spin_until = 0;
    for (;;) {
        bool spin = spin_us > 0 && (!spin_until || tool_now_ns() < spin_until);
        int flags = (spin ? MSG_DONTWAIT : 0) | (out ? MSG_NOSIGNAL : 0);
        ssize_t n = out ? send(fd, p, len, flags) : recv(fd, p, len, flags);
        if (n > 0)
            return n;
        if (n == 0)
            return -ECONNRESET;
        if (errno == EINTR)
            continue;
        if (!spin || (errno != EAGAIN && errno != EWOULDBLOCK))
            return io_err(out ? "send" : "recv");
        if (!spin_until)
            spin_until = tool_now_ns() + spin_us * NS_PER_US;
    }
}

static int xfer_all(int fd, char *p, size_t len, bool out, unsigned spin_us)
{
    while (len > 0) {
        ssize_t n = xfer_some(fd, p, len, out, spin_us);
        if (n < 0)
            return (int)n;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

int tool_local_thr(const struct tool_args *a, struct tool_thr_result *out)
{
    if (a->size == 0) {
        fprintf(stderr, "raw: a byte stream needs message-size >= 1\n");
        return -EINVAL;
    }
    char *buf = malloc(RAW_CHUNK);
    if (!buf)
        return -ENOMEM;
    int fd = accept_one(a->endpoint, false);
    uint64_t total = a->count > UINT64_MAX / a->size ? UINT64_MAX : a->count * a->size;
    uint64_t bytes = 0, t0 = 0, t1 = 0;
    int rc = fd < 0 ? fd : 0;
    while (rc == 0 && bytes < total) {
        size_t want = total - bytes < RAW_CHUNK ? (size_t)(total - bytes) : RAW_CHUNK;
        ssize_t n = xfer_some(fd, buf, want, false, a->spin_us);
        if (n < 0) {
            rc = (int)n;
        } else {
            t1 = tool_now_ns();
            if (bytes == 0)
                t0 = t1;
            bytes += (uint64_t)n;
            if (a->window_ns && t1 - t0 >= a->window_ns)
                break;
        }
    }
    if (fd >= 0)
        close(fd);
    free(buf);
    *out = (struct tool_thr_result){
        .msgs = bytes / a->size, .elapsed_ns = t1 - t0, .allocs = -1, .malloc_bytes = -1};
    return rc;
}

int tool_remote_thr(const struct tool_args *a)
{
    if (a->size == 0) {
        fprintf(stderr, "raw: a byte stream needs message-size >= 1\n");
        return -EINVAL;
    }
    size_t chunk = a->size >= RAW_CHUNK ? a->size : RAW_CHUNK / a->size * a->size;
    char *buf = calloc(1, chunk);
    if (!buf)
        return -ENOMEM;
    int fd = connect_to(a->endpoint, false);
    int rc = fd < 0 ? fd : 0;
    uint64_t left = a->count;
    while (rc == 0 && left > 0) {
        uint64_t msgs = chunk / a->size < left ? chunk / a->size : left;
        rc = xfer_all(fd, buf, (size_t)msgs * a->size, true, a->spin_us);
        left -= msgs;
    }
    if (fd >= 0)
        close(fd);
    free(buf);
    return rc;
}

int tool_local_lat(const struct tool_args *a)
{
    char *buf = malloc(a->size ? a->size : 1);
    if (!buf)
        return -ENOMEM;
    int fd = accept_one(a->endpoint, true);
    int rc = fd < 0 ? fd : 0;
    for (uint64_t i = 0; rc == 0 && i < a->count; i++) {
        rc = xfer_all(fd, buf, a->size, false, a->spin_us);
        if (rc == 0)
            rc = xfer_all(fd, buf, a->size, true, a->spin_us);
    }
    if (fd >= 0)
        close(fd);
    free(buf);
    return rc;
}

int tool_remote_lat(const struct tool_args *a, struct tool_lat_result *out)
{
    char *ping = malloc(a->size ? a->size : 1), *pong = malloc(a->size ? a->size : 1);
    int rc = ping && pong ? 0 : -ENOMEM;
    if (rc == 0)
        memset(ping, 'L', a->size);
    int fd = rc == 0 ? connect_to(a->endpoint, true) : rc;
    rc = fd < 0 ? fd : 0;
    uint64_t start = 0;
    for (uint64_t i = 0; rc == 0 && i < a->count; i++) {
        uint64_t t0 = tool_now_ns();
        if (i == a->warmup)
            start = t0;
        rc = xfer_all(fd, ping, a->size, true, a->spin_us);
        if (rc == 0)
            rc = xfer_all(fd, pong, a->size, false, a->spin_us);
        if (rc == 0 && i >= a->warmup)
            hist_record(out->rtt, tool_now_ns() - t0);
    }
    out->elapsed_ns = tool_now_ns() - start;
    out->allocs = out->malloc_bytes = -1;
    if (fd >= 0)
        close(fd);
    free(ping);
    free(pong);
    return rc;
}
