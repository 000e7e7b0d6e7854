#ifndef OPENSHELL_GW_PROVIDER_H
#define OPENSHELL_GW_PROVIDER_H
/*
 * gw_provider.h: private to the gateway: providers (gw_provider.c) and the
 * inference route (gw_inference.c), doc/providers.md.
 *
 * A provider is a store object (type "provider", name, workspace) whose
 * payload holds its type, config, credential key names and the credential
 * values sealed with AES-256-GCM (seal.h) under STATE_DIR/provider.key,
 * the object id as AAD. Values leave the gateway only through
 * GET /v1/supervisor/credentials, to the sandbox's own supervisor.
 *
 * "credentials revision": one gateway-wide counter (object type
 * "provider_state", name "credentials") bumped before every write that can
 * change a credentials document; documents carry it as "revision".
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "err.h"

struct gw;
struct store_obj;

#define GW_PROVIDER_TYPE "provider"
/* The inference route: one object per workspace, of this type and name. */
#define GW_ROUTE_TYPE "inference_route"
#define GW_ROUTE_NAME "inference.local"

/* One provider type: its env names (discovery order; the first present
 * is the inference key), where its credentials may be injected, and its
 * inference defaults (NULL when it has none). */
struct gw_ptype {
    const char *name;
    const char *aliases[4];
    const char *keys[4];
    const char *endpoints[3]; /* "host:port" */
    const char *base_url_key; /* config key overriding base_url */
    const char *base_url;
    const char *api; /* "openai" | "anthropic" */
};

/* The type named NAME or one of its aliases, or NULL. */
const struct gw_ptype *gw_ptype_find(const char *name);

/* Register provider routes (and sandbox attach/detach, the credentials
 * document). Loads STATE_DIR/provider.key when present: a refused key file
 * is fatal (setup code). */
void gw_provider_routes(struct gw *gw);
/* Register the inference route endpoints (gw_inference.c). */
void gw_inference_routes(struct gw *gw);

/* PROVIDERS (a JSON array of names, or NULL) may be attached together to a
 * sandbox of WS: each exists, none twice, and no two share a credential
 * key. 0 or -EINVAL with E. */
int gw_provider_check_attach(struct gw *gw, const char *ws, const cJSON *providers, struct err *e);

/* The decrypted credentials {KEY: VALUE} of provider P (*OUT the caller's:
 * wipe with gw_secrets_free). -EPROTO when the key file is refused,
 * -EBADMSG when the record does not open. */
int gw_provider_secrets(struct gw *gw, const struct store_obj *p, cJSON **out, struct err *e);
void gw_secrets_free(cJSON *secrets);

/* The credentials revision: read, or bump (before a write). */
int gw_cred_revision(struct gw *gw, int64_t *out, struct err *e);
int gw_cred_revision_bump(struct gw *gw, struct err *e);

/* Tell the sessions of WS's sandboxes that use PROVIDER (NULL: every
 * sandbox of WS) to refetch their credentials document. */
void gw_provider_notify(struct gw *gw, const char *ws, const char *provider);

/* Workspace WS is about to be deleted: -EPROTO (E says why) while it
 * holds providers; otherwise its inference route is deleted. 0 or -errno. */
int gw_provider_workspace_release(struct gw *gw, const char *ws, struct err *e);

/* Split an http(s) URL (no user info, query or fragment) into TLS, HOST
 * (lower case), PORT and PATH (borrowed from URL, "" or "/..."). 0 or
 * -EINVAL with E. */
int gw_url_parse(const char *url, bool *tls, char *host, size_t hsize, int *port, const char **path,
                 struct err *e);

/* The inference route of WS as the credentials document's "inference"
 * (with the api key), or JSON null when none is set (*OUT the caller's;
 * wipe with gw_secrets_free). */
int gw_inference_doc(struct gw *gw, const char *ws, cJSON **out, struct err *e);

#endif
