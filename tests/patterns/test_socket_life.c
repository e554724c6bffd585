/* Socket lifecycle: close flushes what is queued (LINGER -1), LINGER 0 closes at once with
 * a peer that does not read, a socket left open is freed by mcq_runtime_destroy, a socket
 * closed after the runtime stopped, several endpoints per socket, sends from a shard that
 * does not own the peer delivered through close. The teardown's leak check
 * covers every path. */
#include "socket_util.h"

TestSuite(socket_life, .init = t_setup, .fini = t_teardown, .timeout = 60);

#define FLUSH_MSGS 200

Test(socket_life, close_flushes_queued)
{
    char ep[256];
    void *z = z_socket(ZMQ_PULL);
    z_bind(z, "tcp", ep, sizeof(ep));
    t_socket(MCQ_PUSH);
    cr_assert_eq(mcq_connect(app.s, ep), 0);
    cr_assert(t_wait_count(&app.ups, 1, T_WAIT_S));
    for (unsigned i = 0; i < FLUSH_MSGS; i++) {
        char body[16];
        snprintf(body, sizeof(body), "%u", i);
        struct t_send j = {.nf = 1, .f = {body}, .len = {strlen(body)}};
        cr_assert_eq(t_send_job_wait(i % T_SHARDS, &j), 0);
    }
    mcq_socket_close(app.s);
    app.s = NULL;
    unsigned got = 0;
    struct t_rx r;
    while (got < FLUSH_MSGS && z_recv(z, &r)) {
        got++;
        z_rx_clear(&r);
    }
    cr_assert_eq(got, FLUSH_MSGS, "close dropped queued messages");
}

Test(socket_life, linger_zero_closes_at_once)
{
    char ep[256];
    static uint8_t big[1 << 20];
    void *z = z_socket(ZMQ_PULL);
    int one = 1;
    zmq_setsockopt(z, ZMQ_RCVHWM, &one, sizeof(one));
    z_bind(z, "tcp", ep, sizeof(ep));
    t_socket(MCQ_PUSH);
    t_setopt_int(MCQ_LINGER, 0);
    t_setopt_int(MCQ_SNDHWM, 2);
    cr_assert_eq(mcq_connect(app.s, ep), 0);
    cr_assert(t_wait_count(&app.ups, 1, T_WAIT_S));
    struct t_send j = {.nf = 1, .f = {big}, .len = {sizeof(big)}};
    int rc;
    unsigned n = 0;
    while ((rc = t_send_job(0, &j)) == 0 && n < 1000)
        n++;
    cr_assert_eq(rc, -EAGAIN, "the peer never filled up");
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    mcq_socket_close(app.s);
    app.s = NULL;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    cr_assert_lt(t1.tv_sec - t0.tv_sec, 2, "LINGER 0 close waited");
}

/* Left open: mcq_runtime_destroy (in the teardown) frees it. */
Test(socket_life, destroy_frees_open_socket)
{
    char ep[256];
    t_socket(MCQ_ROUTER);
    app.echo = true;
    t_bind("ipc", ep, sizeof(ep));
    t_bind("tcp", ep, sizeof(ep));
    void *d = z_socket(ZMQ_DEALER);
    cr_assert_eq(zmq_connect(d, ep), 0);
    z_send_strs(d, "x", NULL);
    struct t_rx r;
    cr_assert(z_recv(d, &r));
    z_rx_clear(&r);
    z_close(d);
    app.s = NULL;
}

/* Closed after the runtime stopped: the stop closed its partitions; close frees it. */
Test(socket_life, close_after_stop)
{
    char ep[256];
    t_socket(MCQ_DEALER);
    t_bind("tcp", ep, sizeof(ep));
    void *z = z_socket(ZMQ_DEALER);
    cr_assert_eq(zmq_connect(z, ep), 0);
    cr_assert(t_wait_count(&app.ups, 1, T_WAIT_S));
    mcq_runtime_stop(app.rt);
    cr_assert_eq(mcq_runtime_run(app.rt), 0);
    mcq_socket_close(app.s);
    app.s = NULL;
    struct mcq_socket *late;
    cr_assert_eq(mcq_socket_create(app.rt, MCQ_DEALER, &(struct mcq_socket_handlers){0}, &late),
                 -ESHUTDOWN);
}

