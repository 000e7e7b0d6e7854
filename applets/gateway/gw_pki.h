#ifndef OPENSHELL_GW_PKI_H
#define OPENSHELL_GW_PKI_H
/*
 * gw_pki.h: private to openshell-gateway: its PKI for the TLS listener
 * (layout and rules in gw_pki.c). 0 or -errno with E set.
 */
#include "err.h"

struct mbedtls_x509_crt;
struct mbedtls_pk_context;

struct gw_pki_opts {
    const char *dir;        /* STATE_DIR/tls */
    const char *client_dir; /* CONFIG/openshell/gateways/NAME, or NULL */
    const char *name;       /* gateway name for metadata.json */
    const char *endpoint;   /* "https://127.0.0.1:17670" */
    unsigned port;
    const char *socket; /* the unix socket, recorded in metadata.json */
};

/* Create the PKI when absent, refuse a partial one, then copy the client
 * bundle and metadata.json to O->client_dir. */
int gw_pki_ensure(const struct gw_pki_opts *o, struct err *e);
/* Load the server chain (leaf, CA), its key, and the CA alone. The caller
 * inits and frees the mbedTLS objects. */
int gw_pki_load_server(const char *dir, struct mbedtls_x509_crt *chain,
                       struct mbedtls_pk_context *key, struct mbedtls_x509_crt *ca, struct err *e);

#endif
