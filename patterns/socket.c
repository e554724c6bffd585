/* Sockets spanning every shard: lifecycle (create, bind, connect, close), the peers each
 * shard owns, the per-shard directory of all peers, and the mesh protocol between the
 * partitions (data with credits, peer-up/down, routing-id claims, the close fence). The
 * shape is described in socket_int.h; the socket types' rules are in route.c. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "alloc/arena.h"
#include "patterns/msg_int.h"
#include "patterns/socket_int.h"
#include "runtime/log.h"
#include "runtime/timer.h"

#define LB_MIN_CAP 8u   /* first size of the load-balancing ring */
#define DIR_MIN_CAP 16u /* first size of a directory table */
#define OWN_MIN_CAP 16u /* first number of own slots */

/* --- small queues --------------------------------------------------------------------------- */

void mcq_heldq_push(struct mcq_heldq *q, struct mcq_held *h)
{
    h->next = NULL;
    if (!q->tail)
        q->tail = &q->head;
    *q->tail = h;
    q->tail = &h->next;
    q->len++;
}

struct mcq_held *mcq_heldq_pop(struct mcq_heldq *q)
{
    struct mcq_held *h = q->head;
    if (!h)
        return NULL;
    q->head = h->next;
    if (!q->head)
        q->tail = &q->head;
    q->len--;
    return h;
}

void mcq_heldq_free(struct mcq_heldq *q)
{
    struct mcq_held *h;
    while ((h = mcq_heldq_pop(q))) {
        mcq_msg_free(h->m);
        mcq_msg_free(h->env);
        free(h);
    }
}

/* --- cross-shard messages ------------------------------------------------------------------- */

/* A message in transit to another shard: its frames as exports (one atomic reference each).
 * The record itself lives in a small page of the sender's arena, which the receiver drops
 * like a frame: it goes home through the remote-free path and is recycled there, so a
 * cross-shard send makes no allocator call in steady state. */
struct xmsg {
    struct mcq_export self; /* the page holding this record */
    struct mcq_socket *s;
    struct mcq_peer_ref ref; /* data: the target; reply: the peer that answered */
    uint16_t from;
    bool req;
    uint32_t n;
    struct mcq_export f[];
};

/* Frees the record (on either shard); its contents were consumed or dropped. */
static void xmsg_free(struct xmsg *x)
{
    struct mcq_export self = x->self;
    mcq_export_drop(&self);
}

static void xmsg_drop(struct xmsg *x)
{
    for (uint32_t i = 0; i < x->n; i++)
        mcq_export_drop(&x->f[i]);
    xmsg_free(x);
}

/* Exports m's frames (m stays the caller's) into a record from shard sh's arena; NULL with
 * *rc on failure. */
static struct xmsg *xmsg_export(struct mcq_shard *sh, struct mcq_socket *s, const struct mcq_msg *m,
                                int *rc)
{
    unsigned n = mcq_msg_count(m);
    struct mcq_view page;
    *rc = mcq_page_alloc(mcq_shard_arena(sh),
                         sizeof(struct xmsg) + (size_t)n * sizeof(struct mcq_export), &page);
    if (*rc < 0)
        return NULL;
    struct xmsg *x = (struct xmsg *)mcq_view_mut(&page);
    /* The record's own reference travels in it; the local view goes, the memory stays. */
    *rc = mcq_view_export(&page, &x->self);
    mcq_view_unref(&page);
    if (*rc < 0)
        return NULL;
    x->s = s;
    x->n = 0;
    for (unsigned i = 0; i < n; i++) {
        *rc = mcq_view_export(mcq_msg_frame(m, i), &x->f[i]);
        if (*rc < 0) {
            xmsg_drop(x);
            return NULL;
        }
        x->n++;
    }
    return x;
}

/* Turns x into a message of this shard and frees x (also on failure: NULL). */
static struct mcq_msg *xmsg_import(struct mcq_shard *sh, struct xmsg *x)
{
    struct mcq_msg *m = mcq_msg_new(sh);
    bool ok = m != NULL;
    uint32_t i = 0;
    for (; ok && i < x->n; i++) {
        struct mcq_view v;
        if (mcq_view_import(mcq_shard_arena(sh), &x->f[i], &v) < 0) {
            ok = false;
            break;
        }
        if (mcq_msg_append_view(m, &v) < 0) {
            mcq_view_unref(&v);
            ok = false;
            i++;
            break;
        }
    }
    if (!ok) {
        for (; i < x->n; i++)
            mcq_export_drop(&x->f[i]);
        mcq_msg_free(m);
        m = NULL;
        mcq_log_error("socket: out of memory taking a message from shard %u", x->from);
    }
    xmsg_free(x);
    return m;
}

/* A lost peer's on_peer_down, kept by its owner until every shard confirmed it dropped the
 * peer (see "peer up and down" below). */
struct xdown {
    struct xdown *next, *prev; /* the partition's pending notes */
    struct mcq_part *pt;
    struct mcq_pstate *ps; /* the peer while it lives (it may reconnect meanwhile) */
    unsigned left;         /* shards yet to confirm */
    int reason;
    struct mcq_peer_info info;
    uint8_t id[MCQ_ROUTING_ID_MAX];
    char address[MCQ_ENDPOINT_TEXT_MAX];
};

/* A control event; broadcasts share one, freed by the last shard to run it. Like a data
 * record it lives in a small page of the sending shard's arena (credits flow all the time:
 * they must not call the allocator either). */
struct xctl {
    struct mcq_export self; /* the page holding this event */
    struct xctl *next;      /* in the arbiter's list of waiting claims */
    struct mcq_socket *s;
    struct mcq_peer_ref ref;
    uint32_t n;         /* credits, or the window of a new peer */
    struct xdown *down; /* peer-down: the owner's note each shard confirms, or NULL */
    _Atomic unsigned refs;
    uint8_t id_len;
    uint8_t id[];
};

/* A new event from partition pt's shard. NULL when out of memory. */
static struct xctl *xctl_new(struct mcq_part *pt, const struct mcq_peer_ref *r, uint32_t n,
                             const uint8_t *id, size_t id_len)
{
    struct mcq_view page;
    if (mcq_page_alloc(mcq_shard_arena(pt->sh), sizeof(struct xctl) + id_len, &page) < 0)
        return NULL;
    struct xctl *c = (struct xctl *)mcq_view_mut(&page);
    int rc = mcq_view_export(&page, &c->self);
    mcq_view_unref(&page);
    if (rc < 0)
        return NULL;
    c->s = pt->s;
    c->ref = *r;
    c->n = n;
    c->down = NULL;
    atomic_init(&c->refs, 1);
    c->id_len = (uint8_t)id_len;
    if (id_len)
        memcpy(c->id, id, id_len);
    return c;
}

static void xctl_put(struct xctl *c)
{
    if (!c)
        return;
    if (atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) == 1) {
        struct mcq_export self = c->self;
        mcq_export_drop(&self);
    }
}

/* Control events are never dropped (mcq_shard_submit_ctl); a failure is out of memory.
 * Whether the event went. */
static bool ctl_send(struct mcq_part *pt, unsigned to, mcq_task_fn fn, struct xctl *c)
{
    int rc = mcq_shard_submit_ctl(pt->sh, to, fn, c);
    if (rc < 0) {
        mcq_log_error("socket: control event to shard %u lost: %s", to, strerror(-rc));
        xctl_put(c);
        return false;
    }
    return true;
}

/* Sends c to every shard (but this one unless self); the number of shards it went to. */
static unsigned ctl_broadcast(struct mcq_part *pt, mcq_task_fn fn, struct xctl *c, bool self)
{
    unsigned n = pt->s->n - (self ? 0 : 1), sent = 0;
    if (n == 0) {
        xctl_put(c);
        return 0;
    }
    atomic_store_explicit(&c->refs, n, memory_order_relaxed);
    for (unsigned to = 0; to < pt->s->n; to++)
        if ((self || to != pt->id) && ctl_send(pt, to, fn, c))
            sent++;
    return sent;
}

