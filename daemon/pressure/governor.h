/*
 * governor.h - the memory governor: pressure level, adaptive batch size and the actions the
 * scheduler takes under pressure.  A pure state machine: it reads no files and owns no handles;
 * readings come from pressure.h and events from the loop and the scheduler.
 *
 * Driving it (daemon/event/ owns the handles, daemon/sched/ executes the actions):
 *   - uv_timer every pressure_config.interval_ms: pressure_source_sample() then
 *     governor_feed(g, &reading);
 *   - uv_poll(UV_PRIORITIZED) on pressure_psi_open_trigger()'s fd: governor_psi_event();
 *   - each batch the embedder finishes: governor_batch_done(g, n_chunks);
 *   - an encode that returned -ENOMEM: governor_batch_oom(g, n_chunks, &actions) gives the size
 *     to re-run the same chunks with (split them into batches of at most that size), or
 *     -ENOMEM when even the minimum size failed repeatedly: fail the job with a clear message,
 *     never drop the chunks silently and never loop forever;
 *   - a committed checkpoint: governor_note_checkpoint();
 *   - a new indexing job: governor_job_begin().
 * Every call returning `unsigned` returns a bitmask of enum governor_action for the scheduler.
 * Actions are edges (sent once per change); governor_feed_paused() is the current state.
 *
 * Levels, by usage/limit: LOW < 60% <= MODERATE < 75% <= HIGH < 90% <= CRITICAL.  PSI raises
 * them early:
 *   - a sample with "some" avg10 >= psi_raise_avg10 (10%) raises the level by one step;
 *   - a PSI trigger event raises it to at least HIGH; the raise holds until a calm sample taken
 *     at least psi_hold_us (2 s, the trigger window) after the last event, calm meaning that
 *     the "some" stall time accumulated since the previous sample is below psi_calm_pct (5%) of
 *     the wall time between them (with no PSI data, the hold time alone).
 *
 * Batch size (chunks), in [batch_min, batch_max] = [8, 256], starting at batch_start (64):
 *   - a completed batch at LOW counts a success; after grow_after (3) in a row the size grows
 *     x1.1 (at least +1); MODERATE holds and resets the run; a completed batch at HIGH shrinks
 *     it x0.75 and at CRITICAL x0.5;
 *   - a rise to HIGH or CRITICAL applies that factor at once, so the next batch is already
 *     smaller; a completed batch larger than the current size was formed before that shrink,
 *     which accounted for it, so it does not shrink the size again;
 *   - an OOM halves it (the failed batch's size / 2, not below batch_min) and sets a growth
 *     ceiling one growth step (10%) below the failed size, so growth does not walk back into
 *     the same OOM every few batches.  The ceiling lasts until governor_job_begin(): an OOM is
 *     usually deterministic for a given model, device and memory fraction, and a per-job reset
 *     lets a transient one (another process's spike) cost at most one job's throughput.
 * Token budget: with the embedder's per-token memory cost c (bytes) and its maximum sequence
 * length L, batch_tokens_max = max(L, (0.9 * limit - usage) / 2 / c), capped at batch_max * L.
 * It keeps a batch's transient memory within half the headroom below CRITICAL (the other half
 * absorbs estimate error, fragmentation and the batch's outputs); one full chunk always fits,
 * so a batch may hold fewer than batch_min chunks when the budget is tight.  The scheduler
 * fills a batch until either governor_batch_size() chunks or governor_batch_tokens_max() tokens.
 * Fixed mode (COARCH_ADAPTIVE_BATCHING=0): levels, PSI and actions work as above but the size
 * and the token budget do not follow them; only an OOM reduces the size, because a size that
 * does not fit cannot be honoured without failing the job.
 *
 * Threading: loop thread only, no locks.  Workers report batch results through the loop.
 */
#ifndef COARCH_GOVERNOR_H
#define COARCH_GOVERNOR_H

#include <stdbool.h>
#include <stdint.h>

#include "pressure-config.h"
#include "pressure.h"

enum pressure_level {
    PRESSURE_LEVEL_LOW,
    PRESSURE_LEVEL_MODERATE,
    PRESSURE_LEVEL_HIGH,
    PRESSURE_LEVEL_CRITICAL,
};

