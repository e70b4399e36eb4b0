/*
 * watch.h - waiting on a file descriptor from the loop, for modules that are not event/: the
 * memory governor's PSI trigger (a /proc/pressure/memory or memory.pressure fd that signals
 * POLLPRI when a stall threshold is crossed).
 *
 *     r = event_watch_new(el, fd, EVENT_WATCH_PRIORITY, on_psi, gov, &w);
 *     ...
 *     w = event_watch_free(w);                     // in the module's stop hook
 *
 * The watch does not own the fd: close it after event_watch_free().  Like a timer, a live
 * watch keeps the loop running, so its owner frees it when the daemon stops.  The callback gets
 * the events that fired, or a negative errno when polling the fd failed (the watch is then
 * stopped; free it).  event_watch_free() may be called from inside the callback.
 *
 * Threading: loop thread only.
 */
#ifndef COARCH_EVENT_WATCH_H
#define COARCH_EVENT_WATCH_H

struct event_loop;
struct event_watch;

enum {
    EVENT_WATCH_READABLE = 1 << 0,
    EVENT_WATCH_PRIORITY = 1 << 1, /* POLLPRI: PSI triggers, sysfs/cgroup notifications */
};

/* events: the EVENT_WATCH_* that fired; < 0: a negative errno, the watch has stopped. */
typedef void (*event_watch_fn)(struct event_watch *w, int events, void *userdata);

/* Starts watching fd for `events` (EVENT_WATCH_* bits).  0, or a negative errno (e.g. -EBADF,
 * -EPERM for a file epoll cannot watch). */
int event_watch_new(struct event_loop *el, int fd, int events, event_watch_fn fn, void *userdata,
                    struct event_watch **ret_watch);
/* Stops and closes; accepts NULL, returns NULL.  The callback never runs after this. */
struct event_watch *event_watch_free(struct event_watch *w);

#endif
