/*
 * test-crash-resume.c - kill -9 coarchd at several random points of an indexing job, restart
 * it on the same data directory each time, let it finish, and check that the index equals the
 * one an uninterrupted run builds.
 *
 * Run A indexes a generated corpus (indexing.h: seeded C and Python files) with the tiny test
 * model in one go.  Run B indexes the SAME directory into a fresh data directory, and SIGKILLs
 * coarchd COARCH_TEST_CRASH_KILLS times (default 6, at least 5) at moments drawn from a seeded
 * generator (COARCH_TEST_SEED, printed first, replays a run's plan; timing still varies):
 *   - scan:       while the job reports phase "scanning" (the first kill, before any checkpoint,
 *                 so the job row is still "queued"); when the phase is missed, at the first
 *                 observation of "embedding";
 *   - early:      the first observation of a session's "embedding" phase: files are being read
 *                 and chunked, no batch of the session is done yet;
 *   - checkpoint: once the job has reached a random point between 8% and 88% of its chunks
 *                 (sorted over the plan; a point already passed means after one batch), right
 *                 after the next checkpoint is reported;
 *   - progress:   at such a point, wherever the batch loop is.
 * At least one kill must land before its session embedded anything (scan or early, as seen in
 * the last `jobs` answer before the kill).
 * The daemon runs with COARCH_CHECKPOINT_FREQUENCY=2, so there are tens of checkpoints and most
 * kills lose embedded but uncommitted work that the next session redoes in other batches.
 * After every restart `jobs` must show the same job, "resumed", queued or running, and no other
 * job: the daemon re-queues it by itself, the test never calls `index` again.
 *
 * What is checked, through the store API (daemon/store/) on the LMDB environments of stopped
 * daemons, opened read-only:
 *  - after every kill: the store is consistent (below) and is a subset of run A's index: every
 *    committed file row, with its chunk ids, chunk rows and vectors, equals run A's; every file
 *    committed before an earlier kill is still there with the same row (nothing lost, nothing
 *    redone); the job row is queued or running and counts exactly the files and chunks the
 *    store holds (a resumed run starts from those counts);
 *  - at the end: run B's index equals run A's: repository counters, the file table (path,
 *    content hash, mtime, size, chunk id range), every chunk (id, path, line range, byte range,
 *    content hash, language, symbol), its vector (within rounding, see "Vectors"), its BM25
 *    length, and the postings lists of
 *    every term of the corpus (chunk id, tf, length; df); the job rows agree (done, files and
 *    chunks done);
 *  - consistency (both runs, every crash point): each file's chunk id range holds a chunk row, a
 *    vector and a lexical document for every id and nothing else; ranges do not overlap; the
 *    vector table has no row outside the ranges (no orphan vectors); no chunk, vector or lexical
 *    row exists for any other id the repository could have allocated (probed id by id); a
 *    file's chunks in id order go forward through it; the repository's counters match;
 *  - through the daemon: the resumed job ends "done" with chunks_done and files_done equal to
 *    run A's, and searches return the same results (paths, lines, scores within rounding) as
 *    run A's daemon did.
 *
 * Chunk ids.  Ids come from a per-repository counter stored in the repo row and committed in
 * the same transaction as the files that use them, files are indexed in the scan's sorted path
 * order, and a resumed job skips exactly the files committed before the kill.  So the resumed
 * job allocates the ids of the first uncommitted file exactly as the uninterrupted run did, and
 * ids must be EQUAL, not merely the same set of contents; the test compares them directly.
 *
 * Vectors.  They cannot be required bitwise equal, and the test does not: a chunk's vector
 * depends on its batch in the last bits.  The CPU backend packs a batch without padding, and
 * attention, layer norm and pooling work per sequence, but OpenBLAS computes a product with few
 * rows through another kernel than a larger one (0.3.21 on this Cooper Lake machine, A[M,K] x
 * W[N,K]^T: rows of an M <= 18 product differ from the same rows in a big one for the tiny
 * model's 64 x 64 weights, M <= 3 for MiniLM's 384 x 384), and the backend runs each GEMM once
 * per worker thread over that thread's sequences, and the FFN in 512-row pieces, so the M a
 * token's row goes through depends on what else is in the batch.  A resumed job cuts its
 * batches differently, so some vectors differ by an ulp or so (one run: 258 of 32,697 vector
 * comparisons, max component difference 4.5e-8, cosine 1.000000000).  Vectors are compared
 * within VEC_MAX_DIFF and VEC_MIN_COSINE, far tighter than any real change of input; the test
 * prints how many were bitwise equal, and first probes run A's daemon directly (`embed` a
 * text alone and amid fillers) so the effect is shown to be rounding and nothing else.
 *
 * Progress.  A resumed job's chunks_done and files_done go on from its checkpointed job row
 * (the indexer seeds them from it; the row holds the committed counts), so the job ends with
 * the same counts as run A's and the row equals the store's contents at every crash point.
 *
 * Knobs: COARCH_TEST_SEED, COARCH_TEST_CRASH_KILLS, COARCH_TEST_CRASH_FILES (default 800 files,
 * ~9,800 chunks).  Measured on the shared 2-core machine: about 25 s in all (run A ~9 s, run B
 * with 6 kills ~10 s, the rest model generation and comparisons).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "helpers.h"
#include "indexing.h"
#include "lexical.h"
#include "store-chunk.h"
#include "store-job.h"
#include "store-repo.h"
#include "test.h"

#define DEFAULT_FILES 800
#define CORPUS_SEED 77
#define DEFAULT_KILLS 6
#define MIN_KILLS 5
#define JOB_TIMEOUT_MS (300 * 1000)
#define START_TIMEOUT_MS 20000

/* ---- configuration and randomness -------------------------------------------------------- */

static uint64_t env_u64(const char *name, uint64_t def, uint64_t min, uint64_t max)
{
    const char *v = getenv(name);
    unsigned long long n;
    char *end;

    if (!v || !v[0])
        return def;
    errno = 0;
    n = strtoull(v, &end, 0);
    if (errno || *end || n < min || n > max)
        test_fail(__FILE__, __LINE__, "%s=\"%s\": expected a number in %" PRIu64 "..%" PRIu64, name,
                  v, min, max);
    return n;
}

static uint64_t rng_state;

