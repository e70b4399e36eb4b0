/*
 * bench/search.c - search latency at scale (issue 4): p50/p95/p99 of search_run() over a store
 * of N chunks of real code, in process, so nothing but the search itself is timed.
 *
 * DESIGN
 *
 * Corpus.  The files under a root (default: the Python installation's stdlib directory, which
 * with its site-packages is ~4 M lines of Python, stubs and reStructuredText) are walked in
 * byte order of path and cut into 20-line windows; each window becomes one chunk written the
 * way the indexer's write_file() does it: chunk row, vector, lexical postings, then the file
 * row, in write transactions committed every --commit-every chunks.  Chunk text is
 * "file: PATH\n\n" + the window, as the chunker's header does, so BM25 sees paths too.  When
 * the root runs out before N chunks, further passes cut the same files with windows shifted by
 * 10, 5 and 15 lines (paths prefixed "passP/"): near-duplicates, as overlapping windows are.
 *
 * Vectors.  Running the model over 100k+ chunks would take hours on this machine, so each
 * chunk gets a deterministic pseudo-embedding: every distinct term (lexical_count_terms())
 * maps to a fixed random unit vector in 384 dimensions (seeded by a hash of the term), and the
 * chunk's vector is their sum weighted by 1 + ln(tf), L2-normalised.  That is a random
 * projection of the bag of words: chunks sharing vocabulary get high cosines and unrelated
 * ones near-zero, with the broad, skewed cosine distribution a real model shows on code, so the
 * top-k heap and the re-rank see realistic work.  It is not meant to rank well; only timing is
 * measured.  Queries are embedded the same way.
 *
 * Queries.  Taken from the written chunks themselves: the names of public Python functions and
 * the first sentence of their docstrings (natural-language questions as people ask them), 200
 * by default, spread evenly over the corpus and alternating sentence / identifier.
 *
 * Timing.  One search_cache; the very first query (hybrid) builds the cache's in-memory int8
 * vector set and is reported separately as the cold-cache cost.  Then each mode (hybrid,
 * semantic, lexical, and hybrid with a path or language filter) runs --warmup untimed passes
 * over the queries, then one timed pass; each search_run() call is timed on CLOCK_MONOTONIC.
 *
 * --keep DIR reuses (or creates and keeps) the store in DIR; the parameters it was built with
 * are in its meta table and a mismatch is refused rather than silently benchmarked.
 */
#include "search.h"
#include "chunk.h"
#include "lexical.h"
#include "sha256.h"
#include "store-chunk.h"
#include "store-repo.h"
#include "store.h"

#include "macro.h"

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>

#define DIM 384
#define WINDOW_LINES 20
#define MAX_FILE_BYTES (4u << 20)
#define MAX_PASSES 4
#define META_PARAMS "bench.params"
#define META_QUERIES "bench.queries"

static const unsigned pass_offset[MAX_PASSES] = {0, 10, 5, 15};

/* ---- small helpers ------------------------------------------------------------------------ */

