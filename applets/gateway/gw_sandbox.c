/*
 * gw_sandbox.c: sandbox records (create, list, get, patch, delete) and their
 * watch streams, straight from the store. With the local compute driver
 * (the default) each sandbox has a supervisor and its phase is derived
 * from the driver and the supervisor's session; without one (--compute-driver
 * none) a created sandbox stays "provisioning" with a Ready=False condition
 * that says so (doc/api.md).
 *
 * Stored shape: the row's labels column holds metadata.labels; the payload
 * holds {"annotations":{},"spec":{},"status":{}}; id, name, workspace,
 * timestamps and resource_version come from the row.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "api.h"
#include "buf.h"
#include "driver.h"
#include "gw.h"
#include "gw_provider.h"
#include "h2.h"
#include "log.h"
#include "loop.h"
#include "store.h"
#include "xfuncs.h"

#define SB_TYPE "sandbox"
#define SB_NAME_MAX 19
/* A watch stream whose reader stays this far behind gets coalesced
 * snapshots: only the latest state is sent once it drains. */

struct gw_watch {
    struct gw *gw;
    struct h2_stream *st;
    char id[37];
    bool blocked, dirty, follow, logs;
    struct gw_watch *prev, *next;
};

/* ------------------------------------------------------------------ validation */

static bool
dns_label_ok(const char *s, size_t max)
{
    size_t n = strlen(s);

    if (n == 0 || n > max || s[0] == '-' || s[n - 1] == '-' || strstr(s, "--"))
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '-'))
            return false;
    return true;
}

static int
check_name(const char *what, const char *name, struct err *e)
{
    if (!dns_label_ok(name, SB_NAME_MAX))
        return err_set(e, EINVAL,
                       "%s \"%.80s\": expected 1-%d of [a-z0-9-], starting and ending with a "
                       "letter or digit, without \"--\"",
                       what, name, SB_NAME_MAX);
    return 0;
}

int
gw_labels_check(const cJSON *labels, struct err *e)
{
    int rc;

    if ((rc = api_check_string_map(labels, "labels", e)) < 0)
        return rc;
    for (const cJSON *c = labels->child; c; c = c->next)
        if ((rc = store_label_check(c->string, c->valuestring, e)) < 0)
            return rc;
    return 0;
}

