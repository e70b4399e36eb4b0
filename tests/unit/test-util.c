/* test-util.c - the shared helpers in daemon/util. */
#include "log.h"
#include "macro.h"
#include "test.h"

TEST(array_alloc_overflow)
{
    ASSERT_TRUE(array_alloc(SIZE_MAX / 2, 4) == NULL);
    ASSERT_EQ(errno, ENOMEM);
    void *p = array_alloc(16, 4);
    ASSERT_TRUE(p != NULL);
    free(p);
}

TEST(array_grow_doubles)
{
    int *v = NULL;
    size_t cap = 0;

    ASSERT_OK(array_grow((void **)&v, &cap, 1, sizeof(*v)));
    ASSERT_EQ(cap, 8);
    ASSERT_OK(array_grow((void **)&v, &cap, 9, sizeof(*v)));
    ASSERT_EQ(cap, 16);
    ASSERT_EQ(array_grow((void **)&v, &cap, SIZE_MAX, sizeof(*v)), -ENOMEM);
    ASSERT_EQ(cap, 16);
    free(v);
}

TEST(take_ptr)
{
    _cleanup_free_ char *a = strdup("x");
    char *b = TAKE_PTR(a);
    ASSERT_TRUE(a == NULL);
    ASSERT_STREQ(b, "x");
    free(b);
}

TEST(log_levels)
{
    enum log_level l;

    ASSERT_OK(log_level_from_string("debug", &l));
    ASSERT_EQ(l, LOG_LEVEL_DEBUG);
    ASSERT_OK(log_level_from_string("WARN", &l));
    ASSERT_EQ(l, LOG_LEVEL_WARNING);
    ASSERT_OK(log_level_from_string("3", &l));
    ASSERT_EQ(l, LOG_LEVEL_ERR);
    ASSERT_EQ(log_level_from_string("loud", &l), -EINVAL);
    ASSERT_EQ(log_error_errno(-EIO, "test message %d", 1), -EIO);
    ASSERT_EQ(log_error_errno(EIO, "positive errno is normalised"), -EIO);
}

int main(int argc, char **argv)
{
    return test_run_all(argc, argv);
}
