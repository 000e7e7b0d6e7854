/* plan.c: resolve and validate one sandbox before it starts (see include/sb_plan.h). */
#include "sb_plan.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "policy.h"
#include "px_spawn.h"
#include "sb_proc.h"
#include "sb_user.h"
#include "xfuncs.h"

/* Paths every agent gets besides filesystem_policy: the reference's baseline
 * (read-only /usr /lib /etc /app /var/log /proc /dev/urandom, read-write
 * /tmp), the other system directories of non-merged-/usr roots, and the
 * harmless devices of our /dev. Missing ones are skipped quietly. */
static const struct {
    const char *path;
    bool rw;
} sb_baseline[] = {
    { "/usr", false },         { "/lib", false },     { "/etc", false },
    { "/app", false },         { "/var/log", false }, { "/proc", false },
    { "/dev/urandom", false }, { "/tmp", true },      { "/bin", false },
    { "/sbin", false },        { "/lib64", false },   { "/lib32", false },
    { "/dev/random", false },  { "/dev/null", true }, { "/dev/zero", true },
    { "/dev/full", true },     { "/dev/tty", true },  { "/dev/pts", true },
    { "/dev/ptmx", true },     { "/dev/shm", true },
};

int
sb_parse_timeout(const char *s, uint64_t *ms)
{
    uint64_t whole = 0, frac = 0, scale = 1000;
    const char *p = s;

    if (!*p)
        return -EINVAL;
    for (; *p >= '0' && *p <= '9'; p++) {
        whole = whole * 10 + (uint64_t)(*p - '0');
        if (whole > 100000000)
            return -EINVAL;
    }
    if (*p == '.') {
        for (p++; *p >= '0' && *p <= '9'; p++) {
            if (scale > 1) {
                scale /= 10;
                frac += (uint64_t)(*p - '0') * scale;
            }
        }
    }
    if (*p || p == s)
        return -EINVAL;
    *ms = whole * 1000 + frac;
    return 0;
}

bool
sb_name_valid(const char *name)
{
    size_t n = strlen(name);

    if (n == 0 || n > 63 || name[0] == '-' || name[0] == '.')
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '.'))
            return false;
    }
    return true;
}

/* Canonical absolute path of an existing directory, or NULL with E set. */
static char *
canon_dir(const char *what, const char *path, struct err *e)
{
    char *r = realpath(path, NULL);
    struct stat st;

    if (!r) {
        err_errno(e, "%s %s", what, path);
        return NULL;
    }
    if (stat(r, &st) < 0 || !S_ISDIR(st.st_mode)) {
        err_set(e, ENOTDIR, "%s %s: not a directory", what, path);
        free(r);
        return NULL;
    }
    return r;
}

static void
add_ll(struct sb_plan *p, const char *path, bool rw, bool baseline)
{
    /* A baseline path the policy already lists keeps the policy's mode. */
    for (size_t i = 0; baseline && i < p->ll_npaths; i++)
        if (strcmp(p->ll_paths[i].path, path) == 0)
            return;
    p->ll_paths = xrealloc(p->ll_paths, (p->ll_npaths + 1) * sizeof(*p->ll_paths));
    p->ll_paths[p->ll_npaths++] = (struct sb_ll_path){ path, rw, baseline };
}

/* Decide uid/gid: policy, else `sandbox` (root only), else the invoking
 * user (not root), else 65534. */
