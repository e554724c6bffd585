/* Internal to patterns/: the socket object, its per-shard partitions and the per-peer
 * routing state, shared by socket.c (lifecycle, peers, directory, the mesh protocol),
 * sockopt.c (options and their snapshots) and route.c (the socket types' rules).
 *
 * Shape (DESIGN.md "Routing", "Backpressure").
 * - struct mcq_socket is read-only for the shards after setup, except the ROUTER and REQ
 *   mode options read with relaxed atomics. Each shard has one struct mcq_part, touched only by
 *   that shard (created by the setup thread, attached through mcq_runtime_post).
 * - A peer lives on the shard that holds its connection; it takes a slot there and, per
 *   connection, a new generation. struct mcq_peer_ref {shard, slot, gen} names it
 *   anywhere. Every shard keeps a directory entry for every sending-capable peer of the
 *   socket, made and removed by peer-up / peer-down control events from the owner (FIFO per
 *   pair of shards, never dropped). Every cross-shard message names the target's ref and is
 *   dropped on arrival when the generation is gone (ghost-peer protection).
 * - Credits (libzmq pipe style): a shard may have at most `window` (SNDHWM, or a large
 *   bound for HWM 0) messages towards one remote peer that the owner has not yet handed to
 *   the peer's send queue; the owner hands them over as the queue has room (a per-peer
 *   backlog holds the rest, in arrival order) and returns credits per source shard in
 *   batches of (window + 1) / 2. Local senders go to mcq_peer_send directly (its -EAGAIN
 *   arms the peer's writable()).
 * - Peer-chosen routing ids (ROUTER) and the single PAIR peer are claimed at an arbiter
 *   shard (hash of the id, shard 0 for PAIR) which alone decides duplicates and broadcasts
 *   the binding, so every shard agrees on who holds an id. The peer's input waits until
 *   the answer, so a reply to its first message routes; a refused ROUTER claim waits at
 *   the arbiter and is granted when the holder leaves.
 * - The user hears of a peer when it is routable from its shard (on_peer_up after the id
 *   claim is settled) and of its loss when no shard routes to it any more (on_peer_down
 *   after every shard confirmed the peer-down); a reconnection is announced after that.
 * - Cross-shard records (a message's exports, control events) live in small pages of the
 *   sender's arena and go home through the remote-free path: no allocator call per send.
 * - Closing: each partition stops sending and tells every other shard (quiet); with every
 *   shard's quiet in, nothing more can come for its peers, so it flushes and closes them
 *   (within LINGER from going quiet), then sends a fence to every shard; a partition with
 *   all fences in can receive nothing more for the socket (rings are FIFO), and the
 *   socket's memory goes when every partition is done. A runtime stop closes open sockets
 *   the same way; a closing partition keeps its shard from ending the stop until done. */
#ifndef MCQ_PATTERNS_SOCKET_INT_H
#define MCQ_PATTERNS_SOCKET_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "patterns/idmap.h"
#include "patterns/monocoque.h"
#include "patterns/peer.h"
#include "patterns/proto_shard.h"
#include "runtime/conn.h"
#include "runtime/loop.h"

#define MCQ_ROUTING_ID_MAX 255u /* bytes */
#define MCQ_AUTO_ID_LEN 5u      /* 0x00 + 4 bytes, as libzmq */
#define MCQ_AUTO_ID_GEN_BITS 8u /* generation bits carried in an auto id */
#define MCQ_AUTO_ID_BITS 32u
#define MCQ_OPT_STR_MAX 255u /* bytes of a PLAIN user name, password or ZAP domain */

