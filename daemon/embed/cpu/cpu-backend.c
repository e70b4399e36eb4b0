/*
 * cpu-backend.c - the reference backend: the exact BERT forward pass in fp32 on the host.
 *
 * DESIGN
 *
 * Math (HF BertModel + sentence-transformers Pooling/Normalize, see research/inference.md §1):
 * embeddings = LN((word[id] + type[0]) + pos[p]) with p restarting at 0 per sequence; per layer
 * (post-LN) QKV = X Wqkv^T (one fused [3H, H] GEMM), per-head softmax(Q K^T / sqrt(d)) V with the
 * Q/K/V biases added inside the attention kernel, X = LN(X + C Wo^T + bo),
 * X = LN(X + GELU_erf(X Wup^T + bup) Wdown^T + bdown); then mean over all tokens (or token 0)
 * and x / max(|x|, 1e-12).  LayerNorm statistics, softmax and pooling are fp32.  With CLS
 * pooling the last layer computes only row 0 of each sequence after the QKV GEMM (llama.cpp's
 * inp_out_ids trick): the same numbers, ~1/n_layers of the FFN and O-projection work saved.
 *
 * Batches are packed (no padding): every GEMM runs over the sum of the lengths, attention loops
 * over the sequences, so no FLOP is spent on pad tokens and no mask is needed.
 *
 * Threads: with n threads, the batch is split into n contiguous runs of sequences of about equal
 * cost (linear FLOPs ~ tokens, attention ~ tokens^2), and each thread runs the whole forward on
 * its run with single-threaded OpenBLAS calls and its own kernels.  Nothing is shared but the
 * read-only weights, so there is no barrier inside a forward and elementwise work and attention
 * parallelise as well as the GEMMs.  COARCH_CPU_THREADING=blas selects the alternative (one
 * forward over the whole batch, OpenBLAS's own n threads inside each GEMM, everything else on
 * the calling thread) for comparison: on 2 Zen 4 cores the split runs 15-25% more tokens per
 * CPU-second (docs/embedding.md has the numbers).
 *
 * OpenBLAS core type: Debian's OpenBLAS 0.3.21 (DYNAMIC_ARCH) has been measured picking Haswell
 * (AVX2) kernels on an AVX-512 Zen 5, losing about 2x (on Zen 4 it picks Cooperlake, which is
 * fine), and reads OPENBLAS_CORETYPE only in its library constructor, before main().  Setting it
 * from .preinit_array does not work either: glibc resets environ when libc initialises, after
 * preinit functions ran.  So executables call embed_cpu_setup_process() first thing in main(),
 * which re-executes the program with OPENBLAS_CORETYPE=SkylakeX when needed (see cpu.h); the
 * systemd unit may set it directly.
 *
 * Memory: weights are copied once into one 64-byte-aligned block (fused QKV; the mapping's pages
 * for them are then released), except the word-embedding table, which is read in place from the
 * mapping (only the rows of ids seen become resident).  Activations live in one workspace sized
 * for the largest batch seen so far (at most max_batch_tokens), reused across batches; its
 * growth is the only allocation on the encode path, and failure there returns -ENOMEM with the
 * backend intact.
 */
#include <cblas.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "backend.h"
#include "cpu.h"
#include "gemm.h"
#include "kernels.h"
#include "log.h"
#include "macro.h"

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the CPU backend reads safetensors' little-endian fp32 directly"
#endif

/* Rows of the FFN processed at once, bounding its [rows, FF] intermediate per thread (128, 512
 * and 4096 measured within noise of each other on Zen 4). */
#define FFN_CHUNK 512
#define DEFAULT_MAX_TOKENS 8192
#define MAX_THREADS 64

static bool cpu_has_avx512(void)
{
#ifdef __x86_64__
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
           __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
#else
    return false;
#endif
}

/* OpenBLAS core types whose sgemm kernels use AVX-512. */
static bool blas_core_is_avx512(const char *core)
{
    static const char *const names[] = {"SkylakeX", "Cooperlake", "SapphireRapids"};

    for (size_t i = 0; i < ELEMENTSOF(names); i++)
        if (strcasecmp(core, names[i]) == 0)
            return true;
    return false;
}

