/*
 * store.c - the LMDB environment, transactions with map growth by redo-log replay, the error
 * mapping, the schema version check and migrations, and the meta table.  The design is in
 * store.h; the table code lives in store-repo.c, store-chunk.c and store-job.c.
 */
#include "store-int.h"

#include "log.h"
#include "macro.h"
#include "paths.h"

#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>

/* The tables and their LMDB flags; names are part of the on-disk format. */
static const struct {
    const char *name;
    unsigned flags;
} tables[_TABLE_MAX] = {
    [TABLE_META] = {"meta", 0},       [TABLE_REPO_PATHS] = {"repo_paths", 0},
    [TABLE_REPOS] = {"repos", 0},     [TABLE_FILES] = {"files", 0},
    [TABLE_CHUNKS] = {"chunks", 0},   [TABLE_VECTORS] = {"vectors", 0},
    [TABLE_LEXDOCS] = {"lexdocs", 0}, [TABLE_POSTINGS] = {"postings", MDB_DUPSORT | MDB_DUPFIXED},
    [TABLE_JOBS] = {"jobs", 0},
};

/*
 * 1 -> 2: chunk rows may carry their unit after the strings (schema.h, CHUNK_F_UNIT), and the
 * range a row had is read as its own unit.  Every schema-1 row is a valid schema-2 row, so
 * nothing is rewritten.  The indexer's format changed with it (INDEX_FORMAT 3), so the next
 * `index` of a repository re-chunks every file and writes definition ranges.
 */
static int migrate_1_chunk_units(struct store_txn *t, void *userdata)
{
    (void)t;
    (void)userdata;
    return 0;
}

/*
 * The built-in migration table: one step per version below STORE_SCHEMA_VERSION.  The tests
 * also drive the mechanism through store_options.migrations.  A step must leave the
 * environment exactly as a fresh one of the next version would be.
 */
static const struct store_migration builtin_migrations[] = {
    {1, migrate_1_chunk_units, "chunk rows may record their unit"},
};

/* ---- errors ---------------------------------------------------------------------------- */

static _Thread_local char last_error[512];

const char *store_last_error(void)
{
    return last_error;
}

void store_set_error(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(last_error, sizeof(last_error), fmt, ap);
    va_end(ap);
    log_debug("store: %s", last_error);
}

static const struct {
    int mdb;
    int err;
} mdb_errors[] = {
    {MDB_KEYEXIST, EEXIST},      {MDB_NOTFOUND, ENOENT},   {MDB_PAGE_NOTFOUND, EUCLEAN},
    {MDB_CORRUPTED, EUCLEAN},    {MDB_PANIC, EIO},         {MDB_VERSION_MISMATCH, EPROTONOSUPPORT},
    {MDB_INVALID, EBADMSG},      {MDB_MAP_FULL, ENOSPC},   {MDB_DBS_FULL, EMFILE},
    {MDB_READERS_FULL, EAGAIN},  {MDB_TLS_FULL, EAGAIN},   {MDB_TXN_FULL, E2BIG},
    {MDB_CURSOR_FULL, ENOBUFS},  {MDB_PAGE_FULL, ENOBUFS}, {MDB_MAP_RESIZED, ESTALE},
    {MDB_INCOMPATIBLE, EBADMSG}, {MDB_BAD_RSLOT, EBUSY},   {MDB_BAD_TXN, EINVAL},
    {MDB_BAD_VALSIZE, EMSGSIZE}, {MDB_BAD_DBI, EBADF},
};

int store_errno(int mdb_rc)
{
    if (mdb_rc >= 0)
        return -mdb_rc;
    for (size_t i = 0; i < ELEMENTSOF(mdb_errors); i++)
        if (mdb_errors[i].mdb == mdb_rc)
            return -mdb_errors[i].err;
    return -EIO;
}

int store_mdb_error(int rc, const char *what)
{
    return store_error(store_errno(rc), "%s: %s", what, mdb_strerror(rc));
}

/* ---- scratch buffers ------------------------------------------------------------------- */

int txn_buf(struct store_txn *t, size_t n)
{
    return array_grow((void **)&t->buf, &t->buf_cap, n, 1);
}

int txn_aux(struct store_txn *t, size_t n)
{
    /* Callers put floats here: malloc's alignment covers them. */
    return array_grow(&t->aux, &t->aux_cap, n, 1);
}

/* ---- the reader gate and map resizing -------------------------------------------------- */

static void gate_enter(struct store *s, struct store_txn *t)
{
    pthread_mutex_lock(&s->gate_lock);
    while (s->remap_waiters > 0)
        pthread_cond_wait(&s->gate_cond, &s->gate_lock);
    s->n_readers++;
    t->prev = NULL;
    t->next = s->readers;
    if (s->readers)
        s->readers->prev = t;
    s->readers = t;
    pthread_mutex_unlock(&s->gate_lock);
}

static void gate_leave(struct store *s, struct store_txn *t)
{
    pthread_mutex_lock(&s->gate_lock);
    if (t->prev)
        t->prev->next = t->next;
    else
        s->readers = t->next;
    if (t->next)
        t->next->prev = t->prev;
    t->prev = t->next = NULL;
    s->n_readers--;
    if (s->n_readers == 0 && s->remap_waiters > 0)
        pthread_cond_broadcast(&s->gate_cond);
    pthread_mutex_unlock(&s->gate_lock);
}

