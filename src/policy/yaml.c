/*
 * yaml.c: strict YAML to node tree for the policy loader.
 *
 * libyaml's event parser feeds an explicit stack (no recursion, bounded
 * depth). Everything YAML can do beyond plain data is refused: anchors and
 * aliases (so an alias bomb is one error, not an exponential expansion), tags,
 * merge keys, several documents, complex keys. Input must be UTF-8 without NUL
 * bytes; it is checked before libyaml sees it so the error can point at the
 * offending byte. Duplicate keys are all reported, then the tree is refused
 * by the caller (the error count is what matters).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "buf.h"
#include "policy_int.h"
#include "xfuncs.h"

struct py_frame {
    struct py_node *node;
    struct py_node **items; /* temporary, xrealloc'd; keys for maps */
    struct py_node **vals;
    size_t n, cap;
    bool want_value; /* map: next node is a value */
};

struct py_ctx {
    struct pol_arena *a;
    const char *file;
    struct policy_diags *diags;
    struct py_frame stack[PY_MAX_DEPTH + 1];
    int depth;
    size_t nodes;
    struct py_node *root;
    int docs;
};

/* The field path of the current position ("a.b[2].c") into OUT. */
static void
py_field(struct py_ctx *c, struct buf *out)
{
    for (int i = 0; i < c->depth; i++) {
        struct py_frame *f = &c->stack[i];

        if (f->node->kind == PY_SEQ) {
            buf_printf(out, "[%zu]", f->n);
        } else if (f->n > 0) {
            if (out->len)
                buf_putc(out, '.');
            buf_append(out, f->items[f->n - 1]->s ? f->items[f->n - 1]->s : "?",
                       f->items[f->n - 1]->s ? f->items[f->n - 1]->len : 1);
        }
    }
}

static int
py_error(struct py_ctx *c, unsigned line, unsigned col, const char *msg)
{
    struct buf f = BUF_INIT;

    py_field(c, &f);
    policy_diag_add(c->diags, c->file, POLICY_DIAG_ERROR, line, col, buf_cstr(&f), "%s", msg);
    buf_fini(&f);
    return -EINVAL;
}

/* Validate UTF-8 (no overlongs, no surrogates, <= U+10FFFF) and refuse NUL
 * and other C0 controls except tab, LF, CR. Returns 0 or -EINVAL. */
static int
py_check_text(struct py_ctx *c, const unsigned char *p, size_t len)
{
    unsigned line = 1, col = 1;
    size_t i = 0;

    while (i < len) {
        unsigned char b = p[i];
        size_t need;
        uint32_t cp;

        if (b < 0x80) {
            if ((b < 0x20 && b != '\t' && b != '\n' && b != '\r') || b == 0x7f) {
                policy_diag_add(c->diags, c->file, POLICY_DIAG_ERROR, line, col, NULL,
                                "control character 0x%02x is not allowed in a policy", b);
                return -EINVAL;
            }
            if (b == '\n') {
                line++;
                col = 1;
            } else {
                col++;
            }
            i++;
            continue;
        }
        if (b >= 0xc2 && b <= 0xdf) {
            need = 1;
            cp = b & 0x1f;
        } else if (b >= 0xe0 && b <= 0xef) {
            need = 2;
            cp = b & 0x0f;
        } else if (b >= 0xf0 && b <= 0xf4) {
            need = 3;
            cp = b & 0x07;
        } else {
            goto bad;
        }
        if (len - i <= need)
            goto bad;
        for (size_t k = 1; k <= need; k++) {
            if ((p[i + k] & 0xc0) != 0x80)
                goto bad;
            cp = (cp << 6) | (p[i + k] & 0x3f);
        }
        if ((need == 2 && cp < 0x800) || (need == 3 && (cp < 0x10000 || cp > 0x10ffff)) ||
            (cp >= 0xd800 && cp <= 0xdfff))
            goto bad;
        if (cp == 0xfeff && i != 0) {
            policy_diag_add(c->diags, c->file, POLICY_DIAG_ERROR, line, col, NULL,
                            "byte order mark inside the policy");
            return -EINVAL;
        }
        i += need + 1;
        col++;
    }
    return 0;
bad:
    policy_diag_add(c->diags, c->file, POLICY_DIAG_ERROR, line, col, NULL,
                    "invalid UTF-8 (byte 0x%02x): a policy must be UTF-8 text", p[i]);
    return -EINVAL;
}

static int
py_cmp_key(const void *x, const void *y)
{
    const struct py_node *a = *(struct py_node *const *)x, *b = *(struct py_node *const *)y;
    size_t n = a->len < b->len ? a->len : b->len;
    int r = memcmp(a->s, b->s, n);

    if (r)
        return r;
    if (a->len != b->len)
        return a->len < b->len ? -1 : 1;
    /* Equal keys: file order, so the later one is reported. */
    return a->line != b->line ? (a->line < b->line ? -1 : 1) : (a->col < b->col ? -1 : 1);
}

