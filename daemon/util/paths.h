/*
 * paths.h - where coarch keeps its socket and data, shared by coarchd and coarchctl so both
 * always agree.
 *
 * Socket: $COARCH_SOCKET, else $XDG_RUNTIME_DIR/coarch/coarchd.sock, else
 *         /run/user/<uid>/coarch/coarchd.sock when that directory exists and is ours, else
 *         $TMPDIR (or /tmp)/coarch-<uid>/coarchd.sock.
 * Data:   $COARCH_DATA_DIR, else $XDG_DATA_HOME/coarch, else $HOME/.local/share/coarch.
 *
 * All functions return 0 and a malloc'd string in *ret (caller frees), -ENOENT when no location
 * can be derived (no HOME for the data dir), -ENAMETOOLONG when a socket path does not fit in
 * sockaddr_un, or -ENOMEM.
 */
#ifndef COARCH_UTIL_PATHS_H
#define COARCH_UTIL_PATHS_H

#include <sys/types.h>

int coarch_socket_path(char **ret_path);
int coarch_data_dir(char **ret_path);
/* $COARCH_DATA_DIR/models or the default data dir's models/. */
int coarch_models_dir(char **ret_path);

/* mkdir -p with `mode` for every directory created; existing ones are left as they are. */
int mkdir_p(const char *path, mode_t mode);

/* Join two path parts with exactly one '/'; NULL on ENOMEM. */
char *path_join(const char *a, const char *b);

#endif
