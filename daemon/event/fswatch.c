/*
 * fswatch.c - see fswatch.h.
 */
#include "fswatch.h"

#include <errno.h>
#include <stdlib.h>

#include "event-int.h"

struct event_fswatch {
    uv_fs_event_t handle;
    event_fswatch_fn fn;
    void *userdata;
};

static void fswatch_cb(uv_fs_event_t *handle, const char *name, int uv_events, int status)
{
    struct event_fswatch *w = handle->data;
    int events = 0;

    if (status < 0) {
        uv_fs_event_stop(handle);
        w->fn(w, NULL, status, w->userdata);
        return;
    }
    if (uv_events & UV_RENAME)
        events |= EVENT_FSWATCH_RENAME;
    if (uv_events & UV_CHANGE)
        events |= EVENT_FSWATCH_CHANGE;
    w->fn(w, name, events, w->userdata);
}

static void fswatch_close_cb(uv_handle_t *handle)
{
    free(handle->data);
}

int event_fswatch_new(struct event_loop *el, const char *dir, event_fswatch_fn fn, void *userdata,
                      struct event_fswatch **ret)
{
    struct event_fswatch *w = calloc(1, sizeof(*w));
    int r;

    if (!w)
        return -ENOMEM;
    r = uv_fs_event_init(&el->uv, &w->handle);
    if (r < 0) {
        free(w);
        return r;
    }
    w->handle.data = w;
    w->fn = fn;
    w->userdata = userdata;
    r = uv_fs_event_start(&w->handle, fswatch_cb, dir, 0);
    if (r < 0) {
        uv_close((uv_handle_t *)&w->handle, fswatch_close_cb);
        return r;
    }
    *ret = w;
    return 0;
}

struct event_fswatch *event_fswatch_free(struct event_fswatch *w)
{
    if (!w)
        return NULL;
    uv_fs_event_stop(&w->handle);
    uv_close((uv_handle_t *)&w->handle, fswatch_close_cb);
    return NULL;
}
