/*
 * test.h - the ~100-line harness every test program uses.
 *
 *   TEST(name) { ASSERT_EQ(1 + 1, 2); }
 *   int main(int argc, char **argv) { return test_run_all(argc, argv); }
 *
 * TEST() registers a function through a constructor; test_run_all() runs them in order (or only
 * those whose names contain argv[1]) and returns 0, 1 on any failure, or 77 (skip) when every
 * test that ran called TEST_SKIP().  ASSERT_* print both operands and the location and abort the
 * current test with a failure.  A test may return early; failures are counted per test.
 */
#ifndef COARCH_TEST_H
#define COARCH_TEST_H

#include <inttypes.h>
#include <setjmp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TEST_EXIT_SKIP 77

struct test_case {
    const char *name;
    void (*fn)(void);
    struct test_case *next;
};

extern struct test_case *test_list_head;
extern jmp_buf test_jmp;
extern int test_skipped;

void test_register(struct test_case *tc);
int test_run_all(int argc, char **argv);
void test_fail(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4), noreturn));
void test_skip(const char *why) __attribute__((noreturn));

#define TEST(name)                                                                                 \
    static void test_fn_##name(void);                                                              \
    static struct test_case test_case_##name = {#name, test_fn_##name, NULL};                      \
    __attribute__((constructor)) static void test_reg_##name(void)                                 \
    {                                                                                              \
        test_register(&test_case_##name);                                                          \
    }                                                                                              \
    static void test_fn_##name(void)

#define TEST_SKIP(why) test_skip(why)

#define ASSERT_TRUE(x)                                                                             \
    do {                                                                                           \
        if (!(x))                                                                                  \
            test_fail(__FILE__, __LINE__, "expected true: %s", #x);                                \
    } while (0)
#define ASSERT_FALSE(x) ASSERT_TRUE(!(x))

#define ASSERT_CMP_INT(a, op, b)                                                                   \
    do {                                                                                           \
        intmax_t _a = (intmax_t)(a), _b = (intmax_t)(b);                                           \
        if (!(_a op _b))                                                                           \
            test_fail(__FILE__, __LINE__, "%s %s %s: %jd vs %jd", #a, #op, #b, _a, _b);            \
    } while (0)
#define ASSERT_EQ(a, b) ASSERT_CMP_INT(a, ==, b)
#define ASSERT_NE(a, b) ASSERT_CMP_INT(a, !=, b)
#define ASSERT_LT(a, b) ASSERT_CMP_INT(a, <, b)
#define ASSERT_LE(a, b) ASSERT_CMP_INT(a, <=, b)
#define ASSERT_GT(a, b) ASSERT_CMP_INT(a, >, b)
#define ASSERT_GE(a, b) ASSERT_CMP_INT(a, >=, b)
/* For a negative-errno result: fails and prints strerror when r < 0. */
#define ASSERT_OK(r)                                                                               \
    do {                                                                                           \
        intmax_t _r = (intmax_t)(r);                                                               \
        if (_r < 0)                                                                                \
            test_fail(__FILE__, __LINE__, "%s failed: %jd (%s)", #r, _r, strerror((int)-_r));      \
    } while (0)

#define ASSERT_STREQ(a, b)                                                                         \
    do {                                                                                           \
        const char *_a = (a), *_b = (b);                                                           \
        if (!_a || !_b || strcmp(_a, _b) != 0)                                                     \
            test_fail(__FILE__, __LINE__, "%s == %s: \"%s\" vs \"%s\"", #a, #b,                    \
                      _a ? _a : "(null)", _b ? _b : "(null)");                                     \
    } while (0)

#define ASSERT_NEAR(a, b, tol)                                                                     \
    do {                                                                                           \
        double _a = (double)(a), _b = (double)(b);                                                 \
        if (!(_a - _b <= (tol) && _b - _a <= (tol)))                                               \
            test_fail(__FILE__, __LINE__, "%s ~= %s: %.9g vs %.9g (tol %g)", #a, #b, _a, _b,       \
                      (double)(tol));                                                              \
    } while (0)

#endif
