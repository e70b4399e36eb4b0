/*
 * engine.c - see engine.h for the design.
 */
#include "engine.h"

#include "cpu.h"
#include "daemon.h"
#include "embedder.h"
#include "governor.h"
#include "indexer.h"
#include "log.h"
#include "macro.h"
#include "paths.h"
#include "pressure-config.h"
#include "pressure.h"
#include "proto.h"
#include "rpc.h"
#include "search.h"
#include "store-chunk.h"
#include "store-job.h"
#include "store-repo.h"
#include "timer.h"
#include "tokenizer.h"
#include "watch.h"
#include "work.h"

#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_MODEL "all-MiniLM-L6-v2"
#define PROGRESS_MIN_INTERVAL_S 0.2
#define SNIPPET_MAX_LINES 8
#define SNIPPET_MAX_BYTES 1024
#define EMBED_MAX_TEXTS 1024
#define RECENT_JOBS 64

struct job {
    uint64_t id;
    uint32_t repo;
    char *root;
    atomic_bool cancel;      /* stop at the next batch (the indexer's flag) */
    atomic_bool interrupted; /* ...because the daemon stops: resume at the next start */
    bool resumed;
    uint32_t state;
    int error;
    char message[256];
    struct indexer_progress progress;
    bool has_progress;
    double last_notify;
    struct rpc_request **waiters; /* `index {wait: true}` requests answered at the end */
    size_t n_waiters;
    uint64_t scan_errors, file_errors;
    struct job *next; /* queue link */
};

struct engine {
    struct daemon *d;
    struct event_loop *el;
    struct rpc *rpc;
    struct store *store;

    /* the model */
    char *model_name, *model_dir;
    pthread_mutex_t emb_lock;
    struct embedder *emb;
    /* Set once the model has loaded, for `status` (which must not wait on emb_lock while a
     * batch runs); the backend name is a static string. */
    atomic_uint model_dim;
    _Atomic(const char *) model_backend;
    _Atomic(const char *) model_precision; /* COARCH_PRECISION as the backend runs it */
    const char *precision; /* what the embedder is asked for: static string, set at start */
    char emb_error[512];
    struct tokens count_tokens; /* worker thread only (the chunker's token counter) */

    /* memory */
    struct pressure_config pcfg;
    struct governor *gov;
    pthread_mutex_t gov_lock;
    struct pressure_source *psrc;
    struct event_timer *gov_timer;
    struct event_watch *psi_watch; /* the PSI trigger's fd on the loop; NULL without PSI */
    int psi_fd;
    atomic_uint actions;
    unsigned last_level;

    struct search_cache *cache;

    /* jobs: queue and current guarded by lock; jobs are owned by the loop thread otherwise */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    pthread_mutex_t index_lock; /* serialises `index` registrations (index_work) */
    struct job *queue_head, *queue_tail;
    struct job *current;
    bool stopping;
    pthread_t worker;
    bool worker_started;
    struct job *recent[RECENT_JOBS]; /* finished jobs, newest last (loop thread) */
    size_t n_recent;
};

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int64_t realtime_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static struct job *job_free(struct job *j)
{
    if (!j)
        return NULL;
    free(j->root);
    free(j->waiters);
    free(j);
    return NULL;
}

/* ---- the model -------------------------------------------------------------------------- */

/* Answer a failed search/embed: a model that cannot be loaded gets its own code, whatever the
 * errno (a missing file is not a missing repository, a malformed one not a malformed request). */
static void reply_op_error(struct rpc_request *req, int r, bool model_unavailable,
                           const char *message)
{
    if (model_unavailable)
        rpc_request_reply_error(req, PROTO_ERROR_MODEL_UNAVAILABLE, "%s", message);
    else
        rpc_request_reply_errno(req, r, "%s", message);
}

/*
 * The GEMM precision the model runs at: COARCH_PRECISION when set (a bad name, or one this CPU
 * cannot run, stops coarchd now, like the other settings), else "auto": int8 where the CPU
 * has AVX512_VNNI and AVX512_BF16 (retrieval on the shared eval is the same as fp32's, hybrid
 * MRR@10 0.510 vs 0.509, for 2.3 times the tokens per CPU-second), else fp32.  The CPU
 * backend is the only one, so its instructions are what matter.
 */
static int choose_precision(const char **ret)
{
    const char *v = getenv("COARCH_PRECISION"), *simd = getenv("COARCH_CPU_KERNELS"),
               *missing = NULL;
    enum embed_precision p;

    if (!v || !v[0] || strcmp(v, "auto") == 0) {
        /* COARCH_CPU_KERNELS=generic asks for the portable kernels: fp32 is theirs. */
        bool generic = simd && strcmp(simd, "generic") == 0;
        p = !generic && embed_cpu_precision_supported(EMBED_PRECISION_INT8, NULL)
                ? EMBED_PRECISION_INT8
                : EMBED_PRECISION_FP32;
        *ret = embed_precision_name(p);
        return 0;
    }
    if (embed_precision_from_name(v, &p) < 0) {
        log_error("COARCH_PRECISION=%s: expected auto, fp32, bf16 or int8", v);
        return -EINVAL;
    }
    if (!embed_cpu_precision_supported(p, &missing)) {
        log_error("COARCH_PRECISION=%s: this CPU or build lacks %s", v, missing);
        return -EINVAL;
    }
    *ret = embed_precision_name(p);
    return 0;
}

/* With emb_lock held: load the embedder if it is not loaded.  0, or <0 with emb_error set. */
static int ensure_embedder(struct engine *e)
{
    struct embedder_options o = {0};
    char *msg = NULL;
    int r;

    if (e->emb)
        return 0;
    o.precision = e->precision;
    r = embedder_load(e->model_dir, &o, &e->emb, &msg);
    if (r < 0) {
        snprintf(e->emb_error, sizeof(e->emb_error),
                 "cannot load the embedding model %s from %s: %s", e->model_name, e->model_dir,
                 msg ? msg : strerror(-r));
        free(msg);
        log_error("%s", e->emb_error);
        return r;
    }
    atomic_store(&e->model_backend, embedder_backend_name(e->emb));
    atomic_store(&e->model_precision, embedder_precision(e->emb));
    atomic_store(&e->model_dim, embedder_dim(e->emb));
    log_info("model %s loaded (%u dims, max %u tokens, %s backend, %s)", e->model_name,
             embedder_dim(e->emb), embedder_max_seq_length(e->emb), embedder_backend_name(e->emb),
             embedder_precision(e->emb));
    return 0;
}

static int embed_locked(struct engine *e, const char *const *texts, const size_t *lens, size_t n,
                        float *out)
{
    int r;

    pthread_mutex_lock(&e->emb_lock);
    r = ensure_embedder(e);
    if (r >= 0)
        r = embedder_embed(e->emb, texts, lens, n, out);
    pthread_mutex_unlock(&e->emb_lock);
    return r;
}

static int indexer_embed_cb(void *ctx, const char *const *texts, const size_t *lens, size_t n,
                            float *out)
{
    return embed_locked(ctx, texts, lens, n, out);
}

/* The chunker's token counter: WordPiece tokens without the special ones.  Worker thread. */
static size_t count_tokens_cb(void *ctx, const char *text, size_t len)
{
    struct engine *e = ctx;
    const struct tokenizer *t = embedder_tokenizer(e->emb);
    int n = tokenizer_encode(t, text, len, UINT32_MAX / 2, &e->count_tokens);

    if (n < 0)
        return len / 3 + 1; /* out of memory: a pessimistic estimate keeps chunks small */
    return (size_t)n - tokenizer_num_special_tokens(t);
}

/* ---- notifications ---------------------------------------------------------------------- */

static int pack_progress_fields(msgpack_packer *pk, const struct job *j, struct engine *e);

static int pack_progress_notification(msgpack_packer *pk, void *userdata)
{
    void **args = userdata;
    return pack_progress_fields(pk, args[0], args[1]);
}

#define PROGRESS_FIELDS 22

