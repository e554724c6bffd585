#include "runtime/shard_int.h"

#include <errno.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

#include "alloc/arena.h"
#include "alloc/page.h"
#include "runtime/log.h"
#include "runtime/topology.h"

#define CQE_BATCH 256   /* completions reaped per loop turn */
#define MESH_BUDGET 256 /* entries drained per source ring per turn */
#define CQ_PER_SQ 8     /* multishot ops post many CQEs per SQE */
#define DEFAULT_URING_ENTRIES 256
#define DEFAULT_MESH_CAPACITY 1024
#define DEFAULT_MESH_OVERFLOW 65536
#define NSEC_PER_USEC 1000ull
#define NSEC_PER_SEC 1000000000ull

/* user_data values that are not ops (ops are pointers, never this small). */
#define UD_WAKE 1     /* a doorbell CQE posted into our ring by another shard's MSG_RING */
#define UD_MSG_SENT 2 /* our own MSG_RING SQE; its CQE only appears on failure */
#define UD_CANCEL 3   /* a cancel whose outcome does not matter (target may be done) */

static _Thread_local struct mcq_shard *current_shard;

static uint64_t monotonic_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * NSEC_PER_SEC + (uint64_t)ts.tv_nsec;
}

static unsigned env_unsigned(const char *name, unsigned dflt)
{
    const char *v = getenv(name);
    if (!v || !*v)
        return dflt;
    char *end;
    unsigned long x = strtoul(v, &end, 10);
    return *end ? dflt : (unsigned)x;
}

struct mcq_config mcq_config_default(void)
{
    return (struct mcq_config){
        .shards = env_unsigned("MCQ_SHARDS", 0),
        .spin_us = env_unsigned("MCQ_SPIN_US", 0),
        .uring_entries = DEFAULT_URING_ENTRIES,
        .mesh_capacity = DEFAULT_MESH_CAPACITY,
        .mesh_overflow_max = DEFAULT_MESH_OVERFLOW,
        .pin = true,
    };
}

struct mcq_shard *mcq_shard_current(void)
{
    return current_shard;
}

void mcq_shard_set_current(struct mcq_shard *sh)
{
    current_shard = sh;
    mcq_arena_set_current(sh ? sh->arena : NULL);
}

unsigned mcq_shard_id(const struct mcq_shard *sh)
{
    return sh->id;
}

struct mcq_runtime *mcq_shard_runtime(const struct mcq_shard *sh)
{
    return sh->rt;
}

uint64_t mcq_shard_now_ns(const struct mcq_shard *sh)
{
    return sh->now_ns;
}

struct mcq_arena *mcq_shard_arena(struct mcq_shard *sh)
{
    return sh->arena;
}

struct io_uring *mcq_shard_ring(struct mcq_shard *sh)
{
    return &sh->ring;
}

bool mcq_shard_stopping(const struct mcq_shard *sh)
{
    return sh->stopping;
}

void *mcq_shard_slot(struct mcq_shard *sh, enum mcq_shard_slot slot)
{
    return sh->slots[slot];
}

void mcq_shard_set_slot(struct mcq_shard *sh, enum mcq_shard_slot slot, void *state)
{
    sh->slots[slot] = state;
}

void mcq_shard_stat_add(struct mcq_shard *sh, enum mcq_stat_field f, int64_t delta)
{
    switch (f) {
    case MCQ_STAT_CONNECTIONS:
        MCQ_STAT_ADD(sh, connections, (uint64_t)delta);
        break;
    case MCQ_STAT_BYTES_IN:
        MCQ_STAT_ADD(sh, bytes_in, (uint64_t)delta);
        break;
    case MCQ_STAT_BYTES_OUT:
        MCQ_STAT_ADD(sh, bytes_out, (uint64_t)delta);
        break;
    }
}

