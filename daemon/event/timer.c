/*
 * timer.c - see timer.h.
 */
#include "timer.h"

#include <errno.h>
#include <stdlib.h>

#include "event-int.h"

struct event_timer {
    uv_timer_t handle;
    event_timer_fn fn;
    void *userdata;
};

static void timer_cb(uv_timer_t *handle)
{
    struct event_timer *t = handle->data;

    t->fn(t, t->userdata);
}

static void timer_close_cb(uv_handle_t *handle)
{
    free(handle->data);
}

int event_timer_new(struct event_loop *el, event_timer_fn fn, void *userdata,
                    struct event_timer **ret_timer)
{
    struct event_timer *t;
    int r;

    t = calloc(1, sizeof(*t));
    if (!t)
        return -ENOMEM;
    r = uv_timer_init(&el->uv, &t->handle);
    if (r < 0) {
        free(t); /* uv_timer_init() cannot fail after registering the handle */
        return r;
    }
    t->handle.data = t;
    t->fn = fn;
    t->userdata = userdata;
    *ret_timer = t;
    return 0;
}

int event_timer_start(struct event_timer *t, uint64_t timeout_ms, uint64_t repeat_ms)
{
    return uv_timer_start(&t->handle, timer_cb, timeout_ms, repeat_ms);
}

void event_timer_stop(struct event_timer *t)
{
    uv_timer_stop(&t->handle);
}

struct event_timer *event_timer_free(struct event_timer *t)
{
    if (!t)
        return NULL;
    uv_timer_stop(&t->handle);
    uv_close((uv_handle_t *)&t->handle, timer_close_cb);
    return NULL;
}
