/*
 * canon.c: request-target canonicalisation and query decoding for L7
 * decisions (reference §3.6.2). The canonical path is both what rules are
 * matched against and what the proxy sends upstream, so the two can never
 * disagree about which resource is meant.
 */
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>

#include "policy_int.h"

static int
hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Bytes emitted literally in a canonical path segment: RFC 3986 unreserved,
 * sub-delims, ':' and '@'. */
static bool
canon_literal(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return true;
    return c && strchr("-._~!$&'()*+,;=:@", c) != NULL;
}

#define CANON_FAIL(msg)                                                                            \
    do {                                                                                           \
        *why = (msg);                                                                              \
        return -EINVAL;                                                                            \
    } while (0)

int
policy_canon_path(const char *raw, size_t len, bool allow_encoded_slash, char *out, size_t outsz,
                  const char **query, const char **why)
{
    static const char *dummy;
    const char *p = raw, *end, *q;
    size_t olen = 0, depth = 0;
    uint16_t starts[POLICY_PATH_MAX / 2 + 2]; /* output offset of each kept segment's '/' */
    bool trailing = false;

    if (!why)
        why = &dummy;
    *why = NULL;
    if (query)
        *query = NULL;
    if (outsz < 2)
        return -ENAMETOOLONG;
    out[0] = '\0';
    if (!raw || len == 0)
        CANON_FAIL("empty request-target");
    if (memchr(raw, '\0', len))
        CANON_FAIL("NUL byte in request-target");
    if (len == 1 && raw[0] == '*')
        CANON_FAIL("asterisk-form request-target");
    /* Absolute-form: drop scheme and authority. */
    if ((len >= 7 && strncasecmp(raw, "http://", 7) == 0) ||
        (len >= 8 && strncasecmp(raw, "https://", 8) == 0)) {
        p = raw + (raw[4] == ':' ? 7 : 8);
        while (p < raw + len && *p != '/' && *p != '?' && *p != '#')
            p++;
    } else if (raw[0] != '/') {
        CANON_FAIL("request-target is not in origin form");
    }
    end = raw + len;
    for (const char *c = p; c < end; c++) {
        unsigned char b = (unsigned char)*c;
        if (b < 0x20 || b == 0x7f)
            CANON_FAIL("control character in request-target");
        if (b >= 0x80)
            CANON_FAIL("raw non-ASCII byte in request-target");
        if (b == '#')
            CANON_FAIL("fragment in request-target");
    }
    q = memchr(p, '?', (size_t)(end - p));
    if (q) {
        if (query)
            *query = q + 1;
        end = q;
    }
    if ((size_t)(end - p) > POLICY_PATH_MAX)
        return (*why = "request path longer than 4096 bytes"), -ENAMETOOLONG;
    if (p < end && *p != '/')
        CANON_FAIL("request-target is not in origin form");

    /* Walk raw segments between literal '/'. */
    while (p < end) {
        const char *s = p + 1, *e, *semi;
        unsigned char seg[POLICY_PATH_MAX];
        size_t sl = 0;

        e = memchr(s, '/', (size_t)(end - s));
        if (!e)
            e = end;
        p = e;
        /* ";params" go before dot handling: "/a;x=1/.." is "/". */
        semi = memchr(s, ';', (size_t)(e - s));
        if (semi)
            e = semi;
        for (const char *c = s; c < e; c++) {
            unsigned char b = (unsigned char)*c;

            if (b == '%') {
                int hi, lo;

                if (e - c < 3 || (hi = hexval(c[1])) < 0 || (lo = hexval(c[2])) < 0)
                    CANON_FAIL("invalid percent-encoding in path");
                b = (unsigned char)(hi * 16 + lo);
                c += 2;
                if (b < 0x20 || b == 0x7f)
                    CANON_FAIL("percent-encoded control character in path");
                if (b == '/' && !allow_encoded_slash)
                    CANON_FAIL("percent-encoded slash (%2F) in path");
            }
            seg[sl++] = b;
        }
        trailing = false;
        if (sl == 0) {
            /* "//" collapses; a final "/" stays. */
            trailing = p >= end;
            continue;
        }
        if (sl == 1 && seg[0] == '.') {
            trailing = true;
            continue;
        }
        if (sl == 2 && seg[0] == '.' && seg[1] == '.') {
            if (depth == 0)
                CANON_FAIL("path climbs above the root ('..')");
            olen = starts[--depth];
            trailing = true;
            continue;
        }
        starts[depth++] = (uint16_t)olen;
        if (olen + 1 >= outsz)
            return (*why = "canonical path too long"), -ENAMETOOLONG;
        out[olen++] = '/';
        for (size_t i = 0; i < sl; i++) {
            static const char hex[] = "0123456789ABCDEF";

            if (canon_literal(seg[i])) {
                if (olen + 1 >= outsz)
                    return (*why = "canonical path too long"), -ENAMETOOLONG;
                out[olen++] = (char)seg[i];
            } else {
                if (olen + 3 >= outsz)
                    return (*why = "canonical path too long"), -ENAMETOOLONG;
                out[olen++] = '%';
                out[olen++] = hex[seg[i] >> 4];
                out[olen++] = hex[seg[i] & 15];
            }
        }
    }
    if (trailing || olen == 0) {
        if (olen + 1 >= outsz)
            return (*why = "canonical path too long"), -ENAMETOOLONG;
        out[olen++] = '/';
    }
    out[olen] = '\0';
    if (olen > POLICY_PATH_MAX)
        return (*why = "canonical path too long"), -ENAMETOOLONG;
    /* Residual dot segments cannot survive the walk above; check anyway,
     * since a path that still means "." or ".." upstream must never pass. */
    for (const char *c = out; *c; c++)
        if (c[0] == '/' && c[1] == '.' &&
            (c[2] == '/' || !c[2] || (c[2] == '.' && (c[3] == '/' || !c[3]))))
            CANON_FAIL("residual dot segment in path");
    return 0;
}

