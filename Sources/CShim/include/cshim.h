#ifndef CSHIM_H
#define CSHIM_H
/* Only what Swift cannot do itself (see shared/reference/swift-notes.md). */
#include <stddef.h>
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

/* Device-grade memory barriers, as Linux has them for VIRTIO_F_ORDER_PLATFORM (virtio_rmb/wmb/mb
 * with weak_barriers off, and writel's barrier before a doorbell). On x86-64 Linux's dma_rmb and
 * dma_wmb are compiler barriers and mb() is MFENCE: exactly what Swift's acquire loads, release
 * stores and sequentially consistent fences compile to, so the ring keeps those there. On aarch64
 * they are DMB OSHLD / DMB OSHST / DSB SY, stronger than the inner-shareable DMB ISH that Swift's
 * atomics give, so the ring calls these. Compiled only where defined: CSHIM_DEVICE_BARRIERS says. */
#if defined(__aarch64__)
#define CSHIM_DEVICE_BARRIERS 1
static inline void cshim_dma_rmb(void) { __asm__ __volatile__("dmb oshld" ::: "memory"); }
static inline void cshim_dma_wmb(void) { __asm__ __volatile__("dmb oshst" ::: "memory"); }
static inline void cshim_mb(void) { __asm__ __volatile__("dsb sy" ::: "memory"); }
/* writel's __iowmb: ring memory before the doorbell store. */
static inline void cshim_doorbell_barrier(void) { __asm__ __volatile__("dmb oshst" ::: "memory"); }
#elif defined(__x86_64__)
#define CSHIM_DEVICE_BARRIERS 1
static inline void cshim_dma_rmb(void) { __asm__ __volatile__("" ::: "memory"); }
static inline void cshim_dma_wmb(void) { __asm__ __volatile__("" ::: "memory"); }
static inline void cshim_mb(void) { __asm__ __volatile__("mfence" ::: "memory"); }
/* x86 keeps stores in order, to UC MMIO too: writel needs only the compiler barrier. */
static inline void cshim_doorbell_barrier(void) { __asm__ __volatile__("" ::: "memory"); }
#else
#define CSHIM_DEVICE_BARRIERS 0
static inline void cshim_doorbell_barrier(void) { __sync_synchronize(); }
#endif

/* eventfd(2): not exported by Swift's Glibc module. Returns the fd or -1 with errno set. */
int cshim_eventfd(unsigned int initval, int nonblocking);

/* VFIO: structs and plain constants import from <linux/vfio.h>; the ioctl numbers are
 * function-like macros, which do not, so they are re-exported as constants. */
#include <linux/vfio.h>
static const unsigned long CSHIM_VFIO_GET_API_VERSION = VFIO_GET_API_VERSION;
static const unsigned long CSHIM_VFIO_CHECK_EXTENSION = VFIO_CHECK_EXTENSION;
static const unsigned long CSHIM_VFIO_SET_IOMMU = VFIO_SET_IOMMU;
static const unsigned long CSHIM_VFIO_GROUP_GET_STATUS = VFIO_GROUP_GET_STATUS;
static const unsigned long CSHIM_VFIO_GROUP_SET_CONTAINER = VFIO_GROUP_SET_CONTAINER;
static const unsigned long CSHIM_VFIO_GROUP_UNSET_CONTAINER = VFIO_GROUP_UNSET_CONTAINER;
static const unsigned long CSHIM_VFIO_GROUP_GET_DEVICE_FD = VFIO_GROUP_GET_DEVICE_FD;
static const unsigned long CSHIM_VFIO_DEVICE_GET_INFO = VFIO_DEVICE_GET_INFO;
static const unsigned long CSHIM_VFIO_DEVICE_GET_REGION_INFO = VFIO_DEVICE_GET_REGION_INFO;
static const unsigned long CSHIM_VFIO_DEVICE_GET_IRQ_INFO = VFIO_DEVICE_GET_IRQ_INFO;
static const unsigned long CSHIM_VFIO_DEVICE_RESET = VFIO_DEVICE_RESET;
static const unsigned long CSHIM_VFIO_IOMMU_GET_INFO = VFIO_IOMMU_GET_INFO;
static const unsigned long CSHIM_VFIO_IOMMU_MAP_DMA = VFIO_IOMMU_MAP_DMA;
static const unsigned long CSHIM_VFIO_IOMMU_UNMAP_DMA = VFIO_IOMMU_UNMAP_DMA;

/* VFIO_DEVICE_SET_IRQS with eventfds (a variable-length struct): binds fds[0..count) to
 * vectors start.. of irq index `index`; count 0 disables the index. Returns 0 or -errno. */
int cshim_vfio_set_irq_eventfds(int device, unsigned int index, unsigned int start, unsigned int count,
                                const int32_t *fds);

/* memfd_create(2) with MFD_CLOEXEC (GNU-gated in Swift's Glibc). */
int cshim_memfd_create(const char *name);

/* Stream-socket messages with file descriptors (SCM_RIGHTS; the CMSG_* macros do not import). */
#define CSHIM_MAX_FDS 16
/* Sending gives up with -ETIMEDOUT when the peer takes no data for timeout_ms in all (-1: never). */
long cshim_send_with_fds(int sock, const void *buf, size_t len, const int32_t *fds, int nfds, int timeout_ms);
long cshim_recv_with_fds(int sock, void *buf, size_t len, int32_t *fds, int maxfds, int *nfds);

/// Names the calling thread (prctl PR_SET_NAME, 15 characters): shows in /proc and in debuggers,
/// and lets tests find threads this project started. prctl is variadic, so Swift cannot call it.
void cshim_name_thread(const char *name);

#endif
