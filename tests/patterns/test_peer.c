/* The ZMTP peer over real sockets against real libzmq (C API on the test thread), with a
 * minimal test-local owner (the real owner is the socket layer). One shard; everything the
 * test does on it goes through mcq_runtime_post and is awaited with a deadline. */
#include <criterion/criterion.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <zmq.h>

#include "alloc/arena.h"
#include "patterns/msg_int.h"
#include "patterns/peer.h"
#include "runtime/conn.h"
#include "runtime/runtime_util.h"
#include "runtime/wait_util.h"
#include "zmtp/mechanism.h"

#define WAIT_S 10.0         /* upper bound for anything that must happen */
#define ZMQ_TIMEOUT_MS 5000 /* libzmq send/recv bound */
#define MAX_FRAMES 16
#define BIG_BYTES (16u << 20) /* the 16 MiB message */
#define HB_IVL_MS 100
#define HB_TIMEOUT_MS 300
#define QUIET_S 1.0 /* silence longer than every heartbeat timeout, in seconds */
#define PAUSE_MSGS 50u
#define PAUSE_QUIET_S 0.3 /* seconds in which nothing may happen */

/* --- the test owner ------------------------------------------------------------------------- */

struct rx {
    unsigned n;
    size_t len[MAX_FRAMES];
    uint8_t *data[MAX_FRAMES];
};

struct owner {
    struct mcq_runtime *rt;
    struct mcq_peer_cfg cfg;
    struct mcq_peer_listener lst;
    struct mcq_listener *l;
    uint16_t port;
    bool echo;
    const char *user, *pass; /* PLAIN server: accepted credentials */

    pthread_mutex_t lock;
    struct test_event ready_ev, msg_ev, closed_ev, writable_ev, done_ev;
    struct mcq_peer *last; /* last ready peer (shard thread only) */
    int peer_type;
    int last_reason;
    bool last_reconnecting;
    unsigned readies, closes, msgs;
    struct rx last_msg;
    int echo_failures;
    unsigned sent;         /* by the HWM task */
    unsigned pause_at;     /* pause the peer when this many messages arrived (0: never) */
    const char *sub_topic; /* SUB owner: subscribe to this on ready */
    int sub_rc;
    unsigned subs, cancels; /* subscriptions the peer told us about */
    char sub_last[64];
    struct test_event sub_ev;
    unsigned seq_errors; /* messages whose first frame is not their arrival index */
    int send_rc;
};

static struct owner ow;

static void rx_clear(struct rx *r)
{
    for (unsigned i = 0; i < r->n; i++)
        free(r->data[i]);
    r->n = 0;
}

static void own_ready(struct mcq_peer *p)
{
    struct mcq_peer_info info;
    mcq_peer_info(p, &info);
    pthread_mutex_lock(&ow.lock);
    ow.last = p;
    ow.peer_type = info.socket_type;
    ow.readies++;
    pthread_mutex_unlock(&ow.lock);
    if (ow.sub_topic)
        ow.sub_rc = mcq_peer_send_subscription(p, true, (const uint8_t *)ow.sub_topic,
                                               strlen(ow.sub_topic));
    test_event_signal(&ow.ready_ev);
}

static void own_msg(struct mcq_peer *p, struct mcq_msg *m)
{
    pthread_mutex_lock(&ow.lock);
    rx_clear(&ow.last_msg);
    for (unsigned i = 0; i < mcq_msg_count(m) && i < MAX_FRAMES; i++) {
        const struct mcq_view *v = mcq_msg_frame(m, i);
        ow.last_msg.len[i] = mcq_view_len(v);
        ow.last_msg.data[i] = malloc(mcq_view_len(v) + 1);
        memcpy(ow.last_msg.data[i], mcq_view_data(v), mcq_view_len(v));
        ow.last_msg.n++;
    }
    char idx[16];
    int il = snprintf(idx, sizeof(idx), "%u", ow.msgs);
    if (ow.last_msg.n == 0 || ow.last_msg.len[0] != (size_t)il ||
        memcmp(ow.last_msg.data[0], idx, (size_t)il) != 0)
        ow.seq_errors++;
    ow.msgs++;
    bool pause = ow.pause_at && ow.msgs == ow.pause_at;
    pthread_mutex_unlock(&ow.lock);
    if (pause)
        mcq_peer_pause(p);
    if (!ow.echo || mcq_peer_send(p, m) < 0) {
        if (ow.echo)
            ow.echo_failures++;
        mcq_msg_free(m);
    }
    test_event_signal(&ow.msg_ev);
}

static void own_writable(struct mcq_peer *p)
{
    (void)p;
    test_event_signal(&ow.writable_ev);
}

static void own_closed(struct mcq_peer *p, int reason)
{
    pthread_mutex_lock(&ow.lock);
    if (ow.last == p && !mcq_peer_reconnecting(p))
        ow.last = NULL;
    ow.last_reason = reason;
    ow.last_reconnecting = mcq_peer_reconnecting(p);
    ow.closes++;
    pthread_mutex_unlock(&ow.lock);
    test_event_signal(&ow.closed_ev);
}

static unsigned own_auth(struct mcq_peer *p, const struct mcq_auth_request *req)
{
    (void)p;
    bool ok = req->username_len == strlen(ow.user) &&
              memcmp(req->username, ow.user, req->username_len) == 0 &&
              req->password_len == strlen(ow.pass) &&
              memcmp(req->password, ow.pass, req->password_len) == 0;
    return ok ? 200 : 400;
}

static void own_subscription(struct mcq_peer *p, bool subscribe, const uint8_t *topic, size_t len)
{
    (void)p;
    pthread_mutex_lock(&ow.lock);
    if (subscribe)
        ow.subs++;
    else
        ow.cancels++;
    size_t n = len < sizeof(ow.sub_last) - 1 ? len : sizeof(ow.sub_last) - 1;
    memcpy(ow.sub_last, topic, n);
    ow.sub_last[n] = '\0';
    pthread_mutex_unlock(&ow.lock);
    test_event_signal(&ow.sub_ev);
}

