#include "apps/cli.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

/* Room for MCQ_LAST_ENDPOINT: a path-length ipc:// endpoint. */
#define CLI_ENDPOINT_MAX 256
/* First size of an output line buffer, in bytes; it doubles as needed. */
#define CLI_BUF_INITIAL 256
/* How long shutdown waits for every shard to run its cleanup task, in ms. */
#define CLI_SHARD_TASK_WAIT_MS 5000

_Noreturn void mcq_cli_usage_exit(const char *usage, int code)
{
    fputs(usage, code == MCQ_CLI_EXIT_OK ? stdout : stderr);
    exit(code);
}

int mcq_cli_parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
    if (!s || *s < '0' || *s > '9')
        return -EINVAL;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || v < min || v > max)
        return -EINVAL;
    *out = v;
    return 0;
}

int mcq_cli_add_endpoint(struct mcq_cli_endpoints *eps, const char *uri, bool bind)
{
    if (eps->n == MCQ_CLI_MAX_ENDPOINTS)
        return -ENOSPC;
    eps->ep[eps->n++] = (struct mcq_cli_endpoint){uri, bind};
    return 0;
}

static const char *endpoint_error(int rc)
{
    switch (rc) {
    case -EINVAL:
        return "invalid endpoint (expected tcp://HOST:PORT or ipc://PATH)";
    case -EPROTONOSUPPORT:
        return "unsupported transport (use tcp:// or ipc://)";
    default:
        return strerror(-rc);
    }
}

int mcq_cli_attach(const char *prog, struct mcq_socket *s, const struct mcq_cli_endpoints *eps)
{
    for (unsigned i = 0; i < eps->n; i++) {
        const struct mcq_cli_endpoint *ep = &eps->ep[i];
        int rc = ep->bind ? mcq_bind(s, ep->uri) : mcq_connect(s, ep->uri);
        if (rc < 0) {
            fprintf(stderr, "%s: cannot %s %s: %s\n", prog, ep->bind ? "bind" : "connect to",
                    ep->uri, endpoint_error(rc));
            return rc;
        }
        if (!ep->bind) {
            fprintf(stderr, "%s: connecting to %s\n", prog, ep->uri);
            continue;
        }
        char bound[CLI_ENDPOINT_MAX];
        size_t len = sizeof(bound);
        if (mcq_getsockopt(s, MCQ_LAST_ENDPOINT, bound, &len) < 0 || len == 0)
            snprintf(bound, sizeof(bound), "%s", ep->uri);
        else
            bound[len < sizeof(bound) ? len : sizeof(bound) - 1] = '\0';
        fprintf(stderr, "%s: listening on %s\n", prog, bound);
    }
    return 0;
}

void mcq_cli_announce_ready(const char *prog)
{
    fprintf(stderr, "%s: ready\n", prog);
    fflush(stderr);
}

int mcq_cli_set_int(const char *prog, struct mcq_socket *s, int option, const char *name, int value)
{
    int rc = mcq_setsockopt(s, option, &value, sizeof(value));
    if (rc < 0)
        fprintf(stderr, "%s: cannot set %s: %s\n", prog, name, strerror(-rc));
    return rc;
}

/* --- frame text --------------------------------------------------------------------------- */

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static int hex_byte(const char *s)
{
    int hi = hex_digit(s[0]), lo = hex_digit(s[1]);
    return hi < 0 || lo < 0 ? -1 : hi << 4 | lo;
}

long mcq_cli_decode_frame(const char *s, size_t len, bool hex, uint8_t *out)
{
    size_t n = 0;
    if (hex) {
        if (len % 2)
            return -EINVAL;
        for (size_t i = 0; i < len; i += 2) {
            int b = hex_byte(s + i);
            if (b < 0)
                return -EINVAL;
            out[n++] = (uint8_t)b;
        }
        return (long)n;
    }
    for (size_t i = 0; i < len; i++) {
        if (s[i] != '\\') {
            out[n++] = (uint8_t)s[i];
            continue;
        }
        if (++i == len)
            return -EINVAL;
        switch (s[i]) {
        case 't':
            out[n++] = '\t';
            break;
        case 'n':
            out[n++] = '\n';
            break;
        case '\\':
            out[n++] = '\\';
            break;
        case 'x': {
            int b = len - i > 2 ? hex_byte(s + i + 1) : -1;
            if (b < 0)
                return -EINVAL;
            out[n++] = (uint8_t)b;
            i += 2;
            break;
        }
        default:
            return -EINVAL;
        }
    }
    return (long)n;
}

static int buf_reserve(struct mcq_cli_buf *b, size_t more)
{
    if (b->cap - b->len >= more)
        return 0;
    size_t cap = b->cap ? b->cap : CLI_BUF_INITIAL;
    while (cap - b->len < more)
        cap *= 2;
    char *p = realloc(b->data, cap);
    if (!p)
        return -ENOMEM;
    b->data = p;
    b->cap = cap;
    return 0;
}

