/*
 * store.c: the gateway's SQLite state (see include/store.h for the contract).
 *
 * Durability: WAL with synchronous=FULL fsyncs the WAL at every commit, so a
 * write that returned 0 survives a crash or power loss; a transaction cut by
 * kill -9 is simply absent after the next open (SQLite's WAL recovery ignores
 * frames without a valid commit record). Writes that touch more than one row
 * use BEGIN IMMEDIATE so that the write lock is taken up front and a busy
 * database is reported before anything is done.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "buf.h"
#include "store.h"
#include "xfuncs.h"

struct store {
    sqlite3 *db;
    char *path;
    int schema;
};

/* Numbered migrations: index + 1 is the version. Never edit a released one;
 * append a new one. */
static const char *const store_migrations[] = {
    /* 1: the objects table. name is unique per (type, workspace). */
    "CREATE TABLE objects("
    " id TEXT PRIMARY KEY NOT NULL,"
    " object_type TEXT NOT NULL,"
    " name TEXT,"
    " workspace TEXT NOT NULL DEFAULT '',"
    " resource_version INTEGER NOT NULL DEFAULT 1,"
    " payload TEXT NOT NULL CHECK (json_valid(payload)),"
    " labels TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(labels) AND"
    "   json_type(labels) = 'object'),"
    " created_at_ms INTEGER NOT NULL,"
    " updated_at_ms INTEGER NOT NULL);"
    "CREATE UNIQUE INDEX objects_name_uq ON objects(object_type, workspace, name)"
    " WHERE name IS NOT NULL;"
    "CREATE INDEX objects_type_created ON objects(object_type, created_at_ms);",
    /* 2: versioned children (policy revisions): owner id, number, status. */
    "ALTER TABLE objects ADD COLUMN scope TEXT;"
    "ALTER TABLE objects ADD COLUMN version INTEGER;"
    "ALTER TABLE objects ADD COLUMN status TEXT;"
    "CREATE UNIQUE INDEX objects_scope_version_uq ON objects(object_type, scope, version)"
    " WHERE scope IS NOT NULL AND version IS NOT NULL;"
    "CREATE INDEX objects_scope_status ON objects(object_type, scope, status, version)"
    " WHERE scope IS NOT NULL;",
};

_Static_assert(sizeof(store_migrations) / sizeof(store_migrations[0]) == STORE_SCHEMA_VERSION,
               "STORE_SCHEMA_VERSION must match the migration list");

#define OBJ_COLS                                                                                   \
    "id, object_type, name, workspace, resource_version, payload, labels, created_at_ms,"          \
    " updated_at_ms, scope, version, status"

/* Translate an SQLite result code into a negative errno with a message. */
static int
sq_fail(struct store *s, struct err *e, int rc, const char *what)
{
    int code;

    switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED: code = EBUSY; break;
    case SQLITE_CONSTRAINT:
        code = (rc == SQLITE_CONSTRAINT_UNIQUE || rc == SQLITE_CONSTRAINT_PRIMARYKEY) ? EEXIST
                                                                                      : EINVAL;
        break;
    case SQLITE_NOTADB:
    case SQLITE_CORRUPT: code = EUCLEAN; break;
    case SQLITE_FULL: code = ENOSPC; break;
    case SQLITE_READONLY: code = EROFS; break;
    case SQLITE_PERM:
    case SQLITE_AUTH: code = EACCES; break;
    case SQLITE_NOMEM: code = ENOMEM; break;
    case SQLITE_CANTOPEN:
        code = s && s->db && sqlite3_system_errno(s->db) ? sqlite3_system_errno(s->db) : EACCES;
        break;
    default: code = EIO;
    }
    return err_set(e, code, "%s: %s", what,
                   s && s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc));
}

static int
sq_exec(struct store *s, const char *sql, const char *what, struct err *e)
{
    int rc = sqlite3_exec(s->db, sql, NULL, NULL, NULL);

    return rc == SQLITE_OK ? 0 : sq_fail(s, e, rc, what);
}

static int
sq_prepare(struct store *s, const char *sql, sqlite3_stmt **st, struct err *e)
{
    int rc = sqlite3_prepare_v2(s->db, sql, -1, st, NULL);

    return rc == SQLITE_OK ? 0 : sq_fail(s, e, rc, "preparing statement");
}

