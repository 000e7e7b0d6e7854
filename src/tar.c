/* tar.c: ustar/pax writer and a fail-closed extractor (see include/tar.h). */
#include "tar.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "xfuncs.h"

#define BLK 512
#define IOBUF (64 * 1024)
/* Bounds on metadata the extractor holds in memory. */
#define PAX_MAX (1024 * 1024)
#define LONGNAME_MAX (TAR_NAME_MAX + 1)
#define DRAIN_MAX (1024 * 1024)
/* Directory depth tar_create descends (one fd per level). */
#define CREATE_DEPTH_MAX 256

/* The ustar header block (POSIX.1-1988 layout; GNU reuses prefix for times). */
struct hdr {
    char name[100];
    char mode[8];
    char uid[8];
    char gid[8];
    char size[12];
    char mtime[12];
    char chksum[8];
    char typeflag;
    char linkname[100];
    char magic[6];
    char version[2];
    char uname[32];
    char gname[32];
    char devmajor[8];
    char devminor[8];
    char prefix[155];
    char pad[12];
};
_Static_assert(sizeof(struct hdr) == BLK, "tar header is one block");

/* Quote an entry name for an error message: printable ASCII kept, the rest as
 * \xNN, cut at about 160 bytes. */
static const char *
qname(const char *s, size_t n, char *out, size_t outsz)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0, i;

    for (i = 0; i < n && o + 8 < outsz; i++) {
        unsigned char c = (unsigned char)s[i];

        if (o > 160) {
            memcpy(out + o, "...", 3);
            o += 3;
            break;
        }
        if (c >= 0x20 && c < 0x7f && c != '\\' && c != '\'') {
            out[o++] = (char)c;
        } else {
            out[o++] = '\\';
            out[o++] = 'x';
            out[o++] = hex[c >> 4];
            out[o++] = hex[c & 15];
        }
    }
    out[o] = '\0';
    return out;
}

/* ------------------------------------------------------------------ writer */

struct tw {
    int fd;
    const struct tar_opts *o;
    struct tar_stats st;
    uint64_t entries;
    dev_t self_dev; /* the output file itself, skipped if inside the tree */
    ino_t self_ino;
    bool have_self;
    bool shrank;
    size_t len;
    unsigned char buf[IOBUF];
};

static int
tw_flush(struct tw *w, struct err *e)
{
    int rc;

    if (!w->len)
        return 0;
    if ((rc = write_full(w->fd, w->buf, w->len)) < 0) {
        errno = -rc;
        return err_errno(e, "tar: writing archive");
    }
    w->len = 0;
    return 0;
}

static int
tw_put(struct tw *w, const void *p, size_t n, struct err *e)
{
    const unsigned char *s = p;
    int rc;

    while (n) {
        size_t k = sizeof(w->buf) - w->len;

        if (k > n)
            k = n;
        memcpy(w->buf + w->len, s, k);
        w->len += k;
        s += k;
        n -= k;
        if (w->len == sizeof(w->buf) && (rc = tw_flush(w, e)) < 0)
            return rc;
    }
    return 0;
}

/* Zero bytes up to the next block boundary after N bytes of data. */
static int
tw_pad(struct tw *w, uint64_t n, struct err *e)
{
    static const unsigned char zero[BLK];
    size_t r = (size_t)(n % BLK);

    return r ? tw_put(w, zero, BLK - r, e) : 0;
}

/* Octal field of SZ bytes (SZ-1 digits and a NUL). False when V does not fit. */
static bool
put_octal(char *f, size_t sz, uint64_t v)
{
    size_t i = sz - 1;

    f[i] = '\0';
    while (i > 0) {
        f[--i] = (char)('0' + (v & 7));
        v >>= 3;
    }
    return v == 0;
}

/* Append one pax record "LEN KEY=VALUE\n" (LEN counts itself). */
static void
pax_record(struct buf *b, const char *key, const char *val, size_t vlen)
{
    size_t base = strlen(key) + vlen + 3; /* ' ', '=', '\n' */
    size_t len = base + 1, digits = 1;

    /* The length includes its own digits: grow until stable. */
    for (;;) {
        size_t t = len;

        digits = 0;
        while (t) {
            digits++;
            t /= 10;
        }
        if (base + digits == len)
            break;
        len = base + digits;
    }
    buf_printf(b, "%zu %s=", len, key);
    buf_append(b, val, vlen);
    buf_putc(b, '\n');
}

static void
hdr_checksum(struct hdr *h)
{
    const unsigned char *p = (const unsigned char *)h;
    unsigned sum = 0;
    size_t i;

    memset(h->chksum, ' ', sizeof(h->chksum));
    for (i = 0; i < BLK; i++)
        sum += p[i];
    /* Six digits, NUL, space: the form every reader accepts. */
    put_octal(h->chksum, 7, sum);
    h->chksum[7] = ' ';
}

static void
hdr_fill(struct hdr *h, const char *name, size_t nlen, char type, mode_t mode, uint64_t uid,
         uint64_t gid, uint64_t size, uint64_t mtime, const char *link, size_t llen)
{
    memset(h, 0, sizeof(*h));
    memcpy(h->name, name, nlen < sizeof(h->name) ? nlen : sizeof(h->name));
    put_octal(h->mode, sizeof(h->mode), mode & 07777);
    if (!put_octal(h->uid, sizeof(h->uid), uid))
        put_octal(h->uid, sizeof(h->uid), 0);
    if (!put_octal(h->gid, sizeof(h->gid), gid))
        put_octal(h->gid, sizeof(h->gid), 0);
    if (!put_octal(h->size, sizeof(h->size), size))
        put_octal(h->size, sizeof(h->size), 0);
    if (!put_octal(h->mtime, sizeof(h->mtime), mtime))
        put_octal(h->mtime, sizeof(h->mtime), 0);
    h->typeflag = type;
    if (link)
        memcpy(h->linkname, link, llen < sizeof(h->linkname) ? llen : sizeof(h->linkname));
    memcpy(h->magic, "ustar", 6);
    memcpy(h->version, "00", 2);
}

