/* mcq-broker: zmq_proxy(ROUTER, DEALER) on shards. A request arrives on the frontend ROUTER
 * with its client's routing id as frame 0 and goes, whole, out of the backend DEALER (which
 * round-robins over every worker on every shard); a reply arrives on the backend with that
 * id still first and goes out of the frontend ROUTER, which routes it to the client.
 * Requests that find no worker with room wait (held) until one has room or connects; once
 * BROKER_PAUSE_AT wait on a shard, that shard stops reading its clients (TCP backpressure,
 * as zmq_proxy blocks on a full backend) until they are down to BROKER_RESUME_AT, so no
 * request is ever dropped. Replies for a client that does not read are held (and past
 * MCQ_HELD_MAX dropped, as libzmq's ROUTER drops them), never stalling other clients. */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "apps/cli.h"
#include "apps/held.h"

static const char usage[] =
    "usage: mcq-broker --frontend EP --backend EP [--shards N]\n"
    "  Forwards requests from REQ/DEALER clients (frontend, a ROUTER) to REP/DEALER\n"
    "  workers (backend, a DEALER; round-robin over all workers) and replies back to\n"
    "  the client that asked, like zmq_proxy(ROUTER, DEALER).\n"
    "  --frontend EP  bind the client side: tcp://HOST:PORT or ipc://PATH\n"
    "  --backend EP   bind the worker side\n"
    "  --shards N     shard threads (default: one per core, or MCQ_SHARDS)\n"
    "  --help         this text\n"
    "Prints 'mcq-broker: listening on EP' per endpoint and 'mcq-broker: ready' on stderr.\n"
    "Runs until SIGINT or SIGTERM, then exits 0.\n";

/* Requests held on a shard at which it stops reading its clients, and at which it starts
 * again (hysteresis, so the pause is not toggled per message). */
#define BROKER_PAUSE_AT 1024u
#define BROKER_RESUME_AT 256u

/* Per shard: the messages waiting for each socket, and whether shutdown began. */
struct broker_shard {
    struct mcq_held held[2]; /* indexed like broker.sock */
    bool clients_paused;     /* the frontend's input on this shard, at BROKER_PAUSE_AT */
    bool closing;
};

struct broker {
    struct mcq_socket *sock[2]; /* FRONT, BACK */
    struct broker_shard *shards;
};

enum { FRONT = 0, BACK = 1 };

/* The handlers' user pointer: which side a callback is about. */
struct side {
    struct broker *b;
    int index;
};

static void side_msg(struct mcq_shard *sh, struct mcq_socket *s, struct mcq_msg *m, void *user)
{
    struct side *from = user;
    struct broker_shard *bs = &from->b->shards[mcq_shard_id(sh)];
    if (bs->closing) {
        mcq_msg_free(m);
        return;
    }
    mcq_held_send(&bs->held[1 - from->index], sh, m);
    if (from->index == FRONT && !bs->clients_paused &&
        mcq_held_count(&bs->held[BACK]) >= BROKER_PAUSE_AT &&
        mcq_socket_pause_input(sh, s, true) == 0)
        bs->clients_paused = true;
}

static void side_writable(struct mcq_shard *sh, struct mcq_socket *s, void *user)
{
    (void)s;
    struct side *side = user;
    struct broker *b = side->b;
    struct broker_shard *bs = &b->shards[mcq_shard_id(sh)];
    if (bs->closing)
        return;
    mcq_held_drain(&bs->held[side->index], sh);
    if (side->index == BACK && bs->clients_paused &&
        mcq_held_count(&bs->held[BACK]) <= BROKER_RESUME_AT &&
        mcq_socket_pause_input(sh, b->sock[FRONT], false) == 0)
        bs->clients_paused = false;
}

/* A new worker may take requests this shard holds. */
static void side_peer_up(struct mcq_shard *sh, struct mcq_socket *s, const struct mcq_peer_info *p,
                         void *user)
{
    (void)p;
    side_writable(sh, s, user);
}

