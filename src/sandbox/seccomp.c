/* seccomp.c: the agent's syscall deny-list (see include/sb_seccomp.h). */
#include "sb_seccomp.h"

#include <errno.h>
#include <linux/filter.h>
#include <seccomp.h>
#include <stdint.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "xfuncs.h"

#define SB_SECCOMP_SET_MODE_FILTER 1
#define SB_PR_SET_SECCOMP 22
#define SB_AT_EMPTY_PATH 0x1000
#define SB_TIOCSTI 0x5412
#define SB_TIOCLINUX 0x541c
#define SB_AF_INET 2
#define SB_AF_INET6 10
#define SB_AF_NETLINK 16
#define SB_SOCK_RAW 3
#define SB_SOCK_TYPE_MASK 0xf

/* How a rule matches its syscall's arguments. */
enum sb_sc_cond {
    SC_ALWAYS,        /* every call */
    SC_EMPTY_PATH,    /* execveat(..., flags & AT_EMPTY_PATH) */
    SC_NS_FLAGS,      /* clone/unshare with any namespace flag (arg 0) */
    SC_SECCOMP_OP,    /* seccomp(SECCOMP_SET_MODE_FILTER, ...) */
    SC_PRCTL_SECCOMP, /* prctl(PR_SET_SECCOMP, ...) */
    SC_IOCTL_TTY,     /* ioctl(fd, TIOCSTI | TIOCLINUX) */
    SC_SOCKET,        /* socket(): family allow-list, netlink route only, no raw inet */
};

struct sb_sc_rule {
    const char *name;
    int raw_nr; /* number to use when libseccomp cannot name it (>= 424 are unified); -1 none */
    int err;    /* errno returned */
    enum sb_sc_cond cond;
    const char *why;
};