int embed_cpu_setup_process(char **argv)
{
    const char *core = openblas_get_corename();

    if (getenv("OPENBLAS_CORETYPE") || !cpu_has_avx512() || !core || blas_core_is_avx512(core))
        return 0;
    if (setenv("OPENBLAS_CORETYPE", "SkylakeX", 1) < 0)
        return -errno;
    execv("/proc/self/exe", argv);
    /* Still here: run on with the kernels OpenBLAS chose. */
    unsetenv("OPENBLAS_CORETYPE");
    return -errno;
}

enum cpu_threading {
    CPU_THREADING_SPLIT, /* our threads split the batch, BLAS single-threaded */
    CPU_THREADING_BLAS,  /* one forward, OpenBLAS threads inside GEMMs */
};

/* The four weight matrices of a layer, in the order copy_weights() prepares them. */
enum cpu_matrix {
    CPU_MATRIX_QKV,  /* [3H, H] */
    CPU_MATRIX_O,    /* [H, H] */
    CPU_MATRIX_UP,   /* [FF, H] */
    CPU_MATRIX_DOWN, /* [H, FF] */
    CPU_MATRIX_COUNT,
};

struct cpu_layer {
    struct cpu_gemm_weights mat[CPU_MATRIX_COUNT];
    float *bqkv; /* [3H] */
    float *bo;
    float *ln1_g, *ln1_b;
    float *bup; /* [FF] */
    float *bdown;
    float *ln2_g, *ln2_b;
};

struct cpu_ctx;

/* One thread's share of a batch, and its private scratch. */
struct cpu_worker {
    struct cpu_ctx *ctx;
    pthread_t thread;
    bool started;
    float *attn;   /* cpu_attention_scratch_floats(max_seq_length, n_heads, head_dim) */
    float *ffn;    /* FFN_CHUNK x FF */
    void *gemm;    /* cpu_gemm_scratch_bytes(FF) (bf16 / int8 GEMMs) */
    size_t s0, s1; /* sequences [s0, s1) of the current batch */
    size_t t0;     /* token offset of s0 */
};

struct cpu_ctx {
    const struct model *model;
    struct model_config cfg;
    const struct cpu_kernels *k; /* &kern */
    struct cpu_kernels kern;     /* the chosen kernels; attention in bf16 for bf16/int8 */
    enum cpu_threading threading;
    enum embed_precision precision;
    enum cpu_gemm_format format[CPU_MATRIX_COUNT]; /* per matrix kind, from the precision */

    /* Weights: one block, 64-byte aligned pieces (fp32 matrices included); the bf16/int8
     * matrices are packed in their own allocations (counted in wbytes). */
    float *wblock;
    size_t wbytes;
    const unsigned char *word_emb; /* in the mapping, unaligned */
    float *pos, *type0, *emb_g, *emb_b;
    struct cpu_layer *layers;

    /* Workspace: cap rows of X, C, T (H wide each) and QKV (3H wide). */
    size_t max_tokens, cap;
    float *ws, *x, *c, *t, *qkv;
    size_t scratch_bytes; /* per-worker attn + ffn, all workers */

    /* Worker pool; workers[0] is the calling thread. */
    unsigned n_workers;
    struct cpu_worker *workers;
    pthread_mutex_t lock;
    pthread_cond_t start, done;
    unsigned generation, pending;
    bool stop, sync_init;
    const struct embed_batch *batch;
    size_t *offsets; /* token offset of every sequence of the batch */
    size_t offsets_cap;
    float *out;
};

static void *aligned_floats(size_t n)
{
    size_t bytes;

    if (!size_mul_ok(n, sizeof(float), &bytes) || bytes > SIZE_MAX - 63)
        return NULL;
    return aligned_alloc(64, (bytes + 63) & ~(size_t)63);
}

static bool cpu_supports(const struct model_config *cfg)
{
    /* The forward pass is generic in every dimension the config loader accepts. */
    return cfg->hidden > 0 && cfg->head_dim > 0;
}

/* Carve the weight block: each piece rounded to 16 floats so all start 64-byte aligned. */
static size_t round16(size_t n)
{
    return (n + 15) & ~(size_t)15;
}

/*
 * One weight matrix [n, k] from the mapping: fp32 is copied into the block at *p (which then
 * advances); bf16/int8 are packed from an aligned copy in `tmp` (the mapping is unaligned).
 * Either way the mapping's pages for it are released.
 */
