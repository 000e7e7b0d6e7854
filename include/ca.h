#ifndef OPENSHELL_CA_H
#define OPENSHELL_CA_H
/*
 * ca: the per-sandbox certificate authority that lets the proxy terminate
 * the agent's TLS.
 *
 * ca_new() creates an ECDSA P-256 self-signed CA in memory (CN "OpenShell
 * Sandbox CA", O "OpenShell", CA:TRUE, keyCertSign+cRLSign). Its private key
 * never leaves this process: only the certificate is exported, as PEM alone
 * (ca_cert_pem) or appended to the system trust bundle (ca_bundle_pem), which
 * is what the agent is given.
 *
 * ca_leaf_get() returns a leaf for one host (SAN dNSName, or iPAddress for an
 * IP literal; CN = host; fresh P-256 key; serverAuth; chain [leaf, CA]),
 * minted on first use and cached: up to CA_CACHE_MAX hosts, the whole cache
 * dropped when full. Leaves are reference counted: the caller owns one
 * reference and releases it with ca_leaf_put(), so dropping the cache never
 * frees a leaf a live connection still uses. The ca must outlive its leaves'
 * users only for minting; leaves are self-contained.
 */
#include <stddef.h>

#include "buf.h"
#include "err.h"

struct ca;
struct ca_leaf;
struct mbedtls_x509_crt;
struct mbedtls_pk_context;

#define CA_CACHE_MAX 256
#define CA_COMMON_NAME "OpenShell Sandbox CA"

/* A new CA, or NULL with E set (random generator or key failure). Calls
 * tls_global_init(). Free with ca_free(). */
struct ca *ca_new(struct err *e);
void ca_free(struct ca *ca);

/* Append the CA certificate as PEM to OUT. */
void ca_cert_pem(const struct ca *ca, struct buf *out);

/* Append the trust bundle to OUT: SYSTEM_BUNDLE's contents (NULL: the first
 * existing system bundle; none is not an error) followed by the CA's PEM.
 * Returns 0 or -errno with E set (unreadable bundle). */
int ca_bundle_pem(const struct ca *ca, const char *system_bundle, struct buf *out, struct err *e);

/* The leaf for HOST (a DNS name or an IP literal, at most 253 bytes),
 * minted or from the cache, with one reference for the caller. Returns NULL
 * with E set on a bad host or an mbedTLS failure. */
struct ca_leaf *ca_leaf_get(struct ca *ca, const char *host, struct err *e);
void ca_leaf_put(struct ca_leaf *leaf);
/* The chain (leaf then CA) and the leaf's key, for tls_server_opts. Valid
 * while the caller holds its reference. */
struct mbedtls_x509_crt *ca_leaf_chain(struct ca_leaf *leaf);
struct mbedtls_pk_context *ca_leaf_key(struct ca_leaf *leaf);

/* How many hosts the cache holds, and how many leaves were minted in all. */
size_t ca_cache_count(const struct ca *ca);
size_t ca_minted(const struct ca *ca);

#endif
