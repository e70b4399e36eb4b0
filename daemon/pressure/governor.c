/* governor.c - see governor.h for the policy; this file only implements it. */
#include "governor.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "macro.h"

struct governor {
    struct governor_params p;

    enum pressure_level level;
    enum pressure_level memory_level;
    bool feed_paused;
    unsigned batch_size;
    unsigned success_run;  /* completed batches in a row at LOW */
    unsigned oom_ceiling;  /* batch size cap learned from OOMs; batch_max when none */
    unsigned oom_run;      /* OOMs in a row at the minimum size */
    uint64_t last_trim_us; /* last SHED_CACHES|MALLOC_TRIM sent while CRITICAL */

    bool psi_hot;          /* a trigger event holds the level at >= HIGH */
    uint64_t psi_event_us; /* time of the last trigger event */

    bool have_reading;
    struct pressure_reading last;

    uint64_t bytes_per_token;
    unsigned max_seq_tokens;

    uint64_t checkpoints, oom_events, samples;
};

static const char *const level_names[] = {
    [PRESSURE_LEVEL_LOW] = "low",
    [PRESSURE_LEVEL_MODERATE] = "moderate",
    [PRESSURE_LEVEL_HIGH] = "high",
    [PRESSURE_LEVEL_CRITICAL] = "critical",
};

const char *pressure_level_to_string(enum pressure_level level)
{
    if ((unsigned)level >= ELEMENTSOF(level_names))
        return "unknown";
    return level_names[level];
}

/*
 * usage/limit against 60/75/90 % in 128-bit integers: exact at every boundary (a double would
 * put 59.99999999% of a 2^60 limit on either side), and no overflow for any 64-bit input.
 */
enum pressure_level pressure_level_from_usage(uint64_t usage, uint64_t limit)
{
    unsigned __int128 u = (unsigned __int128)usage * 100;
    unsigned __int128 l = limit;

    if (u >= l * 90)
        return PRESSURE_LEVEL_CRITICAL;
    if (u >= l * 75)
        return PRESSURE_LEVEL_HIGH;
    if (u >= l * 60)
        return PRESSURE_LEVEL_MODERATE;
    return PRESSURE_LEVEL_LOW;
}

void governor_params_init(struct governor_params *p, const struct pressure_config *cfg)
{
    *p = (struct governor_params){
        .adaptive = cfg ? cfg->adaptive_batching : true,
        .batch_start = cfg ? cfg->batch_size : PRESSURE_BATCH_DEFAULT,
        .batch_min = PRESSURE_BATCH_MIN,
        .batch_max = PRESSURE_BATCH_MAX,
        .grow_after = 3,
        .grow_factor = 1.1,
        .high_factor = 0.75,
        .critical_factor = 0.5,
        .psi_raise_avg10 = 10.0,
        .psi_calm_pct = 5.0,
        .psi_hold_us = 2000000,
        .oom_retries_at_min = 3,
        .trim_interval_us = 1000000,
    };
}

int governor_new(const struct governor_params *p, struct governor **ret_g)
{
    struct governor *g;

    if (p->batch_min == 0 || p->batch_min > p->batch_max || p->batch_start < p->batch_min ||
        p->batch_start > p->batch_max || !(p->grow_factor > 1.0) ||
        !(p->high_factor > 0 && p->high_factor < 1) ||
        !(p->critical_factor > 0 && p->critical_factor < 1) || p->oom_retries_at_min == 0)
        return -EINVAL;
    g = calloc(1, sizeof(*g));
    if (!g)
        return -ENOMEM;
    g->p = *p;
    g->batch_size = p->batch_start;
    g->oom_ceiling = p->batch_max;
    *ret_g = g;
    return 0;
}

struct governor *governor_free(struct governor *g)
{
    free(g);
    return NULL;
}

static unsigned clamp_size(const struct governor *g, double size)
{
    unsigned hi = MIN(g->p.batch_max, MAX(g->oom_ceiling, g->p.batch_min));

    if (!(size >= g->p.batch_min))
        return g->p.batch_min;
    if (size >= hi)
        return hi;
    return (unsigned)size;
}

