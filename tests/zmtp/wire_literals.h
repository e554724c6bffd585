/* Byte strings of whole ZMTP exchanges, written from RFC 23/24/37 and zmtp.md §9. Hex
 * escapes are split from following letters that are hex digits ("\x06" "DEALER"). */
#ifndef MCQ_TESTS_ZMTP_WIRE_LITERALS_H
#define MCQ_TESTS_ZMTP_WIRE_LITERALS_H

#define Z4 "\0\0\0\0"
#define Z8 Z4 Z4
#define Z16 Z8 Z8
#define Z31 Z16 Z8 "\0\0\0\0\0\0\0"

/* 64-byte greeting, version 3.minor, mechanism padded to 20 bytes. */
#define GREETING(minor, mech20, server) "\xff" Z8 "\x7f\x03" minor mech20 server Z31
#define MECH_NULL "NULL" Z16
#define MECH_PLAIN                                                                                 \
    "PLAIN"                                                                                        \
    "\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0"
#define G_NULL GREETING("\x01", MECH_NULL, "\0")
#define G_NULL30 GREETING("\x00", MECH_NULL, "\0")
#define G_PLAIN_S GREETING("\x01", MECH_PLAIN, "\x01")
#define G_PLAIN_C GREETING("\x01", MECH_PLAIN, "\0")

#define READY_DEALER                                                                               \
    "\x04\x29\x05READY\x0bSocket-Type"                                                             \
    "\0\0\0\x06"                                                                                   \
    "DEALER\x08Identity" Z4
#define READY_DEALER_AB                                                                            \
    "\x04\x2b\x05READY\x0bSocket-Type"                                                             \
    "\0\0\0\x06"                                                                                   \
    "DEALER\x08Identity"                                                                           \
    "\0\0\0\x02"                                                                                   \
    "AB"
#define READY_ROUTER                                                                               \
    "\x04\x29\x05READY\x0bSocket-Type"                                                             \
    "\0\0\0\x06"                                                                                   \
    "ROUTER\x08Identity" Z4
#define READY_SUB "\x04\x19\x05READY\x0bSocket-Type\0\0\0\x03SUB"
#define READY_PUB "\x04\x19\x05READY\x0bSocket-Type\0\0\0\x03PUB"
#define INITIATE_DEALER                                                                            \
    "\x04\x2c\x08INITIATE\x0bSocket-Type"                                                          \
    "\0\0\0\x06"                                                                                   \
    "DEALER\x08Identity" Z4
#define HELLO_ADMIN                                                                                \
    "\x04\x13\x05HELLO\x05"                                                                        \
    "admin\x06secret"
#define WELCOME "\x04\x08\x07WELCOME"
#define PING_LOL "\x04\x0a\x04PING\x00\x00LOL"
#define SUBSCRIBE_A "\x04\x0b\x09SUBSCRIBEA"

#define LIT(s) (const uint8_t *)(s), sizeof(s) - 1

#endif
