/*
 * client.c - see client.h: option helpers, connecting (with autostart), requests and the
 * translation of every failure into one clear line and an exit code.
 */
#include "client.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "autostart.h"
#include "macro.h"
#include "output.h"
#include "paths.h"

#define CLIENT_MAX_LONGOPTS 48

/* strerror() with a lower-case first letter, to sit inside a sentence. */
static const char *errno_text(int r)
{
    static char buf[128];

    snprintf(buf, sizeof(buf), "%s", strerror(abs(r)));
    buf[0] = (char)tolower((unsigned char)buf[0]);
    return buf;
}

static void format_seconds(int ms, char *buf, size_t size)
{
    snprintf(buf, size, "%g s", ms / 1000.0);
}

static int set_socket(struct client *cl, const char *path)
{
    char cwd[PATH_MAX];
    char *p;

    if (!path[0]) {
        fprintf(stderr, "coarchctl: --socket needs a path\n");
        return CLIENT_EXIT_USAGE;
    }
    if (path[0] != '/' && getcwd(cwd, sizeof(cwd)))
        p = path_join(cwd, path);
    else
        p = strdup(path);
    if (!p) {
        fprintf(stderr, "coarchctl: out of memory\n");
        return CLIENT_EXIT_FAILED;
    }
    if (strlen(p) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
        fprintf(stderr, "coarchctl: socket path %s is too long for a Unix socket (max %zu)\n", p,
                sizeof(((struct sockaddr_un *)0)->sun_path) - 1);
        free(p);
        return CLIENT_EXIT_USAGE;
    }
    free(cl->socket_path);
    cl->socket_path = p;
    return CLIENT_CONTINUE;
}

int client_global_option(struct client *cl, int opt, const char *arg)
{
    char *end;
    double s;
    int r;

    switch (opt) {
    case CLIENT_OPT_JSON:
        cl->json = true;
        return CLIENT_CONTINUE;
    case CLIENT_OPT_NO_AUTOSTART:
        cl->autostart = false;
        return CLIENT_CONTINUE;
    case CLIENT_OPT_SOCKET:
        r = set_socket(cl, arg);
        if (r == CLIENT_CONTINUE)
            cl->socket_given = true;
        return r;
    case CLIENT_OPT_TIMEOUT:
        errno = 0;
        s = strtod(arg, &end);
        if (errno || end == arg || *end || !isfinite(s) || s < 0 || s > 1e6) {
            fprintf(stderr,
                    "coarchctl: --timeout '%s': expected seconds between 0 and 1000000 "
                    "(0 = wait forever)\n",
                    arg);
            return CLIENT_EXIT_USAGE;
        }
        /* A tiny positive timeout still waits a millisecond rather than meaning "forever". */
        cl->timeout_ms = s == 0 ? -1 : (int)MAX(1.0, s * 1000);
        return CLIENT_CONTINUE;
    default:
        return CLIENT_EXIT_USAGE;
    }
}

int client_usage_error(const struct client_command *cmd, const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "coarchctl %s: ", cmd->name);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nusage: coarchctl %s\n(see 'coarchctl %s --help')\n", cmd->usage, cmd->name);
    return CLIENT_EXIT_USAGE;
}

