/*
 * test-backend-cuda.c - the CUDA backend against the CPU reference (STYLE.md rules 8 and 12):
 * every kernel alone, then whole models through both backends' vtables.
 *
 *   ops          LayerNorm (bias + residual), bias + GELU, attention (head dim 32 and 64,
 *                packed lengths 1..512), pooling (mean, CLS, normalised), GEMM (fp32, bf16)
 *   whole model  a full-size MiniLM-shaped model (384 hidden, 6 layers, 12 heads, 1536 FFN,
 *                30522 vocab, 512 positions) with deterministic random weights made here (no
 *                download on the GPU machine), one packed batch of lengths 1..512; a 6-head
 *                (head dim 64) CLS variant; and the committed tiny model, whose vectors are also
 *                checked against sentence-transformers' (tests/data/embed/tiny.f32)
 *   thresholds   fp32 cosine >= 0.99999 per vector, bf16 >= 0.999 (vs the CPU's fp32)
 *   faults       an injected allocation failure returns -ENOMEM and the next batch works
 *
 * Without CUDA in the build, or without a usable GPU, every test exits 77 (skip) and says why,
 * CI or not: a GPU is lent to some sessions only (scripts/gpu-check runs this there).
 */
#include <cblas.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend.h"
#include "kernels.h"
#include "model.h"
#include "test.h"
#ifdef COARCH_HAVE_CUDA
#include "cuda.h"
#endif

#define FP32_MIN_COSINE 0.99999
#define BF16_MIN_COSINE 0.999

#ifndef COARCH_HAVE_CUDA

TEST(cuda_backend)
{
    fprintf(stderr, "  this build has no CUDA backend (meson's cuda feature found no nvcc or "
                    "cuBLAS)\n");
    TEST_SKIP("built without CUDA");
}

#else

static void require_gpu(void)
{
    char why[256];

    if (embed_cuda_probe(why, sizeof(why)) < 0) {
        fprintf(stderr, "  no usable GPU here: %s\n", why);
        TEST_SKIP("no usable GPU: the CUDA backend is tested only where one is present");
    }
    printf("  device: %s\n", why);
}

/* ---- deterministic inputs -------------------------------------------------------------- */

static uint64_t rng_state;

static void rng_seed(uint64_t s)
{
    rng_state = s * 0x9E3779B97F4A7C15ull + 1;
}

/* Uniform in [-1, 1). */
static float frand(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (float)((rng_state >> 40) * (1.0 / 8388608.0)) - 1.0f;
}

static float *rand_floats(size_t n, float scale, float offset)
{
    float *p = malloc(n * sizeof(float));

    ASSERT_TRUE(p != NULL);
    for (size_t i = 0; i < n; i++)
        p[i] = offset + scale * frand();
    return p;
}

static double cosine(const float *a, const float *b, size_t n)
{
    double ab = 0, aa = 0, bb = 0;

    for (size_t i = 0; i < n; i++) {
        ab += (double)a[i] * b[i];
        aa += (double)a[i] * a[i];
        bb += (double)b[i] * b[i];
    }
    return aa > 0 && bb > 0 ? ab / sqrt(aa * bb) : (aa == bb ? 1.0 : 0.0);
}

/* Every row of got against want: the smallest cosine must reach min_cos; prints the worst. */
static void check_rows(const char *what, const float *want, const float *got, size_t rows,
                       size_t width, double min_cos)
{
    double worst = 2, sum = 0, max_abs = 0;
    size_t at = 0;

    for (size_t r = 0; r < rows; r++) {
        double c = cosine(want + r * width, got + r * width, width);
        if (!isfinite(c))
            c = -2; /* an Inf or NaN in a row is the worst there is, not a row to skip */
        sum += c;
        if (c < worst) {
            worst = c;
            at = r;
        }
        for (size_t i = 0; i < width; i++) {
            double d = fabs((double)want[r * width + i] - got[r * width + i]);
            max_abs = d > max_abs ? d : max_abs;
        }
    }
    printf("  %s: %zu rows, cosine min %.9f (#%zu) mean %.9f, max |diff| %.3g\n", what, rows, worst,
           at, sum / (double)rows, max_abs);
    if (!(worst >= min_cos))
        test_fail(__FILE__, __LINE__, "%s: cosine %.9f at row %zu < %.6f", what, worst, at,
                  min_cos);
}

