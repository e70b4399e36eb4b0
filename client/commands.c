/*
 * commands.c - the subcommand table, help texts and git-style "did you mean" suggestions.
 */
#include <stdio.h>
#include <string.h>

#include "client.h"
#include "macro.h"

/* The order here is the order of `coarchctl --help`. */
static const struct client_command *const commands[] = {
    &client_cmd_index,   &client_cmd_watch, &client_cmd_search, &client_cmd_jobs,
    &client_cmd_cancel,  &client_cmd_repos, &client_cmd_remove, &client_cmd_embed,
    &client_cmd_mcp,     &client_cmd_ping,  &client_cmd_status, &client_cmd_shutdown,
    &client_cmd_version, &client_cmd_help,
};

const struct client_command *client_command_find(const char *name)
{
    for (size_t i = 0; i < ELEMENTSOF(commands); i++)
        if (strcmp(commands[i]->name, name) == 0)
            return commands[i];
    return NULL;
}

/*
 * Optimal string alignment distance (Levenshtein plus adjacent transpositions, each cost 1),
 * so "stauts" is 1 away from "status".  Names are short; two rows of 64 suffice and longer
 * input is simply "far".
 */
static size_t edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b), d[3][65];

    if (la > 64 || lb > 64)
        return SIZE_MAX;
    for (size_t j = 0; j <= lb; j++)
        d[0][j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t *cur = d[i % 3], *prev = d[(i - 1) % 3], *prev2 = d[(i + 1) % 3];
        cur[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t cost = a[i - 1] != b[j - 1];
            size_t v = MIN(MIN(prev[j] + 1, cur[j - 1] + 1), prev[j - 1] + cost);
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1])
                v = MIN(v, prev2[j - 2] + 1);
            cur[j] = v;
        }
    }
    return d[la % 3][lb];
}

/* How close `typed` is to `name`: 0 for a prefix of it (e.g. "stat"), else the edit distance;
 * SIZE_MAX when too far to be worth suggesting. */
static size_t similarity(const char *typed, const char *name)
{
    size_t lt = strlen(typed), d;

    if (lt >= 2 && strncmp(typed, name, lt) == 0)
        return 0;
    d = edit_distance(typed, name);
    return d <= (lt < 5 ? 1u : 2u) ? d : SIZE_MAX;
}

int client_command_unknown(const char *name)
{
    size_t best = SIZE_MAX, n = 0;

    fprintf(stderr, "coarchctl: '%s' is not a coarchctl command. See 'coarchctl --help'.\n", name);
    for (size_t i = 0; i < ELEMENTSOF(commands); i++)
        best = MIN(best, similarity(name, commands[i]->name));
    if (best == SIZE_MAX)
        return CLIENT_EXIT_USAGE;
    for (size_t i = 0; i < ELEMENTSOF(commands); i++)
        n += similarity(name, commands[i]->name) == best;
    fprintf(stderr, "\nThe most similar command%s\n", n > 1 ? "s are" : " is");
    for (size_t i = 0; i < ELEMENTSOF(commands); i++)
        if (similarity(name, commands[i]->name) == best)
            fprintf(stderr, "\t%s\n", commands[i]->name);
    return CLIENT_EXIT_USAGE;
}

void client_print_main_help(FILE *f)
{
    fputs("usage: coarchctl [--socket PATH] [--json] [--no-autostart] [--timeout SECONDS]\n"
          "                 COMMAND [ARGS]\n"
          "       coarchctl --version | --help | help COMMAND\n"
          "\n"
          "Talk to coarchd, the local code-search daemon.  When no daemon answers, one is\n"
          "started in the background (its output goes to <data dir>/coarchd.log).\n"
          "\n"
          "Commands:\n",
          f);
    for (size_t i = 0; i < ELEMENTSOF(commands); i++)
        fprintf(f, "  %-10s %s\n", commands[i]->name, commands[i]->summary);
    fputs("\n"
          "Global options (also accepted after COMMAND):\n"
          "      --socket PATH      the daemon's socket (default: $COARCH_SOCKET, else\n"
          "                         $XDG_RUNTIME_DIR/coarch/coarchd.sock)\n"
          "      --json             print results as JSON on stdout (errors too)\n"
          "      --no-autostart     fail instead of starting coarchd when none answers\n"
          "      --timeout SECONDS  give up when the daemon stays silent this long\n"
          "                         (default 30; 0 waits forever)\n"
          "  -h, --help             show this help ('coarchctl help COMMAND' for one command)\n"
          "  -V, --version          show the client's and the daemon's versions\n"
          "\n"
          "Exit status:\n"
          "  0  success\n"
          "  1  the daemon reported an error (or a local failure such as out of memory)\n"
          "  2  usage error: unknown command or option, bad argument\n"
          "  3  no daemon answers at the socket and none could be started\n"
          "  4  the daemon closed the connection or sent a malformed reply\n"
          "  5  the daemon sent nothing for --timeout seconds\n"
          "  6  the daemon speaks another protocol version\n"
          "\n"
          "Environment: COARCH_SOCKET, COARCH_DATA_DIR, COARCHD (daemon binary to autostart),\n"
          "XDG_RUNTIME_DIR, XDG_DATA_HOME, COARCH_LOG_LEVEL (debug shows protocol details).\n",
          f);
}

void client_print_command_help(const struct client_command *cmd, FILE *f)
{
    fprintf(f, "usage: coarchctl %s\n\n%s.\n", cmd->usage, cmd->summary);
    if (cmd->help)
        fprintf(f, "\n%s", cmd->help);
    fputs("\nGlobal options (--socket, --json, --timeout, --no-autostart) may follow the command;"
          "\nsee 'coarchctl --help'.\n",
          f);
}
