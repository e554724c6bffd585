/* Sans-IO ZMTP 3.1 session: greeting -> mechanism handshake -> active, with handshake
 * deadline and heartbeats. The caller feeds bytes it received (borrowed; one recv
 * completion at a time), gets one event per call plus the number of bytes consumed, and
 * sends whatever the session appended to its output buffer. Time is whatever the caller
 * passes as now_ns (monotonic). No I/O, no clock, no threads, no allocation but the
 * caller's allocator, no logging: failures come back as -errno plus a reason string.
 * A session belongs to one thread (its shard); sessions share only the read-only config.
 *
 * Usage per connection:
 *   mcq_zmtp_session_init(&s, &cfg, now, &out);           -> our greeting is in out
 *   on input: for (off = 0;;) { rc = mcq_zmtp_session_next(&s, in + off, len - off, now,
 *                                                          &out, &used, &ev);
 *                              off += used; if (rc <= 0) break; handle(rc, &ev); }
 *   on timer (at mcq_zmtp_session_deadline): mcq_zmtp_session_tick(&s, now, &out);
 *   to send once active: mcq_zmtp_frame_header(hdr, flags, len) + a view of the body in
 *     one vectored send (NULL, PLAIN), or mcq_zmtp_session_send_frame when
 *     mcq_zmtp_session_wraps (encrypting mechanisms); subscriptions with
 *     mcq_zmtp_session_send_subscription (or its header + a view of the topic);
 *   mcq_zmtp_session_release(&s) when the connection goes away. */
#ifndef MCQ_ZMTP_SESSION_H
#define MCQ_ZMTP_SESSION_H

#include "zmtp/decoder.h"
#include "zmtp/encoder.h"
#include "zmtp/greeting.h"
#include "zmtp/metadata.h"

#include <stdalign.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MCQ_ZMTP_DEFAULT_HANDSHAKE_IVL_MS 30000 /* libzmq ZMQ_HANDSHAKE_IVL default */
#define MCQ_ZMTP_NO_DEADLINE UINT32_MAX         /* handshake_ivl_ms: never time out */
#define MCQ_ZMTP_MECH_STATE_MAX 320 /* bytes of per-session mechanism state (CURVE fits) */
#define MCQ_ZMTP_NS_PER_MS 1000000ull

struct mcq_zmtp_mechanism;

/* Bytes to send: the session appends at buf + len, never past cap. */
struct mcq_zmtp_out {
    uint8_t *buf;
    size_t len;
    size_t cap;
};

/* Per-socket configuration, shared by all its sessions and borrowed by each (it and
 * everything it points to must outlive them). Zero fields take defaults. */
struct mcq_zmtp_config {
    int socket_type;                            /* enum mcq_zmtp_socket_type */
    const struct mcq_zmtp_mechanism *mechanism; /* NULL = &mcq_zmtp_mech_null */
    const void *mechanism_arg; /* PLAIN client: struct mcq_zmtp_plain_credentials */
    const uint8_t *identity;   /* our routing id (0..255 B), sent by REQ/DEALER/ROUTER */
    size_t identity_len;
    const struct mcq_zmtp_property *properties; /* extra READY properties ("X-...") */
    size_t n_properties;
    const char *zap_domain;   /* echoed in auth requests; NULL = "" */
    const char *peer_address; /* idem; see also mcq_zmtp_session_set_peer_address */
    struct mcq_zmtp_limits limits;
    struct mcq_zmtp_allocator allocator;
    uint32_t handshake_ivl_ms;     /* greeting + handshake deadline; 0 = 30000 */
    uint32_t heartbeat_ivl_ms;     /* PING period once active; 0 = no PINGs */
    uint32_t heartbeat_timeout_ms; /* silence after our PING that kills; 0 = ivl */
    uint32_t heartbeat_ttl_ms;     /* TTL we put in PINGs (sent as ms / 100) */
    bool announce_zmtp30;          /* greeting minor 0 instead of 1 (tests, old peers) */
};

/* PLAIN client credentials (mechanism_arg of mcq_zmtp_mech_plain_client). */
struct mcq_zmtp_plain_credentials {
    const uint8_t *username;
    size_t username_len; /* 0..255 */
    const uint8_t *password;
    size_t password_len; /* 0..255 */
};

/* ZAP-shaped authentication request (RFC 27 fields). All pointers valid until the next
 * call on the session; copy what must outlive that. */
struct mcq_zmtp_auth_request {
    const char *domain;
    const char *address;
    const uint8_t *identity; /* the local socket's routing id, as libzmq sends it */
    size_t identity_len;
    const char *mechanism;  /* "PLAIN" */
    unsigned n_credentials; /* PLAIN: 2 (username, password) */
    const uint8_t *credentials[2];
    size_t credentials_len[2];
};

