/* mcq-bench codec: ZMTP frame decode and encode throughput for 64 B, 1 KiB and 64 KiB
 * frames, no I/O. Records {"bench":"decode"|"encode","impl":"mcq","size","ns_per_frame",
 * "gbps", ...} with extra keys saying which path was measured:
 *   decode layer=session: mcq_zmtp_session_next on an active session, input whole in one
 *     buffer (the recv-buffer case: frames are views into it, nothing copied);
 *   decode layer=decoder: the bare frame decoder, same input;
 *   decode layer=decoder-split: the input handed over in 16 KiB pieces (a recv buffer
 *     smaller than the frames), so frames that straddle pieces are reassembled (copied);
 *   encode mode=iovec: header into a small buffer + header/body iovec pair (zero-copy);
 *   encode mode=copy: header + body copied into one contiguous send buffer (what a
 *     coalescing writer does with small frames).
 * gbps is GB/s of frame payload (10^9 bytes per second), the unit of the goals (<= 10 ns per
 * 64 B frame decoded, >= 10 GB/s for 64 KiB frames); allocs_per_frame counts reassembly
 * allocations, which the zero-copy paths must keep at 0. */
#include "bench.h"
#include "zmtp/encoder.h"
#include "zmtp/mechanism.h"
#include "zmtp/session.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

#define STREAM_BYTES (4u << 20)  /* bytes of encoded frames decoded per pass */
#define SPLIT_PIECE (16u << 10)  /* bytes per input piece in the split decode */
#define IOV_BATCH 64             /* frames per vectored send in the iovec encode */
#define RUN_NS 300000000ull      /* target time per measurement */
#define QUICK_RUN_NS 30000000ull /* with --quick */
#define REPEATS 3                /* best of */
#define OUT_CAP 4096             /* session output room (PONGs etc.; none expected here) */

static const size_t frame_sizes[] = {64, 1024, 64 * 1024};

struct bench_alloc {
    uint64_t allocs;
};

static void *bench_alloc_fn(void *user, size_t size, void **handle)
{
    struct bench_alloc *a = user;
    a->allocs++;
    *handle = malloc(size);
    return *handle;
}

static void bench_release_fn(void *user, void *handle)
{
    (void)user;
    free(handle);
}

/* A stream of single-frame messages of `size` bytes, as long as fits STREAM_BYTES (at
 * least one frame). Returns the stream and its frame count. */
static uint8_t *make_stream(size_t size, size_t *len, size_t *frames)
{
    uint8_t hdr[MCQ_ZMTP_HEADER_MAX];
    size_t h = mcq_zmtp_frame_header(hdr, 0, size);
    size_t n = STREAM_BYTES / (h + size);
    if (n == 0)
        n = 1;
    uint8_t *s = malloc(n * (h + size));
    if (!s)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        uint8_t *p = s + i * (h + size);
        memcpy(p, hdr, h);
        memset(p + h, (int)(i & 0xFF), size);
    }
    *len = n * (h + size);
    *frames = n;
    return s;
}

struct result {
    double ns_per_frame;
    double gbps;
    double allocs_per_frame;
};

static void record(const char *bench, const char *key, const char *value, size_t size,
                   const struct result *r)
{
    struct bench_rec *rec = bench_rec_begin(bench, "mcq");
    bench_rec_int(rec, "size", (int64_t)size);
    bench_rec_num(rec, "ns_per_frame", r->ns_per_frame);
    bench_rec_num(rec, "gbps", r->gbps);
    bench_rec_str(rec, key, value);
    bench_rec_num(rec, "allocs_per_frame", r->allocs_per_frame);
    bench_rec_end(rec);
}

/* Turns (frames, bytes, ns) of the best repetition into a result. */
static void finish(struct result *r, uint64_t frames, size_t size, uint64_t ns, uint64_t allocs)
{
    double per = (double)ns / (double)frames;
    if (r->ns_per_frame == 0 || per < r->ns_per_frame) {
        r->ns_per_frame = per;
        r->gbps = (double)size / per; /* bytes per ns = GB/s */
        r->allocs_per_frame = (double)allocs / (double)frames;
    }
}

static volatile uint64_t sink; /* keeps the compiler from dropping the decode work */

