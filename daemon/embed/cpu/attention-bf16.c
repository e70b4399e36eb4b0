/*
 * attention-bf16.c - self-attention with its two matrix products in bf16 (AVX512_BF16
 * `vdpbf16ps`, fp32 sums), for the bf16 and int8 precisions (kernels.h: cpu_attention_bf16).
 * Compiled with the GEMM kernels' flags (AVX512_BF16 on top of AVX-512F/DQ/BW/VL), so nothing
 * here may run before cpu_gemm_supported(CPU_GEMM_BF16) has checked CPUID.
 *
 * The layout follows the fp32 kernel (kernels-avx512.c), with pairs where it had single values,
 * so each instruction does twice the work.  One pass over the sequence's QKV rows first converts
 * Q, K and V of every head at once (rows read in order, so the hardware prefetcher streams them;
 * converting per head read each row's 128-byte strips 12 times, 4.6 KB apart, and took a third
 * of the kernel's time), then each head works on its own compact slices:
 *  - scores: Q (bias added, scaled by 1/sqrt(d), rounded to bf16) against K^T stored as
 *    [d/2][j] dwords, each the bf16 pair (k[j][2p], k[j][2p + 1]): one vdpbf16ps per pair of d
 *    covers 16 keys.  K^T comes from 16 x 16 register transposes of rows already in pairs.
 *  - softmax: fp32, exact over the sequence's keys, the fp32 kernel's softmax_row()
 *    (simd-avx512.h), which writes the probabilities straight out as bf16 pairs.
 *  - context: the probabilities rounded to bf16 pairs (p[2q], p[2q + 1]) against V stored as
 *    [j/2][d] dwords (v[2q][d], v[2q + 1][d]): one vdpbf16ps per pair of keys covers 16 d.  The
 *    normalisation uses the fp32 sum of the probabilities.
 * Rounding q, k, p and v to bf16 moves all-MiniLM-L6-v2's fixture cosines by less than 1e-5 (a
 * PyTorch simulation; the parity tests in test-model check the real thing).  Keys are padded to
 * a multiple of 32 with zeros, so padded probabilities are 0 and padded V rows are finite.
 */
#include <immintrin.h>
#include <math.h>
#include <stdint.h>

#include "kernels.h"
#include "simd-avx512.h"

#define R_MAX 4

/* 32 floats a[0..32) + b[0..32) to 16 dwords of bf16 pairs (a[2i], a[2i + 1]) ... */
static ALWAYS_INLINE __m512i pairs32(const float *a, const float *bias, __m512 scale)
{
    __m512 lo = _mm512_mul_ps(_mm512_add_ps(_mm512_loadu_ps(a), _mm512_loadu_ps(bias)), scale);
    __m512 hi =
        _mm512_mul_ps(_mm512_add_ps(_mm512_loadu_ps(a + 16), _mm512_loadu_ps(bias + 16)), scale);

    return (__m512i)_mm512_cvtne2ps_pbh(hi, lo);
}

/*
 * R query rows (4 or 1) of one head against all L keys; NP = head_dim / 32 (1 or 2) vectors of
 * pairs per row.  Qp holds the head's query rows as D/2 dwords of pairs (bias added, scaled), Kt
 * is [D/2][lp] dwords, V2 [lp/2][D] dwords, S R rows of lp floats, Sb R rows of lp/2 dwords.
 */
