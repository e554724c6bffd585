/* End-to-end tests of the apps (apps/): each runs as a user would run it, as a child
 * process, with libzmq sockets in this process as clients, workers and peers. Apps bind
 * port 0 and report the real endpoint on stderr ("listening on ..."), and the tests wait
 * for their "ready" line instead of sleeping. */
#include <zmq.h>

#include "apps/proc_util.h"

#ifndef MCQ_ECHO_BIN
#error "tests/CMakeLists.txt defines MCQ_ECHO_BIN, MCQ_BROKER_BIN and MCQ_CAT_BIN"
#endif

/* Receive/send timeout on every libzmq socket here, in ms: no test can hang on one. */
#define ZMQ_WAIT_MS 10000
#define MAX_PARTS 8
#define PART_LEN 4096

static void *ctx;

static void setup(void)
{
    ctx = zmq_ctx_new();
    cr_assert(ctx);
}

static void teardown(void)
{
    proc_reap_all();
    /* Not zmq_ctx_term: after a failed assertion sockets are still open and term would
     * block; each test is its own process anyway. */
    zmq_ctx_shutdown(ctx);
}

TestSuite(apps, .init = setup, .fini = teardown, .timeout = 60);

static void *zsock(int type)
{
    void *s = zmq_socket(ctx, type);
    cr_assert(s);
    int v = 0;
    zmq_setsockopt(s, ZMQ_LINGER, &v, sizeof(v));
    v = ZMQ_WAIT_MS;
    zmq_setsockopt(s, ZMQ_RCVTIMEO, &v, sizeof(v));
    zmq_setsockopt(s, ZMQ_SNDTIMEO, &v, sizeof(v));
    return s;
}

static void *zconnect(int type, const char *ep)
{
    void *s = zsock(type);
    cr_assert(zmq_connect(s, ep) == 0, "connect %s: %s", ep, zmq_strerror(zmq_errno()));
    return s;
}

/* Binds a libzmq socket on a free loopback port; its endpoint goes to ep. */
static void *zbind(int type, char *ep, size_t cap)
{
    void *s = zsock(type);
    cr_assert(zmq_bind(s, "tcp://127.0.0.1:*") == 0);
    cr_assert(zmq_getsockopt(s, ZMQ_LAST_ENDPOINT, ep, &cap) == 0);
    return s;
}

struct parts {
    unsigned n;
    size_t len[MAX_PARTS];
    char data[MAX_PARTS][PART_LEN];
};

static void zsend_bytes(void *s, unsigned n, const void *const *data, const size_t *len)
{
    for (unsigned i = 0; i < n; i++)
        cr_assert(zmq_send(s, data[i], len[i], i + 1 < n ? ZMQ_SNDMORE : 0) == (int)len[i],
                  "zmq_send: %s", zmq_strerror(zmq_errno()));
}

/* Sends n string frames. */
static void zsend_strs(void *s, unsigned n, const char *const *strs)
{
    const void *data[MAX_PARTS];
    size_t len[MAX_PARTS];
    for (unsigned i = 0; i < n; i++) {
        data[i] = strs[i];
        len[i] = strlen(strs[i]);
    }
    zsend_bytes(s, n, data, len);
}

static void zrecv_parts(void *s, struct parts *p)
{
    p->n = 0;
    int more = 1;
    while (more) {
        cr_assert(p->n < MAX_PARTS);
        int n = zmq_recv(s, p->data[p->n], PART_LEN - 1, 0);
        cr_assert(n >= 0, "zmq_recv: %s", zmq_strerror(zmq_errno()));
        p->len[p->n] = (size_t)n;
        p->data[p->n][n < PART_LEN ? n : PART_LEN - 1] = '\0';
        p->n++;
        size_t sz = sizeof(more);
        zmq_getsockopt(s, ZMQ_RCVMORE, &more, &sz);
    }
}

/* Asserts the message in p is exactly the n string frames in strs. */
static void expect_strs(const struct parts *p, unsigned n, const char *const *strs)
{
    cr_assert_eq(p->n, n, "expected %u frames, got %u", n, p->n);
    for (unsigned i = 0; i < n; i++)
        cr_assert(p->len[i] == strlen(strs[i]) && memcmp(p->data[i], strs[i], p->len[i]) == 0,
                  "frame %u: expected '%s', got '%.*s'", i, strs[i], (int)p->len[i], p->data[i]);
}

/* Connects a libzmq socket and waits until its handshake with the app finished (monitor
 * event), so the app knows the peer before the test goes on. */
static void *zconnect_handshaken(int type, const char *ep)
{
    static unsigned seq;
    char addr[64];
    snprintf(addr, sizeof(addr), "inproc://mon-%u", seq++);
    void *s = zsock(type);
    cr_assert(zmq_socket_monitor(s, addr, ZMQ_EVENT_HANDSHAKE_SUCCEEDED) == 0);
    void *mon = zconnect(ZMQ_PAIR, addr);
    cr_assert(zmq_connect(s, ep) == 0);
    struct parts ev;
    zrecv_parts(mon, &ev);
    uint16_t event;
    memcpy(&event, ev.data[0], sizeof(event));
    cr_assert_eq(event, ZMQ_EVENT_HANDSHAKE_SUCCEEDED);
    zmq_socket_monitor(s, NULL, 0);
    zmq_close(mon);
    return s;
}

