#ifndef OPENSHELL_CLI_CONFIG_H
#define OPENSHELL_CLI_CONFIG_H
/*
 * cli_config: the CLI's per-user files (doc/cli.md), the reference's layout:
 *
 *   CFG = $XDG_CONFIG_HOME/openshell (else ~/.config/openshell)
 *   CFG/active_gateway              the selected gateway's name
 *   CFG/gateways/NAME/metadata.json a registration (struct cli_gateway)
 *   CFG/gateways/NAME/last_sandbox  "WORKSPACE\nNAME\n"
 *
 * Directories are made 0700, files 0600, written to a temporary file and
 * renamed (a reader never sees half a file). Gateway names are one path
 * component of [A-Za-z0-9._-] (not "." or ".."), at most 63 bytes.
 * Functions return 0 or a negative errno with E saying what and where.
 */
#include <stdbool.h>
#include <stddef.h>

#include "err.h"

#define CLI_NAME_MAX 64
#define CLI_PATH_MAX 4096

struct cli_gateway {
    char name[CLI_NAME_MAX];
    char endpoint[1024];            /* gateway_endpoint: https://..., http://..., unix://PATH */
    char auth[32];                  /* auth_mode: mtls, plaintext, local */
    char unix_socket[CLI_PATH_MAX]; /* "" when the gateway is not reachable by a socket */
    char state_dir[CLI_PATH_MAX];   /* "" unless started by `gateway start` */
    bool is_remote;
    unsigned port;
};

/* Where gateway selection came from. */
enum cli_gw_source {
    CLI_GW_NONE = 0,
    CLI_GW_FLAG,   /* -g/--gateway */
    CLI_GW_ENV,    /* OPENSHELL_GATEWAY */
    CLI_GW_ACTIVE, /* CFG/active_gateway */
};

/* CFG (heap, caller frees) or NULL when neither XDG_CONFIG_HOME nor HOME
 * is an absolute path. */
char *cli_config_dir(void);
/* The default state directory of a local gateway called NAME (heap):
 * $XDG_STATE_HOME/openshell/gateway for "openshell" (the gateway's own
 * default), .../openshell/gateway-NAME otherwise; NULL without a home. */
char *cli_state_dir(const char *name);
/* True when NAME is a valid gateway name. */
bool cli_gw_name_ok(const char *name);

/* Load NAME's registration: 0, -ENOENT (not registered), -EINVAL (bad
 * metadata.json, E says why). Unknown fields are ignored. */
int cli_gw_load(const char *cfg, const char *name, struct cli_gateway *g, struct err *e);
/* Write G's metadata.json (creating the directories). */
int cli_gw_save(const char *cfg, const struct cli_gateway *g, struct err *e);
/* Every registration, sorted by name, into *OUT (caller frees; *N may be
 * 0). Directories without a readable metadata.json are skipped. */
int cli_gw_list(const char *cfg, struct cli_gateway **out, size_t *n, struct err *e);
/* Remove NAME's directory and everything in it (no symlink is followed);
 * clears active_gateway when it named NAME. -ENOENT when not registered. */
int cli_gw_remove(const char *cfg, const char *name, struct err *e);

/* The active gateway's name into OUT[SIZE]: 0, -ENOENT (none). */
int cli_active_get(const char *cfg, char *out, size_t size);
/* Make NAME active (NULL: clear). */
int cli_active_set(const char *cfg, const char *name, struct err *e);

/* Selection precedence: FLAG, then ENV (OPENSHELL_GATEWAY's value), then
 * CFG/active_gateway. The name into OUT[SIZE] and where it came from into
 * *SRC: 0, or -ENOENT (nothing selected; *SRC = CLI_GW_NONE). Empty
 * strings count as absent. */
int cli_gw_resolve(const char *cfg, const char *flag, const char *env, char *out, size_t size,
                   enum cli_gw_source *src);

/* "Last used sandbox" of gateway GW in workspace WS into OUT[SIZE]: 0, or
 * -ENOENT (none, or it was for another workspace). */
int cli_last_sandbox_get(const char *cfg, const char *gw, const char *ws, char *out, size_t size);
int cli_last_sandbox_set(const char *cfg, const char *gw, const char *ws, const char *name,
                         struct err *e);
/* Forget it if it names WS/NAME. */
void cli_last_sandbox_clear(const char *cfg, const char *gw, const char *ws, const char *name);

/* Copy a client TLS bundle (CA certificate, client certificate, its key)
 * into CFG/gateways/NAME/mtls/{ca.crt,tls.crt,tls.key} (0600): all three
 * are read before anything is written. 0 or -errno with E. */
int cli_mtls_import(const char *cfg, const char *name, const char *ca, const char *crt,
                    const char *key, struct err *e);

/* Normalise a `gateway add` endpoint: "host:port" gets https://; schemes
 * http, https and unix (unix:///abs/path) only. OUT gets the URL, *HOST
 * (heap) the host ("" for unix), *PORT the port (default 443/80, 0 for
 * unix). -EINVAL with E for anything else. */
int cli_endpoint_parse(const char *in, char *out, size_t size, char **host, unsigned *port,
                       struct err *e);
/* True for localhost, 127.x.x.x, ::1 and [::1]. */
bool cli_host_is_loopback(const char *host);

#endif
