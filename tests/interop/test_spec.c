/* Ports of libzmq's test_spec_* cases (zmtp.md §11) with libzmq as the peer: round-robin
 * out (PUSH, DEALER, REQ), fair-queue in (PULL, DEALER, ROUTER), envelopes (REQ, REP,
 * ROUTER, DEALER), ordering per peer, blocking on no peer, skipping full peers. Where
 * libzmq uses a settle sleep, these wait for on_peer_up; where it reads from a blocking
 * socket, these await a callback or zmq_poll with a deadline. */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>

#include "interop/interop_util.h"

#define SERVICES 5             /* peers in the round-robin / fair-queue cases (libzmq: 5) */
#define ORDER_MSGS 500         /* messages of the per-peer ordering cases */
#define FQ_MSGS_PER_PEER 20    /* messages per sender in the fair-queue cases */
#define SKIP_HWM 4             /* SNDHWM/RCVHWM in the skip-full-peer case */
#define SKIP_FRAME_BYTES 65536 /* fills kernel buffers quickly */
#define SKIP_FILL_MAX 2048     /* bound on sends before both peers are full */
#define SKIP_RCVBUF 65536      /* libzmq receivers' SO_RCVBUF, bytes */
#define QUIET_MS 100           /* "nothing more arrives" window, ms */
#define SPEC_TIMEOUT_S 60

static char case_name[160];

static enum transport transports[] = {TR_TCP, TR_IPC};

/* Runs the ParameterizedTest suite/name once per transport in transports[]. */
#define PER_TRANSPORT(suite, name)                                                                 \
    ParameterizedTestParameters(suite, name)                                                       \
    {                                                                                              \
        return cr_make_param_array(enum transport, transports,                                     \
                                   sizeof(transports) / sizeof(transports[0]));                    \
    }

struct env {
    void *ctx;
    struct mcq_runtime *rt;
};

static void env_start(struct env *e, const char *what, enum transport tr)
{
    snprintf(case_name, sizeof(case_name), "%s %s", what, tr_name(tr));
    cr_log_info("%s", case_name);
    e->ctx = zmq_ctx_new();
    e->rt = start_runtime(TEST_SHARDS);
}

static void env_stop(struct env *e)
{
    mcq_runtime_destroy(e->rt);
    zmq_ctx_term(e->ctx);
}

/* Creates n libzmq sockets of `type`, each connected to ep, into zs[0..n). */
static void zs_connect_n(struct env *e, void **zs, int n, int type, const char *ep)
{
    for (int i = 0; i < n; i++) {
        zs[i] = zs_new(e->ctx, type);
        zs_connect(zs[i], ep);
    }
}

/* Creates n of our sockets of `type` replying per `mode`, each connected to ep, into ms[0..n). */
static void ms_connect_n(struct env *e, struct msock **ms, int n, int type, enum reply_mode mode,
                         const char *ep)
{
    for (int i = 0; i < n; i++) {
        ms[i] = ms_new(e->rt, type, mode);
        ms_connect(ms[i], ep);
    }
}

/* Closes the libzmq sockets zs[0..n). */
static void zs_close_n(void **zs, int n)
{
    for (int i = 0; i < n; i++)
        zmq_close(zs[i]);
}

/* Index of the libzmq socket in zs[0..n) that has a message within the deadline, with the
 * message in *out; -1 if none. */
static int poll_any(void **zs, int n, struct tmsg **out)
{
    zmq_pollitem_t it[SERVICES * 2];
    cr_assert_leq(n, SERVICES * 2);
    for (int i = 0; i < n; i++)
        it[i] = (zmq_pollitem_t){.socket = zs[i], .events = ZMQ_POLLIN};
    if (zmq_poll(it, n, IO_TIMEOUT_MS) <= 0)
        return -1;
    for (int i = 0; i < n; i++) {
        if (it[i].revents & ZMQ_POLLIN) {
            *out = zs_recv(zs[i], 0);
            return *out ? i : -1;
        }
    }
    return -1;
}

/* --- REQ -------------------------------------------------------------------------------- */

PER_TRANSPORT(spec_req, round_robin_out)

/* Our REQ binds, SERVICES libzmq REPs connect; each cycle of SERVICES requests visits every
 * REP exactly once, and the second cycle in the same order as the first. */
ParameterizedTest(enum transport *tr, spec_req, round_robin_out, .timeout = SPEC_TIMEOUT_S)
{
    struct env e;
    env_start(&e, "spec_req round_robin_out mcq REQ", *tr);
    struct msock *req = ms_new(e.rt, MCQ_REQ, RM_NONE);
    char ep[TEST_ENDPOINT_MAX];
    ms_bind(req, *tr, ep, sizeof(ep));
    void *rep[SERVICES];
    zs_connect_n(&e, rep, SERVICES, ZMQ_REP, ep);
    cr_assert(ms_wait_settled(req, SERVICES), "%s: %u REPs up", case_name, atomic_load(&req->up));
    int order[2][SERVICES];
    struct tmsg *abc = tmsg_strs("ABC", NULL), *def = tmsg_strs("DEF", NULL);
    for (int cycle = 0; cycle < 2; cycle++) {
        bool hit[SERVICES] = {0};
        for (int k = 0; k < SERVICES; k++) {
            /* One shard: round-robin state is per shard (each shard's partition has its own
             * LB ring over all peers), so a cycle is a cycle of one shard's sends. */
            cr_assert_eq(ms_send(req, 0, abc), 0, "%s: send", case_name);
            struct tmsg *m = NULL;
            int i = poll_any(rep, SERVICES, &m);
            cr_assert_geq(i, 0, "%s: request %d reached no REP", case_name, k);
            cr_assert(m->n == 1 && tframe_is(m, 0, "ABC"), "%s: REP got a mangled request",
                      case_name);
            cr_assert(!hit[i], "%s: REP %d got two requests in one cycle", case_name, i);
            hit[i] = true;
            order[cycle][k] = i;
            tmsg_free(m);
            cr_assert_eq(zs_send(rep[i], def), 0);
            struct tmsg *r = inbox_pop(&req->in, IO_TIMEOUT_S);
            cr_assert(r && tmsg_eq(r, def), "%s: REQ did not get DEF", case_name);
            tmsg_free(r);
        }
    }
    for (int k = 0; k < SERVICES; k++)
        cr_assert_eq(order[0][k], order[1][k], "%s: cycle 2 visits REPs in another order",
                     case_name);
    tmsg_free(abc);
    tmsg_free(def);
    zs_close_n(rep, SERVICES);
    ms_close(req);
    env_stop(&e);
}

