/* Interposes the glibc allocator entry points to count heap allocations. Linked into
 * ring-bench, virtioctl (blk bench reports allocations per request) and the tests; it only
 * counts, then calls glibc's allocator. glibc >= 2.34 has no malloc hooks, so the
 * exported __libc_* functions do the work. */
#include "malloccount.h"
#include <errno.h>
#include <stddef.h>
#include <stdatomic.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);

static _Atomic uint64_t count;
static _Thread_local uint64_t thread_count;

uint64_t mc_count(void) { return atomic_load_explicit(&count, memory_order_relaxed); }
uint64_t mc_thread_count(void) { return thread_count; }

static inline void bump(void) {
    atomic_fetch_add_explicit(&count, 1, memory_order_relaxed);
    thread_count++;
}

void *malloc(size_t n) { bump(); return __libc_malloc(n); }
void *calloc(size_t a, size_t b) { bump(); return __libc_calloc(a, b); }
void *realloc(void *p, size_t n) { bump(); return __libc_realloc(p, n); }
void *aligned_alloc(size_t al, size_t n) { bump(); return __libc_memalign(al, n); }
void *memalign(size_t al, size_t n) { bump(); return __libc_memalign(al, n); }
int posix_memalign(void **out, size_t al, size_t n) {
    bump();
    void *p = __libc_memalign(al, n);
    if (!p) return ENOMEM;
    *out = p;
    return 0;
}
