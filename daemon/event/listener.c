/*
 * listener.c - the listening socket: safe creation (see server.h for the rules), adoption of a
 * socket-activated fd, accepting, and removal on stop.
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "event-int.h"
#include "lockfile.h"
#include "log.h"
#include "macro.h"
#include "paths.h"

/* The kernel caps this at net.core.somaxconn; a burst of clients (an editor opening many
 * buffers, a test) should queue rather than see ECONNREFUSED. */
#define LISTEN_BACKLOG 512

static void on_connection(uv_stream_t *listener, int status)
{
    struct server *s = listener->data;

    if (status < 0) {
        log_warning("accepting a connection failed: %s", uv_strerror(status));
        return;
    }
    conn_accept(s);
}

/* Starts uv on an fd that is bound (and maybe listening); takes ownership of fd. */
static int listener_start(struct server *s, int fd)
{
    int r;

    r = uv_pipe_init(&s->el->uv, &s->listener, 0);
    if (r < 0) {
        close(fd);
        return r;
    }
    s->listener.data = s;
    s->listener_init = true;
    s->handles_open++;
    r = uv_pipe_open(&s->listener, fd);
    if (r < 0) {
        close(fd); /* not adopted by the handle */
        return r;
    }
    return uv_listen((uv_stream_t *)&s->listener, LISTEN_BACKLOG, on_connection);
}

/*
 * Decides what to do with an existing `path`: 0 when it is absent or was a stale socket (now
 * removed), -EADDRINUSE when something answers on it, -EEXIST when it is not a socket.
 */
static int remove_stale_socket(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    struct stat st;
    int fd, r;

    if (lstat(path, &st) < 0)
        return errno == ENOENT ? 0 : -errno;
    if (!S_ISSOCK(st.st_mode))
        return -EEXIST;

    /* Non-blocking: a live daemon with a full backlog answers EAGAIN, which still means live. */
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -errno;
    strncpy(sa.sun_path, path, sizeof(sa.sun_path) - 1);
    r = connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ? -errno : 0;
    close(fd);
    if (r == 0 || r == -EAGAIN || r == -EINPROGRESS)
        return -EADDRINUSE;
    if (r != -ECONNREFUSED)
        return r;
    if (unlink(path) < 0 && errno != ENOENT)
        return -errno;
    log_info("removed stale socket %s (its daemon is gone)", path);
    return 0;
}

/* Creates the socket's directory 0700 when missing; warns when an existing one is not ours. */
static int prepare_socket_dir(const char *path)
{
    _cleanup_free_ char *copy = strdup(path);
    struct stat st;
    const char *dir;
    int r;

    if (!copy)
        return -ENOMEM;
    dir = dirname(copy);
    r = mkdir_p(dir, 0700);
    if (r < 0)
        return log_error_errno(r, "cannot create socket directory %s: %m", dir);
    if (stat(dir, &st) < 0)
        return log_error_errno(-errno, "cannot stat socket directory %s: %m", dir);
    if (st.st_uid != geteuid() && !(st.st_mode & S_ISVTX))
        log_warning("socket directory %s belongs to uid %u, not to us", dir, (unsigned)st.st_uid);
    return 0;
}

/* socket(), fchmod 0600, bind under umask 0177, listen; returns the fd. */
static int bind_socket(const char *path, struct stat *ret_st)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    mode_t old_umask;
    int fd, r;

    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -errno;
    strncpy(sa.sun_path, path, sizeof(sa.sun_path) - 1);
    /* Linux takes the new inode's mode from the socket's own inode minus the umask: either
     * alone gives 0600; both guard against the other being ineffective somewhere. */
    if (fchmod(fd, 0600) < 0)
        log_debug_errno(-errno, "fchmod on the unbound socket failed: %m");
    old_umask = umask(0177);
    r = bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ? -errno : 0;
    umask(old_umask);
    if (r == 0 && listen(fd, LISTEN_BACKLOG) < 0)
        r = -errno;
    if (r == 0 && lstat(path, ret_st) < 0)
        r = -errno;
    if (r < 0) {
        close(fd);
        return r;
    }
    if ((ret_st->st_mode & 07777) != 0600)
        log_warning("socket %s was created with mode %04o, expected 0600", path,
                    (unsigned)(ret_st->st_mode & 07777));
    return fd;
}

