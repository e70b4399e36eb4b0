/*
 * methods-watch.c - `watch` and `unwatch` (PROTOCOL.md section 7): the live index of a
 * repository (sched/watcher.h).
 *
 * `watch` registers the repository, submits a job that brings it up to date, records in the
 * store that it is watched (so a restarted daemon watches it again) and starts the watches;
 * `unwatch` forgets it.  Both take the store's write lock, so their work runs on the pool.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jobs.h"
#include "macro.h"
#include "methods.h"
#include "proto.h"
#include "rpc.h"
#include "store-repo.h"
#include "store.h"
#include "watcher.h"
#include "work.h"

struct watch_op {
    struct methods_env *env;
    struct rpc_request *req;
    char *root;
    bool on;
    struct job *job;
    bool created;
    uint32_t repo;
    int r;
    char message[PATH_MAX + 128];
};

static void watch_op_free(struct watch_op *op)
{
    free(op->root);
    free(op);
}

static int find_repo(struct store *store, const char *root, uint32_t *ret)
{
    struct store_txn *t;
    int r = store_read_begin(store, &t);

    if (r < 0)
        return r;
    r = store_repo_find(t, root, ret);
    store_read_end(t);
    return r;
}

static void watch_work(void *userdata)
{
    struct watch_op *op = userdata;
    int r;

    if (op->on) {
        r = jobs_submit(op->env->jobs, op->root, &op->job, &op->created, op->message,
                        sizeof(op->message));
        if (r >= 0)
            r = find_repo(op->env->store, op->root, &op->repo);
    } else {
        r = find_repo(op->env->store, op->root, &op->repo);
        if (r == -ENOENT)
            snprintf(op->message, sizeof(op->message), "%s is not indexed", op->root);
    }
    if (r >= 0) {
        r = watcher_persist(op->env->store, op->repo, op->on);
        if (r < 0)
            snprintf(op->message, sizeof(op->message), "recording the watch of %s failed: %s",
                     op->root, store_last_error());
    }
    op->r = r;
}

static int pack_watch(msgpack_packer *pk, void *userdata)
{
    struct watch_op *op = userdata;
    int r = msgpack_pack_map(pk, op->on ? 4 : 2);

    r |= proto_pack_kv_str(pk, "repo", op->root);
    r |= proto_pack_kv_bool(pk, "watching", op->on);
    if (op->on) {
        r |= proto_pack_kv_uint(pk, "job", op->job ? op->job->id : 0);
        r |= proto_pack_kv_str(pk, "state", op->job ? job_state_to_string(op->job->state) : "");
    }
    return r ? -ENOMEM : 0;
}

static void watch_done(int status, void *userdata)
{
    struct watch_op *op = userdata;

    if (status < 0 || op->r < 0) {
        rpc_request_reply_errno(op->req, status < 0 ? status : op->r, "%s",
                                op->message[0] ? op->message : "watch did not run");
    } else if (op->on) {
        if (op->created)
            jobs_announce(op->env->jobs, op->job);
        int r = watcher_add(op->env->watcher, op->repo, op->root);
        if (r < 0)
            rpc_request_reply_errno(op->req, r, "watching %s failed: %s", op->root, strerror(-r));
        else
            rpc_request_reply_ok(op->req, pack_watch, op);
    } else {
        watcher_remove(op->env->watcher, op->repo); /* not watched: nothing to stop */
        rpc_request_reply_ok(op->req, pack_watch, op);
    }
    watch_op_free(op);
}

static int start(struct rpc_request *req, const msgpack_object *params, struct methods_env *env,
                 bool on)
{
    _cleanup_free_ char *path = NULL;
    struct watch_op *op;
    int r;

    if (proto_get_strdup(params, "path", &path) < 0)
        return rpc_request_reply_error(req, PROTO_ERROR_INVALID_PARAMS,
                                       "\"path\" is required: the repository's directory");
    op = calloc(1, sizeof(*op));
    if (!op)
        return -ENOMEM;
    op->env = env;
    op->req = req;
    op->on = on;
    if (on) {
        r = methods_resolve_repo(path, &op->root, op->message, sizeof(op->message));
        if (r < 0) {
            rpc_request_reply_error(req, PROTO_ERROR_INVALID_INPUT, "%s", op->message);
            free(op);
            return 0;
        }
    } else {
        /* Unwatching a directory that is gone works by the path it was watched at. */
        op->root = realpath(path, NULL);
        if (!op->root)
            op->root = strdup(path);
        if (!op->root) {
            free(op);
            return -ENOMEM;
        }
    }
    r = event_work_queue(env->el, watch_work, watch_done, op);
    if (r < 0) {
        watch_op_free(op);
        return r;
    }
    return 0;
}

static int method_watch(struct rpc_request *req, const msgpack_object *params, void *userdata)
{
    return start(req, params, userdata, true);
}

static int method_unwatch(struct rpc_request *req, const msgpack_object *params, void *userdata)
{
    return start(req, params, userdata, false);
}

int methods_watch_register(struct methods_env *env)
{
    int r = rpc_register(env->rpc, "watch", method_watch, env);

    if (r >= 0)
        r = rpc_register(env->rpc, "unwatch", method_unwatch, env);
    return r;
}
