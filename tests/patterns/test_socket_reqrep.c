/* REQ and REP against libzmq, both directions, TCP and IPC: envelopes (REQ -> ROUTER,
 * DEALER -> REP, DEALER -> our REP with a multi-frame envelope), round robin over five REPs,
 * strict alternation (-EFSM). */
#include "socket_util.h"

TestSuite(socket_reqrep, .init = t_setup, .fini = t_teardown, .timeout = 60);

/* libzmq REQ -> our REP, which echoes from the shard the request arrived on. */
static void rep_serves(const char *transport)
{
    char ep[256];
    t_socket(MCQ_REP);
    app.echo = true;
    t_bind(transport, ep, sizeof(ep));
    void *q = z_socket(ZMQ_REQ);
    cr_assert_eq(zmq_connect(q, ep), 0);
    for (int i = 0; i < 3; i++) {
        char body[16];
        snprintf(body, sizeof(body), "req%d", i);
        z_send_strs(q, body, "more", NULL);
        struct t_rx r;
        cr_assert(z_recv(q, &r), "no reply %d", i);
        cr_assert_eq(r.n, 2);
        cr_assert(rx_frame_is(&r, 0, body) && rx_frame_is(&r, 1, "more"));
        z_rx_clear(&r);
        struct t_rx *in = t_recv(T_WAIT_S);
        cr_assert_not_null(in);
        cr_assert_eq(in->n, 2, "the app sees the body only");
        t_free_rx(in);
    }
    cr_assert_eq(app.echo_fail, 0);
    z_close(q);
}

Test(socket_reqrep, rep_serves_libzmq_req_tcp)
{
    rep_serves("tcp");
}

Test(socket_reqrep, rep_serves_libzmq_req_ipc)
{
    rep_serves("ipc");
}

/* Our REQ -> libzmq REP; a second request before the reply is -EFSM. */
static void req_asks(const char *transport)
{
    char ep[256];
    void *p = z_socket(ZMQ_REP);
    z_bind(p, transport, ep, sizeof(ep));
    t_socket(MCQ_REQ);
    cr_assert_eq(mcq_connect(app.s, ep), 0);
    for (int i = 0; i < 3; i++) {
        struct t_send j = {.nf = 1, .f = {"ping"}, .len = {4}};
        unsigned sh = (unsigned)i % T_SHARDS;
        cr_assert_eq(t_send_job_wait(sh, &j), 0);
        cr_assert_eq(t_send_strs(sh, "again", NULL), -EFSM, "strict alternation");
        struct t_rx r;
        cr_assert(z_recv(p, &r));
        cr_assert_eq(r.n, 1, "libzmq REP strips our delimiter");
        cr_assert(rx_frame_is(&r, 0, "ping"));
        z_rx_clear(&r);
        z_send_strs(p, "pong", NULL);
        struct t_rx *in = t_recv(T_WAIT_S);
        cr_assert_not_null(in);
        cr_assert_eq(in->n, 1);
        cr_assert(rx_frame_is(in, 0, "pong"));
        cr_assert_eq(in->shard, sh, "the reply comes back on the shard that asked");
        t_free_rx(in);
    }
    z_close(p);
}

/* Our REQ sends its next request from on_msg, the way a client loop does (the echo turns
 * each reply into the next request), on the shard that owns the peer: every reply is
 * delivered and the loop goes on. */
