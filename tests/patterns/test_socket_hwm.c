/* Receive and byte limits against libzmq: RCVHWM pauses a peer whose input waits on the
 * socket side (for its previous connection's on_peer_down, or for its routing id) so the
 * libzmq sender blocks on TCP backpressure, and nothing is lost when it resumes;
 * SNDHWM_BYTES says -EAGAIN once a peer's queued bytes reach it. */
#include "socket_util.h"

#include <errno.h>

#include "patterns/siphash.h"

TestSuite(socket_hwm, .init = t_setup, .fini = t_teardown, .timeout = 60);

#define RCV_HWM 4                 /* messages held before our side pauses the peer */
#define RCV_MSG_BYTES 1024        /* per message: the kernel buffers hold a few hundred */
#define RCV_SEND_MAX 20000u       /* sends before we give up waiting for the sender to block */
#define Z_SNDBUF_BYTES (64 << 10) /* fixed libzmq socket buffer: no autotuning */
#define Z_SEND_TIMEOUT_MS 300     /* a send blocked this long means backpressure */
#define RECONNECT_MS 20
#define REBIND_TRIES 500 /* libzmq closes a socket's listener asynchronously */
#define REBIND_PAUSE_NS 2000000L

/* Keeps a shard busy (as a long callback would) until released, bounded by T_WAIT_S. */
struct t_block {
    struct test_event entered, release;
};

static void task_block(struct mcq_shard *sh, void *arg)
{
    (void)sh;
    struct t_block *b = arg;
    test_event_signal(&b->entered);
    test_event_wait(&b->release, 1, T_WAIT_S);
}

struct held_probe {
    unsigned inq, peers;
    bool paused;
    struct test_event done;
};

static void task_held_probe(struct mcq_shard *sh, void *arg)
{
    struct held_probe *p = arg;
    p->inq = 0;
    p->peers = 0;
    p->paused = false;
    for (struct mcq_pstate *ps = app.s->parts[mcq_shard_id(sh)]->peers; ps; ps = ps->next) {
        p->inq += ps->inq.len;
        p->paused |= ps->paused;
        p->peers++;
    }
    test_event_signal(&p->done);
}

static struct held_probe probe_held(unsigned shard)
{
    struct held_probe p;
    test_event_init(&p.done);
    cr_assert_eq(mcq_runtime_post(app.rt, shard, task_held_probe, &p), 0);
    cr_assert(test_event_wait(&p.done, 1, T_WAIT_S), "probe never ran");
    return p;
}

Test(socket_hwm, rcvhwm_by_type)
{
    static const int types[] = {MCQ_PULL, MCQ_DEALER, MCQ_ROUTER, MCQ_REQ, MCQ_REP, MCQ_PAIR};
    int hwm = 7, got = 0;
    for (unsigned i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        struct mcq_socket *s;
        cr_assert_eq(mcq_socket_create(app.rt, types[i], &(struct mcq_socket_handlers){0}, &s), 0);
        cr_assert_eq(mcq_setsockopt(s, MCQ_RCVHWM, &hwm, sizeof(hwm)), 0, "type %d", types[i]);
        size_t len = sizeof(got);
        cr_assert_eq(mcq_getsockopt(s, MCQ_RCVHWM, &got, &len), 0);
        cr_assert_eq(got, hwm);
        mcq_socket_close(s);
    }
    struct mcq_socket *push;
    cr_assert_eq(mcq_socket_create(app.rt, MCQ_PUSH, &(struct mcq_socket_handlers){0}, &push), 0);
    cr_assert_eq(mcq_setsockopt(push, MCQ_RCVHWM, &hwm, sizeof(hwm)), -ENOTSUP, "PUSH receives");
    mcq_socket_close(push);
}

/* A libzmq socket of `type` whose sends block (time out) as soon as TCP backpressure
 * reaches it. */
static void *z_blocking_sender(int type)
{
    void *z = z_socket(type);
    int v = 1;
    zmq_setsockopt(z, ZMQ_SNDHWM, &v, sizeof(v));
    v = Z_SNDBUF_BYTES;
    zmq_setsockopt(z, ZMQ_SNDBUF, &v, sizeof(v));
    v = Z_SEND_TIMEOUT_MS;
    zmq_setsockopt(z, ZMQ_SNDTIMEO, &v, sizeof(v));
    return z;
}

