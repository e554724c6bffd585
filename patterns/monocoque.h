/* Monocoque's public API: ZeroMQ sockets on a sharded runtime. A socket spans every shard;
 * each shard owns the peers whose connections it holds and runs the callbacks for them.
 * Users write callbacks (on_msg, on_writable, on_peer_up/down) and send from them.
 *
 *   struct mcq_runtime *rt;
 *   mcq_runtime_create(NULL, &rt);                       one shard per allowed core
 *   struct mcq_socket *s;
 *   mcq_socket_create(rt, MCQ_ROUTER, &(struct mcq_socket_handlers){
 *           .on_msg = on_request, .user = app }, &s);
 *   mcq_bind(s, "tcp://0.0.0.0:5555");
 *   mcq_runtime_run(rt);                                 until SIGINT/SIGTERM or stop
 *   mcq_runtime_destroy(rt);                             closes what is left
 *
 *   static void on_request(struct mcq_shard *sh, struct mcq_socket *s, struct mcq_msg *m,
 *                          void *user)
 *   {
 *       if (mcq_send(sh, s, m) < 0)                      ROUTER echo: frame 0 is the peer
 *           mcq_msg_free(m);
 *   }
 *
 * Errors are 0 (or a count) and negative errno values, never errno: -EAGAIN at the high
 * water mark, -EHOSTUNREACH unroutable (ROUTER_MANDATORY), -EFSM wrong REQ/REP state,
 * -EINVAL bad argument, -ENOTSUP an option or operation this socket type lacks. */
#ifndef MONOCOQUE_H
#define MONOCOQUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "alloc/page.h"
#include "runtime/runtime.h"

#ifndef EFSM
#define EFSM 156384763 /* libzmq's value: operation not valid in the socket's state */
#endif

/* Socket types, numbered as libzmq's ZMQ_PAIR ... ZMQ_XSUB. */
enum mcq_socket_type {
    MCQ_PAIR = 0,
    MCQ_PUB = 1,
    MCQ_SUB = 2,
    MCQ_REQ = 3,
    MCQ_REP = 4,
    MCQ_DEALER = 5,
    MCQ_ROUTER = 6,
    MCQ_PULL = 7,
    MCQ_PUSH = 8,
    MCQ_XPUB = 9,
    MCQ_XSUB = 10,
};

/* --- messages ----------------------------------------------------------------------------
 * A message is a list of frames (multipart), each a view of refcounted page memory, so
 * passing a message on never copies its bodies. A message belongs to one shard at a time:
 * create, edit, send and free it on that shard. */
struct mcq_msg;

/* A new empty message on shard sh, or NULL when memory is exhausted. */
struct mcq_msg *mcq_msg_new(struct mcq_shard *sh);
/* Frees m and drops its frames' references. NULL is a no-op. */
void mcq_msg_free(struct mcq_msg *m);
/* Appends a frame holding a copy of data[0..len). 0 or -ENOMEM / -EMSGSIZE. */
int mcq_msg_append(struct mcq_msg *m, const void *data, size_t len);
/* Appends a frame that takes the reference of *v (zero copy; *v is emptied). 0 or -ENOMEM. */
int mcq_msg_append_view(struct mcq_msg *m, struct mcq_view *v);
/* Inserts a frame holding a copy of data[0..len) before the first frame (envelopes,
 * ROUTER addressing). 0 or -ENOMEM / -EMSGSIZE. */
int mcq_msg_prepend(struct mcq_msg *m, const void *data, size_t len);
/* Removes the first frame, handing its reference to *out (or dropping it when out is NULL).
 * 0 or -ENOENT when the message is empty. */
int mcq_msg_pop_front(struct mcq_msg *m, struct mcq_view *out);
unsigned mcq_msg_count(const struct mcq_msg *m);
/* Frame i (borrowed: valid while m lives and is not edited), or NULL past the end. */
const struct mcq_view *mcq_msg_frame(const struct mcq_msg *m, unsigned i);
/* Total body bytes over all frames. */
size_t mcq_msg_size(const struct mcq_msg *m);
/* A second message sharing m's frame bodies (new references, no copy), or NULL. */
struct mcq_msg *mcq_msg_dup(const struct mcq_msg *m);

/* --- sockets ------------------------------------------------------------------------------ */
struct mcq_socket;

/* What a peer reported in its handshake. Valid during the callback only. */
struct mcq_peer_info {
    const uint8_t *routing_id; /* for ROUTER: the id frame messages from it carry */
    size_t routing_id_len;
    const char *address; /* "tcp://1.2.3.4:5678", "ipc://path" */
    int socket_type;     /* the peer's enum mcq_socket_type */
    unsigned shard;      /* the shard that owns the peer's connection */
};

/* A PLAIN authentication request (the ZAP fields of RFC 27 that PLAIN uses). Valid during
 * the callback only. */
