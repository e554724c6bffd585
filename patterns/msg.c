/* Messages: a slab object per message with a few inline frame views; longer messages move
 * their views to an arena array that doubles. Bodies are refcounted pages (alloc/page.h). */
#include "patterns/msg_int.h"

#include <errno.h>
#include <string.h>

#include "alloc/arena.h"

struct mcq_msg *mcq_msg_new(struct mcq_shard *sh)
{
    struct mcq_proto_shard *ps = mcq_proto_shard_get(sh);
    return ps ? mcq_msg_new_on(ps) : NULL;
}

void mcq_msg_free(struct mcq_msg *m)
{
    if (!m)
        return;
    struct mcq_proto_shard *ps = m->ps;
    for (uint32_t i = 0; i < m->n; i++)
        mcq_view_unref(&m->f[i]);
    if (m->f != m->inl)
        mcq_arena_free(ps->arena, m->f);
    mcq_slab_free(&ps->msgs, m);
    if (ps->stopping) /* only a stopping shard's state can be due for destruction */
        mcq_proto_shard_settle(ps);
}

int mcq_msg_grow(struct mcq_msg *m)
{
    if (m->n < m->cap)
        return 0;
    if (m->cap > UINT32_MAX / 2)
        return -ENOMEM;
    uint32_t cap = m->cap * 2;
    struct mcq_view *f = mcq_arena_alloc(m->ps->arena, (size_t)cap * sizeof(*f), 0);
    if (!f)
        return -ENOMEM;
    memcpy(f, m->f, (size_t)m->n * sizeof(*f));
    if (m->f != m->inl)
        mcq_arena_free(m->ps->arena, m->f);
    m->f = f;
    m->cap = cap;
    return 0;
}

/* A view of a copy of data[0..len) in a right-sized page (or the shared empty page). */
static int msg_copy(struct mcq_msg *m, const void *data, size_t len, struct mcq_view *out)
{
    if (len == 0)
        return mcq_view_slice(&m->ps->empty, 0, 0, out);
    if (len > MCQ_PAGE_MAX)
        return -EMSGSIZE;
    int rc = mcq_page_alloc(m->ps->arena, len, out);
    if (rc < 0)
        return rc == -EINVAL ? -EMSGSIZE : rc;
    memcpy(mcq_view_mut(out), data, len);
    return 0;
}

int mcq_msg_append_view(struct mcq_msg *m, struct mcq_view *v)
{
    if (m->n == m->cap) {
        int rc = mcq_msg_grow(m);
        if (rc < 0)
            return rc;
    }
    /* Field by field: *v was usually just written field by field (mcq_page_alloc), and a
     * load spanning two of those stores waits for them to retire (no store forwarding:
     * ~8 % of a 64 B PUSH send). The empty asm keeps the compiler from merging the two
     * 32-bit loads into one. */
    struct mcq_view *f = &m->f[m->n++];
    uint32_t off = v->off;
    __asm__("" : "+r"(off));
    f->ref = v->ref;
    f->off = off;
    f->len = v->len;
    m->size += f->len;
    v->ref = NULL;
    v->off = 0;
    v->len = 0;
    return 0;
}

int mcq_msg_append(struct mcq_msg *m, const void *data, size_t len)
{
    int rc = mcq_msg_grow(m);
    if (rc < 0)
        return rc;
    struct mcq_view v;
    rc = msg_copy(m, data, len, &v);
    if (rc < 0)
        return rc;
    return mcq_msg_append_view(m, &v);
}

int mcq_msg_append_empty(struct mcq_msg *m)
{
    return mcq_msg_append(m, NULL, 0);
}

int mcq_msg_prepend(struct mcq_msg *m, const void *data, size_t len)
{
    int rc = mcq_msg_grow(m);
    if (rc < 0)
        return rc;
    struct mcq_view v;
    rc = msg_copy(m, data, len, &v);
    if (rc < 0)
        return rc;
    memmove(&m->f[1], &m->f[0], (size_t)m->n * sizeof(*m->f));
    m->f[0] = v;
    m->n++;
    m->size += len;
    return 0;
}

int mcq_msg_pop_front(struct mcq_msg *m, struct mcq_view *out)
{
    if (m->n == 0)
        return -ENOENT;
    struct mcq_view v = m->f[0];
    m->n--;
    memmove(&m->f[0], &m->f[1], (size_t)m->n * sizeof(*m->f));
    m->size -= v.len;
    if (out)
        *out = v;
    else
        mcq_view_unref(&v);
    return 0;
}

unsigned mcq_msg_count(const struct mcq_msg *m)
{
    return m->n;
}

const struct mcq_view *mcq_msg_frame(const struct mcq_msg *m, unsigned i)
{
    return i < m->n ? &m->f[i] : NULL;
}

size_t mcq_msg_size(const struct mcq_msg *m)
{
    return (size_t)m->size;
}

struct mcq_msg *mcq_msg_dup(const struct mcq_msg *m)
{
    struct mcq_msg *d = mcq_msg_new(m->ps->sh);
    if (!d)
        return NULL;
    for (uint32_t i = 0; i < m->n; i++) {
        struct mcq_view v = mcq_view_ref(&m->f[i]);
        if (mcq_msg_append_view(d, &v) < 0) {
            mcq_view_unref(&v);
            mcq_msg_free(d);
            return NULL;
        }
    }
    return d;
}

int mcq_msg_unpin(struct mcq_msg *m)
{
    for (uint32_t i = 0; i < m->n; i++) {
        struct mcq_view *v = &m->f[i];
        if (!v->ref || v->ref == m->ps->empty.ref || !mcq_view_pins_page(v))
            continue;
        struct mcq_view c;
        int rc = v->len ? mcq_view_copy_out(m->ps->arena, v, &c)
                        : mcq_view_slice(&m->ps->empty, 0, 0, &c);
        if (rc < 0)
            return rc;
        mcq_view_unref(v);
        *v = c;
    }
    return 0;
}
