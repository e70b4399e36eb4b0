/*
 * cmd-jobs.c - `coarchctl jobs`: the daemon's indexing jobs, oldest first.
 *
 * The daemon lists the jobs it holds in memory (queued, running, recently ended: full progress
 * fields) and the persisted rows of older ones (counts only); the table shows what each has.
 * --json prints the daemon's {"jobs": [...]} unchanged.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "macro.h"
#include "output.h"

static uint64_t get_u(const msgpack_object *m, const char *key)
{
    uint64_t v = 0;

    (void)proto_get_uint(m, key, &v);
    return v;
}

static int cmp_job_id(const void *a, const void *b)
{
    uint64_t x = get_u(*(const msgpack_object *const *)a, "job");
    uint64_t y = get_u(*(const msgpack_object *const *)b, "job");

    return x < y ? -1 : x > y;
}

static void print_row(const msgpack_object *j, bool *ret_any_resumed)
{
    const char *state = "?", *repo = "", *msg = "";
    size_t slen = 1, rlen = 0, mlen = 0;
    char files[48], chunks[48], rate[24] = "-", eta[32] = "-";
    double cps = 0, eta_s = -1;
    bool resumed = false, running;

    (void)proto_get_str(j, "state", &state, &slen);
    (void)proto_get_str(j, "repo", &repo, &rlen);
    (void)proto_get_str(j, "message", &msg, &mlen);
    (void)proto_get_bool(j, "resumed", &resumed);
    (void)proto_get_double(j, "chunks_per_s", &cps);
    (void)proto_get_double(j, "eta_s", &eta_s);
    running = slen == 7 && memcmp(state, "running", 7) == 0;

    snprintf(files, sizeof(files), "%" PRIu64 "/%" PRIu64, get_u(j, "files_done"),
             get_u(j, "files_total"));
    snprintf(chunks, sizeof(chunks), "%" PRIu64 "/%s%" PRIu64, get_u(j, "chunks_done"),
             running ? "~" : "", get_u(j, "chunks_total"));
    if (running) {
        snprintf(rate, sizeof(rate), "%.0f/s", cps);
        if (eta_s >= 0)
            output_format_duration_ms((uint64_t)(eta_s * 1000), eta, sizeof(eta));
        else
            snprintf(eta, sizeof(eta), "?");
    }
    *ret_any_resumed |= resumed;
    printf("%5" PRIu64 "  %-9.*s%c  %-13s %-17s %8s %7s  %.*s", get_u(j, "job"), (int)MIN(slen, 9u),
           state, resumed ? '*' : ' ', files, chunks, rate, eta, (int)rlen, repo);
    if (mlen && slen == 6 && memcmp(state, "failed", 6) == 0)
        printf("  (%.*s)", (int)mlen, msg);
    putchar('\n');
}

static int jobs_run(struct client *cl, int argc, char **argv)
{
    const msgpack_object *jobs, **sorted;
    struct proto_msg *resp;
    bool any_resumed = false;
    uint32_t n;
    int r;

    r = client_parse_no_args(cl, &client_cmd_jobs, argc, argv);
    if (r != CLIENT_CONTINUE)
        return r;
    r = client_connect(cl, 0);
    if (r != CLIENT_EXIT_OK)
        return r;
    r = client_call(cl, "jobs", &resp);
    if (r != CLIENT_EXIT_OK)
        return r;
    jobs = proto_map_get(&resp->result, "jobs");
    if (cl->json || !jobs || jobs->type != MSGPACK_OBJECT_ARRAY) {
        client_print_result(cl, &resp->result);
        proto_msg_free(resp);
        return CLIENT_EXIT_OK;
    }
    n = jobs->via.array.size;
    if (n == 0) {
        printf("no jobs\n");
        proto_msg_free(resp);
        return CLIENT_EXIT_OK;
    }
    sorted = calloc(n, sizeof(*sorted));
    if (!sorted) {
        fprintf(stderr, "coarchctl: out of memory\n");
        proto_msg_free(resp);
        return CLIENT_EXIT_FAILED;
    }
    for (uint32_t i = 0; i < n; i++)
        sorted[i] = &jobs->via.array.ptr[i];
    qsort(sorted, n, sizeof(*sorted), cmp_job_id);
    printf("%5s  %-10s  %-13s %-17s %8s %7s  %s\n", "JOB", "STATE", "FILES", "CHUNKS", "RATE",
           "ETA", "REPO");
    for (uint32_t i = 0; i < n; i++)
        print_row(sorted[i], &any_resumed);
    if (any_resumed)
        printf("* resumed after coarchd restarted mid-job\n");
    free(sorted);
    proto_msg_free(resp);
    return CLIENT_EXIT_OK;
}

const struct client_command client_cmd_jobs = {
    .name = "jobs",
    .summary = "List indexing jobs and their progress",
    .usage = "jobs [--json]",
    .help = "One row per job, oldest first: id, state (queued, running, done, failed,\n"
            "cancelled; '*' marks a job resumed after coarchd restarted), files and chunks\n"
            "done/total (the chunk total is an estimate while running), chunks per second\n"
            "and ETA of the running job, and the repository.  --json prints {\"jobs\": [...]}\n"
            "as the daemon sends it.\n",
    .run = jobs_run,
};
