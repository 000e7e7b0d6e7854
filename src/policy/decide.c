/*
 * decide.c: L4, L7 and SSRF decisions on a compiled policy.
 *
 * Nothing here allocates or locks: the policy is immutable, every scratch
 * buffer is on the stack, results go to caller-provided structs. Candidate
 * endpoints for a host come from three lists already in global (block, index)
 * order, merged on the fly, so the first endpoint whose block admits the
 * binary belongs to the lexicographically smallest matching block.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "buf.h"
#include "policy_int.h"

#define HOST_MAX 256

/* ------------------------------------------------------------------ text */

struct txt {
    char *s;
    size_t n, cap;
    bool full;
};

static void
txt_init(struct txt *t, char *s, size_t cap)
{
    t->s = s;
    t->n = 0;
    t->cap = cap;
    t->full = false;
    s[0] = '\0';
}

static void __attribute__((format(printf, 2, 3))) txt_printf(struct txt *t, const char *fmt, ...)
{
    va_list ap;
    int r;

    if (t->full)
        return;
    va_start(ap, fmt);
    r = vsnprintf(t->s + t->n, t->cap - t->n, fmt, ap);
    va_end(ap);
    if (r < 0 || (size_t)r >= t->cap - t->n) {
        t->full = true;
        t->n = t->cap - 1;
        if (t->cap > 4)
            memcpy(t->s + t->cap - 4, "...", 4);
        return;
    }
    t->n += (size_t)r;
}

/* ------------------------------------------------------------------ candidates */

#define CAND_LISTS 16

struct cand_it {
    struct pol_endpoint *const *l[CAND_LISTS];
    size_t n[CAND_LISTS], i[CAND_LISTS];
    bool glob[CAND_LISTS]; /* entries need the host glob checked */
    int nl;
};

/* Lower-case REQ's host into BUF (brackets of an IPv6 literal dropped).
 * Returns its length, or -1 when it cannot match anything. */
static int
norm_host(const char *host, char *buf)
{
    size_t n;

    if (!host)
        return -1;
    n = strlen(host);
    if (n >= 2 && host[0] == '[' && host[n - 1] == ']') {
        host++;
        n -= 2;
    }
    if (n == 0 || n >= HOST_MAX)
        return -1;
    for (size_t i = 0; i < n; i++) {
        char c = host[i];
        buf[i] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
    }
    buf[n] = '\0';
    return (int)n;
}

static void
cand_add(struct cand_it *it, const struct pol_hslot *s, bool glob)
{
    if (!s || !s->n)
        return;
    it->l[it->nl] = s->eps;
    it->n[it->nl] = s->n;
    it->glob[it->nl++] = glob;
}

/* Candidate endpoints for HOST: its exact slot, the wildcard slots of each
 * of its suffixes (a wildcard's fixed part follows its first label), and
 * the hostless endpoints. */
static void
cand_init(struct cand_it *it, const struct policy *p, const char *host, size_t hlen)
{
    struct pol_hslot all = { .eps = p->wild, .n = p->nwild };
    struct pol_hslot hl = { .eps = p->hostless, .n = p->nhostless };
    int first_wild;

    it->nl = 0;
    memset(it->i, 0, sizeof(it->i));
    if (!hlen)
        return;
    cand_add(it, policy_hidx_get(&p->exact, host), false);
    first_wild = it->nl;
    if (p->nwild) {
        for (const char *c = host; *c; c++) {
            if (*c != '.')
                continue;
            if (it->nl == CAND_LISTS - 1) {
                /* Absurdly many hits: fall back to every wildcard. */
                it->nl = first_wild;
                cand_add(it, &all, true);
                break;
            }
            cand_add(it, policy_hidx_get(&p->wildidx, c + 1), true);
        }
    }
    cand_add(it, &hl, false);
}

static bool
port_in(const struct pol_endpoint *ep, unsigned port)
{
    size_t lo = 0, hi = ep->nports;

    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (ep->ports[mid] == port)
            return true;
        if (ep->ports[mid] < port)
            lo = mid + 1;
        else
            hi = mid;
    }
    return false;
}

