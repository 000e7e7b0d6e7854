#ifndef OPENSHELL_PX_IDENT_H
#define OPENSHELL_PX_IDENT_H
/*
 * px_ident: which program made a connection to the proxy (caller identity).
 *
 * The proxy's listeners live in the agent's network namespace, so an
 * accepted connection's peer address is the agent socket's local address in
 * that namespace. From it:
 *
 *   1. the socket inode: an exact sock_diag query when a netlink socket of
 *      that namespace was given (px_ident_set_diag_fd), else
 *      /proc/ANCHOR/net/tcp, then tcp6 (a line in state
 *      ESTABLISHED (or FIN_WAIT) whose local address is the peer and whose
 *      remote address is the proxy's end; IPv4-mapped IPv6 normalised),
 *      read through ANCHOR, a pid known to be in that namespace (the
 *      agent's main process);
 *   2. every process holding socket:[INODE] among its /proc/PID/fd;
 *   3. for each: /proc/PID/exe (the kernel's path of the running image,
 *      never argv), and its ancestors by PPid up to and including ANCHOR
 *      (PID 1, the supervisor, is never an ancestor);
 *   4. every one of those binaries is pinned on first sight: SHA-256 of the
 *      live image (/proc/PID/exe, even if the file was replaced) plus a
 *      fingerprint (dev, inode, size, mtime, ctime). An unchanged
 *      fingerprint reuses the hash; a changed one re-hashes, and a hash
 *      different from the first one is denied for the rest of the sandbox's
 *      life ("binary integrity violation", reference attack case 20).
 *      Images up to PX_IDENT_INLINE_HASH bytes are hashed at once; larger
 *      ones (node: 95 MiB, a third of a second) on a worker thread, and the
 *      lookup answers -EINPROGRESS until px_ident_poll() has taken the
 *      result (the notify fd becomes readable): the loop never stalls.
 *
 * Owners that disagree on binary or ancestors deny ("ambiguous shared socket
 * ownership": a socket handed to another program). No owner, no anchor, or
 * anything unreadable denies too: identity fails closed.
 *
 * Cost (all synchronous, on the caller's thread): two reads of the netns's
 * TCP tables (about 150 bytes per socket in the namespace), one readlink per
 * open descriptor of every process visible in PROC (bounded by
 * PX_IDENT_MAX_PIDS processes and PX_IDENT_MAX_FDS descriptors a lookup),
 * one readlink + read of `status` per ancestor, one fstat per binary, and a
 * SHA-256 of a binary's whole image the first time it is seen (or after it
 * changed on disk). In a sandbox's pid namespace only the agent's processes
 * are visible, so a lookup takes tens of microseconds once the binaries are
 * pinned; the first use of a binary costs its hash (about 3.5 ms per MiB
 * with mbedTLS here; on the loop only for images up to 2 MiB).
 *
 * Lifetime: one `struct px_ident` per sandbox (px_ident_new/_free) holds the
 * pins. A `struct px_ident_caller` is filled by px_ident_lookup() and owns its
 * strings until px_ident_caller_fini().
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "err.h"

#define PX_IDENT_MAX_ANCESTORS 64              /* the policy looks at no more */
#define PX_IDENT_MAX_OWNERS 16                 /* processes holding one socket, at most */
#define PX_IDENT_MAX_CMDLINE 16                /* argv paths kept for logs */
#define PX_IDENT_MAX_PIDS 8192                 /* /proc entries looked at per lookup */
#define PX_IDENT_MAX_FDS 262144                /* descriptors looked at per lookup */
#define PX_IDENT_INLINE_HASH (2 * 1024 * 1024) /* larger images are hashed on the worker */

struct px_ident;

/* The calling program. */
struct px_ident_caller {
    pid_t pid;    /* the lowest owner pid */
    char *binary; /* kernel path of its executable */
    char *ancestors[PX_IDENT_MAX_ANCESTORS];
    size_t nancestors; /* nearest parent first, ending with the anchor */
    /* Absolute paths in the argv of the caller and its ancestors (a script's
     * path, `exec -a` names): for logs and deny reasons only, never for a
     * decision. At most PX_IDENT_MAX_CMDLINE. */
    char *cmdline[PX_IDENT_MAX_CMDLINE];
    size_t ncmdline;
};

