/*
 * embed-service.c - see embed-service.h.
 */
#include "embed-service.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/cpu.h"
#include "embedder.h"
#include "log.h"
#include "macro.h"
#include "paths.h"
#include "tokenizer.h"

struct embed_service {
    char *model_name, *model_dir;
    const char *precision; /* what the embedder is asked for: a static string, set at start */
    const char *backend;   /* COARCH_BACKEND as given (environment string) or NULL for auto */

    pthread_mutex_t lock; /* guards emb (its loading and every call on it) and load_error */
    struct embedder *emb;
    char load_error[512];

    /* Set once the model has loaded, for `status` (which must not wait on the lock while a
     * batch runs); the backend and precision names are static strings. */
    atomic_uint dim;
    _Atomic(const char *) backend_name;
    _Atomic(const char *) precision_name;

    struct tokens count_tokens; /* the job worker's (embed_service_count_tokens) */
};

/*
 * The GEMM precision the model runs at: COARCH_PRECISION when set (a bad name, or one this CPU
 * cannot run, stops coarchd now, like the other settings), else "auto": int8 where the CPU
 * has AVX512_VNNI and AVX512_BF16 (retrieval on the shared eval is the same as fp32's, hybrid
 * MRR@10 0.510 vs 0.509, for 2.3 times the tokens per CPU-second), else fp32.  The CPU
 * backend is the only one, so its instructions are what matter.
 */
static int choose_precision(const char **ret)
{
    const char *v = getenv("COARCH_PRECISION"), *simd = getenv("COARCH_CPU_KERNELS"),
               *missing = NULL;
    enum embed_precision p;

    if (!v || !v[0] || strcmp(v, "auto") == 0) {
        /* COARCH_CPU_KERNELS=generic asks for the portable kernels: fp32 is theirs. */
        bool generic = simd && strcmp(simd, "generic") == 0;
        p = !generic && embed_cpu_precision_supported(EMBED_PRECISION_INT8, NULL)
                ? EMBED_PRECISION_INT8
                : EMBED_PRECISION_FP32;
        *ret = embed_precision_name(p);
        return 0;
    }
    if (embed_precision_from_name(v, &p) < 0) {
        log_error("COARCH_PRECISION=%s: expected auto, fp32, bf16 or int8", v);
        return -EINVAL;
    }
    if (!embed_cpu_precision_supported(p, &missing)) {
        log_error("COARCH_PRECISION=%s: this CPU or build lacks %s", v, missing);
        return -EINVAL;
    }
    *ret = embed_precision_name(p);
    return 0;
}

/*
 * The backend embedder_load() is asked for.  Today that is COARCH_BACKEND passed through (unset
 * or empty: auto, the first built-in backend that supports the model); an unknown or unusable
 * backend fails the first load with a message naming it.  This is where a GPU backend's choice
 * (and its "no usable GPU" check) belongs.
 */
static const char *choose_backend(void)
{
    const char *v = getenv("COARCH_BACKEND");

    return v && v[0] ? v : NULL;
}

/* The directory of `model`: itself when it names one (contains '/'), else <data dir>/models/
 * <model>, the data dir this daemon was given (--data-dir included), where scripts/fetch-model
 * installs for the same COARCH_DATA_DIR.  NULL only for ENOMEM. */
static char *model_dir_of(const char *data_dir, const char *model)
{
    _cleanup_free_ char *models = NULL;

    if (strchr(model, '/'))
        return strdup(model);
    models = path_join(data_dir, "models");
    return models ? path_join(models, model) : NULL;
}

int embed_service_new(const char *data_dir, struct embed_service **ret)
{
    struct embed_service *s = calloc(1, sizeof(*s));
    const char *model;
    int r;

    if (!s)
        return -ENOMEM;
    pthread_mutex_init(&s->lock, NULL);
    tokens_init(&s->count_tokens, false);
    r = choose_precision(&s->precision);
    if (r < 0)
        goto fail;
    s->backend = choose_backend();
    model = getenv("COARCH_MODEL");
    if (!model || !model[0])
        model = EMBED_SERVICE_DEFAULT_MODEL;
    s->model_name = strdup(model);
    s->model_dir = model_dir_of(data_dir, model);
    if (!s->model_name || !s->model_dir) {
        r = -ENOMEM;
        goto fail;
    }
    *ret = s;
    return 0;
fail:
    embed_service_free(s);
    return r;
}

struct embed_service *embed_service_free(struct embed_service *s)
{
    if (!s)
        return NULL;
    embedder_free(s->emb);
    tokens_release(&s->count_tokens);
    free(s->model_name);
    free(s->model_dir);
    pthread_mutex_destroy(&s->lock);
    free(s);
    return NULL;
}