/* Next endpoint (ordinal order) matching HOST and PORT, or NULL. */
static const struct pol_endpoint *
cand_next(struct cand_it *it, const char *host, size_t hlen, unsigned port)
{
    for (;;) {
        int best = -1;
        const struct pol_endpoint *ep;

        for (int k = 0; k < it->nl; k++)
            if (it->i[k] < it->n[k] &&
                (best < 0 || it->l[k][it->i[k]]->ordinal < it->l[best][it->i[best]]->ordinal))
                best = k;
        if (best < 0)
            return NULL;
        ep = it->l[best][it->i[best]++];
        if (!port_in(ep, port))
            continue;
        if (it->glob[best] && policy_glob_exec(ep->hostg, host, hlen) != 1)
            continue;
        return ep;
    }
}

/* ------------------------------------------------------------------ binaries */

static bool
bin_matches(const struct pol_binary *b, const char *exe)
{
    if (!exe)
        return false;
    if (b->g)
        return policy_glob_exec(b->g, exe, strlen(exe)) == 1;
    return strcmp(b->path, exe) == 0;
}

static bool
block_admits(const struct pol_block *b, const struct policy_request *req)
{
    size_t na = req->nancestors < POLICY_MAX_ANCESTORS ? req->nancestors : POLICY_MAX_ANCESTORS;

    if (req->binary_identity_relaxed)
        return true;
    if (!req->binary || !*req->binary)
        return false;
    for (size_t i = 0; i < b->nbins; i++) {
        if (bin_matches(&b->bins[i], req->binary))
            return true;
        for (size_t a = 0; a < na; a++)
            if (req->ancestors[a] && bin_matches(&b->bins[i], req->ancestors[a]))
                return true;
    }
    return false;
}

/* ------------------------------------------------------------------ L4 */

static bool
port_ok(unsigned port)
{
    return port >= 1 && port <= 65535;
}

static void
l4_binary_reason(const struct policy *p, const struct policy_request *req, const char *host,
                 size_t hlen, struct txt *t)
{
    struct cand_it it;
    const struct pol_endpoint *ep;
    int last = -1;
    size_t na = req->nancestors < POLICY_MAX_ANCESTORS ? req->nancestors : POLICY_MAX_ANCESTORS;

    cand_init(&it, p, host, hlen);
    while ((ep = cand_next(&it, host, hlen, req->port))) {
        if ((int)ep->block == last)
            continue;
        last = (int)ep->block;
        if (t->n)
            txt_printf(t, "; ");
        txt_printf(t, "binary '%s' not allowed in policy '%s' (ancestors: [",
                   req->binary ? req->binary : "", p->blocks[ep->block].key);
        for (size_t a = 0; a < na; a++)
            txt_printf(t, "%s%s", a ? " -> " : "", req->ancestors[a] ? req->ancestors[a] : "");
        txt_printf(t, "], cmdline: [");
        for (size_t c = 0; c < req->ncmdline_paths; c++)
            txt_printf(t, "%s%s", c ? ", " : "",
                       req->cmdline_paths[c] ? req->cmdline_paths[c] : "");
        txt_printf(t, "]). SYMLINK HINT: binaries are matched by their resolved path; if the "
                      "policy names a symlink, list the target printed by 'readlink -f'");
    }
}

int
policy_decide_l4(const struct policy *p, const struct policy_request *req,
                 struct policy_l4_result *out)
{
    char host[HOST_MAX];
    int hl = norm_host(req->host, host);
    struct cand_it it;
    const struct pol_endpoint *ep;
    bool any = false, found_l7 = false, found_ext = false;
    int cached_block = -1;
    bool cached_ok = false;
    struct txt t;

