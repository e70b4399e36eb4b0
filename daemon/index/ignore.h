/*
 * ignore.h - git's ignore rules, evaluated exactly as git(1) does.
 *
 * We do not use libgit2's matcher: libgit2 1.5 (Debian 12) disagrees with git on negations in
 * nested .gitignore files (libgit2/libgit2#7284 and a case we reproduced: `*.log` at the root
 * with `!keep.log` in sub/.gitignore keeps sub/keep.log for git, ignores it for libgit2).
 * tests/unit/test-scan.c checks this module against `git check-ignore` on generated cases.
 *
 * The model follows git's dir.c:
 *  - a pattern list comes from one file (a .gitignore, .git/info/exclude, the global
 *    excludes file, a .coarchignore) and has a base directory ("" for the root);
 *  - within a list the LAST matching pattern decides; a `!` pattern re-includes;
 *  - lists are consulted deepest directory first, then .git/info/exclude, then the global
 *    file; the first list with a match decides;
 *  - a pattern with no slash (after removing a trailing one) matches the basename at any depth;
 *    otherwise it matches the path relative to its base with wildmatch (WM_PATHNAME, `**`);
 *  - a trailing slash matches directories only;
 *  - nothing below an excluded directory can be re-included (the walker never descends).
 *
 * Threading: a stack is used by one thread (the scanner); nothing is global.
 */
#ifndef COARCH_INDEX_IGNORE_H
#define COARCH_INDEX_IGNORE_H

#include <stdbool.h>
#include <stddef.h>

/* Patterns longer or with more stars never match (and .gitignore lines like that are
 * skipped): the bound keeps a hostile pattern's cost small (see ignore.c). */
#define IGNORE_WILDMATCH_MAX_LEN 1024
#define IGNORE_WILDMATCH_MAX_STARS 64

/* wildmatch(3)-style: pattern against text; pathname=true makes `*` stop at '/'.  Time is
 * O(stars x text length), whatever the pattern. */
bool ignore_wildmatch(const char *pattern, const char *text, bool pathname);
/* Whether the pattern is within the bounds above. */
bool ignore_wildmatch_ok(const char *pattern);

struct ignore_stack;

struct ignore_stack *ignore_stack_new(void);
struct ignore_stack *ignore_stack_free(struct ignore_stack *s);

/*
 * Add the patterns in `text` (the contents of one ignore file) with base directory `base`
 * ("" or "dir/sub/", always ending in '/' unless empty).  `level` orders lists: directory lists
 * use their depth (root = 0); the "file" lists (info/exclude, global) use IGNORE_LEVEL_FILE and
 * are consulted after every directory list.  Returns 0 or -ENOMEM.
 */
#define IGNORE_LEVEL_FILE (-1)
int ignore_stack_push(struct ignore_stack *s, int level, const char *base, const char *text,
                      size_t len);
/* Pop every directory list whose level is >= `level` (leaving a directory during the walk). */
void ignore_stack_pop_to(struct ignore_stack *s, int level);

/* Is `path` (relative to the root, no leading or trailing slash) ignored? */
bool ignore_stack_is_ignored(const struct ignore_stack *s, const char *path, bool is_dir);

#endif