static int take_matrix(struct cpu_ctx *c, float **p, float *tmp, struct cpu_gemm_weights *w,
                       enum cpu_gemm_format f, const void *src, size_t n, size_t k)
{
    float *dst = f == CPU_GEMM_F32 ? *p : tmp;
    int r;

    memcpy(dst, src, n * k * sizeof(float));
    safetensors_release_pages(c->model->weights, src, n * k * sizeof(float));
    r = cpu_gemm_pack(w, f, dst, n, k);
    if (r < 0)
        return r;
    if (f == CPU_GEMM_F32)
        *p += round16(n * k);
    c->wbytes += w->bytes;
    return 0;
}

static int copy_weights(struct cpu_ctx *c)
{
    const struct model *m = c->model;
    const struct model_config *g = &c->cfg;
    const size_t H = g->hidden, FF = g->intermediate;
    const size_t dims[CPU_MATRIX_COUNT][2] = {{3 * H, H}, {H, H}, {FF, H}, {H, FF}};
    size_t n, per_layer, tmp_n = 0;
    float *p, *tmp = NULL;
    int r = 0;

    per_layer = round16(3 * H) + 5 * round16(H) + round16(FF) + round16(H);
    for (int i = 0; i < CPU_MATRIX_COUNT; i++) {
        if (c->format[i] == CPU_GEMM_F32)
            per_layer += round16(dims[i][0] * dims[i][1]);
        else
            tmp_n = MAX(tmp_n, dims[i][0] * dims[i][1]);
    }
    /* QKV is fused from three tensors, so it always goes through a contiguous copy. */
    tmp_n = MAX(tmp_n, 3 * H * H);
    n = round16((size_t)g->max_position * H) + 3 * round16(H) + per_layer * g->n_layers;
    c->wblock = aligned_floats(n);
    tmp = aligned_floats(tmp_n);
    c->layers = calloc(g->n_layers, sizeof(*c->layers));
    if (!c->wblock || !tmp || !c->layers) {
        free(tmp);
        return -ENOMEM;
    }
    c->wbytes = n * sizeof(float);

    p = c->wblock;
#define TAKE(dst, src, count)                                                                      \
    do {                                                                                           \
        (dst) = p;                                                                                 \
        memcpy(p, (src), (count) * sizeof(float));                                                 \
        safetensors_release_pages(m->weights, (src), (count) * sizeof(float));                     \
        p += round16(count);                                                                       \
    } while (0)
    TAKE(c->pos, m->pos_emb, (size_t)g->max_position * H);
    TAKE(c->type0, m->type_emb, H); /* single-text inputs: token type 0 only */
    TAKE(c->emb_g, m->emb_ln_g, H);
    TAKE(c->emb_b, m->emb_ln_b, H);
    for (unsigned i = 0; i < g->n_layers && r >= 0; i++) {
        const struct model_layer_weights *w = &m->layers[i];
        struct cpu_layer *l = &c->layers[i];
        float *qkv = c->format[CPU_MATRIX_QKV] == CPU_GEMM_F32 ? p : tmp;

        /* Fused QKV: rows [0,H) are Q, [H,2H) K, [2H,3H) V. */
        memcpy(qkv, w->q_w, H * H * sizeof(float));
        memcpy(qkv + H * H, w->k_w, H * H * sizeof(float));
        memcpy(qkv + 2 * H * H, w->v_w, H * H * sizeof(float));
        safetensors_release_pages(m->weights, w->q_w, H * H * sizeof(float));
        safetensors_release_pages(m->weights, w->k_w, H * H * sizeof(float));
        safetensors_release_pages(m->weights, w->v_w, H * H * sizeof(float));
        r = cpu_gemm_pack(&l->mat[CPU_MATRIX_QKV], c->format[CPU_MATRIX_QKV], qkv, 3 * H, H);
        if (r < 0)
            break;
        c->wbytes += l->mat[CPU_MATRIX_QKV].bytes;
        if (qkv == p)
            p += round16(3 * H * H);
        l->bqkv = p;
        memcpy(p, w->q_b, H * sizeof(float));
        memcpy(p + H, w->k_b, H * sizeof(float));
        memcpy(p + 2 * H, w->v_b, H * sizeof(float));
        p += round16(3 * H);
        r = take_matrix(c, &p, tmp, &l->mat[CPU_MATRIX_O], c->format[CPU_MATRIX_O], w->o_w, H, H);
        if (r < 0)
            break;
        TAKE(l->bo, w->o_b, H);
        TAKE(l->ln1_g, w->ln1_g, H);
        TAKE(l->ln1_b, w->ln1_b, H);
        r = take_matrix(c, &p, tmp, &l->mat[CPU_MATRIX_UP], c->format[CPU_MATRIX_UP], w->up_w, FF,
                        H);
        if (r < 0)
            break;
        TAKE(l->bup, w->up_b, FF);
        r = take_matrix(c, &p, tmp, &l->mat[CPU_MATRIX_DOWN], c->format[CPU_MATRIX_DOWN], w->down_w,
                        H, FF);
        if (r < 0)
            break;
        TAKE(l->bdown, w->down_b, H);
        TAKE(l->ln2_g, w->ln2_g, H);
        TAKE(l->ln2_b, w->ln2_b, H);
    }
#undef TAKE
    free(tmp);
    c->word_emb = m->word_emb;
    return r;
}

