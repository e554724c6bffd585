#include "zmtp/decoder.h"

#include <stdio.h>
#include <string.h>

enum {
    ST_BOUNDARY = 0, /* next byte starts a frame */
    ST_HEADER,       /* part of a header is in _hdr */
    ST_BODY,         /* reassembling a split body into _buf */
    ST_DEAD,         /* a violation happened; stays failed */
};

#define LONG_SIZE_BYTES 8
#define SIZE_HIGH_BIT (1ull << 63)

void mcq_zmtp_decoder_init(struct mcq_zmtp_decoder *d, const struct mcq_zmtp_limits *limits,
                           const struct mcq_zmtp_allocator *alloc, uint64_t stream_offset)
{
    static const struct mcq_zmtp_limits none;
    static const struct mcq_zmtp_allocator no_alloc;
    if (!limits)
        limits = &none;
    memset(d, 0, sizeof(*d));
    d->_max_frame = limits->max_frame_size ? limits->max_frame_size : UINT64_MAX;
    d->_max_msg = limits->max_msg_size ? limits->max_msg_size : MCQ_ZMTP_DEFAULT_MAX_MSG_SIZE;
    d->_max_frames =
        limits->max_msg_frames ? limits->max_msg_frames : MCQ_ZMTP_DEFAULT_MAX_MSG_FRAMES;
    d->_max_cmd =
        limits->max_command_size ? limits->max_command_size : MCQ_ZMTP_DEFAULT_MAX_COMMAND_SIZE;
    d->_alloc = alloc ? *alloc : no_alloc;
    d->_offset = stream_offset;
}

void mcq_zmtp_decoder_reset(struct mcq_zmtp_decoder *d)
{
    if (d->_handle && d->_alloc.release)
        d->_alloc.release(d->_alloc.user, d->_handle);
    d->_handle = NULL;
    d->_buf = NULL;
    d->_state = ST_BOUNDARY;
    d->_hdr_len = 0;
    d->_msg_bytes = 0;
    d->_msg_frames = 0;
}

static int fail(struct mcq_zmtp_decoder *d, int err, size_t off, size_t *consumed)
{
    d->_offset += off;
    *consumed = off;
    d->_state = ST_DEAD;
    return err;
}

/* Checks a complete header h[0..hl) and the limits; sets _flags and _size. */
static int check_header(struct mcq_zmtp_decoder *d, const uint8_t *h)
{
    uint8_t flags = h[0];
    unsigned long long at = (unsigned long long)d->_frame_start;
    uint64_t size;
    if (flags & MCQ_ZMTP_FLAG_LONG) {
        size = 0;
        for (int i = 1; i <= LONG_SIZE_BYTES; i++)
            size = size << 8 | h[i];
        if (size & SIZE_HIGH_BIT) {
            snprintf(d->_reason, sizeof(d->_reason),
                     "byte %llu: 8-byte frame size 0x%016llx has the high bit set "
                     "(sizes are 0..2^63-1)",
                     at + 1, (unsigned long long)size);
            return -EPROTO;
        }
    } else {
        size = h[1];
    }
    if (size > d->_max_frame) {
        snprintf(d->_reason, sizeof(d->_reason),
                 "byte %llu: frame of %llu bytes exceeds the %llu-byte frame limit "
                 "(ZMQ_MAXMSGSIZE)",
                 at + 1, (unsigned long long)size, (unsigned long long)d->_max_frame);
        return -EPROTO;
    }
    if (flags & MCQ_ZMTP_FLAG_COMMAND) {
        if (size > d->_max_cmd) {
            snprintf(d->_reason, sizeof(d->_reason),
                     "byte %llu: command of %llu bytes exceeds the %u-byte command limit", at + 1,
                     (unsigned long long)size, d->_max_cmd);
            return -EPROTO;
        }
    } else {
        if (d->_msg_frames >= d->_max_frames) {
            snprintf(d->_reason, sizeof(d->_reason),
                     "byte %llu: message has more than %u frames (frame limit per message)", at,
                     d->_max_frames);
            return -EPROTO;
        }
        if (size > d->_max_msg - d->_msg_bytes) {
            snprintf(d->_reason, sizeof(d->_reason),
                     "byte %llu: frame of %llu bytes takes the message past the %llu-byte "
                     "message limit",
                     at + 1, (unsigned long long)size, (unsigned long long)d->_max_msg);
            return -EPROTO;
        }
        if (flags & MCQ_ZMTP_FLAG_MORE) {
            d->_msg_frames++;
            d->_msg_bytes += size;
        } else {
            d->_msg_frames = 0;
            d->_msg_bytes = 0;
        }
    }
    if (size > (uint64_t)SIZE_MAX) {
        snprintf(d->_reason, sizeof(d->_reason), "byte %llu: frame size %llu does not fit memory",
                 at + 1, (unsigned long long)size);
        return -EPROTO;
    }
    d->_flags = flags;
    d->_size = size;
    return 0;
}