const char *embed_service_model_name(const struct embed_service *s)
{
    return s->model_name;
}

void embed_service_status(struct embed_service *s, struct embed_service_status *ret)
{
    const char *backend = atomic_load(&s->backend_name);
    const char *precision = atomic_load(&s->precision_name);

    *ret = (struct embed_service_status){
        .name = s->model_name,
        .dir = s->model_dir,
        .dim = atomic_load(&s->dim),
        .backend = backend ? backend : "",
        .precision = precision ? precision : "",
    };
    ret->loaded = ret->dim > 0;
}

/* With the lock held: load the embedder if it is not loaded.  0, or <0 with load_error set. */
static int ensure_loaded(struct embed_service *s)
{
    struct embedder_options o = {0};
    char *msg = NULL;
    int r;

    if (s->emb)
        return 0;
    o.precision = s->precision;
    o.backend = s->backend;
    r = embedder_load(s->model_dir, &o, &s->emb, &msg);
    if (r < 0) {
        snprintf(s->load_error, sizeof(s->load_error),
                 "cannot load the embedding model %s from %s: %s", s->model_name, s->model_dir,
                 msg ? msg : strerror(-r));
        free(msg);
        log_error("%s", s->load_error);
        return r;
    }
    atomic_store(&s->backend_name, embedder_backend_name(s->emb));
    atomic_store(&s->precision_name, embedder_precision(s->emb));
    atomic_store(&s->dim, embedder_dim(s->emb));
    log_info("model %s loaded (%u dims, max %u tokens, %s backend, %s)", s->model_name,
             embedder_dim(s->emb), embedder_max_seq_length(s->emb), embedder_backend_name(s->emb),
             embedder_precision(s->emb));
    return 0;
}

/* With the lock held, after a failed ensure_loaded(). */
static void set_load_error(const struct embed_service *s, struct embed_service_error *err)
{
    err->model_unavailable = true;
    snprintf(err->message, sizeof(err->message), "%s", s->load_error);
}

int embed_service_prepare(struct embed_service *s, struct embed_service_info *ret_info,
                          struct embed_service_error *ret_err)
{
    int r;

    pthread_mutex_lock(&s->lock);
    r = ensure_loaded(s);
    if (r >= 0) {
        /* Activations per token: a dozen rows of hidden size plus the FFN row, fp32. */
        const struct model_config *mc = embedder_config(s->emb);
        ret_info->dim = embedder_dim(s->emb);
        ret_info->max_tokens = embedder_max_seq_length(s->emb);
        ret_info->bytes_per_token = (uint64_t)(12 * mc->hidden + 2 * mc->intermediate) * 4;
    } else {
        set_load_error(s, ret_err);
    }
    pthread_mutex_unlock(&s->lock);
    return r;
}

int embed_service_embed_new(struct embed_service *s, const char *const *texts, const size_t *lens,
                            size_t n, float **ret_vectors, unsigned *ret_dim,
                            struct embed_service_error *ret_err)
{
    float *out = NULL;
    unsigned dim = 0;
    int r;

    ret_err->model_unavailable = false;
    ret_err->message[0] = '\0';
    pthread_mutex_lock(&s->lock);
    r = ensure_loaded(s);
    if (r < 0) {
        set_load_error(s, ret_err);
    } else {
        dim = embedder_dim(s->emb);
        out = array_alloc(n * dim, sizeof(float));
        r = out ? embedder_embed(s->emb, texts, lens, n, out) : -ENOMEM;
    }
    pthread_mutex_unlock(&s->lock);
    if (r < 0) {
        free(out);
        return r;
    }
    *ret_vectors = out;
    *ret_dim = dim;
    return 0;
}

int embed_service_embed(struct embed_service *s, const char *const *texts, const size_t *lens,
                        size_t n, float *ret_vectors)
{
    int r;

    pthread_mutex_lock(&s->lock);
    r = ensure_loaded(s);
    if (r >= 0)
        r = embedder_embed(s->emb, texts, lens, n, ret_vectors);
    pthread_mutex_unlock(&s->lock);
    return r;
}

size_t embed_service_count_tokens(struct embed_service *s, const char *text, size_t len)
{
    /* The tokenizer is immutable once loaded: no lock (embedder.h). */
    const struct tokenizer *t = embedder_tokenizer(s->emb);
    int n = tokenizer_encode(t, text, len, UINT32_MAX / 2, &s->count_tokens);

    if (n < 0)
        return len / 3 + 1; /* out of memory: a pessimistic estimate keeps chunks small */
    return (size_t)n - tokenizer_num_special_tokens(t);
}
