/*
 * kernels.h - the non-GEMM pieces of the CPU forward pass (GEMMs go to OpenBLAS): residual add
 * + LayerNorm, bias + GELU, and attention over one packed sequence.
 *
 * Two implementations share this table: `generic` (portable C; the reference the kernel tests
 * compare against) and `avx512` (x86-64 AVX-512F/DQ/BW/VL, in kernels-avx512.c, compiled with
 * those flags and only called after a CPUID check).  Both evaluate the same formulas:
 *  - exp: Cephes expf range reduction + degree-5 polynomial (about 1 ulp);
 *  - erf: a piecewise degree-5 polynomial on [0, 4) in 16 pieces (cpu_erf_coef), |error| <=
 *    6.5e-8 in fp32 (tighter than the Abramowitz & Stegun 7.1.26 that PyTorch's vectorised CPU
 *    erf uses), so GELU(x) = x/2 (1 + erf(x/sqrt 2)) tracks torch closely; no division or exp,
 *    and the vector code holds each coefficient table in one register;
 *  - LayerNorm: two-pass fp32 mean and biased variance, (x - mean) / sqrt(var + eps) * g + b.
 *
 * All matrices are fp32 row-major with explicit row strides (in floats).  Threading: the
 * functions are pure apart from their output and scratch arguments; call them from any thread.
 */
#ifndef COARCH_EMBED_CPU_KERNELS_H
#define COARCH_EMBED_CPU_KERNELS_H

#include <stdbool.h>
#include <stddef.h>

struct cpu_kernels {
    const char *name;

    /* x[r] = LayerNorm(x[r] + y[r] + bias) * g + b for rows r < rows, n columns; y and bias may
     * be NULL.  Rows of x and y are ld floats apart. */
    void (*add_layernorm)(float *x, const float *y, size_t ld, const float *bias, const float *g,
                          const float *b, size_t rows, size_t n, float eps);

    /* x[r][c] = GELU(x[r][c] + bias[c]), the exact (erf) form. */
    void (*bias_gelu)(float *x, const float *bias, size_t rows, size_t n);

    /*
     * Self-attention of one sequence of L tokens.  qkv holds L rows of [Q | K | V] (each
     * n_heads * head_dim wide, before bias) ld_qkv floats apart; bqkv is the matching 3*H bias.
     * Writes softmax(Q K^T / sqrt(head_dim)) V, heads concatenated, for the first n_queries
     * query rows (1 <= n_queries <= L; all keys are always used) to n_queries rows of ctx,
     * ld_ctx apart.  scratch holds cpu_attention_scratch_floats(L, n_heads, head_dim) floats,
     * 64-byte aligned.
     */
    void (*attention)(const float *qkv, size_t ld_qkv, const float *bqkv, float *ctx, size_t ld_ctx,
                      size_t L, size_t n_queries, unsigned n_heads, unsigned head_dim,
                      float *scratch);
};

/* Floats of attention scratch for sequences of up to max_len tokens, for every kernel. */
size_t cpu_attention_scratch_floats(size_t max_len, unsigned n_heads, unsigned head_dim);

/*
 * Self-attention as cpu_kernels.attention, with its two products (Q K^T and P V) in bf16 pairs
 * through AVX512_BF16 `vdpbf16ps` and fp32 sums; the scores, the softmax and the normalisation
 * stay fp32 (attention-bf16.c).  For the bf16 and int8 precisions only: call it only when
 * cpu_gemm_supported(CPU_GEMM_BF16) said yes.  Head sizes other than 32 and 64 go to the fp32
 * kernel.  Not built (and never to be called) without COARCH_HAVE_AVX512_GEMM.
 */
void cpu_attention_bf16(const float *qkv, size_t ld_qkv, const float *bqkv, float *ctx,
                        size_t ld_ctx, size_t L, size_t n_queries, unsigned n_heads,
                        unsigned head_dim, float *scratch);

extern const struct cpu_kernels cpu_kernels_generic;
/* NULL unless built for x86-64 and this CPU has AVX-512F/DQ/BW/VL. */
const struct cpu_kernels *cpu_kernels_avx512(void);

/* erf's table: cpu_erf_coef[k][i] is the s^k coefficient of 0.5 erf(a) for floor(4a) = i. */
#define CPU_ERF_DEGREE 5
extern const float cpu_erf_coef[CPU_ERF_DEGREE + 1][16];

/* Scalar versions of the vector formulas (for the generic kernels and for tests). */
float cpu_expf(float x);
float cpu_erff(float x);
float cpu_gelu(float x);

#endif
