/* test.c - runner for test.h. */
#include "test.h"

#include <stdarg.h>

struct test_case *test_list_head;
static struct test_case **test_list_tail = &test_list_head;
jmp_buf test_jmp;
int test_skipped;

void test_register(struct test_case *tc)
{
    *test_list_tail = tc;
    test_list_tail = &tc->next;
}

void test_fail(const char *file, int line, const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "  FAIL %s:%d: ", file, line);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    longjmp(test_jmp, 1);
}

void test_skip(const char *why)
{
    fprintf(stderr, "  SKIP: %s\n", why);
    test_skipped = 1;
    longjmp(test_jmp, 2);
}

int test_run_all(int argc, char **argv)
{
    const char *filter = argc > 1 ? argv[1] : NULL;
    volatile int ran = 0, failed = 0, skipped = 0;

    setvbuf(stdout, NULL, _IOLBF, 0);
    for (struct test_case *volatile tc = test_list_head; tc; tc = tc->next) {
        if (filter && !strstr(tc->name, filter))
            continue;
        printf("# %s\n", tc->name);
        ran++;
        switch (setjmp(test_jmp)) {
        case 0:
            tc->fn();
            printf("ok %s\n", tc->name);
            break;
        case 1:
            printf("not ok %s\n", tc->name);
            failed++;
            break;
        default:
            printf("ok %s # SKIP\n", tc->name);
            skipped++;
            break;
        }
    }
    printf("# %d run, %d failed, %d skipped\n", ran, failed, skipped);
    if (failed)
        return 1;
    if (ran > 0 && skipped == ran)
        return TEST_EXIT_SKIP;
    return 0;
}
