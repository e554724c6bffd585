/* ROUTER and DEALER against libzmq, both directions, TCP and IPC; routing ids (auto and
 * peer-chosen) across shards; ROUTER_MANDATORY; option checks. */
#include "socket_util.h"

TestSuite(socket_router, .init = t_setup, .fini = t_teardown, .timeout = 60);

/* libzmq DEALER connects to our ROUTER (echo): the reply routes by the auto id. */
static void router_echo(const char *transport)
{
    char ep[256];
    t_socket(MCQ_ROUTER);
    app.echo = true;
    t_bind(transport, ep, sizeof(ep));
    void *d = z_socket(ZMQ_DEALER);
    cr_assert_eq(zmq_connect(d, ep), 0);
    z_send_strs(d, "hello", "world", NULL);
    struct t_rx r;
    cr_assert(z_recv(d, &r), "no echo");
    cr_assert_eq(r.n, 2);
    cr_assert(rx_frame_is(&r, 0, "hello") && rx_frame_is(&r, 1, "world"));
    z_rx_clear(&r);
    struct t_rx *in = t_recv(T_WAIT_S);
    cr_assert_not_null(in);
    cr_assert_eq(in->n, 3, "id + 2 frames");
    cr_assert_eq(in->len[0], MCQ_AUTO_ID_LEN);
    cr_assert_eq(in->data[0][0], 0, "auto ids start with 0x00");
    t_free_rx(in);
    cr_assert_eq(app.echo_fail, 0);
    z_close(d);
}

Test(socket_router, echo_tcp)
{
    router_echo("tcp");
}

Test(socket_router, echo_ipc)
{
    router_echo("ipc");
}

/* A DEALER with a chosen id gets its very first message echoed: input waits until the id
 * is bound, so the reply routes. */
Test(socket_router, echo_chosen_id_first_message)
{
    char ep[256];
    t_socket(MCQ_ROUTER);
    app.echo = true;
    t_bind("tcp", ep, sizeof(ep));
    for (int i = 0; i < 4; i++) {
        void *d = z_socket(ZMQ_DEALER);
        char id[2] = {(char)('a' + i), 0};
        zmq_setsockopt(d, ZMQ_ROUTING_ID, id, 1);
        cr_assert_eq(zmq_connect(d, ep), 0);
        z_send_strs(d, "first", NULL);
        struct t_rx r;
        cr_assert(z_recv(d, &r), "first message of %s not echoed", id);
        cr_assert(rx_frame_is(&r, 0, "first"));
        z_rx_clear(&r);
        z_close(d);
    }
    cr_assert_eq(app.echo_fail, 0);
}

/* Our DEALER connects to a libzmq ROUTER, which answers through the id it saw. */
static void dealer_to_router(const char *transport)
{
    char ep[256];
    void *r = z_socket(ZMQ_ROUTER);
    z_bind(r, transport, ep, sizeof(ep));
    t_socket(MCQ_DEALER);
    cr_assert_eq(mcq_setsockopt(app.s, MCQ_ROUTING_ID, "dlr", 3), 0);
    cr_assert_eq(mcq_connect(app.s, ep), 0);
    cr_assert(t_wait_count(&app.ups, 1, T_WAIT_S));
    struct t_send j = {.nf = 2, .f = {"A", "B"}, .len = {1, 1}};
    cr_assert_eq(t_send_job_wait(0, &j), 0);
    struct t_rx m;
    cr_assert(z_recv(r, &m));
    cr_assert_eq(m.n, 3);
    cr_assert(rx_frame_is(&m, 0, "dlr"), "our ROUTING_ID reaches libzmq");
    cr_assert(rx_frame_is(&m, 1, "A") && rx_frame_is(&m, 2, "B"));
    z_rx_clear(&m);
    z_send_strs(r, "dlr", "reply", NULL);
    struct t_rx *in = t_recv(T_WAIT_S);
    cr_assert_not_null(in);
    cr_assert_eq(in->n, 1);
    cr_assert(rx_frame_is(in, 0, "reply"));
    cr_assert_eq(in->shard, app.up_shard, "delivered on the peer's shard");
    t_free_rx(in);
    z_close(r);
}

