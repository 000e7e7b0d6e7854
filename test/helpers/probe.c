/*
 * probe: run inside a sandbox by the e2e tests. Each argument names one
 * attempt; the probe makes it and prints one line "ACTION: ok" or
 * "ACTION: ERRNO" (the errno's name, e.g. EPERM), so tests can assert the
 * exact outcome. Actions taking a value use ACTION:VALUE (read:/root,
 * tcp:198.51.100.1:80). Informational actions (caps, ids) print fields.
 * The probe exits 0 unless an action asks otherwise (exit:N, signal:N).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static const struct {
    int e;
    const char *n;
} errnames[] = {
    { EPERM, "EPERM" },
    { ENOENT, "ENOENT" },
    { ESRCH, "ESRCH" },
    { EINTR, "EINTR" },
    { EIO, "EIO" },
    { EBADF, "EBADF" },
    { EAGAIN, "EAGAIN" },
    { ENOMEM, "ENOMEM" },
    { EACCES, "EACCES" },
    { EFAULT, "EFAULT" },
    { EBUSY, "EBUSY" },
    { EEXIST, "EEXIST" },
    { ENOTDIR, "ENOTDIR" },
    { EISDIR, "EISDIR" },
    { EINVAL, "EINVAL" },
    { ENOSPC, "ENOSPC" },
    { EROFS, "EROFS" },
    { ENOSYS, "ENOSYS" },
    { EAFNOSUPPORT, "EAFNOSUPPORT" },
    { EPROTONOSUPPORT, "EPROTONOSUPPORT" },
    { ENETUNREACH, "ENETUNREACH" },
    { ECONNREFUSED, "ECONNREFUSED" },
    { EHOSTUNREACH, "EHOSTUNREACH" },
    { ETIMEDOUT, "ETIMEDOUT" },
    { EADDRNOTAVAIL, "EADDRNOTAVAIL" },
    { EOPNOTSUPP, "EOPNOTSUPP" },
    { ENOEXEC, "ENOEXEC" },
    { ENOTTY, "ENOTTY" },
    { EXDEV, "EXDEV" },
};

static void
report(const char *what, int rc_errno)
{
    if (rc_errno == 0) {
        printf("%s: ok\n", what);
        return;
    }
    for (size_t i = 0; i < sizeof(errnames) / sizeof(errnames[0]); i++) {
        if (errnames[i].e == rc_errno) {
            printf("%s: %s\n", what, errnames[i].n);
            return;
        }
    }
    printf("%s: errno%d\n", what, rc_errno);
}

/* -1 → errno, anything else → 0 */
static int
res(long rc)
{
    return rc < 0 ? errno : 0;
}

static int
sock(int dom, int type, int proto)
{
    int s = socket(dom, type, proto);

    if (s < 0)
        return errno;
    close(s);
    return 0;
}

/* Add a route through NETLINK_ROUTE: opening works, changing must not. */
static int
route_add(void)
{
    struct {
        struct nlmsghdr n;
        struct rtmsg r;
        char attrs[64];
    } req;
    struct rtattr *a;
    char ans[1024];
    int s = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
    uint32_t gw = htonl(0x7f000001), oif = 1;
    ssize_t n;

    if (s < 0)
        return errno;
    memset(&req, 0, sizeof(req));
    req.n.nlmsg_len = NLMSG_LENGTH(sizeof(struct rtmsg));
    req.n.nlmsg_type = RTM_NEWROUTE;
    req.n.nlmsg_flags = NLM_F_REQUEST | NLM_F_CREATE | NLM_F_ACK;
    req.r.rtm_family = AF_INET;
    req.r.rtm_table = RT_TABLE_MAIN;
    req.r.rtm_protocol = RTPROT_BOOT;
    req.r.rtm_scope = RT_SCOPE_UNIVERSE;
    req.r.rtm_type = RTN_UNICAST;
    a = (struct rtattr *)((char *)&req + NLMSG_ALIGN(req.n.nlmsg_len));
    a->rta_type = RTA_GATEWAY;
    a->rta_len = RTA_LENGTH(4);
    memcpy(RTA_DATA(a), &gw, 4);
    req.n.nlmsg_len = NLMSG_ALIGN(req.n.nlmsg_len) + RTA_ALIGN(a->rta_len);
    a = (struct rtattr *)((char *)&req + req.n.nlmsg_len);
    a->rta_type = RTA_OIF;
    a->rta_len = RTA_LENGTH(4);
    memcpy(RTA_DATA(a), &oif, 4);
    req.n.nlmsg_len += RTA_ALIGN(a->rta_len);
    if (send(s, &req, req.n.nlmsg_len, 0) < 0) {
        int e = errno;
        close(s);
        return e;
    }
    n = recv(s, ans, sizeof(ans), 0);
    close(s);
    if (n < (ssize_t)NLMSG_LENGTH(sizeof(struct nlmsgerr)))
        return EIO;
    return -((struct nlmsgerr *)NLMSG_DATA((struct nlmsghdr *)ans))->error;
}

