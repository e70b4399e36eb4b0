/*
 * store.h - coarch's persistent index: one LMDB environment per data directory, opened once by
 * coarchd.  This header covers the environment, transactions, errors and the meta table; the
 * typed tables are in store-repo.h (repos, files), store-chunk.h (chunks, vectors, postings) and
 * store-job.h (jobs).  The byte layout is documented in schema.h.  daemon/store/ is the only code
 * that includes lmdb.h.
 *
 * DESIGN
 *
 * Transactions.  Everything goes through a struct store_txn.  Reads use store_read_begin/end:
 * an MVCC snapshot that never blocks or is blocked by the writer.  The environment is opened
 * with MDB_NOTLS, so a read transaction is not tied to a thread: it may be begun on one thread
 * and used or ended on another, as long as one thread at a time touches it.  Writes use
 * store_write_begin/commit/abort: at most one write transaction exists at a time (the store
 * serialises them with its own mutex on top of LMDB's writer lock), and it must be begun, used
 * and finished on ONE thread (LMDB's rule for write transactions).  The intended shape is one
 * writer thread (sched/'s store worker) committing checkpoints, and readers anywhere.
 *
 * Map growth.  LMDB needs a fixed map size; ours starts at options.map_size and doubles on
 * MDB_MAP_FULL up to options.max_map_size.  mdb_env_set_mapsize() may only be called when no
 * transaction of this process is live, and a full write transaction is dead anyway, so a write
 * transaction keeps a redo log of the primitive puts and deletes it has done.  On MDB_MAP_FULL
 * (from any write or from commit) the store aborts the LMDB transaction, waits for live read
 * transactions to end while holding new ones back (a reader gate), doubles the map, begins a
 * new transaction on the same snapshot and replays the log, then carries on; the caller sees
 * nothing but a slower call.  Costs and rules that follow:
 *  - the log holds a copy of everything written in the transaction until commit, so memory is
 *    bounded by the size of a checkpoint (range deletions are logged as one record);
 *  - pointers borrowed from a WRITE transaction are valid only until the next write through it;
 *  - a thread that holds a live read transaction must not begin or use a write transaction:
 *    a resize would wait for that reader forever (and a writer elsewhere may be resizing while
 *    this thread waits for the write lock).  The store refuses both with -EDEADLK ("holds"
 *    means "began and has not ended": with MDB_NOTLS that is the only ownership there is);
 *  - if another process commits between abort and replay the transaction fails with -ESTALE
 *    (coarchd is the only writer of its data directory, so this does not happen in practice).
 * A write that fails part-way through one of the typed calls poisons the transaction: every
 * later call returns the same error and commit aborts.  Calls that fail before changing
 * anything (bad arguments, -ENOENT lookups, -EEXIST) leave the transaction usable.
 *
 * Durability.  Commit fsyncs (unless options.no_sync, for tests): once store_write_commit()
 * returns 0 the data survives kill -9 and power loss; an uncommitted transaction vanishes
 * entirely, so a kill -9 loses exactly the work since the last commit and never corrupts.
 * Stale reader slots of killed processes are cleared at open (mdb_reader_check).
 *
 * Schema.  meta "coarch.schema_version" holds the environment's version.  A fresh environment
 * gets STORE_SCHEMA_VERSION; an older one is migrated at open by a table of steps (each step
 * moves one version up), all in one transaction; a NEWER one is refused with -EPROTONOSUPPORT
 * and a message naming both versions (store_last_error()).
 *
 * Errors are negative errno.  LMDB codes map as store_errno() documents.  When a call fails,
 * store_last_error() holds a sentence about it for logs and RPC error messages.
 */
#ifndef COARCH_STORE_STORE_H
#define COARCH_STORE_STORE_H

#include "schema.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct store;
struct store_txn;

#define STORE_DEFAULT_MAP_SIZE (1ull << 30)     /* 1 GiB of address space, not of disk */
#define STORE_DEFAULT_MAX_MAP_SIZE (1ull << 40) /* 1 TiB */
#define STORE_DEFAULT_MAX_READERS 126u

/* LMDB's key size limit (its compile-time default; checked at open). */
#define STORE_MAX_KEY 511

/* One schema migration step: turns a version `from_version` environment into `from_version+1`
 * inside the open's write transaction.  Returns 0 or a negative errno (the open then fails and
 * the environment keeps its old version). */
typedef int (*store_migrate_fn)(struct store_txn *t, void *userdata);
struct store_migration {
    uint32_t from_version;
    store_migrate_fn fn;
    const char *what; /* one line for logs */
};

struct store_options {
    uint64_t map_size;     /* initial map size in bytes; 0 = STORE_DEFAULT_MAP_SIZE */
    uint64_t max_map_size; /* growth ceiling; 0 = STORE_DEFAULT_MAX_MAP_SIZE */
    unsigned max_readers;  /* concurrent read transactions; 0 = STORE_DEFAULT_MAX_READERS */
    bool read_only;        /* no writes, no creation, no migration */
    bool no_sync;          /* skip fsync at commit (tests only: a crash may lose commits) */

    /* Test hooks: pretend this build's schema is `schema_version` with these migration steps
     * instead of STORE_SCHEMA_VERSION and the built-in table.  0 / NULL = the real ones. */
    uint32_t schema_version;
    const struct store_migration *migrations;
    size_t n_migrations;
    void *migration_userdata;
};

void store_options_init(struct store_options *opts);

