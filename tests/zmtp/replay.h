/* Drives one session over a recorded byte stream: feeds it in chunks (through helpers.h's
 * feed, which answers auth requests with a fixed status and records every event) and
 * keeps everything the session wanted to send. Used by test_vectors.c. */
#ifndef MCQ_TESTS_ZMTP_REPLAY_H
#define MCQ_TESTS_ZMTP_REPLAY_H

#include "zmtp/helpers.h"

#define REPLAY_OUT_CAP (1u << 16)   /* bytes; every recorded handshake fits many times */
#define REPLAY_NOW_NS 1000000000ull /* arbitrary non-zero start of the caller's clock */

struct replay {
    struct mcq_zmtp_session s;
    struct mcq_zmtp_config cfg;
    struct mcq_zmtp_plain_credentials creds;
    struct counting_alloc ca;
    struct mcq_zmtp_out out;
    uint8_t out_buf[REPLAY_OUT_CAP];
    struct rec_log log;
    unsigned auth_status; /* answer given to every EV_AUTH */
};

/* Configures socket type and mechanism; call replay_start after any further cfg edits. */
static inline void replay_init(struct replay *r, int socket_type,
                               const struct mcq_zmtp_mechanism *mech)
{
    memset(r, 0, sizeof(*r));
    r->cfg.socket_type = socket_type;
    r->cfg.mechanism = mech;
    r->cfg.allocator = ca_allocator(&r->ca);
    r->out = (struct mcq_zmtp_out){.buf = r->out_buf, .len = 0, .cap = REPLAY_OUT_CAP};
    r->auth_status = 200;
}

static inline void replay_set_plain_client(struct replay *r, const char *user, const char *pass)
{
    r->creds = (struct mcq_zmtp_plain_credentials){
        .username = (const uint8_t *)user,
        .username_len = strlen(user),
        .password = (const uint8_t *)pass,
        .password_len = strlen(pass),
    };
    r->cfg.mechanism = &mcq_zmtp_mech_plain_client;
    r->cfg.mechanism_arg = &r->creds;
}

static inline int replay_start(struct replay *r)
{
    return mcq_zmtp_session_init(&r->s, &r->cfg, REPLAY_NOW_NS, &r->out);
}

/* Feeds in[0..len) in pieces of `chunk` bytes (0 = all at once). Returns 0 when all was
 * consumed, or the session's negative errno once it closed. */
static inline int replay_feed(struct replay *r, const uint8_t *in, size_t len, size_t chunk)
{
    for (size_t off = 0; off < len && !r->log.err;) {
        size_t n = chunk && chunk < len - off ? chunk : len - off;
        feed(&r->s, &r->ca, in + off, n, REPLAY_NOW_NS, &r->out, &r->log, r->auth_status);
        off += n;
    }
    return r->log.err;
}

/* Releases the session and the recorded events; asserts every buffer came back. */
static inline void replay_fini(struct replay *r)
{
    mcq_zmtp_session_release(&r->s);
    rec_free(&r->log);
    cr_assert_eq(r->ca.allocs, r->ca.releases, "reassembly buffers leaked");
}

#endif
