#include "alloc/page.h"
#include "alloc/arena.h"
#include "alloc/arena_impl.h"
#include "alloc/slab.h"

#include <sanitizer/asan_interface.h>
#include <stdatomic.h>
#include <string.h>

/* Data bytes of the recycled classes: small classes give copied-out frames a right-sized
 * home; the largest is the standard read page. */
#define PAGE_CLASS_SIZES(X) X(256) X(1024) X(4096) X(16384) X(MCQ_PAGE_SIZE)
#define PAGE_CLASS_SIZE(bytes) (bytes),
#define PAGE_CLASS_CACHE_MAX(bytes) (MCQ_PAGE_CACHE_MAX_BYTES / (bytes)),
static const uint32_t page_class_size[MCQ_PAGE_CLASSES] = {PAGE_CLASS_SIZES(PAGE_CLASS_SIZE)};
/* Free pages each class keeps (MCQ_PAGE_CACHE_MAX_BYTES of them), as constants: a division
 * per freed page was a visible share of a 64 B send. */
static const uint32_t page_class_cache_max[MCQ_PAGE_CLASSES] = {
    PAGE_CLASS_SIZES(PAGE_CLASS_CACHE_MAX)};
/* Class index of exact-size pages that go back to jemalloc. */
#define PAGE_LARGE MCQ_PAGE_CLASSES

struct mcq_page {
    struct mcq_ref ref; /* first: views point here; ref._local counts the owner's views */
    /* One unit for all owner views together (while ref._local > 0) plus one per export or
     * proxy in flight, far below 2^32. Zero means free. */
    _Atomic uint32_t shared;
    uint8_t cls;
    struct mcq_arena *owner;
    struct mcq_page *next; /* free-list link, owner only */
};

struct mcq_proxy {
    struct mcq_ref ref; /* first: views point here; ref._local counts the holder's views */
    struct mcq_page *page;
    struct mcq_arena *holder; /* arena whose slab the proxy came from */
};

int mcq_page_arena_init(struct mcq_arena *a)
{
    int rc =
        mcq_slab_init_internal(&a->page_headers, a, sizeof(struct mcq_page), &a->headers_in_use);
    if (rc == 0)
        rc = mcq_slab_init_internal(&a->proxies, a, sizeof(struct mcq_proxy), &a->proxies_in_use);
    return rc;
}

/* Gives a page's data and header back to jemalloc and the header slab. Owner thread. */
static void page_destroy(struct mcq_arena *a, struct mcq_page *p)
{
    if (p->cls < PAGE_LARGE) {
        mcq_stat_sub(&a->class_pages[p->cls], 1);
    } else {
        mcq_stat_sub(&a->large_pages, 1);
        mcq_stat_sub(&a->large_bytes, p->ref._cap);
    }
    mcq_arena_free(a, p->ref._data);
    mcq_slab_free(&a->page_headers, p);
}

void mcq_page_arena_fini(struct mcq_arena *a)
{
    for (unsigned c = 0; c < MCQ_PAGE_CLASSES; c++) {
        while (a->page_cache[c]) {
            struct mcq_page *p = a->page_cache[c];
            a->page_cache[c] = p->next;
            ASAN_UNPOISON_MEMORY_REGION(p->ref._data, p->ref._cap);
            mcq_stat_sub(&a->cached_pages[c], 1);
            page_destroy(a, p);
        }
    }
    mcq_slab_fini_internal(&a->page_headers);
    mcq_slab_fini_internal(&a->proxies);
}

static unsigned page_class(size_t size)
{
    for (unsigned c = 0; c < MCQ_PAGE_CLASSES; c++)
        if (size <= page_class_size[c])
            return c;
    return PAGE_LARGE;
}

/* mcq_page_alloc's miss: a new page of class cls (cap `size` for PAGE_LARGE) from
 * jemalloc. Out of line so the cache hit saves no registers for it. NULL when out of memory. */
