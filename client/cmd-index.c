/*
 * cmd-index.c - `coarchctl index [--wait] [--quiet] PATH`: queue an indexing job, and with
 * --wait follow it to the end.
 *
 * The daemon runs with / as its working directory, so the client resolves PATH (realpath)
 * before sending it; the daemon resolves it again and names the canonical directory in every
 * job object, which is also how progress notifications are matched to this command.
 *
 * --wait subscribes to progress *before* sending `index {path, wait: true}`, so no event of the
 * job can slip between the two, and then waits without an inactivity timeout: the answer comes
 * when the job ends, which for a large repository is minutes away, and the model may load for
 * a while before the first progress event.  Progress goes to stderr: a line rewritten in place
 * (`\r`) on a terminal, one line every few seconds otherwise (log files, CI), nothing with
 * --quiet.  Notifications carry the job's id, which is how Ctrl-C can say which job it left
 * running: interrupting the client never cancels the job (`coarchctl cancel JOB` does).
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "client.h"
#include "macro.h"
#include "output.h"

#define PROGRESS_LOG_INTERVAL_S 5.0

struct index_wait {
    const char *root; /* the resolved path: notifications of other repositories are skipped */
    bool tty;         /* stderr is a terminal: rewrite one line */
    bool quiet;
    bool line_shown; /* a `\r` line is on the terminal and must be cleared before other output */
    uint64_t job;
    char last_state[16], last_phase[16];
    double last_log;
};

/* The message Ctrl-C prints; written by the notification callback, read by the handler. */
static char interrupt_msg[256];
static volatile sig_atomic_t interrupt_msg_ready;
static volatile sig_atomic_t interrupt_clear_line;

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/*
 * SIGINT during --wait: the job belongs to the daemon and goes on, which is the useful default
 * for a long job; say so and how to stop it.  Only async-signal-safe calls (write, _exit);
 * the message was formatted in advance.  The process exits here because the wait loop
 * (conn.c) retries poll() on EINTR and would never see a flag.
 */
static void on_sigint(int sig)
{
    static const char generic[] = "\ncoarchctl: interrupted; the indexing job keeps running in "
                                  "coarchd ('coarchctl jobs' shows it, 'coarchctl cancel JOB' "
                                  "stops it)\n";
    ssize_t n;

    (void)sig;
    if (interrupt_clear_line)
        n = write(STDERR_FILENO, "\r\033[K", 4);
    if (interrupt_msg_ready)
        n = write(STDERR_FILENO, interrupt_msg, strlen(interrupt_msg));
    else
        n = write(STDERR_FILENO, generic, sizeof(generic) - 1);
    (void)n;
    _exit(128 + SIGINT);
}

static uint64_t get_u(const msgpack_object *m, const char *key)
{
    uint64_t v = 0;

    (void)proto_get_uint(m, key, &v);
    return v;
}

static double get_d(const msgpack_object *m, const char *key, double dflt)
{
    double v = dflt;

    (void)proto_get_double(m, key, &v);
    return v;
}

/* Copies a string field into buf (truncated), "" when absent. */
static void get_s(const msgpack_object *m, const char *key, char *buf, size_t size)
{
    const char *s = "";
    size_t len = 0;

    (void)proto_get_str(m, key, &s, &len);
    snprintf(buf, size, "%.*s", (int)MIN(len, (size_t)INT32_MAX), s);
}

static int terminal_width(void)
{
    struct winsize ws;

    if (ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 10)
        return ws.ws_col;
    return 80;
}

