/*
 * supervisor.c: the openshell-supervisor applet: builds one sandbox and runs
 * a command in it (see supervisor.h for the process tree). This file is the
 * outer process: command line, plan, the clone of PID 1 and signal
 * forwarding; pid1.c is the inside.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include "../applets.h"
#include "log.h"
#include "policy.h"
#include "sb_ns.h"
#include "supervisor.h"
#include "sv_gw.h"
#include "xfuncs.h"

extern char **environ;

const char sv_opts_help[] =
    "  -p, --policy FILE       policy YAML (default: the built-in restrictive policy)\n"
    "  -w, --workdir DIR       directory bound read-write at /sandbox, the command's\n"
    "                          working directory (default: the current directory)\n"
    "      --rootfs DIR        root filesystem (default: the host root, read-only)\n"
    "  -e, --env NAME=VALUE    set a variable in the command's environment (repeatable)\n"
    "  -t, --timeout SECONDS   SIGTERM the command after SECONDS (then SIGKILL after\n"
    "                          1 s); exit status 124\n"
    "      --tty               give the command a pseudo-terminal (interactive shells)\n"
    "      --name NAME         sandbox name (its hostname; default openshell)\n"
    "      --explain           print what the sandbox enforces (Landlock ABI and rights,\n"
    "                          seccomp rules, identity, environment) and run nothing\n"
    "      --on-invalid-policy keep|deny-all\n"
    "                          when an edit of the policy FILE is invalid, keep the last\n"
    "                          good network policy (default) or deny every connection\n"
    "      --proxy-arg ARG     pass ARG to the sandbox's egress proxy (repeatable; for\n"
    "                          tests: --proxy-arg=--resolve=HOST:ADDR, see doc/proxy.md)\n"
    "  -h, --help              show this help\n"
    "  -V, --version           print the version\n" APPLET_COMMON_HELP "\n"
    "Exit status: the command's; 128+N when it was killed by signal N; 124 on\n"
    "timeout; 125 when the sandbox could not be set up; 126/127 when the command\n"
    "cannot be run / is not found; 2 for bad input (nothing is started).\n";

static const char supervisor_usage[] =
    "Usage: openshell-supervisor [OPTIONS] -- CMD [ARGS...]\n"
    "       openshell-supervisor [OPTIONS] --idle\n"
    "\n"
    "Build a sandbox (namespaces, read-only root, Landlock, seccomp, no privileges)\n"
    "and run CMD in it as its PID 1. `openshell run` is the usual way in; a\n"
    "gateway's compute driver starts it with --gateway.\n"
    "\n"
    "Options:\n";

/* Options of openshell-supervisor alone (not of `openshell run`). */
static const char supervisor_gateway_help[] =
    "\n"
    "Gateway session (doc/sandbox.md, \"Gateway session\"):\n"
    "      --gateway unix:PATH the gateway to serve: policy, settings and credentials\n"
    "                          come from it (not --policy), the egress proxy always\n"
    "                          runs, exec and logs go through one session\n"
    "      --sandbox-id ID     this sandbox's id at the gateway (required with --gateway)\n"
    "      --token-file FILE   the sandbox's bearer token (required with --gateway); read\n"
    "                          once, kept in the supervisor's memory only (never in a\n"
    "                          child's memory or environment)\n"
    "      --idle              no main process: the sandbox stays up serving exec until\n"
    "                          SIGTERM (instead of -- CMD)\n";

enum {
    OPT_ROOTFS = 0x100,
    OPT_TTY,
    OPT_NAME,
    OPT_EXPLAIN,
    OPT_PROXY_ARG,
    OPT_ON_INVALID,
    OPT_GATEWAY,
    OPT_SANDBOX_ID,
    OPT_TOKEN_FILE,
    OPT_IDLE,
};

/* Sandbox ids are the gateway's: letters, digits, '-' and '_'. */
static bool
sandbox_id_valid(const char *s)
{
    size_t n = strlen(s);

    if (n == 0 || n > 64)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
              (s[i] >= '0' && s[i] <= '9') || s[i] == '-' || s[i] == '_'))
            return false;
    return true;
}

