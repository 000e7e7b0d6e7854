#ifndef OPENSHELL_PX_CRED_H
#define OPENSHELL_PX_CRED_H
/*
 * px_cred: provider credentials in the egress proxy (doc/providers.md).
 *
 * The gateway's credentials document (JSON) is parsed once into an
 * immutable, reference-counted px_creds: the injectable keys with their
 * secret values and the endpoints each is bound to, and the inference
 * route. The proxy swaps whole documents (px_server_set_credentials); a
 * request takes a reference when it starts and is served under that one
 * revision.
 *
 * Placeholders ("openshell:resolve:env:KEY", "openshell:resolve:env:vREV_KEY")
 * are replaced only by the functions below, which the proxy calls on a
 * request that already passed the policy, right before the head is written
 * upstream. Each returns a px_cred_status; on anything but PX_CRED_OK the
 * request must not go upstream. Nothing here logs: reasons (in X->why)
 * never contain a key name nor a value.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "err.h"

#define PX_CRED_MARKER "openshell:resolve:env:"
#define PX_CRED_DOC_MAX (1024 * 1024)

struct px_creds;

enum px_route_api {
    PX_API_OPENAI = 0,
    PX_API_ANTHROPIC,
};

/* The inference route (borrowed from its px_creds). */
struct px_route {
    enum px_route_api api;
    bool https;
    char host[256];
    unsigned port;
    char prefix[512]; /* base URL path without a trailing '/', "" for none */
    const char *model;
    const char *api_key;
    bool auth_bearer; /* Authorization: Bearer, else x-api-key */
    unsigned timeout_s;
    const char *provider;
};

/* Parse a credentials document. Returns 0 with *OUT (one reference; release
 * with px_creds_unref) or -EINVAL with E saying what is wrong (never a
 * value). */
int px_creds_parse(const char *json, size_t len, struct px_creds **out, struct err *e);
struct px_creds *px_creds_ref(struct px_creds *c);
void px_creds_unref(struct px_creds *c);
uint64_t px_creds_revision(const struct px_creds *c);
size_t px_creds_count(const struct px_creds *c);
/* The inference route, or NULL when none is configured (C may be NULL). */
const struct px_route *px_creds_route(const struct px_creds *c);
/* Is some credential bound to HOST:PORT? (C may be NULL.) */
bool px_creds_bound_to(const struct px_creds *c, const char *host, unsigned port);

enum px_cred_status {
    PX_CRED_OK = 0,
    PX_CRED_MISMATCH,    /* 403 credential_endpoint_mismatch */
    PX_CRED_UNAVAILABLE, /* 500 credential_unavailable / credential_injection_failed */
    PX_CRED_BAD_SYNTAX,  /* 400 invalid_credential_placeholder */
};

/* One request's resolution: the document (may be NULL: nothing resolves),
 * the destination, and what happened. */
struct px_cred_ctx {
    const struct px_creds *creds;
    const char *host;
    unsigned port;
    unsigned injected; /* placeholders replaced so far */
    char why[200];     /* the failure, for the answer and the log */
};

/* Rewrite an origin-form TARGET ("/path?query") into OUT: placeholders in
 * path segments and query values replaced. */
enum px_cred_status px_cred_target(struct px_cred_ctx *x, const char *target, struct buf *out);
/* Rewrite one header value into OUT ("Name: value" not included): exact
 * placeholder, "Scheme <placeholder>", Basic credentials. A placeholder
 * anywhere else in the value fails. */
enum px_cred_status px_cred_header(struct px_cred_ctx *x, const char *name, const char *value,
                                   struct buf *out);
/* Rewrite a request body P[0..N) of content type CT (may be NULL) into
 * OUT, for an endpoint with request_body_credential_rewrite: JSON (values
 * JSON-escaped), form (percent-encoded) and text bodies; other types are
 * copied unchanged (the caller's marker check then refuses them). */
enum px_cred_status px_cred_body(struct px_cred_ctx *x, const char *p, size_t n, const char *ct,
                                 struct buf *out);
/* Does P[0..N) hold a placeholder marker, raw or percent-encoded, in any
 * letter case (also the "-OPENSHELL-RESOLVE-ENV-" alias form)? */
bool px_cred_marker(const char *p, size_t n);
/* Copy IN to OUT (SIZE bytes, truncated) with every placeholder replaced by
 * "[CREDENTIAL]": what logs may show of a path. */
void px_cred_redact(const char *in, char *out, size_t size);

/* A body scanner: feed the body's bytes in order; true once a marker has
 * appeared, even split across feeds. */
struct px_cred_scan {
    char tail[160];
    size_t ntail;
    bool hit;
};
bool px_cred_scan_feed(struct px_cred_scan *s, const char *p, size_t n);

#endif