/* Two endpoints on one socket (TCP and IPC), two connects; LAST_ENDPOINT follows binds. */
Test(socket_life, several_endpoints)
{
    char tcp[256], ipc[256];
    t_socket(MCQ_PULL);
    t_bind("tcp", tcp, sizeof(tcp));
    t_bind("ipc", ipc, sizeof(ipc));
    cr_assert(strncmp(tcp, "tcp://127.0.0.1:", 16) == 0, "%s", tcp);
    cr_assert(strncmp(ipc, "ipc://", 6) == 0, "%s", ipc);
    void *a = z_socket(ZMQ_PUSH), *b = z_socket(ZMQ_PUSH);
    cr_assert_eq(zmq_connect(a, tcp), 0);
    cr_assert_eq(zmq_connect(b, ipc), 0);
    z_send_strs(a, "via-tcp", NULL);
    z_send_strs(b, "via-ipc", NULL);
    bool seen_tcp = false, seen_ipc = false;
    for (int i = 0; i < 2; i++) {
        struct t_rx *in = t_recv(T_WAIT_S);
        cr_assert_not_null(in);
        seen_tcp |= rx_frame_is(in, 0, "via-tcp");
        seen_ipc |= rx_frame_is(in, 0, "via-ipc");
        t_free_rx(in);
    }
    cr_assert(seen_tcp && seen_ipc);
    cr_assert_eq(mcq_bind(app.s, tcp), -EADDRINUSE);
}

static void echo_msg(struct mcq_shard *sh, struct mcq_socket *s, struct mcq_msg *m, void *user)
{
    (void)user;
    if (mcq_send(sh, s, m) < 0)
        mcq_msg_free(m);
}

/* One shard: no other shard to tell anything (broadcasts go nowhere, auto ids carry no
 * shard bits); ROUTER and PAIR still work. */
Test(socket_life, single_shard_runtime)
{
    struct mcq_config cfg = mcq_config_default();
    cfg.shards = 1;
    cfg.pin = false;
    struct mcq_runtime *rt;
    cr_assert_eq(mcq_runtime_create(&cfg, &rt), 0);
    int types[] = {MCQ_ROUTER, MCQ_PAIR};
    int ztypes[] = {ZMQ_DEALER, ZMQ_PAIR};
    for (int t = 0; t < 2; t++) {
        struct mcq_socket *s;
        cr_assert_eq(
            mcq_socket_create(rt, types[t], &(struct mcq_socket_handlers){.on_msg = echo_msg}, &s),
            0);
        cr_assert_eq(mcq_bind(s, "tcp://127.0.0.1:0"), 0);
        char ep[256];
        size_t len = sizeof(ep);
        cr_assert_eq(mcq_getsockopt(s, MCQ_LAST_ENDPOINT, ep, &len), 0);
        void *z = z_socket(ztypes[t]);
        cr_assert_eq(zmq_connect(z, ep), 0);
        z_send_strs(z, "one", "two", NULL);
        struct t_rx r;
        cr_assert(z_recv(z, &r), "type %d: no echo", types[t]);
        cr_assert(r.n == 2 && rx_frame_is(&r, 0, "one") && rx_frame_is(&r, 1, "two"));
        z_rx_clear(&r);
        z_close(z);
        mcq_socket_close(s);
    }
    mcq_runtime_destroy(rt);
}

/* --- close then destroy with thousands of messages still queued --------------------------- */

#define BULK_MSGS 50000u
#define BULK_BODY_BYTES 200        /* 10 MB in all: more than the kernel buffers hold */
#define BULK_READER_RCVHWM 100     /* messages libzmq buffers ahead of the reader */
#define BULK_READER_RCVBUF 8192    /* bytes: a small kernel buffer keeps output queued here */
#define BULK_READER_BATCH 2000u    /* messages the reader takes between pauses */
#define BULK_READER_PAUSE_US 20000 /* pacing, so the sender is well ahead when it closes */

struct bulk {
    unsigned sent;
    int rc;
    struct test_event done;
};

static void bulk_pump(struct mcq_shard *sh, struct mcq_socket *s, void *user)
{
    struct bulk *b = user;
    while (b->sent < BULK_MSGS && b->rc == 0) {
        struct mcq_msg *m = mcq_msg_new(sh);
        static const uint8_t body[BULK_BODY_BYTES];
        int rc = m ? mcq_msg_append(m, body, sizeof(body)) : -ENOMEM;
        if (rc == 0)
            rc = mcq_send(sh, s, m);
        if (rc < 0)
            mcq_msg_free(m);
        if (rc == -EAGAIN)
            return;
        if (rc < 0) {
            b->rc = rc;
            break;
        }
        b->sent++;
    }
    test_event_signal(&b->done);
}

static void bulk_up(struct mcq_shard *sh, struct mcq_socket *s, const struct mcq_peer_info *p,
                    void *user)
{
    (void)p;
    bulk_pump(sh, s, user);
}

struct bulk_reader {
    void *z;
    unsigned got;
};

static void *bulk_read(void *arg)
{
    struct bulk_reader *r = arg;
    char buf[BULK_BODY_BYTES];
    while (r->got < BULK_MSGS && zmq_recv(r->z, buf, sizeof(buf), 0) >= 0)
        if (++r->got % BULK_READER_BATCH == 0)
            usleep(BULK_READER_PAUSE_US);
    return NULL;
}

/* LINGER -1: closing the socket and destroying the runtime right after the last send loses
 * nothing while the peer is connected, however much is still queued in the connection. */
