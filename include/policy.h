#ifndef OPENSHELL_POLICY_H
#define OPENSHELL_POLICY_H
/*
 * policy: the sandbox policy language (doc/policy.md): a strict YAML loader,
 * an immutable compiled matcher, and the decisions the proxy asks for.
 *
 * Loading. policy_load_file()/policy_load_mem() parse, validate and compile
 * one policy. Every problem found is collected in a `struct policy_diags`
 * (errors and warnings, each formatted "FILE:LINE:COL: field.path: message");
 * a policy with at least one error is not built (*out stays NULL, -EINVAL).
 * Input is limited to POLICY_MAX_BYTES, must be UTF-8, and may not use YAML
 * anchors, aliases, merge keys, tags or duplicate keys.
 *
 * Lifetime. A `struct policy` is immutable once built and reference counted:
 * policy_ref() / policy_unref() are atomic, so a reader may pin the current
 * generation (policy_ref) while another thread publishes a new one with an
 * atomic pointer swap. The last policy_unref() frees it. Every string an
 * accessor or a decision returns is borrowed from the policy and valid while
 * the caller holds a reference.
 *
 * Decisions. policy_decide_l4(), policy_decide_l7(), policy_ssrf_check() and
 * policy_decide() take a `struct policy_request` (the request shape of
 * reference §8, all pointers borrowed from the caller) and fill a
 * caller-provided result. They allocate nothing, take no lock, never block,
 * and fail closed: anything malformed or over a limit is a deny with a reason.
 * Reasons are worded as the reference words them (deny bodies quote them).
 *
 * Deliberate deviation from the reference: an endpoint without `enforcement`
 * enforces (the reference audits). doc/policy.md lists every deviation.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"

#define POLICY_MAX_BYTES (4u * 1024 * 1024) /* larger policy files are refused */
#define POLICY_PATH_MAX 4096                /* longest L7 request path (raw and canonical) */
#define POLICY_REASON_MAX 2048              /* reasons longer than this end in "..." */
#define POLICY_MAX_ANCESTORS 64             /* ancestors beyond this are ignored */

struct policy;

/* ------------------------------------------------------------------ diagnostics */

enum policy_diag_level {
    POLICY_DIAG_ERROR = 0,
    POLICY_DIAG_WARNING,
};

struct policy_diag {
    enum policy_diag_level level;
    unsigned line, col; /* 1-based position in the source; 0 when unknown */
    char *field;        /* "network_policies.github.endpoints[0].port", or "" */
    char *msg;          /* what is wrong and what is expected */
    char *text;         /* "FILE:LINE:COL: FIELD: MSG" (warnings: "...: warning: MSG") */
};

/* Owned by the caller: policy_diags_init() before a load, _fini() after. */
struct policy_diags {
    struct policy_diag *v;
    size_t n, cap;
    size_t errors, warnings;
};

void policy_diags_init(struct policy_diags *d);
void policy_diags_fini(struct policy_diags *d);

/* ------------------------------------------------------------------ loading */

/*
 * Load, validate and compile the policy in PATH. On success returns 0 and
 * stores a new policy (one reference, the caller's) in *OUT; warnings may
 * still be in DIAGS. On a policy error returns -EINVAL with every error in
 * DIAGS (and E set to a one-line summary); on an I/O problem returns -errno
 * with E naming the file. DIAGS may be NULL (errors are then only counted in
 * E's summary). Never crashes or hangs on hostile input: size, nesting depth,
 * list lengths and node counts are bounded.
 */
int policy_load_file(const char *path, struct policy **out, struct policy_diags *diags,
                     struct err *e);

/*
 * As policy_load_file() for LEN bytes at DATA (need not be NUL-terminated).
 * NAME is the file name used in diagnostics (e.g. "<stdin>").
 */
int policy_load_mem(const char *name, const char *data, size_t len, struct policy **out,
                    struct policy_diags *diags, struct err *e);

