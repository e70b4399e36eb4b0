/*
 * autostart.c - see autostart.h.
 */
#include "autostart.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "macro.h"
#include "paths.h"

#define LOG_TAIL_LINES 15
#define LOG_TAIL_BYTES (16u * 1024)

static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000};

    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

static bool is_executable(const char *path)
{
    struct stat st;

    return stat(path, &st) == 0 && S_ISREG(st.st_mode) && access(path, X_OK) == 0;
}

int autostart_find_daemon(char **ret_path)
{
    static const char *const beside[] = {"coarchd", "../daemon/coarchd"};
    char self[PATH_MAX];
    const char *env = getenv("COARCHD");
    ssize_t n;
    char *p;

    if (env && env[0]) {
        p = strdup(env);
        goto out;
    }
    n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n > 0) {
        self[n] = '\0';
        char *slash = strrchr(self, '/');
        if (slash) {
            *slash = '\0';
            for (size_t i = 0; i < ELEMENTSOF(beside); i++) {
                p = path_join(self, beside[i]);
                if (!p)
                    return -ENOMEM;
                if (is_executable(p))
                    goto out;
                free(p);
            }
        }
    }
    p = strdup("coarchd");
out:
    if (!p)
        return -ENOMEM;
    *ret_path = p;
    return 0;
}

/* The daemon runs in "/", so relative paths we hand it must be made absolute first. */
static char *absolute(const char *path)
{
    char cwd[PATH_MAX];

    if (path[0] == '/' || !getcwd(cwd, sizeof(cwd)))
        return strdup(path);
    return path_join(cwd, path);
}

static void absolutize_env(const char *name)
{
    const char *v = getenv(name);
    char *a;

    if (!v || !v[0] || v[0] == '/')
        return;
    a = absolute(v);
    if (a)
        setenv(name, a, 1);
    free(a);
}

/*
 * In the forked child: detach and exec the daemon.  An exec failure is reported to the parent
 * through err_fd (close-on-exec, so a successful exec reads as end-of-file there).
 */
static _noreturn_ void child_exec(const char *daemon, const struct autostart_options *opt,
                                  int log_fd, int err_fd)
{
    static const int sigs[] = {SIGPIPE, SIGINT, SIGTERM, SIGHUP, SIGCHLD, SIGQUIT};
    const char *argv[4] = {daemon, NULL, NULL, NULL};
    sigset_t none;
    int null_fd, e;

    (void)setsid();
    null_fd = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (null_fd >= 0)
        (void)dup2(null_fd, STDIN_FILENO);
    if (log_fd < 0)
        log_fd = null_fd;
    if (log_fd >= 0) {
        (void)dup2(log_fd, STDOUT_FILENO);
        (void)dup2(log_fd, STDERR_FILENO);
    }
    for (size_t i = 0; i < ELEMENTSOF(sigs); i++)
        signal(sigs[i], SIG_DFL);
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    absolutize_env("COARCH_SOCKET");
    absolutize_env("COARCH_DATA_DIR");
    /* Keep no directory busy: a daemon started from a mount point would pin it. */
    if (chdir("/") < 0) {
        /* harmless: paths handed over are absolute */
    }
    if (opt->pass_socket) {
        argv[1] = "--socket";
        argv[2] = opt->socket_path;
    }
    execvp(daemon, (char *const *)argv);
    e = errno;
    if (write(err_fd, &e, sizeof(e)) < 0) {
        /* nothing left to tell anyone */
    }
    _exit(127);
}

/* Forks and execs the daemon.  0 and *ret_pid once exec succeeded, else -errno of exec/fork. */
static int spawn(const char *daemon, const struct autostart_options *opt, int log_fd,
                 pid_t *ret_pid)
{
    int pipefd[2], e = 0, st;
    ssize_t n;
    pid_t pid = -1;

    if (pipe2(pipefd, O_CLOEXEC) < 0)
        return -errno;
    fflush(NULL); /* the child must not inherit (and later flush) our buffered output */
    pid = fork();
    if (pid < 0) {
        e = errno;
        close(pipefd[0]);
        close(pipefd[1]);
        return -e;
    }
    if (pid == 0) {
        close(pipefd[0]);
        child_exec(daemon, opt, log_fd, pipefd[1]);
    }
    close(pipefd[1]);
    do
        n = read(pipefd[0], &e, sizeof(e));
    while (n < 0 && errno == EINTR);
    close(pipefd[0]);
    if (n == (ssize_t)sizeof(e)) {
        (void)waitpid(pid, &st, 0);
        return -e;
    }
    *ret_pid = pid;
    return 0;
}

