/*
 * px_ident.c: caller identity for the proxy (see include/px_ident.h).
 */
#include "px_ident.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wundef"
#include <mbedtls/sha256.h>
#pragma GCC diagnostic pop

#include "buf.h"
#include "log.h"
#include "xfuncs.h"

#define PX_IDENT_CTL_MAX (2 * 1024 * 1024)     /* one control line (a credentials document) */
#define PX_IDENT_TABLE_MAX (16u * 1024 * 1024) /* a tcp table larger than this is refused */

/* What identifies one image of a file without reading it. */
struct px_fp {
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime, ctime;
};

/* One binary path: the first hash seen for it (pinned), the fingerprint of
 * the image it was last verified on, and the last image that failed (its
 * hash differed, or it could not be read), so that one is refused without
 * hashing it again. */
struct px_pin {
    char *path;
    bool pinned;
    uint8_t sha[32];
    struct px_fp fp;
    bool has_bad;
    struct px_fp bad_fp;
    uint8_t bad_sha[32];
    int bad_err; /* 0: hash mismatch; else the -errno of the read */
};

/* A hash for the worker thread: FD (an open /proc/PID/exe) is hashed, the
 * result comes back through the done list. */
struct px_job {
    struct px_job *next;
    char *path;
    int fd;
    struct px_fp fp;
    uint8_t sha[32];
    int rc;
};

struct px_ident {
    char *proc;
    pid_t anchor;
    pid_t self;
    struct px_pin *pins;
    size_t npins, cap;
    struct buf ctl; /* partial control lines (bounded by PX_IDENT_CTL_MAX) */
    bool ctl_skip;  /* dropping the rest of an overlong line */
    void (*ctl_fn)(void *arg, const char *line, size_t n);
    void *ctl_arg;
    /* hashing worker: TODO and DONE are shared under MU; BUSY (paths in
     * flight) belongs to the loop thread */
    pthread_t thr;
    bool thr_started, stop;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct px_job *todo, *done;
    char **busy;
    size_t nbusy;
    int notify_fd;
    int diag_fd; /* NETLINK_SOCK_DIAG in the agent's netns, or -1 */
};

struct px_ident *
px_ident_new(const char *proc)
{
    struct px_ident *id = xcalloc(1, sizeof(*id));

    id->proc = xstrdup(proc ? proc : "/proc");
    id->self = getpid();
    pthread_mutex_init(&id->mu, NULL);
    pthread_cond_init(&id->cv, NULL);
    id->diag_fd = -1;
    id->notify_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (id->notify_fd < 0)
        die_errno("eventfd");
    return id;
}

static void
px_job_free(struct px_job *j)
{
    if (!j)
        return;
    if (j->fd >= 0)
        close(j->fd);
    free(j->path);
    free(j);
}

void
px_ident_free(struct px_ident *id)
{
    if (!id)
        return;
    buf_fini(&id->ctl);
    if (id->thr_started) {
        pthread_mutex_lock(&id->mu);
        id->stop = true;
        pthread_cond_signal(&id->cv);
        pthread_mutex_unlock(&id->mu);
        pthread_join(id->thr, NULL);
    }
    for (struct px_job *l[2] = { id->todo, id->done }, *j, **pp = l; pp < l + 2; pp++)
        while ((j = *pp)) {
            *pp = j->next;
            px_job_free(j);
        }
    for (size_t i = 0; i < id->nbusy; i++)
        free(id->busy[i]);
    free(id->busy);
    close(id->notify_fd);
    if (id->diag_fd >= 0)
        close(id->diag_fd);
    pthread_mutex_destroy(&id->mu);
    pthread_cond_destroy(&id->cv);
    for (size_t i = 0; i < id->npins; i++)
        free(id->pins[i].path);
    free(id->pins);
    free(id->proc);
    free(id);
}

int
px_ident_diag_open(void)
{
    int fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);

    return fd < 0 ? -errno : fd;
}

void
px_ident_set_diag_fd(struct px_ident *id, int fd)
{
    if (id->diag_fd >= 0)
        close(id->diag_fd);
    id->diag_fd = fd;
}

/* The inode of the TCP socket PEER -> LOCAL through sock_diag: one hash
 * lookup in the kernel (inet_diag_find_one_icsk), where /proc/net/tcp walks
 * every socket of every namespace. Returns the inode, 0 when the kernel
 * says there is no such socket, -errno when the query itself failed (the
 * caller then reads /proc). */
