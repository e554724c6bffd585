#include <criterion/criterion.h>

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "runtime/runtime.h"
#include "runtime/timer.h"
#include "wait_util.h"

#define NTIMERS 200
#define MAX_DELAY_MS 50
#define NS_PER_MS 1000000ull

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static struct mcq_runtime *new_runtime(unsigned shards)
{
    struct mcq_config cfg = mcq_config_default();
    cfg.shards = shards;
    struct mcq_runtime *rt = NULL;
    cr_assert_eq(mcq_runtime_create(&cfg, &rt), 0);
    return rt;
}

/* --- one-shot timers: in order, never early ----------------------------------------- */

static struct {
    struct mcq_timer t[NTIMERS];
    uint64_t wanted_at[NTIMERS];
    uint64_t fired_at[NTIMERS];
    int order[NTIMERS];
    int nfired;
    struct mcq_timer cancelled[NTIMERS];
    int cancelled_fired;
    struct test_event done;
} ot;

static void ot_fire(struct mcq_shard *sh, struct mcq_timer *t)
{
    (void)sh;
    int i = (int)(t - ot.t);
    ot.fired_at[i] = mono_ns();
    ot.order[ot.nfired++] = i;
    if (ot.nfired == NTIMERS)
        test_event_signal(&ot.done);
}

static void ot_cancelled_fire(struct mcq_shard *sh, struct mcq_timer *t)
{
    (void)sh;
    (void)t;
    ot.cancelled_fired++;
}

static void ot_start(struct mcq_shard *sh, void *arg)
{
    (void)arg;
    srand(42);
    for (int i = 0; i < NTIMERS; i++) {
        /* Timers that would fire first are cancelled: the loop must not keep sleeping
         * until their stale deadlines (the compio bug in monocoque-rust.md P20). */
        mcq_timer_init(&ot.cancelled[i], ot_cancelled_fire, NULL);
        cr_assert_eq(mcq_timer_start(sh, &ot.cancelled[i], 1000 * NS_PER_MS, 0), 0);
    }
    for (int i = 0; i < NTIMERS; i++) {
        uint64_t delay = (uint64_t)(rand() % MAX_DELAY_MS) * NS_PER_MS;
        mcq_timer_init(&ot.t[i], ot_fire, NULL);
        ot.wanted_at[i] = mono_ns() + delay;
        cr_assert_eq(mcq_timer_start(sh, &ot.t[i], delay, 0), 0);
    }
    for (int i = 0; i < NTIMERS; i++)
        mcq_timer_stop(sh, &ot.cancelled[i]);
}

Test(timer, one_shot_timers_fire_in_deadline_order_and_never_early, .timeout = 60)
{
    memset(&ot, 0, sizeof(ot));
    test_event_init(&ot.done);
    struct mcq_runtime *rt = new_runtime(2);
    cr_assert_eq(mcq_runtime_post(rt, 1, ot_start, NULL), 0);
    cr_assert(test_event_wait(&ot.done, 1, 50), "timers did not all fire");
    mcq_runtime_destroy(rt);
    cr_assert_eq(ot.cancelled_fired, 0, "a stopped timer fired");
    for (int k = 0; k < NTIMERS; k++) {
        int i = ot.order[k];
        cr_assert_geq(ot.fired_at[i], ot.wanted_at[i], "timer %d fired early", i);
        if (k > 0)
            cr_assert_geq(ot.t[i].deadline_ns, ot.t[ot.order[k - 1]].deadline_ns,
                          "fired out of deadline order");
    }
}

/* --- periodic timer stops itself; restart replaces the deadline --------------------- */

#define PERIOD_MS 2
#define PERIODIC_FIRES 25

static struct {
    struct mcq_timer periodic, restarted;
    uint64_t started_at;
    uint64_t fires_at[PERIODIC_FIRES];
    int fires;
    int restarted_fires;
    uint64_t restarted_wanted;
    uint64_t restarted_at;
    struct test_event done;
} pt;

static void pt_tick(struct mcq_shard *sh, struct mcq_timer *t)
{
    pt.fires_at[pt.fires++] = mono_ns();
    if (pt.fires == PERIODIC_FIRES) {
        mcq_timer_stop(sh, t);
        test_event_signal(&pt.done);
    }
}

static void pt_restarted(struct mcq_shard *sh, struct mcq_timer *t)
{
    (void)sh;
    (void)t;
    pt.restarted_fires++;
    pt.restarted_at = mono_ns();
    test_event_signal(&pt.done);
}

static void pt_start(struct mcq_shard *sh, void *arg)
{
    (void)arg;
    pt.started_at = mono_ns();
    mcq_timer_init(&pt.periodic, pt_tick, NULL);
    cr_assert_eq(mcq_timer_start(sh, &pt.periodic, PERIOD_MS * NS_PER_MS, PERIOD_MS * NS_PER_MS),
                 0);
    mcq_timer_init(&pt.restarted, pt_restarted, NULL);
    cr_assert_eq(mcq_timer_start(sh, &pt.restarted, 1 * NS_PER_MS, 0), 0);
    pt.restarted_wanted = mono_ns() + 30 * NS_PER_MS;
    cr_assert_eq(mcq_timer_start(sh, &pt.restarted, 30 * NS_PER_MS, 0), 0);
}

Test(timer, periodic_fires_repeatedly_and_restart_moves_the_deadline, .timeout = 60)
{
    memset(&pt, 0, sizeof(pt));
    test_event_init(&pt.done);
    struct mcq_runtime *rt = new_runtime(1);
    cr_assert_eq(mcq_runtime_post(rt, 0, pt_start, NULL), 0);
    cr_assert(test_event_wait(&pt.done, 2, 50));
    mcq_runtime_destroy(rt);
    cr_assert_eq(pt.fires, PERIODIC_FIRES, "periodic timer kept firing after stop");
    for (int k = 0; k < PERIODIC_FIRES; k++)
        cr_assert_geq(pt.fires_at[k], pt.started_at + (uint64_t)(k + 1) * PERIOD_MS * NS_PER_MS,
                      "periodic fire %d early", k);
    cr_assert_eq(pt.restarted_fires, 1);
    cr_assert_geq(pt.restarted_at, pt.restarted_wanted, "restarted timer used its old deadline");
}
