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

#include <limits.h>
#include <pthread.h>
#include <stdio.h>
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
    /*
     * The path filter's answers per path for the last glob used (0 unknown, 1 match, 2 no),
     * kept because matching every file name against the glob anew cost a filtered search
     * ~10%.  A search takes the array (memo_ok = NULL) under the cache lock and gives it back
     * when done, so concurrent searches never share one.
     */
    char *memo_glob;
    uint8_t *memo_ok;
};

/*
 * Scratch memory of one lexical search: the score accumulator (see "lexical" below).  Its
 * table is several MiB for a query with common terms, and allocating and freeing that per
 * search made the kernel fault in and zero fresh pages every time (a fifth of a lexical
 * search's time), so finished searches return their scratch to a small pool in the cache.
 * Between uses every slot of `slots` is zero; `touched` lists the slots a search filled, so
 * only those are cleared afterwards.
 */
struct acc_slot {
    uint64_t id; /* 0: empty (chunk ids are never 0) */
    double score;
};

struct search_scratch {
    struct acc_slot *slots;
    size_t cap_slots;
    uint32_t *touched;
    size_t cap_touched;
    struct search_scratch *next;
};

#define SEARCH_SCRATCH_POOL 4 /* idle scratches kept; more concurrent searches free theirs */

struct search_cache {
    pthread_mutex_t lock;
    struct repo_cache **repos;
    size_t n, cap;
    uint64_t epoch;              /* bumped by every invalidation */
    struct search_scratch *idle; /* the pool, at most SEARCH_SCRATCH_POOL long */
    size_t n_idle;
};

static size_t scratch_memory(const struct search_scratch *x)
{
    return sizeof(*x) + x->cap_slots * sizeof(*x->slots) + x->cap_touched * sizeof(*x->touched);
}

static void scratch_free(struct search_scratch *x)
{
    if (!x)
        return;
    free(x->slots);
    free(x->touched);
    free(x);
}

static struct search_scratch *scratch_get(struct search_cache *c)
{
    struct search_scratch *x;

    pthread_mutex_lock(&c->lock);
    x = c->idle;
    if (x) {
        c->idle = x->next;
        c->n_idle--;
    }
    pthread_mutex_unlock(&c->lock);
    return x ? x : calloc(1, sizeof(*x));
}

static void scratch_put(struct search_cache *c, struct search_scratch *x)
{
    if (!x)
        return;
    pthread_mutex_lock(&c->lock);
    if (c->n_idle < SEARCH_SCRATCH_POOL) {
        x->next = c->idle;
        c->idle = x;
        c->n_idle++;
        x = NULL;
    }
    pthread_mutex_unlock(&c->lock);
    scratch_free(x);
}

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
    free(rc->memo_glob);
    free(rc->memo_ok);
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
    while (c->idle) {
        struct search_scratch *x = c->idle;
        c->idle = x->next;
        scratch_free(x);
    }
    pthread_mutex_destroy(&c->lock);
    free(c);
    return NULL;
}

void search_cache_invalidate(struct search_cache *c, uint32_t repo)
{
    struct search_scratch *idle = NULL;
    size_t keep = 0;

    pthread_mutex_lock(&c->lock);
    if (repo == 0) {
        /* Everything: the memory governor sheds caches this way, so drop idle scratch too. */
        idle = c->idle;
        c->idle = NULL;
        c->n_idle = 0;
    }
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
    while (idle) {
        struct search_scratch *x = idle;
        idle = x->next;
        scratch_free(x);
    }
}

