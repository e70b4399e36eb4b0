/*
 * indexer.c - see indexer.h for the design.
 */
#include "indexer.h"

#include "clock.h"
#include "lexical.h"
#include "log.h"
#include "macro.h"
#include "paths.h"
#include "pressure.h"
#include "sha256.h"
#include "store-chunk.h"
#include "store-job.h"
#include "store-repo.h"

#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#define META_MODEL_KEY "index.model"
#define FIXED_BATCH 64
/* Files bigger than this give their chunking's memory back to the kernel (enqueue_next_file). */
#define INDEXER_TRIM_AFTER_BYTES (256u << 10)
#define PAUSE_POLL_NS 100000000L /* 100 ms */
/* How long a CRITICAL pause may last before the job goes on in small batches (see
 * wait_while_paused). */
#define PAUSE_MAX_NS 10000000000LL /* 10 s */

const char *job_state_to_string(uint32_t state)
{
    switch (state) {
    case JOB_STATE_QUEUED:
        return "queued";
    case JOB_STATE_RUNNING:
        return "running";
    case JOB_STATE_DONE:
        return "done";
    case JOB_STATE_FAILED:
        return "failed";
    case JOB_STATE_CANCELLED:
        return "cancelled";
    }
    return "unknown";
}

/* ---- a set of strings (the paths seen by the walk) --------------------------------------- */

struct strset {
    char **slots;
    size_t cap, n;
};

static uint64_t str_hash(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ULL;
    }
    return h;
}

static int strset_add(struct strset *set, const char *s)
{
    size_t j;

    if ((set->n + 1) * 2 > set->cap) {
        size_t ncap = set->cap ? set->cap * 2 : 1024;
        char **ns = calloc(ncap, sizeof(*ns));
        if (!ns)
            return -ENOMEM;
        for (size_t i = 0; i < set->cap; i++) {
            if (!set->slots[i])
                continue;
            j = str_hash(set->slots[i]) & (ncap - 1);
            while (ns[j])
                j = (j + 1) & (ncap - 1);
            ns[j] = set->slots[i];
        }
        free(set->slots);
        set->slots = ns;
        set->cap = ncap;
    }
    j = str_hash(s) & (set->cap - 1);
    while (set->slots[j]) {
        if (strcmp(set->slots[j], s) == 0)
            return 0;
        j = (j + 1) & (set->cap - 1);
    }
    set->slots[j] = strdup(s);
    if (!set->slots[j])
        return -ENOMEM;
    set->n++;
    return 1;
}

static bool strset_has(const struct strset *set, const char *s)
{
    if (!set->cap)
        return false;
    for (size_t j = str_hash(s) & (set->cap - 1); set->slots[j]; j = (j + 1) & (set->cap - 1))
        if (strcmp(set->slots[j], s) == 0)
            return true;
    return false;
}

static void strset_release(struct strset *set)
{
    for (size_t i = 0; i < set->cap; i++)
        free(set->slots[i]);
    free(set->slots);
    *set = (struct strset){0};
}

/*
 * A file row's hash is SHA-256 over INDEX_FORMAT and the content, so that a change in how a
 * file becomes chunks, terms or vectors (chunk.c's cuts and headers, lexical.c's terms) makes
 * every file count as changed on the next run and be indexed again, instead of leaving old
 * chunks that new queries no longer match.  Bump it with any such change.
 *   2: title chunks (chunk.c), Snowball-stemmed terms (lexical.c).
 *   3: chunk rows hold the definition a hit reports and the unit that was embedded.
 */
#define INDEX_FORMAT "coarch index format 3\n"

static void file_hash(const char *content, size_t len, uint8_t out[SHA256_DIGEST_SIZE])
{
    struct sha256 s;

    sha256_init(&s);
    sha256_update(&s, INDEX_FORMAT, strlen(INDEX_FORMAT));
    sha256_update(&s, content, len);
    sha256_final(&s, out);
}

/* ---- job state -------------------------------------------------------------------------- */

struct todo {
    char *path;
    uint64_t size;
};

/* A file whose chunks are queued for embedding. */
struct pending {
    char *path;
    uint8_t hash[SHA256_DIGEST_SIZE];
    int64_t mtime_ns;
    uint64_t size;
    char *content; /* the bytes chunked (chunk byte ranges point into it) */
    struct chunk_list chunks;
    float *vecs;     /* the vectors of chunks [written, embedded), in order */
    size_t cap_vecs; /* in vectors */
    size_t embedded; /* chunks [0, embedded) have vectors */
    size_t written;  /* chunks [0, written) are in the store (only ever the queue's head) */
    uint64_t first;  /* its chunk ids, allocated at its first write */
    bool staged;     /* the store records [first, +chunks.n) as staged (store-chunk.h) */
    uint8_t (*hashes)[SHA256_DIGEST_SIZE]; /* of each chunk's embedded text (chunks.n) */
    float *reuse;    /* chunks.n vectors: the previous version's, where reused[i] */
    uint8_t *reused; /* chunk i's text is unchanged: its vector is kept, not embedded */
};

struct run {
    const struct indexer_env *env;
    const struct indexer_job *job;
    struct indexer_result *res;
    struct indexer_progress *p;
    struct chunk_options chunk_opt;
    struct chunker *chunker;

    struct strset seen;
    struct todo *todo;
    size_t n_todo, cap_todo, next_todo;
    bool force; /* the model changed: re-embed unchanged files too */

    struct pending *pend;
    size_t n_pend, cap_pend;
    size_t queued; /* chunks chunked but not embedded */

    struct store_txn *wtx;
    unsigned batches_since_checkpoint, checkpoint_every;
    uint64_t txn_max_ops;  /* commit once the open transaction has done this many writes */
    bool dirty;            /* wtx holds changes */
    bool pause_expired;    /* a CRITICAL pause timed out; no new pause until it ends */
    const char *last_path; /* cursor: the last file written (owned by a pending or todo) */
    char cursor[STORE_MAX_FILE_PATH + 1];