/* Multiplies the batch size by f (floor), or grows it by at least one for f > 1. */
static void scale_size(struct governor *g, double f)
{
    double n = floor(g->batch_size * f);

    if (!g->p.adaptive)
        return;
    if (f > 1.0 && n < g->batch_size + 1.0)
        n = g->batch_size + 1.0;
    g->batch_size = clamp_size(g, n);
}

static double level_factor(const struct governor *g, enum pressure_level level)
{
    return level == PRESSURE_LEVEL_CRITICAL ? g->p.critical_factor : g->p.high_factor;
}

/* Moves to `level` and returns the edge actions of that move. */
static unsigned governor_set_level(struct governor *g, enum pressure_level level, uint64_t now_us)
{
    enum pressure_level old = g->level;
    unsigned actions = 0;

    g->level = level;
    if (level != PRESSURE_LEVEL_LOW)
        g->success_run = 0;
    if (level > old) {
        actions |= GOVERNOR_ACTION_LEVEL_RAISED;
        if (level >= PRESSURE_LEVEL_HIGH) {
            actions |= GOVERNOR_ACTION_CHECKPOINT;
            scale_size(g, level_factor(g, level));
        }
    }
    if (level == PRESSURE_LEVEL_CRITICAL) {
        if (old != PRESSURE_LEVEL_CRITICAL) {
            actions |= GOVERNOR_ACTION_PAUSE_FEED | GOVERNOR_ACTION_FLUSH |
                       GOVERNOR_ACTION_SHED_CACHES | GOVERNOR_ACTION_MALLOC_TRIM;
            g->feed_paused = true;
            g->last_trim_us = now_us;
        } else if (now_us - g->last_trim_us >= g->p.trim_interval_us) {
            /* Still critical: what the flush freed can be returned now. */
            actions |= GOVERNOR_ACTION_SHED_CACHES | GOVERNOR_ACTION_MALLOC_TRIM;
            g->last_trim_us = now_us;
        }
    } else if (old == PRESSURE_LEVEL_CRITICAL) {
        actions |= GOVERNOR_ACTION_RESUME_FEED;
        g->feed_paused = false;
    }
    return actions;
}

/* Is this sample calm enough to end a trigger's hold?  See governor.h. */
static bool psi_sample_calm(const struct governor *g, const struct pressure_reading *r)
{
    const struct pressure_reading *prev = &g->last;
    uint64_t dt, stall;

    if (r->timestamp_us < g->psi_event_us || r->timestamp_us - g->psi_event_us < g->p.psi_hold_us)
        return false;
    if (!r->psi.valid || !g->have_reading || !prev->psi.valid)
        return true;
    if (r->timestamp_us <= prev->timestamp_us || r->psi.some_total_us < prev->psi.some_total_us)
        return true; /* clock or counter reset: no evidence of a stall */
    dt = r->timestamp_us - prev->timestamp_us;
    stall = r->psi.some_total_us - prev->psi.some_total_us;
    return (double)stall * 100.0 < g->p.psi_calm_pct * (double)dt;
}

void governor_job_begin(struct governor *g)
{
    g->oom_ceiling = g->p.batch_max;
    g->oom_run = 0;
}

unsigned governor_feed(struct governor *g, const struct pressure_reading *r)
{
    enum pressure_level level = pressure_level_from_usage(r->usage, r->limit);

    g->memory_level = level;
    if (r->psi.valid && r->psi.some_avg10 >= g->p.psi_raise_avg10 &&
        level < PRESSURE_LEVEL_CRITICAL)
        level++;
    if (g->psi_hot && psi_sample_calm(g, r))
        g->psi_hot = false;
    if (g->psi_hot && level < PRESSURE_LEVEL_HIGH)
        level = PRESSURE_LEVEL_HIGH;

    g->last = *r;
    g->have_reading = true;
    g->samples++;
    return governor_set_level(g, level, r->timestamp_us);
}

unsigned governor_psi_event(struct governor *g, uint64_t now_us)
{
    g->psi_hot = true;
    g->psi_event_us = now_us;
    return governor_set_level(g, MAX(g->level, PRESSURE_LEVEL_HIGH), now_us);
}

