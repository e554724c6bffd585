/* mcq_conn_sendv (all or nothing), adjacent views of one page merging into one queued
 * view (also through mcq_conn_send_slice), and a FLUSH close that keeps sending a long queue until
 * it is out. Real sockets; the work runs on the shard through posted tasks. */
#include <criterion/criterion.h>

#include <stdlib.h>

#include "alloc/arena.h"
#include "conn_util.h"

#define WAIT_S 10.0
#define IO_TIMEOUT_MS 5000
#define SMALL_VIEWS 100u  /* adjacent slices of one page in the first sendv */
#define SMALL_BYTES 100u  /* bytes per slice */
#define OTHER_BYTES 1000u /* a view of another page after them */
#define BIG_BYTES (64u << 10)
#define FILL_MAX 10000u   /* sendv calls before giving up on -EAGAIN */
#define EARLY_CLOSE_S 0.2 /* how long a premature on_close is given to show up */
#define LINGER_VIEWS 128u /* 128 x 64 KiB = 8 MiB queued before a FLUSH close */

static struct {
    struct mcq_conn *_Atomic conn;
    struct test_event open_ev, close_ev, writable_ev, done_ev;
    int rc;
    unsigned sent;
    bool kept_refs;
} st;

static void on_open(struct mcq_conn *c, void *user)
{
    (void)user;
    atomic_store(&st.conn, c);
    test_event_signal(&st.open_ev);
}

static void on_writable(struct mcq_conn *c, void *user)
{
    (void)c;
    (void)user;
    test_event_signal(&st.writable_ev);
}

static void on_close(struct mcq_conn *c, void *user, int reason)
{
    (void)c;
    (void)user;
    (void)reason;
    test_event_signal(&st.close_ev);
}

static const struct mcq_conn_handler handler = {
    .on_open = on_open, .on_writable = on_writable, .on_close = on_close};

static uint8_t byte_at(size_t i)
{
    return (uint8_t)(i * 131 + (i >> 9));
}

static void fill_page(struct mcq_view *v)
{
    for (size_t i = 0; i < v->len; i++)
        mcq_view_mut(v)[i] = byte_at(i);
}

static void setup(void)
{
    memset(&st, 0, sizeof(st));
    test_event_init(&st.open_ev);
    test_event_init(&st.close_ev);
    test_event_init(&st.writable_ev);
    test_event_init(&st.done_ev);
}

static void run(struct mcq_runtime *rt, void (*fn)(struct mcq_shard *, void *))
{
    int before = st.done_ev.count;
    cr_assert_eq(mcq_runtime_post(rt, 0, fn, NULL), 0);
    cr_assert(test_event_wait(&st.done_ev, before + 1, WAIT_S), "shard task timed out");
}

/* 100 adjacent slices of one page, then a view of another page, in one sendv. */
static void task_small(struct mcq_shard *sh, void *arg)
{
    (void)arg;
    struct mcq_view page, other;
    mcq_page_alloc(mcq_shard_arena(sh), SMALL_VIEWS * SMALL_BYTES, &page);
    mcq_page_alloc(mcq_shard_arena(sh), OTHER_BYTES, &other);
    fill_page(&page);
    fill_page(&other);
    struct mcq_view v[SMALL_VIEWS + 1];
    for (unsigned i = 0; i < SMALL_VIEWS; i++)
        mcq_view_slice(&page, i * SMALL_BYTES, SMALL_BYTES, &v[i]);
    v[SMALL_VIEWS] = other;
    st.rc = mcq_conn_sendv(atomic_load(&st.conn), v, SMALL_VIEWS + 1);
    st.kept_refs = false;
    for (unsigned i = 0; i <= SMALL_VIEWS; i++)
        st.kept_refs |= v[i].ref != NULL;
    mcq_view_unref(&page);
    test_event_signal(&st.done_ev);
}

/* Big + small views per call until the queue says -EAGAIN; the refused views must still be
 * the caller's. */
static void task_fill(struct mcq_shard *sh, void *arg)
{
    (void)arg;
    st.sent = 0;
    for (unsigned n = 0; n < FILL_MAX; n++) {
        struct mcq_view v[2];
        mcq_page_alloc(mcq_shard_arena(sh), BIG_BYTES, &v[0]);
        mcq_page_alloc(mcq_shard_arena(sh), SMALL_BYTES, &v[1]);
        fill_page(&v[0]);
        fill_page(&v[1]);
        st.rc = mcq_conn_sendv(atomic_load(&st.conn), v, 2);
        if (st.rc < 0) {
            st.kept_refs = v[0].ref && v[1].ref && v[0].len == BIG_BYTES;
            mcq_view_unref(&v[0]);
            mcq_view_unref(&v[1]);
            break;
        }
        st.sent++;
    }
    test_event_signal(&st.done_ev);
}

/* The slices of one page sent one by one with mcq_conn_send_slice: each continues the
 * last, so the queue holds one view with one reference; a bad range is refused. */