    int64_t created_ns;
    double t0;
    /* What earlier runs of this job committed (its row, when a killed daemon resumes it):
     * progress goes on from there instead of restarting at zero. */
    uint64_t base_files, base_chunks;
};

static void set_message(struct run *run, const char *fmt, ...) _printf_(2, 3);
static void set_message(struct run *run, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(run->res->message, sizeof(run->res->message), fmt, ap);
    va_end(ap);
}

static void note_file_error(struct run *run, const char *path, int error)
{
    struct indexer_result *res = run->res;
    struct indexer_file_error *n;

    log_debug("indexer: %s: %s", path, strerror(-error));
    res->errors_total++;
    if (res->n_errors >= INDEXER_MAX_REPORTED_ERRORS)
        return;
    n = array_realloc(res->errors, res->n_errors + 1, sizeof(*n));
    if (!n)
        return;
    res->errors = n;
    res->errors[res->n_errors].path = strdup(path);
    if (res->errors[res->n_errors].path)
        res->errors[res->n_errors++].error = error;
}

static void report(struct run *run)
{
    struct indexer_progress *p = run->p;

    p->elapsed_s = clock_monotonic_s() - run->t0;
    if (p->chunks_done > run->base_chunks && p->embed_s > 0) {
        double rate = (double)(p->chunks_done - run->base_chunks) / (p->elapsed_s - p->scan_s);
        p->chunks_per_s = rate;
        p->eta_s = p->chunks_total > p->chunks_done && rate > 0
                       ? (double)(p->chunks_total - p->chunks_done) / rate
                       : 0;
    }
    if (run->job->progress)
        run->job->progress(run->job->progress_userdata, p);
}

/* ---- governor access -------------------------------------------------------------------- */

static void batch_limits(struct run *run, size_t *ret_chunks, uint64_t *ret_tokens)
{
    const struct indexer_env *env = run->env;

    if (!env->gov) {
        *ret_chunks = FIXED_BATCH;
        *ret_tokens = UINT64_MAX;
        return;
    }
    pthread_mutex_lock(env->gov_lock);
    *ret_chunks = governor_batch_size(env->gov);
    *ret_tokens = governor_batch_tokens_max(env->gov);
    pthread_mutex_unlock(env->gov_lock);
}

static bool feed_paused(struct run *run)
{
    bool paused;

    if (!run->env->gov)
        return false;
    pthread_mutex_lock(run->env->gov_lock);
    paused = governor_feed_paused(run->env->gov);
    pthread_mutex_unlock(run->env->gov_lock);
    return paused;
}

static unsigned take_actions(struct run *run)
{
    return run->env->actions ? atomic_exchange(run->env->actions, 0u) : 0u;
}

static bool cancelled(const struct run *run)
{
    return run->job->cancel && atomic_load(run->job->cancel);
}

/* ---- store writes ----------------------------------------------------------------------- */

/* Embedded chunks of files still waiting for the rest of theirs: not in the index yet. */
static uint64_t chunks_uncommitted(const struct run *run)
{
    uint64_t n = 0;

    for (size_t i = 0; i < run->n_pend; i++)
        n += run->pend[i].embedded;
    return n;
}

static int put_job_row(struct run *run, struct store_txn *t, uint32_t state, int error)
{
    struct indexer_progress *p = run->p;
    /* The row counts what this commit makes durable, which a resumed run starts from: not the
     * embedded chunks of files still waiting for the rest of their chunks. */
    uint64_t uncommitted = chunks_uncommitted(run);
    struct store_job j = {
        .id = run->job->id,
        .repo_id = run->job->repo_id,
        .state = state,
        .error = error,
        .created_ns = run->created_ns,
        .updated_ns = clock_realtime_ns(),
        .files_done = p->files_done,
        .files_total = p->files_total,
        .chunks_done = p->chunks_done - uncommitted,
        .chunks_total = p->chunks_total,
        .cursor = run->cursor,
        .cursor_len = strlen(run->cursor),
    };

    return store_job_put(t, &j);
}

static int ensure_wtx(struct run *run)
{
    int r;

    if (run->wtx)
        return 0;
    r = store_write_begin(run->env->store, &run->wtx);
    if (r < 0)
        set_message(run, "cannot begin a store transaction: %s", store_last_error());
    return r;
}

/*
 * Give back the memory of big write transactions: LMDB keeps the dirty pages of the largest
 * one (store_release_memory()), and glibc keeps the freed pages inside the worker's arena
 * until trimmed.  Costs a reopen of the environment, so only when the governor asks for memory
 * back, or after a transaction well past the write budget (the budget is checked between
 * chunks, so only a chunk of thousands of distinct terms can make one).
 */
static int release_memory(struct run *run)
{
    int r;

    r = store_release_memory(run->env->store);
    if (r < 0) {
        set_message(run, "cannot reopen the store to release memory: %s", store_last_error());
        return r;
    }
    pressure_malloc_trim();
    return 0;
}

/*
 * A file's chunks are written as their vectors arrive, and a commit can fall between two of
 * them (the write budget: indexer.h).  The head of the queue, the only file ever part
 * written, is then staged in the same commit, which keeps its chunks out of searches until
 * its file row goes in and tells a later run to drop them if this one never finishes it.
 */
static int stage_head(struct run *run)
{
    struct pending *f = run->n_pend ? &run->pend[0] : NULL;
    int r;

    if (!f || f->written == 0 || f->written == f->chunks.n || f->staged)
        return 0;
    r = store_chunk_stage(run->wtx, run->job->repo_id, f->first, (uint32_t)f->chunks.n);
    if (r < 0) {
        set_message(run, "staging %s failed: %s", f->path, store_last_error());
        return r;
    }
    f->staged = true;
    return 0;
}

