/* A whole session fed random chunks: input = 3 option bytes, then the peer's byte stream.
 * Byte 0: bits 0-1 mechanism (NULL, PLAIN client, PLAIN server, NULL), bits 2-5 socket
 * type (mod 11), bit 6 announce ZMTP 3.0, bit 7 heartbeats on. Byte 1: chunk seed (also
 * drives the clock). Byte 2: bits 0-1 auth answer (200/300/400/500), bit 2 tight output
 * buffer, bits 3-4 limits, bit 5 our identity, bit 6 an extra READY property. The clock
 * advances between chunks and the timers run, so deadlines and heartbeats are fuzzed too.
 * Once active, each chunk is also sent back as a message and a subscription through the
 * session's send API. session_driver.h holds the invariants, including the mirror check
 * of everything we sent. */
#include "session_driver.h"

#define OPTION_BYTES 3
#define NS_PER_MS 1000000ull
#define CLOCK_STEP_MAX_MS 64 /* largest clock jump between two chunks */

static const unsigned auth_answers[] = {200, 300, 400, 500};
static const struct mcq_zmtp_limits limit_sets[] = {
    {0},
    {.max_frame_size = 64},
    {.max_msg_size = 100, .max_msg_frames = 2},
    {.max_command_size = 32},
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < OPTION_BYTES)
        return 0;
    uint8_t b0 = data[0], b1 = data[1], b2 = data[2];
    struct driver_opts o = {
        .mech = (b0 & 3) == 3 ? DRIVER_NULL : (enum driver_mech)(b0 & 3),
        .socket_type = ((b0 >> 2) & 15) % MCQ_ZMTP_SOCKET_TYPE_COUNT,
        .zmtp30 = b0 & 0x40,
        .heartbeats = b0 & 0x80,
        .auth_status = auth_answers[b2 & 3],
        .tight_out = b2 & 0x04,
        .limits = limit_sets[(b2 >> 3) & 3],
        .identity = b2 & 0x20,
        .extra_property = b2 & 0x40,
    };
    static struct driver d;
    FUZZ_CHECK(driver_init(&d, &o) == 0);
    const uint8_t *in = data + OPTION_BYTES;
    size_t len = size - OPTION_BYTES;
    struct chunker c;
    chunker_init(&c, b1);
    size_t off = 0;
    while (off < len && !d.closed) {
        size_t n = chunker_next(&c, len - off);
        driver_feed(&d, in + off, n, o.auth_status);
        driver_send(&d, in + off, n);
        off += n;
        d.now += (c.state % (CLOCK_STEP_MAX_MS + 1)) * NS_PER_MS;
        if (d.now >= mcq_zmtp_session_deadline(&d.s))
            driver_tick(&d);
    }
    /* Let the timers run out: the handshake deadline or heartbeats must end or go on
     * cleanly. */
    if (!d.closed) {
        uint64_t t = mcq_zmtp_session_deadline(&d.s);
        if (t != UINT64_MAX) {
            d.now = t;
            driver_tick(&d);
        }
    }
    driver_flush(&d);
    driver_mirror_check(&d, &o);
    driver_fini(&d);
    return 0;
}