enum mcq_zmtp_event_type {
    MCQ_ZMTP_EV_NONE = 0,     /* input consumed (or held while an auth answer is due) */
    MCQ_ZMTP_EV_READY,        /* handshake complete; data/len = peer metadata */
    MCQ_ZMTP_EV_AUTH,         /* answer with mcq_zmtp_session_auth_reply; auth filled */
    MCQ_ZMTP_EV_FRAME,        /* data frame: data/len/handle, more */
    MCQ_ZMTP_EV_SUBSCRIPTION, /* subscribe (1) or cancel (0), topic = data/len; both forms */
    MCQ_ZMTP_EV_PING,         /* PONG already appended; ttl_ds, context = data/len */
    MCQ_ZMTP_EV_PONG,         /* context = data/len */
};

/* One event. For FRAME, handle != NULL passes ownership of reassembled memory to the
 * caller; handle == NULL means data points into the input of this call. For every other
 * event data is valid until the next call on the session. */
struct mcq_zmtp_event {
    const uint8_t *data;
    size_t len;
    void *handle;
    const struct mcq_zmtp_auth_request *auth;
    uint16_t ttl_ds;
    bool more;
    bool subscribe;
};

enum mcq_zmtp_state {
    MCQ_ZMTP_GREETING = 0,
    MCQ_ZMTP_HANDSHAKE,
    MCQ_ZMTP_AUTH_WAIT,
    MCQ_ZMTP_ACTIVE,
    MCQ_ZMTP_CLOSED,
};

/* Embeddable; zero-initialisable (a zeroed struct may be released). Private fields. */
struct mcq_zmtp_session {
    struct mcq_zmtp_decoder _dec;
    const struct mcq_zmtp_config *_cfg;
    const struct mcq_zmtp_mechanism *_mech;
    uint64_t _deadline_ns;      /* handshake deadline */
    uint64_t _last_rx_ns;       /* any byte counts as life */
    uint64_t _next_ping_ns;     /* 0 = heartbeats off */
    uint64_t _pong_deadline_ns; /* our PING needs traffic by then; 0 = none pending */
    uint64_t _peer_ttl_ns;      /* from the peer's last PING; 0 = none */
    uint64_t _cmd_offset;       /* stream offset of the command being handled */
    void *_cmd_handle;          /* reassembled command body lent to the last event */
    const char *_peer_address;  /* per-connection override of cfg->peer_address */
    const uint8_t *_meta;       /* peer metadata of the command being handled */
    size_t _meta_len;
    size_t _reserve;        /* output room needed before a handshake step */
    size_t _active_reserve; /* output room needed before an active frame */
    int _err;               /* sticky error once CLOSED */
    uint8_t _state;
    uint8_t _greeting_len;
    uint8_t _peer_minor;
    uint8_t _peer_type;
    uint8_t _peer_identity_len;
    bool _mid_msg;    /* a data frame with MORE was the last one delivered */
    bool _sub_filter; /* local PUB/XPUB: a 0x01/0x00 first frame is a subscription */
    bool _wraps;      /* the mechanism transforms active frames (CURVE) */
    uint8_t _greeting[MCQ_ZMTP_GREETING_LEN];
    uint8_t _peer_identity[MCQ_ZMTP_IDENTITY_MAX];
    alignas(16) uint8_t _mech_state[MCQ_ZMTP_MECH_STATE_MAX];
};

/* Starts a session at now_ns: validates cfg, appends our 64-byte greeting to out (never
 * waits for the peer's) and arms the handshake deadline. Borrows cfg. Returns 0,
 * -EINVAL for a config the wire cannot carry, or -ENOBUFS if out lacks 64 bytes. */
int mcq_zmtp_session_init(struct mcq_zmtp_session *s, const struct mcq_zmtp_config *cfg,
                          uint64_t now_ns, struct mcq_zmtp_out *out);

/* Consumes bytes from in[0..len) (borrowed) until one event is ready or input runs out;
 * any byte counts as life at now_ns. Replies (READY, WELCOME, PONG, ...) are appended to
 * out. Returns the event type (> 0), MCQ_ZMTP_EV_NONE, or a negative errno; *consumed is
 * set in every case. Errors: -EPROTO violation, -ECONNREFUSED peer sent ERROR (do not
 * reconnect), -ENOMEM allocator failed; these close the session, reason in
 * mcq_zmtp_session_reason. -ENOBUFS: out has less free room than
 * mcq_zmtp_session_out_reserve; flush it and call again with the unconsumed rest. */
int mcq_zmtp_session_next(struct mcq_zmtp_session *s, const uint8_t *in, size_t len,
                          uint64_t now_ns, struct mcq_zmtp_out *out, size_t *consumed,
                          struct mcq_zmtp_event *ev);