static int side_open(struct mcq_runtime *rt, struct side *side, enum mcq_socket_type type,
                     const char *name)
{
    const char *prog = "mcq-broker";
    struct broker *b = side->b;
    int rc = mcq_socket_create(rt, type,
                               &(struct mcq_socket_handlers){.on_msg = side_msg,
                                                             .on_writable = side_writable,
                                                             .on_peer_up = side_peer_up,
                                                             .user = side},
                               &b->sock[side->index]);
    if (rc < 0) {
        fprintf(stderr, "%s: cannot create the %s socket: %s\n", prog, name, strerror(-rc));
        return rc;
    }
    struct mcq_socket *sock = b->sock[side->index];
    unsigned flags = type == MCQ_ROUTER ? MCQ_HELD_ROUTED : 0;
    for (unsigned i = 0; i < mcq_runtime_shard_count(rt); i++)
        mcq_held_init(&b->shards[i].held[side->index], sock, flags);
    if (type == MCQ_ROUTER) {
        /* A client whose queue is full gets its reply late (held), not never. */
        rc = mcq_cli_set_int(prog, sock, MCQ_ROUTER_MANDATORY, "ROUTER_MANDATORY", 1);
        if (rc < 0)
            return rc;
    }
    return mcq_cli_set_int(prog, sock, MCQ_LINGER, "LINGER", MCQ_CLI_LINGER_MS);
}

/* First step of shutdown, on each shard: no callback forwards anything after it. */
static void broker_quiesce(struct mcq_shard *sh, void *arg)
{
    struct broker_shard *bs = &((struct broker *)arg)->shards[mcq_shard_id(sh)];
    bs->closing = true;
    mcq_held_clear(&bs->held[FRONT]);
    mcq_held_clear(&bs->held[BACK]);
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"frontend", required_argument, NULL, 'f'},
        {"backend", required_argument, NULL, 'b'},
        {"shards", required_argument, NULL, 's'},
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    struct mcq_cli_endpoints front_eps = {0}, back_eps = {0};
    uint64_t shards = 0;
    int c;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case 'f':
        case 'b':
            if (mcq_cli_add_endpoint(c == 'f' ? &front_eps : &back_eps, optarg, true) < 0)
                mcq_cli_usage_exit(usage, MCQ_CLI_EXIT_USAGE);
            break;
        case 's':
            if (mcq_cli_parse_u64(optarg, 1, MCQ_MAX_SHARDS, &shards) < 0)
                mcq_cli_usage_exit(usage, MCQ_CLI_EXIT_USAGE);
            break;
        case 'h':
            mcq_cli_usage_exit(usage, MCQ_CLI_EXIT_OK);
        default:
            mcq_cli_usage_exit(usage, MCQ_CLI_EXIT_USAGE);
        }
    }
    if (optind != argc || front_eps.n == 0 || back_eps.n == 0)
        mcq_cli_usage_exit(usage, MCQ_CLI_EXIT_USAGE);

    const char *prog = "mcq-broker";
    struct mcq_cli_stop stop;
    if (mcq_cli_stop_init(&stop) < 0)
        return MCQ_CLI_EXIT_FAIL;
    struct mcq_runtime *rt;
    if (mcq_cli_runtime_create(prog, (unsigned)shards, &rt) < 0)
        return MCQ_CLI_EXIT_FAIL;
    struct broker b = {.shards = calloc(mcq_runtime_shard_count(rt), sizeof(*b.shards))};
    struct side sides[2] = {{&b, FRONT}, {&b, BACK}};
    int status = MCQ_CLI_EXIT_FAIL;
    if (!b.shards || side_open(rt, &sides[FRONT], MCQ_ROUTER, "frontend ROUTER") < 0 ||
        side_open(rt, &sides[BACK], MCQ_DEALER, "backend DEALER") < 0 ||
        mcq_cli_attach(prog, b.sock[FRONT], &front_eps) < 0 ||
        mcq_cli_attach(prog, b.sock[BACK], &back_eps) < 0)
        goto out;
    mcq_cli_announce_ready(prog);
    mcq_cli_stop_wait(&stop, -1);
    status = MCQ_CLI_EXIT_OK;
out:
    if (b.shards)
        mcq_cli_run_on_each_shard(rt, broker_quiesce, &b);
    for (int i = FRONT; i <= BACK; i++)
        if (b.sock[i])
            mcq_socket_close(b.sock[i]);
    mcq_runtime_stop(rt);
    mcq_runtime_destroy(rt);
    free(b.shards);
    mcq_cli_stop_fini(&stop);
    return status;
}
