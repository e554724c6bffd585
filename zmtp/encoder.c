#include "zmtp/encoder.h"

#include <errno.h>
#include <string.h>

#define NAME_LEN_MAX 255  /* command and property names: 1-byte length */
#define VALUE_LEN_BYTES 4 /* property value length field */
#define PING_TTL_BYTES 2  /* big-endian deciseconds */
#define CMD_SUBSCRIBE "SUBSCRIBE"
#define CMD_CANCEL "CANCEL"
#define SUB_PREFIX_SUBSCRIBE 0x01 /* ZMTP 3.0 subscription message first byte */
#define SUB_PREFIX_CANCEL 0x00

/* Appends bytes to a bounded buffer; overflow is remembered and reported once. */
struct wbuf {
    uint8_t *p;
    size_t len;
    size_t cap;
};

static void put(struct wbuf *w, const void *src, size_t n)
{
    if (w->len <= w->cap && n <= w->cap - w->len && n)
        memcpy(w->p + w->len, src, n);
    w->len += n;
}

static void put_u8(struct wbuf *w, uint8_t v)
{
    put(w, &v, 1);
}

static void put_u32(struct wbuf *w, uint32_t v)
{
    uint8_t b[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
    put(w, b, sizeof(b));
}

static int finish(const struct wbuf *w)
{
    return w->len <= w->cap ? (int)w->len : -ENOBUFS;
}

/* Command frame header + name for a body of name + data_len bytes. */
static void put_command_head(struct wbuf *w, const char *name, uint64_t data_len)
{
    size_t n = strlen(name);
    uint8_t hdr[MCQ_ZMTP_HEADER_MAX];
    put(w, hdr, mcq_zmtp_frame_header(hdr, MCQ_ZMTP_FLAG_COMMAND, 1 + n + data_len));
    put_u8(w, (uint8_t)n);
    put(w, name, n);
}

static long metadata_body_size(const struct mcq_zmtp_metadata_spec *m)
{
    const char *type = mcq_zmtp_socket_type_name(m->socket_type);
    if (!type || m->identity_len > MCQ_ZMTP_IDENTITY_MAX)
        return -EINVAL;
    long n = 1 + (long)strlen("Socket-Type") + VALUE_LEN_BYTES + (long)strlen(type);
    if (mcq_zmtp_socket_type_sends_identity(m->socket_type))
        n += 1 + (long)strlen("Identity") + VALUE_LEN_BYTES + (long)m->identity_len;
    for (size_t i = 0; i < m->n_extra; i++) {
        const struct mcq_zmtp_property *p = &m->extra[i];
        if (p->name_len == 0 || p->name_len > NAME_LEN_MAX || p->value_len > INT32_MAX)
            return -EINVAL;
        n += 1 + (long)p->name_len + VALUE_LEN_BYTES + (long)p->value_len;
        if (n > INT32_MAX)
            return -EINVAL;
    }
    return n;
}

long mcq_zmtp_metadata_command_size(const char *command, const struct mcq_zmtp_metadata_spec *m)
{
    size_t name = strlen(command);
    long body = metadata_body_size(m);
    if (body < 0 || name == 0 || name > NAME_LEN_MAX)
        return -EINVAL;
    body += 1 + (long)name;
    return body + (body <= MCQ_ZMTP_SHORT_MAX ? 2 : MCQ_ZMTP_HEADER_MAX);
}

static void put_property(struct wbuf *w, const char *name, const void *value, size_t len)
{
    size_t n = strlen(name);
    put_u8(w, (uint8_t)n);
    put(w, name, n);
    put_u32(w, (uint32_t)len);
    put(w, value, len);
}

int mcq_zmtp_encode_metadata_command(uint8_t *out, size_t cap, const char *command,
                                     const struct mcq_zmtp_metadata_spec *m)
{
    long body = metadata_body_size(m);
    size_t name = strlen(command);
    if (body < 0 || name == 0 || name > NAME_LEN_MAX)
        return -EINVAL;
    struct wbuf w = {out, 0, cap};
    put_command_head(&w, command, (uint64_t)body);
    const char *type = mcq_zmtp_socket_type_name(m->socket_type);
    put_property(&w, "Socket-Type", type, strlen(type));
    if (mcq_zmtp_socket_type_sends_identity(m->socket_type))
        put_property(&w, "Identity", m->identity, m->identity_len);
    for (size_t i = 0; i < m->n_extra; i++) {
        const struct mcq_zmtp_property *p = &m->extra[i];
        put_u8(&w, (uint8_t)p->name_len);
        put(&w, p->name, p->name_len);
        put_u32(&w, (uint32_t)p->value_len);
        put(&w, p->value, p->value_len);
    }
    return finish(&w);
}

int mcq_zmtp_encode_error(uint8_t *out, size_t cap, const char *reason)
{
    size_t n = strlen(reason);
    if (n > MCQ_ZMTP_ERROR_REASON_MAX)
        return -EINVAL;
    struct wbuf w = {out, 0, cap};
    put_command_head(&w, "ERROR", 1 + n);
    put_u8(&w, (uint8_t)n);
    put(&w, reason, n);
    return finish(&w);
}

int mcq_zmtp_encode_ping(uint8_t *out, size_t cap, uint16_t ttl_ds, const uint8_t *context,
                         size_t context_len)
{
    if (context_len > MCQ_ZMTP_PING_CONTEXT_MAX)
        return -EINVAL;
    struct wbuf w = {out, 0, cap};
    put_command_head(&w, "PING", PING_TTL_BYTES + context_len);
    put_u8(&w, (uint8_t)(ttl_ds >> 8));
    put_u8(&w, (uint8_t)ttl_ds);
    put(&w, context, context_len);
    return finish(&w);
}

int mcq_zmtp_encode_pong(uint8_t *out, size_t cap, const uint8_t *context, size_t context_len)
{
    if (context_len > MCQ_ZMTP_PING_CONTEXT_MAX)
        context_len = MCQ_ZMTP_PING_CONTEXT_MAX;
    struct wbuf w = {out, 0, cap};
    put_command_head(&w, "PONG", context_len);
    put(&w, context, context_len);
    return finish(&w);
}

size_t mcq_zmtp_encode_subscription_header(uint8_t out[MCQ_ZMTP_SUB_HEADER_MAX], bool subscribe,
                                           size_t topic_len, uint8_t peer_minor)
{
    struct wbuf w = {out, 0, MCQ_ZMTP_SUB_HEADER_MAX};
    if (peer_minor >= 1) {
        put_command_head(&w, subscribe ? CMD_SUBSCRIBE : CMD_CANCEL, topic_len);
    } else {
        uint8_t hdr[MCQ_ZMTP_HEADER_MAX];
        put(&w, hdr, mcq_zmtp_frame_header(hdr, 0, 1 + (uint64_t)topic_len));
        put_u8(&w, subscribe ? SUB_PREFIX_SUBSCRIBE : SUB_PREFIX_CANCEL);
    }
    return w.len;
}

int mcq_zmtp_encode_subscription(uint8_t *out, size_t cap, bool subscribe, const uint8_t *topic,
                                 size_t topic_len, uint8_t peer_minor)
{
    uint8_t hdr[MCQ_ZMTP_SUB_HEADER_MAX];
    size_t n = mcq_zmtp_encode_subscription_header(hdr, subscribe, topic_len, peer_minor);
    struct wbuf w = {out, 0, cap};
    put(&w, hdr, n);
    put(&w, topic, topic_len);
    if (w.len > INT32_MAX)
        return -EINVAL;
    return finish(&w);
}

int mcq_zmtp_encode_plain_hello(uint8_t *out, size_t cap, const uint8_t *username,
                                size_t username_len, const uint8_t *password, size_t password_len)
{
    if (username_len > MCQ_ZMTP_PLAIN_FIELD_MAX || password_len > MCQ_ZMTP_PLAIN_FIELD_MAX)
        return -EINVAL;
    struct wbuf w = {out, 0, cap};
    put_command_head(&w, "HELLO", 2 + username_len + password_len);
    put_u8(&w, (uint8_t)username_len);
    put(&w, username, username_len);
    put_u8(&w, (uint8_t)password_len);
    put(&w, password, password_len);
    return finish(&w);
}

int mcq_zmtp_encode_plain_welcome(uint8_t *out, size_t cap)
{
    struct wbuf w = {out, 0, cap};
    put_command_head(&w, "WELCOME", 0);
    return finish(&w);
}
