/*
 * main.c - coarchd's entry point: command line, configuration, exit codes.  The only file in
 * coarchd that calls exit (by returning from main); everything else reports negative errno.
 *
 * coarchd never daemonizes itself: it runs in the foreground, logging to stderr (journald
 * parses the "<N>" priority prefixes when stderr is not a TTY).  `coarchctl` starts it in the
 * background with setsid; systemd runs it as a Type=notify user unit, optionally
 * socket-activated (contrib/systemd/).
 *
 * Exit codes (stable; coarchctl relies on 3):
 *   0  stopped cleanly (SIGTERM, SIGINT, the `shutdown` method), or --help/--version
 *   1  failure: cannot create or listen on the socket, cannot set up the data dir, internal
 *      error, or the event loop did not close cleanly
 *   2  usage: bad command line, or an invalid configuration value (named on stderr)
 *   3  already running: another coarchd holds the data dir lock or owns the socket
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "cpu.h"
#include "daemon.h"
#include "engine.h"
#include "log.h"
#include "macro.h"
#include "paths.h"
#include "sdnotify.h"

enum {
    EXIT_OK = 0,
    EXIT_FAIL = 1,
    EXIT_USAGE = 2,
    EXIT_RUNNING = 3,
};

struct args {
    const char *socket_path;
    const char *data_dir;
    struct daemon_config_overrides overrides;
};

static void print_help(void)
{
    printf("Usage: coarchd [OPTIONS]\n"
           "\n"
           "The coarch code-search daemon.  Runs in the foreground and logs to stderr.\n"
           "\n"
           "Options:\n"
           "  --socket PATH       listen on PATH (default: $COARCH_SOCKET, else\n"
           "                      $XDG_RUNTIME_DIR/coarch/coarchd.sock)\n"
           "  --data-dir DIR      keep the index in DIR (default: $COARCH_DATA_DIR, else\n"
           "                      $XDG_DATA_HOME/coarch, else ~/.local/share/coarch)\n"
           "  --log-level LEVEL   err, warning, notice, info or debug (default: info, or\n"
           "                      $COARCH_LOG_LEVEL)\n"
           "  --foreground        accepted for compatibility; coarchd never daemonizes\n"
           "  --help              show this help\n"
           "  --version           show the version\n"
           "\n"
           "Environment (also KEY=VALUE lines in $COARCH_CONFIG or <data dir>/coarchd.conf,\n"
           "re-read on SIGHUP; the environment wins over the file):\n"
           "  COARCH_LOG_LEVEL, COARCH_MAX_CONNECTIONS (128), COARCH_MAX_FRAME_MB (16),\n"
           "  COARCH_MAX_PENDING (64), COARCH_IDLE_TIMEOUT_S (600, 0 = never),\n"
           "  COARCH_MAX_OUTPUT_MB (64), COARCH_DEBUG_METHODS (0)\n"
           "\n"
           "Exit status: 0 stopped cleanly, 1 failure, 2 usage or configuration error,\n"
           "3 another coarchd already uses the data dir or socket.\n");
}

/* A relative --socket/--data-dir made absolute: status reports it to clients, which do not
 * share our working directory.  Returns a malloc'd string or NULL (ENOMEM/getcwd failure). */
static char *absolute_path(const char *p)
{
    _cleanup_free_ char *cwd = NULL;

    if (p[0] == '/')
        return strdup(p);
    cwd = getcwd(NULL, 0);
    return cwd ? path_join(cwd, p) : NULL;
}

/* Returns 1 to go on, 0 after --help/--version, or -EINVAL after printing the usage error. */
static int parse_args(int argc, char **argv, struct args *ret_args)
{
    enum { OPT_SOCKET = 0x100, OPT_DATA_DIR, OPT_LOG_LEVEL, OPT_FOREGROUND, OPT_HELP, OPT_VERSION };
    static const struct option options[] = {
        {"socket", required_argument, NULL, OPT_SOCKET},
        {"data-dir", required_argument, NULL, OPT_DATA_DIR},
        {"log-level", required_argument, NULL, OPT_LOG_LEVEL},
        {"foreground", no_argument, NULL, OPT_FOREGROUND},
        {"help", no_argument, NULL, OPT_HELP},
        {"version", no_argument, NULL, OPT_VERSION},
        {},
    };
    struct args a = {0};
    int c;

    while ((c = getopt_long(argc, argv, "", options, NULL)) >= 0) {
        switch (c) {
        case OPT_SOCKET:
            if (!optarg[0]) {
                fprintf(stderr, "coarchd: --socket needs a path\n");
                return -EINVAL;
            }
            a.socket_path = optarg;
            break;
        case OPT_DATA_DIR:
            if (!optarg[0]) {
                fprintf(stderr, "coarchd: --data-dir needs a directory\n");
                return -EINVAL;
            }
            a.data_dir = optarg;
            break;
        case OPT_LOG_LEVEL:
            if (log_level_from_string(optarg, &a.overrides.log_level) < 0) {
                fprintf(stderr,
                        "coarchd: invalid --log-level \"%s\": expected err, warning, notice, "
                        "info or debug\n",
                        optarg);
                return -EINVAL;
            }
            a.overrides.has_log_level = true;
            break;
        case OPT_FOREGROUND:
            break;
        case OPT_HELP:
            print_help();
            return 0;
        case OPT_VERSION:
            printf("coarchd %s (protocol %d)\n", COARCH_VERSION, PROTO_VERSION);
            return 0;
        default:
            fprintf(stderr, "Try 'coarchd --help'.\n");
            return -EINVAL;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "coarchd: unexpected argument \"%s\"\nTry 'coarchd --help'.\n",
                argv[optind]);
        return -EINVAL;
    }
    *ret_args = a;
    return 1;
}