/* At the end of a job that did not finish: drop the chunks of a part-written head file. */
static int discard_head(struct run *run)
{
    struct pending *f = run->n_pend ? &run->pend[0] : NULL;
    int r;

    if (!f || f->written == 0 || f->written == f->chunks.n)
        return 0;
    r = store_chunk_stage(run->wtx, run->job->repo_id, f->first, (uint32_t)f->chunks.n);
    if (r >= 0)
        r = store_chunk_unstage(run->wtx, run->job->repo_id, true);
    if (r < 0) {
        set_message(run, "dropping the part written %s failed: %s", f->path, store_last_error());
        return r;
    }
    f->staged = false;
    f->written = 0;
    return 0;
}

/* Commit what is written so far, with the job row, as one checkpoint. */
static int checkpoint(struct run *run, uint32_t state, int error)
{
    double t = clock_monotonic_s();
    uint64_t ops;
    int r;

    r = ensure_wtx(run);
    if (r < 0)
        return r;
    r = state == JOB_STATE_RUNNING ? stage_head(run) : discard_head(run);
    if (r < 0) {
        store_write_abort(run->wtx);
        run->wtx = NULL;
        return r;
    }
    r = put_job_row(run, run->wtx, state, error);
    if (r < 0) {
        store_write_abort(run->wtx);
        run->wtx = NULL;
        set_message(run, "cannot write the job row: %s", store_last_error());
        return r;
    }
    ops = store_write_ops(run->wtx);
    r = store_write_commit(run->wtx);
    run->wtx = NULL;
    if (r < 0) {
        set_message(run, "checkpoint commit failed: %s", store_last_error());
        return r;
    }
    run->p->checkpoints++;
    run->batches_since_checkpoint = 0;
    if (run->dirty && run->env->committed)
        run->env->committed(run->env->userdata, run->job->repo_id);
    run->dirty = false;
    if (run->env->gov) {
        pthread_mutex_lock(run->env->gov_lock);
        governor_note_checkpoint(run->env->gov);
        pthread_mutex_unlock(run->env->gov_lock);
    }
    /* After the bookkeeping: the commit stands even if the reopen fails. */
    r = ops > 2 * run->txn_max_ops ? release_memory(run) : 0;
    run->p->store_s += clock_monotonic_s() - t;
    return r;
}

static int cmp_store_term(const void *a, const void *b)
{
    return strcmp(((const struct store_term *)a)->term, ((const struct store_term *)b)->term);
}

/*
 * The lexical document of a chunk: the terms of its text (path header, symbol line and code),
 * plus its symbol's terms again as a separate field, spelled LEXICAL_SYMBOL_PREFIX + term.  A
 * query term is also looked up in that field (search.c), where it is rare and so weighs more:
 * a word naming the function is stronger evidence than the same word in its body (BM25F in
 * its simplest form).
 */
static int write_postings(struct store_txn *t, uint64_t id, const struct chunk *c)
{
    struct lexical_tf *tfs = NULL, *sym = NULL;
    struct store_term *terms = NULL;
    char **sym_terms = NULL;
    size_t n = 0, n_sym = 0, k = 0;
    uint32_t total, sym_total = 0;
    int r;

    r = lexical_count_terms(c->text, c->text_len, &tfs, &n, &total);
    if (r < 0)
        return r;
    if (c->symbol && c->symbol[0]) {
        r = lexical_count_terms(c->symbol, strlen(c->symbol), &sym, &n_sym, &sym_total);
        if (r < 0)
            goto out;
    }
    if (n + n_sym == 0)
        goto out;
    terms = array_alloc(n + n_sym, sizeof(*terms));
    sym_terms = calloc(n_sym ? n_sym : 1, sizeof(*sym_terms));
    if (!terms || !sym_terms) {
        r = -ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < n; i++)
        terms[k++] = (struct store_term){.term = tfs[i].term, .tf = tfs[i].tf};
    for (size_t i = 0; i < n_sym; i++) {
        if (asprintf(&sym_terms[i], "%s%s", LEXICAL_SYMBOL_PREFIX, sym[i].term) < 0) {
            sym_terms[i] = NULL;
            r = -ENOMEM;
            goto out;
        }
        terms[k++] = (struct store_term){.term = sym_terms[i], .tf = sym[i].tf};
    }
    qsort(terms, k, sizeof(*terms), cmp_store_term);
    r = store_postings_add(t, id, total, terms, k);
out:
    for (size_t i = 0; sym_terms && i < n_sym; i++)
        free(sym_terms[i]);
    free(sym_terms);
    free(terms);
    lexical_tf_free(tfs, n);
    lexical_tf_free(sym, n_sym);
    return r;
}

/* Write the next embedded chunk of the queue's head file f into the open transaction. */
static int write_chunk(struct run *run, struct pending *f, const float *vec)
{
    const struct chunk *c = &f->chunks.items[f->written];
    double t0 = clock_monotonic_s();
    int r;

    r = ensure_wtx(run);
    if (r < 0)
        return r;
    if (f->written == 0) {
        r = store_chunk_ids_alloc(run->wtx, run->job->repo_id, (uint32_t)f->chunks.n, &f->first);
        if (r < 0)
            goto fail;
    }
    /* The unit from the start of its first line: a title chunk's text starts after the
     * indentation, and a snippet read from here shows whole lines. */
    size_t unit_a = c->unit_start_byte;
    while (unit_a > c->def_start_byte && f->content[unit_a - 1] != '\n')
        unit_a--;
    struct store_chunk sc = {
        .id = f->first + f->written,
        .path = f->path,
        .language = c->language,
        .symbol = c->symbol,
        .start_line = c->def_start_line,
        .end_line = c->def_end_line,
        .text_offset = c->def_start_byte,
        .text_len = (uint32_t)MIN(c->def_end_byte - c->def_start_byte, (size_t)UINT32_MAX),
        .unit_start_line = c->unit_start_line,
        .unit_end_line = c->unit_end_line,
        .unit_offset = unit_a,
        .unit_len = (uint32_t)MIN(c->unit_end_byte - unit_a, (size_t)UINT32_MAX),
    };
    /* The embedded text's hash: equal text, equal vector. */
    memcpy(sc.hash, f->hashes[f->written], sizeof(sc.hash));
    r = store_chunk_put(run->wtx, &sc);
    if (r >= 0)
        r = store_vector_put(run->wtx, sc.id, vec, run->env->embed->dim);
    if (r >= 0)
        r = write_postings(run->wtx, sc.id, c);
    if (r < 0)
        goto fail;
    f->written++;
    run->dirty = true;
    run->p->store_s += clock_monotonic_s() - t0;
    return 0;
fail:
    set_message(run, "writing %s failed: %s", f->path, store_last_error());
    return r;
}