/* Flags for the _flags variants (0 = the strict behaviour above). */
#define POLICY_LOAD_VERSION_OPTIONAL                                                               \
    0x1 /* missing `version` is a warning (test vectors omit it)                                   \
         */

int policy_load_file_flags(const char *path, unsigned flags, struct policy **out,
                           struct policy_diags *diags, struct err *e);
int policy_load_mem_flags(const char *name, const char *data, size_t len, unsigned flags,
                          struct policy **out, struct policy_diags *diags, struct err *e);

/*
 * The built-in restrictive default (reference §4): include_workdir true,
 * read_only [/usr, /lib, /proc, /dev/urandom, /app, /etc, /var/log],
 * read_write [/tmp, /dev/null], landlock best_effort, no process identity,
 * no network policies (all egress denied). policy_default_yaml() is its YAML
 * text (static storage; what `openshell policy default` prints);
 * policy_default() returns a new reference to the compiled form (never NULL).
 */
const char *policy_default_yaml(void);
/* TEXT[LEN], a policy's YAML (one the engine accepted), as a JSON
 * object (the caller's, cJSON_Delete), or NULL with E. */
struct cJSON;
struct cJSON *policy_yaml_to_json(const char *text, size_t len, struct err *e);
struct policy *policy_default(void);

/*
 * A new policy (one reference, the caller's) equal to P, except that every
 * non-glob binary path that leads through a symlink under ROOT ("/" or
 * "/proc/PID/root" of the sandbox's entrypoint; NULL means "/") also admits
 * the resolved path, as the reference does once the entrypoint runs (the
 * kernel reports resolved executables). At most 40 links are followed;
 * missing paths are kept as written. Returns 0, or -errno with E set.
 */
int policy_expand_symlinks(const struct policy *p, const char *root, struct policy **out,
                           struct err *e);

/* Take another reference (returns P). P may be NULL. */
struct policy *policy_ref(struct policy *p);
/* Drop a reference; the last one frees the policy. P may be NULL. */
void policy_unref(struct policy *p);

/* The NAME given at load time ("FILE", "<default>"). */
const char *policy_name(const struct policy *p);

/* ------------------------------------------------------------------ static sections */

enum policy_landlock {
    POLICY_LANDLOCK_BEST_EFFORT = 0,
    POLICY_LANDLOCK_HARD_REQUIREMENT,
};

/* filesystem_policy: absolute, lexically normalised paths (no trailing '/',
 * no repeated '/'), in file order. *N gets the count; the array is borrowed. */
const char *const *policy_fs_read_only(const struct policy *p, size_t *n);
const char *const *policy_fs_read_write(const struct policy *p, size_t *n);
/* include_workdir: true when filesystem_policy is absent (runtime default),
 * else the key's value (false when omitted). */
bool policy_fs_include_workdir(const struct policy *p);
/* Whether the file had a filesystem_policy section at all. */
bool policy_fs_present(const struct policy *p);
/* landlock.compatibility (best_effort when absent). */
enum policy_landlock policy_landlock_compat(const struct policy *p);
/* process.run_as_user / run_as_group: "sandbox" or a decimal id in
 * [1, 4294967294]; NULL when absent or empty (the runtime decides). Root is
 * rejected at load time, so these are never "0" or "root". */
const char *policy_run_as_user(const struct policy *p);
const char *policy_run_as_group(const struct policy *p);
/* Number of network_policies blocks (0: every connection is denied). */
size_t policy_network_count(const struct policy *p);

/* ------------------------------------------------------------------ requests */

enum policy_transport {
    POLICY_TRANSPORT_CONNECT = 0, /* CONNECT host:port through the explicit proxy */
    POLICY_TRANSPORT_FORWARD,     /* absolute-form plain-HTTP request (carries method/path) */
    POLICY_TRANSPORT_TRANSPARENT, /* protocol: tcp capture via policy DNS */
    POLICY_TRANSPORT_L7,          /* one HTTP request inside an allowed connection */
};

