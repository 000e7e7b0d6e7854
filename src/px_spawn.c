/*
 * px_spawn.c: starting the egress proxy for a sandbox (include/px_spawn.h).
 */
#include "px_spawn.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "tls.h"
#include "xfuncs.h"

#ifndef SYS_close_range
#define SYS_close_range 436
#endif

const char *const px_spawn_env[] = {
    "HTTP_PROXY=" PX_SPAWN_URL,
    "HTTPS_PROXY=" PX_SPAWN_URL,
    "ALL_PROXY=" PX_SPAWN_URL,
    "http_proxy=" PX_SPAWN_URL,
    "https_proxy=" PX_SPAWN_URL,
    "all_proxy=" PX_SPAWN_URL,
    "grpc_proxy=" PX_SPAWN_URL,
    /* Nothing bypasses the proxy: loopback in the agent's namespace holds
     * only the proxy itself. */
    "NO_PROXY=",
    "no_proxy=",
    /* Node >= 24 reads the variables above itself when this is set. */
    "NODE_USE_ENV_PROXY=1",
    "SSL_CERT_FILE=" PX_SPAWN_BUNDLE,
    "REQUESTS_CA_BUNDLE=" PX_SPAWN_BUNDLE,
    "CURL_CA_BUNDLE=" PX_SPAWN_BUNDLE,
    "GIT_SSL_CAINFO=" PX_SPAWN_BUNDLE,
    "PIP_CERT=" PX_SPAWN_BUNDLE,
    "AWS_CA_BUNDLE=" PX_SPAWN_BUNDLE,
    "CARGO_HTTP_CAINFO=" PX_SPAWN_BUNDLE,
    "NODE_EXTRA_CA_CERTS=" PX_SPAWN_CA,
    NULL,
};

static int
px_spawn_listen_one(int family, struct err *e)
{
    struct sockaddr_storage ss;
    socklen_t sl;
    int one = 1, fd;

    memset(&ss, 0, sizeof(ss));
    if (family == AF_INET) {
        struct sockaddr_in *sin = (struct sockaddr_in *)&ss;

        sin->sin_family = AF_INET;
        sin->sin_port = htons(PX_SPAWN_PORT);
        sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        sl = sizeof(*sin);
    } else {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;

        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons(PX_SPAWN_PORT);
        sin6->sin6_addr = in6addr_loopback;
        sl = sizeof(*sin6);
    }
    fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return err_errno(e, "socket for the proxy listener");
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&ss, sl) < 0 || listen(fd, 1024) < 0) {
        int rc = err_errno(e, "proxy listener on %s:%d", family == AF_INET ? "127.0.0.1" : "[::1]",
                           PX_SPAWN_PORT);
        close(fd);
        return rc;
    }
    return fd;
}

int
px_spawn_listen(int *fds, int max, struct err *e)
{
    struct err e6;
    int n = 0, fd;

    if (max < 1)
        return err_set(e, EINVAL, "no room for the proxy listeners");
    fd = px_spawn_listen_one(AF_INET, e);
    if (fd < 0)
        return fd;
    fds[n++] = fd;
    if (n < max) {
        err_clear(&e6);
        fd = px_spawn_listen_one(AF_INET6, &e6);
        if (fd >= 0)
            fds[n++] = fd;
        else
            log_debug("no IPv6 proxy listener: %s", e6.msg);
    }
    return n;
}

static uint64_t
px_spawn_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* The proxy child, between fork and execve: fds to fixed numbers, a clean
 * signal state, everything else closed. */
