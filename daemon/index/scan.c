/*
 * scan.c - see scan.h.
 *
 * The walk holds one directory fd per level (openat with O_NOFOLLOW, so a directory swapped
 * for a symlink mid-walk is refused rather than followed) and one reusable read buffer of at
 * most max_file_size bytes, so memory does not grow with the repository.  Paths handed to the
 * ignore matcher are relative to the enclosing git work tree (which may be above the root we
 * were asked to scan); paths handed to the callback are relative to the scan root.
 */
#include "scan.h"

#include "ignore.h"
#include "macro.h"
#include "paths.h"

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#define SCAN_MAX_DEPTH 200
#define BINARY_PROBE 8000
#define IGNORE_FILE_MAX (4u << 20) /* a larger ignore file is truncated, not fatal */

static const char *const vendored_dirs[] = {
    "node_modules",  "bower_components",
    "jspm_packages", "vendor",
    "third_party",   "thirdparty",
    "external",      "deps",
    "dist",          "build",
    "out",           "target",
    "__pycache__",   ".venv",
    "venv",          ".tox",
    ".nox",          ".mypy_cache",
    ".pytest_cache", ".ruff_cache",
    ".gradle",       ".idea",
    ".vscode",       ".next",
    ".nuxt",         ".cache",
    ".terraform",    "Pods",
    "Carthage",      ".bundle",
    "site-packages", ".eggs",
    "coverage",      ".svn",
    ".hg",           ".jj",
};

void scan_options_init(struct scan_options *opt)
{
    *opt = (struct scan_options){
        .max_file_size = SCAN_DEFAULT_MAX_FILE_SIZE,
        .use_global_excludes = true,
    };
}

bool scan_dir_is_vendored(const char *name)
{
    for (size_t i = 0; i < ELEMENTSOF(vendored_dirs); i++)
        if (strcmp(name, vendored_dirs[i]) == 0)
            return true;
    return false;
}

bool scan_content_is_binary(const char *content, size_t size)
{
    return memchr(content, '\0', MIN(size, (size_t)BINARY_PROBE)) != NULL;
}

void scan_report_release(struct scan_report *report)
{
    for (size_t i = 0; i < report->n_error_list; i++)
        free(report->error_list[i].path);
    free(report->error_list);
    for (size_t i = 0; i < report->n_skip_list; i++)
        free(report->skip_list[i].path);
    free(report->skip_list);
    *report = (struct scan_report){0};
}

struct walker {
    const struct scan_options *opt;
    scan_file_fn fn;
    void *userdata;
    struct scan_report *report;
    struct ignore_stack *ignore;
    char path[PATH_MAX]; /* prefix (scan root relative to the work tree) + relative path */
    size_t prefix_len;   /* bytes of `path` that are the prefix */
    char *buf;           /* reusable file buffer */
    size_t buf_cap;
    size_t error_cap, skip_cap;
};

const char *scan_skip_reason_name(enum scan_skip_reason reason)
{
    switch (reason) {
    case SCAN_SKIP_TOO_LARGE:
        return "too_large";
    case SCAN_SKIP_BINARY:
        return "binary";
    case SCAN_SKIP_VENDORED:
        return "vendored";
    case SCAN_SKIP_SYMLINK:
        return "symlink";
    case SCAN_SKIP_SPECIAL:
        return "special";
    }
    return "other";
}

/* Lists a skipped entry (the caller counted it), the first SCAN_MAX_REPORTED_SKIPS only. */
static int report_skip(struct walker *w, const char *rel, enum scan_skip_reason reason)
{
    struct scan_report *rep = w->report;
    char *p;

    if (rep->n_skip_list >= SCAN_MAX_REPORTED_SKIPS)
        return 0;
    if (array_grow((void **)&rep->skip_list, &w->skip_cap, rep->n_skip_list + 1,
                   sizeof(*rep->skip_list)) < 0)
        return -ENOMEM;
    p = strdup(rel);
    if (!p)
        return -ENOMEM;
    rep->skip_list[rep->n_skip_list++] = (struct scan_skip){.path = p, .reason = reason};
    return 0;
}

static int report_error(struct walker *w, const char *rel, int error)
{
    struct scan_report *rep = w->report;
    char *p;

    rep->errors++;
    if (rep->n_error_list >= SCAN_MAX_REPORTED_ERRORS)
        return 0;
    if (array_grow((void **)&rep->error_list, &w->error_cap, rep->n_error_list + 1,
                   sizeof(*rep->error_list)) < 0)
        return -ENOMEM;
    p = strdup(rel);
    if (!p)
        return -ENOMEM;
    rep->error_list[rep->n_error_list++] = (struct scan_error){.path = p, .error = error};
    return 0;
}