/* One decoded query key with its values (repeated keys are one entry). */
struct policy_query_param {
    const char *key;
    const char *const *values;
    size_t nvalues;
};

/*
 * The request shape of reference §8. Every pointer is borrowed; absent
 * strings are NULL, absent lists have count 0. Strings are NUL-terminated;
 * one containing a NUL byte cannot be expressed and a host with bytes that a
 * DNS name cannot hold simply matches nothing.
 */
struct policy_request {
    enum policy_transport transport;
    const char *binary;               /* kernel-resolved exe path of the caller */
    const char *const *ancestors;     /* nearest parent first, up to the entrypoint */
    size_t nancestors;                /* only the first POLICY_MAX_ANCESTORS count */
    const char *const *cmdline_paths; /* logged, never grants */
    size_t ncmdline_paths;
    const char *host; /* destination host as requested (any case) */
    unsigned port;    /* 1..65535; anything else matches nothing */
    /* L7 (transport forward or l7): */
    const char *method;     /* "GET", ..., or "WEBSOCKET_TEXT" for a client text frame */
    const char *path;       /* canonical path; ignored when raw_target is set */
    const char *raw_target; /* raw request-target: canonicalised here, its query parsed */
    const struct policy_query_param *query; /* decoded query; used when raw_target is NULL */
    size_t nquery;
    const char *const *resolved_ips; /* DNS answer (IPv4/IPv6 text); none = a public address */
    size_t nresolved_ips;
    bool websocket_upgrade;       /* the GET carries a valid RFC 6455 upgrade */
    bool binary_identity_relaxed; /* env binary_identity: relaxed (every binary check passes) */
};

/* ------------------------------------------------------------------ L4 decision */

enum policy_protocol {
    POLICY_PROTO_NONE = 0, /* plain L4 through the explicit proxy */
    POLICY_PROTO_TCP,      /* L4 with policy DNS / transparent capture */
    POLICY_PROTO_REST,
    POLICY_PROTO_WEBSOCKET,
    POLICY_PROTO_SQL, /* audit only: no SQL parser, traffic is relayed and logged */
    /* graphql, json-rpc and mcp are parsed but refused at load time (not supported yet) */
};

enum policy_tls {
    POLICY_TLS_AUTO = 0, /* terminate when the client speaks TLS ("terminate"/"passthrough" too) */
    POLICY_TLS_SKIP,     /* raw tunnel: no termination, no L7, no credential injection */
};

struct policy_l4_result {
    bool allow;
    const char *policy; /* matched block key (lexicographically smallest); NULL on deny */
    /* What the proxy needs about the connection (meaningful when allow): */
    bool l7;                        /* some matched endpoint is L7-inspected: check each request */
    enum policy_protocol protocol;  /* of the first L7 endpoint (or of the first matched one) */
    enum policy_tls tls;            /* of the first endpoint with extended config, else auto */
    bool enforce;                   /* first L7 endpoint enforces (per request: see L7 result) */
    bool allow_encoded_slash;       /* some L7 endpoint keeps %2F in paths */
    bool body_rewrite;              /* some rest endpoint has request_body_credential_rewrite */
    bool has_allowed_ips;           /* SSRF uses the allowed_ips list (see policy_ssrf_check) */
    const char *endpoint_host;      /* host pattern of the first matched endpoint ("" hostless) */
    char reason[POLICY_REASON_MAX]; /* deny reason, "" on allow */
};

/*
 * Decide whether REQ's caller (binary, ancestors) may reach REQ's host:port.
 * A block matches when one of its endpoints matches host and port and one of
 * its binaries matches the binary or an ancestor. Deny reasons, exactly:
 *   "network connections not allowed by policy"           (no blocks at all)
 *   "endpoint HOST:PORT is not allowed by any policy"       (no endpoint matches)
 *   "binary 'EXE' not allowed in policy 'KEY' (ancestors: [A -> B], cmdline: [..]). SYMLINK HINT:
 * .." (per block, joined by "; ") Returns 0 (allow) or -EACCES (deny); OUT is filled either way.
 */
