/// Where a ring stands: the next descriptor to make (or find) available and the
/// next to use, with the packed wrap counters. Used to suspend and resume a queue.
///
/// Split rings need no wrap counters: `nextAvail` and `nextUsed` are the free-running
/// 16-bit avail and used indices. Packed rings hold ring offsets in 0..<N plus wrap counters.
public struct RingPosition: Sendable, Equatable, CustomStringConvertible {
    public var packed: Bool
    public var nextAvail: UInt16
    public var availWrap: Bool
    public var nextUsed: UInt16
    public var usedWrap: Bool

    public init(packed nextAvail: UInt16, availWrap: Bool, nextUsed: UInt16, usedWrap: Bool) {
        self.packed = true
        self.nextAvail = nextAvail
        self.availWrap = availWrap
        self.nextUsed = nextUsed
        self.usedWrap = usedWrap
    }

    public init(split nextAvail: UInt16, nextUsed: UInt16) {
        self.packed = false
        self.nextAvail = nextAvail
        self.availWrap = true
        self.nextUsed = nextUsed
        self.usedWrap = true
    }

    /// Seed 003 "available state": split `le16 last_avail_idx`; packed `le16 {last_avail_idx:15; wrap:1}`.
    public var availState: UInt16 {
        packed ? (nextAvail & 0x7fff) | (availWrap ? 0x8000 : 0) : nextAvail
    }

    /// Seed 003 "used state" (packed only; split keeps it in used.idx): `le16 {used_idx:15; wrap:1}`.
    public var usedState: UInt16 {
        packed ? (nextUsed & 0x7fff) | (usedWrap ? 0x8000 : 0) : nextUsed
    }

    /// From seed 003's two le16 states.
    public init(packed: Bool, availState: UInt16, usedState: UInt16) {
        if packed {
            self.init(packed: availState & 0x7fff, availWrap: availState & 0x8000 != 0,
                      nextUsed: usedState & 0x7fff, usedWrap: usedState & 0x8000 != 0)
        } else {
            self.init(split: availState, nextUsed: usedState)
        }
    }

    /// vhost VHOST_GET/SET_VRING_BASE `num`: split `last_avail_idx`;
    /// packed `(last_avail_idx | avail_wrap << 15) | (last_used_idx | used_wrap << 15) << 16`.
    public var vhostVringBase: UInt32 {
        packed ? UInt32(availState) | UInt32(usedState) << 16 : UInt32(nextAvail)
    }

    /// From a vhost VRING_BASE value; for split, `usedIndex` comes from used.idx in ring memory.
    public init(packed: Bool, vhostVringBase num: UInt32, usedIndex: UInt16 = 0) {
        if packed {
            self.init(packed: true, availState: UInt16(truncatingIfNeeded: num),
                      usedState: UInt16(truncatingIfNeeded: num >> 16))
        } else {
            self.init(split: UInt16(truncatingIfNeeded: num), nextUsed: usedIndex)
        }
    }

    public var description: String {
        packed ? "avail \(nextAvail)/wrap \(availWrap ? 1 : 0), used \(nextUsed)/wrap \(usedWrap ? 1 : 0)"
            : "avail idx \(nextAvail), used idx \(nextUsed)"
    }
}