/*
 * Set the map size (0 = adopt the size another process grew the file to).  LMDB requires that
 * no transaction of this process is live: the caller has none of its own (it holds the write
 * lock with no LMDB write transaction), and here we hold new readers back and wait for the live
 * ones to end.  A reader held by this very thread would never end: refuse with -EDEADLK.
 */
/* Whether the calling thread began a read transaction that is still live (gate_lock held). */
static bool gate_held_by_self(struct store *s)
{
    pthread_t self = pthread_self();

    for (struct store_txn *r = s->readers; r; r = r->next)
        if (pthread_equal(r->owner, self))
            return true;
    return false;
}

static int env_remap(struct store *s, uint64_t size)
{
    int rc;

    pthread_mutex_lock(&s->gate_lock);
    if (gate_held_by_self(s)) {
        pthread_mutex_unlock(&s->gate_lock);
        return store_error(-EDEADLK, "cannot resize the map: this thread holds a read transaction");
    }
    s->remap_waiters++;
    while (s->n_readers > 0)
        pthread_cond_wait(&s->gate_cond, &s->gate_lock);
    rc = mdb_env_set_mapsize(s->env, (size_t)size);
    if (rc == 0 && size > 0)
        s->grows++;
    s->remap_waiters--;
    pthread_cond_broadcast(&s->gate_cond);
    pthread_mutex_unlock(&s->gate_lock);
    if (rc != 0)
        return store_mdb_error(rc, "resize map");
    return 0;
}

static uint64_t env_map_size(struct store *s)
{
    MDB_envinfo info;

    mdb_env_info(s->env, &info);
    return info.me_mapsize;
}

/* ---- transactions ---------------------------------------------------------------------- */

static struct store_txn *txn_new(struct store *s, bool write)
{
    struct store_txn *t = calloc(1, sizeof(*t));

    if (!t)
        return NULL;
    t->store = s;
    t->write = write;
    t->owner = pthread_self();
    return t;
}

static void txn_release(struct store_txn *t)
{
    free(t->log);
    free(t->buf);
    free(t->aux);
    free(t);
}

bool store_txn_is_write(const struct store_txn *t)
{
    return t->write;
}

uint64_t store_write_ops(const struct store_txn *t)
{
    return t->write ? t->log_records : 0;
}

int store_read_begin(struct store *s, struct store_txn **ret)
{
    struct store_txn *t;
    int rc, r;

    t = txn_new(s, false);
    if (!t)
        return store_error(-ENOMEM, "out of memory");
    for (;;) {
        gate_enter(s, t);
        /* s->env is read under the gate: store_release_memory() swaps it holding the gate. */
        rc = s->env ? mdb_txn_begin(s->env, NULL, MDB_RDONLY, &t->txn) : EIO;
        if (rc == 0)
            break;
        gate_leave(s, t);
        if (rc != MDB_MAP_RESIZED) {
            txn_release(t);
            return store_mdb_error(rc, "begin read transaction");
        }
        /* Another process grew the map.  Adopting its size is a remap, which must not race
         * our own writer: take the write lock (EDEADLK: this thread is mid-write). */
        r = pthread_mutex_lock(&s->write_lock);
        if (r != 0) {
            txn_release(t);
            return store_error(-ESTALE, "map grown by another process during a write");
        }
        r = env_remap(s, 0);
        pthread_mutex_unlock(&s->write_lock);
        if (r < 0) {
            txn_release(t);
            return r;
        }
    }
    *ret = t;
    return 0;
}

void store_read_end(struct store_txn *t)
{
    if (!t)
        return;
    if (t->write) {
        /* Not what the caller meant, but ending it is the only safe thing. */
        store_write_abort(t);
        return;
    }
    mdb_txn_abort(t->txn);
    gate_leave(t->store, t);
    txn_release(t);
}

/* Begin the LMDB write transaction of t (write lock held, no LMDB txn live). */
static int txn_begin_write(struct store_txn *t)
{
    struct store *s = t->store;
    int rc, r;

    for (;;) {
        /* No environment: a store_release_memory() failed to reopen it. */
        rc = s->env ? mdb_txn_begin(s->env, NULL, 0, &t->txn) : EIO;
        if (rc != MDB_MAP_RESIZED)
            break;
        r = env_remap(s, 0);
        if (r < 0)
            return r;
    }
    if (rc != 0) {
        t->txn = NULL;
        return store_mdb_error(rc, "begin write transaction");
    }
    return 0;
}

int store_write_begin(struct store *s, struct store_txn **ret)
{
    struct store_txn *t;
    int r;

    if (s->read_only)
        return store_error(-EROFS, "store at %s is open read-only", s->dir);
    /* Waiting for the write lock while holding a reader can deadlock: the current writer may
     * be waiting for that very reader to end so it can grow the map. */
    pthread_mutex_lock(&s->gate_lock);
    r = gate_held_by_self(s);
    pthread_mutex_unlock(&s->gate_lock);
    if (r)
        return store_error(-EDEADLK, "write transaction begun by a thread holding a read one");
    t = txn_new(s, true);
    if (!t)
        return store_error(-ENOMEM, "out of memory");
    r = pthread_mutex_lock(&s->write_lock);
    if (r != 0) {
        txn_release(t);
        return store_error(-r, "this thread already has a write transaction");
    }
    r = txn_begin_write(t);
    if (r < 0) {
        pthread_mutex_unlock(&s->write_lock);
        txn_release(t);
        return r;
    }
    *ret = t;
    return 0;
}

