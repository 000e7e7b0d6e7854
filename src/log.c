/* log.c: text or JSON log lines on stderr (see include/log.h). */
#include "log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "xfuncs.h"

static const char *log_name = "openshell";
static enum log_level log_level = LOG_LVL_INFO;
static enum log_format log_format = LOG_FMT_AUTO;
static int log_fd = 2;

static const char *const level_names[] = { "debug", "info", "warn", "error" };

int
log_parse_level(const char *s, enum log_level *out)
{
    for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
        if (strcasecmp(s, level_names[i]) == 0) {
            *out = (enum log_level)i;
            return 0;
        }
    }
    if (strcasecmp(s, "warning") == 0) {
        *out = LOG_LVL_WARN;
        return 0;
    }
    return -EINVAL;
}

int
log_parse_format(const char *s, enum log_format *out)
{
    if (strcmp(s, "auto") == 0)
        *out = LOG_FMT_AUTO;
    else if (strcmp(s, "text") == 0)
        *out = LOG_FMT_TEXT;
    else if (strcmp(s, "json") == 0)
        *out = LOG_FMT_JSON;
    else
        return -EINVAL;
    return 0;
}

void
log_init(const char *applet)
{
    const char *v;
    enum log_level lvl;
    enum log_format fmt;

    log_name = applet;
    /* A bad value in the environment must not stop the program: warn, keep the
     * default. The format comes first so that warnings already use it. */
    if ((v = getenv("OPENSHELL_LOG_FORMAT")) && *v) {
        if (log_parse_format(v, &fmt) == 0)
            log_format = fmt;
        else
            log_warnx("ignoring OPENSHELL_LOG_FORMAT=%s (expected text, json or auto)", v);
    }
    if ((v = getenv("OPENSHELL_LOG_LEVEL")) && *v) {
        if (log_parse_level(v, &lvl) == 0)
            log_level = lvl;
        else
            log_warnx("ignoring OPENSHELL_LOG_LEVEL=%s (expected debug, info, warn or error)", v);
    }
}

void
log_set_level(enum log_level level)
{
    log_level = level;
}

void
log_set_format(enum log_format fmt)
{
    log_format = fmt;
}

void
log_set_fd(int fd)
{
    log_fd = fd;
}

enum log_level
log_get_level(void)
{
    return log_level;
}

bool
log_enabled(enum log_level level)
{
    return level >= log_level;
}

const char *
log_applet(void)
{
    return log_name;
}

bool
log_is_json(void)
{
    if (log_format == LOG_FMT_AUTO)
        return !isatty(log_fd);
    return log_format == LOG_FMT_JSON;
}

/* The line's common head: timestamp, level, applet, pid. */
static void
log_head(struct buf *b, enum log_level level, bool json)
{
    struct timespec ts;
    struct tm tm;
    char when[32];

    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
    if (json) {
        buf_printf(b, "{\"ts\":\"%s.%03ldZ\",\"level\":\"%s\",\"applet\":", when,
                   ts.tv_nsec / 1000000, level_names[level]);
        buf_put_json_str(b, log_name, strlen(log_name));
        buf_printf(b, ",\"pid\":%ld,\"msg\":", (long)getpid());
    } else {
        buf_printf(b, "%s.%03ldZ %s[%ld] %s: ", when, ts.tv_nsec / 1000000, log_name,
                   (long)getpid(), level_names[level]);
    }
}

static void
log_emit(struct buf *b)
{
    int saved = errno;

    buf_putc(b, '\n');
    /* One write per line keeps lines whole when several processes share stderr. */
    (void)!write(log_fd, b->data, b->len);
    errno = saved;
}

void
log_vmsg(enum log_level level, bool with_errno, const char *fmt, va_list ap)
{
    int saved = errno;
    struct buf msg = BUF_INIT, line = BUF_INIT;
    bool json;

    if (!log_enabled(level))
        return;
    json = log_is_json();
    buf_vprintf(&msg, fmt, ap);
    if (with_errno)
        buf_printf(&msg, ": %s", strerror(saved));
    log_head(&line, level, json);
    if (json) {
        buf_put_json_str(&line, msg.data, msg.len);
        buf_putc(&line, '}');
    } else {
        buf_append(&line, msg.data, msg.len);
    }
    log_emit(&line);
    buf_fini(&msg);
    buf_fini(&line);
    errno = saved;
}

#define LOG_FN(name, level, with_errno)                                                            \
    void name(const char *fmt, ...)                                                                \
    {                                                                                              \
        va_list ap;                                                                                \
        va_start(ap, fmt);                                                                         \
        log_vmsg(level, with_errno, fmt, ap);                                                      \
        va_end(ap);                                                                                \
    }

LOG_FN(log_debug, LOG_LVL_DEBUG, false)
LOG_FN(log_info, LOG_LVL_INFO, false)
LOG_FN(log_warn, LOG_LVL_WARN, true)
LOG_FN(log_warnx, LOG_LVL_WARN, false)
LOG_FN(log_error, LOG_LVL_ERROR, false)

void
fatal(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    log_vmsg(LOG_LVL_ERROR, true, fmt, ap);
    va_end(ap);
    exit(1);
}

void
fatalx(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    log_vmsg(LOG_LVL_ERROR, false, fmt, ap);
    va_end(ap);
    exit(1);
}

/* xfuncs.h's die() and die_errno() are the same operations under the names
 * setup code uses; aliases keep one implementation. */
void die(const char *fmt, ...) __attribute__((alias("fatalx")));
void die_errno(const char *fmt, ...) __attribute__((alias("fatal")));

/* A text value needs quotes when empty or when it holds space, quote, '=' or
 * a control character; quoting then escapes like JSON so lines stay parseable. */
static void
log_text_value(struct buf *b, const char *v)
{
    bool plain = *v != '\0';

    for (const unsigned char *p = (const unsigned char *)v; *p && plain; p++)
        if (*p <= ' ' || *p == '"' || *p == '=' || *p == 0x7f || *p == '\\')
            plain = false;
    if (plain)
        buf_puts(b, v);
    else
        buf_put_json_str(b, v, strlen(v));
}

void
log_kv(enum log_level level, const char *msg, ...)
{
    struct buf line = BUF_INIT;
    const char *k, *v;
    va_list ap;
    bool json;

    if (!log_enabled(level))
        return;
    json = log_is_json();
    log_head(&line, level, json);
    if (json)
        buf_put_json_str(&line, msg, strlen(msg));
    else
        buf_puts(&line, msg);
    va_start(ap, msg);
    while ((k = va_arg(ap, const char *)) != NULL) {
        v = va_arg(ap, const char *);
        if (!v)
            continue;
        if (json) {
            buf_putc(&line, ',');
            buf_put_json_str(&line, k, strlen(k));
            buf_putc(&line, ':');
            buf_put_json_str(&line, v, strlen(v));
        } else {
            buf_printf(&line, " %s=", k);
            log_text_value(&line, v);
        }
    }
    va_end(ap);
    if (json)
        buf_putc(&line, '}');
    log_emit(&line);
    buf_fini(&line);
}
