/* test-lexical.c - code-aware terms, BM25, top-k and rank fusion. */
#include "lexical.h"

#include "macro.h"
#include "test.h"

#include <math.h>
#include <pthread.h>

struct terms {
    char buf[4096];
    size_t len;
};

static int join(void *ud, const char *t, size_t len)
{
    struct terms *s = ud;

    if (s->len + len + 2 > sizeof(s->buf))
        return -ENOBUFS;
    if (s->len)
        s->buf[s->len++] = ' ';
    memcpy(s->buf + s->len, t, len);
    s->len += len;
    s->buf[s->len] = '\0';
    return 0;
}

static void expect_terms(const char *text, const char *want)
{
    struct terms s = {.len = 0};

    s.buf[0] = '\0';
    ASSERT_OK(lexical_terms(text, strlen(text), join, &s));
    ASSERT_STREQ(s.buf, want);
}

TEST(terms_split_identifiers)
{
    expect_terms("parseHTTPRequest", "parsehttprequest pars http request");
    expect_terms("max_frame_size", "max_frame_size max frame size");
    expect_terms("XMLHttpRequest2", "xmlhttprequest2 xml http request2");
    expect_terms("kebab-case-name", "kebab case name");
    expect_terms("__init__", "__init__ init");
    expect_terms("i = j + 1;", "");
    expect_terms("Return the number of entries in the files", "return number entri file");
    expect_terms("class status analysis", "class status analysi");
    expect_terms("Überprüfung größe", "Überprüfung größe");
}

/* Words meet on their stem; identifiers with '_' or digits keep their spelling, fold plurals. */
TEST(terms_stem_words)
{
    expect_terms("Parsing the arguments", "pars argument");
    expect_terms("parse_args", "parse_arg pars arg");
    expect_terms("Closes connections", "close connect");
    expect_terms("close_connection", "close_connection close connect");
    expect_terms("max_frames v2frames", "max_frame max frame v2frame");
    expect_terms("Called callable", "call callabl");
}

/* Each thread stems with its own stemmer; the main thread can release its one early. */
static void *terms_in_thread(void *arg)
{
    struct terms *s = arg;

    s->buf[0] = '\0';
    for (int i = 0; i < 200; i++) {
        s->len = 0;
        if (lexical_terms("Parsing configured connections", 30, join, s) < 0)
            return NULL;
    }
    return s;
}

TEST(terms_threads)
{
    pthread_t th[4];
    struct terms s[4];

    for (int i = 0; i < 4; i++)
        ASSERT_EQ(pthread_create(&th[i], NULL, terms_in_thread, &s[i]), 0);
    for (int i = 0; i < 4; i++) {
        void *ret;
        ASSERT_EQ(pthread_join(th[i], &ret), 0);
        ASSERT_TRUE(ret == &s[i]);
        ASSERT_STREQ(s[i].buf, "pars configur connect");
    }
    expect_terms("parsing", "pars");
    lexical_thread_release();
    expect_terms("parsing", "pars");
    lexical_thread_release();
}

TEST(terms_stop_early)
{
    ASSERT_EQ(lexical_terms("alpha beta gamma", 16, join, &(struct terms){.len = 4090}), -ENOBUFS);
}

TEST(count_terms)
{
    const char *t = "readFile(path); read_file(path); readFile again";
    struct lexical_tf *tfs;
    size_t n;
    uint32_t total;

    ASSERT_OK(lexical_count_terms(t, strlen(t), &tfs, &n, &total));
    /* readfile x2 (+read,file x2), read_file (+read,file), path x2, again */
    ASSERT_EQ(total, 2 * 3 + 3 + 2 + 1);
    for (size_t i = 1; i < n; i++)
        ASSERT_LT(strcmp(tfs[i - 1].term, tfs[i].term), 0);
    for (size_t i = 0; i < n; i++) {
        if (strcmp(tfs[i].term, "read") == 0 || strcmp(tfs[i].term, "file") == 0)
            ASSERT_EQ(tfs[i].tf, 3);
        if (strcmp(tfs[i].term, "readfile") == 0 || strcmp(tfs[i].term, "path") == 0)
            ASSERT_EQ(tfs[i].tf, 2);
    }
    lexical_tf_free(tfs, n);
    ASSERT_OK(lexical_count_terms("", 0, &tfs, &n, &total));
    ASSERT_EQ(n, 0);
    ASSERT_EQ(total, 0);
    lexical_tf_free(tfs, n);
}

TEST(bm25_values)
{
    struct bm25_params p = BM25_DEFAULTS;
    double idf = bm25_idf(1000, 10);

    ASSERT_NEAR(idf, log(1.0 + 990.5 / 10.5), 1e-12);
    ASSERT_GT(bm25_idf(1000, 1), bm25_idf(1000, 500)); /* rarer terms weigh more */
    ASSERT_GE(bm25_idf(10, 10), 0.0);
    /* tf saturates; shorter documents score higher for equal tf */
    ASSERT_GT(bm25_term_score(&p, idf, 2, 100, 100), bm25_term_score(&p, idf, 1, 100, 100));
    ASSERT_LT(bm25_term_score(&p, idf, 100, 100, 100), idf * (p.k1 + 1));
    ASSERT_GT(bm25_term_score(&p, idf, 1, 50, 100), bm25_term_score(&p, idf, 1, 200, 100));
}

