/* PUSH/PULL and PAIR against libzmq, both directions, TCP and IPC: round robin from one
 * shard over peers on all shards, fair-queued input with per-peer order, PAIR's single
 * peer. */
#include "socket_util.h"

TestSuite(socket_pushpull, .init = t_setup, .fini = t_teardown, .timeout = 60);

/* spec_pushpull push_round_robin_out: our PUSH binds, five libzmq PULLs connect over the
 * shards; 5x ABC then 5x DEF from one shard: every PULL gets ABC then DEF. */
static void push_round_robin(const char *transport, unsigned from)
{
    char ep[256];
    enum { N = 5 };
    t_socket(MCQ_PUSH);
    t_bind(transport, ep, sizeof(ep));
    void *p[N];
    for (int i = 0; i < N; i++) {
        p[i] = z_socket(ZMQ_PULL);
        cr_assert_eq(zmq_connect(p[i], ep), 0);
    }
    cr_assert(t_wait_count(&app.ups, N, T_WAIT_S));
    cr_assert(t_wait_lb(from, N));
    for (int i = 0; i < N; i++)
        cr_assert_eq(t_send_strs(from, "ABC", NULL), 0);
    for (int i = 0; i < N; i++)
        cr_assert_eq(t_send_strs(from, "DEF", NULL), 0);
    for (int i = 0; i < N; i++) {
        struct t_rx r;
        cr_assert(z_recv(p[i], &r), "PULL %d got nothing", i);
        cr_assert(rx_frame_is(&r, 0, "ABC"), "PULL %d: first", i);
        z_rx_clear(&r);
        cr_assert(z_recv(p[i], &r));
        cr_assert(rx_frame_is(&r, 0, "DEF"), "PULL %d: second", i);
        z_rx_clear(&r);
        z_close(p[i]);
    }
}

Test(socket_pushpull, push_round_robin_tcp)
{
    push_round_robin("tcp", 0);
}

Test(socket_pushpull, push_round_robin_ipc)
{
    push_round_robin("ipc", 3);
}

/* spec_pushpull pull_fair_queue_in: our PULL binds, five libzmq PUSHes send two each: all
 * ten arrive, each sender's in order. */
static void pull_fair_queue(const char *transport)
{
    char ep[256];
    enum { N = 5, EACH = 2 };
    t_socket(MCQ_PULL);
    t_bind(transport, ep, sizeof(ep));
    void *p[N];
    for (int i = 0; i < N; i++) {
        p[i] = z_socket(ZMQ_PUSH);
        cr_assert_eq(zmq_connect(p[i], ep), 0);
    }
    for (int k = 0; k < EACH; k++) {
        for (int i = 0; i < N; i++) {
            char body[8];
            snprintf(body, sizeof(body), "%d:%d", i, k);
            z_send_strs(p[i], body, NULL);
        }
    }
    int next[N] = {0};
    for (int c = 0; c < N * EACH; c++) {
        struct t_rx *in = t_recv(T_WAIT_S);
        cr_assert_not_null(in, "only %d of %d arrived", c, N * EACH);
        int i, k;
        cr_assert_eq(sscanf((char *)in->data[0], "%d:%d", &i, &k), 2);
        cr_assert(i >= 0 && i < N);
        cr_assert_eq(k, next[i], "sender %d out of order", i);
        next[i]++;
        t_free_rx(in);
    }
    for (int i = 0; i < N; i++)
        z_close(p[i]);
}

Test(socket_pushpull, pull_fair_queue_tcp)
{
    pull_fair_queue("tcp");
}

Test(socket_pushpull, pull_fair_queue_ipc)
{
    pull_fair_queue("ipc");
}