static int
resolve_identity(struct sb_plan *p, struct err *e)
{
    const char *u = policy_run_as_user(p->policy), *g = policy_run_as_group(p->policy);
    bool found = false;
    gid_t pw_gid = 0;
    int rc;

    if (u) {
        if ((rc = sb_user_lookup(p->root, u, &p->uid, &pw_gid, &found, e)) < 0)
            return err_wrap(e, "process.run_as_user");
    } else if (!p->userns &&
               sb_user_lookup(p->root, "sandbox", &p->uid, &pw_gid, &found, NULL) == 0) {
        /* the image's sandbox user */
    } else if (p->userns) {
        p->uid = p->outer_uid;
        pw_gid = p->outer_gid;
        found = true;
    } else {
        p->uid = 65534;
        pw_gid = 65534;
        found = true;
    }
    if (g) {
        if ((rc = sb_group_lookup(p->root, g, &p->gid, e)) < 0)
            return err_wrap(e, "process.run_as_group");
    } else if (found && pw_gid != 0) {
        p->gid = pw_gid;
    } else {
        p->gid = p->userns ? p->outer_gid : 65534;
    }
    if (p->uid == 0 || p->gid == 0)
        return err_set(e, EPERM, "the agent never runs as root (uid %u gid %u)", (unsigned)p->uid,
                       (unsigned)p->gid);
    if (p->userns && (p->uid != p->outer_uid || p->gid != p->outer_gid))
        return err_set(e, EPERM,
                       "running as uid %u gid %u needs root: without it the sandbox can only run "
                       "as the invoking user (uid %u gid %u)",
                       (unsigned)p->uid, (unsigned)p->gid, (unsigned)p->outer_uid,
                       (unsigned)p->outer_gid);
    if (sb_user_name(p->root, p->uid, p->user, sizeof(p->user), NULL, 0) < 0)
        p->user[0] = '\0';
    return 0;
}

int
sb_plan_build(const struct sb_opts *o, char *const *host_env, struct sb_plan *p,
              struct policy_diags *diags, struct err *e)
{
    int rc;

    memset(p, 0, sizeof(*p));
    p->tty = o->tty;
    p->timeout_ms = o->timeout_ms;
    p->argv = o->idle ? NULL : o->argv;
    p->idle = o->idle;
    p->outer_uid = geteuid();
    p->outer_gid = getegid();
    p->userns = p->outer_uid != 0;
    buf_copy_fixed(p->name, sizeof(p->name), o->name ? o->name : "openshell");

    if (!o->explain && !o->idle && (!o->argv || !o->argv[0]))
        return err_set(e, EINVAL, "missing command (usage: ... -- CMD [ARGS...])"),
               SB_PLAN_BAD_INPUT;
    if (o->name && !sb_name_valid(o->name))
        return err_set(e, EINVAL, "--name '%s': use 1-63 letters, digits, '-' or '.'", o->name),
               SB_PLAN_BAD_INPUT;
    for (size_t i = 0; i < o->nenv; i++)
        if (!sb_env_valid(o->env[i]))
            return err_set(e, EINVAL, "--env '%s': expected NAME=VALUE", o->env[i]),
                   SB_PLAN_BAD_INPUT;

    if (o->policy) {
        rc = policy_load_file(o->policy, &p->policy, diags, e);
        if (rc < 0)
            return SB_PLAN_BAD_INPUT;
    } else {
        p->policy = policy_default();
    }

    if (!(p->workdir = canon_dir("workdir", o->workdir ? o->workdir : ".", e)))
        return SB_PLAN_BAD_INPUT;
    if (strcmp(p->workdir, "/") == 0)
        return err_set(e, EINVAL,
                       "workdir is /: refusing to expose the whole host read-write at /sandbox "
                       "(pass --workdir DIR)"),
               SB_PLAN_BAD_INPUT;
    if (!(p->root = canon_dir("rootfs", o->rootfs ? o->rootfs : "/", e)))
        return SB_PLAN_BAD_INPUT;
    if ((rc = resolve_identity(p, e)) < 0)
        return SB_PLAN_BAD_INPUT;
    /* The egress proxy runs when there is something to allow; its variables
     * come before --env so the user can still override them. */
    p->policy_path = o->policy;
    p->proxy = o->policy && (o->gateway || policy_network_count(p->policy) > 0);
    p->proxy_args = o->proxy_args;
    p->nproxy_args = o->nproxy_args;
    if (p->proxy) {
        size_t nv = 0, n = 0;
        const char **all;

        while (px_spawn_env[nv])
            nv++;
        all = xcalloc(nv + o->nenv + 1, sizeof(*all));
        for (size_t i = 0; i < nv; i++)
            all[n++] = px_spawn_env[i];
        for (size_t i = 0; i < o->nenv; i++)
            all[n++] = o->env[i];
        p->envp = sb_env_build(host_env, all, n, "/sandbox", p->user[0] ? p->user : NULL);
        free(all);
    } else {
        p->envp = sb_env_build(host_env, o->env, o->nenv, "/sandbox", p->user[0] ? p->user : NULL);
    }