Test(socket_reqrep, req_asks_again_from_on_msg)
{
    enum { ROUNDS = 5 };
    char ep[256];
    void *p = z_socket(ZMQ_REP);
    z_bind(p, "tcp", ep, sizeof(ep));
    t_socket(MCQ_REQ);
    app.echo = true;
    cr_assert_eq(mcq_connect(app.s, ep), 0);
    /* From the peer's own shard: the reply is delivered there, inside the peer's input. */
    cr_assert(t_wait_count(&app.ups, 1, T_WAIT_S));
    struct t_send first = {.nf = 1, .f = {"r0"}, .len = {2}};
    cr_assert_eq(t_send_job_wait(app.up_shard, &first), 0);
    for (int i = 0; i < ROUNDS; i++) {
        char want[8], next[8];
        snprintf(want, sizeof(want), "r%d", i);
        snprintf(next, sizeof(next), "r%d", i + 1);
        struct t_rx r;
        cr_assert(z_recv(p, &r), "request %d never came (reply %d lost)", i, i - 1);
        cr_assert(rx_frame_is(&r, 0, want), "request %d is '%s'", i, (char *)r.data[0]);
        z_rx_clear(&r);
        z_send_strs(p, next, NULL);
    }
    cr_assert_eq(app.echo_fail, 0, "a send from on_msg failed");
    z_close(p);
}

Test(socket_reqrep, req_asks_libzmq_rep_tcp)
{
    req_asks("tcp");
}

Test(socket_reqrep, req_asks_libzmq_rep_ipc)
{
    req_asks("ipc");
}

/* spec_req test_req_message_format: our REQ's request reaches a libzmq ROUTER as
 * [id][empty][ABC][DEF]; the reply [id][empty][GHI] arrives as GHI. */
Test(socket_reqrep, req_message_format_at_router)
{
    char ep[256];
    void *r = z_socket(ZMQ_ROUTER);
    z_bind(r, "tcp", ep, sizeof(ep));
    t_socket(MCQ_REQ);
    cr_assert_eq(mcq_connect(app.s, ep), 0);
    struct t_send j = {.nf = 2, .f = {"ABC", "DEF"}, .len = {3, 3}};
    cr_assert_eq(t_send_job_wait(2, &j), 0);
    struct t_rx m;
    cr_assert(z_recv(r, &m));
    cr_assert_eq(m.n, 4);
    cr_assert_gt(m.len[0], 0);
    cr_assert_eq(m.len[1], 0, "empty delimiter");
    cr_assert(rx_frame_is(&m, 2, "ABC") && rx_frame_is(&m, 3, "DEF"));
    cr_assert_geq(zmq_send(r, m.data[0], m.len[0], ZMQ_SNDMORE), 0);
    z_rx_clear(&m);
    cr_assert_geq(zmq_send(r, "", 0, ZMQ_SNDMORE), 0);
    z_send_strs(r, "GHI", NULL);
    struct t_rx *in = t_recv(T_WAIT_S);
    cr_assert_not_null(in);
    cr_assert_eq(in->n, 1);
    cr_assert(rx_frame_is(in, 0, "GHI"));
    t_free_rx(in);
    z_close(r);
}

/* A reply without the empty delimiter breaks the REQ protocol: like libzmq's req_session
 * our REQ drops that connection (a log line) and reconnects, and the next request on the
 * new connection is answered normally. */
Test(socket_reqrep, reply_without_delimiter_drops_the_connection_and_reconnects)
{
    char ep[256];
    void *r = z_socket(ZMQ_ROUTER);
    z_bind(r, "tcp", ep, sizeof(ep));
    t_socket(MCQ_REQ);
    t_setopt_int(MCQ_RECONNECT_IVL, 10);
    cr_assert_eq(mcq_connect(app.s, ep), 0);
    struct t_send j = {.nf = 1, .f = {"first"}, .len = {5}};
    cr_assert_eq(t_send_job_wait(0, &j), 0);
    struct t_rx m;
    cr_assert(z_recv(r, &m));
    cr_assert(m.n == 3 && rx_frame_is(&m, 2, "first"));
    cr_assert_geq(zmq_send(r, m.data[0], m.len[0], ZMQ_SNDMORE), 0);
    z_rx_clear(&m);
    z_send_strs(r, "no-delimiter", NULL);
    cr_assert(t_wait_count(&app.downs, 1, T_WAIT_S), "the bad reply did not drop the peer");
    cr_assert(t_wait_count(&app.ups, 2, T_WAIT_S), "no reconnect after the bad reply");
    j.f[0] = "second";
    j.len[0] = 6;
    cr_assert_eq(t_send_job_wait(0, &j), 0, "no new request after the peer was dropped");
    cr_assert(z_recv(r, &m));
    cr_assert(m.n == 3 && rx_frame_is(&m, 2, "second"));
    cr_assert_geq(zmq_send(r, m.data[0], m.len[0], ZMQ_SNDMORE), 0);
    z_rx_clear(&m);
    cr_assert_geq(zmq_send(r, "", 0, ZMQ_SNDMORE), 0);
    z_send_strs(r, "answer", NULL);
    struct t_rx *in = t_recv(T_WAIT_S);
    cr_assert_not_null(in);
    cr_assert(in->n == 1 && rx_frame_is(in, 0, "answer"));
    t_free_rx(in);
    cr_assert_null(t_recv(0.05), "the bad reply was delivered");
}

