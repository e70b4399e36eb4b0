/*
 * store-job.h - the jobs table: indexing jobs with their state and checkpoint cursor, so that a
 * daemon killed mid-job resumes from its last checkpoint.
 *
 * The store does not interpret `state` (sched/ owns the values) nor `cursor` (an opaque blob in
 * the indexer's format).  The indexer writes the job row in the same transaction as the
 * checkpoint's chunks and vectors, which is what makes "resume from the cursor" exact.
 *
 * Threading and pointers: as store.h says.
 */
#ifndef COARCH_STORE_JOB_H
#define COARCH_STORE_JOB_H

#include "store.h"

#include <stddef.h>
#include <stdint.h>

#define STORE_MAX_CURSOR 65536

struct store_job {
    uint64_t id;
    uint32_t repo_id; /* 0 = none; otherwise the repo must exist */
    uint32_t state;   /* sched/'s enum */
    int32_t error;    /* negative errno of a failed job, else 0 */
    int64_t created_ns, updated_ns;
    uint64_t files_done, files_total;
    uint64_t chunks_done, chunks_total;
    const void *cursor; /* borrowed; cursor_len bytes (0..STORE_MAX_CURSOR) */
    size_t cursor_len;
};

/* A fresh job id (ids are never reused). */
int store_job_id_alloc(struct store_txn *t, uint64_t *ret_id);
/* Insert or replace the row of j->id (!= 0).  -ENOENT if j->repo_id names no repository. */
int store_job_put(struct store_txn *t, const struct store_job *j);
/* The row of `id`, or -ENOENT. */
int store_job_get(struct store_txn *t, uint64_t id, struct store_job *ret);
/* -ENOENT if absent. */
int store_job_delete(struct store_txn *t, uint64_t id);

/* Return 0 to go on, anything else stops the walk and is returned; must not write through t. */
typedef int (*store_job_fn)(void *userdata, const struct store_job *job);
/* All jobs in id order. */
int store_job_foreach(struct store_txn *t, store_job_fn fn, void *userdata);

#endif