static struct proc *start_app(const char *const *argv)
{
    struct proc *p = proc_spawn(argv);
    proc_wait_ready(p);
    return p;
}

/* --- mcq-echo ------------------------------------------------------------------------------ */

#define ECHO_CLIENTS 16
#define ECHO_ROUNDS 20

Test(apps, echo_req_and_dealer_clients_multipart_on_two_shards)
{
    struct proc *echo = start_app(
        (const char *[]){MCQ_ECHO_BIN, "--bind", "tcp://127.0.0.1:0", "--shards", "2", NULL});
    cr_assert_eq(echo->nendpoints, 1);
    const char *ep = echo->endpoints[0];
    void *req[ECHO_CLIENTS], *dealer[ECHO_CLIENTS];
    for (int i = 0; i < ECHO_CLIENTS; i++) {
        req[i] = zconnect(ZMQ_REQ, ep);
        dealer[i] = zconnect(ZMQ_DEALER, ep);
    }
    /* All clients have a request outstanding at once, so both shards serve at the same time. */
    for (int round = 0; round < ECHO_ROUNDS; round++) {
        char a[32], b[32];
        for (int i = 0; i < ECHO_CLIENTS; i++) {
            snprintf(a, sizeof(a), "req-%d", i);
            snprintf(b, sizeof(b), "round-%d", round);
            zsend_strs(req[i], 3, (const char *[]){a, b, ""});
            zsend_strs(dealer[i], 2, (const char *[]){a, b});
        }
        for (int i = 0; i < ECHO_CLIENTS; i++) {
            struct parts p;
            snprintf(a, sizeof(a), "req-%d", i);
            snprintf(b, sizeof(b), "round-%d", round);
            zrecv_parts(req[i], &p);
            expect_strs(&p, 3, (const char *[]){a, b, ""});
            zrecv_parts(dealer[i], &p);
            expect_strs(&p, 2, (const char *[]){a, b});
        }
    }
    for (int i = 0; i < ECHO_CLIENTS; i++) {
        zmq_close(req[i]);
        zmq_close(dealer[i]);
    }
    cr_assert_eq(proc_signal_and_wait(echo, SIGTERM), 0, "stderr:\n%s", echo->errlog);
}

Test(apps, echo_disconnects_only_the_peer_over_max_msg_size)
{
    struct proc *echo =
        start_app((const char *[]){MCQ_ECHO_BIN, "--bind", "tcp://127.0.0.1:0", "--shards", "2",
                                   "--max-msg-size", "1000", NULL});
    const char *ep = echo->endpoints[0];
    void *big = zconnect(ZMQ_DEALER, ep), *ok = zconnect(ZMQ_DEALER, ep);
    struct parts p;
    zsend_strs(big, 1, (const char *[]){"small"});
    zrecv_parts(big, &p);
    expect_strs(&p, 1, (const char *[]){"small"});
    cr_assert(zmq_socket_monitor(big, "inproc://big-mon", ZMQ_EVENT_DISCONNECTED) == 0);
    void *mon = zconnect(ZMQ_PAIR, "inproc://big-mon");
    static char huge[2000];
    memset(huge, 'x', sizeof(huge));
    cr_assert(zmq_send(big, huge, sizeof(huge), 0) == sizeof(huge));
    struct parts ev;
    zrecv_parts(mon, &ev);
    uint16_t event;
    memcpy(&event, ev.data[0], sizeof(event));
    cr_assert_eq(event, ZMQ_EVENT_DISCONNECTED, "the oversized sender was not disconnected");
    zmq_socket_monitor(big, NULL, 0);
    zmq_close(mon);
    /* The other client is unaffected. */
    for (int i = 0; i < 10; i++) {
        char body[16];
        snprintf(body, sizeof(body), "m%d", i);
        zsend_strs(ok, 2, (const char *[]){body, "tail"});
        zrecv_parts(ok, &p);
        expect_strs(&p, 2, (const char *[]){body, "tail"});
    }
    zmq_close(big);
    zmq_close(ok);
    cr_assert_eq(proc_signal_and_wait(echo, SIGINT), 0, "stderr:\n%s", echo->errlog);
}

#define SLOW_READER_MSGS 20000
#define SLOW_READER_BODY 1024

/* Body i: its number, then filler. */
static void slow_body(char *body, int i)
{
    memset(body, 'b', SLOW_READER_BODY);
    body[snprintf(body, SLOW_READER_BODY, "n%d", i)] = '.';
}

Test(apps, echo_holds_replies_for_a_slow_reader_in_order)
{
    struct proc *echo = start_app(
        (const char *[]){MCQ_ECHO_BIN, "--bind", "tcp://127.0.0.1:0", "--shards", "2", NULL});
    /* A small receive buffer and HWM on the client, and 20 MB of replies it does not read
     * yet: the echo's queue for it passes its send HWM (1000) and replies must wait. */
    void *d = zsock(ZMQ_DEALER);
    int small = 4096, hwm = 10;
    zmq_setsockopt(d, ZMQ_RCVBUF, &small, sizeof(small));
    zmq_setsockopt(d, ZMQ_RCVHWM, &hwm, sizeof(hwm));
    cr_assert(zmq_connect(d, echo->endpoints[0]) == 0);
    static char body[SLOW_READER_BODY];
    for (int i = 0; i < SLOW_READER_MSGS; i++) {
        slow_body(body, i);
        cr_assert(zmq_send(d, body, sizeof(body), 0) == sizeof(body));
    }
    for (int i = 0; i < SLOW_READER_MSGS; i++) {
        static char got[SLOW_READER_BODY + 1];
        slow_body(body, i);
        cr_assert(zmq_recv(d, got, sizeof(got), 0) == sizeof(body), "reply %d missing", i);
        cr_assert(memcmp(got, body, sizeof(body)) == 0, "reply %d out of order", i);
    }
    zmq_close(d);
    cr_assert_eq(proc_signal_and_wait(echo, SIGTERM), 0, "stderr:\n%s", echo->errlog);
}

