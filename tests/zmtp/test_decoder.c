#include "zmtp/helpers.h"

#include "zmtp/decoder.h"
#include "zmtp/encoder.h"

/* Every test feeds inputs that end at a PROT_NONE guard page. */

struct dec_fixture {
    struct mcq_zmtp_decoder d;
    struct counting_alloc ca;
    struct mcq_zmtp_allocator alloc;
    struct guard g;
};

static void fixture(struct dec_fixture *f, const struct mcq_zmtp_limits *lim, size_t max_in)
{
    memset(f, 0, sizeof(*f));
    f->alloc = ca_allocator(&f->ca);
    mcq_zmtp_decoder_init(&f->d, lim, &f->alloc, 0);
    guard_init(&f->g, max_in);
}

static void fixture_fini(struct dec_fixture *f)
{
    mcq_zmtp_decoder_reset(&f->d);
    guard_fini(&f->g);
    cr_assert_eq(f->ca.allocs, f->ca.releases);
}

/* One decoded frame, copied. */
struct dframe {
    uint8_t flags;
    size_t len;
    uint8_t data[4096];
};

/* Decodes in[0..len) split into pieces at the given cut points; returns frames or error. */
static int decode_split(struct dec_fixture *f, const uint8_t *in, size_t len, const size_t *cuts,
                        size_t ncuts, struct dframe *out, size_t *nout)
{
    size_t start = 0;
    *nout = 0;
    for (size_t c = 0; c <= ncuts; c++) {
        size_t end = c < ncuts ? cuts[c] : len;
        const uint8_t *p = guard_place(&f->g, in + start, end - start);
        size_t off = 0, n = end - start;
        for (;;) {
            size_t used;
            struct mcq_zmtp_frame fr;
            int rc = mcq_zmtp_decoder_next(&f->d, p + off, n - off, &used, &fr);
            cr_assert_leq(used, n - off);
            off += used;
            if (rc < 0)
                return rc;
            if (rc == 0) {
                cr_assert_eq(off, n);
                break;
            }
            struct dframe *o = &out[(*nout)++];
            o->flags = fr.flags;
            o->len = fr.len;
            cr_assert_leq(fr.len, sizeof(o->data));
            if (fr.len)
                memcpy(o->data, fr.data, fr.len);
            if (fr.handle)
                ca_release(&f->ca, fr.handle);
            else if (fr.len)
                cr_assert(fr.data >= p && fr.data + fr.len <= p + n, "not a view into input");
        }
        start = end;
    }
    return 0;
}

static const uint8_t stream[] = {
    0x00, 0x00,                                            /* empty frame */
    0x01, 0x03, 'a',  'b', 'c',                            /* MORE */
    0x03, 0,    0,    0,   0,   0,   0,   0, 2, 'd',  'e', /* LONG form with small size, MORE */
    0x00, 0x01, 'f',                                       /* last */
    0x04, 0x05, 0x04, 'P', 'I', 'N', 'G',                  /* command (short) */
    0x06, 0,    0,    0,   0,   0,   0,   0, 1, 0x00,      /* command (long) */
};

static void assert_stream_frames(const struct dframe *fr, size_t n)
{
    cr_assert_eq(n, 6);
    cr_assert(fr[0].flags == 0 && fr[0].len == 0);
    cr_assert(fr[1].flags == MCQ_ZMTP_FLAG_MORE && fr[1].len == 3 && !memcmp(fr[1].data, "abc", 3));
    cr_assert(fr[2].flags == MCQ_ZMTP_FLAG_MORE && fr[2].len == 2 && !memcmp(fr[2].data, "de", 2));
    cr_assert(fr[3].flags == 0 && fr[3].len == 1 && fr[3].data[0] == 'f');
    cr_assert(fr[4].flags == MCQ_ZMTP_FLAG_COMMAND && fr[4].len == 5);
    cr_assert(fr[5].flags == MCQ_ZMTP_FLAG_COMMAND && fr[5].len == 1);
}