    memset(out, 0, offsetof(struct policy_l4_result, reason));
    txt_init(&t, out->reason, sizeof(out->reason));
    out->endpoint_host = NULL;
    if (p->nblocks == 0) {
        txt_printf(&t, "network connections not allowed by policy");
        return -EACCES;
    }
    if (hl > 0 && port_ok(req->port)) {
        cand_init(&it, p, host, (size_t)hl);
        while ((ep = cand_next(&it, host, (size_t)hl, req->port))) {
            any = true;
            if ((int)ep->block != cached_block) {
                cached_block = (int)ep->block;
                cached_ok = block_admits(&p->blocks[ep->block], req);
            }
            if (!cached_ok)
                continue;
            if (!out->allow) {
                out->allow = true;
                out->policy = p->blocks[ep->block].key;
                out->endpoint_host = ep->host;
                out->protocol = ep->protocol;
            }
            if (ep->extended && !found_ext) {
                found_ext = true;
                out->tls = ep->tls;
                out->has_allowed_ips = ep->nallowed_ips > 0;
            }
            if (ep->proto_l7) {
                if (!found_l7) {
                    found_l7 = true;
                    out->l7 = true;
                    out->protocol = ep->protocol;
                    out->enforce = ep->enforce;
                }
                out->allow_encoded_slash |= ep->allow_encoded_slash;
                out->body_rewrite |= ep->body_rewrite;
            }
        }
    }
    if (out->allow) {
        /* tls: skip is a raw tunnel: nothing is inspected. */
        if (out->tls == POLICY_TLS_SKIP)
            out->l7 = false;
        return 0;
    }
    if (!any) {
        /* The proxy lower-cases the host before deciding; so do reasons. */
        txt_printf(&t, "endpoint %s:%u is not allowed by any policy", hl > 0 ? host : "",
                   req->port);
        return -EACCES;
    }
    l4_binary_reason(p, req, host, (size_t)hl, &t);
    return -EACCES;
}

/* ------------------------------------------------------------------ L7 */

struct qsrc {
    const char *raw, *raw_end; /* raw query, or NULL */
    const struct policy_query_param *params;
    size_t n;
};

static bool
qglob_any(const struct pol_qmatch *m, const char *v, size_t vl)
{
    for (size_t g = 0; g < m->nglobs; g++)
        if (policy_glob_exec(m->globs[g], v, vl) == 1)
            return true;
    return false;
}

/* Allow side: the key is present with >= 1 value and every value matches.
 * Deny side: the key is present and at least one value matches. */
static bool
q_holds(const struct qsrc *q, const struct pol_qmatch *m, bool deny)
{
    size_t count = 0;

    if (q->raw) {
        char key[POLICY_PATH_MAX + 1], val[POLICY_PATH_MAX + 1];
        const char *pos = q->raw;
        size_t kl, vl;

        while (policy_query_next(&pos, q->raw_end, key, &kl, val, &vl) == 1) {
            if (strcmp(key, m->key) != 0)
                continue;
            count++;
            if (qglob_any(m, val, vl)) {
                if (deny)
                    return true;
            } else if (!deny) {
                return false;
            }
        }
    } else {
        for (size_t i = 0; i < q->n; i++) {
            if (!q->params[i].key || strcmp(q->params[i].key, m->key) != 0)
                continue;
            for (size_t v = 0; v < q->params[i].nvalues; v++) {
                const char *s = q->params[i].values[v] ? q->params[i].values[v] : "";
                count++;
                if (qglob_any(m, s, strlen(s))) {
                    if (deny)
                        return true;
                } else if (!deny) {
                    return false;
                }
            }
        }
    }
    return deny ? false : count > 0;
}

static bool
method_matches(const char *rule, const char *m)
{
    if (!rule || !*rule || !m)
        return false;
    if (!strcmp(rule, "*"))
        return true;
    if (!strcasecmp(rule, m))
        return true;
    return !strcmp(rule, "GET") && !strcasecmp(m, "HEAD");
}

