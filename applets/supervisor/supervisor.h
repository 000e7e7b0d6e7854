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

/* The sandbox's PID 1: never returns. */
void sv_pid1(struct sb_plan *p) __attribute__((noreturn));

#endif
