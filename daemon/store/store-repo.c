/*
 * store-repo.c - the repos, repo_paths and files tables (layouts in schema.h).
 */
#include "store-chunk.h"
#include "store-int.h"

#include "macro.h"

#include <inttypes.h>

#define FILE_KEY_MAX (4 + STORE_MAX_FILE_PATH)

static int repo_path_check(const char *path, size_t *ret_len)
{
    size_t n = path ? strlen(path) : 0;

    if (n == 0 || path[0] != '/')
        return store_error(-EINVAL, "repository path must be absolute");
    if (n > STORE_MAX_REPO_PATH)
        return store_error(-ENAMETOOLONG, "repository path longer than %d bytes",
                           STORE_MAX_REPO_PATH);
    *ret_len = n;
    return 0;
}

static int file_key(uint32_t repo, const char *path, uint8_t key[FILE_KEY_MAX], size_t *ret_len)
{
    size_t n = path ? strlen(path) : 0;

    if (n == 0)
        return store_error(-EINVAL, "empty file path");
    if (n > STORE_MAX_FILE_PATH)
        return store_error(-ENAMETOOLONG, "file path longer than %d bytes: %.64s...",
                           STORE_MAX_FILE_PATH, path);
    be32_put(key, repo);
    memcpy(key + 4, path, n);
    *ret_len = 4 + n;
    return 0;
}

/* Decode a repos row; -EBADMSG when it is too short or its path is not NUL-terminated. */
static int repo_decode(uint32_t id, const MDB_val *v, struct store_repo *ret)
{
    const uint8_t *p = v->mv_data;

    if (v->mv_size < REPO_PATH + 2 || p[v->mv_size - 1] != '\0')
        return store_error(-EBADMSG, "repos row %" PRIu32 " is malformed", id);
    *ret = (struct store_repo){
        .id = id,
        .path = (const char *)p + REPO_PATH,
        .n_files = u64_get(p + REPO_N_FILES),
        .n_chunks = u64_get(p + REPO_N_CHUNKS),
        .n_vectors = u64_get(p + REPO_N_VECTORS),
        .n_lex_docs = u64_get(p + REPO_N_LEX_DOCS),
        .sum_doc_len = u64_get(p + REPO_SUM_DOC_LEN),
        .created_ns = (int64_t)u64_get(p + REPO_CREATED_NS),
        .indexed_ns = (int64_t)u64_get(p + REPO_INDEXED_NS),
    };
    return 0;
}

int repo_row_copy(struct store_txn *t, uint32_t id, uint8_t *row, size_t *ret_len)
{
    uint8_t key[4];
    MDB_val v;
    int r;

    be32_put(key, id);
    r = txn_get(t, TABLE_REPOS, key, sizeof(key), &v);
    if (r == -ENOENT)
        return store_error(-ENOENT, "no repository with id %" PRIu32, id);
    if (r < 0)
        return r;
    if (v.mv_size < REPO_PATH + 2 || v.mv_size > REPO_ROW_MAX)
        return store_error(-EBADMSG, "repos row %" PRIu32 " is malformed", id);
    memcpy(row, v.mv_data, v.mv_size);
    *ret_len = v.mv_size;
    return 0;
}

static int repo_row_put(struct store_txn *t, uint32_t id, const uint8_t *row, size_t len)
{
    uint8_t key[4];

    be32_put(key, id);
    return txn_put(t, TABLE_REPOS, key, sizeof(key), row, len, 0);
}

int repo_exists(struct store_txn *t, uint32_t repo)
{
    uint8_t key[4];
    MDB_val v;
    int r;

    be32_put(key, repo);
    r = txn_get(t, TABLE_REPOS, key, sizeof(key), &v);
    if (r == -ENOENT)
        return store_error(-ENOENT, "no repository with id %" PRIu32, repo);
    return r;
}

static int counter_add(uint8_t *row, size_t off, int64_t delta)
{
    uint64_t v = u64_get(row + off);

    if (delta < 0 && (uint64_t)-delta > v)
        return store_error(-EUCLEAN, "repository counter at offset %zu would go negative", off);
    u64_put(row + off, v + (uint64_t)delta);
    return 0;
}

