#include "zmtp/helpers.h"

#include "zmtp/encoder.h"

/* Expected bytes are the traces in zmtp.md §9 (RFC 23 example, libzmq tests and captures
 * from libzmq 4.3.4). */

#define S(lit) (const uint8_t *)(lit), sizeof(lit) - 1

static void assert_bytes(const uint8_t *got, int n, const uint8_t *want, size_t want_len)
{
    cr_assert_eq(n, (int)want_len, "length %d, want %zu", n, want_len);
    for (size_t i = 0; i < want_len; i++)
        cr_assert_eq(got[i], want[i], "byte %zu: 0x%02x, want 0x%02x", i, got[i], want[i]);
}

static int ready(uint8_t *out, size_t cap, int type, const char *id)
{
    struct mcq_zmtp_metadata_spec m = {
        .socket_type = type, .identity = (const uint8_t *)id, .identity_len = id ? strlen(id) : 0};
    return mcq_zmtp_encode_metadata_command(out, cap, "READY", &m);
}

Test(encoder, frame_header_short_and_long)
{
    uint8_t h[MCQ_ZMTP_HEADER_MAX];
    cr_assert_eq(mcq_zmtp_frame_header(h, 0, 0), 2);
    cr_assert(h[0] == 0 && h[1] == 0);
    cr_assert_eq(mcq_zmtp_frame_header(h, MCQ_ZMTP_FLAG_MORE, 255), 2);
    cr_assert(h[0] == 1 && h[1] == 255);
    cr_assert_eq(mcq_zmtp_frame_header(h, MCQ_ZMTP_FLAG_MORE, 256), 9);
    static const uint8_t want[] = {3, 0, 0, 0, 0, 0, 0, 1, 0};
    assert_bytes(h, 9, want, 9);
    mcq_zmtp_frame_header(h, MCQ_ZMTP_FLAG_COMMAND, 0x0102030405060708ull);
    static const uint8_t want2[] = {6, 1, 2, 3, 4, 5, 6, 7, 8};
    assert_bytes(h, 9, want2, 9);
}

Test(encoder, ready_dealer_empty_identity)
{
    uint8_t b[128];
    assert_bytes(b, ready(b, sizeof(b), MCQ_ZMTP_DEALER, NULL),
                 S("\x04\x29\x05READY\x0bSocket-Type\0\0\0\x06"
                   "DEALER\x08Identity\0\0\0\0"));
}

Test(encoder, ready_dealer_with_identity)
{
    uint8_t b[128];
    assert_bytes(b, ready(b, sizeof(b), MCQ_ZMTP_DEALER, "AB"),
                 S("\x04\x2b\x05READY\x0bSocket-Type\0\0\0\x06"
                   "DEALER\x08Identity\0\0\0\x02"
                   "AB"));
}

Test(encoder, ready_xpub_and_sub_have_no_identity)
{
    uint8_t b[128];
    assert_bytes(b, ready(b, sizeof(b), MCQ_ZMTP_XPUB, "AB"),
                 S("\x04\x1a\x05READY\x0bSocket-Type\0\0\0\x04XPUB"));
    assert_bytes(b, ready(b, sizeof(b), MCQ_ZMTP_SUB, NULL),
                 S("\x04\x19\x05READY\x0bSocket-Type\0\0\0\x03SUB"));
}

Test(encoder, ready_every_socket_type_parses_back)
{
    uint8_t b[128];
    for (int t = 0; t < MCQ_ZMTP_SOCKET_TYPE_COUNT; t++) {
        int n = ready(b, sizeof(b), t, "");
        cr_assert_gt(n, 2);
        cr_assert_eq(b[0], MCQ_ZMTP_FLAG_COMMAND);
        cr_assert_eq(b[1], n - 2);
        struct mcq_zmtp_command cmd;
        char why[MCQ_ZMTP_REASON_LEN];
        cr_assert_eq(mcq_zmtp_command_parse(b + 2, (size_t)n - 2, &cmd, why, sizeof(why)), 0);
        cr_assert(mcq_zmtp_command_is(&cmd, "READY"));
        struct mcq_zmtp_property p;
        cr_assert_eq(mcq_zmtp_metadata_find(cmd.data, cmd.len, "Socket-Type", &p), 1);
        cr_assert_eq(mcq_zmtp_socket_type_parse(p.value, p.value_len), t);
        cr_assert_eq(mcq_zmtp_metadata_find(cmd.data, cmd.len, "Identity", &p),
                     mcq_zmtp_socket_type_sends_identity(t) ? 1 : 0);
    }
}

