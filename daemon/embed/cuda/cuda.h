/*
 * cuda.h - the CUDA backend's C face: the ops table (backend.h), a probe for a usable GPU, and
 * the hooks its tests use.  Built only when meson's `cuda` feature finds nvcc and cuBLAS
 * (COARCH_HAVE_CUDA); nothing here exists in a CPU-only build.
 *
 * The backend (cuda-backend.cu) runs the same forward pass as the CPU reference (cpu-backend.c)
 * on one device: cuBLAS GEMMs (fp32, or bf16 inputs with fp32 accumulation) and our own kernels
 * (kernels.cu) for the embedding lookup + LayerNorm, bias + GELU, bias + residual + LayerNorm,
 * attention over packed variable-length sequences, and pooling + L2 normalisation.  Activations
 * between kernels are fp32; LayerNorm statistics, softmax and pooling are always fp32.
 *
 * Errors: every CUDA and cuBLAS status becomes a negative errno (-ENOMEM for an allocation
 * failure, -ENODEV for a missing device or driver, -EIO otherwise); nothing aborts or exits.
 *
 * Memory: every device allocation goes through one allocator that counts bytes and refuses to
 * pass COARCH_GPU_MEMORY_FRACTION (default 0.8) of the device's memory, with -ENOMEM, so the
 * embedder halves the batch and retries the same sequences.
 *
 * Threading: embed_cuda_probe() and embed_cuda_fail_next_alloc() from any thread; a backend
 * context from one thread at a time (backend.h), which may change between calls.
 */
#ifndef COARCH_EMBED_CUDA_H
#define COARCH_EMBED_CUDA_H

#ifdef __cplusplus
extern "C" {
#endif

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backend.h"

extern const struct embed_backend_ops embed_backend_cuda;

/*
 * Whether a device this build can run on is present: at least one CUDA device of compute
 * capability 8.0 or newer (bf16 tensor cores) and a working driver.  Returns 0 and writes the
 * first such device's name (e.g. "NVIDIA H100 80GB HBM3") to name, or -ENODEV with the reason
 * in name ("no CUDA driver", "compute capability 7.5 < 8.0", ...).  Cheap after the first call.
 */
int embed_cuda_probe(char *name, size_t name_len);

/* Loads cuBLAS (once; the probe does not: a GPU box's idle daemon does not carry it).  0, or
 * -ENODEV with the loader's reason in msg.  Contexts load it themselves; coarchd asks at start
 * only for COARCH_BACKEND=cuda, so that a missing cuBLAS is an error then. */
int embed_cuda_load_blas(char *msg, size_t msg_len);

/* COARCH_GPU_MEMORY_FRACTION parsed: 0 and the fraction in (0, 1] (default 0.8), or -EINVAL
 * with a sentence naming the value in msg. */
int embed_cuda_memory_fraction(double *ret, char *msg, size_t msg_len);

/*
 * Single kernels on host arrays, for tests/backend/test-backend-cuda.c: each uploads its inputs
 * to fresh device buffers, runs one kernel (or one cuBLAS GEMM) on the current device and
 * copies the result back.  Shapes as kernels.cuh; all fp32 on the host side.  0 or -errno.
 *   layernorm  out = LN(x + y + bias) * g + b, rows x n
 *   bias_gelu  out = GELU_erf(x + bias), rows x n
 *   attention  ctx [T, H] from qkv [T, 3H] + bqkv over packed sequences of `lengths`
 *   gemm       Y [T, N] = A [T, K] W [N, K]^T, fp32 (pedantic) or with bf16 inputs
 *   pool       out [n_seqs, H]: mean (or first row) of each sequence, L2-normalised if asked
 */
int embed_cuda_op_layernorm(const float *x, const float *y, const float *bias, const float *g,
                            const float *b, size_t rows, size_t n, float eps, float *out);
int embed_cuda_op_bias_gelu(const float *x, const float *bias, size_t rows, size_t n, float *out);
int embed_cuda_op_attention(const float *qkv, const float *bqkv, const uint32_t *lengths,
                            size_t n_seqs, unsigned n_heads, unsigned head_dim, float *ctx);
int embed_cuda_op_gemm(bool bf16, const float *A, const float *W, size_t T, size_t N, size_t K,
                       float *Y);
int embed_cuda_op_pool(const float *X, const uint32_t *lengths, size_t n_seqs, size_t hidden,
                       bool cls, bool normalize, float *out);

/* Test hook: the next device allocation of any CUDA backend fails as if the device were full
 * (-ENOMEM), once. */
void embed_cuda_fail_next_alloc(void);

#ifdef __cplusplus
}
#endif

#endif