unsigned governor_batch_done(struct governor *g, unsigned n_chunks)
{
    g->oom_run = 0;

    switch (g->level) {
    case PRESSURE_LEVEL_LOW:
        if (++g->success_run >= g->p.grow_after) {
            scale_size(g, g->p.grow_factor);
            g->success_run = 0;
        }
        break;
    case PRESSURE_LEVEL_MODERATE:
        g->success_run = 0;
        break;
    case PRESSURE_LEVEL_HIGH:
    case PRESSURE_LEVEL_CRITICAL:
        g->success_run = 0;
        /* A batch larger than the size now was formed before the last shrink. */
        if (n_chunks <= g->batch_size)
            scale_size(g, level_factor(g, g->level));
        break;
    }
    return 0;
}

int governor_batch_oom(struct governor *g, unsigned n_chunks, unsigned *ret_actions)
{
    unsigned retry;

    if (n_chunks == 0)
        return -EINVAL;
    g->success_run = 0;
    if (n_chunks <= g->p.batch_min) {
        /* Nothing smaller to try: a few attempts (pressure may pass), then give up. */
        if (++g->oom_run >= g->p.oom_retries_at_min)
            return -ENOMEM;
        retry = n_chunks;
    } else {
        g->oom_run = 0;
        retry = MAX(n_chunks / 2, g->p.batch_min);
        /* floor(n / 1.1) < n for every n >= 1: the ceiling is always below the failure. */
        g->oom_ceiling = MIN(g->oom_ceiling, (unsigned)floor(n_chunks / g->p.grow_factor));
    }
    g->batch_size = MIN(g->batch_size, MAX(retry, g->p.batch_min));
    g->oom_events++;
    if (ret_actions)
        *ret_actions = GOVERNOR_ACTION_SHED_CACHES | GOVERNOR_ACTION_MALLOC_TRIM;
    return (int)retry;
}

void governor_set_token_cost(struct governor *g, uint64_t bytes_per_token, unsigned max_seq_tokens)
{
    g->bytes_per_token = bytes_per_token;
    g->max_seq_tokens = max_seq_tokens ? max_seq_tokens : 1;
}

unsigned governor_batch_size(const struct governor *g)
{
    return g->batch_size;
}

uint64_t governor_batch_tokens_max(const struct governor *g)
{
    uint64_t cap, crit, headroom, tokens;

    if (!g->p.adaptive || g->bytes_per_token == 0)
        return UINT64_MAX;
    cap = (uint64_t)g->p.batch_max * g->max_seq_tokens;
    if (!g->have_reading)
        return cap;
    crit = (uint64_t)((unsigned __int128)g->last.limit * 90 / 100);
    headroom = crit > g->last.usage ? crit - g->last.usage : 0;
    tokens = headroom / 2 / g->bytes_per_token;
    return CLAMP(tokens, (uint64_t)g->max_seq_tokens, cap);
}

enum pressure_level governor_level(const struct governor *g)
{
    return g->level;
}

bool governor_feed_paused(const struct governor *g)
{
    return g->feed_paused;
}

void governor_note_checkpoint(struct governor *g)
{
    g->checkpoints++;
}

void governor_snapshot(const struct governor *g, struct pressure_snapshot *ret)
{
    const struct pressure_reading *r = &g->last;

    *ret = (struct pressure_snapshot){
        .usage = r->usage,
        .limit = r->limit,
        .limit_source = r->limit_source,
        .usage_from_cgroup = r->usage_from_cgroup,
        .level = g->level,
        .memory_level = g->memory_level,
        .level_name = pressure_level_to_string(g->level),
        .batch_size = g->batch_size,
        .batch_tokens_max = governor_batch_tokens_max(g),
        .adaptive = g->p.adaptive,
        .feed_paused = g->feed_paused,
        .psi_valid = r->psi.valid,
        .psi_some_avg10 = r->psi.some_avg10,
        .psi_full_avg10 = r->psi.full_avg10,
        .gpu_valid = r->gpu.valid,
        .gpu_free = r->gpu.free,
        .gpu_total = r->gpu.total,
        .gpu_allocated = r->gpu.allocated,
        .gpu_reserved = r->gpu.reserved,
        .rss = r->rss,
        .vms = r->vms,
        .cgroup_usage = r->cgroup_usage,
        .cgroup_limit = r->cgroup_limit,
        .checkpoints_written = g->checkpoints,
        .oom_events = g->oom_events,
        .samples = g->samples,
    };
}
