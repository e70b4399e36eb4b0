/*
 * chunk-tree.c - the tree-sitter half of the chunker: grammar tables, node classification, and
 * the walk that cuts a file into unit and glue regions (see chunk.c for the design).  Built
 * without tree-sitter, it only reports that no grammar exists, and every file is windowed.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "chunk-int.h"
#include "macro.h"

#ifdef COARCH_HAVE_TREE_SITTER
#include <tree_sitter/api.h>
#endif

#define WALK_MAX_DEPTH 128
/* How deep below a node to look for units before treating it as plain glue. */
#define CONTAINS_UNIT_DEPTH 3

/* ---- languages ---------------------------------------------------------------------------- */

/*
 * Node kinds per grammar, as space-separated node type names.  units: one region each (split
 * when too big).  body_units: units only when they have a body field (struct definitions, not
 * uses).  containers: recursed into with a new scope.  wrappers: take their kind and name from
 * the first unit or container among their named children (decorators, export, template<>).
 * vardecls: a unit when they bind a function (const f = () => ...).  attach: comments and
 * attributes that belong to the unit right below them.  lexis and backquotes: how comments and
 * strings look, for choosing the seams of a big file (mark_quoted_lines(), segment_seam()).
 */
enum lexis {
    LEXIS_C,      /* // and block comments, '' and "" literals, labels */
    LEXIS_PYTHON, /* # comments, '' and "" literals, tripled ones spanning lines */
};

struct grammar_spec {
    const char *name;
    const char *sep;
    const char *units;
    const char *body_units;
    const char *containers;
    const char *body_containers;
    const char *wrappers;
    const char *vardecls;
    const char *attach;
    enum lexis lexis;
    bool backquotes; /* `...` strings, which may span lines */
};

#define JS_UNITS "function_declaration generator_function_declaration method_definition"
#define JS_VARDECLS "lexical_declaration variable_declaration field_definition"
#define TS_UNITS JS_UNITS " interface_declaration type_alias_declaration enum_declaration"
#define TS_CONTAINERS "class_declaration abstract_class_declaration class internal_module module"
/* expression_statement wraps `namespace N {}` in the TypeScript grammar. */
#define TS_WRAPPERS "export_statement ambient_declaration expression_statement"

static const struct grammar_spec grammar_specs[] = {
    {
        .name = "c",
        .sep = ".",
        .units = "function_definition type_definition",
        .body_units = "struct_specifier union_specifier enum_specifier",
        .attach = "comment",
    },
    {
        .name = "cpp",
        .sep = "::",
        .units = "function_definition type_definition alias_declaration concept_definition",
        .body_units = "enum_specifier",
        .containers = "namespace_definition",
        .body_containers = "class_specifier struct_specifier union_specifier",
        .wrappers = "template_declaration",
        .attach = "comment",
    },
    {
        .name = "python",
        .sep = ".",
        .units = "function_definition",
        .containers = "class_definition",
        .wrappers = "decorated_definition",
        .attach = "comment",
        .lexis = LEXIS_PYTHON,
    },
    {
        .name = "javascript",
        .sep = ".",
        .units = JS_UNITS,
        .containers = "class_declaration class",
        .wrappers = "export_statement",
        .vardecls = JS_VARDECLS,
        .attach = "comment decorator",
        .backquotes = true,
    },
    {
        .name = "typescript",
        .sep = ".",
        .units = TS_UNITS,
        .containers = TS_CONTAINERS,
        .wrappers = TS_WRAPPERS,
        .vardecls = JS_VARDECLS " public_field_definition",
        .attach = "comment decorator",
        .backquotes = true,
    },
    {
        .name = "tsx",
        .sep = ".",
        .units = TS_UNITS,
        .containers = TS_CONTAINERS,
        .wrappers = TS_WRAPPERS,
        .vardecls = JS_VARDECLS " public_field_definition",
        .attach = "comment decorator",
        .backquotes = true,
    },
    {
        .name = "go",
        .sep = ".",
        .units = "function_declaration method_declaration type_declaration",
        .attach = "comment",
        .backquotes = true,
    },
    {
        .name = "rust",
        .sep = "::",
        .units = "function_item macro_definition struct_item enum_item union_item type_item",
        .containers = "impl_item trait_item",
        .body_containers = "mod_item", /* not `mod m;` */
        .attach = "line_comment block_comment attribute_item",
    },
    {
        .name = "java",
        .sep = ".",
        .units = "method_declaration constructor_declaration compact_constructor_declaration",
        .containers = "class_declaration interface_declaration enum_declaration "
                      "record_declaration annotation_type_declaration",
        .attach = "line_comment block_comment",
    },
};

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

