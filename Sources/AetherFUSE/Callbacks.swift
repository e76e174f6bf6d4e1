#if canImport(Glibc)
import Glibc
#endif
import CFuse
import AetherModel
import AetherCore
import AetherVFS
import AetherStore

/// The low-level callbacks: decode, one VFS call, reply. Nothing here decides anything.
enum Callbacks {
    static func vfs(_ req: fuse_req_t?) -> any MountedFileSystem {
        Unmanaged<FileSystemBox>.fromOpaque(fuse_req_userdata(req)!).takeUnretainedValue().fs
    }

    static func errnoOf(_ error: any Error) -> Int32 { (error as? FSFailure)?.code ?? EIO }

    static func caller(_ req: fuse_req_t?) -> Caller {
        let ctx = fuse_req_ctx(req)!.pointee
        return Caller(uid: ctx.uid, gid: ctx.gid, umask: UInt32(ctx.umask), keepsPrivilegeBits: InitReplyPatch.requestKeepsPrivilegeBits)
    }

    static func name(_ p: UnsafePointer<CChar>?) -> [UInt8] {
        guard let p else { return [] }
        return Array(UnsafeRawBufferPointer(start: p, count: strlen(p)))
    }

    static func timespecOf(_ ns: Int64) -> timespec {
        timespec(tv_sec: Int(ns / 1_000_000_000), tv_nsec: Int(ns % 1_000_000_000))
    }

    static func stat(_ a: Attributes) -> stat {
        var st = Glibc.stat()
        st.st_ino = UInt(a.ino)
        st.st_mode = a.fullMode
        st.st_nlink = UInt(a.nlink)
        st.st_uid = a.uid
        st.st_gid = a.gid
        st.st_size = Int(a.size)
        st.st_blksize = Int(ControlFile.blockSize(a.ino))
        st.st_blocks = Int(a.blocks)
        st.st_rdev = UInt(a.rdev)
        st.st_atim = timespecOf(a.atime)
        st.st_mtim = timespecOf(a.mtime)
        st.st_ctim = timespecOf(a.ctime)
        return st
    }

    static func entry(_ e: EntryReply) -> fuse_entry_param {
        var p = fuse_entry_param()
        p.ino = e.attributes.ino
        p.generation = e.attributes.generation
        p.attr = stat(e.attributes)
        p.attr_timeout = e.attrTimeout
        p.entry_timeout = e.entryTimeout
        return p
    }

    static func replyEntry(_ req: fuse_req_t?, _ body: () throws(FSFailure) -> EntryReply) {
        do {
            var e = entry(try body())
            fuse_reply_entry(req, &e)
        } catch {
            fuse_reply_err(req, errnoOf(error))
        }
    }

    static func replyStatus(_ req: fuse_req_t?, _ body: () throws(FSFailure) -> Void) {
        do {
            try body()
            fuse_reply_err(req, 0)
        } catch {
            fuse_reply_err(req, errnoOf(error))
        }
    }

    static let initialize: @convention(c) (UnsafeMutableRawPointer?, UnsafeMutablePointer<fuse_conn_info>?) -> Void = { userdata, conn in
        guard let conn, let userdata else { return }
        let fs = Unmanaged<FileSystemBox>.fromOpaque(userdata).takeUnretainedValue().fs
        // Ask only for what the kernel offers: wanting a missing capability aborts the mount.
        var wanted = [UInt32(FUSE_CAP_READDIRPLUS), UInt32(FUSE_CAP_EXPORT_SUPPORT)]
        // Writes stay in the kernel's page cache until it flushes them (close, fsync, memory pressure);
        // the VFS flushes them itself before anything reads the tree behind the kernel (`flushKernel`).
        if fs.writebackCache { wanted.append(UInt32(FUSE_CAP_WRITEBACK_CACHE)) }
        // POSIX ACLs: the kernel enforces them; the workspace keeps them in step with modes and gives
        // new nodes their directory's default ACL, so the umask is ours to apply (DONT_MASK).
        let acl = UInt32(FUSE_CAP_POSIX_ACL) | UInt32(FUSE_CAP_DONT_MASK)
        if conn.pointee.capable & acl == acl { wanted.append(acl) }
        fs.kernelSkipsOpendir = conn.pointee.capable & UInt32(FUSE_CAP_NO_OPENDIR_SUPPORT) != 0
        for cap in wanted where conn.pointee.capable & cap != 0 {
            conn.pointee.want |= cap
        }
        conn.pointee.want &= ~UInt32(FUSE_CAP_READDIRPLUS_AUTO)
        if !fs.writebackCache { conn.pointee.want &= ~UInt32(FUSE_CAP_WRITEBACK_CACHE) }
        conn.pointee.max_write = 1 << 20
        conn.pointee.max_readahead = 1 << 20
    }

