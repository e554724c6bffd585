/* Socket options: libzmq's numbers, value types and defaults. An option this socket type
 * would ignore is refused with -ENOTSUP rather than stored (an option that silently does
 * nothing misleads: monocoque-rust P13). Options are frozen into a snapshot per bind or
 * connect, so they apply to connections made after the call. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "patterns/socket_int.h"
#include "zmtp/mechanism.h"

#define DEFAULT_HWM 1000                        /* messages, libzmq's SNDHWM/RCVHWM */
#define DEFAULT_SNDHWM_BYTES (16ll << 20)       /* bytes */
#define DEFAULT_RECONNECT_IVL_MS 100            /* libzmq */
#define LINGER_FOREVER_MS (24u * 3600u * 1000u) /* LINGER -1: a day stands for forever */
#define HEARTBEAT_TTL_MAX_MS 6553599            /* libzmq: the wire carries deciseconds, 16 bit */
#define UNLIMITED_WINDOW (1u << 20)             /* credits for HWM 0: bounded all the same */

void mcq_sockopts_defaults(struct mcq_sockopts *o, int type)
{
    (void)type;
    memset(o, 0, sizeof(*o));
    o->sndhwm = DEFAULT_HWM;
    o->rcvhwm = DEFAULT_HWM;
    o->sndhwm_bytes = DEFAULT_SNDHWM_BYTES;
    o->maxmsgsize = -1;
    o->linger = -1;
    o->reconnect_ivl = DEFAULT_RECONNECT_IVL_MS;
    o->heartbeat_timeout = -1;
    o->handshake_ivl = MCQ_ZMTP_DEFAULT_HANDSHAKE_IVL_MS;
    o->tcp_keepalive = -1;
    o->tcp_keepalive_cnt = -1;
    o->tcp_keepalive_idle = -1;
    o->tcp_keepalive_intvl = -1;
}

static bool can_send(int type)
{
    return type != MCQ_PULL;
}

static bool can_receive(int type)
{
    return type != MCQ_PUSH && type != MCQ_PUB;
}

static int get_int(const void *v, size_t len, int *out)
{
    if (!v || len != sizeof(int))
        return -EINVAL;
    memcpy(out, v, sizeof(int));
    return 0;
}

static int set_str(char *dst, size_t *dst_len, const void *v, size_t len)
{
    if (len > MCQ_OPT_STR_MAX || (len && !v))
        return -EINVAL;
    if (len)
        memcpy(dst, v, len);
    dst[len] = '\0';
    if (dst_len)
        *dst_len = len;
    return 0;
}

/* Options that take an int within [lo, hi]. NULL: not an int option. */
static int *int_option(struct mcq_sockopts *o, int option, int *lo, int *hi)
{
    *hi = INT32_MAX;
    *lo = 0;
    switch (option) {
    case MCQ_SNDHWM:
        return &o->sndhwm;
    case MCQ_RCVHWM:
        return &o->rcvhwm;
    case MCQ_LINGER:
        *lo = -1;
        return &o->linger;
    case MCQ_RECONNECT_IVL:
        *lo = -1;
        return &o->reconnect_ivl;
    case MCQ_RECONNECT_IVL_MAX:
        return &o->reconnect_ivl_max;
    case MCQ_HEARTBEAT_IVL:
        return &o->heartbeat_ivl;
    case MCQ_HEARTBEAT_TIMEOUT:
        *lo = -1;
        return &o->heartbeat_timeout;
    case MCQ_HEARTBEAT_TTL:
        *hi = HEARTBEAT_TTL_MAX_MS;
        return &o->heartbeat_ttl;
    case MCQ_HANDSHAKE_IVL:
        return &o->handshake_ivl;
    case MCQ_TCP_KEEPALIVE:
        *lo = -1;
        *hi = 1;
        return &o->tcp_keepalive;
    case MCQ_TCP_KEEPALIVE_CNT:
        *lo = -1;
        return &o->tcp_keepalive_cnt;
    case MCQ_TCP_KEEPALIVE_IDLE:
        *lo = -1;
        return &o->tcp_keepalive_idle;
    case MCQ_TCP_KEEPALIVE_INTVL:
        *lo = -1;
        return &o->tcp_keepalive_intvl;
    case MCQ_PLAIN_SERVER:
        *hi = 1;
        return &o->plain_server;
    case MCQ_CONNECT_TIMEOUT:
        return &o->connect_timeout;
    default:
        return NULL;
    }
}

/* Whether `option` does something for `type`. */
static bool supported(int type, int option)
{
    switch (option) {
    case MCQ_SNDHWM:
    case MCQ_SNDHWM_BYTES:
        return can_send(type);
    case MCQ_RCVHWM:
        /* Input goes to on_msg as it arrives; what a peer has waiting on the socket side
         * (input held for its routing-id claim or its previous connection's on_peer_down,
         * REP requests waiting for their turn) is what RCVHWM bounds. */
        return can_receive(type);
    case MCQ_ROUTING_ID:
        return mcq_zmtp_socket_type_sends_identity(type);
    case MCQ_ROUTER_MANDATORY:
    case MCQ_ROUTER_HANDOVER:
        return type == MCQ_ROUTER;
    case MCQ_REQ_CORRELATE:
    case MCQ_REQ_RELAXED:
        return type == MCQ_REQ;
    case MCQ_SUBSCRIBE:
    case MCQ_UNSUBSCRIBE:
        return false;
    default:
        return true;
    }
}

