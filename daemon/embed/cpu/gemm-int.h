/*
 * gemm-int.h - what gemm.c (packing, reference, dispatch) and gemm-avx512.c (kernels) share:
 * the packed layout described in gemm.h, the row-block size, the activation quantisation
 * formula, and the kernel entry points.  Private to the two files and the GEMM test.
 */
#ifndef COARCH_EMBED_CPU_GEMM_INT_H
#define COARCH_EMBED_CPU_GEMM_INT_H

#include <float.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "gemm.h"

/* Rows of A converted per block (a multiple of every kernel's tile height). */
#define CPU_GEMM_MB 96
/* Columns per panel of packed weights. */
#define CPU_GEMM_NR 64
/* Outlier channels per row of an int8 product (see gemm.h), when K >= CPU_GEMM_MIN_K_OUTLIERS. */
#define CPU_GEMM_OUTLIERS 4
#define CPU_GEMM_MIN_K_OUTLIERS 16

static inline size_t cpu_gemm_group(enum cpu_gemm_format f)
{
    return f == CPU_GEMM_BF16 ? 2 : 4;
}

/* Bytes per packed value. */
static inline size_t cpu_gemm_elem(enum cpu_gemm_format f)
{
    return f == CPU_GEMM_BF16 ? 2 : 1;
}

static inline size_t cpu_gemm_round_up(size_t x, size_t to)
{
    return (x + to - 1) / to * to;
}

/* 16-column vectors in the panel that starts at column `col0` (at most 4). */
static inline size_t cpu_gemm_panel_vectors(size_t n, size_t col0)
{
    size_t left = cpu_gemm_round_up(n, 16) - col0;
    return left >= CPU_GEMM_NR ? CPU_GEMM_NR / 16 : left / 16;
}

/* Index (in values, not bytes) of W[col][g * G + j] in the packed data. */
static inline size_t cpu_gemm_packed_index(const struct cpu_gemm_weights *w, size_t col, size_t g,
                                           size_t j)
{
    size_t G = cpu_gemm_group(w->format), col0 = col / CPU_GEMM_NR * CPU_GEMM_NR;
    size_t nv = cpu_gemm_panel_vectors(w->n, col0);

    return col0 * w->kg * G + g * nv * 16 * G + (col - col0) * G + j;
}

/*
 * W^T's rows (the int8 outliers' weights, bf16) are n rounded up to 32 values long, each group
 * of 32 columns stored so that one 64-byte load unpacked with zeros (vpunpcklwd / vpunpckhwd,
 * which work per 128-bit lane) gives columns 0-15 and 16-31 of the group as fp32 in order:
 * column 4i + q (lane i < 4, q < 4) at word 8i + q, column 16 + 4i + q at word 8i + 4 + q.
 * One instruction per 16 columns, where zero-extending and shifting took two.
 */
static inline size_t cpu_gemm_wt_stride(size_t n)
{
    return cpu_gemm_round_up(n, 32);
}

static inline size_t cpu_gemm_wt_index(size_t n, size_t kk, size_t col)
{
    size_t c = col % 32;

    return kk * cpu_gemm_wt_stride(n) + col / 32 * 32 + 8 * (c % 16 / 4) + 4 * (c / 16) + c % 4;
}

/* Activation row stride in the scratch, in bytes: whole 64-byte lines. */
static inline size_t cpu_gemm_scratch_row_bytes(enum cpu_gemm_format f, size_t k)
{
    return cpu_gemm_round_up(k * cpu_gemm_elem(f), 64);
}

/*
 * The u8 quantisation of one activation row with minimum mn and maximum mx:
 * aq = round((a - mn) * inv), a ~ mn + scale * aq.  The kernels and the reference both call this
 * and both round (a - mn) * inv to nearest even, so they produce the same aq.  A constant row
 * gets scale 0 and inv 0: every aq is 0 and the epilogue's mn term alone gives the value.
 */
static inline void cpu_gemm_int8_row_params(float mn, float mx, float *ret_scale, float *ret_inv)
{
    float scale = (mx - mn) / 255.0f;

    *ret_scale = scale;
    /* Below FLT_MIN, 1 / scale would overflow; such a row is constant for every purpose. */
    *ret_inv = scale >= FLT_MIN ? 1.0f / scale : 0.0f;
}

/*
 * The int8 scratch: CPU_GEMM_MB rows of u8 activations, then per row its minimum, scale, outlier
 * channels and their residuals, then one 16-bit mask per 16 channels (a row's outlier candidates).
 */
