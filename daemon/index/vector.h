/*
 * vector.h - brute-force nearest neighbours over L2-normalised embeddings.
 *
 * Why brute force: a repository index is 10^4..10^6 chunks; at 384 dimensions an exact scan is
 * a few milliseconds per 100k chunks when the scanned copy is int8, with no recall loss worth an
 * approximate index's build time, memory and update complexity.
 *
 * The search is two-stage.  A vec_set keeps an int8 copy of every vector (symmetric per-vector
 * scale, 1/4 of the fp32 bytes, so the scan is bounded by compute, not memory bandwidth); the
 * scan keeps the best `k * VEC_RERANK_FACTOR` by approximate dot product, and those are then
 * re-scored exactly against the fp32 vectors the caller provides (from the store's mmap), so the
 * reported scores are exact cosines.
 *
 * Kernels: AVX-512 (F+BW) when the CPU has it, portable C otherwise; chosen once at first use.
 * Threading: a vec_set is immutable after building; concurrent searches are safe.
 */
#ifndef COARCH_INDEX_VECTOR_H
#define COARCH_INDEX_VECTOR_H

#include "lexical.h" /* struct ranked, struct topk */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define VEC_RERANK_FACTOR 8

float vec_dot_f32(const float *a, const float *b, size_t dim);
int32_t vec_dot_i8(const int8_t *a, const int8_t *b, size_t dim);

/* Quantise one vector: q[i] = round(x[i] / scale), scale = max|x| / 127. Returns the scale. */
float vec_quantize_i8(const float *x, size_t dim, int8_t *q);

struct vec_set;

struct vec_set *vec_set_new(size_t dim);
struct vec_set *vec_set_free(struct vec_set *s);
/* Append one vector with its id. 0 or -ENOMEM. */
int vec_set_add(struct vec_set *s, uint64_t id, const float *v);
size_t vec_set_count(const struct vec_set *s);
size_t vec_set_dim(const struct vec_set *s);
size_t vec_set_memory(const struct vec_set *s);
/* The id at position i (insertion order). */
uint64_t vec_set_id(const struct vec_set *s, size_t i);

/*
 * Look up the exact fp32 vector of `id` for re-ranking; return NULL when it is gone (the
 * candidate is then dropped).  The pointer must stay valid until the search returns.
 */
typedef const float *(*vec_lookup_fn)(void *userdata, uint64_t id);

/*
 * The best `k` ids by cosine with `query` (normalised), written into *out (initialised by the
 * caller with topk_init(out, k)); `keep` may filter candidates (NULL keeps all); it gets the
 * id and its position in insertion order.  When lookup is
 * NULL the approximate scores are returned.  Returns the number of results or -ENOMEM.
 */
typedef bool (*vec_keep_fn)(void *userdata, uint64_t id, size_t index);
int vec_set_search(const struct vec_set *s, const float *query, size_t k, vec_keep_fn keep,
                   vec_lookup_fn lookup, void *userdata, struct topk *out);

#endif
