/*
 * test_policy_corpus.c: replay the kept fuzz corpus (test/fuzz/corpus_load,
 * test/fuzz/corpus_request) through the same entry points the libFuzzer
 * targets drive, under ASan/UBSan. Every input that ever crashed the loader
 * or the request reader stays here as a regression test.
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../fuzz/fuzz_policy.h"
#include "tap.h"
#include "xfuncs.h"

static int
replay(const char *dir, void (*one)(const uint8_t *, size_t))
{
    DIR *d = opendir(dir);
    struct dirent *de;
    int n = 0;

    if (!d) {
        tap_diag("cannot open %s", dir);
        return -1;
    }
    while ((de = readdir(d))) {
        struct buf b = BUF_INIT;
        char path[1024];

        if (de->d_name[0] == '.')
            continue;
        snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
        if (read_file(path, 1 << 24, &b, NULL) < 0) {
            buf_fini(&b);
            continue;
        }
        one((const uint8_t *)(b.data ? b.data : ""), b.len);
        buf_fini(&b);
        n++;
    }
    closedir(d);
    return n;
}

static int
test_corpus_load(void)
{
    int n = replay("test/fuzz/corpus_load", fuzz_policy_load_one);

    CHECK(n > 0);
    tap_diag("%d loader inputs replayed", n);
    return TAP_PASS;
}

static int
test_corpus_request(void)
{
    int n = replay("test/fuzz/corpus_request", fuzz_policy_request_one);

    fuzz_policy_cleanup();
    CHECK(n > 0);
    tap_diag("%d request inputs replayed", n);
    return TAP_PASS;
}

TAP_MAIN(TAP_TEST(test_corpus_load), TAP_TEST(test_corpus_request))
