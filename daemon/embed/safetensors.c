/*
 * safetensors.c - mmap + validate a .safetensors file (see safetensors.h for the format and the
 * checks).  The JSON header is parsed with jansson; the parsed tree is kept for the lifetime of
 * the object because tensor names and metadata strings are borrowed from it.
 */
#include "safetensors.h"

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "macro.h"

struct safetensors {
    char *path;
    const char *base;
    const uint8_t *map;
    size_t map_size;
    json_t *header;
    json_t *metadata;                   /* borrowed from header, may be NULL */
    struct safetensors_tensor *tensors; /* by offset */
    size_t n_tensors;
    const struct safetensors_tensor **by_name;
};

static const struct {
    const char *name;
    unsigned bits;
} dtype_table[_SAFETENSORS_DTYPE_MAX] = {
    [SAFETENSORS_DTYPE_BOOL] = {"BOOL", 8},       [SAFETENSORS_DTYPE_U8] = {"U8", 8},
    [SAFETENSORS_DTYPE_I8] = {"I8", 8},           [SAFETENSORS_DTYPE_F8_E5M2] = {"F8_E5M2", 8},
    [SAFETENSORS_DTYPE_F8_E4M3] = {"F8_E4M3", 8}, [SAFETENSORS_DTYPE_I16] = {"I16", 16},
    [SAFETENSORS_DTYPE_U16] = {"U16", 16},        [SAFETENSORS_DTYPE_F16] = {"F16", 16},
    [SAFETENSORS_DTYPE_BF16] = {"BF16", 16},      [SAFETENSORS_DTYPE_I32] = {"I32", 32},
    [SAFETENSORS_DTYPE_U32] = {"U32", 32},        [SAFETENSORS_DTYPE_F32] = {"F32", 32},
    [SAFETENSORS_DTYPE_F64] = {"F64", 64},        [SAFETENSORS_DTYPE_I64] = {"I64", 64},
    [SAFETENSORS_DTYPE_U64] = {"U64", 64},
};

const char *safetensors_dtype_name(enum safetensors_dtype dtype)
{
    return (unsigned)dtype < _SAFETENSORS_DTYPE_MAX ? dtype_table[dtype].name : "?";
}

unsigned safetensors_dtype_bits(enum safetensors_dtype dtype)
{
    return (unsigned)dtype < _SAFETENSORS_DTYPE_MAX ? dtype_table[dtype].bits : 0;
}

static int dtype_from_string(const char *s, enum safetensors_dtype *ret)
{
    for (unsigned i = 0; i < _SAFETENSORS_DTYPE_MAX; i++)
        if (strcmp(s, dtype_table[i].name) == 0) {
            *ret = (enum safetensors_dtype)i;
            return 0;
        }
    return -EBADMSG;
}

/*
 * Sets *errmsg (when errmsg is not NULL) to a malloc'd "<base>: <message>" and returns `r` (a
 * negative errno).  Out of memory for the message leaves *errmsg NULL.  Every failure path
 * calls this once, so nothing is overwritten.
 */
_printf_(4, 5) static int fail(char **errmsg, const char *base, int r, const char *fmt, ...)
{
    char *msg = NULL;
    va_list ap;

    if (!errmsg)
        return r;
    va_start(ap, fmt);
    if (vasprintf(&msg, fmt, ap) < 0)
        msg = NULL;
    va_end(ap);
    *errmsg = NULL;
    if (msg && asprintf(errmsg, "%s: %s", base, msg) < 0)
        *errmsg = NULL;
    free(msg);
    return r;
}

/* "[a,b,c]" into buf, truncated quietly. */
static const char *shape_str(const struct safetensors_tensor *t, char *buf, size_t size)
{
    size_t n = 0;

    n += (size_t)snprintf(buf + n, size - n, "[");
    for (unsigned i = 0; i < t->n_dims && n < size; i++)
        n += (size_t)snprintf(buf + n, size - n, "%s%" PRIu64, i ? "," : "", t->shape[i]);
    if (n < size)
        snprintf(buf + n, size - n, "]");
    return buf;
}

