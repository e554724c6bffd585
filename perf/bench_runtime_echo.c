/* Raw TCP echo baseline: a plain blocking-socket echo server thread on the second CPU and
 * the shared echo client (echo_client.h) on the first, over 127.0.0.1. The floor that the
 * Monocoque echo server is compared with, measured by the same client. */
#include "affinity.h"
#include "bench.h"
#include "echo_client.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

#define ECHO_BUF (64 * 1024) /* server read size, bytes */
#define ECHO_WARMUP 1000
#define ECHO_WARMUP_QUICK 100
#define ECHO_RTTS 10000
#define ECHO_RTTS_QUICK 1000
#define ECHO_STREAM_NS 1000000000ull
#define ECHO_STREAM_NS_QUICK 200000000ull

static const size_t echo_sizes[] = {64, 1024, 16384};

struct raw_server {
    int listen_fd;
    int err;
};

static int serve_one(int fd)
{
    static _Thread_local char buf[ECHO_BUF];
    for (;;) {
        ssize_t n = read(fd, buf, sizeof(buf));
        if (n == 0)
            return 0;
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        for (ssize_t off = 0; off < n;) {
            ssize_t w = write(fd, buf + off, (size_t)(n - off));
            if (w < 0 && errno != EINTR)
                return -errno;
            if (w > 0)
                off += w;
        }
    }
}

/* Serves connections one after another until the listener is shut down. */
static void *raw_server_main(void *arg)
{
    struct raw_server *s = arg;
    int cpu = bench_pin_thread(1);
    if (cpu < 0)
        s->err = cpu;
    for (;;) {
        int fd = accept4(s->listen_fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            break;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        int rc = serve_one(fd);
        if (rc < 0 && rc != -ECONNRESET)
            s->err = rc;
        close(fd);
    }
    return NULL;
}

static int listen_loopback(uint16_t *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    struct sockaddr_in sa = {.sin_family = AF_INET};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(sa);
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 4) < 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &len) < 0) {
        int err = -errno;
        close(fd);
        return err;
    }
    *port = ntohs(sa.sin_port);
    return fd;
}

struct raw_client {
    struct bench_ctx *ctx;
    uint16_t port;
    int err;
};

static void *raw_client_main(void *arg)
{
    struct raw_client *c = arg;
    int cpu = bench_pin_thread(0);
    if (cpu < 0) {
        c->err = cpu;
        return NULL;
    }
    bool quick = c->ctx->quick;
    for (size_t i = 0; i < sizeof(echo_sizes) / sizeof(echo_sizes[0]); i++) {
        struct echo_opts o = {
            .size = echo_sizes[i],
            .warmup = quick ? ECHO_WARMUP_QUICK : ECHO_WARMUP,
            .rtts = quick ? ECHO_RTTS_QUICK : ECHO_RTTS,
            .stream_ns = quick ? ECHO_STREAM_NS_QUICK : ECHO_STREAM_NS,
        };
        int fd = echo_connect_loopback(c->port);
        if (fd < 0) {
            c->err = fd;
            return NULL;
        }
        struct echo_result res;
        c->err = echo_measure(fd, &o, &res);
        close(fd);
        if (c->err < 0)
            return NULL;
        struct bench_rec *r = bench_rec_begin("echo", "raw");
        bench_rec_int(r, "size", (int64_t)o.size);
        bench_rec_num(r, "p50_us", res.p50_us);
        bench_rec_num(r, "p99_us", res.p99_us);
        bench_rec_num(r, "msgs_per_s", res.msgs_per_s);
        bench_rec_end(r);
    }
    return NULL;
}

static int bench_echo_raw(struct bench_ctx *ctx)
{
    if (bench_cpu_count() < 2)
        fprintf(stderr, "echo bench: only one CPU allowed, client and server share it\n");
    struct raw_server srv = {0};
    struct raw_client cli = {.ctx = ctx};
    srv.listen_fd = listen_loopback(&cli.port);
    if (srv.listen_fd < 0)
        return srv.listen_fd;
    pthread_t ts, tc;
    int rc = pthread_create(&ts, NULL, raw_server_main, &srv);
    if (rc) {
        close(srv.listen_fd);
        return -rc;
    }
    rc = pthread_create(&tc, NULL, raw_client_main, &cli);
    if (rc == 0)
        pthread_join(tc, NULL);
    /* Wakes the server's accept(); every client connection is closed by now. */
    shutdown(srv.listen_fd, SHUT_RDWR);
    pthread_join(ts, NULL);
    close(srv.listen_fd);
    if (rc)
        return -rc;
    return cli.err ? cli.err : srv.err;
}

MCQ_BENCH("runtime", "echo_raw", bench_echo_raw)
