/* Cross-shard stress, also built under TSan (MCQ_TSAN_TEST): every shard sends at once
 * through a PUSH with a tiny SNDHWM to libzmq PULLs owned by various shards, resuming on
 * on_writable after each -EAGAIN. Every message arrives exactly once and each PULL sees each
 * shard's messages in order: credits, backlogs and the peer directory under contention. */
#include "socket_util.h"

#define PER_SHARD 3000u /* messages each shard sends */
#define PULLS 3
#define TINY_HWM 4

struct blast {
    unsigned left[T_SHARDS];
    int err[T_SHARDS];
    struct test_event done;
};
static struct blast bl;

static void blast_some(struct mcq_shard *sh, struct mcq_socket *s, void *user)
{
    (void)user;
    unsigned id = mcq_shard_id(sh);
    while (bl.left[id]) {
        uint8_t body[5] = {(uint8_t)id};
        uint32_t seq = PER_SHARD - bl.left[id];
        memcpy(body + 1, &seq, sizeof(seq));
        struct mcq_msg *m = mcq_msg_new(sh);
        if (!m || mcq_msg_append(m, body, sizeof(body)) < 0) {
            bl.err[id] = -ENOMEM;
            mcq_msg_free(m);
            break;
        }
        int rc = mcq_send(sh, s, m);
        if (rc == -EAGAIN) {
            mcq_msg_free(m);
            return;
        }
        if (rc < 0) {
            bl.err[id] = rc;
            mcq_msg_free(m);
            break;
        }
        bl.left[id]--;
    }
    test_event_signal(&bl.done);
}

static void blast_start(struct mcq_shard *sh, void *arg)
{
    blast_some(sh, arg, NULL);
}

Test(socket_shards, all_shards_push_through_credits, .init = t_setup, .fini = t_teardown,
     .timeout = 120)
{
    char ep[256];
    struct mcq_socket_handlers h = {.on_writable = blast_some, .on_peer_up = t_on_up, .user = &app};
    cr_assert_eq(mcq_socket_create(app.rt, MCQ_PUSH, &h, &app.s), 0);
    t_setopt_int(MCQ_SNDHWM, TINY_HWM);
    t_setopt_int(MCQ_LINGER, 0);
    t_bind("tcp", ep, sizeof(ep));
    void *p[PULLS];
    for (int i = 0; i < PULLS; i++) {
        p[i] = z_socket(ZMQ_PULL);
        cr_assert_eq(zmq_connect(p[i], ep), 0);
    }
    cr_assert(t_wait_count(&app.ups, PULLS, T_WAIT_S));
    for (unsigned sh = 0; sh < T_SHARDS; sh++)
        cr_assert(t_wait_lb(sh, PULLS));
    test_event_init(&bl.done);
    for (unsigned sh = 0; sh < T_SHARDS; sh++)
        bl.left[sh] = PER_SHARD;
    for (unsigned sh = 0; sh < T_SHARDS; sh++)
        cr_assert_eq(mcq_runtime_post(app.rt, sh, blast_start, app.s), 0);
    static uint8_t seen[T_SHARDS][PER_SHARD];
    memset(seen, 0, sizeof(seen));
    int64_t last[PULLS][T_SHARDS];
    for (int i = 0; i < PULLS; i++)
        for (unsigned sh = 0; sh < T_SHARDS; sh++)
            last[i][sh] = -1;
    unsigned got = 0;
    while (got < T_SHARDS * PER_SHARD) {
        zmq_pollitem_t items[PULLS];
        for (int i = 0; i < PULLS; i++)
            items[i] = (zmq_pollitem_t){.socket = p[i], .events = ZMQ_POLLIN};
        cr_assert_gt(zmq_poll(items, PULLS, T_ZMQ_TIMEOUT_MS), 0, "stalled after %u", got);
        for (int i = 0; i < PULLS; i++) {
            if (!(items[i].revents & ZMQ_POLLIN))
                continue;
            uint8_t body[16];
            int n = zmq_recv(p[i], body, sizeof(body), ZMQ_DONTWAIT);
            if (n < 0)
                continue;
            cr_assert_eq(n, 5);
            unsigned sh = body[0];
            uint32_t seq;
            memcpy(&seq, body + 1, sizeof(seq));
            cr_assert(sh < T_SHARDS && seq < PER_SHARD);
            cr_assert_eq(seen[sh][seq], 0, "duplicate %u/%u", sh, seq);
            seen[sh][seq] = 1;
            cr_assert_gt((int64_t)seq, last[i][sh], "PULL %d: shard %u out of order", i, sh);
            last[i][sh] = seq;
            got++;
        }
    }
    cr_assert(test_event_wait(&bl.done, T_SHARDS, T_WAIT_S));
    for (unsigned sh = 0; sh < T_SHARDS; sh++)
        cr_assert_eq(bl.err[sh], 0, "shard %u: %d", sh, bl.err[sh]);
    for (int i = 0; i < PULLS; i++)
        z_close(p[i]);
}