Test(apps, echo_binds_several_endpoints_tcp_and_ipc)
{
    char ipc[128];
    snprintf(ipc, sizeof(ipc), "ipc:///tmp/mcq-echo-test-%d.sock", (int)getpid());
    struct proc *echo = start_app((const char *[]){MCQ_ECHO_BIN, "--bind", "tcp://127.0.0.1:0",
                                                   "--bind", ipc, "--shards", "2", NULL});
    cr_assert_eq(echo->nendpoints, 2);
    for (unsigned e = 0; e < 2; e++) {
        void *s = zconnect(ZMQ_REQ, echo->endpoints[e]);
        struct parts p;
        zsend_strs(s, 1, (const char *[]){"ping"});
        zrecv_parts(s, &p);
        expect_strs(&p, 1, (const char *[]){"ping"});
        zmq_close(s);
    }
    cr_assert_eq(proc_signal_and_wait(echo, SIGTERM), 0, "stderr:\n%s", echo->errlog);
}

/* --- mcq-broker ---------------------------------------------------------------------------- */

#define BROKER_CLIENTS 8
#define BROKER_REQUESTS 25
#define BROKER_REP_WORKERS 3
#define BROKER_WORKERS (BROKER_REP_WORKERS + 1)

Test(apps, broker_routes_every_reply_to_its_client_and_spreads_over_workers)
{
    struct proc *broker =
        start_app((const char *[]){MCQ_BROKER_BIN, "--frontend", "tcp://127.0.0.1:0", "--backend",
                                   "tcp://127.0.0.1:0", "--shards", "2", NULL});
    cr_assert_eq(broker->nendpoints, 2);
    const char *front = broker->endpoints[0], *back = broker->endpoints[1];
    /* Workers first, each handshaken, so round-robin has all of them from the start. */
    void *worker[BROKER_WORKERS];
    for (int w = 0; w < BROKER_WORKERS; w++) {
        worker[w] = zconnect_handshaken(w < BROKER_REP_WORKERS ? ZMQ_REP : ZMQ_DEALER, back);
    }
    void *client[BROKER_CLIENTS];
    int sent[BROKER_CLIENTS] = {0}, answered[BROKER_CLIENTS] = {0}, served[BROKER_WORKERS] = {0};
    for (int c = 0; c < BROKER_CLIENTS; c++)
        client[c] = zconnect(ZMQ_REQ, front);
    char body[64];
    for (int c = 0; c < BROKER_CLIENTS; c++) {
        snprintf(body, sizeof(body), "c%d-r%d", c, sent[c]++);
        zsend_strs(client[c], 1, (const char *[]){body});
    }
    int total = 0;
    long deadline = proc_now_ms() + PROC_WAIT_MS;
    while (total < BROKER_CLIENTS * BROKER_REQUESTS) {
        cr_assert(proc_now_ms() < deadline, "only %d replies arrived", total);
        zmq_pollitem_t items[BROKER_WORKERS + BROKER_CLIENTS];
        for (int w = 0; w < BROKER_WORKERS; w++)
            items[w] = (zmq_pollitem_t){.socket = worker[w], .events = ZMQ_POLLIN};
        for (int c = 0; c < BROKER_CLIENTS; c++)
            items[BROKER_WORKERS + c] = (zmq_pollitem_t){.socket = client[c], .events = ZMQ_POLLIN};
        cr_assert(zmq_poll(items, BROKER_WORKERS + BROKER_CLIENTS, 1000) >= 0);
        for (int w = 0; w < BROKER_WORKERS; w++) {
            if (!(items[w].revents & ZMQ_POLLIN))
                continue;
            struct parts p;
            zrecv_parts(worker[w], &p);
            /* A REP worker sees the body; a DEALER worker sees [client id, "", body]. */
            const void *data[MAX_PARTS];
            size_t len[MAX_PARTS];
            char reply[PART_LEN + 8];
            unsigned last = p.n - 1;
            cr_assert(w < BROKER_REP_WORKERS ? p.n == 1 : p.n == 3 && p.len[1] == 0);
            for (unsigned i = 0; i < last; i++) {
                data[i] = p.data[i];
                len[i] = p.len[i];
            }
            snprintf(reply, sizeof(reply), "re:%s", p.data[last]);
            data[last] = reply;
            len[last] = strlen(reply);
            zsend_bytes(worker[w], p.n, data, len);
            served[w]++;
        }
        for (int c = 0; c < BROKER_CLIENTS; c++) {
            if (!(items[BROKER_WORKERS + c].revents & ZMQ_POLLIN))
                continue;
            struct parts p;
            zrecv_parts(client[c], &p);
            char want[80];
            snprintf(want, sizeof(want), "re:c%d-r%d", c, answered[c]);
            expect_strs(&p, 1, (const char *[]){want});
            answered[c]++;
            total++;
            if (sent[c] < BROKER_REQUESTS) {
                snprintf(body, sizeof(body), "c%d-r%d", c, sent[c]++);
                zsend_strs(client[c], 1, (const char *[]){body});
            }
        }
    }
    for (int w = 0; w < BROKER_WORKERS; w++)
        cr_assert_gt(served[w], 0, "worker %d got no request", w);
    for (int c = 0; c < BROKER_CLIENTS; c++)
        zmq_close(client[c]);
    for (int w = 0; w < BROKER_WORKERS; w++)
        zmq_close(worker[w]);
    cr_assert_eq(proc_signal_and_wait(broker, SIGTERM), 0, "stderr:\n%s", broker->errlog);
}