Test(decoder, whole_input_is_zero_copy_without_allocation)
{
    struct dec_fixture f;
    fixture(&f, NULL, sizeof(stream));
    struct dframe fr[16];
    size_t n;
    cr_assert_eq(decode_split(&f, stream, sizeof(stream), NULL, 0, fr, &n), 0);
    assert_stream_frames(fr, n);
    cr_assert_eq(f.ca.allocs, 0);
    fixture_fini(&f);
}

Test(decoder, every_single_split_gives_the_same_frames)
{
    for (size_t cut = 0; cut <= sizeof(stream); cut++) {
        struct dec_fixture f;
        fixture(&f, NULL, sizeof(stream));
        struct dframe fr[16];
        size_t n;
        cr_assert_eq(decode_split(&f, stream, sizeof(stream), &cut, 1, fr, &n), 0);
        assert_stream_frames(fr, n);
        fixture_fini(&f);
    }
}

Test(decoder, every_pair_of_splits_and_byte_by_byte_give_the_same_frames)
{
    for (size_t a = 0; a <= sizeof(stream); a++)
        for (size_t b = a; b <= sizeof(stream); b++) {
            struct dec_fixture f;
            fixture(&f, NULL, sizeof(stream));
            size_t cuts[2] = {a, b};
            struct dframe fr[16];
            size_t n;
            cr_assert_eq(decode_split(&f, stream, sizeof(stream), cuts, 2, fr, &n), 0);
            assert_stream_frames(fr, n);
            fixture_fini(&f);
        }
    struct dec_fixture f;
    fixture(&f, NULL, sizeof(stream));
    size_t cuts[sizeof(stream)];
    for (size_t i = 0; i < sizeof(stream); i++)
        cuts[i] = i;
    struct dframe fr[16];
    size_t n;
    cr_assert_eq(decode_split(&f, stream, sizeof(stream), cuts, sizeof(stream), fr, &n), 0);
    assert_stream_frames(fr, n);
    fixture_fini(&f);
}

Test(decoder, split_body_is_reassembled_in_one_allocation_of_the_frame_size)
{
    static uint8_t in[2 + 9 + 1000];
    size_t h = mcq_zmtp_frame_header(in, 0, 1000);
    for (int i = 0; i < 1000; i++)
        in[h + i] = (uint8_t)i;
    struct dec_fixture f;
    fixture(&f, NULL, sizeof(in));
    size_t cuts[3] = {h + 10, h + 500, h + 999};
    struct dframe fr[4];
    size_t n;
    cr_assert_eq(decode_split(&f, in, h + 1000, cuts, 3, fr, &n), 0);
    cr_assert_eq(n, 1);
    cr_assert_eq(fr[0].len, 1000);
    cr_assert_eq(memcmp(fr[0].data, in + h, 1000), 0);
    cr_assert_eq(f.ca.allocs, 1);
    cr_assert_eq(f.ca.largest, 1000);
    fixture_fini(&f);
}

static int decode_one(const uint8_t *in, size_t len, const struct mcq_zmtp_limits *lim,
                      char *reason, struct counting_alloc *ca_out)
{
    struct dec_fixture f;
    fixture(&f, lim, len);
    struct dframe fr[8];
    size_t n;
    int rc = decode_split(&f, in, len, NULL, 0, fr, &n);
    snprintf(reason, MCQ_ZMTP_REASON_LEN, "%s", mcq_zmtp_decoder_reason(&f.d));
    if (ca_out)
        *ca_out = f.ca;
    fixture_fini(&f);
    return rc;
}

Test(decoder, reserved_flag_bits_are_refused)
{
    char why[MCQ_ZMTP_REASON_LEN];
    for (unsigned bit = 3; bit < 8; bit++) {
        uint8_t in[] = {(uint8_t)(1u << bit), 2, 'o', 'k'};
        cr_assert_eq(decode_one(in, sizeof(in), NULL, why, NULL), -EPROTO);
        cr_assert(strstr(why, "reserved"), "%s", why);
    }
}

