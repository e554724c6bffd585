#include "zmtp/mechanism.h"

#include <string.h>

/* PLAIN (RFC 24): C:HELLO -> S:WELCOME | ERROR; C:INITIATE -> S:READY | ERROR. The server
 * asks the layer above (ZAP-shaped request) before WELCOME, as libzmq does. ERROR from the
 * server, in either the spec or libzmq's malformed form, is handled by the session. */

#define PLAIN_HELLO_MAX (MCQ_ZMTP_HEADER_MAX + 6 + 2 * (1 + MCQ_ZMTP_PLAIN_FIELD_MAX))
#define PLAIN_SERVER_OUT_MAX 16 /* WELCOME (9) or ERROR "400" (12) */
#define ZAP_OK 200
#define ZAP_TEMPORARY 300

/* Client states. */
#define PLAIN_WAIT_WELCOME 0
#define PLAIN_WAIT_READY 1
/* Server states. */
#define PLAIN_WAIT_HELLO 0
#define PLAIN_WAIT_INITIATE 1

struct plain {
    uint8_t state;
    struct mcq_zmtp_auth_request auth;
};

static unsigned long long cmd_at(const struct mcq_zmtp_session *s)
{
    return (unsigned long long)mcq_zmtp_session_command_offset(s);
}

static int client_validate(const struct mcq_zmtp_config *cfg)
{
    const struct mcq_zmtp_plain_credentials *c = cfg->mechanism_arg;
    if (!c || c->username_len > MCQ_ZMTP_PLAIN_FIELD_MAX ||
        c->password_len > MCQ_ZMTP_PLAIN_FIELD_MAX)
        return -EINVAL;
    return 0;
}

static int client_start(struct mcq_zmtp_session *s, struct mcq_zmtp_out *out)
{
    const struct mcq_zmtp_plain_credentials *c = mcq_zmtp_session_config(s)->mechanism_arg;
    int n = mcq_zmtp_encode_plain_hello(out->buf + out->len, out->cap - out->len, c->username,
                                        c->username_len, c->password, c->password_len);
    if (n < 0)
        return mcq_zmtp_session_fail(s, n, "no output room for PLAIN HELLO");
    out->len += (size_t)n;
    return 0;
}

static int client_command(struct mcq_zmtp_session *s, const struct mcq_zmtp_command *cmd,
                          struct mcq_zmtp_out *out, struct mcq_zmtp_event *ev)
{
    struct plain *p = mcq_zmtp_session_mech_state(s);
    (void)ev;
    if (p->state == PLAIN_WAIT_WELCOME) {
        if (!mcq_zmtp_command_is(cmd, "WELCOME"))
            return mcq_zmtp_session_unexpected(s, cmd, "WELCOME");
        if (cmd->len)
            return mcq_zmtp_session_fail(s, -EPROTO,
                                         "WELCOME at byte %llu carries %zu data bytes (must "
                                         "be empty)",
                                         cmd_at(s), cmd->len);
        p->state = PLAIN_WAIT_READY;
        return mcq_zmtp_session_send_metadata(s, out, "INITIATE");
    }
    if (!mcq_zmtp_command_is(cmd, "READY"))
        return mcq_zmtp_session_unexpected(s, cmd, "READY");
    int rc = mcq_zmtp_session_accept_metadata(s, cmd->data, cmd->len);
    return rc < 0 ? rc : MCQ_ZMTP_MECH_DONE;
}

/* HELLO data: ulen(1) username plen(1) password, and nothing after (libzmq requires the
 * password to end the body exactly). */
