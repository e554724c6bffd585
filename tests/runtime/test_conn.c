/* MCQ_TSAN_TEST: shards and client threads share counters; run under TSan too. */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <time.h>

#include "alloc/arena.h"
#include "conn_util.h"

/* --- many echo clients in one epoll thread ---------------------------------------------- */

#define PATTERN_LEN 65521u /* prime, so clients' streams do not line up with write sizes */
#define MAX_WRITE 32768u   /* largest random write, bytes */
#define READ_BUF 65536u
#define EPOLL_BATCH 256
#define NS_PER_SEC 1000000000ull

/* Client k's byte i is pattern[(k * 977 + i) % PATTERN_LEN]; the table repeats its first
 * MAX_WRITE bytes at the end so every write and compare is one contiguous slice. */
static uint8_t pattern[PATTERN_LEN + MAX_WRITE];

static void pattern_init(void)
{
    uint64_t x = 0x9e3779b97f4a7c15ull;
    for (unsigned i = 0; i < PATTERN_LEN; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        pattern[i] = (uint8_t)x;
    }
    memcpy(pattern + PATTERN_LEN, pattern, MAX_WRITE);
}

struct client {
    int fd;
    uint32_t base;      /* pattern offset of byte 0 */
    size_t total;       /* bytes to send and get back */
    size_t reset_after; /* 0: never; else reset (RST) once this much was sent */
    size_t sent, recvd;
    uint64_t rng;
    bool done;
    bool want_out;
};

static uint32_t client_rand(struct client *c)
{
    c->rng ^= c->rng << 13;
    c->rng ^= c->rng >> 7;
    c->rng ^= c->rng << 17;
    return (uint32_t)c->rng;
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * NS_PER_SEC + (uint64_t)ts.tv_nsec;
}

static void client_setup(struct client *c, unsigned k, const struct mcq_sockaddr *addr,
                         size_t total, size_t reset_after)
{
    memset(c, 0, sizeof(*c));
    c->fd = client_connect(addr);
    cr_assert_eq(fcntl(c->fd, F_SETFL, O_NONBLOCK), 0);
    c->base = (uint32_t)((k * 977u) % PATTERN_LEN);
    c->total = total;
    c->reset_after = reset_after;
    c->rng = 0x2545f4914f6cdd1dull * (k + 1);
    c->want_out = true;
}

static void client_reset(struct client *c)
{
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    cr_assert_eq(setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)), 0);
    close(c->fd);
    c->fd = -1;
    c->done = true;
}

/* Writes random-sized slices until the socket is full or everything is out. */
static void client_write(struct client *c)
{
    while (c->sent < c->total) {
        size_t n = 1 + client_rand(c) % MAX_WRITE;
        if (n > c->total - c->sent)
            n = c->total - c->sent;
        ssize_t w = write(c->fd, pattern + (c->base + c->sent) % PATTERN_LEN, n);
        if (w < 0) {
            cr_assert(errno == EAGAIN, "client write: %s", strerror(errno));
            return;
        }
        c->sent += (size_t)w;
        if (c->reset_after && c->sent >= c->reset_after) {
            client_reset(c);
            return;
        }
    }
}

/* Reads what is there and checks every byte against the stream sent. */
static void client_read(struct client *c, uint8_t *buf)
{
    for (;;) {
        ssize_t r = read(c->fd, buf, READ_BUF);
        if (r < 0) {
            cr_assert(errno == EAGAIN, "client read: %s", strerror(errno));
            return;
        }
        cr_assert_gt(r, 0, "server closed early: %zu of %zu bytes back", c->recvd, c->total);
        cr_assert_leq(c->recvd + (size_t)r, c->sent, "more bytes back than sent");
        for (size_t off = 0; off < (size_t)r;) {
            size_t n = (size_t)r - off < MAX_WRITE ? (size_t)r - off : MAX_WRITE;
            const uint8_t *want = pattern + (c->base + c->recvd) % PATTERN_LEN;
            cr_assert(memcmp(buf + off, want, n) == 0, "echo mismatch at byte %zu", c->recvd);
            c->recvd += n;
            off += n;
        }
        if (c->recvd == c->total) {
            close(c->fd);
            c->fd = -1;
            c->done = true;
            return;
        }
    }
}

