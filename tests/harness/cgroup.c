/* cgroup.c - see cgroup.h.  Self-contained (libc only) so any test can link it. */
#include "cgroup.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

struct test_cgroup {
    int version;
    char parent[PATH_MAX];
    char path[PATH_MAX];
};

static int read_text(const char *path, char *buf, size_t size)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    size_t len = 0;
    ssize_t n;

    if (fd < 0)
        return -errno;
    while (len + 1 < size && (n = read(fd, buf + len, size - 1 - len)) != 0) {
        if (n < 0) {
            if (errno == EINTR)
                continue;
            n = -errno;
            close(fd);
            return (int)n;
        }
        len += (size_t)n;
    }
    close(fd);
    buf[len] = '\0';
    return (int)len;
}

/* One write(2) of the whole string, as cgroupfs parses each write on its own. */
static int write_text(const char *path, const char *text)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    ssize_t n;
    int r = 0;

    if (fd < 0)
        return -errno;
    n = write(fd, text, strlen(text));
    if (n < 0)
        r = -errno;
    else if ((size_t)n != strlen(text))
        r = -EIO;
    close(fd);
    return r;
}

static int join(char *buf, size_t size, const char *a, const char *b)
{
    int n = snprintf(buf, size, "%s/%s", a, b);

    return n < 0 || (size_t)n >= size ? -ENAMETOOLONG : 0;
}

static bool has_word(const char *list, const char *word)
{
    size_t wlen = strlen(word);

    for (const char *p = list; (p = strstr(p, word)); p += wlen) {
        bool start = p == list || p[-1] == ' ' || p[-1] == ',' || p[-1] == ':';
        char end = p[wlen];

        if (start && (end == '\0' || end == ' ' || end == ',' || end == '\n' || end == ':'))
            return true;
    }
    return false;
}

/* From /proc/self/cgroup: the v2 path ("0::/x") or the v1 memory path ("4:memory:/x"). */
static int own_cgroup_path(int version, char *buf, size_t size)
{
    char text[4096];
    int r = read_text("/proc/self/cgroup", text, sizeof(text));

    if (r < 0)
        return r;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;

        if (!c2)
            continue;
        *c2 = '\0';
        if ((version == 2 && strcmp(line, "0:") == 0) ||
            (version == 1 && has_word(c1 + 1, "memory"))) {
            if (strlen(c2 + 1) >= size)
                return -ENAMETOOLONG;
            strcpy(buf, c2 + 1);
            return 0;
        }
    }
    return -ENOENT;
}

static int access_error(int r)
{
    return r == -EACCES || r == -EPERM || r == -EROFS ? -EACCES : r;
}

static int rmdir_retry(const char *parent, const char *path);

