/* Security mechanisms behind one table, so a new one (CURVE) is a new file and a new
 * table, with no change to the session. The session handles the greeting, ERROR
 * commands (both the spec form and libzmq's malformed PLAIN form), limits and output
 * room; a mechanism sees only the handshake commands and uses the helpers below. */
#ifndef MCQ_ZMTP_MECHANISM_H
#define MCQ_ZMTP_MECHANISM_H

#include "zmtp/session.h"

#include <stddef.h>

/* mechanism command() results besides 0 (go on) and a negative errno. */
#define MCQ_ZMTP_MECH_DONE 1 /* handshake complete: the session reports EV_READY */
#define MCQ_ZMTP_MECH_AUTH 2 /* ev->auth filled: the session waits for auth_reply */

struct mcq_zmtp_mechanism {
    const char *name;  /* as in the greeting: "NULL", "PLAIN" */
    bool as_server;    /* greeting as-server byte */
    size_t state_size; /* bytes of mcq_zmtp_session_mech_state it uses */
    size_t out_max;    /* most bytes one call appends, besides a metadata command */
    /* Checks cfg->mechanism_arg; 0 or -EINVAL. */
    int (*validate)(const struct mcq_zmtp_config *cfg);
    /* Peer greeting accepted: append the first command(s). 0 or -errno. */
    int (*start)(struct mcq_zmtp_session *s, struct mcq_zmtp_out *out);
    /* One handshake command (not ERROR). 0, MCQ_ZMTP_MECH_DONE, MCQ_ZMTP_MECH_AUTH, or a
     * negative errno via mcq_zmtp_session_fail. */
    int (*command)(struct mcq_zmtp_session *s, const struct mcq_zmtp_command *cmd,
                   struct mcq_zmtp_out *out, struct mcq_zmtp_event *ev);
    /* Answer to MCQ_ZMTP_MECH_AUTH (NULL for mechanisms that never ask). 0 = handshake
     * goes on, negative errno = session closes. */
    int (*auth_reply)(struct mcq_zmtp_session *s, unsigned status_code, struct mcq_zmtp_out *out);
    /* Active phase of an encrypting mechanism (CURVE); NULL for plaintext ones, which
     * keeps the zero-copy path. Both set or both NULL. unwrap turns one received frame
     * into the frame it carries (data, len, flags MORE|COMMAND), in memory from
     * mcq_zmtp_session_alloc whose handle it leaves in f->handle for the caller, and gives
     * back the incoming f->handle; on failure it leaves *f untouched and returns a
     * negative errno via mcq_zmtp_session_fail. wrap appends the wire form of one frame
     * whose body is prefix + body, at most wrap_overhead bytes beyond the body; 0 or
     * -ENOBUFS (nothing appended). */
    int (*unwrap)(struct mcq_zmtp_session *s, struct mcq_zmtp_frame *f);
    int (*wrap)(struct mcq_zmtp_session *s, uint8_t flags, const uint8_t *prefix, size_t prefix_len,
                const uint8_t *body, size_t len, struct mcq_zmtp_out *out);
    size_t wrap_overhead;
};

extern const struct mcq_zmtp_mechanism mcq_zmtp_mech_null;
extern const struct mcq_zmtp_mechanism mcq_zmtp_mech_plain_client;
extern const struct mcq_zmtp_mechanism mcq_zmtp_mech_plain_server;

/* Helpers for mechanisms (called on the session's thread, from inside the hooks). */

/* Closes the session with err and a printf-style reason; returns err. */
int mcq_zmtp_session_fail(struct mcq_zmtp_session *s, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Closes with -EPROTO: command `cmd` is not one of `expected` in this handshake state. */
int mcq_zmtp_session_unexpected(struct mcq_zmtp_session *s, const struct mcq_zmtp_command *cmd,
                                const char *expected);

/* The peer address for auth requests: the one set on the session, else the config's. */
const char *mcq_zmtp_session_peer_address(const struct mcq_zmtp_session *s);

/* Appends command `name` ("READY"/"INITIATE") carrying our metadata. 0 or -ENOBUFS. */
int mcq_zmtp_session_send_metadata(struct mcq_zmtp_session *s, struct mcq_zmtp_out *out,
                                   const char *name);

/* Validates the peer's metadata (lengths, duplicates, Socket-Type present and compatible,
 * Identity <= 255) and records Socket-Type and Identity. 0 or -EPROTO (closed). */
int mcq_zmtp_session_accept_metadata(struct mcq_zmtp_session *s, const uint8_t *data, size_t len);

/* Memory from the caller's allocator (NULL when it has none or fails) and its return. */
void *mcq_zmtp_session_alloc(struct mcq_zmtp_session *s, size_t size, void **handle);
void mcq_zmtp_session_free(struct mcq_zmtp_session *s, void *handle);

/* Stream offset of the first byte of the command being handled, for reasons. */
uint64_t mcq_zmtp_session_command_offset(const struct mcq_zmtp_session *s);

/* The mechanism's private state (state_size bytes, zeroed at init, 16-byte aligned). */
static inline void *mcq_zmtp_session_mech_state(struct mcq_zmtp_session *s)
{
    return s->_mech_state;
}

/* The borrowed config the session was started with. */
static inline const struct mcq_zmtp_config *
mcq_zmtp_session_config(const struct mcq_zmtp_session *s)
{
    return s->_cfg;
}

#endif