/* Drives clients [0, n) until each got its bytes back (or reset), or the deadline. */
static void clients_run(struct client *cl, unsigned n, double timeout_s)
{
    int ep = epoll_create1(EPOLL_CLOEXEC);
    cr_assert_geq(ep, 0);
    for (unsigned i = 0; i < n; i++) {
        struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.u32 = i};
        cr_assert_eq(epoll_ctl(ep, EPOLL_CTL_ADD, cl[i].fd, &ev), 0);
    }
    uint8_t *buf = malloc(READ_BUF);
    struct epoll_event evs[EPOLL_BATCH];
    unsigned left = n;
    uint64_t deadline = now_ns() + (uint64_t)(timeout_s * NS_PER_SEC);
    while (left > 0) {
        uint64_t now = now_ns();
        if (now > deadline) {
            size_t got = 0, want = 0;
            for (unsigned i = 0; i < n; i++) {
                got += cl[i].recvd;
                want += cl[i].reset_after ? 0 : cl[i].total;
            }
            cr_assert_fail("echo clients timed out: %u of %u not done, %zu of %zu bytes back", left,
                           n, got, want);
        }
        int k = epoll_wait(ep, evs, EPOLL_BATCH, (int)((deadline - now) / 1000000u) + 1);
        cr_assert_geq(k, 0);
        for (int e = 0; e < k; e++) {
            struct client *c = &cl[evs[e].data.u32];
            if (c->done)
                continue;
            if (evs[e].events & (EPOLLOUT | EPOLLERR | EPOLLHUP))
                client_write(c);
            if (!c->done && (evs[e].events & (EPOLLIN | EPOLLERR | EPOLLHUP)))
                client_read(c, buf);
            if (c->done) {
                left--;
                continue;
            }
            if (c->want_out && c->sent == c->total) {
                c->want_out = false;
                struct epoll_event ev = {.events = EPOLLIN, .data.u32 = evs[e].data.u32};
                cr_assert_eq(epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev), 0);
            }
        }
    }
    free(buf);
    close(ep);
}

struct client_group {
    struct client *cl;
    unsigned n;
    double timeout_s;
};

static void *clients_thread(void *arg)
{
    struct client_group *g = arg;
    clients_run(g->cl, g->n, g->timeout_s);
    return NULL;
}

static struct mcq_shard_stats sum_stats(struct mcq_runtime *rt)
{
    struct mcq_shard_stats sum = {0}, s;
    for (unsigned i = 0; i < mcq_runtime_shard_count(rt); i++) {
        cr_assert_eq(mcq_runtime_stats(rt, i, &s), 0);
        sum.connections += s.connections;
        sum.bytes_in += s.bytes_in;
        sum.bytes_out += s.bytes_out;
    }
    return sum;
}

#define ECHO_SHARDS 4
#define ECHO_TCP_CLIENTS 1000
#define ECHO_IPC_CLIENTS 100
#define ECHO_BYTES (1u << 20)
#define ECHO_SNDQ_BYTES (256u * 1024u) /* small bound so pause/resume/on_writable run */
#define ECHO_TIMEOUT_S 240.0
#define CLIENT_THREADS 2

