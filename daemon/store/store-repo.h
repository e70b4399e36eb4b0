/*
 * store-repo.h - the repos and files tables: which repositories are indexed, and for each the
 * files with the content hash, mtime, size and chunk id range recorded when they were indexed.
 *
 * A repository is named by its absolute, already normalised path (the caller realpath()s it);
 * the store only checks that it starts with '/'.  Its row carries the counters that status and
 * BM25 need; the store keeps them exact inside every transaction that changes the tables.
 *
 * A file row's chunk range [first_chunk, first_chunk + n_chunks) comes from
 * store_chunk_ids_alloc() (store-chunk.h).  Re-indexing a changed file is one transaction:
 * allocate ids, put the new chunks, vectors and postings, then store_file_put(), which deletes
 * the chunks of the row's previous range.  Aborting instead leaves the old row and old chunks.
 *
 * Threading and pointers: as store.h says.  Every call takes a transaction; writes need a write
 * transaction (-EROFS otherwise).  Strings in returned structs are borrowed from the map.
 */
#ifndef COARCH_STORE_REPO_H
#define COARCH_STORE_REPO_H

#include "store.h"

#include <stdint.h>

#define STORE_HASH_SIZE 32
#define STORE_MAX_REPO_ID 0xfffffeu       /* repo id + 1 must fit the chunk id's 24 bits */
#define STORE_MAX_REPO_PATH STORE_MAX_KEY /* bytes, without NUL */
#define STORE_MAX_FILE_PATH (STORE_MAX_KEY - 4)

struct store_repo {
    uint32_t id;
    const char *path; /* borrowed, NUL-terminated */
    uint64_t n_files, n_chunks, n_vectors;
    uint64_t n_lex_docs, sum_doc_len; /* BM25: N and the sum of document lengths */
    int64_t created_ns, indexed_ns;
};

/*
 * Find the repository at `path` or create it (write transaction).  Returns 1 and the new id
 * when created, 0 and the existing id otherwise; -EINVAL (not absolute), -ENAMETOOLONG (over
 * STORE_MAX_REPO_PATH), -EOVERFLOW (ids exhausted).
 */
int store_repo_get_or_create(struct store_txn *t, const char *path, uint32_t *ret_id);
/* The id of the repository at `path`, or -ENOENT. */
int store_repo_find(struct store_txn *t, const char *path, uint32_t *ret_id);
/* The row of repository `id`, or -ENOENT. */
int store_repo_get(struct store_txn *t, uint32_t id, struct store_repo *ret);
/* Record when indexing finished (CLOCK_REALTIME ns). */
int store_repo_set_indexed(struct store_txn *t, uint32_t id, int64_t indexed_ns);
/* Remove the repository and every row that belongs to it: files, chunks, vectors, postings,
 * lexical documents and jobs.  -ENOENT if there is no such repository. */
int store_repo_remove(struct store_txn *t, uint32_t id);

/* Callbacks return 0 to go on; any other value stops the walk and is returned.  The walk's
 * pointers are valid during the call only, and the callback must not write through `t`. */
typedef int (*store_repo_fn)(void *userdata, const struct store_repo *repo);
/* All repositories in id order. */
int store_repo_foreach(struct store_txn *t, store_repo_fn fn, void *userdata);

struct store_file {
    const char *path; /* relative, '/'-separated, 1..STORE_MAX_FILE_PATH bytes */
    uint8_t hash[STORE_HASH_SIZE];
    int64_t mtime_ns;
    uint64_t size;
    uint64_t first_chunk; /* 0 when n_chunks == 0 */
    uint32_t n_chunks;
};

/*
 * Insert or replace the row of f->path in `repo`.  If a row existed with another chunk range,
 * the chunks of the old range are deleted (rows, vectors, postings), as store_chunk_delete()
 * does.  The new range must belong to `repo` (-EINVAL).  -ENOENT if the repo does not exist.
 */
int store_file_put(struct store_txn *t, uint32_t repo, const struct store_file *f);
/* The row of `path`; ret->path is set to `path`.  -ENOENT if absent. */
int store_file_get(struct store_txn *t, uint32_t repo, const char *path, struct store_file *ret);
/* Delete the row and its chunks (rows, vectors, postings).  -ENOENT if absent. */
int store_file_delete(struct store_txn *t, uint32_t repo, const char *path);

typedef int (*store_file_fn)(void *userdata, const struct store_file *file);
/* The files of `repo` in byte order of path, starting at the first path >= `from` (NULL: all),
 * so a walk can resume where a checkpoint left off. */
int store_file_foreach(struct store_txn *t, uint32_t repo, const char *from, store_file_fn fn,
                       void *userdata);

#endif
