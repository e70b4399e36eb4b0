/*
 * scan.h - the git-aware repository walk that feeds the indexer.
 *
 * scan_repo() walks a directory tree depth-first in byte order of names (so two walks of the
 * same tree visit files in the same order: the indexer's checkpoint cursor relies on that) and
 * calls back once per file worth indexing, with its content already read.
 *
 * What is skipped, and why:
 *  - paths ignored by git's rules: nested .gitignore files, .git/info/exclude and the global
 *    excludes file ($XDG_CONFIG_HOME/git/ignore), plus .coarchignore files (same syntax, consulted
 *    before the .gitignore of the same directory) — see ignore.h;
 *  - vendored and generated directories by default (node_modules, vendor, third_party, dist,
 *    build, target, __pycache__, .venv, ...; full list in scan.c), unless include_vendored;
 *  - files over max_file_size (default 1 MiB) and binary files (a NUL byte in the first 8,000
 *    bytes, git's heuristic);
 *  - symbolic links, never followed: a link can point out of the repository or into a loop, and
 *    an in-repository target is indexed under its own path anyway;
 *  - special files (sockets, fifos, devices) and the .git directory.
 * Unreadable files and directories are counted and listed in the report, never fatal.
 *
 * Threading: runs on the caller's thread (a worker); touches no shared state.
 */
#ifndef COARCH_INDEX_SCAN_H
#define COARCH_INDEX_SCAN_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SCAN_DEFAULT_MAX_FILE_SIZE (1024 * 1024)
#define SCAN_MAX_REPORTED_ERRORS 100

/* A directory the walk enters ("" for the root, else "a/b/"); return < 0 to stop the walk. */
typedef int (*scan_dir_fn)(void *userdata, const char *path);

struct scan_options {
    uint64_t max_file_size; /* 0 = SCAN_DEFAULT_MAX_FILE_SIZE */
    scan_dir_fn dir_fn;     /* optional: each directory the walk enters, before its entries */
    void *dir_userdata;
    bool dirs_only;            /* walk directories only: no file is read or passed on */
    bool include_vendored;     /* also walk node_modules, vendor, ... */
    bool use_global_excludes;  /* read $XDG_CONFIG_HOME/git/ignore (default true via init) */
    const atomic_bool *cancel; /* optional: when it becomes true the walk stops with -ECANCELED */
};

void scan_options_init(struct scan_options *opt);

/* One accepted file.  All pointers are borrowed and valid only during the callback. */
struct scan_file {
    const char *path; /* relative to the root, '/'-separated, no leading "./" */
    const char *content;
    size_t size;
    int64_t mtime_ns;
};

/* Return < 0 to stop the walk; scan_repo() then returns that value. */
typedef int (*scan_file_fn)(void *userdata, const struct scan_file *file);

struct scan_error {
    char *path; /* relative path */
    int error;  /* negative errno */
};

/* Why the walk passed over a file or directory that ignore rules did not exclude. */
enum scan_skip_reason {
    SCAN_SKIP_TOO_LARGE, /* a file over max_file_size */
    SCAN_SKIP_BINARY,    /* a NUL byte in its first 8,000 bytes */
    SCAN_SKIP_VENDORED,  /* a vendored/generated directory (node_modules, vendor, ...) */
    SCAN_SKIP_SYMLINK,   /* never followed */
    SCAN_SKIP_SPECIAL,   /* socket, fifo, device */
};
/* "too_large", "binary", "vendored", "symlink", "special". */
const char *scan_skip_reason_name(enum scan_skip_reason reason);

struct scan_skip {
    char *path; /* relative path (a directory's for SCAN_SKIP_VENDORED) */
    enum scan_skip_reason reason;
};

#define SCAN_MAX_REPORTED_SKIPS 100

struct scan_report {
    uint64_t files;    /* accepted and passed to the callback */
    uint64_t bytes;    /* their total size */
    uint64_t ignored;  /* files and directories excluded by ignore rules */
    uint64_t vendored; /* vendored/generated directories skipped */
    uint64_t too_large;
    uint64_t binary;
    uint64_t symlinks;
    uint64_t other;  /* sockets, fifos, devices */
    uint64_t errors; /* unreadable entries (first SCAN_MAX_REPORTED_ERRORS listed) */
    struct scan_error *error_list;
    size_t n_error_list;
    /* The first SCAN_MAX_REPORTED_SKIPS of too_large, binary, vendored, symlinks and other. */
    struct scan_skip *skip_list;
    size_t n_skip_list;
};

void scan_report_release(struct scan_report *report);

/*
 * Walk `root` (an existing directory).  Returns 0 when the walk completed, the callback's
 * negative value, -ECANCELED, -ENOTDIR/-ENOENT/-EACCES for an unusable root, or -ENOMEM.
 * *report is filled in every case (release it with scan_report_release()).
 */
int scan_repo(const char *root, const struct scan_options *opt, scan_file_fn fn, void *userdata,
              struct scan_report *report);

/* git's binary heuristic: a NUL byte within the first 8,000 bytes. */
bool scan_content_is_binary(const char *content, size_t size);

/* Is `name` one of the default vendored/generated directory names? */
bool scan_dir_is_vendored(const char *name);

#endif
