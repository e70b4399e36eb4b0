/* test-util.c - the shared helpers in daemon/util. */
#include "log.h"
#include "macro.h"
#include "paths.h"
#include "sha256.h"
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

static void hex(const uint8_t *d, char *out)
{
    for (int i = 0; i < SHA256_DIGEST_SIZE; i++)
        sprintf(out + 2 * i, "%02x", d[i]);
}

TEST(sha256_vectors)
{
    uint8_t d[SHA256_DIGEST_SIZE];
    char h[65];
    struct sha256 s;

    sha256("", 0, d);
    hex(d, h);
    ASSERT_STREQ(h, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    sha256("abc", 3, d);
    hex(d, h);
    ASSERT_STREQ(h, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    const char *m = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    sha256(m, strlen(m), d);
    hex(d, h);
    ASSERT_STREQ(h, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    /* a million 'a', fed in uneven pieces */
    char block[1000];
    memset(block, 'a', sizeof(block));
    sha256_init(&s);
    for (size_t done = 0, step = 1; done < 1000000; step = step % 997 + 1) {
        size_t n = MIN(step, 1000000 - done);
        sha256_update(&s, block, n);
        done += n;
    }
    sha256_final(&s, d);
    hex(d, h);
    ASSERT_STREQ(h, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

int main(int argc, char **argv)
{
    return test_run_all(argc, argv);
}