    /* Landlock: the paths now, the ABI decides whether they apply. */
    {
        size_t n;
        const char *const *ro = policy_fs_read_only(p->policy, &n);
        for (size_t i = 0; i < n; i++)
            add_ll(p, ro[i], false, false);
        const char *const *rw = policy_fs_read_write(p->policy, &n);
        for (size_t i = 0; i < n; i++)
            add_ll(p, rw[i], true, false);
        if (policy_fs_include_workdir(p->policy))
            add_ll(p, "/sandbox", true, true);
        for (size_t i = 0; i < sizeof(sb_baseline) / sizeof(sb_baseline[0]); i++)
            add_ll(p, sb_baseline[i].path, sb_baseline[i].rw, true);
    }
    p->ll_hard = policy_landlock_compat(p->policy) == POLICY_LANDLOCK_HARD_REQUIREMENT;
    p->ll_abi = sb_landlock_abi();
    p->ll_on = p->ll_abi >= 1;
    if (!p->ll_on && p->ll_hard)
        return err_set(e, -p->ll_abi,
                       "landlock.compatibility is hard_requirement but this kernel offers no "
                       "Landlock (%s): refusing to start",
                       strerror(-p->ll_abi)),
               SB_PLAN_CANNOT;

    if ((rc = sb_seccomp_build(&p->bpf, e)) < 0 ||
        (rc = sb_seccomp_build_prelude(&p->prelude, e)) < 0)
        return SB_PLAN_CANNOT;
    return 0;
}

void
sb_plan_fini(struct sb_plan *p)
{
    policy_unref(p->policy);
    free(p->root);
    free(p->workdir);
    sb_env_free(p->envp);
    free(p->ll_paths);
    sb_bpf_fini(&p->bpf);
    sb_bpf_fini(&p->prelude);
    memset(p, 0, sizeof(*p));
}

/* Where sandbox path SP comes from on the host (for --explain, which runs
 * before the view exists); "" for things the supervisor creates itself. */
static void
host_path(const struct sb_plan *p, const char *sp, struct buf *out)
{
    const char *root = strcmp(p->root, "/") == 0 ? "" : p->root;

    if (strcmp(sp, "/sandbox") == 0 || strncmp(sp, "/sandbox/", 9) == 0)
        buf_printf(out, "%s%s", p->workdir, sp + 8);
    else if (strcmp(sp, "/tmp") == 0 || strcmp(sp, "/proc") == 0 || strncmp(sp, "/proc/", 6) == 0)
        buf_puts(out, "/");
    else if (strncmp(sp, "/dev/", 5) == 0 || strcmp(sp, "/dev") == 0)
        buf_puts(out, sp); /* our /dev has the host's harmless nodes */
    else
        buf_printf(out, "%s%s", root, sp);
}

