/* util.c: the policy arena, diagnostics and small shared helpers. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "policy_int.h"
#include "xfuncs.h"

struct pol_arena_chunk {
    struct pol_arena_chunk *next;
    size_t size;
    _Alignas(16) unsigned char data[];
};

#define POL_ARENA_CHUNK (64 * 1024)

void
policy_arena_init(struct pol_arena *a)
{
    a->head = NULL;
    a->used = 0;
    a->size = 0;
}

void
policy_arena_fini(struct pol_arena *a)
{
    struct pol_arena_chunk *c = a->head;

    while (c) {
        struct pol_arena_chunk *next = c->next;
        free(c);
        c = next;
    }
    policy_arena_init(a);
}

void *
policy_arena_alloc(struct pol_arena *a, size_t n)
{
    void *p;

    n = (n + 15) & ~(size_t)15;
    if (!a->head || a->size - a->used < n) {
        size_t sz = n > POL_ARENA_CHUNK / 4 ? n : POL_ARENA_CHUNK;
        struct pol_arena_chunk *c = xmalloc(sizeof(*c) + sz);

        c->size = sz;
        if (n > POL_ARENA_CHUNK / 4 && a->head) {
            /* A big block gets its own chunk behind the current one, so the
             * current chunk's free space stays usable. */
            c->next = a->head->next;
            a->head->next = c;
            memset(c->data, 0, n);
            return c->data;
        }
        c->next = a->head;
        a->head = c;
        a->used = 0;
        a->size = sz;
    }
    p = a->head->data + a->used;
    a->used += n;
    memset(p, 0, n);
    return p;
}

char *
policy_arena_strndup(struct pol_arena *a, const char *s, size_t n)
{
    char *p = policy_arena_alloc(a, n + 1);

    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

char *
policy_arena_strdup(struct pol_arena *a, const char *s)
{
    return policy_arena_strndup(a, s, strlen(s));
}

void
policy_diags_init(struct policy_diags *d)
{
    memset(d, 0, sizeof(*d));
}

void
policy_diags_fini(struct policy_diags *d)
{
    if (!d)
        return;
    for (size_t i = 0; i < d->n; i++) {
        free(d->v[i].field);
        free(d->v[i].msg);
        free(d->v[i].text);
    }
    free(d->v);
    policy_diags_init(d);
}

/* Diagnostics beyond this many are counted but not stored (a hostile file
 * with a million errors must not cost a million allocations). */
#define POL_DIAGS_MAX 1000

void
policy_diag_add(struct policy_diags *d, const char *file, enum policy_diag_level level,
                unsigned line, unsigned col, const char *field, const char *fmt, ...)
{
    struct policy_diag *g;
    struct buf b = BUF_INIT;
    va_list ap;

    if (!d)
        return;
    if (level == POLICY_DIAG_ERROR)
        d->errors++;
    else
        d->warnings++;
    if (d->n >= POL_DIAGS_MAX)
        return;
    if (d->n == d->cap) {
        d->cap = d->cap ? d->cap * 2 : 16;
        d->v = xrealloc(d->v, d->cap * sizeof(*d->v));
    }
    g = &d->v[d->n++];
    g->level = level;
    g->line = line;
    g->col = col;
    g->field = xstrdup(field ? field : "");
    va_start(ap, fmt);
    buf_vprintf(&b, fmt, ap);
    va_end(ap);
    g->msg = buf_steal(&b);
    buf_printf(&b, "%s:%u:%u: ", file ? file : "<policy>", line, col);
    if (g->field[0])
        buf_printf(&b, "%s: ", g->field);
    if (level == POLICY_DIAG_WARNING)
        buf_puts(&b, "warning: ");
    buf_puts(&b, g->msg);
    g->text = buf_steal(&b);
}

uint32_t
policy_hash(const char *s, size_t n)
{
    uint32_t h = 2166136261u; /* FNV-1a */

    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 16777619u;
    }
    return h;
}

void
policy_hidx_build(struct pol_arena *a, struct pol_hidx *h, const struct pol_hkey *keys, size_t n)
{
    size_t cap = 16;

    while (cap < n * 2)
        cap *= 2;
    h->cap = cap;
    h->slots = policy_arena_alloc(a, cap * sizeof(*h->slots));
    /* Two passes: count per slot, then fill in the given order. */
    for (int pass = 0; pass < 2; pass++) {
        for (size_t k = 0; k < n; k++) {
            uint32_t hash = policy_hash(keys[k].key, strlen(keys[k].key));
            size_t i = hash & (cap - 1);
            struct pol_hslot *s;

            for (;; i = (i + 1) & (cap - 1)) {
                s = &h->slots[i];
                if (!s->host || (s->hash == hash && !strcmp(s->host, keys[k].key)))
                    break;
            }
            if (!s->host) {
                s->host = keys[k].key;
                s->hash = hash;
            }
            if (pass == 0)
                s->n++;
            else
                s->eps[s->n++] = keys[k].ep;
        }
        if (pass == 0)
            for (size_t i = 0; i < cap; i++)
                if (h->slots[i].host) {
                    h->slots[i].eps =
                        policy_arena_alloc(a, h->slots[i].n * sizeof(*h->slots[i].eps));
                    h->slots[i].n = 0;
                }
    }
}

const struct pol_hslot *
policy_hidx_get(const struct pol_hidx *h, const char *key)
{
    uint32_t hash;

    if (!h->cap)
        return NULL;
    hash = policy_hash(key, strlen(key));
    for (size_t i = hash & (h->cap - 1);; i = (i + 1) & (h->cap - 1)) {
        const struct pol_hslot *s = &h->slots[i];
        if (!s->host)
            return NULL;
        if (s->hash == hash && !strcmp(s->host, key))
            return s;
    }
}
