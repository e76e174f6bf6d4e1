import Testing
import AetherModel
@testable import AetherCore

/// An ACL value as `setfacl` has the kernel hand it over: entries of (tag, perm, id).
func aclValue(_ entries: [(UInt16, UInt16, UInt32)]) -> [UInt8] {
    var out: [UInt8] = [2, 0, 0, 0]
    for (tag, perm, id) in entries {
        out += [UInt8(tag & 0xff), UInt8(tag >> 8), UInt8(perm), 0]
        out += [UInt8(id & 0xff), UInt8(id >> 8 & 0xff), UInt8(id >> 16 & 0xff), UInt8(id >> 24)]
    }
    return out
}

let none = UInt32.max
/// user::rw- user:1000:--- group::r-- mask::r-- other::r--
let denyUser = aclValue([(0x01, 6, none), (0x02, 0, 1000), (0x04, 4, none), (0x10, 4, none), (0x20, 4, none)])
/// user::rw- group::r-- other::r-- (what cp -p and sed -i set on every file)
let minimal644 = aclValue([(0x01, 6, none), (0x04, 4, none), (0x20, 4, none)])

@Suite struct ACLTests {
    @Test func parsesEncodesAndRefusesMalformedACLs() throws {
        let acl = try PosixACL(xattr: denyUser)
        #expect(acl.xattr == denyUser)
        #expect(!acl.isMinimal && acl.modeBits == 0o644)
        #expect(try PosixACL(xattr: minimal644).isMinimal)
        #expect(PosixACL(mode: 0o640).xattr == aclValue([(0x01, 6, none), (0x04, 4, none), (0x20, 0, none)]))
        for bad in [[UInt8](), [2, 0, 0], [3, 0, 0, 0], aclValue([(0x01, 6, none), (0x04, 4, none)]),
                    aclValue([(0x01, 6, none), (0x02, 4, 7), (0x04, 4, none), (0x20, 4, none)]),        // named without a mask
                    aclValue([(0x01, 8, none), (0x04, 4, none), (0x20, 4, none)]),                      // perm beyond rwx
                    aclValue([(0x01, 6, none), (0x40, 4, none), (0x04, 4, none), (0x20, 4, none)]),     // unknown tag
                    aclValue([(0x01, 6, none), (0x02, 4, 7), (0x02, 0, 7), (0x04, 4, none), (0x10, 4, none), (0x20, 4, none)])] {
            #expect(throws: AetherError.self) { try PosixACL(xattr: bad) }
        }
    }

    @Test func chmodRewritesOwnerMaskAndOther() throws {
        var acl = try PosixACL(xattr: denyUser)
        acl.chmod(0o750)
        #expect(acl.xattr == aclValue([(0x01, 7, none), (0x02, 0, 1000), (0x04, 4, none), (0x10, 5, none), (0x20, 0, none)]))
    }

    @Test func aNewNodeIsNarrowedByItsCreateMode() throws {
        // default: user::rwx group::r-x other::--- ; created 0666 -> 0640 (group r-x & rw- = r--)
        var acl = try PosixACL(xattr: aclValue([(0x01, 7, none), (0x04, 5, none), (0x20, 0, none)]))
        #expect(acl.create(mode: 0o666) == 0o640)
        var named = try PosixACL(xattr: aclValue([(0x01, 7, none), (0x02, 7, 1000), (0x04, 5, none), (0x10, 7, none), (0x20, 5, none)]))
        #expect(named.create(mode: 0o644) == 0o644)
        #expect(named.xattr == aclValue([(0x01, 6, none), (0x02, 7, 1000), (0x04, 5, none), (0x10, 4, none), (0x20, 4, none)]))
    }

    @Test func theWorkspaceKeepsModesAndACLsInStep() throws {
        let f = try Fixture()
        let ws = try f.open()
        let file = try ws.create(parent: root, name: bytes("f"), mode: 0o600, caller: me).ino
        // A minimal ACL sets the mode and is not kept (cp -p, sed -i).
        try ws.setXattr(file, name: PosixACL.accessName, value: minimal644, create: false, replace: false, caller: me)
        #expect(try ws.attributes(file).mode & 0o777 == 0o644)
        #expect(try ws.listXattrs(file).isEmpty)
        // A named entry is kept; the group bits are the mask; a chmod rewrites the mask.
        try ws.setXattr(file, name: PosixACL.accessName, value: denyUser, create: false, replace: false, caller: me)
        #expect(try ws.getXattr(file, name: PosixACL.accessName) == denyUser)
        var change = AttributeChange()
        change.mode = 0o600
        _ = try ws.setAttributes(file, change)
        #expect(try ws.getXattr(file, name: PosixACL.accessName)
                == aclValue([(0x01, 6, none), (0x02, 0, 1000), (0x04, 4, none), (0x10, 0, none), (0x20, 0, none)]))
        // The umask applies without a default ACL, a directory's default ACL instead of it otherwise.
        let masked = try ws.create(parent: root, name: bytes("m"), mode: 0o666, caller: Caller(uid: 1000, gid: 1000, umask: 0o027)).ino
        #expect(try ws.attributes(masked).mode & 0o777 == 0o640)
        let dir = try ws.mkdir(parent: root, name: bytes("d"), mode: 0o755, caller: me).ino
        let inherit = aclValue([(0x01, 7, none), (0x02, 5, 1000), (0x04, 5, none), (0x10, 5, none), (0x20, 0, none)])
        try ws.setXattr(dir, name: PosixACL.defaultName, value: inherit, create: false, replace: false, caller: me)
        let child = try ws.create(parent: dir, name: bytes("c"), mode: 0o666, caller: Caller(uid: 1000, gid: 1000, umask: 0o077)).ino
        #expect(try ws.attributes(child).mode & 0o777 == 0o640)
        #expect(try ws.getXattr(child, name: PosixACL.accessName)
                == aclValue([(0x01, 6, none), (0x02, 5, 1000), (0x04, 5, none), (0x10, 4, none), (0x20, 0, none)]))
        let sub = try ws.mkdir(parent: dir, name: bytes("s"), mode: 0o777, caller: me).ino
        #expect(try ws.getXattr(sub, name: PosixACL.defaultName) == inherit)
        // Default ACLs are for directories; malformed ACLs change nothing.
        #expect(throws: AetherError.self) { try ws.setXattr(file, name: PosixACL.defaultName, value: inherit, create: false, replace: false, caller: me) }
        #expect(throws: AetherError.self) { try ws.setXattr(file, name: PosixACL.accessName, value: [2, 0, 0, 0, 1], create: false, replace: false, caller: me) }
        #expect(try ws.attributes(file).mode & 0o777 == 0o600)
    }
}
