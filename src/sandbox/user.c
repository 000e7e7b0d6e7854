/* user.c: passwd/group lookups inside the sandbox root (see include/sb_user.h). */
#include "sb_user.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "xfuncs.h"

#define SB_USER_FILE_MAX (1u << 20)

int
sb_parse_id(const char *s, unsigned *out)
{
    unsigned long long v = 0;

    if (!s || !*s)
        return -EINVAL;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9')
            return -EINVAL;
        v = v * 10 + (unsigned)(*p - '0');
        if (v > 0xffffffffULL)
            return -EINVAL;
    }
    if (v == 0 || v == 0xffffffffULL)
        return -EPERM;
    *out = (unsigned)v;
    return 0;
}

/* Split LINE (modified in place) at ':' into at most MAX fields. Returns the
 * field count. */
static int
split_colon(char *line, char **f, int max)
{
    int n = 0;

    f[n++] = line;
    for (char *p = line; *p && n < max; p++) {
        if (*p == ':') {
            *p = '\0';
            f[n++] = p + 1;
        }
    }
    return n;
}

/* Call MATCH for every well-formed line of ROOT/REL with at least NF fields;
 * stop at the first line it accepts (returns 1). Returns 1 (found), 0 (not
 * found, also when the file is missing) or -errno for unreadable files. */
static int
scan_db(const char *root, const char *rel, int nf, int (*match)(char **f, void *arg), void *arg)
{
    struct buf path = BUF_INIT, data = BUF_INIT;
    char *save = NULL, *line;
    int rc;

    buf_printf(&path, "%s%s", strcmp(root, "/") == 0 ? "" : root, rel);
    rc = read_file(buf_cstr(&path), SB_USER_FILE_MAX, &data, NULL);
    buf_fini(&path);
    if (rc == -ENOENT) {
        buf_fini(&data);
        return 0;
    }
    if (rc < 0) {
        buf_fini(&data);
        return rc;
    }
    rc = 0;
    if (data.len == 0) {
        buf_fini(&data);
        return 0;
    }
    for (line = strtok_r(data.data, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char *f[8];
        if (line[0] == '#' || split_colon(line, f, 8) < nf)
            continue;
        if (match(f, arg)) {
            rc = 1;
            break;
        }
    }
    buf_fini(&data);
    return rc;
}

struct id_query {
    const char *name; /* match by name, or */
    unsigned id;      /* by number when name is NULL */
    unsigned out_id, out_gid;
    char *out_name, *out_home;
    size_t name_size, home_size;
};

static int
match_entry(char **f, void *arg)
{
    struct id_query *q = arg;
    unsigned id, gid = 0;
    char *end;

    id = (unsigned)strtoul(f[2], &end, 10);
    if (*end || !*f[2])
        return 0;
    if (q->name ? strcmp(f[0], q->name) != 0 : id != q->id)
        return 0;
    if (q->out_home) /* passwd: name:pw:uid:gid:gecos:home:shell */
        gid = (unsigned)strtoul(f[3], NULL, 10);
    q->out_id = id;
    q->out_gid = gid;
    if (q->out_name)
        buf_copy_fixed(q->out_name, q->name_size, f[0]);
    if (q->out_home)
        buf_copy_fixed(q->out_home, q->home_size, f[5]);
    return 1;
}

int
sb_user_lookup(const char *root, const char *name_or_id, uid_t *uid, gid_t *gid, bool *found,
               struct err *e)
{
    char home[8];
    struct id_query q = { .out_home = home, .home_size = sizeof(home) };
    unsigned id;
    int rc = sb_parse_id(name_or_id, &id);

    if (found)
        *found = false;
    if (rc == -EPERM)
        return err_set(e, EPERM, "user '%s': the agent never runs as root or uid 4294967295",
                       name_or_id);
    if (rc == 0) {
        q.id = id;
    } else {
        if (!*name_or_id)
            return err_set(e, EINVAL, "empty user name");
        q.name = name_or_id;
    }
    rc = scan_db(root, "/etc/passwd", 7, match_entry, &q);
    if (rc < 0)
        return err_set(e, -rc, "reading %s/etc/passwd: %s", root, strerror(-rc));
    if (rc == 0 && q.name)
        return err_set(e, ENOENT, "user '%s' does not exist in %s/etc/passwd", name_or_id,
                       strcmp(root, "/") == 0 ? "" : root);
    if (rc == 0) { /* a bare number need not be listed */
        *uid = id;
        return 0;
    }
    if (q.out_id == 0 || q.out_id == 0xffffffffu)
        return err_set(e, EPERM, "user '%s' is uid %u: the agent never runs as root", name_or_id,
                       q.out_id);
    *uid = q.out_id;
    if (gid)
        *gid = q.out_gid;
    if (found)
        *found = true;
    return 0;
}

int
sb_group_lookup(const char *root, const char *name_or_id, gid_t *gid, struct err *e)
{
    struct id_query q = { 0 };
    unsigned id;
    int rc = sb_parse_id(name_or_id, &id);

    if (rc == -EPERM)
        return err_set(e, EPERM, "group '%s': the agent never runs with gid 0 or 4294967295",
                       name_or_id);
    if (rc == 0) {
        *gid = id;
        return 0;
    }
    if (!*name_or_id)
        return err_set(e, EINVAL, "empty group name");
    q.name = name_or_id;
    rc = scan_db(root, "/etc/group", 3, match_entry, &q);
    if (rc < 0)
        return err_set(e, -rc, "reading %s/etc/group: %s", root, strerror(-rc));
    if (rc == 0)
        return err_set(e, ENOENT, "group '%s' does not exist in %s/etc/group", name_or_id,
                       strcmp(root, "/") == 0 ? "" : root);
    if (q.out_id == 0 || q.out_id == 0xffffffffu)
        return err_set(e, EPERM, "group '%s' is gid %u: the agent never runs as root group",
                       name_or_id, q.out_id);
    *gid = q.out_id;
    return 0;
}

int
sb_user_name(const char *root, uid_t uid, char *name, size_t size, char *home, size_t hsize)
{
    char dummy[8];
    struct id_query q = { .id = uid,
                          .out_name = name,
                          .name_size = size,
                          .out_home = home ? home : dummy,
                          .home_size = home ? hsize : sizeof(dummy) };

    return scan_db(root, "/etc/passwd", 7, match_entry, &q) == 1 ? 0 : -ENOENT;
}
