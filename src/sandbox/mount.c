/* mount.c: the agent's filesystem view (see include/sb_mount.h). */
#include "sb_mount.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "buf.h"
#include "log.h"
#include "xfuncs.h"

#ifndef SYS_mount_setattr
#define SYS_mount_setattr 442
#endif
#ifndef SYS_pivot_root
#define SYS_pivot_root 155
#endif
#define SB_MOUNT_ATTR_RDONLY 0x1
#define SB_MOUNT_ATTR_NOSUID 0x2
#define SB_MOUNT_ATTR_NODEV 0x4
#define SB_MOUNT_ATTR_NOEXEC 0x8
#define SB_AT_RECURSIVE 0x8000
#define SB_AT_SYMLINK_NOFOLLOW 0x100

/* Where the staging tmpfs goes in the (private) old tree, and the names of
 * the new root and the parked old root inside it. */
#define SB_BASE "/tmp"
#define SB_NEW "/newroot"
#define SB_OLD "/oldroot"

struct sb_mount_attr {
    uint64_t attr_set, attr_clr, propagation, userns_fd;
};

/* Only ever add flags (read-only, nosuid, ...): in a user namespace flags
 * the host locked cannot be cleared, and we never want to clear them. */
static int
set_attr(const char *path, uint64_t set, bool recursive, struct err *e)
{
    struct sb_mount_attr a = { .attr_set = set };

    if (syscall(SYS_mount_setattr, AT_FDCWD, path, recursive ? SB_AT_RECURSIVE : 0, &a, sizeof(a)) <
        0)
        return err_errno(e, "mount_setattr %s", path);
    return 0;
}

static int
do_mount(const char *src, const char *dst, const char *type, unsigned long flags, const char *data,
         struct err *e)
{
    if (mount(src, dst, type, flags, data) < 0)
        return err_errno(e, "mount %s on %s", type ? type : src ? src : "(remount)", dst);
    return 0;
}

static int
make_dir(const char *path, mode_t mode, struct err *e)
{
    if (mkdir(path, mode) < 0 && errno != EEXIST)
        return err_errno(e, "mkdir %s", path);
    return 0;
}

static int
make_file(const char *path, struct err *e)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);

    if (fd < 0)
        return err_errno(e, "create %s", path);
    close(fd);
    return 0;
}

/* Bind SRC (file or directory, recursively) onto a new mount point DST and
 * make it read-only, nosuid, nodev. */
static int
bind_ro(const char *src, const char *dst, bool isdir, struct err *e)
{
    int rc = isdir ? make_dir(dst, 0755, e) : make_file(dst, e);

    if (rc < 0)
        return rc;
    if ((rc = do_mount(src, dst, NULL, MS_BIND | MS_REC, NULL, e)) < 0)
        return rc;
    return set_attr(dst, SB_MOUNT_ATTR_RDONLY | SB_MOUNT_ATTR_NOSUID | SB_MOUNT_ATTR_NODEV, true,
                    e);
}

/* Our own mount points at the top level: never taken from ROOT. */
static bool
reserved_top(const char *name)
{
    static const char *const names[] = { "proc", "dev", "tmp", "sandbox", NULL };

    for (size_t i = 0; names[i]; i++)
        if (strcmp(name, names[i]) == 0)
            return true;
    return false;
}

/* Mirror the top level of OLDROOT (the root as seen after the first pivot)
 * into /newroot. */
static int
mirror_root(const char *oldroot, struct err *e)
{
    DIR *d = opendir(oldroot);
    struct dirent *de;
    int rc = 0;

    if (!d)
        return err_errno(e, "opendir %s", oldroot);
    while (rc == 0 && (de = readdir(d)) != NULL) {
        struct buf src = BUF_INIT, dst = BUF_INIT;
        struct stat st;

        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0 ||
            reserved_top(de->d_name))
            continue;
        buf_printf(&src, "%s/%s", oldroot, de->d_name);
        buf_printf(&dst, SB_NEW "/%s", de->d_name);
        if (lstat(buf_cstr(&src), &st) < 0) {
            rc = err_errno(e, "lstat %s", buf_cstr(&src));
        } else if (S_ISLNK(st.st_mode)) {
            char target[4096];
            ssize_t n = readlink(buf_cstr(&src), target, sizeof(target) - 1);
            if (n < 0) {
                rc = err_errno(e, "readlink %s", buf_cstr(&src));
            } else {
                target[n] = '\0';
                if (symlink(target, buf_cstr(&dst)) < 0)
                    rc = err_errno(e, "symlink %s", buf_cstr(&dst));
            }
        } else if (S_ISDIR(st.st_mode) || S_ISREG(st.st_mode)) {
            rc = bind_ro(buf_cstr(&src), buf_cstr(&dst), S_ISDIR(st.st_mode), e);
        } /* sockets, fifos, devices at the top level: left out */
        buf_fini(&src);
        buf_fini(&dst);
    }
    closedir(d);
    return rc;
}

/* A minimal /dev: binds of the harmless host nodes (mknod is not possible
 * in a user namespace, and binds work the same as root), a private devpts. */
