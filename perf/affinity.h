/* CPU pinning for benchmark threads. The allowed set is taken from the process at start-up,
 * before any bench pins a thread, so "the nth allowed CPU" means the same everywhere. */
#ifndef MCQ_PERF_AFFINITY_H
#define MCQ_PERF_AFFINITY_H

/* Number of CPUs the process may run on (at least 1). */
unsigned bench_cpu_count(void);

/* Pins the calling thread to the nth allowed CPU, modulo bench_cpu_count(), so with a
 * single allowed CPU every thread shares it. Returns the CPU number or a negative errno. */
int bench_pin_thread(unsigned nth);

#endif