long
px_ident_diag_inode(int fd, const struct sockaddr *peer, const struct sockaddr *local)
{
    struct {
        struct nlmsghdr nh;
        struct inet_diag_req_v2 r;
    } req;
    union {
        struct nlmsghdr nh;
        char b[1024];
    } resp;
    struct sockaddr_nl kernel = { .nl_family = AF_NETLINK };
    ssize_t n;

    if (peer->sa_family != local->sa_family)
        return -EAFNOSUPPORT;
    memset(&req, 0, sizeof(req));
    req.nh.nlmsg_len = sizeof(req);
    req.nh.nlmsg_type = SOCK_DIAG_BY_FAMILY;
    req.nh.nlmsg_flags = NLM_F_REQUEST;
    req.nh.nlmsg_seq = 1;
    req.r.sdiag_family = (uint8_t)peer->sa_family;
    req.r.sdiag_protocol = IPPROTO_TCP;
    req.r.idiag_states = ~0u;
    req.r.id.idiag_cookie[0] = INET_DIAG_NOCOOKIE;
    req.r.id.idiag_cookie[1] = INET_DIAG_NOCOOKIE;
    /* The agent's socket: source = its address (our peer), destination =
     * the proxy's end. */
    if (peer->sa_family == AF_INET) {
        const struct sockaddr_in *p = (const struct sockaddr_in *)peer;
        const struct sockaddr_in *l = (const struct sockaddr_in *)local;

        req.r.id.idiag_sport = p->sin_port;
        req.r.id.idiag_dport = l->sin_port;
        memcpy(req.r.id.idiag_src, &p->sin_addr, 4);
        memcpy(req.r.id.idiag_dst, &l->sin_addr, 4);
    } else if (peer->sa_family == AF_INET6) {
        const struct sockaddr_in6 *p = (const struct sockaddr_in6 *)peer;
        const struct sockaddr_in6 *l = (const struct sockaddr_in6 *)local;

        req.r.id.idiag_sport = p->sin6_port;
        req.r.id.idiag_dport = l->sin6_port;
        memcpy(req.r.id.idiag_src, &p->sin6_addr, 16);
        memcpy(req.r.id.idiag_dst, &l->sin6_addr, 16);
    } else {
        return -EAFNOSUPPORT;
    }
    if (sendto(fd, &req, sizeof(req), 0, (struct sockaddr *)&kernel, sizeof(kernel)) < 0)
        return -errno;
    /* The kernel answers within sendto(): nothing to wait for. */
    n = recv(fd, &resp, sizeof(resp), MSG_DONTWAIT);
    if (n < 0)
        return -errno;
    if ((size_t)n < sizeof(struct nlmsghdr) || resp.nh.nlmsg_len > (size_t)n)
        return -EPROTO;
    if (resp.nh.nlmsg_type == NLMSG_ERROR) {
        const struct nlmsgerr *ne = NLMSG_DATA(&resp.nh);

        if (resp.nh.nlmsg_len < NLMSG_LENGTH(sizeof(*ne)))
            return -EPROTO;
        /* ENOENT: no such socket, or no inet_diag in this kernel: let the
         * caller look in /proc to tell the two apart. */
        return ne->error ? ne->error : -EPROTO;
    }
    if (resp.nh.nlmsg_type == SOCK_DIAG_BY_FAMILY &&
        resp.nh.nlmsg_len >= NLMSG_LENGTH(sizeof(struct inet_diag_msg))) {
        const struct inet_diag_msg *m = NLMSG_DATA(&resp.nh);

        /* ESTABLISHED, or a client that already half-closed. */
        if (m->idiag_state == 1 || m->idiag_state == 4 || m->idiag_state == 5)
            return m->idiag_inode;
        return 0;
    }
    return -EPROTO;
}

void
px_ident_set_anchor(struct px_ident *id, pid_t anchor)
{
    id->anchor = anchor;
}

pid_t
px_ident_anchor(const struct px_ident *id)
{
    return id->anchor;
}

size_t
px_ident_pinned(const struct px_ident *id)
{
    size_t n = 0;

    for (size_t i = 0; i < id->npins; i++)
        n += id->pins[i].pinned;
    return n;
}

