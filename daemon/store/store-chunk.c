/*
 * store-chunk.c - the chunks, vectors, lexdocs and postings tables (layouts in schema.h).
 */
#include "store-chunk.h"
#include "store-int.h"

#include "macro.h"

#include <inttypes.h>
#include <stdio.h>

#define SEQ_MASK ((1ull << STORE_CHUNK_SEQ_BITS) - 1)
#define TERM_KEY_MAX (4 + STORE_MAX_TERM)

static int chunk_id_check(uint64_t id)
{
    uint32_t repo = STORE_CHUNK_REPO(id);

    if (repo == 0 || repo > STORE_MAX_REPO_ID || (id & SEQ_MASK) == 0)
        return store_error(-EINVAL, "invalid chunk id %#" PRIx64, id);
    return 0;
}

int store_chunk_ids_alloc(struct store_txn *t, uint32_t repo, uint32_t n, uint64_t *ret_first)
{
    uint8_t key[4], row[REPO_ROW_MAX];
    uint64_t seq;
    size_t mark, len;
    int r;

    if (n == 0)
        return store_error(-EINVAL, "allocation of 0 chunk ids");
    r = txn_op_begin(t, &mark);
    if (r < 0)
        return r;
    r = repo_row_copy(t, repo, row, &len);
    if (r < 0)
        return r;
    seq = u64_get(row + REPO_NEXT_SEQ);
    if (seq == 0 || seq + n - 1 > SEQ_MASK)
        return store_error(-EOVERFLOW, "repository %" PRIu32 " has no chunk ids left", repo);
    u64_put(row + REPO_NEXT_SEQ, seq + n);
    be32_put(key, repo);
    r = txn_op_end(t, mark, txn_put(t, TABLE_REPOS, key, sizeof(key), row, len, 0));
    if (r < 0)
        return r;
    *ret_first = (uint64_t)repo << STORE_CHUNK_SEQ_BITS | seq;
    return 0;
}

/* ---- staged ranges --------------------------------------------------------------------- */

#define STAGED_FIRST 0
#define STAGED_N 8
#define STAGED_SIZE 12

size_t staged_key(char key[STORE_MAX_KEY + 1], uint32_t repo)
{
    return (size_t)snprintf(key, STORE_MAX_KEY + 1, STORE_META_STAGED_PREFIX "%" PRIu32, repo);
}

int store_chunk_staged(struct store_txn *t, uint32_t repo, uint64_t *ret_first, uint32_t *ret_n)
{
    char key[STORE_MAX_KEY + 1];
    size_t klen = staged_key(key, repo);
    MDB_val v;
    int r;

    r = txn_get(t, TABLE_META, key, klen, &v);
    if (r < 0)
        return r;
    if (v.mv_size != STAGED_SIZE)
        return store_error(-EBADMSG, "meta %s has %zu bytes, expected %d", key, v.mv_size,
                           STAGED_SIZE);
    *ret_first = u64_get((const uint8_t *)v.mv_data + STAGED_FIRST);
    *ret_n = u32_get((const uint8_t *)v.mv_data + STAGED_N);
    return 0;
}

/* Hide the staged range of `repo` from a walk: [*lo, *hi), empty when none is staged. */
static int staged_bounds(struct store_txn *t, uint32_t repo, uint64_t *lo, uint64_t *hi)
{
    uint64_t first;
    uint32_t n;
    int r;

    *lo = *hi = 0;
    r = store_chunk_staged(t, repo, &first, &n);
    if (r == -ENOENT)
        return 0;
    if (r < 0)
        return r;
    *lo = first;
    *hi = first + n;
    return 0;
}

