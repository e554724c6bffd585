/* SPSC ring between two pinned, spinning threads: one-way handoff latency (ping-pong over
 * two rings, RTT/2) and streaming throughput (batched publish and pop). */
#include "affinity.h"
#include "bench.h"

#include "runtime/spsc.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>

#define RING_CAPACITY 1024     /* entries per ring */
#define HANDOFF_ROUNDS 1000000 /* round trips; ~0.3 s at the design target */
#define HANDOFF_ROUNDS_QUICK 50000
#define STREAM_ENTRIES 100000000 /* ~1 s at 100 M entries/s */
#define STREAM_ENTRIES_QUICK 10000000
#define STREAM_BATCH_MIN 16 /* producer batch sizes cycle over [MIN, MAX] */
#define STREAM_BATCH_MAX 64
#define POP_MAX 64 /* consumer batch, entries */
/* Pause iterations before a spinning side yields: only reached when the peer was
 * descheduled (the machine is shared), so the timeslice goes to whoever can progress.
 * With a single allowed CPU the peer can only run if we yield, so yield at once. */
#define SPIN_YIELD_AFTER (1u << 16)
#define SPIN_YIELD_AFTER_ONE_CPU 1u

struct pair {
    struct mcq_spsc *to_b; /* created by B, its consumer */
    struct mcq_spsc *to_a; /* created by A */
    atomic_uint arrived;   /* sides that have created their ring */
    atomic_bool abort;     /* a side never started: do not wait for it */
    unsigned spin_limit;   /* SPIN_YIELD_AFTER or, on one CPU, SPIN_YIELD_AFTER_ONE_CPU */
    uint64_t count;        /* round trips or streamed entries */
    uint64_t start_ns, end_ns;
    int cpu_a, cpu_b;
    int err_a, err_b; /* each written only by its own side */
};