static ALWAYS_INLINE void attn_rows_bf16(const uint32_t *Qp, const uint32_t *Kt, const uint32_t *V2,
                                         float *S, uint32_t *Sb, float *ctx, size_t ld_ctx,
                                         size_t i0, size_t L, size_t lp, const int R, const int NP)
{
    const int DP = NP * 16, NC = NP * 2; /* pairs per row, 16-float vectors per row */
    const uint32_t *qs = Qp + i0 * DP;
    __m512 acc[R_MAX][4];
    float inv[R_MAX];

    /* Scores, 32 keys at a time (two accumulators per row hide the instruction's latency). */
    for (size_t jb = 0; jb < lp; jb += 32) {
        _Pragma("GCC unroll 4") for (int r = 0; r < R; r++) acc[r][0] = acc[r][1] =
            _mm512_setzero_ps();
        for (int p = 0; p < DP; p++) {
            const uint32_t *k = Kt + (size_t)p * lp + jb;
            __m512i k0 = _mm512_load_si512((const __m512i *)k);
            __m512i k1 = _mm512_load_si512((const __m512i *)(k + 16));

            _Pragma("GCC unroll 4") for (int r = 0; r < R; r++)
            {
                __m512bh q = (__m512bh)_mm512_set1_epi32((int)qs[r * DP + p]);

                acc[r][0] = _mm512_dpbf16_ps(acc[r][0], q, (__m512bh)k0);
                acc[r][1] = _mm512_dpbf16_ps(acc[r][1], q, (__m512bh)k1);
            }
        }
        _Pragma("GCC unroll 4") for (int r = 0; r < R; r++)
        {
            _mm512_store_ps(S + r * lp + jb, acc[r][0]);
            _mm512_store_ps(S + r * lp + jb + 16, acc[r][1]);
        }
    }

    /* Softmax over the L real keys (fp32), out as bf16 pairs; pairs past L are 0. */
    _Pragma("GCC unroll 4") for (int r = 0; r < R; r++) inv[r] =
        softmax_row(S + r * lp, L, Sb + r * (lp / 2));

    /* Context: out_r = sum over key pairs of (p, p') . (v, v'). */
    _Pragma("GCC unroll 4") for (int r = 0; r < R; r++)
        _Pragma("GCC unroll 4") for (int c = 0; c < NC; c++) acc[r][c] = _mm512_setzero_ps();
    for (size_t q = 0; q < (L + 1) / 2; q++) {
        __m512i v[4];

        _Pragma("GCC unroll 4") for (int c = 0; c < NC; c++) v[c] =
            _mm512_load_si512((const __m512i *)(V2 + q * (size_t)(2 * DP) + 16 * c));
        _Pragma("GCC unroll 4") for (int r = 0; r < R; r++)
        {
            __m512bh p = (__m512bh)_mm512_set1_epi32((int)Sb[r * (lp / 2) + q]);

            _Pragma("GCC unroll 4") for (int c = 0; c < NC; c++) acc[r][c] =
                _mm512_dpbf16_ps(acc[r][c], p, (__m512bh)v[c]);
        }
    }
    _Pragma("GCC unroll 4") for (int r = 0; r < R; r++)
        _Pragma("GCC unroll 4") for (int c = 0; c < NC; c++) _mm512_storeu_ps(
            ctx + (i0 + r) * ld_ctx + 16 * c, _mm512_mul_ps(acc[r][c], _mm512_set1_ps(inv[r])));
}

#define ATTN_HEAD_BF16(NP)                                                                         \
    do {                                                                                           \
        size_t i = 0;                                                                              \
        for (; i + 4 <= nq; i += 4)                                                                \
            attn_rows_bf16(Qh, Kh, Vh, S, Sb, ctx + qo, ld_ctx, i, L, lp, 4, NP);                  \
        for (; i < nq; i++)                                                                        \
            attn_rows_bf16(Qh, Kh, Vh, S, Sb, ctx + qo, ld_ctx, i, L, lp, 1, NP);                  \
    } while (0)