static int pack_progress_fields(msgpack_packer *pk, const struct job *j, struct engine *e)
{
    const struct indexer_progress *p = &j->progress;
    struct pressure_snapshot s = {0};
    int r = 0;

    if (e->gov) {
        pthread_mutex_lock(&e->gov_lock);
        governor_snapshot(e->gov, &s);
        pthread_mutex_unlock(&e->gov_lock);
    }
    r |= proto_pack_kv_uint(pk, "job", j->id);
    r |= proto_pack_kv_str(pk, "repo", j->root);
    r |= proto_pack_kv_str(pk, "state", job_state_to_string(j->state));
    r |= proto_pack_kv_str(pk, "phase", p->phase ? p->phase : "queued");
    r |= proto_pack_kv_uint(pk, "files_done", p->files_done);
    r |= proto_pack_kv_uint(pk, "files_total", p->files_total);
    r |= proto_pack_kv_uint(pk, "files_scanned", p->files_scanned);
    r |= proto_pack_kv_uint(pk, "chunks_done", p->chunks_done);
    r |= proto_pack_kv_uint(pk, "chunks_total", p->chunks_total);
    r |= proto_pack_kv_double(pk, "chunks_per_s", p->chunks_per_s);
    r |= proto_pack_kv_double(pk, "eta_s", p->eta_s);
    r |= proto_pack_kv_double(pk, "elapsed_s", p->elapsed_s);
    r |= proto_pack_kv_uint(pk, "checkpoints", p->checkpoints);
    r |= proto_pack_kv_uint(pk, "batch_size", s.batch_size ? s.batch_size : p->batch_size);
    r |= proto_pack_kv_str(pk, "level", s.level_name ? s.level_name : "unknown");
    r |= proto_pack_kv_uint(pk, "usage_bytes", s.usage);
    r |= proto_pack_kv_uint(pk, "limit_bytes", s.limit);
    r |= proto_pack_kv_uint(pk, "rss_bytes", s.rss);
    r |= proto_pack_kv_uint(pk, "vms_bytes", s.vms);
    r |= proto_pack_kv_uint(pk, "cgroup_usage_bytes", s.cgroup_usage);
    r |= proto_pack_kv_uint(pk, "gpu_allocated_bytes", s.gpu_allocated);
    r |= proto_pack_kv_bool(pk, "resumed", j->resumed);
    return r ? -ENOMEM : 0;
}

static void notify_progress(struct engine *e, struct job *j, bool force)
{
    double t = now_s();
    void *args[2] = {j, e};

    if (!force && t - j->last_notify < PROGRESS_MIN_INTERVAL_S)
        return;
    j->last_notify = t;
    rpc_notify(e->rpc, RPC_EVENT_PROGRESS, "progress", PROGRESS_FIELDS, pack_progress_notification,
               args);
}

/* ---- the worker thread ------------------------------------------------------------------ */

struct progress_post {
    struct engine *e;
    struct job *j;
    struct indexer_progress p;
};

static void on_progress_posted(void *userdata)
{
    struct progress_post *pp = userdata;

    pp->j->progress = pp->p;
    pp->j->has_progress = true;
    notify_progress(pp->e, pp->j, false);
    free(pp);
}

struct job_ctx {
    struct engine *e;
    struct job *j;
};

/* Worker thread: hand a progress snapshot to the loop thread. */
static void on_indexer_progress(void *userdata, const struct indexer_progress *p)
{
    struct job_ctx *jc = userdata;
    struct progress_post *pp = malloc(sizeof(*pp));

    if (!pp)
        return; /* progress is advisory: dropping one costs nothing */
    *pp = (struct progress_post){.e = jc->e, .j = jc->j, .p = *p};
    if (event_post(jc->e->el, on_progress_posted, pp) < 0)
        free(pp);
}

static void on_committed(void *userdata, uint32_t repo)
{
    struct engine *e = userdata;

    search_cache_invalidate(e->cache, repo);
}

static int pack_job(msgpack_packer *pk, const struct job *j, struct engine *e);

static int pack_job_result(msgpack_packer *pk, void *userdata)
{
    void **args = userdata;
    return pack_job(pk, args[0], args[1]);
}

struct done_post {
    struct engine *e;
    struct job *j;
    int r;
    struct indexer_result res;
};

static void remember_job(struct engine *e, struct job *j)
{
    if (e->n_recent == RECENT_JOBS) {
        job_free(e->recent[0]);
        memmove(e->recent, e->recent + 1, (RECENT_JOBS - 1) * sizeof(*e->recent));
        e->n_recent--;
    }
    e->recent[e->n_recent++] = j;
}

/* Loop thread: a job ended (or was interrupted by the stop). */
static void on_job_done(void *userdata)
{
    struct done_post *dp = userdata;
    struct engine *e = dp->e;
    struct job *j = dp->j;
    void *args[2] = {j, e};

    j->progress = dp->res.progress;
    j->has_progress = true;
    j->error = dp->r < 0 ? dp->r : 0;
    j->scan_errors = dp->res.scan.errors;
    j->file_errors = dp->res.errors_total;
    snprintf(j->message, sizeof(j->message), "%s", dp->res.message);
    if (dp->r >= 0)
        j->state = JOB_STATE_DONE;
    else if (dp->r == -ECANCELED)
        j->state = atomic_load(&j->interrupted) ? JOB_STATE_QUEUED : JOB_STATE_CANCELLED;
    else
        j->state = JOB_STATE_FAILED;
    if (j->state == JOB_STATE_DONE)
        log_info("job %" PRIu64 " (%s): done: %" PRIu64 " files indexed, %" PRIu64
                 " unchanged, %" PRIu64 " deleted, %" PRIu64 " chunks in %.1f s",
                 j->id, j->root, j->progress.files_done, j->progress.files_unchanged,
                 j->progress.files_deleted, j->progress.chunks_done, j->progress.elapsed_s);
    else if (j->state == JOB_STATE_FAILED)
        log_error("job %" PRIu64 " (%s) failed: %s", j->id, j->root, j->message);
    else
        log_info("job %" PRIu64 " (%s): %s", j->id, j->root,
                 j->state == JOB_STATE_QUEUED ? "interrupted, resumes at next start" : "cancelled");
    notify_progress(e, j, true);
    for (size_t i = 0; i < j->n_waiters; i++)
        rpc_request_reply_ok(j->waiters[i], pack_job_result, args);
    j->n_waiters = 0;
    indexer_result_release(&dp->res);
    free(dp);
    pthread_mutex_lock(&e->lock);
    if (e->current == j)
        e->current = NULL;
    pthread_mutex_unlock(&e->lock);
    remember_job(e, j);
}

/*
 * Set the state (and error) of job `id`'s row in a transaction of its own.  Best effort: a job
 * whose row cannot be updated is re-run or reported again at the next start.  Any thread that
 * holds no read transaction.
 */
static void set_job_row_state(struct engine *e, uint64_t id, uint32_t state, int error)
{
    struct store_txn *t;
    struct store_job row;

    if (store_write_begin(e->store, &t) < 0)
        return;
    if (store_job_get(t, id, &row) == 0) {
        struct store_job nr = row;
        nr.state = state;
        nr.error = error;
        nr.updated_ns = realtime_ns();
        if (store_job_put(t, &nr) == 0) {
            if (store_write_commit(t) < 0)
                log_warning("job %" PRIu64 ": cannot record state %s: %s", id,
                            job_state_to_string(state), store_last_error());
            return;
        }
    }
    store_write_abort(t);
}

static void run_job(struct engine *e, struct job *j)
{
    struct done_post *dp = calloc(1, sizeof(*dp));
    struct job_ctx jc = {.e = e, .j = j};
    struct indexer_embed emb = {0};
    struct indexer_env env = {0};
    struct indexer_job ij = {0};
    int r;

    if (!dp)
        return; /* the job stays queued in the store and resumes at the next start */
    dp->e = e;
    dp->j = j;

    /* Cancelled while queued by something that could not dequeue it (repo.remove): its
     * repository may be gone, so do not start. */
    if (atomic_load(&j->cancel) && !atomic_load(&j->interrupted)) {
        dp->r = -ECANCELED;
        snprintf(dp->res.message, sizeof(dp->res.message), "cancelled before it started");
        set_job_row_state(e, j->id, JOB_STATE_CANCELLED, -ECANCELED);
        if (event_post(e->el, on_job_done, dp) < 0)
            free(dp);
        return;
    }

    pthread_mutex_lock(&e->emb_lock);
    r = ensure_embedder(e);
    if (r >= 0) {
        struct embedder_memory m = {0};
        emb.dim = embedder_dim(e->emb);
        emb.max_tokens = embedder_max_seq_length(e->emb);
        embedder_get_memory(e->emb, &m);
        /* Activations per token: a dozen rows of hidden size plus the FFN row, fp32. */
        const struct model_config *mc = embedder_config(e->emb);
        emb.bytes_per_token = (uint64_t)(12 * mc->hidden + 2 * mc->intermediate) * 4;
    }
    pthread_mutex_unlock(&e->emb_lock);
    if (r < 0) {
        dp->r = r;
        snprintf(dp->res.message, sizeof(dp->res.message), "%s", e->emb_error);
        set_job_row_state(e, j->id, JOB_STATE_FAILED, r);
        if (event_post(e->el, on_job_done, dp) < 0)
            free(dp);
        return;
    }
    emb.ctx = e;
    emb.model_id = e->model_name;
    emb.count_tokens = count_tokens_cb;
    emb.count_ctx = e;
    emb.embed = indexer_embed_cb;

    env.store = e->store;
    env.embed = &emb;
    env.gov = e->gov;
    env.gov_lock = &e->gov_lock;
    env.actions = &e->actions;
    scan_options_init(&env.scan);
    chunk_options_init(&env.chunk);
    {
        /* Experiment knob: pieces below this many tokens merge with a neighbour (chunk.h). */
        const char *v = getenv("COARCH_CHUNK_MIN_TOKENS");
        if (v && *v)
            env.chunk.min_tokens = strtoul(v, NULL, 10);
    }
    env.checkpoint_every = e->pcfg.checkpoint_frequency;
    env.committed = on_committed;
    env.userdata = e;

    ij.id = j->id;
    ij.repo_id = j->repo;
    ij.root = j->root;
    ij.cancel = &j->cancel;
    ij.progress = on_indexer_progress;
    ij.progress_userdata = &jc;

    log_info("job %" PRIu64 ": indexing %s%s", j->id, j->root, j->resumed ? " (resumed)" : "");
    dp->r = indexer_run(&env, &ij, &dp->res);
    if (dp->r == -ECANCELED && atomic_load(&j->interrupted))
        set_job_row_state(e, j->id, JOB_STATE_QUEUED, 0); /* the daemon stopped, not a user */
    if (event_post(e->el, on_job_done, dp) < 0) {
        indexer_result_release(&dp->res);
        free(dp);
    }
}