/* Read a whole small file at dirfd/name into a malloc'd buffer; -ENOENT when absent. */
static int read_small_file(int dirfd, const char *name, char **ret, size_t *ret_len)
{
    _cleanup_close_ int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY);
    _cleanup_free_ char *b = NULL;
    size_t len = 0;
    struct stat st;

    if (fd < 0)
        return -errno;
    if (fstat(fd, &st) < 0)
        return -errno;
    if (!S_ISREG(st.st_mode))
        return -ENOENT;
    b = malloc(MIN((size_t)st.st_size, (size_t)IGNORE_FILE_MAX) + 1);
    if (!b)
        return -ENOMEM;
    while (len < MIN((size_t)st.st_size, (size_t)IGNORE_FILE_MAX)) {
        ssize_t n = read(fd, b + len, MIN((size_t)st.st_size, (size_t)IGNORE_FILE_MAX) - len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (n == 0)
            break;
        len += (size_t)n;
    }
    b[len] = '\0';
    *ret = TAKE_PTR(b);
    *ret_len = len;
    return 0;
}

/* Push dirfd's .gitignore and .coarchignore (in that order) at `level` with base `base`. */
static int push_dir_ignores(struct ignore_stack *s, int dirfd, int level, const char *base)
{
    static const char *const names[] = {".gitignore", ".coarchignore"};

    for (size_t i = 0; i < ELEMENTSOF(names); i++) {
        _cleanup_free_ char *text = NULL;
        size_t len;
        int r = read_small_file(dirfd, names[i], &text, &len);

        if (r == -ENOMEM)
            return r;
        if (r < 0)
            continue; /* absent or unreadable: no rules, as git */
        r = ignore_stack_push(s, level, base, text, len);
        if (r < 0)
            return r;
    }
    return 0;
}

static int push_file_ignores(struct ignore_stack *s, const char *path)
{
    _cleanup_free_ char *text = NULL;
    size_t len;
    int r = read_small_file(AT_FDCWD, path, &text, &len);

    if (r == -ENOMEM)
        return r;
    if (r < 0)
        return 0;
    return ignore_stack_push(s, IGNORE_LEVEL_FILE, "", text, len);
}

/*
 * Find the git directory of the work tree at `top`: "<top>/.git" when it is a directory, or
 * the target of a "gitdir: PATH" file (worktrees, submodules).  Returns a malloc'd path or NULL.
 */
static char *git_dir_of(const char *top)
{
    _cleanup_free_ char *dotgit = path_join(top, ".git");
    _cleanup_free_ char *text = NULL;
    struct stat st;
    size_t len;

    if (!dotgit || stat(dotgit, &st) < 0)
        return NULL;
    if (S_ISDIR(st.st_mode))
        return TAKE_PTR(dotgit);
    if (read_small_file(AT_FDCWD, dotgit, &text, &len) < 0 || strncmp(text, "gitdir: ", 8) != 0)
        return NULL;
    text[strcspn(text, "\r\n")] = '\0';
    if (text[8] == '/')
        return strdup(text + 8);
    return path_join(top, text + 8);
}

/*
 * Set up the ignore rules that apply above and around `root`: find the enclosing work tree
 * (the nearest ancestor with a .git), push the .gitignore files of the directories between it
 * and root, then .git/info/exclude and the global excludes file.  Writes the prefix (root
 * relative to the work tree, with a trailing '/', or "") into w->path.
 */
