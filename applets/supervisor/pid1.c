/*
 * pid1.c: the inside of a sandbox. PID 1 builds the view (mounts, the
 * agent's network namespace, the Landlock ruleset, a pty), forks the agent,
 * then forwards signals, reaps every orphan, enforces --timeout and relays
 * the pty until the agent exits. PID 1's own exit makes the kernel kill
 * whatever is still running in the pid namespace: nothing outlives it.
 *
 * Fail closed: any setup step that fails ends PID 1 (and so the sandbox)
 * with status 125 before the agent runs.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "px_spawn.h"
#include "sb_landlock.h"
#include "sb_mount.h"
#include "sb_ns.h"
#include "sb_proc.h"
#include "sb_seccomp.h"
#include "supervisor.h"
#include "xfuncs.h"

static void __attribute__((noreturn)) setup_failed(const char *step, const char *msg)
{
    log_error("sandbox setup failed: %s: %s", step, msg);
    _exit(SB_EXIT_SETUP);
}

static void
noop_handler(int sig)
{
    (void)sig;
}

static int
write_sysctl(const char *path, const char *val)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    int rc;

    if (fd < 0)
        return -1;
    rc = write_full(fd, val, strlen(val));
    close(fd);
    if (rc < 0) {
        errno = -rc;
        return -1;
    }
    return 0;
}

static uint64_t
now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Run CMD: a name without '/' is looked up in the agent's PATH, the way
 * execvp would (musl's execvpe reads the caller's PATH, not ENVP's). Only
 * execve(2) is called after seccomp is in place. */
static void __attribute__((noreturn)) exec_cmd(char **argv, char **envp)
{
    const char *path = "/usr/local/bin:/usr/bin:/bin";
    int err = ENOENT;
    bool only_eacces = true, tried = false;

    if (strchr(argv[0], '/')) {
        execve(argv[0], argv, envp);
        err = errno;
    } else {
        for (size_t i = 0; envp[i]; i++)
            if (strncmp(envp[i], "PATH=", 5) == 0)
                path = envp[i] + 5;
        while (*path) {
            size_t n = strcspn(path, ":");
            char full[4096];
            if (buf_fmt_fixed(full, sizeof(full), "%.*s/%s", (int)n, n ? path : ".", argv[0]) ==
                0) {
                execve(full, argv, envp);
                /* An unreadable PATH entry (EACCES) does not make a command
                 * that exists nowhere "not executable". */
                tried = true;
                if (errno != EACCES)
                    only_eacces = false;
                if (errno != ENOENT && errno != ENOTDIR && errno != EACCES)
                    err = errno;
            }
            path += n;
            if (*path == ':')
                path++;
        }
        if (tried && only_eacces)
            err = EACCES;
    }
    log_error("%s: %s", argv[0], err == ENOENT ? "command not found" : strerror(err));
    _exit(err == ENOENT ? 127 : 126);
}

/* The agent, between fork and execve. Order matters and each step is
 * checked: a failure ends the child with 125 and the agent never runs. */
static void __attribute__((noreturn))
agent_exec(struct sb_plan *p, const struct sb_netns *ns, int ruleset, const char *pty_name)
{
    const char *step = "";
    sigset_t none;
    int keep[1] = { ruleset };
    int rc;

    /* Default dispositions and no blocked signals, as a fresh process. */
    for (int s = 1; s < NSIG; s++)
        signal(s, SIG_DFL);
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);

    /* Its own process group (PID 1 signals the group); with --tty its own
     * session with the pty as controlling terminal, for job control. */
    if (pty_name) {
        int fd;
        if (setsid() < 0)
            setup_failed("setsid", strerror(errno));
        fd = open(pty_name, O_RDWR);
        if (fd < 0 || ioctl(fd, TIOCSCTTY, 0) < 0)
            setup_failed("pty", strerror(errno));
        if (dup2(fd, 0) < 0 || dup2(fd, 1) < 0 || dup2(fd, 2) < 0)
            setup_failed("pty", strerror(errno));
        if (fd > 2)
            close(fd);
    } else if (setpgid(0, 0) < 0) {
        setup_failed("setpgid", strerror(errno));
    }
    /* Loopback only: the namespace PID 1 created for us. */
    if ((rc = sb_netns_enter(ns->fd)) < 0)
        setup_failed("join the agent network namespace", strerror(-rc));
    /* Nothing inherited but stdio (and the ruleset, closed after use). */
    if ((rc = sb_proc_close_fds(keep, ruleset >= 0 ? 1 : 0)) < 0)
        setup_failed("close inherited fds", strerror(-rc));
    if ((rc = sb_proc_rlimits(SB_NPROC_MAX)) < 0)
        setup_failed("rlimits", strerror(-rc));
    if ((rc = sb_proc_drop_privs(p->uid, p->gid, !p->userns, &step)) < 0)
        setup_failed(step, strerror(-rc));
    if ((rc = sb_proc_no_new_privs()) < 0)
        setup_failed("no_new_privs", strerror(-rc));
    if (ruleset >= 0) {
        if ((rc = sb_landlock_enforce(ruleset)) < 0) {
            if (p->ll_hard)
                setup_failed("landlock_restrict_self", strerror(-rc));
            log_warnx("LANDLOCK NOT ENFORCED: landlock_restrict_self: %s (best_effort)",
                      strerror(-rc));
        }
        close(ruleset);
    }
    /* Last: after this only execve. */
    if ((rc = sb_seccomp_install(&p->bpf)) < 0)
        setup_failed("seccomp", strerror(-rc));
    if (p->idle) {
        /* --idle: no main process, only this placeholder under the agent's
         * restrictions (the proxy anchors caller identity at it); SIGTERM
         * ends it, and with it the sandbox. */
        for (;;)
            pause();
    }
    exec_cmd(p->argv, p->envp);
}

