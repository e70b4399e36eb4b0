/*
 * status-service.c - the service's parts of the `status` answer (methods.h): "governor" (the
 * memory governor's state), "model" (the embedding model, once loaded) and "jobs" (the queue).
 * Each packer takes only locks held for microseconds (the governor's, the queue's), never the
 * model's, so `status` answers at once while a batch runs.
 */
#include "methods.h"

#include <errno.h>
#include <stdint.h>

#include "daemon.h"
#include "embed-service.h"
#include "jobs.h"
#include "monitor.h"
#include "proto.h"
#include "search.h"

static int pack_governor(msgpack_packer *pk, void *userdata)
{
    struct methods_env *env = userdata;
    struct pressure_snapshot s;
    int r;

    pressure_monitor_snapshot(env->pressure, &s);
    r = msgpack_pack_map(pk, 19);
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
    r |= proto_pack_kv_uint(pk, "search_cache_bytes", search_cache_memory(env->cache));
    /* The GPU backend's device memory (0 on the CPU, or before the model loads). */
    r |= proto_pack_kv_uint(pk, "gpu_total_bytes", s.gpu_valid ? s.gpu_total : 0);
    r |= proto_pack_kv_uint(pk, "gpu_free_bytes", s.gpu_valid ? s.gpu_free : 0);
    r |= proto_pack_kv_uint(pk, "gpu_allocated_bytes", s.gpu_valid ? s.gpu_allocated : 0);
    return r ? -ENOMEM : 0;
}

static int pack_model(msgpack_packer *pk, void *userdata)
{
    struct methods_env *env = userdata;
    struct embed_service_status s;
    int r;

    embed_service_status(env->model, &s);
    r = msgpack_pack_map(pk, 9);
    r |= proto_pack_kv_str(pk, "name", s.name);
    r |= proto_pack_kv_str(pk, "dir", s.dir);
    r |= proto_pack_kv_bool(pk, "loaded", s.loaded);
    r |= proto_pack_kv_uint(pk, "dim", s.dim);
    r |= proto_pack_kv_str(pk, "backend", s.backend);
    r |= proto_pack_kv_str(pk, "precision", s.precision);
    /* What coarchd chose at start (COARCH_BACKEND, COARCH_PRECISION), before the model loads. */
    r |= proto_pack_kv_str(pk, "backend_selected", s.selected_backend);
    r |= proto_pack_kv_str(pk, "precision_selected", s.selected_precision);
    r |= proto_pack_kv_str(pk, "device", s.device);
    return r ? -ENOMEM : 0;
}

static int pack_jobs_summary(msgpack_packer *pk, void *userdata)
{
    struct methods_env *env = userdata;
    unsigned queued;
    uint64_t running;
    int r;

    jobs_summary(env->jobs, &queued, &running);
    r = msgpack_pack_map(pk, 2);
    r |= proto_pack_kv_uint(pk, "queued", queued);
    r |= proto_pack_kv_uint(pk, "running_job", running);
    return r ? -ENOMEM : 0;
}

int methods_status_register(struct methods_env *env)
{
    int r = daemon_status_add(env->d, "governor", pack_governor, env);

    if (r >= 0)
        r = daemon_status_add(env->d, "model", pack_model, env);
    if (r >= 0)
        r = daemon_status_add(env->d, "jobs", pack_jobs_summary, env);
    return r;
}