/* Lengths 1..512 in one batch: the edges of the attention tiles (63, 64, 65, ...), the
 * shortest and longest, and pseudo-random ones in between, up to `max_len`. */
static size_t varied_lengths(uint32_t *lens, size_t cap, uint32_t max_len)
{
    static const uint32_t edges[] = {1,   2,   3,   7,   16,  31,  32,  33,  63,
                                     64,  65,  100, 127, 128, 129, 200, 255, 256,
                                     257, 300, 383, 384, 385, 450, 500, 511, 512};
    size_t n = 0;

    for (size_t i = 0; i < sizeof(edges) / sizeof(edges[0]) && n < cap; i++)
        if (edges[i] <= max_len)
            lens[n++] = edges[i];
    while (n < cap)
        lens[n++] = 1 + (uint32_t)((frand() + 1.0f) * 0.5f * (float)(max_len - 1));
    return n;
}

/* ---- ops ------------------------------------------------------------------------------- */

TEST(op_layernorm)
{
    const size_t rows = 257, n = 384;
    float *x, *y, *bias, *g, *b, *got;

    require_gpu();
    rng_seed(1);
    x = rand_floats(rows * n, 2.0f, 0.0f);
    y = rand_floats(rows * n, 1.0f, 0.3f);
    bias = rand_floats(n, 0.1f, 0.0f);
    g = rand_floats(n, 0.2f, 1.0f);
    b = rand_floats(n, 0.1f, 0.0f);
    got = malloc(rows * n * sizeof(float));
    ASSERT_OK(embed_cuda_op_layernorm(x, y, bias, g, b, rows, n, 1e-12f, got));
    cpu_kernels_generic.add_layernorm(x, y, n, bias, g, b, rows, n, 1e-12f);
    check_rows("bias + residual + LayerNorm", x, got, rows, n, FP32_MIN_COSINE);
    free(x), free(y), free(bias), free(g), free(b), free(got);
}

TEST(op_bias_gelu)
{
    const size_t rows = 129, n = 1536;
    float *x, *bias, *got;

    require_gpu();
    rng_seed(2);
    x = rand_floats(rows * n, 4.0f, 0.0f);
    bias = rand_floats(n, 0.5f, 0.0f);
    got = malloc(rows * n * sizeof(float));
    ASSERT_OK(embed_cuda_op_bias_gelu(x, bias, rows, n, got));
    cpu_kernels_generic.bias_gelu(x, bias, rows, n);
    check_rows("bias + GELU (erf)", x, got, rows, n, FP32_MIN_COSINE);
    free(x), free(bias), free(got);
}

static void attention_case(unsigned n_heads, unsigned head_dim)
{
    const size_t H = (size_t)n_heads * head_dim;
    uint32_t lens[40];
    size_t n_seqs = varied_lengths(lens, 40, 512), total = 0;
    float *qkv, *bqkv, *want, *got, *scratch;
    char what[64];

    for (size_t i = 0; i < n_seqs; i++)
        total += lens[i];
    qkv = rand_floats(total * 3 * H, 1.5f, 0.0f);
    bqkv = rand_floats(3 * H, 0.2f, 0.0f);
    want = malloc(total * H * sizeof(float));
    got = malloc(total * H * sizeof(float));
    scratch = aligned_alloc(64, (cpu_attention_scratch_floats(512, n_heads, head_dim) * 4 + 63) /
                                    64 * 64);
    ASSERT_TRUE(want && got && scratch);
    ASSERT_OK(embed_cuda_op_attention(qkv, bqkv, lens, n_seqs, n_heads, head_dim, got));
    for (size_t i = 0, t = 0; i < n_seqs; t += lens[i], i++)
        cpu_kernels_generic.attention(qkv + t * 3 * H, 3 * H, bqkv, want + t * H, H, lens[i],
                                      lens[i], n_heads, head_dim, scratch);
    snprintf(what, sizeof(what), "attention, %u heads of %u, %zu seqs", n_heads, head_dim, n_seqs);
    check_rows(what, want, got, total, H, FP32_MIN_COSINE);
    free(qkv), free(bqkv), free(want), free(got), free(scratch);
}

