#define _GNU_SOURCE 1
#include "ringbaseline.h"
#include "rbpin.h"
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <time.h>

/* Core-to-core latency: two pinned threads bounce one counter in one cache line. What this VM's
 * vCPUs cost to talk to each other at the moment of a benchmark round (it jumps between modes). */
typedef struct {
    _Alignas(64) _Atomic long turn;
    _Alignas(64) long rounds; int cpu;
} probe_t;

static void *responder(void *arg) {
    probe_t *p = arg;
    rb_pin(p->cpu);
    /* Odd values are ours to answer; every wait is bounded by the initiator's count. */
    for (long i = 0; i < p->rounds; i++) {
        long want = 2 * i + 1;
        while (atomic_load_explicit(&p->turn, memory_order_acquire) != want) { }
        atomic_store_explicit(&p->turn, want + 1, memory_order_release);
    }
    return NULL;
}

double rb_latency_probe(int cpu_a, int cpu_b, long rounds) {
    static probe_t p;
    atomic_store(&p.turn, 0);
    p.rounds = rounds; p.cpu = cpu_b;
    pthread_t t;
    if (pthread_create(&t, NULL, responder, &p) != 0) return -1;
    rb_pin(cpu_a);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (long i = 0; i < rounds; i++) {
        atomic_store_explicit(&p.turn, 2 * i + 1, memory_order_release);
        while (atomic_load_explicit(&p.turn, memory_order_acquire) != 2 * i + 2) { }
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    pthread_join(t, NULL);
    return ((t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec)) / (double)rounds;
}
