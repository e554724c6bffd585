/* The perf tools on libzmq (zmq_local_thr etc.): what libzmq's own perf/ tools do, which
 * Debian does not ship. Plain blocking libzmq calls, default context (one I/O thread),
 * default HWM, a fresh zmq_msg_init_size per message sent. */
#include "tool.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <zmq.h>

#define MS_PER_S 1000
#define ENDPOINT_MAX 256     /* bytes of ZMQ_LAST_ENDPOINT */
#define WINDOW_CHECK_MASK 63 /* read the clock every 64 messages */

struct zsock {
    void *ctx;
    void *sock;
};

static int zerr(const char *what)
{
    int err = zmq_errno();
    fprintf(stderr, "zmq: %s: %s\n", what, zmq_strerror(err));
    return err ? -err : -EIO;
}

static void zsock_close(struct zsock *z)
{
    if (z->sock)
        zmq_close(z->sock);
    if (z->ctx)
        zmq_ctx_term(z->ctx);
}

/* A socket with every wait bounded by TOOL_TIMEOUT_S, bound (and the endpoint reported)
 * or connected. */
static int zsock_open(struct zsock *z, int type, const char *endpoint, bool bind)
{
    int timeout_ms = TOOL_TIMEOUT_S * MS_PER_S;
    z->ctx = zmq_ctx_new();
    if (!z->ctx)
        return zerr("zmq_ctx_new");
    z->sock = zmq_socket(z->ctx, type);
    if (!z->sock)
        return zerr("zmq_socket");
    if (zmq_setsockopt(z->sock, ZMQ_RCVTIMEO, &timeout_ms, sizeof(timeout_ms)) ||
        zmq_setsockopt(z->sock, ZMQ_SNDTIMEO, &timeout_ms, sizeof(timeout_ms)) ||
        zmq_setsockopt(z->sock, ZMQ_LINGER, &timeout_ms, sizeof(timeout_ms)))
        return zerr("zmq_setsockopt");
    if (!bind)
        return zmq_connect(z->sock, endpoint) ? zerr(endpoint) : 0;
    if (zmq_bind(z->sock, endpoint))
        return zerr(endpoint);
    char last[ENDPOINT_MAX];
    size_t len = sizeof(last);
    if (zmq_getsockopt(z->sock, ZMQ_LAST_ENDPOINT, last, &len))
        return zerr("ZMQ_LAST_ENDPOINT");
    tool_report_endpoint(last);
    return 0;
}

static int recv_sized(void *sock, zmq_msg_t *msg, size_t size)
{
    if (zmq_msg_recv(msg, sock, 0) < 0)
        return zerr("zmq_msg_recv");
    if (zmq_msg_size(msg) != size) {
        fprintf(stderr, "zmq: message of %zu bytes, expected %zu\n", zmq_msg_size(msg), size);
        return -EPROTO;
    }
    return 0;
}

int tool_local_thr(const struct tool_args *a, struct tool_thr_result *out)
{
    struct zsock z = {0};
    zmq_msg_t msg;
    zmq_msg_init(&msg);
    int rc = zsock_open(&z, ZMQ_PULL, a->endpoint, true);
    uint64_t t0 = 0, t1 = 0, n = 0;
    while (rc == 0 && n < a->count) {
        rc = recv_sized(z.sock, &msg, a->size);
        if (rc < 0)
            break;
        t1 = ++n == 1 || n == a->count || (a->window_ns && (n & WINDOW_CHECK_MASK) == 0)
                 ? tool_now_ns()
                 : t1;
        if (n == 1)
            t0 = t1;
        else if (a->window_ns && t1 - t0 >= a->window_ns)
            break;
    }
    zmq_msg_close(&msg);
    zsock_close(&z);
    *out = (struct tool_thr_result){
        .msgs = n, .elapsed_ns = t1 - t0, .allocs = -1, .malloc_bytes = -1};
    return rc;
}

int tool_remote_thr(const struct tool_args *a)
{
    struct zsock z = {0};
    int rc = zsock_open(&z, ZMQ_PUSH, a->endpoint, false);
    for (uint64_t i = 0; rc == 0 && i < a->count; i++) {
        zmq_msg_t msg;
        if (zmq_msg_init_size(&msg, a->size)) {
            rc = zerr("zmq_msg_init_size");
            break;
        }
        if (zmq_msg_send(&msg, z.sock, 0) < 0) {
            rc = zerr("zmq_msg_send");
            zmq_msg_close(&msg);
        }
    }
    zsock_close(&z);
    return rc;
}

int tool_local_lat(const struct tool_args *a)
{
    struct zsock z = {0};
    zmq_msg_t msg;
    zmq_msg_init(&msg);
    int rc = zsock_open(&z, ZMQ_REP, a->endpoint, true);
    for (uint64_t i = 0; rc == 0 && i < a->count; i++) {
        rc = recv_sized(z.sock, &msg, a->size);
        if (rc == 0 && zmq_msg_send(&msg, z.sock, 0) < 0)
            rc = zerr("zmq_msg_send");
    }
    zmq_msg_close(&msg);
    zsock_close(&z);
    return rc;
}

int tool_remote_lat(const struct tool_args *a, struct tool_lat_result *out)
{
    zmq_msg_t msg;
    if (zmq_msg_init_size(&msg, a->size))
        return zerr("zmq_msg_init_size");
    memset(zmq_msg_data(&msg), 'L', a->size);
    struct zsock z = {0};
    int rc = zsock_open(&z, ZMQ_REQ, a->endpoint, false);
    uint64_t start = 0;
    for (uint64_t i = 0; rc == 0 && i < a->count; i++) {
        uint64_t t0 = tool_now_ns();
        if (i == a->warmup)
            start = t0;
        if (zmq_msg_send(&msg, z.sock, 0) < 0) {
            rc = zerr("zmq_msg_send");
            break;
        }
        rc = recv_sized(z.sock, &msg, a->size);
        if (rc == 0 && i >= a->warmup)
            hist_record(out->rtt, tool_now_ns() - t0);
    }
    out->elapsed_ns = tool_now_ns() - start;
    out->allocs = out->malloc_bytes = -1;
    zmq_msg_close(&msg);
    zsock_close(&z);
    return rc;
}