TEST(op_attention_head32)
{
    require_gpu();
    rng_seed(3);
    attention_case(12, 32);
}

TEST(op_attention_head64)
{
    require_gpu();
    rng_seed(4);
    attention_case(6, 64);
}

TEST(op_pool)
{
    const size_t H = 384;
    uint32_t lens[20];
    size_t n_seqs = varied_lengths(lens, 20, 512), total = 0;
    float *X, *want, *got;

    require_gpu();
    rng_seed(5);
    for (size_t i = 0; i < n_seqs; i++)
        total += lens[i];
    X = rand_floats(total * H, 1.0f, 0.1f);
    want = calloc(n_seqs * H, sizeof(float));
    got = malloc(n_seqs * H * sizeof(float));
    for (int cls = 0; cls < 2; cls++) {
        for (size_t i = 0, t = 0; i < n_seqs; t += lens[i], i++) {
            double norm = 0;
            for (size_t c = 0; c < H; c++) {
                double a = 0;
                for (size_t k = 0; k < (cls ? 1 : lens[i]); k++)
                    a += X[(t + k) * H + c];
                want[i * H + c] = (float)(cls ? a : a / lens[i]);
                norm += (double)want[i * H + c] * want[i * H + c];
            }
            for (size_t c = 0; c < H; c++)
                want[i * H + c] = (float)(want[i * H + c] / fmax(sqrt(norm), 1e-12));
        }
        ASSERT_OK(embed_cuda_op_pool(X, lens, n_seqs, H, cls, true, got));
        check_rows(cls ? "CLS pooling + L2" : "mean pooling + L2", want, got, n_seqs, H,
                   FP32_MIN_COSINE);
    }
    free(X), free(want), free(got);
}

TEST(op_gemm)
{
    const size_t T = 300, N = 1152, K = 384;
    float *A, *W, *want, *got;

    require_gpu();
    rng_seed(6);
    A = rand_floats(T * K, 1.0f, 0.0f);
    W = rand_floats(N * K, 0.05f, 0.0f);
    want = malloc(T * N * sizeof(float));
    got = malloc(T * N * sizeof(float));
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)T, (int)N, (int)K, 1.0f, A, (int)K, W,
                (int)K, 0.0f, want, (int)N);
    ASSERT_OK(embed_cuda_op_gemm(false, A, W, T, N, K, got));
    check_rows("GEMM fp32", want, got, T, N, FP32_MIN_COSINE);
    ASSERT_OK(embed_cuda_op_gemm(true, A, W, T, N, K, got));
    check_rows("GEMM bf16 inputs, fp32 sums", want, got, T, N, BF16_MIN_COSINE);
    free(A), free(W), free(want), free(got);
}

/* ---- whole models ---------------------------------------------------------------------- */

/* A BERT model whose weights live in one malloc'd block (no file behind them). */
struct mem_model {
    struct model m;
    float *block;
};

static void mem_model_init(struct mem_model *mm, unsigned H, unsigned heads, unsigned layers,
                           unsigned ffn, unsigned vocab, unsigned max_pos,
                           enum model_pooling pooling, uint64_t seed)
{
    size_t per_layer =
        4 * (size_t)H * H + 4 * H + 2 * H + (size_t)ffn * H + ffn + (size_t)H * ffn + H + 2 * H;
    size_t total = (size_t)vocab * H + (size_t)max_pos * H + 2 * H + 2 * H + layers * per_layer;
    float *p;

