/*
 * lockfile.c - see lockfile.h.
 */
#include "lockfile.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "macro.h"

static pid_t lockfile_read_pid(int fd)
{
    char buf[32];
    ssize_t n;
    long v;
    char *end;

    n = pread(fd, buf, sizeof(buf) - 1, 0);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    errno = 0;
    v = strtol(buf, &end, 10);
    if (errno || end == buf || v <= 0 || v > 0x7fffffff)
        return 0;
    return (pid_t)v;
}

int lockfile_acquire(const char *path, pid_t *ret_holder)
{
    _cleanup_close_ int fd = -1;
    char buf[32];
    ssize_t w;
    int n;

    fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return -errno;
    if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        int r = errno == EWOULDBLOCK ? -EBUSY : -errno;

        if (r == -EBUSY && ret_holder)
            *ret_holder = lockfile_read_pid(fd);
        return r;
    }
    n = snprintf(buf, sizeof(buf), "%d\n", (int)getpid());
    if (ftruncate(fd, 0) < 0)
        return -errno;
    w = pwrite(fd, buf, (size_t)n, 0);
    if (w < 0)
        return -errno;
    if (w != n)
        return -EIO;
    return TAKE_FD(fd);
}
