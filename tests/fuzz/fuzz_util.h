/* Shared by the libFuzzer targets: invariant checks that crash (so libFuzzer keeps the
 * input), a reassembly allocator with a size cap (exercises -ENOMEM and keeps huge declared
 * lengths from costing real memory), and a deterministic chunker driven by a seed byte. */
#ifndef MCQ_TESTS_FUZZ_UTIL_H
#define MCQ_TESTS_FUZZ_UTIL_H

#include "zmtp/decoder.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A broken invariant is a finding: print it and abort so libFuzzer saves the input. */
#define FUZZ_CHECK(cond)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond);           \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#define FUZZ_ALLOC_CAP (1u << 20) /* bytes: larger reassembly requests fail with NULL */

struct fuzz_alloc {
    long live;  /* buffers handed out and not released */
    size_t cap; /* largest request granted */
};

static void *fuzz_alloc_fn(void *user, size_t size, void **handle)
{
    struct fuzz_alloc *a = user;
    FUZZ_CHECK(size > 0);
    *handle = NULL;
    if (size > a->cap)
        return NULL;
    void *p = malloc(size);
    FUZZ_CHECK(p != NULL);
    /* Poison-free pattern so a read of bytes the decoder never wrote is still defined but
     * visible in a differential comparison. */
    memset(p, 0xA5, size);
    a->live++;
    *handle = p;
    return p;
}

static void fuzz_release_fn(void *user, void *handle)
{
    struct fuzz_alloc *a = user;
    FUZZ_CHECK(handle != NULL);
    FUZZ_CHECK(a->live > 0);
    a->live--;
    free(handle);
}

static inline struct mcq_zmtp_allocator fuzz_allocator(struct fuzz_alloc *a)
{
    return (struct mcq_zmtp_allocator){
        .alloc = fuzz_alloc_fn, .release = fuzz_release_fn, .user = a};
}

/* Chunk sizes from a seed: 0 = one chunk; otherwise 1..(seed % 64 + 1) bytes, varying. */
struct chunker {
    uint32_t state;
    size_t max;
};

static inline void chunker_init(struct chunker *c, uint8_t seed)
{
    c->state = 0x9E3779B9u ^ seed;
    c->max = seed ? (size_t)(seed % 64) + 1 : SIZE_MAX;
}

static inline size_t chunker_next(struct chunker *c, size_t left)
{
    if (c->max == SIZE_MAX)
        return left;
    c->state ^= c->state << 13;
    c->state ^= c->state >> 17;
    c->state ^= c->state << 5;
    size_t n = c->state % c->max + 1;
    return n < left ? n : left;
}

/* A heap copy of exactly n bytes, so ASan catches any read past the chunk the engine was
 * given (libFuzzer's own buffer is larger than a chunk). Caller frees. */
static inline uint8_t *fuzz_dup(const uint8_t *p, size_t n)
{
    uint8_t *q = malloc(n ? n : 1);
    FUZZ_CHECK(q != NULL);
    if (n)
        memcpy(q, p, n);
    return q;
}

#endif