int store_chunk_stage(struct store_txn *t, uint32_t repo, uint64_t first, uint32_t n)
{
    char key[STORE_MAX_KEY + 1];
    size_t klen = staged_key(key, repo), mark;
    uint8_t val[STAGED_SIZE];
    uint64_t cur_first;
    uint32_t cur_n;
    int r;

    r = txn_op_begin(t, &mark);
    if (r < 0)
        return r;
    if (n == 0 || chunk_id_check(first) < 0 || STORE_CHUNK_REPO(first) != repo ||
        STORE_CHUNK_REPO(first + n - 1) != repo)
        return store_error(-EINVAL,
                           "chunk range %#" PRIx64 "+%" PRIu32 " is not in repository %" PRIu32,
                           first, n, repo);
    r = store_chunk_staged(t, repo, &cur_first, &cur_n);
    if (r == 0) {
        if (cur_first == first && cur_n == n)
            return 0;
        return store_error(-EBUSY, "repository %" PRIu32 " already has chunks staged", repo);
    }
    if (r != -ENOENT)
        return r;
    u64_put(val + STAGED_FIRST, first);
    u32_put(val + STAGED_N, n);
    return txn_op_end(t, mark, txn_put(t, TABLE_META, key, klen, val, sizeof(val), 0));
}

/* Hand ids [first, first + n) back to the allocator of their repository if they are the last
 * it gave out. */
static int ids_give_back(struct store_txn *t, uint64_t first, uint32_t n)
{
    uint32_t repo = STORE_CHUNK_REPO(first);
    uint8_t key[4], row[REPO_ROW_MAX];
    size_t len;
    int r;

    r = repo_row_copy(t, repo, row, &len);
    if (r < 0)
        return r;
    if (u64_get(row + REPO_NEXT_SEQ) != (first & SEQ_MASK) + n)
        return 0;
    u64_put(row + REPO_NEXT_SEQ, first & SEQ_MASK);
    be32_put(key, repo);
    return txn_put(t, TABLE_REPOS, key, sizeof(key), row, len, 0);
}

int store_chunk_unstage(struct store_txn *t, uint32_t repo, bool drop)
{
    char key[STORE_MAX_KEY + 1];
    size_t klen = staged_key(key, repo), mark;
    uint64_t first;
    uint32_t n;
    int r;

    r = txn_op_begin(t, &mark);
    if (r < 0)
        return r;
    r = store_chunk_staged(t, repo, &first, &n);
    if (r < 0)
        return r;
    if (drop) {
        r = chunk_delete_range(t, first, n, NULL);
        if (r >= 0)
            r = ids_give_back(t, first, n);
        if (r < 0)
            return txn_op_end(t, mark, r);
    }
    return txn_op_end(t, mark, txn_del(t, TABLE_META, key, klen, NULL, 0));
}

/* ---- chunks ---------------------------------------------------------------------------- */

static int string_check(const char *s, size_t min, size_t max, const char *what, size_t *ret_len)
{
    size_t n = s ? strlen(s) : 0;

    if (n < min || n > max)
        return store_error(n > max ? -ENAMETOOLONG : -EINVAL, "chunk %s must be %zu..%zu bytes",
                           what, min, max);
    *ret_len = n;
    return 0;
}