/*
 * Open (creating with mode 0700 if needed) the environment in `dir`, or in coarch_data_dir()
 * when dir is NULL, create the tables and check or migrate the schema.  opts may be NULL.
 * Returns 0 and *ret (free with store_free()), or: -EPROTONOSUPPORT (newer schema), -EROFS (a
 * read-only open of an environment that needs migration), -ENOENT (read-only open of a missing
 * or uninitialised store), -EBADMSG/-EUCLEAN (not an LMDB file, corrupted), -EINVAL, -ENOMEM,
 * or an errno from the file system.  store_last_error() explains every failure.
 */
int store_open(const char *dir, const struct store_options *opts, struct store **ret);
/* Close.  No transaction may be live.  Accepts NULL; returns NULL. */
struct store *store_free(struct store *s);

const char *store_dir(const struct store *s);

/* Begin a read transaction (snapshot).  0, -EAGAIN (all reader slots taken), or an error. */
int store_read_begin(struct store *s, struct store_txn **ret);
/* End a read transaction; accepts NULL.  Borrowed pointers from it die here. */
void store_read_end(struct store_txn *t);

/* Begin the write transaction; blocks while another thread has one.  -EROFS on a read-only
 * store, -EDEADLK when this thread already has one or holds a read transaction. */
int store_write_begin(struct store *s, struct store_txn **ret);
/* Commit and free t (also on failure).  0 once durable; -ENOSPC when the map cannot grow or the
 * disk is full; a poisoned transaction returns its first error and is aborted. */
int store_write_commit(struct store_txn *t);
/* Abort and free t; accepts NULL. */
void store_write_abort(struct store_txn *t);

bool store_txn_is_write(const struct store_txn *t);

/*
 * Primitive writes (puts and deletes of one key) done through write transaction t since it
 * began; 0 for a read transaction.  What a transaction holds in memory until it commits grows
 * with this count: LMDB copies every page a write touches into a malloc'd dirty page (and keeps
 * those pages cached in the environment for later transactions, so the largest transaction
 * sets the process's footprint for good), and the redo log keeps a copy of every write.  How
 * many distinct pages the writes touch grows with the size of the tables they land in, so a
 * writer that wants memory independent of the store's size bounds this count per commit.
 */
uint64_t store_write_ops(const struct store_txn *t);

/*
 * Give back what LMDB keeps from past write transactions: it recycles the dirty pages of a
 * committed transaction into a list on the environment that only mdb_env_close() frees, so
 * one transaction that touched N pages keeps N pages allocated for the life of the process.
 * This closes the environment and opens it again (the data, the map size and the table
 * handles stay as they were).  Waits for the write lock and for live read transactions to
 * end, holding new ones back (the gate a map resize uses), so searches pause for a moment.
 * Returns 0; -EDEADLK when the calling thread has a write transaction open or holds a read
 * one; another negative errno when the reopen failed, after which every call on the store
 * fails and the store must be freed.  0 at once on a read-only store.
 */
int store_release_memory(struct store *s);

/*
 * meta table, for the daemon's own small settings (e.g. the embedding model of the vectors).
 * get: *ret_val is borrowed (see the DESIGN rule on write transactions); -ENOENT if absent.
 * put/delete: write transaction only; keys starting "coarch." are the store's (-EPERM).
 * Keys are 1..STORE_MAX_KEY bytes.
 */
int store_meta_get(struct store_txn *t, const char *key, const void **ret_val, size_t *ret_len);
int store_meta_put(struct store_txn *t, const char *key, const void *val, size_t len);
int store_meta_delete(struct store_txn *t, const char *key);

struct store_stat {
    uint64_t map_size;     /* current map size */
    uint64_t max_map_size; /* ceiling */
    uint64_t used_bytes;   /* pages in use up to the last committed page */
    uint32_t page_size;
    uint32_t max_readers;
    uint32_t readers;        /* live read transactions of this process */
    uint64_t grows;          /* map growths since open */
    uint32_t schema_version; /* of the environment (== this build's after open) */
};
int store_stat(struct store *s, struct store_stat *ret);

/*
 * Map an LMDB return code to 0 or a negative errno:
 *   positive errno e -> -e          MDB_KEYEXIST -> -EEXIST       MDB_NOTFOUND -> -ENOENT
 *   MDB_MAP_FULL -> -ENOSPC         MDB_READERS_FULL, MDB_TLS_FULL -> -EAGAIN
 *   MDB_PAGE_NOTFOUND, MDB_CORRUPTED -> -EUCLEAN (corruption)      MDB_INVALID -> -EBADMSG
 *   MDB_VERSION_MISMATCH -> -EPROTONOSUPPORT (file format of another LMDB version)
 *   MDB_INCOMPATIBLE -> -EBADMSG (a table has other flags than our schema says)
 *   MDB_PANIC -> -EIO    MDB_DBS_FULL -> -EMFILE    MDB_TXN_FULL -> -E2BIG
 *   MDB_CURSOR_FULL, MDB_PAGE_FULL -> -ENOBUFS    MDB_MAP_RESIZED -> -ESTALE
 *   MDB_BAD_RSLOT -> -EBUSY    MDB_BAD_TXN -> -EINVAL    MDB_BAD_VALSIZE -> -EMSGSIZE
 *   MDB_BAD_DBI -> -EBADF      any other negative code -> -EIO
 */
int store_errno(int mdb_rc);

/* A sentence about the most recent store failure on this thread ("" if none).  Thread-local;
 * valid until the next store call on this thread. */
const char *store_last_error(void);

#endif
