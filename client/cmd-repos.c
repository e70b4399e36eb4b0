/*
 * cmd-repos.c - `coarchctl repos`: the indexed repositories with their file and chunk counts
 * and how long ago each was last indexed.  --json prints the daemon's {"repos": [...]}
 * unchanged (id, path, files, chunks, vectors, indexed_ns).
 */
#include <inttypes.h>
#include <time.h>

#include "client.h"
#include "output.h"

static uint64_t get_u(const msgpack_object *m, const char *key)
{
    uint64_t v = 0;

    (void)proto_get_uint(m, key, &v);
    return v;
}

/* "3m 07s ago" for a CLOCK_REALTIME nanosecond stamp; "never" for 0. */
static void format_age(int64_t stamp_ns, char *buf, size_t size)
{
    struct timespec ts;
    int64_t now_ns;
    char d[32];

    if (stamp_ns <= 0) {
        snprintf(buf, size, "never");
        return;
    }
    clock_gettime(CLOCK_REALTIME, &ts);
    now_ns = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
    output_format_duration_ms(now_ns > stamp_ns ? (uint64_t)(now_ns - stamp_ns) / 1000000 : 0, d,
                              sizeof(d));
    snprintf(buf, size, "%s ago", d);
}

static int repos_run(struct client *cl, int argc, char **argv)
{
    const msgpack_object *repos;
    struct proto_msg *resp;
    int r;

    r = client_parse_no_args(cl, &client_cmd_repos, argc, argv);
    if (r != CLIENT_CONTINUE)
        return r;
    r = client_connect(cl, 0);
    if (r != CLIENT_EXIT_OK)
        return r;
    r = client_call(cl, "repos", &resp);
    if (r != CLIENT_EXIT_OK)
        return r;
    repos = proto_map_get(&resp->result, "repos");
    if (cl->json || !repos || repos->type != MSGPACK_OBJECT_ARRAY) {
        client_print_result(cl, &resp->result);
    } else if (repos->via.array.size == 0) {
        printf("no repositories indexed ('coarchctl index DIR' adds one)\n");
    } else {
        printf("%8s %9s  %-14s %s\n", "FILES", "CHUNKS", "INDEXED", "PATH");
        for (uint32_t i = 0; i < repos->via.array.size; i++) {
            const msgpack_object *o = &repos->via.array.ptr[i];
            const char *path = "";
            size_t len = 0;
            int64_t stamp = 0;
            char age[48];

            (void)proto_get_str(o, "path", &path, &len);
            (void)proto_get_int(o, "indexed_ns", &stamp);
            format_age(stamp, age, sizeof(age));
            bool watching = false;
            (void)proto_get_bool(o, "watching", &watching);
            printf("%8" PRIu64 " %9" PRIu64 "  %-14s %.*s%s", get_u(o, "files"), get_u(o, "chunks"),
                   age, (int)len, path, watching ? "  (watched" : "");
            if (watching && get_u(o, "unwatched_dirs"))
                printf("; %" PRIu64 " directories past the watch limit, rescanned",
                       get_u(o, "unwatched_dirs"));
            printf("%s\n", watching ? ")" : "");
        }
    }
    proto_msg_free(resp);
    return CLIENT_EXIT_OK;
}

const struct client_command client_cmd_repos = {
    .name = "repos",
    .summary = "List indexed repositories",
    .usage = "repos [--json]",
    .help = "One row per repository: files and chunks in the index, when it was last\n"
            "indexed, and its path.  --json prints {\"repos\": [{id, path, files, chunks,\n"
            "vectors, indexed_ns}]} as the daemon sends it.\n",
    .run = repos_run,
};
