#include <criterion/criterion.h>

#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "runtime/loop.h"
#include "runtime/runtime.h"
#include "wait_util.h"

Test(shard, bad_config_is_einval)
{
    struct mcq_runtime *rt = NULL;
    struct mcq_config cfg = mcq_config_default();
    cfg.mesh_capacity = 1000; /* not a power of two */
    cr_assert_eq(mcq_runtime_create(&cfg, &rt), -EINVAL);
    cfg = mcq_config_default();
    cfg.shards = MCQ_MAX_SHARDS + 1;
    cr_assert_eq(mcq_runtime_create(&cfg, &rt), -EINVAL);
    cr_assert_eq(mcq_runtime_create(&cfg, NULL), -EINVAL);
}

static struct {
    _Atomic unsigned ran_on[16];
    _Atomic int cpu;
    struct test_event ev;
} st;

static void report_cpu(struct mcq_shard *sh, void *arg)
{
    (void)sh;
    (void)arg;
    atomic_store(&st.cpu, sched_getcpu());
    test_event_signal(&st.ev);
}

static void where_am_i(struct mcq_shard *sh, void *arg)
{
    cr_assert_eq(mcq_shard_current(), sh);
    cr_assert_eq(mcq_shard_id(sh), (unsigned)(uintptr_t)arg);
    atomic_fetch_add(&st.ran_on[mcq_shard_id(sh)], 1);
    test_event_signal(&st.ev);
}

Test(shard, more_shards_than_cores_each_runs_its_own_tasks, .timeout = 60)
{
    memset(&st, 0, sizeof(st));
    test_event_init(&st.ev);
    struct mcq_config cfg = mcq_config_default();
    cfg.shards = 16; /* this machine has 2 cores: shards share them */
    struct mcq_runtime *rt = NULL;
    cr_assert_eq(mcq_runtime_create(&cfg, &rt), 0);
    cr_assert_eq(mcq_runtime_shard_count(rt), 16);
    cr_assert_null(mcq_shard_current());
    for (unsigned i = 0; i < 16; i++)
        cr_assert_eq(mcq_runtime_post(rt, i, where_am_i, (void *)(uintptr_t)i), 0);
    cr_assert(test_event_wait(&st.ev, 16, 50));
    cr_assert_eq(mcq_runtime_post(rt, 16, where_am_i, NULL), -EINVAL);
    mcq_runtime_destroy(rt);
    for (unsigned i = 0; i < 16; i++)
        cr_assert_eq(atomic_load(&st.ran_on[i]), 1);
}

Test(shard, default_config_makes_one_shard_per_allowed_core)
{
    unsetenv("MCQ_SHARDS");
    struct mcq_runtime *rt = NULL;
    cr_assert_eq(mcq_runtime_create(NULL, &rt), 0);
    cpu_set_t set;
    CPU_ZERO(&set);
    sched_getaffinity(0, sizeof(set), &set);
    cr_assert_eq(mcq_runtime_shard_count(rt), (unsigned)CPU_COUNT(&set));
    mcq_runtime_destroy(rt);
}

static void stop_from_shard(struct mcq_shard *sh, void *arg)
{
    (void)arg;
    mcq_runtime_stop(mcq_shard_runtime(sh));
}

Test(shard, run_returns_after_stop_from_a_shard_callback, .timeout = 60)
{
    struct mcq_runtime *rt = NULL;
    cr_assert_eq(mcq_runtime_create(NULL, &rt), 0);
    cr_assert_eq(mcq_runtime_post(rt, 0, stop_from_shard, NULL), 0);
    cr_assert_eq(mcq_runtime_run(rt), 0);
    struct mcq_shard_stats s;
    cr_assert_eq(mcq_runtime_stats(rt, 0, &s), 0);
    cr_assert_gt(s.turns, 0);
    mcq_runtime_destroy(rt);
}

/* --- the two stages of a stop ------------------------------------------------------------ */

#define STAGE_WAIT_S 10.0 /* bound for each step of the stop */