static bool
env_key_ok(const char *k)
{
    if (!((k[0] >= 'A' && k[0] <= 'Z') || (k[0] >= 'a' && k[0] <= 'z') || k[0] == '_'))
        return false;
    for (const char *p = k + 1; *p; p++)
        if (!((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
              *p == '_'))
            return false;
    return strlen(k) <= 256;
}

static int
check_env(const cJSON *env, const char *where, struct err *e)
{
    int rc;

    if ((rc = api_check_string_map(env, where, e)) < 0)
        return rc;
    for (const cJSON *c = env->child; c; c = c->next)
        if (!env_key_ok(c->string))
            return err_set(e, EINVAL,
                           "%s.%.80s: not a valid variable name ([A-Za-z_][A-Za-z0-9_]*)", where,
                           c->string);
    return 0;
}

static int
check_string_array(const cJSON *a, const char *where, size_t max, bool nonempty_items,
                   struct err *e)
{
    size_t n = 0;

    for (const cJSON *c = a->child; c; c = c->next, n++) {
        if (!cJSON_IsString(c))
            return err_set(e, EINVAL, "%s[%zu]: expected a string", where, n);
        if (nonempty_items && !*c->valuestring)
            return err_set(e, EINVAL, "%s[%zu]: empty", where, n);
    }
    if (n > max)
        return err_set(e, EINVAL, "%s: more than %zu items", where, max);
    return 0;
}

static int
check_template(const cJSON *t, struct err *e)
{
    static const char *const keys[] = { "image",     "runtime_class_name", "agent_socket",
                                        "labels",    "annotations",        "environment",
                                        "resources", "user_namespaces",    "driver_config",
                                        NULL };
    static const char *const str_keys[] = { "image", "runtime_class_name", "agent_socket", NULL };
    static const char *const obj_keys[] = { "resources", "driver_config", NULL };
    const cJSON *o;
    const char *s;
    bool b;
    int rc;

    if ((rc = api_check_keys(t, keys, "spec.template", e)) < 0)
        return rc;
    for (size_t i = 0; str_keys[i]; i++)
        if ((rc = api_get_string(t, str_keys[i], "spec.template", false, &s, e)) < 0)
            return rc;
    for (size_t i = 0; obj_keys[i]; i++)
        if ((rc = api_get_object(t, obj_keys[i], "spec.template", &o, e)) < 0)
            return rc;
    if ((rc = api_get_bool(t, "user_namespaces", "spec.template", &b, e)) < 0)
        return rc;
    if ((rc = api_get_object(t, "labels", "spec.template", &o, e)) < 0 ||
        (rc == 0 && (rc = api_check_string_map(o, "spec.template.labels", e)) < 0))
        return rc;
    if ((rc = api_get_object(t, "annotations", "spec.template", &o, e)) < 0 ||
        (rc == 0 && (rc = api_check_string_map(o, "spec.template.annotations", e)) < 0))
        return rc;
    if ((rc = api_get_object(t, "environment", "spec.template", &o, e)) < 0 ||
        (rc == 0 && (rc = check_env(o, "spec.template.environment", e)) < 0))
        return rc;
    return 0;
}

/* Validate SPEC in place and normalise it (default command). */
static int
check_spec(cJSON *spec, struct err *e)
{
    static const char *const keys[] = {
        "command", "tty",      "environment",           "log_level", "providers",
        "policy",  "template", "resource_requirements", NULL
    };
    static const char *const levels[] = { "", "trace", "debug", "info", "warn", "error", NULL };
    const cJSON *o, *a;
    const char *s;
    bool b;
    int rc;

    if ((rc = api_check_keys(spec, keys, "spec", e)) < 0)
        return rc;
    if ((rc = api_get_array(spec, "command", "spec", &a, e)) < 0 ||
        (rc == 0 && (rc = check_string_array(a, "spec.command", 256, true, e)) < 0))
        return rc;
    if ((rc = api_get_bool(spec, "tty", "spec", &b, e)) < 0)
        return rc;
    if ((rc = api_get_object(spec, "environment", "spec", &o, e)) < 0 ||
        (rc == 0 && (rc = check_env(o, "spec.environment", e)) < 0))
        return rc;
    if ((rc = api_get_string(spec, "log_level", "spec", false, &s, e)) < 0)
        return rc;
    if (rc == 0) {
        size_t i;
        for (i = 0; levels[i] && strcmp(levels[i], s) != 0; i++)
            ;
        if (!levels[i])
            return err_set(e, EINVAL,
                           "spec.log_level \"%.40s\": expected trace, debug, info, warn or error",
                           s);
    }
    if ((rc = api_get_array(spec, "providers", "spec", &a, e)) < 0 ||
        (rc == 0 && (rc = check_string_array(a, "spec.providers", 32, true, e)) < 0))
        return rc;
    /* The policy engine validates it as the supervisor will load it. */
    if ((rc = api_get_object(spec, "policy", "spec", &o, e)) < 0 ||
        (rc == 0 && (rc = gw_policy_check_json(o, e)) < 0))
        return rc;
    if ((rc = api_get_object(spec, "template", "spec", &o, e)) < 0 ||
        (rc == 0 && (rc = check_template(o, e)) < 0))
        return rc;
    if ((rc = api_get_object(spec, "resource_requirements", "spec", &o, e)) < 0)
        return rc;
    if (rc == 0) {
        static const char *const rkeys[] = { "gpu", NULL };
        static const char *const gkeys[] = { "count", NULL };
        const cJSON *g, *cnt;

        if ((rc = api_check_keys(o, rkeys, "spec.resource_requirements", e)) < 0)
            return rc;
        if ((rc = api_get_object(o, "gpu", "spec.resource_requirements", &g, e)) < 0)
            return rc;
        if (rc == 0) {
            if ((rc = api_check_keys(g, gkeys, "spec.resource_requirements.gpu", e)) < 0)
                return rc;
            cnt = cJSON_GetObjectItemCaseSensitive(g, "count");
            if (cnt && !(cJSON_IsNumber(cnt) && cnt->valuedouble >= 0 && cnt->valuedouble <= 64 &&
                         cnt->valuedouble == (double)cnt->valueint))
                return err_set(e, EINVAL,
                               "spec.resource_requirements.gpu.count: expected an integer 0-64");
        }
    }
    /* No command: the sandbox has no main process and serves exec only
     * (the supervisor's --idle). */
    return 0;
}

/* ------------------------------------------------------------------ rendering */

static cJSON *
parse_stored(const char *text)
{
    cJSON *j = text ? cJSON_Parse(text) : NULL;

    return j ? j : cJSON_CreateObject();
}

/* The API object for row O (caller deletes). */
/* The gateway whose driver reports phases (set by gw_sandbox_routes). */
static struct gw *sb_gw;

/* With a compute driver, the phase is the driver's (derived at read time:
 * a restarted gateway needs no bookkeeping to be right). */
static void
overlay_phase(const struct store_obj *o, cJSON *status)
{
    const cJSON *ph = cJSON_GetObjectItemCaseSensitive(status, "phase");
    struct drv_status ds;
    const char *phase;
    struct err e;

    if (!sb_gw || !sb_gw->drv || (cJSON_IsString(ph) && strcmp(ph->valuestring, "deleting") == 0) ||
        drv_get(sb_gw->drv, o->id, &ds, &e) < 0)
        return;
    phase = drv_phase_name(ds.phase);
    /* Ready means usable: the supervisor runs and holds its session. */
    if (ds.phase == DRV_READY && !gw_session_connected(sb_gw, o->id))
        phase = "provisioning";
    cJSON_DeleteItemFromObjectCaseSensitive(status, "phase");
    cJSON_AddStringToObject(status, "phase", phase);
    cJSON_DeleteItemFromObjectCaseSensitive(status, "conditions");
    if (ds.pid)
        cJSON_AddNumberToObject(status, "supervisor_pid", ds.pid);
    if (ds.phase == DRV_EXITED) {
        cJSON_DeleteItemFromObjectCaseSensitive(status, "exit_code");
        cJSON_AddNumberToObject(status, "exit_code", ds.exit_code);
        if (ds.exit_signal)
            cJSON_AddNumberToObject(status, "exit_signal", ds.exit_signal);
    }
}

static cJSON *
sandbox_json(const struct store_obj *o)
{
    cJSON *j = cJSON_CreateObject(), *md = cJSON_CreateObject();
    cJSON *payload = parse_stored(o->payload), *item;

    cJSON_AddStringToObject(md, "id", o->id);
    cJSON_AddStringToObject(md, "name", o->name ? o->name : "");
    cJSON_AddStringToObject(md, "workspace", o->workspace);
    cJSON_AddItemToObject(md, "labels", parse_stored(o->labels));
    item = cJSON_DetachItemFromObjectCaseSensitive(payload, "annotations");
    cJSON_AddItemToObject(md, "annotations", item ? item : cJSON_CreateObject());
    cJSON_AddNumberToObject(md, "created_at_ms", (double)o->created_at_ms);
    cJSON_AddNumberToObject(md, "updated_at_ms", (double)o->updated_at_ms);
    cJSON_AddNumberToObject(md, "resource_version", (double)o->resource_version);
    cJSON_AddItemToObject(j, "metadata", md);
    item = cJSON_DetachItemFromObjectCaseSensitive(payload, "spec");
    cJSON_AddItemToObject(j, "spec", item ? item : cJSON_CreateObject());
    item = cJSON_DetachItemFromObjectCaseSensitive(payload, "status");
    if (!item)
        item = cJSON_CreateObject();
    overlay_phase(o, item);
    if (sb_gw && strcmp(o->type, SB_TYPE) == 0) {
        cJSON_DeleteItemFromObjectCaseSensitive(item, "supervisor");
        cJSON_AddItemToObject(item, "supervisor", gw_session_status(sb_gw, o->id));
    }
    cJSON_AddItemToObject(j, "status", item);
    cJSON_Delete(payload);
    return j;
}

static int
respond_sandbox(struct h2_stream *st, int status, const struct store_obj *o)
{
    cJSON *j = sandbox_json(o);
    int rc = api_respond_json(st, status, j, o->resource_version);

    cJSON_Delete(j);
    return rc;
}

/* ------------------------------------------------------------------ watch */

static void watch_send(struct gw_watch *w, const char *type, const struct store_obj *o);

static void
watch_unlink(struct gw_watch *w)
{
    struct gw *gw = w->gw;

    if (w->prev)
        w->prev->next = w->next;
    else
        gw->watches = w->next;
    if (w->next)
        w->next->prev = w->prev;
    gw->nwatches--;
}

static void
watch_on_close(struct h2_stream *st, uint32_t code, void *arg)
{
    struct gw_watch *w = arg;

    (void)st;
    (void)code;
    watch_unlink(w);
    free(w);
}

static void
watch_on_drain(struct h2_stream *st, void *arg)
{
    struct gw_watch *w = arg;
    struct store_obj *o = NULL;
    struct err e;
    int rc;

    (void)st;
    w->blocked = false;
    if (!w->dirty)
        return;
    w->dirty = false;
    rc = store_get(w->gw->store, SB_TYPE, w->id, &o, &e);
    if (rc == 0)
        watch_send(w, "sandbox", o);
    else if (rc == -ENOENT)
        watch_send(w, "deleted", NULL);
    store_obj_free(o);
}

static const struct h2_stream_cbs watch_cbs = {
    .on_drain = watch_on_drain,
    .on_close = watch_on_close,
};

/* The ndjson line for TYPE and O (or W_ID when O is NULL), newline ended;
 * the caller frees it. */
static char *
watch_line(const char *type, const struct store_obj *o, const char *id)
{
    cJSON *line = cJSON_CreateObject();
    struct buf b = BUF_INIT;
    char *s;

    cJSON_AddStringToObject(line, "type", type);
    if (o)
        cJSON_AddItemToObject(line, "sandbox", sandbox_json(o));
    else
        cJSON_AddStringToObject(line, "id", id);
    s = api_json_print(line);
    cJSON_Delete(line);
    buf_puts(&b, s);
    buf_putc(&b, '\n');
    free(s);
    return buf_steal(&b);
}

/* Write LINE to W; "deleted" (and !follow) ends the stream. */
static void
watch_write(struct gw_watch *w, const char *type, const char *line)
{
    if (h2_stream_write(w->st, line, strlen(line)) == -EAGAIN)
        w->blocked = true;
    if (strcmp(type, "deleted") == 0 || !w->follow)
        h2_stream_end(w->st);
}

static void
watch_send(struct gw_watch *w, const char *type, const struct store_obj *o)
{
    char *line = watch_line(type, o, w->id);

    watch_write(w, type, line);
    free(line);
}

/* A sandbox changed (O) or was deleted (O NULL, ID): tell its watchers, the
 * line rendered once for all. A blocked watcher is marked dirty and gets
 * the latest state on drain. */
void
gw_watch_notify(struct gw *gw, const char *id, const struct store_obj *o)
{
    const char *type = o ? "sandbox" : "deleted";
    struct gw_watch *w, *next;
    char *line = NULL;

    for (w = gw->watches; w; w = next) {
        next = w->next;
        if (strcmp(w->id, id) != 0)
            continue;
        if (w->blocked) {
            w->dirty = true;
            continue;
        }
        if (!line)
            line = watch_line(type, o, id);
        watch_write(w, type, line);
    }
    free(line);
}

void
gw_watch_log(struct gw *gw, const char *id, const char *line, size_t n)
{
    /* Log lines are best effort on a watch: a blocked watcher skips them
     * (GET .../logs has the history). */
    for (struct gw_watch *w = gw->watches; w; w = w->next)
        if (w->logs && w->follow && !w->blocked && strcmp(w->id, id) == 0 &&
            h2_stream_write(w->st, line, n) == -EAGAIN)
            w->blocked = true;
}

void
gw_watch_end_all(struct gw *gw, const char *why)
{
    static const char line_fmt[] =
        "{\"type\":\"error\",\"error\":{\"code\":\"unavailable\",\"message\":";

    for (struct gw_watch *w = gw->watches; w; w = w->next) {
        struct buf b = BUF_INIT;

        buf_puts(&b, line_fmt);
        buf_put_json_str(&b, why, strlen(why));
        buf_puts(&b, "}}\n");
        h2_stream_write(w->st, b.data, b.len);
        h2_stream_end(w->st);
        buf_fini(&b);
    }
}

/* ------------------------------------------------------------------ handlers */

int
gw_require_json(struct h2_stream *st)
{
    const char *ct = h2_stream_header(st, "content-type");
    size_t n = strlen("application/json");

    if (!ct || strncasecmp(ct, "application/json", n) != 0 || (ct[n] && ct[n] != ';')) {
        h2_stream_error(st, 415, "unsupported_media_type",
                        "request body must be application/json (got %.60s)", ct ? ct : "none");
        return -1;
    }
    return 0;
}

/* The local driver: one openshell-supervisor per sandbox, connected back
 * to this gateway with a fresh sandbox token (0600 in the sandbox's
 * directory), running spec.command or, without one, idle. */
int
gw_sandbox_start(struct gw *gw, const char *id, const char *name, const cJSON *command,
                 struct err *e)
{
    char token[64];
    char *dir = gw_sandbox_dir(gw, id), *tpath = xasprintf("%s/token", dir);
    char *work = xasprintf("%s/work", dir), *gwarg = xasprintf("unix:%s", gw->sock_path);
    const char **argv;
    const cJSON *it;
    size_t n = 0;
    int fd, rc;

    if ((rc = gw_token_mint(gw, id, token, sizeof(token), e)) < 0)
        goto out;
    fd = open(tpath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0 || write_full(fd, token, strlen(token)) < 0 || fsync(fd) < 0) {
        rc = err_errno(e, "sandbox %s: writing %s", name, tpath);
        if (fd >= 0)
            close(fd);
        goto out;
    }
    close(fd);
    /* /sandbox inside. Root's sandboxes run as another user the policy
     * picks (run_as_user, else "sandbox" or nobody), so the directory is
     * open to all; outside, only the gateway's 0700 parent leads to it.
     * Otherwise the sandbox runs as the gateway's own user. */
    if ((mkdir(work, 0700) < 0 && errno != EEXIST) ||
        chmod(work, geteuid() == 0 ? 0777 : 0700) < 0) {
        rc = err_errno(e, "sandbox %s: creating %s", name, work);
        goto out;
    }
    argv = xcalloc((size_t)(cJSON_IsArray(command) ? cJSON_GetArraySize(command) : 0) + 16,
                   sizeof(*argv));
    argv[n++] = "openshell-supervisor";
    argv[n++] = "--gateway";
    argv[n++] = gwarg;
    argv[n++] = "--sandbox-id";
    argv[n++] = id;
    argv[n++] = "--token-file";
    argv[n++] = tpath;
    argv[n++] = "--name";
    argv[n++] = name;
    argv[n++] = "--workdir";
    argv[n++] = work;
    if (cJSON_IsArray(command) && cJSON_GetArraySize(command) > 0) {
        argv[n++] = "--";
        cJSON_ArrayForEach(it, command) argv[n++] = it->valuestring;
    } else {
        argv[n++] = "--idle";
    }
    rc = drv_create(gw->drv, id, "/proc/self/exe", argv, NULL, e);
    free(argv);
out:
    explicit_bzero(token, sizeof(token));
    free(dir);
    free(tpath);
    free(work);
    free(gwarg);
    return rc;
}

static void
h_create(struct h2_stream *st, struct h2_req *req, void *arg)
{
    static const char *const keys[] = { "name", "labels", "annotations", "spec", NULL };
    struct gw *gw = arg;
    struct store_obj o = { 0 };
    cJSON *body = NULL, *payload = NULL, *status, *conds, *cond;
    const cJSON *labels = NULL, *ann = NULL, *spec_c = NULL;
    const char *name = NULL;
    char id[37], gen[SB_NAME_MAX + 1];
    struct err e;
    int rc;

    if (!gw_authorized(gw, st) || gw_require_json(st) < 0)
        return;
    if ((rc = gw_workspace_check(gw, req->params[0], &e)) < 0 ||
        (rc = api_parse_object(req->body.data, req->body.len, &body, &e)) < 0 ||
        (rc = api_check_keys(body, keys, "", &e)) < 0 ||
        (rc = api_get_string(body, "name", "", false, &name, &e)) < 0 ||
        (rc == 0 && (rc = check_name("name", name, &e)) < 0) ||
        (rc = api_get_object(body, "labels", "", &labels, &e)) < 0 ||
        (rc == 0 && (rc = gw_labels_check(labels, &e)) < 0) ||
        (rc = api_get_object(body, "annotations", "", &ann, &e)) < 0 ||
        (rc == 0 && (rc = api_check_string_map(ann, "annotations", &e)) < 0) ||
        (rc = api_get_object(body, "spec", "", &spec_c, &e)) < 0)
        goto fail;
    payload = cJSON_CreateObject();
    cJSON_AddItemToObject(payload, "annotations",
                          ann ? cJSON_Duplicate(ann, true) : cJSON_CreateObject());
    {
        cJSON *spec = spec_c ? cJSON_Duplicate(spec_c, true) : cJSON_CreateObject();

        cJSON_AddItemToObject(payload, "spec", spec);
        if ((rc = check_spec(spec, &e)) < 0 ||
            (rc = gw_provider_check_attach(
                 gw, req->params[0], cJSON_GetObjectItemCaseSensitive(spec, "providers"), &e)) < 0)
            goto fail;
    }
    status = cJSON_AddObjectToObject(payload, "status");
    cJSON_AddStringToObject(status, "phase", "provisioning");
    conds = cJSON_AddArrayToObject(status, "conditions");
    cond = cJSON_CreateObject();
    cJSON_AddStringToObject(cond, "type", "Ready");
    cJSON_AddStringToObject(cond, "status", "False");
    cJSON_AddStringToObject(cond, "reason", "NoComputeDriver");
    cJSON_AddStringToObject(cond, "message", "record only: this gateway has no compute driver yet");
    cJSON_AddNumberToObject(cond, "last_transition_time_ms", (double)store_now_ms());
    cJSON_AddItemToArray(conds, cond);

    store_new_id(id);
    if (!name) {
        /* "sandbox-" and six random characters from the id. */
        snprintf(gen, sizeof(gen), "sandbox-%.6s", id);
        name = gen;
    }
    o.id = id;
    o.type = (char *)SB_TYPE;
    o.name = (char *)name;
    o.workspace = (char *)req->params[0];
    o.payload = api_json_print(payload);
    o.labels = labels ? api_json_print(labels) : NULL;
    rc = store_create(gw->store, &o, &e);
    if (rc == 0 && gw->drv &&
        (rc = gw_sandbox_start(gw, id, name,
                               cJSON_GetObjectItemCaseSensitive(
                                   cJSON_GetObjectItemCaseSensitive(payload, "spec"), "command"),
                               &e)) < 0) {
        struct err e2;

        /* Durable record, failed start: the record and its state go again. */
        drv_delete(gw->drv, id, 0, &e2);
        store_delete(gw->store, SB_TYPE, id, 0, &e2);
    }
    if (rc == 0) {
        log_kv(LOG_LVL_INFO, "sandbox created", "name", name, "workspace", o.workspace, "id", id,
               NULL);
        respond_sandbox(st, 201, &o);
    }
    free(o.payload);
    free(o.labels);
    if (rc < 0)
        goto fail;
    cJSON_Delete(payload);
    cJSON_Delete(body);
    return;
fail:
    cJSON_Delete(payload);
    cJSON_Delete(body);
    api_respond_err(st, rc, &e);
}

static int
parse_count(const struct h2_req *req, const char *key, size_t max, size_t *out, struct err *e)
{
    struct buf v = BUF_INIT;
    char *end;
    unsigned long long n;
    int rc = h2_req_query(req, key, &v);

    if (rc <= 0) {
        buf_fini(&v);
        return rc < 0 ? err_set(e, EINVAL, "query %s: bad percent-encoding", key) : 0;
    }
    errno = 0;
    n = strtoull(buf_cstr(&v), &end, 10);
    if (!v.len || *end || errno || n > max || buf_cstr(&v)[0] == '-') {
        rc =
            err_set(e, EINVAL, "query %s=%.40s: expected an integer 0-%zu", key, buf_cstr(&v), max);
        buf_fini(&v);
        return rc;
    }
    *out = (size_t)n;
    buf_fini(&v);
    return 0;
}

static void
list_common(struct gw *gw, struct h2_stream *st, struct h2_req *req, const char *ws)
{
    static const char *const known[] = { "label_selector", "limit", "offset", NULL };
    struct store_query q = { .type = SB_TYPE, .workspace = ws };
    struct buf sel = BUF_INIT;
    struct store_list l;
    struct err e;
    cJSON *j, *items;
    int rc;

    /* Unknown query parameters are errors, like unknown fields. */
    for (const char *p = req->query; p && *p;) {
        const char *amp = strchr(p, '&'), *eq;
        size_t len = amp ? (size_t)(amp - p) : strlen(p), i;

        eq = memchr(p, '=', len);
        for (i = 0; known[i]; i++)
            if (strlen(known[i]) == (size_t)((eq ? eq : p + len) - p) &&
                memcmp(known[i], p, strlen(known[i])) == 0)
                break;
        if (!known[i] && len) {
            rc = err_set(&e, EINVAL,
                         "query parameter %.*s unknown (known: label_selector, limit, offset)",
                         (int)((eq ? eq : p + len) - p > 60 ? 60 : (eq ? eq : p + len) - p), p);
            goto fail;
        }
        p = amp ? amp + 1 : p + len;
    }
    if ((rc = h2_req_query(req, "label_selector", &sel)) < 0) {
        rc = err_set(&e, EINVAL, "query label_selector: bad percent-encoding");
        goto fail;
    }
    if (rc == 1)
        q.label_selector = buf_cstr(&sel);
    if ((rc = parse_count(req, "limit", STORE_LIST_MAX, &q.limit, &e)) < 0 ||
        (rc = parse_count(req, "offset", 1u << 30, &q.offset, &e)) < 0)
        goto fail;
    if ((rc = store_list(gw->store, &q, &l, &e)) < 0)
        goto fail;
    j = cJSON_CreateObject();
    items = cJSON_AddArrayToObject(j, "items");
    for (size_t i = 0; i < l.n; i++)
        cJSON_AddItemToArray(items, sandbox_json(l.items[i]));
    cJSON_AddNumberToObject(j, "total", (double)l.total);
    api_respond_json(st, 200, j, 0);
    cJSON_Delete(j);
    store_list_fini(&l);
    buf_fini(&sel);
    return;
fail:
    buf_fini(&sel);
    api_respond_err(st, rc, &e);
}

static void
h_list(struct h2_stream *st, struct h2_req *req, void *arg)
{
    struct gw *gw = arg;
    struct err e;
    int rc;

    if (!gw_authorized(gw, st))
        return;
    if ((rc = gw_workspace_check(gw, req->params[0], &e)) < 0) {
        api_respond_err(st, rc, &e);
        return;
    }
    list_common(gw, st, req, req->params[0]);
}

static void
h_list_all(struct h2_stream *st, struct h2_req *req, void *arg)
{
    struct gw *gw = arg;

    if (!gw_authorized(gw, st))
        return;
    list_common(gw, st, req, NULL);
}

struct store_obj *
gw_sandbox_lookup(struct gw *gw, struct h2_stream *st, const struct h2_req *req)
{
    struct store_obj *o = NULL;
    struct err e;
    int rc;

    if ((rc = gw_workspace_check(gw, req->params[0], &e)) < 0 ||
        (rc = store_get_by_name(gw->store, SB_TYPE, req->params[0], req->params[1], &o, &e)) < 0) {
        if (rc == -ENOENT)
            err_set(&e, ENOENT, "sandbox %.80s not found in workspace %.80s", req->params[1],
                    req->params[0]);
        api_respond_err(st, rc, &e);
        return NULL;
    }
    return o;
}

static void
h_get(struct h2_stream *st, struct h2_req *req, void *arg)
{
    struct gw *gw = arg;
    struct store_obj *o;

    if (!gw_authorized(gw, st) || !(o = gw_sandbox_lookup(gw, st, req)))
        return;
    respond_sandbox(st, 200, o);
    store_obj_free(o);
}

static void
h_patch(struct h2_stream *st, struct h2_req *req, void *arg)
{
    static const char *const keys[] = { "labels", "annotations", NULL };
    struct gw *gw = arg;
    struct store_obj *o;
    const cJSON *labels = NULL, *ann = NULL;
    cJSON *body = NULL, *payload = NULL;
    uint64_t expect;
    struct err e;
    int rc;

    if (!gw_authorized(gw, st) || gw_require_json(st) < 0)
        return;
    if ((rc = api_parse_if_match(h2_stream_header(st, "if-match"), &expect, &e)) < 0) {
        api_respond_err(st, rc, &e);
        return;
    }
    if (!(o = gw_sandbox_lookup(gw, st, req)))
        return;
    if ((rc = api_parse_object(req->body.data, req->body.len, &body, &e)) < 0 ||
        (rc = api_check_keys(body, keys, "", &e)) < 0 ||
        (rc = api_get_object(body, "labels", "", &labels, &e)) < 0 ||
        (rc == 0 && (rc = gw_labels_check(labels, &e)) < 0) ||
        (rc = api_get_object(body, "annotations", "", &ann, &e)) < 0 ||
        (rc == 0 && (rc = api_check_string_map(ann, "annotations", &e)) < 0))
        goto fail;
    if (labels) {
        free(o->labels);
        o->labels = api_json_print(labels);
    }
    if (ann) {
        payload = parse_stored(o->payload);
        cJSON_DeleteItemFromObjectCaseSensitive(payload, "annotations");
        cJSON_AddItemToObject(payload, "annotations", cJSON_Duplicate(ann, true));
        free(o->payload);
        o->payload = api_json_print(payload);
    }
    if ((rc = store_update(gw->store, o, expect, &e)) < 0)
        goto fail;
    respond_sandbox(st, 200, o);
    gw_watch_notify(gw, o->id, o);
    goto out;
fail:
    api_respond_err(st, rc, &e);
out:
    cJSON_Delete(payload);
    cJSON_Delete(body);
    store_obj_free(o);
}

int
gw_sandbox_set_phase(struct gw *gw, struct store_obj *o, const char *phase, const int *exit_code,
                     struct err *e)
{
    cJSON *p = parse_stored(o->payload), *status;
    int rc;

    status = cJSON_GetObjectItemCaseSensitive(p, "status");
    if (!cJSON_IsObject(status)) {
        cJSON_DeleteItemFromObjectCaseSensitive(p, "status");
        status = cJSON_AddObjectToObject(p, "status");
    }
    cJSON_DeleteItemFromObjectCaseSensitive(status, "phase");
    cJSON_AddStringToObject(status, "phase", phase);
    if (exit_code) {
        cJSON_DeleteItemFromObjectCaseSensitive(status, "exit_code");
        cJSON_AddNumberToObject(status, "exit_code", *exit_code);
    }
    free(o->payload);
    o->payload = api_json_print(p);
    cJSON_Delete(p);
    if ((rc = store_update(gw->store, o, 0, e)) == 0)
        gw_watch_notify(gw, o->id, o);
    return rc;
}

/* The first half of a delete: phase "deleting" (durable, watchers see it;
 * a gateway killed now finishes the job at its next start), the session
 * dropped, SIGTERM to the sandbox. */
static int
delete_begin(struct gw *gw, struct store_obj *o, struct err *e)
{
    int rc;

    if (gw->drv) {
        if ((rc = gw_sandbox_set_phase(gw, o, "deleting", NULL, e)) < 0)
            return rc;
        drv_signal(gw->drv, o->id, SIGTERM, e);
    }
    gw_session_forget(gw, o->id);
    return 0;
}

/* The second half: the driver removes the (stopped) sandbox's state, then
 * the record goes; watchers and log followers end. */
static int
delete_finish(struct gw *gw, struct store_obj *o, int grace_ms, struct err *e)
{
    int rc;

    if (gw->drv && (rc = drv_delete(gw->drv, o->id, grace_ms, e)) < 0 && rc != -ENOENT)
        return rc;
    if ((rc = store_delete(gw->store, SB_TYPE, o->id, 0, e)) < 0)
        return rc;
    if (!gw->drv)
        gw_log_remove(gw, o->id);
    log_kv(LOG_LVL_INFO, "sandbox deleted", "name", o->name, "workspace", o->workspace, "id", o->id,
           NULL);
    gw_watch_notify(gw, o->id, NULL);
    gw_log_end(gw, o->id, "sandbox deleted");
    return 0;
}

/* A whole delete, blocking (reconciliation at start). */
static int
sandbox_delete(struct gw *gw, struct store_obj *o, struct err *e)
{
    int rc = delete_begin(gw, o, e);

    return rc < 0 ? rc : delete_finish(gw, o, 2000, e);
}

/* A delete in progress (DELETE with a driver): the loop keeps serving
 * while the sandbox stops; a timer polls the driver. */
#define DELETE_POLL_MS 20
#define DELETE_GRACE_MS 2000
struct gw_delete {
    struct gw *gw;
    struct h2_stream *st; /* NULL once the client left */
    struct store_obj *o;
    struct loop_timer *t;
    uint64_t started_ms;
    bool killed;
    struct gw_delete *next;
};

static struct gw_delete *deletes;

static void
delete_on_close(struct h2_stream *st, uint32_t code, void *arg)
{
    struct gw_delete *d = arg;

    (void)st;
    (void)code;
    d->st = NULL;
}

static const struct h2_stream_cbs delete_cbs = { .on_close = delete_on_close };

static void
delete_free(struct gw_delete *d)
{
    struct gw_delete **pp;

    for (pp = &deletes; *pp && *pp != d; pp = &(*pp)->next)
        ;
    if (*pp)
        *pp = d->next;
    if (d->st)
        h2_stream_set_cbs(d->st, NULL, NULL);
    loop_timer_free(d->t);
    store_obj_free(d->o);
    free(d);
}

static void
delete_tick(void *arg)
{
    struct gw_delete *d = arg;
    uint64_t waited = loop_now_ms(d->gw->loop) - d->started_ms;
    struct drv_status ds;
    struct err e;
    int rc;

    if (drv_get(d->gw->drv, d->o->id, &ds, &e) == 0 && ds.phase == DRV_READY &&
        waited < DELETE_GRACE_MS + 2000) {
        if (waited >= DELETE_GRACE_MS && !d->killed) {
            d->killed = true;
            drv_signal(d->gw->drv, d->o->id, SIGKILL, &e);
        }
        loop_timer_start(d->t, DELETE_POLL_MS, false);
        return;
    }
    /* Stopped (or a last, blocking resort inside the driver). */
    rc = delete_finish(d->gw, d->o, 0, &e);
    if (d->st) {
        if (rc < 0)
            api_respond_err(d->st, rc, &e);
        else
            h2_stream_respond(d->st, 200, "application/json", NULL, 0, "{\"deleted\":true}\n", 17);
    }
    delete_free(d);
}

void
gw_sandbox_fini(struct gw *gw)
{
    (void)gw;
    while (deletes)
        delete_free(deletes);
}

struct reconcile {
    struct gw *gw;
    size_t orphans;
};

static void
reconcile_dir(const char *id, void *arg)
{
    struct reconcile *rc = arg;
    struct store_obj *o = NULL;
    struct err e;

    if (store_get(rc->gw->store, SB_TYPE, id, &o, &e) == -ENOENT) {
        if (drv_delete(rc->gw->drv, id, 2000, &e) < 0)
            log_warnx("reconcile: sandbox state %s without a record: %s", id, e.msg);
        else
            rc->orphans++;
    }
    store_obj_free(o);
}

void
gw_sandbox_reconcile(struct gw *gw)
{
    struct store_query q = { .type = SB_TYPE, .limit = STORE_LIST_MAX };
    struct reconcile r = { gw, 0 };
    struct store_obj **all = NULL;
    size_t n = 0, started = 0, deleted = 0;
    char c1[24], c2[24], c3[24];
    struct store_list l;
    struct err e;

    if (!gw->drv)
        return;
    /* Collect first: finishing a delete changes the list. */
    for (q.offset = 0;; q.offset += l.n) {
        if (store_list(gw->store, &q, &l, &e) < 0) {
            log_warnx("reconcile: listing sandboxes: %s", e.msg);
            break;
        }
        all = xrealloc(all, (n + l.n + 1) * sizeof(*all));
        for (size_t i = 0; i < l.n; i++)
            all[n++] = store_obj_dup(l.items[i]);
        store_list_fini(&l);
        if (l.n == 0 || q.offset + l.n >= l.total)
            break;
    }
    for (size_t i = 0; i < n; i++) {
        struct store_obj *o = all[i];
        cJSON *p = parse_stored(o->payload);
        const cJSON *st = cJSON_GetObjectItemCaseSensitive(p, "status");
        const cJSON *ph = st ? cJSON_GetObjectItemCaseSensitive(st, "phase") : NULL;
        const cJSON *spec = cJSON_GetObjectItemCaseSensitive(p, "spec");
        struct drv_status ds;

        if (cJSON_IsString(ph) && strcmp(ph->valuestring, "deleting") == 0) {
            /* Cut off mid-delete: finish it. */
            if (sandbox_delete(gw, o, &e) == 0)
                deleted++;
            else
                log_warnx("reconcile: deleting %s: %s", o->name, e.msg);
        } else if (drv_get(gw->drv, o->id, &ds, &e) == -ENOENT || ds.phase == DRV_PROVISIONING ||
                   (ds.phase == DRV_ERROR && drv_forget(gw->drv, o->id, &e) == 0)) {
            /* Cut off mid-create (record written, supervisor not started),
             * or its monitor vanished (a reboot): start it (again). */
            if (gw_sandbox_start(gw, o->id, o->name,
                                 cJSON_GetObjectItemCaseSensitive(spec, "command"), &e) < 0)
                log_warnx("reconcile: starting %s: %s", o->name, e.msg);
            else
                started++;
        }
        cJSON_Delete(p);
        store_obj_free(o);
    }
    free(all);
    drv_list(gw->drv, reconcile_dir, &r, &e);
    snprintf(c1, sizeof(c1), "%zu", started);
    snprintf(c2, sizeof(c2), "%zu", deleted);
    snprintf(c3, sizeof(c3), "%zu", r.orphans);
    log_kv(LOG_LVL_INFO, "reconciled", "started", c1, "finished_deletes", c2, "orphans_removed", c3,
           NULL);
}

static void
h_delete(struct h2_stream *st, struct h2_req *req, void *arg)
{
    struct gw *gw = arg;
    struct store_obj *o;
    uint64_t expect;
    struct err e;
    int rc;

    if (!gw_authorized(gw, st))
        return;
    if ((rc = api_parse_if_match(h2_stream_header(st, "if-match"), &expect, &e)) < 0) {
        api_respond_err(st, rc, &e);
        return;
    }
    if (!(o = gw_sandbox_lookup(gw, st, req)))
        return;
    if (expect && expect != o->resource_version) {
        err_set(&e, ESTALE, "sandbox %s: resource_version is %llu, not %llu", o->name,
                (unsigned long long)o->resource_version, (unsigned long long)expect);
        api_respond_err(st, -ESTALE, &e);
        store_obj_free(o);
        return;
    }
    for (struct gw_delete *d = deletes; d; d = d->next)
        if (strcmp(d->o->id, o->id) == 0) {
            h2_stream_error(st, 409, "aborted", "sandbox %s: a delete is in progress", o->name);
            store_obj_free(o);
            return;
        }
    if ((rc = delete_begin(gw, o, &e)) < 0) {
        api_respond_err(st, rc, &e);
        store_obj_free(o);
        return;
    }
    if (!gw->drv) {
        if ((rc = delete_finish(gw, o, 0, &e)) < 0)
            api_respond_err(st, rc, &e);
        else
            h2_stream_respond(st, 200, "application/json", NULL, 0, "{\"deleted\":true}\n", 17);
        store_obj_free(o);
        return;
    }
    {
        struct gw_delete *d = xcalloc(1, sizeof(*d));

        d->gw = gw;
        d->st = st;
        d->o = o;
        d->started_ms = loop_now_ms(gw->loop);
        d->t = loop_timer_new(gw->loop, delete_tick, d);
        d->next = deletes;
        deletes = d;
        h2_stream_set_cbs(st, &delete_cbs, d);
        loop_timer_start(d->t, DELETE_POLL_MS, false);
    }
}

static void
watch_start(struct gw *gw, struct h2_stream *st, struct h2_req *req, struct store_obj *o)
{
    struct gw_watch *w = xcalloc(1, sizeof(*w));
    struct buf v = BUF_INIT;

    w->gw = gw;
    w->st = st;
    w->follow = true;
    if (h2_req_query(req, "follow", &v) == 1 &&
        (strcmp(buf_cstr(&v), "0") == 0 || strcmp(buf_cstr(&v), "false") == 0))
        w->follow = false;
    buf_reset(&v);
    if (h2_req_query(req, "logs", &v) == 1 &&
        (strcmp(buf_cstr(&v), "1") == 0 || strcmp(buf_cstr(&v), "true") == 0))
        w->logs = true;
    buf_fini(&v);
    snprintf(w->id, sizeof(w->id), "%s", o->id);
    w->next = gw->watches;
    if (gw->watches)
        gw->watches->prev = w;
    gw->watches = w;
    gw->nwatches++;
    h2_stream_set_cbs(st, &watch_cbs, w);
    h2_stream_start(st, 200, "application/x-ndjson", NULL, 0);
    watch_send(w, "sandbox", o);
}

static void
h_watch(struct h2_stream *st, struct h2_req *req, void *arg)
{
    struct gw *gw = arg;
    struct store_obj *o;

    if (!gw_authorized(gw, st) || !(o = gw_sandbox_lookup(gw, st, req)))
        return;
    watch_start(gw, st, req, o);
    store_obj_free(o);
}

static void
h_watch_id(struct h2_stream *st, struct h2_req *req, void *arg)
{
    struct gw *gw = arg;
    struct store_obj *o = NULL;
    struct err e;
    int rc;

    if (!gw_authorized(gw, st))
        return;
    if ((rc = store_get(gw->store, SB_TYPE, req->params[0], &o, &e)) < 0) {
        if (rc == -ENOENT)
            err_set(&e, ENOENT, "sandbox id %.40s not found", req->params[0]);
        api_respond_err(st, rc, &e);
        return;
    }
    watch_start(gw, st, req, o);
    store_obj_free(o);
}

static void
h_get_id(struct h2_stream *st, struct h2_req *req, void *arg)
{
    struct gw *gw = arg;
    struct store_obj *o = NULL;
    struct err e;
    int rc;

    if (!gw_authorized(gw, st))
        return;
    if ((rc = store_get(gw->store, SB_TYPE, req->params[0], &o, &e)) < 0) {
        if (rc == -ENOENT)
            err_set(&e, ENOENT, "sandbox id %.40s not found", req->params[0]);
        api_respond_err(st, rc, &e);
        return;
    }
    respond_sandbox(st, 200, o);
    store_obj_free(o);
}

void
gw_sandbox_routes(struct gw *gw)
{
    struct h2_router *r = gw->router;

    sb_gw = gw;

    h2_router_add(r, "POST", "/v1/workspaces/{}/sandboxes", 0, h_create, gw);
    h2_router_add(r, "GET", "/v1/workspaces/{}/sandboxes", 0, h_list, gw);
    h2_router_add(r, "GET", "/v1/workspaces/{}/sandboxes/{}", 0, h_get, gw);
    h2_router_add(r, "PATCH", "/v1/workspaces/{}/sandboxes/{}", 0, h_patch, gw);
    h2_router_add(r, "DELETE", "/v1/workspaces/{}/sandboxes/{}", 0, h_delete, gw);
    h2_router_add(r, "GET", "/v1/workspaces/{}/sandboxes/{}/watch", 0, h_watch, gw);
    h2_router_add(r, "GET", "/v1/sandboxes", 0, h_list_all, gw);
    h2_router_add(r, "GET", "/v1/sandboxes/{}", 0, h_get_id, gw);
    h2_router_add(r, "GET", "/v1/sandboxes/{}/watch", 0, h_watch_id, gw);
}
