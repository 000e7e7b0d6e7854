/* xfuncs.c: allocation, die(), cleanup helpers and full I/O (see include/xfuncs.h). */
#include "xfuncs.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "log.h"

/* Out of memory is not an error we handle: say so without allocating and abort. */
static void __attribute__((noreturn)) oom(size_t n)
{
    char msg[96];
    int len = snprintf(msg, sizeof(msg), "openshell: out of memory allocating %zu bytes\n", n);

    if (len > 0)
        (void)!write(2, msg, (size_t)len);
    abort();
}

void *
xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);

    if (!p)
        oom(n);
    return p;
}

void *
xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);

    if (!p)
        oom(n * size);
    return p;
}

void *
xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);

    if (!q)
        oom(n);
    return q;
}

char *
xstrdup(const char *s)
{
    return xstrndup(s, strlen(s));
}

char *
xstrndup(const char *s, size_t n)
{
    size_t len = strnlen(s, n);
    char *p = xmalloc(len + 1);

    memcpy(p, s, len);
    p[len] = '\0';
    return p;
}

char *
xasprintf(const char *fmt, ...)
{
    struct buf b = BUF_INIT;
    va_list ap;

    va_start(ap, fmt);
    buf_vprintf(&b, fmt, ap);
    va_end(ap);
    return buf_steal(&b);
}

void
bug_at(const char *file, int line, const char *func)
{
    char msg[256];
    int n = snprintf(msg, sizeof(msg), "openshell: BUG at %s:%d in %s()\n", file, line, func);

    if (n > 0)
        (void)!write(2, msg, (size_t)n);
    abort();
}

void
xfuncs_freep(void *p)
{
    free(*(void **)p);
}

void
xfuncs_closep(int *fd)
{
    if (*fd >= 0) {
        int saved = errno;
        close(*fd);
        errno = saved;
    }
}

int
write_full(int fd, const void *p, size_t n)
{
    const char *c = p;

    while (n > 0) {
        ssize_t w = write(fd, c, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

ssize_t
read_full(int fd, void *p, size_t n)
{
    char *c = p;
    size_t got = 0;

    while (got < n) {
        ssize_t r = read(fd, c + got, n - got);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (r == 0)
            break;
        got += (size_t)r;
    }
    return (ssize_t)got;
}

int
read_fd_all(int fd, struct buf *out, size_t max)
{
    size_t start = out->len;

    for (;;) {
        ssize_t r;

        buf_reserve(out, 4096);
        r = read(fd, out->data + out->len, out->cap - out->len - 1);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (r == 0)
            return 0;
        out->len += (size_t)r;
        out->data[out->len] = '\0';
        if (out->len - start > max)
            return -EFBIG;
    }
}

int
read_file(const char *path, size_t max, struct buf *out, struct err *e)
{
    AUTOCLOSE int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    int rc;

    if (fd < 0)
        return err_errno(e, "open %s", path);
    rc = read_fd_all(fd, out, max);
    if (rc == -EFBIG)
        return err_set(e, EFBIG, "%s: larger than %zu bytes", path, max);
    if (rc < 0) {
        errno = -rc;
        return err_errno(e, "read %s", path);
    }
    return 0;
}

void
xgetrandom(void *p, size_t n)
{
    size_t got = 0;

    while (got < n) {
        ssize_t k = getrandom((char *)p + got, n - got, 0);

        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            BUG();
        got += (size_t)k;
    }
}
