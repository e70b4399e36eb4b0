/*
 * gemm-avx512.c - the bf16 (AVX512_BF16 `vdpbf16ps`) and int8 (AVX512_VNNI `vpdpbusd`) GEMM
 * kernels of gemm.h.  Compiled with -mavx512f -mavx512dq -mavx512bw -mavx512vl -mavx512bf16
 * -mavx512vnni, so nothing here may run before cpu_gemm_supported() has checked CPUID.
 *
 * Both kernels share one shape.  A block of up to CPU_GEMM_MB rows of A is converted (bf16) or
 * quantised (u8, per-row min and scale) into the scratch, rows padded to whole tiles with zeros
 * and K padded with zeros to whole 64-byte lines.  Then for every 64-column panel of the packed
 * weights, a register tile of MR rows x 64 columns (MR x 4 zmm accumulators) runs over all of
 * K: per group of k it loads the panel's 4 vectors (16 columns x G values each) once and
 * multiplies each by a broadcast group of G activations of each row.  The panel (K x 64 values,
 * 48-192 KB for BERT-small/base shapes) stays in L2 while the block's tiles sweep it; a tile's
 * rows stay in L1.  The epilogue writes fp32 C directly (int8: sa*sw*acc + amin*sw*sum(wq)).
 *
 * MR = 6 keeps 24 accumulators + 4 weight vectors + 1 broadcast within the 32 zmm registers;
 * on Zen 4 (AVX-512 as 2 x 256-bit) it measured as fast as MR = 8 with 3 vectors and faster
 * than MR = 4.  No packing happens per call: the weights were packed once at load.
 */
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "gemm-int.h"

#define ALWAYS_INLINE inline __attribute__((always_inline))
#define MR 6
#define NV_MAX (CPU_GEMM_NR / 16)

_Static_assert(CPU_GEMM_MB % MR == 0, "row blocks must hold whole tiles");

static ALWAYS_INLINE __mmask16 lanes(size_t n)
{
    return n >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << n) - 1);
}

static ALWAYS_INLINE size_t left(size_t n, size_t at)
{
    return n > at ? n - at : 0;
}

/* Store 16 floats, or the first `cols` of them. */
static ALWAYS_INLINE void store_cols(float *c, __m512 v, size_t cols)
{
    if (cols >= 16)
        _mm512_storeu_ps(c, v);
    else
        _mm512_mask_storeu_ps(c, lanes(cols), v);
}

/* ---- bf16 ---- */

