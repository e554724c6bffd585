/* MCQ_TSAN_TEST: also built and run under ThreadSanitizer. */
#include <criterion/criterion.h>

#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/runtime.h"
#include "wait_util.h"

#define ALL_SHARDS 8
#ifdef __SANITIZE_THREAD__
#define PER_PAIR 20000u
#define PINGPONG_HOPS 100000u
#else
#define PER_PAIR 100000u
#define PINGPONG_HOPS 1000000u
#endif
#define SEND_CHUNK 512u
#define TEST_TIMEOUT_S 240.0

static struct mcq_runtime *new_runtime(unsigned shards)
{
    struct mcq_config cfg = mcq_config_default();
    cfg.shards = shards;
    cfg.spin_us = 0; /* oversubscribed on 2 cores: spinning would only steal CPU */
    cfg.mesh_capacity = 256;
    cfg.mesh_overflow_max = 1024;
    struct mcq_runtime *rt = NULL;
    cr_assert_eq(mcq_runtime_create(&cfg, &rt), 0);
    return rt;
}

/* --- all-to-all: every entry delivered exactly once and in order per source --------- */

struct a2a_shard {
    uint32_t next_to_send[ALL_SHARDS];
    uint32_t expected_from[ALL_SHARDS];
    uint32_t sources_done;
};

static struct {
    struct a2a_shard s[ALL_SHARDS];
    struct test_event done;
    _Atomic int errors;
} a2a;

static void a2a_recv(struct mcq_shard *sh, void *arg)
{
    uintptr_t v = (uintptr_t)arg;
    unsigned src = (unsigned)(v >> 32);
    uint32_t seq = (uint32_t)v;
    struct a2a_shard *me = &a2a.s[mcq_shard_id(sh)];
    if (src >= ALL_SHARDS || seq != me->expected_from[src]) {
        atomic_fetch_add(&a2a.errors, 1);
        return;
    }
    if (++me->expected_from[src] == PER_PAIR && ++me->sources_done == ALL_SHARDS - 1)
        test_event_signal(&a2a.done);
}

static void a2a_send(struct mcq_shard *sh, void *arg)
{
    (void)arg;
    unsigned id = mcq_shard_id(sh);
    struct a2a_shard *me = &a2a.s[id];
    bool more = false;
    for (unsigned to = 0; to < ALL_SHARDS; to++) {
        if (to == id)
            continue;
        for (unsigned i = 0; i < SEND_CHUNK && me->next_to_send[to] < PER_PAIR; i++) {
            uintptr_t v = ((uintptr_t)id << 32) | me->next_to_send[to];
            if (mcq_shard_submit(sh, to, a2a_recv, (void *)v) == -EAGAIN)
                break; /* parked queue full: retry on our next turn */
            me->next_to_send[to]++;
        }
        more |= me->next_to_send[to] < PER_PAIR;
    }
    if (more)
        cr_assert_eq(mcq_shard_submit_ctl(sh, id, a2a_send, NULL), 0);
}

Test(mesh, all_to_all_8_shards_exactly_once_in_order, .timeout = TEST_TIMEOUT_S)
{
    memset(&a2a, 0, sizeof(a2a));
    test_event_init(&a2a.done);
    struct mcq_runtime *rt = new_runtime(ALL_SHARDS);
    for (unsigned i = 0; i < ALL_SHARDS; i++)
        cr_assert_eq(mcq_runtime_post(rt, i, a2a_send, NULL), 0);
    cr_assert(test_event_wait(&a2a.done, ALL_SHARDS, TEST_TIMEOUT_S - 10),
              "not every entry arrived");
    /* Stop first: a shard adds to its counters after running a batch. */
    mcq_runtime_stop(rt);
    cr_assert_eq(mcq_runtime_run(rt), 0);
    uint64_t in = 0, out = 0;
    for (unsigned i = 0; i < ALL_SHARDS; i++) {
        struct mcq_shard_stats st;
        cr_assert_eq(mcq_runtime_stats(rt, i, &st), 0);
        in += st.mesh_in;
        out += st.mesh_out;
    }
    mcq_runtime_destroy(rt);
    cr_assert_eq(atomic_load(&a2a.errors), 0, "duplicate, lost or reordered entries");
    for (unsigned d = 0; d < ALL_SHARDS; d++)
        for (unsigned s = 0; s < ALL_SHARDS; s++)
            cr_assert_eq(a2a.s[d].expected_from[s], s == d ? 0 : PER_PAIR);
    uint64_t total = (uint64_t)ALL_SHARDS * (ALL_SHARDS - 1) * PER_PAIR;
    cr_assert_eq(in, total);
    cr_assert_eq(out, total);
}