/* Loop thread: the worker thread has returned; let the daemon finish stopping. */
static void on_worker_exit(void *userdata)
{
    struct engine *e = userdata;

    if (e->worker_started) {
        pthread_join(e->worker, NULL);
        e->worker_started = false;
    }
    daemon_release(e->d);
}

static void *worker_main(void *userdata)
{
    struct engine *e = userdata;

    for (;;) {
        struct job *j;

        pthread_mutex_lock(&e->lock);
        while (!e->queue_head && !e->stopping)
            pthread_cond_wait(&e->cond, &e->lock);
        if (e->stopping) {
            pthread_mutex_unlock(&e->lock);
            break;
        }
        j = e->queue_head;
        e->queue_head = j->next;
        if (!e->queue_head)
            e->queue_tail = NULL;
        j->next = NULL;
        e->current = j;
        j->state = JOB_STATE_RUNNING;
        pthread_mutex_unlock(&e->lock);
        run_job(e, j);
    }
    /* The daemon holds its stop sequence open until we are gone (engine_new's daemon_hold). */
    if (event_post(e->el, on_worker_exit, e) < 0)
        log_debug("engine: the loop closed before the worker exited");
    return NULL;
}

/* Loop thread: append a job to the queue. */
static void enqueue(struct engine *e, struct job *j)
{
    pthread_mutex_lock(&e->lock);
    if (e->queue_tail)
        e->queue_tail->next = j;
    else
        e->queue_head = j;
    e->queue_tail = j;
    pthread_cond_signal(&e->cond);
    pthread_mutex_unlock(&e->lock);
}

/* Loop thread: the queued or running job of `repo`, if any. */
static struct job *active_job_of(struct engine *e, uint32_t repo)
{
    struct job *found = NULL;

    pthread_mutex_lock(&e->lock);
    if (e->current && e->current->repo == repo)
        found = e->current;
    for (struct job *j = e->queue_head; j && !found; j = j->next)
        if (j->repo == repo)
            found = j;
    pthread_mutex_unlock(&e->lock);
    return found;
}

static struct job *find_job(struct engine *e, uint64_t id)
{
    struct job *found = NULL;

    pthread_mutex_lock(&e->lock);
    if (e->current && e->current->id == id)
        found = e->current;
    for (struct job *j = e->queue_head; j && !found; j = j->next)
        if (j->id == id)
            found = j;
    pthread_mutex_unlock(&e->lock);
    for (size_t i = 0; i < e->n_recent && !found; i++)
        if (e->recent[i]->id == id)
            found = e->recent[i];
    return found;
}

/* Finished job rows kept in the store (`jobs` lists them); older ones are pruned. */
#define JOB_ROWS_KEEP 100

struct ended_ids {
    uint64_t *ids;
    size_t n, cap;
};

static int collect_ended(void *userdata, const struct store_job *job)
{
    struct ended_ids *l = userdata;

    if (job->state != JOB_STATE_DONE && job->state != JOB_STATE_FAILED &&
        job->state != JOB_STATE_CANCELLED)
        return 0;
    if (array_grow((void **)&l->ids, &l->cap, l->n + 1, sizeof(*l->ids)) < 0)
        return -ENOMEM;
    l->ids[l->n++] = job->id;
    return 0;
}

/* Delete all but the newest JOB_ROWS_KEEP ended jobs' rows, inside t, so the history (and the
 * `jobs` answer) stays bounded however often a repository is indexed. */
static int prune_job_rows(struct store_txn *t)
{
    struct ended_ids l = {0};
    int r = store_job_foreach(t, collect_ended, &l);

    for (size_t i = 0; r >= 0 && l.n > JOB_ROWS_KEEP && i < l.n - JOB_ROWS_KEEP; i++)
        r = store_job_delete(t, l.ids[i]); /* ids ascend with age */
    free(l.ids);
    return r;
}

/* Create the job row and the in-memory job.  On the pool (index_work): it takes the write lock. */
static int create_job(struct engine *e, const char *root, uint32_t repo, struct job **ret)
{
    struct job *j = calloc(1, sizeof(*j));
    struct store_txn *t = NULL;
    int r;

    if (!j)
        return -ENOMEM;
    j->root = strdup(root);
    if (!j->root) {
        r = -ENOMEM;
        goto fail;
    }
    j->repo = repo;
    j->state = JOB_STATE_QUEUED;
    r = store_write_begin(e->store, &t);
    if (r < 0)
        goto fail;
    r = store_job_id_alloc(t, &j->id);
    if (r >= 0) {
        int64_t now = realtime_ns();
        struct store_job row = {.id = j->id,
                                .repo_id = repo,
                                .state = JOB_STATE_QUEUED,
                                .created_ns = now,
                                .updated_ns = now};
        r = store_job_put(t, &row);
    }
    if (r >= 0)
        r = prune_job_rows(t);
    if (r < 0) {
        store_write_abort(t);
        goto fail;
    }
    r = store_write_commit(t);
    if (r < 0)
        goto fail;
    *ret = j;
    return 0;
fail:
    job_free(j);
    return r;
}

/* ---- RPC: index, jobs, job.cancel ------------------------------------------------------- */

static int pack_job(msgpack_packer *pk, const struct job *j, struct engine *e)
{
    int r;

    r = msgpack_pack_map(pk, PROGRESS_FIELDS + 8);
    r |= pack_progress_fields(pk, j, e);
    r |= proto_pack_kv_uint(pk, "files_unchanged", j->progress.files_unchanged);
    r |= proto_pack_kv_uint(pk, "files_deleted", j->progress.files_deleted);
    r |= proto_pack_kv_uint(pk, "bytes_done", j->progress.bytes_done);
    r |= proto_pack_kv_uint(pk, "tokens_done", j->progress.tokens_done);
    /* Seconds spent per stage by the job's run in this daemon (a resumed job counts from its
     * resumption): where the time goes, for `coarchctl jobs --json` and bench/index. */
    r |= proto_pack_str(pk, "stage_s");
    r |= msgpack_pack_map(pk, 4);
    r |= proto_pack_kv_double(pk, "scan", j->progress.scan_s);
    r |= proto_pack_kv_double(pk, "chunk", j->progress.chunk_s);
    r |= proto_pack_kv_double(pk, "embed", j->progress.embed_s);
    r |= proto_pack_kv_double(pk, "store", j->progress.store_s);
    r |= proto_pack_kv_uint(pk, "errors", j->scan_errors + j->file_errors);
    r |= proto_pack_kv_int(pk, "error_code", j->error);
    r |= proto_pack_kv_str(pk, "message", j->message);
    return r ? -ENOMEM : 0;
}

/* Resolve a user path to the canonical directory we index. Sets a message on failure. */
static int resolve_repo_path(const char *path, char **ret, char *msg, size_t msglen)
{
    char *real = realpath(path, NULL);
    struct stat st;

    if (!real) {
        snprintf(msg, msglen, "%s: %s", path, strerror(errno));
        return -errno;
    }
    if (stat(real, &st) < 0 || !S_ISDIR(st.st_mode)) {
        snprintf(msg, msglen, "%s: not a directory", path);
        free(real);
        return -ENOTDIR;
    }
    if (strlen(real) > STORE_MAX_REPO_PATH) {
        snprintf(msg, msglen, "%s: path too long", path);
        free(real);
        return -ENAMETOOLONG;
    }
    *ret = real;
    return 0;
}

/*
 * `index` registers the repository and its job on the libuv pool: the store's write lock may be
 * held by the job worker for a whole checkpoint interval, and the loop must not wait for it.
 * Registrations are serialised by index_lock so two requests for one repository get one job.
 */
