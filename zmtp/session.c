#include "zmtp/session.h"
#include "zmtp/mechanism.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

/* Output room kept free while active: a PONG (2 + 5 + 16) or a PING (2 + 5 + 2 + 16). */
#define ACTIVE_OUT_RESERVE 32
#define NS_PER_DECISECOND 100000000ull
#define MS_PER_DECISECOND 100
#define TTL_DS_MAX UINT16_MAX
#define PING_TTL_BYTES 2
/* Command name prefixes (name-length byte + name) of commands the session sends. */
#define CMD_PONG (const uint8_t *)"\004PONG", 5
#define CMD_SUBSCRIBE (const uint8_t *)"\011SUBSCRIBE", 10
#define CMD_CANCEL (const uint8_t *)"\006CANCEL", 7
#define SUB_PREFIX_MAX 0x01 /* 3.0 form: first byte 0x01 subscribe, 0x00 cancel */
/* libzmq's PLAIN ERROR is written "\x05ERROR" in C, which is 0x5E "RROR" on the wire. */
#define LIBZMQ_BAD_ERROR_NAME_LEN 0x5E
#define LIBZMQ_BAD_ERROR_REASON_OFF 5

static void set_reason_v(struct mcq_zmtp_session *s, const char *fmt, va_list ap)
{
    vsnprintf(s->_dec._reason, sizeof(s->_dec._reason), fmt, ap);
}

int mcq_zmtp_session_fail(struct mcq_zmtp_session *s, int err, const char *fmt, ...)
{
    if (s->_state == MCQ_ZMTP_CLOSED)
        return s->_err;
    va_list ap;
    va_start(ap, fmt);
    set_reason_v(s, fmt, ap);
    va_end(ap);
    s->_state = MCQ_ZMTP_CLOSED;
    s->_err = err;
    return err;
}

/* Closes with the reason the decoder (or greeting check) already wrote. */
static int close_with_reason(struct mcq_zmtp_session *s, int err)
{
    s->_state = MCQ_ZMTP_CLOSED;
    s->_err = err;
    return err;
}

static void metadata_spec(const struct mcq_zmtp_config *cfg, struct mcq_zmtp_metadata_spec *m)
{
    m->socket_type = cfg->socket_type;
    m->identity = cfg->identity;
    m->identity_len = cfg->identity_len;
    m->extra = cfg->properties;
    m->n_extra = cfg->n_properties;
}

static size_t out_free(const struct mcq_zmtp_out *out)
{
    return out->cap - out->len;
}

int mcq_zmtp_session_init(struct mcq_zmtp_session *s, const struct mcq_zmtp_config *cfg,
                          uint64_t now_ns, struct mcq_zmtp_out *out)
{
    const struct mcq_zmtp_mechanism *mech = cfg->mechanism ? cfg->mechanism : &mcq_zmtp_mech_null;
    struct mcq_zmtp_metadata_spec m;
    metadata_spec(cfg, &m);
    /* INITIATE is the longest metadata command name we send. */
    long meta = mcq_zmtp_metadata_command_size("INITIATE", &m);
    if (meta < 0 || mech->state_size > MCQ_ZMTP_MECH_STATE_MAX || !mech->wrap != !mech->unwrap ||
        (mech->validate && mech->validate(cfg) < 0))
        return -EINVAL;
    if (out_free(out) < MCQ_ZMTP_GREETING_LEN)
        return -ENOBUFS;
    if (mcq_zmtp_greeting_build(out->buf + out->len, mech->name, mech->as_server,
                                cfg->announce_zmtp30 ? 0 : MCQ_ZMTP_VERSION_MINOR) < 0)
        return -EINVAL;

    memset(s, 0, offsetof(struct mcq_zmtp_session, _mech_state));
    memset(s->_mech_state, 0, mech->state_size);
    s->_cfg = cfg;
    s->_mech = mech;
    size_t reserve = (size_t)meta;
    if (mech->out_max > reserve)
        reserve = mech->out_max;
    s->_wraps = mech->unwrap != NULL;
    s->_active_reserve = ACTIVE_OUT_RESERVE + mech->wrap_overhead;
    if (s->_active_reserve > reserve)
        reserve = s->_active_reserve;
    s->_reserve = reserve;
    s->_sub_filter = cfg->socket_type == MCQ_ZMTP_PUB || cfg->socket_type == MCQ_ZMTP_XPUB;
    uint32_t ivl =
        cfg->handshake_ivl_ms ? cfg->handshake_ivl_ms : MCQ_ZMTP_DEFAULT_HANDSHAKE_IVL_MS;
    s->_deadline_ns = ivl == MCQ_ZMTP_NO_DEADLINE ? UINT64_MAX : now_ns + ivl * MCQ_ZMTP_NS_PER_MS;
    s->_last_rx_ns = now_ns;
    mcq_zmtp_decoder_init(&s->_dec, &cfg->limits, &cfg->allocator, MCQ_ZMTP_GREETING_LEN);
    out->len += MCQ_ZMTP_GREETING_LEN;
    s->_state = MCQ_ZMTP_GREETING;
    return 0;
}

