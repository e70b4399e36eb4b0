/*
 * test-chunk.c - the language-aware chunker (daemon/index/chunk.h).
 *
 * Per grammar, a small realistic file under tests/data/chunk/ is chunked with merging off and
 * its exact chunk boundaries and symbols are checked; then the invariants every chunk list must
 * keep (order, 1-based inclusive lines covering every non-blank line, byte ranges matching the
 * lines, valid UTF-8 text under the token limit with its header) are checked on every sample,
 * on generated stress inputs (a function too big for one chunk, many tiny functions, a 10 MB
 * line, invalid UTF-8, deep nesting) and on line-window fallbacks.
 *
 * Tests that need the tree-sitter grammars skip (77) when this build has none, and fail instead
 * when CI is set, since scripts/setup provides them there.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "chunk.h"
#include "macro.h"
#include "test.h"

static void need_grammars(void)
{
    if (chunker_has_grammars())
        return;
    if (getenv("CI"))
        test_fail(__FILE__, __LINE__,
                  "built without tree-sitter grammars although CI is set: "
                  "scripts/setup must provide third_party/tree-sitter");
    TEST_SKIP("built without tree-sitter grammars (run scripts/setup and reconfigure)");
}

static char *read_all(const char *path, size_t *ret_len)
{
    FILE *f = fopen(path, "rb");
    char *buf;
    long n;

    if (!f)
        test_fail(__FILE__, __LINE__, "cannot open %s: %s", path, strerror(errno));
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = malloc((size_t)n + 1);
    ASSERT_TRUE(buf);
    ASSERT_EQ(fread(buf, 1, (size_t)n, f), (size_t)n);
    buf[n] = '\0';
    fclose(f);
    *ret_len = (size_t)n;
    return buf;
}

/* A token counter unlike the built-in estimate, to prove the callback is what gets used: every
 * run of up to 3 non-space bytes is a token. */
static size_t count3(void *ctx, const char *s, size_t n)
{
    size_t t = 0, run = 0;

    (*(size_t *)ctx)++;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r') {
            run = 0;
            continue;
        }
        if (run % 3 == 0)
            t++;
        run++;
    }
    return t;
}

static bool utf8_ok(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;

    for (size_t i = 0; i < n;) {
        size_t k;
        if (p[i] == 0)
            return false;
        if (p[i] < 0x80) {
            i++;
            continue;
        }
        k = p[i] >= 0xf0 ? 4 : p[i] >= 0xe0 ? 3 : p[i] >= 0xc2 ? 2 : 0;
        if (k == 0 || i + k > n || p[i] > 0xf4)
            return false;
        for (size_t j = 1; j < k; j++)
            if ((p[i + j] & 0xc0) != 0x80)
                return false;
        i += k;
    }
    return true;
}

static bool blank_line(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r' && s[i] != '\f' && s[i] != '\v' &&
            s[i] != '\n')
            return false;
    return true;
}

/* Is chunk b in the same group as chunk a? */
static bool same_group(const struct chunk *a, const struct chunk *b)
{
    return a && b && a->start_line == b->start_line && a->end_line == b->end_line &&
           a->start_byte == b->start_byte && a->end_byte == b->end_byte;
}

/*
 * The contract of chunk.h, checked on one result: order, group, unit and byte ranges, title
 * chunks, coverage of every non-blank line, header and code text, token and line limits.
 * `overlap` allows windows to overlap (the fallback); code groups must not.
 */
static void check_invariants(const char *path, const char *src, size_t len,
                             const struct chunk_options *opt, const struct chunk_list *l,
                             bool overlap)
{
    size_t n_lines = 0, *starts;
    char header[512];
    size_t hl;
    unsigned char *covered;

    for (size_t i = 0; i < len; i++)
        if (src[i] == '\n')
            n_lines++;
    if (len > 0 && src[len - 1] != '\n')
        n_lines++;
    starts = calloc(n_lines + 2, sizeof(size_t));
    covered = calloc(n_lines + 2, 1);
    ASSERT_TRUE(starts && covered);
    for (size_t i = 0, ln = 1; i < len; i++)
        if (src[i] == '\n')
            starts[++ln - 1] = i + 1;
    starts[n_lines] = len;

    hl = (size_t)snprintf(header, sizeof(header), "file: %s\n", path);
    for (size_t i = 0; i < l->n; i++) {
        /* p, nx: the chunks before and after c, not counting title chunks */
        const struct chunk *c = &l->items[i], *p = NULL, *nx = NULL;
        size_t ua = c->unit_start_byte, ue = c->unit_end_byte;

        for (size_t k = i; k > 0 && !p; k--)
            p = l->items[k - 1].title ? NULL : &l->items[k - 1];
        for (size_t k = i + 1; k < l->n && !nx; k++)
            nx = l->items[k].title ? NULL : &l->items[k];

        /* The group: what a hit reports. */
        ASSERT_GE(c->start_line, 1);
        ASSERT_LE(c->start_line, c->end_line);
        ASSERT_LE(c->end_line, n_lines);
        ASSERT_LE(c->end_line - c->start_line + 1, opt->max_lines);
        ASSERT_LT(c->start_byte, c->end_byte);
        ASSERT_LE(c->end_byte, len);
        /* Byte range lies within the chunk's lines. */
        ASSERT_GE(c->start_byte, starts[c->start_line - 1]);
        ASSERT_LE(c->end_byte, c->end_line < n_lines ? starts[c->end_line] : len);
        if (c->start_byte != starts[c->start_line - 1])
            ASSERT_EQ(c->start_line, c->end_line); /* a piece of a long line */
        /* The unit: what is embedded, within the group. */
        ASSERT_LE(c->start_line, c->unit_start_line);
        ASSERT_LE(c->unit_start_line, c->unit_end_line);
        ASSERT_LE(c->unit_end_line, c->end_line);
        ASSERT_LE(c->start_byte, ua);
        ASSERT_LT(ua, ue);
        ASSERT_LE(ue, c->end_byte);
        ASSERT_GE(ua, starts[c->unit_start_line - 1]);
        ASSERT_LE(ue, c->unit_end_line < n_lines ? starts[c->unit_end_line] : len);
        /* The definition: contains the unit; the chunks of one are neighbours sharing its
         * symbol; two definitions do not share bytes (line windows overlap, as their units). */
        ASSERT_LE(c->def_start_line, c->unit_start_line);
        ASSERT_GE(c->def_end_line, c->unit_end_line);
        ASSERT_LE(c->def_start_byte, ua);
        ASSERT_GE(c->def_end_byte, ue);
        ASSERT_LE(c->def_end_byte, len);
        if (p && p->def_start_byte == c->def_start_byte) {
            ASSERT_EQ(p->def_end_byte, c->def_end_byte);
            ASSERT_STREQ(p->symbol, c->symbol);
        } else if (p && !overlap) {
            ASSERT_LE(p->def_end_byte, c->def_start_byte);
        }
        if (c->title) {
            /* One line of the unit right after it, in its group, under its name, without the
             * indentation or trailing blanks. */
            const struct chunk *u = i + 1 < l->n ? &l->items[i + 1] : NULL;
            ASSERT_TRUE(u && !u->title && same_group(c, u));
            ASSERT_EQ(c->unit_start_line, c->unit_end_line);
            ASSERT_LE(u->unit_start_line, c->unit_start_line);
            ASSERT_LE(c->unit_end_line, u->unit_end_line);
            ASSERT_TRUE(c->symbol[0] && strcmp(c->symbol, u->symbol) == 0);
            ASSERT_TRUE(src[ua] != ' ' && src[ua] != '\t' && src[ue - 1] != ' ' &&
                        src[ue - 1] != '\n');
        } else {
            /* A group's units tile it in order, first to last; groups follow each other. */
            if (same_group(p, c)) {
                ASSERT_GT(c->unit_start_line, p->unit_end_line);
            } else {
                ASSERT_EQ(ua, c->start_byte);
                if (p) {
                    ASSERT_GE(c->start_line, p->start_line);
                    if (!overlap && p->end_line == c->start_line) {
                        /* Only the pieces of one long line share a line, and they tile it. */
                        ASSERT_EQ(p->start_line, p->end_line);
                        ASSERT_EQ(c->start_byte, p->end_byte);
                    } else if (!overlap) {
                        ASSERT_GT(c->start_line, p->end_line);
                    }
                }
            }
            if (!same_group(c, nx))
                ASSERT_EQ(ue, c->end_byte);
            for (uint32_t ln = c->unit_start_line; ln <= c->unit_end_line; ln++)
                covered[ln] = 1;
        }
        /* Text: NUL-terminated valid UTF-8 "file: PATH\n[symbol: S\n]\n" + the unit's code. */
        ASSERT_EQ(strlen(c->text), c->text_len);
        ASSERT_TRUE(utf8_ok(c->text, c->text_len));
        ASSERT_TRUE(strncmp(c->text, header, hl) == 0);
        ASSERT_TRUE(c->header_len > hl && c->text[c->header_len - 1] == '\n');
        if (c->symbol[0]) {
            char sl[256];
            snprintf(sl, sizeof(sl), "symbol: %s\n", c->symbol);
            ASSERT_TRUE(strncmp(c->text + hl, sl, strlen(sl)) == 0);
        }
        if (utf8_ok(src + ua, ue - ua)) {
            ASSERT_EQ(c->text_len - c->header_len, ue - ua);
            ASSERT_TRUE(memcmp(c->text + c->header_len, src + ua, ue - ua) == 0);
        }
        ASSERT_LE(c->n_tokens, opt->max_tokens);
        if (opt->count_tokens)
            ASSERT_LE(opt->count_tokens(opt->count_ctx, c->text, c->text_len) + 2, opt->max_tokens);
        ASSERT_TRUE(c->language && c->language[0]);
        ASSERT_TRUE(c->path && c->path != path);
    }
    for (size_t ln = 1; ln <= n_lines; ln++) {
        size_t a = starts[ln - 1], e = ln < n_lines ? starts[ln] : len;
        if (!covered[ln] && !blank_line(src + a, e - a))
            test_fail(__FILE__, __LINE__, "%s: non-blank line %zu is in no chunk", path, ln);
    }
    free(starts);
    free(covered);
}