struct index_op {
    struct engine *e;
    struct rpc_request *req;
    char *root;
    bool wait;
    struct job *job;
    bool created;
    int r;
    char message[PATH_MAX + 128];
};

static void index_work(void *userdata)
{
    struct index_op *op = userdata;
    struct engine *e = op->e;
    struct store_txn *t = NULL;
    uint32_t repo;
    int r;

    pthread_mutex_lock(&e->index_lock);
    r = store_write_begin(e->store, &t);
    if (r >= 0)
        r = store_repo_get_or_create(t, op->root, &repo);
    if (r >= 0)
        r = store_write_commit(t);
    else
        store_write_abort(t);
    if (r < 0) {
        snprintf(op->message, sizeof(op->message), "cannot register %s: %s", op->root,
                 store_last_error());
        goto out;
    }
    op->job = active_job_of(e, repo);
    if (!op->job) {
        r = create_job(e, op->root, repo, &op->job);
        if (r < 0) {
            snprintf(op->message, sizeof(op->message), "cannot create a job: %s",
                     store_last_error());
            goto out;
        }
        op->created = true;
        enqueue(e, op->job);
    }
out:
    op->r = r;
    pthread_mutex_unlock(&e->index_lock);
}

static void index_done(int status, void *userdata)
{
    struct index_op *op = userdata;
    struct job *j = op->job;
    void *args[2] = {j, op->e};

    if (status < 0 || op->r < 0) {
        rpc_request_reply_errno(op->req, status < 0 ? status : op->r, "%s",
                                op->message[0] ? op->message : "index did not run");
    } else {
        if (op->created)
            notify_progress(op->e, j, true);
        bool ended = j->state == JOB_STATE_DONE || j->state == JOB_STATE_FAILED ||
                     j->state == JOB_STATE_CANCELLED;
        if (op->wait && !ended) {
            struct rpc_request **w = array_realloc(j->waiters, j->n_waiters + 1, sizeof(*w));
            if (!w) {
                rpc_request_reply_errno(op->req, -ENOMEM, "out of memory");
            } else {
                j->waiters = w;
                j->waiters[j->n_waiters++] = op->req;
            }
        } else {
            rpc_request_reply_ok(op->req, pack_job_result, args);
        }
    }
    free(op->root);
    free(op);
}

static int method_index(struct rpc_request *req, const msgpack_object *params, void *userdata)
{
    struct engine *e = userdata;
    _cleanup_free_ char *path = NULL;
    struct index_op *op;
    int r;

    r = proto_get_strdup(params, "path", &path);
    if (r < 0)
        return rpc_request_reply_error(req, PROTO_ERROR_INVALID_PARAMS,
                                       "\"path\" is required: the directory to index");
    op = calloc(1, sizeof(*op));
    if (!op)
        return -ENOMEM;
    op->e = e;
    op->req = req;
    r = proto_get_bool(params, "wait", &op->wait);
    if (r == -EINVAL) {
        free(op);
        return rpc_request_reply_error(req, PROTO_ERROR_INVALID_PARAMS,
                                       "\"wait\" must be a boolean");
    }
    r = resolve_repo_path(path, &op->root, op->message, sizeof(op->message));
    if (r < 0) {
        rpc_request_reply_error(req, PROTO_ERROR_INVALID_INPUT, "%s", op->message);
        free(op);
        return 0;
    }
    r = event_work_queue(e->el, index_work, index_done, op);
    if (r < 0) {
        free(op->root);
        free(op);
        return r;
    }
    return 0;
}

struct jobs_list {
    struct engine *e;
    struct job **live; /* current, queued, recent (borrowed) */
    size_t n_live, cap_live;
    struct store_job *rows; /* persisted jobs not live (copied, cursor dropped) */
    char **row_paths;
    size_t n_rows, cap_rows;
};

static int collect_row(void *userdata, const struct store_job *row)
{
    struct jobs_list *l = userdata;

    for (size_t i = 0; i < l->n_live; i++)
        if (l->live[i]->id == row->id)
            return 0;
    if (array_grow((void **)&l->rows, &l->cap_rows, l->n_rows + 1, sizeof(*l->rows)) < 0)
        return -ENOMEM;
    l->rows[l->n_rows] = *row;
    l->rows[l->n_rows].cursor = NULL;
    l->rows[l->n_rows].cursor_len = 0;
    l->n_rows++;
    return 0;
}

static int pack_jobs(msgpack_packer *pk, void *userdata)
{
    struct jobs_list *l = userdata;
    int r = msgpack_pack_map(pk, 1);

    r |= proto_pack_str(pk, "jobs");
    r |= msgpack_pack_array(pk, (uint32_t)(l->n_live + l->n_rows));
    for (size_t i = 0; i < l->n_rows; i++) {
        const struct store_job *row = &l->rows[i];
        r |= msgpack_pack_map(pk, 9);
        r |= proto_pack_kv_uint(pk, "job", row->id);
        r |= proto_pack_kv_str(pk, "repo", l->row_paths[i]);
        r |= proto_pack_kv_str(pk, "state", job_state_to_string(row->state));
        r |= proto_pack_kv_uint(pk, "files_done", row->files_done);
        r |= proto_pack_kv_uint(pk, "files_total", row->files_total);
        r |= proto_pack_kv_uint(pk, "chunks_done", row->chunks_done);
        r |= proto_pack_kv_uint(pk, "chunks_total", row->chunks_total);
        r |= proto_pack_kv_int(pk, "error_code", row->error);
        r |= proto_pack_kv_int(pk, "updated_ns", row->updated_ns);
    }
    for (size_t i = 0; i < l->n_live; i++)
        r |= pack_job(pk, l->live[i], l->e);
    return r ? -ENOMEM : 0;
}

static int method_jobs(struct rpc_request *req, const msgpack_object *params, void *userdata)
{
    struct engine *e = userdata;
    struct jobs_list l = {.e = e};
    struct store_txn *t = NULL;
    int r;

    /* Live jobs first (their progress is fresher than their rows). */
    for (size_t i = 0; i < e->n_recent; i++)
        if (array_grow((void **)&l.live, &l.cap_live, l.n_live + 1, sizeof(*l.live)) == 0)
            l.live[l.n_live++] = e->recent[i];
    pthread_mutex_lock(&e->lock);
    if (e->current && array_grow((void **)&l.live, &l.cap_live, l.n_live + 1, sizeof(*l.live)) == 0)
        l.live[l.n_live++] = e->current;
    for (struct job *j = e->queue_head; j; j = j->next)
        if (array_grow((void **)&l.live, &l.cap_live, l.n_live + 1, sizeof(*l.live)) == 0)
            l.live[l.n_live++] = j;
    pthread_mutex_unlock(&e->lock);

    r = store_read_begin(e->store, &t);
    if (r >= 0)
        r = store_job_foreach(t, collect_row, &l);
    if (r >= 0 && l.n_rows) {
        l.row_paths = calloc(l.n_rows, sizeof(char *));
        if (!l.row_paths)
            r = -ENOMEM;
        for (size_t i = 0; r >= 0 && i < l.n_rows; i++) {
            struct store_repo repo;
            l.row_paths[i] =
                strdup(store_repo_get(t, l.rows[i].repo_id, &repo) == 0 ? repo.path : "");
        }
    }
    store_read_end(t);
    if (r < 0)
        rpc_request_reply_errno(req, r, "cannot read jobs: %s", store_last_error());
    else
        rpc_request_reply_ok(req, pack_jobs, &l);
    for (size_t i = 0; l.row_paths && i < l.n_rows; i++)
        free(l.row_paths[i]);
    free(l.row_paths);
    free(l.rows);
    free(l.live);
    return 0;
}

/* Records a cancelled queued job in its row, on the pool (the write lock may be busy). */
struct cancel_row_op {
    struct engine *e;
    uint64_t id;
};

static void cancel_row_work(void *userdata)
{
    struct cancel_row_op *op = userdata;

    set_job_row_state(op->e, op->id, JOB_STATE_CANCELLED, -ECANCELED);
}

static void cancel_row_done(int status, void *userdata)
{
    (void)status;
    free(userdata);
}

