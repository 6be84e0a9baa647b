/* Pins the calling thread to one CPU (the benchmarks' two threads sit on CPUs 0 and 1).
 * Include after defining _GNU_SOURCE. */
#ifndef RBPIN_H
#define RBPIN_H
#include <pthread.h>
#include <sched.h>

static inline void rb_pin(int cpu) {
    cpu_set_t s; CPU_ZERO(&s); CPU_SET(cpu, &s);
    pthread_setaffinity_np(pthread_self(), sizeof s, &s);
}
#endif
