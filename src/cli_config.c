/*
 * cli_config.c: the CLI's per-user registry of gateways, the active
 * selection and the last used sandbox (include/cli_config.h).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "buf.h"
#include "cli_config.h"
#include "xfuncs.h"

#define META_MAX (64 * 1024)

char *
cli_config_dir(void)
{
    const char *xdg = getenv("XDG_CONFIG_HOME"), *home = getenv("HOME");

    if (xdg && xdg[0] == '/')
        return xasprintf("%s/openshell", xdg);
    if (home && home[0] == '/')
        return xasprintf("%s/.config/openshell", home);
    return NULL;
}

char *
cli_state_dir(const char *name)
{
    const char *xdg = getenv("XDG_STATE_HOME"), *home = getenv("HOME");
    const char *dash = strcmp(name, "openshell") ? "-" : "";
    const char *suffix = strcmp(name, "openshell") ? name : "";

    if (xdg && xdg[0] == '/')
        return xasprintf("%s/openshell/gateway%s%s", xdg, dash, suffix);
    if (home && home[0] == '/')
        return xasprintf("%s/.local/state/openshell/gateway%s%s", home, dash, suffix);
    return NULL;
}

bool
cli_gw_name_ok(const char *name)
{
    size_t n = strlen(name);

    if (n == 0 || n >= CLI_NAME_MAX || !strcmp(name, ".") || !strcmp(name, ".."))
        return false;
    for (const char *p = name; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '.' || *p == '_' || *p == '-'))
            return false;
    return true;
}

/* mkdir -p PATH with mode 0700 for what is created. */
static int
mkdir_p(const char *path, struct err *e)
{
    char *p = xstrdup(path);
    int rc = 0;

    for (char *s = p + 1;; s++) {
        if (*s != '/' && *s != '\0')
            continue;
        {
            char c = *s;
            *s = '\0';
            if (mkdir(p, 0700) < 0 && errno != EEXIST) {
                rc = err_errno(e, "creating %s", p);
                free(p);
                return rc;
            }
            *s = c;
            if (c == '\0')
                break;
        }
    }
    free(p);
    return rc;
}

/* Write TEXT to DIR/NAME atomically (temporary file, fsync, rename), 0600. */
static int
write_atomic(const char *dir, const char *name, const char *text, struct err *e)
{
    char *tmp = xasprintf("%s/.%s.tmp.%ld", dir, name, (long)getpid());
    char *path = xasprintf("%s/%s", dir, name);
    int fd, rc = 0;

    if ((rc = mkdir_p(dir, e)) < 0)
        goto out;
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        rc = err_errno(e, "creating %s", tmp);
        goto out;
    }
    if ((rc = write_full(fd, text, strlen(text))) < 0 || fsync(fd) < 0) {
        rc = rc < 0 ? err_set(e, -rc, "writing %s: %s", tmp, strerror(-rc))
                    : err_errno(e, "writing %s", tmp);
        close(fd);
        unlink(tmp);
        goto out;
    }
    close(fd);
    if (rename(tmp, path) < 0) {
        rc = err_errno(e, "renaming %s to %s", tmp, path);
        unlink(tmp);
    }
out:
    free(tmp);
    free(path);
    return rc;
}

static void
copy_str(char *dst, size_t size, const cJSON *obj, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);

    if (cJSON_IsString(v) && strlen(v->valuestring) < size)
        buf_copy_fixed(dst, size, v->valuestring);
}

int
cli_gw_load(const char *cfg, const char *name, struct cli_gateway *g, struct err *e)
{
    char *path;
    struct buf b = BUF_INIT;
    cJSON *j = NULL;
    const cJSON *v;
    int rc;

    memset(g, 0, sizeof(*g));
    if (!cli_gw_name_ok(name))
        return err_set(e, EINVAL, "'%s' is not a valid gateway name", name);
    path = xasprintf("%s/gateways/%s/metadata.json", cfg, name);
    if ((rc = read_file(path, META_MAX, &b, e)) < 0)
        goto out;
    j = cJSON_ParseWithLength(b.data ? b.data : "", b.len);
    if (!cJSON_IsObject(j)) {
        rc = err_set(e, EINVAL, "%s: not a JSON object", path);
        goto out;
    }
    buf_copy_fixed(g->name, sizeof(g->name), name);
    copy_str(g->endpoint, sizeof(g->endpoint), j, "gateway_endpoint");
    copy_str(g->auth, sizeof(g->auth), j, "auth_mode");
    copy_str(g->unix_socket, sizeof(g->unix_socket), j, "unix_socket");
    copy_str(g->state_dir, sizeof(g->state_dir), j, "state_dir");
    if (!g->auth[0])
        buf_copy_fixed(g->auth, sizeof(g->auth), "mtls"); /* the reference's default */
    g->is_remote = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "is_remote"));
    v = cJSON_GetObjectItemCaseSensitive(j, "gateway_port");
    if (cJSON_IsNumber(v) && v->valuedouble >= 0 && v->valuedouble <= 65535)
        g->port = (unsigned)v->valuedouble;
    if (!g->endpoint[0]) {
        rc = err_set(e, EINVAL, "%s: no gateway_endpoint", path);
        goto out;
    }
