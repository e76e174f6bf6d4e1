#if canImport(Glibc)
import Glibc
#endif
import CFuse
import CLinux
import AetherModel
import AetherCore
import AetherVFS
import AetherStore
import Logging
import Foundation

/// Serves one `MountedFileSystem` at a mount point through libfuse's low-level API and its
/// multi-threaded loop. Every callback decodes the request, makes one VFS call and replies; the VFS
/// reaches callbacks through `fuse_req_userdata`, never a global.
public final class FuseServer {
    let vfs: any MountedFileSystem
    let mountpoint: String
    let allowOther: Bool
    let readOnly: Bool
    /// Extra mount(8) options: `dev` (device nodes open), `suid` (setuid bits count); root's only.
    let extraOptions: [String]
    let logger: Logger

    public init(vfs: any MountedFileSystem, mountpoint: String, allowOther: Bool, readOnly: Bool = false,
                extraOptions: [String] = [], logger: Logger) {
        self.vfs = vfs
        self.mountpoint = mountpoint
        self.allowOther = allowOther
        self.readOnly = readOnly
        self.extraOptions = extraOptions
        self.logger = logger
    }

    /// Mounts, calls `ready` once the kernel serves the mount, serves until it is unmounted (or a
    /// SIGINT/SIGTERM arrives), then unmounts.
    public func run(ready: () -> Void) throws(AetherError) {
        liftFileSizeLimit()
        var options = "default_permissions,fsname=aetherfs:\(vfs.sessionName),subtype=aetherfs"
        if allowOther { options += ",allow_other" }
        if readOnly { options += ",ro" }
        for o in extraOptions { options += "," + o }
        let argv = ["aetherfs", "-o", options]
        var cargs = argv.map { strdup($0) }
        defer { cargs.forEach { free($0) } }
        var args = fuse_args(argc: Int32(cargs.count), argv: &cargs, allocated: 0)
        var ops = FuseServer.operations()
        let unmanaged = Unmanaged.passRetained(FileSystemBox(vfs))
        defer { unmanaged.release() }
        guard let se = cfuse_session_new(&args, &ops, unmanaged.toOpaque()) else {
            throw .invalid("libfuse refused the mount options \(options)")
        }
        defer { fuse_session_destroy(se) }
        let sessionBox = SessionBox(se, mountpoint: mountpoint)
        vfs.attach(sessionBox)
        guard fuse_session_mount(se, mountpoint) == 0 else {
            throw .failed("cannot mount at \(mountpoint) (is /dev/fuse there, is the directory empty and not mounted?)")
        }
        var io = fuse_custom_io()
        io.read = InitReplyPatch.read
        io.writev = InitReplyPatch.writev
        guard fuse_session_custom_io(se, &io, fuse_session_fd(se)) == 0 else {
            fuse_session_unmount(se)
            throw .failed("libfuse refused the session's I/O hooks")
        }
        FuseServer.unmountOnSignals(mountpoint: mountpoint, session: sessionBox)
        ready()
        let rc = cfuse_session_loop_mt(se, 0, 10)
        vfs.attach(nil)
        fuse_session_unmount(se)
        vfs.shutdown()
        if rc != 0 { logger.info("fuse loop ended", metadata: ["rc": "\(rc)"]) }
    }

    /// SIGINT, SIGTERM and SIGHUP detach the mount instead of ending the loop: the kernel then sends the
    /// pages it still caches (writeback) while we still serve, open files keep working until they are
    /// closed, and the loop ends when the kernel lets go. The signals are blocked in every thread and
    /// taken by one watcher thread, so libfuse's workers (started later) inherit the mask.
    static func unmountOnSignals(mountpoint: String, session: SessionBox) {
        var set = sigset_t()
        sigemptyset(&set)
        for sig in [SIGINT, SIGTERM, SIGHUP] { sigaddset(&set, sig) }
        pthread_sigmask(SIG_BLOCK, &set, nil)
        signal(SIGPIPE, SIG_IGN)
        let blocked = set
        let watcher = Thread {
            var sig: Int32 = 0
            var waitSet = blocked
            while sigwait(&waitSet, &sig) != 0 {}
            if umount2(mountpoint, Int32(MNT_DETACH)) == 0 { return }
            // Not root: fusermount3 does the same for the mount's owner.
            if runHelper(["fusermount3", "-u", "-z", mountpoint].map { Array($0.utf8) }) { return }
            fuse_session_exit(session.se)
        }
        watcher.start()
    }