/* Answers an MCQ_ZMTP_EV_AUTH with a ZAP status code: 200 appends WELCOME and the
 * handshake goes on (returns 0); 400/500 append ERROR "400"/"500" and close the session
 * with -EACCES (flush out, then hang up); 300 and anything else close with -EACCES and
 * nothing sent, as libzmq. -ENOBUFS: no room, nothing changed; -EINVAL: not waiting. */
int mcq_zmtp_session_auth_reply(struct mcq_zmtp_session *s, unsigned status_code,
                                struct mcq_zmtp_out *out);

/* Drives the timers at now_ns: -ETIMEDOUT (session closed, reason set) when the handshake
 * deadline passed, our PING got no traffic within the heartbeat timeout, or the peer's
 * TTL elapsed in silence; otherwise appends a PING when one is due and returns 0
 * (-ENOBUFS: no room, retry after a flush). */
int mcq_zmtp_session_tick(struct mcq_zmtp_session *s, uint64_t now_ns, struct mcq_zmtp_out *out);

/* When mcq_zmtp_session_tick next has work, in ns; UINT64_MAX for never. */
uint64_t mcq_zmtp_session_deadline(const struct mcq_zmtp_session *s);

/* Sets the peer address reported in auth requests (borrowed; must outlive the session),
 * for a config shared by many connections. Call after init, before the handshake. */
void mcq_zmtp_session_set_peer_address(struct mcq_zmtp_session *s, const char *address);

/* Gives back the command buffer lent to the last event and a half-reassembled frame, and
 * closes the session. Safe on a zeroed or closed session. */
void mcq_zmtp_session_release(struct mcq_zmtp_session *s);

/* Output room the caller must keep free in out before calling next/auth_reply/tick. */
size_t mcq_zmtp_session_out_reserve(const struct mcq_zmtp_session *s);

/* Why the session closed (empty while open). */
const char *mcq_zmtp_session_reason(const struct mcq_zmtp_session *s);

/* Where the session is; MCQ_ZMTP_CLOSED after any failure or release. */
static inline enum mcq_zmtp_state mcq_zmtp_session_state(const struct mcq_zmtp_session *s)
{
    return (enum mcq_zmtp_state)s->_state;
}

/* Peer facts, valid once MCQ_ZMTP_EV_READY was returned (and peer_minor after the
 * greeting). The identity is a copy owned by the session (0..255 bytes). */
static inline uint8_t mcq_zmtp_session_peer_minor(const struct mcq_zmtp_session *s)
{
    return s->_peer_minor;
}
static inline int mcq_zmtp_session_peer_socket_type(const struct mcq_zmtp_session *s)
{
    return s->_peer_type;
}
static inline const uint8_t *mcq_zmtp_session_peer_identity(const struct mcq_zmtp_session *s,
                                                            size_t *len)
{
    *len = s->_peer_identity_len;
    return s->_peer_identity;
}

/* True when data must go out through mcq_zmtp_session_send_frame because the mechanism
 * encrypts frames; false (NULL, PLAIN) lets the caller send mcq_zmtp_frame_header + body
 * views with no copy. */
static inline bool mcq_zmtp_session_wraps(const struct mcq_zmtp_session *s)
{
    return s->_wraps;
}

/* Appends one frame (flags MCQ_ZMTP_FLAG_MORE and/or MCQ_ZMTP_FLAG_COMMAND; body borrowed
 * and copied) in the mechanism's wire form. 0, -ENOBUFS (nothing appended), -EINVAL when
 * the session is not active. */
int mcq_zmtp_session_send_frame(struct mcq_zmtp_session *s, uint8_t flags, const uint8_t *body,
                                size_t len, struct mcq_zmtp_out *out);

/* Appends a subscription (subscribe) or cancellation in the form this peer's version
 * wants (3.1: SUBSCRIBE/CANCEL command, 3.0: 0x01/0x00 message), wrapped if the mechanism
 * wraps. 0, -ENOBUFS (nothing appended), -EINVAL when not active. */
int mcq_zmtp_session_send_subscription(struct mcq_zmtp_session *s, bool subscribe,
                                       const uint8_t *topic, size_t len, struct mcq_zmtp_out *out);

/* Subscription header for this peer's version (see mcq_zmtp_encode_subscription_header),
 * for plaintext mechanisms that send header + topic views. */
static inline size_t mcq_zmtp_session_subscription_header(const struct mcq_zmtp_session *s,
                                                          uint8_t out[MCQ_ZMTP_SUB_HEADER_MAX],
                                                          bool subscribe, size_t topic_len)
{
    return mcq_zmtp_encode_subscription_header(out, subscribe, topic_len, s->_peer_minor);
}

#endif
