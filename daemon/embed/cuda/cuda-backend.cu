/*
 * cuda-backend.cu - the CUDA backend (cuda.h): weights on the device, cuBLAS for the Linear
 * layers, kernels.cu for the rest, one stream per context.
 *
 * DESIGN
 *
 * Forward pass over a packed batch of T tokens (the CPU backend's, cpu-backend.c):
 *
 *   X, Xg   = embed_ln(ids, positions)                       X fp32, Xg the GEMM's copy
 *   per layer:
 *     QKV   = Xg Wqkv^T                    [T, 3H] fp32      one fused GEMM, bias in attention
 *     C     = attention(QKV + bqkv)        [T, H]  as G
 *     Y     = C Wo^T                       [T, H]  fp32
 *     X, Xg = LN(X + Y + bo)                                 fused bias + residual + LN
 *     U     = Xg Wup^T                     [T, I]  fp32
 *     Ug    = GELU(U + bup)                [T, I]  as G      fused bias + GELU
 *     Y     = Ug Wdown^T                   [T, H]  fp32
 *     X, Xg = LN(X + Y + bdown)
 *   out     = pool(X) (mean or CLS), L2-normalised           [n_seqs, H] fp32
 *
 * G is the GEMM input type: float for EMBED_PRECISION_FP32 (cuBLAS in pedantic fp32, no TF32,
 * the parity path) and bf16 for EMBED_PRECISION_BF16 (tensor cores, fp32 accumulation and fp32
 * output).  In fp32, Xg is X and Ug is U: no copies.  No pad token is computed anywhere.
 *
 * Memory.  Weights are uploaded once at init into one device block (the Linear weights as G,
 * everything else fp32; the word-embedding table stays fp32 for the lookup), and the mapping's
 * pages are released afterwards.  The workspace is one block sized for the largest batch seen
 * so far (never more than max_batch_tokens), reused, grown only when a batch needs more; cuBLAS
 * gets a fixed workspace of ours so it allocates nothing behind our back.  All of it goes
 * through dev_alloc(), which counts bytes against the cap (COARCH_GPU_MEMORY_FRACTION of the
 * device) and maps failure to -ENOMEM with the context intact.  Host staging (ids, positions,
 * offsets, vectors) is pinned.
 *
 * Not here yet: overlapping the host side of the next batch with this one's GPU work (the
 * vtable is synchronous: encode_batch() returns the vectors), CUDA graphs for small batches,
 * the CLS last-layer shortcut, and GEMM epilogue fusion.
 */
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blas.cuh"
#include "cuda.h"
#include "kernels.cuh"

extern "C" {
#include "log.h"
#include "safetensors.h"
}

#define CUBLAS_WORKSPACE_BYTES (32u << 20)
#define DEFAULT_MAX_TOKENS 16384
#define ALIGN 256

struct cuda_layer {
    const void *wqkv, *wo, *wup, *wdown; /* G: [3H,H], [H,H], [I,H], [H,I] */
    const float *bqkv, *bo, *ln1_g, *ln1_b, *bup, *bdown, *ln2_g, *ln2_b;
};

struct cuda_ctx {
    const struct model *model;
    struct model_config cfg;
    int device;
    bool bf16;
    size_t max_tokens;
    cudaStream_t stream;
    cublasHandle_t blas;

    size_t cap, allocated; /* device bytes: the cap and what dev_alloc() handed out */

    void *weights; /* one block; the pointers below point into it */
    size_t weight_bytes;
    const float *word, *pos, *type0, *emb_g, *emb_b;
    struct cuda_layer *layers;
    void *blas_ws;

    void *ws; /* the workspace block, for ws_tokens tokens and ws_seqs sequences */
    size_t ws_bytes, ws_tokens, ws_seqs;
    uint32_t *d_ids, *d_pos;
    int *d_cu;
    float *X, *QKV, *Y, *U, *d_out;
    void *Xg, *C, *Ug; /* G */

    /* COARCH_CUDA_PROFILE=1: time every step with events (serialises nothing, costs ~1%);
     * the totals are logged when the context is freed.  prof[0] GEMMs, prof[1] our kernels. */
    bool profile;
    cudaEvent_t ev[3 + 8 * 64]; /* before and after the embedding, 8 per layer, the pool */
    int n_ev, n_ev_created;
    bool ev_is_gemm[3 + 8 * 64];
    double prof_ms[2];
    unsigned long prof_batches, prof_tokens;

    /* pinned host staging, for host_tokens tokens and host_seqs sequences */
    uint32_t *h_ids, *h_pos;
    int *h_cu;
    float *h_out;
    size_t host_tokens, host_seqs;
};

static int fail_next_alloc;

void embed_cuda_fail_next_alloc(void)
{
    __atomic_store_n(&fail_next_alloc, 1, __ATOMIC_SEQ_CST);
}