int mcq_runtime_stats(const struct mcq_runtime *rt, unsigned id, struct mcq_shard_stats *out)
{
    if (!rt || id >= rt->n || !out)
        return -EINVAL;
    struct mcq_shard *sh = rt->shards[id];
    uint64_t *dst = (uint64_t *)out;
    for (size_t i = 0; i < sizeof(*out) / sizeof(uint64_t); i++)
        dst[i] = atomic_load_explicit(&sh->stats.v[i], memory_order_relaxed);
    uint64_t occ = 0;
    for (unsigned src = 0; src < rt->n; src++)
        if (src != id)
            occ += mcq_spsc_size_approx(mcq_mesh_ring((struct mcq_runtime *)rt, src, id));
    out->ring_occupancy = occ;
    if (sh->arena) {
        struct mcq_arena_stats as;
        mcq_arena_stats(sh->arena, &as);
        out->mem_bytes = as.bytes_in_use;
        out->mem_pages = as.pages_in_use;
        out->remote_frees_pending = as.remote_frees_pending;
        out->mem_backend_allocs = as.backend_allocs;
    }
    return 0;
}

unsigned mcq_runtime_shard_count(const struct mcq_runtime *rt)
{
    return rt->n;
}

/* --- SQEs, deferred work, stop hooks -------------------------------------------------- */

static struct io_uring_sqe *get_sqe(struct mcq_shard *sh)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&sh->ring);
    if (!sqe) {
        int rc = io_uring_submit(&sh->ring);
        if (rc < 0) {
            mcq_log_error("io_uring_submit failed while the SQ was full: %s", strerror(-rc));
            return NULL;
        }
        sqe = io_uring_get_sqe(&sh->ring);
    }
    return sqe;
}

struct io_uring_sqe *mcq_shard_sqe(struct mcq_shard *sh, struct mcq_op *op)
{
    if (sh->exited)
        return NULL;
    struct io_uring_sqe *sqe = get_sqe(sh);
    if (!sqe)
        return NULL;
    io_uring_sqe_set_data(sqe, op);
    sh->inflight++;
    return sqe;
}

int mcq_shard_submit_now(struct mcq_shard *sh)
{
    int rc = io_uring_submit(&sh->ring);
    return rc < 0 ? rc : 0;
}

void mcq_shard_defer_queue(struct mcq_shard *sh, struct mcq_deferred *d)
{
    if (d->_queued)
        return;
    d->_queued = true;
    d->_next = sh->deferred;
    sh->deferred = d;
}

void mcq_shard_undefer(struct mcq_shard *sh, struct mcq_deferred *d)
{
    if (!d->_queued)
        return;
    for (struct mcq_deferred **p = &sh->deferred; *p; p = &(*p)->_next) {
        if (*p == d) {
            *p = d->_next;
            break;
        }
    }
    d->_queued = false;
}

static unsigned run_deferred(struct mcq_shard *sh)
{
    unsigned n = 0;
    /* Items may queue more items (or themselves) while running: take the list each round. */
    while (sh->deferred) {
        struct mcq_deferred *list = sh->deferred;
        sh->deferred = NULL;
        while (list) {
            struct mcq_deferred *d = list;
            list = d->_next;
            d->_queued = false;
            d->run(sh, d);
            n++;
        }
    }
    return n;
}

static void hook_add(struct mcq_stop_hook **list, struct mcq_stop_hook *h)
{
    h->_next = *list;
    *list = h;
}

static void hook_remove(struct mcq_stop_hook **list, struct mcq_stop_hook *h)
{
    for (struct mcq_stop_hook **p = list; *p; p = &(*p)->_next) {
        if (*p == h) {
            *p = h->_next;
            return;
        }
    }
}

/* Hooks may remove themselves: take each next pointer before running. */
static void hooks_run(struct mcq_shard *sh, struct mcq_stop_hook *h)
{
    while (h) {
        struct mcq_stop_hook *next = h->_next;
        h->run(sh, h);
        h = next;
    }
}

void mcq_shard_add_stop_hook(struct mcq_shard *sh, struct mcq_stop_hook *h)
{
    hook_add(&sh->stop_hooks, h);
}

void mcq_shard_remove_stop_hook(struct mcq_shard *sh, struct mcq_stop_hook *h)
{
    hook_remove(&sh->stop_hooks, h);
}

void mcq_shard_add_drain_hook(struct mcq_shard *sh, struct mcq_stop_hook *h)
{
    hook_add(&sh->drain_hooks, h);
}

void mcq_shard_remove_drain_hook(struct mcq_shard *sh, struct mcq_stop_hook *h)
{
    hook_remove(&sh->drain_hooks, h);
}

void mcq_shard_stop_hold(struct mcq_shard *sh)
{
    sh->stop_holds++;
}

