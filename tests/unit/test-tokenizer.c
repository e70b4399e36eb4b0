/*
 * test-tokenizer.c - the BERT tokenizer against HuggingFace `tokenizers`.
 *
 * Fixtures come from tests/data/gen-tokenizer-fixture.py (run with the reference installed):
 * minilm.jsonl (real source lines and blocks in several languages, adversarial strings, invalid
 * UTF-8), variants.jsonl (other normalizer settings), long.json (a 10 MB line) and unicode.txt
 * (every code point).  Every id must match.  The model's tokenizer files come from
 * $COARCH_TEST_MODEL_DIR or the installed all-MiniLM-L6-v2; without them the model tests skip,
 * or fail when $CI is set.
 */
#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "macro.h"
#include "paths.h"
#include "test.h"
#include "tokenizer-unicode.h"
#include "tokenizer.h"

#define NO_LIMIT 100000
#define LIMIT 256
#define MAX_REPORTED 8

/* The harness compares integers; durations are doubles. */
#define ASSERT_SECONDS_BELOW(dt, limit)                                                            \
    do {                                                                                           \
        double _dt = (dt);                                                                         \
        if (!(_dt < (limit)))                                                                      \
            test_fail(__FILE__, __LINE__, "took %.3f s, limit %.3f s", _dt, (double)(limit));      \
    } while (0)

/* ------------------------------------------------------------------------------------------ */
/* Helpers                                                                                    */

static double now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static char *fixture_path(const char *name)
{
    const char *src = getenv("COARCH_TEST_SOURCE_DIR");
    char *p = NULL;

    if (src && asprintf(&p, "%s/tests/data/tokenizer/%s", src, name) >= 0)
        return p;
    if (asprintf(&p, "data/tokenizer/%s", name) >= 0)
        return p;
    return NULL;
}

static bool model_missing;

/* The model directory; skips the test (fails it when CI is set) when the model is missing. */
static char *model_dir_or_skip(void)
{
    const char *env = getenv("COARCH_TEST_MODEL_DIR");
    char *dir = NULL, *models = NULL, *probe;
    bool ok;

    if (env && *env) {
        dir = strdup(env);
    } else if (coarch_models_dir(&models) >= 0) {
        dir = path_join(models, "all-MiniLM-L6-v2");
        free(models);
    }
    ASSERT_TRUE(dir != NULL);
    probe = path_join(dir, "tokenizer.json");
    ok = probe && access(probe, R_OK) == 0;
    free(probe);
    if (!ok) {
        fprintf(stderr, "  model not found in %s: run scripts/fetch-model\n", dir);
        free(dir);
        if (getenv("CI"))
            test_fail(__FILE__, __LINE__, "the model is required when CI is set");
        model_missing = true;
        TEST_SKIP("all-MiniLM-L6-v2 is not installed (run scripts/fetch-model)");
    }
    return dir;
}

static struct tokenizer *load_or_fail(const char *dir)
{
    struct tokenizer *t = NULL;
    char *err = NULL;
    int r = tokenizer_load(dir, &t, &err);

    if (r < 0)
        test_fail(__FILE__, __LINE__, "tokenizer_load(%s): %d: %s", dir, r, err ? err : "?");
    free(err);
    return t;
}

/* One fixture entry: the input bytes, expected ids and (maybe) spans. */
struct entry {
    char *bytes;
    size_t len;
    uint32_t *ids;
    size_t n;
    uint32_t (*spans)[2];
    size_t nspans;
    json_t *json; /* the parsed line, or NULL */
};

