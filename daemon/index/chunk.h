/*
 * chunk.h - split a source file into embedding-sized, language-aware chunks.
 *
 * Where a tree-sitter grammar exists (C, C++, Python, JavaScript, TypeScript, TSX, Go, Rust,
 * Java) the file is parsed and cut along its syntax: functions, methods and type definitions
 * are units; a class is cut into a header chunk (its declaration line, fields, docstring) and
 * one chunk per method, each knowing its enclosing symbol ("Foo.bar", "ns::Foo::baz"); a unit
 * too big for the model is split between statements.  Other text files, files that fail to
 * parse in time and files built without grammars fall back to line windows with overlap.
 *
 * Units and groups.  Every unit (or piece of one) is a chunk of its own: its text is what gets
 * embedded and indexed.  Small neighbours (tiny functions, imports, module-level statements)
 * are put in one *group*, and each of their chunks reports the group's lines and bytes:
 * a search hit on any of them answers with the group (search.c keeps the best of its units),
 * so results are no smaller than they were when small neighbours were merged into one chunk,
 * while each function still gets an embedding of its own (one vector for several functions
 * matched none of them well: semantic MRR@10 on the shared eval's dev set 0.352 -> 0.420).
 *
 * Titles.  A function or type unit spanning several lines is preceded by a *title* chunk: the
 * line naming it ("def get_loop(self):", "static int ring_pop(struct ring *r, int *out)")
 * under the same header, in the same group.  A second, short view of the unit: its name and
 * signature embed without the body diluting them, and as a tiny lexical document it weighs
 * its words up (dev set: semantic 0.420 -> 0.442, lexical 0.416 -> 0.427, hybrid 0.496 ->
 * 0.509), for about 20% more tokens to embed.
 *
 * Invariants of a chunk list produced by chunk_file():
 *   - lines are 1-based and inclusive; chunks are in file order; the chunks of one group are
 *     consecutive and share start/end line and byte; their units, titles aside, tile it in
 *     order (first unit starts it, last one ends it); a title's unit is one line of the chunk
 *     right after it, without indentation; every non-blank line of the file is in a unit;
 *     code groups do not overlap; line windows (one unit each) overlap by
 *     chunk_options.window_overlap lines; a line too long for one chunk is cut into several
 *     chunks (groups of their own) with the same line number and consecutive byte ranges;
 *   - [start_byte, end_byte) is the group's code in the caller's buffer, [unit_start_byte,
 *     unit_end_byte) the unit's, on lines unit_start_line..unit_end_line;
 *   - text is "file: PATH\n[symbol: SYMBOL\n]\n" followed by the unit's code, always valid
 *     UTF-8 (invalid bytes and NULs become U+FFFD) and NUL-terminated; counted with the options'
 *     token counter it is at most max_tokens - 2 tokens (2 are left for the model's [CLS] and
 *     [SEP]), unless the header alone leaves under 16 tokens for code (a very long path with a
 *     tiny max_tokens): the code still gets 16;
 *   - symbol is the unit's; no group spans more than max_lines lines;
 *   - the definition [def_start_line, def_end_line] (bytes [def_start_byte, def_end_byte)) is
 *     what a search hit on the chunk stands for: for a function, method or type unit, the
 *     whole unit with its leading comment, however many chunks it was cut into (all of them,
 *     and its title, share it); for anything else (module-level code, a class header, a line
 *     window) the unit itself.  It contains the unit; definitions do not overlap (but for line
 *     windows, which overlap as their units do).
 *
 * Threading: a chunker owns a tree-sitter parser and is used by one thread at a time; use one
 * chunker per worker thread.  Nothing is shared between chunkers.
 */
#ifndef COARCH_INDEX_CHUNK_H
#define COARCH_INDEX_CHUNK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct chunker;

/*
 * Token counter supplied by the embedding tokenizer: the number of tokens `text` (len bytes,
 * valid UTF-8, not NUL-terminated) encodes to, without special tokens.  Must be additive over
 * whitespace-separated pieces, as WordPiece is (the chunker counts each line once and adds).
 */
typedef size_t (*chunk_count_tokens_fn)(void *ctx, const char *text, size_t len);