void mcq_shard_stop_release(struct mcq_shard *sh)
{
    sh->stop_holds--;
}

/* --- posts from non-shard threads ------------------------------------------------------ */

static void arm_post_read(struct mcq_shard *sh);

static void post_read_done(struct mcq_shard *sh, struct mcq_op *op, const struct io_uring_cqe *cqe)
{
    (void)op;
    if (cqe->res < 0 && cqe->res != -ECANCELED)
        mcq_log_error("post eventfd read failed: %s", strerror(-cqe->res));
    if (!sh->stop_final)
        arm_post_read(sh);
}

static void arm_post_read(struct mcq_shard *sh)
{
    struct io_uring_sqe *sqe = mcq_shard_sqe(sh, &sh->post_op);
    if (sqe)
        io_uring_prep_read(sqe, sh->post_fd, &sh->post_buf, sizeof(sh->post_buf), 0);
}

int mcq_runtime_post(struct mcq_runtime *rt, unsigned to, mcq_task_fn fn, void *arg)
{
    if (!rt || to >= rt->n || !fn)
        return -EINVAL;
    struct mcq_shard *sh = rt->shards[to];
    struct mcq_post *p = malloc(sizeof(*p));
    if (!p)
        return -ENOMEM;
    p->fn = fn;
    p->arg = arg;
    p->next = NULL;
    pthread_mutex_lock(&sh->post_lock);
    *sh->posts_tail = p;
    sh->posts_tail = &p->next;
    pthread_mutex_unlock(&sh->post_lock);
    atomic_store_explicit(&sh->posts_pending, 1, memory_order_seq_cst);
    uint64_t one = 1;
    /* The eventfd read armed in the shard's ring completes and ends any sleep. */
    if (write(sh->post_fd, &one, sizeof(one)) != sizeof(one))
        return -errno;
    return 0;
}

static unsigned run_posts(struct mcq_shard *sh)
{
    if (!atomic_load_explicit(&sh->posts_pending, memory_order_acquire))
        return 0;
    atomic_store_explicit(&sh->posts_pending, 0, memory_order_seq_cst);
    pthread_mutex_lock(&sh->post_lock);
    struct mcq_post *list = sh->posts;
    sh->posts = NULL;
    sh->posts_tail = &sh->posts;
    pthread_mutex_unlock(&sh->post_lock);
    unsigned n = 0;
    while (list) {
        struct mcq_post *p = list;
        list = p->next;
        p->fn(sh, p->arg);
        free(p);
        n++;
    }
    return n;
}

/* --- the loop ------------------------------------------------------------------------- */

static unsigned reap_cqes(struct mcq_shard *sh)
{
    struct io_uring_cqe batch[CQE_BATCH];
    unsigned n = 0, head;
    struct io_uring_cqe *cqe;
    io_uring_for_each_cqe(&sh->ring, head, cqe)
    {
        batch[n++] = *cqe;
        if (n == CQE_BATCH)
            break;
    }
    if (n == 0)
        return 0;
    /* Copy out, then release the CQ slots before running callbacks, so callbacks may
     * submit and the kernel may post without the CQ filling up under us. */
    io_uring_cq_advance(&sh->ring, n);
    MCQ_STAT_ADD(sh, cqes, n);
    for (unsigned i = 0; i < n; i++) {
        const struct io_uring_cqe *c = &batch[i];
        if (c->user_data == UD_WAKE) {
            MCQ_STAT_ADD(sh, wakeups_recv, 1);
            continue;
        }
        if (c->user_data == UD_CANCEL)
            continue;
        if (c->user_data == UD_MSG_SENT) {
            mcq_log_error("doorbell MSG_RING failed: %s", strerror(-c->res));
            continue;
        }
        struct mcq_op *op = (struct mcq_op *)(uintptr_t)c->user_data;
        if (!(c->flags & IORING_CQE_F_MORE))
            sh->inflight--;
        op->complete(sh, op, c);
    }
    return n;
}