/* Put the file row of the head file f, all of whose chunks are written: it replaces (and
 * deletes) the chunks of the file's previous version, and the new ones become visible. */
static int write_file_row(struct run *run, struct pending *f)
{
    struct store_file row = {
        .path = f->path,
        .mtime_ns = f->mtime_ns,
        .size = f->size,
        .first_chunk = f->chunks.n ? f->first : 0,
        .n_chunks = (uint32_t)f->chunks.n,
    };
    double t0 = clock_monotonic_s();
    int r;

    r = ensure_wtx(run);
    if (r < 0)
        return r;
    memcpy(row.hash, f->hash, sizeof(row.hash));
    r = store_file_put(run->wtx, run->job->repo_id, &row);
    if (r >= 0 && f->staged)
        r = store_chunk_unstage(run->wtx, run->job->repo_id, false);
    if (r < 0) {
        set_message(run, "writing %s failed: %s", f->path, store_last_error());
        return r;
    }
    f->staged = false;
    run->dirty = true;
    snprintf(run->cursor, sizeof(run->cursor), "%s", f->path);
    run->p->store_s += clock_monotonic_s() - t0;
    return 0;
}

/* ---- phase 1: scan ---------------------------------------------------------------------- */

struct scan_ctx {
    struct run *run;
    struct store_txn *rtx;
};

static int on_scanned(void *userdata, const struct scan_file *f)
{
    struct scan_ctx *sc = userdata;
    struct run *run = sc->run;
    struct store_file row;
    uint8_t hash[SHA256_DIGEST_SIZE];
    int r;

    if (cancelled(run))
        return -ECANCELED;
    if (strlen(f->path) > STORE_MAX_FILE_PATH) {
        note_file_error(run, f->path, -ENAMETOOLONG);
        return 0;
    }
    r = strset_add(&run->seen, f->path);
    if (r < 0)
        return r;
    run->p->files_scanned++;
    file_hash(f->content, f->size, hash);
    r = store_file_get(sc->rtx, run->job->repo_id, f->path, &row);
    if (r == 0 && !run->force && memcmp(row.hash, hash, sizeof(hash)) == 0) {
        run->p->files_unchanged++;
        return 0;
    }
    if (r < 0 && r != -ENOENT)
        return r;
    r = array_grow((void **)&run->todo, &run->cap_todo, run->n_todo + 1, sizeof(*run->todo));
    if (r < 0)
        return r;
    run->todo[run->n_todo].path = strdup(f->path);
    if (!run->todo[run->n_todo].path)
        return -ENOMEM;
    run->todo[run->n_todo++].size = f->size;
    run->p->bytes_total += f->size;
    if (run->p->files_scanned % 1000 == 0)
        report(run);
    return 0;
}

struct vanished {
    char **paths;
    size_t n, cap;
    const struct strset *seen;
};

static int on_stored_file(void *userdata, const struct store_file *f)
{
    struct vanished *v = userdata;
    int r;

    if (strset_has(v->seen, f->path))
        return 0;
    r = array_grow((void **)&v->paths, &v->cap, v->n + 1, sizeof(*v->paths));
    if (r < 0)
        return r;
    v->paths[v->n] = strdup(f->path);
    return v->paths[v->n++] ? 0 : -ENOMEM;
}

static int phase_scan(struct run *run)
{
    struct scan_ctx sc = {.run = run};
    struct vanished v = {.seen = &run->seen};
    const void *model;
    size_t model_len;
    double t = clock_monotonic_s();
    int r;

    run->p->phase = "scanning";
    report(run);
    r = store_read_begin(run->env->store, &sc.rtx);
    if (r < 0) {
        set_message(run, "cannot read the store: %s", store_last_error());
        return r;
    }
    /* A different model makes every stored vector incomparable: re-embed everything. */
    r = store_meta_get(sc.rtx, META_MODEL_KEY, &model, &model_len);
    run->force = r == 0 && (model_len != strlen(run->env->embed->model_id) ||
                            memcmp(model, run->env->embed->model_id, model_len) != 0);
    r = scan_repo(run->job->root, &run->env->scan, on_scanned, &sc, &run->res->scan);
    if (r >= 0)
        r = store_file_foreach(sc.rtx, run->job->repo_id, NULL, on_stored_file, &v);
    store_read_end(sc.rtx);
    run->p->scan_s += clock_monotonic_s() - t;
    if (r < 0) {
        if (r != -ECANCELED)
            set_message(run, "scanning %s failed: %s", run->job->root, strerror(-r));
        goto out;
    }
    /* A run stopped in the middle of a file left its chunks staged: drop them (its file row
     * was not updated, so the scan has queued the file again). */
    r = ensure_wtx(run);
    if (r < 0)
        goto out;
    r = store_chunk_unstage(run->wtx, run->job->repo_id, true);
    if (r == 0) {
        log_info("indexer: dropped the chunks of a file a stopped run had part written");
    } else if (r != -ENOENT) {
        set_message(run, "dropping staged chunks failed: %s", store_last_error());
        goto out;
    }
    run->p->files_total = run->base_files + run->n_todo;
    /* Rough chunk estimate until real counts arrive: one chunk per ~1 KiB of code. */
    run->p->chunks_total = run->base_chunks + run->p->bytes_total / 1024 + run->n_todo;

    if (v.n > 0 || run->force) {
        r = ensure_wtx(run);
        if (r < 0)
            goto out;
        for (size_t i = 0; i < v.n; i++) {
            r = store_file_delete(run->wtx, run->job->repo_id, v.paths[i]);
            if (r < 0 && r != -ENOENT) {
                set_message(run, "deleting %s failed: %s", v.paths[i], store_last_error());
                goto out;
            }
        }
        if (run->force)
            r = store_meta_put(run->wtx, META_MODEL_KEY, run->env->embed->model_id,
                               strlen(run->env->embed->model_id));
        if (r < 0)
            goto out;
        run->p->files_deleted = v.n;
        run->dirty = true;
        r = 0;
    } else {
        /* Record the model on the first index of this data directory. */
        r = ensure_wtx(run);
        if (r >= 0)
            r = store_meta_put(run->wtx, META_MODEL_KEY, run->env->embed->model_id,
                               strlen(run->env->embed->model_id));
    }
out:
    for (size_t i = 0; i < v.n; i++)
        free(v.paths[i]);
    free(v.paths);
    return r;
}

