/*
 * watcher.c - see watcher.h.
 */
#include "watcher.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fswatch.h"
#include "jobs.h"
#include "log.h"
#include "macro.h"
#include "paths.h"
#include "scan.h"
#include "store-repo.h"
#include "store.h"
#include "timer.h"
#include "work.h"

#define DEFAULT_DEBOUNCE_MS 300
#define DEFAULT_RESCAN_S 60
/* While a job of the repository runs, a pending change is looked at again this often. */
#define BUSY_RETRY_MS 250

struct wrepo;

struct wdir {
    char *rel; /* "" for the root, else "a/b/" */
    struct event_fswatch *fw;
    struct wrepo *repo;
};

struct wrepo {
    struct watcher *w;
    uint32_t id;
    char *root;
    struct wdir **dirs;
    size_t n_dirs, cap_dirs;
    size_t unwatched;
    bool warned;
    struct event_timer *debounce, *rescan;
    bool dirty;      /* a change not handed to a job yet */
    bool rewalk;     /* the directory set may have changed */
    bool walking;    /* a walk is on the pool */
    bool submitting; /* a jobs_submit() is on the pool */
    bool catch_up;   /* submit a job once the first walk is done */
    bool removed;    /* unwatched while on the pool: freed by the last done */
    uint64_t jobs;
    struct wrepo *next;
};

struct watcher {
    struct watcher_env env;
    uint64_t debounce_ms, rescan_ms;
    uint64_t max_dirs; /* COARCH_WATCH_MAX_DIRS per repository; 0: as many as the kernel allows */
    struct wrepo *repos;
    bool stopped;
};

static int parse_env_u64(const char *name, uint64_t lo, uint64_t hi, uint64_t def, uint64_t *ret)
{
    const char *v = getenv(name);
    char *end = NULL;
    unsigned long long x;

    *ret = def;
    if (!v || !*v)
        return 0;
    errno = 0;
    x = strtoull(v, &end, 10);
    if (errno || end == v || *end || x < lo || x > hi) {
        log_error("%s=%s: expected an integer from %" PRIu64 " to %" PRIu64, name, v, lo, hi);
        return -EINVAL;
    }
    *ret = x;
    return 0;
}

int watcher_new(const struct watcher_env *env, struct watcher **ret)
{
    struct watcher *w = calloc(1, sizeof(*w));
    uint64_t rescan_s;
    int r;

    if (!w)
        return -ENOMEM;
    w->env = *env;
    r = parse_env_u64("COARCH_WATCH_DEBOUNCE_MS", 1, 60000, DEFAULT_DEBOUNCE_MS, &w->debounce_ms);
    if (r >= 0)
        r = parse_env_u64("COARCH_WATCH_RESCAN_S", 1, 86400, DEFAULT_RESCAN_S, &rescan_s);
    if (r >= 0)
        r = parse_env_u64("COARCH_WATCH_MAX_DIRS", 0, UINT32_MAX, 0, &w->max_dirs);
    if (r < 0) {
        free(w);
        return r;
    }
    w->rescan_ms = rescan_s * 1000;
    *ret = w;
    return 0;
}

/* ---- one repository ---------------------------------------------------------------------- */

static struct wrepo *find_repo(struct watcher *w, uint32_t id)
{
    for (struct wrepo *p = w->repos; p; p = p->next)
        if (p->id == id && !p->removed)
            return p;
    return NULL;
}

static void dir_free(struct wdir *d)
{
    if (!d)
        return;
    event_fswatch_free(d->fw);
    free(d->rel);
    free(d);
}

/* Frees the handles now; the record itself once nothing on the pool points at it. */
static void repo_release_handles(struct wrepo *p)
{
    for (size_t i = 0; i < p->n_dirs; i++)
        dir_free(p->dirs[i]);
    p->n_dirs = 0;
    p->debounce = event_timer_free(p->debounce);
    p->rescan = event_timer_free(p->rescan);
}