/* The egress proxy (outer network namespace, this pid namespace): started
 * with the listeners the netns thread made, its CA certificate placed with
 * the system's as the agent's trust bundle. Fails closed: no proxy, no
 * agent. */
static void
start_proxy(const struct sb_plan *p, struct sb_netns *ns, struct px_spawn *px, int policy_dir,
            const char *policy_base)
{
    extern char **environ;
    struct px_spawn_opts o = { 0 };
    struct buf pem = BUF_INIT;
    struct err e;

    err_clear(&e);
    o.listen_fds = ns->listen_fds;
    o.nlisten = ns->nlisten;
    o.policy_dir_fd = policy_dir;
    o.diag_fd = ns->diag_fd;
    o.sandbox = p->name;
    o.policy_base = policy_base;
    o.extra = p->proxy_args;
    o.nextra = p->nproxy_args;
    o.envp = environ;
    if (px_spawn_start(px, &o, &pem, &e) < 0)
        setup_failed("egress proxy", e.msg);
    close(policy_dir);
    /* PID 1 needs the listeners no more: the proxy has its copies. */
    for (int i = 0; i < ns->nlisten; i++)
        close(ns->listen_fds[i]);
    ns->nlisten = 0;
    if (ns->diag_fd >= 0)
        close(ns->diag_fd);
    ns->diag_fd = -1;
    if (px_spawn_bundle(&pem, &e) < 0)
        setup_failed("CA trust bundle", e.msg);
    buf_fini(&pem);
}

/* A pty from the sandbox's own devpts: master for PID 1, slave name for the
 * agent; the window size copied from the user's terminal. */
