/*
 * kernels-avx512.c - AVX-512 versions of the CPU kernels (kernels.h).  This file is compiled
 * with -mavx512f -mavx512dq -mavx512bw -mavx512vl -mfma, so nothing in it may run before
 * cpu_kernels_avx512() has checked CPUID.  Shapes the vector code does not cover (a row width or
 * head size other than 16, 32 or 64) fall back to the generic
 * kernels, so every model still runs.
 *
 * Attention works per (sequence, head) on a transposed, bias-added copy of K ([d][j], built by
 * 16 x 16 register transposes, so the scores of one query against 16 keys are head_dim
 * broadcast-FMAs) and a bias-added copy of V ([j][d]); queries go four rows at a time so every
 * K and V load feeds four rows, and keys 32 at a time so eight FMA chains are in flight.  The
 * softmax is exact over the sequence's own keys: packed batches need no mask.  The bf16 and
 * int8 precisions use attention-bf16.c instead, the same layout in bf16 pairs.
 */
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "kernels.h"
#include "simd-avx512.h"

static void avx512_add_layernorm(float *x, const float *y, size_t ld, const float *bias,
                                 const float *g, const float *b, size_t rows, size_t n, float eps)
{
    if (n % 16 != 0) {
        cpu_kernels_generic.add_layernorm(x, y, ld, bias, g, b, rows, n, eps);
        return;
    }
    for (size_t r = 0; r < rows; r++) {
        float *row = x + r * ld;
        const float *yr = y ? y + r * ld : NULL;
        __m512 acc = _mm512_setzero_ps(), vm, vr;
        float mean, var, rstd;

        for (size_t c = 0; c < n; c += 16) {
            __m512 v = _mm512_loadu_ps(row + c);
            if (yr)
                v = _mm512_add_ps(v, _mm512_loadu_ps(yr + c));
            if (bias)
                v = _mm512_add_ps(v, _mm512_loadu_ps(bias + c));
            _mm512_storeu_ps(row + c, v);
            acc = _mm512_add_ps(acc, v);
        }
        mean = _mm512_reduce_add_ps(acc) / (float)n;
        vm = _mm512_set1_ps(mean);
        acc = _mm512_setzero_ps();
        for (size_t c = 0; c < n; c += 16) {
            __m512 d = _mm512_sub_ps(_mm512_loadu_ps(row + c), vm);
            acc = _mm512_fmadd_ps(d, d, acc);
        }
        var = _mm512_reduce_add_ps(acc) / (float)n;
        rstd = 1.0f / sqrtf(var + eps);
        vr = _mm512_set1_ps(rstd);
        for (size_t c = 0; c < n; c += 16) {
            __m512 d = _mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(row + c), vm), vr);
            _mm512_storeu_ps(row + c,
                             _mm512_fmadd_ps(d, _mm512_loadu_ps(g + c), _mm512_loadu_ps(b + c)));
        }
    }
}

/*
 * GELU(x + bias) with kernels.c's piecewise erf: per lane, the piece index floor(4|u|) picks
 * each coefficient out of a 16-float table held in a register (vpermps), then Horner in the
 * offset s = 4|u| - index; the same operations, in the same order, as cpu_gelu().
 */
