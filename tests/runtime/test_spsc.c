/* MCQ_TSAN_TEST: also built against the TSan shim, so it uses only Test, cr_assert and
 * cr_skip_test. */
#include <criterion/criterion.h>

#include "runtime/spsc.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <time.h>

/* TSan makes every atomic and slot access a runtime call; fewer entries still cross the
 * full/empty boundaries millions of times. */
#if defined(__SANITIZE_THREAD__)
#define STRESS_ENTRIES 1000000ull
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define STRESS_ENTRIES 1000000ull
#endif
#endif
#ifndef STRESS_ENTRIES
#define STRESS_ENTRIES 10000000ull
#endif
#define STRESS_DEADLINE_NS (60ull * 1000000000ull)
#define POP_MAX 64 /* entries per pop in the stress consumer, at most */

static struct mcq_spsc_entry seq_entry(uint64_t seq)
{
    return (struct mcq_spsc_entry){.a = (void *)(uintptr_t)seq, .b = (void *)(uintptr_t)~seq};
}

static bool is_seq(struct mcq_spsc_entry e, uint64_t seq)
{
    return (uintptr_t)e.a == seq && (uintptr_t)e.b == (uintptr_t)~seq;
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* xorshift64: varying batch sizes that both threads can draw without sharing state. */
static uint64_t next_rand(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

Test(spsc, create_rejects_bad_capacity)
{
    struct mcq_spsc *r = (struct mcq_spsc *)&r;
    const unsigned bad[] = {0, 3, 6, 100, MCQ_SPSC_MAX_CAPACITY * 2, UINT_MAX};
    for (unsigned i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cr_assert_eq(mcq_spsc_create(bad[i], &r), -EINVAL, "capacity %u", bad[i]);
        cr_assert_eq(r, (struct mcq_spsc *)&r, "out written on error");
    }
    cr_assert_eq(mcq_spsc_create(8, NULL), -EINVAL);
    mcq_spsc_destroy(NULL);
}

Test(spsc, new_ring_is_empty)
{
    struct mcq_spsc *r;
    cr_assert_eq(mcq_spsc_create(16, &r), 0);
    cr_assert_eq(mcq_spsc_capacity(r), 16u);
    cr_assert(mcq_spsc_empty(r));
    struct mcq_spsc_entry out[4];
    cr_assert_eq(mcq_spsc_pop(r, out, 4), 0u);
    cr_assert_eq(mcq_spsc_staged(r), 0u);
    mcq_spsc_destroy(r);
}

Test(spsc, staged_entries_are_invisible_until_published)
{
    struct mcq_spsc *r;
    cr_assert_eq(mcq_spsc_create(8, &r), 0);
    struct mcq_spsc_entry out[8];
    cr_assert(mcq_spsc_push(r, seq_entry(1)));
    cr_assert(mcq_spsc_push(r, seq_entry(2)));
    cr_assert_eq(mcq_spsc_staged(r), 2u);
    cr_assert(mcq_spsc_empty(r));
    cr_assert_eq(mcq_spsc_pop(r, out, 8), 0u);
    mcq_spsc_publish(r);
    cr_assert_eq(mcq_spsc_staged(r), 0u);
    cr_assert_not(mcq_spsc_empty(r));
    cr_assert(mcq_spsc_push(r, seq_entry(3)));
    cr_assert_eq(mcq_spsc_pop(r, out, 8), 2u, "only the published two");
    cr_assert(is_seq(out[0], 1) && is_seq(out[1], 2));
    cr_assert(mcq_spsc_empty(r));
    mcq_spsc_publish(r);
    cr_assert_eq(mcq_spsc_pop(r, out, 8), 1u);
    cr_assert(is_seq(out[0], 3));
    mcq_spsc_destroy(r);
}

Test(spsc, full_ring_refuses_until_consumer_frees)
{
    struct mcq_spsc *r;
    cr_assert_eq(mcq_spsc_create(4, &r), 0);
    for (uint64_t i = 0; i < 4; i++)
        cr_assert(mcq_spsc_push(r, seq_entry(i)));
    cr_assert_not(mcq_spsc_push(r, seq_entry(99)), "staged entries fill the ring");
    mcq_spsc_publish(r);
    cr_assert_not(mcq_spsc_push(r, seq_entry(99)));
    struct mcq_spsc_entry out[4];
    cr_assert_eq(mcq_spsc_pop(r, out, 3), 3u);
    for (uint64_t i = 0; i < 3; i++)
        cr_assert(is_seq(out[i], i));
    for (uint64_t i = 4; i < 7; i++)
        cr_assert(mcq_spsc_push(r, seq_entry(i)), "freed slot %llu", (unsigned long long)i);
    cr_assert_not(mcq_spsc_push(r, seq_entry(99)));
    mcq_spsc_publish(r);
    cr_assert_eq(mcq_spsc_pop(r, out, 4), 4u);
    for (uint64_t i = 0; i < 4; i++)
        cr_assert(is_seq(out[i], 3 + i));
    cr_assert(mcq_spsc_empty(r));
    mcq_spsc_destroy(r);
}

Test(spsc, capacity_one_and_two)
{
    for (unsigned cap = 1; cap <= 2; cap++) {
        struct mcq_spsc *r;
        cr_assert_eq(mcq_spsc_create(cap, &r), 0);
        struct mcq_spsc_entry out[2];
        for (uint64_t round = 0; round < 100; round++) {
            for (unsigned i = 0; i < cap; i++)
                cr_assert(mcq_spsc_push(r, seq_entry(round * cap + i)));
            cr_assert_not(mcq_spsc_push(r, seq_entry(0)));
            mcq_spsc_publish(r);
            cr_assert_eq(mcq_spsc_pop(r, out, 2), cap);
            for (unsigned i = 0; i < cap; i++)
                cr_assert(is_seq(out[i], round * cap + i));
        }
        cr_assert(mcq_spsc_empty(r));
        mcq_spsc_destroy(r);
    }
}

Test(spsc, wraparound_over_many_cycles_keeps_order)
{
    struct mcq_spsc *r;
    cr_assert_eq(mcq_spsc_create(8, &r), 0);
    uint64_t rnd = 0x9e3779b97f4a7c15ull, next_in = 0, next_out = 0;
    struct mcq_spsc_entry out[8];
    /* Random push and pop sizes move the start slot through every position many times. */
    for (int cycle = 0; cycle < 10000; cycle++) {
        unsigned want = (unsigned)(next_rand(&rnd) % 9);
        unsigned room = 8 - (unsigned)(next_in - next_out);
        for (unsigned i = 0; i < want; i++) {
            bool ok = mcq_spsc_push(r, seq_entry(next_in));
            cr_assert_eq(ok, i < room, "cycle %d push %u room %u", cycle, i, room);
            if (ok)
                next_in++;
        }
        mcq_spsc_publish(r);
        unsigned max = 1 + (unsigned)(next_rand(&rnd) % 8);
        unsigned expect =
            (unsigned)(next_in - next_out) < max ? (unsigned)(next_in - next_out) : max;
        unsigned n = mcq_spsc_pop(r, out, max);
        cr_assert_eq(n, expect, "cycle %d", cycle);
        for (unsigned i = 0; i < n; i++, next_out++)
            cr_assert(is_seq(out[i], next_out), "cycle %d entry %u", cycle, i);
    }
    cr_assert_gt(next_out, 20000u, "too few entries went around");
    mcq_spsc_destroy(r);
}

struct stress {
    struct mcq_spsc *ring;
    uint64_t entries;
    uint64_t deadline_ns;
    uint64_t received;
    bool timed_out;
    bool bad_entry;
};

/* Both sides yield instead of sleeping when they cannot progress: on two shared cores the
 * peer may be descheduled, and spinning would only burn the timeslice it needs. */
static void *stress_producer(void *arg)
{
    struct stress *s = arg;
    uint64_t rnd = 0x243f6a8885a308d3ull, seq = 0;
    unsigned cap = mcq_spsc_capacity(s->ring);
    while (seq < s->entries) {
        unsigned batch = 1 + (unsigned)(next_rand(&rnd) % (2 * cap));
        for (unsigned i = 0; i < batch && seq < s->entries; i++) {
            while (!mcq_spsc_push(s->ring, seq_entry(seq))) {
                mcq_spsc_publish(s->ring);
                if (now_ns() > s->deadline_ns) {
                    s->timed_out = true;
                    return NULL;
                }
                sched_yield();
            }
            seq++;
        }
        mcq_spsc_publish(s->ring);
    }
    return NULL;
}

static void *stress_consumer(void *arg)
{
    struct stress *s = arg;
    uint64_t rnd = 0x13198a2e03707344ull, seq = 0;
    struct mcq_spsc_entry out[POP_MAX];
    while (seq < s->entries) {
        unsigned max = 1 + (unsigned)(next_rand(&rnd) % POP_MAX);
        unsigned n = mcq_spsc_pop(s->ring, out, max);
        if (n == 0) {
            if (now_ns() > s->deadline_ns) {
                s->timed_out = true;
                break;
            }
            sched_yield();
            continue;
        }
        for (unsigned i = 0; i < n; i++, seq++) {
            if (!is_seq(out[i], seq)) {
                s->bad_entry = true;
                s->received = seq;
                return NULL;
            }
        }
    }
    s->received = seq;
    return NULL;
}

static void run_stress(unsigned capacity, uint64_t entries)
{
    struct stress s = {.entries = entries, .deadline_ns = now_ns() + STRESS_DEADLINE_NS};
    cr_assert_eq(mcq_spsc_create(capacity, &s.ring), 0);
    pthread_t prod, cons;
    cr_assert_eq(pthread_create(&cons, NULL, stress_consumer, &s), 0);
    cr_assert_eq(pthread_create(&prod, NULL, stress_producer, &s), 0);
    pthread_join(prod, NULL);
    pthread_join(cons, NULL);
    cr_assert_not(s.bad_entry, "wrong entry at %llu", (unsigned long long)s.received);
    cr_assert_not(s.timed_out, "no progress before the deadline");
    cr_assert_eq(s.received, entries, "lost entries");
    cr_assert(mcq_spsc_empty(s.ring));
    mcq_spsc_destroy(s.ring);
}

Test(spsc, two_threads_keep_order_and_lose_nothing)
{
    run_stress(1024, STRESS_ENTRIES);
}

Test(spsc, two_threads_on_a_tiny_ring)
{
    run_stress(4, STRESS_ENTRIES / 10);
}
