#ifndef OPENSHELL_SUPERVISOR_H
#define OPENSHELL_SUPERVISOR_H
/*
 * Private to the supervisor applet (and `openshell run`, which shares its
 * command line): option parsing and the sandbox's process tree.
 *
 *   openshell-supervisor (host pid namespace): builds the plan, clones PID 1,
 *   |   maps the user namespace, forwards signals to PID 1, exits with its code
 *   `- PID 1 (sv_pid1): mounts, agent netns, Landlock ruleset, pty; forks the
 *      |   agent, forwards signals to its process group, reaps orphans, enforces
 *      |   --timeout, relays the pty; its exit ends every process in the sandbox
 *      `- agent (sv_agent_exec): joins the netns, closes fds, drops privileges,
 *           no_new_privs, Landlock, seccomp last, execve
 */
#include "sb_plan.h"

/* Signals forwarded to the agent's process group. */
#define SV_FORWARDED_SIGNALS SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH

/* Parse the shared command line (PROG names the command in errors) into O.
 * Exits 2 on a usage error; returns 1 for --help, 2 for --version, else 0.
 * O->env is heap-allocated: free it. */
int sv_opts_parse(const char *prog, int argc, char **argv, struct sb_opts *o);
extern const char sv_opts_help[];

/* Exit status of a waited process the way a shell reports it (128+S for
 * signal S; SB_EXIT_SETUP otherwise). */
int sv_status_code(int st);

struct sv_child;
typedef int (*sv_task_fn)(const struct sv_child *x);

/* What PID 1 forks: the agent, or a process of an exec relay. */
struct sv_child {
    char **argv; /* NULL: the --idle placeholder */
    char **envp;
    const char *cwd;      /* NULL: stay in /sandbox */
    const char *pty_name; /* the slave to make the controlling terminal, or NULL */
    int stdio[3];         /* fds for 0-2 (-1: inherit) when there is no pty */
    /* Instead of execve: run this in the restricted child (tar ops); its
     * return value is the exit status. */
    sv_task_fn task;
    const char *path; /* the task's path */
};

/* The task for INIT op OP ("untar", "tar"), or NULL (sv_task.c). */
sv_task_fn sv_task_find(const char *op);

/* The sandbox's PID 1: never returns. CTL_FD (-1: none) is its end of the
 * control channel (below). */
void sv_pid1(struct sb_plan *p, int ctl_fd) __attribute__((noreturn));

/*
 * The control channel, outer supervisor <-> PID 1: a SOCK_SEQPACKET
 * socketpair; each message one JSON object with descriptors attached.
 *
 *   outer -> PID 1
 *     {"op":"spawn","id":N,"argv":[...],"env":["K=V",...],"cwd":"/sandbox",
 *      "tty":bool,"cols":N,"rows":N,"task":"exec"|"untar"|"tar","path":"..."}
 *        fds: stdin, stdout, stderr (without tty). "env" overrides the
 *        agent's environment.
 *     {"op":"signal","id":N,"sig":S}     to the process group of spawn N
 *   PID 1 -> outer
 *     {"op":"started","id":N,"pid":P}    fds: the pty master (with tty)
 *     {"op":"failed","id":N,"error":"..."}
 *     {"op":"exited","id":N,"code":C}    128+S for signal S
 */
#define SV_CTL_MAX (64 * 1024)
#define SV_CTL_MAX_FDS 3
/* Send MSG (NUL-terminated JSON) with NFDS descriptors. 0 or -errno. */
int sv_ctl_send(int fd, const char *msg, const int *fds, int nfds);
/* Receive one message into MSG[SIZE] (NUL-terminated) and its descriptors
 * (O_CLOEXEC, the caller's). Returns its length, 0 at EOF, -EAGAIN when
 * none is waiting, -EMSGSIZE for an oversized one, or -errno. */
int sv_ctl_recv(int fd, char *msg, size_t size, int *fds, int *nfds);

#endif