    memset(mm, 0, sizeof(*mm));
    mm->m.config = (struct model_config){
        .hidden = H,
        .n_layers = layers,
        .n_heads = heads,
        .head_dim = H / heads,
        .intermediate = ffn,
        .vocab_size = vocab,
        .max_position = max_pos,
        .type_vocab = 2,
        .ln_eps = 1e-12f,
        .max_seq_length = max_pos,
        .pooling = pooling,
        .normalize = true,
    };
    mm->block = p = malloc(total * sizeof(float));
    mm->m.layers = calloc(layers, sizeof(*mm->m.layers));
    ASSERT_TRUE(p && mm->m.layers);
    rng_seed(seed);
#define FILL(ptr, n, scale, offset)                                                                \
    do {                                                                                           \
        (ptr) = p;                                                                                 \
        for (size_t i_ = 0; i_ < (size_t)(n); i_++)                                                \
            p[i_] = (offset) + (scale)*frand();                                                    \
        p += (n);                                                                                  \
    } while (0)
    FILL(mm->m.word_emb, (size_t)vocab * H, 0.5f, 0.0f);
    FILL(mm->m.pos_emb, (size_t)max_pos * H, 0.1f, 0.0f);
    FILL(mm->m.type_emb, 2 * H, 0.05f, 0.0f);
    FILL(mm->m.emb_ln_g, H, 0.1f, 1.0f);
    FILL(mm->m.emb_ln_b, H, 0.05f, 0.0f);
    for (unsigned l = 0; l < layers; l++) {
        struct model_layer_weights *w = &mm->m.layers[l];
        /* ~ N(0, 0.04^2)-like spreads keep activations in BERT's range through 6 layers. */
        float ws = 0.07f, fs = 0.07f;
        FILL(w->q_w, (size_t)H * H, ws, 0.0f);
        FILL(w->q_b, H, 0.02f, 0.0f);
        FILL(w->k_w, (size_t)H * H, ws, 0.0f);
        FILL(w->k_b, H, 0.02f, 0.0f);
        FILL(w->v_w, (size_t)H * H, ws, 0.0f);
        FILL(w->v_b, H, 0.02f, 0.0f);
        FILL(w->o_w, (size_t)H * H, ws, 0.0f);
        FILL(w->o_b, H, 0.02f, 0.0f);
        FILL(w->ln1_g, H, 0.1f, 1.0f);
        FILL(w->ln1_b, H, 0.05f, 0.0f);
        FILL(w->up_w, (size_t)ffn * H, fs, 0.0f);
        FILL(w->up_b, ffn, 0.02f, 0.0f);
        FILL(w->down_w, (size_t)H * ffn, fs * 0.5f, 0.0f);
        FILL(w->down_b, H, 0.02f, 0.0f);
        FILL(w->ln2_g, H, 0.1f, 1.0f);
        FILL(w->ln2_b, H, 0.05f, 0.0f);
    }
#undef FILL
}

static void mem_model_release(struct mem_model *mm)
{
    free(mm->block);
    free(mm->m.layers);
}

/* A packed batch of varied lengths with random ids ([CLS]-like 101 first is not needed). */
struct batch_data {
    uint32_t *ids, *lens;
    size_t n_seqs, n_tokens;
};

static void batch_make(struct batch_data *b, size_t n_seqs, uint32_t max_len, unsigned vocab)
{
    b->lens = malloc(n_seqs * sizeof(uint32_t));
    ASSERT_TRUE(b->lens != NULL);
    b->n_seqs = varied_lengths(b->lens, n_seqs, max_len);
    b->n_tokens = 0;
    for (size_t i = 0; i < b->n_seqs; i++)
        b->n_tokens += b->lens[i];
    b->ids = malloc(b->n_tokens * sizeof(uint32_t));
    ASSERT_TRUE(b->ids != NULL);
    for (size_t t = 0; t < b->n_tokens; t++)
        b->ids[t] = (uint32_t)((frand() + 1.0f) * 0.5f * (float)(vocab - 1));
}

