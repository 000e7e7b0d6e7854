/*
 * px_cred.c: the credentials document and placeholder resolution for the
 * egress proxy (see include/px_cred.h and doc/providers.md).
 */
#include "px_cred.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <mbedtls/base64.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "buf.h"
#include "xfuncs.h"

#define PX_CRED_KEY_MAX 128
#define PX_CRED_MAX_ENDPOINTS 64
#define PX_CRED_MAX_KEYS 256

struct px_cred_ep {
    char *host; /* lowercase; "*.suffix" matches one or more labels */
    unsigned port;
};

struct px_cred {
    char *key;
    char *value;
    size_t value_len;
    char *provider;
    struct px_cred_ep *eps;
    size_t neps;
};

struct px_creds {
    unsigned refs;
    uint64_t revision;
    struct px_cred *v;
    size_t n;
    bool have_route;
    struct px_route route;
    char *route_model, *route_key, *route_provider;
};

static void
px_creds_free(struct px_creds *c)
{
    for (size_t i = 0; i < c->n; i++) {
        struct px_cred *k = &c->v[i];

        for (size_t j = 0; j < k->neps; j++)
            free(k->eps[j].host);
        free(k->eps);
        free(k->key);
        if (k->value)
            explicit_bzero(k->value, k->value_len);
        free(k->value);
        free(k->provider);
    }
    free(c->v);
    if (c->route_key)
        explicit_bzero(c->route_key, strlen(c->route_key));
    free(c->route_key);
    free(c->route_model);
    free(c->route_provider);
    free(c);
}

struct px_creds *
px_creds_ref(struct px_creds *c)
{
    if (c)
        c->refs++;
    return c;
}

void
px_creds_unref(struct px_creds *c)
{
    if (c && --c->refs == 0)
        px_creds_free(c);
}

uint64_t
px_creds_revision(const struct px_creds *c)
{
    return c ? c->revision : 0;
}

size_t
px_creds_count(const struct px_creds *c)
{
    return c ? c->n : 0;
}

const struct px_route *
px_creds_route(const struct px_creds *c)
{
    return c && c->have_route ? &c->route : NULL;
}

static bool
px_key_char(int ch)
{
    return isalnum(ch) || ch == '_';
}

static bool
px_key_valid(const char *k)
{
    size_t n = strlen(k);

    if (n == 0 || n > PX_CRED_KEY_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!px_key_char((unsigned char)k[i]))
            return false;
    return true;
}

/* "https://host[:port][/prefix]" into R. */
static int
px_route_url(struct px_route *r, const char *url, struct err *e)
{
    const char *p, *hs, *he, *slash;
    size_t n;

    if (strncmp(url, "https://", 8) == 0) {
        r->https = true;
        p = url + 8;
    } else if (strncmp(url, "http://", 7) == 0) {
        r->https = false;
        p = url + 7;
    } else {
        return err_set(e, EINVAL, "inference.base_url: expected http:// or https://");
    }
    slash = strchr(p, '/');
    if (!slash)
        slash = p + strlen(p);
    if (memchr(p, '@', (size_t)(slash - p)) || strpbrk(url, "?# \t\r\n"))
        return err_set(e, EINVAL, "inference.base_url: no user info, query or fragment allowed");
    r->port = r->https ? 443 : 80;
    if (*p == '[') {
        hs = p + 1;
        he = memchr(hs, ']', (size_t)(slash - hs));
        if (!he)
            return err_set(e, EINVAL, "inference.base_url: bad IPv6 literal");
        p = he + 1;
    } else {
        hs = p;
        he = memchr(p, ':', (size_t)(slash - p));
        if (!he)
            he = slash;
        p = he;
    }
    n = (size_t)(he - hs);
    if (n == 0 || n >= sizeof(r->host))
        return err_set(e, EINVAL, "inference.base_url: bad host");
    memcpy(r->host, hs, n);
    r->host[n] = '\0';
    for (char *q = r->host; *q; q++)
        *q = (char)tolower((unsigned char)*q);
    if (*p == ':') {
        char *end;
        unsigned long v = strtoul(p + 1, &end, 10);

        if (end != slash || v == 0 || v > 65535)
            return err_set(e, EINVAL, "inference.base_url: bad port");
        r->port = (unsigned)v;
    } else if (p != slash) {
        return err_set(e, EINVAL, "inference.base_url: bad authority");
    }
    n = strlen(slash);
    while (n && slash[n - 1] == '/')
        n--;
    if (n >= sizeof(r->prefix))
        return err_set(e, EINVAL, "inference.base_url: path too long");
    memcpy(r->prefix, slash, n);
    r->prefix[n] = '\0';
    return 0;
}