/* The list. Keep doc/sandbox.md in step with it. */
static const struct sb_sc_rule sb_sc_rules[] = {
    /* Reaching other processes. */
    { "ptrace", -1, EPERM, SC_ALWAYS, "no debugging or memory access of other processes" },
    { "process_vm_readv", -1, EPERM, SC_ALWAYS, "no reading another process's memory" },
    { "process_vm_writev", -1, EPERM, SC_ALWAYS, "no writing another process's memory" },
    { "pidfd_getfd", 438, EPERM, SC_ALWAYS, "no stealing file descriptors (the proxy's sockets)" },
    { "pidfd_open", 434, EPERM, SC_ALWAYS,
      "as the reference: no process handles (libcs and runtimes fall back to pids)" },
    { "pidfd_send_signal", 424, EPERM, SC_ALWAYS, "as the reference: signals only by pid" },
    /* Namespaces and mounts: the view the supervisor built is final. */
    { "setns", -1, EPERM, SC_ALWAYS, "no joining other namespaces" },
    { "unshare", -1, EPERM, SC_NS_FLAGS, "no new namespaces (user namespaces are unprivileged)" },
    { "clone", -1, EPERM, SC_NS_FLAGS, "no new namespaces through clone flags" },
    { "clone3", 435, ENOSYS, SC_ALWAYS,
      "flags live in memory the filter cannot read; ENOSYS makes libcs fall back to clone" },
    { "mount", -1, EPERM, SC_ALWAYS, "the filesystem view is fixed" },
    { "umount2", -1, EPERM, SC_ALWAYS, "no uncovering what the view hides" },
    { "pivot_root", -1, EPERM, SC_ALWAYS, "the root is fixed" },
    { "fsopen", 430, EPERM, SC_ALWAYS, "new mount API" },
    { "fsconfig", 431, EPERM, SC_ALWAYS, "new mount API" },
    { "fsmount", 432, EPERM, SC_ALWAYS, "new mount API" },
    { "fspick", 433, EPERM, SC_ALWAYS, "new mount API" },
    { "move_mount", 429, EPERM, SC_ALWAYS, "new mount API" },
    { "open_tree", 428, EPERM, SC_ALWAYS, "new mount API (detached mount copies)" },
    { "open_tree_attr", 467, EPERM, SC_ALWAYS, "new mount API (Linux 6.15)" },
    { "mount_setattr", 442, EPERM, SC_ALWAYS, "no changing mount flags (read-only, nosuid)" },
    /* Kernel attack surface. */
    { "bpf", -1, EPERM, SC_ALWAYS, "eBPF programs and maps" },
    { "perf_event_open", -1, EPERM, SC_ALWAYS, "performance counters (kernel info leaks)" },
    { "userfaultfd", -1, EPERM, SC_ALWAYS, "used to win kernel races" },
    { "io_uring_setup", 425, EPERM, SC_ALWAYS, "io_uring bypasses the syscall filter" },
    { "io_uring_enter", 426, EPERM, SC_ALWAYS, "io_uring bypasses the syscall filter" },
    { "io_uring_register", 427, EPERM, SC_ALWAYS, "io_uring bypasses the syscall filter" },
    { "keyctl", -1, EPERM, SC_ALWAYS, "kernel keyrings are not namespaced" },
    { "add_key", -1, EPERM, SC_ALWAYS, "kernel keyrings are not namespaced" },
    { "request_key", -1, EPERM, SC_ALWAYS, "kernel keyrings are not namespaced" },
    { "init_module", -1, EPERM, SC_ALWAYS, "kernel modules" },
    { "finit_module", -1, EPERM, SC_ALWAYS, "kernel modules" },
    { "delete_module", -1, EPERM, SC_ALWAYS, "kernel modules" },
    { "kexec_load", -1, EPERM, SC_ALWAYS, "loading another kernel" },
    { "kexec_file_load", -1, EPERM, SC_ALWAYS, "loading another kernel" },
    { "open_by_handle_at", -1, EPERM, SC_ALWAYS, "file handles bypass path checks" },
    { "syslog", -1, EPERM, SC_ALWAYS, "the kernel log is host-wide" },
    { "acct", -1, EPERM, SC_ALWAYS, "host-wide process accounting" },
    { "swapon", -1, EPERM, SC_ALWAYS, "host-wide swap" },
    { "swapoff", -1, EPERM, SC_ALWAYS, "host-wide swap" },
    { "reboot", -1, EPERM, SC_ALWAYS, "host-wide" },
    /* No way to swap in a filter of one's own (user notification, tracing). */
    { "seccomp", -1, EPERM, SC_SECCOMP_OP, "no stacking filters (SECCOMP_SET_MODE_FILTER)" },
    { "prctl", -1, EPERM, SC_PRCTL_SECCOMP, "no stacking filters (PR_SET_SECCOMP)" },
    /* Fileless execution. memfd_create stays allowed: JITs (node) need it;
     * executing a memfd through /proc/self/fd is refused by Landlock instead. */
    { "execveat", -1, EPERM, SC_EMPTY_PATH, "no exec of an fd (AT_EMPTY_PATH, fexecve)" },
    /* Terminal injection into a terminal the agent shares with the user. */
    { "ioctl", -1, EPERM, SC_IOCTL_TTY, "no TIOCSTI/TIOCLINUX input injection" },
    /* Sockets: only unix, inet, inet6 and route netlink. */
    { "socket", -1, EPERM, SC_SOCKET,
      "only AF_UNIX, AF_INET, AF_INET6 (no SOCK_RAW) and NETLINK_ROUTE; no packet, vsock, "
      "bluetooth, other netlink" },
};

/* Every namespace flag: one rule per bit, since a masked compare fires on an
 * exact pattern. CLONE_NEWTIME (0x80) is an unshare-only flag: for clone(2)
 * the low byte is the exit signal. */
static const uint64_t sb_ns_flags[] = {
    0x00020000, /* CLONE_NEWNS */
    0x02000000, /* CLONE_NEWCGROUP */
    0x04000000, /* CLONE_NEWUTS */
    0x08000000, /* CLONE_NEWIPC */
    0x10000000, /* CLONE_NEWUSER */
    0x20000000, /* CLONE_NEWPID */
    0x40000000, /* CLONE_NEWNET */
    0x00000080, /* CLONE_NEWTIME (unshare only) */
};