Test(decoder, command_with_more_is_refused)
{
    char why[MCQ_ZMTP_REASON_LEN];
    uint8_t in[] = {0x00, 0x00, 0x05, 0x01, 'x'};
    cr_assert_eq(decode_one(in, sizeof(in), NULL, why, NULL), -EPROTO);
    cr_assert(strstr(why, "byte 2") && strstr(why, "MORE on a command"), "%s", why);
}

Test(decoder, long_size_with_high_bit_is_refused_before_allocating)
{
    char why[MCQ_ZMTP_REASON_LEN];
    struct counting_alloc ca;
    uint8_t in[] = {0x02, 0x80, 0, 0, 0, 0, 0, 0, 1, 'x'};
    struct mcq_zmtp_limits unlimited = {.max_msg_size = UINT64_MAX};
    cr_assert_eq(decode_one(in, sizeof(in), &unlimited, why, &ca), -EPROTO);
    cr_assert(strstr(why, "high bit"), "%s", why);
    cr_assert_eq(ca.allocs, 0);
}

Test(decoder, maxmsgsize_is_per_frame_40_passes_41_fails)
{
    char why[MCQ_ZMTP_REASON_LEN];
    struct mcq_zmtp_limits lim = {.max_frame_size = 40};
    uint8_t in[2 + 41] = {0x00, 40};
    cr_assert_eq(decode_one(in, 42, &lim, why, NULL), 0);
    in[1] = 41;
    cr_assert_eq(decode_one(in, 43, &lim, why, NULL), -EPROTO);
    cr_assert(strstr(why, "ZMQ_MAXMSGSIZE"), "%s", why);
    /* commands count too (libzmq killed the connection at READY with a limit of 4) */
    uint8_t cmd[] = {0x04, 5, 4, 'P', 'I', 'N', 'G'};
    lim.max_frame_size = 4;
    cr_assert_eq(decode_one(cmd, sizeof(cmd), &lim, why, NULL), -EPROTO);
}

Test(decoder, huge_length_past_limit_commits_no_memory)
{
    char why[MCQ_ZMTP_REASON_LEN];
    struct counting_alloc ca;
    uint8_t in[] = {0x02, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 'x'}; /* 2^40 bytes */
    cr_assert_eq(decode_one(in, sizeof(in), NULL, why, &ca), -EPROTO);
    cr_assert(strstr(why, "message limit"), "%s", why);
    cr_assert_eq(ca.allocs, 0);
}

Test(decoder, frames_per_message_limit)
{
    char why[MCQ_ZMTP_REASON_LEN];
    struct mcq_zmtp_limits lim = {.max_msg_frames = 3};
    uint8_t ok[] = {1, 0, 1, 0, 0, 0, 1, 0, 1, 0, 0, 0};
    cr_assert_eq(decode_one(ok, sizeof(ok), &lim, why, NULL), 0);
    uint8_t bad[] = {1, 0, 1, 0, 1, 0, 0, 0};
    cr_assert_eq(decode_one(bad, sizeof(bad), &lim, why, NULL), -EPROTO);
    cr_assert(strstr(why, "byte 6") && strstr(why, "more than 3 frames"), "%s", why);
}

Test(decoder, total_bytes_per_message_limit)
{
    char why[MCQ_ZMTP_REASON_LEN];
    struct mcq_zmtp_limits lim = {.max_msg_size = 5};
    uint8_t ok[] = {1, 2, 'a', 'b', 0, 3, 'c', 'd', 'e', 0, 5, 1, 2, 3, 4, 5};
    cr_assert_eq(decode_one(ok, sizeof(ok), &lim, why, NULL), 0);
    uint8_t bad[] = {1, 3, 'a', 'b', 'c', 0, 3, 'c', 'd', 'e'};
    cr_assert_eq(decode_one(bad, sizeof(bad), &lim, why, NULL), -EPROTO);
}