/* One progress line (no newline) for a job object or progress event. */
static void format_progress(const msgpack_object *p, char *buf, size_t size)
{
    char state[16], phase[16], level[16], eta[32], usage[32], limit[32];
    uint64_t chunks_total = get_u(p, "chunks_total");
    double rate = get_d(p, "chunks_per_s", 0), eta_s = get_d(p, "eta_s", -1);
    bool resumed = false;
    size_t n;

    get_s(p, "state", state, sizeof(state));
    get_s(p, "phase", phase, sizeof(phase));
    get_s(p, "level", level, sizeof(level));
    (void)proto_get_bool(p, "resumed", &resumed);
    n = (size_t)snprintf(buf, size, "job %" PRIu64 "%s: ", get_u(p, "job"),
                         resumed ? " (resumed)" : "");
    if (n >= size)
        return;
    if (strcmp(state, "running") != 0) {
        snprintf(buf + n, size - n, "%s", state);
        return;
    }
    /* Taken by the worker but no phase begun yet: nothing to count, so no counters. */
    if (strcmp(phase, "queued") == 0 || !phase[0]) {
        snprintf(buf + n, size - n, "starting");
        return;
    }
    if (strcmp(phase, "scanning") == 0) {
        snprintf(buf + n, size - n, "scanning, %" PRIu64 " files seen", get_u(p, "files_scanned"));
        return;
    }
    /* Scanned and found nothing to (re)index: no counters of nothing. */
    if (get_u(p, "files_total") == 0 && get_u(p, "chunks_done") == 0) {
        uint64_t seen = get_u(p, "files_scanned");
        snprintf(buf + n, size - n, "%" PRIu64 " file%s seen, nothing changed", seen,
                 seen == 1 ? "" : "s");
        return;
    }
    if (eta_s >= 1)
        output_format_duration_ms((uint64_t)(eta_s * 1000), eta, sizeof(eta));
    else
        snprintf(eta, sizeof(eta), eta_s >= 0 ? "<1 s" : "?");
    output_format_bytes(get_u(p, "usage_bytes"), usage, sizeof(usage));
    output_format_bytes(get_u(p, "limit_bytes"), limit, sizeof(limit));
    snprintf(buf + n, size - n,
             "%s  files %" PRIu64 "/%" PRIu64 "  chunks %" PRIu64 "/~%" PRIu64
             "  %.0f chunks/s  ETA %s  mem %s %s/%s  batch %" PRIu64 "  checkpoints %" PRIu64,
             phase, get_u(p, "files_done"), get_u(p, "files_total"), get_u(p, "chunks_done"),
             chunks_total, rate, eta, level, usage, limit, get_u(p, "batch_size"),
             get_u(p, "checkpoints"));
}

static void clear_line(struct index_wait *w)
{
    if (w->line_shown) {
        fputs("\r\033[K", stderr);
        w->line_shown = false;
        interrupt_clear_line = 0;
    }
}

static void show_progress(struct index_wait *w, const msgpack_object *p)
{
    char line[512], state[16], phase[16];
    bool changed;
    double t = now_s();

    if (w->quiet)
        return;
    get_s(p, "state", state, sizeof(state));
    get_s(p, "phase", phase, sizeof(phase));
    changed = strcmp(state, w->last_state) != 0 || strcmp(phase, w->last_phase) != 0;
    memcpy(w->last_state, state, sizeof(state));
    memcpy(w->last_phase, phase, sizeof(phase));
    format_progress(p, line, sizeof(line));
    if (w->tty) {
        int width = terminal_width() - 1; /* a line that fills the row would wrap on some */
        fprintf(stderr, "\r%.*s\033[K", width, line);
        w->line_shown = true;
        interrupt_clear_line = 1;
    } else if (changed || t - w->last_log >= PROGRESS_LOG_INTERVAL_S) {
        fprintf(stderr, "%s\n", line);
        w->last_log = t;
    }
    fflush(stderr);
}

static int on_notify(const struct proto_msg *msg, void *userdata)
{
    struct index_wait *w = userdata;
    const char *repo;
    size_t len;
    uint64_t job;

    if (!proto_msg_method_is(msg, "progress"))
        return 0;
    if (proto_get_str(&msg->params, "repo", &repo, &len) < 0 || len != strlen(w->root) ||
        memcmp(repo, w->root, len) != 0)
        return 0; /* another repository's job */
    if (proto_get_uint(&msg->params, "job", &job) == 0 && job != w->job) {
        w->job = job;
        interrupt_msg_ready = 0;
        snprintf(interrupt_msg, sizeof(interrupt_msg),
                 "\ncoarchctl: interrupted; job %" PRIu64 " keeps running in coarchd (stop it "
                 "with: coarchctl cancel %" PRIu64 ")\n",
                 job, job);
        interrupt_msg_ready = 1;
    }
    show_progress(w, &msg->params);
    return 0;
}

static int subscribe_progress(struct client *cl)
{
    struct proto_msg *resp;
    msgpack_packer *pk;
    int r;

    r = client_request_begin(cl, "subscribe", 1, &pk);
    if (r != CLIENT_EXIT_OK)
        return r;
    proto_pack_str(pk, "events");
    msgpack_pack_array(pk, 1);
    proto_pack_str(pk, "progress");
    r = client_request_end(cl, &resp);
    if (r != CLIENT_EXIT_OK)
        return r;
    proto_msg_free(resp);
    return CLIENT_EXIT_OK;
}

/* "0.4 s", "12.3 s", "3m 07s". */
static void format_took(double s, char *buf, size_t size)
{
    if (s < 60)
        snprintf(buf, size, "%.1f s", s);
    else
        output_format_duration_ms((uint64_t)(s * 1000), buf, size);
}

/* How many files to name after the summary without --verbose. */
#define SKIPPED_SHOWN 5

/*
 * After the summary, what the job passed over: "skipped: 2 too large (...), 1 binary,
 * 1 vendored directory; 1 failed" and the first SKIPPED_SHOWN of them with their reasons (all
 * with --verbose).  Nothing when nothing was skipped.  stdout, with the summary.
 */