/* ---- phase 2: chunk, embed, write ------------------------------------------------------- */

static void pending_release(struct pending *f)
{
    free(f->path);
    free(f->content);
    chunk_list_release(&f->chunks);
    free(f->vecs);
    free(f->hashes);
    free(f->reuse);
    free(f->reused);
}

struct old_chunk {
    uint8_t hash[STORE_HASH_SIZE];
    uint64_t id;
};

static int cmp_old_chunk(const void *a, const void *b)
{
    return memcmp(((const struct old_chunk *)a)->hash, ((const struct old_chunk *)b)->hash,
                  STORE_HASH_SIZE);
}

/*
 * Keep the vectors of unchanged chunks: a changed file's previous version is in the store, its
 * chunk rows hash the text that was embedded (write_chunk()), and a new chunk with the same text
 * gets the same vector from the same model, so it is copied instead of embedded.  An edit to
 * one function of a file re-embeds that function (and its title), not the file.  Not after a
 * model change (run->force), nor for rows of an older index format (their hash was of other
 * bytes and simply never matches).
 */
static int find_reusable(struct run *run, struct pending *f)
{
    uint32_t dim = run->env->embed->dim, got;
    struct store_txn *t = run->wtx;
    struct store_file row;
    struct old_chunk *old = NULL;
    size_t n_old = 0;
    int r;

    if (run->force || f->chunks.n == 0)
        return 0;
    if (!t) {
        r = store_read_begin(run->env->store, &t);
        if (r < 0)
            return 0; /* embedding everything is always correct */
    }
    r = store_file_get(t, run->job->repo_id, f->path, &row);
    if (r < 0 || row.n_chunks == 0)
        goto out;
    old = array_alloc(row.n_chunks, sizeof(*old));
    f->reuse = array_alloc(f->chunks.n, dim * sizeof(float));
    f->reused = calloc(f->chunks.n, 1);
    if (!old || !f->reuse || !f->reused) {
        r = -ENOMEM;
        goto out;
    }
    for (uint32_t i = 0; i < row.n_chunks; i++) {
        struct store_chunk ch;
        if (store_chunk_get(t, row.first_chunk + i, &ch) < 0)
            continue;
        memcpy(old[n_old].hash, ch.hash, STORE_HASH_SIZE);
        old[n_old++].id = ch.id;
    }
    qsort(old, n_old, sizeof(*old), cmp_old_chunk);
    for (size_t i = 0; i < f->chunks.n; i++) {
        struct old_chunk key = {0}, *hit;
        memcpy(key.hash, f->hashes[i], sizeof(key.hash));
        hit = bsearch(&key, old, n_old, sizeof(*old), cmp_old_chunk);
        if (hit && store_vector_get(t, hit->id, f->reuse + i * dim, dim, &got) == 0 && got == dim)
            f->reused[i] = 1;
    }
    r = 0;
out:
    if (t != run->wtx)
        store_read_end(t);
    free(old);
    if (r < 0) {
        free(f->reuse);
        free(f->reused);
        f->reuse = NULL;
        f->reused = NULL;
    }
    return r == -ENOMEM ? r : 0;
}