static uint64_t rng_next(void)
{
    /* splitmix64: a plan is reproducible from the printed seed. */
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static double rng_unit(void)
{
    return (double)(rng_next() >> 11) / 9007199254740992.0;
}

static unsigned rng_int(unsigned n)
{
    return (unsigned)(rng_next() % n);
}

/* ---- snapshots of an index, read through the store API ----------------------------------- */

/* The job states daemon/sched/indexer.h stores in the jobs table (its enum job_state). */
enum {
    JOB_QUEUED = 0,
    JOB_RUNNING = 1,
    JOB_DONE = 2,
};

static const char *job_state_name(uint32_t state)
{
    static const char *const names[] = {"queued", "running", "done", "failed", "cancelled"};

    return state < 5 ? names[state] : "unknown";
}

struct snap_file {
    char *path;
    uint8_t hash[STORE_HASH_SIZE];
    int64_t mtime_ns;
    uint64_t size, first_chunk;
    uint32_t n_chunks;
};

struct snap_chunk {
    uint64_t id;
    char *path, *language, *symbol;
    uint32_t start_line, end_line, text_len;
    uint64_t text_offset;
    uint8_t hash[STORE_HASH_SIZE];
    uint32_t dim;
    float *vec;
    uint32_t doc_len;
};

struct snap {
    uint32_t repo_id;
    uint64_t n_files, n_chunks, n_vectors, n_lex_docs, sum_doc_len;
    struct snap_file *files; /* path order */
    size_t n_file_rows, cap_files;
    struct snap_chunk *chunks; /* id order */
    size_t n_chunk_rows, cap_chunks;
    struct store_job job;
    bool has_job;
    /* A file part written at the kill (store-chunk.h: staged, hidden, dropped on resume). */
    uint64_t staged_first;
    uint32_t staged_n;
    uint64_t staged_rows; /* chunk rows present in the staged range */
};

static void snap_release(struct snap *s)
{
    for (size_t i = 0; i < s->n_file_rows; i++)
        free(s->files[i].path);
    for (size_t i = 0; i < s->n_chunk_rows; i++) {
        free(s->chunks[i].path);
        free(s->chunks[i].language);
        free(s->chunks[i].symbol);
        free(s->chunks[i].vec);
    }
    free(s->files);
    free(s->chunks);
    memset(s, 0, sizeof(*s));
}

static char *xstrdup(const char *s)
{
    char *d = strdup(s ? s : "");

    ASSERT_TRUE(d != NULL);
    return d;
}

static void *xgrow(void *p, size_t *cap, size_t want, size_t size)
{
    if (want > *cap) {
        size_t ncap = *cap ? *cap * 2 : 64;

        while (ncap < want)
            ncap *= 2;
        p = realloc(p, ncap * size);
        ASSERT_TRUE(p != NULL);
        *cap = ncap;
    }
    return p;
}

static int on_file_row(void *userdata, const struct store_file *f)
{
    struct snap *s = userdata;
    struct snap_file *sf;

    s->files = xgrow(s->files, &s->cap_files, s->n_file_rows + 1, sizeof(*s->files));
    sf = &s->files[s->n_file_rows++];
    sf->path = xstrdup(f->path);
    memcpy(sf->hash, f->hash, sizeof(sf->hash));
    sf->mtime_ns = f->mtime_ns;
    sf->size = f->size;
    sf->first_chunk = f->first_chunk;
    sf->n_chunks = f->n_chunks;
    return 0;
}

static int cmp_chunk_id(const void *a, const void *b)
{
    uint64_t x = ((const struct snap_chunk *)a)->id, y = ((const struct snap_chunk *)b)->id;

    return x < y ? -1 : x > y;
}

static const struct snap_chunk *snap_find(const struct snap *s, uint64_t id)
{
    struct snap_chunk key = {.id = id};

    if (s->n_chunk_rows == 0)
        return NULL;
    return bsearch(&key, s->chunks, s->n_chunk_rows, sizeof(*s->chunks), cmp_chunk_id);
}

struct vec_walk {
    const struct snap *s;
    uint64_t n, orphans, first_orphan;
};

static int on_vector(void *userdata, uint64_t id, const float *v, uint32_t dim)
{
    struct vec_walk *w = userdata;
    const struct snap_chunk *c = snap_find(w->s, id);

    w->n++;
    if (!c || c->dim != dim || memcmp(c->vec, v, dim * sizeof(float)) != 0) {
        if (!w->orphans)
            w->first_orphan = id;
        w->orphans++;
    }
    return 0;
}

/*
 * Reads repository `repo_path` of the environment in `dir` into *ret and asserts the
 * consistency rules of the header.  `probe` is how many ids past the largest used one are
 * probed for orphan rows.  `what` names the snapshot in failure messages.
 */
static void snap_load(const char *dir, const char *repo_path, uint64_t job_id, uint64_t probe,
                      const char *what, struct snap *ret)
{
    struct store_options o;
    struct store *st = NULL;
    struct store_txn *t = NULL;
    struct store_repo repo;
    struct snap s = {0};
    struct vec_walk w = {.s = &s};
    float *buf = malloc(STORE_MAX_DIM * sizeof(float));
    uint64_t max_seq = 0, n_docs = 0, sum_doc = 0;
    int r;

    ASSERT_TRUE(buf != NULL);
    store_options_init(&o);
    o.read_only = true;
    r = store_open(dir, &o, &st);
    if (r < 0)
        test_fail(__FILE__, __LINE__, "%s: cannot open %s: %s", what, dir, store_last_error());
    ASSERT_OK(store_read_begin(st, &t));
    ASSERT_OK(store_repo_find(t, repo_path, &s.repo_id));
    ASSERT_OK(store_repo_get(t, s.repo_id, &repo));
    s.n_files = repo.n_files;
    s.n_chunks = repo.n_chunks;
    s.n_vectors = repo.n_vectors;
    s.n_lex_docs = repo.n_lex_docs;
    s.sum_doc_len = repo.sum_doc_len;
    ASSERT_OK(store_file_foreach(t, s.repo_id, NULL, on_file_row, &s));

    /* Every id of every file's range has a chunk row (of that file), a vector and a document. */
    for (size_t i = 0; i < s.n_file_rows; i++) {
        const struct snap_file *f = &s.files[i];

        if (f->n_chunks == 0) {
            ASSERT_EQ(f->first_chunk, 0);
            continue;
        }
        ASSERT_EQ(STORE_CHUNK_REPO(f->first_chunk), s.repo_id);
        for (uint32_t k = 0; k < f->n_chunks; k++) {
            struct store_chunk c;
            struct snap_chunk *sc;
            uint64_t id = f->first_chunk + k;
            uint32_t dim = 0;

            r = store_chunk_get(t, id, &c);
            if (r < 0)
                test_fail(__FILE__, __LINE__, "%s: %s: chunk %" PRIu64 " (%u of %u) has no row",
                          what, f->path, id, k, f->n_chunks);
            ASSERT_STREQ(c.path, f->path);
            s.chunks = xgrow(s.chunks, &s.cap_chunks, s.n_chunk_rows + 1, sizeof(*s.chunks));
            sc = &s.chunks[s.n_chunk_rows++];
            memset(sc, 0, sizeof(*sc));
            sc->id = id;
            sc->path = xstrdup(c.path);
            sc->language = xstrdup(c.language);
            sc->symbol = xstrdup(c.symbol);
            sc->start_line = c.start_line;
            sc->end_line = c.end_line;
            sc->text_offset = c.text_offset;
            sc->text_len = c.text_len;
            memcpy(sc->hash, c.hash, sizeof(sc->hash));
            r = store_vector_get(t, id, buf, STORE_MAX_DIM, &dim);
            if (r < 0)
                test_fail(__FILE__, __LINE__, "%s: %s: chunk %" PRIu64 " has no vector", what,
                          f->path, id);
            sc->dim = dim;
            sc->vec = malloc(dim * sizeof(float));
            ASSERT_TRUE(sc->vec != NULL);
            memcpy(sc->vec, buf, dim * sizeof(float));
            /* Every generated chunk has words, so every chunk has a lexical document. */
            r = store_postings_doc_len(t, id, &sc->doc_len);
            if (r < 0)
                test_fail(__FILE__, __LINE__, "%s: %s: chunk %" PRIu64 " has no postings", what,
                          f->path, id);
            n_docs++;
            sum_doc += sc->doc_len;
            if ((id & ((1ULL << STORE_CHUNK_SEQ_BITS) - 1)) > max_seq)
                max_seq = id & ((1ULL << STORE_CHUNK_SEQ_BITS) - 1);
        }
    }
    /* (qsort and bsearch take no NULL array, not even an empty one: UBSan says so.) */
    if (s.n_chunk_rows > 0)
        qsort(s.chunks, s.n_chunk_rows, sizeof(*s.chunks), cmp_chunk_id);
    for (size_t i = 1; i < s.n_chunk_rows; i++)
        if (s.chunks[i].id == s.chunks[i - 1].id)
            test_fail(__FILE__, __LINE__, "%s: chunk %" PRIu64 " is in two files' ranges", what,
                      s.chunks[i].id);

    /* A file part written when the kill came is staged: its range is the last the repository
     * allocated, its chunks that exist are whole (row, vector, lexical document), and they
     * are no file's, so the walks below must not see them. */
    r = store_chunk_staged(t, s.repo_id, &s.staged_first, &s.staged_n);
    if (r == 0) {
        ASSERT_EQ(STORE_CHUNK_REPO(s.staged_first), s.repo_id);
        if ((s.staged_first & ((1ULL << STORE_CHUNK_SEQ_BITS) - 1)) <= max_seq)
            test_fail(__FILE__, __LINE__, "%s: staged range %" PRIu64 "+%u is not past the files'",
                      what, s.staged_first, s.staged_n);
        for (uint64_t id = s.staged_first; id < s.staged_first + s.staged_n; id++) {
            struct store_chunk c;
            uint32_t dl, dim;

            r = store_chunk_get(t, id, &c);
            if (r == -ENOENT)
                continue;
            ASSERT_OK(r);
            ASSERT_OK(store_vector_get(t, id, buf, STORE_MAX_DIM, &dim));
            ASSERT_OK(store_postings_doc_len(t, id, &dl));
            s.staged_rows++;
            n_docs++;
            sum_doc += dl;
        }
        if (s.staged_rows == 0)
            test_fail(__FILE__, __LINE__, "%s: an empty staged range", what);
    } else {
        ASSERT_EQ(r, -ENOENT);
    }

    /* No vector outside the ranges, and each equals the one read by id. */
    ASSERT_OK(store_vector_foreach(t, s.repo_id, on_vector, &w));
    if (w.orphans)
        test_fail(__FILE__, __LINE__,
                  "%s: %" PRIu64 " vector rows belong to no file's chunk (first: %" PRIu64 ")",
                  what, w.orphans, w.first_orphan);
    ASSERT_EQ(w.n, s.n_chunk_rows);

    /* No chunk row, vector or lexical document for any other id the repo could have used. */
    for (uint64_t seq = 1; seq <= max_seq + probe; seq++) {
        uint64_t id = (uint64_t)s.repo_id << STORE_CHUNK_SEQ_BITS | seq;
        struct store_chunk c;
        uint32_t dl, dim;

        if (snap_find(&s, id) || (id >= s.staged_first && id < s.staged_first + s.staged_n))
            continue;
        if (store_chunk_get(t, id, &c) != -ENOENT ||
            store_vector_get(t, id, buf, STORE_MAX_DIM, &dim) != -ENOENT ||
            store_postings_doc_len(t, id, &dl) != -ENOENT)
            test_fail(__FILE__, __LINE__,
                      "%s: orphan rows for chunk id %" PRIu64 " (seq %" PRIu64
                      ", used ids end at %" PRIu64 ")",
                      what, id, seq, max_seq);
    }

    /* A file's chunks, in id order, walk forward through it (chunk.h: chunks are in file order;
     * the units of one group share its lines, so equal ranges are legitimate).  A file written
     * twice would show as a second id range, which the range checks above refuse. */
    for (size_t i = 1; i < s.n_chunk_rows; i++)
        if (strcmp(s.chunks[i - 1].path, s.chunks[i].path) == 0 &&
            s.chunks[i].start_line < s.chunks[i - 1].start_line)
            test_fail(__FILE__, __LINE__,
                      "%s: chunk %" PRIu64 " (%s:%u-%u) goes back before chunk %" PRIu64
                      " (lines %u-%u)",
                      what, s.chunks[i].id, s.chunks[i].path, s.chunks[i].start_line,
                      s.chunks[i].end_line, s.chunks[i - 1].id, s.chunks[i - 1].start_line,
                      s.chunks[i - 1].end_line);

    /* The repository's counters agree with the rows. */
    ASSERT_EQ(s.n_files, s.n_file_rows);
    ASSERT_EQ(s.n_chunks, s.n_chunk_rows + s.staged_rows);
    ASSERT_EQ(s.n_vectors, s.n_chunk_rows + s.staged_rows);
    ASSERT_EQ(s.n_lex_docs, n_docs);
    ASSERT_EQ(s.sum_doc_len, sum_doc);

    r = store_job_get(t, job_id, &s.job);
    s.has_job = r == 0;
    s.job.cursor = NULL;
    s.job.cursor_len = 0;
    store_read_end(t);
    store_free(st);
    free(buf);
    *ret = s;
}

static const struct snap_file *snap_file_find(const struct snap *s, const char *path)
{
    for (size_t i = 0; i < s->n_file_rows; i++)
        if (strcmp(s->files[i].path, path) == 0)
            return &s->files[i];
    return NULL;
}

static void expect_same_file(const struct snap_file *a, const struct snap_file *b, const char *what)
{
    if (memcmp(a->hash, b->hash, sizeof(a->hash)) != 0 || a->mtime_ns != b->mtime_ns ||
        a->size != b->size || a->first_chunk != b->first_chunk || a->n_chunks != b->n_chunks)
        test_fail(__FILE__, __LINE__,
                  "%s: file %s differs: first chunk %" PRIu64 " vs %" PRIu64
                  ", %u vs %u chunks, size %" PRIu64 " vs %" PRIu64 ", mtime %" PRId64
                  " vs %" PRId64 "%s",
                  what, a->path, a->first_chunk, b->first_chunk, a->n_chunks, b->n_chunks, a->size,
                  b->size, a->mtime_ns, b->mtime_ns,
                  memcmp(a->hash, b->hash, sizeof(a->hash)) ? ", content hash differs" : "");
}

/*
 * Vectors of one chunk computed in batches of different composition differ in the last bits
 * (see the header): a few float ulps, amplified a little by the layers after the GEMM that
 * rounded differently.  Anything beyond these bounds is a different input, not rounding.
 */
#define VEC_MAX_DIFF 1e-5
#define VEC_MIN_COSINE (1 - 1e-6)

static struct {
    uint64_t compared, bitwise;
    double max_diff, min_cosine;
} vec_stats = {.min_cosine = 1};

static double cosine(const float *a, const float *b, uint32_t n)
{
    double ab = 0, aa = 0, bb = 0;

    for (uint32_t i = 0; i < n; i++) {
        ab += (double)a[i] * b[i];
        aa += (double)a[i] * a[i];
        bb += (double)b[i] * b[i];
    }
    return aa > 0 && bb > 0 ? ab / sqrt(aa * bb) : 0;
}

static void expect_same_chunk(const struct snap_chunk *a, const struct snap_chunk *b,
                              const char *what)
{
    if (a->id != b->id || strcmp(a->path, b->path) != 0 || strcmp(a->language, b->language) ||
        strcmp(a->symbol, b->symbol) || a->start_line != b->start_line ||
        a->end_line != b->end_line || a->text_offset != b->text_offset ||
        a->text_len != b->text_len || memcmp(a->hash, b->hash, sizeof(a->hash)) != 0 ||
        a->doc_len != b->doc_len)
        test_fail(__FILE__, __LINE__,
                  "%s: chunk %" PRIu64 " %s:%u-%u [%s] \"%s\" (%u terms) differs from %" PRIu64
                  " %s:%u-%u [%s] \"%s\" (%u terms)",
                  what, a->id, a->path, a->start_line, a->end_line, a->language, a->symbol,
                  a->doc_len, b->id, b->path, b->start_line, b->end_line, b->language, b->symbol,
                  b->doc_len);
    ASSERT_EQ(a->dim, b->dim);
    vec_stats.compared++;
    if (memcmp(a->vec, b->vec, a->dim * sizeof(float)) == 0) {
        vec_stats.bitwise++;
    } else {
        double maxd = 0, cos = cosine(a->vec, b->vec, a->dim);

        for (uint32_t i = 0; i < a->dim; i++)
            maxd = fmax(maxd, fabs((double)a->vec[i] - b->vec[i]));
        vec_stats.max_diff = fmax(vec_stats.max_diff, maxd);
        vec_stats.min_cosine = fmin(vec_stats.min_cosine, cos);
        if (maxd > VEC_MAX_DIFF || cos < VEC_MIN_COSINE)
            test_fail(__FILE__, __LINE__,
                      "%s: the vectors of chunk %" PRIu64 " (%s:%u-%u) differ: cosine %.9f, max "
                      "component difference %.3g",
                      what, a->id, a->path, a->start_line, a->end_line, cos, maxd);
    }
}

/*
 * Every file of `part` (an interrupted run's store) is in `full` (run A's) with the same row,
 * and so are all its chunks and vectors.
 */
static void expect_subset(const struct snap *part, const struct snap *full, const char *what)
{
    for (size_t i = 0; i < part->n_file_rows; i++) {
        const struct snap_file *pf = &part->files[i];
        const struct snap_file *ff = snap_file_find(full, pf->path);

        if (!ff)
            test_fail(__FILE__, __LINE__, "%s: file %s is not in the uninterrupted index", what,
                      pf->path);
        expect_same_file(pf, ff, what);
    }
    for (size_t i = 0; i < part->n_chunk_rows; i++) {
        const struct snap_chunk *fc = snap_find(full, part->chunks[i].id);

        if (!fc)
            test_fail(__FILE__, __LINE__,
                      "%s: chunk %" PRIu64 " (%s:%u-%u) is not in the "
                      "uninterrupted index",
                      what, part->chunks[i].id, part->chunks[i].path, part->chunks[i].start_line,
                      part->chunks[i].end_line);
        expect_same_chunk(&part->chunks[i], fc, what);
    }
}

static void expect_equal(const struct snap *a, const struct snap *b)
{
    ASSERT_EQ(a->repo_id, b->repo_id);
    ASSERT_EQ(a->n_file_rows, b->n_file_rows);
    ASSERT_EQ(a->n_chunk_rows, b->n_chunk_rows);
    ASSERT_EQ(a->n_lex_docs, b->n_lex_docs);
    ASSERT_EQ(a->sum_doc_len, b->sum_doc_len);
    for (size_t i = 0; i < a->n_file_rows; i++) {
        ASSERT_STREQ(a->files[i].path, b->files[i].path);
        expect_same_file(&a->files[i], &b->files[i], "final index");
    }
    for (size_t i = 0; i < a->n_chunk_rows; i++)
        expect_same_chunk(&a->chunks[i], &b->chunks[i], "final index");
}

/* ---- the postings of every term of the corpus -------------------------------------------- */

struct strvec {
    char **v;
    size_t n, cap;
};

static void strvec_add(struct strvec *sv, const char *s)
{
    sv->v = xgrow(sv->v, &sv->cap, sv->n + 1, sizeof(*sv->v));
    sv->v[sv->n++] = xstrdup(s);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void add_terms(struct strvec *sv, const char *text, size_t len, const char *prefix)
{
    struct lexical_tf *tfs = NULL;
    size_t n = 0;
    uint32_t total;
    char term[LEXICAL_MAX_TERM + 8];

    ASSERT_OK(lexical_count_terms(text, len, &tfs, &n, &total));
    for (size_t i = 0; i < n; i++) {
        snprintf(term, sizeof(term), "%s%s", prefix, tfs[i].term);
        strvec_add(sv, term);
    }
    lexical_tf_free(tfs, n);
}

static char *read_all(const char *path, size_t *ret_len)
{
    FILE *f = fopen(path, "re");
    char *buf;
    long n;

    ASSERT_TRUE(f != NULL);
    ASSERT_EQ(fseek(f, 0, SEEK_END), 0);
    n = ftell(f);
    ASSERT_GE(n, 0);
    rewind(f);
    buf = malloc((size_t)n + 1);
    ASSERT_TRUE(buf != NULL);
    ASSERT_EQ(fread(buf, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    buf[n] = '\0';
    *ret_len = (size_t)n;
    return buf;
}

/* The terms the lexical index must know: those of each chunk's code, symbol and path. */
static void corpus_terms(const struct snap *s, const char *repo, struct strvec *ret)
{
    struct strvec sv = {0};
    size_t k = 0;

    for (size_t i = 0; i < s->n_file_rows; i++) {
        const struct snap_file *f = &s->files[i];
        char path[PATH_MAX * 2];
        size_t len;
        char *text;

        snprintf(path, sizeof(path), "%s/%s", repo, f->path);
        text = read_all(path, &len);
        add_terms(&sv, f->path, strlen(f->path), "");
        for (uint32_t j = 0; j < f->n_chunks; j++) {
            const struct snap_chunk *c = snap_find(s, f->first_chunk + j);

            ASSERT_TRUE(c != NULL);
            ASSERT_LE(c->text_offset + c->text_len, len);
            add_terms(&sv, text + c->text_offset, c->text_len, "");
            add_terms(&sv, c->symbol, strlen(c->symbol), LEXICAL_SYMBOL_PREFIX);
        }
        free(text);
    }
    if (sv.n > 0)
        qsort(sv.v, sv.n, sizeof(*sv.v), cmp_str);
    for (size_t i = 0; i < sv.n; i++) {
        if (k > 0 && strcmp(sv.v[k - 1], sv.v[i]) == 0) {
            free(sv.v[i]);
            continue;
        }
        sv.v[k++] = sv.v[i];
    }
    sv.n = k;
    *ret = sv;
}

struct plist {
    struct store_posting *p;
    size_t n, cap;
};

static int on_postings(void *userdata, const struct store_posting *p, size_t n)
{
    struct plist *l = userdata;

    l->p = xgrow(l->p, &l->cap, l->n + n, sizeof(*l->p));
    memcpy(l->p + l->n, p, n * sizeof(*p));
    l->n += n;
    return 0;
}

/*
 * For every term of the corpus, the postings lists of the two environments are equal, their df
 * is their length, and each posting names a chunk of `b` with its BM25 length.  Returns the
 * number of postings compared.
 */
static uint64_t expect_same_postings(const char *dir_a, const char *dir_b, const struct snap *a,
                                     const struct snap *b, const char *repo, size_t *ret_terms)
{
    struct store_options o;
    struct store *sa = NULL, *sb = NULL;
    struct store_txn *ta = NULL, *tb = NULL;
    struct plist la = {0}, lb = {0};
    struct strvec terms;
    uint64_t total = 0;

    corpus_terms(b, repo, &terms);
    store_options_init(&o);
    o.read_only = true;
    ASSERT_OK(store_open(dir_a, &o, &sa));
    ASSERT_OK(store_open(dir_b, &o, &sb));
    ASSERT_OK(store_read_begin(sa, &ta));
    ASSERT_OK(store_read_begin(sb, &tb));
    for (size_t i = 0; i < terms.n; i++) {
        uint64_t dfa = 0, dfb = 0;

        la.n = lb.n = 0;
        ASSERT_OK(store_postings_foreach(ta, a->repo_id, terms.v[i], on_postings, &la));
        ASSERT_OK(store_postings_foreach(tb, b->repo_id, terms.v[i], on_postings, &lb));
        ASSERT_OK(store_postings_df(ta, a->repo_id, terms.v[i], &dfa));
        ASSERT_OK(store_postings_df(tb, b->repo_id, terms.v[i], &dfb));
        if (la.n != lb.n || (la.n > 0 && memcmp(la.p, lb.p, la.n * sizeof(*la.p)) != 0))
            test_fail(__FILE__, __LINE__,
                      "the postings of \"%s\" differ: %zu in the uninterrupted index, %zu after "
                      "the crashes",
                      terms.v[i], la.n, lb.n);
        ASSERT_EQ(dfa, la.n);
        ASSERT_EQ(dfb, lb.n);
        for (size_t j = 0; j < lb.n; j++) {
            const struct snap_chunk *c = snap_find(b, lb.p[j].chunk_id);

            if (!c)
                test_fail(__FILE__, __LINE__,
                          "a posting of \"%s\" names chunk %" PRIu64 ", which has no row",
                          terms.v[i], lb.p[j].chunk_id);
            ASSERT_EQ(lb.p[j].doc_len, c->doc_len);
        }
        total += lb.n;
    }
    store_read_end(ta);
    store_read_end(tb);
    store_free(sa);
    store_free(sb);
    free(la.p);
    free(lb.p);
    for (size_t i = 0; i < terms.n; i++)
        free(terms.v[i]);
    free(terms.v);
    *ret_terms = terms.n;
    return total;
}

/* ---- talking to the daemon --------------------------------------------------------------- */

static const char *const *daemon_env(const char *model)
{
    static char model_env[PATH_MAX + 16];
    static const char *env[] = {model_env, "COARCH_CHECKPOINT_FREQUENCY=2", "COARCH_LOG_LEVEL=info",
                                NULL};

    snprintf(model_env, sizeof(model_env), "COARCH_MODEL=%s", model);
    return env;
}

static void spawn_ok(struct tdaemon *d, const char *model)
{
    struct tspawn_opts o = {.env = daemon_env(model), .listen_fd = -1};
    int r;

    ASSERT_OK(tdaemon_spawn(d, &o));
    r = tdaemon_wait_socket(d, d->socket, START_TIMEOUT_MS);
    if (r < 0)
        tdaemon_dump_log(d);
    ASSERT_OK(r);
}

static void job_get(struct tdaemon *d, struct tclient *c, uint64_t id, struct job_info *ret)
{
    if (!jobs_find(c, id, ret)) {
        tdaemon_dump_log(d);
        test_fail(__FILE__, __LINE__, "job %" PRIu64 " is not in `jobs`", id);
    }
}

/* The number of jobs `jobs` lists. */
static size_t jobs_count(struct tclient *c)
{
    struct proto_msg *m = NULL;
    const msgpack_object *list;
    size_t n;

    ASSERT_OK(tclient_call(c, "jobs", &m));
    ASSERT_EQ(tmsg_error_code(m), 0);
    list = proto_map_get(&m->result, "jobs");
    ASSERT_TRUE(list != NULL && list->type == MSGPACK_OBJECT_ARRAY);
    n = list->via.array.size;
    proto_msg_free(m);
    return n;
}

static bool job_ended(const struct job_info *j)
{
    return strcmp(j->state, "queued") != 0 && strcmp(j->state, "running") != 0;
}

static void wait_done(struct tdaemon *d, struct tclient *c, uint64_t id, struct job_info *ret)
{
    uint64_t deadline = now_ms() + JOB_TIMEOUT_MS;

    for (;;) {
        job_get(d, c, id, ret);
        if (job_ended(ret))
            break;
        if (now_ms() > deadline) {
            tdaemon_dump_log(d);
            test_fail(__FILE__, __LINE__, "job %" PRIu64 " still %s after %d s", id, ret->state,
                      JOB_TIMEOUT_MS / 1000);
        }
        usleep(20000);
    }
    if (strcmp(ret->state, "done") != 0)
        tdaemon_dump_log(d);
    ASSERT_STREQ(ret->state, "done");
    ASSERT_EQ(ret->error_code, 0);
}

/* `embed {texts}`: n vectors of *ret_dim floats (caller frees). */
static float *embed_texts(struct tclient *c, const char *const *texts, size_t n, uint32_t *ret_dim)
{
    uint32_t id = tclient_next_id(c);
    msgpack_packer *pk = tclient_begin(c, id, "embed", 1);
    struct proto_msg *m = NULL;
    const msgpack_object *vecs;
    uint64_t dim = 0;
    float *out;

    ASSERT_TRUE(pk != NULL);
    ASSERT_OK(proto_pack_str(pk, "texts"));
    ASSERT_OK(msgpack_pack_array(pk, (uint32_t)n));
    for (size_t i = 0; i < n; i++)
        ASSERT_OK(proto_pack_str(pk, texts[i]));
    ASSERT_OK(tclient_end(c));
    ASSERT_OK(tclient_read_response(c, 60000, NULL, &m));
    ASSERT_EQ(m->id, id);
    ASSERT_EQ(tmsg_error_code(m), 0);
    ASSERT_OK(proto_get_uint(&m->result, "dim", &dim));
    vecs = proto_map_get(&m->result, "vectors");
    ASSERT_TRUE(vecs != NULL && vecs->type == MSGPACK_OBJECT_ARRAY);
    ASSERT_EQ(vecs->via.array.size, n);
    out = malloc(n * dim * sizeof(float));
    ASSERT_TRUE(out != NULL);
    for (size_t i = 0; i < n; i++) {
        const msgpack_object *v = &vecs->via.array.ptr[i];

        ASSERT_EQ(v->type, MSGPACK_OBJECT_BIN);
        ASSERT_EQ(v->via.bin.size, dim * sizeof(float));
        memcpy(out + i * dim, v->via.bin.ptr, dim * sizeof(float));
    }
    proto_msg_free(m);
    *ret_dim = (uint32_t)dim;
    return out;
}

static char *random_code(unsigned words)
{
    static const char *const vocab[] = {"size_t", "buffer", "->",     "count", "(",     ")",
                                        "{",      "}",      "return", "r",     "=",     "if",
                                        "<",      "0",      ";",      "index", "flush", "journal",
                                        "for",    "i++",    "self",   "def"};
    size_t cap = (size_t)words * 10 + 1, len = 0;
    char *s = malloc(cap);

    ASSERT_TRUE(s != NULL);
    for (unsigned i = 0; i < words; i++)
        len += (size_t)snprintf(s + len, cap - len, "%s ",
                                vocab[rng_int(sizeof(vocab) / sizeof(vocab[0]))]);
    s[len] = '\0';
    return s;
}

/*
 * The premise of the vector comparison, measured directly on run A's daemon: a text's vector
 * depends on the batch it is embedded in by rounding only.  Embeds a short and a longer text
 * alone, then each amid fillers of random lengths (other positions, other GEMM sizes after the
 * embedder's length sort and the backend's split across threads), and prints how many came out
 * bit for bit the same.
 */
static void expect_batch_rounding_only(struct tclient *c)
{
    static const char *const probes[] = {
        "flush journal",
        "static int journal_flush(struct journal *j, size_t n)\n{\n    /* Flush the pending "
        "records. */\n    return journal_write(j, j->pending, n);\n}\n",
    };
    unsigned tries = 0, same = 0;
    double maxd = 0, minc = 1;
    uint32_t dim = 0, dim2 = 0;

    for (size_t pi = 0; pi < sizeof(probes) / sizeof(probes[0]); pi++) {
        float *alone = embed_texts(c, &probes[pi], 1, &dim);

        for (unsigned round = 0; round < 6; round++) {
            size_t n = 1 + rng_int(60), at = rng_int((unsigned)n);
            const char **texts = calloc(n + 1, sizeof(*texts));
            const float *v;
            float *all;
            double d = 0;

            ASSERT_TRUE(texts != NULL);
            for (size_t i = 0; i <= n; i++)
                texts[i] = i == at ? probes[pi] : random_code(1 + rng_int(round % 2 ? 300 : 40));
            all = embed_texts(c, texts, n + 1, &dim2);
            ASSERT_EQ(dim2, dim);
            v = all + at * dim;
            for (uint32_t i = 0; i < dim; i++)
                d = fmax(d, fabs((double)v[i] - alone[i]));
            same += memcmp(v, alone, dim * sizeof(float)) == 0;
            maxd = fmax(maxd, d);
            minc = fmin(minc, cosine(v, alone, dim));
            tries++;
            if (d > VEC_MAX_DIFF || cosine(v, alone, dim) < VEC_MIN_COSINE)
                test_fail(__FILE__, __LINE__,
                          "\"%s\" alone and in a batch of %zu: cosine %.9f, max difference %.3g",
                          probes[pi], n + 1, cosine(v, alone, dim), d);
            for (size_t i = 0; i <= n; i++)
                if (i != at)
                    free((char *)texts[i]);
            free(texts);
            free(all);
        }
        free(alone);
    }
    fprintf(stderr,
            "batch composition: %u of %u probe vectors bitwise equal to the text embedded "
            "alone; max component difference %.3g, min cosine %.9f (dim %u)\n",
            same, tries, maxd, minc, dim);
}

struct hit {
    char path[256];
    uint64_t start, end;
    double score;
};

/* `search {query, repo, k}` into hits[k]; returns the count (> 0 asserted). */
static size_t search_hits(struct tclient *c, const char *repo, const char *query, struct hit *hits,
                          size_t k)
{
    const msgpack_object *results;
    struct proto_msg *m = search_call(c, repo, query, (unsigned)k, &results);
    size_t n;

    n = results->via.array.size;
    ASSERT_GT(n, 0);
    for (size_t i = 0; i < n; i++) {
        const msgpack_object *h = &results->via.array.ptr[i];
        const char *p;
        size_t plen;

        ASSERT_OK(proto_get_str(h, "path", &p, &plen));
        snprintf(hits[i].path, sizeof(hits[i].path), "%.*s", (int)plen, p);
        ASSERT_OK(proto_get_uint(h, "start_line", &hits[i].start));
        ASSERT_OK(proto_get_uint(h, "end_line", &hits[i].end));
        ASSERT_OK(proto_get_double(h, "score", &hits[i].score));
    }
    proto_msg_free(m);
    return n;
}

/*
 * Two daemons' answers agree: the same scores, rank by rank, and each hit of `b` is a hit of
 * `a` with its score.  Scores are compared within rounding (the vectors may differ in their
 * last bits), so two hits whose scores tie within it may trade places.
 */
static void expect_same_hits(const char *query, const struct hit *a, size_t na, const struct hit *b,
                             size_t nb)
{
    ASSERT_EQ(na, nb);
    for (size_t i = 0; i < nb; i++) {
        size_t j;

        if (fabs(a[i].score - b[i].score) > 1e-6)
            test_fail(__FILE__, __LINE__, "search \"%s\": rank %zu scores %.9g, was %.9g", query,
                      i + 1, b[i].score, a[i].score);
        for (j = 0; j < na; j++)
            if (strcmp(a[j].path, b[i].path) == 0 && a[j].start == b[i].start &&
                a[j].end == b[i].end && fabs(a[j].score - b[i].score) <= 1e-6)
                break;
        if (j == na)
            test_fail(__FILE__, __LINE__,
                      "search \"%s\": rank %zu is %s:%" PRIu64 "-%" PRIu64
                      ", which the uninterrupted index does not return with that score",
                      query, i + 1, b[i].path, b[i].start, b[i].end);
    }
}

#define SEARCH_K 20

static const char *const queries[] = {
    "flush the pending journal to the store",
    "parse the request header",
    "retry when the first attempt times out",
};
#define N_QUERIES (sizeof(queries) / sizeof(queries[0]))

/* ---- the kill plan ----------------------------------------------------------------------- */

enum kill_kind {
    KILL_SCAN,
    KILL_EARLY,
    KILL_CHECKPOINT,
    KILL_PROGRESS,
};

static const char *kill_kind_name(enum kill_kind k)
{
    static const char *const names[] = {"scan", "early", "checkpoint", "progress"};

    return names[k];
}

struct kill_plan {
    enum kill_kind kind;
    double at; /* checkpoint/progress: a point of the whole job, as a share of its chunks */
};

struct kill_rec {
    enum kill_kind kind;
    char phase[16]; /* the phase last seen before the kill */
    uint64_t session_chunks, session_checkpoints;
    bool before_first_batch; /* the session had embedded nothing yet */
    double session_s;
};

/*
 * K kills: the first during the scan of the fresh job; one "early" at a random place; the rest
 * at sorted random points of the job, at least two right after a checkpoint and one anywhere.
 */
static void make_plan(struct kill_plan *plan, unsigned k)
{
    unsigned n_pts = k - 2, early = 1 + rng_int(k - 1);
    double pts[64];
    unsigned p = 0;

    for (unsigned i = 0; i < n_pts; i++)
        pts[i] = 0.08 + 0.8 * rng_unit();
    /* insertion sort: a handful of points */
    for (unsigned i = 1; i < n_pts; i++)
        for (unsigned j = i; j > 0 && pts[j - 1] > pts[j]; j--) {
            double t = pts[j];
            pts[j] = pts[j - 1];
            pts[j - 1] = t;
        }
    plan[0] = (struct kill_plan){.kind = KILL_SCAN};
    for (unsigned i = 1; i < k; i++) {
        if (i == early) {
            plan[i] = (struct kill_plan){.kind = KILL_EARLY};
            continue;
        }
        plan[i] = (struct kill_plan){.kind = rng_int(2) ? KILL_CHECKPOINT : KILL_PROGRESS,
                                     .at = pts[p++]};
    }
    /* At least two kills right after a checkpoint and one elsewhere in the batch loop. */
    {
        unsigned cps = 0, prs = 0;

        for (unsigned i = 0; i < k; i++) {
            cps += plan[i].kind == KILL_CHECKPOINT;
            prs += plan[i].kind == KILL_PROGRESS;
        }
        for (unsigned i = 0; i < k && (cps < 2 || prs < 1); i++) {
            if (plan[i].kind == KILL_PROGRESS && cps < 2 && prs > 1) {
                plan[i].kind = KILL_CHECKPOINT;
                cps++;
                prs--;
            } else if (plan[i].kind == KILL_CHECKPOINT && prs < 1 && cps > 2) {
                plan[i].kind = KILL_PROGRESS;
                prs++;
                cps--;
            }
        }
    }
}

/*
 * Polls the job until the plan's moment and SIGKILLs coarchd.  `committed` is what the store
 * held when this session started and `total` run A's chunk count.
 */
static void kill_at(struct tdaemon *d, struct tclient *c, uint64_t id, const struct kill_plan *k,
                    uint64_t committed, uint64_t total, struct kill_rec *rec)
{
    struct job_info j;
    uint64_t t0 = now_ms(), deadline = t0 + JOB_TIMEOUT_MS, cp_after = 0, delta = 0;
    bool seen_embedding = false, armed = false;

    memset(rec, 0, sizeof(*rec));
    rec->kind = k->kind;
    if (k->kind == KILL_CHECKPOINT || k->kind == KILL_PROGRESS) {
        double target = k->at * (double)total;

        /* At least one batch: a point the store has already passed means "soon". */
        delta = target > (double)committed + 1 ? (uint64_t)(target - (double)committed) : 1;
    }
    for (;;) {
        job_get(d, c, id, &j);
        if (job_ended(&j)) {
            tdaemon_dump_log(d);
            test_fail(__FILE__, __LINE__,
                      "job %" PRIu64 " ended (%s) before the %s kill point (%" PRIu64
                      " chunks past the session's start, %" PRIu64 " committed, %" PRIu64
                      " in all)",
                      id, j.state, kill_kind_name(k->kind), delta, committed, total);
        }
        if (now_ms() > deadline) {
            tdaemon_dump_log(d);
            test_fail(__FILE__, __LINE__, "no %s kill point within %d s", kill_kind_name(k->kind),
                      JOB_TIMEOUT_MS / 1000);
        }
        /* A session's progress starts at what the store holds (the job row's count). */
        if (strcmp(j.phase, "embedding") == 0)
            seen_embedding = true;
        if (k->kind == KILL_SCAN && (strcmp(j.phase, "scanning") == 0 || seen_embedding))
            break;
        if (k->kind == KILL_EARLY && seen_embedding)
            break;
        if (seen_embedding && j.chunks_done >= committed + delta &&
            (k->kind == KILL_PROGRESS || k->kind == KILL_CHECKPOINT)) {
            if (k->kind == KILL_PROGRESS)
                break;
            if (!armed) {
                armed = true;
                cp_after = j.checkpoints;
            } else if (j.checkpoints > cp_after) {
                break;
            }
        }
        usleep(k->kind == KILL_SCAN || k->kind == KILL_EARLY ? 200 : 1000);
    }
    tdaemon_kill(d);
    snprintf(rec->phase, sizeof(rec->phase), "%s", j.phase);
    rec->session_chunks = j.chunks_done > committed ? j.chunks_done - committed : 0;
    rec->session_checkpoints = j.checkpoints;
    rec->before_first_batch = j.chunks_done <= committed;
    rec->session_s = (double)(now_ms() - t0) / 1000;
}

/* ---- the test ---------------------------------------------------------------------------- */

TEST(kill9_at_random_points_then_resume_equals_uninterrupted_index)
{
    const unsigned n_files =
        (unsigned)env_u64("COARCH_TEST_CRASH_FILES", DEFAULT_FILES, 200, 100000);
    const unsigned n_kills =
        (unsigned)env_u64("COARCH_TEST_CRASH_KILLS", DEFAULT_KILLS, MIN_KILLS, 60);
    uint64_t seed;
    struct kill_plan plan[64];
    struct tdaemon a, b;
    struct tclient *c;
    struct corpus_stats cs;
    struct job_info ja, jb;
    struct snap sa, sb, prev = {0};
    char repo[PATH_MAX], what[64];
    struct hit hits_a[N_QUERIES][SEARCH_K], hits_b[SEARCH_K];
    size_t n_hits_a[N_QUERIES];
    const char *model;
    uint64_t t0, ta_ms, tb_ms, total;
    size_t n_terms;
    uint64_t n_postings;
    unsigned early_kills = 0, staged_kills = 0;

    require_coarchd();
    {
        struct timespec ts;

        clock_gettime(CLOCK_REALTIME, &ts);
        seed = env_u64("COARCH_TEST_SEED",
                       (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20) ^ (uint64_t)getpid(), 0,
                       UINT64_MAX);
    }
    fprintf(stderr, "COARCH_TEST_SEED=%" PRIu64 " (set it to replay this plan)\n", seed);
    rng_state = seed;
    make_plan(plan, n_kills);
    fprintf(stderr, "plan:");
    for (unsigned i = 0; i < n_kills; i++)
        if (plan[i].at > 0)
            fprintf(stderr, " %s@%.1f%%", kill_kind_name(plan[i].kind), plan[i].at * 100);
        else
            fprintf(stderr, " %s", kill_kind_name(plan[i].kind));
    fprintf(stderr, "\n");
    model = tiny_model_make();

    /* One corpus, indexed by both runs (chunk rows hold paths relative to it). */
    ASSERT_OK(tdaemon_init(&a));
    snprintf(repo, sizeof(repo), "%s/repo", a.dir);
    ASSERT_EQ(mkdir(repo, 0755), 0);
    corpus_write(repo, n_files, CORPUS_SEED, &cs);
    fprintf(stderr, "corpus: %u files, %" PRIu64 " lines, %" PRIu64 " KiB\n", cs.files, cs.lines,
            cs.bytes >> 10);

    /* Run A: uninterrupted. */
    spawn_ok(&a, model);
    c = connect_ok(&a);
    t0 = now_ms();
    index_call(c, repo, true, JOB_TIMEOUT_MS, &ja);
    ta_ms = now_ms() - t0;
    if (strcmp(ja.state, "done") != 0)
        tdaemon_dump_log(&a);
    ASSERT_STREQ(ja.state, "done");
    ASSERT_EQ(ja.files_done, n_files);
    total = ja.chunks_done;
    fprintf(stderr,
            "run A: %" PRIu64 " files, %" PRIu64 " chunks, %" PRIu64 " checkpoints in %.1f s\n",
            ja.files_done, ja.chunks_done, ja.checkpoints, (double)ta_ms / 1000);
    expect_batch_rounding_only(c);
    for (size_t i = 0; i < N_QUERIES; i++)
        n_hits_a[i] = search_hits(c, repo, queries[i], hits_a[i], SEARCH_K);
    tclient_free(c);
    stop_ok(&a);
    snap_load(a.data_dir, repo, ja.id, total, "run A", &sa);
    ASSERT_EQ(sa.n_chunk_rows, total);
    ASSERT_EQ(sa.n_file_rows, n_files);

    /* Run B: the same job, killed n_kills times. */
    ASSERT_OK(tdaemon_init(&b));
    spawn_ok(&b, model);
    c = connect_ok(&b);
    t0 = now_ms();
    index_call(c, repo, false, 10000, &jb);
    for (unsigned i = 0; i < n_kills; i++) {
        struct kill_rec r;
        struct snap now;
        struct job_info j;

        kill_at(&b, c, jb.id, &plan[i], prev.n_chunk_rows, total, &r);
        tclient_free(c);
        snprintf(what, sizeof(what), "after kill %u (%s)", i + 1, kill_kind_name(r.kind));
        snap_load(b.data_dir, repo, jb.id, total, what, &now);
        expect_subset(&now, &sa, what);
        /* Nothing committed before is lost or redone: same rows, same chunk ids. */
        for (size_t f = 0; f < prev.n_file_rows; f++) {
            const struct snap_file *pf = &prev.files[f];
            const struct snap_file *nf = snap_file_find(&now, pf->path);

            if (!nf)
                test_fail(__FILE__, __LINE__, "%s: %s, committed before, is gone", what, pf->path);
            expect_same_file(pf, nf, what);
        }
        ASSERT_TRUE(now.has_job);
        if (now.job.state != JOB_QUEUED && now.job.state != JOB_RUNNING)
            test_fail(__FILE__, __LINE__, "%s: the job row is %s", what,
                      job_state_name(now.job.state));
        /* The row's progress is exactly what is committed: a resumed run goes on from it. */
        ASSERT_EQ(now.job.files_done, now.n_file_rows);
        ASSERT_EQ(now.job.chunks_done, now.n_chunk_rows);
        fprintf(stderr,
                "kill %u: %-10s after %5.2f s in phase %-9s: %5" PRIu64
                " chunks past the store, %3" PRIu64
                " checkpoints; store: %4zu files, %5zu chunks, %3" PRIu64 " staged (row: %s, "
                "%" PRIu64 " chunks done)\n",
                i + 1, kill_kind_name(r.kind), r.session_s, r.phase, r.session_chunks,
                r.session_checkpoints, now.n_file_rows, now.n_chunk_rows, now.staged_rows,
                job_state_name(now.job.state), now.job.chunks_done);
        staged_kills += now.staged_rows > 0;
        early_kills += r.before_first_batch;
        snap_release(&prev);
        prev = now;

        /* Restart: the daemon picks the job up by itself. */
        spawn_ok(&b, model);
        c = connect_ok(&b);
        job_get(&b, c, jb.id, &j);
        if (!j.resumed || job_ended(&j))
            test_fail(__FILE__, __LINE__, "after restart %u the job is %s, resumed %d", i + 1,
                      j.state, j.resumed);
        ASSERT_GE(j.chunks_done, prev.n_chunk_rows);
        ASSERT_EQ(jobs_count(c), 1);
    }
    ASSERT_GE(early_kills, 1);
    fprintf(stderr, "%u of %u kills came in the middle of a file (staged chunks dropped)\n",
            staged_kills, n_kills);
    wait_done(&b, c, jb.id, &jb);
    tb_ms = now_ms() - t0;
    fprintf(stderr,
            "run B: done after %u kills in %.1f s: %" PRIu64 " files, %" PRIu64
            " chunks done (resumed %d)\n",
            n_kills, (double)tb_ms / 1000, jb.files_done, jb.chunks_done, jb.resumed);
    ASSERT_TRUE(jb.resumed);
    for (size_t i = 0; i < N_QUERIES; i++) {
        size_t n = search_hits(c, repo, queries[i], hits_b, SEARCH_K);

        expect_same_hits(queries[i], hits_a[i], n_hits_a[i], hits_b, n);
    }
    ASSERT_EQ(jb.chunks_done, ja.chunks_done);
    ASSERT_EQ(jb.files_done, ja.files_done);
    tclient_free(c);
    stop_ok(&b);

    snap_load(b.data_dir, repo, jb.id, total, "run B", &sb);
    ASSERT_EQ(sa.staged_n, 0);
    ASSERT_EQ(sb.staged_n, 0);
    expect_equal(&sa, &sb);
    ASSERT_TRUE(sa.has_job && sb.has_job);
    ASSERT_EQ(sb.job.state, JOB_DONE);
    ASSERT_EQ(sb.job.chunks_done, sa.job.chunks_done);
    ASSERT_EQ(sb.job.files_done, sa.job.files_done);
    n_postings = expect_same_postings(a.data_dir, b.data_dir, &sa, &sb, repo, &n_terms);
    fprintf(stderr,
            "equal: %zu files, %zu chunks (ids, lines, hashes, lexical lengths), %zu terms with "
            "%" PRIu64 " postings; vectors: %" PRIu64 " of %" PRIu64 " comparisons bitwise "
            "equal, the rest within max difference %.3g, min cosine %.9f; run A %.1f s, run B "
            "%.1f s\n",
            sb.n_file_rows, sb.n_chunk_rows, n_terms, n_postings, vec_stats.bitwise,
            vec_stats.compared, vec_stats.max_diff, vec_stats.min_cosine, (double)ta_ms / 1000,
            (double)tb_ms / 1000);
    snap_release(&prev);
    snap_release(&sa);
    snap_release(&sb);
}

int main(int argc, char **argv)
{
    return test_run_all(argc, argv);
}