/* Run FN in a child; an exec that succeeds reports "ok" (the pipe closes
 * without data), a failure sends its errno. */
static int
in_child_exec(int mode)
{
    int p[2], e = 0;
    pid_t pid;

    if (pipe2(p, O_CLOEXEC) < 0)
        return errno;
    pid = fork();
    if (pid < 0)
        return errno;
    if (pid == 0) {
        char *argv[] = { "probe", NULL };
        int fd;
        close(p[0]);
        if (mode == 0) { /* memfd + exec through /proc/self/fd */
            char path[64], buf[65536];
            int self = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
            ssize_t n;
            fd = (int)syscall(SYS_memfd_create, "x", 0);
            if (fd < 0 || self < 0) {
                e = errno;
                (void)!write(p[1], &e, sizeof(e));
                _exit(1);
            }
            while ((n = read(self, buf, sizeof(buf))) > 0)
                (void)!write(fd, buf, (size_t)n);
            snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
            execve(path, argv, environ);
        } else { /* execveat(fd, "", AT_EMPTY_PATH) */
            fd = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
            syscall(SYS_execveat, fd, "", argv, environ, AT_EMPTY_PATH);
        }
        e = errno;
        (void)!write(p[1], &e, sizeof(e));
        _exit(1);
    }
    close(p[1]);
    if (read(p[0], &e, sizeof(e)) != sizeof(e))
        e = 0;
    close(p[0]);
    waitpid(pid, NULL, 0);
    return e;
}

static int
net_connect(const char *spec, int type)
{
    char host[128];
    const char *colon = strrchr(spec, ':');
    struct sockaddr_storage ss;
    socklen_t len;
    int s, rc;

    if (!colon || (size_t)(colon - spec) >= sizeof(host))
        return EINVAL;
    memcpy(host, spec, (size_t)(colon - spec));
    host[colon - spec] = '\0';
    memset(&ss, 0, sizeof(ss));
    if (host[0] == '[') {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        host[strlen(host) - 1] = '\0';
        a->sin6_family = AF_INET6;
        a->sin6_port = htons((uint16_t)atoi(colon + 1));
        if (inet_pton(AF_INET6, host + 1, &a->sin6_addr) != 1)
            return EINVAL;
        len = sizeof(*a);
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        a->sin_family = AF_INET;
        a->sin_port = htons((uint16_t)atoi(colon + 1));
        if (inet_pton(AF_INET, host, &a->sin_addr) != 1)
            return EINVAL;
        len = sizeof(*a);
    }
    s = socket(ss.ss_family, type | SOCK_CLOEXEC, 0);
    if (s < 0)
        return errno;
    if (type == SOCK_DGRAM)
        rc = res(sendto(s, "x", 1, 0, (struct sockaddr *)&ss, len));
    else
        rc = res(connect(s, (struct sockaddr *)&ss, len));
    close(s);
    return rc;
}