/* Write the header(s) for one entry: a pax 'x' block first when the name,
 * link target, size or mtime does not fit the ustar fields. */
static int
tw_header(struct tw *w, const char *name, char type, const struct stat *sb, uint64_t size,
          const char *link, struct err *e)
{
    char q[200];
    size_t nlen = strlen(name), llen = link ? strlen(link) : 0;
    uint64_t mtime = sb->st_mtim.tv_sec > 0 ? (uint64_t)sb->st_mtim.tv_sec : 0;
    struct hdr h;
    int rc;

    if (nlen > TAR_NAME_MAX)
        return err_set(e, ENAMETOOLONG, "tar: entry '%s': name longer than %d bytes",
                       qname(name, nlen, q, sizeof(q)), TAR_NAME_MAX);
    if (w->o && w->o->max_entries && ++w->entries > w->o->max_entries)
        return err_set(e, E2BIG, "tar: entry '%s': more than %" PRIu32 " entries",
                       qname(name, nlen, q, sizeof(q)), w->o->max_entries);
    if (nlen > 100 || llen > 100 || size > 077777777777ULL || mtime > 077777777777ULL) {
        struct buf pax = BUF_INIT;
        char num[32];

        if (nlen > 100)
            pax_record(&pax, "path", name, nlen);
        if (llen > 100)
            pax_record(&pax, "linkpath", link, llen);
        if (size > 077777777777ULL) {
            snprintf(num, sizeof(num), "%" PRIu64, size);
            pax_record(&pax, "size", num, strlen(num));
        }
        if (mtime > 077777777777ULL) {
            snprintf(num, sizeof(num), "%" PRIu64, mtime);
            pax_record(&pax, "mtime", num, strlen(num));
        }
        hdr_fill(&h, "././@PaxHeader", 14, 'x', 0644, 0, 0, pax.len, 0, NULL, 0);
        hdr_checksum(&h);
        rc = tw_put(w, &h, sizeof(h), e);
        if (rc == 0)
            rc = tw_put(w, pax.data, pax.len, e);
        if (rc == 0)
            rc = tw_pad(w, pax.len, e);
        buf_fini(&pax);
        if (rc < 0)
            return rc;
    }
    hdr_fill(&h, name, nlen, type, sb->st_mode, sb->st_uid, sb->st_gid, size, mtime, link, llen);
    hdr_checksum(&h);
    return tw_put(w, &h, sizeof(h), e);
}

static int
tw_file(struct tw *w, int pdfd, const char *rel, const char *name, struct err *e)
{
    AUTOCLOSE int fd = -1;
    char q[200];
    struct stat sb;
    uint64_t left, total;
    int rc;

    fd = openat(pdfd, rel, O_RDONLY | O_NOFOLLOW | O_NOCTTY | O_CLOEXEC);
    if (fd < 0)
        return err_errno(e, "tar: entry '%s': open", qname(name, strlen(name), q, sizeof(q)));
    if (fstat(fd, &sb) < 0)
        return err_errno(e, "tar: entry '%s': fstat", qname(name, strlen(name), q, sizeof(q)));
    if (!S_ISREG(sb.st_mode))
        return err_set(e, EAGAIN, "tar: entry '%s': changed type while archived",
                       qname(name, strlen(name), q, sizeof(q)));
    total = (uint64_t)sb.st_size;
    if (w->o && w->o->max_total && w->st.bytes + total > w->o->max_total)
        return err_set(e, EFBIG, "tar: entry '%s': archive exceeds %" PRIu64 " bytes",
                       qname(name, strlen(name), q, sizeof(q)), w->o->max_total);
    if ((rc = tw_header(w, name, '0', &sb, total, NULL, e)) < 0)
        return rc;
    left = total;
    while (left) {
        size_t room = sizeof(w->buf) - w->len;
        ssize_t n;

        if (room == 0) {
            if ((rc = tw_flush(w, e)) < 0)
                return rc;
            continue;
        }
        if (room > left)
            room = (size_t)left;
        n = RETRY_EINTR(read(fd, w->buf + w->len, room));
        if (n < 0)
            return err_errno(e, "tar: entry '%s': read", qname(name, strlen(name), q, sizeof(q)));
        if (n == 0) {
            /* Shrank under us: keep the stream well formed, fail at the end. */
            memset(w->buf + w->len, 0, room);
            n = (ssize_t)room;
            w->shrank = true;
        }
        w->len += (size_t)n;
        left -= (uint64_t)n;
    }
    w->st.files++;
    w->st.bytes += total;
    return tw_pad(w, total, e);
}

static int tw_tree(struct tw *w, int pdfd, const char *rel, const char *name, int depth,
                   struct err *e);

static int
cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int
tw_dir(struct tw *w, int pdfd, const char *rel, const char *name, const struct stat *sb, int depth,
       struct err *e)
{
    char q[200];
    struct buf child = BUF_INIT, nm = BUF_INIT;
    char **names = NULL;
    size_t n = 0, cap = 0, i;
    DIR *d;
    struct dirent *de;
    int fd, rc = 0;

