/* Unit tests for src/tar.c: round trips, GNU tar interop both ways, and every
 * attack the extractor must refuse (absolute names, "..", symlink traversal,
 * links, devices, truncation, checksums, size overflow and limits). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tap.h"
#include "tar.h"
#include "xfuncs.h"

static char root[64];

/* A fresh empty directory under the test's temporary root. */
static const char *
fresh_dir(const char *tag)
{
    static int n;
    static char dir[4][256];
    static int slot;
    char *d;

    if (!root[0]) {
        snprintf(root, sizeof(root), "/tmp/test_tar.XXXXXX");
        if (!mkdtemp(root))
            abort();
    }
    d = dir[slot++ % 4];
    snprintf(d, sizeof(dir[0]), "%s/%s%d", root, tag, n++);
    if (mkdir(d, 0755) < 0)
        abort();
    return d;
}

static void
put_file(const char *dir, const char *rel, const char *data, size_t len, mode_t mode)
{
    char path[8192];
    int fd;

    snprintf(path, sizeof(path), "%s/%s", dir, rel);
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
    if (fd < 0 || write_full(fd, data, len) < 0)
        abort();
    fchmod(fd, mode);
    close(fd);
}

static void sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void
sh(const char *fmt, ...)
{
    char cmd[4096];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    if (system(cmd) != 0)
        tap_diag("command failed: %s", cmd);
}

static uint64_t
fnv(const unsigned char *p, size_t n, uint64_t h)
{
    size_t i;

    for (i = 0; i < n; i++)
        h = (h ^ p[i]) * 1099511628211ULL;
    return h;
}

/* Describe the tree under DIR/REL (sorted), one line per entry: name, type,
 * mode, size, content hash or link target. */
static void
describe(const char *dir, const char *rel, struct buf *out, bool modes)
{
    char path[8192];
    struct dirent **list;
    int n, i;

    snprintf(path, sizeof(path), "%s%s%s", dir, *rel ? "/" : "", rel);
    n = scandir(path, &list, NULL, alphasort);
    if (n < 0)
        return;
    for (i = 0; i < n; i++) {
        char child[16384], crel[8192];
        struct stat sb;

        if (!strcmp(list[i]->d_name, ".") || !strcmp(list[i]->d_name, "..")) {
            free(list[i]);
            continue;
        }
        snprintf(crel, sizeof(crel), "%s%s%s", rel, *rel ? "/" : "", list[i]->d_name);
        snprintf(child, sizeof(child), "%s/%s", dir, crel);
        free(list[i]);
        if (lstat(child, &sb) < 0)
            continue;
        buf_printf(out, "%s ", crel);
        if (S_ISLNK(sb.st_mode)) {
            char t[8192];
            ssize_t k = readlink(child, t, sizeof(t) - 1);

            t[k < 0 ? 0 : k] = '\0';
            buf_printf(out, "l -> %s\n", t);
        } else if (S_ISDIR(sb.st_mode)) {
            buf_printf(out, "d %o\n", modes ? (unsigned)(sb.st_mode & 07777) : 0);
            describe(dir, crel, out, modes);
        } else if (S_ISREG(sb.st_mode)) {
            struct buf data = BUF_INIT;
            int fd = open(child, O_RDONLY);

            if (fd >= 0) {
                read_fd_all(fd, &data, SIZE_MAX);
                close(fd);
            }
            buf_printf(out, "f %o %zu %016llx\n", modes ? (unsigned)(sb.st_mode & 07777) : 0,
                       data.len,
                       (unsigned long long)fnv((unsigned char *)data.data, data.len,
                                               1469598103934665603ULL));
            buf_fini(&data);
        } else {
            buf_printf(out, "other\n");
        }
    }
    free(list);
}

/* A source tree covering the round-trip cases. */
static void
make_tree(const char *src)
{
    char longdir[512], longname[512], path[4096];
    char *big;
    size_t i;

    sh("mkdir -p %s/t/sub/deeper %s/t/emptydir", src, src);
    put_file(src, "t/hello.txt", "hello\n", 6, 0644);
    put_file(src, "t/empty", "", 0, 0600);
    put_file(src, "t/run.sh", "#!/bin/sh\necho hi\n", 18, 0755);
    put_file(src, "t/sub/deeper/x", "x", 1, 0640);
    /* Names past the 100-byte ustar field: a long component, a long path. */
    memset(longname, 'n', 180);
    longname[180] = '\0';
    snprintf(path, sizeof(path), "t/sub/%s", longname);
    put_file(src, path, "long name\n", 10, 0644);
    memset(longdir, 'd', 120);
    longdir[120] = '\0';
    snprintf(path, sizeof(path), "%s/t/%s/%s", src, longdir, longdir);
    sh("mkdir -p %s", path);
    snprintf(path, sizeof(path), "t/%s/%s/f", longdir, longdir);
    put_file(src, path, "deep\n", 5, 0644);
    /* A multi-MiB file with varied content. */
    big = xmalloc(3 * 1024 * 1024 + 17);
    for (i = 0; i < 3 * 1024 * 1024 + 17; i++)
        big[i] = (char)(i * 131 + (i >> 9));
    put_file(src, "t/big.bin", big, 3 * 1024 * 1024 + 17, 0644);
    free(big);
    /* Symlinks: relative, absolute (kept as links, never followed), dangling,
     * and one with a target past 100 bytes. */
    sh("ln -s hello.txt %s/t/link-rel", src);
    sh("ln -s /etc/passwd %s/t/link-abs", src);
    sh("ln -s does/not/exist %s/t/link-dangling", src);
    snprintf(path, sizeof(path), "%s/t/link-long", src);
    if (symlink(longname, path) < 0)
        abort();
    sh("chmod 0750 %s/t/sub", src);
}

