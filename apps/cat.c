/* mcq-cat: one socket on the command line, like nc for ZeroMQ. stdin lines become messages
 * and received messages become stdout lines (frames separated by TAB, escaped or hex).
 *
 * Threads: a reader thread blocks on stdin and hands decoded lines to shard 0 with
 * mcq_runtime_post, at most CAT_INFLIGHT_MAX ahead of what the shard has sent (so a fast
 * stdin and a slow peer cannot grow memory); every socket callback and all the state
 * below runs on shard 0 (the runtime has one shard); main supervises: it waits for a
 * signal, the end (count reached, stdin done) or the idle timeout, then shuts down. */
#include <getopt.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "apps/cli.h"
#include "apps/held.h"
#include "runtime/log.h"

static const char usage[] =
    "usage: mcq-cat TYPE (--bind EP | --connect EP)... [--subscribe PREFIX]...\n"
    "               [--identity ID] [--count N] [--timeout-ms MS] [--hex]\n"
    "  A socket of TYPE (PAIR PUB SUB REQ REP DEALER ROUTER PULL PUSH XPUB XSUB).\n"
    "  Each stdin line is sent as one message, frames separated by TAB; each message\n"
    "  received is printed as one line. In frames \\t \\n \\\\ and \\xHH are escapes.\n"
    "  REQ sends a line and prints the reply before the next; REP prints a request\n"
    "  and replies with the next line; ROUTER prints the sender's identity as the\n"
    "  first frame and sends each line to the peer its first frame names.\n"
    "  --bind EP, --connect EP  tcp://HOST:PORT or ipc://PATH (repeatable)\n"
    "  --subscribe PREFIX       SUB/XSUB: subscribe to PREFIX (repeatable)\n"
    "  --identity ID            this socket's routing id\n"
    "  --count N                exit after N received messages\n"
    "  --timeout-ms MS          exit after MS ms without receiving anything\n"
    "  --hex                    frames (and PREFIX, ID) are plain hex\n"
    "  --help                   this text\n"
    "Without --count, the end of stdin ends the run once every line was sent (REQ: and\n"
    "its reply printed). Prints 'mcq-cat: ready' on stderr once bound/connecting.\n";

/* Lines the reader may hand over before the shard has sent them. */
#define CAT_INFLIGHT_MAX 1024u
#define NS_PER_MS 1000000ull

/* One stdin line, decoded: nframes lengths, then the frames' bytes back to back. */
struct line {
    struct line *next;
    unsigned nframes;
    uint32_t lens[];
};

static uint8_t *line_bytes(struct line *l)
{
    return (uint8_t *)(l->lens + l->nframes);
}

struct cat {
    /* Set up by main before any thread starts; read-only afterwards. */
    const char *prog;
    struct mcq_runtime *rt;
    struct mcq_socket *sock;
    enum mcq_socket_type type;
    bool hex, can_send, can_recv;
    uint64_t count;
    struct mcq_cli_stop stop;

    /* Shard 0 only. */
    struct line *head, **tail;
    unsigned nlines;
    uint64_t lines_seen;
    struct mcq_held held;
    bool eof, awaiting_reply, reply_owed, closing;
    uint64_t received, sent; /* messages printed / taken by the socket */
    struct mcq_cli_buf out;

    /* Reader <-> shard flow control. */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    uint64_t posted, done;
    bool shut;

    _Atomic uint64_t last_rx_ns; /* CLOCK_MONOTONIC of the last receive (or the start) */
};

/* Static: the reader thread may still be blocked on stdin when main returns. */
static struct cat cat = {
    .lock = PTHREAD_MUTEX_INITIALIZER,
    .cond = PTHREAD_COND_INITIALIZER,
};

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static const struct {
    const char *name;
    enum mcq_socket_type type;
} types[] = {
    {"PAIR", MCQ_PAIR}, {"PUB", MCQ_PUB},       {"SUB", MCQ_SUB},       {"REQ", MCQ_REQ},
    {"REP", MCQ_REP},   {"DEALER", MCQ_DEALER}, {"ROUTER", MCQ_ROUTER}, {"PULL", MCQ_PULL},
    {"PUSH", MCQ_PUSH}, {"XPUB", MCQ_XPUB},     {"XSUB", MCQ_XSUB},
};