static void
status_fields(const char *what, const char *const *keys)
{
    char line[256];
    FILE *f = fopen("/proc/self/status", "re");

    printf("%s:", what);
    while (f && fgets(line, sizeof(line), f)) {
        for (size_t i = 0; keys[i]; i++) {
            size_t n = strlen(keys[i]);
            if (strncmp(line, keys[i], n) == 0 && line[n] == ':') {
                char *v = line + n + 1;
                v += strspn(v, " \t");
                v[strcspn(v, "\n")] = '\0';
                printf(" %s=%s", keys[i], v);
            }
        }
    }
    if (f)
        fclose(f);
    printf("\n");
}

static void
forkbomb(void)
{
    static pid_t kids[100000];
    size_t n = 0;
    int e = 0;

    while (n < sizeof(kids) / sizeof(kids[0])) {
        pid_t p = fork();
        if (p == 0) {
            pause();
            _exit(0);
        }
        if (p < 0) {
            e = errno;
            break;
        }
        kids[n++] = p;
    }
    for (size_t i = 0; i < n; i++)
        kill(kids[i], SIGKILL);
    for (size_t i = 0; i < n; i++)
        waitpid(kids[i], NULL, 0);
    printf("forkbomb: %s after %zu\n", e == EAGAIN ? "EAGAIN" : e ? "other" : "unbounded", n);
}

