/* landlock.c: Landlock rulesets for the agent (see include/sb_landlock.h). */
#include "sb_landlock.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "log.h"
#include "xfuncs.h"

#ifndef SYS_landlock_create_ruleset
#define SYS_landlock_create_ruleset 444
#define SYS_landlock_add_rule 445
#define SYS_landlock_restrict_self 446
#endif
#define SB_LL_CREATE_RULESET_VERSION (1U << 0)
#define SB_LL_RULE_PATH_BENEATH 1

/* The ABI 6 layout; older kernels are given a shorter prefix of it. */
struct sb_ll_ruleset_attr {
    uint64_t handled_access_fs;
    uint64_t handled_access_net;
    uint64_t scoped;
};

struct sb_ll_path_beneath {
    uint64_t allowed_access;
    int32_t parent_fd;
} __attribute__((packed));

static const char *const sb_ll_right_names[] = {
    "execute",   "write_file", "read_file", "read_dir",  "remove_dir", "remove_file",
    "make_char", "make_dir",   "make_reg",  "make_sock", "make_fifo",  "make_block",
    "make_sym",  "refer",      "truncate",  "ioctl_dev",
};

int
sb_landlock_abi(void)
{
    static int cached;
    long v;

    if (cached)
        return cached;
    v = syscall(SYS_landlock_create_ruleset, NULL, 0, SB_LL_CREATE_RULESET_VERSION);
    cached = v >= 1 ? (int)v : (errno ? -errno : -ENOSYS);
    return cached;
}

uint64_t
sb_landlock_handled(int abi)
{
    uint64_t r = 0;

    if (abi >= 1)
        r = (SB_LL_MAKE_SYM << 1) - 1; /* bits 0..12 */
    if (abi >= 2)
        r |= SB_LL_REFER;
    if (abi >= 3)
        r |= SB_LL_TRUNCATE;
    if (abi >= 5)
        r |= SB_LL_IOCTL_DEV;
    return r;
}

uint64_t
sb_landlock_scoped(int abi)
{
    return abi >= 6 ? SB_LL_SCOPE_ABSTRACT_UNIX | SB_LL_SCOPE_SIGNAL : 0;
}

uint64_t
sb_landlock_ro_rights(int abi)
{
    return sb_landlock_handled(abi) & (SB_LL_EXECUTE | SB_LL_READ_FILE | SB_LL_READ_DIR);
}

uint64_t
sb_landlock_rw_rights(int abi)
{
    return sb_landlock_handled(abi);
}

void
sb_landlock_rights_str(uint64_t rights, struct buf *out)
{
    bool first = true;

    for (unsigned i = 0; i < sizeof(sb_ll_right_names) / sizeof(sb_ll_right_names[0]); i++) {
        if (!(rights & (1ULL << i)))
            continue;
        buf_printf(out, "%s%s", first ? "" : ",", sb_ll_right_names[i]);
        first = false;
    }
    if (first)
        buf_puts(out, "none");
}

void
sb_landlock_scopes_str(uint64_t scopes, struct buf *out)
{
    if (!scopes) {
        buf_puts(out, "none");
        return;
    }
    if (scopes & SB_LL_SCOPE_ABSTRACT_UNIX)
        buf_puts(out, "abstract_unix_socket");
    if (scopes & SB_LL_SCOPE_SIGNAL)
        buf_puts(out, (scopes & SB_LL_SCOPE_ABSTRACT_UNIX) ? ",signal" : "signal");
}

/* Add one path rule to RULESET. Returns 1 added, 0 skipped (missing and not
 * HARD), or -errno with E set. */
static int
add_path(int ruleset, int abi, const struct sb_ll_path *p, bool hard, struct buf *report,
         struct err *e)
{
    struct sb_ll_path_beneath pb;
    AUTOCLOSE int fd = open(p->path, O_PATH | O_CLOEXEC);
    struct stat st;

    if (fd < 0) {
        int saved = errno;
        if (hard && !(saved == ENOENT && p->baseline))
            return err_errno(e, "landlock: open %s", p->path);
        if (report)
            buf_printf(report, "  skipped %s: %s\n", p->path, strerror(saved));
        /* A path that does not exist in this image is normal (the default
         * policy lists /app); anything else is worth a warning. */
        if (saved == ENOENT)
            log_debug("landlock: %s path %s skipped: %s", p->baseline ? "baseline" : "policy",
                      p->path, strerror(saved));
        else
            log_warnx("landlock: path %s skipped: %s", p->path, strerror(saved));
        return 0;
    }
    if (fstat(fd, &st) < 0)
        return err_errno(e, "landlock: fstat %s", p->path);
    pb.allowed_access = p->rw ? sb_landlock_rw_rights(abi) : sb_landlock_ro_rights(abi);
    /* Directory-only rights on a file make the kernel refuse the rule. */
    if (!S_ISDIR(st.st_mode))
        pb.allowed_access &= SB_LL_FILE_RIGHTS;
    pb.parent_fd = fd;
    if (syscall(SYS_landlock_add_rule, ruleset, SB_LL_RULE_PATH_BENEATH, &pb, 0) < 0)
        return err_errno(e, "landlock: add rule for %s", p->path);
    if (report) {
        buf_printf(report, "  %s %s: ", p->rw ? "rw" : "ro", p->path);
        sb_landlock_rights_str(pb.allowed_access, report);
        buf_putc(report, '\n');
    }
    return 1;
}

int
sb_landlock_prepare(int abi, const struct sb_ll_path *paths, size_t n, bool hard,
                    struct buf *report, struct err *e)
{
    struct sb_ll_ruleset_attr attr = {
        .handled_access_fs = sb_landlock_handled(abi),
        .scoped = sb_landlock_scoped(abi),
    };
    size_t size = abi >= 6 ? sizeof(attr) : abi >= 4 ? 16 : 8;
    AUTOCLOSE int ruleset = -1;
    size_t added = 0;

    if (abi < 1)
        return err_set(e, ENOSYS, "landlock is not available");
    ruleset = (int)syscall(SYS_landlock_create_ruleset, &attr, size, 0);
    if (ruleset < 0)
        return err_errno(e, "landlock_create_ruleset (ABI %d)", abi);
    for (size_t i = 0; i < n; i++) {
        int rc = add_path(ruleset, abi, &paths[i], hard, report, e);
        if (rc < 0)
            return rc;
        added += (size_t)rc;
    }
    if (added == 0)
        return err_set(e, ENOENT, "landlock: none of the %zu policy paths exists", n);
    return steal_fd(&ruleset);
}

int
sb_landlock_enforce(int ruleset_fd)
{
    if (syscall(SYS_landlock_restrict_self, ruleset_fd, 0) < 0)
        return -errno;
    return 0;
}