/* Bare decoder over the stream, in pieces of `piece` bytes (0 = whole). */
static int decode_pass(const uint8_t *s, size_t len, size_t piece, struct bench_alloc *a,
                       uint64_t *frames)
{
    struct mcq_zmtp_allocator alloc = {
        .alloc = bench_alloc_fn, .release = bench_release_fn, .user = a};
    struct mcq_zmtp_decoder d;
    mcq_zmtp_decoder_init(&d, NULL, &alloc, MCQ_ZMTP_GREETING_LEN);
    uint64_t acc = 0, n = 0;
    for (size_t off = 0; off < len;) {
        size_t plen = piece && piece < len - off ? piece : len - off;
        const uint8_t *in = s + off;
        size_t p = 0;
        while (p < plen) {
            struct mcq_zmtp_frame f;
            size_t used;
            int rc = mcq_zmtp_decoder_next(&d, in + p, plen - p, &used, &f);
            p += used;
            if (rc < 0)
                return rc;
            if (rc == 0)
                break;
            acc += f.len + f.data[0];
            n++;
            if (f.handle)
                bench_release_fn(a, f.handle);
        }
        off += plen;
    }
    sink += acc;
    *frames = n;
    return 0;
}

/* An active NULL session (DEALER talking to a ROUTER), ready to take data frames. */
static int active_session(struct mcq_zmtp_session *s, struct mcq_zmtp_config *cfg,
                          struct mcq_zmtp_out *out)
{
    *cfg = (struct mcq_zmtp_config){.socket_type = MCQ_ZMTP_DEALER};
    int rc = mcq_zmtp_session_init(s, cfg, 0, out);
    if (rc < 0)
        return rc;
    uint8_t peer[MCQ_ZMTP_GREETING_LEN + 64];
    mcq_zmtp_greeting_build(peer, "NULL", false, MCQ_ZMTP_VERSION_MINOR);
    struct mcq_zmtp_metadata_spec m = {.socket_type = MCQ_ZMTP_ROUTER};
    int n = mcq_zmtp_encode_metadata_command(peer + MCQ_ZMTP_GREETING_LEN, 64, "READY", &m);
    if (n < 0)
        return n;
    size_t len = MCQ_ZMTP_GREETING_LEN + (size_t)n, off = 0;
    while (off < len) {
        struct mcq_zmtp_event ev;
        size_t used;
        rc = mcq_zmtp_session_next(s, peer + off, len - off, 0, out, &used, &ev);
        off += used;
        if (rc < 0)
            return rc;
        if (rc == MCQ_ZMTP_EV_READY)
            break;
    }
    out->len = 0;
    return mcq_zmtp_session_state(s) == MCQ_ZMTP_ACTIVE ? 0 : -EPROTO;
}

static int session_pass(struct mcq_zmtp_session *s, struct mcq_zmtp_out *out, const uint8_t *in,
                        size_t len, uint64_t *frames)
{
    uint64_t acc = 0, n = 0;
    for (size_t off = 0; off < len;) {
        struct mcq_zmtp_event ev;
        size_t used;
        int rc = mcq_zmtp_session_next(s, in + off, len - off, 1, out, &used, &ev);
        off += used;
        if (rc < 0)
            return rc;
        if (rc == MCQ_ZMTP_EV_FRAME) {
            acc += ev.len + ev.data[0];
            n++;
        } else if (rc == MCQ_ZMTP_EV_NONE) {
            break;
        }
    }
    sink += acc;
    *frames = n;
    return 0;
}