/* Option values as set (libzmq's types and defaults). Guarded by the socket's lock. */
struct mcq_sockopts {
    int sndhwm, rcvhwm;
    int64_t sndhwm_bytes;
    int64_t maxmsgsize;
    uint8_t routing_id[MCQ_ROUTING_ID_MAX];
    size_t routing_id_len;
    int linger;
    int reconnect_ivl, reconnect_ivl_max;
    int heartbeat_ivl, heartbeat_timeout, heartbeat_ttl;
    int handshake_ivl;
    int tcp_keepalive, tcp_keepalive_cnt, tcp_keepalive_idle, tcp_keepalive_intvl;
    int plain_server;
    char plain_username[MCQ_OPT_STR_MAX + 1];
    size_t plain_username_len;
    char plain_password[MCQ_OPT_STR_MAX + 1];
    size_t plain_password_len;
    bool plain_client; /* a user name or password was set */
    char zap_domain[MCQ_OPT_STR_MAX + 1];
    int connect_timeout;
};

/* The options frozen for the peers of one bind or connect (peers borrow it: it lives as
 * long as the socket). */
struct mcq_cfgsnap {
    struct mcq_cfgsnap *next;
    struct mcq_peer_cfg pcfg;
    struct mcq_zmtp_plain_credentials creds;
    uint32_t window; /* credits per (sending shard, remote peer) */
    uint32_t rcvhwm; /* messages held per peer before it is paused; 0 = no limit */
    int linger;      /* 0: close with ABORT */
    uint8_t identity[MCQ_ROUTING_ID_MAX];
    uint8_t username[MCQ_OPT_STR_MAX], password[MCQ_OPT_STR_MAX];
    char zap_domain[MCQ_OPT_STR_MAX + 1];
};

struct mcq_bound {
    struct mcq_peer_listener pl; /* first: the listener's user pointer */
    struct mcq_bound *next;
    struct mcq_socket *s;
    struct mcq_cfgsnap *cfg;
    struct mcq_listener *l;
};

struct mcq_connect_req {
    struct mcq_connect_req *next;
    struct mcq_socket *s;
    struct mcq_cfgsnap *cfg;
    char endpoint[MCQ_ENDPOINT_TEXT_MAX];
};

/* A message waiting on a shard: in a peer's backlog (from = source shard, req = a REQ
 * request whose reply the source awaits) or a REP request held until the reply to the
 * current one was sent (ref = the requester, env = its envelope). */
struct mcq_held {
    struct mcq_held *next;
    struct mcq_msg *m;
    struct mcq_msg *env;
    struct mcq_peer_ref ref;
    uint16_t from;
    bool req;
};

struct mcq_heldq {
    struct mcq_held *head, **tail;
    unsigned len;
};

/* REQ_RELAXED without REQ_CORRELATE: requests this shard abandoned to one peer whose
 * replies are still due (the peer answers one at a time, in order, so they come first). */
struct mcq_req_stale {
    struct mcq_peer_ref ref;
    uint32_t n;
};

struct mcq_pstate;
struct xctl;  /* socket.c's control event */
struct xdown; /* socket.c's on_peer_down waiting for every shard to drop the peer */

/* A directory entry: one peer of the socket as this shard sees it. */
struct mcq_dent {
    uint32_t gen;          /* 0: no peer in this slot */
    uint32_t credits;      /* messages this shard may still send it (remote peers) */
    int32_t lb_pos;        /* index in the load-balancing ring, or -1 */
    struct mcq_pstate *ps; /* local peers only */
};

struct mcq_dtab {
    struct mcq_dent *v;
    uint32_t cap;
};

/* The socket layer's state of one local peer (mcq_peer_get_data). */
struct mcq_pstate {
    struct mcq_pstate *next, *prev;
    struct mcq_part *pt;
    struct mcq_peer *peer;
    const struct mcq_cfgsnap *cfg;
    bool closing;       /* we closed it (mcq_peer_close): do not close it again */
    bool up;            /* between ready() and closed() */
    bool refused;       /* lost a routing-id (or PAIR) claim: its input is dropped */
    bool claim_pending; /* its id claim is unanswered: input waits in inq */
    bool announced;     /* on_peer_up ran for this connection (on_peer_down is due) */
    struct xdown *down; /* the last connection's on_peer_down, not yet run: input waits */
    uint32_t slot, gen;
    uint8_t id_len;
    bool id_chosen;
    uint8_t id[MCQ_ROUTING_ID_MAX];
    struct mcq_heldq backlog; /* from other shards, waiting for room */
    struct mcq_heldq inq;     /* input held until the id is bound (a reply could not route) */
    uint32_t *owed;           /* [nshards] credits not yet returned per source */
    int32_t req_from;         /* REQ: the shard whose request this peer is answering, or -1 */
    uint32_t rep_held;        /* REP: its requests waiting in the partition's hold queue */
    bool paused;              /* input stopped at RCVHWM (inq + rep_held) */
};