static void repo_unlink_free(struct wrepo *p)
{
    struct watcher *w = p->w;

    for (struct wrepo **pp = &w->repos; *pp; pp = &(*pp)->next)
        if (*pp == p) {
            *pp = p->next;
            break;
        }
    repo_release_handles(p);
    free(p->dirs);
    free(p->root);
    free(p);
}

/* After a pool item: a repository unwatched meanwhile goes once nothing else is in flight. */
static bool repo_gone(struct wrepo *p)
{
    if (!p->removed && !p->w->stopped)
        return false;
    if (!p->walking && !p->submitting)
        repo_unlink_free(p);
    return true;
}

static void start_walk(struct wrepo *p);

static void arm(struct wrepo *p, uint64_t ms)
{
    if (p->debounce)
        event_timer_start(p->debounce, ms, 0);
}

/* ---- submitting a job -------------------------------------------------------------------- */

struct submit_op {
    struct wrepo *repo;
    char *root;
    struct job *job;
    bool created;
    int r;
    char message[512];
};

static void submit_work(void *userdata)
{
    struct submit_op *op = userdata;

    op->r = jobs_submit(op->repo->w->env.jobs, op->root, &op->job, &op->created, op->message,
                        sizeof(op->message));
}

static void submit_done(int status, void *userdata)
{
    struct submit_op *op = userdata;
    struct wrepo *p = op->repo;

    p->submitting = false;
    if (!repo_gone(p)) {
        if (status < 0 || op->r < 0) {
            log_warning("watch %s: indexing the change failed: %s", p->root,
                        op->message[0] ? op->message : strerror(-(status < 0 ? status : op->r)));
            p->dirty = true;
            arm(p, p->w->rescan_ms); /* try again later rather than in a tight loop */
        } else if (op->created) {
            jobs_announce(p->w->env.jobs, op->job);
            p->jobs++;
        } else {
            /* A job that was already running may have passed the changed file: another. */
            p->dirty = true;
            arm(p, BUSY_RETRY_MS);
        }
    }
    free(op->root);
    free(op);
}

static void on_debounce(struct event_timer *t, void *userdata)
{
    struct wrepo *p = userdata;
    struct submit_op *op;

    (void)t;
    if (p->walking || p->submitting || jobs_active_of(p->w->env.jobs, p->id)) {
        arm(p, BUSY_RETRY_MS);
        return;
    }
    if (p->rewalk) {
        start_walk(p); /* its done re-arms */
        return;
    }
    if (!p->dirty)
        return;
    op = calloc(1, sizeof(*op));
    if (!op || !(op->root = strdup(p->root))) {
        free(op);
        arm(p, BUSY_RETRY_MS);
        return;
    }
    op->repo = p;
    p->dirty = false;
    p->submitting = true;
    if (event_work_queue(p->w->env.el, submit_work, submit_done, op) < 0) {
        p->submitting = false;
        p->dirty = true;
        free(op->root);
        free(op);
        arm(p, BUSY_RETRY_MS);
    }
}

static void on_rescan(struct event_timer *t, void *userdata)
{
    struct wrepo *p = userdata;

    (void)t;
    /* What could not be watched is looked at by a job now and then; the walk may also find
     * that watches have become available. */
    p->dirty = true;
    p->rewalk = true;
    arm(p, 0);
}

/* ---- events ------------------------------------------------------------------------------ */

/* p->dirs is kept sorted by rel (apply_walk()), so a lookup is a binary search. */
static int cmp_dir(const void *a, const void *b)
{
    return strcmp((*(struct wdir *const *)a)->rel, (*(struct wdir *const *)b)->rel);
}

static bool is_watched_dir(const struct wrepo *p, const char *rel)
{
    struct wdir key = {.rel = (char *)rel}, *kp = &key;

    return p->n_dirs && bsearch(&kp, p->dirs, p->n_dirs, sizeof(*p->dirs), cmp_dir);
}

