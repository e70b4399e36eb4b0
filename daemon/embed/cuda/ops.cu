/*
 * ops.cu - single kernels on host arrays (cuda.h, "Single kernels"), so the backend test can
 * compare every op with the CPU reference's, one at a time, before the whole model.  Not used by
 * the backend itself.  Buffers are plain cudaMalloc'd (not the backend's counted allocator) and
 * freed before returning.
 */
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <errno.h>
#include <stdlib.h>

#include "blas.cuh"
#include "cuda.h"
#include "kernels.cuh"

#define MAX_BUFS 8

/* Every op runs on the backend's device, whichever is current on this thread. */
static cudaError_t op_device(void)
{
    int d = cuda_probe_device_index();

    return d < 0 ? cudaErrorNoDevice : cudaSetDevice(d);
}

/* The device buffers of one op call. */
struct op_bufs {
    void *p[MAX_BUFS];
    int n;
    cudaError_t err;
};

static void *op_alloc(struct op_bufs *b, size_t bytes)
{
    void *p = NULL;

    if (b->err != cudaSuccess || b->n == MAX_BUFS)
        return NULL;
    b->err = cudaMalloc(&p, bytes ? bytes : 1);
    if (b->err != cudaSuccess)
        return NULL;
    b->p[b->n++] = p;
    return p;
}

/* A device copy of n host floats (or uint32/int: same size). */
static void *op_upload(struct op_bufs *b, const void *src, size_t bytes)
{
    void *p = op_alloc(b, bytes);

    if (p && src)
        b->err = cudaMemcpy(p, src, bytes, cudaMemcpyHostToDevice);
    return b->err == cudaSuccess ? p : NULL;
}

/* Waits for the op, copies `bytes` from dev to host, frees everything; 0 or -errno. */
static int op_finish(struct op_bufs *b, cudaError_t launch, void *host, const void *dev,
                     size_t bytes)
{
    cudaError_t e = b->err != cudaSuccess ? b->err : launch;

    if (e == cudaSuccess)
        e = cudaDeviceSynchronize();
    if (e == cudaSuccess && host)
        e = cudaMemcpy(host, dev, bytes, cudaMemcpyDeviceToHost);
    for (int i = 0; i < b->n; i++)
        cudaFree(b->p[i]);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        return e == cudaErrorMemoryAllocation ? -ENOMEM : -EIO;
    }
    return 0;
}

/* Offsets of packed sequences: cu[0] = 0, cu[i + 1] = cu[i] + lengths[i]; 0 or -ENOMEM. */
static int *offsets(const uint32_t *lengths, size_t n_seqs, int *ret_total, int *ret_max)
{
    int *cu = (int *)malloc((n_seqs + 1) * sizeof(int)), max = 0;

    if (!cu)
        return NULL;
    cu[0] = 0;
    for (size_t i = 0; i < n_seqs; i++) {
        cu[i + 1] = cu[i] + (int)lengths[i];
        max = (int)lengths[i] > max ? (int)lengths[i] : max;
    }
    *ret_total = cu[n_seqs];
    *ret_max = max;
    return cu;
}

int embed_cuda_op_layernorm(const float *x, const float *y, const float *bias, const float *g,
                            const float *b, size_t rows, size_t n, float eps, float *out)
{
    struct op_bufs bb = {{0}, 0, op_device()};
    size_t bytes = rows * n * sizeof(float);
    cudaError_t e = cudaSuccess;

    if (n > KERNELS_MAX_HIDDEN)
        return -EINVAL;
    float *dx = (float *)op_upload(&bb, x, bytes), *dy = (float *)op_upload(&bb, y, bytes);
    float *db = (float *)op_upload(&bb, bias, n * 4), *dg = (float *)op_upload(&bb, g, n * 4);
    float *dbeta = (float *)op_upload(&bb, b, n * 4);
    if (bb.err == cudaSuccess)
        e = launch_bias_residual_ln<float>(dy, db, dx, dg, dbeta, (int)rows, (int)n, eps,
                                           (float *)0, 0);
    return op_finish(&bb, e, out, dx, bytes);
}

int embed_cuda_op_bias_gelu(const float *x, const float *bias, size_t rows, size_t n, float *out)
{
    struct op_bufs bb = {{0}, 0, op_device()};
    size_t bytes = rows * n * sizeof(float);
    float *dx = (float *)op_upload(&bb, x, bytes), *db = (float *)op_upload(&bb, bias, n * 4);
    cudaError_t e = cudaSuccess;

    if (bb.err == cudaSuccess)
        e = launch_bias_gelu<float>(dx, db, (int)rows, (int)n, dx, 0);
    return op_finish(&bb, e, out, dx, bytes);
}

