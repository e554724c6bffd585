/* Socket lifecycle: close flushes what is queued (LINGER -1), LINGER 0 closes at once with
 * a peer that does not read, a socket left open is freed by mcq_runtime_destroy, a socket
 * closed after the runtime stopped, several endpoints per socket, sends from a shard that
 * does not own the peer delivered through close. Shutdown: LINGER bounds the whole close
 * (once, not per layer), runtime destroy flushes sockets left open within their LINGER, and
 * a runtime stop in the middle of a close lets it finish. The teardown's leak check covers
 * every path. Also built under TSan (MCQ_TSAN_TEST): the stop paths cross every shard. */
#include "socket_util.h"

/* Per test rather than a TestSuite: the file is also built under TSan (MCQ_TSAN_TEST), whose
 * Criterion stand-in knows only Test(). */
#define LIFE .init = t_setup, .fini = t_teardown, .timeout = 60

#define FLUSH_MSGS 200

Test(socket_life, close_flushes_queued, LIFE)
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
        unsigned from = i % T_SHARDS;
        cr_assert_eq(t_send_job_wait(from, &j), 0);
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

Test(socket_life, linger_zero_closes_at_once, LIFE)
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
Test(socket_life, destroy_frees_open_socket, LIFE)
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
Test(socket_life, close_after_stop, LIFE)
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
Test(socket_life, several_endpoints, LIFE)
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
Test(socket_life, single_shard_runtime, LIFE)
{
    struct mcq_runtime *rt = start_runtime(1);
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

/* A PULL bound on tcp (endpoint into ep) that buffers little: RCVHWM rcvhwm messages and a
 * BULK_READER_RCVBUF kernel buffer, so a sender's queues stay full while it reads slowly. */
static void *small_pull(int rcvhwm, char *ep, size_t len)
{
    void *z = z_socket(ZMQ_PULL);
    zmq_setsockopt(z, ZMQ_RCVHWM, &rcvhwm, sizeof(rcvhwm));
    int rcvbuf = BULK_READER_RCVBUF;
    zmq_setsockopt(z, ZMQ_RCVBUF, &rcvbuf, sizeof(rcvbuf));
    z_bind(z, "tcp", ep, len);
    return z;
}

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

/* Starts a paced reader thread on a small PULL and a PUSH on rt that sends it BULK_MSGS as
 * fast as the pipe allows (b->done once all are accepted); returns the PUSH. */
static struct mcq_socket *bulk_start(struct mcq_runtime *rt, struct bulk *b, struct bulk_reader *r,
                                     pthread_t *reader)
{
    test_event_init(&b->done);
    struct mcq_socket *s;
    cr_assert_eq(mcq_socket_create(rt, MCQ_PUSH,
                                   &(struct mcq_socket_handlers){
                                       .on_peer_up = bulk_up, .on_writable = bulk_pump, .user = b},
                                   &s),
                 0);
    char ep[256];
    r->z = small_pull(BULK_READER_RCVHWM, ep, sizeof(ep));
    cr_assert_eq(pthread_create(reader, NULL, bulk_read, r), 0);
    cr_assert_eq(mcq_connect(s, ep), 0);
    return s;
}

/* LINGER -1: closing the socket and destroying the runtime right after the last send loses
 * nothing while the peer is connected, however much is still queued in the connection. */
Test(socket_life, close_destroy_flushes_bulk, LIFE)
{
    struct mcq_runtime *rt = start_runtime(1);
    struct bulk b = {0};
    struct bulk_reader r = {0};
    pthread_t reader;
    struct mcq_socket *s = bulk_start(rt, &b, &r, &reader);
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
Test(socket_life, close_delivers_other_shard_sends, LIFE)
{
    static uint8_t body[XCLOSE_BODY_BYTES];
    for (unsigned round = 0; round < XCLOSE_ROUNDS; round++) {
        char ep[256];
        struct xclose_reader r = {.z = small_pull(BULK_READER_RCVHWM, ep, sizeof(ep))};
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
        app.rt = start_runtime(T_SHARDS);
        pthread_join(reader, NULL);
        cr_assert_eq(rc, 0, "round %u: send %u failed: %d", round, sent, rc);
        cr_assert_eq(r.got, XCLOSE_MSGS, "round %u: close lost %u of %u messages", round,
                     XCLOSE_MSGS - r.got, XCLOSE_MSGS);
    }
}

/* --- LINGER bounds the whole close, also when the runtime stops ------------------------------
 * A libzmq PULL that stops reading: the pipe (kernel buffers, our connection's queue, the
 * peer's queue at SNDHWM) is full when the close begins. Just before LINGER runs out the
 * reader takes a burst, which lets the peer's queue reach the connection, and then never
 * reads again: a connection that started a linger of its own would keep the close going
 * for another LINGER. The close must end at LINGER, not before and not much after. */

#define LINGER_MS 300
#define LINGER_SLACK_MS 250     /* allowed beyond LINGER: far below a second LINGER */
#define LINGER_BODY (64u << 10) /* bytes per message */
#define LINGER_SNDHWM 4         /* messages in the peer's queue */
#define LINGER_FILL_MAX 1000u   /* sends before the pipe must have filled */
#define LINGER_BURST_AT_MS 270  /* the reader's burst, after the close began */
#define LINGER_BURST 40u        /* 2.5 MiB: the connection drains below half of its 4 MiB */
#define NS_PER_MS 1000000L

struct burst_reader {
    void *z;
    struct timespec at;
    unsigned got;
};

static void *burst_read(void *arg)
{
    struct burst_reader *r = arg;
    static uint8_t buf[LINGER_BODY];
    clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &r->at, NULL);
    while (r->got < LINGER_BURST && zmq_recv(r->z, buf, sizeof(buf), 0) >= 0)
        r->got++;
    return NULL;
}

static double ms_since(const struct timespec *t0)
{
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (double)(t1.tv_sec - t0->tv_sec) * 1e3 + (double)(t1.tv_nsec - t0->tv_nsec) / 1e6;
}

/* Fills the pipe to a PULL that reads only the burst, then ends the socket (close, or
 * runtime destroy with the socket left open) and returns how long that took in ms. */
static double linger_close_ms(bool by_destroy)
{
    char ep[256];
    static uint8_t body[LINGER_BODY];
    struct burst_reader r = {.z = small_pull(1, ep, sizeof(ep))};
    t_socket(MCQ_PUSH);
    t_setopt_int(MCQ_LINGER, LINGER_MS);
    t_setopt_int(MCQ_SNDHWM, LINGER_SNDHWM);
    cr_assert_eq(mcq_connect(app.s, ep), 0);
    cr_assert(t_wait_count(&app.ups, 1, T_WAIT_S));
    struct t_send j = {.nf = 1, .f = {body}, .len = {sizeof(body)}};
    int rc;
    unsigned n = 0;
    while ((rc = t_send_job(app.up_shard, &j)) == 0 && n < LINGER_FILL_MAX)
        n++;
    cr_assert_eq(rc, -EAGAIN, "the pipe never filled");
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    r.at = t0;
    r.at.tv_nsec += LINGER_BURST_AT_MS * NS_PER_MS;
    r.at.tv_sec += r.at.tv_nsec / (1000 * NS_PER_MS);
    r.at.tv_nsec %= 1000 * NS_PER_MS;
    pthread_t reader;
    cr_assert_eq(pthread_create(&reader, NULL, burst_read, &r), 0);
    if (by_destroy) {
        mcq_runtime_destroy(app.rt);
        app.rt = NULL;
    } else {
        mcq_socket_close(app.s);
    }
    app.s = NULL;
    double ms = ms_since(&t0);
    pthread_join(reader, NULL);
    cr_assert_eq(r.got, LINGER_BURST, "the reader's burst fell short: %u", r.got);
    if (by_destroy)
        app.rt = start_runtime(T_SHARDS);
    return ms;
}

Test(socket_life, linger_bounds_whole_close, LIFE)
{
    double ms = linger_close_ms(false);
    cr_log_info("close with LINGER %d took %.1f ms", LINGER_MS, ms);
    cr_assert_geq(ms, LINGER_MS, "close gave up after %.0f ms, before LINGER", ms);
    cr_assert_lt(ms, LINGER_MS + LINGER_SLACK_MS, "close took %.0f ms with LINGER %d", ms,
                 LINGER_MS);
}

/* Runtime destroy with the socket still open lingers like a close (libzmq's zmq_ctx_term):
 * it flushes for LINGER, and no longer. */
Test(socket_life, destroy_lingers_open_socket, LIFE)
{
    double ms = linger_close_ms(true);
    cr_log_info("destroy with LINGER %d took %.1f ms", LINGER_MS, ms);
    cr_assert_geq(ms, LINGER_MS, "destroy dropped the queue after %.0f ms, before LINGER", ms);
    cr_assert_lt(ms, LINGER_MS + LINGER_SLACK_MS, "destroy took %.0f ms with LINGER %d", ms,
                 LINGER_MS);
}

/* LINGER -1 and a reader that keeps up: destroying the runtime with the socket left open
 * delivers everything queued, on every shard, as close would. */
Test(socket_life, destroy_flushes_open_socket, LIFE)
{
    struct bulk b = {0};
    struct bulk_reader r = {0};
    pthread_t reader;
    bulk_start(app.rt, &b, &r, &reader);
    bool sent = test_event_wait(&b.done, 1, T_WAIT_S);
    mcq_runtime_destroy(app.rt);
    app.rt = start_runtime(T_SHARDS);
    pthread_join(reader, NULL);
    cr_assert(sent, "sending stalled at %u of %u", b.sent, BULK_MSGS);
    cr_assert_eq(b.rc, 0);
    cr_assert_eq(r.got, BULK_MSGS, "destroy dropped %u of %u messages", BULK_MSGS - r.got,
                 BULK_MSGS);
}

/* --- a runtime stop in the middle of a close ------------------------------------------------- */

#define STOP_LINGER_MS 5000 /* bounds the close; the reader needs far less */
#define STOP_SNDHWM 10      /* messages: the sending shard's window and the owner's backlog */
#define FILL_IDLE_S 0.2     /* no room for this long: the pipe is full */

struct count_reader {
    void *z;
    unsigned want, got;
};

static void *count_read(void *arg)
{
    struct count_reader *r = arg;
    static uint8_t buf[LINGER_BODY];
    while (r->got < r->want && zmq_recv(r->z, buf, sizeof(buf), 0) >= 0)
        r->got++;
    return NULL;
}

struct stall {
    bool saw_stop;
    struct test_event running;
};

/* Keeps its shard busy until the runtime stops, so that shard's part of a close (its quiet)
 * can only follow the stop. */
static void task_stall(struct mcq_shard *sh, void *arg)
{
    struct stall *st = arg;
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    test_event_signal(&st->running);
    while (!mcq_runtime_stopping(mcq_shard_runtime(sh)) && ms_since(&t0) < T_WAIT_S * 1e3)
        sched_yield();
    st->saw_stop = mcq_runtime_stopping(mcq_shard_runtime(sh));
}

static void *closer(void *arg)
{
    mcq_socket_close(arg);
    return NULL;
}

/* Waits until n shards ran their part of mcq_socket_close's first step. */
static bool wait_closes_ran(struct mcq_socket *s, unsigned n)
{
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        pthread_mutex_lock(&s->lock);
        bool ok = s->closes_ran >= n;
        pthread_mutex_unlock(&s->lock);
        if (ok)
            return true;
        if (ms_since(&t0) > T_WAIT_S * 1e3)
            return false;
        sched_yield();
    }
}

