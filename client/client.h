/*
 * client.h - what every coarchctl subcommand sees: the parsed global options, the connection
 * to coarchd, the subcommand table entry, and helpers that turn failures into a message on
 * stderr plus an exit code.
 *
 * Adding a subcommand (say `index`):
 *   1. client/cmd-index.c defines `const struct client_command client_cmd_index = {...}` whose
 *      run() parses its options with client_getopt(), connects with client_connect(), talks
 *      with client_request_begin()/client_request_end() (or client_call()) and prints with
 *      client_print_result();
 *   2. declare it below and add it to the table in commands.c (the order there is the order
 *      of `coarchctl --help`);
 *   3. add the file to client/meson.build.
 * Progress: after client_connect(), conn_set_notify(cl->conn, fn, data) receives every
 * notification that arrives while a request is outstanding; after the response, conn_next()
 * returns the following messages one by one (e.g. until a job's "done" event).
 *
 * Convention: unlike the library modules (negative errno), functions here return an exit code
 * (enum client_exit) because their caller's only remaining decision is what to exit with; a
 * non-zero code means the reason has already been printed.  run() returns one as well.
 *
 * Single-threaded, like the whole client.
 */
#ifndef COARCH_CLIENT_CLIENT_H
#define COARCH_CLIENT_CLIENT_H

#include <getopt.h>
#include <msgpack.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "conn.h"
#include "proto.h"

#define CLIENT_DEFAULT_TIMEOUT_MS 30000

/* coarchctl's exit status; documented in `coarchctl --help` and the README. */
enum client_exit {
    CLIENT_EXIT_OK = 0,
    CLIENT_EXIT_FAILED = 1,      /* the daemon reported an error, or a local failure */
    CLIENT_EXIT_USAGE = 2,       /* bad command line */
    CLIENT_EXIT_UNREACHABLE = 3, /* no daemon answers at the socket and none could be started */
    CLIENT_EXIT_CONNECTION = 4,  /* the daemon hung up or sent something malformed */
    CLIENT_EXIT_TIMEOUT = 5,     /* the daemon stayed silent for --timeout seconds */
    CLIENT_EXIT_PROTOCOL = 6,    /* the daemon speaks another protocol version */
};

/* Returned by option parsing helpers when the command should go on. */
#define CLIENT_CONTINUE (-1)

struct client {
    char *socket_path;   /* absolute; owned */
    bool socket_given;   /* --socket was given: autostart passes it on to coarchd */
    bool json;           /* --json */
    bool autostart;      /* false with --no-autostart */
    int timeout_ms;      /* --timeout; < 0 = wait forever */
    struct conn *conn;   /* set by client_connect(); freed by main */
    const char *method;  /* method of the request in flight; borrowed */
    const char *command; /* the subcommand running ("cancel"), for messages; borrowed */
};

struct client_command {
    const char *name;
    const char *summary; /* one line for `coarchctl --help` */
    const char *usage;   /* synopsis after "coarchctl ", e.g. "status [--json]" */
    const char *help;    /* description and the command's own options; may be NULL */
    /* argv[0] is the command name; returns an exit code. */
    int (*run)(struct client *cl, int argc, char **argv);
};

/* The table (commands.c). */
extern const struct client_command client_cmd_ping, client_cmd_status, client_cmd_shutdown,
    client_cmd_version, client_cmd_help;
extern const struct client_command client_cmd_index, client_cmd_search, client_cmd_jobs,
    client_cmd_cancel, client_cmd_repos, client_cmd_remove, client_cmd_embed, client_cmd_mcp,
    client_cmd_watch;
const struct client_command *client_command_find(const char *name);
/* Prints "'x' is not a coarchctl command" with the closest names; returns CLIENT_EXIT_USAGE. */
int client_command_unknown(const char *name);
void client_print_main_help(FILE *f);
void client_print_command_help(const struct client_command *cmd, FILE *f);

/* Options.  Global options (--socket, --timeout, --no-autostart, --json) are accepted after
 * the command name too; client_global_option() applies one (CLIENT_CONTINUE or an exit code). */
enum {
    CLIENT_OPT_JSON = 0x1000,
    CLIENT_OPT_SOCKET,
    CLIENT_OPT_TIMEOUT,
    CLIENT_OPT_NO_AUTOSTART,
};
int client_global_option(struct client *cl, int opt, const char *arg);

/*
 * getopt_long() over a subcommand's argv with the global options and -h/--help added to the
 * command's own `shortopts`/`longopts` (longopts NULL-terminated, or NULL).  Returns the next
 * own option (optarg set), CLIENT_CONTINUE when options are done (optind indexes the first
 * operand), or >= 0 exit code in *ret_exit and the value -2 (help printed or bad option).
 */
#define CLIENT_GETOPT_EXIT (-2)
int client_getopt(struct client *cl, const struct client_command *cmd, int argc, char **argv,
                  const char *shortopts, const struct option *longopts, int *ret_exit);
/* For commands with no options or operands of their own: CLIENT_CONTINUE or an exit code. */
int client_parse_no_args(struct client *cl, const struct client_command *cmd, int argc,
                         char **argv);
/* Prints "coarchctl CMD: <message>" and the usage line; returns CLIENT_EXIT_USAGE. */
int client_usage_error(const struct client_command *cmd, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Connecting. */
enum client_connect_flags {
    CLIENT_CONNECT_NO_AUTOSTART = 1 << 0, /* this command never starts a daemon */
    CLIENT_CONNECT_QUIET = 1 << 1,        /* no message when unreachable: the caller has one */
    CLIENT_CONNECT_ANY_PROTOCOL = 1 << 2, /* skip the protocol check (`version` reports it) */
};
/* Connects cl->conn (autostarting coarchd when allowed) and, as PROTOCOL.md section 9 asks,
 * checks with a `version` request that the daemon speaks PROTO_VERSION; returns an exit
 * code. */
int client_connect(struct client *cl, unsigned flags);

/* Requests.  A response carrying an error is printed (stderr; with --json also as
 * {"error": {code, name, message}} on stdout) and yields CLIENT_EXIT_FAILED; on
 * CLIENT_EXIT_OK *ret_response holds a successful response (caller frees, proto_msg_free()). */
int client_request_begin(struct client *cl, const char *method, uint32_t n_params,
                         msgpack_packer **ret_pk);
int client_request_end(struct client *cl, struct proto_msg **ret_response);
int client_call(struct client *cl, const char *method, struct proto_msg **ret_response);
/* Explains a negative errno from conn_*() on stderr; returns the matching exit code. */
int client_conn_error(struct client *cl, int r);

/* Output: JSON (--json; indented on a terminal, one line otherwise) or people's form. */
void client_print_json(struct client *cl, const msgpack_object *o);
/* --json: prints the msgpack value in `data`; returns an exit code. */
int client_print_json_packed(struct client *cl, const char *data, size_t len);
void client_print_result(struct client *cl, const msgpack_object *o);

/*
 * The indexed repository the working directory is in (the deepest, when they nest), as a
 * malloc'd path in *ret (NULL: none), and how many repositories are indexed; asks the daemon
 * (`repos`) over cl->conn.  Returns an exit code.
 */
int client_repo_of_cwd(struct client *cl, char **ret, uint32_t *ret_n);

/* The root of the git work tree around the working directory (the nearest ancestor holding
 * .git), else the working directory; malloc'd, NULL with errno set. */
char *client_repository_root(void);

#endif
