#include "zmtp/helpers.h"
#include "zmtp/wire_literals.h"

#define T0 1000000000ull

static const struct mcq_zmtp_plain_credentials admin = {
    .username = (const uint8_t *)"admin",
    .username_len = 5,
    .password = (const uint8_t *)"secret",
    .password_len = 6,
};

/* Sets c up (not started) as a DEALER logging in with `admin`. */
static void plain_client_setup(struct peer *c)
{
    peer_setup(c, MCQ_ZMTP_DEALER);
    c->cfg.mechanism = &mcq_zmtp_mech_plain_client;
    c->cfg.mechanism_arg = &admin;
}

/* Sets s up (not started) as a ROUTER that is a PLAIN server. */
static void plain_server_setup(struct peer *s)
{
    peer_setup(s, MCQ_ZMTP_ROUTER);
    s->cfg.mechanism = &mcq_zmtp_mech_plain_server;
}

/* Asserts that p has written exactly want[0..len) so far. */
static void assert_out(const struct peer *p, const uint8_t *want, size_t len)
{
    cr_assert_eq(p->out.len, len);
    cr_assert_eq(memcmp(p->out.buf, want, len), 0);
}

static void plain_pair(struct peer *c, struct peer *s)
{
    plain_client_setup(c);
    plain_server_setup(s);
    s->cfg.zap_domain = "global";
    s->cfg.peer_address = "127.0.0.1";
    s->cfg.identity = (const uint8_t *)"srv";
    s->cfg.identity_len = 3;
    peer_start(c, T0);
    peer_start(s, T0);
}

Test(plain, accept_then_messages_flow_both_ways)
{
    static struct peer c, s;
    plain_pair(&c, &s);
    cr_assert_eq(s.out.buf[32], 1, "PLAIN server sets as-server");
    cr_assert_eq(c.out.buf[32], 0);
    peer_pump(&c, &s, T0, 0);
    cr_assert_eq(s.log.n, 1);
    cr_assert_eq(s.log.ev[0].type, MCQ_ZMTP_EV_AUTH);
    cr_assert_str_eq((char *)s.log.ev[0].data, "PLAIN|global|127.0.0.1|srv|admin|secret");
    cr_assert_eq(mcq_zmtp_session_state(&s.s), MCQ_ZMTP_AUTH_WAIT);
    cr_assert_eq(c.log.n, 0);
    cr_assert_eq(mcq_zmtp_session_auth_reply(&s.s, 200, &s.out), 0);
    cr_assert_eq(mcq_zmtp_session_auth_reply(&s.s, 200, &s.out), -EINVAL);
    peer_pump(&c, &s, T0, 0);
    cr_assert_eq(c.log.err, 0, "%s", c.log.reason);
    cr_assert_eq(s.log.err, 0, "%s", s.log.reason);
    cr_assert_eq(c.log.n, 1);
    cr_assert_eq(c.log.ev[0].type, MCQ_ZMTP_EV_READY);
    cr_assert_eq(s.log.n, 2);
    cr_assert_eq(s.log.ev[1].type, MCQ_ZMTP_EV_READY);
    cr_assert_eq(mcq_zmtp_session_peer_socket_type(&s.s), MCQ_ZMTP_DEALER);
    cr_assert_eq(mcq_zmtp_session_peer_socket_type(&c.s), MCQ_ZMTP_ROUTER);
    peer_send(&c, "req", 3, false);
    peer_send(&s, "rep", 3, false);
    peer_pump(&c, &s, T0, 1);
    cr_assert(s.log.n == 3 && s.log.ev[2].type == MCQ_ZMTP_EV_FRAME);
    cr_assert(c.log.n == 2 && c.log.ev[1].type == MCQ_ZMTP_EV_FRAME);
    peer_release(&c);
    peer_release(&s);
}

Test(plain, server_bytes_match_rfc24_flow)
{
    static struct peer s;
    plain_server_setup(&s);
    s.auth_status = 200;
    peer_start(&s, T0);
    static const uint8_t in[] = G_PLAIN_C HELLO_ADMIN INITIATE_DEALER "\x00\x02hi";
    feed(&s.s, &s.ca, in, sizeof(in) - 1, T0, &s.out, &s.log, s.auth_status);
    cr_assert_eq(s.log.err, 0, "%s", s.log.reason);
    cr_assert_eq(s.log.n, 3);
    cr_assert_eq(s.log.ev[1].type, MCQ_ZMTP_EV_READY);
    cr_assert_eq(s.log.ev[2].type, MCQ_ZMTP_EV_FRAME);
    assert_out(&s, LIT(G_PLAIN_S WELCOME READY_ROUTER));
    peer_release(&s);
}