static void on_fs_event(struct event_fswatch *fw, const char *name, int events, void *userdata)
{
    struct wdir *d = userdata;
    struct wrepo *p = d->repo;

    (void)fw;
    if (events < 0) {
        /* The watch broke (its directory went away): the walk sorts it out. */
        p->rewalk = true;
    } else if (name && (strcmp(name, ".gitignore") == 0 || strcmp(name, ".coarchignore") == 0)) {
        p->rewalk = true; /* the rules changed: what is watched (and indexed) may change */
    } else if (name && (events & EVENT_FSWATCH_RENAME)) {
        /* A directory created, deleted or renamed changes the set of watches; a file does
         * not (editors save through renames: no walk for each save). */
        char rel[4096], full[4096 + 512];
        struct stat st;
        bool now_dir;

        snprintf(rel, sizeof(rel), "%s%s/", d->rel, name);
        snprintf(full, sizeof(full), "%s/%s%s", p->root, d->rel, name);
        now_dir = lstat(full, &st) == 0 && S_ISDIR(st.st_mode);
        if (now_dir != is_watched_dir(p, rel))
            p->rewalk = true;
    }
    p->dirty = true;
    arm(p, p->w->debounce_ms);
}

/* ---- walking the directories ------------------------------------------------------------- */

struct walk_op {
    struct wrepo *repo;
    char *root;
    char **rels;
    size_t n, cap;
    int r;
};

static int collect_dir(void *userdata, const char *path)
{
    struct walk_op *op = userdata;
    char *s;

    if (array_grow((void **)&op->rels, &op->cap, op->n + 1, sizeof(*op->rels)) < 0 ||
        !(s = strdup(path)))
        return -ENOMEM;
    op->rels[op->n++] = s;
    return 0;
}

static void walk_work(void *userdata)
{
    struct walk_op *op = userdata;
    struct scan_options opt;
    struct scan_report rep;

    scan_options_init(&opt);
    opt.dirs_only = true;
    opt.dir_fn = collect_dir;
    opt.dir_userdata = op;
    op->r = scan_repo(op->root, &opt, NULL, NULL, &rep);
    scan_report_release(&rep);
}