size_t mcq_zmtp_session_out_reserve(const struct mcq_zmtp_session *s)
{
    return s->_reserve;
}

const char *mcq_zmtp_session_reason(const struct mcq_zmtp_session *s)
{
    return s->_state == MCQ_ZMTP_CLOSED ? s->_dec._reason : "";
}

uint64_t mcq_zmtp_session_command_offset(const struct mcq_zmtp_session *s)
{
    return s->_cmd_offset;
}

static void release_lent(struct mcq_zmtp_session *s)
{
    if (s->_cmd_handle) {
        mcq_zmtp_session_free(s, s->_cmd_handle);
        s->_cmd_handle = NULL;
    }
}

void mcq_zmtp_session_release(struct mcq_zmtp_session *s)
{
    release_lent(s);
    mcq_zmtp_decoder_reset(&s->_dec);
    if (s->_state != MCQ_ZMTP_CLOSED) {
        s->_state = MCQ_ZMTP_CLOSED;
        s->_err = -ECONNABORTED;
        snprintf(s->_dec._reason, sizeof(s->_dec._reason), "session released");
    }
}

#define PRINT_NAME_MAX 24 /* bytes of a peer-chosen name quoted in a reason */

int mcq_zmtp_session_unexpected(struct mcq_zmtp_session *s, const struct mcq_zmtp_command *cmd,
                                const char *expected)
{
    char name[PRINT_NAME_MAX];
    mcq_zmtp_printable(cmd->name, cmd->name_len, name, sizeof(name));
    return mcq_zmtp_session_fail(s, -EPROTO,
                                 "command at byte %llu: unexpected \"%s\" in the %s handshake "
                                 "(expected %s)",
                                 (unsigned long long)s->_cmd_offset, name, s->_mech->name,
                                 expected);
}

void mcq_zmtp_session_set_peer_address(struct mcq_zmtp_session *s, const char *address)
{
    s->_peer_address = address;
}

const char *mcq_zmtp_session_peer_address(const struct mcq_zmtp_session *s)
{
    if (s->_peer_address)
        return s->_peer_address;
    return s->_cfg->peer_address ? s->_cfg->peer_address : "";
}

int mcq_zmtp_session_send_metadata(struct mcq_zmtp_session *s, struct mcq_zmtp_out *out,
                                   const char *name)
{
    struct mcq_zmtp_metadata_spec m;
    metadata_spec(s->_cfg, &m);
    int n = mcq_zmtp_encode_metadata_command(out->buf + out->len, out_free(out), name, &m);
    if (n < 0)
        return mcq_zmtp_session_fail(s, n, "cannot send %s: %d bytes of output room short", name,
                                     n);
    out->len += (size_t)n;
    return 0;
}

static bool name_is(const struct mcq_zmtp_property *p, const char *name)
{
    size_t n = strlen(name);
    return p->name_len == n && strncasecmp((const char *)p->name, name, n) == 0;
}