Test(apps, broker_holds_requests_until_a_worker_connects_and_serves_dealers)
{
    struct proc *broker = start_app((const char *[]){
        MCQ_BROKER_BIN, "--frontend", "tcp://127.0.0.1:0", "--backend", "tcp://127.0.0.1:0", NULL});
    void *client = zconnect_handshaken(ZMQ_REQ, broker->endpoints[0]);
    zsend_strs(client, 2, (const char *[]){"early", "bird"});
    void *worker = zconnect(ZMQ_REP, broker->endpoints[1]);
    struct parts p;
    zrecv_parts(worker, &p);
    expect_strs(&p, 2, (const char *[]){"early", "bird"});
    zsend_strs(worker, 1, (const char *[]){"worm"});
    zrecv_parts(client, &p);
    expect_strs(&p, 1, (const char *[]){"worm"});
    /* A DEALER client speaking the REQ envelope itself gets the same service. */
    void *dealer = zconnect(ZMQ_DEALER, broker->endpoints[0]);
    zsend_strs(dealer, 2, (const char *[]){"", "from dealer"});
    zrecv_parts(worker, &p);
    expect_strs(&p, 1, (const char *[]){"from dealer"});
    zsend_strs(worker, 1, (const char *[]){"to dealer"});
    zrecv_parts(dealer, &p);
    expect_strs(&p, 2, (const char *[]){"", "to dealer"});
    zmq_close(dealer);
    zmq_close(client);
    zmq_close(worker);
    cr_assert_eq(proc_signal_and_wait(broker, SIGINT), 0, "stderr:\n%s", broker->errlog);
}

#define FLOOD_MAX 80000u        /* requests offered; far past MCQ_HELD_MAX (65536) */
#define FLOOD_BYTES 1024        /* per request */
#define FLOOD_SNDBUF (64 << 10) /* the client's socket buffer: no autotuning */
#define FLOOD_BLOCKED_MS 300    /* a send blocked this long means backpressure */

/* With no worker, a client floods the broker: once its shard holds BROKER_PAUSE_AT requests
 * it stops reading the client, whose sends block well before the broker's own bound
 * (which would drop); then a worker connects and every request offered is answered. */
Test(apps, broker_backpressures_clients_instead_of_dropping)
{
    struct proc *broker = start_app((const char *[]){
        MCQ_BROKER_BIN, "--frontend", "tcp://127.0.0.1:0", "--backend", "tcp://127.0.0.1:0", NULL});
    void *client = zsock(ZMQ_DEALER);
    int v = 1;
    zmq_setsockopt(client, ZMQ_SNDHWM, &v, sizeof(v));
    v = FLOOD_SNDBUF;
    zmq_setsockopt(client, ZMQ_SNDBUF, &v, sizeof(v));
    v = FLOOD_BLOCKED_MS;
    zmq_setsockopt(client, ZMQ_SNDTIMEO, &v, sizeof(v));
    cr_assert_eq(zmq_connect(client, broker->endpoints[0]), 0);
    static char body[FLOOD_BYTES];
    unsigned sent = 0;
    while (sent < FLOOD_MAX) {
        memcpy(body, &sent, sizeof(sent));
        if (zmq_send(client, body, sizeof(body), 0) < 0)
            break;
        sent++;
    }
    cr_assert_lt(sent, FLOOD_MAX, "the broker never pushed back (%u requests taken)", sent);
    cr_assert_eq(zmq_errno(), EAGAIN);
    void *worker = zconnect(ZMQ_DEALER, broker->endpoints[1]);
    unsigned answered = 0;
    long deadline = proc_now_ms() + PROC_WAIT_MS;
    while (answered < sent) {
        cr_assert(proc_now_ms() < deadline, "%u of %u requests answered", answered, sent);
        zmq_pollitem_t items[2] = {{.socket = worker, .events = ZMQ_POLLIN},
                                   {.socket = client, .events = ZMQ_POLLIN}};
        cr_assert(zmq_poll(items, 2, 1000) >= 0);
        while (items[0].revents & ZMQ_POLLIN) {
            /* [client id][body]: straight back. */
            char id[256];
            int n = zmq_recv(worker, id, sizeof(id), ZMQ_DONTWAIT);
            if (n < 0)
                break;
            int m = zmq_recv(worker, body, sizeof(body), 0);
            cr_assert_eq(m, FLOOD_BYTES);
            cr_assert_eq(zmq_send(worker, id, (size_t)n, ZMQ_SNDMORE), n);
            cr_assert_eq(zmq_send(worker, body, sizeof(body), 0), FLOOD_BYTES);
        }
        while (items[1].revents & ZMQ_POLLIN) {
            int m = zmq_recv(client, body, sizeof(body), ZMQ_DONTWAIT);
            if (m < 0)
                break;
            cr_assert_eq(m, FLOOD_BYTES);
            unsigned seq;
            memcpy(&seq, body, sizeof(seq));
            cr_assert_eq(seq, answered, "reply %u out of order (%u)", answered, seq);
            answered++;
        }
    }
    cr_log_info("the broker pushed back after %u requests of %d bytes", sent, FLOOD_BYTES);
    zmq_close(client);
    zmq_close(worker);
    cr_assert_eq(proc_signal_and_wait(broker, SIGINT), 0, "stderr:\n%s", broker->errlog);
}