static __attribute__((noinline)) struct mcq_page *page_new(struct mcq_arena *a, unsigned cls,
                                                           size_t size)
{
    uint32_t cap = cls < PAGE_LARGE ? page_class_size[cls] : (uint32_t)size;
    struct mcq_page *p = mcq_slab_alloc(&a->page_headers);
    if (!p)
        return NULL;
    uint8_t *data = mcq_arena_alloc(a, cap, 0);
    if (!data) {
        mcq_slab_free(&a->page_headers, p);
        return NULL;
    }
    *p = (struct mcq_page){
        .ref = {._data = data, ._cap = cap, ._kind = MCQ_REF_PAGE},
        .cls = (uint8_t)cls,
        .owner = a,
    };
    if (cls < PAGE_LARGE) {
        mcq_stat_add(&a->class_pages[cls], 1);
    } else {
        mcq_stat_add(&a->large_pages, 1);
        mcq_stat_add(&a->large_bytes, cap);
    }
    return p;
}

int mcq_page_alloc(struct mcq_arena *a, size_t size, struct mcq_view *out)
{
    if (size > MCQ_PAGE_MAX)
        return -EINVAL;
    unsigned cls = page_class(size);
    struct mcq_page *p = cls < PAGE_LARGE ? a->page_cache[cls] : NULL;
    if (__builtin_expect(p != NULL, 1)) {
        a->page_cache[cls] = p->next;
        mcq_stat_sub(&a->cached_pages[cls], 1);
        ASAN_UNPOISON_MEMORY_REGION(p->ref._data, p->ref._cap);
    } else {
        p = page_new(a, cls, size);
        if (!p)
            return -ENOMEM;
    }
    p->ref._local = 1;
    atomic_store_explicit(&p->shared, 1, memory_order_relaxed);
    *out = (struct mcq_view){&p->ref, 0, (uint32_t)size};
    return 0;
}

/* The page's atomic count reached zero on its owner thread: recycle or free it. */
static void page_free_local(struct mcq_arena *a, struct mcq_page *p)
{
    unsigned cls = p->cls;
    if (cls < PAGE_LARGE && atomic_load_explicit(&a->cached_pages[cls], memory_order_relaxed) <
                                page_class_cache_max[cls]) {
        p->next = a->page_cache[cls];
        a->page_cache[cls] = p;
        mcq_stat_add(&a->cached_pages[cls], 1);
        /* Under ASan a view used after its last unref traps until the page is reused. */
        ASAN_POISON_MEMORY_REGION(p->ref._data, p->ref._cap);
        return;
    }
    page_destroy(a, p);
}

/* Drops one unit of the page's atomic count, on any thread. */
static void page_drop_shared(struct mcq_page *p)
{
    /* Release: this thread's reads of the page happen before whoever frees it; acquire:
     * the last dropper sees every other thread's reads done before it reuses the bytes. */
    if (atomic_fetch_sub_explicit(&p->shared, 1, memory_order_acq_rel) != 1)
        return;
    struct mcq_arena *owner = p->owner;
    if (mcq_arena_current() == owner) {
        page_free_local(owner, p);
        return;
    }
    atomic_fetch_add_explicit(&owner->remote_frees_total, 1, memory_order_relaxed);
    owner->remote_free(owner->remote_free_ctx, owner, p);
}

void mcq_view_release(struct mcq_ref *r)
{
    if (r->_kind == MCQ_REF_PAGE) {
        /* The owner's views live only on the owner thread, so this is the owner dropping
         * their unit: no need to consult the current arena. */
        struct mcq_page *p = (struct mcq_page *)r;
        /* A count of 1 is the owner views' own unit: no export is in flight, and none can
         * appear (exports come from views, and every other holder keeps a unit of its
         * own), so the page is ours alone and freeing it needs no atomic read-modify-write,
         * the common case for a message body that never left its shard. Acquire: exports
         * dropped elsewhere finished their reads before we reuse the bytes. */
        if (atomic_load_explicit(&p->shared, memory_order_acquire) == 1) {
            atomic_store_explicit(&p->shared, 0, memory_order_relaxed);
            page_free_local(p->owner, p);
            return;
        }
        if (atomic_fetch_sub_explicit(&p->shared, 1, memory_order_acq_rel) == 1)
            page_free_local(p->owner, p);
        return;
    }
    struct mcq_proxy *x = (struct mcq_proxy *)r;
    struct mcq_page *p = x->page;
    mcq_slab_free(&x->holder->proxies, x);
    page_drop_shared(p);
}

