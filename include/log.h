#ifndef OPENSHELL_LOG_H
#define OPENSHELL_LOG_H
/*
 * log: one log format for every applet, OpenSMTPD style.
 *
 * log_init(applet) once at startup. Every line carries the applet name and
 * pid. Output goes to stderr (only the client writes stdout): human text when
 * stderr is a terminal, JSON lines otherwise, or as forced with
 * --log-format / OPENSHELL_LOG_FORMAT (text|json|auto). The level comes from
 * --log-level / OPENSHELL_LOG_LEVEL (debug|info|warn|error; default info).
 *
 *   text:  2026-11-23T18:00:00.123Z openshell-proxy[42] warn: connect example.com: refused
 *   json:  {"ts":"2026-11-23T18:00:00.123Z","level":"warn","applet":"openshell-proxy",
 *           "pid":42,"msg":"connect example.com: refused"}
 *
 * log_warn/fatal append ": strerror(errno)"; the *x forms do not. fatal and
 * fatalx exit(1): setup code only. log_kv() writes a structured record (policy
 * decisions): text as `msg key=value ...` (values quoted when needed), JSON as
 * extra fields. Logging never fails visibly and never allocates from a
 * long-lived heap object (each line is built and written with one write(2)).
 */
#include <stdarg.h>
#include <stdbool.h>

enum log_level {
    LOG_LVL_DEBUG = 0,
    LOG_LVL_INFO,
    LOG_LVL_WARN,
    LOG_LVL_ERROR,
};

enum log_format {
    LOG_FMT_AUTO = 0, /* text on a terminal, JSON otherwise */
    LOG_FMT_TEXT,
    LOG_FMT_JSON,
};

/* Set the applet name (borrowed, must outlive logging) and read
 * OPENSHELL_LOG_LEVEL / OPENSHELL_LOG_FORMAT. Safe to call again. */
void log_init(const char *applet);
void log_set_level(enum log_level level);
void log_set_format(enum log_format fmt);
/* Redirect output to FD (default 2). Used by tests and by daemons. */
void log_set_fd(int fd);
enum log_level log_get_level(void);
/* Whether lines are written as JSON now (auto: when the output is not a
 * terminal). Helpers started by an applet use it to log alike. */
bool log_is_json(void);
bool log_enabled(enum log_level level);
/* Parse "debug|info|warn|error" / "text|json|auto". Return 0 or -EINVAL. */
int log_parse_level(const char *s, enum log_level *out);
int log_parse_format(const char *s, enum log_format *out);
const char *log_applet(void);

void log_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_warnx(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
void fatalx(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
void log_vmsg(enum log_level level, bool with_errno, const char *fmt, va_list ap);

/* Structured record: MSG then NULL-terminated key, value string pairs.
 * A NULL value is skipped. Example:
 *   log_kv(LOG_LVL_INFO, "decision", "action", "deny", "host", host, NULL); */
void log_kv(enum log_level level, const char *msg, ...) __attribute__((sentinel));

#endif
