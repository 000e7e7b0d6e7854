/* proc.c: the agent's privilege drop, rlimits and environment (see include/sb_proc.h). */
#include "sb_proc.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "xfuncs.h"

#ifndef SYS_close_range
#define SYS_close_range 436
#endif
#define SB_CAP_VERSION_3 0x20080522
#define SB_PR_CAP_AMBIENT 47
#define SB_PR_CAP_AMBIENT_CLEAR_ALL 4

struct sb_cap_header {
    uint32_t version;
    int pid;
};
struct sb_cap_data {
    uint32_t effective, permitted, inheritable;
};

int
sb_proc_close_fds(const int *keep, size_t n)
{
    int lo = 3;

    /* close_range over the gaps between kept fds (sorted walk). */
    for (;;) {
        int next = -1;
        for (size_t i = 0; i < n; i++)
            if (keep[i] >= lo && (next < 0 || keep[i] < next))
                next = keep[i];
        if (next < 0) {
            if (syscall(SYS_close_range, lo, ~0U, 0) < 0)
                return -errno;
            return 0;
        }
        if (next > lo && syscall(SYS_close_range, lo, next - 1, 0) < 0)
            return -errno;
        lo = next + 1;
    }
}

int
sb_proc_rlimits(unsigned long nproc)
{
    struct rlimit rl = { 0, 0 };

    if (setrlimit(RLIMIT_CORE, &rl) < 0)
        return -errno;
    if (nproc == 0)
        return 0;
    if (getrlimit(RLIMIT_NPROC, &rl) < 0)
        return -errno;
    if (rl.rlim_max == RLIM_INFINITY || rl.rlim_max > nproc)
        rl.rlim_max = nproc;
    rl.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NPROC, &rl) < 0)
        return -errno;
    return 0;
}

/* Drop every capability from the bounding set. Fails closed: EPERM (no
 * CAP_SETPCAP) is acceptable only when nothing is left in the set. */
static int
drop_bounding_set(void)
{
    for (int cap = 0; cap < 64; cap++) {
        int in = prctl(PR_CAPBSET_READ, cap, 0, 0, 0);
        if (in < 0) {
            if (errno == EINVAL)
                return 0; /* past the kernel's last capability */
            return -errno;
        }
        if (in == 1 && prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0)
            return -errno;
    }
    return 0;
}

int
sb_proc_drop_privs(uid_t uid, gid_t gid, bool set_groups, const char **step)
{
    struct sb_cap_header h = { SB_CAP_VERSION_3, 0 };
    struct sb_cap_data d[2];
    uid_t r, ef, s;
    gid_t gr, ge, gs;
    int rc;

    *step = "uid/gid 0";
    if (uid == 0 || gid == 0)
        return -EPERM;
    *step = "setgroups";
    if (set_groups && setgroups(0, NULL) < 0)
        return -errno;
    *step = "setresgid";
    if (setresgid(gid, gid, gid) < 0)
        return -errno;
    *step = "capability bounding set";
    if ((rc = drop_bounding_set()) < 0)
        return rc;
    *step = "ambient capabilities";
    if (prctl(SB_PR_CAP_AMBIENT, SB_PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL)
        return -errno;
    *step = "setresuid";
    if (setresuid(uid, uid, uid) < 0)
        return -errno;
    /* Changing uid away from 0 clears the capability sets, but in a user
     * namespace the uid may not change at all: clear them explicitly. */
    *step = "capset";
    memset(d, 0, sizeof(d));
    if (syscall(SYS_capset, &h, d) < 0)
        return -errno;
    *step = "verify ids";
    if (getresuid(&r, &ef, &s) < 0 || r != uid || ef != uid || s != uid)
        return -EPERM;
    if (getresgid(&gr, &ge, &gs) < 0 || gr != gid || ge != gid || gs != gid)
        return -EPERM;
    *step = "verify capabilities";
    if (syscall(SYS_capget, &h, d) < 0)
        return -errno;
    if (d[0].effective | d[0].permitted | d[0].inheritable | d[1].effective | d[1].permitted |
        d[1].inheritable)
        return -EPERM;
    for (int cap = 0; cap < 64; cap++) {
        int in = prctl(PR_CAPBSET_READ, cap, 0, 0, 0);
        if (in < 0)
            break;
        if (in == 1)
            return -EPERM;
    }
    *step = "verify setuid(0) fails";
    if (setuid(0) == 0)
        return -EPERM;
    *step = "";
    return 0;
}

int
sb_proc_no_new_privs(void)
{
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        return -errno;
    return 0;
}

bool
sb_env_valid(const char *kv)
{
    const char *eq = strchr(kv, '=');

    if (!eq || eq == kv || (kv[0] >= '0' && kv[0] <= '9'))
        return false;
    for (const char *p = kv; p < eq; p++)
        if (!((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
              *p == '_'))
            return false;
    return true;
}

static bool
env_allowed(const char *kv)
{
    static const char *const names[] = { "PATH", "TERM",      "LANG",     "LANGUAGE",
                                         "TZ",   "COLORTERM", "NO_COLOR", NULL };
    size_t klen = strcspn(kv, "=");

    if (strncmp(kv, "LC_", 3) == 0)
        return true;
    for (size_t i = 0; names[i]; i++)
        if (strlen(names[i]) == klen && strncmp(kv, names[i], klen) == 0)
            return true;
    return false;
}

/* Set KV in ENV (N entries): replace an entry with the same key or append. */
static void
env_put(char ***env, size_t *n, char *kv)
{
    size_t klen = strcspn(kv, "=");

    for (size_t i = 0; i < *n; i++) {
        if (strncmp((*env)[i], kv, klen) == 0 && (*env)[i][klen] == '=') {
            free((*env)[i]);
            (*env)[i] = kv;
            return;
        }
    }
    *env = xrealloc(*env, (*n + 2) * sizeof(char *));
    (*env)[(*n)++] = kv;
    (*env)[*n] = NULL;
}

char **
sb_env_build(char *const *host_env, const char *const *extra, size_t n_extra, const char *home,
             const char *user)
{
    char **env = xcalloc(1, sizeof(char *));
    size_t n = 0;
    bool have_path = false;

    for (size_t i = 0; host_env && host_env[i]; i++) {
        if (!strchr(host_env[i], '=') || !env_allowed(host_env[i]))
            continue;
        have_path |= strncmp(host_env[i], "PATH=", 5) == 0;
        env_put(&env, &n, xstrdup(host_env[i]));
    }
    if (!have_path)
        env_put(&env, &n,
                xstrdup("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"));
    env_put(&env, &n, xasprintf("HOME=%s", home));
    if (user) {
        env_put(&env, &n, xasprintf("USER=%s", user));
        env_put(&env, &n, xasprintf("LOGNAME=%s", user));
    }
    env_put(&env, &n, xstrdup("PWD=/sandbox"));
    env_put(&env, &n, xstrdup("OPENSHELL_SANDBOX=1"));
    for (size_t i = 0; i < n_extra; i++)
        env_put(&env, &n, xstrdup(extra[i]));
    return env;
}

void
sb_env_free(char **env)
{
    if (!env)
        return;
    for (size_t i = 0; env[i]; i++)
        free(env[i]);
    free(env);
}