/* The 0/1 options the shards read at any time (relaxed atomics), or NULL. */
static _Atomic int *mode_option(struct mcq_socket *s, int option)
{
    switch (option) {
    case MCQ_ROUTER_MANDATORY:
        return &s->mandatory;
    case MCQ_ROUTER_HANDOVER:
        return &s->handover;
    case MCQ_REQ_CORRELATE:
        return &s->req_correlate;
    case MCQ_REQ_RELAXED:
        return &s->req_relaxed;
    default:
        return NULL;
    }
}

int mcq_setsockopt(struct mcq_socket *s, int option, const void *value, size_t len)
{
    if (!s)
        return -EINVAL;
    int lo, hi, iv = 0, rc = 0;
    struct mcq_sockopts *o = &s->o;
    pthread_mutex_lock(&s->lock);
    int *ip = int_option(o, option, &lo, &hi);
    if (ip) {
        rc = get_int(value, len, &iv);
        if (rc == 0 && (iv < lo || iv > hi))
            rc = -EINVAL;
        if (rc == 0 && !supported(s->type, option))
            rc = -ENOTSUP;
        if (rc == 0)
            *ip = iv;
        goto out;
    }
    if (!supported(s->type, option)) {
        rc = -ENOTSUP;
        goto out;
    }
    switch (option) {
    case MCQ_SNDHWM_BYTES:
    case MCQ_MAXMSGSIZE: {
        int64_t v;
        if (!value || len != sizeof(v)) {
            rc = -EINVAL;
            break;
        }
        memcpy(&v, value, sizeof(v));
        if (v < (option == MCQ_MAXMSGSIZE ? -1 : 0)) {
            rc = -EINVAL;
            break;
        }
        if (option == MCQ_MAXMSGSIZE)
            o->maxmsgsize = v;
        else
            o->sndhwm_bytes = v;
        break;
    }
    case MCQ_ROUTING_ID:
        /* A leading 0x00 is reserved for generated ids (RFC 23). */
        if (len < 1 || len > MCQ_ROUTING_ID_MAX || !value || ((const uint8_t *)value)[0] == 0) {
            rc = -EINVAL;
            break;
        }
        memcpy(o->routing_id, value, len);
        o->routing_id_len = len;
        break;
    case MCQ_ROUTER_MANDATORY:
    case MCQ_ROUTER_HANDOVER:
    case MCQ_REQ_CORRELATE:
    case MCQ_REQ_RELAXED:
        rc = get_int(value, len, &iv);
        if (rc == 0 && iv != 0 && iv != 1)
            rc = -EINVAL;
        if (rc == 0)
            atomic_store_explicit(mode_option(s, option), iv, memory_order_relaxed);
        break;
    case MCQ_PLAIN_USERNAME:
        rc = set_str(o->plain_username, &o->plain_username_len, value, len);
        if (rc == 0) {
            o->plain_client = true;
            o->plain_server = 0;
        }
        break;
    case MCQ_PLAIN_PASSWORD:
        rc = set_str(o->plain_password, &o->plain_password_len, value, len);
        if (rc == 0) {
            o->plain_client = true;
            o->plain_server = 0;
        }
        break;
    case MCQ_ZAP_DOMAIN:
        rc = set_str(o->zap_domain, NULL, value, len);
        break;
    default:
        rc = -EINVAL;
        break;
    }
out:
    if (rc == 0 && option == MCQ_PLAIN_SERVER && iv)
        o->plain_client = false;
    pthread_mutex_unlock(&s->lock);
    return rc;
}

static int put_bytes(void *value, size_t *len, const void *src, size_t n)
{
    if (!value || !len || *len < n)
        return -EINVAL;
    memcpy(value, src, n);
    *len = n;
    return 0;
}