int policy_decide_l4(const struct policy *p, const struct policy_request *req,
                     struct policy_l4_result *out);

/* ------------------------------------------------------------------ L7 decision */

enum policy_l7_verdict {
    POLICY_L7_ALLOW = 0,
    POLICY_L7_AUDIT, /* not allowed, endpoint audits: forward and log */
    POLICY_L7_DENY,  /* not allowed, endpoint enforces (or a hard deny): answer 403 */
};

struct policy_l7_result {
    enum policy_l7_verdict verdict;
    const char *policy;             /* block key whose endpoint was selected, or NULL */
    bool enforce;                   /* selected endpoint's enforcement */
    char path[POLICY_PATH_MAX + 1]; /* canonical path (what goes upstream), "" if rejected */
    char reason[POLICY_REASON_MAX]; /* "" on allow; on audit the reason it would deny */
};

/*
 * Decide one HTTP request (REQ->method, REQ->raw_target or REQ->path and
 * REQ->query) inside a connection that policy_decide_l4() allowed for the
 * same binary/ancestors/host/port. The raw target is canonicalised (see
 * policy_canon_path; a rejected target is a hard deny "request-target must be
 * canonical: WHY"), the endpoint is selected by its `path` selector, then
 * allow rules, deny rules (deny wins) and the access presets decide. Reasons:
 *   "METHOD PATH not permitted by policy", "METHOD PATH blocked by deny rule",
 *   "no L7 endpoint path matched request",
 *   "websocket endpoint requires a valid WebSocket upgrade request".
 * When the connection is not L7-inspected the verdict is allow.
 * Returns 0 for allow/audit, -EACCES for deny; OUT is filled either way.
 */
int policy_decide_l7(const struct policy *p, const struct policy_request *req,
                     struct policy_l7_result *out);

/* ------------------------------------------------------------------ SSRF */

/* An IPv4 (family 4, first 4 bytes) or IPv6 (family 6) address. */
struct policy_addr {
    int family;
    uint8_t a[16];
};

/* Parse an IPv4 dotted quad or IPv6 text (optionally in [brackets]) into
 * OUT. Returns 0 or -EINVAL. */
int policy_addr_parse(const char *s, struct policy_addr *out);

enum policy_ssrf {
    POLICY_SSRF_OK = 0,
    POLICY_SSRF_INTERNAL,        /* "internal address" */
    POLICY_SSRF_ALLOWED_IPS,     /* "allowed_ips check failed" */
    POLICY_SSRF_INVALID_ALLOWED, /* "invalid allowed_ips in policy" */
    POLICY_SSRF_DECLARED,        /* "declared endpoint check failed" */
    POLICY_SSRF_TRUSTED_GATEWAY, /* "trusted-gateway check failed" */
};

/* The reference's words for K ("internal address", ...; "" for OK). */
const char *policy_ssrf_kind(enum policy_ssrf k);

/*
 * Classify the N resolved addresses ADDRS of an L4-allowed REQ (all or
 * nothing: one bad address fails the lot) with the reference's precedence:
 * trusted gateway alias (only when TRUSTED_GATEWAY is non-NULL), explicit
 * allowed_ips, implicit IP literal, exact declared host, public only.
 * Loopback, link-local and unspecified addresses are always refused;
 * control-plane ports (2379, 2380, 6443, 10250, 10255) are refused where
 * the reference refuses them. N == 0 fails (nothing to dial).
 * Returns POLICY_SSRF_OK or the failure kind.
 */
enum policy_ssrf policy_ssrf_check(const struct policy *p, const struct policy_request *req,
                                   const struct policy_addr *addrs, size_t n,
                                   const struct policy_addr *trusted_gateway);

/* ------------------------------------------------------------------ all in one */

