/*
 * gemm.c - weight packing, the CPUID checks, dispatch, and the scalar reference of the CPU
 * GEMMs (see gemm.h).  Nothing here uses AVX-512: the kernels live in gemm-avx512.c, which is
 * compiled with the instruction-set flags and only called once cpu_gemm_supported() has checked
 * CPUID.
 */
#include "gemm.h"

#include <cblas.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "gemm-int.h"
#include "macro.h"

const char *cpu_gemm_format_name(enum cpu_gemm_format f)
{
    switch (f) {
    case CPU_GEMM_F32:
        return "fp32";
    case CPU_GEMM_BF16:
        return "bf16";
    case CPU_GEMM_INT8:
        return "int8";
    }
    return "?";
}

bool cpu_gemm_supported(enum cpu_gemm_format f, const char **ret_missing)
{
    const char *missing = NULL;

    if (f == CPU_GEMM_F32)
        return true;
#ifdef COARCH_HAVE_AVX512_GEMM
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx512f") || !__builtin_cpu_supports("avx512bw") ||
        !__builtin_cpu_supports("avx512vl") || !__builtin_cpu_supports("avx512dq"))
        missing = "AVX-512F/BW/VL/DQ";
    else if (f == CPU_GEMM_BF16 && !__builtin_cpu_supports("avx512bf16"))
        missing = "AVX512_BF16 (vdpbf16ps)";
    else if (f == CPU_GEMM_INT8 && !__builtin_cpu_supports("avx512vnni"))
        missing = "AVX512_VNNI (vpdpbusd)";
#else
    missing = "kernels built with AVX512_BF16 and AVX512_VNNI (this build has none: it needs an "
              "x86-64 compiler that accepts -mavx512bf16 -mavx512vnni)";
#endif
    if (missing && ret_missing)
        *ret_missing = missing;
    return !missing;
}

uint16_t cpu_bf16_from_float(float x)
{
    uint32_t u;

    memcpy(&u, &x, sizeof(u));
    if ((u & 0x7fffffffu) > 0x7f800000u) /* NaN: keep it a (quiet) NaN */
        return (uint16_t)((u >> 16) | 0x40);
    if ((u & 0x7f800000u) == 0) /* the instruction treats denormal inputs as zero */
        return (uint16_t)((u >> 16) & 0x8000);
    u += 0x7fffu + ((u >> 16) & 1);
    return (uint16_t)(u >> 16);
}

float cpu_bf16_to_float(uint16_t b)
{
    uint32_t u = (uint32_t)b << 16;
    float x;

    memcpy(&x, &u, sizeof(x));
    return x;
}

static void *alloc_zeroed(size_t bytes)
{
    size_t rounded = cpu_gemm_round_up(bytes, 64);
    void *p;

    if (rounded < bytes)
        return NULL;
    p = aligned_alloc(64, rounded);
    if (p)
        memset(p, 0, rounded);
    return p;
}

/* Round each row of W to bf16 into its packed place. */
static void pack_bf16(struct cpu_gemm_weights *w, const float *W)
{
    uint16_t *d = w->data;

    for (size_t col = 0; col < w->n; col++)
        for (size_t kk = 0; kk < w->k; kk++)
            d[cpu_gemm_packed_index(w, col, kk / 2, kk % 2)] =
                cpu_bf16_from_float(W[col * w->k + kk]);
}

/*
 * Quantise each row of W symmetrically to [-127, 127] with its own scale; keep W^T in bf16 for
 * the outlier channels.
 */
static void pack_int8(struct cpu_gemm_weights *w, const float *W)
{
    int8_t *d = w->data;

    for (size_t col = 0; col < w->n; col++)
        for (size_t kk = 0; kk < w->k; kk++)
            w->wt[cpu_gemm_wt_index(w->n, kk, col)] = cpu_bf16_from_float(W[col * w->k + kk]);

    for (size_t col = 0; col < w->n; col++) {
        const float *row = W + col * w->k;
        float amax = 0, inv;
        int32_t sum = 0;

        for (size_t kk = 0; kk < w->k; kk++)
            amax = fmaxf(amax, fabsf(row[kk]));
        w->scale[col] = amax / 127.0f;
        inv = amax > 0 ? 127.0f / amax : 0.0f;
        for (size_t kk = 0; kk < w->k; kk++) {
            long q = lrintf(row[kk] * inv);

            q = q > 127 ? 127 : q < -127 ? -127 : q;
            d[cpu_gemm_packed_index(w, col, kk / 4, kk % 4)] = (int8_t)q;
            sum += (int32_t)q;
        }
        w->corr[col] = w->scale[col] * (float)sum;
    }
}