/* The supervisor-only options, checked together once parsing is done. */
static void
check_gateway_opts(const char *prog, const struct sb_opts *o, bool has_cmd)
{
    if (o->idle && has_cmd)
        applet_usage_error(prog, "--idle and a command exclude each other");
    if (o->idle && o->tty)
        applet_usage_error(prog, "--tty needs a command (--idle has none)");
    if (!o->gateway) {
        if (o->sandbox_id || o->token_file)
            applet_usage_error(prog, "--sandbox-id and --token-file need --gateway");
        return;
    }
    if (strncmp(o->gateway, "unix:", 5) != 0 || o->gateway[5] != '/')
        applet_usage_error(
            prog, "--gateway '%s': expected unix:/ABSOLUTE/PATH (https:// is planned)", o->gateway);
    if (!o->sandbox_id || !o->token_file)
        applet_usage_error(prog, "--gateway needs --sandbox-id ID and --token-file FILE");
    if (!sandbox_id_valid(o->sandbox_id))
        applet_usage_error(prog, "--sandbox-id '%s': use 1-64 letters, digits, '-' or '_'",
                           o->sandbox_id);
    if (o->policy)
        applet_usage_error(prog, "--policy and --gateway exclude each other: the policy in "
                                 "force comes from the gateway");
    if (o->explain)
        applet_usage_error(prog, "--explain and --gateway exclude each other");
}

int
sv_opts_parse(const char *prog, int argc, char **argv, struct sb_opts *o)
{
    static const struct option longopts[] = {
        { "policy", required_argument, NULL, 'p' },
        { "workdir", required_argument, NULL, 'w' },
        { "rootfs", required_argument, NULL, OPT_ROOTFS },
        { "env", required_argument, NULL, 'e' },
        { "timeout", required_argument, NULL, 't' },
        { "tty", no_argument, NULL, OPT_TTY },
        { "name", required_argument, NULL, OPT_NAME },
        { "explain", no_argument, NULL, OPT_EXPLAIN },
        { "proxy-arg", required_argument, NULL, OPT_PROXY_ARG },
        { "on-invalid-policy", required_argument, NULL, OPT_ON_INVALID },
        { "gateway", required_argument, NULL, OPT_GATEWAY },
        { "sandbox-id", required_argument, NULL, OPT_SANDBOX_ID },
        { "token-file", required_argument, NULL, OPT_TOKEN_FILE },
        { "idle", no_argument, NULL, OPT_IDLE },
        { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, 'V' },
        APPLET_COMMON_OPTIONS,
        { NULL, 0, NULL, 0 },
    };
    bool sv = strcmp(prog, "openshell-supervisor") == 0;
    int opt;

    memset(o, 0, sizeof(*o));
    opterr = 0;
    /* '+': the first non-option is the command; its options are its own. */
    while ((opt = getopt_long(argc, argv, "+p:w:e:t:hV", longopts, NULL)) != -1) {
        if (applet_common_option(prog, opt, optarg))
            continue;
        if (!sv && opt >= OPT_GATEWAY && opt <= OPT_IDLE)
            applet_usage_error(prog, "'%s' is an option of openshell-supervisor only",
                               argv[optind - 1]);
        switch (opt) {
        case 'p': o->policy = optarg; break;
        case 'w': o->workdir = optarg; break;
        case OPT_ROOTFS: o->rootfs = optarg; break;
        case 'e':
            o->env = xrealloc(o->env, (o->nenv + 1) * sizeof(*o->env));
            o->env[o->nenv++] = optarg;
            break;
        case 't':
            if (sb_parse_timeout(optarg, &o->timeout_ms) < 0)
                applet_usage_error(prog, "--timeout '%s': expected seconds, e.g. 30 or 0.5",
                                   optarg);
            break;
        case OPT_TTY: o->tty = true; break;
        case OPT_NAME: o->name = optarg; break;
        case OPT_EXPLAIN: o->explain = true; break;
        case OPT_ON_INVALID:
            if (strcmp(optarg, "keep") != 0 && strcmp(optarg, "deny-all") != 0)
                applet_usage_error(prog, "--on-invalid-policy: expected keep or deny-all, got '%s'",
                                   optarg);
            if (o->nproxy_args == SB_MAX_PROXY_ARGS)
                applet_usage_error(prog, "too many proxy options");
            o->proxy_args[o->nproxy_args++] = strcmp(optarg, "keep") == 0
                                                  ? "--on-invalid-policy=keep"
                                                  : "--on-invalid-policy=deny-all";
            break;
        case OPT_PROXY_ARG:
            if (o->nproxy_args == SB_MAX_PROXY_ARGS)
                applet_usage_error(prog, "too many --proxy-arg (at most %d)", SB_MAX_PROXY_ARGS);
            o->proxy_args[o->nproxy_args++] = optarg;
            break;
        case OPT_GATEWAY: o->gateway = optarg; break;
        case OPT_SANDBOX_ID: o->sandbox_id = optarg; break;
        case OPT_TOKEN_FILE: o->token_file = optarg; break;
        case OPT_IDLE: o->idle = true; break;
        case 'h': return 1;
        case 'V': return 2;
        default: applet_bad_option(prog, argv, optind, optopt);
        }
    }
    o->argv = argv + optind;
    if (sv)
        check_gateway_opts(prog, o, optind < argc);
    if (!o->explain && !o->idle && optind >= argc)
        applet_usage_error(prog, "missing command: %s [OPTIONS] -- CMD [ARGS...]", prog);
    return 0;
}

