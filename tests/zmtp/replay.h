/* Drives one session over a recorded byte stream: feeds it in chunks, answers auth
 * requests with a fixed status, records every event and keeps everything the session
 * wanted to send. Used by test_vectors.c (and the fuzz targets use the same loop shape). */
#ifndef MCQ_TESTS_ZMTP_REPLAY_H
#define MCQ_TESTS_ZMTP_REPLAY_H

#include "session_util.h"
#include "zmtp/mechanism.h"

#include <errno.h>
#include <stdio.h>

#define REPLAY_OUT_CAP (1u << 16) /* bytes; every recorded handshake fits many times */
#define REPLAY_MAX_EVENTS 128
#define REPLAY_NOW_NS 1000000000ull /* arbitrary non-zero start of the caller's clock */

struct replay {
    struct mcq_zmtp_session s;
    struct mcq_zmtp_config cfg;
    struct mcq_zmtp_plain_credentials creds;
    struct counting_alloc alloc;
    struct mcq_zmtp_out out;
    uint8_t out_buf[REPLAY_OUT_CAP];
    struct event_rec ev[REPLAY_MAX_EVENTS];
    size_t n_ev;
    unsigned auth_status;   /* answer given to every EV_AUTH */
    uint8_t auth_user[256]; /* credentials of the last EV_AUTH, copied */
    size_t auth_user_len;
    uint8_t auth_pass[256];
    size_t auth_pass_len;
    char auth_mechanism[16];
};

/* Configures socket type and mechanism; call replay_start after any further cfg edits. */
static inline void replay_init(struct replay *r, int socket_type,
                               const struct mcq_zmtp_mechanism *mech)
{
    memset(r, 0, sizeof(*r));
    r->cfg.socket_type = socket_type;
    r->cfg.mechanism = mech;
    r->cfg.allocator = counting_allocator(&r->alloc);
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

static inline void replay_copy_auth(struct replay *r, const struct mcq_zmtp_auth_request *a)
{
    snprintf(r->auth_mechanism, sizeof(r->auth_mechanism), "%s", a->mechanism);
    if (a->n_credentials == 2) {
        r->auth_user_len = a->credentials_len[0];
        memcpy(r->auth_user, a->credentials[0], a->credentials_len[0]);
        r->auth_pass_len = a->credentials_len[1];
        memcpy(r->auth_pass, a->credentials[1], a->credentials_len[1]);
    }
}

/* Feeds in[0..len) in pieces of `chunk` bytes (0 = all at once). Returns 0 when all was
 * consumed, or the session's negative errno when it closed (or -EDEADLK if it stopped
 * consuming without an event, which would be an engine bug). */
static inline int replay_feed(struct replay *r, const uint8_t *in, size_t len, size_t chunk)
{
    size_t off = 0;
    while (off < len) {
        size_t n = chunk && chunk < len - off ? chunk : len - off;
        size_t p = 0;
        while (p < n) {
            struct mcq_zmtp_event ev;
            memset(&ev, 0, sizeof(ev));
            size_t used = 0;
            int rc = mcq_zmtp_session_next(&r->s, in + off + p, n - p, REPLAY_NOW_NS, &r->out,
                                           &used, &ev);
            p += used;
            if (rc < 0)
                return rc;
            if (rc == MCQ_ZMTP_EV_NONE) {
                if (p < n && used == 0)
                    return -EDEADLK;
                continue;
            }
            if (r->n_ev < REPLAY_MAX_EVENTS)
                event_rec_take(&r->ev[r->n_ev++], rc, &ev, &r->alloc);
            if (rc == MCQ_ZMTP_EV_AUTH) {
                replay_copy_auth(r, ev.auth);
                int arc = mcq_zmtp_session_auth_reply(&r->s, r->auth_status, &r->out);
                if (arc < 0)
                    return arc;
            }
        }
        off += n;
    }
    return 0;
}

static inline void replay_fini(struct replay *r)
{
    mcq_zmtp_session_release(&r->s);
    for (size_t i = 0; i < r->n_ev; i++)
        event_rec_free(&r->ev[i]);
    r->n_ev = 0;
}

#endif
