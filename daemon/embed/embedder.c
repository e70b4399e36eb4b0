/*
 * embedder.c - tokenize, length-sort, pack into token-budget batches, run the backend, scatter
 * the vectors back into input order (see embedder.h).
 *
 * Sorting by length keeps sequences of similar length together: the CPU backend splits a batch
 * between threads by cost and the CUDA backend's attention works per sequence, so similar lengths
 * balance the work; packing itself never pads.  All buffers grow to the largest call seen and are
 * reused, so a steady stream of calls does not allocate.
 */
#include "embedder.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/cpu.h"
#include "macro.h"
#include "tokenizer.h"

struct embedder {
    struct model *model;
    struct tokenizer *tok;
    struct embed_backend backend;
    enum embed_precision precision;
    size_t max_tokens; /* options.max_batch_tokens */
    size_t budget;     /* current token budget, <= max_tokens */
    struct embedder_stats stats;

    /* Text path: every id of the call, back to back, and where each text's ids start. */
    struct tokens toks;
    uint32_t *ids;
    size_t ids_cap;
    size_t *starts;
    uint32_t *lens;
    const uint32_t **seqs;
    size_t seq_cap;

    /* Batching: sort order, and one packed batch with its output rows. */
    size_t *order;
    size_t order_cap;
    uint32_t *batch_ids;  /* max_tokens */
    uint32_t *batch_lens; /* max_tokens (a sequence has at least one token) */
    float *batch_out;     /* max_tokens x dim */
};

_printf_(3, 4) static int fail(char **errmsg, int r, const char *fmt, ...)
{
    va_list ap;

    if (!errmsg)
        return r;
    va_start(ap, fmt);
    if (vasprintf(errmsg, fmt, ap) < 0)
        *errmsg = NULL;
    va_end(ap);
    return r;
}

int embedder_load(const char *model_dir, const struct embedder_options *options,
                  struct embedder **ret, char **ret_error_message)
{
    struct embed_backend_options bo = {0};
    const char *backend, *precision, *missing = NULL;
    struct embedder *e;
    size_t dim;
    int r;

    e = calloc(1, sizeof(*e));
    if (!e)
        return -ENOMEM;
    tokens_init(&e->toks, false);
    r = model_load(model_dir, &e->model, ret_error_message);
    if (r < 0)
        goto out_free;
    /* The tokenizer lives next to config.json (the Transformer module's directory). */
    r = tokenizer_load(e->model->transformer_dir, &e->tok, ret_error_message);
    if (r < 0)
        goto out_free;
    if (tokenizer_vocab_size(e->tok) > e->model->config.vocab_size) {
        r = fail(ret_error_message, -EBADMSG,
                 "%s: the tokenizer has %u tokens but config.json says vocab_size %u",
                 e->model->transformer_dir, tokenizer_vocab_size(e->tok),
                 e->model->config.vocab_size);
        goto out_free;
    }

    e->max_tokens = options && options->max_batch_tokens ? options->max_batch_tokens
                                                         : EMBEDDER_DEFAULT_BATCH_TOKENS;
    /* One sequence of the longest allowed length must always fit. */
    e->max_tokens = MAX(e->max_tokens, (size_t)e->model->config.max_seq_length);
    e->budget = e->max_tokens;
    bo.max_batch_tokens = e->max_tokens;
    bo.n_threads = options ? options->n_threads : 0;
    backend = options && options->backend ? options->backend : getenv("COARCH_BACKEND");
    if (backend && !*backend)
        backend = NULL;
    precision = options && options->precision ? options->precision : getenv("COARCH_PRECISION");
    if (precision && *precision && embed_precision_from_name(precision, &bo.precision) < 0) {
        r = fail(ret_error_message, -EINVAL,
                 "unknown precision \"%s\" (COARCH_PRECISION): expected fp32, bf16 or int8",
                 precision);
        goto out_free;
    }
    e->precision = bo.precision;
    r = embed_backend_open(backend, e->model, &bo, &e->backend);
    if (r == -ENOTSUP && bo.precision != EMBED_PRECISION_FP32 &&
        !embed_cpu_precision_supported(bo.precision, &missing) &&
        (!backend || strcmp(backend, "cpu") == 0)) {
        r = fail(ret_error_message, r,
                 "precision %s needs %s, which this CPU or build lacks: set COARCH_PRECISION=fp32",
                 embed_precision_name(bo.precision), missing);
        goto out_free;
    }
    if (r < 0) {
        r = fail(ret_error_message, r, "%s: cannot open the %s backend: %s", model_dir,
                 backend ? backend : "auto",
                 r == -ENOENT ? "no such backend in this build" : strerror(-r));
        goto out_free;
    }

