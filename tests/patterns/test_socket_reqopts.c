/* REQ_CORRELATE and REQ_RELAXED on our REQ socket against libzmq ROUTER and REP peers, and a
 * libzmq REQ with REQ_CORRELATE against our REP. Also built under TSan (MCQ_TSAN_TEST):
 * replies cross shards by their request ids. */
#include "tests/patterns/socket_util.h"

#define REQ_TEST(name)                                                                             \
    Test(socket_reqopts, name, .init = t_setup, .fini = t_teardown, .timeout = 60)

#define REQ_ID_LEN 4          /* bytes of a request id frame */
#define QUIET_S 0.1           /* how long "nothing more arrives" is watched */
#define ROUTER_NO_INPUT_MS 50 /* how long a ROUTER is watched for an unexpected request */
#define REBIND_RETRY_MS 5     /* pause between binds while the old listener closes */

/* Sends [routing id][id (when id_len)][empty][body] from a libzmq ROUTER. */
static void z_reply_with(void *r, const struct t_rx *req, const void *id, size_t id_len,
                         const char *body)
{
    cr_assert_geq(zmq_send(r, req->data[0], req->len[0], ZMQ_SNDMORE), 0);
    if (id_len)
        cr_assert_geq(zmq_send(r, id, id_len, ZMQ_SNDMORE), 0);
    cr_assert_geq(zmq_send(r, "", 0, ZMQ_SNDMORE), 0);
    z_send_strs(r, body, NULL);
}

/* Answers a correlated request [routing id][id][empty][...] as a well-behaved peer does. */
static void z_reply(void *r, const struct t_rx *req, const char *body)
{
    z_reply_with(r, req, req->data[1], req->len[1], body);
}

/* Receives a correlated request at a ROUTER and checks its shape: [rid][4-byte id][][body]. */
static void z_recv_correlated(void *r, struct t_rx *m, const char *body)
{
    cr_assert(z_recv(r, m), "no request reached the ROUTER");
    cr_assert_eq(m->n, 4, "frames: %u", m->n);
    cr_assert_eq(m->len[1], REQ_ID_LEN, "request id frame of %zu bytes", m->len[1]);
    cr_assert_eq(m->len[2], 0, "empty delimiter after the id");
    cr_assert(rx_frame_is(m, 3, body));
}

static void expect_reply(const char *body, unsigned shard)
{
    struct t_rx *in = t_recv(T_WAIT_S);
    cr_assert_not_null(in, "no reply delivered");
    cr_assert(in->n == 1 && rx_frame_is(in, 0, body), "delivered %s, expected %s",
              in->n ? (char *)in->data[0] : "(none)", body);
    cr_assert_eq(in->shard, shard);
    t_free_rx(in);
}

static void req_to_router(void **r, int correlate, int relaxed)
{
    char ep[256];
    *r = z_socket(ZMQ_ROUTER);
    z_bind(*r, "tcp", ep, sizeof(ep));
    t_socket(MCQ_REQ);
    t_setopt_int(MCQ_REQ_CORRELATE, correlate);
    t_setopt_int(MCQ_REQ_RELAXED, relaxed);
    cr_assert_eq(mcq_connect(app.s, ep), 0);
    cr_assert(t_wait_count(&app.ups, 1, T_WAIT_S));
}

static int send_str(unsigned shard, const char *body)
{
    struct t_send j = {.nf = 1, .f = {body}, .len = {strlen(body)}};
    return t_send_job_wait(shard, &j);
}

REQ_TEST(options_only_on_req)
{
    t_socket(MCQ_DEALER);
    int one = 1;
    cr_assert_eq(mcq_setsockopt(app.s, MCQ_REQ_CORRELATE, &one, sizeof(one)), -ENOTSUP);
    cr_assert_eq(mcq_setsockopt(app.s, MCQ_REQ_RELAXED, &one, sizeof(one)), -ENOTSUP);
    mcq_socket_close(app.s);
    t_socket(MCQ_REQ);
    int v = -1;
    size_t len = sizeof(v);
    cr_assert_eq(mcq_getsockopt(app.s, MCQ_REQ_CORRELATE, &v, &len), 0);
    cr_assert_eq(v, 0, "default off");
    int two = 2;
    cr_assert_eq(mcq_setsockopt(app.s, MCQ_REQ_RELAXED, &two, sizeof(two)), -EINVAL);
    cr_assert_eq(mcq_setsockopt(app.s, MCQ_REQ_RELAXED, &one, 1), -EINVAL);
    t_setopt_int(MCQ_REQ_RELAXED, 1);
    len = sizeof(v);
    cr_assert_eq(mcq_getsockopt(app.s, MCQ_REQ_RELAXED, &v, &len), 0);
    cr_assert_eq(v, 1);
}

/* The ROUTER sees [rid][id][][body]; a reply with another id, or with none, is dropped
 * silently; the reply with the request's id is delivered; the next request has a new id. */
