/*
 * glob.c: the glob engine behind host, binary, path and query matching.
 *
 * Semantics follow the reference's engine (globset with a literal
 * separator): '*' and '?' never cross the separator, '[...]' classes
 * ('!' or '^' negates, ranges allowed) match one non-separator byte,
 * '{a,b}' alternation (not nested) is expanded at compile time, '\x' is a
 * literal x. A segment that is exactly "**" crosses separators:
 *   PG_PATH: the whole pattern "**" matches anything; a leading or middle
 *            "**" segment matches zero or more segments; a trailing one
 *            ("/x/ **") one or more ("/x/" and "/x/a/b", never "/x").
 *   PG_HOST: a "**" label matches one or more whole labels anywhere.
 * A "**" glued to other characters behaves like '*'.
 *
 * Matching never allocates and runs in O(segments^2 + bytes * tokens) per
 * alternative: both levels (segments, bytes within a segment) use the
 * classic greedy wildcard algorithm with one backtrack point, which is exact
 * because every non-star element matches exactly one unit.
 */
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "policy_int.h"
#include "xfuncs.h"

#define PG_MAX_ALTS 64
#define PG_MAX_PATTERN 4096

enum pg_tok_kind {
    PT_LIT = 0,
    PT_ONE,  /* '?' */
    PT_STAR, /* '*' */
    PT_CLASS,
};

struct pg_tok {
    uint8_t kind;
    uint8_t c;
    const uint8_t *set; /* 32-byte bitmap for PT_CLASS */
};

enum pg_seg_kind {
    PS_NORMAL = 0,
    PS_ANYSEG, /* exactly one segment, any content */
    PS_REC,    /* zero or more segments */
};

struct pg_seg {
    uint8_t kind;
    struct pg_tok *toks;
    size_t ntok;
};

struct pg_alt {
    bool any_all; /* the pattern "**" */
    struct pg_seg *segs;
    size_t nseg;
};

struct pg_glob {
    char sep;
    struct pg_alt *alts;
    size_t nalt;
};

bool
policy_glob_has_meta(const char *pattern)
{
    return strchr(pattern, '*') != NULL;
}

/* Compile one segment's text [P, P+N) into tokens. */
static int
pg_compile_seg(struct pol_arena *a, const char *p, size_t n, char sep, struct pg_seg *seg,
               const char **why)
{
    struct pg_tok *t = policy_arena_alloc(a, (n ? n : 1) * sizeof(*t));
    size_t nt = 0;

    for (size_t i = 0; i < n; i++) {
        char c = p[i];

        if (c == '*') {
            while (i + 1 < n && p[i + 1] == '*')
                i++; /* "**" inside a segment is '*' */
            if (nt && t[nt - 1].kind == PT_STAR)
                continue;
            t[nt++].kind = PT_STAR;
        } else if (c == '?') {
            t[nt++].kind = PT_ONE;
        } else if (c == '[') {
            uint8_t *set = policy_arena_alloc(a, 32);
            bool neg = false;
            size_t j = i + 1;
            bool first = true;

            if (j < n && (p[j] == '!' || p[j] == '^')) {
                neg = true;
                j++;
            }
            for (;; first = false) {
                unsigned char lo, hi;

                if (j >= n) {
                    *why = "unclosed '[' in pattern";
                    return -EINVAL;
                }
                if (p[j] == ']' && !first)
                    break;
                lo = (unsigned char)p[j];
                if (lo == '\\' && j + 1 < n)
                    lo = (unsigned char)p[++j];
                hi = lo;
                if (j + 2 < n && p[j + 1] == '-' && p[j + 2] != ']') {
                    hi = (unsigned char)p[j + 2];
                    j += 2;
                    if (hi < lo) {
                        *why = "invalid range in '[...]'";
                        return -EINVAL;
                    }
                }
                for (unsigned v = lo; v <= hi; v++)
                    set[v >> 3] |= (uint8_t)(1u << (v & 7));
                j++;
            }
            if (neg)
                for (int k = 0; k < 32; k++)
                    set[k] = (uint8_t)~set[k];
            /* A class never matches the separator. */
            set[(unsigned char)sep >> 3] &= (uint8_t) ~(1u << ((unsigned char)sep & 7));
            t[nt].kind = PT_CLASS;
            t[nt++].set = set;
            i = j;
        } else {
            if (c == '\\' && i + 1 < n)
                c = p[++i];
            t[nt].kind = PT_LIT;
            t[nt++].c = (uint8_t)c;
        }
    }
    seg->kind = PS_NORMAL;
    seg->toks = t;
    seg->ntok = nt;
    return 0;
}