static struct mcq_part *part_here(struct mcq_socket *s, struct mcq_shard *sh)
{
    return s->parts[mcq_shard_id(sh)];
}

/* --- directory ------------------------------------------------------------------------------ */

struct mcq_peer_ref mcq_pstate_ref(const struct mcq_pstate *ps)
{
    return (struct mcq_peer_ref){.slot = ps->slot, .gen = ps->gen, .shard = ps->pt->id};
}

/* The bodies of mcq_part_dent and mcq_part_local, inlined into the send path. */
static inline struct mcq_dent *part_dent(struct mcq_part *pt, const struct mcq_peer_ref *r)
{
    if (r->shard >= pt->s->n)
        return NULL;
    struct mcq_dtab *t = &pt->dir[r->shard];
    if (r->slot >= t->cap || t->v[r->slot].gen != r->gen || r->gen == 0)
        return NULL;
    return &t->v[r->slot];
}

static inline struct mcq_pstate *part_local(struct mcq_part *pt, const struct mcq_peer_ref *r)
{
    if (r->shard != pt->id)
        return NULL;
    struct mcq_dent *d = part_dent(pt, r);
    return d ? d->ps : NULL;
}

struct mcq_dent *mcq_part_dent(struct mcq_part *pt, const struct mcq_peer_ref *r)
{
    return part_dent(pt, r);
}

struct mcq_pstate *mcq_part_local(struct mcq_part *pt, const struct mcq_peer_ref *r)
{
    return part_local(pt, r);
}

static struct mcq_dent *dent_make(struct mcq_part *pt, const struct mcq_peer_ref *r)
{
    struct mcq_dtab *t = &pt->dir[r->shard];
    if (r->slot >= t->cap) {
        uint32_t cap = t->cap ? t->cap : DIR_MIN_CAP;
        while (cap <= r->slot)
            cap *= 2;
        struct mcq_dent *v = realloc(t->v, (size_t)cap * sizeof(*v));
        if (!v)
            return NULL;
        memset(v + t->cap, 0, (size_t)(cap - t->cap) * sizeof(*v));
        t->v = v;
        t->cap = cap;
    }
    return &t->v[r->slot];
}

/* The LB ring changed: the send path's shortcut to a sole local peer follows it. */
static void lb_changed(struct mcq_part *pt)
{
    pt->lb_solo = NULL;
    if (pt->lb_len == 1 && pt->lb[0].shard == pt->id) {
        struct mcq_dent *d = part_dent(pt, &pt->lb[0]);
        pt->lb_solo = d ? d->ps : NULL;
    }
}

static void lb_remove(struct mcq_part *pt, struct mcq_dent *d)
{
    uint32_t pos = (uint32_t)d->lb_pos;
    d->lb_pos = -1;
    pt->lb_len--;
    if (pos != pt->lb_len) {
        pt->lb[pos] = pt->lb[pt->lb_len];
        struct mcq_dent *moved = mcq_part_dent(pt, &pt->lb[pos]);
        if (moved)
            moved->lb_pos = (int32_t)pos;
    }
    if (pt->lb_next >= pt->lb_len)
        pt->lb_next = 0;
    lb_changed(pt);
}

static int lb_add(struct mcq_part *pt, struct mcq_dent *d, const struct mcq_peer_ref *r)
{
    if (pt->lb_len == pt->lb_cap) {
        uint32_t cap = pt->lb_cap ? pt->lb_cap * 2 : LB_MIN_CAP;
        struct mcq_peer_ref *v = realloc(pt->lb, (size_t)cap * sizeof(*v));
        if (!v)
            return -ENOMEM;
        pt->lb = v;
        pt->lb_cap = cap;
    }
    d->lb_pos = (int32_t)pt->lb_len;
    pt->lb[pt->lb_len++] = *r;
    lb_changed(pt);
    return 0;
}

void mcq_part_fire_writable(struct mcq_part *pt)
{
    if (!pt->want_writable || pt->closing)
        return;
    pt->want_writable = false;
    if (pt->s->h.on_writable)
        pt->s->h.on_writable(pt->sh, pt->s, pt->s->h.user);
}

/* A peer appeared (on this shard or another): make its entry, join the LB ring. */
static void dir_up(struct mcq_part *pt, const struct mcq_peer_ref *r, uint32_t window,
                   struct mcq_pstate *ps)
{
    struct mcq_dent *d = dent_make(pt, r);
    if (!d) {
        mcq_log_error("socket: out of memory for the directory; peer unroutable here");
        return;
    }
    *d = (struct mcq_dent){.gen = r->gen, .credits = window, .lb_pos = -1, .ps = ps};
    if (mcq_type_uses_lb(pt->s->type) && lb_add(pt, d, r) < 0)
        mcq_log_error("socket: out of memory for the LB ring; peer skipped here");
    if (mcq_type_uses_lb(pt->s->type))
        mcq_part_fire_writable(pt);
}

static void dir_down(struct mcq_part *pt, const struct mcq_peer_ref *r)
{
    struct mcq_dent *d = mcq_part_dent(pt, r);
    if (!d)
        return;
    if (d->lb_pos >= 0)
        lb_remove(pt, d);
    *d = (struct mcq_dent){.lb_pos = -1};
    mcq_route_peer_gone(pt, r);
}

static void task_up(struct mcq_shard *sh, void *arg)
{
    struct xctl *c = arg;
    struct mcq_part *pt = part_here(c->s, sh);
    if (!pt->closing)
        dir_up(pt, &c->ref, c->n, NULL);
    xctl_put(c);
}

static void task_down_seen(struct mcq_shard *sh, void *arg);

static void task_down(struct mcq_shard *sh, void *arg)
{
    struct xctl *c = arg;
    struct mcq_part *pt = part_here(c->s, sh);
    dir_down(pt, &c->ref);
    /* After its fence a partition sends nothing more; the owner is closing too then, and
     * on_peer_down is not due any more. */
    if (c->down && !pt->fenced) {
        int rc = mcq_shard_submit_ctl(sh, c->ref.shard, task_down_seen, c->down);
        if (rc < 0)
            mcq_log_error("socket: peer-down confirmation to shard %u lost: %s", c->ref.shard,
                          strerror(-rc));
    }
    xctl_put(c);
}

/* --- routing-id claims (arbiter) ------------------------------------------------------------- */

static void settle(struct mcq_pstate *ps);

static void task_bind(struct mcq_shard *sh, void *arg)
{
    struct xctl *c = arg;
    struct mcq_part *pt = part_here(c->s, sh);
    struct mcq_pstate *ps = mcq_part_local(pt, &c->ref);
    if (ps)
        ps->refused = false;
    if (mcq_idmap_put(&pt->ids, c->id, c->id_len, &c->ref, NULL) < 0)
        mcq_log_error("socket: out of memory binding a routing id");
    else if (pt->s->type == MCQ_PAIR)
        mcq_part_fire_writable(pt);
    xctl_put(c);
    if (!ps)
        return;
    ps->claim_pending = false;
    settle(ps);
}

static void task_unbind(struct mcq_shard *sh, void *arg)
{
    struct xctl *c = arg;
    mcq_idmap_del(&part_here(c->s, sh)->ids, c->id, c->id_len, &c->ref);
    xctl_put(c);
}

static void task_refuse(struct mcq_shard *sh, void *arg)
{
    struct xctl *c = arg;
    struct mcq_part *pt = part_here(c->s, sh);
    struct mcq_pstate *ps = mcq_part_local(pt, &c->ref);
    if (ps) {
        ps->refused = true;
        ps->claim_pending = false;
        mcq_heldq_free(&ps->inq);
        mcq_pstate_rcv_check(ps);
        if (pt->s->type == MCQ_PAIR) {
            mcq_log_warn("socket: PAIR already has a peer; closing the new one");
            ps->closing = true;
            mcq_peer_close(ps->peer, MCQ_CLOSE_ABORT);
        } else {
            mcq_log_warn("socket: duplicate routing id; the new peer is ignored until the "
                         "holder leaves");
        }
    }
    xctl_put(c);
}

