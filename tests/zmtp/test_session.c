#include "zmtp/helpers.h"
#include "zmtp/wire_literals.h"

#define T0 1000000000ull /* an arbitrary non-zero start time, ns */
#define MS 1000000ull

static void handshake(struct peer *a, struct peer *b)
{
    peer_start(a, T0);
    peer_start(b, T0);
    peer_pump(a, b, T0, 0);
    cr_assert_eq(a->log.err, 0, "%s", a->log.reason);
    cr_assert_eq(b->log.err, 0, "%s", b->log.reason);
    cr_assert_eq(mcq_zmtp_session_state(&a->s), MCQ_ZMTP_ACTIVE);
    cr_assert_eq(mcq_zmtp_session_state(&b->s), MCQ_ZMTP_ACTIVE);
    cr_assert_eq(a->log.n, 1);
    cr_assert_eq(a->log.ev[0].type, MCQ_ZMTP_EV_READY);
    cr_assert_eq(b->log.ev[0].type, MCQ_ZMTP_EV_READY);
    rec_free(&a->log);
    rec_free(&b->log);
}

/* ---- engine to engine ------------------------------------------------------------- */

Test(session, null_handshake_exposes_peer_type_identity_and_properties)
{
    static struct peer dealer, router;
    peer_setup(&dealer, MCQ_ZMTP_DEALER);
    peer_setup(&router, MCQ_ZMTP_ROUTER);
    dealer.cfg.identity = (const uint8_t *)"AB";
    dealer.cfg.identity_len = 2;
    struct mcq_zmtp_property x = {.name = (const uint8_t *)"X-Color",
                                  .name_len = 7,
                                  .value = (const uint8_t *)"red",
                                  .value_len = 3};
    dealer.cfg.properties = &x;
    dealer.cfg.n_properties = 1;
    peer_start(&dealer, T0);
    peer_start(&router, T0);
    peer_pump(&dealer, &router, T0, 0);
    cr_assert_eq(router.log.n, 1);
    const struct rec_event *r = &router.log.ev[0];
    cr_assert_eq(r->type, MCQ_ZMTP_EV_READY);
    struct mcq_zmtp_property p;
    cr_assert_eq(mcq_zmtp_metadata_find(r->data, r->len, "X-Color", &p), 1);
    cr_assert(p.value_len == 3 && !memcmp(p.value, "red", 3));
    size_t idlen;
    const uint8_t *id = mcq_zmtp_session_peer_identity(&router.s, &idlen);
    cr_assert(idlen == 2 && !memcmp(id, "AB", 2));
    cr_assert_eq(mcq_zmtp_session_peer_socket_type(&router.s), MCQ_ZMTP_DEALER);
    cr_assert_eq(mcq_zmtp_session_peer_socket_type(&dealer.s), MCQ_ZMTP_ROUTER);
    cr_assert_eq(mcq_zmtp_session_peer_minor(&dealer.s), 1);
    peer_release(&dealer);
    peer_release(&router);
}

static void multipart(size_t chunk)
{
    static struct peer a, b;
    peer_setup(&a, MCQ_ZMTP_PUSH);
    peer_setup(&b, MCQ_ZMTP_PULL);
    peer_start(&a, T0);
    peer_start(&b, T0);
    peer_pump(&a, &b, T0, chunk);
    cr_assert_eq(b.log.n, 1);
    rec_free(&b.log);
    static uint8_t big[300];
    memset(big, 'z', sizeof(big));
    peer_send(&a, "x", 1, true);
    peer_send(&a, big, sizeof(big), true);
    peer_send(&a, "", 0, true);
    peer_send(&a, "y", 1, false);
    peer_send(&a, "solo", 4, false);
    peer_pump(&a, &b, T0, chunk);
    cr_assert_eq(b.log.err, 0, "%s", b.log.reason);
    cr_assert_eq(b.log.n, 5);
    const struct rec_event *e = b.log.ev;
    cr_assert(e[0].type == MCQ_ZMTP_EV_FRAME && e[0].more && e[0].len == 1);
    cr_assert(e[1].more && e[1].len == 300 && e[1].data[299] == 'z');
    cr_assert(e[2].more && e[2].len == 0);
    cr_assert(!e[3].more && e[3].len == 1 && e[3].data[0] == 'y');
    cr_assert(!e[4].more && e[4].len == 4 && !memcmp(e[4].data, "solo", 4));
    if (chunk == 0)
        cr_assert_eq(b.ca.allocs, 0, "whole frames must be views, not copies");
    else
        cr_assert_gt(b.ca.allocs, 0);
    peer_release(&a);
    peer_release(&b);
}