int mcq_zmtp_session_accept_metadata(struct mcq_zmtp_session *s, const uint8_t *data, size_t len)
{
    unsigned long long at = (unsigned long long)s->_cmd_offset;
    char why[MCQ_ZMTP_REASON_LEN];
    struct mcq_zmtp_property p;
    size_t pos = 0;
    bool have_type = false, have_id = false;
    int rc;
    while ((rc = mcq_zmtp_metadata_next(data, len, &pos, &p, why, sizeof(why))) == 1) {
        if (name_is(&p, "Socket-Type")) {
            if (have_type)
                return mcq_zmtp_session_fail(s, -EPROTO,
                                             "command at byte %llu: duplicate Socket-Type", at);
            have_type = true;
            int t = mcq_zmtp_socket_type_parse(p.value, p.value_len);
            if (t < 0) {
                char name[PRINT_NAME_MAX];
                mcq_zmtp_printable(p.value, p.value_len, name, sizeof(name));
                return mcq_zmtp_session_fail(
                    s, -EPROTO, "command at byte %llu: unknown Socket-Type \"%s\" (%zu bytes)", at,
                    name, p.value_len);
            }
            if (!mcq_zmtp_socket_types_compatible(s->_cfg->socket_type, t))
                return mcq_zmtp_session_fail(
                    s, -EPROTO, "command at byte %llu: peer Socket-Type %s cannot talk to our %s",
                    at, mcq_zmtp_socket_type_name(t),
                    mcq_zmtp_socket_type_name(s->_cfg->socket_type));
            s->_peer_type = (uint8_t)t;
        } else if (name_is(&p, "Identity")) {
            if (have_id)
                return mcq_zmtp_session_fail(s, -EPROTO, "command at byte %llu: duplicate Identity",
                                             at);
            have_id = true;
            if (p.value_len > MCQ_ZMTP_IDENTITY_MAX)
                return mcq_zmtp_session_fail(
                    s, -EPROTO, "command at byte %llu: Identity of %zu bytes exceeds 255", at,
                    p.value_len);
            if (p.value_len)
                memcpy(s->_peer_identity, p.value, p.value_len);
            s->_peer_identity_len = (uint8_t)p.value_len;
        }
    }
    if (rc < 0)
        return mcq_zmtp_session_fail(s, -EPROTO, "command at byte %llu: %s", at, why);
    if (!have_type)
        return mcq_zmtp_session_fail(s, -EPROTO, "command at byte %llu: metadata lacks Socket-Type",
                                     at);
    s->_meta = data;
    s->_meta_len = len;
    return 0;
}

/* ERROR in the spec form `05 ERROR len reason`, or libzmq's PLAIN form `5E RROR len reason`.
 * Returns true and the reason (clipped to the body) if the body is an ERROR. */
static bool parse_error(const uint8_t *b, size_t len, const uint8_t **reason, size_t *rlen)
{
    size_t off;
    if (len >= 6 && b[0] == 5 && memcmp(b + 1, "ERROR", 5) == 0)
        off = 6;
    else if (len >= 5 && b[0] == LIBZMQ_BAD_ERROR_NAME_LEN && memcmp(b + 1, "RROR", 4) == 0)
        off = LIBZMQ_BAD_ERROR_REASON_OFF;
    else
        return false;
    size_t n = off < len ? b[off] : 0;
    size_t left = off < len ? len - off - 1 : 0;
    *reason = b + off + (off < len);
    *rlen = n < left ? n : left;
    return true;
}

static void arm_heartbeats(struct mcq_zmtp_session *s, uint64_t now_ns)
{
    if (s->_cfg->heartbeat_ivl_ms)
        s->_next_ping_ns = now_ns + s->_cfg->heartbeat_ivl_ms * MCQ_ZMTP_NS_PER_MS;
}