static void task_kick(struct mcq_shard *sh, void *arg)
{
    struct xctl *c = arg;
    struct mcq_pstate *ps = mcq_part_local(part_here(c->s, sh), &c->ref);
    if (ps && !ps->closing) {
        mcq_log_info("socket: ROUTER_HANDOVER: a new peer took the routing id; closing the old");
        ps->refused = true;
        ps->closing = true;
        mcq_peer_close(ps->peer, MCQ_CLOSE_ABORT);
    }
    xctl_put(c);
}

static bool claim_stale(struct mcq_part *pt, const struct mcq_peer_ref *cur)
{
    return mcq_part_dent(pt, cur) == NULL;
}

/* A ROUTER peer refused for a duplicate id waits at the arbiter and gets the id when the
 * holder leaves (a DEALER that reconnects before its old connection is seen gone). */
static void claim_wait(struct mcq_part *pt, struct xctl *c)
{
    struct xctl *r = xctl_new(pt, &c->ref, 0, NULL, 0);
    if (r)
        ctl_send(pt, c->ref.shard, task_refuse, r);
    if (pt->s->type != MCQ_ROUTER) {
        xctl_put(c);
        return;
    }
    c->next = pt->claim_waiting;
    pt->claim_waiting = c;
}

static void task_claim(struct mcq_shard *sh, void *arg)
{
    struct xctl *c = arg;
    struct mcq_part *pt = part_here(c->s, sh);
    if (pt->closing) {
        xctl_put(c);
        return;
    }
    const struct mcq_peer_ref *cur = mcq_idmap_get(&pt->claims, c->id, c->id_len);
    struct mcq_peer_ref old = cur ? *cur : (struct mcq_peer_ref){0};
    bool handover =
        pt->s->type == MCQ_ROUTER && atomic_load_explicit(&pt->s->handover, memory_order_relaxed);
    if (cur && !claim_stale(pt, cur) && !handover) {
        claim_wait(pt, c);
        return;
    }
    if (mcq_idmap_put(&pt->claims, c->id, c->id_len, &c->ref, NULL) < 0) {
        mcq_log_error("socket: out of memory for a routing-id claim");
        claim_wait(pt, c);
        return;
    }
    if (cur && !claim_stale(pt, &old)) {
        struct xctl *k = xctl_new(pt, &old, 0, NULL, 0);
        if (k)
            ctl_send(pt, old.shard, task_kick, k);
    }
    ctl_broadcast(pt, task_bind, c, true);
}

/* Takes out of the waiting list the claims of `gone` and of peers no longer alive, and
 * returns the first live claim for id (unlinked), if any; id NULL only cleans. */
static struct xctl *claim_next(struct mcq_part *pt, const struct mcq_peer_ref *gone,
                               const uint8_t *id, size_t len)
{
    struct xctl *found = NULL;
    for (struct xctl **p = &pt->claim_waiting; *p;) {
        struct xctl *w = *p;
        bool dead = mcq_peer_ref_eq(&w->ref, gone) || claim_stale(pt, &w->ref);
        bool match = id && !found && !dead && w->id_len == len && memcmp(w->id, id, len) == 0;
        if (dead || match) {
            *p = w->next;
            if (match)
                found = w;
            else
                xctl_put(w);
            continue;
        }
        p = &w->next;
    }
    return found;
}

static void task_release(struct mcq_shard *sh, void *arg)
{
    struct xctl *c = arg;
    struct mcq_part *pt = part_here(c->s, sh);
    if (pt->closing || !mcq_idmap_del(&pt->claims, c->id, c->id_len, &c->ref)) {
        if (!pt->closing)
            xctl_put(claim_next(pt, &c->ref, NULL, 0));
        xctl_put(c);
        return;
    }
    struct xctl *next = claim_next(pt, &c->ref, c->id, c->id_len);
    ctl_broadcast(pt, task_unbind, c, true);
    if (next && mcq_idmap_put(&pt->claims, next->id, next->id_len, &next->ref, NULL) == 0)
        ctl_broadcast(pt, task_bind, next, true);
    else if (next)
        xctl_put(next);
}

static unsigned arbiter_of(struct mcq_socket *s, const uint8_t *id, size_t len)
{
    if (s->type == MCQ_PAIR)
        return 0;
    return (unsigned)(mcq_siphash24(s->hkey, id, len) % s->n);
}

/* Whether the peer's id goes through the claim protocol. */
static bool claims_id(const struct mcq_pstate *ps)
{
    return ps->pt->s->type == MCQ_PAIR || (ps->pt->s->type == MCQ_ROUTER && ps->id_chosen);
}

static void send_claim(struct mcq_pstate *ps, mcq_task_fn fn)
{
    struct mcq_peer_ref r = mcq_pstate_ref(ps);
    struct xctl *c = xctl_new(ps->pt, &r, 0, ps->id, ps->id_len);
    if (!c) {
        mcq_log_error("socket: out of memory for a routing-id claim");
        return;
    }
    ctl_send(ps->pt, arbiter_of(ps->pt->s, ps->id, ps->id_len), fn, c);
}

/* --- auto routing ids ------------------------------------------------------------------------
 * 0x00 + 32 bits, big endian: slot | owner shard (shard_bits) | low 8 bits of the generation.
 * A reply routes from any shard in O(1); the full generation in the directory rejects a
 * stale id unless 256 connections reused the slot in between. */

static void auto_id(const struct mcq_pstate *ps, uint8_t out[MCQ_AUTO_ID_LEN])
{
    const struct mcq_socket *s = ps->pt->s;
    uint32_t v = (ps->slot << (MCQ_AUTO_ID_GEN_BITS + s->shard_bits)) |
                 ((uint32_t)ps->pt->id << MCQ_AUTO_ID_GEN_BITS) |
                 (ps->gen & ((1u << MCQ_AUTO_ID_GEN_BITS) - 1));
    out[0] = 0;
    out[1] = (uint8_t)(v >> 24);
    out[2] = (uint8_t)(v >> 16);
    out[3] = (uint8_t)(v >> 8);
    out[4] = (uint8_t)v;
}

bool mcq_part_resolve(struct mcq_part *pt, const uint8_t *id, size_t len, struct mcq_peer_ref *out)
{
    struct mcq_socket *s = pt->s;
    if (len == MCQ_AUTO_ID_LEN && id[0] == 0) {
        uint32_t v =
            ((uint32_t)id[1] << 24) | ((uint32_t)id[2] << 16) | ((uint32_t)id[3] << 8) | id[4];
        uint32_t gen8 = v & ((1u << MCQ_AUTO_ID_GEN_BITS) - 1);
        uint32_t shard = (v >> MCQ_AUTO_ID_GEN_BITS) & ((1u << s->shard_bits) - 1);
        uint32_t slot = v >> (MCQ_AUTO_ID_GEN_BITS + s->shard_bits);
        if (shard >= s->n || slot >= pt->dir[shard].cap)
            return false;
        const struct mcq_dent *d = &pt->dir[shard].v[slot];
        if (!d->gen || (d->gen & ((1u << MCQ_AUTO_ID_GEN_BITS) - 1)) != gen8)
            return false;
        *out = (struct mcq_peer_ref){.slot = slot, .gen = d->gen, .shard = (uint16_t)shard};
        return true;
    }
    const struct mcq_peer_ref *r = mcq_idmap_get(&pt->ids, id, len);
    if (!r || !mcq_part_dent(pt, r))
        return false;
    *out = *r;
    return true;
}

/* --- sending to a peer ----------------------------------------------------------------------- */

static uint32_t credit_batch(const struct mcq_pstate *ps)
{
    return (ps->cfg->window + 1) / 2;
}

static void task_credit(struct mcq_shard *sh, void *arg)
{
    struct xctl *c = arg;
    struct mcq_part *pt = part_here(c->s, sh);
    struct mcq_dent *d = mcq_part_dent(pt, &c->ref);
    if (d) {
        d->credits += c->n;
        mcq_part_fire_writable(pt);
    }
    xctl_put(c);
}

