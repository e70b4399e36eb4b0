/*
 * macro.h - small shared helpers: cleanup attributes, TAKE_PTR/TAKE_FD, overflow-checked
 * allocation sizes and array sizing.
 *
 * Cleanup follows systemd's style: a local declared with _cleanup_free_ is freed when it goes
 * out of scope unless ownership was moved out with TAKE_PTR().  A function uses either these
 * attributes or forward gotos, never both (STYLE.md rule 4).
 */
#ifndef COARCH_UTIL_MACRO_H
#define COARCH_UTIL_MACRO_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#define ELEMENTSOF(a) (sizeof(a) / sizeof((a)[0]))

#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))
#define CLAMP(x, lo, hi) ((x) < (lo) ? (lo) : (x) > (hi) ? (hi) : (x))

#define _unused_ __attribute__((unused))
#define _printf_(a, b) __attribute__((format(printf, a, b)))
#define _noreturn_ __attribute__((noreturn))
#define _likely_(x) __builtin_expect(!!(x), 1)
#define _unlikely_(x) __builtin_expect(!!(x), 0)

static inline void freep(void *p)
{
    free(*(void **)p);
}

static inline void closep(int *fd)
{
    if (*fd >= 0) {
        int saved = errno;
        close(*fd);
        errno = saved;
    }
}

#define _cleanup_(f) __attribute__((cleanup(f)))
#define _cleanup_free_ _cleanup_(freep)
#define _cleanup_close_ _cleanup_(closep)

/* Move ownership out of a cleanup-managed local. */
#define TAKE_PTR(p)                                                                                \
    ({                                                                                             \
        __typeof__(p) _tp = (p);                                                                   \
        (p) = NULL;                                                                                \
        _tp;                                                                                       \
    })
#define TAKE_FD(fd)                                                                                \
    ({                                                                                             \
        int _tf = (fd);                                                                            \
        (fd) = -1;                                                                                 \
        _tf;                                                                                       \
    })

/* n * size with overflow detection, as git's st_mult: returns false on overflow. */
static inline bool size_mul_ok(size_t n, size_t size, size_t *ret)
{
    return !__builtin_mul_overflow(n, size, ret);
}

static inline bool size_add_ok(size_t a, size_t b, size_t *ret)
{
    return !__builtin_add_overflow(a, b, ret);
}

/* Overflow-checked malloc(n * size); NULL with errno = ENOMEM on overflow or failure. */
static inline void *array_alloc(size_t n, size_t size)
{
    size_t total;

    if (!size_mul_ok(n, size, &total)) {
        errno = ENOMEM;
        return NULL;
    }
    return malloc(total ? total : 1);
}

/* Overflow-checked realloc(p, n * size); on failure p is untouched and NULL is returned. */
static inline void *array_realloc(void *p, size_t n, size_t size)
{
    size_t total;

    if (!size_mul_ok(n, size, &total)) {
        errno = ENOMEM;
        return NULL;
    }
    return realloc(p, total ? total : 1);
}

/*
 * Grow *items (capacity *cap) so it holds at least `need` elements of `size` bytes, doubling.
 * Returns 0 or -ENOMEM; on failure nothing changes.
 */
static inline int array_grow(void **items, size_t *cap, size_t need, size_t size)
{
    size_t ncap;
    void *n;

    if (need <= *cap)
        return 0;
    ncap = *cap ? *cap : 8;
    while (ncap < need) {
        if (ncap > SIZE_MAX / 2)
            return -ENOMEM;
        ncap *= 2;
    }
    n = array_realloc(*items, ncap, size);
    if (!n)
        return -ENOMEM;
    *items = n;
    *cap = ncap;
    return 0;
}

#endif