int cpu_gemm_pack(struct cpu_gemm_weights *w, enum cpu_gemm_format f, const float *W, size_t n,
                  size_t k)
{
    struct cpu_gemm_weights p = {.format = f, .n = n, .k = k};
    size_t G, n16, count, bytes;

    if (n == 0 || k == 0 || (f != CPU_GEMM_F32 && f != CPU_GEMM_BF16 && f != CPU_GEMM_INT8))
        return -EINVAL;
    if (f == CPU_GEMM_F32) {
        p.kg = k;
        p.data = (void *)W;
        *w = p;
        return 0;
    }
    if (!size_mul_ok(n, k, &count))
        return -ENOMEM;
    /* A NaN or infinity would poison a whole row's scale. */
    for (size_t i = 0; i < count; i++)
        if (!isfinite(W[i]))
            return -EINVAL;

    G = cpu_gemm_group(f);
    p.kg = (k + G - 1) / G;
    n16 = cpu_gemm_round_up(n, 16);
    if (!size_mul_ok(n16, p.kg * G * cpu_gemm_elem(f), &bytes))
        return -ENOMEM;
    p.data = alloc_zeroed(bytes);
    p.bytes = cpu_gemm_round_up(bytes, 64);
    if (f == CPU_GEMM_INT8) {
        p.scale = alloc_zeroed(n16 * sizeof(float));
        p.corr = alloc_zeroed(n16 * sizeof(float));
        p.bytes += 2 * cpu_gemm_round_up(n16 * sizeof(float), 64);
        if (size_mul_ok(cpu_gemm_wt_stride(n) * sizeof(uint16_t), k, &bytes)) {
            p.wt = alloc_zeroed(bytes);
            p.bytes += cpu_gemm_round_up(bytes, 64);
        }
    }
    if (!p.data || (f == CPU_GEMM_INT8 && (!p.scale || !p.corr || !p.wt))) {
        cpu_gemm_weights_release(&p);
        return -ENOMEM;
    }
    if (f == CPU_GEMM_BF16)
        pack_bf16(&p, W);
    else
        pack_int8(&p, W);
    *w = p;
    return 0;
}

void cpu_gemm_weights_release(struct cpu_gemm_weights *w)
{
    if (w->format != CPU_GEMM_F32)
        free(w->data);
    free(w->scale);
    free(w->corr);
    free(w->wt);
    *w = (struct cpu_gemm_weights){0};
}

size_t cpu_gemm_scratch_bytes(size_t max_k)
{
    size_t bf16 = CPU_GEMM_MB * cpu_gemm_scratch_row_bytes(CPU_GEMM_BF16, max_k);
    size_t int8 = cpu_gemm_int8_scratch_layout(max_k, NULL, NULL);

    return cpu_gemm_round_up(bf16 > int8 ? bf16 : int8, 64);
}

void cpu_gemm(const struct cpu_gemm_weights *w, const float *A, size_t lda, size_t M, float *C,
              size_t ldc, void *scratch)
{
    if (M == 0)
        return;
    switch (w->format) {
    case CPU_GEMM_F32:
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (blasint)M, (blasint)w->n,
                    (blasint)w->k, 1.0f, A, (blasint)lda, w->data, (blasint)w->k, 0.0f, C,
                    (blasint)ldc);
        break;
#ifdef COARCH_HAVE_AVX512_GEMM
    case CPU_GEMM_BF16:
        cpu_gemm_bf16_avx512(w, A, lda, M, C, ldc, scratch);
        break;
    case CPU_GEMM_INT8:
        cpu_gemm_int8_avx512(w, A, lda, M, C, ldc, scratch);
        break;
#endif
    default:
        /* Unreachable: the backend only packs formats cpu_gemm_supported() accepted. */
        (void)scratch;
        abort();
    }
}

/*
 * Rows [0, mb) of A quantised as the int8 kernel does it: per row its outlier channels, the
 * range of the other channels, the levels, and the outliers' residuals.
 */