out:
    cJSON_Delete(j);
    buf_fini(&b);
    free(path);
    return rc;
}

int
cli_gw_save(const char *cfg, const struct cli_gateway *g, struct err *e)
{
    struct buf b = BUF_INIT;
    char *dir;
    int rc;

    if (!cli_gw_name_ok(g->name))
        return err_set(e, EINVAL, "'%s' is not a valid gateway name", g->name);
    buf_puts(&b, "{\"name\":");
    buf_put_json_str(&b, g->name, strlen(g->name));
    buf_puts(&b, ",\"gateway_endpoint\":");
    buf_put_json_str(&b, g->endpoint, strlen(g->endpoint));
    buf_printf(&b, ",\"is_remote\":%s,\"gateway_port\":%u,\"auth_mode\":",
               g->is_remote ? "true" : "false", g->port);
    buf_put_json_str(&b, g->auth, strlen(g->auth));
    if (g->unix_socket[0]) {
        buf_puts(&b, ",\"unix_socket\":");
        buf_put_json_str(&b, g->unix_socket, strlen(g->unix_socket));
    }
    if (g->state_dir[0]) {
        buf_puts(&b, ",\"state_dir\":");
        buf_put_json_str(&b, g->state_dir, strlen(g->state_dir));
    }
    buf_puts(&b, "}\n");
    dir = xasprintf("%s/gateways/%s", cfg, g->name);
    rc = write_atomic(dir, "metadata.json", buf_cstr(&b), e);
    free(dir);
    buf_fini(&b);
    return rc;
}

static int
gw_cmp(const void *a, const void *b)
{
    return strcmp(((const struct cli_gateway *)a)->name, ((const struct cli_gateway *)b)->name);
}

int
cli_gw_list(const char *cfg, struct cli_gateway **out, size_t *n, struct err *e)
{
    char *path = xasprintf("%s/gateways", cfg);
    DIR *d = opendir(path);
    struct dirent *de;
    size_t cap = 0;

    *out = NULL;
    *n = 0;
    if (!d) {
        int rc = errno == ENOENT ? 0 : err_errno(e, "reading %s", path);
        free(path);
        return rc;
    }
    while ((de = readdir(d))) {
        struct cli_gateway g;

        if (de->d_name[0] == '.' || !cli_gw_name_ok(de->d_name))
            continue;
        if (cli_gw_load(cfg, de->d_name, &g, NULL) < 0)
            continue;
        if (*n == cap) {
            cap = cap ? cap * 2 : 8;
            *out = xrealloc(*out, cap * sizeof(**out));
        }
        (*out)[(*n)++] = g;
    }
    closedir(d);
    free(path);
    if (*n)
        qsort(*out, *n, sizeof(**out), gw_cmp);
    return 0;
}

