/*
 * test-gemm.c - the CPU backend's GEMMs (daemon/embed/cpu/gemm.h): fp32 (OpenBLAS), bf16
 * (AVX512_BF16) and int8 (AVX512_VNNI) against scalar references, over random shapes with odd
 * M, N and K tails and row strides wider than the rows, plus the BERT layer shapes with their
 * speed.  Each product is checked twice:
 *
 *  - against cpu_gemm_reference(), the same arithmetic in scalar loops from the same packed
 *    weights (bf16: the rounded operands summed in double; int8: the same u8 quantisation, an
 *    exact integer dot product, the same epilogue).  This catches any indexing, tail or layout
 *    slip in the kernels; tolerances are fp32 summation-order noise.
 *  - against the exact fp32 product (in double), within the worst-case error of the format:
 *    bf16 rounds each operand to 8 significant bits (|err| <= 2^-8 relative each, so
 *    <= 2^-7 * sum|a w| for the products); int8 errs by at most half a step of each operand per
 *    term, the step of a row being at most its full range / 255 (outlier channels narrow it),
 *    plus the bf16 error of the outliers' residual terms.  This catches wrong scales, a wrong
 *    offset correction, a lost outlier residual or a packing bug.
 *
 * Formats the CPU lacks are skipped (exit 77 when every test skipped).
 */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gemm-int.h"
#include "gemm.h"
#include "macro.h"
#include "test.h"

static uint64_t rng = 0x9E3779B97F4A7C15ULL;

static float frand(void) /* uniform [-1, 1) */
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (float)((rng >> 40) / (double)(1 << 24)) * 2.0f - 1.0f;
}

static size_t urand(size_t lo, size_t hi) /* [lo, hi] */
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return lo + (size_t)(rng >> 33) % (hi - lo + 1);
}

static void require(enum cpu_gemm_format f)
{
    const char *missing = NULL;
    static char why[256];

    if (!cpu_gemm_supported(f, &missing)) {
        snprintf(why, sizeof(why), "%s GEMM: this CPU/build lacks %s", cpu_gemm_format_name(f),
                 missing);
        TEST_SKIP(why);
    }
}

/* Random activations shaped like a transformer's: mostly small, a few outlier columns. */
static void fill_activations(float *A, size_t M, size_t K, size_t lda, bool one_sided)
{
    for (size_t m = 0; m < M; m++)
        for (size_t k = 0; k < lda; k++) {
            float v = frand();

            if (k % 97 == 5)
                v *= 12.0f; /* an outlier feature */
            if (one_sided && v < 0)
                v *= 0.05f;                   /* post-GELU: small negative tail */
            A[m * lda + k] = k < K ? v : NAN; /* padding beyond K must never be read */
        }
}

struct errors {
    double vs_ref, vs_exact; /* largest error / allowed error */
};

/*
 * C = A W^T in format f; compares against the reference and the exact product as the header
 * comment says.  Returns the worst error ratios (must stay < 1).
 */
