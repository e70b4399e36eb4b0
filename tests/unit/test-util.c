/* test-util.c - the shared helpers in daemon/util. */
#include "log.h"
#include "macro.h"
#include "paths.h"
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

TEST(socket_path_precedence)
{
    char *p;

    setenv("COARCH_SOCKET", "/tmp/x.sock", 1);
    ASSERT_OK(coarch_socket_path(&p));
    ASSERT_STREQ(p, "/tmp/x.sock");
    free(p);
    unsetenv("COARCH_SOCKET");
    setenv("XDG_RUNTIME_DIR", "/run/user/1234/", 1);
    ASSERT_OK(coarch_socket_path(&p));
    ASSERT_STREQ(p, "/run/user/1234/coarch/coarchd.sock");
    free(p);
    char longp[200];
    memset(longp, 'a', sizeof(longp) - 1);
    longp[0] = '/';
    longp[sizeof(longp) - 1] = '\0';
    setenv("COARCH_SOCKET", longp, 1);
    ASSERT_EQ(coarch_socket_path(&p), -ENAMETOOLONG);
    unsetenv("COARCH_SOCKET");
}

TEST(data_dir_precedence)
{
    char *p;

    setenv("COARCH_DATA_DIR", "/d", 1);
    ASSERT_OK(coarch_data_dir(&p));
    ASSERT_STREQ(p, "/d");
    free(p);
    unsetenv("COARCH_DATA_DIR");
    setenv("XDG_DATA_HOME", "/x", 1);
    ASSERT_OK(coarch_models_dir(&p));
    ASSERT_STREQ(p, "/x/coarch/models");
    free(p);
    unsetenv("XDG_DATA_HOME");
    setenv("HOME", "/h", 1);
    ASSERT_OK(coarch_data_dir(&p));
    ASSERT_STREQ(p, "/h/.local/share/coarch");
    free(p);
}

int main(int argc, char **argv)
{
    return test_run_all(argc, argv);
}