struct chunk_options {
    size_t max_tokens;         /* model limit including header and 2 special tokens (256) */
    size_t merge_tokens;       /* a group's code with a header naming all its units stays at or
                                * below this many tokens (256) */
    size_t min_tokens;         /* pieces below this join a neighbour's group; 0: no groups (64) */
    uint32_t max_lines;        /* no chunk spans more lines (80) */
    uint32_t window_lines;     /* line-window fallback: lines per window (40) */
    uint32_t window_overlap;   /* line-window fallback: lines shared by neighbours (5) */
    size_t max_file_bytes;     /* larger content is refused with -EFBIG (16 MiB) */
    size_t max_parse_bytes;    /* larger content is not parsed, only windowed (4 MiB) */
    size_t segment_bytes;      /* content over twice this is parsed in segments of about this
                                * size, to bound the syntax tree's memory (128 KiB; 0: never) */
    uint64_t parse_timeout_us; /* a parse taking longer falls back to windows (2 s) */
    size_t max_chunks;         /* more chunks than this for one file: -EFBIG (65536) */
    chunk_count_tokens_fn count_tokens; /* NULL: a cheap WordPiece-like estimate */
    void *count_ctx;
    const char *language; /* force a language by name (see chunk_language_names); NULL: detect */
};

struct chunk {
    char *text;                    /* header + the unit's code; owned by the list */
    size_t text_len;               /* bytes in text, without the NUL */
    size_t header_len;             /* text + header_len is the unit's code */
    const char *path;              /* the path passed to chunk_file(); owned by the list */
    uint32_t start_line, end_line; /* the group: 1-based, inclusive */
    size_t start_byte, end_byte;   /* the group: [start, end) in the content */
    uint32_t unit_start_line, unit_end_line; /* the unit, within the group */
    size_t unit_start_byte, unit_end_byte;   /* the unit: text + header_len is its code */
    uint32_t def_start_line, def_end_line;   /* the definition the unit belongs to */
    size_t def_start_byte, def_end_byte;
    bool title;           /* a title chunk: the line naming the unit of the chunk after it */
    const char *language; /* static string: "python", "c", ..., "markdown", "text" */
    const char *symbol;   /* "" when none, e.g. "Foo.bar"; owned by the list */
    uint32_t n_tokens;    /* tokens of text as counted, plus the 2 special tokens */
};

/* A growable array of chunks.  Owns every string its chunks point to. */
struct chunk_list {
    struct chunk *items;
    size_t n;
    size_t cap;
};

/* Fill *opt with the defaults shown above. */
void chunk_options_init(struct chunk_options *opt);

int chunker_new(struct chunker **ret);
struct chunker *chunker_free(struct chunker *c);

/* True when this build has the tree-sitter runtime and grammars (else every file is windowed). */
bool chunker_has_grammars(void);

/*
 * The language name for a file: by extension or well-known file name, else by a "#!" line in
 * content (may be NULL), else "text".  Returns a static string.  Languages with a grammar are
 * those for which chunk_language_has_grammar() is true.
 */
const char *chunk_detect_language(const char *path, const char *content, size_t len);
bool chunk_language_has_grammar(const char *language);

/* The language a user means by `name` ("python", "Python", "py", "c++", ...): its static
 * canonical name as chunks record it, or NULL when coarch knows no such language. */
const char *chunk_language_lookup(const char *name);
/* Every language name coarch records, sorted, at most max of them into ret (static strings);
 * returns how many. */
size_t chunk_language_list(const char **ret, size_t max);

/*
 * Chunk one file.  path is the name shown in each chunk's header (repository-relative) and
 * selects the language; content need not be NUL-terminated, may hold any bytes, and is only
 * read during the call.  opt may be NULL for the defaults.
 *
 * On success appends the chunks to *out and returns how many (0 for an empty or blank file).
 * On failure returns -EINVAL (bad arguments or options), -ENOMEM, or -EFBIG (content over
 * max_file_bytes, or more than max_chunks chunks) and leaves *out as it was.
 */
int chunk_file(struct chunker *c, const char *path, const char *content, size_t len,
               const struct chunk_options *opt, struct chunk_list *out);

void chunk_list_init(struct chunk_list *l);
/* Free every chunk and the array; the list is empty and reusable afterwards. */
void chunk_list_release(struct chunk_list *l);

#endif