/* Rows [0, mb) of A to bf16 rows of `stride` values (a multiple of 32); rows [mb, mbp) zero. */
static void convert_bf16(const float *A, size_t lda, size_t mb, size_t mbp, size_t k, uint16_t *dst,
                         size_t stride)
{
    for (size_t r = 0; r < mbp; r++) {
        uint16_t *d = dst + r * stride;
        const float *a = A + r * lda;

        if (r >= mb) {
            memset(d, 0, stride * sizeof(*d));
            continue;
        }
        for (size_t k0 = 0; k0 < stride; k0 += 32) {
            __m512 lo = _mm512_maskz_loadu_ps(lanes(left(k, k0)), a + k0);
            __m512 hi = _mm512_maskz_loadu_ps(lanes(left(k, k0 + 16)), a + k0 + 16);

            _mm512_store_si512((__m512i *)(d + k0), (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
        }
    }
}

/*
 * MR rows of bf16 pairs (row r at a + r * lda32 dwords) times one panel of NV vectors per
 * k-pair, over kg pairs; the first `rows` rows and `cols` columns are stored to C.
 */
static ALWAYS_INLINE void bf16_tile(const uint32_t *a, size_t lda32, const __m512i *b, size_t kg,
                                    float *C, size_t ldc, size_t rows, size_t cols, const int NV)
{
    __m512 acc[MR][NV_MAX];

    _Pragma("GCC unroll 8") for (int r = 0; r < MR; r++)
        _Pragma("GCC unroll 4") for (int c = 0; c < NV; c++) acc[r][c] = _mm512_setzero_ps();
    for (size_t g = 0; g < kg; g++) {
        __m512i bv[NV_MAX];

        _Pragma("GCC unroll 4") for (int c = 0; c < NV; c++) bv[c] =
            _mm512_load_si512(b + g * NV + c);
        _Pragma("GCC unroll 8") for (int r = 0; r < MR; r++)
        {
            __m512i av = _mm512_set1_epi32((int)a[r * lda32 + g]);

            _Pragma("GCC unroll 4") for (int c = 0; c < NV; c++) acc[r][c] =
                _mm512_dpbf16_ps(acc[r][c], (__m512bh)av, (__m512bh)bv[c]);
        }
    }
    _Pragma("GCC unroll 8") for (int r = 0; r < MR; r++)
    {
        if ((size_t)r >= rows)
            break;
        _Pragma("GCC unroll 4") for (int c = 0; c < NV; c++)
            store_cols(C + r * ldc + 16 * c, acc[r][c], left(cols, 16 * (size_t)c));
    }
}

void cpu_gemm_bf16_avx512(const struct cpu_gemm_weights *w, const float *A, size_t lda, size_t M,
                          float *C, size_t ldc, void *scratch)
{
    const size_t stride = cpu_gemm_scratch_row_bytes(CPU_GEMM_BF16, w->k) / 2;
    const __m512i *wd = w->data;

    for (size_t m0 = 0; m0 < M; m0 += CPU_GEMM_MB) {
        size_t mb = M - m0 < CPU_GEMM_MB ? M - m0 : CPU_GEMM_MB;
        size_t mbp = cpu_gemm_round_up(mb, MR);

        convert_bf16(A + m0 * lda, lda, mb, mbp, w->k, scratch, stride);
        for (size_t col0 = 0; col0 < w->n; col0 += CPU_GEMM_NR) {
            const __m512i *b = wd + col0 * w->kg / 16; /* 64 bytes = 16 columns x one pair */
            size_t cols = w->n - col0;

            for (size_t r0 = 0; r0 < mbp; r0 += MR) {
                const uint32_t *a = (const uint32_t *)scratch + r0 * (stride / 2);
                float *c = C + (m0 + r0) * ldc + col0;
                size_t rows = mb - r0;

                switch (cpu_gemm_panel_vectors(w->n, col0)) {
                case 4:
                    bf16_tile(a, stride / 2, b, w->kg, c, ldc, rows, cols, 4);
                    break;
                case 3:
                    bf16_tile(a, stride / 2, b, w->kg, c, ldc, rows, cols, 3);
                    break;
                case 2:
                    bf16_tile(a, stride / 2, b, w->kg, c, ldc, rows, cols, 2);
                    break;
                default:
                    bf16_tile(a, stride / 2, b, w->kg, c, ldc, rows, cols, 1);
                    break;
                }
            }
        }
    }
}

/* ---- int8 ---- */

/*
 * The fourth largest of v's 16 lanes (lanes holding -1 count as values): take the maximum and
 * retire one lane holding it, four times.
 */
static ALWAYS_INLINE float fourth_largest(__m512 v)
{
    float m = -1.0f;

    for (int i = 0; i < CPU_GEMM_OUTLIERS; i++) {
        __mmask16 eq;

        m = _mm512_reduce_max_ps(v);
        eq = _mm512_cmp_ps_mask(v, _mm512_set1_ps(m), _CMP_EQ_OQ);
        v = _mm512_mask_mov_ps(v, (__mmask16)(eq & -eq), _mm512_set1_ps(-1.0f));
    }
    return m;
}

/*
 * One row a[0..k) to u8 levels d[0..stride) (the K padding zero) with its minimum and step, and
 * its outlier channels and their residuals, exactly as the reference computes them
 * (cpu_gemm_pick_outliers(), the range of the other channels, cpu_gemm_int8_level()).
 *
 * The outliers are the top 4 |a| by (value desc, index asc).  A lower bound T of the fourth
 * largest |a| makes the search cheap: every element below T is certainly not an outlier (so it
 * goes straight into the min/max), and only the few at or above T are offered, in index order,
 * which picks the same four as offering everything.  T is the larger of two bounds, each the
 * minimum of four distinct elements: the fourth largest of the 16 per-lane maxima (pass 1), and
 * the row's values at the previous row's outlier channels (`hint`; BERT's outliers sit in the
 * same few channels in most tokens).  Candidates that are not picked rejoin the min/max.
 * `cand` has room for a 16-bit mask per 16 channels.  Returns the number of outliers (0 when
 * k < CPU_GEMM_MIN_K_OUTLIERS, else CPU_GEMM_OUTLIERS).
 */
static size_t quantize_row(const float *a, size_t k, const uint32_t *hint, size_t n_hint,
                           uint8_t *d, size_t stride, uint16_t *cand, float *ret_min,
                           float *ret_scale, float res[CPU_GEMM_OUTLIERS],
                           uint32_t out[CPU_GEMM_OUTLIERS])
{
    __m512 vmin = _mm512_set1_ps(INFINITY), vmax = _mm512_set1_ps(-INFINITY), vfloor, vm, vinv;
    float best[CPU_GEMM_OUTLIERS], floor = INFINITY, mn, mx, scale, inv;
    size_t n = 0, n_cand = 0;

    if (k >= CPU_GEMM_MIN_K_OUTLIERS) {
        __m512 lm = _mm512_set1_ps(-1.0f);

        for (size_t k0 = 0; k0 < k; k0 += 16) {
            __mmask16 valid = lanes(k - k0);

            lm = _mm512_mask_max_ps(lm, valid, lm,
                                    _mm512_abs_ps(_mm512_maskz_loadu_ps(valid, a + k0)));
        }
        floor = fourth_largest(lm);
        if (n_hint == CPU_GEMM_OUTLIERS) {
            float h = INFINITY;

            for (size_t j = 0; j < n_hint; j++)
                h = fminf(h, fabsf(a[hint[j]]));
            floor = fmaxf(floor, h);
        }
    }
    /* Pass 2: min/max of the certain non-outliers; offer the candidates. */
    vfloor = _mm512_set1_ps(floor);
    for (size_t k0 = 0; k0 < k; k0 += 16) {
        __mmask16 valid = lanes(k - k0);
        __m512 x = _mm512_maskz_loadu_ps(valid, a + k0);
        __mmask16 below = _mm512_mask_cmp_ps_mask(valid, _mm512_abs_ps(x), vfloor, _CMP_LT_OQ);
        unsigned m = (unsigned)(valid & ~below);

        vmin = _mm512_mask_min_ps(vmin, below, vmin, x);
        vmax = _mm512_mask_max_ps(vmax, below, vmax, x);
        cand[k0 / 16] = (uint16_t)m;
        n_cand += (size_t)__builtin_popcount(m);
        while (m) {
            unsigned lane = (unsigned)__builtin_ctz(m);

            m &= m - 1;
            cpu_gemm_outlier_offer(fabsf(a[k0 + lane]), (uint32_t)(k0 + lane), best, out, &n);
        }
    }
    /* The candidates not picked (usually none) are ordinary channels. */
    for (size_t j = 0; j < n; j++)
        cand[out[j] / 16] &= (uint16_t) ~(1u << (out[j] % 16));
    if (n_cand > n)
        for (size_t k0 = 0; k0 < k; k0 += 16) {
            __mmask16 m = cand[k0 / 16];

            if (m) {
                __m512 x = _mm512_maskz_loadu_ps(m, a + k0);

                vmin = _mm512_mask_min_ps(vmin, m, vmin, x);
                vmax = _mm512_mask_max_ps(vmax, m, vmax, x);
            }
        }
    mn = _mm512_reduce_min_ps(vmin);
    mx = _mm512_reduce_max_ps(vmax);
    cpu_gemm_int8_row_params(mn, mx, &scale, &inv);
    *ret_min = mn;
    *ret_scale = scale;
    vm = _mm512_set1_ps(mn);
    vinv = _mm512_set1_ps(inv);
    for (size_t k0 = 0; k0 < stride; k0 += 16) {
        __mmask16 m = lanes(left(k, k0));
        __m512 x = _mm512_maskz_loadu_ps(m, a + k0);
        /* Round to nearest even.  Every channel but the outliers lies in [mn, mx], so its
         * level is in [0, 255] (a hair above 255 saturates); the outliers are set below. */
        __m512i q = _mm512_maskz_cvtps_epi32(m, _mm512_mul_ps(_mm512_sub_ps(x, vm), vinv));

        _mm_store_si128((__m128i *)(d + k0), _mm512_cvtusepi32_epi8(q));
    }
    for (size_t j = 0; j < n; j++) {
        d[out[j]] = (uint8_t)cpu_gemm_int8_level(a[out[j]], mn, inv);
        res[j] = cpu_gemm_int8_residual(a[out[j]], mn, scale, inv);
    }
    return n;
}

/*
 * Rows [0, mb) of A to u8 rows of `stride` bytes (a multiple of 64) with their minimum, scale,
 * outlier channels and residuals (gemm-int.h has the formulas); rows [mb, mbp) and the K padding
 * are zero.  Returns the number of outlier channels per row (it depends on k only).
 */
static size_t quantize_u8(const float *A, size_t lda, size_t mb, size_t mbp, size_t k,
                          size_t stride, const struct cpu_gemm_int8_scratch *s)
{
    size_t n_out = 0;

    for (size_t r = 0; r < mbp; r++) {
        uint8_t *d = s->q + r * stride;
        uint32_t *out = s->out + r * CPU_GEMM_OUTLIERS;

        if (r >= mb) {
            memset(d, 0, stride);
            s->amin[r] = s->ascale[r] = 0;
            for (size_t j = 0; j < CPU_GEMM_OUTLIERS; j++)
                s->res[r * CPU_GEMM_OUTLIERS + j] = 0, out[j] = 0;
            continue;
        }
        n_out = quantize_row(A + r * lda, k, r > 0 ? out - CPU_GEMM_OUTLIERS : NULL,
                             r > 0 ? n_out : 0, d, stride, s->cand, &s->amin[r], &s->ascale[r],
                             s->res + r * CPU_GEMM_OUTLIERS, out);
    }
    return n_out;
}

/* W^T's fp32 values for columns [16c, 16c + 16) of a panel, from a row in the layout of
 * cpu_gemm_wt_index(): one 64-byte load holds 32 columns, unpacked with zeros per half. */
static ALWAYS_INLINE __m512 load_wt(const uint16_t *row, int c)
{
    __m512i x = _mm512_load_si512((const __m512i *)(row + 32 * (c / 2)));

    return _mm512_castsi512_ps(c % 2 ? _mm512_unpackhi_epi16(_mm512_setzero_si512(), x)
                                     : _mm512_unpacklo_epi16(_mm512_setzero_si512(), x));
}

/* The int8 tile; the epilogue adds sum_j res[r][j] * W^T[out[r][j]][cols] for the outliers. */
static ALWAYS_INLINE void int8_tile(const uint32_t *a, size_t lda32, const __m512i *b, size_t kg,
                                    const float *amin, const float *ascale, const float *res,
                                    const uint32_t *out, size_t n_out, const float *wscale,
                                    const float *wcorr, const uint16_t *wt, size_t wt_stride,
                                    float *C, size_t ldc, size_t rows, size_t cols, const int NV)
{
    __m512i acc[MR][NV_MAX];
    const uint16_t *wrow[MR][CPU_GEMM_OUTLIERS];

    _Pragma("GCC unroll 8") for (int r = 0; r < MR; r++)
        _Pragma("GCC unroll 4") for (int c = 0; c < NV; c++) acc[r][c] = _mm512_setzero_si512();
    for (size_t g = 0; g < kg; g++) {
        __m512i bv[NV_MAX];

        _Pragma("GCC unroll 4") for (int c = 0; c < NV; c++) bv[c] =
            _mm512_load_si512(b + g * NV + c);
        _Pragma("GCC unroll 8") for (int r = 0; r < MR; r++)
        {
            __m512i av = _mm512_set1_epi32((int)a[r * lda32 + g]);

            _Pragma("GCC unroll 4") for (int c = 0; c < NV; c++) acc[r][c] =
                _mm512_dpbusd_epi32(acc[r][c], av, bv[c]);
        }
    }
    /* The outlier channels' W^T rows, found once for all column blocks. */
    _Pragma("GCC unroll 8") for (int r = 0; r < MR; r++)
        _Pragma("GCC unroll 4") for (int j = 0; j < CPU_GEMM_OUTLIERS; j++) wrow[r][j] =
            wt + out[r * CPU_GEMM_OUTLIERS + j] * wt_stride;
    _Pragma("GCC unroll 8") for (int r = 0; r < MR; r++)
    {
        __m512 vs, vm;

        if ((size_t)r >= rows)
            break;
        vs = _mm512_set1_ps(ascale[r]);
        vm = _mm512_set1_ps(amin[r]);
        _Pragma("GCC unroll 4") for (int c = 0; c < NV; c++)
        {
            __m512 s = _mm512_mul_ps(vs, _mm512_load_ps(wscale + 16 * c));
            __m512 z = _mm512_mul_ps(vm, _mm512_load_ps(wcorr + 16 * c));
            __m512 v = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[r][c]), s, z);

            /* n_out is 0 or CPU_GEMM_OUTLIERS: a constant count unrolls. */
            if (n_out == CPU_GEMM_OUTLIERS)
                _Pragma("GCC unroll 4") for (int j = 0; j < CPU_GEMM_OUTLIERS; j++) v =
                    _mm512_fmadd_ps(_mm512_set1_ps(res[r * CPU_GEMM_OUTLIERS + j]),
                                    load_wt(wrow[r][j], c), v);
            store_cols(C + r * ldc + 16 * c, v, left(cols, 16 * (size_t)c));
        }
    }
}

