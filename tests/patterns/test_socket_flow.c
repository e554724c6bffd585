/* Backpressure and peer churn against libzmq: the send high-water mark from the peer's own
 * shard and through cross-shard credits (-EAGAIN, never a drop, then on_writable once the
 * peer reads), a libzmq peer restarting (reconnect), a DEALER reconnecting to our ROUTER
 * with the same routing id. */
#include "socket_util.h"

TestSuite(socket_flow, .init = t_setup, .fini = t_teardown, .timeout = 90);

#define BIG_BYTES (128u << 10) /* per message: fills kernel buffers in few sends */
#define SEND_MAX 4000u         /* sends before we give up waiting for -EAGAIN */
#define SMALL_HWM 4

static uint8_t big[BIG_BYTES];

/* Our PUSH (SNDHWM SMALL_HWM, LINGER 0) bound on tcp (endpoint into ep) and a libzmq PULL
 * (RCVHWM 1) connected to it and up: the pipe fills after a few big sends. Returns the PULL. */
static void *push_to_small_pull(char *ep, size_t len)
{
    t_socket(MCQ_PUSH);
    t_setopt_int(MCQ_SNDHWM, SMALL_HWM);
    t_setopt_int(MCQ_LINGER, 0);
    t_bind("tcp", ep, len);
    void *z = z_socket(ZMQ_PULL);
    int one = 1;
    zmq_setsockopt(z, ZMQ_RCVHWM, &one, sizeof(one));
    cr_assert_eq(zmq_connect(z, ep), 0);
    cr_assert(t_wait_count(&app.ups, 1, T_WAIT_S));
    return z;
}

static void hwm_then_writable(bool cross_shard)
{
    char ep[256];
    void *z = push_to_small_pull(ep, sizeof(ep));
    unsigned from = cross_shard ? (app.up_shard + 1) % T_SHARDS : app.up_shard;
    cr_assert(t_wait_lb(from, 1));
    struct t_send j = {.nf = 1, .f = {big}, .len = {BIG_BYTES}};
    unsigned sent = 0;
    int rc;
    while (sent < SEND_MAX && (rc = t_send_job(from, &j)) == 0) {
        big[0]++;
        sent++;
    }
    cr_assert_eq(rc, -EAGAIN, "the peer never filled up (%u sent)", sent);
    cr_assert_gt(sent, 0);
    unsigned before = j.writables_before;
    /* Every accepted message arrives, in order: nothing was dropped at the mark. */
    uint8_t expect = (uint8_t)(big[0] - sent);
    for (unsigned i = 0; i < sent; i++) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        cr_assert_eq(zmq_msg_recv(&m, z, 0), (int)BIG_BYTES, "message %u of %u", i, sent);
        cr_assert_eq(((uint8_t *)zmq_msg_data(&m))[0], expect, "message %u out of order", i);
        expect++;
        zmq_msg_close(&m);
    }
    cr_assert(t_wait_count(&app.writables[from], before + 1, T_WAIT_S), "no on_writable");
    cr_assert_eq(t_send_job(from, &j), 0, "room again after on_writable");
    zmq_msg_t m;
    zmq_msg_init(&m);
    cr_assert_eq(zmq_msg_recv(&m, z, 0), (int)BIG_BYTES);
    zmq_msg_close(&m);
    z_close(z);
}

Test(socket_flow, hwm_local_shard)
{
    hwm_then_writable(false);
}

Test(socket_flow, hwm_through_credits)
{
    hwm_then_writable(true);
}

/* A DEALER with no peer says -EAGAIN (spec: block_on_send_no_peers) and on_writable comes
 * when a peer arrives. */
