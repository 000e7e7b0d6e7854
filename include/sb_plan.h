#ifndef OPENSHELL_SB_PLAN_H
#define OPENSHELL_SB_PLAN_H
/*
 * sb_plan: everything about one sandbox that can be decided before any
 * process or namespace exists: the command line (struct sb_opts), the
 * policy (loaded and validated by the policy engine), canonical host paths,
 * the agent's identity, environment, Landlock paths and the prebuilt seccomp
 * program. `openshell run` and the supervisor build the same plan, so bad
 * input is refused, with one clear message, before anything is started.
 *
 * sb_plan_build() returns 0, SB_PLAN_BAD_INPUT (exit 2: the command line,
 * policy, paths or user are wrong; policy diagnostics are in DIAGS) or
 * SB_PLAN_CANNOT (exit 125: this machine cannot provide what is asked, e.g.
 * a Landlock hard_requirement without Landlock), with E set for both.
 * A built plan owns its strings, policy reference and BPF: sb_plan_fini().
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "buf.h"
#include "err.h"
#include "sb_landlock.h"
#include "sb_seccomp.h"

struct policy;
struct policy_diags;

#define SB_EXIT_SETUP 125   /* the sandbox could not be set up; nothing ran */
#define SB_EXIT_TIMEOUT 124 /* --timeout expired */
#define SB_NPROC_MAX 1024   /* RLIMIT_NPROC of the agent */
#define SB_KILL_GRACE_MS 1000

#define SB_MAX_PROXY_ARGS 64
#define SB_PLAN_BAD_INPUT (-1000)
#define SB_PLAN_CANNOT (-1001)

/* The command line shared by `openshell run` and openshell-supervisor. */
struct sb_opts {
    const char *policy;  /* --policy FILE, or NULL for the built-in default */
    const char *workdir; /* --workdir DIR (default ".") */
    const char *rootfs;  /* --rootfs DIR (default the host root) */
    const char **env;    /* --env K=V, in order (heap array, strings borrowed) */
    size_t nenv;
    uint64_t timeout_ms; /* --timeout, 0 = none */
    bool tty;            /* --tty */
    bool explain;        /* --explain: print the plan, run nothing */
    const char *name;    /* --name (hostname), default "openshell" */
    char **argv;         /* the command (borrowed), NULL-terminated */
    /* --proxy-arg: extra arguments for the sandbox's openshell-proxy (tests:
     * --resolve HOST:ADDR, --upstream-ca FILE), borrowed */
    const char *proxy_args[SB_MAX_PROXY_ARGS];
    size_t nproxy_args;
    /* openshell-supervisor only (doc/sandbox.md, "Gateway session"): */
    bool idle;              /* --idle: no main process; PID 1 serves exec until SIGTERM */
    const char *gateway;    /* --gateway unix:PATH, or NULL */
    const char *sandbox_id; /* --sandbox-id ID */
    const char *token_file; /* --token-file FILE (read once by the supervisor) */
};

/* Parse "--timeout" text: seconds, decimals allowed ("1.5"). Returns 0 or
 * -EINVAL. */
int sb_parse_timeout(const char *s, uint64_t *ms);
/* Sandbox names double as hostnames: [A-Za-z0-9][A-Za-z0-9.-]{0,62}. */
bool sb_name_valid(const char *name);

struct sb_plan {
    struct policy *policy;
    char *root;    /* canonical host path of the root */
    char *workdir; /* canonical host path bound at /sandbox */
    char name[64];
    bool tty;
    uint64_t timeout_ms;
    char **argv; /* borrowed from the options; NULL when idle */
    bool idle;   /* no main process (--idle) */
    char **envp; /* owned */
    /* Egress proxy: started when the policy file has network_policies, and
     * always with a gateway (later revisions may allow something). */
    bool proxy;
    const char *policy_path; /* --policy FILE as given (borrowed), or NULL */
    const char *const *proxy_args;
    size_t nproxy_args;
    uid_t uid;
    gid_t gid;
    char user[64]; /* the agent's name in ROOT/etc/passwd, or "" */
    bool userns;   /* not root: a user namespace maps outer_uid/outer_gid */
    uid_t outer_uid;
    gid_t outer_gid;
    int ll_abi;   /* kernel ABI (>= 1) or -errno when unavailable */
    bool ll_hard; /* landlock.compatibility: hard_requirement */
    bool ll_on;   /* Landlock will be enforced */
    struct sb_ll_path *ll_paths;
    size_t ll_npaths;
    struct sb_bpf bpf;     /* the agent's filter */
    struct sb_bpf prelude; /* PID 1's own */
};

int sb_plan_build(const struct sb_opts *o, char *const *host_env, struct sb_plan *p,
                  struct policy_diags *diags, struct err *e);
void sb_plan_fini(struct sb_plan *p);

/* Append the human description `openshell run --explain` prints: root,
 * namespaces, identity, Landlock ABI with every handled right and every
 * rule, seccomp rules, rlimits, environment. */
void sb_plan_explain(const struct sb_plan *p, struct buf *out);

#endif
