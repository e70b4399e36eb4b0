/*
 * conn.c - see conn.h.
 *
 * The socket is connected blocking (so that SO_SNDTIMEO bounds a connect() to a daemon whose
 * listen backlog is full: Linux honours it for AF_UNIX streams) and switched to non-blocking
 * afterwards, when every wait goes through poll(2) with a deadline.
 */
#include "conn.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "macro.h"

#define CONN_READ_SIZE (64u * 1024)

struct conn {
    int fd;
    int timeout_ms; /* inactivity timeout of every wait; < 0 = none */
    uint32_t next_id;
    uint32_t pending_id; /* id of the request being built or awaited */
    bool request_open;   /* between conn_request_begin() and conn_request_end() */
    struct proto_writer w;
    struct proto_decoder *dec;
    conn_notify_fn notify;
    void *userdata;
};

static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Milliseconds left until `deadline` (a now_ms() value; < 0 = none) as a poll(2) timeout. */
static int remaining_ms(int64_t deadline)
{
    int64_t left;

    if (deadline < 0)
        return -1;
    left = deadline - now_ms();
    return (int)CLAMP(left, 0, INT32_MAX);
}

static int64_t deadline_after(int timeout_ms)
{
    return timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
}

/* Waits for `events` on the socket.  0 when ready, -ETIMEDOUT, or -errno. */
static int conn_poll(struct conn *c, short events, int64_t deadline)
{
    struct pollfd p = {.fd = c->fd, .events = events};

    for (;;) {
        int n = poll(&p, 1, remaining_ms(deadline));
        if (n > 0)
            return 0;
        if (n == 0)
            return -ETIMEDOUT;
        if (errno != EINTR)
            return -errno;
    }
}

int conn_connect(const char *path, int timeout_ms, struct conn **ret_conn)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    struct conn *c;
    int fd, r;

    if (strlen(path) >= sizeof(sa.sun_path))
        return -ENAMETOOLONG;
    memcpy(sa.sun_path, path, strlen(path) + 1);

    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    if (timeout_ms >= 0) {
        struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
        if (timeout_ms == 0)
            tv.tv_usec = 1; /* a zero SO_SNDTIMEO means "block forever" */
        (void)setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    }
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        /* A full backlog that stayed full for the whole SO_SNDTIMEO reads as EAGAIN. */
        r = errno == EAGAIN ? -ETIMEDOUT : -errno;
        goto out_close;
    }
    /* Talk only to a daemon of our own user: anyone can create a socket at a path we would
     * pick (a /tmp fallback directory made first by another user) and serve forged answers or
     * read our queries.  Nothing is sent before this check. */
    {
        struct ucred cred;
        socklen_t len = sizeof(cred);
        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) {
            r = -errno;
            goto out_close;
        }
        if (cred.uid != geteuid()) {
            r = -EPERM;
            goto out_close;
        }
    }
    if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0) {
        r = -errno;
        goto out_close;
    }

    c = calloc(1, sizeof(*c));
    if (!c) {
        r = -ENOMEM;
        goto out_close;
    }
    c->dec = proto_decoder_new(NULL);
    if (!c->dec) {
        free(c);
        r = -ENOMEM;
        goto out_close;
    }
    c->fd = fd;
    c->timeout_ms = timeout_ms;
    c->next_id = 1;
    proto_writer_init(&c->w, 0);
    *ret_conn = c;
    return 0;

out_close:
    close(fd);
    return r;
}

struct conn *conn_free(struct conn *c)
{
    if (!c)
        return NULL;
    close(c->fd);
    proto_writer_release(&c->w);
    proto_decoder_free(c->dec);
    free(c);
    return NULL;
}

void conn_set_timeout(struct conn *c, int timeout_ms)
{
    c->timeout_ms = timeout_ms;
}

void conn_set_notify(struct conn *c, conn_notify_fn fn, void *userdata)
{
    c->notify = fn;
    c->userdata = userdata;
}

int conn_fd(const struct conn *c)
{
    return c->fd;
}