/* Make room for `tokens` rows; grows only, to at most max_tokens. */
static int ensure_workspace(struct cpu_ctx *c, size_t tokens)
{
    size_t H = c->cfg.hidden, cap, per_row = 6 * H;
    float *ws;

    if (tokens <= c->cap)
        return 0;
    cap = MAX(tokens, MIN(c->cap * 2, c->max_tokens));
    cap = MIN((cap + 63) & ~(size_t)63, c->max_tokens);
    if (!size_mul_ok(cap, per_row, &(size_t){0}))
        return -ENOMEM;
    ws = aligned_floats(cap * per_row);
    if (!ws)
        return -ENOMEM;
    free(c->ws);
    c->ws = ws;
    c->cap = cap;
    c->x = ws;
    c->c = c->x + cap * H;
    c->t = c->c + cap * H;
    c->qkv = c->t + cap * H;
    return 0;
}

/* Embeddings + encoder + pooling for sequences [w->s0, w->s1) of the current batch. */
static void forward(struct cpu_ctx *c, struct cpu_worker *w)
{
    const struct model_config *g = &c->cfg;
    const struct embed_batch *b = c->batch;
    const struct cpu_kernels *k = c->k;
    const size_t H = g->hidden, FF = g->intermediate, t0 = w->t0;
    const bool cls = g->pooling == MODEL_POOLING_CLS;
    size_t T = 0, t;
    float *X, *C, *Tm, *QKV;

    for (size_t s = w->s0; s < w->s1; s++)
        T += b->lengths[s];
    if (T == 0)
        return;
    X = c->x + t0 * H;
    C = c->c + t0 * H;
    Tm = c->t + t0 * H;
    QKV = c->qkv + t0 * 3 * H;

    /* (word + type) + position, in the order transformers adds them. */
    t = 0;
    for (size_t s = w->s0; s < w->s1; s++)
        for (uint32_t p = 0; p < b->lengths[s]; p++, t++) {
            float *row = X + t * H;
            const float *pos = c->pos + (size_t)p * H;

            memcpy(row, c->word_emb + (size_t)b->ids[t0 + t] * H * sizeof(float),
                   H * sizeof(float));
            for (size_t j = 0; j < H; j++)
                row[j] = (row[j] + c->type0[j]) + pos[j];
        }
    k->add_layernorm(X, NULL, H, NULL, c->emb_g, c->emb_b, T, H, g->ln_eps);

    for (unsigned li = 0; li < g->n_layers; li++) {
        const struct cpu_layer *l = &c->layers[li];
        size_t off = 0, rows = T;

        cpu_gemm(&l->mat[CPU_MATRIX_QKV], X, H, T, QKV, 3 * H, w->gemm);
        if (li + 1 == g->n_layers && cls) {
            /*
             * Last layer, CLS pooling: only each sequence's row 0 is ever read again, so attend
             * from that query alone (over all keys) and run the rest of the layer on one row per
             * sequence.  The CLS rows of X move to the front (row i comes from a row >= i, so
             * the in-place copy never overwrites a row still to be read).
             */
            size_t i = 0;
            for (size_t s = w->s0; s < w->s1; s++, i++) {
                k->attention(QKV + off * 3 * H, 3 * H, l->bqkv, C + i * H, H, b->lengths[s], 1,
                             g->n_heads, g->head_dim, w->attn);
                if (i != off)
                    memcpy(X + i * H, X + off * H, H * sizeof(float));
                off += b->lengths[s];
            }
            rows = i;
        } else {
            for (size_t s = w->s0; s < w->s1; s++) {
                k->attention(QKV + off * 3 * H, 3 * H, l->bqkv, C + off * H, H, b->lengths[s],
                             b->lengths[s], g->n_heads, g->head_dim, w->attn);
                off += b->lengths[s];
            }
        }
        cpu_gemm(&l->mat[CPU_MATRIX_O], C, H, rows, Tm, H, w->gemm);
        k->add_layernorm(X, Tm, H, l->bo, l->ln1_g, l->ln1_b, rows, H, g->ln_eps);
        for (size_t r = 0; r < rows; r += FFN_CHUNK) {
            size_t n = MIN((size_t)FFN_CHUNK, rows - r);

            cpu_gemm(&l->mat[CPU_MATRIX_UP], X + r * H, H, n, w->ffn, FF, w->gemm);
            k->bias_gelu(w->ffn, l->bup, n, FF);
            cpu_gemm(&l->mat[CPU_MATRIX_DOWN], w->ffn, FF, n, Tm + r * H, H, w->gemm);
        }
        k->add_layernorm(X, Tm, H, l->bdown, l->ln2_g, l->ln2_b, rows, H, g->ln_eps);
    }

    t = 0;
    for (size_t s = w->s0, i = 0; s < w->s1; s++, i++) {
        float *out = c->out + s * H;
        uint32_t len = b->lengths[s];
        double norm = 0;

        if (cls) {
            /* Row i: the last layer compacted the CLS rows. */
            memcpy(out, X + i * H, H * sizeof(float));
        } else {
            memset(out, 0, H * sizeof(float));
            for (uint32_t p = 0; p < len; p++)
                for (size_t j = 0; j < H; j++)
                    out[j] += X[(t + p) * H + j];
            for (size_t j = 0; j < H; j++)
                out[j] /= (float)len;
        }
        if (g->normalize) {
            float inv;

            for (size_t j = 0; j < H; j++)
                norm += (double)out[j] * out[j];
            inv = (float)(1.0 / fmax(sqrt(norm), 1e-12));
            for (size_t j = 0; j < H; j++)
                out[j] *= inv;
        }
        t += len;
    }
}

