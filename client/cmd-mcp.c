/*
 * cmd-mcp.c - `coarchctl mcp`: a Model Context Protocol server on stdin and stdout, so that an
 * AI agent (Claude Code, Cursor, Continue, any MCP client) searches and indexes through the
 * one coarchd of its user.
 *
 * Transport: MCP's stdio transport, JSON-RPC 2.0 messages one per line (UTF-8, no embedded
 * newline) in both directions; stdout carries nothing else, diagnostics go to stderr.  The
 * server answers initialize (protocol versions 2025-06-18, 2025-03-26 and 2024-11-05: the
 * client's when it is one of them, else the newest), ping, tools/list and tools/call, ignores
 * notifications, and answers anything else with JSON-RPC's method-not-found.  A line that is
 * not JSON is a parse error (-32700), a message that is not a request an invalid request
 * (-32600); batches (JSON arrays) are refused as the 2025-06-18 revision dropped them.
 *
 * Tools: search_code, index_repository, job_status, list_repositories (tool_table below).  A
 * tool's failure (a bad argument, a repository that is not indexed, coarchd unreachable) is a
 * result with isError set and a sentence saying what to do, as MCP asks, never a crash: the
 * agent reads it and can correct itself.  Results carry both a text rendering and
 * structuredContent (the daemon's fields as JSON).
 *
 * coarchd is reached like every coarchctl command (--socket, autostart) on the first tool
 * call; a connection lost on the way (the daemon restarted) is reopened by the next call.
 */
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "client.h"
#include "macro.h"
#include "paths.h"

#define MCP_MAX_K 100
#define MCP_ERR_PARSE (-32700)
#define MCP_ERR_INVALID_REQUEST (-32600)
#define MCP_ERR_METHOD (-32601)
#define MCP_ERR_PARAMS (-32602)

static const char *const protocol_versions[] = {"2025-06-18", "2025-03-26", "2024-11-05"};

struct mcp {
    struct client *cl;
    char err[1024]; /* the failing tool's message */
};

/* ---- JSON <-> msgpack -------------------------------------------------------------------- */

static json_t *from_msgpack(const msgpack_object *o)
{
    json_t *j;

    switch (o->type) {
    case MSGPACK_OBJECT_NIL:
        return json_null();
    case MSGPACK_OBJECT_BOOLEAN:
        return json_boolean(o->via.boolean);
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        return json_integer(o->via.u64 > (uint64_t)INT64_MAX ? INT64_MAX : (json_int_t)o->via.u64);
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        return json_integer(o->via.i64);
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        return json_real(o->via.f64);
    case MSGPACK_OBJECT_STR:
        return json_stringn_nocheck(o->via.str.ptr, o->via.str.size);
    case MSGPACK_OBJECT_BIN:
        return json_stringn_nocheck(o->via.bin.ptr, o->via.bin.size);
    case MSGPACK_OBJECT_ARRAY:
        j = json_array();
        for (uint32_t i = 0; j && i < o->via.array.size; i++)
            json_array_append_new(j, from_msgpack(&o->via.array.ptr[i]));
        return j;
    case MSGPACK_OBJECT_MAP:
        j = json_object();
        for (uint32_t i = 0; j && i < o->via.map.size; i++) {
            const msgpack_object_kv *kv = &o->via.map.ptr[i];
            if (kv->key.type != MSGPACK_OBJECT_STR)
                continue;
            json_object_setn_new_nocheck(j, kv->key.via.str.ptr, kv->key.via.str.size,
                                         from_msgpack(&kv->val));
        }
        return j;
    default:
        return json_null();
    }
}

/* ---- talking to coarchd ------------------------------------------------------------------ */

