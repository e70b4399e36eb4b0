/*
 * loop.c - the libuv loop, its signal handles and the post queue (see loop.h, work.h).
 */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>

#include "event-int.h"
#include "log.h"
#include "macro.h"

static const int watched_signals[] = {SIGTERM, SIGINT, SIGHUP};

static void post_async_cb(uv_async_t *handle);

int event_loop_new(struct event_loop **ret_loop)
{
    struct event_loop *el;
    int r;

    el = calloc(1, sizeof(*el));
    if (!el)
        return -ENOMEM;
    el->post_tail = &el->post_head;
    r = pthread_mutex_init(&el->post_lock, NULL);
    if (r != 0) {
        free(el);
        return -r;
    }
    r = uv_loop_init(&el->uv);
    if (r < 0) {
        pthread_mutex_destroy(&el->post_lock);
        free(el);
        return r;
    }
    el->uv_open = true;
    el->uv.data = el;

    /* From here on a failure leaves handles to close: event_loop_free() copes with that. */
    r = uv_async_init(&el->uv, &el->post_async, post_async_cb);
    if (r < 0)
        goto out_fail;
    el->post_async.data = el;
    el->post_init = true;

    for (size_t i = 0; i < ELEMENTSOF(watched_signals); i++) {
        r = uv_signal_init(&el->uv, &el->signals[i]);
        if (r < 0)
            goto out_fail; /* uv_signal_init() only fails before touching the handle */
        el->signals[i].data = el;
    }
    el->signals_init = true;

    *ret_loop = el;
    return 0;

out_fail:
    if (!el->signals_init) {
        /* Close the signal handles that did initialise: mark them by their loop pointer. */
        for (size_t i = 0; i < ELEMENTSOF(watched_signals); i++)
            if (el->signals[i].loop == &el->uv)
                uv_close((uv_handle_t *)&el->signals[i], NULL);
    }
    if (el->post_init)
        uv_close((uv_handle_t *)&el->post_async, NULL);
    el->post_init = el->signals_init = false;
    uv_run(&el->uv, UV_RUN_DEFAULT);
    if (uv_loop_close(&el->uv) == 0) {
        pthread_mutex_destroy(&el->post_lock);
        free(el);
    }
    return r;
}

static void signal_cb(uv_signal_t *handle, int signum)
{
    struct event_loop *el = handle->data;

    if (el->on_signal)
        el->on_signal(el, signum, el->signal_userdata);
}

int event_loop_watch_signals(struct event_loop *el, event_signal_fn fn, void *userdata)
{
    el->on_signal = fn;
    el->signal_userdata = userdata;
    for (size_t i = 0; i < ELEMENTSOF(watched_signals); i++) {
        int r = uv_signal_start(&el->signals[i], signal_cb, watched_signals[i]);

        if (r < 0) {
            for (size_t j = 0; j < i; j++)
                uv_signal_stop(&el->signals[j]);
            return r;
        }
    }
    return 0;
}

int event_loop_run(struct event_loop *el)
{
    /* UV_RUN_DEFAULT returns only when no referenced handle or request is left (we never
     * call uv_stop()), so its "handles remain" result cannot be non-zero here. */
    (void)uv_run(&el->uv, UV_RUN_DEFAULT);
    return 0;
}

bool event_loop_is_closing(const struct event_loop *el)
{
    return el->closing;
}

uint64_t event_loop_now_ms(const struct event_loop *el)
{
    return uv_now(&el->uv);
}

/* Takes the whole queue under the lock and runs it outside, in posting order, so a callback
 * may post again (it then runs on the next wake-up) without deadlocking. */
static void post_run(struct event_loop *el)
{
    struct event_post_item *item, *next;

    pthread_mutex_lock(&el->post_lock);
    item = el->post_head;
    el->post_head = NULL;
    el->post_tail = &el->post_head;
    pthread_mutex_unlock(&el->post_lock);

    for (; item; item = next) {
        next = item->next;
        item->fn(item->userdata);
        free(item);
    }
}

static void post_async_cb(uv_async_t *handle)
{
    post_run(handle->data);
}

int event_post(struct event_loop *el, event_post_fn fn, void *userdata)
{
    struct event_post_item *item = malloc(sizeof(*item));
    int r;

    if (!item)
        return -ENOMEM;
    *item = (struct event_post_item){.fn = fn, .userdata = userdata};

    pthread_mutex_lock(&el->post_lock);
    if (el->post_closed) {
        pthread_mutex_unlock(&el->post_lock);
        free(item);
        return -ESHUTDOWN;
    }
    *el->post_tail = item;
    el->post_tail = &item->next;
    /* Under the lock, so event_loop_close() cannot close the handle between our check and
     * the send.  uv_async_send() is async-signal-safe and coalesces wake-ups. */
    r = uv_async_send(&el->post_async);
    pthread_mutex_unlock(&el->post_lock);
    return r;
}

void event_loop_close(struct event_loop *el)
{
    if (el->closing)
        return;
    el->closing = true;

    pthread_mutex_lock(&el->post_lock);
    el->post_closed = true;
    pthread_mutex_unlock(&el->post_lock);
    /* Completions posted before the close still run: they may hold replies and buffers. */
    post_run(el);

    if (el->post_init)
        uv_close((uv_handle_t *)&el->post_async, NULL);
    if (el->signals_init) {
        for (size_t i = 0; i < ELEMENTSOF(watched_signals); i++)
            uv_close((uv_handle_t *)&el->signals[i], NULL);
        /* Closing the last handle for a signal restores SIG_DFL.  For SIGTERM/SIGINT that is
         * right (a second one during the final close ends it at once), but SIGHUP's default would
         * kill us for asking a reload while we finish stopping. */
        signal(SIGHUP, SIG_IGN);
    }
}

static void log_leftover_handle(uv_handle_t *handle, void *arg)
{
    log_error("handle left open at exit: %s%s (active %d)", uv_handle_type_name(handle->type),
              uv_is_closing(handle) ? ", closing" : "", uv_is_active(handle));
}

int event_loop_finish(struct event_loop *el)
{
    int r;

    if (!el->uv_open)
        return 0;
    r = uv_loop_close(&el->uv);
    if (r < 0) {
        log_error("event loop still has open handles; this is a bug");
        uv_walk(&el->uv, log_leftover_handle, NULL);
        return -EBUSY;
    }
    el->uv_open = false;
    return 0;
}

struct event_loop *event_loop_free(struct event_loop *el)
{
    if (!el)
        return NULL;
    if (el->uv_open) {
        /* A half-built or failed daemon: close what is ours and let close callbacks run. */
        event_loop_close(el);
        uv_run(&el->uv, UV_RUN_DEFAULT);
        if (event_loop_finish(el) < 0)
            return NULL; /* leaked on purpose, see loop.h */
    }
    pthread_mutex_destroy(&el->post_lock);
    free(el);
    return NULL;
}