/* Our PUSH connects to a libzmq PULL; our PULL connects to a libzmq PUSH. */
Test(socket_pushpull, push_pull_connecting)
{
    char ep[256];
    void *zp = z_socket(ZMQ_PULL);
    z_bind(zp, "tcp", ep, sizeof(ep));
    t_socket(MCQ_PUSH);
    cr_assert_eq(mcq_connect(app.s, ep), 0);
    for (unsigned sh = 0; sh < T_SHARDS; sh++) {
        struct t_send j = {.nf = 2, .f = {"part", "two"}, .len = {4, 3}};
        cr_assert_eq(t_send_job_wait(sh, &j), 0);
        struct t_rx r;
        cr_assert(z_recv(zp, &r));
        cr_assert(r.n == 2 && rx_frame_is(&r, 0, "part") && rx_frame_is(&r, 1, "two"));
        z_rx_clear(&r);
    }
    z_close(zp);
    mcq_socket_close(app.s);
    app.s = NULL;

    void *zs = z_socket(ZMQ_PUSH);
    z_bind(zs, "ipc", ep, sizeof(ep));
    t_socket(MCQ_PULL);
    cr_assert_eq(mcq_connect(app.s, ep), 0);
    z_send_strs(zs, "hello", NULL);
    struct t_rx *in = t_recv(T_WAIT_S);
    cr_assert_not_null(in);
    cr_assert(rx_frame_is(in, 0, "hello"));
    t_free_rx(in);
    cr_assert_eq(t_send_strs(0, "x", NULL), -ENOTSUP, "PULL cannot send");
    z_close(zs);
}

/* PAIR both ways; a second peer is refused while the first holds the socket. */
static void pair_both_ways(const char *transport, bool we_bind)
{
    char ep[256];
    void *z = z_socket(ZMQ_PAIR);
    t_socket(MCQ_PAIR);
    app.echo = true;
    if (we_bind) {
        t_bind(transport, ep, sizeof(ep));
        cr_assert_eq(zmq_connect(z, ep), 0);
    } else {
        z_bind(z, transport, ep, sizeof(ep));
        cr_assert_eq(mcq_connect(app.s, ep), 0);
    }
    z_send_strs(z, "ping", "1", NULL);
    struct t_rx r;
    cr_assert(z_recv(z, &r), "no echo");
    cr_assert(r.n == 2 && rx_frame_is(&r, 0, "ping") && rx_frame_is(&r, 1, "1"));
    z_rx_clear(&r);
    app.echo = false;
    for (unsigned sh = 0; sh < T_SHARDS; sh++) {
        struct t_send j = {.nf = 1, .f = {"from"}, .len = {4}};
        cr_assert_eq(t_send_job_wait(sh, &j), 0);
        cr_assert(z_recv(z, &r));
        cr_assert(rx_frame_is(&r, 0, "from"));
        z_rx_clear(&r);
    }
    z_close(z);
}

Test(socket_pushpull, pair_we_bind_tcp)
{
    pair_both_ways("tcp", true);
}

Test(socket_pushpull, pair_we_connect_ipc)
{
    pair_both_ways("ipc", false);
}

Test(socket_pushpull, pair_refuses_second_peer)
{
    char ep[256];
    t_socket(MCQ_PAIR);
    t_bind("tcp", ep, sizeof(ep));
    void *a = z_socket(ZMQ_PAIR);
    cr_assert_eq(zmq_connect(a, ep), 0);
    cr_assert_eq(t_send_job_wait(0, &(struct t_send){.nf = 1, .f = {"first"}, .len = {5}}), 0);
    struct t_rx r;
    cr_assert(z_recv(a, &r));
    z_rx_clear(&r);
    void *b = z_socket(ZMQ_PAIR);
    cr_assert_eq(zmq_connect(b, ep), 0);
    /* The second connection is closed (and libzmq retries); the socket stays with a. */
    cr_assert(t_wait_count(&app.downs, 1, T_WAIT_S), "second PAIR peer not refused");
    for (unsigned sh = 0; sh < T_SHARDS; sh++) {
        cr_assert_eq(t_send_strs(sh, "still-a", NULL), 0);
        cr_assert(z_recv(a, &r));
        cr_assert(rx_frame_is(&r, 0, "still-a"));
        z_rx_clear(&r);
    }
    z_close(b);
    z_close(a);
}