TEST(topk_keeps_best)
{
    struct topk t;
    uint64_t seed = 42;

    ASSERT_OK(topk_init(&t, 10));
    for (uint64_t i = 0; i < 10000; i++) {
        seed = seed * 6364136223846793005ULL + 1;
        topk_push(&t, i, (double)(seed >> 40));
    }
    topk_push(&t, 77777, 1e30);
    ASSERT_EQ(topk_finish(&t), 10);
    ASSERT_EQ(t.items[0].id, 77777);
    for (size_t i = 1; i < 10; i++)
        ASSERT_TRUE(t.items[i - 1].score >= t.items[i].score);
    topk_release(&t);

    /* ties resolve to the smaller id */
    ASSERT_OK(topk_init(&t, 2));
    topk_push(&t, 5, 1.0);
    topk_push(&t, 3, 1.0);
    topk_push(&t, 9, 1.0);
    ASSERT_EQ(topk_finish(&t), 2);
    ASSERT_EQ(t.items[0].id, 3);
    ASSERT_EQ(t.items[1].id, 5);
    topk_release(&t);
}

TEST(rrf)
{
    struct ranked a[] = {{1, 0.9}, {2, 0.8}, {3, 0.7}};
    struct ranked b[] = {{3, 12}, {4, 11}, {1, 10}};
    const struct ranked *lists[] = {a, b};
    size_t lens[] = {3, 3};
    struct ranked *out;
    int n;

    n = rrf_fuse(lists, lens, NULL, 2, 60, 10, &out);
    ASSERT_EQ(n, 4);
    /* 1: 1/61 + 1/63, 3: 1/63 + 1/61 -> tie, smaller id first; then 2 (1/62), 4 (1/62) */
    ASSERT_EQ(out[0].id, 1);
    ASSERT_EQ(out[1].id, 3);
    ASSERT_EQ(out[2].id, 2);
    ASSERT_EQ(out[3].id, 4);
    ASSERT_NEAR(out[0].score, 1.0 / 61 + 1.0 / 63, 1e-12);
    free(out);

    double w[] = {2.0, 1.0};
    n = rrf_fuse(lists, lens, w, 2, 60, 1, &out);
    ASSERT_EQ(n, 1);
    ASSERT_EQ(out[0].id, 1);
    free(out);
}

/* z of x among the scores v[0..n): (x - mean) / population sd. */
static double zof(const double *v, size_t n, double x)
{
    double mean = 0, var = 0;

    for (size_t i = 0; i < n; i++)
        mean += v[i] / (double)n;
    for (size_t i = 0; i < n; i++)
        var += (v[i] - mean) * (v[i] - mean) / (double)n;
    return (x - mean) / sqrt(var);
}

TEST(zscore_fusion)
{
    struct ranked a[] = {{1, 0.9}, {2, 0.8}, {3, 0.3}};
    struct ranked b[] = {{3, 12}, {4, 11}, {1, 2}};
    const double av[] = {0.9, 0.8, 0.3}, bv[] = {12, 11, 2};
    const struct ranked *lists[] = {a, b};
    size_t lens[] = {3, 3};
    struct ranked *out;
    int n;

    /* Ranks alone tie 1 with 3 and 2 with 4 (see rrf); the margins do not: 1 leads a by
     * more than 3 leads b, 3 trails a by more than 1 trails b, and 4 is closer to the top of b
     * than 2 is to the top of a.  A missing id counts as its list's last entry. */
    n = zscore_fuse(lists, lens, NULL, 2, 10, &out);
    ASSERT_EQ(n, 4);
    ASSERT_EQ(out[0].id, 1);
    ASSERT_EQ(out[1].id, 3);
    ASSERT_EQ(out[2].id, 4);
    ASSERT_EQ(out[3].id, 2);
    ASSERT_NEAR(out[0].score, zof(av, 3, 0.9) + zof(bv, 3, 2), 1e-9);
    ASSERT_NEAR(out[2].score, zof(av, 3, 0.3) + zof(bv, 3, 11), 1e-9);
    free(out);

    /* Weights scale each list's z. */
    double w[] = {1.0, 3.0};
    n = zscore_fuse(lists, lens, w, 2, 2, &out);
    ASSERT_EQ(n, 2);
    ASSERT_EQ(out[0].id, 3);
    ASSERT_EQ(out[1].id, 4);
    ASSERT_NEAR(out[0].score, zof(av, 3, 0.3) + 3 * zof(bv, 3, 12), 1e-9);
    free(out);

    /* A list of equal scores (here one entry) says only who is in it; an empty one nothing. */
    struct ranked c[] = {{7, 5.0}};
    const struct ranked *lists2[] = {c, b};
    size_t lens2[] = {1, 0};
    n = zscore_fuse(lists2, lens2, NULL, 2, 10, &out);
    ASSERT_EQ(n, 1);
    ASSERT_EQ(out[0].id, 7);
    ASSERT_NEAR(out[0].score, 1.0, 1e-12);
    free(out);
    lens2[1] = 3;
    n = zscore_fuse(lists2, lens2, NULL, 2, 10, &out);
    ASSERT_EQ(n, 4);
    ASSERT_EQ(out[0].id, 3);
    ASSERT_NEAR(out[0].score, zof(bv, 3, 12), 1e-9);
    for (int i = 0; i < n; i++)
        if (out[i].id == 7)
            ASSERT_NEAR(out[i].score, 1.0 + zof(bv, 3, 2), 1e-9);
    free(out);
}

int main(int argc, char **argv)
{
    return test_run_all(argc, argv);
}