/* Sends numbered messages until a send times out; returns how many went. */
static unsigned send_until_blocked(void *z)
{
    static char body[RCV_MSG_BYTES];
    unsigned sent = 0;
    while (sent < RCV_SEND_MAX) {
        memcpy(body, &sent, sizeof(sent));
        if (zmq_send(z, body, sizeof(body), 0) < 0)
            break;
        sent++;
    }
    cr_assert_eq(zmq_errno(), EAGAIN, "the sender never blocked (%u sent)", sent);
    cr_assert_lt(sent, RCV_SEND_MAX, "the sender never blocked");
    return sent;
}

/* Every one of `sent` numbered messages arrives, in order, its number in frame `f` and,
 * when id is not NULL, the routing id in frame 0. */
static void expect_in_order(unsigned sent, unsigned f, const char *id)
{
    for (unsigned i = 0; i < sent; i++) {
        struct t_rx *in = t_recv(T_WAIT_S);
        cr_assert_not_null(in, "message %u of %u never arrived", i, sent);
        cr_assert(!id || rx_frame_is(in, 0, id), "message %u without the routing id", i);
        cr_assert_eq(in->len[f], RCV_MSG_BYTES);
        unsigned seq;
        memcpy(&seq, in->data[f], sizeof(seq));
        cr_assert_eq(seq, i, "message %u out of order (%u)", i, seq);
        t_free_rx(in);
    }
}

static void block_shard(struct t_block *b, unsigned shard)
{
    test_event_init(&b->entered);
    test_event_init(&b->release);
    cr_assert_eq(mcq_runtime_post(app.rt, shard, task_block, b), 0);
    cr_assert(test_event_wait(&b->entered, 1, T_WAIT_S));
}

/* The owner shard holds exactly RCVHWM messages of its one peer, paused, and delivered
 * nothing; `ups` peers were announced. */
static void assert_held_at_mark(unsigned owner, unsigned ups)
{
    struct held_probe p = probe_held(owner);
    cr_assert_eq(p.peers, 1);
    cr_assert(p.paused, "the peer was not paused");
    cr_assert_eq(p.inq, RCV_HWM, "held input %u, RCVHWM %d", p.inq, RCV_HWM);
    pthread_mutex_lock(&app.lock);
    unsigned nrx = app.nrx, up = app.ups;
    pthread_mutex_unlock(&app.lock);
    cr_assert_eq(nrx, 0, "input delivered while it should wait");
    cr_assert_eq(up, ups, "the peer was announced while its input waited");
}

/* Our DEALER reconnects to a new libzmq DEALER while another shard is busy, so the old
 * connection's on_peer_down cannot complete and the new connection's input must wait on
 * the socket side. RCVHWM 4: exactly 4 messages wait, the connection is paused, and the
 * libzmq sender blocks (its send times out). Once the busy shard is free, every message
 * the sender got out arrives, in order. */
Test(socket_hwm, rcvhwm_pauses_held_input)
{
    char ep[256];
    t_socket(MCQ_DEALER);
    t_setopt_int(MCQ_RCVHWM, RCV_HWM);
    t_setopt_int(MCQ_RECONNECT_IVL, RECONNECT_MS);
    t_setopt_int(MCQ_LINGER, 0);
    void *first = z_socket(ZMQ_DEALER);
    z_bind(first, "tcp", ep, sizeof(ep));
    cr_assert_eq(mcq_connect(app.s, ep), 0);
    cr_assert(t_wait_count(&app.ups, 1, T_WAIT_S));
    unsigned owner = app.up_shard;
    static struct t_block blk;
    block_shard(&blk, (owner + 1) % T_SHARDS);

    /* The first libzmq socket goes away; a second one on the same endpoint gets our peer's
     * reconnection. */
    z_close(first);
    void *z = z_blocking_sender(ZMQ_DEALER);
    void *mon = z_monitor(z, ZMQ_EVENT_HANDSHAKE_SUCCEEDED);
    int rc = -1;
    for (unsigned i = 0; i < REBIND_TRIES && rc != 0; i++) {
        rc = zmq_bind(z, ep);
        if (rc != 0)
            nanosleep(&(struct timespec){0, REBIND_PAUSE_NS}, NULL);
    }
    cr_assert_eq(rc, 0, "rebind %s: %s", ep, zmq_strerror(zmq_errno()));
    cr_assert(z_wait_event(mon, ZMQ_EVENT_HANDSHAKE_SUCCEEDED), "our peer did not reconnect");

    unsigned sent = send_until_blocked(z);
    assert_held_at_mark(owner, 1);
    test_event_signal(&blk.release);
    cr_assert(t_wait_count(&app.downs, 1, T_WAIT_S));
    cr_assert(t_wait_count(&app.ups, 2, T_WAIT_S));
    expect_in_order(sent, 0, NULL);
    cr_assert(!probe_held(owner).paused, "still paused after the held input went out");
    cr_log_info("RCVHWM %d: libzmq blocked after %u messages of %d bytes", RCV_HWM, sent,
                RCV_MSG_BYTES);
}

