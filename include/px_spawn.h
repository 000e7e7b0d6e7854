#ifndef OPENSHELL_PX_SPAWN_H
#define OPENSHELL_PX_SPAWN_H
/*
 * px_spawn: running the egress proxy for a sandbox (the supervisor's side
 * of the hand-off described in doc/proxy.md).
 *
 *   px_spawn_listen()   inside the agent's network namespace (the
 *                       sb_netns_proxy_hook thread): listening sockets on
 *                       127.0.0.1:3128 and [::1]:3128. They belong to that
 *                       namespace for life, wherever their fds go.
 *   px_spawn_start()    in the outer namespace (PID 1): fork + execve of
 *                       /proc/self/exe as openshell-proxy with those sockets
 *                       (--listen-fd), a pipe for its CA certificate
 *                       (--ca-pem-fd), the control pipe (--control-fd) and
 *                       the policy file reached through a directory fd
 *                       (/proc/self/fd/N/NAME, so edits to the user's file
 *                       are seen through inotify from inside the sandbox's
 *                       mount namespace). Waits for the CA certificate.
 *   px_spawn_bundle()   writes the system trust bundle plus that CA where
 *                       the agent reads it (PX_SPAWN_BUNDLE).
 *   px_spawn_announce() tells the proxy the agent's pid (caller identity).
 *
 * The CA key never leaves the proxy process. The proxy stops when the
 * control pipe closes, and in any case with the sandbox's pid namespace.
 */
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "buf.h"
#include "err.h"

#define PX_SPAWN_PORT 3128
#define PX_SPAWN_URL "http://127.0.0.1:3128"
#define PX_SPAWN_DIR "/tmp/.openshell-tls"
#define PX_SPAWN_BUNDLE PX_SPAWN_DIR "/ca-bundle.pem"
#define PX_SPAWN_CA PX_SPAWN_DIR "/openshell-ca.pem"

/* Create the listeners in the current network namespace into FDS (room for
 * MAX). [::1] is skipped when the namespace has no IPv6. Returns how many
 * (>= 1) or -errno with E set. */
int px_spawn_listen(int *fds, int max, struct err *e);

struct px_spawn_opts {
    const int *listen_fds; /* borrowed; passed to the proxy */
    int nlisten;
    int policy_dir_fd;        /* O_PATH directory of the policy file */
    int diag_fd;              /* sock_diag socket of the agent's netns, or -1 */
    const char *sandbox;      /* the sandbox's name (decision log), or NULL */
    const char *policy_base;  /* its name in that directory */
    const char *const *extra; /* more proxy arguments (tests: --resolve ...), or NULL */
    size_t nextra;
    char *const *envp;      /* the proxy's environment */
    unsigned ca_timeout_ms; /* how long to wait for the CA certificate (0: 5000) */
};

struct px_spawn {
    pid_t pid;      /* the proxy, or 0 */
    int control_fd; /* write end of the control pipe, -1 if none */
};

/* Start the proxy (see above). On success PS is filled and the CA
 * certificate (PEM) is in CA_PEM. Returns 0 or -errno with E set (the proxy
 * is then stopped). */
int px_spawn_start(struct px_spawn *ps, const struct px_spawn_opts *o, struct buf *ca_pem,
                   struct err *e);
/* Write PX_SPAWN_BUNDLE (system bundle + CA_PEM) and PX_SPAWN_CA (CA_PEM
 * alone) read-only for everyone, the directory owned by the caller.
 * Returns 0 or -errno with E set. */
int px_spawn_bundle(const struct buf *ca_pem, struct err *e);
/* Tell the proxy the agent's main pid. Returns 0 or -errno. */
int px_spawn_announce(struct px_spawn *ps, pid_t agent);
/* Pass the sandbox's credentials document (JSON_DOC, one JSON value, the
 * body of GET /v1/supervisor/credentials) to the proxy as one control line
 * {"type":"credentials","doc":JSON_DOC}\n. Returns 0, -EBADF without a
 * control pipe, -EINVAL (E set) when JSON_DOC holds a newline or is over
 * 1 MiB, or -errno of the write. */
int px_spawn_send_credentials(struct px_spawn *ps, const char *json_doc, struct err *e);
/* Close the control pipe (the proxy exits). */
void px_spawn_fini(struct px_spawn *ps);

/* The agent's proxy and trust variables ("NAME=VALUE", static strings,
 * NULL-terminated). */
extern const char *const px_spawn_env[];

#endif