int store_chunk_put(struct store_txn *t, const struct store_chunk *c)
{
    size_t plen, llen, slen, len, mark;
    uint8_t key[8], *p;
    bool unit;
    int r;

    r = chunk_id_check(c->id);
    if (r < 0)
        return r;
    if ((r = string_check(c->path, 1, STORE_MAX_FILE_PATH, "path", &plen)) < 0 ||
        (r = string_check(c->language, 0, STORE_MAX_LANGUAGE, "language", &llen)) < 0 ||
        (r = string_check(c->symbol, 0, STORE_MAX_SYMBOL, "symbol", &slen)) < 0)
        return r;
    if (c->start_line == 0 || c->end_line < c->start_line)
        return store_error(-EINVAL, "chunk lines %" PRIu32 "-%" PRIu32 " are not a 1-based range",
                           c->start_line, c->end_line);
    unit = c->unit_start_line || c->unit_end_line || c->unit_offset || c->unit_len;
    if (unit && (c->unit_start_line < c->start_line || c->unit_end_line > c->end_line ||
                 c->unit_end_line < c->unit_start_line || c->unit_offset < c->text_offset ||
                 c->unit_offset + c->unit_len > c->text_offset + c->text_len))
        return store_error(-EINVAL,
                           "chunk unit %" PRIu32 "-%" PRIu32
                           " is not inside its definition %" PRIu32 "-%" PRIu32,
                           c->unit_start_line, c->unit_end_line, c->start_line, c->end_line);
    r = txn_op_begin(t, &mark);
    if (r < 0)
        return r;
    r = repo_exists(t, STORE_CHUNK_REPO(c->id));
    if (r < 0)
        return r;

    len = CHUNK_STRINGS + plen + 1 + llen + 1 + slen + 1 + (unit ? CHUNK_UNIT_SIZE : 0);
    r = txn_buf(t, len);
    if (r < 0)
        return store_error(r, "out of memory");
    p = t->buf;
    memset(p, 0, CHUNK_STRINGS);
    memcpy(p + CHUNK_HASH, c->hash, STORE_HASH_SIZE);
    u64_put(p + CHUNK_TEXT_OFFSET, c->text_offset);
    u32_put(p + CHUNK_TEXT_LEN, c->text_len);
    u32_put(p + CHUNK_START_LINE, c->start_line);
    u32_put(p + CHUNK_END_LINE, c->end_line);
    u16_put(p + CHUNK_PATH_LEN, (uint16_t)plen);
    u16_put(p + CHUNK_LANG_LEN, (uint16_t)llen);
    u16_put(p + CHUNK_SYMBOL_LEN, (uint16_t)slen);
    u16_put(p + CHUNK_FLAGS, unit ? CHUNK_F_UNIT : 0);
    p += CHUNK_STRINGS;
    memcpy(p, c->path, plen + 1);
    p += plen + 1;
    memcpy(p, llen ? c->language : "", llen + 1);
    p += llen + 1;
    memcpy(p, slen ? c->symbol : "", slen + 1);
    p += slen + 1;
    if (unit) {
        u64_put(p + CHUNK_UNIT_OFFSET, c->unit_offset);
        u32_put(p + CHUNK_UNIT_LEN, c->unit_len);
        u32_put(p + CHUNK_UNIT_START_LINE, c->unit_start_line);
        u32_put(p + CHUNK_UNIT_END_LINE, c->unit_end_line);
    }

    be64_put(key, c->id);
    r = txn_put(t, TABLE_CHUNKS, key, sizeof(key), t->buf, len, MDB_NOOVERWRITE);
    if (r == -EEXIST)
        return txn_op_end(t, mark, txn_put(t, TABLE_CHUNKS, key, sizeof(key), t->buf, len, 0));
    if (r >= 0)
        r = repo_apply_delta(t, STORE_CHUNK_REPO(c->id), &(struct repo_delta){.chunks = 1});
    return txn_op_end(t, mark, r);
}

int store_chunk_get(struct store_txn *t, uint64_t id, struct store_chunk *ret)
{
    const uint8_t *p, *u;
    size_t plen, llen, slen, end;
    uint16_t flags;
    uint8_t key[8];
    MDB_val v;
    int r;

    be64_put(key, id);
    r = txn_get(t, TABLE_CHUNKS, key, sizeof(key), &v);
    if (r < 0)
        return r;
    p = v.mv_data;
    if (v.mv_size < CHUNK_STRINGS + 3)
        goto bad;
    plen = u16_get(p + CHUNK_PATH_LEN);
    llen = u16_get(p + CHUNK_LANG_LEN);
    slen = u16_get(p + CHUNK_SYMBOL_LEN);
    flags = u16_get(p + CHUNK_FLAGS);
    end = CHUNK_STRINGS + plen + 1 + llen + 1 + slen + 1;
    if ((flags & ~CHUNK_F_UNIT) ||
        v.mv_size != end + ((flags & CHUNK_F_UNIT) ? CHUNK_UNIT_SIZE : 0) ||
        p[CHUNK_STRINGS + plen] != '\0' || p[CHUNK_STRINGS + plen + 1 + llen] != '\0' ||
        p[end - 1] != '\0')
        goto bad;
    *ret = (struct store_chunk){
        .id = id,
        .path = (const char *)p + CHUNK_STRINGS,
        .language = (const char *)p + CHUNK_STRINGS + plen + 1,
        .symbol = (const char *)p + CHUNK_STRINGS + plen + 1 + llen + 1,
        .start_line = u32_get(p + CHUNK_START_LINE),
        .end_line = u32_get(p + CHUNK_END_LINE),
        .text_offset = u64_get(p + CHUNK_TEXT_OFFSET),
        .text_len = u32_get(p + CHUNK_TEXT_LEN),
    };
    memcpy(ret->hash, p + CHUNK_HASH, STORE_HASH_SIZE);
    u = p + end;
    if (flags & CHUNK_F_UNIT) {
        ret->unit_offset = u64_get(u + CHUNK_UNIT_OFFSET);
        ret->unit_len = u32_get(u + CHUNK_UNIT_LEN);
        ret->unit_start_line = u32_get(u + CHUNK_UNIT_START_LINE);
        ret->unit_end_line = u32_get(u + CHUNK_UNIT_END_LINE);
    } else {
        ret->unit_offset = ret->text_offset;
        ret->unit_len = ret->text_len;
        ret->unit_start_line = ret->start_line;
        ret->unit_end_line = ret->end_line;
    }
    return 0;
bad:
    return store_error(-EBADMSG, "chunks row %#" PRIx64 " is malformed", id);
}

