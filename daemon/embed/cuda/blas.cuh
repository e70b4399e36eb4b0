/*
 * blas.cuh - cuBLAS, loaded when a GPU is found rather than linked: libcublas and libcublasLt
 * are ~580 MB of shared objects whose relocations alone cost ~95 MiB of anonymous memory in
 * every process that links them, GPU or not, which would make a CPU-only coarchd ~20 times its
 * idle size and break the memory governor's budgets.  The CUDA runtime is linked statically
 * (small); cuBLAS is dlopen()ed once, by the first backend context or by coarchd's start-up
 * check for COARCH_BACKEND=cuda (cuda-backend.cu, embed_cuda_load_blas()).
 *
 * Threading: cuda_blas() from any thread; the table is immutable once loaded.
 */
#ifndef COARCH_EMBED_CUDA_BLAS_CUH
#define COARCH_EMBED_CUDA_BLAS_CUH

#include <cublas_v2.h>

struct cuda_blas_api {
    decltype(&cublasCreate_v2) create;
    decltype(&cublasDestroy_v2) destroy;
    decltype(&cublasSetStream_v2) set_stream;
    decltype(&cublasSetMathMode) set_math_mode;
    decltype(&cublasSetWorkspace_v2) set_workspace;
    /* cublasGemmEx is overloaded in C++: the C symbol's own signature. */
    cublasStatus_t (*gemm_ex)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int, int,
                              const void *, const void *, cudaDataType, int, const void *,
                              cudaDataType, int, const void *, void *, cudaDataType, int,
                              cublasComputeType_t, cublasGemmAlgo_t);
};

/* The loaded table (loading it if need be), or NULL when no device was found or cuBLAS could not
 * be loaded (embed_cuda_probe() and embed_cuda_load_blas() say which). */
const struct cuda_blas_api *cuda_blas(void);

/* The device the backend runs on, -1 if none (the probe's). */
int cuda_probe_device_index(void);

#endif