static int
txn_begin(struct store *s, struct err *e)
{
    return sq_exec(s, "BEGIN IMMEDIATE", "starting a write transaction", e);
}

static int
txn_commit(struct store *s, struct err *e)
{
    return sq_exec(s, "COMMIT", "committing", e);
}

static void
txn_rollback(struct store *s)
{
    if (!sqlite3_get_autocommit(s->db))
        sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
}

void
store_new_id(char out[37])
{
    unsigned char r[16];

    xgetrandom(r, sizeof(r));
    r[6] = (unsigned char)((r[6] & 0x0f) | 0x40); /* version 4 */
    r[8] = (unsigned char)((r[8] & 0x3f) | 0x80); /* RFC 4122 variant */
    snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", r[0],
             r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10], r[11], r[12], r[13],
             r[14], r[15]);
}

int64_t
store_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The highest applied migration (0 for a fresh database). */
static int
schema_current(struct store *s, int *out, struct err *e)
{
    sqlite3_stmt *st = NULL;
    int rc;

    if ((rc = sq_prepare(s, "SELECT coalesce(max(version), 0) FROM schema_migrations", &st, e)) < 0)
        return err_wrap(e, "reading the schema version");
    rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) {
        rc = sq_fail(s, e, rc, "reading the schema version");
        sqlite3_finalize(st);
        return rc;
    }
    *out = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    return 0;
}

/* Apply pending migrations, each in its own transaction, up to LIMIT. */
static int
store_migrate(struct store *s, int limit, struct err *e)
{
    int cur = 0, rc;

    if ((rc = sq_exec(s,
                      "CREATE TABLE IF NOT EXISTS schema_migrations("
                      " version INTEGER PRIMARY KEY, applied_at_ms INTEGER NOT NULL)",
                      "creating schema_migrations", e)) < 0)
        return rc;
    for (;;) {
        char sql[128];

        if ((rc = txn_begin(s, e)) < 0)
            return rc;
        /* Read inside the write lock: another process may have migrated. */
        if ((rc = schema_current(s, &cur, e)) < 0)
            goto fail;
        if (cur > STORE_SCHEMA_VERSION) {
            rc = err_set(e, EPROTO,
                         "database schema version %d is newer than this binary's %d: "
                         "refusing to use it (upgrade openshell-gateway)",
                         cur, STORE_SCHEMA_VERSION);
            goto fail;
        }
        if (cur >= limit) {
            txn_rollback(s);
            s->schema = cur;
            return 0;
        }
        if ((rc = sq_exec(s, store_migrations[cur], "applying migration", e)) < 0) {
            err_wrap(e, "migration %d", cur + 1);
            goto fail;
        }
        snprintf(sql, sizeof(sql),
                 "INSERT INTO schema_migrations(version, applied_at_ms) VALUES (%d, %lld)", cur + 1,
                 (long long)store_now_ms());
        if ((rc = sq_exec(s, sql, "recording migration", e)) < 0)
            goto fail;
        if ((rc = txn_commit(s, e)) < 0)
            goto fail;
    }
fail:
    txn_rollback(s);
    return rc;
}