static int
test_round_trip(void)
{
    const char *src = fresh_dir("src"), *dst = fresh_dir("dst");
    struct tar_stats cst = { 0 }, xst = { 0 };
    struct tar_opts o = { .keep_mode = true, .create_stats = &cst };
    struct buf a = BUF_INIT, b = BUF_INIT;
    char arch[300];
    struct err e;
    int fd, dfd;

    make_tree(src);
    snprintf(arch, sizeof(arch), "%s/../rt.tar", src);
    fd = open(arch, O_RDWR | O_CREAT | O_TRUNC, 0600);
    CHECK(fd >= 0);
    dfd = open(src, O_RDONLY | O_DIRECTORY);
    CHECK_INT(tar_create(fd, dfd, "t", NULL, &o, &e), 0);
    close(dfd);
    CHECK_INT(cst.files, 7);
    CHECK_INT(cst.symlinks, 4);
    CHECK_INT(cst.dirs, 6);
    CHECK_INT(cst.bytes, 6 + 18 + 1 + 10 + 5 + 3 * 1024 * 1024 + 17);
    CHECK(lseek(fd, 0, SEEK_SET) == 0);
    dfd = open(dst, O_RDONLY | O_DIRECTORY);
    CHECK(dfd >= 0);
    if (tar_extract(fd, dfd, &o, &xst, &e) != 0) {
        tap_diag("extract: %s", e.msg);
        return TAP_FAIL;
    }
    close(dfd);
    close(fd);
    CHECK_INT(xst.files, 7);
    CHECK_INT(xst.symlinks, 4);
    CHECK_INT(xst.dirs, 6);
    CHECK_INT(xst.bytes, cst.bytes);
    describe(src, "", &a, true);
    describe(dst, "", &b, true);
    if (strcmp(buf_cstr(&a), buf_cstr(&b))) {
        tap_diag("trees differ:\n%s\n---\n%s", buf_cstr(&a), buf_cstr(&b));
        return TAP_FAIL;
    }
    CHECK(strstr(buf_cstr(&a), "t/run.sh f 755 18"));
    CHECK(strstr(buf_cstr(&a), "t/sub d 750"));
    buf_fini(&a);
    buf_fini(&b);
    return TAP_PASS;
}

/* Create a tar of DIR/REL with our writer into a file; returns its path. */
static const char *
our_tar(const char *dir, const char *rel, const char *arcname)
{
    static char arch[300];
    struct err e;
    int fd, dfd;

    snprintf(arch, sizeof(arch), "%s.ours.tar", dir);
    fd = open(arch, O_RDWR | O_CREAT | O_TRUNC, 0600);
    dfd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd < 0 || dfd < 0 || tar_create(fd, dfd, rel, arcname, NULL, &e) != 0) {
        tap_diag("our_tar: %s", e.msg);
        abort();
    }
    close(fd);
    close(dfd);
    return arch;
}

static int
extract_file_into(const char *arch, const char *dst, const struct tar_opts *o, struct err *e)
{
    int fd = open(arch, O_RDONLY), dfd = open(dst, O_RDONLY | O_DIRECTORY), rc;

    if (fd < 0 || dfd < 0)
        abort();
    rc = tar_extract(fd, dfd, o, NULL, e);
    close(fd);
    close(dfd);
    return rc;
}

static int
test_gnu_tar_reads_ours(void)
{
    const char *src = fresh_dir("src"), *dst = fresh_dir("dst");
    struct buf a = BUF_INIT, b = BUF_INIT;
    char cmd[1024];

    if (access("/bin/tar", X_OK) != 0)
        TAP_SKIP_BECAUSE("no /bin/tar");
    make_tree(src);
    snprintf(cmd, sizeof(cmd), "/bin/tar -xpf %s -C %s", our_tar(src, "t", NULL), dst);
    CHECK_INT(system(cmd), 0);
    describe(src, "", &a, true);
    describe(dst, "", &b, true);
    if (strcmp(buf_cstr(&a), buf_cstr(&b))) {
        tap_diag("trees differ:\n%s\n---\n%s", buf_cstr(&a), buf_cstr(&b));
        return TAP_FAIL;
    }
    /* The single top entry is the basename, or the ARCNAME given. */
    snprintf(cmd, sizeof(cmd), "/bin/tar -tf %s | grep -v '^renamed/' | grep -q .",
             our_tar(src, "t", "renamed"));
    CHECK(system(cmd) != 0);
    buf_fini(&a);
    buf_fini(&b);
    return TAP_PASS;
}

