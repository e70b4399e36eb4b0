/*
 * search.c - see search.h.
 */
#include "search.h"

#include "ignore.h"
#include "lexical.h"
#include "macro.h"
#include "store-chunk.h"
#include "store-repo.h"
#include "vector.h"

#include <pthread.h>
#include <string.h>

/* ---- the per-repository cache ----------------------------------------------------------- */

struct repo_cache {
    uint32_t repo;
    int refs;
    bool stale;
    struct vec_set *vs;
    uint32_t *path_of; /* per position: index into paths */
    uint16_t *lang_of; /* per position: index into langs */
    char **paths;
    size_t n_paths, cap_paths;
    char **langs;
    size_t n_langs, cap_langs;
};

struct search_cache {
    pthread_mutex_t lock;
    struct repo_cache **repos;
    size_t n, cap;
    uint64_t epoch; /* bumped by every invalidation */
};

static void repo_cache_free(struct repo_cache *rc)
{
    if (!rc)
        return;
    vec_set_free(rc->vs);
    free(rc->path_of);
    free(rc->lang_of);
    for (size_t i = 0; i < rc->n_paths; i++)
        free(rc->paths[i]);
    free(rc->paths);
    for (size_t i = 0; i < rc->n_langs; i++)
        free(rc->langs[i]);
    free(rc->langs);
    free(rc);
}

struct search_cache *search_cache_new(void)
{
    struct search_cache *c = calloc(1, sizeof(*c));

    if (c)
        pthread_mutex_init(&c->lock, NULL);
    return c;
}

struct search_cache *search_cache_free(struct search_cache *c)
{
    if (!c)
        return NULL;
    for (size_t i = 0; i < c->n; i++)
        repo_cache_free(c->repos[i]);
    free(c->repos);
    pthread_mutex_destroy(&c->lock);
    free(c);
    return NULL;
}

void search_cache_invalidate(struct search_cache *c, uint32_t repo)
{
    size_t keep = 0;

    pthread_mutex_lock(&c->lock);
    c->epoch++;
    for (size_t i = 0; i < c->n; i++) {
        struct repo_cache *rc = c->repos[i];
        if (repo == 0 || rc->repo == repo) {
            rc->stale = true;
            if (rc->refs == 0)
                repo_cache_free(rc);
        } else {
            c->repos[keep++] = rc;
        }
    }
    c->n = keep;
    pthread_mutex_unlock(&c->lock);
}

size_t search_cache_memory(struct search_cache *c)
{
    size_t total = 0;

    pthread_mutex_lock(&c->lock);
    for (size_t i = 0; i < c->n; i++) {
        const struct repo_cache *rc = c->repos[i];
        total += vec_set_memory(rc->vs) +
                 vec_set_count(rc->vs) * (sizeof(*rc->path_of) + sizeof(*rc->lang_of));
    }
    pthread_mutex_unlock(&c->lock);
    return total;
}

struct build_ctx {
    struct repo_cache *rc;
    struct store_txn *t;
    size_t cap;
    int error;
};

static int intern(char ***arr, size_t *n, size_t *cap, const char *s, size_t *ret_index)
{
    /* Chunks arrive in id order, so a file's chunks are consecutive: check the last first. */
    if (*n > 0 && strcmp((*arr)[*n - 1], s) == 0) {
        *ret_index = *n - 1;
        return 0;
    }
    int r = array_grow((void **)arr, cap, *n + 1, sizeof(char *));
    if (r < 0)
        return r;
    (*arr)[*n] = strdup(s);
    if (!(*arr)[*n])
        return -ENOMEM;
    *ret_index = (*n)++;
    return 0;
}

static int lang_index(struct repo_cache *rc, const char *lang, size_t *ret)
{
    for (size_t i = 0; i < rc->n_langs; i++)
        if (strcmp(rc->langs[i], lang) == 0) {
            *ret = i;
            return 0;
        }
    if (rc->n_langs >= UINT16_MAX)
        return -E2BIG;
    return intern(&rc->langs, &rc->n_langs, &rc->cap_langs, lang, ret);
}