    static let destroy: @convention(c) (UnsafeMutableRawPointer?) -> Void = { userdata in
        guard let userdata else { return }
        Unmanaged<FileSystemBox>.fromOpaque(userdata).takeUnretainedValue().fs.shutdown()
    }

    static let lookup: @convention(c) (fuse_req_t?, fuse_ino_t, UnsafePointer<CChar>?) -> Void = { req, parent, n in
        do {
            var e = entry(try vfs(req).lookup(parent: parent, name: name(n)))
            fuse_reply_entry(req, &e)
        } catch let failure as FSFailure where failure.code == ENOENT {
            // A negative entry the kernel may cache; restore invalidates names it brings back.
            var e = fuse_entry_param()
            e.entry_timeout = 1
            fuse_reply_entry(req, &e)
        } catch {
            fuse_reply_err(req, errnoOf(error))
        }
    }

    static let forget: @convention(c) (fuse_req_t?, fuse_ino_t, UInt64) -> Void = { req, ino, n in
        vfs(req).forget(ino, count: n)
        fuse_reply_none(req)
    }

    static let forgetMulti: @convention(c) (fuse_req_t?, Int, UnsafeMutablePointer<fuse_forget_data>?) -> Void = { req, count, list in
        let fs = vfs(req)
        for i in 0..<count { fs.forget(list![i].ino, count: list![i].nlookup) }
        fuse_reply_none(req)
    }

    static let getattr: @convention(c) (fuse_req_t?, fuse_ino_t, UnsafeMutablePointer<fuse_file_info>?) -> Void = { req, ino, _ in
        do {
            let e = try vfs(req).getattr(ino)
            var st = stat(e.attributes)
            fuse_reply_attr(req, &st, e.attrTimeout)
        } catch {
            fuse_reply_err(req, errnoOf(error))
        }
    }

    static let setattr: @convention(c) (fuse_req_t?, fuse_ino_t, UnsafeMutablePointer<stat>?, Int32, UnsafeMutablePointer<fuse_file_info>?) -> Void = { req, ino, attr, toSet, _ in
        let a = attr!.pointee
        var change = AttributeChange()
        if toSet & FUSE_SET_ATTR_MODE != 0 { change.mode = a.st_mode }
        if toSet & FUSE_SET_ATTR_UID != 0 { change.uid = a.st_uid }
        if toSet & FUSE_SET_ATTR_GID != 0 { change.gid = a.st_gid }
        if toSet & FUSE_SET_ATTR_SIZE != 0 { change.size = UInt64(a.st_size) }
        change.keepsPrivilegeBits = InitReplyPatch.requestKeepsPrivilegeBits
        let now = fileTimeNow()
        if toSet & FUSE_SET_ATTR_ATIME_NOW != 0 { change.atime = now }
        else if toSet & FUSE_SET_ATTR_ATIME != 0 { change.atime = Int64(a.st_atim.tv_sec) * 1_000_000_000 + Int64(a.st_atim.tv_nsec) }
        if toSet & FUSE_SET_ATTR_MTIME_NOW != 0 { change.mtime = now }
        else if toSet & FUSE_SET_ATTR_MTIME != 0 { change.mtime = Int64(a.st_mtim.tv_sec) * 1_000_000_000 + Int64(a.st_mtim.tv_nsec) }
        do {
            let e = try vfs(req).setattr(ino, change, caller: caller(req))
            var st = stat(e.attributes)
            fuse_reply_attr(req, &st, e.attrTimeout)
        } catch {
            fuse_reply_err(req, errnoOf(error))
        }
    }

    static let readlink: @convention(c) (fuse_req_t?, fuse_ino_t) -> Void = { req, ino in
        do {
            let target = try vfs(req).readlink(ino) + [0]
            target.withUnsafeBufferPointer { b in
                b.baseAddress!.withMemoryRebound(to: CChar.self, capacity: b.count) { _ = fuse_reply_readlink(req, $0) }
            }
        } catch {
            fuse_reply_err(req, errnoOf(error))
        }
    }

    static let mknod: @convention(c) (fuse_req_t?, fuse_ino_t, UnsafePointer<CChar>?, mode_t, dev_t) -> Void = { req, parent, n, mode, rdev in
        replyEntry(req) { () throws(FSFailure) in try vfs(req).mknod(parent: parent, name: name(n), mode: mode, rdev: UInt64(rdev), caller: caller(req)) }
    }