static void __attribute__((noreturn))
px_spawn_child(const struct px_spawn_opts *o, int ca_wr, int ctl_rd)
{
    /* Slots: 3.. listeners, then the CA pipe, the control pipe, the
     * policy directory. Move the sources out of the way first. */
    int n = o->nlisten, src[8], slot = 3, first_free, nfd;
    char **argv;
    size_t na = 0;
    char num[16];
    sigset_t none;
    struct buf pol = BUF_INIT;

    if (n > 4)
        n = 4;
    for (int i = 0; i < n; i++)
        src[i] = o->listen_fds[i];
    src[n] = ca_wr;
    src[n + 1] = ctl_rd;
    src[n + 2] = o->policy_dir_fd;
    src[n + 3] = o->diag_fd;
    nfd = o->diag_fd >= 0 ? n + 4 : n + 3;
    for (int i = 0; i < nfd; i++)
        if ((src[i] = fcntl(src[i], F_DUPFD_CLOEXEC, 64)) < 0)
            _exit(125);
    for (int i = 0; i < nfd; i++)
        if (dup2(src[i], slot + i) < 0) /* dup2 clears FD_CLOEXEC */
            _exit(125);
    first_free = slot + nfd;
    if (syscall(SYS_close_range, (unsigned)first_free, ~0u, 0) < 0)
        for (int fd = first_free; fd < 1024; fd++)
            close(fd);
    for (int s = 1; s < NSIG; s++)
        signal(s, SIG_DFL);
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);

    argv = xcalloc(2 * (size_t)n + 18 + o->nextra, sizeof(char *));
    argv[na++] = "openshell-proxy";
    for (int i = 0; i < n; i++) {
        argv[na++] = "--listen-fd";
        buf_fmt_fixed(num, sizeof(num), "%d", slot + i);
        argv[na++] = xstrdup(num);
    }
    argv[na++] = "--ca-pem-fd";
    argv[na++] = xasprintf("%d", slot + n);
    argv[na++] = "--control-fd";
    argv[na++] = xasprintf("%d", slot + n + 1);
    buf_printf(&pol, "/proc/self/fd/%d/%s", slot + n + 2, o->policy_base);
    argv[na++] = "--policy";
    argv[na++] = buf_steal(&pol);
    if (o->sandbox) {
        argv[na++] = "--sandbox";
        argv[na++] = (char *)o->sandbox;
    }
    if (o->diag_fd >= 0) {
        argv[na++] = "--diag-fd";
        argv[na++] = xasprintf("%d", slot + n + 3);
    }
    /* The supervisor's log format (its level travels in the environment). */
    argv[na++] = "--log-format";
    argv[na++] = log_is_json() ? "json" : "text";
    for (size_t i = 0; i < o->nextra; i++)
        argv[na++] = (char *)o->extra[i];
    argv[na] = NULL;
    execve("/proc/self/exe", argv, o->envp);
    _exit(127);
}

int
px_spawn_start(struct px_spawn *ps, const struct px_spawn_opts *o, struct buf *ca_pem,
               struct err *e)
{
    int ca[2], ctl[2], rc;
    unsigned limit = o->ca_timeout_ms ? o->ca_timeout_ms : 5000;
    uint64_t deadline;
    pid_t pid;