/* A CUDA status as a negative errno; logs the failing call at debug level. */
static int cuda_errno(cudaError_t e, const char *what)
{
    if (e == cudaSuccess)
        return 0;
    log_debug("cuda: %s: %s (%s)", what, cudaGetErrorString(e), cudaGetErrorName(e));
    (void)cudaGetLastError(); /* clear a non-sticky error so the next call starts clean */
    switch (e) {
    case cudaErrorMemoryAllocation:
        return -ENOMEM;
    case cudaErrorNoDevice:
    case cudaErrorInsufficientDriver:
    case cudaErrorInvalidDevice:
    case cudaErrorDevicesUnavailable:
        return -ENODEV;
    default:
        return -EIO;
    }
}

static int blas_errno(cublasStatus_t st, const char *what)
{
    if (st == CUBLAS_STATUS_SUCCESS)
        return 0;
    log_debug("cuda: %s: cuBLAS status %d", what, (int)st);
    if (st == CUBLAS_STATUS_ALLOC_FAILED)
        return -ENOMEM;
    if (st == CUBLAS_STATUS_NOT_INITIALIZED)
        return -ENODEV;
    return -EIO;
}

/* ---- probe and settings ---------------------------------------------------------------- */

static struct cuda_blas_api blas_api;

#define STR2(x) #x
#define STR(x) STR2(x)

/* dlopen()s the cuBLAS this was built against (blas.cuh says why not linked).  On failure the
 * reason goes to msg. */
static int blas_load(char *msg, size_t msg_len)
{
    /* The major version it was built against only (another major's ABI may differ): by name
     * through the loader's path, then where CUDA installs it. */
    static const char *const names[] = {
        "libcublas.so." STR(CUBLAS_VER_MAJOR),
        "/usr/local/cuda/lib64/libcublas.so." STR(CUBLAS_VER_MAJOR),
        "/usr/local/cuda/lib/libcublas.so." STR(CUBLAS_VER_MAJOR),
    };
    char first[200] = "";
    void *h = NULL;

    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]) && !h; i++) {
        h = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
        if (!h && i == 0)
            snprintf(first, sizeof(first), "%s", dlerror());
    }
    if (!h) {
        snprintf(msg, msg_len, "cannot load cuBLAS: %s", first);
        return -ENODEV;
    }
    blas_api.create = (decltype(blas_api.create))dlsym(h, "cublasCreate_v2");
    blas_api.destroy = (decltype(blas_api.destroy))dlsym(h, "cublasDestroy_v2");
    blas_api.set_stream = (decltype(blas_api.set_stream))dlsym(h, "cublasSetStream_v2");
    blas_api.set_math_mode = (decltype(blas_api.set_math_mode))dlsym(h, "cublasSetMathMode");
    blas_api.set_workspace = (decltype(blas_api.set_workspace))dlsym(h, "cublasSetWorkspace_v2");
    blas_api.gemm_ex = (decltype(blas_api.gemm_ex))dlsym(h, "cublasGemmEx");
    if (!blas_api.create || !blas_api.destroy || !blas_api.set_stream || !blas_api.set_math_mode ||
        !blas_api.set_workspace || !blas_api.gemm_ex) {
        snprintf(msg, msg_len, "%s lacks a function coarch calls", names[0]);
        dlclose(h);
        return -ENODEV;
    }
    /* kept loaded for the life of the process */
    return 0;
}

static pthread_once_t probe_once = PTHREAD_ONCE_INIT;
static int probe_result;
static int probe_device;
static char probe_name[256];

static void probe_run(void)
{
    int n = 0, best = -1;
    cudaError_t e = cudaGetDeviceCount(&n);

    if (e == cudaErrorInsufficientDriver || e == cudaErrorNoDevice) {
        snprintf(probe_name, sizeof(probe_name), "%s (%s)",
                 e == cudaErrorNoDevice ? "no CUDA device"
                                        : "no NVIDIA driver, or one older than this CUDA runtime",
                 cudaGetErrorName(e));
        (void)cudaGetLastError();
        probe_result = -ENODEV;
        return;
    }
    if (e != cudaSuccess) {
        snprintf(probe_name, sizeof(probe_name), "%s", cudaGetErrorString(e));
        (void)cudaGetLastError();
        probe_result = -ENODEV;
        return;
    }
    if (n == 0) {
        snprintf(probe_name, sizeof(probe_name), "no CUDA device");
        probe_result = -ENODEV;
        return;
    }
    for (int i = 0; i < n && best < 0; i++) {
        cudaDeviceProp p;
        if (cudaGetDeviceProperties(&p, i) != cudaSuccess)
            continue;
        if (p.major >= 8) {
            best = i;
            snprintf(probe_name, sizeof(probe_name), "%s", p.name);
        } else {
            snprintf(probe_name, sizeof(probe_name), "%s: compute capability %d.%d < 8.0", p.name,
                     p.major, p.minor);
        }
    }
    probe_device = best;
    probe_result = best >= 0 ? 0 : -ENODEV;
}