/* --- mcq-cat ------------------------------------------------------------------------------- */

static void expect_line(struct proc *p, const char *want)
{
    char line[PROC_BUF];
    cr_assert(proc_out_line(p, line, sizeof(line)) >= 0,
              "no output line (wanted '%s'); stderr:\n%s", want, p->errlog);
    cr_assert_str_eq(line, want);
}

Test(apps, cat_req_against_libzmq_rep)
{
    char ep[256];
    void *rep = zbind(ZMQ_REP, ep, sizeof(ep));
    struct proc *cat = start_app((const char *[]){MCQ_CAT_BIN, "REQ", "--connect", ep, NULL});
    proc_write(cat, "hello\nmulti\tpart\n");
    proc_close_stdin(cat);
    struct parts p;
    zrecv_parts(rep, &p);
    expect_strs(&p, 1, (const char *[]){"hello"});
    zsend_strs(rep, 1, (const char *[]){"world"});
    expect_line(cat, "world");
    zrecv_parts(rep, &p);
    expect_strs(&p, 2, (const char *[]){"multi", "part"});
    zsend_strs(rep, 2, (const char *[]){"two", "frames"});
    expect_line(cat, "two\tframes");
    /* stdin is done and the last reply printed. */
    cr_assert_eq(proc_wait_exit(cat, PROC_WAIT_MS), 0, "stderr:\n%s", cat->errlog);
    zmq_close(rep);
}

Test(apps, cat_req_waits_for_a_server_that_starts_later)
{
    /* A free port: bind, note it, close. The cat connects there before anyone listens. */
    char ep[256];
    zmq_close(zbind(ZMQ_REP, ep, sizeof(ep)));
    struct proc *cat = start_app((const char *[]){MCQ_CAT_BIN, "REQ", "--connect", ep, NULL});
    proc_write(cat, "anyone?\n");
    proc_close_stdin(cat);
    void *rep = zsock(ZMQ_REP);
    cr_assert(zmq_bind(rep, ep) == 0, "rebind %s: %s", ep, zmq_strerror(zmq_errno()));
    struct parts p;
    zrecv_parts(rep, &p);
    expect_strs(&p, 1, (const char *[]){"anyone?"});
    zsend_strs(rep, 1, (const char *[]){"here"});
    expect_line(cat, "here");
    cr_assert_eq(proc_wait_exit(cat, PROC_WAIT_MS), 0, "stderr:\n%s", cat->errlog);
    zmq_close(rep);
}

Test(apps, cat_rep_against_libzmq_req)
{
    struct proc *cat =
        start_app((const char *[]){MCQ_CAT_BIN, "rep", "--bind", "tcp://127.0.0.1:0", NULL});
    void *req = zconnect(ZMQ_REQ, cat->endpoints[0]);
    struct parts p;
    zsend_strs(req, 1, (const char *[]){"question"});
    expect_line(cat, "question");
    proc_write(cat, "answer\n");
    zrecv_parts(req, &p);
    expect_strs(&p, 1, (const char *[]){"answer"});
    zsend_strs(req, 3, (const char *[]){"a", "", "c"});
    expect_line(cat, "a\t\tc");
    proc_write(cat, "x\ty\n");
    proc_close_stdin(cat);
    zrecv_parts(req, &p);
    expect_strs(&p, 2, (const char *[]){"x", "y"});
    cr_assert_eq(proc_wait_exit(cat, PROC_WAIT_MS), 0, "stderr:\n%s", cat->errlog);
    zmq_close(req);
}

Test(apps, cat_pull_counts_messages_from_libzmq_push)
{
    struct proc *cat = start_app(
        (const char *[]){MCQ_CAT_BIN, "PULL", "--bind", "tcp://127.0.0.1:0", "--count", "3", NULL});
    void *push = zconnect(ZMQ_PUSH, cat->endpoints[0]);
    zsend_strs(push, 1, (const char *[]){"one"});
    zsend_strs(push, 2, (const char *[]){"two", "2"});
    zsend_strs(push, 1, (const char *[]){"three"});
    expect_line(cat, "one");
    expect_line(cat, "two\t2");
    expect_line(cat, "three");
    cr_assert_eq(proc_wait_exit(cat, PROC_WAIT_MS), 0, "stderr:\n%s", cat->errlog);
    zmq_close(push);
}

