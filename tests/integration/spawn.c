/*
 * spawn.c - see spawn.h.
 */
#include "spawn.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "client.h"

extern char **environ;

#define MAX_TRACKED 256

static pid_t tracked_pids[MAX_TRACKED];
static char *tracked_dirs[MAX_TRACKED];
static bool atexit_installed;

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    if (flag == FTW_DP)
        rmdir(path);
    else
        unlink(path);
    return 0;
}

static void spawn_cleanup(void)
{
    for (size_t i = 0; i < MAX_TRACKED; i++)
        if (tracked_pids[i] > 0) {
            kill(tracked_pids[i], SIGKILL);
            waitpid(tracked_pids[i], NULL, 0);
            tracked_pids[i] = 0;
        }
    /* COARCH_TEST_KEEP=1 keeps the directories (and their coarchd.log) for a post-mortem. */
    if (getenv("COARCH_TEST_KEEP"))
        return;
    for (size_t i = 0; i < MAX_TRACKED; i++)
        if (tracked_dirs[i]) {
            /* A test may have handed a directory to another uid or made it read-only. */
            chmod(tracked_dirs[i], 0700);
            nftw(tracked_dirs[i], rm_entry, 16, FTW_DEPTH | FTW_PHYS);
            free(tracked_dirs[i]);
            tracked_dirs[i] = NULL;
        }
}

static void install_atexit(void)
{
    if (!atexit_installed) {
        atexit(spawn_cleanup);
        atexit_installed = true;
    }
}

void tspawn_track(pid_t pid)
{
    install_atexit();
    for (size_t i = 0; i < MAX_TRACKED; i++)
        if (tracked_pids[i] == 0) {
            tracked_pids[i] = pid;
            return;
        }
}

void tspawn_untrack(pid_t pid)
{
    for (size_t i = 0; i < MAX_TRACKED; i++)
        if (tracked_pids[i] == pid)
            tracked_pids[i] = 0;
}

void tspawn_track_dir(const char *dir)
{
    install_atexit();
    for (size_t i = 0; i < MAX_TRACKED; i++)
        if (!tracked_dirs[i]) {
            tracked_dirs[i] = strdup(dir);
            return;
        }
}

const char *tspawn_coarchd(void)
{
    const char *p = getenv("COARCHD");

    if (!p || !p[0] || access(p, X_OK) < 0)
        return NULL;
    return p;
}

int tdaemon_init(struct tdaemon *d)
{
    const char *tmp = getenv("TMPDIR");

    memset(d, 0, sizeof(*d));
    snprintf(d->dir, sizeof(d->dir), "%s/coarchd-test-XXXXXX", tmp && tmp[0] ? tmp : "/tmp");
    if (!mkdtemp(d->dir))
        return -errno;
    tspawn_track_dir(d->dir);
    snprintf(d->socket, sizeof(d->socket), "%s/run/coarchd.sock", d->dir);
    snprintf(d->data_dir, sizeof(d->data_dir), "%s/data", d->dir);
    snprintf(d->log, sizeof(d->log), "%s/coarchd.log", d->dir);
    return 0;
}

static bool env_filtered(const char *entry)
{
    static const char *const prefixes[] = {"COARCH_", "XDG_RUNTIME_DIR=", "LISTEN_",
                                           "NOTIFY_SOCKET=", "WATCHDOG_"};

    for (size_t i = 0; i < sizeof(prefixes) / sizeof(prefixes[0]); i++)
        if (strncmp(entry, prefixes[i], strlen(prefixes[i])) == 0)
            return true;
    return false;
}

/* Removes every entry for the key of `kv` ("KEY=..." or "KEY"). */
static void env_remove(char **env, size_t *n, const char *kv)
{
    size_t klen = strcspn(kv, "=");

    for (size_t i = 0; i < *n;)
        if (strncmp(env[i], kv, klen) == 0 && env[i][klen] == '=') {
            env[i] = env[--*n];
        } else {
            i++;
        }
}

static void fmt_pid(char *dst, pid_t pid)
{
    char digits[16];
    int n = 0;

    do {
        digits[n++] = (char)('0' + pid % 10);
        pid /= 10;
    } while (pid > 0);
    while (n > 0)
        *dst++ = digits[--n];
    *dst = '\0';
}