static int cmp_offset(const void *a, const void *b)
{
    const struct safetensors_tensor *x = a, *y = b;
    uint64_t xe = x->offset + x->size, ye = y->offset + y->size;

    if (x->offset != y->offset)
        return x->offset < y->offset ? -1 : 1;
    /* Empty tensors sort before a non-empty one starting at the same offset. */
    return xe < ye ? -1 : xe > ye;
}

static int cmp_name(const void *a, const void *b)
{
    const struct safetensors_tensor *const *x = a, *const *y = b;
    return strcmp((*x)->name, (*y)->name);
}

/* A JSON integer that is >= 0 (jansson rejects integers beyond long long while parsing). */
static bool json_get_u64(const json_t *v, uint64_t *ret)
{
    json_int_t i;

    if (!json_is_integer(v))
        return false;
    i = json_integer_value(v);
    if (i < 0)
        return false;
    *ret = (uint64_t)i;
    return true;
}

/*
 * Fill `t` from one header entry; data_offsets are checked against `buf_size` here, tiling is
 * checked by the caller after sorting.
 */
static int parse_tensor(const char *base, const char *name, json_t *v, uint64_t buf_size,
                        uint64_t buf_start, const uint8_t *map, struct safetensors_tensor *t,
                        char **errmsg)
{
    json_t *dtype, *shape, *offs;
    uint64_t begin, end, numel = 1, bits, nbytes;
    char sbuf[160];
    size_t i;

    memset(t, 0, sizeof(*t));
    t->name = name;
    if (!json_is_object(v))
        return fail(errmsg, base, -EBADMSG, "tensor %s: header entry is not an object", name);
    dtype = json_object_get(v, "dtype");
    shape = json_object_get(v, "shape");
    offs = json_object_get(v, "data_offsets");
    if (!json_is_string(dtype))
        return fail(errmsg, base, -EBADMSG, "tensor %s: missing or non-string \"dtype\"", name);
    if (dtype_from_string(json_string_value(dtype), &t->dtype) < 0)
        return fail(errmsg, base, -EBADMSG, "tensor %s: unknown dtype \"%.32s\"", name,
                    json_string_value(dtype));
    if (!json_is_array(shape))
        return fail(errmsg, base, -EBADMSG, "tensor %s: missing or non-array \"shape\"", name);
    if (json_array_size(shape) > SAFETENSORS_MAX_DIMS)
        return fail(errmsg, base, -EBADMSG, "tensor %s: %zu dimensions (at most %d)", name,
                    json_array_size(shape), SAFETENSORS_MAX_DIMS);
    t->n_dims = (unsigned)json_array_size(shape);
    for (i = 0; i < t->n_dims; i++) {
        if (!json_get_u64(json_array_get(shape, i), &t->shape[i]))
            return fail(errmsg, base, -EBADMSG,
                        "tensor %s: shape[%zu] is not a non-negative integer", name, i);
        if (__builtin_mul_overflow(numel, t->shape[i], &numel)) {
            t->n_dims = (unsigned)i + 1;
            return fail(errmsg, base, -EBADMSG, "tensor %s: shape %s overflows", name,
                        shape_str(t, sbuf, sizeof(sbuf)));
        }
    }
    t->numel = numel;
    if (!json_is_array(offs) || json_array_size(offs) != 2 ||
        !json_get_u64(json_array_get(offs, 0), &begin) ||
        !json_get_u64(json_array_get(offs, 1), &end))
        return fail(errmsg, base, -EBADMSG,
                    "tensor %s: \"data_offsets\" must be [BEGIN, END] of non-negative integers",
                    name);
    if (begin > end)
        return fail(errmsg, base, -EBADMSG,
                    "tensor %s: data_offsets [%" PRIu64 ",%" PRIu64 "] end before they begin", name,
                    begin, end);
    if (end > buf_size)
        return fail(errmsg, base, -EBADMSG,
                    "tensor %s: data_offsets [%" PRIu64 ",%" PRIu64
                    "] run past the end of the file (data buffer is %" PRIu64 " bytes)",
                    name, begin, end, buf_size);
    bits = safetensors_dtype_bits(t->dtype);
    if (__builtin_mul_overflow(numel, bits, &nbytes) || nbytes % 8 != 0)
        return fail(errmsg, base, -EBADMSG, "tensor %s: shape %s of %s has no byte size", name,
                    shape_str(t, sbuf, sizeof(sbuf)), safetensors_dtype_name(t->dtype));
    nbytes /= 8;
    if (nbytes != end - begin)
        return fail(errmsg, base, -EBADMSG,
                    "tensor %s: data_offsets [%" PRIu64 ",%" PRIu64 "] hold %" PRIu64
                    " bytes, shape %s of %s needs %" PRIu64,
                    name, begin, end, end - begin, shape_str(t, sbuf, sizeof(sbuf)),
                    safetensors_dtype_name(t->dtype), nbytes);
    t->size = (size_t)nbytes;
    t->offset = buf_start + begin;
    t->data = nbytes ? map + t->offset : NULL;
    return 0;
}

