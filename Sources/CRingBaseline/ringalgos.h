/* The ring algorithms of the C baseline (split and packed, driver and device side), shared by the
 * two-thread run (ringbaseline.c) and the single-thread run (ringsingle.c). */
#ifndef RINGALGOS_H
#define RINGALGOS_H
#include <stdint.h>
#include <stddef.h>

#define F_NEXT 1
#define F_WRITE 2
#define F_INDIRECT 4
#define F_AVAIL (1 << 7)
#define F_USED (1 << 15)

typedef struct { uint16_t next, count; uint32_t writable; } slot_t;
typedef struct { uint64_t addr; uint32_t len; uint8_t writable; } elem_t;
#define MAX_CHAIN 4

static inline uint16_t ld16_acq(void *p) { return __atomic_load_n((uint16_t *)p, __ATOMIC_ACQUIRE); }
static inline void st16_rel(void *p, uint16_t v) { __atomic_store_n((uint16_t *)p, v, __ATOMIC_RELEASE); }
static inline uint16_t ld16_rlx(void *p) { return __atomic_load_n((uint16_t *)p, __ATOMIC_RELAXED); }
static inline void mb(void) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
static inline int need_event(uint16_t e, uint16_t n, uint16_t o) { return (uint16_t)(n - e - 1) < (uint16_t)(n - o); }

/* ---------- split ---------- */
typedef struct {
    int n; uint16_t mask; int in_order;
    uint8_t *desc, *avail, *used;
    slot_t *slots;
    uint16_t free_head; int num_free;
    uint16_t avail_idx, notified, last_used, used_seen, oldest;
    int in_flight;
} sdrv;

static inline int sdrv_add(sdrv *q, uint64_t addr, uint32_t len, int writable) {
    if (q->num_free == 0) return -1;
    uint16_t head = q->free_head;
    uint16_t next = q->in_order ? (uint16_t)((head + 1) & q->mask) : q->slots[head].next;
    uint8_t *d = q->desc + (size_t)head * 16;
    *(uint64_t *)d = addr; *(uint32_t *)(d + 8) = len;
    *(uint16_t *)(d + 12) = writable ? F_WRITE : 0; *(uint16_t *)(d + 14) = next;
    q->free_head = next;
    q->num_free -= 1;
    q->slots[head].count = 1; q->slots[head].writable = writable ? len : 0;
    *(uint16_t *)(q->avail + 4 + 2 * (q->avail_idx & q->mask)) = head;
    q->avail_idx++;
    st16_rel(q->avail + 2, q->avail_idx);
    q->in_flight++;
    return head;
}

static inline int sdrv_kick(sdrv *q) {
    uint16_t old = q->notified, nw = q->avail_idx;
    q->notified = nw;
    if (old == nw) return 0;
    mb();
    return (ld16_rlx(q->used) & 1) == 0; /* no EVENT_IDX in the bench: VRING_USED_F_NO_NOTIFY */
}

static inline void sdrv_retire(sdrv *q, uint16_t head) {
    uint16_t count = q->slots[head].count;
    q->slots[head].count = 0;
    q->num_free += count; q->in_flight--;
    if (q->in_order) { q->oldest = (uint16_t)((head + count) & q->mask); }
    else {
        uint16_t last = head;
        for (uint16_t k = 1; k < count; k++) last = q->slots[last].next;
        q->slots[last].next = q->free_head; q->free_head = head;
    }
}

/* Returns token, -1 for none, -2 for a device error. */
static inline int sdrv_poll(sdrv *q, uint32_t *len) {
    if (q->last_used == q->used_seen) {
        uint16_t idx = ld16_acq(q->used + 2);
        if (idx == q->last_used) return -1;
        if ((int)(uint16_t)(idx - q->last_used) > q->in_flight) return -2;
        q->used_seen = idx;
    }
    uint8_t *e = q->used + 4 + 8 * (q->last_used & q->mask);
    uint32_t id = *(uint32_t *)e, l = *(uint32_t *)(e + 4);
    if (id >= (uint32_t)q->n) return -2;
    slot_t s = q->slots[id];
    if (s.count == 0 || l > s.writable) return -2;
    if (q->in_order && id != q->oldest) return -2; /* the bench device never batches */
    q->last_used++;
    sdrv_retire(q, (uint16_t)id);
    *len = l;
    return (int)id;
}