static void task_slices(struct mcq_shard *sh, void *arg)
{
    (void)arg;
    struct mcq_conn *c = atomic_load(&st.conn);
    struct mcq_view page;
    mcq_page_alloc(mcq_shard_arena(sh), SMALL_VIEWS * SMALL_BYTES, &page);
    fill_page(&page);
    st.rc = mcq_conn_send_slice(c, &page, SMALL_VIEWS * SMALL_BYTES, 1) == -EINVAL ? 0 : -1;
    for (unsigned i = 0; i < SMALL_VIEWS && st.rc == 0; i++)
        st.rc = mcq_conn_send_slice(c, &page, i * SMALL_BYTES, SMALL_BYTES);
    /* Ours plus the queued view's, however many slices went. */
    st.kept_refs = page.ref->_local != 2;
    mcq_view_unref(&page);
    test_event_signal(&st.done_ev);
}

static void read_pattern(int fd, size_t len)
{
    uint8_t *buf = malloc(len);
    read_exact_fd(fd, buf, len, IO_TIMEOUT_MS);
    for (size_t i = 0; i < len; i++)
        cr_assert_eq(buf[i], byte_at(i), "byte %zu", i);
    free(buf);
}

Test(conn_sendv, whole_or_nothing_and_adjacent_views_merge, .init = setup, .timeout = 60)
{
    struct mcq_runtime *rt = start_runtime(1);
    struct mcq_conn_cfg cfg = {.handler = &handler, .sndq_max_bytes = BIG_BYTES};
    struct mcq_listener *l;
    struct mcq_sockaddr addr = listen_loopback(rt, &cfg, &l);
    int fd = client_connect(&addr);
    cr_assert(test_event_wait(&st.open_ev, 1, WAIT_S));

    run(rt, task_small);
    cr_assert_eq(st.rc, 0);
    cr_assert_not(st.kept_refs, "sendv left references with the caller");
    read_pattern(fd, SMALL_VIEWS * SMALL_BYTES);
    read_pattern(fd, OTHER_BYTES);

    run(rt, task_fill);
    cr_assert_eq(st.rc, -EAGAIN);
    cr_assert(st.kept_refs, "refused views were taken");
    cr_assert_geq(st.sent, 1);
    for (unsigned i = 0; i < st.sent; i++) {
        read_pattern(fd, BIG_BYTES);
        read_pattern(fd, SMALL_BYTES);
    }
    cr_assert(test_event_wait(&st.writable_ev, 1, WAIT_S), "no on_writable after draining");
    close(fd);
    mcq_listener_close(l);
    mcq_runtime_destroy(rt);
}

Test(conn_sendv, send_slice_extends_the_last_view, .init = setup, .timeout = 60)
{
    struct mcq_runtime *rt = start_runtime(1);
    struct mcq_conn_cfg cfg = {.handler = &handler};
    struct mcq_listener *l;
    cr_assert_eq(mcq_conn_listen(rt, "tcp://127.0.0.1:0", &cfg, &l), 0);
    struct mcq_sockaddr addr = listener_addr(l);
    int fd = client_connect(&addr);
    cr_assert(test_event_wait(&st.open_ev, 1, WAIT_S));
    run(rt, task_slices);
    cr_assert_eq(st.rc, 0);
    cr_assert_not(st.kept_refs, "adjacent slices took a reference each");
    read_pattern(fd, SMALL_VIEWS * SMALL_BYTES);
    close(fd);
    mcq_listener_close(l);
    mcq_runtime_destroy(rt);
}

static void task_queue_and_close(struct mcq_shard *sh, void *arg)
{
    (void)arg;
    struct mcq_conn *c = atomic_load(&st.conn);
    st.rc = 0;
    for (unsigned i = 0; i < LINGER_VIEWS && st.rc == 0; i++) {
        struct mcq_view v;
        mcq_page_alloc(mcq_shard_arena(sh), BIG_BYTES, &v);
        fill_page(&v);
        st.rc = mcq_conn_send(c, &v);
        mcq_view_unref(&v);
    }
    mcq_conn_close(c, MCQ_CLOSE_FLUSH);
    test_event_signal(&st.done_ev);
}

Test(conn_sendv, flush_close_sends_the_whole_queue, .init = setup, .timeout = 60)
{
    struct mcq_runtime *rt = start_runtime(1);
    struct mcq_conn_cfg cfg = {.handler = &handler, .sndq_max_bytes = LINGER_VIEWS * BIG_BYTES};
    struct mcq_listener *l;
    struct mcq_sockaddr addr = listen_loopback(rt, &cfg, &l);
    int fd = client_connect(&addr);
    cr_assert(test_event_wait(&st.open_ev, 1, WAIT_S));
    run(rt, task_queue_and_close);
    cr_assert_eq(st.rc, 0);
    /* The bytes keep going out until the queue is empty; on_close comes after them, so an
     * owner waiting for it (a closing socket, then runtime stop) cannot cut the flush. 8 MiB
     * unread is more than the kernel buffers take, so part of it is still queued here. */
    cr_assert_not(test_event_wait(&st.close_ev, 1, EARLY_CLOSE_S), "on_close before the flush");
    for (unsigned i = 0; i < LINGER_VIEWS; i++)
        read_pattern(fd, BIG_BYTES);
    char b;
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    cr_assert_eq(poll(&pfd, 1, IO_TIMEOUT_MS), 1);
    cr_assert_eq(read(fd, &b, 1), 0, "expected EOF after the queue");
    cr_assert(test_event_wait(&st.close_ev, 1, WAIT_S));
    close(fd);
    mcq_listener_close(l);
    mcq_runtime_destroy(rt);
}