/* spec_rep test_envelope: a libzmq DEALER sends [X][Y][empty][A]; our REP's app sees A and
 * the reply goes back as [X][Y][empty][A]. */
Test(socket_reqrep, rep_keeps_envelope)
{
    char ep[256];
    t_socket(MCQ_REP);
    app.echo = true;
    t_bind("tcp", ep, sizeof(ep));
    void *d = z_socket(ZMQ_DEALER);
    cr_assert_eq(zmq_connect(d, ep), 0);
    cr_assert_geq(zmq_send(d, "X", 1, ZMQ_SNDMORE), 0);
    cr_assert_geq(zmq_send(d, "Y", 1, ZMQ_SNDMORE), 0);
    cr_assert_geq(zmq_send(d, "", 0, ZMQ_SNDMORE), 0);
    z_send_strs(d, "A", NULL);
    struct t_rx r;
    cr_assert(z_recv(d, &r));
    cr_assert_eq(r.n, 4);
    cr_assert(rx_frame_is(&r, 0, "X") && rx_frame_is(&r, 1, "Y") && r.len[2] == 0 &&
              rx_frame_is(&r, 3, "A"));
    z_rx_clear(&r);
    struct t_rx *in = t_recv(T_WAIT_S);
    cr_assert_not_null(in);
    cr_assert_eq(in->n, 1);
    cr_assert(rx_frame_is(in, 0, "A"));
    t_free_rx(in);
    /* A request without a delimiter is dropped; the next good one is served. */
    z_send_strs(d, "nodelim", NULL);
    cr_assert_geq(zmq_send(d, "", 0, ZMQ_SNDMORE), 0);
    z_send_strs(d, "B", NULL);
    cr_assert(z_recv(d, &r));
    cr_assert_eq(r.n, 2);
    cr_assert(rx_frame_is(&r, 1, "B"));
    z_rx_clear(&r);
    z_close(d);
}

/* Our DEALER speaks to a libzmq REP by adding the delimiter itself. */
Test(socket_reqrep, dealer_to_libzmq_rep)
{
    char ep[256];
    void *p = z_socket(ZMQ_REP);
    z_bind(p, "ipc", ep, sizeof(ep));
    t_socket(MCQ_DEALER);
    cr_assert_eq(mcq_connect(app.s, ep), 0);
    struct t_send j = {.nf = 2, .f = {"", "A"}, .len = {0, 1}};
    cr_assert_eq(t_send_job_wait(3, &j), 0);
    struct t_rx r;
    cr_assert(z_recv(p, &r));
    cr_assert_eq(r.n, 1);
    cr_assert(rx_frame_is(&r, 0, "A"));
    z_rx_clear(&r);
    z_send_strs(p, "B", NULL);
    struct t_rx *in = t_recv(T_WAIT_S);
    cr_assert_not_null(in);
    cr_assert_eq(in->n, 2);
    cr_assert(in->len[0] == 0 && rx_frame_is(in, 1, "B"));
    t_free_rx(in);
    z_close(p);
}