Test(conn, echo_1000_tcp_and_100_ipc_clients_every_byte_in_order, .timeout = 300)
{
    unsigned nclients = ECHO_TCP_CLIENTS + ECHO_IPC_CLIENTS;
    if (!raise_nofile(2 * nclients + 256))
        cr_skip_test("RLIMIT_NOFILE hard limit below %u: cannot open %u client and server fds",
                     2 * nclients + 256, 2 * nclients);
    echo_reset();
    pattern_init();
    struct mcq_runtime *rt = start_runtime(ECHO_SHARDS);
    struct mcq_conn_cfg cfg = {.handler = &echo_handler, .sndq_max_bytes = ECHO_SNDQ_BYTES};
    struct mcq_listener *tcp, *ipc;
    cr_assert_eq(mcq_conn_listen(rt, "tcp://127.0.0.1:0", &cfg, &tcp), 0);
    char path[64];
    snprintf(path, sizeof(path), "ipc:///tmp/mcq-test-echo-%d.sock", (int)getpid());
    cr_assert_eq(mcq_conn_listen(rt, path, &cfg, &ipc), 0);
    struct mcq_sockaddr tcp_addr = listener_addr(tcp), ipc_addr = listener_addr(ipc);

    struct client *cl = calloc(nclients, sizeof(*cl));
    uint64_t t0 = now_ns();
    for (unsigned i = 0; i < nclients; i++)
        client_setup(&cl[i], i, i < ECHO_TCP_CLIENTS ? &tcp_addr : &ipc_addr, ECHO_BYTES, 0);
    /* Interleave TCP and IPC clients over the threads. */
    struct client_group g[CLIENT_THREADS];
    pthread_t th[CLIENT_THREADS];
    unsigned per = nclients / CLIENT_THREADS;
    for (unsigned t = 0; t < CLIENT_THREADS; t++) {
        g[t] = (struct client_group){
            cl + t * per, t + 1 == CLIENT_THREADS ? nclients - t * per : per, ECHO_TIMEOUT_S};
        cr_assert_eq(pthread_create(&th[t], NULL, clients_thread, &g[t]), 0);
    }
    for (unsigned t = 0; t < CLIENT_THREADS; t++)
        pthread_join(th[t], NULL);
    double secs = (double)(now_ns() - t0) / NS_PER_SEC;
    for (unsigned i = 0; i < nclients; i++)
        cr_assert(cl[i].done && cl[i].recvd == ECHO_BYTES, "client %u: %zu bytes back", i,
                  cl[i].recvd);
    cr_assert(test_event_wait(&echo.close_ev, (int)nclients, 60), "server saw %u of %u closes",
              atomic_load(&echo.closed), nclients);
    fprintf(stderr, "echo: %u clients x %u bytes both ways in %.2f s (%.0f MB/s), %u pauses\n",
            nclients, ECHO_BYTES, secs, 2.0 * nclients * ECHO_BYTES / secs / 1e6,
            atomic_load(&echo.pauses));
    mcq_listener_close(tcp);
    mcq_listener_close(ipc);
    mcq_runtime_stop(rt);
    cr_assert_eq(mcq_runtime_run(rt), 0);
    struct mcq_shard_stats s = sum_stats(rt);
    mcq_runtime_destroy(rt);
    cr_assert_eq(atomic_load(&echo.opened), nclients);
    cr_assert_eq(atomic_load(&echo.closed_clean), nclients);
    cr_assert_eq(atomic_load(&echo.send_failures), 0);
    cr_assert_eq(atomic_load(&echo.bytes), (uint64_t)nclients * ECHO_BYTES);
    cr_assert_eq(s.bytes_in, (uint64_t)nclients * ECHO_BYTES);
    cr_assert_eq(s.bytes_out, (uint64_t)nclients * ECHO_BYTES);
    cr_assert_eq(s.connections, 0);
    free(cl);
}

#define RESET_NORMAL 40
#define RESET_RESETTERS 40
#define RESET_BYTES (256u * 1024u)

Test(conn, client_reset_mid_stream_does_not_disturb_the_others, .timeout = 120)
{
    cr_assert(raise_nofile(1024));
    echo_reset();
    pattern_init();
    struct mcq_runtime *rt = start_runtime(ECHO_SHARDS);
    struct mcq_conn_cfg cfg = {.handler = &echo_handler, .sndq_max_bytes = 16384};
    struct mcq_listener *l;
    struct mcq_sockaddr addr = listen_loopback(rt, &cfg, &l);
    unsigned n = RESET_NORMAL + RESET_RESETTERS;
    struct client cl[RESET_NORMAL + RESET_RESETTERS];
    for (unsigned i = 0; i < n; i++)
        client_setup(&cl[i], i, &addr, RESET_BYTES, (i % 2) ? RESET_BYTES / 3 : 0);
    clients_run(cl, n, 100);
    for (unsigned i = 0; i < n; i += 2)
        cr_assert_eq(cl[i].recvd, RESET_BYTES, "normal client %u got %zu bytes", i, cl[i].recvd);
    cr_assert(test_event_wait(&echo.close_ev, (int)n, 60));
    mcq_listener_close(l);
    mcq_runtime_destroy(rt);
    cr_assert_eq(atomic_load(&echo.closed_clean), RESET_NORMAL);
    cr_assert_eq(atomic_load(&echo.closed_error), RESET_RESETTERS);
    cr_assert_eq(atomic_load(&echo.send_failures), 0);
}

