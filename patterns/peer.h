/* Internal to patterns/: one ZMTP peer = one connection (runtime/conn.h) + one session
 * (zmtp/session.h) on one shard. The peer turns received frames into whole messages,
 * encodes outgoing messages as header + body views (no body copy), runs the handshake
 * deadline and heartbeat timers, answers PLAIN authentication through the owner, enforces
 * MAXMSGSIZE and the per-peer send high-water marks, and for connecting peers reconnects
 * with backoff and jitter. The socket layer (socket.c) owns peers and implements the
 * socket types on top; it never sees bytes, sessions or SQEs.
 *
 * Everything here runs on the peer's shard only. */
#ifndef MCQ_PATTERNS_PEER_H
#define MCQ_PATTERNS_PEER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "patterns/monocoque.h"
#include "runtime/conn.h"
#include "zmtp/session.h"

struct mcq_peer;

/* What a peer tells its owner. Called from the loop, never inside an mcq_peer_* call. */
struct mcq_peer_ops {
    /* Handshake complete: identity, socket type and address are available. */
    void (*ready)(struct mcq_peer *p);
    /* A whole message arrived; the owner owns m. */
    void (*msg)(struct mcq_peer *p, struct mcq_msg *m);
    /* SUBSCRIBE/CANCEL (3.1 command or 3.0 message form), for PUB/XPUB owners. */
    void (*subscription)(struct mcq_peer *p, bool subscribe, const uint8_t *topic, size_t len);
    /* The send queue went below its low-water mark after a send returned -EAGAIN. */
    void (*writable)(struct mcq_peer *p);
    /* The connection is gone (reason 0 or -errno; -EPROTO with a logged reason for a
     * protocol violation). An accepted peer is freed after this returns; a connecting peer
     * stays and reconnects later (ready is called again) when mcq_peer_reconnecting() says
     * so, else (closed, runtime stop, peer refused us with ERROR, RECONNECT_IVL -1) it is
     * freed after this returns. Failed connect attempts in between are silent. Messages
     * still queued for it were freed. */
    void (*closed)(struct mcq_peer *p, int reason);
    /* PLAIN server: a ZAP status code (200 accept, 400 refuse). */
    unsigned (*auth)(struct mcq_peer *p, const struct mcq_auth_request *req);
};

/* Per-socket settings every peer of the socket shares (borrowed; must outlive the peers). */
struct mcq_peer_cfg {
    const struct mcq_peer_ops *ops;
    struct mcq_zmtp_config zmtp; /* socket type, mechanism, identity, limits, timers */
    struct mcq_conn_cfg conn;    /* keepalive, linger, send queue bytes (connecting peers;
                                    listen with the same so accepted peers match) */
    unsigned sndhwm;             /* messages queued per peer; 0 = unlimited */
    uint64_t sndhwm_bytes;       /* bytes queued per peer; 0 = unlimited */
    int reconnect_ivl_ms;        /* -1 = never reconnect */
    int reconnect_ivl_max_ms;    /* 0 = no backoff */
    uint32_t connect_timeout_ms; /* 0 = the OS's */
};

/* Starts a peer on a freshly accepted connection (from the listener's on_open). The peer
 * takes over the connection. 0 or -ENOMEM (the connection is then closed). */
int mcq_peer_accept(struct mcq_conn *c, const struct mcq_peer_cfg *cfg, void *owner,
                    struct mcq_peer **out);
/* The conn handler to give mcq_conn_listen for accepted connections: its on_open calls
 * the `accept` hook of the listener's user (struct mcq_peer_listener) with the conn. */
struct mcq_peer_listener {
    void (*accept)(struct mcq_peer_listener *l, struct mcq_conn *c);
};
extern const struct mcq_conn_handler mcq_peer_listener_handler;

/* Connects to endpoint from shard sh and keeps reconnecting after loss until
 * mcq_peer_close. 0, -EINVAL / -EPROTONOSUPPORT (bad endpoint), -ENOMEM. */
int mcq_peer_connect(struct mcq_shard *sh, const char *endpoint, const struct mcq_peer_cfg *cfg,
                     void *owner, struct mcq_peer **out);

/* Queues m (all frames, atomically) for sending; takes m on success. 0, -EAGAIN at the
 * send high-water mark or when not ready (writable() follows), -ENOTCONN when closed. */
int mcq_peer_send(struct mcq_peer *p, struct mcq_msg *m);
/* Like mcq_peer_send, past the high-water marks: for messages the owner accepted earlier
 * and must not drop now (a backlog flushed at close). Takes m on 0; -ENOTCONN (not ready,
 * closing) or -ENOMEM, and the caller keeps m. */
int mcq_peer_send_accepted(struct mcq_peer *p, struct mcq_msg *m);
/* Whether mcq_peer_send would take a message now. */
bool mcq_peer_writable(const struct mcq_peer *p);
/* Queues a subscription or cancel to the peer (SUB/XSUB side), in the form the peer's
 * version wants. Never subject to the data HWM. 0 or -ENOTCONN / -ENOMEM. */
int mcq_peer_send_subscription(struct mcq_peer *p, bool subscribe, const uint8_t *topic,
                               size_t len);
/* The owner found the current connection's input bad (a socket type's rule): ends that
 * connection as a protocol error, logged with why, dropping queued output; a connecting
 * peer reconnects as after any failure. closed() follows. */
void mcq_peer_drop(struct mcq_peer *p, const char *why);
/* Stops reconnecting and closes (FLUSH within linger, or ABORT); closed() follows. */
void mcq_peer_close(struct mcq_peer *p, enum mcq_close_how how);
/* A FLUSH close that ends by deadline_ns (mcq_shard_now_ns's clock) in all: the queue
 * reaching the connection and the connection's own flush share that one bound (libzmq's
 * LINGER bounds the whole close). 0 is an ABORT. Otherwise as mcq_peer_close. */
void mcq_peer_close_by(struct mcq_peer *p, uint64_t deadline_ns);

/* Receive-side backpressure (RCVHWM): stops delivering this peer's messages at once, also
 * the rest of the input being processed, so the sender feels TCP backpressure. Resume
 * delivers held input first, from the loop (never inside the call). A new connection
 * starts unpaused. */
void mcq_peer_pause(struct mcq_peer *p);
void mcq_peer_resume(struct mcq_peer *p);

/* Inside closed(): whether the peer stays and reconnects (false: it is freed after
 * closed() returns). Calling mcq_peer_close inside closed() frees it with no further call. */
bool mcq_peer_reconnecting(const struct mcq_peer *p);

void *mcq_peer_owner(const struct mcq_peer *p);
struct mcq_shard *mcq_peer_shard(const struct mcq_peer *p);
bool mcq_peer_is_ready(const struct mcq_peer *p);
/* Peer facts, valid after ready(). */
void mcq_peer_info(const struct mcq_peer *p, struct mcq_peer_info *out);
/* Owner-private per-peer slot (the socket layer's routing state). */
void *mcq_peer_get_data(const struct mcq_peer *p);
void mcq_peer_set_data(struct mcq_peer *p, void *data);

#endif