static int method_job_cancel(struct rpc_request *req, const msgpack_object *params, void *userdata)
{
    struct engine *e = userdata;
    uint64_t id;
    struct job *j;
    struct done_post *dp;
    struct cancel_row_op *op;
    bool was_queued = false;

    if (proto_get_uint(params, "job", &id) < 0)
        return rpc_request_reply_error(req, PROTO_ERROR_INVALID_PARAMS,
                                       "\"job\" is required: a job id");
    j = find_job(e, id);
    if (!j)
        return rpc_request_reply_error(req, PROTO_ERROR_NOT_FOUND, "no active job %" PRIu64, id);
    if (j->state != JOB_STATE_QUEUED && j->state != JOB_STATE_RUNNING)
        return rpc_request_reply_error(req, PROTO_ERROR_INVALID_INPUT,
                                       "job %" PRIu64 " is already %s", id,
                                       job_state_to_string(j->state));
    /* Allocated first: once a queued job is out of the queue it must be finished. */
    dp = calloc(1, sizeof(*dp));
    op = calloc(1, sizeof(*op));
    if (!dp || !op) {
        free(dp);
        free(op);
        return -ENOMEM;
    }
    atomic_store(&j->cancel, true);
    /* A queued job never reaches the worker: take it out and finish it here. */
    pthread_mutex_lock(&e->lock);
    for (struct job **pp = &e->queue_head, *prev = NULL; *pp; prev = *pp, pp = &(*pp)->next)
        if (*pp == j) {
            *pp = j->next;
            if (e->queue_tail == j)
                e->queue_tail = prev;
            was_queued = true;
            break;
        }
    pthread_mutex_unlock(&e->lock);
    if (was_queued) {
        /* The job ends now, in memory (a second cancel or `jobs` sees it cancelled); its row
         * is updated on the pool, since the write lock may be held by a running job.  Should
         * even that fail, the update runs here: a row left queued would run at the next start. */
        dp->e = op->e = e;
        dp->j = j;
        dp->r = -ECANCELED;
        op->id = j->id;
        snprintf(dp->res.message, sizeof(dp->res.message), "cancelled before it started");
        on_job_done(dp);
        if (event_work_queue(e->el, cancel_row_work, cancel_row_done, op) < 0) {
            cancel_row_work(op);
            free(op);
        }
    } else {
        free(dp);
        free(op);
    }
    return rpc_request_reply_bool(req, true);
}

/* ---- RPC: search ------------------------------------------------------------------------ */

struct search_op {
    struct engine *e;
    struct rpc_request *req;
    struct search_request sr;
    char *query, *repo_path, *path_glob, *language;
    float *qvec;
    int r;
    bool model_unavailable; /* r came from loading the model: PROTO_ERROR_MODEL_UNAVAILABLE */
    char message[600];
    struct search_hit *hits;
    char **snippets;
    double ms;
};

static void search_op_free(struct search_op *op)
{
    /* search_run() hands back an array even for zero hits: free it whenever it is set. */
    if (op->hits) {
        for (int i = 0; i < op->r; i++)
            free(op->snippets ? op->snippets[i] : NULL);
        search_hits_free(op->hits, op->r > 0 ? (size_t)op->r : 0);
    }
    free(op->snippets);
    free(op->query);
    free(op->repo_path);
    free(op->path_glob);
    free(op->language);
    free(op->qvec);
    free(op);
}