Test(apps, cat_push_to_libzmq_pull_sends_everything_then_exits)
{
    char ep[256];
    void *pull = zbind(ZMQ_PULL, ep, sizeof(ep));
    /* The lines are written before any peer exists: they wait, none is dropped. */
    struct proc *cat = proc_spawn((const char *[]){MCQ_CAT_BIN, "PUSH", "--connect", ep, NULL});
    char lines[8192] = "";
    for (int i = 0; i < 200; i++)
        snprintf(lines + strlen(lines), sizeof(lines) - strlen(lines), "line %d\n", i);
    proc_write(cat, lines);
    proc_close_stdin(cat);
    for (int i = 0; i < 200; i++) {
        char want[32];
        snprintf(want, sizeof(want), "line %d", i);
        struct parts p;
        zmq_pollitem_t item = {.socket = pull, .events = ZMQ_POLLIN};
        if (zmq_poll(&item, 1, ZMQ_WAIT_MS) != 1) {
            int rc = proc_wait_exit(cat, PROC_WAIT_MS);
            cr_assert_fail("line %d never arrived; exit %d, stderr:\n%s", i, rc, cat->errlog);
        }
        zrecv_parts(pull, &p);
        expect_strs(&p, 1, (const char *[]){want});
    }
    cr_assert_eq(proc_wait_exit(cat, PROC_WAIT_MS), 0, "stderr:\n%s", cat->errlog);
    zmq_close(pull);
}

Test(apps, cat_router_prints_identities_and_routes_by_first_frame)
{
    struct proc *cat =
        start_app((const char *[]){MCQ_CAT_BIN, "ROUTER", "--bind", "tcp://127.0.0.1:0", NULL});
    void *d1 = zsock(ZMQ_DEALER), *d2 = zsock(ZMQ_DEALER);
    zmq_setsockopt(d1, ZMQ_ROUTING_ID, "alice", 5);
    zmq_setsockopt(d2, ZMQ_ROUTING_ID, "bob", 3);
    cr_assert(zmq_connect(d1, cat->endpoints[0]) == 0 && zmq_connect(d2, cat->endpoints[0]) == 0);
    zsend_strs(d1, 1, (const char *[]){"from alice"});
    expect_line(cat, "alice\tfrom alice");
    zsend_strs(d2, 2, (const char *[]){"from", "bob"});
    expect_line(cat, "bob\tfrom\tbob");
    proc_write(cat, "bob\tto bob\nalice\tto\talice\n");
    struct parts p;
    zrecv_parts(d2, &p);
    expect_strs(&p, 1, (const char *[]){"to bob"});
    zrecv_parts(d1, &p);
    expect_strs(&p, 2, (const char *[]){"to", "alice"});
    proc_close_stdin(cat);
    cr_assert_eq(proc_wait_exit(cat, PROC_WAIT_MS), 0, "stderr:\n%s", cat->errlog);
    zmq_close(d1);
    zmq_close(d2);
}

Test(apps, cat_router_auto_identity_round_trip)
{
    struct proc *cat =
        start_app((const char *[]){MCQ_CAT_BIN, "ROUTER", "--bind", "tcp://127.0.0.1:0", NULL});
    void *d = zconnect(ZMQ_DEALER, cat->endpoints[0]);
    zsend_strs(d, 1, (const char *[]){"hi"});
    char line[PROC_BUF];
    cr_assert(proc_out_line(cat, line, sizeof(line)) >= 0, "stderr:\n%s", cat->errlog);
    /* A 5-byte auto identity 0x00 + 4 bytes, escaped, then the body. */
    char *tab = strchr(line, '\t');
    cr_assert(tab && strcmp(tab, "\thi") == 0 && strncmp(line, "\\x00", 4) == 0, "line: %s", line);
    /* Sending the identity text back routes to the same peer. */
    strcpy(tab, "\treply\n");
    proc_write(cat, line);
    struct parts p;
    zrecv_parts(d, &p);
    expect_strs(&p, 1, (const char *[]){"reply"});
    zmq_close(d);
    cr_assert_eq(proc_signal_and_wait(cat, SIGTERM), 0, "stderr:\n%s", cat->errlog);
}

Test(apps, cat_dealer_identity_to_libzmq_router)
{
    char ep[256];
    void *router = zbind(ZMQ_ROUTER, ep, sizeof(ep));
    struct proc *cat = start_app(
        (const char *[]){MCQ_CAT_BIN, "DEALER", "--connect", ep, "--identity", "me\\x01", NULL});
    proc_write(cat, "ping\n");
    struct parts p;
    zrecv_parts(router, &p);
    cr_assert(p.n == 2 && p.len[0] == 3 && memcmp(p.data[0], "me\x01", 3) == 0);
    cr_assert(p.len[1] == 4 && memcmp(p.data[1], "ping", 4) == 0);
    zsend_bytes(router, 2, (const void *[]){"me\x01", "pong"}, (size_t[]){3, 4});
    expect_line(cat, "pong");
    proc_close_stdin(cat);
    cr_assert_eq(proc_wait_exit(cat, PROC_WAIT_MS), 0, "stderr:\n%s", cat->errlog);
    zmq_close(router);
}

