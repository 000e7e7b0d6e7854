/* cgroup.c: a pids cgroup per sandbox (see include/sb_cgroup.h). */
#include "sb_cgroup.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "buf.h"
#include "xfuncs.h"

static int
write_str(const char *dir, const char *file, const char *val)
{
    char path[4096];
    int fd, rc;

    if (buf_fmt_fixed(path, sizeof(path), "%s/%s", dir, file) < 0)
        return -ENAMETOOLONG;
    fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    rc = write_full(fd, val, strlen(val));
    close(fd);
    return rc;
}

/* The directory of our own pids cgroup: a v1 "pids" hierarchy, else the v2
 * one. Returns 0 or -ENOENT. */
static int
own_pids_dir(char *out, size_t size)
{
    char line[4096], v1[4096] = "", v2[4096] = "", mnt1[4096] = "", mnt2[4096] = "";
    FILE *f = fopen("/proc/self/cgroup", "re");

    if (!f)
        return -errno;
    while (fgets(line, sizeof(line), f)) {
        char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (!c2)
            continue;
        c2[strcspn(c2, "\n")] = '\0';
        *c2 = '\0';
        if (strcmp(c1 + 1, "") == 0 && strncmp(line, "0:", 2) == 0)
            buf_copy_fixed(v2, sizeof(v2), c2 + 1);
        else if (strstr(c1 + 1, "pids"))
            buf_copy_fixed(v1, sizeof(v1), c2 + 1);
    }
    fclose(f);
    /* Mount points (only mounts of the hierarchy's root: "/" as root). */
    f = fopen("/proc/self/mountinfo", "re");
    if (!f)
        return -errno;
    while (fgets(line, sizeof(line), f)) {
        char root[1024], point[1024], fstype[64], opts[1024];
        const char *dash = strstr(line, " - ");
        if (!dash || sscanf(line, "%*s %*s %*s %1023s %1023s", root, point) != 2 ||
            sscanf(dash + 3, "%63s %*s %1023s", fstype, opts) != 2 || strcmp(root, "/") != 0)
            continue;
        if (strcmp(fstype, "cgroup") == 0 && strstr(opts, "pids"))
            buf_copy_fixed(mnt1, sizeof(mnt1), point);
        else if (strcmp(fstype, "cgroup2") == 0)
            buf_copy_fixed(mnt2, sizeof(mnt2), point);
    }
    fclose(f);
    if (v1[0] && mnt1[0])
        return buf_fmt_fixed(out, size, "%s%s", mnt1, strcmp(v1, "/") == 0 ? "" : v1);
    if (v2[0] && mnt2[0])
        return buf_fmt_fixed(out, size, "%s%s", mnt2, strcmp(v2, "/") == 0 ? "" : v2);
    return -ENOENT;
}

int
sb_cgroup_enter(unsigned long max, char *dir, char *parent, size_t size, struct err *e)
{
    char val[32];
    int rc;

    if ((rc = own_pids_dir(parent, size)) < 0)
        return err_set(e, -rc, "no pids cgroup hierarchy found");
    if (buf_fmt_fixed(dir, size, "%s/openshell-%ld", parent, (long)getpid()) < 0)
        return err_set(e, ENAMETOOLONG, "cgroup path too long");
    if (mkdir(dir, 0755) < 0)
        return err_errno(e, "mkdir %s", dir);
    buf_fmt_fixed(val, sizeof(val), "%lu", max);
    if ((rc = write_str(dir, "pids.max", val)) < 0) {
        rmdir(dir);
        return err_set(e, -rc, "%s/pids.max: %s", dir, strerror(-rc));
    }
    buf_fmt_fixed(val, sizeof(val), "%ld", (long)getpid());
    if ((rc = write_str(dir, "cgroup.procs", val)) < 0) {
        rmdir(dir);
        return err_set(e, -rc, "%s/cgroup.procs: %s", dir, strerror(-rc));
    }
    return 0;
}

int
sb_cgroup_leave(const char *dir, const char *parent)
{
    char val[32];
    int rc;

    buf_fmt_fixed(val, sizeof(val), "%ld", (long)getpid());
    if ((rc = write_str(parent, "cgroup.procs", val)) < 0)
        return rc;
    /* Exiting tasks may linger for a moment after PID 1 was reaped. */
    for (int i = 0; i < 100; i++) {
        if (rmdir(dir) == 0 || errno == ENOENT)
            return 0;
        if (errno != EBUSY)
            return -errno;
        usleep(1000);
    }
    return -EBUSY;
}