Test(socket_router, dealer_to_libzmq_router_tcp)
{
    dealer_to_router("tcp");
}

Test(socket_router, dealer_to_libzmq_router_ipc)
{
    dealer_to_router("ipc");
}

/* Five libzmq DEALERs with chosen ids spread over the shards: each message arrives with its
 * sender's id; a reply sent from every shard to every id reaches the right DEALER. */
Test(socket_router, chosen_ids_route_from_any_shard)
{
    char ep[256];
    t_socket(MCQ_ROUTER);
    t_bind("tcp", ep, sizeof(ep));
    enum { N = 5 };
    void *d[N];
    char id[N][2];
    for (int i = 0; i < N; i++) {
        d[i] = z_socket(ZMQ_DEALER);
        id[i][0] = (char)('A' + i);
        id[i][1] = 0;
        zmq_setsockopt(d[i], ZMQ_ROUTING_ID, id[i], 1);
        cr_assert_eq(zmq_connect(d[i], ep), 0);
    }
    for (int i = 0; i < N; i++)
        z_send_strs(d[i], "M", NULL);
    bool seen[N] = {0};
    for (int i = 0; i < N; i++) {
        struct t_rx *in = t_recv(T_WAIT_S);
        cr_assert_not_null(in);
        cr_assert_eq(in->n, 2);
        cr_assert_eq(in->len[0], 1);
        int k = in->data[0][0] - 'A';
        cr_assert(k >= 0 && k < N && !seen[k]);
        seen[k] = true;
        cr_assert(rx_frame_is(in, 1, "M"));
        t_free_rx(in);
    }
    /* The id bindings reach every shard through the arbiter; retry until routable. */
    t_setopt_int(MCQ_ROUTER_MANDATORY, 1);
    for (unsigned sh = 0; sh < T_SHARDS; sh++) {
        for (int i = 0; i < N; i++) {
            char body[8];
            snprintf(body, sizeof(body), "%u", sh);
            struct t_send j = {.nf = 2, .f = {id[i], body}, .len = {1, strlen(body)}};
            int rc;
            struct timespec until = deadline_in(T_WAIT_S), now;
            while ((rc = t_send_job(sh, &j)) == -EHOSTUNREACH) {
                clock_gettime(CLOCK_MONOTONIC, &now);
                cr_assert(now.tv_sec <= until.tv_sec, "id %s never routable on shard %u", id[i],
                          sh);
                sched_yield();
            }
            cr_assert_eq(rc, 0);
            struct t_rx m;
            cr_assert(z_recv(d[i], &m), "dealer %d got nothing from shard %u", i, sh);
            cr_assert(rx_frame_is(&m, 0, body));
            z_rx_clear(&m);
        }
    }
    for (int i = 0; i < N; i++)
        z_close(d[i]);
}

Test(socket_router, mandatory_unknown_id)
{
    t_socket(MCQ_ROUTER);
    cr_assert_eq(t_send_strs(1, "nobody", "x", NULL), 0, "silently dropped by default");
    t_setopt_int(MCQ_ROUTER_MANDATORY, 1);
    cr_assert_eq(t_send_strs(1, "nobody", "x", NULL), -EHOSTUNREACH);
    struct t_send j = {.nf = 2, .f = {"\0\0\0\0\1", "x"}, .len = {5, 1}};
    cr_assert_eq(t_send_job(2, &j), -EHOSTUNREACH, "an auto id of nobody");
}