void
sb_plan_explain(const struct sb_plan *p, struct buf *out)
{
    buf_printf(out, "root:       %s (read-only; private /tmp, /proc, /dev)\n", p->root);
    buf_printf(out, "workdir:    %s -> /sandbox (read-write, the working directory)\n", p->workdir);
    buf_printf(out,
               "namespaces: pid (supervisor is PID 1), mount, ipc, uts (hostname %s), cgroup, "
               "net (loopback only)%s\n",
               p->name, p->userns ? ", user (maps only the invoking user)" : "");
    if (p->userns)
        buf_printf(out, "            user namespace maps uid %u and gid %u to themselves\n",
                   (unsigned)p->outer_uid, (unsigned)p->outer_gid);
    if (p->proxy)
        buf_printf(out,
                   "egress:     openshell-proxy on 127.0.0.1:3128 and [::1]:3128 (%zu network "
                   "policies from %s, edits applied live; caller identity from /proc)\n",
                   policy_network_count(p->policy), p->policy_path);
    else
        buf_puts(out, "egress:     none (no network_policies): every connection fails\n");
    buf_printf(out, "identity:   uid %u%s%s%s gid %u, no supplementary groups%s\n",
               (unsigned)p->uid, p->user[0] ? " (" : "", p->user, p->user[0] ? ")" : "",
               (unsigned)p->gid, p->userns ? " (as mapped by the kernel)" : "");
    buf_puts(out, "privileges: all capabilities and the bounding set dropped, no_new_privs, "
                  "core dumps off\n");
    buf_printf(out, "processes:  at most %d (RLIMIT_NPROC, %s), core dumps off\n", SB_NPROC_MAX,
               p->userns ? "counted in the sandbox's user namespace"
                         : "counted per uid: sandboxes of one uid share it");
    if (!p->ll_on) {
        buf_printf(out,
                   "landlock:   NOT ENFORCED: kernel has no Landlock (%s); best_effort runs "
                   "without filesystem restrictions\n",
                   strerror(-p->ll_abi));
    } else {
        buf_printf(out, "landlock:   ABI %d (the kernel's highest), %s\n", p->ll_abi,
                   p->ll_hard ? "hard_requirement" : "best_effort");
        buf_puts(out, "  handled:  ");
        sb_landlock_rights_str(sb_landlock_handled(p->ll_abi), out);
        buf_puts(out, "\n  scoped:   ");
        sb_landlock_scopes_str(sb_landlock_scoped(p->ll_abi), out);
        buf_puts(out, "\n  network:  not handled (the network namespace has only loopback)\n");
        buf_puts(out, "  rules (path, origin, rights; everything else is denied):\n");
        for (size_t i = 0; i < p->ll_npaths; i++) {
            const struct sb_ll_path *lp = &p->ll_paths[i];
            struct buf hp = BUF_INIT;
            struct stat st;
            uint64_t r =
                lp->rw ? sb_landlock_rw_rights(p->ll_abi) : sb_landlock_ro_rights(p->ll_abi);

            host_path(p, lp->path, &hp);
            if (stat(buf_cstr(&hp), &st) < 0) {
                buf_printf(out, "    -- %s (%s): missing, skipped%s\n", lp->path,
                           lp->baseline ? "baseline" : "policy",
                           p->ll_hard && !lp->baseline ? " (hard_requirement: start fails)" : "");
            } else {
                if (!S_ISDIR(st.st_mode))
                    r &= SB_LL_FILE_RIGHTS;
                buf_printf(out, "    %s %s (%s): ", lp->rw ? "rw" : "ro", lp->path,
                           lp->baseline ? "baseline" : "policy");
                sb_landlock_rights_str(r, out);
                buf_putc(out, '\n');
            }
            buf_fini(&hp);
        }
    }
    buf_puts(out, "seccomp:    default allow; these fail (last step before execve):\n");
    sb_seccomp_explain(out, "    ");
    buf_puts(out, "            syscalls of other architectures (i386, x32): process killed\n");
    buf_puts(out, "            (the supervisor itself runs under a smaller filter: mount family, "
                  "bpf, perf_event_open, userfaultfd, modules, kexec)\n");
    buf_puts(out, "environment:\n");
    for (size_t i = 0; p->envp && p->envp[i]; i++)
        buf_printf(out, "    %s\n", p->envp[i]);
}
