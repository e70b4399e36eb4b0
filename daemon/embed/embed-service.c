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
#ifdef COARCH_HAVE_CUDA
#include "cuda/cuda.h"
#endif
#include "log.h"
#include "macro.h"
#include "paths.h"
#include "tokenizer.h"

#define EMBED_SERVICE_GPU_BATCH_TOKENS 16384

struct embed_service {
    char *model_name, *model_dir;
    /* What the embedder is asked for, static strings chosen at start; atomic because a GPU
     * that cannot run the model hands it to the CPU at the first load (ensure_loaded) while
     * `status` may read them. */
    _Atomic(const char *) precision;
    _Atomic(const char *) backend; /* "cpu" or "cuda" */
    bool gpu_by_default;           /* "cuda" came from auto, not COARCH_BACKEND=cuda */
    char device[256];              /* the GPU's name when backend is "cuda", else "" */

    pthread_mutex_t lock; /* guards emb (its loading and every call on it) and load_error */
    struct embedder *emb;
    char load_error[512];

    /* Set once the model has loaded, for `status` (which must not wait on the lock while a
     * batch runs); the backend and precision names are static strings. */
    atomic_uint dim;
    _Atomic(const char *) backend_name;
    _Atomic(const char *) precision_name;

    /* Device memory after the last load or embed (embed_service_device_memory()). */
    atomic_bool on_device;
    _Atomic uint64_t dev_total, dev_free, dev_allocated;

    struct tokens count_tokens; /* the job worker's (embed_service_count_tokens) */
};

/*
 * The backend: COARCH_BACKEND = cpu, cuda or auto (the default).  auto takes the CUDA backend
 * when this build has it and a usable GPU is present (and says so in the log), else the CPU.
 * cuda with no usable GPU, or in a build without CUDA, stops coarchd now with the reason:
 * never a silent fall back to the CPU.
 */
static int choose_backend(struct embed_service *s)
{
    const char *v = getenv("COARCH_BACKEND");
    bool want_cuda = v && strcmp(v, "cuda") == 0;

    if (v && v[0] && strcmp(v, "auto") != 0 && strcmp(v, "cpu") != 0 && !want_cuda) {
        log_error("COARCH_BACKEND=%s: expected auto, cpu or cuda", v);
        return -EINVAL;
    }
    s->backend = "cpu";
    if (v && strcmp(v, "cpu") == 0)
        return 0;
#ifdef COARCH_HAVE_CUDA
    {
        char why[256], err[256];
        if (embed_cuda_probe(why, sizeof(why)) == 0) {
            /* Asked for, every part must be there now; auto loads cuBLAS with the model and
             * hands the model to the CPU if it is missing (ensure_loaded). */
            if (want_cuda && embed_cuda_load_blas(err, sizeof(err)) < 0) {
                log_error("COARCH_BACKEND=cuda: no usable GPU: %s: %s", why, err);
                return -ENODEV;
            }
            s->backend = "cuda";
            s->gpu_by_default = !want_cuda;
            snprintf(s->device, sizeof(s->device), "%s", why);
            log_info("GPU %s: embedding on the CUDA backend%s", why,
                     want_cuda ? "" : " (COARCH_BACKEND=cpu to use the CPU)");
            return 0;
        }
        if (want_cuda) {
            log_error("COARCH_BACKEND=cuda: no usable GPU: %s", why);
            return -ENODEV;
        }
        log_info("no usable GPU (%s): embedding on the CPU", why);
    }
#else
    if (want_cuda) {
        log_error("COARCH_BACKEND=cuda: this coarchd was built without CUDA (it needs nvcc and "
                  "cuBLAS at build time: meson setup -Dcuda=enabled)");
        return -EINVAL;
    }
#endif
    return 0;
}

/*
 * The GEMM precision the model runs at: COARCH_PRECISION when set (a bad name, or one the chosen
 * backend cannot run here, stops coarchd now, like the other settings), else "auto".  On the
 * CPU, auto is int8 where the CPU has AVX512_VNNI and AVX512_BF16 (retrieval on the shared eval
 * is the same as fp32's, hybrid MRR@10 0.510 vs 0.509, for 2.3 times the tokens per
 * CPU-second), else fp32.  On the GPU, auto is bf16 (tensor cores; fp32 is the parity path) and
 * int8 is refused.
 */
