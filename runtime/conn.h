/* Connections, protocol-agnostic: TCP and IPC listeners, connect with a timeout, multishot
 * receive into a per-shard provided buffer ring, and an output queue of views flushed with
 * one vectored send per connection per loop turn. The layer above (ZMTP sessions, or any
 * other protocol) sees callbacks and views, never SQEs.
 *
 * Threading: a connection lives on one shard. Every mcq_conn_* call is for that shard's
 * thread, and every callback runs there. Callbacks never run inside an mcq_conn_* call: a
 * call that changes state (close, resume) takes effect in the loop, later in the turn. */
#ifndef MCQ_RUNTIME_CONN_H
#define MCQ_RUNTIME_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "alloc/page.h"
#include "runtime/endpoint.h"
#include "runtime/runtime.h"

struct mcq_conn;
struct mcq_listener;

/* Callbacks to the layer above, run on the connection's shard. `user` is the connection's
 * user pointer (mcq_conn_set_user). Every connection gets exactly one on_close: after its
 * on_open, or instead of it when a connect fails. After on_close returns the handle is
 * gone. Any callback may be NULL. */
struct mcq_conn_handler {
    void (*on_open)(struct mcq_conn *c, void *user);
    /* Bytes received, in order. Borrows *v for the call: mcq_view_ref() it to keep it.
     * Not called while receiving is paused. */
    void (*on_data)(struct mcq_conn *c, void *user, const struct mcq_view *v);
    /* The output queue drained below half its bound after it had reached the bound (a
     * send returned -EAGAIN or filled it). */
    void (*on_writable)(struct mcq_conn *c, void *user);
    /* reason: 0 for a clean end (peer EOF, mcq_conn_close), else -errno: -ECONNRESET,
     * -EPIPE, -ECONNREFUSED, -ETIMEDOUT (connect), -ECANCELED (runtime stop), ... */
    void (*on_close)(struct mcq_conn *c, void *user, int reason);
};

enum mcq_keepalive {
    MCQ_KEEPALIVE_OS = 0, /* leave the kernel's setting */
    MCQ_KEEPALIVE_ON,
    MCQ_KEEPALIVE_OFF,
};

#define MCQ_CONN_SNDQ_BYTES_DEFAULT (4u << 20) /* bytes queued before send says -EAGAIN */
#define MCQ_CONN_SNDQ_VIEWS_DEFAULT 4096u      /* views queued before send says -EAGAIN */
#define MCQ_CONN_LINGER_MS_DEFAULT 2000u       /* graceful close: flush for at most this */

/* How connections of a listener or a connect behave. Zero-initialised means defaults. The
 * handler must outlive every connection made with it; the struct itself is copied. */
struct mcq_conn_cfg {
    const struct mcq_conn_handler *handler;
    void *user;              /* initial user pointer of each connection */
    size_t sndq_max_bytes;   /* 0: MCQ_CONN_SNDQ_BYTES_DEFAULT */
    unsigned sndq_max_views; /* 0: MCQ_CONN_SNDQ_VIEWS_DEFAULT */
    unsigned linger_ms;      /* 0: MCQ_CONN_LINGER_MS_DEFAULT */
    enum mcq_keepalive keepalive;
    unsigned keepalive_idle_s;  /* 0: kernel default (TCP_KEEPIDLE) */
    unsigned keepalive_cnt;     /* 0: kernel default (TCP_KEEPCNT) */
    unsigned keepalive_intvl_s; /* 0: kernel default (TCP_KEEPINTVL) */
};

/* Binds and listens on `endpoint` now, in the caller (so errors come back here), then arms
 * accepting on the shards: TCP gets one SO_REUSEPORT socket per shard, each accepting onto
 * its own shard; IPC gets one socket whose shard hands connections round-robin to all
 * shards. Returns 0 and *out, or -EINVAL / -EPROTONOSUPPORT / -ENAMETOOLONG (bad endpoint,
 * see mcq_endpoint_parse), -EADDRINUSE, -EADDRNOTAVAIL, other -errno from socket/bind/
 * listen. Any thread, while the runtime runs (a listener made while it stops never accepts).
 * Release with mcq_listener_close. */
int mcq_conn_listen(struct mcq_runtime *rt, const char *endpoint, const struct mcq_conn_cfg *cfg,
                    struct mcq_listener **out);

/* The bound address as an endpoint string, with the real port when port 0 was asked for.
 * Returns its length or -ENOSPC. Any thread. */
int mcq_listener_endpoint(const struct mcq_listener *l, char *buf, size_t len);

/* The bound TCP port (0 for IPC). Any thread. */
uint16_t mcq_listener_port(const struct mcq_listener *l);

/* Stops accepting, closes the sockets (removing an IPC socket file) and releases the
 * caller's handle; connections already accepted stay open. Any thread, also after the
 * runtime stopped (which closes listeners itself) but before mcq_runtime_destroy. */
