/*
 * jobs.c - see jobs.h for the design.
 */
#include "jobs.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "embed-service.h"
#include "log.h"
#include "macro.h"
#include "monitor.h"
#include "search.h"
#include "store-job.h"
#include "store-repo.h"
#include "work.h"

struct jobs {
    struct jobs_env env;
    uint64_t max_file_size; /* COARCH_MAX_FILE_SIZE_KB in bytes (scan.h) */

    /* The queue and the running job, guarded by lock; records are the loop thread's otherwise. */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct job *queue_head, *queue_tail;
    struct job *current;
    bool stopping;

    pthread_mutex_t register_lock; /* serialises jobs_submit() and jobs_remove_repo() */
    pthread_t worker;
    bool worker_started;             /* loop thread */
    struct job *recent[JOBS_RECENT]; /* ended jobs, newest last (loop thread) */
    size_t n_recent;
};

static void job_skipped_release(struct job *j)
{
    for (size_t i = 0; i < j->n_skipped_files; i++)
        free(j->skipped_files[i].path);
    free(j->skipped_files);
    j->skipped_files = NULL;
    j->n_skipped_files = 0;
}

static struct job *job_free(struct job *j)
{
    if (!j)
        return NULL;
    job_skipped_release(j);
    free(j->root);
    free(j->waiters);
    free(j);
    return NULL;
}

bool job_ended(const struct job *j)
{
    return j->state == JOB_STATE_DONE || j->state == JOB_STATE_FAILED ||
           j->state == JOB_STATE_CANCELLED;
}

/* Loop thread: run hooks.progress unless it ran for j within the interval. */
static void notify_progress(struct jobs *q, struct job *j, bool force)
{
    double t = clock_monotonic_s();

    if (!force && t - j->last_notify < JOBS_PROGRESS_INTERVAL_S)
        return;
    j->last_notify = t;
    if (q->env.hooks.progress)
        q->env.hooks.progress(q->env.hooks.userdata, j);
}

void jobs_announce(struct jobs *q, struct job *j)
{
    notify_progress(q, j, true);
}

/* ---- the worker's posts to the loop ---------------------------------------------------- */

struct progress_post {
    struct jobs *q;
    struct job *j;
    struct indexer_progress p;
};

static void on_progress_posted(void *userdata)
{
    struct progress_post *pp = userdata;

    pp->j->progress = pp->p;
    notify_progress(pp->q, pp->j, false);
    free(pp);
}

struct job_ctx {
    struct jobs *q;
    struct job *j;
};

/* Worker thread: hand a progress snapshot to the loop thread. */
static void on_indexer_progress(void *userdata, const struct indexer_progress *p)
{
    struct job_ctx *jc = userdata;
    struct progress_post *pp = malloc(sizeof(*pp));

    if (!pp)
        return; /* progress is advisory: dropping one costs nothing */
    *pp = (struct progress_post){.q = jc->q, .j = jc->j, .p = *p};
    if (event_post(jc->q->env.el, on_progress_posted, pp) < 0)
        free(pp);
}

/* Worker thread: a commit changed `repo`, whose cached search data is stale now. */
static void on_committed(void *userdata, uint32_t repo)
{
    struct jobs *q = userdata;

    search_cache_invalidate(q->env.cache, repo);
}

struct done_post {
    struct jobs *q;
    struct job *j;
    int r;
    struct indexer_result res;
};

static void remember_job(struct jobs *q, struct job *j)
{
    if (q->n_recent == JOBS_RECENT) {
        job_free(q->recent[0]);
        memmove(q->recent, q->recent + 1, (JOBS_RECENT - 1) * sizeof(*q->recent));
        q->n_recent--;
    }
    q->recent[q->n_recent++] = j;
}

/* Loop thread: keep what the run passed over, with reasons, on the record (`jobs`, the index
 * summary).  Out of memory drops the list, never the counts. */