size_t search_cache_memory(struct search_cache *c)
{
    size_t total = 0;

    pthread_mutex_lock(&c->lock);
    for (size_t i = 0; i < c->n; i++) {
        const struct repo_cache *rc = c->repos[i];
        total += vec_set_memory(rc->vs) +
                 vec_set_count(rc->vs) * (sizeof(*rc->path_of) + sizeof(*rc->lang_of)) +
                 (rc->memo_ok ? rc->n_paths : 0);
    }
    for (const struct search_scratch *x = c->idle; x; x = x->next)
        total += scratch_memory(x);
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
        /* As in .gitignore: the name of the file or of any directory above it ("*.py", "src",
         * "test*"), so a bare directory name keeps everything under it. */
        char name[PATH_MAX];

        for (const char *p = path;;) {
            const char *slash = strchr(p, '/');
            size_t n = slash ? (size_t)(slash - p) : strlen(p);

            if (n < sizeof(name)) {
                memcpy(name, p, n);
                name[n] = '\0';
                if (ignore_wildmatch(glob, name, true))
                    return true;
            }
            if (!slash)
                return false;
            p = slash + 1;
        }
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

static int filter_init(struct filter_ctx *f, struct search_cache *c,
                       const struct search_request *req, struct repo_cache *rc)
{
    *f = (struct filter_ctx){.req = req, .rc = rc, .lang = -1};
    if (req->language) {
        f->lang = -2;
        for (size_t i = 0; i < rc->n_langs; i++)
            if (strcmp(rc->langs[i], req->language) == 0)
                f->lang = (int)i;
    }
    if (req->path_glob) {
        pthread_mutex_lock(&c->lock);
        if (rc->memo_ok && strcmp(rc->memo_glob, req->path_glob) == 0)
            f->path_ok = TAKE_PTR(rc->memo_ok);
        pthread_mutex_unlock(&c->lock);
        if (!f->path_ok)
            f->path_ok = calloc(MAX(rc->n_paths, (size_t)1), 1);
        if (!f->path_ok)
            return -ENOMEM;
    }
    return 0;
}

/* Give the path answers back to rc's memo (replacing another glob's), or free them. */
static void filter_release(struct filter_ctx *f, struct search_cache *c, struct repo_cache *rc)
{
    char *glob = f->path_ok ? strdup(f->req->path_glob) : NULL;

    if (glob) {
        pthread_mutex_lock(&c->lock);
        if (!rc->memo_ok) {
            free(rc->memo_glob);
            rc->memo_glob = TAKE_PTR(glob);
            rc->memo_ok = TAKE_PTR(f->path_ok);
        }
        pthread_mutex_unlock(&c->lock);
    }
    free(glob);
    free(f->path_ok);
    f->path_ok = NULL;
}

static bool filtering(const struct search_request *req)
{
    return req->path_glob || req->language;
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

/*
 * BM25 is term-at-a-time: each query term's postings (in chunk id order) add their score to an
 * accumulator keyed by chunk id.  A query with a common term ("return", "value") reads ~10^5
 * postings, so the accumulator's memory access pattern is most of the cost.  It is an
 * open-addressing table sized once from the terms' document frequencies (no rehash during
 * the search), whose slots are {id, score} pairs (one cache line per probe), and whose hash
 * keeps runs of ACC_RUN consecutive ids in consecutive slots while scattering the runs: a
 * term's postings, which arrive in id order, then walk memory almost sequentially instead of
 * missing the cache once per posting.
 */
#define ACC_RUN_BITS 6
#define ACC_MIN_CAP 4096

struct acc {
    struct search_scratch *x;
    size_t mask; /* capacity in use - 1 (a power of two minus one, <= x->cap_slots - 1) */
    size_t n;    /* filled slots, = entries of x->touched */
};

static size_t acc_home(uint64_t id, size_t mask)
{
    uint64_t run = (id >> ACC_RUN_BITS) * 0x9E3779B97F4A7C15ULL >> 20;

    return (size_t)((run << ACC_RUN_BITS | (id & ((1u << ACC_RUN_BITS) - 1))) & mask);
}

/* Use (and if needed grow) the scratch for about `expect` distinct ids, at most half full. */
static int acc_init(struct acc *a, struct search_scratch *x, uint64_t expect)
{
    size_t cap = ACC_MIN_CAP;

    /* Slot numbers are kept in uint32_t. */
    while (cap / 2 < expect && cap < ((size_t)1 << 32))
        cap *= 2;
    if (x->cap_slots < cap) {
        struct acc_slot *slots = calloc(cap, sizeof(*slots));
        if (!slots)
            return -ENOMEM;
        free(x->slots);
        x->slots = slots;
        x->cap_slots = cap;
    }
    if (x->cap_touched < cap / 2) {
        uint32_t *t = array_realloc(x->touched, cap / 2, sizeof(*t));
        if (!t)
            return -ENOMEM;
        x->touched = t;
        x->cap_touched = cap / 2;
    }
    *a = (struct acc){.x = x, .mask = cap - 1};
    return 0;
}

/* Return the scratch to its all-zero state. */
static void acc_clear(struct acc *a)
{
    for (size_t i = 0; i < a->n; i++)
        a->x->slots[a->x->touched[i]] = (struct acc_slot){0};
    a->n = 0;
}

/* Double the capacity in use (only when df under-counted: the store changed under us). */
static int acc_grow(struct acc *a)
{
    size_t cap = (a->mask + 1) * 2, n = a->n;
    struct acc_slot *old;
    int r;

    if (cap > UINT32_MAX)
        return -ENOMEM;
    old = array_alloc(n, sizeof(*old));
    if (!old)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++)
        old[i] = a->x->slots[a->x->touched[i]];
    acc_clear(a);
    r = acc_init(a, a->x, cap / 2);
    for (size_t i = 0; r >= 0 && i < n; i++) {
        size_t j = acc_home(old[i].id, a->mask);
        while (a->x->slots[j].id)
            j = (j + 1) & a->mask;
        a->x->slots[j] = old[i];
        a->x->touched[a->n++] = (uint32_t)j;
    }
    free(old);
    return r;
}

static int acc_add(struct acc *a, uint64_t id, double s)
{
    struct acc_slot *slots = a->x->slots;
    size_t j = acc_home(id, a->mask);

    while (slots[j].id && slots[j].id != id)
        j = (j + 1) & a->mask;
    if (!slots[j].id) {
        if ((a->n + 1) * 2 > a->mask + 1) {
            int r = acc_grow(a);
            if (r < 0)
                return r;
            return acc_add(a, id, s);
        }
        slots[j].id = id;
        a->x->touched[a->n++] = (uint32_t)j;
    }
    slots[j].score += s;
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
    /* With a filter: the cache, and the position in it of the last posting looked up. */
    const struct repo_cache *rc;
    struct filter_ctx *f;
    size_t pos, n_pos;
};

/*
 * Position of chunk `id` in the cache, searching forward from pc->pos: postings come in id
 * order, as the cache's ids are, so a galloping search from the previous answer costs O(1)
 * per posting for a common term and O(log gap) for a rare one.  false when id is not cached.
 */
static bool posting_pos(struct posting_ctx *pc, uint64_t id, size_t *ret)
{
    const struct vec_set *vs = pc->rc->vs;
    size_t lo = pc->pos, step = 1, hi;

    if (lo >= pc->n_pos)
        return false;
    if (vec_set_id(vs, lo) < id) {
        /* Gallop: find hi with ids[hi] >= id, then binary-search (lo, hi]. */
        while (lo + step < pc->n_pos && vec_set_id(vs, lo + step) < id) {
            lo += step;
            step *= 2;
        }
        hi = MIN(lo + step, pc->n_pos);
        lo++;
        while (lo < hi) {
            size_t mid = lo + (hi - lo) / 2;
            if (vec_set_id(vs, mid) < id)
                lo = mid + 1;
            else
                hi = mid;
        }
    }
    pc->pos = lo;
    if (lo >= pc->n_pos || vec_set_id(vs, lo) != id)
        return false;
    *ret = lo;
    return true;
}

static int on_postings(void *userdata, const struct store_posting *p, size_t n)
{
    struct posting_ctx *pc = userdata;
    struct bm25_params bp = BM25_DEFAULTS;

    for (size_t i = 0; i < n; i++) {
        if (pc->f) {
            /* Filtered out, or not in the cache (so not filterable): never a result. */
            size_t pos;
            if (!posting_pos(pc, p[i].chunk_id, &pos) || !keep_pos(pc->f, pos))
                continue;
        }
        int r = acc_add(pc->acc, p[i].chunk_id,
                        bm25_term_score(&bp, pc->idf, p[i].tf, p[i].doc_len, pc->avgdl));
        if (r < 0)
            return r;
    }
    return 0;
}

static int lexical_repo(struct store_txn *t, struct search_cache *cache,
                        const struct store_repo *repo, const struct qterms *q,
                        const struct repo_cache *rc, struct filter_ctx *f, struct topk *out)
{
    double avgdl = repo->n_lex_docs ? (double)repo->sum_doc_len / (double)repo->n_lex_docs : 1;
    struct search_scratch *x = NULL;
    uint64_t *df = NULL, sum_df = 0;
    struct acc a = {0};
    int r = 0;

    if (q->n == 0)
        return 0;
    df = array_alloc(q->n, sizeof(*df));
    if (!df)
        return -ENOMEM;
    for (size_t i = 0; i < q->n; i++) {
        r = store_postings_df(t, repo->id, q->terms[i], &df[i]);
        if (r < 0)
            goto out;
        sum_df += df[i];
    }
    if (sum_df == 0)
        goto out;
    x = scratch_get(cache);
    if (!x) {
        r = -ENOMEM;
        goto out;
    }
    r = acc_init(&a, x, MIN(sum_df, MAX(repo->n_lex_docs, (uint64_t)1)));
    if (r < 0)
        goto out;
    for (size_t i = 0; i < q->n; i++) {
        if (df[i] == 0)
            continue;
        struct posting_ctx pc = {
            .acc = &a,
            .idf = bm25_idf(repo->n_lex_docs, df[i]) *
                   (q->terms[i][0] == LEXICAL_SYMBOL_PREFIX[0] ? SEARCH_SYMBOL_FIELD_WEIGHT : 1.0),
            .avgdl = avgdl,
        };
        if (rc && filtering(f->req)) {
            pc.rc = rc;
            pc.f = f;
            pc.n_pos = vec_set_count(rc->vs);
        }
        r = store_postings_foreach(t, repo->id, q->terms[i], on_postings, &pc);
        if (r < 0)
            goto out;
    }
    for (size_t i = 0; i < a.n; i++) {
        const struct acc_slot *sl = &x->slots[x->touched[i]];
        topk_push(out, sl->id, sl->score);
    }
    r = 0;
out:
    if (x) {
        acc_clear(&a);
        scratch_put(cache, x);
    }
    free(df);
    return r;
}

/* ---- definitions ----------------------------------------------------------------------- */

/*
 * The units of one definition (chunk.h: a function's pieces and title) each are a chunk, with
 * their own vector and postings, and record the definition's lines.  A definition scores as
 * its best unit: each ranked list is collapsed to one entry per definition, the first (best)
 * of its units, under the id of the definition's first chunk so that the two lists name it
 * alike when they are fused.  A file's chunk ids are consecutive and a definition's units are
 * neighbours, so that first chunk is found by walking down the ids while path and lines stay
 * the same.  (Rows of schema 1 recorded their group instead: the walk collapses groups.)
 */
static int group_first(struct store_txn *t, uint64_t id, uint64_t *ret)
{
    struct store_chunk ch, prev;
    uint64_t first = id;
    int r;

    r = store_chunk_get(t, id, &ch);
    if (r < 0)
        return r;
    while (first > 0 && STORE_CHUNK_REPO(first - 1) == STORE_CHUNK_REPO(id)) {
        r = store_chunk_get(t, first - 1, &prev);
        if (r == -ENOENT)
            break;
        if (r < 0)
            return r;
        if (prev.start_line != ch.start_line || prev.end_line != ch.end_line ||
            strcmp(prev.path, ch.path) != 0)
            break;
        first--;
    }
    *ret = first;
    return 0;
}

/*
 * Collapse the ranked units of `l` (best first) into at most `depth` groups, best first, in
 * place: items[i].id becomes the group's id, and units[i] (l->n entries, caller-allocated) the
 * unit that ranked it.  A unit deleted since it was ranked is dropped.
 */
static int collapse_groups(struct store_txn *t, struct topk *l, size_t depth, uint64_t *units)
{
    size_t n = 0;

    for (size_t i = 0; i < l->n && n < depth; i++) {
        uint64_t group, unit = l->items[i].id;
        bool seen = false;
        int r = group_first(t, unit, &group);

        if (r == -ENOENT)
            continue;
        if (r < 0)
            return r;
        for (size_t j = 0; j < n && !seen; j++)
            seen = l->items[j].id == group;
        if (seen)
            continue;
        l->items[n] = (struct ranked){.id = group, .score = l->items[i].score};
        units[n++] = unit;
    }
    l->n = n;
    return 0;
}

/*
 * The lines a hit reports, from its best unit u and the other list's unit o of the same
 * definition (o = u when only one list ranked it): the definition when it spans at most
 * SEARCH_HIT_MAX_LINES; else the units' lines (o's only when both fit), from the definition's
 * first line when that still fits.
 */
static void hit_range(const struct store_chunk *u, const struct store_chunk *o, uint32_t *ret_a,
                      uint32_t *ret_b)
{
    uint32_t cap = SEARCH_HIT_MAX_LINES, a = u->unit_start_line, b = u->unit_end_line;

    if (u->end_line - u->start_line < cap) {
        *ret_a = u->start_line;
        *ret_b = u->end_line;
        return;
    }
    if (b - a >= cap)
        b = a + cap - 1;
    if (MAX(b, o->unit_end_line) - MIN(a, o->unit_start_line) < cap) {
        a = MIN(a, o->unit_start_line);
        b = MAX(b, o->unit_end_line);
    }
    if (b - u->start_line < cap)
        a = u->start_line;
    *ret_a = a;
    *ret_b = b;
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
        r = filter_init(&f, cache, req, rc);
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
        r = lexical_repo(t, cache, &repo, q, rc, &f, lex);
        if (r < 0)
            goto out;
    }
    r = 0;
out:
    if (rc) {
        filter_release(&f, cache, rc);
        cache_put(cache, rc);
    }
    return r;
}

