/* Listeners: bind and listen synchronously in the caller, then multishot accept on the
 * shards. TCP: one SO_REUSEPORT socket per shard, so the kernel spreads connections and
 * each shard accepts its own. IPC: one socket; its shard hands accepted fds round-robin. */
#include "runtime/conn_int.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "runtime/log.h"

#define LISTEN_BACKLOG 4096            /* pending connections per socket (capped by somaxconn) */
#define ACCEPT_BACKOFF_NS 100000000ull /* out of fds or memory: retry accept after 100 ms */

/* One listening socket and its accept operation, owned by one shard. */
struct listen_part {
    struct mcq_listener *l;
    struct conn_shard *m; /* set once armed on the shard */
    struct listen_part *prev, *next;
    struct mcq_op accept_op, cancel_op;
    struct mcq_timer backoff;
    unsigned shard;
    int fd;
    bool accept_inflight;
    bool cancel_inflight;
    bool backing_off;
    bool closing;
    bool done;
};

struct mcq_listener {
    struct mcq_runtime *rt;
    /* The caller's handle, each part until it finished, each posted task. */
    _Atomic unsigned refs;
    _Atomic bool closing;
    _Atomic unsigned parts_alive; /* parts whose socket is still open */
    struct mcq_conn_cfg cfg;
    enum mcq_transport transport;
    struct mcq_sockaddr addr; /* bound */
    bool unlink_path;
    unsigned next_shard; /* IPC round-robin; touched by the acceptor shard only */
    unsigned nparts;
    struct listen_part parts[];
};

struct handoff {
    struct mcq_listener *l;
    int fd;
};

static _Atomic unsigned ipc_acceptor_next; /* spreads IPC acceptors over the shards */

static void listener_ref(struct mcq_listener *l)
{
    atomic_fetch_add_explicit(&l->refs, 1, memory_order_relaxed);
}

static void listener_unref(struct mcq_listener *l)
{
    if (atomic_fetch_sub_explicit(&l->refs, 1, memory_order_acq_rel) == 1)
        free(l);
}

/* Runs fn on shard `to`: through the mesh from a shard of rt, else through a post. */
static int post_to_shard(struct mcq_runtime *rt, unsigned to, mcq_task_fn fn, void *arg)
{
    struct mcq_shard *cur = mcq_shard_current();
    if (cur && mcq_shard_runtime(cur) == rt)
        return mcq_shard_submit_ctl(cur, to, fn, arg);
    return mcq_runtime_post(rt, to, fn, arg);
}

/* --- on the shards --------------------------------------------------------------------- */

static void part_accept(struct listen_part *p);

/* Closes the socket and drops the part's reference: last use of p (it lives inside l). */
static void part_finish(struct listen_part *p)
{
    struct mcq_listener *l = p->l;
    struct conn_shard *m = p->m;
    p->done = true;
    atomic_fetch_sub_explicit(&l->parts_alive, 1, memory_order_release);
    if (close(p->fd) < 0)
        mcq_log_warn("close listener fd %d: %s", p->fd, strerror(errno));
    p->fd = -1;
    if (l->unlink_path && unlink(l->addr.un.sun_path) < 0 && errno != ENOENT)
        mcq_log_warn("unlink %s: %s", l->addr.un.sun_path, strerror(errno));
    if (m) {
        mcq_timer_stop(m->sh, &p->backoff);
        if (p->prev)
            p->prev->next = p->next;
        else
            m->parts = p->next;
        if (p->next)
            p->next->prev = p->prev;
    }
    listener_unref(l);
}

static bool part_cancel(struct listen_part *p)
{
    if (p->cancel_inflight)
        return true;
    struct io_uring_sqe *sqe = mcq_shard_sqe(p->m->sh, &p->cancel_op);
    if (!sqe)
        return false;
    io_uring_prep_cancel64(sqe, (uint64_t)(uintptr_t)&p->accept_op, 0);
    p->cancel_inflight = true;
    mcq_conn_shard_op_start(p->m);
    return true;
}