static int setup_outer_ignores(struct walker *w, const char *root)
{
    _cleanup_free_ char *top = strdup(root);
    _cleanup_free_ char *gitdir = NULL;
    size_t rootlen = strlen(root);
    int r;

    if (!top)
        return -ENOMEM;
    for (;;) {
        _cleanup_free_ char *probe = path_join(top, ".git");
        char *slash;

        if (!probe)
            return -ENOMEM;
        if (access(probe, F_OK) == 0)
            break;
        slash = strrchr(top, '/');
        if (!slash || slash == top) {
            /* No work tree above: the scan root is its own top, with no git files. */
            free(top);
            top = strdup(root);
            if (!top)
                return -ENOMEM;
            break;
        }
        *slash = '\0';
    }

    /* prefix = root relative to top */
    size_t toplen = strlen(top);
    if (rootlen > toplen) {
        size_t plen = rootlen - toplen - 1; /* without the separating '/' */
        if (plen + 2 > sizeof(w->path))
            return -ENAMETOOLONG;
        memcpy(w->path, root + toplen + 1, plen);
        w->path[plen] = '/';
        w->prefix_len = plen + 1;
    }
    w->path[w->prefix_len] = '\0';

    /* .gitignore files of the directories from top down to root's parent. */
    for (size_t i = 0, level = 0; i < w->prefix_len; level++) {
        _cleanup_free_ char *dir = NULL;
        char base[PATH_MAX];
        _cleanup_close_ int fd = -1;

        memcpy(base, w->path, i);
        base[i] = '\0';
        dir = i ? path_join(top, base) : strdup(top);
        if (!dir)
            return -ENOMEM;
        fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd >= 0) {
            r = push_dir_ignores(w->ignore, fd, (int)level, base);
            if (r < 0)
                return r;
        }
        const char *next = memchr(w->path + i, '/', w->prefix_len - i);
        i = (size_t)(next - w->path) + 1;
    }

    gitdir = git_dir_of(top);
    if (gitdir) {
        _cleanup_free_ char *exclude = path_join(gitdir, "info/exclude");
        if (!exclude)
            return -ENOMEM;
        r = push_file_ignores(w->ignore, exclude);
        if (r < 0)
            return r;
    }
    if (w->opt->use_global_excludes) {
        const char *xdg = getenv("XDG_CONFIG_HOME"), *home = getenv("HOME");
        _cleanup_free_ char *global = NULL;

        if (xdg && xdg[0])
            global = path_join(xdg, "git/ignore");
        else if (home && home[0])
            global = path_join(home, ".config/git/ignore");
        if (global) {
            r = push_file_ignores(w->ignore, global);
            if (r < 0)
                return r;
        }
    }
    return 0;
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Read a directory's entry names, sorted bytewise; consumes dirfd on success and failure. */
static int list_dir(int dirfd, char ***ret_names, size_t *ret_n)
{
    DIR *d = fdopendir(dirfd);
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *de;
    int r = 0;

    if (!d) {
        r = -errno;
        close(dirfd);
        return r;
    }
    errno = 0;
    while ((de = readdir(d))) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        r = array_grow((void **)&names, &cap, n + 1, sizeof(*names));
        if (r < 0)
            break;
        names[n] = strdup(de->d_name);
        if (!names[n]) {
            r = -ENOMEM;
            break;
        }
        n++;
        errno = 0;
    }
    if (r == 0 && errno != 0)
        r = -errno;
    closedir(d);
    if (r < 0) {
        for (size_t i = 0; i < n; i++)
            free(names[i]);
        free(names);
        return r;
    }
    if (n > 1)
        qsort(names, n, sizeof(*names), cmp_names);
    *ret_names = names;
    *ret_n = n;
    return 0;
}

static int visit_file(struct walker *w, int dirfd, const char *name, const struct stat *st)
{
    const char *rel = w->path + w->prefix_len;
    _cleanup_close_ int fd = -1;
    size_t len = 0;
    struct scan_file f;

    if ((uint64_t)st->st_size > w->opt->max_file_size) {
        w->report->too_large++;
        return report_skip(w, rel, SCAN_SKIP_TOO_LARGE);
    }
    fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY | O_NONBLOCK);
    if (fd < 0)
        return report_error(w, rel, -errno);
    if ((size_t)st->st_size + 1 > w->buf_cap) {
        size_t cap = MAX((size_t)st->st_size + 1, w->buf_cap * 2);
        char *nb = realloc(w->buf, MAX(cap, (size_t)4096));
        if (!nb)
            return -ENOMEM;
        w->buf = nb;
        w->buf_cap = MAX(cap, (size_t)4096);
    }
    /* Read at most the size fstat saw: a file growing under us is indexed as it was. */
    while (len < (size_t)st->st_size) {
        ssize_t n = read(fd, w->buf + len, (size_t)st->st_size - len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return report_error(w, rel, -errno);
        }
        if (n == 0)
            break;
        len += (size_t)n;
    }
    w->buf[len] = '\0';
    if (scan_content_is_binary(w->buf, len)) {
        w->report->binary++;
        return report_skip(w, rel, SCAN_SKIP_BINARY);
    }
    f = (struct scan_file){
        .path = rel,
        .content = w->buf,
        .size = len,
        .mtime_ns = (int64_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec,
    };
    w->report->files++;
    w->report->bytes += len;
    return w->fn(w->userdata, &f);
}

