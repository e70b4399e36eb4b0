/*
 * store-chunk.h - chunks, their embedding vectors and their lexical postings.
 *
 * A chunk is a piece of one file (a function, a class, a window of lines) with a chunk id that
 * encodes its repository (STORE_CHUNK_REPO): ids come from store_chunk_ids_alloc() as one
 * contiguous range per file (see store-repo.h for the re-index sequence).  Three tables hang off
 * the id: chunks (where the text is), vectors (its embedding) and the lexical side (postings,
 * one per distinct term, plus the chunk's BM25 document length).  store_chunk_delete() removes
 * all three in the calling transaction, and the repo row's counters follow every change.
 *
 * Reading for search:
 *  - vector top-k: store_vector_foreach() walks a repository's vectors in id order (one key
 *    range, leaf pages read sequentially); the indexer builds its in-memory scan set from it and
 *    re-ranks candidates with store_vector_get().
 *  - BM25: store_postings_foreach() yields (chunk id, tf, doc_len) in id order, in batches, and
 *    store_postings_df() gives df; N and the length sum are in struct store_repo.
 *
 * Threading and pointers: as store.h says.
 */
#ifndef COARCH_STORE_CHUNK_H
#define COARCH_STORE_CHUNK_H

#include "store-repo.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define STORE_CHUNK_REPO(id) ((uint32_t)((uint64_t)(id) >> STORE_CHUNK_SEQ_BITS))
#define STORE_MAX_LANGUAGE 64
#define STORE_MAX_SYMBOL 1024
#define STORE_MAX_DIM 16384
#define STORE_MAX_TERM 255 /* bytes; LEXICAL_MAX_TERM (64) fits */

/* Reserve `n` (1..2^32-1) consecutive chunk ids in `repo`; *ret_first is the first. */
int store_chunk_ids_alloc(struct store_txn *t, uint32_t repo, uint32_t n, uint64_t *ret_first);

struct store_chunk {
    uint64_t id;
    const char *path;              /* relative to the repo, 1..STORE_MAX_FILE_PATH bytes */
    const char *language;          /* 0..STORE_MAX_LANGUAGE bytes; NULL reads as "" */
    const char *symbol;            /* 0..STORE_MAX_SYMBOL bytes; NULL reads as "" */
    uint32_t start_line, end_line; /* what a hit on the chunk stands for (its definition):
                                    * 1-based, inclusive, start <= end */
    uint64_t text_offset;          /* byte range of that definition in its file */
    uint32_t text_len;
    /* The unit itself: the lines whose text was embedded and indexed, inside the range above.
     * All zero when put means "the same as the range above"; rows of schema 1 read so. */
    uint32_t unit_start_line, unit_end_line;
    uint64_t unit_offset;
    uint32_t unit_len;
    uint8_t hash[STORE_HASH_SIZE];
};

/* Insert or replace the row of c->id (its repository must exist: -ENOENT). */
int store_chunk_put(struct store_txn *t, const struct store_chunk *c);
/* The row of `id` with borrowed strings, or -ENOENT. */
int store_chunk_get(struct store_txn *t, uint64_t id, struct store_chunk *ret);
/* Delete the chunk row, its vector and its postings; -ENOENT when none of them existed. */
int store_chunk_delete(struct store_txn *t, uint64_t id);
/* store_chunk_delete() for ids [first, first + n); returns how many chunks had any row. */
int store_chunk_delete_range(struct store_txn *t, uint64_t first, uint32_t n);

/*
 * Staged chunks.  A writer that bounds the size of its transactions (the indexer, indexer.h)
 * writes a big file's chunks over several commits.  Until the file's row goes in, the range of
 * ids it allocated for them is staged: recorded in the same transaction as its first chunks,
 * at most one range per repository, and left out by store_vector_foreach() and
 * store_postings_foreach(), so a search goes on seeing the file's previous version (or
 * nothing) until the new one is complete, and never both.  The repo row's counters and
 * store_postings_df() do count staged chunks.  A writer killed mid-file leaves the record;
 * the next one drops the range with store_chunk_unstage(..., true).
 */
/* Stage [first, first + n) of `repo` (ids from store_chunk_ids_alloc()).  Staging the range
 * already staged is a no-op; -EBUSY when another range is staged, -EINVAL for a bad range. */
int store_chunk_stage(struct store_txn *t, uint32_t repo, uint64_t first, uint32_t n);
/* The staged range of `repo`, or -ENOENT. */
int store_chunk_staged(struct store_txn *t, uint32_t repo, uint64_t *ret_first, uint32_t *ret_n);
/* Forget the staged range of `repo` (-ENOENT if none): the chunks become visible (their file
 * row has just been put), or with `drop` are deleted, and their ids handed back to the
 * allocator when nothing was allocated after them, so that a resumed job numbers its chunks
 * as an uninterrupted one would have. */
int store_chunk_unstage(struct store_txn *t, uint32_t repo, bool drop);

/* Insert or replace the fp32 embedding of chunk `id` (1..STORE_MAX_DIM components). */
int store_vector_put(struct store_txn *t, uint64_t id, const float *v, uint32_t dim);
/* Copy the vector of `id` into buf (cap floats); -ENOENT, or -ENOBUFS when cap < dim. */
int store_vector_get(struct store_txn *t, uint64_t id, float *buf, uint32_t cap, uint32_t *ret_dim);

/* `v` is 4-byte aligned and valid during the call only.  Return 0 to go on, anything else stops
 * the walk and is returned.  Must not write through the transaction. */
typedef int (*store_vector_fn)(void *userdata, uint64_t id, const float *v, uint32_t dim);
/* Every vector of `repo` in chunk id order. */
int store_vector_foreach(struct store_txn *t, uint32_t repo, store_vector_fn fn, void *userdata);

/* A term of one chunk and its frequency there. */
struct store_term {
    const char *term; /* 1..STORE_MAX_TERM bytes */
    uint32_t tf;      /* >= 1 */
};

struct store_posting {
    uint64_t chunk_id;
    uint32_t tf;
    uint32_t doc_len;
};

/*
 * Set the lexical document of chunk `id`: its length (total term occurrences) and its distinct
 * terms, which must be in strictly ascending strcmp() order (lexical_count_terms() produces
 * that; -EINVAL otherwise).  Replaces the chunk's previous postings, if any.
 */
int store_postings_add(struct store_txn *t, uint64_t id, uint32_t doc_len,
                       const struct store_term *terms, size_t n_terms);
/* Remove every posting of chunk `id`; -ENOENT if it has none. */
int store_postings_remove(struct store_txn *t, uint64_t id);
/* Number of chunks of `repo` containing `term` (0 if none). */
int store_postings_df(struct store_txn *t, uint32_t repo, const char *term, uint64_t *ret_df);
/* The BM25 length of chunk `id`, or -ENOENT. */
int store_postings_doc_len(struct store_txn *t, uint64_t id, uint32_t *ret_doc_len);

/* Called with up to a page worth of postings at a time, in chunk id order.  `p` is valid during
 * the call only.  Return 0 to go on, anything else stops and is returned. */
typedef int (*store_posting_fn)(void *userdata, const struct store_posting *p, size_t n);
/* The postings of `term` in `repo` (none: returns 0 without calling fn). */
int store_postings_foreach(struct store_txn *t, uint32_t repo, const char *term,
                           store_posting_fn fn, void *userdata);

#endif
