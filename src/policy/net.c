/*
 * net.c: addresses, CIDRs and their SSRF classes (reference §3.8).
 *
 * always-blocked: loopback 127/8 ::1, link-local 169.254/16 fe80::/10,
 * unspecified 0.0.0.0 ::, and their IPv4-mapped (::ffff:a.b.c.d) forms.
 * internal: always-blocked plus RFC 1918, CGNAT 100.64/10, 192.0.0/24, the
 * documentation nets, benchmarking 198.18/15, broadcast, ULA fc00::/7.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "policy_int.h"

int
policy_addr_parse(const char *s, struct policy_addr *out)
{
    char tmp[64];
    size_t n;

    memset(out, 0, sizeof(*out));
    if (!s)
        return -EINVAL;
    n = strlen(s);
    if (n >= 2 && s[0] == '[' && s[n - 1] == ']') {
        s++;
        n -= 2;
    }
    if (n == 0 || n >= sizeof(tmp))
        return -EINVAL;
    memcpy(tmp, s, n);
    tmp[n] = '\0';
    if (inet_pton(AF_INET, tmp, out->a) == 1) {
        out->family = 4;
        return 0;
    }
    if (strchr(tmp, ':') && inet_pton(AF_INET6, tmp, out->a) == 1) {
        out->family = 6;
        return 0;
    }
    return -EINVAL;
}

bool
policy_is_ip_literal(const char *host)
{
    struct policy_addr a;

    return policy_addr_parse(host, &a) == 0;
}

/* An IPv4-mapped IPv6 address as its IPv4 form (for classification). */
static struct policy_addr
pol_unmap(const struct policy_addr *a)
{
    static const uint8_t prefix[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
    struct policy_addr r = *a;

    if (a->family == 6 && memcmp(a->a, prefix, 12) == 0) {
        memset(&r, 0, sizeof(r));
        r.family = 4;
        memcpy(r.a, a->a + 12, 4);
    }
    return r;
}

static bool
pol_prefix_eq(const uint8_t *x, const uint8_t *y, unsigned bits)
{
    unsigned bytes = bits / 8, rem = bits % 8;

    if (memcmp(x, y, bytes) != 0)
        return false;
    if (rem) {
        uint8_t mask = (uint8_t)(0xff << (8 - rem));
        if ((x[bytes] & mask) != (y[bytes] & mask))
            return false;
    }
    return true;
}

int
policy_cidr_parse(const char *s, struct pol_cidr *out)
{
    char tmp[64];
    const char *slash = strchr(s, '/');
    size_t n = slash ? (size_t)(slash - s) : strlen(s);
    unsigned max;

    memset(out, 0, sizeof(*out));
    if (n == 0 || n >= sizeof(tmp))
        return -EINVAL;
    memcpy(tmp, s, n);
    tmp[n] = '\0';
    if (policy_addr_parse(tmp, &out->addr) < 0 || tmp[0] == '[')
        return -EINVAL;
    max = out->addr.family == 4 ? 32 : 128;
    out->prefix = max;
    if (slash) {
        const char *p = slash + 1;
        unsigned long v = 0;

        if (!*p || strlen(p) > 3)
            return -EINVAL;
        for (; *p; p++) {
            if (*p < '0' || *p > '9')
                return -EINVAL;
            v = v * 10 + (unsigned long)(*p - '0');
        }
        if (v > max)
            return -EINVAL;
        out->prefix = (unsigned)v;
    }
    /* Clear host bits. */
    for (unsigned bit = out->prefix; bit < max; bit++)
        out->addr.a[bit / 8] &= (uint8_t) ~(0x80u >> (bit % 8));
    return 0;
}

bool
policy_cidr_contains(const struct pol_cidr *c, const struct policy_addr *addr)
{
    struct policy_addr a = *addr;

    if (c->addr.family == 4)
        a = pol_unmap(addr);
    if (a.family != c->addr.family)
        return false;
    return pol_prefix_eq(c->addr.a, a.a, c->prefix);
}

struct pol_range {
    int family;
    uint8_t a[16];
    unsigned prefix;
};

static const struct pol_range pol_blocked[] = {
    { 4, { 127 }, 8 },        { 4, { 169, 254 }, 16 },   { 4, { 0, 0, 0, 0 }, 32 },
    { 6, { [15] = 1 }, 128 }, { 6, { 0xfe, 0x80 }, 10 }, { 6, { 0 }, 128 },
};

static const struct pol_range pol_internal[] = {
    { 4, { 10 }, 8 },
    { 4, { 172, 16 }, 12 },
    { 4, { 192, 168 }, 16 },
    { 4, { 100, 64 }, 10 },
    { 4, { 192, 0, 0 }, 24 },
    { 4, { 192, 0, 2 }, 24 },
    { 4, { 198, 51, 100 }, 24 },
    { 4, { 203, 0, 113 }, 24 },
    { 4, { 198, 18 }, 15 },
    { 4, { 255, 255, 255, 255 }, 32 },
    { 6, { 0xfc }, 7 },
};

static bool
pol_in_ranges(const struct policy_addr *addr, const struct pol_range *r, size_t n)
{
    struct policy_addr a = pol_unmap(addr);

    for (size_t i = 0; i < n; i++)
        if (r[i].family == a.family && pol_prefix_eq(r[i].a, a.a, r[i].prefix))
            return true;
    return false;
}

bool
policy_addr_always_blocked(const struct policy_addr *a)
{
    return pol_in_ranges(a, pol_blocked, sizeof(pol_blocked) / sizeof(pol_blocked[0]));
}

bool
policy_addr_internal(const struct policy_addr *a)
{
    return policy_addr_always_blocked(a) ||
           pol_in_ranges(a, pol_internal, sizeof(pol_internal) / sizeof(pol_internal[0]));
}

bool
policy_cidr_overlaps_blocked(const struct pol_cidr *c)
{
    static const uint8_t mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

    for (size_t i = 0; i < sizeof(pol_blocked) / sizeof(pol_blocked[0]); i++) {
        const struct pol_range *r = &pol_blocked[i];
        unsigned p = r->prefix < c->prefix ? r->prefix : c->prefix;

        /* Two prefixes intersect iff they agree on the shorter prefix. */
        if (r->family == c->addr.family && pol_prefix_eq(r->a, c->addr.a, p))
            return true;
        /* An IPv6 range reaching into ::ffff:0:0/96 covers IPv4 forms too. */
        if (r->family == 4 && c->addr.family == 6) {
            uint8_t m[16];
            unsigned mp = r->prefix + 96;

            memcpy(m, mapped, 12);
            memcpy(m + 12, r->a, 4);
            p = mp < c->prefix ? mp : c->prefix;
            if (pol_prefix_eq(m, c->addr.a, p))
                return true;
        }
    }
    return false;
}