    static let mkdir: @convention(c) (fuse_req_t?, fuse_ino_t, UnsafePointer<CChar>?, mode_t) -> Void = { req, parent, n, mode in
        replyEntry(req) { () throws(FSFailure) in try vfs(req).mkdir(parent: parent, name: name(n), mode: mode, caller: caller(req)) }
    }

    static let unlink: @convention(c) (fuse_req_t?, fuse_ino_t, UnsafePointer<CChar>?) -> Void = { req, parent, n in
        replyStatus(req) { () throws(FSFailure) in try vfs(req).unlink(parent: parent, name: name(n), caller: caller(req)) }
    }

    static let rmdir: @convention(c) (fuse_req_t?, fuse_ino_t, UnsafePointer<CChar>?) -> Void = { req, parent, n in
        replyStatus(req) { () throws(FSFailure) in try vfs(req).rmdir(parent: parent, name: name(n), caller: caller(req)) }
    }

    static let symlink: @convention(c) (fuse_req_t?, UnsafePointer<CChar>?, fuse_ino_t, UnsafePointer<CChar>?) -> Void = { req, target, parent, n in
        replyEntry(req) { () throws(FSFailure) in try vfs(req).symlink(parent: parent, name: name(n), target: name(target), caller: caller(req)) }
    }

    static let rename: @convention(c) (fuse_req_t?, fuse_ino_t, UnsafePointer<CChar>?, fuse_ino_t, UnsafePointer<CChar>?, UInt32) -> Void = { req, parent, n, newParent, newName, flags in
        replyStatus(req) { () throws(FSFailure) in
            if flags & ~(cfuse_rename_noreplace | cfuse_rename_exchange | cfuse_rename_whiteout) != 0 {
                throw FSFailure(.invalid("unknown rename flags"))
            }
            var f: Workspace.RenameFlags = []
            if flags & cfuse_rename_noreplace != 0 { f.insert(.noReplace) }
            if flags & cfuse_rename_exchange != 0 { f.insert(.exchange) }
            if flags & cfuse_rename_whiteout != 0 { f.insert(.whiteout) }
            try vfs(req).rename(parent: parent, name: name(n), newParent: newParent, newName: name(newName), flags: f, caller: caller(req))
        }
    }

    static let link: @convention(c) (fuse_req_t?, fuse_ino_t, fuse_ino_t, UnsafePointer<CChar>?) -> Void = { req, ino, newParent, n in
        replyEntry(req) { () throws(FSFailure) in try vfs(req).link(ino, newParent: newParent, newName: name(n), caller: caller(req)) }
    }

    static let open: @convention(c) (fuse_req_t?, fuse_ino_t, UnsafeMutablePointer<fuse_file_info>?) -> Void = { req, ino, fi in
        do {
            let flags = fi!.pointee.flags
            let (handle, direct) = try vfs(req).open(ino, writing: flags & O_ACCMODE != O_RDONLY, truncate: flags & O_TRUNC != 0,
                                                     caller: caller(req))
            fi!.pointee.fh = handle
            fi!.pointee.direct_io = direct ? 1 : 0
            fi!.pointee.keep_cache = direct ? 0 : 1
            if fuse_reply_open(req, fi) != 0 { _ = try? vfs(req).release(ino, handle: handle) }
        } catch {
            fuse_reply_err(req, errnoOf(error))
        }
    }

    static let create: @convention(c) (fuse_req_t?, fuse_ino_t, UnsafePointer<CChar>?, mode_t, UnsafeMutablePointer<fuse_file_info>?) -> Void = { req, parent, n, mode, fi in
        do {
            let fs = vfs(req)
            let who = caller(req)
            let tmpfile = InitReplyPatch.requestIsTmpfile
            let made = tmpfile ? try fs.tmpfile(parent: parent, mode: mode, caller: who)
                               : try fs.mknod(parent: parent, name: name(n), mode: mode | S_IFREG, rdev: 0, caller: who)
            let (handle, _) = try fs.open(made.attributes.ino, writing: true, truncate: false, caller: who)
            fi!.pointee.fh = handle
            fi!.pointee.keep_cache = 1
            var e = entry(made)
            // The kernel takes the one link of a new tmpfile away itself (d_tmpfile).
            if tmpfile { e.attr.st_nlink = 1 }
            if fuse_reply_create(req, &e, fi) != 0 { _ = try? fs.release(made.attributes.ino, handle: handle) }
        } catch {
            fuse_reply_err(req, errnoOf(error))
        }
    }