Test(session, multipart_messages_whole)
{
    multipart(0);
}

Test(session, multipart_messages_fed_one_byte_at_a_time)
{
    multipart(1);
}

Test(session, multipart_messages_fed_in_7_byte_pieces)
{
    multipart(7);
}

/* SUB sends with the form its peer's greeting asks for; PUB reports one event kind. */
static void subscriptions(bool pub_announces_30)
{
    static struct peer pub, sub;
    peer_setup(&pub, MCQ_ZMTP_XPUB);
    peer_setup(&sub, MCQ_ZMTP_SUB);
    pub.cfg.announce_zmtp30 = pub_announces_30;
    handshake(&pub, &sub);
    cr_assert_eq(mcq_zmtp_session_peer_minor(&sub.s), pub_announces_30 ? 0 : 1);
    uint8_t h[MCQ_ZMTP_SUB_HEADER_MAX];
    size_t n = mcq_zmtp_session_subscription_header(&sub.s, h, true, 1);
    cr_assert_eq(h[0], pub_announces_30 ? 0 : MCQ_ZMTP_FLAG_COMMAND);
    memcpy(sub.out.buf + sub.out.len, h, n);
    sub.out.buf[sub.out.len + n] = 'A';
    sub.out.len += n + 1;
    int m =
        mcq_zmtp_encode_subscription(sub.out.buf + sub.out.len, sub.out.cap - sub.out.len, false,
                                     (const uint8_t *)"A", 1, mcq_zmtp_session_peer_minor(&sub.s));
    cr_assert_gt(m, 0);
    sub.out.len += (size_t)m;
    peer_pump(&sub, &pub, T0, 0);
    cr_assert_eq(pub.log.err, 0, "%s", pub.log.reason);
    cr_assert_eq(pub.log.n, 2);
    cr_assert(pub.log.ev[0].type == MCQ_ZMTP_EV_SUBSCRIPTION && pub.log.ev[0].subscribe);
    cr_assert(pub.log.ev[0].len == 1 && pub.log.ev[0].data[0] == 'A');
    cr_assert(pub.log.ev[1].type == MCQ_ZMTP_EV_SUBSCRIPTION && !pub.log.ev[1].subscribe);
    peer_release(&pub);
    peer_release(&sub);
}

Test(session, subscriptions_31_commands)
{
    subscriptions(false);
}

Test(session, subscriptions_30_messages)
{
    subscriptions(true);
}

Test(session, xpub_accepts_30_form_from_a_31_peer_but_not_inside_a_message)
{
    static struct peer pub, sub;
    peer_setup(&pub, MCQ_ZMTP_XPUB);
    peer_setup(&sub, MCQ_ZMTP_XSUB);
    handshake(&pub, &sub);
    peer_send(&sub,
              "\x01"
              "B",
              2, false);            /* subscription, 3.0 form */
    peer_send(&sub, "hi", 2, true); /* a message whose 2nd frame starts with 0x01 */
    peer_send(&sub,
              "\x01"
              "C",
              2, false);
    peer_send(&sub,
              "\x00"
              "B",
              2, false); /* cancel */
    peer_pump(&sub, &pub, T0, 0);
    cr_assert_eq(pub.log.n, 4);
    cr_assert(pub.log.ev[0].type == MCQ_ZMTP_EV_SUBSCRIPTION && pub.log.ev[0].subscribe);
    cr_assert(pub.log.ev[1].type == MCQ_ZMTP_EV_FRAME && pub.log.ev[1].more);
    cr_assert(pub.log.ev[2].type == MCQ_ZMTP_EV_FRAME && !pub.log.ev[2].more);
    cr_assert_eq(pub.log.ev[2].len, 2);
    cr_assert(pub.log.ev[3].type == MCQ_ZMTP_EV_SUBSCRIPTION && !pub.log.ev[3].subscribe);
    peer_release(&pub);
    peer_release(&sub);
}