static void batch_release(struct batch_data *b)
{
    free(b->ids);
    free(b->lens);
}

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Encodes b with backend `name` at precision p into a new array (caller frees). */
static float *encode_with(const char *name, const struct model *m, enum embed_precision p,
                          const struct batch_data *bd)
{
    struct embed_backend_options o = {.max_batch_tokens = bd->n_tokens, .precision = p};
    struct embed_batch b = {bd->ids, bd->lens, bd->n_seqs, bd->n_tokens};
    struct embed_backend be = {0};
    float *out = malloc(bd->n_seqs * m->config.hidden * sizeof(float));
    double t0;

    ASSERT_TRUE(out != NULL);
    ASSERT_OK(embed_backend_open(name, m, &o, &be));
    t0 = now_s();
    ASSERT_OK(be.ops->encode_batch(be.ctx, &b, out));
    printf("  %s %s: %zu tokens in %.1f ms\n", name, embed_precision_name(p), bd->n_tokens,
           (now_s() - t0) * 1000.0);
    embed_backend_close(&be);
    return out;
}

/*
 * Random-weight models pool to vectors that share a large common part (mean pooling over random
 * ids: ~78% of the squared norm on the MiniLM-shaped one), which a plain cosine forgives; the
 * same rows minus the reference's batch mean show whether the sequence-specific part matches.
 * The CPU's own bf16 path gives 0.9999 here.
 */
static void check_centered(const char *what, const float *want, const float *got, size_t rows,
                           size_t width, double min_cos)
{
    double *mean = calloc(width, sizeof(double)), worst = 2;
    size_t at = 0;

    ASSERT_TRUE(mean != NULL);
    for (size_t r = 0; r < rows; r++)
        for (size_t c = 0; c < width; c++)
            mean[c] += want[r * width + c] / (double)rows;
    for (size_t r = 0; r < rows; r++) {
        double ab = 0, aa = 0, bb = 0, cs;
        for (size_t c = 0; c < width; c++) {
            double x = want[r * width + c] - mean[c], y = got[r * width + c] - mean[c];
            ab += x * y, aa += x * x, bb += y * y;
        }
        cs = aa > 0 && bb > 0 ? ab / sqrt(aa * bb) : (aa == bb ? 1.0 : 0.0);
        if (!isfinite(cs))
            cs = -2;
        if (cs < worst)
            worst = cs, at = r;
    }
    free(mean);
    printf("  %s, centred on the batch mean: cosine min %.6f (#%zu)\n", what, worst, at);
    if (!(worst >= min_cos))
        test_fail(__FILE__, __LINE__, "%s: centred cosine %.6f at row %zu < %.4f", what, worst, at,
                  min_cos);
}

static void whole_model(const char *what, const struct model *m, const struct batch_data *bd)
{
    float *ref = encode_with("cpu", m, EMBED_PRECISION_FP32, bd);
    float *f32 = encode_with("cuda", m, EMBED_PRECISION_FP32, bd);
    float *b16 = encode_with("cuda", m, EMBED_PRECISION_BF16, bd);
    char line[160];

    snprintf(line, sizeof(line), "%s, cuda fp32 vs cpu fp32", what);
    check_rows(line, ref, f32, bd->n_seqs, m->config.hidden, FP32_MIN_COSINE);
    if (bd->n_seqs > 1)
        check_centered(line, ref, f32, bd->n_seqs, m->config.hidden, 0.9999);
    snprintf(line, sizeof(line), "%s, cuda bf16 vs cpu fp32", what);
    check_rows(line, ref, b16, bd->n_seqs, m->config.hidden, BF16_MIN_COSINE);
    if (bd->n_seqs > 1)
        check_centered(line, ref, b16, bd->n_seqs, m->config.hidden, 0.995);
    free(ref), free(f32), free(b16);
}

