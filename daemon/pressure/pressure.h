/*
 * pressure.h - memory readings for the governor: limit, usage, PSI, GPU.
 *
 * A pressure_source knows where to read; pressure_source_sample() takes one reading.  All paths
 * are resolved under a root directory ("/" in the daemon) so tests can build a fake /proc and
 * /sys/fs/cgroup tree in a temporary directory and point a source at it.
 *
 * Limit: the smallest of the configured limit (COARCH_MEMORY_LIMIT_MB), the cgroup limit and
 * physical RAM (MemTotal in /proc/meminfo).
 *   cgroup v2 (<root>/sys/fs/cgroup/cgroup.controllers lists "memory"): the directory is
 *     <root>/sys/fs/cgroup<path> for the "0::<path>" line of /proc/self/cgroup; the limit is the
 *     smallest memory.max ("max" = none) of that directory and every ancestor below the root,
 *     because the kernel enforces each of them.
 *   cgroup v1 (a "N:...memory...:<path>" line): <root>/sys/fs/cgroup/memory<path>; the limit is
 *     the smaller of memory.limit_in_bytes and memory.stat's hierarchical_memory_limit (which
 *     covers the ancestors).  v1 spells "no limit" as a huge page-rounded number; anything at or
 *     above physical RAM is treated as no limit.
 *   When <path> does not exist under the mount (a container that bind-mounts its own cgroup at
 *   the mount point without a cgroup namespace), the mount point itself is used.
 * Usage: when a cgroup limit applies (it exists and is below physical RAM), the cgroup's charged
 *   memory (v2 memory.current, v1 memory.usage_in_bytes) minus its clean file cache (memory.stat:
 *   active_file + inactive_file - file_dirty - file_writeback on v2, the total_ variants on v1),
 *   else the process's anonymous resident memory (/proc/self/status RssAnon + RssShmem; the RSS
 *   from /proc/self/statm where those fields are missing).  The cgroup number is what the OOM
 *   killer acts on, so it is the one to compare with a cgroup limit; it may include other processes
 *   of the cgroup, which errs on the safe side.  Clean file pages (source files read while
 *   scanning, LMDB's map, our own executable) are charged but dropped by the kernel's reclaim
 *   before it OOM-kills anything, and under a limit the page cache always grows to fill it:
 *   counting them reported CRITICAL for the whole of a job inside a 64 MiB cgroup whose anonymous
 *   memory never passed 45 MiB, and the job stalled.  Only dirty and under-writeback pages, which
 *   need I/O first, stay counted.  When reclaiming the cache costs real stalls, PSI says so and
 *   raises the level.  (Docker's and the kubelet's "working set" subtract only the inactive list,
 *   which still counts LMDB pages touched twice.)  Without a cgroup the same rule drops the
 *   file-backed part of the RSS (RssFile): LMDB's map, the model's safetensors and our executable
 *   are clean page cache mapped into us, the kernel's to drop, and the map's resident part grows
 *   with the index (every page a search or a write touched stays mapped): RssFile ended a 10k-line
 *   job at 45 MiB and a 100k-line one at 100 MiB.  What is left is what the governor can act on.
 *   The full RSS is still reported.
 * PSI: the cgroup's memory.pressure (v2) when present, else <root>/proc/pressure/memory.  "some"
 *   is the share of wall time in which at least one task stalled on memory.
 * GPU: a pressure_gpu_fn installed by the CUDA backend (cudaMemGetInfo plus its own allocator
 *   counters); absent without a GPU.
 *
 * Reads of procfs and cgroupfs are served from kernel memory and never wait on a disk, which is
 * why the event loop may call pressure_source_sample() directly on its timer (~10 small reads).
 *
 * Threading: a pressure_source is used by one thread at a time (the loop thread); distinct
 * sources are independent.  The GPU callback is called on that thread, from sample().
 */
#ifndef COARCH_PRESSURE_H
#define COARCH_PRESSURE_H

#include <stdbool.h>
#include <stdint.h>

enum pressure_cgroup_version {
    PRESSURE_CGROUP_NONE = 0,
    PRESSURE_CGROUP_V1 = 1,
    PRESSURE_CGROUP_V2 = 2,
};

/* Which bound set reading.limit. */
enum pressure_limit_source {
    PRESSURE_LIMIT_PHYSICAL,
    PRESSURE_LIMIT_CGROUP,
    PRESSURE_LIMIT_CONFIG,
};

struct pressure_psi {
    bool valid;        /* false: no PSI file or PSI disabled in the kernel */
    double some_avg10; /* percent of wall time, 0..100 */
    double some_avg60;
    double full_avg10;
    uint64_t some_total_us; /* cumulative stall time, monotonic */
};