static int
build_dev(bool userns, struct err *e)
{
    static const char *const nodes[] = { "null", "zero", "full", "random", "urandom", "tty", NULL };
    static const char *const links[][2] = {
        { "/proc/self/fd", "fd" },       { "/proc/self/fd/0", "stdin" },
        { "/proc/self/fd/1", "stdout" }, { "/proc/self/fd/2", "stderr" },
        { "pts/ptmx", "ptmx" },
    };
    int rc;

    if ((rc = make_dir(SB_NEW "/dev", 0755, e)) < 0 ||
        (rc = do_mount("tmpfs", SB_NEW "/dev", "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=0755,size=64k",
                       e)) < 0)
        return rc;
    for (size_t i = 0; nodes[i]; i++) {
        char src[64], dst[64];
        buf_fmt_fixed(src, sizeof(src), SB_OLD "/dev/%s", nodes[i]);
        buf_fmt_fixed(dst, sizeof(dst), SB_NEW "/dev/%s", nodes[i]);
        if ((rc = make_file(dst, e)) < 0 || (rc = do_mount(src, dst, NULL, MS_BIND, NULL, e)) < 0 ||
            (rc = set_attr(dst, SB_MOUNT_ATTR_NOSUID | SB_MOUNT_ATTR_NOEXEC, false, e)) < 0)
            return rc;
    }
    for (size_t i = 0; i < sizeof(links) / sizeof(links[0]); i++) {
        char dst[64];
        buf_fmt_fixed(dst, sizeof(dst), SB_NEW "/dev/%s", links[i][1]);
        if (symlink(links[i][0], dst) < 0)
            return err_errno(e, "symlink %s", dst);
    }
    /* A new devpts instance: the agent's ptys are its own. The tty group
     * (gid 5) only exists when we are not in a user namespace. */
    if ((rc = make_dir(SB_NEW "/dev/pts", 0755, e)) < 0 ||
        (rc = do_mount("devpts", SB_NEW "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC,
                       userns ? "newinstance,ptmxmode=0666,mode=0620"
                              : "newinstance,ptmxmode=0666,mode=0620,gid=5",
                       e)) < 0)
        return rc;
    if ((rc = make_dir(SB_NEW "/dev/shm", 01777, e)) < 0 ||
        (rc = do_mount("tmpfs", SB_NEW "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777", e)) <
            0)
        return rc;
    return 0;
}

int
sb_mount_build(const struct sb_mount_spec *spec, struct err *e)
{
    struct buf path = BUF_INIT;
    int rc;

    /* Nothing we mount may propagate back to the host. */
    if ((rc = do_mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL, e)) < 0)
        return rc;
    /* Stage on a tmpfs over /tmp, then pivot into it: the old root stays
     * reachable at /oldroot (with the host's /tmp uncovered again, since the
     * tmpfs moved away), and every mount point we need is on our tmpfs. */
    if ((rc = do_mount("tmpfs", SB_BASE, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=64k", e)) <
        0)
        return rc;
    if (chdir(SB_BASE) < 0)
        return err_errno(e, "chdir " SB_BASE);
    if ((rc = make_dir("newroot", 0755, e)) < 0 || (rc = make_dir("oldroot", 0755, e)) < 0)
        return rc;
    if (syscall(SYS_pivot_root, ".", "oldroot") < 0)
        return err_errno(e, "pivot_root to the staging tmpfs");
    if (chdir("/") < 0)
        return err_errno(e, "chdir /");

    /* The new root: a tmpfs, read-only once populated. */
    if ((rc = do_mount("tmpfs", SB_NEW, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=64k", e)) <
        0)
        return rc;
    buf_printf(&path, SB_OLD "%s", strcmp(spec->root, "/") == 0 ? "" : spec->root);
    rc = mirror_root(path.len ? buf_cstr(&path) : SB_OLD, e);
    buf_fini(&path);
    if (rc < 0)
        return err_wrap(e, "mirroring %s", spec->root);

    if ((rc = make_dir(SB_NEW "/tmp", 01777, e)) < 0 ||
        (rc = do_mount("tmpfs", SB_NEW "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777", e)) < 0)
        return rc;
    if ((rc = make_dir(SB_NEW "/proc", 0555, e)) < 0 ||
        (rc = do_mount("proc", SB_NEW "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL, e)) <
            0)
        return rc;
    if ((rc = build_dev(spec->userns, e)) < 0)
        return rc;

    buf_printf(&path, SB_OLD "%s", spec->workdir);
    if ((rc = make_dir(SB_NEW "/sandbox", 0755, e)) < 0 ||
        (rc = do_mount(buf_cstr(&path), SB_NEW "/sandbox", NULL, MS_BIND | MS_REC, NULL, e)) < 0 ||
        (rc = set_attr(SB_NEW "/sandbox", SB_MOUNT_ATTR_NOSUID | SB_MOUNT_ATTR_NODEV, true, e)) <
            0) {
        buf_fini(&path);
        return rc;
    }
    buf_fini(&path);

    /* Freeze the skeleton: no new top-level entries, and /dev is fixed. */
    if ((rc = set_attr(SB_NEW, SB_MOUNT_ATTR_RDONLY, false, e)) < 0 ||
        (rc = set_attr(SB_NEW "/dev", SB_MOUNT_ATTR_RDONLY, false, e)) < 0)
        return rc;

    /* Swap roots and drop the old one (with the staging tmpfs) entirely. */
    if (chdir(SB_NEW) < 0)
        return err_errno(e, "chdir " SB_NEW);
    if (syscall(SYS_pivot_root, ".", ".") < 0)
        return err_errno(e, "pivot_root into the sandbox root");
    if (umount2(".", MNT_DETACH) < 0)
        return err_errno(e, "detach the old root");
    if (chdir("/sandbox") < 0)
        return err_errno(e, "chdir /sandbox");
    return 0;
}
