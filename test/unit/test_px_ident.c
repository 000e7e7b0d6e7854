/*
 * test_px_ident: caller identity: /proc/net/tcp{,6} lines (IPv4, IPv6,
 * mapped), finding a connection's inode, PPid parsing; a fake /proc tree
 * (ancestry walk up to the anchor, pinning, a binary swapped at the same
 * path denied, two owners with different binaries denied, no anchor
 * denied); and the real /proc with a child process holding a TCP
 * connection (binary and ancestor from the kernel, and a second program
 * inheriting the socket making ownership ambiguous).
 */
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
#include <sys/wait.h>
#include <unistd.h>

#include "buf.h"
#include "px_ident.h"
#include "tap.h"
#include "xfuncs.h"

static void
sin4(struct sockaddr_in *s, const char *ip, unsigned port)
{
    memset(s, 0, sizeof(*s));
    s->sin_family = AF_INET;
    s->sin_port = htons((uint16_t)port);
    inet_pton(AF_INET, ip, &s->sin_addr);
}

static int
test_parse_lines(void)
{
    struct px_ident_tcp t;
    uint8_t want[16] = { 0 };

    CHECK_INT(px_ident_parse_tcp_line("   3: 0100007F:A1B2 0100007F:0C38 01 00000000:00000000 "
                                      "00:00000000 00000000  1000        0 98765 1 "
                                      "0000000000000000 20 4 30 10 -1",
                                      &t),
              0);
    CHECK_INT(t.lport, 0xA1B2);
    CHECK_INT(t.rport, 3128);
    CHECK_INT(t.state, 1);
    CHECK(t.inode == 98765);
    want[10] = want[11] = 0xff;
    want[12] = 127;
    want[15] = 1;
    CHECK(memcmp(t.laddr, want, 16) == 0);
    /* ::1 as the kernel prints it on a little-endian machine is
     * 00000000000000000000000001000000; parsed back it must be ::1 on
     * any machine whose table this is, so build the text from memory. */
    {
        struct in6_addr a;
        uint32_t w[4];
        char line[300];

        inet_pton(AF_INET6, "::1", &a);
        memcpy(w, &a, 16);
        buf_fmt_fixed(line, sizeof(line),
                      "   0: %08X%08X%08X%08X:C001 %08X%08X%08X%08X:0C38 01 00000000:00000000 "
                      "00:00000000 00000000     0        0 4242 1 0000000000000000 20 4 30 10 -1",
                      w[0], w[1], w[2], w[3], w[0], w[1], w[2], w[3]);
        CHECK_INT(px_ident_parse_tcp_line(line, &t), 0);
        CHECK(memcmp(t.laddr, &a, 16) == 0);
        CHECK_INT(t.lport, 0xC001);
        CHECK(t.inode == 4242);
    }
    CHECK_INT(px_ident_parse_tcp_line("  sl  local_address rem_address   st", &t), -EINVAL);
    CHECK_INT(px_ident_parse_tcp_line("   0: 0100007F 0100007F:0C38 01", &t), -EINVAL);
    CHECK_INT(px_ident_parse_tcp_line("   0: 0100007F:0C38 0100007F:0C38 0G 0 0 0 0 0 1", &t),
              -EINVAL);
    CHECK_INT(px_ident_parse_tcp_line("   0: 0100007F:0C38 0100007F:0C38 01 x y z", &t), -EINVAL);
    return TAP_PASS;
}

/* Lines in the kernel's format for a v4 connection. */
static void
tcp_line(struct buf *b, int sl, const char *lip, unsigned lport, const char *rip, unsigned rport,
         unsigned state, unsigned long inode)
{
    struct in_addr l, r;
    uint32_t lw, rw;

    inet_pton(AF_INET, lip, &l);
    inet_pton(AF_INET, rip, &r);
    memcpy(&lw, &l, 4);
    memcpy(&rw, &r, 4);
    buf_printf(b,
               "  %2d: %08X:%04X %08X:%04X %02X 00000000:00000000 00:00000000 00000000  1000   "
               "     0 %lu 1 0000000000000000 20 4 30 10 -1\n",
               sl, lw, lport, rw, rport, state, inode);
}