static int on_vector(void *userdata, uint64_t id, const float *v, uint32_t dim)
{
    struct build_ctx *b = userdata;
    struct repo_cache *rc = b->rc;
    struct store_chunk ch;
    size_t pi, li, pos = vec_set_count(rc->vs);
    int r;

    if (dim != vec_set_dim(rc->vs))
        return 0; /* a vector of another model: not comparable, skip */
    r = store_chunk_get(b->t, id, &ch);
    if (r == -ENOENT)
        return 0;
    if (r < 0)
        return r;
    if (pos >= b->cap) {
        size_t ncap = b->cap ? b->cap * 2 : 1024;
        uint32_t *po = array_realloc(rc->path_of, ncap, sizeof(*po));
        if (!po)
            return -ENOMEM;
        rc->path_of = po;
        uint16_t *lo = array_realloc(rc->lang_of, ncap, sizeof(*lo));
        if (!lo)
            return -ENOMEM;
        rc->lang_of = lo;
        b->cap = ncap;
    }
    r = intern(&rc->paths, &rc->n_paths, &rc->cap_paths, ch.path, &pi);
    if (r < 0)
        return r;
    r = lang_index(rc, ch.language ? ch.language : "", &li);
    if (r < 0)
        return r;
    r = vec_set_add(rc->vs, id, v);
    if (r < 0)
        return r;
    rc->path_of[pos] = (uint32_t)pi;
    rc->lang_of[pos] = (uint16_t)li;
    return 0;
}

static int repo_cache_build(struct store_txn *t, uint32_t repo, uint32_t dim,
                            struct repo_cache **ret)
{
    struct repo_cache *rc = calloc(1, sizeof(*rc));
    struct build_ctx b = {.rc = rc, .t = t};
    int r;

    if (!rc)
        return -ENOMEM;
    rc->repo = repo;
    rc->vs = vec_set_new(dim);
    if (!rc->vs) {
        repo_cache_free(rc);
        return -ENOMEM;
    }
    r = store_vector_foreach(t, repo, on_vector, &b);
    if (r < 0) {
        repo_cache_free(rc);
        return r;
    }
    *ret = rc;
    return 0;
}

/* Take a reference on the cached set of `repo`, building it from `t` if needed. */
static int cache_get(struct search_cache *c, struct store_txn *t, uint32_t repo, uint32_t dim,
                     struct repo_cache **ret)
{
    struct repo_cache *rc = NULL;
    uint64_t epoch;
    int r;

    pthread_mutex_lock(&c->lock);
    for (size_t i = 0; i < c->n; i++)
        if (c->repos[i]->repo == repo && vec_set_dim(c->repos[i]->vs) == dim) {
            rc = c->repos[i];
            rc->refs++;
            break;
        }
    epoch = c->epoch;
    pthread_mutex_unlock(&c->lock);
    if (rc) {
        *ret = rc;
        return 0;
    }

    r = repo_cache_build(t, repo, dim, &rc);
    if (r < 0)
        return r;
    rc->refs = 1;
    pthread_mutex_lock(&c->lock);
    /* Publish only if nothing was invalidated while we built from our snapshot. */
    if (c->epoch == epoch &&
        array_grow((void **)&c->repos, &c->cap, c->n + 1, sizeof(*c->repos)) == 0)
        c->repos[c->n++] = rc;
    else
        rc->stale = true;
    pthread_mutex_unlock(&c->lock);
    *ret = rc;
    return 0;
}

static void cache_put(struct search_cache *c, struct repo_cache *rc)
{
    bool drop;

    pthread_mutex_lock(&c->lock);
    drop = --rc->refs == 0 && rc->stale;
    pthread_mutex_unlock(&c->lock);
    if (drop)
        repo_cache_free(rc);
}

/* ---- filters ---------------------------------------------------------------------------- */

