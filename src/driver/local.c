/*
 * driver/local: sandboxes as detached local processes (contract in
 * include/driver.h).
 */
#include "driver.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "xfuncs.h"

struct drv {
    char *dir;
};

const char *
drv_phase_name(enum drv_phase p)
{
    switch (p) {
    case DRV_PROVISIONING: return "provisioning";
    case DRV_READY: return "ready";
    case DRV_EXITED: return "exited";
    case DRV_ERROR: return "error";
    }
    return "error";
}

static bool
drv_id_ok(const char *id)
{
    size_t n = strlen(id);

    if (n == 0 || n > 64 || id[0] == '.')
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((id[i] >= 'a' && id[i] <= 'z') || (id[i] >= 'A' && id[i] <= 'Z') ||
              (id[i] >= '0' && id[i] <= '9') || id[i] == '.' || id[i] == '_' || id[i] == '-'))
            return false;
    return true;
}

/* Start time (clock ticks since boot) of PID, or 0 when it does not exist. */
static unsigned long long
drv_starttime(pid_t pid)
{
    char path[64], data[1024], *p;
    unsigned long long v = 0;
    ssize_t n;
    int fd, field;

    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
        return 0;
    n = read(fd, data, sizeof(data) - 1);
    close(fd);
    if (n <= 0)
        return 0;
    data[n] = '\0';
    if (!(p = strrchr(data, ')')))
        return 0;
    /* Field 3 (state) follows ") "; the start time is field 22. */
    p++;
    for (field = 2; field < 22 && p; field++)
        p = strchr(p + 1, ' ');
    if (p)
        v = strtoull(p + 1, NULL, 10);
    /* A zombie has ended: not alive. */
    if (strstr(data, ") Z ") || strstr(data, ") X "))
        return 0;
    return v;
}

struct drv *
drv_local_new(const char *state_dir, struct err *e)
{
    struct drv *d;

    if (mkdir(state_dir, 0700) < 0 && errno != EEXIST) {
        err_errno(e, "driver state directory %s", state_dir);
        return NULL;
    }
    d = xcalloc(1, sizeof(*d));
    d->dir = xstrdup(state_dir);
    return d;
}

void
drv_free(struct drv *d)
{
    if (!d)
        return;
    free(d->dir);
    free(d);
}

/* Write DATA to DIR/NAME atomically (temporary file, fsync, rename). */
static int
drv_put(const char *dir, const char *name, const char *data)
{
    char tmp[4096], dst[4096];
    int fd, rc = 0;

    snprintf(tmp, sizeof(tmp), "%s/.%s.tmp", dir, name);
    snprintf(dst, sizeof(dst), "%s/%s", dir, name);
    if ((fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600)) < 0)
        return -errno;
    if (write_full(fd, data, strlen(data)) < 0 || fsync(fd) < 0)
        rc = -errno;
    close(fd);
    if (rc == 0 && rename(tmp, dst) < 0)
        rc = -errno;
    return rc;
}