void mcq_listener_part_close(struct listen_part *p)
{
    if (p->done || p->closing)
        return;
    p->closing = true;
    if (p->m)
        mcq_timer_stop(p->m->sh, &p->backoff);
    if (p->accept_inflight && part_cancel(p))
        return;
    if (p->accept_inflight)
        shutdown(p->fd, SHUT_RDWR); /* no SQE for the cancel: wake the accept instead */
    else if (!p->cancel_inflight)
        part_finish(p);
}

void mcq_listener_shard_stop(struct conn_shard *m)
{
    for (struct listen_part *p = m->parts; p;) {
        /* Closing may free p's listener; the next part belongs to another listener. */
        struct listen_part *next = p->next;
        mcq_listener_part_close(p);
        p = next;
    }
}

static void handoff_task(struct mcq_shard *sh, void *arg)
{
    struct handoff *h = arg;
    struct conn_shard *m = mcq_conn_shard_get(sh);
    if (m)
        mcq_conn_adopt(m, h->fd, MCQ_TRANSPORT_IPC, &h->l->cfg);
    else
        close(h->fd);
    listener_unref(h->l);
    free(h);
    if (m)
        mcq_conn_shard_settle(m);
}

/* IPC has one acceptor: spread its connections over every shard. */
static void ipc_hand_off(struct listen_part *p, int fd)
{
    struct mcq_listener *l = p->l;
    unsigned n = mcq_runtime_shard_count(l->rt);
    unsigned to = l->next_shard++ % n;
    if (to == mcq_shard_id(p->m->sh)) {
        mcq_conn_adopt(p->m, fd, MCQ_TRANSPORT_IPC, &l->cfg);
        return;
    }
    struct handoff *h = malloc(sizeof(*h));
    if (!h) {
        close(fd);
        return;
    }
    h->l = l;
    h->fd = fd;
    listener_ref(l);
    if (mcq_shard_submit_ctl(p->m->sh, to, handoff_task, h) < 0) {
        close(fd);
        free(h);
        listener_unref(l);
    }
}

static void part_accept_done(struct mcq_shard *sh, struct mcq_op *op,
                             const struct io_uring_cqe *cqe)
{
    struct listen_part *p = container_of(op, struct listen_part, accept_op);
    struct conn_shard *m = p->m;
    bool final = !(cqe->flags & IORING_CQE_F_MORE);
    if (final) {
        p->accept_inflight = false;
        mcq_conn_shard_op_done(m);
    }
    if (cqe->res >= 0) {
        if (p->closing)
            close(cqe->res);
        else if (p->l->transport == MCQ_TRANSPORT_TCP)
            mcq_conn_adopt(m, cqe->res, MCQ_TRANSPORT_TCP, &p->l->cfg);
        else
            ipc_hand_off(p, cqe->res);
    } else if (!p->closing && !p->backing_off) {
        /* EMFILE, ENFILE, ENOMEM...: retrying at once would spin; wait, then re-arm. */
        mcq_log_warn("accept: %s; retrying in %llu ms", strerror(-cqe->res),
                     ACCEPT_BACKOFF_NS / 1000000ull);
        p->backing_off = true;
        if (!final)
            part_cancel(p);
    }
    if (final && !p->closing) {
        if (p->backing_off)
            mcq_timer_start(sh, &p->backoff, ACCEPT_BACKOFF_NS, 0);
        else
            part_accept(p);
    }
    if (p->closing && !p->accept_inflight && !p->cancel_inflight)
        part_finish(p);
    mcq_conn_shard_settle(m);
}

static void part_cancel_done(struct mcq_shard *sh, struct mcq_op *op,
                             const struct io_uring_cqe *cqe)
{
    (void)sh;
    (void)cqe;
    struct listen_part *p = container_of(op, struct listen_part, cancel_op);
    struct conn_shard *m = p->m;
    p->cancel_inflight = false;
    mcq_conn_shard_op_done(m);
    if (p->closing && !p->accept_inflight)
        part_finish(p);
    mcq_conn_shard_settle(m);
}

static void part_backoff_done(struct mcq_shard *sh, struct mcq_timer *t)
{
    (void)sh;
    struct listen_part *p = t->arg;
    p->backing_off = false;
    if (!p->closing && !p->accept_inflight)
        part_accept(p);
}

