/*
 * methods.h - the service methods of PROTOCOL.md section 7, over the parts engine.c wires
 * together, one file per thing they serve:
 *
 *   methods-index.c    index, jobs, job.cancel; progress notifications     (sched/jobs.h)
 *   methods-search.c   search, embed                         (sched/search.h, embed-service.h)
 *   methods-repo.c     repos, repo.remove                                   (store-repo.h)
 *   methods-watch.c    watch, unwatch: the live index                   (sched/watcher.h)
 *   status-service.c   the governor, model and jobs parts of `status`
 *
 * (methods-core.h has the daemon's own: ping, version, status, shutdown, subscribe.)
 *
 * Each registers its methods with a pointer to one struct methods_env as their context.  The
 * methods never block the loop: anything that reads files, takes the store's write lock or runs
 * the model goes to the libuv pool (event_work_queue()) and is answered from its `done`.
 *
 * Threading: loop thread only (registration and handlers); the helpers below any thread.
 */
#ifndef COARCH_RPC_METHODS_H
#define COARCH_RPC_METHODS_H

#include <stddef.h>

struct daemon;
struct embed_service;
struct event_loop;
struct job;
struct jobs;
struct pressure_monitor;
struct rpc;
struct search_cache;
struct store;
struct watcher;

/* What the methods work on: all borrowed, owned by engine.c, alive until after the loop ends. */
struct methods_env {
    struct daemon *d;
    struct event_loop *el;
    struct rpc *rpc;
    struct store *store;
    struct search_cache *cache;
    struct embed_service *model;
    struct pressure_monitor *pressure;
    struct jobs *jobs;
    struct watcher *watcher;
};

/* Each returns 0, -EEXIST (a name taken) or -ENOMEM. */
int methods_index_register(struct methods_env *env);
int methods_search_register(struct methods_env *env);
int methods_repo_register(struct methods_env *env);
int methods_status_register(struct methods_env *env);
int methods_watch_register(struct methods_env *env);

/*
 * The jobs module's hooks (jobs.h) for methods-index.c: progress becomes a "progress"
 * notification to subscribers, a job's end answers its `index {wait: true}` requests.
 * userdata is the struct methods_env.
 */
void methods_index_job_progress(void *userdata, struct job *j);
void methods_index_job_ended(void *userdata, struct job *j, void *waiter);

/*
 * Resolves a user's path to the canonical directory coarch indexes it as (realpath(3); a
 * directory; no longer than the store allows); in methods-repo.c.  Returns 0 and a malloc'd
 * path, or a negative errno with a sentence naming the path in msg.
 */
int methods_resolve_repo(const char *path, char **ret, char *msg, size_t msglen);

#endif
