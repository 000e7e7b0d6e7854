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

#include <cjson/cJSON.h>

#include "log.h"
#include "px_spawn.h"
#include "sb_landlock.h"
#include "sb_mount.h"
#include "sb_ns.h"
#include "sb_proc.h"
#include "sb_user.h"
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

/* The agent or an exec'd process, between fork and execve: one path for
 * both, so an exec gets exactly the agent's restrictions. Order matters and
 * each step is checked: a failure ends the child with 125 and nothing runs.
 * X->stdio (when not -1) become fds 0-2; X->pty_name makes the pty's slave
 * the controlling terminal instead. */
static void __attribute__((noreturn))
child_exec(struct sb_plan *p, int netns_fd, int ruleset, const struct sv_child *x)
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

    /* Its own process group (PID 1 signals the group); with a pty its own
     * session with the pty as controlling terminal, for job control. */
    if (x->pty_name) {
        int fd;
        if (setsid() < 0)
            setup_failed("setsid", strerror(errno));
        fd = open(x->pty_name, O_RDWR);
        if (fd < 0 || ioctl(fd, TIOCSCTTY, 0) < 0)
            setup_failed("pty", strerror(errno));
        if (dup2(fd, 0) < 0 || dup2(fd, 1) < 0 || dup2(fd, 2) < 0)
            setup_failed("pty", strerror(errno));
        if (fd > 2)
            close(fd);
    } else {
        if (setpgid(0, 0) < 0)
            setup_failed("setpgid", strerror(errno));
        for (int i = 0; i < 3; i++)
            if (x->stdio[i] >= 0 && x->stdio[i] != i && dup2(x->stdio[i], i) < 0)
                setup_failed("stdio", strerror(errno));
    }
    /* Loopback only: the namespace PID 1 created for us. */
    if ((rc = sb_netns_enter(netns_fd)) < 0)
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
    /* As the agent's user: a directory it may not enter is refused. */
    if (x->cwd && chdir(x->cwd) < 0) {
        log_error("workdir %s: %s", x->cwd, strerror(errno));
        _exit(SB_EXIT_SETUP);
    }
    if (ruleset >= 0) {
        if ((rc = sb_landlock_enforce(ruleset)) < 0) {
            if (p->ll_hard)
                setup_failed("landlock_restrict_self", strerror(-rc));
            log_warnx("LANDLOCK NOT ENFORCED: landlock_restrict_self: %s (best_effort)",
                      strerror(-rc));
        }
        close(ruleset);
    }
    /* Last: after this only execve (or our own tar code). */
    if ((rc = sb_seccomp_install(&p->bpf)) < 0)
        setup_failed("seccomp", strerror(-rc));
    if (x->task)
        _exit(x->task(x));
    if (!x->argv) {
        /* --idle: no main process, only this placeholder under the agent's
         * restrictions (the proxy anchors caller identity at it); SIGTERM
         * ends it, and with it the sandbox. */
        for (;;)
            pause();
    }
    exec_cmd(x->argv, x->envp);
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

/* ------------------------------------------------------------------ exec relays */

#define SV_MAX_CHILDREN 1024

/* Processes PID 1 started for the outer supervisor (exec relays). */
static struct {
    long id;
    pid_t pid;
} sv_kids[SV_MAX_CHILDREN];
static size_t sv_nkids;

static void
ctl_reply(int ctl, const char *op, long id, const char *key, long num, const char *err, int fd)
{
    struct buf b = BUF_INIT;

    buf_printf(&b, "{\"op\":\"%s\",\"id\":%ld", op, id);
    if (key)
        buf_printf(&b, ",\"%s\":%ld", key, num);
    if (err) {
        buf_puts(&b, ",\"error\":");
        buf_put_json_str(&b, err, strlen(err));
    }
    buf_putc(&b, '}');
    if (sv_ctl_send(ctl, buf_cstr(&b), &fd, fd >= 0 ? 1 : 0) < 0)
        log_warnx("control channel: cannot answer %s %ld: %s", op, id, strerror(errno));
    buf_fini(&b);
}

/* A NULL-terminated copy of the string array J (NULL if J is not one or
 * holds a non-string). Free with sb_env_free(). */
static char **
json_strv(const cJSON *j, size_t max)
{
    const cJSON *it;
    char **v;
    size_t n = 0;

    if (!cJSON_IsArray(j) || (size_t)cJSON_GetArraySize(j) > max)
        return NULL;
    v = xcalloc((size_t)cJSON_GetArraySize(j) + 1, sizeof(*v));
    cJSON_ArrayForEach(it, j)
    {
        if (!cJSON_IsString(it)) {
            sb_env_free(v);
            return NULL;
        }
        v[n++] = xstrdup(it->valuestring);
    }
    return v;
}