    ps->pid = 0;
    ps->control_fd = -1;
    if (pipe2(ca, O_CLOEXEC) < 0)
        return err_errno(e, "pipe for the proxy's CA");
    if (pipe2(ctl, O_CLOEXEC) < 0) {
        rc = err_errno(e, "pipe for the proxy's control channel");
        close(ca[0]);
        close(ca[1]);
        return rc;
    }
    pid = fork();
    if (pid < 0) {
        rc = err_errno(e, "fork the proxy");
        close(ca[0]);
        close(ca[1]);
        close(ctl[0]);
        close(ctl[1]);
        return rc;
    }
    if (pid == 0)
        px_spawn_child(o, ca[1], ctl[0]);
    close(ca[1]);
    close(ctl[0]);
    ps->pid = pid;
    ps->control_fd = ctl[1];
    /* The proxy writes its CA certificate once set up, then closes. */
    buf_reset(ca_pem);
    deadline = px_spawn_now_ms() + limit;
    for (;;) {
        struct pollfd pf = { ca[0], POLLIN, 0 };
        uint64_t now = px_spawn_now_ms();
        char chunk[4096];
        ssize_t n;

        if (now >= deadline) {
            rc = err_set(e, ETIMEDOUT, "the proxy did not start within %u ms", limit);
            break;
        }
        if (poll(&pf, 1, (int)(deadline - now)) < 0 && errno != EINTR) {
            rc = err_errno(e, "waiting for the proxy");
            break;
        }
        n = read(ca[0], chunk, sizeof(chunk));
        if (n < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (n < 0) {
            rc = err_errno(e, "reading the proxy's CA certificate");
            break;
        }
        if (n == 0) {
            rc = strstr(buf_cstr(ca_pem), "-----END CERTIFICATE-----")
                     ? 0
                     : err_set(e, EPROTO,
                               "the proxy exited before handing over its CA "
                               "certificate (see its messages above)");
            break;
        }
        if (ca_pem->len + (size_t)n > 64 * 1024) {
            rc = err_set(e, EPROTO, "the proxy's CA certificate is too large");
            break;
        }
        buf_append(ca_pem, chunk, (size_t)n);
    }
    close(ca[0]);
    if (rc < 0) {
        int st;

        kill(pid, SIGKILL);
        waitpid(pid, &st, 0);
        px_spawn_fini(ps);
        ps->pid = 0;
    }
    return rc;
}

static int
px_spawn_write(const char *path, const struct buf *b, struct err *e)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0444);
    int rc;

    if (fd < 0)
        return err_errno(e, "create %s", path);
    rc = write_full(fd, b->data, b->len);
    if (rc == 0 && fchmod(fd, 0444) < 0)
        rc = -errno;
    close(fd);
    if (rc < 0)
        return err_set(e, -rc, "write %s: %s", path, strerror(-rc));
    return 0;
}

int
px_spawn_bundle(const struct buf *ca_pem, struct err *e)
{
    struct buf bundle = BUF_INIT;
    const char *sys = tls_system_bundle_path();
    int rc;

    if (mkdir(PX_SPAWN_DIR, 0755) < 0 && errno != EEXIST)
        return err_errno(e, "mkdir %s", PX_SPAWN_DIR);
    if (sys && read_file(sys, 16 << 20, &bundle, e) < 0)
        return err_wrap(e, "reading the system trust bundle");
    if (bundle.len && bundle.data[bundle.len - 1] != '\n')
        buf_putc(&bundle, '\n');
    buf_append(&bundle, ca_pem->data, ca_pem->len);
    rc = px_spawn_write(PX_SPAWN_BUNDLE, &bundle, e);
    buf_fini(&bundle);
    if (rc == 0)
        rc = px_spawn_write(PX_SPAWN_CA, ca_pem, e);
    return rc;
}

int
px_spawn_announce(struct px_spawn *ps, pid_t agent)
{
    char line[32];

    if (ps->control_fd < 0)
        return -EBADF;
    buf_fmt_fixed(line, sizeof(line), "agent %d\n", (int)agent);
    return write_full(ps->control_fd, line, strlen(line));
}

int
px_spawn_send_credentials(struct px_spawn *ps, const char *json_doc, struct err *e)
{
    struct buf line = BUF_INIT;
    size_t n = strlen(json_doc);
    int rc;

    if (ps->control_fd < 0)
        return err_set(e, EBADF, "no control channel to the proxy");
    /* One line: a newline inside would split the message. */
    if (n == 0 || n > (1u << 20) || memchr(json_doc, '\n', n))
        return err_set(e, EINVAL, "credentials document: empty, over 1 MiB or multi-line");
    buf_puts(&line, "{\"type\":\"credentials\",\"doc\":");
    buf_append(&line, json_doc, n);
    buf_puts(&line, "}\n");
    rc = write_full(ps->control_fd, line.data, line.len);
    explicit_bzero(line.data, line.len);
    buf_fini(&line);
    if (rc < 0)
        return err_set(e, -rc, "writing credentials to the proxy: %s", strerror(-rc));
    return 0;
}

void
px_spawn_fini(struct px_spawn *ps)
{
    if (ps->control_fd >= 0)
        close(ps->control_fd);
    ps->control_fd = -1;
}
