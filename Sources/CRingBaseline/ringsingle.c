#include "ringbaseline.h"
#include "ringalgos.h"
#include <stdlib.h>
#include <string.h>
#include "ringturns.h"

/* One thread plays both sides in turn: the driver fills up to `burst` buffers, decides about
 * notifying, the device pops and returns everything available, decides about interrupting, the
 * driver reaps. Deterministic, so callgrind counts the same instructions every time. */
long rb_run_single(int packed, int in_order, int n, long buffers, int burst) {
    size_t bytes = (size_t)n * 24 + 4096;
    uint8_t *ring = aligned_alloc(4096, (bytes + 4095) & ~(size_t)4095);
    slot_t *slots = calloc((size_t)n, sizeof(slot_t));
    if (!ring || !slots) { free(ring); free(slots); return -1; }
    memset(ring, 0, bytes);
    long sent = 0, got = 0, events = 0, failed = 0; uint32_t len; uint64_t w; uint16_t descs; elem_t scratch[MAX_CHAIN];
    const uint64_t data = 0x100000000ull;
    if (packed) {
        pdrv d = { .n = n, .in_order = in_order, .desc = ring, .drv_event = ring + 16 * n, .dev_event = ring + 16 * n + 4,
                   .slots = slots, .avail_wrap = 1, .used_wrap = 1, .num_free = n };
        pdev v = { .n = n, .desc = ring, .drv_event = ring + 16 * n, .dev_event = ring + 16 * n + 4, .avail_wrap = 1, .used_wrap = 1 };
        for (int i = 0; i < n; i++) slots[i].next = (uint16_t)(i + 1 == n ? 0 : i + 1);
        st16_rel(d.drv_event + 2, 1); st16_rel(v.dev_event + 2, 1); /* poll mode both ways */
        RUN_PACKED(&d, &v, scratch);
    } else {
        sdrv d = { .n = n, .mask = (uint16_t)(n - 1), .in_order = in_order, .desc = ring, .avail = ring + 16 * n,
                   .slots = slots, .num_free = n };
        d.used = ring + ((16 * n + 6 + 2 * n + 3) & ~3);
        sdev v = { .n = n, .mask = (uint16_t)(n - 1), .desc = ring, .avail = ring + 16 * n, .used = d.used };
        for (int i = 0; i < n; i++) slots[i].next = (uint16_t)((i + 1) & (n - 1));
        st16_rel(d.avail, 1); st16_rel(v.used, 1); /* poll mode both ways */
        RUN_SPLIT(&d, &v, scratch);
    }
    free(ring); free(slots);
    (void)events;
    return failed ? -2 : got;
}
