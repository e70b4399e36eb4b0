/*
 * store-int.h - private to daemon/store/: the store and transaction structs, the byte helpers
 * and the primitive operations the typed tables are written with.
 *
 * The one rule the table code must keep (see store.h DESIGN, "Map growth"): any primitive
 * write (txn_put, txn_del, txn_del_range) may abort and replay the LMDB transaction, so no
 * MDB_val pointer or cursor obtained before it may be used after it.  Copy what you read
 * before you write.
 */
#ifndef COARCH_STORE_INT_H
#define COARCH_STORE_INT_H

#include "store.h"

#include <errno.h>
#include <lmdb.h>
#include <pthread.h>
#include <string.h>

enum store_table {
    TABLE_META,
    TABLE_REPO_PATHS,
    TABLE_REPOS,
    TABLE_FILES,
    TABLE_CHUNKS,
    TABLE_VECTORS,
    TABLE_LEXDOCS,
    TABLE_POSTINGS,
    TABLE_JOBS,
    _TABLE_MAX,
};

struct store {
    MDB_env *env;
    MDB_dbi dbi[_TABLE_MAX];
    char *dir;
    bool read_only;
    bool no_sync;         /* options.no_sync, for reopening (store_release_memory()) */
    unsigned max_readers; /* options.max_readers, likewise */
    uint64_t max_map_size;
    uint32_t schema_version; /* the environment's, after open */

    /* Held from store_write_begin() to commit/abort: one write transaction at a time, and no
     * in-process writer can slip in between a resize's abort and its replay. */
    pthread_mutex_t write_lock;
    bool write_lock_init;

    /* The reader gate: a resize waits for n_readers to reach 0 while remap_waiters > 0 holds
     * new readers back.  `readers` lists the live read transactions (to detect a resize asked
     * for by a thread that itself holds one).  All guarded by gate_lock. */
    pthread_mutex_t gate_lock;
    pthread_cond_t gate_cond;
    bool gate_init;
    unsigned n_readers;
    unsigned remap_waiters;
    struct store_txn *readers;
    uint64_t grows;
};

struct store_txn {
    struct store *store;
    MDB_txn *txn; /* NULL after a failed resize */
    bool write;
    pthread_t owner; /* the thread that began it */
    struct store_txn *prev, *next;

    /* write transactions */
    int failed;         /* first error that poisoned the transaction, else 0 */
    unsigned iterating; /* > 0 inside a foreach: writes are refused (-EBUSY) */
    uint8_t *log;       /* redo log: records of struct log_rec + key + value */
    size_t log_len, log_cap, log_records;

    /* scratch for encoding values and for aligned/NUL-terminated copies handed to callbacks */
    uint8_t *buf;
    size_t buf_cap;
    void *aux;
    size_t aux_cap;
};

/* Byte helpers: keys big-endian, values host order, both through memcpy (no alignment). */
static inline void be32_put(uint8_t *p, uint32_t v)
{
    p[0] = v >> 24;
    p[1] = v >> 16;
    p[2] = v >> 8;
    p[3] = v;
}
static inline uint32_t be32_get(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static inline void be64_put(uint8_t *p, uint64_t v)
{
    be32_put(p, v >> 32);
    be32_put(p + 4, (uint32_t)v);
}
static inline uint64_t be64_get(const uint8_t *p)
{
    return (uint64_t)be32_get(p) << 32 | be32_get(p + 4);
}
static inline void u16_put(uint8_t *p, uint16_t v)
{
    memcpy(p, &v, sizeof(v));
}
static inline uint16_t u16_get(const uint8_t *p)
{
    uint16_t v;
    memcpy(&v, p, sizeof(v));
    return v;
}
static inline void u32_put(uint8_t *p, uint32_t v)
{
    memcpy(p, &v, sizeof(v));
}
static inline uint32_t u32_get(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, sizeof(v));
    return v;
}
static inline void u64_put(uint8_t *p, uint64_t v)
{
    memcpy(p, &v, sizeof(v));
}
static inline uint64_t u64_get(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, sizeof(v));
    return v;
}

