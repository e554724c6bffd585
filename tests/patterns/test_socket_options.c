/* Options that change what happens on the wire, against libzmq or a hand-driven client:
 * PLAIN server (our on_auth decides; without it everyone is refused) and client, MAXMSGSIZE,
 * HANDSHAKE_IVL, HEARTBEAT_IVL and HEARTBEAT_TIMEOUT. */
#include "socket_util.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdatomic.h>
#include <sys/socket.h>

TestSuite(socket_options, .init = t_setup, .fini = t_teardown, .timeout = 60);

static unsigned auth_calls;

static unsigned check_auth(struct mcq_shard *sh, struct mcq_socket *s,
                           const struct mcq_auth_request *req, void *user)
{
    (void)sh;
    (void)s;
    struct t_app *a = user;
    bool ok = req->username_len == 5 && memcmp(req->username, "admin", 5) == 0 &&
              req->password_len == 6 && memcmp(req->password, "secret", 6) == 0 &&
              strcmp(req->mechanism, "PLAIN") == 0 && strcmp(req->domain, "dom") == 0;
    pthread_mutex_lock(&a->lock);
    auth_calls++;
    pthread_cond_broadcast(&a->cond);
    pthread_mutex_unlock(&a->lock);
    return ok ? 200 : 400;
}

Test(socket_options, plain_server_uses_on_auth)
{
    char ep[256];
    struct mcq_socket_handlers h = {
        .on_msg = t_on_msg, .on_peer_up = t_on_up, .on_auth = check_auth, .user = &app};
    cr_assert_eq(mcq_socket_create(app.rt, MCQ_REP, &h, &app.s), 0);
    app.echo = true;
    t_setopt_int(MCQ_PLAIN_SERVER, 1);
    cr_assert_eq(mcq_setsockopt(app.s, MCQ_ZAP_DOMAIN, "dom", 3), 0);
    t_bind("tcp", ep, sizeof(ep));
    void *bad = z_socket(ZMQ_REQ);
    zmq_setsockopt(bad, ZMQ_PLAIN_USERNAME, "admin", 5);
    zmq_setsockopt(bad, ZMQ_PLAIN_PASSWORD, "wrong", 5);
    cr_assert_eq(zmq_connect(bad, ep), 0);
    cr_assert(t_wait_count(&auth_calls, 1, T_WAIT_S), "on_auth never asked");
    void *good = z_socket(ZMQ_REQ);
    zmq_setsockopt(good, ZMQ_PLAIN_USERNAME, "admin", 5);
    zmq_setsockopt(good, ZMQ_PLAIN_PASSWORD, "secret", 6);
    cr_assert_eq(zmq_connect(good, ep), 0);
    z_send_strs(good, "hi", NULL);
    struct t_rx r;
    cr_assert(z_recv(good, &r), "the good client was not served");
    cr_assert(rx_frame_is(&r, 0, "hi"));
    z_rx_clear(&r);
    pthread_mutex_lock(&app.lock);
    unsigned ups = app.ups;
    pthread_mutex_unlock(&app.lock);
    cr_assert_eq(ups, 1, "the refused client became a peer");
    z_close(bad);
    z_close(good);
}

/* Lines of `path` that contain `needle`. */
static unsigned count_lines(const char *path, const char *needle)
{
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f);
    char line[1024];
    unsigned n = 0;
    while (fgets(line, sizeof(line), f))
        n += strstr(line, needle) != NULL;
    fclose(f);
    return n;
}

#define REFUSE_QUIET_S 0.5 /* a reconnecting client would have come back several times */
#define LOG_POLL_NS 5000000L

/* PLAIN_SERVER without on_auth refuses (libzmq 4.3 without a ZAP handler fails the
 * handshake too): the libzmq client is never served, no peer comes up, and the log has one
 * line naming the client and the cause, and no more (the client heard ERROR and stays
 * away). */