/* A message from shard `from` went into ps's send queue: count the credit it frees and
 * return credits in batches (libzmq's LWM) so the window never closes for good. */
static void handed_over(struct mcq_pstate *ps, unsigned from, bool req)
{
    struct mcq_part *pt = ps->pt;
    if (req)
        ps->req_from = (int32_t)from;
    if (from == pt->id || pt->closing)
        return;
    if (++ps->owed[from] < credit_batch(ps))
        return;
    struct mcq_peer_ref r = mcq_pstate_ref(ps);
    struct xctl *c = xctl_new(pt, &r, ps->owed[from], NULL, 0);
    if (!c) {
        mcq_log_error("socket: out of memory returning credits");
        return;
    }
    ps->owed[from] = 0;
    ctl_send(pt, from, task_credit, c);
}

/* REQ peers answer one request at a time, socket-wide: with several shards asking the same
 * peer, a reply could otherwise not be told apart (a ROUTER may answer in any order). */
static bool req_busy(const struct mcq_pstate *ps, bool req)
{
    return req && ps->req_from >= 0;
}

/* Moves backlogged messages into the peer's queue while it takes them; a refusal arms the
 * peer's writable(), which calls this again (a busy REQ peer: mcq_pstate_req_done). */
static void backlog_drain(struct mcq_pstate *ps)
{
    while (ps->backlog.head) {
        struct mcq_held *h = ps->backlog.head;
        /* A closing partition drops replies, so a busy REQ peer would hold the rest forever. */
        if (req_busy(ps, h->req) && !ps->pt->closing)
            return;
        int rc = mcq_peer_send(ps->peer, h->m);
        if (rc == -EAGAIN)
            return;
        mcq_heldq_pop(&ps->backlog);
        if (rc < 0)
            mcq_msg_free(h->m);
        handed_over(ps, h->from, h->req && rc == 0);
        free(h);
    }
}

/* At close: the whole backlog goes into the peer's queue, past its high-water marks (these
 * messages were accepted; the linger deadline bounds what happens to them next). */
static void backlog_flush(struct mcq_pstate *ps)
{
    struct mcq_held *h;
    while ((h = mcq_heldq_pop(&ps->backlog))) {
        if (mcq_peer_send_accepted(ps->peer, h->m) < 0)
            mcq_msg_free(h->m);
        handed_over(ps, h->from, false);
        free(h);
    }
}

void mcq_pstate_req_done(struct mcq_pstate *ps)
{
    ps->req_from = -1;
    backlog_drain(ps);
}

static void task_data(struct mcq_shard *sh, void *arg)
{
    struct xmsg *x = arg;
    struct mcq_part *pt = part_here(x->s, sh);
    struct mcq_pstate *ps = mcq_part_local(pt, &x->ref);
    if (pt->closing || !ps || !ps->up) {
        xmsg_drop(x);
        return;
    }
    unsigned from = x->from;
    bool req = x->req;
    struct mcq_msg *m = xmsg_import(sh, x);
    if (!m) {
        handed_over(ps, from, false);
        return;
    }
    if (!ps->backlog.head && !req_busy(ps, req)) {
        int rc = mcq_peer_send(ps->peer, m);
        if (rc == 0) {
            handed_over(ps, from, req);
            return;
        }
        if (rc != -EAGAIN) {
            /* Lost (peer closing, or no memory): the credit still goes back. */
            mcq_msg_free(m);
            handed_over(ps, from, false);
            return;
        }
    }
    struct mcq_held *h = malloc(sizeof(*h));
    if (!h) {
        mcq_log_error("socket: out of memory queueing for a peer; message dropped");
        mcq_msg_free(m);
        handed_over(ps, from, false);
        return;
    }
    *h = (struct mcq_held){.m = m, .from = (uint16_t)from, .req = req};
    mcq_heldq_push(&ps->backlog, h);
}

static int route_remote(struct mcq_part *pt, const struct mcq_peer_ref *r, struct mcq_msg *m,
                        bool req);

/* part_route to a local peer (ps may be NULL: gone). */
static inline int route_local(struct mcq_part *pt, struct mcq_pstate *ps, struct mcq_msg *m,
                              bool req)
{
    if (!ps || !ps->up || ps->refused)
        return -EHOSTUNREACH;
    /* Behind other shards' messages (the backlog's refusal already armed writable()), or
     * answering another shard's request (its reply fires on_writable here). */
    if (ps->backlog.head || req_busy(ps, req))
        return -EAGAIN;
    int rc = mcq_peer_send(ps->peer, m);
    if (rc == -ENOTCONN)
        return -EHOSTUNREACH;
    /* A local send owes no credits; only a REQ request marks the peer busy. */
    if (rc == 0 && req)
        handed_over(ps, pt->id, req);
    return rc;
}

static inline int part_route(struct mcq_part *pt, const struct mcq_peer_ref *r, struct mcq_msg *m,
                             bool req)
{
    if (r->shard == pt->id)
        return route_local(pt, part_local(pt, r), m, req);
    return route_remote(pt, r, m, req);
}

int mcq_part_route(struct mcq_part *pt, const struct mcq_peer_ref *r, struct mcq_msg *m, bool req)
{
    return part_route(pt, r, m, req);
}

static int route_remote(struct mcq_part *pt, const struct mcq_peer_ref *r, struct mcq_msg *m,
                        bool req)
{
    struct mcq_dent *d = part_dent(pt, r);
    if (!d)
        return -EHOSTUNREACH;
    if (!d->credits)
        return -EAGAIN;
    int rc;
    struct xmsg *x = xmsg_export(pt->sh, pt->s, m, &rc);
    if (!x)
        return rc;
    x->ref = *r;
    x->from = (uint16_t)pt->id;
    x->req = req;
    rc = mcq_shard_submit_ctl(pt->sh, r->shard, task_data, x);
    if (rc < 0) {
        xmsg_drop(x);
        return rc;
    }
    d->credits--;
    mcq_msg_free(m);
    return 0;
}

int mcq_part_lb_send(struct mcq_part *pt, struct mcq_msg *m, bool req, struct mcq_peer_ref *chosen)
{
    if (pt->lb_solo) {
        /* One peer, on this shard (a connecting PUSH, a DEALER with one server): skip the
         * ring and the directory lookup, a chain of dependent loads per message. */
        int rc = route_local(pt, pt->lb_solo, m, req);
        if (rc == 0 && chosen)
            *chosen = pt->lb[0];
        if (rc != -EAGAIN && rc != -EHOSTUNREACH)
            return rc;
        pt->want_writable = true;
        return -EAGAIN;
    }
    /* lb_next < lb_len (lb_remove keeps it so); wrap by comparison, not division. */
    uint32_t idx = pt->lb_next;
    for (uint32_t i = 0; i < pt->lb_len; i++) {
        struct mcq_peer_ref r = pt->lb[idx];
        if (++idx == pt->lb_len)
            idx = 0;
        int rc = part_route(pt, &r, m, req);
        if (rc == 0) {
            pt->lb_next = idx;
            if (chosen)
                *chosen = r;
            return 0;
        }
        if (rc != -EAGAIN && rc != -EHOSTUNREACH)
            return rc;
    }
    pt->want_writable = true;
    return -EAGAIN;
}

static void task_reply(struct mcq_shard *sh, void *arg)
{
    struct xmsg *x = arg;
    struct mcq_part *pt = part_here(x->s, sh);
    struct mcq_peer_ref from = x->ref;
    if (pt->closing) {
        xmsg_drop(x);
        return;
    }
    struct mcq_msg *m = xmsg_import(sh, x);
    if (m)
        mcq_route_req_reply(pt, &from, m);
}