/* Rings `to`'s doorbell from shard `from`; wakes it if it announced sleep. */
void mcq_shard_ring_doorbell(struct mcq_shard *from, struct mcq_shard *to);
void mcq_shard_ring_doorbell(struct mcq_shard *from, struct mcq_shard *to)
{
    uint64_t bit = 1ull << (from->id % 64);
    _Atomic uint64_t *word = &to->doorbell[from->id / 64];
    /* The read-modify-write orders our published entries before the read of
     * `sleeping`; the consumer orders its store of `sleeping` before re-reading the
     * doorbell. One of the two sees the other, so no wakeup is lost. */
    atomic_fetch_or_explicit(word, bit, memory_order_seq_cst);
    if (!atomic_load_explicit(&to->sleeping, memory_order_seq_cst))
        return;
    if (!atomic_exchange_explicit(&to->sleeping, 0, memory_order_seq_cst))
        return;
    if (to->id == from->id)
        return;
    struct io_uring_sqe *sqe = get_sqe(from);
    if (!sqe) {
        mcq_log_error("no SQE to wake shard %u", to->id);
        return;
    }
    io_uring_prep_msg_ring(sqe, to->ring_fd, 0, UD_WAKE, 0);
    io_uring_sqe_set_data64(sqe, UD_MSG_SENT);
    sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
    io_uring_submit(&from->ring);
    MCQ_STAT_ADD(from, wakeups_sent, 1);
}

static bool doorbell_pending(struct mcq_shard *sh)
{
    for (unsigned w = 0; w < MCQ_DOORBELL_WORDS; w++)
        if (atomic_load_explicit(&sh->doorbell[w], memory_order_seq_cst))
            return true;
    return false;
}

/* The second stage of a stop, once the drain stage has no hold left. Posts keep waking the
 * shard until here: a graceful close may take a while and still be asked things. */
static void finish_stop(struct mcq_shard *sh)
{
    sh->stop_final = true;
    hooks_run(sh, sh->stop_hooks);
    struct io_uring_sqe *sqe = get_sqe(sh);
    if (sqe) {
        io_uring_prep_cancel(sqe, &sh->post_op, 0);
        io_uring_sqe_set_data64(sqe, UD_CANCEL);
        sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
    }
}

static void sleep_until_event(struct mcq_shard *sh)
{
    atomic_store_explicit(&sh->sleeping, 1, memory_order_seq_cst);
    if (doorbell_pending(sh) || atomic_load_explicit(&sh->posts_pending, memory_order_seq_cst) ||
        mcq_mesh_pending(sh)) {
        atomic_store_explicit(&sh->sleeping, 0, memory_order_relaxed);
        return;
    }
    struct __kernel_timespec ts, *tsp = NULL;
    uint64_t next = mcq_timers_next(sh);
    if (next != UINT64_MAX) {
        uint64_t now = monotonic_ns();
        uint64_t d = next > now ? next - now : 0;
        ts.tv_sec = (long long)(d / NSEC_PER_SEC);
        ts.tv_nsec = (long long)(d % NSEC_PER_SEC);
        tsp = &ts;
    }
    MCQ_STAT_ADD(sh, sleeps, 1);
    struct io_uring_cqe *cqe;
    int rc = io_uring_submit_and_wait_timeout(&sh->ring, &cqe, 1, tsp, NULL);
    if (rc < 0 && rc != -ETIME && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY)
        mcq_log_error("io_uring wait failed: %s", strerror(-rc));
    atomic_store_explicit(&sh->sleeping, 0, memory_order_relaxed);
}

/* The drain stage of a stop is over: the stop hooks may run. */
static bool stop_drained(const struct mcq_shard *sh)
{
    return sh->stopping && !sh->stop_final &&
           (sh->stop_holds == 0 ||
            atomic_load_explicit(&sh->rt->stop_forced, memory_order_acquire));
}

/* Stopped shards may leave entries parked towards other shards (whose threads may be gone
 * already): the final drain delivers those after every thread has joined. */
static bool quiescent(struct mcq_shard *sh)
{
    return sh->stop_final && sh->inflight == 0 && !sh->deferred && !sh->parked[sh->id].len;
}

