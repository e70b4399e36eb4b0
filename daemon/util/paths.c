/*
 * paths.c - see paths.h.
 */
#include "paths.h"

#include "macro.h"

#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>

static const char *env_nonempty(const char *name)
{
    const char *v = getenv(name);

    return v && v[0] ? v : NULL;
}

char *path_join(const char *a, const char *b)
{
    size_t la = strlen(a);
    char *r;

    while (la > 1 && a[la - 1] == '/')
        la--;
    while (b[0] == '/')
        b++;
    if (asprintf(&r, "%.*s/%s", (int)la, a, b) < 0)
        return NULL;
    return r;
}

static int check_socket_len(char *p, char **ret_path)
{
    if (strlen(p) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
        free(p);
        return -ENAMETOOLONG;
    }
    *ret_path = p;
    return 0;
}

int coarch_socket_path(char **ret_path)
{
    const char *v = env_nonempty("COARCH_SOCKET");
    char *p;

    if (v) {
        p = strdup(v);
    } else if ((v = env_nonempty("XDG_RUNTIME_DIR"))) {
        p = path_join(v, "coarch/coarchd.sock");
    } else {
        char run[64];
        struct stat st;

        snprintf(run, sizeof(run), "/run/user/%u", (unsigned)getuid());
        if (stat(run, &st) == 0 && S_ISDIR(st.st_mode) && st.st_uid == getuid()) {
            p = path_join(run, "coarch/coarchd.sock");
        } else {
            const char *tmp = env_nonempty("TMPDIR");
            if (asprintf(&p, "%s/coarch-%u/coarchd.sock", tmp ? tmp : "/tmp", (unsigned)getuid()) <
                0)
                p = NULL;
        }
    }
    if (!p)
        return -ENOMEM;
    return check_socket_len(p, ret_path);
}

int coarch_data_dir(char **ret_path)
{
    const char *v;
    char *p;

    if ((v = env_nonempty("COARCH_DATA_DIR")))
        p = strdup(v);
    else if ((v = env_nonempty("XDG_DATA_HOME")))
        p = path_join(v, "coarch");
    else if ((v = env_nonempty("HOME")))
        p = path_join(v, ".local/share/coarch");
    else
        return -ENOENT;
    if (!p)
        return -ENOMEM;
    *ret_path = p;
    return 0;
}

int coarch_models_dir(char **ret_path)
{
    _cleanup_free_ char *d = NULL;
    char *p;
    int r;

    r = coarch_data_dir(&d);
    if (r < 0)
        return r;
    p = path_join(d, "models");
    if (!p)
        return -ENOMEM;
    *ret_path = p;
    return 0;
}

int mkdir_p(const char *path, mode_t mode)
{
    _cleanup_free_ char *p = strdup(path);
    size_t n;

    if (!p)
        return -ENOMEM;
    n = strlen(p);
    for (size_t i = 1; i <= n; i++) {
        if (p[i] != '/' && p[i] != '\0')
            continue;
        char c = p[i];
        p[i] = '\0';
        if (mkdir(p, mode) < 0 && errno != EEXIST)
            return -errno;
        p[i] = c;
    }
    return 0;
}