int tdaemon_spawn(struct tdaemon *d, const struct tspawn_opts *o)
{
    static const struct tspawn_opts none = {.listen_fd = -1};
    static char listen_pid[64];
    char env_socket[PATH_MAX + 16], env_data[PATH_MAX + 16];
    const char *coarchd = tspawn_coarchd();
    size_t n_env = 0, n_args = 0, cap;
    char **env, **argv;
    pid_t parent = getpid(), pid;
    int log_fd;

    if (!o)
        o = &none;
    if (!coarchd)
        return -ENOENT;
    for (cap = 0; environ[cap]; cap++)
        ;
    for (const char *const *e = o->env; e && *e; e++)
        cap++;
    cap += 8;
    env = calloc(cap, sizeof(*env));
    for (const char *const *a = o->args; a && *a; a++)
        n_args++;
    argv = calloc(n_args + 2, sizeof(*argv));
    if (!env || !argv) {
        free(env);
        free(argv);
        return -ENOMEM;
    }

    for (char **e = environ; *e; e++)
        if (!env_filtered(*e))
            env[n_env++] = *e;
    env[n_env++] = (char *)"COARCH_LOG_LEVEL=debug";
    if (!o->no_paths) {
        snprintf(env_socket, sizeof(env_socket), "COARCH_SOCKET=%s", d->socket);
        snprintf(env_data, sizeof(env_data), "COARCH_DATA_DIR=%s", d->data_dir);
        env[n_env++] = env_socket;
        env[n_env++] = env_data;
    }
    for (const char *const *e = o->env; e && *e; e++) {
        env_remove(env, &n_env, *e);
        if (strchr(*e, '='))
            env[n_env++] = (char *)*e;
    }
    if (o->listen_fd >= 0) {
        env[n_env++] = (char *)"LISTEN_FDS=1";
        strcpy(listen_pid, "LISTEN_PID=");
        env[n_env++] = listen_pid; /* the digits are written in the child */
    }
    env[n_env] = NULL;

    argv[0] = (char *)coarchd;
    for (size_t i = 0; i < n_args; i++)
        argv[i + 1] = (char *)o->args[i];

    log_fd = open(d->log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (log_fd < 0) {
        free(env);
        free(argv);
        return -errno;
    }
    pid = fork();
    if (pid < 0) {
        int r = -errno;

        close(log_fd);
        free(env);
        free(argv);
        return r;
    }
    if (pid == 0) {
        int null_fd = open("/dev/null", O_RDONLY);

        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(127);
        dup2(null_fd, 0);
        dup2(log_fd, 1);
        dup2(log_fd, 2);
        if (o->listen_fd >= 0) {
            if (o->listen_fd == 3)
                fcntl(3, F_SETFD, 0);
            else
                dup2(o->listen_fd, 3);
            fmt_pid(listen_pid + strlen("LISTEN_PID="), getpid());
        }
        if (o->cgroup_procs) {
            char self[16];
            int cg_fd = open(o->cgroup_procs, O_WRONLY | O_CLOEXEC);

            fmt_pid(self, getpid());
            if (cg_fd < 0 || write(cg_fd, self, strlen(self)) != (ssize_t)strlen(self))
                _exit(126);
            close(cg_fd);
        }
        execve(coarchd, argv, env);
        _exit(127);
    }
    close(log_fd);
    free(env);
    free(argv);
    d->pid = pid;
    d->status = 0;
    tspawn_track(pid);
    return 0;
}

static uint64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Reaps the child if it has exited: true when it is gone. */
static bool reap(struct tdaemon *d, bool block)
{
    int status;
    pid_t r;

    if (d->pid <= 0)
        return true;
    r = waitpid(d->pid, &status, block ? 0 : WNOHANG);
    if (r == d->pid) {
        tspawn_untrack(d->pid);
        d->status = status;
        d->pid = 0;
        return true;
    }
    return false;
}

int tdaemon_wait_socket(struct tdaemon *d, const char *path, int timeout_ms)
{
    uint64_t deadline = now_ms() + (uint64_t)timeout_ms;

    for (;;) {
        struct tclient *c;

        if (tclient_connect(path, &c) == 0) {
            tclient_free(c);
            return 0;
        }
        if (reap(d, false))
            return -ECHILD;
        if (now_ms() >= deadline)
            return -ETIMEDOUT;
        usleep(5000);
    }
}

int tdaemon_start(struct tdaemon *d, const struct tspawn_opts *o)
{
    int r = tdaemon_init(d);

    if (r < 0)
        return r;
    r = tdaemon_spawn(d, o);
    if (r < 0)
        return r;
    r = tdaemon_wait_socket(d, d->socket, 10000);
    if (r < 0)
        tdaemon_dump_log(d);
    return r;
}

static int exit_code(int status)
{
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    if (WIFSIGNALED(status))
        return 128 + WTERMSIG(status);
    return 255;
}

int tdaemon_wait_exit(struct tdaemon *d, int timeout_ms)
{
    uint64_t deadline = now_ms() + (uint64_t)timeout_ms;

    while (!reap(d, false)) {
        if (now_ms() >= deadline)
            return -ETIMEDOUT;
        usleep(5000);
    }
    return exit_code(d->status);
}

int tdaemon_signal(struct tdaemon *d, int sig)
{
    if (d->pid <= 0)
        return -ESRCH;
    return kill(d->pid, sig) < 0 ? -errno : 0;
}

void tdaemon_kill(struct tdaemon *d)
{
    if (d->pid <= 0)
        return;
    kill(d->pid, SIGKILL);
    reap(d, true);
}

char *tdaemon_log(const struct tdaemon *d)
{
    FILE *f = fopen(d->log, "re");
    char *buf = NULL;
    size_t len = 0;

    if (f) {
        FILE *m = open_memstream(&buf, &len);
        char chunk[4096];
        size_t n;

        while (m && (n = fread(chunk, 1, sizeof(chunk), f)) > 0)
            fwrite(chunk, 1, n, m);
        if (m)
            fclose(m);
        fclose(f);
    }
    return buf ? buf : strdup("");
}

bool tdaemon_log_wait(const struct tdaemon *d, const char *needle, int timeout_ms)
{
    uint64_t deadline = now_ms() + (uint64_t)timeout_ms;

    for (;;) {
        char *log = tdaemon_log(d);
        bool found = log && strstr(log, needle);

        free(log);
        if (found)
            return true;
        if (now_ms() >= deadline)
            return false;
        usleep(10000);
    }
}

void tdaemon_dump_log(const struct tdaemon *d)
{
    char *log = tdaemon_log(d);

    fprintf(stderr, "---- coarchd log (%s) ----\n%s---- end of log ----\n", d->log, log);
    free(log);
}