Test(socket_router, options_by_type)
{
    t_socket(MCQ_PUSH);
    int one = 1;
    cr_assert_eq(mcq_setsockopt(app.s, MCQ_ROUTER_MANDATORY, &one, sizeof(one)), -ENOTSUP);
    cr_assert_eq(mcq_setsockopt(app.s, MCQ_ROUTING_ID, "x", 1), -ENOTSUP);
    cr_assert_eq(mcq_setsockopt(app.s, MCQ_RCVHWM, &one, sizeof(one)), -ENOTSUP);
    cr_assert_eq(mcq_setsockopt(app.s, MCQ_SNDHWM, &one, sizeof(one)), 0);
    cr_assert_eq(mcq_setsockopt(app.s, MCQ_SNDHWM, &one, 2), -EINVAL);
    int v = 0;
    size_t len = sizeof(v);
    cr_assert_eq(mcq_getsockopt(app.s, MCQ_SNDHWM, &v, &len), 0);
    cr_assert_eq(v, 1);
    len = sizeof(v);
    cr_assert_eq(mcq_getsockopt(app.s, MCQ_LINGER, &v, &len), 0);
    cr_assert_eq(v, -1, "libzmq's default LINGER");
    cr_assert_eq(mcq_connect(app.s, "tcp://*:5555"), -EINVAL);
    cr_assert_eq(mcq_connect(app.s, "bogus://x"), -EPROTONOSUPPORT);
    struct mcq_socket *pull;
    cr_assert_eq(mcq_socket_create(app.rt, MCQ_PULL, &(struct mcq_socket_handlers){0}, &pull), 0);
    cr_assert_eq(mcq_setsockopt(pull, MCQ_SNDHWM, &one, sizeof(one)), -ENOTSUP);
    mcq_socket_close(pull);
    struct mcq_socket *sub;
    cr_assert_eq(mcq_socket_create(app.rt, MCQ_SUB, &(struct mcq_socket_handlers){0}, &sub),
                 -ENOTSUP);
}

/* Duplicate routing id: without ROUTER_HANDOVER the first holder keeps it and the second
 * peer is ignored (and not reported up: its id would reach the holder) until the holder
 * leaves; with it the newcomer takes the id and the old connection is closed. */
static void duplicate_id(bool handover)
{
    char ep[256];
    t_socket(MCQ_ROUTER);
    t_setopt_int(MCQ_ROUTER_HANDOVER, handover);
    t_setopt_int(MCQ_ROUTER_MANDATORY, 1);
    t_bind("tcp", ep, sizeof(ep));
    void *d1 = z_socket(ZMQ_DEALER);
    zmq_setsockopt(d1, ZMQ_ROUTING_ID, "H", 1);
    cr_assert_eq(zmq_connect(d1, ep), 0);
    z_send_strs(d1, "one", NULL);
    struct t_rx *in = t_recv(T_WAIT_S);
    cr_assert_not_null(in);
    t_free_rx(in);
    void *d2 = z_socket(ZMQ_DEALER);
    zmq_setsockopt(d2, ZMQ_ROUTING_ID, "H", 1);
    void *mon = z_monitor(d2, ZMQ_EVENT_HANDSHAKE_SUCCEEDED);
    cr_assert_eq(zmq_connect(d2, ep), 0);
    if (handover)
        cr_assert(t_wait_count(&app.ups, 2, T_WAIT_S));
    else
        cr_assert(z_wait_event(mon, ZMQ_EVENT_HANDSHAKE_SUCCEEDED), "second peer never connected");
    z_send_strs(d2, "two", NULL);
    void *winner = handover ? d2 : d1, *loser = handover ? d1 : d2;
    if (handover) {
        cr_assert(t_wait_count(&app.downs, 1, T_WAIT_S), "old holder not closed");
        in = t_recv(T_WAIT_S);
        cr_assert_not_null(in, "the new holder's message");
        cr_assert(rx_frame_is(in, 1, "two"));
        t_free_rx(in);
    }
    /* Replies to "H" from every shard reach the winner only. */
    for (unsigned sh = 0; sh < T_SHARDS; sh++) {
        struct t_send j = {.nf = 2, .f = {"H", "r"}, .len = {1, 1}};
        struct timespec until = deadline_in(T_WAIT_S), now;
        int rc;
        struct t_rx m;
        for (;;) {
            rc = t_send_job(sh, &j);
            cr_assert(rc == 0 || rc == -EHOSTUNREACH);
            zmq_pollitem_t it = {.socket = winner, .events = ZMQ_POLLIN};
            if (rc == 0 && zmq_poll(&it, 1, 100) == 1)
                break;
            clock_gettime(CLOCK_MONOTONIC, &now);
            cr_assert(now.tv_sec <= until.tv_sec, "shard %u never reached the holder", sh);
        }
        cr_assert(z_recv(winner, &m));
        z_rx_clear(&m);
    }
    zmq_pollitem_t it = {.socket = loser, .events = ZMQ_POLLIN};
    cr_assert_eq(zmq_poll(&it, 1, 100), 0, "the other peer got a reply");
    if (!handover) {
        cr_assert_null(t_recv(0.1), "the ignored peer's message was delivered");
        cr_assert_eq(app.ups, 1, "the ignored peer was reported up");
        /* The holder leaves: the waiting peer gets the id, is reported up, and "H" routes
         * to it from its own shard at once. */
        z_close(d1);
        cr_assert(t_wait_count(&app.ups, 2, T_WAIT_S), "waiting peer never got the id");
        cr_assert_eq(t_send_strs(app.up_shard, "H", "late", NULL), 0);
        struct t_rx m;
        cr_assert(z_recv(d2, &m), "the new holder got nothing");
        cr_assert(rx_frame_is(&m, 0, "late"));
        z_rx_clear(&m);
        z_close(d2);
        return;
    }
    z_close(d1);
    z_close(d2);
}

