/* ZMTP frame decoder: flags(1) size(1 | 8 BE) body. A frame that lies whole inside the
 * caller's input is returned as a pointer into that input (zero-copy); only a frame split
 * across inputs is reassembled, into memory from the caller's allocator, requested after
 * every limit check so a bogus length never commits memory. No allocation of its own, no
 * I/O. The common case (a data frame whole in the input) is inline. */
#ifndef MCQ_ZMTP_DECODER_H
#define MCQ_ZMTP_DECODER_H

#include "zmtp/greeting.h"

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MCQ_ZMTP_FLAG_MORE 0x01
#define MCQ_ZMTP_FLAG_LONG 0x02
#define MCQ_ZMTP_FLAG_COMMAND 0x04
#define MCQ_ZMTP_FLAG_RESERVED 0xF8
#define MCQ_ZMTP_SHORT_MAX 255 /* largest body in the 1-byte size form */
#define MCQ_ZMTP_HEADER_MAX 9  /* flags + 8-byte size */

#define MCQ_ZMTP_DEFAULT_MAX_MSG_SIZE (256ull << 20)  /* bytes per message */
#define MCQ_ZMTP_DEFAULT_MAX_MSG_FRAMES 8192u         /* frames per message */
#define MCQ_ZMTP_DEFAULT_MAX_COMMAND_SIZE (64u << 10) /* bytes per command body */

/* Zero fields take the defaults above; max_frame_size 0 means "no per-frame limit". */
struct mcq_zmtp_limits {
    uint64_t max_frame_size;   /* ZMQ_MAXMSGSIZE: bytes per frame, commands included */
    uint64_t max_msg_size;     /* total body bytes of one multipart message */
    uint32_t max_msg_frames;   /* frames in one multipart message */
    uint32_t max_command_size; /* bytes of one command body (bounds pre-auth memory) */
};

/* Where reassembly memory comes from. alloc returns `size` writable bytes (size > 0) and
 * sets *handle to the caller's token for them, or returns NULL (the decoder then fails
 * with -ENOMEM). release gives back a handle the decoder still owns (a command buffer
 * after use, a half-filled frame on reset). */
struct mcq_zmtp_allocator {
    void *(*alloc)(void *user, size_t size, void **handle);
    void (*release)(void *user, void *handle);
    void *user;
};

/* One decoded frame. data/len: the body; handle == NULL means data points into the input
 * passed to this call; otherwise data is reassembled memory and the caller now owns
 * handle (give it back with allocator.release when done). flags: MORE and COMMAND only. */
struct mcq_zmtp_frame {
    const uint8_t *data;
    size_t len;
    void *handle;
    uint8_t flags;
};

/* Embeddable; zero it, then mcq_zmtp_decoder_init. Fields starting with _ are private. */
struct mcq_zmtp_decoder {
    uint64_t _max_frame; /* resolved limits */
    uint64_t _max_msg;
    uint32_t _max_frames;
    uint32_t _max_cmd;
    uint64_t _offset;    /* stream bytes consumed so far, to name bytes in reasons */
    uint64_t _msg_bytes; /* of the message in progress */
    uint32_t _msg_frames;
    uint8_t _state; /* 0 = at a frame boundary with nothing buffered */
    uint8_t _hdr_len;
    uint8_t _flags;
    uint8_t _hdr[MCQ_ZMTP_HEADER_MAX];
    uint64_t _frame_start; /* stream offset of the frame being decoded */
    uint64_t _size;
    uint64_t _got;
    uint8_t *_buf;
    void *_handle;
    struct mcq_zmtp_allocator _alloc;
    char _reason[MCQ_ZMTP_REASON_LEN];
};

/* Sets limits (copied; zero fields = defaults) and the allocator (copied). stream_offset
 * is the stream position of the first byte this decoder will see (64 after a greeting). */
void mcq_zmtp_decoder_init(struct mcq_zmtp_decoder *d, const struct mcq_zmtp_limits *limits,
                           const struct mcq_zmtp_allocator *alloc, uint64_t stream_offset);