Test(apps, cat_escapes_round_trip_every_byte)
{
    char ep[256];
    void *pull = zbind(ZMQ_PULL, ep, sizeof(ep));
    struct proc *push = start_app((const char *[]){MCQ_CAT_BIN, "PUSH", "--connect", ep, NULL});
    proc_write(push, "a\\tb\\n\\\\\\x00\\xff\\x41\tsecond\t\n");
    struct parts p;
    zrecv_parts(pull, &p);
    cr_assert_eq(p.n, 3);
    cr_assert(p.len[0] == 8 && memcmp(p.data[0],
                                      "a\tb\n\\\x00\xff"
                                      "A",
                                      8) == 0);
    cr_assert(p.len[1] == 6 && p.len[2] == 0);
    /* A bad escape is reported and that line skipped; the next goes through. */
    proc_write(push, "bad\\q\ngood\n");
    zrecv_parts(pull, &p);
    expect_strs(&p, 1, (const char *[]){"good"});
    proc_close_stdin(push);
    cr_assert_eq(proc_wait_exit(push, PROC_WAIT_MS), 0);
    cr_assert(strstr(push->errlog, "line 2"), "stderr:\n%s", push->errlog);

    /* Every byte value printed escaped by a PULL, and read back by a PUSH. */
    struct proc *pull_cat = start_app(
        (const char *[]){MCQ_CAT_BIN, "PULL", "--bind", "tcp://127.0.0.1:0", "--count", "1", NULL});
    void *zpush = zconnect(ZMQ_PUSH, pull_cat->endpoints[0]);
    uint8_t all[256];
    for (int i = 0; i < 256; i++)
        all[i] = (uint8_t)i;
    zsend_bytes(zpush, 2, (const void *[]){all, ""}, (size_t[]){256, 0});
    char line[PROC_BUF];
    cr_assert(proc_out_line(pull_cat, line, sizeof(line)) >= 0);
    cr_assert(strncmp(line, "\\x00\\x01", 8) == 0 && strstr(line, "\\t") && strstr(line, "\\n") &&
                  strstr(line, "\\\\") && strstr(line, " !\"#") && strstr(line, "\\x7f") &&
                  strstr(line, "\\xff\t") && line[strlen(line) - 1] == '\t',
              "line: %s", line);
    cr_assert_eq(proc_wait_exit(pull_cat, PROC_WAIT_MS), 0);
    struct proc *again = start_app((const char *[]){MCQ_CAT_BIN, "PUSH", "--connect", ep, NULL});
    strcat(line, "\n");
    proc_write(again, line);
    proc_close_stdin(again);
    zrecv_parts(pull, &p);
    cr_assert(p.n == 2 && p.len[0] == 256 && memcmp(p.data[0], all, 256) == 0 && p.len[1] == 0);
    cr_assert_eq(proc_wait_exit(again, PROC_WAIT_MS), 0);
    zmq_close(zpush);
    zmq_close(pull);
}

Test(apps, cat_hex_round_trip)
{
    char ep[256];
    void *pull = zbind(ZMQ_PULL, ep, sizeof(ep));
    struct proc *push =
        start_app((const char *[]){MCQ_CAT_BIN, "PUSH", "--hex", "--connect", ep, NULL});
    proc_write(push, "00ff0a09\t\t4142\n");
    proc_close_stdin(push);
    struct parts p;
    zrecv_parts(pull, &p);
    cr_assert(p.n == 3 && p.len[0] == 4 && memcmp(p.data[0], "\x00\xff\n\t", 4) == 0 &&
              p.len[1] == 0 && p.len[2] == 2 && memcmp(p.data[2], "AB", 2) == 0);
    cr_assert_eq(proc_wait_exit(push, PROC_WAIT_MS), 0);
    zmq_close(pull);

    struct proc *cat = start_app((const char *[]){MCQ_CAT_BIN, "PULL", "--hex", "--bind",
                                                  "tcp://127.0.0.1:0", "--count", "1", NULL});
    void *zpush = zconnect(ZMQ_PUSH, cat->endpoints[0]);
    zsend_bytes(zpush, 2, (const void *[]){"\x00\xab\\", "z"}, (size_t[]){3, 1});
    expect_line(cat, "00ab5c\t7a");
    cr_assert_eq(proc_wait_exit(cat, PROC_WAIT_MS), 0);
    zmq_close(zpush);
}

Test(apps, cat_timeout_ends_an_idle_run)
{
    long start = proc_now_ms();
    struct proc *cat = start_app((const char *[]){
        MCQ_CAT_BIN, "PULL", "--bind", "tcp://127.0.0.1:0", "--timeout-ms", "300", NULL});
    void *push = zconnect(ZMQ_PUSH, cat->endpoints[0]);
    zsend_strs(push, 1, (const char *[]){"keep"});
    expect_line(cat, "keep");
    cr_assert_eq(proc_wait_exit(cat, PROC_WAIT_MS), 0, "stderr:\n%s", cat->errlog);
    long took = proc_now_ms() - start;
    cr_assert(took >= 300 && took < PROC_WAIT_MS, "took %ld ms", took);
    zmq_close(push);
}

Test(apps, cat_pair_both_directions)
{
    char ep[256];
    void *pair = zbind(ZMQ_PAIR, ep, sizeof(ep));
    struct proc *cat =
        start_app((const char *[]){MCQ_CAT_BIN, "PAIR", "--connect", ep, "--count", "1", NULL});
    proc_write(cat, "to libzmq\n");
    struct parts p;
    zrecv_parts(pair, &p);
    expect_strs(&p, 1, (const char *[]){"to libzmq"});
    zsend_strs(pair, 1, (const char *[]){"to cat"});
    expect_line(cat, "to cat");
    cr_assert_eq(proc_wait_exit(cat, PROC_WAIT_MS), 0, "stderr:\n%s", cat->errlog);
    zmq_close(pair);
}