/* ---- lexical documents and postings ----------------------------------------------------- */

static void term_key(uint8_t key[TERM_KEY_MAX], uint32_t repo, const char *term, size_t len,
                     size_t *ret_len)
{
    be32_put(key, repo);
    memcpy(key + 4, term, len);
    *ret_len = 4 + len;
}

static void posting_encode(uint8_t item[POSTING_SIZE], uint64_t id, uint32_t tf, uint32_t dl)
{
    be64_put(item + POSTING_CHUNK_ID, id);
    u32_put(item + POSTING_TF, tf);
    u32_put(item + POSTING_DOC_LEN, dl);
}

/*
 * Remove the lexical document of `id` and each of its postings.  Adds to *d.  -ENOENT when
 * the chunk has no document.  The row is copied first because the deletes may remap.
 */
static int postings_remove(struct store_txn *t, uint64_t id, struct repo_delta *d)
{
    uint32_t repo = STORE_CHUNK_REPO(id), dl, n_terms;
    uint8_t key[8];
    const uint8_t *p, *end;
    MDB_val v;
    int r;

    be64_put(key, id);
    r = txn_get(t, TABLE_LEXDOCS, key, sizeof(key), &v);
    if (r < 0)
        return r;
    if (v.mv_size < LEXDOC_TERMS)
        return store_error(-EBADMSG, "lexdocs row %#" PRIx64 " is malformed", id);
    r = txn_aux(t, v.mv_size);
    if (r < 0)
        return store_error(r, "out of memory");
    memcpy(t->aux, v.mv_data, v.mv_size);
    p = t->aux;
    end = p + v.mv_size;
    dl = u32_get(p + LEXDOC_DOC_LEN);
    n_terms = u32_get(p + LEXDOC_N_TERMS);
    p += LEXDOC_TERMS;
    for (uint32_t i = 0; i < n_terms; i++) {
        uint8_t tkey[TERM_KEY_MAX], item[POSTING_SIZE];
        size_t tlen, klen;
        uint32_t tf;

        if (end - p < 5 || (size_t)(end - p) < 5 + (size_t)p[4])
            return store_error(-EBADMSG, "lexdocs row %#" PRIx64 " is truncated", id);
        tf = u32_get(p);
        tlen = p[4];
        term_key(tkey, repo, (const char *)p + 5, tlen, &klen);
        posting_encode(item, id, tf, dl);
        p += 5 + tlen;
        /* A missing posting means an earlier bug, not a reason to keep stale ones. */
        r = txn_del(t, TABLE_POSTINGS, tkey, klen, item, sizeof(item));
        if (r < 0 && r != -ENOENT)
            return r;
    }
    r = txn_del(t, TABLE_LEXDOCS, key, sizeof(key), NULL, 0);
    if (r < 0)
        return r;
    d->lex_docs -= 1;
    d->sum_doc_len -= dl;
    return 0;
}