static const struct mcq_peer_ops own_ops = {
    .subscription = own_subscription,
    .ready = own_ready,
    .msg = own_msg,
    .writable = own_writable,
    .closed = own_closed,
    .auth = own_auth,
};

static void own_accept(struct mcq_peer_listener *l, struct mcq_conn *c)
{
    (void)l;
    struct mcq_peer *p;
    mcq_peer_accept(c, &ow.cfg, &ow, &p);
}

static void setup(void)
{
    memset(&ow, 0, sizeof(ow));
    pthread_mutex_init(&ow.lock, NULL);
    test_event_init(&ow.ready_ev);
    test_event_init(&ow.msg_ev);
    test_event_init(&ow.closed_ev);
    test_event_init(&ow.writable_ev);
    test_event_init(&ow.done_ev);
    test_event_init(&ow.sub_ev);
    ow.echo = true;
    ow.cfg.ops = &own_ops;
    ow.cfg.zmtp.socket_type = MCQ_ZMTP_DEALER;
    ow.cfg.sndhwm = 1000;
    ow.cfg.sndhwm_bytes = 16u << 20;
    ow.cfg.reconnect_ivl_ms = 50;
    ow.cfg.reconnect_ivl_max_ms = 200;
    ow.cfg.connect_timeout_ms = 1000;
    ow.lst.accept = own_accept;
    ow.rt = start_runtime(1);
}

/* Destroys the runtime with stderr captured: a clean stop leaves no message, page or
 * peer behind, which the runtime would report ("still referenced", "still in use"). */
static void destroy_checked(void)
{
    if (!ow.rt)
        return;
    if (ow.l)
        mcq_listener_close(ow.l);
    ow.l = NULL;
    fflush(stderr);
    FILE *cap = tmpfile();
    cr_assert(cap);
    int saved = dup(STDERR_FILENO);
    dup2(fileno(cap), STDERR_FILENO);
    mcq_runtime_destroy(ow.rt);
    ow.rt = NULL;
    fflush(stderr);
    dup2(saved, STDERR_FILENO);
    close(saved);
    char log[8192] = {0};
    rewind(cap);
    size_t n = fread(log, 1, sizeof(log) - 1, cap);
    fclose(cap);
    fwrite(log, 1, n, stderr);
    cr_assert_null(strstr(log, "still"), "unclean shutdown: %s", log);
}

static void teardown(void)
{
    destroy_checked();
    rx_clear(&ow.last_msg);
}

static void own_listen(void)
{
    struct mcq_conn_cfg cc = ow.cfg.conn; /* as the socket layer does: one conn cfg for both */
    cc.handler = &mcq_peer_listener_handler;
    cc.user = &ow.lst;
    cr_assert_eq(mcq_conn_listen(ow.rt, "tcp://127.0.0.1:0", &cc, &ow.l), 0);
    ow.port = mcq_listener_port(ow.l);
}

/* Runs fn on the shard and waits for it. */
struct task {
    void (*fn)(struct mcq_shard *sh, void *arg);
    void *arg;
    struct test_event done;
};

static void task_run(struct mcq_shard *sh, void *arg)
{
    struct task *t = arg;
    t->fn(sh, t->arg);
    test_event_signal(&t->done);
}

static void on_shard(void (*fn)(struct mcq_shard *sh, void *arg), void *arg)
{
    struct task t = {.fn = fn, .arg = arg};
    test_event_init(&t.done);
    cr_assert_eq(mcq_runtime_post(ow.rt, 0, task_run, &t), 0);
    cr_assert(test_event_wait(&t.done, 1, WAIT_S), "shard task timed out");
}

static void do_connect(struct mcq_shard *sh, void *arg)
{
    struct mcq_peer *p;
    ow.send_rc = mcq_peer_connect(sh, arg, &ow.cfg, &ow, &p);
}

/* Sends a message of the given frames to the last ready peer. */
struct send_req {
    unsigned n;
    const void *data[MAX_FRAMES];
    size_t len[MAX_FRAMES];
};

static void do_send(struct mcq_shard *sh, void *arg)
{
    struct send_req *r = arg;
    struct mcq_msg *m = mcq_msg_new(sh);
    for (unsigned i = 0; i < r->n; i++)
        mcq_msg_append(m, r->data[i], r->len[i]);
    ow.send_rc = ow.last ? mcq_peer_send(ow.last, m) : -ENOTCONN;
    if (ow.send_rc < 0)
        mcq_msg_free(m);
}

/* --- libzmq helpers ------------------------------------------------------------------------- */

static void *zsock(void *ctx, int type)
{
    void *s = zmq_socket(ctx, type);
    cr_assert(s);
    int t = ZMQ_TIMEOUT_MS, zero = 0;
    zmq_setsockopt(s, ZMQ_RCVTIMEO, &t, sizeof(t));
    zmq_setsockopt(s, ZMQ_SNDTIMEO, &t, sizeof(t));
    zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof(zero));
    return s;
}

#define TCP_EP_MAX 64 /* bytes of a "tcp://127.0.0.1:<port>" endpoint */

/* Writes the loopback tcp endpoint of `port` into ep. */
static void tcp_ep(char *ep, size_t len, uint16_t port)
{
    snprintf(ep, len, "tcp://127.0.0.1:%u", port);
}

static void zconnect(void *s, uint16_t port)
{
    char ep[TCP_EP_MAX];
    tcp_ep(ep, sizeof(ep), port);
    cr_assert_eq(zmq_connect(s, ep), 0, "%s", zmq_strerror(zmq_errno()));
}