/* cuBLAS is loaded once, at the first context (or when asked at start), not by the probe: a
 * daemon that never loads its model does not carry it (blas.cuh says what it costs). */
static pthread_once_t blas_once = PTHREAD_ONCE_INIT;
static int blas_result;
static char blas_error[256];

static void blas_run(void)
{
    blas_result = blas_load(blas_error, sizeof(blas_error));
}

int embed_cuda_load_blas(char *msg, size_t msg_len)
{
    pthread_once(&blas_once, blas_run);
    if (blas_result < 0 && msg && msg_len)
        snprintf(msg, msg_len, "%s", blas_error);
    return blas_result;
}

int cuda_probe_device_index(void)
{
    pthread_once(&probe_once, probe_run);
    return probe_device;
}

const struct cuda_blas_api *cuda_blas(void)
{
    if (cuda_probe_device_index() < 0 || embed_cuda_load_blas(NULL, 0) < 0)
        return NULL;
    return &blas_api;
}

int embed_cuda_probe(char *name, size_t name_len)
{
    pthread_once(&probe_once, probe_run);
    if (name && name_len)
        snprintf(name, name_len, "%s", probe_name);
    return probe_result;
}

int embed_cuda_memory_fraction(double *ret, char *msg, size_t msg_len)
{
    const char *v = getenv("COARCH_GPU_MEMORY_FRACTION");
    char *end = NULL;
    double f;

    if (!v || !*v) {
        *ret = 0.8;
        return 0;
    }
    f = strtod(v, &end);
    if (end == v || *end || !(f > 0.0 && f <= 1.0)) {
        snprintf(msg, msg_len, "COARCH_GPU_MEMORY_FRACTION=%s: expected a number in (0, 1]", v);
        return -EINVAL;
    }
    *ret = f;
    return 0;
}

/* ---- device memory --------------------------------------------------------------------- */

static int dev_alloc(struct cuda_ctx *c, size_t bytes, void **ret)
{
    void *p = NULL;
    int r;

    if (__atomic_exchange_n(&fail_next_alloc, 0, __ATOMIC_SEQ_CST)) {
        log_debug("cuda: injected allocation failure (%zu bytes)", bytes);
        return -ENOMEM;
    }
    if (c->allocated + bytes > c->cap) {
        log_debug("cuda: %zu bytes would pass the cap of %zu (%zu allocated)", bytes, c->cap,
                  c->allocated);
        return -ENOMEM;
    }
    r = cuda_errno(cudaMalloc(&p, bytes), "cudaMalloc");
    if (r < 0)
        return r;
    c->allocated += bytes;
    *ret = p;
    return 0;
}

static void dev_free(struct cuda_ctx *c, void *p, size_t bytes)
{
    if (!p)
        return;
    cudaFree(p);
    c->allocated -= bytes;
}

static size_t align_up(size_t n)
{
    return (n + ALIGN - 1) / ALIGN * ALIGN;
}

/* ---- weights --------------------------------------------------------------------------- */

/* Carves consecutive aligned pieces out of one block (or, with base NULL, only counts). */
struct carver {
    char *base;
    size_t off;
};

static void *carve(struct carver *cv, size_t bytes)
{
    void *p = cv->base ? cv->base + cv->off : NULL;

    cv->off += align_up(bytes);
    return p;
}

/* Copies n fp32 values from the (unaligned) mapping at src to dst on the device, as fp32 or,
 * when as_g and bf16, converted through the fp32 staging buffer tmp (n floats on the device). */
static int upload(struct cuda_ctx *c, void *dst, const void *src, size_t n, bool as_g, float *host,
                  float *tmp)
{
    int r;

    /* Everything on c->stream, waited for before `host` and `tmp` are reused: the stream is
     * non-blocking, so a plain cudaMemcpy (legacy stream) would not be ordered with it. */
    memcpy(host, src, n * sizeof(float));
    if (!as_g || !c->bf16) {
        r = cuda_errno(
            cudaMemcpyAsync(dst, host, n * sizeof(float), cudaMemcpyHostToDevice, c->stream),
            "upload");
    } else {
        r = cuda_errno(
            cudaMemcpyAsync(tmp, host, n * sizeof(float), cudaMemcpyHostToDevice, c->stream),
            "upload");
        if (r >= 0)
            r = cuda_errno(launch_to_bf16(tmp, n, (__nv_bfloat16 *)dst, c->stream), "to_bf16");
    }
    if (r >= 0)
        r = cuda_errno(cudaStreamSynchronize(c->stream), "upload");
    return r;
}

