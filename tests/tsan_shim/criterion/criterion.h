/* A stand-in for the few Criterion macros our cross-thread tests use, for the TSan
 * build only: Criterion itself cannot start under ThreadSanitizer (its inheritable
 * arena mmap collides with TSan's shadow, Snaipe/Criterion#274). Tests run in-process,
 * one after another; the first failed assertion prints and exits 1. Only test files
 * that contain the marker MCQ_TSAN_TEST are built this way. */
#ifndef MCQ_TESTS_TSAN_SHIM_CRITERION_H
#define MCQ_TESTS_TSAN_SHIM_CRITERION_H

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct shim_test {
    const char *suite, *name;
    void (*fn)(void);
    void (*init)(void);
    void (*fini)(void);
    struct shim_test *next;
};
struct shim_test_opts {
    void (*init)(void);
    void (*fini)(void);
    double timeout;
    int disabled;
};
extern struct shim_test *shim_tests;
extern const char *shim_skip_reason;

#define Test(suite_, name_, ...)                                                                   \
    static void suite_##_##name_(void);                                                            \
    __attribute__((constructor)) static void shim_reg_##suite_##_##name_(void)                     \
    {                                                                                              \
        static struct shim_test t;                                                                 \
        struct shim_test_opts o = {__VA_ARGS__};                                                   \
        if (o.disabled)                                                                            \
            return;                                                                                \
        t.suite = #suite_;                                                                         \
        t.name = #name_;                                                                           \
        t.fn = suite_##_##name_;                                                                   \
        t.init = o.init;                                                                           \
        t.fini = o.fini;                                                                           \
        t.next = shim_tests;                                                                       \
        shim_tests = &t;                                                                           \
    }                                                                                              \
    static void suite_##_##name_(void)

#define shim_fail(...)                                                                             \
    do {                                                                                           \
        fprintf(stderr, "%s:%d: assertion failed: ", __FILE__, __LINE__);                          \
        fprintf(stderr, "" __VA_ARGS__);                                                           \
        fprintf(stderr, "\n");                                                                     \
        exit(1);                                                                                   \
    } while (0)
#define cr_assert(cond, ...)                                                                       \
    do {                                                                                           \
        if (!(cond))                                                                               \
            shim_fail(#cond " " __VA_ARGS__);                                                      \
    } while (0)
#define cr_expect cr_assert
#define cr_assert_not(cond, ...) cr_assert(!(cond), __VA_ARGS__)
#define cr_assert_eq(a, b, ...) cr_assert((a) == (b), __VA_ARGS__)
#define cr_assert_neq(a, b, ...) cr_assert((a) != (b), __VA_ARGS__)
#define cr_assert_lt(a, b, ...) cr_assert((a) < (b), __VA_ARGS__)
#define cr_assert_leq(a, b, ...) cr_assert((a) <= (b), __VA_ARGS__)
#define cr_assert_gt(a, b, ...) cr_assert((a) > (b), __VA_ARGS__)
#define cr_assert_geq(a, b, ...) cr_assert((a) >= (b), __VA_ARGS__)
#define cr_assert_null(p, ...) cr_assert((p) == NULL, __VA_ARGS__)
#define cr_assert_not_null(p, ...) cr_assert((p) != NULL, __VA_ARGS__)
#define cr_expect_eq cr_assert_eq
#define cr_assert_fail(...) shim_fail(__VA_ARGS__)
#define cr_log_info(...) (fprintf(stderr, __VA_ARGS__), fputc('\n', stderr))
#define cr_log_warn cr_log_info
#define cr_skip_test(...)                                                                          \
    do {                                                                                           \
        shim_skip_reason = "skipped";                                                              \
        return;                                                                                    \
    } while (0)

#ifndef MCQ_TSAN_SHIM_NO_MAIN
struct shim_test *shim_tests;
const char *shim_skip_reason;
int main(void)
{
    int n = 0;
    for (struct shim_test *t = shim_tests; t; t = t->next, n++) {
        fprintf(stderr, "[tsan] %s::%s\n", t->suite, t->name);
        shim_skip_reason = NULL;
        if (t->init)
            t->init();
        t->fn();
        if (t->fini)
            t->fini();
        if (shim_skip_reason)
            fprintf(stderr, "[tsan] %s::%s skipped\n", t->suite, t->name);
    }
    fprintf(stderr, "[tsan] %d tests passed\n", n);
    return 0;
}
#endif

#endif
