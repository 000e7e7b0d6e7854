#ifndef OPENSHELL_SB_CGROUP_H
#define OPENSHELL_SB_CGROUP_H
/*
 * sb_cgroup: a pids cgroup per sandbox (root only), so a fork bomb is bounded
 * per sandbox rather than per uid (RLIMIT_NPROC counts every process of the
 * agent's uid on the host, other sandboxes included).
 *
 * sb_cgroup_enter() creates "openshell-<pid>" beside the caller's own pids
 * cgroup (cgroup v1 "pids" hierarchy, or cgroup v2 when the pids controller
 * is available there), sets pids.max and moves the caller into it, so every
 * process of the sandbox is counted (the cgroup namespace made afterwards is
 * rooted there). sb_cgroup_leave() moves the caller back and removes the
 * directory; the sandbox's processes are gone by then (PID 1's exit waits
 * for its namespace to empty). Both are best effort: on any failure the
 * caller falls back to RLIMIT_NPROC.
 */
#include <stddef.h>

#include "err.h"

/* Returns 0 with the cgroup directory in DIR[SIZE] (and the one to return
 * to in PARENT[SIZE]), or -errno with E set. */
int sb_cgroup_enter(unsigned long max, char *dir, char *parent, size_t size, struct err *e);
/* Undo sb_cgroup_enter. Returns 0 or -errno. */
int sb_cgroup_leave(const char *dir, const char *parent);

#endif
