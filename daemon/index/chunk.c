/*
 * chunk.c - language-aware chunking (see chunk.h for the contract).
 *
 * DESIGN
 *
 * Everything is decided on whole lines.  A file is first turned into a line table with one token
 * count per line (WordPiece never joins tokens across whitespace, so the tokens of a run of
 * lines are the sum of its lines' tokens): any line range is then costed in O(1) from prefix
 * sums, and the tokenizer runs once per line instead of once per candidate chunk.
 *
 * With a grammar, the syntax tree is walked once and the file is cut into *regions*: consecutive,
 * non-overlapping line ranges, each a UNIT (a function, method or type, with the comments and
 * attributes right above it) or GLUE (imports, statements, fields and class headers between
 * units), each with its symbol ("Foo.bar"; glue carries the enclosing scope).  Classes and other
 * containers are not units themselves: their header lines become glue with the class's symbol
 * and their methods become units with "Class.method" symbols.  While walking, every node that
 * fits the token budget marks its inner line breaks as "no cut here"; a node that does not fit
 * leaves the breaks between its children open.  A region is then packed greedily into pieces
 * that end only at open breaks, which is how a large function gets split between statements
 * (and, inside a huge statement, between its parts).  A single line too long for a chunk is cut
 * by bytes.  Finally small neighbouring pieces are merged up to merge_tokens, so tiny functions,
 * one-line imports and closing braces do not become chunks of their own.
 *
 * Without a grammar (other text files, a parse that times out, content over max_parse_bytes, a
 * build without tree-sitter) the file is cut into line windows with overlap.
 *
 * Bounds: content over max_file_bytes is refused; parsing is cancelled after parse_timeout_us;
 * tree recursion stops at WALK_MAX_DEPTH (deeper nodes are treated as opaque); line-table memory
 * is 9 bytes per line; the result is capped at max_chunks.
 */
#include "chunk.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "macro.h"

#ifdef COARCH_HAVE_TREE_SITTER
#include <tree_sitter/api.h>
#endif

#define SPECIAL_TOKENS 2
#define WALK_MAX_DEPTH 128
/* How deep below a node to look for units before treating it as plain glue. */
#define CONTAINS_UNIT_DEPTH 3
#define SYMBOL_MAX 160
#define HEADER_PATH_MAX 160
#define MIN_BUDGET 16

/* ---- languages ---------------------------------------------------------------------------- */

/*
 * Node kinds per grammar, as space-separated node type names.  units: one region each (split
 * when too big).  body_units: units only when they have a body field (struct definitions, not
 * uses).  containers: recursed into with a new scope.  wrappers: take their kind and name from
 * the first unit or container among their named children (decorators, export, template<>).
 * vardecls: a unit when they bind a function (const f = () => ...).  attach: comments and
 * attributes that belong to the unit right below them.
 */
struct grammar_spec {
    const char *name;
    const char *sep;
    const char *units;
    const char *body_units;
    const char *containers;
    const char *wrappers;
    const char *vardecls;
    const char *attach;
};

#define JS_UNITS "function_declaration generator_function_declaration method_definition"
#define JS_ATTACH "comment decorator"

static const struct grammar_spec grammar_specs[] = {
    {"c", ".", "function_definition type_definition",
     "struct_specifier union_specifier enum_specifier", "", "", "", "comment"},
    {"cpp", "::", "function_definition type_definition alias_declaration concept_definition",
     "enum_specifier", "class_specifier struct_specifier union_specifier namespace_definition",
     "template_declaration", "", "comment"},
    {"python", ".", "function_definition", "", "class_definition", "decorated_definition", "",
     "comment"},
    {"javascript", ".", JS_UNITS, "", "class_declaration class", "export_statement",
     "lexical_declaration variable_declaration field_definition", JS_ATTACH},
    {"typescript", ".", JS_UNITS " interface_declaration type_alias_declaration enum_declaration",
     "", "class_declaration abstract_class_declaration class internal_module module",
     "export_statement ambient_declaration expression_statement",
     "lexical_declaration variable_declaration public_field_definition field_definition",
     JS_ATTACH},
    {"tsx", ".", JS_UNITS " interface_declaration type_alias_declaration enum_declaration", "",
     "class_declaration abstract_class_declaration class internal_module module",
     "export_statement ambient_declaration expression_statement",
     "lexical_declaration variable_declaration public_field_definition field_definition",
     JS_ATTACH},
    {"go", ".", "function_declaration method_declaration type_declaration", "", "", "", "",
     "comment"},
    {"rust", "::", "function_item macro_definition struct_item enum_item union_item type_item", "",
     "impl_item trait_item", "", "", "line_comment block_comment attribute_item"},
    {"java", ".", "method_declaration constructor_declaration compact_constructor_declaration", "",
     "class_declaration interface_declaration enum_declaration record_declaration "
     "annotation_type_declaration",
     "", "", "line_comment block_comment"},
};
/* Rust `mod m;` has no body: mod_item is a container only with one (listed separately). */
static const char *const body_containers[] = {"mod_item", NULL};

enum {
    GRAMMAR_C,
    GRAMMAR_CPP,
    GRAMMAR_PYTHON,
    GRAMMAR_JAVASCRIPT,
    GRAMMAR_TYPESCRIPT,
    GRAMMAR_TSX,
    GRAMMAR_GO,
    GRAMMAR_RUST,
    GRAMMAR_JAVA,
    GRAMMAR_COUNT,
};

struct ext_map {
    const char *ext; /* ".py", or a whole file name without a dot prefix */
    const char *language;
};

/* Extensions and well-known file names.  Language names for text files only label chunks. */
static const struct ext_map ext_maps[] = {
    {".c", "c"},
    {".h", "c"},
    {".cc", "cpp"},
    {".cpp", "cpp"},
    {".cxx", "cpp"},
    {".c++", "cpp"},
    {".hh", "cpp"},
    {".hpp", "cpp"},
    {".hxx", "cpp"},
    {".h++", "cpp"},
    {".ipp", "cpp"},
    {".tcc", "cpp"},
    {".inl", "cpp"},
    {".cu", "cpp"},
    {".cuh", "cpp"},
    {".py", "python"},
    {".pyi", "python"},
    {".pyw", "python"},
    {".js", "javascript"},
    {".mjs", "javascript"},
    {".cjs", "javascript"},
    {".jsx", "javascript"},
    {".ts", "typescript"},
    {".mts", "typescript"},
    {".cts", "typescript"},
    {".tsx", "tsx"},
    {".go", "go"},
    {".rs", "rust"},
    {".java", "java"},
    {".md", "markdown"},
    {".markdown", "markdown"},
    {".rst", "rst"},
    {".txt", "text"},
    {".sh", "shell"},
    {".bash", "shell"},
    {".zsh", "shell"},
    {".yml", "yaml"},
    {".yaml", "yaml"},
    {".json", "json"},
    {".toml", "toml"},
    {".ini", "ini"},
    {".cfg", "ini"},
    {".html", "html"},
    {".htm", "html"},
    {".css", "css"},
    {".scss", "css"},
    {".xml", "xml"},
    {".sql", "sql"},
    {".lua", "lua"},
    {".rb", "ruby"},
    {".pl", "perl"},
    {".pm", "perl"},
    {".php", "php"},
    {".cs", "csharp"},
    {".kt", "kotlin"},
    {".kts", "kotlin"},
    {".swift", "swift"},
    {".scala", "scala"},
    {".hs", "haskell"},
    {".ml", "ocaml"},
    {".ex", "elixir"},
    {".exs", "elixir"},
    {".erl", "erlang"},
    {".r", "r"},
    {".jl", "julia"},
    {".vim", "vim"},
    {".nix", "nix"},
    {".proto", "protobuf"},
    {".cmake", "cmake"},
    {".mk", "make"},
    {".tex", "tex"},
    {".zig", "zig"},
    {".lisp", "lisp"},
    {".el", "lisp"},
    {".clj", "clojure"},
    {".dart", "dart"},
    {".m", "objc"},
    {".mm", "objc"},
    {".s", "asm"},
    {".asm", "asm"},
    {".cu", "cpp"},
    {".f90", "fortran"},
    {"Makefile", "make"},
    {"GNUmakefile", "make"},
    {"makefile", "make"},
    {"CMakeLists.txt", "cmake"},
    {"meson.build", "meson"},
    {"meson.options", "meson"},
    {"meson_options.txt", "meson"},
    {"Dockerfile", "dockerfile"},
    {"README", "text"},
};