/* Prints the last lines the daemon wrote to its log after byte offset `from`. */
static void print_log_tail(const char *log_path, off_t from)
{
    char buf[LOG_TAIL_BYTES + 1];
    const char *start;
    struct stat st;
    ssize_t n;
    int fd, lines = 0;

    fd = open(log_path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    if (fstat(fd, &st) < 0 || st.st_size <= from) {
        fprintf(stderr, "  (%s has nothing new)\n", log_path);
        close(fd);
        return;
    }
    from = MAX(from, st.st_size - (off_t)LOG_TAIL_BYTES);
    n = pread(fd, buf, LOG_TAIL_BYTES, from);
    close(fd);
    if (n <= 0)
        return;
    while (n > 0 && buf[n - 1] == '\n')
        n--;
    buf[n] = '\0';
    start = buf + n;
    while (start > buf && lines < LOG_TAIL_LINES) {
        start--;
        if (*start == '\n' && ++lines == LOG_TAIL_LINES) {
            start++;
            break;
        }
    }
    fprintf(stderr, "last lines of %s:\n", log_path);
    for (const char *l = start; *l;) {
        const char *e = strchrnul(l, '\n');
        fprintf(stderr, "  | %.*s\n", (int)(e - l), l);
        l = *e ? e + 1 : e;
    }
}

/* One attempt: connect and ping.  0 and a connection when the daemon answered "pong". */
static int try_ping(const struct autostart_options *opt, int budget_ms, struct conn **ret_conn)
{
    struct proto_msg *resp = NULL;
    struct conn *c = NULL;
    int r;

    r = conn_connect(opt->socket_path, MIN(budget_ms, 1000), &c);
    if (r < 0)
        return r;
    conn_set_timeout(c, MAX(budget_ms, 1));
    r = conn_call(c, "ping", &resp);
    if (r >= 0 && proto_msg_get_error(resp, NULL, NULL, NULL) != 0)
        r = -EPROTO;
    proto_msg_free(resp);
    if (r < 0) {
        conn_free(c);
        return r;
    }
    conn_set_timeout(c, opt->timeout_ms);
    *ret_conn = c;
    return 0;
}

static int lock_autostart(const char *lock_path, int64_t deadline)
{
    int fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);

    if (fd < 0)
        return -errno;
    while (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        int e = errno;
        if ((e != EWOULDBLOCK && e != EINTR) || now_ms() >= deadline) {
            close(fd);
            return e == EWOULDBLOCK ? -ETIMEDOUT : -e;
        }
        sleep_ms(20);
    }
    return fd;
}

/* Waits for the started daemon to answer; explains a failure on stderr. */
static int wait_for_daemon(const struct autostart_options *opt, const char *daemon, pid_t pid,
                           const char *log_path, off_t log_from, int64_t deadline,
                           struct conn **ret_conn)
{
    int delay = 10, r, st;

    for (;;) {
        bool exited = waitpid(pid, &st, WNOHANG) == pid;

        /* Ping even after an exit: a daemon that lost a race to another one exits at once,
         * and the winner serves us just as well. */
        r = try_ping(opt, (int)MAX(deadline - now_ms(), 100), ret_conn);
        if (r >= 0) {
            if (!opt->quiet && !exited)
                fprintf(stderr, "coarchctl: started coarchd (pid %d), log: %s\n", (int)pid,
                        log_path);
            return 0;
        }
        if (exited) {
            if (WIFEXITED(st))
                fprintf(stderr,
                        "coarchctl: coarchd (%s) exited with status %d before answering"
                        " at %s\n",
                        daemon, WEXITSTATUS(st), opt->socket_path);
            else
                fprintf(stderr,
                        "coarchctl: coarchd (%s) was killed by signal %d before "
                        "answering at %s\n",
                        daemon, WTERMSIG(st), opt->socket_path);
            print_log_tail(log_path, log_from);
            return -ECHILD;
        }
        if (now_ms() >= deadline) {
            fprintf(stderr, "coarchctl: coarchd (%s, pid %d) did not answer at %s within %d s\n",
                    daemon, (int)pid, opt->socket_path, (opt->wait_ms + 999) / 1000);
            print_log_tail(log_path, log_from);
            return -ETIMEDOUT;
        }
        sleep_ms(delay);
        delay = MIN(delay * 2, 200);
    }
}

int autostart_daemon(const struct autostart_options *opt, struct conn **ret_conn)
{
    _cleanup_free_ char *data_dir = NULL, *log_path = NULL, *lock_path = NULL, *daemon = NULL;
    _cleanup_close_ int lock_fd = -1, log_fd = -1;
    int64_t deadline = now_ms() + opt->wait_ms;
    off_t log_from = 0;
    struct stat st;
    pid_t pid = -1;
    int r;

    r = autostart_find_daemon(&daemon);
    if (r < 0)
        return r;
    if (daemon[0] != '/' && strchr(daemon, '/')) {
        char *a = absolute(daemon);
        if (!a)
            return -ENOMEM;
        free(daemon);
        daemon = a;
    }

    r = coarch_data_dir(&data_dir);
    if (r >= 0)
        r = mkdir_p(data_dir, 0700);
    if (r < 0) {
        fprintf(stderr, "coarchctl: cannot use the data directory %s for the daemon's log: %s\n",
                data_dir ? data_dir : "(none: set COARCH_DATA_DIR or HOME)", strerror(-r));
        return r;
    }
    log_path = path_join(data_dir, "coarchd.log");
    lock_path = path_join(data_dir, "coarchd.autostart.lock");
    if (!log_path || !lock_path)
        return -ENOMEM;

    lock_fd = lock_autostart(lock_path, deadline);
    if (lock_fd < 0)
        log_debug("autostart lock %s: %s; starting without it", lock_path, strerror(-lock_fd));
    /* Whoever held the lock before us may have started the daemon already. */
    if (lock_fd >= 0 && try_ping(opt, 1000, ret_conn) >= 0)
        return 0;

    log_fd = open(log_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0600);
    if (log_fd < 0)
        fprintf(stderr, "coarchctl: cannot open %s (%s); the daemon's output is discarded\n",
                log_path, strerror(errno));
    else if (fstat(log_fd, &st) == 0)
        log_from = st.st_size;

    r = spawn(daemon, opt, log_fd, &pid);
    if (r < 0) {
        fprintf(stderr, "coarchctl: cannot run coarchd (%s): %s\n", daemon, strerror(-r));
        fprintf(stderr, "hint: set COARCHD to the daemon binary, or install coarchd on PATH\n");
        return r == -ENOENT || r == -EACCES ? -ENOENT : r;
    }
    return wait_for_daemon(opt, daemon, pid, log_path, log_from, deadline, ret_conn);
}
