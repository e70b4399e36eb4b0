/*
 * ignore.c - git ignore semantics; see ignore.h for the model and why it is ours.
 */
#include "ignore.h"

#include "macro.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum {
    PAT_NEGATIVE = 1 << 0,  /* "!pattern" */
    PAT_MUSTBEDIR = 1 << 1, /* "pattern/" */
    PAT_NODIR = 1 << 2,     /* no slash: matches the basename at any depth */
};

struct pattern {
    char *text;
    unsigned flags;
};

struct plist {
    int level;
    char *base; /* "" or "a/b/" */
    size_t base_len;
    struct pattern *pats;
    size_t n_pats;
};

struct ignore_stack {
    struct plist *lists;
    size_t n_lists, cap_lists;
};

/* ---- wildmatch ---------------------------------------------------------------------------- */

enum { WM_MATCH = 0, WM_NOMATCH = 1, WM_ABORT_ALL = -1, WM_ABORT_TO_STARSTAR = -2 };

static bool is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

static bool is_alpha(unsigned char c)
{
    return (c | 32) >= 'a' && (c | 32) <= 'z';
}

/* POSIX character class `name` (len bytes) in the C locale: 1 member, 0 not, -1 unknown class. */
static int class_match(const char *name, size_t len, unsigned char c)
{
#define IS(n) (len == sizeof(n) - 1 && memcmp(name, n, len) == 0)
    if (IS("alnum"))
        return is_alpha(c) || is_digit(c);
    if (IS("alpha"))
        return is_alpha(c);
    if (IS("blank"))
        return c == ' ' || c == '\t';
    if (IS("cntrl"))
        return c < 32 || c == 127;
    if (IS("digit"))
        return is_digit(c);
    if (IS("graph"))
        return c > 32 && c < 127;
    if (IS("lower"))
        return c >= 'a' && c <= 'z';
    if (IS("print"))
        return c >= 32 && c < 127;
    if (IS("punct"))
        return c > 32 && c < 127 && !is_alpha(c) && !is_digit(c);
    if (IS("space"))
        return c == ' ' || (c >= '\t' && c <= '\r');
    if (IS("upper"))
        return c >= 'A' && c <= 'Z';
    if (IS("xdigit"))
        return is_digit(c) || ((c | 32) >= 'a' && (c | 32) <= 'f');
#undef IS
    return -1;
}

/*
 * Match a bracket expression starting just after '['.  Sets *ret_end to the character after
 * ']' and returns whether `c` is in the set; returns -1 for a malformed class (git treats the
 * whole pattern as not matching).
 */
static int bracket_match(const unsigned char *p, unsigned char c, const unsigned char **ret_end)
{
    bool negated = false, matched = false;
    unsigned char prev = 0;

    if (*p == '!' || *p == '^') {
        negated = true;
        p++;
    }
    for (bool first = true;; first = false) {
        unsigned char pc = *p;

        if (pc == '\0')
            return -1;
        if (pc == ']' && !first)
            break;
        if (pc == '\\') {
            pc = *++p;
            if (!pc)
                return -1;
            if (pc == c)
                matched = true;
        } else if (pc == '-' && prev && p[1] && p[1] != ']') {
            unsigned char hi = *++p;
            if (hi == '\\') {
                hi = *++p;
                if (!hi)
                    return -1;
            }
            if (prev <= c && c <= hi)
                matched = true;
            pc = 0;
        } else if (pc == '[' && p[1] == ':') {
            const unsigned char *s = p + 2, *e = s;
            while (*e && *e != ']')
                e++;
            if (!*e)
                return -1;
            if (e - s < 1 || e[-1] != ':') {
                /* Not a class: "[:" is literal '['. */
                if (c == '[')
                    matched = true;
            } else {
                int m = class_match((const char *)s, (size_t)(e - s) - 1, c);

                if (m < 0)
                    return -1;
                if (m)
                    matched = true;
                p = e;
                pc = 0;
            }
        } else if (pc == c) {
            matched = true;
        }
        prev = pc;
        p++;
    }
    *ret_end = p + 1;
    return matched != negated;
}