/* Interpreter names in a "#!" line. */
static const struct ext_map shebang_maps[] = {
    {"python", "python"},   {"python3", "python"},     {"python2", "python"},
    {"node", "javascript"}, {"nodejs", "javascript"},  {"sh", "shell"},
    {"bash", "shell"},      {"zsh", "shell"},          {"dash", "shell"},
    {"ksh", "shell"},       {"perl", "perl"},          {"ruby", "ruby"},
    {"lua", "lua"},         {"ts-node", "typescript"}, {"deno", "typescript"},
};

static int grammar_index(const char *language)
{
    if (!language)
        return -1;
    for (size_t i = 0; i < ELEMENTSOF(grammar_specs); i++)
        if (strcmp(grammar_specs[i].name, language) == 0)
            return (int)i;
    return -1;
}

bool chunker_has_grammars(void)
{
#ifdef COARCH_HAVE_TREE_SITTER
    return true;
#else
    return false;
#endif
}

bool chunk_language_has_grammar(const char *language)
{
    return chunker_has_grammars() && grammar_index(language) >= 0;
}

static const char *language_by_shebang(const char *content, size_t len)
{
    const char *end, *p, *name;
    size_t n;

    if (!content || len < 3 || content[0] != '#' || content[1] != '!')
        return NULL;
    end = memchr(content, '\n', MIN(len, (size_t)256));
    if (!end)
        end = content + MIN(len, (size_t)256);
    /* The interpreter is the last path component of the first word, or the word after env. */
    p = content + 2;
    for (int word = 0; word < 3; word++) {
        while (p < end && (*p == ' ' || *p == '\t'))
            p++;
        name = p;
        while (p < end && *p != ' ' && *p != '\t' && *p != '\r')
            p++;
        for (const char *q = name; q < p; q++)
            if (*q == '/')
                name = q + 1;
        n = (size_t)(p - name);
        if (n == 3 && memcmp(name, "env", 3) == 0)
            continue;
        if (n > 0 && name[0] == '-') /* env -S */
            continue;
        /* python3.11 -> python3: ignore a trailing version. */
        while (n > 0 && ((name[n - 1] >= '0' && name[n - 1] <= '9') || name[n - 1] == '.'))
            n--;
        for (size_t i = 0; i < ELEMENTSOF(shebang_maps); i++) {
            size_t m = strlen(shebang_maps[i].ext);
            if (m == n && memcmp(shebang_maps[i].ext, name, n) == 0)
                return shebang_maps[i].language;
            /* "python3" with its digit stripped is "python". */
        }
        return NULL;
    }
    return NULL;
}

const char *chunk_detect_language(const char *path, const char *content, size_t len)
{
    const char *base, *dot, *lang;

    if (path) {
        base = strrchr(path, '/');
        base = base ? base + 1 : path;
        for (size_t i = 0; i < ELEMENTSOF(ext_maps); i++)
            if (ext_maps[i].ext[0] != '.' && strcmp(base, ext_maps[i].ext) == 0)
                return ext_maps[i].language;
        dot = strrchr(base, '.');
        if (dot && dot != base) {
            for (size_t i = 0; i < ELEMENTSOF(ext_maps); i++)
                if (ext_maps[i].ext[0] == '.' && strcasecmp(dot, ext_maps[i].ext) == 0)
                    return ext_maps[i].language;
        }
    }
    lang = language_by_shebang(content, len);
    return lang ? lang : "text";
}

/* The static name for a language the caller forces; NULL when unknown. */
static const char *language_canonical(const char *language)
{
    int g = grammar_index(language);

    if (g >= 0)
        return grammar_specs[g].name;
    for (size_t i = 0; i < ELEMENTSOF(ext_maps); i++)
        if (strcmp(ext_maps[i].language, language) == 0)
            return ext_maps[i].language;
    return NULL;
}

/* ---- options, UTF-8, tokens ----------------------------------------------------------------- */

void chunk_options_init(struct chunk_options *opt)
{
    *opt = (struct chunk_options){
        .max_tokens = 256,
        .merge_tokens = 256,
        .min_tokens = 48,
        .max_lines = 80,
        .window_lines = 40,
        .window_overlap = 5,
        .max_file_bytes = 16u << 20,
        .max_parse_bytes = 4u << 20,
        .parse_timeout_us = 2000000,
        .max_chunks = 65536,
    };
}

/* Length of the valid UTF-8 sequence at s (1..4), or 0 when invalid or a NUL byte. */
static size_t utf8_valid_len(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];

    if (c == 0)
        return 0;
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        return n >= 2 && (s[1] & 0xc0) == 0x80 ? 2 : 0;
    if (c >= 0xe0 && c <= 0xef) {
        if (n < 3 || (s[1] & 0xc0) != 0x80 || (s[2] & 0xc0) != 0x80)
            return 0;
        if ((c == 0xe0 && s[1] < 0xa0) || (c == 0xed && s[1] >= 0xa0))
            return 0; /* overlong, surrogate */
        return 3;
    }
    if (c >= 0xf0 && c <= 0xf4) {
        if (n < 4 || (s[1] & 0xc0) != 0x80 || (s[2] & 0xc0) != 0x80 || (s[3] & 0xc0) != 0x80)
            return 0;
        if ((c == 0xf0 && s[1] < 0x90) || (c == 0xf4 && s[1] >= 0x90))
            return 0; /* overlong, > U+10FFFF */
        return 4;
    }
    return 0;
}

static bool utf8_is_clean(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0, k;

    while (i < n) {
        if (p[i] >= 0x01 && p[i] < 0x80) {
            i++;
            continue;
        }
        k = utf8_valid_len(p + i, n - i);
        if (k == 0)
            return false;
        i += k;
    }
    return true;
}

/* Copy n bytes of s to dst as valid UTF-8 (invalid bytes and NUL -> U+FFFD); returns the length.
 * dst must hold 3 * n bytes. */
static size_t utf8_sanitize(char *dst, const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0, o = 0, k;

    while (i < n) {
        if (p[i] >= 0x01 && p[i] < 0x80) {
            dst[o++] = (char)p[i++];
            continue;
        }
        k = utf8_valid_len(p + i, n - i);
        if (k == 0) {
            memcpy(dst + o, "\xef\xbf\xbd", 3);
            o += 3;
            i++;
        } else {
            memcpy(dst + o, p + i, k);
            o += k;
            i += k;
        }
    }
    return o;
}

static bool is_alnum_ascii(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/*
 * The default token count: BERT's basic tokenizer splits on whitespace and on every ASCII
 * punctuation character ('_' included), then WordPiece splits words into vocabulary pieces.
 * Each punctuation character and each non-ASCII character is one token; a word of L letters is
 * estimated at 1 + (L - 1) / 4 pieces, which stays above the real count for typical code
 * identifiers (checked against all-MiniLM-L6-v2's vocabulary in tests/unit/test-chunk.c's notes).
 */
static size_t estimate_tokens(void *ctx, const char *text, size_t len)
{
    const unsigned char *p = (const unsigned char *)text;
    size_t i = 0, t = 0, run;

    (void)ctx;
    while (i < len) {
        unsigned char c = p[i];
        if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v') {
            i++;
        } else if (is_alnum_ascii(c)) {
            run = 0;
            while (i < len && is_alnum_ascii(p[i])) {
                run++;
                i++;
            }
            t += 1 + (run - 1) / 4;
        } else if (c < 0x80) {
            t++;
            i++;
        } else {
            /* One token per code point: skip continuation bytes. */
            t++;
            i++;
            while (i < len && (p[i] & 0xc0) == 0x80)
                i++;
        }
    }
    return t;
}

/* ---- symbols ------------------------------------------------------------------------------- */

/* All symbols of one file live in one growable buffer and are named by offset. */
struct strpool {
    char *buf;
    size_t len, cap;
};

static int strpool_add(struct strpool *sp, const char *s, size_t n, uint32_t *ret)
{
    int r = array_grow((void **)&sp->buf, &sp->cap, sp->len + n + 1, 1);

    if (r < 0)
        return r;
    if (sp->len > UINT32_MAX - n - 1)
        return -EFBIG;
    memcpy(sp->buf + sp->len, s, n);
    sp->buf[sp->len + n] = '\0';
    *ret = (uint32_t)sp->len;
    sp->len += n + 1;
    return 0;
}

static const char *strpool_get(const struct strpool *sp, uint32_t off)
{
    return sp->buf ? sp->buf + off : "";
}

/* ---- per-file state ------------------------------------------------------------------------ */