/* Releases the mapping's pages of an uploaded tensor: the device copy is what runs. */
static void release_pages(const struct cuda_ctx *c, const void *p, size_t n)
{
    if (c->model->weights)
        (void)safetensors_release_pages(c->model->weights, p, n * sizeof(float));
}

static int upload_weights(struct cuda_ctx *c)
{
    const struct model *m = c->model;
    const size_t H = c->cfg.hidden, I = c->cfg.intermediate, L = c->cfg.n_layers;
    const size_t gsz = c->bf16 ? sizeof(__nv_bfloat16) : sizeof(float);
    const size_t big = 3 * H * H > I * H ? 3 * H * H : I * H; /* the largest matrix */
    struct carver cv = {NULL, 0};
    float *host = NULL, *tmp = NULL;
    int r = 0;

    /* Pass 1 counts, pass 2 carves the real block. */
    for (int pass = 0; pass < 2; pass++) {
        cv.off = 0;
        c->word = (const float *)carve(&cv, (size_t)c->cfg.vocab_size * H * 4);
        c->pos = (const float *)carve(&cv, (size_t)c->cfg.max_position * H * 4);
        c->type0 = (const float *)carve(&cv, H * 4);
        c->emb_g = (const float *)carve(&cv, H * 4);
        c->emb_b = (const float *)carve(&cv, H * 4);
        for (size_t l = 0; l < L; l++) {
            struct cuda_layer *y = &c->layers[l];
            y->wqkv = carve(&cv, 3 * H * H * gsz);
            y->wo = carve(&cv, H * H * gsz);
            y->wup = carve(&cv, I * H * gsz);
            y->wdown = carve(&cv, H * I * gsz);
            y->bqkv = (const float *)carve(&cv, 3 * H * 4);
            y->bo = (const float *)carve(&cv, H * 4);
            y->ln1_g = (const float *)carve(&cv, H * 4);
            y->ln1_b = (const float *)carve(&cv, H * 4);
            y->bup = (const float *)carve(&cv, I * 4);
            y->bdown = (const float *)carve(&cv, H * 4);
            y->ln2_g = (const float *)carve(&cv, H * 4);
            y->ln2_b = (const float *)carve(&cv, H * 4);
        }
        if (pass == 0) {
            c->weight_bytes = cv.off;
            r = dev_alloc(c, c->weight_bytes, &c->weights);
            if (r < 0)
                return r;
            cv.base = (char *)c->weights;
        }
    }

    {
        size_t most = big;
        most = (size_t)c->cfg.vocab_size * H > most ? (size_t)c->cfg.vocab_size * H : most;
        most = (size_t)c->cfg.max_position * H > most ? (size_t)c->cfg.max_position * H : most;
        host = (float *)malloc(most * sizeof(float)); /* the largest tensor uploaded */
    }
    if (!host)
        return -ENOMEM;
    if (c->bf16) {
        r = dev_alloc(c, big * sizeof(float), (void **)&tmp);
        if (r < 0) {
            free(host);
            return r;
        }
    }

#define UP(dst, src, n, g)                                                                         \
    do {                                                                                           \
        if (r >= 0) {                                                                              \
            r = upload(c, (void *)(dst), (src), (n), (g), host, tmp);                              \
            if (r >= 0)                                                                            \
                release_pages(c, (src), (n));                                                      \
        }                                                                                          \
    } while (0)

    UP(c->word, m->word_emb, (size_t)c->cfg.vocab_size * H, false);
    UP(c->pos, m->pos_emb, (size_t)c->cfg.max_position * H, false);
    UP(c->type0, m->type_emb, H, false); /* row 0: single-text inputs */
    UP(c->emb_g, m->emb_ln_g, H, false);
    UP(c->emb_b, m->emb_ln_b, H, false);
    for (size_t l = 0; l < L && r >= 0; l++) {
        const struct model_layer_weights *w = &m->layers[l];
        struct cuda_layer *y = &c->layers[l];
        char *qkv = (char *)y->wqkv, *bqkv = (char *)y->bqkv;

        /* Q, K and V stacked into one [3H, H] matrix (and their biases into [3H]). */
        UP(qkv, w->q_w, H * H, true);
        UP(qkv + H * H * gsz, w->k_w, H * H, true);
        UP(qkv + 2 * H * H * gsz, w->v_w, H * H, true);
        UP(bqkv, w->q_b, H, false);
        UP(bqkv + H * 4, w->k_b, H, false);
        UP(bqkv + 2 * H * 4, w->v_b, H, false);
        UP(y->wo, w->o_w, H * H, true);
        UP(y->wup, w->up_w, I * H, true);
        UP(y->wdown, w->down_w, H * I, true);
        UP(y->bo, w->o_b, H, false);
        UP(y->ln1_g, w->ln1_g, H, false);
        UP(y->ln1_b, w->ln1_b, H, false);
        UP(y->bup, w->up_b, I, false);
        UP(y->bdown, w->down_b, H, false);
        UP(y->ln2_g, w->ln2_g, H, false);
        UP(y->ln2_b, w->ln2_b, H, false);
    }
#undef UP
    dev_free(c, tmp, big * sizeof(float));
    free(host);
    return r;
}

