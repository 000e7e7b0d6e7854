/*
 * gw_log.c: sandbox logs (doc/api.md §5.12).
 *
 * Supervisors send batches of log lines on their session; each line is
 * normalised to {"type":"log","ts_ms","level","source","message","fields"}
 * and appended to STATE_DIR/sandboxes/ID/log.ndjson (one write per batch,
 * O_APPEND). Past 8 MiB the file is renamed to log.ndjson.1 (the older one
 * goes), so a sandbox keeps between 8 and 16 MiB of history across
 * gateway restarts, and the directory goes with the sandbox.
 *
 * GET .../logs reads the tail from those files and, with follow=1, stays
 * open: followers get new lines as they arrive. A follower that does not
 * read stops getting lines (they are counted and reported in a
 * {"type":"dropped","count":N} line once it drains); it never holds more
 * than one stream buffer of memory.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "api.h"
#include "buf.h"
#include "gw.h"
#include "h2.h"
#include "log.h"
#include "store.h"
#include "xfuncs.h"

#define LOG_FILE "log.ndjson"
#define LOG_ROTATE_BYTES (8 * 1024 * 1024)
#define LOG_MSG_MAX (64 * 1024)
#define LOG_BATCH_MAX 1000
#define LOG_TAIL_DEFAULT 100
#define LOG_TAIL_MAX 100000

struct gw_log_follower {
    struct gw *gw;
    struct h2_stream *st;
    char id[37];
    int min_level;
    char source[33];
    bool blocked;
    unsigned long long dropped;
    struct gw_log_follower *prev, *next;
};

static struct gw_log_follower *followers;

static const char *const levels[] = { "trace", "debug", "info", "warn", "error", NULL };

static int
level_index(const char *s)
{
    for (int i = 0; levels[i]; i++)
        if (strcmp(levels[i], s) == 0)
            return i;
    return -1;
}

char *
gw_sandbox_dir(struct gw *gw, const char *id)
{
    char *base = xasprintf("%s/sandboxes", gw->state_dir);
    char *dir = xasprintf("%s/%s", base, id);

    if (mkdir(base, 0700) < 0 && errno != EEXIST)
        log_warn("creating %s", base);
    if (mkdir(dir, 0700) < 0 && errno != EEXIST)
        log_warn("creating %s", dir);
    free(base);
    return dir;
}

/* One normalised line for item IT, or -1 (not an object). */
static int
render(const cJSON *it, struct buf *b, int *level, const char **source)
{
    const cJSON *ts, *lv, *src, *msg, *f;
    char *fields;
    int li;

    if (!cJSON_IsObject(it))
        return -1;
    ts = cJSON_GetObjectItemCaseSensitive(it, "ts_ms");
    lv = cJSON_GetObjectItemCaseSensitive(it, "level");
    src = cJSON_GetObjectItemCaseSensitive(it, "source");
    msg = cJSON_GetObjectItemCaseSensitive(it, "message");
    f = cJSON_GetObjectItemCaseSensitive(it, "fields");
    li = cJSON_IsString(lv) ? level_index(lv->valuestring) : -1;
    if (li < 0)
        li = 2;
    *level = li;
    *source = cJSON_IsString(src) && *src->valuestring && strlen(src->valuestring) <= 32
                  ? src->valuestring
                  : "supervisor";
    buf_printf(b, "{\"type\":\"log\",\"ts_ms\":%lld,\"level\":\"%s\",\"source\":",
               cJSON_IsNumber(ts) && ts->valuedouble > 0 ? (long long)ts->valuedouble
                                                         : (long long)store_now_ms(),
               levels[li]);
    buf_put_json_str(b, *source, strlen(*source));
    buf_puts(b, ",\"message\":");
    if (cJSON_IsString(msg)) {
        size_t n = strlen(msg->valuestring);

        buf_put_json_str(b, msg->valuestring, n > LOG_MSG_MAX ? LOG_MSG_MAX : n);
    } else {
        buf_puts(b, "\"\"");
    }
    buf_puts(b, ",\"fields\":");
    if (cJSON_IsObject(f)) {
        fields = api_json_print(f);
        if (strlen(fields) <= LOG_MSG_MAX)
            buf_puts(b, fields);
        else
            buf_puts(b, "{}");
        free(fields);
    } else {
        buf_puts(b, "{}");
    }
    buf_puts(b, "}\n");
    return 0;
}

static void
follower_write(struct gw_log_follower *f, const char *p, size_t n)
{
    if (f->blocked) {
        f->dropped++;
        return;
    }
    if (h2_stream_write(f->st, p, n) == -EAGAIN)
        f->blocked = true;
}

