import CShim
import Synchronization

// Accessors for ring memory that the other side writes concurrently.
//
// Every multi-byte ring field is little-endian on the wire (virtio 1.x). The
// conversions below are free on x86-64 and arm64 but keep the code honest.
// Atomics are used for the fields the spec orders with barriers (indices,
// packed flags, event suppression); plain loads and stores are used for
// payload fields that are ordered by those atomics.

@usableFromInline
typealias SharedU16 = Atomic<UInt16>
@usableFromInline
typealias SharedU32 = Atomic<UInt32>

extension UnsafeMutableRawPointer {
    /// Acquire load of a little-endian u16 written by the other side (virtio_rmb after it: on
    /// aarch64 DMB OSHLD, device-grade; on x86-64 an acquire load is what Linux's dma_rmb gives).
    @inlinable @inline(__always)
    func loadAcquire16(at offset: Int) -> UInt16 {
        let p = UnsafePointer<SharedU16>((self + offset).assumingMemoryBound(to: SharedU16.self))
        #if arch(arm64)
        let v = p.pointee.load(ordering: .relaxed)
        cshim_dma_rmb()
        return UInt16(littleEndian: v)
        #else
        return UInt16(littleEndian: p.pointee.load(ordering: .acquiring))
        #endif
    }

    /// Relaxed load of a little-endian u16 (ordered by a surrounding fence).
    @inlinable @inline(__always)
    func loadRelaxed16(at offset: Int) -> UInt16 {
        let p = UnsafePointer<SharedU16>((self + offset).assumingMemoryBound(to: SharedU16.self))
        return UInt16(littleEndian: p.pointee.load(ordering: .relaxed))
    }

    /// Relaxed load of a little-endian u32 (ordered by a surrounding fence).
    @inlinable @inline(__always)
    func loadRelaxed32(at offset: Int) -> UInt32 {
        let p = UnsafePointer<SharedU32>((self + offset).assumingMemoryBound(to: SharedU32.self))
        return UInt32(littleEndian: p.pointee.load(ordering: .relaxed))
    }

    /// Release store of a little-endian u16 the other side will acquire (virtio_wmb before it:
    /// DMB OSHST on aarch64; on x86-64 a release store is what Linux's dma_wmb gives).
    @inlinable @inline(__always)
    func storeRelease16(_ value: UInt16, at offset: Int) {
        let p = UnsafePointer<SharedU16>((self + offset).assumingMemoryBound(to: SharedU16.self))
        #if arch(arm64)
        // DMB OSHST orders earlier stores for the device; the release store (STLR) still orders
        // earlier loads too (a buffer's data read before its slot is handed back).
        cshim_dma_wmb()
        p.pointee.store(value.littleEndian, ordering: .releasing)
        #else
        p.pointee.store(value.littleEndian, ordering: .releasing)
        #endif
    }

    /// Relaxed store of a little-endian u16 (ordered by a surrounding fence).
    @inlinable @inline(__always)
    func storeRelaxed16(_ value: UInt16, at offset: Int) {
        let p = UnsafePointer<SharedU16>((self + offset).assumingMemoryBound(to: SharedU16.self))
        p.pointee.store(value.littleEndian, ordering: .relaxed)
    }

    /// Plain little-endian field accessors for payload that an acquire/release pair orders.
    @inlinable @inline(__always)
    func loadLE<T: FixedWidthInteger>(at offset: Int, as: T.Type) -> T {
        T(littleEndian: self.loadUnaligned(fromByteOffset: offset, as: T.self))
    }

    @inlinable @inline(__always)
    func storeLE<T: FixedWidthInteger>(_ value: T, at offset: Int) {
        self.storeBytes(of: value.littleEndian, toByteOffset: offset, as: T.self)
    }
}

/// Full barrier (virtio_mb): orders our earlier stores before our later loads.
/// The spec requires it between publishing buffers and reading the other
/// side's event-suppression fields; release/acquire alone does not order
/// store-then-load.
/// Device-grade, as VIRTIO_F_ORDER_PLATFORM requires: MFENCE on x86-64 (Linux's mb()), DSB SY on aarch64.
@inlinable @inline(__always)
func fullBarrier() {
    #if arch(arm64)
    cshim_mb()
    #else
    atomicMemoryFence(ordering: .sequentiallyConsistent)
    #endif
}

/// Whether the ring's barriers are the ones hardware devices need (VIRTIO_F_ORDER_PLATFORM,
/// "Driver Requirements: Memory Barriers"): true where the C shim has device-grade helpers
/// (x86-64, aarch64). Elsewhere the driver does not accept bit 36.
public enum RingBarriers {
    public static let deviceGrade = CSHIM_DEVICE_BARRIERS != 0