static void zsend_parts(void *s, unsigned n, const void *const *data, const size_t *len)
{
    for (unsigned i = 0; i < n; i++)
        cr_assert_eq(zmq_send(s, data[i], len[i], i + 1 < n ? ZMQ_SNDMORE : 0), (int)len[i]);
}

/* Receives one multipart message into r (frames malloc'd); false on timeout. */
static bool zrecv_parts(void *s, struct rx *r)
{
    rx_clear(r);
    for (;;) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, s, 0) < 0) {
            zmq_msg_close(&m);
            return false;
        }
        cr_assert_lt(r->n, MAX_FRAMES);
        r->len[r->n] = zmq_msg_size(&m);
        r->data[r->n] = malloc(r->len[r->n] + 1);
        memcpy(r->data[r->n], zmq_msg_data(&m), r->len[r->n]);
        r->n++;
        bool more = zmq_msg_more(&m);
        zmq_msg_close(&m);
        if (!more)
            return true;
    }
}

static void assert_rx(const struct rx *r, unsigned n, const void *const *data, const size_t *len)
{
    cr_assert_eq(r->n, n, "frames: got %u, want %u", r->n, n);
    for (unsigned i = 0; i < n; i++) {
        cr_assert_eq(r->len[i], len[i], "frame %u: %zu bytes, want %zu", i, r->len[i], len[i]);
        cr_assert(len[i] == 0 || memcmp(r->data[i], data[i], len[i]) == 0, "frame %u differs", i);
    }
}

/* A libzmq DEALER sends `n` frames; our echo owner sends them back. */
static void dealer_roundtrip(void *d, unsigned n, const void *const *data, const size_t *len)
{
    zsend_parts(d, n, data, len);
    struct rx r = {0};
    cr_assert(zrecv_parts(d, &r), "no echo from the peer");
    assert_rx(&r, n, data, len);
    rx_clear(&r);
}

static int raw_connect(uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert_geq(fd, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_eq(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    return fd;
}

/* Whether the server closed fd (EOF or reset) within the wait. */
static bool raw_closed_by_peer(int fd)
{
    uint8_t buf[4096];
    for (int waited = 0; waited < (int)(WAIT_S * 1000); waited += 100) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        if (poll(&pfd, 1, 100) <= 0)
            continue;
        ssize_t n = recv(fd, buf, sizeof(buf), 0);
        if (n <= 0)
            return true;
    }
    return false;
}

static uint16_t free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(fd, (struct sockaddr *)&a, sizeof(a));
    socklen_t l = sizeof(a);
    getsockname(fd, (struct sockaddr *)&a, &l);
    close(fd);
    return ntohs(a.sin_port);
}

/* Binds libzmq socket s to a free loopback tcp port; its endpoint into ep. */
static void zbind_free(void *s, char *ep, size_t len)
{
    tcp_ep(ep, len, free_port());
    cr_assert_eq(zmq_bind(s, ep), 0, "%s", zmq_strerror(zmq_errno()));
}

/* Binds s to a free loopback port (endpoint into ep) and has our peer connect to it; returns
 * once the peer is ready. */
static void zbind_free_and_connect(void *s, char *ep, size_t len)
{
    zbind_free(s, ep, len);
    on_shard(do_connect, ep);
    cr_assert_eq(ow.send_rc, 0);
    cr_assert(test_event_wait(&ow.ready_ev, 1, WAIT_S));
}

/* --- tests ------------------------------------------------------------------------------------ */

TestSuite(peer, .init = setup, .fini = teardown, .timeout = 60);

Test(peer, accepted_null_with_libzmq_dealer_multipart)
{
    own_listen();
    void *ctx = zmq_ctx_new();
    void *d = zsock(ctx, ZMQ_DEALER);
    zconnect(d, ow.port);
    const void *f3[] = {"a", "", "hello"};
    size_t l3[] = {1, 0, 5};
    dealer_roundtrip(d, 3, f3, l3);
    cr_assert(test_event_wait(&ow.ready_ev, 1, WAIT_S));
    cr_assert_eq(ow.peer_type, ZMQ_DEALER);
    const void *f0[] = {""};
    size_t l0[] = {0};
    dealer_roundtrip(d, 1, f0, l0);
    const void *fe[] = {"", "", "", "", "", "x"};
    size_t le[] = {0, 0, 0, 0, 0, 1};
    dealer_roundtrip(d, 6, fe, le);
    /* Many small messages in a row: batched headers, in order. */
    for (unsigned i = 0; i < 200; i++) {
        char b[16];
        int n = snprintf(b, sizeof(b), "m%u", i);
        const void *f[] = {b, "tail"};
        size_t l[] = {(size_t)n, 4};
        zsend_parts(d, 2, f, l);
    }
    for (unsigned i = 0; i < 200; i++) {
        char b[16];
        int n = snprintf(b, sizeof(b), "m%u", i);
        const void *f[] = {b, "tail"};
        size_t l[] = {(size_t)n, 4};
        struct rx r = {0};
        cr_assert(zrecv_parts(d, &r));
        assert_rx(&r, 2, f, l);
        rx_clear(&r);
    }
    cr_assert_eq(ow.echo_failures, 0);
    zmq_close(d);
    cr_assert(test_event_wait(&ow.closed_ev, 1, WAIT_S), "peer not closed after the client left");
    zmq_ctx_term(ctx);
}

Test(peer, sixteen_mib_message_both_ways)
{
    own_listen();
    void *ctx = zmq_ctx_new();
    void *d = zsock(ctx, ZMQ_DEALER);
    zconnect(d, ow.port);
    uint8_t *big = malloc(BIG_BYTES);
    for (size_t i = 0; i < BIG_BYTES; i++)
        big[i] = (uint8_t)(i * 131 + (i >> 13));
    const void *f[] = {"head", big, ""};
    size_t l[] = {4, BIG_BYTES, 0};
    dealer_roundtrip(d, 3, f, l);
    free(big);
    zmq_close(d);
    zmq_ctx_term(ctx);
}