Test(socket_flow, no_peer_then_writable)
{
    char ep[256];
    t_socket(MCQ_DEALER);
    t_bind("ipc", ep, sizeof(ep));
    struct t_send j = {.nf = 1, .f = {"x"}, .len = {1}};
    cr_assert_eq(t_send_job(2, &j), -EAGAIN);
    void *z = z_socket(ZMQ_DEALER);
    cr_assert_eq(zmq_connect(z, ep), 0);
    cr_assert(t_wait_count(&app.writables[2], j.writables_before + 1, T_WAIT_S));
    cr_assert_eq(t_send_job(2, &j), 0);
    struct t_rx r;
    cr_assert(z_recv(z, &r));
    cr_assert(rx_frame_is(&r, 0, "x"));
    z_rx_clear(&r);
    z_close(z);
}

/* Our DEALER connects; the libzmq ROUTER goes away and a new one binds the same endpoint:
 * the DEALER reconnects and traffic flows again. */
Test(socket_flow, peer_restart_reconnects)
{
    char ep[256];
    void *r = z_socket(ZMQ_ROUTER);
    z_bind(r, "tcp", ep, sizeof(ep));
    t_socket(MCQ_DEALER);
    t_setopt_int(MCQ_RECONNECT_IVL, 20);
    cr_assert_eq(mcq_connect(app.s, ep), 0);
    struct t_send j = {.nf = 1, .f = {"one"}, .len = {3}};
    cr_assert_eq(t_send_job_wait(1, &j), 0);
    struct t_rx m;
    cr_assert(z_recv(r, &m));
    z_rx_clear(&m);
    z_close(r);
    cr_assert(t_wait_count(&app.downs, 1, T_WAIT_S), "peer loss not seen");
    r = z_socket(ZMQ_ROUTER);
    cr_assert_eq(zmq_bind(r, ep), 0, "rebind %s", ep);
    cr_assert(t_wait_count(&app.ups, 2, T_WAIT_S), "no reconnect");
    j.f[0] = "two";
    cr_assert_eq(t_send_job_wait(1, &j), 0);
    cr_assert(z_recv(r, &m));
    cr_assert_eq(m.n, 2);
    cr_assert(rx_frame_is(&m, 1, "two"));
    z_rx_clear(&m);
    z_close(r);
}

/* A libzmq DEALER with routing id "W" reconnects as a new socket: our ROUTER routes "W" to
 * the new connection (the old one's claim is released, any waiting claim granted). */
Test(socket_flow, router_id_survives_reconnect)
{
    char ep[256];
    t_socket(MCQ_ROUTER);
    t_setopt_int(MCQ_ROUTER_MANDATORY, 1);
    t_bind("tcp", ep, sizeof(ep));
    for (int round = 0; round < 3; round++) {
        void *d = z_socket(ZMQ_DEALER);
        zmq_setsockopt(d, ZMQ_ROUTING_ID, "W", 1);
        cr_assert_eq(zmq_connect(d, ep), 0);
        z_send_strs(d, "hi", NULL);
        struct t_rx *in = t_recv(T_WAIT_S);
        cr_assert_not_null(in);
        cr_assert(rx_frame_is(in, 0, "W"));
        t_free_rx(in);
        struct t_send j = {.nf = 2, .f = {"W", "back"}, .len = {1, 4}};
        struct timespec until = deadline_in(T_WAIT_S), now;
        int rc;
        while ((rc = t_send_job((unsigned)round % T_SHARDS, &j)) == -EHOSTUNREACH) {
            clock_gettime(CLOCK_MONOTONIC, &now);
            cr_assert(now.tv_sec <= until.tv_sec, "round %d: W never routable", round);
            sched_yield();
        }
        cr_assert_eq(rc, 0);
        struct t_rx r;
        cr_assert(z_recv(d, &r), "round %d: reply lost", round);
        cr_assert(rx_frame_is(&r, 0, "back"));
        z_rx_clear(&r);
        z_close(d);
        cr_assert(t_wait_count(&app.downs, (unsigned)round + 1, T_WAIT_S));
    }
}

/* ROUTER at a peer's HWM: with ROUTER_MANDATORY -EAGAIN and on_writable once the peer reads
 * (libzmq test_router_mandatory_hwm); without it the message is dropped and send says 0. */