/* --- sleep/wake: hops between sleeping shards; a lost wakeup would stall the chain ---- */

#define PINGPONG_PAIRS 4

static struct {
    _Atomic uint32_t hops[PINGPONG_PAIRS];
    struct test_event done;
} pp;

static void pp_hop(struct mcq_shard *sh, void *arg)
{
    unsigned pair = (unsigned)(uintptr_t)arg;
    uint32_t h = atomic_fetch_add_explicit(&pp.hops[pair], 1, memory_order_relaxed) + 1;
    if (h == PINGPONG_HOPS / PINGPONG_PAIRS) {
        test_event_signal(&pp.done);
        return;
    }
    unsigned me = mcq_shard_id(sh);
    unsigned peer = me == pair * 2 ? pair * 2 + 1 : pair * 2;
    cr_assert_eq(mcq_shard_submit(sh, peer, pp_hop, arg), 0);
}

Test(mesh, sleep_wake_one_million_hops_without_a_lost_wakeup, .timeout = TEST_TIMEOUT_S)
{
    memset(&pp, 0, sizeof(pp));
    test_event_init(&pp.done);
    struct mcq_runtime *rt = new_runtime(PINGPONG_PAIRS * 2);
    for (unsigned p = 0; p < PINGPONG_PAIRS; p++)
        cr_assert_eq(mcq_runtime_post(rt, p * 2, pp_hop, (void *)(uintptr_t)p), 0);
    cr_assert(test_event_wait(&pp.done, PINGPONG_PAIRS, TEST_TIMEOUT_S - 10),
              "a hop chain stalled: lost wakeup");
    uint64_t sleeps = 0, sent = 0, recv = 0;
    for (unsigned i = 0; i < PINGPONG_PAIRS * 2; i++) {
        struct mcq_shard_stats st;
        mcq_runtime_stats(rt, i, &st);
        sleeps += st.sleeps;
        sent += st.wakeups_sent;
        recv += st.wakeups_recv;
    }
    mcq_runtime_destroy(rt);
    cr_log_info("hops %u sleeps %llu wakeups sent %llu received %llu", PINGPONG_HOPS,
                (unsigned long long)sleeps, (unsigned long long)sent, (unsigned long long)recv);
    /* The chains must really have slept and been woken, or the test proves nothing. */
    cr_assert_gt(sleeps, PINGPONG_HOPS / 100);
    cr_assert_gt(sent, 0);
}

/* --- broadcast reaches every shard once ------------------------------------------- */

static struct {
    _Atomic uint32_t seen[ALL_SHARDS];
    struct test_event done;
} bc;

static void bc_recv(struct mcq_shard *sh, void *arg)
{
    (void)arg;
    atomic_fetch_add(&bc.seen[mcq_shard_id(sh)], 1);
    test_event_signal(&bc.done);
}

static void bc_start(struct mcq_shard *sh, void *arg)
{
    cr_assert_eq(mcq_shard_broadcast(sh, bc_recv, arg, true), 0);
}

Test(mesh, broadcast_runs_once_on_every_shard, .timeout = 60)
{
    memset(&bc, 0, sizeof(bc));
    test_event_init(&bc.done);
    struct mcq_runtime *rt = new_runtime(5);
    cr_assert_eq(mcq_runtime_post(rt, 2, bc_start, NULL), 0);
    cr_assert(test_event_wait(&bc.done, 5, 50));
    mcq_runtime_destroy(rt);
    for (unsigned i = 0; i < 5; i++)
        cr_assert_eq(atomic_load(&bc.seen[i]), 1);
}
