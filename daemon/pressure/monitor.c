/*
 * monitor.c - see monitor.h.
 */
#include "monitor.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "timer.h"
#include "watch.h"

struct pressure_monitor {
    struct event_loop *el;
    struct pressure_monitor_hooks hooks;
    struct pressure_config cfg;

    pthread_mutex_t gov_lock; /* guards gov */
    struct governor *gov;
    atomic_uint actions; /* the job's mailbox: enum governor_action bits */

    struct pressure_source *src;   /* loop thread */
    struct event_timer *timer;     /* loop thread; NULL once stopped */
    struct event_watch *psi_watch; /* the PSI trigger's fd on the loop; NULL without PSI */
    int psi_fd;
};

int pressure_monitor_new(struct event_loop *el, const struct pressure_monitor_hooks *hooks,
                         struct pressure_monitor **ret)
{
    struct pressure_monitor *m = calloc(1, sizeof(*m));
    struct governor_params gp;
    char err[256];
    int r;

    if (!m)
        return -ENOMEM;
    m->el = el;
    m->hooks = *hooks;
    m->psi_fd = -1;
    pthread_mutex_init(&m->gov_lock, NULL);
    r = pressure_config_parse(pressure_config_getenv, NULL, &m->cfg, err, sizeof(err));
    if (r < 0) {
        log_error("%s", err);
        goto fail;
    }
    governor_params_init(&gp, &m->cfg);
    r = governor_new(&gp, &m->gov);
    if (r < 0)
        goto fail;
    m->src = pressure_source_new(NULL, m->cfg.memory_limit_bytes);
    if (!m->src) {
        r = -ENOMEM;
        goto fail;
    }
    *ret = m;
    return 0;
fail:
    pressure_monitor_free(m);
    return r;
}

/* Loop thread: hand the governor's edge actions to the job and act on the loop's share. */
static void apply_actions(struct pressure_monitor *m, unsigned actions, unsigned level,
                          uint64_t usage, uint64_t limit, const char *why)
{
    if (!actions)
        return;
    atomic_fetch_or(&m->actions, actions);
    if (actions & GOVERNOR_ACTION_LEVEL_RAISED)
        log_warning("memory pressure %s%s: %" PRIu64 " of %" PRIu64 " MiB in use",
                    pressure_level_to_string((enum pressure_level)level), why, usage >> 20,
                    limit >> 20);
    if ((actions & GOVERNOR_ACTION_SHED_CACHES) && m->hooks.shed_caches)
        m->hooks.shed_caches(m->hooks.userdata);
    if (actions & GOVERNOR_ACTION_MALLOC_TRIM)
        pressure_malloc_trim();
}

static void on_tick(struct event_timer *timer, void *userdata)
{
    struct pressure_monitor *m = userdata;
    struct pressure_reading rd;
    unsigned actions, level;

    (void)timer;
    if (pressure_source_sample(m->src, &rd) < 0)
        return;
    if (m->hooks.limit)
        m->hooks.limit(m->hooks.userdata, rd.limit);
    pthread_mutex_lock(&m->gov_lock);
    actions = governor_feed(m->gov, &rd);
    level = governor_level(m->gov);
    pthread_mutex_unlock(&m->gov_lock);
    apply_actions(m, actions, level, rd.usage, rd.limit, "");
}

static void psi_close(struct pressure_monitor *m)
{
    m->psi_watch = event_watch_free(m->psi_watch);
    if (m->psi_fd >= 0) {
        close(m->psi_fd);
        m->psi_fd = -1;
    }
}

/* The PSI trigger fired: tasks stalled on memory past the threshold within its window. */
static void on_psi_event(struct event_watch *w, int events, void *userdata)
{
    struct pressure_monitor *m = userdata;
    struct pressure_snapshot s;
    unsigned actions, level;

    (void)w;
    if (events < 0 || !(events & EVENT_WATCH_PRIORITY)) {
        /* POLLERR (the cgroup went away) or a poll failure: sampling goes on without it. */
        log_warning("memory pressure: the PSI trigger stopped (%s); sampling continues",
                    events < 0 ? strerror(-events) : "error on the file");
        psi_close(m);
        return;
    }
    pthread_mutex_lock(&m->gov_lock);
    actions = governor_psi_event(m->gov, pressure_now_us());
    level = governor_level(m->gov);
    governor_snapshot(m->gov, &s);
    pthread_mutex_unlock(&m->gov_lock);
    apply_actions(m, actions, level, s.usage, s.limit, " (PSI stall trigger)");
}

/* Arms the PSI trigger when this kernel has PSI; without it the timer's samples suffice. */
static void psi_start(struct pressure_monitor *m)
{
    int fd = pressure_psi_open_trigger(m->src, 0, 0), r;

    if (fd < 0) {
        log_debug("memory pressure: no PSI trigger (%s); sampling only", strerror(-fd));
        return;
    }
    r = event_watch_new(m->el, fd, EVENT_WATCH_PRIORITY, on_psi_event, m, &m->psi_watch);
    if (r < 0) {
        log_debug("memory pressure: cannot watch the PSI trigger: %s", strerror(-r));
        close(fd);
        return;
    }
    m->psi_fd = fd;
    log_debug("memory pressure: PSI trigger armed");
}

int pressure_monitor_start(struct pressure_monitor *m)
{
    int r = event_timer_new(m->el, on_tick, m, &m->timer);

    if (r >= 0)
        r = event_timer_start(m->timer, 0, m->cfg.interval_ms);
    if (r < 0)
        return r;
    psi_start(m);
    return 0;
}

void pressure_monitor_stop(struct pressure_monitor *m)
{
    m->timer = event_timer_free(m->timer);
    psi_close(m);
}

struct pressure_monitor *pressure_monitor_free(struct pressure_monitor *m)
{
    if (!m)
        return NULL;
    pressure_monitor_stop(m);
    governor_free(m->gov);
    pressure_source_free(m->src);
    pthread_mutex_destroy(&m->gov_lock);
    free(m);
    return NULL;
}

const struct pressure_config *pressure_monitor_config(const struct pressure_monitor *m)
{
    return &m->cfg;
}

void pressure_monitor_snapshot(struct pressure_monitor *m, struct pressure_snapshot *ret)
{
    pthread_mutex_lock(&m->gov_lock);
    governor_snapshot(m->gov, ret);
    pthread_mutex_unlock(&m->gov_lock);
}

void pressure_monitor_link(struct pressure_monitor *m, struct pressure_monitor_link *ret)
{
    *ret = (struct pressure_monitor_link){
        .gov = m->gov, .gov_lock = &m->gov_lock, .actions = &m->actions};
}

void pressure_monitor_set_gpu(struct pressure_monitor *m, pressure_gpu_fn fn, void *userdata)
{
    pressure_source_set_gpu(m->src, fn, userdata);
}
