/* A mechanism defined entirely outside zmtp/ (a toy that XORs every active frame, shaped
 * like CURVE's MESSAGE wrapping) runs through an unchanged session: that is the contract
 * CURVE will rely on. Also the session send API on plaintext mechanisms. */
#include "zmtp/helpers.h"
#include "zmtp/wire_literals.h"

#define T0 1000000000ull
#define MS 1000000ull
#define XOR_KEY 0x5A
#define XOR_OVERHEAD (MCQ_ZMTP_HEADER_MAX + 1) /* header + inner flags byte */

static int xor_start(struct mcq_zmtp_session *s, struct mcq_zmtp_out *out)
{
    return mcq_zmtp_session_send_metadata(s, out, "READY");
}

static int xor_command(struct mcq_zmtp_session *s, const struct mcq_zmtp_command *cmd,
                       struct mcq_zmtp_out *out, struct mcq_zmtp_event *ev)
{
    (void)out;
    (void)ev;
    if (!mcq_zmtp_command_is(cmd, "READY"))
        return mcq_zmtp_session_unexpected(s, cmd, "READY");
    int rc = mcq_zmtp_session_accept_metadata(s, cmd->data, cmd->len);
    return rc < 0 ? rc : MCQ_ZMTP_MECH_DONE;
}

/* Wire: data frame, body = inner flags + payload ^ key (like CURVE MESSAGE in a 00 frame). */
static int xor_unwrap(struct mcq_zmtp_session *s, struct mcq_zmtp_frame *f)
{
    if (f->flags != 0 || f->len == 0)
        return mcq_zmtp_session_fail(s, -EPROTO, "XOR frame at byte %llu: flags 0x%02x len %zu",
                                     (unsigned long long)mcq_zmtp_session_command_offset(s),
                                     f->flags, f->len);
    uint8_t inner = f->data[0];
    size_t n = f->len - 1;
    void *handle = NULL;
    uint8_t *plain = NULL;
    if (n && !(plain = mcq_zmtp_session_alloc(s, n, &handle)))
        return mcq_zmtp_session_fail(s, -ENOMEM, "XOR: no memory");
    for (size_t i = 0; i < n; i++)
        plain[i] = f->data[1 + i] ^ XOR_KEY;
    mcq_zmtp_session_free(s, f->handle);
    f->data = plain;
    f->len = n;
    f->handle = handle;
    f->flags = inner;
    return 0;
}

static int xor_wrap(struct mcq_zmtp_session *s, uint8_t flags, const uint8_t *prefix,
                    size_t prefix_len, const uint8_t *body, size_t len, struct mcq_zmtp_out *out)
{
    (void)s;
    uint8_t hdr[MCQ_ZMTP_HEADER_MAX];
    size_t h = mcq_zmtp_frame_header(hdr, 0, 1 + prefix_len + len);
    if (out->cap - out->len < h + 1 + prefix_len + len)
        return -ENOBUFS;
    uint8_t *p = out->buf + out->len;
    memcpy(p, hdr, h);
    p[h] = flags;
    for (size_t i = 0; i < prefix_len; i++)
        p[h + 1 + i] = prefix[i] ^ XOR_KEY;
    for (size_t i = 0; i < len; i++)
        p[h + 1 + prefix_len + i] = body[i] ^ XOR_KEY;
    out->len += h + 1 + prefix_len + len;
    return 0;
}

static const struct mcq_zmtp_mechanism xor_mech = {
    .name = "XOR",
    .start = xor_start,
    .command = xor_command,
    .unwrap = xor_unwrap,
    .wrap = xor_wrap,
    .wrap_overhead = XOR_OVERHEAD,
};