/* One control line: "agent PID", or a JSON object for the handler. */
static void
px_ident_ctl_line(struct px_ident *id, char *line, size_t n)
{
    long v;
    char *end;

    if (n && line[0] == '{') {
        if (id->ctl_fn)
            id->ctl_fn(id->ctl_arg, line, n);
        else
            log_warnx("control channel: a JSON message and nobody to take it");
        return;
    }
    if (strncmp(line, "agent ", 6) != 0) {
        log_warnx("control channel: unknown message '%.32s'", line);
        return;
    }
    errno = 0;
    v = strtol(line + 6, &end, 10);
    if (errno || *end || v <= 1 || v > INT_MAX) {
        log_warnx("control channel: bad agent pid '%.32s'", line + 6);
        return;
    }
    id->anchor = (pid_t)v;
    log_debug("caller identity anchored at pid %ld", v);
}

/* Take complete lines out of the control buffer. */
static void
px_ident_ctl_lines(struct px_ident *id)
{
    size_t start = 0;
    char *nl;

    while ((nl = memchr(id->ctl.data + start, '\n', id->ctl.len - start))) {
        size_t n = (size_t)(nl - (id->ctl.data + start));

        *nl = '\0';
        if (id->ctl_skip)
            id->ctl_skip = false;
        else
            px_ident_ctl_line(id, id->ctl.data + start, n);
        start += n + 1;
    }
    buf_consume(&id->ctl, start);
    if (id->ctl.len >= PX_IDENT_CTL_MAX) {
        log_warnx("control channel: a line over %d bytes, dropped", PX_IDENT_CTL_MAX);
        buf_reset(&id->ctl);
        id->ctl_skip = true;
    }
}

void
px_ident_set_control_handler(struct px_ident *id, void (*fn)(void *arg, const char *line, size_t n),
                             void *arg)
{
    id->ctl_fn = fn;
    id->ctl_arg = arg;
}

int
px_ident_read_control(struct px_ident *id, int fd, int timeout_ms)
{
    struct pollfd pf = { fd, POLLIN, 0 };
    char chunk[65536];
    struct timespec t0, now;
    int wait = 0;
    ssize_t n;

    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        pf.revents = 0;
        /* With a timeout, keep waiting until the anchor is known: other
         * messages (a credentials document) may come first. */
        if (timeout_ms > 0 && !id->anchor) {
            long el;

            clock_gettime(CLOCK_MONOTONIC, &now);
            el = (now.tv_sec - t0.tv_sec) * 1000 + (now.tv_nsec - t0.tv_nsec) / 1000000;
            wait = el >= timeout_ms ? 0 : timeout_ms - (int)el;
        } else {
            wait = 0;
        }
        if (poll(&pf, 1, wait) <= 0)
            break;
        n = read(fd, chunk, sizeof(chunk));
        if (n == 0)
            return -EPIPE;
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN)
                break;
            return -errno;
        }
        buf_append(&id->ctl, chunk, (size_t)n);
        px_ident_ctl_lines(id);
    }
    return id->anchor ? 1 : 0;
}

/* ------------------------------------------------------------------ parsing */

static int
px_hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* N hex digits at *P into *V. */
static int
px_hex(const char **p, size_t n, uint32_t *v)
{
    *v = 0;
    for (size_t i = 0; i < n; i++) {
        int h = px_hexval((unsigned char)(*p)[i]);

        if (h < 0)
            return -EINVAL;
        *v = *v << 4 | (uint32_t)h;
    }
    *p += n;
    return 0;
}

/* "0100007F:0CEA" or the 32-digit IPv6 form. The kernel prints each 32-bit
 * word of the address as the host-order integer of its network-order
 * bytes, so storing the parsed word back in host order restores them. */
static int
px_parse_addr(const char **p, uint8_t out[16], unsigned *port)
{
    const char *s = *p;
    size_t n = strcspn(s, ":");
    uint32_t w, pv;

    if (n != 8 && n != 32)
        return -EINVAL;
    memset(out, 0, 16);
    if (n == 8) {
        if (px_hex(&s, 8, &w) < 0)
            return -EINVAL;
        out[10] = out[11] = 0xff;
        memcpy(out + 12, &w, 4);
    } else {
        for (int i = 0; i < 4; i++) {
            if (px_hex(&s, 8, &w) < 0)
                return -EINVAL;
            memcpy(out + 4 * i, &w, 4);
        }
    }
    if (*s++ != ':')
        return -EINVAL;
    if (strspn(s, "0123456789ABCDEFabcdef") != 4 || px_hex(&s, 4, &pv) < 0)
        return -EINVAL;
    *port = pv;
    *p = s;
    return 0;
}

