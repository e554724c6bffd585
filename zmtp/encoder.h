/* ZMTP encoder: frame headers written into small caller buffers so a message goes out as
 * header + body iovecs with no body copy, and builders for every command we send (so
 * recorded libzmq bytes can be compared with ours). Builders write into out[0..cap) and
 * return the byte count, or -ENOBUFS when cap is too small (nothing useful written), or
 * -EINVAL for an argument the wire cannot carry. */
#ifndef MCQ_ZMTP_ENCODER_H
#define MCQ_ZMTP_ENCODER_H

#include "zmtp/decoder.h"
#include "zmtp/metadata.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MCQ_ZMTP_PING_CONTEXT_MAX 16 /* bytes of PING context a PONG echoes (RFC 37) */
#define MCQ_ZMTP_ERROR_REASON_MAX 255
#define MCQ_ZMTP_PLAIN_FIELD_MAX 255 /* bytes of a PLAIN username or password */
/* Largest header before a subscription topic: 04 + 8-byte size + 09 "SUBSCRIBE". */
#define MCQ_ZMTP_SUB_HEADER_MAX (MCQ_ZMTP_HEADER_MAX + 10)

/* Writes the header of a frame with `size` body bytes: short form up to 255 (as libzmq),
 * long form above. flags: MCQ_ZMTP_FLAG_MORE and/or MCQ_ZMTP_FLAG_COMMAND. Returns 2 or 9. */
static inline size_t mcq_zmtp_frame_header(uint8_t out[MCQ_ZMTP_HEADER_MAX], uint8_t flags,
                                           uint64_t size)
{
    if (size <= MCQ_ZMTP_SHORT_MAX) {
        out[0] = flags;
        out[1] = (uint8_t)size;
        return 2;
    }
    out[0] = flags | MCQ_ZMTP_FLAG_LONG;
    for (int i = 0; i < 8; i++)
        out[1 + i] = (uint8_t)(size >> (56 - 8 * i));
    return MCQ_ZMTP_HEADER_MAX;
}

/* What goes into our READY (NULL, PLAIN server) or INITIATE (PLAIN client): Socket-Type,
 * then Identity when the type sends one (REQ, DEALER, ROUTER; may be empty), then the
 * extra properties in order. All pointers borrowed. */
struct mcq_zmtp_metadata_spec {
    int socket_type;
    const uint8_t *identity;
    size_t identity_len; /* 0..255 */
    const struct mcq_zmtp_property *extra;
    size_t n_extra;
};

/* Bytes mcq_zmtp_encode_metadata_command will need for this spec and command name, or
 * -EINVAL when a length cannot be carried (identity > 255, name 0 or > 255, ...). */
long mcq_zmtp_metadata_command_size(const char *command, const struct mcq_zmtp_metadata_spec *m);

/* A whole command frame `command` + metadata, e.g. command "READY" or "INITIATE". */
int mcq_zmtp_encode_metadata_command(uint8_t *out, size_t cap, const char *command,
                                     const struct mcq_zmtp_metadata_spec *m);

/* ERROR with a reason of 0..255 bytes (spec form `05 ERROR`). */
int mcq_zmtp_encode_error(uint8_t *out, size_t cap, const char *reason);

/* PING with TTL in deciseconds (0 = none) and 0..16 bytes of context. */
int mcq_zmtp_encode_ping(uint8_t *out, size_t cap, uint16_t ttl_ds, const uint8_t *context,
                         size_t context_len);

/* PONG echoing at most the first 16 bytes of `context` (longer is truncated, as libzmq). */
int mcq_zmtp_encode_pong(uint8_t *out, size_t cap, const uint8_t *context, size_t context_len);

/* Header that precedes `topic_len` topic bytes of a subscription (subscribe) or
 * cancellation (!subscribe): to a 3.1 peer (peer_minor >= 1) a SUBSCRIBE/CANCEL command
 * header including the name, to a 3.0 peer a data-frame header + 0x01/0x00. Send it
 * followed by the topic. Returns the header length. */
size_t mcq_zmtp_encode_subscription_header(uint8_t out[MCQ_ZMTP_SUB_HEADER_MAX], bool subscribe,
                                           size_t topic_len, uint8_t peer_minor);

/* The whole subscription frame (header + a copy of the topic). */
int mcq_zmtp_encode_subscription(uint8_t *out, size_t cap, bool subscribe, const uint8_t *topic,
                                 size_t topic_len, uint8_t peer_minor);

/* PLAIN HELLO `05 HELLO ulen user plen pass` (each 0..255 bytes). */
int mcq_zmtp_encode_plain_hello(uint8_t *out, size_t cap, const uint8_t *username,
                                size_t username_len, const uint8_t *password, size_t password_len);

/* PLAIN WELCOME `07 WELCOME`, no data. */
int mcq_zmtp_encode_plain_welcome(uint8_t *out, size_t cap);

#endif