int test_cgroup_new(const char *name, struct test_cgroup **ret_cg)
{
    struct test_cgroup *cg;
    char own[PATH_MAX], ctl[512], file[PATH_MAX + 32];
    struct stat st;
    int r, n;

    if (!name || !*name || strchr(name, '/') || strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
        return -EINVAL;
    cg = calloc(1, sizeof(*cg));
    if (!cg)
        return -ENOMEM;

    if (read_text("/sys/fs/cgroup/cgroup.controllers", ctl, sizeof(ctl)) >= 0 &&
        has_word(ctl, "memory") && own_cgroup_path(2, own, sizeof(own)) == 0) {
        cg->version = 2;
        n = snprintf(cg->parent, sizeof(cg->parent), "/sys/fs/cgroup%s", own);
    } else if (stat("/sys/fs/cgroup/memory", &st) == 0 && S_ISDIR(st.st_mode) &&
               own_cgroup_path(1, own, sizeof(own)) == 0) {
        cg->version = 1;
        n = snprintf(cg->parent, sizeof(cg->parent), "/sys/fs/cgroup/memory%s", own);
    } else {
        r = -EOPNOTSUPP;
        goto out_free;
    }
    if (n < 0 || (size_t)n >= sizeof(cg->parent)) {
        r = -ENAMETOOLONG;
        goto out_free;
    }
    /* No cgroup namespace but our own cgroup mounted at the root: use the mount point. */
    if (stat(cg->parent, &st) < 0 || !S_ISDIR(st.st_mode))
        strcpy(cg->parent, cg->version == 2 ? "/sys/fs/cgroup" : "/sys/fs/cgroup/memory");
    n = (int)strlen(cg->parent);
    while (n > 1 && cg->parent[n - 1] == '/')
        cg->parent[--n] = '\0';
    r = join(cg->path, sizeof(cg->path), cg->parent, name);
    if (r < 0)
        goto out_free;

    if (cg->version == 2) {
        r = join(file, sizeof(file), cg->parent, "cgroup.subtree_control");
        if (r < 0)
            goto out_free;
        if (read_text(file, ctl, sizeof(ctl)) < 0 || !has_word(ctl, "memory")) {
            r = write_text(file, "+memory");
            if (r == -EBUSY || r == -ENOENT || r == -EINVAL)
                r = -EOPNOTSUPP; /* processes in our cgroup, or no controller delegated */
            if (r < 0) {
                r = access_error(r);
                goto out_free;
            }
        }
    }

    r = mkdir(cg->path, 0755) < 0 ? -errno : 0;
    if (r == -EEXIST) {
        /* A leftover from a test that crashed before cleaning up; reused if it cannot go. */
        (void)rmdir_retry(cg->parent, cg->path);
        r = mkdir(cg->path, 0755) < 0 ? -errno : 0;
        if (r == -EEXIST)
            r = 0;
    }
    if (r < 0) {
        r = access_error(r);
        goto out_free;
    }
    r = join(file, sizeof(file), cg->path,
             cg->version == 2 ? "memory.max" : "memory.limit_in_bytes");
    if (r < 0 || access(file, W_OK) < 0) {
        r = r < 0 ? r : access_error(-errno);
        rmdir(cg->path);
        goto out_free;
    }
    *ret_cg = cg;
    return 0;
out_free:
    free(cg);
    return r;
}

int test_cgroup_set_memory_limit(struct test_cgroup *cg, uint64_t bytes)
{
    char file[PATH_MAX + 32], value[32];
    int r;

    snprintf(value, sizeof(value), "%" PRIu64, bytes);
    if (cg->version == 2) {
        r = join(file, sizeof(file), cg->path, "memory.max");
        if (r >= 0)
            r = write_text(file, value);
        if (r < 0)
            return r;
        if (join(file, sizeof(file), cg->path, "memory.swap.max") == 0 && access(file, F_OK) == 0)
            (void)write_text(file, "0");
        return 0;
    }
    /* v1 needs memsw >= limit at every step: raise memsw first when growing. */
    if (join(file, sizeof(file), cg->path, "memory.memsw.limit_in_bytes") == 0 &&
        access(file, F_OK) == 0)
        (void)write_text(file, value);
    r = join(file, sizeof(file), cg->path, "memory.limit_in_bytes");
    if (r >= 0)
        r = write_text(file, value);
    if (r < 0)
        return r;
    if (join(file, sizeof(file), cg->path, "memory.memsw.limit_in_bytes") == 0 &&
        access(file, F_OK) == 0)
        (void)write_text(file, value);
    return 0;
}

int test_cgroup_add_pid(struct test_cgroup *cg, pid_t pid)
{
    char file[PATH_MAX + 32], value[32];
    int r;

    snprintf(value, sizeof(value), "%d", (int)pid);
    r = join(file, sizeof(file), cg->path, "cgroup.procs");
    if (r < 0)
        return r;
    return write_text(file, value);
}

int test_cgroup_oom_kills(const struct test_cgroup *cg, uint64_t *ret_kills)
{
    char file[PATH_MAX + 32], text[4096];
    int r;

    r = join(file, sizeof(file), cg->path,
             cg->version == 2 ? "memory.events" : "memory.oom_control");
    if (r < 0)
        return r;
    r = read_text(file, text, sizeof(text));
    if (r < 0)
        return r;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        unsigned long long v;

        if (sscanf(line, "oom_kill %llu", &v) == 1) {
            *ret_kills = v;
            return 0;
        }
    }
    return -ENOENT;
}

const char *test_cgroup_path(const struct test_cgroup *cg)
{
    return cg->path;
}

int test_cgroup_version(const struct test_cgroup *cg)
{
    return cg->version;
}

/*
 * rmdir fails with EBUSY while tasks remain; a process killed a moment ago may still be
 * leaving.  Move what is left to the parent and try again for up to ~2 s.
 */
static int rmdir_retry(const char *parent, const char *path)
{
    char file[PATH_MAX + 32], pfile[PATH_MAX + 32], text[4096];
    struct timespec ts = {0, 20 * 1000 * 1000};

    for (int attempt = 0; attempt < 100; attempt++) {
        if (rmdir(path) == 0 || errno == ENOENT)
            return 0;
        if (errno != EBUSY)
            return -errno;
        if (join(file, sizeof(file), path, "cgroup.procs") == 0 &&
            join(pfile, sizeof(pfile), parent, "cgroup.procs") == 0 &&
            read_text(file, text, sizeof(text)) > 0)
            for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n"))
                (void)write_text(pfile, line);
        nanosleep(&ts, NULL);
    }
    return -EBUSY;
}

int test_cgroup_remove(struct test_cgroup *cg)
{
    int r;

    if (!cg)
        return 0;
    r = rmdir_retry(cg->parent, cg->path);
    free(cg);
    return r;
}