static struct errors check_product(enum cpu_gemm_format f, size_t M, size_t N, size_t K, size_t lda,
                                   size_t ldc, bool one_sided)
{
    float *A = malloc(M * lda * sizeof(float)), *W = malloc(N * K * sizeof(float));
    float *C = malloc(M * ldc * sizeof(float)), *R = malloc(M * ldc * sizeof(float));
    void *scratch = aligned_alloc(64, cpu_gemm_scratch_bytes(K));
    struct cpu_gemm_weights w;
    struct errors e = {0, 0};

    ASSERT_TRUE(A && W && C && R && scratch);
    fill_activations(A, M, K, lda, one_sided);
    for (size_t i = 0; i < N * K; i++)
        W[i] = frand() * (i % 13 == 0 ? 0.3f : 0.05f);
    for (size_t i = 0; i < M * ldc; i++)
        C[i] = R[i] = -12345.0f; /* columns >= N must stay untouched */
    ASSERT_OK(cpu_gemm_pack(&w, f, W, N, K));
    ASSERT_EQ(w.format, f);
    cpu_gemm(&w, A, lda, M, C, ldc, scratch);
    cpu_gemm_reference(&w, A, lda, M, R, ldc);

    for (size_t m = 0; m < M; m++) {
        const float *a = A + m * lda;
        float mn = a[0], mx = a[0], sa, inv;

        for (size_t k = 1; k < K; k++)
            mn = fminf(mn, a[k]), mx = fmaxf(mx, a[k]);
        cpu_gemm_int8_row_params(mn, mx, &sa, &inv);
        for (size_t n = 0; n < ldc; n++) {
            double exact = 0, mag = 0, bound;
            float got = C[m * ldc + n], ref = R[m * ldc + n];

            if (n >= N) {
                ASSERT_TRUE(got == -12345.0f);
                continue;
            }
            ASSERT_TRUE(isfinite(got));
            for (size_t k = 0; k < K; k++) {
                double x = a[k], y = W[n * K + k];
                exact += x * y;
                mag += fabs(x * y);
            }
            /* Kernel vs scalar reference: fp32 accumulation order only. */
            bound = 1e-5 * mag + 1e-6;
            e.vs_ref = fmax(e.vs_ref, fabs((double)got - ref) / bound);
            /* Against the exact product: the format's own worst case. */
            switch (f) {
            case CPU_GEMM_F32:
                bound = 1e-5 * mag + 1e-6;
                break;
            case CPU_GEMM_BF16:
                bound = ldexp(1.0, -7) * mag + 1e-6;
                break;
            case CPU_GEMM_INT8: {
                double sw = w.scale[n], s = 0;
                for (size_t k = 0; k < K; k++)
                    s += 0.5 * sa * fabs(W[n * K + k]) + 0.5 * sw * fabs(a[k]) + 0.25 * sa * sw +
                         fabs(a[k] * W[n * K + k]) / 128;
                bound = s * 1.001 + 1e-5 * mag + 1e-6;
                break;
            }
            }
            e.vs_exact = fmax(e.vs_exact, fabs((double)got - exact) / bound);
        }
    }
    cpu_gemm_weights_release(&w);
    free(A), free(W), free(C), free(R), free(scratch);
    return e;
}

static void check_random_shapes(enum cpu_gemm_format f)
{
    static const size_t odd[] = {1, 2, 3, 4, 5, 7, 15, 16, 17, 31, 33, 63, 64, 65, 97, 129};
    struct errors worst = {0, 0};

    for (int i = 0; i < 120; i++) {
        size_t M = i < 16 ? odd[i] : urand(1, 230);
        size_t N = i < 16 ? odd[15 - i] : urand(1, 300);
        size_t K = i < 16 ? odd[(i * 7) % 16] : urand(1, 420);
        size_t lda = K + (i % 3 == 0 ? urand(0, 9) : 0), ldc = N + (i % 4 == 0 ? urand(1, 5) : 0);
        struct errors e = check_product(f, M, N, K, lda, ldc, i % 2 == 1);

        if (e.vs_ref >= 1 || e.vs_exact >= 1)
            test_fail(__FILE__, __LINE__,
                      "%s M=%zu N=%zu K=%zu lda=%zu ldc=%zu: error/bound %.3g vs reference, %.3g "
                      "vs exact",
                      cpu_gemm_format_name(f), M, N, K, lda, ldc, e.vs_ref, e.vs_exact);
        worst.vs_ref = fmax(worst.vs_ref, e.vs_ref);
        worst.vs_exact = fmax(worst.vs_exact, e.vs_exact);
    }
    printf("  %s: 120 random shapes, worst error/bound %.3g vs reference, %.3g vs exact\n",
           cpu_gemm_format_name(f), worst.vs_ref, worst.vs_exact);
}

TEST(f32_random_shapes)
{
    check_random_shapes(CPU_GEMM_F32);
}

TEST(bf16_random_shapes)
{
    require(CPU_GEMM_BF16);
    check_random_shapes(CPU_GEMM_BF16);
}

TEST(int8_random_shapes)
{
    require(CPU_GEMM_INT8);
    check_random_shapes(CPU_GEMM_INT8);
}

