/* test_sandbox.c: the sandbox modules that can be tested without building a
 * sandbox: passwd/group lookups, ids, the environment allow-list, option
 * parsing helpers, Landlock rights per ABI, and the seccomp filter (built
 * and loaded in a child process, checked call by call). */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "sb_landlock.h"
#include "sb_plan.h"
#include "sb_proc.h"
#include "sb_seccomp.h"
#include "sb_user.h"
#include "tap.h"
#include "xfuncs.h"

static char root[64];

/* A fake sandbox root with its own passwd and group files. */
static int
make_root(void)
{
    char p[128];
    FILE *f;

    if (root[0])
        return 0;
    buf_copy_fixed(root, sizeof(root), "/tmp/test_sandbox.XXXXXX");
    if (!mkdtemp(root))
        return -1;
    buf_fmt_fixed(p, sizeof(p), "%s/etc", root);
    mkdir(p, 0755);
    buf_fmt_fixed(p, sizeof(p), "%s/etc/passwd", root);
    f = fopen(p, "w");
    if (!f)
        return -1;
    fputs("root:x:0:0:root:/root:/bin/sh\n"
          "# a comment\n"
          "broken line without fields\n"
          "sandbox:x:1500:1600:Sandbox:/sandbox:/bin/bash\n"
          "toor:x:0:0::/:/bin/sh\n"
          "nobody:x:65534:65534::/nonexistent:/usr/sbin/nologin\n",
          f);
    fclose(f);
    buf_fmt_fixed(p, sizeof(p), "%s/etc/group", root);
    f = fopen(p, "w");
    if (!f)
        return -1;
    fputs("root:x:0:\nsandbox:x:1600:\nstaff:x:50:\n", f);
    fclose(f);
    return 0;
}

static void
cleanup_root(void)
{
    char p[128];

    if (!root[0])
        return;
    buf_fmt_fixed(p, sizeof(p), "%s/etc/passwd", root);
    unlink(p);
    buf_fmt_fixed(p, sizeof(p), "%s/etc/group", root);
    unlink(p);
    buf_fmt_fixed(p, sizeof(p), "%s/etc", root);
    rmdir(p);
    rmdir(root);
}

static int
test_parse_id(void)
{
    unsigned v = 0;

    CHECK_INT(sb_parse_id("1000", &v), 0);
    CHECK_INT(v, 1000);
    CHECK_INT(sb_parse_id("4294967294", &v), 0);
    CHECK_INT(sb_parse_id("0", &v), -EPERM);
    CHECK_INT(sb_parse_id("4294967295", &v), -EPERM);
    CHECK_INT(sb_parse_id("4294967296", &v), -EINVAL);
    CHECK_INT(sb_parse_id("-1", &v), -EINVAL);
    CHECK_INT(sb_parse_id("12a", &v), -EINVAL);
    CHECK_INT(sb_parse_id("", &v), -EINVAL);
    return TAP_PASS;
}

static int
test_user_lookup(void)
{
    struct err e;
    uid_t uid = 0;
    gid_t gid = 0;
    bool found = false;
    char name[32], home[64];

    CHECK(make_root() == 0);
    CHECK_INT(sb_user_lookup(root, "sandbox", &uid, &gid, &found, &e), 0);
    CHECK_INT(uid, 1500);
    CHECK_INT(gid, 1600);
    CHECK(found);
    /* A number need not be listed; a listed one gives its group. */
    CHECK_INT(sb_user_lookup(root, "4242", &uid, &gid, &found, &e), 0);
    CHECK_INT(uid, 4242);
    CHECK(!found);
    CHECK_INT(sb_user_lookup(root, "65534", &uid, &gid, &found, &e), 0);
    CHECK_INT(gid, 65534);
    CHECK_INT(sb_user_lookup(root, "nosuchuser", &uid, &gid, &found, &e), -ENOENT);
    CHECK_CONTAINS(e.msg, "does not exist");
    /* Root, by name, by number, or under another name, is refused. */
    CHECK_INT(sb_user_lookup(root, "root", &uid, &gid, &found, &e), -EPERM);
    CHECK_INT(sb_user_lookup(root, "toor", &uid, &gid, &found, &e), -EPERM);
    CHECK_INT(sb_user_lookup(root, "0", &uid, &gid, &found, &e), -EPERM);
    CHECK_INT(sb_group_lookup(root, "staff", &gid, &e), 0);
    CHECK_INT(gid, 50);
    CHECK_INT(sb_group_lookup(root, "root", &gid, &e), -EPERM);
    CHECK_INT(sb_group_lookup(root, "wheel", &gid, &e), -ENOENT);
    CHECK_INT(sb_user_name(root, 1500, name, sizeof(name), home, sizeof(home)), 0);
    CHECK_STR(name, "sandbox");
    CHECK_STR(home, "/sandbox");
    CHECK_INT(sb_user_name(root, 7, name, sizeof(name), NULL, 0), -ENOENT);
    /* A root without the files knows nobody by name. */
    CHECK_INT(sb_user_lookup("/nonexistent-root", "sandbox", &uid, &gid, &found, &e), -ENOENT);
    return TAP_PASS;
}

