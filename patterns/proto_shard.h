/* Per-shard state of patterns/, hung on mcq_shard_slot(sh, MCQ_SLOT_PROTO): the message slab,
 * the peer slab and list, and room for the socket layer's own per-shard state. Created on
 * first use on the shard; at runtime stop it closes what is left (sockets gracefully first,
 * runtime/loop.h's drain stage) and goes away once the last message, peer and hold are gone,
 * before the shard's arena is destroyed.
 *
 * Shard thread only. Fields are shared by msg.c, peer.c and socket.c (each touches its own). */
#ifndef MCQ_PATTERNS_PROTO_SHARD_H
#define MCQ_PATTERNS_PROTO_SHARD_H

#include <stdbool.h>

#include "alloc/page.h"
#include "alloc/slab.h"
#include "runtime/loop.h"

struct mcq_peer;
struct mcq_proto_shard;

struct mcq_proto_shard {
    struct mcq_shard *sh;
    struct mcq_arena *arena;
    struct mcq_slab msgs;  /* struct mcq_msg */
    struct mcq_slab peers; /* struct mcq_peer (initialised by peer.c on first use) */
    bool peers_ready;
    struct mcq_view empty; /* a 1-byte page every empty frame is a 0-byte slice of */
    struct mcq_peer *live; /* every peer of this shard (peer.c's list) */
    /* peer.c's stop step: ends every live peer for good. */
    void (*peers_stop)(struct mcq_proto_shard *ps);
    struct mcq_view scratch; /* peer.c's output page shared by the shard's peers */
    uint32_t sc_used;        /* its write cursor: bytes before it belong to someone */
    struct mcq_view *batch;  /* peer.c's scratch array of views for one sendv (arena) */
    uint32_t batch_cap;
    unsigned holds; /* other users keeping this state (mcq_proto_shard_hold) */
    bool stopping;  /* runtime stop began: destroyed once the counts reach zero */
    struct mcq_stop_hook stop, drain;
    /* The socket layer's per-shard state and its stop step (run in the shard's drain stage,
     * before any other stop step; may be NULL). It owns what `sockets` points to. */
    void *sockets;
    void (*sockets_stop)(struct mcq_proto_shard *ps);
};

/* The calling shard's state, created on first use; NULL when out of memory or once the
 * runtime stops and the state has been torn down. */
struct mcq_proto_shard *mcq_proto_shard_get(struct mcq_shard *sh);

/* Keeps ps alive past stop until the matching release (for state outside the two slabs). */
void mcq_proto_shard_hold(struct mcq_proto_shard *ps);
void mcq_proto_shard_release(struct mcq_proto_shard *ps);

/* Destroys ps when the shard is stopping and nothing is left in it; called after each free
 * of a message or peer. */
void mcq_proto_shard_settle(struct mcq_proto_shard *ps);

#endif
