/* Greeting parser: input = selector byte + peer greeting bytes. Checks every prefix in an
 * exactly-sized heap copy (ASan sees any over-read) and the parser's contract: a refusal
 * is final (a longer prefix is refused too), refusals carry a reason that fits the given
 * buffer, and an accepted greeting reports what it says. Also round-trips our builder. */
#include "fuzz_util.h"
#include "zmtp/greeting.h"

#include <errno.h>

static const char *const mechanisms[] = {"NULL", "PLAIN", "CURVE"};
#define N_MECHANISMS (sizeof(mechanisms) / sizeof(mechanisms[0]))
#define SMALL_REASON_LEN 8 /* bytes: a reason buffer too small for any reason */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const char *mech = mechanisms[data[0] % N_MECHANISMS];
    bool small_reason = data[0] & 0x80;
    const uint8_t *g = data + 1;
    size_t glen = size - 1 < MCQ_ZMTP_GREETING_LEN ? size - 1 : MCQ_ZMTP_GREETING_LEN;

    size_t reason_len = small_reason ? SMALL_REASON_LEN : MCQ_ZMTP_REASON_LEN;
    char *reason = malloc(reason_len);
    FUZZ_CHECK(reason != NULL);
    bool refused = false;
    for (size_t n = 0; n <= glen; n++) {
        uint8_t *buf = fuzz_dup(g, n);
        struct mcq_zmtp_greeting out;
        memset(&out, 0, sizeof(out));
        reason[0] = '\0';
        int rc = mcq_zmtp_greeting_check(buf, n, mech, &out, reason, reason_len);
        free(buf);
        FUZZ_CHECK(rc == 0 || rc == -EPROTO);
        if (refused) {
            FUZZ_CHECK(rc == -EPROTO); /* a refusal never turns into acceptance */
            continue;
        }
        if (rc < 0) {
            refused = true;
            FUZZ_CHECK(strnlen(reason, reason_len) < reason_len);
            FUZZ_CHECK(reason[0] != '\0');
            continue;
        }
        if (n == MCQ_ZMTP_GREETING_LEN) {
            FUZZ_CHECK(g[0] == 0xFF && (g[9] & 1) && g[10] >= MCQ_ZMTP_VERSION_MAJOR);
            FUZZ_CHECK(out.major == g[10]);
            FUZZ_CHECK(strcmp(out.mechanism, mech) == 0);
            FUZZ_CHECK(out.as_server == (g[MCQ_ZMTP_GREETING_SERVER_OFF] != 0));
        }
    }
    free(reason);

    /* Whatever we build, we accept. */
    uint8_t ours[MCQ_ZMTP_GREETING_LEN];
    uint8_t minor = size > 1 ? data[1] : MCQ_ZMTP_VERSION_MINOR;
    FUZZ_CHECK(mcq_zmtp_greeting_build(ours, mech, data[0] & 0x40, minor) == MCQ_ZMTP_GREETING_LEN);
    struct mcq_zmtp_greeting out;
    char why[MCQ_ZMTP_REASON_LEN];
    FUZZ_CHECK(mcq_zmtp_greeting_check(ours, sizeof(ours), mech, &out, why, sizeof(why)) == 0);
    FUZZ_CHECK(out.major == MCQ_ZMTP_VERSION_MAJOR && out.minor == minor);
    FUZZ_CHECK(out.as_server == ((data[0] & 0x40) != 0));
    return 0;
}
