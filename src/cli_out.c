/*
 * cli_out.c: tables and colour for the CLI's human output
 * (include/cli_out.h).
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "cli_out.h"
#include "xfuncs.h"

struct cli_table {
    size_t ncols, nrows, cap;
    char **cells;  /* nrows+1 rows (headers first) of ncols cells */
    char **colors; /* one SGR code (or NULL) per cell */
};

bool
cli_color_wanted(int fd)
{
    const char *nc = getenv("NO_COLOR"), *term = getenv("TERM");

    if (nc && *nc)
        return false;
    if (term && !strcmp(term, "dumb"))
        return false;
    return isatty(fd) == 1;
}

static void
table_push(struct cli_table *t, const char *const *cells)
{
    size_t need = (t->nrows + 1) * t->ncols;

    if (need > t->cap) {
        t->cap = t->cap ? t->cap * 2 : t->ncols * 16;
        while (t->cap < need)
            t->cap *= 2;
        t->cells = xrealloc(t->cells, t->cap * sizeof(char *));
        t->colors = xrealloc(t->colors, t->cap * sizeof(char *));
    }
    for (size_t i = 0; i < t->ncols; i++) {
        const char *c = cells[i] && *cells[i] ? cells[i] : t->nrows ? "-" : "";
        t->cells[t->nrows * t->ncols + i] = xstrdup(c);
        t->colors[t->nrows * t->ncols + i] = NULL;
    }
    t->nrows++;
}

struct cli_table *
cli_table_new(size_t ncols, const char *const *headers)
{
    struct cli_table *t = xcalloc(1, sizeof(*t));

    t->ncols = ncols;
    table_push(t, headers);
    return t;
}

void
cli_table_free(struct cli_table *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < t->nrows * t->ncols; i++)
        free(t->cells[i]);
    free(t->cells);
    free(t->colors);
    free(t);
}

void
cli_table_add(struct cli_table *t, const char *const *cells)
{
    table_push(t, cells);
}

void
cli_table_color_last(struct cli_table *t, size_t col, const char *code)
{
    if (t->nrows > 1 && col < t->ncols)
        t->colors[(t->nrows - 1) * t->ncols + col] = (char *)code;
}

size_t
cli_table_rows(const struct cli_table *t)
{
    return t->nrows - 1;
}

/* Display width: UTF-8 continuation bytes take no column. */
static size_t
width(const char *s)
{
    size_t w = 0;

    for (; *s; s++)
        if (((unsigned char)*s & 0xc0) != 0x80)
            w++;
    return w;
}

void
cli_table_render(const struct cli_table *t, bool color, struct buf *out)
{
    size_t *w = xcalloc(t->ncols, sizeof(size_t));

    for (size_t r = 0; r < t->nrows; r++)
        for (size_t c = 0; c < t->ncols; c++) {
            size_t n = width(t->cells[r * t->ncols + c]);
            if (n > w[c])
                w[c] = n;
        }
    for (size_t r = 0; r < t->nrows; r++) {
        for (size_t c = 0; c < t->ncols; c++) {
            const char *cell = t->cells[r * t->ncols + c];
            const char *code = r == 0 ? "1" : t->colors[r * t->ncols + c];
            bool last = c + 1 == t->ncols;

            if (color && code)
                buf_printf(out, "\033[%sm%s\033[0m", code, cell);
            else
                buf_puts(out, cell);
            if (!last)
                for (size_t i = width(cell); i < w[c] + 2; i++)
                    buf_putc(out, ' ');
        }
        buf_putc(out, '\n');
    }
    free(w);
}

void
cli_format_time_ms(int64_t ms, char *out, size_t size)
{
    time_t s = (time_t)(ms / 1000);
    struct tm tm;

    if (!gmtime_r(&s, &tm) || strftime(out, size, "%Y-%m-%d %H:%M:%S", &tm) == 0)
        buf_copy_fixed(out, size, "-");
}

static bool
plain_key(const char *k)
{
    if (!*k)
        return false;
    for (const char *p = k; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '_' || *p == '-' || *p == '.' || *p == '/'))
            return false;
    return true;
}

static void
yaml_scalar(const cJSON *j, struct buf *out)
{
    if (cJSON_IsString(j)) {
        buf_put_json_str(out, j->valuestring, strlen(j->valuestring));
    } else if (cJSON_IsObject(j)) {
        buf_puts(out, "{}");
    } else if (cJSON_IsArray(j)) {
        buf_puts(out, "[]");
    } else {
        char *s = cJSON_PrintUnformatted(j);
        buf_puts(out, s ? s : "null");
        free(s);
    }
}

static bool
yaml_is_block(const cJSON *j)
{
    return (cJSON_IsObject(j) || cJSON_IsArray(j)) && j->child;
}

static void
yaml_node(const cJSON *j, int indent, struct buf *out)
{
    for (const cJSON *it = j->child; it; it = it->next) {
        for (int i = 0; i < indent; i++)
            buf_putc(out, ' ');
        if (cJSON_IsArray(j)) {
            buf_puts(out, "-");
        } else {
            if (plain_key(it->string))
                buf_puts(out, it->string);
            else
                buf_put_json_str(out, it->string, strlen(it->string));
            buf_putc(out, ':');
        }
        if (yaml_is_block(it)) {
            buf_putc(out, '\n');
            yaml_node(it, indent + 2, out);
        } else {
            buf_putc(out, ' ');
            yaml_scalar(it, out);
            buf_putc(out, '\n');
        }
    }
}

void
cli_yaml_render(const cJSON *j, struct buf *out)
{
    if (yaml_is_block(j))
        yaml_node(j, 0, out);
    else {
        yaml_scalar(j, out);
        buf_putc(out, '\n');
    }
}
