/* Routing-id tables of the socket layer: byte strings (0..255 bytes, chosen by peers) to
 * peer handles, chained hashing under a per-socket SipHash key so peers cannot aim for
 * collisions. Plain heap memory; one table belongs to one shard. */
#ifndef MCQ_PATTERNS_IDMAP_H
#define MCQ_PATTERNS_IDMAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "patterns/siphash.h"

/* A peer of a socket anywhere in the runtime: its owner shard, its slot there and the
 * generation of the connection that holds the slot (never 0 for a live peer). */
struct mcq_peer_ref {
    uint32_t slot;
    uint32_t gen;
    uint16_t shard;
};

static inline bool mcq_peer_ref_eq(const struct mcq_peer_ref *a, const struct mcq_peer_ref *b)
{
    return a->slot == b->slot && a->gen == b->gen && a->shard == b->shard;
}

struct mcq_idmap_node;

/* Zero-initialised plus a key is an empty table. */
struct mcq_idmap {
    struct mcq_idmap_node **_buckets;
    uint32_t _nbuckets; /* power of two, or 0 before the first insert */
    uint32_t _count;
    const uint8_t *_key; /* MCQ_SIPHASH_KEY_LEN bytes, borrowed */
};

void mcq_idmap_init(struct mcq_idmap *m, const uint8_t *key);
/* Frees every entry. */
void mcq_idmap_fini(struct mcq_idmap *m);
/* Maps id to ref, replacing any older mapping (returned in *old when non-NULL, with the
 * result 1). 0 for a new entry, 1 replaced, -ENOMEM. */
int mcq_idmap_put(struct mcq_idmap *m, const uint8_t *id, size_t len,
                  const struct mcq_peer_ref *ref, struct mcq_peer_ref *old);
/* The handle mapped to id (borrowed until the next change), or NULL. */
const struct mcq_peer_ref *mcq_idmap_get(const struct mcq_idmap *m, const uint8_t *id, size_t len);
/* Removes id when it maps to *match (any handle when match is NULL). True if removed. */
bool mcq_idmap_del(struct mcq_idmap *m, const uint8_t *id, size_t len,
                   const struct mcq_peer_ref *match);
static inline uint32_t mcq_idmap_count(const struct mcq_idmap *m)
{
    return m->_count;
}

#endif
