/// A POSIX access control list as Linux hands it to a file system with `FUSE_POSIX_ACL`: the value of
/// `system.posix_acl_access` (who may do what to a node) or `system.posix_acl_default` (what a new node
/// in a directory starts with). The kernel enforces them; the file system keeps them in step with the
/// mode (a chmod rewrites the owner, mask and other entries; an ACL sets the mode's permission bits) and
/// gives new nodes their parent's default ACL, as ext4 does.
///
/// Encoding (little-endian): a 4-byte version (2), then entries of tag (2 bytes), permissions (2) and
/// id (4, for named users and groups).
public struct PosixACL: Equatable, Sendable {
    public struct Entry: Equatable, Sendable {
        public var tag: UInt16
        public var perm: UInt16
        public var id: UInt32
    }
    public var entries: [Entry]

    public static let accessName = "system.posix_acl_access"
    public static let defaultName = "system.posix_acl_default"
    static let version: UInt32 = 2
    static let userObj: UInt16 = 0x01, user: UInt16 = 0x02, groupObj: UInt16 = 0x04, group: UInt16 = 0x08
    static let mask: UInt16 = 0x10, other: UInt16 = 0x20
    static let undefinedID = UInt32.max

    /// Whether an attribute name is one of the two ACLs.
    public static func isACL(_ name: String) -> Bool { name == accessName || name == defaultName }

    /// Parses and checks an ACL: one owner, owning group and other entry, a mask when there are named
    /// entries, no named id twice, permissions of at most rwx. Anything else is `.invalid`.
    public init(xattr bytes: [UInt8]) throws(AetherError) {
        guard bytes.count >= 4, (bytes.count - 4) % 8 == 0 else { throw .invalid("an ACL of \(bytes.count) bytes is not 4 + 8n") }
        func u16(_ at: Int) -> UInt16 { UInt16(bytes[at]) | UInt16(bytes[at + 1]) << 8 }
        func u32(_ at: Int) -> UInt32 { UInt32(u16(at)) | UInt32(u16(at + 2)) << 16 }
        guard u32(0) == PosixACL.version else { throw .invalid("ACL version \(u32(0)) (expected 2)") }
        entries = stride(from: 4, to: bytes.count, by: 8).map { Entry(tag: u16($0), perm: u16($0 + 2), id: u32($0 + 4)) }
        var counts: [UInt16: Int] = [:]
        var named = Set<UInt64>()
        for e in entries {
            guard [PosixACL.userObj, PosixACL.user, PosixACL.groupObj, PosixACL.group, PosixACL.mask, PosixACL.other].contains(e.tag) else {
                throw .invalid("ACL entry of unknown tag \(e.tag)")
            }
            guard e.perm & ~7 == 0 else { throw .invalid("ACL permissions \(e.perm) beyond rwx") }
            counts[e.tag, default: 0] += 1
            if e.tag == PosixACL.user || e.tag == PosixACL.group {
                guard named.insert(UInt64(e.tag) << 32 | UInt64(e.id)).inserted else { throw .invalid("ACL names id \(e.id) twice") }
            }
        }
        guard entries.isEmpty || (counts[PosixACL.userObj] == 1 && counts[PosixACL.groupObj] == 1 && counts[PosixACL.other] == 1
                                  && (counts[PosixACL.mask] ?? 0) <= 1) else {
            throw .invalid("an ACL needs one owner, one owning group and one other entry")
        }
        if !named.isEmpty && counts[PosixACL.mask] == nil { throw .invalid("an ACL with named entries needs a mask") }
    }

    /// The ACL of a mode alone: owner, owning group and other.
    public init(mode: UInt32) {
        entries = [Entry(tag: PosixACL.userObj, perm: UInt16(mode >> 6 & 7), id: PosixACL.undefinedID),
                   Entry(tag: PosixACL.groupObj, perm: UInt16(mode >> 3 & 7), id: PosixACL.undefinedID),
                   Entry(tag: PosixACL.other, perm: UInt16(mode & 7), id: PosixACL.undefinedID)]
    }

    /// The attribute's value, entries in the kernel's order (by tag, then id).
    public var xattr: [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(4 + 8 * entries.count)
        func put(_ v: UInt32, _ n: Int) { for i in 0..<n { out.append(UInt8(truncatingIfNeeded: v >> (8 * i))) } }
        put(PosixACL.version, 4)
        for e in entries.sorted(by: { ($0.tag, $0.id) < ($1.tag, $1.id) }) {
            put(UInt32(e.tag), 2); put(UInt32(e.perm), 2); put(e.id, 4)
        }
        return out
    }

    public var isEmpty: Bool { entries.isEmpty }

    /// Whether the ACL says no more than a mode's permission bits (no named entries, no mask).
    public var isMinimal: Bool { entries.allSatisfy { [PosixACL.userObj, PosixACL.groupObj, PosixACL.other].contains($0.tag) } }

    private func perm(_ tag: UInt16) -> UInt32 { UInt32(entries.first { $0.tag == tag }?.perm ?? 0) }

    /// The permission bits the ACL implies: the owner's, the group class's (the mask when there is one,
    /// else the owning group's) and other's.
    public var modeBits: UInt32 {
        let group = entries.contains { $0.tag == PosixACL.mask } ? perm(PosixACL.mask) : perm(PosixACL.groupObj)
        return perm(PosixACL.userObj) << 6 | group << 3 | perm(PosixACL.other)
    }

    private mutating func set(_ tag: UInt16, _ perm: UInt32) {
        for i in entries.indices where entries[i].tag == tag { entries[i].perm = UInt16(perm & 7) }
    }

    /// A chmod: the owner, group class (mask, else owning group) and other entries take the mode's bits.
    public mutating func chmod(_ mode: UInt32) {
        set(PosixACL.userObj, mode >> 6)
        set(entries.contains { $0.tag == PosixACL.mask } ? PosixACL.mask : PosixACL.groupObj, mode >> 3)
        set(PosixACL.other, mode)
    }

    /// A new node's ACL from its parent's default ACL (this) and the mode it was created with: both are
    /// narrowed to what each allows (the kernel's `posix_acl_create_masq`). Returns the node's
    /// permission bits; the ACL is worth storing only when it is not minimal.
    public mutating func create(mode: UInt32) -> UInt32 {
        var mode = mode & 0o777
        let hasMask = entries.contains { $0.tag == PosixACL.mask }
        for i in entries.indices {
            switch entries[i].tag {
            case PosixACL.userObj:
                entries[i].perm &= UInt16(mode >> 6 & 7)
                mode = mode & ~0o700 | UInt32(entries[i].perm) << 6
            case PosixACL.other:
                entries[i].perm &= UInt16(mode & 7)
                mode = mode & ~0o007 | UInt32(entries[i].perm)
            case PosixACL.mask, PosixACL.groupObj:
                // The group class: the mask when there is one, else the owning group.
                guard entries[i].tag == PosixACL.mask || !hasMask else { break }
                entries[i].perm &= UInt16(mode >> 3 & 7)
                mode = mode & ~0o070 | UInt32(entries[i].perm) << 3
            default: break
            }
        }
        return mode
    }
}