REQ_TEST(correlate_matches_replies_by_id)
{
    void *r;
    req_to_router(&r, 1, 0);
    unsigned shard = (app.up_shard + 1) % T_SHARDS;
    cr_assert(t_wait_lb(shard, 1));
    cr_assert_eq(send_str(shard, "one"), 0);
    struct t_rx m;
    z_recv_correlated(r, &m, "one");
    uint32_t id1, wrong;
    memcpy(&id1, m.data[1], sizeof(id1));
    wrong = id1 ^ 0x80000000u;
    z_reply_with(r, &m, &wrong, sizeof(wrong), "wrong-id");
    z_reply_with(r, &m, NULL, 0, "no-id");
    z_reply(r, &m, "right");
    z_rx_clear(&m);
    /* Replies on one connection arrive in order: a dropped one would have come first. */
    expect_reply("right", shard);
    cr_assert_eq(send_str(shard, "two"), 0, "no new request after the reply");
    z_recv_correlated(r, &m, "two");
    uint32_t id2;
    memcpy(&id2, m.data[1], sizeof(id2));
    cr_assert_neq(id1, id2, "consecutive requests share an id");
    z_reply(r, &m, "right-two");
    z_rx_clear(&m);
    expect_reply("right-two", shard);
    cr_assert_null(t_recv(QUIET_S), "a reply with a wrong id was delivered");
}

/* Without RELAXED a second request while a reply is owed is refused with -EFSM. */
REQ_TEST(strict_without_relaxed)
{
    void *r;
    req_to_router(&r, 1, 0);
    cr_assert_eq(send_str(app.up_shard, "first"), 0);
    cr_assert_eq(t_send_strs(app.up_shard, "second", NULL), -EFSM);
}

/* RELAXED + CORRELATE: a send abandons the request out; the ROUTER answers the first
 * request late and then the second: only the second's reply is delivered. */
REQ_TEST(relaxed_correlated_drops_the_abandoned_reply)
{
    void *r;
    req_to_router(&r, 1, 1);
    for (unsigned k = 0; k < 2; k++) {
        /* The owner shard and another: the peer is local, then behind the mesh. */
        unsigned shard = (app.up_shard + k) % T_SHARDS;
        cr_assert(t_wait_lb(shard, 1));
        cr_assert_eq(send_str(shard, "first"), 0);
        cr_assert_eq(send_str(shard, "second"), 0, "RELAXED refused a second request");
        struct t_rx a, b;
        z_recv_correlated(r, &a, "first");
        z_recv_correlated(r, &b, "second");
        z_reply(r, &a, "re-first");
        z_reply(r, &b, "re-second");
        z_rx_clear(&a);
        z_rx_clear(&b);
        expect_reply("re-second", shard);
        cr_assert_null(t_recv(QUIET_S), "the abandoned request's reply was delivered");
    }
}

/* RELAXED without CORRELATE: the peer still answers one request at a time, so the second
 * request waits at the peer's owner until the first is answered, and that late answer (the
 * first reply from the peer after the abandon) is dropped rather than taken for the second's
 * (libzmq would deliver it). */
REQ_TEST(relaxed_uncorrelated_never_takes_the_late_reply)
{
    void *r;
    req_to_router(&r, 0, 1);
    unsigned shard = (app.up_shard + 1) % T_SHARDS;
    cr_assert(t_wait_lb(shard, 1));
    cr_assert_eq(send_str(shard, "first"), 0);
    struct t_rx a, b;
    cr_assert(z_recv(r, &a));
    cr_assert(a.n == 3 && rx_frame_is(&a, 2, "first"));
    cr_assert_eq(send_str(shard, "second"), 0, "RELAXED refused a second request");
    zmq_pollitem_t it = {.socket = r, .events = ZMQ_POLLIN};
    cr_assert_eq(zmq_poll(&it, 1, ROUTER_NO_INPUT_MS), 0, "the busy peer got a second request");
    z_reply_with(r, &a, NULL, 0, "re-first");
    z_rx_clear(&a);
    cr_assert(z_recv(r, &b), "the second request never followed the first's reply");
    cr_assert(b.n == 3 && rx_frame_is(&b, 2, "second"));
    z_reply_with(r, &b, NULL, 0, "re-second");
    z_rx_clear(&b);
    expect_reply("re-second", shard);
    cr_assert_null(t_recv(QUIET_S), "the abandoned request's reply was delivered");
}

/* Lazy Pirate against a ROUTER that ignores the first request: the resend is answered. */
REQ_TEST(lazy_pirate_router_ignores_first)
{
    void *r;
    req_to_router(&r, 1, 1);
    unsigned shard = (app.up_shard + 2) % T_SHARDS;
    cr_assert(t_wait_lb(shard, 1));
    cr_assert_eq(send_str(shard, "try"), 0);
    struct t_rx m;
    z_recv_correlated(r, &m, "try");
    z_rx_clear(&m);
    cr_assert_eq(send_str(shard, "try"), 0, "the resend was refused");
    z_recv_correlated(r, &m, "try");
    z_reply(r, &m, "answer");
    z_rx_clear(&m);
    expect_reply("answer", shard);
}