static int
test_find_inode(void)
{
    struct buf b = BUF_INIT;
    struct sockaddr_in peer, local, other;

    buf_puts(&b, "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   "
                 "uid  timeout inode\n");
    tcp_line(&b, 0, "127.0.0.1", 3128, "0.0.0.0", 0, 0x0A, 11);       /* the listener */
    tcp_line(&b, 1, "127.0.0.1", 3128, "127.0.0.1", 40000, 0x01, 12); /* our accepted end */
    tcp_line(&b, 2, "127.0.0.1", 40000, "127.0.0.1", 3128, 0x01, 13); /* the agent's end */
    tcp_line(&b, 3, "127.0.0.1", 40001, "127.0.0.1", 3128, 0x06, 14); /* TIME_WAIT */
    sin4(&peer, "127.0.0.1", 40000);
    sin4(&local, "127.0.0.1", 3128);
    CHECK(px_ident_find_inode(buf_cstr(&b), (struct sockaddr *)&peer, (struct sockaddr *)&local) ==
          13);
    sin4(&other, "127.0.0.1", 40001);
    CHECK(px_ident_find_inode(buf_cstr(&b), (struct sockaddr *)&other, (struct sockaddr *)&local) ==
          0);
    sin4(&other, "127.0.0.1", 40002);
    CHECK(px_ident_find_inode(buf_cstr(&b), (struct sockaddr *)&other, (struct sockaddr *)&local) ==
          0);
    buf_fini(&b);
    return TAP_PASS;
}

static int
test_ppid(void)
{
    pid_t p = 0;

    CHECK_INT(px_ident_parse_ppid("Name:\tbash\nState:\tS\nTgid:\t7\nPid:\t7\nPPid:\t3\n", &p), 0);
    CHECK_INT(p, 3);
    CHECK_INT(px_ident_parse_ppid("Name:\tx\nPPid:\t0\n", &p), 0);
    CHECK_INT(p, 0);
    CHECK_INT(px_ident_parse_ppid("Name:\tx\nPPid:\tbad\n", &p), -EINVAL);
    CHECK_INT(px_ident_parse_ppid("Name:\tx\n", &p), -EINVAL);
    return TAP_PASS;
}

static void
put(const char *path, const char *text)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0755);

    if (fd < 0 || write_full(fd, text, strlen(text)) < 0)
        die_errno("write %s", path);
    close(fd);
}

static void
mk(const char *root, const char *rel)
{
    char p[512];

    buf_fmt_fixed(p, sizeof(p), "%s/%s", root, rel);
    if (mkdir(p, 0755) < 0 && errno != EEXIST)
        die_errno("mkdir %s", p);
}

/* A fake process PID in ROOT: exe -> EXE, parent PPID, fds as symlinks. */
static void
fake_proc(const char *root, int pid, int ppid, const char *exe, unsigned long sock_inode)
{
    char p[512], t[64], rel[64];

    buf_fmt_fixed(rel, sizeof(rel), "%d", pid);
    mk(root, rel);
    buf_fmt_fixed(rel, sizeof(rel), "%d/fd", pid);
    mk(root, rel);
    buf_fmt_fixed(p, sizeof(p), "%s/%d/exe", root, pid);
    if (symlink(exe, p) < 0)
        die_errno("symlink %s", p);
    buf_fmt_fixed(p, sizeof(p), "%s/%d/status", root, pid);
    buf_fmt_fixed(t, sizeof(t), "Name:\tx\nPid:\t%d\nPPid:\t%d\n", pid, ppid);
    put(p, t);
    buf_fmt_fixed(p, sizeof(p), "%s/%d/fd/0", root, pid);
    if (symlink("/dev/null", p) < 0)
        die_errno("symlink %s", p);
    if (sock_inode) {
        buf_fmt_fixed(p, sizeof(p), "%s/%d/fd/3", root, pid);
        buf_fmt_fixed(t, sizeof(t), "socket:[%lu]", sock_inode);
        if (symlink(t, p) < 0)
            die_errno("symlink %s", p);
    }
}

