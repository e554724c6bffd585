#include "zmtp/helpers.h"

#include "zmtp/greeting.h"

static const uint8_t null_v31[MCQ_ZMTP_GREETING_LEN] = {
    0xFF, 0, 0, 0, 0, 0, 0, 0, 0, 0x7F, 3, 1, 'N', 'U', 'L', 'L',
};

/* libzmq 4.3.4 puts identity length + 1 into the padding (zmtp.md §1, [verified]). */
static const uint8_t libzmq_null[MCQ_ZMTP_GREETING_LEN] = {
    0xFF, 0, 0, 0, 0, 0, 0, 0, 1, 0x7F, 3, 1, 'N', 'U', 'L', 'L',
};

/* What mcq_zmtp_greeting_check said about one (partial) greeting. */
struct verdict {
    int rc;
    struct mcq_zmtp_greeting out;
    char reason[MCQ_ZMTP_REASON_LEN];
};

/* Checks g[0..len) placed right before a guard page, so any read past len faults. */
static struct verdict check(const uint8_t *g, size_t len, const char *mech)
{
    struct verdict v = {0};
    struct guard gd;
    guard_init(&gd, MCQ_ZMTP_GREETING_LEN);
    v.rc = mcq_zmtp_greeting_check(guard_place(&gd, g, len), len, mech, &v.out, v.reason,
                                   sizeof(v.reason));
    guard_fini(&gd);
    return v;
}

Test(greeting, build_null_is_64_bytes_minor_1)
{
    uint8_t g[MCQ_ZMTP_GREETING_LEN];
    cr_assert_eq(mcq_zmtp_greeting_build(g, "NULL", false, 1), MCQ_ZMTP_GREETING_LEN);
    cr_assert_arr_eq(g, null_v31, sizeof(g));
}

Test(greeting, build_plain_server_sets_as_server_and_minor_0)
{
    uint8_t g[MCQ_ZMTP_GREETING_LEN];
    cr_assert_eq(mcq_zmtp_greeting_build(g, "PLAIN", true, 0), MCQ_ZMTP_GREETING_LEN);
    cr_assert_eq(g[11], 0);
    cr_assert_eq(memcmp(g + 12, "PLAIN\0\0\0", 8), 0);
    cr_assert_eq(g[32], 1);
    for (int i = 33; i < 64; i++)
        cr_assert_eq(g[i], 0);
}

Test(greeting, build_rejects_bad_mechanism_names)
{
    uint8_t g[MCQ_ZMTP_GREETING_LEN];
    cr_assert_eq(mcq_zmtp_greeting_build(g, "", false, 1), -EINVAL);
    cr_assert_eq(mcq_zmtp_greeting_build(g, "ABCDEFGHIJKLMNOPQRSTU", false, 1), -EINVAL);
}

Test(greeting, accepts_libzmq_padding_and_reports_version)
{
    struct verdict v = check(libzmq_null, 64, "NULL");
    cr_assert_eq(v.rc, 0);
    cr_assert_eq(v.out.major, 3);
    cr_assert_eq(v.out.minor, 1);
    cr_assert_str_eq(v.out.mechanism, "NULL");
    cr_assert_not(v.out.as_server);
}

Test(greeting, ignores_as_server_and_filler)
{
    uint8_t g[64];
    memcpy(g, null_v31, 64);
    g[32] = 0x55;
    g[40] = 0xAA;
    struct verdict v = check(g, 64, "NULL");
    cr_assert_eq(v.rc, 0);
    cr_assert(v.out.as_server);
}

Test(greeting, higher_major_speaks_31)
{
    uint8_t g[64];
    memcpy(g, null_v31, 64);
    g[10] = 4;
    g[11] = 7;
    struct verdict v = check(g, 64, "NULL");
    cr_assert_eq(v.rc, 0);
    cr_assert_eq(v.out.minor, 1);
}

Test(greeting, refuses_bad_signature_at_first_byte)
{
    uint8_t g[1] = {0x01};
    struct verdict v = check(g, 1, "NULL");
    cr_assert_eq(v.rc, -EPROTO);
    cr_assert(strstr(v.reason, "byte 0"), "%s", v.reason);
}

Test(greeting, refuses_unversioned_peer_at_byte_9)
{
    uint8_t g[10];
    memcpy(g, null_v31, 10);
    g[9] = 0x7E;
    cr_assert_eq(check(g, 9, "NULL").rc, 0);
    struct verdict v = check(g, 10, "NULL");
    cr_assert_eq(v.rc, -EPROTO);
    cr_assert(strstr(v.reason, "byte 9"), "%s", v.reason);
}

Test(greeting, refuses_zmtp2_as_soon_as_byte_10_arrives)
{
    uint8_t g[11];
    memcpy(g, null_v31, 11);
    g[10] = 1;
    struct verdict v = check(g, 11, "NULL");
    cr_assert_eq(v.rc, -EPROTO);
    cr_assert(strstr(v.reason, "byte 10") && strstr(v.reason, "major version 1"), "%s", v.reason);
}

Test(greeting, refuses_mechanism_mismatch_with_both_names)
{
    struct verdict v = check(null_v31, 64, "PLAIN");
    cr_assert_eq(v.rc, -EPROTO);
    cr_assert(strstr(v.reason, "\"NULL\"") && strstr(v.reason, "\"PLAIN\""), "%s", v.reason);
}

Test(greeting, every_prefix_of_a_good_greeting_is_acceptable)
{
    for (size_t n = 0; n <= 64; n++)
        cr_assert_eq(check(libzmq_null, n, "NULL").rc, 0, "prefix %zu", n);
}