static void report_skipped(const msgpack_object *job, bool verbose)
{
    static const struct {
        const char *key, *one, *many;
    } kinds[] = {
        {"too_large", "too large (COARCH_MAX_FILE_SIZE_KB)", "too large (COARCH_MAX_FILE_SIZE_KB)"},
        {"binary", "binary", "binary"},
        {"vendored", "vendored directory", "vendored directories"},
        {"symlinks", "symbolic link", "symbolic links"},
        {"special", "special file", "special files"},
        {"unreadable", "unreadable", "unreadable"},
        {"failed", "failed", "failed"},
    };
    const msgpack_object *sk = proto_map_get(job, "skipped"), *files;
    bool any = false;

    if (!sk)
        return;
    for (size_t i = 0; i < ELEMENTSOF(kinds); i++) {
        uint64_t n = get_u(sk, kinds[i].key);
        if (!n)
            continue;
        printf("%s%" PRIu64 " %s", any ? ", " : "skipped: ", n,
               n == 1 ? kinds[i].one : kinds[i].many);
        any = true;
    }
    if (!any)
        return;
    putchar('\n');
    files = proto_map_get(job, "skipped_files");
    if (!files || files->type != MSGPACK_OBJECT_ARRAY)
        return;
    for (uint32_t i = 0; i < files->via.array.size && (verbose || i < SKIPPED_SHOWN); i++) {
        const msgpack_object *f = &files->via.array.ptr[i];
        char path[PATH_MAX], reason[32], err[128];
        get_s(f, "path", path, sizeof(path));
        get_s(f, "reason", reason, sizeof(reason));
        get_s(f, "error", err, sizeof(err));
        printf("  %s: %s%s%s\n", path, reason, err[0] ? ": " : "", err);
    }
    if (!verbose && files->via.array.size > SKIPPED_SHOWN)
        printf("  ... and %u more (index --verbose, or jobs --json, lists them)\n",
               files->via.array.size - SKIPPED_SHOWN);
}

/* The end of a waited-for job: a summary on stdout, or why it did not finish on stderr. */
static int report_end(struct client *cl, const msgpack_object *job, bool verbose)
{
    char state[16], msg[256], took[32];
    uint64_t id = get_u(job, "job");
    bool ok;

    get_s(job, "state", state, sizeof(state));
    get_s(job, "message", msg, sizeof(msg));
    ok = strcmp(state, "done") == 0;
    if (cl->json)
        client_print_json(cl, job);
    if (ok) {
        if (!cl->json) {
            char repo[PATH_MAX];
            get_s(job, "repo", repo, sizeof(repo));
            format_took(get_d(job, "elapsed_s", 0), took, sizeof(took));
            uint64_t files = get_u(job, "files_done"), chunks = get_u(job, "chunks_done");
            printf("indexed %s: %" PRIu64 " file%s (%" PRIu64 " unchanged, %" PRIu64
                   " deleted), %" PRIu64 " chunk%s in %s, %" PRIu64 " error%s\n",
                   repo, files, files == 1 ? "" : "s", get_u(job, "files_unchanged"),
                   get_u(job, "files_deleted"), chunks, chunks == 1 ? "" : "s", took,
                   get_u(job, "errors"), get_u(job, "errors") == 1 ? "" : "s");
            report_skipped(job, verbose);
        }
        return CLIENT_EXIT_OK;
    }
    if (strcmp(state, "failed") == 0)
        fprintf(stderr, "coarchctl index: job %" PRIu64 " failed: %s\n", id,
                msg[0] ? msg : "no reason given");
    else if (strcmp(state, "cancelled") == 0)
        fprintf(stderr,
                "coarchctl index: job %" PRIu64 " was cancelled (%" PRIu64
                " chunks were indexed before; search uses them)\n",
                id, get_u(job, "chunks_done"));
    else if (strcmp(state, "queued") == 0)
        fprintf(stderr,
                "coarchctl index: coarchd stopped before job %" PRIu64
                " finished; it resumes when coarchd starts again\n",
                id);
    else
        fprintf(stderr, "coarchctl index: job %" PRIu64 " ended in state '%s'%s%s\n", id, state,
                msg[0] ? ": " : "", msg);
    return CLIENT_EXIT_FAILED;
}