int main(int argc, char **argv)
{
    _cleanup_free_ char *socket_path = NULL, *data_dir = NULL, *config_path = NULL;
    struct daemon_options o = {.listen_fd = -1};
    struct daemon *d = NULL;
    struct engine *engine = NULL;
    struct args args;
    int r;

    log_set_ident("coarchd");
    /* Before anything else: may re-execute us so OpenBLAS picks its AVX-512 kernels (cpu.h). */
    embed_cpu_setup_process(argv);
    r = parse_args(argc, argv, &args);
    if (r <= 0)
        return r == 0 ? EXIT_OK : EXIT_USAGE;

    /* A client that disconnects mid-write must cost us EPIPE, not the process. */
    signal(SIGPIPE, SIG_IGN);
    /* The index holds the user's code: whatever we create is private unless said otherwise. */
    umask(0077);

    if (args.data_dir)
        data_dir = absolute_path(args.data_dir);
    else if ((r = coarch_data_dir(&data_dir)) < 0) {
        log_error_errno(r, "cannot find a data dir (set COARCH_DATA_DIR, XDG_DATA_HOME or "
                           "HOME, or pass --data-dir)");
        return EXIT_USAGE;
    }
    if (!data_dir)
        return log_error("out of memory"), EXIT_FAIL;

    /* Until the configuration names a level, the command line's (or the default) applies. */
    if (args.overrides.has_log_level)
        log_set_level(args.overrides.log_level);
    r = daemon_config_load(data_dir, &args.overrides, &o.config, &config_path);
    if (r < 0)
        return r == -EINVAL ? EXIT_USAGE : EXIT_FAIL;
    log_set_level(o.config.log_level);

    r = sdnotify_listen_fd(&o.listen_fd);
    if (r < 0) {
        log_error_errno(r, "socket activation: expected one listening Unix stream socket: %m");
        return EXIT_FAIL;
    }
    if (r == 0) {
        if (args.socket_path)
            socket_path = absolute_path(args.socket_path);
        else if ((r = coarch_socket_path(&socket_path)) < 0) {
            log_error_errno(r, "cannot derive the socket path: %m");
            return EXIT_USAGE;
        }
        if (!socket_path)
            return log_error("out of memory"), EXIT_FAIL;
    }
    o.socket_path = socket_path;
    o.data_dir = data_dir;
    o.overrides = args.overrides;

    log_info("coarchd %s starting: pid %d, socket %s, data dir %s, config %s", COARCH_VERSION,
             (int)getpid(), socket_path ? socket_path : "(socket-activated)", data_dir,
             config_path ? config_path : "(none)");

    r = daemon_new(&o, &d); /* takes the socket-activated fd, whatever happens */
    if (r < 0)
        return r == -EBUSY ? EXIT_RUNNING : EXIT_FAIL;
    r = engine_new(d, data_dir, &engine);
    if (r < 0) {
        daemon_free(d);
        return r == -EINVAL ? EXIT_USAGE : EXIT_FAIL;
    }
    r = daemon_start(d);
    if (r < 0) {
        /* Wind down through the normal stop sequence: modules may have threads running. */
        daemon_stop(d, "start-up failed");
        (void)daemon_run(d);
        engine_free(engine);
        daemon_free(d);
        return r == -EADDRINUSE ? EXIT_RUNNING : EXIT_FAIL;
    }
    r = daemon_run(d);
    engine_free(engine);
    daemon_free(d);
    if (r < 0)
        return EXIT_FAIL;
    log_info("stopped");
    return EXIT_OK;
}
