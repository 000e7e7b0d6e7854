/* Unit tests for src/seal.c: key file creation and refusal, round trips,
 * fresh nonces, tampering, wrong key, wrong AAD. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "seal.h"
#include "tap.h"
#include "xfuncs.h"

static char dir[] = "/tmp/test_seal.XXXXXX";

static char *
key_path(const char *name)
{
    return xasprintf("%s/%s", dir, name);
}

static int
test_create_and_reload(void)
{
    AUTOFREE char *p = key_path("k1");
    struct seal *s = NULL;
    struct stat st;
    struct err e;

    CHECK_INT(seal_open(p, &s, &e), 0);
    CHECK(stat(p, &st) == 0);
    CHECK_INT((int)(st.st_mode & 07777), 0600);
    CHECK_INT((int)st.st_size, SEAL_KEY_LEN);
    seal_free(s);
    s = NULL;
    CHECK_INT(seal_open(p, &s, &e), 0); /* the same file, loaded */
    seal_free(s);
    return TAP_PASS;
}

static int
test_round_trip(void)
{
    AUTOFREE char *p = key_path("k2");
    struct buf a = BUF_INIT, b = BUF_INIT, pt = BUF_INIT;
    struct seal *s = NULL;
    struct err e;

    CHECK_INT(seal_open(p, &s, &e), 0);
    CHECK_INT(seal_encrypt(s, "id-1", "sk-secret", 9, &a, &e), 0);
    CHECK_INT(seal_encrypt(s, "id-1", "sk-secret", 9, &b, &e), 0);
    CHECK(strncmp(buf_cstr(&a), "v1.", 3) == 0);
    CHECK(strstr(buf_cstr(&a), "sk-secret") == NULL);
    CHECK(strcmp(buf_cstr(&a), buf_cstr(&b)) != 0); /* fresh nonce each time */
    CHECK_INT(seal_decrypt(s, "id-1", buf_cstr(&a), &pt, &e), 0);
    CHECK_STR(buf_cstr(&pt), "sk-secret");
    buf_reset(&pt);
    /* Another record's AAD does not open it. */
    CHECK_INT(seal_decrypt(s, "id-2", buf_cstr(&a), &pt, &e), -EBADMSG);
    CHECK_INT((int)pt.len, 0);
    /* One flipped character fails authentication. */
    a.data[10] = a.data[10] == 'A' ? 'B' : 'A';
    CHECK_INT(seal_decrypt(s, "id-1", buf_cstr(&a), &pt, &e), -EBADMSG);
    CHECK_INT(seal_decrypt(s, "id-1", "v0.xxxx", &pt, &e), -EBADMSG);
    CHECK_INT(seal_decrypt(s, "id-1", "v1.!!", &pt, &e), -EBADMSG);
    CHECK_INT(seal_decrypt(s, "id-1", "v1.", &pt, &e), -EBADMSG);
    seal_free(s);
    buf_fini(&a);
    buf_fini(&b);
    buf_fini(&pt);
    return TAP_PASS;
}

static int
test_other_key(void)
{
    AUTOFREE char *p1 = key_path("k3"), *p2 = key_path("k4");
    struct buf a = BUF_INIT, pt = BUF_INIT;
    struct seal *s1 = NULL, *s2 = NULL;
    struct err e;

    CHECK_INT(seal_open(p1, &s1, &e), 0);
    CHECK_INT(seal_open(p2, &s2, &e), 0);
    CHECK_INT(seal_encrypt(s1, "id", "v", 1, &a, &e), 0);
    CHECK_INT(seal_decrypt(s2, "id", buf_cstr(&a), &pt, &e), -EBADMSG);
    CHECK_CONTAINS(e.msg, "key replaced");
    seal_free(s1);
    seal_free(s2);
    buf_fini(&a);
    buf_fini(&pt);
    return TAP_PASS;
}

static int
test_refusals(void)
{
    AUTOFREE char *p = key_path("k5"), *l = key_path("k6");
    struct seal *s = NULL;
    struct err e;
    int fd;

    CHECK_INT(seal_open(p, &s, &e), 0);
    seal_free(s);
    s = NULL;
    CHECK(chmod(p, 0644) == 0);
    CHECK_INT(seal_open(p, &s, &e), -EPROTO);
    CHECK_CONTAINS(e.msg, "must be 0600");
    CHECK(s == NULL);
    CHECK(chmod(p, 0600) == 0);
    fd = open(p, O_WRONLY | O_APPEND);
    CHECK(fd >= 0);
    CHECK(write(fd, "x", 1) == 1);
    close(fd);
    CHECK_INT(seal_open(p, &s, &e), -EPROTO);
    CHECK_CONTAINS(e.msg, "33 bytes, expected 32");
    CHECK(symlink(p, l) == 0);
    CHECK_INT(seal_open(l, &s, &e), -EPROTO);
    CHECK_CONTAINS(e.msg, "symbolic link");
    return TAP_PASS;
}

static int
test_setup(void)
{
    CHECK(mkdtemp(dir) != NULL);
    return TAP_PASS;
}

static int
test_cleanup(void)
{
    AUTOFREE char *cmd = xasprintf("rm -rf %s", dir);
    CHECK(system(cmd) == 0);
    return TAP_PASS;
}

TAP_MAIN(TAP_TEST(test_setup), TAP_TEST(test_create_and_reload), TAP_TEST(test_round_trip),
         TAP_TEST(test_other_key), TAP_TEST(test_refusals), TAP_TEST(test_cleanup))
