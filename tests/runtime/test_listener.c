#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "conn_util.h"

static struct mcq_conn_cfg echo_cfg = {.handler = &echo_handler};

static void echo_roundtrip(const struct mcq_sockaddr *addr)
{
    int fd = client_connect(addr);
    write_all_fd(fd, "roundtrip", 9);
    char buf[9];
    read_exact_fd(fd, buf, sizeof(buf), 10000);
    cr_assert(memcmp(buf, "roundtrip", 9) == 0);
    close(fd);
}

Test(listener, bad_endpoints_give_clear_errors)
{
    echo_reset();
    struct mcq_runtime *rt = start_runtime(2);
    struct mcq_listener *l = NULL;
    cr_assert_eq(mcq_conn_listen(rt, "tcp://", &echo_cfg, &l), -EINVAL);
    cr_assert_eq(mcq_conn_listen(rt, "tcp://host", &echo_cfg, &l), -EINVAL);
    cr_assert_eq(mcq_conn_listen(rt, "tcp://1.2.3.4:99999", &echo_cfg, &l), -EINVAL);
    cr_assert_eq(mcq_conn_listen(rt, "bogus://x", &echo_cfg, &l), -EPROTONOSUPPORT);
    char path[200] = "ipc:///tmp/";
    memset(path + strlen(path), 'x', 150);
    cr_assert_eq(mcq_conn_listen(rt, path, &echo_cfg, &l), -ENAMETOOLONG);
    /* A well-formed address this machine does not have. */
    cr_assert_eq(mcq_conn_listen(rt, "tcp://192.0.2.1:0", &echo_cfg, &l), -EADDRNOTAVAIL);
    cr_assert_eq(mcq_conn_listen(rt, "ipc:///nonexistent-dir/x.sock", &echo_cfg, &l), -ENOENT);
    cr_assert_null(l);
    mcq_runtime_destroy(rt);
}

Test(listener, port_in_use_is_eaddrinuse)
{
    echo_reset();
    struct mcq_runtime *rt = start_runtime(2);
    struct mcq_listener *l, *again = NULL;
    cr_assert_eq(mcq_conn_listen(rt, "tcp://127.0.0.1:0", &echo_cfg, &l), 0);
    char ep[64];
    snprintf(ep, sizeof(ep), "tcp://127.0.0.1:%u", mcq_listener_port(l));
    /* Our own SO_REUSEPORT group must not let a second listener join it. */
    cr_assert_eq(mcq_conn_listen(rt, ep, &echo_cfg, &again), -EADDRINUSE);
    snprintf(ep, sizeof(ep), "tcp://*:%u", mcq_listener_port(l));
    cr_assert_eq(mcq_conn_listen(rt, ep, &echo_cfg, &again), -EADDRINUSE);

    /* A plain socket of someone else listening on a port. */
    struct sockaddr_in sin;
    int fd = loopback_socket(1, &sin, ep, sizeof(ep));
    cr_assert_eq(mcq_conn_listen(rt, ep, &echo_cfg, &again), -EADDRINUSE);
    close(fd);

    struct mcq_listener *ipc;
    cr_assert_eq(mcq_conn_listen(rt, "ipc://@mcq-test-inuse", &echo_cfg, &ipc), 0);
    cr_assert_eq(mcq_conn_listen(rt, "ipc://@mcq-test-inuse", &echo_cfg, &again), -EADDRINUSE);
    cr_assert_null(again);
    mcq_listener_close(ipc);
    mcq_listener_close(l);
    mcq_runtime_destroy(rt);
}

