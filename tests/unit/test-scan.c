/*
 * test-scan.c - the git-aware walk and the ignore matcher.
 *
 * The strongest check is differential: random trees with random .gitignore files, compared
 * file-for-file with `git ls-files --others --exclude-standard` (git itself is the
 * specification).  It needs git; without it those cases skip.
 */
#include "ignore.h"
#include "macro.h"
#include "scan.h"
#include "test.h"

#include <fcntl.h>
#include <ftw.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

/* ---- helpers ---------------------------------------------------------------------------- */

static void write_file(const char *root, const char *rel, const char *content, size_t len)
{
    char path[4096], dir[4096];

    snprintf(path, sizeof(path), "%s/%s", root, rel);
    snprintf(dir, sizeof(dir), "%s", path);
    for (char *p = dir + strlen(root) + 1; *p; p++)
        if (*p == '/') {
            *p = '\0';
            mkdir(dir, 0755);
            *p = '/';
        }
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    ASSERT_TRUE(fd >= 0);
    ASSERT_EQ(write(fd, content, len), (ssize_t)len);
    close(fd);
}

static void put(const char *root, const char *rel, const char *content)
{
    write_file(root, rel, content, strlen(content));
}

static int rm_cb(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(p);
}

static void rm_rf(const char *root)
{
    nftw(root, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

struct collected {
    char **paths;
    size_t n, cap;
};

static int collect(void *ud, const struct scan_file *f)
{
    struct collected *c = ud;

    if (array_grow((void **)&c->paths, &c->cap, c->n + 1, sizeof(char *)) < 0)
        return -ENOMEM;
    c->paths[c->n++] = strdup(f->path);
    return 0;
}

static void collected_release(struct collected *c)
{
    for (size_t i = 0; i < c->n; i++)
        free(c->paths[i]);
    free(c->paths);
    *c = (struct collected){0};
}

static bool has(const struct collected *c, const char *p)
{
    for (size_t i = 0; i < c->n; i++)
        if (strcmp(c->paths[i], p) == 0)
            return true;
    return false;
}

static char *mktemp_dir(void)
{
    char *t = strdup("/tmp/coarch-scan-XXXXXX");
    ASSERT_TRUE(mkdtemp(t) != NULL);
    return t;
}

static void scan_collect(const char *root, const struct scan_options *opt, struct collected *c,
                         struct scan_report *rep)
{
    ASSERT_OK(scan_repo(root, opt, collect, c, rep));
}

/* ---- wildmatch -------------------------------------------------------------------------- */

TEST(wildmatch_cases)
{
    static const struct {
        const char *pat, *text;
        bool pathname, expect;
    } cases[] = {
        {"foo", "foo", true, true},         {"foo", "bar", true, false},
        {"*", "foo", true, true},           {"*", "foo/bar", true, false},
        {"*", "foo/bar", false, true},      {"f*o", "foo", true, true},
        {"?oo", "foo", true, true},         {"?", "/", true, false},
        {"**", "a/b/c", true, true},        {"**/c", "c", true, true},
        {"**/c", "a/b/c", true, true},      {"a/**/c", "a/c", true, true},
        {"a/**/c", "a/b/x/c", true, true},  {"a/**", "a/b/c", true, true},
        {"a/**", "a", true, false},         {"a**b", "a/b", true, false},
        {"a*/b", "ax/b", true, true},       {"a*/b", "a/x/b", true, false},
        {"[ab]x", "bx", true, true},        {"[!ab]x", "bx", true, false},
        {"[^ab]x", "cx", true, true},       {"[a-c]", "b", true, true},
        {"[a-c]", "d", true, false},        {"[]]", "]", true, true},
        {"[[:digit:]]*", "7z", true, true}, {"[[:alpha:]]", "7", true, false},
        {"[[:bogus:]]", "a", true, false},  {"\\*", "*", true, true},
        {"\\*", "x", true, false},          {"*.c", "dir/x.c", true, false},
        {"*.c", "x.c", true, true},         {"[a/]", "/", true, false},
        {"a/*", "a/b", true, true},         {"a/*", "a/b/c", true, false},
        {"abc", "ab", true, false},         {"*[", "x[", true, false},
    };

    for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
        bool got = ignore_wildmatch(cases[i].pat, cases[i].text, cases[i].pathname);
        if (got != cases[i].expect)
            test_fail(__FILE__, __LINE__, "wildmatch(\"%s\", \"%s\", %d) = %d, want %d",
                      cases[i].pat, cases[i].text, cases[i].pathname, got, cases[i].expect);
    }
}

TEST(wildmatch_many_stars_is_fast_and_bounded)
{
    /* Exponential before: `*a*a*a*a*a*b` against 200 a's took 190 s (issue 16, H1/H2). */
    char text[256], pat[256];
    struct timespec t0, t1;
    double cpu;

    memset(text, 'a', 200);
    text[200] = '\0';
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t0);
    ASSERT_FALSE(ignore_wildmatch("*a*a*a*a*a*a*a*a*a*a*b", text, false));
    ASSERT_FALSE(ignore_wildmatch("*a*a*a*a*a*a*a*a*a*a*b", text, true));
    ASSERT_FALSE(ignore_wildmatch("**/**/**/**/**/**/**/**/**/**/**/**/b",
                                  "a/a/a/a/a/a/a/a/a/a/a/a/a/a/a"
                                  "/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/c",
                                  true));
    text[199] = 'b';
    ASSERT_TRUE(ignore_wildmatch("*a*a*a*a*a*a*a*a*a*a*b", text, false));
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t1);
    cpu = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    ASSERT_LT(cpu, 2.0);
    /* Same answers as the plain semantics on small cases with several stars. */
    ASSERT_TRUE(ignore_wildmatch("*a*b*c", "xaybzc", true));
    ASSERT_FALSE(ignore_wildmatch("*a*b*c", "xaybz/c", true));
    ASSERT_TRUE(ignore_wildmatch("**/x*y*/z", "p/q/xay/z", true));
    ASSERT_TRUE(ignore_wildmatch("a/**/b/**/c", "a/b/c", true));
    ASSERT_FALSE(ignore_wildmatch("a/**/b/**/c", "a/c", true));
    /* Over the bounds: never a match (and never slow). */
    memset(pat, '*', 65);
    pat[65] = '\0';
    ASSERT_FALSE(ignore_wildmatch_ok(pat));
    ASSERT_FALSE(ignore_wildmatch(pat, "anything", false));
    pat[64] = '\0';
    ASSERT_TRUE(ignore_wildmatch_ok(pat));
    ASSERT_TRUE(ignore_wildmatch(pat, "anything", false));
}