/* Decode one query component [S, E) (percent-decoding, '+' is a space)
 * into OUT[POLICY_PATH_MAX]. Returns its length or -EINVAL. */
static int
query_decode(const char *s, const char *e, char *out)
{
    size_t n = 0;

    for (const char *c = s; c < e; c++) {
        unsigned char b = (unsigned char)*c;

        if (b == '%') {
            int hi, lo;
            if (e - c < 3 || (hi = hexval(c[1])) < 0 || (lo = hexval(c[2])) < 0)
                return -EINVAL;
            b = (unsigned char)(hi * 16 + lo);
            c += 2;
        } else if (b == '+') {
            b = ' ';
        }
        if (b == 0)
            return -EINVAL; /* a NUL makes the reference's evaluation fail: deny */
        if (n >= POLICY_PATH_MAX)
            return -EINVAL;
        out[n++] = (char)b;
    }
    out[n] = '\0';
    /* Decoded text must be UTF-8. */
    for (size_t i = 0; i < n;) {
        unsigned char b = (unsigned char)out[i];
        size_t need;
        uint32_t cp;

        if (b < 0x80) {
            i++;
            continue;
        }
        if (b >= 0xc2 && b <= 0xdf)
            need = 1, cp = b & 0x1f;
        else if (b >= 0xe0 && b <= 0xef)
            need = 2, cp = b & 0x0f;
        else if (b >= 0xf0 && b <= 0xf4)
            need = 3, cp = b & 0x07;
        else
            return -EINVAL;
        if (n - i <= need)
            return -EINVAL;
        for (size_t k = 1; k <= need; k++) {
            if (((unsigned char)out[i + k] & 0xc0) != 0x80)
                return -EINVAL;
            cp = (cp << 6) | ((unsigned char)out[i + k] & 0x3f);
        }
        if ((need == 2 && cp < 0x800) || (need == 3 && (cp < 0x10000 || cp > 0x10ffff)) ||
            (cp >= 0xd800 && cp <= 0xdfff))
            return -EINVAL;
        i += need + 1;
    }
    return (int)n;
}

int
policy_query_next(const char **pos, const char *end, char *key, size_t *klen, char *val,
                  size_t *vlen)
{
    while (*pos < end) {
        const char *s = *pos, *amp, *eq;
        int kl, vl;

        amp = memchr(s, '&', (size_t)(end - s));
        if (!amp)
            amp = end;
        *pos = amp < end ? amp + 1 : end;
        if (amp == s)
            continue; /* "&&" */
        eq = memchr(s, '=', (size_t)(amp - s));
        if ((kl = query_decode(s, eq ? eq : amp, key)) < 0)
            return -EINVAL;
        if (eq) {
            if ((vl = query_decode(eq + 1, amp, val)) < 0)
                return -EINVAL;
        } else {
            vl = 0;
            val[0] = '\0';
        }
        *klen = (size_t)kl;
        *vlen = (size_t)vl;
        return 1;
    }
    return 0;
}
