/*
 * replay-proto.c - runs every file of tests/fuzz/corpus/proto through the fuzz body, so the
 * corpus (seeds and past crash reproducers) is a regression test with any compiler.
 *
 *     test-proto-corpus [FILTER]       the corpus, as the `proto-corpus` meson test
 *     test-proto-corpus FILE...        just these files (a fresh crash-* from libFuzzer)
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz-proto.h"
#include "test.h"

/* Reads a whole file; NULL on error (errno set). */
static uint8_t *read_file(const char *path, size_t *ret_size)
{
    FILE *f = fopen(path, "rbe");
    uint8_t *buf = NULL;
    long n;

    if (!f)
        return NULL;
    if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0) {
        buf = malloc((size_t)n + 1);
        if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
            free(buf);
            buf = NULL;
            errno = EIO;
        }
        *ret_size = (size_t)n;
    }
    fclose(f);
    return buf;
}

static const char *corpus_dir(char *buf, size_t size)
{
    const char *src = getenv("COARCH_TEST_SOURCE_DIR");

    if (src)
        snprintf(buf, size, "%s/tests/fuzz/corpus/proto", src);
    else
        snprintf(buf, size, "fuzz/corpus/proto"); /* meson runs tests in tests/ */
    return buf;
}

/* Replays each corpus file whole and, when `prefixes`, every prefix of it (truncations). */
static unsigned replay_corpus(bool prefixes)
{
    char dir[4096], path[8192];
    struct dirent *de;
    unsigned n = 0;
    DIR *dp;

    dp = opendir(corpus_dir(dir, sizeof(dir)));
    if (!dp)
        test_fail(__FILE__, __LINE__, "cannot open %s: %s", dir, strerror(errno));
    while ((de = readdir(dp))) {
        struct stat st;
        uint8_t *data;
        size_t size = 0;

        snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
        if (de->d_name[0] == '.' || stat(path, &st) < 0 || !S_ISREG(st.st_mode))
            continue;
        data = read_file(path, &size);
        if (!data)
            test_fail(__FILE__, __LINE__, "cannot read %s: %s", path, strerror(errno));
        if (!prefixes)
            fuzz_proto_one(data, size);
        else
            for (size_t len = 0; len < size && size <= 4096; len++)
                fuzz_proto_one(data, len);
        free(data);
        n++;
    }
    closedir(dp);
    return n;
}

TEST(corpus)
{
    unsigned n = replay_corpus(false);

    printf("# replayed %u corpus files\n", n);
    ASSERT_GE(n, 20);
}

TEST(corpus_prefixes)
{
    ASSERT_GE(replay_corpus(true), 20);
}

int main(int argc, char **argv)
{
    struct stat st;

    if (argc > 1 && stat(argv[1], &st) == 0) {
        for (int i = 1; i < argc; i++) {
            size_t size = 0;
            uint8_t *data = read_file(argv[i], &size);

            if (!data) {
                fprintf(stderr, "%s: %s\n", argv[i], strerror(errno));
                return 1;
            }
            fuzz_proto_one(data, size);
            free(data);
            printf("ok %s\n", argv[i]);
        }
        return 0;
    }
    return test_run_all(argc, argv);
}