enum {
    LINE_BLANK = 1 << 0,
    LINE_NO_CUT = 1 << 1, /* a piece may not end after this line */
    LINE_DIRTY = 1 << 2,  /* holds invalid UTF-8 or NUL */
};

struct file {
    const char *src;
    size_t len;
    const char *path;
    const char *language;
    const struct chunk_options *opt;
    uint32_t n_lines;
    uint32_t *start; /* n_lines + 1 offsets; line i is [start[i], start[i + 1]) with its '\n' */
    uint32_t *tok;   /* n_lines + 1 prefix sums of per-line token counts */
    uint8_t *flags;  /* per line */
    bool clean;      /* the whole content is valid UTF-8 without NUL */
    char *scratch;   /* for sanitizing one line or piece before counting */
    size_t scratch_cap;
    const char *sep;    /* scope separator of the language's symbols: "." or "::" */
    struct strpool *sp; /* symbol names */
    char *header_path;  /* sanitized, possibly shortened path for chunk headers */
    size_t path_tokens; /* tokens of the "file: PATH\n\n" header part */
};

static size_t count_tokens(const struct file *f, const char *s, size_t n)
{
    if (f->opt->count_tokens)
        return f->opt->count_tokens(f->opt->count_ctx, s, n);
    return estimate_tokens(NULL, s, n);
}

static int scratch_reserve(struct file *f, size_t need)
{
    char *p;

    if (need <= f->scratch_cap)
        return 0;
    p = realloc(f->scratch, need);
    if (!p)
        return -ENOMEM;
    f->scratch = p;
    f->scratch_cap = need;
    return 0;
}

/* Tokens of content bytes [a, b), sanitized first when they may be dirty. */
static int count_bytes(struct file *f, size_t a, size_t b, bool dirty, size_t *ret)
{
    size_t n = b - a, m;
    int r;

    if (!dirty) {
        *ret = count_tokens(f, f->src + a, n);
        return 0;
    }
    r = scratch_reserve(f, n * 3 + 1);
    if (r < 0)
        return r;
    m = utf8_sanitize(f->scratch, f->src + a, n);
    *ret = count_tokens(f, f->scratch, m);
    return 0;
}

static size_t line_end_no_nl(const struct file *f, uint32_t i)
{
    size_t e = f->start[i + 1];

    if (e > f->start[i] && f->src[e - 1] == '\n')
        e--;
    return e;
}

static uint32_t range_tokens(const struct file *f, uint32_t a, uint32_t b)
{
    return f->tok[b + 1] - f->tok[a];
}

static bool line_blank(const struct file *f, uint32_t i)
{
    return f->flags[i] & LINE_BLANK;
}

static int file_build_lines(struct file *f)
{
    size_t n = 0, cap, tok_sum = 0, t;
    uint32_t i;
    int r;

    for (const char *p = f->src, *e = f->src + f->len; p < e; p++) {
        p = memchr(p, '\n', (size_t)(e - p));
        if (!p)
            break;
        n++;
    }
    if (f->len > 0 && f->src[f->len - 1] != '\n')
        n++;
    f->n_lines = (uint32_t)n;
    cap = n + 1;
    f->start = array_alloc(cap, sizeof(uint32_t));
    f->tok = array_alloc(cap, sizeof(uint32_t));
    f->flags = array_alloc(cap, sizeof(uint8_t));
    if (!f->start || !f->tok || !f->flags)
        return -ENOMEM;
    f->clean = utf8_is_clean(f->src, f->len);

    i = 0;
    f->start[0] = 0;
    for (size_t off = 0; i < n; i++) {
        const char *nl = memchr(f->src + off, '\n', f->len - off);
        size_t next = nl ? (size_t)(nl - f->src) + 1 : f->len;
        f->start[i + 1] = (uint32_t)next;
        off = next;
    }
    for (i = 0; i < n; i++) {
        size_t a = f->start[i], e = line_end_no_nl(f, i);
        bool blank = true, dirty = false;

        for (size_t k = a; k < e; k++) {
            unsigned char c = (unsigned char)f->src[k];
            if (c != ' ' && c != '\t' && c != '\r' && c != '\f' && c != '\v') {
                blank = false;
                break;
            }
        }
        if (!f->clean)
            dirty = !utf8_is_clean(f->src + a, e - a);
        f->flags[i] = (uint8_t)((blank ? LINE_BLANK : 0) | (dirty ? LINE_DIRTY : 0));
        f->tok[i] = (uint32_t)tok_sum;
        if (blank)
            continue;
        r = count_bytes(f, a, e, dirty, &t);
        if (r < 0)
            return r;
        tok_sum += t;
        if (tok_sum > UINT32_MAX)
            return -EFBIG;
    }
    f->tok[n] = (uint32_t)tok_sum;
    return 0;
}

/* The header path: sanitized, and cut to its last HEADER_PATH_MAX bytes when longer. */
static int file_build_header(struct file *f)
{
    size_t n = strlen(f->path), m, skip = 0;
    _cleanup_free_ char *buf = malloc(n * 3 + 8);
    char *h;

    if (!buf)
        return -ENOMEM;
    m = utf8_sanitize(buf, f->path, n);
    if (m > HEADER_PATH_MAX) {
        skip = m - HEADER_PATH_MAX;
        while (skip < m && ((unsigned char)buf[skip] & 0xc0) == 0x80)
            skip++;
    }
    h = malloc(m - skip + 4);
    if (!h)
        return -ENOMEM;
    if (skip > 0) {
        memcpy(h, "\xe2\x80\xa6", 3); /* U+2026 */
        memcpy(h + 3, buf + skip, m - skip);
        h[m - skip + 3] = '\0';
    } else {
        memcpy(h, buf, m);
        h[m] = '\0';
    }
    f->header_path = h;
    f->path_tokens = count_tokens(f, "file:", 5) + count_tokens(f, h, strlen(h));
    return 0;
}

static size_t symbol_tokens(const struct file *f, const char *sym)
{
    if (!sym || !sym[0])
        return 0;
    return count_tokens(f, "symbol:", 7) + count_tokens(f, sym, strlen(sym));
}

/* Token budget for a piece's code under a header naming `sym`. */
static uint32_t budget_for(const struct file *f, const char *sym)
{
    size_t used = SPECIAL_TOKENS + f->path_tokens + symbol_tokens(f, sym);
    size_t max = f->opt->max_tokens;

    /* A header that leaves less than MIN_BUDGET (an absurd path or symbol) still gets some
     * room for code rather than producing nothing. */
    return (uint32_t)(used + MIN_BUDGET <= max ? max - used : MIN_BUDGET);
}

static void file_release(struct file *f)
{
    free(f->start);
    free(f->tok);
    free(f->flags);
    free(f->scratch);
    free(f->header_path);
}

/* ---- pieces --------------------------------------------------------------------------------- */

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
    bool split; /* part of a unit or line cut in several pieces: never merged */
};

static void piece_set_symbol(struct piece *p, const struct strpool *sp, uint32_t sym)
{
    p->n_syms = 0;
    p->syms_more = false;
    if (strpool_get(sp, sym)[0])
        p->syms[p->n_syms++] = sym;
}

struct pieces {
    struct piece *items;
    size_t n, cap;
};

static int pieces_push(struct pieces *ps, const struct piece *p, size_t max)
{
    int r;

    if (ps->n >= max)
        return -EFBIG;
    r = array_grow((void **)&ps->items, &ps->cap, ps->n + 1, sizeof(struct piece));
    if (r < 0)
        return r;
    ps->items[ps->n++] = *p;
    return 0;
}

static int push_lines(struct file *f, struct pieces *ps, uint32_t a, uint32_t b, uint8_t kind,
                      uint32_t sym, bool split)
{
    struct piece p = {
        .a = a,
        .b = b,
        .byte_a = f->start[a],
        .byte_b = f->start[b + 1],
        .tokens = range_tokens(f, a, b),
        .kind = kind,
        .split = split,
    };
    piece_set_symbol(&p, f->sp, sym);
    return pieces_push(ps, &p, f->opt->max_chunks);
}

static bool is_cut_byte(unsigned char c)
{
    return c == ' ' || c == '\t' || c == ',' || c == ';' || c == ')' || c == '}' || c == ']';
}

/*
 * Cut line i, too long for one chunk, into byte pieces of at most `budget` tokens.  Each cut is
 * first guessed from the line's average bytes per token and then verified, so the line is
 * counted about twice in total rather than once per candidate.  Cuts fall on a UTF-8 character
 * boundary, after a space or separator when one is near.
 */