PER_TRANSPORT(spec_req, round_robin_out_reverse)

/* libzmq's REQ binds, SERVICES of our REP sockets connect: each gets exactly one request. */
ParameterizedTest(enum transport *tr, spec_req, round_robin_out_reverse, .timeout = SPEC_TIMEOUT_S)
{
    struct env e;
    env_start(&e, "spec_req round_robin_out zmq REQ -> mcq REPs", *tr);
    void *req = zs_new(e.ctx, ZMQ_REQ);
    void *mon = zs_monitor(e.ctx, req);
    char ep[TEST_ENDPOINT_MAX];
    zs_bind(req, *tr, ep, sizeof(ep));
    struct msock *rep[SERVICES];
    for (int i = 0; i < SERVICES; i++) {
        rep[i] = ms_new(e.rt, MCQ_REP, RM_FIXED);
        rep[i]->fixed = "DEF";
        ms_connect(rep[i], ep);
    }
    cr_assert(zs_wait_handshakes(mon, SERVICES), "%s: libzmq saw too few handshakes", case_name);
    struct tmsg *abc = tmsg_strs("ABC", NULL);
    for (int k = 0; k < SERVICES; k++) {
        cr_assert_eq(zs_send(req, abc), 0);
        struct tmsg *r = zs_recv(req, IO_TIMEOUT_MS);
        cr_assert(r && r->n == 1 && tframe_is(r, 0, "DEF"), "%s: reply %d", case_name, k);
        tmsg_free(r);
    }
    for (int i = 0; i < SERVICES; i++)
        cr_assert_eq(inbox_total(&rep[i]->in), 1, "%s: REP %d got %u requests", case_name, i,
                     inbox_total(&rep[i]->in));
    tmsg_free(abc);
    zmq_close(mon);
    zmq_close(req);
    for (int i = 0; i < SERVICES; i++)
        ms_close(rep[i]);
    env_stop(&e);
}

PER_TRANSPORT(spec_req, message_format)

/* A multipart request reaches a libzmq ROUTER as [id][empty][ABC][DEF]; the reply
 * [id][empty][GHI] reaches our REQ's user as GHI. Out-of-turn operations give -EFSM. */
ParameterizedTest(enum transport *tr, spec_req, message_format, .timeout = SPEC_TIMEOUT_S)
{
    struct env e;
    env_start(&e, "spec_req message_format", *tr);
    void *router = zs_new(e.ctx, ZMQ_ROUTER);
    char ep[TEST_ENDPOINT_MAX];
    zs_bind(router, *tr, ep, sizeof(ep));
    struct msock *req = ms_new(e.rt, MCQ_REQ, RM_NONE);
    ms_connect(req, ep);
    cr_assert(ms_wait_settled(req, 1));
    struct tmsg *m = tmsg_strs("ABC", "DEF", NULL);
    cr_assert_eq(ms_send(req, 1, m), 0);
    /* Alternation is per shard (each shard's REQ state is its own), so ask the same one. */
    cr_assert_eq(ms_send(req, 1, m), -EFSM, "%s: second request before the reply", case_name);
    struct tmsg *got = zs_recv(router, IO_TIMEOUT_MS);
    char b[256];
    cr_assert(got && got->n == 4 && got->f[0].len > 0 && tframe_is(got, 1, "") &&
                  tframe_is(got, 2, "ABC") && tframe_is(got, 3, "DEF"),
              "%s: ROUTER saw %s", case_name, tmsg_str(got, b, sizeof(b)));
    struct tmsg *reply = tmsg_new();
    tmsg_add(reply, got->f[0].data, got->f[0].len);
    tmsg_addstr(reply, "");
    tmsg_addstr(reply, "GHI");
    cr_assert_eq(zs_send(router, reply), 0);
    struct tmsg *r = inbox_pop(&req->in, IO_TIMEOUT_S);
    cr_assert(r && r->n == 1 && tframe_is(r, 0, "GHI"), "%s: REQ user got %s", case_name,
              tmsg_str(r, b, sizeof(b)));
    cr_assert_eq(ms_send(req, 1, m), 0, "%s: next request after the reply", case_name);
    struct tmsg *again = zs_recv(router, IO_TIMEOUT_MS);
    cr_assert_not_null(again, "%s: the second request never reached the ROUTER", case_name);
    tmsg_free(again);
    tmsg_free(r);
    tmsg_free(reply);
    tmsg_free(got);
    tmsg_free(m);
    zmq_close(router);
    ms_close(req);
    env_stop(&e);
}

/* libzmq's test_block_on_send_no_peers for every type that must not drop: -EAGAIN, also
 * when the socket connects to an endpoint nobody listens on. */
Test(spec, block_on_send_no_peers, .timeout = SPEC_TIMEOUT_S)
{
    struct env e;
    env_start(&e, "spec block_on_send_no_peers", TR_TCP);
    static const int types[] = {MCQ_REQ, MCQ_DEALER, MCQ_PUSH, MCQ_PAIR};
    struct tmsg *m = tmsg_strs("ABC", NULL);
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        struct msock *s = ms_new(e.rt, types[i], RM_NONE);
        for (unsigned sh = 0; sh < TEST_SHARDS; sh++)
            cr_assert_eq(ms_send(s, sh, m), -EAGAIN, "%s: unconnected %s from shard %u", case_name,
                         type_name(types[i]), sh);
        ms_connect(s, "tcp://127.0.0.1:1"); /* nothing listens on port 1 */
        cr_assert_eq(ms_send(s, 0, m), -EAGAIN, "%s: %s connecting to nobody", case_name,
                     type_name(types[i]));
        ms_close(s);
    }
    tmsg_free(m);
    env_stop(&e);
}

#define LISTEN_ROUTERS 3

PER_TRANSPORT(spec_req, only_listens_to_current_peer)

