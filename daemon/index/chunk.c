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
 * and their methods become units with "Class.method" symbols.  Each line break gets a cut cost,
 * the number of syntax nodes spanning it: low between statements, higher inside a nested block,
 * higher still inside one statement.  A region that does not fit the budget is packed into pieces
 * cut at the cheapest breaks that keep the pieces well filled (and balanced when two pieces
 * suffice), which is how a large function gets split between its top-level statements when it
 * can, and deeper only when it must.  A single line too long for a chunk is cut by bytes.
 * Finally small neighbouring pieces are grouped up to merge_tokens, so that a hit on a tiny
 * function, a one-line import or a closing brace answers with its neighbours too; each piece is
 * still a chunk of its own, embedded alone (see chunk.h).  The piece holding the line that
 * names a unit gets a title chunk, that line alone, emitted before it.
 *
 * Without a grammar (other text files, a parse that times out, content over max_parse_bytes, a
 * build without tree-sitter) the file is cut into line windows with overlap.
 *
 * Bounds: content over max_file_bytes is refused; parsing is cancelled after parse_timeout_us;
 * tree recursion stops at WALK_MAX_DEPTH (deeper nodes are treated as opaque); line-table memory
 * is 10 bytes per line; the result is capped at max_chunks.
 */
#include "chunk.h"

#include <ctype.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "chunk-int.h"
#include "macro.h"

/* ---- languages ---------------------------------------------------------------------------- */

#define GRAMMAR_NAMES_MAX 32 /* tree-sitter grammars, at most (chunk-tree.c has 10) */

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
    int g = chunk_grammar_index(language);

    if (g >= 0)
        return chunk_grammar_name(g);
    for (size_t i = 0; i < ELEMENTSOF(ext_maps); i++)
        if (strcmp(ext_maps[i].language, language) == 0)
            return ext_maps[i].language;
    return NULL;
}

/* What people type for a language, beyond its own name (matched without regard to case). */
static const struct ext_map language_aliases[] = {
    {"py", "python"},     {"python3", "python"}, {"js", "javascript"}, {"node", "javascript"},
    {"ts", "typescript"}, {"c++", "cpp"},        {"cxx", "cpp"},       {"golang", "go"},
    {"rs", "rust"},       {"sh", "shell"},       {"bash", "shell"},    {"md", "markdown"},
    {"txt", "text"},
};

