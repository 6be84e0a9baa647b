#define _GNU_SOURCE 1
#include "cshim.h"
#include <pthread.h>
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
