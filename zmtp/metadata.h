/* Command bodies and READY/INITIATE metadata: socket types and libzmq's compatibility
 * table, the property list `name-len(1) name value-len(4 BE) value`, and the split of a
 * command body into name and data. Pure functions over borrowed bytes. */
#ifndef MCQ_ZMTP_METADATA_H
#define MCQ_ZMTP_METADATA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Numbered as libzmq's ZMQ_* socket types. */
enum mcq_zmtp_socket_type {
    MCQ_ZMTP_PAIR = 0,
    MCQ_ZMTP_PUB = 1,
    MCQ_ZMTP_SUB = 2,
    MCQ_ZMTP_REQ = 3,
    MCQ_ZMTP_REP = 4,
    MCQ_ZMTP_DEALER = 5,
    MCQ_ZMTP_ROUTER = 6,
    MCQ_ZMTP_PULL = 7,
    MCQ_ZMTP_PUSH = 8,
    MCQ_ZMTP_XPUB = 9,
    MCQ_ZMTP_XSUB = 10,
};
#define MCQ_ZMTP_SOCKET_TYPE_COUNT 11
#define MCQ_ZMTP_IDENTITY_MAX 255 /* bytes of a routing id (RFC 23/37) */

/* The Socket-Type spelling ("DEALER"), or NULL for a value outside the enum. */
const char *mcq_zmtp_socket_type_name(int type);

/* Parses a Socket-Type value (exact, upper case as every implementation sends it).
 * Returns the type or -EINVAL for an unknown name. */
int mcq_zmtp_socket_type_parse(const uint8_t *name, size_t len);

/* libzmq's mechanism_t::check_socket_type table: may `local` talk to `peer`? */
bool mcq_zmtp_socket_types_compatible(int local, int peer);

/* libzmq sends Identity only from these (REQ, DEALER, ROUTER), possibly empty. */
bool mcq_zmtp_socket_type_sends_identity(int type);

/* One metadata property; used both to read (pointers into the parsed body) and to
 * describe extra properties to send (name_len 1..255). */
struct mcq_zmtp_property {
    const uint8_t *name;
    size_t name_len;
    const uint8_t *value;
    size_t value_len;
};

/* Iterates properties of data[0..len) from *pos (start at 0). Returns 1 with *p filled
 * and *pos advanced, 0 at the end, or -EPROTO for a zero name length or a property that
 * runs past the end (reason written when reason != NULL; offsets relative to data). */
int mcq_zmtp_metadata_next(const uint8_t *data, size_t len, size_t *pos,
                           struct mcq_zmtp_property *p, char *reason, size_t reason_len);

/* Looks a property up by name (case-insensitive, as RFC 23 says); returns 1 found, 0 not,
 * -EPROTO malformed. */
int mcq_zmtp_metadata_find(const uint8_t *data, size_t len, const char *name,
                           struct mcq_zmtp_property *p);

/* Copies peer bytes into out[0..out_len) as a NUL-terminated string fit for a reason:
 * bytes outside printable ASCII become '?', and a cut-off copy ends in "...". */
void mcq_zmtp_printable(const uint8_t *in, size_t len, char *out, size_t out_len);

/* A command body split into name and data (both borrowed from the body). */
struct mcq_zmtp_command {
    const uint8_t *name;
    size_t name_len;
    const uint8_t *data;
    size_t len;
};

/* Splits body[0..len) = name-len(1) name data. Returns 0, or -EPROTO when the body is
 * empty, the name length is 0 or runs past the body. */
int mcq_zmtp_command_parse(const uint8_t *body, size_t len, struct mcq_zmtp_command *cmd,
                           char *reason, size_t reason_len);

/* True when the command's name is exactly `name` (case-sensitive, as libzmq). */
bool mcq_zmtp_command_is(const struct mcq_zmtp_command *cmd, const char *name);

#endif