    if (depth > CREATE_DEPTH_MAX)
        return err_set(e, ELOOP, "tar: entry '%s': more than %d directory levels",
                       qname(name, strlen(name), q, sizeof(q)), CREATE_DEPTH_MAX);
    buf_puts(&nm, name);
    buf_putc(&nm, '/');
    if ((rc = tw_header(w, buf_cstr(&nm), '5', sb, 0, NULL, e)) < 0)
        goto out;
    w->st.dirs++;
    fd = openat(pdfd, rel, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        rc = err_errno(e, "tar: entry '%s': open directory",
                       qname(name, strlen(name), q, sizeof(q)));
        goto out;
    }
    if (!(d = fdopendir(fd))) {
        rc = err_errno(e, "tar: entry '%s': fdopendir", qname(name, strlen(name), q, sizeof(q)));
        close(fd);
        goto out;
    }
    errno = 0;
    while ((de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            names = xrealloc(names, cap * sizeof(*names));
        }
        names[n++] = xstrdup(de->d_name);
    }
    if (errno) {
        rc = err_errno(e, "tar: entry '%s': readdir", qname(name, strlen(name), q, sizeof(q)));
        goto close;
    }
    if (n)
        qsort(names, n, sizeof(*names), cmp_str);
    for (i = 0; i < n && rc == 0; i++) {
        buf_reset(&child);
        buf_puts(&child, name);
        buf_putc(&child, '/');
        buf_puts(&child, names[i]);
        rc = tw_tree(w, dirfd(d), names[i], buf_cstr(&child), depth + 1, e);
    }
close:
    closedir(d);
out:
    for (i = 0; i < n; i++)
        free(names[i]);
    free(names);
    buf_fini(&child);
    buf_fini(&nm);
    return rc;
}

/* Archive REL (relative to DIRFD) under NAME, whatever its type. */
static int
tw_tree(struct tw *w, int pdfd, const char *rel, const char *name, int depth, struct err *e)
{
    char q[200];
    struct stat sb;

    if (fstatat(pdfd, rel, &sb, AT_SYMLINK_NOFOLLOW) < 0)
        return err_errno(e, "tar: entry '%s': stat", qname(name, strlen(name), q, sizeof(q)));
    if (w->have_self && sb.st_dev == w->self_dev && sb.st_ino == w->self_ino) {
        w->st.skipped++;
        return 0;
    }
    if (S_ISREG(sb.st_mode))
        return tw_file(w, pdfd, rel, name, e);
    if (S_ISDIR(sb.st_mode))
        return tw_dir(w, pdfd, rel, name, &sb, depth, e);
    if (S_ISLNK(sb.st_mode)) {
        char target[TAR_NAME_MAX + 1];
        ssize_t n = readlinkat(pdfd, rel, target, sizeof(target));
        int rc;

        if (n < 0)
            return err_errno(e, "tar: entry '%s': readlink",
                             qname(name, strlen(name), q, sizeof(q)));
        if ((size_t)n >= sizeof(target))
            return err_set(e, ENAMETOOLONG, "tar: entry '%s': link target too long",
                           qname(name, strlen(name), q, sizeof(q)));
        target[n] = '\0';
        if ((rc = tw_header(w, name, '2', &sb, 0, target, e)) < 0)
            return rc;
        w->st.symlinks++;
        return 0;
    }
    w->st.skipped++;
    return 0;
}

int
tar_create(int out_fd, int dirfd, const char *path, const char *arcname, const struct tar_opts *o,
           struct err *e)
{
    static const unsigned char zero[2 * BLK];
    struct tw *w;
    struct stat sb;
    char *top = NULL;
    int rc;

    if (!path || !*path)
        return err_set(e, EINVAL, "tar: empty path");
    w = xcalloc(1, sizeof(*w));
    w->fd = out_fd;
    w->o = o;
    if (fstat(out_fd, &sb) == 0 && S_ISREG(sb.st_mode)) {
        w->have_self = true;
        w->self_dev = sb.st_dev;
        w->self_ino = sb.st_ino;
    }
    if (arcname) {
        top = xstrdup(arcname);
    } else {
        /* basename without trailing slashes; "/" and "" become "." */
        size_t len = strlen(path);
        const char *s;

        while (len > 1 && path[len - 1] == '/')
            len--;
        s = memrchr(path, '/', len);
        s = s ? s + 1 : path;
        top = xstrndup(s, len - (size_t)(s - path));
        if (!*top || !strcmp(top, "/") || !strcmp(top, "..")) {
            free(top);
            top = xstrdup(".");
        }
    }
    while (strlen(top) > 1 && top[strlen(top) - 1] == '/')
        top[strlen(top) - 1] = '\0';
    rc = tw_tree(w, dirfd, path, top, 0, e);
    if (rc == 0)
        rc = tw_put(w, zero, sizeof(zero), e);
    if (rc == 0)
        rc = tw_flush(w, e);
    if (rc == 0 && w->shrank)
        rc = err_set(e, EIO, "tar: '%s': a file shrank while it was archived", top);
    if (o && o->create_stats)
        *o->create_stats = w->st;
    free(top);
    free(w);
    return rc;
}

/* ------------------------------------------------------------------ reader */

struct deferred_dir {
    char *path;
    mode_t mode;
    int64_t mtime;
};