int embed_cuda_op_attention(const float *qkv, const float *bqkv, const uint32_t *lengths,
                            size_t n_seqs, unsigned n_heads, unsigned head_dim, float *ctx)
{
    struct op_bufs bb = {{0}, 0, op_device()};
    size_t H = (size_t)n_heads * head_dim;
    int total = 0, max_len = 0, r;
    int *cu = offsets(lengths, n_seqs, &total, &max_len);
    cudaError_t e = cudaSuccess;

    if (!cu)
        return -ENOMEM;
    if (max_len > KERNELS_MAX_SEQ) {
        free(cu);
        return -EINVAL;
    }
    float *dq = (float *)op_upload(&bb, qkv, (size_t)total * 3 * H * 4);
    float *db = (float *)op_upload(&bb, bqkv, 3 * H * 4);
    int *dcu = (int *)op_upload(&bb, cu, (n_seqs + 1) * sizeof(int));
    float *dc = (float *)op_alloc(&bb, (size_t)total * H * 4);
    if (bb.err == cudaSuccess)
        e = launch_attention<float>(dq, db, dcu, (int)n_seqs, max_len, (int)H, (int)n_heads,
                                    (int)head_dim, dc, 0);
    r = op_finish(&bb, e, ctx, dc, (size_t)total * H * 4);
    free(cu);
    return r;
}

int embed_cuda_op_gemm(bool bf16, const float *A, const float *W, size_t T, size_t N, size_t K,
                       float *Y)
{
    struct op_bufs bb = {{0}, 0, op_device()};
    float *dA = (float *)op_upload(&bb, A, T * K * 4), *dW = (float *)op_upload(&bb, W, N * K * 4);
    float *dY = (float *)op_alloc(&bb, T * N * 4);
    __nv_bfloat16 *hA = NULL, *hW = NULL;
    const void *a = dA, *w = dW;
    cublasHandle_t h = NULL;
    cudaError_t e = cudaSuccess;
    const float one = 1.0f, zero = 0.0f;

    if (bf16 && bb.err == cudaSuccess) {
        hA = (__nv_bfloat16 *)op_alloc(&bb, T * K * 2);
        hW = (__nv_bfloat16 *)op_alloc(&bb, N * K * 2);
        if (bb.err == cudaSuccess)
            e = launch_to_bf16(dA, T * K, hA, 0);
        if (e == cudaSuccess && bb.err == cudaSuccess)
            e = launch_to_bf16(dW, N * K, hW, 0);
        a = hA;
        w = hW;
    }
    const struct cuda_blas_api *api = cuda_blas();

    if (!api)
        e = cudaErrorNoDevice;
    if (bb.err == cudaSuccess && e == cudaSuccess) {
        cublasStatus_t st = api->create(&h);
        if (st == CUBLAS_STATUS_SUCCESS && !bf16)
            st = api->set_math_mode(h, CUBLAS_PEDANTIC_MATH);
        if (st == CUBLAS_STATUS_SUCCESS)
            st = api->gemm_ex(h, CUBLAS_OP_T, CUBLAS_OP_N, (int)N, (int)T, (int)K, &one, w,
                              bf16 ? CUDA_R_16BF : CUDA_R_32F, (int)K, a,
                              bf16 ? CUDA_R_16BF : CUDA_R_32F, (int)K, &zero, dY, CUDA_R_32F,
                              (int)N, bf16 ? CUBLAS_COMPUTE_32F : CUBLAS_COMPUTE_32F_PEDANTIC,
                              CUBLAS_GEMM_DEFAULT);
        if (st != CUBLAS_STATUS_SUCCESS)
            e = cudaErrorUnknown;
    }
    int r = op_finish(&bb, e, Y, dY, T * N * 4);
    if (h)
        api->destroy(h);
    return r;
}

int embed_cuda_op_pool(const float *X, const uint32_t *lengths, size_t n_seqs, size_t hidden,
                       bool cls, bool normalize, float *out)
{
    struct op_bufs bb = {{0}, 0, op_device()};
    int total = 0, max_len = 0, r;
    int *cu = offsets(lengths, n_seqs, &total, &max_len);
    cudaError_t e = cudaSuccess;

    if (!cu)
        return -ENOMEM;
    float *dx = (float *)op_upload(&bb, X, (size_t)total * hidden * 4);
    int *dcu = (int *)op_upload(&bb, cu, (n_seqs + 1) * sizeof(int));
    float *dout = (float *)op_alloc(&bb, n_seqs * hidden * 4);
    if (bb.err == cudaSuccess)
        e = launch_pool(dx, dcu, (int)n_seqs, (int)hidden, cls, normalize, dout, 0);
    r = op_finish(&bb, e, out, dout, n_seqs * hidden * 4);
    free(cu);
    return r;
}
