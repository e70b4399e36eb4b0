/*
 * kernels.cu - see kernels.cuh.  The math is the CPU reference's (cpu-backend.c); where the
 * order of fp32 operations can be kept the same (the embedding sum, LayerNorm's two-pass
 * statistics, exact erf GELU, expf), it is, so the fp32 path stays within cosine 0.99999.
 */
#include "kernels.cuh"

#include <math.h>

#define LN_THREADS 128
#define LN_PER (KERNELS_MAX_HIDDEN / LN_THREADS)
#define ATT_QUERIES 64 /* queries per block: one thread each */
#define ATT_KEYS 64    /* keys per shared-memory tile */
#define POOL_THREADS 128
#define POOL_PER (KERNELS_MAX_HIDDEN / POOL_THREADS)

__device__ __forceinline__ void store_as(float *p, float v)
{
    *p = v;
}

__device__ __forceinline__ void store_as(__nv_bfloat16 *p, float v)
{
    *p = __float2bfloat16_rn(v);
}

/* The sum of v over the block (blockDim.x a multiple of 32), returned to every thread.  `sh`
 * holds 32 floats; the first barrier keeps a previous call's readers from seeing it change. */
__device__ float block_sum(float v, float *sh)
{
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;

    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    __syncthreads();
    if (lane == 0)
        sh[warp] = v;
    __syncthreads();
    v = lane < n_warps ? sh[lane] : 0.0f;
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* LayerNorm of one row held as v[k] = row[threadIdx.x + k * LN_THREADS]: mean, then the biased
 * variance of the deviations (two passes, as the reference), then y = (v - mean) * rstd * g + b
 * written to x (and g_out when not NULL). */
template <typename G>
__device__ void ln_row(float (&v)[LN_PER], int hidden, const float *gamma, const float *beta,
                       float eps, float *x, G *g_out, float *sh)
{
    float s = 0.0f, q = 0.0f, mean, rstd;

#pragma unroll
    for (int k = 0; k < LN_PER; k++) {
        int c = threadIdx.x + k * LN_THREADS;
        if (c < hidden)
            s += v[k];
    }
    mean = block_sum(s, sh) / (float)hidden;
#pragma unroll
    for (int k = 0; k < LN_PER; k++) {
        int c = threadIdx.x + k * LN_THREADS;
        if (c < hidden) {
            float d = v[k] - mean;
            q += d * d;
        }
    }
    rstd = 1.0f / sqrtf(block_sum(q, sh) / (float)hidden + eps);
#pragma unroll
    for (int k = 0; k < LN_PER; k++) {
        int c = threadIdx.x + k * LN_THREADS;
        if (c < hidden) {
            float y = (v[k] - mean) * rstd * gamma[c] + beta[c];
            x[c] = y;
            if (g_out)
                store_as(g_out + c, y);
        }
    }
}

template <typename G>
__global__ void embed_ln_kernel(const uint32_t *ids, const uint32_t *positions, const float *word,
                                const float *pos, const float *type0, const float *gamma,
                                const float *beta, int hidden, float eps, float *X, G *Xg)
{
    __shared__ float sh[32];
    size_t t = blockIdx.x;
    const float *w = word + (size_t)ids[t] * hidden, *p = pos + (size_t)positions[t] * hidden;
    float v[LN_PER];

#pragma unroll
    for (int k = 0; k < LN_PER; k++) {
        int c = threadIdx.x + k * LN_THREADS;
        v[k] = c < hidden ? (w[c] + type0[c]) + p[c] : 0.0f;
    }
    ln_row(v, hidden, gamma, beta, eps, X + t * hidden, Xg ? Xg + t * hidden : (G *)0, sh);
}

template <typename G>
__global__ void bias_residual_ln_kernel(const float *Y, const float *bias, float *X,
                                        const float *gamma, const float *beta, int hidden,
                                        float eps, G *Xg)
{
    __shared__ float sh[32];
    size_t t = blockIdx.x;
    const float *y = Y + t * hidden;
    float *x = X + t * hidden;
    float v[LN_PER];

#pragma unroll
    for (int k = 0; k < LN_PER; k++) {
        int c = threadIdx.x + k * LN_THREADS;
        v[k] = c < hidden ? (x[c] + y[c]) + bias[c] : 0.0f; /* the CPU's order */
    }
    ln_row(v, hidden, gamma, beta, eps, x, Xg ? Xg + t * hidden : (G *)0, sh);
}

template <typename G>
__global__ void bias_gelu_kernel(const float *U, const float *bias, size_t n, int width, G *out)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        float x = U[i] + bias[i % width];
        store_as(out + i, 0.5f * x * (1.0f + erff(x * 0.70710678118654752440f)));
    }
}