static int conn_write_all(struct conn *c, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = send(c->fd, buf, len, MSG_NOSIGNAL);
        if (n >= 0) {
            buf += n;
            len -= (size_t)n;
            continue;
        }
        if (errno == EPIPE)
            return -ECONNRESET; /* the daemon went away: report it as the reader would */
        if (errno == EAGAIN) {
            int r = conn_poll(c, POLLOUT, deadline_after(c->timeout_ms));
            if (r < 0)
                return r;
        } else if (errno != EINTR) {
            return -errno;
        }
    }
    return 0;
}

/*
 * Reads until one complete message is decoded.  With `extend` the deadline restarts on every
 * read that brought bytes (inactivity timeout); without, it is absolute.
 */
static int conn_read_message(struct conn *c, int64_t deadline, bool extend,
                             struct proto_msg **ret_msg)
{
    char buf[CONN_READ_SIZE];

    for (;;) {
        struct proto_msg *msg;
        ssize_t n;
        int r;

        r = proto_decoder_next(c->dec, &msg, NULL);
        if (r > 0) {
            *ret_msg = msg;
            return 0;
        }
        if (r < 0) {
            log_debug("malformed frame from coarchd: %s", proto_decoder_last_error(c->dec, NULL));
            return r;
        }

        r = conn_poll(c, POLLIN, deadline);
        if (r < 0)
            return r;
        n = recv(c->fd, buf, sizeof(buf), 0);
        if (n == 0)
            return -ECONNRESET;
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR)
                continue;
            return errno == EPIPE ? -ECONNRESET : -errno;
        }
        r = proto_decoder_feed(c->dec, buf, (size_t)n);
        if (r < 0)
            return r;
        if (extend)
            deadline = deadline_after(c->timeout_ms);
    }
}

int conn_request_begin(struct conn *c, const char *method, uint32_t n_params,
                       msgpack_packer **ret_pk)
{
    int r;

    if (c->request_open)
        return -EBUSY;
    proto_writer_reset(&c->w);
    r = proto_writer_begin(&c->w);
    if (r < 0)
        return r;
    c->pending_id = c->next_id++;
    if (c->next_id == 0)
        c->next_id = 1;
    /* A packing failure is remembered by the writer and reported by proto_writer_end(). */
    (void)proto_pack_request(&c->w.pk, c->pending_id, method, n_params);
    c->request_open = true;
    *ret_pk = &c->w.pk;
    return 0;
}

int conn_request_end(struct conn *c, struct proto_msg **ret_response)
{
    int r;

    if (!c->request_open)
        return -EINVAL;
    c->request_open = false;
    r = proto_writer_end(&c->w);
    if (r >= 0)
        r = conn_write_all(c, c->w.sbuf.data, c->w.sbuf.size);
    proto_writer_reset(&c->w);
    if (r < 0)
        return r;

    for (;;) {
        struct proto_msg *msg;

        r = conn_read_message(c, deadline_after(c->timeout_ms), true, &msg);
        if (r < 0)
            return r;
        if (msg->type == PROTO_MSG_RESPONSE) {
            if (msg->id == c->pending_id) {
                *ret_response = msg;
                return 0;
            }
            log_debug("coarchd answered request %u, but %u is the one outstanding", msg->id,
                      c->pending_id);
            proto_msg_free(msg);
            return -EPROTO;
        }
        /* Requests from the daemon are not part of the protocol today; skip them rather than
         * fail, so a newer daemon that learns to ask something does not break old clients. */
        r = msg->type == PROTO_MSG_NOTIFICATION && c->notify ? c->notify(msg, c->userdata) : 0;
        proto_msg_free(msg);
        if (r < 0)
            return r;
    }
}

int conn_call(struct conn *c, const char *method, struct proto_msg **ret_response)
{
    msgpack_packer *pk;
    int r;

    r = conn_request_begin(c, method, 0, &pk);
    if (r < 0)
        return r;
    return conn_request_end(c, ret_response);
}

int conn_next(struct conn *c, struct proto_msg **ret_msg)
{
    return conn_read_message(c, deadline_after(c->timeout_ms), true, ret_msg);
}

int conn_wait_closed(struct conn *c, int timeout_ms)
{
    int64_t deadline = deadline_after(timeout_ms);

    for (;;) {
        struct proto_msg *msg;
        int r = conn_read_message(c, deadline, false, &msg);
        if (r == -ECONNRESET)
            return 0;
        if (r < 0)
            return r;
        proto_msg_free(msg);
    }
}