static int split_long_line(struct file *f, struct pieces *ps, uint32_t i, uint8_t kind,
                           uint32_t sym, uint32_t budget)
{
    size_t a = f->start[i], e = line_end_no_nl(f, i), pos = a;
    bool dirty = f->flags[i] & LINE_DIRTY;
    uint32_t line_tok = MAX(range_tokens(f, i, i), 1u);
    double bytes_per_tok = (double)(e - a) / line_tok;
    int r;

    while (pos < e) {
        size_t want = (size_t)(bytes_per_tok * budget * 0.9) + 1, end, t = 0;

        for (int tries = 0;; tries++) {
            end = want >= e - pos ? e : pos + want;
            if (end < e) {
                size_t back = end;
                while (back > pos + 1 && ((unsigned char)f->src[back] & 0xc0) == 0x80)
                    back--;
                end = back;
                for (size_t k = end; k > pos + 1 && end - k < 64; k--)
                    if (is_cut_byte((unsigned char)f->src[k - 1])) {
                        end = k;
                        break;
                    }
            }
            r = count_bytes(f, pos, end, dirty, &t);
            if (r < 0)
                return r;
            if (t <= budget || end - pos <= 1 || tries >= 16)
                break;
            want = MAX((size_t)((double)(end - pos) * budget / t * 0.9), (size_t)1);
        }
        /* The last piece takes the newline so that byte ranges tile the line. */
        struct piece p = {
            .a = i,
            .b = i,
            .byte_a = pos,
            .byte_b = end == e ? f->start[i + 1] : end,
            .tokens = (uint32_t)MIN(t, (size_t)UINT32_MAX),
            .kind = kind,
            .split = true,
        };
        piece_set_symbol(&p, f->sp, sym);
        r = pieces_push(ps, &p, f->opt->max_chunks);
        if (r < 0)
            return r;
        pos = end;
    }
    return 0;
}

/*
 * Pack lines [a, b] of one region into pieces of at most `budget` tokens and max_lines lines,
 * ending only after lines without LINE_NO_CUT when possible.  Leading and trailing blank lines
 * are left out of pieces.
 */
static int pack_region(struct file *f, struct pieces *ps, uint32_t a, uint32_t b, uint8_t kind,
                       uint32_t sym, uint32_t budget)
{
    uint32_t max_lines = f->opt->max_lines;
    size_t first = ps->n;
    int r;

    while (a <= b && line_blank(f, a))
        a++;
    while (b > a && line_blank(f, b))
        b--;
    if (a > b || (a == b && line_blank(f, a)))
        return 0;

    for (uint32_t s = a; s <= b;) {
        int64_t best = -1, forced = -1;
        uint32_t e;

        while (s <= b && line_blank(f, s))
            s++;
        if (s > b)
            break;
        for (e = s; e <= b && e - s < max_lines && range_tokens(f, s, e) <= budget; e++) {
            if (e == b || !(f->flags[e] & LINE_NO_CUT))
                best = e;
            forced = e;
        }
        if (forced < 0) {
            /* Line s alone is over budget. */
            r = split_long_line(f, ps, s, kind, sym, budget);
            if (r < 0)
                return r;
            s++;
            continue;
        }
        e = (uint32_t)(best >= 0 ? best : forced);
        {
            uint32_t t = e;
            while (t > s && line_blank(f, t))
                t--;
            r = push_lines(f, ps, s, t, kind, sym, false);
            if (r < 0)
                return r;
        }
        s = e + 1;
    }
    if (ps->n - first > 1)
        for (size_t i = first; i < ps->n; i++)
            ps->items[i].split = kind == PIECE_UNIT || ps->items[i].split;
    return 0;
}

/* ---- line windows ---------------------------------------------------------------------------- */

static bool md_heading(const struct file *f, uint32_t i, const char **ret_s, size_t *ret_n)
{
    const char *s = f->src + f->start[i], *e = f->src + line_end_no_nl(f, i);
    const char *p = s;

    while (p < e && *p == '#')
        p++;
    if (p == s || p - s > 6 || (p < e && *p != ' ' && *p != '\t'))
        return false;
    while (p < e && (*p == ' ' || *p == '\t'))
        p++;
    while (e > p && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r' || e[-1] == '#'))
        e--;
    if (p == e)
        return false;
    *ret_s = p;
    *ret_n = (size_t)(e - p);
    return true;
}

/* Symbol text from source bytes: whitespace runs collapsed, valid UTF-8, at most SYMBOL_MAX. */
static int symbol_from_bytes(struct file *f, struct strpool *sp, const char *s, size_t n,
                             uint32_t *ret)
{
    char buf[SYMBOL_MAX * 3 + 4];
    size_t o = 0, m;
    bool space = false;
    int r;

    n = MIN(n, (size_t)SYMBOL_MAX);
    r = scratch_reserve(f, n * 3 + 1);
    if (r < 0)
        return r;
    m = utf8_sanitize(f->scratch, s, n);
    for (size_t i = 0; i < m && o < SYMBOL_MAX; i++) {
        char c = f->scratch[i];
        if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v') {
            space = o > 0;
            continue;
        }
        if (space)
            buf[o++] = ' ';
        space = false;
        if (o < SYMBOL_MAX)
            buf[o++] = c;
    }
    /* Do not end inside a UTF-8 sequence cut by SYMBOL_MAX. */
    if (o > 0) {
        size_t k = o - 1;
        while (k > 0 && ((unsigned char)buf[k] & 0xc0) == 0x80)
            k--;
        if (utf8_valid_len((const unsigned char *)buf + k, o - k) != o - k)
            o = k;
    }
    return strpool_add(sp, buf, o, ret);
}

/*
 * The fallback: windows of window_lines lines (fewer when over budget) sharing window_overlap
 * lines.  Markdown windows carry the nearest heading above them as symbol and prefer to end
 * before a heading.
 */
static int window_file(struct file *f, struct pieces *ps, struct strpool *sp)
{
    const struct chunk_options *o = f->opt;
    bool md = strcmp(f->language, "markdown") == 0;
    uint32_t win = MAX(MIN(o->window_lines, o->max_lines), 1u);
    uint32_t overlap = MIN(o->window_overlap, win - 1);
    uint32_t n = f->n_lines, last, s = 0, heading_scan = 0, sym = 0, budget, next;
    int r;

    r = strpool_add(sp, "", 0, &sym);
    if (r < 0)
        return r;
    last = n;
    while (last > 0 && line_blank(f, last - 1))
        last--;
    if (last == 0)
        return 0;
    last--;
    budget = budget_for(f, "");

    while (s <= last) {
        uint32_t e, t;
        const char *hs;
        size_t hn;

        while (s <= last && line_blank(f, s))
            s++;
        if (s > last)
            break;
        if (md) {
            for (; heading_scan <= s; heading_scan++)
                if (md_heading(f, heading_scan, &hs, &hn)) {
                    r = symbol_from_bytes(f, sp, hs, hn, &sym);
                    if (r < 0)
                        return r;
                }
            budget = budget_for(f, strpool_get(sp, sym));
        }
        if (range_tokens(f, s, s) > budget) {
            r = split_long_line(f, ps, s, PIECE_GLUE, sym, budget);
            if (r < 0)
                return r;
            s++;
            continue;
        }
        for (e = s; e + 1 <= last && e + 1 - s < win && range_tokens(f, s, e + 1) <= budget; e++) {
            if (md && e + 1 - s >= win / 2 && md_heading(f, e + 1, &hs, &hn))
                break;
        }
        t = e;
        while (t > s && line_blank(f, t))
            t--;
        r = push_lines(f, ps, s, t, PIECE_GLUE, sym, true);
        if (r < 0)
            return r;
        if (e >= last)
            break;
        next = e + 1 > overlap && e + 1 - overlap > s ? e + 1 - overlap : e + 1;
        /* In Markdown, overlap never reaches back past a heading: a window starts at it. */
        for (uint32_t k = e; md && k > next && k > s; k--)
            if (md_heading(f, k, &hs, &hn)) {
                next = k;
                break;
            }
        s = next;
    }
    return 0;
}

/* ---- tree walk ---------------------------------------------------------------------------------
 */

#ifdef COARCH_HAVE_TREE_SITTER

const TSLanguage *tree_sitter_c(void);
const TSLanguage *tree_sitter_cpp(void);
const TSLanguage *tree_sitter_python(void);
const TSLanguage *tree_sitter_javascript(void);
const TSLanguage *tree_sitter_typescript(void);
const TSLanguage *tree_sitter_tsx(void);
const TSLanguage *tree_sitter_go(void);
const TSLanguage *tree_sitter_rust(void);
const TSLanguage *tree_sitter_java(void);

