#ifndef CSHIM_H
#define CSHIM_H
/* Only what Swift cannot do itself (see shared/reference/swift-notes.md). */
#include <stdint.h>

/* Pins the calling thread to one CPU; returns 0 or an errno value. */
int cshim_pin_current_thread(int cpu);
/* Number of CPUs this process may run on. */
int cshim_allowed_cpus(void);

/* Volatile MMIO accessors: plain Swift loads and stores of device registers may be merged
 * or deleted by the optimiser (swift-notes section 2), these never are. Each is one access
 * of exactly the named width, as the virtio PCI access-width rules require. */
static inline uint8_t cshim_mmio_read8(const void *p) { return *(const volatile uint8_t *)p; }
static inline uint16_t cshim_mmio_read16(const void *p) { return *(const volatile uint16_t *)p; }
static inline uint32_t cshim_mmio_read32(const void *p) { return *(const volatile uint32_t *)p; }
static inline void cshim_mmio_write8(void *p, uint8_t v) { *(volatile uint8_t *)p = v; }
static inline void cshim_mmio_write16(void *p, uint16_t v) { *(volatile uint16_t *)p = v; }
static inline void cshim_mmio_write32(void *p, uint32_t v) { *(volatile uint32_t *)p = v; }

/* eventfd(2): not exported by Swift's Glibc module. Returns the fd or -1 with errno set. */
int cshim_eventfd(unsigned int initval, int nonblocking);

#endif