static int handshake_command(struct mcq_zmtp_session *s, const struct mcq_zmtp_frame *f,
                             uint64_t now_ns, struct mcq_zmtp_out *out, struct mcq_zmtp_event *ev)
{
    const uint8_t *reason;
    size_t rlen;
    if (parse_error(f->data, f->len, &reason, &rlen)) {
        char text[MCQ_ZMTP_ERROR_REASON_MAX + 1];
        mcq_zmtp_printable(reason, rlen, text, sizeof(text));
        return mcq_zmtp_session_fail(s, -ECONNREFUSED, "peer sent ERROR \"%s\" at byte %llu", text,
                                     (unsigned long long)s->_cmd_offset);
    }
    struct mcq_zmtp_command cmd;
    char why[MCQ_ZMTP_REASON_LEN];
    if (mcq_zmtp_command_parse(f->data, f->len, &cmd, why, sizeof(why)) < 0)
        return mcq_zmtp_session_fail(s, -EPROTO, "command at byte %llu: %s",
                                     (unsigned long long)s->_cmd_offset, why);
    int rc = s->_mech->command(s, &cmd, out, ev);
    if (rc < 0)
        return mcq_zmtp_session_fail(s, rc, "%s handshake failed (%d)", s->_mech->name, rc);
    if (rc == MCQ_ZMTP_MECH_DONE) {
        s->_state = MCQ_ZMTP_ACTIVE;
        arm_heartbeats(s, now_ns);
        ev->data = s->_meta;
        ev->len = s->_meta_len;
        ev->handle = NULL;
        return MCQ_ZMTP_EV_READY;
    }
    if (rc == MCQ_ZMTP_MECH_AUTH) {
        s->_state = MCQ_ZMTP_AUTH_WAIT;
        return MCQ_ZMTP_EV_AUTH;
    }
    return MCQ_ZMTP_EV_NONE;
}

void *mcq_zmtp_session_alloc(struct mcq_zmtp_session *s, size_t size, void **handle)
{
    const struct mcq_zmtp_allocator *a = &s->_dec._alloc;
    return a->alloc ? a->alloc(a->user, size, handle) : NULL;
}

void mcq_zmtp_session_free(struct mcq_zmtp_session *s, void *handle)
{
    const struct mcq_zmtp_allocator *a = &s->_dec._alloc;
    if (handle && a->release)
        a->release(a->user, handle);
}

/* One frame whose body is prefix + body: header and copies, or the mechanism's wrapping. */
static int append_frame(struct mcq_zmtp_session *s, uint8_t flags, const uint8_t *prefix,
                        size_t prefix_len, const uint8_t *body, size_t len,
                        struct mcq_zmtp_out *out)
{
    if (s->_wraps)
        return s->_mech->wrap(s, flags, prefix, prefix_len, body, len, out);
    uint8_t hdr[MCQ_ZMTP_HEADER_MAX];
    size_t h = mcq_zmtp_frame_header(hdr, flags, (uint64_t)prefix_len + len);
    if (out_free(out) < h || out_free(out) - h < prefix_len || out_free(out) - h - prefix_len < len)
        return -ENOBUFS;
    memcpy(out->buf + out->len, hdr, h);
    if (prefix_len)
        memcpy(out->buf + out->len + h, prefix, prefix_len);
    if (len)
        memcpy(out->buf + out->len + h + prefix_len, body, len);
    out->len += h + prefix_len + len;
    return 0;
}

int mcq_zmtp_session_send_frame(struct mcq_zmtp_session *s, uint8_t flags, const uint8_t *body,
                                size_t len, struct mcq_zmtp_out *out)
{
    if (s->_state != MCQ_ZMTP_ACTIVE || (flags & ~(MCQ_ZMTP_FLAG_MORE | MCQ_ZMTP_FLAG_COMMAND)) ||
        flags == (MCQ_ZMTP_FLAG_MORE | MCQ_ZMTP_FLAG_COMMAND))
        return -EINVAL;
    return append_frame(s, flags, NULL, 0, body, len, out);
}

int mcq_zmtp_session_send_subscription(struct mcq_zmtp_session *s, bool subscribe,
                                       const uint8_t *topic, size_t len, struct mcq_zmtp_out *out)
{
    if (s->_state != MCQ_ZMTP_ACTIVE)
        return -EINVAL;
    if (s->_peer_minor >= 1)
        return subscribe ? append_frame(s, MCQ_ZMTP_FLAG_COMMAND, CMD_SUBSCRIBE, topic, len, out)
                         : append_frame(s, MCQ_ZMTP_FLAG_COMMAND, CMD_CANCEL, topic, len, out);
    uint8_t prefix = subscribe ? SUB_PREFIX_MAX : 0;
    return append_frame(s, 0, &prefix, 1, topic, len, out);
}

