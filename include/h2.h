#ifndef OPENSHELL_H2_H
#define OPENSHELL_H2_H
/*
 * h2: HTTP/2 (nghttp2) over libevent bufferevents, for the gateway (server),
 * the CLI and the supervisor (clients).
 *
 * Transport seam: a connection is built on any connected bufferevent: a
 * socket (h2c on a unix socket) or the filter bufferevent of tls.h
 * (ALPN "h2", TLS 1.3). The connection takes ownership of it.
 *
 * Ownership (nghttp2's libevent example): one `struct h2_conn` per
 * connection owns its bufferevent, its nghttp2 session and its streams. A
 * `struct h2_stream` hangs off nghttp2's stream user data and is freed right
 * after its on_close callback: the application must drop every pointer to a
 * stream in on_close, and never touch it afterwards. Freeing a connection
 * (error, EOF, h2_conn_free, end of a graceful shutdown) first calls on_close
 * for each stream still open.
 *
 * Nothing is sent from inside nghttp2 callbacks: h2_stream_* calls queue
 * frames and data, and the connection flushes them from a deferred event in
 * the next loop iteration (or right after the current input is processed).
 * That makes every h2_stream_* function safe to call from any callback,
 * including another connection's.
 *
 * Flow control and back-pressure: outbound, each stream buffers at most
 * limits.stream_out_high bytes before h2_stream_write() answers -EAGAIN (the
 * data is still queued); on_drain fires once the buffer falls below half of
 * it. The connection stops handing frames to the bufferevent while its
 * output holds H2_CONN_OUT_HIGH bytes. Inbound, request bodies of ordinary
 * routes are buffered up to limits.max_body (more -> 413; the rest of the
 * body is read and dropped, up to 16 MiB, then the stream is reset);
 * streaming routes get each chunk in on_data and the window is reopened
 * when the callback returns, unless the stream is paused with
 * h2_stream_pause_input() (then nothing is granted until resumed).
 *
 * Errors: negative errno; -EPIPE for a stream or connection that is gone.
 */
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "buf.h"
#include "err.h"

struct bufferevent;
struct event_base;
struct h2_conn;
struct h2_router;
struct h2_server;
struct h2_stream;

#define H2_CONN_OUT_HIGH (64 * 1024)
#define H2_MAX_PARAMS 4
#define H2_MAX_HEADERS 64

struct h2_limits {
    size_t max_body;        /* buffered request body; 0: 1 MiB */
    uint32_t max_streams;   /* SETTINGS_MAX_CONCURRENT_STREAMS; 0: 100 */
    size_t stream_out_high; /* per-stream output buffer; 0: 256 KiB */
    uint32_t stream_window; /* initial receive window; 0: 256 KiB */
    /* Close a connection that has no open stream for this long (GOAWAY,
     * then a hard close one second later if it does not go): idle clients
     * and stalled handshakes do not hold descriptors forever. 0: never. */
    uint32_t idle_timeout_ms;
};

enum h2_peer_kind {
    H2_PEER_NONE = 0,
    H2_PEER_UNIX, /* uid/gid/pid from SO_PEERCRED */
    H2_PEER_TLS,  /* subject from a verified client certificate */
};

struct h2_peer {
    enum h2_peer_kind kind;
    uid_t uid;
    gid_t gid;
    pid_t pid;
    char subject[256];
};

struct h2_header {
    const char *name; /* lower case */
    const char *value;
};

/* A request as the server's handler sees it (borrowed, valid until the
 * stream closes). */
struct h2_req {
    const char *method;
    const char *path;                  /* without the query, as sent (percent-encoded) */
    const char *query;                 /* after '?', or NULL */
    const char *params[H2_MAX_PARAMS]; /* decoded {} segments of the route */
    size_t nparams;
    struct buf body; /* whole body for ordinary routes; empty for streaming */
};

/* Per-stream callbacks; any may be NULL. ARG is h2_stream_set_cbs()'s. */
struct h2_stream_cbs {
    /* Client: the response's headers arrived (STATUS is :status). */
    void (*on_response)(struct h2_stream *st, int status, void *arg);
    /* A chunk of the peer's body (streaming routes; client responses). */
    void (*on_data)(struct h2_stream *st, const uint8_t *p, size_t n, void *arg);
    /* The peer ended its side (END_STREAM). */
    void (*on_end)(struct h2_stream *st, void *arg);
    /* The output buffer fell below half its limit after -EAGAIN. */
    void (*on_drain)(struct h2_stream *st, void *arg);
    /* The stream is gone (ERROR_CODE is the HTTP/2 code, 0 for a clean
     * close). Drop the pointer: it is freed right after this returns. */
    void (*on_close)(struct h2_stream *st, uint32_t error_code, void *arg);
};

/* A route handler: ordinary routes are called once the request is complete
 * (REQ->body holds it); H2_ROUTE_STREAMING routes at the end of the request
 * headers (the body then comes through on_data / on_end). The handler
 * responds now or later; until it does the stream stays open. */
typedef void (*h2_handler_fn)(struct h2_stream *st, struct h2_req *req, void *arg);
typedef void (*h2_conn_close_fn)(struct h2_conn *c, void *arg);

