/* Cost of waking a thread that sleeps in io_uring_wait: two pinned threads, each with its
 * own ring created on itself, pass a token back and forth; one-way latency = RTT/2.
 *  - msg_ring: the sender posts a CQE into the peer's ring with IORING_OP_MSG_RING.
 *  - eventfd: the sender write()s the peer's eventfd, on which the peer has a read armed.
 * Each side does one io_uring_enter per turn where the mechanism allows it (submit the
 * send or the re-arm, then wait). */
#include "affinity.h"
#include "bench.h"
#include "hist.h"

#include <errno.h>
#include <liburing.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#define WAKE_RING_ENTRIES 8
#define WAKE_WARMUP 200 /* round trips not recorded */
#define WAKE_ROUNDS 5000
#define WAKE_ROUNDS_QUICK 1000
#define WAKE_TIMEOUT_S 2          /* a lost token fails the bench instead of hanging it */
#define TOKEN_STOP UINT64_MAX     /* msg_ring token that ends the peer's loop */
#define TAG_SEND (UINT64_MAX - 1) /* user_data of our own MSG_RING SQE (CQE only on error) */
#define TAG_READ (UINT64_MAX - 2) /* user_data of the armed eventfd read */

enum wake_kind { WAKE_MSG_RING, WAKE_EVENTFD };

struct wake_side {
    struct io_uring ring;
    bool ring_ok;
    bool deferred; /* SINGLE_ISSUER|DEFER_TASKRUN accepted */
    int efd;
    uint64_t efd_value; /* target of the armed read */
    int cpu;
    int setup_err; /* read by the peer once both have started */
    int err;       /* what ended this side's loop */
};

struct wake_pair {
    enum wake_kind kind;
    struct wake_side a, b;
    atomic_uint arrived;
    atomic_bool abort;
    atomic_bool stop; /* eventfd variant: the next wake-up ends B's loop */
    unsigned rounds;
    struct hist *hist;
};

static int ring_init_here(struct wake_side *s)
{
    struct io_uring_params p = {.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN};
    int rc = io_uring_queue_init_params(WAKE_RING_ENTRIES, &s->ring, &p);
    s->deferred = rc == 0;
    if (rc == -EINVAL)
        rc = io_uring_queue_init(WAKE_RING_ENTRIES, &s->ring, 0);
    s->ring_ok = rc == 0;
    return rc;
}

static void arm_read(struct wake_side *s)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&s->ring);
    io_uring_prep_read(sqe, s->efd, &s->efd_value, sizeof(s->efd_value), 0);
    io_uring_sqe_set_data64(sqe, TAG_READ);
}

static void prep_token(struct wake_side *s, const struct wake_side *peer, uint64_t token)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&s->ring);
    /* CQE_SKIP_SUCCESS drops our own CQE; IORING_MSG_RING_CQE_SKIP would instead drop the
     * peer's, which is the one that wakes it. */
    io_uring_prep_msg_ring(sqe, peer->ring.ring_fd, 0, token, 0);
    sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
    io_uring_sqe_set_data64(sqe, TAG_SEND);
}

/* Submits what is prepared and sleeps until one CQE arrives; returns its user_data through
 * *token, or a negative errno (a failed send or read, or the timeout). */
static int submit_and_wait_token(struct wake_side *s, uint64_t *token)
{
    struct __kernel_timespec ts = {.tv_sec = WAKE_TIMEOUT_S};
    struct io_uring_cqe *cqe;
    int rc = io_uring_submit_and_wait_timeout(&s->ring, &cqe, 1, &ts, NULL);
    if (rc < 0)
        return rc;
    *token = io_uring_cqe_get_data64(cqe);
    int res = cqe->res;
    io_uring_cqe_seen(&s->ring, cqe);
    if (*token == TAG_SEND || res < 0)
        return res < 0 ? res : -EPROTO;
    return 0;
}

static int wake_peer_eventfd(const struct wake_side *peer)
{
    uint64_t one = 1;
    return write(peer->efd, &one, sizeof(one)) == sizeof(one) ? 0 : -errno;
}

/* Pins, creates the ring (and eventfd) on this thread, then waits for the peer. */
static bool side_start(struct wake_pair *p, struct wake_side *s, unsigned nth)
{
    s->cpu = bench_pin_thread(nth);
    s->setup_err = ring_init_here(s);
    if (s->setup_err == 0 && p->kind == WAKE_EVENTFD) {
        s->efd = eventfd(0, EFD_CLOEXEC);
        if (s->efd < 0) {
            s->setup_err = -errno;
        } else {
            arm_read(s);
            int rc = io_uring_submit(&s->ring);
            s->setup_err = rc < 0 ? rc : 0;
        }
    }
    atomic_fetch_add(&p->arrived, 1);
    while (atomic_load(&p->arrived) < 2) {
        if (atomic_load(&p->abort))
            return false;
        sched_yield();
    }
    return p->a.setup_err == 0 && p->b.setup_err == 0;
}