static double now(void)
{
    struct timespec t;

    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* all-MiniLM-L6-v2's shapes (H 384, FF 1536): correct, and how fast (thread CPU time). */
static void check_layer_shapes(enum cpu_gemm_format f)
{
    static const size_t shapes[][2] = {{1152, 384}, {384, 384}, {1536, 384}, {384, 1536}};
    const size_t M = 512;
    float *A = malloc(M * 1536 * sizeof(float)), *W = malloc(1536 * 1536 * sizeof(float));
    float *C = malloc(M * 1536 * sizeof(float));
    void *scratch = aligned_alloc(64, cpu_gemm_scratch_bytes(1536));

    ASSERT_TRUE(A && W && C && scratch);
    for (size_t i = 0; i < ELEMENTSOF(shapes); i++) {
        size_t N = shapes[i][0], K = shapes[i][1];
        struct errors e = check_product(f, 100, N, K, K, N, i == 3);
        struct cpu_gemm_weights w;
        double t0, t, best = 1e9;

        if (e.vs_ref >= 1 || e.vs_exact >= 1)
            test_fail(__FILE__, __LINE__, "%s N=%zu K=%zu: error/bound %.3g, %.3g",
                      cpu_gemm_format_name(f), N, K, e.vs_ref, e.vs_exact);
        fill_activations(A, M, K, K, false);
        for (size_t j = 0; j < N * K; j++)
            W[j] = frand() * 0.05f;
        ASSERT_OK(cpu_gemm_pack(&w, f, W, N, K));
        for (int rep = 0; rep < 5; rep++) {
            t0 = now();
            cpu_gemm(&w, A, K, M, C, N, scratch);
            t = now() - t0;
            best = fmin(best, t);
        }
        printf("  %s M=%zu N=%4zu K=%4zu: %6.1f GFLOP/s (best of 5, thread CPU time)\n",
               cpu_gemm_format_name(f), M, N, K, 2.0 * (double)(M * N * K) / best / 1e9);
        cpu_gemm_weights_release(&w);
    }
    free(A), free(W), free(C), free(scratch);
}

TEST(f32_layer_shapes)
{
    check_layer_shapes(CPU_GEMM_F32);
}

TEST(bf16_layer_shapes)
{
    require(CPU_GEMM_BF16);
    check_layer_shapes(CPU_GEMM_BF16);
}

TEST(int8_layer_shapes)
{
    require(CPU_GEMM_INT8);
    check_layer_shapes(CPU_GEMM_INT8);
}

TEST(bf16_rounding)
{
    /* Round to nearest, ties to even; NaN stays NaN; denormals become signed zero. */
    ASSERT_EQ(cpu_bf16_from_float(1.0f), 0x3f80);
    ASSERT_EQ(cpu_bf16_from_float(1.0f + 0x1p-8f), 0x3f80);            /* tie, even below */
    ASSERT_EQ(cpu_bf16_from_float(1.0f + 3 * 0x1p-8f), 0x3f82);        /* tie, even above */
    ASSERT_EQ(cpu_bf16_from_float(1.0f + 0x1p-8f + 0x1p-20f), 0x3f81); /* above the tie */
    ASSERT_EQ(cpu_bf16_from_float(-2.5f), 0xc020);
    ASSERT_EQ(cpu_bf16_from_float(INFINITY), 0x7f80);
    ASSERT_TRUE(isnan(cpu_bf16_to_float(cpu_bf16_from_float(NAN))));
    ASSERT_EQ(cpu_bf16_from_float(-1e-40f), 0x8000);
    ASSERT_TRUE(cpu_bf16_to_float(0x4049) == 3.140625f);
}

TEST(pack_refuses_bad_input)
{
    float W[6] = {1, 2, 3, 4, 5, 6};
    struct cpu_gemm_weights w;

    ASSERT_EQ(cpu_gemm_pack(&w, CPU_GEMM_BF16, W, 0, 3), -EINVAL);
    ASSERT_EQ(cpu_gemm_pack(&w, CPU_GEMM_INT8, W, 2, 0), -EINVAL);
    W[4] = NAN;
    ASSERT_EQ(cpu_gemm_pack(&w, CPU_GEMM_INT8, W, 2, 3), -EINVAL);
    W[4] = 5;
    ASSERT_OK(cpu_gemm_pack(&w, CPU_GEMM_INT8, W, 2, 3));
    /* Row scales: max |w| / 127; corrections: scale * sum of the quantised row. */
    ASSERT_NEAR(w.scale[0], 3.0 / 127, 1e-9);
    ASSERT_NEAR(w.corr[0], 3.0 / 127 * (42 + 85 + 127), 1e-6);
    ASSERT_NEAR(w.corr[1], 6.0 / 127 * (85 + 106 + 127), 1e-6);
    cpu_gemm_weights_release(&w);
    ASSERT_TRUE(w.data == NULL);
}

int main(int argc, char **argv)
{
    /* The backend calls every GEMM single-threaded (its own threads split the batch). */
    openblas_set_num_threads(1);
    return test_run_all(argc, argv);
}
