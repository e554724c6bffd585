/* Test helpers for the connection layer: an echo handler with counters, a runtime of a few
 * shards, plain blocking client sockets. */
#ifndef MCQ_TESTS_CONN_UTIL_H
#define MCQ_TESTS_CONN_UTIL_H

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "runtime/conn.h"
#include "runtime_util.h"
#include "wait_util.h"

/* What the echo handler saw, summed over all shards. */
struct echo_stats {
    _Atomic unsigned opened;
    _Atomic unsigned closed;
    _Atomic unsigned closed_clean;     /* reason 0 */
    _Atomic unsigned closed_cancelled; /* reason -ECANCELED (runtime stop) */
    _Atomic unsigned closed_error;     /* any other reason */
    _Atomic unsigned send_failures;
    _Atomic unsigned pauses;
    _Atomic uint64_t bytes;
    struct test_event open_ev, close_ev;
};

static struct echo_stats echo;

static inline void echo_reset(void)
{
    memset(&echo, 0, sizeof(echo));
    test_event_init(&echo.open_ev);
    test_event_init(&echo.close_ev);
}

static void echo_on_open(struct mcq_conn *c, void *user)
{
    (void)c;
    (void)user;
    atomic_fetch_add(&echo.opened, 1);
    test_event_signal(&echo.open_ev);
}

/* Echoes every view back (zero copy: the received page goes out as is), and pauses
 * receiving while the output queue is at its bound. */
static void echo_on_data(struct mcq_conn *c, void *user, const struct mcq_view *v)
{
    (void)user;
    atomic_fetch_add(&echo.bytes, v->len);
    struct mcq_view out = mcq_view_ref(v);
    if (mcq_conn_send(c, &out) < 0) {
        mcq_view_unref(&out);
        atomic_fetch_add(&echo.send_failures, 1);
        mcq_conn_close(c, MCQ_CLOSE_ABORT);
        return;
    }
    if (!mcq_conn_writable(c)) {
        atomic_fetch_add(&echo.pauses, 1);
        mcq_conn_pause(c);
    }
}

static void echo_on_writable(struct mcq_conn *c, void *user)
{
    (void)user;
    mcq_conn_resume(c);
}

static void echo_on_close(struct mcq_conn *c, void *user, int reason)
{
    (void)c;
    (void)user;
    if (reason == 0)
        atomic_fetch_add(&echo.closed_clean, 1);
    else if (reason == -ECANCELED)
        atomic_fetch_add(&echo.closed_cancelled, 1);
    else
        atomic_fetch_add(&echo.closed_error, 1);
    atomic_fetch_add(&echo.closed, 1);
    test_event_signal(&echo.close_ev);
}

static const struct mcq_conn_handler echo_handler = {
    .on_open = echo_on_open,
    .on_data = echo_on_data,
    .on_writable = echo_on_writable,
    .on_close = echo_on_close,
};

/* Raises RLIMIT_NOFILE's soft limit to the hard one; false if even that is below need. */
static inline bool raise_nofile(rlim_t need)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        return false;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    return rl.rlim_cur >= need;
}

/* A blocking client socket connected to the listener's address. */
static inline int client_connect(const struct mcq_sockaddr *addr)
{
    int fd = socket(addr->sa.sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert_geq(fd, 0);
    cr_assert_eq(connect(fd, &addr->sa, addr->len), 0, "connect: %s", strerror(errno));
    return fd;
}

#define NO_LISTEN (-1) /* loopback_socket: bind only */

/* A loopback TCP socket bound to an ephemeral port, listening with `backlog` unless it is
 * NO_LISTEN; its address into *sin and its endpoint into ep. The caller closes it. */
static inline int loopback_socket(int backlog, struct sockaddr_in *sin, char *ep, size_t len)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert_geq(fd, 0);
    *sin = (struct sockaddr_in){.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    cr_assert_eq(bind(fd, (struct sockaddr *)sin, sizeof(*sin)), 0);
    if (backlog != NO_LISTEN)
        cr_assert_eq(listen(fd, backlog), 0);
    socklen_t sl = sizeof(*sin);
    cr_assert_eq(getsockname(fd, (struct sockaddr *)sin, &sl), 0);
    snprintf(ep, len, "tcp://127.0.0.1:%u", ntohs(sin->sin_port));
    return fd;
}

/* The address a listener bound, as something a client can connect to. */
static inline struct mcq_sockaddr listener_addr(const struct mcq_listener *l)
{
    char text[MCQ_ENDPOINT_TEXT_MAX];
    cr_assert_gt(mcq_listener_endpoint(l, text, sizeof(text)), 0);
    struct mcq_endpoint ep;
    cr_assert_eq(mcq_endpoint_parse(text, &ep), 0);
    if (!strcmp(ep.host, "0.0.0.0"))
        strcpy(ep.host, "127.0.0.1");
    struct mcq_sockaddr sa;
    cr_assert_eq(mcq_endpoint_resolve(&ep, false, &sa), 0);
    return sa;
}

/* Listens on an ephemeral loopback tcp port with cfg (the listener into *l; the caller closes
 * it) and returns the address a client connects to. */
static inline struct mcq_sockaddr
listen_loopback(struct mcq_runtime *rt, const struct mcq_conn_cfg *cfg, struct mcq_listener **l)
{
    cr_assert_eq(mcq_conn_listen(rt, "tcp://127.0.0.1:0", cfg, l), 0);
    return listener_addr(*l);
}

static inline void write_all_fd(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        cr_assert_gt(n, 0, "write: %s", strerror(errno));
        p += n;
        len -= (size_t)n;
    }
}

/* Reads exactly len bytes, or fails after timeout_ms without progress. */
static inline void read_exact_fd(int fd, void *buf, size_t len, int timeout_ms)
{
    char *p = buf;
    while (len > 0) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        cr_assert_eq(poll(&pfd, 1, timeout_ms), 1, "read timed out, %zu bytes missing", len);
        ssize_t n = read(fd, p, len);
        cr_assert_gt(n, 0, "read: %s", n < 0 ? strerror(errno) : "EOF");
        p += n;
        len -= (size_t)n;
    }
}

#endif