static void shard_loop(struct mcq_shard *sh)
{
    struct mcq_runtime *rt = sh->rt;
    uint64_t spin_ns = (uint64_t)rt->cfg.spin_us * NSEC_PER_USEC;
    uint64_t idle_since = monotonic_ns();
    for (;;) {
        sh->now_ns = monotonic_ns();
        MCQ_STAT_ADD(sh, turns, 1);
        if (!sh->stopping && atomic_load_explicit(&rt->stop_requested, memory_order_acquire)) {
            sh->stopping = true;
            hooks_run(sh, sh->drain_hooks);
        }
        if (stop_drained(sh))
            finish_stop(sh);
        unsigned work = reap_cqes(sh);
        work += (unsigned)mcq_mesh_drain(sh, MESH_BUDGET);
        work += run_posts(sh);
        work += mcq_timers_run(sh);
        work += run_deferred(sh);
        mcq_mesh_flush(sh);
        if (quiescent(sh))
            break;
        if (work || stop_drained(sh)) {
            io_uring_submit(&sh->ring);
            idle_since = sh->now_ns;
            continue;
        }
        if (sh->parked[sh->id].len)
            continue;
        if (mcq_mesh_pending(sh)) {
            /* Only entries parked behind a full ring: keep our own I/O moving (with
             * DEFER_TASKRUN nothing completes unless we enter the kernel) and give the
             * ring's consumer the CPU. */
            io_uring_submit_and_get_events(&sh->ring);
            sched_yield();
            continue;
        }
        if (spin_ns && sh->now_ns - idle_since < spin_ns) {
            /* With DEFER_TASKRUN completions only appear when we enter the kernel. */
            io_uring_submit_and_get_events(&sh->ring);
            continue;
        }
        sleep_until_event(sh);
        idle_since = monotonic_ns();
    }
    io_uring_submit(&sh->ring);
}

/* --- shard threads and the runtime ------------------------------------------------------ */

static int ring_init(struct mcq_shard *sh, unsigned entries)
{
    struct io_uring_params p = {0};
    p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_CQSIZE |
              IORING_SETUP_SUBMIT_ALL;
    p.cq_entries = entries * CQ_PER_SQ;
    int rc = io_uring_queue_init_params(entries, &sh->ring, &p);
    if (rc == -EINVAL) {
        mcq_log_warn("kernel refused SINGLE_ISSUER|DEFER_TASKRUN; using COOP_TASKRUN");
        memset(&p, 0, sizeof(p));
        p.flags = IORING_SETUP_COOP_TASKRUN | IORING_SETUP_CQSIZE;
        p.cq_entries = entries * CQ_PER_SQ;
        rc = io_uring_queue_init_params(entries, &sh->ring, &p);
    }
    if (rc == -EINVAL) {
        mcq_log_warn("kernel refused COOP_TASKRUN; using a plain ring");
        rc = io_uring_queue_init(entries, &sh->ring, 0);
    }
    if (rc < 0)
        return rc;
    sh->ring_fd = sh->ring.ring_fd;
    return 0;
}

static void start_report(struct mcq_runtime *rt, int err)
{
    pthread_mutex_lock(&rt->start_lock);
    if (err && !rt->start_error)
        rt->start_error = err;
    rt->ready++;
    pthread_cond_broadcast(&rt->start_cond);
    pthread_mutex_unlock(&rt->start_lock);
}

/* Waits until every shard reported; returns the first error. */
static int start_wait_all(struct mcq_runtime *rt)
{
    pthread_mutex_lock(&rt->start_lock);
    while (rt->ready < rt->n)
        pthread_cond_wait(&rt->start_cond, &rt->start_lock);
    int err = rt->start_error;
    pthread_mutex_unlock(&rt->start_lock);
    return err;
}

static void reclaim_page(struct mcq_shard *sh, void *page)
{
    int rc = mcq_page_reclaim(sh->arena, page);
    if (rc < 0)
        mcq_log_error("page reclaim refused: %s", strerror(-rc));
}

/* The arena's remote-free hook: a page of `ctx`'s arena lost its last reference on another
 * thread. Send it home; the control path never refuses, so the page is never lost. */
static void send_page_home(void *ctx, struct mcq_arena *owner, struct mcq_page *page)
{
    (void)owner;
    struct mcq_shard *home = ctx;
    struct mcq_shard *here = current_shard;
    int rc = here ? mcq_shard_submit_ctl(here, home->id, reclaim_page, page)
                  : mcq_runtime_post(home->rt, home->id, reclaim_page, page);
    if (rc < 0)
        mcq_log_error("cannot send a page home to shard %u: %s", home->id, strerror(-rc));
}