Test(listener, ephemeral_port_is_reported_and_every_shard_accepts, .timeout = 60)
{
    echo_reset();
    struct mcq_runtime *rt = start_runtime(4);
    struct mcq_listener *l;
    cr_assert_eq(mcq_conn_listen(rt, "tcp://*:0", &echo_cfg, &l), 0);
    uint16_t port = mcq_listener_port(l);
    cr_assert_neq(port, 0);
    char ep[MCQ_ENDPOINT_TEXT_MAX], want[64];
    snprintf(want, sizeof(want), "tcp://0.0.0.0:%u", port);
    cr_assert_gt(mcq_listener_endpoint(l, ep, sizeof(ep)), 0);
    cr_assert_str_eq(ep, want);
    struct mcq_sockaddr addr = listener_addr(l);
    for (int i = 0; i < 64; i++)
        echo_roundtrip(&addr);
    cr_assert(test_event_wait(&echo.close_ev, 64, 30));
    /* SO_REUSEPORT spreads 64 connections over the 4 shards' sockets by hash. */
    unsigned shards_used = 0;
    struct mcq_shard_stats s;
    for (unsigned i = 0; i < 4; i++) {
        cr_assert_eq(mcq_runtime_stats(rt, i, &s), 0);
        shards_used += s.bytes_in > 0;
    }
    cr_assert_gt(shards_used, 1, "all connections landed on one shard");
    mcq_listener_close(l);
    mcq_runtime_destroy(rt);
}

Test(listener, ipv6_loopback, .timeout = 60)
{
    echo_reset();
    struct mcq_runtime *rt = start_runtime(2);
    struct mcq_listener *l;
    int rc = mcq_conn_listen(rt, "tcp://[::1]:0", &echo_cfg, &l);
    if (rc == -EADDRNOTAVAIL || rc == -EAFNOSUPPORT) {
        mcq_runtime_destroy(rt);
        cr_skip_test("the kernel has no IPv6 loopback (%s)", strerror(-rc));
    }
    cr_assert_eq(rc, 0, "%s", strerror(-rc));
    char ep[MCQ_ENDPOINT_TEXT_MAX];
    cr_assert_gt(mcq_listener_endpoint(l, ep, sizeof(ep)), 0);
    cr_assert(!strncmp(ep, "tcp://[::1]:", 12), "%s", ep);
    struct mcq_sockaddr addr = listener_addr(l);
    echo_roundtrip(&addr);
    cr_assert(test_event_wait(&echo.close_ev, 1, 10));
    mcq_listener_close(l);
    mcq_runtime_destroy(rt);
}

Test(listener, ipc_socket_file_is_replaced_when_stale_and_removed_on_close, .timeout = 60)
{
    echo_reset();
    char path[64], ep[80];
    snprintf(path, sizeof(path), "/tmp/mcq-test-stale-%d.sock", (int)getpid());
    snprintf(ep, sizeof(ep), "ipc://%s", path);
    /* A socket file left by a process that died: bound, never listening. */
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    strcpy(sun.sun_path, path);
    unlink(path);
    cr_assert_eq(bind(fd, (struct sockaddr *)&sun, sizeof(sun)), 0);
    close(fd);
    struct mcq_runtime *rt = start_runtime(3);
    struct mcq_listener *l;
    cr_assert_eq(mcq_conn_listen(rt, ep, &echo_cfg, &l), 0);
    struct mcq_sockaddr addr = listener_addr(l);
    /* One acceptor, connections handed round-robin: all three shards serve some. */
    for (int i = 0; i < 9; i++)
        echo_roundtrip(&addr);
    cr_assert(test_event_wait(&echo.close_ev, 9, 30));
    struct mcq_shard_stats s;
    for (unsigned i = 0; i < 3; i++) {
        cr_assert_eq(mcq_runtime_stats(rt, i, &s), 0);
        cr_assert_gt(s.bytes_in, 0, "shard %u got no IPC connection", i);
    }
    mcq_listener_close(l);
    mcq_runtime_stop(rt);
    cr_assert_eq(mcq_runtime_run(rt), 0);
    struct stat st;
    cr_assert_eq(stat(path, &st), -1, "socket file left behind");
    mcq_runtime_destroy(rt);
}

