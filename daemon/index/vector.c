/*
 * vector.c - see vector.h.
 */
#include "vector.h"

#include "macro.h"

#include <immintrin.h>
#include <math.h>
#include <string.h>

struct vec_set {
    size_t dim, n, cap;
    uint64_t *ids;
    int8_t *q;     /* n * dim */
    float *scales; /* n */
};

/* ---- kernels ---------------------------------------------------------------------------- */

static float dot_f32_c(const float *a, const float *b, size_t dim)
{
    float s[8] = {0};
    size_t i = 0;

    for (; i + 8 <= dim; i += 8)
        for (size_t j = 0; j < 8; j++)
            s[j] += a[i + j] * b[i + j];
    for (; i < dim; i++)
        s[0] += a[i] * b[i];
    return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

static int32_t dot_i8_c(const int8_t *a, const int8_t *b, size_t dim)
{
    int32_t s = 0;

    for (size_t i = 0; i < dim; i++)
        s += (int32_t)a[i] * b[i];
    return s;
}

__attribute__((target("avx512f"))) static float dot_f32_avx512(const float *a, const float *b,
                                                               size_t dim)
{
    __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
    size_t i = 0;

    for (; i + 32 <= dim; i += 32) {
        acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), acc0);
        acc1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), acc1);
    }
    for (; i + 16 <= dim; i += 16)
        acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), acc0);
    float s = _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
    for (; i < dim; i++)
        s += a[i] * b[i];
    return s;
}

__attribute__((target("avx512f,avx512bw"))) static int32_t
dot_i8_avx512(const int8_t *a, const int8_t *b, size_t dim)
{
    __m512i acc = _mm512_setzero_si512();
    size_t i = 0;

    for (; i + 32 <= dim; i += 32) {
        __m512i x = _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)(a + i)));
        __m512i y = _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)(b + i)));
        acc = _mm512_add_epi32(acc, _mm512_madd_epi16(x, y));
    }
    int32_t s = _mm512_reduce_add_epi32(acc);
    for (; i < dim; i++)
        s += (int32_t)a[i] * b[i];
    return s;
}

static float (*dot_f32_impl)(const float *, const float *, size_t);
static int32_t (*dot_i8_impl)(const int8_t *, const int8_t *, size_t);

__attribute__((constructor)) static void pick_kernels(void)
{
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")) {
        dot_f32_impl = dot_f32_avx512;
        dot_i8_impl = dot_i8_avx512;
    } else {
        dot_f32_impl = dot_f32_c;
        dot_i8_impl = dot_i8_c;
    }
}

float vec_dot_f32(const float *a, const float *b, size_t dim)
{
    return dot_f32_impl(a, b, dim);
}

int32_t vec_dot_i8(const int8_t *a, const int8_t *b, size_t dim)
{
    return dot_i8_impl(a, b, dim);
}

float vec_quantize_i8(const float *x, size_t dim, int8_t *q)
{
    float maxabs = 0, scale, inv;

    for (size_t i = 0; i < dim; i++)
        maxabs = MAX(maxabs, fabsf(x[i]));
    scale = maxabs > 0 ? maxabs / 127.0f : 1.0f;
    inv = 1.0f / scale;
    for (size_t i = 0; i < dim; i++) {
        long v = lrintf(x[i] * inv);
        q[i] = (int8_t)CLAMP(v, -127L, 127L);
    }
    return scale;
}

/* ---- sets ------------------------------------------------------------------------------- */

struct vec_set *vec_set_new(size_t dim)
{
    struct vec_set *s;

    if (dim == 0)
        return NULL;
    s = calloc(1, sizeof(*s));
    if (s)
        s->dim = dim;
    return s;
}

struct vec_set *vec_set_free(struct vec_set *s)
{
    if (!s)
        return NULL;
    free(s->ids);
    free(s->q);
    free(s->scales);
    free(s);
    return NULL;
}

int vec_set_add(struct vec_set *s, uint64_t id, const float *v)
{
    if (s->n == s->cap) {
        size_t ncap = s->cap ? s->cap * 2 : 1024;
        size_t qbytes;
        uint64_t *ids;
        int8_t *q;
        float *sc;

        if (!size_mul_ok(ncap, s->dim, &qbytes))
            return -ENOMEM;
        ids = array_realloc(s->ids, ncap, sizeof(*ids));
        if (!ids)
            return -ENOMEM;
        s->ids = ids;
        q = realloc(s->q, qbytes);
        if (!q)
            return -ENOMEM;
        s->q = q;
        sc = array_realloc(s->scales, ncap, sizeof(*sc));
        if (!sc)
            return -ENOMEM;
        s->scales = sc;
        s->cap = ncap;
    }
    s->ids[s->n] = id;
    s->scales[s->n] = vec_quantize_i8(v, s->dim, s->q + s->n * s->dim);
    s->n++;
    return 0;
}

size_t vec_set_count(const struct vec_set *s)
{
    return s->n;
}

size_t vec_set_dim(const struct vec_set *s)
{
    return s->dim;
}

uint64_t vec_set_id(const struct vec_set *s, size_t i)
{
    return s->ids[i];
}

size_t vec_set_memory(const struct vec_set *s)
{
    return sizeof(*s) + s->cap * (sizeof(*s->ids) + sizeof(*s->scales) + s->dim);
}

int vec_set_search(const struct vec_set *s, const float *query, size_t k, vec_keep_fn keep,
                   vec_lookup_fn lookup, void *userdata, struct topk *out)
{
    struct topk cand;
    int8_t *qq;
    float qscale;
    int r;

    qq = malloc(s->dim);
    if (!qq)
        return -ENOMEM;
    qscale = vec_quantize_i8(query, s->dim, qq);
    r = topk_init(&cand, lookup ? k * VEC_RERANK_FACTOR : k);
    if (r < 0) {
        free(qq);
        return r;
    }
    for (size_t i = 0; i < s->n; i++) {
        if (keep && !keep(userdata, s->ids[i], i))
            continue;
        int32_t d = vec_dot_i8(qq, s->q + i * s->dim, s->dim);
        topk_push(&cand, s->ids[i], (double)d * s->scales[i] * qscale);
    }
    free(qq);
    topk_finish(&cand);
    for (size_t i = 0; i < cand.n; i++) {
        if (!lookup) {
            topk_push(out, cand.items[i].id, cand.items[i].score);
            continue;
        }
        const float *v = lookup(userdata, cand.items[i].id);
        if (v)
            topk_push(out, cand.items[i].id, vec_dot_f32(query, v, s->dim));
    }
    topk_release(&cand);
    return (int)topk_finish(out);
}