static int failf(struct mcp *m, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int failf(struct mcp *m, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(m->err, sizeof(m->err), fmt, ap);
    va_end(ap);
    return -1;
}

/* Connects (autostarting coarchd) unless connected: 0, or -1 with m->err set. */
static int ensure_connected(struct mcp *m)
{
    if (!m->cl->conn && client_connect(m->cl, 0) != CLIENT_EXIT_OK)
        return failf(m,
                     "coarchd is not reachable at %s and could not be started (its reason is on "
                     "the MCP server's stderr)",
                     m->cl->socket_path);
    return 0;
}

static int call_begin(struct mcp *m, const char *method, uint32_t n_params, msgpack_packer **pk)
{
    int r;

    if (ensure_connected(m) < 0)
        return -1;
    m->cl->method = method;
    r = conn_request_begin(m->cl->conn, method, n_params, pk);
    if (r < 0)
        return failf(m, "could not send to coarchd: %s", strerror(-r));
    return 0;
}

/* Sends the request; 0 with the successful response, or -1 with m->err set. */
static int call_end(struct mcp *m, struct proto_msg **ret)
{
    const char *msg;
    int64_t code;
    size_t len;
    int r = conn_request_end(m->cl->conn, ret);

    if (r < 0) {
        /* Reopened by the next call: the daemon may have restarted. */
        m->cl->conn = conn_free(m->cl->conn);
        return failf(m, "lost the connection to coarchd at %s (%s); try again", m->cl->socket_path,
                     strerror(-r));
    }
    r = proto_msg_get_error(*ret, &code, &msg, &len);
    if (r == 0)
        return 0;
    if (r > 0)
        failf(m, "%.*s", (int)MIN(len, (size_t)900), msg);
    else
        failf(m, "coarchd sent a malformed error reply");
    *ret = proto_msg_free(*ret);
    return -1;
}

static int call(struct mcp *m, const char *method, struct proto_msg **ret)
{
    msgpack_packer *pk;

    if (call_begin(m, method, 0, &pk) < 0)
        return -1;
    return call_end(m, ret);
}

/* ---- arguments --------------------------------------------------------------------------- */

/* A string argument: 1 and *ret when present, 0 when absent, -1 (m->err) when not a string
 * or empty. */
static int arg_str(struct mcp *m, json_t *args, const char *key, const char **ret)
{
    json_t *v = json_object_get(args, key);

    if (!v || json_is_null(v))
        return 0;
    if (!json_is_string(v) || json_string_length(v) == 0)
        return failf(m, "\"%s\" must be a non-empty string", key);
    *ret = json_string_value(v);
    return 1;
}

static int arg_int(struct mcp *m, json_t *args, const char *key, json_int_t lo, json_int_t hi,
                   json_int_t *ret)
{
    json_t *v = json_object_get(args, key);

    if (!v || json_is_null(v))
        return 0;
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
        return failf(m, "\"%s\" must be an integer from %lld to %lld", key, (long long)lo,
                     (long long)hi);
    *ret = json_integer_value(v);
    return 1;
}

/* A directory argument as an absolute path, resolved against the server's working
 * directory (the agent's project, usually); malloc'd. */
static int arg_dir(struct mcp *m, json_t *args, const char *key, char **ret)
{
    const char *p = NULL;
    int r = arg_str(m, args, key, &p);

    if (r <= 0)
        return r;
    *ret = realpath(p, NULL);
    if (!*ret)
        return failf(m, "\"%s\": %s: %s", key, p, strerror(errno));
    return 1;
}

/* Refuses argument names the tool does not know (a typo would otherwise be ignored). */
static int args_known(struct mcp *m, json_t *args, const char *const *known)
{
    const char *key;
    json_t *v;

    json_object_foreach(args, key, v)
    {
        bool ok = false;
        for (size_t i = 0; known[i] && !ok; i++)
            ok = strcmp(known[i], key) == 0;
        if (!ok)
            return failf(m, "unknown argument \"%s\"", key);
    }
    return 0;
}

/* ---- tools ------------------------------------------------------------------------------- */

/* A tool fills *text (malloc'd or NULL) and *structured (or NULL), or returns -1 (m->err). */
typedef int (*tool_fn)(struct mcp *m, json_t *args, char **text, json_t **structured);

static char *text_join(char *text, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static char *text_join(char *text, const char *fmt, ...)
{
    size_t have = text ? strlen(text) : 0;
    va_list ap;
    char *more = NULL, *out;
    int n;

    va_start(ap, fmt);
    n = vasprintf(&more, fmt, ap);
    va_end(ap);
    if (n < 0)
        return text;
    out = realloc(text, have + (size_t)n + 1);
    if (!out) {
        free(more);
        return text;
    }
    memcpy(out + have, more, (size_t)n + 1);
    free(more);
    return out;
}

static const char *jstr(json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : "";
}

static json_int_t jint(json_t *o, const char *key)
{
    return json_integer_value(json_object_get(o, key));
}

static int tool_search(struct mcp *m, json_t *args, char **text, json_t **structured)
{
    static const char *const known[] = {"query", "k",        "mode", "repository",
                                        "path",  "language", NULL};
    const char *query = NULL, *mode = NULL, *glob = NULL, *lang = NULL;
    _cleanup_free_ char *repo = NULL;
    json_int_t k = 10;
    struct proto_msg *resp;
    msgpack_packer *pk;
    json_t *res, *results, *hit;
    uint32_t n_params = 2, n_repos = 0;
    size_t i;

    if (args_known(m, args, known) < 0 || arg_str(m, args, "query", &query) < 0 ||
        arg_int(m, args, "k", 1, MCP_MAX_K, &k) < 0 || arg_str(m, args, "mode", &mode) < 0 ||
        arg_dir(m, args, "repository", &repo) < 0 || arg_str(m, args, "path", &glob) < 0 ||
        arg_str(m, args, "language", &lang) < 0)
        return -1;
    if (!query)
        return failf(m, "\"query\" is required: what the code does, in words or identifiers");
    if (mode && strcmp(mode, "hybrid") != 0 && strcmp(mode, "semantic") != 0 &&
        strcmp(mode, "lexical") != 0)
        return failf(m, "\"mode\" must be hybrid, semantic or lexical");
    /* As the shell does: the indexed repository around the working directory, else all. */
    if (!repo) {
        if (ensure_connected(m) < 0)
            return -1;
        if (client_repo_of_cwd(m->cl, &repo, &n_repos) != CLIENT_EXIT_OK)
            return failf(m, "could not list the indexed repositories (see stderr)");
        if (n_repos == 0)
            return failf(m, "nothing is indexed yet: call index_repository with the project's "
                            "directory first");
    }
    n_params += !!repo + !!mode + !!glob + !!lang;
    if (call_begin(m, "search", n_params, &pk) < 0)
        return -1;
    proto_pack_kv_str(pk, "query", query);
    proto_pack_kv_uint(pk, "k", (uint64_t)k);
    if (repo)
        proto_pack_kv_str(pk, "repo", repo);
    if (mode)
        proto_pack_kv_str(pk, "mode", mode);
    if (glob)
        proto_pack_kv_str(pk, "path", glob);
    if (lang)
        proto_pack_kv_str(pk, "lang", lang);
    if (call_end(m, &resp) < 0)
        return -1;
    res = from_msgpack(&resp->result);
    proto_msg_free(resp);
    results = json_object_get(res, "results");
    if (!json_is_array(results) || json_array_size(results) == 0) {
        *text = text_join(NULL, "no results for \"%.200s\"%s%s", query, repo ? " in " : "",
                          repo ? repo : "");
    } else {
        size_t n = json_array_size(results);
        *text = text_join(NULL, "%zu result%s for \"%.200s\"%s%s, best first:\n", n,
                          n == 1 ? "" : "s", query, repo ? " in " : "", repo ? repo : "");
        json_array_foreach(results, i, hit)
        {
            const char *sym = jstr(hit, "symbol"), *snip = jstr(hit, "snippet");
            size_t sn = strlen(snip);
            /* Absolute, so the agent can open it whatever its working directory. */
            _cleanup_free_ char *file = path_join(jstr(hit, "repo"), jstr(hit, "path"));
            json_object_set_new(hit, "file", json_string(file ? file : jstr(hit, "path")));
            while (sn > 0 && snip[sn - 1] == '\n')
                sn--;
            *text =
                text_join(*text, "\n%zu. %s:%lld-%lld%s%s (score %.3f)\n```%s\n%.*s\n```\n", i + 1,
                          file ? file : jstr(hit, "path"), (long long)jint(hit, "start_line"),
                          (long long)jint(hit, "end_line"), sym[0] ? " " : "", sym,
                          json_real_value(json_object_get(hit, "score")), jstr(hit, "language"),
                          (int)sn, snip);
        }
    }
    *structured = res;
    return 0;
}

static int tool_index(struct mcp *m, json_t *args, char **text, json_t **structured)
{
    static const char *const known[] = {"path", "wait", NULL};
    _cleanup_free_ char *root = NULL;
    struct proto_msg *resp;
    msgpack_packer *pk;
    json_t *res, *w = json_object_get(args, "wait");
    bool wait = false;

    if (args_known(m, args, known) < 0 || arg_dir(m, args, "path", &root) < 0)
        return -1;
    if (!root)
        return failf(m, "\"path\" is required: the repository's directory");
    if (w && !json_is_null(w)) {
        if (!json_is_boolean(w))
            return failf(m, "\"wait\" must be true or false");
        wait = json_is_true(w);
    }
    if (call_begin(m, "index", wait ? 2 : 1, &pk) < 0)
        return -1;
    proto_pack_kv_str(pk, "path", root);
    if (wait) {
        proto_pack_kv_bool(pk, "wait", true);
        conn_set_timeout(m->cl->conn, -1); /* a big repository takes minutes */
    }
    int r = call_end(m, &resp);
    if (m->cl->conn)
        conn_set_timeout(m->cl->conn, m->cl->timeout_ms);
    if (r < 0)
        return -1;
    res = from_msgpack(&resp->result);
    proto_msg_free(resp);
    if (wait)
        *text = text_join(
            NULL, "job %lld %s: %lld file%s, %lld chunk%s indexed in %s",
            (long long)jint(res, "job"), jstr(res, "state"), (long long)jint(res, "files_done"),
            jint(res, "files_done") == 1 ? "" : "s", (long long)jint(res, "chunks_done"),
            jint(res, "chunks_done") == 1 ? "" : "s", jstr(res, "repo"));
    else
        *text = text_join(NULL,
                          "indexing %s as job %lld (%s); job_status with this job number follows "
                          "it, and search_code already answers from what is indexed",
                          root, (long long)jint(res, "job"), jstr(res, "state"));
    *structured = res;
    return 0;
}

static int tool_jobs(struct mcp *m, json_t *args, char **text, json_t **structured)
{
    static const char *const known[] = {"job", NULL};
    json_int_t id = 0;
    struct proto_msg *resp;
    json_t *res, *jobs, *job, *keep;
    size_t i;
    int has;

    if (args_known(m, args, known) < 0 || (has = arg_int(m, args, "job", 1, INT64_MAX, &id)) < 0)
        return -1;
    if (call(m, "jobs", &resp) < 0)
        return -1;
    res = from_msgpack(&resp->result);
    proto_msg_free(resp);
    jobs = json_object_get(res, "jobs");
    keep = json_array();
    json_array_foreach(jobs, i, job)
    {
        if (has && jint(job, "job") != id)
            continue;
        json_array_append(keep, job);
        *text = text_join(*text, "job %lld %s (%s): files %lld/%lld, chunks %lld/%lld, %s\n",
                          (long long)jint(job, "job"), jstr(job, "state"), jstr(job, "phase"),
                          (long long)jint(job, "files_done"), (long long)jint(job, "files_total"),
                          (long long)jint(job, "chunks_done"), (long long)jint(job, "chunks_total"),
                          jstr(job, "repo"));
    }
    json_decref(res);
    if (has && json_array_size(keep) == 0) {
        json_decref(keep);
        return failf(m, "no job %lld (list_repositories shows what is indexed)", (long long)id);
    }
    if (!*text)
        *text = text_join(NULL, "no jobs");
    *structured = json_pack("{s:o}", "jobs", keep);
    return 0;
}

static int tool_repos(struct mcp *m, json_t *args, char **text, json_t **structured)
{
    static const char *const known[] = {NULL};
    struct proto_msg *resp;
    json_t *res, *repo = NULL;
    size_t i;

    if (args_known(m, args, known) < 0 || call(m, "repos", &resp) < 0)
        return -1;
    res = from_msgpack(&resp->result);
    proto_msg_free(resp);
    json_array_foreach(json_object_get(res, "repos"), i, repo) *text =
        text_join(*text, "%s: %lld file%s, %lld chunk%s\n", jstr(repo, "path"),
                  (long long)jint(repo, "files"), jint(repo, "files") == 1 ? "" : "s",
                  (long long)jint(repo, "chunks"), jint(repo, "chunks") == 1 ? "" : "s");
    if (!*text)
        *text = text_join(NULL, "no repositories are indexed (index_repository adds one)");
    *structured = res;
    return 0;
}

struct tool {
    const char *name, *title, *description, *schema;
    tool_fn fn;
};

static const struct tool tool_table[] = {
    {"search_code", "Search code",
     "Search the indexed source code by meaning and by words (hybrid: embeddings + BM25). Each "
     "result is one whole definition (a function with its comment, a class header, a block of "
     "code) with its file, line range, symbol and first lines. Without `repository`, searches "
     "the indexed repository that contains the working directory, else every indexed one.",
     "{\"type\":\"object\",\"properties\":{"
     "\"query\":{\"type\":\"string\",\"description\":\"what the code does, in plain words, "
     "identifiers, or both\"},"
     "\"k\":{\"type\":\"integer\",\"minimum\":1,\"maximum\":100,\"default\":10,"
     "\"description\":\"how many results\"},"
     "\"mode\":{\"type\":\"string\",\"enum\":[\"hybrid\",\"semantic\",\"lexical\"],"
     "\"default\":\"hybrid\",\"description\":\"semantic: meaning only; lexical: words and "
     "identifiers only\"},"
     "\"repository\":{\"type\":\"string\",\"description\":\"an indexed repository's "
     "directory\"},"
     "\"path\":{\"type\":\"string\",\"description\":\"only files matching this glob: "
     "'*.py', 'src/*.c', 'src/' (a directory)\"},"
     "\"language\":{\"type\":\"string\",\"description\":\"only this language: python, c, "
     "go, javascript, ...\"}},"
     "\"required\":[\"query\"],\"additionalProperties\":false}",
     tool_search},
    {"index_repository", "Index a repository",
     "Add a repository to the index, or bring it up to date after changes (only changed files "
     "are embedded again). Returns a job number at once; with wait=true, when the job is "
     "done.",
     "{\"type\":\"object\",\"properties\":{"
     "\"path\":{\"type\":\"string\",\"description\":\"the repository's directory\"},"
     "\"wait\":{\"type\":\"boolean\",\"default\":false,\"description\":\"answer when "
     "indexing is done (minutes for a big repository)\"}},"
     "\"required\":[\"path\"],\"additionalProperties\":false}",
     tool_index},
    {"job_status", "Indexing jobs",
     "The progress of indexing jobs: state, files and chunks done of their totals. With `job`, "
     "that job only.",
     "{\"type\":\"object\",\"properties\":{\"job\":{\"type\":\"integer\",\"minimum\":1,"
     "\"description\":\"a job number from index_repository\"}},"
     "\"additionalProperties\":false}",
     tool_jobs},
    {"list_repositories", "Indexed repositories",
     "The indexed repositories with their file and chunk counts.",
     "{\"type\":\"object\",\"properties\":{},\"additionalProperties\":false}", tool_repos},
};

static json_t *tools_list(void)
{
    json_t *tools = json_array();

    for (size_t i = 0; i < ELEMENTSOF(tool_table); i++) {
        const struct tool *t = &tool_table[i];
        json_t *schema = json_loads(t->schema, 0, NULL);
        json_array_append_new(tools, json_pack("{s:s,s:s,s:s,s:o}", "name", t->name, "title",
                                               t->title, "description", t->description,
                                               "inputSchema", schema ? schema : json_object()));
    }
    return json_pack("{s:o}", "tools", tools);
}

/* ---- JSON-RPC ---------------------------------------------------------------------------- */

static void send_json(json_t *msg)
{
    /* 15 digits: 40.9 chunks/s, not 40.899999999999999. */
    char *s = json_dumps(msg, JSON_COMPACT | JSON_REAL_PRECISION(15));

    if (s) {
        fputs(s, stdout);
        fputc('\n', stdout);
        fflush(stdout);
        free(s);
    }
    json_decref(msg);
}

static void reply(json_t *id, json_t *result)
{
    send_json(json_pack("{s:s,s:O,s:o}", "jsonrpc", "2.0", "id", id, "result", result));
}

static void reply_error(json_t *id, int code, const char *message)
{
    send_json(json_pack("{s:s,s:O,s:{s:i,s:s}}", "jsonrpc", "2.0", "id", id ? id : json_null(),
                        "error", "code", code, "message", message));
}

static json_t *initialize(json_t *params)
{
    const char *want = jstr(params, "protocolVersion"), *ver = protocol_versions[0];

    for (size_t i = 0; i < ELEMENTSOF(protocol_versions); i++)
        if (strcmp(want, protocol_versions[i]) == 0)
            ver = protocol_versions[i];
    return json_pack("{s:s,s:{s:{s:b}},s:{s:s,s:s,s:s},s:s}", "protocolVersion", ver,
                     "capabilities", "tools", "listChanged", 0, "serverInfo", "name", "coarch",
                     "title", "coarch code search", "version", COARCH_VERSION, "instructions",
                     "Local semantic + lexical code search over repositories indexed by coarchd. "
                     "Call search_code with what the code does; if nothing is indexed, "
                     "index_repository the project first.");
}

static void tools_call(struct mcp *m, json_t *id, json_t *params)
{
    const char *name = jstr(params, "name");
    json_t *args = json_object_get(params, "arguments"), *structured = NULL, *result;
    char *text = NULL;
    const struct tool *t = NULL;

    for (size_t i = 0; i < ELEMENTSOF(tool_table) && !t; i++)
        if (strcmp(tool_table[i].name, name) == 0)
            t = &tool_table[i];
    if (!t) {
        char msg[256];
        snprintf(msg, sizeof(msg), "unknown tool \"%.100s\" (tools/list names them)", name);
        reply_error(id, MCP_ERR_PARAMS, msg);
        return;
    }
    if (args && !json_is_object(args) && !json_is_null(args)) {
        reply_error(id, MCP_ERR_PARAMS, "\"arguments\" must be an object");
        return;
    }
    if (!args || json_is_null(args))
        args = json_object();
    else
        json_incref(args);
    m->err[0] = '\0';
    if (t->fn(m, args, &text, &structured) < 0) {
        fprintf(stderr, "coarchctl mcp: %s: %s\n", t->name, m->err);
        result = json_pack("{s:[{s:s,s:s}],s:b}", "content", "type", "text", "text", m->err,
                           "isError", 1);
        json_decref(structured);
    } else {
        result = json_pack("{s:[{s:s,s:s}],s:b}", "content", "type", "text", "text",
                           text ? text : "", "isError", 0);
        if (structured && json_is_object(structured))
            json_object_set_new(result, "structuredContent", structured);
        else
            json_decref(structured);
    }
    free(text);
    json_decref(args);
    reply(id, result);
}

static void handle(struct mcp *m, const char *line, size_t len)
{
    json_error_t jerr;
    json_t *msg = json_loadb(line, len, 0, &jerr), *id, *params;
    const char *method;

    if (!msg) {
        char text[256];
        snprintf(text, sizeof(text), "parse error: %s", jerr.text);
        reply_error(NULL, MCP_ERR_PARSE, text);
        return;
    }
    if (json_is_array(msg)) {
        reply_error(NULL, MCP_ERR_INVALID_REQUEST, "batches are not supported (MCP 2025-06-18)");
        goto out;
    }
    id = json_object_get(msg, "id");
    method = json_string_value(json_object_get(msg, "method"));
    params = json_object_get(msg, "params");
    if (!json_is_object(msg) || strcmp(jstr(msg, "jsonrpc"), "2.0") != 0 ||
        (id && !json_is_string(id) && !json_is_integer(id))) {
        reply_error(id && (json_is_string(id) || json_is_integer(id)) ? id : NULL,
                    MCP_ERR_INVALID_REQUEST, "not a JSON-RPC 2.0 message");
        goto out;
    }
    if (!method) {
        if (!id || !(json_object_get(msg, "result") || json_object_get(msg, "error")))
            reply_error(id, MCP_ERR_INVALID_REQUEST, "a request needs a \"method\"");
        goto out; /* a response: we send no requests, so nothing waits for it */
    }
    if (!id)
        goto out; /* a notification (notifications/initialized, .../cancelled): no answer */
    if (params && !json_is_object(params)) {
        reply_error(id, MCP_ERR_PARAMS, "\"params\" must be an object");
        goto out;
    }
    if (strcmp(method, "initialize") == 0)
        reply(id, initialize(params));
    else if (strcmp(method, "ping") == 0)
        reply(id, json_object());
    else if (strcmp(method, "tools/list") == 0)
        reply(id, tools_list());
    else if (strcmp(method, "tools/call") == 0)
        tools_call(m, id, params);
    else {
        char text[256];
        snprintf(text, sizeof(text), "method \"%.100s\" is not supported", method);
        reply_error(id, MCP_ERR_METHOD, text);
    }
out:
    json_decref(msg);
}

static int mcp_run(struct client *cl, int argc, char **argv)
{
    struct mcp m = {.cl = cl};
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    int r;

    r = client_parse_no_args(cl, &client_cmd_mcp, argc, argv);
    if (r != CLIENT_CONTINUE)
        return r;
    if (isatty(STDIN_FILENO))
        fprintf(stderr, "coarchctl mcp: serving MCP on stdin/stdout (one JSON-RPC message per "
                        "line; an MCP client starts this for you); Ctrl-D ends\n");
    while ((n = getline(&line, &cap, stdin)) >= 0) {
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
            n--;
        if (n == 0)
            continue;
        handle(&m, line, (size_t)n);
    }
    free(line);
    return CLIENT_EXIT_OK;
}

const struct client_command client_cmd_mcp = {
    .name = "mcp",
    .summary = "serve the Model Context Protocol on stdin/stdout, for AI agents",
    .usage = "mcp",
    .help = "Runs an MCP server (stdio transport: JSON-RPC 2.0, one message per line) whose\n"
            "tools search and index through coarchd: search_code (query, k, mode,\n"
            "repository, path, language), index_repository (path, wait), job_status (job)\n"
            "and list_repositories.  An MCP client starts it; for example, in a client's\n"
            "JSON configuration:\n"
            "\n"
            "  {\"mcpServers\": {\"coarch\": {\"command\": \"coarchctl\", \"args\": [\"mcp\"]}}}\n"
            "\n"
            "Without a repository argument, search_code searches the indexed repository\n"
            "around the server's working directory (the client's project), else every one.\n"
            "coarchd is started on the first call if it is not running (unless\n"
            "--no-autostart).  Diagnostics go to stderr; stdout carries only MCP messages.\n"
            "Exits 0 at the end of its input.\n",
    .run = mcp_run,
};