int
px_ident_parse_tcp_line(const char *line, struct px_ident_tcp *out)
{
    const char *p = line;
    uint32_t st;
    char *end;

    memset(out, 0, sizeof(*out));
    p += strspn(p, " ");
    /* "sl:" */
    if (!isdigit((unsigned char)*p))
        return -EINVAL;
    p += strspn(p, "0123456789");
    if (*p++ != ':')
        return -EINVAL;
    p += strspn(p, " ");
    if (px_parse_addr(&p, out->laddr, &out->lport) < 0 || *p++ != ' ')
        return -EINVAL;
    if (px_parse_addr(&p, out->raddr, &out->rport) < 0 || *p++ != ' ')
        return -EINVAL;
    if (strspn(p, "0123456789ABCDEFabcdef") != 2 || px_hex(&p, 2, &st) < 0)
        return -EINVAL;
    out->state = st;
    /* tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode */
    for (int field = 0; field < 5; field++) {
        p += strspn(p, " ");
        if (!*p)
            return -EINVAL;
        p += strcspn(p, " ");
    }
    p += strspn(p, " ");
    if (!isdigit((unsigned char)*p))
        return -EINVAL;
    errno = 0;
    out->inode = strtoul(p, &end, 10);
    if (errno || (*end && *end != ' ' && *end != '\n'))
        return -EINVAL;
    return 0;
}

/* SA as 16 bytes (IPv4 mapped) and a port. */
static int
px_sa_norm(const struct sockaddr *sa, uint8_t out[16], unsigned *port)
{
    memset(out, 0, 16);
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;

        out[10] = out[11] = 0xff;
        memcpy(out + 12, &sin->sin_addr, 4);
        *port = ntohs(sin->sin_port);
        return 0;
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)sa;

        memcpy(out, &sin6->sin6_addr, 16);
        *port = ntohs(sin6->sin6_port);
        return 0;
    }
    return -EAFNOSUPPORT;
}

unsigned long
px_ident_find_inode(const char *text, const struct sockaddr *peer, const struct sockaddr *local)
{
    uint8_t pa[16], la[16];
    unsigned pp, lp;
    const char *line = text;

    if (px_sa_norm(peer, pa, &pp) < 0 || px_sa_norm(local, la, &lp) < 0)
        return 0;
    /* The first line is the header. */
    line = strchr(line, '\n');
    while (line && *++line) {
        struct px_ident_tcp t;

        /* ESTABLISHED, or a client that already half-closed (FIN_WAIT1/2). */
        if (px_ident_parse_tcp_line(line, &t) == 0 &&
            (t.state == 1 || t.state == 4 || t.state == 5) && t.inode && t.lport == pp &&
            t.rport == lp && memcmp(t.laddr, pa, 16) == 0 && memcmp(t.raddr, la, 16) == 0)
            return t.inode;
        line = strchr(line, '\n');
    }
    return 0;
}

int
px_ident_parse_ppid(const char *status, pid_t *ppid)
{
    const char *p = strstr(status, "\nPPid:");
    char *end;
    long v;

    if (!p)
        return -EINVAL;
    p += 6;
    p += strspn(p, " \t");
    errno = 0;
    v = strtol(p, &end, 10);
    if (errno || end == p || (*end && *end != '\n') || v < 0 || v > INT_MAX)
        return -EINVAL;
    *ppid = (pid_t)v;
    return 0;
}

/* ------------------------------------------------------------------ /proc */

static int
px_proc_read(const struct px_ident *id, pid_t pid, const char *what, size_t max, struct buf *out)
{
    char path[PATH_MAX];
    struct err e;

    buf_reset(out);
    if (pid)
        buf_fmt_fixed(path, sizeof(path), "%s/%d/%s", id->proc, (int)pid, what);
    else
        buf_fmt_fixed(path, sizeof(path), "%s/%s", id->proc, what);
    return read_file(path, max, out, &e);
}

