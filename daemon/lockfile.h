/*
 * lockfile.h - "only one coarchd here": an exclusive flock(2) on a small file that holds the
 * owner's pid.
 *
 * The kernel drops the lock when the process dies, however it dies, so a stale lock file
 * never blocks a restart and needs no clean-up; for the same reason the file is never
 * unlinked (unlinking a lock file races with a process that opened it just before).  The pid
 * inside is informational, for the "already running" message.
 *
 * Threading: any thread; no state.
 */
#ifndef COARCH_DAEMON_LOCKFILE_H
#define COARCH_DAEMON_LOCKFILE_H

#include <sys/types.h>

/*
 * Opens (creating, mode 0600) and locks `path`, then writes our pid into it.  Returns the
 * locked fd (O_CLOEXEC; closing it releases the lock), or -EBUSY when another process holds
 * the lock, with *ret_holder set to the pid found in the file (0 when unreadable), or another
 * negative errno.
 */
int lockfile_acquire(const char *path, pid_t *ret_holder);

#endif