#define H2_ROUTE_STREAMING 0x1
/* Skip the server's authorization hook (health probes). */
#define H2_ROUTE_PUBLIC 0x2

/* Authorization hook: called when a request's headers are complete, before
 * any body is buffered, for every route not marked H2_ROUTE_PUBLIC. Returns
 * true to let it through; false after responding (e.g. 401) itself. */
typedef bool (*h2_auth_fn)(struct h2_stream *st, void *arg);

/* ------------------------------------------------------------------ router */

struct h2_router *h2_router_new(void);
void h2_router_free(struct h2_router *r);
/* Route METHOD PATTERN to FN. PATTERN is "/v1/sandboxes/{}/watch": literal
 * segments and "{}" (one non-empty segment, percent-decoded into
 * req->params). The first match wins. A path matching no route gets 404, a
 * path matched with another method 405 (with Allow). Strings are borrowed. */
void h2_router_add(struct h2_router *r, const char *method, const char *pattern, unsigned flags,
                   h2_handler_fn fn, void *arg);

/* ------------------------------------------------------------------ server */

/* ROUTER and LIMITS are borrowed (must outlive the server); LIMITS may be NULL. */
struct h2_server *h2_server_new(struct event_base *base, const struct h2_router *router,
                                const struct h2_limits *limits);
/* Hard close of every connection, then free. NULL is fine. */
void h2_server_free(struct h2_server *s);
/* Serve HTTP/2 on BEV (owned from now on, even on failure) for PEER
 * (copied; may be NULL). Returns the connection (borrowed) or NULL with E. */
struct h2_conn *h2_server_adopt(struct h2_server *s, struct bufferevent *bev,
                                const struct h2_peer *peer, struct err *e);
/* Graceful shutdown: GOAWAY on every connection; each closes once its open
 * streams finish. New connections are refused. */
void h2_server_shutdown(struct h2_server *s);
size_t h2_server_conn_count(const struct h2_server *s);
/* Counters since the server started (for /metrics). */
struct h2_server_stats {
    unsigned long long conns_total;     /* connections adopted */
    unsigned long long streams_total;   /* requests received */
    unsigned long long responses[6];    /* by status class: [1] 1xx ... [5] 5xx */
    unsigned long long bytes_in;        /* request body bytes */
    unsigned long long idle_closed;     /* connections closed for idleness */
    unsigned long long protocol_errors; /* connections dropped on a framing error */
};
void h2_server_get_stats(const struct h2_server *s, struct h2_server_stats *out);

/* Install the authorization hook (NULL: none). */
void h2_server_set_auth(struct h2_server *s, h2_auth_fn fn, void *arg);

/* Called whenever a connection of S is freed (e.g. to finish a shutdown). */
void h2_server_set_conn_close_cb(struct h2_server *s, h2_conn_close_fn fn, void *arg);

/* ------------------------------------------------------------------ client */

/* A client connection over BEV (owned from now on, even on failure); TLS
 * selects the :scheme sent ("https" or "http"). The connection frees itself
 * on EOF or a protocol error (streams get on_close first; set a close
 * callback to learn of it). */
struct h2_conn *h2_client_new(struct event_base *base, struct bufferevent *bev, bool tls,
                              const struct h2_limits *limits, struct err *e);
/* Connect to the unix socket PATH (h2c). 0 and *OUT, or -errno with E. */
int h2_client_connect_unix(struct event_base *base, const char *path,
                           const struct h2_limits *limits, struct h2_conn **out, struct err *e);
/*
 * Send a request. BODY (LEN bytes, may be NULL) is copied. With OPEN_BODY
 * the request body stays open after BODY: continue with h2_stream_write()
 * and finish with h2_stream_end() (bidirectional streams). Returns the
 * stream (borrowed, see on_close) or NULL with E.
 */
struct h2_stream *h2_client_request(struct h2_conn *c, const char *method, const char *path,
                                    const struct h2_header *hdrs, size_t nhdrs, const void *body,
                                    size_t len, bool open_body, const struct h2_stream_cbs *cbs,
                                    void *arg, struct err *e);
/*
 * One blocking request/response on C, running C's event base until the
 * response ends (CLI convenience; never from inside a loop callback).
 * *STATUS gets the status and RESP the body (at most MAX bytes, -EFBIG past
 * it). 0 or -errno with E ("connection closed", "stream reset: ...").
 */
int h2_client_call(struct h2_conn *c, const char *method, const char *path,
                   const struct h2_header *hdrs, size_t nhdrs, const void *body, size_t len,
                   int *status, struct buf *resp, size_t max, struct err *e);

/* ------------------------------------------------------------------ connections */

void h2_conn_free(struct h2_conn *c);
/* Send GOAWAY (server: after the last processed stream) and close once no
 * stream is left. */
void h2_conn_shutdown(struct h2_conn *c);
const struct h2_peer *h2_conn_peer(const struct h2_conn *c);
/* A server connection over TLS (tls.h): once its handshake finished, a
 * client certificate that verified makes the peer H2_PEER_TLS with the
 * certificate's subject DN ("CN=..., OU=..."). T is borrowed (it lives as
 * long as the connection's bufferevent). */