static bool glob_special(unsigned char c)
{
    return c == '*' || c == '?' || c == '[' || c == '\\';
}

/*
 * The core matcher, with git's wildmatch semantics (recursion only at '*').  `start` is the
 * beginning of the whole pattern, needed to know whether a "**" begins a path component.
 *
 * Plain recursion at every '*' is exponential in the number of stars (git's wildmatch has the
 * flaw: `*a*a*a*a*a*b` against a 200-byte name took 190 s), so the result of every recursive
 * call is remembered: a call is a pure function of where it starts in the pattern (always just
 * after a star run, or after a "**" component's '/') and in the text, so each such pair is
 * computed once and the match is O(stars x text) instead.  The table is made on the first
 * recursive call; patterns are bounded (IGNORE_WILDMATCH_MAX_LEN, _MAX_STARS) by the callers.
 */
struct wm {
    const unsigned char *start, *text;
    size_t plen, tlen;
    bool pathname;
    int16_t *slot; /* per pattern offset: its row in memo, -1 none yet (plen + 1 entries) */
    uint8_t *memo; /* rows x (tlen + 1): 0 unknown, else result + 3 */
    size_t rows, cap_rows;
    bool failed; /* out of memory: fall back to plain recursion */
};

static int dowild(struct wm *w, const unsigned char *p, const unsigned char *text);

static int dowild_memo(struct wm *w, const unsigned char *p, const unsigned char *text)
{
    size_t po = (size_t)(p - w->start), to = (size_t)(text - w->text);
    int r;

    if (!w->failed && !w->slot) {
        w->slot = malloc((w->plen + 1) * sizeof(*w->slot));
        if (w->slot)
            memset(w->slot, 0xff, (w->plen + 1) * sizeof(*w->slot));
        else
            w->failed = true;
    }
    if (w->failed)
        return dowild(w, p, text);
    if (w->slot[po] < 0) {
        if (w->rows == w->cap_rows) {
            size_t cap = w->cap_rows ? 2 * w->cap_rows : 4;
            uint8_t *m = cap <= INT16_MAX ? realloc(w->memo, cap * (w->tlen + 1)) : NULL;
            if (!m) {
                w->failed = true;
                return dowild(w, p, text);
            }
            memset(m + w->cap_rows * (w->tlen + 1), 0, (cap - w->cap_rows) * (w->tlen + 1));
            w->memo = m;
            w->cap_rows = cap;
        }
        w->slot[po] = (int16_t)w->rows++;
    }
    size_t cell = (size_t)w->slot[po] * (w->tlen + 1) + to;
    if (w->memo[cell])
        return w->memo[cell] - 3;
    r = dowild(w, p, text);
    /* By index: the recursion may have grown (moved) the table. */
    w->memo[cell] = (uint8_t)(r + 3);
    return r;
}