Test(socket_router, duplicate_id_ignored)
{
    duplicate_id(false);
}

Test(socket_router, duplicate_id_handover)
{
    duplicate_id(true);
}

/* on_peer_down that holds its shard until the test thread has probed every other shard:
 * whatever those shards know then, they knew when the user was told. */
static struct test_event down_told, probes_done;
static unsigned down_shard;

static void hold_down(struct mcq_shard *sh, struct mcq_socket *s, const struct mcq_peer_info *p,
                      int reason, void *user)
{
    down_shard = mcq_shard_id(sh);
    test_event_signal(&down_told);
    test_event_wait(&probes_done, 1, T_WAIT_S);
    t_on_down(sh, s, p, reason, user);
}

/* Once on_peer_down ran, no shard routes to the peer: a ROUTER_MANDATORY send to its id
 * says -EHOSTUNREACH on every shard (not 0 and a silent drop on arrival). */
Test(socket_router, gone_peer_unroutable_everywhere_at_on_peer_down)
{
    char ep[256];
    test_event_init(&down_told);
    test_event_init(&probes_done);
    struct mcq_socket_handlers h = {
        .on_msg = t_on_msg, .on_peer_up = t_on_up, .on_peer_down = hold_down, .user = &app};
    cr_assert_eq(mcq_socket_create(app.rt, MCQ_ROUTER, &h, &app.s), 0);
    t_setopt_int(MCQ_ROUTER_MANDATORY, 1);
    t_bind("tcp", ep, sizeof(ep));
    void *d = z_socket(ZMQ_DEALER);
    zmq_setsockopt(d, ZMQ_ROUTING_ID, "G", 1);
    cr_assert_eq(zmq_connect(d, ep), 0);
    z_send_strs(d, "hi", NULL);
    struct t_rx *in = t_recv(T_WAIT_S);
    cr_assert_not_null(in);
    t_free_rx(in);
    /* Every shard knows "G" before it leaves. */
    for (unsigned sh = 0; sh < T_SHARDS; sh++) {
        struct timespec until = deadline_in(T_WAIT_S), now;
        while (t_send_strs(sh, "G", "x", NULL) != 0) {
            clock_gettime(CLOCK_MONOTONIC, &now);
            cr_assert(now.tv_sec <= until.tv_sec, "shard %u never learned of the peer", sh);
        }
    }
    z_close(d);
    cr_assert(test_event_wait(&down_told, 1, T_WAIT_S), "no on_peer_down");
    int rcs[T_SHARDS];
    for (unsigned sh = 0; sh < T_SHARDS; sh++)
        rcs[sh] = sh == down_shard ? -EHOSTUNREACH : t_send_strs(sh, "G", "late", NULL);
    test_event_signal(&probes_done);
    for (unsigned sh = 0; sh < T_SHARDS; sh++)
        cr_assert_eq(rcs[sh], -EHOSTUNREACH, "shard %u still routes to the gone peer: %d", sh,
                     rcs[sh]);
}