static uint64_t stat_read(const _Atomic uint64_t *c)
{
    return atomic_load_explicit(c, memory_order_relaxed);
}

void mcq_page_arena_stats(const struct mcq_arena *a, struct mcq_arena_stats *out)
{
    uint64_t pages = stat_read(&a->large_pages), bytes = stat_read(&a->large_bytes), cached = 0;
    for (unsigned c = 0; c < MCQ_PAGE_CLASSES; c++) {
        /* Cached first: a page counts in class_pages before it can be cached, so another
         * thread's snapshot cannot see more cached than held unless a page was destroyed
         * in between; the clamp covers that. */
        uint64_t k = stat_read(&a->cached_pages[c]);
        uint64_t held = stat_read(&a->class_pages[c]);
        uint64_t used = held > k ? held - k : 0;
        pages += used;
        bytes += used * page_class_size[c];
        cached += k;
    }
    out->pages_in_use = pages;
    out->bytes_in_use = bytes;
    out->pages_cached = cached;
}

int mcq_view_copy_out(struct mcq_arena *a, const struct mcq_view *v, struct mcq_view *out)
{
    int rc = mcq_page_alloc(a, v->len, out);
    if (rc == 0)
        memcpy(mcq_view_mut(out), mcq_view_data(v), v->len);
    return rc;
}

static struct mcq_page *ref_page(struct mcq_ref *r)
{
    return r->_kind == MCQ_REF_PAGE ? (struct mcq_page *)r : ((struct mcq_proxy *)r)->page;
}

int mcq_view_export(const struct mcq_view *v, struct mcq_export *out)
{
    struct mcq_page *p = ref_page(v->ref);
    if (!p->owner->remote_free)
        return -ENOTSUP;
    /* Relaxed suffices: the caller's reference keeps the count above zero, and the export
     * reaches its destination through the mesh, which orders the page bytes. */
    atomic_fetch_add_explicit(&p->shared, 1, memory_order_relaxed);
    *out = (struct mcq_export){p, v->off, v->len};
    return 0;
}

int mcq_view_import(struct mcq_arena *a, const struct mcq_export *x, struct mcq_view *out)
{
    struct mcq_page *p = x->page;
    if (p->owner == a) {
        /* Back home: no proxy. The export's unit becomes the owner views' unit, or is
         * dropped if they hold one already (then the count stays above zero). */
        if (p->ref._local++ > 0)
            atomic_fetch_sub_explicit(&p->shared, 1, memory_order_relaxed);
        *out = (struct mcq_view){&p->ref, x->off, x->len};
        return 0;
    }
    struct mcq_proxy *px = mcq_slab_alloc(&a->proxies);
    if (!px)
        return -ENOMEM;
    *px = (struct mcq_proxy){
        .ref = {._data = p->ref._data, ._local = 1, ._cap = p->ref._cap, ._kind = MCQ_REF_PROXY},
        .page = p,
        .holder = a,
    };
    *out = (struct mcq_view){&px->ref, x->off, x->len};
    return 0;
}

void mcq_export_drop(const struct mcq_export *x)
{
    page_drop_shared(x->page);
}

int mcq_page_reclaim(struct mcq_arena *owner, struct mcq_page *page)
{
    if (page->owner != owner || atomic_load_explicit(&page->shared, memory_order_acquire) != 0)
        return -EINVAL;
    mcq_stat_add(&owner->remote_reclaimed, 1);
    page_free_local(owner, page);
    return 0;
}