static double clock_s(clockid_t id)
{
    struct timespec ts;

    clock_gettime(id, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double now_s(void)
{
    return clock_s(CLOCK_MONOTONIC);
}

_printf_(1, 2) static void die(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    fputs("bench-search: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);

    if (!p)
        die("out of memory");
    return p;
}

static char *xstrdup(const char *s)
{
    char *p = strdup(s);

    if (!p)
        die("out of memory");
    return p;
}

static char *xstrndup(const char *s, size_t n)
{
    char *p = strndup(s, n);

    if (!p)
        die("out of memory");
    return p;
}

struct strv {
    char **v;
    size_t n, cap;
};

static void strv_push(struct strv *s, char *str)
{
    if (array_grow((void **)&s->v, &s->cap, s->n + 1, sizeof(*s->v)) < 0)
        die("out of memory");
    s->v[s->n++] = str;
}

static void strv_release(struct strv *s)
{
    for (size_t i = 0; i < s->n; i++)
        free(s->v[i]);
    free(s->v);
    *s = (struct strv){0};
}

/* ---- the pseudo-embedding ------------------------------------------------------------------ */

static uint64_t fnv1a(const char *s)
{
    uint64_t h = 1469598103934665603ULL;

    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ULL;
    }
    return h;
}

static uint64_t splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ULL);

    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* acc += w * (the fixed random unit vector of `term`). */
static void add_term_direction(float *acc, const char *term, float w)
{
    float dir[DIM];
    uint64_t state = fnv1a(term);
    float norm = 0;

    for (size_t i = 0; i < DIM; i += 4) {
        uint64_t x = splitmix64(&state);
        for (size_t j = 0; j < 4; j++) {
            dir[i + j] = (float)(int16_t)(x >> (16 * j)) * (1.0f / 32768.0f);
            norm += dir[i + j] * dir[i + j];
        }
    }
    w /= sqrtf(norm);
    for (size_t i = 0; i < DIM; i++)
        acc[i] += w * dir[i];
}

static void embed_tfs(const struct lexical_tf *tfs, size_t n, float out[DIM])
{
    float norm = 0;

    memset(out, 0, DIM * sizeof(float));
    for (size_t i = 0; i < n; i++)
        add_term_direction(out, tfs[i].term, 1.0f + logf((float)tfs[i].tf));
    for (size_t i = 0; i < DIM; i++)
        norm += out[i] * out[i];
    if (norm == 0) {
        out[0] = 1; /* no terms at all: any fixed unit vector */
        return;
    }
    norm = 1.0f / sqrtf(norm);
    for (size_t i = 0; i < DIM; i++)
        out[i] *= norm;
}

static void embed_text(const char *text, float out[DIM])
{
    struct lexical_tf *tfs = NULL;
    size_t n = 0;
    uint32_t total;

    if (lexical_count_terms(text, strlen(text), &tfs, &n, &total) < 0)
        die("out of memory");
    embed_tfs(tfs, n, out);
    lexical_tf_free(tfs, n);
}

/* ---- the corpus ---------------------------------------------------------------------------- */

static bool wanted_file(const char *name)
{
    static const char *const exts[] = {".py",   ".pyi", ".rst", ".txt", ".md",
                                       ".toml", ".cfg", ".c",   ".h"};
    const char *dot = strrchr(name, '.');

    if (!dot)
        return false;
    for (size_t i = 0; i < ELEMENTSOF(exts); i++)
        if (strcmp(dot, exts[i]) == 0)
            return true;
    return false;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Collect the relative paths of wanted files under root/rel (rel "" for the root). */
static void walk(const char *root, const char *rel, struct strv *out)
{
    char dir[PATH_MAX];
    DIR *d;
    struct dirent *e;

    snprintf(dir, sizeof(dir), "%s%s%s", root, *rel ? "/" : "", rel);
    d = opendir(dir);
    if (!d)
        return; /* unreadable directories are not part of the corpus */
    while ((e = readdir(d))) {
        char sub[PATH_MAX];
        struct stat st;

        if (e->d_name[0] == '.' || strcmp(e->d_name, "__pycache__") == 0)
            continue;
        if ((size_t)snprintf(sub, sizeof(sub), "%s%s%s", rel, *rel ? "/" : "", e->d_name) >=
            sizeof(sub))
            continue;
        char full[PATH_MAX * 2];
        snprintf(full, sizeof(full), "%s/%s", root, sub);
        if (lstat(full, &st) < 0)
            continue;
        if (S_ISDIR(st.st_mode))
            walk(root, sub, out);
        else if (S_ISREG(st.st_mode) && wanted_file(e->d_name) && st.st_size > 0 &&
                 (size_t)st.st_size <= MAX_FILE_BYTES && strlen(sub) + 8 <= STORE_MAX_FILE_PATH)
            strv_push(out, xstrdup(sub));
    }
    closedir(d);
}

static char *read_file(const char *path, size_t *ret_len, int64_t *ret_mtime)
{
    FILE *f = fopen(path, "rbe");
    struct stat st;
    char *buf;
    size_t n;

    if (!f)
        return NULL;
    if (fstat(fileno(f), &st) < 0 || (size_t)st.st_size > MAX_FILE_BYTES) {
        fclose(f);
        return NULL;
    }
    buf = xmalloc((size_t)st.st_size + 1);
    n = fread(buf, 1, (size_t)st.st_size, f);
    fclose(f);
    buf[n] = '\0';
    if (memchr(buf, '\0', n)) { /* binary */
        free(buf);
        return NULL;
    }
    *ret_len = n;
    *ret_mtime = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
    return buf;
}

/* ---- query candidates ---------------------------------------------------------------------- */

struct candidates {
    struct strv names, sentences;
};

static bool is_ident(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

static const char *skip_ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t'))
        p++;
    return p;
}

/*
 * Harvest from lines [p, end): "def name(" (public, not a test) and the first sentence of the
 * docstring on the next line, when it has at least four words.
 */
static void harvest(const char *p, const char *end, struct candidates *c)
{
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        const char *q = skip_ws(p, eol ? eol : end), *name;
        size_t nlen = 0;

        if (!eol)
            eol = end;
        if ((size_t)(eol - q) > 10 && memcmp(q, "async ", 6) == 0)
            q = skip_ws(q + 6, eol);
        if ((size_t)(eol - q) > 4 && memcmp(q, "def ", 4) == 0) {
            name = q + 4;
            while (name + nlen < eol && is_ident(name[nlen]))
                nlen++;
            if (nlen >= 4 && name[0] != '_' && strncmp(name, "test", 4) != 0 && name + nlen < eol &&
                name[nlen] == '(') {
                strv_push(&c->names, xstrndup(name, nlen));
                /* the docstring's first line */
                const char *d = eol < end ? skip_ws(eol + 1, end) : end;
                if (end - d > 3 && (memcmp(d, "\"\"\"", 3) == 0 || memcmp(d, "'''", 3) == 0)) {
                    const char *s = d + 3, *se = memchr(s, '\n', (size_t)(end - s));
                    size_t len, words = 1;
                    if (!se)
                        se = end;
                    len = (size_t)(se - s);
                    for (size_t i = 0; i < len; i++) {
                        if (s[i] == '.' || s[i] == '"' || s[i] == '\'') {
                            len = i;
                            break;
                        }
                        words += s[i] == ' ';
                    }
                    if (words >= 4 && len >= 20)
                        strv_push(&c->sentences, xstrndup(s, len));
                }
            }
        }
        p = eol + 1;
    }
}

/* Pick n queries evenly spread over the candidates, alternating sentence and identifier. */
static void pick_queries(const struct candidates *c, size_t n, struct strv *out)
{
    size_t n_sent = MIN(c->sentences.n, (n + 1) / 2);
    size_t n_name = MIN(c->names.n, n - n_sent);

    if (n_sent + n_name < n)
        n_sent = MIN(c->sentences.n, n - n_name);
    if (n_sent + n_name == 0)
        die("the corpus has no Python functions to make queries from");
    for (size_t i = 0, s = 0, m = 0; i < n_sent + n_name; i++) {
        bool sentence = (i % 2 == 0 && s < n_sent) || m >= n_name;
        if (sentence) {
            strv_push(out, xstrdup(c->sentences.v[s * c->sentences.n / n_sent]));
            s++;
        } else {
            strv_push(out, xstrdup(c->names.v[m * c->names.n / n_name]));
            m++;
        }
    }
}

/* ---- building the store -------------------------------------------------------------------- */

struct builder {
    struct store *store;
    struct store_txn *t;
    uint32_t repo;
    size_t target, written, pending, commit_every, files;
    double embed_s, store_s, commit_s; /* store_s includes commit_s */
    size_t commits;
    struct candidates cands;
};

static void check(int r, const char *what)
{
    if (r < 0)
        die("%s: %s (%s)", what, strerror(-r), store_last_error());
}

static void commit(struct builder *b)
{
    if (!b->t)
        return;
    double t0 = now_s();
    check(store_write_commit(b->t), "commit");
    b->store_s += now_s() - t0;
    b->commit_s += now_s() - t0;
    b->commits++;
    b->t = NULL;
    b->pending = 0;
}

/* Write the chunks (windows) of one file, as indexer.c's write_file() does. */
static void build_file(struct builder *b, const char *root, const char *rel, unsigned pass)
{
    char full[PATH_MAX * 2], path[STORE_MAX_FILE_PATH + 1];
    size_t len, n_lines = 0, n_win = 0;
    uint32_t *line_at; /* byte offset of each line start, plus the end */
    int64_t mtime;
    char *content;
    const char *language;
    uint64_t first = 0;
    double t0;

    snprintf(full, sizeof(full), "%s/%s", root, rel);
    content = read_file(full, &len, &mtime);
    if (!content)
        return;
    if (pass == 0)
        snprintf(path, sizeof(path), "%s", rel);
    else
        snprintf(path, sizeof(path), "pass%u/%s", pass, rel);
    language = chunk_detect_language(rel, content, len);

    line_at = xmalloc((len + 2) * sizeof(*line_at));
    line_at[n_lines++] = 0;
    for (size_t i = 0; i < len; i++)
        if (content[i] == '\n' && i + 1 < len)
            line_at[n_lines++] = (uint32_t)(i + 1);
    line_at[n_lines] = (uint32_t)len;

    /* Windows [s, s + 20) (0-based lines) that are not blank, at most what is still wanted. */
    size_t *win = xmalloc((n_lines / WINDOW_LINES + 2) * sizeof(*win));
    for (size_t s = pass_offset[pass]; s < n_lines && b->written + n_win < b->target;
         s += WINDOW_LINES) {
        size_t e = MIN(s + WINDOW_LINES, n_lines);
        bool blank = true;
        for (size_t i = line_at[s]; i < line_at[e] && blank; i++)
            blank =
                content[i] == ' ' || content[i] == '\t' || content[i] == '\n' || content[i] == '\r';
        if (!blank)
            win[n_win++] = s;
    }
    if (n_win == 0)
        goto out;

    if (!b->t)
        check(store_write_begin(b->store, &b->t), "write begin");
    t0 = now_s();
    check(store_chunk_ids_alloc(b->t, b->repo, (uint32_t)n_win, &first), "chunk ids");
    b->store_s += now_s() - t0;

    for (size_t w = 0; w < n_win; w++) {
        size_t s = win[w], e = MIN(s + WINDOW_LINES, n_lines);
        size_t off = line_at[s], wlen = line_at[e] - off, hlen, n_terms = 0;
        struct lexical_tf *tfs = NULL;
        struct store_term *terms;
        float vec[DIM];
        uint32_t total;
        char *text;

        /* The chunker's header, then the code. */
        hlen = strlen(path) + 8;
        text = xmalloc(hlen + wlen + 1);
        hlen = (size_t)sprintf(text, "file: %s\n\n", path);
        memcpy(text + hlen, content + off, wlen);
        text[hlen + wlen] = '\0';

        t0 = now_s();
        if (lexical_count_terms(text, hlen + wlen, &tfs, &n_terms, &total) < 0)
            die("out of memory");
        embed_tfs(tfs, n_terms, vec);
        double t1 = now_s();
        b->embed_s += t1 - t0;

        struct store_chunk sc = {
            .id = first + w,
            .path = path,
            .language = language,
            .symbol = "",
            .start_line = (uint32_t)s + 1,
            .end_line = (uint32_t)e,
            .text_offset = off,
            .text_len = (uint32_t)wlen,
        };
        sha256(content + off, wlen, sc.hash);
        check(store_chunk_put(b->t, &sc), "chunk put");
        check(store_vector_put(b->t, sc.id, vec, DIM), "vector put");
        if (n_terms > 0) {
            terms = xmalloc(n_terms * sizeof(*terms));
            for (size_t i = 0; i < n_terms; i++)
                terms[i] = (struct store_term){.term = tfs[i].term, .tf = tfs[i].tf};
            check(store_postings_add(b->t, sc.id, total, terms, n_terms), "postings add");
            free(terms);
        }
        b->store_s += now_s() - t1;
        lexical_tf_free(tfs, n_terms);
        free(text);
        if (pass == 0)
            harvest(content + off, content + off + wlen, &b->cands);
    }

    struct store_file row = {
        .path = path,
        .mtime_ns = mtime,
        .size = len,
        .first_chunk = first,
        .n_chunks = (uint32_t)n_win,
    };
    sha256(content, len, row.hash);
    t0 = now_s();
    check(store_file_put(b->t, b->repo, &row), "file put");
    b->store_s += now_s() - t0;
    b->written += n_win;
    b->pending += n_win;
    b->files++;
    if (b->pending >= b->commit_every)
        commit(b);
out:
    free(win);
    free(line_at);
    free(content);
}

struct build_stats {
    double build_s, embed_s, store_s, commit_s;
    size_t files, commits;
};

static void build_store(struct store *store, const char *root, size_t target, size_t n_queries,
                        size_t commit_every, const char *params, struct build_stats *ret)
{
    struct builder b = {.store = store, .target = target, .commit_every = commit_every};
    struct strv files = {0}, queries = {0};
    double t0 = now_s();
    size_t qlen = 0;
    char *qblob;

    walk(root, "", &files);
    if (files.n == 0)
        die("no text files under %s", root);
    qsort(files.v, files.n, sizeof(*files.v), cmp_str);

    check(store_write_begin(store, &b.t), "write begin");
    check(store_repo_get_or_create(b.t, root, &b.repo), "repo create");
    for (unsigned pass = 0; pass < MAX_PASSES && b.written < target; pass++)
        for (size_t i = 0; i < files.n && b.written < target; i++) {
            build_file(&b, root, files.v[i], pass);
            if (isatty(STDERR_FILENO) && b.files % 200 == 0)
                fprintf(stderr, "\rbuilding: %zu/%zu chunks", b.written, target);
        }
    if (isatty(STDERR_FILENO))
        fprintf(stderr, "\r%40s\r", "");
    if (b.written < target)
        die("%s has only %zu chunks of text in %d passes; ask for fewer with --chunks", root,
            b.written, MAX_PASSES);

    pick_queries(&b.cands, n_queries, &queries);
    for (size_t i = 0; i < queries.n; i++)
        qlen += strlen(queries.v[i]) + 1;
    qblob = xmalloc(qlen);
    qlen = 0;
    for (size_t i = 0; i < queries.n; i++) {
        size_t l = strlen(queries.v[i]);
        memcpy(qblob + qlen, queries.v[i], l);
        qblob[qlen + l] = '\n';
        qlen += l + 1;
    }
    if (!b.t)
        check(store_write_begin(store, &b.t), "write begin");
    check(store_repo_set_indexed(b.t, b.repo, 1), "set indexed");
    check(store_meta_put(b.t, META_QUERIES, qblob, qlen), "meta put");
    check(store_meta_put(b.t, META_PARAMS, params, strlen(params)), "meta put");
    commit(&b);
    free(qblob);

    *ret = (struct build_stats){
        .build_s = now_s() - t0,
        .embed_s = b.embed_s,
        .store_s = b.store_s,
        .commit_s = b.commit_s,
        .commits = b.commits,
        .files = b.files,
    };
    strv_release(&queries);
    strv_release(&files);
    strv_release(&b.cands.names);
    strv_release(&b.cands.sentences);
}

/* The queries and repository of a built store; false when it was built with other params. */
static bool load_store(struct store *store, const char *root, const char *params,
                       struct strv *queries, uint32_t *ret_repo)
{
    struct store_txn *t;
    const void *v;
    size_t len;
    bool ok = false;

    check(store_read_begin(store, &t), "read begin");
    if (store_meta_get(t, META_PARAMS, &v, &len) < 0)
        goto out;
    if (len != strlen(params) || memcmp(v, params, len) != 0) {
        fprintf(stderr, "bench-search: the kept store was built with: %.*s\n", (int)len,
                (const char *)v);
        goto out;
    }
    check(store_repo_find(t, root, ret_repo), "repo find");
    check(store_meta_get(t, META_QUERIES, &v, &len), "queries");
    for (const char *p = v, *end = p + len; p < end;) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl)
            nl = end;
        strv_push(queries, xstrndup(p, (size_t)(nl - p)));
        p = nl + 1;
    }
    ok = true;