static void xor_pair(struct peer *a, int ta, struct peer *b, int tb, bool b_announces_30)
{
    peer_setup(a, ta);
    peer_setup(b, tb);
    a->cfg.mechanism = &xor_mech;
    b->cfg.mechanism = &xor_mech;
    b->cfg.announce_zmtp30 = b_announces_30;
    a->cfg.heartbeat_ivl_ms = 100;
    peer_start(a, T0);
    peer_start(b, T0);
    cr_assert_eq(a->out.buf[12], 'X');
    peer_pump(a, b, T0, 0);
    cr_assert_eq(a->log.err, 0, "%s", a->log.reason);
    cr_assert_eq(b->log.err, 0, "%s", b->log.reason);
    cr_assert(a->log.n == 1 && a->log.ev[0].type == MCQ_ZMTP_EV_READY);
    cr_assert(b->log.n == 1 && b->log.ev[0].type == MCQ_ZMTP_EV_READY);
    cr_assert(mcq_zmtp_session_wraps(&a->s));
    rec_free(&a->log);
    rec_free(&b->log);
}

static void xor_messages(size_t chunk)
{
    static struct peer a, b;
    xor_pair(&a, MCQ_ZMTP_DEALER, &b, MCQ_ZMTP_ROUTER, false);
    static const char secret[] = "secret-payload";
    cr_assert_eq(mcq_zmtp_session_send_frame(&a.s, MCQ_ZMTP_FLAG_MORE, (const uint8_t *)secret,
                                             sizeof(secret) - 1, &a.out),
                 0);
    static uint8_t big[400];
    memset(big, 'b', sizeof(big));
    cr_assert_eq(mcq_zmtp_session_send_frame(&a.s, 0, big, sizeof(big), &a.out), 0);
    cr_assert_null(memmem(a.out.buf, a.out.len, secret, sizeof(secret) - 1), "sent in clear");
    peer_pump(&a, &b, T0, chunk);
    cr_assert_eq(b.log.err, 0, "%s", b.log.reason);
    cr_assert_eq(b.log.n, 2);
    cr_assert(b.log.ev[0].type == MCQ_ZMTP_EV_FRAME && b.log.ev[0].more);
    cr_assert_eq(memcmp(b.log.ev[0].data, secret, sizeof(secret) - 1), 0);
    cr_assert(b.log.ev[1].len == 400 && !b.log.ev[1].more && b.log.ev[1].data[399] == 'b');

    /* heartbeats: our PING and the peer's PONG both travel wrapped */
    cr_assert_eq(mcq_zmtp_session_tick(&a.s, T0 + 100 * MS, &a.out), 0);
    cr_assert_null(memmem(a.out.buf, a.out.len, "PING", 4));
    peer_pump(&a, &b, T0 + 101 * MS, chunk);
    cr_assert_eq(b.log.ev[2].type, MCQ_ZMTP_EV_PING);
    cr_assert_eq(a.log.n, 1);
    cr_assert_eq(a.log.ev[0].type, MCQ_ZMTP_EV_PONG);
    peer_release(&a);
    peer_release(&b);
}

Test(mechanism, custom_wrapping_mechanism_carries_messages_and_heartbeats)
{
    xor_messages(0);
}

Test(mechanism, custom_wrapping_mechanism_byte_by_byte)
{
    xor_messages(1);
}

static void xor_subscriptions(bool pub_30)
{
    static struct peer sub, pub;
    xor_pair(&sub, MCQ_ZMTP_SUB, &pub, MCQ_ZMTP_XPUB, pub_30);
    cr_assert_eq(
        mcq_zmtp_session_send_subscription(&sub.s, true, (const uint8_t *)"topic", 5, &sub.out), 0);
    cr_assert_eq(
        mcq_zmtp_session_send_subscription(&sub.s, false, (const uint8_t *)"topic", 5, &sub.out),
        0);
    peer_pump(&sub, &pub, T0, 0);
    cr_assert_eq(pub.log.err, 0, "%s", pub.log.reason);
    cr_assert_eq(pub.log.n, 2);
    cr_assert(pub.log.ev[0].type == MCQ_ZMTP_EV_SUBSCRIPTION && pub.log.ev[0].subscribe);
    cr_assert(pub.log.ev[0].len == 5 && !memcmp(pub.log.ev[0].data, "topic", 5));
    cr_assert(pub.log.ev[1].type == MCQ_ZMTP_EV_SUBSCRIPTION && !pub.log.ev[1].subscribe);
    peer_release(&sub);
    peer_release(&pub);
}

Test(mechanism, custom_wrapping_mechanism_subscriptions_31)
{
    xor_subscriptions(false);
}

