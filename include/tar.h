#ifndef OPENSHELL_TAR_H
#define OPENSHELL_TAR_H
/*
 * tar: blocking, fd-based ustar/pax archives for uploads into and downloads
 * out of a sandbox (and for the CLI on the host).
 *
 * The extractor runs inside the sandbox as the agent's user, after Landlock
 * and seccomp, so it uses only plain *at calls (openat, mkdirat, symlinkat,
 * renameat, fchmod, futimens, read, write) and never trusts the archive:
 *
 *   - names: no absolute paths, no ".." component, no NUL, valid UTF-8, no
 *     control characters, at most TAR_NAME_MAX bytes ("." and empty
 *     components are dropped);
 *   - paths are resolved component by component from DEST_DIRFD with
 *     O_NOFOLLOW|O_DIRECTORY: a symlink (old or from this archive) is never
 *     followed, so "a -> /etc" then "a/passwd" is refused;
 *   - hard links, devices, fifos, sparse and unknown entry types are refused;
 *   - every header checksum is verified; sizes (octal, GNU base-256 or pax)
 *     are bounded by max_total; a truncated archive is an error;
 *   - an existing file or symlink is replaced atomically (written under a
 *     temporary name in the same directory, then renamed over it; a rename
 *     replaces a symlink, it never writes through one);
 *   - set-user-ID and set-group-ID bits are dropped; ownership is never set.
 * The first refusal stops the extraction; entries already written stay.
 *
 * The writer emits POSIX ustar blocks, with a pax extended header ('x') for a
 * name or link target longer than 100 bytes, or a size or mtime past the
 * octal fields. Regular files, directories (recursively, sorted by name) and
 * symlinks (as links, never followed) are archived; sockets, fifos and
 * devices are skipped and counted. GNU tar and Python's tarfile read it.
 *
 * All functions return 0 or a negative errno and fill the optional E with
 * one line naming the entry ("tar: entry 'a/../b': '..' component refused").
 * Codes: -EPERM (refused by policy: absolute, '..', symlink in path, link or
 * device type), -EBADMSG (bad checksum, bad field, truncated archive),
 * -EFBIG (max_total exceeded), -E2BIG (max_entries exceeded), or the errno
 * of a failed system call.
 */
#include <stdbool.h>
#include <stdint.h>

#include "err.h"

/* Longest entry name accepted or written (bytes, without the NUL). */
#define TAR_NAME_MAX 4096

struct tar_stats {
    uint64_t files;    /* regular files */
    uint64_t dirs;     /* directories */
    uint64_t symlinks; /* symbolic links */
    uint64_t bytes;    /* file contents (not headers) */
    uint64_t skipped;  /* tar_create: sockets, fifos, devices left out */
};

struct tar_opts {
    uint64_t max_total;   /* file content bytes, 0: unlimited */
    uint32_t max_entries; /* entries (pax/GNU long-name headers not counted), 0: unlimited */
    bool keep_mode;       /* extract: set modes exactly as archived (& 01777); otherwise the
                             archived mode & 0777 is filtered by the umask */
    struct tar_stats *create_stats; /* tar_create: counts filled here when non-NULL */
};

/*
 * Write a tar of PATH (relative to DIRFD, or absolute; AT_FDCWD allowed) to
 * OUT_FD: a file, a symlink or a directory (recursive), under the top name
 * ARCNAME (NULL: the basename of PATH; "." when PATH has none, e.g. "/").
 * O may be NULL. max_total/max_entries bound what is written (-EFBIG/-E2BIG).
 * A file that shrinks while read is padded with zeros so the archive stays
 * well formed, and the call then fails with -EIO. Ends with two zero blocks.
 */
int tar_create(int out_fd, int dirfd, const char *path, const char *arcname,
               const struct tar_opts *o, struct err *e);

/*
 * Read a tar stream from IN_FD and extract it under DEST_DIRFD (see the rules
 * above). O may be NULL (no limits, no keep_mode); ST (may be NULL) receives
 * the counts of what was written, also on failure. Reading stops at the
 * end-of-archive block; up to 1 MiB of trailing padding is drained so the
 * writer does not see a broken pipe.
 */
int tar_extract(int in_fd, int dest_dirfd, const struct tar_opts *o, struct tar_stats *st,
                struct err *e);

#endif