/* Lazy Pirate against a libzmq REP that takes the first request and dies without answering;
 * a new REP binds the same endpoint and answers the resend (its envelope keeps the id). */
REQ_TEST(lazy_pirate_rep_restarts)
{
    char ep[256];
    void *rep = z_socket(ZMQ_REP);
    z_bind(rep, "tcp", ep, sizeof(ep));
    t_socket(MCQ_REQ);
    t_setopt_int(MCQ_REQ_CORRELATE, 1);
    t_setopt_int(MCQ_REQ_RELAXED, 1);
    t_setopt_int(MCQ_RECONNECT_IVL, 10);
    cr_assert_eq(mcq_connect(app.s, ep), 0);
    cr_assert_eq(send_str(1, "try"), 0);
    char buf[16];
    cr_assert_eq(zmq_recv(rep, buf, sizeof(buf), 0), 3);
    z_close(rep);
    cr_assert(t_wait_count(&app.downs, 1, T_WAIT_S), "the dead REP was not noticed");
    rep = z_socket(ZMQ_REP);
    /* libzmq closes the old listener on its I/O thread, with nothing to wait on: retry. */
    struct timespec until = deadline_in(T_WAIT_S), now;
    int rc;
    while ((rc = zmq_bind(rep, ep)) < 0 && zmq_errno() == EADDRINUSE) {
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (now.tv_sec > until.tv_sec)
            break;
        zmq_poll(NULL, 0, REBIND_RETRY_MS);
    }
    cr_assert_eq(rc, 0, "rebind %s: %s", ep, zmq_strerror(zmq_errno()));
    cr_assert(t_wait_count(&app.ups, 2, T_WAIT_S), "no reconnect to the new REP");
    cr_assert_eq(send_str(1, "try"), 0, "the resend was refused");
    cr_assert_eq(zmq_recv(rep, buf, sizeof(buf), 0), 3);
    cr_assert_eq(zmq_send(rep, "answer", 6, 0), 6);
    expect_reply("answer", 1);
}

/* A libzmq REQ with REQ_CORRELATE asks our REP: the id travels in the envelope and comes
 * back on the reply, so the libzmq REQ accepts it. */
REQ_TEST(libzmq_correlating_req_to_our_rep)
{
    char ep[256];
    t_socket(MCQ_REP);
    app.echo = true;
    t_bind("tcp", ep, sizeof(ep));
    void *q = z_socket(ZMQ_REQ);
    int one = 1;
    cr_assert_eq(zmq_setsockopt(q, ZMQ_REQ_CORRELATE, &one, sizeof(one)), 0);
    cr_assert_eq(zmq_connect(q, ep), 0);
    for (unsigned i = 0; i < 3; i++) {
        z_send_strs(q, "ping", NULL);
        struct t_rx m;
        cr_assert(z_recv(q, &m), "round %u: no reply", i);
        cr_assert(m.n == 1 && rx_frame_is(&m, 0, "ping"));
        z_rx_clear(&m);
    }
    cr_assert_eq(app.echo_fail, 0);
}

/* Every shard asks through one REQ with CORRELATE and a single ROUTER peer: all requests
 * are out at once, and answered in reverse order each reply reaches the shard that asked. */
REQ_TEST(correlate_several_shards_one_peer)
{
    void *r;
    req_to_router(&r, 1, 0);
    char body[T_SHARDS][16];
    for (unsigned k = 0; k < T_SHARDS; k++) {
        cr_assert(t_wait_lb(k, 1));
        snprintf(body[k], sizeof(body[k]), "from-%u", k);
        cr_assert_eq(send_str(k, body[k]), 0);
    }
    struct t_rx m[T_SHARDS];
    bool seen[T_SHARDS] = {0};
    for (unsigned i = 0; i < T_SHARDS; i++) {
        cr_assert(z_recv(r, &m[i]), "only %u of %u requests reached the peer", i, T_SHARDS);
        cr_assert(m[i].n == 4 && m[i].len[1] == REQ_ID_LEN && m[i].len[2] == 0);
        unsigned k;
        int got = sscanf((char *)m[i].data[3], "from-%u", &k);
        cr_assert_eq(got, 1);
        cr_assert(k < T_SHARDS && !seen[k]);
        seen[k] = true;
    }
    for (unsigned i = T_SHARDS; i-- > 0;) {
        char reply[16];
        snprintf(reply, sizeof(reply), "to-%s", (char *)m[i].data[3] + strlen("from-"));
        z_reply(r, &m[i], reply);
    }
    for (unsigned i = 0; i < T_SHARDS; i++) {
        struct t_rx *in = t_recv(T_WAIT_S);
        cr_assert_not_null(in, "reply %u missing", i);
        unsigned k;
        int got = in->n == 1 ? sscanf((char *)in->data[0], "to-%u", &k) : 0;
        cr_assert_eq(got, 1);
        cr_assert_eq(in->shard, k, "the reply for shard %u reached shard %u", k, in->shard);
        t_free_rx(in);
    }
    for (unsigned i = 0; i < T_SHARDS; i++)
        z_rx_clear(&m[i]);
}
