#define _GNU_SOURCE 1
#include "ringbaseline.h"
#include "ringalgos.h"
#include "rbpin.h"
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---------- the two-thread run ---------- */
typedef struct {
    int packed, in_order, n, driver_cpu, device_cpu; long buffers;
    uint8_t *ring; uint64_t data_addr;
    _Atomic int ready; _Atomic int failed;
    long notifies, interrupts;
} run_t;

static void *driver_main(void *arg) {
    run_t *r = arg;
    rb_pin(r->driver_cpu);
    slot_t *slots = calloc((size_t)r->n, sizeof(slot_t));
    long sent = 0, got = 0, notifies = 0; uint32_t len;
    if (r->packed) {
        pdrv q = { .n = r->n, .in_order = r->in_order, .desc = r->ring, .drv_event = r->ring + 16 * r->n,
                   .dev_event = r->ring + 16 * r->n + 4, .slots = slots, .avail_wrap = 1, .used_wrap = 1, .num_free = r->n };
        for (int i = 0; i < r->n; i++) slots[i].next = (uint16_t)(i + 1 == r->n ? 0 : i + 1);
        st16_rel(q.drv_event + 2, 1); /* poll mode: used-buffer notifications off */
        atomic_store(&r->ready, 1);
        while (got < r->buffers) {
            while (sent < r->buffers && pdrv_add(&q, r->data_addr, 64, 1) >= 0) sent++;
            notifies += pdrv_kick(&q);
            int t;
            while ((t = pdrv_poll(&q, &len)) >= 0) got++;
            if (t == -2) { atomic_store(&r->failed, 1); break; }
        }
    } else {
        sdrv q = { .n = r->n, .mask = (uint16_t)(r->n - 1), .in_order = r->in_order, .desc = r->ring,
                   .avail = r->ring + 16 * r->n, .slots = slots, .num_free = r->n };
        q.used = r->ring + ((16 * r->n + 6 + 2 * r->n + 3) & ~3);
        for (int i = 0; i < r->n; i++) slots[i].next = (uint16_t)((i + 1) & (r->n - 1));
        st16_rel(q.avail, 1); /* poll mode: VRING_AVAIL_F_NO_INTERRUPT */
        atomic_store(&r->ready, 1);
        while (got < r->buffers) {
            while (sent < r->buffers && sdrv_add(&q, r->data_addr, 64, 1) >= 0) sent++;
            notifies += sdrv_kick(&q);
            int t;
            while ((t = sdrv_poll(&q, &len)) >= 0) got++;
            if (t == -2) { atomic_store(&r->failed, 1); break; }
        }
    }
    r->notifies = notifies;
    free(slots);
    return NULL;
}

static void *device_main(void *arg) {
    run_t *r = arg;
    rb_pin(r->device_cpu);
    while (!atomic_load(&r->ready)) {}
    long done = 0, interrupts = 0; uint64_t w; uint16_t descs; elem_t scratch[MAX_CHAIN];
    if (r->packed) {
        pdev q = { .n = r->n, .desc = r->ring, .drv_event = r->ring + 16 * r->n, .dev_event = r->ring + 16 * r->n + 4,
                   .avail_wrap = 1, .used_wrap = 1 };
        st16_rel(q.dev_event + 2, 1); /* poll mode: available-buffer notifications off */
        while (done < r->buffers && !atomic_load_explicit(&r->failed, memory_order_relaxed)) {
            int id;
            while ((id = pdev_pop(&q, scratch, &w, &descs)) >= 0) { pdev_push(&q, (uint16_t)id, (uint32_t)w, descs); done++; }
            if (id == -2) { atomic_store(&r->failed, 1); break; }
            interrupts += pdev_interrupt(&q);
        }
    } else {
        sdev q = { .n = r->n, .mask = (uint16_t)(r->n - 1), .desc = r->ring, .avail = r->ring + 16 * r->n };
        q.used = r->ring + ((16 * r->n + 6 + 2 * r->n + 3) & ~3);
        st16_rel(q.used, 1); /* poll mode: VRING_USED_F_NO_NOTIFY */
        while (done < r->buffers && !atomic_load_explicit(&r->failed, memory_order_relaxed)) {
            int id;
            while ((id = sdev_pop(&q, scratch, &w)) >= 0) { sdev_push(&q, (uint16_t)id, (uint32_t)w); done++; }
            if (id == -2) { atomic_store(&r->failed, 1); break; }
            interrupts += sdev_interrupt(&q);
        }
    }
    r->interrupts = interrupts;
    return NULL;
}

double rb_run(int packed, int in_order, int queue_size, long buffers, int driver_cpu, int device_cpu) {
    size_t bytes = (size_t)queue_size * 24 + 4096;
    uint8_t *ring = aligned_alloc(4096, (bytes + 4095) & ~(size_t)4095);
    if (!ring) return -1;
    memset(ring, 0, bytes);
    run_t r = { .packed = packed, .in_order = in_order, .n = queue_size, .buffers = buffers,
                .driver_cpu = driver_cpu, .device_cpu = device_cpu, .ring = ring, .data_addr = 0x100000000ull };
    pthread_t dev, drv;
    struct timespec t0, t1;
    /* The driver zeroes nothing more: the ring above is already zero, as the Swift driver leaves it. */
    pthread_create(&dev, NULL, device_main, &r);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    pthread_create(&drv, NULL, driver_main, &r);
    pthread_join(drv, NULL);
    pthread_join(dev, NULL);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    free(ring);
    if (atomic_load(&r.failed)) return -2;
    return ((double)(t1.tv_sec - t0.tv_sec) * 1e9 + (double)(t1.tv_nsec - t0.tv_nsec)) / (double)buffers;
}