static void *worker_main(void *arg)
{
    struct cpu_worker *w = arg;
    struct cpu_ctx *c = w->ctx;
    unsigned seen = 0;

    pthread_mutex_lock(&c->lock);
    for (;;) {
        while (c->generation == seen && !c->stop)
            pthread_cond_wait(&c->start, &c->lock);
        if (c->stop)
            break;
        seen = c->generation;
        pthread_mutex_unlock(&c->lock);
        forward(c, w);
        pthread_mutex_lock(&c->lock);
        if (--c->pending == 0)
            pthread_cond_signal(&c->done);
    }
    pthread_mutex_unlock(&c->lock);
    return NULL;
}

/*
 * Split sequences into n_workers contiguous runs of about equal cost: per sequence of length L,
 * linear layers cost ~L * (8H^2 + 4HI) and attention ~4H * L^2 per layer.
 */
static void partition(struct cpu_ctx *c, const struct embed_batch *b)
{
    const double H = c->cfg.hidden, FF = c->cfg.intermediate;
    const double lin = 8 * H * H + 4 * H * FF, att = 4 * H;
    double total = 0, acc = 0;
    size_t s = 0;

    for (size_t i = 0; i < b->n_seqs; i++)
        total += b->lengths[i] * (lin + att * b->lengths[i]);
    for (unsigned wi = 0; wi < c->n_workers; wi++) {
        struct cpu_worker *w = &c->workers[wi];
        double target = total * (wi + 1) / c->n_workers;

        w->s0 = s;
        w->t0 = s < b->n_seqs ? c->offsets[s] : b->n_tokens;
        if (wi + 1 == c->n_workers) {
            s = b->n_seqs;
        } else {
            while (s < b->n_seqs) {
                double cost = b->lengths[s] * (lin + att * b->lengths[s]);
                /* Take the sequence if that lands closer to the target than stopping. */
                if (acc + cost / 2 > target)
                    break;
                acc += cost;
                s++;
            }
        }
        w->s1 = s;
    }
}

