/* Unit tests for src/store.c: CAS writes, label selectors, migrations, revisions,
 * crash consistency (kill -9 mid-write), corrupt and locked databases. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <sqlite3.h>

#include "store.h"
#include "tap.h"
#include "xfuncs.h"

static char tmpdir[64];

static const char *
fresh_dir(void)
{
    static int n;
    static char dir[128];

    if (!tmpdir[0]) {
        snprintf(tmpdir, sizeof(tmpdir), "/tmp/test_store.XXXXXX");
        if (!mkdtemp(tmpdir))
            abort();
    }
    snprintf(dir, sizeof(dir), "%s/s%d", tmpdir, n++);
    return dir;
}

static int
raw_exec(const char *dir, const char *sql)
{
    char path[256];
    sqlite3 *db;
    int rc;

    snprintf(path, sizeof(path), "%s/%s", dir, STORE_DB_NAME);
    if (sqlite3_open(path, &db) != SQLITE_OK)
        return -1;
    rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
    if (rc != SQLITE_OK)
        fprintf(stdout, "# raw_exec: %s\n", sqlite3_errmsg(db));
    sqlite3_close(db);
    return rc == SQLITE_OK ? 0 : -1;
}

static struct store_obj *
mkobj(const char *type, const char *name, const char *labels, const char *payload)
{
    struct store_obj *o = xcalloc(1, sizeof(*o));
    char id[37];

    store_new_id(id);
    o->id = xstrdup(id);
    o->type = xstrdup(type);
    o->name = name ? xstrdup(name) : NULL;
    o->workspace = xstrdup("default");
    o->labels = labels ? xstrdup(labels) : NULL;
    o->payload = xstrdup(payload);
    return o;
}

static int
test_open_perms_and_schema(void)
{
    const char *dir = fresh_dir();
    struct store *s;
    struct err e;
    struct stat st;
    char path[256];

    CHECK_INT(store_open(dir, NULL, &s, &e), 0);
    CHECK_INT(store_schema_version(s), STORE_SCHEMA_VERSION);
    CHECK_INT(store_ping(s, &e), 0);
    CHECK(stat(dir, &st) == 0);
    CHECK_INT(st.st_mode & 0777, 0700);
    snprintf(path, sizeof(path), "%s/%s", dir, STORE_DB_NAME);
    CHECK(stat(path, &st) == 0);
    CHECK_INT(st.st_mode & 0777, 0600);
    store_close(s);
    /* Reopening applies nothing and keeps the version. */
    CHECK_INT(store_open(dir, NULL, &s, &e), 0);
    CHECK_INT(store_schema_version(s), STORE_SCHEMA_VERSION);
    store_close(s);
    return TAP_PASS;
}