static const char *
px_jstr(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);

    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static int
px_parse_route(struct px_creds *c, const cJSON *inf, struct err *e)
{
    struct px_route *r = &c->route;
    const char *api = px_jstr(inf, "api"), *url = px_jstr(inf, "base_url");
    const char *model = px_jstr(inf, "model"), *key = px_jstr(inf, "api_key");
    const char *auth = px_jstr(inf, "auth"), *prov = px_jstr(inf, "provider");
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(inf, "timeout_seconds");
    int rc;

    if (!cJSON_IsObject(inf))
        return err_set(e, EINVAL, "inference: expected an object or null");
    if (!api || (strcmp(api, "openai") && strcmp(api, "anthropic")))
        return err_set(e, EINVAL, "inference.api: expected \"openai\" or \"anthropic\"");
    r->api = strcmp(api, "openai") == 0 ? PX_API_OPENAI : PX_API_ANTHROPIC;
    if (!url)
        return err_set(e, EINVAL, "inference.base_url: required");
    if ((rc = px_route_url(r, url, e)) < 0)
        return rc;
    if (!model || !*model || strlen(model) > 512)
        return err_set(e, EINVAL, "inference.model: required (at most 512 bytes)");
    if (!key || strpbrk(key, "\r\n"))
        return err_set(e, EINVAL, "inference.api_key: required, without CR or LF");
    if (!auth)
        r->auth_bearer = r->api == PX_API_OPENAI;
    else if (strcmp(auth, "bearer") == 0)
        r->auth_bearer = true;
    else if (strcmp(auth, "x-api-key") == 0)
        r->auth_bearer = false;
    else
        return err_set(e, EINVAL, "inference.auth: expected \"bearer\" or \"x-api-key\"");
    r->timeout_s = 60;
    if (t) {
        if (!cJSON_IsNumber(t) || t->valuedouble < 1 || t->valuedouble > 3600)
            return err_set(e, EINVAL, "inference.timeout_seconds: expected 1..3600");
        r->timeout_s = (unsigned)t->valuedouble;
    }
    c->route_model = xstrdup(model);
    c->route_key = xstrdup(key);
    c->route_provider = xstrdup(prov ? prov : "");
    r->model = c->route_model;
    r->api_key = c->route_key;
    r->provider = c->route_provider;
    c->have_route = true;
    return 0;
}

/* "vREV_KEY" and "s<64 hex>_KEY" are placeholder forms (reference 8.1): a
 * key spelled like one would be ambiguous. */
static bool
px_key_reserved(const char *k)
{
    size_t n;

    if (k[0] == 'v') {
        n = strspn(k + 1, "0123456789");
        return n > 0 && k[1 + n] == '_';
    }
    if (k[0] == 's') {
        n = strspn(k + 1, "0123456789abcdefABCDEF");
        return n == 64 && k[1 + n] == '_';
    }
    return false;
}