/* Read root/path into a malloc'd buffer, refusing symlinks and anything over `limit` bytes. */
static int read_file(const char *root, const char *path, uint64_t limit, char **ret,
                     size_t *ret_len, int64_t *ret_mtime)
{
    _cleanup_free_ char *full = path_join(root, path);
    _cleanup_close_ int fd = -1;
    _cleanup_free_ char *buf = NULL;
    struct stat st;
    size_t len = 0;

    if (!full)
        return -ENOMEM;
    fd = open(full, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY | O_NONBLOCK);
    if (fd < 0)
        return -errno;
    if (fstat(fd, &st) < 0)
        return -errno;
    if (!S_ISREG(st.st_mode))
        return -EINVAL;
    if ((uint64_t)st.st_size > limit)
        return -EFBIG;
    buf = malloc((size_t)st.st_size + 1);
    if (!buf)
        return -ENOMEM;
    while (len < (size_t)st.st_size) {
        ssize_t n = read(fd, buf + len, (size_t)st.st_size - len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (n == 0)
            break;
        len += (size_t)n;
    }
    buf[len] = '\0';
    *ret = TAKE_PTR(buf);
    *ret_len = len;
    *ret_mtime = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
    return 0;
}

/* Chunk the next file of the todo list onto the pending queue.  0 also when it was skipped. */
static int enqueue_next_file(struct run *run)
{
    struct todo *td = &run->todo[run->next_todo++];
    struct pending f = {0};
    size_t len = 0;
    double t = clock_monotonic_s();
    int r;

    r = read_file(run->job->root, td->path, run->env->scan.max_file_size, &f.content, &len,
                  &f.mtime_ns);
    if (r == -ENOMEM)
        return r;
    if (r < 0 || scan_content_is_binary(f.content, len)) {
        /* Gone, changed into something we skip, or unreadable since the scan: report it. */
        if (r < 0 && r != -ENOENT)
            note_file_error(run, td->path, r);
        free(f.content);
        run->p->files_done++;
        run->p->bytes_done += td->size;
        return 0;
    }
    f.size = len;
    file_hash(f.content, len, f.hash);
    chunk_list_init(&f.chunks);
    r = chunk_file(run->chunker, td->path, f.content, len, &run->chunk_opt, &f.chunks);
    if (r < 0) {
        if (r == -ENOMEM)
            goto fail;
        /* Too many chunks or too big for the chunker: index nothing, but keep the row so the
         * file is not retried until it changes. */
        note_file_error(run, td->path, r);
        chunk_list_init(&f.chunks);
    }
    run->p->chunk_s += clock_monotonic_s() - t;
    /* A big file's syntax tree (several MB even when parsed in segments, chunk-tree.c) is
     * freed by now, but glibc keeps the pages in the worker's arena: give them back, so one
     * big file does not raise the daemon's footprint for the rest of the job. */
    if (len > INDEXER_TRIM_AFTER_BYTES)
        pressure_malloc_trim();
    f.path = strdup(td->path);
    if (!f.path) {
        r = -ENOMEM;
        goto fail;
    }
    /* Each chunk's hash, once: its row keeps it (write_chunk()) and reuse matches on it. */
    f.hashes = array_alloc(MAX(f.chunks.n, (size_t)1), sizeof(*f.hashes));
    if (!f.hashes) {
        r = -ENOMEM;
        goto fail;
    }
    for (size_t i = 0; i < f.chunks.n; i++)
        sha256(f.chunks.items[i].text, f.chunks.items[i].text_len, f.hashes[i]);
    r = find_reusable(run, &f);
    if (r < 0)
        goto fail;
    r = array_grow((void **)&run->pend, &run->cap_pend, run->n_pend + 1, sizeof(*run->pend));
    if (r < 0)
        goto fail;
    run->pend[run->n_pend++] = f;
    run->queued += f.chunks.n;
    /* Refine the estimate: chunks so far per byte so far, times bytes left. */
    run->p->bytes_done += td->size;
    uint64_t known = run->p->chunks_done - run->base_chunks + run->queued;
    if (run->p->bytes_done > 0 && run->p->bytes_total > run->p->bytes_done)
        run->p->chunks_total = run->base_chunks + known +
                               (uint64_t)((double)known / (double)run->p->bytes_done *
                                          (double)(run->p->bytes_total - run->p->bytes_done));
    else
        run->p->chunks_total = run->base_chunks + known;
    return 0;
fail:
    pending_release(&f);
    set_message(run, "out of memory chunking %s", td->path);
    return r;
}

/* Embed n chunks, re-running pieces after -ENOMEM as the governor directs. */
static int embed_chunks(struct run *run, const char *const *texts, const size_t *lens, size_t n,
                        float *out)
{
    const struct indexer_embed *e = run->env->embed;
    size_t done = 0, piece = n;
    unsigned ooms = 0;
    int r;

    while (done < n) {
        size_t m = MIN(piece, n - done);

        r = e->embed(e->ctx, texts + done, lens + done, m, out + done * e->dim);
        if (r == -ENOMEM) {
            unsigned actions = 0;
            int next;

            ooms++;
            if (run->env->gov) {
                pthread_mutex_lock(run->env->gov_lock);
                next = governor_batch_oom(run->env->gov, (unsigned)m, &actions);
                pthread_mutex_unlock(run->env->gov_lock);
            } else {
                next = m > 1 ? (int)(m / 2) : -ENOMEM;
            }
            if (next < 0) {
                set_message(run,
                            "embedding ran out of memory %u times, down to %zu chunks "
                            "per batch; raise the memory limit",
                            ooms, m);
                return -ENOMEM;
            }
            if (actions & GOVERNOR_ACTION_MALLOC_TRIM)
                pressure_malloc_trim();
            log_debug("indexer: embedding %zu chunks ran out of memory, retrying by %d", m, next);
            piece = (size_t)next;
            continue;
        }
        if (r < 0) {
            set_message(run, "embedding failed: %s", strerror(-r));
            return r;
        }
        done += m;
    }
    return 0;
}

static bool over_budget(const struct run *run)
{
    return run->wtx && store_write_ops(run->wtx) >= run->txn_max_ops;
}

/*
 * Write what is embedded, in queue order: the head file's chunks as their vectors arrive, and
 * its file row once all are in, then the next file.  The transaction is committed whenever it
 * reaches its write budget (INDEXER_TXN_MAX_OPS in indexer.h), between two chunks of a file if
 * need be (stage_head()), so no file, however big, makes a bigger one.
 */
static int flush_embedded(struct run *run)
{
    uint32_t dim = run->env->embed->dim;
    int r;

    while (run->n_pend > 0) {
        struct pending *f = &run->pend[0];
        size_t base = f->written;

        while (f->written < f->embedded) {
            r = write_chunk(run, f, f->vecs + (f->written - base) * dim);
            if (r < 0)
                return r;
            if (over_budget(run) && f->written < f->chunks.n) {
                r = checkpoint(run, JOB_STATE_RUNNING, 0);
                if (r < 0)
                    return r;
            }
        }
        if (f->written < f->chunks.n)
            return 0; /* the rest of its chunks are still to be embedded */
        r = write_file_row(run, f);
        if (r < 0)
            return r;
        run->p->files_done++;
        pending_release(f);
        /* Out of the queue before a checkpoint, whose job row counts what is still queued. */
        memmove(run->pend, run->pend + 1, (run->n_pend - 1) * sizeof(*run->pend));
        run->n_pend--;
        if (over_budget(run)) {
            r = checkpoint(run, JOB_STATE_RUNNING, 0);
            if (r < 0)
                return r;
        }
    }
    return 0;
}

/*
 * Wait while the governor has paused feeding (CRITICAL), committing first.  The pause is bounded:
 * when the level has not dropped after PAUSE_MAX_NS, what holds the memory is not this job's
 * work (everything is committed and the heap trimmed; another process in the cgroup, a search
 * cache) and waiting would stall the job for ever, so it goes on with the batch size the
 * governor has already cut (halved on entering CRITICAL) and does not pause again until the
 * level has left CRITICAL.  An allocation that then fails still halves the batch and retries.
 */
static int wait_while_paused(struct run *run)
{
    int64_t waited = 0;
    int r;

    if (!feed_paused(run)) {
        run->pause_expired = false;
        return 0;
    }
    if (run->pause_expired)
        return 0;
    if (run->dirty) {
        r = checkpoint(run, JOB_STATE_RUNNING, 0);
        if (r < 0)
            return r;
    }
    pressure_malloc_trim();
    log_info("indexer: memory pressure is critical, pausing job %" PRIu64, run->job->id);
    while (feed_paused(run) && !cancelled(run)) {
        struct timespec ts = {0, PAUSE_POLL_NS};

        if (waited >= PAUSE_MAX_NS) {
            run->pause_expired = true;
            log_warning("indexer: memory pressure still critical after %lld s with job %" PRIu64
                        " flushed; going on in small batches",
                        (long long)(PAUSE_MAX_NS / 1000000000LL), run->job->id);
            break;
        }
        nanosleep(&ts, NULL);
        waited += PAUSE_POLL_NS;
    }
    return 0;
}

/* Cut one batch from the queue, embed it and write finished files. 0, or <0. */
static int run_batch(struct run *run)
{
    const struct indexer_embed *e = run->env->embed;
    size_t max_chunks, n = 0;
    uint64_t max_tokens, tokens = 0;
    const char **texts = NULL;
    size_t *lens = NULL;
    float *out = NULL;
    double t;
    int r;

    size_t taken = 0; /* chunks consumed from the queue: n embedded plus the reused */

    batch_limits(run, &max_chunks, &max_tokens);
    run->p->batch_size = (unsigned)max_chunks;
    texts = array_alloc(max_chunks, sizeof(*texts));
    lens = array_alloc(max_chunks, sizeof(*lens));
    if (!texts || !lens) {
        r = -ENOMEM;
        goto out;
    }
    /* Walk the queue from the first file with unembedded chunks; a reused chunk takes its
     * place in the batch (bounded by max_chunks too) but is not embedded. */
    for (size_t fi = 0; fi < run->n_pend && taken < max_chunks; fi++) {
        struct pending *f = &run->pend[fi];
        for (size_t ci = f->embedded; ci < f->chunks.n && taken < max_chunks; ci++) {
            const struct chunk *c = &f->chunks.items[ci];
            if (f->reused && f->reused[ci]) {
                taken++;
                continue;
            }
            if (n > 0 && tokens + c->n_tokens > max_tokens)
                goto cut;
            texts[n] = c->text;
            lens[n] = c->text_len;
            tokens += c->n_tokens;
            n++;
            taken++;
        }
    }
cut:
    out = array_alloc(MAX(n, (size_t)1), e->dim * sizeof(float));
    if (!out) {
        r = -ENOMEM;
        goto out;
    }
    t = clock_monotonic_s();
    r = embed_chunks(run, texts, lens, n, out);
    run->p->embed_s += clock_monotonic_s() - t;
    if (r < 0)
        goto out;
    /* Hand the vectors back to their files, in the same order they were cut: the embedded
     * ones from out, the reused ones from their file. */
    size_t k = 0, left = taken;
    for (size_t fi = 0; fi < run->n_pend && left > 0; fi++) {
        struct pending *f = &run->pend[fi];
        size_t m = MIN(f->chunks.n - f->embedded, left), held = f->embedded - f->written;

        if (m == 0)
            continue;
        r = array_grow((void **)&f->vecs, &f->cap_vecs, held + m, e->dim * sizeof(float));
        if (r < 0)
            goto out;
        for (size_t i = 0; i < m; i++) {
            size_t ci = f->embedded + i;
            const float *src =
                f->reused && f->reused[ci] ? f->reuse + ci * e->dim : out + (k++) * e->dim;
            memcpy(f->vecs + (held + i) * e->dim, src, e->dim * sizeof(float));
        }
        f->embedded += m;
        left -= m;
    }
    run->queued -= taken;
    run->p->chunks_done += taken;
    run->p->chunks_reused += taken - n;
    run->p->tokens_done += tokens;
    if (run->env->gov) {
        pthread_mutex_lock(run->env->gov_lock);
        governor_batch_done(run->env->gov, (unsigned)n);
        pthread_mutex_unlock(run->env->gov_lock);
    }
    r = flush_embedded(run);
    if (r < 0)
        goto out;
    run->batches_since_checkpoint++;
    unsigned actions = take_actions(run);
    if (run->batches_since_checkpoint >= run->checkpoint_every ||
        (actions & (GOVERNOR_ACTION_CHECKPOINT | GOVERNOR_ACTION_FLUSH))) {
        r = checkpoint(run, JOB_STATE_RUNNING, 0);
        if (r < 0)
            goto out;
    }
    if (actions & GOVERNOR_ACTION_MALLOC_TRIM) {
        /* With no transaction open (CRITICAL's FLUSH has just committed, above), LMDB's kept
         * pages can go too. */
        if (run->wtx) {
            pressure_malloc_trim();
        } else {
            r = release_memory(run);
            if (r < 0)
                goto out;
        }
    }
    report(run);
out:
    free(texts);
    free(lens);
    free(out);
    return r;
}

static int phase_embed(struct run *run)
{
    int r;

    run->p->phase = "embedding";
    report(run);
    for (;;) {
        size_t want;
        uint64_t max_tokens;

        if (cancelled(run))
            return -ECANCELED;
        r = wait_while_paused(run);
        if (r < 0)
            return r;
        batch_limits(run, &want, &max_tokens);
        /* Chunk ahead until a full batch is queued or the list is exhausted. */
        while (run->queued < want && run->next_todo < run->n_todo) {
            r = enqueue_next_file(run);
            if (r < 0)
                return r;
            /* Files without chunks are complete at once. */
            r = flush_embedded(run);
            if (r < 0)
                return r;
        }
        if (run->queued == 0) {
            r = flush_embedded(run);
            return r;
        }
        r = run_batch(run);
        if (r < 0)
            return r;
    }
}

void indexer_result_release(struct indexer_result *r)
{
    for (size_t i = 0; i < r->n_errors; i++)
        free(r->errors[i].path);
    free(r->errors);
    scan_report_release(&r->scan);
    *r = (struct indexer_result){0};
}

static int load_job_row(struct run *run)
{
    struct store_txn *t;
    struct store_job j;
    int r;

    run->created_ns = clock_realtime_ns();
    r = store_read_begin(run->env->store, &t);
    if (r < 0)
        return r;
    if (store_job_get(t, run->job->id, &j) == 0) {
        run->created_ns = j.created_ns;
        /* A job interrupted by a kill or a stop: files and chunks its checkpoints committed
         * are skipped by this run's scan, so they count as done from the start. */
        if (j.state == JOB_STATE_QUEUED || j.state == JOB_STATE_RUNNING) {
            run->base_files = j.files_done;
            run->base_chunks = j.chunks_done;
            run->p->files_done = j.files_done;
            run->p->chunks_done = j.chunks_done;
        }
    }
    store_read_end(t);
    return 0;
}

int indexer_run(const struct indexer_env *env, const struct indexer_job *job,
                struct indexer_result *ret)
{
    struct run run = {.env = env, .job = job, .res = ret};
    uint32_t state;
    int r;

    *ret = (struct indexer_result){0};
    run.p = &ret->progress;
    run.t0 = clock_monotonic_s();
    run.p->eta_s = -1;
    run.chunk_opt = env->chunk;
    run.chunk_opt.count_tokens = env->embed->count_tokens;
    run.chunk_opt.count_ctx = env->embed->count_ctx;
    run.chunk_opt.max_tokens = env->embed->max_tokens;
    if (run.chunk_opt.merge_tokens > run.chunk_opt.max_tokens)
        run.chunk_opt.merge_tokens = run.chunk_opt.max_tokens;

    run.txn_max_ops = env->txn_max_ops ? env->txn_max_ops : INDEXER_TXN_MAX_OPS;
    r = load_job_row(&run);
    if (r < 0) {
        set_message(&run, "cannot read the job row: %s", store_last_error());
        return r;
    }
    r = chunker_new(&run.chunker);
    if (r < 0) {
        set_message(&run, "cannot create a chunker: %s", strerror(-r));
        return r;
    }
    if (env->gov) {
        pthread_mutex_lock(env->gov_lock);
        governor_job_begin(env->gov);
        governor_set_token_cost(env->gov, env->embed->bytes_per_token, env->embed->max_tokens);
        pthread_mutex_unlock(env->gov_lock);
    }

    r = phase_scan(&run);
    if (r >= 0) {
        /* COARCH_CHECKPOINT_FREQUENCY, else every 5 batches (3 for jobs over 10,000 chunks). */
        struct pressure_config pc = {.checkpoint_frequency = env->checkpoint_every};
        run.checkpoint_every = pressure_checkpoint_frequency(&pc, run.p->chunks_total);
        /* Commit the scan's deletions before the long part, so they count as progress. */
        r = checkpoint(&run, JOB_STATE_RUNNING, 0);
    }
    if (r >= 0)
        r = phase_embed(&run);

    if (r >= 0) {
        state = JOB_STATE_DONE;
        run.p->chunks_total = run.p->chunks_done;
        run.p->phase = "done";
    } else {
        state = r == -ECANCELED ? JOB_STATE_CANCELLED : JOB_STATE_FAILED;
        if (r == -ECANCELED)
            set_message(&run, "cancelled");
        run.p->phase = job_state_to_string(state);
    }
    /*
     * The final checkpoint keeps every completed file, also for a cancelled or failed job.  If
     * the open transaction itself failed (a poisoned write), it is gone; record the job's end
     * in a fresh one so the row never claims to be running.
     */
    {
        char saved[sizeof(ret->message)];
        int rc;

        memcpy(saved, ret->message, sizeof(saved));
        rc = checkpoint(&run, state, r < 0 ? r : 0);
        if (rc < 0 && r < 0)
            rc = checkpoint(&run, state, r);
        if (r < 0)
            memcpy(ret->message, saved, sizeof(saved));
        if (rc < 0 && r >= 0)
            r = rc;
    }
    /* A stopped job reports what its index holds, as its row does (and `repos` will): the
     * chunks of a file it did not finish are not searchable and are dropped at the next run. */
    if (r < 0)
        run.p->chunks_done -= MIN(run.p->chunks_done, chunks_uncommitted(&run));
    if (r >= 0) {
        struct store_txn *t;
        if (store_write_begin(env->store, &t) >= 0) {
            if (store_repo_set_indexed(t, job->repo_id, clock_realtime_ns()) >= 0)
                store_write_commit(t);
            else
                store_write_abort(t);
        }
    }
    report(&run);

    for (size_t i = 0; i < run.n_pend; i++)
        pending_release(&run.pend[i]);
    free(run.pend);
    for (size_t i = 0; i < run.n_todo; i++)
        free(run.todo[i].path);
    free(run.todo);
    strset_release(&run.seen);
    chunker_free(run.chunker);
    return r;
}
