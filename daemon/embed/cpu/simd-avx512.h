/*
 * simd-avx512.h - AVX-512 helpers shared by the CPU kernel files that are compiled with AVX-512
 * enabled (kernels-avx512.c, attention-bf16.c): the vectorised Cephes exp, attention's softmax
 * row and an in-register 16 x 16 transpose.  Include only from such files; nothing here checks
 * CPUID.
 */
#ifndef COARCH_EMBED_CPU_SIMD_AVX512_H
#define COARCH_EMBED_CPU_SIMD_AVX512_H

#include <immintrin.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>

#define ALWAYS_INLINE inline __attribute__((always_inline))

#define EXP_HI 88.3762626647949f
#define EXP_LO -88.3762626647949f
#define LOG2EF 1.44269504088896341f
#define EXP_C1 0.693359375f
#define EXP_C2 -2.12194440e-4f

static ALWAYS_INLINE __m512 exp512(__m512 x)
{
    __m512 fx, z, p;

    x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(EXP_LO)), _mm512_set1_ps(EXP_HI));
    fx = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(LOG2EF)),
                              _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    x = _mm512_fnmadd_ps(fx, _mm512_set1_ps(EXP_C1), x);
    x = _mm512_fnmadd_ps(fx, _mm512_set1_ps(EXP_C2), x);
    z = _mm512_mul_ps(x, x);
    p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, x, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, x, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, x, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, x, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, x, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_add_ps(_mm512_fmadd_ps(p, z, x), _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, fx);
}

/* Lanes [0, n) of 16. */
static ALWAYS_INLINE __mmask16 lanes16(size_t n)
{
    return n >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << n) - 1);
}

/*
 * The softmax of one row of attention scores s[0..L), exact over the sequence's own keys (packed
 * batches need no mask): e[j] = exp(s[j] - max), written back to s as fp32 (pairs == NULL), or
 * as bf16 pairs (e[2i], e[2i + 1]) to pairs[i] for the bf16 kernel, which then never stores the
 * fp32 values; lanes from L to the next multiple of 32 become 0 either way.  Returns 1 / sum of
 * the fp32 e[j], summed 16 lanes at a time in key order.  s is 64-byte aligned with room for L
 * rounded up to 32 floats (all finite).  Both attention kernels use it, so the fp32 and bf16
 * paths normalise alike.
 */
static ALWAYS_INLINE float softmax_row(float *s, size_t L, uint32_t *pairs)
{
    __m512 vmax = _mm512_set1_ps(-INFINITY), vsum = _mm512_setzero_ps();

    for (size_t jb = 0; jb < L; jb += 16)
        vmax = _mm512_mask_max_ps(vmax, lanes16(L - jb), vmax, _mm512_load_ps(s + jb));
    vmax = _mm512_set1_ps(_mm512_reduce_max_ps(vmax));
    for (size_t jb = 0; jb < L; jb += 32) {
        __mmask16 m0 = lanes16(L - jb), m1 = lanes16(L > jb + 16 ? L - jb - 16 : 0);
        __m512 e0 = _mm512_maskz_mov_ps(m0, exp512(_mm512_sub_ps(_mm512_load_ps(s + jb), vmax)));
        __m512 e1 =
            _mm512_maskz_mov_ps(m1, exp512(_mm512_sub_ps(_mm512_load_ps(s + jb + 16), vmax)));

        vsum = _mm512_add_ps(vsum, e0);
        if (m1)
            vsum = _mm512_add_ps(vsum, e1);
#ifdef __AVX512BF16__
        if (pairs) {
            _mm512_store_si512((__m512i *)(pairs + jb / 2), (__m512i)_mm512_cvtne2ps_pbh(e1, e0));
            continue;
        }
#endif
        _mm512_store_ps(s + jb, e0);
        _mm512_store_ps(s + jb + 16, e1);
    }
    (void)pairs; /* only the bf16 kernel, built with AVX512_BF16, passes pairs */
    return 1.0f / _mm512_reduce_add_ps(vsum);
}

/* Transpose the 16 x 16 block r[row][col] in place (unpack pairs, then pairs of pairs, then
 * 128-bit lanes twice). */
static ALWAYS_INLINE void transpose16(__m512 r[16])
{
    __m512 t[16];

    _Pragma("GCC unroll 16") for (int i = 0; i < 16; i += 2)
    {
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    _Pragma("GCC unroll 16") for (int i = 0; i < 16; i += 4)
    {
        __m512d a = _mm512_castps_pd(t[i]), b = _mm512_castps_pd(t[i + 1]);
        __m512d c = _mm512_castps_pd(t[i + 2]), d = _mm512_castps_pd(t[i + 3]);

        r[i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
        r[i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
        r[i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
        r[i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
    }
    _Pragma("GCC unroll 16") for (int i = 0; i < 4; i++)
    {
        t[i] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0x88);
        t[i + 4] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0xdd);
        t[i + 8] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0x88);
        t[i + 12] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0xdd);
    }
    _Pragma("GCC unroll 16") for (int i = 0; i < 8; i++)
    {
        r[i] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88);
        r[i + 8] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0xdd);
    }
}

#endif