void mcq_listener_close(struct mcq_listener *l);

/* Starts connecting to `endpoint` from shard `sh` (the calling shard) and returns the
 * connection in *out; on_open follows, or on_close(-ECONNREFUSED, -ETIMEDOUT after
 * timeout_ms (0: no timeout of our own), ...). Host names resolve here, blocking. Returns 0
 * or -EINVAL / -EPROTONOSUPPORT / -ENAMETOOLONG (bad endpoint), -ESHUTDOWN, -ENOMEM. */
int mcq_conn_connect(struct mcq_shard *sh, const char *endpoint, const struct mcq_conn_cfg *cfg,
                     uint32_t timeout_ms, struct mcq_conn **out);

/* Queues *v for sending; the bytes go out at the end of the turn. Takes v's reference on
 * success (and empties *v); on error the caller keeps it. A send is accepted while the
 * queue is below its bounds, even one that crosses them. 0, -EAGAIN when the queue is at
 * its bound (on_writable follows), -ENOTCONN before on_open, -EPIPE after shutdown or
 * close, -ENOMEM. */
int mcq_conn_send(struct mcq_conn *c, struct mcq_view *v);

/* Queues v[0..n) as one unit (e.g. the header and body views of a whole message): all or
 * none. Takes every view's reference on success (and empties them); on error the caller
 * keeps all. Accepted while the queue is below its bounds, like mcq_conn_send. 0, -EAGAIN
 * (on_writable follows), -ENOTCONN, -EPIPE, -ENOMEM. */
int mcq_conn_sendv(struct mcq_conn *c, struct mcq_view *v, unsigned n);

/* Queues bytes [off, off + len) of *page (borrowed), like mcq_conn_send of a slice of it,
 * but bytes that continue the queue's last view just extend it (no new reference): the
 * cheap way to stream many small writes into one page. The caller must not change the
 * bytes afterwards. Same results as mcq_conn_send, and -EINVAL when the range is not
 * inside *page. */
int mcq_conn_send_slice(struct mcq_conn *c, const struct mcq_view *page, uint32_t off,
                        uint32_t len);

/* Whether a send would be accepted now (open and the queue below its bounds). */
bool mcq_conn_writable(const struct mcq_conn *c);

/* Bytes queued and not yet acknowledged by the kernel. */
size_t mcq_conn_sndq_bytes(const struct mcq_conn *c);

/* Stops on_data at once (bytes still in flight are held) until mcq_conn_resume. Flow
 * control for a consumer whose own output is backed up. Idempotent. */
void mcq_conn_pause(struct mcq_conn *c);

/* Delivers held bytes and receives again, from the loop (not inside this call). */
void mcq_conn_resume(struct mcq_conn *c);

/* Half-close: once the queued bytes are sent, shuts down the write side (the peer sees
 * EOF); receiving goes on until the peer's EOF. Later sends fail with -EPIPE. 0 or
 * -ENOTCONN (not open). */
int mcq_conn_shutdown(struct mcq_conn *c);

enum mcq_close_how {
    MCQ_CLOSE_FLUSH, /* send what is queued (within linger_ms), then close */
    MCQ_CLOSE_ABORT, /* drop what is queued and close now */
};

/* Ends the connection: no more on_data/on_writable; on_close(c, user, 0) follows from the
 * loop (after a FLUSH, once the queue is sent or linger_ms ran out; -ECANCELED if runtime
 * stop cut the flush short). The memory goes once every operation of the connection has
 * completed. A second call only upgrades FLUSH to ABORT. */
void mcq_conn_close(struct mcq_conn *c, enum mcq_close_how how);

/* A FLUSH close that ends at deadline_ns (mcq_shard_now_ns's clock; past: one last send
 * attempt) instead of linger_ms from now, so a layer that already spent part of its linger
 * budget does not start a second one; 0 is an ABORT. Otherwise as mcq_conn_close. */
void mcq_conn_close_by(struct mcq_conn *c, uint64_t deadline_ns);

void *mcq_conn_user(const struct mcq_conn *c);
void mcq_conn_set_user(struct mcq_conn *c, void *user);
struct mcq_shard *mcq_conn_shard(const struct mcq_conn *c);
enum mcq_transport mcq_conn_transport(const struct mcq_conn *c);

/* The peer's address (getpeername); for an accepted unix connection, whose client is
 * unnamed, the bound path it arrived on (as libzmq reports it). 0 or -errno. */
int mcq_conn_peer(const struct mcq_conn *c, struct mcq_sockaddr *out);

/* The one place socket options are set on a connection's fd (accepted or connecting):
 * TCP_NODELAY and keepalive for TCP. Logs and returns the first -errno, but never closes
 * or otherwise invalidates fd. Any thread. */
int mcq_conn_tune_fd(int fd, enum mcq_transport t, const struct mcq_conn_cfg *cfg);

#endif
