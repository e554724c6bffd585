/* mcq-echo: a ROUTER that sends every message back, unchanged, to the peer that sent it.
 * Each message is echoed from the shard that owns its peer, so the work spreads over all
 * shards with no cross-shard traffic. */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "apps/cli.h"
#include "apps/held.h"

static const char usage[] =
    "usage: mcq-echo --bind EP [--bind EP]... [--shards N] [--max-msg-size BYTES]\n"
    "  A ROUTER socket that sends every message back to the peer that sent it.\n"
    "  --bind EP             tcp://HOST:PORT or ipc://PATH (repeatable; port 0 picks one)\n"
    "  --shards N            shard threads (default: one per core, or MCQ_SHARDS)\n"
    "  --max-msg-size BYTES  disconnect a peer that sends a bigger message\n"
    "  --help                this text\n"
    "Prints 'mcq-echo: listening on EP' per endpoint and 'mcq-echo: ready' on stderr.\n"
    "Runs until SIGINT or SIGTERM, then exits 0.\n";

/* Per shard: replies waiting for room, and whether shutdown began. */
struct echo_shard {
    struct mcq_held held;
    bool closing;
};

struct echo {
    struct mcq_socket *sock;
    struct echo_shard *shards;
};

static void echo_msg(struct mcq_shard *sh, struct mcq_socket *s, struct mcq_msg *m, void *user)
{
    (void)s;
    struct echo_shard *es = &((struct echo *)user)->shards[mcq_shard_id(sh)];
    if (es->closing)
        mcq_msg_free(m);
    else
        mcq_held_send(&es->held, sh, m);
}

static void echo_writable(struct mcq_shard *sh, struct mcq_socket *s, void *user)
{
    (void)s;
    struct echo_shard *es = &((struct echo *)user)->shards[mcq_shard_id(sh)];
    if (!es->closing)
        mcq_held_drain(&es->held, sh);
}

/* First step of shutdown, on each shard: nothing is sent after it. */
static void echo_quiesce(struct mcq_shard *sh, void *arg)
{
    struct echo_shard *es = &((struct echo *)arg)->shards[mcq_shard_id(sh)];
    es->closing = true;
    mcq_held_clear(&es->held);
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"bind", required_argument, NULL, 'b'},
        {"shards", required_argument, NULL, 's'},
        {"max-msg-size", required_argument, NULL, 'm'},
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    struct mcq_cli_endpoints eps = {0};
    uint64_t shards = 0, max_size = 0;
    bool have_max = false;
    int c;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case 'b':
            if (mcq_cli_add_endpoint(&eps, optarg, true) < 0)
                mcq_cli_usage_exit(usage, MCQ_CLI_EXIT_USAGE);
            break;
        case 's':
            if (mcq_cli_parse_u64(optarg, 1, MCQ_MAX_SHARDS, &shards) < 0)
                mcq_cli_usage_exit(usage, MCQ_CLI_EXIT_USAGE);
            break;
        case 'm':
            if (mcq_cli_parse_u64(optarg, 0, INT64_MAX, &max_size) < 0)
                mcq_cli_usage_exit(usage, MCQ_CLI_EXIT_USAGE);
            have_max = true;
            break;
        case 'h':
            mcq_cli_usage_exit(usage, MCQ_CLI_EXIT_OK);
        default:
            mcq_cli_usage_exit(usage, MCQ_CLI_EXIT_USAGE);
        }
    }
    if (optind != argc || eps.n == 0)
        mcq_cli_usage_exit(usage, MCQ_CLI_EXIT_USAGE);

    const char *prog = "mcq-echo";
    struct mcq_cli_stop stop;
    if (mcq_cli_stop_init(&stop) < 0)
        return MCQ_CLI_EXIT_FAIL;
    struct mcq_runtime *rt;
    if (mcq_cli_runtime_create(prog, (unsigned)shards, &rt) < 0)
        return MCQ_CLI_EXIT_FAIL;
    struct echo e = {.shards = calloc(mcq_runtime_shard_count(rt), sizeof(*e.shards))};
    int status = MCQ_CLI_EXIT_FAIL;
    if (!e.shards)
        goto out;
    int rc = mcq_socket_create(
        rt, MCQ_ROUTER,
        &(struct mcq_socket_handlers){.on_msg = echo_msg, .on_writable = echo_writable, .user = &e},
        &e.sock);
    if (rc < 0) {
        fprintf(stderr, "%s: cannot create a ROUTER socket: %s\n", prog, strerror(-rc));
        goto out;
    }
    for (unsigned i = 0; i < mcq_runtime_shard_count(rt); i++)
        mcq_held_init(&e.shards[i].held, e.sock, MCQ_HELD_ROUTED);
    int64_t max = (int64_t)max_size;
    /* Mandatory routing makes a full peer queue -EAGAIN (held) instead of a silent drop. */
    if (mcq_cli_set_int(prog, e.sock, MCQ_ROUTER_MANDATORY, "ROUTER_MANDATORY", 1) < 0 ||
        mcq_cli_set_int(prog, e.sock, MCQ_LINGER, "LINGER", MCQ_CLI_LINGER_MS) < 0)
        goto out;
    if (have_max && (rc = mcq_setsockopt(e.sock, MCQ_MAXMSGSIZE, &max, sizeof(max))) < 0) {
        fprintf(stderr, "%s: cannot set --max-msg-size: %s\n", prog, strerror(-rc));
        goto out;
    }
    if (mcq_cli_attach(prog, e.sock, &eps) < 0)
        goto out;
    mcq_cli_announce_ready(prog);
    mcq_cli_stop_wait(&stop, -1);
    status = MCQ_CLI_EXIT_OK;
out:
    if (e.shards)
        mcq_cli_run_on_each_shard(rt, echo_quiesce, &e);
    if (e.sock)
        mcq_socket_close(e.sock);
    mcq_runtime_stop(rt);
    mcq_runtime_destroy(rt);
    free(e.shards);
    mcq_cli_stop_fini(&stop);
    return status;
}