/* Remove everything under directory fd DFD (never following symlinks). */
static int
rm_tree_at(int dfd, struct err *e)
{
    DIR *d = fdopendir(dfd);
    struct dirent *de;
    int rc = 0;

    if (!d) {
        close(dfd);
        return err_errno(e, "reading a directory");
    }
    while ((de = readdir(d))) {
        struct stat st;

        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
            continue;
        if (S_ISDIR(st.st_mode)) {
            int sub = openat(dirfd(d), de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (sub < 0) {
                rc = err_errno(e, "opening %s", de->d_name);
                break;
            }
            if ((rc = rm_tree_at(sub, e)) < 0)
                break;
            if (unlinkat(dirfd(d), de->d_name, AT_REMOVEDIR) < 0) {
                rc = err_errno(e, "removing %s", de->d_name);
                break;
            }
        } else if (unlinkat(dirfd(d), de->d_name, 0) < 0) {
            rc = err_errno(e, "removing %s", de->d_name);
            break;
        }
    }
    closedir(d);
    return rc;
}

int
cli_gw_remove(const char *cfg, const char *name, struct err *e)
{
    char active[CLI_NAME_MAX];
    char *path;
    int fd, rc;

    if (!cli_gw_name_ok(name))
        return err_set(e, EINVAL, "'%s' is not a valid gateway name", name);
    path = xasprintf("%s/gateways/%s", cfg, name);
    fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        rc = errno == ENOENT ? err_set(e, ENOENT, "gateway '%s' is not registered", name)
                             : err_errno(e, "opening %s", path);
        free(path);
        return rc;
    }
    if ((rc = rm_tree_at(fd, e)) == 0 && rmdir(path) < 0)
        rc = err_errno(e, "removing %s", path);
    free(path);
    if (rc == 0 && cli_active_get(cfg, active, sizeof(active)) == 0 && !strcmp(active, name))
        rc = cli_active_set(cfg, NULL, e);
    return rc;
}

/* First line of PATH (trimmed) into OUT[SIZE]: 0, -ENOENT. */
static int
read_line(const char *path, char *out, size_t size)
{
    struct buf b = BUF_INIT;
    int rc = read_file(path, 4096, &b, NULL);

    if (rc == 0) {
        const char *s = buf_cstr(&b);
        size_t n = strcspn(s, "\r\n");

        while (n && (s[n - 1] == ' ' || s[n - 1] == '\t'))
            n--;
        if (n == 0 || n >= size)
            rc = -ENOENT;
        else {
            memcpy(out, s, n);
            out[n] = '\0';
        }
    }
    buf_fini(&b);
    return rc < 0 ? -ENOENT : 0;
}

int
cli_active_get(const char *cfg, char *out, size_t size)
{
    char *path = xasprintf("%s/active_gateway", cfg);
    int rc = read_line(path, out, size);

    free(path);
    if (rc == 0 && !cli_gw_name_ok(out))
        rc = -ENOENT;
    return rc;
}

int
cli_active_set(const char *cfg, const char *name, struct err *e)
{
    char *path;
    int rc = 0;

    if (name) {
        char *text = xasprintf("%s\n", name);
        rc = write_atomic(cfg, "active_gateway", text, e);
        free(text);
        return rc;
    }
    path = xasprintf("%s/active_gateway", cfg);
    if (unlink(path) < 0 && errno != ENOENT)
        rc = err_errno(e, "removing %s", path);
    free(path);
    return rc;
}

int
cli_gw_resolve(const char *cfg, const char *flag, const char *env, char *out, size_t size,
               enum cli_gw_source *src)
{
    *src = CLI_GW_NONE;
    if (flag && *flag) {
        *src = CLI_GW_FLAG;
        return buf_copy_fixed(out, size, flag) < 0 ? -ENAMETOOLONG : 0;
    }
    if (env && *env) {
        *src = CLI_GW_ENV;
        return buf_copy_fixed(out, size, env) < 0 ? -ENAMETOOLONG : 0;
    }
    if (cfg && cli_active_get(cfg, out, size) == 0) {
        *src = CLI_GW_ACTIVE;
        return 0;
    }
    return -ENOENT;
}

int
cli_last_sandbox_get(const char *cfg, const char *gw, const char *ws, char *out, size_t size)
{
    char *path = xasprintf("%s/gateways/%s/last_sandbox", cfg, gw);
    struct buf b = BUF_INIT;
    int rc = read_file(path, 4096, &b, NULL);

    free(path);
    if (rc == 0) {
        const char *s = buf_cstr(&b), *nl = strchr(s, '\n');
        size_t n;

        rc = -ENOENT;
        if (nl && (size_t)(nl - s) == strlen(ws) && !strncmp(s, ws, strlen(ws))) {
            n = strcspn(nl + 1, "\r\n");
            if (n > 0 && n < size) {
                memcpy(out, nl + 1, n);
                out[n] = '\0';
                rc = 0;
            }
        }
    }
    buf_fini(&b);
    return rc < 0 ? -ENOENT : 0;
}