static int
gnu_format(const char *format)
{
    const char *src = fresh_dir("src"), *dst = fresh_dir("dst");
    struct tar_opts o = { .keep_mode = true };
    struct buf a = BUF_INIT, b = BUF_INIT;
    char arch[300];
    struct err e;

    if (access("/bin/tar", X_OK) != 0)
        TAP_SKIP_BECAUSE("no /bin/tar");
    make_tree(src);
    snprintf(arch, sizeof(arch), "%s.gnu.tar", src);
    sh("/bin/tar --format=%s -cf %s -C %s t", format, arch, src);
    if (extract_file_into(arch, dst, &o, &e) != 0) {
        tap_diag("extract %s archive: %s", format, e.msg);
        return TAP_FAIL;
    }
    describe(src, "", &a, true);
    describe(dst, "", &b, true);
    if (strcmp(buf_cstr(&a), buf_cstr(&b))) {
        tap_diag("trees differ:\n%s\n---\n%s", buf_cstr(&a), buf_cstr(&b));
        return TAP_FAIL;
    }
    buf_fini(&a);
    buf_fini(&b);
    return TAP_PASS;
}

static int
test_we_read_gnu_pax(void)
{
    return gnu_format("pax");
}

static int
test_we_read_gnu_gnu(void)
{
    return gnu_format("gnu");
}

static int
test_we_read_gnu_oldgnu(void)
{
    return gnu_format("oldgnu");
}

static int
test_single_file_and_dot(void)
{
    const char *src = fresh_dir("src"), *dst = fresh_dir("dst");
    struct buf b = BUF_INIT;
    struct err e;

    put_file(src, "only.txt", "one\n", 4, 0644);
    CHECK_INT(extract_file_into(our_tar(src, "only.txt", NULL), dst, NULL, &e), 0);
    describe(dst, "", &b, false);
    CHECK(!strncmp(buf_cstr(&b), "only.txt f 0 4 ", 15));
    buf_reset(&b);
    /* "." as PATH: entries "./..." extract into the destination itself. */
    dst = fresh_dir("dst");
    CHECK_INT(extract_file_into(our_tar(src, ".", NULL), dst, NULL, &e), 0);
    describe(dst, "", &b, false);
    CHECK(strstr(buf_cstr(&b), "only.txt f 0 4"));
    buf_fini(&b);
    return TAP_PASS;
}

/* ------------------------------------------------------------ hand-made archives */

struct mk {
    struct buf b;
};

static void
mk_octal(char *f, size_t sz, uint64_t v)
{
    size_t i = sz - 1;

    f[i] = '\0';
    while (i > 0) {
        f[--i] = (char)('0' + (v & 7));
        v >>= 3;
    }
}

/* Append a header block. SIZE_FIELD, when non-NULL, is written raw. */
static void
mk_hdr(struct mk *m, const char *name, char type, uint64_t size, const char *link,
       const char *size_field, bool bad_sum)
{
    unsigned char h[512];
    unsigned sum = 0;
    size_t i;

    memset(h, 0, sizeof(h));
    memcpy(h, name, strnlen(name, 100));
    mk_octal((char *)h + 100, 8, 0644);
    mk_octal((char *)h + 108, 8, 0);
    mk_octal((char *)h + 116, 8, 0);
    if (size_field)
        memcpy(h + 124, size_field, 12);
    else
        mk_octal((char *)h + 124, 12, size);
    mk_octal((char *)h + 136, 12, 1700000000);
    h[156] = (unsigned char)type;
    if (link)
        memcpy(h + 157, link, strnlen(link, 100));
    memcpy(h + 257, "ustar", 6);
    memcpy(h + 263, "00", 2);
    memset(h + 148, ' ', 8);
    for (i = 0; i < 512; i++)
        sum += h[i];
    if (bad_sum)
        sum += 1;
    mk_octal((char *)h + 148, 7, sum);
    h[155] = ' ';
    buf_append(&m->b, h, sizeof(h));
}

static void
mk_data(struct mk *m, const void *p, size_t n)
{
    static const char zero[512];

    buf_append(&m->b, p, n);
    if (n % 512)
        buf_append(&m->b, zero, 512 - n % 512);
}

static void
mk_file(struct mk *m, const char *name, const char *data)
{
    mk_hdr(m, name, '0', strlen(data), NULL, NULL, false);
    mk_data(m, data, strlen(data));
}

static void
mk_pax_raw(struct mk *m, const char *records, size_t n)
{
    mk_hdr(m, "PaxHeader", 'x', n, NULL, NULL, false);
    mk_data(m, records, n);
}

