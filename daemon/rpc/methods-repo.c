/*
 * methods-repo.c - repos and repo.remove (methods.h; the contract is PROTOCOL.md section 7),
 * and how a user's path becomes the repository coarch knows it as.
 */
#include "methods.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "jobs.h"
#include "macro.h"
#include "proto.h"
#include "rpc.h"
#include "search.h"
#include "store-repo.h"
#include "watcher.h"
#include "work.h"

int methods_resolve_repo(const char *path, char **ret, char *msg, size_t msglen)
{
    char *real;
    struct stat st;

    /* The daemon's working directory is not the client's: a relative path would name some
     * other directory (PROTOCOL.md: absolute). */
    if (path[0] != '/') {
        snprintf(msg, msglen,
                 "%.200s: not an absolute path (the daemon cannot know your working "
                 "directory; coarchctl resolves paths for you)",
                 path);
        return -EINVAL;
    }
    real = realpath(path, NULL);
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

/* ---- repos ----------------------------------------------------------------------------- */

struct repos_list {
    struct store_repo *rows;
    char **paths;
    size_t n, cap;
    struct watcher *watcher;
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
        struct watcher_info wi;
        watcher_info(l->watcher, l->rows[i].id, &wi);
        r |= msgpack_pack_map(pk, 9);
        r |= proto_pack_kv_uint(pk, "id", l->rows[i].id);
        r |= proto_pack_kv_bool(pk, "watching", wi.watching);
        r |= proto_pack_kv_uint(pk, "watched_dirs", wi.dirs);
        r |= proto_pack_kv_uint(pk, "unwatched_dirs", wi.unwatched);
        r |= proto_pack_kv_str(pk, "path", l->paths[i]);
        r |= proto_pack_kv_uint(pk, "files", l->rows[i].n_files);
        r |= proto_pack_kv_uint(pk, "chunks", l->rows[i].n_chunks);
        r |= proto_pack_kv_uint(pk, "vectors", l->rows[i].n_vectors);
        r |= proto_pack_kv_int(pk, "indexed_ns", l->rows[i].indexed_ns);
    }
    return r ? -ENOMEM : 0;
}

/* A read transaction never waits for the writer (LMDB MVCC): this runs on the loop. */
static int method_repos(struct rpc_request *req, const msgpack_object *params, void *userdata)
{
    struct methods_env *env = userdata;
    struct repos_list l = {.watcher = env->watcher};
    struct store_txn *t;
    int r;

    r = store_read_begin(env->store, &t);
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

/* ---- repo.remove ----------------------------------------------------------------------- */

struct remove_op {
    struct methods_env *env;
    struct rpc_request *req;
    char *path;
    uint32_t repo;
    int r;
    char message[600];
};

/* On the pool: the store's write lock may be held by a running job. */
static void remove_work(void *userdata)
{
    struct remove_op *op = userdata;
    uint32_t id = 0;
    int r = jobs_remove_repo(op->env->jobs, op->path, &id);

    op->r = r;
    op->repo = id;
    if (r >= 0)
        (void)watcher_persist(op->env->store, id, false); /* a stale key would be harmless */
    if (r == -ENOENT)
        snprintf(op->message, sizeof(op->message), "%s is not indexed", op->path);
    else if (r < 0)
        snprintf(op->message, sizeof(op->message), "removing %s failed: %s", op->path,
                 store_last_error());
    else
        search_cache_invalidate(op->env->cache, id);
}

static void remove_done(int status, void *userdata)
{
    struct remove_op *op = userdata;

    if (status < 0)
        rpc_request_reply_errno(op->req, status, "repo.remove did not run");
    else if (op->r < 0)
        rpc_request_reply_errno(op->req, op->r, "%s", op->message);
    else {
        watcher_remove(op->env->watcher, op->repo);
        rpc_request_reply_bool(op->req, true);
    }
    free(op->path);
    free(op);
}

static int method_repo_remove(struct rpc_request *req, const msgpack_object *params, void *userdata)
{
    struct methods_env *env = userdata;
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
    op->env = env;
    op->req = req;
    op->path = real ? real : strdup(path);
    if (!op->path) {
        free(op);
        return -ENOMEM;
    }
    r = event_work_queue(env->el, remove_work, remove_done, op);
    if (r < 0) {
        free(op->path);
        free(op);
        return r;
    }
    return 0;
}

int methods_repo_register(struct methods_env *env)
{
    int r = rpc_register(env->rpc, "repos", method_repos, env);

    if (r >= 0)
        r = rpc_register(env->rpc, "repo.remove", method_repo_remove, env);
    return r;
}