out:
    store_read_end(t);
    return ok;
}

/* ---- timing -------------------------------------------------------------------------------- */

struct run_spec {
    const char *name;
    enum search_mode mode;
    const char *path_glob, *language;
};

/* The timed runs, in order: three modes, then hybrid with filters. */
static const struct run_spec specs[] = {
    {"hybrid", SEARCH_MODE_HYBRID, NULL, NULL},
    {"semantic", SEARCH_MODE_SEMANTIC, NULL, NULL},
    {"lexical", SEARCH_MODE_LEXICAL, NULL, NULL},
    {"hybrid --path '*.py'", SEARCH_MODE_HYBRID, "*.py", NULL},
    {"hybrid --language python", SEARCH_MODE_HYBRID, NULL, "python"},
    {"hybrid --path email/", SEARCH_MODE_HYBRID, "email/", NULL},
};

struct run_result {
    const char *name;
    double p50, p95, p99, mean, max; /* ms, wall clock */
    double cpu_p50, cpu_p95;         /* ms of this thread's CPU time: robust to a busy machine */
    double mean_hits;
    size_t empty;
};

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of sorted samples. */
static double percentile(const double *sorted, size_t n, double p)
{
    size_t rank = (size_t)ceil(p / 100.0 * (double)n);

    return sorted[rank ? rank - 1 : 0];
}