static int terms_check(const struct store_term *terms, size_t n, size_t *ret_size)
{
    size_t size = LEXDOC_TERMS;

    if (n > UINT32_MAX)
        return store_error(-E2BIG, "too many terms");
    for (size_t i = 0; i < n; i++) {
        size_t len = terms[i].term ? strlen(terms[i].term) : 0;

        if (len == 0 || len > STORE_MAX_TERM)
            return store_error(-EINVAL, "term %zu must be 1..%d bytes", i, STORE_MAX_TERM);
        if (terms[i].tf == 0)
            return store_error(-EINVAL, "term \"%s\" has tf 0", terms[i].term);
        if (i > 0 && strcmp(terms[i - 1].term, terms[i].term) >= 0)
            return store_error(-EINVAL, "terms not strictly ascending at \"%s\"", terms[i].term);
        size += 5 + len;
    }
    *ret_size = size;
    return 0;
}

static int postings_add(struct store_txn *t, uint64_t id, uint32_t doc_len,
                        const struct store_term *terms, size_t n, size_t size)
{
    uint32_t repo = STORE_CHUNK_REPO(id);
    struct repo_delta d = {0};
    uint8_t key[8], *p;
    int r;

    r = repo_exists(t, repo);
    if (r < 0)
        return r;
    r = postings_remove(t, id, &d);
    if (r < 0 && r != -ENOENT)
        return r;

    r = txn_buf(t, size);
    if (r < 0)
        return store_error(r, "out of memory");
    p = t->buf;
    u32_put(p + LEXDOC_DOC_LEN, doc_len);
    u32_put(p + LEXDOC_N_TERMS, (uint32_t)n);
    p += LEXDOC_TERMS;
    for (size_t i = 0; i < n; i++) {
        size_t len = strlen(terms[i].term);

        u32_put(p, terms[i].tf);
        p[4] = (uint8_t)len;
        memcpy(p + 5, terms[i].term, len);
        p += 5 + len;
    }
    be64_put(key, id);
    r = txn_put(t, TABLE_LEXDOCS, key, sizeof(key), t->buf, size, 0);
    if (r < 0)
        return r;
    for (size_t i = 0; i < n; i++) {
        uint8_t tkey[TERM_KEY_MAX], item[POSTING_SIZE];
        size_t klen;

        term_key(tkey, repo, terms[i].term, strlen(terms[i].term), &klen);
        posting_encode(item, id, terms[i].tf, doc_len);
        r = txn_put(t, TABLE_POSTINGS, tkey, klen, item, sizeof(item), 0);
        if (r < 0)
            return r;
    }
    d.lex_docs += 1;
    d.sum_doc_len += doc_len;
    return repo_apply_delta(t, repo, &d);
}

int store_postings_add(struct store_txn *t, uint64_t id, uint32_t doc_len,
                       const struct store_term *terms, size_t n_terms)
{
    size_t size, mark;
    int r;

    r = chunk_id_check(id);
    if (r < 0)
        return r;
    if (n_terms > 0 && !terms)
        return -EINVAL;
    r = terms_check(terms, n_terms, &size);
    if (r < 0)
        return r;
    r = txn_op_begin(t, &mark);
    if (r < 0)
        return r;
    return txn_op_end(t, mark, postings_add(t, id, doc_len, terms, n_terms, size));
}

int store_postings_remove(struct store_txn *t, uint64_t id)
{
    struct repo_delta d = {0};
    size_t mark;
    int r;

    r = chunk_id_check(id);
    if (r < 0)
        return r;
    r = txn_op_begin(t, &mark);
    if (r < 0)
        return r;
    r = postings_remove(t, id, &d);
    if (r >= 0)
        r = repo_apply_delta(t, STORE_CHUNK_REPO(id), &d);
    return txn_op_end(t, mark, r);
}

static int term_key_check(uint32_t repo, const char *term, uint8_t key[TERM_KEY_MAX],
                          size_t *ret_len)
{
    size_t len = term ? strlen(term) : 0;

    if (len == 0 || len > STORE_MAX_TERM)
        return store_error(-EINVAL, "term must be 1..%d bytes", STORE_MAX_TERM);
    term_key(key, repo, term, len, ret_len);
    return 0;
}