/* The chunk's first lines, read from the file as it is now (it may have changed). */
static char *read_snippet(const struct search_hit *h)
{
    _cleanup_free_ char *full = path_join(h->repo_path, h->path);
    _cleanup_close_ int fd = -1;
    size_t want = MIN((size_t)h->text_len, (size_t)SNIPPET_MAX_BYTES);
    char *buf;
    ssize_t n;
    int lines = 0;

    if (!full)
        return NULL;
    fd = open(full, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return NULL;
    buf = malloc(want + 1);
    if (!buf)
        return NULL;
    n = pread(fd, buf, want, (off_t)h->text_offset);
    if (n < 0) {
        free(buf);
        return NULL;
    }
    for (ssize_t i = 0; i < n; i++)
        if (buf[i] == '\n' && ++lines == SNIPPET_MAX_LINES) {
            n = i;
            break;
        }
    buf[n] = '\0';
    /* Keep the result valid UTF-8 for msgpack str: drop a cut multi-byte tail, NULs. */
    while (n > 0 && ((unsigned char)buf[n - 1] & 0xC0) == 0x80)
        n--;
    if (n > 0 && (unsigned char)buf[n - 1] >= 0xC0)
        n--;
    buf[n] = '\0';
    return buf;
}

static void search_work(void *userdata)
{
    struct search_op *op = userdata;
    struct engine *e = op->e;
    double t0 = now_s();
    int r;

    if (op->sr.mode != SEARCH_MODE_LEXICAL) {
        size_t len = strlen(op->query);
        const char *q = op->query;

        pthread_mutex_lock(&e->emb_lock);
        r = ensure_embedder(e);
        if (r >= 0) {
            op->sr.dim = embedder_dim(e->emb);
            op->qvec = array_alloc(op->sr.dim, sizeof(float));
            r = op->qvec ? embedder_embed(e->emb, &q, &len, 1, op->qvec) : -ENOMEM;
        } else {
            snprintf(op->message, sizeof(op->message), "%s", e->emb_error);
            op->model_unavailable = true;
        }
        pthread_mutex_unlock(&e->emb_lock);
        if (r < 0) {
            op->r = r;
            if (!op->message[0])
                snprintf(op->message, sizeof(op->message), "embedding the query failed: %s",
                         strerror(-r));
            return;
        }
        op->sr.query_vec = op->qvec;
    }
    if (op->repo_path) {
        struct store_txn *t;
        r = store_read_begin(e->store, &t);
        if (r >= 0) {
            r = store_repo_find(t, op->repo_path, &op->sr.repo);
            store_read_end(t);
        }
        if (r < 0) {
            op->r = r;
            snprintf(op->message, sizeof(op->message),
                     r == -ENOENT ? "%s is not indexed (run: coarchctl index %s)"
                                  : "cannot read the index for %s",
                     op->repo_path, op->repo_path);
            return;
        }
    }
    op->r = search_run(e->store, e->cache, &op->sr, &op->hits);
    if (op->r < 0) {
        snprintf(op->message, sizeof(op->message), "search failed: %s", strerror(-op->r));
        return;
    }
    op->snippets = calloc(MAX(op->r, 1), sizeof(char *));
    for (int i = 0; op->snippets && i < op->r; i++)
        op->snippets[i] = read_snippet(&op->hits[i]);
    op->ms = (now_s() - t0) * 1000.0;
}

static int pack_search(msgpack_packer *pk, void *userdata)
{
    struct search_op *op = userdata;
    int r = msgpack_pack_map(pk, 3);

    r |= proto_pack_kv_str(pk, "mode", search_mode_to_string(op->sr.mode));
    r |= proto_pack_kv_double(pk, "took_ms", op->ms);
    r |= proto_pack_str(pk, "results");
    r |= msgpack_pack_array(pk, (uint32_t)op->r);
    for (int i = 0; i < op->r; i++) {
        const struct search_hit *h = &op->hits[i];
        r |= msgpack_pack_map(pk, 12);
        r |= proto_pack_kv_str(pk, "path", h->path);
        r |= proto_pack_kv_uint(pk, "start_line", h->start_line);
        r |= proto_pack_kv_uint(pk, "end_line", h->end_line);
        r |= proto_pack_kv_double(pk, "score", h->score);
        r |= proto_pack_kv_str(pk, "symbol", h->symbol);
        r |= proto_pack_kv_str(pk, "language", h->language);
        r |= proto_pack_kv_str(pk, "repo", h->repo_path);
        r |= proto_pack_kv_double(pk, "semantic_score", h->semantic);
        r |= proto_pack_kv_double(pk, "lexical_score", h->lexical);
        r |= proto_pack_kv_int(pk, "semantic_rank", h->semantic_rank);
        r |= proto_pack_kv_int(pk, "lexical_rank", h->lexical_rank);
        r |= proto_pack_kv_str(pk, "snippet",
                               op->snippets && op->snippets[i] ? op->snippets[i] : "");
    }
    return r ? -ENOMEM : 0;
}

static void search_done(int status, void *userdata)
{
    struct search_op *op = userdata;

    if (status < 0)
        rpc_request_reply_errno(op->req, status, "search did not run: %s", strerror(-status));
    else if (op->r < 0)
        reply_op_error(op->req, op->r, op->model_unavailable, op->message);
    else
        rpc_request_reply_ok(op->req, pack_search, op);
    search_op_free(op);
}

static int method_search(struct rpc_request *req, const msgpack_object *params, void *userdata)
{
    struct engine *e = userdata;
    struct search_op *op = calloc(1, sizeof(*op));
    _cleanup_free_ char *mode = NULL, *repo = NULL;
    uint64_t k = 10;
    int r;

    if (!op)
        return -ENOMEM;
    op->e = e;
    op->req = req;
    op->sr.mode = SEARCH_MODE_HYBRID;
    if (proto_get_strdup(params, "query", &op->query) < 0 || !op->query[0]) {
        search_op_free(op);
        return rpc_request_reply_error(req, PROTO_ERROR_INVALID_PARAMS,
                                       "\"query\" is required: a non-empty string");
    }
    r = proto_get_uint(params, "k", &k);
    if (r == -EINVAL || k == 0 || k > SEARCH_MAX_K) {
        search_op_free(op);
        return rpc_request_reply_error(req, PROTO_ERROR_INVALID_PARAMS,
                                       "\"k\" must be an integer in 1..%d", SEARCH_MAX_K);
    }
    op->sr.k = k;
    r = proto_get_strdup(params, "mode", &mode);
    if ((r == 0 && search_mode_from_string(mode, &op->sr.mode) < 0) || r == -EINVAL) {
        search_op_free(op);
        return rpc_request_reply_error(req, PROTO_ERROR_INVALID_PARAMS,
                                       "\"mode\" must be hybrid, semantic or lexical");
    }
    r = proto_get_strdup(params, "repo", &repo);
    if (r == -EINVAL) {
        search_op_free(op);
        return rpc_request_reply_error(req, PROTO_ERROR_INVALID_PARAMS,
                                       "\"repo\" must be a string (a repository directory)");
    }
    if (r == 0) {
        char msg[PATH_MAX + 64];
        r = resolve_repo_path(repo, &op->repo_path, msg, sizeof(msg));
        if (r < 0) {
            search_op_free(op);
            return rpc_request_reply_error(req, PROTO_ERROR_INVALID_INPUT, "%s", msg);
        }
    }
    if (proto_get_strdup(params, "path", &op->path_glob) == -EINVAL ||
        proto_get_strdup(params, "lang", &op->language) == -EINVAL) {
        search_op_free(op);
        return rpc_request_reply_error(req, PROTO_ERROR_INVALID_PARAMS,
                                       "\"path\" and \"lang\" must be strings");
    }
    /* Fusion knobs for tuning and experiments (PROTOCOL.md: optional, positive numbers). */
    static const char *const knobs[] = {"rrf_k", "semantic_weight", "lexical_weight"};
    double *knob_dst[] = {&op->sr.rrf_k, &op->sr.semantic_weight, &op->sr.lexical_weight};
    for (size_t i = 0; i < ELEMENTSOF(knobs); i++) {
        r = proto_get_double(params, knobs[i], knob_dst[i]);
        if (r == -EINVAL || (r == 0 && !(*knob_dst[i] > 0 && *knob_dst[i] < 1e6))) {
            search_op_free(op);
            return rpc_request_reply_error(req, PROTO_ERROR_INVALID_PARAMS,
                                           "\"%s\" must be a positive number", knobs[i]);
        }
    }
    op->sr.query = op->query;
    op->sr.path_glob = op->path_glob;
    op->sr.language = op->language;
    r = event_work_queue(e->el, search_work, search_done, op);
    if (r < 0) {
        search_op_free(op);
        return r;
    }
    return 0;
}

/* ---- RPC: embed ------------------------------------------------------------------------- */

struct embed_op {
    struct engine *e;
    struct rpc_request *req;
    char **texts;
    size_t *lens;
    size_t n;
    float *out;
    unsigned dim;
    int r;
    bool model_unavailable; /* r came from loading the model: PROTO_ERROR_MODEL_UNAVAILABLE */
    char message[600];
};

static void embed_op_free(struct embed_op *op)
{
    for (size_t i = 0; i < op->n; i++)
        free(op->texts[i]);
    free(op->texts);
    free(op->lens);
    free(op->out);
    free(op);
}

static void embed_work(void *userdata)
{
    struct embed_op *op = userdata;
    struct engine *e = op->e;

    pthread_mutex_lock(&e->emb_lock);
    op->r = ensure_embedder(e);
    if (op->r < 0) {
        snprintf(op->message, sizeof(op->message), "%s", e->emb_error);
        op->model_unavailable = true;
    } else {
        op->dim = embedder_dim(e->emb);
        op->out = array_alloc(op->n * op->dim, sizeof(float));
        op->r = op->out ? embedder_embed(e->emb, (const char *const *)op->texts, op->lens, op->n,
                                         op->out)
                        : -ENOMEM;
        if (op->r < 0)
            snprintf(op->message, sizeof(op->message), "embedding failed: %s", strerror(-op->r));
    }
    pthread_mutex_unlock(&e->emb_lock);
}

static int pack_embed(msgpack_packer *pk, void *userdata)
{
    struct embed_op *op = userdata;
    int r = msgpack_pack_map(pk, 3);

    r |= proto_pack_kv_uint(pk, "dim", op->dim);
    r |= proto_pack_kv_str(pk, "model", op->e->model_name);
    r |= proto_pack_str(pk, "vectors");
    r |= msgpack_pack_array(pk, (uint32_t)op->n);
    for (size_t i = 0; i < op->n; i++) {
        r |= msgpack_pack_bin(pk, op->dim * sizeof(float));
        r |= msgpack_pack_bin_body(pk, op->out + i * op->dim, op->dim * sizeof(float));
    }
    return r ? -ENOMEM : 0;
}

static void embed_done(int status, void *userdata)
{
    struct embed_op *op = userdata;

    if (status < 0)
        rpc_request_reply_errno(op->req, status, "embed did not run");
    else if (op->r < 0)
        reply_op_error(op->req, op->r, op->model_unavailable, op->message);
    else
        rpc_request_reply_ok(op->req, pack_embed, op);
    embed_op_free(op);
}

static int method_embed(struct rpc_request *req, const msgpack_object *params, void *userdata)
{
    const msgpack_object *texts = proto_map_get(params, "texts");
    struct embed_op *op;

    if (!texts || texts->type != MSGPACK_OBJECT_ARRAY || texts->via.array.size == 0 ||
        texts->via.array.size > EMBED_MAX_TEXTS)
        return rpc_request_reply_error(req, PROTO_ERROR_INVALID_PARAMS,
                                       "\"texts\" must be an array of 1..%d strings",
                                       EMBED_MAX_TEXTS);
    op = calloc(1, sizeof(*op));
    if (!op)
        return -ENOMEM;
    op->e = userdata;
    op->req = req;
    op->texts = calloc(texts->via.array.size, sizeof(char *));
    op->lens = calloc(texts->via.array.size, sizeof(size_t));
    if (!op->texts || !op->lens) {
        embed_op_free(op);
        return -ENOMEM;
    }
    for (uint32_t i = 0; i < texts->via.array.size; i++) {
        const msgpack_object *o = &texts->via.array.ptr[i];
        if (o->type != MSGPACK_OBJECT_STR) {
            embed_op_free(op);
            return rpc_request_reply_error(req, PROTO_ERROR_INVALID_PARAMS,
                                           "\"texts\"[%u] is not a string", i);
        }
        /* Copied whole, not with strndup(): a text may hold NUL bytes (the tokenizer drops
         * them as control characters) and lens[i] must match the bytes actually copied. */
        op->texts[i] = malloc((size_t)o->via.str.size + 1);
        op->n = i + 1;
        if (!op->texts[i]) {
            embed_op_free(op);
            return -ENOMEM;
        }
        memcpy(op->texts[i], o->via.str.ptr, o->via.str.size);
        op->texts[i][o->via.str.size] = '\0';
        op->lens[i] = o->via.str.size;
    }
    int r = event_work_queue(op->e->el, embed_work, embed_done, op);
    if (r < 0) {
        embed_op_free(op);
        return r;
    }
    return 0;
}

/* ---- RPC: repos, repo.remove ------------------------------------------------------------ */

struct repos_list {
    struct store_repo *rows;
    char **paths;
    size_t n, cap;
};

static int collect_repo(void *userdata, const struct store_repo *repo)
{
    struct repos_list *l = userdata;

    if (array_grow((void **)&l->rows, &l->cap, l->n + 1, sizeof(*l->rows)) < 0)
        return -ENOMEM;
    char **np = array_realloc(l->paths, l->cap, sizeof(*np));
    if (!np)
        return -ENOMEM;
    l->paths = np;
    l->rows[l->n] = *repo;
    l->paths[l->n] = strdup(repo->path);
    if (!l->paths[l->n])
        return -ENOMEM;
    l->n++;
    return 0;
}

static int pack_repos(msgpack_packer *pk, void *userdata)
{
    struct repos_list *l = userdata;
    int r = msgpack_pack_map(pk, 1);

    r |= proto_pack_str(pk, "repos");
    r |= msgpack_pack_array(pk, (uint32_t)l->n);
    for (size_t i = 0; i < l->n; i++) {
        r |= msgpack_pack_map(pk, 6);
        r |= proto_pack_kv_uint(pk, "id", l->rows[i].id);
        r |= proto_pack_kv_str(pk, "path", l->paths[i]);
        r |= proto_pack_kv_uint(pk, "files", l->rows[i].n_files);
        r |= proto_pack_kv_uint(pk, "chunks", l->rows[i].n_chunks);
        r |= proto_pack_kv_uint(pk, "vectors", l->rows[i].n_vectors);
        r |= proto_pack_kv_int(pk, "indexed_ns", l->rows[i].indexed_ns);
    }
    return r ? -ENOMEM : 0;
}

static int method_repos(struct rpc_request *req, const msgpack_object *params, void *userdata)
{
    struct engine *e = userdata;
    struct repos_list l = {0};
    struct store_txn *t;
    int r;

    r = store_read_begin(e->store, &t);
    if (r >= 0) {
        r = store_repo_foreach(t, collect_repo, &l);
        store_read_end(t);
    }
    if (r < 0)
        rpc_request_reply_errno(req, r, "cannot list repositories: %s", store_last_error());
    else
        rpc_request_reply_ok(req, pack_repos, &l);
    for (size_t i = 0; i < l.n; i++)
        free(l.paths[i]);
    free(l.paths);
    free(l.rows);
    return 0;
}

struct remove_op {
    struct engine *e;
    struct rpc_request *req;
    char *path;
    int r;
    char message[600];
};

static void remove_work(void *userdata)
{
    struct remove_op *op = userdata;
    struct store_txn *t;
    uint32_t id;
    int r;

    /* Under index_lock, so no `index` registers a job for the repository between the cancel
     * and the removal: that job would run on a repository that no longer exists. */
    pthread_mutex_lock(&op->e->index_lock);
    r = store_read_begin(op->e->store, &t);
    if (r >= 0) {
        if (store_repo_find(t, op->path, &id) == 0) {
            struct job *j = active_job_of(op->e, id); /* stop indexing it first */
            if (j)
                atomic_store(&j->cancel, true);
        }
        store_read_end(t);
    }
    r = store_write_begin(op->e->store, &t);
    if (r >= 0) {
        r = store_repo_find(t, op->path, &id);
        if (r >= 0)
            r = store_repo_remove(t, id);
        if (r >= 0)
            r = store_write_commit(t);
        else
            store_write_abort(t);
    }
    pthread_mutex_unlock(&op->e->index_lock);
    op->r = r;
    if (r == -ENOENT)
        snprintf(op->message, sizeof(op->message), "%s is not indexed", op->path);
    else if (r < 0)
        snprintf(op->message, sizeof(op->message), "removing %s failed: %s", op->path,
                 store_last_error());
    else
        search_cache_invalidate(op->e->cache, id);
}

static void remove_done(int status, void *userdata)
{
    struct remove_op *op = userdata;

    if (status < 0)
        rpc_request_reply_errno(op->req, status, "repo.remove did not run");
    else if (op->r < 0)
        rpc_request_reply_errno(op->req, op->r, "%s", op->message);
    else
        rpc_request_reply_bool(op->req, true);
    free(op->path);
    free(op);
}

static int method_repo_remove(struct rpc_request *req, const msgpack_object *params, void *userdata)
{
    struct engine *e = userdata;
    _cleanup_free_ char *path = NULL;
    struct remove_op *op;
    char *real;
    int r;

    if (proto_get_strdup(params, "repo", &path) < 0)
        return rpc_request_reply_error(req, PROTO_ERROR_INVALID_PARAMS,
                                       "\"repo\" is required: the indexed directory");
    /* The directory may be gone already: fall back to the path as given. */
    real = realpath(path, NULL);
    op = calloc(1, sizeof(*op));
    if (!op) {
        free(real);
        return -ENOMEM;
    }
    op->e = e;
    op->req = req;
    op->path = real ? real : strdup(path);
    if (!op->path) {
        free(op);
        return -ENOMEM;
    }
    r = event_work_queue(e->el, remove_work, remove_done, op);
    if (r < 0) {
        free(op->path);
        free(op);
        return r;
    }
    return 0;
}

/* ---- memory governor on the loop -------------------------------------------------------- */

/* Loop thread: hand the governor's edge actions to the job and act on the loop's share. */
static void governor_actions(struct engine *e, unsigned actions, unsigned level, uint64_t usage,
                             uint64_t limit, const char *why)
{
    if (!actions)
        return;
    atomic_fetch_or(&e->actions, actions);
    if (actions & GOVERNOR_ACTION_LEVEL_RAISED)
        log_warning("memory pressure %s%s: %" PRIu64 " of %" PRIu64 " MiB in use",
                    pressure_level_to_string((enum pressure_level)level), why, usage >> 20,
                    limit >> 20);
    if (actions & GOVERNOR_ACTION_SHED_CACHES)
        search_cache_invalidate(e->cache, 0);
    if (actions & GOVERNOR_ACTION_MALLOC_TRIM)
        pressure_malloc_trim();
    e->last_level = level;
}

static void governor_tick(struct event_timer *timer, void *userdata)
{
    struct engine *e = userdata;
    struct pressure_reading rd;
    unsigned actions, level;

    (void)timer;
    if (pressure_source_sample(e->psrc, &rd) < 0)
        return;
    daemon_set_memory_limit(e->d, rd.limit);
    pthread_mutex_lock(&e->gov_lock);
    actions = governor_feed(e->gov, &rd);
    level = governor_level(e->gov);
    pthread_mutex_unlock(&e->gov_lock);
    governor_actions(e, actions, level, rd.usage, rd.limit, "");
}

/* The PSI trigger fired: tasks stalled on memory past the threshold within its window. */
static void on_psi_event(struct event_watch *w, int events, void *userdata)
{
    struct engine *e = userdata;
    struct pressure_snapshot s;
    unsigned actions, level;

    if (events < 0 || !(events & EVENT_WATCH_PRIORITY)) {
        /* POLLERR (the cgroup went away) or a poll failure: sampling goes on without it. */
        log_warning("memory pressure: the PSI trigger stopped (%s); sampling continues",
                    events < 0 ? strerror(-events) : "error on the file");
        e->psi_watch = event_watch_free(w);
        close(e->psi_fd);
        e->psi_fd = -1;
        return;
    }
    pthread_mutex_lock(&e->gov_lock);
    actions = governor_psi_event(e->gov, pressure_now_us());
    level = governor_level(e->gov);
    governor_snapshot(e->gov, &s);
    pthread_mutex_unlock(&e->gov_lock);
    governor_actions(e, actions, level, s.usage, s.limit, " (PSI stall trigger)");
}

/* Arms the PSI trigger when this kernel has PSI; without it the timer's samples suffice. */
static void psi_watch_start(struct engine *e)
{
    int fd = pressure_psi_open_trigger(e->psrc, 0, 0), r;

    if (fd < 0) {
        log_debug("memory pressure: no PSI trigger (%s); sampling only", strerror(-fd));
        return;
    }
    r = event_watch_new(e->el, fd, EVENT_WATCH_PRIORITY, on_psi_event, e, &e->psi_watch);
    if (r < 0) {
        log_debug("memory pressure: cannot watch the PSI trigger: %s", strerror(-r));
        close(fd);
        return;
    }
    e->psi_fd = fd;
    log_debug("memory pressure: PSI trigger armed");
}

static int pack_governor(msgpack_packer *pk, void *userdata)
{
    struct engine *e = userdata;
    struct pressure_snapshot s;
    int r;

    pthread_mutex_lock(&e->gov_lock);
    governor_snapshot(e->gov, &s);
    pthread_mutex_unlock(&e->gov_lock);
    r = msgpack_pack_map(pk, 16);
    r |= proto_pack_kv_str(pk, "level", s.level_name);
    r |= proto_pack_kv_uint(pk, "usage_bytes", s.usage);
    r |= proto_pack_kv_uint(pk, "limit_bytes", s.limit);
    r |= proto_pack_kv_bool(pk, "usage_from_cgroup", s.usage_from_cgroup);
    r |= proto_pack_kv_uint(pk, "rss_bytes", s.rss);
    r |= proto_pack_kv_uint(pk, "vms_bytes", s.vms);
    r |= proto_pack_kv_uint(pk, "cgroup_usage_bytes", s.cgroup_usage);
    r |= proto_pack_kv_uint(pk, "cgroup_limit_bytes", s.cgroup_limit);
    r |= proto_pack_kv_uint(pk, "batch_size", s.batch_size);
    r |= proto_pack_kv_uint(pk, "batch_tokens_max",
                            s.batch_tokens_max == UINT64_MAX ? 0 : s.batch_tokens_max);
    r |= proto_pack_kv_bool(pk, "adaptive", s.adaptive);
    r |= proto_pack_kv_bool(pk, "feed_paused", s.feed_paused);
    r |= proto_pack_kv_double(pk, "psi_some_avg10", s.psi_valid ? s.psi_some_avg10 : 0);
    r |= proto_pack_kv_uint(pk, "checkpoints_written", s.checkpoints_written);
    r |= proto_pack_kv_uint(pk, "oom_events", s.oom_events);
    r |= proto_pack_kv_uint(pk, "search_cache_bytes", search_cache_memory(e->cache));
    return r ? -ENOMEM : 0;
}

static int pack_model(msgpack_packer *pk, void *userdata)
{
    struct engine *e = userdata;
    unsigned dim = atomic_load(&e->model_dim);
    const char *backend = atomic_load(&e->model_backend);
    const char *precision = atomic_load(&e->model_precision);
    int r;

    r = msgpack_pack_map(pk, 6);
    r |= proto_pack_kv_str(pk, "name", e->model_name);
    r |= proto_pack_kv_str(pk, "dir", e->model_dir);
    r |= proto_pack_kv_bool(pk, "loaded", dim > 0);
    r |= proto_pack_kv_uint(pk, "dim", dim);
    r |= proto_pack_kv_str(pk, "backend", backend ? backend : "");
    r |= proto_pack_kv_str(pk, "precision", precision ? precision : "");
    return r ? -ENOMEM : 0;
}

static int pack_jobs_summary(msgpack_packer *pk, void *userdata)
{
    struct engine *e = userdata;
    unsigned queued = 0;
    uint64_t running = 0;
    int r;

    pthread_mutex_lock(&e->lock);
    for (struct job *j = e->queue_head; j; j = j->next)
        queued++;
    if (e->current)
        running = e->current->id;
    pthread_mutex_unlock(&e->lock);
    r = msgpack_pack_map(pk, 2);
    r |= proto_pack_kv_uint(pk, "queued", queued);
    r |= proto_pack_kv_uint(pk, "running_job", running);
    return r ? -ENOMEM : 0;
}

/* ---- lifecycle -------------------------------------------------------------------------- */

static void on_stop(struct daemon *d, void *userdata)
{
    struct engine *e = userdata;

    e->gov_timer = event_timer_free(e->gov_timer);
    e->psi_watch = event_watch_free(e->psi_watch);
    if (e->psi_fd >= 0) {
        close(e->psi_fd);
        e->psi_fd = -1;
    }
    pthread_mutex_lock(&e->lock);
    e->stopping = true;
    if (e->current) {
        /* Interrupted, not cancelled: its row goes back to queued and the next start resumes. */
        atomic_store(&e->current->interrupted, true);
        atomic_store(&e->current->cancel, true);
    }
    pthread_cond_signal(&e->cond);
    pthread_mutex_unlock(&e->lock);
}

/* Re-queue jobs a killed or stopped daemon left behind. */
static int resume_jobs(struct engine *e)
{
    struct jobs_list l = {.e = e};
    struct store_txn *t;
    int r;

    r = store_read_begin(e->store, &t);
    if (r < 0)
        return r;
    r = store_job_foreach(t, collect_row, &l);
    for (size_t i = 0; r >= 0 && i < l.n_rows; i++) {
        struct store_repo repo;
        struct job *j;

        if (l.rows[i].state != JOB_STATE_QUEUED && l.rows[i].state != JOB_STATE_RUNNING)
            continue;
        if (store_repo_get(t, l.rows[i].repo_id, &repo) < 0)
            continue;
        j = calloc(1, sizeof(*j));
        if (!j || !(j->root = strdup(repo.path))) {
            job_free(j);
            r = -ENOMEM;
            break;
        }
        j->id = l.rows[i].id;
        j->repo = l.rows[i].repo_id;
        j->state = JOB_STATE_QUEUED;
        j->resumed = true;
        j->progress.files_done = l.rows[i].files_done;
        j->progress.chunks_done = l.rows[i].chunks_done;
        log_info("job %" PRIu64 " (%s) was interrupted at %" PRIu64 " chunks: resuming", j->id,
                 j->root, l.rows[i].chunks_done);
        enqueue(e, j);
    }
    store_read_end(t);
    free(l.rows);
    return r;
}

int engine_new(struct daemon *d, const char *data_dir, struct engine **ret)
{
    struct engine *e = calloc(1, sizeof(*e));
    struct governor_params gp;
    char err[256];
    const char *model;
    int r;

    if (!e)
        return -ENOMEM;
    e->d = d;
    e->psi_fd = -1;
    e->el = daemon_loop(d);
    e->rpc = daemon_rpc(d);
    pthread_mutex_init(&e->emb_lock, NULL);
    pthread_mutex_init(&e->gov_lock, NULL);
    pthread_mutex_init(&e->lock, NULL);
    pthread_mutex_init(&e->index_lock, NULL);
    pthread_cond_init(&e->cond, NULL);
    tokens_init(&e->count_tokens, false);

    r = pressure_config_parse(pressure_config_getenv, NULL, &e->pcfg, err, sizeof(err));
    if (r < 0) {
        log_error("%s", err);
        goto fail;
    }
    r = choose_precision(&e->precision);
    if (r < 0)
        goto fail;
    model = getenv("COARCH_MODEL");
    if (!model || !model[0])
        model = DEFAULT_MODEL;
    e->model_name = strdup(model);
    if (strchr(model, '/')) {
        e->model_dir = strdup(model);
    } else {
        /* <data dir>/models, the data dir this daemon was given (--data-dir included), where
         * scripts/fetch-model installs for the same COARCH_DATA_DIR. */
        _cleanup_free_ char *models = path_join(data_dir, "models");
        e->model_dir = models ? path_join(models, model) : NULL;
    }
    if (!e->model_name || !e->model_dir) {
        r = -ENOMEM;
        goto fail;
    }

    r = store_open(data_dir, NULL, &e->store);
    if (r < 0) {
        log_error("cannot open the index in %s: %s", data_dir, store_last_error());
        goto fail;
    }
    e->cache = search_cache_new();
    if (!e->cache) {
        r = -ENOMEM;
        goto fail;
    }

    governor_params_init(&gp, &e->pcfg);
    r = governor_new(&gp, &e->gov);
    if (r < 0)
        goto fail;
    e->psrc = pressure_source_new(NULL, e->pcfg.memory_limit_bytes);
    if (!e->psrc) {
        r = -ENOMEM;
        goto fail;
    }
    r = event_timer_new(e->el, governor_tick, e, &e->gov_timer);
    if (r >= 0)
        r = event_timer_start(e->gov_timer, 0, e->pcfg.interval_ms);
    if (r < 0)
        goto fail;
    psi_watch_start(e);

    static const struct {
        const char *name;
        rpc_method_fn fn;
    } methods[] = {
        {"index", method_index},
        {"jobs", method_jobs},
        {"job.cancel", method_job_cancel},
        {"search", method_search},
        {"embed", method_embed},
        {"repos", method_repos},
        {"repo.remove", method_repo_remove},
    };
    for (size_t i = 0; i < ELEMENTSOF(methods); i++) {
        r = rpc_register(e->rpc, methods[i].name, methods[i].fn, e);
        if (r < 0)
            goto fail;
    }
    r = daemon_status_add(d, "governor", pack_governor, e);
    if (r >= 0)
        r = daemon_status_add(d, "model", pack_model, e);
    if (r >= 0)
        r = daemon_status_add(d, "jobs", pack_jobs_summary, e);
    if (r >= 0)
        r = daemon_on_stop(d, on_stop, e);
    if (r < 0)
        goto fail;

    r = resume_jobs(e);
    if (r < 0)
        log_warning_errno(r, "cannot resume interrupted jobs: %m");
    r = pthread_create(&e->worker, NULL, worker_main, e);
    if (r != 0) {
        r = -r;
        goto fail;
    }
    e->worker_started = true;
    daemon_hold(d);
    *ret = e;
    return 0;
fail:
    engine_free(e);
    return r;
}

struct engine *engine_free(struct engine *e)
{
    if (!e)
        return NULL;
    if (e->worker_started) {
        pthread_mutex_lock(&e->lock);
        e->stopping = true;
        if (e->current)
            atomic_store(&e->current->cancel, true);
        pthread_cond_signal(&e->cond);
        pthread_mutex_unlock(&e->lock);
        pthread_join(e->worker, NULL);
    }
    while (e->queue_head) {
        struct job *j = e->queue_head;
        e->queue_head = j->next;
        job_free(j);
    }
    for (size_t i = 0; i < e->n_recent; i++)
        job_free(e->recent[i]);
    event_timer_free(e->gov_timer);
    event_watch_free(e->psi_watch);
    if (e->psi_fd >= 0)
        close(e->psi_fd);
    governor_free(e->gov);
    pressure_source_free(e->psrc);
    search_cache_free(e->cache);
    store_free(e->store);
    embedder_free(e->emb);
    tokens_release(&e->count_tokens);
    free(e->model_name);
    free(e->model_dir);
    pthread_mutex_destroy(&e->emb_lock);
    pthread_mutex_destroy(&e->gov_lock);
    pthread_mutex_destroy(&e->lock);
    pthread_mutex_destroy(&e->index_lock);
    pthread_cond_destroy(&e->cond);
    free(e);
    return NULL;
}