Test(peer, connecting_null_to_libzmq_router)
{
    void *ctx = zmq_ctx_new();
    void *r = zsock(ctx, ZMQ_ROUTER);
    char ep[TCP_EP_MAX];
    zbind_free_and_connect(r, ep, sizeof(ep));
    cr_assert_eq(ow.peer_type, ZMQ_ROUTER);
    struct send_req s = {.n = 2, .data = {"hi", "there"}, .len = {2, 5}};
    on_shard(do_send, &s);
    cr_assert_eq(ow.send_rc, 0);
    struct rx got = {0};
    cr_assert(zrecv_parts(r, &got));
    cr_assert_eq(got.n, 3); /* routing id + our two frames */
    cr_assert(got.len[1] == 2 && memcmp(got.data[1], "hi", 2) == 0);
    cr_assert(got.len[2] == 5 && memcmp(got.data[2], "there", 5) == 0);
    /* The ROUTER answers through the id; our owner echoes it back. */
    const void *reply[] = {got.data[0], "", "pong"};
    size_t rl[] = {got.len[0], 0, 4};
    zsend_parts(r, 3, reply, rl);
    cr_assert(test_event_wait(&ow.msg_ev, 1, WAIT_S));
    pthread_mutex_lock(&ow.lock);
    assert_rx(&ow.last_msg, 2, reply + 1, rl + 1);
    pthread_mutex_unlock(&ow.lock);
    struct rx echo = {0};
    cr_assert(zrecv_parts(r, &echo));
    cr_assert_eq(echo.n, 3);
    rx_clear(&echo);
    rx_clear(&got);
    zmq_close(r);
    zmq_ctx_term(ctx);
}

Test(peer, reconnects_after_libzmq_restarts)
{
    void *ctx = zmq_ctx_new();
    void *r = zsock(ctx, ZMQ_ROUTER);
    char ep[TCP_EP_MAX];
    zbind_free_and_connect(r, ep, sizeof(ep));
    zmq_close(r);
    cr_assert(test_event_wait(&ow.closed_ev, 1, WAIT_S), "loss not reported");
    cr_assert(ow.last_reconnecting);
    r = zsock(ctx, ZMQ_ROUTER);
    cr_assert_eq(zmq_bind(r, ep), 0);
    cr_assert(test_event_wait(&ow.ready_ev, 2, WAIT_S), "no ready after the restart");
    struct send_req s = {.n = 1, .data = {"again"}, .len = {5}};
    on_shard(do_send, &s);
    cr_assert_eq(ow.send_rc, 0);
    struct rx got = {0};
    cr_assert(zrecv_parts(r, &got));
    cr_assert(got.n == 2 && got.len[1] == 5 && memcmp(got.data[1], "again", 5) == 0);
    rx_clear(&got);
    zmq_close(r);
    zmq_ctx_term(ctx);
}

Test(peer, plain_server_accepts_and_refuses)
{
    ow.cfg.zmtp.mechanism = &mcq_zmtp_mech_plain_server;
    ow.user = "admin";
    ow.pass = "secret";
    own_listen();
    void *ctx = zmq_ctx_new();
    void *good = zsock(ctx, ZMQ_DEALER);
    zmq_setsockopt(good, ZMQ_PLAIN_USERNAME, "admin", 5);
    zmq_setsockopt(good, ZMQ_PLAIN_PASSWORD, "secret", 6);
    zconnect(good, ow.port);
    const void *f[] = {"secure"};
    size_t l[] = {6};
    dealer_roundtrip(good, 1, f, l);

    void *bad = zsock(ctx, ZMQ_DEALER);
    zmq_setsockopt(bad, ZMQ_PLAIN_USERNAME, "admin", 5);
    zmq_setsockopt(bad, ZMQ_PLAIN_PASSWORD, "wrong", 5);
    zconnect(bad, ow.port);
    cr_assert(test_event_wait(&ow.closed_ev, 1, WAIT_S), "refused peer not closed");
    cr_assert_eq(ow.last_reason, -EACCES);
    int t = 300;
    zmq_setsockopt(bad, ZMQ_RCVTIMEO, &t, sizeof(t));
    zmq_send(bad, "x", 1, ZMQ_DONTWAIT);
    char buf[8];
    cr_assert_lt(zmq_recv(bad, buf, sizeof(buf), 0), 0, "refused client got an answer");
    /* The good one is unaffected. */
    dealer_roundtrip(good, 1, f, l);
    zmq_close(bad);
    zmq_close(good);
    zmq_ctx_term(ctx);
}

static struct mcq_peer_cfg refused_client_cfg;
static const struct mcq_zmtp_plain_credentials wrong_creds = {(const uint8_t *)"admin", 5,
                                                              (const uint8_t *)"nope", 4};

static void do_connect_client(struct mcq_shard *sh, void *arg)
{
    struct mcq_peer *p;
    ow.send_rc = mcq_peer_connect(sh, arg, &refused_client_cfg, &ow, &p);
}

/* libzmq's PLAIN server asks a ZAP handler; this one lets everybody in. */
struct zap {
    void *ctx;
    void *rep;
    _Atomic bool stop;
    pthread_t thread;
};

static void *zap_main(void *arg)
{
    struct zap *z = arg;
    while (!atomic_load(&z->stop)) {
        zmq_pollitem_t it = {.socket = z->rep, .events = ZMQ_POLLIN};
        if (zmq_poll(&it, 1, 50) <= 0)
            continue;
        struct rx req = {0};
        if (!zrecv_parts(z->rep, &req))
            continue;
        if (req.n >= 2) {
            const void *f[] = {"1.0", req.data[1], "200", "OK", "", ""};
            size_t l[] = {3, req.len[1], 3, 2, 0, 0};
            for (unsigned i = 0; i < 6; i++)
                zmq_send(z->rep, f[i], l[i], i < 5 ? ZMQ_SNDMORE : 0);
        }
        rx_clear(&req);
    }
    return NULL;
}