static int
test_crud_and_cas(void)
{
    struct store *s;
    struct err e;
    struct store_obj *a, *b, *got;
    uint64_t rv;

    CHECK_INT(store_open(fresh_dir(), NULL, &s, &e), 0);
    a = mkobj("sandbox", "alpha", "{\"team\":\"x\"}", "{\"spec\":{}}");
    CHECK_INT(store_create(s, a, &e), 0);
    CHECK_INT(a->resource_version, 1);
    CHECK(a->created_at_ms > 0);

    /* Same name in the same workspace: -EEXIST, message names it. */
    b = mkobj("sandbox", "alpha", NULL, "{}");
    CHECK_INT(store_create(s, b, &e), -EEXIST);
    CHECK_CONTAINS(e.msg, "alpha");
    /* Same name, other type or other workspace: fine. */
    free(b->type);
    b->type = xstrdup("provider");
    CHECK_INT(store_create(s, b, &e), 0);
    store_obj_free(b);

    /* Invalid JSON payload is refused by the schema. */
    b = mkobj("sandbox", "bad", NULL, "{not json");
    CHECK_INT(store_create(s, b, &e), -EINVAL);
    store_obj_free(b);

    CHECK_INT(store_get_by_name(s, "sandbox", "default", "alpha", &got, &e), 0);
    CHECK_STR(got->id, a->id);
    CHECK_STR(got->labels, "{\"team\":\"x\"}");
    CHECK_INT(got->resource_version, 1);

    /* CAS: the right version wins, the stale one gets -ESTALE. */
    free(a->payload);
    a->payload = xstrdup("{\"spec\":{\"n\":1}}");
    CHECK_INT(store_update(s, a, 1, &e), 0);
    CHECK_INT(a->resource_version, 2);
    free(got->payload);
    got->payload = xstrdup("{\"spec\":{\"n\":99}}");
    CHECK_INT(store_update(s, got, 1, &e), -ESTALE);
    CHECK_CONTAINS(e.msg, "resource_version is 2, not 1");
    CHECK_INT(got->resource_version, 2);
    store_obj_free(got);
    CHECK_INT(store_get(s, "sandbox", a->id, &got, &e), 0);
    CHECK_STR(got->payload, "{\"spec\":{\"n\":1}}");
    store_obj_free(got);
    /* expected 0: unconditional. */
    CHECK_INT(store_update(s, a, 0, &e), 0);
    CHECK_INT(a->resource_version, 3);

    /* Delete: stale version refused, right one deletes, then ENOENT. */
    rv = a->resource_version;
    CHECK_INT(store_delete(s, "sandbox", a->id, rv - 1, &e), -ESTALE);
    CHECK_INT(store_delete(s, "sandbox", a->id, rv, &e), 0);
    CHECK_INT(store_get(s, "sandbox", a->id, &got, &e), -ENOENT);
    CHECK(got == NULL);
    CHECK_INT(store_delete(s, "sandbox", a->id, 0, &e), -ENOENT);
    CHECK_INT(store_update(s, a, 0, &e), -ENOENT);
    store_obj_free(a);
    store_close(s);
    return TAP_PASS;
}

static int
test_list_selectors(void)
{
    struct store *s;
    struct err e;
    struct store_list l;
    struct store_query q = { .type = "sandbox" };
    static const char *labels[] = {
        "{\"env\":\"prod\",\"team\":\"a\"}",
        "{\"env\":\"dev\",\"team\":\"a\"}",
        "{\"env\":\"prod\",\"team\":\"b\",\"example.com/tier\":\"1\"}",
        "{}",
    };

    CHECK_INT(store_open(fresh_dir(), NULL, &s, &e), 0);
    for (int i = 0; i < 4; i++) {
        char name[16];
        struct store_obj *o;

        snprintf(name, sizeof(name), "sb%d", i);
        o = mkobj("sandbox", name, labels[i], "{}");
        CHECK_INT(store_create(s, o, &e), 0);
        store_obj_free(o);
    }
    CHECK_INT(store_list(s, &q, &l, &e), 0);
    CHECK_INT(l.n, 4);
    CHECK_INT(l.total, 4);
    CHECK_STR(l.items[0]->name, "sb0");
    store_list_fini(&l);

    q.label_selector = "env=prod";
    CHECK_INT(store_list(s, &q, &l, &e), 0);
    CHECK_INT(l.n, 2);
    store_list_fini(&l);
    q.label_selector = "env=prod,team=b";
    CHECK_INT(store_list(s, &q, &l, &e), 0);
    CHECK_INT(l.n, 1);
    CHECK_STR(l.items[0]->name, "sb2");
    store_list_fini(&l);
    q.label_selector = "example.com/tier=1";
    CHECK_INT(store_list(s, &q, &l, &e), 0);
    CHECK_INT(l.n, 1);
    store_list_fini(&l);
    q.label_selector = "env=nope";
    CHECK_INT(store_list(s, &q, &l, &e), 0);
    CHECK_INT(l.n, 0);
    store_list_fini(&l);

    /* Pagination keeps the total. */
    q.label_selector = NULL;
    q.limit = 2;
    q.offset = 1;
    CHECK_INT(store_list(s, &q, &l, &e), 0);
    CHECK_INT(l.n, 2);
    CHECK_INT(l.total, 4);
    CHECK_STR(l.items[0]->name, "sb1");
    store_list_fini(&l);
    q.offset = 10;
    CHECK_INT(store_list(s, &q, &l, &e), 0);
    CHECK_INT(l.n, 0);
    CHECK_INT(l.total, 4);
    store_list_fini(&l);

    /* Other workspace: nothing. */
    q.offset = 0;
    q.workspace = "other";
    CHECK_INT(store_list(s, &q, &l, &e), 0);
    CHECK_INT(l.n, 0);
    store_list_fini(&l);

    /* Bad selectors: one clear error each, never an SQL error. */
    static const char *bad[] = {
        "env", "env=prod,", "=x", "en\"v=1", "env=a b", "-x=1", "k=v,k2=\"') OR 1=1 --"
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        q.label_selector = bad[i];
        CHECK_INT(store_list(s, &q, &l, &e), -EINVAL);
        CHECK_CONTAINS(e.msg, "label selector");
        CHECK_INT(store_selector_check(bad[i], NULL), -EINVAL);
    }
    CHECK_INT(store_selector_check("a=b,c=", NULL), 0);
    store_close(s);
    return TAP_PASS;
}

