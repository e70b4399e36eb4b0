/*
 * lexical.c - see lexical.h.
 */
#include "lexical.h"

#include "macro.h"

#include <libstemmer.h>
#include <math.h>
#include <pthread.h>
#include <string.h>

static const char *const stop_words[] = {
    "a",  "an",   "and",  "are",  "as",    "at",   "be",   "by",   "for",   "from",  "if",
    "in", "into", "is",   "it",   "its",   "of",   "on",   "or",   "that",  "the",   "this",
    "to", "was",  "will", "with", "which", "when", "than", "then", "there", "these", "those",
};

static bool is_stop_word(const char *t, size_t len)
{
    for (size_t i = 0; i < ELEMENTSOF(stop_words); i++)
        if (strlen(stop_words[i]) == len && memcmp(stop_words[i], t, len) == 0)
            return true;
    return false;
}

static bool is_word_byte(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c >= 0x80;
}

static bool is_upper(unsigned char c)
{
    return c >= 'A' && c <= 'Z';
}

static bool is_lower(unsigned char c)
{
    return c >= 'a' && c <= 'z';
}

static bool is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

/*
 * Stemming.  People ask "parsing the arguments" of parse_args and "closes the connection" of
 * close(): English words of queries and code meet on their Snowball (Porter 2) stem.  Only
 * words of letters are stemmed; identifiers with digits or '_' (the whole "max_frame_size")
 * keep their spelling, so exact-name queries still match exactly.  A Snowball stemmer keeps
 * state between calls, so each thread has its own, freed when the thread exits.
 */
static pthread_key_t stem_key;
static pthread_once_t stem_once = PTHREAD_ONCE_INIT;
static int stem_key_error;

static void stem_free(void *p)
{
    sb_stemmer_delete(p);
}

static void stem_key_init(void)
{
    stem_key_error = pthread_key_create(&stem_key, stem_free);
}

static struct sb_stemmer *thread_stemmer(void)
{
    struct sb_stemmer *st;

    if (pthread_once(&stem_once, stem_key_init) != 0 || stem_key_error)
        return NULL;
    st = pthread_getspecific(stem_key);
    if (!st) {
        st = sb_stemmer_new("english", NULL);
        if (st && pthread_setspecific(stem_key, st) != 0) {
            sb_stemmer_delete(st);
            st = NULL;
        }
    }
    return st;
}

void lexical_thread_release(void)
{
    struct sb_stemmer *st;

    if (pthread_once(&stem_once, stem_key_init) != 0 || stem_key_error)
        return;
    st = pthread_getspecific(stem_key);
    if (st) {
        (void)pthread_setspecific(stem_key, NULL);
        sb_stemmer_delete(st);
    }
}

static bool all_letters(const char *t, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (!is_lower((unsigned char)t[i]))
            return false;
    return true;
}

/* Lowercase, drop stop words, stem words (fold plurals of the rest), then hand to fn. */
static int emit(const char *s, size_t len, lexical_term_fn fn, void *userdata)
{
    char t[LEXICAL_MAX_TERM + 1];

    if (len < 2 || len > LEXICAL_MAX_TERM)
        return 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        t[i] = is_upper(c) ? (char)(c | 32) : (char)c;
    }
    t[len] = '\0';
    if (is_stop_word(t, len))
        return 0;
    if (all_letters(t, len)) {
        struct sb_stemmer *st = thread_stemmer();
        const sb_symbol *stem;
        int n;

        if (!st)
            return -ENOMEM;
        stem = sb_stemmer_stem(st, (const sb_symbol *)t, (int)len);
        if (!stem)
            return -ENOMEM;
        n = sb_stemmer_length(st);
        if (n >= 2 && (size_t)n <= len) {
            memcpy(t, stem, (size_t)n);
            len = (size_t)n;
        }
    } else if (len > 4 && memcmp(t + len - 3, "ies", 3) == 0) {
        /* Plural folding, deliberately conservative: "entries" -> "entry", "files" -> "file";
         * words ending in "ss", "us", "is" ("class", "status", "this") keep their s. */
        t[len - 3] = 'y';
        len -= 2;
    } else if (len > 3 && t[len - 1] == 's' && t[len - 2] != 's' && t[len - 2] != 'u' &&
               t[len - 2] != 'i' && !is_digit((unsigned char)t[len - 2])) {
        len--;
    }
    t[len] = '\0';
    return fn(userdata, t, len);
}