/* Pids holding socket:[INODE]; returns how many (at most MAX) or -errno. */
static int
px_owners(const struct px_ident *id, unsigned long inode, pid_t *owners, int max)
{
    char want[48], path[PATH_MAX], link[64];
    DIR *d = opendir(id->proc);
    struct dirent *de;
    unsigned npids = 0, nfds = 0;
    int n = 0;
    size_t wl;

    if (!d)
        return -errno;
    buf_fmt_fixed(want, sizeof(want), "socket:[%lu]", inode);
    wl = strlen(want);
    while ((de = readdir(d)) && n < max) {
        DIR *fd_dir;
        struct dirent *fe;
        int dfd;
        pid_t pid;

        if (!isdigit((unsigned char)de->d_name[0]))
            continue;
        pid = (pid_t)atoi(de->d_name);
        /* The proxy itself holds only the accepted end (another inode). */
        if (pid <= 0 || pid == id->self)
            continue;
        if (++npids > PX_IDENT_MAX_PIDS)
            break;
        buf_fmt_fixed(path, sizeof(path), "%s/%s/fd", id->proc, de->d_name);
        dfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0)
            continue; /* gone, or not ours to read */
        fd_dir = fdopendir(dfd);
        if (!fd_dir) {
            close(dfd);
            continue;
        }
        while ((fe = readdir(fd_dir))) {
            ssize_t l;

            if (fe->d_name[0] == '.')
                continue;
            if (++nfds > PX_IDENT_MAX_FDS)
                break;
            l = readlinkat(dirfd(fd_dir), fe->d_name, link, sizeof(link) - 1);
            if (l != (ssize_t)wl || memcmp(link, want, wl) != 0)
                continue;
            owners[n++] = pid;
            break;
        }
        closedir(fd_dir);
        if (nfds > PX_IDENT_MAX_FDS)
            break;
    }
    closedir(d);
    return n;
}

/* readlink PROC/PID/exe into a new string (NULL if unreadable). A " (deleted)"
 * suffix the kernel adds for unlinked files is dropped when no file has that
 * literal name. */
static char *
px_exe_path(const struct px_ident *id, pid_t pid)
{
    char path[PATH_MAX], target[PATH_MAX];
    static const char deleted[] = " (deleted)";
    ssize_t n;
    size_t dl = sizeof(deleted) - 1;
    struct stat st;

    buf_fmt_fixed(path, sizeof(path), "%s/%d/exe", id->proc, (int)pid);
    n = readlink(path, target, sizeof(target) - 1);
    if (n <= 0)
        return NULL;
    target[n] = '\0';
    if ((size_t)n > dl && strcmp(target + n - dl, deleted) == 0 && lstat(target, &st) < 0)
        target[n - dl] = '\0';
    return xstrdup(target);
}

static void
px_hex_str(const uint8_t *b, size_t n, char *out)
{
    static const char hx[] = "0123456789abcdef";

    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hx[b[i] >> 4];
        out[2 * i + 1] = hx[b[i] & 15];
    }
    out[2 * n] = '\0';
}

static int
px_sha256_fd(int fd, uint8_t out[32])
{
    mbedtls_sha256_context ctx;
    uint8_t *chunk = xmalloc(64 * 1024);
    ssize_t n;
    int rc = 0;

    mbedtls_sha256_init(&ctx);
    mbedtls_sha256_starts(&ctx, 0);
    while ((n = read(fd, chunk, 64 * 1024)) != 0) {
        if (n < 0) {
            if (errno == EINTR)
                continue;
            rc = -errno;
            break;
        }
        mbedtls_sha256_update(&ctx, chunk, (size_t)n);
    }
    if (rc == 0)
        mbedtls_sha256_finish(&ctx, out);
    mbedtls_sha256_free(&ctx);
    free(chunk);
    return rc;
}

static bool
px_ts_eq(const struct timespec *a, const struct timespec *b)
{
    return a->tv_sec == b->tv_sec && a->tv_nsec == b->tv_nsec;
}

static bool
px_fp_eq(const struct px_fp *a, const struct px_fp *b)
{
    return a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
           px_ts_eq(&a->mtime, &b->mtime) && px_ts_eq(&a->ctime, &b->ctime);
}