static int dowild(struct wm *w, const unsigned char *p, const unsigned char *text)
{
    const unsigned char *start = w->start;
    bool pathname = w->pathname;
    unsigned char pc;

    for (; (pc = *p) != '\0'; text++, p++) {
        unsigned char tc = *text;
        bool match_slash;
        int r;

        if (tc == '\0' && pc != '*')
            return WM_ABORT_ALL;
        switch (pc) {
        case '\\':
            pc = *++p;
            if (pc != tc)
                return WM_NOMATCH;
            continue;
        case '?':
            if (pathname && tc == '/')
                return WM_NOMATCH;
            continue;
        case '[': {
            const unsigned char *end;
            int m = bracket_match(p + 1, tc, &end);

            if (m < 0)
                return WM_ABORT_ALL;
            if (!m || (pathname && tc == '/'))
                return WM_NOMATCH;
            p = end - 1;
            continue;
        }
        case '*':
            break;
        default:
            if (pc != tc)
                return WM_NOMATCH;
            continue;
        }

        /* '*' or '**' */
        if (*++p == '*') {
            const unsigned char *before = p - 2;

            while (*++p == '*')
                ;
            if (!pathname) {
                match_slash = true;
            } else if ((before < start || *before == '/') && (*p == '\0' || *p == '/')) {
                /* "**" as a whole path component: a/<star><star>/b also matches a/b. */
                if (*p == '/' && dowild_memo(w, p + 1, text) == WM_MATCH)
                    return WM_MATCH;
                match_slash = true;
            } else {
                match_slash = false;
            }
        } else {
            match_slash = !pathname;
        }
        if (*p == '\0') {
            if (!match_slash && strchr((const char *)text, '/'))
                return WM_NOMATCH;
            return WM_MATCH;
        }
        if (!match_slash && *p == '/') {
            const char *slash = strchr((const char *)text, '/');

            if (!slash)
                return WM_NOMATCH;
            text = (const unsigned char *)slash;
            continue; /* the loop step consumes the '/' in both */
        }
        for (;;) {
            tc = *text;
            if (tc == '\0')
                return WM_ABORT_ALL;
            if (!glob_special(*p)) {
                /* Skip ahead to the next occurrence of the literal that follows the star. */
                while ((tc = *text) != '\0' && (match_slash || tc != '/') && tc != *p)
                    text++;
                if (tc != *p)
                    return WM_NOMATCH;
            }
            r = dowild_memo(w, p, text);
            if (r != WM_NOMATCH) {
                if (!match_slash || r != WM_ABORT_TO_STARSTAR)
                    return r;
            } else if (!match_slash && tc == '/') {
                return WM_ABORT_TO_STARSTAR;
            }
            text++;
        }
    }
    return *text ? WM_NOMATCH : WM_MATCH;
}

bool ignore_wildmatch_ok(const char *pattern)
{
    size_t stars = 0, len = strlen(pattern);

    for (size_t i = 0; i < len; i++)
        stars += pattern[i] == '*';
    return len <= IGNORE_WILDMATCH_MAX_LEN && stars <= IGNORE_WILDMATCH_MAX_STARS;
}

bool ignore_wildmatch(const char *pattern, const char *text, bool pathname)
{
    struct wm w = {
        .start = (const unsigned char *)pattern,
        .text = (const unsigned char *)text,
        .plen = strlen(pattern),
        .tlen = strlen(text),
        .pathname = pathname,
    };
    int r;

    if (!ignore_wildmatch_ok(pattern))
        return false;
    r = dowild(&w, w.start, w.text);
    free(w.slot);
    free(w.memo);
    return r == WM_MATCH;
}

/* ---- pattern lists ---------------------------------------------------------------------- */

struct ignore_stack *ignore_stack_new(void)
{
    return calloc(1, sizeof(struct ignore_stack));
}

static void plist_release(struct plist *l)
{
    for (size_t i = 0; i < l->n_pats; i++)
        free(l->pats[i].text);
    free(l->pats);
    free(l->base);
}

struct ignore_stack *ignore_stack_free(struct ignore_stack *s)
{
    if (!s)
        return NULL;
    for (size_t i = 0; i < s->n_lists; i++)
        plist_release(&s->lists[i]);
    free(s->lists);
    free(s);
    return NULL;
}

/*
 * Parse one line as git's add_pattern() does: trailing unescaped spaces trimmed, '#' comments
 * and blank lines skipped, "\#" and "\!" escapes, '!' negation, trailing '/' = directories
 * only, a leading '/' anchors (such a pattern contains a slash and so matches by path).
 * Returns 1 with *ret filled, 0 for a line without a pattern, -ENOMEM.
 */
static int parse_line(const char *line, size_t len, struct pattern *ret)
{
    unsigned flags = 0;
    char *text;

    if (len > 0 && line[len - 1] == '\r')
        len--;
    /* Trim trailing spaces unless escaped with a backslash. */
    while (len > 0 && line[len - 1] == ' ') {
        size_t bs = 0;
        while (bs + 1 < len && line[len - 2 - bs] == '\\')
            bs++;
        if (bs % 2 == 1)
            break;
        len--;
    }
    if (len == 0 || line[0] == '#')
        return 0;
    if (line[0] == '!') {
        flags |= PAT_NEGATIVE;
        line++;
        len--;
    }
    if (len > 0 && line[len - 1] == '/') {
        flags |= PAT_MUSTBEDIR;
        len--;
    }
    if (len == 0)
        return 0;
    if (!memchr(line, '/', len))
        flags |= PAT_NODIR;
    else if (line[0] == '/') {
        line++;
        len--;
    }
    text = strndup(line, len);
    if (!text)
        return -ENOMEM;
    ret->text = text;
    ret->flags = flags;
    return 1;
}