int repo_apply_delta(struct store_txn *t, uint32_t repo, const struct repo_delta *d)
{
    uint8_t row[REPO_ROW_MAX];
    size_t len;
    int r;

    if (!d->files && !d->chunks && !d->vectors && !d->lex_docs && !d->sum_doc_len)
        return 0;
    r = repo_row_copy(t, repo, row, &len);
    if (r < 0)
        return r;
    if ((r = counter_add(row, REPO_N_FILES, d->files)) < 0 ||
        (r = counter_add(row, REPO_N_CHUNKS, d->chunks)) < 0 ||
        (r = counter_add(row, REPO_N_VECTORS, d->vectors)) < 0 ||
        (r = counter_add(row, REPO_N_LEX_DOCS, d->lex_docs)) < 0 ||
        (r = counter_add(row, REPO_SUM_DOC_LEN, d->sum_doc_len)) < 0)
        return r;
    return repo_row_put(t, repo, row, len);
}

static int repo_find(struct store_txn *t, const char *path, size_t len, uint32_t *ret_id)
{
    MDB_val v;
    int r;

    r = txn_get(t, TABLE_REPO_PATHS, path, len, &v);
    if (r < 0)
        return r;
    if (v.mv_size != sizeof(uint32_t))
        return store_error(-EBADMSG, "repo_paths row for %s is malformed", path);
    *ret_id = u32_get(v.mv_data);
    return 0;
}

int store_repo_find(struct store_txn *t, const char *path, uint32_t *ret_id)
{
    size_t len;
    int r;

    r = repo_path_check(path, &len);
    if (r < 0)
        return r;
    return repo_find(t, path, len, ret_id);
}

static int repo_create(struct store_txn *t, const char *path, size_t len, uint32_t *ret_id)
{
    uint8_t row[REPO_ROW_MAX] = {0}, key[4], idv[4];
    uint64_t id;
    int r;

    r = meta_counter_next(t, STORE_META_NEXT_REPO_ID, STORE_MAX_REPO_ID, &id);
    if (r < 0)
        return r;
    u64_put(row + REPO_NEXT_SEQ, 1);
    u64_put(row + REPO_CREATED_NS, (uint64_t)store_now_ns());
    memcpy(row + REPO_PATH, path, len + 1);
    be32_put(key, (uint32_t)id);
    r = txn_put(t, TABLE_REPOS, key, sizeof(key), row, REPO_PATH + len + 1, MDB_NOOVERWRITE);
    if (r < 0)
        return r == -EEXIST ? store_error(-EUCLEAN, "repo id %" PRIu64 " is already used", id) : r;
    u32_put(idv, (uint32_t)id);
    r = txn_put(t, TABLE_REPO_PATHS, path, len, idv, sizeof(idv), 0);
    if (r < 0)
        return r;
    *ret_id = (uint32_t)id;
    return 0;
}

int store_repo_get_or_create(struct store_txn *t, const char *path, uint32_t *ret_id)
{
    uint32_t id;
    size_t len, mark;
    int r;

    r = repo_path_check(path, &len);
    if (r < 0)
        return r;
    r = txn_op_begin(t, &mark);
    if (r < 0)
        return r;
    r = repo_find(t, path, len, &id);
    if (r >= 0) {
        *ret_id = id;
        return 0;
    }
    if (r != -ENOENT)
        return r;
    r = txn_op_end(t, mark, repo_create(t, path, len, &id));
    if (r < 0)
        return r;
    *ret_id = id;
    return 1;
}

int store_repo_get(struct store_txn *t, uint32_t id, struct store_repo *ret)
{
    uint8_t key[4];
    MDB_val v;
    int r;

    be32_put(key, id);
    r = txn_get(t, TABLE_REPOS, key, sizeof(key), &v);
    if (r < 0)
        return r;
    return repo_decode(id, &v, ret);
}

int store_repo_set_indexed(struct store_txn *t, uint32_t id, int64_t indexed_ns)
{
    uint8_t row[REPO_ROW_MAX];
    size_t len, mark;
    int r;

    r = txn_op_begin(t, &mark);
    if (r < 0)
        return r;
    r = repo_row_copy(t, id, row, &len);
    if (r < 0)
        return r;
    u64_put(row + REPO_INDEXED_NS, (uint64_t)indexed_ns);
    return txn_op_end(t, mark, repo_row_put(t, id, row, len));
}

