/* Endpoint strings ("tcp://host:port", "ipc://path", "ipc://@abstract") parsed into a
 * transport and an address, and resolved to a socket address at bind/connect time. Pure
 * functions, any thread; resolving a host name may block on getaddrinfo. */
#ifndef MCQ_RUNTIME_ENDPOINT_H
#define MCQ_RUNTIME_ENDPOINT_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/un.h>

enum mcq_transport {
    MCQ_TRANSPORT_TCP = 1,
    MCQ_TRANSPORT_IPC = 2,
};

#define MCQ_ENDPOINT_HOST_MAX 256 /* bytes of a TCP host, NUL included (DNS names are <= 253) */
#define MCQ_ENDPOINT_PATH_MAX (sizeof(((struct sockaddr_un *)0)->sun_path))
#define MCQ_ENDPOINT_TEXT_MAX 320 /* bytes of a formatted endpoint, NUL included */

struct mcq_endpoint {
    enum mcq_transport transport;
    /* tcp: host without brackets ("*" means any address), port 0 asks for an ephemeral one */
    char host[MCQ_ENDPOINT_HOST_MAX];
    uint16_t port;
    bool host_is_ipv6_literal; /* it was written in brackets */
    /* ipc: the path, or for an abstract socket the name after '@' */
    char path[MCQ_ENDPOINT_PATH_MAX];
    bool abstract;
};

/* A socket address of any transport we speak. */
struct mcq_sockaddr {
    socklen_t len;
    union {
        struct sockaddr sa;
        struct sockaddr_in in4;
        struct sockaddr_in6 in6;
        struct sockaddr_un un;
        struct sockaddr_storage ss;
    };
};

/* Parses text into *out. 0, -EINVAL for malformed text (missing or out-of-range port,
 * empty host or path), -EPROTONOSUPPORT for an unknown transport, -ENAMETOOLONG for an ipc
 * path that does not fit sun_path. Logs why at warn level. */
int mcq_endpoint_parse(const char *text, struct mcq_endpoint *out);

/* Resolves ep to a socket address: literals directly, host names with getaddrinfo (first
 * answer), "*" to 0.0.0.0 (only when passive, i.e. for bind). 0 or -EINVAL (unresolvable
 * or "*" for connect), with a log line. */
int mcq_endpoint_resolve(const struct mcq_endpoint *ep, bool passive, struct mcq_sockaddr *out);

/* Formats addr as an endpoint string ("tcp://127.0.0.1:5555", "tcp://[::1]:5555",
 * "ipc:///tmp/x", "ipc://@name"). Returns the length, or -ENOSPC if buf is too small
 * (MCQ_ENDPOINT_TEXT_MAX always fits), -EAFNOSUPPORT for another family. */
int mcq_endpoint_format(const struct mcq_sockaddr *addr, char *buf, size_t len);

#endif