static void part_accept(struct listen_part *p)
{
    struct io_uring_sqe *sqe = mcq_shard_sqe(p->m->sh, &p->accept_op);
    if (!sqe) {
        p->backing_off = true;
        mcq_timer_start(p->m->sh, &p->backoff, ACCEPT_BACKOFF_NS, 0);
        return;
    }
    io_uring_prep_multishot_accept(sqe, p->fd, NULL, NULL, SOCK_CLOEXEC);
    p->accept_inflight = true;
    mcq_conn_shard_op_start(p->m);
}

static void part_arm_task(struct mcq_shard *sh, void *arg)
{
    struct listen_part *p = arg;
    struct mcq_listener *l = p->l;
    if (!p->done) {
        struct conn_shard *m = mcq_conn_shard_get(sh);
        if (!m || atomic_load_explicit(&l->closing, memory_order_acquire)) {
            part_finish(p);
        } else {
            p->m = m;
            p->accept_op.complete = part_accept_done;
            p->cancel_op.complete = part_cancel_done;
            mcq_timer_init(&p->backoff, part_backoff_done, p);
            p->next = m->parts;
            if (m->parts)
                m->parts->prev = p;
            m->parts = p;
            part_accept(p);
        }
    }
    listener_unref(l); /* the task's reference */
}

static void part_close_task(struct mcq_shard *sh, void *arg)
{
    (void)sh;
    struct listen_part *p = arg;
    struct mcq_listener *l = p->l;
    struct conn_shard *m = p->m;
    mcq_listener_part_close(p);
    listener_unref(l);
    if (m)
        mcq_conn_shard_settle(m);
}

/* --- in the caller ------------------------------------------------------------------------ */

static int sock_fail(int fd, const char *what, const struct mcq_sockaddr *addr)
{
    int err = -errno;
    char text[MCQ_ENDPOINT_TEXT_MAX];
    if (mcq_endpoint_format(addr, text, sizeof(text)) < 0)
        strcpy(text, "?");
    mcq_log_warn("listen on %s: %s: %s", text, what, strerror(-err));
    if (fd >= 0)
        close(fd);
    return err;
}

static int set_flag(int fd, int level, int name)
{
    int one = 1;
    return setsockopt(fd, level, name, &one, sizeof(one));
}

/* A socket of the SO_REUSEPORT group bound to addr and listening. Returns the fd or -errno. */
static int tcp_listen_one(const struct mcq_sockaddr *addr)
{
    int fd = socket(addr->sa.sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return sock_fail(-1, "socket", addr);
    if (set_flag(fd, SOL_SOCKET, SO_REUSEADDR) < 0 || set_flag(fd, SOL_SOCKET, SO_REUSEPORT) < 0)
        return sock_fail(fd, "setsockopt", addr);
    if (bind(fd, &addr->sa, addr->len) < 0)
        return sock_fail(fd, "bind", addr);
    if (listen(fd, LISTEN_BACKLOG) < 0)
        return sock_fail(fd, "listen", addr);
    return fd;
}

/* SO_REUSEPORT would let a second bind by the same user succeed, so a first bind without it
 * answers "is the port in use" (and picks the ephemeral port); then the group binds it. */
static int tcp_bind_all(struct mcq_listener *l, struct mcq_sockaddr *addr)
{
    int fd = socket(addr->sa.sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return sock_fail(-1, "socket", addr);
    if (set_flag(fd, SOL_SOCKET, SO_REUSEADDR) < 0)
        return sock_fail(fd, "setsockopt", addr);
    if (bind(fd, &addr->sa, addr->len) < 0)
        return sock_fail(fd, "bind", addr);
    socklen_t len = addr->len;
    if (getsockname(fd, &addr->sa, &len) < 0)
        return sock_fail(fd, "getsockname", addr);
    close(fd);
    for (unsigned i = 0; i < l->nparts; i++) {
        fd = tcp_listen_one(addr);
        if (fd < 0)
            return fd;
        l->parts[i].fd = fd;
    }
    return 0;
}

/* A socket file nobody listens on (left by a crashed process) refuses connections. */
static bool ipc_path_is_stale(const struct mcq_sockaddr *addr)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return false;
    bool stale = connect(fd, &addr->sa, addr->len) < 0 && errno == ECONNREFUSED;
    close(fd);
    return stale;
}

static int ipc_bind(struct mcq_listener *l, const struct mcq_endpoint *ep,
                    const struct mcq_sockaddr *addr)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return sock_fail(-1, "socket", addr);
    int rc = bind(fd, &addr->sa, addr->len);
    if (rc < 0 && errno == EADDRINUSE && !ep->abstract && ipc_path_is_stale(addr)) {
        mcq_log_info("ipc://%s: removing a stale socket file", ep->path);
        unlink(ep->path);
        rc = bind(fd, &addr->sa, addr->len);
    }
    if (rc < 0)
        return sock_fail(fd, "bind", addr);
    l->unlink_path = !ep->abstract;
    if (listen(fd, LISTEN_BACKLOG) < 0) {
        rc = sock_fail(-1, "listen", addr);
        close(fd);
        if (l->unlink_path)
            unlink(ep->path);
        return rc;
    }
    l->parts[0].fd = fd;
    return 0;
}