struct mcq_part {
    struct mcq_socket *s;
    struct mcq_shard *sh;
    unsigned id;
    bool quiet, closing, fenced;              /* close protocol phases, in this order */
    uint64_t quiet_ns;                        /* when it went quiet: LINGER counts from here */
    unsigned quiets;                          /* other shards' quiet events received */
    unsigned fences;                          /* fence events received (close protocol) */
    unsigned live;                            /* local pstates not yet freed */
    struct mcq_proto_shard *proto;            /* held from attach until done */
    struct mcq_part *shard_next, *shard_prev; /* the shard's open partitions */
    struct mcq_dtab *dir;                     /* [nshards] */
    struct mcq_peer_ref *lb;
    uint32_t lb_len, lb_cap, lb_next;
    struct mcq_pstate *lb_solo; /* the LB ring's only peer when it is local, else NULL */
    struct mcq_idmap ids;       /* bound routing ids (ROUTER) or "" (PAIR) */
    struct mcq_idmap claims;    /* as arbiter: the authoritative holders */
    struct xctl *claim_waiting; /* as arbiter: refused ROUTER claims, newest first */
    struct xdown *downs;        /* on_peer_down notes waiting for confirmations */
    uint32_t *own_gen;          /* last generation per own slot */
    uint32_t own_cap, own_used;
    uint32_t *free_slots;
    uint32_t nfree;
    uint32_t slot_max;
    struct mcq_pstate *peers;
    bool want_writable;
    bool input_paused; /* mcq_socket_pause_input: every local peer's input stopped */
    /* REQ */
    bool req_busy;
    bool req_correlated; /* the request out carries req_id (REQ_CORRELATE) */
    uint32_t req_id;
    uint32_t req_seq; /* counter of the next request id; random start */
    struct mcq_peer_ref req_to;
    struct mcq_req_stale *req_stale;
    uint32_t req_stale_len, req_stale_cap;
    /* REP */
    bool rep_busy;
    struct mcq_peer_ref rep_from;
    struct mcq_msg *rep_env;
    struct mcq_heldq rep_hold;
    struct mcq_deferred rep_next;
};

struct mcq_socket {
    struct mcq_runtime *rt;
    unsigned n;
    int type;
    struct mcq_socket_handlers h;
    uint8_t hkey[MCQ_SIPHASH_KEY_LEN];
    unsigned shard_bits; /* bits of an auto id naming the owner shard */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct mcq_sockopts o;
    _Atomic int mandatory, handover, req_relaxed, req_correlate;
    char last_endpoint[MCQ_ENDPOINT_TEXT_MAX];
    struct mcq_cfgsnap *cfgs;
    struct mcq_bound *bound;
    struct mcq_connect_req *connects;
    _Atomic unsigned rr;
    unsigned attach_ran, attached, detached, done, closes_ran; /* under lock */
    bool detached_quiet; /* under lock: a failed create's partition had begun closing */
    struct mcq_runtime_cleanup cleanup;
    struct mcq_part *parts[];
};

/* sockopt.c. All for the setup thread, under s->lock. */
/* libzmq's defaults for every option. */
void mcq_sockopts_defaults(struct mcq_sockopts *o, int type);
/* Freezes the current options for new peers; the caller holds s->lock. NULL on ENOMEM. */
struct mcq_cfgsnap *mcq_cfgsnap_new(struct mcq_socket *s, const struct mcq_peer_ops *ops);