/* A shard that does not own the peer sends until the pipe to a PULL that does not read yet
 * is full, so its last messages are crossing the mesh or waiting in the owner's backlog. The
 * socket begins closing and the runtime stops while the close waits for that shard. The stop
 * must let the close finish within LINGER: once the PULL reads, it gets every message. */
Test(socket_life, stop_during_close_delivers, LIFE)
{
    static uint8_t body[LINGER_BODY];
    char ep[256];
    struct count_reader r = {.z = small_pull(1, ep, sizeof(ep))};
    t_socket(MCQ_PUSH);
    t_setopt_int(MCQ_LINGER, STOP_LINGER_MS);
    t_setopt_int(MCQ_SNDHWM, STOP_SNDHWM);
    cr_assert_eq(mcq_connect(app.s, ep), 0);
    cr_assert(t_wait_count(&app.ups, 1, T_WAIT_S));
    unsigned from = (app.up_shard + 1) % T_SHARDS;
    cr_assert(t_wait_lb(from, 1));
    struct t_send j = {.nf = 1, .f = {body}, .len = {sizeof(body)}};
    int rc;
    while ((rc = t_send_job(from, &j)) == 0 ||
           (rc == -EAGAIN &&
            t_wait_count(&app.writables[from], j.writables_before + 1, FILL_IDLE_S))) {
        if (rc == 0)
            r.want++;
        cr_assert_lt(r.want, LINGER_FILL_MAX, "the pipe never filled");
    }
    cr_assert_eq(rc, -EAGAIN);
    struct stall st = {0};
    test_event_init(&st.running);
    cr_assert_eq(mcq_runtime_post(app.rt, from, task_stall, &st), 0);
    cr_assert(test_event_wait(&st.running, 1, T_WAIT_S));
    struct mcq_socket *s = app.s;
    app.s = NULL;
    pthread_t close_thread;
    cr_assert_eq(pthread_create(&close_thread, NULL, closer, s), 0);
    /* Every shard but the stalled one has gone quiet: the close is in its first phase. */
    bool in_phase1 = wait_closes_ran(s, T_SHARDS - 1);
    mcq_runtime_stop(app.rt);
    pthread_t reader;
    cr_assert_eq(pthread_create(&reader, NULL, count_read, &r), 0);
    cr_assert_eq(mcq_runtime_run(app.rt), 0);
    pthread_join(close_thread, NULL);
    pthread_join(reader, NULL);
    cr_assert(in_phase1, "the close never started");
    cr_assert(st.saw_stop, "the stall ended before the stop");
    cr_assert_eq(r.got, r.want, "the stop lost %u of %u messages", r.want - r.got, r.want);
}