static void
mk_pax(struct mk *m, const char *records)
{
    mk_pax_raw(m, records, strlen(records));
}

/* One well-formed pax record KEY=VAL (VLEN bytes) as the whole header. */
static void
mk_pax1(struct mk *m, const char *key, const char *val, size_t vlen)
{
    char rec[512];
    size_t base = strlen(key) + vlen + 3, len = base + 1;
    int n;

    while ((size_t)snprintf(NULL, 0, "%zu", len) + base != len)
        len = base + (size_t)snprintf(NULL, 0, "%zu", len);
    n = snprintf(rec, sizeof(rec), "%zu %s=", len, key);
    memcpy(rec + n, val, vlen);
    rec[n + vlen] = '\n';
    mk_pax_raw(m, rec, len);
}

/* True when DIR holds a leftover temporary name of the extractor. */
static bool
has_tmp(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    bool found = false;

    while (d && (de = readdir(d)))
        if (!strncmp(de->d_name, ".tar-", 5))
            found = true;
    if (d)
        closedir(d);
    return found;
}

static void
mk_end(struct mk *m)
{
    static const char zero[1024];

    buf_append(&m->b, zero, sizeof(zero));
}

/* Extract M (first LEN bytes; 0: all) into DST through a pipe-free temp file. */
static int
mk_extract(struct mk *m, size_t len, const char *dst, const struct tar_opts *o, struct err *e)
{
    char arch[300];
    int fd;

    snprintf(arch, sizeof(arch), "%s.mk.tar", dst);
    fd = open(arch, O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (fd < 0 || write_full(fd, m->b.data, len ? len : m->b.len) < 0)
        abort();
    close(fd);
    buf_fini(&m->b);
    err_clear(e);
    return extract_file_into(arch, dst, o, e);
}

static bool
exists(const char *dir, const char *rel)
{
    char p[1024];
    struct stat sb;

    snprintf(p, sizeof(p), "%s/%s", dir, rel);
    return lstat(p, &sb) == 0;
}

static int
expect_refused(struct mk *m, int want_rc, const char *want_msg)
{
    const char *dst = fresh_dir("atk");
    struct err e;
    int rc = mk_extract(m, 0, dst, NULL, &e);

    if (rc != want_rc || !strstr(e.msg, want_msg)) {
        tap_diag("rc %d (want %d), message '%s' (want '%s')", rc, want_rc, e.msg, want_msg);
        return TAP_FAIL;
    }
    return TAP_PASS;
}

static int
test_attack_absolute(void)
{
    struct mk m = { BUF_INIT };

    mk_file(&m, "/tmp/evil", "x");
    mk_end(&m);
    return expect_refused(&m, -EPERM, "entry '/tmp/evil': absolute name refused");
}

static int
test_attack_dotdot(void)
{
    struct mk m = { BUF_INIT };
    const char *dst = fresh_dir("atk");
    struct err e;

    mk_file(&m, "ok", "fine");
    mk_file(&m, "a/../../b", "x");
    mk_end(&m);
    CHECK_INT(mk_extract(&m, 0, dst, NULL, &e), -EPERM);
    CHECK(strstr(e.msg, "tar: entry 'a/../../b': '..' component refused"));
    CHECK(exists(dst, "ok"));
    CHECK(!exists(dst, "../b"));
    /* A plain "../x" and one hidden in a pax path. */
    m.b = (struct buf)BUF_INIT;
    mk_file(&m, "../x", "x");
    mk_end(&m);
    if (expect_refused(&m, -EPERM, "'..' component refused"))
        return TAP_FAIL;
    mk_pax1(&m, "path", "ok/../../x", 10);
    mk_file(&m, "innocent", "x");
    mk_end(&m);
    return expect_refused(&m, -EPERM, "entry 'ok/../../x': '..' component refused");
}

static int
test_attack_symlink_then_file(void)
{
    const char *outside = fresh_dir("outside"), *dst = fresh_dir("atk");
    struct mk m = { BUF_INIT };
    struct err e;

    /* a -> OUTSIDE, then a/passwd: must not land in OUTSIDE. */
    mk_hdr(&m, "a", '2', 0, outside, NULL, false);
    mk_file(&m, "a/passwd", "root::0:0::/:/bin/sh\n");
    mk_end(&m);
    CHECK_INT(mk_extract(&m, 0, dst, NULL, &e), -EPERM);
    CHECK(strstr(e.msg, "entry 'a/passwd': 'a' is a symlink or not a directory; refused"));
    CHECK(!exists(outside, "passwd"));
    /* The same through a symlink already in the destination. */
    dst = fresh_dir("atk");
    sh("ln -s %s %s/d", outside, dst);
    mk_hdr(&m, "d/x", '0', 1, NULL, NULL, false);
    mk_data(&m, "x", 1);
    mk_end(&m);
    CHECK_INT(mk_extract(&m, 0, dst, NULL, &e), -EPERM);
    CHECK(!exists(outside, "x"));
    /* And a directory entry through it. */
    mk_hdr(&m, "d/sub/", '5', 0, NULL, NULL, false);
    mk_end(&m);
    CHECK_INT(mk_extract(&m, 0, dst, NULL, &e), -EPERM);
    CHECK(!exists(outside, "sub"));
    return TAP_PASS;
}

static int
test_attack_overwrite_symlink(void)
{
    const char *outside = fresh_dir("outside"), *dst = fresh_dir("atk");
    struct mk m = { BUF_INIT };
    struct buf b = BUF_INIT;
    char target[512];
    struct err e;

    /* The destination holds a symlink to a file outside; the archive writes
     * a file of that name: the link is replaced, the outside file untouched. */
    put_file(outside, "secret", "keep", 4, 0644);
    snprintf(target, sizeof(target), "%s/secret", outside);
    sh("ln -s %s %s/victim", target, dst);
    mk_file(&m, "victim", "overwritten");
    mk_end(&m);
    CHECK_INT(mk_extract(&m, 0, dst, NULL, &e), 0);
    describe(outside, "", &b, false);
    CHECK(strstr(buf_cstr(&b), "secret f 0 4 "));
    buf_reset(&b);
    describe(dst, "", &b, false);
    CHECK(strstr(buf_cstr(&b), "victim f 0 11 "));
    /* An archive that plants the link and then writes through its name. */
    dst = fresh_dir("atk");
    mk_hdr(&m, "victim", '2', 0, target, NULL, false);
    mk_file(&m, "victim", "overwritten");
    mk_end(&m);
    CHECK_INT(mk_extract(&m, 0, dst, NULL, &e), 0);
    buf_reset(&b);
    describe(outside, "", &b, false);
    CHECK(strstr(buf_cstr(&b), "secret f 0 4 "));
    buf_fini(&b);
    /* No temporary file is left behind. */
    CHECK(!has_tmp(dst));
    return TAP_PASS;
}

static int
test_attack_link_device_fifo(void)
{
    struct mk m = { BUF_INIT };

    mk_hdr(&m, "hl", '1', 0, "/etc/shadow", NULL, false);
    mk_end(&m);
    if (expect_refused(&m, -EPERM, "entry 'hl': hard links are refused"))
        return TAP_FAIL;
    mk_hdr(&m, "dev", '3', 0, NULL, NULL, false);
    mk_end(&m);
    if (expect_refused(&m, -EPERM, "entry 'dev': device nodes are refused"))
        return TAP_FAIL;
    mk_hdr(&m, "blk", '4', 0, NULL, NULL, false);
    mk_end(&m);
    if (expect_refused(&m, -EPERM, "device nodes are refused"))
        return TAP_FAIL;
    mk_hdr(&m, "fifo", '6', 0, NULL, NULL, false);
    mk_end(&m);
    if (expect_refused(&m, -EPERM, "entry 'fifo': fifos are refused"))
        return TAP_FAIL;
    mk_hdr(&m, "weird", 'S', 0, NULL, NULL, false);
    mk_end(&m);
    if (expect_refused(&m, -EPERM, "unsupported entry type 'S'"))
        return TAP_FAIL;
    mk_pax1(&m, "GNU.sparse.major", "1", 1);
    mk_file(&m, "sparse", "x");
    mk_end(&m);
    return expect_refused(&m, -EPERM, "sparse files are not supported");
}

static int
test_attack_truncated(void)
{
    const char *dst;
    struct mk m = { BUF_INIT };
    struct err e;
    char data[2000];

    memset(data, 'z', sizeof(data));
    /* Cut inside the data. */
    dst = fresh_dir("atk");
    mk_hdr(&m, "f", '0', sizeof(data), NULL, NULL, false);
    mk_data(&m, data, sizeof(data));
    mk_end(&m);
    CHECK_INT(mk_extract(&m, 512 + 1000, dst, NULL, &e), -EBADMSG);
    CHECK(strstr(e.msg, "entry 'f': truncated archive"));
    CHECK(!exists(dst, "f"));
    /* Cut inside a header. */
    dst = fresh_dir("atk");
    mk_file(&m, "a", "a");
    mk_file(&m, "b", "b");
    CHECK_INT(mk_extract(&m, 1024 + 100, dst, NULL, &e), -EBADMSG);
    CHECK(strstr(e.msg, "short header block"));
    /* No end-of-archive block at all, and an empty stream. */
    dst = fresh_dir("atk");
    mk_file(&m, "a", "a");
    CHECK_INT(mk_extract(&m, 0, dst, NULL, &e), -EBADMSG);
    CHECK(strstr(e.msg, "no end-of-archive block"));
    dst = fresh_dir("atk");
    buf_append(&m.b, "", 0);
    CHECK_INT(mk_extract(&m, 0, dst, NULL, &e), -EBADMSG);
    /* A pax header with no entry after it. */
    dst = fresh_dir("atk");
    mk_pax1(&m, "path", "zz", 2);
    mk_end(&m);
    CHECK_INT(mk_extract(&m, 0, dst, NULL, &e), -EBADMSG);
    return TAP_PASS;
}

static int
test_attack_bad_checksum(void)
{
    struct mk m = { BUF_INIT };

    mk_hdr(&m, "f", '0', 1, NULL, NULL, true);
    mk_data(&m, "x", 1);
    mk_end(&m);
    return expect_refused(&m, -EBADMSG, "entry 'f': header checksum mismatch");
}

static int
test_attack_size_overflow(void)
{
    const char *dst = fresh_dir("atk");
    struct tar_opts o = { .max_total = 1 << 20 };
    struct mk m = { BUF_INIT };
    struct err e;
    char field[12];

    /* Base-256 size of 2^63: refused by the limit before any write. */
    memset(field, 0, sizeof(field));
    field[0] = (char)0x80;
    field[4] = (char)0x80;
    mk_hdr(&m, "huge", '0', 0, NULL, field, false);
    mk_end(&m);
    CHECK_INT(mk_extract(&m, 0, dst, &o, &e), -EFBIG);
    CHECK(strstr(e.msg, "entry 'huge': archive exceeds 1048576 bytes"));
    CHECK(!exists(dst, "huge"));
    /* Base-256 that overflows 64 bits; negative base-256; garbage octal. */
    memset(field, 0xff, sizeof(field));
    field[0] = (char)0x80;
    mk_hdr(&m, "ovf", '0', 0, NULL, field, false);
    mk_end(&m);
    if (expect_refused(&m, -EBADMSG, "entry 'ovf': bad size field"))
        return TAP_FAIL;
    memset(field, 0xff, sizeof(field));
    mk_hdr(&m, "neg", '0', 0, NULL, field, false);
    mk_end(&m);
    if (expect_refused(&m, -EBADMSG, "entry 'neg': bad size field"))
        return TAP_FAIL;
    memcpy(field, "0000000009x", 12);
    mk_hdr(&m, "garbage", '0', 0, NULL, field, false);
    mk_end(&m);
    if (expect_refused(&m, -EBADMSG, "bad size field"))
        return TAP_FAIL;
    /* A pax size past what is there: truncated, not a wrap-around. */
    mk_pax1(&m, "size", "18446744073709551615", 20);
    mk_file(&m, "p", "x");
    mk_end(&m);
    if (expect_refused(&m, -EBADMSG, "truncated archive"))
        return TAP_FAIL;
    mk_pax1(&m, "size", "184467440737095516150", 21);
    mk_file(&m, "p", "x");
    mk_end(&m);
    return expect_refused(&m, -EBADMSG, "bad pax size");
}

static int
test_limits(void)
{
    const char *dst = fresh_dir("atk");
    struct tar_opts o = { .max_total = 10 };
    struct tar_stats st;
    struct mk m = { BUF_INIT };
    struct err e;
    int fd, dfd;

    mk_file(&m, "a", "123456");
    mk_file(&m, "b", "1234");
    mk_file(&m, "c", "1");
    mk_end(&m);
    CHECK_INT(mk_extract(&m, 0, dst, &o, &e), -EFBIG);
    CHECK(strstr(e.msg, "entry 'c': archive exceeds 10 bytes"));
    CHECK(exists(dst, "b"));
    CHECK(!exists(dst, "c"));
    o = (struct tar_opts){ .max_entries = 2 };
    dst = fresh_dir("atk");
    mk_file(&m, "a", "1");
    mk_hdr(&m, "d/", '5', 0, NULL, NULL, false);
    mk_file(&m, "d/c", "1");
    mk_end(&m);
    CHECK_INT(mk_extract(&m, 0, dst, &o, &e), -E2BIG);
    CHECK(strstr(e.msg, "entry 'd/c': more than 2 entries"));
    /* The writer honours the same limits. */
    put_file(dst, "big", "0123456789abcdef", 16, 0644);
    fd = open("/dev/null", O_WRONLY);
    dfd = open(dst, O_RDONLY | O_DIRECTORY);
    o = (struct tar_opts){ .max_total = 10, .create_stats = &st };
    CHECK_INT(tar_create(fd, dfd, "big", NULL, &o, &e), -EFBIG);
    CHECK(strstr(e.msg, "entry 'big': archive exceeds 10 bytes"));
    close(fd);
    close(dfd);
    return TAP_PASS;
}

static int
test_names_sane(void)
{
    struct mk m = { BUF_INIT };

    mk_file(&m, "bad\xff\xfe", "x");
    mk_end(&m);
    if (expect_refused(&m, -EBADMSG, "entry 'bad\\xff\\xfe': name is not valid UTF-8"))
        return TAP_FAIL;
    mk_file(&m, "new\nline", "x");
    mk_end(&m);
    if (expect_refused(&m, -EBADMSG, "control character in name"))
        return TAP_FAIL;
    mk_pax1(&m, "path", "a\0b/c", 5);
    mk_file(&m, "x", "x");
    mk_end(&m);
    if (expect_refused(&m, -EBADMSG, "NUL byte in name"))
        return TAP_FAIL;
    mk_hdr(&m, "", '0', 0, NULL, NULL, false);
    mk_end(&m);
    if (expect_refused(&m, -EBADMSG, "empty name"))
        return TAP_FAIL;
    mk_hdr(&m, "././", '0', 0, NULL, NULL, false);
    mk_end(&m);
    if (expect_refused(&m, -EBADMSG, "names no file"))
        return TAP_FAIL;
    mk_pax(&m, "9 path=x"); /* record without its newline */
    mk_file(&m, "x", "x");
    mk_end(&m);
    if (expect_refused(&m, -EBADMSG, "malformed pax"))
        return TAP_FAIL;
    /* GNU long names go through the same checks. */
    mk_hdr(&m, "././@LongLink", 'L', 12, NULL, NULL, false);
    mk_data(&m, "../../etc/x", 12);
    mk_file(&m, "short", "x");
    mk_end(&m);
    return expect_refused(&m, -EPERM, "entry '../../etc/x': '..' component refused");
}

static int
test_existing_entries(void)
{
    const char *dst = fresh_dir("atk");
    struct tar_opts o = { .keep_mode = true };
    struct mk m = { BUF_INIT };
    struct stat sb;
    char p[512];
    struct err e;

    /* A file over an existing file: replaced (a new inode: atomic rename). */
    put_file(dst, "f", "old", 3, 0644);
    snprintf(p, sizeof(p), "%s/f", dst);
    CHECK(stat(p, &sb) == 0);
    {
        ino_t old = sb.st_ino;

        mk_file(&m, "f", "new content");
        mk_end(&m);
        CHECK_INT(mk_extract(&m, 0, dst, NULL, &e), 0);
        CHECK(stat(p, &sb) == 0);
        CHECK(sb.st_ino != old);
        CHECK_INT(sb.st_size, 11);
    }
    /* A file over an existing directory: refused, the directory kept. */
    sh("mkdir %s/dir", dst);
    mk_file(&m, "dir", "x");
    mk_end(&m);
    CHECK(mk_extract(&m, 0, dst, NULL, &e) < 0);
    CHECK(strstr(e.msg, "entry 'dir': rename into place"));
    /* A directory over an existing file: refused. */
    mk_hdr(&m, "f/", '5', 0, NULL, NULL, false);
    mk_end(&m);
    CHECK_INT(mk_extract(&m, 0, dst, NULL, &e), -EEXIST);
    /* A read-only directory gets its mode after its contents. Set-id bits
     * are dropped. */
    mk_hdr(&m, "ro/", '5', 0, NULL, NULL, false);
    memcpy(m.b.data + m.b.len - 512 + 100, "0000555", 7);
    {
        unsigned sum = 0;
        size_t i;
        unsigned char *h = (unsigned char *)m.b.data + m.b.len - 512;

        memset(h + 148, ' ', 8);
        for (i = 0; i < 512; i++)
            sum += h[i];
        mk_octal((char *)h + 148, 7, sum);
    }
    mk_file(&m, "ro/inside", "x");
    mk_hdr(&m, "suid", '0', 0, NULL, NULL, false);
    memcpy(m.b.data + m.b.len - 512 + 100, "0004755", 7);
    {
        unsigned sum = 0;
        size_t i;
        unsigned char *h = (unsigned char *)m.b.data + m.b.len - 512;

        memset(h + 148, ' ', 8);
        for (i = 0; i < 512; i++)
            sum += h[i];
        mk_octal((char *)h + 148, 7, sum);
    }
    mk_end(&m);
    if (mk_extract(&m, 0, dst, &o, &e) != 0) {
        tap_diag("%s", e.msg);
        return TAP_FAIL;
    }
    snprintf(p, sizeof(p), "%s/ro", dst);
    CHECK(stat(p, &sb) == 0);
    CHECK_INT(sb.st_mode & 07777, 0555);
    CHECK(exists(dst, "ro/inside"));
    snprintf(p, sizeof(p), "%s/suid", dst);
    CHECK(stat(p, &sb) == 0);
    CHECK_INT(sb.st_mode & 07777, 0755);
    return TAP_PASS;
}

/* Streams: extraction from a pipe, with GNU tar's record padding after the
 * end blocks drained (the writer must not see EPIPE). */
static int
test_pipe_stream(void)
{
    const char *src = fresh_dir("src"), *dst = fresh_dir("dst");
    struct tar_stats st;
    char cmd[1024];
    struct err e;
    FILE *p;
    int dfd, rc, status;

    if (access("/bin/tar", X_OK) != 0)
        TAP_SKIP_BECAUSE("no /bin/tar");
    make_tree(src);
    snprintf(cmd, sizeof(cmd), "/bin/tar -cf - -C %s t; echo rc=$? >%s.rc", src, src);
    p = popen(cmd, "r");
    CHECK(p != NULL);
    dfd = open(dst, O_RDONLY | O_DIRECTORY);
    rc = tar_extract(fileno(p), dfd, NULL, &st, &e);
    close(dfd);
    status = pclose(p);
    if (rc != 0) {
        tap_diag("%s", e.msg);
        return TAP_FAIL;
    }
    CHECK_INT(status, 0);
    CHECK_INT(st.files, 7);
    snprintf(cmd, sizeof(cmd), "grep -qx rc=0 %s.rc", src);
    CHECK_INT(system(cmd), 0);
    return TAP_PASS;
}

static int
test_create_skips_special(void)
{
    const char *src = fresh_dir("src");
    struct tar_stats st;
    struct tar_opts o = { .create_stats = &st };
    char p[512];
    struct err e;
    int fd, dfd;

    put_file(src, "f", "x", 1, 0644);
    snprintf(p, sizeof(p), "%s/fifo", src);
    CHECK(mkfifo(p, 0644) == 0);
    fd = open("/dev/null", O_WRONLY);
    dfd = open(src, O_RDONLY | O_DIRECTORY);
    CHECK_INT(tar_create(fd, dfd, ".", NULL, &o, &e), 0);
    CHECK_INT(st.files, 1);
    CHECK_INT(st.skipped, 1);
    CHECK_INT(tar_create(fd, dfd, "missing", NULL, &o, &e), -ENOENT);
    CHECK(strstr(e.msg, "tar: entry 'missing': stat"));
    close(fd);
    close(dfd);
    return TAP_PASS;
}

/* The fuzzer's kept corpus (test/fuzz/corpus_tar), replayed under the
 * sanitizers: every input ends cleanly, and nothing lands outside the
 * destination (its parent holds only the destination afterwards). */
static int
test_fuzz_corpus(void)
{
    const char *top = getenv("OPENSHELL_TOP");
    struct tar_opts o = { .max_total = 1 << 20, .max_entries = 1000, .keep_mode = true };
    char dir[4096];
    struct dirent **list;
    int n, i, replayed = 0;

    snprintf(dir, sizeof(dir), "%s/test/fuzz/corpus_tar", top ? top : ".");
    n = scandir(dir, &list, NULL, alphasort);
    if (n < 0)
        TAP_SKIP_BECAUSE("no test/fuzz/corpus_tar");
    for (i = 0; i < n; i++) {
        char path[8192], cmd[8192];
        const char *box = fresh_dir("fz"), *dst;
        struct err e;
        struct dirent *de;
        DIR *d;
        int fd, dfd, others = 0;

        if (list[i]->d_name[0] == '.') {
            free(list[i]);
            continue;
        }
        snprintf(path, sizeof(path), "%s/%s", dir, list[i]->d_name);
        free(list[i]);
        snprintf(cmd, sizeof(cmd), "%s/dest", box);
        if (mkdir(cmd, 0700) < 0)
            return TAP_FAIL;
        dst = cmd;
        fd = open(path, O_RDONLY);
        dfd = open(dst, O_RDONLY | O_DIRECTORY);
        CHECK(fd >= 0 && dfd >= 0);
        (void)tar_extract(fd, dfd, &o, NULL, &e);
        close(fd);
        close(dfd);
        d = opendir(box);
        while (d && (de = readdir(d)))
            if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..") && strcmp(de->d_name, "dest"))
                others++;
        if (d)
            closedir(d);
        if (others) {
            tap_diag("%s: wrote outside the destination", path);
            return TAP_FAIL;
        }
        replayed++;
    }
    free(list);
    tap_diag("%d corpus inputs replayed", replayed);
    CHECK(replayed > 0);
    return TAP_PASS;
}

static int
test_cleanup(void)
{
    char cmd[256];

    snprintf(cmd, sizeof(cmd), "chmod -R u+w %s; rm -rf %s", root, root);
    CHECK_INT(system(cmd), 0);
    return TAP_PASS;
}

TAP_MAIN(TAP_TEST(test_round_trip), TAP_TEST(test_gnu_tar_reads_ours),
         TAP_TEST(test_we_read_gnu_pax), TAP_TEST(test_we_read_gnu_gnu),
         TAP_TEST(test_we_read_gnu_oldgnu), TAP_TEST(test_single_file_and_dot),
         TAP_TEST(test_attack_absolute), TAP_TEST(test_attack_dotdot),
         TAP_TEST(test_attack_symlink_then_file), TAP_TEST(test_attack_overwrite_symlink),
         TAP_TEST(test_attack_link_device_fifo), TAP_TEST(test_attack_truncated),
         TAP_TEST(test_attack_bad_checksum), TAP_TEST(test_attack_size_overflow),
         TAP_TEST(test_limits), TAP_TEST(test_names_sane), TAP_TEST(test_existing_entries),
         TAP_TEST(test_pipe_stream), TAP_TEST(test_create_skips_special),
         TAP_TEST(test_fuzz_corpus), TAP_TEST(test_cleanup))