void mcq_part_forward_reply(struct mcq_part *pt, unsigned to, const struct mcq_peer_ref *from,
                            struct mcq_msg *m)
{
    int rc;
    struct xmsg *x = xmsg_export(pt->sh, pt->s, m, &rc);
    mcq_msg_free(m);
    if (!x) {
        mcq_log_error("socket: cannot pass a reply to shard %u: %s", to, strerror(-rc));
        return;
    }
    x->ref = *from;
    x->from = (uint16_t)pt->id;
    x->req = false;
    rc = mcq_shard_submit_ctl(pt->sh, to, task_reply, x);
    if (rc < 0) {
        mcq_log_error("socket: cannot pass a reply to shard %u: %s", to, strerror(-rc));
        xmsg_drop(x);
    }
}

/* --- local peers ----------------------------------------------------------------------------- */

static struct mcq_pstate *pstate_new(struct mcq_part *pt, const struct mcq_cfgsnap *cfg)
{
    unsigned n = pt->s->n;
    struct mcq_pstate *ps = calloc(1, sizeof(*ps));
    if (!ps)
        return NULL;
    ps->owed = calloc(n, sizeof(*ps->owed));
    if (!ps->owed) {
        free(ps);
        return NULL;
    }
    ps->req_from = -1;
    ps->pt = pt;
    ps->cfg = cfg;
    ps->next = pt->peers;
    if (pt->peers)
        pt->peers->prev = ps;
    pt->peers = ps;
    pt->live++;
    return ps;
}

static void maybe_fence(struct mcq_part *pt);

static void pstate_free(struct mcq_pstate *ps)
{
    struct mcq_part *pt = ps->pt;
    if (ps->down)
        ps->down->ps = NULL;
    mcq_heldq_free(&ps->backlog);
    mcq_heldq_free(&ps->inq);
    if (ps->prev)
        ps->prev->next = ps->next;
    else
        pt->peers = ps->next;
    if (ps->next)
        ps->next->prev = ps->prev;
    free(ps->owed);
    free(ps);
    pt->live--;
    maybe_fence(pt);
}

static int slot_take(struct mcq_part *pt, uint32_t *slot)
{
    if (pt->nfree) {
        *slot = pt->free_slots[--pt->nfree];
        return 0;
    }
    if (pt->own_used >= pt->slot_max)
        return -ENOSPC;
    if (pt->own_used == pt->own_cap) {
        uint32_t cap = pt->own_cap ? pt->own_cap * 2 : OWN_MIN_CAP;
        uint32_t *g = realloc(pt->own_gen, (size_t)cap * sizeof(*g));
        if (!g)
            return -ENOMEM;
        pt->own_gen = g;
        uint32_t *f = realloc(pt->free_slots, (size_t)cap * sizeof(*f));
        if (!f)
            return -ENOMEM;
        pt->free_slots = f;
        memset(g + pt->own_cap, 0, (size_t)(cap - pt->own_cap) * sizeof(*g));
        pt->own_cap = cap;
    }
    *slot = pt->own_used++;
    return 0;
}

/* --- peer up and down, as the user sees them ---------------------------------------------------
 * on_peer_up runs once the peer can be sent to from its shard: at once, or for a claimed id
 * (ROUTER's chosen one, PAIR's single peer) when the arbiter bound it to this peer, so a
 * send from on_peer_up routes (libzmq attaches the pipe before telling). on_peer_down runs
 * once every shard dropped the peer from its directory, so from then on no shard routes to
 * it (ROUTER_MANDATORY says -EHOSTUNREACH everywhere): the owner keeps what the callback
 * reports in a note until the last shard confirmed. A new connection of the same peer is
 * announced, and its input delivered, only after the old one's on_peer_down. */

static void peer_info_of(const struct mcq_pstate *ps, struct mcq_peer_info *info)
{
    mcq_peer_info(ps->peer, info);
    info->routing_id = ps->id;
    info->routing_id_len = ps->id_len;
}

/* Announces ps and hands over its held input once nothing is pending any more: its id
 * claim and the previous connection's on_peer_down. */
static void settle(struct mcq_pstate *ps)
{
    struct mcq_part *pt = ps->pt;
    struct mcq_socket *s = pt->s;
    if (ps->claim_pending || ps->down || ps->refused || !ps->up || pt->closing)
        return;
    if (!ps->announced) {
        ps->announced = true;
        if (s->h.on_peer_up) {
            struct mcq_peer_info info;
            peer_info_of(ps, &info);
            s->h.on_peer_up(pt->sh, s, &info, s->h.user);
        }
    }
    struct mcq_held *h;
    while (ps->up && !pt->closing && !pt->input_paused && (h = mcq_heldq_pop(&ps->inq))) {
        mcq_route_input(ps, h->m);
        free(h);
    }
    /* Paused input stays held for mcq_socket_pause_input(false); a peer gone drops it. */
    if (!ps->up || pt->closing)
        mcq_heldq_free(&ps->inq);
    mcq_pstate_rcv_check(ps);
}

void mcq_pstate_rcv_check(struct mcq_pstate *ps)
{
    uint32_t hwm = ps->cfg->rcvhwm;
    if (!ps->up)
        return;
    uint32_t held = ps->inq.len + ps->rep_held;
    bool pause = ps->pt->input_paused || (hwm && held >= hwm);
    if (pause && !ps->paused) {
        ps->paused = true;
        mcq_peer_pause(ps->peer);
    } else if (!pause && ps->paused) {
        ps->paused = false;
        mcq_peer_resume(ps->peer);
    }
}

static struct xdown *down_new(struct mcq_pstate *ps, int reason)
{
    struct xdown *d = calloc(1, sizeof(*d));
    if (!d)
        return NULL;
    d->pt = ps->pt;
    d->ps = ps;
    d->reason = reason;
    peer_info_of(ps, &d->info);
    memcpy(d->id, ps->id, ps->id_len);
    d->info.routing_id = d->id;
    snprintf(d->address, sizeof(d->address), "%s", d->info.address ? d->info.address : "");
    d->info.address = d->address;
    return d;
}

static void down_unlink(struct xdown *d)
{
    if (d->prev)
        d->prev->next = d->next;
    else
        d->pt->downs = d->next;
    if (d->next)
        d->next->prev = d->prev;
}

static void task_down_seen(struct mcq_shard *sh, void *arg)
{
    (void)sh;
    struct xdown *d = arg;
    if (--d->left)
        return;
    struct mcq_part *pt = d->pt;
    struct mcq_socket *s = pt->s;
    struct mcq_pstate *ps = d->ps;
    down_unlink(d);
    if (ps)
        ps->down = NULL;
    if (!pt->closing && s->h.on_peer_down)
        s->h.on_peer_down(pt->sh, s, &d->info, d->reason, s->h.user);
    free(d);
    if (ps)
        settle(ps);
}

static void peer_ready(struct mcq_peer *p)
{
    struct mcq_pstate *ps = mcq_peer_get_data(p);
    struct mcq_part *pt = ps->pt;
    struct mcq_socket *s = pt->s;
    if (pt->closing)
        return;
    uint32_t slot;
    int rc = slot_take(pt, &slot);
    if (rc < 0) {
        mcq_log_warn("socket: no peer slot left on shard %u (%s); closing the peer", pt->id,
                     strerror(-rc));
        ps->closing = true;
        mcq_peer_close(p, MCQ_CLOSE_ABORT);
        return;
    }
    uint32_t gen = pt->own_gen[slot] + 1;
    if (gen == 0)
        gen = 1;
    pt->own_gen[slot] = gen;
    ps->slot = slot;
    ps->gen = gen;
    ps->up = true;
    ps->refused = false;
    ps->req_from = -1;
    ps->rep_held = 0;
    ps->paused = false;
    memset(ps->owed, 0, s->n * sizeof(*ps->owed));
    struct mcq_peer_info info;
    mcq_peer_info(p, &info);
    ps->id_chosen = s->type == MCQ_ROUTER && info.routing_id_len > 0;
    if (ps->id_chosen) {
        ps->id_len = (uint8_t)info.routing_id_len;
        memcpy(ps->id, info.routing_id, info.routing_id_len);
    } else if (s->type == MCQ_ROUTER) {
        ps->id_len = MCQ_AUTO_ID_LEN;
        auto_id(ps, ps->id);
    } else {
        ps->id_len = 0;
    }
    struct mcq_peer_ref r = mcq_pstate_ref(ps);
    dir_up(pt, &r, ps->cfg->window, ps);
    if (mcq_type_routes_remote(s->type)) {
        struct xctl *c = xctl_new(pt, &r, ps->cfg->window, NULL, 0);
        if (c)
            ctl_broadcast(pt, task_up, c, false);
        else
            mcq_log_error("socket: out of memory announcing a peer");
    }
    if (claims_id(ps)) {
        ps->claim_pending = true;
        send_claim(ps, task_claim);
    }
    settle(ps);
}

