/*
 * sv_task.c: the file-transfer operations of exec relays (INIT "op":
 * "untar" / "tar"). They run in the child PID 1 forks for the relay, after
 * every restriction the agent has (netns, identity, no_new_privs, Landlock,
 * seccomp): our own tar code (include/tar.h), never an external binary.
 * stdin/stdout carry the archive; a failure is one line on stderr and a
 * non-zero status, which the outer supervisor turns into an ERROR frame.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "supervisor.h"
#include "tar.h"
#include "xfuncs.h"

static void
task_fail(const char *what, const char *msg)
{
    char line[1024];

    /* tar.h's messages name themselves ("tar: entry ..."). */
    if (strncmp(msg, "tar: ", 5) == 0)
        what = "";
    if (buf_fmt_fixed(line, sizeof(line), "%s%s%s\n", what, what[0] ? ": " : "", msg) < 0)
        buf_copy_fixed(line, sizeof(line), "tar: failed\n");
    (void)!write(STDERR_FILENO, line, strlen(line));
}

/* mkdir -p PATH (absolute or relative to the cwd); 0 or -errno. */
static int
mkdir_p(const char *path)
{
    char tmp[4096];
    size_t n = strlen(path);

    if (n == 0 || n >= sizeof(tmp))
        return -ENAMETOOLONG;
    memcpy(tmp, path, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (tmp[i] != '/' && tmp[i] != '\0')
            continue;
        tmp[i] = '\0';
        if (mkdir(tmp, 0755) < 0 && errno != EEXIST)
            return -errno;
        tmp[i] = path[i];
    }
    return 0;
}

/* untar: STDIN is a tar stream, extracted into PATH (created if missing). */
static int
task_untar(const struct sv_child *x)
{
    const char *path = x->path && x->path[0] ? x->path : ".";
    struct err e;
    int dfd, rc;

    err_clear(&e);
    if ((rc = mkdir_p(path)) < 0) {
        task_fail(path, strerror(-rc));
        return 1;
    }
    dfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) {
        task_fail(path, strerror(errno));
        return 1;
    }
    rc = tar_extract(STDIN_FILENO, dfd, NULL, NULL, &e);
    close(dfd);
    if (rc < 0) {
        task_fail("untar", e.msg[0] ? e.msg : strerror(-rc));
        return 1;
    }
    return 0;
}

/* tar: a tar of PATH (file or directory) on STDOUT. */
static int
task_tar(const struct sv_child *x)
{
    struct err e;
    int rc;

    err_clear(&e);
    if (!x->path || !x->path[0]) {
        task_fail("tar", "no path");
        return 1;
    }
    rc = tar_create(STDOUT_FILENO, AT_FDCWD, x->path, NULL, NULL, &e);
    if (rc < 0) {
        task_fail("tar", e.msg[0] ? e.msg : strerror(-rc));
        return 1;
    }
    return 0;
}

sv_task_fn
sv_task_find(const char *op)
{
    if (strcmp(op, "untar") == 0)
        return task_untar;
    if (strcmp(op, "tar") == 0)
        return task_tar;
    return NULL;
}