static void take_skipped(struct job *j, struct indexer_result *res)
{
    const struct scan_report *sr = &res->scan;
    size_t n = sr->n_skip_list + sr->n_error_list + res->n_errors, k = 0;

    job_skipped_release(j);
    j->skipped = (struct job_skipped){
        .too_large = sr->too_large,
        .binary = sr->binary,
        .vendored = sr->vendored,
        .symlinks = sr->symlinks,
        .special = sr->other,
        .unreadable = sr->errors,
        .failed = res->errors_total,
    };
    if (!n || !(j->skipped_files = calloc(n, sizeof(*j->skipped_files))))
        return;
    /* Each path moves to the record (the result's copy becomes NULL: released as nothing). */
    for (size_t i = 0; i < sr->n_skip_list; i++) {
        struct job_skipped_file *f = &j->skipped_files[k++];
        f->path = sr->skip_list[i].path;
        f->reason = scan_skip_reason_name(sr->skip_list[i].reason);
        sr->skip_list[i].path = NULL;
    }
    for (size_t i = 0; i < sr->n_error_list; i++) {
        struct job_skipped_file *f = &j->skipped_files[k++];
        f->path = sr->error_list[i].path;
        f->reason = "unreadable";
        f->error = sr->error_list[i].error;
        sr->error_list[i].path = NULL;
    }
    for (size_t i = 0; i < res->n_errors; i++) {
        struct job_skipped_file *f = &j->skipped_files[k++];
        f->path = res->errors[i].path;
        f->reason = "failed";
        f->error = res->errors[i].error;
        res->errors[i].path = NULL;
    }
    j->n_skipped_files = k;
}

/* Loop thread: a job ended (or was interrupted by the stop). */
static void on_job_done(void *userdata)
{
    struct done_post *dp = userdata;
    struct jobs *q = dp->q;
    struct job *j = dp->j;

    j->progress = dp->res.progress;
    j->error = dp->r < 0 ? dp->r : 0;
    j->scan_errors = dp->res.scan.errors;
    j->file_errors = dp->res.errors_total;
    take_skipped(j, &dp->res);
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
    notify_progress(q, j, true);
    for (size_t i = 0; i < j->n_waiters; i++)
        if (q->env.hooks.ended)
            q->env.hooks.ended(q->env.hooks.userdata, j, j->waiters[i]);
    j->n_waiters = 0;
    indexer_result_release(&dp->res);
    free(dp);
    pthread_mutex_lock(&q->lock);
    if (q->current == j)
        q->current = NULL;
    pthread_mutex_unlock(&q->lock);
    remember_job(q, j);
}

/* ---- rows ------------------------------------------------------------------------------ */

/*
 * Set the state (and error) of job `id`'s row in a transaction of its own.  Best effort: a job
 * whose row cannot be updated is re-run or reported again at the next start.  Any thread that
 * holds no read transaction.
 */
static void set_job_row_state(struct jobs *q, uint64_t id, uint32_t state, int error)
{
    struct store_txn *t;
    struct store_job row;

    if (store_write_begin(q->env.store, &t) < 0)
        return;
    if (store_job_get(t, id, &row) == 0) {
        struct store_job nr = row;
        nr.state = state;
        nr.error = error;
        nr.updated_ns = clock_realtime_ns();
        if (store_job_put(t, &nr) == 0) {
            if (store_write_commit(t) < 0)
                log_warning("job %" PRIu64 ": cannot record state %s: %s", id,
                            job_state_to_string(state), store_last_error());
            return;
        }
    }
    store_write_abort(t);
}

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

/* Delete all but the newest JOBS_ROWS_KEEP ended jobs' rows, inside t, so the history (and the
 * `jobs` answer) stays bounded however often a repository is indexed. */
static int prune_job_rows(struct store_txn *t)
{
    struct ended_ids l = {0};
    int r = store_job_foreach(t, collect_ended, &l);

    for (size_t i = 0; r >= 0 && l.n > JOBS_ROWS_KEEP && i < l.n - JOBS_ROWS_KEEP; i++)
        r = store_job_delete(t, l.ids[i]); /* ids ascend with age */
    free(l.ids);
    return r;
}

/* Create the job row and the in-memory job.  Pool thread (jobs_submit): it takes the write
 * lock. */