int server_listen_path(struct server *s, const char *path)
{
    _cleanup_free_ char *lock_path = NULL;
    struct stat st;
    pid_t holder = 0;
    int fd, r;

    if (strlen(path) >= sizeof(((struct sockaddr_un *)0)->sun_path))
        return log_error_errno(-ENAMETOOLONG, "socket path %s is too long for a Unix socket", path);
    r = prepare_socket_dir(path);
    if (r < 0)
        return r;

    if (asprintf(&lock_path, "%s.lock", path) < 0) {
        lock_path = NULL;
        return -ENOMEM;
    }
    r = lockfile_acquire(lock_path, &holder);
    if (r == -EBUSY) {
        if (holder > 0)
            return log_error_errno(-EADDRINUSE,
                                   "socket %s is in use by another coarchd (pid %d); stop it "
                                   "first or choose another socket with --socket/COARCH_SOCKET",
                                   path, (int)holder);
        return log_error_errno(-EADDRINUSE, "socket %s is in use by another coarchd", path);
    }
    if (r < 0)
        return log_error_errno(r, "cannot lock %s: %m", lock_path);
    s->sock_lock_fd = r;

    r = remove_stale_socket(path);
    if (r == -EADDRINUSE)
        return log_error_errno(r,
                               "another process is listening on %s; refusing to replace "
                               "its socket",
                               path);
    if (r == -EEXIST)
        return log_error_errno(r, "%s exists and is not a socket; refusing to remove it", path);
    if (r < 0)
        return log_error_errno(r, "cannot check existing socket %s: %m", path);

    fd = bind_socket(path, &st);
    if (fd < 0)
        return log_error_errno(fd, "cannot listen on %s: %m", path);
    s->socket_path = strdup(path);
    if (!s->socket_path) {
        close(fd);
        unlink(path);
        return -ENOMEM;
    }
    s->bound_by_us = true;
    s->sock_dev = st.st_dev;
    s->sock_ino = st.st_ino;

    r = listener_start(s, fd);
    if (r < 0)
        return log_error_errno(r, "cannot listen on %s: %s", path, uv_strerror(r));
    return 0;
}

int server_listen_fd(struct server *s, int fd)
{
    struct sockaddr_un sa = {0};
    socklen_t len = sizeof(sa);
    int flags, r;

    /* Whatever systemd handed us, we must not block on it, and children must not inherit it. */
    flags = fcntl(fd, F_GETFL);
    if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0 ||
        fcntl(fd, F_SETFD, FD_CLOEXEC) < 0) {
        r = -errno;
        close(fd);
        return log_error_errno(r, "cannot prepare the socket-activated fd %d: %m", fd);
    }
    if (getsockname(fd, (struct sockaddr *)&sa, &len) == 0 && len > sizeof(sa_family_t) &&
        sa.sun_path[0])
        s->socket_path = strndup(sa.sun_path, sizeof(sa.sun_path));
    else
        s->socket_path = strdup("(socket-activated)");
    if (!s->socket_path) {
        close(fd);
        return -ENOMEM;
    }
    r = listener_start(s, fd);
    if (r < 0)
        return log_error_errno(r, "cannot listen on the socket-activated fd: %s", uv_strerror(r));
    return 0;
}

/* Unlinks our socket, but only if the path still is the inode we bound. */
static void remove_socket_file(struct server *s)
{
    struct stat st;

    if (!s->bound_by_us || !s->socket_path)
        return;
    s->bound_by_us = false;
    if (lstat(s->socket_path, &st) < 0)
        return;
    if (st.st_dev != s->sock_dev || st.st_ino != s->sock_ino) {
        log_warning("socket %s was replaced by someone else; leaving it", s->socket_path);
        return;
    }
    if (unlink(s->socket_path) < 0)
        log_warning_errno(-errno, "cannot remove socket %s: %m", s->socket_path);
}

static void listener_close_cb(uv_handle_t *handle)
{
    struct server *s = handle->data;

    s->handles_open--;
}

void server_stop_accepting(struct server *s)
{
    if (s->listener_init && !s->listener_closed) {
        s->listener_closed = true;
        uv_close((uv_handle_t *)&s->listener, listener_close_cb);
    }
    /* After the listener is closed nobody can connect, so the path can go; the lock goes
     * last, so a new daemon starting now finds either our lock or no socket. */
    remove_socket_file(s);
    if (s->sock_lock_fd >= 0) {
        close(s->sock_lock_fd);
        s->sock_lock_fd = -1;
    }
}