/* A new identity source reading PROC ("/proc"; tests give a fake tree). The
 * anchor is unknown (every lookup denies) until px_ident_set_anchor(). Never
 * NULL. */
struct px_ident *px_ident_new(const char *proc);
void px_ident_free(struct px_ident *id);

void px_ident_set_anchor(struct px_ident *id, pid_t anchor);

/* Step 1 through sock_diag instead of /proc/net/tcp: the kernel's
 * /proc/net/tcp walks every TCP socket of the machine (all namespaces share
 * the hash), which costs milliseconds on a busy host, where an exact
 * sock_diag query is one hash lookup. The netlink socket must have been
 * created in the listeners' network namespace (the supervisor makes it on
 * the netns thread). px_ident_diag_open() makes one here (fd or -errno);
 * px_ident_set_diag_fd() hands one over (ownership passes). When a query
 * fails, the lookup reads /proc as before. */
int px_ident_diag_open(void);
void px_ident_set_diag_fd(struct px_ident *id, int fd);
pid_t px_ident_anchor(const struct px_ident *id);

/* Control channel: FD carries lines "agent PID\n" (the supervisor writes
 * the agent's pid once it has forked it) and JSON objects (see below).
 * px_ident_read_control() reads what is there; with TIMEOUT_MS > 0 and no
 * anchor yet it keeps reading until the anchor arrives or TIMEOUT_MS pass
 * (other messages may come first). Returns 1 when the anchor is known, 0
 * when not yet, -EPIPE at end of file (the supervisor is gone), -errno on a
 * read error. The fd stays the caller's. */
int px_ident_read_control(struct px_ident *id, int fd, int timeout_ms);
/* Lines that are JSON objects ('{' first, e.g. {"type":"credentials",...})
 * go to FN with the line (NUL-terminated, without its newline), in order,
 * from px_ident_read_control(). Lines are bounded at 2 MiB (longer ones are
 * dropped with a warning). */
void px_ident_set_control_handler(struct px_ident *id,
                                  void (*fn)(void *arg, const char *line, size_t n), void *arg);

/* Identify the process behind the connection whose peer (the agent's end)
 * is PEER and whose proxy end is LOCAL. Returns 0 with OUT filled (release
 * with px_ident_caller_fini), -EINPROGRESS when a binary is being hashed
 * (ask again once px_ident_poll() returned true), or -EACCES with E holding
 * the deny reason
 * ("entrypoint process not yet spawned", "no process holds the
 * connection", "ambiguous shared socket ownership: ...", "binary integrity
 * violation: ..."). */
int px_ident_lookup(struct px_ident *id, const struct sockaddr *peer, const struct sockaddr *local,
                    struct px_ident_caller *out, struct err *e);
void px_ident_caller_fini(struct px_ident_caller *c);

/* Readable when a hash finished: then call px_ident_poll(), which takes
 * the results (true when there were some). Loop thread only. */
int px_ident_notify_fd(const struct px_ident *id);
bool px_ident_poll(struct px_ident *id);

/* Binaries pinned so far. */
size_t px_ident_pinned(const struct px_ident *id);

/* ------------------------------------------------------------------ parsing (tests) */

/* One socket line of /proc/net/tcp or tcp6; addresses as 16 bytes (IPv4
 * mapped to ::ffff:a.b.c.d), ports in host order. */
struct px_ident_tcp {
    uint8_t laddr[16], raddr[16];
    unsigned lport, rport;
    unsigned state; /* 1 ESTABLISHED, ... (include/net/tcp_states.h) */
    unsigned long inode;
};

/* Parse one table line (not the header). Returns 0 or -EINVAL. */
int px_ident_parse_tcp_line(const char *line, struct px_ident_tcp *out);

/* The inode of the socket whose local end is PEER and remote end LOCAL in
 * the table TEXT (tcp or tcp6 contents), 0 if none. */
unsigned long px_ident_find_inode(const char *text, const struct sockaddr *peer,
                                  const struct sockaddr *local);

/* The inode of the socket PEER -> LOCAL by an exact sock_diag query on FD:
 * the inode, 0 when there is no such established socket, or -errno. */
long px_ident_diag_inode(int fd, const struct sockaddr *peer, const struct sockaddr *local);

/* PPid from /proc/PID/status contents. Returns 0 or -EINVAL. */
int px_ident_parse_ppid(const char *status, pid_t *ppid);

#endif