Test(plain, client_bytes_match_rfc24_flow)
{
    static struct peer c;
    plain_client_setup(&c);
    peer_start(&c, T0);
    static const uint8_t in[] = G_PLAIN_S WELCOME READY_ROUTER;
    feed(&c.s, &c.ca, in, sizeof(in) - 1, T0, &c.out, &c.log, 0);
    cr_assert_eq(c.log.err, 0, "%s", c.log.reason);
    cr_assert_eq(c.log.n, 1);
    assert_out(&c, LIT(G_PLAIN_C HELLO_ADMIN INITIATE_DEALER));
    peer_release(&c);
}

Test(plain, reject_400_sends_error_and_client_sees_refusal)
{
    static struct peer c, s;
    plain_pair(&c, &s);
    peer_pump(&c, &s, T0, 0);
    cr_assert_eq(mcq_zmtp_session_auth_reply(&s.s, 400, &s.out), -EACCES);
    cr_assert_eq(mcq_zmtp_session_state(&s.s), MCQ_ZMTP_CLOSED);
    assert_out(&s, LIT("\x04\x0a\x05"
                       "ERROR\x03"
                       "400"));
    peer_deliver(&s, &c, T0, 0);
    cr_assert_eq(c.log.err, -ECONNREFUSED);
    cr_assert(strstr(c.log.reason, "\"400\""), "%s", c.log.reason);
    peer_release(&c);
    peer_release(&s);
}

Test(plain, reject_300_closes_silently)
{
    static struct peer c, s;
    plain_pair(&c, &s);
    peer_pump(&c, &s, T0, 0);
    cr_assert_eq(mcq_zmtp_session_auth_reply(&s.s, 300, &s.out), -EACCES);
    cr_assert_eq(s.out.len, 0);
    peer_release(&c);
    peer_release(&s);
}

/* zmtp.md §3: libzmq's PLAIN server writes "\x05ERROR" in C, i.e. 5E "RROR" on the wire. */
Test(plain, client_accepts_libzmq_malformed_error)
{
    static struct peer c;
    plain_client_setup(&c);
    peer_start(&c, T0);
    static const uint8_t in[] = G_PLAIN_S "\x04\x09\x5eRROR\x03"
                                          "400";
    feed(&c.s, &c.ca, in, sizeof(in) - 1, T0, &c.out, &c.log, 0);
    cr_assert_eq(c.log.err, -ECONNREFUSED);
    cr_assert(strstr(c.log.reason, "\"400\""), "%s", c.log.reason);
    peer_release(&c);
}

Test(plain, input_is_held_while_the_auth_answer_is_due)
{
    static struct peer s;
    plain_server_setup(&s);
    peer_start(&s, T0);
    static const uint8_t in[] = G_PLAIN_C HELLO_ADMIN INITIATE_DEALER;
    size_t len = sizeof(in) - 1, used;
    struct mcq_zmtp_event ev;
    int rc = mcq_zmtp_session_next(&s.s, in, len, T0, &s.out, &used, &ev);
    cr_assert_eq(rc, MCQ_ZMTP_EV_AUTH);
    size_t off = used;
    cr_assert_eq(mcq_zmtp_session_next(&s.s, in + off, len - off, T0, &s.out, &used, &ev),
                 MCQ_ZMTP_EV_NONE);
    cr_assert_eq(used, 0);
    cr_assert_eq(mcq_zmtp_session_auth_reply(&s.s, 200, &s.out), 0);
    cr_assert_eq(mcq_zmtp_session_next(&s.s, in + off, len - off, T0, &s.out, &used, &ev),
                 MCQ_ZMTP_EV_READY);
    cr_assert_eq(used, len - off);
    peer_release(&s);
}

Test(plain, mechanism_mismatch_fails_both_sides)
{
    static struct peer c, s;
    plain_client_setup(&c);
    peer_setup(&s, MCQ_ZMTP_ROUTER);
    peer_start(&c, T0);
    peer_start(&s, T0);
    peer_pump(&c, &s, T0, 0);
    cr_assert_eq(c.log.err, -EPROTO);
    cr_assert_eq(s.log.err, -EPROTO);
    cr_assert(strstr(s.log.reason, "\"PLAIN\"") && strstr(s.log.reason, "\"NULL\""));
    peer_release(&c);
    peer_release(&s);
}

Test(plain, client_config_without_credentials_is_refused)
{
    static struct peer c;
    peer_setup(&c, MCQ_ZMTP_DEALER);
    c.cfg.mechanism = &mcq_zmtp_mech_plain_client;
    cr_assert_eq(mcq_zmtp_session_init(&c.s, &c.cfg, T0, &c.out), -EINVAL);
}

Test(plain, per_session_peer_address_overrides_the_config)
{
    static struct peer c, s;
    plain_pair(&c, &s);
    mcq_zmtp_session_set_peer_address(&s.s, "10.0.0.9");
    peer_pump(&c, &s, T0, 0);
    cr_assert_eq(s.log.n, 1);
    cr_assert_str_eq((char *)s.log.ev[0].data, "PLAIN|global|10.0.0.9|srv|admin|secret");
    peer_release(&c);
    peer_release(&s);
}