static const TSLanguage *(*const grammar_fns[GRAMMAR_COUNT])(void) = {
    [GRAMMAR_C] = tree_sitter_c,
    [GRAMMAR_CPP] = tree_sitter_cpp,
    [GRAMMAR_PYTHON] = tree_sitter_python,
    [GRAMMAR_JAVASCRIPT] = tree_sitter_javascript,
    [GRAMMAR_TYPESCRIPT] = tree_sitter_typescript,
    [GRAMMAR_TSX] = tree_sitter_tsx,
    [GRAMMAR_GO] = tree_sitter_go,
    [GRAMMAR_RUST] = tree_sitter_rust,
    [GRAMMAR_JAVA] = tree_sitter_java,
};

enum {
    NODE_UNIT = 1 << 0,
    NODE_BODY_UNIT = 1 << 1,
    NODE_CONTAINER = 1 << 2,
    NODE_BODY_CONTAINER = 1 << 3,
    NODE_WRAPPER = 1 << 4,
    NODE_VARDECL = 1 << 5,
    NODE_ATTACH = 1 << 6,
    NODE_FUNC_VALUE = 1 << 7, /* arrow_function & co: makes a vardecl a unit */
};

enum field {
    FIELD_NAME,
    FIELD_DECLARATOR,
    FIELD_BODY,
    FIELD_VALUE,
    FIELD_TYPE,
    FIELD_RECEIVER,
    FIELD_PROPERTY,
    FIELD_COUNT,
};

static const char *const field_names[FIELD_COUNT] = {
    [FIELD_NAME] = "name",         [FIELD_DECLARATOR] = "declarator",
    [FIELD_BODY] = "body",         [FIELD_VALUE] = "value",
    [FIELD_TYPE] = "type",         [FIELD_RECEIVER] = "receiver",
    [FIELD_PROPERTY] = "property",
};

/* A grammar's node classification, built on first use: flags indexed by node symbol. */
struct grammar {
    const TSLanguage *ts;
    const struct grammar_spec *spec;
    uint8_t *flags;
    uint32_t n_symbols;
    TSFieldId fields[FIELD_COUNT];
    bool failed;
};

struct chunker {
    TSParser *parser;
    struct grammar grammars[GRAMMAR_COUNT];
};

static void grammar_mark(struct grammar *g, const char *list, uint8_t flag)
{
    const char *p = list;

    while (*p) {
        const char *e;
        size_t n;

        while (*p == ' ')
            p++;
        e = p;
        while (*e && *e != ' ')
            e++;
        n = (size_t)(e - p);
        if (n == 0)
            break;
        /* Several symbols may share a name (aliases): mark all of them. */
        for (uint32_t s = 0; s < g->n_symbols; s++) {
            const char *name = ts_language_symbol_name(g->ts, (TSSymbol)s);
            if (name && strlen(name) == n && memcmp(name, p, n) == 0 &&
                ts_language_symbol_type(g->ts, (TSSymbol)s) == TSSymbolTypeRegular)
                g->flags[s] |= flag;
        }
        p = e;
    }
}

static int grammar_load(struct chunker *c, int idx, struct grammar **ret)
{
    struct grammar *g = &c->grammars[idx];
    const struct grammar_spec *spec = &grammar_specs[idx];

    if (g->failed)
        return -ENOTSUP;
    if (!g->flags) {
        g->ts = grammar_fns[idx]();
        g->spec = spec;
        if (!g->ts) {
            g->failed = true;
            return -ENOTSUP;
        }
        g->n_symbols = ts_language_symbol_count(g->ts);
        g->flags = calloc(MAX(g->n_symbols, 1u), 1);
        if (!g->flags)
            return -ENOMEM;
        grammar_mark(g, spec->units, NODE_UNIT);
        grammar_mark(g, spec->body_units, NODE_BODY_UNIT);
        grammar_mark(g, spec->containers, NODE_CONTAINER);
        for (size_t i = 0; body_containers[i]; i++)
            grammar_mark(g, body_containers[i], NODE_BODY_CONTAINER);
        grammar_mark(g, spec->wrappers, NODE_WRAPPER);
        grammar_mark(g, spec->vardecls, NODE_VARDECL);
        grammar_mark(g, spec->attach, NODE_ATTACH);
        grammar_mark(g,
                     "arrow_function function_expression function generator_function "
                     "generator_function_expression",
                     NODE_FUNC_VALUE);
        for (int i = 0; i < FIELD_COUNT; i++)
            g->fields[i] = ts_language_field_id_for_name(g->ts, field_names[i],
                                                         (uint32_t)strlen(field_names[i]));
    }
    if (!ts_parser_set_language(c->parser, g->ts)) {
        /* An ABI the runtime does not support: window files of this language. */
        g->failed = true;
        return -ENOTSUP;
    }
    *ret = g;
    return 0;
}

int chunker_new(struct chunker **ret)
{
    struct chunker *c = calloc(1, sizeof(*c));

    if (!c)
        return -ENOMEM;
    c->parser = ts_parser_new();
    if (!c->parser) {
        free(c);
        return -ENOMEM;
    }
    *ret = c;
    return 0;
}

struct chunker *chunker_free(struct chunker *c)
{
    if (!c)
        return NULL;
    if (c->parser)
        ts_parser_delete(c->parser);
    for (int i = 0; i < GRAMMAR_COUNT; i++)
        free(c->grammars[i].flags);
    free(c);
    return NULL;
}

enum node_kind {
    KIND_GLUE,
    KIND_UNIT,
    KIND_CONTAINER,
    KIND_DESCEND, /* not a unit, but has units inside */
};

enum region_kind {
    REGION_GLUE = PIECE_GLUE,
    REGION_UNIT = PIECE_UNIT,
};

struct walk {
    struct file *f;
    struct grammar *g;
    struct pieces *ps;
    struct strpool *sp;
    uint32_t next_line; /* first line no region owns yet */
    /* Pending glue: lines [glue_a, glue_b] not yet emitted. */
    bool glue_open;
    uint32_t glue_a, glue_b;
    int64_t attach_a;    /* first line of the trailing run of attachable nodes, or -1 */
    int64_t force_start; /* a container's first line, for the first glue inside it, or -1 */
    int r;
};

static uint8_t node_flags(const struct walk *w, TSNode n)
{
    TSSymbol s = ts_node_symbol(n);

    return s < w->g->n_symbols ? w->g->flags[s] : 0;
}

static TSNode node_field(const struct walk *w, TSNode n, enum field fid)
{
    TSFieldId id = w->g->fields[fid];

    if (id == 0) {
        TSNode none = {{0}, NULL, NULL};
        return none;
    }
    return ts_node_child_by_field_id(n, id);
}

/* Lines of a node, 0-based inclusive; a node ending just after a '\n' ends on the line before. */
static void node_lines(const struct walk *w, TSNode n, uint32_t *ret_a, uint32_t *ret_b)
{
    TSPoint s = ts_node_start_point(n), e = ts_node_end_point(n);
    uint32_t last = w->f->n_lines ? w->f->n_lines - 1 : 0;
    uint32_t a = s.row, b = e.row;

    if (e.column == 0 && b > a)
        b--;
    *ret_a = MIN(a, last);
    *ret_b = MAX(MIN(b, last), *ret_a);
}

static bool binds_function(const struct walk *w, TSNode n)
{
    TSNode v = node_field(w, n, FIELD_VALUE);
    uint32_t count;

    if (!ts_node_is_null(v))
        return node_flags(w, v) & NODE_FUNC_VALUE;
    /* lexical_declaration: look at its declarators. */
    count = ts_node_named_child_count(n);
    for (uint32_t i = 0; i < count && i < 8; i++) {
        TSNode d = ts_node_named_child(n, i);
        TSNode dv = node_field(w, d, FIELD_VALUE);
        if (!ts_node_is_null(dv) && (node_flags(w, dv) & NODE_FUNC_VALUE))
            return true;
    }
    return false;
}

static enum node_kind classify_basic(const struct walk *w, TSNode n, TSNode *ret_inner);

/* A wrapper's inner definition: its first named child that is a unit or container. */
static enum node_kind classify_wrapper(const struct walk *w, TSNode n, TSNode *ret_inner)
{
    uint32_t count = ts_node_named_child_count(n);