static void peer_gone(struct mcq_pstate *ps, int reason)
{
    struct mcq_part *pt = ps->pt;
    struct mcq_socket *s = pt->s;
    struct mcq_peer_ref r = mcq_pstate_ref(ps);
    ps->up = false;
    ps->claim_pending = false;
    mcq_heldq_free(&ps->inq);
    mcq_heldq_free(&ps->backlog);
    dir_down(pt, &r);
    bool tell = s->h.on_peer_down && ps->announced && !pt->closing;
    ps->announced = false;
    struct xdown *d = NULL;
    if (mcq_type_routes_remote(s->type)) {
        struct xctl *c = xctl_new(pt, &r, 0, NULL, 0);
        /* Without memory for the note the callback just runs at once. */
        d = c && tell && !ps->down ? down_new(ps, reason) : NULL;
        if (c) {
            c->down = d;
            unsigned sent = ctl_broadcast(pt, task_down, c, false);
            if (d)
                d->left = sent;
        } else {
            mcq_log_error("socket: out of memory announcing a lost peer");
        }
    }
    if (claims_id(ps) && !pt->closing)
        send_claim(ps, task_release);
    pt->free_slots[pt->nfree++] = ps->slot;
    if (d && d->left) {
        d->next = pt->downs;
        if (pt->downs)
            pt->downs->prev = d;
        pt->downs = d;
        ps->down = d;
        return;
    }
    free(d);
    if (tell) {
        struct mcq_peer_info info;
        peer_info_of(ps, &info);
        s->h.on_peer_down(pt->sh, s, &info, reason, s->h.user);
    }
}

static void peer_closed(struct mcq_peer *p, int reason)
{
    struct mcq_pstate *ps = mcq_peer_get_data(p);
    if (!ps)
        return;
    if (ps->up)
        peer_gone(ps, reason);
    if (!mcq_peer_reconnecting(p))
        pstate_free(ps);
}

static void peer_msg(struct mcq_peer *p, struct mcq_msg *m)
{
    struct mcq_pstate *ps = mcq_peer_get_data(p);
    if (ps->pt->closing || !ps->up || ps->refused) {
        mcq_msg_free(m);
        return;
    }
    if (ps->claim_pending || ps->down) {
        struct mcq_held *h = malloc(sizeof(*h));
        if (!h) {
            mcq_log_error("socket: out of memory holding input; message dropped");
            mcq_msg_free(m);
            return;
        }
        *h = (struct mcq_held){.m = m};
        mcq_heldq_push(&ps->inq, h);
        mcq_pstate_rcv_check(ps);
        return;
    }
    mcq_route_input(ps, m);
}

static void peer_writable(struct mcq_peer *p)
{
    struct mcq_pstate *ps = mcq_peer_get_data(p);
    backlog_drain(ps);
    mcq_part_fire_writable(ps->pt);
}

/* Only PUB/XPUB owners act on subscriptions; these types have none to act on. */
static void peer_subscription(struct mcq_peer *p, bool subscribe, const uint8_t *topic, size_t len)
{
    (void)p;
    (void)subscribe;
    (void)topic;
    (void)len;
}

/* libzmq 4.3's PLAIN server with no ZAP handler fails every handshake; so does ours without
 * on_auth. The ZAP status for it is "internal error": the server, not the client's
 * credentials, is at fault, and the client hears ERROR and does not retry. */
#define ZAP_INTERNAL_ERROR 500u

static unsigned peer_auth(struct mcq_peer *p, const struct mcq_auth_request *req)
{
    struct mcq_pstate *ps = mcq_peer_get_data(p);
    struct mcq_socket *s = ps->pt->s;
    if (!s->h.on_auth) {
        mcq_log_warn("socket: refusing PLAIN client %s: PLAIN_SERVER is set but the socket has "
                     "no on_auth handler",
                     req->address && req->address[0] ? req->address : "?");
        return ZAP_INTERNAL_ERROR;
    }
    return s->h.on_auth(ps->pt->sh, s, req, s->h.user);
}

static const struct mcq_peer_ops peer_ops = {
    .ready = peer_ready,
    .msg = peer_msg,
    .subscription = peer_subscription,
    .writable = peer_writable,
    .closed = peer_closed,
    .auth = peer_auth,
};

/* --- close protocol ----------------------------------------------------------------------------
 * Two phases. First each partition stops taking sends and tells every other shard so
 * (`quiet`, behind its earlier data on the same ring); a partition with every other shard's
 * quiet has all messages meant for its peers, in their queues or backlogs. Then it closes:
 * its peers take their backlogs and flush, and once the last is gone it sends a fence to
 * every shard (itself included) and never sends anything for this socket again. Rings are
 * FIFO per pair of shards, so a partition that has every shard's fence can get nothing more:
 * it is done, and when all are done the socket's memory may go.
 *
 * LINGER is one bound on the whole close, as in libzmq: it starts when the partition goes
 * quiet, and a peer's queue reaching its connection and the connection's flush share it.
 * A runtime stop runs the same close on every socket still open (the shards' drain stage,
 * runtime/loop.h), and from its first phase to its fences a partition holds its shard in
 * that stage, so a stop that comes in the middle of a close lets it finish. */

static void task_fence(struct mcq_shard *sh, void *arg)
{
    struct mcq_socket *s = arg;
    struct mcq_part *pt = part_here(s, sh);
    if (++pt->fences < s->n)
        return;
    mcq_shard_stop_release(sh);
    mcq_proto_shard_release(pt->proto);
    pt->proto = NULL;
    pthread_mutex_lock(&s->lock);
    s->done++;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->lock);
}

static void maybe_fence(struct mcq_part *pt)
{
    if (!pt->closing || pt->fenced || pt->live)
        return;
    pt->fenced = true;
    for (unsigned to = 0; to < pt->s->n; to++) {
        int rc = mcq_shard_submit_ctl(pt->sh, to, task_fence, pt->s);
        if (rc < 0)
            mcq_log_error("socket: close fence to shard %u lost: %s", to, strerror(-rc));
    }
}

/* The shard's partitions not yet closing, for the runtime-stop step (proto_shard.h
 * `sockets`). */
struct shard_parts {
    struct mcq_part *head;
    bool stopping; /* the runtime stops: freed once the last partition left */
};

static void shard_parts_free(struct mcq_proto_shard *proto)
{
    free(proto->sockets);
    proto->sockets = NULL;
    proto->sockets_stop = NULL;
}

static void shard_unlink(struct mcq_part *pt)
{
    struct shard_parts *sp = pt->proto ? pt->proto->sockets : NULL;
    if (!sp)
        return;
    if (pt->shard_prev)
        pt->shard_prev->shard_next = pt->shard_next;
    else if (sp->head == pt)
        sp->head = pt->shard_next;
    if (pt->shard_next)
        pt->shard_next->shard_prev = pt->shard_prev;
    pt->shard_next = pt->shard_prev = NULL;
    if (sp->stopping && !sp->head)
        shard_parts_free(pt->proto);
}