/* The sandbox's bearer token: read once from --token-file, kept here only
 * (wiped in PID 1 right after the clone: no child's memory has it). */
static char sv_token[512];

/* Read --token-file: a regular file of ours, not readable by group or
 * others, one line of printable ASCII. Exits 2 with one line otherwise. */
static void
read_token(const char *prog, const char *path)
{
    struct buf b = BUF_INIT;
    struct stat st;
    struct err e;
    size_t n;
    int fd;

    err_clear(&e);
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0 || fstat(fd, &st) < 0) {
        log_error("--token-file %s: %s", path, strerror(errno));
        exit(EXIT_USAGE);
    }
    if (!S_ISREG(st.st_mode) || (st.st_mode & 077)) {
        log_error("--token-file %s: must be a regular file readable by its owner only "
                  "(mode %04o; chmod 600)",
                  path, (unsigned)(st.st_mode & 07777));
        exit(EXIT_USAGE);
    }
    close(fd);
    if (read_file(path, sizeof(sv_token), &b, &e) < 0) {
        log_error("--token-file: %s", e.msg);
        exit(EXIT_USAGE);
    }
    n = b.len;
    while (n && (b.data[n - 1] == '\n' || b.data[n - 1] == '\r' || b.data[n - 1] == ' '))
        n--;
    for (size_t i = 0; i < n; i++)
        if (b.data[i] <= ' ' || b.data[i] > '~')
            n = 0;
    if (n == 0 || n >= sizeof(sv_token)) {
        log_error("--token-file %s: expected one token (printable, at most %zu bytes)", path,
                  sizeof(sv_token) - 1);
        exit(EXIT_USAGE);
    }
    memcpy(sv_token, b.data, n);
    sv_token[n] = '\0';
    explicit_bzero(b.data, b.len);
    buf_fini(&b);
    (void)prog;
}

/* The private policy directory goes when we exit early. */
static struct sv_gw *sv_exit_gw;

static void
cleanup_at_exit(void)
{
    sv_gw_cleanup(sv_exit_gw);
}

/* Build the plan or exit: 2 for bad input (with the policy loader's
 * FILE:LINE:COL diagnostics), 125 when the sandbox cannot be provided. */
static void
plan_or_exit(const struct sb_opts *o, struct sb_plan *p)
{
    struct policy_diags d;
    struct err e;
    int rc;

    err_clear(&e);
    policy_diags_init(&d);
    rc = sb_plan_build(o, environ, p, &d, &e);
    for (size_t i = 0; i < d.n; i++)
        fprintf(stderr, "%s\n", d.v[i].text);
    policy_diags_fini(&d);
    if (rc == 0)
        return;
    log_error("%s", e.msg[0] ? e.msg : "invalid sandbox request");
    exit(rc == SB_PLAN_CANNOT ? SB_EXIT_SETUP : EXIT_USAGE);
}

static struct termios sv_saved_tio;
static bool sv_tio_saved;

static void
restore_tty(void)
{
    if (sv_tio_saved)
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &sv_saved_tio);
}

/* --tty: the user's terminal goes raw (the pty inside does the line
 * discipline, job control and signals); restored at exit. */
static void
raw_tty(void)
{
    struct termios t;

    if (!isatty(STDIN_FILENO) || tcgetattr(STDIN_FILENO, &sv_saved_tio) < 0)
        return;
    sv_tio_saved = true;
    t = sv_saved_tio;
    cfmakeraw(&t);
    tcsetattr(STDIN_FILENO, TCSAFLUSH, &t);
}

int
sv_status_code(int st)
{
    if (WIFEXITED(st))
        return WEXITSTATUS(st);
    if (WIFSIGNALED(st))
        return 128 + WTERMSIG(st);
    return SB_EXIT_SETUP;
}