void cpu_attention_bf16(const float *qkv, size_t ld_qkv, const float *bqkv, float *ctx,
                        size_t ld_ctx, size_t L, size_t nq, unsigned n_heads, unsigned head_dim,
                        float *scratch)
{
    const size_t D = head_dim, H = (size_t)n_heads * head_dim, lp = (L + 31) & ~(size_t)31;
    const __m512 vscale = _mm512_set1_ps(1.0f / sqrtf((float)head_dim)), one = _mm512_set1_ps(1);
    /* Per head h: Kt + h * (D / 2) * lp, V2 + h * (lp / 2) * D, Qp + h * nq * (D / 2); every
     * piece is a multiple of 16 dwords, so all stay 64-byte aligned. */
    uint32_t *Kt = (uint32_t *)scratch, *V2 = Kt + H / 2 * lp, *Qp = V2 + lp / 2 * H;
    float *S = (float *)(Qp + nq * H / 2);
    uint32_t *Sb = (uint32_t *)(S + R_MAX * lp);
    /* Interleave the words of two rows of 32 bf16: (a0, b0, a1, b1, ...). */
    const __m512i lo_idx =
        _mm512_set_epi16(47, 15, 46, 14, 45, 13, 44, 12, 43, 11, 42, 10, 41, 9, 40, 8, 39, 7, 38, 6,
                         37, 5, 36, 4, 35, 3, 34, 2, 33, 1, 32, 0);
    const __m512i hi_idx = _mm512_add_epi16(lo_idx, _mm512_set1_epi16(16));

    if (D % 32 != 0 || D > 64) {
        const struct cpu_kernels *k = cpu_kernels_avx512();

        (k ? k : &cpu_kernels_generic)
            ->attention(qkv, ld_qkv, bqkv, ctx, ld_ctx, L, nq, n_heads, head_dim, scratch);
        return;
    }

    /* K^T in pairs: 16 keys x 16 pairs per transpose, every head's strip of the same 16 rows. */
    for (size_t jb = 0; jb < lp; jb += 16)
        for (size_t h = 0; h < n_heads; h++)
            for (size_t p0 = 0; p0 < D / 2; p0 += 16) {
                const size_t c0 = H + h * D + 2 * p0; /* the column of K's pair p0 in qkv */
                uint32_t *dst = Kt + (h * (D / 2) + p0) * lp + jb;
                __m512 r[16];

                _Pragma("GCC unroll 16") for (int i = 0; i < 16; i++) r[i] =
                    jb + (size_t)i < L ? _mm512_castsi512_ps(pairs32(
                                             qkv + (jb + (size_t)i) * ld_qkv + c0, bqkv + c0, one))
                                       : _mm512_setzero_ps();
                transpose16(r);
                _Pragma("GCC unroll 16") for (int i = 0; i < 16; i++)
                    _mm512_store_ps((float *)(dst + (size_t)i * lp), r[i]);
            }
    /* V in pairs of keys; the row after an odd L's last is zero. */
    for (size_t q = 0; q < lp / 2; q++) {
        size_t j = 2 * q;

        for (size_t h = 0; h < n_heads; h++)
            for (size_t d0 = 0; d0 < D; d0 += 32) {
                const size_t c0 = 2 * H + h * D + d0;
                __m512i a =
                    j < L ? pairs32(qkv + j * ld_qkv + c0, bqkv + c0, one) : _mm512_setzero_si512();
                __m512i b = j + 1 < L ? pairs32(qkv + (j + 1) * ld_qkv + c0, bqkv + c0, one)
                                      : _mm512_setzero_si512();
                uint32_t *dst = V2 + (h * (lp / 2) + q) * D + d0;

                _mm512_store_si512((__m512i *)dst, _mm512_permutex2var_epi16(a, lo_idx, b));
                _mm512_store_si512((__m512i *)(dst + 16), _mm512_permutex2var_epi16(a, hi_idx, b));
            }
    }
    /* Q with bias, scaled by 1/sqrt(d), in pairs. */
    for (size_t i = 0; i < nq; i++)
        for (size_t h = 0; h < n_heads; h++)
            for (size_t d0 = 0; d0 < D; d0 += 32)
                _mm512_store_si512(
                    (__m512i *)(Qp + (h * nq + i) * (D / 2) + d0 / 2),
                    pairs32(qkv + i * ld_qkv + h * D + d0, bqkv + h * D + d0, vscale));

    for (unsigned h = 0; h < n_heads; h++) {
        const size_t qo = (size_t)h * D;
        const uint32_t *Kh = Kt + h * (D / 2) * lp, *Vh = V2 + h * (lp / 2) * D;
        const uint32_t *Qh = Qp + h * nq * (D / 2);

        if (D == 32)
            ATTN_HEAD_BF16(1);
        else
            ATTN_HEAD_BF16(2);
    }
}
