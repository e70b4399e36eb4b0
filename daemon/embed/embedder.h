/*
 * embedder.h - the embedding engine's public API: text in, vectors out.
 *
 * An embedder is one loaded model (model.h), its tokenizer (tokenizer.h) and a compute backend
 * (backend.h).  embedder_embed() tokenizes each text (truncated to the model's max_seq_length,
 * [CLS]/[SEP] included), sorts the sequences by length, packs them into batches of at most
 * `batch_tokens` tokens with no padding, runs the backend on each batch and writes the vectors
 * back in input order.  Vectors are fp32, embedder_dim() wide, and L2-normalised when the model
 * has a Normalize module (both supported defaults do).
 *
 * Memory: the token budget bounds the backend's workspace (activations grow with batch tokens).
 * The memory governor lowers it with embedder_set_batch_tokens() and reads embedder_get_memory().
 * When the backend reports -ENOMEM for a batch, the embedder halves the budget for the rest of
 * that call and retries the same sequences (counted in embedder_stats.enomem_retries); only when
 * a single sequence cannot be encoded does the call fail with -ENOMEM.  Nothing is dropped.
 *
 * Threading: an embedder is used by one thread at a time (it owns the backend context and its
 * reusable buffers); calls from several threads must be serialised by the caller.  The tokenizer
 * returned by embedder_tokenizer() is immutable and may be used concurrently from other threads
 * (e.g. a separate tokenize stage feeding embedder_embed_tokens()).  Loading reads files and
 * copies weights: do it on a worker, never on the event loop.
 *
 * Ownership: embedder_load() returns an object freed with embedder_free(); pointers returned by
 * the accessors are borrowed and die with it.
 */
#ifndef COARCH_EMBED_EMBEDDER_H
#define COARCH_EMBED_EMBEDDER_H

#include <stddef.h>
#include <stdint.h>

#include "backend.h"
#include "model.h"

struct tokenizer;
struct embedder;

#define EMBEDDER_DEFAULT_BATCH_TOKENS 4096

struct embedder_options {
    const char *backend;     /* "cpu", "cuda", "auto"; NULL: $COARCH_BACKEND, else "auto" */
    size_t max_batch_tokens; /* largest token budget ever used; 0: EMBEDDER_DEFAULT_BATCH_TOKENS */
    unsigned n_threads;      /* CPU backend threads; 0: every CPU this process may run on */
    /* GEMM precision "fp32", "bf16" or "int8" (backend.h); NULL: $COARCH_PRECISION, else fp32 */
    const char *precision;
};

struct embedder_memory {
    struct embed_backend_memory backend;
    size_t mapped;  /* the model file mapping (weights not copied are read from it) */
    size_t buffers; /* the embedder's own token and output buffers */
};

struct embedder_stats {
    uint64_t texts, tokens, batches;
    uint64_t truncated;      /* texts longer than max_seq_length */
    uint64_t enomem_retries; /* batches retried at half the budget after -ENOMEM */
};

/*
 * Load the model in `model_dir` (see model.h for the files) with its tokenizer and open a
 * backend.  Returns 0, -ENOENT (files missing), -EBADMSG (malformed), -ENOTSUP (an unsupported
 * model setting or backend, or a precision this machine cannot run), -EINVAL (an unknown
 * precision name), or -ENOMEM; on failure *ret_error_message (when not NULL) is set to a
 * malloc'd message naming the file and the problem (caller frees).
 */
int embedder_load(const char *model_dir, const struct embedder_options *options,
                  struct embedder **ret, char **ret_error_message);
struct embedder *embedder_free(struct embedder *e);

/*
 * Embed n texts (texts[i] is lens[i] bytes of UTF-8, not necessarily NUL-terminated or valid)
 * into ret_vectors, n * embedder_dim() floats, row i for texts[i].  Returns 0, -ENOMEM, or
 * another negative errno from the backend; on error ret_vectors is unspecified.
 */
int embedder_embed(struct embedder *e, const char *const *texts, const size_t *lens, size_t n,
                   float *ret_vectors);

/*
 * The same from token ids (each sequence as the tokenizer returns it: [CLS] ... [SEP], 1 to
 * embedder_max_seq_length() ids, each < the model's vocab_size; -EINVAL otherwise).
 */
int embedder_embed_tokens(struct embedder *e, const uint32_t *const *ids, const uint32_t *lens,
                          size_t n, float *ret_vectors);

unsigned embedder_dim(const struct embedder *e);
unsigned embedder_max_seq_length(const struct embedder *e);
const struct model_config *embedder_config(const struct embedder *e);
const struct tokenizer *embedder_tokenizer(const struct embedder *e);
const char *embedder_backend_name(const struct embedder *e);
/* The precision the backend runs: "fp32", "bf16" or "int8". */
const char *embedder_precision(const struct embedder *e);

/* Token budget per backend call: clamped to [max_seq_length, options.max_batch_tokens]. */
void embedder_set_batch_tokens(struct embedder *e, size_t tokens);
size_t embedder_batch_tokens(const struct embedder *e);

int embedder_get_memory(struct embedder *e, struct embedder_memory *ret);
void embedder_get_stats(const struct embedder *e, struct embedder_stats *ret);
/* Free backend workspace and the embedder's buffers now (memory pressure); next call regrows. */
void embedder_release_memory(struct embedder *e);

#endif