static size_t quantize_block(const float *A, size_t lda, size_t mb, size_t k, uint8_t *q,
                             float *amin, float *ascale, float *res, uint32_t *out)
{
    bool *is_out = calloc(k, sizeof(bool));
    size_t n_out = 0;

    if (!is_out)
        abort(); /* tests only */
    for (size_t r = 0; r < mb; r++) {
        const float *a = A + r * lda;
        uint32_t *o = out + r * CPU_GEMM_OUTLIERS;
        float mn = INFINITY, mx = -INFINITY, scale, inv;

        n_out = cpu_gemm_pick_outliers(a, k, o);
        for (size_t j = 0; j < n_out; j++)
            is_out[o[j]] = true;
        for (size_t i = 0; i < k; i++)
            if (!is_out[i]) {
                mn = fminf(mn, a[i]);
                mx = fmaxf(mx, a[i]);
            }
        cpu_gemm_int8_row_params(mn, mx, &scale, &inv);
        for (size_t i = 0; i < k; i++)
            q[r * k + i] = (uint8_t)cpu_gemm_int8_level(a[i], mn, inv);
        for (size_t j = 0; j < n_out; j++) {
            res[r * CPU_GEMM_OUTLIERS + j] = cpu_gemm_int8_residual(a[o[j]], mn, scale, inv);
            is_out[o[j]] = false;
        }
        amin[r] = mn;
        ascale[r] = scale;
    }
    free(is_out);
    return n_out; /* the same for every row: it depends on k only */
}

static void reference_int8(const struct cpu_gemm_weights *w, const float *A, size_t lda, size_t M,
                           float *C, size_t ldc)
{
    uint8_t *q = malloc(CPU_GEMM_MB * w->k);
    float amin[CPU_GEMM_MB], ascale[CPU_GEMM_MB], res[CPU_GEMM_MB * CPU_GEMM_OUTLIERS];
    uint32_t out[CPU_GEMM_MB * CPU_GEMM_OUTLIERS];

    if (!q)
        abort(); /* tests only */
    for (size_t m0 = 0; m0 < M; m0 += CPU_GEMM_MB) {
        size_t mb = M - m0 < CPU_GEMM_MB ? M - m0 : CPU_GEMM_MB;
        size_t n_out = quantize_block(A + m0 * lda, lda, mb, w->k, q, amin, ascale, res, out);

        for (size_t r = 0; r < mb; r++)
            for (size_t col = 0; col < w->n; col++) {
                const float *rr = res + r * CPU_GEMM_OUTLIERS;
                const uint32_t *o = out + r * CPU_GEMM_OUTLIERS;
                int64_t acc = 0;
                float v;

                for (size_t kk = 0; kk < w->k; kk++)
                    acc += (int64_t)q[r * w->k + kk] *
                           ((const int8_t *)w->data)[cpu_gemm_packed_index(w, col, kk / 4, kk % 4)];
                v = fmaf((float)acc, ascale[r] * w->scale[col], amin[r] * w->corr[col]);
                for (size_t j = 0; j < n_out; j++)
                    v = fmaf(rr[j], cpu_bf16_to_float(w->wt[cpu_gemm_wt_index(w->n, o[j], col)]),
                             v);
                C[(m0 + r) * ldc + col] = v;
            }
    }
    free(q);
}

void cpu_gemm_reference(const struct cpu_gemm_weights *w, const float *A, size_t lda, size_t M,
                        float *C, size_t ldc)
{
    if (w->format == CPU_GEMM_INT8) {
        reference_int8(w, A, lda, M, C, ldc);
        return;
    }
    for (size_t m = 0; m < M; m++) {
        const float *a = A + m * lda;

        for (size_t col = 0; col < w->n; col++) {
            double acc = 0;

            for (size_t kk = 0; kk < w->k; kk++) {
                if (w->format == CPU_GEMM_F32)
                    acc += (double)a[kk] * ((const float *)w->data)[col * w->k + kk];
                else
                    acc += (double)cpu_bf16_to_float(cpu_bf16_from_float(a[kk])) *
                           cpu_bf16_to_float(
                               ((const uint16_t *)
                                    w->data)[cpu_gemm_packed_index(w, col, kk / 2, kk % 2)]);
            }
            C[m * ldc + col] = (float)acc;
        }
    }
}