TEST(ignore_stack_precedence)
{
    struct ignore_stack *s = ignore_stack_new();
    const char *root = "*.log\nbuild/\n/only-root\n";
    const char *sub = "!keep.log\nx.txt\n";

    ASSERT_OK(ignore_stack_push(s, 0, "", root, strlen(root)));
    ASSERT_OK(ignore_stack_push(s, 1, "sub/", sub, strlen(sub)));
    ASSERT_TRUE(ignore_stack_is_ignored(s, "a.log", false));
    ASSERT_FALSE(ignore_stack_is_ignored(s, "sub/keep.log", false)); /* libgit2 1.5 says yes */
    ASSERT_TRUE(ignore_stack_is_ignored(s, "sub/other.log", false));
    ASSERT_TRUE(ignore_stack_is_ignored(s, "sub/x.txt", false));
    ASSERT_TRUE(ignore_stack_is_ignored(s, "build", true));
    ASSERT_FALSE(ignore_stack_is_ignored(s, "build", false)); /* trailing slash: dirs only */
    ASSERT_TRUE(ignore_stack_is_ignored(s, "only-root", false));
    ASSERT_FALSE(ignore_stack_is_ignored(s, "sub/only-root", false));
    ignore_stack_pop_to(s, 1);
    ASSERT_TRUE(ignore_stack_is_ignored(s, "sub/keep.log", false));
    ignore_stack_free(s);
}