static int check_batch(struct cpu_ctx *c, const struct embed_batch *b)
{
    size_t sum = 0;

    if (b->n_tokens > c->max_tokens)
        return -E2BIG;
    for (size_t i = 0; i < b->n_seqs; i++) {
        if (b->lengths[i] == 0 || b->lengths[i] > c->cfg.max_seq_length)
            return -EINVAL;
        sum += b->lengths[i];
        if (sum > b->n_tokens)
            return -EINVAL;
    }
    if (sum != b->n_tokens)
        return -EINVAL;
    for (size_t i = 0; i < b->n_tokens; i++)
        if (b->ids[i] >= c->cfg.vocab_size)
            return -EINVAL;
    return 0;
}

static int cpu_encode_batch(void *ctx, const struct embed_batch *b, float *out)
{
    struct cpu_ctx *c = ctx;
    size_t off = 0;
    int r;

    if (b->n_seqs == 0)
        return 0;
    r = check_batch(c, b);
    if (r < 0)
        return r;
    r = ensure_workspace(c, b->n_tokens);
    if (r < 0)
        return r;
    if (b->n_seqs > c->offsets_cap) {
        size_t *o = array_alloc(b->n_seqs, sizeof(*o));
        if (!o)
            return -ENOMEM;
        free(c->offsets);
        c->offsets = o;
        c->offsets_cap = b->n_seqs;
    }
    for (size_t i = 0; i < b->n_seqs; i++) {
        c->offsets[i] = off;
        off += b->lengths[i];
    }
    c->batch = b;
    c->out = out;
    partition(c, b);

    if (c->n_workers > 1) {
        pthread_mutex_lock(&c->lock);
        c->generation++;
        c->pending = c->n_workers - 1;
        pthread_cond_broadcast(&c->start);
        pthread_mutex_unlock(&c->lock);
    }
    forward(c, &c->workers[0]);
    if (c->n_workers > 1) {
        pthread_mutex_lock(&c->lock);
        while (c->pending > 0)
            pthread_cond_wait(&c->done, &c->lock);
        pthread_mutex_unlock(&c->lock);
    }
    c->batch = NULL;
    c->out = NULL;
    return 0;
}

static void *cpu_free(void *ctx)
{
    struct cpu_ctx *c = ctx;

    if (!c)
        return NULL;
    if (c->sync_init) {
        pthread_mutex_lock(&c->lock);
        c->stop = true;
        pthread_cond_broadcast(&c->start);
        pthread_mutex_unlock(&c->lock);
    }
    for (unsigned i = 0; c->workers && i < c->n_workers; i++) {
        if (c->workers[i].started)
            pthread_join(c->workers[i].thread, NULL);
        free(c->workers[i].attn);
        free(c->workers[i].ffn);
        free(c->workers[i].gemm);
    }
    if (c->sync_init) {
        pthread_mutex_destroy(&c->lock);
        pthread_cond_destroy(&c->start);
        pthread_cond_destroy(&c->done);
    }
    free(c->workers);
    free(c->offsets);
    free(c->ws);
    for (unsigned i = 0; c->layers && i < c->cfg.n_layers; i++)
        for (int j = 0; j < CPU_MATRIX_COUNT; j++)
            cpu_gemm_weights_release(&c->layers[i].mat[j]);
    free(c->layers);
    free(c->wblock);
    free(c);
    return NULL;
}

static unsigned online_cpus(void)
{
    cpu_set_t set;

    if (sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) > 0)
        return (unsigned)CPU_COUNT(&set);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (unsigned)n : 1;
}

/*
 * Run one small batch on every thread at load time.  OpenBLAS allocates its GEMM buffers on a
 * thread's first large GEMM and, when that malloc fails, retries forever instead of returning
 * (observed with 0.3.21 under an RLIMIT_AS cap); doing it here, while loading, means later
 * allocation failures are all ours and come back as -ENOMEM.
 */