/* ---- workspace ------------------------------------------------------------------------- */

static void workspace_free(struct cuda_ctx *c)
{
    dev_free(c, c->ws, c->ws_bytes);
    c->ws = NULL;
    c->ws_bytes = c->ws_tokens = c->ws_seqs = 0;
}

/* Makes the workspace hold a batch of `tokens` tokens and `seqs` sequences. */
static int workspace_reserve(struct cuda_ctx *c, size_t tokens, size_t seqs)
{
    const size_t H = c->cfg.hidden, I = c->cfg.intermediate;
    const size_t gsz = c->bf16 ? sizeof(__nv_bfloat16) : sizeof(float);
    struct carver cv = {NULL, 0};
    void *ws = NULL;
    int r;

    if (tokens <= c->ws_tokens && seqs <= c->ws_seqs)
        return 0;
    /* Grow to the larger of what is asked and what we had, so sizes do not ping-pong. */
    tokens = tokens > c->ws_tokens ? tokens : c->ws_tokens;
    seqs = seqs > c->ws_seqs ? seqs : c->ws_seqs;
    for (int pass = 0; pass < 2; pass++) {
        cv.off = 0;
        c->d_ids = (uint32_t *)carve(&cv, tokens * 4);
        c->d_pos = (uint32_t *)carve(&cv, tokens * 4);
        c->d_cu = (int *)carve(&cv, (seqs + 1) * sizeof(int));
        c->X = (float *)carve(&cv, tokens * H * 4);
        c->QKV = (float *)carve(&cv, tokens * 3 * H * 4);
        c->Y = (float *)carve(&cv, tokens * H * 4);
        c->U = (float *)carve(&cv, tokens * I * 4);
        c->d_out = (float *)carve(&cv, seqs * H * 4);
        c->C = carve(&cv, tokens * H * gsz);
        c->Xg = c->bf16 ? carve(&cv, tokens * H * gsz) : (void *)c->X;
        c->Ug = c->bf16 ? carve(&cv, tokens * I * gsz) : (void *)c->U;
        if (pass == 0) {
            workspace_free(c); /* before allocating: the old block counts against the cap */
            r = dev_alloc(c, cv.off, &ws);
            if (r < 0)
                return r;
            cv.base = (char *)ws;
        }
    }
    c->ws = ws;
    c->ws_bytes = cv.off;
    c->ws_tokens = tokens;
    c->ws_seqs = seqs;
    return 0;
}

static void host_free(struct cuda_ctx *c)
{
    cudaFreeHost(c->h_ids);
    cudaFreeHost(c->h_pos);
    cudaFreeHost(c->h_cu);
    cudaFreeHost(c->h_out);
    c->h_ids = c->h_pos = NULL;
    c->h_cu = NULL;
    c->h_out = NULL;
    c->host_tokens = c->host_seqs = 0;
}

static int host_reserve(struct cuda_ctx *c, size_t tokens, size_t seqs)
{
    int r;

    if (tokens <= c->host_tokens && seqs <= c->host_seqs)
        return 0;
    tokens = tokens > c->host_tokens ? tokens : c->host_tokens;
    seqs = seqs > c->host_seqs ? seqs : c->host_seqs;
    host_free(c);
    r = cuda_errno(cudaMallocHost((void **)&c->h_ids, tokens * 4), "cudaMallocHost");
    if (r >= 0)
        r = cuda_errno(cudaMallocHost((void **)&c->h_pos, tokens * 4), "cudaMallocHost");
    if (r >= 0)
        r = cuda_errno(cudaMallocHost((void **)&c->h_cu, (seqs + 1) * sizeof(int)),
                       "cudaMallocHost");
    if (r >= 0)
        r = cuda_errno(cudaMallocHost((void **)&c->h_out, seqs * c->cfg.hidden * sizeof(float)),
                       "cudaMallocHost");
    if (r < 0) {
        host_free(c);
        return r;
    }
    c->host_tokens = tokens;
    c->host_seqs = seqs;
    return 0;
}

/* ---- the ops --------------------------------------------------------------------------- */

