/*
 * lexical.h - the lexical half of hybrid search: code-aware terms, BM25 scoring and rank
 * fusion.  Pure functions over caller-provided data; no storage, no threads.
 *
 * Terms.  Source code names things in camelCase, PascalCase, snake_case and kebab-case while
 * people ask in words, so an identifier yields itself and its parts: "parseHTTPRequest" gives
 * "parsehttprequest", "parse", "http", "request"; "max_frame_size" gives "max_frame_size",
 * "max", "frame", "size".  Terms are ASCII-lowercased; bytes >= 0x80 are kept inside words (so
 * UTF-8 identifiers survive) but not case-folded.  Words of letters are reduced to their
 * Snowball English stem ("parsing", "parses" -> "pars"), other terms get a light plural folding
 * ("max_frames" -> "max_frame"), so "read files" meets read_file.  Terms shorter than 2 bytes or
 * longer than LEXICAL_MAX_TERM are dropped, and so are a few English stop words that carry no
 * signal in either code or questions.
 *
 * BM25: score(d) = sum over query terms t of idf(t) * tf * (k1 + 1) / (tf + k1 * (1 - b + b *
 * dl / avgdl)), idf(t) = ln(1 + (N - df + 0.5) / (df + 0.5)), k1 = 1.2, b = 0.75 (Lucene's).
 *
 * Fusion: reciprocal rank fusion, score = sum over lists of w / (k + rank), or the weighted sum
 * of each list's standardised scores (zscore_fuse(), what hybrid search uses).
 */
#ifndef COARCH_INDEX_LEXICAL_H
#define COARCH_INDEX_LEXICAL_H

#include <stddef.h>
#include <stdint.h>

#define LEXICAL_MAX_TERM 64

/* Terms of a chunk's symbol are also indexed as a field of their own, with this prefix (a byte
 * that never occurs inside a term). */
#define LEXICAL_SYMBOL_PREFIX "@"

/* Called once per term occurrence; `term` is NUL-terminated and valid during the call. Return
 * < 0 to stop; lexical_terms() then returns that value. */
typedef int (*lexical_term_fn)(void *userdata, const char *term, size_t len);

/* Emit the terms of `text` in order. Returns 0, -ENOMEM (no stemmer) or the callback's
 * negative value.  Thread-safe: each thread stems with a stemmer of its own. */
int lexical_terms(const char *text, size_t len, lexical_term_fn fn, void *userdata);

/* Free the calling thread's stemmer now (threads free theirs when they exit; the main thread
 * calls this before exit to leave nothing for leak checkers). */
void lexical_thread_release(void);

/* A term and its frequency in one document, as lexical_count_terms() produces. */
struct lexical_tf {
    char *term;
    uint32_t tf;
};

/*
 * Count distinct terms of `text`: *ret is a malloc'd array sorted by term (free each term and
 * the array with lexical_tf_free()), *ret_n its length, *ret_total the number of occurrences
 * (the document length for BM25).  Returns 0 or -ENOMEM.
 */
int lexical_count_terms(const char *text, size_t len, struct lexical_tf **ret, size_t *ret_n,
                        uint32_t *ret_total);
void lexical_tf_free(struct lexical_tf *tfs, size_t n);

struct bm25_params {
    double k1, b;
};
#define BM25_DEFAULTS ((struct bm25_params){.k1 = 1.2, .b = 0.75})

double bm25_idf(uint64_t n_docs, uint64_t df);
double bm25_term_score(const struct bm25_params *p, double idf, uint32_t tf, uint32_t doc_len,
                       double avg_doc_len);

/* One ranked list entry: an id and its score, best first. */
struct ranked {
    uint64_t id;
    double score;
};

/*
 * Keep the best `k` of a stream: a bounded min-heap.  topk_push() is O(log k); topk_finish()
 * sorts best first (ties by smaller id, so results are deterministic) and returns the count.
 */
struct topk {
    struct ranked *items;
    size_t n, k;
};

int topk_init(struct topk *t, size_t k); /* 0 or -ENOMEM */
void topk_release(struct topk *t);
void topk_push(struct topk *t, uint64_t id, double score);
size_t topk_finish(struct topk *t);

/*
 * Reciprocal rank fusion of `n_lists` ranked lists (each best first) into *ret (malloc'd, best
 * first, at most `k` entries, score = fused score).  weights may be NULL (all 1).  Returns the
 * number of entries or -ENOMEM.
 */
int rrf_fuse(const struct ranked *const *lists, const size_t *lens, const double *weights,
             size_t n_lists, double rrf_k, size_t k, struct ranked **ret);

/*
 * Score fusion of `n_lists` lists (each best first) into *ret like rrf_fuse(): each list's
 * scores are standardised over that list, z = (score - mean) / sd, an id missing from a list
 * counts as the list's last entry, and the fused score is the weighted sum of the z values.
 * Unlike ranks, z keeps how far ahead of the rest a list's best entries are.  A list whose
 * scores are all equal (one entry, say) gives its entries 1 and a missing id 0.  weights may
 * be NULL (all 1).  Returns the number of entries or -ENOMEM.
 */
int zscore_fuse(const struct ranked *const *lists, const size_t *lens, const double *weights,
                size_t n_lists, size_t k, struct ranked **ret);

#endif