/* Add RULE's conditions as one or more libseccomp rules for NR. */
static int
add_rule(scmp_filter_ctx ctx, const struct sb_sc_rule *r, int nr)
{
    uint32_t act = SCMP_ACT_ERRNO((uint32_t)r->err);
    int rc = 0;

    switch (r->cond) {
    case SC_ALWAYS: return seccomp_rule_add(ctx, act, nr, 0);
    case SC_EMPTY_PATH:
        return seccomp_rule_add(ctx, act, nr, 1,
                                SCMP_A4(SCMP_CMP_MASKED_EQ, SB_AT_EMPTY_PATH, SB_AT_EMPTY_PATH));
    case SC_NS_FLAGS:
        for (size_t i = 0; i < sizeof(sb_ns_flags) / sizeof(sb_ns_flags[0]) && rc == 0; i++) {
            uint64_t f = sb_ns_flags[i];
            if (f == 0x80 && strcmp(r->name, "clone") == 0)
                continue;
            rc = seccomp_rule_add(ctx, act, nr, 1, SCMP_A0(SCMP_CMP_MASKED_EQ, f, f));
        }
        return rc;
    case SC_SECCOMP_OP:
        return seccomp_rule_add(ctx, act, nr, 1, SCMP_A0(SCMP_CMP_EQ, SB_SECCOMP_SET_MODE_FILTER));
    case SC_PRCTL_SECCOMP:
        return seccomp_rule_add(ctx, act, nr, 1, SCMP_A0(SCMP_CMP_EQ, SB_PR_SET_SECCOMP));
    case SC_IOCTL_TTY:
        rc =
            seccomp_rule_add(ctx, act, nr, 1, SCMP_A1(SCMP_CMP_MASKED_EQ, 0xffffffffu, SB_TIOCSTI));
        if (rc == 0)
            rc = seccomp_rule_add(ctx, act, nr, 1,
                                  SCMP_A1(SCMP_CMP_MASKED_EQ, 0xffffffffu, SB_TIOCLINUX));
        return rc;
    case SC_SOCKET:
        /* Families other than 1 (unix), 2 (inet), 10 (inet6), 16 (netlink). */
        for (unsigned fam = 0; fam < 17 && rc == 0; fam++)
            if (fam != 1 && fam != SB_AF_INET && fam != SB_AF_INET6 && fam != SB_AF_NETLINK)
                rc = seccomp_rule_add(ctx, act, nr, 1, SCMP_A0(SCMP_CMP_EQ, fam));
        if (rc == 0)
            rc = seccomp_rule_add(ctx, act, nr, 1, SCMP_A0(SCMP_CMP_GE, 17));
        /* Netlink: NETLINK_ROUTE (0) only, for getifaddrs(). */
        if (rc == 0)
            rc = seccomp_rule_add(ctx, act, nr, 2, SCMP_A0(SCMP_CMP_EQ, SB_AF_NETLINK),
                                  SCMP_A2(SCMP_CMP_NE, 0));
        /* Raw IP sockets (also refused without CAP_NET_RAW; belt and braces). */
        if (rc == 0)
            rc = seccomp_rule_add(ctx, act, nr, 2, SCMP_A0(SCMP_CMP_EQ, SB_AF_INET),
                                  SCMP_A1(SCMP_CMP_MASKED_EQ, SB_SOCK_TYPE_MASK, SB_SOCK_RAW));
        if (rc == 0)
            rc = seccomp_rule_add(ctx, act, nr, 2, SCMP_A0(SCMP_CMP_EQ, SB_AF_INET6),
                                  SCMP_A1(SCMP_CMP_MASKED_EQ, SB_SOCK_TYPE_MASK, SB_SOCK_RAW));
        return rc;
    }
    return -EINVAL;
}

/* The supervisor's own filter (PID 1, once the view is built): what it never
 * needs again and an attacker who took it over would want first. setns
 * stays (the proxy hook may need it); the agent inherits this under its own. */
static const struct sb_sc_rule sb_sc_prelude[] = {
    { "mount", -1, EPERM, SC_ALWAYS, "" },
    { "umount2", -1, EPERM, SC_ALWAYS, "" },
    { "pivot_root", -1, EPERM, SC_ALWAYS, "" },
    { "fsopen", 430, EPERM, SC_ALWAYS, "" },
    { "fsconfig", 431, EPERM, SC_ALWAYS, "" },
    { "fsmount", 432, EPERM, SC_ALWAYS, "" },
    { "fspick", 433, EPERM, SC_ALWAYS, "" },
    { "move_mount", 429, EPERM, SC_ALWAYS, "" },
    { "open_tree", 428, EPERM, SC_ALWAYS, "" },
    { "open_tree_attr", 467, EPERM, SC_ALWAYS, "" },
    { "mount_setattr", 442, EPERM, SC_ALWAYS, "" },
    { "bpf", -1, EPERM, SC_ALWAYS, "" },
    { "perf_event_open", -1, EPERM, SC_ALWAYS, "" },
    { "userfaultfd", -1, EPERM, SC_ALWAYS, "" },
    { "init_module", -1, EPERM, SC_ALWAYS, "" },
    { "finit_module", -1, EPERM, SC_ALWAYS, "" },
    { "delete_module", -1, EPERM, SC_ALWAYS, "" },
    { "kexec_load", -1, EPERM, SC_ALWAYS, "" },
    { "kexec_file_load", -1, EPERM, SC_ALWAYS, "" },
};