void
gw_log_append(struct gw *gw, const char *id, const struct cJSON *lines)
{
    struct buf all = BUF_INIT, one = BUF_INIT;
    const cJSON *it;
    char *dir, *path;
    struct stat sb;
    size_t n = 0;
    int fd;

    if (!cJSON_IsArray(lines))
        return;
    cJSON_ArrayForEach(it, lines)
    {
        int level;
        const char *source;

        if (n++ >= LOG_BATCH_MAX)
            break;
        buf_reset(&one);
        if (render(it, &one, &level, &source) < 0)
            continue;
        buf_append(&all, one.data, one.len);
        gw_watch_log(gw, id, one.data, one.len);
        for (struct gw_log_follower *f = followers; f; f = f->next)
            if (strcmp(f->id, id) == 0 && level >= f->min_level &&
                (!f->source[0] || strcmp(f->source, source) == 0))
                follower_write(f, one.data, one.len);
    }
    buf_fini(&one);
    if (!all.len)
        return;
    dir = gw_sandbox_dir(gw, id);
    path = xasprintf("%s/" LOG_FILE, dir);
    if (stat(path, &sb) == 0 && sb.st_size >= LOG_ROTATE_BYTES) {
        char *old = xasprintf("%s.1", path);

        if (rename(path, old) < 0)
            log_warn("rotating %s", path);
        free(old);
    }
    fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0 || write_full(fd, all.data, all.len) < 0)
        log_warn("sandbox %s: appending to %s", id, path);
    if (fd >= 0)
        close(fd);
    free(path);
    free(dir);
    buf_fini(&all);
}

/* ------------------------------------------------------------------ GET .../logs */

static void
follower_unlink(struct gw_log_follower *f)
{
    if (f->prev)
        f->prev->next = f->next;
    else
        followers = f->next;
    if (f->next)
        f->next->prev = f->prev;
}

static void
follower_on_drain(struct h2_stream *st, void *arg)
{
    struct gw_log_follower *f = arg;
    char line[96];

    (void)st;
    f->blocked = false;
    if (!f->dropped)
        return;
    snprintf(line, sizeof(line), "{\"type\":\"dropped\",\"count\":%llu}\n", f->dropped);
    f->dropped = 0;
    follower_write(f, line, strlen(line));
}

static void
follower_on_close(struct h2_stream *st, uint32_t code, void *arg)
{
    struct gw_log_follower *f = arg;

    (void)st;
    (void)code;
    follower_unlink(f);
    free(f);
}

static const struct h2_stream_cbs follower_cbs = {
    .on_drain = follower_on_drain,
    .on_close = follower_on_close,
};

/* Does LINE (one stored line, no newline) pass the filters? */
static bool
line_matches(const char *line, size_t n, int min_level, const char *source)
{
    cJSON *j;
    const cJSON *lv, *src;
    bool ok;

    if (min_level <= 0 && !*source)
        return true;
    if (!(j = cJSON_ParseWithLength(line, n)))
        return false;
    lv = cJSON_GetObjectItemCaseSensitive(j, "level");
    src = cJSON_GetObjectItemCaseSensitive(j, "source");
    ok = cJSON_IsString(lv) && level_index(lv->valuestring) >= min_level &&
         (!*source || (cJSON_IsString(src) && strcmp(src->valuestring, source) == 0));
    cJSON_Delete(j);
    return ok;
}

/* The last TAIL matching lines of sandbox ID's files into OUT. */
static void
read_tail(struct gw *gw, const char *id, size_t tail, int min_level, const char *source,
          struct buf *out)
{
    char *dir = xasprintf("%s/sandboxes/%s", gw->state_dir, id);
    struct buf data = BUF_INIT, tmp = BUF_INIT;
    size_t *starts = NULL, *lens = NULL, nl = 0, cap = 0;
    struct err e;

    for (int i = 0; i < 2; i++) {
        char *path = xasprintf("%s/" LOG_FILE "%s", dir, i == 0 ? ".1" : "");

        buf_reset(&tmp);
        if (read_file(path, 2 * LOG_ROTATE_BYTES, &tmp, &e) == 0 && tmp.len)
            buf_append(&data, tmp.data, tmp.len);
        free(path);
    }
    for (size_t i = 0, s = 0; i < data.len; i++) {
        if (data.data[i] != '\n')
            continue;
        if (i > s && line_matches(data.data + s, i - s, min_level, source)) {
            if (nl == cap) {
                cap = cap ? cap * 2 : 256;
                starts = xrealloc(starts, cap * sizeof(*starts));
                lens = xrealloc(lens, cap * sizeof(*lens));
            }
            starts[nl] = s;
            lens[nl++] = i - s + 1;
        }
        s = i + 1;
    }
    for (size_t i = nl > tail ? nl - tail : 0; i < nl; i++)
        buf_append(out, data.data + starts[i], lens[i]);
    free(starts);
    free(lens);
    buf_fini(&data);
    buf_fini(&tmp);
    free(dir);
}

