/*
 * store-job.c - the jobs table (layout in schema.h).
 */
#include "store-job.h"
#include "store-int.h"

#include <inttypes.h>

int store_job_id_alloc(struct store_txn *t, uint64_t *ret_id)
{
    uint64_t id;
    size_t mark;
    int r;

    r = txn_op_begin(t, &mark);
    if (r < 0)
        return r;
    r = txn_op_end(t, mark, meta_counter_next(t, STORE_META_NEXT_JOB_ID, UINT64_MAX - 1, &id));
    if (r < 0)
        return r;
    *ret_id = id;
    return 0;
}

int store_job_put(struct store_txn *t, const struct store_job *j)
{
    size_t len, mark;
    uint8_t key[8], *p;
    int r;

    if (j->id == 0)
        return store_error(-EINVAL, "job id 0");
    if (j->cursor_len > STORE_MAX_CURSOR || (j->cursor_len > 0 && !j->cursor))
        return store_error(-EINVAL, "job cursor must be 0..%d bytes", STORE_MAX_CURSOR);
    r = txn_op_begin(t, &mark);
    if (r < 0)
        return r;
    if (j->repo_id != 0) {
        r = repo_exists(t, j->repo_id);
        if (r < 0)
            return r;
    }
    len = JOB_CURSOR + j->cursor_len;
    r = txn_buf(t, len);
    if (r < 0)
        return store_error(r, "out of memory");
    p = t->buf;
    u32_put(p + JOB_REPO_ID, j->repo_id);
    u32_put(p + JOB_STATE, j->state);
    u32_put(p + JOB_ERROR, (uint32_t)j->error);
    u32_put(p + JOB_CURSOR_LEN, (uint32_t)j->cursor_len);
    u64_put(p + JOB_CREATED_NS, (uint64_t)j->created_ns);
    u64_put(p + JOB_UPDATED_NS, (uint64_t)j->updated_ns);
    u64_put(p + JOB_FILES_DONE, j->files_done);
    u64_put(p + JOB_FILES_TOTAL, j->files_total);
    u64_put(p + JOB_CHUNKS_DONE, j->chunks_done);
    u64_put(p + JOB_CHUNKS_TOTAL, j->chunks_total);
    if (j->cursor_len)
        memcpy(p + JOB_CURSOR, j->cursor, j->cursor_len);
    be64_put(key, j->id);
    return txn_op_end(t, mark, txn_put(t, TABLE_JOBS, key, sizeof(key), t->buf, len, 0));
}

static int job_decode(uint64_t id, const MDB_val *v, struct store_job *ret)
{
    const uint8_t *p = v->mv_data;
    uint32_t cursor_len;

    if (v->mv_size < JOB_CURSOR)
        goto bad;
    cursor_len = u32_get(p + JOB_CURSOR_LEN);
    if (v->mv_size != JOB_CURSOR + (size_t)cursor_len)
        goto bad;
    *ret = (struct store_job){
        .id = id,
        .repo_id = u32_get(p + JOB_REPO_ID),
        .state = u32_get(p + JOB_STATE),
        .error = (int32_t)u32_get(p + JOB_ERROR),
        .created_ns = (int64_t)u64_get(p + JOB_CREATED_NS),
        .updated_ns = (int64_t)u64_get(p + JOB_UPDATED_NS),
        .files_done = u64_get(p + JOB_FILES_DONE),
        .files_total = u64_get(p + JOB_FILES_TOTAL),
        .chunks_done = u64_get(p + JOB_CHUNKS_DONE),
        .chunks_total = u64_get(p + JOB_CHUNKS_TOTAL),
        .cursor = cursor_len ? p + JOB_CURSOR : NULL,
        .cursor_len = cursor_len,
    };
    return 0;
bad:
    return store_error(-EBADMSG, "jobs row %" PRIu64 " is malformed", id);
}

int store_job_get(struct store_txn *t, uint64_t id, struct store_job *ret)
{
    uint8_t key[8];
    MDB_val v;
    int r;

    be64_put(key, id);
    r = txn_get(t, TABLE_JOBS, key, sizeof(key), &v);
    if (r < 0)
        return r;
    return job_decode(id, &v, ret);
}

int store_job_delete(struct store_txn *t, uint64_t id)
{
    uint8_t key[8];
    size_t mark;
    int r;

    r = txn_op_begin(t, &mark);
    if (r < 0)
        return r;
    be64_put(key, id);
    return txn_op_end(t, mark, txn_del(t, TABLE_JOBS, key, sizeof(key), NULL, 0));
}

int store_job_foreach(struct store_txn *t, store_job_fn fn, void *userdata)
{
    struct store_job job;
    MDB_cursor *c;
    MDB_val k, v;
    int rc, r;

    r = txn_cursor(t, TABLE_JOBS, &c);
    if (r < 0)
        return r;
    t->iterating++;
    for (rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        if (k.mv_size != 8) {
            r = store_error(-EBADMSG, "jobs key of %zu bytes", k.mv_size);
            break;
        }
        r = job_decode(be64_get(k.mv_data), &v, &job);
        if (r < 0)
            break;
        r = fn(userdata, &job);
        if (r != 0)
            break;
    }
    t->iterating--;
    mdb_cursor_close(c);
    if (r == 0 && rc != 0 && rc != MDB_NOTFOUND)
        r = store_mdb_error(rc, "jobs");
    return r;
}
