/*
 * cgroup.h - a throw-away memory cgroup for tests that need a real memory limit.
 *
 *   struct test_cgroup *cg;
 *   r = test_cgroup_new("coarch-oom", &cg);
 *   if (r == -EOPNOTSUPP || r == -EACCES) TEST_SKIP("no writable memory cgroup");
 *   test_cgroup_set_memory_limit(cg, 100 << 20);
 *   test_cgroup_add_pid(cg, child);          ... waitpid(child) ...
 *   test_cgroup_oom_kills(cg, &kills);
 *   test_cgroup_remove(cg);
 *
 * The cgroup is created as a child of the calling process's own memory cgroup (the path in
 * /proc/self/cgroup), so it needs no privilege beyond write access to that directory and stays
 * inside whatever limit already applies:
 *   v2 (/sys/fs/cgroup/cgroup.controllers lists "memory"): /sys/fs/cgroup/<own>/<name>, after
 *      "+memory" is written to <own>/cgroup.subtree_control.  The kernel refuses that while
 *      <own> holds processes (no internal processes) unless <own> is the root; that case
 *      returns -EOPNOTSUPP.
 *   v1: /sys/fs/cgroup/memory/<own>/<name>.
 * Swap is limited too (v1 memory.memsw.limit_in_bytes, v2 memory.swap.max = 0) where the files
 * exist, so an allocation over the limit is OOM-killed instead of swapped out.
 *
 * Errors: negative errno; -EOPNOTSUPP when no memory cgroup hierarchy is usable, -EACCES when
 * one exists but cannot be written (read-only mount, no permission): callers exit 77 on both.
 * Not thread-safe; one struct per cgroup.
 */
#ifndef COARCH_TEST_CGROUP_H
#define COARCH_TEST_CGROUP_H

#include <stdint.h>
#include <sys/types.h>

struct test_cgroup;

/* Creates the child cgroup `name` (one path component); a leftover from a crashed run is
 * removed first.  *ret_cg is owned by the caller: release with test_cgroup_remove(). */
int test_cgroup_new(const char *name, struct test_cgroup **ret_cg);

/* Memory limit in bytes (and the same memory+swap limit where swap accounting exists). */
int test_cgroup_set_memory_limit(struct test_cgroup *cg, uint64_t bytes);

/* Moves process `pid` (all its threads) into the cgroup. */
int test_cgroup_add_pid(struct test_cgroup *cg, pid_t pid);

/* Number of processes the OOM killer killed in this cgroup (v1 memory.oom_control, v2
 * memory.events "oom_kill").  -ENOENT when the kernel does not report it. */
int test_cgroup_oom_kills(const struct test_cgroup *cg, uint64_t *ret_kills);

/* The cgroup's directory; valid until test_cgroup_remove(). */
const char *test_cgroup_path(const struct test_cgroup *cg);
/* 1 or 2. */
int test_cgroup_version(const struct test_cgroup *cg);

/* Moves any remaining processes back to the parent cgroup, removes the directory and frees cg
 * (always, also on error).  Returns 0 or the rmdir error.  NULL is accepted. */
int test_cgroup_remove(struct test_cgroup *cg);

#endif