static void txn_finish_write(struct store_txn *t)
{
    if (t->txn)
        mdb_txn_abort(t->txn);
    pthread_mutex_unlock(&t->store->write_lock);
    txn_release(t);
}

void store_write_abort(struct store_txn *t)
{
    if (!t)
        return;
    if (!t->write) {
        store_read_end(t);
        return;
    }
    txn_finish_write(t);
}

static int txn_poison(struct store_txn *t, int r)
{
    if (t->failed == 0)
        t->failed = r;
    return r;
}

int txn_op_begin(struct store_txn *t, size_t *ret_mark)
{
    if (!t->write)
        return store_error(-EROFS, "write through a read transaction");
    if (t->failed)
        return t->failed;
    if (t->iterating)
        return store_error(-EBUSY, "write from inside a foreach callback");
    *ret_mark = t->log_records;
    return 0;
}

int txn_op_end(struct store_txn *t, size_t mark, int r)
{
    if (r < 0 && t->log_records != mark)
        txn_poison(t, r);
    return r;
}

/* ---- the redo log ---------------------------------------------------------------------- */

enum log_op {
    LOG_PUT,
    LOG_DEL,
    LOG_DEL_RANGE,
};

/* A record is this header followed by klen key bytes and vlen value bytes (for LOG_DEL_RANGE,
 * key = lo and value = hi; for LOG_DEL, vlen 0 = no value). */
struct log_rec {
    uint8_t op;
    uint8_t table;
    uint16_t has_val;
    uint32_t flags;
    uint32_t klen;
    uint32_t vlen;
};

static int log_append(struct store_txn *t, const struct log_rec *rec, const void *key,
                      const void *val)
{
    size_t need = t->log_len + sizeof(*rec) + rec->klen + rec->vlen;
    int r;

    r = array_grow((void **)&t->log, &t->log_cap, need, 1);
    if (r < 0)
        return store_error(r, "out of memory for the transaction log");
    memcpy(t->log + t->log_len, rec, sizeof(*rec));
    if (rec->klen)
        memcpy(t->log + t->log_len + sizeof(*rec), key, rec->klen);
    if (rec->vlen)
        memcpy(t->log + t->log_len + sizeof(*rec) + rec->klen, val, rec->vlen);
    t->log_len = need;
    t->log_records++;
    return 0;
}

/* Delete keys in [lo, hi).  Re-seeks after each delete rather than trusting cursor position
 * after mdb_cursor_del on a DUPSORT table; each seek is O(log n). */
static int raw_del_range(struct store_txn *t, MDB_dbi dbi, bool dupsort, MDB_val lo, MDB_val hi,
                         uint64_t *ret_n)
{
    MDB_cursor *c;
    MDB_val k, v;
    uint64_t n = 0;
    int rc;

    rc = mdb_cursor_open(t->txn, dbi, &c);
    if (rc != 0)
        return rc;
    for (;;) {
        k = lo;
        rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
        if (rc == MDB_NOTFOUND) {
            rc = 0;
            break;
        }
        if (rc != 0)
            break;
        if (mdb_cmp(t->txn, dbi, &k, &hi) >= 0)
            break;
        rc = mdb_cursor_del(c, dupsort ? MDB_NODUPDATA : 0);
        if (rc != 0)
            break;
        n++;
    }
    mdb_cursor_close(c);
    if (rc == 0 && ret_n)
        *ret_n = n;
    return rc;
}

/* Execute one primitive on t's current LMDB transaction; returns an LMDB code. */
static int raw_exec(struct store_txn *t, const struct log_rec *rec, const void *key,
                    const void *val, uint64_t *ret_n)
{
    MDB_dbi dbi = t->store->dbi[rec->table];
    MDB_val k = {.mv_size = rec->klen, .mv_data = (void *)key};
    MDB_val v = {.mv_size = rec->vlen, .mv_data = (void *)val};

    switch (rec->op) {
    case LOG_PUT:
        return mdb_put(t->txn, dbi, &k, &v, rec->flags);
    case LOG_DEL:
        return mdb_del(t->txn, dbi, &k, rec->has_val ? &v : NULL);
    case LOG_DEL_RANGE:
        return raw_del_range(t, dbi, tables[rec->table].flags & MDB_DUPSORT, k, v, ret_n);
    }
    return EINVAL;
}

static int log_replay(struct store_txn *t)
{
    size_t off = 0;
    int rc;

    while (off < t->log_len) {
        struct log_rec rec;
        const uint8_t *key, *val;

        memcpy(&rec, t->log + off, sizeof(rec));
        key = t->log + off + sizeof(rec);
        val = key + rec.klen;
        rc = raw_exec(t, &rec, key, val, NULL);
        if (rc != 0)
            return rc;
        off += sizeof(rec) + rec.klen + rec.vlen;
    }
    return 0;
}

/*
 * MDB_MAP_FULL: abort (if commit has not already), double the map, begin again on the same
 * snapshot and replay the log.  Loops when the replay itself fills the bigger map.  Any failure
 * poisons t.
 */