static void part_close(struct mcq_part *pt)
{
    if (pt->closing)
        return;
    pt->closing = true;
    pt->want_writable = false;
    shard_unlink(pt);
    mcq_route_close(pt);
    while (pt->claim_waiting) {
        struct xctl *w = pt->claim_waiting;
        pt->claim_waiting = w->next;
        xctl_put(w);
    }
    for (struct mcq_pstate *ps = pt->peers; ps; ps = ps->next) {
        if (ps->closing)
            continue;
        ps->closing = true;
        if (ps->cfg->linger == 0) {
            mcq_peer_close(ps->peer, MCQ_CLOSE_ABORT);
            continue;
        }
        backlog_flush(ps);
        /* LINGER -1 is the connection's linger of a day, like any other bound. */
        mcq_peer_close_by(ps->peer,
                          pt->quiet_ns + (uint64_t)ps->cfg->pcfg.conn.linger_ms * MCQ_NS_PER_MS);
    }
    maybe_fence(pt);
}

/* Phase two once this partition is quiet and has every other shard's quiet. */
static void maybe_close(struct mcq_part *pt)
{
    if (pt->quiet && pt->quiets == pt->s->n - 1)
        part_close(pt);
}

static void task_quiet(struct mcq_shard *sh, void *arg)
{
    struct mcq_part *pt = part_here(arg, sh);
    pt->quiets++;
    maybe_close(pt);
}

/* Phase one: no more sends here, and every other shard hears so after this shard's data. */
static void part_quiet(struct mcq_part *pt)
{
    if (pt->closing || pt->quiet)
        return;
    pt->quiet = true;
    pt->quiet_ns = mcq_shard_now_ns(pt->sh);
    mcq_shard_stop_hold(pt->sh);
    for (unsigned to = 0; to < pt->s->n; to++) {
        if (to == pt->id)
            continue;
        int rc = mcq_shard_submit_ctl(pt->sh, to, task_quiet, pt->s);
        if (rc < 0)
            mcq_log_error("socket: close quiet to shard %u lost: %s", to, strerror(-rc));
    }
    maybe_close(pt);
}

/* Runtime stop (the drain stage): close every socket still open on this shard the way
 * mcq_socket_close does; each partition leaves the list as its second phase begins. */
static void shard_sockets_stop(struct mcq_proto_shard *proto)
{
    struct shard_parts *sp = proto->sockets;
    sp->stopping = true;
    if (!sp->head) {
        shard_parts_free(proto);
        return;
    }
    for (struct mcq_part *pt = sp->head, *next; pt; pt = next) {
        next = pt->shard_next;
        part_quiet(pt);
    }
}

static void task_close(struct mcq_shard *sh, void *arg)
{
    struct mcq_socket *s = arg;
    part_quiet(part_here(s, sh));
    pthread_mutex_lock(&s->lock);
    s->closes_ran++;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->lock);
}

/* --- setup ------------------------------------------------------------------------------------ */

static void attach_report(struct mcq_socket *s, bool ok)
{
    pthread_mutex_lock(&s->lock);
    s->attach_ran++;
    if (ok)
        s->attached++;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->lock);
}

static void task_attach(struct mcq_shard *sh, void *arg)
{
    struct mcq_socket *s = arg;
    struct mcq_part *pt = part_here(s, sh);
    pt->sh = sh;
    /* A stopping shard already closed its sockets: a new partition would never close. */
    struct mcq_proto_shard *proto = mcq_shard_stopping(sh) ? NULL : mcq_proto_shard_get(sh);
    if (proto && !proto->sockets) {
        proto->sockets = calloc(1, sizeof(struct shard_parts));
        proto->sockets_stop = proto->sockets ? shard_sockets_stop : NULL;
    }
    if (!proto || !proto->sockets) {
        attach_report(s, false);
        return;
    }
    struct shard_parts *sp = proto->sockets;
    mcq_proto_shard_hold(proto);
    pt->proto = proto;
    pt->shard_next = sp->head;
    if (sp->head)
        sp->head->shard_prev = pt;
    sp->head = pt;
    attach_report(s, true);
}

static void task_detach(struct mcq_shard *sh, void *arg)
{
    struct mcq_socket *s = arg;
    struct mcq_part *pt = part_here(s, sh);
    if (pt->proto) {
        shard_unlink(pt);
        mcq_proto_shard_release(pt->proto);
        pt->proto = NULL;
    }
    /* A stop began closing it before the create failed: that close can never finish (some
     * partition never attached), so it must not hold the shard; its quiets are in flight. */
    if (pt->quiet)
        mcq_shard_stop_release(sh);
    pthread_mutex_lock(&s->lock);
    s->detached_quiet |= pt->quiet;
    s->detached++;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->lock);
}

static void part_free(struct mcq_part *pt)
{
    if (!pt)
        return;
    for (unsigned i = 0; pt->dir && i < pt->s->n; i++)
        free(pt->dir[i].v);
    free(pt->dir);
    free(pt->lb);
    mcq_idmap_fini(&pt->ids);
    mcq_idmap_fini(&pt->claims);
    free(pt->own_gen);
    free(pt->free_slots);
    /* Notes whose confirmations were cut short by the close (none can be in flight now). */
    while (pt->downs) {
        struct xdown *d = pt->downs;
        pt->downs = d->next;
        free(d);
    }
    free(pt);
}

static void socket_free(struct mcq_socket *s)
{
    for (struct mcq_bound *b = s->bound; b;) {
        struct mcq_bound *next = b->next;
        if (b->l)
            mcq_listener_close(b->l);
        free(b);
        b = next;
    }
    for (struct mcq_connect_req *c = s->connects; c;) {
        struct mcq_connect_req *next = c->next;
        free(c);
        c = next;
    }
    for (struct mcq_cfgsnap *c = s->cfgs; c;) {
        struct mcq_cfgsnap *next = c->next;
        free(c);
        c = next;
    }
    for (unsigned i = 0; i < s->n; i++)
        part_free(s->parts[i]);
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->cond);
    free(s);
}

static void socket_cleanup(struct mcq_runtime_cleanup *c)
{
    socket_free((struct mcq_socket *)((char *)c - offsetof(struct mcq_socket, cleanup)));
}

static bool type_supported(int type)
{
    switch (type) {
    case MCQ_PAIR:
    case MCQ_REQ:
    case MCQ_REP:
    case MCQ_DEALER:
    case MCQ_ROUTER:
    case MCQ_PULL:
    case MCQ_PUSH:
        return true;
    default:
        return false;
    }
}

int mcq_socket_create(struct mcq_runtime *rt, enum mcq_socket_type type,
                      const struct mcq_socket_handlers *h, struct mcq_socket **out)
{
    /* It waits for every shard: on a shard it would wait for itself. */
    if (!rt || !out || (int)type < MCQ_PAIR || type > MCQ_XSUB || mcq_shard_current())
        return -EINVAL;
    if (!type_supported(type))
        return -ENOTSUP;
    if (mcq_runtime_stopping(rt))
        return -ESHUTDOWN;
    unsigned n = mcq_runtime_shard_count(rt);
    struct mcq_socket *s = calloc(1, sizeof(*s) + n * sizeof(s->parts[0]));
    if (!s)
        return -ENOMEM;
    s->rt = rt;
    s->n = n;
    s->type = type;
    if (h)
        s->h = *h;
    while (((1u << s->shard_bits)) < n)
        s->shard_bits++;
    if (getrandom(s->hkey, sizeof(s->hkey), 0) != (ssize_t)sizeof(s->hkey)) {
        free(s);
        return -EIO;
    }
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->cond, NULL);
    mcq_sockopts_defaults(&s->o, type);
    s->cleanup.run = socket_cleanup;
    /* Own slots are limited by the bits an auto id has left for them. */
    uint32_t slot_bits = MCQ_AUTO_ID_BITS - MCQ_AUTO_ID_GEN_BITS - s->shard_bits;
    for (unsigned i = 0; i < n; i++) {
        struct mcq_part *pt = calloc(1, sizeof(*pt));
        s->parts[i] = pt;
        if (!pt || !(pt->dir = calloc(n, sizeof(*pt->dir)))) {
            socket_free(s);
            return -ENOMEM;
        }
        pt->s = s;
        pt->id = i;
        pt->slot_max = 1u << slot_bits;
        pt->rep_next.run = mcq_route_rep_next;
        /* REQ_CORRELATE ids start at a value a peer cannot predict, as libzmq's. */
        pt->req_seq = (uint32_t)mcq_siphash24(s->hkey, &i, sizeof(i));
        mcq_idmap_init(&pt->ids, s->hkey);
        mcq_idmap_init(&pt->claims, s->hkey);
    }
    unsigned posted = 0;
    for (; posted < n; posted++)
        if (mcq_runtime_post(rt, posted, task_attach, s) < 0)
            break;
    pthread_mutex_lock(&s->lock);
    while (s->attach_ran < posted)
        pthread_cond_wait(&s->cond, &s->lock);
    bool ok = s->attached == n;
    pthread_mutex_unlock(&s->lock);
    if (!ok) {
        /* Attached partitions hold their shard's state: let go of it before freeing. */
        unsigned detaching = 0;
        for (unsigned i = 0; i < posted; i++)
            if (mcq_runtime_post(rt, i, task_detach, s) == 0)
                detaching++;
        pthread_mutex_lock(&s->lock);
        while (s->detached < detaching)
            pthread_cond_wait(&s->cond, &s->lock);
        bool in_flight = s->detached_quiet;
        pthread_mutex_unlock(&s->lock);
        if (detaching == posted && !in_flight)
            socket_free(s);
        else
            mcq_log_error("socket: create failed half-way; its memory is left to the process "
                          "rather than freed under a shard");
        return mcq_runtime_stopping(rt) ? -ESHUTDOWN : -ENOMEM;
    }
    mcq_runtime_add_cleanup(rt, &s->cleanup);
    *out = s;
    return 0;
}

