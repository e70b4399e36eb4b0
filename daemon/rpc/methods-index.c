/*
 * methods-index.c - index, jobs, job.cancel and the "progress" notifications (methods.h;
 * the contract is PROTOCOL.md section 7, the queue is sched/jobs.h).
 */
#include "methods.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jobs.h"
#include "macro.h"
#include "monitor.h"
#include "proto.h"
#include "rpc.h"
#include "store-job.h"
#include "store-repo.h"
#include "work.h"

#define PROGRESS_FIELDS 22

/* Rates and times to the precision they mean (a millisecond, a tenth of a chunk per second),
 * so JSON shows 12.5, not 12.499999999999998. */
static double round_to(double v, double per_unit)
{
    return round(v * per_unit) / per_unit; /* dividing gives the double nearest the decimal */
}

/* The fields a progress notification and a job's answer share: PROGRESS_FIELDS pairs. */
static int pack_progress_fields(msgpack_packer *pk, const struct job *j,
                                const struct methods_env *env)
{
    const struct indexer_progress *p = &j->progress;
    struct pressure_snapshot s = {0};
    int r = 0;

    if (env->pressure)
        pressure_monitor_snapshot(env->pressure, &s);
    r |= proto_pack_kv_uint(pk, "job", j->id);
    r |= proto_pack_kv_str(pk, "repo", j->root);
    r |= proto_pack_kv_str(pk, "state", job_state_to_string(j->state));
    r |= proto_pack_kv_str(pk, "phase", p->phase ? p->phase : "queued");
    r |= proto_pack_kv_uint(pk, "files_done", p->files_done);
    r |= proto_pack_kv_uint(pk, "files_total", p->files_total);
    r |= proto_pack_kv_uint(pk, "files_scanned", p->files_scanned);
    r |= proto_pack_kv_uint(pk, "chunks_done", p->chunks_done);
    r |= proto_pack_kv_uint(pk, "chunks_total", p->chunks_total);
    r |= proto_pack_kv_double(pk, "chunks_per_s", round_to(p->chunks_per_s, 10));
    r |= proto_pack_kv_double(pk, "eta_s", p->eta_s < 0 ? -1 : round_to(p->eta_s, 10));
    r |= proto_pack_kv_double(pk, "elapsed_s", round_to(p->elapsed_s, 1000));
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

/* A job as `index` and `jobs` answer it: the progress fields and the totals of its run. */
static int pack_job(msgpack_packer *pk, const struct job *j, const struct methods_env *env)
{
    int r;

    r = msgpack_pack_map(pk, PROGRESS_FIELDS + 11);
    r |= pack_progress_fields(pk, j, env);
    r |= proto_pack_kv_uint(pk, "files_unchanged", j->progress.files_unchanged);
    r |= proto_pack_kv_uint(pk, "files_deleted", j->progress.files_deleted);
    r |= proto_pack_kv_uint(pk, "bytes_done", j->progress.bytes_done);
    r |= proto_pack_kv_uint(pk, "tokens_done", j->progress.tokens_done);
    r |= proto_pack_kv_uint(pk, "chunks_reused", j->progress.chunks_reused);
    /* Seconds spent per stage by the job's run in this daemon (a resumed job counts from its
     * resumption): where the time goes, for `coarchctl jobs --json` and bench/index. */
    r |= proto_pack_str(pk, "stage_s");
    r |= msgpack_pack_map(pk, 4);
    r |= proto_pack_kv_double(pk, "scan", round_to(j->progress.scan_s, 1000));
    r |= proto_pack_kv_double(pk, "chunk", round_to(j->progress.chunk_s, 1000));
    r |= proto_pack_kv_double(pk, "embed", round_to(j->progress.embed_s, 1000));
    r |= proto_pack_kv_double(pk, "store", round_to(j->progress.store_s, 1000));
    r |= proto_pack_kv_uint(pk, "errors", j->scan_errors + j->file_errors);
    r |= proto_pack_kv_int(pk, "error_code", j->error);
    r |= proto_pack_kv_str(pk, "message", j->message);
    /* What the run passed over and why: counts by reason, then the files themselves (the first
     * hundred of each kind), so that nothing a job left out is silent. */
    r |= proto_pack_str(pk, "skipped");
    r |= msgpack_pack_map(pk, 7);
    r |= proto_pack_kv_uint(pk, "too_large", j->skipped.too_large);
    r |= proto_pack_kv_uint(pk, "binary", j->skipped.binary);
    r |= proto_pack_kv_uint(pk, "vendored", j->skipped.vendored);
    r |= proto_pack_kv_uint(pk, "symlinks", j->skipped.symlinks);
    r |= proto_pack_kv_uint(pk, "special", j->skipped.special);
    r |= proto_pack_kv_uint(pk, "unreadable", j->skipped.unreadable);
    r |= proto_pack_kv_uint(pk, "failed", j->skipped.failed);
    r |= proto_pack_str(pk, "skipped_files");
    r |= msgpack_pack_array(pk, (uint32_t)j->n_skipped_files);
    for (size_t i = 0; i < j->n_skipped_files; i++) {
        const struct job_skipped_file *f = &j->skipped_files[i];
        r |= msgpack_pack_map(pk, 3);
        r |= proto_pack_kv_str(pk, "path", f->path);
        r |= proto_pack_kv_str(pk, "reason", f->reason);
        r |= proto_pack_kv_str(pk, "error", f->error ? strerror(-f->error) : "");
    }
    return r ? -ENOMEM : 0;
}

/* rpc_pack_fn adapters: userdata is {job, env}. */
struct job_and_env {
    const struct job *j;
    const struct methods_env *env;
};

static int pack_progress_notification(msgpack_packer *pk, void *userdata)
{
    const struct job_and_env *a = userdata;
    return pack_progress_fields(pk, a->j, a->env);
}

static int pack_job_result(msgpack_packer *pk, void *userdata)
{
    const struct job_and_env *a = userdata;
    return pack_job(pk, a->j, a->env);
}

void methods_index_job_progress(void *userdata, struct job *j)
{
    struct methods_env *env = userdata;
    struct job_and_env a = {j, env};

    rpc_notify(env->rpc, RPC_EVENT_PROGRESS, "progress", PROGRESS_FIELDS,
               pack_progress_notification, &a);
}

void methods_index_job_ended(void *userdata, struct job *j, void *waiter)
{
    struct job_and_env a = {j, userdata};

    rpc_request_reply_ok(waiter, pack_job_result, &a);
}

/* ---- index ----------------------------------------------------------------------------- */

/*
 * `index` registers the repository and its job on the libuv pool: the store's write lock may be
 * held by the job worker for a whole checkpoint interval, and the loop must not wait for it.
 */
struct index_op {
    struct methods_env *env;
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

    op->r = jobs_submit(op->env->jobs, op->root, &op->job, &op->created, op->message,
                        sizeof(op->message));
}

static void index_done(int status, void *userdata)
{
    struct index_op *op = userdata;
    struct job *j = op->job;
    struct job_and_env a = {j, op->env};

    if (status < 0 || op->r < 0) {
        rpc_request_reply_errno(op->req, status < 0 ? status : op->r, "%s",
                                op->message[0] ? op->message : "index did not run");
    } else {
        if (op->created)
            jobs_announce(op->env->jobs, j);
        if (op->wait && !job_ended(j)) {
            if (jobs_wait(op->env->jobs, j, op->req) < 0)
                rpc_request_reply_errno(op->req, -ENOMEM, "out of memory");
        } else {
            rpc_request_reply_ok(op->req, pack_job_result, &a);
        }
    }
    free(op->root);
    free(op);
}

static int method_index(struct rpc_request *req, const msgpack_object *params, void *userdata)
{
    struct methods_env *env = userdata;
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
    op->env = env;
    op->req = req;
    r = proto_get_bool(params, "wait", &op->wait);
    if (r == -EINVAL) {
        free(op);
        return rpc_request_reply_error(req, PROTO_ERROR_INVALID_PARAMS,
                                       "\"wait\" must be a boolean");
    }
    r = methods_resolve_repo(path, &op->root, op->message, sizeof(op->message));
    if (r < 0) {
        rpc_request_reply_error(req, PROTO_ERROR_INVALID_INPUT, "%s", op->message);
        free(op);
        return 0;
    }
    r = event_work_queue(env->el, index_work, index_done, op);
    if (r < 0) {
        free(op->root);
        free(op);
        return r;
    }
    return 0;
}

/* ---- jobs ------------------------------------------------------------------------------ */

struct jobs_list {
    const struct methods_env *env;
    struct job **live; /* recent, running, queued (borrowed) */
    size_t n_live;
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
        r |= pack_job(pk, l->live[i], l->env);
    return r ? -ENOMEM : 0;
}

static int method_jobs(struct rpc_request *req, const msgpack_object *params, void *userdata)
{
    struct methods_env *env = userdata;
    struct jobs_list l = {.env = env};
    struct store_txn *t = NULL;
    int r;

    /* Live jobs first (their progress is fresher than their rows). */
    jobs_list(env->jobs, &l.live, &l.n_live);
    r = store_read_begin(env->store, &t);
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

/* ---- job.cancel ------------------------------------------------------------------------ */

static int method_job_cancel(struct rpc_request *req, const msgpack_object *params, void *userdata)
{
    struct methods_env *env = userdata;
    uint64_t id;
    struct job *j;
    int r;

    if (proto_get_uint(params, "job", &id) < 0)
        return rpc_request_reply_error(req, PROTO_ERROR_INVALID_PARAMS,
                                       "\"job\" is required: a job id");
    j = jobs_find(env->jobs, id);
    if (!j)
        return rpc_request_reply_error(req, PROTO_ERROR_NOT_FOUND, "no active job %" PRIu64, id);
    if (j->state != JOB_STATE_QUEUED && j->state != JOB_STATE_RUNNING)
        return rpc_request_reply_error(req, PROTO_ERROR_INVALID_INPUT,
                                       "job %" PRIu64 " is already %s", id,
                                       job_state_to_string(j->state));
    r = jobs_cancel(env->jobs, j);
    if (r < 0)
        return r;
    return rpc_request_reply_bool(req, true);
}

int methods_index_register(struct methods_env *env)
{
    static const struct {
        const char *name;
        rpc_method_fn fn;
    } methods[] = {
        {"index", method_index},
        {"jobs", method_jobs},
        {"job.cancel", method_job_cancel},
    };

    for (size_t i = 0; i < ELEMENTSOF(methods); i++) {
        int r = rpc_register(env->rpc, methods[i].name, methods[i].fn, env);
        if (r < 0)
            return r;
    }
    return 0;
}