static int
test_fake_proc(void)
{
    char root[] = "/tmp/test_px_ident.XXXXXX", p[512], bin_a[512], bin_b[512], bin_c[512];
    struct buf tab = BUF_INIT;
    struct sockaddr_in peer, local;
    struct px_ident_caller c;
    struct px_ident *id;
    struct err e;
    int rc;

    if (!mkdtemp(root))
        return TAP_FAIL;
    buf_fmt_fixed(bin_a, sizeof(bin_a), "%s/curl", root);
    buf_fmt_fixed(bin_b, sizeof(bin_b), "%s/bash", root);
    buf_fmt_fixed(bin_c, sizeof(bin_c), "%s/python", root);
    put(bin_a, "curl image v1");
    put(bin_b, "bash image");
    put(bin_c, "python image");
    mk(root, "proc");
    buf_fmt_fixed(p, sizeof(p), "%s/proc", root);
    /* 50 bash (anchor, parent 1) -> 60 bash -> 100 curl holding socket 777 */
    fake_proc(p, 50, 1, bin_b, 0);
    fake_proc(p, 60, 50, bin_b, 0);
    fake_proc(p, 100, 60, bin_a, 777);
    mk(p, "50/net");
    buf_puts(&tab, "  sl  local_address rem_address   st\n");
    tcp_line(&tab, 0, "127.0.0.1", 40000, "127.0.0.1", 3128, 1, 777);
    buf_fmt_fixed(bin_c, sizeof(bin_c), "%s/50/net/tcp", p);
    put(bin_c, buf_cstr(&tab));
    buf_fmt_fixed(bin_c, sizeof(bin_c), "%s/50/net/tcp6", p);
    put(bin_c, "  sl  local_address\n");
    buf_fmt_fixed(bin_c, sizeof(bin_c), "%s/python", root);
    sin4(&peer, "127.0.0.1", 40000);
    sin4(&local, "127.0.0.1", 3128);

    id = px_ident_new(p);
    err_clear(&e);
    /* No anchor yet: deny. */
    rc = px_ident_lookup(id, (struct sockaddr *)&peer, (struct sockaddr *)&local, &c, &e);
    CHECK_INT(rc, -EACCES);
    CHECK_CONTAINS(e.msg, "not yet spawned");
    px_ident_set_anchor(id, 50);
    rc = px_ident_lookup(id, (struct sockaddr *)&peer, (struct sockaddr *)&local, &c, &e);
    CHECK_INT(rc, 0);
    CHECK_STR(c.binary, bin_a);
    CHECK_INT(c.pid, 100);
    CHECK_INT((int)c.nancestors, 2); /* 60 bash, 50 bash (the anchor, included) */
    CHECK_STR(c.ancestors[0], bin_b);
    CHECK_STR(c.ancestors[1], bin_b);
    px_ident_caller_fini(&c);
    CHECK_INT((int)px_ident_pinned(id), 2);
    /* An unknown connection: no such socket. */
    sin4(&peer, "127.0.0.1", 40009);
    rc = px_ident_lookup(id, (struct sockaddr *)&peer, (struct sockaddr *)&local, &c, &e);
    CHECK_INT(rc, -EACCES);
    sin4(&peer, "127.0.0.1", 40000);

    /* The binary is replaced at the same path (new content): denied, and
     * stays denied. */
    put(bin_a, "curl image v2, something else entirely");
    rc = px_ident_lookup(id, (struct sockaddr *)&peer, (struct sockaddr *)&local, &c, &e);
    CHECK_INT(rc, -EACCES);
    CHECK_CONTAINS(e.msg, "Binary integrity violation");
    CHECK_CONTAINS(e.msg, bin_a);
    rc = px_ident_lookup(id, (struct sockaddr *)&peer, (struct sockaddr *)&local, &c, &e);
    CHECK_INT(rc, -EACCES);
    /* Same content back (new mtime): accepted again. */
    put(bin_a, "curl image v1");
    rc = px_ident_lookup(id, (struct sockaddr *)&peer, (struct sockaddr *)&local, &c, &e);
    CHECK_INT(rc, 0);
    px_ident_caller_fini(&c);

    /* A second owner running another binary (fd passed or inherited). */
    fake_proc(p, 101, 60, bin_c, 777);
    rc = px_ident_lookup(id, (struct sockaddr *)&peer, (struct sockaddr *)&local, &c, &e);
    CHECK_INT(rc, -EACCES);
    CHECK_CONTAINS(e.msg, "ambiguous shared socket ownership");
    px_ident_free(id);
    buf_fini(&tab);
    {
        char cmd[600];

        buf_fmt_fixed(cmd, sizeof(cmd), "rm -rf '%s'", root);
        (void)!system(cmd);
    }
    return TAP_PASS;
}

/* px_ident_lookup, waiting out hashes on the worker (big test binaries). */
static int
lookup_wait(struct px_ident *id, const struct sockaddr *peer, const struct sockaddr *local,
            struct px_ident_caller *c, struct err *e)
{
    int rc;

    for (int i = 0; i < 200; i++) {
        struct pollfd pf = { px_ident_notify_fd(id), POLLIN, 0 };

        rc = px_ident_lookup(id, peer, local, c, e);
        if (rc != -EINPROGRESS)
            return rc;
        if (poll(&pf, 1, 50) == 1)
            px_ident_poll(id);
    }
    return rc;
}