/* Our REQ (routing id "A") binds; 3 libzmq ROUTERs connect. After each request, the ROUTERs
 * asked before send "WRONG" to A, then the one that got it sends "GOOD": only GOOD arrives.
 * (A late WRONG from a ROUTER asked later could not be told from its answer without
 * libzmq's REQ_CORRELATE, in libzmq as here.) Finally all answer with nothing asked. */
ParameterizedTest(enum transport *tr, spec_req, only_listens_to_current_peer,
                  .timeout = SPEC_TIMEOUT_S)
{
    struct env e;
    env_start(&e, "spec_req only_listens_to_current_peer", *tr);
    struct msock *req = ms_new(e.rt, MCQ_REQ, RM_NONE);
    ms_setopt_str(req, MCQ_ROUTING_ID, "A");
    char ep[TEST_ENDPOINT_MAX];
    ms_bind(req, *tr, ep, sizeof(ep));
    void *rt[LISTEN_ROUTERS];
    for (int i = 0; i < LISTEN_ROUTERS; i++) {
        rt[i] = zs_new(e.ctx, ZMQ_ROUTER);
        zs_setopt_int(rt[i], ZMQ_ROUTER_MANDATORY, 1);
        zs_connect(rt[i], ep);
    }
    cr_assert(ms_wait_settled(req, LISTEN_ROUTERS));
    struct tmsg *wrong = tmsg_strs("A", "", "WRONG", NULL);
    struct tmsg *good = tmsg_strs("A", "", "GOOD", NULL);
    bool asked[LISTEN_ROUTERS] = {false};
    for (int k = 0; k < LISTEN_ROUTERS; k++) {
        struct tmsg *rq = tmsg_strs("ABC", NULL);
        cr_assert_eq(ms_send(req, 0, rq), 0);
        struct tmsg *m = NULL;
        int hit = poll_any(rt, LISTEN_ROUTERS, &m);
        cr_assert_geq(hit, 0, "%s: request %d reached no ROUTER", case_name, k);
        cr_assert(m->n == 3 && tframe_is(m, 0, "A") && tframe_is(m, 1, "") &&
                      tframe_is(m, 2, "ABC"),
                  "%s: ROUTER did not see [A][][ABC]", case_name);
        cr_assert(!asked[hit], "%s: ROUTER %d asked twice in one cycle", case_name, hit);
        for (int i = 0; i < LISTEN_ROUTERS; i++)
            if (asked[i])
                cr_assert_eq(zs_router_send_when_routable(rt[i], wrong), 0);
        cr_assert_eq(zs_router_send_when_routable(rt[hit], good), 0);
        struct tmsg *r = inbox_pop(&req->in, IO_TIMEOUT_S);
        char b[256];
        cr_assert(r && r->n == 1 && tframe_is(r, 0, "GOOD"), "%s: REQ delivered %s", case_name,
                  tmsg_str(r, b, sizeof(b)));
        tmsg_free(r);
        tmsg_free(m);
        tmsg_free(rq);
        asked[hit] = true;
    }
    for (int i = 0; i < LISTEN_ROUTERS; i++)
        cr_assert_eq(zs_router_send_when_routable(rt[i], wrong), 0);
    cr_assert_null(inbox_pop(&req->in, QUIET_MS / 1000.0),
                   "%s: a reply from a non-current peer was delivered", case_name);
    tmsg_free(wrong);
    tmsg_free(good);
    zs_close_n(rt, LISTEN_ROUTERS);
    ms_close(req);
    env_stop(&e);
}

/* --- REP -------------------------------------------------------------------------------- */

PER_TRANSPORT(spec_rep, fair_queue_in)

/* Our REP binds, SERVICES libzmq REQs all send at once: every REQ gets its own reply
 * (two rounds). A reply with no request pending is -EFSM. */
ParameterizedTest(enum transport *tr, spec_rep, fair_queue_in, .timeout = SPEC_TIMEOUT_S)
{
    struct env e;
    env_start(&e, "spec_rep fair_queue_in", *tr);
    struct msock *rep = ms_new(e.rt, MCQ_REP, RM_ECHO);
    char ep[TEST_ENDPOINT_MAX];
    ms_bind(rep, *tr, ep, sizeof(ep));
    struct tmsg *lone = tmsg_strs("unasked", NULL);
    cr_assert_eq(ms_send(rep, 0, lone), -EFSM, "%s: REP send without a request", case_name);
    tmsg_free(lone);
    void *req[SERVICES];
    zs_connect_n(&e, req, SERVICES, ZMQ_REQ, ep);
    cr_assert(ms_wait_settled(rep, SERVICES));
    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < SERVICES; i++) {
            char body[32];
            snprintf(body, sizeof(body), "from %d.%d", i, round);
            struct tmsg *m = tmsg_strs(body, NULL);
            cr_assert_eq(zs_send(req[i], m), 0);
            tmsg_free(m);
        }
        for (int i = 0; i < SERVICES; i++) {
            char body[32];
            snprintf(body, sizeof(body), "from %d.%d", i, round);
            struct tmsg *r = zs_recv(req[i], IO_TIMEOUT_MS);
            cr_assert(r && r->n == 1 && tframe_is(r, 0, body), "%s: REQ %d got no/wrong reply",
                      case_name, i);
            tmsg_free(r);
        }
    }
    cr_assert_eq(inbox_total(&rep->in), 2 * SERVICES);
    cr_assert_eq(atomic_load(&rep->echo_failures), 0, "%s: REP reply failed: %d", case_name,
                 atomic_load(&rep->last_echo_err));
    zs_close_n(req, SERVICES);
    ms_close(rep);
    env_stop(&e);
}

PER_TRANSPORT(spec_rep, envelope)

/* libzmq DEALER -> our REP: [][A] and [X][Y][][A] show A to the user and come back with
 * the same envelope; a request with no delimiter is dropped and the next one works.
 * Our DEALER -> libzmq REP: our frames go out and come back untouched. */