Test(decoder, command_size_limit)
{
    char why[MCQ_ZMTP_REASON_LEN];
    struct mcq_zmtp_limits lim = {.max_command_size = 4};
    uint8_t in[] = {0x04, 5, 4, 'P', 'I', 'N', 'G'};
    cr_assert_eq(decode_one(in, sizeof(in), &lim, why, NULL), -EPROTO);
    cr_assert(strstr(why, "command limit"), "%s", why);
}

Test(decoder, allocator_failure_is_enomem_and_sticky)
{
    struct dec_fixture f;
    fixture(&f, NULL, 64);
    f.ca.fail = true;
    uint8_t in[] = {0x00, 10, 'a'};
    const uint8_t *p = guard_place(&f.g, in, sizeof(in));
    size_t used;
    struct mcq_zmtp_frame fr;
    cr_assert_eq(mcq_zmtp_decoder_next(&f.d, p, sizeof(in), &used, &fr), -ENOMEM);
    cr_assert_eq(mcq_zmtp_decoder_next(&f.d, p, sizeof(in), &used, &fr), -EPROTO);
    cr_assert_eq(used, 0);
    fixture_fini(&f);
}

Test(decoder, reset_gives_back_a_half_reassembled_frame)
{
    struct dec_fixture f;
    fixture(&f, NULL, 64);
    uint8_t in[] = {0x00, 10, 'a'};
    const uint8_t *p = guard_place(&f.g, in, sizeof(in));
    size_t used;
    struct mcq_zmtp_frame fr;
    cr_assert_eq(mcq_zmtp_decoder_next(&f.d, p, sizeof(in), &used, &fr), 0);
    cr_assert_eq(f.ca.allocs, 1);
    mcq_zmtp_decoder_reset(&f.d);
    cr_assert_eq(f.ca.releases, 1);
    fixture_fini(&f);
}

Test(decoder, next_is_command_peeks_without_consuming)
{
    struct dec_fixture f;
    fixture(&f, NULL, 64);
    uint8_t in[] = {0x04, 5, 4, 'P'};
    cr_assert(mcq_zmtp_decoder_next_is_command(&f.d, in, sizeof(in)));
    cr_assert_not(mcq_zmtp_decoder_next_is_command(&f.d, (const uint8_t *)"\0", 1));
    size_t used;
    struct mcq_zmtp_frame fr;
    cr_assert_eq(mcq_zmtp_decoder_next(&f.d, guard_place(&f.g, in, 1), 1, &used, &fr), 0);
    cr_assert(mcq_zmtp_decoder_next_is_command(&f.d, NULL, 0));
    fixture_fini(&f);
}

Test(decoder, long_frames_whole_in_input_are_views_and_respect_limits)
{
    static uint8_t in[2 * (9 + 4096)];
    size_t h = mcq_zmtp_frame_header(in, MCQ_ZMTP_FLAG_MORE, 4096);
    memset(in + h, 'q', 4096);
    size_t h2 = mcq_zmtp_frame_header(in + h + 4096, 0, 4096);
    size_t len = h + 4096 + h2 + 4096;
    struct dec_fixture f;
    fixture(&f, NULL, len);
    const uint8_t *p = guard_place(&f.g, in, len);
    size_t used;
    struct mcq_zmtp_frame fr;
    cr_assert_eq(mcq_zmtp_decoder_next(&f.d, p, len, &used, &fr), 1);
    cr_assert(fr.data == p + 9 && fr.len == 4096 && fr.flags == MCQ_ZMTP_FLAG_MORE && !fr.handle);
    cr_assert_eq(used, 9 + 4096);
    fixture_fini(&f);

    char why[MCQ_ZMTP_REASON_LEN];
    struct mcq_zmtp_limits lim = {.max_msg_size = 8191};
    cr_assert_eq(decode_one(in, len, &lim, why, NULL), -EPROTO);
    cr_assert(strstr(why, "byte 4106") && strstr(why, "message limit"), "%s", why);
    lim = (struct mcq_zmtp_limits){.max_frame_size = 4095};
    cr_assert_eq(decode_one(in, len, &lim, why, NULL), -EPROTO);
    cr_assert(strstr(why, "byte 1:"), "%s", why);
}