static int txn_grow(struct store_txn *t, size_t base_id)
{
    struct store *s = t->store;
    uint64_t size, next;
    int rc, r;

    if (t->txn) {
        mdb_txn_abort(t->txn);
        t->txn = NULL;
    }
    for (;;) {
        size = env_map_size(s);
        if (size >= s->max_map_size)
            return txn_poison(
                t, store_error(-ENOSPC, "store map is full at its maximum size (%" PRIu64 " bytes)",
                               s->max_map_size));
        next = size > s->max_map_size / 2 ? s->max_map_size : size * 2;
        r = env_remap(s, next);
        if (r < 0)
            return txn_poison(t, r);
        log_debug("store: map grown to %" PRIu64 " bytes", env_map_size(s));
        r = txn_begin_write(t);
        if (r < 0)
            return txn_poison(t, r);
        if (mdb_txn_id(t->txn) != base_id)
            return txn_poison(t, store_error(-ESTALE, "another process wrote to the store "
                                                      "while a transaction was being resized"));
        rc = log_replay(t);
        if (rc == 0)
            return 0;
        mdb_txn_abort(t->txn);
        t->txn = NULL;
        if (rc != MDB_MAP_FULL)
            return txn_poison(t, store_mdb_error(rc, "replay after map growth"));
    }
}

/* Run one primitive, growing the map as needed, and log it when it changed something. */
static int txn_exec(struct store_txn *t, const struct log_rec *rec, const void *key,
                    const void *val, uint64_t *ret_n)
{
    int rc, r;

    if (!t->txn)
        return t->failed ? t->failed : -EIO;
    for (;;) {
        size_t base_id = mdb_txn_id(t->txn);

        rc = raw_exec(t, rec, key, val, ret_n);
        if (rc != MDB_MAP_FULL)
            break;
        r = txn_grow(t, base_id);
        if (r < 0)
            return r;
    }
    if (rc == MDB_KEYEXIST)
        return -EEXIST;
    if (rc == MDB_NOTFOUND && rec->op == LOG_DEL)
        return -ENOENT;
    if (rc != 0)
        return txn_poison(t, store_mdb_error(rc, tables[rec->table].name));
    r = log_append(t, rec, key, val);
    if (r < 0)
        return txn_poison(t, r);
    return 0;
}

int txn_put(struct store_txn *t, enum store_table tb, const void *key, size_t klen, const void *val,
            size_t vlen, unsigned flags)
{
    struct log_rec rec = {.op = LOG_PUT,
                          .table = tb,
                          .has_val = 1,
                          .flags = flags,
                          .klen = (uint32_t)klen,
                          .vlen = (uint32_t)vlen};

    if (vlen > UINT32_MAX)
        return store_error(-EMSGSIZE, "value too large");
    return txn_exec(t, &rec, key, val, NULL);
}

int txn_del(struct store_txn *t, enum store_table tb, const void *key, size_t klen, const void *val,
            size_t vlen)
{
    struct log_rec rec = {.op = LOG_DEL,
                          .table = tb,
                          .has_val = val != NULL,
                          .klen = (uint32_t)klen,
                          .vlen = val ? (uint32_t)vlen : 0};

    return txn_exec(t, &rec, key, val, NULL);
}

int txn_del_range(struct store_txn *t, enum store_table tb, const void *lo, size_t lolen,
                  const void *hi, size_t hilen, uint64_t *ret_n)
{
    struct log_rec rec = {.op = LOG_DEL_RANGE,
                          .table = tb,
                          .has_val = 1,
                          .klen = (uint32_t)lolen,
                          .vlen = (uint32_t)hilen};
    uint64_t n = 0;
    int r;

    r = txn_exec(t, &rec, lo, hi, &n);
    if (r < 0)
        return r;
    if (ret_n)
        *ret_n = n;
    return 0;
}

int txn_get(struct store_txn *t, enum store_table tb, const void *key, size_t klen, MDB_val *ret)
{
    MDB_val k = {.mv_size = klen, .mv_data = (void *)key}, v;
    int rc;

    if (!t->txn)
        return t->failed ? t->failed : -EIO;
    rc = mdb_get(t->txn, t->store->dbi[tb], &k, &v);
    if (rc == MDB_NOTFOUND)
        return -ENOENT;
    if (rc != 0)
        return store_mdb_error(rc, tables[tb].name);
    *ret = v;
    return 0;
}

int txn_cursor(struct store_txn *t, enum store_table tb, MDB_cursor **ret)
{
    int rc;

    if (!t->txn)
        return t->failed ? t->failed : -EIO;
    rc = mdb_cursor_open(t->txn, t->store->dbi[tb], ret);
    if (rc != 0)
        return store_mdb_error(rc, tables[tb].name);
    return 0;
}

/* Whether the filesystem of the store has less than a few pages free (*ret_free: bytes). */
static bool disk_nearly_full(const struct store *s, uint64_t *ret_free)
{
    struct statvfs v;

    if (statvfs(s->dir, &v) < 0)
        return false;
    *ret_free = (uint64_t)v.f_bavail * v.f_frsize;
    return *ret_free < 1024 * 1024;
}

