#include "affinity.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>

static cpu_set_t allowed;
static unsigned allowed_count;

__attribute__((constructor)) static void affinity_capture(void)
{
    if (sched_getaffinity(0, sizeof(allowed), &allowed) != 0) {
        CPU_ZERO(&allowed);
        CPU_SET(0, &allowed);
    }
    allowed_count = (unsigned)CPU_COUNT(&allowed);
}

unsigned bench_cpu_count(void)
{
    return allowed_count;
}

int bench_pin_thread(unsigned nth)
{
    nth %= allowed_count;
    for (int cpu = 0; cpu < CPU_SETSIZE; cpu++) {
        if (!CPU_ISSET(cpu, &allowed) || nth-- > 0)
            continue;
        cpu_set_t one;
        CPU_ZERO(&one);
        CPU_SET(cpu, &one);
        int rc = pthread_setaffinity_np(pthread_self(), sizeof(one), &one);
        return rc ? -rc : cpu;
    }
    return -EINVAL;
}