ParameterizedTest(enum transport *tr, spec_rep, envelope, .timeout = SPEC_TIMEOUT_S)
{
    struct env e;
    env_start(&e, "spec_rep envelope", *tr);
    struct msock *rep = ms_new(e.rt, MCQ_REP, RM_ECHO);
    char ep[TEST_ENDPOINT_MAX];
    ms_bind(rep, *tr, ep, sizeof(ep));
    void *dealer = zs_new(e.ctx, ZMQ_DEALER);
    zs_connect(dealer, ep);
    cr_assert(ms_wait_settled(rep, 1));
    char b[256];

    struct tmsg *reqs[] = {tmsg_strs("", "A", NULL), tmsg_strs("X", "Y", "", "A", NULL)};
    for (int i = 0; i < 2; i++) {
        cr_assert_eq(zs_send(dealer, reqs[i]), 0);
        struct tmsg *seen = inbox_pop(&rep->in, IO_TIMEOUT_S);
        cr_assert(seen && seen->n == 1 && tframe_is(seen, 0, "A"), "%s: REP user saw %s", case_name,
                  tmsg_str(seen, b, sizeof(b)));
        struct tmsg *r = zs_recv(dealer, IO_TIMEOUT_MS);
        cr_assert(r && tmsg_eq(r, reqs[i]), "%s: reply %s", case_name, tmsg_str(r, b, sizeof(b)));
        tmsg_free(seen);
        tmsg_free(r);
        tmsg_free(reqs[i]);
    }
    struct tmsg *bad = tmsg_strs("X", "A", NULL); /* no empty delimiter */
    struct tmsg *next = tmsg_strs("", "after", NULL);
    cr_assert_eq(zs_send(dealer, bad), 0);
    cr_assert_eq(zs_send(dealer, next), 0);
    struct tmsg *seen = inbox_pop(&rep->in, IO_TIMEOUT_S);
    cr_assert(seen && seen->n == 1 && tframe_is(seen, 0, "after"),
              "%s: after an envelope without delimiter the REP user saw %s", case_name,
              tmsg_str(seen, b, sizeof(b)));
    struct tmsg *r = zs_recv(dealer, IO_TIMEOUT_MS);
    cr_assert(r && tmsg_eq(r, next), "%s: reply %s", case_name, tmsg_str(r, b, sizeof(b)));
    tmsg_free(r);
    tmsg_free(seen);
    tmsg_free(bad);
    tmsg_free(next);

    /* Our DEALER against libzmq's REP with a two-address envelope. */
    struct zserver *zrep = zserver_start(e.ctx, ZMQ_REP, true, *tr, NULL, true, NULL);
    struct msock *md = ms_new(e.rt, MCQ_DEALER, RM_NONE);
    ms_connect(md, zrep->ep);
    cr_assert(ms_wait_settled(md, 1));
    struct tmsg *env = tmsg_strs("X", "Y", "", "A", "B", NULL);
    cr_assert_eq(ms_send(md, 2, env), 0);
    struct tmsg *zseen = inbox_pop(&zrep->in, IO_TIMEOUT_S);
    cr_assert(zseen && zseen->n == 2 && tframe_is(zseen, 0, "A") && tframe_is(zseen, 1, "B"),
              "%s: libzmq REP saw %s", case_name, tmsg_str(zseen, b, sizeof(b)));
    r = inbox_pop(&md->in, IO_TIMEOUT_S);
    cr_assert(r && tmsg_eq(r, env), "%s: DEALER got back %s", case_name, tmsg_str(r, b, sizeof(b)));
    tmsg_free(r);
    tmsg_free(zseen);
    tmsg_free(env);
    zserver_stop(zrep);
    ms_close(md);
    zmq_close(dealer);
    ms_close(rep);
    env_stop(&e);
}

/* --- DEALER ------------------------------------------------------------------------------ */

PER_TRANSPORT(spec_dealer, round_robin_out)

/* Our DEALER binds, SERVICES libzmq REPs connect: SERVICES sends of [][ABC] give each REP
 * exactly one; and libzmq's DEALER bound, SERVICES of our REPs: each gets exactly one. */
ParameterizedTest(enum transport *tr, spec_dealer, round_robin_out, .timeout = SPEC_TIMEOUT_S)
{
    struct env e;
    env_start(&e, "spec_dealer round_robin_out", *tr);
    struct msock *d = ms_new(e.rt, MCQ_DEALER, RM_NONE);
    char ep[TEST_ENDPOINT_MAX];
    ms_bind(d, *tr, ep, sizeof(ep));
    struct zserver *rep[SERVICES];
    for (int i = 0; i < SERVICES; i++)
        rep[i] = zserver_start(e.ctx, ZMQ_REP, false, *tr, ep, true, NULL);
    cr_assert(ms_wait_settled(d, SERVICES));
    struct tmsg *m = tmsg_strs("", "ABC", NULL);
    for (int k = 0; k < SERVICES; k++) /* one shard: round-robin state is per shard */
        cr_assert_eq(ms_send(d, 0, m), 0);
    cr_assert(inbox_wait_total(&d->in, SERVICES, IO_TIMEOUT_S), "%s: %u replies", case_name,
              inbox_total(&d->in));
    for (int i = 0; i < SERVICES; i++) {
        cr_assert_eq(inbox_total(&rep[i]->in), 1, "%s: REP %d got %u", case_name, i,
                     inbox_total(&rep[i]->in));
        zserver_stop(rep[i]);
    }
    ms_close(d);

    void *zd = zs_new(e.ctx, ZMQ_DEALER);
    void *mon = zs_monitor(e.ctx, zd);
    zs_bind(zd, *tr, ep, sizeof(ep));
    struct msock *mrep[SERVICES];
    ms_connect_n(&e, mrep, SERVICES, MCQ_REP, RM_ECHO, ep);
    cr_assert(zs_wait_handshakes(mon, SERVICES));
    for (int k = 0; k < SERVICES; k++)
        cr_assert_eq(zs_send(zd, m), 0);
    for (int k = 0; k < SERVICES; k++) {
        struct tmsg *r = zs_recv(zd, IO_TIMEOUT_MS);
        cr_assert(r && tmsg_eq(r, m), "%s: reply %d to libzmq DEALER", case_name, k);
        tmsg_free(r);
    }
    for (int i = 0; i < SERVICES; i++) {
        cr_assert_eq(inbox_total(&mrep[i]->in), 1, "%s: our REP %d got %u", case_name, i,
                     inbox_total(&mrep[i]->in));
        ms_close(mrep[i]);
    }
    zmq_close(mon);
    zmq_close(zd);
    tmsg_free(m);
    env_stop(&e);
}