struct tr {
    int in;
    int dest;
    const struct tar_opts *o;
    struct tar_stats *st;
    uint64_t entries;
    uint64_t total;
    uint64_t seq; /* temporary-name counter */
    /* Pending from pax 'x' / GNU 'L' 'K' headers, applied to the next entry. */
    struct buf pax_path, pax_link, gnu_name, gnu_link, meta;
    bool have_pax_path, have_pax_link, have_gnu_name, have_gnu_link;
    bool have_pax_size, have_pax_mtime;
    uint64_t pax_size;
    int64_t pax_mtime;
    struct deferred_dir *dirs;
    size_t ndirs, capdirs;
    unsigned char io[IOBUF];
};

/* Read exactly one block; -EBADMSG on a short read (truncated archive).
 * Returns 1 on a clean end of file before any byte when EOF_OK. */
static int
tr_block(struct tr *r, void *blk, bool eof_ok, struct err *e)
{
    ssize_t n = read_full(r->in, blk, BLK);

    if (n < 0) {
        errno = (int)-n;
        return err_errno(e, "tar: reading archive");
    }
    if (n == 0 && eof_ok)
        return 1;
    if (n != BLK)
        return err_set(e, EBADMSG, "tar: truncated archive (short header block)");
    return 0;
}

/* Parse a numeric header field: octal (NUL/space padded) or GNU base-256. */
static int
parse_num(const char *f, size_t sz, uint64_t *out)
{
    const unsigned char *p = (const unsigned char *)f;
    uint64_t v = 0;
    size_t i = 0;

    if (p[0] & 0x80) {
        /* base-256: big-endian, first byte's top bit is the marker; 0xff is
         * negative, refused. */
        if (p[0] == 0xff)
            return -1;
        v = p[0] & 0x3f;
        if (p[0] & 0x40)
            return -1;
        for (i = 1; i < sz; i++) {
            if (v >> 56)
                return -1;
            v = (v << 8) | p[i];
        }
        *out = v;
        return 0;
    }
    while (i < sz && (p[i] == ' '))
        i++;
    for (; i < sz && p[i] >= '0' && p[i] <= '7'; i++) {
        if (v >> 61)
            return -1;
        v = (v << 3) | (uint64_t)(p[i] - '0');
    }
    for (; i < sz; i++)
        if (p[i] != ' ' && p[i] != '\0')
            return -1;
    *out = v;
    return 0;
}

static bool
checksum_ok(const struct hdr *h)
{
    const unsigned char *p = (const unsigned char *)h;
    const signed char *sp = (const signed char *)h;
    uint64_t want;
    long sum_u = 0, sum_s = 0;
    size_t i;

#ifdef TAR_FUZZING
    /* test/fuzz/fuzz_tar.c only: let mutated headers reach the code behind
     * the checksum. Never defined in the product build. */
    (void)want;
    return true;
#endif
    if (parse_num(h->chksum, sizeof(h->chksum), &want) < 0)
        return false;
    for (i = 0; i < BLK; i++) {
        bool in_ck = i >= offsetof(struct hdr, chksum) && i < offsetof(struct hdr, typeflag);

        sum_u += in_ck ? ' ' : p[i];
        sum_s += in_ck ? ' ' : sp[i];
    }
    return (uint64_t)sum_u == want || (sum_s >= 0 && (uint64_t)sum_s == want);
}