static struct px_pin *
px_pin_find(struct px_ident *id, const char *path, bool create)
{
    struct px_pin *pin;

    for (size_t i = 0; i < id->npins; i++)
        if (strcmp(id->pins[i].path, path) == 0)
            return &id->pins[i];
    if (!create)
        return NULL;
    if (id->npins == id->cap) {
        id->cap = id->cap ? id->cap * 2 : 16;
        id->pins = xrealloc(id->pins, id->cap * sizeof(*id->pins));
    }
    pin = &id->pins[id->npins++];
    memset(pin, 0, sizeof(*pin));
    pin->path = xstrdup(path);
    return pin;
}

/* A hash result for PATH's image FP: pin it (first sight), confirm it, or
 * remember the image as bad. */
static void
px_pin_result(struct px_ident *id, const char *path, const struct px_fp *fp, const uint8_t sha[32],
              int rc)
{
    struct px_pin *pin = px_pin_find(id, path, true);
    char hex[65];

    if (rc < 0) {
        pin->has_bad = true;
        pin->bad_fp = *fp;
        pin->bad_err = rc;
        return;
    }
    if (!pin->pinned) {
        pin->pinned = true;
        memcpy(pin->sha, sha, 32);
        pin->fp = *fp;
        px_hex_str(sha, 32, hex);
        log_debug("pinned binary %s sha256 %s", path, hex);
    } else if (memcmp(pin->sha, sha, 32) == 0) {
        pin->fp = *fp; /* same content (copied, touched, reinstalled) */
    } else {
        /* The pinned hash and its image stay: every later use re-checks. */
        pin->has_bad = true;
        pin->bad_fp = *fp;
        pin->bad_err = 0;
        memcpy(pin->bad_sha, sha, 32);
    }
}

static void *
px_worker(void *arg)
{
    struct px_ident *id = arg;
    uint64_t one = 1;

    pthread_mutex_lock(&id->mu);
    for (;;) {
        struct px_job *j;

        while (!id->todo && !id->stop)
            pthread_cond_wait(&id->cv, &id->mu);
        if (id->stop)
            break;
        j = id->todo;
        id->todo = j->next;
        pthread_mutex_unlock(&id->mu);
        j->rc = px_sha256_fd(j->fd, j->sha);
        close(j->fd);
        j->fd = -1;
        pthread_mutex_lock(&id->mu);
        j->next = id->done;
        id->done = j;
        (void)!write(id->notify_fd, &one, sizeof(one));
    }
    pthread_mutex_unlock(&id->mu);
    return NULL;
}

int
px_ident_notify_fd(const struct px_ident *id)
{
    return id->notify_fd;
}

bool
px_ident_poll(struct px_ident *id)
{
    struct px_job *done, *j;
    uint64_t v;

    (void)!read(id->notify_fd, &v, sizeof(v));
    pthread_mutex_lock(&id->mu);
    done = id->done;
    id->done = NULL;
    pthread_mutex_unlock(&id->mu);
    if (!done)
        return false;
    while ((j = done)) {
        done = j->next;
        px_pin_result(id, j->path, &j->fp, j->sha, j->rc);
        for (size_t i = 0; i < id->nbusy; i++)
            if (strcmp(id->busy[i], j->path) == 0) {
                free(id->busy[i]);
                id->busy[i] = id->busy[--id->nbusy];
                break;
            }
        px_job_free(j);
    }
    return true;
}

/* Hash FD (PATH's image FP) on the worker; FD passes to it. */
static int
px_queue(struct px_ident *id, const char *path, int fd, const struct px_fp *fp)
{
    struct px_job *j = xcalloc(1, sizeof(*j));
    int rc;

    j->path = xstrdup(path);
    j->fd = fd;
    j->fp = *fp;
    if (!id->thr_started) {
        if ((rc = pthread_create(&id->thr, NULL, px_worker, id)) != 0) {
            px_job_free(j);
            return -rc;
        }
        id->thr_started = true;
    }
    id->busy = xrealloc(id->busy, (id->nbusy + 1) * sizeof(*id->busy));
    id->busy[id->nbusy++] = xstrdup(path);
    pthread_mutex_lock(&id->mu);
    j->next = id->todo;
    id->todo = j;
    pthread_cond_signal(&id->cv);
    pthread_mutex_unlock(&id->mu);
    return 0;
}