static int
one(const char *a)
{
    struct sock_filter allow[] = { BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW) };
    struct sock_fprog prog = { 1, allow };
    char buf[64];

    if (!strcmp(a, "socket-packet"))
        report(a, sock(AF_PACKET, SOCK_RAW, 0));
    else if (!strcmp(a, "socket-raw"))
        report(a, sock(AF_INET, SOCK_RAW, IPPROTO_ICMP));
    else if (!strcmp(a, "socket-raw6"))
        report(a, sock(AF_INET6, SOCK_RAW, IPPROTO_ICMPV6));
    else if (!strcmp(a, "socket-vsock"))
        report(a, sock(40, SOCK_STREAM, 0));
    else if (!strcmp(a, "socket-bluetooth"))
        report(a, sock(31, SOCK_RAW, 1));
    else if (!strcmp(a, "socket-unix"))
        report(a, sock(AF_UNIX, SOCK_STREAM, 0));
    else if (!strcmp(a, "socket-tcp"))
        report(a, sock(AF_INET, SOCK_STREAM, 0));
    else if (!strcmp(a, "netlink-diag"))
        report(a, sock(AF_NETLINK, SOCK_RAW, NETLINK_SOCK_DIAG));
    else if (!strcmp(a, "netlink-netfilter"))
        report(a, sock(AF_NETLINK, SOCK_RAW, NETLINK_NETFILTER));
    else if (!strcmp(a, "netlink-route"))
        report(a, sock(AF_NETLINK, SOCK_RAW, NETLINK_ROUTE));
    else if (!strcmp(a, "route-add"))
        report(a, route_add());
    else if (!strcmp(a, "setns")) {
        int fd = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
        report(a, fd < 0 ? errno : res(setns(fd, CLONE_NEWNET)));
    } else if (!strcmp(a, "unshare-user"))
        report(a, res(unshare(CLONE_NEWUSER)));
    else if (!strcmp(a, "unshare-net"))
        report(a, res(unshare(CLONE_NEWNET)));
    else if (!strcmp(a, "unshare-mnt"))
        report(a, res(unshare(CLONE_NEWNS)));
    else if (!strcmp(a, "clone-newuser")) {
        long p = syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0);
        if (p == 0)
            _exit(0);
        if (p > 0)
            waitpid((pid_t)p, NULL, 0);
        report(a, res(p));
    } else if (!strcmp(a, "clone3")) {
        uint64_t args[11] = { 0 };
        long p;
        args[4] = SIGCHLD; /* exit_signal */
        p = syscall(435, args, sizeof(args));
        if (p == 0)
            _exit(0);
        if (p > 0)
            waitpid((pid_t)p, NULL, 0);
        report(a, res(p));
    } else if (!strcmp(a, "fork")) {
        pid_t p = fork();
        if (p == 0)
            _exit(0);
        if (p > 0)
            waitpid(p, NULL, 0);
        report(a, res(p));
    } else if (!strcmp(a, "memfd-create"))
        report(a, res(syscall(SYS_memfd_create, "x", 0)));
    else if (!strcmp(a, "memfd-exec"))
        report(a, in_child_exec(0));
    else if (!strcmp(a, "execveat-empty"))
        report(a, in_child_exec(1));
    else if (!strcmp(a, "ptrace-attach"))
        report(a, res(ptrace(PTRACE_ATTACH, 1, 0, 0)));
    else if (!strcmp(a, "ptrace-traceme"))
        report(a, res(ptrace(PTRACE_TRACEME, 0, 0, 0)));
    else if (!strcmp(a, "process-vm-readv")) {
        struct iovec l = { buf, 8 }, r = { (void *)0x400000, 8 };
        report(a, res(syscall(SYS_process_vm_readv, 1, &l, 1, &r, 1, 0)));
    } else if (!strcmp(a, "pidfd-getfd")) {
        long pfd = syscall(434, getpid(), 0);
        report(a, pfd < 0 ? errno : res(syscall(438, pfd, 0, 0)));
    } else if (!strcmp(a, "pidfd-open"))
        report(a, res(syscall(434, getpid(), 0)));
    else if (!strcmp(a, "io-uring"))
        report(a, res(syscall(425, 1, buf)));
    else if (!strcmp(a, "bpf"))
        report(a, res(syscall(SYS_bpf, 0, buf, 8)));
    else if (!strcmp(a, "userfaultfd"))
        report(a, res(syscall(SYS_userfaultfd, 0)));
    else if (!strcmp(a, "perf-event-open")) {
        char attr[128] = { 0 };
        report(a, res(syscall(SYS_perf_event_open, attr, 0, -1, -1, 0)));
    } else if (!strcmp(a, "init-module"))
        report(a, res(syscall(SYS_init_module, buf, 0, "")));
    else if (!strcmp(a, "finit-module"))
        report(a, res(syscall(SYS_finit_module, 0, "", 0)));
    else if (!strcmp(a, "kexec-load"))
        report(a, res(syscall(SYS_kexec_load, 0, 0, 0, 0)));
    else if (!strcmp(a, "keyctl"))
        report(a, res(syscall(SYS_keyctl, 0, -3, 0)));
    else if (!strcmp(a, "add-key"))
        report(a, res(syscall(SYS_add_key, "user", "probe", "v", 1, -3)));
    else if (!strcmp(a, "seccomp-filter"))
        report(a, res(syscall(SYS_seccomp, 1, 0, &prog)));
    else if (!strcmp(a, "prctl-seccomp"))
        report(a, res(prctl(PR_SET_SECCOMP, 2, &prog, 0, 0)));
    else if (!strcmp(a, "mount-bind"))
        report(a, res(mount("/tmp", "/usr/bin", NULL, MS_BIND, NULL)));
    else if (!strcmp(a, "umount"))
        report(a, res(umount2("/proc", MNT_DETACH)));
    else if (!strcmp(a, "pivot-root"))
        report(a, res(syscall(SYS_pivot_root, "/tmp", "/tmp")));
    else if (!strcmp(a, "fsopen"))
        report(a, res(syscall(430, "tmpfs", 0)));
    else if (!strcmp(a, "open-tree"))
        report(a, res(syscall(428, AT_FDCWD, "/tmp", 1)));
    else if (!strcmp(a, "move-mount"))
        report(a, res(syscall(429, AT_FDCWD, "/tmp", AT_FDCWD, "/usr", 0)));
    else if (!strcmp(a, "mount-setattr")) {
        uint64_t attr[4] = { 0 };
        report(a, res(syscall(442, AT_FDCWD, "/tmp", 0, attr, sizeof(attr))));
    } else if (!strcmp(a, "tiocsti"))
        report(a, res(ioctl(0, TIOCSTI, "x")));
    else if (!strcmp(a, "setuid0"))
        report(a, res(setuid(0)));
    else if (!strcmp(a, "kill-1"))
        report(a, res(kill(1, SIGTERM)));
    else if (!strncmp(a, "tcp:", 4))
        report(a, net_connect(a + 4, SOCK_STREAM));
    else if (!strncmp(a, "udp:", 4))
        report(a, net_connect(a + 4, SOCK_DGRAM));
    else if (!strncmp(a, "dns:", 4)) {
        struct addrinfo *ai = NULL;
        int rc = getaddrinfo(a + 4, "443", NULL, &ai);
        printf("%s: %s\n", a, rc == 0 ? "ok" : "fail");
        if (ai)
            freeaddrinfo(ai);
    } else if (!strncmp(a, "read:", 5)) {
        int fd = open(a + 5, O_RDONLY | O_CLOEXEC);
        int e = fd < 0 ? errno : 0;
        if (fd >= 0 && read(fd, buf, sizeof(buf)) < 0 && errno != EISDIR)
            e = errno;
        if (fd >= 0)
            close(fd);
        report(a, e);
    } else if (!strncmp(a, "write:", 6)) {
        int fd = open(a + 6, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        report(a, fd < 0 ? errno : 0);
        if (fd >= 0)
            close(fd);
    } else if (!strcmp(a, "caps")) {
        static const char *const k[] = { "CapInh", "CapPrm",     "CapEff",  "CapBnd",
                                         "CapAmb", "NoNewPrivs", "Seccomp", NULL };
        status_fields(a, k);
    } else if (!strcmp(a, "ids")) {
        gid_t g[64];
        int n = getgroups(64, g);
        printf("ids: uid=%u euid=%u gid=%u egid=%u groups=%d\n", getuid(), geteuid(), getgid(),
               getegid(), n);
    } else if (!strcmp(a, "forkbomb"))
        forkbomb();
    else if (!strncmp(a, "exit:", 5)) {
        fflush(stdout);
        exit(atoi(a + 5));
    } else if (!strncmp(a, "signal:", 7)) {
        fflush(stdout);
        signal(atoi(a + 7), SIG_DFL);
        raise(atoi(a + 7));
    } else if (!strncmp(a, "sleep:", 6)) {
        struct timespec ts = { atoi(a + 6) / 1000, (atoi(a + 6) % 1000) * 1000000L };
        fflush(stdout);
        nanosleep(&ts, NULL);
    } else if (!strcmp(a, "trap-term")) {
        /* print the signal we get, then exit 0 */
        sigset_t s;
        int sig;
        sigemptyset(&s);
        sigaddset(&s, SIGTERM);
        sigaddset(&s, SIGINT);
        sigaddset(&s, SIGHUP);
        sigaddset(&s, SIGUSR1);
        sigprocmask(SIG_BLOCK, &s, NULL);
        printf("ready\n");
        fflush(stdout);
        sigwait(&s, &sig);
        printf("got %s\n", strsignal(sig));
    } else if (!strcmp(a, "ignore-term")) {
        signal(SIGTERM, SIG_IGN);
    } else {
        fprintf(stderr, "probe: unknown action %s\n", a);
        return 2;
    }
    fflush(stdout);
    return 0;
}

/* "probe no-landlock CMD ARGS...": run CMD as if the kernel had no
 * Landlock (landlock_create_ruleset fails with ENOSYS, as on old kernels),
 * to test best_effort and hard_requirement. Needs root (CAP_SYS_ADMIN). */
static int
no_landlock(char **argv)
{
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, 0), /* seccomp_data.nr */
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 444, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = { 4, f };

    if (syscall(SYS_seccomp, 1, 0, &prog) < 0) {
        perror("probe: seccomp");
        return 2;
    }
    execvp(argv[0], argv);
    perror(argv[0]);
    return 127;
}

int
main(int argc, char **argv)
{
    if (argc > 2 && !strcmp(argv[1], "no-landlock"))
        return no_landlock(argv + 2);
    for (int i = 1; i < argc; i++)
        if (one(argv[i]))
            return 2;
    return 0;
}