static bool
rule_matches(const struct pol_l7rule *r, const char *method, const char *path, size_t plen,
             const struct qsrc *q, bool deny)
{
    if (!method_matches(r->method, method))
        return false;
    if (!r->path_any && !(r->path && policy_glob_exec(r->path, path, plen) == 1))
        return false;
    for (size_t i = 0; i < r->nquery; i++)
        if (!q_holds(q, &r->query[i], deny))
            return false;
    return true;
}

/* Endpoint path selector, selection semantics: '*' crosses '/', "/x/ **"
 * also matches "/x". */
static bool
sel_rust(const struct pol_endpoint *ep, const char *path, size_t plen)
{
    size_t sl;

    if (!*ep->path_sel)
        return true;
    sl = strlen(ep->path_sel);
    if (sl >= 3 && !strcmp(ep->path_sel + sl - 3, "/**") && plen == sl - 3 &&
        !memcmp(path, ep->path_sel, plen))
        return true;
    return policy_glob_exec(ep->path_rust, path, plen) == 1;
}

static bool
sel_rego(const struct pol_endpoint *ep, const char *path, size_t plen)
{
    return !*ep->path_sel || policy_glob_exec(ep->path_rego, path, plen) == 1;
}

int
policy_decide_l7(const struct policy *p, const struct policy_request *req,
                 struct policy_l7_result *out)
{
    char host[HOST_MAX];
    int hl = norm_host(req->host, host);
    struct cand_it it;
    const struct pol_endpoint *ep, *sel = NULL, *first_ext = NULL;
    bool any = false, l7 = false, encoded_ok = false, allowed = false, denied = false;
    int cached_block = -1;
    bool cached_ok = false;
    const char *method = req->method ? req->method : "";
    const char *path, *why = NULL, *rawq = NULL;
    size_t plen;
    struct qsrc q;
    struct txt t;

    out->verdict = POLICY_L7_DENY;
    out->policy = NULL;
    out->enforce = true;
    out->path[0] = '\0';
    txt_init(&t, out->reason, sizeof(out->reason));
    if (hl > 0 && port_ok(req->port)) {
        cand_init(&it, p, host, (size_t)hl);
        while ((ep = cand_next(&it, host, (size_t)hl, req->port))) {
            if ((int)ep->block != cached_block) {
                cached_block = (int)ep->block;
                cached_ok = block_admits(&p->blocks[ep->block], req);
            }
            if (!cached_ok)
                continue;
            if (!any)
                out->policy = p->blocks[ep->block].key;
            any = true;
            if (ep->extended && !first_ext)
                first_ext = ep;
            if (ep->proto_l7) {
                l7 = true;
                encoded_ok |= ep->allow_encoded_slash;
            }
        }
    }
    if (!any) {
        txt_printf(&t, "connection to %s:%u is not allowed by policy", hl > 0 ? host : "",
                   req->port);
        return -EACCES;
    }
    if (!l7 || (first_ext && first_ext->tls == POLICY_TLS_SKIP)) {
        /* L4-only or a tls: skip tunnel: requests are relayed unchecked. */
        out->verdict = POLICY_L7_ALLOW;
        return 0;
    }
    out->policy = NULL;

    /* The canonical path and the query. */
    if (req->raw_target) {
        int rc = policy_canon_path(req->raw_target, strlen(req->raw_target), encoded_ok, out->path,
                                   sizeof(out->path), &rawq, &why);
        if (rc < 0) {
            out->path[0] = '\0';
            txt_printf(&t, "request-target must be canonical: %s", why ? why : "rejected");
            return -EACCES;
        }
    } else {
        const char *pp = req->path && *req->path ? req->path : "/";
        if (strlen(pp) > POLICY_PATH_MAX || pp[0] != '/') {
            txt_printf(&t, "request-target must be canonical: %s",
                       pp[0] != '/' ? "path must start with '/'" : "path longer than 4096 bytes");
            return -EACCES;
        }
        memcpy(out->path, pp, strlen(pp) + 1);
    }
    path = out->path;
    plen = strlen(path);
    memset(&q, 0, sizeof(q));
    if (rawq) {
        char key[POLICY_PATH_MAX + 1], val[POLICY_PATH_MAX + 1];
        const char *pos = rawq, *end = rawq + strlen(rawq);
        size_t kl, vl;
        int r;

        while ((r = policy_query_next(&pos, end, key, &kl, val, &vl)) == 1)
            ;
        if (r < 0) {
            txt_printf(&t, "request-target must be canonical: invalid query string");
            return -EACCES;
        }
        q.raw = rawq;
        q.raw_end = end;
    } else {
        q.params = req->query;
        q.n = req->nquery;
    }

