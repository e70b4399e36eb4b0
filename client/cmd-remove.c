/*
 * cmd-remove.c - `coarchctl remove REPO`: drop a repository from the index (its files, chunks,
 * vectors and postings; an active job of it is cancelled).  The files on disk are untouched.
 *
 * REPO is resolved here when it exists, since the daemon's working directory is /; a directory
 * that is gone already is sent as an absolute path, and the daemon matches it as written.
 */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "client.h"
#include "paths.h"

static int remove_run(struct client *cl, int argc, char **argv)
{
    const struct client_command *cmd = &client_cmd_remove;
    struct proto_msg *resp;
    msgpack_packer *pk;
    char cwd[PATH_MAX], *repo;
    int r, code = CLIENT_EXIT_USAGE;

    r = client_getopt(cl, cmd, argc, argv, NULL, NULL, &code);
    if (r == CLIENT_GETOPT_EXIT)
        return code;
    if (optind >= argc)
        return client_usage_error(cmd, "missing the repository ('coarchctl repos' lists them)");
    if (optind + 1 < argc)
        return client_usage_error(cmd, "one repository at a time (got '%s' too)", argv[optind + 1]);
    repo = realpath(argv[optind], NULL);
    if (!repo && argv[optind][0] != '/' && getcwd(cwd, sizeof(cwd)))
        repo = path_join(cwd, argv[optind]);
    else if (!repo)
        repo = strdup(argv[optind]);
    if (!repo) {
        fprintf(stderr, "coarchctl: out of memory\n");
        return CLIENT_EXIT_FAILED;
    }

    r = client_connect(cl, 0);
    if (r != CLIENT_EXIT_OK)
        goto out;
    r = client_request_begin(cl, "repo.remove", 1, &pk);
    if (r != CLIENT_EXIT_OK)
        goto out;
    proto_pack_kv_str(pk, "repo", repo);
    r = client_request_end(cl, &resp);
    if (r != CLIENT_EXIT_OK)
        goto out;
    proto_msg_free(resp);
    if (cl->json) {
        msgpack_sbuffer sb;
        msgpack_packer jp;

        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&jp, &sb, msgpack_sbuffer_write);
        msgpack_pack_map(&jp, 2);
        proto_pack_kv_str(&jp, "repo", repo);
        proto_pack_kv_bool(&jp, "removed", true);
        r = client_print_json_packed(cl, sb.data, sb.size);
        msgpack_sbuffer_destroy(&sb);
    } else {
        printf("removed %s from the index\n", repo);
    }
out:
    free(repo);
    return r;
}

const struct client_command client_cmd_remove = {
    .name = "remove",
    .summary = "Remove a repository from the index",
    .usage = "remove [--json] REPO",
    .help = "Deletes everything the index holds for REPO (its files on disk are untouched)\n"
            "and cancels its indexing job if one is active.  Exit status 1 when REPO is not\n"
            "indexed.  --json prints {\"repo\": PATH, \"removed\": true}.\n",
    .run = remove_run,
};