    for (uint32_t i = 0; i < count && i < 16; i++) {
        TSNode ch = ts_node_named_child(n, i), inner;
        enum node_kind k;

        if (node_flags(w, ch) & NODE_WRAPPER)
            continue; /* no wrappers in wrappers: bounded work */
        k = classify_basic(w, ch, &inner);
        if (k == KIND_UNIT || k == KIND_CONTAINER) {
            *ret_inner = inner;
            return k;
        }
    }
    return KIND_GLUE;
}

static enum node_kind classify_basic(const struct walk *w, TSNode n, TSNode *ret_inner)
{
    uint8_t fl = node_flags(w, n);

    *ret_inner = n;
    if (fl & NODE_WRAPPER)
        return classify_wrapper(w, n, ret_inner);
    if (fl & NODE_UNIT)
        return KIND_UNIT;
    if ((fl & (NODE_BODY_UNIT | NODE_BODY_CONTAINER)) &&
        ts_node_is_null(node_field(w, n, FIELD_BODY)))
        return KIND_GLUE;
    if (fl & NODE_BODY_UNIT)
        return KIND_UNIT;
    if (fl & (NODE_CONTAINER | NODE_BODY_CONTAINER))
        return KIND_CONTAINER;
    if ((fl & NODE_VARDECL) && binds_function(w, n))
        return KIND_UNIT;
    return KIND_GLUE;
}

static bool contains_unit(const struct walk *w, TSNode n, int depth)
{
    TSTreeCursor cur;
    bool found = false;

    if (depth <= 0 || ts_node_child_count(n) == 0)
        return false;
    cur = ts_tree_cursor_new(n);
    if (ts_tree_cursor_goto_first_child(&cur)) {
        do {
            TSNode ch = ts_tree_cursor_current_node(&cur), inner;
            enum node_kind k;

            if (!ts_node_is_named(ch))
                continue;
            k = classify_basic(w, ch, &inner);
            if (k == KIND_UNIT || k == KIND_CONTAINER || contains_unit(w, ch, depth - 1)) {
                found = true;
                break;
            }
        } while (ts_tree_cursor_goto_next_sibling(&cur));
    }
    ts_tree_cursor_delete(&cur);
    return found;
}

static enum node_kind classify(const struct walk *w, TSNode n, TSNode *ret_inner)
{
    enum node_kind k = classify_basic(w, n, ret_inner);

    if (k == KIND_GLUE && contains_unit(w, n, CONTAINS_UNIT_DEPTH))
        return KIND_DESCEND;
    return k;
}

/* The node holding a definition's name: its name field, or the innermost C declarator. */
static TSNode name_node(const struct walk *w, TSNode n)
{
    TSNode none = {{0}, NULL, NULL}, d;

    d = node_field(w, n, FIELD_NAME);
    if (!ts_node_is_null(d))
        return d;
    d = node_field(w, n, FIELD_DECLARATOR);
    for (int i = 0; i < 16 && !ts_node_is_null(d); i++) {
        TSNode next = node_field(w, d, FIELD_DECLARATOR);
        if (ts_node_is_null(next))
            return d;
        d = next;
    }
    d = node_field(w, n, FIELD_PROPERTY); /* JS class field */
    if (!ts_node_is_null(d))
        return d;
    d = node_field(w, n, FIELD_TYPE); /* Rust impl */
    if (!ts_node_is_null(d))
        return d;
    /* Go type_declaration, JS lexical_declaration: the first named child's name. */
    if (ts_node_named_child_count(n) > 0) {
        TSNode ch = ts_node_named_child(n, 0);
        d = node_field(w, ch, FIELD_NAME);
        if (!ts_node_is_null(d))
            return d;
    }
    return none;
}

/* Go: the receiver's type name (T in `func (t *T) M()`), else a null node. */
static TSNode receiver_type(const struct walk *w, TSNode n)
{
    TSNode none = {{0}, NULL, NULL}, r = node_field(w, n, FIELD_RECEIVER);

    for (int depth = 0; depth < 6 && !ts_node_is_null(r); depth++) {
        TSNode t = node_field(w, r, FIELD_TYPE);
        if (ts_node_is_null(t)) {
            if (ts_node_named_child_count(r) == 0)
                break;
            t = ts_node_named_child(r, 0);
        }
        if (ts_node_named_child_count(t) == 0)
            return t;
        r = t;
    }
    return none;
}

/* scope + sep + name of definition n, into the pool; the scope alone for anonymous ones. */
static int make_symbol(struct walk *w, TSNode n, uint32_t scope, uint32_t *ret)
{
    const char *sc, *sep = w->g->spec->sep;
    TSNode nn = name_node(w, n), recv = receiver_type(w, n);
    char buf[SYMBOL_MAX * 2 + 16];
    size_t o = 0;
    uint32_t name_off, recv_off;
    int r;

    if (ts_node_is_null(nn)) {
        *ret = scope;
        return 0;
    }
    r = symbol_from_bytes(w->f, w->sp, w->f->src + ts_node_start_byte(nn),
                          ts_node_end_byte(nn) - ts_node_start_byte(nn), &name_off);
    if (r < 0)
        return r;
    if (!ts_node_is_null(recv)) {
        r = symbol_from_bytes(w->f, w->sp, w->f->src + ts_node_start_byte(recv),
                              ts_node_end_byte(recv) - ts_node_start_byte(recv), &recv_off);
        if (r < 0)
            return r;
    }
    sc = strpool_get(w->sp, scope); /* the pool may have moved */
    if (sc[0]) {
        o += (size_t)snprintf(buf, sizeof(buf), "%s%s", sc, sep);
        o = MIN(o, sizeof(buf) - 1);
    }
    if (!ts_node_is_null(recv)) {
        o += (size_t)snprintf(buf + o, sizeof(buf) - o, "%s%s", strpool_get(w->sp, recv_off), sep);
        o = MIN(o, sizeof(buf) - 1);
    }
    o += (size_t)snprintf(buf + o, sizeof(buf) - o, "%s", strpool_get(w->sp, name_off));
    o = MIN(o, sizeof(buf) - 1);
    /* Long scopes keep their tail: the innermost names say the most. */
    if (o > SYMBOL_MAX) {
        size_t skip = o - SYMBOL_MAX;
        while (skip < o && ((unsigned char)buf[skip] & 0xc0) == 0x80)
            skip++;
        return strpool_add(w->sp, buf + skip, o - skip, ret);
    }
    return strpool_add(w->sp, buf, o, ret);
}

static bool lines_fit(const struct file *f, uint32_t a, uint32_t b, uint32_t budget)
{
    return b - a < f->opt->max_lines && range_tokens(f, a, b) <= budget;
}

/*
 * Mark where pieces may not end inside n: a node that fits the budget is atomic (no cut between
 * its lines); one that does not fit opens the breaks between its children.
 */
static void mark_cuts(struct walk *w, TSNode n, uint32_t budget, int depth)
{
    struct file *f = w->f;
    uint32_t a, b;
    TSTreeCursor cur;

    node_lines(w, n, &a, &b);
    if (a == b)
        return;
    if (depth >= WALK_MAX_DEPTH || ts_node_child_count(n) == 0 || lines_fit(f, a, b, budget)) {
        for (uint32_t i = a; i < b; i++)
            f->flags[i] |= LINE_NO_CUT;
        return;
    }
    cur = ts_tree_cursor_new(n);
    if (ts_tree_cursor_goto_first_child(&cur)) {
        do
            mark_cuts(w, ts_tree_cursor_current_node(&cur), budget, depth + 1);
        while (ts_tree_cursor_goto_next_sibling(&cur));
    }
    ts_tree_cursor_delete(&cur);
}

static void add_region(struct walk *w, uint32_t a, uint32_t b, uint8_t kind, uint32_t sym)
{
    int r;

    if (w->r < 0)
        return;
    a = MAX(a, w->next_line);
    if (a > b)
        return;
    r = pack_region(w->f, w->ps, a, b, kind, sym, budget_for(w->f, strpool_get(w->sp, sym)));
    if (r < 0)
        w->r = r;
    w->next_line = b + 1;
}

/*
 * Emit pending glue that ends before line `until`.  With `attach`, a trailing run of comments
 * or attributes directly above `until` is left for the unit starting there; returns the line
 * that unit should start at.
 */