/* The agent's environment with OVER ("K=V", later wins) applied. */
static char **
env_merge(char *const *base, char *const *over)
{
    size_t nb = 0, no = 0, n = 0;
    char **v;

    while (base && base[nb])
        nb++;
    while (over && over[no])
        no++;
    v = xcalloc(nb + no + 1, sizeof(*v));
    for (size_t i = 0; i < nb; i++) {
        size_t k = strcspn(base[i], "=");
        bool replaced = false;

        for (size_t j = 0; j < no && !replaced; j++)
            replaced = strncmp(over[j], base[i], k + 1) == 0;
        if (!replaced)
            v[n++] = xstrdup(base[i]);
    }
    for (size_t j = 0; j < no; j++) {
        size_t k = strcspn(over[j], "=");
        bool dup = false;

        for (size_t i = j + 1; i < no && !dup; i++)
            dup = strncmp(over[i], over[j], k + 1) == 0;
        if (!dup && over[j][k] == '=')
            v[n++] = xstrdup(over[j]);
    }
    return v;
}

/* A pty from the sandbox's devpts for an exec: master (returned), slave
 * name in NAME; -errno on failure. */
static int
exec_pty(char *name, size_t size, int cols, int rows)
{
    struct winsize ws = { 0 };
    int unlock = 0, n;
    int m = open("/dev/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC);

    if (m < 0)
        return -errno;
    if (ioctl(m, TIOCSPTLCK, &unlock) < 0 || ioctl(m, TIOCGPTN, &n) < 0) {
        int rc = -errno;
        close(m);
        return rc;
    }
    buf_fmt_fixed(name, size, "/dev/pts/%d", n);
    ws.ws_col = (unsigned short)(cols > 0 && cols < 10000 ? cols : 80);
    ws.ws_row = (unsigned short)(rows > 0 && rows < 10000 ? rows : 24);
    ioctl(m, TIOCSWINSZ, &ws);
    return m;
}

/* One message from the outer supervisor. */
static void
ctl_handle(struct sb_plan *p, int ctl, int netns_fd, int ruleset, struct px_spawn *px,
           const char *msg, int *fds, int nfds)
{
    cJSON *j = cJSON_Parse(msg);
    const cJSON *op = j ? cJSON_GetObjectItemCaseSensitive(j, "op") : NULL;
    const cJSON *jid = j ? cJSON_GetObjectItemCaseSensitive(j, "id") : NULL;
    long id = cJSON_IsNumber(jid) ? (long)jid->valuedouble : -1;

    if (!cJSON_IsString(op)) {
        log_warnx("control channel: malformed message");
        goto out;
    }
    if (strcmp(op->valuestring, "credentials") == 0) {
        const cJSON *doc = cJSON_GetObjectItemCaseSensitive(j, "doc");
        char *text = doc ? cJSON_PrintUnformatted(doc) : NULL;
        struct err e;

        err_clear(&e);
        if (text && px->pid && px_spawn_send_credentials(px, text, &e) < 0)
            log_warnx("credentials for the proxy: %s", e.msg);
        free(text);
        goto out;
    }
    if (strcmp(op->valuestring, "signal") == 0) {
        const cJSON *sig = cJSON_GetObjectItemCaseSensitive(j, "sig");

        for (size_t i = 0; i < sv_nkids; i++)
            if (sv_kids[i].id == id && cJSON_IsNumber(sig) && sig->valueint > 0 &&
                sig->valueint < NSIG) {
                if (kill(-sv_kids[i].pid, sig->valueint) < 0)
                    kill(sv_kids[i].pid, sig->valueint);
            }
        goto out;
    }
    if (strcmp(op->valuestring, "spawn") == 0) {
        const cJSON *tty = cJSON_GetObjectItemCaseSensitive(j, "tty");
        const cJSON *cwd = cJSON_GetObjectItemCaseSensitive(j, "cwd");
        const cJSON *task = cJSON_GetObjectItemCaseSensitive(j, "task");
        const cJSON *path = cJSON_GetObjectItemCaseSensitive(j, "path");
        const cJSON *cols = cJSON_GetObjectItemCaseSensitive(j, "cols");
        const cJSON *rows = cJSON_GetObjectItemCaseSensitive(j, "rows");
        char **argv = json_strv(cJSON_GetObjectItemCaseSensitive(j, "argv"), 4096);
        char **over = json_strv(cJSON_GetObjectItemCaseSensitive(j, "env"), 4096);
        struct sv_child x = { .stdio = { -1, -1, -1 } };
        char pty_name[64];
        int master = -1;
        pid_t pid;

        x.task = NULL;
        if (cJSON_IsString(task) && strcmp(task->valuestring, "exec") != 0) {
            x.task = sv_task_find(task->valuestring);
            if (!x.task) {
                ctl_reply(ctl, "failed", id, NULL, 0, "unknown operation", -1);
                goto spawn_out;
            }
            x.path = cJSON_IsString(path) ? path->valuestring : NULL;
        } else if (!argv || !argv[0] || !argv[0][0]) {
            ctl_reply(ctl, "failed", id, NULL, 0, "empty command", -1);
            goto spawn_out;
        }
        if (sv_nkids == SV_MAX_CHILDREN) {
            ctl_reply(ctl, "failed", id, NULL, 0, "too many processes in the sandbox", -1);
            goto spawn_out;
        }
        x.argv = argv;
        x.envp = env_merge(p->envp, over);
        x.cwd = cJSON_IsString(cwd) && cwd->valuestring[0] ? cwd->valuestring : "/sandbox";
        if (cJSON_IsTrue(tty)) {
            master = exec_pty(pty_name, sizeof(pty_name), cJSON_IsNumber(cols) ? cols->valueint : 0,
                              cJSON_IsNumber(rows) ? rows->valueint : 0);
            if (master < 0) {
                ctl_reply(ctl, "failed", id, NULL, 0, "cannot open a pty", -1);
                sb_env_free(x.envp);
                goto spawn_out;
            }
            x.pty_name = pty_name;
        } else {
            for (int i = 0; i < 3 && i < nfds; i++)
                x.stdio[i] = fds[i];
        }
        pid = fork();
        if (pid == 0) {
            close(ctl);
            child_exec(p, netns_fd, ruleset, &x);
        }
        sb_env_free(x.envp);
        if (pid < 0) {
            ctl_reply(ctl, "failed", id, NULL, 0, strerror(errno), -1);
        } else {
            sv_kids[sv_nkids].id = id;
            sv_kids[sv_nkids++].pid = pid;
            ctl_reply(ctl, "started", id, "pid", pid, NULL, master);
        }
        if (master >= 0)
            close(master);
    spawn_out:
        sb_env_free(argv);
        sb_env_free(over);
        goto out;
    }
    log_warnx("control channel: unknown operation '%.32s'", op->valuestring);
out:
    for (int i = 0; i < nfds; i++)
        close(fds[i]);
    cJSON_Delete(j);
}

/* A reaped process: an exec relay's? Then tell the outer supervisor. */
static void
ctl_reaped(int ctl, pid_t w, int st)
{
    for (size_t i = 0; i < sv_nkids; i++) {
        if (sv_kids[i].pid != w)
            continue;
        ctl_reply(ctl, "exited", sv_kids[i].id, "code", sv_status_code(st), NULL, -1);
        sv_kids[i] = sv_kids[--sv_nkids];
        return;
    }
}

void
sv_pid1(struct sb_plan *p, int ctl_fd)
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
    if (agent == 0) {
        struct sv_child x = { .argv = p->argv,
                              .envp = p->envp,
                              .pty_name = p->tty ? pty_name : NULL,
                              .stdio = { -1, -1, -1 } };
        if (ctl_fd >= 0)
            close(ctl_fd);
        child_exec(p, ns.fd, ruleset, &x);
    }
    /* Caller identity is anchored at the agent's main process. */
    if (px.pid && px_spawn_announce(&px, agent) < 0)
        log_warnx("cannot tell the proxy the agent's pid: its connections will be denied");
    /* Exec relays need the netns and the ruleset for the sandbox's life. */
    if (ctl_fd < 0) {
        if (ruleset >= 0)
            close(ruleset);
        ruleset = -1;
        sb_netns_fini(&ns);
    }
    if (p->timeout_ms)
        deadline = now_ms() + p->timeout_ms;

    while (code < 0) {
        struct pollfd pfd[4] = {
            { sfd, POLLIN, 0 }, { -1, POLLIN, 0 }, { -1, POLLIN, 0 }, { ctl_fd, POLLIN, 0 }
        };
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
        rc = poll(pfd, 4, timeout);
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
        if (pfd[3].revents & (POLLIN | POLLHUP | POLLERR)) {
            static char msg[SV_CTL_MAX + 1];
            int fds[SV_CTL_MAX_FDS], nfds, n;

            while ((n = sv_ctl_recv(ctl_fd, msg, sizeof(msg), fds, &nfds)) > 0 || n == -EMSGSIZE)
                if (n > 0)
                    ctl_handle(p, ctl_fd, ns.fd, ruleset, &px, msg, fds, nfds);
            if (n == 0) {
                /* The outer supervisor is gone: so is the sandbox. */
                _exit(SB_EXIT_SETUP);
            }
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
                               : sv_status_code(st);
                else if (ctl_fd >= 0 && w != px.pid)
                    ctl_reaped(ctl_fd, w, st);
                else if (px.pid && w == px.pid) {
                    log_warnx("the egress proxy exited (status %d): the agent has no network",
                              sv_status_code(st));
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