/* Per sender, messages arrive complete and in order; every sender is heard. (libzmq checks
 * one-per-sender interleaving on a blocking recv; with callbacks there is no backlog to
 * interleave, so the port checks what the callback user can rely on.) */
static void fair_queue_in(enum transport tr, int recv_type, int send_type)
{
    struct env e;
    char what[64];
    snprintf(what, sizeof(what), "fair_queue_in zmq %s -> mcq %s", type_name(send_type),
             type_name(recv_type));
    env_start(&e, what, tr);
    struct msock *r = ms_new(e.rt, recv_type, RM_NONE);
    char ep[TEST_ENDPOINT_MAX];
    ms_bind(r, tr, ep, sizeof(ep));
    void *s[SERVICES];
    for (int i = 0; i < SERVICES; i++) {
        s[i] = zs_new(e.ctx, send_type);
        if (recv_type == MCQ_ROUTER) {
            char id[2] = {(char)('A' + i), 0};
            zs_setopt_str(s[i], ZMQ_ROUTING_ID, id);
        }
        zs_connect(s[i], ep);
    }
    cr_assert(ms_wait_settled(r, SERVICES));
    for (int k = 0; k < FQ_MSGS_PER_PEER; k++)
        for (int i = 0; i < SERVICES; i++) {
            char body[32];
            snprintf(body, sizeof(body), "%d %d", i, k);
            struct tmsg *m = tmsg_strs(body, NULL);
            cr_assert_eq(zs_send(s[i], m), 0);
            tmsg_free(m);
        }
    cr_assert(inbox_wait_total(&r->in, SERVICES * FQ_MSGS_PER_PEER, IO_TIMEOUT_S), "%s: %u of %d",
              case_name, inbox_total(&r->in), SERVICES * FQ_MSGS_PER_PEER);
    int next[SERVICES] = {0};
    struct tmsg *m;
    while ((m = inbox_pop(&r->in, 0))) {
        int i = -1, k = -1;
        char body[32] = {0};
        memcpy(body, m->f[m->n - 1].data, m->f[m->n - 1].len < 31 ? m->f[m->n - 1].len : 31);
        sscanf(body, "%d %d", &i, &k);
        cr_assert(i >= 0 && i < SERVICES, "%s: bad body", case_name);
        cr_assert_eq(k, next[i], "%s: sender %d: got %d, expected %d", case_name, i, k, next[i]);
        next[i]++;
        if (recv_type == MCQ_ROUTER) {
            char id = (char)('A' + i);
            cr_assert(m->n == 2 && m->f[0].len == 1 && m->f[0].data[0] == (uint8_t)id,
                      "%s: message of sender %d does not carry id %c", case_name, i, id);
        }
        tmsg_free(m);
    }
    zs_close_n(s, SERVICES);
    ms_close(r);
    env_stop(&e);
}

PER_TRANSPORT(spec_dealer, fair_queue_in)

ParameterizedTest(enum transport *tr, spec_dealer, fair_queue_in, .timeout = SPEC_TIMEOUT_S)
{
    fair_queue_in(*tr, MCQ_DEALER, ZMQ_DEALER);
}

PER_TRANSPORT(spec_router, fair_queue_in)

/* Also libzmq's first step: the first "M" from "A" arrives as [A][M]. */
ParameterizedTest(enum transport *tr, spec_router, fair_queue_in, .timeout = SPEC_TIMEOUT_S)
{
    fair_queue_in(*tr, MCQ_ROUTER, ZMQ_DEALER);
}

PER_TRANSPORT(spec_pushpull, pull_fair_queue_in)

ParameterizedTest(enum transport *tr, spec_pushpull, pull_fair_queue_in, .timeout = SPEC_TIMEOUT_S)
{
    fair_queue_in(*tr, MCQ_PULL, ZMQ_PUSH);
}

PER_TRANSPORT(spec_router, ids_of_our_dealers)

/* The reverse of fair_queue_in: libzmq's ROUTER sees our DEALERs' chosen ids. */
ParameterizedTest(enum transport *tr, spec_router, ids_of_our_dealers, .timeout = SPEC_TIMEOUT_S)
{
    struct env e;
    env_start(&e, "spec_router ids of mcq DEALERs", *tr);
    void *router = zs_new(e.ctx, ZMQ_ROUTER);
    char ep[TEST_ENDPOINT_MAX];
    zs_bind(router, *tr, ep, sizeof(ep));
    struct msock *d[SERVICES];
    bool seen[SERVICES] = {0};
    for (int i = 0; i < SERVICES; i++) {
        d[i] = ms_new(e.rt, MCQ_DEALER, RM_NONE);
        char id[2] = {(char)('A' + i), 0};
        ms_setopt_str(d[i], MCQ_ROUTING_ID, id);
        ms_connect(d[i], ep);
    }
    struct tmsg *m = tmsg_strs("M", NULL);
    for (int i = 0; i < SERVICES; i++) {
        cr_assert(ms_wait_settled(d[i], 1));
        cr_assert_eq(ms_send(d[i], (unsigned)i % TEST_SHARDS, m), 0);
    }
    for (int i = 0; i < SERVICES; i++) {
        struct tmsg *r = zs_recv(router, IO_TIMEOUT_MS);
        cr_assert(r && r->n == 2 && r->f[0].len == 1 && tframe_is(r, 1, "M"),
                  "%s: ROUTER message %d malformed", case_name, i);
        int k = r->f[0].data[0] - 'A';
        cr_assert(k >= 0 && k < SERVICES && !seen[k], "%s: unexpected id 0x%02x", case_name,
                  r->f[0].data[0]);
        seen[k] = true;
        tmsg_free(r);
    }
    tmsg_free(m);
    zmq_close(router);
    for (int i = 0; i < SERVICES; i++)
        ms_close(d[i]);
    env_stop(&e);
}

/* --- PUSH/PULL --------------------------------------------------------------------------- */

PER_TRANSPORT(spec_pushpull, push_round_robin_out)

/* Our PUSH binds, SERVICES libzmq PULLs: SERVICES x ABC then SERVICES x DEF; each PULL gets
 * ABC then DEF. Then libzmq's PUSH binds and SERVICES of our PULLs get the same. */