    /* Select the endpoint config: highest selector specificity wins. */
    cand_init(&it, p, host, (size_t)hl);
    cached_block = -1;
    while ((ep = cand_next(&it, host, (size_t)hl, req->port))) {
        if ((int)ep->block != cached_block) {
            cached_block = (int)ep->block;
            cached_ok = block_admits(&p->blocks[ep->block], req);
        }
        if (!cached_ok || !ep->proto_l7 || !sel_rust(ep, path, plen))
            continue;
        if (!sel || ep->path_spec > sel->path_spec)
            sel = ep;
    }
    if (!sel) {
        txt_printf(&t, "no L7 endpoint path matched request");
        /* The reference's forward proxy words it differently; say both. */
        if (req->transport == POLICY_TRANSPORT_FORWARD)
            txt_printf(&t, ": %s %s did not match an L7 endpoint path", method, path);
        return -EACCES;
    }
    out->policy = p->blocks[sel->block].key;
    out->enforce = sel->enforce;
    if (!sel->allow_encoded_slash && strstr(path, "%2F")) {
        txt_printf(&t, "request-target must be canonical: percent-encoded slash (%%2F) in path");
        return -EACCES;
    }
    if (sel->protocol == POLICY_PROTO_WEBSOCKET && strcasecmp(method, "WEBSOCKET_TEXT") != 0 &&
        !(!strcasecmp(method, "GET") && req->websocket_upgrade)) {
        txt_printf(&t, "websocket endpoint requires a valid WebSocket upgrade request");
        return -EACCES;
    }

    /* Every admitted endpoint whose selector covers the path contributes
     * its allow and deny rules; deny wins. */
    cand_init(&it, p, host, (size_t)hl);
    cached_block = -1;
    while ((ep = cand_next(&it, host, (size_t)hl, req->port))) {
        if ((int)ep->block != cached_block) {
            cached_block = (int)ep->block;
            cached_ok = block_admits(&p->blocks[ep->block], req);
        }
        if (!cached_ok || (!ep->nallow && !ep->ndeny) || !sel_rego(ep, path, plen))
            continue;
        for (size_t i = 0; !allowed && i < ep->nallow; i++)
            allowed = rule_matches(&ep->allow[i], method, path, plen, &q, false);
        for (size_t i = 0; !denied && i < ep->ndeny; i++)
            denied = rule_matches(&ep->deny[i], method, path, plen, &q, true);
        if (denied)
            break;
    }
    if (allowed && !denied) {
        out->verdict = POLICY_L7_ALLOW;
        return 0;
    }
    txt_printf(&t, "%s %s %s", method, path,
               denied ? "blocked by deny rule" : "not permitted by policy");
    if (!sel->enforce) {
        out->verdict = POLICY_L7_AUDIT;
        return 0;
    }
    return -EACCES;
}

/* ------------------------------------------------------------------ SSRF */

const char *
policy_ssrf_kind(enum policy_ssrf k)
{
    switch (k) {
    case POLICY_SSRF_OK: return "";
    case POLICY_SSRF_INTERNAL: return "internal address";
    case POLICY_SSRF_ALLOWED_IPS: return "allowed_ips check failed";
    case POLICY_SSRF_INVALID_ALLOWED: return "invalid allowed_ips in policy";
    case POLICY_SSRF_DECLARED: return "declared endpoint check failed";
    case POLICY_SSRF_TRUSTED_GATEWAY: return "trusted-gateway check failed";
    }
    return "internal address";
}

