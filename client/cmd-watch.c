/*
 * cmd-watch.c - `coarchctl watch [--stop] [PATH]`: keep a repository's index live (the
 * daemon's watcher, sched/watcher.h), or stop doing so.
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"

static int watch_run(struct client *cl, int argc, char **argv)
{
    static const struct option opts[] = {
        {"stop", no_argument, NULL, 's'},
        {0},
    };
    const struct client_command *cmd = &client_cmd_watch;
    struct proto_msg *resp;
    msgpack_packer *pk;
    bool stop = false;
    char *root;
    int opt, r, code = CLIENT_EXIT_USAGE;

    while ((opt = client_getopt(cl, cmd, argc, argv, "s", opts, &code)) != CLIENT_CONTINUE) {
        if (opt == CLIENT_GETOPT_EXIT)
            return code;
        if (opt == 's')
            stop = true;
    }
    if (optind + 1 < argc)
        return client_usage_error(cmd, "one directory at a time (got '%s' too)", argv[optind + 1]);
    /* --stop accepts a directory that is gone: the daemon knows it by its path. */
    root = optind < argc ? realpath(argv[optind], NULL) : client_repository_root();
    if (!root && stop && optind < argc)
        root = strdup(argv[optind]);
    if (!root) {
        fprintf(stderr, "coarchctl watch: %s: %s\n", optind < argc ? argv[optind] : ".",
                strerror(errno));
        return CLIENT_EXIT_FAILED;
    }
    r = client_connect(cl, 0);
    if (r == CLIENT_EXIT_OK)
        r = client_request_begin(cl, stop ? "unwatch" : "watch", 1, &pk);
    if (r != CLIENT_EXIT_OK)
        goto out;
    proto_pack_kv_str(pk, "path", root);
    r = client_request_end(cl, &resp);
    if (r != CLIENT_EXIT_OK)
        goto out;
    if (cl->json) {
        client_print_json(cl, &resp->result);
    } else if (stop) {
        printf("no longer watching %s (its index stays; 'coarchctl index' refreshes it)\n", root);
    } else {
        uint64_t job = 0;
        (void)proto_get_uint(&resp->result, "job", &job);
        printf("watching %s: changes are indexed as they happen, across restarts too\n"
               "job %" PRIu64 " brings it up to date first ('coarchctl jobs' follows it)\n",
               root, job);
    }
    proto_msg_free(resp);
out:
    free(root);
    return r;
}

const struct client_command client_cmd_watch = {
    .name = "watch",
    .summary = "Keep a repository's index live: index changes as they happen",
    .usage = "watch [--stop] [--json] [PATH]",
    .help = "Asks coarchd to watch PATH (default: the git work tree around the current\n"
            "directory) with inotify and index what changes, a moment after the last write:\n"
            "only the files that changed, and of those only the chunks whose text changed\n"
            "are embedded again.  New directories are picked up, deleted and renamed files\n"
            "leave the index, and a changed .gitignore or .coarchignore is applied.  The\n"
            "watch is recorded in the index, so a restarted coarchd watches again (and first\n"
            "catches up with what changed while it was down).  When the kernel's inotify\n"
            "watch limit is reached, coarchd logs how to raise it and rescans what it could\n"
            "not watch every COARCH_WATCH_RESCAN_S seconds.  'coarchctl repos' shows which\n"
            "repositories are watched.\n"
            "\n"
            "Options:\n"
            "      --stop   stop watching PATH (its index stays as it is)\n"
            "      --json   print the daemon's answer: {repo, watching, job, state}\n",
    .run = watch_run,
};