ParameterizedTest(enum transport *tr, spec_pushpull, push_round_robin_out,
                  .timeout = SPEC_TIMEOUT_S)
{
    struct env e;
    env_start(&e, "spec_pushpull push_round_robin_out", *tr);
    struct msock *push = ms_new(e.rt, MCQ_PUSH, RM_NONE);
    char ep[TEST_ENDPOINT_MAX];
    ms_bind(push, *tr, ep, sizeof(ep));
    void *pull[SERVICES];
    zs_connect_n(&e, pull, SERVICES, ZMQ_PULL, ep);
    cr_assert(ms_wait_settled(push, SERVICES));
    struct tmsg *abc = tmsg_strs("ABC", NULL), *def = tmsg_strs("DEF", NULL);
    for (int k = 0; k < SERVICES; k++)
        cr_assert_eq(ms_send(push, 0, abc), 0);
    for (int k = 0; k < SERVICES; k++)
        cr_assert_eq(ms_send(push, 0, def), 0);
    for (int i = 0; i < SERVICES; i++) {
        struct tmsg *a = zs_recv(pull[i], IO_TIMEOUT_MS);
        struct tmsg *b = zs_recv(pull[i], IO_TIMEOUT_MS);
        cr_assert(a && tmsg_eq(a, abc) && b && tmsg_eq(b, def),
                  "%s: libzmq PULL %d did not get ABC then DEF", case_name, i);
        tmsg_free(a);
        tmsg_free(b);
        zmq_close(pull[i]);
    }
    ms_close(push);

    void *zpush = zs_new(e.ctx, ZMQ_PUSH);
    void *mon = zs_monitor(e.ctx, zpush);
    zs_bind(zpush, *tr, ep, sizeof(ep));
    struct msock *mpull[SERVICES];
    ms_connect_n(&e, mpull, SERVICES, MCQ_PULL, RM_NONE, ep);
    cr_assert(zs_wait_handshakes(mon, SERVICES));
    for (int k = 0; k < SERVICES; k++)
        cr_assert_eq(zs_send(zpush, abc), 0);
    for (int k = 0; k < SERVICES; k++)
        cr_assert_eq(zs_send(zpush, def), 0);
    for (int i = 0; i < SERVICES; i++) {
        struct tmsg *a = inbox_pop(&mpull[i]->in, IO_TIMEOUT_S);
        struct tmsg *b = inbox_pop(&mpull[i]->in, IO_TIMEOUT_S);
        cr_assert(a && tmsg_eq(a, abc) && b && tmsg_eq(b, def),
                  "%s: our PULL %d did not get ABC then DEF", case_name, i);
        tmsg_free(a);
        tmsg_free(b);
        ms_close(mpull[i]);
    }
    zmq_close(mon);
    zmq_close(zpush);
    tmsg_free(abc);
    tmsg_free(def);
    env_stop(&e);
}

/* --- ordering per peer ------------------------------------------------------------------- */

struct order_case {
    int ours, theirs; /* our sender type -> libzmq receiver type, and back */
    enum transport tr;
};

static struct order_case order_cases[] = {
    {MCQ_PUSH, ZMQ_PULL, TR_TCP},     {MCQ_PUSH, ZMQ_PULL, TR_IPC},
    {MCQ_DEALER, ZMQ_DEALER, TR_TCP}, {MCQ_DEALER, ZMQ_DEALER, TR_IPC},
    {MCQ_PAIR, ZMQ_PAIR, TR_TCP},     {MCQ_PAIR, ZMQ_PAIR, TR_IPC},
};

ParameterizedTestParameters(spec, ordering_per_peer)
{
    return cr_make_param_array(struct order_case, order_cases,
                               sizeof(order_cases) / sizeof(order_cases[0]));
}

/* Message i of an ordering run, [head][i in decimal]; the caller owns it. */
static struct tmsg *numbered_msg(uint32_t i)
{
    char body[32];
    snprintf(body, sizeof(body), "%u", i);
    return tmsg_strs("head", body, NULL);
}

/* Whether r is message i of an ordering run (false for NULL). */
static bool is_numbered_msg(const struct tmsg *r, uint32_t i)
{
    struct tmsg *want = numbered_msg(i);
    bool eq = r && tmsg_eq(r, want);
    tmsg_free(want);
    return eq;
}

/* ORDER_MSGS multipart messages each way between one of our sockets and one libzmq
 * socket arrive whole, once, in send order. */
ParameterizedTest(struct order_case *oc, spec, ordering_per_peer, .timeout = SPEC_TIMEOUT_S)
{
    struct env e;
    char what[64];
    snprintf(what, sizeof(what), "ordering mcq %s <-> zmq %s", type_name(oc->ours),
             type_name(oc->theirs));
    env_start(&e, what, oc->tr);
    struct msock *ms = ms_new(e.rt, oc->ours, RM_NONE);
    char ep[TEST_ENDPOINT_MAX];
    ms_bind(ms, oc->tr, ep, sizeof(ep));
    void *zs = zs_new(e.ctx, oc->theirs);
    zs_connect(zs, ep);
    cr_assert(ms_wait_settled(ms, 1));
    for (uint32_t i = 0; i < ORDER_MSGS; i++) {
        struct tmsg *m = numbered_msg(i);
        cr_assert_eq(ms_send_retry(ms, 1, m), 0, "%s: send %u", case_name, i);
        tmsg_free(m);
    }
    for (uint32_t i = 0; i < ORDER_MSGS; i++) {
        struct tmsg *r = zs_recv(zs, IO_TIMEOUT_MS);
        cr_assert(is_numbered_msg(r, i), "%s: libzmq message %u missing or out of order", case_name,
                  i);
        tmsg_free(r);
    }
    if (oc->ours != MCQ_PUSH) {
        for (uint32_t i = 0; i < ORDER_MSGS; i++) {
            struct tmsg *m = numbered_msg(i);
            cr_assert_eq(zs_send(zs, m), 0);
            tmsg_free(m);
        }
        for (uint32_t i = 0; i < ORDER_MSGS; i++) {
            struct tmsg *r = inbox_pop(&ms->in, IO_TIMEOUT_S);
            cr_assert(is_numbered_msg(r, i), "%s: our message %u missing or out of order",
                      case_name, i);
            tmsg_free(r);
        }
    }
    zmq_close(zs);
    ms_close(ms);
    env_stop(&e);
}