/* Chunks that are not titles. */
static size_t count_units(const struct chunk_list *l)
{
    size_t n = 0;

    for (size_t i = 0; i < l->n; i++)
        n += !l->items[i].title;
    return n;
}

struct expect {
    uint32_t start, end;
    const char *symbol;
    uint32_t title; /* the line of the unit's title chunk; 0: none */
};

/*
 * The units of l (title chunks aside) are exactly `want`, each after its title chunk when it
 * has one; without grouping, each reports its own lines.
 */
static void check_units(const char *file, const struct chunk_list *l, const struct expect *want,
                        size_t n_want, bool grouped)
{
    size_t k = 0;

    ASSERT_EQ(count_units(l), n_want);
    for (size_t i = 0; i < l->n; i++) {
        const struct chunk *ch = &l->items[i], *t = i > 0 ? &l->items[i - 1] : NULL;
        uint32_t title = t && t->title ? t->unit_start_line : 0;

        if (ch->title)
            continue;
        if (ch->unit_start_line != want[k].start || ch->unit_end_line != want[k].end ||
            strcmp(ch->symbol, want[k].symbol) != 0 || title != want[k].title ||
            (!grouped && (ch->start_line != want[k].start || ch->end_line != want[k].end)))
            test_fail(__FILE__, __LINE__,
                      "%s unit %zu: got %u-%u \"%s\" title %u, want %u-%u \"%s\" title %u", file, k,
                      ch->unit_start_line, ch->unit_end_line, ch->symbol, title, want[k].start,
                      want[k].end, want[k].symbol, want[k].title);
        k++;
    }
}

/* Chunk a sample without groups and compare units, titles and symbols exactly; then with. */
static void check_sample(const char *file, const char *language, const struct expect *want,
                         size_t n_want)
{
    char path[256];
    struct chunker *c;
    struct chunk_options opt;
    struct chunk_list l;
    size_t len, calls = 0;
    char *src;

    need_grammars();
    snprintf(path, sizeof(path), "data/chunk/%s", file);
    src = read_all(path, &len);
    ASSERT_OK(chunker_new(&c));
    chunk_options_init(&opt);
    opt.min_tokens = 0;
    chunk_list_init(&l);
    ASSERT_GT(chunk_file(c, file, src, len, &opt, &l), 0);
    check_units(file, &l, want, n_want, false);
    for (size_t i = 0; i < l.n; i++)
        ASSERT_STREQ(l.items[i].language, language);
    check_invariants(file, src, len, &opt, &l, false);
    chunk_list_release(&l);

    /* The defaults put small neighbours in groups: the same units, some of them reporting a
     * larger group.  Then with a custom counter. */
    chunk_options_init(&opt);
    ASSERT_GT(chunk_file(c, file, src, len, &opt, &l), 0);
    check_units(file, &l, want, n_want, true);
    check_invariants(file, src, len, &opt, &l, false);
    chunk_list_release(&l);
    opt.count_tokens = count3;
    opt.count_ctx = &calls;
    opt.max_tokens = opt.merge_tokens = 64;
    ASSERT_GT(chunk_file(c, file, src, len, &opt, &l), 0);
    ASSERT_GT(calls, 0);
    check_invariants(file, src, len, &opt, &l, false);
    chunk_list_release(&l);

    chunker_free(c);
    free(src);
}

