/* Connection options seen from outside: TCP keepalive settings read back from the real
 * socket (this process holds our fds), CONNECT_TIMEOUT abandoning a connect that cannot
 * complete, RECONNECT_IVL..RECONNECT_IVL_MAX backoff timed by a listener that hangs up on
 * every attempt, and the address an IPC peer reports. */
#include "socket_util.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>

TestSuite(socket_conn, .init = t_setup, .fini = t_teardown, .timeout = 60);

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static unsigned endpoint_port(const char *ep)
{
    const char *colon = strrchr(ep, ':');
    cr_assert_not_null(colon, "%s", ep);
    return (unsigned)atoi(colon + 1);
}

static unsigned addr_port(int fd, bool peer)
{
    struct sockaddr_in a;
    socklen_t len = sizeof(a);
    int rc = peer ? getpeername(fd, (struct sockaddr *)&a, &len)
                  : getsockname(fd, (struct sockaddr *)&a, &len);
    if (rc < 0 || a.sin_family != AF_INET)
        return 0;
    return ntohs(a.sin_port);
}

static int get_opt(int fd, int level, int name)
{
    int v = -1;
    socklen_t len = sizeof(v);
    cr_assert_eq(getsockopt(fd, level, name, &v, &len), 0);
    return v;
}

/* The connected TCP socket of this process whose local (peer = false) or remote
 * (peer = true) port is `port`, or -1. */
static int find_tcp_fd(unsigned port, bool peer)
{
    DIR *d = opendir("/proc/self/fd");
    cr_assert_not_null(d);
    int found = -1;
    struct dirent *e;
    while (found < 0 && (e = readdir(d))) {
        int fd = atoi(e->d_name);
        if (e->d_name[0] == '.' || fd == dirfd(d))
            continue;
        int type = 0, listening = 1;
        socklen_t len = sizeof(type);
        if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0 || type != SOCK_STREAM)
            continue;
        len = sizeof(listening);
        if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) < 0 || listening)
            continue;
        if (addr_port(fd, peer) == port && addr_port(fd, true) != 0)
            found = fd;
    }
    closedir(d);
    return found;
}

static void set_keepalive(int idle_s, int intvl_s, int cnt)
{
    t_setopt_int(MCQ_TCP_KEEPALIVE, 1);
    t_setopt_int(MCQ_TCP_KEEPALIVE_IDLE, idle_s);
    t_setopt_int(MCQ_TCP_KEEPALIVE_INTVL, intvl_s);
    t_setopt_int(MCQ_TCP_KEEPALIVE_CNT, cnt);
}

static void assert_keepalive(int fd, int idle_s, int intvl_s, int cnt)
{
    cr_assert_geq(fd, 0, "our connection's fd not found");
    cr_assert_eq(get_opt(fd, SOL_SOCKET, SO_KEEPALIVE), 1);
    cr_assert_eq(get_opt(fd, IPPROTO_TCP, TCP_KEEPIDLE), idle_s);
    cr_assert_eq(get_opt(fd, IPPROTO_TCP, TCP_KEEPINTVL), intvl_s);
    cr_assert_eq(get_opt(fd, IPPROTO_TCP, TCP_KEEPCNT), cnt);
}

/* TCP_KEEPALIVE 1 with IDLE/INTVL/CNT reach the kernel on connected and accepted sockets
 * (values no default has); TCP_KEEPALIVE 0 turns it off. */
Test(socket_conn, tcp_keepalive_reaches_the_socket)
{
    char zep[256], ep[256];
    t_socket(MCQ_DEALER);
    set_keepalive(77, 13, 5);
    void *r = z_socket(ZMQ_ROUTER);
    z_bind(r, "tcp", zep, sizeof(zep));
    cr_assert_eq(mcq_connect(app.s, zep), 0);
    cr_assert(t_wait_count(&app.ups, 1, T_WAIT_S));
    assert_keepalive(find_tcp_fd(endpoint_port(zep), true), 77, 13, 5);

    set_keepalive(61, 7, 3);
    t_bind("tcp", ep, sizeof(ep));
    void *d = z_socket(ZMQ_DEALER);
    cr_assert_eq(zmq_connect(d, ep), 0);
    cr_assert(t_wait_count(&app.ups, 2, T_WAIT_S));
    assert_keepalive(find_tcp_fd(endpoint_port(ep), false), 61, 7, 3);

    int keepalive = -2;
    size_t len = sizeof(keepalive);
    cr_assert_eq(mcq_getsockopt(app.s, MCQ_TCP_KEEPALIVE, &keepalive, &len), 0);
    cr_assert_eq(keepalive, 1);
    mcq_socket_close(app.s);
    app.s = NULL;
    z_close(r);
    z_close(d);

    t_socket(MCQ_DEALER);
    t_setopt_int(MCQ_TCP_KEEPALIVE, 0);
    void *r2 = z_socket(ZMQ_ROUTER);
    z_bind(r2, "tcp", zep, sizeof(zep));
    cr_assert_eq(mcq_connect(app.s, zep), 0);
    cr_assert(t_wait_count(&app.ups, 3, T_WAIT_S));
    int fd = find_tcp_fd(endpoint_port(zep), true);
    cr_assert_geq(fd, 0);
    cr_assert_eq(get_opt(fd, SOL_SOCKET, SO_KEEPALIVE), 0);
}