int search_run(struct store *store, struct search_cache *cache, const struct search_request *req,
               struct search_hit **ret)
{
    struct repo_ids repos = {0};
    struct qterms q = {0};
    struct topk sem = {0}, lex = {0};
    uint64_t *sem_units = NULL, *lex_units = NULL;
    struct ranked *fused = NULL;
    struct search_hit *hits = NULL;
    struct store_txn *t = NULL;
    size_t depth, units, n_fused = 0, n_hits = 0;
    int r;

    if (!req->query || req->k == 0 || req->k > SEARCH_MAX_K)
        return -EINVAL;
    if (req->mode != SEARCH_MODE_LEXICAL && (!req->query_vec || req->dim == 0))
        return -EINVAL;
    depth = MAX(req->k, (size_t)(req->mode == SEARCH_MODE_HYBRID ? SEARCH_FUSE_DEPTH : 0));
    /* Units ranked per list: enough to fill `depth` groups in all but odd cases. */
    units = depth * SEARCH_UNITS_PER_GROUP;

    r = lexical_terms(req->query, strlen(req->query), add_qterm, &q);
    /* Each query term is also looked up in the symbol field (indexer.c, write_postings), at
     * SEARCH_SYMBOL_FIELD_WEIGHT (search.h). */
    for (size_t i = 0, n = q.n; r >= 0 && i < n; i++) {
        char field[LEXICAL_MAX_TERM + sizeof(LEXICAL_SYMBOL_PREFIX)];
        int len = snprintf(field, sizeof(field), "%s%s", LEXICAL_SYMBOL_PREFIX, q.terms[i]);
        r = add_qterm(&q, field, (size_t)len);
    }
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
    r = topk_init(&sem, units);
    if (r >= 0)
        r = topk_init(&lex, units);
    sem_units = array_alloc(units, sizeof(*sem_units));
    lex_units = array_alloc(units, sizeof(*lex_units));
    if (r >= 0 && (!sem_units || !lex_units))
        r = -ENOMEM;
    if (r < 0)
        goto out;
    for (size_t i = 0; i < repos.n; i++) {
        r = search_repo(t, cache, req, repos.ids[i], &q, &sem, &lex);
        if (r < 0)
            goto out;
    }
    topk_finish(&sem);
    topk_finish(&lex);
    r = collapse_groups(t, &sem, depth, sem_units);
    if (r >= 0)
        r = collapse_groups(t, &lex, depth, lex_units);
    if (r < 0)
        goto out;

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
        double w[2] = {
            req->semantic_weight > 0 ? req->semantic_weight : SEARCH_DEFAULT_SEMANTIC_WEIGHT,
            req->lexical_weight > 0 ? req->lexical_weight : SEARCH_DEFAULT_LEXICAL_WEIGHT};
        if (req->rrf_k > 0)
            r = rrf_fuse(lists, lens, w, 2, req->rrf_k, req->k, &fused);
        else
            r = zscore_fuse(lists, lens, w, 2, req->k, &fused);
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
        struct store_chunk ch, och;
        uint64_t other;
        struct store_repo repo;
        uint64_t unit = fused[i].id;
        int sr = 0, lr = 0;