TEST(ignore_parse_details)
{
    struct ignore_stack *s = ignore_stack_new();
    const char *t = "# comment\n\\#hash\n\\!bang\ntrail   \nesc\\ \n\n   \nwin\r\n";

    ASSERT_OK(ignore_stack_push(s, 0, "", t, strlen(t)));
    ASSERT_FALSE(ignore_stack_is_ignored(s, "# comment", false));
    ASSERT_TRUE(ignore_stack_is_ignored(s, "#hash", false));
    ASSERT_TRUE(ignore_stack_is_ignored(s, "!bang", false));
    ASSERT_TRUE(ignore_stack_is_ignored(s, "trail", false));
    ASSERT_TRUE(ignore_stack_is_ignored(s, "win", false));
    ignore_stack_free(s);
}

/* ---- the walk --------------------------------------------------------------------------- */

TEST(scan_filters)
{
    _cleanup_free_ char *root = mktemp_dir();
    struct collected c = {0};
    struct scan_report rep;
    struct scan_options opt;
    char big[2048];
    char link[4096];

    put(root, ".gitignore", "*.tmp\nignored_dir/\n");
    put(root, "src/main.c", "int main(void) { return 0; }\n");
    put(root, "src/util.tmp", "scratch\n");
    put(root, "ignored_dir/a.c", "x\n");
    put(root, "node_modules/lib/index.js", "module.exports = 1;\n");
    write_file(root, "bin/blob.dat", "ab\0cd", 5);
    memset(big, 'x', sizeof(big));
    write_file(root, "big.txt", big, sizeof(big));
    put(root, ".coarchignore", "docs/private.md\n");
    put(root, "docs/private.md", "secret\n");
    put(root, "docs/public.md", "hello\n");
    snprintf(link, sizeof(link), "%s/loop", root);
    ASSERT_EQ(symlink(root, link), 0); /* a loop: must never be followed */
    snprintf(link, sizeof(link), "%s/etc-link", root);
    ASSERT_EQ(symlink("/etc", link), 0); /* out of the repository */

    scan_options_init(&opt);
    opt.max_file_size = 1024;
    opt.use_global_excludes = false;
    scan_collect(root, &opt, &c, &rep);
    ASSERT_TRUE(has(&c, "src/main.c"));
    ASSERT_TRUE(has(&c, "docs/public.md"));
    ASSERT_TRUE(has(&c, ".gitignore"));
    ASSERT_FALSE(has(&c, "src/util.tmp"));
    ASSERT_FALSE(has(&c, "ignored_dir/a.c"));
    ASSERT_FALSE(has(&c, "node_modules/lib/index.js"));
    ASSERT_FALSE(has(&c, "bin/blob.dat"));
    ASSERT_FALSE(has(&c, "big.txt"));
    ASSERT_FALSE(has(&c, "docs/private.md"));
    ASSERT_EQ(rep.binary, 1);
    ASSERT_EQ(rep.too_large, 1);
    ASSERT_EQ(rep.vendored, 1);
    ASSERT_EQ(rep.symlinks, 2);
    ASSERT_GE(rep.ignored, 3);
    ASSERT_EQ(rep.files, c.n);
    /* Byte order of names, depth first: deterministic for checkpoint cursors. */
    for (size_t i = 1; i < c.n; i++)
        ASSERT_LT(strcmp(c.paths[i - 1], c.paths[i]), 0);
    collected_release(&c);
    scan_report_release(&rep);

    opt.include_vendored = true;
    scan_collect(root, &opt, &c, &rep);
    ASSERT_TRUE(has(&c, "node_modules/lib/index.js"));
    collected_release(&c);
    scan_report_release(&rep);
    rm_rf(root);
}

TEST(scan_unreadable_is_reported)
{
    if (geteuid() == 0)
        TEST_SKIP("running as root: permissions do not stop reads");

    _cleanup_free_ char *root = mktemp_dir();
    struct collected c = {0};
    struct scan_report rep;
    struct scan_options opt;
    char p[4096];

    put(root, "ok.c", "int x;\n");
    put(root, "secret.c", "int y;\n");
    snprintf(p, sizeof(p), "%s/secret.c", root);
    chmod(p, 0);
    scan_options_init(&opt);
    scan_collect(root, &opt, &c, &rep);
    ASSERT_TRUE(has(&c, "ok.c"));
    ASSERT_EQ(rep.errors, 1);
    ASSERT_STREQ(rep.error_list[0].path, "secret.c");
    ASSERT_EQ(rep.error_list[0].error, -EACCES);
    collected_release(&c);
    scan_report_release(&rep);
    rm_rf(root);
}