static int
pg_compile_alt(struct pol_arena *a, const char *p, size_t n, char sep, enum pg_mode mode,
               struct pg_alt *alt, const char **why)
{
    size_t nseg = 1, k = 0, start = 0;

    if (mode == PG_PATH && n == 2 && p[0] == '*' && p[1] == '*') {
        alt->any_all = true;
        return 0;
    }
    for (size_t i = 0; i < n; i++)
        if (p[i] == sep && sep)
            nseg++;
    /* A trailing "**" (min one segment) becomes two elements. */
    alt->segs = policy_arena_alloc(a, (nseg + 1) * sizeof(*alt->segs));
    for (size_t i = 0; i <= n; i++) {
        size_t len;
        bool last;

        if (i < n && (!sep || p[i] != sep))
            continue;
        len = i - start;
        last = i == n;
        if (sep && len == 2 && p[start] == '*' && p[start + 1] == '*') {
            bool min1 = mode == PG_HOST || (last && nseg > 1);

            if (min1)
                alt->segs[k++].kind = PS_ANYSEG;
            alt->segs[k++].kind = PS_REC;
        } else {
            int rc = pg_compile_seg(a, p + start, len, sep, &alt->segs[k++], why);
            if (rc < 0)
                return rc;
        }
        start = i + 1;
    }
    alt->nseg = k;
    return 0;
}

/* Expand the first {a,b} group of P into OUT (arena strings), recursively.
 * Returns 0 or -EINVAL. */
static int
pg_expand(struct pol_arena *a, const char *p, size_t n, const char **out, size_t *nout,
          const char **why)
{
    size_t open = SIZE_MAX, close = SIZE_MAX;

    for (size_t i = 0; i < n; i++) {
        if (p[i] == '\\') {
            i++;
        } else if (p[i] == '{') {
            if (open != SIZE_MAX) {
                *why = "nested '{' in pattern";
                return -EINVAL;
            }
            open = i;
        } else if (p[i] == '}') {
            if (open == SIZE_MAX) {
                *why = "unmatched '}' in pattern";
                return -EINVAL;
            }
            close = i;
            break;
        }
    }
    if (open == SIZE_MAX) {
        if (*nout >= PG_MAX_ALTS) {
            *why = "too many '{a,b}' alternatives in pattern";
            return -EINVAL;
        }
        out[(*nout)++] = policy_arena_strndup(a, p, n);
        return 0;
    }
    if (close == SIZE_MAX) {
        *why = "unclosed '{' in pattern";
        return -EINVAL;
    }
    for (size_t s = open + 1;;) {
        size_t e = s;
        char tmp[PG_MAX_PATTERN + 1];
        size_t tl;
        int rc;

        while (e < close && p[e] != ',')
            e++;
        tl = open + (e - s) + (n - close - 1);
        if (tl > PG_MAX_PATTERN) {
            *why = "pattern too long";
            return -EINVAL;
        }
        memcpy(tmp, p, open);
        memcpy(tmp + open, p + s, e - s);
        memcpy(tmp + open + (e - s), p + close + 1, n - close - 1);
        if ((rc = pg_expand(a, tmp, tl, out, nout, why)) < 0)
            return rc;
        if (e >= close)
            break;
        s = e + 1;
    }
    return 0;
}