int chunk_grammar_index(const char *language)
{
    if (!language)
        return -1;
    for (size_t i = 0; i < ELEMENTSOF(grammar_specs); i++)
        if (strcmp(grammar_specs[i].name, language) == 0)
            return (int)i;
    return -1;
}

const char *chunk_grammar_name(int idx)
{
    return idx >= 0 && (size_t)idx < ELEMENTSOF(grammar_specs) ? grammar_specs[idx].name : NULL;
}

const char *chunk_grammar_sep(int idx)
{
    return idx >= 0 && (size_t)idx < ELEMENTSOF(grammar_specs) ? grammar_specs[idx].sep : ".";
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
    return chunker_has_grammars() && chunk_grammar_index(language) >= 0;
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
    const char *p = list ? list : "";

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
        grammar_mark(g, spec->body_containers, NODE_BODY_CONTAINER);
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
    r = chunk_symbol_from_bytes(w->f, w->sp, w->f->src + ts_node_start_byte(nn),
                                ts_node_end_byte(nn) - ts_node_start_byte(nn), &name_off);
    if (r < 0)
        return r;
    if (!ts_node_is_null(recv)) {
        r = chunk_symbol_from_bytes(w->f, w->sp, w->f->src + ts_node_start_byte(recv),
                                    ts_node_end_byte(recv) - ts_node_start_byte(recv), &recv_off);
        if (r < 0)
            return r;
    }
    sc = chunk_pool_get(w->sp, scope); /* the pool may have moved */
    if (sc[0]) {
        o += (size_t)snprintf(buf, sizeof(buf), "%s%s", sc, sep);
        o = MIN(o, sizeof(buf) - 1);
    }
    if (!ts_node_is_null(recv)) {
        o += (size_t)snprintf(buf + o, sizeof(buf) - o, "%s%s", chunk_pool_get(w->sp, recv_off),
                              sep);
        o = MIN(o, sizeof(buf) - 1);
    }
    o += (size_t)snprintf(buf + o, sizeof(buf) - o, "%s", chunk_pool_get(w->sp, name_off));
    o = MIN(o, sizeof(buf) - 1);
    /* Long scopes keep their tail: the innermost names say the most. */
    if (o > SYMBOL_MAX) {
        size_t skip = o - SYMBOL_MAX;
        while (skip < o && ((unsigned char)buf[skip] & 0xc0) == 0x80)
            skip++;
        return chunk_pool_add(w->sp, buf + skip, o - skip, ret);
    }
    return chunk_pool_add(w->sp, buf, o, ret);
}

/*
 * Add one to the cut cost of every line break inside a multi-line node, for n and everything
 * below it: a break's cost is then the number of nodes spanning it.  Single-line nodes span no
 * break, and neither does anything inside them, so most of the tree is never visited.
 */
static void add_cut_costs(struct walk *w, TSNode n, int depth)
{
    uint8_t *cost = w->f->cut_cost;
    uint32_t a, b;
    TSTreeCursor cur;

    node_lines(w, n, &a, &b);
    if (a == b)
        return;
    for (uint32_t i = a; i < b; i++)
        cost[i] += cost[i] < UINT8_MAX;
    if (depth >= WALK_MAX_DEPTH)
        return;
    cur = ts_tree_cursor_new(n);
    if (ts_tree_cursor_goto_first_child(&cur)) {
        do
            add_cut_costs(w, ts_tree_cursor_current_node(&cur), depth + 1);
        while (ts_tree_cursor_goto_next_sibling(&cur));
    }
    ts_tree_cursor_delete(&cur);
}

static void add_region(struct walk *w, uint32_t a, uint32_t b, uint8_t kind, uint32_t sym,
                       uint32_t title)
{
    int r;

    if (w->r < 0)
        return;
    a = MAX(a, w->next_line);
    if (a > b)
        return;
    if (title && (title - 1 < a || title - 1 > b))
        title = 0;
    r = chunk_pack_region(w->f, w->ps, a, b, kind, sym,
                          chunk_budget(w->f, chunk_pool_get(w->sp, sym)), title);
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
        add_region(w, w->glue_a, (uint32_t)end, REGION_GLUE, scope, 0);
    return MIN(start, until);
}