/* A ROUTER relay: each libzmq DEALER (chosen id) sends [target][n] and the app turns
 * [source][target][n] into [target][source][n], so messages hop from the source's shard to
 * the target's by routing id. Every DEALER gets all of its predecessor's messages in order. */
#define RELAY_PEERS 4
#define RELAY_EACH 500u

static void relay_msg(struct mcq_shard *sh, struct mcq_socket *s, struct mcq_msg *m, void *user)
{
    (void)user;
    struct mcq_view src, dst;
    if (mcq_msg_count(m) != 3 || mcq_msg_pop_front(m, &src) < 0) {
        mcq_msg_free(m);
        return;
    }
    mcq_msg_pop_front(m, &dst);
    if (mcq_msg_prepend(m, mcq_view_data(&src), mcq_view_len(&src)) < 0 ||
        mcq_msg_prepend(m, mcq_view_data(&dst), mcq_view_len(&dst)) < 0 || mcq_send(sh, s, m) < 0)
        mcq_msg_free(m);
    mcq_view_unref(&src);
    mcq_view_unref(&dst);
}

Test(socket_shards, router_relays_between_shards, .init = t_setup, .fini = t_teardown,
     .timeout = 120)
{
    char ep[256];
    struct mcq_socket_handlers h = {.on_msg = relay_msg, .on_peer_up = t_on_up, .user = &app};
    cr_assert_eq(mcq_socket_create(app.rt, MCQ_ROUTER, &h, &app.s), 0);
    t_setopt_int(MCQ_ROUTER_MANDATORY, 1);
    t_bind("tcp", ep, sizeof(ep));
    void *d[RELAY_PEERS];
    char id[RELAY_PEERS][2];
    for (int i = 0; i < RELAY_PEERS; i++) {
        d[i] = z_socket(ZMQ_DEALER);
        id[i][0] = (char)('P' + i);
        id[i][1] = 0;
        zmq_setsockopt(d[i], ZMQ_ROUTING_ID, id[i], 1);
        cr_assert_eq(zmq_connect(d[i], ep), 0);
    }
    cr_assert(t_wait_count(&app.ups, RELAY_PEERS, T_WAIT_S));
    /* Until every id is bound everywhere a hop may be refused: probe with a ping round. */
    for (int i = 0; i < RELAY_PEERS; i++) {
        int to = (i + 1) % RELAY_PEERS;
        struct t_rx r;
        bool ok = false;
        for (int tries = 0; tries < 50 && !ok; tries++) {
            z_send_strs(d[i], id[to], "ping", NULL);
            zmq_pollitem_t it = {.socket = d[to], .events = ZMQ_POLLIN};
            if (zmq_poll(&it, 1, 100) == 1 && z_recv(d[to], &r)) {
                ok = rx_frame_is(&r, 1, "ping");
                z_rx_clear(&r);
            }
        }
        cr_assert(ok, "%s never reached %s", id[i], id[to]);
    }
    for (int i = 0; i < RELAY_PEERS; i++) {
        const char *to = id[(i + 1) % RELAY_PEERS];
        for (uint32_t k = 0; k < RELAY_EACH; k++) {
            cr_assert_geq(zmq_send(d[i], to, 1, ZMQ_SNDMORE), 0);
            cr_assert_geq(zmq_send(d[i], &k, sizeof(k), 0), 0);
        }
    }
    for (int i = 0; i < RELAY_PEERS; i++) {
        int from = (i + RELAY_PEERS - 1) % RELAY_PEERS;
        uint32_t next = 0;
        while (next < RELAY_EACH) {
            struct t_rx r;
            cr_assert(z_recv(d[i], &r), "%s: got %u of %u", id[i], next, RELAY_EACH);
            if (r.n == 2 && r.len[1] == sizeof(uint32_t)) {
                uint32_t k;
                memcpy(&k, r.data[1], sizeof(k));
                cr_assert(rx_frame_is(&r, 0, id[from]));
                cr_assert_eq(k, next, "%s: out of order", id[i]);
                next++;
            }
            z_rx_clear(&r);
        }
    }
    for (int i = 0; i < RELAY_PEERS; i++)
        z_close(d[i]);
}