static int one_search(struct store *store, struct search_cache *cache, uint32_t repo,
                      const struct run_spec *spec, const char *query, const float *qvec, size_t k,
                      FILE *dump, double *ret_ms, double *ret_cpu_ms)
{
    struct search_request req = {
        .repo = repo,
        .query = query,
        .query_vec = spec->mode == SEARCH_MODE_LEXICAL ? NULL : qvec,
        .dim = DIM,
        .k = k,
        .mode = spec->mode,
        .path_glob = spec->path_glob,
        .language = spec->language,
    };
    struct search_hit *hits = NULL;
    double c0 = clock_s(CLOCK_THREAD_CPUTIME_ID), t0 = now_s();
    int n = search_run(store, cache, &req, &hits);
    double t1 = now_s(), c1 = clock_s(CLOCK_THREAD_CPUTIME_ID);

    if (n < 0)
        die("search \"%s\" (%s): %s (%s)", query, spec->name, strerror(-n), store_last_error());
    if (dump) {
        fprintf(dump, "%s\t%s", spec->name, query);
        for (int i = 0; i < n; i++)
            fprintf(dump, "\t%" PRIx64 ":%.6g", hits[i].chunk_id, hits[i].score);
        fputc('\n', dump);
    }
    search_hits_free(hits, (size_t)n);
    *ret_ms = (t1 - t0) * 1e3;
    *ret_cpu_ms = (c1 - c0) * 1e3;
    return n;
}

