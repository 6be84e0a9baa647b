#ifndef RINGBASELINE_H
#define RINGBASELINE_H
#include <stdint.h>

/* The C baseline for ring-bench: the same split and packed algorithms as VirtioRing
 * (driver add/poll with the same hardening checks, device pop/push with the same
 * validation), one-descriptor buffers, run on two pinned threads. Returns ns/buffer,
 * or a negative value on a ring error. */
double rb_run(int packed, int in_order, int queue_size, long buffers, int driver_cpu, int device_cpu);

/* The same work in one thread, both sides in turn (bursts of `burst`): for instruction counts
 * (callgrind), which repeat exactly. Returns the buffers reaped, or a negative value on an error. */
long rb_run_single(int packed, int in_order, int queue_size, long buffers, int burst);
/* The same, with the queue state in heap structs reached through pointers and the popped chain
 * kept (as a driver and a device have them), where rb_run_single's locals live in registers. */
long rb_run_single_heap(int packed, int in_order, int queue_size, long buffers, int burst);

/* Core-to-core round trip in ns: two threads pinned to cpu_a and cpu_b bounce one cache line
 * `rounds` times (what the benchmarks record next to each round). Negative on failure. */
double rb_latency_probe(int cpu_a, int cpu_b, long rounds);

#endif
