/*
 * spawn.h - running the real coarchd ($COARCHD) from integration tests, in a private
 * temporary directory, and making sure nothing outlives the test program.
 *
 * Every child is recorded; an atexit handler SIGKILLs and reaps whatever is still running and
 * removes every temporary directory, so a failing test (the harness longjmps out of it) leaves
 * nothing behind.  Children also get PR_SET_PDEATHSIG(SIGKILL), in case the test program
 * itself is killed.
 *
 * The child's environment is the test's, minus anything that would change coarchd's
 * behaviour (COARCH_*, XDG_RUNTIME_DIR, LISTEN_*, NOTIFY_SOCKET, WATCHDOG_*), plus
 * COARCH_SOCKET=<dir>/run/coarchd.sock, COARCH_DATA_DIR=<dir>/data, COARCH_LOG_LEVEL=debug
 * and the test's own additions.  stdout and stderr go to <dir>/coarchd.log.
 *
 * Threading: main thread only.
 */
#ifndef COARCH_TEST_SPAWN_H
#define COARCH_TEST_SPAWN_H

#include <limits.h>
#include <stdbool.h>
#include <sys/types.h>

struct tdaemon {
    pid_t pid;  /* 0 once reaped */
    int status; /* waitpid() status once reaped */
    char dir[PATH_MAX];
    char socket[PATH_MAX];
    char data_dir[PATH_MAX];
    char log[PATH_MAX];
};

struct tspawn_opts {
    const char *const *env;  /* extra "KEY=VALUE" entries; "KEY" alone removes KEY */
    const char *const *args; /* extra arguments */
    int listen_fd;           /* >= 0: passed as fd 3 with LISTEN_FDS=1, LISTEN_PID=<child> */
    bool no_paths;           /* do not set COARCH_SOCKET / COARCH_DATA_DIR */
    /* When set, a cgroup's cgroup.procs: the child writes its own pid there before exec, so
     * coarchd runs (and allocates everything) inside that cgroup; a failed write makes the
     * child exit 126. */
    const char *cgroup_procs;
};

/* The path of coarchd, or NULL (the test should skip) when $COARCHD is unset or missing. */
const char *tspawn_coarchd(void);

/* A fresh temporary directory (removed at exit); fills d->dir and the default paths. */
int tdaemon_init(struct tdaemon *d);
/* Starts coarchd; returns 0 or a negative errno.  Does not wait for anything. */
int tdaemon_spawn(struct tdaemon *d, const struct tspawn_opts *o);
/* tdaemon_init() + tdaemon_spawn() + wait until `socket` accepts connections (10 s).
 * Returns 0, -ETIMEDOUT, or -ECHILD when coarchd exited first (d->status says how). */
int tdaemon_start(struct tdaemon *d, const struct tspawn_opts *o);
/* Waits for the socket at `path` to accept connections while the child runs. */
int tdaemon_wait_socket(struct tdaemon *d, const char *path, int timeout_ms);

/* Waits up to timeout_ms for the child to exit.  Returns its exit code (0-255), 128+signal
 * when killed by a signal, or -ETIMEDOUT. */
int tdaemon_wait_exit(struct tdaemon *d, int timeout_ms);
int tdaemon_signal(struct tdaemon *d, int sig);
/* SIGKILL and reap (if still running). */
void tdaemon_kill(struct tdaemon *d);

/* The log so far, NUL-terminated (caller frees); "" if unreadable.  Polls: waits up to
 * timeout_ms for `needle` to appear, returns whether it did. */
char *tdaemon_log(const struct tdaemon *d);
bool tdaemon_log_wait(const struct tdaemon *d, const char *needle, int timeout_ms);
/* Prints the log to stderr (for failing tests). */
void tdaemon_dump_log(const struct tdaemon *d);

/* Records a pid of the test's own (a forked helper) for the atexit kill. */
void tspawn_track(pid_t pid);
void tspawn_untrack(pid_t pid);
/* Registers a directory for removal at exit. */
void tspawn_track_dir(const char *dir);

#endif