static void run_mode(struct store *store, struct search_cache *cache, uint32_t repo,
                     const struct run_spec *spec, const struct strv *queries, const float *qvecs,
                     size_t k, unsigned warmup, unsigned repeat, FILE *dump, struct run_result *ret)
{
    size_t n = queries->n * repeat, hits = 0, empty = 0;
    double *ms = xmalloc(n * sizeof(*ms)), *cpu = xmalloc(n * sizeof(*cpu));
    double sum = 0, dummy, dummy_cpu;

    for (unsigned w = 0; w < warmup; w++)
        for (size_t i = 0; i < queries->n; i++)
            one_search(store, cache, repo, spec, queries->v[i], qvecs + i * DIM, k, NULL, &dummy,
                       &dummy_cpu);
    for (size_t j = 0; j < n; j++) {
        size_t i = j % queries->n;
        int h = one_search(store, cache, repo, spec, queries->v[i], qvecs + i * DIM, k,
                           j < queries->n ? dump : NULL, &ms[j], &cpu[j]);
        hits += (size_t)h;
        empty += h == 0;
        sum += ms[j];
    }
    qsort(ms, n, sizeof(*ms), cmp_double);
    qsort(cpu, n, sizeof(*cpu), cmp_double);
    *ret = (struct run_result){
        .name = spec->name,
        .p50 = percentile(ms, n, 50),
        .p95 = percentile(ms, n, 95),
        .p99 = percentile(ms, n, 99),
        .mean = sum / (double)n,
        .max = ms[n - 1],
        .cpu_p50 = percentile(cpu, n, 50),
        .cpu_p95 = percentile(cpu, n, 95),
        .mean_hits = (double)hits / (double)n,
        .empty = empty,
    };
    free(ms);
    free(cpu);
}

