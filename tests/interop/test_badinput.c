/* Bad input against a Monocoque ROUTER echo server that also serves a well-behaved libzmq
 * DEALER: garbage bytes, a truncated greeting, frames over MAXMSGSIZE, a peer that stalls
 * in the handshake past HANDSHAKE_IVL. Each must close only that connection, log why, and
 * leave the good peer served before, during and after. */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#include "interop/interop_util.h"
#include "zmtp/wire_literals.h"

#define MAX_MSG_BYTES 1024      /* the server's MAXMSGSIZE */
#define STALL_IVL_MS 300        /* the server's HANDSHAKE_IVL in the stall cases */
#define STALL_EARLY_SLACK_MS 50 /* a close this much before the deadline is still fine */
#define CLOSE_TIMEOUT_MS 5000   /* the server must close a bad peer within this */
#define TRUNCATED_BYTES 20      /* greeting bytes the truncated peer sends */
#define HUGE_FRAME_LEN 0x4000000000000000ull /* 2^62: only a 64-bit length check stops it */
#define BAD_TIMEOUT_S 60

static char case_name[128];

enum bad_kind {
    BAD_GARBAGE,        /* HTTP request bytes instead of a greeting */
    BAD_TRUNCATED,      /* 20 greeting bytes, then EOF */
    BAD_OVERSIZE,       /* a whole frame of MAXMSGSIZE + 1 bytes after the handshake */
    BAD_OVERSIZE_HUGE,  /* a frame header announcing 2^62 bytes */
    BAD_OVERSIZE_ZMQ,   /* libzmq DEALER sending a message over MAXMSGSIZE */
    BAD_STALL_GREETING, /* full greeting, then silence (no READY) */
    BAD_STALL_SILENT,   /* connects, never sends a byte */
};

static const char *kind_name[] = {"garbage",
                                  "truncated greeting",
                                  "frame over MAXMSGSIZE",
                                  "2^62 frame",
                                  "libzmq message over MAXMSGSIZE",
                                  "stall after greeting",
                                  "silent peer"};

struct bad_case {
    enum bad_kind kind;
    enum transport tr;
};

static struct bad_case bad_cases[14];

ParameterizedTestParameters(badinput, closes_only_that_peer)
{
    size_t k = 0;
    for (int kind = BAD_GARBAGE; kind <= BAD_STALL_SILENT; kind++)
        for (int tr = TR_TCP; tr <= TR_IPC; tr++)
            bad_cases[k++] = (struct bad_case){(enum bad_kind)kind, (enum transport)tr};
    return cr_make_param_array(struct bad_case, bad_cases, k);
}

static bool is_stall(enum bad_kind k)
{
    return k == BAD_STALL_GREETING || k == BAD_STALL_SILENT;
}

/* A raw client socket connected to a Monocoque endpoint; *port gets its local TCP port. */
static int raw_connect(const char *ep, unsigned *port)
{
    *port = 0;
    if (!strncmp(ep, "ipc://", 6)) {
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        cr_assert_lt(strlen(ep + 6), sizeof(sa.sun_path), "ipc path too long: %s", ep);
        memcpy(sa.sun_path, ep + 6, strlen(ep + 6) + 1);
        cr_assert_eq(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0, "connect %s", ep);
        return fd;
    }
    char host[64];
    unsigned p = 0;
    cr_assert_eq(sscanf(ep, "tcp://%63[^:]:%u", host, &p), 2, "endpoint %s", ep);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)p)};
    inet_pton(AF_INET, host, &sa.sin_addr);
    cr_assert_eq(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0, "connect %s", ep);
    struct sockaddr_in me;
    socklen_t len = sizeof(me);
    getsockname(fd, (struct sockaddr *)&me, &len);
    *port = ntohs(me.sin_port);
    return fd;
}

static void raw_write(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n <= 0)
            return; /* the server may already have closed: that is its right */
        p += n;
        len -= (size_t)n;
    }
}

