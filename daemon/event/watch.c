/*
 * watch.c - see watch.h.  A uv_poll_t: libuv maps UV_PRIORITIZED to EPOLLPRI, which is how the
 * kernel signals a PSI trigger.
 */
#include "watch.h"

#include <errno.h>
#include <stdlib.h>

#include "event-int.h"

struct event_watch {
    uv_poll_t handle;
    event_watch_fn fn;
    void *userdata;
};

static void watch_cb(uv_poll_t *handle, int status, int uv_events)
{
    struct event_watch *w = handle->data;
    int events = 0;

    if (status < 0) {
        uv_poll_stop(handle);
        w->fn(w, status, w->userdata);
        return;
    }
    if (uv_events & UV_READABLE)
        events |= EVENT_WATCH_READABLE;
    if (uv_events & UV_PRIORITIZED)
        events |= EVENT_WATCH_PRIORITY;
    w->fn(w, events, w->userdata);
}

static void watch_close_cb(uv_handle_t *handle)
{
    free(handle->data);
}

int event_watch_new(struct event_loop *el, int fd, int events, event_watch_fn fn, void *userdata,
                    struct event_watch **ret_watch)
{
    struct event_watch *w;
    int uv_events = 0, r;

    if (events & EVENT_WATCH_READABLE)
        uv_events |= UV_READABLE;
    if (events & EVENT_WATCH_PRIORITY)
        uv_events |= UV_PRIORITIZED;
    if (!uv_events)
        return -EINVAL;
    w = calloc(1, sizeof(*w));
    if (!w)
        return -ENOMEM;
    r = uv_poll_init(&el->uv, &w->handle, fd);
    if (r < 0) {
        free(w); /* uv_poll_init() registers the handle only when it succeeds */
        return r;
    }
    w->handle.data = w;
    w->fn = fn;
    w->userdata = userdata;
    r = uv_poll_start(&w->handle, uv_events, watch_cb);
    if (r < 0) {
        uv_close((uv_handle_t *)&w->handle, watch_close_cb);
        return r;
    }
    *ret_watch = w;
    return 0;
}

struct event_watch *event_watch_free(struct event_watch *w)
{
    if (!w)
        return NULL;
    uv_poll_stop(&w->handle);
    uv_close((uv_handle_t *)&w->handle, watch_close_cb);
    return NULL;
}