static void *shard_main(void *arg)
{
    struct mcq_shard *sh = arg;
    struct mcq_runtime *rt = sh->rt;
    mcq_log_attach_thread(sh->id);
    int rc = 0;
    if (rt->cfg.pin) {
        rc = mcq_topology_pin_thread(rt->topo, sh->id);
        if (rc < 0)
            mcq_log_warn("cannot pin shard %u: %s", sh->id, strerror(-rc));
    }
    /* After pinning, so the arena's memory is first touched on this core's node. */
    rc = mcq_arena_create(sh->id, &sh->arena);
    if (rc == 0)
        rc = mcq_arena_set_remote_free(sh->arena, send_page_home, sh);
    if (rc < 0)
        mcq_log_error("shard %u: arena setup failed: %s", sh->id, strerror(-rc));
    mcq_shard_set_current(sh);
    /* Created here, after pinning: DEFER_TASKRUN rings may only be entered by their creator,
     * and the incoming rings' memory is first touched on this shard's node. */
    rc = ring_init(sh, rt->cfg.uring_entries);
    if (rc < 0)
        mcq_log_error("shard %u: io_uring setup failed: %s", sh->id, strerror(-rc));
    for (unsigned src = 0; rc == 0 && src < rt->n; src++) {
        if (src == sh->id)
            continue;
        rc = mcq_spsc_create(rt->cfg.mesh_capacity, &rt->mesh[(size_t)src * rt->n + sh->id]);
    }
    if (rc == 0) {
        sh->parked = calloc(rt->n, sizeof(*sh->parked));
        if (!sh->parked)
            rc = -ENOMEM;
    }
    start_report(rt, rc);
    if (start_wait_all(rt) != 0) {
        mcq_shard_set_current(NULL);
        mcq_log_detach_thread();
        return NULL;
    }
    sh->now_ns = monotonic_ns();
    arm_post_read(sh);
    shard_loop(sh);
    sh->exited = true;
    mcq_shard_set_current(NULL);
    mcq_log_detach_thread();
    uint64_t one = 1;
    if (write(rt->exit_fd, &one, sizeof(one)) < 0)
        mcq_log_error("shard %u: exit eventfd write failed: %s", sh->id, strerror(errno));
    return NULL;
}

static void shard_free(struct mcq_shard *sh)
{
    if (!sh)
        return;
    if (sh->ring_fd > 0)
        io_uring_queue_exit(&sh->ring);
    if (sh->post_fd >= 0)
        close(sh->post_fd);
    if (sh->parked) {
        for (unsigned i = 0; i < sh->rt->n; i++)
            free(sh->parked[i].buf);
        free(sh->parked);
    }
    for (struct mcq_post *p = sh->posts; p;) {
        struct mcq_post *next = p->next;
        free(p);
        p = next;
    }
    free(sh->heap);
    if (sh->arena) {
        /* Every shard thread is gone and the final drain ran: this thread is the owner. */
        mcq_arena_set_current(sh->arena);
        int rc = mcq_arena_destroy(sh->arena);
        if (rc < 0)
            mcq_log_error("shard %u: memory still referenced at shutdown (%s)", sh->id,
                          strerror(-rc));
        mcq_arena_set_current(NULL);
    }
    pthread_mutex_destroy(&sh->post_lock);
    free(sh);
}

/* Wakes every started shard so it sees a stop request or a forced stop. */
static void wake_shards(struct mcq_runtime *rt, unsigned started)
{
    for (unsigned i = 0; i < started; i++) {
        uint64_t one = 1;
        if (write(rt->shards[i]->post_fd, &one, sizeof(one)) < 0)
            mcq_log_error("cannot wake shard %u: %s", i, strerror(errno));
    }
}

static void request_stop(struct mcq_runtime *rt, unsigned started)
{
    atomic_store_explicit(&rt->stop_requested, 1, memory_order_release);
    wake_shards(rt, started);
}

static void join_shards(struct mcq_runtime *rt, unsigned started)
{
    request_stop(rt, started);
    for (unsigned i = 0; i < started; i++)
        pthread_join(rt->shards[i]->thread, NULL);
    rt->joined = true;
}