/* Reads and discards until the server closes; the elapsed ms, or -1 after timeout_ms. */
static long await_close(int fd, int timeout_ms)
{
    uint64_t t0 = mono_ns();
    for (;;) {
        long left = timeout_ms - (long)((mono_ns() - t0) / 1000000);
        if (left <= 0)
            return -1;
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        if (poll(&pfd, 1, (int)left) <= 0)
            continue;
        char buf[4096];
        ssize_t n = recv(fd, buf, sizeof(buf), 0);
        if (n == 0 || (n < 0 && errno == ECONNRESET))
            return (long)((mono_ns() - t0) / 1000000);
    }
}

static void good_round_trip(void *good, const char *when)
{
    struct tmsg *m = tmsg_strs("good", when, NULL);
    cr_assert_eq(zs_send(good, m), 0);
    struct tmsg *r = zs_recv(good, IO_TIMEOUT_MS);
    cr_assert(r && tmsg_eq(r, m), "%s: the good peer got no echo %s", case_name, when);
    tmsg_free(r);
    tmsg_free(m);
}

/* The captured log as one string (caller frees). */
static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = calloc(1, (size_t)n + 1);
    cr_assert_eq(fread(s, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    return s;
}

ParameterizedTest(struct bad_case *bc, badinput, closes_only_that_peer, .timeout = BAD_TIMEOUT_S)
{
    snprintf(case_name, sizeof(case_name), "%s over %s", kind_name[bc->kind], tr_name(bc->tr));
    cr_log_info("%s", case_name);

    /* Capture the runtime's log (the logger thread writes to fd 2). */
    char log_path[] = "/tmp/mcq-badinput-log-XXXXXX";
    int log_fd = mkstemp(log_path);
    cr_assert_geq(log_fd, 0);
    fflush(stderr);
    int saved_err = dup(2);
    dup2(log_fd, 2);
    setenv("MCQ_LOG", "info", 1);

    void *ctx = zmq_ctx_new();
    struct mcq_runtime *rt = start_runtime(TEST_SHARDS);
    struct msock *srv = ms_new(rt, MCQ_ROUTER, RM_ECHO);
    ms_setopt_i64(srv, MCQ_MAXMSGSIZE, MAX_MSG_BYTES);
    if (is_stall(bc->kind))
        ms_setopt_int(srv, MCQ_HANDSHAKE_IVL, STALL_IVL_MS);
    char ep[TEST_ENDPOINT_MAX];
    ms_bind(srv, bc->tr, ep, sizeof(ep));

    void *good = zs_new(ctx, ZMQ_DEALER);
    zs_connect(good, ep);
    cr_assert(ms_wait_up(srv, 1), "%s: the good peer never came up", case_name);
    good_round_trip(good, "before");

    unsigned port = 0;
    long closed_ms = -1;
    void *bad_zmq = NULL;
    int fd = -1;
    if (bc->kind == BAD_OVERSIZE_ZMQ) {
        bad_zmq = zs_new(ctx, ZMQ_DEALER);
        zs_connect(bad_zmq, ep);
        cr_assert(ms_wait_up(srv, 2), "%s: the libzmq bad peer never came up", case_name);
        size_t big = MAX_MSG_BYTES + 1;
        char *data = calloc(1, big);
        cr_assert_eq(zmq_send(bad_zmq, data, big, 0), (int)big);
        free(data);
        cr_assert(ms_wait_down(srv, 1), "%s: the oversized peer was not closed", case_name);
        cr_assert_lt(atomic_load(&srv->last_down_reason), 0,
                     "%s: on_peer_down reason %d, expected a negative errno", case_name,
                     atomic_load(&srv->last_down_reason));
        good_round_trip(good, "after the close");
        cr_assert_null(zs_recv(bad_zmq, STALL_IVL_MS), "%s: the oversized message was echoed",
                       case_name);
    } else {
        fd = raw_connect(ep, &port);
        uint64_t t0 = mono_ns();
        switch (bc->kind) {
        case BAD_GARBAGE: {
            static const char http[] = "GET / HTTP/1.1\r\nHost: monocoque\r\n"
                                       "User-Agent: definitely-not-zmtp\r\n\r\n";
            raw_write(fd, http, sizeof(http) - 1);
            break;
        }
        case BAD_TRUNCATED:
            raw_write(fd, G_NULL, TRUNCATED_BYTES);
            shutdown(fd, SHUT_WR);
            break;
        case BAD_OVERSIZE: {
            raw_write(fd, LIT(G_NULL));
            raw_write(fd, LIT(READY_DEALER));
            uint8_t hdr[9] = {0x02};
            uint64_t len = MAX_MSG_BYTES + 1;
            for (int i = 0; i < 8; i++)
                hdr[1 + i] = (uint8_t)(len >> (56 - 8 * i));
            raw_write(fd, hdr, sizeof(hdr));
            char *body = calloc(1, len);
            raw_write(fd, body, len);
            free(body);
            break;
        }
        case BAD_OVERSIZE_HUGE: {
            raw_write(fd, LIT(G_NULL));
            raw_write(fd, LIT(READY_DEALER));
            uint8_t hdr[9] = {0x02};
            for (int i = 0; i < 8; i++)
                hdr[1 + i] = (uint8_t)(HUGE_FRAME_LEN >> (56 - 8 * i));
            raw_write(fd, hdr, sizeof(hdr));
            raw_write(fd, "some bytes", 10);
            break;
        }
        case BAD_STALL_GREETING:
            raw_write(fd, LIT(G_NULL));
            break;
        default:
            break;
        }
        if (is_stall(bc->kind)) /* while the bad peer hangs, the good one is served */
            good_round_trip(good, "during the stall");
        closed_ms = await_close(fd, CLOSE_TIMEOUT_MS);
        long since_connect = (long)((mono_ns() - t0) / 1000000);
        cr_assert_geq(closed_ms, 0, "%s: the server did not close the bad connection in %d ms",
                      case_name, CLOSE_TIMEOUT_MS);
        if (is_stall(bc->kind))
            cr_assert_geq(since_connect, STALL_IVL_MS - STALL_EARLY_SLACK_MS,
                          "%s: closed after %ld ms, before HANDSHAKE_IVL %d ms", case_name,
                          since_connect, STALL_IVL_MS);
        good_round_trip(good, "after the close");
        /* Only the good peer ever completed a handshake except for the oversize cases. */
        if (bc->kind != BAD_OVERSIZE && bc->kind != BAD_OVERSIZE_HUGE)
            cr_assert_eq(atomic_load(&srv->up), 1, "%s: the bad peer came up", case_name);
        close(fd);
    }
    cr_assert_eq(atomic_load(&srv->echo_failures), 0);

    if (bad_zmq)
        zmq_close(bad_zmq);
    zmq_close(good);
    ms_close(srv);
    mcq_runtime_destroy(rt);
    zmq_ctx_term(ctx);

    fflush(stderr);
    dup2(saved_err, 2);
    close(saved_err);
    close(log_fd);
    char *log = slurp(log_path);
    unlink(log_path);
    /* "logs why": a TCP peer's line names its port; an IPC peer (no port) gets a warning. */
    if (bc->tr == TR_TCP && bc->kind != BAD_OVERSIZE_ZMQ) {
        char needle[16];
        snprintf(needle, sizeof(needle), ":%u", port);
        cr_assert_not_null(strstr(log, needle), "%s: no log line names the peer (%s); log:\n%s",
                           case_name, needle, log);
    } else {
        cr_assert(strstr(log, "WARN") || strstr(log, "INFO"), "%s: nothing logged; log:\n%s",
                  case_name, log);
    }
    free(log);
}