static int index_run(struct client *cl, int argc, char **argv)
{
    static const struct option opts[] = {
        {"wait", no_argument, NULL, 'w'},
        {"quiet", no_argument, NULL, 'q'},
        {"verbose", no_argument, NULL, 'v'},
        {"watch", no_argument, NULL, 'W'},
        {0},
    };
    const struct client_command *cmd = &client_cmd_index;
    struct index_wait w = {0};
    struct proto_msg *resp;
    msgpack_packer *pk;
    bool wait = false, verbose = false, watch = false;
    char *root;
    int opt, r, code = CLIENT_EXIT_USAGE;

    while ((opt = client_getopt(cl, cmd, argc, argv, "wqv", opts, &code)) != CLIENT_CONTINUE) {
        if (opt == CLIENT_GETOPT_EXIT)
            return code;
        if (opt == 'w')
            wait = true;
        else if (opt == 'q')
            w.quiet = true;
        else if (opt == 'v')
            verbose = true;
        else if (opt == 'W')
            watch = true;
    }
    if (optind + 1 < argc)
        return client_usage_error(cmd, "one directory at a time (got '%s' too)", argv[optind + 1]);
    root = optind < argc ? realpath(argv[optind], NULL) : client_repository_root();
    if (!root) {
        fprintf(stderr, "coarchctl index: %s: %s\n", optind < argc ? argv[optind] : ".",
                strerror(errno));
        return CLIENT_EXIT_FAILED;
    }

    r = client_connect(cl, 0);
    if (r != CLIENT_EXIT_OK)
        goto out;
    if (wait) {
        struct sigaction sa = {.sa_handler = on_sigint};
        w.root = root;
        w.tty = isatty(STDERR_FILENO);
        r = subscribe_progress(cl);
        if (r != CLIENT_EXIT_OK)
            goto out;
        conn_set_notify(cl->conn, on_notify, &w);
        conn_set_timeout(cl->conn, -1);
        sigemptyset(&sa.sa_mask);
        sigaction(SIGINT, &sa, NULL);
    }
    if (watch) {
        /* Watched from now on (and across restarts); the job it queues is the one below. */
        r = client_request_begin(cl, "watch", 1, &pk);
        if (r != CLIENT_EXIT_OK)
            goto out;
        proto_pack_kv_str(pk, "path", root);
        r = client_request_end(cl, &resp);
        if (r != CLIENT_EXIT_OK)
            goto out;
        proto_msg_free(resp);
        if (!cl->json && !w.quiet)
            fprintf(stderr,
                    "watching %s: changes are indexed as they happen "
                    "('coarchctl watch --stop' ends it)\n",
                    root);
    }
    r = client_request_begin(cl, "index", wait ? 2 : 1, &pk);
    if (r != CLIENT_EXIT_OK)
        goto out;
    proto_pack_kv_str(pk, "path", root);
    if (wait)
        proto_pack_kv_bool(pk, "wait", true);
    r = client_request_end(cl, &resp);
    if (wait) {
        signal(SIGINT, SIG_DFL);
        clear_line(&w);
    }
    if (r != CLIENT_EXIT_OK)
        goto out;

    if (wait) {
        r = report_end(cl, &resp->result, verbose);
    } else if (cl->json) {
        client_print_json(cl, &resp->result);
    } else {
        char state[16];
        get_s(&resp->result, "state", state, sizeof(state));
        printf("job %" PRIu64 " %s: %s\n", get_u(&resp->result, "job"), state, root);
    }
    proto_msg_free(resp);
out:
    free(root);
    return r;
}

const struct client_command client_cmd_index = {
    .name = "index",
    .summary = "Index a directory (incrementally) for search",
    .usage = "index [--wait] [--watch] [--quiet] [--verbose] [--json] [PATH]",
    .help = "Queues a job that indexes PATH: files git would track (.gitignore honoured),\n"
            "skipping binary, vendored and very large files.  Re-indexing is incremental:\n"
            "unchanged files cost a hash, deleted files leave the index.  Without --wait it\n"
            "prints the job id and state (\"job 3 queued: /src/app\") and returns; a directory\n"
            "that already has a queued or running job gets that job.  Without PATH, the git\n"
            "work tree around the current directory (the nearest ancestor with .git), else the\n"
            "current directory.\n"
            "\n"
            "Options:\n"
            "  -w, --wait   follow the job to its end: progress on stderr (one line rewritten\n"
            "               in place on a terminal, a line every 5 s otherwise), then a\n"
            "               summary; exit 0 when done, 1 when it failed or was cancelled.\n"
            "               Ctrl-C stops waiting but leaves the job running\n"
            "               ('coarchctl cancel JOB' stops it).  --timeout does not apply.\n"
            "  -q, --quiet  no progress output\n"
            "  -v, --verbose\n"
            "               after the summary, every file skipped or failed with its reason\n"
            "               (without it: the counts by reason and the first five)\n"
            "      --watch  keep the index live from now on: changes are indexed as they\n"
            "               happen, across daemon restarts too (see 'coarchctl watch')\n"
            "      --json   print the job object (with --wait: at the end)\n",
    .run = index_run,
};
