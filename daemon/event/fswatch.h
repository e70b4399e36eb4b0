/*
 * fswatch.h - changes to one directory's entries, for the live index (sched/watcher.h): a
 * libuv uv_fs_event handle, which on Linux is one inotify watch on the loop's one inotify
 * instance.  Not recursive: the watcher keeps one per directory.
 *
 *     r = event_fswatch_new(el, "/src/repo/lib", on_change, ctx, &w);
 *     ...
 *     w = event_fswatch_free(w);
 *
 * The callback gets the entry's name (NULL when the kernel did not say) and whether it may be
 * a rename, creation or deletion (EVENT_FSWATCH_RENAME) rather than a content change
 * (EVENT_FSWATCH_CHANGE); or a negative errno when watching failed (then the watch has
 * stopped: free it).  -ENOSPC from event_fswatch_new() is the inotify watch limit
 * (fs.inotify.max_user_watches).  A live watch keeps the loop running: its owner frees it when
 * the daemon stops.  event_fswatch_free() may be called from inside the callback.
 *
 * Threading: loop thread only.
 */
#ifndef COARCH_EVENT_FSWATCH_H
#define COARCH_EVENT_FSWATCH_H

struct event_loop;
struct event_fswatch;

enum {
    EVENT_FSWATCH_RENAME = 1 << 0,
    EVENT_FSWATCH_CHANGE = 1 << 1,
};

typedef void (*event_fswatch_fn)(struct event_fswatch *w, const char *name, int events,
                                 void *userdata);

int event_fswatch_new(struct event_loop *el, const char *dir, event_fswatch_fn fn, void *userdata,
                      struct event_fswatch **ret);
struct event_fswatch *event_fswatch_free(struct event_fswatch *w);

#endif