static int warm_up(struct cpu_ctx *c)
{
    uint32_t len = (uint32_t)MIN((size_t)MIN(c->cfg.max_seq_length, 128u), c->max_tokens);
    uint32_t *ids, *lens;
    size_t n = c->n_workers, tokens = n * len;
    float *out;
    int r = -ENOMEM;

    if (tokens > c->max_tokens) {
        n = MAX(c->max_tokens / len, (size_t)1);
        tokens = n * len;
    }
    ids = calloc(tokens, sizeof(*ids)); /* id 0 ([PAD] in BERT vocabularies) is always valid */
    lens = array_alloc(n, sizeof(*lens));
    out = array_alloc(n, c->cfg.hidden * sizeof(float));
    if (ids && lens && out) {
        struct embed_batch b = {.ids = ids, .lengths = lens, .n_seqs = n, .n_tokens = tokens};

        for (size_t i = 0; i < n; i++)
            lens[i] = len;
        r = cpu_encode_batch(c, &b, out);
    }
    free(ids);
    free(lens);
    free(out);
    return r;
}

/*
 * The GEMM format of each matrix kind for a precision.  int8 keeps the FFN down projection in
 * bf16: its input (GELU output, 1536 wide, heavy-tailed) and its weights (max/rms up to 5.8) are
 * the least quantisation-friendly, and quantising it too drops all-MiniLM-L6-v2's worst fixture
 * cosine from 0.9995 to 0.9975 (docs/embedding.md).  COARCH_CPU_INT8_BF16 overrides which
 * matrices stay bf16 (a comma-separated subset of qkv,o,up,down, or "none"): a tuning knob.
 */
static void choose_formats(enum embed_precision p, enum cpu_gemm_format ret[CPU_MATRIX_COUNT])
{
    static const char *const names[CPU_MATRIX_COUNT] = {"qkv", "o", "up", "down"};
    const char *keep = getenv("COARCH_CPU_INT8_BF16");

    if (!keep)
        keep = "down";

    for (int i = 0; i < CPU_MATRIX_COUNT; i++) {
        switch (p) {
        case EMBED_PRECISION_FP32:
            ret[i] = CPU_GEMM_F32;
            break;
        case EMBED_PRECISION_BF16:
            ret[i] = CPU_GEMM_BF16;
            break;
        case EMBED_PRECISION_INT8:
            ret[i] = CPU_GEMM_INT8;
            for (const char *t = keep; *t; t += strcspn(t, ",") + (t[strcspn(t, ",")] != 0)) {
                size_t len = strlen(names[i]);

                if (strncmp(t, names[i], len) == 0 && (t[len] == ',' || t[len] == 0))
                    ret[i] = CPU_GEMM_BF16;
            }
            break;
        }
    }
}

bool embed_cpu_precision_supported(enum embed_precision p, const char **ret_missing)
{
    enum cpu_gemm_format f[CPU_MATRIX_COUNT];

    choose_formats(p, f);
    for (int i = 0; i < CPU_MATRIX_COUNT; i++)
        if (!cpu_gemm_supported(f[i], ret_missing))
            return false;
    return true;
}

