#ifndef OPENSHELL_TAP_H
#define OPENSHELL_TAP_H
/*
 * tap.h: the tiny in-tree TAP harness for unit tests (header-only).
 *
 * A test is a function returning TAP_PASS (0), TAP_FAIL (-1) or TAP_SKIP (77).
 * CHECK* macros print a diagnostic naming file, line and values, and fail the
 * test. TAP_MAIN lists the tests; the program prints "1..N" and one
 * "ok/not ok N - name" line per test and exits 0 only if none failed.
 *
 *   static int test_append(void) { ...; CHECK_STR(buf_cstr(&b), "ab"); return TAP_PASS; }
 *   TAP_MAIN(TAP_TEST(test_append), TAP_TEST(test_other))
 *
 * A test that needs something absent calls TAP_SKIP_BECAUSE("no user namespaces").
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TAP_PASS 0
#define TAP_FAIL (-1)
#define TAP_SKIP 77

struct tap_test {
    const char *name;
    int (*fn)(void);
};

static char tap_skip_reason[256];

static inline void __attribute__((format(printf, 1, 2))) tap_diag(const char *fmt, ...)
{
    va_list ap;

    fputs("# ", stdout);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    fputc('\n', stdout);
    fflush(stdout);
}

#define TAP_TEST(fn)                                                                               \
    {                                                                                              \
#fn, fn                                                                                    \
    }

#define TAP_SKIP_BECAUSE(...)                                                                      \
    do {                                                                                           \
        snprintf(tap_skip_reason, sizeof(tap_skip_reason), __VA_ARGS__);                           \
        return TAP_SKIP;                                                                           \
    } while (0)

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            tap_diag("%s:%d: CHECK(%s) failed", __FILE__, __LINE__, #cond);                        \
            return TAP_FAIL;                                                                       \
        }                                                                                          \
    } while (0)

#define CHECK_INT(got, want)                                                                       \
    do {                                                                                           \
        long long _g = (long long)(got), _w = (long long)(want);                                   \
        if (_g != _w) {                                                                            \
            tap_diag("%s:%d: %s == %lld, expected %lld", __FILE__, __LINE__, #got, _g, _w);        \
            return TAP_FAIL;                                                                       \
        }                                                                                          \
    } while (0)

#define CHECK_STR(got, want)                                                                       \
    do {                                                                                           \
        const char *_g = (got), *_w = (want);                                                      \
        if (!_g || strcmp(_g, _w) != 0) {                                                          \
            tap_diag("%s:%d: %s == \"%s\", expected \"%s\"", __FILE__, __LINE__, #got,             \
                     _g ? _g : "(null)", _w);                                                      \
            return TAP_FAIL;                                                                       \
        }                                                                                          \
    } while (0)

/* GOT contains the substring WANT. */
#define CHECK_CONTAINS(got, want)                                                                  \
    do {                                                                                           \
        const char *_g = (got), *_w = (want);                                                      \
        if (!_g || !strstr(_g, _w)) {                                                              \
            tap_diag("%s:%d: %s == \"%s\", expected it to contain \"%s\"", __FILE__, __LINE__,     \
                     #got, _g ? _g : "(null)", _w);                                                \
            return TAP_FAIL;                                                                       \
        }                                                                                          \
    } while (0)

static inline int
tap_run(const struct tap_test *tests, size_t n)
{
    int failed = 0;

    printf("1..%zu\n", n);
    fflush(stdout);
    for (size_t i = 0; i < n; i++) {
        int rc;

        tap_skip_reason[0] = '\0';
        rc = tests[i].fn();
        if (rc == TAP_PASS) {
            printf("ok %zu - %s\n", i + 1, tests[i].name);
        } else if (rc == TAP_SKIP) {
            printf("ok %zu - %s # SKIP %s\n", i + 1, tests[i].name,
                   tap_skip_reason[0] ? tap_skip_reason : "(no reason given)");
        } else {
            printf("not ok %zu - %s\n", i + 1, tests[i].name);
            failed++;
        }
        fflush(stdout);
    }
    return failed ? 1 : 0;
}

#define TAP_MAIN(...)                                                                              \
    int main(void)                                                                                 \
    {                                                                                              \
        static const struct tap_test tap_tests[] = { __VA_ARGS__ };                                \
        return tap_run(tap_tests, sizeof(tap_tests) / sizeof(tap_tests[0]));                       \
    }

#endif