static uint32_t flush_glue(struct walk *w, uint32_t until, bool attach, uint32_t scope)
{
    uint32_t start = until;
    int64_t end;

    if (!w->glue_open)
        return until;
    w->glue_open = false;
    end = w->glue_b;
    if (attach && w->attach_a >= 0 && (int64_t)until <= (int64_t)w->glue_b + 1) {
        start = (uint32_t)w->attach_a;
        end = w->attach_a - 1;
    }
    end = MIN(end, (int64_t)until - 1);
    if (end >= (int64_t)w->glue_a)
        add_region(w, w->glue_a, (uint32_t)end, REGION_GLUE, scope);
    return MIN(start, until);
}

static void glue_add(struct walk *w, TSNode n, uint32_t scope, uint32_t budget)
{
    uint32_t a, b;
    bool attachable = node_flags(w, n) & NODE_ATTACH;

    node_lines(w, n, &a, &b);
    if (b < w->next_line)
        return; /* on a line an earlier region already owns */
    a = MAX(a, w->next_line);
    mark_cuts(w, n, budget, 0);
    if (!w->glue_open) {
        w->glue_open = true;
        w->glue_a = a;
        if (w->force_start >= 0 && (uint32_t)w->force_start < a)
            w->glue_a = MAX((uint32_t)w->force_start, w->next_line);
        w->glue_b = b;
        w->attach_a = attachable ? (int64_t)a : -1;
    } else {
        /* A comment on the line where the previous glue ends trails that code; one after a
         * blank line starts a new run. */
        if (!attachable || a <= w->glue_b)
            w->attach_a = -1;
        else if (w->attach_a < 0 || a > w->glue_b + 1)
            w->attach_a = a;
        w->glue_b = MAX(w->glue_b, b);
    }
    w->force_start = -1;
}

static void walk_children(struct walk *w, TSNode parent, uint32_t scope, int depth);

static void walk_unit(struct walk *w, TSNode outer, TSNode inner, uint32_t scope)
{
    uint32_t a, b, sym, start;
    int r;

    node_lines(w, outer, &a, &b);
    if (b < w->next_line)
        return;
    r = make_symbol(w, inner, scope, &sym);
    if (r < 0) {
        w->r = r;
        return;
    }
    start = flush_glue(w, a, true, scope);
    if (w->force_start >= 0)
        start = MIN(start, (uint32_t)w->force_start);
    w->force_start = -1;
    mark_cuts(w, outer, budget_for(w->f, strpool_get(w->sp, sym)), 0);
    add_region(w, start, b, REGION_UNIT, sym);
}

static void walk_container(struct walk *w, TSNode outer, TSNode inner, uint32_t scope, int depth)
{
    uint32_t a, b, sym, start;
    int r;

    node_lines(w, outer, &a, &b);
    if (b < w->next_line)
        return;
    r = make_symbol(w, inner, scope, &sym);
    if (r < 0) {
        w->r = r;
        return;
    }
    start = flush_glue(w, a, true, scope);
    /* The class header (decorators, doc comment, `class Foo(Base):`) begins the first glue
     * region inside the container, under the container's own symbol. */
    w->force_start = w->force_start >= 0 ? MIN((uint32_t)w->force_start, start) : start;
    walk_children(w, inner, sym, depth + 1);
    w->force_start = -1;
}

static void walk_children(struct walk *w, TSNode parent, uint32_t scope, int depth)
{
    uint32_t budget = budget_for(w->f, strpool_get(w->sp, scope));
    TSTreeCursor cur = ts_tree_cursor_new(parent);

    if (ts_tree_cursor_goto_first_child(&cur)) {
        do {
            TSNode ch = ts_tree_cursor_current_node(&cur), inner;
            enum node_kind k = depth >= WALK_MAX_DEPTH ? KIND_GLUE : classify(w, ch, &inner);

            if (w->r < 0)
                break;
            switch (k) {
            case KIND_UNIT:
                walk_unit(w, ch, inner, scope);
                break;
            case KIND_CONTAINER:
                walk_container(w, ch, inner, scope, depth);
                break;
            case KIND_DESCEND:
                /* Same scope: pending glue simply continues into it. */
                walk_children(w, ch, scope, depth + 1);
                break;
            case KIND_GLUE:
                glue_add(w, ch, scope, budget);
                break;
            }
        } while (ts_tree_cursor_goto_next_sibling(&cur));
    }
    ts_tree_cursor_delete(&cur);
    flush_glue(w, UINT32_MAX, false, scope);
}

struct parse_input {
    const char *src;
    uint32_t len;
};

static const char *parse_read(void *payload, uint32_t byte, TSPoint pos, uint32_t *bytes_read)
{
    const struct parse_input *in = payload;

    (void)pos;
    if (byte >= in->len) {
        *bytes_read = 0;
        return "";
    }
    *bytes_read = in->len - byte;
    return in->src + byte;
}

static uint64_t now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static bool parse_progress(TSParseState *st)
{
    const uint64_t *deadline = st->payload;

    return now_us() > *deadline; /* true cancels the parse */
}

/*
 * Chunk along the syntax tree.  Returns 0, -ENOTSUP when the file should be windowed instead
 * (no usable grammar, parse cancelled), or another negative errno.
 */
static int chunk_tree(struct chunker *c, struct file *f, struct pieces *ps, struct strpool *sp)
{
    int idx = grammar_index(f->language), r;
    struct grammar *g;
    struct parse_input in = {f->src, (uint32_t)f->len};
    uint64_t deadline = now_us() + f->opt->parse_timeout_us;
    TSInput input = {&in, parse_read, TSInputEncodingUTF8, NULL};
    TSParseOptions popt = {&deadline, parse_progress};
    TSTree *tree;
    uint32_t root_scope;

    if (idx < 0 || f->len > f->opt->max_parse_bytes)
        return -ENOTSUP;
    r = grammar_load(c, idx, &g);
    if (r < 0)
        return r;
    ts_parser_reset(c->parser);
    tree = ts_parser_parse_with_options(c->parser, NULL, input, popt);
    if (!tree) {
        ts_parser_reset(c->parser);
        return -ENOTSUP;
    }
    r = strpool_add(sp, "", 0, &root_scope);
    if (r >= 0) {
        struct walk w = {
            .f = f,
            .g = g,
            .ps = ps,
            .sp = sp,
            .attach_a = -1,
            .force_start = -1,
        };
        walk_children(&w, ts_tree_root_node(tree), root_scope, 0);
        r = w.r;
        /* Lines after the last node: only whitespace, by construction, but keep the promise
         * that no non-blank line is lost even if a grammar leaves text outside every node. */
        if (r >= 0 && w.next_line < f->n_lines)
            add_region(&w, w.next_line, f->n_lines - 1, REGION_GLUE, root_scope);
        if (r >= 0)
            r = w.r;
    }
    ts_tree_delete(tree);
    return r;
}

#else /* !COARCH_HAVE_TREE_SITTER */

struct chunker {
    int unused;
};

int chunker_new(struct chunker **ret)
{
    struct chunker *c = calloc(1, sizeof(*c));

    if (!c)
        return -ENOMEM;
    *ret = c;
    return 0;
}

struct chunker *chunker_free(struct chunker *c)
{
    free(c);
    return NULL;
}

static int chunk_tree(struct chunker *c, struct file *f, struct pieces *ps, struct strpool *sp)
{
    (void)c, (void)f, (void)ps, (void)sp;
    return -ENOTSUP;
}

#endif

/* ---- merging and output ------------------------------------------------------------------------
 */

/* Length of the scope part of a symbol ("Foo" of "Foo.bar"), 0 when it has none. */
static size_t scope_len(const char *sym, const char *sep)
{
    size_t n = strlen(sep), best = 0;

    for (const char *p = strstr(sym, sep); p; p = strstr(p + n, sep))
        best = (size_t)(p - sym);
    return best;
}

/*
 * Render a piece's symbols as one line, at most SYMBOL_MAX bytes: "Queue._init, _qsize, _put".
 * A name repeating the previous name's scope is shortened to its last part, a class name right
 * before one of its members is left out (the member implies it), and names that do not fit
 * become a final "…".
 */