/* Record `fmt` as this thread's store_last_error(). */
void store_set_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* store_set_error() and evaluate to r (a negative errno).  A macro so that the compiler sees
 * the constant errno and knows the caller's error path returns. */
#define store_error(r, ...)                                                                        \
    ({                                                                                             \
        int _se_r = (r);                                                                           \
        store_set_error(__VA_ARGS__);                                                              \
        _se_r;                                                                                     \
    })
/* store_error() for an LMDB code: "what: <mdb_strerror>" and the mapped errno. */
int store_mdb_error(int rc, const char *what);

/* Grow t->buf / t->aux to at least n bytes: 0 or -ENOMEM. */
int txn_buf(struct store_txn *t, size_t n);
int txn_aux(struct store_txn *t, size_t n);

/* Start of every typed write call: -EROFS (read txn), the poison error, -EBUSY (inside a
 * foreach).  *ret_mark remembers the log position for txn_op_end(). */
int txn_op_begin(struct store_txn *t, size_t *ret_mark);
/* End of a typed write call: a failure after something was written poisons the transaction. */
int txn_op_end(struct store_txn *t, size_t mark, int r);

/* Primitives.  Reads return 0 and a borrowed *ret, -ENOENT, or an error; writes return 0,
 * -EEXIST (put with MDB_NOOVERWRITE/MDB_NODUPDATA), -ENOENT (del of a missing key), or an
 * error that has poisoned the transaction. */
int txn_get(struct store_txn *t, enum store_table tb, const void *key, size_t klen, MDB_val *ret);
int txn_put(struct store_txn *t, enum store_table tb, const void *key, size_t klen, const void *val,
            size_t vlen, unsigned flags);
/* val may be NULL: delete the key (with all its duplicates). */
int txn_del(struct store_txn *t, enum store_table tb, const void *key, size_t klen, const void *val,
            size_t vlen);
/* Delete every key k with lo <= k < hi (memcmp order, all duplicates); *ret_n counts keys. */
int txn_del_range(struct store_txn *t, enum store_table tb, const void *lo, size_t lolen,
                  const void *hi, size_t hilen, uint64_t *ret_n);
/* A cursor on t's current LMDB transaction; close it before the next write. */
int txn_cursor(struct store_txn *t, enum store_table tb, MDB_cursor **ret);

/* Used by store-repo.c for file rows: delete chunks (rows, vectors, postings) in a range. */
int chunk_delete_range(struct store_txn *t, uint64_t first, uint32_t n, uint64_t *ret_n);

/* Repo row counters, adjusted inside the calling transaction. */
struct repo_delta {
    int64_t files, chunks, vectors, lex_docs, sum_doc_len;
};
/* Apply `d` to the row of `repo` (-ENOENT if it is gone). */
int repo_apply_delta(struct store_txn *t, uint32_t repo, const struct repo_delta *d);
#define REPO_ROW_MAX (REPO_PATH + STORE_MAX_REPO_PATH + 1)
/* Copy the repos row of `id` into row[] (REPO_ROW_MAX bytes); the length goes to *ret_len.
 * -ENOENT (no such repository) or -EBADMSG (malformed).  The copy survives later writes. */
int repo_row_copy(struct store_txn *t, uint32_t id, uint8_t *row, size_t *ret_len);
/* The meta key of repository `repo`'s staged range (store_chunk_stage()); returns its length. */
size_t staged_key(char key[STORE_MAX_KEY + 1], uint32_t repo);
/* 0 if the repository exists, else -ENOENT. */
int repo_exists(struct store_txn *t, uint32_t repo);

/* Hand out the next value of the meta counter `key` (absent = 1); -EOVERFLOW past `max`. */
int meta_counter_next(struct store_txn *t, const char *key, uint64_t max, uint64_t *ret);

/* CLOCK_REALTIME in nanoseconds. */
int64_t store_now_ns(void);

#endif