/* --- blocking: round-robin skips a full peer ---------------------------------------------- */

struct skip_case {
    int ours, theirs;
    enum transport tr;
};

static struct skip_case skip_cases[] = {
    {MCQ_PUSH, ZMQ_PULL, TR_TCP},
    {MCQ_PUSH, ZMQ_PULL, TR_IPC},
    {MCQ_DEALER, ZMQ_DEALER, TR_TCP},
    {MCQ_DEALER, ZMQ_DEALER, TR_IPC},
};

ParameterizedTestParameters(spec, round_robin_skips_full_peer)
{
    return cr_make_param_array(struct skip_case, skip_cases,
                               sizeof(skip_cases) / sizeof(skip_cases[0]));
}

static uint32_t seq_of(const struct tmsg *m)
{
    uint32_t s = UINT32_MAX;
    cr_assert(m && m->n == 1 && m->f[0].len == SKIP_FRAME_BYTES, "%s: bad frame", case_name);
    memcpy(&s, m->f[0].data, sizeof(s));
    return s;
}

/* Two libzmq receivers, neither reading, until our sender reports -EAGAIN; both must have
 * taken some (round-robin). Then only the second one drains: on_writable fires and the next
 * SKIP_HWM sends are taken (no -EAGAIN while one peer has room) and reach it. Nothing is
 * lost or duplicated. */
ParameterizedTest(struct skip_case *sc, spec, round_robin_skips_full_peer,
                  .timeout = SPEC_TIMEOUT_S)
{
    struct env e;
    char what[64];
    snprintf(what, sizeof(what), "skip full peer mcq %s", type_name(sc->ours));
    env_start(&e, what, sc->tr);
    struct msock *ms = ms_new(e.rt, sc->ours, RM_NONE);
    ms_setopt_int(ms, MCQ_SNDHWM, SKIP_HWM);
    char ep[TEST_ENDPOINT_MAX];
    ms_bind(ms, sc->tr, ep, sizeof(ep));
    void *z[2];
    for (int i = 0; i < 2; i++) {
        z[i] = zs_new(e.ctx, sc->theirs);
        zs_setopt_int(z[i], ZMQ_RCVHWM, SKIP_HWM);
        zs_setopt_int(z[i], ZMQ_RCVBUF, SKIP_RCVBUF);
        zs_connect(z[i], ep);
    }
    cr_assert(ms_wait_settled(ms, 2));
    int rc;
    unsigned n1 = ms_fill(ms, 0, NULL, SKIP_FRAME_BYTES, 0, SKIP_FILL_MAX, &rc);
    cr_assert_eq(rc, -EAGAIN, "%s: %u sends without -EAGAIN (rc %d)", case_name, n1, rc);
    bool seen[SKIP_FILL_MAX + SKIP_HWM] = {0};
    unsigned got1 = 0;
    struct tmsg *m;
    while ((m = zs_recv(z[1], QUIET_MS))) {
        uint32_t s = seq_of(m);
        cr_assert(s < n1 && !seen[s], "%s: sequence %u twice or unknown", case_name, s);
        seen[s] = true;
        got1++;
        tmsg_free(m);
    }
    cr_assert_gt(got1, 0, "%s: the second receiver got none of %u (round-robin skipped it)",
                 case_name, n1);
    cr_assert(test_event_wait(&ms->writable_ev, 1, IO_TIMEOUT_S), "%s: no on_writable", case_name);
    unsigned n2 = ms_fill(ms, 0, NULL, SKIP_FRAME_BYTES, n1, SKIP_HWM, &rc);
    cr_assert_eq(rc, 0, "%s: -EAGAIN while one peer had room (after %u)", case_name, n2);
    /* Where did the new ones go? Drain the draining peer first, then the full one. */
    unsigned new1 = 0, new0 = 0, got0 = 0;
    while (new1 < n2 && (m = zs_recv(z[1], IO_TIMEOUT_MS / 5))) {
        uint32_t s = seq_of(m);
        cr_assert(s >= n1 && s < n1 + n2 && !seen[s], "%s: draining peer got %u", case_name, s);
        seen[s] = true;
        new1++;
        tmsg_free(m);
    }
    while ((m = zs_recv(z[0], QUIET_MS))) {
        uint32_t s = seq_of(m);
        cr_assert(s < n1 + n2 && !seen[s], "%s: full peer got %u twice or unknown", case_name, s);
        seen[s] = true;
        if (s >= n1)
            new0++;
        else
            got0++;
        tmsg_free(m);
    }
    /* The full peer's own buffers may still have drained a little after the -EAGAIN (as
     * with libzmq's I/O thread), so it may legitimately take some of the new ones; what
     * must hold is that the peer with room takes them and nothing is lost. */
    cr_assert_gt(new1, 0, "%s: none of %u sends after on_writable went to the peer with room",
                 case_name, n2);
    cr_assert_eq(new1 + new0, n2, "%s: %u + %u of %u new messages arrived", case_name, new1, new0,
                 n2);
    cr_assert_eq(got0 + got1, n1, "%s: %u + %u received of %u accepted", case_name, got0, got1, n1);
    zs_close_n(z, 2);
    ms_close(ms);
    env_stop(&e);
}

/* --- multipart atomicity across a lost connection ---------------------------------------- */

#define ATOMIC_BODY_BYTES (1u << 20) /* middle frame: big enough to be cut by a close */
#define ATOMIC_BURST 8               /* messages offered per burst */
#define ATOMIC_HWM 1                 /* libzmq's push_multipart_atomic_drop uses HWM 1 */

struct burst_job {
    struct msock *ms;
    uint32_t seq0;
    unsigned count, sent;
    int rc;
    struct test_event done;
};

