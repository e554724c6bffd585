/* What the command-line apps share: number and endpoint arguments, the frame text format
 * (escapes and hex), binding/connecting with user-facing messages, and the supervisor that
 * waits for SIGINT/SIGTERM or the app's own end and then shuts down in order.
 *
 * Exit codes for every app: 0 after a clean stop, 1 when a bind/connect or setup step
 * fails (with a message on stderr), 2 for bad arguments (usage on stderr). */
#ifndef MCQ_APPS_CLI_H
#define MCQ_APPS_CLI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "patterns/monocoque.h"

#define MCQ_CLI_EXIT_OK 0
#define MCQ_CLI_EXIT_FAIL 1
#define MCQ_CLI_EXIT_USAGE 2

/* Endpoints given on one command line, in order. */
#define MCQ_CLI_MAX_ENDPOINTS 64
/* How long closing a socket at shutdown may spend flushing queued output, in ms. */
#define MCQ_CLI_LINGER_MS 2000

struct mcq_cli_endpoint {
    const char *uri; /* borrowed from argv */
    bool bind;       /* bind, else connect */
};

struct mcq_cli_endpoints {
    struct mcq_cli_endpoint ep[MCQ_CLI_MAX_ENDPOINTS];
    unsigned n;
};

/* Prints usage (to stdout for code 0, else stderr) and exits with code. */
_Noreturn void mcq_cli_usage_exit(const char *usage, int code);

/* Parses a decimal integer in [min, max] spanning all of s. 0 or -EINVAL. */
int mcq_cli_parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out);

/* Appends an endpoint. 0 or -ENOSPC past MCQ_CLI_MAX_ENDPOINTS. */
int mcq_cli_add_endpoint(struct mcq_cli_endpoints *eps, const char *uri, bool bind);

/* Binds and connects s to every endpoint in eps. Prints "PROG: listening on EP" (the bound
 * endpoint, real port for :0) or "PROG: connecting to EP" per endpoint on stderr, and a
 * clear reason when one fails. 0 or the failing call's -errno. Non-shard thread. */
int mcq_cli_attach(const char *prog, struct mcq_socket *s, const struct mcq_cli_endpoints *eps);

/* Prints "PROG: ready" on stderr: every endpoint is bound or being connected. Tests and
 * scripts wait for this line instead of sleeping. */
void mcq_cli_announce_ready(const char *prog);

/* Sets an int option and reports a failure as "PROG: NAME: reason". 0 or -errno. */
int mcq_cli_set_int(const char *prog, struct mcq_socket *s, int option, const char *name,
                    int value);

/* --- frame text ----------------------------------------------------------------------------
 * One message is one line, frames separated by TAB. Escaped text keeps printable ASCII and
 * writes \t, \n, \\ and \xHH for the rest; hex text is two lowercase digits per byte. */

/* Decodes one frame's text s[0..len) into out (room for len bytes is enough). Returns the
 * decoded length, or -EINVAL for a bad escape or hex digit. */
long mcq_cli_decode_frame(const char *s, size_t len, bool hex, uint8_t *out);

/* A growable output line. */
struct mcq_cli_buf {
    char *data;
    size_t len, cap;
};

/* Appends the text form of bytes p[0..len) to b. 0 or -ENOMEM. */
int mcq_cli_encode_frame(struct mcq_cli_buf *b, const uint8_t *p, size_t len, bool hex);

/* Writes m as one line (frames TAB-separated, encoded) to f and flushes. Borrows m. Shard
 * thread that owns m. 0, -ENOMEM or -EIO. */
int mcq_cli_print_msg(FILE *f, struct mcq_cli_buf *b, const struct mcq_msg *m, bool hex);

/* Frees b's memory and empties it. */
void mcq_cli_buf_free(struct mcq_cli_buf *b);

/* --- lifecycle ----------------------------------------------------------------------------- */

/* Waits for SIGINT/SIGTERM or mcq_cli_stop_request(). */
struct mcq_cli_stop {
    int sig_fd;
    int req_fd;
};

/* Blocks SIGINT/SIGTERM in the calling thread (threads created afterwards inherit it, so
 * only the supervisor sees them) and opens the descriptors. Call first in main. 0 or -errno. */
int mcq_cli_stop_init(struct mcq_cli_stop *st);
/* Asks the supervisor to stop. Any thread, shard callbacks included. */
void mcq_cli_stop_request(struct mcq_cli_stop *st);
/* Waits up to timeout_ms (-1 forever). Returns 1 when a stop was signalled or requested,
 * 0 on timeout. */
int mcq_cli_stop_wait(struct mcq_cli_stop *st, int timeout_ms);
/* Closes the descriptors. After it, mcq_cli_stop_request is a harmless no-op. */
void mcq_cli_stop_fini(struct mcq_cli_stop *st);

/* Runs fn(shard, arg) on every shard of rt and waits until all have run (used at shutdown
 * to free per-shard state on its own shard). Non-shard thread. 0 or -errno. */
int mcq_cli_run_on_each_shard(struct mcq_runtime *rt, mcq_task_fn fn, void *arg);

/* Creates the runtime: shards = 0 takes the default (one per core, or MCQ_SHARDS). Prints
 * a message and returns -errno on failure. */
int mcq_cli_runtime_create(const char *prog, unsigned shards, struct mcq_runtime **out);

#endif
