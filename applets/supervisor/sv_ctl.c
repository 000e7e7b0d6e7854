/*
 * sv_ctl.c: the control channel between the outer supervisor and PID 1 (a
 * SOCK_SEQPACKET socketpair made before the clone). One message is one JSON
 * object (at most SV_CTL_MAX bytes) with up to SV_CTL_MAX_FDS descriptors
 * passed alongside (SCM_RIGHTS). See supervisor.h for the messages.
 */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "supervisor.h"
#include "xfuncs.h"

int
sv_ctl_send(int fd, const char *msg, const int *fds, int nfds)
{
    union {
        char buf[CMSG_SPACE(sizeof(int) * SV_CTL_MAX_FDS)];
        struct cmsghdr align;
    } u;
    struct iovec iov = { (void *)msg, strlen(msg) };
    struct msghdr mh = { 0 };
    ssize_t n;

    if (iov.iov_len > SV_CTL_MAX || nfds > SV_CTL_MAX_FDS)
        return -EMSGSIZE;
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    if (nfds > 0) {
        struct cmsghdr *c;

        memset(&u, 0, sizeof(u));
        mh.msg_control = u.buf;
        mh.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
        c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
        memcpy(CMSG_DATA(c), fds, sizeof(int) * (size_t)nfds);
    }
    n = RETRY_EINTR(sendmsg(fd, &mh, MSG_NOSIGNAL));
    if (n < 0)
        return -errno;
    return (size_t)n == iov.iov_len ? 0 : -EIO;
}

int
sv_ctl_recv(int fd, char *msg, size_t size, int *fds, int *nfds)
{
    union {
        char buf[CMSG_SPACE(sizeof(int) * SV_CTL_MAX_FDS)];
        struct cmsghdr align;
    } u;
    struct iovec iov = { msg, size - 1 };
    struct msghdr mh = { 0 };
    struct cmsghdr *c;
    ssize_t n;

    *nfds = 0;
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    mh.msg_control = u.buf;
    mh.msg_controllen = sizeof(u.buf);
    n = RETRY_EINTR(recvmsg(fd, &mh, MSG_CMSG_CLOEXEC | MSG_DONTWAIT));
    if (n < 0)
        return -errno;
    for (c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
            int k = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
            int got[SV_CTL_MAX_FDS * 2];

            if (k > (int)(sizeof(got) / sizeof(got[0])))
                k = (int)(sizeof(got) / sizeof(got[0]));
            memcpy(got, CMSG_DATA(c), sizeof(int) * (size_t)k);
            for (int i = 0; i < k; i++) {
                if (*nfds < SV_CTL_MAX_FDS)
                    fds[(*nfds)++] = got[i];
                else
                    close(got[i]);
            }
        }
    }
    if (n == 0)
        return 0;
    if (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) {
        for (int i = 0; i < *nfds; i++)
            close(fds[i]);
        *nfds = 0;
        return -EMSGSIZE;
    }
    msg[n] = '\0';
    return (int)n;
}