#define STOP_TCP 30
#define STOP_IPC 10
#define QUIET_MS 300 /* no client writable for this long: the server stopped reading */

/* Clients that send and never read: the server's sends block, its receives pause, and
 * then the runtime stops with all of that in flight. */
Test(conn, stop_with_busy_connections_reaps_everything, .timeout = 120)
{
    cr_assert(raise_nofile(1024));
    echo_reset();
    pattern_init();
    struct mcq_runtime *rt = start_runtime(ECHO_SHARDS);
    struct mcq_conn_cfg cfg = {.handler = &echo_handler, .sndq_max_bytes = 65536};
    struct mcq_listener *tcp, *ipc;
    cr_assert_eq(mcq_conn_listen(rt, "tcp://127.0.0.1:0", &cfg, &tcp), 0);
    cr_assert_eq(mcq_conn_listen(rt, "ipc://@mcq-test-stop", &cfg, &ipc), 0);
    struct mcq_sockaddr tcp_addr = listener_addr(tcp), ipc_addr = listener_addr(ipc);
    int fds[STOP_TCP + STOP_IPC];
    for (unsigned i = 0; i < STOP_TCP + STOP_IPC; i++) {
        fds[i] = client_connect(i < STOP_TCP ? &tcp_addr : &ipc_addr);
        cr_assert_eq(fcntl(fds[i], F_SETFL, O_NONBLOCK), 0);
    }
    cr_assert(test_event_wait(&echo.open_ev, STOP_TCP + STOP_IPC, 60));
    /* Fill every path until no client can write for QUIET_MS: the server then has a send
     * blocked on each client and its receive paused. */
    struct pollfd pfd[STOP_TCP + STOP_IPC];
    uint64_t deadline = now_ns() + 30 * NS_PER_SEC;
    for (;;) {
        for (unsigned i = 0; i < STOP_TCP + STOP_IPC; i++) {
            while (write(fds[i], pattern, MAX_WRITE) > 0)
                ;
            cr_assert_eq(errno, EAGAIN, "client write: %s", strerror(errno));
            pfd[i] = (struct pollfd){.fd = fds[i], .events = POLLOUT};
        }
        if (poll(pfd, STOP_TCP + STOP_IPC, QUIET_MS) == 0)
            break;
        cr_assert_lt(now_ns(), deadline, "clients never filled up");
    }
    cr_assert_gt(atomic_load(&echo.pauses), 0);
    mcq_runtime_stop(rt);
    cr_assert_eq(mcq_runtime_run(rt), 0);
    struct mcq_shard_stats s = sum_stats(rt);
    cr_assert_eq(s.connections, 0);
    cr_assert_eq(atomic_load(&echo.closed), STOP_TCP + STOP_IPC);
    cr_assert_eq(atomic_load(&echo.closed_cancelled), STOP_TCP + STOP_IPC);
    mcq_listener_close(tcp);
    mcq_listener_close(ipc);
    mcq_runtime_destroy(rt);
    for (unsigned i = 0; i < STOP_TCP + STOP_IPC; i++)
        close(fds[i]);
}

/* --- half-close, pause, connect ------------------------------------------------------------ */

static struct {
    struct mcq_conn *conn;
    char got[64];
    size_t got_len;
    int reason;
    _Atomic uint64_t bytes_at_resume;
    struct test_event open_ev, data_ev, close_ev, resumed_ev;
} hs;

static int connects_run; /* connect tasks posted by this test */

static void hs_reset(void)
{
    memset(&hs, 0, sizeof(hs));
    connects_run = 0;
    test_event_init(&hs.open_ev);
    test_event_init(&hs.data_ev);
    test_event_init(&hs.close_ev);
    test_event_init(&hs.resumed_ev);
}

static int send_text(struct mcq_conn *c, const char *text)
{
    struct mcq_view v;
    int rc = mcq_page_alloc(mcq_shard_arena(mcq_conn_shard(c)), strlen(text), &v);
    if (rc < 0)
        return rc;
    memcpy(mcq_view_mut(&v), text, strlen(text));
    rc = mcq_conn_send(c, &v);
    if (rc < 0)
        mcq_view_unref(&v);
    return rc;
}