static int choose_precision(const char *backend, const char **ret)
{
    const char *v = getenv("COARCH_PRECISION"), *simd = getenv("COARCH_CPU_KERNELS"),
               *missing = NULL;
    bool cuda = strcmp(backend, "cuda") == 0;
    enum embed_precision p;

    if (!v || !v[0] || strcmp(v, "auto") == 0) {
        /* COARCH_CPU_KERNELS=generic asks for the portable kernels: fp32 is theirs. */
        bool generic = simd && strcmp(simd, "generic") == 0;
        if (cuda)
            p = EMBED_PRECISION_BF16;
        else
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
    if (cuda && p == EMBED_PRECISION_INT8) {
        log_error("COARCH_PRECISION=int8: the CUDA backend runs fp32 or bf16 (int8 is the CPU's; "
                  "set COARCH_BACKEND=cpu for it)");
        return -EINVAL;
    }
    if (!cuda && !embed_cpu_precision_supported(p, &missing)) {
        log_error("COARCH_PRECISION=%s: this CPU or build lacks %s", v, missing);
        return -EINVAL;
    }
    *ret = embed_precision_name(p);
    return 0;
}

/* Settings only the CUDA backend reads, checked at start when it is the one chosen. */
static int check_device_settings(const struct embed_service *s)
{
#ifdef COARCH_HAVE_CUDA
    if (strcmp(s->backend, "cuda") == 0) {
        char msg[160];
        double f;
        if (embed_cuda_memory_fraction(&f, msg, sizeof(msg)) < 0) {
            log_error("%s", msg);
            return -EINVAL;
        }
    }
#else
    (void)s;
#endif
    return 0;
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
    r = choose_backend(s);
    if (r >= 0) {
        const char *p = NULL;
        r = choose_precision(s->backend, &p);
        s->precision = p;
    }
    if (r >= 0)
        r = check_device_settings(s);
    if (r < 0)
        goto fail;
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
        .selected_backend = atomic_load(&s->backend),
        .selected_precision = atomic_load(&s->precision),
        /* written once at start; shown while the GPU is the backend */
        .device = strcmp(atomic_load(&s->backend), "cuda") == 0 ? s->device : "",
    };
    ret->loaded = ret->dim > 0;
}

/* With the lock held: remember the backend's device memory for embed_service_device_memory(),
 * which must answer without the lock.  Asked at load; after a batch only when the load found
 * the model on a device (a host backend has nothing to report, and batches are the hot path). */
static void refresh_device_memory(struct embed_service *s, bool at_load)
{
    struct embedder_memory m;

    if (!s->emb || (!at_load && !atomic_load(&s->on_device)) ||
        embedder_get_memory(s->emb, &m) < 0 || !m.backend.on_device)
        return;
    atomic_store(&s->dev_total, m.backend.device_total);
    atomic_store(&s->dev_free, m.backend.device_free);
    atomic_store(&s->dev_allocated, m.backend.weights + m.backend.workspace);
    atomic_store(&s->on_device, true);
}

int embed_service_device_memory(struct embed_service *s, uint64_t *ret_total, uint64_t *ret_free,
                                uint64_t *ret_allocated)
{
    if (!atomic_load(&s->on_device))
        return -ENODEV;
    *ret_total = atomic_load(&s->dev_total);
    *ret_free = atomic_load(&s->dev_free);
    *ret_allocated = atomic_load(&s->dev_allocated);
    return 0;
}

/* With the lock held: load the embedder if it is not loaded.  0, or <0 with load_error set. */
static int ensure_loaded(struct embed_service *s)
{
    struct embedder_options o = {0};
    const char *cpu_precision = NULL;
    char *msg = NULL;
    int r;

    if (s->emb)
        return 0;
    o.precision = s->precision;
    o.backend = s->backend;
    /* A GPU wants big batches: launches cost microseconds, a 4096-token batch leaves an H100
     * mostly idle (research/inference.md section 4). */
    if (strcmp(o.backend, "cuda") == 0)
        o.max_batch_tokens = EMBED_SERVICE_GPU_BATCH_TOKENS;
    r = embedder_load(s->model_dir, &o, &s->emb, &msg);
    /* A GPU picked by auto that cannot run this model (its shape, or a device already full)
     * gives it to the CPU, at the CPU's own precision, and says so; COARCH_BACKEND=cuda never
     * falls back. */
    if (r < 0 && s->gpu_by_default && (r == -ENOTSUP || r == -ENODEV || r == -ENOMEM) &&
        choose_precision("cpu", &cpu_precision) >= 0) {
        log_warning("the GPU cannot run the model %s (%s): embedding on the CPU", s->model_name,
                    msg ? msg : strerror(-r));
        free(msg);
        msg = NULL;
        s->gpu_by_default = false;
        s->backend = "cpu";
        s->precision = cpu_precision;
        o.backend = "cpu";
        o.precision = cpu_precision;
        o.max_batch_tokens = 0;
        r = embedder_load(s->model_dir, &o, &s->emb, &msg);
    }
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
    refresh_device_memory(s, true);
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
        refresh_device_memory(s, false);
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
    if (r >= 0) {
        r = embedder_embed(s->emb, texts, lens, n, ret_vectors);
        refresh_device_memory(s, false);
    }
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