static int
test_revisions(void)
{
    struct store *s;
    struct err e;
    struct store_obj *sb;
    struct store_list l;
    struct store_query q = { .type = "sandbox_policy" };
    int64_t v = 0;

    CHECK_INT(store_open(fresh_dir(), NULL, &s, &e), 0);
    sb = mkobj("sandbox", "pol", NULL, "{\"policy_version\":0}");
    CHECK_INT(store_create(s, sb, &e), 0);
    for (int i = 1; i <= 3; i++) {
        char p[64];

        free(sb->payload);
        snprintf(p, sizeof(p), "{\"policy_version\":%d}", i);
        sb->payload = xstrdup(p);
        CHECK_INT(
            store_put_revision(s, sb, sb->resource_version, "sandbox_policy", "{\"x\":1}", &v, &e),
            0);
        CHECK_INT(v, i);
    }
    CHECK_INT(sb->resource_version, 4);
    /* A stale owner version writes neither the owner nor the revision. */
    CHECK_INT(store_put_revision(s, sb, 2, "sandbox_policy", "{}", &v, &e), -ESTALE);
    q.scope = sb->id;
    CHECK_INT(store_list(s, &q, &l, &e), 0);
    CHECK_INT(l.n, 3);
    CHECK_STR(l.items[0]->status, "superseded");
    CHECK_STR(l.items[1]->status, "superseded");
    CHECK_STR(l.items[2]->status, "pending");
    CHECK_INT(l.items[2]->version, 3);
    store_list_fini(&l);
    CHECK_INT(store_set_revision_status(s, "sandbox_policy", sb->id, 2, "failed", "bad rule", &e),
              0);
    CHECK_INT(store_set_revision_status(s, "sandbox_policy", sb->id, 3, "loaded", NULL, &e), 0);
    CHECK_INT(store_set_revision_status(s, "sandbox_policy", sb->id, 9, "loaded", NULL, &e),
              -ENOENT);
    CHECK_INT(store_list(s, &q, &l, &e), 0);
    CHECK_STR(l.items[1]->payload, "{\"x\":1,\"load_error\":\"bad rule\"}");
    CHECK_STR(l.items[2]->status, "loaded");
    store_list_fini(&l);
    /* Deleting the owner takes its revisions along, atomically. */
    CHECK_INT(store_delete(s, "sandbox", sb->id, 0, &e), 0);
    CHECK_INT(store_list(s, &q, &l, &e), 0);
    CHECK_INT(l.n, 0);
    store_list_fini(&l);
    store_obj_free(sb);
    store_close(s);
    return TAP_PASS;
}

static int
test_migrate_from_previous(void)
{
    const char *dir = fresh_dir();
    struct store *s;
    struct err e;
    struct store_obj *got;
    int64_t v;

    /* A database left at schema 1 by an older binary, holding one row. */
    CHECK_INT(store_open(dir, &(struct store_opts){ .max_schema = 1 }, &s, &e), 0);
    CHECK_INT(store_schema_version(s), 1);
    store_close(s);
    CHECK_INT(raw_exec(dir, "INSERT INTO objects(id, object_type, name, workspace, payload,"
                            " created_at_ms, updated_at_ms) VALUES ('id-old', 'sandbox', 'old',"
                            " 'default', '{\"v\":1}', 1, 1)"),
              0);
    CHECK_INT(store_open(dir, NULL, &s, &e), 0);
    CHECK_INT(store_schema_version(s), STORE_SCHEMA_VERSION);
    CHECK_INT(store_get_by_name(s, "sandbox", "default", "old", &got, &e), 0);
    CHECK_STR(got->payload, "{\"v\":1}");
    CHECK(got->scope == NULL);
    /* The new columns work on the migrated row. */
    CHECK_INT(store_put_revision(s, got, 1, "sandbox_policy", "{}", &v, &e), 0);
    CHECK_INT(v, 1);
    store_obj_free(got);
    store_close(s);
    return TAP_PASS;
}