int store_postings_df(struct store_txn *t, uint32_t repo, const char *term, uint64_t *ret_df)
{
    uint8_t key[TERM_KEY_MAX];
    MDB_cursor *c;
    MDB_val k, v;
    size_t klen, count = 0;
    int rc, r;

    r = term_key_check(repo, term, key, &klen);
    if (r < 0)
        return r;
    r = txn_cursor(t, TABLE_POSTINGS, &c);
    if (r < 0)
        return r;
    k = (MDB_val){.mv_size = klen, .mv_data = key};
    rc = mdb_cursor_get(c, &k, &v, MDB_SET);
    if (rc == 0)
        rc = mdb_cursor_count(c, &count);
    mdb_cursor_close(c);
    if (rc != 0 && rc != MDB_NOTFOUND)
        return store_mdb_error(rc, "postings");
    *ret_df = rc == 0 ? count : 0;
    return 0;
}

int store_postings_doc_len(struct store_txn *t, uint64_t id, uint32_t *ret_doc_len)
{
    uint8_t key[8];
    MDB_val v;
    int r;

    be64_put(key, id);
    r = txn_get(t, TABLE_LEXDOCS, key, sizeof(key), &v);
    if (r < 0)
        return r;
    if (v.mv_size < LEXDOC_TERMS)
        return store_error(-EBADMSG, "lexdocs row %#" PRIx64 " is malformed", id);
    *ret_doc_len = u32_get((const uint8_t *)v.mv_data + LEXDOC_DOC_LEN);
    return 0;
}

/*
 * DUPFIXED lets MDB_GET_MULTIPLE return a whole leaf page of postings at once (a key with a
 * single posting is stored inline, and then GET_MULTIPLE leaves the value MDB_SET returned).
 */
int store_postings_foreach(struct store_txn *t, uint32_t repo, const char *term,
                           store_posting_fn fn, void *userdata)
{
    _cleanup_free_ struct store_posting *batch = NULL;
    uint64_t hide_lo, hide_hi;
    uint8_t key[TERM_KEY_MAX];
    size_t klen, cap = 0;
    MDB_cursor *c;
    MDB_val k, v;
    int rc, r;

    r = term_key_check(repo, term, key, &klen);
    if (r < 0)
        return r;
    r = staged_bounds(t, repo, &hide_lo, &hide_hi);
    if (r < 0)
        return r;
    r = txn_cursor(t, TABLE_POSTINGS, &c);
    if (r < 0)
        return r;
    t->iterating++;
    k = (MDB_val){.mv_size = klen, .mv_data = key};
    rc = mdb_cursor_get(c, &k, &v, MDB_SET);
    if (rc == 0)
        rc = mdb_cursor_get(c, &k, &v, MDB_GET_MULTIPLE);
    while (rc == 0) {
        size_t n = v.mv_size / POSTING_SIZE;
        const uint8_t *p = v.mv_data;

        if (v.mv_size % POSTING_SIZE != 0) {
            r = store_error(-EBADMSG, "postings of \"%s\" are malformed", term);
            break;
        }
        if (array_grow((void **)&batch, &cap, n, sizeof(*batch)) < 0) {
            r = store_error(-ENOMEM, "out of memory");
            break;
        }
        size_t kept = 0;
        for (size_t i = 0; i < n; i++, p += POSTING_SIZE) {
            uint64_t id = be64_get(p + POSTING_CHUNK_ID);
            if (id >= hide_lo && id < hide_hi)
                continue;
            batch[kept++] = (struct store_posting){
                .chunk_id = id,
                .tf = u32_get(p + POSTING_TF),
                .doc_len = u32_get(p + POSTING_DOC_LEN),
            };
        }
        r = kept ? fn(userdata, batch, kept) : 0;
        if (r != 0)
            break;
        rc = mdb_cursor_get(c, &k, &v, MDB_NEXT_MULTIPLE);
    }
    t->iterating--;
    mdb_cursor_close(c);
    if (r == 0 && rc != 0 && rc != MDB_NOTFOUND)
        r = store_mdb_error(rc, "postings");
    return r;
}

/* ---- vectors --------------------------------------------------------------------------- */