void cpu_gemm_int8_avx512(const struct cpu_gemm_weights *w, const float *A, size_t lda, size_t M,
                          float *C, size_t ldc, void *scratch)
{
    const size_t stride = cpu_gemm_scratch_row_bytes(CPU_GEMM_INT8, w->k);
    const size_t wt_stride = cpu_gemm_wt_stride(w->n);
    const __m512i *wd = w->data;
    struct cpu_gemm_int8_scratch s;

    cpu_gemm_int8_scratch_layout(w->k, scratch, &s);
    for (size_t m0 = 0; m0 < M; m0 += CPU_GEMM_MB) {
        size_t mb = M - m0 < CPU_GEMM_MB ? M - m0 : CPU_GEMM_MB;
        size_t mbp = cpu_gemm_round_up(mb, MR);
        size_t n_out = quantize_u8(A + m0 * lda, lda, mb, mbp, w->k, stride, &s);

        for (size_t col0 = 0; col0 < w->n; col0 += CPU_GEMM_NR) {
            const __m512i *b = wd + col0 * w->kg / 16; /* 64 bytes = 16 columns x one quad */
            const float *ws = w->scale + col0, *wc = w->corr + col0;
            const uint16_t *wt = w->wt + col0;
            size_t cols = w->n - col0;

            for (size_t r0 = 0; r0 < mbp; r0 += MR) {
                const uint32_t *a = (const uint32_t *)(s.q + r0 * stride);
                const float *res = s.res + r0 * CPU_GEMM_OUTLIERS;
                const uint32_t *out = s.out + r0 * CPU_GEMM_OUTLIERS;
                float *c = C + (m0 + r0) * ldc + col0;
                size_t rows = mb - r0;

#define INT8_TILE(NV)                                                                              \
    int8_tile(a, stride / 4, b, w->kg, s.amin + r0, s.ascale + r0, res, out, n_out, ws, wc, wt,    \
              wt_stride, c, ldc, rows, cols, NV)
                switch (cpu_gemm_panel_vectors(w->n, col0)) {
                case 4:
                    INT8_TILE(4);
                    break;
                case 3:
                    INT8_TILE(3);
                    break;
                case 2:
                    INT8_TILE(2);
                    break;
                default:
                    INT8_TILE(1);
                    break;
                }
#undef INT8_TILE
            }
        }
    }
}
