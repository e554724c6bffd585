/* Malformed inputs: each must close the session with -EPROTO and a reason that names the
 * byte, identically however the input is split, and without reading past its end (every
 * piece ends at a PROT_NONE guard page). */
#include "zmtp/helpers.h"
#include "zmtp/wire_literals.h"

#define T0 1000000000ull

enum { M_NULL, M_PLAIN_SERVER, M_PLAIN_CLIENT };

struct bad_case {
    const char *name;
    int type;
    int mech;
    struct mcq_zmtp_limits limits;
    const uint8_t *in;
    size_t len;
    const char *why; /* substring the reason must contain */
};

#define ST_DEALER                                                                                  \
    "\x0bSocket-Type"                                                                              \
    "\0\0\0\x06"                                                                                   \
    "DEALER"
#define ID0 "\x08Identity" Z4
#define PREFIX G_NULL READY_DEALER
#define D10 "DDDDDDDDDD"
#define D50 D10 D10 D10 D10 D10
#define D100 D50 D50

#define CASE(name_, type_, mech_, bytes_, why_)                                                    \
    {                                                                                              \
        .name = name_, .type = type_, .mech = mech_, .in = LIT(bytes_), .why = why_                \
    }
#define CASE_LIM(name_, lim_, bytes_, why_)                                                        \
    {                                                                                              \
        .name = name_, .type = MCQ_ZMTP_ROUTER, .mech = M_NULL, .limits = lim_, .in = LIT(bytes_), \
        .why = why_                                                                                \
    }
#define R MCQ_ZMTP_ROUTER