int store_vector_put(struct store_txn *t, uint64_t id, const float *v, uint32_t dim)
{
    size_t len, mark;
    uint8_t key[8];
    int r;

    r = chunk_id_check(id);
    if (r < 0)
        return r;
    if (dim == 0 || dim > STORE_MAX_DIM || !v)
        return store_error(-EINVAL, "vector dimension %" PRIu32 " not in 1..%d", dim,
                           STORE_MAX_DIM);
    r = txn_op_begin(t, &mark);
    if (r < 0)
        return r;
    r = repo_exists(t, STORE_CHUNK_REPO(id));
    if (r < 0)
        return r;
    len = VECTOR_DATA + (size_t)dim * sizeof(float);
    r = txn_buf(t, len);
    if (r < 0)
        return store_error(r, "out of memory");
    u32_put(t->buf + VECTOR_DIM, dim);
    u32_put(t->buf + VECTOR_FORMAT, VECTOR_FORMAT_F32);
    memcpy(t->buf + VECTOR_DATA, v, (size_t)dim * sizeof(float));
    be64_put(key, id);
    /* MDB_APPEND first: see schema.h on why it matters for vectors (it fails with -EEXIST,
     * changing nothing, unless the key is the table's largest). */
    r = txn_put(t, TABLE_VECTORS, key, sizeof(key), t->buf, len, MDB_APPEND);
    if (r == -EEXIST)
        r = txn_put(t, TABLE_VECTORS, key, sizeof(key), t->buf, len, MDB_NOOVERWRITE);
    if (r == -EEXIST)
        return txn_op_end(t, mark, txn_put(t, TABLE_VECTORS, key, sizeof(key), t->buf, len, 0));
    if (r >= 0)
        r = repo_apply_delta(t, STORE_CHUNK_REPO(id), &(struct repo_delta){.vectors = 1});
    return txn_op_end(t, mark, r);
}

static int vector_check(uint64_t id, const MDB_val *v, uint32_t *ret_dim)
{
    const uint8_t *p = v->mv_data;
    uint32_t dim;

    if (v->mv_size < VECTOR_DATA)
        goto bad;
    dim = u32_get(p + VECTOR_DIM);
    if (u32_get(p + VECTOR_FORMAT) != VECTOR_FORMAT_F32 || dim == 0 ||
        v->mv_size != VECTOR_DATA + (size_t)dim * sizeof(float))
        goto bad;
    *ret_dim = dim;
    return 0;
bad:
    return store_error(-EBADMSG, "vectors row %#" PRIx64 " is malformed", id);
}

int store_vector_get(struct store_txn *t, uint64_t id, float *buf, uint32_t cap, uint32_t *ret_dim)
{
    uint8_t key[8];
    uint32_t dim;
    MDB_val v;
    int r;

    be64_put(key, id);
    r = txn_get(t, TABLE_VECTORS, key, sizeof(key), &v);
    if (r < 0)
        return r;
    r = vector_check(id, &v, &dim);
    if (r < 0)
        return r;
    if (cap < dim)
        return store_error(-ENOBUFS, "vector %#" PRIx64 " has %" PRIu32 " dimensions", id, dim);
    memcpy(buf, (const uint8_t *)v.mv_data + VECTOR_DATA, (size_t)dim * sizeof(float));
    *ret_dim = dim;
    return 0;
}

/*
 * LMDB promises values only 2-byte alignment.  Here every vectors node (8-byte node header,
 * 8-byte key, 8-byte row header, 4*dim) is a multiple of 4 and nodes are packed from the page
 * end, and large rows live on overflow pages (page + 16), so rows are in practice 4-byte
 * aligned and handed out in place.  The copy into an aligned buffer is the guard for the day a
 * layout change breaks that, so callers can rely on an aligned `v` regardless.
 */