static int
test_refuse_newer_schema(void)
{
    const char *dir = fresh_dir();
    struct store *s;
    struct err e;

    CHECK_INT(store_open(dir, NULL, &s, &e), 0);
    store_close(s);
    CHECK_INT(raw_exec(dir, "INSERT INTO schema_migrations VALUES (99, 0)"), 0);
    CHECK_INT(store_open(dir, NULL, &s, &e), -EPROTO);
    CHECK(s == NULL);
    CHECK_CONTAINS(e.msg, "schema version 99 is newer");
    return TAP_PASS;
}

static int
test_corrupt_file(void)
{
    const char *dir = fresh_dir();
    struct store *s;
    struct err e;
    char path[256];
    int fd;

    mkdir(dir, 0700);
    snprintf(path, sizeof(path), "%s/%s", dir, STORE_DB_NAME);
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    CHECK(fd >= 0);
    for (int i = 0; i < 64; i++)
        CHECK_INT(write_full(fd, "this is not an SQLite database, just junk bytes.....\n", 54), 0);
    close(fd);
    CHECK_INT(store_open(dir, NULL, &s, &e), -EUCLEAN);
    CHECK_CONTAINS(e.msg, path);
    CHECK_CONTAINS(e.msg, "not a database");
    /* A state "directory" that is a file. */
    CHECK(store_open(path, NULL, &s, &e) < 0);
    CHECK_CONTAINS(e.msg, path);
    return TAP_PASS;
}

static int
test_locked(void)
{
    const char *dir = fresh_dir();
    struct store *s;
    struct err e;
    struct store_obj *o;
    char path[256];
    sqlite3 *db;

    CHECK_INT(store_open(dir, &(struct store_opts){ .busy_timeout_ms = 100 }, &s, &e), 0);
    o = mkobj("sandbox", "l", NULL, "{}");
    CHECK_INT(store_create(s, o, &e), 0);
    /* Another connection holds the write lock. */
    snprintf(path, sizeof(path), "%s/%s", dir, STORE_DB_NAME);
    CHECK(sqlite3_open(path, &db) == SQLITE_OK);
    CHECK(sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) == SQLITE_OK);
    CHECK_INT(store_update(s, o, 0, &e), -EBUSY);
    CHECK_CONTAINS(e.msg, "locked");
    /* Reads still work under WAL while a writer holds the lock. */
    {
        struct store_obj *got;
        CHECK_INT(store_get(s, "sandbox", o->id, &got, &e), 0);
        store_obj_free(got);
    }
    sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    sqlite3_close(db);
    CHECK_INT(store_update(s, o, 0, &e), 0);
    store_obj_free(o);
    store_close(s);
    return TAP_PASS;
}

#define CRASH_SANDBOXES 8

/* The child: forever, a policy revision on one of the sandboxes (owner update
 * plus revision insert in one transaction); after each commit it reports
 * "index count" on FD: acknowledged, so it must survive. */