TEST(model_minilm_shaped_lengths_1_to_512)
{
    struct mem_model mm;
    struct batch_data bd;

    require_gpu();
    mem_model_init(&mm, 384, 12, 6, 1536, 30522, 512, MODEL_POOLING_MEAN, 11);
    batch_make(&bd, 48, 512, 30522);
    whole_model("MiniLM-shaped (mean, 6 layers, head 32)", &mm.m, &bd);
    batch_release(&bd);
    mem_model_release(&mm);
}

TEST(model_head64_cls)
{
    struct mem_model mm;
    struct batch_data bd;

    require_gpu();
    mem_model_init(&mm, 384, 6, 2, 1536, 5000, 512, MODEL_POOLING_CLS, 12);
    batch_make(&bd, 32, 512, 5000);
    whole_model("6 heads of 64 (CLS, 2 layers)", &mm.m, &bd);
    batch_release(&bd);
    mem_model_release(&mm);
}

/* The committed tiny model and its sentence-transformers vectors (tests/data/embed/tiny.*). */
TEST(model_tiny_vs_sentence_transformers)
{
    struct model *m = NULL;
    struct batch_data bd = {0};
    float *st_ref, *got;
    size_t cap = 0;
    char *line = NULL;
    FILE *fp;

    require_gpu();
    ASSERT_OK(model_load("data/embed/tiny-model", &m, NULL));
    fp = fopen("data/embed/tiny.jsonl", "r");
    ASSERT_TRUE(fp != NULL);
    while (getline(&line, &cap, fp) > 0) {
        json_error_t e;
        json_t *j = json_loads(line, 0, &e), *ids;
        ASSERT_TRUE(j != NULL);
        ids = json_object_get(j, "ids");
        bd.lens = realloc(bd.lens, (bd.n_seqs + 1) * sizeof(uint32_t));
        bd.ids = realloc(bd.ids, (bd.n_tokens + json_array_size(ids)) * sizeof(uint32_t));
        ASSERT_TRUE(bd.lens && bd.ids);
        bd.lens[bd.n_seqs++] = (uint32_t)json_array_size(ids);
        for (size_t k = 0; k < json_array_size(ids); k++)
            bd.ids[bd.n_tokens++] = (uint32_t)json_integer_value(json_array_get(ids, k));
        json_decref(j);
    }
    free(line);
    fclose(fp);
    whole_model("tiny model", m, &bd);

    st_ref = malloc(bd.n_seqs * m->config.hidden * sizeof(float));
    fp = fopen("data/embed/tiny.f32", "rb");
    ASSERT_TRUE(st_ref && fp);
    ASSERT_EQ(fread(st_ref, sizeof(float), bd.n_seqs * m->config.hidden, fp),
              bd.n_seqs * m->config.hidden);
    fclose(fp);
    got = encode_with("cuda", m, EMBED_PRECISION_FP32, &bd);
    check_rows("tiny model, cuda fp32 vs sentence-transformers", st_ref, got, bd.n_seqs,
               m->config.hidden, 0.9999);
    free(got), free(st_ref);
    batch_release(&bd);
    model_free(m);
}