TEST(scan_bad_root)
{
    struct scan_report rep;

    ASSERT_EQ(scan_repo("/nonexistent/coarch", NULL, collect, NULL, &rep), -ENOENT);
    ASSERT_EQ(scan_repo("/etc/hostname", NULL, collect, NULL, &rep), -ENOTDIR);
}

static int stop_after_two(void *ud, const struct scan_file *f)
{
    int *n = ud;
    return ++*n >= 2 ? -EINTR : 0;
}

TEST(scan_callback_stops_walk)
{
    _cleanup_free_ char *root = mktemp_dir();
    struct scan_report rep;
    int n = 0;

    put(root, "a", "1");
    put(root, "b", "2");
    put(root, "c", "3");
    ASSERT_EQ(scan_repo(root, NULL, stop_after_two, &n, &rep), -EINTR);
    ASSERT_EQ(n, 2);
    scan_report_release(&rep);
    rm_rf(root);
}

/* ---- differential against git ----------------------------------------------------------- */

static bool have_git(void)
{
    return system("git --version >/dev/null 2>&1") == 0;
}

static uint64_t rng_state;
static unsigned rnd(unsigned n)
{
    rng_state = rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (unsigned)((rng_state >> 33) % n);
}

static const char *const names[] = {"a",        "b",   "foo", "bar",   "x.log", "y.txt",
                                    "keep.log", "doc", "z.c", "build", "Ab"};
static const char *const pats[] = {
    "*.log",  "!keep.log", "foo/",  "/bar",   "a/**/b", "**/z.c", "b*",       "[ab]*",
    "!*.txt", "x?log",     "a/*/c", "doc",    "!doc",   "*",      "!foo",     "**/build/",
    "a/",     "!a/",       "/a/b",  "bar/**", "!b/",    "y.*",    "*.[ct]*",  "foo/*.log",
    "!**/a",  "Ab",        "\\!x",  "?",      "a*/b",   "!/foo",  "**/foo/b", "#x",
};