bool search_path_matches(const char *glob, const char *path)
{
    if (!strchr(glob, '/')) {
        const char *base = strrchr(path, '/');
        return ignore_wildmatch(glob, base ? base + 1 : path, true);
    }
    /* A leading "./" or "/" means the repository root. */
    if (glob[0] == '.' && glob[1] == '/')
        glob += 2;
    while (glob[0] == '/')
        glob++;
    /* "src/" or "src" as a directory prefix is what people mean by a path filter. */
    size_t gl = strlen(glob);
    if (gl > 0 && glob[gl - 1] == '/')
        return strncmp(path, glob, gl) == 0;
    return ignore_wildmatch(glob, path, true) || (strncmp(path, glob, gl) == 0 && path[gl] == '/');
}

struct filter_ctx {
    const struct search_request *req;
    const struct repo_cache *rc;
    int lang;         /* index into rc->langs, -1: no language filter, -2: language absent */
    uint8_t *path_ok; /* per rc->paths: 0 unknown, 1 yes, 2 no */
};

static bool keep_pos(struct filter_ctx *f, size_t pos)
{
    if (f->lang == -2)
        return false;
    if (f->lang >= 0 && f->rc->lang_of[pos] != (uint16_t)f->lang)
        return false;
    if (f->req->path_glob) {
        uint32_t p = f->rc->path_of[pos];
        if (!f->path_ok[p])
            f->path_ok[p] = search_path_matches(f->req->path_glob, f->rc->paths[p]) ? 1 : 2;
        return f->path_ok[p] == 1;
    }
    return true;
}

static int filter_init(struct filter_ctx *f, const struct search_request *req,
                       const struct repo_cache *rc)
{
    *f = (struct filter_ctx){.req = req, .rc = rc, .lang = -1};
    if (req->language) {
        f->lang = -2;
        for (size_t i = 0; i < rc->n_langs; i++)
            if (strcmp(rc->langs[i], req->language) == 0)
                f->lang = (int)i;
    }
    if (req->path_glob) {
        f->path_ok = calloc(MAX(rc->n_paths, (size_t)1), 1);
        if (!f->path_ok)
            return -ENOMEM;
    }
    return 0;
}

static bool filtering(const struct search_request *req)
{
    return req->path_glob || req->language;
}