Test(socket_life, close_destroy_flushes_bulk)
{
    struct mcq_config cfg = mcq_config_default();
    cfg.shards = 1;
    cfg.pin = false;
    struct mcq_runtime *rt;
    cr_assert_eq(mcq_runtime_create(&cfg, &rt), 0);
    struct bulk b = {0};
    test_event_init(&b.done);
    struct mcq_socket *s;
    cr_assert_eq(mcq_socket_create(rt, MCQ_PUSH,
                                   &(struct mcq_socket_handlers){
                                       .on_peer_up = bulk_up, .on_writable = bulk_pump, .user = &b},
                                   &s),
                 0);
    char ep[256];
    struct bulk_reader r = {.z = z_socket(ZMQ_PULL)};
    int v = BULK_READER_RCVHWM;
    zmq_setsockopt(r.z, ZMQ_RCVHWM, &v, sizeof(v));
    v = BULK_READER_RCVBUF;
    zmq_setsockopt(r.z, ZMQ_RCVBUF, &v, sizeof(v));
    z_bind(r.z, "tcp", ep, sizeof(ep));
    pthread_t reader;
    cr_assert_eq(pthread_create(&reader, NULL, bulk_read, &r), 0);
    cr_assert_eq(mcq_connect(s, ep), 0);
    bool sent = test_event_wait(&b.done, 1, T_WAIT_S);
    mcq_socket_close(s);
    mcq_runtime_destroy(rt);
    pthread_join(reader, NULL);
    cr_assert(sent, "sending stalled at %u of %u", b.sent, BULK_MSGS);
    cr_assert_eq(b.rc, 0);
    cr_assert_eq(r.got, BULK_MSGS, "close and destroy dropped %u of %u messages", BULK_MSGS - r.got,
                 BULK_MSGS);
}

#define XCLOSE_ROUNDS 10
#define XCLOSE_MSGS 3000u
#define XCLOSE_BODY_BYTES 200
#define XCLOSE_READER_BATCH 500u /* messages the reader takes between pauses */

struct xclose_reader {
    void *z;
    unsigned got;
};

/* Reads slowly (small RCVHWM and buffer, pauses) so the sender's backlogs stay full at close;
 * the socket's receive timeout ends it when messages stop coming. */
static void *xclose_read(void *arg)
{
    struct xclose_reader *r = arg;
    char buf[XCLOSE_BODY_BYTES];
    while (r->got < XCLOSE_MSGS && zmq_recv(r->z, buf, sizeof(buf), 0) >= 0)
        if (++r->got % XCLOSE_READER_BATCH == 0)
            usleep(BULK_READER_PAUSE_US);
    return NULL;
}

/* LINGER -1 with 4 shards: what a shard that does not own the peer accepted is still in the
 * mesh or in the owner's backlog at close; close and destroy must deliver all of it. */
Test(socket_life, close_delivers_other_shard_sends)
{
    static uint8_t body[XCLOSE_BODY_BYTES];
    for (unsigned round = 0; round < XCLOSE_ROUNDS; round++) {
        char ep[256];
        struct xclose_reader r = {.z = z_socket(ZMQ_PULL)};
        int v = BULK_READER_RCVHWM;
        zmq_setsockopt(r.z, ZMQ_RCVHWM, &v, sizeof(v));
        v = BULK_READER_RCVBUF;
        zmq_setsockopt(r.z, ZMQ_RCVBUF, &v, sizeof(v));
        z_bind(r.z, "tcp", ep, sizeof(ep));
        t_socket(MCQ_PUSH);
        cr_assert_eq(mcq_connect(app.s, ep), 0);
        cr_assert(t_wait_count(&app.ups, round + 1, T_WAIT_S));
        unsigned from = (app.up_shard + 1) % T_SHARDS;
        cr_assert(t_wait_lb(from, 1));
        pthread_t reader;
        cr_assert_eq(pthread_create(&reader, NULL, xclose_read, &r), 0);
        unsigned sent = 0;
        int rc = 0;
        while (sent < XCLOSE_MSGS && rc == 0) {
            struct t_send j = {.nf = 1, .f = {body}, .len = {sizeof(body)}};
            rc = t_send_job_wait(from, &j);
            if (rc == 0)
                sent++;
        }
        mcq_socket_close(app.s);
        app.s = NULL;
        mcq_runtime_destroy(app.rt);
        struct mcq_config cfg = mcq_config_default();
        cfg.shards = T_SHARDS;
        cfg.pin = false;
        cr_assert_eq(mcq_runtime_create(&cfg, &app.rt), 0);
        pthread_join(reader, NULL);
        cr_assert_eq(rc, 0, "round %u: send %u failed: %d", round, sent, rc);
        cr_assert_eq(r.got, XCLOSE_MSGS, "round %u: close lost %u of %u messages", round,
                     XCLOSE_MSGS - r.got, XCLOSE_MSGS);
    }
}
