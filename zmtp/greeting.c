#include "zmtp/greeting.h"
#include "zmtp/metadata.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#define SIG_START 0xFF
#define SIG_END_OFF 9
#define SIG_VERSIONED 0x01 /* bit 0 of byte 9: a versioned (>= 2.0) peer */
#define MAJOR_OFF 10
#define MINOR_OFF 11

int mcq_zmtp_greeting_build(uint8_t out[MCQ_ZMTP_GREETING_LEN], const char *mechanism,
                            bool as_server, uint8_t minor)
{
    size_t n = strlen(mechanism);
    if (n == 0 || n > MCQ_ZMTP_MECH_NAME_LEN)
        return -EINVAL;
    memset(out, 0, MCQ_ZMTP_GREETING_LEN);
    out[0] = SIG_START;
    out[SIG_END_OFF] = 0x7F;
    out[MAJOR_OFF] = MCQ_ZMTP_VERSION_MAJOR;
    out[MINOR_OFF] = minor;
    memcpy(out + MCQ_ZMTP_GREETING_MECH_OFF, mechanism, n);
    out[MCQ_ZMTP_GREETING_SERVER_OFF] = as_server ? 1 : 0;
    return MCQ_ZMTP_GREETING_LEN;
}

/* Printable copy of a NUL-padded wire mechanism name for reasons. */
static void mech_printable(const uint8_t *in, char out[MCQ_ZMTP_MECH_NAME_LEN + 1])
{
    mcq_zmtp_printable(in, strnlen((const char *)in, MCQ_ZMTP_MECH_NAME_LEN), out,
                       MCQ_ZMTP_MECH_NAME_LEN + 1);
}

int mcq_zmtp_greeting_check(const uint8_t *in, size_t len, const char *mechanism,
                            struct mcq_zmtp_greeting *out, char *reason, size_t reason_len)
{
    if (len > 0 && in[0] != SIG_START) {
        snprintf(reason, reason_len,
                 "greeting byte 0 is 0x%02x, the signature must start with 0xff "
                 "(not a ZMTP 2.0+ peer)",
                 in[0]);
        return -EPROTO;
    }
    if (len > SIG_END_OFF && !(in[SIG_END_OFF] & SIG_VERSIONED)) {
        snprintf(reason, reason_len,
                 "greeting byte 9 is 0x%02x, bit 0 must be set (ZMTP 1.0 peers unsupported)",
                 in[SIG_END_OFF]);
        return -EPROTO;
    }
    if (len > MAJOR_OFF && in[MAJOR_OFF] < MCQ_ZMTP_VERSION_MAJOR) {
        snprintf(reason, reason_len,
                 "greeting byte 10: peer speaks ZMTP major version %u, at least 3 required",
                 in[MAJOR_OFF]);
        return -EPROTO;
    }
    if (len < MCQ_ZMTP_GREETING_LEN)
        return 0;

    uint8_t want[MCQ_ZMTP_MECH_NAME_LEN] = {0};
    size_t n = strlen(mechanism);
    memcpy(want, mechanism, n < sizeof(want) ? n : sizeof(want));
    const uint8_t *mech = in + MCQ_ZMTP_GREETING_MECH_OFF;
    if (memcmp(mech, want, sizeof(want)) != 0) {
        char got[MCQ_ZMTP_MECH_NAME_LEN + 1];
        mech_printable(mech, got);
        snprintf(reason, reason_len,
                 "greeting bytes 12-31: peer mechanism \"%s\" does not match ours \"%s\"", got,
                 mechanism);
        return -EPROTO;
    }
    out->major = in[MAJOR_OFF];
    /* libzmq: any major above 3 speaks 3.1 (select_handshake_fun). */
    out->minor = in[MAJOR_OFF] > MCQ_ZMTP_VERSION_MAJOR ? MCQ_ZMTP_VERSION_MINOR : in[MINOR_OFF];
    out->as_server = in[MCQ_ZMTP_GREETING_SERVER_OFF] != 0;
    mech_printable(mech, out->mechanism);
    return 0;
}
