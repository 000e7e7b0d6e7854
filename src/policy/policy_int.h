#ifndef OPENSHELL_POLICY_INT_H
#define OPENSHELL_POLICY_INT_H
/*
 * policy_int.h: private to src/policy/. The YAML node tree (yaml.c), the
 * compiled model (load.c builds it, decide.c reads it), the glob engine
 * (glob.c), the arena every compiled policy lives in, and diagnostics.
 *
 * A compiled policy owns one arena; every string, glob and array of the model
 * is carved from it, so policy_unref() frees the whole generation at once.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "policy.h"

/* ------------------------------------------------------------------ arena */

struct pol_arena_chunk;
struct pol_arena {
    struct pol_arena_chunk *head;
    size_t used, size; /* of head */
};

void policy_arena_init(struct pol_arena *a);
void policy_arena_fini(struct pol_arena *a);
/* Zeroed, 16-byte aligned memory living as long as the arena. */
void *policy_arena_alloc(struct pol_arena *a, size_t n);
char *policy_arena_strndup(struct pol_arena *a, const char *s, size_t n);
char *policy_arena_strdup(struct pol_arena *a, const char *s);

/* ------------------------------------------------------------------ diagnostics */

/* Add one diagnostic; FIELD may be NULL. Formats TEXT as the header says. */
void policy_diag_add(struct policy_diags *d, const char *file, enum policy_diag_level level,
                     unsigned line, unsigned col, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 7, 8)));

/* ------------------------------------------------------------------ YAML tree */

#define PY_MAX_DEPTH 32      /* nesting levels (a policy needs about 8) */
#define PY_MAX_ITEMS 10000   /* entries of one sequence or mapping */
#define PY_MAX_NODES 500000u /* nodes in one document (4 MiB of ordinary YAML is ~400k) */
#define PY_MAX_SCALAR 65536  /* bytes of one scalar */

enum py_kind {
    PY_SCALAR = 0,
    PY_SEQ,
    PY_MAP,
};

struct py_node {
    enum py_kind kind;
    unsigned line, col; /* 1-based */
    bool plain;         /* unquoted scalar (may be a number, bool or null) */
    bool dup;           /* a repeated mapping key (reported, then dropped) */
    const char *s;      /* scalar text (NUL-terminated) */
    size_t len;
    size_t n;               /* sequence items / mapping pairs */
    struct py_node **items; /* sequence items, or mapping keys */
    struct py_node **vals;  /* mapping values */
};

/*
 * Parse LEN bytes of YAML into a tree allocated from A. Rejects (as one
 * error in DIAGS, returning -EINVAL) invalid UTF-8, NUL bytes, anchors,
 * aliases, tags, merge keys, several documents, limits above; reports every
 * duplicate mapping key (and keeps parsing). *ROOT is NULL for an empty
 * document.
 */
int policy_yaml_parse(struct pol_arena *a, const char *file, const char *data, size_t len,
                      struct py_node **root, struct policy_diags *diags);

/* ------------------------------------------------------------------ globs */

/* A compiled glob: alternatives (from {a,b}), each a list of segments. */
struct pg_glob;

enum pg_mode {
    PG_PATH, /* globset with literal separator: '**' whole segment crosses; trailing one needs >= 1
              */
    PG_HOST, /* labels: '**' whole label = one or more labels */
};

/* Compile PATTERN. Returns NULL with *WHY set (static text) when malformed
 * (unclosed '[' or '{', nesting, more than 64 alternatives, too long). */
struct pg_glob *policy_glob_compile(struct pol_arena *a, const char *pattern, char sep,
                                    enum pg_mode mode, const char **why);
/* 1 match, 0 no match. S is LEN bytes. Never allocates. */
int policy_glob_exec(const struct pg_glob *g, const char *s, size_t len);
/* Whether the pattern had any glob metacharacter. */
bool policy_glob_has_meta(const char *pattern);

/* ------------------------------------------------------------------ networks */

struct pol_cidr {
    struct policy_addr addr; /* network address (host bits cleared) */
    unsigned prefix;         /* 0..32 or 0..128 */
};

/* Parse "IP" or "IP/PREFIX". Returns 0 or -EINVAL. */
int policy_cidr_parse(const char *s, struct pol_cidr *out);
bool policy_cidr_contains(const struct pol_cidr *c, const struct policy_addr *a);
/* Whether C's range intersects loopback, link-local or unspecified. */
bool policy_cidr_overlaps_blocked(const struct pol_cidr *c);
bool policy_addr_always_blocked(const struct policy_addr *a);
bool policy_addr_internal(const struct policy_addr *a);

/* ------------------------------------------------------------------ compiled model */

