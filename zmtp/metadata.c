#include "zmtp/metadata.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#define VALUE_LEN_BYTES 4 /* big-endian property value length */
#define PRINT_NAME_MAX 24 /* bytes of a peer-chosen name quoted in a reason */

static const char *const type_names[MCQ_ZMTP_SOCKET_TYPE_COUNT] = {
    [MCQ_ZMTP_PAIR] = "PAIR",     [MCQ_ZMTP_PUB] = "PUB",   [MCQ_ZMTP_SUB] = "SUB",
    [MCQ_ZMTP_REQ] = "REQ",       [MCQ_ZMTP_REP] = "REP",   [MCQ_ZMTP_DEALER] = "DEALER",
    [MCQ_ZMTP_ROUTER] = "ROUTER", [MCQ_ZMTP_PULL] = "PULL", [MCQ_ZMTP_PUSH] = "PUSH",
    [MCQ_ZMTP_XPUB] = "XPUB",     [MCQ_ZMTP_XSUB] = "XSUB",
};

#define BIT(t) (1u << (t))
/* Row = local type, bits = peer types libzmq's check_socket_type accepts. */
static const unsigned compatible[MCQ_ZMTP_SOCKET_TYPE_COUNT] = {
    [MCQ_ZMTP_PAIR] = BIT(MCQ_ZMTP_PAIR),
    [MCQ_ZMTP_PUB] = BIT(MCQ_ZMTP_SUB) | BIT(MCQ_ZMTP_XSUB),
    [MCQ_ZMTP_XPUB] = BIT(MCQ_ZMTP_SUB) | BIT(MCQ_ZMTP_XSUB),
    [MCQ_ZMTP_SUB] = BIT(MCQ_ZMTP_PUB) | BIT(MCQ_ZMTP_XPUB),
    [MCQ_ZMTP_XSUB] = BIT(MCQ_ZMTP_PUB) | BIT(MCQ_ZMTP_XPUB),
    [MCQ_ZMTP_REQ] = BIT(MCQ_ZMTP_REP) | BIT(MCQ_ZMTP_ROUTER),
    [MCQ_ZMTP_REP] = BIT(MCQ_ZMTP_REQ) | BIT(MCQ_ZMTP_DEALER),
    [MCQ_ZMTP_DEALER] = BIT(MCQ_ZMTP_REP) | BIT(MCQ_ZMTP_DEALER) | BIT(MCQ_ZMTP_ROUTER),
    [MCQ_ZMTP_ROUTER] = BIT(MCQ_ZMTP_REQ) | BIT(MCQ_ZMTP_DEALER) | BIT(MCQ_ZMTP_ROUTER),
    [MCQ_ZMTP_PULL] = BIT(MCQ_ZMTP_PUSH),
    [MCQ_ZMTP_PUSH] = BIT(MCQ_ZMTP_PULL),
};

const char *mcq_zmtp_socket_type_name(int type)
{
    if (type < 0 || type >= MCQ_ZMTP_SOCKET_TYPE_COUNT)
        return NULL;
    return type_names[type];
}

int mcq_zmtp_socket_type_parse(const uint8_t *name, size_t len)
{
    for (int t = 0; t < MCQ_ZMTP_SOCKET_TYPE_COUNT; t++)
        if (strlen(type_names[t]) == len && memcmp(type_names[t], name, len) == 0)
            return t;
    return -EINVAL;
}

bool mcq_zmtp_socket_types_compatible(int local, int peer)
{
    if (local < 0 || local >= MCQ_ZMTP_SOCKET_TYPE_COUNT || peer < 0 ||
        peer >= MCQ_ZMTP_SOCKET_TYPE_COUNT)
        return false;
    return (compatible[local] & BIT(peer)) != 0;
}

bool mcq_zmtp_socket_type_sends_identity(int type)
{
    return type == MCQ_ZMTP_REQ || type == MCQ_ZMTP_DEALER || type == MCQ_ZMTP_ROUTER;
}