    static let read: @convention(c) (fuse_req_t?, fuse_ino_t, Int, off_t, UnsafeMutablePointer<fuse_file_info>?) -> Void = { req, ino, size, off, fi in
        do {
            let data = try vfs(req).read(ino, handle: fi!.pointee.fh, offset: UInt64(off), count: size)
            data.withUnsafeBytes { _ = fuse_reply_buf(req, $0.baseAddress?.assumingMemoryBound(to: CChar.self), $0.count) }
        } catch {
            fuse_reply_err(req, errnoOf(error))
        }
    }

    static let write: @convention(c) (fuse_req_t?, fuse_ino_t, UnsafePointer<CChar>?, Int, off_t, UnsafeMutablePointer<fuse_file_info>?) -> Void = { req, ino, buf, size, off, fi in
        let fs = vfs(req)
        do {
            let (n, later) = try fs.write(ino, handle: fi!.pointee.fh, offset: UInt64(off),
                                          data: UnsafeRawBufferPointer(start: buf, count: size), caller: caller(req))
            fuse_reply_write(req, n)
            fs.afterReply(later)
        } catch {
            fuse_reply_err(req, errnoOf(error))
        }
    }

    static let flush: @convention(c) (fuse_req_t?, fuse_ino_t, UnsafeMutablePointer<fuse_file_info>?) -> Void = { req, ino, fi in
        replyStatus(req) { () throws(FSFailure) in try vfs(req).flush(ino, handle: fi!.pointee.fh, caller: caller(req)) }
    }

    static let release: @convention(c) (fuse_req_t?, fuse_ino_t, UnsafeMutablePointer<fuse_file_info>?) -> Void = { req, ino, fi in
        replyStatus(req) { () throws(FSFailure) in try vfs(req).release(ino, handle: fi!.pointee.fh) }
    }

    static let lseek: @convention(c) (fuse_req_t?, fuse_ino_t, off_t, Int32, UnsafeMutablePointer<fuse_file_info>?) -> Void = { req, ino, off, whence, _ in
        do {
            guard whence == FileIO.seekData || whence == FileIO.seekHole, off >= 0 else { throw FSFailure(.invalid("lseek whence")) }
            let at = try vfs(req).seek(ino, offset: UInt64(off), data: whence == FileIO.seekData)
            fuse_reply_lseek(req, off_t(at))
        } catch {
            fuse_reply_err(req, errnoOf(error))
        }
    }

    static let fallocate: @convention(c) (fuse_req_t?, fuse_ino_t, Int32, off_t, off_t, UnsafeMutablePointer<fuse_file_info>?) -> Void = { req, ino, mode, off, length, _ in
        replyStatus(req) { () throws(FSFailure) in
            guard off >= 0, length > 0 else { throw FSFailure(.invalid("fallocate range")) }
            try vfs(req).fallocate(ino, mode: mode, offset: UInt64(off), length: UInt64(length), caller: caller(req))
        }
    }

    static let fsync: @convention(c) (fuse_req_t?, fuse_ino_t, Int32, UnsafeMutablePointer<fuse_file_info>?) -> Void = { req, ino, datasync, _ in
        replyStatus(req) { () throws(FSFailure) in try vfs(req).fsync(ino, dataOnly: datasync != 0) }
    }

    static let opendir: @convention(c) (fuse_req_t?, fuse_ino_t, UnsafeMutablePointer<fuse_file_info>?) -> Void = { req, ino, fi in
        do {
            let cacheable = try vfs(req).opendir(ino)
            // The kernel then skips opendir and releasedir for good and caches every listing; the
            // listings that change behind it (the control directory's, snapshots') change their mtime.
            if vfs(req).kernelSkipsOpendir { fuse_reply_err(req, KernelAnswer.noOpendir); return }
            fi!.pointee.fh = 0
            fi!.pointee.cache_readdir = cacheable ? 1 : 0
            fi!.pointee.keep_cache = cacheable ? 1 : 0
            fuse_reply_open(req, fi)
        } catch {
            fuse_reply_err(req, errnoOf(error))
        }
    }

