/* Which CPUs the shards run on: the process's allowed cores (cgroups, taskset), one
 * processing unit per core so SMT siblings are not doubled up. Internal to runtime/. */
#ifndef MCQ_RUNTIME_TOPOLOGY_H
#define MCQ_RUNTIME_TOPOLOGY_H

struct mcq_topology;

/* Loads the topology. 0 or -errno. */
int mcq_topology_load(struct mcq_topology **out);
void mcq_topology_free(struct mcq_topology *t);

/* Number of allowed cores (at least 1). */
unsigned mcq_topology_cores(const struct mcq_topology *t);

/* Pins the calling thread to core (slot % cores) and binds its memory to that core's NUMA
 * node. 0 or -errno; a failed memory bind is not an error (first touch still applies). */
int mcq_topology_pin_thread(struct mcq_topology *t, unsigned slot);

#endif