/* Runs after both threads have finished, so neither can signal a closed ring or fd. */
static void side_stop(struct wake_side *s)
{
    if (s->ring_ok)
        io_uring_queue_exit(&s->ring);
    if (s->efd >= 0)
        close(s->efd);
}

static void *wake_a(void *arg)
{
    struct wake_pair *p = arg;
    struct wake_side *s = &p->a;
    if (!side_start(p, s, 0))
        return NULL;
    for (unsigned i = 0; i < WAKE_WARMUP + p->rounds; i++) {
        uint64_t t0 = bench_now_ns(), token;
        if (p->kind == WAKE_MSG_RING) {
            prep_token(s, &p->b, i);
        } else if ((s->err = wake_peer_eventfd(&p->b)) < 0) {
            break;
        }
        if ((s->err = submit_and_wait_token(s, &token)) < 0)
            break;
        uint64_t t1 = bench_now_ns();
        if (p->kind == WAKE_MSG_RING ? token != i : token != TAG_READ) {
            s->err = -EPROTO;
            break;
        }
        if (p->kind == WAKE_EVENTFD)
            arm_read(s);
        if (i >= WAKE_WARMUP)
            hist_record(p->hist, (t1 - t0) / 2);
    }
    /* Ends B's loop; if that fails, B times out on its own. */
    if (p->kind == WAKE_MSG_RING) {
        prep_token(s, &p->b, TOKEN_STOP);
        io_uring_submit(&s->ring);
    } else {
        atomic_store(&p->stop, true);
        wake_peer_eventfd(&p->b);
    }
    return NULL;
}

static void *wake_b(void *arg)
{
    struct wake_pair *p = arg;
    struct wake_side *s = &p->b;
    if (!side_start(p, s, 1))
        return NULL;
    for (;;) {
        uint64_t token;
        if ((s->err = submit_and_wait_token(s, &token)) < 0)
            break;
        if (p->kind == WAKE_MSG_RING) {
            if (token == TOKEN_STOP)
                break;
            prep_token(s, &p->a, token);
        } else {
            if (atomic_load(&p->stop))
                break;
            arm_read(s);
            if ((s->err = wake_peer_eventfd(&p->a)) < 0)
                break;
        }
    }
    return NULL;
}

static int run_wakeup(struct bench_ctx *ctx, enum wake_kind kind, const char *impl)
{
    struct wake_pair p = {.kind = kind,
                          .rounds = ctx->quick ? WAKE_ROUNDS_QUICK : WAKE_ROUNDS,
                          .a.efd = -1,
                          .b.efd = -1};
    p.hist = hist_new();
    if (!p.hist)
        return -ENOMEM;
    pthread_t ta, tb;
    int rc = pthread_create(&tb, NULL, wake_b, &p);
    if (rc == 0) {
        rc = pthread_create(&ta, NULL, wake_a, &p);
        if (rc == 0)
            pthread_join(ta, NULL);
        else
            atomic_store(&p.abort, true);
        pthread_join(tb, NULL);
        rc = -rc;
    }
    side_stop(&p.a);
    side_stop(&p.b);
    if (rc == 0)
        rc = p.a.setup_err ? p.a.setup_err : p.b.setup_err;
    if (rc == 0)
        rc = p.a.err ? p.a.err : p.b.err;
    if (rc == -ENOSYS || rc == -EPERM) {
        fprintf(stderr, "wakeup bench: io_uring unavailable here (%s), skipped\n", strerror(-rc));
        rc = 0;
    } else if (rc == 0) {
        if (p.a.cpu == p.b.cpu)
            fprintf(stderr, "wakeup bench: only one CPU allowed, both threads on cpu %d\n",
                    p.a.cpu);
        struct bench_rec *r = bench_rec_begin("wakeup", impl);
        bench_rec_num(r, "p50_us", (double)hist_percentile(p.hist, 50) / 1e3);
        bench_rec_num(r, "p99_us", (double)hist_percentile(p.hist, 99) / 1e3);
        bench_rec_num(r, "p999_us", (double)hist_percentile(p.hist, 99.9) / 1e3);
        bench_rec_int(r, "defer_taskrun", p.a.deferred && p.b.deferred);
        bench_rec_int(r, "cpus", p.a.cpu == p.b.cpu ? 1 : 2);
        bench_rec_end(r);
    }
    hist_free(p.hist);
    return rc;
}

static int bench_wakeup(struct bench_ctx *ctx)
{
    int rc = run_wakeup(ctx, WAKE_MSG_RING, "msg_ring");
    return rc < 0 ? rc : run_wakeup(ctx, WAKE_EVENTFD, "eventfd");
}

MCQ_BENCH("runtime", "wakeup", bench_wakeup)