const char *chunk_language_lookup(const char *name)
{
    char lower[32];
    size_t n = name ? strlen(name) : 0;
    const char *found;

    if (n == 0 || n >= sizeof(lower))
        return NULL;
    for (size_t i = 0; i <= n; i++)
        lower[i] = (char)tolower((unsigned char)name[i]);
    if (strcmp(lower, "text") == 0)
        return "text";
    found = language_canonical(lower);
    for (size_t i = 0; !found && i < ELEMENTSOF(language_aliases); i++)
        if (strcmp(language_aliases[i].ext, lower) == 0)
            found = language_canonical(language_aliases[i].language);
    return found;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

size_t chunk_language_list(const char **ret, size_t max)
{
    const char *all[ELEMENTSOF(ext_maps) + GRAMMAR_NAMES_MAX + 1];
    size_t n = 0, out = 0;

    for (int g = 0; chunk_grammar_name(g) && n < GRAMMAR_NAMES_MAX; g++)
        all[n++] = chunk_grammar_name(g);
    for (size_t i = 0; i < ELEMENTSOF(ext_maps); i++)
        all[n++] = ext_maps[i].language;
    all[n++] = "text";
    qsort(all, n, sizeof(all[0]), cmp_str);
    for (size_t i = 0; i < n; i++)
        if ((i == 0 || strcmp(all[i], all[i - 1]) != 0) && out < max)
            ret[out++] = all[i];
    return out;
}

/*
 * A unit piece gets a title chunk only above this many tokens of code: below, its text is little
 * more than the title (dev set: titles for every unit, hybrid MRR@10 0.514; only above 48
 * tokens, 0.512 with 40% fewer title chunks).
 */
#define TITLE_MIN_TOKENS 48

/* ---- options, UTF-8, tokens ----------------------------------------------------------------- */

#ifndef CHUNK_SEGMENT_BYTES /* overridable to measure other sizes (bench/README.md) */
#define CHUNK_SEGMENT_BYTES (32u << 10)
#endif

void chunk_options_init(struct chunk_options *opt)
{
    *opt = (struct chunk_options){
        .max_tokens = 256,
        .merge_tokens = 256,
        .min_tokens = 64,
        .max_lines = 80,
        .window_lines = 40,
        .window_overlap = 5,
        .max_file_bytes = 16u << 20,
        .max_parse_bytes = 4u << 20,
        .segment_bytes = CHUNK_SEGMENT_BYTES,
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
 * The default token count, for callers without the model's tokenizer: BERT's basic tokenizer
 * splits on whitespace and on every ASCII punctuation character ('_' included), then WordPiece
 * cuts words into vocabulary pieces.  Each punctuation and non-ASCII character counts one token
 * and a word of L letters 1 + (L - 1) / 3.  Against all-MiniLM-L6-v2's real tokenizer on 126k
 * lines of Python and C this is 1.18 times the true total and low for 14% of lines (by more than
 * 10% for 8%): a deliberate overestimate, so that chunks cut with it still fit the model.
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
            t += 1 + (run - 1) / 3;
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

int chunk_pool_add(struct strpool *sp, const char *s, size_t n, uint32_t *ret)
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

const char *chunk_pool_get(const struct strpool *sp, uint32_t off)
{
    return sp->buf ? sp->buf + off : "";
}

/* ---- per-file state ------------------------------------------------------------------------ */

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
    f->cut_cost = calloc(cap, sizeof(uint8_t));
    if (!f->start || !f->tok || !f->flags || !f->cut_cost)
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
uint32_t chunk_budget(const struct file *f, const char *sym)
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
    free(f->cut_cost);
    free(f->scratch);
    free(f->header_path);
}

/* ---- pieces --------------------------------------------------------------------------------- */

static void piece_set_symbol(struct piece *p, const struct strpool *sp, uint32_t sym)
{
    p->n_syms = 0;
    p->syms_more = false;
    if (chunk_pool_get(sp, sym)[0])
        p->syms[p->n_syms++] = sym;
}

static int pieces_push(struct pieces *ps, const struct piece *p, size_t max)
{
    int r;

    if (ps->n >= max)
        return -EFBIG;
    r = array_grow((void **)&ps->items, &ps->cap, ps->n + 1, sizeof(struct piece));
    if (r < 0)
        return r;
    ps->items[ps->n] = *p;
    /* Its own definition until chunk_pack_region() says it is part of a unit's. */
    ps->items[ps->n].def_a = p->a;
    ps->items[ps->n].def_b = p->b;
    ps->items[ps->n].def_byte_a = p->byte_a;
    ps->items[ps->n].def_byte_b = p->byte_b;
    ps->n++;
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

/* Distance of x from the middle of total, for balancing two pieces. */
static uint32_t off_middle(uint32_t x, uint32_t total)
{
    return 2 * x > total ? 2 * x - total : total - 2 * x;
}

/*
 * Where to end a piece that starts at line s, when lines s..emax fit the budget and the region
 * goes on to b: at the break of lowest cost (the fewest syntax nodes spanning it, so between
 * statements rather than inside one), among breaks that keep pieces reasonably full.  When the
 * rest of the region fits one more piece, the two are balanced (each at least a quarter of the
 * total, ties broken towards the middle) so no tiny tail is left; otherwise the piece is at least
 * half full (ties broken towards the end).
 */
static uint32_t choose_cut(const struct file *f, uint32_t s, uint32_t emax, uint32_t b,
                           uint32_t budget)
{
    uint32_t total = range_tokens(f, s, b), max_lines = f->opt->max_lines;
    bool two = total <= 2 * (uint64_t)budget && b - s + 1 <= 2 * max_lines;

    for (int pass = two ? 0 : 1; pass < 2; pass++) {
        int64_t best = -1;
        uint32_t best_cost = UINT32_MAX, best_t1 = 0;

        for (uint32_t k = s; k <= emax; k++) {
            uint32_t t1 = range_tokens(f, s, k), t2 = total - t1, cost = f->cut_cost[k];
            bool ok, better;

            if (pass == 0)
                ok = 4 * (uint64_t)t1 >= total && 4 * (uint64_t)t2 >= total && t2 <= budget &&
                     b - k <= max_lines;
            else
                ok = 2 * (uint64_t)t1 >= budget || 2 * (k - s + 1) >= max_lines;
            if (!ok)
                continue;
            better = cost < best_cost ||
                     (cost == best_cost &&
                      (pass == 1 || off_middle(t1, total) <= off_middle(best_t1, total)));
            if (better) {
                best = k;
                best_cost = cost;
                best_t1 = t1;
            }
        }
        if (best >= 0)
            return (uint32_t)best;
    }
    return emax;
}

/*
 * Pack lines [a, b] of one region into pieces of at most `budget` tokens and max_lines lines,
 * cut where choose_cut() says.  Leading and trailing blank lines are left out of pieces.
 */
int chunk_pack_region(struct file *f, struct pieces *ps, uint32_t a, uint32_t b, uint8_t kind,
                      uint32_t sym, uint32_t budget, uint32_t title)
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
        uint32_t e, t;

        while (s <= b && line_blank(f, s))
            s++;
        if (s > b)
            break;
        if (range_tokens(f, s, s) > budget) {
            /* Line s alone is over budget. */
            r = split_long_line(f, ps, s, kind, sym, budget);
            if (r < 0)
                return r;
            s++;
            continue;
        }
        for (e = s; e < b && e + 1 - s < max_lines && range_tokens(f, s, e + 1) <= budget; e++)
            ;
        if (e < b)
            e = choose_cut(f, s, e, b, budget);
        t = e;
        while (t > s && line_blank(f, t))
            t--;
        r = push_lines(f, ps, s, t, kind, sym, false);
        if (r < 0)
            return r;
        s = e + 1;
    }
    if (ps->n - first > 1)
        for (size_t i = first; i < ps->n; i++)
            ps->items[i].split = kind == PIECE_UNIT || ps->items[i].split;
    /* Every piece of a unit belongs to the whole unit: a search hit on any of them reports the
     * definition, not the leading comment or the middle third it matched. */
    for (size_t i = first; kind == PIECE_UNIT && i < ps->n; i++) {
        ps->items[i].def_a = ps->items[first].a;
        ps->items[i].def_b = ps->items[ps->n - 1].b;
        ps->items[i].def_byte_a = ps->items[first].byte_a;
        ps->items[i].def_byte_b = ps->items[ps->n - 1].byte_b;
    }
    /* The title goes with the piece holding its line, unless that piece is short enough to be
     * nearly its title already (TITLE_MIN_TOKENS) or is the line alone (a one-line unit, a
     * piece of a line too long to be a title). */
    for (size_t i = first; title && i < ps->n; i++)
        if (ps->items[i].a <= title - 1 && title - 1 <= ps->items[i].b &&
            ps->items[i].a < ps->items[i].b && ps->items[i].tokens > TITLE_MIN_TOKENS &&
            ps->items[i].byte_a == f->start[ps->items[i].a] &&
            ps->items[i].byte_b == f->start[ps->items[i].b + 1]) {
            ps->items[i].title = title;
            break;
        }
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
int chunk_symbol_from_bytes(struct file *f, struct strpool *sp, const char *s, size_t n,
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
    return chunk_pool_add(sp, buf, o, ret);
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

    r = chunk_pool_add(sp, "", 0, &sym);
    if (r < 0)
        return r;
    last = n;
    while (last > 0 && line_blank(f, last - 1))
        last--;
    if (last == 0)
        return 0;
    last--;
    budget = chunk_budget(f, "");

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
                    r = chunk_symbol_from_bytes(f, sp, hs, hn, &sym);
                    if (r < 0)
                        return r;
                }
            budget = chunk_budget(f, chunk_pool_get(sp, sym));
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
        if (md && e + 1 <= last && md_heading(f, e + 1, &hs, &hn))
            next = e + 1;
        for (uint32_t k = e; md && k > next && k > s; k--)
            if (md_heading(f, k, &hs, &hn)) {
                next = k;
                break;
            }
        s = next;
    }
    return 0;
}

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
 * Render a piece's symbols as one line, at most SYMBOL_MAX bytes: "Queue._init, _qsize, _put"
 * (a group's, to cost it as if it were one chunk).
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
        const char *e = chunk_pool_get(f->sp, p->syms[i]), *text = e;
        size_t el = strlen(e), sl = scope_len(e, sep), tl = el, need;

        if (i + 1 < p->n_syms) {
            const char *nx = chunk_pool_get(f->sp, p->syms[i + 1]);
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

/* Add p's symbols to q's list, skipping names q already has and scopes of names it has (the
 * closing brace of `impl Counter` adds nothing after "Counter::add"). */
static void merge_symbols(const struct file *f, struct piece *q, const struct piece *p)
{
    size_t seplen = strlen(f->sep);

    for (uint8_t i = 0; i < p->n_syms; i++) {
        const char *e = chunk_pool_get(f->sp, p->syms[i]);
        size_t el = strlen(e);
        bool dup = false;

        for (uint8_t k = 0; k < q->n_syms && !dup; k++) {
            const char *h = chunk_pool_get(f->sp, q->syms[k]);
            dup = q->syms[k] == p->syms[i] || strcmp(h, e) == 0 ||
                  (strncmp(h, e, el) == 0 && strncmp(h + el, f->sep, seplen) == 0);
        }
        if (dup)
            continue;
        if (q->n_syms < PIECE_SYMS)
            q->syms[q->n_syms++] = p->syms[i];
        else
            q->syms_more = true;
    }
    q->syms_more = q->syms_more || p->syms_more;
}

/*
 * Put small neighbouring pieces in groups (code files only): a piece under min_tokens, or
 * two glue pieces in a row, joins the group before it while the group spans under max_lines
 * lines and its code with a header listing all its names stays within merge_tokens.  Pieces are
 * not joined: each stays a chunk of its own, reporting its group's lines (see chunk.h).
 * gs->items[i] is the group of piece i, its symbols merged.
 */
static int group_pieces(struct file *f, const struct pieces *ps, struct pieces *gs)
{
    const struct chunk_options *o = f->opt;
    char sym[SYMBOL_MAX + 8];
    size_t first = 0;
    int r;

    if (ps->n == 0)
        return 0;
    r = array_grow((void **)&gs->items, &gs->cap, ps->n, sizeof(struct piece));
    if (r < 0)
        return r;
    gs->n = ps->n;
    gs->items[0] = ps->items[0];
    for (size_t i = 1; i < ps->n; i++) {
        struct piece *q = &gs->items[first], m;
        const struct piece *p = &ps->items[i];
        bool small;

        small = q->tokens < o->min_tokens || p->tokens < o->min_tokens ||
                (q->kind == PIECE_GLUE && p->kind == PIECE_GLUE);
        if (o->min_tokens > 0 && small && !q->split && !p->split && p->a > q->b &&
            p->b - q->a < o->max_lines) {
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
        /* Piece i starts a group; the previous one is final: copy it to its members. */
        for (size_t k = first + 1; k < i; k++)
            gs->items[k] = gs->items[first];
        first = i;
        gs->items[i] = *p;
    }
    for (size_t k = first + 1; k < ps->n; k++)
        gs->items[k] = gs->items[first];
    return 0;
}

/*
 * Append one chunk: header naming `sym` + code bytes [byte_a, byte_b) as its text, reporting
 * group g's lines and bytes.  The chunk is one allocation holding, in order, its text (header
 * and sanitized code), symbol and path, so chunk_list_release() frees one block.
 */
static int emit_one(struct file *f, const struct piece *g, const struct piece *p, const char *sym,
                    size_t sl, uint32_t unit_a, uint32_t unit_b, size_t byte_a, size_t byte_b,
                    uint32_t tokens, bool title, struct chunk_list *out)
{
    size_t hl = strlen(f->header_path), pl = strlen(f->path), code = byte_b - byte_a, cap, o, hlen;
    const char *code_src = f->src + byte_a;
    char *buf, *sym_copy, *path_copy;
    int r;

    /* Dirty content is sanitized into the scratch buffer first (that may triple it), so the
     * chunk's own buffer is exactly as long as its text: a file's chunks are all held until
     * they are embedded, and for a big file (an 850 KB header: 3,900 chunks) a 3x allowance
     * per chunk was most of the indexer's memory for that file. */
    if (!f->clean) {
        if (!size_mul_ok(code, 3, &cap) || !size_add_ok(cap, 1, &cap))
            return -ENOMEM;
        r = scratch_reserve(f, cap);
        if (r < 0)
            return r;
        code = utf8_sanitize(f->scratch, code_src, code);
        code_src = f->scratch;
    }
    /* "file: " header_path "\n" ["symbol: " sym "\n"] "\n" code NUL sym NUL path NUL */
    hlen = 6 + hl + 1 + (sl ? 8 + sl + 1 : 0) + 1;
    if (!size_add_ok(code, hlen + sl + pl + 3, &cap))
        return -ENOMEM;
    buf = malloc(cap);
    if (!buf)
        return -ENOMEM;
    o = (size_t)snprintf(buf, cap, "file: %s\n", f->header_path);
    if (sl)
        o += (size_t)snprintf(buf + o, cap - o, "symbol: %s\n", sym);
    buf[o++] = '\n';
    if (o != hlen) { /* cannot happen: hlen counts the same bytes */
        free(buf);
        return -EINVAL;
    }
    memcpy(buf + o, code_src, code);
    o += code;
    buf[o] = '\0';
    sym_copy = buf + o + 1;
    memcpy(sym_copy, sym, sl + 1);
    path_copy = sym_copy + sl + 1;
    memcpy(path_copy, f->path, pl + 1);

    r = array_grow((void **)&out->items, &out->cap, out->n + 1, sizeof(struct chunk));
    if (r < 0) {
        free(buf);
        return r;
    }
    out->items[out->n++] = (struct chunk){
        .text = buf,
        .text_len = o,
        .header_len = hlen,
        .path = path_copy,
        .start_line = g->a + 1,
        .end_line = g->b + 1,
        .start_byte = g->byte_a,
        .end_byte = g->byte_b,
        .unit_start_line = unit_a + 1,
        .unit_end_line = unit_b + 1,
        .unit_start_byte = byte_a,
        .unit_end_byte = byte_b,
        .def_start_line = p->def_a + 1,
        .def_end_line = p->def_b + 1,
        .def_start_byte = p->def_byte_a,
        .def_end_byte = p->def_byte_b,
        .title = title,
        .language = f->language,
        .symbol = sym_copy,
        .n_tokens = (uint32_t)MIN((size_t)tokens + header_tokens(f, sym), (size_t)UINT32_MAX),
    };
    return 0;
}

/*
 * The title chunk of piece p, when it has one: the line naming its unit, without the
 * indentation and trailing blanks, after the same header.  A second, short view of a unit:
 * its name and signature embed without the body diluting them (semantic MRR@10 on the shared
 * eval's dev set 0.420 -> 0.449), and as a tiny document it lets BM25 weigh those words up.
 */
static int emit_title(struct file *f, const struct piece *p, const struct piece *g, const char *sym,
                      size_t sl, struct chunk_list *out)
{
    uint32_t line = p->title - 1;
    size_t a = f->start[line], e = line_end_no_nl(f, line), t;
    int r;

    while (a < e && (f->src[a] == ' ' || f->src[a] == '\t'))
        a++;
    while (e > a && (f->src[e - 1] == ' ' || f->src[e - 1] == '\t' || f->src[e - 1] == '\r'))
        e--;
    if (a == e)
        return 0;
    r = count_bytes(f, a, e, f->flags[line] & LINE_DIRTY, &t);
    if (r < 0)
        return r;
    if (t > chunk_budget(f, sym))
        return 0;
    return emit_one(f, g, p, sym, sl, line, line, a, e, (uint32_t)t, true, out);
}

/*
 * Turn pieces into chunks appended to out: piece i's text and symbol, group gs->items[i]'s
 * lines and bytes (gs NULL: each piece is its own group), each unit's title chunk first.
 */
static int emit_chunks(struct file *f, const struct pieces *ps, const struct pieces *gs,
                       struct chunk_list *out)
{
    char sym[SYMBOL_MAX + 8];

    for (size_t i = 0; i < ps->n; i++) {
        const struct piece *p = &ps->items[i], *g = gs ? &gs->items[i] : p;
        size_t sl = render_symbol(f, p, sym, sizeof(sym));
        int r;

        if (p->title) {
            r = emit_title(f, p, g, sym, sl, out);
            if (r < 0)
                return r;
        }
        r = emit_one(f, g, p, sym, sl, p->a, p->b, p->byte_a, p->byte_b, p->tokens, false, out);
        if (r < 0)
            return r;
        if (out->n > f->opt->max_chunks)
            return -EFBIG;
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
        free(l->items[i].text); /* symbol and path live in the same block */
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
    struct pieces ps = {0}, gs = {0};
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
    f.sep = chunk_grammar_sep(chunk_grammar_index(f.language));

    r = file_build_lines(&f);
    if (r < 0)
        goto out;
    r = file_build_header(&f);
    if (r < 0)
        goto out;
    if (f.n_lines == 0 || f.tok[f.n_lines] == 0)
        goto out; /* empty or blank: no chunks */

    r = chunk_tree(c, &f, &ps);
    if (r == -ENOTSUP) {
        /* Window instead, from a clean slate (a cancelled walk may have left pieces). */
        ps.n = 0;
        r = window_file(&f, &ps, &sp);
    } else if (r >= 0) {
        r = group_pieces(&f, &ps, &gs);
    }
    if (r < 0)
        goto out;
    r = emit_chunks(&f, &ps, gs.n ? &gs : NULL, &local);
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
    free(gs.items);
    free(sp.buf);
    file_release(&f);
    return r;
}
