/*
 * cpu.h - process-level setup for the CPU backend (the backend itself is embed_backend_cpu in
 * backend.h).
 */
#ifndef COARCH_EMBED_CPU_H
#define COARCH_EMBED_CPU_H

#include <stdbool.h>

#include "backend.h"

/*
 * Make sure OpenBLAS runs its AVX-512 sgemm kernels on an AVX-512 CPU.  Debian's OpenBLAS 0.3.21
 * picks its kernels once, in its library constructor (before main()), from the CPU model and
 * $OPENBLAS_CORETYPE; on CPUs newer than it knows (measured: Zen 5) it falls back to Haswell
 * (AVX2) kernels at half the speed.  Call this first thing in main(), before starting threads or
 * opening files: when OPENBLAS_CORETYPE is unset, the CPU has AVX-512F/DQ/BW/VL and OpenBLAS chose
 * a non-AVX-512 core, it sets OPENBLAS_CORETYPE=SkylakeX and re-executes /proc/self/exe with the
 * same argv (the new image initialises OpenBLAS again, reads the variable and this function then
 * returns 0).  Returns 0 when nothing was needed, or -errno when the re-exec failed (the program
 * then runs on with the slower kernels).  An explicit OPENBLAS_CORETYPE always wins.
 */
int embed_cpu_setup_process(char **argv);

/*
 * Whether the CPU backend can run precision `p` on this CPU (bf16 needs AVX512_BF16, int8
 * AVX512_VNNI, both AVX-512F/BW/VL/DQ); when not, *ret_missing (if not NULL) names the missing
 * instructions.  The backend's init() returns -ENOTSUP in that case; this says why.
 */
bool embed_cpu_precision_supported(enum embed_precision p, const char **ret_missing);

#endif