int store_write_commit(struct store_txn *t)
{
    uint64_t free_bytes = 0;
    size_t base_id;
    int rc, r;

    if (!t)
        return -EINVAL;
    if (!t->write)
        return store_error(-EROFS, "commit of a read transaction");
    if (t->failed) {
        r = t->failed;
        txn_finish_write(t);
        return r;
    }
    for (;;) {
        base_id = mdb_txn_id(t->txn);
        rc = mdb_txn_commit(t->txn); /* frees the LMDB txn, also on failure */
        t->txn = NULL;
        if (rc != MDB_MAP_FULL)
            break;
        r = txn_grow(t, base_id);
        if (r < 0) {
            txn_finish_write(t);
            return r;
        }
    }
    if (rc == EIO && disk_nearly_full(t->store, &free_bytes))
        /* LMDB calls a short write EIO; on a full disk that is what it was. */
        r = store_error(-ENOSPC,
                        "commit: no space left on the disk of %s (%llu bytes free); free some "
                        "space, then index again: what was committed before is intact",
                        t->store->dir, (unsigned long long)free_bytes);
    else
        r = rc == 0 ? 0 : store_mdb_error(rc, "commit");
    txn_finish_write(t);
    return r;
}

/* ---- meta ------------------------------------------------------------------------------ */

static int meta_key_check(const char *key, size_t *ret_len)
{
    size_t n = key ? strlen(key) : 0;

    if (n == 0 || n > STORE_MAX_KEY)
        return store_error(-EINVAL, "meta key must be 1..%d bytes", STORE_MAX_KEY);
    *ret_len = n;
    return 0;
}

int store_meta_get(struct store_txn *t, const char *key, const void **ret_val, size_t *ret_len)
{
    MDB_val v;
    size_t klen;
    int r;

    r = meta_key_check(key, &klen);
    if (r < 0)
        return r;
    r = txn_get(t, TABLE_META, key, klen, &v);
    if (r < 0)
        return r;
    *ret_val = v.mv_data;
    *ret_len = v.mv_size;
    return 0;
}

static bool meta_key_reserved(const char *key)
{
    return strncmp(key, STORE_META_RESERVED_PREFIX, strlen(STORE_META_RESERVED_PREFIX)) == 0;
}

int store_meta_put(struct store_txn *t, const char *key, const void *val, size_t len)
{
    size_t klen, mark;
    int r;

    r = meta_key_check(key, &klen);
    if (r < 0)
        return r;
    if (meta_key_reserved(key))
        return store_error(-EPERM, "meta key \"%s\" is reserved for the store", key);
    if (!val && len > 0)
        return -EINVAL;
    r = txn_op_begin(t, &mark);
    if (r < 0)
        return r;
    return txn_op_end(t, mark, txn_put(t, TABLE_META, key, klen, val ? val : "", len, 0));
}

int store_meta_delete(struct store_txn *t, const char *key)
{
    size_t klen, mark;
    int r;

    r = meta_key_check(key, &klen);
    if (r < 0)
        return r;
    if (meta_key_reserved(key))
        return store_error(-EPERM, "meta key \"%s\" is reserved for the store", key);
    r = txn_op_begin(t, &mark);
    if (r < 0)
        return r;
    return txn_op_end(t, mark, txn_del(t, TABLE_META, key, klen, NULL, 0));
}

static int meta_get_u32(struct store_txn *t, const char *key, uint32_t *ret)
{
    MDB_val v;
    int r;

    r = txn_get(t, TABLE_META, key, strlen(key), &v);
    if (r < 0)
        return r;
    if (v.mv_size != sizeof(uint32_t))
        return store_error(-EBADMSG, "meta %s has %zu bytes, expected 4", key, v.mv_size);
    *ret = u32_get(v.mv_data);
    return 0;
}

static int meta_put_u32(struct store_txn *t, const char *key, uint32_t val)
{
    uint8_t b[4];

    u32_put(b, val);
    return txn_put(t, TABLE_META, key, strlen(key), b, sizeof(b), 0);
}

int meta_counter_next(struct store_txn *t, const char *key, uint64_t max, uint64_t *ret)
{
    uint8_t b[8];
    uint64_t next = 1;
    MDB_val v;
    int r;

    r = txn_get(t, TABLE_META, key, strlen(key), &v);
    if (r >= 0) {
        if (v.mv_size != sizeof(uint64_t))
            return store_error(-EBADMSG, "meta %s has %zu bytes, expected 8", key, v.mv_size);
        next = u64_get(v.mv_data);
    } else if (r != -ENOENT) {
        return r;
    }
    if (next == 0 || next > max)
        return store_error(-EOVERFLOW, "%s: identifiers exhausted", key);
    u64_put(b, next + 1);
    r = txn_put(t, TABLE_META, key, strlen(key), b, sizeof(b), 0);
    if (r < 0)
        return r;
    *ret = next;
    return 0;
}

int64_t store_now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* ---- open, schema ---------------------------------------------------------------------- */

void store_options_init(struct store_options *opts)
{
    *opts = (struct store_options){
        .map_size = STORE_DEFAULT_MAP_SIZE,
        .max_map_size = STORE_DEFAULT_MAX_MAP_SIZE,
        .max_readers = STORE_DEFAULT_MAX_READERS,
    };
}

/* Create (read-write) or look up (read-only) every table, in a transaction of its own so that
 * the handles survive later aborts.  Runs before any other transaction exists, so growing the
 * map here needs no gate. */
