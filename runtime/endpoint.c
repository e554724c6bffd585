#include "runtime/endpoint.h"

#include "runtime/log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <string.h>

#define TCP_PREFIX "tcp://"
#define IPC_PREFIX "ipc://"
#define PORT_DIGITS_MAX 5 /* "65535" */
#define PORT_MAX 65535

static int bad(const char *text, const char *why, int err)
{
    mcq_log_warn("endpoint '%s': %s", text, why);
    return err;
}

/* "*" (any port) or decimal digits without sign or spaces, at most 65535. */
static int parse_port(const char *s, uint16_t *port)
{
    if (!strcmp(s, "*")) {
        *port = 0;
        return 0;
    }
    size_t n = strlen(s);
    if (n == 0 || n > PORT_DIGITS_MAX)
        return -EINVAL;
    unsigned v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -EINVAL;
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    if (v > PORT_MAX)
        return -EINVAL;
    *port = (uint16_t)v;
    return 0;
}

static int parse_tcp(const char *text, const char *rest, struct mcq_endpoint *out)
{
    const char *colon;
    const char *host = rest;
    size_t host_len;
    if (rest[0] == '[') {
        const char *close = strchr(rest, ']');
        if (!close)
            return bad(text, "missing ']' after IPv6 address", -EINVAL);
        host = rest + 1;
        host_len = (size_t)(close - host);
        if (close[1] != ':')
            return bad(text, "missing ':port' after ']'", -EINVAL);
        colon = close + 1;
        out->host_is_ipv6_literal = true;
    } else {
        colon = strrchr(rest, ':');
        if (!colon)
            return bad(text, "missing ':port'", -EINVAL);
        host_len = (size_t)(colon - rest);
        if (memchr(rest, ':', host_len))
            return bad(text, "IPv6 addresses must be written in brackets: tcp://[::1]:port",
                       -EINVAL);
    }
    if (host_len == 0)
        return bad(text, "empty host (use '*' for any address)", -EINVAL);
    if (host_len >= sizeof(out->host))
        return bad(text, "host name too long", -EINVAL);
    if (parse_port(colon + 1, &out->port) < 0)
        return bad(text, "port must be '*' or a number from 0 to 65535", -EINVAL);
    memcpy(out->host, host, host_len);
    out->host[host_len] = '\0';
    if (out->host_is_ipv6_literal && !strcmp(out->host, "*"))
        return bad(text, "'*' is not an IPv6 address", -EINVAL);
    out->transport = MCQ_TRANSPORT_TCP;
    return 0;
}

static int parse_ipc(const char *text, const char *rest, struct mcq_endpoint *out)
{
    bool abstract = rest[0] == '@';
    const char *path = abstract ? rest + 1 : rest;
    size_t len = strlen(path);
    if (len == 0)
        return bad(text, "empty ipc path", -EINVAL);
    /* A filesystem path needs its NUL inside sun_path; an abstract name is preceded by one. */
    if (len >= sizeof(out->path))
        return bad(text, "ipc path longer than sun_path allows", -ENAMETOOLONG);
    memcpy(out->path, path, len + 1);
    out->abstract = abstract;
    out->transport = MCQ_TRANSPORT_IPC;
    return 0;
}

int mcq_endpoint_parse(const char *text, struct mcq_endpoint *out)
{
    memset(out, 0, sizeof(*out));
    if (!text)
        return -EINVAL;
    if (!strncmp(text, TCP_PREFIX, strlen(TCP_PREFIX)))
        return parse_tcp(text, text + strlen(TCP_PREFIX), out);
    if (!strncmp(text, IPC_PREFIX, strlen(IPC_PREFIX)))
        return parse_ipc(text, text + strlen(IPC_PREFIX), out);
    if (!strstr(text, "://"))
        return bad(text, "expected transport://address", -EINVAL);
    return bad(text, "unknown transport (tcp and ipc are supported)", -EPROTONOSUPPORT);
}

static int resolve_ipc(const struct mcq_endpoint *ep, struct mcq_sockaddr *out)
{
    size_t len = strlen(ep->path);
    out->un.sun_family = AF_UNIX;
    if (ep->abstract) {
        out->un.sun_path[0] = '\0';
        memcpy(out->un.sun_path + 1, ep->path, len);
        out->len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + len);
    } else {
        memcpy(out->un.sun_path, ep->path, len + 1);
        out->len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len + 1);
    }
    return 0;
}

static int resolve_tcp(const struct mcq_endpoint *ep, bool passive, struct mcq_sockaddr *out)
{
    if (!strcmp(ep->host, "*")) {
        if (!passive) {
            mcq_log_warn("endpoint tcp://*:%u: '*' can only be bound, not connected to", ep->port);
            return -EINVAL;
        }
        out->in4.sin_family = AF_INET;
        out->in4.sin_addr.s_addr = htonl(INADDR_ANY);
        out->in4.sin_port = htons(ep->port);
        out->len = sizeof(out->in4);
        return 0;
    }
    struct addrinfo hints = {
        .ai_family = ep->host_is_ipv6_literal ? AF_INET6 : AF_UNSPEC,
        .ai_socktype = SOCK_STREAM,
        .ai_flags = (ep->host_is_ipv6_literal ? AI_NUMERICHOST : 0) | (passive ? AI_PASSIVE : 0),
    };
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(ep->host, NULL, &hints, &res);
    if (rc != 0) {
        mcq_log_warn("endpoint tcp://%s:%u: cannot resolve host: %s", ep->host, ep->port,
                     gai_strerror(rc));
        return -EINVAL;
    }
    memcpy(&out->ss, res->ai_addr, res->ai_addrlen);
    out->len = res->ai_addrlen;
    freeaddrinfo(res);
    if (out->sa.sa_family == AF_INET)
        out->in4.sin_port = htons(ep->port);
    else
        out->in6.sin6_port = htons(ep->port);
    return 0;
}

int mcq_endpoint_resolve(const struct mcq_endpoint *ep, bool passive, struct mcq_sockaddr *out)
{
    memset(out, 0, sizeof(*out));
    switch (ep->transport) {
    case MCQ_TRANSPORT_TCP:
        return resolve_tcp(ep, passive, out);
    case MCQ_TRANSPORT_IPC:
        return resolve_ipc(ep, out);
    }
    return -EINVAL;
}

int mcq_endpoint_format(const struct mcq_sockaddr *addr, char *buf, size_t len)
{
    char host[INET6_ADDRSTRLEN];
    int n;
    switch (addr->sa.sa_family) {
    case AF_INET:
        inet_ntop(AF_INET, &addr->in4.sin_addr, host, sizeof(host));
        n = snprintf(buf, len, "tcp://%s:%u", host, ntohs(addr->in4.sin_port));
        break;
    case AF_INET6:
        inet_ntop(AF_INET6, &addr->in6.sin6_addr, host, sizeof(host));
        n = snprintf(buf, len, "tcp://[%s]:%u", host, ntohs(addr->in6.sin6_port));
        break;
    case AF_UNIX: {
        size_t off = offsetof(struct sockaddr_un, sun_path);
        size_t plen = addr->len > off ? addr->len - off : 0;
        if (plen > 0 && addr->un.sun_path[0] == '\0')
            n = snprintf(buf, len, "ipc://@%.*s", (int)(plen - 1), addr->un.sun_path + 1);
        else
            n = snprintf(buf, len, "ipc://%.*s", (int)strnlen(addr->un.sun_path, plen),
                         addr->un.sun_path);
        break;
    }
    default:
        return -EAFNOSUPPORT;
    }
    if (n < 0 || (size_t)n >= len)
        return -ENOSPC;
    return n;
}