static int
px_parse_cred(struct px_cred *k, const cJSON *o, size_t idx, struct err *e)
{
    const char *key = px_jstr(o, "key"), *prov = px_jstr(o, "provider");
    const cJSON *val = cJSON_GetObjectItemCaseSensitive(o, "value");
    const cJSON *eps = cJSON_GetObjectItemCaseSensitive(o, "endpoints"), *ep;

    if (!cJSON_IsObject(o))
        return err_set(e, EINVAL, "credentials[%zu]: expected an object", idx);
    if (!key || !px_key_valid(key))
        return err_set(e, EINVAL, "credentials[%zu].key: expected [A-Za-z0-9_], 1-%d bytes", idx,
                       PX_CRED_KEY_MAX);
    /* "vREV_KEY" and "s<64 hex>_KEY" are placeholder forms (reference 8.1):
     * a key spelled like one would be ambiguous. */
    if (px_key_reserved(key))
        return err_set(e, EINVAL,
                       "credentials[%zu].key: v<digits>_ and s<64 hex>_ prefixes are reserved",
                       idx);
    if (!cJSON_IsString(val))
        return err_set(e, EINVAL, "credentials[%zu].value: expected a string", idx);
    if (eps && !cJSON_IsArray(eps))
        return err_set(e, EINVAL, "credentials[%zu].endpoints: expected an array", idx);
    if (cJSON_GetArraySize(eps) > PX_CRED_MAX_ENDPOINTS)
        return err_set(e, EINVAL, "credentials[%zu].endpoints: more than %d", idx,
                       PX_CRED_MAX_ENDPOINTS);
    k->key = xstrdup(key);
    /* (A value with an escaped NUL was refused before parsing: see
     * buf_json_has_nul_escape.) */
    k->value = xstrdup(val->valuestring);
    k->value_len = strlen(k->value);
    k->provider = xstrdup(prov ? prov : "");
    k->eps = xcalloc((size_t)cJSON_GetArraySize(eps) + 1, sizeof(*k->eps));
    cJSON_ArrayForEach(ep, eps)
    {
        const char *h = px_jstr(ep, "host");
        const cJSON *port = cJSON_GetObjectItemCaseSensitive(ep, "port");
        char *lh;

        if (!h || !*h || strlen(h) > 253 || strpbrk(h, " /:@?#"))
            return err_set(e, EINVAL, "credentials[%zu].endpoints: bad host", idx);
        if (!cJSON_IsNumber(port) || port->valuedouble < 1 || port->valuedouble > 65535)
            return err_set(e, EINVAL, "credentials[%zu].endpoints: port must be 1-65535", idx);
        lh = xstrdup(h);
        for (char *q = lh; *q; q++)
            *q = (char)tolower((unsigned char)*q);
        if (strchr(lh, '*') && (strncmp(lh, "*.", 2) != 0 || strchr(lh + 2, '*'))) {
            free(lh);
            return err_set(e, EINVAL, "credentials[%zu].endpoints: only a leading '*.' wildcard",
                           idx);
        }
        k->eps[k->neps].host = lh;
        k->eps[k->neps].port = (unsigned)port->valuedouble;
        k->neps++;
    }
    return 0;
}