    dim = e->model->config.hidden;
    e->batch_ids = array_alloc(e->max_tokens, sizeof(*e->batch_ids));
    e->batch_lens = array_alloc(e->max_tokens, sizeof(*e->batch_lens));
    e->batch_out = array_alloc(e->max_tokens, dim * sizeof(float));
    if (!e->batch_ids || !e->batch_lens || !e->batch_out) {
        r = -ENOMEM;
        goto out_free;
    }
    *ret = e;
    return 0;

out_free:
    embedder_free(e);
    return r;
}

struct embedder *embedder_free(struct embedder *e)
{
    if (!e)
        return NULL;
    embed_backend_close(&e->backend);
    tokenizer_free(e->tok);
    model_free(e->model);
    tokens_release(&e->toks);
    free(e->ids);
    free(e->starts);
    free(e->lens);
    free(e->seqs);
    free(e->order);
    free(e->batch_ids);
    free(e->batch_lens);
    free(e->batch_out);
    free(e);
    return NULL;
}

static int cmp_longest_first(const void *a, const void *b, void *arg)
{
    const uint32_t *lens = arg;
    size_t x = *(const size_t *)a, y = *(const size_t *)b;

    if (lens[x] != lens[y])
        return lens[x] < lens[y] ? 1 : -1;
    return (x > y) - (x < y);
}

int embedder_embed_tokens(struct embedder *e, const uint32_t *const *ids, const uint32_t *lens,
                          size_t n, float *ret_vectors)
{
    const size_t dim = e->model->config.hidden;
    size_t budget = e->budget, i = 0;
    int r;

    for (size_t k = 0; k < n; k++)
        if (lens[k] == 0 || lens[k] > e->model->config.max_seq_length)
            return -EINVAL;
    r = array_grow((void **)&e->order, &e->order_cap, n, sizeof(*e->order));
    if (r < 0)
        return r;
    for (size_t k = 0; k < n; k++)
        e->order[k] = k;
    qsort_r(e->order, n, sizeof(*e->order), cmp_longest_first, (void *)lens);

    while (i < n) {
        struct embed_batch b = {.ids = e->batch_ids, .lengths = e->batch_lens};
        size_t first = i;

        /* Greedy packing; the first sequence always goes in (budget >= max_seq_length). */
        while (i < n && (b.n_seqs == 0 || b.n_tokens + lens[e->order[i]] <= budget)) {
            size_t s = e->order[i++];

            memcpy(e->batch_ids + b.n_tokens, ids[s], lens[s] * sizeof(uint32_t));
            e->batch_lens[b.n_seqs++] = lens[s];
            b.n_tokens += lens[s];
        }
        r = e->backend.ops->encode_batch(e->backend.ctx, &b, e->batch_out);
        if (r == -ENOMEM && b.n_seqs > 1) {
            /* Halve and retry the same sequences; a lower budget for the rest of the call. */
            budget = MAX(b.n_tokens / 2, (size_t)1);
            e->stats.enomem_retries++;
            i = first;
            continue;
        }
        if (r < 0)
            return r;
        for (size_t k = first; k < i; k++)
            memcpy(ret_vectors + e->order[k] * dim, e->batch_out + (k - first) * dim,
                   dim * sizeof(float));
        e->stats.batches++;
        e->stats.tokens += b.n_tokens;
    }
    e->stats.texts += n;
    return 0;
}

