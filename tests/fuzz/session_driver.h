/* Drives a session the way a connection layer would, under fuzzed input, and checks the
 * session's contract at every step: event kinds only in the states that allow them, views
 * inside the bytes consumed, output never past its capacity (exactly-sized heap buffer),
 * a reason on every close, no busy deadline after a tick, no leaked reassembly buffer.
 * Everything the session sends is fed to a "mirror" session in the peer's role, which must
 * never find a protocol violation in it: our encoder checked by our decoder. */
#ifndef MCQ_TESTS_FUZZ_SESSION_DRIVER_H
#define MCQ_TESTS_FUZZ_SESSION_DRIVER_H

#include "fuzz_util.h"
#include "zmtp/mechanism.h"
#include "zmtp/session.h"

#include <errno.h>

#define DRIVER_BIG_OUT (1u << 16)     /* bytes of output room in the roomy mode */
#define DRIVER_TIGHT_EXTRA 3          /* bytes above the required reserve in the tight mode */
#define DRIVER_SENT_CAP (1u << 16)    /* bytes of our output kept for the mirror */
#define DRIVER_START_NS 1000000000ull /* arbitrary non-zero clock start */
#define DRIVER_HANDSHAKE_MS 1000
#define DRIVER_HB_IVL_MS 100
#define DRIVER_HB_TIMEOUT_MS 150
#define DRIVER_HB_TTL_MS 300
#define DRIVER_MAX_FLUSHES 4 /* -ENOBUFS twice in a row after a flush is a bug */

static const char driver_user[] = "admin";
static const char driver_pass[] = "secret";
static const uint8_t driver_identity[] = "fz";
static const struct mcq_zmtp_property driver_extra = {.name = (const uint8_t *)"X-Fuzz",
                                                      .name_len = 6,
                                                      .value = (const uint8_t *)"1",
                                                      .value_len = 1};

enum driver_mech { DRIVER_NULL, DRIVER_PLAIN_CLIENT, DRIVER_PLAIN_SERVER };

struct driver_opts {
    enum driver_mech mech;
    int socket_type;
    bool zmtp30;
    bool heartbeats;
    bool tight_out;
    bool identity;
    bool extra_property;
    unsigned auth_status;
    struct mcq_zmtp_limits limits;
};

struct driver_peer;

struct driver {
    struct mcq_zmtp_session s;
    struct mcq_zmtp_config cfg;
    struct mcq_zmtp_plain_credentials creds;
    struct fuzz_alloc alloc;
    struct mcq_zmtp_out out;
    uint64_t now;
    bool ready_seen;
    bool closed;
    int close_rc;
    /* Our output, concatenated across flushes, for the mirror. */
    uint8_t *sent;
    size_t sent_len;
    bool sent_overflow;
};

static inline const struct mcq_zmtp_mechanism *driver_mechanism(enum driver_mech m)
{
    switch (m) {
    case DRIVER_PLAIN_CLIENT:
        return &mcq_zmtp_mech_plain_client;
    case DRIVER_PLAIN_SERVER:
        return &mcq_zmtp_mech_plain_server;
    default:
        return &mcq_zmtp_mech_null;
    }
}

/* A socket type that `type` accepts as its peer. */
static inline int driver_peer_type(int type)
{
    for (int t = 0; t < MCQ_ZMTP_SOCKET_TYPE_COUNT; t++)
        if (mcq_zmtp_socket_types_compatible(type, t))
            return t;
    FUZZ_CHECK(!"every socket type has a peer type");
    return -1;
}

static inline void driver_flush(struct driver *d)
{
    FUZZ_CHECK(d->out.len <= d->out.cap);
    if (d->out.len > DRIVER_SENT_CAP - d->sent_len)
        d->sent_overflow = true;
    else {
        memcpy(d->sent + d->sent_len, d->out.buf, d->out.len);
        d->sent_len += d->out.len;
    }
    d->out.len = 0;
}