static void random_tree(const char *root, int depth, char *rel, size_t rel_len)
{
    unsigned n = 1 + rnd(4);

    if (rnd(3) != 0) {
        char ig[512] = "", p[4096];
        unsigned k = 1 + rnd(4);
        for (unsigned i = 0; i < k; i++) {
            strcat(ig, pats[rnd(ELEMENTSOF(pats))]);
            strcat(ig, "\n");
        }
        snprintf(p, sizeof(p), "%s.gitignore", rel);
        put(root, p, ig);
    }
    for (unsigned i = 0; i < n; i++) {
        const char *name = names[rnd(ELEMENTSOF(names))];
        char p[4096];

        snprintf(p, sizeof(p), "%s%s", rel, name);
        if (depth < 3 && rnd(2) == 0) {
            char sub[4096];
            struct stat st;
            snprintf(sub, sizeof(sub), "%s/%s", root, p);
            if (stat(sub, &st) == 0 && !S_ISDIR(st.st_mode))
                continue;
            mkdir(sub, 0755);
            size_t l = (size_t)snprintf(sub, sizeof(sub), "%s/", p);
            random_tree(root, depth + 1, sub, l);
        } else {
            char full[4096];
            struct stat st;
            snprintf(full, sizeof(full), "%s/%s", root, p);
            if (stat(full, &st) == 0)
                continue;
            put(root, p, "x\n");
        }
    }
    (void)rel_len;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

TEST(scan_matches_git)
{
    int mismatched_trees = 0;
    uint64_t total_files = 0, total_ignored = 0;

    if (!have_git())
        TEST_SKIP("git is not installed");
    setenv("XDG_CONFIG_HOME", "/nonexistent", 1);
    setenv("GIT_CONFIG_NOSYSTEM", "1", 1);
    setenv("GIT_CONFIG_GLOBAL", "/dev/null", 1);
    for (unsigned seed = 1; seed <= 150; seed++) {
        _cleanup_free_ char *root = mktemp_dir();
        struct collected ours = {0}, theirs = {0};
        struct scan_options opt;
        struct scan_report rep;
        char cmd[8192], line[4096], rel[4096] = "";
        FILE *f;

        rng_state = seed;
        snprintf(cmd, sizeof(cmd), "git init -q '%s'", root);
        ASSERT_EQ(system(cmd), 0);
        random_tree(root, 0, rel, 0);
        if (rnd(2)) {
            char p[4096];
            snprintf(p, sizeof(p), ".git/info/exclude");
            put(root, p, pats[rnd(ELEMENTSOF(pats))]);
        }
        snprintf(cmd, sizeof(cmd), "git -C '%s' ls-files --others --exclude-standard", root);
        f = popen(cmd, "r");
        ASSERT_TRUE(f != NULL);
        while (fgets(line, sizeof(line), f)) {
            line[strcspn(line, "\n")] = '\0';
            array_grow((void **)&theirs.paths, &theirs.cap, theirs.n + 1, sizeof(char *));
            theirs.paths[theirs.n++] = strdup(line);
        }
        ASSERT_EQ(pclose(f), 0);

        scan_options_init(&opt);
        opt.include_vendored = true; /* git has no such notion */
        opt.use_global_excludes = false;
        scan_collect(root, &opt, &ours, &rep);
        if (theirs.n > 1)
            qsort(theirs.paths, theirs.n, sizeof(char *), cmp_str);
        if (ours.n > 1)
            qsort(ours.paths, ours.n, sizeof(char *), cmp_str);

        total_files += ours.n;
        total_ignored += rep.ignored;
        bool same = ours.n == theirs.n;
        for (size_t i = 0; same && i < ours.n; i++)
            same = strcmp(ours.paths[i], theirs.paths[i]) == 0;
        if (!same) {
            mismatched_trees++;
            fprintf(stderr, "seed %u (%s): ours %zu files, git %zu files\n", seed, root, ours.n,
                    theirs.n);
            for (size_t i = 0; i < ours.n; i++)
                if (!theirs.n ||
                    !bsearch(&ours.paths[i], theirs.paths, theirs.n, sizeof(char *), cmp_str))
                    fprintf(stderr, "  only ours: %s\n", ours.paths[i]);
            for (size_t i = 0; i < theirs.n; i++)
                if (!ours.n ||
                    !bsearch(&theirs.paths[i], ours.paths, ours.n, sizeof(char *), cmp_str))
                    fprintf(stderr, "  only git:  %s\n", theirs.paths[i]);
        } else {
            rm_rf(root);
        }
        collected_release(&ours);
        collected_release(&theirs);
        scan_report_release(&rep);
    }
    ASSERT_EQ(mismatched_trees, 0);
    /* The generator must exercise both outcomes, or the comparison proves little. */
    printf("# %ju files kept, %ju paths ignored across 150 trees\n", (uintmax_t)total_files,
           (uintmax_t)total_ignored);
    ASSERT_GT(total_files, 300);
    ASSERT_GT(total_ignored, 300);
}

TEST(scan_subdirectory_of_repo_uses_outer_rules)
{
    if (!have_git())
        TEST_SKIP("git is not installed");

    _cleanup_free_ char *root = mktemp_dir();
    struct collected c = {0};
    struct scan_report rep;
    struct scan_options opt;
    char sub[4096];
    snprintf(sub, sizeof(sub), "git init -q '%s'", root);
    ASSERT_EQ(system(sub), 0);
    put(root, ".gitignore", "*.gen\nsrc/skip/\n");
    put(root, ".git/info/exclude", "local.c\n");
    put(root, "src/a.c", "a\n");
    put(root, "src/b.gen", "b\n");
    put(root, "src/local.c", "c\n");
    put(root, "src/skip/x.c", "x\n");
    snprintf(sub, sizeof(sub), "%s/src", root);
    scan_options_init(&opt);
    opt.use_global_excludes = false;
    scan_collect(sub, &opt, &c, &rep);
    ASSERT_EQ(c.n, 1);
    ASSERT_STREQ(c.paths[0], "a.c");
    collected_release(&c);
    scan_report_release(&rep);
    rm_rf(root);
}

int main(int argc, char **argv)
{
    return test_run_all(argc, argv);
}
