#ifndef OPENSHELL_STORE_H
#define OPENSHELL_STORE_H
/*
 * store: the gateway's durable state, one SQLite database in WAL mode.
 *
 * Everything lives in one `objects` table: (id, object_type, name, workspace,
 * resource_version, payload JSON, labels JSON, created/updated timestamps,
 * and for versioned children such as policy revisions: scope, version,
 * status). Every write is compare-and-swap on resource_version; a write is on
 * disk (WAL fsynced, synchronous=FULL) before the call returns, so the
 * gateway may acknowledge it as soon as it succeeds.
 *
 * The schema evolves by numbered migrations recorded in `schema_migrations`;
 * each is applied in its own transaction, and a database whose schema is
 * newer than this binary is refused (never downgraded or guessed at).
 *
 * One `struct store` is one connection, used from one thread (the gateway's
 * loop). Objects returned by store_get*() and lists are heap-allocated and
 * owned by the caller (store_obj_free(), store_list_fini()). A busy database
 * (another process holding the write lock) is retried for the busy timeout,
 * then reported as -EBUSY.
 *
 * Error codes (negative errno, E filled with what, where and why):
 *   -ENOENT   no such object
 *   -EEXIST   an object of that type and name already exists in the workspace
 *   -ESTALE   resource_version mismatch (CAS conflict); see store_obj.resource_version
 *   -EBUSY    database locked past the busy timeout
 *   -EINVAL   bad argument (label selector, JSON, name)
 *   -EPROTO   database schema newer than this binary
 *   -EUCLEAN  the file is not a database or is corrupt
 *   -ENOSPC, -EROFS, -EACCES, -EIO as the file system says
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"

struct store;

/* The schema version this binary creates and understands. */
#define STORE_SCHEMA_VERSION 2
/* The database file name inside the state directory. */
#define STORE_DB_NAME "openshell.db"
/* Label selectors: at most this many k=v pairs. */
#define STORE_MAX_SELECTOR 64
#define STORE_LIST_DEFAULT 100
#define STORE_LIST_MAX 1000

struct store_opts {
    /* Wait this long for a locked database before -EBUSY (0: 5000 ms). */
    int busy_timeout_ms;
    /* Tests only: stop migrating at this schema version (0: latest). */
    int max_schema;
};

/* One row. Strings are owned by the object (store_obj_free). */
struct store_obj {
    char *id;        /* UUID text */
    char *type;      /* "sandbox", "sandbox_policy", ... */
    char *name;      /* NULL for unnamed children (revisions) */
    char *workspace; /* "" for gateway-global objects */
    uint64_t resource_version;
    char *payload; /* JSON text */
    char *labels;  /* JSON object text, "{}" when none */
    int64_t created_at_ms;
    int64_t updated_at_ms;
    char *scope;     /* owner id for children, else NULL */
    int64_t version; /* child version number, 0 when none */
    char *status;    /* child status ("pending", ...), else NULL */
};

struct store_list {
    struct store_obj **items;
    size_t n;
    size_t total; /* matches before limit/offset */
};

struct store_query {
    const char *type;           /* required */
    const char *workspace;      /* NULL: every workspace */
    const char *label_selector; /* "k=v,k2=v2" or NULL */
    const char *scope;          /* NULL: any */
    size_t limit;               /* 0: STORE_LIST_DEFAULT; capped at STORE_LIST_MAX */
    size_t offset;
};

/*
 * Open (creating if needed) DIR/openshell.db: DIR is created 0700 when
 * missing, the file is 0600. Sets WAL, synchronous=FULL, foreign keys, the
 * busy timeout, then applies pending migrations. O may be NULL.
 * Returns 0 and *OUT, or a negative errno with E set.
 */
int store_open(const char *dir, const struct store_opts *o, struct store **out, struct err *e);
void store_close(struct store *s);

/* The schema version of the open database. */
int store_schema_version(struct store *s);
/* A quick health probe (SELECT 1 + quick_check of the header). 0 or -errno. */
int store_ping(struct store *s, struct err *e);

/* A fresh random UUID v4 in OUT[37]. */
void store_new_id(char out[37]);
/* Wall-clock milliseconds, as stored in timestamps. */
int64_t store_now_ms(void);

/*
 * Insert O (MustCreate). O->id, type, workspace and payload are required;
 * labels NULL means "{}". Sets resource_version = 1 and the timestamps in O.
 * -EEXIST on a duplicate id or (type, workspace, name).
 */
int store_create(struct store *s, struct store_obj *o, struct err *e);

/*
 * CAS update of O (found by type and id): payload, labels, status
 * (name, workspace and scope are immutable). EXPECTED_RV 0 means "whatever
 * is current" (internal callers). On success O->resource_version and
 * updated_at_ms hold the new values. -ESTALE when the stored version differs
 * (O->resource_version is then set to the current one), -ENOENT when gone.
 */
int store_update(struct store *s, struct store_obj *o, uint64_t expected_rv, struct err *e);

/* CAS delete; EXPECTED_RV 0 deletes whatever is current. Children whose
 * scope is ID are deleted in the same transaction. -ESTALE / -ENOENT. */
int store_delete(struct store *s, const char *type, const char *id, uint64_t expected_rv,
                 struct err *e);

/* One object by id, or by (type, workspace, name). *OUT is the caller's. */
int store_get(struct store *s, const char *type, const char *id, struct store_obj **out,
              struct err *e);
int store_get_by_name(struct store *s, const char *type, const char *workspace, const char *name,
                      struct store_obj **out, struct err *e);

/* Objects matching Q, ordered by created_at_ms, name, id (by version when
 * Q->scope is set: revisions). OUT is
 * initialised here; release with store_list_fini(). -EINVAL for a bad
 * selector (E says which pair and why). */
int store_list(struct store *s, const struct store_query *q, struct store_list *out, struct err *e);
void store_list_fini(struct store_list *l);

void store_obj_free(struct store_obj *o);
/* A deep copy of O. */
struct store_obj *store_obj_dup(const struct store_obj *o);

/* Validate a label selector "k=v,k2=v2" (K8s label syntax, equality only).
 * 0 or -EINVAL with E naming the bad pair. */
int store_selector_check(const char *sel, struct err *e);

/* Validate one label KEY = VALUE with the same rules. 0 or -EINVAL. */
int store_label_check(const char *key, const char *value, struct err *e);

/*
 * A policy revision for OWNER (a CAS update of OWNER with EXPECTED_RV, plus
 * a new child row of type CHILD_TYPE, scope OWNER->id, version = last + 1,
 * status "pending", payload PAYLOAD; older "pending" revisions become
 * "superseded"), all in one transaction: either everything is on disk or
 * nothing is. *VERSION_OUT gets the new revision number. Errors as
 * store_update.
 */
int store_put_revision(struct store *s, struct store_obj *owner, uint64_t expected_rv,
                       const char *child_type, const char *payload, int64_t *version_out,
                       struct err *e);

/* Set the status of revision VERSION under SCOPE ("loaded" also marks older
 * "loaded"/"pending" revisions "superseded"), and when LOAD_ERROR is not
 * NULL its payload's "load_error", one transaction. -ENOENT. */
int store_set_revision_status(struct store *s, const char *child_type, const char *scope,
                              int64_t version, const char *status, const char *load_error,
                              struct err *e);

#endif