static void glue_add(struct walk *w, TSNode n)
{
    uint32_t a, b;
    bool attachable = node_flags(w, n) & NODE_ATTACH;

    node_lines(w, n, &a, &b);
    if (b < w->next_line)
        return; /* on a line an earlier region already owns */
    a = MAX(a, w->next_line);
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

static void walk_nodes(struct walk *w, TSNode parent, uint32_t scope, int depth, bool flush);

static void walk_children(struct walk *w, TSNode parent, uint32_t scope, int depth)
{
    walk_nodes(w, parent, scope, depth, true);
}

static void walk_unit(struct walk *w, TSNode outer, TSNode inner, uint32_t scope)
{
    uint32_t a, b, sym, start, title = 0;
    TSNode nn;
    int r;

    node_lines(w, outer, &a, &b);
    if (b < w->next_line)
        return;
    r = make_symbol(w, inner, scope, &sym);
    if (r < 0) {
        w->r = r;
        return;
    }
    /* The line with the unit's name ("def get_loop(self):") gets a title chunk (chunk.c). */
    nn = name_node(w, inner);
    if (!ts_node_is_null(nn))
        title = ts_node_start_point(nn).row + 1;
    start = flush_glue(w, a, true, scope);
    if (w->force_start >= 0)
        start = MIN(start, (uint32_t)w->force_start);
    w->force_start = -1;
    add_region(w, start, b, REGION_UNIT, sym, title);
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

/* Walk parent's children; `flush` ends the glue they leave pending (false between two
 * segments of one file, so glue packs across the seam as in a whole parse). */
static void walk_nodes(struct walk *w, TSNode parent, uint32_t scope, int depth, bool flush)
{
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
                glue_add(w, ch);
                break;
            }
        } while (ts_tree_cursor_goto_next_sibling(&cur));
    }
    ts_tree_cursor_delete(&cur);
    if (flush)
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

/* A line that is only a label: an identifier, a colon, nothing after it but blanks. */
static bool c_label(const char *s, size_t n)
{
    size_t k = 0;

    while (k < n && (isalnum((unsigned char)s[k]) || s[k] == '_'))
        k++;
    if (k == 0 || k >= n || s[k] != ':' || (k + 1 < n && s[k + 1] == ':'))
        return false;
    for (k++; k < n; k++)
        if (!strchr(" \t\r\n", s[k]))
            return false;
    return true;
}

/*
 * Flag the lines that begin inside a string or a comment (LINE_QUOTED), which can never be
 * seams: a Python docstring or a C block comment often holds a blank line followed by text at
 * column 0.  A lexer's sketch, not a parser: Python's four quote kinds with backslash escapes
 * and # comments; for the C family // and block comments, double- and single-quoted
 * literals (which end at the line's end when unclosed, so a Rust lifetime costs nothing) and
 * JavaScript's and Go's backquoted strings.  Good enough to choose seams; the parser decides
 * everything else.
 */
static void mark_quoted_lines(struct file *f, const struct grammar_spec *spec)
{
    bool python = spec->lexis == LEXIS_PYTHON, backquote = spec->backquotes;
    enum { CODE, LINE_COMMENT, BLOCK_COMMENT, STRING } state = CODE;
    char quote = 0;
    bool triple = false;
    uint32_t line = 0;

    for (size_t k = 0; k < f->len; k++) {
        char ch = f->src[k];

        if (ch == '\n') {
            if (state == LINE_COMMENT ||
                (state == STRING && !triple && quote != '`' && f->src[k - 1] != '\\'))
                state = CODE; /* an unclosed one-line literal: the line ends it */
            line++;
            if (line < f->n_lines && state != CODE)
                f->flags[line] |= LINE_QUOTED;
            continue;
        }
        switch (state) {
        case CODE:
            if (python && ch == '#') {
                state = LINE_COMMENT;
            } else if (!python && ch == '/' && k + 1 < f->len && f->src[k + 1] == '/') {
                state = LINE_COMMENT;
            } else if (!python && ch == '/' && k + 1 < f->len && f->src[k + 1] == '*') {
                state = BLOCK_COMMENT;
                k++;
            } else if (ch == '"' || ch == '\'' || (backquote && ch == '`')) {
                state = STRING;
                quote = ch;
                triple = python && k + 2 < f->len && f->src[k + 1] == ch && f->src[k + 2] == ch;
                k += triple ? 2 : 0;
            }
            break;
        case LINE_COMMENT:
            break;
        case BLOCK_COMMENT:
            if (ch == '*' && k + 1 < f->len && f->src[k + 1] == '/') {
                state = CODE;
                k++;
            }
            break;
        case STRING:
            if (ch == '\\' && k + 1 < f->len && f->src[k + 1] != '\n') {
                k++; /* an escaped character; an escaped newline is seen above */
            } else if (ch == quote && !triple) {
                state = CODE;
            } else if (ch == quote && k + 2 < f->len && f->src[k + 1] == quote &&
                       f->src[k + 2] == quote) {
                state = CODE;
                k += 2;
            }
            break;
        }
    }
}