int client_getopt(struct client *cl, const struct client_command *cmd, int argc, char **argv,
                  const char *shortopts, const struct option *longopts, int *ret_exit)
{
    static const struct option common[] = {
        {"help", no_argument, NULL, 'h'},
        {"json", no_argument, NULL, CLIENT_OPT_JSON},
        {"socket", required_argument, NULL, CLIENT_OPT_SOCKET},
        {"timeout", required_argument, NULL, CLIENT_OPT_TIMEOUT},
        {"no-autostart", no_argument, NULL, CLIENT_OPT_NO_AUTOSTART},
    };
    struct option all[CLIENT_MAX_LONGOPTS];
    char shorts[64];
    size_t n = 0;
    int opt, r;

    for (size_t i = 0; i < ELEMENTSOF(common); i++)
        all[n++] = common[i];
    for (const struct option *o = longopts; o && o->name; o++) {
        if (n + 1 >= ELEMENTSOF(all))
            break; /* a command with 40+ options needs CLIENT_MAX_LONGOPTS raised */
        all[n++] = *o;
    }
    all[n] = (struct option){0};
    /* Leading ':' so a missing argument reads ':' rather than '?'; 'h' is always ours. */
    snprintf(shorts, sizeof(shorts), ":h%s", shortopts ? shortopts : "");

    opterr = 0;
    for (;;) {
        opt = getopt_long(argc, argv, shorts, all, NULL);
        switch (opt) {
        case -1:
            return CLIENT_CONTINUE;
        case 'h':
            client_print_command_help(cmd, stdout);
            *ret_exit = CLIENT_EXIT_OK;
            return CLIENT_GETOPT_EXIT;
        case '?':
            if (optopt && optopt < 0x100)
                *ret_exit = client_usage_error(cmd, "unknown option '-%c'", optopt);
            else
                *ret_exit = client_usage_error(cmd, "unknown option '%s'", argv[optind - 1]);
            return CLIENT_GETOPT_EXIT;
        case ':':
            *ret_exit = client_usage_error(cmd, "option '%s' needs an argument", argv[optind - 1]);
            return CLIENT_GETOPT_EXIT;
        case CLIENT_OPT_JSON:
        case CLIENT_OPT_SOCKET:
        case CLIENT_OPT_TIMEOUT:
        case CLIENT_OPT_NO_AUTOSTART:
            r = client_global_option(cl, opt, optarg);
            if (r != CLIENT_CONTINUE) {
                *ret_exit = r;
                return CLIENT_GETOPT_EXIT;
            }
            continue;
        default:
            return opt;
        }
    }
}

int client_parse_no_args(struct client *cl, const struct client_command *cmd, int argc, char **argv)
{
    int r, code = CLIENT_EXIT_USAGE;

    r = client_getopt(cl, cmd, argc, argv, NULL, NULL, &code);
    if (r == CLIENT_GETOPT_EXIT)
        return code;
    if (r != CLIENT_CONTINUE) /* cannot happen: no own options were given */
        return client_usage_error(cmd, "unexpected option");
    if (optind < argc)
        return client_usage_error(cmd, "unexpected argument '%s'", argv[optind]);
    return CLIENT_CONTINUE;
}

/* Stops early, with a clear message, rather than guess at a daemon of another protocol. */
static int check_protocol(struct client *cl)
{
    struct proto_msg *resp;
    int64_t protocol;
    int r;

    r = client_call(cl, "version", &resp);
    if (r != CLIENT_EXIT_OK)
        return r;
    r = proto_get_int(&resp->result, "protocol", &protocol);
    proto_msg_free(resp);
    if (r < 0) {
        fprintf(stderr, "coarchctl: coarchd at %s sent a version reply without a protocol\n",
                cl->socket_path);
        return CLIENT_EXIT_CONNECTION;
    }
    if (protocol != PROTO_VERSION) {
        fprintf(stderr,
                "coarchctl: coarchd at %s speaks protocol %lld, this coarchctl speaks %d;"
                " install matching versions ('coarchctl version' shows both)\n",
                cl->socket_path, (long long)protocol, PROTO_VERSION);
        return CLIENT_EXIT_PROTOCOL;
    }
    return CLIENT_EXIT_OK;
}

