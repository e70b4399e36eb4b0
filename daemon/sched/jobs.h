/*
 * jobs.h - the indexing job queue: one worker thread that runs jobs one at a time, the jobs'
 * in-memory records, and resuming the jobs a killed or stopped daemon left behind.
 *
 * DESIGN
 *
 * A job is one run of indexer_run() over one repository.  jobs_submit() registers the
 * repository, creates the job's row (state queued) and queues it; a second submit for a
 * repository that already has a queued or running job returns that job.  Registrations are
 * serialised by a lock of their own, which jobs_remove_repo() also takes, so a repository is
 * never removed between its job's registration and its queueing.
 *
 * Rows persist, so a daemon killed mid-job finds the row still queued or running at its next
 * start: jobs_start() re-queues it as "resumed", and the indexer skips every file committed
 * before the kill (indexer.h).  jobs_stop() interrupts the running job at its next batch; its
 * work is committed and its row left queued, so the next start resumes it.  Finished rows are
 * pruned to the newest JOBS_ROWS_KEEP when a job is created.
 *
 * The worker holds no lock while a job runs.  It loads the model through the embed service
 * before the job starts (a model that cannot load fails the job with that message), reads the
 * governor through the pressure monitor's link, and invalidates the search cache after every
 * commit.  Progress snapshots and the job's end are posted to the loop thread (event_post()),
 * where the record is updated and the hooks run.
 *
 * Records.  struct job is owned by this module: queued and running jobs live in the queue, and
 * the last JOBS_RECENT ended ones in a ring (older ones are freed).  Other modules read the
 * public fields on the loop thread, where they change, and must not keep a pointer past the
 * callback or method that found it (a record may be freed when it leaves the ring).
 *
 * Threading: loop thread, except jobs_submit() and jobs_remove_repo() (a pool thread: they take
 * the store's write lock, which the worker may hold for a whole checkpoint interval) and
 * jobs_summary() (any thread).
 */
#ifndef COARCH_SCHED_JOBS_H
#define COARCH_SCHED_JOBS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "indexer.h"

struct embed_service;
struct event_loop;
struct jobs;
struct pressure_monitor;
struct search_cache;
struct store;

#define JOBS_RECENT 64     /* ended jobs kept in memory (`jobs`, `job.cancel` find them) */
#define JOBS_ROWS_KEEP 100 /* ended job rows kept in the store */

/* What a job passed over, by reason (the counts are whole; the list holds the first few of
 * each kind: SCAN_MAX_REPORTED_SKIPS, SCAN_MAX_REPORTED_ERRORS, INDEXER_MAX_REPORTED_ERRORS). */
struct job_skipped {
    uint64_t too_large, binary, vendored, symlinks, special; /* the walk's skips */
    uint64_t unreadable;                                     /* the walk could not read them */
    uint64_t failed; /* read, but chunking, embedding or storing them failed */
};

struct job_skipped_file {
    char *path;
    const char *reason; /* static: "too_large", ..., "unreadable", "failed" */
    int error;          /* negative errno for unreadable and failed, else 0 */
};

struct job {
    /* Read-only outside jobs.c, on the loop thread. */
    uint64_t id;
    uint32_t repo;
    char *root; /* the repository's canonical path */
    bool resumed;
    uint32_t state; /* JOB_STATE_* */
    int error;      /* negative errno of a failed or cancelled job */
    char message[256];
    struct indexer_progress progress;
    uint64_t scan_errors, file_errors;
    struct job_skipped skipped; /* set when the job ends */
    struct job_skipped_file *skipped_files;
    size_t n_skipped_files;

    /* jobs.c's own. */
    atomic_bool cancel;      /* stop at the next batch (the indexer's flag) */
    atomic_bool interrupted; /* ...because the daemon stops: resume at the next start */
    double last_notify;      /* when hooks.progress last ran for it (monotonic s) */
    void **waiters;          /* jobs_wait() tokens, handed to hooks.ended at the end */
    size_t n_waiters;
    struct job *next; /* queue link, guarded by the queue lock */
};