int
px_creds_parse(const char *json, size_t len, struct px_creds **out, struct err *e)
{
    cJSON *root;
    const cJSON *rev, *list, *item, *inf;
    struct px_creds *c;
    int rc = 0;

    *out = NULL;
    if (len > PX_CRED_DOC_MAX)
        return err_set(e, EINVAL, "credentials document over %d bytes", PX_CRED_DOC_MAX);
    if (buf_json_has_nul_escape(json, len))
        return err_set(e, EINVAL, "credentials document: a string holds a NUL (\\u0000)");
    root = cJSON_ParseWithLength(json, len);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return err_set(e, EINVAL, "credentials document: not a JSON object");
    }
    c = xcalloc(1, sizeof(*c));
    c->refs = 1;
    rev = cJSON_GetObjectItemCaseSensitive(root, "revision");
    if (!cJSON_IsNumber(rev) || rev->valuedouble < 0) {
        rc = err_set(e, EINVAL, "credentials document: revision must be a number >= 0");
        goto out;
    }
    c->revision = (uint64_t)rev->valuedouble;
    list = cJSON_GetObjectItemCaseSensitive(root, "credentials");
    if (list && !cJSON_IsNull(list) && !cJSON_IsArray(list)) {
        rc = err_set(e, EINVAL, "credentials: expected an array");
        goto out;
    }
    if (cJSON_GetArraySize(list) > PX_CRED_MAX_KEYS) {
        rc = err_set(e, EINVAL, "credentials: more than %d", PX_CRED_MAX_KEYS);
        goto out;
    }
    c->v = xcalloc((size_t)cJSON_GetArraySize(list) + 1, sizeof(*c->v));
    cJSON_ArrayForEach(item, list)
    {
        if ((rc = px_parse_cred(&c->v[c->n], item, c->n, e)) < 0) {
            c->n++; /* free what was filled */
            goto out;
        }
        for (size_t i = 0; i < c->n; i++)
            if (strcmp(c->v[i].key, c->v[c->n].key) == 0) {
                c->n++;
                rc = err_set(e, EINVAL, "credentials[%zu].key: duplicate", c->n - 1);
                goto out;
            }
        c->n++;
    }
    inf = cJSON_GetObjectItemCaseSensitive(root, "inference");
    if (inf && !cJSON_IsNull(inf))
        rc = px_parse_route(c, inf, e);
out:
    cJSON_Delete(root);
    if (rc < 0) {
        px_creds_free(c);
        return rc;
    }
    *out = c;
    return 0;
}

/* ------------------------------------------------------------ binding */

static bool
px_host_match(const char *pat, const char *host)
{
    size_t hl, pl;

    if (strncmp(pat, "*.", 2) != 0)
        return strcasecmp(pat, host) == 0;
    /* "*.example.com": at least one label before ".example.com". */
    pl = strlen(pat + 1);
    hl = strlen(host);
    return hl > pl && strcasecmp(host + hl - pl, pat + 1) == 0;
}

static bool
px_cred_bound(const struct px_cred *k, const char *host, unsigned port)
{
    for (size_t i = 0; i < k->neps; i++)
        if (k->eps[i].port == port && px_host_match(k->eps[i].host, host))
            return true;
    return false;
}

bool
px_creds_bound_to(const struct px_creds *c, const char *host, unsigned port)
{
    for (size_t i = 0; c && i < c->n; i++)
        if (px_cred_bound(&c->v[i], host, port))
            return true;
    return false;
}

/* ------------------------------------------------------------ placeholders */

/* At P (which starts with the marker) parse the key: *KEY and its length,
 * and the placeholder's total length *PLEN. Returns false when no key
 * follows (malformed). */
static bool
px_ph_parse(const char *p, size_t n, const char **key, size_t *klen, size_t *plen)
{
    size_t m = strlen(PX_CRED_MARKER), i = m;

    while (i < n && px_key_char((unsigned char)p[i]))
        i++;
    if (i == m)
        return false;
    *key = p + m;
    *klen = i - m;
    *plen = i;
    /* Revisioned form "vREV_KEY": the current value of KEY. */
    if ((*key)[0] == 'v' && *klen > 2 && isdigit((unsigned char)(*key)[1])) {
        size_t j = 1;

        while (j < *klen && isdigit((unsigned char)(*key)[j]))
            j++;
        if (j < *klen - 1 && (*key)[j] == '_') {
            *key += j + 1;
            *klen -= j + 1;
        }
    }
    return true;
}

