/*
 * run.c: `openshell run [OPTIONS] -- CMD [ARGS...]`: run one command in a
 * sandbox, without a gateway. The command line is checked here (usage
 * errors exit 2 before anything starts), then this process re-executes the
 * binary as openshell-supervisor with the same arguments: the supervisor is
 * a fresh image, never a fork of the client, and the exit status of
 * `openshell run` is the supervisor's (the command's).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../applets.h"
#include "../supervisor/supervisor.h"
#include "client.h"
#include "log.h"
#include "xfuncs.h"

static const char run_usage[] =
    "Usage: openshell run [OPTIONS] -- CMD [ARGS...]\n"
    "\n"
    "Run CMD in a sandbox: its own pid, mount, ipc, uts, cgroup and network\n"
    "namespaces (loopback only), a read-only root with private /tmp, /proc and\n"
    "/dev, the working directory at /sandbox, no privileges, Landlock and seccomp.\n"
    "Without --policy the built-in restrictive policy applies. Not root: a user\n"
    "namespace maps the invoking user, who runs CMD.\n"
    "\n"
    "Options:\n";

int
cli_run(int argc, char **argv)
{
    static const char *const level_names[] = { "debug", "info", "warn", "error" };
    struct sb_opts o;
    char **args;

    switch (sv_opts_parse("openshell run", argc, argv, &o)) {
    case 1:
        fputs(run_usage, stdout);
        fputs(sv_opts_help, stdout);
        free(o.env);
        return 0;
    case 2: free(o.env); return applet_print_version("openshell");
    }
    free(o.env);
    /* The supervisor logs at our level (set by the global --log-level). */
    setenv("OPENSHELL_LOG_LEVEL", level_names[log_get_level()], 1);
    args = xcalloc((size_t)argc + 1, sizeof(char *));
    args[0] = "openshell-supervisor";
    for (int i = 1; i < argc; i++)
        args[i] = argv[i];
    execv("/proc/self/exe", args);
    fprintf(stderr, "openshell run: cannot start the supervisor: /proc/self/exe: %s\n",
            strerror(errno));
    free(args);
    return 125;
}
