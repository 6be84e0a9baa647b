#include "ringbaseline.h"
#include "ringalgos.h"
#include "ringturns.h"
#include <stdlib.h>
#include <string.h>

/* The same turns with the queue state where a driver and a device keep it: in heap structs
 * reached through pointers the compiler cannot see through (so fields are loaded and stored
 * around the ring accesses, as VirtioRing's are), and the popped chain kept in a buffer. */
long rb_run_single_heap(int packed, int in_order, int n, long buffers, int burst) {
    size_t bytes = (size_t)n * 24 + 4096;
    uint8_t *ring = aligned_alloc(4096, (bytes + 4095) & ~(size_t)4095);
    slot_t *slots = calloc((size_t)n, sizeof(slot_t));
    elem_t *scratch = calloc(MAX_CHAIN, sizeof(elem_t));
    pdrv *pd = malloc(sizeof *pd); pdev *pv = malloc(sizeof *pv);
    sdrv *sd = malloc(sizeof *sd); sdev *sv = malloc(sizeof *sv);
    long sent = 0, got = 0, events = 0, failed = 0; uint32_t len; uint64_t w; uint16_t descs;
    const uint64_t data = 0x100000000ull;
    if (!ring || !slots || !scratch || !pd || !pv || !sd || !sv) { failed = 1; goto out; }
    memset(ring, 0, bytes);
    if (packed) {
        *pd = (pdrv){ .n = n, .in_order = in_order, .desc = ring, .drv_event = ring + 16 * n, .dev_event = ring + 16 * n + 4,
                      .slots = slots, .avail_wrap = 1, .used_wrap = 1, .num_free = n };
        *pv = (pdev){ .n = n, .desc = ring, .drv_event = ring + 16 * n, .dev_event = ring + 16 * n + 4, .avail_wrap = 1, .used_wrap = 1 };
        for (int i = 0; i < n; i++) slots[i].next = (uint16_t)(i + 1 == n ? 0 : i + 1);
        st16_rel(pd->drv_event + 2, 1); st16_rel(pv->dev_event + 2, 1);
        RB_ESCAPE(pd); RB_ESCAPE(pv); RB_ESCAPE(scratch);
        RUN_PACKED(pd, pv, scratch);
    } else {
        *sd = (sdrv){ .n = n, .mask = (uint16_t)(n - 1), .in_order = in_order, .desc = ring, .avail = ring + 16 * n,
                      .slots = slots, .num_free = n };
        sd->used = ring + ((16 * n + 6 + 2 * n + 3) & ~3);
        *sv = (sdev){ .n = n, .mask = (uint16_t)(n - 1), .desc = ring, .avail = ring + 16 * n, .used = sd->used };
        for (int i = 0; i < n; i++) slots[i].next = (uint16_t)((i + 1) & (n - 1));
        st16_rel(sd->avail, 1); st16_rel(sv->used, 1);
        RB_ESCAPE(sd); RB_ESCAPE(sv); RB_ESCAPE(scratch);
        RUN_SPLIT(sd, sv, scratch);
    }
    RB_ESCAPE(scratch);
out:
    free(ring); free(slots); free(scratch); free(pd); free(pv); free(sd); free(sv);
    (void)events;
    return failed ? -2 : got;
}
