#ifndef OPENSHELL_SEAL_H
#define OPENSHELL_SEAL_H
/*
 * seal: secrets at rest, AES-256-GCM under one 32-byte key file.
 *
 * The gateway seals provider credentials with a key kept in
 * STATE_DIR/provider.key: 32 random bytes, mode 0600, owned by the gateway's
 * uid, made on first use. A key file of another size, readable or writable
 * by group or others, owned by someone else or not a regular file is
 * refused (-EPROTO, E says which and why): it is never "repaired" or
 * replaced, since that would make every sealed record unreadable.
 *
 * A sealed text is "v1." + base64(nonce[12] || ciphertext || tag[16]); every
 * seal draws a fresh random nonce. The caller's AAD (the record id) binds the
 * text to its record: a text copied into another record does not open.
 *
 * struct seal holds the key in memory (wiped by seal_free). Not thread-safe
 * for concurrent use of one object; separate objects are independent.
 */
#include <stddef.h>

#include "buf.h"
#include "err.h"

#define SEAL_KEY_LEN 32
#define SEAL_KEY_NAME "provider.key"

struct seal;

/* Load PATH, creating it (O_EXCL, 0600, fsynced) when absent. 0 and *OUT,
 * or -EPROTO (bad size, mode, owner or type), or -errno from the file
 * system, with E naming PATH and the reason. */
int seal_open(const char *path, struct seal **out, struct err *e);
/* Wipe and free; NULL is fine. */
void seal_free(struct seal *s);

/* Seal PT[N] bound to AAD into OUT (appended, NUL-terminated text).
 * 0 or -EIO (entropy or cipher failure). */
int seal_encrypt(struct seal *s, const char *aad, const void *pt, size_t n, struct buf *out,
                 struct err *e);
/* Open TEXT sealed with AAD into OUT (appended; the caller wipes it).
 * -EBADMSG when it is not a v1 text, was altered, or was sealed with
 * another key or AAD. */
int seal_decrypt(struct seal *s, const char *aad, const char *text, struct buf *out, struct err *e);

#endif
