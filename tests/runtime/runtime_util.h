/* Test helper: the runtime a test starts, in one place for every layer's tests. */
#ifndef MCQ_TESTS_RUNTIME_UTIL_H
#define MCQ_TESTS_RUNTIME_UTIL_H

#include <criterion/criterion.h>

#include <string.h>

#include "runtime/runtime.h"

/* A new runtime of `shards` unpinned shards; fails the test if it cannot start. The caller
 * destroys it. */
static inline struct mcq_runtime *start_runtime(unsigned shards)
{
    struct mcq_config cfg = mcq_config_default();
    cfg.shards = shards;
    cfg.pin = false; /* more shards than the 2 cores here: let the scheduler place them */
    struct mcq_runtime *rt = NULL;
    int rc = mcq_runtime_create(&cfg, &rt);
    cr_assert_eq(rc, 0, "runtime: %s", strerror(-rc));
    return rt;
}

#endif
