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
    /*
     * Per vector, for the re-rank's error bound (see vec_set_search): the L2 norm of the fp32
     * vector and the L2 norm of its quantisation residual x - scale * q, both rounded up.
     */
    float *norms, *resids;
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

/*
 * The scan's kernel: the query against `n` consecutive vectors.  With AVX-512 VNNI one
 * VPDPBUSD multiplies 64 byte pairs and sums them into 16 int32 lanes, twice the work per
 * instruction of widening to int16 and VPMADDWD.  It wants one unsigned operand, so the stored
 * vector is biased to x + 128 (an XOR of the sign bit) and 128 * sum(q) is subtracted after:
 * the result is exactly the int32 dot product, so VNNI and non-VNNI machines rank identically.
 * `bias` is 128 * sum(q), computed once per query.
 */
typedef void (*scan_fn)(const int8_t *q, int32_t bias, const int8_t *x, size_t n, size_t dim,
                        int32_t *out);

static void scan_plain(const int8_t *q, int32_t bias, const int8_t *x, size_t n, size_t dim,
                       int32_t *out);

__attribute__((target("avx512f,avx512bw,avx512vnni"))) static void
scan_vnni(const int8_t *q, int32_t bias, const int8_t *x, size_t n, size_t dim, int32_t *out)
{
    const __m512i flip = _mm512_set1_epi8((char)0x80);
    size_t full = dim / 64, tail = dim % 64;
    __mmask64 tail_mask = tail ? (__mmask64)((1ULL << tail) - 1) : 0;

    for (size_t v = 0; v < n; v++, x += dim) {
        __m512i acc0 = _mm512_setzero_si512(), acc1 = _mm512_setzero_si512();
        size_t c = 0;

        for (; c + 2 <= full; c += 2) {
            __m512i x0 = _mm512_xor_si512(_mm512_loadu_si512(x + c * 64), flip);
            __m512i x1 = _mm512_xor_si512(_mm512_loadu_si512(x + c * 64 + 64), flip);
            acc0 = _mm512_dpbusd_epi32(acc0, x0, _mm512_loadu_si512(q + c * 64));
            acc1 = _mm512_dpbusd_epi32(acc1, x1, _mm512_loadu_si512(q + c * 64 + 64));
        }
        if (c < full) {
            __m512i x0 = _mm512_xor_si512(_mm512_loadu_si512(x + c * 64), flip);
            acc0 = _mm512_dpbusd_epi32(acc0, x0, _mm512_loadu_si512(q + c * 64));
        }
        if (tail) {
            /* Masked-off lanes: q is 0 there, so the biased x (0x80) contributes nothing. */
            __m512i xt = _mm512_xor_si512(_mm512_maskz_loadu_epi8(tail_mask, x + full * 64), flip);
            acc1 = _mm512_dpbusd_epi32(acc1, xt, _mm512_maskz_loadu_epi8(tail_mask, q + full * 64));
        }
        out[v] = _mm512_reduce_add_epi32(_mm512_add_epi32(acc0, acc1)) - bias;
    }
}

static bool have_avx512; /* F and BW */
static float (*dot_f32_impl)(const float *, const float *, size_t);
static int32_t (*dot_i8_impl)(const int8_t *, const int8_t *, size_t);
static scan_fn scan_impl;

__attribute__((constructor)) static void pick_kernels(void)
{
    __builtin_cpu_init();
    have_avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw");
    if (have_avx512) {
        dot_f32_impl = dot_f32_avx512;
        dot_i8_impl = dot_i8_avx512;
    } else {
        dot_f32_impl = dot_f32_c;
        dot_i8_impl = dot_i8_c;
    }
    scan_impl = have_avx512 && __builtin_cpu_supports("avx512vnni") ? scan_vnni : scan_plain;
}

static void scan_plain(const int8_t *q, int32_t bias, const int8_t *x, size_t n, size_t dim,
                       int32_t *out)
{
    for (size_t v = 0; v < n; v++, x += dim)
        out[v] = dot_i8_impl(q, x, dim);
}

float vec_dot_f32(const float *a, const float *b, size_t dim)
{
    return dot_f32_impl(a, b, dim);
}

