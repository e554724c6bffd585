/* Frame decoder: input = limits selector, chunk seed, then a frame stream. The stream is
 * decoded twice, whole and in chunks (exactly-sized heap copies), and both runs must give
 * the same frames, the same final status and the same reason: a split at any byte
 * boundary must not change what the peer said. Every frame is checked against the limits
 * and the flag rules; after a failure the decoder stays failed. */
#include "fuzz_util.h"

#include <errno.h>

#define MAX_FRAMES_RECORDED 4096
#define HEADER_BYTES 2 /* selector + chunk seed */

static const uint64_t frame_limits[] = {0, 64, 300, 1};
static const uint64_t msg_limits[] = {0, 128, 1000, 1};
static const uint32_t frames_limits[] = {0, 1, 3, 100};
static const uint32_t command_limits[] = {0, 16, 300, 1};

struct frame_rec {
    uint8_t flags;
    size_t len;
    uint64_t hash;
};

struct run {
    struct frame_rec frames[MAX_FRAMES_RECORDED];
    size_t n;
    int rc; /* 0, or the error that ended the stream */
    char reason[MCQ_ZMTP_REASON_LEN];
};

static uint64_t fnv1a(const uint8_t *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

static void decode(const struct mcq_zmtp_limits *lim, const uint8_t *in, size_t len,
                   uint8_t chunk_seed, struct run *r)
{
    struct fuzz_alloc a = {.cap = FUZZ_ALLOC_CAP};
    struct mcq_zmtp_allocator alloc = fuzz_allocator(&a);
    struct mcq_zmtp_decoder d;
    mcq_zmtp_decoder_init(&d, lim, &alloc, MCQ_ZMTP_GREETING_LEN);
    uint64_t max_frame = lim->max_frame_size ? lim->max_frame_size : UINT64_MAX;
    uint64_t max_msg = lim->max_msg_size ? lim->max_msg_size : MCQ_ZMTP_DEFAULT_MAX_MSG_SIZE;
    uint32_t max_frames =
        lim->max_msg_frames ? lim->max_msg_frames : MCQ_ZMTP_DEFAULT_MAX_MSG_FRAMES;
    uint32_t max_cmd =
        lim->max_command_size ? lim->max_command_size : MCQ_ZMTP_DEFAULT_MAX_COMMAND_SIZE;
    uint64_t msg_bytes = 0, msg_frames = 0;
    struct chunker c;
    chunker_init(&c, chunk_seed);
    memset(r, 0, sizeof(*r));

    size_t off = 0;
    while (off < len && r->rc == 0) {
        size_t n = chunker_next(&c, len - off);
        uint8_t *chunk = fuzz_dup(in + off, n);
        size_t p = 0;
        while (p < n) {
            struct mcq_zmtp_frame f;
            size_t used = SIZE_MAX;
            int rc = mcq_zmtp_decoder_next(&d, chunk + p, n - p, &used, &f);
            FUZZ_CHECK(used <= n - p);
            p += used;
            if (rc < 0) {
                FUZZ_CHECK(rc == -EPROTO || rc == -ENOMEM);
                r->rc = rc;
                snprintf(r->reason, sizeof(r->reason), "%s", mcq_zmtp_decoder_reason(&d));
                FUZZ_CHECK(r->reason[0] != '\0');
                /* Sticky: the stream stays failed. */
                size_t again = SIZE_MAX;
                FUZZ_CHECK(mcq_zmtp_decoder_next(&d, chunk + p, n - p, &again, &f) < 0);
                FUZZ_CHECK(again == 0);
                break;
            }
            if (rc == 0) {
                FUZZ_CHECK(p == n); /* "need more" only once everything was absorbed */
                break;
            }
            FUZZ_CHECK(rc == 1);
            FUZZ_CHECK((f.flags & ~(MCQ_ZMTP_FLAG_MORE | MCQ_ZMTP_FLAG_COMMAND)) == 0);
            FUZZ_CHECK(!((f.flags & MCQ_ZMTP_FLAG_MORE) && (f.flags & MCQ_ZMTP_FLAG_COMMAND)));
            FUZZ_CHECK(f.len <= max_frame);
            if (f.handle == NULL)
                FUZZ_CHECK(f.data >= chunk && f.data + f.len <= chunk + p); /* consumed bytes */
            if (f.flags & MCQ_ZMTP_FLAG_COMMAND) {
                FUZZ_CHECK(f.len <= max_cmd);
            } else {
                msg_bytes += f.len;
                msg_frames++;
                FUZZ_CHECK(msg_bytes <= max_msg);
                FUZZ_CHECK(msg_frames <= max_frames);
                if (!(f.flags & MCQ_ZMTP_FLAG_MORE))
                    msg_bytes = msg_frames = 0;
            }
            if (r->n < MAX_FRAMES_RECORDED)
                r->frames[r->n++] = (struct frame_rec){f.flags, f.len, fnv1a(f.data, f.len)};
            if (f.handle)
                fuzz_release_fn(&a, f.handle);
        }
        free(chunk);
        off += n;
    }
    mcq_zmtp_decoder_reset(&d);
    FUZZ_CHECK(a.live == 0);
}

static struct run whole, chunked;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < HEADER_BYTES)
        return 0;
    uint8_t sel = data[0];
    struct mcq_zmtp_limits lim = {
        .max_frame_size = frame_limits[sel & 3],
        .max_msg_size = msg_limits[(sel >> 2) & 3],
        .max_msg_frames = frames_limits[(sel >> 4) & 3],
        .max_command_size = command_limits[(sel >> 6) & 3],
    };
    /* Seed 0 would make both runs identical: the chunked run then goes byte by byte. */
    uint8_t seed = data[1] ? data[1] : 1;
    const uint8_t *in = data + HEADER_BYTES;
    size_t len = size - HEADER_BYTES;
    decode(&lim, in, len, 0, &whole);
    decode(&lim, in, len, seed, &chunked);
    FUZZ_CHECK(whole.rc == chunked.rc);
    FUZZ_CHECK(strcmp(whole.reason, chunked.reason) == 0);
    FUZZ_CHECK(whole.n == chunked.n);
    for (size_t i = 0; i < whole.n; i++) {
        FUZZ_CHECK(whole.frames[i].flags == chunked.frames[i].flags);
        FUZZ_CHECK(whole.frames[i].len == chunked.frames[i].len);
        FUZZ_CHECK(whole.frames[i].hash == chunked.frames[i].hash);
    }
    return 0;
}