static const struct bad_case cases[] = {
    /* greeting */
    CASE("signature byte 0 not 0xff", R, M_NULL, "\x00", "byte 0"),
    CASE("ZMTP 1.0 vanilla probe", R, M_NULL, "\x01\x00\x08\x00sneaky\0", "byte 0"),
    CASE("unversioned signature byte 9", R, M_NULL, "\xff" Z8 "\x7e", "byte 9"),
    CASE("ZMTP 2.0 revision 1", R, M_NULL, "\xff" Z8 "\x7f\x01\x05", "major version 1"),
    CASE("major version 2", R, M_NULL, "\xff" Z8 "\x7f\x02", "major version 2"),
    CASE("major version 0", R, M_NULL, "\xff" Z8 "\x7f\x00", "major version 0"),
    CASE("mechanism PLAIN against NULL", R, M_NULL, G_PLAIN_C, "mechanism \"PLAIN\""),
    CASE("mechanism in lower case", R, M_NULL, GREETING("\x01", "null" Z16, "\0"), "mechanism"),
    CASE("mechanism NULLX", R, M_NULL,
         GREETING("\x01",
                  "NULLX"
                  "\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0",
                  "\0"),
         "mechanism"),
    CASE("mechanism CURVE", R, M_NULL,
         GREETING("\x01",
                  "CURVE"
                  "\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0",
                  "\0"),
         "mechanism"),
    CASE("mechanism empty", R, M_NULL, GREETING("\x01", Z16 Z4, "\0"), "mechanism"),
    CASE("PLAIN client meets NULL greeting", MCQ_ZMTP_DEALER, M_PLAIN_CLIENT, G_NULL,
         "mechanism \"NULL\""),
    /* frame headers during the handshake */
    CASE("reserved flag 0x08", R, M_NULL, G_NULL "\x08\x01x", "reserved"),
    CASE("reserved flag 0x80", R, M_NULL, G_NULL "\x80\x00", "reserved"),
    CASE("COMMAND|MORE", R, M_NULL, G_NULL "\x05\x01\x00", "MORE on a command"),
    CASE("LONG|COMMAND|MORE", R, M_NULL, G_NULL "\x07" Z8, "MORE on a command"),
    CASE("64-bit size with the high bit", R, M_NULL, G_NULL "\x06\x80\0\0\0\0\0\0\x01", "high bit"),
    CASE("command past the command limit", R, M_NULL, G_NULL "\x06\0\0\0\0\0\x01\0\x01",
         "command limit"),
    CASE_LIM("READY past ZMQ_MAXMSGSIZE 40", {.max_frame_size = 40}, PREFIX, "ZMQ_MAXMSGSIZE"),
    /* commands and data before READY */
    CASE("data before READY", R, M_NULL, G_NULL "\x00\x01x", "before the handshake"),
    CASE("multipart data before READY", R, M_NULL, G_NULL "\x01\x01x", "before the handshake"),
    CASE("PING before READY", R, M_NULL, G_NULL PING_LOL, "unexpected \"PING\""),
    CASE("SUBSCRIBE before READY", R, M_NULL, G_NULL SUBSCRIBE_A, "unexpected \"SUBSCRIBE\""),
    CASE("HELLO in a NULL handshake", R, M_NULL, G_NULL HELLO_ADMIN, "unexpected \"HELLO\""),
    CASE("empty command body", R, M_NULL, G_NULL "\x04\x00", "empty body"),
    CASE("command name length 0", R, M_NULL, G_NULL "\x04\x01\x00", "name length 0"),
    CASE("command name past the body", R, M_NULL, G_NULL "\x04\x02\x05R", "exceeds"),
    /* READY metadata */
    CASE("READY truncated inside a name", R, M_NULL, G_NULL "\x04\x08\x05READY\x0bS", "truncated"),
    CASE("READY value length past the end", R, M_NULL,
         G_NULL "\x04\x19\x05READY\x0bSocket-Type\0\0\0\x09SUB", "runs past"),
    CASE("READY property name length 0", R, M_NULL, G_NULL "\x04\x0b\x05READY\x00" Z4,
         "name length is 0"),
    CASE("READY trailing byte", R, M_NULL, G_NULL "\x04\x2a\x05READY" ST_DEALER ID0 "\x07",
         "truncated"),
    CASE("READY without Socket-Type", R, M_NULL, G_NULL "\x04\x13\x05READY" ID0,
         "lacks Socket-Type"),
    CASE("duplicate Socket-Type", R, M_NULL, G_NULL "\x04\x32\x05READY" ST_DEALER ST_DEALER,
         "duplicate Socket-Type"),
    CASE("duplicate Identity", R, M_NULL, G_NULL "\x04\x36\x05READY" ST_DEALER ID0 ID0,
         "duplicate Identity"),
    CASE("incompatible Socket-Type PUB for ROUTER", R, M_NULL, G_NULL READY_PUB, "cannot talk"),
    CASE("incompatible Socket-Type SUB for PUSH", MCQ_ZMTP_PUSH, M_NULL, G_NULL READY_SUB,
         "cannot talk"),
    CASE("unknown Socket-Type", R, M_NULL,
         G_NULL "\x04\x19\x05READY\x0bSocket-Type\0\0\0\x03"
                "FOO",
         "unknown Socket-Type"),
    CASE("oversize Socket-Type value", R, M_NULL,
         G_NULL "\x06\0\0\0\0\0\0\x01\x42\x05READY\x0bSocket-Type\0\0\x01\x2c" D100 D100 D100,
         "unknown Socket-Type"),
    CASE("Identity of 256 bytes", R, M_NULL,
         G_NULL "\x06\0\0\0\0\0\0\x01\x29\x05READY" ST_DEALER
                "\x08Identity\0\0\x01\x00" D100 D100 D50 "DDDDDD",
         "exceeds 255"),
    /* active state */
    CASE("PING without its TTL", R, M_NULL, PREFIX "\x04\x05\x04PING", "TTL is missing"),
    CASE("PING with one TTL byte", R, M_NULL, PREFIX "\x04\x06\x04PING\x00", "TTL is missing"),
    CASE("active command name past the body", R, M_NULL, PREFIX "\x04\x03\x09SU", "exceeds"),
    CASE("active empty command", R, M_NULL, PREFIX "\x04\x00", "empty body"),
    CASE("active reserved flag 0x10", R, M_NULL, PREFIX "\x10\x00", "reserved"),
    CASE("active COMMAND|MORE", R, M_NULL, PREFIX "\x05\x05\x04PING", "MORE on a command"),
    CASE("active 64-bit size all ones", R, M_NULL, PREFIX "\x02\xff\xff\xff\xff\xff\xff\xff\xff",
         "high bit"),
    CASE("active frame of 2^40 bytes", R, M_NULL, PREFIX "\x02\0\0\x01\0\0\0\0\0", "message limit"),
    CASE_LIM("active frame past ZMQ_MAXMSGSIZE 64", {.max_frame_size = 64}, PREFIX "\x00\x41",
             "ZMQ_MAXMSGSIZE"),
    CASE_LIM("active message past 2 frames", {.max_msg_frames = 2},
             PREFIX "\x01\x00\x01\x00\x00\x00", "more than 2 frames"),
    CASE_LIM("active message past 4 bytes", {.max_msg_size = 4},
             PREFIX "\x01\x03"
                    "abc\x00\x02"
                    "de",
             "message limit"),
    /* PLAIN server */
    CASE("PLAIN HELLO with oversize username", R, M_PLAIN_SERVER,
         G_PLAIN_C "\x04\x0a\x05HELLO\xc8"
                   "abc",
         "username length 200"),
    CASE("PLAIN HELLO password length past the end", R, M_PLAIN_SERVER,
         G_PLAIN_C "\x04\x0d\x05HELLO\x02"
                   "ab\x05"
                   "abc",
         "password length 5"),
    CASE("PLAIN HELLO trailing byte", R, M_PLAIN_SERVER,
         G_PLAIN_C "\x04\x14\x05HELLO\x05"
                   "admin\x06secretX",
         "password length 6"),
    CASE("PLAIN HELLO without data", R, M_PLAIN_SERVER, G_PLAIN_C "\x04\x06\x05HELLO",
         "username length"),
    CASE("PLAIN INITIATE before HELLO", R, M_PLAIN_SERVER, G_PLAIN_C INITIATE_DEALER,
         "unexpected \"INITIATE\""),
    CASE("PLAIN data before the handshake", R, M_PLAIN_SERVER, G_PLAIN_C "\x00\x01x",
         "before the handshake"),
    CASE("PLAIN INITIATE with incompatible type", R, M_PLAIN_SERVER,
         G_PLAIN_C HELLO_ADMIN "\x04\x1c\x08INITIATE\x0bSocket-Type\0\0\0\x03PUB", "cannot talk"),
    /* PLAIN client */
    CASE("PLAIN WELCOME twice", MCQ_ZMTP_DEALER, M_PLAIN_CLIENT, G_PLAIN_S WELCOME WELCOME,
         "unexpected \"WELCOME\""),
    CASE("PLAIN WELCOME frame carrying a byte", MCQ_ZMTP_DEALER, M_PLAIN_CLIENT,
         G_PLAIN_S "\x04\x09\x07WELCOMEx", "carries 1 data bytes"),
    CASE("PLAIN READY before WELCOME", MCQ_ZMTP_DEALER, M_PLAIN_CLIENT, G_PLAIN_S READY_ROUTER,
         "unexpected \"READY\""),
    CASE("PLAIN HELLO sent to a client", MCQ_ZMTP_DEALER, M_PLAIN_CLIENT, G_PLAIN_S HELLO_ADMIN,
         "unexpected \"HELLO\""),
};
#define NCASES (sizeof(cases) / sizeof(cases[0]))