/* Every shard runs request/reply loops through one REQ socket against libzmq REPs served by
 * the test thread: replies hop back to the asking shard, peers answer one request at a time
 * socket-wide, and every shard finishes all its round trips. */
#define REQ_PEERS 3
#define REQ_ROUNDS 200u

struct req_loop {
    unsigned done[T_SHARDS];
    bool out[T_SHARDS];
    int err[T_SHARDS];
    struct test_event finished;
};
static struct req_loop rl;

static void req_next(struct mcq_shard *sh, struct mcq_socket *s)
{
    unsigned id = mcq_shard_id(sh);
    if (rl.out[id] || rl.done[id] >= REQ_ROUNDS)
        return;
    struct mcq_msg *m = mcq_msg_new(sh);
    uint8_t body[5] = {(uint8_t)id};
    memcpy(body + 1, &rl.done[id], sizeof(uint32_t));
    if (!m || mcq_msg_append(m, body, sizeof(body)) < 0) {
        rl.err[id] = -ENOMEM;
        mcq_msg_free(m);
        return;
    }
    int rc = mcq_send(sh, s, m);
    if (rc == 0) {
        rl.out[id] = true;
        return;
    }
    mcq_msg_free(m);
    if (rc != -EAGAIN)
        rl.err[id] = rc;
}

static void req_reply(struct mcq_shard *sh, struct mcq_socket *s, struct mcq_msg *m, void *user)
{
    (void)user;
    unsigned id = mcq_shard_id(sh);
    const struct mcq_view *f = mcq_msg_frame(m, 0);
    uint32_t seq = UINT32_MAX;
    if (f && mcq_view_len(f) == 5 && mcq_view_data(f)[0] == id)
        memcpy(&seq, mcq_view_data(f) + 1, sizeof(seq));
    if (seq != rl.done[id])
        rl.err[id] = -EBADMSG;
    mcq_msg_free(m);
    rl.out[id] = false;
    if (++rl.done[id] == REQ_ROUNDS)
        test_event_signal(&rl.finished);
    req_next(sh, s);
}

static void req_writable(struct mcq_shard *sh, struct mcq_socket *s, void *user)
{
    (void)user;
    req_next(sh, s);
}

static void req_start(struct mcq_shard *sh, void *arg)
{
    req_next(sh, arg);
}

Test(socket_shards, req_loops_on_every_shard, .init = t_setup, .fini = t_teardown, .timeout = 120)
{
    char ep[256];
    struct mcq_socket_handlers h = {
        .on_msg = req_reply, .on_writable = req_writable, .on_peer_up = t_on_up, .user = &app};
    cr_assert_eq(mcq_socket_create(app.rt, MCQ_REQ, &h, &app.s), 0);
    t_bind("tcp", ep, sizeof(ep));
    void *p[REQ_PEERS];
    for (int i = 0; i < REQ_PEERS; i++) {
        p[i] = z_socket(ZMQ_REP);
        cr_assert_eq(zmq_connect(p[i], ep), 0);
    }
    cr_assert(t_wait_count(&app.ups, REQ_PEERS, T_WAIT_S));
    for (unsigned sh = 0; sh < T_SHARDS; sh++)
        cr_assert(t_wait_lb(sh, REQ_PEERS));
    test_event_init(&rl.finished);
    for (unsigned sh = 0; sh < T_SHARDS; sh++)
        cr_assert_eq(mcq_runtime_post(app.rt, sh, req_start, app.s), 0);
    unsigned served = 0;
    while (served < T_SHARDS * REQ_ROUNDS) {
        zmq_pollitem_t items[REQ_PEERS];
        for (int i = 0; i < REQ_PEERS; i++)
            items[i] = (zmq_pollitem_t){.socket = p[i], .events = ZMQ_POLLIN};
        cr_assert_gt(zmq_poll(items, REQ_PEERS, T_ZMQ_TIMEOUT_MS), 0, "stalled at %u", served);
        for (int i = 0; i < REQ_PEERS; i++) {
            if (!(items[i].revents & ZMQ_POLLIN))
                continue;
            uint8_t body[16];
            int n = zmq_recv(p[i], body, sizeof(body), 0);
            cr_assert_eq(n, 5);
            cr_assert_eq(zmq_send(p[i], body, 5, 0), 5);
            served++;
        }
    }
    cr_assert(test_event_wait(&rl.finished, T_SHARDS, T_WAIT_S));
    for (unsigned sh = 0; sh < T_SHARDS; sh++)
        cr_assert_eq(rl.err[sh], 0, "shard %u: %d", sh, rl.err[sh]);
    for (int i = 0; i < REQ_PEERS; i++)
        z_close(p[i]);
}

/* MCQ_TSAN_TEST */
