/* pressure.c - see pressure.h. */
#include "pressure.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#ifdef __GLIBC__
#include <malloc.h>
#endif

#include "log.h"
#include "macro.h"

#define PSI_DEFAULT_STALL_US UINT64_C(150000)
#define PSI_DEFAULT_WINDOW_US UINT64_C(1000000)
#define PSI_UNPRIV_WINDOW_US UINT64_C(2000000)

struct pressure_source {
    char *root; /* no trailing '/'; "" for the real root */
    uint64_t config_limit;
    pressure_gpu_fn gpu_fn;
    void *gpu_userdata;
};

/* Where the process's memory cgroup lives, resolved for one sample. */
struct cgroup_loc {
    enum pressure_cgroup_version version;
    char mount[PATH_MAX]; /* the hierarchy's mount point under root */
    char dir[PATH_MAX];   /* the process's cgroup directory, == mount or below it */
};

struct pressure_source *pressure_source_new(const char *root, uint64_t config_limit_bytes)
{
    struct pressure_source *src = calloc(1, sizeof(*src));
    size_t n;

    if (!src)
        return NULL;
    if (!root)
        root = "/";
    n = strlen(root);
    while (n > 0 && root[n - 1] == '/')
        n--;
    src->root = strndup(root, n);
    if (!src->root)
        return pressure_source_free(src);
    src->config_limit = config_limit_bytes;
    return src;
}

struct pressure_source *pressure_source_free(struct pressure_source *src)
{
    if (!src)
        return NULL;
    free(src->root);
    free(src);
    return NULL;
}

void pressure_source_set_gpu(struct pressure_source *src, pressure_gpu_fn fn, void *userdata)
{
    src->gpu_fn = fn;
    src->gpu_userdata = fn ? userdata : NULL;
}

static int path_fmt(char *buf, size_t size, const char *fmt, ...) _printf_(3, 4);

static int path_fmt(char *buf, size_t size, const char *fmt, ...)
{
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(buf, size, fmt, ap);
    va_end(ap);
    if (n < 0)
        return -EINVAL;
    if ((size_t)n >= size)
        return -ENAMETOOLONG;
    return 0;
}

/*
 * Reads a small pseudo-file into buf (NUL-terminated).  Returns the length or a negative errno;
 * -EFBIG when it does not fit, since a truncated stat file would parse into wrong numbers (buf
 * then holds the first size - 1 bytes, for callers that only need the start).
 */