/* Position of chunk `id` in the cache (ids are in ascending order), or -1. */
static ssize_t cache_pos(const struct repo_cache *rc, uint64_t id)
{
    size_t lo = 0, hi = vec_set_count(rc->vs);

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        uint64_t m = vec_set_id(rc->vs, mid);
        if (m == id)
            return (ssize_t)mid;
        if (m < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return -1;
}

/* ---- semantic --------------------------------------------------------------------------- */

struct lookup_ctx {
    struct filter_ctx *filter;
    struct store_txn *t;
    float *bufs;
    size_t used, cap;
    uint32_t dim;
};

static const float *lookup_cb(void *userdata, uint64_t id)
{
    struct lookup_ctx *l = userdata;
    float *slot;
    uint32_t dim;

    if (l->used >= l->cap)
        return NULL;
    slot = l->bufs + l->used * l->dim;
    if (store_vector_get(l->t, id, slot, l->dim, &dim) < 0 || dim != l->dim)
        return NULL;
    l->used++;
    return slot;
}

static bool keep_via_lookup(void *userdata, uint64_t id, size_t index)
{
    struct lookup_ctx *l = userdata;
    return !l->filter || keep_pos(l->filter, index);
}

static int semantic_repo(struct store_txn *t, const struct repo_cache *rc,
                         const struct search_request *req, struct filter_ctx *f, size_t depth,
                         struct topk *out)
{
    struct lookup_ctx l = {.filter = filtering(req) ? f : NULL, .t = t, .dim = req->dim};
    int r;

    l.cap = depth * VEC_RERANK_FACTOR;
    l.bufs = array_alloc(l.cap, (size_t)req->dim * sizeof(float));
    if (!l.bufs)
        return -ENOMEM;
    r = vec_set_search(rc->vs, req->query_vec, depth, keep_via_lookup, lookup_cb, &l, out);
    free(l.bufs);
    return r;
}

/* ---- lexical ---------------------------------------------------------------------------- */

struct acc {
    uint64_t *ids;
    double *scores;
    size_t cap, n;
};

static int acc_add(struct acc *a, uint64_t id, double s)
{
    size_t j;

    if ((a->n + 1) * 2 > a->cap) {
        size_t ncap = a->cap ? a->cap * 2 : 4096;
        uint64_t *ni = calloc(ncap, sizeof(*ni));
        double *ns = calloc(ncap, sizeof(*ns));
        if (!ni || !ns) {
            free(ni);
            free(ns);
            return -ENOMEM;
        }
        for (size_t i = 0; i < a->cap; i++) {
            if (!a->ids[i])
                continue;
            j = (a->ids[i] * 0x9E3779B97F4A7C15ULL >> 20) & (ncap - 1);
            while (ni[j])
                j = (j + 1) & (ncap - 1);
            ni[j] = a->ids[i];
            ns[j] = a->scores[i];
        }
        free(a->ids);
        free(a->scores);
        a->ids = ni;
        a->scores = ns;
        a->cap = ncap;
    }
    /* Chunk ids are never 0 (the repo part is at least 1), so 0 marks an empty slot. */
    j = (id * 0x9E3779B97F4A7C15ULL >> 20) & (a->cap - 1);
    while (a->ids[j] && a->ids[j] != id)
        j = (j + 1) & (a->cap - 1);
    if (!a->ids[j]) {
        a->ids[j] = id;
        a->n++;
    }
    a->scores[j] += s;
    return 0;
}

struct qterms {
    char **terms;
    size_t n, cap;
};

static int add_qterm(void *userdata, const char *term, size_t len)
{
    struct qterms *q = userdata;

    for (size_t i = 0; i < q->n; i++)
        if (strcmp(q->terms[i], term) == 0)
            return 0;
    if (array_grow((void **)&q->terms, &q->cap, q->n + 1, sizeof(char *)) < 0)
        return -ENOMEM;
    q->terms[q->n] = strndup(term, len);
    return q->terms[q->n++] ? 0 : -ENOMEM;
}

struct posting_ctx {
    struct acc *acc;
    double idf, avgdl;
};

static int on_postings(void *userdata, const struct store_posting *p, size_t n)
{
    struct posting_ctx *pc = userdata;
    struct bm25_params bp = BM25_DEFAULTS;

    for (size_t i = 0; i < n; i++) {
        int r = acc_add(pc->acc, p[i].chunk_id,
                        bm25_term_score(&bp, pc->idf, p[i].tf, p[i].doc_len, pc->avgdl));
        if (r < 0)
            return r;
    }
    return 0;
}

static int lexical_repo(struct store_txn *t, const struct store_repo *repo, const struct qterms *q,
                        const struct repo_cache *rc, struct filter_ctx *f, struct topk *out)
{
    struct acc a = {0};
    double avgdl = repo->n_lex_docs ? (double)repo->sum_doc_len / (double)repo->n_lex_docs : 1;
    int r = 0;

    for (size_t i = 0; i < q->n; i++) {
        uint64_t df = 0;
        r = store_postings_df(t, repo->id, q->terms[i], &df);
        if (r < 0)
            goto out;
        if (df == 0)
            continue;
        struct posting_ctx pc = {.acc = &a, .idf = bm25_idf(repo->n_lex_docs, df), .avgdl = avgdl};
        r = store_postings_foreach(t, repo->id, q->terms[i], on_postings, &pc);
        if (r < 0)
            goto out;
    }
    for (size_t i = 0; i < a.cap; i++) {
        if (!a.ids[i])
            continue;
        if (rc && filtering(f->req)) {
            ssize_t pos = cache_pos(rc, a.ids[i]);
            if (pos < 0 || !keep_pos(f, (size_t)pos))
                continue;
        }
        topk_push(out, a.ids[i], a.scores[i]);
    }
    r = 0;
out:
    free(a.ids);
    free(a.scores);
    return r;
}

/* ---- the search ------------------------------------------------------------------------- */

int search_mode_from_string(const char *s, enum search_mode *ret)
{
    if (strcmp(s, "hybrid") == 0)
        *ret = SEARCH_MODE_HYBRID;
    else if (strcmp(s, "semantic") == 0)
        *ret = SEARCH_MODE_SEMANTIC;
    else if (strcmp(s, "lexical") == 0)
        *ret = SEARCH_MODE_LEXICAL;
    else
        return -EINVAL;
    return 0;
}

const char *search_mode_to_string(enum search_mode mode)
{
    switch (mode) {
    case SEARCH_MODE_HYBRID:
        return "hybrid";
    case SEARCH_MODE_SEMANTIC:
        return "semantic";
    case SEARCH_MODE_LEXICAL:
        return "lexical";
    }
    return "?";
}

void search_hits_free(struct search_hit *hits, size_t n)
{
    if (!hits)
        return;
    for (size_t i = 0; i < n; i++) {
        free(hits[i].repo_path);
        free(hits[i].path);
        free(hits[i].symbol);
        free(hits[i].language);
    }
    free(hits);
}

struct repo_ids {
    uint32_t *ids;
    size_t n, cap;
};

static int on_repo(void *userdata, const struct store_repo *repo)
{
    struct repo_ids *r = userdata;

    if (array_grow((void **)&r->ids, &r->cap, r->n + 1, sizeof(*r->ids)) < 0)
        return -ENOMEM;
    r->ids[r->n++] = repo->id;
    return 0;
}

static int first_vector(void *userdata, uint64_t id, const float *v, uint32_t dim)
{
    *(uint32_t *)userdata = dim;
    return 1; /* stop: one is enough */
}

/* The dimension of the repository's vectors (for lexical searches that only filter). */
static uint32_t search_any_dim(struct store_txn *t, uint32_t repo)
{
    uint32_t dim = 0;

    store_vector_foreach(t, repo, first_vector, &dim);
    return dim ? dim : 1;
}

/* Search one repository, pushing into the semantic and lexical candidate lists. */
static int search_repo(struct store_txn *t, struct search_cache *cache,
                       const struct search_request *req, uint32_t repo_id, const struct qterms *q,
                       struct topk *sem, struct topk *lex)
{
    bool want_sem = req->mode != SEARCH_MODE_LEXICAL;
    bool want_lex = req->mode != SEARCH_MODE_SEMANTIC;
    struct repo_cache *rc = NULL;
    struct filter_ctx f = {0};
    struct store_repo repo;
    int r;

    r = store_repo_get(t, repo_id, &repo);
    if (r < 0)
        return r;
    if (want_sem || filtering(req)) {
        uint32_t dim = req->query_vec ? req->dim : 0;
        if (!dim)
            dim = search_any_dim(t, repo_id);
        r = cache_get(cache, t, repo_id, dim, &rc);
        if (r < 0)
            return r;
        r = filter_init(&f, req, rc);
        if (r < 0)
            goto out;
    }
    if (want_sem && vec_set_count(rc->vs) > 0) {
        r = semantic_repo(t, rc, req, &f, sem->k, sem);
        if (r < 0)
            goto out;
    }
    if (want_lex) {
        f.req = req;
        r = lexical_repo(t, &repo, q, rc, &f, lex);
        if (r < 0)
            goto out;
    }
    r = 0;
out:
    free(f.path_ok);
    if (rc)
        cache_put(cache, rc);
    return r;
}

int search_run(struct store *store, struct search_cache *cache, const struct search_request *req,
               struct search_hit **ret)
{
    struct repo_ids repos = {0};
    struct qterms q = {0};
    struct topk sem = {0}, lex = {0};
    struct ranked *fused = NULL;
    struct search_hit *hits = NULL;
    struct store_txn *t = NULL;
    size_t depth, n_fused = 0, n_hits = 0;
    int r;

    if (!req->query || req->k == 0 || req->k > SEARCH_MAX_K)
        return -EINVAL;
    if (req->mode != SEARCH_MODE_LEXICAL && (!req->query_vec || req->dim == 0))
        return -EINVAL;
    depth = MAX(req->k, (size_t)(req->mode == SEARCH_MODE_HYBRID ? SEARCH_FUSE_DEPTH : 0));

    r = lexical_terms(req->query, strlen(req->query), add_qterm, &q);
    if (r < 0)
        goto out;
    r = store_read_begin(store, &t);
    if (r < 0)
        goto out;
    if (req->repo) {
        r = on_repo(&repos, &(struct store_repo){.id = req->repo});
        if (r >= 0 && store_repo_get(t, req->repo, &(struct store_repo){0}) < 0)
            r = -ENOENT;
    } else {
        r = store_repo_foreach(t, on_repo, &repos);
    }
    if (r < 0)
        goto out;
    r = topk_init(&sem, depth);
    if (r >= 0)
        r = topk_init(&lex, depth);
    if (r < 0)
        goto out;
    for (size_t i = 0; i < repos.n; i++) {
        r = search_repo(t, cache, req, repos.ids[i], &q, &sem, &lex);
        if (r < 0)
            goto out;
    }
    topk_finish(&sem);
    topk_finish(&lex);

    switch (req->mode) {
    case SEARCH_MODE_SEMANTIC:
    case SEARCH_MODE_LEXICAL: {
        const struct topk *src = req->mode == SEARCH_MODE_SEMANTIC ? &sem : &lex;
        n_fused = MIN(src->n, req->k);
        fused = array_alloc(MAX(n_fused, (size_t)1), sizeof(*fused));
        if (!fused) {
            r = -ENOMEM;
            goto out;
        }
        memcpy(fused, src->items, n_fused * sizeof(*fused));
        break;
    }
    case SEARCH_MODE_HYBRID: {
        const struct ranked *lists[] = {sem.items, lex.items};
        size_t lens[] = {sem.n, lex.n};
        r = rrf_fuse(lists, lens, NULL, 2, 60.0, req->k, &fused);
        if (r < 0)
            goto out;
        n_fused = (size_t)r;
        break;
    }
    }

    hits = calloc(MAX(n_fused, (size_t)1), sizeof(*hits));
    if (!hits) {
        r = -ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < n_fused; i++) {
        struct search_hit *h = &hits[n_hits];
        struct store_chunk ch;
        struct store_repo repo;

        r = store_chunk_get(t, fused[i].id, &ch);
        if (r == -ENOENT)
            continue;
        if (r < 0)
            goto out;
        r = store_repo_get(t, STORE_CHUNK_REPO(fused[i].id), &repo);
        if (r < 0)
            goto out;
        *h = (struct search_hit){
            .chunk_id = fused[i].id,
            .repo = repo.id,
            .start_line = ch.start_line,
            .end_line = ch.end_line,
            .score = fused[i].score,
            .text_offset = ch.text_offset,
            .text_len = ch.text_len,
        };
        for (size_t j = 0; j < sem.n; j++)
            if (sem.items[j].id == fused[i].id) {
                h->semantic = sem.items[j].score;
                h->semantic_rank = (int)j + 1;
                break;
            }
        for (size_t j = 0; j < lex.n; j++)
            if (lex.items[j].id == fused[i].id) {
                h->lexical = lex.items[j].score;
                h->lexical_rank = (int)j + 1;
                break;
            }
        n_hits++;
        h->repo_path = strdup(repo.path);
        h->path = strdup(ch.path);
        h->symbol = strdup(ch.symbol ? ch.symbol : "");
        h->language = strdup(ch.language ? ch.language : "");
        if (!h->repo_path || !h->path || !h->symbol || !h->language) {
            r = -ENOMEM;
            goto out;
        }
    }
    *ret = TAKE_PTR(hits);
    r = (int)n_hits;
out:
    store_read_end(t);
    search_hits_free(hits, n_hits);
    free(fused);
    topk_release(&sem);
    topk_release(&lex);
    for (size_t i = 0; i < q.n; i++)
        free(q.terms[i]);
    free(q.terms);
    free(repos.ids);
    return r;
}