static int open_tables(struct store *s)
{
    MDB_txn *txn;
    int rc;

    for (;;) {
        rc = mdb_txn_begin(s->env, NULL, s->read_only ? MDB_RDONLY : 0, &txn);
        if (rc != 0)
            return store_mdb_error(rc, "begin transaction");
        for (int i = 0; i < _TABLE_MAX && rc == 0; i++) {
            rc = mdb_dbi_open(txn, tables[i].name,
                              tables[i].flags | (s->read_only ? 0 : MDB_CREATE), &s->dbi[i]);
            if (rc == MDB_NOTFOUND) {
                mdb_txn_abort(txn);
                return store_error(-ENOENT, "store at %s is not initialised (no table %s)", s->dir,
                                   tables[i].name);
            }
            if (rc != 0 && rc != MDB_MAP_FULL) {
                mdb_txn_abort(txn);
                return store_error(store_errno(rc), "store at %s: table %s: %s", s->dir,
                                   tables[i].name, mdb_strerror(rc));
            }
        }
        if (rc == 0)
            rc = mdb_txn_commit(txn);
        else
            mdb_txn_abort(txn);
        if (rc != MDB_MAP_FULL)
            break;
        if (env_map_size(s) >= s->max_map_size)
            return store_mdb_error(rc, "create tables");
        rc = mdb_env_set_mapsize(s->env, MIN(env_map_size(s) * 2, s->max_map_size));
        if (rc != 0)
            return store_mdb_error(rc, "resize map");
    }
    if (rc != 0)
        return store_mdb_error(rc, "create tables");
    return 0;
}

static bool env_is_empty(struct store *s, struct store_txn *t)
{
    for (int i = 0; i < _TABLE_MAX; i++) {
        MDB_stat st;

        if (i == TABLE_META)
            continue;
        if (mdb_stat(t->txn, s->dbi[i], &st) != 0 || st.ms_entries > 0)
            return false;
    }
    return true;
}

static const struct store_migration *find_migration(const struct store_options *o, uint32_t from)
{
    const struct store_migration *m = o->migrations ? o->migrations : builtin_migrations;
    size_t n = o->migrations ? o->n_migrations : ELEMENTSOF(builtin_migrations);

    for (size_t i = 0; i < n; i++)
        if (m[i].from_version == from && m[i].fn)
            return &m[i];
    return NULL;
}

/* Read-write open: stamp a fresh environment, accept the current version, migrate an older
 * one step by step in one transaction, refuse a newer one. */
static int schema_check_rw(struct store *s, const struct store_options *o, uint32_t want)
{
    struct store_txn *t;
    uint32_t have;
    int r;

    r = store_write_begin(s, &t);
    if (r < 0)
        return r;
    r = meta_get_u32(t, STORE_META_SCHEMA_VERSION, &have);
    if (r == -ENOENT) {
        if (!env_is_empty(s, t)) {
            store_write_abort(t);
            return store_error(-EBADMSG, "store at %s has data but no schema version", s->dir);
        }
        r = meta_put_u32(t, STORE_META_SCHEMA_VERSION, want);
        if (r < 0) {
            store_write_abort(t);
            return r;
        }
        r = store_write_commit(t);
        if (r < 0)
            return r;
        s->schema_version = want;
        return 0;
    }
    if (r < 0)
        goto out_abort;
    if (have == 0) {
        r = store_error(-EBADMSG, "store at %s has invalid schema version 0", s->dir);
        goto out_abort;
    }
    if (have > want) {
        r = store_error(-EPROTONOSUPPORT,
                        "store at %s has schema version %" PRIu32
                        ", newer than this coarch supports (%" PRIu32
                        "): upgrade coarch, or set COARCH_DATA_DIR to another directory",
                        s->dir, have, want);
        goto out_abort;
    }
    while (have < want) {
        const struct store_migration *m = find_migration(o, have);

        if (!m) {
            r = store_error(-EPROTONOSUPPORT,
                            "store at %s has schema version %" PRIu32
                            " and this coarch (version %" PRIu32 ") has no migration from it",
                            s->dir, have, want);
            goto out_abort;
        }
        log_debug("store: migrating schema %" PRIu32 " -> %" PRIu32 ": %s", have, have + 1,
                  m->what ? m->what : "");
        r = m->fn(t, o->migration_userdata);
        if (r >= 0)
            r = t->failed;
        if (r < 0) {
            char why[sizeof(last_error)];

            snprintf(why, sizeof(why), "%s", last_error);
            r = store_error(
                r, "store at %s: migration from schema %" PRIu32 " to %" PRIu32 " failed (%s)",
                s->dir, have, have + 1, why[0] ? why : strerror(-r));
            goto out_abort;
        }
        have++;
        r = meta_put_u32(t, STORE_META_SCHEMA_VERSION, have);
        if (r < 0)
            goto out_abort;
    }
    r = store_write_commit(t);
    if (r < 0)
        return r;
    s->schema_version = want;
    return 0;

out_abort:
    store_write_abort(t);
    return r;
}

