#ifndef MALLOCCOUNT_H
#define MALLOCCOUNT_H
#include <stdint.h>
/* Heap allocations (malloc, calloc, realloc, aligned_alloc, posix_memalign, memalign) since start. */
uint64_t mc_count(void);
/* The same, counted for the calling thread only (immune to other threads' allocations). */
uint64_t mc_thread_count(void);
#endif