int
store_open(const char *dir, const struct store_opts *o, struct store **out, struct err *e)
{
    struct store *s;
    int fd, rc, limit = STORE_SCHEMA_VERSION;
    int busy = 5000;

    *out = NULL;
    if (o && o->busy_timeout_ms > 0)
        busy = o->busy_timeout_ms;
    if (o && o->max_schema > 0 && o->max_schema < limit)
        limit = o->max_schema;
    if (mkdir(dir, 0700) < 0 && errno != EEXIST)
        return err_errno(e, "creating state directory %s", dir);
    s = xcalloc(1, sizeof(*s));
    s->path = xasprintf("%s/%s", dir, STORE_DB_NAME);
    /* Create the file ourselves so it is 0600 whatever the umask; SQLite
     * gives the -wal and -shm files the database file's mode. */
    fd = open(s->path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        rc = err_errno(e, "opening %s", s->path);
        goto fail;
    }
    close(fd);
    rc =
        sqlite3_open_v2(s->path, &s->db,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOFOLLOW | SQLITE_OPEN_EXRESCODE, NULL);
    if (rc != SQLITE_OK) {
        rc = sq_fail(s, e, rc, "opening database");
        goto fail_ctx;
    }
    sqlite3_busy_timeout(s->db, busy);
    /* journal_mode=WAL is persistent and reports the mode in force; a file
     * that is not a database fails here with SQLITE_NOTADB. */
    {
        sqlite3_stmt *st = NULL;

        rc = sqlite3_prepare_v2(s->db, "PRAGMA journal_mode=WAL", -1, &st, NULL);
        if (rc != SQLITE_OK) {
            rc = sq_fail(s, e, rc, "reading the database");
            goto fail_ctx;
        }
        rc = sqlite3_step(st);
        if (rc != SQLITE_ROW) {
            rc = sq_fail(s, e, rc, "enabling WAL");
            sqlite3_finalize(st);
            goto fail_ctx;
        }
        if (strcmp((const char *)sqlite3_column_text(st, 0), "wal") != 0) {
            rc = err_set(e, EIO, "enabling WAL: journal mode stays %s", sqlite3_column_text(st, 0));
            sqlite3_finalize(st);
            goto fail_ctx;
        }
        sqlite3_finalize(st);
    }
    if ((rc = sq_exec(s,
                      "PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;"
                      " PRAGMA trusted_schema=OFF",
                      "setting pragmas", e)) < 0)
        goto fail_ctx;
    if ((rc = store_migrate(s, limit, e)) < 0)
        goto fail_ctx;
    *out = s;
    return 0;
fail_ctx:
    err_wrap(e, "%s", s->path);
fail:
    store_close(s);
    return rc;
}

void
store_close(struct store *s)
{
    if (!s)
        return;
    if (s->db)
        sqlite3_close_v2(s->db);
    free(s->path);
    free(s);
}

int
store_schema_version(struct store *s)
{
    return s->schema;
}

int
store_ping(struct store *s, struct err *e)
{
    sqlite3_stmt *st = NULL;
    int rc;

    if ((rc = sq_prepare(s, "SELECT count(*) FROM schema_migrations", &st, e)) < 0)
        return rc;
    rc = sqlite3_step(st);
    rc = rc == SQLITE_ROW ? 0 : sq_fail(s, e, rc, "pinging database");
    sqlite3_finalize(st);
    return rc;
}

/* ------------------------------------------------------------------ objects */

static char *
col_str(sqlite3_stmt *st, int i)
{
    const unsigned char *t = sqlite3_column_text(st, i);

    return t ? xstrdup((const char *)t) : NULL;
}

static struct store_obj *
obj_from_row(sqlite3_stmt *st)
{
    struct store_obj *o = xcalloc(1, sizeof(*o));

    o->id = col_str(st, 0);
    o->type = col_str(st, 1);
    o->name = col_str(st, 2);
    o->workspace = col_str(st, 3);
    o->resource_version = (uint64_t)sqlite3_column_int64(st, 4);
    o->payload = col_str(st, 5);
    o->labels = col_str(st, 6);
    o->created_at_ms = sqlite3_column_int64(st, 7);
    o->updated_at_ms = sqlite3_column_int64(st, 8);
    o->scope = col_str(st, 9);
    o->version = sqlite3_column_int64(st, 10);
    o->status = col_str(st, 11);
    return o;
}

void
store_obj_free(struct store_obj *o)
{
    if (!o)
        return;
    free(o->id);
    free(o->type);
    free(o->name);
    free(o->workspace);
    free(o->payload);
    free(o->labels);
    free(o->scope);
    free(o->status);
    free(o);
}

static char *
dup_or_null(const char *s)
{
    return s ? xstrdup(s) : NULL;
}

struct store_obj *
store_obj_dup(const struct store_obj *o)
{
    struct store_obj *d = xcalloc(1, sizeof(*d));

    *d = *o;
    d->id = dup_or_null(o->id);
    d->type = dup_or_null(o->type);
    d->name = dup_or_null(o->name);
    d->workspace = dup_or_null(o->workspace);
    d->payload = dup_or_null(o->payload);
    d->labels = dup_or_null(o->labels);
    d->scope = dup_or_null(o->scope);
    d->status = dup_or_null(o->status);
    return d;
}