/* Walk the directory open at dirfd (consumed); w->path holds its path + '/' (or the prefix). */
static int walk_dir(struct walker *w, int dirfd, int level)
{
    size_t dir_len = strlen(w->path);
    char **names = NULL;
    size_t n = 0;
    int r;

    r = push_dir_ignores(w->ignore, dirfd, level, w->path);
    if (r >= 0 && w->opt->dir_fn)
        r = w->opt->dir_fn(w->opt->dir_userdata, w->path + w->prefix_len);
    if (r < 0) {
        close(dirfd);
        return r;
    }
    int keep_fd = dup(dirfd); /* fdopendir takes dirfd; we still need an fd for *at() calls */
    if (keep_fd < 0) {
        r = -errno;
        close(dirfd);
        return r;
    }
    r = list_dir(dirfd, &names, &n);
    if (r < 0) {
        close(keep_fd);
        if (r == -ENOMEM)
            return r;
        return report_error(w, w->path + w->prefix_len, r);
    }

    for (size_t i = 0; i < n && r >= 0; i++) {
        const char *name = names[i];
        size_t nl = strlen(name);
        struct stat st;

        w->path[dir_len] = '\0';
        if (w->opt->cancel && atomic_load(w->opt->cancel)) {
            r = -ECANCELED;
            break;
        }
        if (strcmp(name, ".git") == 0)
            continue;
        if (dir_len + nl + 2 > sizeof(w->path)) {
            r = report_error(w, name, -ENAMETOOLONG);
            continue;
        }
        memcpy(w->path + dir_len, name, nl + 1);
        if (fstatat(keep_fd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
            r = report_error(w, w->path + w->prefix_len, -errno);
            continue;
        }
        if (S_ISLNK(st.st_mode)) {
            w->report->symlinks++;
            if (!ignore_stack_is_ignored(w->ignore, w->path, false))
                r = report_skip(w, w->path + w->prefix_len, SCAN_SKIP_SYMLINK);
        } else if (S_ISDIR(st.st_mode)) {
            if (ignore_stack_is_ignored(w->ignore, w->path, true)) {
                w->report->ignored++;
            } else if (!w->opt->include_vendored && scan_dir_is_vendored(name)) {
                w->report->vendored++;
                r = report_skip(w, w->path + w->prefix_len, SCAN_SKIP_VENDORED);
            } else if (level + 1 >= SCAN_MAX_DEPTH) {
                r = report_error(w, w->path + w->prefix_len, -ELOOP);
            } else {
                int sub = openat(keep_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                if (sub < 0) {
                    r = report_error(w, w->path + w->prefix_len, -errno);
                } else {
                    w->path[dir_len + nl] = '/';
                    w->path[dir_len + nl + 1] = '\0';
                    r = walk_dir(w, sub, level + 1);
                    ignore_stack_pop_to(w->ignore, level + 1);
                }
            }
        } else if (w->opt->dirs_only) {
            continue;
        } else if (S_ISREG(st.st_mode)) {
            if (ignore_stack_is_ignored(w->ignore, w->path, false))
                w->report->ignored++;
            else
                r = visit_file(w, keep_fd, name, &st);
        } else {
            w->report->other++;
            r = report_skip(w, w->path + w->prefix_len, SCAN_SKIP_SPECIAL);
        }
        w->path[dir_len] = '\0';
    }

    w->path[dir_len] = '\0';
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    close(keep_fd);
    return r;
}

int scan_repo(const char *root, const struct scan_options *opt, scan_file_fn fn, void *userdata,
              struct scan_report *report)
{
    struct scan_options defaults;
    struct walker w = {0};
    char *real = NULL;
    int fd, r;

    *report = (struct scan_report){0};
    if (!opt) {
        scan_options_init(&defaults);
        opt = &defaults;
    }
    w.opt = opt;
    w.fn = fn;
    w.userdata = userdata;
    w.report = report;

    real = realpath(root, NULL);
    if (!real)
        return -errno;
    fd = open(real, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        r = -errno;
        goto out;
    }
    w.ignore = ignore_stack_new();
    if (!w.ignore) {
        close(fd);
        r = -ENOMEM;
        goto out;
    }
    r = setup_outer_ignores(&w, real);
    if (r < 0) {
        close(fd);
        goto out;
    }
    /* The root's own level is one below the outer directories pushed above it. */
    int level = 0;
    for (size_t i = 0; i < w.prefix_len; i++)
        level += w.path[i] == '/';
    r = walk_dir(&w, fd, level);
out:
    ignore_stack_free(w.ignore);
    free(w.buf);
    free(real);
    return r;
}