    /// Runs a program found on PATH and waits for it; true when it exits 0. Arguments are bytes (paths
    /// need not be UTF-8).
    static func runHelper(_ words: [[UInt8]]) -> Bool {
        var argv: [UnsafeMutablePointer<CChar>?] = words.map { w in
            let p = UnsafeMutablePointer<CChar>.allocate(capacity: w.count + 1)
            for (i, b) in w.enumerated() { p[i] = CChar(bitPattern: b) }
            p[w.count] = 0
            return p
        }
        argv.append(nil)
        defer { argv.forEach { $0?.deallocate() } }
        var pid: pid_t = 0
        guard posix_spawnp(&pid, argv[0]!, nil, nil, argv, environ) == 0 else { return false }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        return status == 0
    }

    static func operations() -> fuse_lowlevel_ops {
        var ops = fuse_lowlevel_ops()
        ops.`init` = Callbacks.initialize
        ops.destroy = Callbacks.destroy
        ops.lookup = Callbacks.lookup
        ops.forget = Callbacks.forget
        ops.forget_multi = Callbacks.forgetMulti
        ops.getattr = Callbacks.getattr
        ops.setattr = Callbacks.setattr
        ops.readlink = Callbacks.readlink
        ops.mknod = Callbacks.mknod
        ops.mkdir = Callbacks.mkdir
        ops.unlink = Callbacks.unlink
        ops.rmdir = Callbacks.rmdir
        ops.symlink = Callbacks.symlink
        ops.rename = Callbacks.rename
        ops.link = Callbacks.link
        ops.open = Callbacks.open
        ops.read = Callbacks.read
        ops.write = Callbacks.write
        ops.flush = Callbacks.flush
        ops.release = Callbacks.release
        ops.fsync = Callbacks.fsync
        ops.fallocate = Callbacks.fallocate
        ops.lseek = Callbacks.lseek
        ops.opendir = Callbacks.opendir
        ops.readdir = Callbacks.readdir
        ops.readdirplus = Callbacks.readdirplus
        ops.fsyncdir = Callbacks.fsyncdir
        ops.statfs = Callbacks.statfs
        ops.setxattr = Callbacks.setxattr
        ops.getxattr = Callbacks.getxattr
        ops.listxattr = Callbacks.listxattr
        ops.removexattr = Callbacks.removexattr
        ops.access = Callbacks.access
        ops.create = Callbacks.create
        return ops
    }
}

/// The libfuse session, for kernel notifications from outside a callback's lock.
final class SessionBox: KernelNotifier, @unchecked Sendable {
    let se: OpaquePointer
    let mountpoint: String
    init(_ se: OpaquePointer, mountpoint: String) { self.se = se; self.mountpoint = mountpoint }

    /// A helper process does the syncfs: a daemon thread blocked on its own mount could never be
    /// killed (the kernel waits for the answer only the daemon can give).
    func flushWrites() { _ = FuseServer.runHelper(["sync", "-f", mountpoint].map { Array($0.utf8) }) }

    func invalidate(_ items: [Invalidation]) {
        // Sizes and times last: by then the kernel dropped the pages and names it held.
        let ordered = items.filter { if case .resize = $0 { false } else { true } } + items.filter { if case .resize = $0 { true } else { false } }
        for item in ordered {
            switch item {
            case .entry(let parent, let name):
                name.withUnsafeBufferPointer { b in
                    b.baseAddress!.withMemoryRebound(to: CChar.self, capacity: b.count) { p in
                        _ = fuse_lowlevel_notify_inval_entry(se, parent, p, b.count)
                    }
                }
            case .inode(let ino):
                _ = fuse_lowlevel_notify_inval_inode(se, ino, 0, 0)
            case .attributes(let ino):
                _ = fuse_lowlevel_notify_inval_inode(se, ino, -1, 0)
            case .resize(_, let path, let size, let mtime):
                // Helper processes, for the same reason as the flush: requests on our own mount.
                let full = Array(mountpoint.utf8) + [47] + path
                let fraction = String(mtime % 1_000_000_000)
                let stamp = "@\(mtime / 1_000_000_000)." + String(repeating: "0", count: max(0, 9 - fraction.count)) + fraction
                _ = FuseServer.runHelper([Array("truncate".utf8), Array("-s".utf8), Array(String(size).utf8), Array("--".utf8), full])
                _ = FuseServer.runHelper([Array("touch".utf8), Array("-m".utf8), Array("-c".utf8), Array("-d".utf8), Array(stamp.utf8), Array("--".utf8), full])
            }
        }
    }
}