TEST(python_class_methods)
{
    static const struct expect want[] = {
        {1, 5, "", 0},
        {8, 11, "Item", 0},
        {14, 17, "Inventory", 0},
        {19, 20, "Inventory.__init__", 0},
        {22, 29, "Inventory.add", 23},  /* with the comment above it */
        {31, 33, "Inventory.total", 0}, /* with its decorator */
        {36, 38, "load", 0},
        {41, 42, "", 0},
    };
    check_sample("sample.py", "python", want, ELEMENTSOF(want));
}

TEST(c_functions)
{
    static const struct expect want[] = {
        {1, 4, "", 0},
        {6, 9, "ring", 0},
        {11, 21, "ring_push", 12},
        {23, 30, "ring_pop", 23},
        {32, 41, "main", 32},
    };
    check_sample("sample.c", "c", want, ELEMENTSOF(want));
}

TEST(cpp_namespace_class)
{
    static const struct expect want[] = {
        {1, 2, "", 0},
        {4, 4, "shapes", 0},
        {6, 8, "shapes::Polygon", 0},
        {9, 9, "shapes::Polygon::Polygon", 0},
        {11, 19, "shapes::Polygon::area", 11},
        {21, 25, "shapes::Polygon", 0},
        {27, 30, "shapes::Polygon::name", 0},
        {32, 36, "shapes::clamp", 0},
        {38, 38, "shapes", 0},
    };
    check_sample("sample.cpp", "cpp", want, ELEMENTSOF(want));
}

TEST(go_methods)
{
    static const struct expect want[] = {
        {1, 6, "", 0},      {8, 12, "Cache", 0}, {14, 17, "entry", 0}, {19, 28, "Cache.Get", 20},
        {30, 32, "New", 0},
    };
    check_sample("sample.go", "go", want, ELEMENTSOF(want));
}

TEST(rust_impl_and_attributes)
{
    static const struct expect want[] = {
        {1, 1, "", 0},          {3, 7, "Counter", 0}, /* doc comment and #[derive] attached */
        {9, 9, "Counter", 0},   {10, 12, "Counter::new", 0}, {14, 19, "Counter::add", 15},
        {20, 20, "Counter", 0}, {22, 24, "tests", 0},        {26, 31, "tests::counts_words", 27},
        {32, 32, "tests", 0},
    };
    check_sample("sample.rs", "rust", want, ELEMENTSOF(want));
}

TEST(java_class)
{
    static const struct expect want[] = {
        {1, 4, "", 0},
        {6, 8, "Sample", 0},
        {10, 11, "Sample.Sample", 0},
        {13, 16, "Sample.push", 0},
        {18, 25, "Sample.toString", 19},
        {26, 26, "Sample", 0},
    };
    check_sample("Sample.java", "java", want, ELEMENTSOF(want));
}

TEST(javascript_functions_and_class)
{
    static const struct expect want[] = {
        {1, 3, "", 0},        {5, 13, "loadConfig", 5},         {15, 15, "isEnabled", 0},
        {17, 17, "Store", 0}, {18, 20, "Store.constructor", 0}, {22, 24, "Store.get", 0},
        {25, 25, "Store", 0},
    };
    check_sample("sample.js", "javascript", want, ELEMENTSOF(want));
}

TEST(typescript_interfaces_and_class)
{
    static const struct expect want[] = {
        {1, 4, "User", 0},
        {6, 6, "Id", 0},
        {8, 9, "UserRepo", 0},
        {11, 13, "UserRepo.add", 0},
        {15, 17, "UserRepo.find", 0},
        {18, 18, "UserRepo", 0},
        {20, 21, "byName", 20},
    };
    check_sample("sample.ts", "typescript", want, ELEMENTSOF(want));
}

TEST(tsx_components)
{
    static const struct expect want[] = {
        {1, 1, "", 0},
        {3, 3, "Props", 0},
        {5, 12, "Counter", 5},
        {14, 16, "App", 0},
    };
    check_sample("sample.tsx", "tsx", want, ELEMENTSOF(want));
}

/* One token per whitespace-separated word: a counter whose sums are easy to follow. */
static size_t count_words(void *ctx, const char *s, size_t n)
{
    size_t t = 0;
    bool in = false;

    (void)ctx;
    for (size_t i = 0; i < n; i++) {
        bool sp = s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r';
        t += !sp && !in;
        in = !sp;
    }
    return t;
}

TEST(merging)
{
    struct chunker *c;
    struct chunk_options opt;
    struct chunk_list l;
    size_t len;
    char *src = read_all("data/chunk/sample.py", &len);

    need_grammars();
    ASSERT_OK(chunker_new(&c));
    chunk_options_init(&opt);
    opt.count_tokens = count_words;
    opt.max_tokens = opt.merge_tokens = 64;
    opt.min_tokens = 24;
    chunk_list_init(&l);
    /* Code pieces under 24 words join a neighbour's group while the group, with a header
     * listing its names, stays within 64 words: the head of the file up to __init__ (38 words
     * of code) is one group; add() (25 words) takes in total(), load() and the main block
     * after it (9, 12, 5).  Every unit stays a chunk with its own text and symbol. */
    ASSERT_EQ(chunk_file(c, "sample.py", src, len, &opt, &l), 8);
    check_invariants("sample.py", src, len, &opt, &l, false);
    /* No unit here has the code for a title chunk (more than 48 words). */
    for (size_t i = 0; i < l.n; i++)
        ASSERT_FALSE(l.items[i].title);
    {
        static const struct {
            uint32_t start, end, unit_start, unit_end, tokens;
            const char *symbol;
        } want[] = {
            {1, 20, 1, 5, 15, ""},
            {1, 20, 8, 11, 15, "Item"},
            {1, 20, 14, 17, 15, "Inventory"},
            {1, 20, 19, 20, 14, "Inventory.__init__"},
            {22, 42, 22, 29, 31, "Inventory.add"},
            {22, 42, 31, 33, 15, "Inventory.total"},
            {22, 42, 36, 38, 18, "load"},
            {22, 42, 41, 42, 9, ""},
        };
        for (size_t i = 0; i < ELEMENTSOF(want); i++) {
            const struct chunk *ch = &l.items[i];
            ASSERT_EQ(ch->start_line, want[i].start);
            ASSERT_EQ(ch->end_line, want[i].end);
            ASSERT_EQ(ch->unit_start_line, want[i].unit_start);
            ASSERT_EQ(ch->unit_end_line, want[i].unit_end);
            ASSERT_EQ(ch->n_tokens, want[i].tokens);
            ASSERT_STREQ(ch->symbol, want[i].symbol);
        }
    }
    chunk_list_release(&l);

    /* A tighter merge_tokens keeps the main block apart. */
    opt.merge_tokens = 56;
    ASSERT_EQ(chunk_file(c, "sample.py", src, len, &opt, &l), 8);
    check_invariants("sample.py", src, len, &opt, &l, false);
    ASSERT_EQ(l.items[6].start_line, 22);
    ASSERT_EQ(l.items[6].end_line, 38);
    ASSERT_EQ(l.items[7].start_line, 41);
    ASSERT_EQ(l.items[7].end_line, 42);
    ASSERT_STREQ(l.items[7].symbol, "");
    chunk_list_release(&l);

    /* The defaults group too: the same eight units in two groups, and add(), long enough at
     * 97 tokens, after its title chunk. */
    ASSERT_EQ(chunk_file(c, "sample.py", src, len, NULL, &l), 9);
    ASSERT_EQ(l.items[0].start_line, 1);
    ASSERT_EQ(l.items[3].end_line, 20);
    ASSERT_STREQ(l.items[3].symbol, "Inventory.__init__");
    ASSERT_TRUE(l.items[4].title);
    ASSERT_STREQ(l.items[4].text + l.items[4].header_len, "def add(self, item):");
    ASSERT_EQ(l.items[4].start_line, 22);
    ASSERT_EQ(l.items[4].unit_start_line, 23);
    ASSERT_EQ(l.items[5].unit_start_line, 22);
    ASSERT_STREQ(l.items[5].symbol, "Inventory.add");
    ASSERT_EQ(l.items[8].end_line, 42);
    chunk_options_init(&opt);
    check_invariants("sample.py", src, len, &opt, &l, false);
    chunk_list_release(&l);
    chunker_free(c);
    free(src);
}

