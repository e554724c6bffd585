#include "zmtp/helpers.h"

#include "zmtp/metadata.h"

Test(metadata, socket_type_names_round_trip)
{
    for (int t = 0; t < MCQ_ZMTP_SOCKET_TYPE_COUNT; t++) {
        const char *n = mcq_zmtp_socket_type_name(t);
        cr_assert(n);
        cr_assert_eq(mcq_zmtp_socket_type_parse((const uint8_t *)n, strlen(n)), t);
    }
    cr_assert_null(mcq_zmtp_socket_type_name(-1));
    cr_assert_null(mcq_zmtp_socket_type_name(MCQ_ZMTP_SOCKET_TYPE_COUNT));
    cr_assert_eq(mcq_zmtp_socket_type_parse((const uint8_t *)"dealer", 6), -EINVAL);
    cr_assert_eq(mcq_zmtp_socket_type_parse((const uint8_t *)"DEALE", 5), -EINVAL);
    cr_assert_eq(mcq_zmtp_socket_type_parse((const uint8_t *)"CLIENT", 6), -EINVAL);
}

/* zmtp.md §3, libzmq mechanism_t::check_socket_type. */
Test(metadata, compatibility_table_matches_libzmq)
{
    static const char *const ok[] = {
        "REQ REP",       "REQ ROUTER",    "REP REQ",    "REP DEALER",    "DEALER REP",
        "DEALER DEALER", "DEALER ROUTER", "ROUTER REQ", "ROUTER DEALER", "ROUTER ROUTER",
        "PUB SUB",       "PUB XSUB",      "XPUB SUB",   "XPUB XSUB",     "SUB PUB",
        "SUB XPUB",      "XSUB PUB",      "XSUB XPUB",  "PUSH PULL",     "PULL PUSH",
        "PAIR PAIR",
    };
    int allowed = 0;
    for (int a = 0; a < MCQ_ZMTP_SOCKET_TYPE_COUNT; a++)
        for (int b = 0; b < MCQ_ZMTP_SOCKET_TYPE_COUNT; b++) {
            char pair[32];
            snprintf(pair, sizeof(pair), "%s %s", mcq_zmtp_socket_type_name(a),
                     mcq_zmtp_socket_type_name(b));
            bool want = false;
            for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
                want |= strcmp(ok[i], pair) == 0;
            cr_assert_eq(mcq_zmtp_socket_types_compatible(a, b), want, "%s", pair);
            allowed += want;
        }
    cr_assert_eq(allowed, 21);
    cr_assert_not(mcq_zmtp_socket_types_compatible(-1, 0));
}

#define S(lit) (const uint8_t *)(lit), sizeof(lit) - 1

Test(metadata, iterates_properties)
{
    const uint8_t *d;
    size_t len;
    static const char m[] = "\x0bSocket-Type\0\0\0\x03SUB\x05X-Foo\0\0\0\0";
    d = (const uint8_t *)m;
    len = sizeof(m) - 1;
    size_t pos = 0;
    struct mcq_zmtp_property p;
    cr_assert_eq(mcq_zmtp_metadata_next(d, len, &pos, &p, NULL, 0), 1);
    cr_assert(p.name_len == 11 && p.value_len == 3 && !memcmp(p.value, "SUB", 3));
    cr_assert_eq(mcq_zmtp_metadata_next(d, len, &pos, &p, NULL, 0), 1);
    cr_assert(p.name_len == 5 && p.value_len == 0);
    cr_assert_eq(mcq_zmtp_metadata_next(d, len, &pos, &p, NULL, 0), 0);
    cr_assert_eq(mcq_zmtp_metadata_find(d, len, "socket-type", &p), 1);
    cr_assert_eq(mcq_zmtp_metadata_find(d, len, "Identity", &p), 0);
}

static int parse_all(const uint8_t *src, size_t len, char *why)
{
    struct guard g;
    guard_init(&g, len);
    const uint8_t *d = guard_place(&g, src, len);
    size_t pos = 0;
    struct mcq_zmtp_property p;
    int rc;
    while ((rc = mcq_zmtp_metadata_next(d, len, &pos, &p, why, MCQ_ZMTP_REASON_LEN)) == 1)
        ;
    guard_fini(&g);
    return rc;
}

Test(metadata, truncations_are_refused_at_every_length)
{
    static const char m[] = "\x0bSocket-Type\0\0\0\x03SUB";
    char why[MCQ_ZMTP_REASON_LEN];
    cr_assert_eq(parse_all((const uint8_t *)m, sizeof(m) - 1, why), 0);
    for (size_t n = 1; n < sizeof(m) - 1; n++)
        cr_assert_eq(parse_all((const uint8_t *)m, n, why), -EPROTO, "length %zu", n);
}

Test(metadata, zero_name_and_huge_value_length_are_refused)
{
    char why[MCQ_ZMTP_REASON_LEN];
    cr_assert_eq(parse_all(S("\x00\0\0\0\0"), why), -EPROTO);
    cr_assert(strstr(why, "name length is 0"), "%s", why);
    cr_assert_eq(parse_all(S("\x01X\xff\xff\xff\xff"), why), -EPROTO);
    cr_assert(strstr(why, "4294967295"), "%s", why);
}

Test(metadata, command_parse_splits_name_and_data)
{
    struct mcq_zmtp_command c;
    char why[MCQ_ZMTP_REASON_LEN];
    cr_assert_eq(mcq_zmtp_command_parse(S("\x04PINGxy"), &c, why, sizeof(why)), 0);
    cr_assert(mcq_zmtp_command_is(&c, "PING"));
    cr_assert_not(mcq_zmtp_command_is(&c, "PIN"));
    cr_assert(c.len == 2 && c.data[0] == 'x');
    cr_assert_eq(mcq_zmtp_command_parse(S(""), &c, why, sizeof(why)), -EPROTO);
    cr_assert_eq(mcq_zmtp_command_parse(S("\x00"), &c, why, sizeof(why)), -EPROTO);
    cr_assert_eq(mcq_zmtp_command_parse(S("\x05PING"), &c, why, sizeof(why)), -EPROTO);
}

Test(metadata, printable_masks_and_cuts_peer_bytes)
{
    char out[8];
    mcq_zmtp_printable((const uint8_t *)"AB\x01\xff", 4, out, sizeof(out));
    cr_assert_str_eq(out, "AB??");
    mcq_zmtp_printable((const uint8_t *)"0123456789", 10, out, sizeof(out));
    cr_assert_str_eq(out, "0123...");
    mcq_zmtp_printable((const uint8_t *)"0123456", 7, out, sizeof(out));
    cr_assert_str_eq(out, "0123456");
    mcq_zmtp_printable((const uint8_t *)"abc", 3, out, 3);
    cr_assert_str_eq(out, "ab");
}