/*
 * Split one word (letters, digits, '_' and non-ASCII bytes) into parts at '_' and at case
 * changes: "HTTPServer" -> "HTTP", "Server"; "v2Parser" -> "v2", "Parser".
 */
static int emit_word(const char *w, size_t len, lexical_term_fn fn, void *userdata)
{
    size_t start = 0, parts = 0;
    int r;

    /* The whole identifier first, so exact-name queries match best. */
    r = emit(w, len, fn, userdata);
    if (r < 0)
        return r;

    for (size_t i = 0; i <= len; i++) {
        bool cut = false;
        size_t next_start = i;

        if (i == len || w[i] == '_') {
            cut = true;
            next_start = i + 1;
        } else if (i > start) {
            unsigned char prev = (unsigned char)w[i - 1], c = (unsigned char)w[i];
            if (is_lower(prev) && is_upper(c))
                cut = true; /* fooBar */
            else if (is_upper(prev) && is_upper(c) && i + 1 < len &&
                     is_lower((unsigned char)w[i + 1]))
                cut = true; /* HTTPServer: cut before 'S' */
        }
        if (!cut)
            continue;
        if (i > start) {
            size_t plen = i - start;
            /* Skip emitting the part when it is the whole word (already emitted). */
            if (!(start == 0 && plen == len)) {
                r = emit(w + start, plen, fn, userdata);
                if (r < 0)
                    return r;
            }
            parts++;
        }
        start = next_start;
    }
    (void)parts;
    return 0;
}

int lexical_terms(const char *text, size_t len, lexical_term_fn fn, void *userdata)
{
    size_t i = 0;

    while (i < len) {
        size_t start;
        int r;

        while (i < len && !is_word_byte((unsigned char)text[i]))
            i++;
        start = i;
        while (i < len && is_word_byte((unsigned char)text[i]))
            i++;
        if (i > start) {
            r = emit_word(text + start, i - start, fn, userdata);
            if (r < 0)
                return r;
        }
    }
    return 0;
}

/* ---- term counting: a small open-addressing hash table ---------------------------------- */

struct counter {
    struct lexical_tf *slots;
    size_t cap, n;
    uint32_t total;
};

static uint64_t hash_bytes(const char *s, size_t len)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ULL;
    }
    return h;
}

static int counter_rehash(struct counter *c)
{
    size_t ncap = c->cap ? c->cap * 2 : 64;
    struct lexical_tf *ns = calloc(ncap, sizeof(*ns));

    if (!ns)
        return -ENOMEM;
    for (size_t i = 0; i < c->cap; i++) {
        if (!c->slots[i].term)
            continue;
        size_t j = hash_bytes(c->slots[i].term, strlen(c->slots[i].term)) & (ncap - 1);
        while (ns[j].term)
            j = (j + 1) & (ncap - 1);
        ns[j] = c->slots[i];
    }
    free(c->slots);
    c->slots = ns;
    c->cap = ncap;
    return 0;
}

static int count_one(void *userdata, const char *term, size_t len)
{
    struct counter *c = userdata;
    size_t j;

    if ((c->n + 1) * 2 > c->cap && counter_rehash(c) < 0)
        return -ENOMEM;
    j = hash_bytes(term, len) & (c->cap - 1);
    while (c->slots[j].term) {
        if (strcmp(c->slots[j].term, term) == 0) {
            c->slots[j].tf++;
            c->total++;
            return 0;
        }
        j = (j + 1) & (c->cap - 1);
    }
    c->slots[j].term = strndup(term, len);
    if (!c->slots[j].term)
        return -ENOMEM;
    c->slots[j].tf = 1;
    c->n++;
    c->total++;
    return 0;
}