static int
test_env(void)
{
    char *host[] = { "PATH=/bin",  "SECRET=1",          "TERM=xterm", "LC_ALL=C",
                     "HOME=/root", "OPENSHELL_TOKEN=t", "noequals",   NULL };
    const char *extra[] = { "A=1", "TERM=dumb" };
    char *nopath[] = { NULL };
    char **env = sb_env_build(host, extra, 2, "/sandbox", "sandbox");
    struct buf all = BUF_INIT;

    for (size_t i = 0; env[i]; i++)
        buf_printf(&all, "%s;", env[i]);
    CHECK_STR(buf_cstr(&all), "PATH=/bin;TERM=dumb;LC_ALL=C;HOME=/sandbox;USER=sandbox;"
                              "LOGNAME=sandbox;PWD=/sandbox;OPENSHELL_SANDBOX=1;A=1;");
    buf_fini(&all);
    sb_env_free(env);
    env = sb_env_build(nopath, NULL, 0, "/sandbox", NULL);
    CHECK(strncmp(env[0], "PATH=/usr/local/sbin:", 21) == 0);
    CHECK_STR(env[1], "HOME=/sandbox");
    sb_env_free(env);
    CHECK(sb_env_valid("A=1"));
    CHECK(sb_env_valid("_x9="));
    CHECK(!sb_env_valid("=1"));
    CHECK(!sb_env_valid("1A=1"));
    CHECK(!sb_env_valid("A-B=1"));
    CHECK(!sb_env_valid("NOEQUALS"));
    return TAP_PASS;
}

static int
test_options(void)
{
    uint64_t ms = 0;

    CHECK_INT(sb_parse_timeout("30", &ms), 0);
    CHECK_INT(ms, 30000);
    CHECK_INT(sb_parse_timeout("0.25", &ms), 0);
    CHECK_INT(ms, 250);
    CHECK_INT(sb_parse_timeout("1.0005", &ms), 0);
    CHECK_INT(ms, 1000);
    CHECK_INT(sb_parse_timeout("", &ms), -EINVAL);
    CHECK_INT(sb_parse_timeout("soon", &ms), -EINVAL);
    CHECK_INT(sb_parse_timeout("-1", &ms), -EINVAL);
    CHECK_INT(sb_parse_timeout("1e3", &ms), -EINVAL);
    CHECK(sb_name_valid("box-1.dev"));
    CHECK(!sb_name_valid(""));
    CHECK(!sb_name_valid("-x"));
    CHECK(!sb_name_valid("a b"));
    CHECK(!sb_name_valid("a/b"));
    CHECK(!sb_name_valid("0123456789012345678901234567890123456789012345678901234567890123"));
    return TAP_PASS;
}

static int
test_landlock_rights(void)
{
    struct buf b = BUF_INIT;

    CHECK_INT(sb_landlock_handled(0), 0);
    CHECK_INT(sb_landlock_handled(1), 0x1fff);
    CHECK_INT(sb_landlock_handled(2), 0x3fff);
    CHECK_INT(sb_landlock_handled(3), 0x7fff);
    CHECK_INT(sb_landlock_handled(4), 0x7fff);
    CHECK_INT(sb_landlock_handled(5), 0xffff);
    CHECK_INT(sb_landlock_handled(7), 0xffff);
    CHECK_INT(sb_landlock_scoped(5), 0);
    CHECK_INT(sb_landlock_scoped(6), 3);
    CHECK_INT(sb_landlock_ro_rights(7), SB_LL_EXECUTE | SB_LL_READ_FILE | SB_LL_READ_DIR);
    CHECK_INT(sb_landlock_rw_rights(3), 0x7fff);
    sb_landlock_rights_str(SB_LL_EXECUTE | SB_LL_TRUNCATE | SB_LL_IOCTL_DEV, &b);
    CHECK_STR(buf_cstr(&b), "execute,truncate,ioctl_dev");
    buf_reset(&b);
    sb_landlock_rights_str(0, &b);
    CHECK_STR(buf_cstr(&b), "none");
    buf_fini(&b);
    return TAP_PASS;
}