struct pg_glob *
policy_glob_compile(struct pol_arena *a, const char *pattern, char sep, enum pg_mode mode,
                    const char **why)
{
    const char *alts[PG_MAX_ALTS];
    size_t nalt = 0, n = strlen(pattern);
    struct pg_glob *g;

    *why = NULL;
    if (n > PG_MAX_PATTERN) {
        *why = "pattern too long";
        return NULL;
    }
    if (pg_expand(a, pattern, n, alts, &nalt, why) < 0)
        return NULL;
    g = policy_arena_alloc(a, sizeof(*g));
    g->sep = sep;
    g->nalt = nalt;
    g->alts = policy_arena_alloc(a, nalt * sizeof(*g->alts));
    for (size_t i = 0; i < nalt; i++)
        if (pg_compile_alt(a, alts[i], strlen(alts[i]), sep, mode, &g->alts[i], why) < 0)
            return NULL;
    return g;
}

static bool
pg_tok_one(const struct pg_tok *t, unsigned char c, char sep)
{
    switch (t->kind) {
    case PT_LIT: return t->c == c;
    case PT_ONE: return c != (unsigned char)sep || !sep;
    case PT_CLASS: return (t->set[c >> 3] >> (c & 7)) & 1;
    default: return false;
    }
}

/* Bytes [S, S+N) against one segment's tokens (no separator inside). */
static bool
pg_seg_match(const struct pg_seg *seg, const char *s, size_t n, char sep)
{
    size_t ti = 0, si = 0, star_t = SIZE_MAX, star_s = 0;

    while (si < n) {
        if (ti < seg->ntok && seg->toks[ti].kind == PT_STAR) {
            star_t = ti++;
            star_s = si;
        } else if (ti < seg->ntok && pg_tok_one(&seg->toks[ti], (unsigned char)s[si], sep)) {
            ti++;
            si++;
        } else if (star_t != SIZE_MAX) {
            ti = star_t + 1;
            si = ++star_s;
        } else {
            return false;
        }
    }
    while (ti < seg->ntok && seg->toks[ti].kind == PT_STAR)
        ti++;
    return ti == seg->ntok;
}

/* End offset of the string segment starting at SO. */
static size_t
pg_seg_end(const char *s, size_t len, size_t so, char sep)
{
    const char *e;

    if (!sep)
        return len;
    e = memchr(s + so, sep, len - so);
    return e ? (size_t)(e - s) : len;
}

static bool
pg_alt_match(const struct pg_alt *alt, const char *s, size_t len, char sep)
{
    size_t pi = 0, so = 0, star_p = SIZE_MAX, star_so = 0;
    const size_t done = len + 1; /* "no string segment left" */

    if (alt->any_all)
        return true;
    for (;;) {
        if (so == done) {
            while (pi < alt->nseg && alt->segs[pi].kind == PS_REC)
                pi++;
            if (pi == alt->nseg)
                return true;
        } else if (pi < alt->nseg) {
            const struct pg_seg *sg = &alt->segs[pi];
            size_t e = pg_seg_end(s, len, so, sep);

            if (sg->kind == PS_REC) {
                star_p = pi++;
                star_so = so;
                continue;
            }
            if (sg->kind == PS_ANYSEG || pg_seg_match(sg, s + so, e - so, sep)) {
                pi++;
                so = e + 1;
                continue;
            }
        }
        /* Backtrack: the last "**" absorbs one more segment. */
        if (star_p == SIZE_MAX || star_so == done)
            return false;
        star_so = pg_seg_end(s, len, star_so, sep) + 1;
        so = star_so;
        pi = star_p + 1;
    }
}

int
policy_glob_exec(const struct pg_glob *g, const char *s, size_t len)
{
    for (size_t i = 0; i < g->nalt; i++)
        if (pg_alt_match(&g->alts[i], s, len, g->sep))
            return 1;
    return 0;
}

int
policy_glob_match(const char *pattern, const char *s, char sep)
{
    struct pol_arena a;
    const char *why;
    struct pg_glob *g;
    int rc;

    policy_arena_init(&a);
    g = policy_glob_compile(&a, pattern, sep, sep == '.' ? PG_HOST : PG_PATH, &why);
    rc = g ? policy_glob_exec(g, s, strlen(s)) : -EINVAL;
    policy_arena_fini(&a);
    return rc;
}