int embedder_embed(struct embedder *e, const char *const *texts, const size_t *lens, size_t n,
                   float *ret_vectors)
{
    const uint32_t max_len = e->model->config.max_seq_length;
    size_t used = 0;
    int r;

    if (n > e->seq_cap) {
        size_t cap = e->seq_cap;

        if (array_grow((void **)&e->starts, &cap, n, sizeof(*e->starts)) < 0)
            return -ENOMEM;
        cap = e->seq_cap;
        if (array_grow((void **)&e->lens, &cap, n, sizeof(*e->lens)) < 0)
            return -ENOMEM;
        cap = e->seq_cap;
        if (array_grow((void **)&e->seqs, &cap, n, sizeof(*e->seqs)) < 0)
            return -ENOMEM;
        e->seq_cap = cap;
    }
    for (size_t i = 0; i < n; i++) {
        r = tokenizer_encode(e->tok, texts[i], lens[i], max_len, &e->toks);
        if (r < 0)
            return r;
        if (array_grow((void **)&e->ids, &e->ids_cap, used + (size_t)r, sizeof(*e->ids)) < 0)
            return -ENOMEM;
        memcpy(e->ids + used, e->toks.ids, (size_t)r * sizeof(uint32_t));
        e->starts[i] = used;
        e->lens[i] = (uint32_t)r;
        used += (size_t)r;
        e->stats.truncated += e->toks.truncated;
    }
    /* Pointers only now: e->ids may have moved while growing. */
    for (size_t i = 0; i < n; i++)
        e->seqs[i] = e->ids + e->starts[i];
    return embedder_embed_tokens(e, e->seqs, e->lens, n, ret_vectors);
}

unsigned embedder_dim(const struct embedder *e)
{
    return e->model->config.hidden;
}

unsigned embedder_max_seq_length(const struct embedder *e)
{
    return e->model->config.max_seq_length;
}

const struct model_config *embedder_config(const struct embedder *e)
{
    return &e->model->config;
}

const struct tokenizer *embedder_tokenizer(const struct embedder *e)
{
    return e->tok;
}

const char *embedder_precision(const struct embedder *e)
{
    return embed_precision_name(e->precision);
}

const char *embedder_backend_name(const struct embedder *e)
{
    return e->backend.ops->name;
}

void embedder_set_batch_tokens(struct embedder *e, size_t tokens)
{
    e->budget = CLAMP(tokens, (size_t)e->model->config.max_seq_length, e->max_tokens);
}

size_t embedder_batch_tokens(const struct embedder *e)
{
    return e->budget;
}

int embedder_get_memory(struct embedder *e, struct embedder_memory *ret)
{
    struct embedder_memory m = {0};
    int r;

    r = e->backend.ops->get_memory(e->backend.ctx, &m.backend);
    if (r < 0)
        return r;
    m.mapped = safetensors_mapped_size(e->model->weights);
    m.buffers = e->ids_cap * sizeof(*e->ids) +
                e->seq_cap * (sizeof(*e->starts) + sizeof(*e->lens) + sizeof(*e->seqs)) +
                e->order_cap * sizeof(*e->order) +
                e->max_tokens * (2 * sizeof(uint32_t) + e->model->config.hidden * sizeof(float));
    *ret = m;
    return 0;
}

void embedder_get_stats(const struct embedder *e, struct embedder_stats *ret)
{
    *ret = e->stats;
}

void embedder_release_memory(struct embedder *e)
{
    if (e->backend.ops->release_memory)
        e->backend.ops->release_memory(e->backend.ctx);
    free(e->ids);
    e->ids = NULL;
    e->ids_cap = 0;
    tokens_release(&e->toks);
    tokens_init(&e->toks, false);
}