Test(mechanism, custom_wrapping_mechanism_subscriptions_30)
{
    xor_subscriptions(true);
}

Test(mechanism, unwrap_failure_closes_with_its_reason)
{
    static struct peer a, b;
    xor_pair(&a, MCQ_ZMTP_PAIR, &b, MCQ_ZMTP_PAIR, false);
    peer_send(&a, "", 0, false); /* an empty plaintext frame is not a valid XOR frame */
    peer_pump(&a, &b, T0, 0);
    cr_assert_eq(b.log.err, -EPROTO);
    cr_assert(strstr(b.log.reason, "XOR frame at byte"), "%s", b.log.reason);
    peer_release(&a);
    peer_release(&b);
}

Test(mechanism, half_a_wrap_pair_and_long_names_are_refused)
{
    static const struct mcq_zmtp_mechanism half = {
        .name = "HALF", .start = xor_start, .command = xor_command, .unwrap = xor_unwrap};
    static struct peer a;
    peer_setup(&a, MCQ_ZMTP_PAIR);
    a.cfg.mechanism = &half;
    cr_assert_eq(mcq_zmtp_session_init(&a.s, &a.cfg, T0, &a.out), -EINVAL);
    static const struct mcq_zmtp_mechanism long_name = {
        .name = "A-NAME-OF-21-LETTERS!", .start = xor_start, .command = xor_command};
    a.cfg.mechanism = &long_name;
    cr_assert_eq(mcq_zmtp_session_init(&a.s, &a.cfg, T0, &a.out), -EINVAL);
    cr_assert_eq(a.out.len, 0);
}

/* On plaintext mechanisms the send API writes exactly what the encoder builds. */
Test(mechanism, plaintext_send_api_matches_the_encoder)
{
    static struct peer sub, pub;
    peer_setup(&sub, MCQ_ZMTP_SUB);
    peer_setup(&pub, MCQ_ZMTP_PUB);
    cr_assert_eq(mcq_zmtp_session_send_frame(&sub.s, 0, NULL, 0, &sub.out), -EINVAL);
    peer_start(&sub, T0);
    cr_assert_eq(mcq_zmtp_session_send_subscription(&sub.s, true, NULL, 0, &sub.out), -EINVAL);
    peer_start(&pub, T0);
    peer_pump(&sub, &pub, T0, 0);
    cr_assert_not(mcq_zmtp_session_wraps(&sub.s));
    for (int minor = 0; minor <= 1; minor++) {
        sub.s._peer_minor = (uint8_t)minor;
        for (int on = 0; on <= 1; on++) {
            uint8_t want[64];
            int n = mcq_zmtp_encode_subscription(want, sizeof(want), on, (const uint8_t *)"A", 1,
                                                 (uint8_t)minor);
            sub.out.len = 0;
            cr_assert_eq(
                mcq_zmtp_session_send_subscription(&sub.s, on, (const uint8_t *)"A", 1, &sub.out),
                0);
            cr_assert_eq(sub.out.len, (size_t)n);
            cr_assert_eq(memcmp(sub.out.buf, want, (size_t)n), 0);
        }
    }
    sub.out.len = 0;
    cr_assert_eq(
        mcq_zmtp_session_send_frame(&sub.s, MCQ_ZMTP_FLAG_MORE, (const uint8_t *)"hi", 2, &sub.out),
        0);
    cr_assert_eq(memcmp(sub.out.buf, "\x01\x02hi", 4), 0);
    cr_assert_eq(mcq_zmtp_session_send_frame(&sub.s, MCQ_ZMTP_FLAG_MORE | MCQ_ZMTP_FLAG_COMMAND,
                                             (const uint8_t *)"hi", 2, &sub.out),
                 -EINVAL);
    sub.out.len = sub.out.cap - 3;
    cr_assert_eq(mcq_zmtp_session_send_frame(&sub.s, 0, (const uint8_t *)"hi", 2, &sub.out),
                 -ENOBUFS);
    cr_assert_eq(sub.out.len, sub.out.cap - 3);
    sub.out.len = 0;
    peer_release(&sub);
    peer_release(&pub);
}