static int build(const struct sb_sc_rule *rules, size_t n, struct sb_bpf *out, struct err *e);

int
sb_seccomp_build(struct sb_bpf *out, struct err *e)
{
    return build(sb_sc_rules, sizeof(sb_sc_rules) / sizeof(sb_sc_rules[0]), out, e);
}

int
sb_seccomp_build_prelude(struct sb_bpf *out, struct err *e)
{
    return build(sb_sc_prelude, sizeof(sb_sc_prelude) / sizeof(sb_sc_prelude[0]), out, e);
}

static int
build(const struct sb_sc_rule *rules, size_t n, struct sb_bpf *out, struct err *e)
{
    scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
    size_t cap = 64 * 1024;
    int rc;

    out->insns = NULL;
    out->len = 0;
    if (!ctx)
        return err_set(e, ENOMEM, "seccomp_init failed");
    /* Foreign-arch syscalls (x32, i386) are outside our rules: kill. */
    rc = seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS);
    /* We set no_new_privs ourselves, earlier and explicitly. */
    if (rc == 0)
        rc = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_NNP, 0);
    /* A binary tree over syscall numbers: every syscall the agent makes
     * runs this program, so its depth matters more than its size. */
    if (rc == 0)
        rc = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_OPTIMIZE, 2);
    if (rc < 0) {
        seccomp_release(ctx);
        return err_set(e, -rc, "seccomp_attr_set: %s", strerror(-rc));
    }
    for (size_t i = 0; i < n; i++) {
        const struct sb_sc_rule *r = &rules[i];
        int nr = seccomp_syscall_resolve_name(r->name);

        if (nr == __NR_SCMP_ERROR)
            nr = r->raw_nr;
        if (nr < 0) {
            seccomp_release(ctx);
            return err_set(e, ENOSYS, "seccomp: cannot resolve syscall %s", r->name);
        }
        rc = add_rule(ctx, r, nr);
        if (rc < 0) {
            seccomp_release(ctx);
            return err_set(e, -rc, "seccomp rule for %s: %s", r->name, strerror(-rc));
        }
    }
    out->insns = xmalloc(cap);
    out->len = cap;
    rc = seccomp_export_bpf_mem(ctx, out->insns, &out->len);
    seccomp_release(ctx);
    if (rc < 0) {
        sb_bpf_fini(out);
        return err_set(e, -rc, "seccomp_export_bpf_mem: %s", strerror(-rc));
    }
    return 0;
}

void
sb_bpf_fini(struct sb_bpf *b)
{
    free(b->insns);
    b->insns = NULL;
    b->len = 0;
}

int
sb_seccomp_install(const struct sb_bpf *prog)
{
    struct sock_fprog fp = {
        .len = (unsigned short)(prog->len / sizeof(struct sock_filter)),
        .filter = prog->insns,
    };

    if (!prog->insns || prog->len == 0)
        return -EINVAL;
    if (syscall(SYS_seccomp, SB_SECCOMP_SET_MODE_FILTER, 0, &fp) < 0)
        return -errno;
    return 0;
}

void
sb_seccomp_explain(struct buf *out, const char *indent)
{
    for (size_t i = 0; i < sizeof(sb_sc_rules) / sizeof(sb_sc_rules[0]); i++) {
        const struct sb_sc_rule *r = &sb_sc_rules[i];
        const char *when = "";

        switch (r->cond) {
        case SC_ALWAYS: break;
        case SC_EMPTY_PATH: when = " with AT_EMPTY_PATH"; break;
        case SC_NS_FLAGS: when = " with a CLONE_NEW* flag"; break;
        case SC_SECCOMP_OP: when = "(SECCOMP_SET_MODE_FILTER)"; break;
        case SC_PRCTL_SECCOMP: when = "(PR_SET_SECCOMP)"; break;
        case SC_IOCTL_TTY: when = "(TIOCSTI, TIOCLINUX)"; break;
        case SC_SOCKET: when = " (see reason)"; break;
        }
        buf_printf(out, "%s%s%s -> %s: %s\n", indent, r->name, when,
                   r->err == ENOSYS ? "ENOSYS" : "EPERM", r->why);
    }
}