static void runtime_free(struct mcq_runtime *rt)
{
    if (rt->mesh) {
        for (size_t i = 0; i < (size_t)rt->n * rt->n; i++)
            mcq_spsc_destroy(rt->mesh[i]);
        free(rt->mesh);
    }
    if (rt->shards) {
        for (unsigned i = 0; i < rt->n; i++)
            shard_free(rt->shards[i]);
        free(rt->shards);
    }
    if (rt->stop_fd >= 0)
        close(rt->stop_fd);
    if (rt->exit_fd >= 0)
        close(rt->exit_fd);
    mcq_topology_free(rt->topo);
    pthread_mutex_destroy(&rt->start_lock);
    pthread_cond_destroy(&rt->start_cond);
    pthread_mutex_destroy(&rt->cleanup_lock);
    free(rt);
    mcq_log_stop();
}

static bool is_pow2(unsigned x)
{
    return x && !(x & (x - 1));
}

int mcq_runtime_create(const struct mcq_config *cfg_in, struct mcq_runtime **out)
{
    if (!out)
        return -EINVAL;
    struct mcq_config cfg = cfg_in ? *cfg_in : mcq_config_default();
    if (cfg.shards > MCQ_MAX_SHARDS || !is_pow2(cfg.mesh_capacity) || cfg.uring_entries == 0)
        return -EINVAL;
    int rc = mcq_log_start();
    if (rc < 0)
        return rc;
    struct mcq_runtime *rt = calloc(1, sizeof(*rt));
    if (!rt) {
        mcq_log_stop();
        return -ENOMEM;
    }
    rt->stop_fd = rt->exit_fd = -1;
    pthread_mutex_init(&rt->start_lock, NULL);
    pthread_cond_init(&rt->start_cond, NULL);
    pthread_mutex_init(&rt->cleanup_lock, NULL);
    rc = mcq_topology_load(&rt->topo);
    if (rc < 0) {
        runtime_free(rt);
        return rc;
    }
    if (cfg.shards == 0)
        cfg.shards = mcq_topology_cores(rt->topo);
    rt->cfg = cfg;
    rt->n = cfg.shards;
    rt->shards = calloc(rt->n, sizeof(*rt->shards));
    rt->mesh = calloc((size_t)rt->n * rt->n, sizeof(*rt->mesh));
    rt->stop_fd = eventfd(0, EFD_CLOEXEC);
    rt->exit_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (!rt->shards || !rt->mesh || rt->stop_fd < 0 || rt->exit_fd < 0) {
        rc = rt->stop_fd < 0 || rt->exit_fd < 0 ? -errno : -ENOMEM;
        runtime_free(rt);
        return rc;
    }
    for (unsigned i = 0; i < rt->n; i++) {
        struct mcq_shard *sh = aligned_alloc(128, (sizeof(*sh) + 127) & ~(size_t)127);
        if (!sh) {
            runtime_free(rt);
            return -ENOMEM;
        }
        memset(sh, 0, sizeof(*sh));
        sh->rt = rt;
        sh->id = i;
        sh->ring_fd = -1;
        sh->posts_tail = &sh->posts;
        sh->post_op.complete = post_read_done;
        pthread_mutex_init(&sh->post_lock, NULL);
        sh->post_fd = eventfd(0, EFD_CLOEXEC);
        rt->shards[i] = sh;
        if (sh->post_fd < 0) {
            rc = -errno;
            runtime_free(rt);
            return rc;
        }
    }
    /* Shard threads never take SIGINT/SIGTERM: mcq_runtime_run() reads them. */
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &block, &old);
    unsigned started = 0;
    for (; started < rt->n; started++) {
        rc = -pthread_create(&rt->shards[started]->thread, NULL, shard_main, rt->shards[started]);
        if (rc < 0)
            break;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc < 0) {
        /* Threads already started wait for the rest; report the missing ones as failed. */
        for (unsigned i = started; i < rt->n; i++)
            start_report(rt, rc);
    }
    rc = start_wait_all(rt);
    if (rc < 0) {
        join_shards(rt, started);
        runtime_free(rt);
        return rc;
    }
    *out = rt;
    return 0;
}

void mcq_runtime_stop(struct mcq_runtime *rt)
{
    uint64_t one = 1;
    if (write(rt->stop_fd, &one, sizeof(one)) < 0)
        mcq_log_error("mcq_runtime_stop: eventfd write failed: %s", strerror(errno));
}