/* Trust on first use for PATH, the image of PID. Returns 0, -EINPROGRESS
 * (a hash is running on the worker: ask again after px_ident_poll), or
 * -EACCES with E set. */
static int
px_verify(struct px_ident *id, pid_t pid, const char *path, struct err *e)
{
    char exe[PATH_MAX], was[65], now[65];
    struct px_pin *pin = px_pin_find(id, path, false);
    struct px_fp fp;
    uint8_t sha[32];
    struct stat st;
    int fd, rc;

    buf_fmt_fixed(exe, sizeof(exe), "%s/%d/exe", id->proc, (int)pid);
    /* The live image, even if PATH now names another file. */
    fd = open(exe, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || fstat(fd, &st) < 0) {
        rc = errno;
        if (fd >= 0)
            close(fd);
        return err_set(e, EACCES, "cannot verify binary '%s' (pid %d): %s", path, (int)pid,
                       strerror(rc));
    }
    memset(&fp, 0, sizeof(fp));
    fp.dev = st.st_dev;
    fp.ino = st.st_ino;
    fp.size = st.st_size;
    fp.mtime = st.st_mtim;
    fp.ctime = st.st_ctim;
    if (pin && pin->pinned && px_fp_eq(&pin->fp, &fp)) {
        close(fd);
        return 0;
    }
    if (!pin || !pin->has_bad || !px_fp_eq(&pin->bad_fp, &fp)) {
        for (size_t i = 0; i < id->nbusy; i++)
            if (strcmp(id->busy[i], path) == 0) {
                close(fd);
                return err_set(e, EINPROGRESS, "hashing '%s'", path);
            }
        /* Large images are hashed off the loop (about 3.5 ms per MiB). */
        if (st.st_size > PX_IDENT_INLINE_HASH) {
            if ((rc = px_queue(id, path, fd, &fp)) < 0)
                return err_set(e, EACCES, "cannot hash binary '%s': %s", path, strerror(-rc));
            return err_set(e, EINPROGRESS, "hashing '%s'", path);
        }
        rc = px_sha256_fd(fd, sha);
        px_pin_result(id, path, &fp, sha, rc);
        pin = px_pin_find(id, path, false);
    }
    close(fd);
    if (pin->pinned && px_fp_eq(&pin->fp, &fp))
        return 0;
    if (pin->bad_err)
        return err_set(e, EACCES, "cannot hash binary '%s' (pid %d): %s", path, (int)pid,
                       strerror(-pin->bad_err));
    px_hex_str(pin->sha, 32, was);
    px_hex_str(pin->bad_sha, 32, now);
    return err_set(e, EACCES,
                   "Binary integrity violation: '%s' changed since its first use in this "
                   "sandbox (sha256 %.16s..., now %.16s...)",
                   path, was, now);
}

void
px_ident_caller_fini(struct px_ident_caller *c)
{
    if (!c)
        return;
    free(c->binary);
    for (size_t i = 0; i < c->nancestors; i++)
        free(c->ancestors[i]);
    for (size_t i = 0; i < c->ncmdline; i++)
        free(c->cmdline[i]);
    memset(c, 0, sizeof(*c));
}

/* Absolute-path arguments of PID into OUT->cmdline (logged, never used to
 * decide). Best effort: an unreadable cmdline adds nothing. */
static void
px_cmdline_paths(const struct px_ident *id, pid_t pid, struct px_ident_caller *out, struct buf *tmp)
{
    size_t off = 0;

    if (px_proc_read(id, pid, "cmdline", 64 * 1024, tmp) < 0)
        return;
    while (off < tmp->len && out->ncmdline < PX_IDENT_MAX_CMDLINE) {
        const char *a = tmp->data + off;
        size_t n = strnlen(a, tmp->len - off);
        bool dup = false;

        if (n > 1 && n < 1024 && a[0] == '/') {
            for (size_t i = 0; i < out->ncmdline && !dup; i++)
                dup = strcmp(out->cmdline[i], a) == 0;
            if (!dup)
                out->cmdline[out->ncmdline++] = xstrndup(a, n);
        }
        off += n + 1;
    }
}

/* Binary and ancestors of PID into OUT, each verified. */
static int
px_describe(struct px_ident *id, pid_t pid, struct px_ident_caller *out, struct buf *tmp,
            struct err *e)
{
    pid_t cur = pid, ppid;
    int rc;