static int parse_type(const char *s, enum mcq_socket_type *out)
{
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        if (strcasecmp(s, types[i].name) == 0) {
            *out = types[i].type;
            return 0;
        }
    }
    return -EINVAL;
}

/* --- shard 0 ------------------------------------------------------------------------------- */

static void finish(void)
{
    cat.closing = true;
    mcq_cli_stop_request(&cat.stop);
}

static struct mcq_msg *line_msg(struct mcq_shard *sh, struct line *l)
{
    struct mcq_msg *m = mcq_msg_new(sh);
    const uint8_t *p = line_bytes(l);
    for (unsigned i = 0; m && i < l->nframes; p += l->lens[i++]) {
        if (mcq_msg_append(m, p, l->lens[i]) < 0) {
            mcq_msg_free(m);
            m = NULL;
        }
    }
    return m;
}

/* Turns the next line into a message and sends (or holds) it. False when none is left. */
static bool send_next_line(struct mcq_shard *sh)
{
    struct line *l = cat.head;
    if (!l)
        return false;
    cat.head = l->next;
    if (!cat.head)
        cat.tail = &cat.head;
    cat.nlines--;
    struct mcq_msg *m = line_msg(sh, l);
    free(l);
    if (!m) {
        fprintf(stderr, "%s: out of memory, line dropped\n", cat.prog);
        return true;
    }
    int rc = mcq_held_send(&cat.held, sh, m);
    if (rc == 1)
        cat.sent++;
    if (rc < 0)
        fprintf(stderr, "%s: line dropped: %s\n", cat.prog, strerror(-rc));
    else if (cat.type == MCQ_REQ)
        cat.awaiting_reply = true;
    return true;
}

/* Sends what the socket type allows now, lets the reader go on, and ends the run when
 * stdin is done. Called after every event. */
static void progress(struct mcq_shard *sh)
{
    if (cat.closing)
        return;
    switch (cat.type) {
    case MCQ_REQ:
        if (!cat.awaiting_reply && mcq_held_count(&cat.held) == 0)
            send_next_line(sh);
        break;
    case MCQ_REP:
        if (cat.reply_owed && send_next_line(sh))
            cat.reply_owed = false;
        break;
    default:
        while (send_next_line(sh))
            ;
    }
    uint64_t done = cat.lines_seen - cat.nlines - mcq_held_count(&cat.held);
    pthread_mutex_lock(&cat.lock);
    if (done != cat.done) {
        cat.done = done;
        pthread_cond_signal(&cat.cond);
    }
    pthread_mutex_unlock(&cat.lock);
    bool wait_count = cat.count && cat.can_recv;
    if (cat.eof && !cat.head && mcq_held_count(&cat.held) == 0 && !cat.awaiting_reply &&
        !wait_count)
        finish();
}

static void line_task(struct mcq_shard *sh, void *arg)
{
    struct line *l = arg;
    if (cat.closing) {
        free(l);
        return;
    }
    l->next = NULL;
    *cat.tail = l;
    cat.tail = &l->next;
    cat.nlines++;
    cat.lines_seen++;
    progress(sh);
}

static void eof_task(struct mcq_shard *sh, void *arg)
{
    (void)arg;
    cat.eof = true;
    progress(sh);
}