static const struct mcq_zmtp_plain_credentials creds = {.username = (const uint8_t *)"u",
                                                        .username_len = 1,
                                                        .password = (const uint8_t *)"p",
                                                        .password_len = 1};

/* Runs one case with the input cut at `cuts`; returns the error and its reason. */
static int run_case(const struct bad_case *c, const size_t *cuts, size_t ncuts, char *reason,
                    struct guard *g)
{
    static struct peer p;
    peer_setup(&p, c->type);
    p.cfg.limits = c->limits;
    if (c->mech == M_PLAIN_SERVER) {
        p.cfg.mechanism = &mcq_zmtp_mech_plain_server;
        p.auth_status = 200;
    } else if (c->mech == M_PLAIN_CLIENT) {
        p.cfg.mechanism = &mcq_zmtp_mech_plain_client;
        p.cfg.mechanism_arg = &creds;
    }
    peer_start(&p, T0);
    size_t start = 0;
    for (size_t i = 0; i <= ncuts && !p.log.err; i++) {
        size_t end = i < ncuts ? cuts[i] : c->len;
        feed(&p.s, &p.ca, guard_place(g, c->in + start, end - start), end - start, T0, &p.out,
             &p.log, p.auth_status);
        p.out.len = 0;
        start = end;
    }
    int err = p.log.err;
    snprintf(reason, MCQ_ZMTP_REASON_LEN, "%s", p.log.reason);
    peer_release(&p);
    return err;
}

Test(session_malformed, table_has_at_least_40_cases)
{
    cr_assert_geq(NCASES, 40);
}

Test(session_malformed, each_case_fails_with_eproto_and_a_reason_naming_the_byte)
{
    struct guard g;
    guard_init(&g, 4096);
    for (size_t i = 0; i < NCASES; i++) {
        const struct bad_case *c = &cases[i];
        char why[MCQ_ZMTP_REASON_LEN];
        int rc = run_case(c, NULL, 0, why, &g);
        cr_assert_eq(rc, -EPROTO, "case \"%s\": rc %d (%s)", c->name, rc, why);
        cr_assert(strstr(why, c->why), "case \"%s\": reason \"%s\" lacks \"%s\"", c->name, why,
                  c->why);
        cr_assert(strstr(why, "byte"), "case \"%s\": reason \"%s\" names no byte", c->name, why);
    }
    guard_fini(&g);
}

Test(session_malformed, each_case_fails_the_same_way_at_every_split)
{
    struct guard g;
    guard_init(&g, 4096);
    for (size_t i = 0; i < NCASES; i++) {
        const struct bad_case *c = &cases[i];
        char want[MCQ_ZMTP_REASON_LEN], got[MCQ_ZMTP_REASON_LEN];
        cr_assert_eq(run_case(c, NULL, 0, want, &g), -EPROTO);
        for (size_t cut = 0; cut <= c->len; cut++) {
            cr_assert_eq(run_case(c, &cut, 1, got, &g), -EPROTO, "case \"%s\" cut %zu", c->name,
                         cut);
            cr_assert_str_eq(got, want, "case \"%s\" cut %zu", c->name, cut);
        }
        size_t cuts[1024];
        cr_assert_leq(c->len, sizeof(cuts) / sizeof(cuts[0]));
        for (size_t k = 0; k + 1 < c->len; k++)
            cuts[k] = k + 1;
        cr_assert_eq(run_case(c, cuts, c->len ? c->len - 1 : 0, got, &g), -EPROTO,
                     "case \"%s\" byte by byte", c->name);
        cr_assert_str_eq(got, want, "case \"%s\" byte by byte", c->name);
    }
    guard_fini(&g);
}