struct jobs_hooks {
    /* A job's progress changed (at most every JOBS_PROGRESS_INTERVAL_S) or it was queued or
     * ended (always).  Loop thread. */
    void (*progress)(void *userdata, struct job *j);
    /* A job ended, once per jobs_wait() token, after the last progress call.  Loop thread. */
    void (*ended)(void *userdata, struct job *j, void *waiter);
    /* The worker thread has exited after jobs_stop(); nothing of the queue runs any more.
     * Loop thread. */
    void (*worker_exited)(void *userdata);
    void *userdata;
};

#define JOBS_PROGRESS_INTERVAL_S 0.2

/* Everything borrowed: it must outlive the jobs object. */
struct jobs_env {
    struct event_loop *el;
    struct store *store;
    struct embed_service *model;
    struct pressure_monitor *pressure;
    struct search_cache *cache; /* invalidated per repository after every commit */
    struct jobs_hooks hooks;
};

/* Reads COARCH_MAX_FILE_SIZE_KB (files over it are skipped; default 1024).  Returns 0,
 * -EINVAL for a bad value (logged), or -ENOMEM.  Nothing runs until jobs_start(). */
int jobs_new(const struct jobs_env *env, struct jobs **ret);
/*
 * Re-queues interrupted jobs (a failure to read them is logged, not fatal) and starts the
 * worker.  Returns 0 or a negative errno (the thread could not start).  After a 0 return the
 * worker runs until jobs_stop(), and hooks.worker_exited fires exactly once.
 */
int jobs_start(struct jobs *q);
/* The stop sequence: the running job is interrupted (it resumes at the next start), queued
 * jobs stay queued, the worker exits.  Idempotent. */
void jobs_stop(struct jobs *q);
/* Stops and joins the worker if jobs_stop() did not; frees every record.  Accepts NULL. */
struct jobs *jobs_free(struct jobs *q);

/*
 * Pool thread: registers the repository at `root` (canonical, absolute) and returns its queued
 * or running job, creating and queueing one when it has none (*ret_created).  Returns 0, or a
 * negative errno with a sentence in msg.  The job is the loop thread's to read once this
 * returns; announce a created one with jobs_announce().
 */
int jobs_submit(struct jobs *q, const char *root, struct job **ret_job, bool *ret_created,
                char *msg, size_t msglen);
/* Runs hooks.progress for j now, whatever the interval. */
void jobs_announce(struct jobs *q, struct job *j);
/* Hands `waiter` to hooks.ended when j ends.  j must not have ended.  0 or -ENOMEM. */
int jobs_wait(struct jobs *q, struct job *j, void *waiter);
/* Stops j: a queued job ends cancelled at once, a running one at its next batch.  j must be
 * queued or running.  Returns 0 or -ENOMEM (nothing changed). */
int jobs_cancel(struct jobs *q, struct job *j);

bool job_ended(const struct job *j);
/* The queued or running job of `repo`, NULL if none.  Any thread; on the loop thread the
 * record may be read until the callback returns. */
struct job *jobs_active_of(struct jobs *q, uint32_t repo);
/* The job with this id: queued, running or among the recent ended ones; NULL if none. */
struct job *jobs_find(struct jobs *q, uint64_t id);
/* The recent ended jobs (oldest first), the running one, then the queued ones, in a new array
 * of borrowed records (caller frees the array).  Jobs that do not fit in memory are left out. */
void jobs_list(struct jobs *q, struct job ***ret, size_t *ret_n);
/* How many jobs wait, and the running job's id (0: none).  Any thread. */
void jobs_summary(struct jobs *q, unsigned *ret_queued, uint64_t *ret_running);

/*
 * Pool thread: cancels the job of the repository at `path` (if any) and removes the repository
 * from the store, under the registration lock.  Returns 0 and its id, -ENOENT when it is not
 * indexed, or another negative errno (store_last_error() says more).
 */
int jobs_remove_repo(struct jobs *q, const char *path, uint32_t *ret_repo);

#endif