/* Our ROUTER connects (from shard 0: a socket's first connect goes there) to a libzmq
 * DEALER that chose its routing id; the shard arbitrating that id is busy, so the claim is
 * unanswered and the peer's input must wait. RCVHWM 4: 4 messages wait and the sender
 * blocks; once the arbiter answers, every message arrives in order with the chosen id. */
Test(socket_hwm, rcvhwm_pauses_input_waiting_for_its_id)
{
    char ep[256], id[16];
    t_socket(MCQ_ROUTER);
    t_setopt_int(MCQ_RCVHWM, RCV_HWM);
    t_setopt_int(MCQ_LINGER, 0);
    unsigned arbiter = 0;
    for (unsigned i = 0; arbiter == 0; i++) {
        snprintf(id, sizeof(id), "id-%u", i);
        arbiter = (unsigned)(mcq_siphash24(app.s->hkey, id, strlen(id)) % T_SHARDS);
    }
    void *z = z_blocking_sender(ZMQ_DEALER);
    zmq_setsockopt(z, ZMQ_ROUTING_ID, id, strlen(id));
    void *mon = z_monitor(z, ZMQ_EVENT_HANDSHAKE_SUCCEEDED);
    z_bind(z, "tcp", ep, sizeof(ep));
    static struct t_block blk;
    block_shard(&blk, arbiter);
    cr_assert_eq(mcq_connect(app.s, ep), 0);
    cr_assert(z_wait_event(mon, ZMQ_EVENT_HANDSHAKE_SUCCEEDED));

    unsigned sent = send_until_blocked(z);
    assert_held_at_mark(0, 0);
    test_event_signal(&blk.release);
    cr_assert(t_wait_count(&app.ups, 1, T_WAIT_S));
    expect_in_order(sent, 1, id);
    cr_assert(!probe_held(0).paused, "still paused after the held input went out");
}

/* --- mcq_socket_pause_input ------------------------------------------------------------------ */

struct pause_job {
    bool pause;
    int rc;
    struct test_event done;
};

static void task_pause_input(struct mcq_shard *sh, void *arg)
{
    struct pause_job *j = arg;
    j->rc = mcq_socket_pause_input(sh, app.s, j->pause);
    test_event_signal(&j->done);
}

static void pause_everywhere(bool pause)
{
    for (unsigned i = 0; i < T_SHARDS; i++) {
        struct pause_job j = {.pause = pause};
        test_event_init(&j.done);
        cr_assert_eq(mcq_runtime_post(app.rt, i, task_pause_input, &j), 0);
        cr_assert(test_event_wait(&j.done, 1, T_WAIT_S), "shard %u never ran the pause", i);
        cr_assert_eq(j.rc, 0, "shard %u: mcq_socket_pause_input %d", i, j.rc);
    }
}

/* Our PULL pauses its input on every shard: a libzmq PUSH that connects then (so it starts
 * paused) blocks on TCP backpressure with nothing delivered; after the resume every
 * message arrives in order. The same again with the pause taken while it is connected. */
Test(socket_hwm, pause_input_backpressures_the_sender)
{
    char ep[256];
    t_socket(MCQ_PULL);
    t_setopt_int(MCQ_LINGER, 0);
    t_bind("tcp", ep, sizeof(ep));
    pause_everywhere(true);
    void *z = z_blocking_sender(ZMQ_PUSH);
    cr_assert_eq(zmq_connect(z, ep), 0);
    for (int round = 0; round < 2; round++) {
        if (round == 1)
            pause_everywhere(true);
        unsigned sent = send_until_blocked(z);
        cr_assert_null(t_recv(0), "round %d: delivered while paused", round);
        pause_everywhere(false);
        expect_in_order(sent, 0, NULL);
        cr_log_info("round %d: the sender blocked after %u messages of %d bytes", round, sent,
                    RCV_MSG_BYTES);
    }
}