/*
 * Validate the header at map[8..8+hlen) and build the tensor table.  All checks that need the
 * whole set (tiling, duplicates) happen after every entry parsed.
 */
static int parse_header(struct safetensors *st, uint64_t hlen, char **errmsg)
{
    const char *base = st->base;
    uint64_t buf_start = 8 + hlen, buf_size = st->map_size - buf_start, expect = 0;
    json_error_t jerr;
    const char *key;
    json_t *v;
    size_t i, n = 0;
    int r;

    if (hlen == 0 || st->map[8] != '{')
        return fail(errmsg, base, -EBADMSG, "header does not start with '{'");
    st->header = json_loadb((const char *)st->map + 8, (size_t)hlen, JSON_REJECT_DUPLICATES, &jerr);
    if (!st->header)
        return fail(errmsg, base, -EBADMSG, "header is not valid JSON: %s (at byte %d)", jerr.text,
                    jerr.position);
    if (!json_is_object(st->header))
        return fail(errmsg, base, -EBADMSG, "header is not a JSON object");

    st->tensors = array_alloc(json_object_size(st->header), sizeof(*st->tensors));
    if (!st->tensors)
        return fail(errmsg, base, -ENOMEM, "out of memory");
    json_object_foreach(st->header, key, v)
    {
        if (strcmp(key, "__metadata__") == 0) {
            const char *mk;
            json_t *mv;

            if (!json_is_object(v))
                return fail(errmsg, base, -EBADMSG, "__metadata__ is not an object");
            json_object_foreach(v, mk, mv)
            {
                if (!json_is_string(mv))
                    return fail(errmsg, base, -EBADMSG,
                                "__metadata__ value of \"%.64s\" is not a string", mk);
            }
            st->metadata = v;
            continue;
        }
        if (key[0] == '\0')
            return fail(errmsg, base, -EBADMSG, "tensor with an empty name");
        r = parse_tensor(base, key, v, buf_size, buf_start, st->map, &st->tensors[n], errmsg);
        if (r < 0)
            return r;
        n++;
    }
    st->n_tensors = n;

    qsort(st->tensors, n, sizeof(*st->tensors), cmp_offset);
    for (i = 0; i < n; i++) {
        const struct safetensors_tensor *t = &st->tensors[i];
        uint64_t b = t->offset - buf_start;

        if (b < expect)
            return fail(errmsg, base, -EBADMSG,
                        "tensor %s: data_offsets [%" PRIu64 ",%" PRIu64
                        "] overlap the previous tensor %s (which ends at %" PRIu64 ")",
                        t->name, b, b + t->size, st->tensors[i - 1].name, expect);
        if (b > expect)
            return fail(errmsg, base, -EBADMSG,
                        "tensor %s: data_offsets begin at %" PRIu64
                        ", leaving a hole after %" PRIu64,
                        t->name, b, expect);
        expect = b + t->size;
    }
    if (expect != buf_size)
        return fail(errmsg, base, -EBADMSG,
                    "tensors end at data offset %" PRIu64 " but the file holds %" PRIu64
                    " data bytes (truncated or trailing garbage)",
                    expect, buf_size);

    st->by_name = array_alloc(n, sizeof(*st->by_name));
    if (!st->by_name)
        return fail(errmsg, base, -ENOMEM, "out of memory");
    for (i = 0; i < n; i++)
        st->by_name[i] = &st->tensors[i];
    qsort(st->by_name, n, sizeof(*st->by_name), cmp_name);
    return 0;
}