static bool
control_plane_port(unsigned port)
{
    return port == 2379 || port == 2380 || port == 6443 || port == 10250 || port == 10255;
}

static bool
addr_eq(const struct policy_addr *a, const struct policy_addr *b)
{
    return a->family == b->family && !memcmp(a->a, b->a, a->family == 4 ? 4 : 16);
}

enum policy_ssrf
policy_ssrf_check(const struct policy *p, const struct policy_request *req,
                  const struct policy_addr *addrs, size_t n,
                  const struct policy_addr *trusted_gateway)
{
    char host[HOST_MAX];
    int hl = norm_host(req->host, host);
    struct cand_it it;
    const struct pol_endpoint *ep, *ext = NULL;
    bool declared = false, any = false;
    int cached_block = -1;
    bool cached_ok = false;
    struct policy_addr lit;

    if (n == 0 || hl <= 0)
        return POLICY_SSRF_INTERNAL;
    /* 1. Trusted gateway alias. */
    if (trusted_gateway &&
        (!strcmp(host, "host.openshell.internal") || !strcmp(host, "host.containers.internal") ||
         !strcmp(host, "host.docker.internal"))) {
        static const struct policy_addr metadata = { 4, { 169, 254, 169, 254 } };
        struct pol_cidr ll4, ll6;

        policy_cidr_parse("169.254.0.0/16", &ll4);
        policy_cidr_parse("fe80::/10", &ll6);
        if (control_plane_port(req->port) || addr_eq(trusted_gateway, &metadata) ||
            !(policy_cidr_contains(&ll4, trusted_gateway) ||
              policy_cidr_contains(&ll6, trusted_gateway)))
            return POLICY_SSRF_TRUSTED_GATEWAY;
        for (size_t i = 0; i < n; i++)
            if (!addr_eq(&addrs[i], trusted_gateway))
                return POLICY_SSRF_TRUSTED_GATEWAY;
        return POLICY_SSRF_OK;
    }
    if (port_ok(req->port)) {
        cand_init(&it, p, host, (size_t)hl);
        while ((ep = cand_next(&it, host, (size_t)hl, req->port))) {
            if ((int)ep->block != cached_block) {
                cached_block = (int)ep->block;
                cached_ok = block_admits(&p->blocks[ep->block], req);
            }
            if (!cached_ok)
                continue;
            any = true;
            if (ep->extended && !ext)
                ext = ep;
            if (!ep->hostg && *ep->host)
                declared = true;
        }
    }
    if (!any)
        return POLICY_SSRF_INTERNAL;
    /* 2. Explicit allowed_ips. */
    if (ext && ext->nallowed_ips) {
        if (control_plane_port(req->port))
            return POLICY_SSRF_ALLOWED_IPS;
        for (size_t i = 0; i < n; i++) {
            bool in = false;
            if (policy_addr_always_blocked(&addrs[i]))
                return POLICY_SSRF_ALLOWED_IPS;
            for (size_t c = 0; !in && c < ext->nallowed_ips; c++)
                in = policy_cidr_contains(&ext->allowed_ips[c], &addrs[i]);
            if (!in)
                return POLICY_SSRF_ALLOWED_IPS;
        }
        return POLICY_SSRF_OK;
    }
    /* 3. The host is an IP literal: only that address (never a loopback,
     * link-local or unspecified one). */
    if (policy_addr_parse(host, &lit) == 0) {
        if (policy_addr_always_blocked(&lit))
            return POLICY_SSRF_INTERNAL;
        if (control_plane_port(req->port))
            return POLICY_SSRF_INTERNAL;
        for (size_t i = 0; i < n; i++)
            if (!addr_eq(&addrs[i], &lit) || policy_addr_always_blocked(&addrs[i]))
                return POLICY_SSRF_INTERNAL;
        return POLICY_SSRF_OK;
    }
    /* 4. Exactly declared host: private addresses allowed, never the
     * always-blocked ones or the control plane. */
    if (declared) {
        if (control_plane_port(req->port))
            return POLICY_SSRF_DECLARED;
        for (size_t i = 0; i < n; i++)
            if (policy_addr_always_blocked(&addrs[i]))
                return POLICY_SSRF_DECLARED;
        return POLICY_SSRF_OK;
    }
    /* 5. Public only. */
    for (size_t i = 0; i < n; i++)
        if (policy_addr_internal(&addrs[i]))
            return POLICY_SSRF_INTERNAL;
    return POLICY_SSRF_OK;
}