static void hs_open_hello_shutdown(struct mcq_conn *c, void *user)
{
    (void)user;
    hs.conn = c;
    cr_assert_eq(send_text(c, "hello"), 0);
    cr_assert_eq(mcq_conn_shutdown(c), 0);
    cr_assert_eq(send_text(c, "late"), -EPIPE);
    test_event_signal(&hs.open_ev);
}

static void hs_data(struct mcq_conn *c, void *user, const struct mcq_view *v)
{
    (void)c;
    (void)user;
    if (hs.got_len + v->len <= sizeof(hs.got)) {
        memcpy(hs.got + hs.got_len, mcq_view_data(v), v->len);
        hs.got_len += v->len;
    }
    test_event_signal(&hs.data_ev);
}

static void hs_close(struct mcq_conn *c, void *user, int reason)
{
    (void)c;
    (void)user;
    hs.reason = reason;
    test_event_signal(&hs.close_ev);
}

Test(conn, half_close_sends_eof_and_keeps_receiving, .timeout = 60)
{
    hs_reset();
    static const struct mcq_conn_handler h = {
        .on_open = hs_open_hello_shutdown, .on_data = hs_data, .on_close = hs_close};
    struct mcq_runtime *rt = start_runtime(2);
    struct mcq_conn_cfg cfg = {.handler = &h};
    struct mcq_listener *l;
    struct mcq_sockaddr addr = listen_loopback(rt, &cfg, &l);
    int fd = client_connect(&addr);
    char buf[16];
    read_exact_fd(fd, buf, 5, 10000);
    cr_assert(memcmp(buf, "hello", 5) == 0);
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    cr_assert_eq(poll(&pfd, 1, 10000), 1);
    cr_assert_eq(read(fd, buf, sizeof(buf)), 0, "expected EOF after the server's shutdown");
    write_all_fd(fd, "bye", 3);
    cr_assert(test_event_wait(&hs.data_ev, 1, 10));
    close(fd);
    cr_assert(test_event_wait(&hs.close_ev, 1, 10));
    cr_assert_eq(hs.got_len, 3);
    cr_assert(memcmp(hs.got, "bye", 3) == 0);
    cr_assert_eq(hs.reason, 0);
    mcq_listener_close(l);
    mcq_runtime_destroy(rt);
}

static void pause_on_open(struct mcq_conn *c, void *user)
{
    (void)user;
    hs.conn = c;
    mcq_conn_pause(c);
    test_event_signal(&hs.open_ev);
}

static void resume_task(struct mcq_shard *sh, void *arg)
{
    (void)sh;
    (void)arg;
    atomic_store(&hs.bytes_at_resume, atomic_load(&echo.bytes));
    mcq_conn_resume(hs.conn);
    test_event_signal(&hs.resumed_ev);
}

#define PAUSE_BYTES 60000u /* within the pattern table */

Test(conn, paused_connection_holds_data_until_resumed, .timeout = 60)
{
    hs_reset();
    echo_reset();
    pattern_init();
    struct mcq_conn_handler h = echo_handler;
    h.on_open = pause_on_open;
    struct mcq_runtime *rt = start_runtime(2);
    struct mcq_conn_cfg cfg = {.handler = &h};
    struct mcq_listener *l;
    struct mcq_sockaddr addr = listen_loopback(rt, &cfg, &l);
    int fd = client_connect(&addr);
    cr_assert(test_event_wait(&hs.open_ev, 1, 10));
    write_all_fd(fd, pattern, PAUSE_BYTES);
    cr_assert_eq(mcq_runtime_post(rt, mcq_shard_id(mcq_conn_shard(hs.conn)), resume_task, NULL), 0);
    cr_assert(test_event_wait(&hs.resumed_ev, 1, 10));
    cr_assert_eq(atomic_load(&hs.bytes_at_resume), 0, "data delivered while paused");
    uint8_t *back = malloc(PAUSE_BYTES);
    read_exact_fd(fd, back, PAUSE_BYTES, 10000);
    cr_assert(memcmp(back, pattern, PAUSE_BYTES) == 0);
    free(back);
    close(fd);
    cr_assert(test_event_wait(&echo.close_ev, 1, 10));
    mcq_listener_close(l);
    mcq_runtime_destroy(rt);
}