int safetensors_open(const char *path, struct safetensors **ret, char **errmsg)
{
    struct safetensors *st;
    struct stat sb;
    uint64_t hlen;
    void *map;
    int fd, r;

    st = calloc(1, sizeof(*st));
    if (!st)
        return -ENOMEM;
    st->path = strdup(path);
    if (!st->path) {
        r = -ENOMEM;
        goto out_free;
    }
    st->base = strrchr(st->path, '/') ? strrchr(st->path, '/') + 1 : st->path;

    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        r = fail(errmsg, path, -errno, "cannot open: %s", strerror(errno));
        goto out_free;
    }
    if (fstat(fd, &sb) < 0) {
        r = fail(errmsg, path, -errno, "cannot stat: %s", strerror(errno));
        goto out_close;
    }
    if (!S_ISREG(sb.st_mode)) {
        r = fail(errmsg, path, -EBADMSG, "not a regular file");
        goto out_close;
    }
    if (sb.st_size < 8) {
        r = fail(errmsg, st->base, -EBADMSG,
                 "file is %lld bytes, too short for the 8-byte header length",
                 (long long)sb.st_size);
        goto out_close;
    }
    if ((uint64_t)sb.st_size > SIZE_MAX) {
        r = fail(errmsg, st->base, -EFBIG, "file too large to map");
        goto out_close;
    }
    map = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (map == MAP_FAILED) {
        r = fail(errmsg, st->base, -errno, "cannot mmap: %s", strerror(errno));
        goto out_close;
    }
    close(fd);
    st->map = map;
    st->map_size = (size_t)sb.st_size;

    memcpy(&hlen, st->map, 8);
    hlen = le64toh(hlen);
    if (hlen > SAFETENSORS_MAX_HEADER) {
        r = fail(errmsg, st->base, -EBADMSG,
                 "header length %" PRIu64 " exceeds the limit of %" PRIu64 " bytes", hlen,
                 SAFETENSORS_MAX_HEADER);
        goto out_free;
    }
    if (hlen > st->map_size - 8) {
        r = fail(errmsg, st->base, -EBADMSG,
                 "header length %" PRIu64 " runs past the end of the %zu-byte file", hlen,
                 st->map_size);
        goto out_free;
    }
    r = parse_header(st, hlen, errmsg);
    if (r < 0)
        goto out_free;
    *ret = st;
    return 0;

out_close:
    close(fd);
out_free:
    safetensors_free(st);
    return r;
}

struct safetensors *safetensors_free(struct safetensors *st)
{
    if (!st)
        return NULL;
    if (st->map)
        munmap((void *)st->map, st->map_size);
    json_decref(st->header);
    free(st->tensors);
    free(st->by_name);
    free(st->path);
    free(st);
    return NULL;
}

size_t safetensors_count(const struct safetensors *st)
{
    return st->n_tensors;
}

const struct safetensors_tensor *safetensors_get(const struct safetensors *st, size_t i)
{
    return i < st->n_tensors ? &st->tensors[i] : NULL;
}

const struct safetensors_tensor *safetensors_find(const struct safetensors *st, const char *name)
{
    size_t lo = 0, hi = st->n_tensors;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(name, st->by_name[mid]->name);

        if (c == 0)
            return st->by_name[mid];
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

const char *safetensors_metadata(const struct safetensors *st, const char *key)
{
    return st->metadata ? json_string_value(json_object_get(st->metadata, key)) : NULL;
}

const char *safetensors_path(const struct safetensors *st)
{
    return st->path;
}

const char *safetensors_basename(const struct safetensors *st)
{
    return st->base;
}

size_t safetensors_mapped_size(const struct safetensors *st)
{
    return st->map_size;
}

int safetensors_release_pages(const struct safetensors *st, const void *data, size_t size)
{
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t b = (uintptr_t)data, e, m;

    if (!st || size == 0)
        return 0; /* no file behind the weights (a model built in memory, by a test) */
    m = (uintptr_t)st->map;
    if (b < m || size > st->map_size || b - m > st->map_size - size)
        return -EINVAL;
    e = b + size;
    b = (b + page - 1) & ~(page - 1);
    e &= ~(page - 1);
    if (e <= b)
        return 0;
    if (madvise((void *)b, e - b, MADV_DONTNEED) < 0)
        return -errno;
    return 0;
}
