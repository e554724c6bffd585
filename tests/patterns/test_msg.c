/* Messages on a real shard: frames, copies, views, dup, unpin, and no leak (arena counters
 * back to where they started). Checks run on the shard and are asserted on the test thread. */
#include <criterion/criterion.h>

#include <stdio.h>
#include <string.h>

#include "alloc/arena.h"
#include "patterns/msg_int.h"
#include "runtime/runtime.h"
#include "runtime/runtime_util.h"
#include "runtime/wait_util.h"

#define TIMEOUT_S 10.0
#define MANY_FRAMES 1000u
#define LARGE_BYTES (5u << 20) /* above the largest recycled page class */

struct shard_check {
    void (*body)(struct shard_check *k, struct mcq_shard *sh);
    int failures;
    char first[256];
    struct test_event done;
};

#define CHECK(k, cond)                                                                             \
    do {                                                                                           \
        if (!(cond) && (k)->failures++ == 0)                                                       \
            snprintf((k)->first, sizeof((k)->first), "%s:%d: %s", __FILE__, __LINE__, #cond);      \
    } while (0)

static void run_task(struct mcq_shard *sh, void *arg)
{
    struct shard_check *k = arg;
    struct mcq_arena_stats before, after;
    /* The shard's patterns state (message slab, empty page) is made by the first message
     * and stays: count from after that. */
    mcq_msg_free(mcq_msg_new(sh));
    mcq_arena_stats(mcq_shard_arena(sh), &before);
    k->body(k, sh);
    mcq_arena_stats(mcq_shard_arena(sh), &after);
    CHECK(k, after.pages_in_use == before.pages_in_use);
    CHECK(k, after.objects_in_use == before.objects_in_use);
    CHECK(k, after.bytes_in_use == before.bytes_in_use);
    test_event_signal(&k->done);
}

static void run_on_shard(void (*body)(struct shard_check *k, struct mcq_shard *sh))
{
    struct mcq_runtime *rt = start_runtime(1);
    struct shard_check k = {.body = body};
    test_event_init(&k.done);
    cr_assert_eq(mcq_runtime_post(rt, 0, run_task, &k), 0);
    bool ok = test_event_wait(&k.done, 1, TIMEOUT_S);
    mcq_runtime_destroy(rt);
    cr_assert(ok, "shard task did not finish");
    cr_assert_eq(k.failures, 0, "%d failed checks, first: %s", k.failures, k.first);
}

static bool frame_is(const struct mcq_msg *m, unsigned i, const void *data, size_t len)
{
    const struct mcq_view *v = mcq_msg_frame(m, i);
    return v && mcq_view_len(v) == len && (len == 0 || memcmp(mcq_view_data(v), data, len) == 0);
}

static void body_basic(struct shard_check *k, struct mcq_shard *sh)
{
    struct mcq_msg *m = mcq_msg_new(sh);
    CHECK(k, m != NULL);
    CHECK(k, mcq_msg_count(m) == 0 && mcq_msg_size(m) == 0);
    CHECK(k, mcq_msg_frame(m, 0) == NULL);
    CHECK(k, mcq_msg_pop_front(m, NULL) == -ENOENT);
    CHECK(k, mcq_msg_append(m, "hello", 5) == 0);
    CHECK(k, mcq_msg_append(m, NULL, 0) == 0);
    CHECK(k, mcq_msg_append(m, "world", 5) == 0);
    CHECK(k, mcq_msg_prepend(m, "id", 2) == 0);
    CHECK(k, mcq_msg_count(m) == 4 && mcq_msg_size(m) == 12);
    CHECK(k, frame_is(m, 0, "id", 2) && frame_is(m, 1, "hello", 5));
    CHECK(k, frame_is(m, 2, "", 0) && frame_is(m, 3, "world", 5));
    /* An empty frame still has a readable data pointer. */
    CHECK(k, mcq_view_data(mcq_msg_frame(m, 2)) != NULL);
    struct mcq_view v;
    CHECK(k, mcq_msg_pop_front(m, &v) == 0);
    CHECK(k, mcq_view_len(&v) == 2 && memcmp(mcq_view_data(&v), "id", 2) == 0);
    CHECK(k, mcq_msg_count(m) == 3 && mcq_msg_size(m) == 10);
    /* Zero-copy append hands the reference over and empties the caller's view. */
    CHECK(k, mcq_msg_append_view(m, &v) == 0);
    CHECK(k, v.ref == NULL);
    CHECK(k, frame_is(m, 3, "id", 2));
    struct mcq_msg *d = mcq_msg_dup(m);
    CHECK(k, d != NULL && mcq_msg_count(d) == 4 && mcq_msg_size(d) == 12);
    CHECK(k, mcq_msg_frame(d, 0)->ref == mcq_msg_frame(m, 0)->ref); /* shared, not copied */
    mcq_msg_free(m);
    CHECK(k, frame_is(d, 0, "hello", 5) && frame_is(d, 3, "id", 2));
    mcq_msg_free(d);
    mcq_msg_free(NULL);
}

Test(msg, append_prepend_pop_dup_free)
{
    run_on_shard(body_basic);
}

static void body_many(struct shard_check *k, struct mcq_shard *sh)
{
    struct mcq_msg *m = mcq_msg_new(sh);
    uint64_t total = 0;
    for (unsigned i = 0; i < MANY_FRAMES; i++) {
        uint32_t x = i * 2654435761u;
        if (i % 2)
            CHECK(k, mcq_msg_append(m, &x, sizeof(x)) == 0);
        else
            CHECK(k, mcq_msg_prepend(m, &x, sizeof(x)) == 0);
        total += sizeof(x);
    }
    CHECK(k, mcq_msg_count(m) == MANY_FRAMES && mcq_msg_size(m) == total);
    /* Front: prepended evens, newest first; then appended odds, oldest first. */
    for (unsigned j = 0; j < MANY_FRAMES; j++) {
        unsigned i = j < MANY_FRAMES / 2 ? MANY_FRAMES - 2 - 2 * j : 2 * (j - MANY_FRAMES / 2) + 1;
        uint32_t x = i * 2654435761u;
        CHECK(k, frame_is(m, j, &x, sizeof(x)));
    }
    struct mcq_msg *d = mcq_msg_dup(m);
    for (unsigned j = 0; j < MANY_FRAMES / 2; j++)
        CHECK(k, mcq_msg_pop_front(m, NULL) == 0);
    CHECK(k, mcq_msg_count(m) == MANY_FRAMES / 2);
    CHECK(k, mcq_msg_count(d) == MANY_FRAMES);
    mcq_msg_free(m);
    mcq_msg_free(d);
}

Test(msg, many_frames)
{
    run_on_shard(body_many);
}

static void body_sizes(struct shard_check *k, struct mcq_shard *sh)
{
    static uint8_t buf[LARGE_BYTES];
    for (size_t i = 0; i < sizeof(buf); i++)
        buf[i] = (uint8_t)(i * 31 + 7);
    static const size_t sizes[] = {0,    1,     255,   256,   257,   1024,     4095,
                                   4096, 16384, 65535, 65536, 65537, 1u << 20, LARGE_BYTES};
    struct mcq_msg *m = mcq_msg_new(sh);
    size_t total = 0;
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        CHECK(k, mcq_msg_append(m, buf, sizes[i]) == 0);
        total += sizes[i];
    }
    CHECK(k, mcq_msg_size(m) == total);
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
        CHECK(k, frame_is(m, (unsigned)i, buf, sizes[i]));
    CHECK(k, mcq_msg_append(m, buf, (size_t)MCQ_PAGE_MAX + 1) == -EMSGSIZE);
    CHECK(k, mcq_msg_count(m) == sizeof(sizes) / sizeof(sizes[0]));
    mcq_msg_free(m);
}

