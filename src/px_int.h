#ifndef OPENSHELL_PX_INT_H
#define OPENSHELL_PX_INT_H
/*
 * px_int.h: what the proxy engine's files share (not a public header; the
 * API is include/px.h). px.c: server, listeners, connection lifetime,
 * timers, DNS and dialing, the bufferevent callbacks. px_http.c: requests,
 * decisions, answers and the HTTP/1.1 relay. px_relay.c: raw relays
 * (bufferevents or splice) and half-closes.
 */
#include "px.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <event2/util.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "buf.h"
#include "ca.h"
#include "http1.h"
#include "log.h"
#include "loop.h"
#include "policy.h"
#include "px_cred.h"
#include "px_ident.h"
#include "tls.h"
#include "xfuncs.h"

#define PX_HIGH (256 * 1024)         /* a relay's output bound: stop reading the other side */
#define PX_MAX_ADDRS 16              /* resolved addresses kept */
#define PX_IO_CHUNK (64 * 1024)      /* largest single read or write on a socket */
#define PX_SPLICE_PIPE (256 * 1024)  /* pipe size per spliced direction */
#define PX_SPLICE_AFTER (256 * 1024) /* raw bytes relayed before switching to splice */

enum px_state {
    PX_HEAD = 0,
    PX_RESOLVE,
    PX_CONNECTING,
    PX_SNIFF,
    PX_HANDSHAKE,
    PX_REQ,
    PX_RAW,
    PX_CLOSING,
    PX_IDENT, /* waiting for a binary's hash (px_ident worker) */
    PX_INFER, /* inference.local: requests inside the terminated tunnel (px_infer.c) */
};

struct px_map {
    char host[256];
    struct policy_addr addr;
};

struct px_listener {
    struct evconnlistener *lev;
    struct px_server *srv;
    struct event *backoff; /* re-enable after an accept failure */
    unsigned failures;
    unsigned port;
    struct px_listener *next;
};

struct px_conn;

/* One direction of a spliced relay: SRC -> pipe -> DST (fds borrowed from
 * the connection's bufferevents). */
struct px_splice_dir {
    struct px_conn *c;
    int src, dst;
    int pipe[2];
    size_t inpipe; /* bytes in the pipe not yet written to DST */
    bool eof, done;
    struct event *rd, *wr;
    uint64_t *count;
};

struct px_splice {
    struct px_splice_dir d[2]; /* [0] client -> upstream, [1] upstream -> client */
    bool counted;              /* in the server's nspliced */
};

struct px_server {
    struct loop *loop;
    struct event_base *base;
    struct evdns_base *dns;
    struct policy *policy;
    struct px_creds *creds; /* the credentials document in force, or NULL */
    struct ca *ca;
    struct tls_client_ctx *upstream;
    struct px_opts o;
    struct px_map *map;
    size_t nmap;
    struct px_listener *listeners;
    struct px_conn *conns;
    struct event *ident_ev; /* the identity worker's notifications */
    unsigned nconns;
    unsigned nspliced, max_spliced; /* pipes cost 4 descriptors a tunnel */
    uint64_t next_id;
};

struct px_conn {
    struct px_server *srv;
    struct px_conn *prev, *next;
    uint64_t id;
    enum px_state state;
    bool dead;
    int fd_peer_port;
    char peer[64];
    struct sockaddr_storage peer_sa, local_sa; /* the agent's end, ours */
    bool have_caller;
    struct px_ident_caller caller; /* identified at each L4 decision */

    struct bufferevent *cli;
    struct bufferevent *up;
    struct tls_conn *cli_tls, *up_tls;
    struct ca_leaf *leaf;
    struct event *wake; /* deferred work: free, DNS result, buffered input */
    struct event *timer;
    uint64_t last_active_ms;
    uint64_t closing_since_ms;
    uint64_t head_started_ms; /* first byte of a still incomplete request head */
    bool drain_both;          /* CLOSING flushes the upstream's output too */
    bool cli_eof, up_eof;     /* raw relay half-closes */
    bool cli_shut, up_shut;
    bool up_failed;     /* upstream TLS failed before the client's finished */
    char up_error[384]; /* and why */
    /* Raw relay between two plain sockets runs in the kernel (splice). */
    bool splice_candidate;    /* plain sockets both sides: splice when bulk */
    uint64_t raw_start_bytes; /* bytes relayed when the raw relay began */
    bool splice_pending;      /* waiting for the bufferevents' output to drain */
    struct px_splice *sp;