Test(session, ping_gets_pong_with_context_and_unknown_commands_are_ignored)
{
    static struct peer a, b;
    peer_setup(&a, MCQ_ZMTP_PAIR);
    peer_setup(&b, MCQ_ZMTP_PAIR);
    handshake(&a, &b);
    memcpy(a.out.buf, LIT("\x04\x05\x04"
                          "ABCD" PING_LOL));
    a.out.len = sizeof("\x04\x05\x04"
                       "ABCD" PING_LOL) -
                1;
    peer_send(&a, "after", 5, false);
    peer_pump(&a, &b, T0, 0);
    cr_assert_eq(b.log.n, 2);
    cr_assert(b.log.ev[0].type == MCQ_ZMTP_EV_PING && b.log.ev[0].ttl_ds == 0);
    cr_assert(b.log.ev[0].len == 3 && !memcmp(b.log.ev[0].data, "LOL", 3));
    cr_assert(b.log.ev[1].type == MCQ_ZMTP_EV_FRAME && b.log.ev[1].len == 5);
    cr_assert_eq(a.log.n, 1);
    cr_assert(a.log.ev[0].type == MCQ_ZMTP_EV_PONG && a.log.ev[0].len == 3);
    cr_assert_eq(memcmp(a.log.ev[0].data, "LOL", 3), 0);
    peer_release(&a);
    peer_release(&b);
}

Test(session, heartbeat_ping_pong_keeps_the_session_alive)
{
    static struct peer a, b;
    peer_setup(&a, MCQ_ZMTP_DEALER);
    peer_setup(&b, MCQ_ZMTP_ROUTER);
    a.cfg.heartbeat_ivl_ms = 100;
    a.cfg.heartbeat_ttl_ms = 2000;
    handshake(&a, &b);
    cr_assert_eq(mcq_zmtp_session_deadline(&a.s), T0 + 100 * MS);
    cr_assert_eq(mcq_zmtp_session_deadline(&b.s), UINT64_MAX);
    uint64_t now = T0;
    for (int i = 1; i <= 5; i++) {
        now = mcq_zmtp_session_deadline(&a.s);
        cr_assert_eq(mcq_zmtp_session_tick(&a.s, now, &a.out), 0);
        cr_assert_eq(a.out.len, 9); /* 04 07 04 PING 00 14 */
        cr_assert_eq(a.out.buf[8], 20);
        peer_pump(&a, &b, now + MS, 0);
        cr_assert_eq(mcq_zmtp_session_tick(&b.s, now + MS, &b.out), 0);
    }
    cr_assert_eq(b.log.n, 5);
    cr_assert_eq(b.log.ev[4].ttl_ds, 20);
    cr_assert_eq(a.log.n, 5);
    cr_assert_eq(a.log.ev[4].type, MCQ_ZMTP_EV_PONG);
    cr_assert_eq(mcq_zmtp_session_state(&a.s), MCQ_ZMTP_ACTIVE);
    /* b holds the peer's TTL of 2 s from the last traffic. */
    cr_assert_eq(mcq_zmtp_session_deadline(&b.s), now + MS + 2000 * MS);
    peer_release(&a);
    peer_release(&b);
}

