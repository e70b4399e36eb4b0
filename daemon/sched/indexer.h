/*
 * indexer.h - one indexing job, run start to finish on the calling (worker) thread:
 * scan -> hash -> chunk -> embed -> store, incremental and crash-safe.
 *
 * DESIGN
 *
 * Two phases.  Phase 1 walks the repository (scan.h) and hashes every file (SHA-256); a file
 * whose hash equals its stored row costs nothing more.  The walk yields the list of changed and
 * new files (paths and sizes only, so memory is O(files), not O(bytes)) and the set of paths
 * seen, from which files that vanished (deleted, renamed, newly ignored, now binary or too
 * large) are deleted from the store.  Totals for progress and ETA come from this phase.
 *
 * Phase 2 re-reads each changed file, chunks it, and queues its chunks.  Batches are cut from
 * the queue at the memory governor's size and token budget and embedded; a batch that fails
 * with -ENOMEM is re-run in smaller pieces (governor_batch_oom()), so no chunk is ever dropped.
 * Chunks are written in queue order as their vectors arrive: the chunk rows, vectors and
 * lexical postings of the file at the head of the queue go into the open write transaction,
 * and when the last one is in, the file row, which replaces (and deletes) the chunks of the
 * file's previous version.  Only the head file is ever part written.
 *
 * Checkpoints.  The write transaction is committed, together with the job row (progress and
 * cursor), every `checkpoint_every` batches, when the governor asks (rise to HIGH/CRITICAL),
 * when it reaches its write budget (below), and at the end.  A commit that falls inside a file
 * also stages the file (store_chunk_stage(), store-chunk.h): its chunks stay out of searches,
 * which keep seeing its previous version, until its file row goes in.  So kill -9 at any
 * instant leaves the store at the last checkpoint: files written before it are complete and
 * carry their new hash, files after it are untouched, and at most one file is staged.
 * Resuming is running the job again: it drops the staged chunks (their ids go back to the
 * allocator, so the resumed job numbers chunks as an uninterrupted one would), and phase 1
 * finds the checkpointed files unchanged and skips them.  Nothing is lost, nothing
 * duplicated, and no vector exists without its chunk row.  A cancelled or failed job drops
 * its part written file in its last commit.
 *
 * Memory is bounded by the batch size, the head file's content and chunk list (the scanner's
 * file size limit), the vectors embedded but not yet written (a batch's worth), the file list,
 * the governor's token budget and the size of a write transaction; never by the repository's
 * bytes.  The last needs its own bound: LMDB copies each page a write touches into a malloc'd
 * dirty page until commit, and keeps those pages for later transactions, so the largest
 * transaction of the job sets the daemon's footprint for good.  Writing a chunk's lexical
 * postings touches one B-tree leaf per distinct term, scattered over a postings table that
 * grows with the repository, so a checkpoint of a fixed number of batches dirtied more pages
 * the bigger the index already was: 20 MiB more anonymous memory at the end of a 100k-line
 * job than at its start (bench/memory, 2026-11-25).  So the transaction is also committed
 * whenever it has done INDEXER_TXN_MAX_OPS store writes (store_write_ops()), between two
 * chunks of one file if need be.  Before files were split that way, an 850 KB header made one
 * transaction of its own (~25 MiB at its commit: 107.5 MiB peak for that file alone against
 * a steady 99, 2026-12-07); now no transaction is bigger than the budget.
 * store_release_memory() still gives LMDB's kept pages back when the governor asks for memory
 * (CRITICAL).
 *
 * Threading: indexer_run() runs on one worker thread, which is then the store's only writer.
 * The governor is shared with the loop thread under env->gov_lock.
 */
#ifndef COARCH_SCHED_INDEXER_H
#define COARCH_SCHED_INDEXER_H

#include "chunk.h"
#include "governor.h"
#include "scan.h"
#include "store.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

/* Job states in the store's jobs table. */
enum job_state {
    JOB_STATE_QUEUED = 0,
    JOB_STATE_RUNNING = 1,
    JOB_STATE_DONE = 2,
    JOB_STATE_FAILED = 3,
    JOB_STATE_CANCELLED = 4,
};
const char *job_state_to_string(uint32_t state);