static int active_command(struct mcq_zmtp_session *s, const struct mcq_zmtp_frame *f,
                          struct mcq_zmtp_out *out, struct mcq_zmtp_event *ev)
{
    struct mcq_zmtp_command cmd;
    char why[MCQ_ZMTP_REASON_LEN];
    unsigned long long at = (unsigned long long)s->_cmd_offset;
    if (mcq_zmtp_command_parse(f->data, f->len, &cmd, why, sizeof(why)) < 0)
        return mcq_zmtp_session_fail(s, -EPROTO, "command at byte %llu: %s", at, why);
    ev->handle = NULL;
    if (mcq_zmtp_command_is(&cmd, "PING")) {
        if (cmd.len < PING_TTL_BYTES)
            return mcq_zmtp_session_fail(
                s, -EPROTO, "PING at byte %llu: %zu data bytes, the 2-byte TTL is missing", at,
                cmd.len);
        uint16_t ttl = (uint16_t)(cmd.data[0] << 8 | cmd.data[1]);
        size_t ctx = cmd.len - PING_TTL_BYTES;
        int rc =
            append_frame(s, MCQ_ZMTP_FLAG_COMMAND, CMD_PONG, cmd.data + PING_TTL_BYTES,
                         ctx < MCQ_ZMTP_PING_CONTEXT_MAX ? ctx : MCQ_ZMTP_PING_CONTEXT_MAX, out);
        if (rc < 0)
            return mcq_zmtp_session_fail(s, rc, "no output room for PONG");
        s->_peer_ttl_ns = ttl * NS_PER_DECISECOND;
        ev->ttl_ds = ttl;
        ev->data = cmd.data + PING_TTL_BYTES;
        ev->len = cmd.len - PING_TTL_BYTES;
        return MCQ_ZMTP_EV_PING;
    }
    if (mcq_zmtp_command_is(&cmd, "PONG")) {
        ev->data = cmd.data;
        ev->len = cmd.len;
        return MCQ_ZMTP_EV_PONG;
    }
    bool sub = mcq_zmtp_command_is(&cmd, "SUBSCRIBE");
    if (sub || mcq_zmtp_command_is(&cmd, "CANCEL")) {
        ev->subscribe = sub;
        ev->data = cmd.data;
        ev->len = cmd.len;
        return MCQ_ZMTP_EV_SUBSCRIPTION;
    }
    /* libzmq ignores every other command once the handshake is done. */
    return MCQ_ZMTP_EV_NONE;
}

static int greeting_step(struct mcq_zmtp_session *s, const uint8_t *in, size_t len,
                         struct mcq_zmtp_out *out, size_t *off)
{
    size_t take = MCQ_ZMTP_GREETING_LEN - s->_greeting_len;
    if (take > len)
        take = len;
    if (take)
        memcpy(s->_greeting + s->_greeting_len, in, take);
    s->_greeting_len += (uint8_t)take;
    *off = take;
    struct mcq_zmtp_greeting g;
    if (mcq_zmtp_greeting_check(s->_greeting, s->_greeting_len, s->_mech->name, &g, s->_dec._reason,
                                sizeof(s->_dec._reason)) < 0)
        return close_with_reason(s, -EPROTO);
    if (s->_greeting_len < MCQ_ZMTP_GREETING_LEN)
        return 0;
    s->_peer_minor = g.minor;
    s->_state = MCQ_ZMTP_HANDSHAKE;
    int rc = s->_mech->start(s, out);
    if (rc < 0)
        return mcq_zmtp_session_fail(s, rc, "%s handshake could not start (%d)", s->_mech->name,
                                     rc);
    return 0;
}

int mcq_zmtp_session_next(struct mcq_zmtp_session *s, const uint8_t *in, size_t len,
                          uint64_t now_ns, struct mcq_zmtp_out *out, size_t *consumed,
                          struct mcq_zmtp_event *ev)
{
    size_t off = 0, used;
    int rc;
    struct mcq_zmtp_frame f;