/* Collect the ids of the jobs of `repo` (a cursor must not live across the deletes). */
static int repo_jobs(struct store_txn *t, uint32_t repo, uint8_t **ret_keys, size_t *ret_n)
{
    _cleanup_free_ uint8_t *keys = NULL;
    size_t n = 0, cap = 0;
    MDB_cursor *c;
    MDB_val k, v;
    int rc, r;

    r = txn_cursor(t, TABLE_JOBS, &c);
    if (r < 0)
        return r;
    for (rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        if (k.mv_size != 8 || v.mv_size < JOB_CURSOR)
            continue;
        if (u32_get((const uint8_t *)v.mv_data + JOB_REPO_ID) != repo)
            continue;
        if (array_grow((void **)&keys, &cap, (n + 1) * 8, 1) < 0) {
            mdb_cursor_close(c);
            return store_error(-ENOMEM, "out of memory");
        }
        memcpy(keys + n * 8, k.mv_data, 8);
        n++;
    }
    mdb_cursor_close(c);
    if (rc != MDB_NOTFOUND)
        return store_mdb_error(rc, "jobs");
    *ret_keys = TAKE_PTR(keys);
    *ret_n = n;
    return 0;
}

/* Every table keyed by repo or chunk id holds the repo's rows in one key range. */
static int repo_remove(struct store_txn *t, uint32_t id)
{
    uint8_t row[REPO_ROW_MAX], lo4[4], hi4[4], lo8[8], hi8[8];
    static const enum store_table by_chunk[] = {TABLE_CHUNKS, TABLE_VECTORS, TABLE_LEXDOCS};
    uint8_t *jobs = NULL;
    size_t len, n_jobs = 0;
    int r;

    r = repo_row_copy(t, id, row, &len);
    if (r < 0)
        return r;
    be32_put(lo4, id);
    be32_put(hi4, id + 1);
    be64_put(lo8, (uint64_t)id << STORE_CHUNK_SEQ_BITS);
    be64_put(hi8, (uint64_t)(id + 1) << STORE_CHUNK_SEQ_BITS);
    r = txn_del_range(t, TABLE_FILES, lo4, 4, hi4, 4, NULL);
    if (r < 0)
        return r;
    r = txn_del_range(t, TABLE_POSTINGS, lo4, 4, hi4, 4, NULL);
    if (r < 0)
        return r;
    for (size_t i = 0; i < ELEMENTSOF(by_chunk); i++) {
        r = txn_del_range(t, by_chunk[i], lo8, 8, hi8, 8, NULL);
        if (r < 0)
            return r;
    }
    r = repo_jobs(t, id, &jobs, &n_jobs);
    if (r < 0)
        return r;
    for (size_t i = 0; i < n_jobs && r >= 0; i++)
        r = txn_del(t, TABLE_JOBS, jobs + i * 8, 8, NULL, 0);
    free(jobs);
    if (r < 0)
        return r;
    r = txn_del(t, TABLE_REPOS, lo4, 4, NULL, 0);
    if (r < 0)
        return r;
    {
        char key[STORE_MAX_KEY + 1];
        size_t klen = staged_key(key, id);

        r = txn_del(t, TABLE_META, key, klen, NULL, 0);
        if (r < 0 && r != -ENOENT)
            return r;
    }
    r = txn_del(t, TABLE_REPO_PATHS, row + REPO_PATH, len - REPO_PATH - 1, NULL, 0);
    if (r == -ENOENT)
        return store_error(-EUCLEAN, "repository %" PRIu32 " has no path entry", id);
    return r;
}

int store_repo_remove(struct store_txn *t, uint32_t id)
{
    size_t mark;
    int r;

    r = txn_op_begin(t, &mark);
    if (r < 0)
        return r;
    if (id == 0 || id > STORE_MAX_REPO_ID)
        return store_error(-ENOENT, "no repository with id %" PRIu32, id);
    return txn_op_end(t, mark, repo_remove(t, id));
}