Test(socket_options, plain_server_without_on_auth_refuses)
{
    char ep[256], log_path[] = "/tmp/mcq-plain-log-XXXXXX";
    int log_fd = mkstemp(log_path);
    cr_assert_geq(log_fd, 0);
    fflush(stderr);
    int saved_err = dup(2);
    dup2(log_fd, 2);
    t_socket(MCQ_REP);
    app.echo = true;
    t_setopt_int(MCQ_PLAIN_SERVER, 1);
    t_bind("tcp", ep, sizeof(ep));
    void *c = z_socket(ZMQ_REQ);
    zmq_setsockopt(c, ZMQ_PLAIN_USERNAME, "admin", 5);
    zmq_setsockopt(c, ZMQ_PLAIN_PASSWORD, "secret", 6);
    cr_assert_eq(zmq_connect(c, ep), 0);
    z_send_strs(c, "hi", NULL);
    struct timespec until = deadline_in(T_WAIT_S), now;
    unsigned lines = 0;
    do {
        nanosleep(&(struct timespec){0, LOG_POLL_NS}, NULL);
        lines = count_lines(log_path, "no on_auth handler");
        clock_gettime(CLOCK_MONOTONIC, &now);
    } while (lines == 0 && now.tv_sec <= until.tv_sec);
    struct t_rx r;
    int v = (int)(REFUSE_QUIET_S * 1000);
    zmq_setsockopt(c, ZMQ_RCVTIMEO, &v, sizeof(v));
    bool served = z_recv(c, &r);
    unsigned later = count_lines(log_path, "no on_auth handler");
    unsigned with_client = count_lines(log_path, "refusing PLAIN client tcp://127.0.0.1:");
    fflush(stderr);
    dup2(saved_err, 2);
    close(saved_err);
    close(log_fd);
    unlink(log_path);
    cr_assert_not(served, "a refused client was served");
    cr_assert_eq(lines, 1, "no refusal logged");
    cr_assert_eq(later, 1, "%u refusal lines for one client", later);
    cr_assert_eq(with_client, 1, "the line does not name the client");
    pthread_mutex_lock(&app.lock);
    unsigned ups = app.ups, nrx = app.nrx;
    pthread_mutex_unlock(&app.lock);
    cr_assert_eq(ups, 0, "the refused client became a peer");
    cr_assert_eq(nrx, 0);
}

/* A ZAP handler for the libzmq side (RFC 27): accepts everyone and remembers the last
 * PLAIN user name it was shown. */
struct zap_handler {
    void *rep;
    pthread_t thread;
    _Atomic bool stop;
    char user[64];
};

static void *zap_main(void *arg)
{
    struct zap_handler *z = arg;
    while (!atomic_load(&z->stop)) {
        zmq_pollitem_t it = {.socket = z->rep, .events = ZMQ_POLLIN};
        if (zmq_poll(&it, 1, 20) <= 0)
            continue;
        struct t_rx req;
        if (!z_recv(z->rep, &req))
            continue;
        /* version, request id, domain, address, identity, mechanism, user, password */
        if (req.n >= 8 && req.len[6] < sizeof(z->user))
            memcpy(z->user, req.data[6], req.len[6] + 1);
        const char *reply[] = {"1.0", req.n > 1 ? (char *)req.data[1] : "", "200", "OK", "", ""};
        for (unsigned i = 0; i < 6; i++)
            zmq_send(z->rep, reply[i], strlen(reply[i]), i < 5 ? ZMQ_SNDMORE : 0);
        z_rx_clear(&req);
    }
    return NULL;
}

/* Our DEALER as PLAIN client of a libzmq PLAIN server: the credentials reach its ZAP. */
Test(socket_options, plain_client_handshakes)
{
    char ep[256];
    static struct zap_handler zap;
    zap.rep = z_socket(ZMQ_REP);
    cr_assert_eq(zmq_bind(zap.rep, "inproc://zeromq.zap.01"), 0);
    atomic_store(&zap.stop, false);
    cr_assert_eq(pthread_create(&zap.thread, NULL, zap_main, &zap), 0);
    void *r = z_socket(ZMQ_ROUTER);
    int one = 1;
    zmq_setsockopt(r, ZMQ_PLAIN_SERVER, &one, sizeof(one));
    z_bind(r, "tcp", ep, sizeof(ep));
    t_socket(MCQ_DEALER);
    cr_assert_eq(mcq_setsockopt(app.s, MCQ_PLAIN_USERNAME, "u", 1), 0);
    cr_assert_eq(mcq_setsockopt(app.s, MCQ_PLAIN_PASSWORD, "p", 1), 0);
    cr_assert_eq(mcq_connect(app.s, ep), 0);
    struct t_send j = {.nf = 1, .f = {"over-plain"}, .len = {10}};
    int rc = t_send_job_wait(0, &j);
    atomic_store(&zap.stop, true);
    pthread_join(zap.thread, NULL);
    cr_assert_eq(rc, 0, "no PLAIN handshake");
    struct t_rx m;
    cr_assert(z_recv(r, &m));
    cr_assert(rx_frame_is(&m, 1, "over-plain"));
    z_rx_clear(&m);
    cr_assert_str_eq(zap.user, "u");
    char user[16];
    size_t len = sizeof(user);
    cr_assert_eq(mcq_getsockopt(app.s, MCQ_PLAIN_USERNAME, user, &len), 0);
    cr_assert_str_eq(user, "u");
}

