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

/*
 * 0.5 erf(a) on [0, 4), in 16 pieces of width 1/4: piece i = floor(4a) is the polynomial
 * sum_k cpu_erf_coef[k][i] s^k in s = 4a - i, fitted by least squares on Chebyshev nodes
 * (piece 0 without a constant term, so erf(0) = 0).  Max |error| of erf in fp32: 6.5e-8, below
 * Abramowitz & Stegun 7.1.26's 1.5e-7, which this replaced: it needed a division and an exp,
 * this needs six in-register table lookups (vpermps) and five FMAs.  Beyond 4, 1 - erf < 1.6e-8
 * and the last piece's end (0.5 in fp32) stands in.
 */
const float cpu_erf_coef[CPU_ERF_DEGREE + 1][16] = {
    {0.000000000e+00f, 1.381631941e-01f, 2.602499425e-01f, 3.555778265e-01f, 4.213503897e-01f,
     4.614500701e-01f, 4.830525815e-01f, 4.933358431e-01f, 4.976611435e-01f, 4.992686510e-01f,
     4.997965097e-01f, 4.999496937e-01f, 4.999889433e-01f, 4.999978542e-01f, 4.999996424e-01f,
     4.999999404e-01f},
    {1.410473287e-01f, 1.325015575e-01f, 1.098476425e-01f, 8.036633581e-02f, 5.188849941e-02f,
     2.956523560e-02f, 1.486635022e-02f, 6.596894003e-03f, 2.583366353e-03f, 8.927765884e-04f,
     2.722756763e-04f, 7.327955973e-05f, 1.740457992e-05f, 3.647955054e-06f, 6.747442285e-07f,
     1.101364759e-07f},
    {8.443198567e-07f, -8.278910071e-03f, -1.372884400e-02f, -1.506806724e-02f, -1.297281776e-02f,
     -9.240213782e-03f, -5.575612653e-03f, -2.886369592e-03f, -1.291609486e-03f, -5.020392127e-04f,
     -1.700622233e-04f, -5.032280387e-05f, -1.303054523e-05f, -2.956465096e-06f, -5.883543963e-07f,
     -1.027809233e-07f},
    {-2.942113904e-03f, -2.425775398e-03f, -1.153479912e-03f, 2.064069995e-04f, 1.083921175e-03f,
     1.313603017e-03f, 1.087285345e-03f, 7.054189336e-04f, 3.764350840e-04f, 1.690613426e-04f,
     6.473214307e-05f, 2.130202483e-05f, 6.057578958e-06f, 1.494236585e-06f, 3.206334043e-07f,
     5.997927843e-08f},
    {6.467653293e-06f, 2.677423181e-04f, 3.757610102e-04f, 3.004797036e-04f, 1.298794959e-04f,
     -2.115260941e-05f, -9.363550635e-05f, -9.617760225e-05f, -6.675892655e-05f, -3.599876436e-05f,
     -1.584911843e-05f, -5.836687251e-06f, -1.823043817e-06f, -4.872254635e-07f, -1.120939004e-07f,
     -2.229639939e-08f},
    {5.066540325e-05f, 2.213185871e-05f, -1.320057800e-05f, -3.257267235e-05f, -2.981494617e-05f,
     -1.496286222e-05f, -1.124692517e-06f, 5.531214811e-06f, 6.076257705e-06f, 4.082314717e-06f,
     2.068567937e-06f, 8.436120993e-07f, 2.852867169e-07f, 8.133876150e-08f, 1.975596575e-08f,
     4.116504915e-09f},
};

/* The largest float below 4: the argument clamp that keeps floor(4a) <= 15. */
#define ERF_CLAMP 3.99999976f

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

/* 0.5 erf(|x|) from the table. */
static float half_erf_abs(float x)
{
    float a = fminf(fabsf(x), ERF_CLAMP), y = a * 4.0f, f = floorf(y), s = y - f, h;
    int i = (int)f;

    h = cpu_erf_coef[CPU_ERF_DEGREE][i];
    for (int k = CPU_ERF_DEGREE - 1; k >= 0; k--)
        h = fmaf(h, s, cpu_erf_coef[k][i]);
    return h;
}

float cpu_erff(float x)
{
    return copysignf(2.0f * half_erf_abs(x), x);
}

/* x (0.5 + 0.5 erf(x / sqrt 2)), as x * h + x / 2 with h the signed half erf. */
float cpu_gelu(float x)
{
    return fmaf(x, copysignf(half_erf_abs(x * (float)M_SQRT1_2), x), 0.5f * x);
}

size_t cpu_attention_scratch_floats(size_t max_len, unsigned n_heads, unsigned head_dim)
{
    size_t lp = (max_len + 31) & ~(size_t)31, d = ((size_t)head_dim + 15) & ~(size_t)15;
    size_t H = (size_t)n_heads * d, f32, bf16;

    /* The fp32 kernel, per head: K^T [d][lp], V [lp][d], 4 score rows [lp], 4 scaled query
     * rows [d] (the generic kernel needs less).  The bf16 kernel, all heads at once: K^T and V
     * in pairs (H * lp / 2 dwords each), the query pairs (max_len * H / 2), 4 score rows and 4
     * rows of probability pairs. */
    f32 = 2 * d * lp + 4 * lp + 4 * d;
    bf16 = H * lp + max_len * H / 2 + 4 * lp + 2 * lp;
    return (f32 > bf16 ? f32 : bf16) + 64;
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