struct mcq_auth_request {
    const char *domain;    /* ZAP_DOMAIN option, "" by default */
    const char *address;   /* peer address */
    const char *mechanism; /* "PLAIN" */
    const uint8_t *username;
    size_t username_len;
    const uint8_t *password;
    size_t password_len;
};

/* Callbacks run on the shard that owns the peer the event is about (on_msg: the peer that
 * sent it; for REQ, the shard that sent the request). `user` is handlers.user. */
struct mcq_socket_handlers {
    /* A whole message arrived. The callback owns m: send it on, keep it, or free it. For
     * ROUTER the first frame is the sender's routing id; REQ and REP strip the envelope. */
    void (*on_msg)(struct mcq_shard *sh, struct mcq_socket *s, struct mcq_msg *m, void *user);
    /* After a send on this shard returned -EAGAIN, room came back. */
    void (*on_writable)(struct mcq_shard *sh, struct mcq_socket *s, void *user);
    /* A peer is up: handshake done and, from this shard, it can be sent to at once (ROUTER:
     * by the routing id given here, reported once that id is the peer's; a peer ignored for
     * a duplicate id or refused by PAIR is not reported). Other shards learn of it a moment
     * later. on_peer_down (reason 0 or -errno) follows only a peer reported up, once no
     * shard can route to it any more (sends to it then fail or drop everywhere). */
    void (*on_peer_up)(struct mcq_shard *sh, struct mcq_socket *s, const struct mcq_peer_info *p,
                       void *user);
    void (*on_peer_down)(struct mcq_shard *sh, struct mcq_socket *s, const struct mcq_peer_info *p,
                         int reason, void *user);
    /* PLAIN server: return a ZAP status code, 200 to accept, 400 to refuse. NULL with
     * PLAIN_SERVER set refuses everyone (ERROR "500", one warning per client), as libzmq
     * with no ZAP handler fails every PLAIN handshake. */
    unsigned (*on_auth)(struct mcq_shard *sh, struct mcq_socket *s,
                        const struct mcq_auth_request *req, void *user);
    void *user;
};

/* Creates a socket of `type` spanning every shard of rt. The handlers struct is copied.
 * 0, -EINVAL (unknown type, or called on a shard), -ENOTSUP (PUB, SUB, XPUB, XSUB: not yet),
 * -ESHUTDOWN (the runtime is stopping) or -ENOMEM. Any thread that is not a shard, while
 * the runtime runs. */
int mcq_socket_create(struct mcq_runtime *rt, enum mcq_socket_type type,
                      const struct mcq_socket_handlers *h, struct mcq_socket **out);

/* Sets an option (libzmq's semantics and value types; see the MCQ_* option list below).
 * Options take effect for connections made after the call: set them before bind/connect.
 * 0, -EINVAL (bad value or length), -ENOTSUP (not for this socket type). Same threads as
 * mcq_socket_create. */
int mcq_setsockopt(struct mcq_socket *s, int option, const void *value, size_t len);
/* Reads an option into value (*len in: room, out: bytes written). 0 or -EINVAL. */
int mcq_getsockopt(const struct mcq_socket *s, int option, void *value, size_t *len);

/* Binds now (errors come back here: -EADDRINUSE, -EINVAL bad endpoint, -EPROTONOSUPPORT
 * unknown transport) and accepts on every shard. Several endpoints per socket. Non-shard
 * thread. Returns 0; MCQ_LAST_ENDPOINT then gives the bound endpoint (real port for :0). */
int mcq_bind(struct mcq_socket *s, const char *endpoint);
/* Checks the endpoint now and connects in the background on one shard (chosen round-robin
 * per call), reconnecting after loss with RECONNECT_IVL..RECONNECT_IVL_MAX backoff and
 * jitter. 0 or -EINVAL / -EPROTONOSUPPORT. Non-shard thread. */
int mcq_connect(struct mcq_socket *s, const char *endpoint);

/* Sends m from shard sh (the calling shard) following the socket type's rules. Takes m on
 * success (0); on error the caller still owns m. -EAGAIN: no peer can take it now (HWM,
 * or no peer yet for DEALER/PUSH/REQ/PAIR); on_writable follows when room returns.
 * -EHOSTUNREACH: ROUTER with ROUTER_MANDATORY and an unknown id. -EFSM: REQ/REP out of
 * turn. -ENOTSUP: the type cannot send (PULL, SUB). -ENOTCONN: the socket is closing.
 * Multipart messages are atomic. REQ and REP keep their turn per shard: each shard has at
 * most one request out (REQ; its reply comes back on that shard, and a new request is
 * allowed, with on_writable, if the asked peer goes away) or owes one reply (REP: send it
 * on the shard the request arrived on; later requests there wait until it was sent).
 * REQ_RELAXED: a send with a request out abandons it (its reply, should it come, is
 * dropped). Without REQ_CORRELATE a REQ peer holds one request of the socket at a time, so
 * a peer that never answers an abandoned request takes no new one until it disconnects
 * (sends that pick it wait or, from its own shard, skip it; -EAGAIN when it is the only
 * one): pair RELAXED with CORRELATE, as libzmq advises, for Lazy Pirate. */