static ssize_t read_small_file(const char *path, char *buf, size_t size)
{
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    size_t len = 0;

    if (fd < 0)
        return -errno;
    for (;;) {
        ssize_t n;

        if (len + 1 >= size) {
            buf[len] = '\0';
            return -EFBIG;
        }
        n = read(fd, buf + len, size - 1 - len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (n == 0)
            break;
        len += (size_t)n;
    }
    buf[len] = '\0';
    return (ssize_t)len;
}

/* Strict unsigned decimal at the start of s, ending at blank/newline/NUL. */
static int parse_u64(const char *s, uint64_t *ret)
{
    uint64_t v = 0;
    const char *p = s;

    for (; *p >= '0' && *p <= '9'; p++) {
        if (__builtin_mul_overflow(v, 10, &v) ||
            __builtin_add_overflow(v, (uint64_t)(*p - '0'), &v))
            return -ERANGE;
    }
    if (p == s || (*p && *p != '\n' && *p != ' ' && *p != '\t'))
        return -EBADMSG;
    *ret = v;
    return 0;
}

/* A file holding one number, or "max" (returned as UINT64_MAX). */
static int read_u64_file(const char *path, uint64_t *ret)
{
    char buf[64];
    ssize_t n = read_small_file(path, buf, sizeof(buf));

    if (n < 0)
        return (int)n;
    if (strncmp(buf, "max", 3) == 0 && (buf[3] == '\0' || buf[3] == '\n')) {
        *ret = UINT64_MAX;
        return 0;
    }
    return parse_u64(buf, ret);
}

/* Value of `key` in "key value\n" lines (memory.stat, oom_control).  -ENOENT when absent. */
static int find_key_u64(const char *text, const char *key, uint64_t *ret)
{
    size_t klen = strlen(key);

    for (const char *line = text; line && *line;) {
        const char *nl = strchr(line, '\n');

        if (strncmp(line, key, klen) == 0 && line[klen] == ' ')
            return parse_u64(line + klen + 1, ret);
        line = nl ? nl + 1 : NULL;
    }
    return -ENOENT;
}

static int read_key_file(const char *path, const char *key, uint64_t *ret)
{
    char buf[8192];
    ssize_t n = read_small_file(path, buf, sizeof(buf));

    if (n < 0)
        return (int)n;
    return find_key_u64(buf, key, ret);
}

static bool is_dir(const char *path)
{
    struct stat st;

    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* Does a whitespace- or comma-separated list contain `word`? */
static bool list_has_word(const char *list, size_t len, const char *word)
{
    size_t wlen = strlen(word);

    for (size_t i = 0; i < len;) {
        size_t j = i;

        while (j < len && list[j] != ',' && list[j] != ' ' && list[j] != '\n')
            j++;
        if (j - i == wlen && memcmp(list + i, word, wlen) == 0)
            return true;
        i = j + 1;
    }
    return false;
}

/*
 * Parses /proc/self/cgroup: the "0::<path>" line (v2) and the line whose controller list holds
 * "memory" (v1).  Paths are copied into v2_path/v1_path ("" when absent).
 */
static void parse_proc_cgroup(const char *text, char *v2_path, char *v1_path, size_t size)
{
    v2_path[0] = v1_path[0] = '\0';
    for (const char *line = text; line && *line;) {
        const char *nl = strchr(line, '\n');
        size_t len = nl ? (size_t)(nl - line) : strlen(line);
        const char *c1 = memchr(line, ':', len);
        const char *c2 = c1 ? memchr(c1 + 1, ':', len - (size_t)(c1 + 1 - line)) : NULL;

        if (c2) {
            const char *path = c2 + 1;
            size_t plen = len - (size_t)(path - line);
            char *dst = NULL;

            if (c2 == c1 + 1 && c1 - line == 1 && line[0] == '0')
                dst = v2_path;
            else if (list_has_word(c1 + 1, (size_t)(c2 - c1 - 1), "memory"))
                dst = v1_path;
            if (dst && plen < size) {
                memcpy(dst, path, plen);
                dst[plen] = '\0';
            }
        }
        line = nl ? nl + 1 : NULL;
    }
}

/* Strips trailing slashes, keeping a lone "/" as "". */
static void strip_trailing_slash(char *p)
{
    size_t n = strlen(p);

    while (n > 0 && p[n - 1] == '/')
        p[--n] = '\0';
}

/* Resolves the memory cgroup for this sample; loc->version is NONE when there is none. */
static void cgroup_locate(const struct pressure_source *src, struct cgroup_loc *loc)
{
    char path[PATH_MAX], text[4096], v2_path[PATH_MAX], v1_path[PATH_MAX];
    const char *cgpath = NULL;
    ssize_t n;

    loc->version = PRESSURE_CGROUP_NONE;
    if (path_fmt(path, sizeof(path), "%s/proc/self/cgroup", src->root) < 0)
        return;
    n = read_small_file(path, text, sizeof(text));
    if (n < 0)
        return;
    parse_proc_cgroup(text, v2_path, v1_path, sizeof(v2_path));

    /* Unified hierarchy with the memory controller at its root. */
    if (path_fmt(path, sizeof(path), "%s/sys/fs/cgroup/cgroup.controllers", src->root) == 0) {
        char ctl[512];

        n = read_small_file(path, ctl, sizeof(ctl));
        if (n >= 0 && list_has_word(ctl, (size_t)n, "memory") && v2_path[0] == '/') {
            loc->version = PRESSURE_CGROUP_V2;
            cgpath = v2_path;
            if (path_fmt(loc->mount, sizeof(loc->mount), "%s/sys/fs/cgroup", src->root) < 0)
                goto fail;
        }
    }
    if (loc->version == PRESSURE_CGROUP_NONE && v1_path[0] == '/') {
        if (path_fmt(loc->mount, sizeof(loc->mount), "%s/sys/fs/cgroup/memory", src->root) < 0 ||
            !is_dir(loc->mount))
            goto fail;
        loc->version = PRESSURE_CGROUP_V1;
        cgpath = v1_path;
    }
    if (loc->version == PRESSURE_CGROUP_NONE)
        return;

    if (path_fmt(loc->dir, sizeof(loc->dir), "%s%s", loc->mount, cgpath) < 0)
        goto fail;
    strip_trailing_slash(loc->dir);
    /*
     * Without a cgroup namespace a container sees its host-side path in /proc/self/cgroup while
     * its own cgroup is mounted at the mount point: fall back to the mount point.
     */
    if (!is_dir(loc->dir))
        memcpy(loc->dir, loc->mount, sizeof(loc->dir));
    return;
fail:
    loc->version = PRESSURE_CGROUP_NONE;
}

/*
 * v2: the smallest memory.max or memory.high of dir and its ancestors up to and including the
 * mount point; UINT64_MAX if none.  memory.high counts: above it the kernel throttles and
 * reclaims hard, which is what a systemd MemoryHigh= asks the governor to stay under.  The
 * real root cgroup has no memory.max, but under a cgroup namespace the mount point is the
 * container's own cgroup and its memory.max is the container's limit.
 */
static uint64_t cgroup_v2_limit(const struct cgroup_loc *loc)
{
    char dir[PATH_MAX], path[PATH_MAX];
    size_t mlen = strlen(loc->mount);
    uint64_t limit = UINT64_MAX;

    memcpy(dir, loc->dir, sizeof(dir));
    for (;;) {
        uint64_t v;
        char *slash;

        if (path_fmt(path, sizeof(path), "%s/memory.max", dir) == 0 && read_u64_file(path, &v) == 0)
            limit = MIN(limit, v);
        if (path_fmt(path, sizeof(path), "%s/memory.high", dir) == 0 &&
            read_u64_file(path, &v) == 0)
            limit = MIN(limit, v);
        if (strlen(dir) <= mlen)
            break;
        slash = strrchr(dir, '/');
        if (!slash)
            break;
        *slash = '\0';
    }
    return limit;
}

/* v1: memory.limit_in_bytes, lowered by hierarchical_memory_limit (the ancestors' bound). */
static uint64_t cgroup_v1_limit(const struct cgroup_loc *loc)
{
    char path[PATH_MAX];
    uint64_t limit = UINT64_MAX, v;

    if (path_fmt(path, sizeof(path), "%s/memory.limit_in_bytes", loc->dir) == 0 &&
        read_u64_file(path, &v) == 0)
        limit = v;
    if (path_fmt(path, sizeof(path), "%s/memory.stat", loc->dir) == 0 &&
        read_key_file(path, "hierarchical_memory_limit", &v) == 0)
        limit = MIN(limit, v);
    return limit;
}

/*
 * Charged bytes and the clean file cache among them: file LRU pages (active and inactive) less
 * the dirty and under-writeback ones, which cannot be dropped without I/O.  -ENOENT when the
 * cgroup has no usage file.
 */
static int cgroup_usage(const struct cgroup_loc *loc, uint64_t *ret_usage,
                        uint64_t *ret_reclaimable)
{
    bool v2 = loc->version == PRESSURE_CGROUP_V2;
    /* v1's total_ variants include child cgroups, matching usage_in_bytes' hierarchical sum. */
    static const char *const keys[2][4] = {
        {"total_active_file", "total_inactive_file", "total_dirty", "total_writeback"},
        {"active_file", "inactive_file", "file_dirty", "file_writeback"},
    };
    char path[PATH_MAX], stat[8192];
    uint64_t usage, v[4] = {0}, file, busy;
    int r;

    r = path_fmt(path, sizeof(path), "%s/%s", loc->dir,
                 v2 ? "memory.current" : "memory.usage_in_bytes");
    if (r < 0)
        return r;
    r = read_u64_file(path, &usage);
    if (r < 0)
        return r;
    if (path_fmt(path, sizeof(path), "%s/memory.stat", loc->dir) == 0 &&
        read_small_file(path, stat, sizeof(stat)) >= 0)
        for (size_t i = 0; i < ELEMENTSOF(v); i++)
            if (find_key_u64(stat, keys[v2][i], &v[i]) < 0)
                v[i] = 0;
    file = v[0] + v[1];
    busy = v[2] + v[3];
    *ret_usage = usage;
    *ret_reclaimable = MIN(file > busy ? file - busy : 0, usage);
    return 0;
}

static int read_physical(const struct pressure_source *src, uint64_t *ret)
{
    char path[PATH_MAX], buf[8192];
    uint64_t kb;
    ssize_t n;
    int r;

    r = path_fmt(path, sizeof(path), "%s/proc/meminfo", src->root);
    if (r < 0)
        return r;
    n = read_small_file(path, buf, sizeof(buf));
    if (n == -EFBIG)
        n = 0; /* MemTotal is the first line: the start of a long meminfo is enough */
    if (n < 0)
        return (int)n;
    for (const char *line = buf; line && *line;) {
        const char *nl = strchr(line, '\n');

        if (strncmp(line, "MemTotal:", 9) == 0) {
            const char *p = line + 9;

            while (*p == ' ' || *p == '\t')
                p++;
            if (parse_u64(p, &kb) < 0 || kb == 0 || kb > UINT64_MAX / 1024)
                return -EBADMSG;
            *ret = kb * 1024;
            return 0;
        }
        line = nl ? nl + 1 : NULL;
    }
    return -EBADMSG;
}

/* /proc/self/statm: "size resident shared text lib data dt", in pages. */
static int read_statm(const struct pressure_source *src, uint64_t *ret_rss, uint64_t *ret_vms)
{
    char path[PATH_MAX], buf[256];
    unsigned long long size, resident;
    long page = sysconf(_SC_PAGESIZE);
    ssize_t n;
    int r;

    r = path_fmt(path, sizeof(path), "%s/proc/self/statm", src->root);
    if (r < 0)
        return r;
    n = read_small_file(path, buf, sizeof(buf));
    if (n < 0)
        return (int)n;
    if (sscanf(buf, "%llu %llu", &size, &resident) != 2 || page <= 0)
        return -EBADMSG;
    if (size > UINT64_MAX / (uint64_t)page)
        return -EBADMSG;
    *ret_vms = size * (uint64_t)page;
    *ret_rss = resident * (uint64_t)page;
    return 0;
}

/*
 * /proc/self/status: RssAnon + RssShmem, the resident memory that only swap could take away.
 * -ENOENT when the file or the fields are missing (kernels before 4.5, a fake /proc in tests).
 */
static int read_rss_anon(const struct pressure_source *src, uint64_t *ret)
{
    char path[PATH_MAX], buf[4096];
    uint64_t anon = 0, shmem = 0, kb;
    unsigned found = 0;
    ssize_t n;
    int r;

    r = path_fmt(path, sizeof(path), "%s/proc/self/status", src->root);
    if (r < 0)
        return r;
    n = read_small_file(path, buf, sizeof(buf));
    if (n < 0)
        return (int)n;
    for (const char *line = buf; line && *line;) {
        const char *nl = strchr(line, '\n');
        bool is_anon = strncmp(line, "RssAnon:", 8) == 0;

        if (is_anon || strncmp(line, "RssShmem:", 9) == 0) {
            const char *p = line + (is_anon ? 8 : 9);

            while (*p == ' ' || *p == '\t')
                p++;
            if (parse_u64(p, &kb) < 0 || kb > UINT64_MAX / 2048)
                return -EBADMSG;
            *(is_anon ? &anon : &shmem) = kb * 1024;
            found |= is_anon ? 1u : 2u;
        }
        line = nl ? nl + 1 : NULL;
    }
    if (found != 3)
        return -ENOENT;
    *ret = anon + shmem;
    return 0;
}

int pressure_psi_parse(const char *text, struct pressure_psi *ret_psi)
{
    struct pressure_psi psi = {.valid = true};
    bool have_some = false;

    for (const char *line = text; line && *line;) {
        const char *nl = strchr(line, '\n');
        double a10, a60, a300;
        unsigned long long total;
        char kind[8];

        if (sscanf(line, "%7s avg10=%lf avg60=%lf avg300=%lf total=%llu", kind, &a10, &a60, &a300,
                   &total) == 5) {
            if (!(a10 >= 0 && a10 <= 100 && a60 >= 0 && a60 <= 100))
                return -EBADMSG;
            if (strcmp(kind, "some") == 0) {
                psi.some_avg10 = a10;
                psi.some_avg60 = a60;
                psi.some_total_us = total;
                have_some = true;
            } else if (strcmp(kind, "full") == 0) {
                psi.full_avg10 = a10;
            }
        }
        line = nl ? nl + 1 : NULL;
    }
    if (!have_some)
        return -EBADMSG;
    *ret_psi = psi;
    return 0;
}

/* The PSI file for this cgroup: its memory.pressure on v2 when present, else the system's. */
static int psi_path(const struct pressure_source *src, const struct cgroup_loc *loc, char *buf,
                    size_t size)
{
    if (loc->version == PRESSURE_CGROUP_V2 &&
        path_fmt(buf, size, "%s/memory.pressure", loc->dir) == 0 && access(buf, F_OK) == 0)
        return 0;
    return path_fmt(buf, size, "%s/proc/pressure/memory", src->root);
}

uint64_t pressure_now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

int pressure_source_sample(struct pressure_source *src, struct pressure_reading *ret)
{
    struct pressure_reading rd = {0};
    struct cgroup_loc loc;
    char path[PATH_MAX], text[512];
    uint64_t cg_limit = UINT64_MAX;
    int r;

    rd.timestamp_us = pressure_now_us();
    r = read_physical(src, &rd.physical);
    if (r < 0)
        return log_debug_errno(r, "pressure: cannot read MemTotal under '%s/proc': %m", src->root);
    r = read_statm(src, &rd.rss, &rd.vms);
    if (r < 0)
        return log_debug_errno(r, "pressure: cannot read '%s/proc/self/statm': %m", src->root);
    if (read_rss_anon(src, &rd.rss_anon) < 0)
        rd.rss_anon = rd.rss;

    cgroup_locate(src, &loc);
    rd.cgroup_version = loc.version;
    if (loc.version == PRESSURE_CGROUP_V2)
        cg_limit = cgroup_v2_limit(&loc);
    else if (loc.version == PRESSURE_CGROUP_V1)
        cg_limit = cgroup_v1_limit(&loc);
    if (loc.version != PRESSURE_CGROUP_NONE &&
        cgroup_usage(&loc, &rd.cgroup_usage, &rd.cgroup_reclaimable) < 0) {
        rd.cgroup_usage = rd.cgroup_reclaimable = 0;
        cg_limit = UINT64_MAX; /* a limit without a usage to compare is no use */
    }
    rd.cgroup_limit = cg_limit < rd.physical ? cg_limit : 0;
    rd.config_limit = src->config_limit;

    rd.limit = rd.physical;
    rd.limit_source = PRESSURE_LIMIT_PHYSICAL;
    if (rd.cgroup_limit > 0 && rd.cgroup_limit < rd.limit) {
        rd.limit = rd.cgroup_limit;
        rd.limit_source = PRESSURE_LIMIT_CGROUP;
    }
    if (rd.config_limit > 0 && rd.config_limit < rd.limit) {
        rd.limit = rd.config_limit;
        rd.limit_source = PRESSURE_LIMIT_CONFIG;
    }
    rd.usage_from_cgroup = rd.cgroup_limit > 0;
    rd.usage = rd.usage_from_cgroup ? rd.cgroup_usage - rd.cgroup_reclaimable : rd.rss_anon;

    if (psi_path(src, &loc, path, sizeof(path)) == 0 &&
        read_small_file(path, text, sizeof(text)) >= 0)
        (void)pressure_psi_parse(text, &rd.psi);

    if (src->gpu_fn) {
        struct pressure_gpu gpu = {0};

        if (src->gpu_fn(src->gpu_userdata, &gpu) >= 0) {
            rd.gpu = gpu;
            rd.gpu.valid = true;
        }
    }
    *ret = rd;
    return 0;
}

static int psi_write_trigger(int fd, uint64_t stall_us, uint64_t window_us)
{
    char buf[64];
    int n = snprintf(buf, sizeof(buf), "some %" PRIu64 " %" PRIu64, stall_us, window_us);

    /* The kernel overwrites the last byte written with NUL, so the NUL must be sent. */
    if (write(fd, buf, (size_t)n + 1) < 0)
        return -errno;
    return 0;
}

int pressure_psi_open_trigger(struct pressure_source *src, uint64_t stall_us, uint64_t window_us)
{
    char path[PATH_MAX];
    struct cgroup_loc loc;
    int fd, r;

    if (stall_us == 0)
        stall_us = PSI_DEFAULT_STALL_US;
    if (window_us == 0)
        window_us = PSI_DEFAULT_WINDOW_US;
    if (stall_us > window_us)
        return -EINVAL;

    cgroup_locate(src, &loc);
    r = psi_path(src, &loc, path, sizeof(path));
    if (r < 0)
        return r;
    fd = open(path, O_RDWR | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        return -errno;
    r = psi_write_trigger(fd, stall_us, window_us);
    if (r == -EINVAL && window_us % PSI_UNPRIV_WINDOW_US != 0) {
        /* Unprivileged triggers need a window that is a multiple of 2 s (Linux >= 6.5). */
        uint64_t w = (window_us / PSI_UNPRIV_WINDOW_US + 1) * PSI_UNPRIV_WINDOW_US;
        uint64_t s = (uint64_t)((double)stall_us * (double)w / (double)window_us);

        log_debug("pressure: PSI trigger window %" PRIu64 " us refused, retrying with %" PRIu64
                  " us",
                  window_us, w);
        r = psi_write_trigger(fd, s, w);
    }
    if (r < 0) {
        close(fd);
        return log_debug_errno(r, "pressure: cannot arm PSI trigger on %s: %m", path);
    }
    return fd;
}

bool pressure_malloc_trim(void)
{
#ifdef __GLIBC__
    return malloc_trim(0) != 0;
#else
    return false;
#endif
}
