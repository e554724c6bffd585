#include "zmtp/mechanism.h"

/* NULL (RFC 23/37): both sides send READY right after the greeting, as libzmq does, and
 * the handshake is complete once the peer's READY has been accepted. */

static int null_start(struct mcq_zmtp_session *s, struct mcq_zmtp_out *out)
{
    return mcq_zmtp_session_send_metadata(s, out, "READY");
}

static int null_command(struct mcq_zmtp_session *s, const struct mcq_zmtp_command *cmd,
                        struct mcq_zmtp_out *out, struct mcq_zmtp_event *ev)
{
    (void)out;
    (void)ev;
    if (!mcq_zmtp_command_is(cmd, "READY"))
        return mcq_zmtp_session_unexpected(s, cmd, "READY");
    int rc = mcq_zmtp_session_accept_metadata(s, cmd->data, cmd->len);
    return rc < 0 ? rc : MCQ_ZMTP_MECH_DONE;
}

const struct mcq_zmtp_mechanism mcq_zmtp_mech_null = {
    .name = "NULL",
    .as_server = false,
    .state_size = 0,
    .out_max = 0,
    .start = null_start,
    .command = null_command,
};