static void avx512_bias_gelu(float *x, const float *bias, size_t rows, size_t n)
{
    const __m512 half = _mm512_set1_ps(0.5f), four = _mm512_set1_ps(4.0f);
    const __m512 rsqrt2 = _mm512_set1_ps((float)M_SQRT1_2), clamp = _mm512_set1_ps(3.99999976f);
    __m512 c[CPU_ERF_DEGREE + 1];

    if (n % 16 != 0) {
        cpu_kernels_generic.bias_gelu(x, bias, rows, n);
        return;
    }
    for (int k = 0; k <= CPU_ERF_DEGREE; k++)
        c[k] = _mm512_loadu_ps(cpu_erf_coef[k]);
    for (size_t r = 0; r < rows; r++) {
        float *row = x + r * n;
        for (size_t col = 0; col < n; col += 16) {
            __m512 v = _mm512_add_ps(_mm512_loadu_ps(row + col), _mm512_loadu_ps(bias + col));
            __m512 u = _mm512_mul_ps(v, rsqrt2);
            __m512 y = _mm512_mul_ps(_mm512_min_ps(_mm512_abs_ps(u), clamp), four);
            __m512 f = _mm512_roundscale_ps(y, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
            __m512 s = _mm512_sub_ps(y, f);
            __m512i i = _mm512_cvttps_epi32(f);
            __m512 h = _mm512_permutexvar_ps(i, c[CPU_ERF_DEGREE]);

            _Pragma("GCC unroll 8") for (int k = CPU_ERF_DEGREE - 1; k >= 0; k--) h =
                _mm512_fmadd_ps(h, s, _mm512_permutexvar_ps(i, c[k]));
            /* copysign(h, v): h >= 0, so or-ing in v's sign bit is exact. */
            h = _mm512_or_ps(h, _mm512_and_ps(v, _mm512_set1_ps(-0.0f)));
            _mm512_storeu_ps(row + col, _mm512_fmadd_ps(v, h, _mm512_mul_ps(v, half)));
        }
    }
}

/*
 * R query rows (R = 4 or 1) of one head against all L keys; NC = head_dim / 16 column vectors
 * (1, 2 or 4).  R and NC are constants after inlining, and the loops over them are unrolled so
 * every accumulator lives in a register.
 * Kt is [head_dim][lp], V is [L][head_dim], S has R rows of lp floats, qs R rows of head_dim.
 */
static ALWAYS_INLINE void attn_rows(const float *qkv, size_t ld_qkv, const float *bq, float scale,
                                    const float *Kt, const float *V, float *S, float *qs,
                                    float *ctx, size_t ld_ctx, size_t i0, size_t L, size_t lp,
                                    const int R, const int NC)
{
    const int D = NC * 16;
    const __m512 vscale = _mm512_set1_ps(scale);
    __m512 acc[4][4];
    float inv[4];

    _Pragma("GCC unroll 8")

        for (int r = 0; r < R; r++) _Pragma("GCC unroll 8") for (int c = 0; c < NC; c++)
    {
        __m512 q = _mm512_add_ps(_mm512_loadu_ps(qkv + (i0 + r) * ld_qkv + 16 * c),
                                 _mm512_loadu_ps(bq + 16 * c));
        _mm512_store_ps(qs + r * D + 16 * c, _mm512_mul_ps(q, vscale));
    }

    /* Scores: S[r][j] = q_r . k_j for 32 keys at a time (lp is a multiple of 32): two
     * accumulators per row, so 8 independent FMA chains hide the FMA latency. */
    for (size_t jb = 0; jb < lp; jb += 32) {
        _Pragma("GCC unroll 8") for (int r = 0; r < R; r++) acc[r][0] = acc[r][1] =
            _mm512_setzero_ps();
        for (int d = 0; d < D; d++) {
            __m512 k0 = _mm512_load_ps(Kt + (size_t)d * lp + jb);
            __m512 k1 = _mm512_load_ps(Kt + (size_t)d * lp + jb + 16);

            _Pragma("GCC unroll 8") for (int r = 0; r < R; r++)
            {
                __m512 q = _mm512_set1_ps(qs[r * D + d]);

                acc[r][0] = _mm512_fmadd_ps(q, k0, acc[r][0]);
                acc[r][1] = _mm512_fmadd_ps(q, k1, acc[r][1]);
            }
        }
        _Pragma("GCC unroll 8") for (int r = 0; r < R; r++)
        {
            _mm512_store_ps(S + r * lp + jb, acc[r][0]);
            _mm512_store_ps(S + r * lp + jb + 16, acc[r][1]);
        }
    }

    /* Softmax over the L real keys; the padding lanes of the last block become 0. */
    _Pragma("GCC unroll 8") for (int r = 0; r < R; r++) inv[r] = softmax_row(S + r * lp, L, NULL);

    /* Context: out_r = sum_j p_rj v_j. */
    _Pragma("GCC unroll 8") for (int r = 0; r < R; r++)
        _Pragma("GCC unroll 8") for (int c = 0; c < NC; c++) acc[r][c] = _mm512_setzero_ps();
    for (size_t j = 0; j < L; j++) {
        __m512 v[4];
        _Pragma("GCC unroll 8") for (int c = 0; c < NC; c++) v[c] =
            _mm512_load_ps(V + j * D + 16 * c);
        _Pragma("GCC unroll 8") for (int r = 0; r < R; r++)
        {
            __m512 p = _mm512_set1_ps(S[r * lp + j]);
            _Pragma("GCC unroll 8") for (int c = 0; c < NC; c++) acc[r][c] =
                _mm512_fmadd_ps(p, v[c], acc[r][c]);
        }
    }
    _Pragma("GCC unroll 8") for (int r = 0; r < R; r++)
        _Pragma("GCC unroll 8") for (int c = 0; c < NC; c++) _mm512_storeu_ps(
            ctx + (i0 + r) * ld_ctx + 16 * c, _mm512_mul_ps(acc[r][c], _mm512_set1_ps(inv[r])));
}

#define ATTN_HEAD(NC)                                                                              \
    do {                                                                                           \
        size_t i = 0;                                                                              \
        for (; i + 4 <= nq; i += 4)                                                                \
            attn_rows(qkv + qo, ld_qkv, bqkv + qo, scale, Kt, V, S, qs, ctx + qo, ld_ctx, i, L,    \
                      lp, 4, NC);                                                                  \
        for (; i < nq; i++)                                                                        \
            attn_rows(qkv + qo, ld_qkv, bqkv + qo, scale, Kt, V, S, qs, ctx + qo, ld_ctx, i, L,    \
                      lp, 1, NC);                                                                  \
    } while (0)

static void avx512_attention(const float *qkv, size_t ld_qkv, const float *bqkv, float *ctx,
                             size_t ld_ctx, size_t L, size_t nq, unsigned n_heads,
                             unsigned head_dim, float *scratch)
{
    const size_t D = head_dim, H = (size_t)n_heads * head_dim, lp = (L + 31) & ~(size_t)31;
    const float scale = 1.0f / sqrtf((float)head_dim);
    float *Kt = scratch, *V = Kt + D * lp, *S = V + lp * D, *qs = S + 4 * lp;

    /* 16, 32 and 64 cover BERT-family models; other sizes take the portable path. */
    if (D != 16 && D != 32 && D != 64) {
        cpu_kernels_generic.attention(qkv, ld_qkv, bqkv, ctx, ld_ctx, L, nq, n_heads, head_dim,
                                      scratch);
        return;
    }
    for (unsigned h = 0; h < n_heads; h++) {
        size_t qo = (size_t)h * D, ko = H + qo, vo = 2 * H + qo;

        /* K^T with bias, 16 x 16 blocks at a time; padding key columns are zero. */
        for (size_t jb = 0; jb < lp; jb += 16)
            for (size_t d0 = 0; d0 < D; d0 += 16) {
                __m512 r[16], kb = _mm512_loadu_ps(bqkv + ko + d0);

                _Pragma("GCC unroll 16") for (int i = 0; i < 16; i++) r[i] =
                    jb + (size_t)i < L
                        ? _mm512_add_ps(_mm512_loadu_ps(qkv + (jb + (size_t)i) * ld_qkv + ko + d0),
                                        kb)
                        : _mm512_setzero_ps();
                transpose16(r);
                _Pragma("GCC unroll 16") for (int i = 0; i < 16; i++)
                    _mm512_store_ps(Kt + (d0 + (size_t)i) * lp + jb, r[i]);
            }
        for (size_t j = 0; j < L; j++)
            for (size_t c = 0; c < D; c += 16)
                _mm512_store_ps(V + j * D + c,
                                _mm512_add_ps(_mm512_loadu_ps(qkv + j * ld_qkv + vo + c),
                                              _mm512_loadu_ps(bqkv + vo + c)));
        switch (D / 16) {
        case 1:
            ATTN_HEAD(1);
            break;
        case 2:
            ATTN_HEAD(2);
            break;
        default:
            ATTN_HEAD(4);
            break;
        }
    }
}

const struct cpu_kernels cpu_kernels_avx512_impl = {
    .name = "avx512",
    .add_layernorm = avx512_add_layernorm,
    .bias_gelu = avx512_bias_gelu,
    .attention = avx512_attention,
};
