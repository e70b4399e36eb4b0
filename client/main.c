/*
 * main.c - coarchctl: global options, dispatch to a subcommand, exit status.
 *
 * Global options come before the command (and, for convenience, may follow it: each
 * subcommand's parser accepts them too); parsing stops at the first operand, the command name,
 * so a subcommand's own options are never mistaken for global ones.  This is the only file
 * that decides the process's exit status; everything else returns one.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "log.h"
#include "paths.h"

static int parse_global(struct client *cl, int argc, char **argv, bool *ret_version)
{
    static const struct option opts[] = {
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {"json", no_argument, NULL, CLIENT_OPT_JSON},
        {"socket", required_argument, NULL, CLIENT_OPT_SOCKET},
        {"timeout", required_argument, NULL, CLIENT_OPT_TIMEOUT},
        {"no-autostart", no_argument, NULL, CLIENT_OPT_NO_AUTOSTART},
        {0},
    };
    int opt, r;

    opterr = 0;
    /* '+': stop at the command name; ':': report a missing argument as ':'. */
    while ((opt = getopt_long(argc, argv, "+:hV", opts, NULL)) != -1) {
        switch (opt) {
        case 'h':
            client_print_main_help(stdout);
            return CLIENT_EXIT_OK;
        case 'V':
            *ret_version = true;
            break;
        case '?':
            if (optopt && optopt < 0x100)
                fprintf(stderr, "coarchctl: unknown option '-%c'\n", optopt);
            else
                fprintf(stderr, "coarchctl: unknown option '%s'\n", argv[optind - 1]);
            fprintf(stderr, "See 'coarchctl --help'.\n");
            return CLIENT_EXIT_USAGE;
        case ':':
            fprintf(stderr, "coarchctl: option '%s' needs an argument\n", argv[optind - 1]);
            return CLIENT_EXIT_USAGE;
        default:
            r = client_global_option(cl, opt, optarg);
            if (r != CLIENT_CONTINUE)
                return r;
            break;
        }
    }
    return CLIENT_CONTINUE;
}

static void init_logging(void)
{
    const char *lv = getenv("COARCH_LOG_LEVEL");
    enum log_level level = LOG_LEVEL_WARNING;

    log_set_ident("coarchctl");
    if (lv && log_level_from_string(lv, &level) < 0)
        level = LOG_LEVEL_WARNING;
    log_set_level(level);
}

static int run(struct client *cl, int argc, char **argv)
{
    const struct client_command *cmd;
    bool version = false;
    char *path;
    int r;

    r = parse_global(cl, argc, argv, &version);
    if (r != CLIENT_CONTINUE)
        return r;
    if (!cl->socket_path) {
        r = coarch_socket_path(&path);
        if (r < 0) {
            fprintf(stderr, "coarchctl: cannot determine the daemon socket: %s\n", strerror(-r));
            return r == -ENAMETOOLONG ? CLIENT_EXIT_USAGE : CLIENT_EXIT_FAILED;
        }
        /* Through the --socket path so that a relative $COARCH_SOCKET becomes absolute. */
        r = client_global_option(cl, CLIENT_OPT_SOCKET, path);
        free(path);
        if (r != CLIENT_CONTINUE)
            return r;
        cl->socket_given = false; /* the daemon finds the same default by itself */
    }

    if (version) {
        char *vargv[] = {(char *)"version", NULL};
        optind = 0;
        return client_cmd_version.run(cl, 1, vargv);
    }
    if (optind >= argc) {
        fprintf(stderr, "coarchctl: no command given\n\n");
        client_print_main_help(stderr);
        return CLIENT_EXIT_USAGE;
    }
    cmd = client_command_find(argv[optind]);
    if (!cmd)
        return client_command_unknown(argv[optind]);

    argc -= optind;
    argv += optind;
    optind = 0; /* reinitialise getopt for the subcommand's own parse */
    cl->command = cmd->name;
    return cmd->run(cl, argc, argv);
}

int main(int argc, char **argv)
{
    struct client cl = {
        .autostart = true,
        .timeout_ms = CLIENT_DEFAULT_TIMEOUT_MS,
    };
    int r;

    init_logging();
    r = run(&cl, argc, argv);
    conn_free(cl.conn);
    free(cl.socket_path);

    /* Output that never reached its reader (a full disk, a closed pipe) is a failure too. */
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "coarchctl: cannot write output: %s\n", strerror(errno));
        if (r == CLIENT_EXIT_OK)
            r = CLIENT_EXIT_FAILED;
    }
    return r;
}