/* spec_req test_round_robin_out: our REQ binds, five libzmq REPs connect (spread over the
 * shards); five request/reply cycles from one shard reach every REP once. */
Test(socket_reqrep, req_round_robin_out)
{
    char ep[256];
    enum { N = 5 };
    t_socket(MCQ_REQ);
    t_bind("tcp", ep, sizeof(ep));
    void *p[N];
    for (int i = 0; i < N; i++) {
        p[i] = z_socket(ZMQ_REP);
        cr_assert_eq(zmq_connect(p[i], ep), 0);
    }
    cr_assert(t_wait_count(&app.ups, N, T_WAIT_S));
    cr_assert(t_wait_lb(1, N), "shard 1 never saw every peer");
    int hits[N] = {0};
    for (int c = 0; c < N; c++) {
        cr_assert_eq(t_send_strs(1, "ABC", NULL), 0);
        /* Whichever REP got it answers; find it without blocking on the others. */
        zmq_pollitem_t items[N];
        for (int i = 0; i < N; i++)
            items[i] = (zmq_pollitem_t){.socket = p[i], .events = ZMQ_POLLIN};
        cr_assert_eq(zmq_poll(items, N, T_ZMQ_TIMEOUT_MS), 1, "exactly one REP has it");
        int who = -1;
        for (int i = 0; i < N; i++)
            if (items[i].revents & ZMQ_POLLIN)
                who = i;
        struct t_rx r;
        cr_assert(z_recv(p[who], &r));
        cr_assert(rx_frame_is(&r, 0, "ABC"));
        z_rx_clear(&r);
        hits[who]++;
        z_send_strs(p[who], "DEF", NULL);
        struct t_rx *in = t_recv(T_WAIT_S);
        cr_assert_not_null(in);
        cr_assert(rx_frame_is(in, 0, "DEF"));
        t_free_rx(in);
    }
    for (int i = 0; i < N; i++) {
        cr_assert_eq(hits[i], 1, "REP %d served %d requests", i, hits[i]);
        z_close(p[i]);
    }
}

struct rep_probe {
    unsigned held;
    bool paused;
    struct test_event done;
};

static void task_rep_probe(struct mcq_shard *sh, void *arg)
{
    struct rep_probe *p = arg;
    struct mcq_part *pt = app.s->parts[mcq_shard_id(sh)];
    p->held = pt->rep_hold.len;
    p->paused = pt->peers && pt->peers->paused;
    test_event_signal(&p->done);
}

/* REP with RCVHWM 2: a DEALER that pipelines six requests gets the first served while two
 * wait and its connection is paused (no more are taken in); each reply lets the next in,
 * and all six are answered in order. */
Test(socket_reqrep, rep_rcvhwm_pauses_pipelining_peer)
{
    enum { N = 6, HWM = 2 };
    char ep[256];
    t_socket(MCQ_REP);
    t_setopt_int(MCQ_RCVHWM, HWM);
    t_bind("tcp", ep, sizeof(ep));
    void *d = z_socket(ZMQ_DEALER);
    cr_assert_eq(zmq_connect(d, ep), 0);
    for (int i = 0; i < N; i++) {
        char body[8];
        snprintf(body, sizeof(body), "%d", i);
        cr_assert_geq(zmq_send(d, "", 0, ZMQ_SNDMORE), 0);
        z_send_strs(d, body, NULL);
    }
    struct t_rx *in = t_recv(T_WAIT_S);
    cr_assert_not_null(in);
    unsigned sh = in->shard;
    struct rep_probe p;
    struct timespec until = deadline_in(T_WAIT_S), now;
    do {
        test_event_init(&p.done);
        cr_assert_eq(mcq_runtime_post(app.rt, sh, task_rep_probe, &p), 0);
        cr_assert(test_event_wait(&p.done, 1, T_WAIT_S));
        clock_gettime(CLOCK_MONOTONIC, &now);
        cr_assert(now.tv_sec <= until.tv_sec, "never paused (held %u)", p.held);
        sched_yield();
    } while (!p.paused);
    cr_assert_eq(p.held, HWM, "held requests bounded by RCVHWM");
    for (int i = 0; i < N; i++) {
        char body[8];
        snprintf(body, sizeof(body), "%d", i);
        cr_assert(rx_frame_is(in, 0, body), "request %d out of order", i);
        t_free_rx(in);
        cr_assert_eq(t_send_strs(sh, "ok", NULL), 0);
        struct t_rx r;
        cr_assert(z_recv(d, &r));
        cr_assert(r.n == 2 && r.len[0] == 0 && rx_frame_is(&r, 1, "ok"));
        z_rx_clear(&r);
        in = i + 1 < N ? t_recv(T_WAIT_S) : NULL;
        cr_assert(i + 1 == N || in, "request %d never delivered", i + 1);
    }
    z_close(d);
}