Test(session, heartbeat_timeout_when_no_bytes_arrive)
{
    static struct peer a, b;
    peer_setup(&a, MCQ_ZMTP_DEALER);
    peer_setup(&b, MCQ_ZMTP_ROUTER);
    a.cfg.heartbeat_ivl_ms = 100;
    a.cfg.heartbeat_timeout_ms = 300;
    handshake(&a, &b);
    cr_assert_eq(mcq_zmtp_session_tick(&a.s, T0 + 100 * MS, &a.out), 0);
    cr_assert_gt(a.out.len, 0);
    a.out.len = 0; /* the PING is lost: nothing comes back */
    cr_assert_eq(mcq_zmtp_session_tick(&a.s, T0 + 200 * MS, &a.out), 0);
    a.out.len = 0;
    cr_assert_eq(mcq_zmtp_session_deadline(&a.s), T0 + 300 * MS);
    cr_assert_eq(mcq_zmtp_session_tick(&a.s, T0 + 399 * MS, &a.out), 0);
    a.out.len = 0;
    cr_assert_eq(mcq_zmtp_session_tick(&a.s, T0 + 400 * MS, &a.out), -ETIMEDOUT);
    cr_assert(strstr(mcq_zmtp_session_reason(&a.s), "300 ms"));
    cr_assert_eq(mcq_zmtp_session_state(&a.s), MCQ_ZMTP_CLOSED);
    peer_release(&a);
    peer_release(&b);
}

Test(session, any_byte_counts_as_life_after_our_ping)
{
    static struct peer a, b;
    peer_setup(&a, MCQ_ZMTP_DEALER);
    peer_setup(&b, MCQ_ZMTP_ROUTER);
    a.cfg.heartbeat_ivl_ms = 100;
    handshake(&a, &b);
    cr_assert_eq(mcq_zmtp_session_tick(&a.s, T0 + 100 * MS, &a.out), 0);
    a.out.len = 0;
    /* one byte of a data frame, not a PONG, arrives before the timeout */
    struct mcq_zmtp_event ev;
    size_t used;
    cr_assert_eq(
        mcq_zmtp_session_next(&a.s, (const uint8_t *)"\x00", 1, T0 + 150 * MS, &a.out, &used, &ev),
        MCQ_ZMTP_EV_NONE);
    cr_assert_eq(mcq_zmtp_session_tick(&a.s, T0 + 200 * MS, &a.out), 0);
    cr_assert_eq(mcq_zmtp_session_state(&a.s), MCQ_ZMTP_ACTIVE);
    peer_release(&a);
    peer_release(&b);
}

Test(session, peer_ttl_elapses_in_silence)
{
    static struct peer a, b;
    peer_setup(&a, MCQ_ZMTP_DEALER);
    peer_setup(&b, MCQ_ZMTP_ROUTER);
    handshake(&a, &b);
    int n = mcq_zmtp_encode_ping(a.out.buf, a.out.cap, 5, NULL, 0); /* TTL 500 ms */
    a.out.len = (size_t)n;
    peer_deliver(&a, &b, T0 + 10 * MS, 0);
    b.out.len = 0;
    cr_assert_eq(mcq_zmtp_session_tick(&b.s, T0 + 509 * MS, &b.out), 0);
    cr_assert_eq(mcq_zmtp_session_tick(&b.s, T0 + 510 * MS, &b.out), -ETIMEDOUT);
    peer_release(&a);
    peer_release(&b);
}

Test(session, handshake_deadline)
{
    static struct peer a;
    peer_setup(&a, MCQ_ZMTP_DEALER);
    peer_start(&a, T0);
    cr_assert_eq(mcq_zmtp_session_deadline(&a.s), T0 + 30000 * MS);
    cr_assert_eq(mcq_zmtp_session_tick(&a.s, T0 + 29999 * MS, &a.out), 0);
    cr_assert_eq(mcq_zmtp_session_tick(&a.s, T0 + 30000 * MS, &a.out), -ETIMEDOUT);
    cr_assert(strstr(mcq_zmtp_session_reason(&a.s), "handshake"));
    peer_release(&a);

    peer_setup(&a, MCQ_ZMTP_DEALER);
    a.cfg.handshake_ivl_ms = 50;
    peer_start(&a, T0);
    struct mcq_zmtp_event ev;
    size_t used;
    cr_assert_eq(mcq_zmtp_session_next(&a.s, LIT(G_NULL), T0 + 10 * MS, &a.out, &used, &ev), 0);
    cr_assert_eq(mcq_zmtp_session_tick(&a.s, T0 + 50 * MS, &a.out), -ETIMEDOUT);
    peer_release(&a);
}