int mcq_getsockopt(const struct mcq_socket *cs, int option, void *value, size_t *len)
{
    if (!cs || !len)
        return -EINVAL;
    struct mcq_socket *s = (struct mcq_socket *)cs;
    int lo, hi, rc;
    pthread_mutex_lock(&s->lock);
    struct mcq_sockopts *o = &s->o;
    int *ip = int_option(o, option, &lo, &hi);
    if (ip) {
        rc = supported(s->type, option) ? put_bytes(value, len, ip, sizeof(int)) : -ENOTSUP;
        goto out;
    }
    switch (option) {
    case MCQ_SNDHWM_BYTES:
        rc = supported(s->type, option) ? put_bytes(value, len, &o->sndhwm_bytes, sizeof(int64_t))
                                        : -ENOTSUP;
        break;
    case MCQ_MAXMSGSIZE:
        rc = put_bytes(value, len, &o->maxmsgsize, sizeof(int64_t));
        break;
    case MCQ_ROUTING_ID:
        rc = supported(s->type, option) ? put_bytes(value, len, o->routing_id, o->routing_id_len)
                                        : -ENOTSUP;
        break;
    case MCQ_ROUTER_MANDATORY:
    case MCQ_ROUTER_HANDOVER:
    case MCQ_REQ_CORRELATE:
    case MCQ_REQ_RELAXED: {
        /* libzmq has these set-only; reading them back is this API's convention. */
        int v = atomic_load_explicit(mode_option(s, option), memory_order_relaxed);
        rc = supported(s->type, option) ? put_bytes(value, len, &v, sizeof(v)) : -ENOTSUP;
        break;
    }
    case MCQ_PLAIN_USERNAME:
        rc = put_bytes(value, len, o->plain_username, o->plain_username_len + 1);
        break;
    case MCQ_PLAIN_PASSWORD:
        rc = put_bytes(value, len, o->plain_password, o->plain_password_len + 1);
        break;
    case MCQ_ZAP_DOMAIN:
        rc = put_bytes(value, len, o->zap_domain, strlen(o->zap_domain) + 1);
        break;
    case MCQ_LAST_ENDPOINT:
        rc = put_bytes(value, len, s->last_endpoint, strlen(s->last_endpoint) + 1);
        break;
    default:
        rc = -EINVAL;
        break;
    }
out:
    pthread_mutex_unlock(&s->lock);
    return rc;
}

static unsigned nonneg(int v)
{
    return v > 0 ? (unsigned)v : 0;
}

struct mcq_cfgsnap *mcq_cfgsnap_new(struct mcq_socket *s, const struct mcq_peer_ops *ops)
{
    const struct mcq_sockopts *o = &s->o;
    struct mcq_cfgsnap *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    struct mcq_peer_cfg *p = &c->pcfg;
    struct mcq_zmtp_config *z = &p->zmtp;
    p->ops = ops;
    z->socket_type = s->type;
    if (o->plain_server) {
        z->mechanism = &mcq_zmtp_mech_plain_server;
    } else if (o->plain_client) {
        memcpy(c->username, o->plain_username, o->plain_username_len);
        memcpy(c->password, o->plain_password, o->plain_password_len);
        c->creds = (struct mcq_zmtp_plain_credentials){
            .username = c->username,
            .username_len = o->plain_username_len,
            .password = c->password,
            .password_len = o->plain_password_len,
        };
        z->mechanism = &mcq_zmtp_mech_plain_client;
        z->mechanism_arg = &c->creds;
    }
    memcpy(c->identity, o->routing_id, o->routing_id_len);
    z->identity = c->identity;
    z->identity_len = o->routing_id_len;
    memcpy(c->zap_domain, o->zap_domain, sizeof(c->zap_domain));
    z->zap_domain = c->zap_domain;
    /* libzmq's MAXMSGSIZE bounds each frame; -1 leaves only the decoder's message cap. */
    z->limits.max_frame_size = o->maxmsgsize > 0 ? (uint64_t)o->maxmsgsize : 0;
    z->handshake_ivl_ms = o->handshake_ivl ? (uint32_t)o->handshake_ivl : MCQ_ZMTP_NO_DEADLINE;
    z->heartbeat_ivl_ms = nonneg(o->heartbeat_ivl);
    z->heartbeat_timeout_ms = nonneg(o->heartbeat_timeout);
    z->heartbeat_ttl_ms = nonneg(o->heartbeat_ttl);
    p->conn.linger_ms = o->linger < 0 ? LINGER_FOREVER_MS : nonneg(o->linger);
    p->conn.keepalive = o->tcp_keepalive < 0    ? MCQ_KEEPALIVE_OS
                        : o->tcp_keepalive == 1 ? MCQ_KEEPALIVE_ON
                                                : MCQ_KEEPALIVE_OFF;
    p->conn.keepalive_cnt = nonneg(o->tcp_keepalive_cnt);
    p->conn.keepalive_idle_s = nonneg(o->tcp_keepalive_idle);
    p->conn.keepalive_intvl_s = nonneg(o->tcp_keepalive_intvl);
    p->sndhwm = (unsigned)o->sndhwm;
    p->sndhwm_bytes = (uint64_t)o->sndhwm_bytes;
    p->reconnect_ivl_ms = o->reconnect_ivl;
    p->reconnect_ivl_max_ms = o->reconnect_ivl_max;
    p->connect_timeout_ms = (uint32_t)o->connect_timeout;
    c->window = o->sndhwm > 0 ? (uint32_t)o->sndhwm : UNLIMITED_WINDOW;
    c->rcvhwm = (uint32_t)o->rcvhwm;
    c->linger = o->linger;
    c->next = s->cfgs;
    s->cfgs = c;
    return c;
}