/* spec_req test_req_only_listens_to_current_peer: our REQ (id "A") connects to three libzmq
 * ROUTERs and asks each in turn (round-robin); after each request the ROUTERs asked before
 * answer "WRONG" first, then the asked one "GOOD", and only GOOD is delivered. Without
 * request ids (libzmq's REQ_CORRELATE) a late WRONG from a peer asked later could not be
 * told from its answer, in libzmq as here, so only peers that are done answer wrong. */
Test(socket_reqrep, req_only_listens_to_current_peer)
{
    enum { N = 3 };
    char ep[N][256];
    void *r[N];
    bool done[N] = {false};
    t_socket(MCQ_REQ);
    cr_assert_eq(mcq_setsockopt(app.s, MCQ_ROUTING_ID, "A", 1), 0);
    for (int i = 0; i < N; i++) {
        r[i] = z_socket(ZMQ_ROUTER);
        int one = 1;
        zmq_setsockopt(r[i], ZMQ_ROUTER_MANDATORY, &one, sizeof(one));
        z_bind(r[i], "tcp", ep[i], sizeof(ep[i]));
        cr_assert_eq(mcq_connect(app.s, ep[i]), 0);
    }
    cr_assert(t_wait_count(&app.ups, N, T_WAIT_S));
    cr_assert(t_wait_lb(0, N));
    /* Our side being up does not mean libzmq has attached "A" yet: with ROUTER_MANDATORY a
     * ROUTER polls writable only once a peer pipe is attached, and each has just one. */
    for (int i = 0; i < N; i++) {
        zmq_pollitem_t it = {.socket = r[i], .events = ZMQ_POLLOUT};
        cr_assert_eq(zmq_poll(&it, 1, T_ZMQ_TIMEOUT_MS), 1, "ROUTER %d never attached A", i);
    }
    for (int c = 0; c < N; c++) {
        cr_assert_eq(t_send_strs(0, "ABC", NULL), 0);
        zmq_pollitem_t items[N];
        for (int i = 0; i < N; i++)
            items[i] = (zmq_pollitem_t){.socket = r[i], .events = ZMQ_POLLIN};
        cr_assert_eq(zmq_poll(items, N, T_ZMQ_TIMEOUT_MS), 1);
        int asked = -1;
        for (int i = 0; i < N; i++)
            if (items[i].revents & ZMQ_POLLIN)
                asked = i;
        cr_assert(!done[asked], "round %d asked ROUTER %d again, not round-robin", c, asked);
        struct t_rx m;
        cr_assert(z_recv(r[asked], &m));
        z_rx_clear(&m);
        /* The others answer first, so a wrong reply would be delivered before the good one. */
        for (int i = 0; i < N; i++) {
            if (!done[i])
                continue;
            cr_assert_geq(zmq_send(r[i], "A", 1, ZMQ_SNDMORE), 0);
            cr_assert_geq(zmq_send(r[i], "", 0, ZMQ_SNDMORE), 0);
            z_send_strs(r[i], "WRONG", NULL);
        }
        cr_assert_geq(zmq_send(r[asked], "A", 1, ZMQ_SNDMORE), 0);
        cr_assert_geq(zmq_send(r[asked], "", 0, ZMQ_SNDMORE), 0);
        z_send_strs(r[asked], "GOOD", NULL);
        struct t_rx *in = t_recv(T_WAIT_S);
        cr_assert_not_null(in);
        cr_assert(rx_frame_is(in, 0, "GOOD"), "round %d: got %s", c, (char *)in->data[0]);
        t_free_rx(in);
        done[asked] = true;
    }
    /* With no request out, any answer is dropped. */
    for (int i = 0; i < N; i++) {
        cr_assert_geq(zmq_send(r[i], "A", 1, ZMQ_SNDMORE), 0);
        cr_assert_geq(zmq_send(r[i], "", 0, ZMQ_SNDMORE), 0);
        z_send_strs(r[i], "WRONG", NULL);
    }
    cr_assert_null(t_recv(0.1), "a WRONG reply was delivered");
    for (int i = 0; i < N; i++)
        z_close(r[i]);
}