static int bench_decode(struct bench_ctx *ctx)
{
    uint64_t run_ns = ctx->quick ? QUICK_RUN_NS : RUN_NS;
    for (size_t i = 0; i < sizeof(frame_sizes) / sizeof(frame_sizes[0]); i++) {
        size_t size = frame_sizes[i], len, nframes;
        uint8_t *s = make_stream(size, &len, &nframes);
        if (!s)
            return -ENOMEM;

        struct result whole = {0}, split = {0}, sess = {0};
        for (int rep = 0; rep < REPEATS; rep++) {
            struct bench_alloc a = {0};
            uint64_t frames = 0, t0 = bench_now_ns(), t;
            do {
                uint64_t n;
                int rc = decode_pass(s, len, 0, &a, &n);
                if (rc < 0 || n != nframes) {
                    free(s);
                    return rc < 0 ? rc : -EPROTO;
                }
                frames += n;
            } while ((t = bench_now_ns() - t0) < run_ns);
            finish(&whole, frames, size, t, a.allocs);

            a.allocs = 0;
            frames = 0;
            t0 = bench_now_ns();
            do {
                uint64_t n;
                int rc = decode_pass(s, len, SPLIT_PIECE, &a, &n);
                if (rc < 0 || n != nframes) {
                    free(s);
                    return rc < 0 ? rc : -EPROTO;
                }
                frames += n;
            } while ((t = bench_now_ns() - t0) < run_ns);
            finish(&split, frames, size, t, a.allocs);

            struct mcq_zmtp_session se;
            struct mcq_zmtp_config cfg;
            uint8_t obuf[OUT_CAP];
            struct mcq_zmtp_out out = {.buf = obuf, .len = 0, .cap = sizeof(obuf)};
            int rc = active_session(&se, &cfg, &out);
            if (rc < 0) {
                free(s);
                return rc;
            }
            frames = 0;
            t0 = bench_now_ns();
            do {
                uint64_t n;
                rc = session_pass(&se, &out, s, len, &n);
                if (rc < 0 || n != nframes) {
                    mcq_zmtp_session_release(&se);
                    free(s);
                    return rc < 0 ? rc : -EPROTO;
                }
                frames += n;
            } while ((t = bench_now_ns() - t0) < run_ns);
            finish(&sess, frames, size, t, 0);
            mcq_zmtp_session_release(&se);
        }
        record("decode", "layer", "session", size, &sess);
        record("decode", "layer", "decoder", size, &whole);
        record("decode", "layer", "decoder-split", size, &split);
        free(s);
    }
    return 0;
}

static int bench_encode(struct bench_ctx *ctx)
{
    uint64_t run_ns = ctx->quick ? QUICK_RUN_NS : RUN_NS;
    for (size_t i = 0; i < sizeof(frame_sizes) / sizeof(frame_sizes[0]); i++) {
        size_t size = frame_sizes[i];
        uint8_t *body = malloc(size);
        uint8_t *outbuf = malloc(STREAM_BYTES);
        if (!body || !outbuf) {
            free(body);
            free(outbuf);
            return -ENOMEM;
        }
        memset(body, 'x', size);
        memset(outbuf, 0, STREAM_BYTES);
        size_t per_buf = STREAM_BYTES / (MCQ_ZMTP_HEADER_MAX + size);

        struct result iov_r = {0}, copy_r = {0};
        for (int rep = 0; rep < REPEATS; rep++) {
            static uint8_t hdrs[IOV_BATCH][MCQ_ZMTP_HEADER_MAX];
            struct iovec iov[2 * IOV_BATCH];
            uint64_t frames = 0, acc = 0, t0 = bench_now_ns(), t;
            do {
                for (int k = 0; k < IOV_BATCH; k++) {
                    size_t h = mcq_zmtp_frame_header(hdrs[k], 0, size);
                    iov[2 * k] = (struct iovec){.iov_base = hdrs[k], .iov_len = h};
                    iov[2 * k + 1] = (struct iovec){.iov_base = body, .iov_len = size};
                }
                /* Stand-in for the vectored send: the writer only reads the iovecs. */
                for (int k = 0; k < 2 * IOV_BATCH; k++)
                    acc += iov[k].iov_len + ((const uint8_t *)iov[k].iov_base)[0];
                frames += IOV_BATCH;
            } while ((t = bench_now_ns() - t0) < run_ns);
            sink += acc;
            finish(&iov_r, frames, size, t, 0);

            frames = 0;
            t0 = bench_now_ns();
            do {
                size_t off = 0;
                for (size_t k = 0; k < per_buf; k++) {
                    off += mcq_zmtp_frame_header(outbuf + off, 0, size);
                    memcpy(outbuf + off, body, size);
                    off += size;
                }
                sink += outbuf[off - 1];
                frames += per_buf;
            } while ((t = bench_now_ns() - t0) < run_ns);
            finish(&copy_r, frames, size, t, 0);
        }
        record("encode", "mode", "iovec", size, &iov_r);
        record("encode", "mode", "copy", size, &copy_r);
        free(body);
        free(outbuf);
    }
    return 0;
}

MCQ_BENCH("codec", "decode", bench_decode)
MCQ_BENCH("codec", "encode", bench_encode)