static int connect_socket(struct client *cl, unsigned flags)
{
    bool may_autostart = cl->autostart && !(flags & CLIENT_CONNECT_NO_AUTOSTART);
    int r;

    r = conn_connect(cl->socket_path, cl->timeout_ms, &cl->conn);
    if (r >= 0)
        return CLIENT_EXIT_OK;

    if ((r == -ENOENT || r == -ECONNREFUSED) && may_autostart) {
        struct autostart_options o = {
            .socket_path = cl->socket_path,
            .pass_socket = cl->socket_given,
            .wait_ms = AUTOSTART_WAIT_MS,
            .timeout_ms = cl->timeout_ms,
        };
        r = autostart_daemon(&o, &cl->conn);
        return r >= 0 ? CLIENT_EXIT_OK : CLIENT_EXIT_UNREACHABLE;
    }
    if (flags & CLIENT_CONNECT_QUIET)
        return CLIENT_EXIT_UNREACHABLE;

    if (r == -ENOENT || r == -ECONNREFUSED) {
        fprintf(stderr, "coarchctl: no daemon at %s (%s); start one with `coarchd`%s\n",
                cl->socket_path, r == -ENOENT ? "no such socket" : "connection refused",
                cl->autostart ? "" : " or drop --no-autostart");
    } else if (r == -ETIMEDOUT) {
        char t[32];
        format_seconds(cl->timeout_ms, t, sizeof(t));
        fprintf(stderr, "coarchctl: coarchd at %s accepted no connection within %s\n",
                cl->socket_path, t);
    } else if (r == -EPERM) {
        fprintf(stderr,
                "coarchctl: refusing %s: the process listening there runs as another user, "
                "not a coarchd of yours (someone may have created that socket's directory "
                "first); set COARCH_SOCKET or --socket to a path of your own, e.g. under "
                "$XDG_RUNTIME_DIR\n",
                cl->socket_path);
    } else {
        fprintf(stderr, "coarchctl: cannot connect to %s: %s\n", cl->socket_path, errno_text(r));
        if (r == -EACCES)
            fprintf(stderr, "hint: the socket belongs to another user; set COARCH_SOCKET or "
                            "--socket to your own\n");
    }
    return CLIENT_EXIT_UNREACHABLE;
}

int client_connect(struct client *cl, unsigned flags)
{
    int r;

    if (cl->conn)
        return CLIENT_EXIT_OK;
    r = connect_socket(cl, flags);
    if (r != CLIENT_EXIT_OK || (flags & CLIENT_CONNECT_ANY_PROTOCOL))
        return r;
    return check_protocol(cl);
}

int client_conn_error(struct client *cl, int r)
{
    const char *m = cl->method ? cl->method : "?";
    char t[32];

    switch (r) {
    case -ETIMEDOUT:
        format_seconds(cl->timeout_ms, t, sizeof(t));
        fprintf(stderr,
                "coarchctl: coarchd at %s sent nothing for %s while we waited for `%s` "
                "(see --timeout)\n",
                cl->socket_path, t, m);
        return CLIENT_EXIT_TIMEOUT;
    case -ECONNRESET:
        fprintf(stderr, "coarchctl: coarchd at %s closed the connection before answering `%s`\n",
                cl->socket_path, m);
        return CLIENT_EXIT_CONNECTION;
    case -EBADMSG:
    case -EMSGSIZE:
    case -EPROTO:
        fprintf(stderr, "coarchctl: malformed reply from coarchd at %s to `%s`: %s\n",
                cl->socket_path, m, errno_text(r));
        return CLIENT_EXIT_CONNECTION;
    case -ENOMEM:
        fprintf(stderr, "coarchctl: out of memory\n");
        return CLIENT_EXIT_FAILED;
    default:
        fprintf(stderr, "coarchctl: talking to coarchd at %s (`%s`): %s\n", cl->socket_path, m,
                errno_text(r));
        return CLIENT_EXIT_CONNECTION;
    }
}

int client_request_begin(struct client *cl, const char *method, uint32_t n_params,
                         msgpack_packer **ret_pk)
{
    int r;

    cl->method = method;
    r = conn_request_begin(cl->conn, method, n_params, ret_pk);
    if (r < 0)
        return client_conn_error(cl, r);
    return CLIENT_EXIT_OK;
}

/* Prints an error the daemon answered with; with --json also as JSON on stdout. */
static void print_daemon_error(struct client *cl, int64_t code, const char *msg, size_t len)
{
    const char *name = proto_error_code_name((int)CLAMP(code, INT32_MIN, INT32_MAX));

    /* Named by the command the user typed, not the protocol's method ("cancel", not
     * "job.cancel"): one prefix for every message of a command. */
    fprintf(stderr, "coarchctl %s: %.*s (%s, code %lld)\n",
            cl->command  ? cl->command
            : cl->method ? cl->method
                         : "?",
            (int)MIN(len, (size_t)INT32_MAX), msg, name, (long long)code);
    if (cl->json) {
        msgpack_sbuffer sb;
        msgpack_packer pk;

        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        msgpack_pack_map(&pk, 1);
        proto_pack_str(&pk, "error");
        msgpack_pack_map(&pk, 3);
        proto_pack_kv_int(&pk, "code", code);
        proto_pack_kv_str(&pk, "name", name);
        proto_pack_str(&pk, "message");
        proto_pack_strn(&pk, msg, len);
        (void)client_print_json_packed(cl, sb.data, sb.size);
        msgpack_sbuffer_destroy(&sb);
    }
}