    release_lent(s);
    *consumed = 0;
    if (__builtin_expect(s->_state == MCQ_ZMTP_CLOSED, 0))
        return s->_err;
    if (len) {
        s->_last_rx_ns = now_ns;
        s->_pong_deadline_ns = 0;
    }
    if (__builtin_expect(s->_state == MCQ_ZMTP_GREETING, 0)) {
        if (out_free(out) < s->_reserve)
            return -ENOBUFS;
        if ((rc = greeting_step(s, in, len, out, &off)) < 0) {
            *consumed = off;
            return rc;
        }
    }
    for (;;) {
        if (__builtin_expect(s->_state != MCQ_ZMTP_ACTIVE, 0)) {
            if (s->_state != MCQ_ZMTP_HANDSHAKE)
                break; /* greeting incomplete, or waiting for the auth answer */
            /* The inline decoder path does not track frame starts; reasons need them here. */
            if (s->_dec._state == 0)
                s->_dec._frame_start = s->_dec._offset;
            if (out_free(out) < s->_reserve &&
                mcq_zmtp_decoder_next_is_command(&s->_dec, in + off, len - off)) {
                *consumed = off;
                return -ENOBUFS;
            }
        } else if (__builtin_expect(out_free(out) < s->_active_reserve, 0) &&
                   (s->_wraps || mcq_zmtp_decoder_next_is_command(&s->_dec, in + off, len - off))) {
            *consumed = off;
            return -ENOBUFS;
        }
        if (__builtin_expect(s->_wraps, 0) && s->_dec._state == 0)
            s->_dec._frame_start = s->_dec._offset; /* unwrapped commands name their byte */
        rc = mcq_zmtp_decoder_next(&s->_dec, in + off, len - off, &used, &f);
        off += used;
        if (rc <= 0) {
            *consumed = off;
            return rc < 0 ? close_with_reason(s, rc) : MCQ_ZMTP_EV_NONE;
        }
        if (__builtin_expect(s->_wraps, 0) && s->_state == MCQ_ZMTP_ACTIVE) {
            s->_cmd_offset = s->_dec._frame_start;
            if ((rc = s->_mech->unwrap(s, &f)) < 0) {
                s->_cmd_handle = f.handle; /* unwrap leaves f alone when it fails */
                *consumed = off;
                return mcq_zmtp_session_fail(s, rc, "%s frame could not be unwrapped (%d)",
                                             s->_mech->name, rc);
            }
        }
        if (__builtin_expect(!(f.flags & MCQ_ZMTP_FLAG_COMMAND), 1)) {
            if (__builtin_expect(s->_state != MCQ_ZMTP_ACTIVE, 0)) {
                s->_cmd_handle = f.handle;
                *consumed = off;
                return mcq_zmtp_session_fail(
                    s, -EPROTO,
                    "byte %llu: data frame (flags 0x%02x) before the handshake completed",
                    (unsigned long long)s->_dec._frame_start, f.flags);
            }
            *consumed = off;
            if (s->_sub_filter && !s->_mid_msg && !(f.flags & MCQ_ZMTP_FLAG_MORE) && f.len &&
                f.data[0] <= SUB_PREFIX_MAX) {
                /* ZMTP 3.0 subscription message, normalised into the 3.1 event. */
                s->_cmd_handle = f.handle;
                ev->subscribe = f.data[0] == SUB_PREFIX_MAX;
                ev->data = f.data + 1;
                ev->len = f.len - 1;
                ev->handle = NULL;
                return MCQ_ZMTP_EV_SUBSCRIPTION;
            }
            s->_mid_msg = (f.flags & MCQ_ZMTP_FLAG_MORE) != 0;
            ev->data = f.data;
            ev->len = f.len;
            ev->handle = f.handle;
            ev->more = s->_mid_msg;
            return MCQ_ZMTP_EV_FRAME;
        }
        s->_cmd_handle = f.handle;
        s->_cmd_offset = s->_dec._frame_start;
        rc = s->_state == MCQ_ZMTP_ACTIVE ? active_command(s, &f, out, ev)
                                          : handshake_command(s, &f, now_ns, out, ev);
        if (rc != MCQ_ZMTP_EV_NONE) {
            *consumed = off;
            return rc;
        }
        release_lent(s);
    }
    *consumed = off;
    return MCQ_ZMTP_EV_NONE;
}