TEST(injected_alloc_failure_is_enomem_then_recovers)
{
    struct mem_model mm;
    struct batch_data small, big;
    struct embed_backend_options o = {.max_batch_tokens = 8192, .precision = EMBED_PRECISION_BF16};
    struct embed_backend be = {0};
    float *out, *ref;

    require_gpu();
    mem_model_init(&mm, 384, 12, 2, 1536, 30522, 512, MODEL_POOLING_MEAN, 13);
    rng_seed(14);
    batch_make(&small, 4, 64, 30522);
    batch_make(&big, 24, 512, 30522);
    ASSERT_OK(embed_backend_open("cuda", &mm.m, &o, &be));
    out = malloc(big.n_seqs * 384 * sizeof(float));
    {
        struct embed_batch b = {small.ids, small.lens, small.n_seqs, small.n_tokens};
        ASSERT_OK(be.ops->encode_batch(be.ctx, &b, out));
    }
    /* The big batch must grow the workspace: that allocation fails once. */
    embed_cuda_fail_next_alloc();
    {
        struct embed_batch b = {big.ids, big.lens, big.n_seqs, big.n_tokens};
        ASSERT_EQ(be.ops->encode_batch(be.ctx, &b, out), -ENOMEM);
        ASSERT_OK(be.ops->encode_batch(be.ctx, &b, out));
    }
    embed_backend_close(&be);
    ref = encode_with("cpu", &mm.m, EMBED_PRECISION_FP32, &big);
    check_rows("after the injected failure, cuda bf16 vs cpu fp32", ref, out, big.n_seqs, 384,
               BF16_MIN_COSINE);
    free(out), free(ref);
    batch_release(&small);
    batch_release(&big);
    mem_model_release(&mm);
}

/* Batches of every shape the embedder sends, one context throughout: 16,384 one-token
 * sequences (the widest grid), then a small batch in the grown workspace, then after
 * release_memory(); and the batches the vtable must refuse, leaving the context usable. */
TEST(batch_shapes_reuse_and_refusals)
{
    struct mem_model mm;
    struct embed_backend_options o = {.max_batch_tokens = 16384, .precision = EMBED_PRECISION_FP32};
    struct embed_backend be = {0};
    struct batch_data wide = {0}, small;
    float *out, *ref;

    require_gpu();
    mem_model_init(&mm, 384, 12, 2, 1536, 30522, 512, MODEL_POOLING_MEAN, 16);
    wide.n_seqs = wide.n_tokens = 16384;
    wide.lens = malloc(wide.n_seqs * sizeof(uint32_t));
    wide.ids = malloc(wide.n_tokens * sizeof(uint32_t));
    ASSERT_TRUE(wide.lens && wide.ids);
    for (size_t i = 0; i < wide.n_seqs; i++) {
        wide.lens[i] = 1;
        wide.ids[i] = (uint32_t)(i * 7919 % 30522);
    }
    rng_seed(17);
    batch_make(&small, 6, 300, 30522);
    out = malloc(wide.n_seqs * 384 * sizeof(float));
    ASSERT_OK(embed_backend_open("cuda", &mm.m, &o, &be));
    for (int pass = 0; pass < 2; pass++) {
        struct embed_batch b = {wide.ids, wide.lens, wide.n_seqs, wide.n_tokens};
        struct embed_batch c = {small.ids, small.lens, small.n_seqs, small.n_tokens};

        ASSERT_OK(be.ops->encode_batch(be.ctx, &b, out));
        ref = encode_with("cpu", &mm.m, EMBED_PRECISION_FP32, &wide);
        check_rows("16384 one-token sequences", ref, out, wide.n_seqs, 384, FP32_MIN_COSINE);
        free(ref);
        ASSERT_OK(be.ops->encode_batch(be.ctx, &c, out));
        ref = encode_with("cpu", &mm.m, EMBED_PRECISION_FP32, &small);
        check_rows("a small batch after it", ref, out, small.n_seqs, 384, FP32_MIN_COSINE);
        free(ref);
        if (pass == 0)
            be.ops->release_memory(be.ctx); /* the second pass regrows everything */
    }
    {
        uint32_t ids[3] = {1, 30522, 2}, lens[2] = {1, 2}, zero[1] = {0};
        struct embed_batch bad_id = {ids, lens, 2, 3}, bad_len = {ids, zero, 1, 0};
        struct embed_batch big = {wide.ids, wide.lens, wide.n_seqs, wide.n_tokens + 1};

        ASSERT_EQ(be.ops->encode_batch(be.ctx, &bad_id, out), -EINVAL);
        ASSERT_EQ(be.ops->encode_batch(be.ctx, &bad_len, out), -EINVAL);
        ASSERT_EQ(be.ops->encode_batch(be.ctx, &big, out), -E2BIG);
    }
    {
        struct embed_batch c = {small.ids, small.lens, small.n_seqs, small.n_tokens};
        ASSERT_OK(be.ops->encode_batch(be.ctx, &c, out));
    }
    embed_backend_close(&be);
    free(out);
    batch_release(&wide);
    batch_release(&small);
    mem_model_release(&mm);
}