/* Report every duplicate key of the finished map frame F. */
static void
py_check_dups(struct py_ctx *c, struct py_frame *f)
{
    struct py_node **sorted;

    if (f->n < 2)
        return;
    sorted = xmalloc(f->n * sizeof(*sorted));
    memcpy(sorted, f->items, f->n * sizeof(*sorted));
    qsort(sorted, f->n, sizeof(*sorted), py_cmp_key);
    for (size_t i = 1; i < f->n; i++) {
        struct py_node *first = sorted[i - 1], *dup = sorted[i];
        struct buf fld = BUF_INIT;

        if (first->len != dup->len || memcmp(first->s, dup->s, dup->len) != 0)
            continue;
        /* Path of the map itself: the frames below F. */
        {
            int saved = c->depth;
            c->depth = (int)(f - c->stack);
            py_field(c, &fld);
            c->depth = saved;
        }
        if (fld.len)
            buf_putc(&fld, '.');
        buf_append(&fld, dup->s, dup->len);
        policy_diag_add(c->diags, c->file, POLICY_DIAG_ERROR, dup->line, dup->col, buf_cstr(&fld),
                        "duplicate field `%s` (first at line %u, column %u)", dup->s, first->line,
                        first->col);
        buf_fini(&fld);
        /* Keep the first as the reference point for further duplicates. */
        dup->dup = true;
        sorted[i] = first;
    }
    free(sorted);
}

/* Attach N (a finished node) to the current container, or make it the root. */
static int
py_attach(struct py_ctx *c, struct py_node *n)
{
    struct py_frame *f;

    if (c->depth == 0) {
        c->root = n;
        return 0;
    }
    f = &c->stack[c->depth - 1];
    if (f->node->kind == PY_MAP && f->want_value) {
        f->vals[f->n - 1] = n;
        f->want_value = false;
        return 0;
    }
    if (f->n >= PY_MAX_ITEMS)
        return py_error(c, n->line, n->col,
                        f->node->kind == PY_MAP ? "too many keys in one mapping (limit 10000)"
                                                : "too many items in one list (limit 10000)");
    if (f->n == f->cap) {
        f->cap = f->cap ? f->cap * 2 : 8;
        f->items = xrealloc(f->items, f->cap * sizeof(*f->items));
        if (f->node->kind == PY_MAP)
            f->vals = xrealloc(f->vals, f->cap * sizeof(*f->vals));
    }
    if (f->node->kind == PY_MAP) {
        if (n->kind != PY_SCALAR)
            return py_error(c, n->line, n->col, "mapping keys must be plain strings");
        if (n->plain && n->len == 2 && memcmp(n->s, "<<", 2) == 0)
            return py_error(c, n->line, n->col, "YAML merge keys ('<<') are not allowed");
        f->items[f->n] = n;
        f->vals[f->n] = NULL;
        f->n++;
        f->want_value = true;
    } else {
        f->items[f->n++] = n;
    }
    return 0;
}

static struct py_node *
py_new(struct py_ctx *c, enum py_kind kind, const yaml_mark_t *m)
{
    struct py_node *n;

    if (++c->nodes > PY_MAX_NODES)
        return NULL;
    n = policy_arena_alloc(c->a, sizeof(*n));
    n->kind = kind;
    n->line = (unsigned)m->line + 1;
    n->col = (unsigned)m->column + 1;
    return n;
}