/* The monitor: runs in the grandchild, never returns. */
static void __attribute__((noreturn))
drv_monitor(const char *sdir, const char *path, const char *const *argv, const char *cwd,
            int ready_fd)
{
    char line[128];
    int status, devnull, out;
    pid_t child, r;
    ssize_t w;

    signal(SIGTERM, SIG_IGN);
    signal(SIGINT, SIG_IGN);
    signal(SIGHUP, SIG_IGN);
    signal(SIGPIPE, SIG_IGN);
    snprintf(line, sizeof(line), "%s/output", sdir);
    out = open(line, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
    /* Keep nothing of the caller's (its listening sockets, database, state
     * lock): stdio on /dev/null and the output file, the ready pipe on 3
     * (close-on-exec), every other descriptor closed. */
    if (devnull < 0 || out < 0)
        _exit(1);
    if (dup2(devnull, 0) < 0 || dup2(out, 1) < 0 || dup2(out, 2) < 0 || dup2(ready_fd, 3) < 0)
        _exit(1);
    fcntl(3, F_SETFD, FD_CLOEXEC);
    ready_fd = 3;
    if (syscall(SYS_close_range, 4U, ~0U, 0U) < 0)
        for (int fd = 4; fd < 65536; fd++)
            close(fd);
    child = fork();
    if (child < 0)
        _exit(1);
    if (child == 0) {
        setpgid(0, 0);
        signal(SIGTERM, SIG_DFL);
        signal(SIGINT, SIG_DFL);
        signal(SIGHUP, SIG_DFL);
        signal(SIGPIPE, SIG_DFL);
        if (chdir(cwd ? cwd : sdir) < 0)
            _exit(126);
        execv(path, (char *const *)argv);
        _exit(127);
    }
    setpgid(child, child);
    snprintf(line, sizeof(line), "%d %llu %d\n", (int)getpid(), drv_starttime(getpid()),
             (int)child);
    if (drv_put(sdir, "monitor", line) < 0)
        _exit(1);
    /* A caller killed meanwhile (a gateway's kill -9 mid-create) makes this
     * fail with EPIPE: the sandbox lives on all the same, monitored. */
    w = write(ready_fd, "1", 1);
    (void)w;
    close(ready_fd);
    do
        r = waitpid(child, &status, 0);
    while (r < 0 && errno == EINTR);
    if (r < 0)
        _exit(1);
    if (WIFEXITED(status))
        snprintf(line, sizeof(line), "%d 0\n", WEXITSTATUS(status));
    else
        snprintf(line, sizeof(line), "-1 %d\n", WTERMSIG(status));
    _exit(drv_put(sdir, "exit", line) < 0);
}

int
drv_create(struct drv *d, const char *id, const char *path, const char *const *argv,
           const char *cwd, struct err *e)
{
    AUTOFREE char *sdir = NULL;
    int pfd[2], status;
    pid_t a;
    char c;
    ssize_t n;

    if (!drv_id_ok(id))
        return err_set(e, EINVAL, "sandbox id \"%s\": letters, digits, '.', '_', '-' only", id);
    if (!path && argv)
        path = argv[0];
    if (!argv || !argv[0] || !path || path[0] != '/')
        return err_set(e, EINVAL, "sandbox %s: the command must be an absolute path", id);
    sdir = xasprintf("%s/%s", d->dir, id);
    /* The directory may hold what the caller put there first (the token,
     * logs); a recorded monitor means the sandbox exists. */
    if (mkdir(sdir, 0700) < 0 && errno != EEXIST)
        return err_errno(e, "sandbox %s: %s", id, sdir);
    {
        char mpath[4096];

        snprintf(mpath, sizeof(mpath), "%s/monitor", sdir);
        if (access(mpath, F_OK) == 0)
            return err_set(e, EEXIST, "sandbox %s: already started", id);
    }
    if (pipe2(pfd, O_CLOEXEC) < 0)
        return err_errno(e, "sandbox %s: pipe", id);
    a = fork();
    if (a < 0) {
        close(pfd[0]);
        close(pfd[1]);
        return err_errno(e, "sandbox %s: fork", id);
    }
    if (a == 0) {
        /* The intermediate: new session, then the monitor is orphaned
         * (reparented to init or the nearest subreaper). */
        close(pfd[0]);
        if (setsid() < 0)
            _exit(1);
        a = fork();
        if (a < 0)
            _exit(1);
        if (a == 0)
            drv_monitor(sdir, path, argv, cwd, pfd[1]);
        _exit(0);
    }
    close(pfd[1]);
    while (waitpid(a, &status, 0) < 0 && errno == EINTR)
        ;
    do
        n = read(pfd[0], &c, 1);
    while (n < 0 && errno == EINTR);
    close(pfd[0]);
    if (n != 1)
        return err_set(e, EIO, "sandbox %s: the monitor did not start", id);
    return 0;
}

/* Parse ID's monitor file: *PID, *START, *CHILD. -ENOENT when absent. */
static int
drv_read_monitor(const char *sdir, pid_t *pid, unsigned long long *start, pid_t *child)
{
    char path[4096];
    struct buf b = BUF_INIT;
    struct err e;
    int p = 0, c = 0, rc;

    snprintf(path, sizeof(path), "%s/monitor", sdir);
    if ((rc = read_file(path, 256, &b, &e)) < 0)
        return rc;
    if (sscanf(b.data ? b.data : "", "%d %llu %d", &p, start, &c) != 3 || p <= 0 || c <= 0)
        rc = -EINVAL;
    buf_fini(&b);
    *pid = p;
    *child = c;
    return rc;
}

int
drv_get(struct drv *d, const char *id, struct drv_status *out, struct err *e)
{
    AUTOFREE char *sdir = NULL;
    char path[4096];
    struct buf b = BUF_INIT;
    unsigned long long start = 0;
    pid_t child;
    struct stat sb;
    int code, sig, rc;

    memset(out, 0, sizeof(*out));
    if (!drv_id_ok(id))
        return err_set(e, EINVAL, "sandbox id \"%s\": letters, digits, '.', '_', '-' only", id);
    sdir = xasprintf("%s/%s", d->dir, id);
    if (stat(sdir, &sb) < 0)
        return err_set(e, ENOENT, "sandbox %s: not known to the local driver", id);
    snprintf(path, sizeof(path), "%s/exit", sdir);
    if (read_file(path, 256, &b, e) == 0) {
        rc = sscanf(b.data ? b.data : "", "%d %d", &code, &sig);
        buf_fini(&b);
        if (rc == 2) {
            drv_read_monitor(sdir, &out->pid, &start, &child);
            out->phase = DRV_EXITED;
            out->exit_code = code;
            out->exit_signal = sig;
            return 0;
        }
    }
    rc = drv_read_monitor(sdir, &out->pid, &start, &child);
    if (rc == -ENOENT) {
        out->phase = DRV_PROVISIONING;
        return 0;
    }
    if (rc == 0 && start && drv_starttime(out->pid) == start) {
        out->phase = DRV_READY;
        return 0;
    }
    /* The monitor may have written the exit record just now. */
    if (read_file(path, 256, &b, e) == 0) {
        buf_fini(&b);
        return drv_get(d, id, out, e);
    }
    out->phase = DRV_ERROR;
    return 0;
}

int
drv_list(struct drv *d, void (*fn)(const char *id, void *arg), void *arg, struct err *e)
{
    DIR *dir = opendir(d->dir);
    struct dirent *de;

    if (!dir)
        return err_errno(e, "driver state directory %s", d->dir);
    while ((de = readdir(dir)))
        if (de->d_name[0] != '.' && drv_id_ok(de->d_name))
            fn(de->d_name, arg);
    closedir(dir);
    return 0;
}

static void
drv_sleep_ms(int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

int
drv_stop(struct drv *d, const char *id, int grace_ms, struct err *e)
{
    AUTOFREE char *sdir = NULL;
    struct drv_status st;
    unsigned long long start;
    pid_t pid, child;
    int rc, waited;

    if ((rc = drv_get(d, id, &st, e)) < 0)
        return rc;
    if (st.phase != DRV_READY)
        return 0;
    sdir = xasprintf("%s/%s", d->dir, id);
    if ((rc = drv_read_monitor(sdir, &pid, &start, &child)) < 0)
        return err_set(e, -rc, "sandbox %s: bad monitor record", id);
    /* The main process's group first: the monitor ignores SIGTERM and
     * records the exit. */
    kill(-child, SIGTERM);
    for (waited = 0; waited < grace_ms; waited += 10) {
        if (drv_get(d, id, &st, e) == 0 && st.phase != DRV_READY)
            return 0;
        drv_sleep_ms(10);
    }
    kill(-child, SIGKILL);
    for (waited = 0; waited < 2000; waited += 10) {
        if (drv_get(d, id, &st, e) == 0 && st.phase != DRV_READY)
            return 0;
        drv_sleep_ms(10);
    }
    /* The monitor itself: last resort. */
    if (drv_starttime(pid) == start)
        kill(pid, SIGKILL);
    return 0;
}

int
drv_signal(struct drv *d, const char *id, int sig, struct err *e)
{
    AUTOFREE char *sdir = NULL;
    struct drv_status st;
    unsigned long long start;
    pid_t pid, child;
    int rc;

    if ((rc = drv_get(d, id, &st, e)) < 0)
        return rc;
    if (st.phase != DRV_READY)
        return -ESRCH;
    sdir = xasprintf("%s/%s", d->dir, id);
    if ((rc = drv_read_monitor(sdir, &pid, &start, &child)) < 0)
        return err_set(e, -rc, "sandbox %s: bad monitor record", id);
    if (kill(-child, sig) < 0 && errno != ESRCH)
        return err_errno(e, "sandbox %s: signal %d", id, sig);
    return 0;
}

int
drv_forget(struct drv *d, const char *id, struct err *e)
{
    static const char *const files[] = { "monitor", "exit" };
    struct drv_status st;
    char path[4096];
    int rc;

    if ((rc = drv_get(d, id, &st, e)) < 0)
        return rc;
    if (st.phase == DRV_READY)
        return err_set(e, EBUSY, "sandbox %s: running", id);
    /* A main process that outlived its monitor would run twice after a
     * restart: end its group first, checked by its command line (which
     * names the sandbox) so that a reused pid is never hit. */
    if (st.phase == DRV_ERROR) {
        unsigned long long start;
        pid_t pid, child;
        struct buf cmd = BUF_INIT;
        struct err e2;

        snprintf(path, sizeof(path), "%s/%s", d->dir, id);
        if (drv_read_monitor(path, &pid, &start, &child) == 0) {
            snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)child);
            if (read_file(path, 65536, &cmd, &e2) == 0 && cmd.len &&
                memmem(cmd.data, cmd.len, id, strlen(id)))
                kill(-child, SIGKILL);
            buf_fini(&cmd);
        }
    }
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        snprintf(path, sizeof(path), "%s/%s/%s", d->dir, id, files[i]);
        if (unlink(path) < 0 && errno != ENOENT)
            return err_errno(e, "sandbox %s: removing %s", id, path);
    }
    return 0;
}

static int
drv_rm_one(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
    (void)sb;
    (void)ftw;
    if (type == FTW_DP)
        return rmdir(path) < 0 && errno != ENOENT ? -1 : 0;
    return unlink(path) < 0 && errno != ENOENT ? -1 : 0;
}

int
drv_delete(struct drv *d, const char *id, int grace_ms, struct err *e)
{
    AUTOFREE char *sdir = NULL;
    struct stat sb;
    int rc;

    if ((rc = drv_stop(d, id, grace_ms, e)) < 0 && rc != -ENOENT)
        return rc;
    sdir = xasprintf("%s/%s", d->dir, id);
    if (lstat(sdir, &sb) < 0 && errno == ENOENT)
        return rc;
    /* Everything under it (token, logs, the work directory), depth first,
     * never following a symlink the sandbox may have left. */
    if (nftw(sdir, drv_rm_one, 16, FTW_DEPTH | FTW_PHYS) < 0)
        return err_errno(e, "sandbox %s: removing %s", id, sdir);
    return 0;
}
