/*
 * work.c - work on libuv's thread pool, tracked so the daemon can wait for it (see work.h).
 */
#include <errno.h>
#include <stdlib.h>

#include "event-int.h"

struct event_work {
    uv_work_t req;
    struct event_loop *el;
    event_work_fn work;
    event_done_fn done;
    void *userdata;
};

static void work_cb(uv_work_t *req)
{
    struct event_work *w = req->data;

    w->work(w->userdata);
}

static void after_work_cb(uv_work_t *req, int status)
{
    struct event_work *w = req->data;
    struct event_loop *el = w->el;

    el->work_inflight--;
    w->done(status, w->userdata);
    free(w);
    if (el->work_inflight == 0 && el->on_work_idle)
        el->on_work_idle(el->work_idle_userdata);
}

int event_work_queue(struct event_loop *el, event_work_fn work, event_done_fn done, void *userdata)
{
    struct event_work *w;
    int r;

    if (el->closing)
        return -ESHUTDOWN;
    w = malloc(sizeof(*w));
    if (!w)
        return -ENOMEM;
    *w = (struct event_work){.el = el, .work = work, .done = done, .userdata = userdata};
    w->req.data = w;
    r = uv_queue_work(&el->uv, &w->req, work_cb, after_work_cb);
    if (r < 0) {
        free(w);
        return r;
    }
    el->work_inflight++;
    return 0;
}

size_t event_work_inflight(const struct event_loop *el)
{
    return el->work_inflight;
}

void event_work_set_idle_callback(struct event_loop *el, event_post_fn fn, void *userdata)
{
    el->on_work_idle = fn;
    el->work_idle_userdata = userdata;
}