static void zap_start(struct zap *z, void *ctx)
{
    z->ctx = ctx;
    z->rep = zsock(ctx, ZMQ_REP);
    cr_assert_eq(zmq_bind(z->rep, "inproc://zeromq.zap.01"), 0);
    atomic_store(&z->stop, false);
    cr_assert_eq(pthread_create(&z->thread, NULL, zap_main, z), 0);
}

static void zap_stop(struct zap *z)
{
    atomic_store(&z->stop, true);
    pthread_join(z->thread, NULL);
    zmq_close(z->rep);
}

Test(peer, plain_client_to_libzmq_and_refused_client_does_not_reconnect)
{
    /* Our PLAIN client against a libzmq PLAIN server. */
    void *ctx = zmq_ctx_new();
    struct zap zap;
    zap_start(&zap, ctx);
    void *r = zsock(ctx, ZMQ_ROUTER);
    int one = 1;
    zmq_setsockopt(r, ZMQ_PLAIN_SERVER, &one, sizeof(one));
    char ep[TCP_EP_MAX];
    zbind_free(r, ep, sizeof(ep));
    static const struct mcq_zmtp_plain_credentials creds = {(const uint8_t *)"u", 1,
                                                            (const uint8_t *)"p", 1};
    ow.cfg.zmtp.mechanism = &mcq_zmtp_mech_plain_client;
    ow.cfg.zmtp.mechanism_arg = &creds;
    on_shard(do_connect, ep);
    cr_assert(test_event_wait(&ow.ready_ev, 1, WAIT_S), "PLAIN client handshake with libzmq");
    zmq_close(r);
    cr_assert(test_event_wait(&ow.closed_ev, 1, WAIT_S));
    zap_stop(&zap);

    /* Our PLAIN server refuses our PLAIN client: the client hears ERROR and gives up. */
    ow.cfg.zmtp.mechanism = &mcq_zmtp_mech_plain_server;
    ow.cfg.zmtp.mechanism_arg = NULL;
    ow.user = "admin";
    ow.pass = "secret";
    own_listen();
    refused_client_cfg = ow.cfg;
    refused_client_cfg.zmtp.mechanism = &mcq_zmtp_mech_plain_client;
    refused_client_cfg.zmtp.mechanism_arg = &wrong_creds;
    tcp_ep(ep, sizeof(ep), ow.port);
    on_shard(do_connect_client, ep);
    /* Both ends close: the server side with -EACCES, the client with -ECONNREFUSED. */
    cr_assert(test_event_wait(&ow.closed_ev, 3, WAIT_S));
    pthread_mutex_lock(&ow.lock);
    unsigned closes = ow.closes;
    pthread_mutex_unlock(&ow.lock);
    /* No reconnect: no further closes within several reconnect intervals. */
    cr_assert_not(test_event_wait(&ow.closed_ev, closes + 1, 0.5), "refused client reconnected");
    cr_assert_eq(ow.readies, 1);
    zmq_ctx_term(ctx);
}

Test(peer, heartbeats_keep_a_quiet_connection_and_answer_libzmq)
{
    ow.cfg.zmtp.heartbeat_ivl_ms = HB_IVL_MS;
    ow.cfg.zmtp.heartbeat_timeout_ms = HB_TIMEOUT_MS;
    own_listen();
    void *ctx = zmq_ctx_new();
    void *d = zsock(ctx, ZMQ_DEALER);
    int ivl = HB_IVL_MS, to = HB_TIMEOUT_MS;
    zmq_setsockopt(d, ZMQ_HEARTBEAT_IVL, &ivl, sizeof(ivl));
    zmq_setsockopt(d, ZMQ_HEARTBEAT_TIMEOUT, &to, sizeof(to));
    zconnect(d, ow.port);
    const void *f[] = {"x"};
    size_t l[] = {1};
    dealer_roundtrip(d, 1, f, l);
    /* Quiet for several timeouts: both sides PING, both answer, nobody closes. */
    cr_assert_not(test_event_wait(&ow.closed_ev, 1, QUIET_S), "heartbeat closed a live peer");
    dealer_roundtrip(d, 1, f, l);
    zmq_close(d);
    zmq_ctx_term(ctx);
}

/* Our greeting (NULL, 3.1) and READY as a DEALER, written by hand. */
static void raw_handshake(int fd)
{
    uint8_t g[64] = {0xFF, 0, 0, 0, 0, 0, 0, 0, 1, 0x7F, 3, 1, 'N', 'U', 'L', 'L'};
    cr_assert_eq(send(fd, g, sizeof(g), 0), (ssize_t)sizeof(g));
    static const uint8_t ready[] = {0x04, 28,  5,   'R', 'E', 'A', 'D', 'Y', 11,  'S',
                                    'o',  'c', 'k', 'e', 't', '-', 'T', 'y', 'p', 'e',
                                    0,    0,   0,   6,   'D', 'E', 'A', 'L', 'E', 'R'};
    cr_assert_eq(send(fd, ready, sizeof(ready), 0), (ssize_t)sizeof(ready));
}

Test(peer, heartbeat_timeout_closes_a_silent_peer)
{
    ow.cfg.zmtp.heartbeat_ivl_ms = HB_IVL_MS;
    ow.cfg.zmtp.heartbeat_timeout_ms = HB_TIMEOUT_MS;
    own_listen();
    int fd = raw_connect(ow.port);
    raw_handshake(fd);
    cr_assert(test_event_wait(&ow.ready_ev, 1, WAIT_S));
    /* We read nothing and answer no PING: the peer must hang up on us. */
    cr_assert(test_event_wait(&ow.closed_ev, 1, WAIT_S), "silent peer not closed");
    cr_assert_eq(ow.last_reason, -ETIMEDOUT);
    close(fd);
}