static struct {
    struct mcq_runtime *rt;
    struct mcq_stop_hook drain, stop;
    _Atomic unsigned seq, drained_at, released_at, stopped_at;
    struct test_event draining, installed;
} stage;

static void stage_drain(struct mcq_shard *sh, struct mcq_stop_hook *h)
{
    (void)h;
    mcq_shard_stop_hold(sh);
    atomic_store(&stage.drained_at, atomic_fetch_add(&stage.seq, 1) + 1);
    test_event_signal(&stage.draining);
}

static void stage_release(struct mcq_shard *sh, void *arg)
{
    (void)arg;
    atomic_store(&stage.released_at, atomic_fetch_add(&stage.seq, 1) + 1);
    mcq_shard_stop_release(sh);
}

static void stage_stop(struct mcq_shard *sh, struct mcq_stop_hook *h)
{
    (void)sh;
    (void)h;
    atomic_store(&stage.stopped_at, atomic_fetch_add(&stage.seq, 1) + 1);
}

static void stage_install(struct mcq_shard *sh, void *arg)
{
    (void)arg;
    stage.drain.run = stage_drain;
    stage.stop.run = stage_stop;
    mcq_shard_add_drain_hook(sh, &stage.drain);
    mcq_shard_add_stop_hook(sh, &stage.stop);
    test_event_signal(&stage.installed);
}

/* Stands for a graceful close that other threads finish: a task posted once the shard is
 * draining ends the hold. */
static void *stage_releaser(void *arg)
{
    (void)arg;
    if (test_event_wait(&stage.draining, 1, STAGE_WAIT_S))
        mcq_runtime_post(stage.rt, 0, stage_release, NULL);
    return NULL;
}

/* Starts a 2-shard runtime with the stage hooks installed, asks it to stop, and runs it
 * with `during` running beside (it ends the drain stage one way or another); returns once
 * the runtime is destroyed. */
static void stage_run(void *(*during)(void *))
{
    memset(&stage, 0, sizeof(stage));
    test_event_init(&stage.draining);
    test_event_init(&stage.installed);
    struct mcq_config cfg = mcq_config_default();
    cfg.shards = 2;
    cfg.pin = false;
    cr_assert_eq(mcq_runtime_create(&cfg, &stage.rt), 0);
    cr_assert_eq(mcq_runtime_post(stage.rt, 0, stage_install, NULL), 0);
    cr_assert(test_event_wait(&stage.installed, 1, STAGE_WAIT_S));
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, during, NULL), 0);
    mcq_runtime_stop(stage.rt);
    cr_assert_eq(mcq_runtime_run(stage.rt), 0);
    pthread_join(t, NULL);
    mcq_runtime_destroy(stage.rt);
}

/* A stop runs the drain hooks, keeps the shard looping (posts still run) while a hold is
 * taken, and runs the stop hooks only once it is released; run returns after that. */
Test(shard, stop_hold_keeps_the_drain_stage, .timeout = 60)
{
    stage_run(stage_releaser);
    cr_assert_eq(atomic_load(&stage.drained_at), 1, "the drain hook did not run first");
    cr_assert_eq(atomic_load(&stage.released_at), 2, "the post during the drain never ran");
    cr_assert_eq(atomic_load(&stage.stopped_at), 3, "the stop hook did not wait for the hold");
}

/* A stop waiting on a hold that never ends (a socket lingering on a peer that never reads)
 * ends when a signal comes, as a user's second Ctrl-C: the stop hooks run without the
 * release and run returns. */
static void *stage_forcer(void *arg)
{
    (void)arg;
    if (test_event_wait(&stage.draining, 1, STAGE_WAIT_S))
        kill(getpid(), SIGTERM);
    return NULL;
}

Test(shard, signal_during_the_drain_stage_forces_the_stop, .timeout = 60)
{
    sigset_t term;
    sigemptyset(&term);
    sigaddset(&term, SIGTERM);
    /* Only run()'s signalfd may take it; the forcer thread inherits the mask. */
    pthread_sigmask(SIG_BLOCK, &term, NULL);
    stage_run(stage_forcer);
    cr_assert_eq(atomic_load(&stage.drained_at), 1, "the drain hook did not run");
    cr_assert_eq(atomic_load(&stage.released_at), 0, "nothing released the hold");
    cr_assert_eq(atomic_load(&stage.stopped_at), 2, "the stop hooks did not run after the signal");
}