/* MAXMSGSIZE 100: a 50-byte frame passes, a 200-byte one closes the peer undelivered. */
Test(socket_options, maxmsgsize_closes_offender)
{
    char ep[256];
    t_socket(MCQ_PULL);
    int64_t max = 100;
    cr_assert_eq(mcq_setsockopt(app.s, MCQ_MAXMSGSIZE, &max, sizeof(max)), 0);
    t_bind("ipc", ep, sizeof(ep));
    void *z = z_socket(ZMQ_PUSH);
    cr_assert_eq(zmq_connect(z, ep), 0);
    char small[50], big[200];
    memset(small, 's', sizeof(small));
    memset(big, 'b', sizeof(big));
    cr_assert_eq(zmq_send(z, small, sizeof(small), 0), (int)sizeof(small));
    struct t_rx *in = t_recv(T_WAIT_S);
    cr_assert_not_null(in);
    cr_assert_eq(in->len[0], sizeof(small));
    t_free_rx(in);
    cr_assert_eq(zmq_send(z, big, sizeof(big), 0), (int)sizeof(big));
    cr_assert(t_wait_count(&app.downs, 1, T_WAIT_S), "oversized message did not close the peer");
    in = t_recv(0.2);
    cr_assert(!in || in->len[0] != sizeof(big), "oversized message delivered");
    t_free_rx(in);
    int64_t got = 0;
    size_t len = sizeof(got);
    cr_assert_eq(mcq_getsockopt(app.s, MCQ_MAXMSGSIZE, &got, &len), 0);
    cr_assert_eq(got, 100);
}

/* --- timers, against a hand-driven TCP client ------------------------------------------------ */

static int tcp_client(const char *endpoint)
{
    const char *colon = strrchr(endpoint, ':');
    cr_assert_not_null(colon);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert_geq(fd, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(colon + 1))};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_eq(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    return fd;
}

/* Reads (and ignores) what the server sends until it hangs up; false if it did not within
 * the wait. */
static bool hung_up_within(int fd, double seconds)
{
    struct timespec until = deadline_in(seconds), now;
    for (;;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int n = poll(&p, 1, 50);
        if (n > 0) {
            uint8_t buf[512];
            if (recv(fd, buf, sizeof(buf), 0) <= 0)
                return true;
        }
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (now.tv_sec > until.tv_sec ||
            (now.tv_sec == until.tv_sec && now.tv_nsec >= until.tv_nsec))
            return false;
    }
}

/* HANDSHAKE_IVL 150 ms: a client that never greets is dropped long before the 30 s default. */
Test(socket_options, handshake_ivl_drops_silent_client)
{
    char ep[256];
    t_socket(MCQ_ROUTER);
    t_setopt_int(MCQ_HANDSHAKE_IVL, 150);
    t_bind("tcp", ep, sizeof(ep));
    int fd = tcp_client(ep);
    cr_assert(hung_up_within(fd, 5.0), "silent client kept past HANDSHAKE_IVL");
    close(fd);
}

/* HEARTBEAT_IVL 50 / HEARTBEAT_TIMEOUT 200 ms: a peer that completes the handshake and then
 * never answers our PINGs is dropped (on_peer_down). */
Test(socket_options, heartbeat_drops_mute_peer)
{
    char ep[256];
    t_socket(MCQ_DEALER);
    t_setopt_int(MCQ_HEARTBEAT_IVL, 50);
    t_setopt_int(MCQ_HEARTBEAT_TIMEOUT, 200);
    t_bind("tcp", ep, sizeof(ep));
    int fd = tcp_client(ep);
    /* ZMTP 3.1 greeting for NULL, then READY announcing a DEALER (RFC 23/37). */
    uint8_t greeting[64] = {0xFF, 0, 0, 0, 0, 0, 0, 0, 1, 0x7F, 3, 1, 'N', 'U', 'L', 'L'};
    const char prop[] = "\x0bSocket-Type\x00\x00\x00\x06"
                        "DEALER";
    uint8_t ready[2 + 6 + sizeof(prop) - 1] = {0x04, 6 + sizeof(prop) - 1, 5, 'R', 'E', 'A', 'D',
                                               'Y'};
    memcpy(ready + 8, prop, sizeof(prop) - 1);
    cr_assert_eq(send(fd, greeting, sizeof(greeting), 0), (ssize_t)sizeof(greeting));
    cr_assert_eq(send(fd, ready, sizeof(ready), 0), (ssize_t)sizeof(ready));
    cr_assert(t_wait_count(&app.ups, 1, T_WAIT_S), "handshake by hand failed");
    cr_assert(t_wait_count(&app.downs, 1, T_WAIT_S), "mute peer kept past HEARTBEAT_TIMEOUT");
    cr_assert(hung_up_within(fd, 5.0));
    close(fd);
}