static void
bind_text(sqlite3_stmt *st, int i, const char *s)
{
    if (s)
        sqlite3_bind_text(st, i, s, -1, SQLITE_TRANSIENT);
    else
        sqlite3_bind_null(st, i);
}

/* Run a statement expected to return no rows. */
static int
step_done(struct store *s, sqlite3_stmt *st, const char *what, struct err *e)
{
    int rc = sqlite3_step(st);

    rc = rc == SQLITE_DONE ? 0 : sq_fail(s, e, rc, what);
    sqlite3_finalize(st);
    return rc;
}

static int
obj_insert(struct store *s, struct store_obj *o, struct err *e)
{
    sqlite3_stmt *st = NULL;
    int rc;

    if (!o->id || !o->type || !o->workspace || !o->payload)
        return err_set(e, EINVAL, "creating object: id, type, workspace and payload are required");
    if ((rc = sq_prepare(s,
                         "INSERT INTO objects(" OBJ_COLS ") VALUES (?1, ?2, ?3, ?4, 1, ?5, ?6, ?7,"
                         " ?7, ?8, ?9, ?10)",
                         &st, e)) < 0)
        return rc;
    o->created_at_ms = o->updated_at_ms = store_now_ms();
    bind_text(st, 1, o->id);
    bind_text(st, 2, o->type);
    bind_text(st, 3, o->name);
    bind_text(st, 4, o->workspace);
    bind_text(st, 5, o->payload);
    bind_text(st, 6, o->labels ? o->labels : "{}");
    sqlite3_bind_int64(st, 7, o->created_at_ms);
    bind_text(st, 8, o->scope);
    if (o->version)
        sqlite3_bind_int64(st, 9, o->version);
    else
        sqlite3_bind_null(st, 9);
    bind_text(st, 10, o->status);
    rc = step_done(s, st, "inserting", e);
    if (rc == -EEXIST)
        return err_set(e, EEXIST, "%s %s already exists", o->type, o->name ? o->name : o->id);
    if (rc < 0)
        return err_wrap(e, "creating %s %s", o->type, o->name ? o->name : o->id);
    o->resource_version = 1;
    return 0;
}

int
store_create(struct store *s, struct store_obj *o, struct err *e)
{
    return obj_insert(s, o, e);
}

/* The current resource_version of (TYPE, ID): 0 and -ENOENT when absent. */
static int
current_rv(struct store *s, const char *type, const char *id, uint64_t *rv, struct err *e)
{
    sqlite3_stmt *st = NULL;
    int rc;

    if ((rc = sq_prepare(s, "SELECT resource_version FROM objects WHERE object_type=?1 AND id=?2",
                         &st, e)) < 0)
        return rc;
    bind_text(st, 1, type);
    bind_text(st, 2, id);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *rv = (uint64_t)sqlite3_column_int64(st, 0);
        rc = 0;
    } else if (rc == SQLITE_DONE) {
        *rv = 0;
        rc = err_set(e, ENOENT, "%s %s not found", type, id);
    } else {
        rc = sq_fail(s, e, rc, "reading resource_version");
    }
    sqlite3_finalize(st);
    return rc;
}

/* The CAS update itself; the caller holds the transaction. */
static int
obj_update(struct store *s, struct store_obj *o, uint64_t expected, struct err *e)
{
    sqlite3_stmt *st = NULL;
    uint64_t cur;
    int64_t now = store_now_ms();
    int rc;

    if ((rc = current_rv(s, o->type, o->id, &cur, e)) < 0)
        return rc;
    if (expected && cur != expected) {
        o->resource_version = cur;
        return err_set(e, ESTALE, "%s %s: resource_version is %llu, not %llu", o->type,
                       o->name ? o->name : o->id, (unsigned long long)cur,
                       (unsigned long long)expected);
    }
    if ((rc = sq_prepare(s,
                         "UPDATE objects SET payload=?1, labels=?2, status=?3,"
                         " resource_version=resource_version+1, updated_at_ms=?4"
                         " WHERE object_type=?5 AND id=?6 AND resource_version=?7",
                         &st, e)) < 0)
        return rc;
    bind_text(st, 1, o->payload);
    bind_text(st, 2, o->labels ? o->labels : "{}");
    bind_text(st, 3, o->status);
    sqlite3_bind_int64(st, 4, now);
    bind_text(st, 5, o->type);
    bind_text(st, 6, o->id);
    sqlite3_bind_int64(st, 7, (sqlite3_int64)cur);
    if ((rc = step_done(s, st, "updating", e)) < 0)
        return err_wrap(e, "%s %s", o->type, o->id);
    if (sqlite3_changes(s->db) != 1)
        BUG(); /* we hold the write lock and just read cur */
    o->resource_version = cur + 1;
    o->updated_at_ms = now;
    return 0;
}