static int create_job(struct jobs *q, const char *root, uint32_t repo, struct job **ret)
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
    r = store_write_begin(q->env.store, &t);
    if (r < 0)
        goto fail;
    r = store_job_id_alloc(t, &j->id);
    if (r >= 0) {
        int64_t now = clock_realtime_ns();
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

/* ---- the worker thread ----------------------------------------------------------------- */

static int indexer_embed_cb(void *ctx, const char *const *texts, const size_t *lens, size_t n,
                            float *out)
{
    return embed_service_embed(ctx, texts, lens, n, out);
}

static size_t count_tokens_cb(void *ctx, const char *text, size_t len)
{
    return embed_service_count_tokens(ctx, text, len);
}

/* Worker thread: end a job that did not run, with this message, in its row and on the loop. */
static void finish_unrun(struct jobs *q, struct done_post *dp, int r, uint32_t state,
                         const char *message)
{
    dp->r = r;
    snprintf(dp->res.message, sizeof(dp->res.message), "%s", message);
    set_job_row_state(q, dp->j->id, state, r);
    if (event_post(q->env.el, on_job_done, dp) < 0)
        free(dp);
}

static void run_job(struct jobs *q, struct job *j)
{
    struct done_post *dp = calloc(1, sizeof(*dp));
    struct job_ctx jc = {.q = q, .j = j};
    struct embed_service_info info;
    struct embed_service_error err;
    struct pressure_monitor_link link;
    struct indexer_embed emb = {0};
    struct indexer_env env = {0};
    struct indexer_job ij = {0};
    int r;

    if (!dp)
        return; /* the job stays queued in the store and resumes at the next start */
    dp->q = q;
    dp->j = j;

    /* Cancelled while queued by something that could not dequeue it (repo.remove): its
     * repository may be gone, so do not start. */
    if (atomic_load(&j->cancel) && !atomic_load(&j->interrupted)) {
        finish_unrun(q, dp, -ECANCELED, JOB_STATE_CANCELLED, "cancelled before it started");
        return;
    }
    r = embed_service_prepare(q->env.model, &info, &err);
    if (r < 0) {
        finish_unrun(q, dp, r, JOB_STATE_FAILED, err.message);
        return;
    }
    emb.ctx = q->env.model;
    emb.model_id = embed_service_model_name(q->env.model);
    emb.dim = info.dim;
    emb.max_tokens = info.max_tokens;
    emb.bytes_per_token = info.bytes_per_token;
    emb.count_tokens = count_tokens_cb;
    emb.count_ctx = q->env.model;
    emb.embed = indexer_embed_cb;

    pressure_monitor_link(q->env.pressure, &link);
    env.store = q->env.store;
    env.embed = &emb;
    env.gov = link.gov;
    env.gov_lock = link.gov_lock;
    env.actions = link.actions;
    scan_options_init(&env.scan);
    env.scan.max_file_size = q->max_file_size;
    chunk_options_init(&env.chunk);
    env.checkpoint_every = pressure_monitor_config(q->env.pressure)->checkpoint_frequency;
    env.committed = on_committed;
    env.userdata = q;

    ij.id = j->id;
    ij.repo_id = j->repo;
    ij.root = j->root;
    ij.cancel = &j->cancel;
    ij.progress = on_indexer_progress;
    ij.progress_userdata = &jc;

    log_info("job %" PRIu64 ": indexing %s%s", j->id, j->root, j->resumed ? " (resumed)" : "");
    dp->r = indexer_run(&env, &ij, &dp->res);
    if (dp->r == -ECANCELED && atomic_load(&j->interrupted))
        set_job_row_state(q, j->id, JOB_STATE_QUEUED, 0); /* the daemon stopped, not a user */
    if (event_post(q->env.el, on_job_done, dp) < 0) {
        indexer_result_release(&dp->res);
        free(dp);
    }
}

/* Loop thread: the worker thread has returned; let the owner finish stopping. */
static void on_worker_exit(void *userdata)
{
    struct jobs *q = userdata;

    if (q->worker_started) {
        pthread_join(q->worker, NULL);
        q->worker_started = false;
    }
    if (q->env.hooks.worker_exited)
        q->env.hooks.worker_exited(q->env.hooks.userdata);
}

static void *worker_main(void *userdata)
{
    struct jobs *q = userdata;

    for (;;) {
        struct job *j;

        pthread_mutex_lock(&q->lock);
        while (!q->queue_head && !q->stopping)
            pthread_cond_wait(&q->cond, &q->lock);
        if (q->stopping) {
            pthread_mutex_unlock(&q->lock);
            break;
        }
        j = q->queue_head;
        q->queue_head = j->next;
        if (!q->queue_head)
            q->queue_tail = NULL;
        j->next = NULL;
        q->current = j;
        j->state = JOB_STATE_RUNNING;
        pthread_mutex_unlock(&q->lock);
        run_job(q, j);
    }
    if (event_post(q->env.el, on_worker_exit, q) < 0)
        log_debug("jobs: the loop closed before the worker exited");
    return NULL;
}

/* ---- the queue ------------------------------------------------------------------------- */

/* Append a job to the queue.  Any thread. */
static void enqueue(struct jobs *q, struct job *j)
{
    pthread_mutex_lock(&q->lock);
    if (q->queue_tail)
        q->queue_tail->next = j;
    else
        q->queue_head = j;
    q->queue_tail = j;
    pthread_cond_signal(&q->cond);
    pthread_mutex_unlock(&q->lock);
}

/* The running or queued job that `match` accepts (running first, then in queue order), if
 * any.  Any thread. */
static struct job *find_active(struct jobs *q, bool (*match)(const struct job *j, uint64_t key),
                               uint64_t key)
{
    struct job *found = NULL;

    pthread_mutex_lock(&q->lock);
    if (q->current && match(q->current, key))
        found = q->current;
    for (struct job *j = q->queue_head; j && !found; j = j->next)
        if (match(j, key))
            found = j;
    pthread_mutex_unlock(&q->lock);
    return found;
}

static bool job_is_of_repo(const struct job *j, uint64_t repo)
{
    return j->repo == repo;
}

static bool job_has_id(const struct job *j, uint64_t id)
{
    return j->id == id;
}

struct job *jobs_active_of(struct jobs *q, uint32_t repo)
{
    return find_active(q, job_is_of_repo, repo);
}

struct job *jobs_find(struct jobs *q, uint64_t id)
{
    struct job *found = find_active(q, job_has_id, id);

    for (size_t i = 0; i < q->n_recent && !found; i++)
        if (q->recent[i]->id == id)
            found = q->recent[i];
    return found;
}

int jobs_submit(struct jobs *q, const char *root, struct job **ret_job, bool *ret_created,
                char *msg, size_t msglen)
{
    struct store_txn *t = NULL;
    struct job *j;
    bool created = false;
    uint32_t repo;
    int r;

    pthread_mutex_lock(&q->register_lock);
    r = store_write_begin(q->env.store, &t);
    if (r >= 0)
        r = store_repo_get_or_create(t, root, &repo);
    if (r >= 0)
        r = store_write_commit(t);
    else
        store_write_abort(t);
    if (r < 0) {
        snprintf(msg, msglen, "cannot register %s: %s", root, store_last_error());
        goto out;
    }
    j = jobs_active_of(q, repo);
    if (!j) {
        r = create_job(q, root, repo, &j);
        if (r < 0) {
            snprintf(msg, msglen, "cannot create a job: %s", store_last_error());
            goto out;
        }
        created = true;
        enqueue(q, j);
    }
    *ret_job = j;
    *ret_created = created;
out:
    pthread_mutex_unlock(&q->register_lock);
    return r;
}

int jobs_wait(struct jobs *q, struct job *j, void *waiter)
{
    void **w = array_realloc(j->waiters, j->n_waiters + 1, sizeof(*w));

    (void)q;
    if (!w)
        return -ENOMEM;
    j->waiters = w;
    j->waiters[j->n_waiters++] = waiter;
    return 0;
}

/* Records a cancelled queued job in its row, on the pool (the write lock may be busy). */
struct cancel_row_op {
    struct jobs *q;
    uint64_t id;
};

static void cancel_row_work(void *userdata)
{
    struct cancel_row_op *op = userdata;

    set_job_row_state(op->q, op->id, JOB_STATE_CANCELLED, -ECANCELED);
}

static void cancel_row_done(int status, void *userdata)
{
    (void)status;
    free(userdata);
}

int jobs_cancel(struct jobs *q, struct job *j)
{
    struct done_post *dp;
    struct cancel_row_op *op;
    bool was_queued = false;

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
    pthread_mutex_lock(&q->lock);
    for (struct job **pp = &q->queue_head, *prev = NULL; *pp; prev = *pp, pp = &(*pp)->next)
        if (*pp == j) {
            *pp = j->next;
            if (q->queue_tail == j)
                q->queue_tail = prev;
            was_queued = true;
            break;
        }
    pthread_mutex_unlock(&q->lock);
    if (!was_queued) {
        free(dp);
        free(op);
        return 0;
    }
    /* The job ends now, in memory (a second cancel or `jobs` sees it cancelled); its row is
     * updated on the pool, since the write lock may be held by a running job.  Should even that
     * fail, the update runs here: a row left queued would run at the next start. */
    dp->q = op->q = q;
    dp->j = j;
    dp->r = -ECANCELED;
    op->id = j->id;
    snprintf(dp->res.message, sizeof(dp->res.message), "cancelled before it started");
    on_job_done(dp);
    if (event_work_queue(q->env.el, cancel_row_work, cancel_row_done, op) < 0) {
        cancel_row_work(op);
        free(op);
    }
    return 0;
}

/* Appends j to *a (the array grows); a job that does not fit is left out. */
static void list_add(struct job ***a, size_t *n, size_t *cap, struct job *j)
{
    if (array_grow((void **)a, cap, *n + 1, sizeof(**a)) == 0)
        (*a)[(*n)++] = j;
}

void jobs_list(struct jobs *q, struct job ***ret, size_t *ret_n)
{
    struct job **a = NULL;
    size_t n = 0, cap = 0;

    for (size_t i = 0; i < q->n_recent; i++)
        list_add(&a, &n, &cap, q->recent[i]);
    pthread_mutex_lock(&q->lock);
    if (q->current)
        list_add(&a, &n, &cap, q->current);
    for (struct job *j = q->queue_head; j; j = j->next)
        list_add(&a, &n, &cap, j);
    pthread_mutex_unlock(&q->lock);
    *ret = a;
    *ret_n = n;
}

void jobs_summary(struct jobs *q, unsigned *ret_queued, uint64_t *ret_running)
{
    unsigned queued = 0;
    uint64_t running = 0;

    pthread_mutex_lock(&q->lock);
    for (struct job *j = q->queue_head; j; j = j->next)
        queued++;
    if (q->current)
        running = q->current->id;
    pthread_mutex_unlock(&q->lock);
    *ret_queued = queued;
    *ret_running = running;
}

int jobs_remove_repo(struct jobs *q, const char *path, uint32_t *ret_repo)
{
    struct store_txn *t;
    uint32_t id;
    int r;

    /* Under the registration lock, so no submit registers a job for the repository between the
     * cancel and the removal: that job would run on a repository that no longer exists. */
    pthread_mutex_lock(&q->register_lock);
    r = store_read_begin(q->env.store, &t);
    if (r >= 0) {
        if (store_repo_find(t, path, &id) == 0) {
            struct job *j = jobs_active_of(q, id); /* stop indexing it first */
            if (j)
                atomic_store(&j->cancel, true);
        }
        store_read_end(t);
    }
    r = store_write_begin(q->env.store, &t);
    if (r >= 0) {
        r = store_repo_find(t, path, &id);
        if (r >= 0)
            r = store_repo_remove(t, id);
        if (r >= 0)
            r = store_write_commit(t);
        else
            store_write_abort(t);
    }
    pthread_mutex_unlock(&q->register_lock);
    if (r >= 0)
        *ret_repo = id;
    return r;
}

/* ---- lifecycle ------------------------------------------------------------------------- */

/* Copies of the rows of queued and running jobs (resume_jobs); cursors dropped. */
struct unfinished_rows {
    struct store_job *rows;
    size_t n, cap;
};

static int collect_unfinished(void *userdata, const struct store_job *row)
{
    struct unfinished_rows *l = userdata;

    if (row->state != JOB_STATE_QUEUED && row->state != JOB_STATE_RUNNING)
        return 0;
    if (array_grow((void **)&l->rows, &l->cap, l->n + 1, sizeof(*l->rows)) < 0)
        return -ENOMEM;
    l->rows[l->n] = *row;
    l->rows[l->n].cursor = NULL;
    l->rows[l->n].cursor_len = 0;
    l->n++;
    return 0;
}

/* Re-queue jobs a killed or stopped daemon left behind. */
static int resume_jobs(struct jobs *q)
{
    struct unfinished_rows l = {0};
    struct store_txn *t;
    int r;

    r = store_read_begin(q->env.store, &t);
    if (r < 0)
        return r;
    r = store_job_foreach(t, collect_unfinished, &l);
    for (size_t i = 0; r >= 0 && i < l.n; i++) {
        struct store_repo repo;
        struct job *j;

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
        enqueue(q, j);
    }
    store_read_end(t);
    free(l.rows);
    return r;
}

/* COARCH_MAX_FILE_SIZE_KB: files over this many KiB are skipped (and reported as too large). */
static int parse_max_file_size(uint64_t *ret)
{
    const char *v = getenv("COARCH_MAX_FILE_SIZE_KB");
    char *end = NULL;
    unsigned long long kb;

    *ret = SCAN_DEFAULT_MAX_FILE_SIZE;
    if (!v || !*v)
        return 0;
    errno = 0;
    kb = strtoull(v, &end, 10);
    if (errno || end == v || *end || kb < 1 || kb > 1024 * 1024) {
        log_error("COARCH_MAX_FILE_SIZE_KB=%s: expected an integer in [1, 1048576] (KiB)", v);
        return -EINVAL;
    }
    *ret = (uint64_t)kb * 1024;
    return 0;
}

int jobs_new(const struct jobs_env *env, struct jobs **ret)
{
    struct jobs *q;
    uint64_t max_file_size;
    int r = parse_max_file_size(&max_file_size);

    if (r < 0)
        return r;
    q = calloc(1, sizeof(*q));
    if (!q)
        return -ENOMEM;
    q->env = *env;
    q->max_file_size = max_file_size;
    pthread_mutex_init(&q->lock, NULL);
    pthread_mutex_init(&q->register_lock, NULL);
    pthread_cond_init(&q->cond, NULL);
    *ret = q;
    return 0;
}

int jobs_start(struct jobs *q)
{
    int r = resume_jobs(q);

    if (r < 0)
        log_warning_errno(r, "cannot resume interrupted jobs: %m");
    r = pthread_create(&q->worker, NULL, worker_main, q);
    if (r != 0)
        return -r;
    q->worker_started = true;
    return 0;
}

/* Under q->lock: tell the worker to exit and the running job to stop at its next batch. */
static void signal_stop_locked(struct jobs *q, bool interrupt)
{
    q->stopping = true;
    if (q->current) {
        /* Interrupted, not cancelled: its row goes back to queued and the next start resumes. */
        if (interrupt)
            atomic_store(&q->current->interrupted, true);
        atomic_store(&q->current->cancel, true);
    }
    pthread_cond_signal(&q->cond);
}

void jobs_stop(struct jobs *q)
{
    pthread_mutex_lock(&q->lock);
    signal_stop_locked(q, true);
    pthread_mutex_unlock(&q->lock);
}

struct jobs *jobs_free(struct jobs *q)
{
    if (!q)
        return NULL;
    if (q->worker_started) {
        pthread_mutex_lock(&q->lock);
        signal_stop_locked(q, false);
        pthread_mutex_unlock(&q->lock);
        pthread_join(q->worker, NULL);
    }
    while (q->queue_head) {
        struct job *j = q->queue_head;
        q->queue_head = j->next;
        job_free(j);
    }
    for (size_t i = 0; i < q->n_recent; i++)
        job_free(q->recent[i]);
    pthread_mutex_destroy(&q->lock);
    pthread_mutex_destroy(&q->register_lock);
    pthread_cond_destroy(&q->cond);
    free(q);
    return NULL;
}