int client_request_end(struct client *cl, struct proto_msg **ret_response)
{
    struct proto_msg *resp;
    const char *msg;
    int64_t code;
    size_t len;
    int r;

    r = conn_request_end(cl->conn, &resp);
    if (r < 0)
        return client_conn_error(cl, r);
    r = proto_msg_get_error(resp, &code, &msg, &len);
    if (r == 0) {
        *ret_response = resp;
        return CLIENT_EXIT_OK;
    }
    if (r > 0)
        print_daemon_error(cl, code, msg, len);
    else
        fprintf(stderr, "coarchctl: malformed error reply from coarchd at %s to `%s`\n",
                cl->socket_path, cl->method);
    proto_msg_free(resp);
    return r > 0 ? CLIENT_EXIT_FAILED : CLIENT_EXIT_CONNECTION;
}

int client_call(struct client *cl, const char *method, struct proto_msg **ret_response)
{
    msgpack_packer *pk;
    int r;

    r = client_request_begin(cl, method, 0, &pk);
    if (r != CLIENT_EXIT_OK)
        return r;
    return client_request_end(cl, ret_response);
}

void client_print_json(struct client *cl, const msgpack_object *o)
{
    output_json(stdout, o, isatty(STDOUT_FILENO));
}

int client_print_json_packed(struct client *cl, const char *data, size_t len)
{
    int r = output_json_packed(stdout, data, len, isatty(STDOUT_FILENO));

    if (r < 0) {
        fprintf(stderr, "coarchctl: cannot format output: %s\n", errno_text(r));
        return CLIENT_EXIT_FAILED;
    }
    return CLIENT_EXIT_OK;
}

void client_print_result(struct client *cl, const msgpack_object *o)
{
    if (cl->json)
        client_print_json(cl, o);
    else
        output_human(stdout, o, 0);
}

/*
 * The indexed repository the working directory is in (the deepest, when they nest), as a
 * malloc'd path in *ret (NULL: none, or the daemon cannot say); and how many are indexed.
 */
int client_repo_of_cwd(struct client *cl, char **ret, uint32_t *ret_n)
{
    const msgpack_object *repos;
    struct proto_msg *resp;
    char *cwd = realpath(".", NULL);
    size_t best = 0;
    int r;

    *ret = NULL;
    *ret_n = 0;
    r = client_call(cl, "repos", &resp);
    if (r != CLIENT_EXIT_OK) {
        free(cwd);
        return r;
    }
    repos = proto_map_get(&resp->result, "repos");
    if (repos && repos->type == MSGPACK_OBJECT_ARRAY) {
        *ret_n = repos->via.array.size;
        for (uint32_t i = 0; cwd && i < repos->via.array.size; i++) {
            const char *p;
            size_t len;
            if (proto_get_str(&repos->via.array.ptr[i], "path", &p, &len) < 0 || len <= best)
                continue;
            if (strncmp(cwd, p, len) == 0 && (cwd[len] == '\0' || cwd[len] == '/' || len == 1)) {
                free(*ret);
                *ret = strndup(p, len);
                best = len;
            }
        }
    }
    proto_msg_free(resp);
    free(cwd);
    return CLIENT_EXIT_OK;
}

/* Without a PATH: the root of the git work tree around the working directory (the nearest
 * ancestor holding .git), as `git` itself finds it; outside one, the working directory.
 * malloc'd; NULL with errno set. */
char *client_repository_root(void)
{
    char *dir = realpath(".", NULL), probe[PATH_MAX + 8];
    size_t len;

    if (!dir)
        return NULL;
    for (len = strlen(dir);;) {
        struct stat st;
        snprintf(probe, sizeof(probe), "%.*s/.git", (int)len, dir);
        if (lstat(probe, &st) == 0) {
            dir[len ? len : 1] = '\0';
            return dir;
        }
        while (len > 0 && dir[len - 1] != '/')
            len--;
        if (len <= 1)
            break;
        len--; /* drop the '/' too */
    }
    return dir; /* no work tree: the working directory itself (dir is intact past len) */
}