static void spin_wait(const struct pair *p, unsigned *spins)
{
    if (++*spins >= p->spin_limit) {
        *spins = 0;
        sched_yield();
        return;
    }
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

/* Pins the thread, creates its inbound ring on itself (NUMA first-touch), waits for the
 * peer; false when either side failed. */
static bool side_start(struct pair *p, unsigned nth, int *cpu, int *err, struct mcq_spsc **inbound)
{
    *cpu = bench_pin_thread(nth);
    int rc = mcq_spsc_create(RING_CAPACITY, inbound);
    if (rc < 0)
        *err = rc;
    atomic_fetch_add(&p->arrived, 1);
    while (atomic_load(&p->arrived) < 2) {
        if (atomic_load(&p->abort))
            return false;
        sched_yield();
    }
    return p->to_a && p->to_b;
}

static struct mcq_spsc_entry pop_one(const struct pair *p, struct mcq_spsc *r)
{
    struct mcq_spsc_entry e;
    unsigned spins = 0;
    while (mcq_spsc_pop(r, &e, 1) == 0)
        spin_wait(p, &spins);
    return e;
}

static void push_one(const struct pair *p, struct mcq_spsc *r, struct mcq_spsc_entry e)
{
    unsigned spins = 0;
    while (!mcq_spsc_push(r, e))
        spin_wait(p, &spins);
    mcq_spsc_publish(r);
}

static void *handoff_a(void *arg)
{
    struct pair *p = arg;
    if (!side_start(p, 0, &p->cpu_a, &p->err_a, &p->to_a))
        return NULL;
    p->start_ns = bench_now_ns();
    for (uint64_t i = 0; i < p->count; i++) {
        push_one(p, p->to_b, (struct mcq_spsc_entry){.a = (void *)(uintptr_t)i});
        /* On a mismatch keep going, so the peer is never left waiting. */
        if ((uintptr_t)pop_one(p, p->to_a).a != i)
            p->err_a = -EPROTO;
    }
    p->end_ns = bench_now_ns();
    return NULL;
}

static void *handoff_b(void *arg)
{
    struct pair *p = arg;
    if (!side_start(p, 1, &p->cpu_b, &p->err_b, &p->to_b))
        return NULL;
    for (uint64_t i = 0; i < p->count; i++)
        push_one(p, p->to_a, pop_one(p, p->to_b));
    return NULL;
}

static void *stream_producer(void *arg)
{
    struct pair *p = arg;
    if (!side_start(p, 0, &p->cpu_a, &p->err_a, &p->to_a))
        return NULL;
    p->start_ns = bench_now_ns();
    unsigned batch = STREAM_BATCH_MIN;
    for (uint64_t seq = 0; seq < p->count;) {
        for (unsigned i = 0; i < batch && seq < p->count; i++, seq++) {
            unsigned spins = 0;
            while (!mcq_spsc_push(p->to_b, (struct mcq_spsc_entry){.a = (void *)(uintptr_t)seq})) {
                mcq_spsc_publish(p->to_b);
                spin_wait(p, &spins);
            }
        }
        mcq_spsc_publish(p->to_b);
        batch = batch == STREAM_BATCH_MAX ? STREAM_BATCH_MIN : batch + 1;
    }
    return NULL;
}

static void *stream_consumer(void *arg)
{
    struct pair *p = arg;
    if (!side_start(p, 1, &p->cpu_b, &p->err_b, &p->to_b))
        return NULL;
    struct mcq_spsc_entry out[POP_MAX];
    unsigned spins = 0;
    for (uint64_t seq = 0; seq < p->count;) {
        unsigned n = mcq_spsc_pop(p->to_b, out, POP_MAX);
        if (n == 0) {
            spin_wait(p, &spins);
            continue;
        }
        spins = 0;
        for (unsigned i = 0; i < n; i++, seq++) {
            if ((uintptr_t)out[i].a != seq)
                p->err_b = -EPROTO;
        }
    }
    p->end_ns = bench_now_ns();
    return NULL;
}

static int run_pair(struct pair *p, void *(*a)(void *), void *(*b)(void *))
{
    pthread_t ta, tb;
    int rc = pthread_create(&tb, NULL, b, p);
    if (rc == 0) {
        rc = pthread_create(&ta, NULL, a, p);
        if (rc == 0)
            pthread_join(ta, NULL);
        else
            atomic_store(&p->abort, true);
        pthread_join(tb, NULL);
    }
    mcq_spsc_destroy(p->to_a);
    mcq_spsc_destroy(p->to_b);
    if (rc)
        return -rc;
    if (p->cpu_a < 0 || p->cpu_b < 0)
        return p->cpu_a < 0 ? p->cpu_a : p->cpu_b;
    return p->err_a ? p->err_a : p->err_b;
}

static int bench_spsc(struct bench_ctx *ctx)
{
    unsigned spin_limit = bench_cpu_count() > 1 ? SPIN_YIELD_AFTER : SPIN_YIELD_AFTER_ONE_CPU;
    struct pair hp = {.count = ctx->quick ? HANDOFF_ROUNDS_QUICK : HANDOFF_ROUNDS,
                      .spin_limit = spin_limit};
    int rc = run_pair(&hp, handoff_a, handoff_b);
    if (rc < 0)
        return rc;
    struct pair sp = {.count = ctx->quick ? STREAM_ENTRIES_QUICK : STREAM_ENTRIES,
                      .spin_limit = spin_limit};
    rc = run_pair(&sp, stream_producer, stream_consumer);
    if (rc < 0)
        return rc;
    if (hp.cpu_a == hp.cpu_b)
        fprintf(stderr, "spsc bench: only one CPU allowed, both threads share cpu %d\n", hp.cpu_a);
    struct bench_rec *r = bench_rec_begin("spsc", "mcq");
    bench_rec_num(r, "handoff_ns", (double)(hp.end_ns - hp.start_ns) / (2.0 * (double)hp.count));
    bench_rec_num(r, "stream_mps", (double)sp.count * 1e3 / (double)(sp.end_ns - sp.start_ns));
    bench_rec_int(r, "cpus", hp.cpu_a == hp.cpu_b ? 1 : 2);
    bench_rec_end(r);
    return 0;
}

MCQ_BENCH("runtime", "spsc", bench_spsc)
