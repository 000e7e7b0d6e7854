#ifndef OPENSHELL_PX_H
#define OPENSHELL_PX_H
/*
 * px: the egress proxy engine (the openshell-proxy applet is its command
 * line). One px_server per process runs on the caller's loop:
 *
 *   listeners  px_server_listen (ADDR:PORT) or px_server_listen_fd (a socket
 *              already listening, e.g. created by the supervisor inside the
 *              agent's network namespace)
 *   requests   CONNECT host:port tunnels and absolute-form plain HTTP, with
 *              HTTP/1.1 keep-alive; every request decided on its own
 *   decision   the policy (policy.h) on host, port (and method/path on
 *              inspected endpoints), then DNS (evdns, never blocking) and the
 *              SSRF check; only the validated addresses are dialed
 *   TLS        on endpoints not marked `tls: skip`, a client speaking TLS in a
 *              tunnel is terminated with a leaf for the CONNECT host (ca.h),
 *              the upstream is verified (tls.h); a Host header or SNI naming
 *              another authority is refused (domain fronting)
 *   answers    denials are the reference's status codes and JSON bodies;
 *              one `decision` log record (log_kv) per decision
 *   credentials placeholders in allowed requests replaced right before the
 *              upstream write (px_cred.h, doc/providers.md)
 *   inference  CONNECT inference.local:443 served by the proxy itself
 *              (px_infer.c), before any policy
 *
 * Per-connection failures close that connection, never the process. Every
 * phase has a timeout and every buffer a bound (back-pressure between the
 * two sides of a relay).
 *
 * Ownership: the server holds a reference on its policy (px_server_set_policy
 * swaps it; connections keep the generation they were decided under), owns
 * its CA unless told otherwise, and frees every connection in
 * px_server_free().
 */
#include <stdbool.h>
#include <stdint.h>

#include "err.h"

struct loop;
struct policy;
struct ca;
struct px_ident;
struct px_server;
struct px_creds;

struct px_opts {
    const char *upstream_ca; /* trust bundle for upstream TLS (NULL: system) */
    const char *dns_server;  /* "IP[:PORT]" for evdns (NULL: /etc/resolv.conf) */
    /* Static name -> address mappings checked before DNS ("HOST:ADDR"
     * strings, like curl's --resolve without the port), borrowed. */
    const char *const *resolve;
    unsigned nresolve;
    bool identity_off; /* standalone: no caller identity (binary rules pass) */
    /* Caller identity (px_ident.h), borrowed; used unless identity_off (then
     * NULL is allowed). With identity on and IDENT NULL every request is
     * denied. IDENT_WAIT, if set, is called when the anchor pid is not known
     * yet (it may wait briefly for the supervisor to announce it). */
    struct px_ident *ident;
    void (*ident_wait)(void *arg);
    void *ident_wait_arg;
    unsigned header_timeout_s;   /* request head read (default 30) */
    unsigned connect_timeout_s;  /* DNS + TCP connect (default 10) */
    unsigned tls_timeout_s;      /* TLS handshakes (default 15) */
    unsigned response_timeout_s; /* upstream response head (default 60) */
    unsigned idle_timeout_s;     /* idle tunnels and kept-alive connections (default 300) */
    unsigned max_conns;          /* concurrent client connections (default 8192) */
    unsigned infer_idle_s;       /* inference.local: silence allowed in a stream (default 120) */
    const char *sandbox;         /* sandbox name for the decision log, or NULL */
};

/* A server on LOOP deciding with POLICY (a reference is taken) and minting
 * leaves from CA (borrowed; NULL: TLS termination unavailable, answered 503).
 * Returns NULL with E set (bad option, unreadable trust bundle, DNS setup). */
struct px_server *px_server_new(struct loop *loop, struct policy *policy, struct ca *ca,
                                const struct px_opts *o, struct err *e);
void px_server_free(struct px_server *s);

/* Listen on "ADDR:PORT" ("127.0.0.1:3128", "[::1]:3128"). Returns 0 or
 * -errno with E set. */
int px_server_listen(struct px_server *s, const char *addr, struct err *e);
/* Serve FD, a socket already bound and listening (ownership passes). */
int px_server_listen_fd(struct px_server *s, int fd, struct err *e);
/* The port of the first listener (tests asking for port 0). */
unsigned px_server_port(const struct px_server *s);

/* Install a new policy generation (a reference is taken). Connections
 * decided under an older one are closed, as in the reference. */
void px_server_set_policy(struct px_server *s, struct policy *p);

/* Install a credentials document (px_cred.h; a reference is taken, NULL
 * removes it). Requests already started keep the one they began with;
 * the next request on any connection uses the new one. */
void px_server_set_credentials(struct px_server *s, struct px_creds *c);

/* Live client connections. */
unsigned px_server_conns(const struct px_server *s);

#endif