/* Whether a segment may start at line i: a line starting a statement at column 0 right after
 * a blank line, the usual seam between two top-level definitions in every language we parse. */
static bool segment_seam(const struct file *f, const struct grammar_spec *spec, uint32_t i)
{
    const char *s = f->src + f->start[i];
    size_t n = f->start[i + 1] - f->start[i];
    bool python = spec->lexis == LEXIS_PYTHON;

    if (i == 0 || !(f->flags[i - 1] & LINE_BLANK) || (f->flags[i] & (LINE_BLANK | LINE_QUOTED)) ||
        n == 0)
        return false;
    if (strchr(" \t\r\f\v})]", s[0]))
        return false;
    /* Not a comment: one at column 0 may sit inside a Python class (a section banner), and a
     * comment before a definition stays with it across the seam anyway (the walk goes on). */
    if ((n >= 2 && s[0] == '/' && (s[1] == '/' || s[1] == '*')) || (s[0] == '#' && python))
        return false;
    /* Not a C label ("out:" at column 0 is common inside functions). */
    if (!python && c_label(s, n))
        return false;
    /* Not the middle of a C preprocessor conditional. */
    return !(n >= 3 && (memcmp(s, "#el", 3) == 0 || (n >= 6 && memcmp(s, "#endif", 6) == 0)));
}

/* How far past its start a segment may reach to end at a seam (a class or a table with no
 * seam inside), as a multiple of the segment size; past that it is cut anyway. */
#ifndef SEGMENT_REACH
#define SEGMENT_REACH 8
#endif

/* The first seam in lines [from, ...) before byte `limit`; 0 when there is none. */
static uint32_t next_seam(const struct file *f, const struct grammar_spec *spec, uint32_t from,
                          size_t limit)
{
    for (uint32_t i = from; i < f->n_lines && f->start[i] < limit; i++)
        if (segment_seam(f, spec, i))
            return i;
    return 0;
}

/* The line after the segment that starts at line `a`: about `target` bytes on, at a seam when
 * one is found between half and all of the target, else at the first seam before
 * SEGMENT_REACH times the target (a big class has no seam inside), else (one huge literal) at
 * the target anyway: the parser recovers on both sides, and the tree's memory stays bounded. */
static uint32_t segment_end(const struct file *f, const struct grammar_spec *spec, uint32_t a,
                            size_t target)
{
    uint32_t lo = a + 1, hi, i;

    while (lo < f->n_lines && f->start[lo] - f->start[a] < target / 2)
        lo++;
    hi = lo;
    while (hi < f->n_lines && f->start[hi] - f->start[a] < target)
        hi++;
    for (i = hi; i >= lo && i > a; i--)
        if (i < f->n_lines && segment_seam(f, spec, i))
            return i;
    i = next_seam(f, spec, hi + 1, f->start[a] + SEGMENT_REACH * target);
    if (i)
        return i;
    /* The end of the file is a seam too. */
    return f->len - f->start[a] <= SEGMENT_REACH * target ? f->n_lines : hi;
}

/* Parse lines [a, b) of the file alone (the whole file when a == 0 and b == n_lines); the
 * tree's positions are the file's.  NULL: the parse was cancelled (timeout). */