int mcq_send(struct mcq_shard *sh, struct mcq_socket *s, struct mcq_msg *m);

/* Input backpressure for a program that cannot take more now (a proxy whose other side is
 * full): with pause true, shard sh (the calling shard) stops reading from every peer of s
 * it owns, those that connect later included, so their senders meet TCP backpressure as
 * at libzmq's RCVHWM; on_msg runs for none of their input until pause false. Messages
 * other shards pass to sh (REQ replies) still arrive. 0, -EINVAL, -ENOTCONN (closing). */
int mcq_socket_pause_input(struct mcq_shard *sh, struct mcq_socket *s, bool pause);

/* Closes the socket: stops accepting and connecting, flushes queued output (also what other
 * shards accepted and is still on its way) for up to LINGER ms from the call in all, then
 * frees it. No callback runs after it returns. Non-shard thread. A socket left open is
 * closed the same way when the runtime stops. */
void mcq_socket_close(struct mcq_socket *s);

/* --- options (libzmq's numbers; value types as libzmq) ------------------------------------ */
/* SNDHWM counts per peer; a shard sending to a peer that another shard owns has a window of
 * as many of its own (credits), so one peer may buffer up to SNDHWM x shards. RCVHWM bounds
 * what waits socket-side per peer (input held until its routing id is settled or its last
 * connection's on_peer_down ran; REP requests waiting for their turn): at the mark the
 * peer's input is paused (TCP backpressure). on_msg gets the rest as it arrives.
 * REQ_CORRELATE gives each request a 4-byte id frame before the delimiter (host order, as
 * libzmq; random start) and delivers only the reply carrying it; a peer may then hold
 * requests of several shards at once. REQ_CORRELATE and REQ_RELAXED are REQ-only, default
 * 0, read at each send, and readable with mcq_getsockopt (libzmq's are set-only). */
#define MCQ_ROUTING_ID 5           /* bytes, 1..255, not starting with 0x00 */
#define MCQ_SUBSCRIBE 6            /* bytes (SUB/XSUB) */
#define MCQ_UNSUBSCRIBE 7          /* bytes (SUB/XSUB) */
#define MCQ_LINGER 17              /* int ms, -1 = forever; default -1; bounds a whole close */
#define MCQ_RECONNECT_IVL 18       /* int ms; default 100; -1 = never reconnect */
#define MCQ_RECONNECT_IVL_MAX 21   /* int ms; default 0 = no backoff */
#define MCQ_MAXMSGSIZE 22          /* int64 bytes; default -1 = no limit */
#define MCQ_SNDHWM 23              /* int messages per peer; default 1000; 0 = none */
#define MCQ_RCVHWM 24              /* int messages per peer held; default 1000; 0 = none */
#define MCQ_LAST_ENDPOINT 32       /* get only: string */
#define MCQ_ROUTER_MANDATORY 33    /* int 0/1 */
#define MCQ_TCP_KEEPALIVE 34       /* int -1 (OS), 0, 1 */
#define MCQ_TCP_KEEPALIVE_CNT 35   /* int */
#define MCQ_TCP_KEEPALIVE_IDLE 36  /* int s */
#define MCQ_TCP_KEEPALIVE_INTVL 37 /* int s */
#define MCQ_PLAIN_SERVER 44        /* int 0/1 */
#define MCQ_PLAIN_USERNAME 45      /* string */
#define MCQ_PLAIN_PASSWORD 46      /* string */
#define MCQ_REQ_CORRELATE 52       /* int 0/1 */
#define MCQ_REQ_RELAXED 53         /* int 0/1: a send abandons the request out */
#define MCQ_ZAP_DOMAIN 55          /* string */
#define MCQ_ROUTER_HANDOVER 56     /* int 0/1 */
#define MCQ_HANDSHAKE_IVL 66       /* int ms; default 30000; 0 = none */
#define MCQ_HEARTBEAT_IVL 75       /* int ms; default 0 = off */
#define MCQ_HEARTBEAT_TTL 76       /* int ms */
#define MCQ_HEARTBEAT_TIMEOUT 77   /* int ms; default = HEARTBEAT_IVL */
#define MCQ_CONNECT_TIMEOUT 79     /* int ms; default 0 = the OS's */
/* Monocoque's own. */
#define MCQ_SNDHWM_BYTES 1000 /* int64 bytes queued per peer; default 16 MiB; 0 = none */

#endif