static int server_hello(struct mcq_zmtp_session *s, struct plain *p,
                        const struct mcq_zmtp_command *cmd, struct mcq_zmtp_event *ev)
{
    const uint8_t *d = cmd->data;
    size_t len = cmd->len;
    /* Room for the username and the password length byte after it. */
    if (len < 2 || (size_t)d[0] > len - 2)
        return mcq_zmtp_session_fail(s, -EPROTO,
                                     "HELLO at byte %llu: username length %u exceeds the %zu "
                                     "bytes that follow",
                                     cmd_at(s), len ? d[0] : 0u, len ? len - 1 : 0);
    size_t ulen = d[0];
    size_t plen = d[1 + ulen];
    if (2 + ulen + plen != len)
        return mcq_zmtp_session_fail(s, -EPROTO,
                                     "HELLO at byte %llu: password length %zu does not end the "
                                     "command (%zu bytes follow it)",
                                     cmd_at(s), plen, len - 2 - ulen);
    const struct mcq_zmtp_config *cfg = mcq_zmtp_session_config(s);
    p->auth = (struct mcq_zmtp_auth_request){
        .domain = cfg->zap_domain ? cfg->zap_domain : "",
        .address = mcq_zmtp_session_peer_address(s),
        .identity = cfg->identity,
        .identity_len = cfg->identity_len,
        .mechanism = "PLAIN",
        .n_credentials = 2,
        .credentials = {d + 1, d + 2 + ulen},
        .credentials_len = {ulen, plen},
    };
    ev->auth = &p->auth;
    return MCQ_ZMTP_MECH_AUTH;
}

static int server_command(struct mcq_zmtp_session *s, const struct mcq_zmtp_command *cmd,
                          struct mcq_zmtp_out *out, struct mcq_zmtp_event *ev)
{
    struct plain *p = mcq_zmtp_session_mech_state(s);
    if (p->state == PLAIN_WAIT_HELLO) {
        if (!mcq_zmtp_command_is(cmd, "HELLO"))
            return mcq_zmtp_session_unexpected(s, cmd, "HELLO");
        return server_hello(s, p, cmd, ev);
    }
    if (!mcq_zmtp_command_is(cmd, "INITIATE"))
        return mcq_zmtp_session_unexpected(s, cmd, "INITIATE");
    int rc = mcq_zmtp_session_accept_metadata(s, cmd->data, cmd->len);
    if (rc < 0)
        return rc;
    rc = mcq_zmtp_session_send_metadata(s, out, "READY");
    return rc < 0 ? rc : MCQ_ZMTP_MECH_DONE;
}

static int server_auth_reply(struct mcq_zmtp_session *s, unsigned status_code,
                             struct mcq_zmtp_out *out)
{
    struct plain *p = mcq_zmtp_session_mech_state(s);
    /* The credentials it pointed at belong to a buffer that is gone by now. */
    p->auth = (struct mcq_zmtp_auth_request){0};
    if (status_code == ZAP_OK) {
        int n = mcq_zmtp_encode_plain_welcome(out->buf + out->len, out->cap - out->len);
        if (n < 0)
            return n;
        out->len += (size_t)n;
        p->state = PLAIN_WAIT_INITIATE;
        return 0;
    }
    /* libzmq: 300 closes silently, 400/500 send ERROR with the status as reason. */
    if (status_code != ZAP_TEMPORARY && status_code >= 400 && status_code <= 599) {
        char reason[4] = {(char)('0' + status_code / 100), (char)('0' + status_code / 10 % 10),
                          (char)('0' + status_code % 10), '\0'};
        int n = mcq_zmtp_encode_error(out->buf + out->len, out->cap - out->len, reason);
        if (n > 0)
            out->len += (size_t)n;
    }
    return -EACCES;
}

const struct mcq_zmtp_mechanism mcq_zmtp_mech_plain_client = {
    .name = "PLAIN",
    .as_server = false,
    .state_size = sizeof(struct plain),
    .out_max = PLAIN_HELLO_MAX,
    .validate = client_validate,
    .start = client_start,
    .command = client_command,
};

static int server_start(struct mcq_zmtp_session *s, struct mcq_zmtp_out *out)
{
    (void)s;
    (void)out;
    return 0;
}

const struct mcq_zmtp_mechanism mcq_zmtp_mech_plain_server = {
    .name = "PLAIN",
    .as_server = true,
    .state_size = sizeof(struct plain),
    .out_max = PLAIN_SERVER_OUT_MAX,
    .start = server_start,
    .command = server_command,
    .auth_reply = server_auth_reply,
};