/* The flags byte alone is enough to refuse reserved bits and COMMAND|MORE. */
static int check_flags(struct mcq_zmtp_decoder *d, uint8_t flags)
{
    if (flags & MCQ_ZMTP_FLAG_RESERVED) {
        snprintf(d->_reason, sizeof(d->_reason),
                 "byte %llu: frame flags 0x%02x set reserved bits 3-7 (must be 0)",
                 (unsigned long long)d->_frame_start, flags);
        return -EPROTO;
    }
    if ((flags & MCQ_ZMTP_FLAG_COMMAND) && (flags & MCQ_ZMTP_FLAG_MORE)) {
        snprintf(d->_reason, sizeof(d->_reason),
                 "byte %llu: frame flags 0x%02x set MORE on a command (commands are single "
                 "frames)",
                 (unsigned long long)d->_frame_start, flags);
        return -EPROTO;
    }
    return 0;
}

int mcq_zmtp_decoder_next_slow(struct mcq_zmtp_decoder *d, const uint8_t *in, size_t len,
                               size_t *consumed, struct mcq_zmtp_frame *f)
{
    size_t off = 0;
    int rc;
    const uint8_t *h;

    switch (d->_state) {
    case ST_DEAD:
        *consumed = 0;
        return -EPROTO;
    case ST_BODY:
        goto body;
    case ST_HEADER:
        goto header_partial;
    default:
        break;
    }

    /* ST_BOUNDARY */
    if (len == 0) {
        *consumed = 0;
        return 0;
    }
    d->_frame_start = d->_offset;
    if ((rc = check_flags(d, in[0])) < 0)
        return fail(d, rc, 0, consumed);
    {
        size_t hl = (in[0] & MCQ_ZMTP_FLAG_LONG) ? MCQ_ZMTP_HEADER_MAX : 2;
        if (len < hl) {
            memcpy(d->_hdr, in, len);
            d->_hdr_len = (uint8_t)len;
            d->_flags = in[0];
            d->_state = ST_HEADER;
            d->_offset += len;
            *consumed = len;
            return 0;
        }
        h = in;
        off = hl;
    }
    goto header_done;

header_partial : {
    size_t hl = (d->_hdr[0] & MCQ_ZMTP_FLAG_LONG) ? MCQ_ZMTP_HEADER_MAX : 2;
    size_t take = hl - d->_hdr_len;
    if (take > len)
        take = len;
    if (take)
        memcpy(d->_hdr + d->_hdr_len, in, take);
    d->_hdr_len += (uint8_t)take;
    off = take;
    if (d->_hdr_len < hl) {
        d->_offset += off;
        *consumed = off;
        return 0;
    }
    d->_hdr_len = 0;
    h = d->_hdr;
}

header_done:
    if ((rc = check_header(d, h)) < 0)
        return fail(d, rc, off, consumed);
    if (d->_size <= len - off) {
        f->data = in + off;
        f->len = (size_t)d->_size;
        f->handle = NULL;
        f->flags = d->_flags & (MCQ_ZMTP_FLAG_MORE | MCQ_ZMTP_FLAG_COMMAND);
        off += (size_t)d->_size;
        d->_state = ST_BOUNDARY;
        d->_offset += off;
        *consumed = off;
        return 1;
    }
    /* Split body: commit memory only now, after every limit check passed. */
    if (!d->_alloc.alloc ||
        !(d->_buf = d->_alloc.alloc(d->_alloc.user, (size_t)d->_size, &d->_handle))) {
        snprintf(d->_reason, sizeof(d->_reason),
                 "byte %llu: no memory to reassemble a %llu-byte frame split across inputs",
                 (unsigned long long)d->_frame_start, (unsigned long long)d->_size);
        d->_handle = NULL;
        return fail(d, -ENOMEM, off, consumed);
    }
    d->_got = 0;
    d->_state = ST_BODY;

body : {
    size_t take = len - off;
    if (take > d->_size - d->_got)
        take = (size_t)(d->_size - d->_got);
    if (take)
        memcpy(d->_buf + d->_got, in + off, take);
    d->_got += take;
    off += take;
    d->_offset += off;
    *consumed = off;
    if (d->_got < d->_size)
        return 0;
    f->data = d->_buf;
    f->len = (size_t)d->_size;
    f->handle = d->_handle;
    f->flags = d->_flags & (MCQ_ZMTP_FLAG_MORE | MCQ_ZMTP_FLAG_COMMAND);
    d->_buf = NULL;
    d->_handle = NULL;
    d->_state = ST_BOUNDARY;
    return 1;
}
}
