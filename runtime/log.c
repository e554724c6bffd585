#include "runtime/log.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define LOG_LINE_MAX 256 /* bytes per line, newline included; longer lines are cut */
#define LOG_RING_SLOTS 256
#define LOG_IDLE_WAIT_MS 100 /* bounds the delay of a line if a wakeup races */

struct mcq_log_ring {
    _Alignas(128) _Atomic uint32_t head; /* written by the shard */
    _Alignas(128) _Atomic uint32_t tail; /* written by the logger thread */
    _Alignas(128) struct mcq_log_ring *next;
    uint16_t len[LOG_RING_SLOTS];
    char line[LOG_RING_SLOTS][LOG_LINE_MAX];
};

static _Atomic int log_level_cached = -1;
static _Atomic uint64_t log_dropped;
static _Thread_local struct mcq_log_ring *thread_ring;
static _Thread_local char thread_name[16];

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t log_cond = PTHREAD_COND_INITIALIZER;
static struct mcq_log_ring *log_rings;
static unsigned log_users;
static int log_quit;
static pthread_t log_thread;
static _Atomic int log_thread_idle;

enum mcq_log_level mcq_log_level(void)
{
    int lvl = atomic_load_explicit(&log_level_cached, memory_order_relaxed);
    if (lvl >= 0)
        return (enum mcq_log_level)lvl;
    const char *env = getenv("MCQ_LOG");
    lvl = MCQ_LOG_WARN;
    if (env) {
        if (!strcmp(env, "error"))
            lvl = MCQ_LOG_ERROR;
        else if (!strcmp(env, "info"))
            lvl = MCQ_LOG_INFO;
        else if (!strcmp(env, "debug"))
            lvl = MCQ_LOG_DEBUG;
    }
    atomic_store_explicit(&log_level_cached, lvl, memory_order_relaxed);
    return (enum mcq_log_level)lvl;
}

static size_t format_line(char *buf, enum mcq_log_level level, const char *fmt, va_list ap)
{
    static const char *const names[] = {"ERROR", "WARN", "INFO", "DEBUG"};
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    int n = snprintf(buf, LOG_LINE_MAX, "%5ld.%06ld %s %s: ", (long)ts.tv_sec, ts.tv_nsec / 1000,
                     thread_name[0] ? thread_name : "main", names[level]);
    if (n < 0)
        n = 0;
    if (n < LOG_LINE_MAX - 1) {
        int m = vsnprintf(buf + n, LOG_LINE_MAX - (size_t)n, fmt, ap);
        if (m > 0)
            n += m;
    }
    if (n > LOG_LINE_MAX - 1)
        n = LOG_LINE_MAX - 1;
    buf[n++] = '\n';
    return (size_t)n;
}

static void write_all(const char *p, size_t len)
{
    while (len > 0) {
        ssize_t w = write(STDERR_FILENO, p, len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return;
        p += w;
        len -= (size_t)w;
    }
}

void mcq_log_emit(enum mcq_log_level level, const char *fmt, ...)
{
    struct mcq_log_ring *r = thread_ring;
    va_list ap;
    va_start(ap, fmt);
    if (!r) {
        char buf[LOG_LINE_MAX];
        size_t n = format_line(buf, level, fmt, ap);
        va_end(ap);
        write_all(buf, n);
        return;
    }
    uint32_t head = atomic_load_explicit(&r->head, memory_order_relaxed);
    uint32_t tail = atomic_load_explicit(&r->tail, memory_order_acquire);
    if (head - tail >= LOG_RING_SLOTS) {
        va_end(ap);
        atomic_fetch_add_explicit(&log_dropped, 1, memory_order_relaxed);
        return;
    }
    uint32_t slot = head % LOG_RING_SLOTS;
    r->len[slot] = (uint16_t)format_line(r->line[slot], level, fmt, ap);
    va_end(ap);
    atomic_store_explicit(&r->head, head + 1, memory_order_seq_cst);
    /* Dekker pair with the logger: it sets idle, then re-reads heads. */
    if (atomic_load_explicit(&log_thread_idle, memory_order_seq_cst)) {
        pthread_mutex_lock(&log_lock);
        pthread_cond_signal(&log_cond);
        pthread_mutex_unlock(&log_lock);
    }
}

/* Caller holds log_lock. Returns the number of lines written. */
static unsigned drain_rings_locked(void)
{
    unsigned lines = 0;
    for (struct mcq_log_ring *r = log_rings; r; r = r->next) {
        uint32_t tail = atomic_load_explicit(&r->tail, memory_order_relaxed);
        uint32_t head = atomic_load_explicit(&r->head, memory_order_acquire);
        for (; tail != head; tail++, lines++) {
            uint32_t slot = tail % LOG_RING_SLOTS;
            write_all(r->line[slot], r->len[slot]);
        }
        atomic_store_explicit(&r->tail, tail, memory_order_release);
    }
    return lines;
}

static void *logger_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&log_lock);
    while (!log_quit) {
        if (drain_rings_locked())
            continue;
        atomic_store_explicit(&log_thread_idle, 1, memory_order_seq_cst);
        if (!drain_rings_locked()) {
            struct timespec until;
            clock_gettime(CLOCK_REALTIME, &until);
            until.tv_nsec += LOG_IDLE_WAIT_MS * 1000000L;
            if (until.tv_nsec >= 1000000000L) {
                until.tv_sec++;
                until.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&log_cond, &log_lock, &until);
        }
        atomic_store_explicit(&log_thread_idle, 0, memory_order_relaxed);
    }
    drain_rings_locked();
    pthread_mutex_unlock(&log_lock);
    return NULL;
}

int mcq_log_start(void)
{
    int rc = 0;
    pthread_mutex_lock(&log_lock);
    if (log_users == 0) {
        /* The logger thread must never take a process signal meant for mcq_runtime_run(). */
        sigset_t all, old;
        sigfillset(&all);
        pthread_sigmask(SIG_BLOCK, &all, &old);
        log_quit = 0;
        rc = -pthread_create(&log_thread, NULL, logger_main, NULL);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
    }
    if (rc == 0)
        log_users++;
    pthread_mutex_unlock(&log_lock);
    return rc;
}

void mcq_log_stop(void)
{
    pthread_mutex_lock(&log_lock);
    if (log_users == 0 || --log_users > 0) {
        pthread_mutex_unlock(&log_lock);
        return;
    }
    log_quit = 1;
    pthread_cond_signal(&log_cond);
    pthread_mutex_unlock(&log_lock);
    pthread_join(log_thread, NULL);
}

int mcq_log_attach_thread(unsigned shard_id)
{
    struct mcq_log_ring *r = calloc(1, sizeof(*r));
    if (!r)
        return -ENOMEM;
    snprintf(thread_name, sizeof(thread_name), "shard%u", shard_id);
    pthread_mutex_lock(&log_lock);
    r->next = log_rings;
    log_rings = r;
    pthread_mutex_unlock(&log_lock);
    thread_ring = r;
    return 0;
}

void mcq_log_detach_thread(void)
{
    struct mcq_log_ring *r = thread_ring;
    if (!r)
        return;
    thread_ring = NULL;
    pthread_mutex_lock(&log_lock);
    drain_rings_locked();
    for (struct mcq_log_ring **p = &log_rings; *p; p = &(*p)->next) {
        if (*p == r) {
            *p = r->next;
            break;
        }
    }
    pthread_mutex_unlock(&log_lock);
    free(r);
}

uint64_t mcq_log_dropped(void)
{
    return atomic_load_explicit(&log_dropped, memory_order_relaxed);
}