static size_t render_symbol(const struct file *f, const struct piece *p, char *buf, size_t cap)
{
    static const char ell[] = "\xe2\x80\xa6";
    const char *sep = f->sep, *prev = NULL;
    size_t o = 0, seplen = strlen(sep), prev_scope = 0;
    bool cut = false;

    buf[0] = '\0';
    for (uint8_t i = 0; i < p->n_syms; i++) {
        const char *e = strpool_get(f->sp, p->syms[i]), *text = e;
        size_t el = strlen(e), sl = scope_len(e, sep), tl = el, need;

        if (i + 1 < p->n_syms) {
            const char *nx = strpool_get(f->sp, p->syms[i + 1]);
            if (scope_len(nx, sep) == el && strncmp(nx, e, el) == 0)
                continue;
        }
        if (prev && sl > 0 && sl == prev_scope && strncmp(e, prev, sl) == 0) {
            text = e + sl + seplen;
            tl = el - sl - seplen;
        }
        need = (o ? 2 : 0) + tl;
        if (o + need > SYMBOL_MAX || o + need + 1 > cap) {
            cut = true;
            break;
        }
        if (o) {
            memcpy(buf + o, ", ", 2);
            o += 2;
        }
        memcpy(buf + o, text, tl);
        o += tl;
        prev = e;
        prev_scope = sl;
    }
    if ((cut || p->syms_more) && o + 2 + sizeof(ell) <= cap) {
        if (o) {
            memcpy(buf + o, ", ", 2);
            o += 2;
        }
        memcpy(buf + o, ell, sizeof(ell) - 1);
        o += sizeof(ell) - 1;
    }
    buf[o] = '\0';
    return o;
}

static size_t header_tokens(const struct file *f, const char *sym)
{
    return SPECIAL_TOKENS + f->path_tokens + symbol_tokens(f, sym);
}

/* Add p's symbols to q's list, skipping names q already has. */
static void merge_symbols(const struct file *f, struct piece *q, const struct piece *p)
{
    for (uint8_t i = 0; i < p->n_syms; i++) {
        const char *e = strpool_get(f->sp, p->syms[i]);
        bool dup = false;

        for (uint8_t k = 0; k < q->n_syms && !dup; k++)
            dup = q->syms[k] == p->syms[i] || strcmp(strpool_get(f->sp, q->syms[k]), e) == 0;
        if (dup)
            continue;
        if (q->n_syms < PIECE_SYMS)
            q->syms[q->n_syms++] = p->syms[i];
        else
            q->syms_more = true;
    }
    q->syms_more = q->syms_more || p->syms_more;
}

/* Merge small neighbouring pieces (code files only), in place. */
static int merge_pieces(struct file *f, struct pieces *ps)
{
    const struct chunk_options *o = f->opt;
    char sym[SYMBOL_MAX + 8];
    size_t out = 0;

    if (o->min_tokens == 0 || ps->n < 2)
        return 0;
    for (size_t i = 1; i < ps->n; i++) {
        struct piece *q = &ps->items[out], *p = &ps->items[i], m;
        bool small;

        small = q->tokens < o->min_tokens || p->tokens < o->min_tokens ||
                (q->kind == PIECE_GLUE && p->kind == PIECE_GLUE);
        if (small && !q->split && !p->split && p->a > q->b && p->b - q->a < o->max_lines) {
            m = *q;
            m.b = p->b;
            m.byte_b = p->byte_b;
            m.tokens = range_tokens(f, q->a, p->b);
            m.kind = q->kind == PIECE_UNIT || p->kind == PIECE_UNIT ? PIECE_UNIT : PIECE_GLUE;
            merge_symbols(f, &m, p);
            render_symbol(f, &m, sym, sizeof(sym));
            if (m.tokens + header_tokens(f, sym) <= o->merge_tokens) {
                *q = m;
                continue;
            }
        }
        ps->items[++out] = *p;
    }
    ps->n = out + 1;
    return 0;
}

static int emit_chunks(struct file *f, const struct pieces *ps, struct chunk_list *out)
{
    char sym[SYMBOL_MAX + 8];

    for (size_t i = 0; i < ps->n; i++) {
        const struct piece *p = &ps->items[i];
        size_t code = p->byte_b - p->byte_a, sl, hl = strlen(f->header_path);
        size_t cap, o;
        struct chunk *ch;
        char *buf;
        int r;

        sl = render_symbol(f, p, sym, sizeof(sym));
        /* header + code (sanitized: up to 3 bytes per byte) + NUL + symbol + NUL */
        if (!size_mul_ok(code, 3, &cap) || !size_add_ok(cap, hl + 2 * sl + 64, &cap))
            return -ENOMEM;
        buf = malloc(cap);
        if (!buf)
            return -ENOMEM;
        o = (size_t)snprintf(buf, cap, "file: %s\n", f->header_path);
        if (sl)
            o += (size_t)snprintf(buf + o, cap - o, "symbol: %s\n", sym);
        buf[o++] = '\n';
        {
            size_t hlen = o;
            if (f->clean) {
                memcpy(buf + o, f->src + p->byte_a, code);
                o += code;
            } else {
                o += utf8_sanitize(buf + o, f->src + p->byte_a, code);
            }
            buf[o] = '\0';
            memcpy(buf + o + 1, sym, sl + 1);
            r = array_grow((void **)&out->items, &out->cap, out->n + 1, sizeof(struct chunk));
            if (r < 0) {
                free(buf);
                return r;
            }
            ch = &out->items[out->n++];
            *ch = (struct chunk){
                .text = buf,
                .text_len = o,
                .header_len = hlen,
                .start_line = p->a + 1,
                .end_line = p->b + 1,
                .start_byte = p->byte_a,
                .end_byte = p->byte_b,
                .language = f->language,
                .symbol = buf + o + 1,
                .n_tokens =
                    (uint32_t)MIN((size_t)p->tokens + header_tokens(f, sym), (size_t)UINT32_MAX),
            };
        }
    }
    return 0;
}

void chunk_list_init(struct chunk_list *l)
{
    *l = (struct chunk_list){0};
}

void chunk_list_release(struct chunk_list *l)
{
    if (!l)
        return;
    for (size_t i = 0; i < l->n; i++)
        free(l->items[i].text); /* symbol lives in the same block */
    free(l->items);
    *l = (struct chunk_list){0};
}

static int options_check(const struct chunk_options *o)
{
    if (o->max_tokens < 32 || o->max_tokens > (1u << 20) || o->max_lines == 0 ||
        o->window_lines == 0 || o->max_chunks == 0 || o->max_file_bytes > UINT32_MAX - 1)
        return -EINVAL;
    return 0;
}

int chunk_file(struct chunker *c, const char *path, const char *content, size_t len,
               const struct chunk_options *opt, struct chunk_list *out)
{
    struct chunk_options defaults;
    struct file f = {0};
    struct pieces ps = {0};
    struct strpool sp = {0};
    struct chunk_list local = {0};
    int r;

    if (!c || !path || (!content && len > 0) || !out)
        return -EINVAL;
    if (!opt) {
        chunk_options_init(&defaults);
        opt = &defaults;
    }
    r = options_check(opt);
    if (r < 0)
        return r;
    if (len > opt->max_file_bytes)
        return -EFBIG;

    f.src = content ? content : "";
    f.sp = &sp;
    f.len = len;
    f.path = path;
    f.opt = opt;
    if (opt->language) {
        f.language = language_canonical(opt->language);
        if (!f.language)
            return -EINVAL;
    } else {
        f.language = chunk_detect_language(path, content, len);
    }
    f.sep = grammar_index(f.language) >= 0 ? grammar_specs[grammar_index(f.language)].sep : ".";

    r = file_build_lines(&f);
    if (r < 0)
        goto out;
    r = file_build_header(&f);
    if (r < 0)
        goto out;
    if (f.n_lines == 0 || f.tok[f.n_lines] == 0)
        goto out; /* empty or blank: no chunks */

    r = chunk_tree(c, &f, &ps, &sp);
    if (r == -ENOTSUP) {
        /* Window instead, from a clean slate (a cancelled walk may have left pieces). */
        ps.n = 0;
        for (uint32_t i = 0; i < f.n_lines; i++)
            f.flags[i] &= (uint8_t)~LINE_NO_CUT;
        r = window_file(&f, &ps, &sp);
    } else if (r >= 0) {
        r = merge_pieces(&f, &ps);
    }
    if (r < 0)
        goto out;
    r = emit_chunks(&f, &ps, &local);
    if (r < 0)
        goto out;

    /* Move the chunks to the caller's list: all or nothing. */
    r = array_grow((void **)&out->items, &out->cap, out->n + local.n, sizeof(struct chunk));
    if (r < 0)
        goto out;
    memcpy(out->items + out->n, local.items, local.n * sizeof(struct chunk));
    out->n += local.n;
    r = (int)MIN(local.n, (size_t)INT32_MAX);
    free(local.items);
    local = (struct chunk_list){0};
out:
    chunk_list_release(&local);
    free(ps.items);
    free(sp.buf);
    file_release(&f);
    return r;
}