/* Resolve KEY for X's destination into *V. */
static enum px_cred_status
px_resolve_key(struct px_cred_ctx *x, const char *key, size_t klen, const struct px_cred **v)
{
    const struct px_creds *c = x->creds;

    for (size_t i = 0; c && i < c->n; i++) {
        const struct px_cred *k = &c->v[i];

        if (strlen(k->key) != klen || memcmp(k->key, key, klen) != 0)
            continue;
        if (!px_cred_bound(k, x->host, x->port)) {
            buf_fmt_fixed(x->why, sizeof(x->why), "a credential placeholder is not bound to %s:%u",
                          x->host, x->port);
            return PX_CRED_MISMATCH;
        }
        /* Header injection guard: CR, LF (and NUL, cut by the parser) never
         * leave the proxy. */
        if (memchr(k->value, '\r', k->value_len) || memchr(k->value, '\n', k->value_len)) {
            buf_copy_fixed(x->why, sizeof(x->why), "credential value contains CR or LF: refused");
            return PX_CRED_UNAVAILABLE;
        }
        *v = k;
        return PX_CRED_OK;
    }
    buf_copy_fixed(x->why, sizeof(x->why), "credential placeholder does not resolve");
    return PX_CRED_UNAVAILABLE;
}

/* Where to encode: in a path segment, a query value, a JSON string. */
enum px_enc { PX_ENC_NONE, PX_ENC_PATH, PX_ENC_QUERY, PX_ENC_JSON };

static void
px_pct(struct buf *out, const char *v, size_t n, enum px_enc enc)
{
    static const char hex[] = "0123456789ABCDEF";

    if (enc == PX_ENC_JSON) {
        struct buf j = BUF_INIT;

        buf_put_json_str(&j, v, n); /* "...": drop the quotes */
        buf_append(out, j.data + 1, j.len - 2);
        explicit_bzero(j.data, j.len);
        buf_fini(&j);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)v[i];
        bool keep = isalnum(ch) || strchr("-._~", ch);

        if (enc == PX_ENC_PATH && ch && strchr("!$&'()*+,;=:@", ch))
            keep = true;
        if (enc == PX_ENC_NONE || keep) {
            buf_putc(out, (char)ch);
        } else {
            buf_putc(out, '%');
            buf_putc(out, hex[ch >> 4]);
            buf_putc(out, hex[ch & 15]);
        }
    }
}

/* Replace every placeholder in P[0..N) into OUT, encoded per ENC. */
static enum px_cred_status
px_subst(struct px_cred_ctx *x, const char *p, size_t n, enum px_enc enc, bool in_target,
         struct buf *out)
{
    size_t m = strlen(PX_CRED_MARKER), i = 0;

    while (i < n) {
        const char *hit = NULL, *key;
        size_t klen, plen;
        const struct px_cred *v = NULL;
        enum px_cred_status st;

        for (size_t j = i; j + m <= n; j++)
            if (memcmp(p + j, PX_CRED_MARKER, m) == 0) {
                hit = p + j;
                break;
            }
        if (!hit) {
            buf_append(out, p + i, n - i);
            break;
        }
        buf_append(out, p + i, (size_t)(hit - (p + i)));
        if (!px_ph_parse(hit, n - (size_t)(hit - p), &key, &klen, &plen)) {
            buf_copy_fixed(x->why, sizeof(x->why), "malformed credential placeholder");
            return in_target ? PX_CRED_BAD_SYNTAX : PX_CRED_UNAVAILABLE;
        }
        if ((st = px_resolve_key(x, key, klen, &v)) != PX_CRED_OK)
            return st;
        if (enc == PX_ENC_PATH) {
            /* A value that would change the path's structure is refused. */
            for (size_t k = 0; k < v->value_len; k++) {
                unsigned char ch = (unsigned char)v->value[k];

                if (ch < 0x20 || ch == 0x7f || strchr("/\\?#%", ch) ||
                    (ch == '.' && k + 1 < v->value_len && v->value[k + 1] == '.')) {
                    buf_copy_fixed(x->why, sizeof(x->why),
                                   "credential value unfit for a URL path: refused");
                    return PX_CRED_UNAVAILABLE;
                }
            }
        }
        px_pct(out, v->value, v->value_len, enc);
        x->injected++;
        i = (size_t)(hit - p) + plen;
    }
    return PX_CRED_OK;
}