/* socket.c: services for route.c, on the partition's shard. */
/* The local peer r names, or NULL (another shard's, or gone). */
struct mcq_pstate *mcq_part_local(struct mcq_part *pt, const struct mcq_peer_ref *r);
/* This shard's directory entry for r, or NULL when r's generation is gone. */
struct mcq_dent *mcq_part_dent(struct mcq_part *pt, const struct mcq_peer_ref *r);
/* Sends m to the peer r (local or remote, credits). Takes m on 0. -EAGAIN no room,
 * -EHOSTUNREACH gone, -ENOMEM. `req`: the owner must expect a reply for this shard. */
int mcq_part_route(struct mcq_part *pt, const struct mcq_peer_ref *r, struct mcq_msg *m, bool req);
/* Sends m round-robin to the next peer of the LB ring with room (chosen in *chosen when not
 * NULL). Takes m on 0; -EAGAIN (none has room; on_writable follows) or -ENOMEM. */
int mcq_part_lb_send(struct mcq_part *pt, struct mcq_msg *m, bool req, struct mcq_peer_ref *chosen);
/* The live peer a routing id (auto or bound) names, in *out; false when none. */
bool mcq_part_resolve(struct mcq_part *pt, const uint8_t *id, size_t len, struct mcq_peer_ref *out);
/* Runs on_writable if a send on this shard had returned -EAGAIN. */
void mcq_part_fire_writable(struct mcq_part *pt);
/* REQ: ps answered its request; the next one other shards queued for it goes now (the
 * caller then delivers the reply and fires on_writable). */
void mcq_pstate_req_done(struct mcq_pstate *ps);
/* Sends a REQ reply that arrived from peer `from` to the requesting shard `to` (takes m,
 * its envelope still on: [request id] + delimiter). */
void mcq_part_forward_reply(struct mcq_part *pt, unsigned to, const struct mcq_peer_ref *from,
                            struct mcq_msg *m);
/* Pauses ps's input (TCP backpressure) while the application paused the partition's
 * input or ps has RCVHWM messages or more held (inq and, for REP, requests waiting for
 * their turn), and resumes it otherwise. */
void mcq_pstate_rcv_check(struct mcq_pstate *ps);
/* The handle of a local peer's current connection. */
struct mcq_peer_ref mcq_pstate_ref(const struct mcq_pstate *ps);
/* FIFO of held messages: push takes h, pop returns the oldest (NULL when empty), free
 * frees every entry and its messages. A zeroed queue is empty. */
void mcq_heldq_push(struct mcq_heldq *q, struct mcq_held *h);
struct mcq_held *mcq_heldq_pop(struct mcq_heldq *q);
void mcq_heldq_free(struct mcq_heldq *q);

/* route.c: the socket types, on the partition's shard. */
/* Whether the type sends round-robin (DEALER, PUSH, REQ). */
bool mcq_type_uses_lb(int type);
/* Whether peers of this type get directory entries on every shard (they can be sent to
 * from any shard). */
bool mcq_type_routes_remote(int type);
/* A whole message from local peer ps (takes m): delivered, held or dropped by the type. */
void mcq_route_input(struct mcq_pstate *ps, struct mcq_msg *m);
/* mcq_send's body for an open partition: same contract. */
int mcq_route_send(struct mcq_part *pt, struct mcq_msg *m);
/* A REQ reply (takes m, envelope still on) arrived on the requesting shard from peer
 * `from`: delivered if it answers the request out, else dropped. */
void mcq_route_req_reply(struct mcq_part *pt, const struct mcq_peer_ref *from, struct mcq_msg *m);
/* The peer r went away: forget REQ/REP state bound to it. */
void mcq_route_peer_gone(struct mcq_part *pt, const struct mcq_peer_ref *r);
/* Deferred: REP delivers the next held request once the reply to the last one went out. */
void mcq_route_rep_next(struct mcq_shard *sh, struct mcq_deferred *d);
/* The partition closes: frees held requests and envelopes, forgets REQ/REP turns. */
void mcq_route_close(struct mcq_part *pt);

#endif
