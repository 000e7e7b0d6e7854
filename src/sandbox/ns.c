/* ns.c: sandbox namespaces and the agent's network namespace (see include/sb_ns.h). */
#include "sb_ns.h"

#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "buf.h"
#include "px_ident.h"
#include "px_spawn.h"
#include "xfuncs.h"

pid_t
sb_ns_clone(unsigned long flags)
{
    /* No new stack: the child continues on a copy-on-write copy of ours,
     * exactly like fork(2). */
    long pid = syscall(SYS_clone, flags | SIGCHLD, NULL, NULL, NULL, NULL);

    return pid < 0 ? -errno : (pid_t)pid;
}

static int
write_proc(pid_t pid, const char *file, const char *text, struct err *e)
{
    char path[64];
    AUTOCLOSE int fd = -1;
    int rc;

    buf_fmt_fixed(path, sizeof(path), "/proc/%d/%s", (int)pid, file);
    fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return err_errno(e, "open %s", path);
    if ((rc = write_full(fd, text, strlen(text))) < 0) {
        errno = -rc;
        return err_errno(e, "write %s", path);
    }
    return 0;
}

int
sb_ns_write_maps(pid_t pid, uid_t outer_uid, gid_t outer_gid, struct err *e)
{
    char map[64];
    int rc;

    /* An unprivileged writer must deny setgroups before mapping gids. */
    if ((rc = write_proc(pid, "setgroups", "deny", e)) < 0)
        return rc;
    buf_fmt_fixed(map, sizeof(map), "%u %u 1\n", (unsigned)outer_uid, (unsigned)outer_uid);
    if ((rc = write_proc(pid, "uid_map", map, e)) < 0)
        return rc;
    buf_fmt_fixed(map, sizeof(map), "%u %u 1\n", (unsigned)outer_gid, (unsigned)outer_gid);
    return write_proc(pid, "gid_map", map, e);
}

int
sb_netns_proxy_hook(struct sb_netns *ns, struct err *e)
{
    int n;

    ns->nlisten = 0;
    if (!ns->proxy)
        return 0;
    /* socket/bind/listen on this thread: the sockets are the agent netns's. */
    n = px_spawn_listen(ns->listen_fds, SB_NETNS_MAX_LISTENERS, e);
    if (n < 0)
        return n;
    ns->nlisten = n;
    /* Optional: without it the proxy reads /proc/net/tcp instead. */
    ns->diag_fd = px_ident_diag_open();
    return 0;
}

/* Runs on its own thread: only this thread moves into the new namespace.
 * It must not touch paths (the main thread may be pivoting the root):
 * the namespace fd comes through the /proc fd opened beforehand. */
static void *
netns_thread(void *arg)
{
    struct sb_netns *ns = arg;
    struct ifreq ifr;
    int s;

    if (unshare(CLONE_NEWNET) < 0) {
        ns->rc = err_errno(&ns->err, "unshare(CLONE_NEWNET)");
        return NULL;
    }
    /* Loopback comes up down in a new namespace; 127.0.0.1 and ::1 appear
     * when it goes up. */
    s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0) {
        ns->rc = err_errno(&ns->err, "socket for loopback setup");
        return NULL;
    }
    memset(&ifr, 0, sizeof(ifr));
    buf_copy_fixed(ifr.ifr_name, sizeof(ifr.ifr_name), "lo");
    if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0 ||
        (ifr.ifr_flags |= IFF_UP | IFF_RUNNING, ioctl(s, SIOCSIFFLAGS, &ifr) < 0)) {
        ns->rc = err_errno(&ns->err, "bring up loopback");
        close(s);
        return NULL;
    }
    close(s);
    /* thread-self resolves in the pid namespace of that /proc mount. */
    ns->fd = openat(ns->proc_fd, "thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    if (ns->fd < 0) {
        ns->rc = err_errno(&ns->err, "open /proc/thread-self/ns/net");
        return NULL;
    }
    ns->rc = sb_netns_proxy_hook(ns, &ns->err);
    return NULL;
}

int
sb_netns_begin(struct sb_netns *ns, struct err *e)
{
    int rc;

    ns->fd = -1;
    ns->nlisten = 0;
    ns->diag_fd = -1;
    ns->rc = 0;
    ns->running = false;
    err_clear(&ns->err);
    ns->proc_fd = open("/proc", O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (ns->proc_fd < 0)
        return err_errno(e, "open /proc");
    if ((rc = pthread_create(&ns->thread, NULL, netns_thread, ns)) != 0) {
        close(ns->proc_fd);
        ns->proc_fd = -1;
        return err_set(e, rc, "pthread_create: %s", strerror(rc));
    }
    ns->running = true;
    return 0;
}

int
sb_netns_end(struct sb_netns *ns, struct err *e)
{
    if (ns->running) {
        pthread_join(ns->thread, NULL);
        ns->running = false;
    }
    if (ns->proc_fd >= 0)
        close(ns->proc_fd);
    ns->proc_fd = -1;
    if (ns->rc < 0) {
        int rc = err_set(e, ns->err.code, "%s", ns->err.msg);
        sb_netns_fini(ns);
        return rc;
    }
    return 0;
}

int
sb_netns_create(struct sb_netns *ns, struct err *e)
{
    int rc = sb_netns_begin(ns, e);

    return rc < 0 ? rc : sb_netns_end(ns, e);
}

void
sb_netns_fini(struct sb_netns *ns)
{
    if (ns->fd >= 0)
        close(ns->fd);
    ns->fd = -1;
    for (int i = 0; i < ns->nlisten; i++)
        close(ns->listen_fds[i]);
    ns->nlisten = 0;
    if (ns->diag_fd >= 0)
        close(ns->diag_fd);
    ns->diag_fd = -1;
}

int
sb_netns_enter(int fd)
{
    if (setns(fd, CLONE_NEWNET) < 0)
        return -errno;
    return 0;
}