    static func listing(_ req: fuse_req_t?, _ ino: fuse_ino_t, _ size: Int, _ off: off_t, _ fi: UnsafeMutablePointer<fuse_file_info>?, plus: Bool) {
        var buffer = [CChar](repeating: 0, count: size)
        var used = 0
        do {
            try buffer.withUnsafeMutableBufferPointer { (b) throws(FSFailure) in
                try vfs(req).readdir(ino, offset: Int(off), plus: plus) { entryName, e, next in
                    let cname = entryName.map { CChar(bitPattern: $0) } + [0]
                    let dot = next <= 2
                    let needed: Int = cname.withUnsafeBufferPointer { n in
                        if plus {
                            var param = entry(e)
                            if dot { param.ino = 0 }
                            return fuse_add_direntry_plus(req, b.baseAddress! + used, size - used, n.baseAddress, &param, off_t(next))
                        }
                        var st = stat(e.attributes)
                        return fuse_add_direntry(req, b.baseAddress! + used, size - used, n.baseAddress, &st, off_t(next))
                    }
                    if needed > size - used { return false }
                    used += needed
                    return true
                }
            }
            fuse_reply_buf(req, buffer, used)
        } catch {
            fuse_reply_err(req, errnoOf(error))
        }
    }

    static let readdir: @convention(c) (fuse_req_t?, fuse_ino_t, Int, off_t, UnsafeMutablePointer<fuse_file_info>?) -> Void = { req, ino, size, off, fi in
        listing(req, ino, size, off, fi, plus: false)
    }

    static let readdirplus: @convention(c) (fuse_req_t?, fuse_ino_t, Int, off_t, UnsafeMutablePointer<fuse_file_info>?) -> Void = { req, ino, size, off, fi in
        listing(req, ino, size, off, fi, plus: true)
    }

    static let fsyncdir: @convention(c) (fuse_req_t?, fuse_ino_t, Int32, UnsafeMutablePointer<fuse_file_info>?) -> Void = { req, ino, _, _ in
        replyStatus(req) { () throws(FSFailure) in try vfs(req).fsyncdir(ino) }
    }

    static let statfs: @convention(c) (fuse_req_t?, fuse_ino_t) -> Void = { req, _ in
        var st = vfs(req).statfs()
        fuse_reply_statfs(req, &st)
    }

    static let setxattr: @convention(c) (fuse_req_t?, fuse_ino_t, UnsafePointer<CChar>?, UnsafePointer<CChar>?, Int, Int32) -> Void = { req, ino, n, value, size, flags in
        let fs = vfs(req)
        var later: [Invalidation] = []
        replyStatus(req) { () throws(FSFailure) in
            let bytes = size == 0 ? [] : Array(UnsafeRawBufferPointer(start: value, count: size))
            later = try fs.setxattr(ino, name: String(cString: n!), value: bytes,
                                    create: flags & cfuse_xattr_create != 0, replace: flags & cfuse_xattr_replace != 0, caller: caller(req))
        }
        fs.afterReply(later)
    }

    /// Replies to a getxattr/listxattr: the size when asked for 0 bytes, ERANGE when the buffer is too small.
    static func replyXattr(_ req: fuse_req_t?, _ size: Int, _ value: [UInt8]) {
        if size == 0 { fuse_reply_xattr(req, value.count) }
        else if size < value.count { fuse_reply_err(req, errnoCode(for: .range)) }
        else { value.withUnsafeBytes { _ = fuse_reply_buf(req, $0.baseAddress?.assumingMemoryBound(to: CChar.self), $0.count) } }
    }

    static let getxattr: @convention(c) (fuse_req_t?, fuse_ino_t, UnsafePointer<CChar>?, Int) -> Void = { req, ino, n, size in
        do { replyXattr(req, size, try vfs(req).getxattr(ino, name: String(cString: n!))) }
        catch { fuse_reply_err(req, errnoOf(error)) }
    }

    static let listxattr: @convention(c) (fuse_req_t?, fuse_ino_t, Int) -> Void = { req, ino, size in
        do { replyXattr(req, size, try vfs(req).listxattr(ino).flatMap { Array($0.utf8) + [0] }) }
        catch { fuse_reply_err(req, errnoOf(error)) }
    }

    static let removexattr: @convention(c) (fuse_req_t?, fuse_ino_t, UnsafePointer<CChar>?) -> Void = { req, ino, n in
        replyStatus(req) { () throws(FSFailure) in try vfs(req).removexattr(ino, name: String(cString: n!), caller: caller(req)) }
    }

    /// With `default_permissions` the kernel checks access itself.
    static let access: @convention(c) (fuse_req_t?, fuse_ino_t, Int32) -> Void = { req, _, _ in
        fuse_reply_err(req, 0)
    }
}
