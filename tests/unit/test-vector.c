/* test-vector.c - SIMD kernels against plain C, and two-stage search against exact search. */
#include "macro.h"
#include "test.h"
#include "vector.h"

#include <math.h>
#include <time.h>

#define DIM 384

static uint64_t rng = 1;
static float frand(void)
{
    rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
    return (float)((double)(rng >> 11) / (double)(1ULL << 53)) * 2.0f - 1.0f;
}

static void random_unit(float *v, size_t dim)
{
    double n = 0;
    for (size_t i = 0; i < dim; i++) {
        v[i] = frand();
        n += (double)v[i] * v[i];
    }
    for (size_t i = 0; i < dim; i++)
        v[i] = (float)(v[i] / sqrt(n));
}

TEST(kernels_match_reference)
{
    float a[DIM + 7], b[DIM + 7];
    int8_t qa[DIM + 7], qb[DIM + 7];

    for (size_t dim = 1; dim <= DIM + 7; dim += 13) {
        double ref = 0;
        int32_t iref = 0;
        for (size_t i = 0; i < dim; i++) {
            a[i] = frand();
            b[i] = frand();
            ref += (double)a[i] * b[i];
            qa[i] = (int8_t)(frand() * 127);
            qb[i] = (int8_t)(frand() * 127);
            iref += (int32_t)qa[i] * qb[i];
        }
        ASSERT_NEAR(vec_dot_f32(a, b, dim), ref, 1e-4);
        ASSERT_EQ(vec_dot_i8(qa, qb, dim), iref);
    }
}

TEST(quantize_roundtrip)
{
    float v[DIM];
    int8_t q[DIM];

    random_unit(v, DIM);
    float s = vec_quantize_i8(v, DIM, q);
    for (size_t i = 0; i < DIM; i++)
        ASSERT_NEAR(q[i] * s, v[i], s * 0.5001);
    memset(v, 0, sizeof(v));
    ASSERT_NEAR(vec_quantize_i8(v, DIM, q), 1.0, 0);
}

struct world {
    float *vecs;
    size_t n;
};

static const float *lookup(void *ud, uint64_t id)
{
    struct world *w = ud;
    return id < w->n ? w->vecs + id * DIM : NULL;
}

static bool keep_even(void *ud, uint64_t id, size_t index)
{
    return id % 2 == 0 && index == id;
}

TEST(search_matches_exact)
{
    const size_t n = 20000, k = 10, queries = 50;
    struct world w = {.vecs = array_alloc(n * DIM, sizeof(float)), .n = n};
    struct vec_set *s = vec_set_new(DIM);
    size_t hits = 0;
    float q[DIM];

    ASSERT_TRUE(w.vecs && s);
    for (size_t i = 0; i < n; i++) {
        random_unit(w.vecs + i * DIM, DIM);
        ASSERT_OK(vec_set_add(s, i, w.vecs + i * DIM));
    }
    ASSERT_EQ(vec_set_count(s), n);
    for (size_t t = 0; t < queries; t++) {
        struct topk exact, got;
        /* a query near a stored vector, as real queries are near their answers */
        const float *base = w.vecs + (t * 97 % n) * DIM;
        double nn = 0;
        for (size_t i = 0; i < DIM; i++) {
            q[i] = base[i] + 0.05f * frand();
            nn += (double)q[i] * q[i];
        }
        for (size_t i = 0; i < DIM; i++)
            q[i] = (float)(q[i] / sqrt(nn));
        ASSERT_OK(topk_init(&exact, k));
        for (size_t i = 0; i < n; i++)
            topk_push(&exact, i, vec_dot_f32(q, w.vecs + i * DIM, DIM));
        topk_finish(&exact);
        ASSERT_OK(topk_init(&got, k));
        ASSERT_EQ(vec_set_search(s, q, k, NULL, lookup, &w, &got), (int)k);
        ASSERT_EQ(got.items[0].id, exact.items[0].id);
        ASSERT_NEAR(got.items[0].score, exact.items[0].score, 1e-6);
        for (size_t i = 0; i < k; i++)
            for (size_t j = 0; j < k; j++)
                hits += got.items[i].id == exact.items[j].id;
        topk_release(&exact);
        topk_release(&got);
    }
    printf("# recall@%zu = %.4f\n", k, (double)hits / (double)(k * queries));
    ASSERT_GE(hits * 100, 99 * k * queries);

    /* filters apply before ranking */
    struct topk f;
    ASSERT_OK(topk_init(&f, k));
    ASSERT_EQ(vec_set_search(s, q, k, keep_even, lookup, &w, &f), (int)k);
    for (size_t i = 0; i < k; i++)
        ASSERT_EQ(f.items[i].id % 2, 0);
    topk_release(&f);

    vec_set_free(s);
    free(w.vecs);
}

int main(int argc, char **argv)
{
    return test_run_all(argc, argv);
}
