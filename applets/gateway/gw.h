#ifndef OPENSHELL_GW_H
#define OPENSHELL_GW_H
/*
 * gw.h: private to the openshell-gateway applet. One `struct gw` per
 * process holds the loop, the store, the HTTP/2 server and its router, the
 * listeners and the in-memory watch subscribers. Handlers live in
 * gateway.c (health, info), gw_sandbox.c (sandboxes, watch, the compute
 * driver), gw_session.c (supervisor sessions, relays: exec and files),
 * gw_log.c (logs), gw_supervisor.c (tokens, config), gw_policy.c,
 * gw_settings.c, gw_workspace.c, gw_provider.c and gw_inference.c.
 */
#include <stdbool.h>
#include <sys/types.h>

struct evconnlistener;
struct h2_router;
struct h2_server;
struct h2_stream;
struct loop;
struct loop_timer;
struct store;
struct store_obj;
struct gw_watch;
struct cJSON;
struct err;

struct drv;
struct gw_session;
struct gw_relay;

struct gw {
    struct loop *loop;
    struct store *store;
    struct h2_router *router;
    struct h2_server *srv;
    struct evconnlistener *unix_lst;
    struct evconnlistener *tls_lst;
    struct loop_timer *stop_timer;
    char *state_dir;
    char *sock_path;
    uid_t owner_uid;
    unsigned long long started_ms;
    bool stopping;
    struct gw_watch *watches;
    unsigned long nwatches;
    struct drv *drv;             /* --compute-driver local; NULL: records only */
    struct gw_session *sessions; /* supervisor sessions (gw_session.c) */
    struct gw_relay *relays;     /* pending and spliced relays */
    struct loop_timer *ping_timer;
};

/* Local callers allowed: root or the gateway's own uid (SO_PEERCRED).
 * Answers 401 and returns false otherwise. */
bool gw_authorized(struct gw *gw, struct h2_stream *st);

/* The sandbox named by a route's {ws} and {name} (params 0 and 1), the
 * caller's to free; or NULL after answering the error (404 naming both). */
struct h2_req;
struct store_obj *gw_sandbox_lookup(struct gw *gw, struct h2_stream *st, const struct h2_req *req);
/* Set status.phase of sandbox O to PHASE (and status.exit_code to
 * *EXIT_CODE unless NULL) in O's payload, store it and wake O's watchers.
 * 0 or -errno with E. */
int gw_sandbox_set_phase(struct gw *gw, struct store_obj *o, const char *phase,
                         const int *exit_code, struct err *e);
/* Register the sandbox routes on GW's router. */
void gw_sandbox_routes(struct gw *gw);
/* Sandbox O (id ID) changed, or was deleted (O NULL): tell its watchers. */
void gw_watch_notify(struct gw *gw, const char *id, const struct store_obj *o);
/* The local driver: start sandbox ID (mint its token, write it 0600,
 * start its supervisor, idle without a command). 0 or -errno with E. */
int gw_sandbox_start(struct gw *gw, const char *id, const char *name, const struct cJSON *command,
                     struct err *e);
/* At start, with a driver: finish deletes and creates a crash cut short,
 * remove driver state without a record. Supervisors reconnect by themselves. */
void gw_sandbox_reconcile(struct gw *gw);
/* Free the deletes still in progress (exit). */
void gw_sandbox_fini(struct gw *gw);
/* Register the policy revision routes (gw_policy.c). */
void gw_policy_routes(struct gw *gw);
/* Validate a policy given as JSON with the policy engine. 0 or -EINVAL. */
int gw_policy_check_json(const struct cJSON *policy, struct err *e);
/* Workspaces (gw_workspace.c): routes; 0 when WS exists, -ENOENT with a
 * message when not; create "default" when missing. */