/* Releases a half-reassembled frame, if any, and returns to a frame boundary with fresh
 * per-message counters (for a new connection: nothing carries over). */
void mcq_zmtp_decoder_reset(struct mcq_zmtp_decoder *d);

/* The reason of the last -EPROTO/-EMSGSIZE/-ENOMEM, NUL-terminated. */
static inline const char *mcq_zmtp_decoder_reason(const struct mcq_zmtp_decoder *d)
{
    return d->_reason;
}

/* Will the next frame to complete be a command? (in: the input about to be passed.)
 * Lets a caller make room for a reply before the command is consumed. */
static inline bool mcq_zmtp_decoder_next_is_command(const struct mcq_zmtp_decoder *d,
                                                    const uint8_t *in, size_t len)
{
    if (d->_state == 0)
        return len > 0 && (in[0] & MCQ_ZMTP_FLAG_COMMAND);
    return (d->_flags & MCQ_ZMTP_FLAG_COMMAND) != 0;
}

/* The out-of-line part of mcq_zmtp_decoder_next (split frames, commands, errors); same
 * contract. Call mcq_zmtp_decoder_next instead. */
int mcq_zmtp_decoder_next_slow(struct mcq_zmtp_decoder *d, const uint8_t *in, size_t len,
                               size_t *consumed, struct mcq_zmtp_frame *f);

/* Decodes at most one frame from in[0..len) (borrowed). Returns 1 with *f filled, 0 when
 * all input was absorbed into a partial frame (need more), -EPROTO for a malformed header
 * or a frame past a limit (libzmq closes with EMSGSIZE there; we report -EPROTO), or
 * -ENOMEM when the allocator failed. *consumed is set in every case; after a negative
 * return the stream is unusable and every later call fails the same way. */
/* Private to mcq_zmtp_decoder_next: delivers a data frame that lies whole in the input
 * once the limits allow it. */
static inline __attribute__((always_inline)) int
mcq_zmtp_decoder_take_(struct mcq_zmtp_decoder *d, const uint8_t *in, size_t len, size_t hl,
                       uint64_t size, size_t *consumed, struct mcq_zmtp_frame *f)
{
    /* size <= len - hl also rules out the high bit: no buffer is 2^63 bytes. */
    if (__builtin_expect(size > len - hl || size > d->_max_frame ||
                             size > d->_max_msg - d->_msg_bytes || d->_msg_frames >= d->_max_frames,
                         0))
        return mcq_zmtp_decoder_next_slow(d, in, len, consumed, f);
    uint8_t more = in[0] & MCQ_ZMTP_FLAG_MORE;
    f->data = in + hl;
    f->len = (size_t)size;
    f->handle = NULL;
    f->flags = more;
    *consumed = hl + (size_t)size;
    d->_offset += hl + size;
    if (more) {
        d->_msg_bytes += size;
        d->_msg_frames++;
    } else {
        d->_msg_bytes = 0;
        d->_msg_frames = 0;
    }
    return 1;
}

static inline int mcq_zmtp_decoder_next(struct mcq_zmtp_decoder *d, const uint8_t *in, size_t len,
                                        size_t *consumed, struct mcq_zmtp_frame *f)
{
    if (__builtin_expect(d->_state == 0 && len >= 2, 1)) {
        uint8_t flags = in[0];
        if (__builtin_expect(flags <= MCQ_ZMTP_FLAG_MORE, 1))
            return mcq_zmtp_decoder_take_(d, in, len, 2, in[1], consumed, f);
        if ((flags & ~MCQ_ZMTP_FLAG_MORE) == MCQ_ZMTP_FLAG_LONG && len >= MCQ_ZMTP_HEADER_MAX) {
            uint64_t size;
            __builtin_memcpy(&size, in + 1, sizeof(size));
            return mcq_zmtp_decoder_take_(d, in, len, MCQ_ZMTP_HEADER_MAX, __builtin_bswap64(size),
                                          consumed, f);
        }
    }
    return mcq_zmtp_decoder_next_slow(d, in, len, consumed, f);
}

#endif