static int cmp_tf(const void *a, const void *b)
{
    return strcmp(((const struct lexical_tf *)a)->term, ((const struct lexical_tf *)b)->term);
}

void lexical_tf_free(struct lexical_tf *tfs, size_t n)
{
    if (!tfs)
        return;
    for (size_t i = 0; i < n; i++)
        free(tfs[i].term);
    free(tfs);
}

int lexical_count_terms(const char *text, size_t len, struct lexical_tf **ret, size_t *ret_n,
                        uint32_t *ret_total)
{
    struct counter c = {0};
    size_t k = 0;
    int r;

    r = lexical_terms(text, len, count_one, &c);
    if (r < 0) {
        for (size_t i = 0; i < c.cap; i++)
            free(c.slots[i].term);
        free(c.slots);
        return r;
    }
    /* Compact the table in place into a dense, sorted array. */
    for (size_t i = 0; i < c.cap; i++)
        if (c.slots[i].term)
            c.slots[k++] = c.slots[i];
    if (k > 1)
        qsort(c.slots, k, sizeof(*c.slots), cmp_tf);
    *ret = c.slots; /* may be NULL for an empty text */
    *ret_n = k;
    *ret_total = c.total;
    return 0;
}

/* ---- BM25 ------------------------------------------------------------------------------- */

double bm25_idf(uint64_t n_docs, uint64_t df)
{
    if (df > n_docs)
        df = n_docs;
    return log(1.0 + ((double)(n_docs - df) + 0.5) / ((double)df + 0.5));
}

double bm25_term_score(const struct bm25_params *p, double idf, uint32_t tf, uint32_t doc_len,
                       double avg_doc_len)
{
    double norm = avg_doc_len > 0 ? (double)doc_len / avg_doc_len : 1.0;

    return idf * ((double)tf * (p->k1 + 1.0)) / ((double)tf + p->k1 * (1.0 - p->b + p->b * norm));
}

/* ---- top-k ------------------------------------------------------------------------------ */

/* "a is worse than b": lower score, or equal score and larger id. The heap root is the worst. */
static bool worse(const struct ranked *a, const struct ranked *b)
{
    return a->score < b->score || (a->score == b->score && a->id > b->id);
}

int topk_init(struct topk *t, size_t k)
{
    *t = (struct topk){.k = k};
    if (k == 0)
        return 0;
    t->items = array_alloc(k, sizeof(*t->items));
    return t->items ? 0 : -ENOMEM;
}

void topk_release(struct topk *t)
{
    free(t->items);
    *t = (struct topk){0};
}

static void sift_down(struct ranked *h, size_t n, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < n && worse(&h[l], &h[m]))
            m = l;
        if (r < n && worse(&h[r], &h[m]))
            m = r;
        if (m == i)
            return;
        struct ranked tmp = h[i];
        h[i] = h[m];
        h[m] = tmp;
        i = m;
    }
}

void topk_push(struct topk *t, uint64_t id, double score)
{
    struct ranked x = {.id = id, .score = score};

    if (t->k == 0)
        return;
    if (t->n < t->k) {
        size_t i = t->n++;
        t->items[i] = x;
        while (i > 0) {
            size_t parent = (i - 1) / 2;
            if (!worse(&t->items[i], &t->items[parent]))
                break;
            struct ranked tmp = t->items[i];
            t->items[i] = t->items[parent];
            t->items[parent] = tmp;
            i = parent;
        }
        return;
    }
    if (!worse(&t->items[0], &x))
        return;
    t->items[0] = x;
    sift_down(t->items, t->n, 0);
}