static void stop_and_drain(struct mcq_runtime *rt)
{
    if (rt->joined)
        return;
    join_shards(rt, rt->n);
    /* Every shard thread is gone: entries still in rings (remote frees, late control events)
     * and posts that came after a shard left its loop run here on behalf of their shard,
     * single-threaded, until none produce more (a task may find its shard stopped). */
    unsigned ran;
    do {
        mcq_mesh_final_drain(rt);
        ran = 0;
        for (unsigned i = 0; i < rt->n; i++) {
            mcq_shard_set_current(rt->shards[i]);
            ran += run_posts(rt->shards[i]);
        }
        mcq_shard_set_current(NULL);
    } while (ran);
}

/* Takes the signals off the pending set: restoring the caller's mask would otherwise
 * deliver them with their default action (terminate) right after we handled them. Returns
 * whether there was one. */
static bool drain_signals(int sfd)
{
    struct signalfd_siginfo si;
    bool any = false;
    while (read(sfd, &si, sizeof(si)) == (ssize_t)sizeof(si))
        any = true;
    return any;
}

/* Until every shard left its loop; a signal meanwhile forces the stop. */
static void wait_exits(struct mcq_runtime *rt, int sfd)
{
    uint64_t exited = 0;
    struct pollfd pfd[2] = {{.fd = rt->exit_fd, .events = POLLIN}, {.fd = sfd, .events = POLLIN}};
    while (exited < rt->n) {
        if (poll(pfd, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            return;
        }
        uint64_t n;
        if (pfd[0].revents && read(rt->exit_fd, &n, sizeof(n)) == (ssize_t)sizeof(n))
            exited += n;
        if (pfd[1].revents && drain_signals(sfd) &&
            !atomic_exchange_explicit(&rt->stop_forced, 1, memory_order_acq_rel)) {
            mcq_log_warn(
                "signal during the graceful stop: stopping now; lingering sockets drop what "
                "they have not sent");
            wake_shards(rt, rt->n);
        }
    }
}

int mcq_runtime_run(struct mcq_runtime *rt)
{
    if (!rt)
        return -EINVAL;
    sigset_t sigs, old;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, &old);
    int sfd = signalfd(-1, &sigs, SFD_CLOEXEC | SFD_NONBLOCK);
    struct pollfd pfd[2] = {{.fd = rt->stop_fd, .events = POLLIN}, {.fd = sfd, .events = POLLIN}};
    for (;;) {
        int n = poll(pfd, sfd >= 0 ? 2 : 1, -1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 || pfd[0].revents || (sfd >= 0 && pfd[1].revents))
            break;
    }
    if (sfd >= 0) {
        drain_signals(sfd);
        /* Sockets may linger (libzmq's default LINGER -1 waits for ever on a peer that
         * never reads): a second signal, as a user's second Ctrl-C, cuts the wait short. */
        request_stop(rt, rt->n);
        wait_exits(rt, sfd);
        close(sfd);
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    stop_and_drain(rt);
    return 0;
}

bool mcq_runtime_stopping(const struct mcq_runtime *rt)
{
    return atomic_load_explicit(&rt->stop_requested, memory_order_acquire) != 0;
}

void mcq_runtime_add_cleanup(struct mcq_runtime *rt, struct mcq_runtime_cleanup *c)
{
    pthread_mutex_lock(&rt->cleanup_lock);
    c->_next = rt->cleanups;
    rt->cleanups = c;
    pthread_mutex_unlock(&rt->cleanup_lock);
}

void mcq_runtime_remove_cleanup(struct mcq_runtime *rt, struct mcq_runtime_cleanup *c)
{
    pthread_mutex_lock(&rt->cleanup_lock);
    for (struct mcq_runtime_cleanup **p = &rt->cleanups; *p; p = &(*p)->_next) {
        if (*p == c) {
            *p = c->_next;
            break;
        }
    }
    pthread_mutex_unlock(&rt->cleanup_lock);
}

void mcq_runtime_destroy(struct mcq_runtime *rt)
{
    if (!rt)
        return;
    stop_and_drain(rt);
    /* The shards are gone, so nothing else touches the list; a cleanup may free objects
     * that held the registration. */
    while (rt->cleanups) {
        struct mcq_runtime_cleanup *c = rt->cleanups;
        rt->cleanups = c->_next;
        c->run(c);
    }
    runtime_free(rt);
}