TEST(titles)
{
    /* A C function whose name is on the line after its return type, a Python method long
     * enough for a title, a short one and a one-liner that are not. */
    static const char c_src[] = "/* Sum the ring. */\n"
                                "static int\n"
                                "ring_sum(const struct ring *r)\n"
                                "{\n"
                                "    int total = 0;\n"
                                "    for (size_t i = 0; i < r->len; i++)\n"
                                "        total += r->items[(r->head + i) % r->cap] * weight(i);\n"
                                "    return total > 0 ? total : -total;\n"
                                "}\n";
    static const char py_src[] = "class Box:\n"
                                 "    def size(self):\n"
                                 "        return self._size\n"
                                 "\n"
                                 "    def resize(self, width, height, keep_ratio=False):\n"
                                 "        if keep_ratio:\n"
                                 "            ratio = self.width / max(self.height, 1)\n"
                                 "            height = int(width / ratio)\n"
                                 "        self.width, self.height = width, height\n"
                                 "        self._size = self.width * self.height\n"
                                 "        return self._size\n"
                                 "\n"
                                 "    def close(self): self._open = False\n";
    struct chunker *c;
    struct chunk_options opt;
    struct chunk_list l;

    need_grammars();
    ASSERT_OK(chunker_new(&c));
    chunk_options_init(&opt);
    chunk_list_init(&l);
    ASSERT_EQ(chunk_file(c, "ring.c", c_src, sizeof(c_src) - 1, &opt, &l), 2);
    check_invariants("ring.c", c_src, sizeof(c_src) - 1, &opt, &l, false);
    ASSERT_TRUE(l.items[0].title);
    ASSERT_STREQ(l.items[0].symbol, "ring_sum");
    ASSERT_STREQ(l.items[0].text,
                 "file: ring.c\nsymbol: ring_sum\n\nring_sum(const struct ring *r)");
    ASSERT_EQ(l.items[0].unit_start_line, 3);
    ASSERT_EQ(l.items[0].start_line, 1);
    ASSERT_EQ(l.items[0].end_line, 9);
    ASSERT_FALSE(l.items[1].title);
    ASSERT_EQ(l.items[1].unit_start_line, 1); /* with the comment above it */
    chunk_list_release(&l);

    ASSERT_GT(chunk_file(c, "box.py", py_src, sizeof(py_src) - 1, &opt, &l), 0);
    check_invariants("box.py", py_src, sizeof(py_src) - 1, &opt, &l, false);
    for (size_t i = 0; i < l.n; i++) {
        const struct chunk *ch = &l.items[i];
        if (!ch->title)
            continue;
        ASSERT_STREQ(ch->symbol, "Box.resize");
        ASSERT_STREQ(ch->text + ch->header_len,
                     "def resize(self, width, height, keep_ratio=False):");
        ASSERT_EQ(ch->unit_start_line, 5);
        ASSERT_EQ(l.items[i + 1].unit_start_line, 5);
        ASSERT_EQ(l.items[i + 1].unit_end_line, 11);
        ASSERT_EQ(count_units(&l) + 1, l.n); /* the only title */
    }
    ASSERT_EQ(count_units(&l) + 1, l.n);
    chunk_list_release(&l);

    /* Without groups the title reports its unit's lines. */
    opt.min_tokens = 0;
    ASSERT_GT(chunk_file(c, "box.py", py_src, sizeof(py_src) - 1, &opt, &l), 0);
    check_invariants("box.py", py_src, sizeof(py_src) - 1, &opt, &l, false);
    for (size_t i = 0; i < l.n; i++)
        if (l.items[i].title) {
            ASSERT_EQ(l.items[i].start_line, 5);
            ASSERT_EQ(l.items[i].end_line, 11);
        }
    chunk_list_release(&l);
    chunker_free(c);
}

/* A buffer that grows with printf-style appends (test-only convenience). */
struct sbuf {
    char *s;
    size_t n, cap;
};