/*
 * One block: ATT_QUERIES queries of one head of one sequence (grid x = sequence, y = head, z =
 * query tile), a thread per query holding q and its accumulator in registers.  Keys and values
 * of the sequence pass through shared memory ATT_KEYS at a time (biases added as they load);
 * each thread folds them into an online softmax (running max m, sum l), so the L x L scores
 * never exist anywhere.  Every thread of a warp reads the same shared element at once: a
 * broadcast, no bank conflicts.
 */
template <int D, typename G>
__global__ void attention_kernel(const float *qkv, const float *bqkv, const int *cu_seqlens,
                                 int hidden, float scale, G *out)
{
    __shared__ float Ks[ATT_KEYS][D];
    __shared__ float Vs[ATT_KEYS][D];
    int seq = blockIdx.x, head = blockIdx.y, q0 = blockIdx.z * ATT_QUERIES;
    int s0 = cu_seqlens[seq], len = cu_seqlens[seq + 1] - s0;
    int qi = q0 + (int)threadIdx.x, hoff = head * D;
    size_t stride = 3 * (size_t)hidden;
    bool active = qi < len;
    float q[D], acc[D], m = -INFINITY, l = 0.0f;

    if (q0 >= len)
        return; /* the whole block: its tile lies past this sequence */
#pragma unroll
    for (int d = 0; d < D; d++) {
        q[d] =
            active ? (qkv[(size_t)(s0 + qi) * stride + hoff + d] + bqkv[hoff + d]) * scale : 0.0f;
        acc[d] = 0.0f;
    }
    for (int k0 = 0; k0 < len; k0 += ATT_KEYS) {
        int nk = min(ATT_KEYS, len - k0);

        for (int i = threadIdx.x; i < nk * D; i += blockDim.x) {
            int j = i / D, d = i % D;
            const float *row = qkv + (size_t)(s0 + k0 + j) * stride;
            Ks[j][d] = row[hidden + hoff + d] + bqkv[hidden + hoff + d];
            Vs[j][d] = row[2 * hidden + hoff + d] + bqkv[2 * hidden + hoff + d];
        }
        __syncthreads();
        if (active) {
            for (int j = 0; j < nk; j++) {
                float sc = 0.0f, p;
#pragma unroll
                for (int d = 0; d < D; d++)
                    sc += q[d] * Ks[j][d];
                if (sc > m) {
                    float r = expf(m - sc); /* 0 for the first key (m = -inf) */
                    l *= r;
#pragma unroll
                    for (int d = 0; d < D; d++)
                        acc[d] *= r;
                    m = sc;
                }
                p = expf(sc - m);
                l += p;
#pragma unroll
                for (int d = 0; d < D; d++)
                    acc[d] += p * Vs[j][d];
            }
        }
        __syncthreads();
    }
    if (active) {
        G *o = out + (size_t)(s0 + qi) * hidden + hoff;
        float inv = 1.0f / l;
#pragma unroll
        for (int d = 0; d < D; d++)
            store_as(o + d, acc[d] * inv);
    }
}

__global__ void pool_kernel(const float *X, const int *cu_seqlens, int hidden, bool cls,
                            bool normalize, float *out)
{
    __shared__ float sh[32];
    int seq = blockIdx.x, s0 = cu_seqlens[seq], len = cu_seqlens[seq + 1] - s0;
    float v[POOL_PER], ss = 0.0f, inv = 1.0f;

#pragma unroll
    for (int k = 0; k < POOL_PER; k++) {
        int c = threadIdx.x + k * POOL_THREADS;
        float a = 0.0f;
        if (c < hidden) {
            if (cls) {
                a = X[(size_t)s0 * hidden + c];
            } else {
                for (int t = 0; t < len; t++)
                    a += X[(size_t)(s0 + t) * hidden + c];
                a /= (float)len;
            }
        }
        v[k] = a;
        ss += a * a;
    }
    if (normalize)
        inv = 1.0f / fmaxf(sqrtf(block_sum(ss, sh)), 1e-12f);
#pragma unroll
    for (int k = 0; k < POOL_PER; k++) {
        int c = threadIdx.x + k * POOL_THREADS;
        if (c < hidden)
            out[(size_t)seq * hidden + c] = v[k] * inv;
    }
}