    /* The decision this connection (tunnel) or request (forward) runs under. */
    struct policy *pol;
    bool tunnel;     /* CONNECT; else forward proxy */
    bool l7;         /* inspected endpoint */
    bool tls_skip;   /* tls: skip */
    bool terminated; /* TLS terminated inside the tunnel */
    char policy_name[128];
    char acct_policy[128]; /* the last block that allowed something here: the close record */
    char host[256];
    unsigned port;

    /* DNS */
    struct evdns_getaddrinfo_request *dns_req;
    bool dns_done;
    int dns_result;
    struct policy_addr addrs[PX_MAX_ADDRS];
    size_t naddrs, next_addr;

    /* The HTTP exchange in flight. */
    bool have_req;
    struct http1_request *req; /* allocated while a request is handled */
    struct http1_body *req_body;
    bool req_body_done;
    struct buf pending; /* forward: the rewritten request waiting for the dial */
    bool have_resp;
    struct http1_response *resp;
    struct http1_body *resp_body;
    bool resp_started; /* bytes of a response went to the client */
    bool keep_alive;   /* after this exchange */
    char method[32];
    char path[512]; /* for logs: path without query */
    unsigned nreq;

    /* Credentials: the document this request is served under. */
    struct px_creds *creds;
    struct px_cred_scan scan; /* the request body is checked for placeholders */
    bool body_rewrite;        /* the endpoint opted into body rewriting */
    unsigned injected;        /* placeholders resolved into this request */
    bool hold;                /* collecting the body to rewrite it (hold_*) */
    struct buf hold_body;     /* decoded body */
    struct buf hold_target;   /* the target to build the head with */

    /* inference.local (px_infer.c), NULL on any other connection */
    struct px_infer *inf;

    uint64_t bytes_up, bytes_down;
    uint64_t start_ms;
};

/* px.c */
void px_cli_event(struct bufferevent *bev, short what, void *arg);
void px_cli_read(struct bufferevent *bev, void *arg);
void px_cli_write(struct bufferevent *bev, void *arg);
void px_conn_close(struct px_conn *c);
void px_conn_drain(struct px_conn *c);
void px_conn_kill(struct px_conn *c);
void px_exchange_reset(struct px_conn *c);
void px_log_decision(struct px_conn *c, const char *action, const char *stage, const char *method,
                     const char *path, const char *reason);
void px_log_path(char *out, size_t size, const char *target);
uint64_t px_now(struct px_conn *c);
/* The upstream trust store, loaded on first use (NULL with E set). */
struct tls_client_ctx *px_upstream_ctx(struct px_server *s, struct err *e);
void px_resolve(struct px_conn *c);
void px_timer(struct px_conn *c, unsigned secs);
void px_touch(struct px_conn *c);
void px_up_event(struct bufferevent *bev, short what, void *arg);
void px_up_read(struct bufferevent *bev, void *arg);
void px_up_write(struct bufferevent *bev, void *arg);
void px_wake(struct px_conn *c);

/* px_http.c */
void px_exchange_done(struct px_conn *c);
void px_handshake_step(struct px_conn *c);
void px_pump_request_body(struct px_conn *c);
void px_pump_response(struct px_conn *c);
long px_response_head(struct evbuffer *in, bool head, struct http1_response *r, const char **why);
void px_read_head(struct px_conn *c);
void px_dispatch_request(struct px_conn *c);
void px_reply(struct px_conn *c, int status, const char *reason_phrase, const char *type,
              const char *extra, const struct buf *body);
void px_reply_json(struct px_conn *c, int status, const char *phrase, const char *error,
                   const char *detail, const char *reason);
void px_request_init(struct px_conn *c, struct policy_request *pr, enum policy_transport t);
void px_sniff(struct px_conn *c);

/* px_infer.c */
void px_infer_start(struct px_conn *c); /* CONNECT inference.local:443 */
void px_infer_input(struct px_conn *c); /* client bytes (state PX_INFER) */
void px_infer_up_read(struct px_conn *c);
void px_infer_up_event(struct px_conn *c, short what);
void px_infer_timer(struct px_conn *c);
void px_infer_free(struct px_conn *c);

/* px_relay.c */
size_t px_cli_pending(struct px_conn *c);
void px_copy(struct px_conn *c, struct bufferevent *src, struct bufferevent *dst, uint64_t *count);
void px_raw_eof(struct px_conn *c, bool from_cli);
void px_raw_eof_step(struct px_conn *c);
void px_resume(struct bufferevent *bev, bool tls);
void px_splice_free(struct px_conn *c);
void px_splice_maybe_start(struct px_conn *c);
void px_start_raw(struct px_conn *c);
void px_tune(struct bufferevent *bev);

#endif