extension FuseServer {
    /// The daemon writes other processes' files, and the kernel holds each writer to its own
    /// RLIMIT_FSIZE. A limit inherited from the shell that mounted would cap every file in the mount and
    /// the catalog too: SIGXFSZ killed the daemon, or, with the signal ignored, clients got EFBIG and
    /// SQLite's short write reads "database or disk is full". The soft limit goes up to the hard one;
    /// SIGXFSZ is ignored, so that a hard limit fails one request with EFBIG instead of the mount.
    func liftFileSizeLimit() {
        let resource = __rlimit_resource_t(RLIMIT_FSIZE.rawValue)
        var limit = rlimit()
        guard getrlimit(resource, &limit) == 0 else { return }
        if limit.rlim_cur != limit.rlim_max {
            limit.rlim_cur = limit.rlim_max
            _ = setrlimit(resource, &limit)
        }
        signal(SIGXFSZ, SIG_IGN)
        if limit.rlim_max != rlim_t.max {  // RLIM_INFINITY
            logger.warning("files and the catalog are limited to \(limit.rlim_max) bytes (the hard RLIMIT_FSIZE this daemon started with)")
        }
    }
}

/// libfuse 3.14 predates FUSE_HANDLE_KILLPRIV_V2, which the kernel offers (since 5.11): with it the
/// kernel leaves clearing setuid/setgid on write and truncate to the file system (which does it:
/// `Node.dropPrivilegeBits`, and chown clears both) and marks inodes as having no security attributes
/// to check, instead of asking for `security.capability` before every write, one round trip each.
/// libfuse does its device I/O through these hooks; they add the flag to the INIT reply when the
/// kernel offered it (INIT is the first request and is answered before any other is read), note per
/// request what libfuse drops (the kernel's "clear setuid/setgid" flags) and hand FUSE_TMPFILE, which
/// libfuse 3.14 does not know, to libfuse as a CREATE.
enum InitReplyPatch {
    nonisolated(unsafe) static var pendingInit: UInt64 = 0
    nonisolated(unsafe) static var offered = false
    static let killprivV2: UInt32 = 1 << 28
    static let opcodeInit: UInt32 = 26

    /// Whether the kernel agreed that the file system clears setuid/setgid (then it says when to).
    nonisolated(unsafe) static var negotiated = false

    /// Of the request this thread serves: a write, truncate or O_TRUNC open that the kernel did not ask
    /// to clear setuid/setgid (its caller holds CAP_FSETID), with FUSE_HANDLE_KILLPRIV_V2 agreed.
    /// Without it the kernel clears the bits itself (a setattr of the mode), so none is ours to clear.
    static var requestKeepsPrivilegeBits: Bool { aether_request_flags().pointee & keepsBits != 0 }
    /// Whether the request this thread serves is FUSE_TMPFILE (O_TMPFILE), which libfuse 3.14 does not
    /// know: the hook hands it to libfuse as the CREATE it resembles (the same fuse_create_in, a name of
    /// "/", the same reply), and `create` makes an unnamed file.
    static var requestIsTmpfile: Bool { aether_request_flags().pointee & tmpfileBit != 0 }
    static let keepsBits: UInt32 = 1, tmpfileBit: UInt32 = 2

    static let opcodeSetattr: UInt32 = 4, opcodeOpen: UInt32 = 14, opcodeWrite: UInt32 = 16
    static let opcodeCreate: UInt32 = 35, opcodeTmpfile: UInt32 = 51

    static let read: @convention(c) (Int32, UnsafeMutableRawPointer?, Int, UnsafeMutableRawPointer?) -> Int = { fd, buf, len, _ in
        let n = Glibc.read(fd, buf, len)
        guard n >= 40, let buf else { return n }
        // fuse_in_header (40 bytes: len, opcode, unique, …) then the request's own fields.
        let opcode = buf.loadUnaligned(fromByteOffset: 4, as: UInt32.self)
        RequestClock.started(opcode: opcode, unique: buf.loadUnaligned(fromByteOffset: 8, as: UInt64.self),
                             written: opcode == opcodeWrite && n >= 60 ? UInt64(buf.loadUnaligned(fromByteOffset: 56, as: UInt32.self)) : 0)
        guard n >= 48 else { return n }
        // The flag saying "clear them": fuse_write_in.write_flags FUSE_WRITE_KILL_SUIDGID,
        // fuse_setattr_in.valid FATTR_KILL_SUIDGID, fuse_open_in.open_flags FUSE_OPEN_KILL_SUIDGID.
        let kill: (offset: Int, bit: UInt32)? = switch opcode {
        case opcodeWrite: (40 + 20, 1 << 2)
        case opcodeSetattr: (40, 1 << 11)
        case opcodeOpen: (40 + 4, 1 << 0)
        default: nil
        }
        if let kill, n >= kill.offset + 4 {
            let asked = buf.loadUnaligned(fromByteOffset: kill.offset, as: UInt32.self) & kill.bit != 0
            aether_request_flags().pointee = negotiated && !asked ? keepsBits : 0
        } else if opcode == opcodeTmpfile {
            buf.storeBytes(of: opcodeCreate, toByteOffset: 4, as: UInt32.self)
            aether_request_flags().pointee = tmpfileBit
        } else {
            aether_request_flags().pointee = 0
        }
        // fuse_init_in (major, minor, max_readahead, flags).
        if n >= 56, opcode == opcodeInit {
            pendingInit = buf.loadUnaligned(fromByteOffset: 8, as: UInt64.self)
            offered = buf.loadUnaligned(fromByteOffset: 52, as: UInt32.self) & killprivV2 != 0
        }
        return n
    }