enum governor_action {
    GOVERNOR_ACTION_LEVEL_RAISED = 1u << 0, /* the level went up: log a warning */
    GOVERNOR_ACTION_CHECKPOINT = 1u << 1,   /* commit a checkpoint now (rise to >= HIGH) */
    GOVERNOR_ACTION_PAUSE_FEED = 1u << 2,   /* CRITICAL: form no new batches; in-flight finish */
    GOVERNOR_ACTION_RESUME_FEED = 1u << 3,  /* left CRITICAL: form batches again */
    GOVERNOR_ACTION_FLUSH = 1u << 4,        /* write all buffered results to the store, free them */
    GOVERNOR_ACTION_SHED_CACHES = 1u << 5,  /* drop caches (tokens, file buffers, backend pools) */
    GOVERNOR_ACTION_MALLOC_TRIM = 1u << 6,  /* pressure_malloc_trim(), on a worker */
};

struct governor_params {
    bool adaptive;
    unsigned batch_start, batch_min, batch_max;
    unsigned grow_after;                              /* successes at LOW before growing */
    double grow_factor, high_factor, critical_factor; /* 1.1, 0.75, 0.5 */
    double psi_raise_avg10;                           /* percent */
    double psi_calm_pct;                              /* percent */
    uint64_t psi_hold_us;
    unsigned oom_retries_at_min; /* OOMs in a row at the minimum before giving up (3) */
    uint64_t trim_interval_us;   /* repeat SHED_CACHES|MALLOC_TRIM while CRITICAL (1 s) */
};

/* What status and progress events serialise. */
struct pressure_snapshot {
    uint64_t usage, limit;
    enum pressure_limit_source limit_source;
    bool usage_from_cgroup;
    enum pressure_level level;        /* with PSI raises */
    enum pressure_level memory_level; /* from usage/limit alone */
    const char *level_name;           /* static string: "low", "moderate", "high", "critical" */
    unsigned batch_size;
    uint64_t batch_tokens_max; /* UINT64_MAX: no token cap */
    bool adaptive, feed_paused;
    bool psi_valid;
    double psi_some_avg10, psi_full_avg10;
    bool gpu_valid;
    uint64_t gpu_free, gpu_total, gpu_allocated, gpu_reserved;
    uint64_t rss, vms, cgroup_usage, cgroup_limit;
    uint64_t checkpoints_written;
    uint64_t oom_events; /* OOMs absorbed by retrying */
    uint64_t samples;
};

struct governor;

const char *pressure_level_to_string(enum pressure_level level);
/* The level of usage/limit alone (limit 0 reads as CRITICAL).  Exact integer arithmetic. */
enum pressure_level pressure_level_from_usage(uint64_t usage, uint64_t limit);

/* The defaults above, with adaptive and batch_start from cfg when cfg is not NULL. */
void governor_params_init(struct governor_params *p, const struct pressure_config *cfg);

/* Returns 0, -EINVAL for inconsistent params, or -ENOMEM.  Free with governor_free(). */
int governor_new(const struct governor_params *p, struct governor **ret_g);
struct governor *governor_free(struct governor *g);

/* Forgets the OOM ceiling and OOM run of the previous job; the batch size carries over. */
void governor_job_begin(struct governor *g);

unsigned governor_feed(struct governor *g, const struct pressure_reading *r);
unsigned governor_psi_event(struct governor *g, uint64_t now_us);
unsigned governor_batch_done(struct governor *g, unsigned n_chunks);
/* Returns the retry size (> 0), -ENOMEM to give up, -EINVAL for n_chunks == 0. */
int governor_batch_oom(struct governor *g, unsigned n_chunks, unsigned *ret_actions);

/*
 * The embedder's estimate of the transient memory one token of a batch costs (activations,
 * attention scores; bytes) and its maximum sequence length.  bytes_per_token = 0 removes the
 * token cap.
 */
void governor_set_token_cost(struct governor *g, uint64_t bytes_per_token, unsigned max_seq_tokens);

unsigned governor_batch_size(const struct governor *g);
uint64_t governor_batch_tokens_max(const struct governor *g);
enum pressure_level governor_level(const struct governor *g);
bool governor_feed_paused(const struct governor *g);
void governor_note_checkpoint(struct governor *g);
void governor_snapshot(const struct governor *g, struct pressure_snapshot *ret);

#endif
