#ifndef OPENSHELL_SB_PROC_H
#define OPENSHELL_SB_PROC_H
/*
 * sb_proc: per-process hardening of the agent, run in the freshly forked
 * child between fork and execve (single-threaded, so these may allocate, but
 * they never log: a failing step returns -errno and the caller reports it).
 *
 * Order (the caller's): close inherited fds, rlimits, sb_proc_drop_privs()
 * (supplementary groups, gid, capability bounding set, uid, effective/
 * permitted/inheritable/ambient capabilities, each verified), no_new_privs,
 * then Landlock and seccomp. The environment is built beforehand, in the
 * supervisor, by sb_env_build().
 */
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "buf.h"

/* Close every fd >= 3 except the KEEP ones (N of them; they stay open and
 * keep their O_CLOEXEC flag). Returns 0 or -errno. */
int sb_proc_close_fds(const int *keep, size_t n);

/* Core dumps off (RLIMIT_CORE 0/0) and the process count bounded
 * (RLIMIT_NPROC soft = hard = min(current hard, NPROC); NPROC 0 leaves it).
 * Returns 0 or -errno. */
int sb_proc_rlimits(unsigned long nproc);

/*
 * Become UID:GID for good. SET_GROUPS false means setgroups(2) is not
 * permitted (an unprivileged user namespace): supplementary groups are then
 * left as the kernel maps them. Drops the whole capability bounding set
 * (fail closed: a residue aborts), switches gid and uid with setres*id,
 * clears all remaining capabilities (also when the uid did not change, as in
 * a user namespace), and verifies that uid 0 cannot be regained.
 * Returns 0 or -errno; on failure *STEP names the step that failed.
 */
int sb_proc_drop_privs(uid_t uid, gid_t gid, bool set_groups, const char **step);

/* prctl(PR_SET_NO_NEW_PRIVS). Returns 0 or -errno. */
int sb_proc_no_new_privs(void);

/*
 * The agent's environment: the allow-listed variables of HOST_ENV (PATH,
 * TERM, LANG, LANGUAGE, LC_*, TZ, COLORTERM, NO_COLOR), then HOME, USER,
 * LOGNAME, PWD and OPENSHELL_SANDBOX=1, then the N_EXTRA "K=V" strings of
 * EXTRA (later entries win). PATH gets a default when absent. Returns a
 * NULL-terminated heap array of heap strings: free with sb_env_free().
 */
char **sb_env_build(char *const *host_env, const char *const *extra, size_t n_extra,
                    const char *home, const char *user);
void sb_env_free(char **env);
/* Whether "K=V" is well formed (K a non-empty name of [A-Za-z0-9_], not
 * starting with a digit). */
bool sb_env_valid(const char *kv);

#endif