static int
open_pty(char *name, size_t size)
{
    struct winsize ws;
    int unlock = 0, n;
    int m = open("/dev/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC);

    if (m < 0)
        setup_failed("open /dev/ptmx", strerror(errno));
    if (ioctl(m, TIOCSPTLCK, &unlock) < 0 || ioctl(m, TIOCGPTN, &n) < 0)
        setup_failed("pty", strerror(errno));
    buf_fmt_fixed(name, size, "/dev/pts/%d", n);
    if (ioctl(STDIN_FILENO, TIOCGWINSZ, &ws) == 0)
        ioctl(m, TIOCSWINSZ, &ws);
    return m;
}

/* Copy what is readable from FROM to TO. Returns false at EOF/error. */
static bool
pump(int from, int to)
{
    char b[8192];
    ssize_t n = read(from, b, sizeof(b));

    if (n <= 0)
        return n < 0 && (errno == EINTR || errno == EAGAIN);
    return write_full(to, b, (size_t)n) == 0;
}

static int
status_code(int st)
{
    if (WIFEXITED(st))
        return WEXITSTATUS(st);
    if (WIFSIGNALED(st))
        return 128 + WTERMSIG(st);
    return SB_EXIT_SETUP;
}

void
sv_pid1(struct sb_plan *p)
{
    const int fwd[] = { SV_FORWARDED_SIGNALS };
    struct sb_mount_spec ms = { p->root, p->workdir, p->userns };
    struct sb_netns ns;
    struct sigaction sa;
    struct err e;
    struct buf report = BUF_INIT;
    sigset_t set;
    char pty_name[64];
    int ruleset = -1, master = -1, sfd, rc, code = -1;
    uint64_t deadline = 0, kill_at = 0;
    bool timed_out = false, in_open = true, out_open = true;
    pid_t agent;
    struct px_spawn px = { 0, -1 };
    int policy_dir = -1;
    const char *policy_base = NULL;

    err_clear(&e);
    /* If the outer supervisor dies, so does the sandbox. */
    prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
    /* Our own session: terminal signals reach the outer supervisor only,
     * which forwards them exactly once. */
    setsid();
    if (sethostname(p->name, strlen(p->name)) < 0)
        setup_failed("sethostname", strerror(errno));
    /* The policy file's directory, opened before the view replaces the
     * root: the proxy reads (and watches) the user's file through it. */
    if (p->proxy) {
        AUTOFREE char *dir = xstrdup(p->policy_path);
        char *slash = strrchr(dir, '/');

        if (slash == dir)
            dir[1] = '\0';
        else if (slash)
            *slash = '\0';
        policy_dir = open(slash ? dir : ".", O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (policy_dir < 0)
            setup_failed("policy directory", strerror(errno));
        policy_base =
            strrchr(p->policy_path, '/') ? strrchr(p->policy_path, '/') + 1 : p->policy_path;
    }
    /* The network namespace is made on a thread while the view is built. */
    ns.proxy = p->proxy;
    if (sb_netns_begin(&ns, &e) < 0)
        setup_failed("network namespace", e.msg);
    if (sb_mount_build(&ms, &e) < 0)
        setup_failed("filesystem view", e.msg);
    /* Fileless exec: memfds of this pid namespace are created
     * non-executable (MFD_EXEC refused), so a memfd cannot be execve'd
     * through /proc/self/fd. JITs still map them executable: only exec is
     * affected. The setting is per pid namespace and can only be raised.
     * Only the host's root may write it: in a user namespace it stays as
     * the host has it (the agent can exec what it writes to /tmp anyway,
     * so this is about traces on disk, not about privilege). */
    if (write_sysctl("/proc/sys/vm/memfd_noexec", "2") < 0) {
        if (!p->userns)
            setup_failed("vm.memfd_noexec", strerror(errno));
        log_debug("vm.memfd_noexec not settable in a user namespace: %s", strerror(errno));
    }
    if (sb_netns_end(&ns, &e) < 0)
        setup_failed("network namespace", e.msg);
    if (p->proxy)
        start_proxy(p, &ns, &px, policy_dir, policy_base);

    if (p->ll_on) {
        rc = sb_landlock_prepare(p->ll_abi, p->ll_paths, p->ll_npaths, p->ll_hard, &report, &e);
        if (rc < 0 && p->ll_hard)
            setup_failed("landlock (hard_requirement)", e.msg);
        if (rc < 0)
            log_warnx("LANDLOCK NOT ENFORCED (best_effort): %s", e.msg);
        ruleset = rc;
        if (rc >= 0 && log_enabled(LOG_LVL_DEBUG)) {
            struct buf h = BUF_INIT;
            sb_landlock_rights_str(sb_landlock_handled(p->ll_abi), &h);
            log_debug("landlock ABI %d enforced, handled: %s", p->ll_abi, buf_cstr(&h));
            buf_fini(&h);
            for (char *line = report.data, *nl; line && *line; line = nl + 1) {
                nl = strchr(line, '\n');
                if (!nl)
                    break;
                *nl = '\0';
                log_debug("landlock rule:%s", line);
            }
        }
    } else {
        log_warnx("LANDLOCK NOT ENFORCED: the kernel has no Landlock (%s); landlock "
                  "best_effort runs the agent WITHOUT filesystem restrictions",
                  strerror(-p->ll_abi));
    }
    buf_fini(&report);
    if (p->tty)
        master = open_pty(pty_name, sizeof(pty_name));

    /* PID 1 gets no default signal actions: a signal with no handler is
     * dropped, so install real (no-op) handlers, then take them from a
     * signalfd. */
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = noop_handler;
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    sigaction(SIGCHLD, &sa, NULL);
    for (size_t i = 0; i < sizeof(fwd) / sizeof(fwd[0]); i++) {
        sigaddset(&set, fwd[i]);
        sigaction(fwd[i], &sa, NULL);
    }
    sigprocmask(SIG_BLOCK, &set, NULL);
    sfd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
    if (sfd < 0)
        setup_failed("signalfd", strerror(errno));

    /* The view is final: PID 1 gives up mounting, bpf, modules, kexec
     * (reference prelude). The agent inherits this under its own filter. */
    if ((rc = sb_seccomp_install(&p->prelude)) < 0)
        setup_failed("supervisor seccomp prelude", strerror(-rc));
    agent = fork();
    if (agent < 0)
        setup_failed("fork", strerror(errno));
    if (agent == 0)
        agent_exec(p, &ns, ruleset, p->tty ? pty_name : NULL);
    /* Caller identity is anchored at the agent's main process. */
    if (px.pid && px_spawn_announce(&px, agent) < 0)
        log_warnx("cannot tell the proxy the agent's pid: its connections will be denied");
    if (ruleset >= 0)
        close(ruleset);
    sb_netns_fini(&ns);
    if (p->timeout_ms)
        deadline = now_ms() + p->timeout_ms;

    while (code < 0) {
        struct pollfd pfd[3] = { { sfd, POLLIN, 0 }, { -1, POLLIN, 0 }, { -1, POLLIN, 0 } };
        int timeout = -1;
        uint64_t now = now_ms();

        if (master >= 0) {
            pfd[1].fd = out_open ? master : -1;
            pfd[2].fd = in_open ? STDIN_FILENO : -1;
        }
        if (kill_at)
            timeout = kill_at > now ? (int)(kill_at - now) : 0;
        else if (deadline)
            timeout = deadline > now ? (int)(deadline - now) : 0;
        rc = poll(pfd, 3, timeout);
        if (rc < 0 && errno != EINTR)
            setup_failed("poll", strerror(errno));
        now = now_ms();
        if (kill_at && now >= kill_at) {
            /* Grace period over: our exit SIGKILLs the whole namespace. */
            log_warnx("timeout: agent did not exit after SIGTERM, killing");
            _exit(SB_EXIT_TIMEOUT);
        }
        if (deadline && !kill_at && now >= deadline) {
            log_warnx("timeout after %llu ms: SIGTERM to the agent",
                      (unsigned long long)p->timeout_ms);
            timed_out = true;
            kill(-agent, SIGTERM);
            kill(agent, SIGTERM);
            kill_at = now + SB_KILL_GRACE_MS;
        }
        if (rc <= 0)
            continue;
        /* EIO: no slave open right now; the agent's exit ends the loop. */
        if (pfd[1].revents & (POLLIN | POLLHUP | POLLERR))
            out_open = pump(master, STDOUT_FILENO);
        if (pfd[2].revents & (POLLIN | POLLHUP | POLLERR)) {
            in_open = pump(STDIN_FILENO, master);
            /* End of input: the pty's end-of-file character, so a shell fed
             * from a pipe sees EOF as it would at a terminal. */
            if (!in_open)
                (void)!write(master, "\x04", 1);
        }
        if (pfd[0].revents & POLLIN) {
            struct signalfd_siginfo si;
            while (read(sfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
                int sig = (int)si.ssi_signo;
                if (sig == SIGCHLD)
                    continue;
                if (sig == SIGWINCH && master >= 0) {
                    struct winsize ws;
                    /* The pty tells its foreground group itself. */
                    if (ioctl(STDIN_FILENO, TIOCGWINSZ, &ws) == 0)
                        ioctl(master, TIOCSWINSZ, &ws);
                    continue;
                }
                if (kill(-agent, sig) < 0)
                    kill(agent, sig);
            }
            /* Reap everything: the agent and any orphan re-parented to us. */
            for (;;) {
                int st;
                pid_t w = waitpid(-1, &st, WNOHANG);
                if (w <= 0)
                    break;
                if (w == agent)
                    code = timed_out ? SB_EXIT_TIMEOUT
                           : p->idle && WIFSIGNALED(st) &&
                                   (WTERMSIG(st) == SIGTERM || WTERMSIG(st) == SIGINT ||
                                    WTERMSIG(st) == SIGHUP)
                               ? 0
                               : status_code(st);
                else if (px.pid && w == px.pid) {
                    log_warnx("the egress proxy exited (status %d): the agent has no network",
                              status_code(st));
                    px.pid = 0;
                }
            }
        }
    }
    if (master >= 0) {
        /* Drain what the agent wrote last. */
        struct pollfd pf = { master, POLLIN, 0 };
        while (poll(&pf, 1, 20) > 0 && (pf.revents & POLLIN) && pump(master, STDOUT_FILENO))
            ;
    }
    _exit(code);
}