Test(session, init_rejects_configs_the_wire_cannot_carry)
{
    static struct peer a;
    peer_setup(&a, 99);
    cr_assert_eq(mcq_zmtp_session_init(&a.s, &a.cfg, T0, &a.out), -EINVAL);
    peer_setup(&a, MCQ_ZMTP_DEALER);
    a.cfg.identity_len = 256;
    a.cfg.identity = a.obuf;
    cr_assert_eq(mcq_zmtp_session_init(&a.s, &a.cfg, T0, &a.out), -EINVAL);
    peer_setup(&a, MCQ_ZMTP_DEALER);
    a.out.cap = 63;
    cr_assert_eq(mcq_zmtp_session_init(&a.s, &a.cfg, T0, &a.out), -ENOBUFS);
}

Test(session, enobufs_stops_before_a_command_and_resumes_after_flush)
{
    static struct peer a;
    peer_setup(&a, MCQ_ZMTP_ROUTER);
    peer_start(&a, T0);
    a.out.len = a.out.cap - 10; /* the caller has not flushed */
    struct mcq_zmtp_event ev;
    size_t used;
    static const uint8_t in[] = G_NULL READY_DEALER PING_LOL;
    cr_assert_eq(mcq_zmtp_session_next(&a.s, in, sizeof(in) - 1, T0, &a.out, &used, &ev), -ENOBUFS);
    cr_assert_eq(used, 0);
    a.out.len = 0;
    cr_assert_eq(mcq_zmtp_session_next(&a.s, in, sizeof(in) - 1, T0, &a.out, &used, &ev),
                 MCQ_ZMTP_EV_READY);
    size_t off = used;
    a.out.len = a.out.cap - 10;
    cr_assert_eq(
        mcq_zmtp_session_next(&a.s, in + off, sizeof(in) - 1 - off, T0, &a.out, &used, &ev),
        -ENOBUFS);
    cr_assert_eq(used, 0);
    a.out.len = 0;
    cr_assert_eq(
        mcq_zmtp_session_next(&a.s, in + off, sizeof(in) - 1 - off, T0, &a.out, &used, &ev),
        MCQ_ZMTP_EV_PING);
    cr_assert_eq(a.out.len, 10); /* the PONG */
    peer_release(&a);
}

/* ---- every split of one recorded stream gives the same events and output ------------ */

static const uint8_t peer_stream[] =
    G_NULL READY_DEALER_AB PING_LOL SUBSCRIBE_A "\x04\x05\x04"
                                                "ABCD" /* unknown command, ignored */
                                                "\x01\x01x"
                                                "\x03\0\0\0\0\0\0\0\x03yyy"
                                                "\x00\x00" /* multipart, long form */
                                                "\x04\x05\x04PONG"
                                                "\x00\x03"
                                                "end";

struct run {
    struct rec_log log;
    uint8_t out[1024];
    size_t out_len;
};

static void run_split(const size_t *cuts, size_t ncuts, struct run *r)
{
    static struct guard g;
    if (!g.base)
        guard_init(&g, sizeof(peer_stream));
    struct mcq_zmtp_session s;
    struct counting_alloc ca = {0};
    struct mcq_zmtp_config cfg = {.socket_type = MCQ_ZMTP_ROUTER, .allocator = ca_allocator(&ca)};
    struct mcq_zmtp_out out = {.buf = r->out, .len = 0, .cap = sizeof(r->out)};
    memset(&r->log, 0, sizeof(r->log));
    cr_assert_eq(mcq_zmtp_session_init(&s, &cfg, T0, &out), 0);
    size_t start = 0, len = sizeof(peer_stream) - 1;
    for (size_t c = 0; c <= ncuts; c++) {
        size_t end = c < ncuts ? cuts[c] : len;
        feed(&s, &ca, guard_place(&g, peer_stream + start, end - start), end - start, T0, &out,
             &r->log, 0);
        start = end;
    }
    r->out_len = out.len;
    mcq_zmtp_session_release(&s);
    cr_assert_eq(ca.allocs, ca.releases);
}

static void assert_same_run(struct run *a, struct run *b)
{
    rec_assert_same(&a->log, &b->log);
    cr_assert_eq(a->out_len, b->out_len);
    cr_assert_eq(memcmp(a->out, b->out, a->out_len), 0);
}

