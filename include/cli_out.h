#ifndef OPENSHELL_CLI_OUT_H
#define OPENSHELL_CLI_OUT_H
/*
 * cli_out: the CLI's human output. Tables are left-aligned with two-space
 * gutters, each column as wide as its widest cell, upper-case headers (bold
 * with colour). Colour is used only when asked for by cli_color_wanted():
 * FD is a terminal, NO_COLOR is unset or empty, TERM is not "dumb".
 *
 * A table owns copies of its cells; cli_table_free() releases them.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "buf.h"

struct cli_table;

bool cli_color_wanted(int fd);

/* A table with NCOLS columns named by HEADERS. */
struct cli_table *cli_table_new(size_t ncols, const char *const *headers);
void cli_table_free(struct cli_table *t);
/* Append a row of NCOLS cells (NULL or "" prints as "-"). */
void cli_table_add(struct cli_table *t, const char *const *cells);
/* Colour cell COL of the last row with SGR code CODE (e.g. "32" green). */
void cli_table_color_last(struct cli_table *t, size_t col, const char *code);
size_t cli_table_rows(const struct cli_table *t);
/* Render into OUT. */
void cli_table_render(const struct cli_table *t, bool color, struct buf *out);

struct cJSON;
/* J as block-style YAML into OUT: mappings "key: value", sequences "- x",
 * scalars as JSON writes them (strings double-quoted with JSON escapes,
 * which YAML reads the same), {} and [] for empty collections. The key
 * order is J's. */
void cli_yaml_render(const struct cJSON *j, struct buf *out);

/* "YYYY-MM-DD HH:MM:SS" (UTC) of epoch milliseconds MS into OUT[20+]. */
void cli_format_time_ms(int64_t ms, char *out, size_t size);

#endif