int mcq_zmtp_session_auth_reply(struct mcq_zmtp_session *s, unsigned status_code,
                                struct mcq_zmtp_out *out)
{
    if (s->_state != MCQ_ZMTP_AUTH_WAIT || !s->_mech->auth_reply)
        return -EINVAL;
    if (out_free(out) < s->_reserve)
        return -ENOBUFS;
    int rc = s->_mech->auth_reply(s, status_code, out);
    if (rc < 0)
        return mcq_zmtp_session_fail(s, rc, "authentication refused (status %u)", status_code);
    s->_state = MCQ_ZMTP_HANDSHAKE;
    return 0;
}

static uint16_t ttl_deciseconds(uint32_t ttl_ms)
{
    uint32_t ds = ttl_ms / MS_PER_DECISECOND;
    return ds > TTL_DS_MAX ? TTL_DS_MAX : (uint16_t)ds;
}

int mcq_zmtp_session_tick(struct mcq_zmtp_session *s, uint64_t now_ns, struct mcq_zmtp_out *out)
{
    const struct mcq_zmtp_config *cfg = s->_cfg;
    if (s->_state == MCQ_ZMTP_CLOSED)
        return s->_err;
    if (s->_state != MCQ_ZMTP_ACTIVE) {
        if (now_ns >= s->_deadline_ns)
            return mcq_zmtp_session_fail(s, -ETIMEDOUT, "handshake not complete within %u ms",
                                         cfg->handshake_ivl_ms ? cfg->handshake_ivl_ms
                                                               : MCQ_ZMTP_DEFAULT_HANDSHAKE_IVL_MS);
        return 0;
    }
    if (s->_pong_deadline_ns && now_ns >= s->_pong_deadline_ns)
        return mcq_zmtp_session_fail(s, -ETIMEDOUT, "no traffic within %u ms after our PING",
                                     cfg->heartbeat_timeout_ms ? cfg->heartbeat_timeout_ms
                                                               : cfg->heartbeat_ivl_ms);
    if (s->_peer_ttl_ns && now_ns - s->_last_rx_ns >= s->_peer_ttl_ns)
        return mcq_zmtp_session_fail(s, -ETIMEDOUT, "peer silent for its PING TTL of %llu ms",
                                     (unsigned long long)(s->_peer_ttl_ns / MCQ_ZMTP_NS_PER_MS));
    if (s->_next_ping_ns && now_ns >= s->_next_ping_ns) {
        uint16_t ttl = ttl_deciseconds(cfg->heartbeat_ttl_ms);
        uint8_t ping[] = {4, 'P', 'I', 'N', 'G', (uint8_t)(ttl >> 8), (uint8_t)ttl};
        if (append_frame(s, MCQ_ZMTP_FLAG_COMMAND, ping, sizeof(ping), NULL, 0, out) < 0)
            return -ENOBUFS;
        s->_next_ping_ns = now_ns + cfg->heartbeat_ivl_ms * MCQ_ZMTP_NS_PER_MS;
        if (!s->_pong_deadline_ns) {
            uint32_t t =
                cfg->heartbeat_timeout_ms ? cfg->heartbeat_timeout_ms : cfg->heartbeat_ivl_ms;
            s->_pong_deadline_ns = now_ns + t * MCQ_ZMTP_NS_PER_MS;
        }
    }
    return 0;
}

static uint64_t earliest(uint64_t a, uint64_t b)
{
    if (!b)
        return a;
    return b < a ? b : a;
}

uint64_t mcq_zmtp_session_deadline(const struct mcq_zmtp_session *s)
{
    switch (s->_state) {
    case MCQ_ZMTP_CLOSED:
        return UINT64_MAX;
    case MCQ_ZMTP_ACTIVE: {
        uint64_t t = earliest(UINT64_MAX, s->_next_ping_ns);
        t = earliest(t, s->_pong_deadline_ns);
        if (s->_peer_ttl_ns)
            t = earliest(t, s->_last_rx_ns + s->_peer_ttl_ns);
        return t;
    }
    default:
        return s->_deadline_ns;
    }
}