int
cli_last_sandbox_set(const char *cfg, const char *gw, const char *ws, const char *name,
                     struct err *e)
{
    char *dir = xasprintf("%s/gateways/%s", cfg, gw), *text = xasprintf("%s\n%s\n", ws, name);
    int rc = write_atomic(dir, "last_sandbox", text, e);

    free(dir);
    free(text);
    return rc;
}

void
cli_last_sandbox_clear(const char *cfg, const char *gw, const char *ws, const char *name)
{
    char cur[256];

    if (cli_last_sandbox_get(cfg, gw, ws, cur, sizeof(cur)) == 0 && !strcmp(cur, name)) {
        char *path = xasprintf("%s/gateways/%s/last_sandbox", cfg, gw);
        unlink(path);
        free(path);
    }
}

bool
cli_host_is_loopback(const char *host)
{
    return !strcmp(host, "localhost") || !strncmp(host, "127.", 4) || !strcmp(host, "::1") ||
           !strcmp(host, "[::1]");
}

int
cli_endpoint_parse(const char *in, char *out, size_t size, char **host, unsigned *port,
                   struct err *e)
{
    const char *rest, *end, *colon;
    bool tls;
    char *h;

    *host = NULL;
    *port = 0;
    if (!strncmp(in, "unix://", 7)) {
        if (in[7] != '/' || strlen(in) < 9)
            return err_set(e, EINVAL, "%s: expected unix:///ABSOLUTE/PATH", in);
        *host = xstrdup("");
        return buf_copy_fixed(out, size, in) < 0 ? err_set(e, EINVAL, "%s: too long", in) : 0;
    }
    if (!strncmp(in, "https://", 8)) {
        tls = true;
        rest = in + 8;
    } else if (!strncmp(in, "http://", 7)) {
        tls = false;
        rest = in + 7;
    } else if (strstr(in, "://")) {
        return err_set(e, EINVAL, "%s: unsupported scheme (https://, http:// or unix://)", in);
    } else {
        tls = true;
        rest = in;
    }
    end = rest + strcspn(rest, "/?#");
    if (*end && strcmp(end, "/") != 0)
        return err_set(e, EINVAL, "%s: an endpoint has no path", in);
    if (end == rest)
        return err_set(e, EINVAL, "%s: no host", in);
    if (*rest == '[') {
        const char *rb = memchr(rest, ']', (size_t)(end - rest));
        if (!rb)
            return err_set(e, EINVAL, "%s: unterminated [IPv6] host", in);
        colon = rb + 1 < end && rb[1] == ':' ? rb + 1 : NULL;
        h = xstrndup(rest, (size_t)(rb + 1 - rest));
    } else {
        colon = memchr(rest, ':', (size_t)(end - rest));
        h = xstrndup(rest, (size_t)((colon ? colon : end) - rest));
    }
    if (!*h) {
        free(h);
        return err_set(e, EINVAL, "%s: no host", in);
    }
    *port = tls ? 443 : 80;
    if (colon) {
        char *pe;
        unsigned long p = strtoul(colon + 1, &pe, 10);
        if (pe != end || colon + 1 == end || p == 0 || p > 65535) {
            free(h);
            return err_set(e, EINVAL, "%s: bad port", in);
        }
        *port = (unsigned)p;
    }
    if (buf_fmt_fixed(out, size, "%s://%s:%u", tls ? "https" : "http", h, *port) < 0) {
        free(h);
        return err_set(e, EINVAL, "%s: too long", in);
    }
    *host = h;
    return 0;
}

int
cli_mtls_import(const char *cfg, const char *name, const char *ca, const char *crt, const char *key,
                struct err *e)
{
    const char *src[3] = { ca, crt, key };
    static const char *const dst[3] = { "ca.crt", "tls.crt", "tls.key" };
    struct buf text[3] = { BUF_INIT, BUF_INIT, BUF_INIT };
    char *dir = xasprintf("%s/gateways/%s/mtls", cfg, name);
    int rc = 0;

    /* Read all three first: a missing one leaves nothing half-imported. */
    for (int i = 0; i < 3 && rc == 0; i++)
        rc = read_file(src[i], 256 * 1024, &text[i], e);
    for (int i = 0; i < 3 && rc == 0; i++)
        rc = write_atomic(dir, dst[i], buf_cstr(&text[i]), e);
    for (int i = 0; i < 3; i++)
        buf_fini(&text[i]);
    free(dir);
    return rc;
}
