/*
 * client.c - see client.h.
 */
#include "client.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

struct tclient {
    int fd;
    uint32_t next_id;
    struct proto_decoder *decoder;
    struct proto_writer w;
};

/* Limits generous enough for every test, but limits all the same. */
#define TCLIENT_MAX_FRAME (64u << 20)

int tclient_connect(const char *path, struct tclient **ret_client)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    struct proto_limits lim;
    struct tclient *c;
    int fd;

    if (strlen(path) >= sizeof(sa.sun_path))
        return -ENAMETOOLONG;
    strcpy(sa.sun_path, path);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        int r = -errno;

        close(fd);
        return r;
    }
    c = calloc(1, sizeof(*c));
    proto_limits_default(&lim);
    lim.max_frame = TCLIENT_MAX_FRAME;
    lim.max_str = TCLIENT_MAX_FRAME;
    if (!c || !(c->decoder = proto_decoder_new(&lim))) {
        free(c);
        close(fd);
        return -ENOMEM;
    }
    c->fd = fd;
    c->next_id = 1;
    proto_writer_init(&c->w, TCLIENT_MAX_FRAME);
    *ret_client = c;
    return 0;
}

static uint64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

int tclient_connect_wait(const char *path, int timeout_ms, struct tclient **ret_client)
{
    uint64_t deadline = now_ms() + (uint64_t)timeout_ms;

    for (;;) {
        int r = tclient_connect(path, ret_client);

        if (r == 0 || (r != -ENOENT && r != -ECONNREFUSED) || now_ms() >= deadline)
            return r;
        usleep(10000);
    }
}

struct tclient *tclient_free(struct tclient *c)
{
    if (!c)
        return NULL;
    close(c->fd);
    proto_decoder_free(c->decoder);
    proto_writer_release(&c->w);
    free(c);
    return NULL;
}

int tclient_fd(const struct tclient *c)
{
    return c->fd;
}

uint32_t tclient_next_id(struct tclient *c)
{
    return c->next_id++;
}

int tclient_send_raw(struct tclient *c, const void *buf, size_t len)
{
    const char *p = buf;

    while (len > 0) {
        ssize_t n = send(c->fd, p, len, MSG_NOSIGNAL);

        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

msgpack_packer *tclient_begin(struct tclient *c, uint32_t id, const char *method, uint32_t n_params)
{
    proto_writer_reset(&c->w);
    if (proto_writer_begin(&c->w) < 0)
        return NULL;
    if (proto_pack_request(&c->w.pk, id, method, n_params) < 0)
        return NULL;
    return &c->w.pk;
}

int tclient_end(struct tclient *c)
{
    int r = proto_writer_end(&c->w);

    if (r < 0)
        return r;
    r = tclient_send_raw(c, c->w.sbuf.data, c->w.sbuf.size);
    proto_writer_reset(&c->w);
    return r;
}

int tclient_send(struct tclient *c, uint32_t id, const char *method)
{
    if (!tclient_begin(c, id, method, 0))
        return -ENOMEM;
    return tclient_end(c);
}

int tclient_read(struct tclient *c, int timeout_ms, struct proto_msg **ret_msg)
{
    uint64_t deadline = now_ms() + (uint64_t)timeout_ms;
    char buf[65536];

    for (;;) {
        struct pollfd p = {.fd = c->fd, .events = POLLIN};
        uint64_t now;
        ssize_t n;
        int r;

        r = proto_decoder_next(c->decoder, ret_msg, NULL);
        if (r == 1)
            return 0;
        if (r < 0)
            return r;
        now = now_ms();
        if (now >= deadline)
            return -ETIMEDOUT;
        r = poll(&p, 1, (int)(deadline - now));
        if (r < 0 && errno != EINTR)
            return -errno;
        if (r <= 0)
            continue;
        n = recv(c->fd, buf, sizeof(buf), 0);
        if (n == 0)
            return -ECONNRESET;
        if (n < 0) {
            if (errno == EINTR || errno == EAGAIN)
                continue;
            return errno == ECONNRESET ? -ECONNRESET : -errno;
        }
        r = proto_decoder_feed(c->decoder, buf, (size_t)n);
        if (r < 0)
            return r;
    }
}

int tclient_read_response(struct tclient *c, int timeout_ms, size_t *ret_skipped,
                          struct proto_msg **ret_msg)
{
    size_t skipped = 0;

    for (;;) {
        struct proto_msg *m;
        int r = tclient_read(c, timeout_ms, &m);

        if (r < 0)
            return r;
        if (m->type == PROTO_MSG_RESPONSE) {
            if (ret_skipped)
                *ret_skipped = skipped;
            *ret_msg = m;
            return 0;
        }
        skipped++;
        proto_msg_free(m);
    }
}

int tclient_call(struct tclient *c, const char *method, struct proto_msg **ret_msg)
{
    uint32_t id = tclient_next_id(c);
    struct proto_msg *m;
    int r;

    r = tclient_send(c, id, method);
    if (r < 0)
        return r;
    r = tclient_read_response(c, 10000, NULL, &m);
    if (r < 0)
        return r;
    if (m->id != id) {
        proto_msg_free(m);
        return -EPROTO;
    }
    *ret_msg = m;
    return 0;
}

int tclient_ping(struct tclient *c)
{
    struct proto_msg *m;
    int r = tclient_call(c, "ping", &m);

    if (r < 0)
        return r;
    r = tmsg_result_is_str(m, "pong") ? 0 : -EPROTO;
    proto_msg_free(m);
    return r;
}

int tclient_wait_closed(struct tclient *c, int timeout_ms)
{
    int n = 0;

    for (;;) {
        struct proto_msg *m;
        int r = tclient_read(c, timeout_ms, &m);

        if (r == -ECONNRESET)
            return n;
        if (r < 0)
            return r;
        proto_msg_free(m);
        n++;
    }
}

int64_t tmsg_error_code(const struct proto_msg *m)
{
    int64_t code = 0;
    const char *msg;
    size_t len;

    if (proto_msg_get_error(m, &code, &msg, &len) <= 0)
        return 0;
    return code;
}

bool tmsg_error_mentions(const struct proto_msg *m, const char *needle)
{
    int64_t code;
    const char *msg;
    size_t len, nlen = strlen(needle);

    if (proto_msg_get_error(m, &code, &msg, &len) <= 0)
        return false;
    for (size_t i = 0; i + nlen <= len; i++)
        if (memcmp(msg + i, needle, nlen) == 0)
            return true;
    return false;
}

bool tmsg_result_is_str(const struct proto_msg *m, const char *s)
{
    return m->type == PROTO_MSG_RESPONSE && m->error.type == MSGPACK_OBJECT_NIL &&
           m->result.type == MSGPACK_OBJECT_STR && m->result.via.str.size == strlen(s) &&
           memcmp(m->result.via.str.ptr, s, strlen(s)) == 0;
}

bool tmsg_result_is_true(const struct proto_msg *m)
{
    return m->type == PROTO_MSG_RESPONSE && m->error.type == MSGPACK_OBJECT_NIL &&
           m->result.type == MSGPACK_OBJECT_BOOLEAN && m->result.via.boolean;
}