static int cmp_best_first(const void *a, const void *b)
{
    const struct ranked *x = a, *y = b;

    if (worse(y, x))
        return -1;
    if (worse(x, y))
        return 1;
    return 0;
}

size_t topk_finish(struct topk *t)
{
    if (t->n > 1)
        qsort(t->items, t->n, sizeof(*t->items), cmp_best_first);
    return t->n;
}

/* ---- reciprocal rank fusion ------------------------------------------------------------- */

static int cmp_id(const void *a, const void *b)
{
    const struct ranked *x = a, *y = b;
    return x->id < y->id ? -1 : x->id > y->id;
}

int rrf_fuse(const struct ranked *const *lists, const size_t *lens, const double *weights,
             size_t n_lists, double rrf_k, size_t k, struct ranked **ret)
{
    size_t total = 0, n = 0;
    struct ranked *all;
    struct topk best;
    int r;

    for (size_t l = 0; l < n_lists; l++)
        total += lens[l];
    all = array_alloc(total, sizeof(*all));
    if (!all)
        return -ENOMEM;
    for (size_t l = 0; l < n_lists; l++)
        for (size_t i = 0; i < lens[l]; i++)
            all[n++] = (struct ranked){
                .id = lists[l][i].id,
                .score = (weights ? weights[l] : 1.0) / (rrf_k + (double)(i + 1)),
            };
    /* Sum contributions per id: sort by id, then merge runs. */
    if (n > 1)
        qsort(all, n, sizeof(*all), cmp_id);
    r = topk_init(&best, k);
    if (r < 0) {
        free(all);
        return r;
    }
    for (size_t i = 0; i < n;) {
        size_t j = i;
        double s = 0;
        while (j < n && all[j].id == all[i].id)
            s += all[j++].score;
        topk_push(&best, all[i].id, s);
        i = j;
    }
    free(all);
    *ret = best.items;
    return (int)topk_finish(&best);
}

/* ---- score fusion ----------------------------------------------------------------------- */

int zscore_fuse(const struct ranked *const *lists, const size_t *lens, const double *weights,
                size_t n_lists, size_t k, struct ranked **ret)
{
    size_t total = 0, n = 0;
    double base = 0;
    struct ranked *all;
    struct topk best;
    int r;

    for (size_t l = 0; l < n_lists; l++)
        total += lens[l];
    all = array_alloc(MAX(total, (size_t)1), sizeof(*all));
    if (!all)
        return -ENOMEM;
    for (size_t l = 0; l < n_lists; l++) {
        double w = weights ? weights[l] : 1.0, mean = 0, var = 0, sd, floor;

        if (lens[l] == 0)
            continue;
        for (size_t i = 0; i < lens[l]; i++)
            mean += lists[l][i].score;
        mean /= (double)lens[l];
        for (size_t i = 0; i < lens[l]; i++)
            var += (lists[l][i].score - mean) * (lists[l][i].score - mean);
        sd = sqrt(var / (double)lens[l]);
        /* All scores equal (one entry, say): being in the list is all it says. */
        floor = sd > 0 ? (lists[l][lens[l] - 1].score - mean) / sd : 0;
        base += w * floor;
        for (size_t i = 0; i < lens[l]; i++)
            all[n++] = (struct ranked){
                .id = lists[l][i].id,
                .score = w * ((sd > 0 ? (lists[l][i].score - mean) / sd : 1) - floor),
            };
    }
    if (n > 1)
        qsort(all, n, sizeof(*all), cmp_id);
    r = topk_init(&best, k);
    if (r < 0) {
        free(all);
        return r;
    }
    for (size_t i = 0; i < n;) {
        size_t j = i;
        double s = base;
        while (j < n && all[j].id == all[i].id)
            s += all[j++].score;
        topk_push(&best, all[i].id, s);
        i = j;
    }
    free(all);
    *ret = best.items;
    return (int)topk_finish(&best);
}
