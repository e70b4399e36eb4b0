/*
 * kernels.cuh - the CUDA backend's own kernels (kernels.cu), as launchers on a stream.
 *
 * Layout: activations are row-major [tokens, width] fp32; `G` is the element type a GEMM reads
 * (float for the fp32 path, __nv_bfloat16 for bf16), and a kernel whose output feeds a GEMM
 * writes it in that type too, so no separate cast pass runs.  Sequences are packed: cu_seqlens
 * holds n_seqs + 1 offsets (cu_seqlens[0] = 0, cu_seqlens[n_seqs] = n_tokens).
 *
 * Every launcher returns the launch's cudaError_t (cudaGetLastError() after the launch) and
 * leaves synchronisation to the caller.  Limits the caller checks first (supports()):
 * hidden <= KERNELS_MAX_HIDDEN, head_dim 32 or 64, sequence lengths <= KERNELS_MAX_SEQ.
 *
 * Threading: any host thread, on the stream it passes.
 */
#ifndef COARCH_EMBED_CUDA_KERNELS_CUH
#define COARCH_EMBED_CUDA_KERNELS_CUH

#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#define KERNELS_MAX_HIDDEN 1024
#define KERNELS_MAX_SEQ 512

/* X = LayerNorm(word[ids[t]] + pos[positions[t]] + type0), and Xg = X as G when Xg != NULL. */
template <typename G>
cudaError_t launch_embed_ln(const uint32_t *ids, const uint32_t *positions, int n_tokens,
                            const float *word, const float *pos, const float *type0,
                            const float *gamma, const float *beta, int hidden, float eps, float *X,
                            G *Xg, cudaStream_t s);

/* X = LayerNorm(Y + bias + X) in place, and Xg = X as G when Xg != NULL. */
template <typename G>
cudaError_t launch_bias_residual_ln(const float *Y, const float *bias, float *X, const float *gamma,
                                    const float *beta, int n_tokens, int hidden, float eps, G *Xg,
                                    cudaStream_t s);

/* out = GELU_erf(U + bias) over [n_tokens, width]; out may alias U when G is float. */
template <typename G>
cudaError_t launch_bias_gelu(const float *U, const float *bias, int n_tokens, int width, G *out,
                             cudaStream_t s);

/*
 * Self-attention of every head of every sequence: Q, K, V are the thirds of qkv ([n_tokens,
 * 3 * hidden], no bias yet: bqkv is added here), out[t, head * head_dim + d] = softmax(q k^T /
 * sqrt(head_dim)) v.  One block per (64 queries, head, sequence); keys and values stream
 * through shared memory in tiles of 64 with an online softmax, so no score matrix is stored.
 */
template <typename G>
cudaError_t launch_attention(const float *qkv, const float *bqkv, const int *cu_seqlens, int n_seqs,
                             int max_len, int hidden, int n_heads, int head_dim, G *out,
                             cudaStream_t s);

/* out[i] = mean over sequence i's rows of X (cls: its first row), then / max(|.|, 1e-12) when
 * normalize. */
cudaError_t launch_pool(const float *X, const int *cu_seqlens, int n_seqs, int hidden, bool cls,
                        bool normalize, float *out, cudaStream_t s);

/* dst[i] = src[i] rounded to bf16 (round to nearest even). */
cudaError_t launch_to_bf16(const float *src, size_t n, __nv_bfloat16 *dst, cudaStream_t s);

#endif