    /// What the ring uses, for `info`.
    public static var summary: String {
        #if arch(x86_64)
        "device-grade (x86-64: acquire/release MOVs = Linux dma_rmb/dma_wmb, MFENCE = mb); ORDER_PLATFORM accepted"
        #elseif arch(arm64)
        "device-grade (aarch64: DMB OSHLD / DMB OSHST / DSB SY, DMB OSHST before doorbells); ORDER_PLATFORM accepted"
        #else
        "SMP-grade only on this architecture; VIRTIO_F_ORDER_PLATFORM is not accepted"
        #endif
    }
}

/// `vring_need_event`: true when moving an index from `old` to `new` passes `event`.
/// All arithmetic is modulo 2^16, as in the spec.
@inlinable @inline(__always)
public func vringNeedEvent(event: UInt16, new: UInt16, old: UInt16) -> Bool {
    (new &- event &- 1) < (new &- old)
}

/// Packed rings, both directions: whether the other side asked to hear of `added` new entries
/// ending at `new` (in the lap `wrap`), from a snapshot of its event suppression structure
/// (`packed-ring.tex` "Event Suppression Structure Format": flags in bits 16-17, desc_event_off
/// and its wrap bit in the low half; DESC mode counts only with EVENT_IDX).
@inlinable @inline(__always)
func packedWantsEvent(_ snapshot: UInt32, eventIndex: Bool, added: Int, queueSize: Int, new: UInt16, wrap: Bool) -> Bool {
    let flags = UInt16(truncatingIfNeeded: snapshot >> 16) & 0x3
    guard eventIndex, flags == PackedEventFlags.desc else { return flags != PackedEventFlags.disable }
    if added >= queueSize { return true }
    let offWrap = UInt16(truncatingIfNeeded: snapshot)
    var event = offWrap & 0x7fff
    // An event offset from the other lap lies one ring length back.
    if (offWrap & 0x8000 != 0) != wrap { event &-= UInt16(truncatingIfNeeded: queueSize) }
    return vringNeedEvent(event: event, new: new, old: new &- UInt16(truncatingIfNeeded: added))
}

/// Packed rings, both directions: asks the other side to stop sending notifications
/// (its event suppression flags = DISABLE).
@inlinable @inline(__always)
func packedDisableEvents(_ area: UnsafeMutableRawPointer) {
    area.storeRelaxed16(PackedEventFlags.disable, at: 2)
}

/// Packed rings, both directions: asks for notifications again, at `position`/`wrap` with
/// EVENT_IDX (DESC mode) or for every entry (ENABLE). The caller then runs a full barrier and
/// re-checks the ring: an entry that arrived before the other side saw the flags raised nothing.
@inlinable @inline(__always)
func packedEnableEvents(_ area: UnsafeMutableRawPointer, eventIndex: Bool, position: UInt16, wrap: Bool) {
    if eventIndex {
        area.storeRelaxed16(position | (wrap ? 0x8000 : 0), at: 0)
        // off_wrap must be visible before the flags that make the other side read it.
        area.storeRelease16(PackedEventFlags.desc, at: 2)
    } else {
        area.storeRelease16(PackedEventFlags.enable, at: 2)
    }
}

/// Split rings, both directions: suppresses (or re-requests) the other side's notifications in
/// the area we own, through its flags word or, with EVENT_IDX (flags then stay 0), the event index:
/// parked half the index space away to suppress, at `index` to re-request.
@inlinable @inline(__always)
func splitSetEvents(_ area: UnsafeMutableRawPointer, eventOffset: Int, eventIndex: Bool, suppress: Bool, index: UInt16,
                    flag: UInt16) {
    if eventIndex {
        area.storeRelaxed16(suppress ? index &+ 0x8000 : index, at: eventOffset)
    } else {
        area.storeRelaxed16(suppress ? flag : 0, at: 0)
    }
}

/// Split rings, both directions: whether the other side asked to hear that our index moved from
/// `old` to `new`, from the area it owns: its event index with EVENT_IDX, else its flags word
/// (`split-ring.tex` "Used Buffer Notification Suppression" and its driver-side twin).
@inlinable @inline(__always)
func splitWantsEvent(_ area: UnsafeMutableRawPointer, eventOffset: Int, eventIndex: Bool, flag: UInt16,
                     new: UInt16, old: UInt16) -> Bool {
    if eventIndex { return vringNeedEvent(event: area.loadRelaxed16(at: eventOffset), new: new, old: old) }
    return area.loadRelaxed16(at: 0) & flag == 0
}

