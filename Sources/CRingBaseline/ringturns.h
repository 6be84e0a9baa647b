#ifndef RINGTURNS_H
#define RINGTURNS_H

/* The turns both entry points run, over queue pointers D and V (macros: rb_run_single's
 * expansion is over locals, which the compiler keeps in registers; rb_run_single_heap's over pointers). */
#define RUN_PACKED(D, V, SCRATCH) \
        while (got < buffers && !failed) { \
            for (int k = 0; k < burst && sent < buffers && pdrv_add(D, data, 64, 1) >= 0; k++) sent++; \
            events += pdrv_kick(D); \
            int id; \
            while ((id = pdev_pop(V, SCRATCH, &w, &descs)) >= 0) pdev_push(V, (uint16_t)id, (uint32_t)w, descs); \
            if (id == -2) failed = 1; \
            events += pdev_interrupt(V); \
            int t; \
            while ((t = pdrv_poll(D, &len)) >= 0) got++; \
            if (t == -2) failed = 1; \
        }
#define RUN_SPLIT(D, V, SCRATCH) \
        while (got < buffers && !failed) { \
            for (int k = 0; k < burst && sent < buffers && sdrv_add(D, data, 64, 1) >= 0; k++) sent++; \
            events += sdrv_kick(D); \
            int id; \
            while ((id = sdev_pop(V, SCRATCH, &w)) >= 0) sdev_push(V, (uint16_t)id, (uint32_t)w); \
            if (id == -2) failed = 1; \
            events += sdev_interrupt(V); \
            int t; \
            while ((t = sdrv_poll(D, &len)) >= 0) got++; \
            if (t == -2) failed = 1; \
        }

/* Keeps `p` and what it points to real: the compiler must assume the pointee is read here. */
#define RB_ESCAPE(p) __asm__ volatile("" : : "r"(p) : "memory")

#endif