int32_t vec_dot_i8(const int8_t *a, const int8_t *b, size_t dim)
{
    return dot_i8_impl(a, b, dim);
}

/*
 * The AVX-512 path of vec_quantize_i8: max |x| with VMAXPS (exact, so the order does not
 * matter), and q[i] = lrintf(x[i] / scale) clamped to +-127 with VCVTPS2DQ, which rounds as
 * lrintf does in the default rounding mode (to nearest, ties to even).  For finite input both
 * paths give the same scale and bytes.  (NaN input gives garbage either way.)
 */
__attribute__((target("avx512f,avx512bw"))) static float quantize_avx512(const float *x, size_t dim,
                                                                         int8_t *q)
{
    const __m512i lo = _mm512_set1_epi32(-127), hi = _mm512_set1_epi32(127);
    __m512 vmax = _mm512_setzero_ps();
    float maxabs, scale, inv;
    size_t i = 0;

    for (; i + 16 <= dim; i += 16)
        vmax = _mm512_max_ps(_mm512_abs_ps(_mm512_loadu_ps(x + i)), vmax);
    maxabs = _mm512_reduce_max_ps(vmax);
    for (; i < dim; i++)
        maxabs = MAX(maxabs, fabsf(x[i]));
    scale = maxabs > 0 ? maxabs / 127.0f : 1.0f;
    inv = 1.0f / scale;

    const __m512 vinv = _mm512_set1_ps(inv);
    for (i = 0; i + 16 <= dim; i += 16) {
        __m512i v = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(x + i), vinv));
        v = _mm512_min_epi32(_mm512_max_epi32(v, lo), hi);
        _mm_storeu_si128((__m128i *)(q + i), _mm512_cvtepi32_epi8(v));
    }
    for (; i < dim; i++) {
        long v = lrintf(x[i] * inv);
        q[i] = (int8_t)CLAMP(v, -127L, 127L);
    }
    return scale;
}

float vec_quantize_i8(const float *x, size_t dim, int8_t *q)
{
    float maxabs = 0, scale, inv;

    if (have_avx512)
        return quantize_avx512(x, dim, q);
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

/* |x|^2 and |x - scale * q|^2, in double. */
static void residual_c(const float *x, const int8_t *q, float scale, size_t dim, double *ret_norm2,
                       double *ret_resid2)
{
    double norm2 = 0, resid2 = 0;

    for (size_t i = 0; i < dim; i++) {
        double d = (double)x[i] - (double)scale * q[i];
        norm2 += (double)x[i] * x[i];
        resid2 += d * d;
    }
    *ret_norm2 = norm2;
    *ret_resid2 = resid2;
}

__attribute__((target("avx512f,avx512bw"))) static void
residual_avx512(const float *x, const int8_t *q, float scale, size_t dim, double *ret_norm2,
                double *ret_resid2)
{
    const __m512d vs = _mm512_set1_pd(scale);
    __m512d n2 = _mm512_setzero_pd(), r2 = _mm512_setzero_pd();
    double tail_n2, tail_r2;
    size_t i = 0;

    for (; i + 8 <= dim; i += 8) {
        __m512d xv = _mm512_cvtps_pd(_mm256_loadu_ps(x + i));
        __m512d qv =
            _mm512_cvtepi32_pd(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(q + i))));
        __m512d d = _mm512_sub_pd(xv, _mm512_mul_pd(vs, qv));
        n2 = _mm512_fmadd_pd(xv, xv, n2);
        r2 = _mm512_fmadd_pd(d, d, r2);
    }
    residual_c(x + i, q + i, scale, dim - i, &tail_n2, &tail_r2);
    *ret_norm2 = _mm512_reduce_add_pd(n2) + tail_n2;
    *ret_resid2 = _mm512_reduce_add_pd(r2) + tail_r2;
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
    free(s->norms);
    free(s->resids);
    free(s);
    return NULL;
}

static int grow_floats(float **p, size_t n)
{
    float *np = array_realloc(*p, n, sizeof(**p));

    if (!np)
        return -ENOMEM;
    *p = np;
    return 0;
}