static int cpu_init(const struct model *model, const struct embed_backend_options *opts,
                    void **ret_ctx)
{
    const char *mode = getenv("COARCH_CPU_THREADING"), *simd = getenv("COARCH_CPU_KERNELS");
    struct cpu_ctx *c;
    unsigned n_threads;
    size_t attn_n, gemm_n;
    int r;

    c = calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    c->model = model;
    c->cfg = model->config;
    /* COARCH_CPU_KERNELS=generic forces the portable kernels (tests, debugging). */
    c->k = (simd && strcmp(simd, "generic") == 0) ? NULL : cpu_kernels_avx512();
    if (!c->k)
        c->k = &cpu_kernels_generic;
    c->precision = opts ? opts->precision : EMBED_PRECISION_FP32;
    if (!embed_cpu_precision_supported(c->precision, NULL)) {
        r = -ENOTSUP;
        goto out_free;
    }
    choose_formats(c->precision, c->format);
    /* The reduced precisions also take attention's two products in bf16 (kernels.h). */
    c->kern = *c->k;
#ifdef COARCH_HAVE_AVX512_GEMM
    if (c->precision != EMBED_PRECISION_FP32 && c->k != &cpu_kernels_generic &&
        c->cfg.head_dim % 32 == 0 && c->cfg.head_dim <= 64)
        c->kern.attention = cpu_attention_bf16;
#endif
    c->k = &c->kern;
    /* Only OpenBLAS has threads of its own: the bf16/int8 GEMMs always run in split mode. */
    c->threading = (mode && strcmp(mode, "blas") == 0 && c->precision == EMBED_PRECISION_FP32)
                       ? CPU_THREADING_BLAS
                       : CPU_THREADING_SPLIT;
    c->max_tokens = opts && opts->max_batch_tokens ? opts->max_batch_tokens : DEFAULT_MAX_TOKENS;
    n_threads = opts && opts->n_threads ? opts->n_threads : online_cpus();
    n_threads = CLAMP(n_threads, 1u, (unsigned)MAX_THREADS);

    r = copy_weights(c);
    if (r < 0)
        goto out_free;

    /* openblas_set_num_threads() is process-wide: the last backend initialised decides. */
    if (c->threading == CPU_THREADING_BLAS) {
        openblas_set_num_threads((int)n_threads);
        c->n_workers = 1;
    } else {
        openblas_set_num_threads(1);
        c->n_workers = n_threads;
    }
    c->workers = calloc(c->n_workers, sizeof(*c->workers));
    if (!c->workers) {
        r = -ENOMEM;
        goto out_free;
    }
    attn_n = cpu_attention_scratch_floats(c->cfg.max_seq_length, c->cfg.n_heads, c->cfg.head_dim);
    gemm_n = c->precision == EMBED_PRECISION_FP32
                 ? 64
                 : cpu_gemm_scratch_bytes(MAX(c->cfg.hidden, c->cfg.intermediate));
    for (unsigned i = 0; i < c->n_workers; i++) {
        c->workers[i].ctx = c;
        c->workers[i].attn = aligned_floats(attn_n);
        c->workers[i].ffn = aligned_floats((size_t)FFN_CHUNK * c->cfg.intermediate);
        c->workers[i].gemm = aligned_alloc(64, gemm_n);
        if (!c->workers[i].attn || !c->workers[i].ffn || !c->workers[i].gemm) {
            r = -ENOMEM;
            goto out_free;
        }
        c->scratch_bytes +=
            (attn_n + (size_t)FFN_CHUNK * c->cfg.intermediate) * sizeof(float) + gemm_n;
    }
    if (c->n_workers > 1) {
        pthread_mutex_init(&c->lock, NULL);
        pthread_cond_init(&c->start, NULL);
        pthread_cond_init(&c->done, NULL);
        c->sync_init = true;
        for (unsigned i = 1; i < c->n_workers; i++) {
            r = -pthread_create(&c->workers[i].thread, NULL, worker_main, &c->workers[i]);
            if (r < 0)
                goto out_free;
            c->workers[i].started = true;
        }
    }
    r = warm_up(c);
    if (r < 0)
        goto out_free;
    log_debug("embed/cpu: %s GEMMs (qkv %s, o %s, up %s, down %s), kernels %s, openblas %s (%s), "
              "%u %s thread(s), max %zu tokens/batch",
              embed_precision_name(c->precision), cpu_gemm_format_name(c->format[0]),
              cpu_gemm_format_name(c->format[1]), cpu_gemm_format_name(c->format[2]),
              cpu_gemm_format_name(c->format[3]), c->k->name, openblas_get_corename(),
              openblas_get_config(), n_threads,
              c->threading == CPU_THREADING_BLAS ? "BLAS" : "split", c->max_tokens);
    *ret_ctx = c;
    return 0;

out_free:
    cpu_free(c);
    return r;
}

static int cpu_get_memory(void *ctx, struct embed_backend_memory *ret)
{
    struct cpu_ctx *c = ctx;

    *ret = (struct embed_backend_memory){
        .weights = c->wbytes,
        .workspace = c->cap * 6 * c->cfg.hidden * sizeof(float) + c->scratch_bytes,
        .mapped = (size_t)c->cfg.vocab_size * c->cfg.hidden * sizeof(float),
    };
    return 0;
}

static void cpu_release_memory(void *ctx)
{
    struct cpu_ctx *c = ctx;

    free(c->ws);
    c->ws = c->x = c->c = c->t = c->qkv = NULL;
    c->cap = 0;
}

const struct embed_backend_ops embed_backend_cpu = {
    .abi_version = EMBED_BACKEND_ABI_VERSION,
    .name = "cpu",
    .supports = cpu_supports,
    .init = cpu_init,
    .free = cpu_free,
    .get_memory = cpu_get_memory,
    .encode_batch = cpu_encode_batch,
    .release_memory = cpu_release_memory,
};