static void cat_msg(struct mcq_shard *sh, struct mcq_socket *s, struct mcq_msg *m, void *user)
{
    (void)s;
    (void)user;
    if (cat.closing) {
        mcq_msg_free(m);
        return;
    }
    cat.received++;
    atomic_store_explicit(&cat.last_rx_ns, now_ns(), memory_order_relaxed);
    int rc = mcq_cli_print_msg(stdout, &cat.out, m, cat.hex);
    mcq_msg_free(m);
    if (rc < 0) {
        fprintf(stderr, "%s: cannot write to stdout: %s\n", cat.prog, strerror(-rc));
        finish();
        return;
    }
    bool counted = cat.count && cat.received >= cat.count;
    if (cat.type == MCQ_REQ) {
        cat.awaiting_reply = false;
        /* The last reply counted: no further request goes out. */
        if (counted) {
            finish();
            return;
        }
    }
    if (cat.type == MCQ_REP)
        cat.reply_owed = true;
    progress(sh);
    if (counted)
        finish();
}

static void cat_writable(struct mcq_shard *sh, struct mcq_socket *s, void *user)
{
    (void)s;
    (void)user;
    if (cat.closing)
        return;
    cat.sent += mcq_held_drain(&cat.held, sh);
    progress(sh);
}

static void cat_peer_up(struct mcq_shard *sh, struct mcq_socket *s, const struct mcq_peer_info *p,
                        void *user)
{
    (void)p;
    cat_writable(sh, s, user);
}

/* First step of shutdown: nothing is sent or printed after it; held lines are freed. */
static void quiesce_task(struct mcq_shard *sh, void *arg)
{
    (void)sh;
    (void)arg;
    cat.closing = true;
    mcq_log_info("%s: %llu message(s) sent, %llu received, %u held dropped at exit", cat.prog,
                 (unsigned long long)cat.sent, (unsigned long long)cat.received,
                 mcq_held_count(&cat.held));
    mcq_held_clear(&cat.held);
    while (cat.head) {
        struct line *l = cat.head;
        cat.head = l->next;
        free(l);
    }
    cat.tail = &cat.head;
    cat.nlines = 0;
}

/* --- reader thread ------------------------------------------------------------------------- */

/* Decodes a line (no newline) into a struct line, or NULL for bad text / no memory. */
static struct line *line_parse(const char *s, size_t len, bool hex)
{
    unsigned nframes = 1;
    for (size_t i = 0; i < len; i++)
        nframes += s[i] == '\t';
    struct line *l = malloc(sizeof(*l) + nframes * sizeof(uint32_t) + len);
    if (!l)
        return NULL;
    l->nframes = nframes;
    uint8_t *out = line_bytes(l);
    const char *field = s, *end = s + len;
    for (unsigned i = 0; i < nframes; i++) {
        const char *tab = memchr(field, '\t', (size_t)(end - field));
        const char *stop = tab ? tab : end;
        long n = mcq_cli_decode_frame(field, (size_t)(stop - field), hex, out);
        if (n < 0) {
            free(l);
            return NULL;
        }
        l->lens[i] = (uint32_t)n;
        out += n;
        field = stop + 1;
    }
    return l;
}

/* Hands fn(arg) to shard 0 unless shutdown began. False when it did not. */
static bool hand_over(mcq_task_fn fn, void *arg, bool counts)
{
    pthread_mutex_lock(&cat.lock);
    while (counts && !cat.shut && cat.posted - cat.done >= CAT_INFLIGHT_MAX)
        pthread_cond_wait(&cat.cond, &cat.lock);
    bool ok = !cat.shut && mcq_runtime_post(cat.rt, 0, fn, arg) == 0;
    if (ok && counts)
        cat.posted++;
    pthread_mutex_unlock(&cat.lock);
    return ok;
}

static void *reader_main(void *arg)
{
    (void)arg;
    char *buf = NULL;
    size_t cap = 0;
    ssize_t n;
    unsigned long lineno = 0;
    while ((n = getline(&buf, &cap, stdin)) >= 0) {
        lineno++;
        if (n > 0 && buf[n - 1] == '\n')
            n--;
        struct line *l = line_parse(buf, (size_t)n, cat.hex);
        if (!l) {
            fprintf(stderr, "%s: stdin line %lu: bad %s, skipped\n", cat.prog, lineno,
                    cat.hex ? "hex" : "escape");
            continue;
        }
        if (!hand_over(line_task, l, true)) {
            free(l);
            break;
        }
    }
    free(buf);
    hand_over(eof_task, NULL, false);
    return NULL;
}