Test(peer, garbage_client_closed_good_peer_unaffected)
{
    own_listen();
    void *ctx = zmq_ctx_new();
    void *d = zsock(ctx, ZMQ_DEALER);
    zconnect(d, ow.port);
    const void *f[] = {"before"};
    size_t l[] = {6};
    dealer_roundtrip(d, 1, f, l);
    int fd = raw_connect(ow.port);
    uint8_t junk[256];
    for (unsigned i = 0; i < sizeof(junk); i++)
        junk[i] = (uint8_t)(i * 7 + 3);
    cr_assert_eq(send(fd, junk, sizeof(junk), 0), (ssize_t)sizeof(junk));
    cr_assert(raw_closed_by_peer(fd), "garbage client still connected");
    cr_assert(test_event_wait(&ow.closed_ev, 1, WAIT_S));
    cr_assert_eq(ow.last_reason, -EPROTO);
    close(fd);
    const void *g[] = {"after", "still", "fine"};
    size_t gl[] = {5, 5, 4};
    dealer_roundtrip(d, 3, g, gl);
    zmq_close(d);
    zmq_ctx_term(ctx);
}

Test(peer, handshake_stall_closed_after_handshake_ivl)
{
    ow.cfg.zmtp.handshake_ivl_ms = 200;
    own_listen();
    int fd = raw_connect(ow.port);
    cr_assert(raw_closed_by_peer(fd), "stalled handshake not closed");
    cr_assert(test_event_wait(&ow.closed_ev, 1, WAIT_S));
    cr_assert_eq(ow.last_reason, -ETIMEDOUT);
    cr_assert_eq(ow.readies, 0);
    close(fd);
}

Test(peer, maxmsgsize_exceeded_closes)
{
    ow.cfg.zmtp.limits.max_frame_size = 1000;
    own_listen();
    void *ctx = zmq_ctx_new();
    void *d = zsock(ctx, ZMQ_DEALER);
    zconnect(d, ow.port);
    static uint8_t buf[2000];
    const void *f[] = {buf};
    size_t ok[] = {1000}, big[] = {2000};
    dealer_roundtrip(d, 1, f, ok);
    zsend_parts(d, 1, f, big);
    cr_assert(test_event_wait(&ow.closed_ev, 1, WAIT_S), "oversized message not refused");
    cr_assert_eq(ow.last_reason, -EPROTO);
    cr_assert_eq(ow.msgs, 1);
    zmq_close(d);
    zmq_ctx_term(ctx);
}

/* Sends 64 KiB messages to the last peer until the peer says -EAGAIN. */
#define HWM_MSG_BYTES (64u << 10)
#define HWM_MSGS 8u
#define HWM_SEND_MAX 100000u
#define FILL_ROUNDS 64u /* refills after writable(), until the kernel buffers are full too */

static void do_fill(struct mcq_shard *sh, void *arg)
{
    (void)arg;
    static uint8_t body[HWM_MSG_BYTES];
    ow.send_rc = 0;
    for (unsigned n = 0; n < HWM_SEND_MAX; n++) {
        struct mcq_msg *m = mcq_msg_new(sh);
        mcq_msg_append(m, &ow.sent, sizeof(ow.sent));
        mcq_msg_append(m, body, sizeof(body));
        int rc = mcq_peer_send(ow.last, m);
        if (rc < 0) {
            mcq_msg_free(m);
            ow.send_rc = rc;
            return;
        }
        ow.sent++;
    }
}

/* A quiet owner whose peers' send queues fill after a few do_fill messages. */
static void small_send_queue(void)
{
    ow.echo = false;
    ow.cfg.sndhwm = HWM_MSGS;
    ow.cfg.conn.sndq_max_bytes = 4 * HWM_MSG_BYTES;
}

/* A libzmq DEALER that buffers little (RCVHWM 1, 4 KiB SO_RCVBUF), so our sends back up. */
static void *slow_dealer(void *ctx)
{
    void *d = zsock(ctx, ZMQ_DEALER);
    int hwm = 1, rcvbuf = 4096;
    zmq_setsockopt(d, ZMQ_RCVHWM, &hwm, sizeof(hwm));
    zmq_setsockopt(d, ZMQ_RCVBUF, &rcvbuf, sizeof(rcvbuf));
    return d;
}

/* Connects d to our listener and sends one frame: once it arrived, its peer is ow.last. */
static void zconnect_announced(void *d)
{
    zconnect(d, ow.port);
    zmq_send(d, "0", 1, 0);
    cr_assert(test_event_wait(&ow.msg_ev, 1, WAIT_S));
}

/* Receives do_fill's messages first..end-1 on z: whole and in order; `what` names a loss. */
static void expect_filled(void *z, unsigned first, unsigned end, const char *what)
{
    for (unsigned i = first; i < end; i++) {
        struct rx r = {0};
        cr_assert(zrecv_parts(z, &r), "message %u of %u %s", i, end, what);
        cr_assert_eq(r.n, 2);
        cr_assert_eq(*(unsigned *)r.data[0], i, "out of order");
        cr_assert_eq(r.len[1], HWM_MSG_BYTES);
        rx_clear(&r);
    }
}

