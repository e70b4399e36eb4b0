/*
 * engine.h - coarchd's indexing and search service: the store, the embedding model, the memory
 * governor, the job queue with its worker thread, the search cache, and the RPC methods over
 * them (index, jobs, job.cancel, search, repos, repo.remove, embed).
 *
 * DESIGN
 *
 * Threads.  The loop thread answers RPCs and samples memory pressure on a timer.  One job
 * worker thread runs indexing jobs one at a time (indexer.h) and is the store's only writer
 * besides repo.remove, which takes the store's write lock from the libuv pool.  Searches and
 * `embed` run on the libuv pool.  The embedding model is shared by the job worker and searches
 * under emb_lock: a search waits at most for the batch in flight.
 *
 * Jobs.  `index` creates a job row (state queued) and queues it; a second `index` of a
 * repository that already has a queued or running job returns that job.  Job rows persist, so
 * a daemon killed mid-job finds the row still queued or running at its next start and re-queues
 * it as "resumed": the indexer then skips every file committed before the kill (indexer.h).
 * On a clean stop the running job is interrupted at the next batch, its work committed, and
 * its row left queued so the next start resumes it.
 *
 * Memory.  The governor (pressure/) is fed on the loop thread every COARCH_PRESSURE_INTERVAL_MS
 * and read by the worker under gov_lock; actions meant for a running job go through an atomic
 * mailbox.  CRITICAL also drops the search cache and trims the heap.
 *
 * Threading: engine_* functions are loop thread only.
 */
#ifndef COARCH_DAEMON_ENGINE_H
#define COARCH_DAEMON_ENGINE_H

struct daemon;
struct engine;

/*
 * Open the store in data_dir, read the memory configuration from the environment, register
 * the methods, status keys and stop hook, and start the job worker (which resumes interrupted
 * jobs).  The model loads lazily, on the first job or search.  Returns 0 or a negative errno
 * (logged, with the reason).
 */
int engine_new(struct daemon *d, const char *data_dir, struct engine **ret);
/* After daemon_run() returned.  Accepts NULL; returns NULL. */
struct engine *engine_free(struct engine *e);

#endif