typedef struct {
    int n; uint16_t mask;
    uint8_t *desc, *avail, *used;
    uint16_t last_avail, avail_seen, used_idx, signalled;
} sdev;

/* Pops one chain; returns its head, -1 for none, -2 for a driver error. */
static inline int sdev_pop(sdev *q, elem_t *out, uint64_t *wlen) {
    if (q->last_avail == q->avail_seen) {
        uint16_t idx = ld16_acq(q->avail + 2);
        if (idx == q->last_avail) return -1;
        if ((int)(uint16_t)(idx - q->last_avail) > q->n) return -2;
        q->avail_seen = idx;
    }
    uint16_t head = *(uint16_t *)(q->avail + 4 + 2 * (q->last_avail & q->mask));
    if (head >= q->n) return -2;
    q->last_avail++;
    uint16_t i = head; int count = 0, readable = 0; uint64_t total = 0, w = 0;
    for (;;) {
        if (++count > q->n) return -2;
        uint8_t *d = q->desc + (size_t)i * 16;
        uint32_t len = *(uint32_t *)(d + 8); uint16_t flags = *(uint16_t *)(d + 12);
        if (flags & F_INDIRECT) return -2;
        if (count > MAX_CHAIN) return -2;
        out[count - 1] = (elem_t){ *(uint64_t *)d, len, (flags & F_WRITE) != 0 };
        if (flags & F_WRITE) w += len; else { if (readable != count - 1) return -2; readable++; }
        total += len; if (total > (1ull << 32)) return -2;
        if (!(flags & F_NEXT)) break;
        i = *(uint16_t *)(d + 14); if (i >= q->n) return -2;
    }
    *wlen = w;
    return head;
}

static inline void sdev_push(sdev *q, uint16_t id, uint32_t len) {
    uint8_t *e = q->used + 4 + 8 * (q->used_idx & q->mask);
    *(uint32_t *)e = id; *(uint32_t *)(e + 4) = len;
    q->used_idx++;
    st16_rel(q->used + 2, q->used_idx);
}

static inline int sdev_interrupt(sdev *q) {
    uint16_t old = q->signalled, nw = q->used_idx;
    q->signalled = nw;
    if (old == nw) return 0;
    mb();
    return (ld16_rlx(q->avail) & 1) == 0; /* no EVENT_IDX in the bench: VRING_AVAIL_F_NO_INTERRUPT */
}

/* ---------- packed ---------- */
typedef struct {
    int n; int in_order;
    uint8_t *desc, *drv_event, *dev_event;
    slot_t *slots;
    uint16_t next_avail, next_used, free_id; int avail_wrap, used_wrap;
    int num_free, in_flight, added;
} pdrv;

static inline int pdrv_add(pdrv *q, uint64_t addr, uint32_t len, int writable) {
    if (q->num_free == 0) return -1;
    uint16_t id;
    if (q->in_order) id = q->next_avail; else { id = q->free_id; q->free_id = q->slots[id].next; }
    uint16_t head = q->next_avail;
    uint8_t *d = q->desc + (size_t)head * 16;
    *(uint64_t *)d = addr; *(uint32_t *)(d + 8) = len; *(uint16_t *)(d + 12) = id;
    uint16_t flags = (q->avail_wrap ? F_AVAIL : F_USED) | (writable ? F_WRITE : 0);
    q->slots[id].count = 1; q->slots[id].writable = writable ? len : 0;
    if (++q->next_avail == q->n) { q->next_avail = 0; q->avail_wrap ^= 1; }
    q->num_free--; q->added++; q->in_flight++;
    st16_rel(d + 14, flags);
    return id;
}

static inline int pdrv_kick(pdrv *q) {
    int added = q->added; q->added = 0;
    if (!added) return 0;
    mb();
    uint32_t snap = __atomic_load_n((uint32_t *)q->dev_event, __ATOMIC_RELAXED);
    uint16_t flags = (snap >> 16) & 3;
    if (flags != 2) return flags != 1;
    if (added >= q->n) return 1;
    uint16_t off = (uint16_t)snap, ev = off & 0x7fff;
    if (((off & 0x8000) != 0) != q->avail_wrap) ev -= q->n;
    return need_event(ev, q->next_avail, (uint16_t)(q->next_avail - added));
}