static bool cuda_supports(const struct model_config *cfg)
{
    if (embed_cuda_probe(NULL, 0) < 0)
        return false;
    return (cfg->head_dim == 32 || cfg->head_dim == 64) && cfg->hidden <= KERNELS_MAX_HIDDEN &&
           cfg->hidden == cfg->n_heads * cfg->head_dim && cfg->max_seq_length <= KERNELS_MAX_SEQ;
}

static void *cuda_free_ctx(void *ctx)
{
    struct cuda_ctx *c = (struct cuda_ctx *)ctx;

    if (!c)
        return NULL;
    cudaSetDevice(c->device);
    if (c->stream)
        cudaStreamSynchronize(c->stream);
    (void)cudaGetLastError();
    if (c->profile) {
        double all = c->prof_ms[0] + c->prof_ms[1];
        log_info("cuda profile: %lu batches, %lu tokens: GEMMs %.1f ms (%.0f%%), our kernels "
                 "%.1f ms (%.0f%%)",
                 c->prof_batches, c->prof_tokens, c->prof_ms[0],
                 all > 0 ? 100.0 * c->prof_ms[0] / all : 0.0, c->prof_ms[1],
                 all > 0 ? 100.0 * c->prof_ms[1] / all : 0.0);
        for (int i = 0; i < c->n_ev_created; i++)
            cudaEventDestroy(c->ev[i]);
    }
    if (c->blas)
        blas_api.destroy(c->blas); /* before its workspace goes */
    workspace_free(c);
    host_free(c);
    dev_free(c, c->blas_ws, CUBLAS_WORKSPACE_BYTES);
    dev_free(c, c->weights, c->weight_bytes);
    if (c->stream)
        cudaStreamDestroy(c->stream);
    free(c->layers);
    free(c);
    return NULL;
}

static int cuda_init(const struct model *model, const struct embed_backend_options *options,
                     void **ret_ctx)
{
    struct cuda_ctx *c;
    size_t free_b = 0, total_b = 0;
    double fraction;
    char msg[160];
    int r;

    static const struct embed_backend_options defaults = {0, 0, EMBED_PRECISION_FP32};

    if (!options)
        options = &defaults;
    if (options->precision != EMBED_PRECISION_FP32 && options->precision != EMBED_PRECISION_BF16)
        return -ENOTSUP; /* int8 is the CPU's */
    if (!cuda_supports(&model->config))
        return -ENOTSUP;
    r = embed_cuda_memory_fraction(&fraction, msg, sizeof(msg));
    if (r < 0) {
        log_debug("cuda: %s", msg);
        return r;
    }
    r = embed_cuda_load_blas(msg, sizeof(msg));
    if (r < 0) {
        log_debug("cuda: %s", msg);
        return r; /* -ENODEV: auto goes on to the CPU */
    }
    c = (struct cuda_ctx *)calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    c->model = model;
    c->cfg = model->config;
    c->device = probe_device;
    c->bf16 = options->precision == EMBED_PRECISION_BF16;
    c->max_tokens = options->max_batch_tokens ? options->max_batch_tokens : DEFAULT_MAX_TOKENS;
    c->layers = (struct cuda_layer *)calloc(c->cfg.n_layers, sizeof(*c->layers));
    if (!c->layers) {
        free(c);
        return -ENOMEM;
    }
    r = cuda_errno(cudaSetDevice(c->device), "cudaSetDevice");
    if (r >= 0)
        r = cuda_errno(cudaMemGetInfo(&free_b, &total_b), "cudaMemGetInfo");
    if (r >= 0) {
        c->cap = (size_t)(fraction * (double)total_b);
        r = cuda_errno(cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking),
                       "cudaStreamCreate");
    }
    if (r >= 0)
        r = blas_errno(blas_api.create(&c->blas), "cublasCreate");
    if (r >= 0)
        r = blas_errno(blas_api.set_stream(c->blas, c->stream), "cublasSetStream");
    if (r >= 0)
        r = blas_errno(
            blas_api.set_math_mode(c->blas, c->bf16 ? CUBLAS_DEFAULT_MATH : CUBLAS_PEDANTIC_MATH),
            "cublasSetMathMode");
    if (r >= 0)
        r = dev_alloc(c, CUBLAS_WORKSPACE_BYTES, &c->blas_ws);
    if (r >= 0)
        r = blas_errno(blas_api.set_workspace(c->blas, c->blas_ws, CUBLAS_WORKSPACE_BYTES),
                       "cublasSetWorkspace");
    if (r >= 0)
        r = upload_weights(c);
    if (r >= 0 && getenv("COARCH_CUDA_PROFILE") && strcmp(getenv("COARCH_CUDA_PROFILE"), "0")) {
        if (c->cfg.n_layers > 64) {
            log_debug("cuda: profiling covers 64 layers at most");
        } else {
            c->profile = true;
            for (size_t i = 0; r >= 0 && i < sizeof(c->ev) / sizeof(c->ev[0]); i++) {
                r = cuda_errno(cudaEventCreate(&c->ev[i]), "cudaEventCreate");
                if (r >= 0)
                    c->n_ev_created++;
            }
        }
    }
    if (r < 0) {
        cuda_free_ctx(c);
        return r;
    }
    log_debug("cuda: %s weights on device %d: %zu MiB (cap %zu MiB of %zu)",
              c->bf16 ? "bf16" : "fp32", c->device, c->weight_bytes >> 20, c->cap >> 20,
              total_b >> 20);
    *ret_ctx = c;
    return 0;
}

