#include "patterns/idmap.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define IDMAP_MIN_BUCKETS 16u /* first table size; doubles when entries outnumber buckets */

struct mcq_idmap_node {
    struct mcq_idmap_node *next;
    uint64_t hash;
    struct mcq_peer_ref ref;
    uint8_t len;
    uint8_t id[];
};

void mcq_idmap_init(struct mcq_idmap *m, const uint8_t *key)
{
    *m = (struct mcq_idmap){._key = key};
}

void mcq_idmap_fini(struct mcq_idmap *m)
{
    for (uint32_t b = 0; b < m->_nbuckets; b++) {
        for (struct mcq_idmap_node *n = m->_buckets[b]; n;) {
            struct mcq_idmap_node *next = n->next;
            free(n);
            n = next;
        }
    }
    free(m->_buckets);
    m->_buckets = NULL;
    m->_nbuckets = 0;
    m->_count = 0;
}

static struct mcq_idmap_node **find(const struct mcq_idmap *m, uint64_t h, const uint8_t *id,
                                    size_t len)
{
    if (!m->_nbuckets)
        return NULL;
    struct mcq_idmap_node **p = &m->_buckets[h & (m->_nbuckets - 1)];
    for (; *p; p = &(*p)->next)
        if ((*p)->hash == h && (*p)->len == len && memcmp((*p)->id, id, len) == 0)
            return p;
    return NULL;
}

static int grow(struct mcq_idmap *m)
{
    uint32_t nb = m->_nbuckets ? m->_nbuckets * 2 : IDMAP_MIN_BUCKETS;
    struct mcq_idmap_node **b = calloc(nb, sizeof(*b));
    if (!b)
        return -ENOMEM;
    for (uint32_t i = 0; i < m->_nbuckets; i++) {
        for (struct mcq_idmap_node *n = m->_buckets[i]; n;) {
            struct mcq_idmap_node *next = n->next;
            n->next = b[n->hash & (nb - 1)];
            b[n->hash & (nb - 1)] = n;
            n = next;
        }
    }
    free(m->_buckets);
    m->_buckets = b;
    m->_nbuckets = nb;
    return 0;
}

int mcq_idmap_put(struct mcq_idmap *m, const uint8_t *id, size_t len,
                  const struct mcq_peer_ref *ref, struct mcq_peer_ref *old)
{
    if (len > UINT8_MAX)
        return -EINVAL;
    uint64_t h = mcq_siphash24(m->_key, id, len);
    struct mcq_idmap_node **p = find(m, h, id, len);
    if (p) {
        if (old)
            *old = (*p)->ref;
        (*p)->ref = *ref;
        return 1;
    }
    if (m->_count >= m->_nbuckets && grow(m) < 0)
        return -ENOMEM;
    struct mcq_idmap_node *n = malloc(sizeof(*n) + len);
    if (!n)
        return -ENOMEM;
    n->hash = h;
    n->ref = *ref;
    n->len = (uint8_t)len;
    memcpy(n->id, id, len);
    struct mcq_idmap_node **b = &m->_buckets[h & (m->_nbuckets - 1)];
    n->next = *b;
    *b = n;
    m->_count++;
    return 0;
}

const struct mcq_peer_ref *mcq_idmap_get(const struct mcq_idmap *m, const uint8_t *id, size_t len)
{
    if (len > UINT8_MAX)
        return NULL;
    struct mcq_idmap_node **p = find(m, mcq_siphash24(m->_key, id, len), id, len);
    return p ? &(*p)->ref : NULL;
}

bool mcq_idmap_del(struct mcq_idmap *m, const uint8_t *id, size_t len,
                   const struct mcq_peer_ref *match)
{
    if (len > UINT8_MAX)
        return false;
    struct mcq_idmap_node **p = find(m, mcq_siphash24(m->_key, id, len), id, len);
    if (!p || (match && !mcq_peer_ref_eq(&(*p)->ref, match)))
        return false;
    struct mcq_idmap_node *n = *p;
    *p = n->next;
    free(n);
    m->_count--;
    return true;
}