Test(encoder, metadata_extra_properties_and_size)
{
    struct mcq_zmtp_property x = {.name = (const uint8_t *)"X-Foo",
                                  .name_len = 5,
                                  .value = (const uint8_t *)"bar",
                                  .value_len = 3};
    struct mcq_zmtp_metadata_spec m = {.socket_type = MCQ_ZMTP_PUSH, .extra = &x, .n_extra = 1};
    uint8_t b[128];
    int n = mcq_zmtp_encode_metadata_command(b, sizeof(b), "INITIATE", &m);
    cr_assert_eq(n, mcq_zmtp_metadata_command_size("INITIATE", &m));
    assert_bytes(b, n,
                 S("\x04\x2a\x08INITIATE\x0bSocket-Type\0\0\0\x04PUSH\x05X-Foo\0\0\0\x03"
                   "bar"));
    cr_assert_eq(mcq_zmtp_encode_metadata_command(b, (size_t)n - 1, "INITIATE", &m), -ENOBUFS);
}

Test(encoder, metadata_large_uses_long_frame)
{
    static uint8_t value[300];
    struct mcq_zmtp_property x = {.name = (const uint8_t *)"X-Big",
                                  .name_len = 5,
                                  .value = value,
                                  .value_len = sizeof(value)};
    struct mcq_zmtp_metadata_spec m = {.socket_type = MCQ_ZMTP_PUSH, .extra = &x, .n_extra = 1};
    uint8_t b[512];
    int n = mcq_zmtp_encode_metadata_command(b, sizeof(b), "READY", &m);
    cr_assert_eq(n, mcq_zmtp_metadata_command_size("READY", &m));
    cr_assert_eq(b[0], MCQ_ZMTP_FLAG_COMMAND | MCQ_ZMTP_FLAG_LONG);
    cr_assert_eq(b[7] << 8 | b[8], n - 9);
}

Test(encoder, metadata_rejects_uncarriable_lengths)
{
    uint8_t id[256] = {0};
    struct mcq_zmtp_metadata_spec m = {
        .socket_type = MCQ_ZMTP_DEALER, .identity = id, .identity_len = sizeof(id)};
    uint8_t b[1024];
    cr_assert_eq(mcq_zmtp_encode_metadata_command(b, sizeof(b), "READY", &m), -EINVAL);
    m.identity_len = 1;
    m.socket_type = 42;
    cr_assert_eq(mcq_zmtp_encode_metadata_command(b, sizeof(b), "READY", &m), -EINVAL);
}

Test(encoder, error_spec_form)
{
    uint8_t b[64];
    assert_bytes(b, mcq_zmtp_encode_error(b, sizeof(b), "400"),
                 S("\x04\x0a\x05"
                   "ERROR\x03"
                   "400"));
}

Test(encoder, ping_with_ttl_and_with_context)
{
    uint8_t b[64];
    assert_bytes(b, mcq_zmtp_encode_ping(b, sizeof(b), 20, NULL, 0), S("\x04\x07\x04PING\x00\x14"));
    assert_bytes(b, mcq_zmtp_encode_ping(b, sizeof(b), 0, (const uint8_t *)"LOL", 3),
                 S("\x04\x0a\x04PING\x00\x00LOL"));
    cr_assert_eq(mcq_zmtp_encode_ping(b, sizeof(b), 0, b, 17), -EINVAL);
}