static int schema_check_ro(struct store *s, uint32_t want)
{
    struct store_txn *t;
    uint32_t have;
    int r;

    r = store_read_begin(s, &t);
    if (r < 0)
        return r;
    r = meta_get_u32(t, STORE_META_SCHEMA_VERSION, &have);
    store_read_end(t);
    if (r == -ENOENT)
        return store_error(-ENOENT, "store at %s is not initialised (no schema version)", s->dir);
    if (r < 0)
        return r;
    if (have > want)
        return store_error(-EPROTONOSUPPORT,
                           "store at %s has schema version %" PRIu32
                           ", newer than this coarch supports (%" PRIu32
                           "): upgrade coarch, or set COARCH_DATA_DIR to another directory",
                           s->dir, have, want);
    if (have < want)
        return store_error(-EROFS,
                           "store at %s has schema version %" PRIu32
                           " and needs migration to %" PRIu32 ", which a read-only open cannot do",
                           s->dir, have, want);
    s->schema_version = have;
    return 0;
}

/* The map starts at the requested size, or at twice the data file when that is larger, so a
 * reopen of a big store does not begin with a round of growth. */
static uint64_t initial_map_size(const char *dir, uint64_t want, uint64_t max)
{
    _cleanup_free_ char *data = path_join(dir, "data.mdb");
    long page = sysconf(_SC_PAGESIZE);
    struct stat st;

    if (data && stat(data, &st) == 0 && (uint64_t)st.st_size > want / 2)
        want = (uint64_t)st.st_size * 2;
    want = MIN(want, max);
    if (page > 0)
        want = (want + (uint64_t)page - 1) / (uint64_t)page * (uint64_t)page;
    return want;
}

/*
 * A data.mdb shorter than the pages its meta page says are in use (truncated by a full disk,
 * a copy cut short, a bad restore) would make the first read of a missing page a SIGBUS
 * through the map: refuse it here, with what to do, instead of crashing.
 */
static int check_file_size(struct store *s)
{
    char path[PATH_MAX];
    MDB_envinfo info;
    MDB_stat st;
    struct stat fst;
    uint64_t need;

    if (mdb_env_info(s->env, &info) != 0 || mdb_env_stat(s->env, &st) != 0)
        return 0;
    snprintf(path, sizeof(path), "%s/data.mdb", s->dir);
    if (stat(path, &fst) < 0)
        return 0;
    need = (uint64_t)(info.me_last_pgno + 1) * st.ms_psize;
    if ((uint64_t)fst.st_size < need)
        return store_error(-EBADMSG,
                           "store at %s is damaged: data.mdb has %lld bytes but its last page "
                           "ends at %" PRIu64 " (the file was cut short: a full disk, an "
                           "interrupted copy?); move %s aside and index again, or restore a "
                           "backup of it",
                           s->dir, (long long)fst.st_size, need, s->dir);
    return 0;
}

static int env_open(struct store *s, const struct store_options *o)
{
    unsigned flags = MDB_NOTLS;
    int rc, r;

    rc = mdb_env_create(&s->env);
    if (rc != 0)
        return store_mdb_error(rc, "create environment");
    rc = mdb_env_set_maxdbs(s->env, _TABLE_MAX);
    if (rc == 0)
        rc = mdb_env_set_maxreaders(s->env,
                                    o->max_readers ? o->max_readers : STORE_DEFAULT_MAX_READERS);
    if (rc == 0)
        rc = mdb_env_set_mapsize(
            s->env,
            (size_t)initial_map_size(s->dir, o->map_size ? o->map_size : STORE_DEFAULT_MAP_SIZE,
                                     s->max_map_size));
    if (rc != 0)
        return store_mdb_error(rc, "configure environment");
    if (o->read_only)
        flags |= MDB_RDONLY;
    if (o->no_sync)
        flags |= MDB_NOSYNC;
    rc = mdb_env_open(s->env, s->dir, flags, 0600);
    if (rc != 0)
        return store_error(store_errno(rc), "cannot open store at %s: %s", s->dir,
                           mdb_strerror(rc));
    r = check_file_size(s);
    if (r < 0)
        return r;
    if (mdb_env_get_maxkeysize(s->env) < STORE_MAX_KEY)
        return store_error(-ENOTSUP, "LMDB's maximum key size is %d, coarch needs %d",
                           mdb_env_get_maxkeysize(s->env), STORE_MAX_KEY);
    if (!o->read_only) {
        int dead = 0;

        /* Reader slots of processes killed mid-read would pin old pages forever. */
        rc = mdb_reader_check(s->env, &dead);
        if (rc != 0)
            return store_mdb_error(rc, "clear stale readers");
        if (dead > 0)
            log_debug("store: cleared %d stale reader slots", dead);
    }
    return 0;
}

int store_release_memory(struct store *s)
{
    struct store_options o;
    uint64_t map;
    int r;

    if (s->read_only)
        return 0; /* read transactions dirty no pages */
    /* The write lock keeps writers out (and, being ERRORCHECK, refuses a thread that has an
     * open write transaction with EDEADLK); the gate holds new readers back and waits for the
     * live ones, as a resize does. */
    r = pthread_mutex_lock(&s->write_lock);
    if (r != 0)
        return store_error(-r, "cannot release memory with a write transaction open");
    pthread_mutex_lock(&s->gate_lock);
    if (gate_held_by_self(s)) {
        pthread_mutex_unlock(&s->gate_lock);
        pthread_mutex_unlock(&s->write_lock);
        return store_error(-EDEADLK, "cannot release memory: this thread holds a read transaction");
    }
    s->remap_waiters++;
    while (s->n_readers > 0)
        pthread_cond_wait(&s->gate_cond, &s->gate_lock);
    map = env_map_size(s);
    mdb_env_close(s->env);
    s->env = NULL;
    store_options_init(&o);
    o.map_size = map;
    o.max_map_size = s->max_map_size;
    o.max_readers = s->max_readers;
    o.no_sync = s->no_sync;
    r = env_open(s, &o);
    if (r >= 0)
        r = open_tables(s);
    if (r < 0 && s->env) {
        /* Every later call fails cleanly on a closed environment rather than using a
         * half-open one; the daemon's next start opens it again. */
        mdb_env_close(s->env);
        s->env = NULL;
    }
    s->remap_waiters--;
    pthread_cond_broadcast(&s->gate_cond);
    pthread_mutex_unlock(&s->gate_lock);
    pthread_mutex_unlock(&s->write_lock);
    return r;
}