/* --- connect attempts, counted from outside -------------------------------------------------- */

static int raw_listener(int backlog, unsigned *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert_geq(fd, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    cr_assert_eq(listen(fd, backlog), 0);
    *port = addr_port(fd, false);
    return fd;
}

#define MAX_ATTEMPTS 64

/* One connect attempt as a series of scans saw it: in SYN_SENT from `first` to `last`; not
 * yet at `before` (the scan before first), gone at `after` (0 while still seen). */
struct attempt {
    unsigned port;
    double before, first, last, after;
};

/* Notes every socket of this process in SYN_SENT (by its local port) in a[]. Our own fds
 * only: cheap, and nobody else's connections count. `prev` is the previous scan's time. */
static void scan_syn_sent(double prev, struct attempt *a, unsigned *n)
{
    double t = now_s();
    DIR *d = opendir("/proc/self/fd");
    cr_assert_not_null(d);
    bool seen[MAX_ATTEMPTS] = {false};
    struct dirent *e;
    while ((e = readdir(d))) {
        int fd = atoi(e->d_name);
        if (e->d_name[0] == '.' || fd == dirfd(d))
            continue;
        struct tcp_info ti;
        socklen_t len = sizeof(ti);
        if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) < 0 || ti.tcpi_state != TCP_SYN_SENT)
            continue;
        unsigned lport = addr_port(fd, false);
        unsigned i = 0;
        while (i < *n && a[i].port != lport)
            i++;
        if (i == *n) {
            if (*n == MAX_ATTEMPTS)
                continue;
            a[(*n)++] = (struct attempt){lport, prev, t, t, 0};
        }
        a[i].last = t;
        seen[i] = true;
    }
    closedir(d);
    for (unsigned i = 0; i < *n; i++)
        if (!seen[i] && a[i].after == 0)
            a[i].after = t;
}

#define CONNECT_TIMEOUT_MS 150
#define CONNECT_WATCH_S 1.5
#define SCAN_PAUSE_NS 5000000L
#define MIN_ATTEMPTS 4 /* in the watch time; without the timeout there is one */

/* A listener whose accept queue is full drops our SYNs, so a connect never completes.
 * CONNECT_TIMEOUT 150 ms abandons each attempt (seen as a socket of ours in SYN_SENT, each
 * with its own local port) after about that long, and the next attempt follows. */
Test(socket_conn, connect_timeout_abandons_and_retries)
{
    unsigned port;
    int l = raw_listener(0, &port);
    /* One connection the listener never accepts fills its queue (backlog 0 holds one). */
    int filler = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_eq(connect(filler, (struct sockaddr *)&a, sizeof(a)), 0);

    t_socket(MCQ_DEALER);
    t_setopt_int(MCQ_CONNECT_TIMEOUT, CONNECT_TIMEOUT_MS);
    t_setopt_int(MCQ_RECONNECT_IVL, 10);
    t_setopt_int(MCQ_LINGER, 0);
    char ep[64];
    snprintf(ep, sizeof(ep), "tcp://127.0.0.1:%u", port);
    cr_assert_eq(mcq_connect(app.s, ep), 0);
    static struct attempt att[MAX_ATTEMPTS];
    unsigned n = 0;
    double prev = now_s(), until = prev + CONNECT_WATCH_S;
    while (now_s() < until) {
        double t = now_s();
        scan_syn_sent(prev, att, &n);
        prev = t;
        nanosleep(&(struct timespec){0, SCAN_PAUSE_NS}, NULL);
    }
    mcq_socket_close(app.s);
    app.s = NULL;
    close(filler);
    close(l);
    cr_assert_geq(n, MIN_ATTEMPTS, "%u connect attempts in %.1f s", n, CONNECT_WATCH_S);
    /* An attempt seen from start to end lived at least last - first and at most
     * after - before: it must have been abandoned (less than twice the timeout) but not
     * before the timeout. The first and the last attempt may be cut by the watch. */
    for (unsigned i = 1; i + 1 < n; i++) {
        cr_assert_gt(att[i].after, 0);
        double lo = (att[i].last - att[i].first) * 1e3, hi = (att[i].after - att[i].before) * 1e3;
        cr_log_info("connect attempt %u: SYN_SENT for %.0f..%.0f ms", i, lo, hi);
        /* Without the timeout an attempt lives for the whole watch; the bound leaves room
         * for a loaded machine's late timer. */
        cr_assert_lt(lo, CONNECT_TIMEOUT_MS * 4, "attempt %u lived %.0f ms or more", i, lo);
        cr_assert_geq(hi, CONNECT_TIMEOUT_MS, "attempt %u lived %.0f ms at most", i, hi);
    }
    pthread_mutex_lock(&app.lock);
    unsigned ups = app.ups;
    pthread_mutex_unlock(&app.lock);
    cr_assert_eq(ups, 0);
}