/* One L7 matcher value: any of these globs (query values, '.'-separated). */
struct pol_qmatch {
    const char *key;
    struct pg_glob **globs;
    size_t nglobs;
};

struct pol_l7rule {
    const char *method;    /* upper-case; "*" any; NULL/"" never matches */
    bool path_any;         /* path "**" */
    struct pg_glob *path;  /* NULL: empty path (never matches) unless path_any */
    const char *path_text; /* as written */
    struct pol_qmatch *query;
    size_t nquery;
};

struct pol_endpoint {
    unsigned block;        /* index in policy->blocks (sorted by key) */
    unsigned index;        /* position in the block's endpoints list */
    unsigned ordinal;      /* global order: (block, index) */
    const char *host;      /* lower-cased; "" hostless */
    struct pg_glob *hostg; /* non-NULL when host has '*' */
    uint16_t *ports;
    size_t nports;
    const char *path_sel;      /* endpoint `path` selector, "" = all */
    struct pg_glob *path_rego; /* selector with the authorisation (Rego) semantics */
    struct pg_glob *path_rust; /* selector with the selection semantics ('*' crosses '/') */
    unsigned path_spec;        /* selector specificity: non-'*' characters */
    enum policy_protocol protocol;
    bool proto_l7; /* rest, websocket, sql */
    enum policy_tls tls;
    bool tls_set; /* tls key given (part of "extended config") */
    bool enforce; /* effective enforcement (our default: enforce; sql: audit) */
    bool allow_encoded_slash;
    bool body_rewrite; /* request_body_credential_rewrite (rest) */
    bool extended;     /* non-tcp protocol, allowed_ips, or tls */
    struct pol_cidr *allowed_ips;
    size_t nallowed_ips;
    struct pol_l7rule *allow;
    size_t nallow;
    struct pol_l7rule *deny;
    size_t ndeny;
    unsigned line, col;
};

struct pol_binary {
    const char *path;
    struct pg_glob *g; /* when the path has '*' */
};

struct pol_block {
    const char *key;
    struct pol_endpoint **eps;
    size_t neps;
    struct pol_binary *bins;
    size_t nbins;
};

/* Exact-host index: open addressing, each slot a run of endpoint pointers in
 * ordinal order. */
struct pol_hslot {
    const char *host; /* NULL: empty slot */
    uint32_t hash;
    struct pol_endpoint **eps;
    size_t n;
};

/* A string -> endpoints index (open addressing; capacity a power of two). */
struct pol_hidx {
    struct pol_hslot *slots;
    size_t cap;
};

struct pol_hkey {
    const char *key; /* NUL-terminated, lives as long as the index */
    struct pol_endpoint *ep;
};

/* Build H from N keys (given in ordinal order; each slot keeps that order). */
void policy_hidx_build(struct pol_arena *a, struct pol_hidx *h, const struct pol_hkey *keys,
                       size_t n);
/* The slot for KEY, or NULL. Never allocates. */
const struct pol_hslot *policy_hidx_get(const struct pol_hidx *h, const char *key);

struct policy {
    int refs; /* atomic */
    struct pol_arena arena;
    const char *name;
    const char *src; /* the source text (for policy_expand_symlinks) */
    size_t srclen;
    unsigned flags;
    bool fs_present;
    bool include_workdir;
    const char **ro;
    size_t nro;
    const char **rw;
    size_t nrw;
    enum policy_landlock landlock;
    const char *run_as_user, *run_as_group;
    struct pol_block *blocks; /* sorted by key (strcmp) */
    size_t nblocks;
    struct pol_endpoint **eps; /* all endpoints in ordinal order */
    size_t neps;
    struct pol_hidx exact;      /* exact host -> endpoints */
    struct pol_hidx wildidx;    /* wildcard: fixed part after the first label -> endpoints */
    struct pol_endpoint **wild; /* wildcard-host endpoints, ordinal order */
    size_t nwild;
    struct pol_endpoint **hostless; /* hostless (allowed_ips) endpoints */
    size_t nhostless;
};

uint32_t policy_hash(const char *s, size_t n);

/* The compiled-model builder (load.c) and the JSON request reader share: */
bool policy_is_ip_literal(const char *host);

/* Next "key=value" pair of the raw query [*POS, END): decoded ('+' is a
 * space) into KEY and VAL (each POLICY_PATH_MAX + 1 bytes). Returns 1 with
 * a pair, 0 at the end, -EINVAL for bad escapes, NUL or invalid UTF-8. */
int policy_query_next(const char **pos, const char *end, char *key, size_t *klen, char *val,
                      size_t *vlen);

#endif
