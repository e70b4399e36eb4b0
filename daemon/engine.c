/*
 * engine.c - see engine.h: the service's parts, built in dependency order and wired together.
 */
#include "engine.h"

#include <stdlib.h>

#include "daemon.h"
#include "embed-service.h"
#include "jobs.h"
#include "log.h"
#include "methods-core.h"
#include "methods.h"
#include "monitor.h"
#include "search.h"
#include "store.h"
#include "watcher.h"

struct engine {
    struct daemon *d;
    struct methods_env env; /* the parts, borrowed by every method through &env */
    struct store *store;
    struct search_cache *cache;
    struct embed_service *model;
    struct pressure_monitor *pressure;
    struct jobs *jobs;
    struct watcher *watcher;
};

/* The monitor's hooks (loop thread). */
static void on_memory_limit(void *userdata, uint64_t limit_bytes)
{
    struct engine *e = userdata;

    daemon_set_memory_limit(e->d, limit_bytes);
}

static void on_shed_caches(void *userdata)
{
    struct engine *e = userdata;

    search_cache_invalidate(e->cache, 0);
}

/* The monitor's GPU reader: the embed service's last reading (loop thread; never blocks). */
static int read_gpu_memory(void *userdata, struct pressure_gpu *ret)
{
    struct engine *e = userdata;
    uint64_t total, free_b, allocated;
    int r = embed_service_device_memory(e->model, &total, &free_b, &allocated);

    if (r < 0)
        return r;
    *ret = (struct pressure_gpu){
        .free = free_b, .total = total, .allocated = allocated, .reserved = allocated};
    return 0;
}

/* The job worker is gone: the daemon may finish stopping (engine_new's daemon_hold()).
 * userdata is the methods' env, like the other job hooks'. */
static void on_worker_exited(void *userdata)
{
    struct methods_env *env = userdata;

    daemon_release(env->d);
}

static void on_stop(struct daemon *d, void *userdata)
{
    struct engine *e = userdata;

    (void)d;
    pressure_monitor_stop(e->pressure);
    watcher_stop(e->watcher);
    jobs_stop(e->jobs);
}

int engine_new(struct daemon *d, const char *data_dir, struct engine **ret)
{
    struct engine *e = calloc(1, sizeof(*e));
    struct pressure_monitor_hooks ph;
    struct jobs_env je;
    int r;

    if (!e)
        return -ENOMEM;
    e->d = d;
    e->env.d = d;
    ph = (struct pressure_monitor_hooks){
        .limit = on_memory_limit, .shed_caches = on_shed_caches, .userdata = e};
    r = pressure_monitor_new(daemon_loop(d), &ph, &e->pressure);
    if (r < 0)
        goto fail;
    r = embed_service_new(data_dir, &e->model);
    if (r < 0)
        goto fail;
    pressure_monitor_set_gpu(e->pressure, read_gpu_memory, e);
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
    r = pressure_monitor_start(e->pressure);
    if (r < 0)
        goto fail;
    je = (struct jobs_env){
        .el = daemon_loop(d),
        .store = e->store,
        .model = e->model,
        .pressure = e->pressure,
        .cache = e->cache,
        .hooks = {.progress = methods_index_job_progress,
                  .ended = methods_index_job_ended,
                  .worker_exited = on_worker_exited,
                  .userdata = &e->env},
    };
    r = jobs_new(&je, &e->jobs);
    if (r < 0)
        goto fail;
    r = watcher_new(&(struct watcher_env){.el = daemon_loop(d), .store = e->store, .jobs = e->jobs},
                    &e->watcher);
    if (r < 0)
        goto fail;

    e->env = (struct methods_env){
        .d = d,
        .el = daemon_loop(d),
        .rpc = daemon_rpc(d),
        .store = e->store,
        .cache = e->cache,
        .model = e->model,
        .pressure = e->pressure,
        .jobs = e->jobs,
        .watcher = e->watcher,
    };
    r = methods_core_register(daemon_rpc(d), d);
    if (r >= 0)
        r = methods_index_register(&e->env);
    if (r >= 0)
        r = methods_search_register(&e->env);
    if (r >= 0)
        r = methods_repo_register(&e->env);
    if (r >= 0)
        r = methods_status_register(&e->env);
    if (r >= 0)
        r = methods_watch_register(&e->env);
    if (r >= 0)
        r = daemon_on_stop(d, on_stop, e);
    if (r < 0)
        goto fail;

    r = jobs_start(e->jobs);
    if (r < 0)
        goto fail;
    r = watcher_start(e->watcher);
    if (r < 0)
        log_warning("cannot read which repositories are watched: %s", store_last_error());
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
    watcher_free(e->watcher);
    jobs_free(e->jobs);
    pressure_monitor_free(e->pressure);
    search_cache_free(e->cache);
    store_free(e->store);
    embed_service_free(e->model);
    free(e);
    return NULL;
}