Test(msg, sizes_zero_to_large)
{
    run_on_shard(body_sizes);
}

static void body_unpin(struct shard_check *k, struct mcq_shard *sh)
{
    /* A small slice of a big page (as a frame cut from a read buffer) gets its own page;
     * a frame covering most of its page stays as it is. */
    struct mcq_view big;
    CHECK(k, mcq_page_alloc(mcq_shard_arena(sh), MCQ_PAGE_SIZE, &big) == 0);
    memset(mcq_view_mut(&big), 'x', MCQ_PAGE_SIZE);
    struct mcq_view small, most, none;
    CHECK(k, mcq_view_slice(&big, 100, 10, &small) == 0);
    CHECK(k, mcq_view_slice(&big, 0, MCQ_PAGE_SIZE / 2, &most) == 0);
    CHECK(k, mcq_view_slice(&big, 5, 0, &none) == 0);
    struct mcq_msg *m = mcq_msg_new(sh);
    CHECK(k, mcq_msg_append_view(m, &small) == 0);
    CHECK(k, mcq_msg_append_view(m, &most) == 0);
    CHECK(k, mcq_msg_append_view(m, &none) == 0);
    CHECK(k, mcq_msg_unpin(m) == 0);
    CHECK(k, mcq_msg_frame(m, 0)->ref != big.ref);
    CHECK(k, mcq_msg_frame(m, 1)->ref == big.ref);
    CHECK(k, mcq_msg_frame(m, 2)->ref != big.ref);
    CHECK(k, mcq_view_len(mcq_msg_frame(m, 0)) == 10 && mcq_msg_size(m) == 10 + MCQ_PAGE_SIZE / 2);
    CHECK(k, memcmp(mcq_view_data(mcq_msg_frame(m, 0)), "xxxxxxxxxx", 10) == 0);
    mcq_view_unref(&big);
    mcq_msg_free(m);
}

Test(msg, unpin_copies_small_frames_out)
{
    run_on_shard(body_unpin);
}
