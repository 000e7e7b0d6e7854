#ifndef OPENSHELL_SB_LANDLOCK_H
#define OPENSHELL_SB_LANDLOCK_H
/*
 * sb_landlock: filesystem access rules for the agent (Linux Landlock LSM).
 *
 * We use the highest ABI the kernel offers (sb_landlock_abi()) and handle
 * every filesystem right that ABI knows, so nothing the kernel can restrict
 * is silently left open; from ABI 6 on, signals and abstract unix sockets are
 * also scoped to the sandbox. Network rights (ABI 4+) are not handled: the
 * agent's network namespace already has nothing but loopback.
 *
 * Two phases, as the kernel intends: sb_landlock_prepare() runs in the
 * supervisor (with its privileges, after the filesystem view is built): it
 * opens every path with O_PATH, classifies it with fstat on that same fd (a
 * file gets only file rights), adds it to a new ruleset and closes it again,
 * so there is no window between checking and using a path.
 * sb_landlock_enforce() runs in the agent child right before seccomp and
 * execve: one landlock_restrict_self(2) on the prepared ruleset fd.
 *
 * The ruleset fd is owned by the caller of prepare (O_CLOEXEC).
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "err.h"

/* Landlock access rights (stable kernel ABI values, defined here so that
 * older kernel headers do not limit what we can ask for). */
#define SB_LL_EXECUTE (1ULL << 0)
#define SB_LL_WRITE_FILE (1ULL << 1)
#define SB_LL_READ_FILE (1ULL << 2)
#define SB_LL_READ_DIR (1ULL << 3)
#define SB_LL_REMOVE_DIR (1ULL << 4)
#define SB_LL_REMOVE_FILE (1ULL << 5)
#define SB_LL_MAKE_CHAR (1ULL << 6)
#define SB_LL_MAKE_DIR (1ULL << 7)
#define SB_LL_MAKE_REG (1ULL << 8)
#define SB_LL_MAKE_SOCK (1ULL << 9)
#define SB_LL_MAKE_FIFO (1ULL << 10)
#define SB_LL_MAKE_BLOCK (1ULL << 11)
#define SB_LL_MAKE_SYM (1ULL << 12)
#define SB_LL_REFER (1ULL << 13)              /* ABI 2 */
#define SB_LL_TRUNCATE (1ULL << 14)           /* ABI 3 */
#define SB_LL_IOCTL_DEV (1ULL << 15)          /* ABI 5 */
#define SB_LL_SCOPE_ABSTRACT_UNIX (1ULL << 0) /* ABI 6 */
#define SB_LL_SCOPE_SIGNAL (1ULL << 1)        /* ABI 6 */

/* Rights a rule may grant on a non-directory. */
#define SB_LL_FILE_RIGHTS                                                                          \
    (SB_LL_EXECUTE | SB_LL_WRITE_FILE | SB_LL_READ_FILE | SB_LL_TRUNCATE | SB_LL_IOCTL_DEV)

/* The kernel's Landlock ABI version (>= 1), or -ENOSYS (not built in),
 * -EOPNOTSUPP (built in but disabled at boot), -EPERM (blocked, e.g. by an
 * outer seccomp filter). Cached after the first call. */
int sb_landlock_abi(void);

/* Every filesystem right ABI knows (what the ruleset handles). */
uint64_t sb_landlock_handled(int abi);
/* The scopes ABI knows (0 below ABI 6). */
uint64_t sb_landlock_scoped(int abi);
/* Rights of a read-only rule (execute, read files, list directories) and of
 * a read-write rule (everything handled). */
uint64_t sb_landlock_ro_rights(int abi);
uint64_t sb_landlock_rw_rights(int abi);

/* Append rights as "execute,read_file,..." to OUT. */
void sb_landlock_rights_str(uint64_t rights, struct buf *out);
void sb_landlock_scopes_str(uint64_t scopes, struct buf *out);

struct sb_ll_path {
    const char *path; /* absolute path in the sandbox view */
    bool rw;
    bool baseline; /* added by us, not by the policy: a missing one is skipped quietly */
};

/*
 * Build a ruleset for ABI with N PATHS. A path that does not exist is
 * skipped (logged at debug level for baseline paths, warned otherwise); with
 * HARD any path that cannot be opened is an error. If no path at all could
 * be added, fails with -ENOENT (an empty ruleset would deny everything, and
 * is never what the policy meant). REPORT (may be NULL) gets one line per
 * path: "  rw /sandbox: execute,..." or "  skipped /app: No such file...".
 * Returns the ruleset fd (>= 0) or -errno with E set.
 */
int sb_landlock_prepare(int abi, const struct sb_ll_path *paths, size_t n, bool hard,
                        struct buf *report, struct err *e);

/* landlock_restrict_self(RULESET_FD). No allocation; safe after fork.
 * Requires no_new_privs. Returns 0 or -errno. */
int sb_landlock_enforce(int ruleset_fd);

#endif
