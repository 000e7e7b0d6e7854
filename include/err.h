#ifndef OPENSHELL_ERR_H
#define OPENSHELL_ERR_H
/*
 * err: errors that gain context on the way up.
 *
 * Library and event-loop code returns 0 on success or a negative errno. When a
 * function also takes an optional `struct err *` (caller-owned, may be NULL),
 * it fills it with a human message naming the operation and the object:
 *
 *     if (fd < 0)
 *         return err_errno(e, "open %s", path);     // "open /x: No such file..."
 *     ...
 *     if ((rc = policy_load(path, &e)) < 0)
 *         return err_wrap(&e, "loading policy %s", path);  // "loading policy /x: open ..."
 *
 * A `struct err` never allocates: the message lives in a fixed buffer and is
 * truncated (with "...") if it would overflow. The code is always a positive
 * errno value; the functions return its negation so they can end a `return`.
 */
#include <stddef.h>

#define ERR_MSG_MAX 1024

struct err {
    int code;              /* positive errno, 0 when no error is recorded */
    char msg[ERR_MSG_MAX]; /* NUL-terminated human message */
};

/* Clear E (code 0, empty message). E may be NULL. */
void err_clear(struct err *e);

/* Record CODE (a positive errno) with a formatted message. Returns -CODE.
 * E may be NULL, in which case only the return value carries the error. */
int err_set(struct err *e, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Like err_set with the current errno; appends ": strerror(errno)".
 * Returns -errno (or -EIO if errno was 0). errno is preserved. */
int err_errno(struct err *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Prepend "CONTEXT: " to E's message; keeps E's code. Returns -code
 * (-EIO if E holds no code). E may be NULL. */
int err_wrap(struct err *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* E's message, or strerror(-RC) when E is NULL or empty. Never NULL. */
const char *err_str(const struct err *e, int rc);

#endif