Test(session, every_split_of_a_stream_gives_the_same_events)
{
    static struct run whole, part;
    run_split(NULL, 0, &whole);
    cr_assert_eq(whole.log.err, 0, "%s", whole.log.reason);
    cr_assert_eq(whole.log.n, 8);
    static const int types[] = {MCQ_ZMTP_EV_READY, MCQ_ZMTP_EV_PING,  MCQ_ZMTP_EV_SUBSCRIPTION,
                                MCQ_ZMTP_EV_FRAME, MCQ_ZMTP_EV_FRAME, MCQ_ZMTP_EV_FRAME,
                                MCQ_ZMTP_EV_PONG,  MCQ_ZMTP_EV_FRAME};
    for (size_t i = 0; i < 8; i++)
        cr_assert_eq(whole.log.ev[i].type, types[i], "event %zu", i);
    size_t len = sizeof(peer_stream) - 1;
    for (size_t a = 0; a <= len; a++) {
        run_split(&a, 1, &part);
        assert_same_run(&whole, &part);
        rec_free(&part.log);
    }
    for (size_t a = 0; a <= len; a += 3)
        for (size_t b = a; b <= len; b += 5) {
            size_t cuts[2] = {a, b};
            run_split(cuts, 2, &part);
            assert_same_run(&whole, &part);
            rec_free(&part.log);
        }
    size_t cuts[sizeof(peer_stream)];
    for (size_t i = 0; i < len; i++)
        cuts[i] = i + 1;
    run_split(cuts, len - 1, &part);
    assert_same_run(&whole, &part);
    rec_free(&part.log);
    rec_free(&whole.log);
}

/* libzmq <= 4.3.2 heartbeats while announcing ZMTP 3.0. */
Test(session, ping_from_a_zmtp30_peer_is_answered)
{
    static struct peer a, b;
    peer_setup(&a, MCQ_ZMTP_PAIR);
    peer_setup(&b, MCQ_ZMTP_PAIR);
    a.cfg.announce_zmtp30 = true;
    handshake(&a, &b);
    cr_assert_eq(mcq_zmtp_session_peer_minor(&b.s), 0);
    memcpy(a.out.buf, LIT(PING_LOL));
    a.out.len = sizeof(PING_LOL) - 1;
    peer_pump(&a, &b, T0, 0);
    cr_assert(b.log.n == 1 && b.log.ev[0].type == MCQ_ZMTP_EV_PING);
    cr_assert(a.log.n == 1 && a.log.ev[0].type == MCQ_ZMTP_EV_PONG);
    peer_release(&a);
    peer_release(&b);
}

Test(session, allocator_failure_closes_with_enomem)
{
    static struct peer a, b;
    peer_setup(&a, MCQ_ZMTP_PUSH);
    peer_setup(&b, MCQ_ZMTP_PULL);
    handshake(&a, &b);
    b.ca.fail = true;
    peer_send(&a, "split me", 8, false);
    peer_pump(&a, &b, T0, 3);
    cr_assert_eq(b.log.err, -ENOMEM);
    cr_assert(strstr(b.log.reason, "no memory"), "%s", b.log.reason);
    cr_assert_eq(mcq_zmtp_session_state(&b.s), MCQ_ZMTP_CLOSED);
    peer_release(&a);
    peer_release(&b);
}

Test(session, release_mid_frame_gives_the_reassembly_buffer_back)
{
    static struct peer a, b;
    peer_setup(&a, MCQ_ZMTP_PUSH);
    peer_setup(&b, MCQ_ZMTP_PULL);
    handshake(&a, &b);
    static uint8_t body[1000];
    peer_send(&a, body, sizeof(body), false);
    a.out.len -= 10; /* the connection drops before the last 10 bytes */
    peer_deliver(&a, &b, T0, 0);
    cr_assert_eq(b.log.n, 0);
    cr_assert_eq(b.ca.allocs, 1);
    cr_assert_eq(b.ca.releases, 0);
    peer_release(&a);
    peer_release(&b); /* asserts allocs == releases */
}