struct cpu_gemm_int8_scratch {
    uint8_t *q;     /* [MB][cpu_gemm_scratch_row_bytes(INT8, k)] */
    float *amin;    /* [MB] */
    float *ascale;  /* [MB] */
    float *res;     /* [MB][CPU_GEMM_OUTLIERS] */
    uint32_t *out;  /* [MB][CPU_GEMM_OUTLIERS] */
    uint16_t *cand; /* [round16(k) / 16] */
};

static inline size_t cpu_gemm_int8_scratch_layout(size_t k, void *base,
                                                  struct cpu_gemm_int8_scratch *ret)
{
    size_t stride = cpu_gemm_scratch_row_bytes(CPU_GEMM_INT8, k), k16 = cpu_gemm_round_up(k, 16);
    size_t off = 0;
    char *b = base;

#define CPU_GEMM_CARVE(field, bytes)                                                               \
    do {                                                                                           \
        if (ret)                                                                                   \
            ret->field = (void *)(b + off);                                                        \
        off += cpu_gemm_round_up(bytes, 64);                                                       \
    } while (0)
    CPU_GEMM_CARVE(q, CPU_GEMM_MB * stride);
    CPU_GEMM_CARVE(amin, CPU_GEMM_MB * sizeof(float));
    CPU_GEMM_CARVE(ascale, CPU_GEMM_MB * sizeof(float));
    CPU_GEMM_CARVE(res, CPU_GEMM_MB * CPU_GEMM_OUTLIERS * sizeof(float));
    CPU_GEMM_CARVE(out, CPU_GEMM_MB * CPU_GEMM_OUTLIERS * sizeof(uint32_t));
    CPU_GEMM_CARVE(cand, k16 / 16 * sizeof(uint16_t));
#undef CPU_GEMM_CARVE
    return off;
}

/*
 * Offer channel i with magnitude v (= |a[i]|) to a row's outlier list best/idx of *n entries,
 * kept sorted larger first; an equal value stays behind the one already kept.
 */
static inline void cpu_gemm_outlier_offer(float v, uint32_t i, float best[CPU_GEMM_OUTLIERS],
                                          uint32_t idx[CPU_GEMM_OUTLIERS], size_t *n)
{
    size_t j;

    if (*n < CPU_GEMM_OUTLIERS)
        j = (*n)++;
    else if (v > best[CPU_GEMM_OUTLIERS - 1])
        j = CPU_GEMM_OUTLIERS - 1;
    else
        return;
    while (j > 0 && best[j - 1] < v) {
        best[j] = best[j - 1];
        idx[j] = idx[j - 1];
        j--;
    }
    best[j] = v;
    idx[j] = i;
}

/*
 * The outlier channels of a row a[0..k): the CPU_GEMM_OUTLIERS largest |a[i]|, offered in order
 * of i (so of equal values the first wins), larger first; none when k < CPU_GEMM_MIN_K_OUTLIERS.
 * Returns the count.  Choosing per row (not per block of rows) keeps a token's vector independent
 * of the other tokens in its batch.  The kernel finds the same channels with vector scans that
 * offer only values no smaller than a proven lower bound of the fourth largest, which the offer
 * would refuse anyway.
 */
static inline size_t cpu_gemm_pick_outliers(const float *a, size_t k,
                                            uint32_t ret_idx[CPU_GEMM_OUTLIERS])
{
    float best[CPU_GEMM_OUTLIERS];
    size_t n = 0;

    if (k < CPU_GEMM_MIN_K_OUTLIERS)
        return 0;
    for (size_t i = 0; i < k; i++)
        cpu_gemm_outlier_offer(fabsf(a[i]), (uint32_t)i, best, ret_idx, &n);
    return n;
}

/* The u8 level of value a in a row with minimum mn and inverse step inv, clamped to [0, 255]. */
static inline float cpu_gemm_int8_level(float a, float mn, float inv)
{
    float s = (a - mn) * inv;

    s = s > 0 ? s : 0; /* the same as max_ps(s, 0) for finite s */
    return nearbyintf(s < 255.0f ? s : 255.0f);
}

/* What the quantised value of a misses (a - (mn + scale * level)), added back in the epilogue. */
static inline float cpu_gemm_int8_residual(float a, float mn, float scale, float inv)
{
    return a - fmaf(scale, cpu_gemm_int8_level(a, mn, inv), mn);
}

/* gemm-avx512.c; call only when cpu_gemm_supported() said yes. */
void cpu_gemm_bf16_avx512(const struct cpu_gemm_weights *w, const float *A, size_t lda, size_t M,
                          float *C, size_t ldc, void *scratch);
void cpu_gemm_int8_avx512(const struct cpu_gemm_weights *w, const float *A, size_t lda, size_t M,
                          float *C, size_t ldc, void *scratch);

#endif