/* --- SNDHWM_BYTES ---------------------------------------------------------------------------- */

#define FILL_MSG_BYTES (64u << 10)
#define FILL_MAX 4096u                  /* sends before we give up waiting for -EAGAIN */
#define LIMIT_SMALL (256ll << 10)       /* bytes */
#define LIMIT_BIG (8ll << 20)           /* bytes */
#define LIMIT_TOLERANCE_BYTES (2 << 20) /* kernel buffers differ a little between connections */

struct fill {
    unsigned n;
    int rc;
    struct test_event done;
};

/* Sends FILL_MSG_BYTES messages from the peer's own shard until one is refused. */
static void task_fill(struct mcq_shard *sh, void *arg)
{
    static uint8_t data[FILL_MSG_BYTES];
    struct fill *f = arg;
    f->n = 0;
    f->rc = 0;
    while (f->n < FILL_MAX) {
        struct mcq_msg *m = mcq_msg_new(sh);
        f->rc = m ? mcq_msg_append(m, data, sizeof(data)) : -ENOMEM;
        if (f->rc == 0)
            f->rc = mcq_send(sh, app.s, m);
        if (f->rc < 0) {
            mcq_msg_free(m);
            break;
        }
        f->n++;
    }
    test_event_signal(&f->done);
}

/* Messages a DEALER with SNDHWM 0 (no message limit) and SNDHWM_BYTES `limit` takes for a
 * libzmq peer that does not read, before -EAGAIN. */
static unsigned fill_until_refused(int64_t limit)
{
    char ep[256];
    unsigned ups = app.ups;
    t_socket(MCQ_DEALER);
    t_setopt_int(MCQ_SNDHWM, 0);
    t_setopt_int(MCQ_LINGER, 0);
    cr_assert_eq(mcq_setsockopt(app.s, MCQ_SNDHWM_BYTES, &limit, sizeof(limit)), 0);
    int64_t got = 0;
    size_t len = sizeof(got);
    cr_assert_eq(mcq_getsockopt(app.s, MCQ_SNDHWM_BYTES, &got, &len), 0);
    cr_assert_eq(got, limit);
    void *z = z_socket(ZMQ_DEALER);
    int v = 1;
    zmq_setsockopt(z, ZMQ_RCVHWM, &v, sizeof(v));
    v = Z_SNDBUF_BYTES;
    zmq_setsockopt(z, ZMQ_RCVBUF, &v, sizeof(v));
    z_bind(z, "tcp", ep, sizeof(ep));
    cr_assert_eq(mcq_connect(app.s, ep), 0);
    cr_assert(t_wait_count(&app.ups, ups + 1, T_WAIT_S));
    struct fill f;
    test_event_init(&f.done);
    cr_assert_eq(mcq_runtime_post(app.rt, app.up_shard, task_fill, &f), 0);
    cr_assert(test_event_wait(&f.done, 1, T_WAIT_S), "fill never finished");
    cr_assert_eq(f.rc, -EAGAIN, "SNDHWM_BYTES %lld: no -EAGAIN after %u sends", (long long)limit,
                 f.n);
    mcq_socket_close(app.s);
    app.s = NULL;
    z_close(z);
    return f.n;
}

/* Two identical non-reading peers, one limited to 256 KiB queued and one to 8 MiB: the
 * second takes (8 MiB - 256 KiB) more before -EAGAIN, within what the kernel buffers of two
 * connections may differ by. */
Test(socket_hwm, sndhwm_bytes_bounds_queued_bytes)
{
    unsigned small = fill_until_refused(LIMIT_SMALL);
    unsigned big = fill_until_refused(LIMIT_BIG);
    long long extra = ((long long)big - (long long)small) * FILL_MSG_BYTES;
    cr_log_info("SNDHWM_BYTES: %u x %u B taken at %lld B, %u at %lld B", small, FILL_MSG_BYTES,
                LIMIT_SMALL, big, LIMIT_BIG);
    cr_assert_geq(extra, LIMIT_BIG - LIMIT_SMALL - LIMIT_TOLERANCE_BYTES,
                  "%u vs %u messages: the byte limit did not hold them", small, big);
    cr_assert_leq(extra, LIMIT_BIG - LIMIT_SMALL + LIMIT_TOLERANCE_BYTES,
                  "%u vs %u messages: more than the byte limit was queued", small, big);
}