/* GPU memory as the CUDA backend sees it, in bytes. */
struct pressure_gpu {
    bool valid;
    uint64_t free;      /* cudaMemGetInfo free */
    uint64_t total;     /* cudaMemGetInfo total */
    uint64_t allocated; /* bytes handed out by the backend's allocator */
    uint64_t reserved;  /* bytes the backend's allocator holds from the driver */
};

/*
 * Fills *ret_gpu; returns 0 or a negative errno (the reading is then marked invalid).  Called
 * from pressure_source_sample() on its thread; must not block for long.
 */
typedef int (*pressure_gpu_fn)(void *userdata, struct pressure_gpu *ret_gpu);

struct pressure_reading {
    uint64_t timestamp_us; /* CLOCK_MONOTONIC */
    uint64_t limit;        /* effective limit, bytes, > 0 */
    uint64_t usage;        /* what the level compares with limit, bytes */
    enum pressure_limit_source limit_source;
    bool usage_from_cgroup; /* usage = cgroup charge - clean file cache, else rss_anon */
    uint64_t physical;      /* MemTotal */
    uint64_t config_limit;  /* 0: none */
    enum pressure_cgroup_version cgroup_version;
    uint64_t cgroup_limit;       /* 0: none (or not below physical RAM) */
    uint64_t cgroup_usage;       /* raw charge; 0 without a memory cgroup */
    uint64_t cgroup_reclaimable; /* clean file cache, subtracted from cgroup_usage */
    uint64_t rss;                /* process resident set */
    uint64_t rss_anon;           /* its anonymous and shmem part (rss when unknown) */
    uint64_t vms;                /* process virtual size */
    struct pressure_psi psi;
    struct pressure_gpu gpu;
};

struct pressure_source;

/*
 * `root`: directory under which /proc and /sys are read; NULL means "/".  Copied.
 * `config_limit_bytes`: COARCH_MEMORY_LIMIT_MB in bytes, 0 for none.
 * Returns NULL only on ENOMEM.  Free with pressure_source_free().
 */
struct pressure_source *pressure_source_new(const char *root, uint64_t config_limit_bytes);
struct pressure_source *pressure_source_free(struct pressure_source *src);

/* Install (or with fn = NULL remove) the GPU reader.  userdata is borrowed. */
void pressure_source_set_gpu(struct pressure_source *src, pressure_gpu_fn fn, void *userdata);

/*
 * One reading.  The cgroup is looked up again each time (a process can be moved).  Returns 0,
 * or -ENOENT/-EIO/-EBADMSG when neither physical RAM nor RSS can be read (no usable /proc);
 * missing cgroup, PSI or GPU data only clear the matching fields.  *ret is written on success.
 */
int pressure_source_sample(struct pressure_source *src, struct pressure_reading *ret);

/*
 * Opens the PSI file the source reads and arms a trigger: POLLPRI is raised when tasks stalled
 * on memory ("some") for `stall_us` within any `window_us` window.  The kernel allows windows of
 * 0.5-10 s, and without CAP_SYS_RESOURCE only whole multiples of 2 s; on EINVAL for such a
 * window it is rounded up to the next multiple of 2 s with stall_us scaled to keep the same
 * ratio, and the trigger is retried once.  stall_us = 0 means 150000 and window_us = 0 means
 * 1000000 (15%).  Returns the fd (O_CLOEXEC, nonblocking; the caller owns and closes it), or a
 * negative errno: -ENOENT without PSI, -EOPNOTSUPP when the kernel has it disabled.  The
 * event loop watches the fd with uv_poll_start(UV_PRIORITIZED) and calls
 * governor_psi_event(); POLLERR means the PSI source went away (cgroup removed): close it.
 */
int pressure_psi_open_trigger(struct pressure_source *src, uint64_t stall_us, uint64_t window_us);

/* CLOCK_MONOTONIC in microseconds, the clock of reading.timestamp_us (uv_hrtime() / 1000). */
uint64_t pressure_now_us(void);

/* Parses the contents of a PSI file.  Returns 0 or -EBADMSG. */
int pressure_psi_parse(const char *text, struct pressure_psi *ret_psi);

/*
 * Returns freed heap at the top and in the middle of glibc's arenas to the kernel
 * (malloc_trim(0)); true when memory was released.  Can take milliseconds on a large heap, so
 * run it on a worker when the heap is big; on other libcs it does nothing and returns false.
 */
bool pressure_malloc_trim(void);

#endif
