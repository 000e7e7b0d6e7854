#ifndef OPENSHELL_GW_POLICY_H
#define OPENSHELL_GW_POLICY_H
/*
 * gw_policy.h: shared between gw_policy.c (full revisions: PUT, GET) and
 * gw_policy_ops.c (PATCH: incremental operations). Private to the gateway.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"

struct gw;
struct h2_req;
struct h2_stream;
struct store_list;
struct store_obj;

/* Validate TEXT[LEN] (YAML or JSON) with the policy engine: 0, or -EINVAL
 * with up to five diagnostics in E. */
int gw_policy_check_text(const char *text, size_t len, struct err *e);
/* Whether REQ is under /v1/gateway/ (the global policy). */
bool gw_policy_is_global(const struct h2_req *req);
/* The owner of the revisions REQ names: the sandbox of the path, or the
 * global settings object. NULL after an error answer; else the caller's. */
struct store_obj *gw_policy_owner(struct gw *gw, struct h2_stream *st, struct h2_req *req);
/* Store a validated policy as OWNER's next revision (one transaction with
 * OWNER's CAS update against EXPECT, 0: any). Fills HASH ("sha256:...") and
 * *VERSION. -ESTALE on a conflict (E says the current version). */
int gw_policy_write(struct gw *gw, struct store_obj *owner, uint64_t expect, const char *fmt,
                    const char *text, size_t len, int64_t *version, char hash[72], struct err *e);
/* After a write: wake OWNER's watchers and its supervisor(s). */
void gw_policy_written(struct gw *gw, const struct store_obj *owner);
/* The newest LIMIT revisions of SCOPE (an owner id) into L, oldest first,
 * L->total counting all: the last page, not the first (histories may pass
 * STORE_LIST_MAX). 0 or -errno; release L with store_list_fini(). */
int gw_policy_revisions_newest(struct gw *gw, const char *scope, size_t limit, struct store_list *l,
                               struct err *e);
/* The latest revision of SCOPE into *OUT (the caller's): 0, 1 when none,
 * or -errno. */
int gw_policy_latest(struct gw *gw, const char *scope, struct store_obj **out, struct err *e);
/* PATCH routes of gw_policy_ops.c (called by gw_policy_routes). */
void gw_policy_ops_routes(struct gw *gw);

#endif
