#ifndef OPENSHELL_BUF_H
#define OPENSHELL_BUF_H
/*
 * buf: length-tracked, growable byte strings, and bounded copies into fixed
 * arrays. Strings are built only with these; never strcpy/sprintf.
 *
 * A `struct buf` is embedded by its owner: buf_init() then buf_fini(). Its
 * data is always NUL-terminated (buf_cstr() never returns NULL), so text can be
 * handed to C APIs directly; binary data may contain NULs, len is the truth.
 * Growth uses xrealloc and cannot fail. buf_steal() transfers the heap
 * string to the caller (who frees it) and leaves the buf empty.
 */
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>

struct buf {
    char *data; /* NULL until the first append */
    size_t len;
    size_t cap;
};

#define BUF_INIT                                                                                   \
    {                                                                                              \
        NULL, 0, 0                                                                                 \
    }

void buf_init(struct buf *b);
void buf_fini(struct buf *b);
/* Drop the contents, keep the allocation. */
void buf_reset(struct buf *b);
/* Make room for N more bytes. */
void buf_reserve(struct buf *b, size_t n);
void buf_append(struct buf *b, const void *p, size_t n);
void buf_puts(struct buf *b, const char *s);
void buf_putc(struct buf *b, char c);
void buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void buf_vprintf(struct buf *b, const char *fmt, va_list ap);
/* Append S as a JSON string literal, quotes included. Invalid UTF-8 bytes
 * and control characters are escaped as \u00XX; the output is always valid
 * JSON. */
void buf_put_json_str(struct buf *b, const char *s, size_t n);
/* Whether JSON text P[N] holds a \u0000 escape (in a key or a value): cJSON
 * would decode it and every C string after it would be cut short (a
 * different name or secret). */
bool buf_json_has_nul_escape(const char *p, size_t n);
/* Remove the first N bytes (N <= len). */
void buf_consume(struct buf *b, size_t n);
/* The contents as a C string ("" when empty). Borrowed; valid until the next
 * modification. */
const char *buf_cstr(const struct buf *b);
/* Hand the heap string to the caller (never NULL; "" when empty). */
char *buf_steal(struct buf *b);

/* Copy SRC into DST[SIZE]. Returns 0, or -ENAMETOOLONG when it does not fit
 * (DST then holds a truncated, terminated prefix). */
int buf_copy_fixed(char *dst, size_t size, const char *src);
/* snprintf into DST[SIZE] with truncation as an error (-ENAMETOOLONG). */
int buf_fmt_fixed(char *dst, size_t size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