/* UTF-8 well-formedness (no overlongs, no surrogates, <= U+10FFFF). */
static bool
utf8_ok(const unsigned char *s, size_t n)
{
    size_t i = 0;

    while (i < n) {
        unsigned c = s[i];
        size_t k;
        unsigned cp;

        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xc2 && c <= 0xdf)
            k = 1, cp = c & 0x1f;
        else if (c >= 0xe0 && c <= 0xef)
            k = 2, cp = c & 0x0f;
        else if (c >= 0xf0 && c <= 0xf4)
            k = 3, cp = c & 0x07;
        else
            return false;
        if (i + k >= n)
            return false;
        for (size_t j = 1; j <= k; j++) {
            if ((s[i + j] & 0xc0) != 0x80)
                return false;
            cp = (cp << 6) | (s[i + j] & 0x3f);
        }
        if ((k == 2 && cp < 0x800) || (k == 3 && cp < 0x10000) || cp > 0x10ffff ||
            (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += k + 1;
    }
    return true;
}

/* Check the name and split it into components (in place, NUL separated).
 * Fills COMP[] with pointers; *NCOMP may be 0 (the destination itself). */
static int
split_name(char *name, size_t len, char **comp, size_t *ncomp, size_t maxcomp, const char *q,
           struct err *e)
{
    size_t i, n = 0;
    char *p, *s;

    if (len == 0)
        return err_set(e, EBADMSG, "tar: entry with an empty name");
    if (len > TAR_NAME_MAX)
        return err_set(e, ENAMETOOLONG, "tar: entry '%s': name longer than %d bytes", q,
                       TAR_NAME_MAX);
    if (memchr(name, '\0', len))
        return err_set(e, EBADMSG, "tar: entry '%s': NUL byte in name", q);
    for (i = 0; i < len; i++)
        if ((unsigned char)name[i] < 0x20 || name[i] == 0x7f)
            return err_set(e, EBADMSG, "tar: entry '%s': control character in name", q);
    if (!utf8_ok((const unsigned char *)name, len))
        return err_set(e, EBADMSG, "tar: entry '%s': name is not valid UTF-8", q);
    if (name[0] == '/')
        return err_set(e, EPERM, "tar: entry '%s': absolute name refused", q);
    name[len] = '\0';
    for (p = name; p;) {
        s = strchr(p, '/');
        if (s)
            *s = '\0';
        if (!strcmp(p, ".."))
            return err_set(e, EPERM, "tar: entry '%s': '..' component refused", q);
        if (strlen(p) > 255)
            return err_set(e, ENAMETOOLONG, "tar: entry '%s': component longer than 255 bytes", q);
        if (*p && strcmp(p, ".")) {
            if (n == maxcomp)
                return err_set(e, ENAMETOOLONG, "tar: entry '%s': too many components", q);
            comp[n++] = p;
        }
        p = s ? s + 1 : NULL;
    }
    *ncomp = n;
    return 0;
}

/* Open the directory holding the last component, creating missing parents
 * (0755 filtered by the umask). Never follows a symlink: each level is opened
 * with O_NOFOLLOW|O_DIRECTORY relative to the one before. Returns an fd. */
static int
open_parent(struct tr *r, char **comp, size_t ncomp, const char *q, struct err *e)
{
    int fd = dup(r->dest), nfd;
    size_t i;

    if (fd < 0)
        return err_errno(e, "tar: entry '%s': dup", q);
    for (i = 0; i + 1 < ncomp; i++) {
        nfd = openat(fd, comp[i], O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (nfd < 0 && errno == ENOENT) {
            if (mkdirat(fd, comp[i], 0755) < 0 && errno != EEXIST) {
                int rc = err_errno(e, "tar: entry '%s': mkdir '%s'", q, comp[i]);
                close(fd);
                return rc;
            }
            nfd = openat(fd, comp[i], O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        }
        if (nfd < 0) {
            int rc;

            if (errno == ENOTDIR || errno == ELOOP)
                rc = err_set(e, EPERM,
                             "tar: entry '%s': '%s' is a symlink or not a directory; refused", q,
                             comp[i]);
            else
                rc = err_errno(e, "tar: entry '%s': open '%s'", q, comp[i]);
            close(fd);
            return rc;
        }
        close(fd);
        fd = nfd;
    }
    return fd;
}

/* Skip exactly N bytes of the archive. */
static int
tr_skip_raw(struct tr *r, uint64_t left, struct err *e)
{
    while (left) {
        size_t k = left > sizeof(r->io) ? sizeof(r->io) : (size_t)left;
        ssize_t got = read_full(r->in, r->io, k);

        if (got < 0) {
            errno = (int)-got;
            return err_errno(e, "tar: reading archive");
        }
        if ((size_t)got != k)
            return err_set(e, EBADMSG, "tar: truncated archive (short data)");
        left -= k;
    }
    return 0;
}

/* Skip an entry's N bytes of data plus the padding to the next block. */
static int
tr_skip(struct tr *r, uint64_t n, struct err *e)
{
    if (n > UINT64_MAX - BLK)
        return err_set(e, EBADMSG, "tar: truncated archive (short data)");
    return tr_skip_raw(r, (n + BLK - 1) / BLK * BLK, e);
}

/* Read an entry's data (SIZE bytes, then padding) into OUT. */
static int
tr_read_meta(struct tr *r, uint64_t size, struct buf *out, struct err *e)
{
    uint64_t padded = (size + BLK - 1) / BLK * BLK;
    ssize_t got;

    buf_reset(out);
    buf_reserve(out, (size_t)padded + 1);
    got = read_full(r->in, out->data, (size_t)padded);
    if (got < 0) {
        errno = (int)-got;
        return err_errno(e, "tar: reading archive");
    }
    if ((uint64_t)got != padded)
        return err_set(e, EBADMSG, "tar: truncated archive (short extended header)");
    out->len = (size_t)size;
    out->data[size] = '\0';
    return 0;
}

static int
parse_u64_dec(const char *s, size_t n, uint64_t *out)
{
    uint64_t v = 0;
    size_t i;

    if (n == 0)
        return -1;
    for (i = 0; i < n; i++) {
        uint64_t d = (uint64_t)(s[i] - '0');

        if (s[i] < '0' || s[i] > '9' || v > (UINT64_MAX - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

/* Parse pax records into R's pending fields (GLOBAL: validated, ignored). */
static int
parse_pax(struct tr *r, const struct buf *b, bool global, struct err *e)
{
    const char *p = b->data, *end = b->data + b->len;

    while (p < end) {
        const char *sp, *eq, *rec_end, *key, *val;
        uint64_t len;
        size_t klen, vlen;

        sp = memchr(p, ' ', (size_t)(end - p));
        if (!sp || parse_u64_dec(p, (size_t)(sp - p), &len) < 0 || len > (uint64_t)(end - p) ||
            len < (uint64_t)(sp - p) + 3)
            return err_set(e, EBADMSG, "tar: malformed pax extended header");
        rec_end = p + len;
        if (rec_end[-1] != '\n')
            return err_set(e, EBADMSG, "tar: malformed pax record (no newline)");
        key = sp + 1;
        eq = memchr(key, '=', (size_t)(rec_end - key));
        if (!eq)
            return err_set(e, EBADMSG, "tar: malformed pax record (no '=')");
        klen = (size_t)(eq - key);
        val = eq + 1;
        vlen = (size_t)(rec_end - 1 - val);
        p = rec_end;
        if (klen >= 10 && !memcmp(key, "GNU.sparse", 10))
            return err_set(e, EPERM, "tar: sparse files are not supported");
        if (global)
            continue;
        if (klen == 4 && !memcmp(key, "path", 4)) {
            buf_reset(&r->pax_path);
            buf_append(&r->pax_path, val, vlen);
            r->have_pax_path = true;
        } else if (klen == 8 && !memcmp(key, "linkpath", 8)) {
            buf_reset(&r->pax_link);
            buf_append(&r->pax_link, val, vlen);
            r->have_pax_link = true;
        } else if (klen == 4 && !memcmp(key, "size", 4)) {
            if (parse_u64_dec(val, vlen, &r->pax_size) < 0)
                return err_set(e, EBADMSG, "tar: bad pax size");
            r->have_pax_size = true;
        } else if (klen == 5 && !memcmp(key, "mtime", 5)) {
            const char *dot = memchr(val, '.', vlen);
            uint64_t t;

            /* Seconds only; a negative or fractional part is tolerated, the
             * fraction dropped, a negative time clamped to 0. */
            if (vlen && val[0] == '-') {
                r->pax_mtime = 0;
            } else if (parse_u64_dec(val, dot ? (size_t)(dot - val) : vlen, &t) < 0 ||
                       t > INT64_MAX) {
                return err_set(e, EBADMSG, "tar: bad pax mtime");
            } else {
                r->pax_mtime = (int64_t)t;
            }
            r->have_pax_mtime = true;
        }
    }
    return 0;
}

static void
tr_clear_pending(struct tr *r)
{
    r->have_pax_path = r->have_pax_link = r->have_gnu_name = r->have_gnu_link = false;
    r->have_pax_size = r->have_pax_mtime = false;
}

/* Create a fresh temporary name in DIRFD for the entry; fills TMP. */
static void
tmp_name(struct tr *r, char *tmp, size_t sz)
{
    snprintf(tmp, sz, ".tar-%ld-%" PRIu64 ".tmp", (long)getpid(), r->seq++);
}

static void
set_mtime_fd(int fd, int64_t mtime)
{
    struct timespec ts[2] = { { 0, UTIME_OMIT }, { (time_t)mtime, 0 } };

    (void)futimens(fd, ts);
}

static int
extract_file(struct tr *r, int pfd, const char *leaf, uint64_t size, mode_t mode, int64_t mtime,
             const char *q, struct err *e)
{
    char tmp[64];
    uint64_t left = size;
    int fd = -1, rc = 0, tries;

    for (tries = 0; tries < 100; tries++) {
        tmp_name(r, tmp, sizeof(tmp));
        fd = openat(pfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                    r->o && r->o->keep_mode ? 0600 : (mode & 0777));
        if (fd >= 0 || errno != EEXIST)
            break;
    }
    if (fd < 0)
        return err_errno(e, "tar: entry '%s': create", q);
    while (left) {
        size_t k = left > sizeof(r->io) ? sizeof(r->io) : (size_t)left;
        ssize_t got = read_full(r->in, r->io, k);

        if (got < 0) {
            errno = (int)-got;
            rc = err_errno(e, "tar: entry '%s': reading archive", q);
            goto fail;
        }
        if ((size_t)got != k) {
            rc = err_set(e, EBADMSG, "tar: entry '%s': truncated archive (short data)", q);
            goto fail;
        }
        if ((rc = write_full(fd, r->io, k)) < 0) {
            errno = -rc;
            rc = err_errno(e, "tar: entry '%s': write", q);
            goto fail;
        }
        left -= k;
    }
    if ((rc = tr_skip_raw(r, (BLK - size % BLK) % BLK, e)) < 0)
        goto fail;
    if (r->o && r->o->keep_mode && fchmod(fd, mode & 01777) < 0) {
        rc = err_errno(e, "tar: entry '%s': chmod", q);
        goto fail;
    }
    set_mtime_fd(fd, mtime);
    if (close(fd) < 0) {
        fd = -1;
        rc = err_errno(e, "tar: entry '%s': close", q);
        goto fail;
    }
    fd = -1;
    /* rename(2) replaces LEAF itself, also when it is a symlink: never
     * writes through it. A directory there makes it fail (EISDIR). */
    if (renameat(pfd, tmp, pfd, leaf) < 0) {
        rc = err_errno(e, "tar: entry '%s': rename into place", q);
        goto fail;
    }
    r->st->files++;
    r->st->bytes += size;
    return 0;
fail:
    if (fd >= 0)
        close(fd);
    unlinkat(pfd, tmp, 0);
    return rc;
}

static int
extract_symlink(struct tr *r, int pfd, const char *leaf, const char *target, const char *q,
                struct err *e)
{
    char tmp[64];
    int tries;

    for (tries = 0; tries < 100; tries++) {
        tmp_name(r, tmp, sizeof(tmp));
        if (symlinkat(target, pfd, tmp) == 0)
            break;
        if (errno != EEXIST)
            return err_errno(e, "tar: entry '%s': symlink", q);
    }
    if (tries == 100)
        return err_set(e, EEXIST, "tar: entry '%s': no free temporary name", q);
    if (renameat(pfd, tmp, pfd, leaf) < 0) {
        int rc = err_errno(e, "tar: entry '%s': rename into place", q);

        unlinkat(pfd, tmp, 0);
        return rc;
    }
    r->st->symlinks++;
    return 0;
}

static int
extract_dir(struct tr *r, int pfd, const char *leaf, const char *fullpath, mode_t mode,
            int64_t mtime, const char *q, struct err *e)
{
    struct stat sb;
    struct deferred_dir *d;

    /* Created owner-writable so the entries that follow can go in; the
     * archived mode and time are applied at the end (deepest first). */
    if (mkdirat(pfd, leaf, 0700 | (mode & 0777)) < 0) {
        if (errno != EEXIST)
            return err_errno(e, "tar: entry '%s': mkdir", q);
        if (fstatat(pfd, leaf, &sb, AT_SYMLINK_NOFOLLOW) < 0)
            return err_errno(e, "tar: entry '%s': stat", q);
        if (!S_ISDIR(sb.st_mode))
            return err_set(e, EEXIST, "tar: entry '%s': exists and is not a directory", q);
    }
    if (r->ndirs == r->capdirs) {
        r->capdirs = r->capdirs ? r->capdirs * 2 : 16;
        r->dirs = xrealloc(r->dirs, r->capdirs * sizeof(*r->dirs));
    }
    d = &r->dirs[r->ndirs++];
    d->path = xstrdup(fullpath);
    d->mode = mode;
    d->mtime = mtime;
    r->st->dirs++;
    return 0;
}

/* Apply the deferred directory modes and times, last first (children before
 * parents), resolving each path again without following symlinks. */
static void
apply_dirs(struct tr *r)
{
    char *comp[TAR_NAME_MAX / 2 + 1];
    size_t i, ncomp;

    for (i = r->ndirs; i-- > 0;) {
        struct deferred_dir *d = &r->dirs[i];
        size_t len = strlen(d->path);
        char *copy = xstrndup(d->path, len);
        int pfd, fd;

        if (split_name(copy, len, comp, &ncomp, sizeof(comp) / sizeof(comp[0]), "", NULL) < 0 ||
            ncomp == 0 || (pfd = open_parent(r, comp, ncomp, "", NULL)) < 0) {
            free(copy);
            continue;
        }
        fd = openat(pfd, comp[ncomp - 1], O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd >= 0) {
            if (r->o && r->o->keep_mode)
                (void)fchmod(fd, d->mode & 01777);
            set_mtime_fd(fd, d->mtime);
            close(fd);
        }
        close(pfd);
        free(copy);
    }
}

/* Handle one real entry (after its pax/GNU prefixes). */
static int
tr_entry(struct tr *r, const struct hdr *h, bool ustar, uint64_t size, struct err *e)
{
    char *comp[TAR_NAME_MAX / 2 + 1];
    char q[200];
    struct buf name = BUF_INIT, link = BUF_INIT;
    uint64_t mode64 = 0, mtime64 = 0;
    int64_t mtime;
    size_t ncomp = 0;
    char type = h->typeflag;
    int pfd = -1, rc = 0;

    /* The name: pax path, else GNU long name, else prefix/name (POSIX ustar
     * only: GNU's old format keeps times where the prefix would be). */
    if (r->have_pax_path) {
        buf_append(&name, r->pax_path.data, r->pax_path.len);
    } else if (r->have_gnu_name) {
        buf_append(&name, r->gnu_name.data, strnlen(r->gnu_name.data, r->gnu_name.len));
    } else {
        if (ustar && h->prefix[0]) {
            buf_append(&name, h->prefix, strnlen(h->prefix, sizeof(h->prefix)));
            buf_putc(&name, '/');
        }
        buf_append(&name, h->name, strnlen(h->name, sizeof(h->name)));
    }
    if (r->have_pax_link)
        buf_append(&link, r->pax_link.data, r->pax_link.len);
    else if (r->have_gnu_link)
        buf_append(&link, r->gnu_link.data, strnlen(r->gnu_link.data, r->gnu_link.len));
    else
        buf_append(&link, h->linkname, strnlen(h->linkname, sizeof(h->linkname)));
    qname(buf_cstr(&name), name.len, q, sizeof(q));

    if (parse_num(h->mode, sizeof(h->mode), &mode64) < 0 ||
        parse_num(h->mtime, sizeof(h->mtime), &mtime64) < 0) {
        rc = err_set(e, EBADMSG, "tar: entry '%s': bad mode or mtime field", q);
        goto out;
    }
    mtime = r->have_pax_mtime ? r->pax_mtime : (mtime64 > INT64_MAX ? 0 : (int64_t)mtime64);

    if (r->o && r->o->max_entries && ++r->entries > r->o->max_entries) {
        rc = err_set(e, E2BIG, "tar: entry '%s': more than %" PRIu32 " entries", q,
                     r->o->max_entries);
        goto out;
    }
    switch (type) {
    case '0':
    case '\0':
    case '7':
    case '5':
    case '2': break;
    case '1': rc = err_set(e, EPERM, "tar: entry '%s': hard links are refused", q); goto out;
    case '3':
    case '4': rc = err_set(e, EPERM, "tar: entry '%s': device nodes are refused", q); goto out;
    case '6': rc = err_set(e, EPERM, "tar: entry '%s': fifos are refused", q); goto out;
    default:
        rc = err_set(e, EPERM, "tar: entry '%s': unsupported entry type '%c'", q,
                     (type >= 0x20 && type < 0x7f) ? type : '?');
        goto out;
    }
    if ((rc = split_name(name.data, name.len, comp, &ncomp, sizeof(comp) / sizeof(comp[0]), q, e)) <
        0)
        goto out;
    if (ncomp == 0) {
        /* "." or "./": the destination itself. Nothing to create. */
        if (type != '5') {
            rc = err_set(e, EBADMSG, "tar: entry '%s': names no file", q);
            goto out;
        }
        rc = tr_skip(r, size, e);
        goto out;
    }
    if ((type == '0' || type == '\0' || type == '7') && r->o && r->o->max_total &&
        (size > r->o->max_total || r->total + size > r->o->max_total)) {
        rc = err_set(e, EFBIG, "tar: entry '%s': archive exceeds %" PRIu64 " bytes", q,
                     r->o->max_total);
        goto out;
    }
    if (type == '2') {
        if (link.len == 0 || link.len > TAR_NAME_MAX || memchr(link.data, '\0', link.len)) {
            rc = err_set(e, EBADMSG, "tar: entry '%s': bad symlink target", q);
            goto out;
        }
    }
    if ((pfd = open_parent(r, comp, ncomp, q, e)) < 0) {
        rc = pfd;
        goto out;
    }
    if (type == '5') {
        /* split_name wrote NULs into NAME: rebuild the path for later. */
        struct buf full = BUF_INIT;
        size_t i;

        for (i = 0; i < ncomp; i++) {
            if (i)
                buf_putc(&full, '/');
            buf_puts(&full, comp[i]);
        }
        rc = extract_dir(r, pfd, comp[ncomp - 1], buf_cstr(&full), (mode_t)(mode64 & 07777), mtime,
                         q, e);
        buf_fini(&full);
        if (rc == 0)
            rc = tr_skip(r, size, e);
    } else if (type == '2') {
        rc = extract_symlink(r, pfd, comp[ncomp - 1], buf_cstr(&link), q, e);
        if (rc == 0)
            rc = tr_skip(r, size, e);
    } else {
        r->total += size;
        rc = extract_file(r, pfd, comp[ncomp - 1], size, (mode_t)(mode64 & 07777), mtime, q, e);
    }
out:
    if (pfd >= 0)
        close(pfd);
    buf_fini(&name);
    buf_fini(&link);
    return rc;
}

/* After the end-of-archive block: read (and drop) trailing padding so the
 * writer does not get EPIPE; bounded. */
static void
tr_drain(struct tr *r)
{
    size_t drained = 0;

    while (drained < DRAIN_MAX) {
        ssize_t n = RETRY_EINTR(read(r->in, r->io, sizeof(r->io)));

        if (n <= 0)
            break;
        drained += (size_t)n;
    }
}

int
tar_extract(int in_fd, int dest_dirfd, const struct tar_opts *o, struct tar_stats *st,
            struct err *e)
{
    struct tar_stats local = { 0 };
    struct tr *r = xcalloc(1, sizeof(*r));
    struct hdr h;
    int rc = 0;
    size_t i;

    r->in = in_fd;
    r->dest = dest_dirfd;
    r->o = o;
    r->st = st ? st : &local;
    memset(r->st, 0, sizeof(*r->st));
    buf_init(&r->pax_path);
    buf_init(&r->pax_link);
    buf_init(&r->gnu_name);
    buf_init(&r->gnu_link);
    buf_init(&r->meta);

    for (;;) {
        uint64_t size;
        bool ustar;
        static const char zero[BLK];

        rc = tr_block(r, &h, true, e);
        if (rc == 1) {
            rc = err_set(e, EBADMSG, "tar: truncated archive (no end-of-archive block)");
            break;
        }
        if (rc < 0)
            break;
        if (!memcmp(&h, zero, BLK)) {
            if (r->have_pax_path || r->have_gnu_name || r->have_pax_size || r->have_gnu_link ||
                r->have_pax_link) {
                rc = err_set(e, EBADMSG, "tar: extended header with no entry after it");
                break;
            }
            tr_drain(r);
            break;
        }
        if (!checksum_ok(&h)) {
            char q[200];

            rc = err_set(e, EBADMSG, "tar: entry '%s': header checksum mismatch",
                         qname(h.name, strnlen(h.name, sizeof(h.name)), q, sizeof(q)));
            break;
        }
        /* POSIX "ustar\0"; GNU's "ustar " keeps no prefix field. */
        ustar = !memcmp(h.magic, "ustar", 6);
        if (parse_num(h.size, sizeof(h.size), &size) < 0) {
            char q[200];

            rc = err_set(e, EBADMSG, "tar: entry '%s': bad size field",
                         qname(h.name, strnlen(h.name, sizeof(h.name)), q, sizeof(q)));
            break;
        }
        if (h.typeflag == 'x' || h.typeflag == 'g') {
            if (size > PAX_MAX) {
                rc = err_set(e, EFBIG, "tar: pax extended header larger than %d bytes", PAX_MAX);
                break;
            }
            if ((rc = tr_read_meta(r, size, &r->meta, e)) < 0)
                break;
            if ((rc = parse_pax(r, &r->meta, h.typeflag == 'g', e)) < 0)
                break;
            continue;
        }
        if (h.typeflag == 'L' || h.typeflag == 'K') {
            struct buf *dst = h.typeflag == 'L' ? &r->gnu_name : &r->gnu_link;

            if (size > LONGNAME_MAX) {
                rc = err_set(e, ENAMETOOLONG, "tar: GNU long name longer than %d bytes",
                             TAR_NAME_MAX);
                break;
            }
            if ((rc = tr_read_meta(r, size, dst, e)) < 0)
                break;
            if (h.typeflag == 'L')
                r->have_gnu_name = true;
            else
                r->have_gnu_link = true;
            continue;
        }
        if (r->have_pax_size)
            size = r->pax_size;
        rc = tr_entry(r, &h, ustar, size, e);
        tr_clear_pending(r);
        if (rc < 0)
            break;
    }
    apply_dirs(r);
    for (i = 0; i < r->ndirs; i++)
        free(r->dirs[i].path);
    free(r->dirs);
    buf_fini(&r->pax_path);
    buf_fini(&r->pax_link);
    buf_fini(&r->gnu_name);
    buf_fini(&r->gnu_link);
    buf_fini(&r->meta);
    free(r);
    return rc;
}