int store_repo_foreach(struct store_txn *t, store_repo_fn fn, void *userdata)
{
    struct store_repo repo;
    MDB_cursor *c;
    MDB_val k, v;
    int rc, r;

    r = txn_cursor(t, TABLE_REPOS, &c);
    if (r < 0)
        return r;
    t->iterating++;
    for (rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        if (k.mv_size != 4) {
            r = store_error(-EBADMSG, "repos key of %zu bytes", k.mv_size);
            break;
        }
        r = repo_decode(be32_get(k.mv_data), &v, &repo);
        if (r < 0)
            break;
        r = fn(userdata, &repo);
        if (r != 0)
            break;
    }
    t->iterating--;
    mdb_cursor_close(c);
    if (r == 0 && rc != MDB_NOTFOUND)
        r = store_mdb_error(rc, "repos");
    return r;
}

/* ---- files ----------------------------------------------------------------------------- */

static int file_decode(const MDB_val *v, const char *path, struct store_file *ret)
{
    const uint8_t *p = v->mv_data;

    if (v->mv_size != FILE_ROW_SIZE)
        return store_error(-EBADMSG, "files row for %s has %zu bytes", path, v->mv_size);
    ret->path = path;
    memcpy(ret->hash, p + FILE_HASH, STORE_HASH_SIZE);
    ret->mtime_ns = (int64_t)u64_get(p + FILE_MTIME_NS);
    ret->size = u64_get(p + FILE_SIZE);
    ret->first_chunk = u64_get(p + FILE_FIRST_CHUNK);
    ret->n_chunks = u32_get(p + FILE_N_CHUNKS);
    return 0;
}

/* A range [first, first + n) must lie inside one repository's sequence space. */
static int chunk_range_check(uint32_t repo, uint64_t first, uint32_t n)
{
    uint64_t seq = first & ((1ull << STORE_CHUNK_SEQ_BITS) - 1);

    if (n == 0)
        return 0;
    if (STORE_CHUNK_REPO(first) != repo || seq == 0 ||
        seq + n - 1 >= (1ull << STORE_CHUNK_SEQ_BITS))
        return store_error(-EINVAL,
                           "chunk range %#" PRIx64 "+%" PRIu32 " is not in repository %" PRIu32,
                           first, n, repo);
    return 0;
}

/* Delete the chunks of [first, first + n) that are not in [keep, keep + keep_n). */
static int chunks_delete_except(struct store_txn *t, uint64_t first, uint32_t n, uint64_t keep,
                                uint32_t keep_n)
{
    uint64_t end = first + n, keep_end = keep + keep_n;
    int r;

    if (keep_n == 0 || keep_end <= first || keep >= end)
        return chunk_delete_range(t, first, n, NULL);
    if (keep > first) {
        r = chunk_delete_range(t, first, (uint32_t)(keep - first), NULL);
        if (r < 0)
            return r;
    }
    if (keep_end < end)
        return chunk_delete_range(t, keep_end, (uint32_t)(end - keep_end), NULL);
    return 0;
}

static int file_put(struct store_txn *t, uint32_t repo, const struct store_file *f,
                    const uint8_t *key, size_t klen)
{
    uint8_t row[FILE_ROW_SIZE] = {0};
    struct store_file old = {0};
    bool existed;
    MDB_val v;
    int r;

    r = repo_exists(t, repo);
    if (r < 0)
        return r;
    r = txn_get(t, TABLE_FILES, key, klen, &v);
    if (r < 0 && r != -ENOENT)
        return r;
    existed = r >= 0;
    if (existed) {
        r = file_decode(&v, f->path, &old);
        if (r < 0)
            return r;
    }
    memcpy(row + FILE_HASH, f->hash, STORE_HASH_SIZE);
    u64_put(row + FILE_MTIME_NS, (uint64_t)f->mtime_ns);
    u64_put(row + FILE_SIZE, f->size);
    u64_put(row + FILE_FIRST_CHUNK, f->n_chunks ? f->first_chunk : 0);
    u32_put(row + FILE_N_CHUNKS, f->n_chunks);
    r = txn_put(t, TABLE_FILES, key, klen, row, sizeof(row), 0);
    if (r < 0)
        return r;
    if (!existed)
        return repo_apply_delta(t, repo, &(struct repo_delta){.files = 1});
    if (old.n_chunks == 0 || (old.first_chunk == f->first_chunk && old.n_chunks == f->n_chunks))
        return 0;
    return chunks_delete_except(t, old.first_chunk, old.n_chunks, f->first_chunk, f->n_chunks);
}

