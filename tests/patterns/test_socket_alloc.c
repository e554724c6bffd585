/* Steady-state cross-shard sends allocate nothing (DESIGN.md "Memory"): a PUSH sends from
 * a shard that does not own its peer, so every message crosses the mesh to the owner.
 * After a warm-up round, a measured round must leave the arena's backend-call counter flat
 * on both shards and, under ASan (whose malloc hooks see every call), make no malloc on a
 * shard thread at all. */
#include "socket_util.h"

#define ROUND_MSGS 400u /* per round */
#define WARM_ROUNDS 10u /* caches, slabs and tables reach their size */
#define PHASE_ROUNDS 5u
#define MAX_PHASES 10u
#define BODY_BYTES 64u

#if defined(__SANITIZE_ADDRESS__)
#define T_COUNT_MALLOCS 1
/* From the sanitizer runtime (sanitizer/allocator_interface.h, not shipped with gcc 12). */
int __sanitizer_install_malloc_and_free_hooks(void (*malloc_hook)(const volatile void *, size_t),
                                              void (*free_hook)(const volatile void *));
#endif

static _Atomic bool counting;

#ifdef T_COUNT_MALLOCS
static _Atomic unsigned long shard_mallocs[T_SHARDS];

static void on_malloc(const volatile void *p, size_t size)
{
    (void)p;
    (void)size;
    struct mcq_shard *sh = mcq_shard_current();
    if (sh && atomic_load_explicit(&counting, memory_order_relaxed))
        atomic_fetch_add_explicit(&shard_mallocs[mcq_shard_id(sh)], 1, memory_order_relaxed);
}

static void on_free(const volatile void *p)
{
    (void)p;
}
#endif

TestSuite(socket_alloc, .init = t_setup, .fini = t_teardown, .timeout = 60);

struct round {
    unsigned n, sent;
    int rc;
    unsigned writables_before; /* the shard's on_writable count at -EAGAIN */
    struct test_event done;
};

static void send_round(struct mcq_shard *sh, void *arg)
{
    struct round *r = arg;
    uint8_t body[BODY_BYTES] = {0};
    r->rc = 0;
    while (r->sent < r->n) {
        struct mcq_msg *m = mcq_msg_new(sh);
        r->rc = m ? mcq_msg_append(m, body, sizeof(body)) : -ENOMEM;
        if (r->rc == 0) {
            pthread_mutex_lock(&app.lock);
            r->writables_before = app.writables[mcq_shard_id(sh)];
            pthread_mutex_unlock(&app.lock);
            r->rc = mcq_send(sh, app.s, m);
        }
        if (r->rc < 0) {
            mcq_msg_free(m);
            break;
        }
        r->sent++;
    }
    test_event_signal(&r->done);
}

/* n messages from shard `from` (resuming on on_writable when credits run out), all
 * received. */
static void run_round(void *pull, unsigned from, unsigned n)
{
    struct round r = {.n = n};
    while (r.sent < n) {
        test_event_init(&r.done);
        cr_assert_eq(mcq_runtime_post(app.rt, from, send_round, &r), 0);
        cr_assert(test_event_wait(&r.done, 1, T_WAIT_S), "send round never ran");
        cr_assert(r.rc == 0 || r.rc == -EAGAIN, "send from shard %u: %d", from, r.rc);
        if (r.rc == -EAGAIN)
            cr_assert(t_wait_count(&app.writables[from], r.writables_before + 1, T_WAIT_S),
                      "no on_writable after -EAGAIN");
    }
    char buf[BODY_BYTES];
    for (unsigned i = 0; i < n; i++)
        cr_assert_eq(zmq_recv(pull, buf, sizeof(buf), 0), (int)BODY_BYTES, "message %u lost", i);
}

static uint64_t backend_allocs(unsigned shard)
{
    struct mcq_shard_stats st;
    cr_assert_eq(mcq_runtime_stats(app.rt, shard, &st), 0);
    return st.mem_backend_allocs;
}

Test(socket_alloc, cross_shard_sends_allocate_nothing)
{
    char ep[256];
    void *pull = z_socket(ZMQ_PULL);
    z_bind(pull, "tcp", ep, sizeof(ep));
    t_socket(MCQ_PUSH);
    cr_assert_eq(mcq_connect(app.s, ep), 0);
    cr_assert(t_wait_count(&app.ups, 1, T_WAIT_S));
    unsigned owner = app.up_shard, from = (owner + 1) % T_SHARDS;
    /* The sender must know the peer before its first send. */
    cr_assert(t_wait_lb(from, 1));
    for (unsigned i = 0; i < WARM_ROUNDS; i++)
        run_round(pull, from, ROUND_MSGS);
#ifdef T_COUNT_MALLOCS
    cr_assert_eq(__sanitizer_install_malloc_and_free_hooks(on_malloc, on_free), 1);
#endif
    /* Records come home asynchronously, so the page pools may still grow a little while
     * the number in flight finds its peak: steady state is a phase with no backend call. */
    bool flat = false;
    for (unsigned phase = 0; phase < MAX_PHASES && !flat; phase++) {
        uint64_t from_before = backend_allocs(from), owner_before = backend_allocs(owner);
        atomic_store(&counting, true);
        for (unsigned i = 0; i < PHASE_ROUNDS; i++)
            run_round(pull, from, ROUND_MSGS);
        atomic_store(&counting, false);
        uint64_t grew = backend_allocs(from) - from_before + backend_allocs(owner) - owner_before;
        cr_log_info("phase %u: %u cross-shard messages, %llu backend calls (shards %u, %u)", phase,
                    PHASE_ROUNDS * ROUND_MSGS, (unsigned long long)grew, from, owner);
        flat = grew == 0;
#ifdef T_COUNT_MALLOCS
        cr_log_info("phase %u: malloc calls on shard threads: %lu %lu %lu %lu", phase,
                    atomic_load(&shard_mallocs[0]), atomic_load(&shard_mallocs[1]),
                    atomic_load(&shard_mallocs[2]), atomic_load(&shard_mallocs[3]));
        for (unsigned sh = 0; sh < T_SHARDS; sh++)
            cr_assert_eq(atomic_load(&shard_mallocs[sh]), 0,
                         "shard %u made %lu malloc calls for %u cross-shard messages (sender "
                         "%u, owner %u)",
                         sh, atomic_load(&shard_mallocs[sh]), PHASE_ROUNDS * ROUND_MSGS, from,
                         owner);
#endif
    }
    cr_assert(flat, "the arenas still called the backend after %u phases", MAX_PHASES);
    z_close(pull);
}
