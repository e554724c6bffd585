/* Test helper: HAVE_ASAN is defined (and ASan's poisoning queries declared) exactly when the
 * test is built with AddressSanitizer, under gcc or clang, so poisoning tests can run or skip. */
#ifndef MCQ_TESTS_ASAN_UTIL_H
#define MCQ_TESTS_ASAN_UTIL_H

#ifndef __has_feature
#define __has_feature(x) 0 /* gcc before 14 has no __has_feature */
#endif
#if defined(__SANITIZE_ADDRESS__) || __has_feature(address_sanitizer)
#define HAVE_ASAN 1
#include <sanitizer/asan_interface.h>
#endif

#endif