#define BACKOFF_IVL_MS 25
#define BACKOFF_MAX_MS 200
#define BACKOFF_ACCEPTS 8
#define BACKOFF_GROWING 3     /* gaps 1..3: 25, 50, 100 ms before the cap */
#define BACKOFF_CAPPED_FROM 5 /* gaps 5..7: 200 ms capped, 400, 800, 1600 ms if not */

/* RECONNECT_IVL 25, RECONNECT_IVL_MAX 200: a listener that hangs up on every connection
 * sees attempts 25, 50, 100, 200, 200... ms apart (plus up to 1/4 jitter): doubling from
 * the interval, capped at the maximum. A loaded machine only delays attempts, so every gap
 * must reach its delay, while the upper checks take sums and minima that a few late
 * wake-ups cannot spoil: the first gaps add up to far less than starting at the maximum
 * would give, and the shortest late gap stays below the next doubling. */
Test(socket_conn, reconnect_backoff_doubles_to_the_max)
{
    unsigned port;
    int l = raw_listener(16, &port);
    t_socket(MCQ_DEALER);
    t_setopt_int(MCQ_RECONNECT_IVL, BACKOFF_IVL_MS);
    t_setopt_int(MCQ_RECONNECT_IVL_MAX, BACKOFF_MAX_MS);
    t_setopt_int(MCQ_LINGER, 0);
    char ep[64];
    snprintf(ep, sizeof(ep), "tcp://127.0.0.1:%u", port);
    cr_assert_eq(mcq_connect(app.s, ep), 0);
    double at[BACKOFF_ACCEPTS];
    for (unsigned i = 0; i < BACKOFF_ACCEPTS; i++) {
        struct pollfd p = {.fd = l, .events = POLLIN};
        cr_assert_eq(poll(&p, 1, (int)(T_WAIT_S * 1000)), 1, "attempt %u never came", i);
        int c = accept4(l, NULL, NULL, SOCK_CLOEXEC);
        at[i] = now_s();
        cr_assert_geq(c, 0);
        close(c);
    }
    mcq_socket_close(app.s);
    app.s = NULL;
    close(l);
    double expect = BACKOFF_IVL_MS, growing = 0, capped_min = 1e9;
    for (unsigned i = 1; i < BACKOFF_ACCEPTS; i++) {
        double ms = (at[i] - at[i - 1]) * 1e3;
        cr_log_info("reconnect %u: %.0f ms after the last (delay %.0f ms + jitter)", i, ms, expect);
        cr_assert_geq(ms, expect, "reconnect %u after %.0f ms, before its %.0f ms delay", i, ms,
                      expect);
        if (i <= BACKOFF_GROWING)
            growing += ms;
        if (i >= BACKOFF_CAPPED_FROM && ms < capped_min)
            capped_min = ms;
        expect = expect * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : expect * 2;
    }
    cr_assert_lt(growing, BACKOFF_GROWING * BACKOFF_MAX_MS,
                 "the first %d gaps took %.0f ms: the delay did not start at RECONNECT_IVL",
                 BACKOFF_GROWING, growing);
    cr_assert_lt(capped_min, 2 * BACKOFF_MAX_MS,
                 "late gaps all %.0f ms or more: the delay is not capped at RECONNECT_IVL_MAX",
                 capped_min);
}

/* --- addresses ---------------------------------------------------------------------------------
 */

static char up_address[256];

static void on_up_address(struct mcq_shard *sh, struct mcq_socket *s, const struct mcq_peer_info *p,
                          void *user)
{
    pthread_mutex_lock(&app.lock);
    snprintf(up_address, sizeof(up_address), "%s", p->address);
    pthread_mutex_unlock(&app.lock);
    t_on_up(sh, s, p, user);
}

/* An accepted IPC peer reports the path it connected to (its own end is unnamed), as
 * libzmq does; a connected one reports the path it connected to as well. */
Test(socket_conn, ipc_peer_reports_the_path)
{
    char ep[256], zep[256];
    struct mcq_socket_handlers h = {.on_msg = t_on_msg, .on_peer_up = on_up_address, .user = &app};
    cr_assert_eq(mcq_socket_create(app.rt, MCQ_DEALER, &h, &app.s), 0);
    t_bind("ipc", ep, sizeof(ep));
    void *d = z_socket(ZMQ_DEALER);
    cr_assert_eq(zmq_connect(d, ep), 0);
    cr_assert(t_wait_count(&app.ups, 1, T_WAIT_S));
    pthread_mutex_lock(&app.lock);
    cr_assert_str_eq(up_address, ep);
    pthread_mutex_unlock(&app.lock);

    void *r = z_socket(ZMQ_ROUTER);
    z_bind(r, "ipc", zep, sizeof(zep));
    cr_assert_eq(mcq_connect(app.s, zep), 0);
    cr_assert(t_wait_count(&app.ups, 2, T_WAIT_S));
    pthread_mutex_lock(&app.lock);
    cr_assert_str_eq(up_address, zep);
    pthread_mutex_unlock(&app.lock);
}
