/* Refcounted message pages and the views that point into them.
 *
 * A page is a header (from the arena's header slab) and a block of data bytes. Sizes up to
 * MCQ_PAGE_SIZE come in a few classes whose pages are recycled on per-arena free lists, so a
 * shard in steady state makes no jemalloc call for them; bigger requests get a page of
 * exactly their size, given back to jemalloc when freed. A view {ref, off, len} names bytes
 * of one page and holds one reference on it.
 *
 * Ownership across shards (DESIGN.md "Memory"). A page is freed only by its owner arena.
 * - On the owner, views point at the page itself and count in a plain integer; all of
 *   them together hold one unit of the page's atomic count.
 * - mcq_view_export takes one more atomic unit, for one destination shard. There,
 *   mcq_view_import wraps it in a proxy from the destination's own slab; views through the
 *   proxy count in the proxy's plain integer, and the proxy drops its unit when that count
 *   reaches zero. A fanout to 1000 local subscribers costs one atomic, not 1000.
 * - Whoever drops the atomic count to zero frees the page: locally on the owner thread
 *   (mcq_arena_current() == owner), else through the owner's remote-free hook
 *   (mcq_arena_set_remote_free), after which the owner calls mcq_page_reclaim.
 * A view only ever lives on one thread: to move bytes to another shard, export them. Views
 * of local pages and of proxies behave the same to their users. */
#ifndef MCQ_ALLOC_PAGE_H
#define MCQ_ALLOC_PAGE_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct mcq_arena;
struct mcq_page;

/* Bytes of data in a standard page: the read-buffer size, and the largest recycled class. */
#define MCQ_PAGE_SIZE (64u * 1024u)
/* Largest page, in bytes: view offsets and lengths are 32-bit. */
#define MCQ_PAGE_MAX ((size_t)UINT32_MAX)
/* A view pins its page when it covers less than 1/MCQ_VIEW_PIN_RATIO of it. */
#define MCQ_VIEW_PIN_RATIO 4u

enum mcq_ref_kind {
    MCQ_REF_PAGE = 1,  /* the page itself, on its owner */
    MCQ_REF_PROXY = 2, /* a local handle on another arena's page */
};

/* What a view points at: the first member of both a page header and a proxy, so the hot
 * accessors need no branch. Private; only the inline functions below touch it. */
struct mcq_ref {
    uint8_t *_data;  /* the page's first data byte */
    uint32_t _local; /* views through this ref, on the thread that holds it */
    uint32_t _cap;   /* data bytes in the page */
    uint8_t _kind;   /* enum mcq_ref_kind */
};

/* Bytes [off, off + len) of a page, holding one reference. Zero-initialised means empty. */
struct mcq_view {
    struct mcq_ref *ref;
    uint32_t off, len;
};

/* One atomic reference on a page, in transit to one other shard (e.g. inside a mesh entry).
 * Consumed exactly once by mcq_view_import or mcq_export_drop. */
struct mcq_export {
    struct mcq_page *page;
    uint32_t off, len;
};

/* Allocates a page of at least `size` data bytes on arena `a` and returns in *out a new
 * view {page, 0, size} holding the only reference. Owner thread. 0, -EINVAL (size above
 * MCQ_PAGE_MAX) or -ENOMEM. */
int mcq_page_alloc(struct mcq_arena *a, size_t size, struct mcq_view *out);

/* Called by mcq_view_unref when a ref's local count reaches zero; not for direct use. */
void mcq_view_release(struct mcq_ref *r);

/* The view's first byte. The view must not be empty. */
static inline const uint8_t *mcq_view_data(const struct mcq_view *v)
{
    return v->ref->_data + v->off;
}

/* The view's first byte, writable: only for the sole holder of a page that was never
 * exported or sliced for others, e.g. a fresh read buffer being filled. */
static inline uint8_t *mcq_view_mut(const struct mcq_view *v)
{
    return v->ref->_data + v->off;
}

/* The view's length in bytes. */
static inline uint32_t mcq_view_len(const struct mcq_view *v)
{
    return v->len;
}

/* Returns a copy of *v that holds a new reference (a plain increment). The caller holds
 * *v; at most UINT32_MAX views may share one ref on one thread. */
static inline struct mcq_view mcq_view_ref(const struct mcq_view *v)
{
    v->ref->_local++;
    return *v;
}

/* Drops the reference *v holds and empties *v. An empty view is left alone. */
static inline void mcq_view_unref(struct mcq_view *v)
{
    struct mcq_ref *r = v->ref;
    if (!r)
        return;
    *v = (struct mcq_view){0};
    if (--r->_local == 0)
        mcq_view_release(r);
}

/* Sets *out to bytes [off, off + len) of *v, sharing its page with a new reference. Borrows
 * *v. 0, or -EINVAL when the range is not inside *v (out untouched). */
static inline int mcq_view_slice(const struct mcq_view *v, size_t off, size_t len,
                                 struct mcq_view *out)
{
    if (off > v->len || len > v->len - off)
        return -EINVAL;
    v->ref->_local++;
    *out = (struct mcq_view){v->ref, v->off + (uint32_t)off, (uint32_t)len};
    return 0;
}

/* Narrows *v in place to its bytes [off, off + len), keeping its reference. 0, or -EINVAL
 * when the range is not inside *v (v untouched). */
static inline int mcq_view_narrow(struct mcq_view *v, size_t off, size_t len)
{
    if (off > v->len || len > v->len - off)
        return -EINVAL;
    v->off += (uint32_t)off;
    v->len = (uint32_t)len;
    return 0;
}

/* Whether holding *v keeps a page alive that is mostly other bytes: then a view that will
 * sit in a queue is better copied out (mcq_view_copy_out). */
static inline bool mcq_view_pins_page(const struct mcq_view *v)
{
    return (uint64_t)v->len * MCQ_VIEW_PIN_RATIO < v->ref->_cap;
}

/* Copies the bytes of *v into a new right-sized page of arena `a` (the calling shard's) and
 * returns a view of them in *out with the only reference. Borrows *v. 0 or -ENOMEM. */
int mcq_view_copy_out(struct mcq_arena *a, const struct mcq_view *v, struct mcq_view *out);

/* Takes one atomic reference on the page under *v (a local page or a proxy's page, so
 * foreign pages can be passed on to a third shard) and describes it in *out, for one other
 * shard. Borrows *v. 0, or -ENOTSUP when the page's owner has no remote-free hook. */
int mcq_view_export(const struct mcq_view *v, struct mcq_export *out);

/* On the destination shard, whose arena is `a`: turns *x into a view in *out holding a local
 * reference, through a new proxy from a's slab, or directly when `a` owns the page. Takes
 * *x on success; on -ENOMEM *x is still the caller's to import or drop. */
int mcq_view_import(struct mcq_arena *a, const struct mcq_export *x, struct mcq_view *out);

/* Drops the reference *x holds without importing it (e.g. the target peer is gone). Any
 * thread; may free the page (owner thread) or call the owner's remote-free hook. */
void mcq_export_drop(const struct mcq_export *x);

/* On the owner thread: takes back `page` whose last reference was dropped elsewhere and
 * handed over by the remote-free hook. 0, or -EINVAL if `owner` does not own the page or
 * the page is still referenced. */
int mcq_page_reclaim(struct mcq_arena *owner, struct mcq_page *page);

#endif
