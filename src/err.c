/* err.c: fixed-buffer error messages with context (see include/err.h). */
#include "err.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* vsnprintf into E's buffer, marking truncation with a trailing "...". */
static void
err_vformat(struct err *e, const char *fmt, va_list ap)
{
    int n = vsnprintf(e->msg, sizeof(e->msg), fmt, ap);

    if (n < 0)
        e->msg[0] = '\0';
    else if ((size_t)n >= sizeof(e->msg))
        memcpy(e->msg + sizeof(e->msg) - 4, "...", 4);
}

void
err_clear(struct err *e)
{
    if (!e)
        return;
    e->code = 0;
    e->msg[0] = '\0';
}

int
err_set(struct err *e, int code, const char *fmt, ...)
{
    va_list ap;

    if (code < 0)
        code = -code;
    if (code == 0)
        code = EIO;
    if (!e)
        return -code;
    e->code = code;
    va_start(ap, fmt);
    err_vformat(e, fmt, ap);
    va_end(ap);
    return -code;
}

int
err_errno(struct err *e, const char *fmt, ...)
{
    int saved = errno ? errno : EIO;
    va_list ap;
    size_t len;

    if (!e) {
        errno = saved;
        return -saved;
    }
    e->code = saved;
    va_start(ap, fmt);
    err_vformat(e, fmt, ap);
    va_end(ap);
    len = strlen(e->msg);
    if (len < sizeof(e->msg) - 1)
        snprintf(e->msg + len, sizeof(e->msg) - len, ": %s", strerror(saved));
    errno = saved;
    return -saved;
}

int
err_wrap(struct err *e, const char *fmt, ...)
{
    char ctx[ERR_MSG_MAX];
    char old[ERR_MSG_MAX];
    va_list ap;
    int n;

    if (!e)
        return -EIO;
    if (e->code == 0)
        e->code = EIO;
    va_start(ap, fmt);
    n = vsnprintf(ctx, sizeof(ctx), fmt, ap);
    va_end(ap);
    if (n < 0)
        ctx[0] = '\0';
    memcpy(old, e->msg, sizeof(old));
    n = snprintf(e->msg, sizeof(e->msg), "%s%s%s", ctx, old[0] ? ": " : "", old);
    if (n >= 0 && (size_t)n >= sizeof(e->msg))
        memcpy(e->msg + sizeof(e->msg) - 4, "...", 4);
    return -e->code;
}

const char *
err_str(const struct err *e, int rc)
{
    if (e && e->msg[0])
        return e->msg;
    return strerror(rc < 0 ? -rc : rc);
}