/* ---- lexical work ------------------------------------------------------------------------ */

struct qterm_ctx {
    struct strv terms;
};

static int collect_term(void *userdata, const char *term, size_t len)
{
    struct qterm_ctx *q = userdata;

    for (size_t i = 0; i < q->terms.n; i++)
        if (strcmp(q->terms.v[i], term) == 0)
            return 0;
    strv_push(&q->terms, xstrndup(term, len));
    return 0;
}

/* Postings a BM25 search of each query reads (sum of its distinct terms' df), sorted. */
static double *postings_per_query(struct store *store, uint32_t repo, const struct strv *queries)
{
    double *n = xmalloc(queries->n * sizeof(*n));
    struct store_txn *t;

    check(store_read_begin(store, &t), "read begin");
    for (size_t i = 0; i < queries->n; i++) {
        struct qterm_ctx q = {0};
        n[i] = 0;
        lexical_terms(queries->v[i], strlen(queries->v[i]), collect_term, &q);
        for (size_t j = 0; j < q.terms.n; j++) {
            uint64_t df = 0;
            check(store_postings_df(t, repo, q.terms.v[j], &df), "df");
            n[i] += (double)df;
        }
        strv_release(&q.terms);
    }
    store_read_end(t);
    qsort(n, queries->n, sizeof(*n), cmp_double);
    return n;
}

/* ---- main ---------------------------------------------------------------------------------- */

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path);
}

/* The temporary store directory, removed at exit (also after die()); NULL with --keep. */
static char *temp_dir;

static void remove_temp_dir(void)
{
    if (temp_dir)
        nftw(temp_dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static char *default_root(void)
{
    const char *env = getenv("COARCH_BENCH_CORPUS");
    char buf[PATH_MAX] = "";
    FILE *p;

    if (env && *env)
        return xstrdup(env);
    p = popen("python3 -c 'import sysconfig; print(sysconfig.get_paths()[\"stdlib\"])' "
              "2>/dev/null",
              "r");
    if (!p || !fgets(buf, sizeof(buf), p))
        die("no corpus: pass a directory, set COARCH_BENCH_CORPUS, or install python3");
    pclose(p);
    buf[strcspn(buf, "\n")] = '\0';
    return xstrdup(buf);
}

static void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            fprintf(f, "\\%c", *s);
        else if ((unsigned char)*s < 0x20)
            fprintf(f, "\\u%04x", *s);
        else
            fputc(*s, f);
    }
    fputc('"', f);
}

static const char *option_name(const struct option *opts, int c)
{
    static char buf[32];

    for (; opts->name; opts++)
        if (opts->val == c) {
            snprintf(buf, sizeof(buf), "--%s", opts->name);
            return buf;
        }
    snprintf(buf, sizeof(buf), "-%c", c);
    return buf;
}

