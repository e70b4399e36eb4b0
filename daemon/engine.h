/*
 * engine.h - coarchd's service, wired together: the store, the search cache, the embedding
 * model (embed/embed-service.h), the memory governor on the loop (pressure/monitor.h), the job
 * queue and its worker (sched/jobs.h), and the RPC methods over them (rpc/methods-core.h for the
 * daemon's own, rpc/methods.h for the rest).  docs/architecture.md draws the whole picture.
 *
 * engine_new() builds the parts in dependency order, registers the methods and `status` keys,
 * and adds a stop hook: when the daemon begins stopping, sampling stops and the running job is
 * interrupted (it resumes at the next start); the daemon's stop sequence is held open until
 * the job worker has exited.
 *
 * Ownership: the engine owns every part; the methods borrow them through one struct
 * methods_env inside it.  Threading: loop thread only.
 */
#ifndef COARCH_DAEMON_ENGINE_H
#define COARCH_DAEMON_ENGINE_H

struct daemon;
struct engine;

/*
 * Reads the memory and model settings from the environment, opens the store in data_dir,
 * registers the methods, status keys and stop hook, and starts the job worker (which resumes
 * interrupted jobs).  The model loads lazily, on the first job or search.  Returns 0, -EINVAL
 * for a bad setting, or another negative errno (each logged, with the reason).
 */
int engine_new(struct daemon *d, const char *data_dir, struct engine **ret);
/* After daemon_run() returned.  Accepts NULL; returns NULL. */
struct engine *engine_free(struct engine *e);

#endif