static TSTree *parse_lines(struct chunker *c, struct file *f, uint32_t a, uint32_t b,
                           uint64_t *deadline)
{
    struct parse_input in = {f->src, (uint32_t)f->len};
    TSInput input = {&in, parse_read, TSInputEncodingUTF8, NULL};
    TSParseOptions popt = {deadline, parse_progress};
    bool whole = a == 0 && b >= f->n_lines;
    TSTree *tree;

    ts_parser_reset(c->parser);
    if (!whole) {
        TSRange range = {
            .start_point = {a, 0},
            .end_point = {b, 0},
            .start_byte = f->start[a],
            .end_byte = f->start[b],
        };
        if (!ts_parser_set_included_ranges(c->parser, &range, 1))
            return NULL;
    }
    tree = ts_parser_parse_with_options(c->parser, NULL, input, popt);
    if (!whole)
        ts_parser_set_included_ranges(c->parser, NULL, 0);
    if (!tree)
        ts_parser_reset(c->parser);
    return tree;
}

/*
 * Chunk along the syntax tree.  Returns 0, -ENOTSUP when the file should be windowed instead
 * (no usable grammar, parse cancelled), or another negative errno.
 *
 * A syntax tree costs about 20 bytes of memory per byte of source (an 850 KB header: 17 MB,
 * bench/README.md), more than anything else the indexer holds for a file.  So content over
 * twice opt->segment_bytes is parsed a segment at a time, each segment about that size and cut
 * at a seam between top-level definitions (segment_seam(), segment_end()); tree-sitter's included
 * ranges keep each tree's positions those of the whole file, and each tree is walked and freed
 * before the next segment is parsed.  The walk simply goes on from one segment's root to the next,
 * so a file whose seams all fall between definitions chunks exactly as if parsed whole; a seam
 * inside a construct (a Python string, a C `extern "C" {`) only costs that construct's shape,
 * since the parser recovers and every line is still chunked.
 */
int chunk_tree(struct chunker *c, struct file *f, struct pieces *ps)
{
    struct strpool *sp = f->sp;
    int idx = chunk_grammar_index(f->language), r;
    struct grammar *g;
    uint64_t deadline = now_us() + f->opt->parse_timeout_us;
    size_t seg = f->opt->segment_bytes;
    bool segmented = seg > 0 && f->len > 2 * seg;
    uint32_t root_scope, ra, rb, prev_rb = UINT32_MAX;
    struct walk w = {
        .f = f,
        .ps = ps,
        .sp = sp,
        .attach_a = -1,
        .force_start = -1,
    };

    if (idx < 0 || f->len > f->opt->max_parse_bytes)
        return -ENOTSUP;
    r = grammar_load(c, idx, &g);
    if (r < 0)
        return r;
    w.g = g;
    r = chunk_pool_add(sp, "", 0, &root_scope);
    if (r < 0)
        return r;
    if (segmented)
        mark_quoted_lines(f, g->spec);
    for (uint32_t a = 0; a < f->n_lines && w.r >= 0;) {
        uint32_t b = segmented ? segment_end(f, g->spec, a, seg) : f->n_lines;
        TSTree *tree = parse_lines(c, f, a, b, &deadline);

        if (!tree)
            return -ENOTSUP;
        add_cut_costs(&w, ts_tree_root_node(tree), 0);
        /* A whole parse's root also spans the line breaks between two segments' roots. */
        node_lines(&w, ts_tree_root_node(tree), &ra, &rb);
        for (uint32_t i = prev_rb; i < ra; i++)
            f->cut_cost[i] += f->cut_cost[i] < UINT8_MAX;
        prev_rb = rb;
        walk_nodes(&w, ts_tree_root_node(tree), root_scope, 0, b >= f->n_lines);
        ts_tree_delete(tree);
        a = b;
    }
    r = w.r;
    /* Lines after the last node: only whitespace, by construction, but keep the promise that
     * no non-blank line is lost even if a grammar leaves text outside every node. */
    if (r >= 0 && w.next_line < f->n_lines)
        add_region(&w, w.next_line, f->n_lines - 1, REGION_GLUE, root_scope, 0);
    if (r >= 0)
        r = w.r;
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

int chunk_tree(struct chunker *c, struct file *f, struct pieces *ps)
{
    (void)c, (void)f, (void)ps;
    return -ENOTSUP;
}

#endif