enum px_cred_status
px_cred_target(struct px_cred_ctx *x, const char *target, struct buf *out)
{
    const char *q = strchr(target, '?');
    size_t plen = q ? (size_t)(q - target) : strlen(target);
    enum px_cred_status st;

    st = px_subst(x, target, plen, PX_ENC_PATH, true, out);
    if (st != PX_CRED_OK || !q)
        return st;
    buf_putc(out, '?');
    for (const char *p = q + 1; *p;) {
        const char *amp = strchr(p, '&'), *end = amp ? amp : p + strlen(p);
        const char *eq = memchr(p, '=', (size_t)(end - p));

        if (eq) {
            buf_append(out, p, (size_t)(eq + 1 - p));
            if ((st = px_subst(x, eq + 1, (size_t)(end - eq - 1), PX_ENC_QUERY, true, out)))
                return st;
        } else {
            buf_append(out, p, (size_t)(end - p));
        }
        if (!amp)
            break;
        buf_putc(out, '&');
        p = amp + 1;
    }
    return PX_CRED_OK;
}

enum px_cred_status
px_cred_body(struct px_cred_ctx *x, const char *p, size_t n, const char *ct, struct buf *out)
{
    enum px_enc enc;

    if (ct && strcasestr(ct, "json"))
        enc = PX_ENC_JSON;
    else if (ct && strcasestr(ct, "application/x-www-form-urlencoded"))
        enc = PX_ENC_QUERY;
    else if (!ct || strncasecmp(ct, "text/", 5) == 0)
        enc = PX_ENC_NONE;
    else {
        buf_append(out, p, n);
        return PX_CRED_OK;
    }
    return px_subst(x, p, n, enc, false, out);
}

/* Is P[0..N) exactly one placeholder? */
static bool
px_is_placeholder(const char *p, size_t n)
{
    const char *key;
    size_t klen, plen;

    return n > strlen(PX_CRED_MARKER) && memcmp(p, PX_CRED_MARKER, strlen(PX_CRED_MARKER)) == 0 &&
           px_ph_parse(p, n, &key, &klen, &plen) && plen == n;
}

enum px_cred_status
px_cred_header(struct px_cred_ctx *x, const char *name, const char *value, struct buf *out)
{
    size_t n = strlen(value);
    const char *sp = strchr(value, ' ');
    enum px_cred_status st;

    (void)name;
    /* Basic credentials hide a placeholder in base64: always look inside. */
    if (sp && strncasecmp(value, "Basic ", 6) == 0) {
        size_t dsz = n, esz = 0, dl = 0, el = 0;
        unsigned char *dec = xmalloc(dsz), *enc;
        struct buf plain = BUF_INIT;

        if (mbedtls_base64_decode(dec, dsz, &dl, (const unsigned char *)value + 6, n - 6) != 0 ||
            !px_cred_marker((const char *)dec, dl)) {
            explicit_bzero(dec, dsz);
            free(dec);
            goto plain;
        }
        st = px_subst(x, (const char *)dec, dl, PX_ENC_NONE, false, &plain);
        explicit_bzero(dec, dsz);
        free(dec);
        esz = 4 * (plain.len / 3 + 1) + 1;
        enc = xmalloc(esz);
        if (st == PX_CRED_OK && px_cred_marker(plain.data, plain.len)) {
            buf_copy_fixed(x->why, sizeof(x->why), "credential placeholder left in a header");
            st = PX_CRED_UNAVAILABLE;
        }
        if (st == PX_CRED_OK &&
            mbedtls_base64_encode(enc, esz, &el, (const unsigned char *)plain.data, plain.len) !=
                0) {
            buf_copy_fixed(x->why, sizeof(x->why), "credential too long for Basic auth");
            st = PX_CRED_UNAVAILABLE;
        }
        if (plain.data)
            explicit_bzero(plain.data, plain.len);
        buf_fini(&plain);
        if (st == PX_CRED_OK) {
            buf_append(out, value, 6);
            buf_append(out, enc, el);
        }
        explicit_bzero(enc, esz);
        free(enc);
        return st;
    }
plain:
    if (!px_cred_marker(value, n)) {
        buf_append(out, value, n);
        return PX_CRED_OK;
    }
    if (px_is_placeholder(value, n))
        return px_subst(x, value, n, PX_ENC_NONE, false, out);
    if (sp) {
        /* "Scheme <placeholder>": a token, one space, the placeholder. */
        bool token = sp > value;

        for (const char *p = value; p < sp; p++)
            if (!isalnum((unsigned char)*p) && !strchr("!#$%&'*+-.^_`|~", *p))
                token = false;
        if (token && px_is_placeholder(sp + 1, n - (size_t)(sp + 1 - value))) {
            buf_append(out, value, (size_t)(sp + 1 - value));
            return px_subst(x, sp + 1, n - (size_t)(sp + 1 - value), PX_ENC_NONE, false, out);
        }
    }
    buf_copy_fixed(x->why, sizeof(x->why),
                   "credential placeholder in a header where it cannot be resolved");
    return PX_CRED_UNAVAILABLE;
}

