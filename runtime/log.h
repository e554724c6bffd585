/* Logger that never blocks a shard: a shard formats a line into its own lossy SPSC
 * slot ring, and one logger thread writes the rings to stderr. Threads that are not
 * shards write to stderr directly. Level comes from the MCQ_LOG environment variable
 * (error, warn, info, debug; default warn). */
#ifndef MCQ_RUNTIME_LOG_H
#define MCQ_RUNTIME_LOG_H

#include <stdint.h>

enum mcq_log_level {
    MCQ_LOG_ERROR = 0,
    MCQ_LOG_WARN = 1,
    MCQ_LOG_INFO = 2,
    MCQ_LOG_DEBUG = 3,
};

/* The level in force; read once from MCQ_LOG on first use. */
enum mcq_log_level mcq_log_level(void);

/* Formats one line "<mono seconds> <who> <LEVEL> <message>" and emits it. Never blocks a
 * shard thread: when its ring is full the line is dropped and counted. */
void mcq_log_emit(enum mcq_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#define mcq_log(level, ...)                                                                        \
    do {                                                                                           \
        if ((level) <= mcq_log_level())                                                            \
            mcq_log_emit((level), __VA_ARGS__);                                                    \
    } while (0)
#define mcq_log_error(...) mcq_log(MCQ_LOG_ERROR, __VA_ARGS__)
#define mcq_log_warn(...) mcq_log(MCQ_LOG_WARN, __VA_ARGS__)
#define mcq_log_info(...) mcq_log(MCQ_LOG_INFO, __VA_ARGS__)
#define mcq_log_debug(...) mcq_log(MCQ_LOG_DEBUG, __VA_ARGS__)

/* The per-thread log ring of a shard. Created by the runtime for each shard thread. */
struct mcq_log_ring;

/* Starts the logger thread (idempotent, reference counted); returns 0 or -errno. */
int mcq_log_start(void);
/* Drops one reference; the last one drains every ring and joins the logger thread. */
void mcq_log_stop(void);
/* Gives the calling thread a ring and a name ("shard 3"); returns 0 or -errno. Call
 * mcq_log_detach_thread() on the same thread before it exits. */
int mcq_log_attach_thread(unsigned shard_id);
void mcq_log_detach_thread(void);
/* Lines dropped because a shard's ring was full, over the process lifetime. */
uint64_t mcq_log_dropped(void);

#endif
