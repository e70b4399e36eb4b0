/*
 * backend.h - the compute backend vtable of the embedding engine (STYLE.md rule 8).
 *
 * A backend turns batches of token ids into sentence vectors for one loaded model: the whole
 * BERT forward pass, pooling and (when the model has a Normalize module) L2 normalisation.  The
 * CPU backend (cpu/) is always built and is the reference every other backend is tested against;
 * CUDA (cuda/) sits behind the same table.  Backends are statically linked today; the abi_version
 * field leaves room to dlopen() them later.
 *
 * Batches are packed: sequence i's ids follow sequence i-1's with no padding, so a backend never
 * computes on pad tokens.  Each sequence already carries [CLS] ... [SEP] and is at most the
 * model's max_seq_length long; the backend restarts position ids at 0 for every sequence.
 *
 * Memory: encode_batch() must not abort on allocation failure.  It returns -ENOMEM (host or
 * device), leaving the backend usable, so the caller (embedder / memory governor) can halve the
 * batch and retry the same sequences.  Workspace is reused across batches; it grows only when a
 * batch needs more than any batch before it (never beyond options.max_batch_tokens), and
 * release_memory() gives it back.
 *
 * Threading: a backend context is used by one thread at a time (the embed worker that owns it);
 * a backend may run its own helper threads inside encode_batch().  The model must outlive the
 * context.
 */
#ifndef COARCH_EMBED_BACKEND_H
#define COARCH_EMBED_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "model.h"

#define EMBED_BACKEND_ABI_VERSION 1

/* n_seqs packed sequences; sequence i is ids[sum(lengths[0..i)) .. + lengths[i]). */
struct embed_batch {
    const uint32_t *ids;     /* n_tokens token ids, each < vocab_size (tokenizer ids) */
    const uint32_t *lengths; /* n_seqs lengths, each 1..max_seq_length */
    size_t n_seqs;
    size_t n_tokens; /* sum of lengths */
};

/*
 * Arithmetic of the big matrix products (the Linear layers).  LayerNorm, softmax, GELU, attention
 * and pooling stay fp32 in every precision; FP32 is exact and the default, the others trade a
 * little accuracy (cosine >= 0.999 to the fp32 vectors) for speed.  docs/embedding.md has the
 * numbers.
 */
enum embed_precision {
    EMBED_PRECISION_FP32, /* fp32 weights and products */
    EMBED_PRECISION_BF16, /* bf16 weights and activations, fp32 sums */
    EMBED_PRECISION_INT8, /* int8 weights (per output row), u8 activations (per token) */
};

/* "fp32", "bf16", "int8". */
const char *embed_precision_name(enum embed_precision p);
/* Parses those names; -EINVAL for anything else. */
int embed_precision_from_name(const char *name, enum embed_precision *ret);

struct embed_backend_options {
    size_t max_batch_tokens; /* largest n_tokens encode_batch() will be given; 0: a default */
    unsigned n_threads;      /* helper threads a CPU backend may use; 0: online CPUs */
    enum embed_precision precision; /* init() fails with -ENOTSUP when it cannot run it here */
};

/* Bytes, for the memory governor. */
struct embed_backend_memory {
    size_t weights;   /* weights the backend allocated (host RAM or device memory) */
    size_t workspace; /* activation buffers currently allocated */
    size_t mapped;    /* bytes of the model file it reads in place through the mapping */
    size_t device_total, device_free; /* device memory; 0 for host backends */
    bool on_device;                   /* weights and workspace are device memory */
};

struct embed_backend_ops {
    uint32_t abi_version; /* EMBED_BACKEND_ABI_VERSION */
    const char *name;     /* "cpu", "cuda" */

    /* Whether this backend can run a model with this configuration on this machine (e.g. a
     * device is present, the head size is handled).  Called before init(). */
    bool (*supports)(const struct model_config *config);

    /* Build a context for `model` (copies or uploads the weights it needs).  Returns 0, -ENOMEM,
     * -ENOTSUP or -ENODEV. */
    int (*init)(const struct model *model, const struct embed_backend_options *options,
                void **ret_ctx);
    /* Accepts NULL; returns NULL. */
    void *(*free)(void *ctx);

    int (*get_memory)(void *ctx, struct embed_backend_memory *ret);

    /*
     * Run the forward pass over `batch` and write n_seqs * hidden floats to `out` (row i for
     * sequence i): the pooled last hidden state, L2-normalised when config.normalize.  Returns 0,
     * -EINVAL (an id or length out of range), -E2BIG (n_tokens > max_batch_tokens) or -ENOMEM;
     * on error `out` is unspecified and the context stays usable.
     */
    int (*encode_batch)(void *ctx, const struct embed_batch *batch, float *out);

    /* Optional (may be NULL): free workspace and caches now; the next batch reallocates. */
    void (*release_memory)(void *ctx);
};

/* A backend instance: the table plus its context. */
struct embed_backend {
    const struct embed_backend_ops *ops;
    void *ctx;
};

extern const struct embed_backend_ops embed_backend_cpu;

/* The built-in backends, best first (CUDA before CPU when built); NULL-terminated. */
extern const struct embed_backend_ops *const embed_backends[];

/* The built-in backend called `name`, or NULL. */
const struct embed_backend_ops *embed_backend_find(const char *name);

/*
 * Open a backend for `model`: `name` picks one ("cpu", "cuda"), NULL or "auto" takes the first
 * built-in backend whose supports() accepts the model and whose init() succeeds; one whose init()
 * says -ENOTSUP (e.g. a precision it lacks), -ENODEV or -ENOMEM gives way to the next.  Returns
 * 0, -ENOENT (no backend of that name), -ENOTSUP (it cannot run this model here), or init()'s
 * error.  options may be NULL (the backend's defaults).  Release with embed_backend_close().
 */
int embed_backend_open(const char *name, const struct model *model,
                       const struct embed_backend_options *options, struct embed_backend *ret);
void embed_backend_close(struct embed_backend *b);

#endif