Test(peer, send_hwm_says_eagain_then_writable)
{
    small_send_queue();
    ow.cfg.conn.sndq_max_views = 1; /* full while any view waits: PONGs must wait in the peer */
    own_listen();
    void *ctx = zmq_ctx_new();
    void *d = slow_dealer(ctx);
    /* libzmq PINGs us all along; our PONGs must wait behind the backed-up data and still
     * land between whole messages (else libzmq would drop the connection and messages). */
    int ivl = 20, to = 10000;
    zmq_setsockopt(d, ZMQ_HEARTBEAT_IVL, &ivl, sizeof(ivl));
    zmq_setsockopt(d, ZMQ_HEARTBEAT_TIMEOUT, &to, sizeof(to));
    zconnect_announced(d);
    unsigned rounds = 0;
    do {
        on_shard(do_fill, NULL);
        cr_assert_eq(ow.send_rc, -EAGAIN, "send never reached the mark (%d)", ow.send_rc);
    } while (++rounds < FILL_ROUNDS &&
             test_event_wait(&ow.writable_ev, (int)rounds, PAUSE_QUIET_S));
    unsigned sent = ow.sent;
    cr_assert_geq(sent, HWM_MSGS);
    cr_assert_not(test_event_wait(&ow.closed_ev, 1, PAUSE_QUIET_S));
    /* Read everything: the queue drains and writable() fires. */
    expect_filled(d, 0, sent, "missing");
    cr_assert(test_event_wait(&ow.writable_ev, (int)rounds, WAIT_S), "no writable after draining");
    zmq_close(d);
    zmq_ctx_term(ctx);
}

static void do_resume(struct mcq_shard *sh, void *arg)
{
    (void)sh;
    (void)arg;
    mcq_peer_resume(ow.last);
}

Test(peer, pause_holds_input_and_resume_delivers_it_in_order)
{
    ow.echo = false;
    ow.pause_at = 1;
    own_listen();
    void *ctx = zmq_ctx_new();
    void *d = zsock(ctx, ZMQ_DEALER);
    zconnect(d, ow.port);
    for (unsigned i = 0; i < PAUSE_MSGS; i++) {
        char b[16];
        int n = snprintf(b, sizeof(b), "%u", i);
        const void *f[] = {b, "body"};
        size_t l[] = {(size_t)n, 4};
        zsend_parts(d, 2, f, l);
    }
    cr_assert(test_event_wait(&ow.msg_ev, 1, WAIT_S));
    cr_assert_not(test_event_wait(&ow.msg_ev, 2, PAUSE_QUIET_S), "delivered while paused");
    on_shard(do_resume, NULL);
    cr_assert(test_event_wait(&ow.msg_ev, PAUSE_MSGS, WAIT_S), "held input not delivered");
    cr_assert_eq(ow.seq_errors, 0, "out of order or lost");
    zmq_close(d);
    zmq_ctx_term(ctx);
}

Test(peer, ipc_accept_roundtrip)
{
    char ep[128];
    snprintf(ep, sizeof(ep), "ipc:///tmp/mcq-test-peer-%d.ipc", (int)getpid());
    struct mcq_conn_cfg cc = {.handler = &mcq_peer_listener_handler, .user = &ow.lst};
    cr_assert_eq(mcq_conn_listen(ow.rt, ep, &cc, &ow.l), 0);
    void *ctx = zmq_ctx_new();
    void *d = zsock(ctx, ZMQ_DEALER);
    cr_assert_eq(zmq_connect(d, ep), 0);
    const void *f[] = {"over", "", "ipc"};
    size_t l[] = {4, 0, 3};
    dealer_roundtrip(d, 3, f, l);
    zmq_close(d);
    zmq_ctx_term(ctx);
}

Test(peer, runtime_stop_closes_and_frees_every_peer)
{
    small_send_queue();
    own_listen();
    void *ctx = zmq_ctx_new();
    void *d = slow_dealer(ctx);
    zconnect_announced(d);
    /* An accepted peer with a full send queue, and a connecting peer that keeps failing. */
    on_shard(do_fill, NULL);
    cr_assert_eq(ow.send_rc, -EAGAIN);
    char ep[TCP_EP_MAX];
    tcp_ep(ep, sizeof(ep), free_port());
    on_shard(do_connect, ep);
    cr_assert_eq(ow.send_rc, 0);
    destroy_checked();
    cr_assert_eq(ow.closes, 2, "closed() calls at stop: %u", ow.closes);
    cr_assert_eq(ow.last_reason, -ECANCELED);
    cr_assert_not(ow.last_reconnecting);
    zmq_close(d);
    zmq_ctx_term(ctx);
}