int vec_set_add(struct vec_set *s, uint64_t id, const float *v)
{
    if (s->n == s->cap) {
        /*
         * Grow by an eighth, not by doubling: the set is the daemon's largest structure and
         * doubling left up to half of it unused (a 300k-chunk set held 524k slots, 208 MiB
         * instead of 125).  The small steps are cheap: the large arrays are mmap'd chunks,
         * which realloc grows with mremap, without copying.
         */
        size_t ncap = s->cap ? s->cap + MAX(s->cap / 8, (size_t)1024) : 1024;
        size_t qbytes;
        uint64_t *ids;
        int8_t *q;

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
        if (grow_floats(&s->scales, ncap) < 0 || grow_floats(&s->norms, ncap) < 0 ||
            grow_floats(&s->resids, ncap) < 0)
            return -ENOMEM;
        s->cap = ncap;
    }

    int8_t *q = s->q + s->n * s->dim;
    float scale = vec_quantize_i8(v, s->dim, q);
    double norm2, resid2;

    if (have_avx512)
        residual_avx512(v, q, scale, s->dim, &norm2, &resid2);
    else
        residual_c(v, q, scale, s->dim, &norm2, &resid2);
    s->ids[s->n] = id;
    s->scales[s->n] = scale;
    /* Rounded up: they feed an upper bound. */
    s->norms[s->n] = nextafterf((float)sqrt(norm2), INFINITY);
    s->resids[s->n] = nextafterf((float)sqrt(resid2), INFINITY);
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
    return sizeof(*s) + s->cap * (sizeof(*s->ids) + 3 * sizeof(float) + s->dim);
}

#define SCAN_BLOCK 256

/*
 * The candidate heap of stage one.  struct topk keeps only ids, and stage two needs each
 * candidate's position too (for its norms), so this is topk's bounded min-heap with a position
 * added, ordered exactly as topk orders (lower score is worse; on equal scores the larger id
 * is), so the candidate set is the one topk would keep.
 */
struct cand {
    double score;
    uint64_t id;
    size_t pos;
};

static bool cand_worse(const struct cand *a, const struct cand *b)
{
    return a->score < b->score || (a->score == b->score && a->id > b->id);
}

static void cand_push(struct cand *h, size_t *n, size_t k, const struct cand *x)
{
    size_t i;

    if (*n < k) {
        i = (*n)++;
        while (i > 0 && cand_worse(x, &h[(i - 1) / 2])) {
            h[i] = h[(i - 1) / 2];
            i = (i - 1) / 2;
        }
        h[i] = *x;
        return;
    }
    if (!cand_worse(&h[0], x))
        return;
    i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = l;
        if (l >= *n)
            break;
        if (r < *n && cand_worse(&h[r], &h[l]))
            m = r;
        if (!cand_worse(&h[m], x))
            break;
        h[i] = h[m];
        i = m;
    }
    h[i] = *x;
}

static int cand_cmp_best_first(const void *a, const void *b)
{
    const struct cand *x = a, *y = b;

    if (cand_worse(y, x))
        return -1;
    if (cand_worse(x, y))
        return 1;
    return 0;
}

/*
 * Offer the vector at `pos` with int32 dot product `dot` to the candidate heap.  The test
 * against the heap's worst comes first because most vectors fail it; then the filter, if it
 * has not been applied yet (`keep` NULL when it has).
 */
static inline void scan_consider(const struct vec_set *s, struct cand *cand, size_t *n_cand,
                                 size_t cap, size_t pos, int32_t dot, float qscale,
                                 vec_keep_fn keep, void *userdata)
{
    struct cand c = {
        .score = (double)dot * s->scales[pos] * qscale,
        .id = s->ids[pos],
        .pos = pos,
    };

    if (*n_cand == cap && !cand_worse(&cand[0], &c))
        return;
    if (keep && !keep(userdata, c.id, c.pos))
        return;
    cand_push(cand, n_cand, cap, &c);
}