/* COARCH_CUDA_PROFILE times every step without changing a number. */
TEST(profiling_changes_nothing)
{
    struct mem_model mm;
    struct batch_data bd;
    float *plain, *profiled;

    require_gpu();
    mem_model_init(&mm, 384, 12, 2, 1536, 30522, 512, MODEL_POOLING_MEAN, 18);
    rng_seed(19);
    batch_make(&bd, 16, 512, 30522);
    plain = encode_with("cuda", &mm.m, EMBED_PRECISION_BF16, &bd);
    setenv("COARCH_CUDA_PROFILE", "1", 1);
    profiled = encode_with("cuda", &mm.m, EMBED_PRECISION_BF16, &bd);
    unsetenv("COARCH_CUDA_PROFILE");
    ASSERT_EQ(memcmp(plain, profiled, bd.n_seqs * 384 * sizeof(float)), 0);
    free(plain), free(profiled);
    batch_release(&bd);
    mem_model_release(&mm);
}

TEST(memory_reported_and_capped)
{
    struct mem_model mm;
    struct embed_backend_options o = {.max_batch_tokens = 4096, .precision = EMBED_PRECISION_BF16};
    struct embed_backend be = {0};
    struct embed_backend_memory mem;

    require_gpu();
    mem_model_init(&mm, 384, 12, 6, 1536, 30522, 512, MODEL_POOLING_MEAN, 15);
    ASSERT_OK(embed_backend_open("cuda", &mm.m, &o, &be));
    ASSERT_OK(be.ops->get_memory(be.ctx, &mem));
    printf("  weights %zu MiB, workspace %zu MiB, device %zu of %zu MiB free\n", mem.weights >> 20,
           mem.workspace >> 20, mem.device_free >> 20, mem.device_total >> 20);
    ASSERT_TRUE(mem.on_device);
    ASSERT_GT(mem.device_total, 0);
    ASSERT_GT(mem.weights, (size_t)30522 * 384 * 4); /* the fp32 word table at least */
    embed_backend_close(&be);
    /* A cap with room for cuBLAS's 32 MiB workspace but not for the weights (47 MB of word
     * table alone) refuses the model with -ENOMEM, cleanly; and a cap of a millionth fails
     * at the first allocation the same way. */
    {
        char frac[64];
        snprintf(frac, sizeof(frac), "%.9f", (double)(40u << 20) / (double)mem.device_total);
        setenv("COARCH_GPU_MEMORY_FRACTION", frac, 1);
        ASSERT_EQ(embed_backend_open("cuda", &mm.m, &o, &be), -ENOMEM);
        setenv("COARCH_GPU_MEMORY_FRACTION", "0.000001", 1);
        ASSERT_EQ(embed_backend_open("cuda", &mm.m, &o, &be), -ENOMEM);
        unsetenv("COARCH_GPU_MEMORY_FRACTION");
    }
    /* After all that the backend still opens and runs. */
    ASSERT_OK(embed_backend_open("cuda", &mm.m, &o, &be));
    embed_backend_close(&be);
    mem_model_release(&mm);
}

#endif

int main(int argc, char **argv)
{
    return test_run_all(argc, argv);
}