static void entry_release(struct entry *e)
{
    free(e->bytes);
    free(e->ids);
    free(e->spans);
    json_decref(e->json);
    memset(e, 0, sizeof(*e));
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* Parses one JSON line; returns 1 for an entry, 0 for a non-entry object (kept in e->json). */
static int entry_parse(const char *line, struct entry *e)
{
    json_error_t jerr;
    json_t *j = json_loads(line, JSON_ALLOW_NUL, &jerr), *text, *hex, *ids, *spans;

    memset(e, 0, sizeof(*e));
    if (!json_is_object(j))
        test_fail(__FILE__, __LINE__, "bad fixture line: %s", jerr.text);
    e->json = j;
    text = json_object_get(j, "text");
    hex = json_object_get(j, "hex");
    ids = json_object_get(j, "ids");
    if (!ids)
        return 0;
    if (text) {
        e->len = json_string_length(text);
        e->bytes = malloc(e->len + 1);
        memcpy(e->bytes, json_string_value(text), e->len);
    } else {
        const char *h = json_string_value(hex);
        e->len = strlen(h) / 2;
        e->bytes = malloc(e->len + 1);
        for (size_t i = 0; i < e->len; i++)
            e->bytes[i] = (char)(hexval(h[2 * i]) << 4 | hexval(h[2 * i + 1]));
    }
    e->n = json_array_size(ids);
    e->ids = malloc((e->n + 1) * sizeof(uint32_t));
    for (size_t i = 0; i < e->n; i++)
        e->ids[i] = (uint32_t)json_integer_value(json_array_get(ids, i));
    spans = json_object_get(j, "spans");
    if (spans) {
        e->nspans = json_array_size(spans);
        e->spans = malloc((e->nspans + 1) * sizeof(*e->spans));
        for (size_t i = 0; i < e->nspans; i++) {
            json_t *s = json_array_get(spans, i);
            e->spans[i][0] = (uint32_t)json_integer_value(json_array_get(s, 0));
            e->spans[i][1] = (uint32_t)json_integer_value(json_array_get(s, 1));
        }
    }
    return 1;
}

static void print_escaped(const char *s, size_t len, size_t max)
{
    fputc('"', stderr);
    for (size_t i = 0; i < len && i < max; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\n')
            fputs("\\n", stderr);
        else if (c == '\t')
            fputs("\\t", stderr);
        else if (c < 0x20 || c == 0x7f)
            fprintf(stderr, "\\x%02x", c);
        else
            fputc(c, stderr);
    }
    fputs(len > max ? "\"..." : "\"", stderr);
}

static void print_ids(const char *what, const uint32_t *ids, size_t n, size_t at)
{
    size_t from = at > 4 ? at - 4 : 0, to = MIN(n, at + 6);

    fprintf(stderr, "      %s (%zu ids) [%zu..]:", what, n, from);
    for (size_t i = from; i < to; i++)
        fprintf(stderr, i == at ? " >%u<" : " %u", ids[i]);
    fputc('\n', stderr);
}

/*
 * Encode e with limit `max` and compare with the reference (the untruncated ids, truncated the
 * way `tokenizers` does: keep max-1 ids, then the final [SEP]).  Prints the first mismatches.
 */
static bool check_entry(const struct tokenizer *t, struct tokens *toks, const struct entry *e,
                        uint32_t max, size_t lineno, size_t *reported)
{
    uint32_t *want = e->ids;
    size_t nwant = e->n, at;
    bool truncated = nwant > max, ok;
    int r;

    if (truncated) {
        want = malloc(max * sizeof(uint32_t));
        memcpy(want, e->ids, (max - 1) * sizeof(uint32_t));
        want[max - 1] = e->ids[e->n - 1];
        nwant = max;
    }
    r = tokenizer_encode(t, e->bytes, e->len, max, toks);
    ok = r >= 0 && (size_t)r == nwant && toks->n == nwant && toks->truncated == truncated &&
         memcmp(toks->ids, want, nwant * sizeof(uint32_t)) == 0;
    if (ok && toks->spans && e->spans && max == NO_LIMIT) {
        for (size_t i = 0; i < e->nspans && ok; i++)
            ok = toks->spans[i].start == e->spans[i][0] && toks->spans[i].end == e->spans[i][1];
    }
    if (!ok && (*reported)++ < MAX_REPORTED) {
        for (at = 0; r >= 0 && at < MIN(nwant, toks->n) && toks->ids[at] == want[at]; at++)
            ;
        fprintf(stderr, "  MISMATCH line %zu (max %u, r=%d, truncated %d vs %d): ", lineno, max, r,
                toks->truncated, truncated);
        print_escaped(e->bytes, e->len, 160);
        fputc('\n', stderr);
        print_ids("want", want, nwant, at);
        if (r >= 0)
            print_ids("got ", toks->ids, toks->n, at);
        if (toks->spans && e->spans)
            for (size_t i = 0; i < MIN(e->nspans, toks->n); i++)
                if (toks->spans[i].start != e->spans[i][0] || toks->spans[i].end != e->spans[i][1])
                    fprintf(stderr, "      span %zu: want [%u,%u) got [%u,%u)\n", i, e->spans[i][0],
                            e->spans[i][1], toks->spans[i].start, toks->spans[i].end);
    }
    if (want != e->ids)
        free(want);
    return ok;
}

/* Runs every entry of a fixture file through `t` at both limits; returns mismatches. */
static size_t run_fixture(const struct tokenizer *t, const char *name, size_t *ret_entries)
{
    char *path = fixture_path(name), *line = NULL;
    size_t cap = 0, lineno = 0, bad = 0, n = 0, reported = 0;
    struct tokens plain, spans;
    FILE *f;

    ASSERT_TRUE(path != NULL);
    f = fopen(path, "re");
    if (!f)
        test_fail(__FILE__, __LINE__, "cannot open fixture %s: %s", path, strerror(errno));
    tokens_init(&plain, false);
    tokens_init(&spans, true);
    while (getline(&line, &cap, f) > 0) {
        struct entry e;
        lineno++;
        if (entry_parse(line, &e) == 1) {
            n++;
            bad += !check_entry(t, &plain, &e, NO_LIMIT, lineno, &reported);
            bad += !check_entry(t, &plain, &e, LIMIT, lineno, &reported);
            bad += !check_entry(t, &spans, &e, NO_LIMIT, lineno, &reported);
        }
        entry_release(&e);
    }
    fclose(f);
    free(line);
    free(path);
    tokens_release(&plain);
    tokens_release(&spans);
    *ret_entries = n;
    return bad;
}

static char *make_temp_dir(void)
{
    char *d = strdup("/tmp/coarch-test-tok-XXXXXX");

    ASSERT_TRUE(d && mkdtemp(d));
    return d;
}

static void remove_dir(const char *dir)
{
    static const char *const names[] = {"tokenizer.json", "vocab.txt", "tokenizer_config.json"};

    for (size_t i = 0; i < ELEMENTSOF(names); i++) {
        char *p = path_join(dir, names[i]);
        unlink(p);
        free(p);
    }
    rmdir(dir);
}

static void copy_file(const char *from_dir, const char *to_dir, const char *name)
{
    char *a = path_join(from_dir, name), *b = path_join(to_dir, name), buf[65536];
    FILE *in = fopen(a, "re"), *out = fopen(b, "we");
    size_t n;

    ASSERT_TRUE(in && out);
    while ((n = fread(buf, 1, sizeof(buf), in)) > 0)
        ASSERT_EQ(fwrite(buf, 1, n, out), n);
    fclose(in);
    ASSERT_EQ(fclose(out), 0);
    free(a);
    free(b);
}

static void write_file(const char *dir, const char *name, const char *content)
{
    char *p = path_join(dir, name);
    FILE *f = fopen(p, "we");

    ASSERT_TRUE(f != NULL);
    fputs(content, f);
    ASSERT_EQ(fclose(f), 0);
    free(p);
}

/* ------------------------------------------------------------------------------------------ */
/* Fixture comparisons                                                                        */

TEST(fixture_minilm)
{
    char *dir = model_dir_or_skip();
    struct tokenizer *t = load_or_fail(dir);
    size_t n, bad = run_fixture(t, "minilm.jsonl", &n);

    printf("  minilm.jsonl: %zu entries x 3 encodes, %zu mismatches\n", n, bad);
    ASSERT_GE(n, 5000);
    ASSERT_EQ(bad, 0);
    ASSERT_EQ(tokenizer_num_special_tokens(t), 2);
    ASSERT_EQ(tokenizer_token_id(t, "[CLS]"), 101);
    ASSERT_EQ(tokenizer_token_id(t, "[SEP]"), 102);
    ASSERT_EQ(tokenizer_token_id(t, "[PAD]"), 0);
    ASSERT_EQ(tokenizer_token_id(t, "##ing"), 2075);
    ASSERT_EQ(tokenizer_token_id(t, "no such token"), -ENOENT);
    ASSERT_EQ(tokenizer_vocab_size(t), 30522);
    tokenizer_free(t);
    free(dir);
}

/* vocab.txt + tokenizer_config.json must give the same ids as tokenizer.json. */
TEST(fixture_vocab_txt_fallback)
{
    char *dir = model_dir_or_skip(), *tmp = make_temp_dir();
    struct tokenizer *t;
    size_t n, bad;

    copy_file(dir, tmp, "vocab.txt");
    copy_file(dir, tmp, "tokenizer_config.json");
    t = load_or_fail(tmp);
    bad = run_fixture(t, "minilm.jsonl", &n);
    printf("  vocab.txt fallback: %zu entries, %zu mismatches\n", n, bad);
    ASSERT_EQ(bad, 0);
    tokenizer_free(t);
    remove_dir(tmp);
    free(tmp);
    free(dir);
}

/* Each group of variants.jsonl puts its normalizer into a copy of tokenizer.json. */
TEST(fixture_normalizer_variants)
{
    char *dir = model_dir_or_skip(), *path = fixture_path("variants.jsonl"), *line = NULL;
    char *tj = path_join(dir, "tokenizer.json");
    struct tokenizer *t = NULL;
    struct tokens toks;
    size_t cap = 0, lineno = 0, bad = 0, groups = 0, entries = 0, reported = 0;
    json_error_t jerr;
    json_t *base = json_load_file(tj, 0, &jerr);
    FILE *f = fopen(path, "re");

    ASSERT_TRUE(base != NULL);
    ASSERT_TRUE(f != NULL);
    tokens_init(&toks, false);
    while (getline(&line, &cap, f) > 0) {
        struct entry e;
        lineno++;
        if (entry_parse(line, &e) == 0) {
            char *tmp = make_temp_dir(), *out = path_join(tmp, "tokenizer.json");
            json_object_set(base, "normalizer", json_object_get(e.json, "normalizer"));
            ASSERT_EQ(json_dump_file(base, out, 0), 0);
            tokenizer_free(t);
            t = load_or_fail(tmp);
            remove_dir(tmp);
            free(tmp);
            free(out);
            groups++;
        } else {
            entries++;
            bad += !check_entry(t, &toks, &e, NO_LIMIT, lineno, &reported);
            bad += !check_entry(t, &toks, &e, LIMIT, lineno, &reported);
        }
        entry_release(&e);
    }
    printf("  variants.jsonl: %zu normalizer settings, %zu entries, %zu mismatches\n", groups,
           entries, bad);
    ASSERT_EQ(groups, 3);
    ASSERT_EQ(bad, 0);
    fclose(f);
    free(line);
    free(path);
    free(tj);
    json_decref(base);
    tokens_release(&toks);
    tokenizer_free(t);
    free(dir);
}

/* ------------------------------------------------------------------------------------------ */
/* Every code point                                                                           */

static size_t parse_seq(const char *s, uint32_t *out, size_t max)
{
    size_t n = 0;

    while (*s && n < max) {
        char *end;
        out[n++] = (uint32_t)strtoul(s, &end, 16);
        s = *end == '.' ? end + 1 : end;
    }
    return n;
}

/* Expands a unicode.txt field for code point cp; returns the length. */
static size_t expand(const char *field, uint32_t cp, const uint32_t *nfd, size_t nnfd,
                     const uint32_t *low, size_t nlow, uint32_t *out)
{
    switch (field[0]) {
    case '=':
        out[0] = cp;
        return 1;
    case '0':
        return field[1] ? parse_seq(field, out, 16) : 0;
    case 'c':
        out[0] = ' ';
        out[1] = cp;
        out[2] = ' ';
        return 3;
    case 's':
        out[0] = ' ';
        return 1;
    case 'n':
        memcpy(out, nfd, nnfd * sizeof(*out));
        return nnfd;
    case 'l':
        memcpy(out, low, nlow * sizeof(*out));
        return nlow;
    case 'H': {
        uint32_t s = cp - 0xAC00, n = 2;
        out[0] = 0x1100 + s / 588;
        out[1] = 0x1161 + (s % 588) / 28;
        if (s % 28)
            out[n++] = 0x11A7 + s % 28;
        return n;
    }
    default:
        return parse_seq(field, out, 16);
    }
}

/* BertNormalizer with the default settings on one character, built from the unicode layer. */
static size_t our_full(uint32_t cp, uint32_t *out)
{
    uint32_t d[TOK_DECOMP_MAX], l[TOK_LOWER_MAX];
    size_t n = 0;
    bool cjk = tok_is_cjk(cp);
    int nd;

    if (tok_is_removed(cp))
        return 0;
    if (tok_is_space(cp)) {
        out[0] = ' ';
        return 1;
    }
    if (cjk)
        out[n++] = ' ';
    nd = tok_decompose(cp, d);
    for (int i = 0; i < nd; i++) {
        if (tok_is_mn(d[i]))
            continue;
        int nl = tok_lowercase(d[i], l);
        for (int k = 0; k < nl; k++)
            out[n++] = l[k];
    }
    if (cjk)
        out[n++] = ' ';
    return n;
}

static bool same(const uint32_t *a, size_t na, const uint32_t *b, size_t nb)
{
    return na == nb && memcmp(a, b, na * sizeof(*a)) == 0;
}

TEST(unicode_every_code_point)
{
    char *path = fixture_path("unicode.txt"), *line = NULL;
    size_t cap = 0, checked = 0, bad = 0;
    uint32_t next = 0;
    FILE *f = fopen(path, "re");

    ASSERT_TRUE(f != NULL);
    while (getline(&line, &cap, f) > 0) {
        char klass[4], full[64], lower[64], nfd[64];
        unsigned first, last;

        ASSERT_EQ(sscanf(line, "%x %x %3s %63s %63s %63s", &first, &last, klass, full, lower, nfd),
                  6);
        if (next == 0xD800)
            next = 0xE000;
        ASSERT_EQ(first, next);
        for (uint32_t cp = first; cp <= last; cp++) {
            uint32_t wn[16], wl[16], wf[16], gn[TOK_DECOMP_MAX], gl[TOK_LOWER_MAX], gf[16];
            size_t nwn, nwl, nwf, ngn, ngl, ngf;
            char gk;

            if (cp >= 0xD800 && cp <= 0xDFFF)
                continue;
            nwn = expand(nfd, cp, NULL, 0, NULL, 0, wn);
            nwl = expand(lower, cp, NULL, 0, NULL, 0, wl);
            nwf = expand(full, cp, wn, nwn, wl, nwl, wf);
            ngn = (size_t)tok_decompose(cp, gn);
            ngl = (size_t)tok_lowercase(cp, gl);
            ngf = our_full(cp, gf);
            gk = tok_is_space(cp) ? 's' : tok_is_punct(cp) ? 'p' : '-';
            if (gk != klass[0] || !same(wn, nwn, gn, ngn) || !same(wl, nwl, gl, ngl) ||
                !same(wf, nwf, gf, ngf)) {
                if (bad++ < 10)
                    fprintf(stderr,
                            "  U+%04X: class %c/%c nfd %zu/%zu (%X) lower %zu/%zu (%X) "
                            "full %zu/%zu (%X)\n",
                            cp, klass[0], gk, nwn, ngn, ngn ? gn[0] : 0, nwl, ngl, gl[0], nwf, ngf,
                            ngf ? gf[0] : 0);
            }
            checked++;
        }
        next = last + 1;
    }
    printf("  %zu code points checked, %zu differ\n", checked, bad);
    ASSERT_EQ(next, 0x110000);
    ASSERT_EQ(bad, 0);
    fclose(f);
    free(line);
    free(path);
}

/* ------------------------------------------------------------------------------------------ */
/* Long inputs                                                                                */

/* The same bytes as long_line() in gen-tokenizer-fixture.py. */
static char *long_line(size_t *ret_len)
{
    size_t cap = 11 * 1024 * 1024, len = 0;
    char *s = malloc(cap);

    ASSERT_TRUE(s != NULL);
    for (unsigned i = 0; len < 10 * 1024 * 1024; i++) {
        int n =
            snprintf(s + len, cap - len,
                     "static int f%u(struct x *p) { return p->v%u + %u; } /* na\xc3\xafve #%u */ ",
                     i, i % 7, i * 31 % 1000, i);
        ASSERT_TRUE(n > 0 && (size_t)n < cap - len);
        len += (size_t)n;
    }
    *ret_len = len;
    return s;
}

static uint64_t fnv1a_ids(const uint32_t *ids, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ULL;

    for (size_t i = 0; i < n; i++)
        for (int k = 0; k < 4; k++)
            h = (h ^ ((ids[i] >> (8 * k)) & 0xFF)) * 0x100000001b3ULL;
    return h;
}

TEST(long_line_10mb)
{
    char *dir = model_dir_or_skip(), *path = fixture_path("long.json"), *text;
    struct tokenizer *t = load_or_fail(dir);
    json_error_t jerr;
    json_t *j = json_load_file(path, 0, &jerr), *want;
    struct tokens toks;
    size_t len;
    double t0, t1, t2;
    char hash[17];
    int r;

    ASSERT_TRUE(j != NULL);
    text = long_line(&len);
    ASSERT_EQ(len, json_integer_value(json_object_get(j, "bytes")));
    tokens_init(&toks, false);

    t0 = now();
    r = tokenizer_encode(t, text, len, LIMIT, &toks);
    t1 = now();
    ASSERT_EQ(r, LIMIT);
    ASSERT_TRUE(toks.truncated);
    want = json_object_get(j, "ids_256");
    ASSERT_EQ(json_array_size(want), LIMIT);
    for (size_t i = 0; i < LIMIT; i++)
        ASSERT_EQ(toks.ids[i], json_integer_value(json_array_get(want, i)));
    /* Only the prefix that fits is tokenized: well below a millisecond (ASan included), where
     * the whole line takes 0.1-1 s; the bound leaves room for a loaded machine. */
    ASSERT_SECONDS_BELOW(t1 - t0, 0.25);

    r = tokenizer_encode(t, text, len, UINT32_MAX, &toks);
    t2 = now();
    ASSERT_GE(r, 0);
    ASSERT_FALSE(toks.truncated);
    ASSERT_EQ(toks.n, json_integer_value(json_object_get(j, "count")));
    snprintf(hash, sizeof(hash), "%016llx", (unsigned long long)fnv1a_ids(toks.ids, toks.n));
    ASSERT_STREQ(hash, json_string_value(json_object_get(j, "fnv1a")));
    printf("  10 MB line: truncated encode %.3f ms, full encode %.0f ms (%u tokens, %.1f MB/s)\n",
           (t1 - t0) * 1e3, (t2 - t1) * 1e3, toks.n, (double)len / 1e6 / (t2 - t1));
    ASSERT_SECONDS_BELOW(t2 - t1, 20.0);

    tokens_release(&toks);
    free(text);
    json_decref(j);
    free(path);
    tokenizer_free(t);
    free(dir);
}

/* Degenerate 10 MB inputs stay linear and give the reference's answer. */
TEST(long_degenerate_inputs)
{
    char *dir = model_dir_or_skip();
    struct tokenizer *t = load_or_fail(dir);
    size_t len = 10 * 1024 * 1024;
    char *s = malloc(len);
    struct tokens toks;
    int64_t a = tokenizer_token_id(t, "a");
    double t0;
    int r;

    tokens_init(&toks, true);
    /* One endless word: more than max_input_chars_per_word, so [UNK]. */
    memset(s, 'a', len);
    t0 = now();
    r = tokenizer_encode(t, s, len, LIMIT, &toks);
    ASSERT_EQ(r, 3);
    ASSERT_EQ(toks.ids[1], 100);
    ASSERT_EQ(toks.spans[1].start, 0);
    ASSERT_EQ(toks.spans[1].end, len);
    ASSERT_SECONDS_BELOW(now() - t0, 5.0);

    /* "a" and five million U+0301: strip_accents drops every mark, leaving "a". */
    s[0] = 'a';
    for (size_t i = 1; i + 1 < len; i += 2) {
        s[i] = (char)0xCC;
        s[i + 1] = (char)0x81;
    }
    t0 = now();
    r = tokenizer_encode(t, s, len - 1, LIMIT, &toks);
    ASSERT_EQ(r, 3);
    ASSERT_EQ(toks.ids[1], a);
    ASSERT_SECONDS_BELOW(now() - t0, 5.0);

    /* U+1D165 (Mc, combining class 216) is kept and held for canonical reordering: the held
     * run must stay bounded, and the word is [UNK]. */
    for (size_t i = 0; i + 4 <= len; i += 4)
        memcpy(s + i, "\xf0\x9d\x85\xa5", 4);
    t0 = now();
    r = tokenizer_encode(t, s, len, LIMIT, &toks);
    ASSERT_EQ(r, 3);
    ASSERT_EQ(toks.ids[1], 100);
    ASSERT_SECONDS_BELOW(now() - t0, 5.0);

    /* Five million "[SEP]"-free brackets and spaces: many tiny words, stops at the limit. */
    for (size_t i = 0; i + 1 < len; i += 2) {
        s[i] = '[';
        s[i + 1] = ' ';
    }
    t0 = now();
    r = tokenizer_encode(t, s, len, LIMIT, &toks);
    ASSERT_EQ(r, LIMIT);
    ASSERT_TRUE(toks.truncated);
    ASSERT_SECONDS_BELOW(now() - t0, 0.25);

    tokens_release(&toks);
    free(s);
    tokenizer_free(t);
    free(dir);
}

/* ------------------------------------------------------------------------------------------ */
/* Invalid input, limits, errors, threads                                                     */

static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* Random byte soup: no crash, same answer twice, with and without spans, spans in bounds. */
TEST(invalid_utf8_random)
{
    static const char *const pieces[] = {"a",
                                         " ",
                                         "[SEP]",
                                         "\xc3\xa9",
                                         "\xe6\x97\xa5",
                                         "\xf0\x9f\x98\x80",
                                         "\xcc\x81",
                                         "\xff",
                                         "\xc3",
                                         "\xe2\x82",
                                         "\xed\xa0\x80",
                                         ".",
                                         "\xf0\x9d\x85\xa5",
                                         "\x00",
                                         "\xef\xbf\xbd",
                                         "ab"};
    char *dir = model_dir_or_skip();
    struct tokenizer *t = load_or_fail(dir);
    struct tokens a, b;
    uint64_t seed = 0x9e3779b97f4a7c15ULL;
    char buf[512];

    tokens_init(&a, false);
    tokens_init(&b, true);
    for (int iter = 0; iter < 20000; iter++) {
        size_t len = 0, target = rng_next(&seed) % 200;
        while (len < target) {
            if (rng_next(&seed) % 4 == 0) {
                buf[len++] = (char)(rng_next(&seed) & 0xFF);
            } else {
                const char *p = pieces[rng_next(&seed) % ELEMENTSOF(pieces)];
                size_t n = p[0] ? strlen(p) : 1;
                memcpy(buf + len, p, n);
                len += n;
            }
        }
        uint32_t max = 2 + (uint32_t)(rng_next(&seed) % 40);
        int ra = tokenizer_encode(t, buf, len, max, &a);
        int rb = tokenizer_encode(t, buf, len, max, &b);
        ASSERT_GE(ra, 2);
        ASSERT_EQ(ra, rb);
        ASSERT_LE(ra, max);
        ASSERT_EQ(a.truncated, b.truncated);
        ASSERT_EQ(memcmp(a.ids, b.ids, a.n * sizeof(uint32_t)), 0);
        for (uint32_t i = 1; i + 1 < b.n; i++) {
            ASSERT_LE(b.spans[i].start, b.spans[i].end);
            ASSERT_LE(b.spans[i].end, len);
            ASSERT_LE(b.spans[i - 1].start, b.spans[i].start);
        }
    }
    tokens_release(&a);
    tokens_release(&b);
    tokenizer_free(t);
    free(dir);
}

TEST(limits_and_empty)
{
    char *dir = model_dir_or_skip();
    struct tokenizer *t = load_or_fail(dir);
    struct tokens toks;

    tokens_init(&toks, false);
    ASSERT_EQ(tokenizer_encode(t, "", 0, 256, &toks), 2);
    ASSERT_EQ(toks.ids[0], 101);
    ASSERT_EQ(toks.ids[1], 102);
    ASSERT_FALSE(toks.truncated);
    ASSERT_EQ(tokenizer_encode(t, "hello world", 11, 2, &toks), 2);
    ASSERT_TRUE(toks.truncated);
    ASSERT_EQ(tokenizer_encode(t, "hello world", 11, 3, &toks), 3);
    ASSERT_EQ(toks.ids[1], 7592);
    ASSERT_EQ(toks.ids[2], 102);
    ASSERT_EQ(tokenizer_encode(t, "hello world", 11, 4, &toks), 4);
    ASSERT_FALSE(toks.truncated);
    ASSERT_EQ(tokenizer_encode(t, "hello", 5, 1, &toks), -EINVAL);
    /* text need not be NUL-terminated: only len bytes are read */
    ASSERT_EQ(tokenizer_encode(t, "hello world", 5, 256, &toks), 3);
    ASSERT_EQ(toks.ids[1], 7592);
    tokens_release(&toks);
    tokenizer_free(t);
    free(dir);
}

static void expect_load_error(const char *dir, int want, const char *needle)
{
    struct tokenizer *t = NULL;
    char *err = NULL;
    int r = tokenizer_load(dir, &t, &err);

    ASSERT_EQ(r, want);
    ASSERT_TRUE(t == NULL);
    ASSERT_TRUE(err != NULL);
    if (!strstr(err, needle))
        test_fail(__FILE__, __LINE__, "error message \"%s\" lacks \"%s\"", err, needle);
    printf("  expected error: %s\n", err);
    free(err);
}

TEST(load_errors)
{
    char *tmp = make_temp_dir();

    expect_load_error(tmp, -ENOENT, "no tokenizer.json or vocab.txt");
    write_file(tmp, "tokenizer.json", "{\"model\": {\"vocab\": {\"a\": 1,}}}");
    expect_load_error(tmp, -EINVAL, "tokenizer.json:1:");
    write_file(tmp, "tokenizer.json", "[1, 2]");
    expect_load_error(tmp, -EINVAL, "top level is not an object");
    write_file(tmp, "tokenizer.json",
               "{\"normalizer\": {\"type\": \"NFKC\"}, \"pre_tokenizer\": {\"type\": "
               "\"BertPreTokenizer\"}, \"model\": {\"type\": \"WordPiece\", \"vocab\": {}}}");
    expect_load_error(tmp, -ENOTSUP, "normalizer type 'NFKC'");
    write_file(tmp, "tokenizer.json",
               "{\"pre_tokenizer\": {\"type\": \"BertPreTokenizer\"}, \"model\": {\"type\": "
               "\"BPE\", \"vocab\": {}}}");
    expect_load_error(tmp, -ENOTSUP, "model type 'BPE'");
    write_file(tmp, "tokenizer.json",
               "{\"pre_tokenizer\": {\"type\": \"BertPreTokenizer\"}, \"model\": {\"type\": "
               "\"WordPiece\", \"unk_token\": \"[UNK]\", \"vocab\": {\"a\": 0}}}");
    expect_load_error(tmp, -EINVAL, "unk_token '[UNK]' is not in model.vocab");
    write_file(tmp, "tokenizer.json",
               "{\"pre_tokenizer\": {\"type\": \"BertPreTokenizer\"}, \"model\": {\"type\": "
               "\"WordPiece\", \"vocab\": {\"[UNK]\": \"zero\"}}}");
    expect_load_error(tmp, -EINVAL, "has no valid id");
    write_file(tmp, "tokenizer.json",
               "{\"pre_tokenizer\": {\"type\": \"BertPreTokenizer\"}, \"model\": {\"type\": "
               "\"WordPiece\", \"vocab\": {\"[UNK]\": 0}}, \"added_tokens\": [{\"id\": 5, "
               "\"content\": \"<x>\", \"normalized\": true}]}");
    expect_load_error(tmp, -ENOTSUP, "added token '<x>'");
    write_file(tmp, "tokenizer.json",
               "{\"pre_tokenizer\": {\"type\": \"BertPreTokenizer\"}, \"model\": {\"type\": "
               "\"WordPiece\", \"vocab\": {\"[UNK]\": 0}}, \"post_processor\": {\"type\": "
               "\"TemplateProcessing\", \"single\": [{\"SpecialToken\": {\"id\": \"[CLS]\"}}, "
               "{\"Sequence\": {\"id\": \"A\"}}], \"special_tokens\": {}}}");
    expect_load_error(tmp, -EINVAL, "no valid entry '[CLS]'");
    remove_dir(tmp);
    free(tmp);
}

/* A minimal tokenizer.json exercising BertProcessing, lstrip/rstrip and a custom prefix. */
TEST(handwritten_tokenizer)
{
    char *tmp = make_temp_dir();
    struct tokenizer *t;
    struct tokens toks;
    static const char *const text = "Un aff ##x  <m>  b";

    write_file(tmp, "tokenizer.json",
               "{\"added_tokens\": [{\"id\": 9, \"content\": \"<m>\", \"lstrip\": true, "
               "\"rstrip\": true, \"special\": true}],"
               " \"normalizer\": null, \"pre_tokenizer\": {\"type\": \"BertPreTokenizer\"},"
               " \"post_processor\": {\"type\": \"BertProcessing\", \"sep\": [\"</s>\", 2],"
               " \"cls\": [\"<s>\", 1]},"
               " \"model\": {\"type\": \"WordPiece\", \"unk_token\": \"?\","
               " \"continuing_subword_prefix\": \"@@\", \"max_input_chars_per_word\": 5,"
               " \"vocab\": {\"?\": 0, \"<s>\": 1, \"</s>\": 2, \"Un\": 3, \"a\": 4, \"@@ff\": 5,"
               " \"#\": 6, \"x\": 7, \"b\": 8, \"@@f\": 10}}}");
    t = load_or_fail(tmp);
    tokens_init(&toks, true);
    ASSERT_EQ(tokenizer_encode(t, text, strlen(text), 100, &toks), 10);
    /* <s> Un a@@ff # # x <m> b </s>: no lowercasing; "<m>" takes its surrounding spaces.  Its
     * declared id 9 is ignored, as by the reference: not in the vocabulary, it gets the entry
     * count (10), even though "@@f" has that id too. */
    static const uint32_t want[] = {1, 3, 4, 5, 6, 6, 7, 10, 8, 2};
    for (size_t i = 0; i < ELEMENTSOF(want); i++)
        ASSERT_EQ(toks.ids[i], want[i]);
    ASSERT_EQ(toks.spans[7].start, 10);
    ASSERT_EQ(toks.spans[7].end, 17);
    ASSERT_EQ(tokenizer_encode(t, "abcdef", 6, 100, &toks), 3);
    ASSERT_EQ(toks.ids[1], 0); /* longer than max_input_chars_per_word */
    ASSERT_EQ(tokenizer_encode(t, "aff", 3, 100, &toks), 4);
    ASSERT_EQ(tokenizer_encode(t, "afx", 3, 100, &toks), 3);
    ASSERT_EQ(toks.ids[1], 0); /* no piece for "x" after "a@@f": the whole word is unknown */
    tokens_release(&toks);
    tokenizer_free(t);
    remove_dir(tmp);
    free(tmp);
}

/*
 * Canonical reordering of kept non-starters (U+1D165 has class 216, U+1D16D 226) in a run
 * longer than the insertion-sort cutoff, allowed by a large max_input_chars_per_word.  Expected
 * ids checked with tokenizers 0.23.3 on the same tokenizer.json.
 */
TEST(long_reorder_run)
{
    char *tmp = make_temp_dir();
    struct tokenizer *t;
    struct tokens toks;
    char text[256];
    size_t len = 0;

    write_file(
        tmp, "tokenizer.json",
        "{\"normalizer\": {\"type\": \"BertNormalizer\", \"clean_text\": true,"
        " \"handle_chinese_chars\": true, \"strip_accents\": true, \"lowercase\": false},"
        " \"pre_tokenizer\": {\"type\": \"BertPreTokenizer\"}, \"post_processor\": null,"
        " \"model\": {\"type\": \"WordPiece\", \"unk_token\": \"?\","
        " \"max_input_chars_per_word\": 1000, \"vocab\": {\"?\": 0,"
        " \"\\ud834\\udd65\": 1, \"##\\ud834\\udd65\": 2, \"##\\ud834\\udd6d\": 3, \"x\": 4}}}");
    t = load_or_fail(tmp);
    tokens_init(&toks, false);
    for (int i = 0; i < 20; i++) {
        memcpy(text + len, "\xf0\x9d\x85\xad\xf0\x9d\x85\xa5", 8); /* U+1D16D U+1D165 */
        len += 8;
    }
    ASSERT_EQ(tokenizer_encode(t, text, len, 1000, &toks), 40);
    ASSERT_EQ(toks.ids[0], 1);
    for (int i = 1; i < 20; i++)
        ASSERT_EQ(toks.ids[i], 2);
    for (int i = 20; i < 40; i++)
        ASSERT_EQ(toks.ids[i], 3);
    /* A dropped U+0301 (class 230) between them does not end the run. */
    len = 0;
    text[len++] = 'x';
    for (int i = 0; i < 3; i++) {
        memcpy(text + len, "\xf0\x9d\x85\xad\xcc\x81\xf0\x9d\x85\xa5", 10);
        len += 10;
    }
    ASSERT_EQ(tokenizer_encode(t, text, len, 1000, &toks), 7);
    static const uint32_t want[] = {4, 2, 2, 2, 3, 3, 3};
    for (size_t i = 0; i < ELEMENTSOF(want); i++)
        ASSERT_EQ(toks.ids[i], want[i]);
    tokens_release(&toks);
    tokenizer_free(t);
    remove_dir(tmp);
    free(tmp);
}

struct thread_arg {
    const struct tokenizer *t;
    char **texts;
    size_t *lens;
    uint32_t **want;
    uint32_t *nwant;
    size_t n;
    int failures;
};

static void *thread_main(void *p)
{
    struct thread_arg *a = p;
    struct tokens toks;

    tokens_init(&toks, false);
    for (int round = 0; round < 5; round++)
        for (size_t i = 0; i < a->n; i++) {
            int r = tokenizer_encode(a->t, a->texts[i], a->lens[i], LIMIT, &toks);
            if (r < 0 || (uint32_t)r != a->nwant[i] ||
                memcmp(toks.ids, a->want[i], a->nwant[i] * sizeof(uint32_t)) != 0)
                a->failures++;
        }
    tokens_release(&toks);
    return NULL;
}

/* One tokenizer, four threads, each with its own struct tokens: all agree with serial runs. */
TEST(concurrent_encodes)
{
    char *dir = model_dir_or_skip(), *path = fixture_path("minilm.jsonl"), *line = NULL;
    struct tokenizer *t = load_or_fail(dir);
    struct thread_arg args[4];
    pthread_t th[4];
    size_t cap = 0, n = 0;
    char *texts[1000];
    size_t lens[1000];
    uint32_t *want[1000], nwant[1000];
    struct tokens toks;
    FILE *f = fopen(path, "re");

    ASSERT_TRUE(f != NULL);
    tokens_init(&toks, false);
    while (n < 1000 && getline(&line, &cap, f) > 0) {
        struct entry e;
        if (entry_parse(line, &e) == 1) {
            ASSERT_OK(tokenizer_encode(t, e.bytes, e.len, LIMIT, &toks));
            texts[n] = TAKE_PTR(e.bytes);
            lens[n] = e.len;
            want[n] = malloc(toks.n * sizeof(uint32_t));
            memcpy(want[n], toks.ids, toks.n * sizeof(uint32_t));
            nwant[n] = toks.n;
            n++;
        }
        entry_release(&e);
    }
    fclose(f);
    for (int i = 0; i < 4; i++) {
        args[i] = (struct thread_arg){t, texts, lens, want, nwant, n, 0};
        ASSERT_EQ(pthread_create(&th[i], NULL, thread_main, &args[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        ASSERT_EQ(pthread_join(th[i], NULL), 0);
        ASSERT_EQ(args[i].failures, 0);
    }
    for (size_t i = 0; i < n; i++) {
        free(texts[i]);
        free(want[i]);
    }
    tokens_release(&toks);
    free(line);
    free(path);
    tokenizer_free(t);
    free(dir);
}

/* ------------------------------------------------------------------------------------------ */
/* Throughput (reported, not asserted beyond sanity)                                          */

TEST(throughput)
{
    char *dir = model_dir_or_skip(), *path = fixture_path("minilm.jsonl"), *line = NULL;
    struct tokenizer *t = load_or_fail(dir);
    size_t cap = 0, len = 0, bufcap = 0, chunks = 0;
    uint64_t ntok = 0;
    char *buf = NULL;
    struct tokens toks;
    double t0, dt;
    FILE *f = fopen(path, "re");

    ASSERT_TRUE(f != NULL);
    /* The fixture's source lines and blocks (not the adversarial tail), repeated to ~4 MB. */
    while (getline(&line, &cap, f) > 0) {
        struct entry e;
        if (entry_parse(line, &e) == 1 && json_object_get(e.json, "text")) {
            ASSERT_OK(array_grow((void **)&buf, &bufcap, len + e.len + 1, 1));
            memcpy(buf + len, e.bytes, e.len);
            len += e.len;
            buf[len++] = '\n';
        }
        entry_release(&e);
    }
    fclose(f);
    size_t one = len;
    while (len < 4 * 1024 * 1024) {
        ASSERT_OK(array_grow((void **)&buf, &bufcap, len + one, 1));
        memcpy(buf + len, buf, one);
        len += one;
    }
    tokens_init(&toks, false);

    /* Whole text, no limit. */
    t0 = now();
    ASSERT_OK(tokenizer_encode(t, buf, len, UINT32_MAX, &toks));
    dt = now() - t0;
    printf("  untruncated: %.2f MB in %.1f ms: %.1f MB/s, %.2f M tokens/s\n", (double)len / 1e6,
           dt * 1e3, (double)len / 1e6 / dt, (double)toks.n / 1e6 / dt);

    /* As the indexer calls it: ~40-line chunks, each up to 256 tokens. */
    t0 = now();
    for (size_t p = 0; p < len;) {
        size_t q = p, lines = 0;
        while (q < len && lines < 40)
            if (buf[q++] == '\n')
                lines++;
        ASSERT_OK(tokenizer_encode(t, buf + p, q - p, LIMIT, &toks));
        ntok += toks.n;
        chunks++;
        p = q;
    }
    dt = now() - t0;
    /* Bytes past a chunk's 256th token are never looked at, so MB/s counts source consumed. */
    printf("  40-line chunks (max 256): %zu chunks, %.1f MB/s of source consumed, %.2f M "
           "tokens/s\n",
           chunks, (double)len / 1e6 / dt, (double)ntok / 1e6 / dt);

    tokens_release(&toks);
    free(buf);
    free(line);
    free(path);
    tokenizer_free(t);
    free(dir);
}

int main(int argc, char **argv)
{
    int r = test_run_all(argc, argv);

    /* The model-free tests passed, but most of this program could not run: report a skip. */
    if (r == 0 && model_missing) {
        fprintf(stderr, "model tests skipped: run scripts/fetch-model\n");
        return TEST_EXIT_SKIP;
    }
    return r;
}