int mcq_conn_listen(struct mcq_runtime *rt, const char *endpoint, const struct mcq_conn_cfg *cfg,
                    struct mcq_listener **out)
{
    if (!rt || !cfg || !out)
        return -EINVAL;
    struct mcq_endpoint ep;
    int rc = mcq_endpoint_parse(endpoint, &ep);
    if (rc < 0)
        return rc;
    struct mcq_sockaddr addr;
    rc = mcq_endpoint_resolve(&ep, true, &addr);
    if (rc < 0)
        return rc;
    unsigned shards = mcq_runtime_shard_count(rt);
    unsigned n = ep.transport == MCQ_TRANSPORT_TCP ? shards : 1;
    struct mcq_listener *l = calloc(1, sizeof(*l) + n * sizeof(l->parts[0]));
    if (!l)
        return -ENOMEM;
    l->rt = rt;
    l->cfg = *cfg;
    l->transport = ep.transport;
    l->nparts = n;
    for (unsigned i = 0; i < n; i++) {
        l->parts[i].l = l;
        l->parts[i].fd = -1;
        l->parts[i].shard = ep.transport == MCQ_TRANSPORT_TCP
                                ? i
                                : atomic_fetch_add(&ipc_acceptor_next, 1) % shards;
    }
    rc = ep.transport == MCQ_TRANSPORT_TCP ? tcp_bind_all(l, &addr) : ipc_bind(l, &ep, &addr);
    if (rc < 0) {
        for (unsigned i = 0; i < n; i++)
            if (l->parts[i].fd >= 0)
                close(l->parts[i].fd);
        free(l);
        return rc;
    }
    l->addr = addr;
    /* The caller's handle, plus per part its own life and its arm task. */
    atomic_store(&l->refs, 1 + 2 * n);
    atomic_store(&l->parts_alive, n);
    for (unsigned i = 0; i < n; i++) {
        struct listen_part *p = &l->parts[i];
        if (post_to_shard(rt, p->shard, part_arm_task, p) < 0) {
            mcq_log_warn("%s: cannot reach shard %u; it will not accept", endpoint, p->shard);
            p->done = true;
            atomic_fetch_sub(&l->parts_alive, 1);
            close(p->fd);
            p->fd = -1;
            listener_unref(l);
            listener_unref(l);
        }
    }
    *out = l;
    return 0;
}

int mcq_listener_endpoint(const struct mcq_listener *l, char *buf, size_t len)
{
    return mcq_endpoint_format(&l->addr, buf, len);
}

uint16_t mcq_listener_port(const struct mcq_listener *l)
{
    if (l->addr.sa.sa_family == AF_INET)
        return ntohs(l->addr.in4.sin_port);
    if (l->addr.sa.sa_family == AF_INET6)
        return ntohs(l->addr.in6.sin6_port);
    return 0;
}

void mcq_listener_close(struct mcq_listener *l)
{
    if (!l)
        return;
    /* After the runtime stopped every part is closed, and shards run no more tasks. */
    if (!atomic_exchange(&l->closing, true) &&
        atomic_load_explicit(&l->parts_alive, memory_order_acquire) > 0) {
        for (unsigned i = 0; i < l->nparts; i++) {
            listener_ref(l);
            if (post_to_shard(l->rt, l->parts[i].shard, part_close_task, &l->parts[i]) < 0)
                listener_unref(l);
        }
    }
    listener_unref(l);
}
