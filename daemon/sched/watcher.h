/*
 * watcher.h - the live index: repositories whose changes are indexed as they happen.
 *
 * DESIGN
 *
 * A watched repository has one inotify watch per directory the indexer would walk (event/
 * fswatch.h; the same walk as a job's, scan.h with dirs_only, so ignore rules, vendored
 * directories and symbolic links are treated alike).  Any event in one of them marks the
 * repository dirty and (re)arms a debounce timer (COARCH_WATCH_DEBOUNCE_MS, 300 ms): when it
 * fires with no job of the repository queued or running, an ordinary incremental job is
 * submitted (jobs.h), which re-reads what changed and, for a changed file, embeds only the
 * chunks whose text changed (indexer.c keeps the others' vectors).  An event during a job marks
 * the repository dirty again, so a change is never lost to a job that had already passed its
 * file: another job follows.  A created, deleted or renamed directory, or a changed .gitignore
 * or .coarchignore, makes the directory set be walked again, so new directories are watched and
 * newly ignored ones are not.
 *
 * When the kernel's watch limit is reached (fs.inotify.max_user_watches), the directories that
 * could not be watched are counted, a warning says how to raise the limit, and the repository
 * is rescanned by a job every COARCH_WATCH_RESCAN_S (60 s) instead, so their changes arrive
 * late but arrive.
 *
 * Which repositories are watched persists in the store (meta key "watch.<repo id>"), so a
 * restarted daemon watches them again (and its start runs a job for each, catching what changed
 * while it was down).  Writing that key is the caller's (a pool thread: it takes the store's
 * write lock); see watcher_persist().
 *
 * Threading: loop thread, except watcher_persist() (a pool thread).
 */
#ifndef COARCH_SCHED_WATCHER_H
#define COARCH_SCHED_WATCHER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event_loop;
struct jobs;
struct store;
struct store_txn;
struct watcher;

#define WATCHER_META_PREFIX "watch."

/* Everything borrowed; must outlive the watcher. */
struct watcher_env {
    struct event_loop *el;
    struct store *store;
    struct jobs *jobs;
};

/* Reads COARCH_WATCH_DEBOUNCE_MS (1..60000), COARCH_WATCH_RESCAN_S (1..86400) and
 * COARCH_WATCH_MAX_DIRS (directories watched per repository, 0 = no cap of our own; those past
 * it are rescanned like those past the kernel's limit): -EINVAL (logged) for a bad value. */
int watcher_new(const struct watcher_env *env, struct watcher **ret);
/* Watches every repository the store says is watched, each after a catch-up job. */
int watcher_start(struct watcher *w);
/* Drops every watch and timer (the daemon stops); nothing is started after it. */
void watcher_stop(struct watcher *w);
struct watcher *watcher_free(struct watcher *w);

/* Starts watching repository `repo` at `root` (canonical); a no-op when it is watched. */
int watcher_add(struct watcher *w, uint32_t repo, const char *root);
/* Stops watching it; false when it was not watched. */
bool watcher_remove(struct watcher *w, uint32_t repo);

struct watcher_info {
    bool watching;
    size_t dirs;      /* directories with a watch */
    size_t unwatched; /* directories past the watch limit, rescanned instead */
    uint64_t jobs;    /* jobs the watcher has submitted since it started watching */
};
void watcher_info(struct watcher *w, uint32_t repo, struct watcher_info *ret);

/* Pool thread: records (on) or forgets that `repo` is watched, in its own transaction. */
int watcher_persist(struct store *store, uint32_t repo, bool on);
/* Whether the store records `repo` as watched (any thread, a read transaction). */
bool watcher_persisted(struct store_txn *t, uint32_t repo);

#endif
