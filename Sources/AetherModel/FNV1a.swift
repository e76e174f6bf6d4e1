/// FNV-1a, 64 bits: the one hash of names for tree page boundaries (part of the format: never change),
/// readdir cookies and the inode numbers of snapshot views.
public struct FNV1a: Sendable {
    @usableFromInline var state: UInt64 = 0xcbf2_9ce4_8422_2325
    /// The hash of what was added so far.
    public var value: UInt64 { state }

    @inlinable public init() {}

    @inlinable public mutating func add(_ byte: UInt8) { state = (state ^ UInt64(byte)) &* 0x100_0000_01b3 }

    @inlinable public mutating func add(_ bytes: [UInt8]) { for b in bytes { add(b) } }

    @inlinable public static func hash(_ bytes: [UInt8]) -> UInt64 {
        var h = FNV1a()
        h.add(bytes)
        return h.value
    }
}