/* The embedding model as the indexer sees it. */
struct indexer_embed {
    void *ctx;
    const char *model_id; /* stored with the index; a different model re-embeds everything */
    uint32_t dim;
    uint32_t max_tokens; /* model max sequence length, special tokens included */
    chunk_count_tokens_fn count_tokens;
    void *count_ctx;
    uint64_t bytes_per_token; /* transient memory per token of a batch, for the governor */
    /* Embed n texts into out[n * dim].  0, or -ENOMEM (retried smaller), or another error. */
    int (*embed)(void *ctx, const char *const *texts, const size_t *lens, size_t n, float *out);
};

/* Governor actions the loop thread forwards to a running job (atomic bit mailbox). */
struct indexer_env {
    struct store *store;
    const struct indexer_embed *embed;
    struct governor *gov;      /* may be NULL: fixed batches of 64 */
    pthread_mutex_t *gov_lock; /* guards gov; required when gov is set */
    atomic_uint *actions;      /* may be NULL; enum governor_action bits from the loop */
    struct scan_options scan;
    struct chunk_options chunk; /* count_tokens/max_tokens are set from embed */
    unsigned checkpoint_every;  /* batches; 0: pressure_checkpoint_frequency() policy */
    uint64_t txn_max_ops;       /* store writes per commit; 0: INDEXER_TXN_MAX_OPS */
    /* Called after every commit that changed `repo` (search caches rebuild). May be NULL. */
    void (*committed)(void *userdata, uint32_t repo);
    void *userdata;
};

struct indexer_progress {
    const char *phase;                /* "scanning", "embedding", "finishing", "done" */
    uint64_t files_total, files_done; /* files to (re)index in phase 2 */
    uint64_t files_scanned, files_unchanged, files_deleted;
    uint64_t bytes_total, bytes_done;
    uint64_t chunks_total; /* estimate until every file is chunked */
    uint64_t chunks_done;
    uint64_t chunks_reused; /* of chunks_done: unchanged text, vector kept, not embedded */
    uint64_t tokens_done;
    uint64_t checkpoints;
    unsigned batch_size;
    double elapsed_s, chunks_per_s, eta_s;    /* eta_s < 0: unknown */
    double scan_s, chunk_s, embed_s, store_s; /* time per stage */
};

typedef void (*indexer_progress_fn)(void *userdata, const struct indexer_progress *p);

struct indexer_job {
    uint64_t id;      /* its row in the jobs table (created by the caller) */
    uint32_t repo_id; /* store_repo_get_or_create() of root */
    const char *root; /* absolute, realpath()ed */
    const atomic_bool *cancel;
    indexer_progress_fn progress;
    void *progress_userdata;
};

/* A file that could not be indexed (reported in the job result, never fatal). */
struct indexer_file_error {
    char *path;
    int error;
};

struct indexer_result {
    struct indexer_progress progress;
    struct scan_report scan;
    struct indexer_file_error *errors; /* up to INDEXER_MAX_REPORTED_ERRORS */
    size_t n_errors;
    uint64_t errors_total; /* files that could not be indexed, reported or not */
    char message[256];     /* a sentence when indexer_run() failed */
};

#define INDEXER_MAX_REPORTED_ERRORS 100

/* Store writes (store_write_ops()) after which the open transaction is committed, whatever
 * the batch count, inside a file too: see "Memory" above.  A write dirties one or two pages
 * the transaction did not already hold (a leaf, and a duplicate subtree's leaf for postings),
 * so this bounds its dirty pages (2-4 MiB), which are held twice at its commit: LMDB's
 * malloc'd copies and the page cache being written.  LMDB keeps the malloc'd pages of its
 * largest transaction for reuse until the environment closes, so the bound is paid for the
 * daemon's life, and it grows with the index (more distinct pages per write): with 1,024 the
 * peak of a 1M-line job was 2.4 MiB above that of 512 (bench/README.md, "Segments, exact
 * chunk buffers, a smaller write budget"), for twice the commits, which cost nothing next to
 * embedding (+3-7% of the CPU time of a job run with a model 100 times cheaper than the real
 * one). */
#ifndef INDEXER_TXN_MAX_OPS /* overridable to measure without the bound (bench/README.md) */
#define INDEXER_TXN_MAX_OPS 512
#endif

void indexer_result_release(struct indexer_result *r);

/*
 * Run the job.  Returns 0 (done), -ECANCELED (cancelled: work up to the cancel is committed),
 * or a negative errno with ret->message explaining it (committed checkpoints stay).  The job
 * row's state is updated in every case.  *ret is filled in every case; release it.
 */
int indexer_run(const struct indexer_env *env, const struct indexer_job *job,
                struct indexer_result *ret);

#endif