Test(apps, cat_sub_works_or_says_it_is_not_supported)
{
    struct proc *p;
    int rc = proc_run((const char *[]){MCQ_CAT_BIN, "SUB", "--connect", "tcp://127.0.0.1:1",
                                       "--subscribe", "topic", "--timeout-ms", "100", NULL},
                      &p);
    if (rc == 1)
        cr_assert(strstr(p->errlog, "not supported"), "stderr:\n%s", p->errlog);
    else
        cr_assert_eq(rc, 0, "stderr:\n%s", p->errlog);
}

/* --- command lines ------------------------------------------------------------------------- */

static void expect_usage_error(const char *const *argv)
{
    struct proc *p;
    cr_assert_eq(proc_run(argv, &p), 2, "%s %s: stderr:\n%s", argv[0], argv[1] ? argv[1] : "",
                 p->errlog);
    cr_assert(strstr(p->errlog, "usage:"), "no usage on stderr:\n%s", p->errlog);
}

Test(apps, bad_arguments_exit_2_with_usage)
{
    expect_usage_error((const char *[]){MCQ_ECHO_BIN, NULL});
    expect_usage_error(
        (const char *[]){MCQ_ECHO_BIN, "--bind", "tcp://127.0.0.1:0", "--shards", "0", NULL});
    expect_usage_error((const char *[]){MCQ_ECHO_BIN, "--bind", "tcp://127.0.0.1:0",
                                        "--max-msg-size", "big", NULL});
    expect_usage_error(
        (const char *[]){MCQ_ECHO_BIN, "--bind", "tcp://127.0.0.1:0", "extra", NULL});
    expect_usage_error((const char *[]){MCQ_BROKER_BIN, "--frontend", "tcp://127.0.0.1:0", NULL});
    expect_usage_error((const char *[]){MCQ_BROKER_BIN, "--nope", NULL});
    expect_usage_error((const char *[]){MCQ_CAT_BIN, "--bind", "tcp://127.0.0.1:0", NULL});
    expect_usage_error((const char *[]){MCQ_CAT_BIN, "BOGUS", "--bind", "tcp://127.0.0.1:0", NULL});
    expect_usage_error((const char *[]){MCQ_CAT_BIN, "PUSH", NULL});
    expect_usage_error((const char *[]){MCQ_CAT_BIN, "PUSH", "--bind", "tcp://127.0.0.1:0",
                                        "--subscribe", "a", NULL});
    expect_usage_error(
        (const char *[]){MCQ_CAT_BIN, "PULL", "--bind", "tcp://127.0.0.1:0", "--count", "0", NULL});
    expect_usage_error((const char *[]){MCQ_CAT_BIN, "DEALER", "--connect", "tcp://127.0.0.1:1",
                                        "--identity", "\\x4", NULL});
    expect_usage_error((const char *[]){MCQ_CAT_BIN, "PUSH", "--hex", "--connect",
                                        "tcp://127.0.0.1:1", "--identity", "abc", NULL});
}

Test(apps, help_exits_0_with_usage_on_stdout)
{
    const char *bins[] = {MCQ_ECHO_BIN, MCQ_BROKER_BIN, MCQ_CAT_BIN};
    for (int i = 0; i < 3; i++) {
        struct proc *p;
        cr_assert_eq(proc_run((const char *[]){bins[i], "--help", NULL}, &p), 0);
        char line[1024];
        cr_assert(proc_out_line(p, line, sizeof(line)) >= 0 && strstr(line, "usage:"));
    }
}

Test(apps, bad_endpoint_exits_1_with_a_message)
{
    struct proc *p;
    cr_assert_eq(proc_run((const char *[]){MCQ_ECHO_BIN, "--bind", "foo://x", NULL}, &p), 1,
                 "stderr:\n%s", p->errlog);
    cr_assert(strstr(p->errlog, "cannot bind foo://x"), "stderr:\n%s", p->errlog);
    cr_assert_eq(proc_run((const char *[]){MCQ_BROKER_BIN, "--frontend", "tcp://127.0.0.1:0",
                                           "--backend", "tcp://no-port", NULL},
                          &p),
                 1, "stderr:\n%s", p->errlog);
    cr_assert(strstr(p->errlog, "cannot bind tcp://no-port"), "stderr:\n%s", p->errlog);
    cr_assert_eq(
        proc_run((const char *[]){MCQ_CAT_BIN, "PUSH", "--connect", "tcp://:::", NULL}, &p), 1,
        "stderr:\n%s", p->errlog);
    cr_assert(strstr(p->errlog, "cannot connect to"), "stderr:\n%s", p->errlog);
}

Test(apps, port_in_use_exits_1)
{
    char ep[256];
    void *taken = zbind(ZMQ_PULL, ep, sizeof(ep));
    struct proc *p;
    cr_assert_eq(proc_run((const char *[]){MCQ_ECHO_BIN, "--bind", ep, NULL}, &p), 1, "stderr:\n%s",
                 p->errlog);
    cr_assert(strstr(p->errlog, "Address already in use"), "stderr:\n%s", p->errlog);
    zmq_close(taken);

    /* Also when the port belongs to another Monocoque process. */
    struct proc *first =
        start_app((const char *[]){MCQ_ECHO_BIN, "--bind", "tcp://127.0.0.1:0", NULL});
    cr_assert_eq(proc_run((const char *[]){MCQ_BROKER_BIN, "--frontend", first->endpoints[0],
                                           "--backend", "tcp://127.0.0.1:0", NULL},
                          &p),
                 1, "stderr:\n%s", p->errlog);
    cr_assert_eq(proc_signal_and_wait(first, SIGTERM), 0);
}
