/*
 * search.h - answering a query over the index: semantic top-k (vector.h), BM25 over the lexical
 * postings (lexical.h), fused by standardised scores, with path and language filters.
 *
 * DESIGN
 *
 * The vectors of a repository are scanned from an in-memory copy (a struct vec_set: int8, a
 * quarter of the fp32 bytes) plus, for filtering without a store lookup per candidate, each
 * chunk's path and language.  The copy is built on first use from the store and dropped when a
 * commit changes the repository (search_cache_invalidate(), wired to the indexer's `committed`
 * callback); the exact fp32 vectors used for re-ranking are read from the store's map.
 *
 * Definitions: a chunk is one unit (a function, a piece of a long one, its title line, a
 * run of module-level code) and records the definition it belongs to (chunk.h): the whole
 * function with its leading comment.  Every ranked list is collapsed to one entry per
 * definition, its best unit, before fusion, so one definition is one hit however many of its
 * pieces matched, and the hit reports the definition's lines: whole when it spans at most
 * SEARCH_HIT_MAX_LINES, else the lines of the units that matched (from the definition's first
 * line when that still fits), marked by definition_start/end differing from start/end.  Its
 * snippet starts at the best unit's first line.  (Until schema 2, hits reported the unit's
 * group of small neighbours: a hit named one function and showed another.)
 *
 * Hybrid ranking: the best SEARCH_FUSE_DEPTH groups of each list are fused by score: each
 * list's scores are standardised over that list (z-scores, lexical.h), a group missing from a
 * list counts as its last entry, and the weighted z values are summed.  Reciprocal rank fusion
 * (still there: a request's rrf_k > 0 selects it) keeps only the order of each list; z-scores
 * keep how far a list's best stand out, so a clear lexical winner is not outvoted by a
 * semantic list of near-equal cosines.  On the docstring->function development set of
 * shared/eval: MRR@10 0.477 with the tuned RRF (k = 20, lexical weight 1.5), 0.489 with its
 * best retune (k = 10, weight 1), 0.496 with z-scores and lexical weight 0.7 (held-out stdlib
 * modules: 0.518, 0.535, 0.562); weights 0.6..0.85 are within 0.003.  A result's `score` is
 * the fused score in hybrid mode, the cosine in semantic mode and the BM25 score in lexical
 * mode.
 *
 * Threading: search_run() may be called from several worker threads at once; the cache is
 * guarded by its own lock and each search uses its own read transaction.
 */
#ifndef COARCH_SCHED_SEARCH_H
#define COARCH_SCHED_SEARCH_H

#include "store.h"

#include <stddef.h>
#include <stdint.h>

#define SEARCH_MAX_K 1000
#define SEARCH_FUSE_DEPTH 100
/* Units ranked per definition wanted: most definitions are one unit and a title, a long one
 * is cut in several (search.c). */
#define SEARCH_UNITS_PER_GROUP 4
/* A hit spans at most this many lines: a longer definition reports the part that matched. */
#define SEARCH_HIT_MAX_LINES 100

enum search_mode {
    SEARCH_MODE_HYBRID,
    SEARCH_MODE_SEMANTIC,
    SEARCH_MODE_LEXICAL,
};

/* "hybrid" | "semantic" | "lexical" -> mode; -EINVAL otherwise. */
int search_mode_from_string(const char *s, enum search_mode *ret);
const char *search_mode_to_string(enum search_mode mode);

struct search_cache;

struct search_cache *search_cache_new(void);
struct search_cache *search_cache_free(struct search_cache *c);
/* Forget what is cached for `repo` (0: every repository). Any thread. */
void search_cache_invalidate(struct search_cache *c, uint32_t repo);
/* Bytes held by cached vector sets, for status and the memory governor. */
size_t search_cache_memory(struct search_cache *c);

struct search_request {
    uint32_t repo;          /* 0: every indexed repository */
    const char *query;      /* the text, for BM25 */
    const float *query_vec; /* normalised embedding of the query; NULL for lexical mode */
    uint32_t dim;
    size_t k; /* 1..SEARCH_MAX_K */
    enum search_mode mode;
    const char *path_glob; /* NULL: all; without '/', matched against the file name */
    const char *language;  /* NULL: all; e.g. "python" */
    /* Hybrid fusion: list weights (0 = the defaults below); rrf_k > 0 fuses ranks with RRF
     * and that constant instead of z-scores (for comparison). */
    double rrf_k, semantic_weight, lexical_weight;
};

#define SEARCH_DEFAULT_SEMANTIC_WEIGHT 1.0
#define SEARCH_DEFAULT_LEXICAL_WEIGHT 0.7
/*
 * BM25 weight of a query term's match in a chunk's symbol field (the function's name split
 * into words), relative to a match in its text.  Names matter, but a plain-words question
 * ("bump the access counter") matching a word of an unrelated function's name
 * (clusterBumpConfigEpoch) at full weight buried long, well-commented targets.  Hybrid
 * MRR@10, weight 1 -> 0.3 (2026-12-08): stdlib 0.477 -> 0.467, redis 0.494 -> 0.538, gin 0.688
 * -> 0.701, axios 0.659 -> 0.666; lexical alone up on all four (0.395 -> 0.401, 0.252 ->
 * 0.385, 0.464 -> 0.605, 0.532 -> 0.555).  0 and 0.5 were each worse on the mean of the four.
 */
#define SEARCH_SYMBOL_FIELD_WEIGHT 0.3

struct search_hit {
    uint64_t chunk_id;
    uint32_t repo;
    char *repo_path;                       /* absolute */
    char *path;                            /* relative to repo_path */
    uint32_t start_line, end_line;         /* what the hit reports (see DESIGN above) */
    uint32_t def_start_line, def_end_line; /* the whole definition */
    uint32_t snippet_line;                 /* the best unit's first line */
    char *symbol, *language;
    double score;
    double semantic, lexical;        /* the two scores (0 when the chunk was not in that list) */
    int semantic_rank, lexical_rank; /* 1-based; 0 = not in that list */
    uint64_t text_offset;            /* the snippet's bytes in the file: snippet_line's start */
    uint32_t text_len;               /* to the definition's end */
};

void search_hits_free(struct search_hit *hits, size_t n);

/*
 * Run a search.  *ret (malloc'd, best first; free with search_hits_free()) holds at most k
 * hits.  Returns the number of hits, -ENOENT (repo not indexed), -EINVAL (bad request, e.g. a
 * semantic search without a vector or with the wrong dimension), -ENOMEM, or a store error.
 */
int search_run(struct store *store, struct search_cache *cache, const struct search_request *req,
               struct search_hit **ret);

/* Does `path` match the --path filter `glob`?  No '/' in glob: the name of the file or of any
 * directory above it must match (like .gitignore); with '/': the path from the repository root,
 * "dir/" or "dir" a directory prefix. */
bool search_path_matches(const char *glob, const char *path);

#endif
