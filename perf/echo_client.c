#include "echo_client.h"

#include "bench.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define MS_PER_S 1000

int echo_connect_loopback(uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int one = 1;
    if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0 ||
        connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        int err = -errno;
        close(fd);
        return err;
    }
    return fd;
}

static int io_error(void)
{
    return errno == EAGAIN || errno == EWOULDBLOCK ? -ETIMEDOUT : -errno;
}

static int write_all(int fd, const char *p, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return io_error();
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static int read_all(int fd, char *p, size_t len)
{
    while (len > 0) {
        ssize_t n = read(fd, p, len);
        if (n == 0)
            return -ECONNRESET;
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return io_error();
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

int echo_pingpong(int fd, size_t size, unsigned warmup, unsigned rtts, struct hist *rtt)
{
    struct timeval tv = {.tv_sec = ECHO_TIMEOUT_S};
    if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) < 0)
        return -errno;
    char *out = malloc(size), *in = malloc(size);
    int rc = out && in ? 0 : -ENOMEM;
    for (unsigned i = 0; rc == 0 && i < warmup + rtts; i++) {
        memset(out, 'a' + (int)(i % 26), size);
        uint64_t t0 = bench_now_ns();
        rc = write_all(fd, out, size);
        if (rc == 0)
            rc = read_all(fd, in, size);
        uint64_t t1 = bench_now_ns();
        if (rc == 0 && memcmp(in, out, size) != 0)
            rc = -EPROTO;
        if (rc == 0 && i >= warmup)
            hist_record(rtt, t1 - t0);
    }
    free(out);
    free(in);
    return rc;
}

static int stream_loop(int fd, size_t size, uint64_t duration_ns, const char *out, char *in,
                       double *msgs_per_s)
{
    uint64_t sent = 0, echoed = 0, limit = UINT64_MAX; /* bytes */
    uint64_t start = bench_now_ns(), stop_at = start + duration_ns;
    for (;;) {
        if (limit == UINT64_MAX && bench_now_ns() >= stop_at)
            limit = (sent + size - 1) / size * size; /* finish the message in progress */
        if (echoed >= limit)
            break;
        bool progress = false;
        uint64_t room = ECHO_INFLIGHT_MAX - (sent - echoed);
        if (limit - sent < room)
            room = limit - sent;
        if (room > 0) {
            ssize_t n = send(fd, out, room, MSG_DONTWAIT | MSG_NOSIGNAL);
            if (n > 0) {
                sent += (uint64_t)n;
                progress = true;
            } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
                return -errno;
            }
        }
        ssize_t n = recv(fd, in, ECHO_INFLIGHT_MAX, MSG_DONTWAIT);
        if (n == 0)
            return -ECONNRESET;
        if (n > 0) {
            echoed += (uint64_t)n;
            progress = true;
        } else if (errno != EAGAIN && errno != EINTR) {
            return -errno;
        }
        if (progress)
            continue;
        struct pollfd pfd = {.fd = fd, .events = POLLIN | (room > 0 ? POLLOUT : 0)};
        int rc = poll(&pfd, 1, ECHO_TIMEOUT_S * MS_PER_S);
        if (rc == 0)
            return -ETIMEDOUT;
        if (rc < 0 && errno != EINTR)
            return -errno;
    }
    if (echoed != limit)
        return -EPROTO;
    *msgs_per_s = (double)(echoed / size) * 1e9 / (double)(bench_now_ns() - start);
    return 0;
}

int echo_stream(int fd, size_t size, uint64_t duration_ns, double *msgs_per_s)
{
    if (size == 0 || size > ECHO_INFLIGHT_MAX)
        return -EINVAL;
    char *out = calloc(1, ECHO_INFLIGHT_MAX), *in = malloc(ECHO_INFLIGHT_MAX);
    int rc = out && in ? stream_loop(fd, size, duration_ns, out, in, msgs_per_s) : -ENOMEM;
    free(out);
    free(in);
    return rc;
}

int echo_measure(int fd, const struct echo_opts *o, struct echo_result *out)
{
    struct hist *h = hist_new();
    if (!h)
        return -ENOMEM;
    int rc = echo_pingpong(fd, o->size, o->warmup, o->rtts, h);
    if (rc == 0) {
        out->p50_us = (double)hist_percentile(h, 50) / 1e3;
        out->p99_us = (double)hist_percentile(h, 99) / 1e3;
        out->p999_us = (double)hist_percentile(h, 99.9) / 1e3;
        rc = echo_stream(fd, o->size, o->stream_ns, &out->msgs_per_s);
    }
    hist_free(h);
    return rc;
}
