/* Command bodies: input = scenario byte, then one command body (name-len name data).
 * The body goes through the pure parsers (command split, metadata iteration and lookup,
 * Socket-Type parse) with their bounds checked, and then, framed as a command, into a
 * session at the step the scenario picks, preceded by a well-formed peer greeting and
 * handshake: so READY/HELLO/WELCOME/INITIATE/ERROR/PING/PONG/SUBSCRIBE handling all see
 * arbitrary bodies. Byte 0: bits 0-2 scenario, bits 3-6 socket type (mod 11), bit 7 peer
 * announces ZMTP 3.0. */
#include "session_driver.h"
#include "zmtp/encoder.h"
#include "zmtp/greeting.h"
#include "zmtp/metadata.h"

#include <strings.h>

enum scenario {
    SC_PARSE_ONLY,
    SC_NULL_HANDSHAKE, /* our NULL session expects READY */
    SC_NULL_ACTIVE,    /* after the handshake: PING, PONG, SUBSCRIBE, CANCEL, unknown */
    SC_PLAIN_SERVER_HELLO,
    SC_PLAIN_SERVER_INITIATE,
    SC_PLAIN_CLIENT_WELCOME,
    SC_PLAIN_CLIENT_READY,
    SC_PLAIN_ACTIVE,
};

#define PREFIX_CAP 1024 /* bytes of synthetic peer greeting + handshake */
#define STREAM_CAP (PREFIX_CAP + MCQ_ZMTP_HEADER_MAX)

static void check_parsers(const uint8_t *body, size_t len)
{
    char why[MCQ_ZMTP_REASON_LEN];
    struct mcq_zmtp_command cmd;
    if (mcq_zmtp_command_parse(body, len, &cmd, why, sizeof(why)) < 0) {
        FUZZ_CHECK(why[0] != '\0');
        return;
    }
    FUZZ_CHECK(cmd.name == body + 1 && cmd.name_len == body[0] && cmd.name_len >= 1);
    FUZZ_CHECK(cmd.data == body + 1 + cmd.name_len && cmd.data + cmd.len == body + len);

    size_t pos = 0, props = 0;
    struct mcq_zmtp_property p;
    int rc;
    bool found_type = false;
    struct mcq_zmtp_property first_type;
    while ((rc = mcq_zmtp_metadata_next(cmd.data, cmd.len, &pos, &p, why, sizeof(why))) == 1) {
        FUZZ_CHECK(pos <= cmd.len);
        FUZZ_CHECK(p.name_len >= 1 && p.name >= cmd.data && p.name + p.name_len <= cmd.data + pos);
        FUZZ_CHECK(p.value >= p.name + p.name_len && p.value + p.value_len == cmd.data + pos);
        if (!found_type && p.name_len == 11 &&
            strncasecmp((const char *)p.name, "Socket-Type", 11) == 0) {
            found_type = true;
            first_type = p;
        }
        int t = mcq_zmtp_socket_type_parse(p.value, p.value_len);
        if (t >= 0) {
            const char *name = mcq_zmtp_socket_type_name(t);
            FUZZ_CHECK(name && strlen(name) == p.value_len &&
                       memcmp(name, p.value, p.value_len) == 0);
        }
        props++;
    }
    FUZZ_CHECK(rc == 0 || rc == -EPROTO);
    struct mcq_zmtp_property q;
    int frc = mcq_zmtp_metadata_find(cmd.data, cmd.len, "Socket-Type", &q);
    if (rc == 0) {
        FUZZ_CHECK(frc == (found_type ? 1 : 0));
        if (found_type)
            FUZZ_CHECK(q.value == first_type.value && q.value_len == first_type.value_len);
    }
    (void)props;
}

/* Appends the header of a command frame with a body of len bytes. */
static size_t put_command_header(uint8_t *buf, size_t off, size_t len)
{
    uint8_t hdr[MCQ_ZMTP_HEADER_MAX];
    size_t h = mcq_zmtp_frame_header(hdr, MCQ_ZMTP_FLAG_COMMAND, len);
    memcpy(buf + off, hdr, h);
    return off + h;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const uint8_t *body = data + 1;
    size_t len = size - 1;
    check_parsers(body, len);

    enum scenario sc = (enum scenario)(data[0] & 7);
    if (sc == SC_PARSE_ONLY)
        return 0;
    int type = ((data[0] >> 3) & 15) % MCQ_ZMTP_SOCKET_TYPE_COUNT;
    bool peer30 = data[0] & 0x80;
    struct driver_opts o = {.socket_type = type, .auth_status = 200};
    bool plain = sc >= SC_PLAIN_SERVER_HELLO;
    bool we_serve =
        sc == SC_PLAIN_SERVER_HELLO || sc == SC_PLAIN_SERVER_INITIATE || sc == SC_PLAIN_ACTIVE;
    o.mech = !plain ? DRIVER_NULL : we_serve ? DRIVER_PLAIN_SERVER : DRIVER_PLAIN_CLIENT;

    /* The well-formed peer side up to the step under test. */
    static uint8_t stream[STREAM_CAP];
    size_t off = 0;
    mcq_zmtp_greeting_build(stream, plain ? "PLAIN" : "NULL", plain && !we_serve, peer30 ? 0 : 1);
    off += MCQ_ZMTP_GREETING_LEN;
    struct mcq_zmtp_metadata_spec peer_meta = {.socket_type = driver_peer_type(type)};
    int n = 0;
    switch (sc) {
    case SC_NULL_ACTIVE:
        n = mcq_zmtp_encode_metadata_command(stream + off, PREFIX_CAP - off, "READY", &peer_meta);
        break;
    case SC_PLAIN_SERVER_INITIATE:
    case SC_PLAIN_ACTIVE:
        n = mcq_zmtp_encode_plain_hello(stream + off, PREFIX_CAP - off, (const uint8_t *)"u", 1,
                                        (const uint8_t *)"p", 1);
        FUZZ_CHECK(n > 0);
        off += (size_t)n;
        n = 0;
        if (sc == SC_PLAIN_ACTIVE)
            n = mcq_zmtp_encode_metadata_command(stream + off, PREFIX_CAP - off, "INITIATE",
                                                 &peer_meta);
        break;
    case SC_PLAIN_CLIENT_READY:
        n = mcq_zmtp_encode_plain_welcome(stream + off, PREFIX_CAP - off);
        break;
    default:
        break;
    }
    FUZZ_CHECK(n >= 0);
    off += (size_t)n;
    size_t prefix = off;
    off = put_command_header(stream, off, len);

    static struct driver d;
    FUZZ_CHECK(driver_init(&d, &o) == 0);
    driver_feed(&d, stream, prefix, o.auth_status);
    /* The synthetic prefix is well-formed: only the fuzzed command may end the session. */
    FUZZ_CHECK(!d.closed);
    driver_feed(&d, stream + prefix, off - prefix, o.auth_status);
    driver_feed(&d, body, len, o.auth_status);
    driver_flush(&d);
    driver_mirror_check(&d, &o);
    driver_fini(&d);
    return 0;
}