static void on_accept(struct mcq_peer_listener *l, struct mcq_conn *c)
{
    struct mcq_bound *b = (struct mcq_bound *)l;
    struct mcq_part *pt = part_here(b->s, mcq_conn_shard(c));
    if (pt->closing || pt->quiet) {
        mcq_conn_close(c, MCQ_CLOSE_ABORT);
        return;
    }
    struct mcq_pstate *ps = pstate_new(pt, b->cfg);
    if (!ps) {
        mcq_log_warn("socket: out of memory accepting a peer; connection closed");
        mcq_conn_close(c, MCQ_CLOSE_ABORT);
        return;
    }
    if (mcq_peer_accept(c, &b->cfg->pcfg, pt, &ps->peer) < 0) {
        ps->peer = NULL;
        pstate_free(ps);
        return;
    }
    mcq_peer_set_data(ps->peer, ps);
}

int mcq_bind(struct mcq_socket *s, const char *endpoint)
{
    if (!s || !endpoint)
        return -EINVAL;
    pthread_mutex_lock(&s->lock);
    int rc = -ENOMEM;
    struct mcq_bound *b = calloc(1, sizeof(*b));
    struct mcq_cfgsnap *cfg = b ? mcq_cfgsnap_new(s, &peer_ops) : NULL;
    if (!cfg)
        goto fail;
    b->pl.accept = on_accept;
    b->s = s;
    b->cfg = cfg;
    struct mcq_conn_cfg cc = cfg->pcfg.conn;
    cc.handler = &mcq_peer_listener_handler;
    cc.user = &b->pl;
    rc = mcq_conn_listen(s->rt, endpoint, &cc, &b->l);
    if (rc < 0)
        goto fail;
    rc = mcq_listener_endpoint(b->l, s->last_endpoint, sizeof(s->last_endpoint));
    if (rc < 0) {
        mcq_listener_close(b->l);
        goto fail;
    }
    b->next = s->bound;
    s->bound = b;
    pthread_mutex_unlock(&s->lock);
    return 0;
fail:
    free(b);
    pthread_mutex_unlock(&s->lock);
    return rc;
}

static void task_connect(struct mcq_shard *sh, void *arg)
{
    struct mcq_connect_req *cr = arg;
    struct mcq_part *pt = part_here(cr->s, sh);
    if (pt->closing || pt->quiet)
        return;
    struct mcq_pstate *ps = pstate_new(pt, cr->cfg);
    if (!ps) {
        mcq_log_error("socket: out of memory connecting to %s", cr->endpoint);
        return;
    }
    int rc = mcq_peer_connect(sh, cr->endpoint, &cr->cfg->pcfg, pt, &ps->peer);
    if (rc < 0) {
        mcq_log_warn("socket: cannot connect to %s: %s", cr->endpoint, strerror(-rc));
        ps->peer = NULL;
        pstate_free(ps);
        return;
    }
    mcq_peer_set_data(ps->peer, ps);
}

int mcq_connect(struct mcq_socket *s, const char *endpoint)
{
    if (!s || !endpoint)
        return -EINVAL;
    struct mcq_endpoint ep;
    int rc = mcq_endpoint_parse(endpoint, &ep);
    if (rc < 0)
        return rc;
    if (strlen(endpoint) >= MCQ_ENDPOINT_TEXT_MAX)
        return -ENAMETOOLONG;
    if (ep.transport == MCQ_TRANSPORT_TCP && strcmp(ep.host, "*") == 0)
        return -EINVAL;
    pthread_mutex_lock(&s->lock);
    struct mcq_connect_req *cr = calloc(1, sizeof(*cr));
    struct mcq_cfgsnap *cfg = cr ? mcq_cfgsnap_new(s, &peer_ops) : NULL;
    if (!cfg) {
        free(cr);
        pthread_mutex_unlock(&s->lock);
        return -ENOMEM;
    }
    cr->s = s;
    cr->cfg = cfg;
    strcpy(cr->endpoint, endpoint);
    cr->next = s->connects;
    s->connects = cr;
    unsigned shard = atomic_fetch_add_explicit(&s->rr, 1, memory_order_relaxed) % s->n;
    pthread_mutex_unlock(&s->lock);
    return mcq_runtime_post(s->rt, shard, task_connect, cr);
}

void mcq_socket_close(struct mcq_socket *s)
{
    if (!s)
        return;
    if (mcq_shard_current()) {
        mcq_log_error("mcq_socket_close called on a shard: it must wait for the shards; "
                      "socket left open");
        return;
    }
    pthread_mutex_lock(&s->lock);
    for (struct mcq_bound *b = s->bound; b; b = b->next) {
        mcq_listener_close(b->l);
        b->l = NULL;
    }
    unsigned attached = s->attached;
    pthread_mutex_unlock(&s->lock);
    /* A stopping runtime closes every partition through its stop hook; otherwise ask each
     * shard. Either way every attached partition ends with all fences in. */
    unsigned posted = 0;
    if (!mcq_runtime_stopping(s->rt))
        for (unsigned i = 0; i < s->n; i++)
            if (mcq_runtime_post(s->rt, i, task_close, s) == 0)
                posted++;
    pthread_mutex_lock(&s->lock);
    while (s->done < attached || s->closes_ran < posted)
        pthread_cond_wait(&s->cond, &s->lock);
    pthread_mutex_unlock(&s->lock);
    mcq_runtime_remove_cleanup(s->rt, &s->cleanup);
    socket_free(s);
}

int mcq_socket_pause_input(struct mcq_shard *sh, struct mcq_socket *s, bool pause)
{
    if (!sh || !s)
        return -EINVAL;
    struct mcq_part *pt = part_here(s, sh);
    if (pt->closing || pt->quiet)
        return -ENOTCONN;
    pt->input_paused = pause;
    for (struct mcq_pstate *ps = pt->peers, *next; ps; ps = next) {
        next = ps->next;
        if (ps->closing)
            continue;
        settle(ps); /* on resume, input held meanwhile goes first, in order */
        mcq_pstate_rcv_check(ps);
    }
    return 0;
}

int mcq_send(struct mcq_shard *sh, struct mcq_socket *s, struct mcq_msg *m)
{
    if (!sh || !s || !m || m->n == 0)
        return -EINVAL;
    struct mcq_part *pt = part_here(s, sh);
    if (pt->closing || pt->quiet)
        return -ENOTCONN;
    return mcq_route_send(pt, m);
}
