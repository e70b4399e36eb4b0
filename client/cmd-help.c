/*
 * cmd-help.c - `coarchctl help [COMMAND]`, the same text as --help at either level.
 */
#include <getopt.h>

#include "client.h"

static int help_run(struct client *cl, int argc, char **argv)
{
    const struct client_command *cmd;
    int r, code = CLIENT_EXIT_USAGE;

    r = client_getopt(cl, &client_cmd_help, argc, argv, NULL, NULL, &code);
    if (r == CLIENT_GETOPT_EXIT)
        return code;
    if (optind >= argc) {
        client_print_main_help(stdout);
        return CLIENT_EXIT_OK;
    }
    if (optind + 1 < argc)
        return client_usage_error(&client_cmd_help, "one command at a time");
    cmd = client_command_find(argv[optind]);
    if (!cmd)
        return client_command_unknown(argv[optind]);
    client_print_command_help(cmd, stdout);
    return CLIENT_EXIT_OK;
}

const struct client_command client_cmd_help = {
    .name = "help",
    .summary = "Show help for coarchctl or for one command",
    .usage = "help [COMMAND]",
    .help = NULL,
    .run = help_run,
};
