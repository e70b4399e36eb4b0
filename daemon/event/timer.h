/*
 * timer.h - timers for modules that are not event/: the memory governor's sampling tick, the
 * systemd watchdog, job progress throttling.
 *
 *     r = event_timer_new(el, governor_tick, gov, &t);
 *     r = event_timer_start(t, 200, 200);          // first after 200 ms, then every 200 ms
 *     ...
 *     t = event_timer_free(t);                     // in the module's stop hook
 *
 * A live timer keeps the loop running, so its owner must free it when the daemon stops
 * (daemon_on_stop()).  event_timer_free() may be called from inside the timer's own callback;
 * the memory is released in the close callback, later.
 *
 * Threading: loop thread only.
 */
#ifndef COARCH_EVENT_TIMER_H
#define COARCH_EVENT_TIMER_H

#include <stdint.h>

struct event_loop;
struct event_timer;

typedef void (*event_timer_fn)(struct event_timer *t, void *userdata);

int event_timer_new(struct event_loop *el, event_timer_fn fn, void *userdata,
                    struct event_timer **ret_timer);
/* (Re)arms: first call after timeout_ms, then every repeat_ms (0 = once). */
int event_timer_start(struct event_timer *t, uint64_t timeout_ms, uint64_t repeat_ms);
void event_timer_stop(struct event_timer *t);
/* Stops and closes; accepts NULL, returns NULL.  The callback never runs after this. */
struct event_timer *event_timer_free(struct event_timer *t);

#endif
