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

/* iommufd and the VFIO device cdev (Linux 6.2+/6.6+). Bookworm's 6.1 headers have neither
 * <linux/iommufd.h> nor the cdev ioctls, so the structs are declared here from the 6.12 uapi
 * (shared/reference/iommufd.md section 4) with their sizes asserted, and the numbers are
 * _IO(';', nr) = 0x3b00 | nr (section 3): no size bits to get wrong. */
struct cshim_iommu_ioas_alloc { uint32_t size, flags, out_ioas_id; };
struct cshim_iommu_iova_range { uint64_t start, last; };
struct cshim_iommu_ioas_iova_ranges {
    uint32_t size, ioas_id, num_iovas, reserved;
    uint64_t allowed_iovas, out_iova_alignment;
};
struct cshim_iommu_ioas_map { uint32_t size, flags, ioas_id, reserved; uint64_t user_va, length, iova; };
struct cshim_iommu_ioas_unmap { uint32_t size, ioas_id; uint64_t iova, length; };
struct cshim_iommu_destroy { uint32_t size, id; };
struct cshim_vfio_device_bind_iommufd { uint32_t argsz, flags; int32_t iommufd; uint32_t out_devid; };
struct cshim_vfio_device_attach_iommufd_pt { uint32_t argsz, flags, pt_id; };
struct cshim_vfio_device_detach_iommufd_pt { uint32_t argsz, flags; };
_Static_assert(sizeof(struct cshim_iommu_ioas_alloc) == 12, "iommu_ioas_alloc");
_Static_assert(sizeof(struct cshim_iommu_iova_range) == 16, "iommu_iova_range");
_Static_assert(sizeof(struct cshim_iommu_ioas_iova_ranges) == 32, "iommu_ioas_iova_ranges");
_Static_assert(sizeof(struct cshim_iommu_ioas_map) == 40, "iommu_ioas_map");
_Static_assert(sizeof(struct cshim_iommu_ioas_unmap) == 24, "iommu_ioas_unmap");
_Static_assert(sizeof(struct cshim_iommu_destroy) == 8, "iommu_destroy");
_Static_assert(sizeof(struct cshim_vfio_device_bind_iommufd) == 16, "vfio_device_bind_iommufd");
_Static_assert(sizeof(struct cshim_vfio_device_attach_iommufd_pt) == 12, "vfio_device_attach_iommufd_pt");
_Static_assert(sizeof(struct cshim_vfio_device_detach_iommufd_pt) == 8, "vfio_device_detach_iommufd_pt");
static const unsigned long CSHIM_IOMMU_DESTROY = 0x3b80;
static const unsigned long CSHIM_IOMMU_IOAS_ALLOC = 0x3b81;
static const unsigned long CSHIM_IOMMU_IOAS_IOVA_RANGES = 0x3b84;
static const unsigned long CSHIM_IOMMU_IOAS_MAP = 0x3b85;
static const unsigned long CSHIM_IOMMU_IOAS_UNMAP = 0x3b86;
static const unsigned long CSHIM_VFIO_DEVICE_BIND_IOMMUFD = 0x3b76;
static const unsigned long CSHIM_VFIO_DEVICE_ATTACH_IOMMUFD_PT = 0x3b77;
static const unsigned long CSHIM_VFIO_DEVICE_DETACH_IOMMUFD_PT = 0x3b78;
static const uint32_t CSHIM_IOMMU_IOAS_MAP_FIXED_IOVA = 1, CSHIM_IOMMU_IOAS_MAP_WRITEABLE = 2, CSHIM_IOMMU_IOAS_MAP_READABLE = 4;

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
