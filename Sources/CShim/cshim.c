#define _GNU_SOURCE 1
#include "cshim.h"
#include <pthread.h>
#include <sys/prctl.h>
#include <sched.h>

int cshim_pin_current_thread(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

int cshim_allowed_cpus(void) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) != 0) return 1;
    return CPU_COUNT(&set);
}

#include <sys/eventfd.h>

int cshim_eventfd(unsigned int initval, int nonblocking) {
    return eventfd(initval, EFD_CLOEXEC | (nonblocking ? EFD_NONBLOCK : 0));
}

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

int cshim_vfio_set_irq_eventfds(int device, unsigned int index, unsigned int start, unsigned int count,
                                const int32_t *fds) {
    size_t size = sizeof(struct vfio_irq_set) + (size_t)count * sizeof(int32_t);
    struct vfio_irq_set *set = calloc(1, size);
    if (!set) return -ENOMEM;
    set->argsz = (uint32_t)size;
    set->flags = count ? (VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER)
                       : (VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER);
    set->index = index;
    set->start = start;
    set->count = count;
    if (count) memcpy(set->data, fds, count * sizeof(int32_t));
    int rc = ioctl(device, VFIO_DEVICE_SET_IRQS, set) == 0 ? 0 : -errno;
    free(set);
    return rc;
}

#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

int cshim_memfd_create(const char *name) { return memfd_create(name, MFD_CLOEXEC); }

#include <poll.h>
#include <time.h>

static int64_t monotonic_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* sendmsg with up to CSHIM_MAX_FDS descriptors as SCM_RIGHTS; the whole buffer or -errno.
 * Non-blocking sends with poll in between, so a peer that stops reading costs at most timeout_ms. */
long cshim_send_with_fds(int sock, const void *buf, size_t len, const int32_t *fds, int nfds, int timeout_ms) {
    if (nfds < 0 || nfds > CSHIM_MAX_FDS) return -EINVAL;
    int64_t deadline = timeout_ms < 0 ? -1 : monotonic_ms() + timeout_ms;
    union { char b[CMSG_SPACE(sizeof(int) * CSHIM_MAX_FDS)]; struct cmsghdr align; } control;
    size_t sent = 0;
    while (sent < len) {
        struct iovec iov = { .iov_base = (char *)buf + sent, .iov_len = len - sent };
        struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1 };
        if (sent == 0 && nfds > 0) {
            memset(&control, 0, sizeof control);
            m.msg_control = control.b;
            m.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
            struct cmsghdr *c = CMSG_FIRSTHDR(&m);
            c->cmsg_level = SOL_SOCKET;
            c->cmsg_type = SCM_RIGHTS;
            c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
            memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
        }
        ssize_t n = sendmsg(sock, &m, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK) return -errno;
            int wait = -1;
            if (deadline >= 0) {
                int64_t left = deadline - monotonic_ms();
                if (left <= 0) return -ETIMEDOUT;
                wait = (int)left;
            }
            struct pollfd p = { .fd = sock, .events = POLLOUT };
            if (poll(&p, 1, wait) < 0 && errno != EINTR) return -errno;
            continue;
        }
        sent += (size_t)n;
    }
    return (long)sent;
}

/* recvmsg of up to len bytes (at least 1 unless the peer closed: 0); descriptors that came with
 * them land in fds (close-on-exec), their number in *nfds; extra or truncated ones are closed and
 * reported as -EMSGSIZE. Returns bytes read or -errno. */
long cshim_recv_with_fds(int sock, void *buf, size_t len, int32_t *fds, int maxfds, int *nfds) {
    union { char b[CMSG_SPACE(sizeof(int) * CSHIM_MAX_FDS)]; struct cmsghdr align; } control;
    struct iovec iov = { .iov_base = buf, .iov_len = len };
    struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.b, .msg_controllen = sizeof control.b };
    *nfds = 0;
    ssize_t n;
    do { n = recvmsg(sock, &m, MSG_CMSG_CLOEXEC); } while (n < 0 && errno == EINTR);
    if (n < 0) return -errno;
    int overflow = (m.msg_flags & MSG_CTRUNC) != 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        int count = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
        int *in = (int *)CMSG_DATA(c);
        for (int i = 0; i < count; i++) {
            if (*nfds < maxfds) fds[(*nfds)++] = in[i];
            else { close(in[i]); overflow = 1; }
        }
    }
    if (overflow) {
        for (int i = 0; i < *nfds; i++) close(fds[i]);
        *nfds = 0;
        return -EMSGSIZE;
    }
    return (long)n;
}

void cshim_name_thread(const char *name) { prctl(PR_SET_NAME, name, 0, 0, 0); }
