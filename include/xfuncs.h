#ifndef OPENSHELL_XFUNCS_H
#define OPENSHELL_XFUNCS_H
/*
 * xfuncs: allocation that never fails visibly, die() for setup code, scope
 * cleanup, and EINTR-safe I/O helpers.
 *
 * - x* allocators abort with a message on out-of-memory; they never return NULL.
 * - die()/die_errno() are for setup and one-shot code only (argument parsing,
 *   the client, the supervisor between clone and exec). They log through
 *   log.h and exit(1). Event-loop code returns errors instead.
 * - AUTOFREE / AUTOCLOSE release a local at scope exit; steal_ptr()/steal_fd()
 *   hand ownership out (and disarm the cleanup). -1 means "no fd".
 * - read_full/write_full loop over short counts and EINTR.
 */
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "buf.h"
#include "err.h"

/* Exit statuses shared by every applet. */
#define EXIT_USAGE 2      /* bad command line */
#define EXIT_NOAPPLET 127 /* no such applet / command not found */

void *xmalloc(size_t n) __attribute__((malloc, alloc_size(1), returns_nonnull));
void *xcalloc(size_t n, size_t size) __attribute__((malloc, alloc_size(1, 2), returns_nonnull));
void *xrealloc(void *p, size_t n) __attribute__((alloc_size(2), returns_nonnull));
char *xstrdup(const char *s) __attribute__((malloc, returns_nonnull));
char *xstrndup(const char *s, size_t n) __attribute__((malloc, returns_nonnull));
/* Formatted string on the heap; the caller frees it. */
char *xasprintf(const char *fmt, ...)
    __attribute__((format(printf, 1, 2), malloc, returns_nonnull));

/* Log at error level and exit(1). Setup code only. */
void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
/* Like die() with ": strerror(errno)" appended. */
void die_errno(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

/* A broken invariant: print where and abort. */
#define BUG() bug_at(__FILE__, __LINE__, __func__)
#define BUG_ON(cond)                                                                               \
    do {                                                                                           \
        if (cond)                                                                                  \
            BUG();                                                                                 \
    } while (0)
void bug_at(const char *file, int line, const char *func) __attribute__((noreturn, cold));

/* Retry an expression returning -1 with errno EINTR (glibc's TEMP_FAILURE_RETRY). */
#define RETRY_EINTR(expr)                                                                          \
    ({                                                                                             \
        long _rc;                                                                                  \
        do                                                                                         \
            _rc = (long)(expr);                                                                    \
        while (_rc == -1 && errno == EINTR);                                                       \
        _rc;                                                                                       \
    })

void xfuncs_freep(void *p);
void xfuncs_closep(int *fd);
#define AUTOFREE __attribute__((cleanup(xfuncs_freep)))
#define AUTOCLOSE __attribute__((cleanup(xfuncs_closep)))

/* Return *PP and set it to NULL (ownership leaves the AUTOFREE scope). */
#define steal_ptr(pp)                                                                              \
    ({                                                                                             \
        __typeof__(*(pp)) _p = *(pp);                                                              \
        *(pp) = NULL;                                                                              \
        _p;                                                                                        \
    })
/* Return *FDP and set it to -1. */
#define steal_fd(fdp)                                                                              \
    ({                                                                                             \
        int _fd = *(fdp);                                                                          \
        *(fdp) = -1;                                                                               \
        _fd;                                                                                       \
    })

/* Fill P[N] from getrandom(2) (retrying EINTR and short reads). Never fails
 * once the kernel's pool is initialised (Linux >= 3.17): a failure is a bug. */
void xgetrandom(void *p, size_t n);
/* Write all N bytes of P to FD. Returns 0 or -errno. */
int write_full(int fd, const void *p, size_t n);
/* Read up to N bytes, stopping early only at end of file. Returns the byte
 * count or -errno. */
ssize_t read_full(int fd, void *p, size_t n);
/* Append all of FD's contents to OUT, failing with -EFBIG past MAX bytes. */
int read_fd_all(int fd, struct buf *out, size_t max);
/* Read PATH (at most MAX bytes) into OUT. Returns 0 or -errno, E filled with
 * "open PATH: ..." style messages. */
int read_file(const char *path, size_t max, struct buf *out, struct err *e);

#endif