static int cuda_get_memory(void *ctx, struct embed_backend_memory *ret)
{
    struct cuda_ctx *c = (struct cuda_ctx *)ctx;
    size_t free_b = 0, total_b = 0;

    memset(ret, 0, sizeof(*ret));
    ret->weights = c->weight_bytes;
    ret->workspace = c->ws_bytes + CUBLAS_WORKSPACE_BYTES;
    ret->on_device = true;
    if (cudaSetDevice(c->device) == cudaSuccess &&
        cudaMemGetInfo(&free_b, &total_b) == cudaSuccess) {
        ret->device_total = total_b;
        ret->device_free = free_b;
    } else {
        (void)cudaGetLastError();
    }
    return 0;
}

/* Y[T, N] = A[T, K] W[N, K]^T: column-major cuBLAS sees Y^T = W A^T. */
static int gemm(struct cuda_ctx *c, const void *W, const void *A, float *Y, int T, int N, int K)
{
    const float alpha = 1.0f, beta = 0.0f;
    cudaDataType_t t = c->bf16 ? CUDA_R_16BF : CUDA_R_32F;
    cublasComputeType_t ct = c->bf16 ? CUBLAS_COMPUTE_32F : CUBLAS_COMPUTE_32F_PEDANTIC;

    return blas_errno(blas_api.gemm_ex(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, N, T, K, &alpha, W, t, K,
                                       A, t, K, &beta, Y, CUDA_R_32F, N, ct, CUBLAS_GEMM_DEFAULT),
                      "cublasGemmEx");
}

/* Profiling: an event after every step; `gemm` says which kind the step ending here was. */
static void mark(struct cuda_ctx *c, bool gemm)
{
    if (!c->profile || c->n_ev >= (int)(sizeof(c->ev) / sizeof(c->ev[0])))
        return;
    c->ev_is_gemm[c->n_ev] = gemm;
    if (cudaEventRecord(c->ev[c->n_ev], c->stream) == cudaSuccess)
        c->n_ev++;
    else
        (void)cudaGetLastError(); /* a lost mark must not fail the next launch */
}

/* After the batch's sync: add the steps' times to the totals. */
static void profile_collect(struct cuda_ctx *c, int T)
{
    for (int i = 1; c->profile && i < c->n_ev; i++) {
        float ms = 0;
        if (cudaEventElapsedTime(&ms, c->ev[i - 1], c->ev[i]) == cudaSuccess)
            c->prof_ms[c->ev_is_gemm[i] ? 0 : 1] += ms;
    }
    if (c->profile) {
        c->prof_batches++;
        c->prof_tokens += (unsigned long)T;
    }
    c->n_ev = 0;
}

template <typename G> static int forward(struct cuda_ctx *c, int T, int n_seqs, int max_len)
{
    const struct model_config *f = &c->cfg;
    const int H = (int)f->hidden, I = (int)f->intermediate;
    G *Xg = c->bf16 ? (G *)c->Xg : NULL; /* fp32: the GEMMs read X itself */
    const void *xin = c->bf16 ? c->Xg : (const void *)c->X;
    int r;

    mark(c, false);
    r = cuda_errno(launch_embed_ln<G>(c->d_ids, c->d_pos, T, c->word, c->pos, c->type0, c->emb_g,
                                      c->emb_b, H, f->ln_eps, c->X, Xg, c->stream),
                   "embed_ln");
    mark(c, false);
    for (unsigned l = 0; l < f->n_layers && r >= 0; l++) {
        const struct cuda_layer *y = &c->layers[l];

        r = gemm(c, y->wqkv, xin, c->QKV, T, 3 * H, H);
        mark(c, true);
        if (r >= 0)
            r = cuda_errno(launch_attention<G>(c->QKV, y->bqkv, c->d_cu, n_seqs, max_len, H,
                                               (int)f->n_heads, (int)f->head_dim, (G *)c->C,
                                               c->stream),
                           "attention");
        mark(c, false);
        if (r >= 0)
            r = gemm(c, y->wo, c->C, c->Y, T, H, H);
        mark(c, true);
        if (r >= 0)
            r = cuda_errno(launch_bias_residual_ln<G>(c->Y, y->bo, c->X, y->ln1_g, y->ln1_b, T, H,
                                                      f->ln_eps, Xg, c->stream),
                           "ln1");
        mark(c, false);
        if (r >= 0)
            r = gemm(c, y->wup, xin, c->U, T, I, H);
        mark(c, true);
        if (r >= 0)
            r = cuda_errno(launch_bias_gelu<G>(c->U, y->bup, T, I, (G *)c->Ug, c->stream), "gelu");
        mark(c, false);
        if (r >= 0)
            r = gemm(c, y->wdown, c->Ug, c->Y, T, H, I);
        mark(c, true);
        if (r >= 0)
            r = cuda_errno(launch_bias_residual_ln<G>(c->Y, y->bdown, c->X, y->ln2_g, y->ln2_b, T,
                                                      H, f->ln_eps, Xg, c->stream),
                           "ln2");
        mark(c, false);
    }
    if (r >= 0)
        r = cuda_errno(launch_pool(c->X, c->d_cu, n_seqs, H, f->pooling == MODEL_POOLING_CLS,
                                   f->normalize, c->d_out, c->stream),
                       "pool");
    mark(c, false);
    return r;
}