int ignore_stack_push(struct ignore_stack *s, int level, const char *base, const char *text,
                      size_t len)
{
    struct plist l = {.level = level};
    size_t cap = 0;
    int r;

    l.base = strdup(base);
    if (!l.base)
        return -ENOMEM;
    l.base_len = strlen(base);
    for (size_t i = 0; i < len;) {
        const char *nl = memchr(text + i, '\n', len - i);
        size_t n = nl ? (size_t)(nl - (text + i)) : len - i;
        struct pattern p;

        r = parse_line(text + i, n, &p);
        if (r < 0)
            goto fail;
        if (r > 0) {
            r = array_grow((void **)&l.pats, &cap, l.n_pats + 1, sizeof(*l.pats));
            if (r < 0) {
                free(p.text);
                goto fail;
            }
            l.pats[l.n_pats++] = p;
        }
        i += n + 1;
    }
    r = array_grow((void **)&s->lists, &s->cap_lists, s->n_lists + 1, sizeof(*s->lists));
    if (r < 0)
        goto fail;
    s->lists[s->n_lists++] = l;
    return 0;
fail:
    plist_release(&l);
    return r;
}

void ignore_stack_pop_to(struct ignore_stack *s, int level)
{
    size_t keep = 0;

    for (size_t i = 0; i < s->n_lists; i++) {
        if (s->lists[i].level != IGNORE_LEVEL_FILE && s->lists[i].level >= level)
            plist_release(&s->lists[i]);
        else
            s->lists[keep++] = s->lists[i];
    }
    s->n_lists = keep;
}

static bool pattern_matches(const struct plist *l, const struct pattern *p, const char *path,
                            const char *basename, bool is_dir)
{
    if ((p->flags & PAT_MUSTBEDIR) && !is_dir)
        return false;
    if (p->flags & PAT_NODIR)
        return ignore_wildmatch(p->text, basename, false);
    /* A path pattern is relative to the directory of the file it came from. */
    if (strncmp(path, l->base, l->base_len) != 0)
        return false;
    return ignore_wildmatch(p->text, path + l->base_len, true);
}

/* Last match in one list: 1 ignored, 0 re-included, -1 no pattern matched. */
static int plist_decide(const struct plist *l, const char *path, const char *basename, bool is_dir)
{
    for (size_t i = l->n_pats; i-- > 0;)
        if (pattern_matches(l, &l->pats[i], path, basename, is_dir))
            return !(l->pats[i].flags & PAT_NEGATIVE);
    return -1;
}

bool ignore_stack_is_ignored(const struct ignore_stack *s, const char *path, bool is_dir)
{
    const char *slash = strrchr(path, '/');
    const char *basename = slash ? slash + 1 : path;
    int d;

    /*
     * Directory lists were pushed as the walk descended, so walking them backwards visits the
     * deepest first (and, within one directory, .coarchignore before .gitignore).  The first
     * list with a matching pattern decides.
     */
    for (size_t i = s->n_lists; i-- > 0;) {
        if (s->lists[i].level == IGNORE_LEVEL_FILE)
            continue;
        d = plist_decide(&s->lists[i], path, basename, is_dir);
        if (d >= 0)
            return d;
    }
    /* Then the file lists in push order: .git/info/exclude, then the global excludes file. */
    for (size_t i = 0; i < s->n_lists; i++) {
        if (s->lists[i].level != IGNORE_LEVEL_FILE)
            continue;
        d = plist_decide(&s->lists[i], path, basename, is_dir);
        if (d >= 0)
            return d;
    }
    return false;
}