int
store_update(struct store *s, struct store_obj *o, uint64_t expected_rv, struct err *e)
{
    int rc;

    if ((rc = txn_begin(s, e)) < 0)
        return rc;
    if ((rc = obj_update(s, o, expected_rv, e)) < 0 || (rc = txn_commit(s, e)) < 0) {
        txn_rollback(s);
        return rc;
    }
    return 0;
}

int
store_delete(struct store *s, const char *type, const char *id, uint64_t expected_rv, struct err *e)
{
    sqlite3_stmt *st = NULL;
    uint64_t cur;
    int rc;

    if ((rc = txn_begin(s, e)) < 0)
        return rc;
    if ((rc = current_rv(s, type, id, &cur, e)) < 0)
        goto fail;
    if (expected_rv && cur != expected_rv) {
        rc = err_set(e, ESTALE, "%s %s: resource_version is %llu, not %llu", type, id,
                     (unsigned long long)cur, (unsigned long long)expected_rv);
        goto fail;
    }
    if ((rc = sq_prepare(s, "DELETE FROM objects WHERE scope=?1", &st, e)) < 0)
        goto fail;
    bind_text(st, 1, id);
    if ((rc = step_done(s, st, "deleting children", e)) < 0)
        goto fail;
    if ((rc = sq_prepare(s, "DELETE FROM objects WHERE object_type=?1 AND id=?2", &st, e)) < 0)
        goto fail;
    bind_text(st, 1, type);
    bind_text(st, 2, id);
    if ((rc = step_done(s, st, "deleting", e)) < 0)
        goto fail;
    if ((rc = txn_commit(s, e)) < 0)
        goto fail;
    return 0;
fail:
    txn_rollback(s);
    return rc;
}

static int
get_one(struct store *s, sqlite3_stmt *st, const char *what, struct store_obj **out, struct err *e)
{
    int rc = sqlite3_step(st);

    *out = NULL;
    if (rc == SQLITE_ROW) {
        *out = obj_from_row(st);
        rc = 0;
    } else if (rc == SQLITE_DONE) {
        rc = err_set(e, ENOENT, "%s not found", what);
    } else {
        rc = sq_fail(s, e, rc, what);
    }
    sqlite3_finalize(st);
    return rc;
}

int
store_get(struct store *s, const char *type, const char *id, struct store_obj **out, struct err *e)
{
    sqlite3_stmt *st = NULL;
    char what[256];
    int rc;

    *out = NULL;
    if ((rc = sq_prepare(s, "SELECT " OBJ_COLS " FROM objects WHERE object_type=?1 AND id=?2", &st,
                         e)) < 0)
        return rc;
    bind_text(st, 1, type);
    bind_text(st, 2, id);
    snprintf(what, sizeof(what), "%s %s", type, id);
    return get_one(s, st, what, out, e);
}

int
store_get_by_name(struct store *s, const char *type, const char *workspace, const char *name,
                  struct store_obj **out, struct err *e)
{
    sqlite3_stmt *st = NULL;
    char what[256];
    int rc;

    *out = NULL;
    if ((rc = sq_prepare(s,
                         "SELECT " OBJ_COLS " FROM objects WHERE object_type=?1 AND"
                         " workspace=?2 AND name=?3",
                         &st, e)) < 0)
        return rc;
    bind_text(st, 1, type);
    bind_text(st, 2, workspace);
    bind_text(st, 3, name);
    snprintf(what, sizeof(what), "%s %s", type, name);
    return get_one(s, st, what, out, e);
}