void gw_workspace_routes(struct gw *gw);
int gw_workspace_check(struct gw *gw, const char *ws, struct err *e);
int gw_workspace_ensure_default(struct gw *gw, struct err *e);
/* Labels: a string map under the rules of store_label_check. */
int gw_labels_check(const struct cJSON *labels, struct err *e);
/* A JSON content type, or a 415 answer and -1. */
int gw_require_json(struct h2_stream *st);
/* Global and per-sandbox settings (gw_settings.c). */
void gw_settings_routes(struct gw *gw);
/* The global settings object (created on first use); owner of the global
 * policy revisions. *OUT is the caller's. */
int gw_settings_global(struct gw *gw, struct store_obj **out, struct err *e);
/* {"settings":{k:{"value","scope"}},"revision","global_revision"} for
 * sandbox SB (the caller deletes it), or NULL with *RC and E. */
struct cJSON *gw_settings_effective(struct gw *gw, const struct store_obj *sb, struct err *e,
                                    int *rc);
/* Sandbox tokens and /v1/supervisor/... (gw_supervisor.c). */
void gw_supervisor_routes(struct gw *gw);
/* Mint a token for sandbox SANDBOX_ID into OUT[SIZE >= 48] (older ones
 * revoked). 0 or -errno with E. */
int gw_token_mint(struct gw *gw, const char *sandbox_id, char *out, size_t size, struct err *e);
/* The sandbox whose token the request bears (*OUT, the caller's), or a
 * 401 answer and -EPERM (another negative errno after an error answer). */
int gw_sandbox_principal(struct gw *gw, struct h2_stream *st, struct store_obj **out);
/* Supervisor sessions (gw_session.c): POST /v1/supervisor/session, relays. */
void gw_session_routes(struct gw *gw);
/* Send {"type":"config","reason":REASON} on the session of sandbox
 * SANDBOX_ID (NULL: every session) so the supervisor refetches
 * /v1/supervisor/config (and /credentials). A no-op without a session. */
void gw_supervisor_notify(struct gw *gw, const char *sandbox_id, const char *reason);
/* End every session and relay (shutdown); free the registry (exit). */
void gw_session_end_all(struct gw *gw);
void gw_session_fini(struct gw *gw);
/* status.supervisor of sandbox ID: {"connected","since_ms","pid",...}
 * (the caller deletes it). */
struct cJSON *gw_session_status(struct gw *gw, const char *id);
bool gw_session_connected(struct gw *gw, const char *id);
/* Connected sessions and open (pending or spliced) relays. */
void gw_session_counts(struct gw *gw, size_t *sessions, size_t *relays);
/* Sandbox ID is gone: drop its session. */
void gw_session_forget(struct gw *gw, const char *id);
/* Apply a supervisor's policy load report for sandbox SANDBOX_ID (as POST
 * /v1/supervisor/policy-status). 0 or -errno with E. */
int gw_policy_status_apply(struct gw *gw, const char *sandbox_id, long long version,
                           const char *status, const char *load_error, const char *source,
                           struct err *e);
/* Sandbox logs (gw_log.c): append a batch of supervisor lines (a JSON
 * array), the GET .../logs route, end the followers of ID (NULL: all). */
void gw_log_append(struct gw *gw, const char *id, const struct cJSON *lines);
void gw_log_routes(struct gw *gw);
void gw_log_end(struct gw *gw, const char *id, const char *why);
/* Remove sandbox ID's log files and its then empty directory (a delete
 * without a driver; with one, drv_delete() removes the directory). */
void gw_log_remove(struct gw *gw, const char *id);
/* STATE_DIR/sandboxes/ID, created 0700 when missing; the caller frees. */
char *gw_sandbox_dir(struct gw *gw, const char *id);
/* A rendered log line (LINE[N], newline ended) of sandbox ID for the
 * watchers that asked for logs (?logs=1). */
void gw_watch_log(struct gw *gw, const char *id, const char *line, size_t n);
/* End every watch stream (shutdown). */
void gw_watch_end_all(struct gw *gw, const char *why);

#endif