    memset(out, 0, sizeof(*out));
    out->pid = pid;
    out->binary = px_exe_path(id, pid);
    if (!out->binary)
        return err_set(e, EACCES, "cannot read the executable of pid %d", (int)pid);
    if ((rc = px_verify(id, pid, out->binary, e)) < 0)
        return rc;
    px_cmdline_paths(id, pid, out, tmp);
    while (cur != id->anchor && out->nancestors < PX_IDENT_MAX_ANCESTORS) {
        char *exe;

        if (px_proc_read(id, cur, "status", 64 * 1024, tmp) < 0 ||
            px_ident_parse_ppid(buf_cstr(tmp), &ppid) < 0)
            return err_set(e, EACCES, "cannot read the parent of pid %d", (int)cur);
        /* 0: outside our pid namespace; 1: the supervisor, never trusted as
         * an ancestor. */
        if (ppid <= 1 || (ppid == id->self && ppid != id->anchor))
            break;
        exe = px_exe_path(id, ppid);
        if (!exe)
            return err_set(e, EACCES, "cannot read the executable of pid %d", (int)ppid);
        out->ancestors[out->nancestors++] = exe;
        if ((rc = px_verify(id, ppid, exe, e)) < 0)
            return rc;
        px_cmdline_paths(id, ppid, out, tmp);
        cur = ppid;
    }
    return 0;
}

static bool
px_same_caller(const struct px_ident_caller *a, const struct px_ident_caller *b)
{
    if (strcmp(a->binary, b->binary) != 0 || a->nancestors != b->nancestors)
        return false;
    for (size_t i = 0; i < a->nancestors; i++)
        if (strcmp(a->ancestors[i], b->ancestors[i]) != 0)
            return false;
    return true;
}

int
px_ident_lookup(struct px_ident *id, const struct sockaddr *peer, const struct sockaddr *local,
                struct px_ident_caller *out, struct err *e)
{
    struct buf tab = BUF_INIT;
    pid_t owners[PX_IDENT_MAX_OWNERS];
    unsigned long inode = 0;
    int n, rc = 0;

    memset(out, 0, sizeof(*out));
    if (!id->anchor)
        return err_set(e, EACCES, "entrypoint process not yet spawned");
    if (id->diag_fd >= 0) {
        long v = px_ident_diag_inode(id->diag_fd, peer, local);

        if (v > 0)
            inode = (unsigned long)v;
    }
    /* Through the anchor: its netns's tables (where our listener lives). */
    if (!inode && px_proc_read(id, id->anchor, "net/tcp", PX_IDENT_TABLE_MAX, &tab) == 0)
        inode = px_ident_find_inode(buf_cstr(&tab), peer, local);
    if (!inode && px_proc_read(id, id->anchor, "net/tcp6", PX_IDENT_TABLE_MAX, &tab) == 0)
        inode = px_ident_find_inode(buf_cstr(&tab), peer, local);
    if (!inode) {
        rc = err_set(e, EACCES,
                     "the connection's socket is not in the sandbox's network "
                     "namespace (agent pid %d gone?)",
                     (int)id->anchor);
        goto out;
    }
    n = px_owners(id, inode, owners, PX_IDENT_MAX_OWNERS);
    if (n <= 0) {
        rc = err_set(e, EACCES, "no process holds the connection (socket inode %lu)", inode);
        goto out;
    }
    for (int i = 0; i < n; i++) {
        struct px_ident_caller c;

        if ((rc = px_describe(id, owners[i], &c, &tab, e)) < 0) {
            px_ident_caller_fini(&c);
            px_ident_caller_fini(out);
            goto out;
        }
        if (i == 0) {
            *out = c;
            continue;
        }
        if (!px_same_caller(out, &c)) {
            rc = err_set(e, EACCES,
                         "ambiguous shared socket ownership: pid %d ('%s') and pid %d ('%s') hold "
                         "the connection",
                         (int)out->pid, out->binary, (int)c.pid, c.binary);
            px_ident_caller_fini(&c);
            px_ident_caller_fini(out);
            goto out;
        }
        if (c.pid < out->pid)
            out->pid = c.pid;
        px_ident_caller_fini(&c);
    }
out:
    buf_fini(&tab);
    return rc;
}
