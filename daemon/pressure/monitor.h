/*
 * monitor.h - the memory governor on the event loop: samples memory on a timer (and on the PSI
 * stall trigger where the kernel has one), feeds the governor, and hands its edge actions on.
 *
 * The pure parts live beside it (pressure.h reads /proc and the cgroup, governor.h turns
 * readings into a level, a batch size and actions, pressure-config.h reads the settings); this
 * file is their glue to the loop, through event/ (timer.h, watch.h), which owns the handles.
 *
 * Actions.  governor_feed() and governor_psi_event() return the actions of a level edge.  The
 * monitor acts on the loop's share itself (a warning in the log when the level rises,
 * malloc_trim), asks its owner to drop caches through hooks.shed_caches, and ORs every action
 * into an atomic mailbox that a running indexing job reads between batches (indexer.h).
 *
 * Sharing.  The governor is read and written by the loop thread (samples) and the job worker
 * (batch sizes, checkpoints) under one mutex; pressure_monitor_link() hands the worker the three
 * pointers indexer_env wants.
 *
 * Threading: new/start/stop/free and the hooks on the loop thread; pressure_monitor_snapshot()
 * and pressure_monitor_config() on any thread.
 */
#ifndef COARCH_PRESSURE_MONITOR_H
#define COARCH_PRESSURE_MONITOR_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "governor.h"
#include "pressure-config.h"

struct event_loop;
struct pressure_monitor;

struct pressure_monitor_hooks {
    void (*limit)(void *userdata, uint64_t limit_bytes); /* every sample: the effective limit */
    void (*shed_caches)(void *userdata);                 /* GOVERNOR_ACTION_SHED_CACHES */
    void *userdata;
};

/* What an indexing job is given to talk to the governor (all borrowed from the monitor). */
struct pressure_monitor_link {
    struct governor *gov;
    pthread_mutex_t *gov_lock;
    atomic_uint *actions;
};

/*
 * Reads the settings from the environment (COARCH_MEMORY_LIMIT_MB, COARCH_ADAPTIVE_BATCHING,
 * COARCH_CHECKPOINT_FREQUENCY, ...) and builds the governor and the memory source.  Returns 0,
 * -EINVAL for a bad setting (logged, naming the variable and the expected range), or -ENOMEM.
 * Samples nothing until pressure_monitor_start().
 */
int pressure_monitor_new(struct event_loop *el, const struct pressure_monitor_hooks *hooks,
                         struct pressure_monitor **ret);
/* Starts the sampling timer (first sample at once) and arms the PSI trigger when there is one. */
int pressure_monitor_start(struct pressure_monitor *m);
/* Stops sampling and closes the timer and the trigger (the daemon's stop sequence).  Idempotent. */
void pressure_monitor_stop(struct pressure_monitor *m);
/* Accepts NULL; returns NULL. */
struct pressure_monitor *pressure_monitor_free(struct pressure_monitor *m);

/* The settings read at pressure_monitor_new(); borrowed, immutable. */
const struct pressure_config *pressure_monitor_config(const struct pressure_monitor *m);
/* The governor's state now, taken under its lock. */
void pressure_monitor_snapshot(struct pressure_monitor *m, struct pressure_snapshot *ret);
void pressure_monitor_link(struct pressure_monitor *m, struct pressure_monitor_link *ret);
/* The reader of device memory every sample includes (pressure.h; fn NULL removes it).  It runs
 * on the loop thread and must not block. */
void pressure_monitor_set_gpu(struct pressure_monitor *m, pressure_gpu_fn fn, void *userdata);

#endif
