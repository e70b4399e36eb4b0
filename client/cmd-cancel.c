/*
 * cmd-cancel.c - `coarchctl cancel [--no-wait] JOB`: stop an indexing job.
 *
 * `job.cancel` only raises the job's flag; a running job notices it at its next batch, commits
 * what it has embedded and ends "cancelled".  So that `coarchctl jobs` right after `cancel`
 * shows the outcome (scripts rely on that), cancel subscribes to progress first and waits for
 * the job's final event, within --timeout; --no-wait returns as soon as the daemon accepted.
 * Chunks committed before the cancel stay searchable.
 */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "macro.h"

struct cancel_wait {
    uint64_t job;
    bool seen;             /* the job's final progress event arrived */
    char state[16];        /* ...and said this */
    uint64_t chunks_done;  /* ...and this */
    msgpack_sbuffer event; /* ...as msgpack, for --json */
};

/* True when `msg` is a progress event saying that job `id` has ended. */
static bool is_final_event(const struct proto_msg *msg, uint64_t id)
{
    const char *state;
    size_t len;
    uint64_t job;

    if (msg->type != PROTO_MSG_NOTIFICATION || !proto_msg_method_is(msg, "progress"))
        return false;
    if (proto_get_uint(&msg->params, "job", &job) < 0 || job != id)
        return false;
    if (proto_get_str(&msg->params, "state", &state, &len) < 0)
        return false;
    return !((len == 7 && memcmp(state, "running", 7) == 0) ||
             (len == 6 && memcmp(state, "queued", 6) == 0));
}

/* Keeps what we print of the final event (the message itself is freed after this). */
static void note_event(struct cancel_wait *w, const struct proto_msg *msg)
{
    const char *state = "?";
    size_t len = 1;
    msgpack_packer pk;

    if (w->seen || !is_final_event(msg, w->job))
        return;
    w->seen = true;
    (void)proto_get_str(&msg->params, "state", &state, &len);
    snprintf(w->state, sizeof(w->state), "%.*s", (int)MIN(len, sizeof(w->state) - 1), state);
    (void)proto_get_uint(&msg->params, "chunks_done", &w->chunks_done);
    msgpack_packer_init(&pk, &w->event, msgpack_sbuffer_write);
    (void)msgpack_pack_object(&pk, msg->params);
}

/* The final event comes before job.cancel's answer when the job was still queued. */
static int on_notify(const struct proto_msg *msg, void *userdata)
{
    note_event(userdata, msg);
    return 0;
}

static int subscribe_progress(struct client *cl)
{
    struct proto_msg *resp;
    msgpack_packer *pk;
    int r;

    r = client_request_begin(cl, "subscribe", 1, &pk);
    if (r != CLIENT_EXIT_OK)
        return r;
    proto_pack_str(pk, "events");
    msgpack_pack_array(pk, 1);
    proto_pack_str(pk, "progress");
    r = client_request_end(cl, &resp);
    if (r == CLIENT_EXIT_OK)
        proto_msg_free(resp);
    return r;
}

static int cancel_job(struct client *cl, struct cancel_wait *w, bool wait)
{
    struct proto_msg *resp, *msg;
    msgpack_packer *pk;
    int r;

    r = client_connect(cl, 0);
    if (r != CLIENT_EXIT_OK)
        return r;
    if (wait) {
        r = subscribe_progress(cl);
        if (r != CLIENT_EXIT_OK)
            return r;
        conn_set_notify(cl->conn, on_notify, w);
    }
    r = client_request_begin(cl, "job.cancel", 1, &pk);
    if (r != CLIENT_EXIT_OK)
        return r;
    proto_pack_kv_uint(pk, "job", w->job);
    r = client_request_end(cl, &resp);
    if (r != CLIENT_EXIT_OK)
        return r;
    proto_msg_free(resp);

    while (wait && !w->seen) {
        r = conn_next(cl->conn, &msg);
        if (r == -ETIMEDOUT) {
            fprintf(stderr,
                    "coarchctl cancel: job %" PRIu64 " has not stopped yet; it will at its "
                    "next batch ('coarchctl jobs' shows it)\n",
                    w->job);
            break;
        }
        if (r < 0)
            return client_conn_error(cl, r);
        note_event(w, msg);
        proto_msg_free(msg);
    }

    if (cl->json) {
        msgpack_sbuffer sb;
        msgpack_packer jp;

        if (w->seen)
            return client_print_json_packed(cl, w->event.data, w->event.size);
        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&jp, &sb, msgpack_sbuffer_write);
        msgpack_pack_map(&jp, 2);
        proto_pack_kv_uint(&jp, "job", w->job);
        proto_pack_kv_str(&jp, "state", "cancelling");
        r = client_print_json_packed(cl, sb.data, sb.size);
        msgpack_sbuffer_destroy(&sb);
        return r;
    }
    if (!w->seen)
        printf("job %" PRIu64 ": cancel requested\n", w->job);
    else if (strcmp(w->state, "cancelled") == 0)
        printf("job %" PRIu64 " cancelled (%" PRIu64 " chunks indexed before it stopped)\n", w->job,
               w->chunks_done);
    else
        printf("job %" PRIu64 " ended as %s before the cancel took effect\n", w->job, w->state);
    return CLIENT_EXIT_OK;
}

static int cancel_run(struct client *cl, int argc, char **argv)
{
    static const struct option opts[] = {
        {"no-wait", no_argument, NULL, 'n'},
        {0},
    };
    const struct client_command *cmd = &client_cmd_cancel;
    struct cancel_wait w = {0};
    bool wait = true;
    char *end;
    int opt, r, code = CLIENT_EXIT_USAGE;

    while ((opt = client_getopt(cl, cmd, argc, argv, "n", opts, &code)) != CLIENT_CONTINUE) {
        if (opt == CLIENT_GETOPT_EXIT)
            return code;
        if (opt == 'n')
            wait = false;
    }
    if (optind >= argc)
        return client_usage_error(cmd, "missing the job id ('coarchctl jobs' lists them)");
    if (optind + 1 < argc)
        return client_usage_error(cmd, "one job at a time (got '%s' too)", argv[optind + 1]);
    errno = 0;
    w.job = strtoull(argv[optind], &end, 10);
    if (errno || end == argv[optind] || *end || !isdigit((unsigned char)argv[optind][0]) ||
        w.job == 0)
        return client_usage_error(cmd, "'%s' is not a job id ('coarchctl jobs' lists them)",
                                  argv[optind]);

    msgpack_sbuffer_init(&w.event);
    r = cancel_job(cl, &w, wait);
    msgpack_sbuffer_destroy(&w.event);
    return r;
}

const struct client_command client_cmd_cancel = {
    .name = "cancel",
    .summary = "Cancel a queued or running indexing job",
    .usage = "cancel [--no-wait] [--json] JOB",
    .help = "A running job stops at its next batch; what it indexed until then stays\n"
            "searchable, and indexing the directory again continues from there.  The\n"
            "command waits (within --timeout) until the job has stopped and prints how far\n"
            "it got; with --json the job's final progress event.\n"
            "\n"
            "Options:\n"
            "  -n, --no-wait  return once the daemon accepted the request\n"
            "\n"
            "Exit status 1 for an unknown job or one that has already ended.\n",
    .run = cancel_run,
};