/* A child connects to our listener and waits; with INHERIT it also
 * starts /bin/sleep holding the same socket. Returns the child's pid. */
static pid_t
child_connect(unsigned port, bool inherit, int *ready_rd)
{
    int pfd[2];
    pid_t pid;

    if (pipe2(pfd, O_CLOEXEC) < 0)
        return -1;
    pid = fork();
    if (pid == 0) {
        struct sockaddr_in a;
        int s = socket(AF_INET, SOCK_STREAM, 0); /* inheritable on purpose */

        sin4(&a, "127.0.0.1", port);
        if (s < 0 || connect(s, (struct sockaddr *)&a, sizeof(a)) < 0)
            _exit(1);
        if (inherit && fork() == 0) {
            execl("/bin/sleep", "sleep", "30", (char *)NULL);
            _exit(127);
        }
        if (inherit)
            usleep(200000); /* let sleep start */
        (void)!write(pfd[1], "x", 1);
        pause();
        _exit(0);
    }
    close(pfd[1]);
    *ready_rd = pfd[0];
    return pid;
}

static int
test_real_proc(void)
{
    struct sockaddr_storage peer, local;
    socklen_t pl = sizeof(peer), ll = sizeof(local);
    struct sockaddr_in a;
    struct px_ident_caller c;
    struct px_ident *id;
    char self[4096];
    struct err e;
    int lfd, cfd, rd, rc, st;
    socklen_t al = sizeof(a);
    ssize_t n;
    pid_t kid;
    char x;

    n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n <= 0)
        TAP_SKIP_BECAUSE("no /proc/self/exe");
    self[n] = '\0';
    lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sin4(&a, "127.0.0.1", 0);
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(lfd, 8) < 0 ||
        getsockname(lfd, (struct sockaddr *)&a, &al) < 0)
        TAP_SKIP_BECAUSE("no loopback TCP");
    for (int round = 0; round < 2; round++) {
        kid = child_connect(ntohs(a.sin_port), round == 1, &rd);
        CHECK(kid > 0);
        CHECK_INT((int)read(rd, &x, 1), 1);
        close(rd);
        cfd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        CHECK(cfd >= 0);
        pl = sizeof(peer);
        ll = sizeof(local);
        getpeername(cfd, (struct sockaddr *)&peer, &pl);
        getsockname(cfd, (struct sockaddr *)&local, &ll);
        id = px_ident_new("/proc");
        px_ident_set_anchor(id, getpid());
        if (round == 0) {
            /* sock_diag finds the same socket /proc/net/tcp lists. */
            struct buf tab = BUF_INIT;
            unsigned long want = 0;
            int dfd = px_ident_diag_open();

            if (read_file("/proc/self/net/tcp", 64 << 20, &tab, NULL) == 0)
                want = px_ident_find_inode(buf_cstr(&tab), (struct sockaddr *)&peer,
                                           (struct sockaddr *)&local);
            buf_fini(&tab);
            CHECK(want != 0);
            if (dfd >= 0) {
                CHECK(px_ident_diag_inode(dfd, (struct sockaddr *)&peer,
                                          (struct sockaddr *)&local) == (long)want);
                /* Another port: no such socket. */
                ((struct sockaddr_in *)&peer)->sin_port ^= htons(1);
                CHECK(px_ident_diag_inode(dfd, (struct sockaddr *)&peer,
                                          (struct sockaddr *)&local) <= 0);
                ((struct sockaddr_in *)&peer)->sin_port ^= htons(1);
                px_ident_set_diag_fd(id, dfd);
            } else {
                tap_diag("no sock_diag here (%s): /proc path only", strerror(-dfd));
            }
        }
        err_clear(&e);
        rc = lookup_wait(id, (struct sockaddr *)&peer, (struct sockaddr *)&local, &c, &e);
        if (round == 0) {
            CHECK_INT(rc, 0);
            CHECK_INT(c.pid, kid);
            CHECK_STR(c.binary, self);
            CHECK_INT((int)c.nancestors, 1); /* this process, the anchor */
            CHECK_STR(c.ancestors[0], self);
        } else {
            CHECK_INT(rc, -EACCES);
            CHECK_CONTAINS(e.msg, "ambiguous shared socket ownership");
        }
        px_ident_caller_fini(&c);
        px_ident_free(id);
        close(cfd);
        kill(kid, SIGKILL);
        waitpid(kid, &st, 0);
    }
    close(lfd);
    return TAP_PASS;
}