static void router_hwm(bool mandatory)
{
    char ep[256];
    t_socket(MCQ_ROUTER);
    t_setopt_int(MCQ_SNDHWM, SMALL_HWM);
    t_setopt_int(MCQ_LINGER, 0);
    t_setopt_int(MCQ_ROUTER_MANDATORY, mandatory);
    t_bind("tcp", ep, sizeof(ep));
    void *d = z_socket(ZMQ_DEALER);
    int one = 1;
    zmq_setsockopt(d, ZMQ_RCVHWM, &one, sizeof(one));
    zmq_setsockopt(d, ZMQ_ROUTING_ID, "X", 1);
    cr_assert_eq(zmq_connect(d, ep), 0);
    z_send_strs(d, "hello", NULL);
    struct t_rx *in = t_recv(T_WAIT_S);
    cr_assert_not_null(in);
    t_free_rx(in);
    unsigned from = (app.up_shard + 2) % T_SHARDS;
    struct t_send j = {.nf = 2, .f = {"X", big}, .len = {1, BIG_BYTES}};
    struct timespec until = deadline_in(T_WAIT_S), now;
    int rc;
    while ((rc = t_send_job(from, &j)) == -EHOSTUNREACH) {
        clock_gettime(CLOCK_MONOTONIC, &now);
        cr_assert(now.tv_sec <= until.tv_sec, "X never routable from shard %u", from);
        sched_yield();
    }
    unsigned sent = 0;
    while (rc == 0 && sent < SEND_MAX) {
        sent++;
        rc = t_send_job(from, &j);
    }
    if (!mandatory) {
        cr_assert_eq(rc, 0, "without MANDATORY the ROUTER drops at the mark");
        z_close(d);
        return;
    }
    cr_assert_eq(rc, -EAGAIN, "%u sent", sent);
    unsigned before = j.writables_before;
    for (unsigned i = 0; i < sent; i++) {
        struct t_rx r;
        cr_assert(z_recv(d, &r), "message %u of %u lost", i, sent);
        z_rx_clear(&r);
    }
    cr_assert(t_wait_count(&app.writables[from], before + 1, T_WAIT_S), "no on_writable");
    cr_assert_eq(t_send_job(from, &j), 0);
    z_close(d);
}

Test(socket_flow, router_mandatory_hwm)
{
    router_hwm(true);
}

Test(socket_flow, router_hwm_drops_without_mandatory)
{
    router_hwm(false);
}

/* Ghost peers: a remote shard fills a PULL's backlog through credits, then the PULL goes
 * away. Its backlog and the messages still in flight to it are dropped on arrival (no
 * leak: the teardown checks), the dead peer leaves every shard's ring, and a new PULL gets
 * the next messages. */
Test(socket_flow, peer_gone_with_backlog)
{
    char ep[256];
    void *z = push_to_small_pull(ep, sizeof(ep));
    unsigned from = (app.up_shard + 1) % T_SHARDS;
    cr_assert(t_wait_lb(from, 1));
    struct t_send j = {.nf = 1, .f = {big}, .len = {BIG_BYTES}};
    unsigned sent = 0;
    while (sent < SEND_MAX && t_send_job(from, &j) == 0)
        sent++;
    cr_assert_lt(sent, SEND_MAX);
    z_close(z);
    cr_assert(t_wait_count(&app.downs, 1, T_WAIT_S));
    z = z_socket(ZMQ_PULL);
    cr_assert_eq(zmq_connect(z, ep), 0);
    cr_assert(t_wait_count(&app.ups, 2, T_WAIT_S));
    const char *fresh = "fresh";
    j = (struct t_send){.nf = 1, .f = {fresh}, .len = {5}};
    cr_assert_eq(t_send_job_wait(from, &j), 0);
    struct t_rx r;
    cr_assert(z_recv(z, &r));
    cr_assert(rx_frame_is(&r, 0, "fresh"), "a ghost's message reached the new peer");
    z_rx_clear(&r);
    z_close(z);
}