/* --- main ---------------------------------------------------------------------------------- */

/* An option value given as frame text (escaped or hex), decoded. */
struct bytes_arg {
    const char *text;
    uint8_t *data;
    size_t len;
};

/* Decodes a.text or exits with the usage (before anything was started). */
static void decode_arg_or_exit(struct bytes_arg *a, const char *name)
{
    size_t slen = strlen(a->text);
    a->data = malloc(slen + 1);
    long n = a->data ? mcq_cli_decode_frame(a->text, slen, cat.hex, a->data) : -ENOMEM;
    if (n < 0) {
        fprintf(stderr, "%s: bad %s value '%s'\n", cat.prog, name, a->text);
        mcq_cli_usage_exit(usage, MCQ_CLI_EXIT_USAGE);
    }
    a->len = (size_t)n;
}

static int set_bytes_opt(int option, const char *name, struct bytes_arg *a)
{
    int rc = mcq_setsockopt(cat.sock, option, a->data, a->len);
    if (rc < 0)
        fprintf(stderr, "%s: cannot set %s '%s': %s\n", cat.prog, name, a->text, strerror(-rc));
    return rc;
}

/* Waits for a signal, the end of the run, or the idle timeout. */
static void supervise(int timeout_ms)
{
    for (;;) {
        int wait_ms = -1;
        if (timeout_ms > 0) {
            uint64_t idle = now_ns() - atomic_load(&cat.last_rx_ns);
            uint64_t limit = (uint64_t)timeout_ms * NS_PER_MS;
            if (idle >= limit) {
                fprintf(stderr, "%s: nothing received for %d ms, exiting\n", cat.prog, timeout_ms);
                return;
            }
            /* Round up so the wait never ends just short of the limit. */
            wait_ms = (int)((limit - idle + NS_PER_MS - 1) / NS_PER_MS);
        }
        if (mcq_cli_stop_wait(&cat.stop, wait_ms))
            return;
    }
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"bind", required_argument, NULL, 'b'},
        {"connect", required_argument, NULL, 'c'},
        {"subscribe", required_argument, NULL, 's'},
        {"identity", required_argument, NULL, 'i'},
        {"count", required_argument, NULL, 'n'},
        {"timeout-ms", required_argument, NULL, 't'},
        {"hex", no_argument, NULL, 'x'},
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    struct mcq_cli_endpoints eps = {0};
    struct bytes_arg subs[MCQ_CLI_MAX_ENDPOINTS], identity = {0};
    unsigned nsubs = 0;
    uint64_t timeout_ms = 0;
    cat.prog = "mcq-cat";
    int c;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        int rc = 0;
        switch (c) {
        case 'b':
        case 'c':
            rc = mcq_cli_add_endpoint(&eps, optarg, c == 'b');
            break;
        case 's':
            if (nsubs == MCQ_CLI_MAX_ENDPOINTS)
                rc = -ENOSPC;
            else
                subs[nsubs++].text = optarg;
            break;
        case 'i':
            identity.text = optarg;
            break;
        case 'n':
            rc = mcq_cli_parse_u64(optarg, 1, UINT64_MAX, &cat.count);
            break;
        case 't':
            rc = mcq_cli_parse_u64(optarg, 1, INT32_MAX, &timeout_ms);
            break;
        case 'x':
            cat.hex = true;
            break;
        case 'h':
            mcq_cli_usage_exit(usage, MCQ_CLI_EXIT_OK);
        default:
            rc = -EINVAL;
        }
        if (rc < 0)
            mcq_cli_usage_exit(usage, MCQ_CLI_EXIT_USAGE);
    }
    if (optind + 1 != argc || eps.n == 0 || parse_type(argv[optind], &cat.type) < 0)
        mcq_cli_usage_exit(usage, MCQ_CLI_EXIT_USAGE);
    if (nsubs && cat.type != MCQ_SUB && cat.type != MCQ_XSUB) {
        fprintf(stderr, "%s: --subscribe is for SUB and XSUB only\n", cat.prog);
        mcq_cli_usage_exit(usage, MCQ_CLI_EXIT_USAGE);
    }
    for (unsigned i = 0; i < nsubs; i++)
        decode_arg_or_exit(&subs[i], "--subscribe");
    if (identity.text)
        decode_arg_or_exit(&identity, "--identity");
    cat.can_send = cat.type != MCQ_PULL && cat.type != MCQ_SUB;
    cat.can_recv = cat.type != MCQ_PUSH && cat.type != MCQ_PUB;
    cat.tail = &cat.head;

    if (mcq_cli_stop_init(&cat.stop) < 0)
        return MCQ_CLI_EXIT_FAIL;
    /* All state lives on one shard; a command-line socket needs no more. */
    if (mcq_cli_runtime_create(cat.prog, 1, &cat.rt) < 0)
        return MCQ_CLI_EXIT_FAIL;
    int status = MCQ_CLI_EXIT_FAIL;
    int rc = mcq_socket_create(cat.rt, cat.type,
                               &(struct mcq_socket_handlers){.on_msg = cat_msg,
                                                             .on_writable = cat_writable,
                                                             .on_peer_up = cat_peer_up},
                               &cat.sock);
    if (rc == -EINVAL || rc == -ENOTSUP) {
        fprintf(stderr, "%s: socket type %s is not supported by this build\n", cat.prog,
                argv[optind]);
        goto out;
    }
    if (rc < 0) {
        fprintf(stderr, "%s: cannot create a %s socket: %s\n", cat.prog, argv[optind],
                strerror(-rc));
        goto out;
    }
    unsigned held_flags = 0;
    if (cat.type == MCQ_ROUTER) {
        /* Lines for a peer that has not connected yet wait for it. */
        held_flags = MCQ_HELD_ROUTED | MCQ_HELD_WAIT_PEER;
        if (mcq_cli_set_int(cat.prog, cat.sock, MCQ_ROUTER_MANDATORY, "ROUTER_MANDATORY", 1) < 0)
            goto out;
    }
    mcq_held_init(&cat.held, cat.sock, held_flags);
    if (mcq_cli_set_int(cat.prog, cat.sock, MCQ_LINGER, "LINGER", MCQ_CLI_LINGER_MS) < 0)
        goto out;
    if (identity.text && set_bytes_opt(MCQ_ROUTING_ID, "--identity", &identity) < 0)
        goto out;
    for (unsigned i = 0; i < nsubs; i++)
        if (set_bytes_opt(MCQ_SUBSCRIBE, "--subscribe", &subs[i]) < 0)
            goto out;
    if (mcq_cli_attach(cat.prog, cat.sock, &eps) < 0)
        goto out;
    atomic_store(&cat.last_rx_ns, now_ns());
    pthread_t reader;
    if (cat.can_send) {
        rc = -pthread_create(&reader, NULL, reader_main, NULL);
        if (rc < 0) {
            fprintf(stderr, "%s: cannot start the stdin reader: %s\n", cat.prog, strerror(-rc));
            goto out;
        }
        pthread_detach(reader);
    }
    mcq_cli_announce_ready(cat.prog);
    supervise((int)timeout_ms);
    status = MCQ_CLI_EXIT_OK;
out:
    pthread_mutex_lock(&cat.lock);
    cat.shut = true;
    pthread_cond_broadcast(&cat.cond);
    pthread_mutex_unlock(&cat.lock);
    mcq_cli_run_on_each_shard(cat.rt, quiesce_task, NULL);
    if (cat.sock)
        mcq_socket_close(cat.sock);
    mcq_runtime_stop(cat.rt);
    mcq_runtime_destroy(cat.rt);
    mcq_cli_buf_free(&cat.out);
    mcq_cli_stop_fini(&cat.stop);
    for (unsigned i = 0; i < nsubs; i++)
        free(subs[i].data);
    free(identity.data);
    return status;
}