/*
 * Stage one scans the int8 copy for the best k * VEC_RERANK_FACTOR candidates; stage two
 * scores them exactly, best approximate first.
 *
 * Stage two skips the lookup (the expensive part: a store read per candidate) of a candidate
 * that cannot enter `out`.  With q^ = qs * qq and x^ = xs * xq the quantised vectors, the
 * approximate score is q^.x^ and
 *     |q.x - q^.x^| = |(q - q^).x + q^.(x - x^)| <= |q - q^| |x| + |q^| |x - x^|
 * (Cauchy-Schwarz twice).  |q - q^| and |q^| are computed once per query, |x| and |x - x^|
 * once per vector when it is added.  When `out` is full and approx + bound (plus a margin for
 * fp32 rounding in the exact dot product) is still below the worst score in `out`, the exact
 * score is too, strictly, so pushing it would change nothing: results are identical to scoring
 * every candidate, and on real score distributions most of the deep candidates are skipped.
 */
int vec_set_search(const struct vec_set *s, const float *query, size_t k, vec_keep_fn keep,
                   vec_lookup_fn lookup, void *userdata, struct topk *out)
{
    int32_t dots[SCAN_BLOCK], bias = 0;
    size_t cap = lookup ? k * VEC_RERANK_FACTOR : k, n_cand = 0;
    double qerr = 0, qhat = 0, qnorm = 0;
    struct cand *cand;
    int8_t *qq;
    float qscale;

    if (cap == 0)
        return (int)topk_finish(out);
    qq = malloc(s->dim);
    cand = array_alloc(cap, sizeof(*cand));
    if (!qq || !cand) {
        free(qq);
        free(cand);
        return -ENOMEM;
    }
    qscale = vec_quantize_i8(query, s->dim, qq);
    for (size_t i = 0; i < s->dim; i++) {
        double h = (double)qscale * qq[i], d = (double)query[i] - h;
        qerr += d * d;
        qhat += h * h;
        qnorm += (double)query[i] * query[i];
        bias += 128 * qq[i];
    }
    qerr = sqrt(qerr);
    qhat = sqrt(qhat);
    qnorm = sqrt(qnorm);

    for (size_t b = 0, skip_probe = 0; b < s->n; b += SCAN_BLOCK) {
        size_t n = MIN((size_t)SCAN_BLOCK, s->n - b), kept = 0;

        if (keep && skip_probe == 0) {
            /*
             * Filter first, and scan only the runs of kept vectors (a path filter keeps whole
             * files, which are runs): a selective filter then reads a fraction of the set.
             */
            for (size_t j = 0; j < n;) {
                size_t e = j;
                while (e < n && keep(userdata, s->ids[b + e], b + e))
                    e++;
                if (e > j) {
                    scan_impl(qq, bias, s->q + (b + j) * s->dim, e - j, s->dim, dots + j);
                    for (size_t i = j; i < e; i++)
                        scan_consider(s, cand, &n_cand, cap, b + i, dots[i], qscale, NULL, NULL);
                    kept += e - j;
                }
                j = e + 1; /* e is filtered out (or the end) */
            }
            /* Keeping nearly all: asking only the competitive ones is cheaper for a while. */
            if (kept * 8 >= n * 7)
                skip_probe = 8;
            continue;
        }
        if (skip_probe > 0)
            skip_probe--;
        scan_impl(qq, bias, s->q + b * s->dim, n, s->dim, dots);
        for (size_t j = 0; j < n; j++)
            scan_consider(s, cand, &n_cand, cap, b + j, dots[j], qscale, keep, userdata);
    }
    free(qq);
    if (n_cand > 1)
        qsort(cand, n_cand, sizeof(*cand), cand_cmp_best_first);

    for (size_t c = 0; c < n_cand; c++) {
        const struct cand *x = &cand[c];
        const float *v;

        if (!lookup) {
            topk_push(out, x->id, x->score);
            continue;
        }
        if (out->k > 0 && out->n == out->k) {
            double bound = qerr * s->norms[x->pos] + qhat * s->resids[x->pos] +
                           1e-4 * (1.0 + qnorm * s->norms[x->pos]);
            if (x->score + bound < out->items[0].score)
                continue;
        }
        v = lookup(userdata, x->id);
        if (v)
            topk_push(out, x->id, vec_dot_f32(query, v, s->dim));
    }
    free(cand);
    return (int)topk_finish(out);
}
