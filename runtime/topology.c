#include "runtime/topology.h"

#include <errno.h>
#include <hwloc.h>
#include <stdlib.h>

#include "runtime/log.h"

struct mcq_topology {
    hwloc_topology_t topo;
    unsigned ncores;
    hwloc_bitmap_t *core_pu; /* one singlified PU set per allowed core */
};

int mcq_topology_load(struct mcq_topology **out)
{
    struct mcq_topology *t = calloc(1, sizeof(*t));
    if (!t)
        return -ENOMEM;
    if (hwloc_topology_init(&t->topo) < 0) {
        free(t);
        return -ENOMEM;
    }
    if (hwloc_topology_load(t->topo) < 0) {
        hwloc_topology_destroy(t->topo);
        free(t);
        return -EIO;
    }
    /* hwloc hides PUs the cgroup disallows; intersecting with the calling thread's binding
     * also honours taskset (which every thread inherits) or a caller that narrowed itself.
     * The process-wide binding would be the union over all threads, too wide. */
    hwloc_bitmap_t allowed = hwloc_bitmap_dup(hwloc_topology_get_allowed_cpuset(t->topo));
    hwloc_bitmap_t bound = hwloc_bitmap_alloc();
    if (hwloc_get_cpubind(t->topo, bound, HWLOC_CPUBIND_THREAD) == 0)
        hwloc_bitmap_and(allowed, allowed, bound);
    hwloc_bitmap_free(bound);

    int n = hwloc_get_nbobjs_by_type(t->topo, HWLOC_OBJ_CORE);
    hwloc_obj_type_t type = HWLOC_OBJ_CORE;
    if (n <= 0) {
        type = HWLOC_OBJ_PU;
        n = hwloc_get_nbobjs_by_type(t->topo, type);
    }
    t->core_pu = calloc((size_t)(n > 0 ? n : 1), sizeof(*t->core_pu));
    if (!t->core_pu) {
        hwloc_bitmap_free(allowed);
        mcq_topology_free(t);
        return -ENOMEM;
    }
    for (int i = 0; i < n; i++) {
        hwloc_obj_t obj = hwloc_get_obj_by_type(t->topo, type, (unsigned)i);
        hwloc_bitmap_t set = hwloc_bitmap_dup(obj->cpuset);
        hwloc_bitmap_and(set, set, allowed);
        if (hwloc_bitmap_iszero(set)) {
            hwloc_bitmap_free(set);
            continue;
        }
        hwloc_bitmap_singlify(set);
        t->core_pu[t->ncores++] = set;
    }
    if (t->ncores == 0) {
        /* No core intersects the allowed set (odd container setups): use it whole. */
        t->core_pu[t->ncores++] = hwloc_bitmap_dup(allowed);
    }
    hwloc_bitmap_free(allowed);
    *out = t;
    return 0;
}

void mcq_topology_free(struct mcq_topology *t)
{
    if (!t)
        return;
    for (unsigned i = 0; i < t->ncores; i++)
        hwloc_bitmap_free(t->core_pu[i]);
    free(t->core_pu);
    hwloc_topology_destroy(t->topo);
    free(t);
}

unsigned mcq_topology_cores(const struct mcq_topology *t)
{
    return t->ncores;
}

int mcq_topology_pin_thread(struct mcq_topology *t, unsigned slot)
{
    hwloc_bitmap_t set = t->core_pu[slot % t->ncores];
    if (hwloc_set_cpubind(t->topo, set, HWLOC_CPUBIND_THREAD) < 0)
        return -errno;
    hwloc_nodeset_t nodes = hwloc_bitmap_alloc();
    hwloc_cpuset_to_nodeset(t->topo, set, nodes);
    if (hwloc_set_membind(t->topo, nodes, HWLOC_MEMBIND_BIND,
                          HWLOC_MEMBIND_THREAD | HWLOC_MEMBIND_BYNODESET) < 0)
        mcq_log_debug("memory bind for core slot %u refused (errno %d); first touch applies", slot,
                      errno);
    hwloc_bitmap_free(nodes);
    return 0;
}