int store_vector_foreach(struct store_txn *t, uint32_t repo, store_vector_fn fn, void *userdata)
{
    _cleanup_free_ float *copy = NULL;
    uint64_t hide_lo, hide_hi;
    uint8_t lo[8];
    size_t cap = 0;
    MDB_cursor *c;
    MDB_val k, v;
    int rc, r;

    if (repo == 0 || repo > STORE_MAX_REPO_ID)
        return 0;
    r = staged_bounds(t, repo, &hide_lo, &hide_hi);
    if (r < 0)
        return r;
    r = txn_cursor(t, TABLE_VECTORS, &c);
    if (r < 0)
        return r;
    t->iterating++;
    be64_put(lo, (uint64_t)repo << STORE_CHUNK_SEQ_BITS);
    k = (MDB_val){.mv_size = sizeof(lo), .mv_data = lo};
    for (rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE); rc == 0;
         rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        const uint8_t *data;
        const float *vec;
        uint64_t id;
        uint32_t dim;

        if (k.mv_size != 8) {
            r = store_error(-EBADMSG, "vectors key of %zu bytes", k.mv_size);
            break;
        }
        id = be64_get(k.mv_data);
        if (STORE_CHUNK_REPO(id) != repo)
            break;
        if (id >= hide_lo && id < hide_hi)
            continue;
        r = vector_check(id, &v, &dim);
        if (r < 0)
            break;
        data = (const uint8_t *)v.mv_data + VECTOR_DATA;
        if ((uintptr_t)data % _Alignof(float) == 0) {
            vec = (const float *)(const void *)data;
        } else {
            if (array_grow((void **)&copy, &cap, dim, sizeof(float)) < 0) {
                r = store_error(-ENOMEM, "out of memory");
                break;
            }
            memcpy(copy, data, (size_t)dim * sizeof(float));
            vec = copy;
        }
        r = fn(userdata, id, vec, dim);
        if (r != 0)
            break;
    }
    t->iterating--;
    mdb_cursor_close(c);
    if (r == 0 && rc != 0 && rc != MDB_NOTFOUND)
        r = store_mdb_error(rc, "vectors");
    return r;
}

/* ---- deletion -------------------------------------------------------------------------- */

/* Delete the rows of one chunk; adds to *d; *ret_any tells whether any row existed. */
static int chunk_delete_one(struct store_txn *t, uint64_t id, struct repo_delta *d, bool *ret_any)
{
    uint8_t key[8];
    bool any = false;
    int r;

    be64_put(key, id);
    r = txn_del(t, TABLE_CHUNKS, key, sizeof(key), NULL, 0);
    if (r < 0 && r != -ENOENT)
        return r;
    if (r >= 0) {
        d->chunks -= 1;
        any = true;
    }
    r = txn_del(t, TABLE_VECTORS, key, sizeof(key), NULL, 0);
    if (r < 0 && r != -ENOENT)
        return r;
    if (r >= 0) {
        d->vectors -= 1;
        any = true;
    }
    r = postings_remove(t, id, d);
    if (r < 0 && r != -ENOENT)
        return r;
    if (r >= 0)
        any = true;
    *ret_any = any;
    return 0;
}

int chunk_delete_range(struct store_txn *t, uint64_t first, uint32_t n, uint64_t *ret_n)
{
    struct repo_delta d = {0};
    uint64_t deleted = 0;
    int r;

    if (n == 0) {
        if (ret_n)
            *ret_n = 0;
        return 0;
    }
    if (chunk_id_check(first) < 0 || STORE_CHUNK_REPO(first) != STORE_CHUNK_REPO(first + n - 1))
        return store_error(-EINVAL, "chunk range %#" PRIx64 "+%" PRIu32 " is invalid", first, n);
    for (uint64_t id = first; id < first + n; id++) {
        bool any;

        r = chunk_delete_one(t, id, &d, &any);
        if (r < 0)
            return r;
        deleted += any;
    }
    r = repo_apply_delta(t, STORE_CHUNK_REPO(first), &d);
    if (r < 0)
        return r;
    if (ret_n)
        *ret_n = deleted;
    return 0;
}

int store_chunk_delete(struct store_txn *t, uint64_t id)
{
    uint64_t n = 0;
    size_t mark;
    int r;

    r = chunk_id_check(id);
    if (r < 0)
        return r;
    r = txn_op_begin(t, &mark);
    if (r < 0)
        return r;
    r = txn_op_end(t, mark, chunk_delete_range(t, id, 1, &n));
    if (r < 0)
        return r;
    return n ? 0 : -ENOENT;
}

int store_chunk_delete_range(struct store_txn *t, uint64_t first, uint32_t n)
{
    uint64_t deleted = 0;
    size_t mark;
    int r;

    r = txn_op_begin(t, &mark);
    if (r < 0)
        return r;
    r = txn_op_end(t, mark, chunk_delete_range(t, first, n, &deleted));
    if (r < 0)
        return r;
    return (int)MIN(deleted, (uint64_t)INT32_MAX);
}