int store_file_put(struct store_txn *t, uint32_t repo, const struct store_file *f)
{
    uint8_t key[FILE_KEY_MAX];
    size_t klen, mark;
    int r;

    r = file_key(repo, f->path, key, &klen);
    if (r < 0)
        return r;
    r = chunk_range_check(repo, f->first_chunk, f->n_chunks);
    if (r < 0)
        return r;
    r = txn_op_begin(t, &mark);
    if (r < 0)
        return r;
    return txn_op_end(t, mark, file_put(t, repo, f, key, klen));
}

int store_file_get(struct store_txn *t, uint32_t repo, const char *path, struct store_file *ret)
{
    uint8_t key[FILE_KEY_MAX];
    struct store_file f;
    size_t klen;
    MDB_val v;
    int r;

    r = file_key(repo, path, key, &klen);
    if (r < 0)
        return r;
    r = txn_get(t, TABLE_FILES, key, klen, &v);
    if (r < 0)
        return r;
    r = file_decode(&v, path, &f);
    if (r < 0)
        return r;
    *ret = f;
    return 0;
}

static int file_delete(struct store_txn *t, uint32_t repo, const char *path, const uint8_t *key,
                       size_t klen)
{
    struct store_file old = {0};
    MDB_val v;
    int r;

    r = txn_get(t, TABLE_FILES, key, klen, &v);
    if (r < 0)
        return r;
    r = file_decode(&v, path, &old);
    if (r < 0)
        return r;
    r = txn_del(t, TABLE_FILES, key, klen, NULL, 0);
    if (r < 0)
        return r;
    r = repo_apply_delta(t, repo, &(struct repo_delta){.files = -1});
    if (r < 0)
        return r;
    if (old.n_chunks == 0)
        return 0;
    return chunk_delete_range(t, old.first_chunk, old.n_chunks, NULL);
}

int store_file_delete(struct store_txn *t, uint32_t repo, const char *path)
{
    uint8_t key[FILE_KEY_MAX];
    size_t klen, mark;
    int r;

    r = file_key(repo, path, key, &klen);
    if (r < 0)
        return r;
    r = txn_op_begin(t, &mark);
    if (r < 0)
        return r;
    return txn_op_end(t, mark, file_delete(t, repo, path, key, klen));
}

int store_file_foreach(struct store_txn *t, uint32_t repo, const char *from, store_file_fn fn,
                       void *userdata)
{
    uint8_t start[FILE_KEY_MAX];
    char path[STORE_MAX_FILE_PATH + 1];
    struct store_file f;
    size_t slen = 4;
    MDB_cursor *c;
    MDB_val k, v;
    int rc, r;

    if (from && from[0]) {
        r = file_key(repo, from, start, &slen);
        if (r < 0)
            return r;
    } else {
        be32_put(start, repo);
    }
    r = txn_cursor(t, TABLE_FILES, &c);
    if (r < 0)
        return r;
    t->iterating++;
    k = (MDB_val){.mv_size = slen, .mv_data = start};
    for (rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE); rc == 0;
         rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        size_t plen;

        if (k.mv_size < 5 || be32_get(k.mv_data) != repo)
            break;
        /* The key holds the path without NUL: hand the callback a terminated copy. */
        plen = MIN(k.mv_size - 4, sizeof(path) - 1);
        memcpy(path, (const uint8_t *)k.mv_data + 4, plen);
        path[plen] = '\0';
        r = file_decode(&v, path, &f);
        if (r < 0)
            break;
        r = fn(userdata, &f);
        if (r != 0)
            break;
    }
    t->iterating--;
    mdb_cursor_close(c);
    if (r == 0 && rc != 0 && rc != MDB_NOTFOUND)
        r = store_mdb_error(rc, "files");
    return r;
}