        for (size_t j = 0; j < sem.n; j++)
            if (sem.items[j].id == fused[i].id) {
                sr = (int)j + 1;
                break;
            }
        for (size_t j = 0; j < lex.n; j++)
            if (lex.items[j].id == fused[i].id) {
                lr = (int)j + 1;
                break;
            }
        /* The hit names the unit that ranked its group best (its symbol is shown). */
        if (sr && (!lr || sr <= lr))
            unit = sem_units[sr - 1];
        else if (lr)
            unit = lex_units[lr - 1];
        r = store_chunk_get(t, unit, &ch);
        if (r == -ENOENT)
            continue;
        if (r < 0)
            goto out;
        r = store_repo_get(t, STORE_CHUNK_REPO(unit), &repo);
        if (r < 0)
            goto out;
        /* The other list's unit of the same definition, when it ranked one. */
        other = sr && lr ? (unit == sem_units[sr - 1] ? lex_units[lr - 1] : sem_units[sr - 1]) : 0;
        if (!other || other == unit || store_chunk_get(t, other, &och) < 0)
            och = ch;
        *h = (struct search_hit){
            .chunk_id = unit,
            .repo = repo.id,
            .def_start_line = ch.start_line,
            .def_end_line = ch.end_line,
            .snippet_line = ch.unit_start_line,
            .score = fused[i].score,
            .semantic = sr ? sem.items[sr - 1].score : 0,
            .lexical = lr ? lex.items[lr - 1].score : 0,
            .semantic_rank = sr,
            .lexical_rank = lr,
            .text_offset = ch.unit_offset,
            .text_len = (uint32_t)(ch.text_offset + ch.text_len - ch.unit_offset),
        };
        hit_range(&ch, &och, &h->start_line, &h->end_line);
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
    free(sem_units);
    free(lex_units);
    topk_release(&sem);
    topk_release(&lex);
    for (size_t i = 0; i < q.n; i++)
        free(q.terms[i]);
    free(q.terms);
    free(repos.ids);
    return r;
}
