#include "patterns/proto_shard.h"

#include <string.h>

#include "alloc/arena.h"
#include "patterns/msg_int.h"
#include "runtime/log.h"

#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

/* Bytes of the page every empty frame points into (views of a real page are never NULL). */
#define EMPTY_PAGE_BYTES 1

static void proto_shard_destroy(struct mcq_proto_shard *ps)
{
    mcq_shard_remove_stop_hook(ps->sh, &ps->stop);
    mcq_shard_remove_drain_hook(ps->sh, &ps->drain);
    mcq_view_unref(&ps->empty);
    mcq_view_unref(&ps->scratch);
    mcq_arena_free(ps->arena, ps->batch);
    mcq_slab_fini(&ps->msgs);
    if (ps->peers_ready)
        mcq_slab_fini(&ps->peers);
    mcq_shard_set_slot(ps->sh, MCQ_SLOT_PROTO, NULL);
    mcq_arena_free(ps->arena, ps);
}

void mcq_proto_shard_settle(struct mcq_proto_shard *ps)
{
    if (ps->stopping && ps->holds == 0 && !ps->live && mcq_slab_in_use(&ps->msgs) == 0 &&
        (!ps->peers_ready || mcq_slab_in_use(&ps->peers) == 0))
        proto_shard_destroy(ps);
}

/* First stage of a stop: sockets close gracefully, holding the shard until they are done. */
static void proto_shard_drain(struct mcq_shard *sh, struct mcq_stop_hook *h)
{
    (void)sh;
    struct mcq_proto_shard *ps = container_of(h, struct mcq_proto_shard, drain);
    if (ps->sockets_stop)
        ps->sockets_stop(ps);
}

static void proto_shard_stop(struct mcq_shard *sh, struct mcq_stop_hook *h)
{
    (void)sh;
    struct mcq_proto_shard *ps = container_of(h, struct mcq_proto_shard, stop);
    ps->stopping = true;
    ps->holds++;
    if (ps->peers_stop)
        ps->peers_stop(ps);
    ps->holds--;
    mcq_proto_shard_settle(ps);
}

struct mcq_proto_shard *mcq_proto_shard_get(struct mcq_shard *sh)
{
    struct mcq_proto_shard *ps = mcq_shard_slot(sh, MCQ_SLOT_PROTO);
    if (ps)
        return ps;
    if (mcq_shard_stopping(sh))
        return NULL;
    struct mcq_arena *a = mcq_shard_arena(sh);
    ps = mcq_arena_alloc(a, sizeof(*ps), 0);
    if (!ps)
        return NULL;
    memset(ps, 0, sizeof(*ps));
    ps->sh = sh;
    ps->arena = a;
    ps->stop.run = proto_shard_stop;
    ps->drain.run = proto_shard_drain;
    if (mcq_slab_init(&ps->msgs, a, sizeof(struct mcq_msg)) < 0 ||
        mcq_page_alloc(a, EMPTY_PAGE_BYTES, &ps->empty) < 0) {
        mcq_arena_free(a, ps);
        return NULL;
    }
    mcq_shard_set_slot(sh, MCQ_SLOT_PROTO, ps);
    mcq_shard_add_stop_hook(sh, &ps->stop);
    mcq_shard_add_drain_hook(sh, &ps->drain);
    return ps;
}

void mcq_proto_shard_hold(struct mcq_proto_shard *ps)
{
    ps->holds++;
}

void mcq_proto_shard_release(struct mcq_proto_shard *ps)
{
    ps->holds--;
    mcq_proto_shard_settle(ps);
}