/* Sends [H seq][body of seq's low byte][T seq] until -EAGAIN or count. */
static void burst_task(struct mcq_shard *sh, void *arg)
{
    struct burst_job *j = arg;
    uint8_t *body = malloc(ATOMIC_BODY_BYTES);
    j->rc = body ? 0 : -ENOMEM;
    for (j->sent = 0; j->rc == 0 && j->sent < j->count;) {
        uint32_t seq = j->seq0 + j->sent;
        char head[16], tail[16];
        snprintf(head, sizeof(head), "H%u", seq);
        snprintf(tail, sizeof(tail), "T%u", seq);
        memset(body, (int)(seq & 0xff), ATOMIC_BODY_BYTES);
        struct mcq_msg *m = mcq_msg_new(sh);
        j->rc = m ? mcq_msg_append(m, head, strlen(head)) : -ENOMEM;
        if (j->rc == 0)
            j->rc = mcq_msg_append(m, body, ATOMIC_BODY_BYTES);
        if (j->rc == 0)
            j->rc = mcq_msg_append(m, tail, strlen(tail));
        if (j->rc == 0)
            j->rc = mcq_send(sh, j->ms->s, m);
        if (j->rc < 0)
            mcq_msg_free(m);
        else
            j->sent++;
    }
    free(body);
    test_event_signal(&j->done);
}

static unsigned burst(struct msock *ms, uint32_t seq0, unsigned count)
{
    struct burst_job j = {.ms = ms, .seq0 = seq0, .count = count};
    test_event_init(&j.done);
    cr_assert_eq(mcq_runtime_post(ms->rt, 0, burst_task, &j), 0);
    cr_assert(test_event_wait(&j.done, 1, IO_TIMEOUT_S), "burst never finished");
    cr_assert(j.rc == 0 || j.rc == -EAGAIN, "%s: burst send: %d", case_name, j.rc);
    return j.sent;
}

/* A whole message: [H n][ATOMIC_BODY_BYTES of n's low byte][T n]; returns n. */
static uint32_t check_whole(const struct tmsg *m)
{
    char b[256];
    cr_assert(m->n == 3, "%s: a message of %u frames arrived: %s", case_name, m->n,
              tmsg_str(m, b, sizeof(b)));
    unsigned h = UINT32_MAX, t = UINT32_MAX - 1;
    char head[16] = {0}, tail[16] = {0};
    memcpy(head, m->f[0].data, m->f[0].len < 15 ? m->f[0].len : 15);
    memcpy(tail, m->f[2].data, m->f[2].len < 15 ? m->f[2].len : 15);
    cr_assert(sscanf(head, "H%u", &h) == 1 && sscanf(tail, "T%u", &t) == 1 && h == t,
              "%s: head/tail of different messages: %s", case_name, tmsg_str(m, b, sizeof(b)));
    cr_assert_eq(m->f[1].len, ATOMIC_BODY_BYTES, "%s: body of %zu bytes", case_name, m->f[1].len);
    for (size_t i = 0; i < ATOMIC_BODY_BYTES; i += 4096)
        cr_assert_eq(m->f[1].data[i], (uint8_t)(h & 0xff), "%s: body of message %u is another's",
                     case_name, h);
    return h;
}

struct order_state {
    uint32_t after, last;
    bool any;
    unsigned seen_after;
};

/* Receives one message: whole, after the previous one; counts post-reconnect ones. */
static void consume_whole(void *pull, struct order_state *st)
{
    struct tmsg *r = zs_recv(pull, IO_TIMEOUT_MS);
    cr_assert_not_null(r, "%s: %u of %d post-reconnect messages arrived", case_name, st->seen_after,
                       ATOMIC_BURST);
    uint32_t n = check_whole(r);
    cr_assert(!st->any || n > st->last, "%s: %u after %u (out of order)", case_name, n, st->last);
    st->any = true;
    st->last = n;
    st->seen_after += n >= st->after;
    tmsg_free(r);
}

PER_TRANSPORT(spec_pushpull, multipart_atomic_across_reconnect)

/* libzmq's push_multipart_atomic_drop, our PUSH against libzmq PULLs: the PULL goes away
 * while 1 MiB multipart messages are in flight and a new one binds the endpoint. Every
 * message the new PULL gets is whole (never the tail of a half-sent one), in order, and
 * the ones sent after the reconnect all arrive. */
ParameterizedTest(enum transport *tr, spec_pushpull, multipart_atomic_across_reconnect,
                  .timeout = SPEC_TIMEOUT_S)
{
    struct env e;
    env_start(&e, "spec_pushpull multipart atomic across reconnect", *tr);
    void *pull = zs_new(e.ctx, ZMQ_PULL);
    zs_setopt_int(pull, ZMQ_RCVHWM, ATOMIC_HWM);
    char ep[TEST_ENDPOINT_MAX];
    zs_bind(pull, *tr, ep, sizeof(ep));
    struct msock *push = ms_new(e.rt, MCQ_PUSH, RM_NONE);
    ms_setopt_int(push, MCQ_SNDHWM, ATOMIC_HWM);
    ms_connect(push, ep);
    cr_assert(ms_wait_settled(push, 1));

    unsigned sent = burst(push, 0, ATOMIC_BURST);
    cr_assert_gt(sent, 0, "%s: nothing could be sent", case_name);
    struct tmsg *m = zs_recv(pull, IO_TIMEOUT_MS);
    cr_assert_not_null(m, "%s: first message never arrived", case_name);
    cr_assert_eq(check_whole(m), 0);
    tmsg_free(m);
    zmq_close(pull); /* mid-stream: the rest is queued or half written */
    cr_assert(ms_wait_down(push, 1), "%s: no on_peer_down", case_name);

    pull = zs_new(e.ctx, ZMQ_PULL);
    zs_setopt_int(pull, ZMQ_RCVHWM, ATOMIC_HWM);
    cr_assert_eq(zmq_bind(pull, ep), 0, "%s: rebind %s", case_name, ep);
    cr_assert(ms_wait_up(push, 2), "%s: PUSH did not reconnect", case_name);
    uint32_t after = sent;
    struct order_state st = {.after = after};
    unsigned want = 0;
    while (want < ATOMIC_BURST) {
        unsigned n = burst(push, after + want, ATOMIC_BURST - want);
        want += n;
        if (n == 0) /* at HWM: read one to make room */
            consume_whole(pull, &st);
    }
    /* Read until every post-reconnect message was seen, all whole and in order. */
    while (st.seen_after < ATOMIC_BURST)
        consume_whole(pull, &st);
    zmq_close(pull);
    ms_close(push);
    env_stop(&e);
}
