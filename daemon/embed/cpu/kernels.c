/*
 * kernels.c - portable implementations of the CPU kernels (see kernels.h) and the selection of
 * the AVX-512 ones.  These are the numerical reference: straightforward loops, fp32 throughout,
 * the same exp/erf formulas as the vector code.
 */
#include "kernels.h"

#include <math.h>
#include <string.h>

/* Cephes expf: exp(x) = 2^n * exp(r), r = x - n ln2 split in two constants for exactness. */
#define EXP_HI 88.3762626647949f
#define EXP_LO -88.3762626647949f
#define LOG2EF 1.44269504088896341f
#define EXP_C1 0.693359375f
#define EXP_C2 -2.12194440e-4f
#define EXP_P0 1.9875691500e-4f
#define EXP_P1 1.3981999507e-3f
#define EXP_P2 8.3334519073e-3f
#define EXP_P3 4.1665795894e-2f
#define EXP_P4 1.6666665459e-1f
#define EXP_P5 5.0000001201e-1f

/* Abramowitz & Stegun 7.1.26. */
#define ERF_P 0.3275911f
#define ERF_A1 0.254829592f
#define ERF_A2 -0.284496736f
#define ERF_A3 1.421413741f
#define ERF_A4 -1.453152027f
#define ERF_A5 1.061405429f

float cpu_expf(float x)
{
    float fx, z, p;

    x = fminf(fmaxf(x, EXP_LO), EXP_HI);
    fx = rintf(x * LOG2EF);
    x = fmaf(-fx, EXP_C1, x);
    x = fmaf(-fx, EXP_C2, x);
    z = x * x;
    p = EXP_P0;
    p = fmaf(p, x, EXP_P1);
    p = fmaf(p, x, EXP_P2);
    p = fmaf(p, x, EXP_P3);
    p = fmaf(p, x, EXP_P4);
    p = fmaf(p, x, EXP_P5);
    p = fmaf(p, z, x) + 1.0f;
    return ldexpf(p, (int)fx);
}

float cpu_erff(float x)
{
    float ax = fabsf(x), t, r, e;

    t = 1.0f / fmaf(ERF_P, ax, 1.0f);
    r = ERF_A5;
    r = fmaf(r, t, ERF_A4);
    r = fmaf(r, t, ERF_A3);
    r = fmaf(r, t, ERF_A2);
    r = fmaf(r, t, ERF_A1);
    e = cpu_expf(-(x * x));
    r = fmaf(-(r * t), e, 1.0f);
    return copysignf(r, x);
}

float cpu_gelu(float x)
{
    return x * 0.5f * (1.0f + cpu_erff(x * (float)M_SQRT1_2));
}

size_t cpu_attention_scratch_floats(size_t max_len, unsigned head_dim)
{
    size_t lp = (max_len + 15) & ~(size_t)15, d = ((size_t)head_dim + 15) & ~(size_t)15;

    /* K^T [d][lp], V [lp][d], 4 score rows [lp], 4 scaled query rows [d], alignment slack;
     * the bf16 kernel's keys padded to 32 and its 4 rows of probability pairs take the rest. */
    return d * lp + lp * d + 4 * lp + 4 * d + 64 + 2 * lp + 32 * d + 256;
}

static void generic_add_layernorm(float *x, const float *y, size_t ld, const float *bias,
                                  const float *g, const float *b, size_t rows, size_t n, float eps)
{
    for (size_t r = 0; r < rows; r++) {
        float *row = x + r * ld;
        const float *yr = y ? y + r * ld : NULL;
        float mean = 0, var = 0, rstd;

        for (size_t c = 0; c < n; c++) {
            float v = row[c];
            if (yr)
                v += yr[c];
            if (bias)
                v += bias[c];
            row[c] = v;
            mean += v;
        }
        mean /= (float)n;
        for (size_t c = 0; c < n; c++)
            var += (row[c] - mean) * (row[c] - mean);
        var /= (float)n;
        rstd = 1.0f / sqrtf(var + eps);
        for (size_t c = 0; c < n; c++)
            row[c] = (row[c] - mean) * rstd * g[c] + b[c];
    }
}

static void generic_bias_gelu(float *x, const float *bias, size_t rows, size_t n)
{
    for (size_t r = 0; r < rows; r++)
        for (size_t c = 0; c < n; c++)
            x[r * n + c] = cpu_gelu(x[r * n + c] + bias[c]);
}

static void generic_attention(const float *qkv, size_t ld_qkv, const float *bqkv, float *ctx,
                              size_t ld_ctx, size_t L, size_t n_queries, unsigned n_heads,
                              unsigned head_dim, float *scratch)
{
    size_t H = (size_t)n_heads * head_dim;
    float scale = 1.0f / sqrtf((float)head_dim);
    float *s = scratch, *q = scratch + L;

    for (unsigned h = 0; h < n_heads; h++) {
        size_t qo = (size_t)h * head_dim, ko = H + qo, vo = 2 * H + qo;

        for (size_t i = 0; i < n_queries; i++) {
            float mx = -INFINITY, sum = 0;
            float *out = ctx + i * ld_ctx + qo;

            for (unsigned d = 0; d < head_dim; d++)
                q[d] = (qkv[i * ld_qkv + qo + d] + bqkv[qo + d]) * scale;
            for (size_t j = 0; j < L; j++) {
                float dot = 0;
                for (unsigned d = 0; d < head_dim; d++)
                    dot += q[d] * (qkv[j * ld_qkv + ko + d] + bqkv[ko + d]);
                s[j] = dot;
                mx = fmaxf(mx, dot);
            }
            for (size_t j = 0; j < L; j++) {
                s[j] = cpu_expf(s[j] - mx);
                sum += s[j];
            }
            memset(out, 0, head_dim * sizeof(*out));
            for (size_t j = 0; j < L; j++)
                for (unsigned d = 0; d < head_dim; d++)
                    out[d] += s[j] * (qkv[j * ld_qkv + vo + d] + bqkv[vo + d]);
            for (unsigned d = 0; d < head_dim; d++)
                out[d] /= sum;
        }
    }
}

const struct cpu_kernels cpu_kernels_generic = {
    .name = "generic",
    .add_layernorm = generic_add_layernorm,
    .bias_gelu = generic_bias_gelu,
    .attention = generic_attention,
};

#ifdef COARCH_HAVE_AVX512
extern const struct cpu_kernels cpu_kernels_avx512_impl;

const struct cpu_kernels *cpu_kernels_avx512(void)
{
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl"))
        return &cpu_kernels_avx512_impl;
    return NULL;
}
#else
const struct cpu_kernels *cpu_kernels_avx512(void)
{
    return NULL;
}
#endif