    static let writev: @convention(c) (Int32, UnsafeMutablePointer<iovec>?, Int32, UnsafeMutableRawPointer?) -> Int = { fd, iov, count, _ in
        if let iov, count >= 1, iov[0].iov_len >= 16, let header = iov[0].iov_base {
            RequestClock.answered(unique: header.loadUnaligned(fromByteOffset: 8, as: UInt64.self),
                                  error: header.loadUnaligned(fromByteOffset: 4, as: Int32.self),
                                  length: header.loadUnaligned(fromByteOffset: 0, as: UInt32.self))
        }
        // fuse_out_header (len, error, unique) then fuse_init_out (major, minor, max_readahead, flags, …).
        if pendingInit != 0, let iov, count >= 2, iov[0].iov_len >= 16, iov[1].iov_len >= 16,
           let header = iov[0].iov_base, header.loadUnaligned(fromByteOffset: 8, as: UInt64.self) == pendingInit {
            pendingInit = 0
            if offered, header.loadUnaligned(fromByteOffset: 4, as: Int32.self) == 0, let body = iov[1].iov_base {
                let flags = body.loadUnaligned(fromByteOffset: 12, as: UInt32.self)
                body.storeBytes(of: flags | killprivV2, toByteOffset: 12, as: UInt32.self)
                negotiated = true
            }
        }
        return Glibc.writev(fd, iov, count)
    }
}

/// Each request's latency, from the hook's read of it to the write of its answer on the same thread
/// (libfuse serves a request on the thread that read it), into `RequestStats.shared` by the kernel's
/// name of its operation. FORGETs, which have no answer, count when read.
enum RequestClock {
    static let opcodeRead: UInt32 = 15, opcodeForget: UInt32 = 2, opcodeBatchForget: UInt32 = 42

    static func started(opcode: UInt32, unique: UInt64, written: UInt64) {
        if opcode == opcodeForget || opcode == opcodeBatchForget {
            RequestStats.shared.record(name(opcode), nanos: 0, failed: false)
            return
        }
        let c = aether_request_clock()!
        c.pointee.unique = unique
        c.pointee.opcode = opcode
        c.pointee.started = monotonicNanoseconds()
        if written > 0 { RequestStats.shared.transferred(written: written) }
    }

    static func answered(unique: UInt64, error: Int32, length: UInt32) {
        let c = aether_request_clock()!
        guard c.pointee.unique == unique, c.pointee.started != 0 else { return }
        let nanos = UInt64(max(0, monotonicNanoseconds() - c.pointee.started))
        c.pointee.started = 0
        RequestStats.shared.record(name(c.pointee.opcode), nanos: nanos, failed: error != 0)
        if c.pointee.opcode == opcodeRead && error == 0 && length > 16 { RequestStats.shared.transferred(read: UInt64(length - 16)) }
    }

    static let names: [UInt32: String] = [
        1: "lookup", 2: "forget", 3: "getattr", 4: "setattr", 5: "readlink", 6: "symlink", 8: "mknod", 9: "mkdir", 10: "unlink",
        11: "rmdir", 12: "rename", 13: "link", 14: "open", 15: "read", 16: "write", 17: "statfs", 18: "release", 20: "fsync",
        21: "setxattr", 22: "getxattr", 23: "listxattr", 24: "removexattr", 25: "flush", 26: "init", 27: "opendir", 28: "readdir",
        29: "releasedir", 30: "fsyncdir", 31: "getlk", 32: "setlk", 33: "setlkw", 34: "access", 35: "create", 36: "interrupt",
        37: "bmap", 38: "destroy", 39: "ioctl", 40: "poll", 42: "batch_forget", 43: "fallocate", 44: "readdirplus", 45: "rename2",
        46: "lseek", 47: "copy_file_range", 50: "syncfs", 51: "tmpfile", 52: "statx",
    ]

    static func name(_ opcode: UInt32) -> String { names[opcode] ?? "op\(opcode)" }
}

/// What libfuse's user data points at: the file system served (an existential needs a box to pass
/// through a C pointer).
final class FileSystemBox {
    let fs: any MountedFileSystem
    init(_ fs: any MountedFileSystem) { self.fs = fs }
}