/* Two shards ask through one REQ socket with a single libzmq ROUTER peer: the peer gets one
 * request at a time (the second waits at its owner until the first is answered), so each
 * reply reaches the shard that asked even though a ROUTER may answer in any order. */
Test(socket_reqrep, one_request_per_peer_across_shards)
{
    char ep[256];
    void *r = z_socket(ZMQ_ROUTER);
    z_bind(r, "tcp", ep, sizeof(ep));
    t_socket(MCQ_REQ);
    cr_assert_eq(mcq_connect(app.s, ep), 0);
    cr_assert(t_wait_count(&app.ups, 1, T_WAIT_S));
    unsigned a = app.up_shard, b = (app.up_shard + 1) % T_SHARDS;
    cr_assert(t_wait_lb(b, 1));
    cr_assert_eq(t_send_strs(b, "from-b", NULL), 0);
    struct t_rx m;
    cr_assert(z_recv(r, &m));
    cr_assert(rx_frame_is(&m, 2, "from-b"));
    /* b's request crossed the mesh before it reached the wire, so the owner's own shard now
     * finds the peer busy with it. */
    cr_assert_eq(t_send_strs(a, "from-a", NULL), -EAGAIN);
    zmq_pollitem_t it = {.socket = r, .events = ZMQ_POLLIN};
    cr_assert_eq(zmq_poll(&it, 1, 100), 0, "a second request reached the busy peer");
    cr_assert_geq(zmq_send(r, m.data[0], m.len[0], ZMQ_SNDMORE), 0);
    z_rx_clear(&m);
    cr_assert_geq(zmq_send(r, "", 0, ZMQ_SNDMORE), 0);
    z_send_strs(r, "to-b", NULL);
    struct t_rx *in = t_recv(T_WAIT_S);
    cr_assert_not_null(in);
    cr_assert(rx_frame_is(in, 0, "to-b"));
    cr_assert_eq(in->shard, b);
    t_free_rx(in);
    struct t_send j = {.nf = 1, .f = {"from-a"}, .len = {6}};
    cr_assert_eq(t_send_job_wait(a, &j), 0, "the peer never became free for shard a");
    cr_assert(z_recv(r, &m));
    cr_assert(rx_frame_is(&m, 2, "from-a"));
    cr_assert_geq(zmq_send(r, m.data[0], m.len[0], ZMQ_SNDMORE), 0);
    z_rx_clear(&m);
    cr_assert_geq(zmq_send(r, "", 0, ZMQ_SNDMORE), 0);
    z_send_strs(r, "to-a", NULL);
    in = t_recv(T_WAIT_S);
    cr_assert_not_null(in);
    cr_assert(rx_frame_is(in, 0, "to-a"));
    cr_assert_eq(in->shard, a);
    t_free_rx(in);
}
