/*
 * methods-core.h - the foundation methods of PROTOCOL.md section 7: ping, version, status,
 * shutdown and subscribe, plus debug.sleep and debug.notify, which answer only when
 * COARCH_DEBUG_METHODS is on (tests use them to hold requests in flight and to drive
 * notifications before real jobs exist).
 *
 * Threading: loop thread only.
 */
#ifndef COARCH_RPC_METHODS_CORE_H
#define COARCH_RPC_METHODS_CORE_H

struct daemon;
struct rpc;

/* Registers them all on rpc, with d as their context.  Returns 0 or -ENOMEM. */
int methods_core_register(struct rpc *rpc, struct daemon *d);

#endif