static void *send_sigterm(void *arg)
{
    struct test_event *started = arg;
    /* Wait until run() has the signal blocked and is polling: the task below signals. */
    test_event_wait(started, 1, 30);
    kill(getpid(), SIGTERM);
    return NULL;
}

static void signal_started(struct mcq_shard *sh, void *arg)
{
    (void)sh;
    test_event_signal(arg);
}

Test(shard, run_returns_zero_on_sigterm, .timeout = 60)
{
    struct mcq_runtime *rt = NULL;
    cr_assert_eq(mcq_runtime_create(NULL, &rt), 0);
    struct test_event started;
    test_event_init(&started);
    /* Block SIGTERM in this thread and the helper so only run()'s signalfd takes it. */
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &s, NULL);
    pthread_t t;
    pthread_create(&t, NULL, send_sigterm, &started);
    cr_assert_eq(mcq_runtime_post(rt, 0, signal_started, &started), 0);
    cr_assert_eq(mcq_runtime_run(rt), 0);
    pthread_join(t, NULL);
    mcq_runtime_destroy(rt);
}

Test(shard, a_narrowed_cpuset_gives_one_shard_pinned_inside_it, .timeout = 60)
{
    /* As `taskset -c 0`: the default shard count follows the allowed set, and the shard
     * thread runs inside it. Done in this forked test process, so nothing else is affected. */
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(0, &one);
    cr_assert_eq(sched_setaffinity(0, sizeof(one), &one), 0);
    unsetenv("MCQ_SHARDS");
    struct mcq_runtime *rt = NULL;
    cr_assert_eq(mcq_runtime_create(NULL, &rt), 0);
    cr_assert_eq(mcq_runtime_shard_count(rt), 1);
    memset(&st, 0, sizeof(st));
    test_event_init(&st.ev);
    cr_assert_eq(mcq_runtime_post(rt, 0, report_cpu, NULL), 0);
    cr_assert(test_event_wait(&st.ev, 1, 30));
    cr_assert_eq(atomic_load(&st.cpu), 0, "shard ran on CPU %d", atomic_load(&st.cpu));
    mcq_runtime_destroy(rt);
}

/* The SIGTERM arrives while the caller has it unblocked, as in a plain program: run() must
 * consume it, not leave it pending for the mask it restores (which would kill the process).
 * Done in a child process, which the signal may kill if this is broken. */
static pid_t main_tid;

static bool main_thread_blocks_sigterm(void)
{
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/self/task/%d/status", (int)main_tid);
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    unsigned long long blk = 0;
    while (fgets(line, sizeof(line), f))
        if (sscanf(line, "SigBlk: %llx", &blk) == 1)
            break;
    fclose(f);
    return blk & (1ull << (SIGTERM - 1));
}

static void term_once_run_waits(struct mcq_shard *sh, void *arg)
{
    if (!main_thread_blocks_sigterm()) {
        mcq_shard_submit_ctl(sh, mcq_shard_id(sh), term_once_run_waits, arg);
        return;
    }
    kill(getpid(), SIGTERM);
}

Test(shard, sigterm_to_a_program_that_never_blocked_it_returns_from_run, .timeout = 60)
{
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        sigset_t none;
        sigemptyset(&none);
        pthread_sigmask(SIG_SETMASK, &none, NULL);
        main_tid = (pid_t)syscall(SYS_gettid);
        struct mcq_runtime *rt = NULL;
        if (mcq_runtime_create(NULL, &rt) < 0)
            _exit(3);
        mcq_runtime_post(rt, 0, term_once_run_waits, NULL);
        int rc = mcq_runtime_run(rt);
        mcq_runtime_destroy(rt);
        _exit(rc == 0 ? 0 : 4);
    }
    int status = 0;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(WIFEXITED(status), "killed by signal %d", WTERMSIG(status));
    cr_assert_eq(WEXITSTATUS(status), 0);
}