/* ------------------------------------------------------------ detection */

static int
px_hexv(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = tolower(c);
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* Percent-decode (repeatedly: %253A) and lowercase P[0..N) into OUT; maps
 * the alias separators '-' to ':' so one search finds both forms. */
static size_t
px_normalise(const char *p, size_t n, char *out)
{
    size_t o = 0;

    for (size_t i = 0; i < n; i++) {
        int c = (unsigned char)p[i];

        while (c == '%' && i + 2 < n && px_hexv((unsigned char)p[i + 1]) >= 0 &&
               px_hexv((unsigned char)p[i + 2]) >= 0) {
            c = px_hexv((unsigned char)p[i + 1]) * 16 + px_hexv((unsigned char)p[i + 2]);
            i += 2;
        }
        c = tolower(c);
        if (c == '-' || c == '_')
            c = ':';
        out[o++] = (char)c;
    }
    return o;
}

static bool
px_find_norm(const char *p, size_t n)
{
    static const char want[] = "openshell:resolve:env:";
    size_t m = sizeof(want) - 1;

    for (size_t i = 0; i + m <= n; i++)
        if (p[i] == 'o' && memcmp(p + i, want, m) == 0)
            return true;
    return false;
}

bool
px_cred_marker(const char *p, size_t n)
{
    char stackbuf[4608], *tmp = n <= sizeof(stackbuf) ? stackbuf : xmalloc(n);
    bool hit = px_find_norm(tmp, px_normalise(p, n, tmp));

    if (tmp != stackbuf)
        free(tmp);
    return hit;
}

bool
px_cred_scan_feed(struct px_cred_scan *s, const char *p, size_t n)
{
    size_t keep = sizeof(s->tail);

    while (!s->hit && n) {
        char work[sizeof(s->tail) + 4096];
        size_t take = n < 4096 ? n : 4096, total;

        memcpy(work, s->tail, s->ntail);
        memcpy(work + s->ntail, p, take);
        total = s->ntail + take;
        if (px_cred_marker(work, total))
            s->hit = true;
        /* Keep the last bytes: a marker split across feeds (even fully
         * percent-encoded, 66 bytes) is seen whole next time. */
        s->ntail = total < keep ? total : keep;
        memcpy(s->tail, work + total - s->ntail, s->ntail);
        p += take;
        n -= take;
    }
    return s->hit;
}

void
px_cred_redact(const char *in, char *out, size_t size)
{
    struct buf b = BUF_INIT;
    size_t m = strlen(PX_CRED_MARKER);

    for (const char *p = in; *p;) {
        const char *hit = strstr(p, PX_CRED_MARKER);

        if (!hit) {
            buf_puts(&b, p);
            break;
        }
        buf_append(&b, p, (size_t)(hit - p));
        buf_puts(&b, "[CREDENTIAL]");
        p = hit + m;
        while (px_key_char((unsigned char)*p))
            p++;
    }
    buf_copy_fixed(out, size, buf_cstr(&b));
    buf_fini(&b);
}
