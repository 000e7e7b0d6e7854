#ifndef OPENSHELL_HTTP1_H
#define OPENSHELL_HTTP1_H
/*
 * http1: strict HTTP/1.1 framing for the proxy, without I/O.
 *
 * The proxy collects a message head itself (http1_head_scan finds its end,
 * refusing bare LF at once and oversized heads with 431), parses it with
 * http1_parse_request / http1_parse_response (our strict validator first,
 * then http_parser in strict mode over the same bytes as a second opinion),
 * and relays the body through http1_body, which uses http_parser to find the
 * exact end of the message, so a pipelined next request is never consumed
 * before it is itself checked.
 *
 * Rejected before anything goes upstream (-EBADMSG, a 400 for the caller,
 * with a static reason): a malformed request line or version other than
 * 1.0/1.1; control bytes, spaces or non-ASCII in the target; obs-fold; a bare
 * LF; header names that are not tokens or whitespace before ':'; control
 * bytes in values; Content-Length together with Transfer-Encoding; more than
 * one Content-Length (even equal ones) or a non-numeric one; any
 * Transfer-Encoding other than one "chunked" (and any in HTTP/1.0); a
 * Connection header nominating host, content-length or transfer-encoding;
 * HTTP/1.1 without Host or with several Host headers; an absolute-form
 * authority different from Host. HTTP/2 (h2c upgrade, HTTP2-Settings, the
 * connection preface) is flagged for the caller to refuse on `rest`
 * endpoints.
 *
 * A parsed message owns a private copy of its head: http1_request_fini /
 * http1_response_fini release it. Every string is borrowed from it.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"

#define HTTP1_HEAD_MAX_ENTRY 8192 /* a request head at the proxy's door */
#define HTTP1_HEAD_MAX 16384      /* heads inside tunnels, and responses */
#define HTTP1_MAX_HEADERS 128

/*
 * Look for the end of a head in P[0..N). Returns its length (CRLFCRLF
 * included) when complete, 0 when more bytes are needed, -EBADMSG on a bare
 * LF or a NUL byte (*WHY says which), -EMSGSIZE when MAX bytes hold no end
 * (answer 431).
 */
long http1_head_scan(const char *p, size_t n, size_t max, const char **why);

struct http1_header {
    const char *name;  /* as sent */
    const char *value; /* without surrounding whitespace */
};

enum http1_form {
    HTTP1_FORM_ORIGIN = 0, /* "/path?q" */
    HTTP1_FORM_ABSOLUTE,   /* "http://host:port/path?q" */
    HTTP1_FORM_AUTHORITY,  /* "host:port" (CONNECT only) */
    HTTP1_FORM_ASTERISK,   /* "*" (OPTIONS only) */
};

struct http1_request {
    char *head; /* private NUL-split copy */
    const char *method;
    const char *target;
    int minor; /* HTTP/1.MINOR */
    enum http1_form form;
    struct http1_header headers[HTTP1_MAX_HEADERS];
    size_t nheaders;
    const char *host_header; /* the one Host value, or NULL */
    /* Authority (CONNECT and absolute-form; else from Host): lowercase host
     * without brackets, and the port (default 80, or 443 for https). */
    char host[256];
    unsigned port;
    bool port_explicit; /* the authority carried a port */
    char scheme[8];     /* absolute-form: "http", "https", ...; else "" */
    const char *path;   /* absolute-form: the origin-form part ("/" if none) */
    /* Framing. */
    bool chunked;
    bool has_length;
    uint64_t length;
    bool keep_alive;      /* after this request, per version and Connection */
    bool expect_continue; /* Expect: 100-continue */
    bool upgrade;         /* Connection: upgrade with an Upgrade header */
    bool websocket;       /* ... to "websocket" */
    bool h2c;             /* an HTTP/2 upgrade attempt (Upgrade: h2c or HTTP2-Settings) */
};

/* Parse the complete head HEAD[0..LEN) (as found by http1_head_scan). On
 * success returns 0 and fills R (release with http1_request_fini). On a
 * violation returns -EBADMSG with *WHY set to a static reason; R holds
 * nothing to release. */
int http1_parse_request(const char *head, size_t len, struct http1_request *r, const char **why);
void http1_request_fini(struct http1_request *r);
/* The value of the first header called NAME (case-insensitive), or NULL. */
const char *http1_request_header(const struct http1_request *r, const char *name);
/* Is NAME hop-by-hop for this message (standard list, or nominated by its
 * Connection header)? Such headers are not forwarded. */
bool http1_request_hop_header(const struct http1_request *r, const char *name);

struct http1_response {
    char *head;
    int minor;
    int status;
    const char *reason;
    struct http1_header headers[HTTP1_MAX_HEADERS];
    size_t nheaders;
    bool chunked;
    bool has_length;
    uint64_t length;
    bool keep_alive;
    bool until_eof; /* no framing: the body runs to the connection's end */
    bool bodiless;  /* 1xx, 204, 304, or the answer to HEAD */
};

/* Parse a response head. FOR_HEAD: it answers a HEAD request. Returns 0 or
 * -EBADMSG with *WHY. */
int http1_parse_response(const char *head, size_t len, bool for_head, struct http1_response *r,
                         const char **why);
void http1_response_fini(struct http1_response *r);
const char *http1_response_header(const struct http1_response *r, const char *name);

/*
 * A message body in flight. http1_body_request()/http1_body_response() start
 * one after a parsed head; http1_body_feed() takes the next bytes of the
 * stream and returns how many belong to this message (the rest is the next
 * message's), or -EBADMSG with *WHY on bad framing. What to forward is
 * appended to OUT: a request's chunked body is re-framed from the decoded
 * data (extensions and trailers dropped), anything else is copied as
 * received; for those OUT may be NULL (the caller forwards the bytes it
 * was told belong to the message). *DONE turns true at the end of the message. For a response that
 * runs until EOF, call http1_body_eof() when the stream ends.
 */
struct http1_body;
struct http1_body *http1_body_request(const struct http1_request *r);
struct http1_body *http1_body_response(const struct http1_response *r);
long http1_body_feed(struct http1_body *b, const char *p, size_t n, struct buf *out, bool *done,
                     const char **why);
/* The stream ended: returns 0 when that completes the message, else
 * -EBADMSG (a truncated body). */
int http1_body_eof(struct http1_body *b, const char **why);
void http1_body_free(struct http1_body *b);
/* From now on OUT receives the decoded data (chunk framing removed) and
 * nothing else. */
void http1_body_set_decode(struct http1_body *b);
/* FN sees every piece of decoded body data before it is passed on; a
 * non-zero return fails the feed (-EBADMSG) and http1_body_tapped() turns
 * true. */
typedef int (*http1_tap_fn)(void *arg, const char *p, size_t n);
void http1_body_set_tap(struct http1_body *b, http1_tap_fn fn, void *arg);
bool http1_body_tapped(const struct http1_body *b);
/* Chunk headers parsed so far (the terminating one included). */
unsigned http1_body_chunks(const struct http1_body *b);

#endif