static int cmp_rel(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void apply_walk(struct wrepo *p, struct walk_op *op)
{
    size_t keep = 0, n_old;
    int first_fail_errno = 0;

    qsort(op->rels, op->n, sizeof(*op->rels), cmp_rel);
    /* Drop the watches of directories no longer walked. */
    for (size_t i = 0; i < p->n_dirs; i++) {
        struct wdir *d = p->dirs[i];
        if (d->fw && bsearch(&d->rel, op->rels, op->n, sizeof(*op->rels), cmp_rel))
            p->dirs[keep++] = d;
        else
            dir_free(d);
    }
    p->n_dirs = n_old = keep;
    p->unwatched = 0;
    for (size_t i = 0; i < op->n; i++) {
        char full[4096 + 512];
        struct wdir *d;
        int r;

        /* Among the kept ones (still sorted: the new ones are appended after them). */
        struct wdir key = {.rel = op->rels[i]}, *kp = &key;
        if (n_old && bsearch(&kp, p->dirs, n_old, sizeof(*p->dirs), cmp_dir))
            continue;
        if (p->w->max_dirs && p->n_dirs >= p->w->max_dirs) {
            if (!first_fail_errno)
                first_fail_errno = EMFILE;
            p->unwatched++;
            continue;
        }
        snprintf(full, sizeof(full), "%s/%s", p->root, op->rels[i]);
        d = calloc(1, sizeof(*d));
        if (!d ||
            array_grow((void **)&p->dirs, &p->cap_dirs, p->n_dirs + 1, sizeof(*p->dirs)) < 0) {
            free(d);
            p->unwatched++;
            continue;
        }
        d->repo = p;
        d->rel = op->rels[i];
        op->rels[i] = NULL;
        r = event_fswatch_new(p->w->env.el, full, on_fs_event, d, &d->fw);
        if (r < 0) {
            if (!first_fail_errno)
                first_fail_errno = -r;
            p->unwatched++;
            free(d->rel);
            free(d);
            continue;
        }
        p->dirs[p->n_dirs++] = d;
    }
    if (p->unwatched > 0) {
        if (!p->warned) {
            if (first_fail_errno == ENOSPC)
                log_warning("watch %s: the inotify watch limit is reached: %zu of %zu "
                            "directories are not watched and are rescanned every %" PRIu64
                            " s instead; raise the limit with `sudo sysctl "
                            "fs.inotify.max_user_watches=524288` (and put it in "
                            "/etc/sysctl.d/ to keep it)",
                            p->root, p->unwatched, op->n, p->w->rescan_ms / 1000);
            else if (first_fail_errno == EMFILE)
                log_warning("watch %s: COARCH_WATCH_MAX_DIRS=%" PRIu64 " reached: %zu of %zu "
                            "directories are not watched and are rescanned every %" PRIu64
                            " s instead",
                            p->root, p->w->max_dirs, p->unwatched, op->n, p->w->rescan_ms / 1000);
            else
                log_warning("watch %s: %zu of %zu directories cannot be watched (%s); they are "
                            "rescanned every %" PRIu64 " s instead",
                            p->root, p->unwatched, op->n,
                            strerror(first_fail_errno ? first_fail_errno : ENOMEM),
                            p->w->rescan_ms / 1000);
            p->warned = true;
        }
        if (p->rescan)
            event_timer_start(p->rescan, p->w->rescan_ms, p->w->rescan_ms);
    } else if (p->rescan) {
        event_timer_stop(p->rescan);
        p->warned = false;
    }
    qsort(p->dirs, p->n_dirs, sizeof(*p->dirs), cmp_dir);
    log_debug("watch %s: %zu directories watched, %zu not", p->root, p->n_dirs, p->unwatched);
}

static void walk_done(int status, void *userdata)
{
    struct walk_op *op = userdata;
    struct wrepo *p = op->repo;

    p->walking = false;
    if (!repo_gone(p)) {
        if (status < 0 || op->r < 0) {
            log_warning("watch %s: walking its directories failed: %s", p->root,
                        strerror(-(status < 0 ? status : op->r)));
            p->rewalk = true;
            arm(p, p->w->rescan_ms);
        } else {
            apply_walk(p, op);
            if (p->catch_up) {
                p->catch_up = false;
                p->dirty = true;
            }
            /* Changes made while walking, and what a new directory already holds. */
            arm(p, p->dirty ? p->w->debounce_ms : BUSY_RETRY_MS);
        }
    }
    for (size_t i = 0; i < op->n; i++)
        free(op->rels[i]);
    free(op->rels);
    free(op->root);
    free(op);
}

static void start_walk(struct wrepo *p)
{
    struct walk_op *op = calloc(1, sizeof(*op));

    p->rewalk = false;
    if (!op || !(op->root = strdup(p->root))) {
        free(op);
        p->rewalk = true;
        arm(p, BUSY_RETRY_MS);
        return;
    }
    op->repo = p;
    p->walking = true;
    if (event_work_queue(p->w->env.el, walk_work, walk_done, op) < 0) {
        p->walking = false;
        p->rewalk = true;
        free(op->root);
        free(op);
        arm(p, BUSY_RETRY_MS);
    }
}

static int add(struct watcher *w, uint32_t repo, const char *root, bool catch_up)
{
    struct wrepo *p;
    int r;

    if (w->stopped)
        return -ESHUTDOWN;
    if (find_repo(w, repo))
        return 0;
    p = calloc(1, sizeof(*p));
    if (!p || !(p->root = strdup(root))) {
        free(p);
        return -ENOMEM;
    }
    p->w = w;
    p->id = repo;
    p->catch_up = catch_up;
    r = event_timer_new(w->env.el, on_debounce, p, &p->debounce);
    if (r >= 0)
        r = event_timer_new(w->env.el, on_rescan, p, &p->rescan);
    if (r < 0) {
        event_timer_free(p->debounce);
        free(p->root);
        free(p);
        return r;
    }
    p->next = w->repos;
    w->repos = p;
    start_walk(p);
    log_info("watching %s for changes", root);
    return 0;
}

int watcher_add(struct watcher *w, uint32_t repo, const char *root)
{
    return add(w, repo, root, false);
}

bool watcher_remove(struct watcher *w, uint32_t repo)
{
    struct wrepo *p = find_repo(w, repo);

    if (!p)
        return false;
    p->removed = true;
    repo_release_handles(p);
    repo_gone(p);
    log_info("no longer watching repository %" PRIu32, repo);
    return true;
}

void watcher_info(struct watcher *w, uint32_t repo, struct watcher_info *ret)
{
    struct wrepo *p = w ? find_repo(w, repo) : NULL;

    *ret = (struct watcher_info){0};
    if (!p)
        return;
    ret->watching = true;
    ret->dirs = p->n_dirs;
    ret->unwatched = p->unwatched;
    ret->jobs = p->jobs;
}

/* ---- persistence ------------------------------------------------------------------------- */

static void meta_key(uint32_t repo, char *buf, size_t size)
{
    snprintf(buf, size, WATCHER_META_PREFIX "%" PRIu32, repo);
}

int watcher_persist(struct store *store, uint32_t repo, bool on)
{
    struct store_txn *t;
    char key[64];
    int r;

    meta_key(repo, key, sizeof(key));
    r = store_write_begin(store, &t);
    if (r < 0)
        return r;
    if (on)
        r = store_meta_put(t, key, "1", 1);
    else {
        r = store_meta_delete(t, key);
        if (r == -ENOENT)
            r = 0;
    }
    if (r < 0) {
        store_write_abort(t);
        return r;
    }
    return store_write_commit(t);
}

bool watcher_persisted(struct store_txn *t, uint32_t repo)
{
    const void *v;
    size_t len;
    char key[64];

    meta_key(repo, key, sizeof(key));
    return store_meta_get(t, key, &v, &len) == 0 && len == 1 && *(const char *)v == '1';
}

struct start_ctx {
    struct watcher *w;
    struct store_txn *t;
    size_t n;
};

static int on_repo(void *userdata, const struct store_repo *repo)
{
    struct start_ctx *c = userdata;

    if (!watcher_persisted(c->t, repo->id))
        return 0;
    if (add(c->w, repo->id, repo->path, true) >= 0)
        c->n++;
    return 0;
}

int watcher_start(struct watcher *w)
{
    struct start_ctx c = {.w = w};
    int r;

    r = store_read_begin(w->env.store, &c.t);
    if (r < 0)
        return r;
    r = store_repo_foreach(c.t, on_repo, &c);
    store_read_end(c.t);
    if (c.n)
        log_info("watching %zu repositor%s for changes", c.n, c.n == 1 ? "y" : "ies");
    return r;
}

void watcher_stop(struct watcher *w)
{
    if (!w || w->stopped)
        return;
    w->stopped = true;
    for (struct wrepo *p = w->repos, *next; p; p = next) {
        next = p->next;
        repo_release_handles(p);
        repo_gone(p);
    }
}

struct watcher *watcher_free(struct watcher *w)
{
    if (!w)
        return NULL;
    watcher_stop(w);
    /* Whatever is still on the pool was freed by its done (the loop has finished by now). */
    while (w->repos)
        repo_unlink_free(w->repos);
    free(w);
    return NULL;
}
