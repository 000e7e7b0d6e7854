#ifndef OPENSHELL_SB_SECCOMP_H
#define OPENSHELL_SB_SECCOMP_H
/*
 * sb_seccomp: the agent's syscall filter.
 *
 * A deny-list filter (default ALLOW) built once with libseccomp, before any
 * fork, and exported as raw BPF: the agent child then installs the prebuilt
 * program with one seccomp(2) call as the very last step before execve, so
 * nothing between filter load and exec can trip over it. Blocked calls fail
 * with EPERM (clone3 with ENOSYS so glibc falls back to clone(2), whose flags
 * the filter can inspect). A syscall from a foreign architecture (i386 or
 * x32 on x86-64) kills the process: the rules are only written for the native
 * table, so anything else fails closed. Syscalls newer than libseccomp's name
 * table are added by their raw (unified, >= 424) numbers.
 *
 * The rule table is also the documentation: sb_seccomp_explain() prints each
 * entry with the reason it is there (doc/sandbox.md carries the same list).
 */
#include <stddef.h>

#include "buf.h"
#include "err.h"

struct sb_bpf {
    void *insns; /* struct sock_filter[], owned; freed by sb_bpf_fini */
    size_t len;  /* bytes */
};

/* Build the filter into OUT. Returns 0 or -errno (libseccomp failure named
 * in E). */
int sb_seccomp_build(struct sb_bpf *out, struct err *e);
/* The supervisor's own, smaller filter (reference §5.4 "prelude"): the
 * mount family, bpf, perf_event_open, userfaultfd, module and kexec calls.
 * PID 1 installs it once the view is built, before forking the agent. */
int sb_seccomp_build_prelude(struct sb_bpf *out, struct err *e);
void sb_bpf_fini(struct sb_bpf *b);

/* Install PROG on the calling thread. The caller must have set
 * no_new_privs (or hold CAP_SYS_ADMIN). Async-signal-safe: no allocation, so
 * it can run in a freshly forked child. Returns 0 or -errno. */
int sb_seccomp_install(const struct sb_bpf *prog);

/* Append a human-readable list of the rules ("name: action (reason)") to OUT,
 * one per line, each line prefixed with INDENT. */
void sb_seccomp_explain(struct buf *out, const char *indent);

#endif
