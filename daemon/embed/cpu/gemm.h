/*
 * gemm.h - the CPU backend's matrix products, C[M,N] = A[M,K] W[N,K]^T, in three precisions.
 *
 * Every GEMM of the BERT forward pass multiplies activations A (fp32, row-major, one row per
 * token) by a Linear layer's weight W as Hugging Face stores it ([out, in], row-major), so the
 * weights are the fixed operand.  A `cpu_gemm_weights` holds one W prepared ONCE at load:
 *
 *   CPU_GEMM_F32   W as is; the product is OpenBLAS cblas_sgemm (the exact reference path).
 *   CPU_GEMM_BF16  W rounded to bf16 (round-to-nearest-even) and packed for AVX512_BF16
 *                  `vdpbf16ps`; A is rounded to bf16 per call; products and sums are fp32.
 *   CPU_GEMM_INT8  W quantised per output row n (symmetric: w = sw[n] * wq, wq in [-127, 127])
 *                  and packed for AVX512_VNNI `vpdpbusd` (u8 x s8 -> s32); A is quantised per
 *                  call and per row m, asymmetrically to u8 (a = amin[m] + sa[m] * aq, aq in
 *                  [0, 255]).  Then sum_k a w = sa[m] sw[n] (sum_k aq wq) + amin[m] sw[n]
 *                  (sum_k wq): the integer dot product is exact in s32 and the second term uses
 *                  the per-row weight sum precomputed at packing.  This is the "u8 offset" trick
 *                  of VNNI with the activation's own minimum as the offset, which spends all 256
 *                  levels on the row's actual range (post-GELU rows are nearly one-sided).
 *                  Outlier channels: BERT's hidden states carry a few feature channels up to 15x
 *                  larger than the rest (in all-MiniLM-L6-v2 the same four, in every layer), and
 *                  a row's range, hence its quantisation step, would be set by them.  So per block
 *                  of rows the kernel picks the CPU_GEMM_OUTLIERS channels with the largest |a|,
 *                  sets each row's range from the other channels, quantises the outliers clamped
 *                  to that range, and adds back what the clamp cut off (a - its quantised value)
 *                  times W's column in bf16, kept transposed for this (wt).  Measured on the
 *                  MiniLM fixture, this lifts the worst cosine from 0.9927 to 0.9996 when the FFN
 *                  down projection stays bf16 (docs/embedding.md).
 *
 * Packed layout (bf16 and int8): columns (output rows of W) in panels of 64, the last panel
 * holding the remaining N rounded up to 16.  A panel stores, for each group of G consecutive k
 * (G = 2 for bf16, 4 for int8), its columns in order, each as G contiguous values; K is padded
 * with zeros to a multiple of G and N to a multiple of 16.  One 64-byte load is therefore 16
 * columns x G values of k, exactly the operand `vdpbf16ps` / `vpdpbusd` multiply with a
 * broadcast group of G activations.
 *
 * The AVX-512 kernels (gemm-avx512.c) work on blocks of rows: convert/quantise up to 96 rows of
 * A into the caller's scratch, then for each 64-column panel run a register tile of rows x 64
 * columns over the whole K (the panel stays in L2, the converted rows in L1/L2).
 *
 * Threading: packed weights are immutable after cpu_gemm_pack() and may be shared by threads;
 * each concurrent cpu_gemm() call needs its own scratch.
 */
#ifndef COARCH_EMBED_CPU_GEMM_H
#define COARCH_EMBED_CPU_GEMM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum cpu_gemm_format {
    CPU_GEMM_F32,
    CPU_GEMM_BF16,
    CPU_GEMM_INT8,
};

/* Invariant: data (and for INT8 scale, corr, wt) are set for n > 0, k > 0 after a successful pack.
 */
struct cpu_gemm_weights {
    enum cpu_gemm_format format;
    size_t n, k;  /* W is [n, k] */
    size_t kg;    /* groups of k: ceil(k / G); F32: k */
    void *data;   /* F32: borrowed W; else owned, 64-byte aligned packed values */
    float *scale; /* INT8: sw[n] (owned, n rounded up to 16) */
    float *corr;  /* INT8: sw[n] * sum_k wq[n][k] */
    uint16_t *wt; /* INT8: W^T in bf16, [k][n rounded up to 32] permuted in groups of 32
                   * (gemm-int.h: cpu_gemm_wt_index), for the outlier channels */
    size_t bytes; /* owned bytes (what the memory governor counts) */
};

const char *cpu_gemm_format_name(enum cpu_gemm_format f);

/*
 * Whether this CPU and build can run `f`.  F32 always can; BF16 needs AVX-512F/BW/VL and
 * AVX512_BF16, INT8 AVX-512F/BW/VL and AVX512_VNNI.  When not, *ret_missing (if not NULL) names
 * what is missing, e.g. "AVX512_BF16 (vdpbf16ps)".
 */
bool cpu_gemm_supported(enum cpu_gemm_format f, const char **ret_missing);

/*
 * Prepare W ([n, k] fp32 row-major, row stride k) for `f`.  F32 only records the pointer (W must
 * outlive the weights); BF16 and INT8 copy, so W may go away afterwards.  Returns 0, -ENOMEM, or
 * -EINVAL for n or k of 0 or (BF16, INT8) a non-finite weight.  Release with
 * cpu_gemm_weights_release().
 */
int cpu_gemm_pack(struct cpu_gemm_weights *w, enum cpu_gemm_format f, const float *W, size_t n,
                  size_t k);
void cpu_gemm_weights_release(struct cpu_gemm_weights *w);

/* Bytes of scratch a cpu_gemm() call with rows of at most max_k values needs (64-byte aligned). */
size_t cpu_gemm_scratch_bytes(size_t max_k);

/*
 * C[m][0..n) = sum_k A[m][k] W[n][k] for m < M (rows of A lda floats apart, of C ldc apart).  A
 * must be finite.  The format must be supported (cpu_gemm_supported()); scratch holds
 * cpu_gemm_scratch_bytes(w->k) bytes, 64-byte aligned.  Single-threaded.
 */
void cpu_gemm(const struct cpu_gemm_weights *w, const float *A, size_t lda, size_t M, float *C,
              size_t ldc, void *scratch);

/*
 * The same product computed by plain scalar loops from the packed weights, quantising A exactly
 * as the kernels do (bf16 rounding; int8 outliers, per-row min and scale): the reference the kernel
 * tests compare against.  Slow; tests only.
 */
void cpu_gemm_reference(const struct cpu_gemm_weights *w, const float *A, size_t lda, size_t M,
                        float *C, size_t ldc);

/* fp32 -> bf16 bits, round to nearest even (NaN stays NaN), as vcvtneps2bf16 does. */
uint16_t cpu_bf16_from_float(float x);
float cpu_bf16_to_float(uint16_t b);

#endif