int
supervisor_main(int argc, char **argv)
{
    const char *prog = "openshell-supervisor";
    const int fwd[] = { SV_FORWARDED_SIGNALS };
    struct sb_opts o;
    struct sb_plan p;
    sigset_t set;
    int sync_pipe[2] = { -1, -1 };
    int ctl[2] = { -1, -1 }, err_pipe[2] = { -1, -1 }, out_pipe[2] = { -1, -1 };
    struct sv_gw *gw = NULL;
    pid_t pid;

    switch (sv_opts_parse(prog, argc, argv, &o)) {
    case 1:
        fputs(supervisor_usage, stdout);
        fputs(sv_opts_help, stdout);
        fputs(supervisor_gateway_help, stdout);
        free(o.env);
        return 0;
    case 2: free(o.env); return applet_print_version(prog);
    }
    if (o.token_file)
        read_token(prog, o.token_file);
    /* Show up as the supervisor in ps and /proc/1/comm, not as "exe". */
    prctl(PR_SET_NAME, "openshell-supervisor", 0, 0, 0);
    /* With a gateway: its policy (written to a private file, which
     * becomes --policy) and credentials, before anything is built. */
    if (o.gateway) {
        gw = sv_gw_start(&o, sv_token);
        sv_exit_gw = gw;
        atexit(cleanup_at_exit);
    }
    plan_or_exit(&o, &p);
    if (o.explain) {
        struct buf b = BUF_INIT;
        sb_plan_explain(&p, &b);
        fputs(buf_cstr(&b), stdout);
        buf_fini(&b);
        return 0;
    }
    /* Signals are taken synchronously (sigwaitinfo) from here on; PID 1
     * sets up its own handling. */
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    for (size_t i = 0; i < sizeof(fwd) / sizeof(fwd[0]); i++)
        sigaddset(&set, fwd[i]);
    sigprocmask(SIG_BLOCK, &set, NULL);

    if (p.userns && pipe2(sync_pipe, O_CLOEXEC) < 0)
        die_errno("pipe");
    /* The session's channels to PID 1: control (spawn requests, exits) and
     * its stderr and stdout as pipes (its and the proxy's log lines, the
     * agent's output), echoed to ours and shipped to the gateway. */
    if (gw && (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, ctl) < 0 ||
               pipe2(err_pipe, O_CLOEXEC) < 0 || (!p.tty && pipe2(out_pipe, O_CLOEXEC) < 0)))
        die_errno("supervisor channels");
    if (p.tty)
        raw_tty();
    pid = sb_ns_clone(SB_NS_FLAGS | (p.userns ? CLONE_NEWUSER : 0));
    if (pid < 0) {
        errno = -pid;
        restore_tty();
        sv_gw_cleanup(gw);
        log_error("cannot create the sandbox namespaces: clone: %s%s", strerror(errno),
                  p.userns ? " (are unprivileged user namespaces disabled?)" : "");
        return SB_EXIT_SETUP;
    }
    if (pid == 0) {
        /* PID 1 and everything it forks never hold the token. */
        explicit_bzero(sv_token, sizeof(sv_token));
        if (gw) {
            explicit_bzero(gw->auth, sizeof(gw->auth));
            close(ctl[0]);
            close(err_pipe[0]);
            if (dup2(err_pipe[1], STDERR_FILENO) < 0)
                _exit(SB_EXIT_SETUP);
            close(err_pipe[1]);
            if (out_pipe[1] >= 0) {
                close(out_pipe[0]);
                if (dup2(out_pipe[1], STDOUT_FILENO) < 0)
                    _exit(SB_EXIT_SETUP);
                close(out_pipe[1]);
            }
        }
        if (p.userns) {
            char c;
            /* Wait until the parent has written our uid/gid maps. */
            close(sync_pipe[1]);
            if (read(sync_pipe[0], &c, 1) != 1)
                _exit(SB_EXIT_SETUP);
            close(sync_pipe[0]);
        }
        sv_pid1(&p, gw ? ctl[1] : -1);
    }
    if (p.userns) {
        struct err e;
        close(sync_pipe[0]);
        if (sb_ns_write_maps(pid, p.outer_uid, p.outer_gid, &e) < 0) {
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
            restore_tty();
            sv_gw_cleanup(gw);
            log_error("user namespace: %s", e.msg);
            return SB_EXIT_SETUP;
        }
        if (write(sync_pipe[1], "x", 1) != 1)
            die_errno("sync pipe");
        close(sync_pipe[1]);
    }
    /* Our memory holds the host environment: not for the agent's eyes (set
     * only now: a non-dumpable parent could not write the child's maps, and
     * the child inherits the flag). PID 1 sets it for itself too. */
    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
    log_debug("sandbox %s: PID 1 is %d", p.name, (int)pid);
    if (gw) {
        int code;

        close(ctl[1]);
        close(err_pipe[1]);
        if (out_pipe[1] >= 0)
            close(out_pipe[1]);
        sv_exit_gw = NULL;
        code = sv_gw_run(gw, pid, ctl[0], err_pipe[0], out_pipe[0], &set);
        restore_tty();
        sb_plan_fini(&p);
        free(o.env);
        return code;
    }

    for (;;) {
        siginfo_t si;
        int st;
        int sig = sigwaitinfo(&set, &si);

        if (sig < 0)
            continue;
        if (sig != SIGCHLD) {
            /* PID 1 passes it on to the agent's process group. */
            kill(pid, sig);
            continue;
        }
        if (waitpid(pid, &st, WNOHANG) == pid) {
            restore_tty();
            sb_plan_fini(&p);
            free(o.env);
            return sv_status_code(st);
        }
    }
}
