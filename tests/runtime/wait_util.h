/* Test helpers: CLOCK_MONOTONIC deadlines for condition waits, and a one-shot event a shard
 * can signal and the test thread can await with a deadline, so tests never sleep to
 * synchronise and never hang. */
#ifndef MCQ_TESTS_WAIT_UTIL_H
#define MCQ_TESTS_WAIT_UTIL_H

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <time.h>

struct test_event {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int count;
};

/* Initialises `c` to time its waits on CLOCK_MONOTONIC, so deadline_in() deadlines apply. */
static inline void cond_init_monotonic(pthread_cond_t *c)
{
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(c, &a);
    pthread_condattr_destroy(&a);
}

/* The CLOCK_MONOTONIC time `timeout_s` seconds from now, for pthread_cond_timedwait. */
static inline struct timespec deadline_in(double timeout_s)
{
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += (time_t)timeout_s;
    until.tv_nsec += (long)((timeout_s - (double)(time_t)timeout_s) * 1e9);
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    return until;
}

static inline void test_event_init(struct test_event *e)
{
    pthread_mutex_init(&e->lock, NULL);
    cond_init_monotonic(&e->cond);
    e->count = 0;
}

static inline void test_event_signal(struct test_event *e)
{
    pthread_mutex_lock(&e->lock);
    e->count++;
    pthread_cond_broadcast(&e->cond);
    pthread_mutex_unlock(&e->lock);
}

/* Waits until the event was signalled `n` times in all; false on timeout. */
static inline bool test_event_wait(struct test_event *e, int n, double timeout_s)
{
    struct timespec until = deadline_in(timeout_s);
    pthread_mutex_lock(&e->lock);
    int rc = 0;
    while (e->count < n && rc != ETIMEDOUT)
        rc = pthread_cond_timedwait(&e->cond, &e->lock, &until);
    bool ok = e->count >= n;
    pthread_mutex_unlock(&e->lock);
    return ok;
}

#endif
