/*
 * safetensors.h - read-only, validated access to a .safetensors file through mmap.
 *
 * File layout (huggingface/safetensors README; all integers little-endian):
 *
 *   OFFSET    SIZE   FIELD
 *   0         8      N, u64: length of the JSON header
 *   8         N      header: UTF-8 JSON object, may be right-padded with spaces
 *   8+N       rest   byte buffer; tensor data_offsets are relative to its start
 *
 * The header maps tensor names to {"dtype": "F32", "shape": [..], "data_offsets": [BEGIN, END]}
 * plus an optional "__metadata__" object of string values.  safetensors_open() validates it the
 * way the reference implementation does: N <= 100,000,000 and inside the file; JSON that parses
 * (jansson, duplicate keys rejected) into an object; known dtypes; non-negative integer shapes of
 * at most SAFETENSORS_MAX_DIMS dimensions; numel * dtype size == END - BEGIN with every
 * multiplication overflow-checked; tensors that tile the buffer exactly (sorted by offset, each
 * BEGIN equals the previous END, no holes, no overlaps) and end at the end of the file.  Any
 * failure gives -EBADMSG (format), -ENOENT/-EACCES/... (I/O) or -ENOMEM, and a one-line message
 * naming the file and, when there is one, the tensor.
 *
 * Data pointers point into the mapping.  Offsets are byte-granular, so data is NOT aligned in
 * general: read it with memcpy, never through a cast `float *`.
 *
 * Ownership: safetensors_open() returns an object freed with safetensors_free(), which unmaps
 * the file; every pointer obtained from it (names, tensors, data) is borrowed and dies with it.
 * Threading: immutable after open; any number of threads may read it concurrently.
 */
#ifndef COARCH_EMBED_SAFETENSORS_H
#define COARCH_EMBED_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#define SAFETENSORS_MAX_DIMS 8
#define SAFETENSORS_MAX_HEADER ((uint64_t)100000000)

enum safetensors_dtype {
    SAFETENSORS_DTYPE_BOOL,
    SAFETENSORS_DTYPE_U8,
    SAFETENSORS_DTYPE_I8,
    SAFETENSORS_DTYPE_F8_E5M2,
    SAFETENSORS_DTYPE_F8_E4M3,
    SAFETENSORS_DTYPE_I16,
    SAFETENSORS_DTYPE_U16,
    SAFETENSORS_DTYPE_F16,
    SAFETENSORS_DTYPE_BF16,
    SAFETENSORS_DTYPE_I32,
    SAFETENSORS_DTYPE_U32,
    SAFETENSORS_DTYPE_F32,
    SAFETENSORS_DTYPE_F64,
    SAFETENSORS_DTYPE_I64,
    SAFETENSORS_DTYPE_U64,
    _SAFETENSORS_DTYPE_MAX,
};

struct safetensors_tensor {
    const char *name; /* borrowed */
    enum safetensors_dtype dtype;
    unsigned n_dims;
    uint64_t shape[SAFETENSORS_MAX_DIMS];
    uint64_t numel;   /* product of shape; 1 for a 0-rank scalar */
    const void *data; /* inside the mapping, unaligned; NULL when size == 0 */
    size_t size;      /* bytes */
    uint64_t offset;  /* of data from the start of the file */
};

struct safetensors;

/*
 * Map and validate `path`.  On failure returns a negative errno and, when ret_error_message is
 * not NULL, sets it to a malloc'd message (caller frees) such as "model.safetensors: tensor x:
 * data_offsets [0,12] hold 12 bytes, shape [4] of F16 needs 8" (the file's base name first).
 */
int safetensors_open(const char *path, struct safetensors **ret, char **ret_error_message);
struct safetensors *safetensors_free(struct safetensors *st);

/* Tensors in file-offset order. */
size_t safetensors_count(const struct safetensors *st);
const struct safetensors_tensor *safetensors_get(const struct safetensors *st, size_t i);
/* Exact name lookup (binary search); NULL when absent. */
const struct safetensors_tensor *safetensors_find(const struct safetensors *st, const char *name);
/* A "__metadata__" value, or NULL. */
const char *safetensors_metadata(const struct safetensors *st, const char *key);
/* The path given to safetensors_open() and its base name (for messages). */
const char *safetensors_path(const struct safetensors *st);
const char *safetensors_basename(const struct safetensors *st);
/* Total mapped bytes (the file size). */
size_t safetensors_mapped_size(const struct safetensors *st);

/*
 * Tell the kernel that [data, data + size) (inside the mapping, e.g. a tensor a backend has
 * copied) is no longer needed by this process: madvise(MADV_DONTNEED) on the whole pages inside
 * the range, so they stop counting in its RSS.  Later reads still work (pages fault back in
 * from the file).  Returns 0 (also for st NULL: weights not from a file), -EINVAL for a range
 * outside the mapping, or -errno.
 */
int safetensors_release_pages(const struct safetensors *st, const void *data, size_t size);

const char *safetensors_dtype_name(enum safetensors_dtype dtype);
/* Bits per element (8, 16, 32, 64; BOOL is 8). */
unsigned safetensors_dtype_bits(enum safetensors_dtype dtype);

#endif