int store_open(const char *dir, const struct store_options *opts, struct store **ret)
{
    struct store_options defaults;
    struct store *s;
    uint32_t want;
    int r;

    if (!opts) {
        store_options_init(&defaults);
        opts = &defaults;
    }
    s = calloc(1, sizeof(*s));
    if (!s)
        return store_error(-ENOMEM, "out of memory");
    s->read_only = opts->read_only;
    s->no_sync = opts->no_sync;
    s->max_readers = opts->max_readers;
    s->max_map_size = opts->max_map_size ? opts->max_map_size : STORE_DEFAULT_MAX_MAP_SIZE;
    if (s->max_map_size > SIZE_MAX / 2)
        s->max_map_size = SIZE_MAX / 2;
    if (opts->map_size > s->max_map_size) {
        r = store_error(-EINVAL, "map size %" PRIu64 " exceeds the maximum %" PRIu64,
                        opts->map_size, s->max_map_size);
        goto out_free;
    }
    want = opts->schema_version ? opts->schema_version : STORE_SCHEMA_VERSION;

    if (dir) {
        s->dir = strdup(dir);
        r = s->dir ? 0 : -ENOMEM;
    } else {
        r = coarch_data_dir(&s->dir);
    }
    if (r < 0) {
        r = store_error(r, "cannot determine the data directory: %s", strerror(-r));
        goto out_free;
    }
    if (!s->read_only) {
        r = mkdir_p(s->dir, 0700);
        if (r < 0) {
            r = store_error(r, "cannot create %s: %s", s->dir, strerror(-r));
            goto out_free;
        }
    }

    r = pthread_mutex_init(&s->gate_lock, NULL);
    if (r == 0) {
        r = pthread_cond_init(&s->gate_cond, NULL);
        if (r != 0)
            pthread_mutex_destroy(&s->gate_lock);
    }
    if (r != 0) {
        r = store_error(-r, "cannot initialise locks");
        goto out_free;
    }
    s->gate_init = true;
    {
        pthread_mutexattr_t attr;

        /* ERRORCHECK: a second store_write_begin() on the same thread returns EDEADLK
         * instead of hanging. */
        pthread_mutexattr_init(&attr);
        pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_ERRORCHECK);
        r = pthread_mutex_init(&s->write_lock, &attr);
        pthread_mutexattr_destroy(&attr);
        if (r != 0) {
            r = store_error(-r, "cannot initialise locks");
            goto out_free;
        }
        s->write_lock_init = true;
    }

    r = env_open(s, opts);
    if (r < 0)
        goto out_free;
    r = open_tables(s);
    if (r < 0)
        goto out_free;
    r = s->read_only ? schema_check_ro(s, want) : schema_check_rw(s, opts, want);
    if (r < 0)
        goto out_free;
    *ret = s;
    return 0;

out_free:
    store_free(s);
    return r;
}

struct store *store_free(struct store *s)
{
    if (!s)
        return NULL;
    if (s->env)
        mdb_env_close(s->env);
    if (s->write_lock_init)
        pthread_mutex_destroy(&s->write_lock);
    if (s->gate_init) {
        pthread_cond_destroy(&s->gate_cond);
        pthread_mutex_destroy(&s->gate_lock);
    }
    free(s->dir);
    free(s);
    return NULL;
}

const char *store_dir(const struct store *s)
{
    return s->dir;
}

int store_stat(struct store *s, struct store_stat *ret)
{
    MDB_envinfo info;
    MDB_stat st;
    int rc;

    /* Under the gate lock: store_release_memory() replaces s->env holding it. */
    pthread_mutex_lock(&s->gate_lock);
    if (!s->env) {
        pthread_mutex_unlock(&s->gate_lock);
        return store_error(-EIO, "store at %s is closed (reopening it failed)", s->dir);
    }
    rc = mdb_env_info(s->env, &info);
    if (rc == 0)
        rc = mdb_env_stat(s->env, &st);
    if (rc != 0) {
        pthread_mutex_unlock(&s->gate_lock);
        return store_mdb_error(rc, "stat");
    }
    *ret = (struct store_stat){
        .map_size = info.me_mapsize,
        .max_map_size = s->max_map_size,
        .used_bytes = (uint64_t)(info.me_last_pgno + 1) * st.ms_psize,
        .page_size = st.ms_psize,
        .max_readers = info.me_maxreaders,
        .readers = s->n_readers,
        .grows = s->grows,
        .schema_version = s->schema_version,
    };
    pthread_mutex_unlock(&s->gate_lock);
    return 0;
}
