/* ZMTP 3.x greeting (64 bytes, sent by both sides before anything else). We always send
 * all 64 bytes at once and read the peer's with the leniency libzmq shows: padding,
 * as-server and filler bytes are never validated (zmtp.md §1). */
#ifndef MCQ_ZMTP_GREETING_H
#define MCQ_ZMTP_GREETING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MCQ_ZMTP_GREETING_LEN 64      /* bytes */
#define MCQ_ZMTP_MECH_NAME_LEN 20     /* bytes, NUL-padded on the wire */
#define MCQ_ZMTP_GREETING_MECH_OFF 12 /* byte offset of the mechanism name */
#define MCQ_ZMTP_GREETING_SERVER_OFF 32
#define MCQ_ZMTP_VERSION_MAJOR 3
#define MCQ_ZMTP_VERSION_MINOR 1
#define MCQ_ZMTP_REASON_LEN 192 /* bytes of a failure reason, NUL included */

/* What a peer's greeting says once it has been accepted. */
struct mcq_zmtp_greeting {
    uint8_t major;
    uint8_t minor;  /* 0 = ZMTP 3.0 peer (subscriptions as 0x01/0x00 messages) */
    bool as_server; /* reported only; libzmq always sends 0 and never reads it */
    char mechanism[MCQ_ZMTP_MECH_NAME_LEN + 1];
};

/* Writes our 64-byte greeting: version 3.minor (minor 1, or 0 to announce ZMTP 3.0),
 * the mechanism name NUL-padded, the as-server byte, zero padding and filler. Returns
 * MCQ_ZMTP_GREETING_LEN, or -EINVAL if the mechanism name is empty or longer than 20. */
int mcq_zmtp_greeting_build(uint8_t out[MCQ_ZMTP_GREETING_LEN], const char *mechanism,
                            bool as_server, uint8_t minor);

/* Checks the first len bytes (0..64) of a peer greeting, so a bad signature or a
 * pre-3.0 version is refused as soon as its byte arrives. Once len == 64 the mechanism
 * must equal `mechanism` (20-byte compare) and *out is filled. Returns 0 (acceptable so
 * far) or -EPROTO with a reason naming the byte and the rule in reason[reason_len]. */
int mcq_zmtp_greeting_check(const uint8_t *in, size_t len, const char *mechanism,
                            struct mcq_zmtp_greeting *out, char *reason, size_t reason_len);

#endif
