/*
 * pressure-config.h - the memory governor's environment settings, parsed and validated once.
 *
 *   COARCH_MEMORY_LIMIT_MB       memory limit in MiB, 1..67108864 (64 TiB); unset: no extra
 *                                limit beyond the cgroup and physical RAM.
 *   COARCH_PRESSURE_INTERVAL_MS  sampling period of the event loop's timer, 10..60000, default
 *                                200.
 *   COARCH_ADAPTIVE_BATCHING     1|true (default) or 0|false (true/false in any case); off
 *                                fixes the batch size at COARCH_BATCH_SIZE.
 *   COARCH_BATCH_SIZE            starting (or, fixed mode, the) batch size in chunks, 8..256,
 *                                default 64.
 *   COARCH_CHECKPOINT_FREQUENCY  batches between checkpoints, 1..1000000; unset: 5, or 3 for a
 *                                job with more than 10,000 chunks (pressure_checkpoint_frequency).
 *
 * Numbers are plain decimal digits: no sign, no suffix, no surrounding blanks, so a typo never
 * silently becomes a different value.  A variable set to the empty string counts as unset (the
 * shell idiom `VAR= coarchd` for "use the default").  Any other bad value is an error whose
 * message names the variable, quotes the value and states what is accepted; coarchd refuses to
 * start with it rather than run with a guess.
 *
 * Pure functions, no global state: safe from any thread.
 */
#ifndef COARCH_PRESSURE_CONFIG_H
#define COARCH_PRESSURE_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PRESSURE_INTERVAL_MS_DEFAULT 200u
#define PRESSURE_INTERVAL_MS_MIN 10u
#define PRESSURE_INTERVAL_MS_MAX 60000u
#define PRESSURE_BATCH_MIN 8u
#define PRESSURE_BATCH_MAX 256u
#define PRESSURE_BATCH_DEFAULT 64u
#define PRESSURE_CHECKPOINT_FREQUENCY_DEFAULT 5u
#define PRESSURE_CHECKPOINT_FREQUENCY_LARGE_JOB 3u
#define PRESSURE_CHECKPOINT_LARGE_JOB_CHUNKS 10000u
#define PRESSURE_CHECKPOINT_FREQUENCY_MAX 1000000u
#define PRESSURE_MEMORY_LIMIT_MB_MAX (UINT64_C(1) << 26)

struct pressure_config {
    uint64_t memory_limit_bytes;   /* 0: COARCH_MEMORY_LIMIT_MB not set */
    unsigned interval_ms;          /* timer period for pressure sampling */
    bool adaptive_batching;        /* false: batch size fixed at batch_size */
    unsigned batch_size;           /* start size, in [PRESSURE_BATCH_MIN, PRESSURE_BATCH_MAX] */
    unsigned checkpoint_frequency; /* 0: not set, use the job-size policy */
};

/* Looks up one variable; returns NULL when unset.  `userdata` is passed through. */
typedef const char *(*pressure_getenv_fn)(const char *name, void *userdata);

/* A pressure_getenv_fn over the process environment (getenv(3)); userdata is ignored. */
const char *pressure_config_getenv(const char *name, void *userdata);

/* The defaults, as if no variable were set. */
void pressure_config_init(struct pressure_config *cfg);

/*
 * Reads every variable above through `getenv_fn` and validates it.  Returns 0 and fills
 * *ret_cfg, or -EINVAL with a one-line message in errbuf (when errbuf_size > 0) such as
 * `COARCH_BATCH_SIZE="300": expected an integer in [8, 256]`; *ret_cfg is untouched on error.
 */
int pressure_config_parse(pressure_getenv_fn getenv_fn, void *userdata,
                          struct pressure_config *ret_cfg, char *errbuf, size_t errbuf_size);

/*
 * Batches between checkpoints for a job of `job_chunks` chunks: the configured value when set,
 * else 3 for jobs over 10,000 chunks (a crash there costs more, and the per-checkpoint cost is
 * amortised over a long job anyway) and 5 otherwise.  Always >= 1.
 */
unsigned pressure_checkpoint_frequency(const struct pressure_config *cfg, uint64_t job_chunks);

#endif