/* ------------------------------------------------------------------ labels */

static bool
label_alnum(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

/* A K8s label name or value: at most 63 of [A-Za-z0-9._-], alphanumeric at
 * both ends; empty allowed only for values. */
static bool
label_word_ok(const char *p, size_t n, bool allow_empty)
{
    if (n == 0)
        return allow_empty;
    if (n > 63 || !label_alnum(p[0]) || !label_alnum(p[n - 1]))
        return false;
    for (size_t i = 0; i < n; i++)
        if (!label_alnum(p[i]) && p[i] != '-' && p[i] != '_' && p[i] != '.')
            return false;
    return true;
}

/* A key: [prefix/]name, prefix a DNS subdomain of at most 253 characters. */
static bool
label_key_ok(const char *p, size_t n)
{
    const char *slash = memchr(p, '/', n);

    if (slash) {
        size_t pn = (size_t)(slash - p);
        if (pn == 0 || pn > 253)
            return false;
        for (size_t i = 0; i < pn; i++)
            if (!((p[i] >= 'a' && p[i] <= 'z') || (p[i] >= '0' && p[i] <= '9') || p[i] == '-' ||
                  p[i] == '.'))
                return false;
        return label_word_ok(slash + 1, n - pn - 1, false);
    }
    return label_word_ok(p, n, false);
}

struct sel_pair {
    char *key;
    char *val;
};

static void
sel_free(struct sel_pair *pairs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(pairs[i].key);
        free(pairs[i].val);
    }
}

/* Parse SEL into PAIRS[STORE_MAX_SELECTOR]; *N gets the count. */
static int
sel_parse(const char *sel, struct sel_pair *pairs, size_t *n, struct err *e)
{
    const char *p = sel;

    *n = 0;
    if (!sel || !*sel)
        return 0;
    for (;;) {
        const char *end = strchr(p, ','), *eq;
        size_t len = end ? (size_t)(end - p) : strlen(p);

        eq = memchr(p, '=', len);
        if (!eq) {
            sel_free(pairs, *n);
            return err_set(e, EINVAL, "label selector pair %zu \"%.*s\": expected key=value",
                           *n + 1, (int)(len > 80 ? 80 : len), p);
        }
        if (!label_key_ok(p, (size_t)(eq - p)) ||
            !label_word_ok(eq + 1, len - (size_t)(eq - p) - 1, true)) {
            sel_free(pairs, *n);
            return err_set(e, EINVAL,
                           "label selector pair %zu \"%.*s\": not a valid label key=value "
                           "(keys [prefix/]name, names and values up to 63 of [A-Za-z0-9._-], "
                           "alphanumeric at both ends)",
                           *n + 1, (int)(len > 80 ? 80 : len), p);
        }
        if (*n == STORE_MAX_SELECTOR) {
            sel_free(pairs, *n);
            return err_set(e, EINVAL, "label selector: more than %d pairs", STORE_MAX_SELECTOR);
        }
        pairs[*n].key = xstrndup(p, (size_t)(eq - p));
        pairs[*n].val = xstrndup(eq + 1, len - (size_t)(eq - p) - 1);
        (*n)++;
        if (!end)
            return 0;
        p = end + 1;
    }
}

int
store_selector_check(const char *sel, struct err *e)
{
    struct sel_pair pairs[STORE_MAX_SELECTOR];
    size_t n;
    int rc = sel_parse(sel, pairs, &n, e);

    if (rc == 0)
        sel_free(pairs, n);
    return rc;
}

int
store_label_check(const char *key, const char *value, struct err *e)
{
    if (!label_key_ok(key, strlen(key)))
        return err_set(e, EINVAL,
                       "label key \"%.80s\": expected [prefix/]name, name up to 63 of "
                       "[A-Za-z0-9._-] with alphanumeric ends",
                       key);
    if (!label_word_ok(value, strlen(value), true))
        return err_set(e, EINVAL,
                       "label %.80s: value \"%.80s\" is not up to 63 of [A-Za-z0-9._-] with "
                       "alphanumeric ends",
                       key, value);
    return 0;
}