__global__ void to_bf16_kernel(const float *src, size_t n, __nv_bfloat16 *dst)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        dst[i] = __float2bfloat16_rn(src[i]);
}

/* Blocks for a grid-stride loop over n elements: enough to fill any current GPU. */
static unsigned grid_for(size_t n, unsigned threads)
{
    size_t b = (n + threads - 1) / threads;
    return (unsigned)(b < 65536 ? (b ? b : 1) : 65536);
}

template <typename G>
cudaError_t launch_embed_ln(const uint32_t *ids, const uint32_t *positions, int n_tokens,
                            const float *word, const float *pos, const float *type0,
                            const float *gamma, const float *beta, int hidden, float eps, float *X,
                            G *Xg, cudaStream_t s)
{
    embed_ln_kernel<G><<<n_tokens, LN_THREADS, 0, s>>>(ids, positions, word, pos, type0, gamma,
                                                       beta, hidden, eps, X, Xg);
    return cudaGetLastError();
}

template <typename G>
cudaError_t launch_bias_residual_ln(const float *Y, const float *bias, float *X, const float *gamma,
                                    const float *beta, int n_tokens, int hidden, float eps, G *Xg,
                                    cudaStream_t s)
{
    bias_residual_ln_kernel<G>
        <<<n_tokens, LN_THREADS, 0, s>>>(Y, bias, X, gamma, beta, hidden, eps, Xg);
    return cudaGetLastError();
}

template <typename G>
cudaError_t launch_bias_gelu(const float *U, const float *bias, int n_tokens, int width, G *out,
                             cudaStream_t s)
{
    size_t n = (size_t)n_tokens * width;

    bias_gelu_kernel<G><<<grid_for(n, 256), 256, 0, s>>>(U, bias, n, width, out);
    return cudaGetLastError();
}

template <typename G>
cudaError_t launch_attention(const float *qkv, const float *bqkv, const int *cu_seqlens, int n_seqs,
                             int max_len, int hidden, int n_heads, int head_dim, G *out,
                             cudaStream_t s)
{
    dim3 grid(n_seqs, n_heads, (max_len + ATT_QUERIES - 1) / ATT_QUERIES);
    float scale = 1.0f / sqrtf((float)head_dim);

    if (head_dim == 32)
        attention_kernel<32, G>
            <<<grid, ATT_QUERIES, 0, s>>>(qkv, bqkv, cu_seqlens, hidden, scale, out);
    else if (head_dim == 64)
        attention_kernel<64, G>
            <<<grid, ATT_QUERIES, 0, s>>>(qkv, bqkv, cu_seqlens, hidden, scale, out);
    else
        return cudaErrorInvalidValue;
    return cudaGetLastError();
}

cudaError_t launch_pool(const float *X, const int *cu_seqlens, int n_seqs, int hidden, bool cls,
                        bool normalize, float *out, cudaStream_t s)
{
    pool_kernel<<<n_seqs, POOL_THREADS, 0, s>>>(X, cu_seqlens, hidden, cls, normalize, out);
    return cudaGetLastError();
}

cudaError_t launch_to_bf16(const float *src, size_t n, __nv_bfloat16 *dst, cudaStream_t s)
{
    to_bf16_kernel<<<grid_for(n, 256), 256, 0, s>>>(src, n, dst);
    return cudaGetLastError();
}

/* The two element types the backend instantiates. */
#define INSTANTIATE(G)                                                                             \
    template cudaError_t launch_embed_ln<G>(                                                       \
        const uint32_t *, const uint32_t *, int, const float *, const float *, const float *,      \
        const float *, const float *, int, float, float *, G *, cudaStream_t);                     \
    template cudaError_t launch_bias_residual_ln<G>(const float *, const float *, float *,         \
                                                    const float *, const float *, int, int, float, \
                                                    G *, cudaStream_t);                            \
    template cudaError_t launch_bias_gelu<G>(const float *, const float *, int, int, G *,          \
                                             cudaStream_t);                                        \
    template cudaError_t launch_attention<G>(const float *, const float *, const int *, int, int,  \
                                             int, int, int, G *, cudaStream_t);
INSTANTIATE(float)
INSTANTIATE(__nv_bfloat16)