struct tls_conn;
void h2_conn_set_tls(struct h2_conn *c, struct tls_conn *t);
void h2_conn_set_close_cb(struct h2_conn *c, h2_conn_close_fn fn, void *arg);
size_t h2_conn_stream_count(const struct h2_conn *c);

/* ------------------------------------------------------------------ streams */

void h2_stream_set_cbs(struct h2_stream *st, const struct h2_stream_cbs *cbs, void *arg);
struct h2_conn *h2_stream_conn(const struct h2_stream *st);
const struct h2_peer *h2_stream_peer(const struct h2_stream *st);
int32_t h2_stream_id(const struct h2_stream *st);
/* Server: the request's path without its query (NULL before routing).
 * Borrowed. */
const char *h2_stream_path(const struct h2_stream *st);
/* A request header (server) or response header (client), or NULL. NAME is
 * lower case. Borrowed. */
const char *h2_stream_header(const struct h2_stream *st, const char *name);

/* A whole response: headers (":status", then HDRS, plus content-type when
 * CTYPE is set and content-length) and BODY, ending the stream. 0 or
 * -EALREADY when a response was already started, -EPIPE when gone. */
int h2_stream_respond(struct h2_stream *st, int status, const char *ctype,
                      const struct h2_header *hdrs, size_t nhdrs, const void *body, size_t len);
/* {"error":{"code":CODE,"message":...}} with STATUS. */
int h2_stream_error(struct h2_stream *st, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Start a streamed response (server): headers now, body by h2_stream_write. */
int h2_stream_start(struct h2_stream *st, int status, const char *ctype,
                    const struct h2_header *hdrs, size_t nhdrs);
/* Queue body bytes (response on a server, request body on an open client
 * stream). 0, -EAGAIN (queued; over the high-water mark: wait for on_drain),
 * -EPIPE (stream gone or output ended). */
int h2_stream_write(struct h2_stream *st, const void *p, size_t n);
/* Bytes queued on ST and not yet handed to nghttp2. */
size_t h2_stream_out_pending(const struct h2_stream *st);
/* End our side (END_STREAM after the queued data). */
int h2_stream_end(struct h2_stream *st);
/* RST_STREAM with CODE (e.g. 0x8 CANCEL). on_close follows. */
void h2_stream_reset(struct h2_stream *st, uint32_t code);
/* Stop (true) or resume (false) granting receive window for ST's input. */
void h2_stream_pause_input(struct h2_stream *st, bool pause);

/* ------------------------------------------------------------------ helpers */

/* The decoded value of query parameter KEY of REQ into OUT: 1 found, 0 absent,
 * -EINVAL bad percent-encoding. */
int h2_req_query(const struct h2_req *req, const char *key, struct buf *out);
/* Percent-decode S[N] into OUT; -EINVAL on a bad escape or a NUL byte. */
int h2_pct_decode(const char *s, size_t n, struct buf *out);
/* The peer credentials of a connected unix socket. 0 or -errno. */
int h2_peer_from_unix_fd(int fd, struct h2_peer *out);
/* A listening unix socket at PATH (a stale socket file is replaced; any
 * other file there is an error), mode MODE. Returns the fd or -errno. */
int h2_listen_unix(const char *path, unsigned mode, struct err *e);

/*
 * Bidirectional byte streams (exec, connect, file transfer) carry frames on
 * one HTTP/2 stream: u8 type, u32 payload length (big endian), payload.
 * doc/api.md is the specification.
 */
enum h2_frame_type {
    H2_FRAME_INIT = 0x01,   /* JSON: what to start */
    H2_FRAME_STDIN = 0x02,  /* bytes for the process's stdin */
    H2_FRAME_STDOUT = 0x03, /* bytes from stdout */
    H2_FRAME_STDERR = 0x04, /* bytes from stderr */
    H2_FRAME_RESIZE = 0x05, /* JSON {"cols":N,"rows":N} */
    H2_FRAME_EXIT = 0x06,   /* JSON {"exit_code":N} (last frame from the server) */
    H2_FRAME_EOF = 0x07,    /* payload: one byte, the type whose stream ended */
    H2_FRAME_ERROR = 0x08,  /* JSON {"error":{"code","message"}} */
};
#define H2_FRAME_HDR 5
#define H2_FRAME_MAX (1024 * 1024)

struct h2_frame {
    uint8_t type;
    uint32_t len;
    const uint8_t *payload; /* borrowed from the parsed input */
};

/* Append one frame to OUT. -EMSGSIZE past H2_FRAME_MAX, -EINVAL for an
 * unknown type. */
int h2_frame_put(struct buf *out, uint8_t type, const void *p, size_t n);
/* Parse one frame from P[N]: 1 (F filled, *USED bytes taken), 0 (need more
 * bytes), -EBADMSG (unknown type or payload over H2_FRAME_MAX; E says). */
int h2_frame_parse(const uint8_t *p, size_t n, struct h2_frame *f, size_t *used, struct err *e);

#endif