Test(encoder, pong_echoes_at_most_16_context_bytes)
{
    uint8_t b[64];
    assert_bytes(b, mcq_zmtp_encode_pong(b, sizeof(b), (const uint8_t *)"LOL", 3),
                 S("\x04\x08\x04PONGLOL"));
    static const uint8_t ctx[58] = "0123456789abcdefXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX";
    int n = mcq_zmtp_encode_pong(b, sizeof(b), ctx, sizeof(ctx));
    cr_assert_eq(n, 2 + 21); /* libzmq test_heartbeats: 21 body bytes */
    cr_assert_eq(memcmp(b + 7, ctx, 16), 0);
}

Test(encoder, subscription_forms_31_and_30)
{
    uint8_t b[64];
    const uint8_t *a = (const uint8_t *)"A";
    assert_bytes(b, mcq_zmtp_encode_subscription(b, sizeof(b), true, a, 1, 1),
                 S("\x04\x0b\x09SUBSCRIBEA"));
    assert_bytes(b, mcq_zmtp_encode_subscription(b, sizeof(b), false, a, 1, 1),
                 S("\x04\x08\x06"
                   "CANCELA"));
    assert_bytes(b, mcq_zmtp_encode_subscription(b, sizeof(b), true, a, 1, 0),
                 S("\x00\x02\x01"
                   "A"));
    assert_bytes(b, mcq_zmtp_encode_subscription(b, sizeof(b), false, a, 1, 0),
                 S("\x00\x02\x00"
                   "A"));
}

/* libzmq 4.3.4 gets 246..255-byte SUBSCRIBE topics wrong (short flag, long size); we must
 * switch to the long form exactly when the body passes 255. */
Test(encoder, subscription_header_switches_to_long_form_on_body_size)
{
    uint8_t h[MCQ_ZMTP_SUB_HEADER_MAX];
    cr_assert_eq(mcq_zmtp_encode_subscription_header(h, true, 245, 1), 2 + 10);
    cr_assert_eq(h[0], MCQ_ZMTP_FLAG_COMMAND);
    cr_assert_eq(h[1], 255);
    cr_assert_eq(mcq_zmtp_encode_subscription_header(h, true, 246, 1), 9 + 10);
    cr_assert_eq(h[0], MCQ_ZMTP_FLAG_COMMAND | MCQ_ZMTP_FLAG_LONG);
    cr_assert_eq(h[8], 0);
    cr_assert_eq(h[7], 1);
    cr_assert_eq(mcq_zmtp_encode_subscription_header(h, false, 255, 0), 9 + 1);
    cr_assert_eq(h[0], MCQ_ZMTP_FLAG_LONG);
    cr_assert_eq(h[9], 0);
}

Test(encoder, plain_hello_and_welcome)
{
    uint8_t b[600];
    assert_bytes(b,
                 mcq_zmtp_encode_plain_hello(b, sizeof(b), (const uint8_t *)"admin", 5,
                                             (const uint8_t *)"secret", 6),
                 S("\x04\x13\x05HELLO\x05"
                   "admin\x06secret"));
    assert_bytes(b, mcq_zmtp_encode_plain_welcome(b, sizeof(b)), S("\x04\x08\x07WELCOME"));
    static const uint8_t big[256];
    cr_assert_eq(mcq_zmtp_encode_plain_hello(b, sizeof(b), big, 256, big, 0), -EINVAL);
    int n = mcq_zmtp_encode_plain_hello(b, sizeof(b), big, 255, big, 255);
    cr_assert_eq(n, 9 + 6 + 2 + 510);
    cr_assert_eq(b[0], MCQ_ZMTP_FLAG_COMMAND | MCQ_ZMTP_FLAG_LONG);
}

Test(encoder, builders_report_short_buffers)
{
    uint8_t b[8];
    cr_assert_eq(mcq_zmtp_encode_error(b, sizeof(b), "400"), -ENOBUFS);
    cr_assert_eq(mcq_zmtp_encode_plain_welcome(b, 9), -ENOBUFS);
    cr_assert_eq(mcq_zmtp_encode_pong(b, 0, NULL, 0), -ENOBUFS);
}