static void
h_logs(struct h2_stream *st, struct h2_req *req, void *arg)
{
    static const char *const known[] = { "tail", "follow", "level", "source", NULL };
    struct gw *gw = arg;
    struct store_obj *sb = NULL;
    struct buf v = BUF_INIT, out = BUF_INIT;
    size_t tail = LOG_TAIL_DEFAULT;
    int min_level = 0;
    bool follow = false;
    char source[33] = "";
    struct err e;
    int rc;

    if (!gw_authorized(gw, st))
        return;
    for (const char *p = req->query; p && *p;) {
        size_t len = strcspn(p, "&"), klen = strcspn(p, "=&"), i;

        for (i = 0; known[i]; i++)
            if (strlen(known[i]) == klen && strncmp(known[i], p, klen) == 0)
                break;
        if (!known[i] && len) {
            rc = err_set(&e, EINVAL,
                         "query parameter %.*s unknown (known: tail, follow, level, source)",
                         (int)(klen > 60 ? 60 : klen), p);
            goto fail;
        }
        p += len + (p[len] == '&');
    }
    if (h2_req_query(req, "tail", &v) == 1) {
        char *end;
        unsigned long long n = strtoull(buf_cstr(&v), &end, 10);

        if (!v.len || *end || buf_cstr(&v)[0] == '-' || n > LOG_TAIL_MAX) {
            rc = err_set(&e, EINVAL, "query tail=%.20s: expected 0-%d", buf_cstr(&v), LOG_TAIL_MAX);
            goto fail;
        }
        tail = (size_t)n;
    }
    buf_reset(&v);
    if (h2_req_query(req, "follow", &v) == 1)
        follow = strcmp(buf_cstr(&v), "1") == 0 || strcmp(buf_cstr(&v), "true") == 0;
    buf_reset(&v);
    if (h2_req_query(req, "level", &v) == 1 && (min_level = level_index(buf_cstr(&v))) < 0) {
        rc = err_set(&e, EINVAL, "query level=%.20s: expected trace, debug, info, warn or error",
                     buf_cstr(&v));
        goto fail;
    }
    buf_reset(&v);
    if (h2_req_query(req, "source", &v) == 1) {
        if (v.len == 0 || v.len >= sizeof(source)) {
            rc = err_set(&e, EINVAL, "query source: 1 to 32 characters");
            goto fail;
        }
        memcpy(source, v.data, v.len);
    }
    if (!(sb = gw_sandbox_lookup(gw, st, req)))
        goto done;
    if (tail)
        read_tail(gw, sb->id, tail, min_level, source, &out);
    if (!follow) {
        h2_stream_respond(st, 200, "application/x-ndjson", NULL, 0, out.data, out.len);
        goto done;
    }
    {
        struct gw_log_follower *f = xcalloc(1, sizeof(*f));

        f->gw = gw;
        f->st = st;
        f->min_level = min_level;
        memcpy(f->source, source, sizeof(source));
        snprintf(f->id, sizeof(f->id), "%s", sb->id);
        f->next = followers;
        if (followers)
            followers->prev = f;
        followers = f;
        h2_stream_set_cbs(st, &follower_cbs, f);
        h2_stream_start(st, 200, "application/x-ndjson", NULL, 0);
        if (out.len)
            follower_write(f, out.data, out.len);
    }
    goto done;
fail:
    api_respond_err(st, rc, &e);
done:
    store_obj_free(sb);
    buf_fini(&v);
    buf_fini(&out);
}

void
gw_log_end(struct gw *gw, const char *id, const char *why)
{
    (void)gw;
    for (struct gw_log_follower *f = followers; f; f = f->next) {
        struct buf b = BUF_INIT;

        if (id && strcmp(f->id, id) != 0)
            continue;
        buf_puts(&b, "{\"type\":\"error\",\"error\":{\"code\":\"unavailable\",\"message\":");
        buf_put_json_str(&b, why, strlen(why));
        buf_puts(&b, "}}\n");
        h2_stream_write(f->st, b.data, b.len);
        h2_stream_end(f->st);
        buf_fini(&b);
    }
}

void
gw_log_remove(struct gw *gw, const char *id)
{
    char *dir = xasprintf("%s/sandboxes/%s", gw->state_dir, id);
    char *f1 = xasprintf("%s/" LOG_FILE, dir), *f2 = xasprintf("%s/" LOG_FILE ".1", dir);

    unlink(f1);
    unlink(f2);
    rmdir(dir);
    free(f1);
    free(f2);
    free(dir);
}

void
gw_log_routes(struct gw *gw)
{
    h2_router_add(gw->router, "GET", "/v1/workspaces/{}/sandboxes/{}/logs", 0, h_logs, gw);
}
