#ifndef OPENSHELL_SB_USER_H
#define OPENSHELL_SB_USER_H
/*
 * sb_user: resolve the agent's identity from the sandbox root's own
 * /etc/passwd and /etc/group files, never through NSS (the host's name
 * service must not decide who runs inside an image).
 *
 * Names and decimal numbers are accepted; uid/gid 0 and 4294967295 are
 * refused everywhere (the agent never runs as root). The files are read with
 * a size bound (1 MiB) and parsed line by line; malformed lines are skipped.
 * Nothing here allocates beyond the call: results are plain integers.
 */
#include <stdbool.h>
#include <sys/types.h>

#include "err.h"

/* Look NAME_OR_ID up in ROOT/etc/passwd. A decimal string is taken as a uid
 * (it need not exist in the file). On success *UID is set and, when GID is not
 * NULL and the user has a passwd line, *GID to its primary group (else left
 * unchanged); *FOUND tells whether a passwd line matched (may be NULL).
 * Returns 0, -ENOENT (no such user), -EPERM (root or the invalid id) or
 * -EINVAL (malformed number), with E saying which. */
int sb_user_lookup(const char *root, const char *name_or_id, uid_t *uid, gid_t *gid, bool *found,
                   struct err *e);

/* Look NAME_OR_ID up in ROOT/etc/group. Same conventions as sb_user_lookup. */
int sb_group_lookup(const char *root, const char *name_or_id, gid_t *gid, struct err *e);

/* The name of UID in ROOT/etc/passwd copied into NAME[SIZE], and its home
 * directory into HOME[HSIZE] (HOME may be NULL). Returns 0 or -ENOENT. */
int sb_user_name(const char *root, uid_t uid, char *name, size_t size, char *home, size_t hsize);

/* Parse a decimal id in [1, 4294967294]. Returns 0, -EINVAL (not a number)
 * or -EPERM (0 or 4294967295). */
int sb_parse_id(const char *s, unsigned *out);

#endif