static void __attribute__((noreturn)) crash_child(const char *dir, int fd)
{
    struct store *s;
    struct err e;
    struct store_obj *sb[CRASH_SANDBOXES];
    int count[CRASH_SANDBOXES] = { 0 };

    if (store_open(dir, NULL, &s, &e) < 0)
        _exit(3);
    for (int i = 0; i < CRASH_SANDBOXES; i++) {
        char name[16];

        snprintf(name, sizeof(name), "c%d", i);
        sb[i] = mkobj("sandbox", name, NULL, "{\"revs\":0}");
        if (store_create(s, sb[i], &e) < 0)
            _exit(4);
    }
    for (unsigned k = 0;; k++) {
        int i = (int)(k * 7 % CRASH_SANDBOXES);
        char p[64], line[32];
        int64_t v;

        snprintf(p, sizeof(p), "{\"revs\":%d}", count[i] + 1);
        free(sb[i]->payload);
        sb[i]->payload = xstrdup(p);
        if (store_put_revision(s, sb[i], sb[i]->resource_version, "sandbox_policy",
                               "{\"pad\":\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"}",
                               &v, &e) < 0)
            _exit(5);
        count[i]++;
        snprintf(line, sizeof(line), "%d %d\n", i, count[i]);
        if (write_full(fd, line, strlen(line)) < 0)
            _exit(6);
    }
}

static int
test_crash_consistency(void)
{
    const char *dir = fresh_dir();
    int acked[CRASH_SANDBOXES] = { 0 };
    int fds[2], status, nacks = 0;
    struct store *s;
    struct err e;
    struct store_list l;
    struct store_query q = { .type = "sandbox", .limit = 100 };
    FILE *in;
    pid_t pid;
    char line[64];

    CHECK(pipe2(fds, O_CLOEXEC) == 0);
    pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        crash_child(dir, fds[1]);
    }
    close(fds[1]);
    in = fdopen(fds[0], "r");
    /* Kill it in the middle of its stream of transactions. */
    while (nacks < 150 && fgets(line, sizeof(line), in)) {
        int i, c;
        if (sscanf(line, "%d %d", &i, &c) == 2 && i >= 0 && i < CRASH_SANDBOXES)
            acked[i] = c;
        nacks++;
    }
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    fclose(in);
    CHECK_INT(nacks, 150);
    CHECK(WIFSIGNALED(status));

    CHECK_INT(store_open(dir, NULL, &s, &e), 0);
    {
        char path[256];
        sqlite3 *db;
        sqlite3_stmt *st;

        snprintf(path, sizeof(path), "%s/%s", dir, STORE_DB_NAME);
        CHECK(sqlite3_open(path, &db) == SQLITE_OK);
        CHECK(sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, NULL) == SQLITE_OK);
        CHECK(sqlite3_step(st) == SQLITE_ROW);
        CHECK_STR((const char *)sqlite3_column_text(st, 0), "ok");
        sqlite3_finalize(st);
        sqlite3_close(db);
    }
    CHECK_INT(store_list(s, &q, &l, &e), 0);
    CHECK_INT(l.n, CRASH_SANDBOXES);
    for (size_t i = 0; i < l.n; i++) {
        struct store_query rq = { .type = "sandbox_policy",
                                  .scope = l.items[i]->id,
                                  .limit = 1000 };
        struct store_list r;
        int revs = -1, idx = atoi(l.items[i]->name + 1), pending = 0;

        sscanf(l.items[i]->payload, "{\"revs\":%d}", &revs);
        CHECK_INT(store_list(s, &rq, &r, &e), 0);
        /* Owner and revisions moved together, and nothing acknowledged is lost. */
        CHECK_INT((long long)r.n, revs);
        CHECK(revs >= acked[idx]);
        CHECK_INT(l.items[i]->resource_version, (uint64_t)revs + 1);
        for (size_t j = 0; j < r.n; j++) {
            CHECK_INT(r.items[j]->version, (long long)j + 1);
            pending += strcmp(r.items[j]->status, "pending") == 0;
        }
        CHECK_INT(pending, revs > 0 ? 1 : 0);
        store_list_fini(&r);
    }
    store_list_fini(&l);
    store_close(s);
    return TAP_PASS;
}

static int
test_cleanup(void)
{
    char cmd[128];

    snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
    CHECK_INT(system(cmd), 0);
    return TAP_PASS;
}

TAP_MAIN(TAP_TEST(test_open_perms_and_schema), TAP_TEST(test_crud_and_cas),
         TAP_TEST(test_list_selectors), TAP_TEST(test_revisions),
         TAP_TEST(test_migrate_from_previous), TAP_TEST(test_refuse_newer_schema),
         TAP_TEST(test_corrupt_file), TAP_TEST(test_locked), TAP_TEST(test_crash_consistency),
         TAP_TEST(test_cleanup))