/* In a child: no_new_privs, the filter, then each call's errno. */
static int
test_seccomp_filter(void)
{
    struct sb_bpf bpf;
    struct err e;
    int st = 0;
    pid_t pid;

    CHECK_INT(sb_seccomp_build(&bpf, &e), 0);
    CHECK(bpf.len > 0 && bpf.len % 8 == 0);
    pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        int fail = 0, fd;
        if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 || sb_seccomp_install(&bpf) < 0)
            _exit(100);
#define EXPECT(call, err)                                                                          \
    do {                                                                                           \
        errno = 0;                                                                                 \
        if ((call) != -1 || errno != (err))                                                        \
            fail = __LINE__;                                                                       \
    } while (0)
        EXPECT(syscall(SYS_ptrace, 0, 0, 0, 0), EPERM);
        EXPECT(syscall(434, getpid(), 0), EPERM);        /* pidfd_open */
        EXPECT(syscall(SYS_unshare, 0x10000000), EPERM); /* CLONE_NEWUSER */
        EXPECT(syscall(SYS_unshare, 0x80), EPERM);       /* CLONE_NEWTIME */
        EXPECT(syscall(435, NULL, 0), ENOSYS);           /* clone3 */
        EXPECT(socket(AF_PACKET, SOCK_RAW, 0), EPERM);
        EXPECT(socket(40, SOCK_STREAM, 0), EPERM);      /* AF_VSOCK */
        EXPECT(socket(AF_NETLINK, SOCK_RAW, 4), EPERM); /* NETLINK_SOCK_DIAG */
        EXPECT(socket(AF_INET, SOCK_RAW | SOCK_CLOEXEC, 1), EPERM);
        EXPECT(syscall(SYS_seccomp, 1, 0, NULL), EPERM);
        EXPECT(prctl(PR_SET_SECCOMP, 2, 0, 0, 0), EPERM);
        EXPECT(syscall(SYS_execveat, -1, "", NULL, NULL, 0x1000), EPERM);
        EXPECT(syscall(SYS_mount_setattr, -1, "", 0, NULL, 0), EPERM);
        EXPECT(syscall(467, -1, "", 0, NULL, 0), EPERM); /* open_tree_attr, a raw number */
        EXPECT(ioctl(0, 0x5412, "x"), EPERM);            /* TIOCSTI */
        /* Allowed: ordinary sockets, route netlink, unshare(0). */
        fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0)
            fail = __LINE__;
        close(fd);
        fd = socket(AF_NETLINK, SOCK_RAW, 0);
        if (fd < 0)
            fail = __LINE__;
        close(fd);
        if (syscall(SYS_unshare, 0) != 0)
            fail = __LINE__;
        _exit(fail ? fail % 200 + 1 : 0);
    }
    CHECK(waitpid(pid, &st, 0) == pid);
    sb_bpf_fini(&bpf);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        tap_diag("child status %d (a failing EXPECT line modulo 200, plus 1)", st);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    return TAP_PASS;
}

/* The supervisor's prelude: mounting fails, setns and the rest do not. */
static int
test_seccomp_prelude(void)
{
    struct sb_bpf bpf;
    struct err e;
    int st = 0;
    pid_t pid;

    CHECK_INT(sb_seccomp_build_prelude(&bpf, &e), 0);
    pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        int fail = 0;
        if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 || sb_seccomp_install(&bpf) < 0)
            _exit(100);
        EXPECT(syscall(SYS_mount, "none", "/", NULL, 0, NULL), EPERM);
        EXPECT(syscall(SYS_bpf, 0, NULL, 0), EPERM);
        EXPECT(syscall(SYS_setns, -1, 0), EBADF);
        _exit(fail ? fail % 200 + 1 : 0);
    }
    CHECK(waitpid(pid, &st, 0) == pid);
    sb_bpf_fini(&bpf);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    return TAP_PASS;
}

static int
test_seccomp_explain(void)
{
    struct buf b = BUF_INIT;

    sb_seccomp_explain(&b, "  ");
    CHECK_CONTAINS(buf_cstr(&b), "  ptrace -> EPERM: ");
    CHECK_CONTAINS(buf_cstr(&b), "  clone3 -> ENOSYS: ");
    CHECK_CONTAINS(buf_cstr(&b), "execveat with AT_EMPTY_PATH -> EPERM");
    buf_fini(&b);
    cleanup_root();
    return TAP_PASS;
}

TAP_MAIN(TAP_TEST(test_parse_id), TAP_TEST(test_user_lookup), TAP_TEST(test_env),
         TAP_TEST(test_options), TAP_TEST(test_landlock_rights), TAP_TEST(test_seccomp_filter),
         TAP_TEST(test_seccomp_prelude), TAP_TEST(test_seccomp_explain))