struct connect_req {
    const char *endpoint;
    uint32_t timeout_ms;
    const struct mcq_conn_handler *h;
    int rc;
};

static void connect_task(struct mcq_shard *sh, void *arg)
{
    struct connect_req *r = arg;
    struct mcq_conn_cfg cfg = {.handler = r->h};
    struct mcq_conn *c;
    r->rc = mcq_conn_connect(sh, r->endpoint, &cfg, r->timeout_ms, &c);
    test_event_signal(&hs.resumed_ev);
}

static void ping_open(struct mcq_conn *c, void *user)
{
    (void)user;
    cr_assert_eq(send_text(c, "ping"), 0);
    test_event_signal(&hs.open_ev);
}

static void ping_data(struct mcq_conn *c, void *user, const struct mcq_view *v)
{
    hs_data(c, user, v);
    if (hs.got_len == 4)
        mcq_conn_close(c, MCQ_CLOSE_FLUSH);
}

static int run_connect(struct mcq_runtime *rt, unsigned shard, struct connect_req *r)
{
    cr_assert_eq(mcq_runtime_post(rt, shard, connect_task, r), 0);
    cr_assert(test_event_wait(&hs.resumed_ev, ++connects_run, 10));
    return r->rc;
}

Test(conn, connect_to_a_listener_and_exchange_data, .timeout = 60)
{
    hs_reset();
    echo_reset();
    static const struct mcq_conn_handler h = {
        .on_open = ping_open, .on_data = ping_data, .on_close = hs_close};
    struct mcq_runtime *rt = start_runtime(2);
    struct mcq_conn_cfg cfg = {.handler = &echo_handler};
    struct mcq_listener *l;
    cr_assert_eq(mcq_conn_listen(rt, "tcp://127.0.0.1:0", &cfg, &l), 0);
    char ep[MCQ_ENDPOINT_TEXT_MAX];
    cr_assert_gt(mcq_listener_endpoint(l, ep, sizeof(ep)), 0);
    struct connect_req r = {.endpoint = ep, .timeout_ms = 5000, .h = &h};
    cr_assert_eq(run_connect(rt, 1, &r), 0);
    cr_assert(test_event_wait(&hs.close_ev, 1, 10));
    cr_assert_eq(hs.reason, 0);
    cr_assert_eq(hs.got_len, 4);
    cr_assert(memcmp(hs.got, "ping", 4) == 0);
    cr_assert(test_event_wait(&echo.close_ev, 1, 10), "the server side saw the close");
    cr_assert_eq(atomic_load(&echo.closed_clean), 1);
    mcq_listener_close(l);
    mcq_runtime_destroy(rt);
}