struct policy_decision {
    bool allow;                     /* final: L4, then SSRF, then L7 (audit allows) */
    const char *policy;             /* matched block key or NULL */
    bool l7_ran;                    /* an L7 verdict was computed */
    enum policy_l7_verdict l7;      /* meaningful when l7_ran */
    char reason[POLICY_REASON_MAX]; /* deny reason (or the audit reason), "" otherwise */
};

/*
 * What `openshell policy check` prints for one request: L4; on allow the
 * SSRF check of REQ->resolved_ips (parsed with policy_addr_parse; without
 * them the host itself when it is an IP literal, else no check: the
 * reference's "absent = public address"; a failure reads
 * "CONNECT HOST:PORT blocked: KIND"); then, when REQ carries a method and the
 * connection is L7-inspected, policy_decide_l7().
 * Returns 0 (allow) or -EACCES (deny).
 */
int policy_decide(const struct policy *p, const struct policy_request *req,
                  struct policy_decision *out);

/* ------------------------------------------------------------------ helpers */

/*
 * Canonicalise the request-target RAW (LEN bytes; origin-form "/p?q" or
 * absolute-form "http://h:p/p?q"; the query is not part of the result) into
 * OUT[OUTSZ] as the reference does: reject control bytes, raw non-ASCII,
 * fragments, encoded NUL/CR/LF/TAB/controls, bad %-escapes, asterisk-form,
 * targets over POLICY_PATH_MAX; percent-decode; %2F is rejected unless
 * ALLOW_ENCODED_SLASH (then kept as %2F); strip ";params" from segments,
 * resolve "." and "..", reject ".." above the root and residual dot segments,
 * collapse "//"; re-encode (unreserved, sub-delims, ':' and '@' literal,
 * everything else %HH uppercase); "" becomes "/". If QUERY is not NULL it
 * gets a pointer into RAW at the raw query (after '?', NULL if none).
 * Returns 0, or -EINVAL with WHY (static text) describing the rejection, or
 * -ENAMETOOLONG.
 */
int policy_canon_path(const char *raw, size_t len, bool allow_encoded_slash, char *out,
                      size_t outsz, const char **query, const char **why);

/*
 * Glob matching as the reference's engine does it, on a pattern compiled on
 * the fly (for tests and tools; the matcher uses precompiled forms).
 * SEP is the separator '*' and '?' never cross ('/' for paths and binaries,
 * '.' for hosts and query values); a whole-segment "**" crosses separators.
 * Returns 1 match, 0 no match, -EINVAL malformed pattern.
 */
int policy_glob_match(const char *pattern, const char *s, char sep);

/* ------------------------------------------------------------------ JSON requests */

/*
 * A request parsed from one JSON object in the §8 shape (keys transport,
 * binary, ancestors, cmdline_paths, host, port, method, path, query (key ->
 * string or list of strings), resolved_ips, raw_target, websocket_upgrade,
 * graphql_operations, graphql_error, jsonrpc, env {binary_identity}).
 * `req` points into storage owned by the struct: policy_json_request_fini()
 * releases it.
 */
struct policy_json_request {
    struct policy_request req;
    void *priv; /* owned storage */
};

/*
 * Parse LEN bytes of JSON at TEXT into R (initialised here). Unknown keys,
 * wrong types, NUL bytes in strings and out-of-range ports are errors.
 * Returns 0, or -EINVAL with E saying what is wrong. R must be finished with
 * policy_json_request_fini() either way.
 */
int policy_json_request_parse(struct policy_json_request *r, const char *text, size_t len,
                              struct err *e);
void policy_json_request_fini(struct policy_json_request *r);

/* Whether VALUE (of OPENSHELL_NETWORK_BINARY_IDENTITY or env.binary_identity)
 * turns binary identity off: relaxed, disabled, endpoint-only, false, 0. */
bool policy_binary_identity_relaxed(const char *value);

/* Append the one-line JSON verdict `openshell policy check` prints for D:
 * {"decision":..,"policy":..,"l7_decision":..,"reason":..} (no newline). */
struct buf;
void policy_decision_json(const struct policy_decision *d, struct buf *out);

#endif