/* A listening raw TCP socket on a free loopback port; *port gets the port. */
static int raw_listen(uint16_t *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert_geq(fd, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    cr_assert_eq(listen(fd, 4), 0);
    socklen_t l = sizeof(a);
    getsockname(fd, (struct sockaddr *)&a, &l);
    *port = ntohs(a.sin_port);
    return fd;
}

static int raw_accept(int lfd)
{
    struct pollfd pfd = {.fd = lfd, .events = POLLIN};
    cr_assert_eq(poll(&pfd, 1, (int)(WAIT_S * 1000)), 1, "no connection came");
    int fd = accept(lfd, NULL, NULL);
    cr_assert_geq(fd, 0);
    return fd;
}

Test(peer, reconnect_starts_fresh_no_half_message_carried_over)
{
    ow.echo = false;
    uint16_t port;
    int lfd = raw_listen(&port);
    char ep[TCP_EP_MAX];
    tcp_ep(ep, sizeof(ep), port);
    on_shard(do_connect, ep);
    int c1 = raw_accept(lfd);
    raw_handshake(c1);
    cr_assert(test_event_wait(&ow.ready_ev, 1, WAIT_S));
    static const uint8_t half[] = {0x01, 1, 'a'}; /* first frame, MORE set */
    cr_assert_eq(send(c1, half, sizeof(half), 0), (ssize_t)sizeof(half));
    close(c1);
    cr_assert(test_event_wait(&ow.closed_ev, 1, WAIT_S));
    cr_assert(ow.last_reconnecting);
    int c2 = raw_accept(lfd);
    raw_handshake(c2);
    cr_assert(test_event_wait(&ow.ready_ev, 2, WAIT_S));
    static const uint8_t last[] = {0x00, 1, 'b'};
    cr_assert_eq(send(c2, last, sizeof(last), 0), (ssize_t)sizeof(last));
    cr_assert(test_event_wait(&ow.msg_ev, 1, WAIT_S));
    const void *want[] = {"b"};
    size_t wl[] = {1};
    pthread_mutex_lock(&ow.lock);
    assert_rx(&ow.last_msg, 1, want, wl);
    pthread_mutex_unlock(&ow.lock);
    close(c2);
    close(lfd);
}

Test(peer, connect_retries_until_the_server_appears)
{
    uint16_t port = free_port();
    char ep[TCP_EP_MAX];
    tcp_ep(ep, sizeof(ep), port);
    on_shard(do_connect, ep);
    cr_assert_eq(ow.send_rc, 0);
    /* Refused attempts are silent and keep going (50 ms, backing off to 200 ms). */
    cr_assert_not(test_event_wait(&ow.closed_ev, 1, PAUSE_QUIET_S), "a failed attempt reported");
    void *ctx = zmq_ctx_new();
    void *r = zsock(ctx, ZMQ_ROUTER);
    cr_assert_eq(zmq_bind(r, ep), 0);
    cr_assert(test_event_wait(&ow.ready_ev, 1, WAIT_S), "never connected");
    zmq_close(r);
    zmq_ctx_term(ctx);
}

static void do_close_flush(struct mcq_shard *sh, void *arg)
{
    (void)sh;
    (void)arg;
    mcq_peer_close(ow.last, MCQ_CLOSE_FLUSH);
}

Test(peer, flush_close_delivers_every_queued_message)
{
    small_send_queue();
    own_listen();
    void *ctx = zmq_ctx_new();
    void *d = slow_dealer(ctx);
    zconnect_announced(d);
    on_shard(do_fill, NULL);
    cr_assert_eq(ow.send_rc, -EAGAIN);
    unsigned sent = ow.sent;
    on_shard(do_close_flush, NULL);
    expect_filled(d, 0, sent, "lost at close");
    cr_assert(test_event_wait(&ow.closed_ev, 1, WAIT_S));
    zmq_close(d);
    zmq_ctx_term(ctx);
}

Test(peer, sub_side_subscribes_to_libzmq_pub)
{
    ow.echo = false;
    ow.cfg.zmtp.socket_type = MCQ_ZMTP_SUB;
    ow.sub_topic = "A";
    void *ctx = zmq_ctx_new();
    void *pub = zsock(ctx, ZMQ_PUB);
    char ep[TCP_EP_MAX];
    zbind_free_and_connect(pub, ep, sizeof(ep));
    cr_assert_eq(ow.sub_rc, 0);
    /* PUB drops until our subscription arrives: publish until a message gets through. */
    bool got = false;
    for (int i = 0; i < (int)(WAIT_S * 100) && !got; i++) {
        zmq_send(pub, "B-no", 4, 0);
        zmq_send(pub, "A-yes", 5, 0);
        got = test_event_wait(&ow.msg_ev, 1, 0.01);
    }
    cr_assert(got, "subscription never took effect");
    pthread_mutex_lock(&ow.lock);
    cr_assert(ow.last_msg.n == 1 && ow.last_msg.len[0] == 5 &&
              memcmp(ow.last_msg.data[0], "A-yes", 5) == 0);
    pthread_mutex_unlock(&ow.lock);
    zmq_close(pub);
    zmq_ctx_term(ctx);
}

Test(peer, pub_side_hears_libzmq_sub_subscribe_and_cancel)
{
    ow.cfg.zmtp.socket_type = MCQ_ZMTP_PUB;
    own_listen();
    void *ctx = zmq_ctx_new();
    void *sub = zsock(ctx, ZMQ_SUB);
    zmq_setsockopt(sub, ZMQ_SUBSCRIBE, "topic", 5);
    zconnect(sub, ow.port);
    cr_assert(test_event_wait(&ow.sub_ev, 1, WAIT_S), "no SUBSCRIBE");
    zmq_setsockopt(sub, ZMQ_UNSUBSCRIBE, "topic", 5);
    cr_assert(test_event_wait(&ow.sub_ev, 2, WAIT_S), "no CANCEL");
    pthread_mutex_lock(&ow.lock);
    cr_assert_eq(ow.subs, 1);
    cr_assert_eq(ow.cancels, 1);
    cr_assert_str_eq(ow.sub_last, "topic");
    pthread_mutex_unlock(&ow.lock);
    zmq_close(sub);
    zmq_ctx_term(ctx);
}

Test(peer, connecting_send_hwm_then_writable_after_drain)
{
    ow.echo = false;
    ow.cfg.sndhwm = 4;
    void *ctx = zmq_ctx_new();
    void *pull = zsock(ctx, ZMQ_PULL);
    int hwm = 4, rcvbuf = 65536;
    zmq_setsockopt(pull, ZMQ_RCVHWM, &hwm, sizeof(hwm));
    zmq_setsockopt(pull, ZMQ_RCVBUF, &rcvbuf, sizeof(rcvbuf));
    char ep[TCP_EP_MAX];
    ow.cfg.zmtp.socket_type = MCQ_ZMTP_PUSH;
    zbind_free_and_connect(pull, ep, sizeof(ep));
    unsigned total = 0;
    for (unsigned round = 1; round <= 3; round++) {
        on_shard(do_fill, NULL);
        cr_assert_eq(ow.send_rc, -EAGAIN);
        expect_filled(pull, total, ow.sent, "missing");
        total = ow.sent;
        cr_assert(test_event_wait(&ow.writable_ev, (int)round, WAIT_S),
                  "round %u: no writable after draining", round);
    }
    zmq_close(pull);
    zmq_ctx_term(ctx);
}