/* ------------------------------------------------------------------ all in one */

#define DECIDE_MAX_ADDRS 64

int
policy_decide(const struct policy *p, const struct policy_request *req, struct policy_decision *out)
{
    struct policy_l4_result l4;
    struct policy_l7_result l7;
    struct txt t;

    memset(out, 0, offsetof(struct policy_decision, reason));
    txt_init(&t, out->reason, sizeof(out->reason));
    if (policy_decide_l4(p, req, &l4) < 0) {
        txt_printf(&t, "%s", l4.reason);
        return -EACCES;
    }
    out->policy = l4.policy;
    /* SSRF: at connection time (an "l7" request rides an admitted
     * connection; its addresses were checked then, unless given again). */
    if (req->transport != POLICY_TRANSPORT_L7 || req->nresolved_ips) {
        struct policy_addr addrs[DECIDE_MAX_ADDRS];
        size_t n = 0;
        enum policy_ssrf k = POLICY_SSRF_OK;
        bool check = true;

        if (req->nresolved_ips) {
            for (size_t i = 0; i < req->nresolved_ips && n < DECIDE_MAX_ADDRS; i++) {
                if (policy_addr_parse(req->resolved_ips[i], &addrs[n]) < 0) {
                    txt_printf(&t, "invalid resolved address '%s'",
                               req->resolved_ips[i] ? req->resolved_ips[i] : "");
                    return -EACCES;
                }
                n++;
            }
        } else if (policy_addr_parse(req->host, &addrs[0]) == 0) {
            n = 1;
        } else {
            check = false; /* a public address: nothing to refuse */
        }
        if (check)
            k = policy_ssrf_check(p, req, addrs, n, NULL);
        if (k != POLICY_SSRF_OK) {
            char host[HOST_MAX];
            int hl = norm_host(req->host, host);

            txt_printf(&t, "CONNECT %s:%u blocked: %s", hl > 0 ? host : "", req->port,
                       policy_ssrf_kind(k));
            return -EACCES;
        }
    }
    out->allow = true;
    if (!req->method || !l4.l7)
        return 0;
    out->l7_ran = true;
    policy_decide_l7(p, req, &l7);
    out->l7 = l7.verdict;
    if (l7.verdict == POLICY_L7_ALLOW)
        return 0;
    txt_printf(&t, "%s", l7.reason);
    if (l7.verdict == POLICY_L7_DENY) {
        out->allow = false;
        return -EACCES;
    }
    return 0;
}

void
policy_decision_json(const struct policy_decision *d, struct buf *out)
{
    static const char *const l7s[] = { "allow", "audit", "deny" };

    buf_puts(out, "{\"decision\":");
    buf_puts(out, d->allow ? "\"allow\"" : "\"deny\"");
    buf_puts(out, ",\"policy\":");
    if (d->policy)
        buf_put_json_str(out, d->policy, strlen(d->policy));
    else
        buf_puts(out, "null");
    buf_puts(out, ",\"l7_decision\":");
    if (d->l7_ran)
        buf_printf(out, "\"%s\"", l7s[d->l7]);
    else
        buf_puts(out, "null");
    buf_puts(out, ",\"reason\":");
    if (d->reason[0])
        buf_put_json_str(out, d->reason, strlen(d->reason));
    else
        buf_puts(out, "null");
    buf_putc(out, '}');
}
