#ifndef OPENSHELL_SB_MOUNT_H
#define OPENSHELL_SB_MOUNT_H
/*
 * sb_mount: the agent's filesystem view, built in a new mount namespace by
 * the supervisor (PID 1 of the sandbox) before anything else runs there.
 *
 *   /            a read-only tmpfs holding read-only, nosuid, nodev recursive
 *                binds of every top-level entry of ROOT (the host root or
 *                --rootfs DIR); symlinks (merged /usr) are recreated
 *   /tmp         a private tmpfs (1777, nosuid, nodev)
 *   /proc        a fresh procfs of the sandbox's pid namespace
 *   /dev         a read-only tmpfs with binds of null, zero, full, random,
 *                urandom and tty, a private devpts at /dev/pts (ptmx ->
 *                pts/ptmx), a tmpfs /dev/shm and the fd/stdin/... links
 *   /sandbox     WORKDIR bound read-write (nosuid, nodev)
 *
 * Nothing is ever created on the host: mount points live in tmpfs. The old
 * root is detached at the end (pivot_root + MNT_DETACH), so no host path is
 * reachable except through the binds above. Runs as root or inside a user
 * namespace (then device nodes are binds, never mknod, and mount flags the
 * host locked are kept). Setup code: returns -errno with E naming the step.
 */
#include <stdbool.h>

#include "err.h"

struct sb_mount_spec {
    const char *root;    /* absolute, canonical host path of the root ("/" for the host) */
    const char *workdir; /* absolute, canonical host path bound at /sandbox */
    bool userns;         /* running in a user namespace we created */
};

/* Build the view and pivot into it; on return cwd is "/sandbox". Must run
 * in a private mount namespace (CLONE_NEWNS) with CAP_SYS_ADMIN there, and
 * in the new pid namespace (for /proc). */
int sb_mount_build(const struct sb_mount_spec *spec, struct err *e);

#endif