Test(conn, connect_refused_and_bad_endpoints, .timeout = 60)
{
    hs_reset();
    static const struct mcq_conn_handler h = {.on_open = ping_open, .on_close = hs_close};
    struct mcq_runtime *rt = start_runtime(1);
    /* A bound socket that does not listen: connecting to its port is refused. */
    struct sockaddr_in sin;
    char ep[64];
    int fd = loopback_socket(NO_LISTEN, &sin, ep, sizeof(ep));
    struct connect_req r = {.endpoint = ep, .timeout_ms = 5000, .h = &h};
    cr_assert_eq(run_connect(rt, 0, &r), 0);
    cr_assert(test_event_wait(&hs.close_ev, 1, 10));
    cr_assert_eq(hs.reason, -ECONNREFUSED);
    cr_assert_eq(atomic_load(&hs.open_ev.count), 0, "no on_open for a failed connect");
    struct connect_req bad[] = {
        {.endpoint = "tcp://127.0.0.1:0", .h = &h},
        {.endpoint = "tcp://*:5555", .h = &h},
        {.endpoint = "tcp://", .h = &h},
        {.endpoint = "bogus://x", .h = &h},
    };
    int want[] = {-EINVAL, -EINVAL, -EINVAL, -EPROTONOSUPPORT};
    for (unsigned i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        cr_assert_eq(run_connect(rt, 0, &bad[i]), want[i], "%s", bad[i].endpoint);
    struct connect_req noent = {.endpoint = "ipc:///tmp/mcq-test-no-such.sock", .h = &h};
    cr_assert_eq(run_connect(rt, 0, &noent), 0);
    cr_assert(test_event_wait(&hs.close_ev, 2, 10));
    cr_assert_eq(hs.reason, -ENOENT);
    mcq_runtime_destroy(rt);
    close(fd);
}

Test(conn, connect_times_out_against_a_full_backlog, .timeout = 60)
{
    hs_reset();
    static const struct mcq_conn_handler h = {.on_open = ping_open, .on_close = hs_close};
    struct mcq_runtime *rt = start_runtime(1);
    /* A loopback listener with backlog 0 that never accepts: once one connection waits in
     * its queue, the kernel drops further SYNs, so the next connect hangs in SYN_SENT. */
    struct sockaddr_in sin;
    char ep[64];
    int lfd = loopback_socket(0, &sin, ep, sizeof(ep));
    int filler = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert_eq(connect(filler, (struct sockaddr *)&sin, sizeof(sin)), 0);
    uint64_t t0 = now_ns();
    struct connect_req r = {.endpoint = ep, .timeout_ms = 300, .h = &h};
    cr_assert_eq(run_connect(rt, 0, &r), 0);
    cr_assert(test_event_wait(&hs.close_ev, 1, 20));
    uint64_t took_ms = (now_ns() - t0) / 1000000u;
    cr_assert_eq(hs.reason, -ETIMEDOUT, "reason %d", hs.reason);
    cr_assert_geq(took_ms, 300, "timed out early, after %llu ms", (unsigned long long)took_ms);
    mcq_runtime_destroy(rt);
    close(filler);
    close(lfd);
}

#define STEADY_CHUNK 16384u
#define STEADY_WARMUP 2000
#define STEADY_ROUNDS 5000

static struct {
    struct mcq_arena_stats stats;
    struct test_event ev;
} snap;

static void arena_snapshot_task(struct mcq_shard *sh, void *arg)
{
    (void)arg;
    mcq_arena_stats(mcq_shard_arena(sh), &snap.stats);
    test_event_signal(&snap.ev);
}

static struct mcq_arena_stats arena_snapshot(struct mcq_runtime *rt, int nth)
{
    cr_assert_eq(mcq_runtime_post(rt, 0, arena_snapshot_task, NULL), 0);
    cr_assert(test_event_wait(&snap.ev, nth, 10));
    return snap.stats;
}

static void echo_rounds(int fd, unsigned rounds, uint8_t *buf)
{
    for (unsigned i = 0; i < rounds; i++) {
        const uint8_t *out = pattern + (i * 7919u) % PATTERN_LEN;
        write_all_fd(fd, out, STEADY_CHUNK);
        read_exact_fd(fd, buf, STEADY_CHUNK, 10000);
        cr_assert(memcmp(buf, out, STEADY_CHUNK) == 0);
    }
}

/* Once warm, receiving into the buffer ring, echoing and refilling take every page and
 * object from the shard's caches: no call into jemalloc per message. */
Test(conn, steady_state_echo_allocates_nothing, .timeout = 60)
{
    echo_reset();
    pattern_init();
    memset(&snap, 0, sizeof(snap));
    test_event_init(&snap.ev);
    struct mcq_runtime *rt = start_runtime(1);
    struct mcq_conn_cfg cfg = {.handler = &echo_handler};
    struct mcq_listener *l;
    struct mcq_sockaddr addr = listen_loopback(rt, &cfg, &l);
    int fd = client_connect(&addr);
    uint8_t *buf = malloc(STEADY_CHUNK);
    echo_rounds(fd, STEADY_WARMUP, buf);
    struct mcq_arena_stats before = arena_snapshot(rt, 1);
    echo_rounds(fd, STEADY_ROUNDS, buf);
    struct mcq_arena_stats after = arena_snapshot(rt, 2);
    cr_assert_eq(after.backend_allocs, before.backend_allocs,
                 "%llu jemalloc calls over %u echoed messages",
                 (unsigned long long)(after.backend_allocs - before.backend_allocs), STEADY_ROUNDS);
    free(buf);
    close(fd);
    cr_assert(test_event_wait(&echo.close_ev, 1, 10));
    mcq_listener_close(l);
    mcq_runtime_destroy(rt);
}
