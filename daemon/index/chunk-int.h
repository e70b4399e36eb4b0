/*
 * chunk-int.h - what chunk.c (lines, pieces, windows, merging, output) and chunk-tree.c (the
 * tree-sitter walk) share.  Private to daemon/index; see chunk.c for the design.
 *
 * Ownership: a struct file and its pieces live for one chunk_file() call, on the calling thread.
 */
#ifndef COARCH_INDEX_CHUNK_INT_H
#define COARCH_INDEX_CHUNK_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "chunk.h"

#define SPECIAL_TOKENS 2
#define SYMBOL_MAX 160
#define HEADER_PATH_MAX 160
#define MIN_BUDGET 16

/* All symbols of one file live in one growable buffer and are named by offset. */
struct strpool {
    char *buf;
    size_t len, cap;
};

int chunk_pool_add(struct strpool *sp, const char *s, size_t n, uint32_t *ret);
/* The string at offset off; valid until the next chunk_pool_add(). */
const char *chunk_pool_get(const struct strpool *sp, uint32_t off);

enum {
    LINE_BLANK = 1 << 0,
    LINE_DIRTY = 1 << 2,  /* holds invalid UTF-8 or NUL */
    LINE_QUOTED = 1 << 3, /* begins inside a string or comment (chunk-tree.c, big files only) */
};

struct file {
    const char *src;
    size_t len;
    const char *path;
    const char *language;
    const struct chunk_options *opt;
    uint32_t n_lines;
    uint32_t *start;   /* n_lines + 1 offsets; line i is [start[i], start[i + 1]) with its '\n' */
    uint32_t *tok;     /* n_lines + 1 prefix sums of per-line token counts */
    uint8_t *flags;    /* per line */
    uint8_t *cut_cost; /* per line: syntax nodes spanning the break after it (0 without a tree) */
    bool clean;        /* the whole content is valid UTF-8 without NUL */
    char *scratch;     /* for sanitizing one line or piece before counting */
    size_t scratch_cap;
    const char *sep;    /* scope separator of the language's symbols: "." or "::" */
    struct strpool *sp; /* symbol names */
    char *header_path;  /* sanitized, possibly shortened path for chunk headers */
    size_t path_tokens; /* tokens of the "file: PATH\n\n" header part */
};

static inline uint32_t range_tokens(const struct file *f, uint32_t a, uint32_t b)
{
    return f->tok[b + 1] - f->tok[a];
}

enum piece_kind {
    PIECE_GLUE,
    PIECE_UNIT,
};

/* A merged piece lists the symbols of its parts (see render_symbol()). */
#define PIECE_SYMS 8

struct piece {
    uint32_t a, b;             /* lines, 0-based inclusive */
    size_t byte_a, byte_b;     /* code bytes [byte_a, byte_b) */
    uint32_t tokens;           /* code tokens */
    uint32_t syms[PIECE_SYMS]; /* offsets in the file's strpool, non-empty names only */
    uint8_t n_syms;
    bool syms_more; /* more names than PIECE_SYMS were merged in */
    uint8_t kind;
    bool split;     /* part of a unit or line cut in several pieces: never merged */
    uint32_t title; /* 1 + the line naming the unit, when it is in this piece; 0: none */
    /* The definition the piece belongs to: the whole unit region it was cut from (its leading
     * comment included), or the piece itself for glue and windows. */
    uint32_t def_a, def_b;
    size_t def_byte_a, def_byte_b;
};

struct pieces {
    struct piece *items;
    size_t n, cap;
};

/* Token budget for the code of a piece whose header names `sym`. */
uint32_t chunk_budget(const struct file *f, const char *sym);

/* Cut lines [a, b] of one region into pieces (see chunk.c).  title: 1 + the line naming the
 * region's unit (it gets a title chunk), or 0. */
int chunk_pack_region(struct file *f, struct pieces *ps, uint32_t a, uint32_t b, uint8_t kind,
                      uint32_t sym, uint32_t budget, uint32_t title);

/* A symbol from source bytes: whitespace collapsed, valid UTF-8, at most SYMBOL_MAX bytes. */
int chunk_symbol_from_bytes(struct file *f, struct strpool *sp, const char *s, size_t n,
                            uint32_t *ret);

/* Index of the grammar for a language name, or -1; its static name and the separator of
 * its scoped symbols ("." or "::"; "." for -1). */
int chunk_grammar_index(const char *language);
const char *chunk_grammar_name(int idx);
const char *chunk_grammar_sep(int idx);

/*
 * Chunk f along its syntax tree into ps (regions packed, not yet merged).  Returns 0,
 * -ENOTSUP when the file must be windowed instead (no grammar for it, content over
 * max_parse_bytes, parse cancelled by the timeout), or another negative errno.
 */
int chunk_tree(struct chunker *c, struct file *f, struct pieces *ps);

#endif