/* Bind Q's WHERE parameters (see list_where) to ST from index 1; returns
 * the next index. */
static int
list_bind(sqlite3_stmt *st, const struct store_query *q, const struct sel_pair *pairs,
          size_t npairs)
{
    int bi = 1;

    bind_text(st, bi++, q->type);
    if (q->workspace)
        bind_text(st, bi++, q->workspace);
    if (q->scope)
        bind_text(st, bi++, q->scope);
    for (size_t i = 0; i < npairs; i++) {
        sqlite3_bind_text(st, bi++, xasprintf("$.\"%s\"", pairs[i].key), -1, free);
        bind_text(st, bi++, pairs[i].val);
    }
    return bi;
}

static void
list_where(struct buf *sql, const struct store_query *q, size_t npairs)
{
    buf_puts(sql, " FROM objects WHERE object_type=?");
    if (q->workspace)
        buf_puts(sql, " AND workspace=?");
    if (q->scope)
        buf_puts(sql, " AND scope=?");
    /* Keys are validated (no quote can appear), so the JSON path is safe to
     * quote; it is bound, never spliced into the SQL text. */
    for (size_t i = 0; i < npairs; i++)
        buf_puts(sql, " AND json_extract(labels, ?) IS ?");
}

int
store_list(struct store *s, const struct store_query *q, struct store_list *out, struct err *e)
{
    struct sel_pair pairs[STORE_MAX_SELECTOR];
    struct buf sql = BUF_INIT;
    sqlite3_stmt *st = NULL;
    size_t npairs = 0, cap = 0, limit;
    int rc, bi;

    memset(out, 0, sizeof(*out));
    if ((rc = sel_parse(q->label_selector, pairs, &npairs, e)) < 0)
        return rc;
    limit = q->limit ? q->limit : STORE_LIST_DEFAULT;
    if (limit > STORE_LIST_MAX)
        limit = STORE_LIST_MAX;
    /* One read transaction: the page and the total see the same snapshot. */
    if ((rc = sq_exec(s, "BEGIN", "starting a read transaction", e)) < 0)
        goto out;
    buf_puts(&sql, "SELECT count(*)");
    list_where(&sql, q, npairs);
    if ((rc = sq_prepare(s, buf_cstr(&sql), &st, e)) < 0)
        goto out;
    list_bind(st, q, pairs, npairs);
    if ((rc = sqlite3_step(st)) != SQLITE_ROW) {
        rc = sq_fail(s, e, rc, "counting");
        goto out;
    }
    out->total = (size_t)sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    st = NULL;
    buf_reset(&sql);
    buf_puts(&sql, "SELECT " OBJ_COLS);
    list_where(&sql, q, npairs);
    buf_puts(&sql, q->scope ? " ORDER BY version, id" : " ORDER BY created_at_ms, name, id");
    buf_puts(&sql, " LIMIT ? OFFSET ?");
    if ((rc = sq_prepare(s, buf_cstr(&sql), &st, e)) < 0)
        goto out;
    bi = list_bind(st, q, pairs, npairs);
    sqlite3_bind_int64(st, bi++, (sqlite3_int64)limit);
    sqlite3_bind_int64(st, bi, (sqlite3_int64)q->offset);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (out->n == cap) {
            cap = cap ? cap * 2 : 16;
            out->items = xrealloc(out->items, cap * sizeof(*out->items));
        }
        out->items[out->n++] = obj_from_row(st);
    }
    rc = rc == SQLITE_DONE ? 0 : sq_fail(s, e, rc, "listing");
out:
    sqlite3_finalize(st);
    txn_rollback(s);
    if (rc < 0)
        store_list_fini(out);
    buf_fini(&sql);
    sel_free(pairs, npairs);
    return rc;
}

void
store_list_fini(struct store_list *l)
{
    for (size_t i = 0; i < l->n; i++)
        store_obj_free(l->items[i]);
    free(l->items);
    memset(l, 0, sizeof(*l));
}

/* ------------------------------------------------------------------ revisions */