void mcq_zmtp_printable(const uint8_t *in, size_t len, char *out, size_t out_len)
{
    static const char ellipsis[] = "...";
    if (out_len == 0)
        return;
    size_t room = out_len - 1, n = len;
    bool cut = n > room;
    if (cut)
        n = room >= sizeof(ellipsis) - 1 ? room - (sizeof(ellipsis) - 1) : room;
    for (size_t i = 0; i < n; i++)
        out[i] = (in[i] >= 0x20 && in[i] < 0x7F) ? (char)in[i] : '?';
    if (cut && room >= sizeof(ellipsis) - 1) {
        memcpy(out + n, ellipsis, sizeof(ellipsis) - 1);
        n += sizeof(ellipsis) - 1;
    }
    out[n] = '\0';
}

int mcq_zmtp_metadata_next(const uint8_t *data, size_t len, size_t *pos,
                           struct mcq_zmtp_property *p, char *reason, size_t reason_len)
{
    size_t at = *pos;
    if (at >= len)
        return 0;
    size_t name_len = data[at];
    if (name_len == 0) {
        if (reason)
            snprintf(reason, reason_len, "metadata byte %zu: property name length is 0", at);
        return -EPROTO;
    }
    /* All sizes are <= len, so these sums cannot overflow. */
    if (len - at - 1 < name_len + VALUE_LEN_BYTES) {
        if (reason)
            snprintf(reason, reason_len,
                     "metadata byte %zu: property of name length %zu is truncated "
                     "(%zu bytes left)",
                     at, name_len, len - at);
        return -EPROTO;
    }
    const uint8_t *v = data + at + 1 + name_len;
    uint64_t value_len = (uint64_t)v[0] << 24 | (uint64_t)v[1] << 16 | (uint64_t)v[2] << 8 | v[3];
    size_t left = len - at - 1 - name_len - VALUE_LEN_BYTES;
    if (value_len > left) {
        if (reason) {
            char name[PRINT_NAME_MAX];
            mcq_zmtp_printable(data + at + 1, name_len, name, sizeof(name));
            snprintf(reason, reason_len,
                     "metadata byte %zu: value length %llu of property \"%s\" runs past "
                     "the command (%zu bytes left)",
                     at + 1 + name_len, (unsigned long long)value_len, name, left);
        }
        return -EPROTO;
    }
    p->name = data + at + 1;
    p->name_len = name_len;
    p->value = v + VALUE_LEN_BYTES;
    p->value_len = (size_t)value_len;
    *pos = at + 1 + name_len + VALUE_LEN_BYTES + (size_t)value_len;
    return 1;
}

int mcq_zmtp_metadata_find(const uint8_t *data, size_t len, const char *name,
                           struct mcq_zmtp_property *p)
{
    size_t pos = 0, want = strlen(name);
    struct mcq_zmtp_property q;
    int rc;
    while ((rc = mcq_zmtp_metadata_next(data, len, &pos, &q, NULL, 0)) == 1) {
        if (q.name_len == want && strncasecmp((const char *)q.name, name, want) == 0) {
            *p = q;
            return 1;
        }
    }
    return rc;
}

int mcq_zmtp_command_parse(const uint8_t *body, size_t len, struct mcq_zmtp_command *cmd,
                           char *reason, size_t reason_len)
{
    if (len == 0) {
        snprintf(reason, reason_len, "command frame has an empty body (no name length)");
        return -EPROTO;
    }
    size_t name_len = body[0];
    if (name_len == 0 || name_len > len - 1) {
        snprintf(reason, reason_len,
                 "command body byte 0: name length %zu is 0 or exceeds the %zu bytes left",
                 name_len, len - 1);
        return -EPROTO;
    }
    cmd->name = body + 1;
    cmd->name_len = name_len;
    cmd->data = body + 1 + name_len;
    cmd->len = len - 1 - name_len;
    return 0;
}

bool mcq_zmtp_command_is(const struct mcq_zmtp_command *cmd, const char *name)
{
    size_t n = strlen(name);
    return cmd->name_len == n && memcmp(cmd->name, name, n) == 0;
}