static void sb_printf(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(struct sbuf *b, const char *fmt, ...)
{
    va_list ap;
    int k;

    for (;;) {
        va_start(ap, fmt);
        k = vsnprintf(b->s ? b->s + b->n : NULL, b->s ? b->cap - b->n : 0, fmt, ap);
        va_end(ap);
        ASSERT_GE(k, 0);
        if (b->s && b->n + (size_t)k < b->cap)
            break;
        b->cap = (b->cap + (size_t)k + 1) * 2;
        b->s = realloc(b->s, b->cap);
        ASSERT_TRUE(b->s);
    }
    b->n += (size_t)k;
}

TEST(big_function_split_on_statements)
{
    struct chunker *c;
    struct chunk_options opt;
    struct chunk_list l;
    struct sbuf b = {0};
    size_t calls = 0;

    need_grammars();
    sb_printf(&b, "int helper(int x);\n\nint big(int n)\n{\n    int acc = 0;\n");
    for (int i = 0; i < 150; i++) {
        if (i % 10 == 0)
            sb_printf(&b,
                      "    if (n > %d) {\n        acc += helper(n * %d);\n"
                      "        acc ^= %d;\n    }\n",
                      i, i, i * 7);
        else
            sb_printf(&b, "    acc = acc * 31 + helper(acc + %d);\n", i);
    }
    sb_printf(&b, "    return acc;\n}\n");

    ASSERT_OK(chunker_new(&c));
    chunk_options_init(&opt);
    opt.count_tokens = count3;
    opt.count_ctx = &calls;
    chunk_list_init(&l);
    ASSERT_GT(chunk_file(c, "big.c", b.s, b.n, &opt, &l), 3);
    check_invariants("big.c", b.s, b.n, &opt, &l, false);
    for (size_t i = 0; i < l.n; i++) {
        const struct chunk *ch = &l.items[i];
        const char *code = ch->text + ch->header_len;
        size_t n = ch->text_len - ch->header_len;

        /* The declaration before big() stands alone, then big()'s title, its name line;
         * every other piece is big's and ends after a whole statement, never inside an if
         * block. */
        if (strcmp(ch->symbol, "big") != 0) {
            ASSERT_EQ(i, 0);
            continue;
        }
        if (ch->title) {
            ASSERT_EQ(i, 1);
            ASSERT_STREQ(code, "int big(int n)");
            continue;
        }
        ASSERT_FALSE(i == 1);
        ASSERT_TRUE(n >= 2 && code[n - 1] == '\n');
        ASSERT_TRUE(code[n - 2] == ';' || code[n - 2] == '}' || code[n - 2] == '{');
        /* The last line is not inside an if block (indented 8). */
        {
            size_t k = n - 1;
            while (k > 0 && code[k - 1] != '\n')
                k--;
            ASSERT_TRUE(strncmp(code + k, "        ", 8) != 0);
        }
    }
    chunk_list_release(&l);
    chunker_free(c);
    free(b.s);
}

static void expect_same_chunks(const struct chunk_list *a, const struct chunk_list *b)
{
    ASSERT_EQ(a->n, b->n);
    for (size_t i = 0; i < a->n; i++) {
        const struct chunk *x = &a->items[i], *y = &b->items[i];

        ASSERT_EQ(x->start_line, y->start_line);
        ASSERT_EQ(x->end_line, y->end_line);
        ASSERT_EQ(x->start_byte, y->start_byte);
        ASSERT_EQ(x->end_byte, y->end_byte);
        ASSERT_EQ(x->title, y->title);
        ASSERT_STREQ(x->symbol, y->symbol);
        ASSERT_EQ(x->text_len, y->text_len);
        ASSERT_TRUE(memcmp(x->text, y->text, x->text_len) == 0);
    }
}

/* Chunk src whole (segment_bytes 0) and in segments of `seg` bytes; both must keep every
 * invariant; returns how many chunks each gave through *ret_whole / *ret_seg and, when `same`,
 * asserts that both lists are equal. */
static void chunk_both_ways(const char *path, const char *src, size_t len, size_t seg, bool same)
{
    struct chunker *c;
    struct chunk_options opt;
    struct chunk_list whole, segd;
    size_t calls = 0;

    ASSERT_OK(chunker_new(&c));
    chunk_options_init(&opt);
    opt.count_tokens = count3;
    opt.count_ctx = &calls;
    chunk_list_init(&whole);
    chunk_list_init(&segd);
    opt.segment_bytes = 0;
    ASSERT_GT(chunk_file(c, path, src, len, &opt, &whole), 0);
    check_invariants(path, src, len, &opt, &whole, false);
    opt.segment_bytes = seg;
    ASSERT_GT(chunk_file(c, path, src, len, &opt, &segd), 0);
    check_invariants(path, src, len, &opt, &segd, false);
    if (same)
        expect_same_chunks(&whole, &segd);
    chunk_list_release(&whole);
    chunk_list_release(&segd);
    chunker_free(c);
}

/* A big file is parsed in segments cut between top-level definitions (chunk-tree.c), so its
 * syntax tree never holds the whole file; where every seam falls between definitions the
 * chunks are exactly those of a whole parse. */
TEST(segmented_parse_equals_whole)
{
    struct sbuf py = {0}, cc = {0};

    need_grammars();
    sb_printf(&py, "import os\n\nLIMIT = 10\n\n");
    for (int i = 0; i < 120; i++) {
        if (i % 7 == 0) {
            sb_printf(&py,
                      "\nclass Box%d:\n    \"\"\"A box.\n\n    with a blank line in its "
                      "docstring\n    \"\"\"\n\n",
                      i);
            sb_printf(
                &py,
                "    def size_%d(self, n):\n        total = n * %d\n\n        return total + 1\n\n",
                i, i);
            sb_printf(&py, "    def grow(self):\n        return self.size_%d(2)\n", i);
        } else {
            sb_printf(&py,
                      "\n@decorator\ndef function_%d(a, b):\n    if a > b:\n        return a - "
                      "%d\n\n    return b\n",
                      i, i);
        }
    }
    ASSERT_GT(py.n, 8192);
    chunk_both_ways("mod.py", py.s, py.n, 2048, true);

    for (int i = 0; i < 150; i++)
        sb_printf(&cc,
                  "/* helper %d */\nstatic int helper_%d(int x)\n{\n    int y = x * %d;\n\n    "
                  "return y + %d;\n}\n\n",
                  i, i, i, i);
    ASSERT_GT(cc.n, 8192);
    chunk_both_ways("lib.c", cc.s, cc.n, 2048, true);
    free(py.s);
    free(cc.s);
}

/* Lines that only look like seams (column 0 after a blank line) are not taken: text inside a
 * string or a block comment, a comment banner inside a Python class, a C label.  A construct
 * with no seam inside (one class) is parsed whole up to SEGMENT_REACH (8) times the segment
 * size, the end of the file included. */
TEST(segment_seams_skip_look_alikes)
{
    struct sbuf b = {0};

    need_grammars();
    for (int i = 0; i < 100; i++)
        sb_printf(&b,
                  "def f%d():\n    return '''\nline one\n\nline %d at column 0\n\nend'''\n\n"
                  "def g%d():\n    \"\"\"Doc.\n\nColumn 0 in a docstring, with a 'quote.\n\"\"\"\n"
                  "    return \"a # not a comment\"\n\n",
                  i, i, i);
    ASSERT_GT(b.n, 8192);
    chunk_both_ways("strings.py", b.s, b.n, 2048, true);

    b.n = 0;
    sb_printf(&b, "class Big:\n");
    for (int i = 0; i < 120; i++) {
        if (i % 10 == 0)
            sb_printf(&b, "\n######## section %d ########\n", i);
        sb_printf(&b, "\n    def method_%d(self, x):\n        return x + %d\n", i, i);
    }
    ASSERT_GT(b.n, 4096);
    ASSERT_LT(b.n, 8 * 2048);
    chunk_both_ways("big_class.py", b.s, b.n, 2048, true);

    b.n = 0;
    for (int i = 0; i < 60; i++)
        sb_printf(
            &b,
            "/*\n * helper %d\n\nstatic int not_code(void);\n */\nint helper_%d(int x)\n{\n"
            "    if (x < 0)\n        goto out;\n    x *= 2;\n\nout:\n    return x + %d;\n}\n\n",
            i, i, i);
    ASSERT_GT(b.n, 8192);
    chunk_both_ways("labels.c", b.s, b.n, 2048, true);
    free(b.s);
}

/* A seam inside a construct (C's extern "C" {, which wraps whole headers) changes how that
 * construct is cut, but every line is still chunked and every invariant holds. */
TEST(segmented_parse_inside_a_construct)
{
    struct sbuf b = {0};

    need_grammars();
    sb_printf(&b, "#ifdef __cplusplus\nextern \"C\" {\n#endif\n\n");
    for (int i = 0; i < 300; i++)
        sb_printf(&b,
                  "#ifndef GL_EXT_%d\n#define GL_EXT_%d 1\ntypedef void (*PFN%dPROC)(int a, int "
                  "b);\n#endif\n\n",
                  i, i, i);
    sb_printf(&b, "#ifdef __cplusplus\n}\n#endif\n");
    chunk_both_ways("gl.h", b.s, b.n, 2048, false);
    /* No seam within reach (one huge literal): cut at the segment size anyway. */
    b.n = 0;
    sb_printf(&b, "TOPICS = {\n");
    for (int i = 0; i < 400; i++)
        sb_printf(&b, "    'topic%d': 'text of topic %d, long enough to count',\n", i, i);
    sb_printf(&b, "}\n");
    chunk_both_ways("topics.py", b.s, b.n, 2048, false);
    free(b.s);
}

TEST(split_is_balanced)
{
    struct chunker *c;
    struct chunk_options opt;
    struct chunk_list l;
    struct sbuf b = {0};
    uint32_t code[2];

    need_grammars();
    /* 30 statements of 3 words: 94 words of code, 1.6 times the 58 left by the header. */
    sb_printf(&b, "def f(a):\n");
    for (int i = 0; i < 30; i++)
        sb_printf(&b, "    a = a%d\n", i);
    sb_printf(&b, "    return a\n");
    ASSERT_OK(chunker_new(&c));
    chunk_options_init(&opt);
    opt.count_tokens = count_words;
    opt.max_tokens = opt.merge_tokens = 64;
    chunk_list_init(&l);
    ASSERT_EQ(chunk_file(c, "f.py", b.s, b.n, &opt, &l), 2);
    check_invariants("f.py", b.s, b.n, &opt, &l, false);
    /* Two pieces of similar size rather than a full one and a tiny tail. */
    for (int i = 0; i < 2; i++) {
        ASSERT_STREQ(l.items[i].symbol, "f");
        code[i] = (uint32_t)count_words(NULL, l.items[i].text + l.items[i].header_len,
                                        l.items[i].text_len - l.items[i].header_len);
    }
    ASSERT_LE(code[0] > code[1] ? code[0] - code[1] : code[1] - code[0], 6);
    chunk_list_release(&l);
    chunker_free(c);
    free(b.s);
}

TEST(definition_spans_every_piece_of_a_unit)
{
    /* A C function whose leading comment is too long to share a chunk with its code, and a
     * body cut in several pieces: every chunk of it (comment, title, body pieces) stands for
     * the whole function; the small function after it is its own definition. */
    char src[16384];
    size_t len = 0;
    uint32_t fn_line = 0, close_line = 0, line = 1, small_line = 0;
    struct chunker *c;
    struct chunk_options opt;
    struct chunk_list l;
    size_t n_long = 0;

#define ADD(...)                                                                                   \
    do {                                                                                           \
        len += (size_t)snprintf(src + len, sizeof(src) - len, __VA_ARGS__);                        \
        line++;                                                                                    \
    } while (0)
    ADD("/*\n");
    for (int i = 0; i < 14; i++)
        ADD(" * Comment line %d tells the reader how the drain keeps its ledger of tides.\n", i);
    ADD(" */\n");
    fn_line = line;
    ADD("int ring_drain(int *r)\n");
    ADD("{\n");
    ADD("    int sum = 0;\n");
    for (int i = 0; i < 60; i++)
        ADD("    sum += r[%d] * %d; /* step %d */\n", i, i + 3, i);
    ADD("    return sum;\n");
    close_line = line;
    ADD("}\n");
    ADD("\n");
    small_line = line;
    ADD("int ring_one(int *r) { return r[1]; }\n");
#undef ADD

    need_grammars();
    ASSERT_OK(chunker_new(&c));
    chunk_options_init(&opt);
    chunk_list_init(&l);
    ASSERT_GT(chunk_file(c, "drain.c", src, len, &opt, &l), 3);
    check_invariants("drain.c", src, len, &opt, &l, false);
    for (size_t i = 0; i < l.n; i++) {
        const struct chunk *ch = &l.items[i];
        if (strcmp(ch->symbol, "ring_drain") == 0) {
            ASSERT_EQ(ch->def_start_line, 1);
            ASSERT_EQ(ch->def_end_line, close_line);
            ASSERT_EQ(ch->def_start_byte, 0);
            n_long++;
        } else {
            ASSERT_STREQ(ch->symbol, "ring_one");
            ASSERT_EQ(ch->def_start_line, small_line);
            ASSERT_EQ(ch->def_end_line, small_line);
        }
    }
    /* The comment alone, the title and at least two pieces of the body. */
    ASSERT_GE(n_long, 4);
    ASSERT_EQ(l.items[0].unit_start_line, 1);
    ASSERT_LT(l.items[0].unit_end_line, fn_line);
    chunk_list_release(&l);
    chunker_free(c);
}

TEST(tiny_functions_merged)
{
    struct chunker *c;
    struct chunk_list l;
    struct sbuf b = {0};

    need_grammars();
    for (int i = 0; i < 40; i++)
        sb_printf(&b, "def get_%d(self):\n    return self._v%d\n\n\n", i, i);
    ASSERT_OK(chunker_new(&c));
    chunk_list_init(&l);
    ASSERT_EQ(chunk_file(c, "tiny.py", b.s, b.n, NULL, &l), 40);
    /* 40 functions of ~15 tokens: one chunk each (too short for titles), named alone, in a
     * handful of groups of several functions. */
    {
        size_t groups = 0;
        for (size_t i = 0; i < l.n; i++) {
            char name[16];
            snprintf(name, sizeof(name), "get_%zu", i);
            ASSERT_STREQ(l.items[i].symbol, name);
            ASSERT_FALSE(l.items[i].title);
            groups += i == 0 || l.items[i].start_line != l.items[i - 1].start_line;
        }
        ASSERT_LE(groups, 8);
        ASSERT_EQ(l.items[2].start_line, l.items[0].start_line);
        ASSERT_EQ(l.items[2].end_line, l.items[0].end_line);
        ASSERT_EQ(l.items[0].unit_end_line, 2);
    }
    {
        struct chunk_options opt;
        chunk_options_init(&opt);
        check_invariants("tiny.py", b.s, b.n, &opt, &l, false);
    }
    chunk_list_release(&l);
    chunker_free(c);
    free(b.s);
}

TEST(markdown_windows)
{
    struct chunker *c;
    struct chunk_options opt;
    struct chunk_list l;
    size_t len;
    char *src = read_all("data/chunk/sample.md", &len);

    ASSERT_OK(chunker_new(&c));
    chunk_options_init(&opt);
    opt.window_lines = 8;
    opt.window_overlap = 2;
    chunk_list_init(&l);
    ASSERT_GT(chunk_file(c, "README.md", src, len, &opt, &l), 2);
    check_invariants("README.md", src, len, &opt, &l, true);
    for (size_t i = 0; i < l.n; i++) {
        ASSERT_STREQ(l.items[i].language, "markdown");
        ASSERT_LE(l.items[i].end_line - l.items[i].start_line + 1, 8);
    }
    /* Windows carry the heading above them and start at headings. */
    ASSERT_STREQ(l.items[0].symbol, "Coarch");
    ASSERT_STREQ(l.items[l.n - 1].symbol, "Design");
    ASSERT_EQ(l.items[l.n - 1].start_line, 23);
    chunk_list_release(&l);

    /* Plain text windows overlap by window_overlap lines. */
    {
        struct sbuf b = {0};
        for (int i = 0; i < 100; i++)
            sb_printf(&b, "line %d of a plain text file\n", i);
        ASSERT_GT(chunk_file(c, "notes.txt", b.s, b.n, &opt, &l), 10);
        check_invariants("notes.txt", b.s, b.n, &opt, &l, true);
        ASSERT_STREQ(l.items[0].language, "text");
        ASSERT_EQ(l.items[0].start_line, 1);
        ASSERT_EQ(l.items[0].end_line, 8);
        ASSERT_EQ(l.items[1].start_line, 7);
        ASSERT_EQ(l.items[l.n - 1].end_line, 100);
        chunk_list_release(&l);
        free(b.s);
    }
    chunker_free(c);
    free(src);
}

TEST(ten_megabyte_line)
{
    struct chunker *c;
    struct chunk_options opt;
    struct chunk_list l;
    size_t len = 10u << 20, calls = 0, pos = 0;
    char *src = malloc(len);
    clock_t t0 = clock();

    ASSERT_TRUE(src);
    for (size_t i = 0; i < len; i++)
        src[i] = "var a=1;function(b){return b+2}"[i % 32];
    ASSERT_OK(chunker_new(&c));
    chunk_options_init(&opt);
    opt.count_tokens = count3;
    opt.count_ctx = &calls;
    chunk_list_init(&l);
    /* Over max_parse_bytes: not parsed, the single line is cut by bytes. */
    ASSERT_GT(chunk_file(c, "min.js", src, len, &opt, &l), 1000);
    check_invariants("min.js", src, len, &opt, &l, false);
    for (size_t i = 0; i < l.n; i++) {
        ASSERT_EQ(l.items[i].start_line, 1);
        ASSERT_EQ(l.items[i].start_byte, pos);
        pos = l.items[i].end_byte;
    }
    ASSERT_EQ(pos, len);
    chunk_list_release(&l);
    /* A chunk cap turns into -EFBIG, leaving the list as it was. */
    opt.max_chunks = 100;
    ASSERT_EQ(chunk_file(c, "min.js", src, len, &opt, &l), -EFBIG);
    ASSERT_EQ(l.n, 0);
    ASSERT_LT((double)(clock() - t0) / CLOCKS_PER_SEC, 60.0);
    chunker_free(c);
    free(src);
}

TEST(long_line_in_code)
{
    struct chunker *c;
    struct chunk_list l;
    struct sbuf b = {0};
    struct chunk_options opt;

    need_grammars();
    sb_printf(&b, "def f():\n    return 1\n\nTABLE = [");
    for (int i = 0; i < 3000; i++)
        sb_printf(&b, "%d, ", i);
    sb_printf(&b, "]\n\ndef g():\n    return 2\n");
    ASSERT_OK(chunker_new(&c));
    chunk_options_init(&opt);
    chunk_list_init(&l);
    ASSERT_GT(chunk_file(c, "table.py", b.s, b.n, &opt, &l), 5);
    check_invariants("table.py", b.s, b.n, &opt, &l, false);
    ASSERT_EQ(l.items[l.n - 1].start_line, 6);
    chunk_list_release(&l);
    chunker_free(c);
    free(b.s);
}

TEST(invalid_utf8_and_nul)
{
    static const char src[] = "def f(x):\n    return \"\xff\xfe caf\xc3\xa9 \xc3\"\n\n"
                              "def g():\n    s = 'a\0b'\n    return s  # \xed\xa0\x80 surrogate\n";
    struct chunker *c;
    struct chunk_options opt;
    struct chunk_list l;

    need_grammars();
    ASSERT_OK(chunker_new(&c));
    chunk_options_init(&opt);
    opt.min_tokens = 0;
    chunk_list_init(&l);
    ASSERT_EQ(chunk_file(c, "bad\xff.py", src, sizeof(src) - 1, &opt, &l), 2);
    check_invariants("bad\xef\xbf\xbd.py", src, sizeof(src) - 1, &opt, &l, false);
    ASSERT_STREQ(l.items[0].symbol, "f");
    ASSERT_STREQ(l.items[1].symbol, "g");
    ASSERT_TRUE(strstr(l.items[0].text, "\xef\xbf\xbd\xef\xbf\xbd caf\xc3\xa9 \xef\xbf\xbd"));
    ASSERT_TRUE(strstr(l.items[1].text, "'a\xef\xbf\xbd"
                                        "b'"));
    chunk_list_release(&l);
    chunker_free(c);
}

TEST(empty_and_blank)
{
    struct chunker *c;
    struct chunk_list l;

    ASSERT_OK(chunker_new(&c));
    chunk_list_init(&l);
    ASSERT_EQ(chunk_file(c, "empty.py", "", 0, NULL, &l), 0);
    ASSERT_EQ(chunk_file(c, "empty.py", NULL, 0, NULL, &l), 0);
    ASSERT_EQ(chunk_file(c, "blank.c", "\n\n   \n\t\n", 8, NULL, &l), 0);
    ASSERT_EQ(chunk_file(c, "x.md", "\n\nhi", 4, NULL, &l), 1);
    ASSERT_EQ(l.items[0].start_line, 3);
    ASSERT_EQ(l.items[0].end_line, 3);
    ASSERT_EQ(l.items[0].start_byte, 2);
    ASSERT_EQ(l.items[0].end_byte, 4);
    ASSERT_STREQ(l.items[0].text, "file: x.md\n\nhi");
    /* A second call appends. */
    ASSERT_EQ(chunk_file(c, "y.txt", "a\nb\n", 4, NULL, &l), 1);
    ASSERT_EQ(l.n, 2);
    ASSERT_STREQ(l.items[1].text, "file: y.txt\n\na\nb\n");
    chunk_list_release(&l);
    ASSERT_EQ(l.n, 0);
    chunker_free(c);
}

TEST(deep_nesting)
{
    struct chunker *c;
    struct chunk_options opt;
    struct chunk_list l;
    struct sbuf b = {0};

    need_grammars();
    sb_printf(&b, "int f(void)\n{\n");
    for (int i = 0; i < 3000; i++)
        sb_printf(&b, "if (x) {\n");
    for (int i = 0; i < 3000; i++)
        sb_printf(&b, "}\n");
    sb_printf(&b, "}\n");
    sb_printf(&b, "x = ");
    for (int i = 0; i < 20000; i++)
        sb_printf(&b, "(");
    for (int i = 0; i < 20000; i++)
        sb_printf(&b, ")");
    sb_printf(&b, ";\n");
    ASSERT_OK(chunker_new(&c));
    chunk_options_init(&opt);
    chunk_list_init(&l);
    ASSERT_GT(chunk_file(c, "deep.c", b.s, b.n, &opt, &l), 1);
    check_invariants("deep.c", b.s, b.n, &opt, &l, false);
    chunk_list_release(&l);
    ASSERT_GT(chunk_file(c, "deep.py", b.s, b.n, &opt, &l), 1);
    check_invariants("deep.py", b.s, b.n, &opt, &l, false);
    chunk_list_release(&l);
    chunker_free(c);
    free(b.s);
}

TEST(parse_timeout_falls_back_to_windows)
{
    struct chunker *c;
    struct chunk_options opt;
    struct chunk_list l;
    struct sbuf b = {0};

    need_grammars();
    for (int i = 0; i < 20000; i++)
        sb_printf(&b, "def f%d(a):\n    return a + %d\n\n", i, i);
    ASSERT_OK(chunker_new(&c));
    chunk_options_init(&opt);
    opt.parse_timeout_us = 1;
    chunk_list_init(&l);
    ASSERT_GT(chunk_file(c, "slow.py", b.s, b.n, &opt, &l), 100);
    check_invariants("slow.py", b.s, b.n, &opt, &l, true);
    /* Windows overlap and carry no symbol; the language is still known. */
    ASSERT_STREQ(l.items[0].symbol, "");
    ASSERT_STREQ(l.items[0].language, "python");
    ASSERT_LE(l.items[1].start_line, l.items[0].end_line);
    chunk_list_release(&l);
    /* The parser recovers for the next file. */
    opt.parse_timeout_us = 2000000;
    ASSERT_EQ(chunk_file(c, "ok.py", "def ok():\n    return 1\n", 23, &opt, &l), 1);
    ASSERT_STREQ(l.items[0].symbol, "ok");
    chunk_list_release(&l);
    chunker_free(c);
    free(b.s);
}

TEST(bad_arguments)
{
    struct chunker *c;
    struct chunk_options opt;
    struct chunk_list l;

    ASSERT_OK(chunker_new(&c));
    chunk_list_init(&l);
    chunk_options_init(&opt);
    ASSERT_EQ(chunk_file(NULL, "a.c", "x", 1, NULL, &l), -EINVAL);
    ASSERT_EQ(chunk_file(c, NULL, "x", 1, NULL, &l), -EINVAL);
    ASSERT_EQ(chunk_file(c, "a.c", NULL, 1, NULL, &l), -EINVAL);
    ASSERT_EQ(chunk_file(c, "a.c", "x", 1, NULL, NULL), -EINVAL);
    opt.max_tokens = 8;
    ASSERT_EQ(chunk_file(c, "a.c", "x", 1, &opt, &l), -EINVAL);
    chunk_options_init(&opt);
    opt.language = "klingon";
    ASSERT_EQ(chunk_file(c, "a.c", "x", 1, &opt, &l), -EINVAL);
    chunk_options_init(&opt);
    opt.max_file_bytes = 4;
    ASSERT_EQ(chunk_file(c, "a.c", "int x;\n", 7, &opt, &l), -EFBIG);
    ASSERT_EQ(l.n, 0);
    chunker_free(c);
    ASSERT_TRUE(chunker_free(NULL) == NULL);
    chunk_list_release(NULL);
}

TEST(forced_language)
{
    struct chunker *c;
    struct chunk_options opt;
    struct chunk_list l;
    static const char src[] = "def f():\n    return 1\n";

    need_grammars();
    ASSERT_OK(chunker_new(&c));
    chunk_options_init(&opt);
    opt.language = "python";
    chunk_list_init(&l);
    ASSERT_EQ(chunk_file(c, "no-extension", src, sizeof(src) - 1, &opt, &l), 1);
    ASSERT_STREQ(l.items[0].language, "python");
    ASSERT_STREQ(l.items[0].symbol, "f");
    chunk_list_release(&l);
    chunker_free(c);
}

TEST(language_detection)
{
    ASSERT_STREQ(chunk_detect_language("a/b/x.py", NULL, 0), "python");
    ASSERT_STREQ(chunk_detect_language("x.H", NULL, 0), "c");
    ASSERT_STREQ(chunk_detect_language("x.hpp", NULL, 0), "cpp");
    ASSERT_STREQ(chunk_detect_language("x.cc", NULL, 0), "cpp");
    ASSERT_STREQ(chunk_detect_language("x.mjs", NULL, 0), "javascript");
    ASSERT_STREQ(chunk_detect_language("x.tsx", NULL, 0), "tsx");
    ASSERT_STREQ(chunk_detect_language("x.ts", NULL, 0), "typescript");
    ASSERT_STREQ(chunk_detect_language("main.go", NULL, 0), "go");
    ASSERT_STREQ(chunk_detect_language("lib.rs", NULL, 0), "rust");
    ASSERT_STREQ(chunk_detect_language("A.java", NULL, 0), "java");
    ASSERT_STREQ(chunk_detect_language("README.md", NULL, 0), "markdown");
    ASSERT_STREQ(chunk_detect_language("src/Makefile", NULL, 0), "make");
    ASSERT_STREQ(chunk_detect_language(".bashrc", NULL, 0), "text");
    ASSERT_STREQ(chunk_detect_language("tool", "#!/usr/bin/env python3\nprint(1)\n", 31), "python");
    ASSERT_STREQ(chunk_detect_language("tool", "#!/usr/bin/python3.11 -u\n", 25), "python");
    ASSERT_STREQ(chunk_detect_language("run", "#!/bin/sh\nexit 0\n", 17), "shell");
    ASSERT_STREQ(chunk_detect_language("srv", "#!/usr/bin/env -S node --flag\n", 30), "javascript");
    ASSERT_STREQ(chunk_detect_language("x", "#!", 2), "text");
    ASSERT_STREQ(chunk_detect_language("x", NULL, 0), "text");
    ASSERT_EQ(chunk_language_has_grammar("python"), chunker_has_grammars());
    ASSERT_FALSE(chunk_language_has_grammar("markdown"));
}

int main(int argc, char **argv)
{
    return test_run_all(argc, argv);
}