static int
py_event(struct py_ctx *c, yaml_event_t *ev)
{
    const yaml_mark_t *m = &ev->start_mark;
    unsigned line = (unsigned)m->line + 1, col = (unsigned)m->column + 1;
    struct py_node *n;

    switch (ev->type) {
    case YAML_STREAM_START_EVENT:
    case YAML_STREAM_END_EVENT:
    case YAML_NO_EVENT: return 0;
    case YAML_DOCUMENT_START_EVENT:
        if (++c->docs > 1)
            return py_error(c, line, col, "a policy file holds exactly one YAML document");
        return 0;
    case YAML_DOCUMENT_END_EVENT: return 0;
    case YAML_ALIAS_EVENT:
        return py_error(c, line, col, "YAML aliases ('*name') are not allowed in a policy");
    case YAML_SCALAR_EVENT:
        if (ev->data.scalar.anchor)
            return py_error(c, line, col, "YAML anchors ('&name') are not allowed in a policy");
        if (ev->data.scalar.tag)
            return py_error(c, line, col, "YAML tags ('!tag') are not allowed in a policy");
        if (ev->data.scalar.length > PY_MAX_SCALAR)
            return py_error(c, line, col, "scalar longer than 65536 bytes");
        if (!(n = py_new(c, PY_SCALAR, m)))
            return py_error(c, line, col, "too many YAML nodes");
        n->plain = ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
        n->len = ev->data.scalar.length;
        if (memchr(ev->data.scalar.value, '\0', n->len))
            return py_error(c, line, col, "NUL character in a string");
        n->s = policy_arena_strndup(c->a, (const char *)ev->data.scalar.value, n->len);
        return py_attach(c, n);
    case YAML_SEQUENCE_START_EVENT:
    case YAML_MAPPING_START_EVENT: {
        bool map = ev->type == YAML_MAPPING_START_EVENT;
        struct py_frame *f;

        if (map ? ev->data.mapping_start.anchor != NULL : ev->data.sequence_start.anchor != NULL)
            return py_error(c, line, col, "YAML anchors ('&name') are not allowed in a policy");
        if (map ? ev->data.mapping_start.tag != NULL : ev->data.sequence_start.tag != NULL)
            return py_error(c, line, col, "YAML tags ('!tag') are not allowed in a policy");
        if (c->depth >= PY_MAX_DEPTH)
            return py_error(c, line, col, "nesting deeper than 32 levels");
        if (c->depth > 0) {
            struct py_frame *up = &c->stack[c->depth - 1];
            if (up->node->kind == PY_MAP && !up->want_value)
                return py_error(c, line, col, "mapping keys must be plain strings");
        }
        if (!(n = py_new(c, map ? PY_MAP : PY_SEQ, m)))
            return py_error(c, line, col, "too many YAML nodes");
        f = &c->stack[c->depth++];
        memset(f, 0, sizeof(*f));
        f->node = n;
        return 0;
    }
    case YAML_SEQUENCE_END_EVENT:
    case YAML_MAPPING_END_EVENT: {
        struct py_frame *f = &c->stack[c->depth - 1];
        struct py_node *node = f->node;
        int rc;

        if (node->kind == PY_MAP)
            py_check_dups(c, f);
        /* Duplicate keys were reported; only the first occurrence stays, so
         * the schema walk sees each key once. */
        node->n = 0;
        if (f->n) {
            node->items = policy_arena_alloc(c->a, f->n * sizeof(*node->items));
            if (node->kind == PY_MAP)
                node->vals = policy_arena_alloc(c->a, f->n * sizeof(*node->vals));
            for (size_t i = 0; i < f->n; i++) {
                if (node->kind == PY_MAP && f->items[i]->dup)
                    continue;
                node->items[node->n] = f->items[i];
                if (node->kind == PY_MAP)
                    node->vals[node->n] = f->vals[i];
                node->n++;
            }
        }
        free(f->items);
        free(f->vals);
        f->items = f->vals = NULL;
        c->depth--;
        rc = py_attach(c, node);
        return rc;
    }
    }
    return 0;
}

int
policy_yaml_parse(struct pol_arena *a, const char *file, const char *data, size_t len,
                  struct py_node **root, struct policy_diags *diags)
{
    struct py_ctx c;
    yaml_parser_t parser;
    int rc = 0;
    size_t start = 0;

    memset(&c, 0, sizeof(c));
    c.a = a;
    c.file = file;
    c.diags = diags;
    *root = NULL;
    if (len >= 3 && memcmp(data, "\xef\xbb\xbf", 3) == 0)
        start = 3; /* a leading UTF-8 byte order mark is harmless */
    if ((rc = py_check_text(&c, (const unsigned char *)data + start, len - start)) < 0)
        return rc;
    if (!yaml_parser_initialize(&parser))
        return py_error(&c, 0, 0, "cannot initialise the YAML parser");
    yaml_parser_set_input_string(&parser, (const unsigned char *)data + start, len - start);
    yaml_parser_set_encoding(&parser, YAML_UTF8_ENCODING);
    for (;;) {
        yaml_event_t ev;
        bool end;

        if (!yaml_parser_parse(&parser, &ev)) {
            struct buf msg = BUF_INIT;
            const yaml_mark_t *m = &parser.problem_mark;

            buf_printf(&msg, "YAML syntax error: %s", parser.problem ? parser.problem : "?");
            if (parser.context)
                buf_printf(&msg, " %s", parser.context);
            rc = py_error(&c, (unsigned)m->line + 1, (unsigned)m->column + 1, buf_cstr(&msg));
            buf_fini(&msg);
            break;
        }
        end = ev.type == YAML_STREAM_END_EVENT;
        rc = py_event(&c, &ev);
        yaml_event_delete(&ev);
        if (rc < 0 || end)
            break;
    }
    yaml_parser_delete(&parser);
    for (int i = 0; i < c.depth; i++) {
        free(c.stack[i].items);
        free(c.stack[i].vals);
    }
    if (rc < 0)
        return rc;
    *root = c.root;
    return 0;
}