static void usage(FILE *f)
{
    fputs("usage: bench-search [options] [CORPUS_DIR]\n"
          "  --chunks N        chunks in the store (default 100000)\n"
          "  --queries N       queries (default 200)\n"
          "  -k K              results per query (default 10)\n"
          "  --warmup N        untimed passes over the queries per mode (default 1)\n"
          "  --repeat N        timed passes over the queries per mode (default 1)\n"
          "  --only MODE       run only the mode named MODE (as printed, e.g. lexical)\n"
          "  --commit-every N  chunks per write transaction while building (default 4000)\n"
          "  --keep DIR        build the store in DIR and keep it; reuse it if it is there\n"
          "  --dump FILE       write every query's results (ids and scores) to FILE\n"
          "  --json            print one JSON object instead of a table\n"
          "CORPUS_DIR defaults to $COARCH_BENCH_CORPUS, else python3's stdlib directory.\n",
          f);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"chunks", required_argument, NULL, 'n'},
        {"queries", required_argument, NULL, 'q'},
        {"warmup", required_argument, NULL, 'w'},
        {"repeat", required_argument, NULL, 'r'},
        {"only", required_argument, NULL, 'o'},
        {"commit-every", required_argument, NULL, 'c'},
        {"keep", required_argument, NULL, 'K'},
        {"dump", required_argument, NULL, 'd'},
        {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    size_t target = 100000, n_queries = 200, k = 10, commit_every = 4000;
    unsigned warmup = 1, repeat = 1;
    const char *keep = NULL, *dump_path = NULL, *only = NULL;
    bool json = false, built = false;
    char *root, *dir, params[PATH_MAX + 128];
    struct build_stats bs = {0};
    struct strv queries = {0};
    struct store *store = NULL;
    struct search_cache *cache;
    FILE *dump = NULL;
    uint32_t repo = 0;
    int c, r;

    while ((c = getopt_long(argc, argv, "k:h", opts, NULL)) >= 0) {
        char *end;
        unsigned long long v = 0;

        if (c == 'n' || c == 'q' || c == 'w' || c == 'r' || c == 'c' || c == 'k') {
            errno = 0;
            v = strtoull(optarg, &end, 10);
            if (errno || *end || end == optarg)
                die("%s: not a number: %s", option_name(opts, c), optarg);
        }
        switch (c) {
        case 'n':
            if (v < 100 || v > 10000000)
                die("--chunks must be 100..10000000");
            target = v;
            break;
        case 'q':
            if (v < 1 || v > 100000)
                die("--queries must be 1..100000");
            n_queries = v;
            break;
        case 'k':
            if (v < 1 || v > SEARCH_MAX_K)
                die("-k must be 1..%d", SEARCH_MAX_K);
            k = v;
            break;
        case 'w':
            warmup = (unsigned)MIN(v, 100ull);
            break;
        case 'r':
            if (v < 1 || v > 100)
                die("--repeat must be 1..100");
            repeat = (unsigned)v;
            break;
        case 'o':
            only = optarg;
            break;
        case 'c':
            if (v < 1)
                die("--commit-every must be >= 1");
            commit_every = v;
            break;
        case 'K':
            keep = optarg;
            break;
        case 'd':
            dump_path = optarg;
            break;
        case 'j':
            json = true;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind + 1 < argc) {
        usage(stderr);
        return 2;
    }
    if (only) {
        size_t i = 0;
        while (i < ELEMENTSOF(specs) && strcmp(only, specs[i].name) != 0)
            i++;
        if (i == ELEMENTSOF(specs))
            die("--only: no mode named \"%s\"", only);
    }
    {
        char *given = optind < argc ? xstrdup(argv[optind]) : default_root();
        root = realpath(given, NULL);
        if (!root)
            die("%s: %s", given, strerror(errno));
        free(given);
    }
    snprintf(params, sizeof(params), "root=%s chunks=%zu queries=%zu window=%d dim=%d", root,
             target, n_queries, WINDOW_LINES, DIM);

    if (keep) {
        if (mkdir(keep, 0700) < 0 && errno != EEXIST)
            die("%s: %s", keep, strerror(errno));
        dir = xstrdup(keep);
    } else {
        dir = xstrdup("/tmp/coarch-bench-XXXXXX");
        if (!mkdtemp(dir))
            die("mkdtemp: %s", strerror(errno));
        temp_dir = dir;
        atexit(remove_temp_dir);
    }
    r = store_open(dir, NULL, &store);
    if (r < 0)
        die("opening the store in %s: %s", dir, store_last_error());
    if (!keep || !load_store(store, root, params, &queries, &repo)) {
        struct store_txn *t;
        uint32_t existing;
        check(store_read_begin(store, &t), "read begin");
        r = store_repo_find(t, root, &existing);
        store_read_end(t);
        if (r == 0)
            die("%s holds a store built with other parameters; remove it first", dir);
        if (!json)
            fprintf(stderr, "building a store of %zu chunks from %s in %s\n", target, root, dir);
        build_store(store, root, target, n_queries, commit_every, params, &bs);
        built = true;
        if (!load_store(store, root, params, &queries, &repo))
            die("the store just built does not read back");
    }

    /* Embed the queries. */
    float *qvecs = xmalloc(queries.n * DIM * sizeof(float));
    for (size_t i = 0; i < queries.n; i++)
        embed_text(queries.v[i], qvecs + i * DIM);

    if (dump_path) {
        dump = fopen(dump_path, "we");
        if (!dump)
            die("%s: %s", dump_path, strerror(errno));
    }

    /* Cold: the first query builds the cache's vector set. */
    struct run_result res[ELEMENTSOF(specs)];
    double cold_ms, cold_cpu_ms;
    cache = search_cache_new();
    if (!cache)
        die("out of memory");
    one_search(store, cache, repo, &specs[0], queries.v[0], qvecs, k, NULL, &cold_ms, &cold_cpu_ms);
    size_t cache_bytes = search_cache_memory(cache);

    for (size_t i = 0; i < ELEMENTSOF(specs); i++) {
        res[i] = (struct run_result){0};
        if (!only || strcmp(only, specs[i].name) == 0)
            run_mode(store, cache, repo, &specs[i], &queries, qvecs, k, warmup, repeat, dump,
                     &res[i]);
    }

    /* Sizes. */
    struct store_stat ss;
    struct stat st;
    char data[PATH_MAX + 16];
    struct rusage ru;
    check(store_stat(store, &ss), "stat");
    snprintf(data, sizeof(data), "%s/data.mdb", dir);
    if (stat(data, &st) < 0)
        die("%s: %s", data, strerror(errno));
    getrusage(RUSAGE_SELF, &ru);
    double disk_mib = (double)st.st_blocks * 512 / (1 << 20);
    double used_mib = (double)ss.used_bytes / (1 << 20);
    double cache_mib = (double)cache_bytes / (1 << 20);
    double *postings = postings_per_query(store, repo, &queries);
    double post_p50 = percentile(postings, queries.n, 50),
           post_p95 = percentile(postings, queries.n, 95), post_max = postings[queries.n - 1];
    free(postings);

    if (json) {
        printf("{\"chunks\":%zu,\"queries\":%zu,\"k\":%zu,\"warmup\":%u,\"repeat\":%u,"
               "\"corpus\":",
               target, queries.n, k, warmup, repeat);
        json_str(stdout, root);
        printf(",\"built\":%s", built ? "true" : "false");
        if (built)
            printf(",\"build_s\":%.3f,\"embed_s\":%.3f,\"store_write_s\":%.3f,"
                   "\"store_commit_s\":%.3f,\"commits\":%zu,"
                   "\"store_chunks_per_s\":%.1f,\"files\":%zu",
                   bs.build_s, bs.embed_s, bs.store_s, bs.commit_s, bs.commits,
                   (double)target / bs.store_s, bs.files);
        printf(",\"store_disk_mib\":%.1f,\"store_used_mib\":%.1f,\"cache_mib\":%.2f,"
               "\"cold_query_ms\":%.3f,\"cold_query_cpu_ms\":%.3f,\"max_rss_mib\":%.1f,"
               "\"postings_per_query_p50\":%.0f,\"postings_per_query_p95\":%.0f,"
               "\"postings_per_query_max\":%.0f,\"modes\":[",
               disk_mib, used_mib, cache_mib, cold_ms, cold_cpu_ms, (double)ru.ru_maxrss / 1024,
               post_p50, post_p95, post_max);
        for (size_t i = 0, first = 1; i < ELEMENTSOF(specs); i++) {
            if (!res[i].name)
                continue;
            printf("%s{\"name\":", first ? "" : ",");
            first = 0;
            json_str(stdout, res[i].name);
            printf(",\"p50_ms\":%.3f,\"p95_ms\":%.3f,\"p99_ms\":%.3f,\"mean_ms\":%.3f,"
                   "\"max_ms\":%.3f,\"cpu_p50_ms\":%.3f,\"cpu_p95_ms\":%.3f,"
                   "\"mean_hits\":%.2f,\"empty\":%zu}",
                   res[i].p50, res[i].p95, res[i].p99, res[i].mean, res[i].max, res[i].cpu_p50,
                   res[i].cpu_p95, res[i].mean_hits, res[i].empty);
        }
        printf("]}\n");
    } else {
        printf("corpus        %s\n", root);
        printf("store         %s: %zu chunks, %.1f MiB on disk (%.1f MiB of pages in use)\n", dir,
               target, disk_mib, used_mib);
        if (built)
            printf("build         %.1f s for %zu files: store writes %.1f s (%.0f chunks/s; "
                   "%.1f s in %zu commits), terms+pseudo-embedding %.1f s\n",
                   bs.build_s, bs.files, bs.store_s, (double)target / bs.store_s, bs.commit_s,
                   bs.commits, bs.embed_s);
        printf("cache         %.1f MiB (search_cache_memory); cold first query %.1f ms "
               "(%.1f ms cpu)\n",
               cache_mib, cold_ms, cold_cpu_ms);
        printf("postings      read by BM25 per query: p50 %.0f, p95 %.0f, max %.0f\n", post_p50,
               post_p95, post_max);
        printf("queries       %zu, k=%zu, %u warm-up and %u timed pass(es) per mode; "
               "max RSS %.0f MiB\n\n",
               queries.n, k, warmup, repeat, (double)ru.ru_maxrss / 1024);
        printf("%-26s %7s %7s %7s %7s %7s %7s %7s %5s %5s\n", "mode (wall ms; cpu ms)", "p50",
               "p95", "p99", "mean", "max", "cpu p50", "cpu p95", "hits", "empty");
        for (size_t i = 0; i < ELEMENTSOF(specs); i++)
            if (res[i].name)
                printf("%-26s %7.2f %7.2f %7.2f %7.2f %7.2f %7.2f %7.2f %5.1f %5zu\n", res[i].name,
                       res[i].p50, res[i].p95, res[i].p99, res[i].mean, res[i].max, res[i].cpu_p50,
                       res[i].cpu_p95, res[i].mean_hits, res[i].empty);
    }

    if (dump)
        fclose(dump);
    free(qvecs);
    search_cache_free(cache);
    store_free(store);
    remove_temp_dir();
    temp_dir = NULL;
    strv_release(&queries);
    free(dir);
    free(root);
    return 0;
}
