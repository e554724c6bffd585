/* SipHash-2-4 (Aumasson and Bernstein, "SipHash: a fast short-input PRF", 2012): a keyed
 * hash for tables whose keys a peer chooses (ROUTER routing ids), so an attacker who does not
 * know the key cannot force collisions. Pure function, any thread. */
#ifndef MCQ_PATTERNS_SIPHASH_H
#define MCQ_PATTERNS_SIPHASH_H

#include <stddef.h>
#include <stdint.h>

#define MCQ_SIPHASH_KEY_LEN 16 /* bytes */

/* The 64-bit SipHash-2-4 of data[0..len) under the 16-byte key. */
uint64_t mcq_siphash24(const uint8_t key[MCQ_SIPHASH_KEY_LEN], const void *data, size_t len);

#endif