/* Images over PX_IDENT_INLINE_HASH are hashed on the worker: the lookup
 * answers -EINPROGRESS, the notify fd wakes, then it decides (and a big
 * binary changed later is caught the same way). */
static int
test_async_hash(void)
{
    char root[] = "/tmp/test_px_ident_big.XXXXXX", p[512], big[512], tcp[512];
    struct buf tab = BUF_INIT, content = BUF_INIT;
    struct sockaddr_in peer, local;
    struct px_ident_caller c;
    struct px_ident *id;
    struct pollfd pf;
    struct err e;
    int rc, rounds;

    if (!mkdtemp(root))
        return TAP_FAIL;
    buf_fmt_fixed(big, sizeof(big), "%s/node", root);
    for (size_t i = 0; i < PX_IDENT_INLINE_HASH / 16 + 10; i++)
        buf_puts(&content, "0123456789abcdef");
    put(big, buf_cstr(&content));
    buf_fmt_fixed(p, sizeof(p), "%s/proc", root);
    mk(root, "proc");
    fake_proc(p, 50, 1, big, 888);
    mk(p, "50/net");
    buf_puts(&tab, "  sl  local_address rem_address   st\n");
    tcp_line(&tab, 0, "127.0.0.1", 41000, "127.0.0.1", 3128, 1, 888);
    buf_fmt_fixed(tcp, sizeof(tcp), "%s/50/net/tcp", p);
    put(tcp, buf_cstr(&tab));
    sin4(&peer, "127.0.0.1", 41000);
    sin4(&local, "127.0.0.1", 3128);
    id = px_ident_new(p);
    px_ident_set_anchor(id, 50);
    for (int phase = 0; phase < 2; phase++) {
        rc = px_ident_lookup(id, (struct sockaddr *)&peer, (struct sockaddr *)&local, &c, &e);
        CHECK_INT(rc, -EINPROGRESS);
        /* Asking again while it runs does not queue it twice. */
        rc = px_ident_lookup(id, (struct sockaddr *)&peer, (struct sockaddr *)&local, &c, &e);
        CHECK_INT(rc, -EINPROGRESS);
        for (rounds = 0; rounds < 100; rounds++) {
            pf.fd = px_ident_notify_fd(id);
            pf.events = POLLIN;
            if (poll(&pf, 1, 100) == 1 && px_ident_poll(id))
                break;
        }
        CHECK(rounds < 100);
        rc = px_ident_lookup(id, (struct sockaddr *)&peer, (struct sockaddr *)&local, &c, &e);
        if (phase == 0) {
            CHECK_INT(rc, 0);
            CHECK_STR(c.binary, big);
            px_ident_caller_fini(&c);
            /* Now the same big binary, changed. */
            buf_puts(&content, "x");
            put(big, buf_cstr(&content));
        } else {
            CHECK_INT(rc, -EACCES);
            CHECK_CONTAINS(e.msg, "Binary integrity violation");
            /* Remembered: no second hash for the same bad image. */
            rc = px_ident_lookup(id, (struct sockaddr *)&peer, (struct sockaddr *)&local, &c, &e);
            CHECK_INT(rc, -EACCES);
        }
    }
    px_ident_free(id);
    buf_fini(&tab);
    buf_fini(&content);
    {
        char cmd[600];

        buf_fmt_fixed(cmd, sizeof(cmd), "rm -rf '%s'", root);
        (void)!system(cmd);
    }
    return TAP_PASS;
}

static int
test_control(void)
{
    struct px_ident *id = px_ident_new("/proc");
    int p[2];

    CHECK_INT(pipe2(p, O_CLOEXEC | O_NONBLOCK), 0);
    CHECK_INT(px_ident_read_control(id, p[0], 0), 0);
    CHECK_INT((int)write(p[1], "agent 12", 8), 8);
    CHECK_INT(px_ident_read_control(id, p[0], 0), 0);
    CHECK_INT((int)write(p[1], "34\nagent bad\n", 13), 13);
    CHECK_INT(px_ident_read_control(id, p[0], 10), 1);
    CHECK_INT(px_ident_anchor(id), 1234);
    close(p[1]);
    CHECK_INT(px_ident_read_control(id, p[0], 0), -EPIPE);
    close(p[0]);
    px_ident_free(id);
    return TAP_PASS;
}

TAP_MAIN(TAP_TEST(test_parse_lines), TAP_TEST(test_find_inode), TAP_TEST(test_ppid),
         TAP_TEST(test_fake_proc), TAP_TEST(test_real_proc), TAP_TEST(test_async_hash),
         TAP_TEST(test_control))