Test(listener, closed_listener_refuses_and_open_connections_survive, .timeout = 60)
{
    echo_reset();
    struct mcq_runtime *rt = start_runtime(2);
    struct mcq_listener *l;
    struct mcq_sockaddr addr = listen_loopback(rt, &echo_cfg, &l);
    int fd = client_connect(&addr);
    cr_assert(test_event_wait(&echo.open_ev, 1, 10));
    mcq_listener_close(l);
    /* The close runs on the shards; connecting is refused once it did. */
    bool refused = false;
    for (int i = 0; i < 1000 && !refused; i++) {
        int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        refused = connect(c, &addr.sa, addr.len) < 0 && errno == ECONNREFUSED;
        close(c);
        if (!refused)
            sched_yield();
    }
    cr_assert(refused);
    write_all_fd(fd, "still", 5);
    char buf[5];
    read_exact_fd(fd, buf, 5, 10000);
    cr_assert(memcmp(buf, "still", 5) == 0);
    close(fd);
    mcq_runtime_destroy(rt);
}

#define EMFILE_CLIENTS 8
#define EMFILE_HEADROOM 64 /* fds the runtime and the listener may take under the low limit */
#define EMFILE_FILLERS_MAX 4096
#define EMFILE_WINDOW_MS 300 /* how long the test watches the loop while out of fds */
#define EMFILE_TURNS_MAX 200 /* a 100 ms backoff makes a handful; a spinning accept, millions */

/* Out of fds, accept fails with EMFILE: the listener backs off instead of spinning, and
 * accepts the waiting connections once fds are free again. io_uring takes RLIMIT_NOFILE when
 * the accept is prepared, so the limit is lowered before the runtime starts. */
Test(listener, accept_backs_off_on_emfile_and_recovers, .timeout = 60)
{
    echo_reset();
    struct rlimit saved;
    cr_assert_eq(getrlimit(RLIMIT_NOFILE, &saved), 0);
    int lowest = dup(0);
    close(lowest);
    struct rlimit low = saved;
    low.rlim_cur = (rlim_t)lowest + EMFILE_HEADROOM;
    cr_assert_eq(setrlimit(RLIMIT_NOFILE, &low), 0);
    struct mcq_runtime *rt = start_runtime(1);
    struct mcq_listener *l;
    struct mcq_sockaddr addr = listen_loopback(rt, &echo_cfg, &l);
    /* One connection first, kept open, so the accept is armed before fds run out. */
    int first = client_connect(&addr);
    cr_assert(test_event_wait(&echo.open_ev, 1, 10));
    int fds[EMFILE_CLIENTS];
    for (int i = 0; i < EMFILE_CLIENTS; i++) {
        fds[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        cr_assert_geq(fds[i], 0);
    }
    int fillers[EMFILE_FILLERS_MAX], nfill = 0;
    while (nfill < EMFILE_FILLERS_MAX && (fillers[nfill] = dup(0)) >= 0)
        nfill++;
    cr_assert_eq(errno, EMFILE);
    for (int i = 0; i < EMFILE_CLIENTS; i++)
        cr_assert_eq(connect(fds[i], &addr.sa, addr.len), 0, "%s", strerror(errno));
    struct mcq_shard_stats before, after;
    cr_assert_eq(mcq_runtime_stats(rt, 0, &before), 0);
    poll(NULL, 0, EMFILE_WINDOW_MS);
    cr_assert_eq(mcq_runtime_stats(rt, 0, &after), 0);
    cr_assert_eq(atomic_load(&echo.opened), 1, "accepted while out of fds");
    cr_assert_lt(after.turns - before.turns, EMFILE_TURNS_MAX, "%llu loop turns while out of fds",
                 (unsigned long long)(after.turns - before.turns));
    for (int i = 0; i < nfill; i++)
        close(fillers[i]);
    cr_assert(test_event_wait(&echo.open_ev, 1 + EMFILE_CLIENTS, 30));
    for (int i = 0; i < EMFILE_CLIENTS; i++)
        close(fds[i]);
    close(first);
    mcq_listener_close(l);
    mcq_runtime_destroy(rt);
    cr_assert_eq(setrlimit(RLIMIT_NOFILE, &saved), 0);
}