static int cuda_encode_batch(void *ctx, const struct embed_batch *b, float *out)
{
    struct cuda_ctx *c = (struct cuda_ctx *)ctx;
    const size_t H = c->cfg.hidden;
    size_t t = 0;
    int max_len = 0, r;

    if (b->n_seqs == 0)
        return 0;
    if (b->n_tokens > c->max_tokens)
        return -E2BIG;
    r = cuda_errno(cudaSetDevice(c->device), "cudaSetDevice");
    if (r >= 0)
        r = host_reserve(c, b->n_tokens, b->n_seqs);
    if (r < 0)
        return r;
    /* Check and stage on the host: ids, positions restarting per sequence, offsets. */
    c->h_cu[0] = 0;
    for (size_t s = 0; s < b->n_seqs; s++) {
        uint32_t len = b->lengths[s];
        if (len == 0 || len > c->cfg.max_seq_length || t + len > b->n_tokens)
            return -EINVAL;
        for (uint32_t p = 0; p < len; p++, t++) {
            if (b->ids[t] >= c->cfg.vocab_size)
                return -EINVAL;
            c->h_ids[t] = b->ids[t];
            c->h_pos[t] = p;
        }
        c->h_cu[s + 1] = (int)t;
        if ((int)len > max_len)
            max_len = (int)len;
    }
    if (t != b->n_tokens)
        return -EINVAL;
    r = workspace_reserve(c, b->n_tokens, b->n_seqs);
    if (r < 0)
        return r;
    r = cuda_errno(cudaMemcpyAsync(c->d_ids, c->h_ids, t * 4, cudaMemcpyHostToDevice, c->stream),
                   "copy ids");
    if (r >= 0)
        r = cuda_errno(
            cudaMemcpyAsync(c->d_pos, c->h_pos, t * 4, cudaMemcpyHostToDevice, c->stream),
            "copy positions");
    if (r >= 0)
        r = cuda_errno(cudaMemcpyAsync(c->d_cu, c->h_cu, (b->n_seqs + 1) * sizeof(int),
                                       cudaMemcpyHostToDevice, c->stream),
                       "copy offsets");
    if (r >= 0)
        r = c->bf16 ? forward<__nv_bfloat16>(c, (int)t, (int)b->n_seqs, max_len)
                    : forward<float>(c, (int)t, (int)b->n_seqs, max_len);
    if (r >= 0)
        r = cuda_errno(cudaMemcpyAsync(c->h_out, c->d_out, b->n_seqs * H * sizeof(float),
                                       cudaMemcpyDeviceToHost, c->stream),
                       "copy vectors");
    /* Always wait: nothing of this batch may still run when we return, error or not. */
    int rs = cuda_errno(cudaStreamSynchronize(c->stream), "batch");
    if (r >= 0)
        r = rs;
    profile_collect(c, (int)t);
    if (r < 0)
        return r;
    memcpy(out, c->h_out, b->n_seqs * H * sizeof(float));
    return 0;
}

static void cuda_release_memory(void *ctx)
{
    struct cuda_ctx *c = (struct cuda_ctx *)ctx;

    if (cudaSetDevice(c->device) == cudaSuccess)
        cudaStreamSynchronize(c->stream);
    workspace_free(c);
    host_free(c);
}

extern "C" const struct embed_backend_ops embed_backend_cuda = {
    EMBED_BACKEND_ABI_VERSION,
    "cuda",
    cuda_supports,
    cuda_init,
    cuda_free_ctx,
    cuda_get_memory,
    cuda_encode_batch,
    cuda_release_memory,
};
