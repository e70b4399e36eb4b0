/*
 * tokenizer-unicode.c - character properties for the BERT tokenizer (see tokenizer-unicode.h).
 *
 * Category sets are range tables searched by bisection; the Basic Multilingual Plane, where
 * nearly all non-ASCII text lives, is also flattened into a 64 KiB flag table built once, so the
 * common lookup is one load.  utf8proc supplies decomposition, combining class and lowercase;
 * the generated exception lists are consulted first.
 */
#include "tokenizer-unicode.h"

#include <pthread.h>
#include <stddef.h>
#include <utf8proc.h>

#include "macro.h"

struct tok_cp_map {
    uint32_t cp;
    uint8_t n;
    uint32_t to[4];
};

#include "tokenizer-unicode-data.h"

enum {
    TOK_FLAG_REMOVED = 1 << 0,
    TOK_FLAG_SPACE = 1 << 1,
    TOK_FLAG_PUNCT = 1 << 2,
    TOK_FLAG_MN = 1 << 3,
};

static uint8_t bmp_flags[0x10000];
static pthread_once_t bmp_once = PTHREAD_ONCE_INIT;

static bool in_ranges(const uint32_t (*r)[2], size_t n, uint32_t cp)
{
    size_t lo = 0, hi = n;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (cp < r[mid][0])
            hi = mid;
        else if (cp > r[mid][1])
            lo = mid + 1;
        else
            return true;
    }
    return false;
}

static void mark_ranges(const uint32_t (*r)[2], size_t n, uint8_t flag)
{
    for (size_t i = 0; i < n && r[i][0] < 0x10000; i++)
        for (uint32_t cp = r[i][0]; cp <= r[i][1] && cp < 0x10000; cp++)
            bmp_flags[cp] |= flag;
}

static void bmp_build(void)
{
    mark_ranges(tok_removed_ranges, ELEMENTSOF(tok_removed_ranges), TOK_FLAG_REMOVED);
    mark_ranges(tok_space_ranges, ELEMENTSOF(tok_space_ranges), TOK_FLAG_SPACE);
    mark_ranges(tok_punct_ranges, ELEMENTSOF(tok_punct_ranges), TOK_FLAG_PUNCT);
    mark_ranges(tok_mn_ranges, ELEMENTSOF(tok_mn_ranges), TOK_FLAG_MN);
}

static inline bool bmp_has(uint32_t cp, uint8_t flag)
{
    pthread_once(&bmp_once, bmp_build);
    return bmp_flags[cp] & flag;
}

bool tok_is_removed(uint32_t cp)
{
    if (cp < 0x10000)
        return bmp_has(cp, TOK_FLAG_REMOVED);
    return in_ranges(tok_removed_ranges, ELEMENTSOF(tok_removed_ranges), cp);
}

bool tok_is_space(uint32_t cp)
{
    if (cp < 0x10000)
        return bmp_has(cp, TOK_FLAG_SPACE);
    return in_ranges(tok_space_ranges, ELEMENTSOF(tok_space_ranges), cp);
}

bool tok_is_punct(uint32_t cp)
{
    if (cp < 0x10000)
        return bmp_has(cp, TOK_FLAG_PUNCT);
    return in_ranges(tok_punct_ranges, ELEMENTSOF(tok_punct_ranges), cp);
}

bool tok_is_mn(uint32_t cp)
{
    if (cp < 0x10000)
        return bmp_has(cp, TOK_FLAG_MN);
    return in_ranges(tok_mn_ranges, ELEMENTSOF(tok_mn_ranges), cp);
}

/* The reference's is_chinese_char (tokenizers/src/normalizers/bert.rs), block by block. */
bool tok_is_cjk(uint32_t cp)
{
    return (cp >= 0x4E00 && cp <= 0x9FFF) || (cp >= 0x3400 && cp <= 0x4DBF) ||
           (cp >= 0x20000 && cp <= 0x2A6DF) || (cp >= 0x2A700 && cp <= 0x2B73F) ||
           (cp >= 0x2B740 && cp <= 0x2B81F) || (cp >= 0x2B920 && cp <= 0x2CEAF) ||
           (cp >= 0xF900 && cp <= 0xFAFF) || (cp >= 0x2F800 && cp <= 0x2FA1F);
}

static const struct tok_cp_map *find_map(const struct tok_cp_map *m, size_t n, uint32_t cp)
{
    size_t lo = 0, hi = n;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (cp < m[mid].cp)
            hi = mid;
        else if (cp > m[mid].cp)
            lo = mid + 1;
        else
            return &m[mid];
    }
    return NULL;
}

int tok_decompose(uint32_t cp, uint32_t out[TOK_DECOMP_MAX])
{
    const struct tok_cp_map *m;
    utf8proc_int32_t buf[8];
    int last_boundclass = 0;
    utf8proc_ssize_t n;

    /* Nothing below U+00C0 has a canonical decomposition. */
    if (cp < 0xC0) {
        out[0] = cp;
        return 1;
    }
    m = find_map(tok_decomp_exceptions, ELEMENTSOF(tok_decomp_exceptions), cp);
    if (m) {
        for (int i = 0; i < m->n; i++)
            out[i] = m->to[i];
        return m->n;
    }
    n = utf8proc_decompose_char((utf8proc_int32_t)cp, buf, ELEMENTSOF(buf), UTF8PROC_DECOMPOSE,
                                &last_boundclass);
    /* Cannot fail for a valid code point; keep the character if it somehow does. */
    if (n < 1 || n > TOK_DECOMP_MAX) {
        out[0] = cp;
        return 1;
    }
    for (utf8proc_ssize_t i = 0; i < n; i++)
        out[i] = (uint32_t)buf[i];
    return (int)n;
}

int tok_combining_class(uint32_t cp)
{
    int ccc;

    if (cp < 0x300)
        return 0;
    ccc = utf8proc_get_property((utf8proc_int32_t)cp)->combining_class;
    if (ccc != 0 && in_ranges(tok_ccc_zero_ranges, ELEMENTSOF(tok_ccc_zero_ranges), cp))
        return 0;
    return ccc;
}

int tok_lowercase(uint32_t cp, uint32_t out[TOK_LOWER_MAX])
{
    const struct tok_cp_map *m;

    if (cp < 0x80) {
        out[0] = cp >= 'A' && cp <= 'Z' ? cp + 32 : cp;
        return 1;
    }
    m = find_map(tok_lower_exceptions, ELEMENTSOF(tok_lower_exceptions), cp);
    if (m) {
        for (int i = 0; i < m->n; i++)
            out[i] = m->to[i];
        return m->n;
    }
    out[0] = (uint32_t)utf8proc_tolower((utf8proc_int32_t)cp);
    return 1;
}