static inline int pdrv_poll(pdrv *q, uint32_t *len) {
    if (q->in_flight == 0) return -1;
    uint8_t *d = q->desc + (size_t)q->next_used * 16;
    uint16_t flags = ld16_acq(d + 14);
    int a = (flags & F_AVAIL) != 0, u = (flags & F_USED) != 0;
    if (u != q->used_wrap || a != q->used_wrap) {
        if (a == q->used_wrap && u != q->used_wrap) return -1;
        return -2;
    }
    uint16_t id = *(uint16_t *)(d + 12);
    if (id >= q->n) return -2;
    slot_t s = q->slots[id];
    if (s.count == 0) return -2;
    uint32_t l = (flags & F_WRITE) ? *(uint32_t *)(d + 8) : 0;
    if (l > s.writable) return -2;
    if (q->in_order && id != q->next_used) return -2; /* the bench device never batches */
    q->slots[id].count = 0;
    uint16_t pos = q->next_used + s.count;
    if (pos >= q->n) { pos -= q->n; q->used_wrap ^= 1; }
    q->next_used = pos;
    q->num_free += s.count; q->in_flight--;
    if (!q->in_order) { q->slots[id].next = q->free_id; q->free_id = id; }
    *len = l;
    return id;
}

typedef struct {
    int n;
    uint8_t *desc, *drv_event, *dev_event;
    uint16_t next_avail, next_used; int avail_wrap, used_wrap, used_since;
} pdev;

static inline int pavailable(uint16_t f, int wrap) { return ((f & F_AVAIL) != 0) == wrap && ((f & F_USED) != 0) != wrap; }

/* Pops one chain; returns its buffer id, -1 for none, -2 for a driver error. */
static inline int pdev_pop(pdev *q, elem_t *out, uint64_t *wlen, uint16_t *descs) {
    uint16_t flags = ld16_acq(q->desc + (size_t)q->next_avail * 16 + 14);
    if (!pavailable(flags, q->avail_wrap)) return -1;
    uint16_t pos = q->next_avail, id = 0; int wrap = q->avail_wrap, count = 0, readable = 0;
    uint64_t total = 0, w = 0;
    for (;;) {
        if (++count > q->n) return -2;
        uint8_t *d = q->desc + (size_t)pos * 16;
        if (count > 1) { flags = *(uint16_t *)(d + 14); if (!pavailable(flags, wrap)) return -2; }
        uint32_t len = *(uint32_t *)(d + 8);
        id = *(uint16_t *)(d + 12);
        if (flags & F_INDIRECT) return -2;
        if (count > MAX_CHAIN) return -2;
        out[count - 1] = (elem_t){ *(uint64_t *)d, len, (flags & F_WRITE) != 0 };
        if (flags & F_WRITE) w += len; else { if (readable != count - 1) return -2; readable++; }
        total += len; if (total > (1ull << 32)) return -2;
        if (++pos == q->n) { pos = 0; wrap ^= 1; }
        if (!(flags & F_NEXT)) break;
    }
    q->next_avail = pos; q->avail_wrap = wrap;
    *wlen = w; *descs = (uint16_t)count;
    return id;
}

static inline void pdev_push(pdev *q, uint16_t id, uint32_t len, uint16_t descs) {
    uint8_t *d = q->desc + (size_t)q->next_used * 16;
    *(uint16_t *)(d + 12) = id; *(uint32_t *)(d + 8) = len;
    uint16_t flags = (q->used_wrap ? (F_AVAIL | F_USED) : 0) | (len ? F_WRITE : 0);
    st16_rel(d + 14, flags);
    int pos = q->next_used + descs;
    while (pos >= q->n) { pos -= q->n; q->used_wrap ^= 1; }
    q->next_used = (uint16_t)pos;
    q->used_since += descs;
}

static inline int pdev_interrupt(pdev *q) {
    int added = q->used_since; q->used_since = 0;
    if (!added) return 0;
    mb();
    uint32_t snap = __atomic_load_n((uint32_t *)q->drv_event, __ATOMIC_RELAXED);
    uint16_t flags = (snap >> 16) & 3;
    return flags != 1; /* the bench runs without EVENT_IDX in poll mode */
}

#endif