static inline void driver_closed(struct driver *d, int rc)
{
    FUZZ_CHECK(mcq_zmtp_session_state(&d->s) == MCQ_ZMTP_CLOSED);
    const char *why = mcq_zmtp_session_reason(&d->s);
    FUZZ_CHECK(why[0] != '\0' && strnlen(why, MCQ_ZMTP_REASON_LEN) < MCQ_ZMTP_REASON_LEN);
    d->closed = true;
    d->close_rc = rc;
}

/* 0, or the negative errno of init (then the driver holds nothing). */
static inline int driver_init(struct driver *d, const struct driver_opts *o)
{
    memset(d, 0, sizeof(*d));
    d->alloc.cap = FUZZ_ALLOC_CAP;
    d->cfg.socket_type = o->socket_type;
    d->cfg.mechanism = driver_mechanism(o->mech);
    if (o->mech == DRIVER_PLAIN_CLIENT) {
        d->creds = (struct mcq_zmtp_plain_credentials){
            .username = (const uint8_t *)driver_user,
            .username_len = sizeof(driver_user) - 1,
            .password = (const uint8_t *)driver_pass,
            .password_len = sizeof(driver_pass) - 1,
        };
        d->cfg.mechanism_arg = &d->creds;
    }
    if (o->identity) {
        d->cfg.identity = driver_identity;
        d->cfg.identity_len = sizeof(driver_identity) - 1;
    }
    if (o->extra_property) {
        d->cfg.properties = &driver_extra;
        d->cfg.n_properties = 1;
    }
    d->cfg.zap_domain = "fuzz";
    d->cfg.peer_address = "127.0.0.1";
    d->cfg.limits = o->limits;
    d->cfg.allocator = fuzz_allocator(&d->alloc);
    d->cfg.handshake_ivl_ms = DRIVER_HANDSHAKE_MS;
    if (o->heartbeats) {
        d->cfg.heartbeat_ivl_ms = DRIVER_HB_IVL_MS;
        d->cfg.heartbeat_timeout_ms = DRIVER_HB_TIMEOUT_MS;
        d->cfg.heartbeat_ttl_ms = DRIVER_HB_TTL_MS;
    }
    d->cfg.announce_zmtp30 = o->zmtp30;
    d->now = DRIVER_START_NS;
    d->sent = malloc(DRIVER_SENT_CAP);
    FUZZ_CHECK(d->sent != NULL);

    /* Init needs 64 bytes; the tight mode then works with reserve + a few bytes. */
    uint8_t probe_buf[MCQ_ZMTP_GREETING_LEN];
    struct mcq_zmtp_out probe = {.buf = probe_buf, .len = 0, .cap = sizeof(probe_buf)};
    int rc = mcq_zmtp_session_init(&d->s, &d->cfg, d->now, &probe);
    if (rc < 0) {
        free(d->sent);
        return rc;
    }
    FUZZ_CHECK(probe.len == MCQ_ZMTP_GREETING_LEN);
    size_t reserve = mcq_zmtp_session_out_reserve(&d->s);
    size_t cap = o->tight_out ? reserve + DRIVER_TIGHT_EXTRA : DRIVER_BIG_OUT;
    if (cap < MCQ_ZMTP_GREETING_LEN)
        cap = MCQ_ZMTP_GREETING_LEN;
    d->out = (struct mcq_zmtp_out){.buf = malloc(cap), .len = 0, .cap = cap};
    FUZZ_CHECK(d->out.buf != NULL);
    memcpy(d->out.buf, probe_buf, probe.len);
    d->out.len = probe.len;
    return 0;
}