int
store_put_revision(struct store *s, struct store_obj *owner, uint64_t expected_rv,
                   const char *child_type, const char *payload, int64_t *version_out, struct err *e)
{
    sqlite3_stmt *st = NULL;
    struct store_obj child = { 0 };
    char id[37];
    int64_t next;
    int rc;

    if ((rc = txn_begin(s, e)) < 0)
        return rc;
    if ((rc = obj_update(s, owner, expected_rv, e)) < 0)
        goto fail;
    if ((rc = sq_prepare(s,
                         "SELECT coalesce(max(version), 0) + 1 FROM objects WHERE"
                         " object_type=?1 AND scope=?2",
                         &st, e)) < 0)
        goto fail;
    bind_text(st, 1, child_type);
    bind_text(st, 2, owner->id);
    if ((rc = sqlite3_step(st)) != SQLITE_ROW) {
        rc = sq_fail(s, e, rc, "numbering the revision");
        sqlite3_finalize(st);
        goto fail;
    }
    next = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    if ((rc = sq_prepare(s,
                         "UPDATE objects SET status='superseded',"
                         " resource_version=resource_version+1, updated_at_ms=?3"
                         " WHERE object_type=?1 AND scope=?2 AND status='pending'",
                         &st, e)) < 0)
        goto fail;
    bind_text(st, 1, child_type);
    bind_text(st, 2, owner->id);
    sqlite3_bind_int64(st, 3, store_now_ms());
    if ((rc = step_done(s, st, "superseding pending revisions", e)) < 0)
        goto fail;
    store_new_id(id);
    child.id = id;
    child.type = (char *)child_type;
    child.workspace = owner->workspace;
    child.payload = (char *)payload;
    child.scope = owner->id;
    child.version = next;
    child.status = (char *)"pending";
    if ((rc = obj_insert(s, &child, e)) < 0)
        goto fail;
    if ((rc = txn_commit(s, e)) < 0)
        goto fail;
    if (version_out)
        *version_out = next;
    return 0;
fail:
    txn_rollback(s);
    return err_wrap(e, "writing revision of %s %s", owner->type,
                    owner->name ? owner->name : owner->id);
}

int
store_set_revision_status(struct store *s, const char *child_type, const char *scope,
                          int64_t version, const char *status, const char *load_error,
                          struct err *e)
{
    sqlite3_stmt *st = NULL;
    int64_t now = store_now_ms();
    int rc;

    if ((rc = txn_begin(s, e)) < 0)
        return rc;
    if ((rc = sq_prepare(s,
                         "UPDATE objects SET status=?4, resource_version=resource_version+1,"
                         " updated_at_ms=?5, payload=CASE WHEN ?6 IS NULL THEN payload ELSE"
                         " json_set(payload, '$.load_error', ?6) END"
                         " WHERE object_type=?1 AND scope=?2 AND version=?3",
                         &st, e)) < 0)
        goto fail;
    bind_text(st, 1, child_type);
    bind_text(st, 2, scope);
    sqlite3_bind_int64(st, 3, version);
    bind_text(st, 4, status);
    sqlite3_bind_int64(st, 5, now);
    bind_text(st, 6, load_error);
    if ((rc = step_done(s, st, "setting revision status", e)) < 0)
        goto fail;
    if (sqlite3_changes(s->db) == 0) {
        rc = err_set(e, ENOENT, "%s %s revision %lld not found", child_type, scope,
                     (long long)version);
        goto fail;
    }
    if (strcmp(status, "loaded") == 0) {
        if ((rc = sq_prepare(s,
                             "UPDATE objects SET status='superseded',"
                             " resource_version=resource_version+1, updated_at_ms=?4"
                             " WHERE object_type=?1 AND scope=?2 AND version<?3 AND"
                             " status IN ('loaded', 'pending')",
                             &st, e)) < 0)
            goto fail;
        bind_text(st, 1, child_type);
        bind_text(st, 2, scope);
        sqlite3_bind_int64(st, 3, version);
        sqlite3_bind_int64(st, 4, now);
        if ((rc = step_done(s, st, "superseding older revisions", e)) < 0)
            goto fail;
    }
    if ((rc = txn_commit(s, e)) < 0)
        goto fail;
    return 0;
fail:
    txn_rollback(s);
    return rc;
}