int mcq_cli_encode_frame(struct mcq_cli_buf *b, const uint8_t *p, size_t len, bool hex)
{
    static const char digits[] = "0123456789abcdef";
    /* Worst case: every byte becomes \xHH. */
    if (buf_reserve(b, len * 4) < 0)
        return -ENOMEM;
    char *o = b->data + b->len;
    for (size_t i = 0; i < len; i++) {
        uint8_t c = p[i];
        if (hex) {
            *o++ = digits[c >> 4];
            *o++ = digits[c & 15];
        } else if (c == '\\') {
            *o++ = '\\';
            *o++ = '\\';
        } else if (c == '\t') {
            *o++ = '\\';
            *o++ = 't';
        } else if (c == '\n') {
            *o++ = '\\';
            *o++ = 'n';
        } else if (c >= 0x20 && c < 0x7f) {
            *o++ = (char)c;
        } else {
            *o++ = '\\';
            *o++ = 'x';
            *o++ = digits[c >> 4];
            *o++ = digits[c & 15];
        }
    }
    b->len = (size_t)(o - b->data);
    return 0;
}

int mcq_cli_print_msg(FILE *f, struct mcq_cli_buf *b, const struct mcq_msg *m, bool hex)
{
    b->len = 0;
    unsigned n = mcq_msg_count(m);
    for (unsigned i = 0; i < n; i++) {
        const struct mcq_view *v = mcq_msg_frame(m, i);
        size_t len = mcq_view_len(v);
        /* A zero-length frame may carry no page at all. */
        if (len && mcq_cli_encode_frame(b, mcq_view_data(v), len, hex) < 0)
            return -ENOMEM;
        if (buf_reserve(b, 1) < 0)
            return -ENOMEM;
        b->data[b->len++] = i + 1 < n ? '\t' : '\n';
    }
    if (n == 0) {
        if (buf_reserve(b, 1) < 0)
            return -ENOMEM;
        b->data[b->len++] = '\n';
    }
    if (fwrite(b->data, 1, b->len, f) != b->len || fflush(f) != 0)
        return -EIO;
    return 0;
}

void mcq_cli_buf_free(struct mcq_cli_buf *b)
{
    free(b->data);
    *b = (struct mcq_cli_buf){0};
}

/* --- lifecycle ---------------------------------------------------------------------------- */

int mcq_cli_stop_init(struct mcq_cli_stop *st)
{
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    /* A closed stdout/stdin pipe is an error to report, not a reason to die. */
    signal(SIGPIPE, SIG_IGN);
    st->sig_fd = signalfd(-1, &sigs, SFD_CLOEXEC);
    st->req_fd = eventfd(0, EFD_CLOEXEC);
    if (st->sig_fd < 0 || st->req_fd < 0) {
        int rc = -errno;
        mcq_cli_stop_fini(st);
        return rc;
    }
    return 0;
}

void mcq_cli_stop_request(struct mcq_cli_stop *st)
{
    uint64_t one = 1;
    /* The counter cannot overflow from a handful of requests; a failed write means the
     * descriptor is gone, i.e. shutdown is already under way. */
    ssize_t rc = write(st->req_fd, &one, sizeof(one));
    (void)rc;
}

int mcq_cli_stop_wait(struct mcq_cli_stop *st, int timeout_ms)
{
    struct pollfd pfd[2] = {{.fd = st->sig_fd, .events = POLLIN},
                            {.fd = st->req_fd, .events = POLLIN}};
    for (;;) {
        int n = poll(pfd, 2, timeout_ms);
        if (n < 0 && errno == EINTR)
            continue;
        return n != 0;
    }
}

void mcq_cli_stop_fini(struct mcq_cli_stop *st)
{
    if (st->sig_fd >= 0)
        close(st->sig_fd);
    if (st->req_fd >= 0)
        close(st->req_fd);
    st->sig_fd = st->req_fd = -1;
}

struct each_shard {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    unsigned pending;
    mcq_task_fn fn;
    void *arg;
};

static void each_shard_task(struct mcq_shard *sh, void *arg)
{
    struct each_shard *e = arg;
    e->fn(sh, e->arg);
    pthread_mutex_lock(&e->lock);
    if (--e->pending == 0)
        pthread_cond_signal(&e->cond);
    pthread_mutex_unlock(&e->lock);
}

int mcq_cli_run_on_each_shard(struct mcq_runtime *rt, mcq_task_fn fn, void *arg)
{
    /* Static so that a shard that is late beyond the wait bound still finds it alive. */
    static struct each_shard e = {.lock = PTHREAD_MUTEX_INITIALIZER};
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&e.cond, &ca);
    pthread_condattr_destroy(&ca);
    e.fn = fn;
    e.arg = arg;
    unsigned n = mcq_runtime_shard_count(rt);
    int rc = 0;
    pthread_mutex_lock(&e.lock);
    e.pending = n;
    for (unsigned i = 0; i < n; i++) {
        int prc = mcq_runtime_post(rt, i, each_shard_task, &e);
        if (prc < 0) {
            rc = prc;
            e.pending--;
        }
    }
    struct timespec deadline;
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += CLI_SHARD_TASK_WAIT_MS / 1000;
    while (e.pending && rc == 0) {
        int w = pthread_cond_timedwait(&e.cond, &e.lock, &deadline);
        if (w == ETIMEDOUT)
            rc = -ETIMEDOUT;
    }
    pthread_mutex_unlock(&e.lock);
    return rc;
}

int mcq_cli_runtime_create(const char *prog, unsigned shards, struct mcq_runtime **out)
{
    struct mcq_config cfg = mcq_config_default();
    if (shards)
        cfg.shards = shards;
    int rc = mcq_runtime_create(&cfg, out);
    if (rc < 0)
        fprintf(stderr, "%s: cannot start the runtime: %s\n", prog, strerror(-rc));
    return rc;
}