/* Checks one event against the state machine; answers AUTH. */
static inline void driver_event(struct driver *d, int rc, const struct mcq_zmtp_event *ev,
                                const uint8_t *chunk, size_t consumed_end, unsigned auth_status)
{
    enum mcq_zmtp_state st = mcq_zmtp_session_state(&d->s);
    switch (rc) {
    case MCQ_ZMTP_EV_READY:
        FUZZ_CHECK(!d->ready_seen);
        FUZZ_CHECK(st == MCQ_ZMTP_ACTIVE);
        FUZZ_CHECK(mcq_zmtp_socket_types_compatible(d->cfg.socket_type,
                                                    mcq_zmtp_session_peer_socket_type(&d->s)));
        d->ready_seen = true;
        break;
    case MCQ_ZMTP_EV_AUTH: {
        FUZZ_CHECK(d->cfg.mechanism == &mcq_zmtp_mech_plain_server);
        FUZZ_CHECK(st == MCQ_ZMTP_AUTH_WAIT);
        FUZZ_CHECK(ev->auth && ev->auth->n_credentials == 2);
        FUZZ_CHECK(ev->auth->credentials_len[0] <= MCQ_ZMTP_PLAIN_FIELD_MAX);
        FUZZ_CHECK(ev->auth->credentials_len[1] <= MCQ_ZMTP_PLAIN_FIELD_MAX);
        /* The credentials must be readable until the next call (ASan checks the reads). */
        volatile uint8_t sink = 0;
        for (int i = 0; i < 2; i++)
            for (size_t k = 0; k < ev->auth->credentials_len[i]; k++)
                sink ^= ev->auth->credentials[i][k];
        (void)sink;
        for (int tries = 0;; tries++) {
            int arc = mcq_zmtp_session_auth_reply(&d->s, auth_status, &d->out);
            if (arc == -ENOBUFS && tries < DRIVER_MAX_FLUSHES) {
                driver_flush(d);
                continue;
            }
            FUZZ_CHECK(arc != -ENOBUFS && arc != -EINVAL);
            if (arc < 0) {
                FUZZ_CHECK(auth_status != 200 && arc == -EACCES);
                driver_closed(d, arc);
            } else {
                FUZZ_CHECK(auth_status == 200);
            }
            break;
        }
        break;
    }
    case MCQ_ZMTP_EV_FRAME:
        FUZZ_CHECK(st == MCQ_ZMTP_ACTIVE);
        if (ev->handle == NULL)
            FUZZ_CHECK(ev->data >= chunk && ev->data + ev->len <= chunk + consumed_end);
        else
            fuzz_release_fn(&d->alloc, ev->handle);
        break;
    case MCQ_ZMTP_EV_SUBSCRIPTION:
    case MCQ_ZMTP_EV_PING:
    case MCQ_ZMTP_EV_PONG: {
        FUZZ_CHECK(st == MCQ_ZMTP_ACTIVE);
        volatile uint8_t sink = 0;
        for (size_t k = 0; k < ev->len; k++)
            sink ^= ev->data[k];
        (void)sink;
        if (rc == MCQ_ZMTP_EV_SUBSCRIPTION)
            FUZZ_CHECK(ev->subscribe == true || ev->subscribe == false);
        break;
    }
    default:
        FUZZ_CHECK(!"unknown event type");
    }
}

/* Runs the timers at d->now: tick (flushing on -ENOBUFS) and checks the next deadline. */
static inline void driver_tick(struct driver *d)
{
    if (d->closed)
        return;
    for (int tries = 0;; tries++) {
        int rc = mcq_zmtp_session_tick(&d->s, d->now, &d->out);
        if (rc == -ENOBUFS && tries < DRIVER_MAX_FLUSHES) {
            driver_flush(d);
            continue;
        }
        FUZZ_CHECK(rc == 0 || rc == -ETIMEDOUT);
        if (rc < 0) {
            driver_closed(d, rc);
            return;
        }
        break;
    }
    /* Everything due at now was handled: the caller must not be woken again at once. */
    FUZZ_CHECK(mcq_zmtp_session_deadline(&d->s) > d->now);
}

/* Feeds one chunk (copied to an exactly-sized heap buffer). */
static inline void driver_feed(struct driver *d, const uint8_t *in, size_t n, unsigned auth_status)
{
    if (d->closed)
        return;
    uint8_t *chunk = fuzz_dup(in, n);
    size_t p = 0;
    int flushes = 0;
    while (!d->closed) {
        struct mcq_zmtp_event ev;
        memset(&ev, 0, sizeof(ev));
        size_t used = SIZE_MAX;
        int rc = mcq_zmtp_session_next(&d->s, chunk + p, n - p, d->now, &d->out, &used, &ev);
        FUZZ_CHECK(used <= n - p);
        FUZZ_CHECK(d->out.len <= d->out.cap);
        p += used;
        if (rc == -ENOBUFS) {
            FUZZ_CHECK(flushes++ < DRIVER_MAX_FLUSHES);
            driver_flush(d);
            continue;
        }
        if (rc < 0) {
            FUZZ_CHECK(rc == -EPROTO || rc == -ECONNREFUSED || rc == -ENOMEM);
            driver_closed(d, rc);
            break;
        }
        flushes = 0;
        if (rc == MCQ_ZMTP_EV_NONE) {
            /* Input may only be held back while an auth answer is due. */
            FUZZ_CHECK(p == n || mcq_zmtp_session_state(&d->s) == MCQ_ZMTP_AUTH_WAIT);
            break;
        }
        driver_event(d, rc, &ev, chunk, p, auth_status);
    }
    free(chunk);
}

/* Once active, sends a one-frame message and a subscription through the session's send
 * API with bytes taken from the fuzz input, so the mirror also checks our data frames and
 * SUBSCRIBE/CANCEL (3.1) or 01/00 messages (3.0). */
static inline void driver_send(struct driver *d, const uint8_t *bytes, size_t n)
{
    if (d->closed || mcq_zmtp_session_state(&d->s) != MCQ_ZMTP_ACTIVE || n == 0)
        return;
    for (int tries = 0;; tries++) {
        int rc = mcq_zmtp_session_send_frame(&d->s, 0, bytes, n, &d->out);
        if (rc == -ENOBUFS && tries < DRIVER_MAX_FLUSHES && d->out.len) {
            driver_flush(d);
            continue;
        }
        /* A frame larger than the whole output buffer cannot go this way (tight mode). */
        FUZZ_CHECK(rc == 0 || (rc == -ENOBUFS && d->out.len == 0));
        break;
    }
    for (int tries = 0;; tries++) {
        int rc = mcq_zmtp_session_send_subscription(&d->s, bytes[0] & 1, bytes + 1, n - 1, &d->out);
        if (rc == -ENOBUFS && tries < DRIVER_MAX_FLUSHES && d->out.len) {
            driver_flush(d);
            continue;
        }
        FUZZ_CHECK(rc == 0 || (rc == -ENOBUFS && d->out.len == 0));
        break;
    }
    FUZZ_CHECK(d->out.len <= d->out.cap);
}

/* Releases the session; returns with every reassembly buffer given back. */
static inline void driver_fini(struct driver *d)
{
    driver_flush(d);
    mcq_zmtp_session_release(&d->s);
    FUZZ_CHECK(mcq_zmtp_session_state(&d->s) == MCQ_ZMTP_CLOSED);
    FUZZ_CHECK(d->alloc.live == 0);
    free(d->out.buf);
    free(d->sent);
}

/* Feeds everything `d` sent to a fresh session in the peer's role. Our own bytes must
 * never be a protocol violation to our own decoder. */
static inline void driver_mirror_check(struct driver *d, const struct driver_opts *o)
{
    if (d->sent_overflow)
        return;
    struct driver_opts peer = *o;
    peer.mech = o->mech == DRIVER_PLAIN_CLIENT   ? DRIVER_PLAIN_SERVER
                : o->mech == DRIVER_PLAIN_SERVER ? DRIVER_PLAIN_CLIENT
                                                 : DRIVER_NULL;
    peer.socket_type = driver_peer_type(o->socket_type);
    peer.tight_out = false;
    peer.heartbeats = false;
    peer.auth_status = 200;
    /* Our limits apply to what we receive, not to what we send. */
    memset(&peer.limits, 0, sizeof(peer.limits));
    struct driver *m = malloc(sizeof(*m));
    FUZZ_CHECK(m != NULL);
    FUZZ_CHECK(driver_init(m, &peer) == 0);
    driver_feed(m, d->sent, d->sent_len, peer.auth_status);
    if (m->closed) {
        if (m->close_rc == -EPROTO)
            fprintf(stderr, "mirror refused our bytes: %s\n", mcq_zmtp_session_reason(&m->s));
        FUZZ_CHECK(m->close_rc != -EPROTO);
    }
    driver_fini(m);
    free(m);
}

#endif
