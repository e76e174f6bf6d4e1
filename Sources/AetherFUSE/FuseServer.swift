#if canImport(Glibc)
import Glibc
#endif
import CFuse
import AetherCore
import AetherVFS
import AetherStore
import Logging
import Foundation

/// Serves one `VirtualFileSystem` at a mount point through libfuse's low-level API and its
/// multi-threaded loop. Every callback decodes the request, makes one VFS call and replies; the VFS
/// reaches callbacks through `fuse_req_userdata`, never a global.
public final class FuseServer {
    let vfs: VirtualFileSystem
    let mountpoint: String
    let allowOther: Bool
    let readOnly: Bool
    let logger: Logger

    public init(vfs: VirtualFileSystem, mountpoint: String, allowOther: Bool, readOnly: Bool = false, logger: Logger) {
        self.vfs = vfs
        self.mountpoint = mountpoint
        self.allowOther = allowOther
        self.readOnly = readOnly
        self.logger = logger
    }

    /// Mounts, calls `ready` once the kernel serves the mount, serves until it is unmounted (or a
    /// SIGINT/SIGTERM arrives), then unmounts.
    public func run(ready: () -> Void) throws(AetherError) {
        var options = "default_permissions,fsname=aetherfs:\(vfs.sessionName),subtype=aetherfs"
        if allowOther { options += ",allow_other" }
        if readOnly { options += ",ro" }
        let argv = ["aetherfs", "-o", options]
        var cargs = argv.map { strdup($0) }
        defer { cargs.forEach { free($0) } }
        var args = fuse_args(argc: Int32(cargs.count), argv: &cargs, allocated: 0)
        var ops = FuseServer.operations()
        let unmanaged = Unmanaged.passRetained(vfs)
        defer { unmanaged.release() }
        guard let se = cfuse_session_new(&args, &ops, unmanaged.toOpaque()) else {
            throw .invalid("libfuse refused the mount options \(options)")
        }
        defer { fuse_session_destroy(se) }
        let sessionBox = SessionBox(se)
        vfs.invalidator = { items in sessionBox.invalidate(items) }
        let root = mountpoint
        vfs.kernelFlush = { try? FileIO.syncFileSystem(of: root) }
        guard fuse_session_mount(se, mountpoint) == 0 else {
            throw .system(EIO, "cannot mount at \(mountpoint) (is /dev/fuse there, is the directory empty and not mounted?)")
        }
        FuseServer.unmountOnSignals(mountpoint: mountpoint, session: sessionBox)
        ready()
        let rc = cfuse_session_loop_mt(se, 0, 10)
        vfs.invalidator = { _ in }
        vfs.kernelFlush = {}
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
            var pid: pid_t = 0
            let words: [String] = ["fusermount3", "-u", "-z", mountpoint]
            var argv: [UnsafeMutablePointer<CChar>?] = words.map { strdup($0) }
            argv.append(nil)
            defer { argv.forEach { free($0) } }
            var status: Int32 = 0
            if posix_spawnp(&pid, "fusermount3", nil, nil, argv, environ) == 0, waitpid(pid, &status, 0) == pid, status == 0 { return }
            fuse_session_exit(session.se)
        }
        watcher.start()
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
        ops.opendir = Callbacks.opendir
        ops.readdir = Callbacks.readdir
        ops.readdirplus = Callbacks.readdirplus
        ops.releasedir = Callbacks.releasedir
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
final class SessionBox: @unchecked Sendable {
    let se: OpaquePointer
    init(_ se: OpaquePointer) { self.se = se }

    func invalidate(_ items: [Invalidation]) {
        for item in items {
            switch item {
            case .entry(let parent, let name):
                name.withUnsafeBufferPointer { b in
                    b.baseAddress!.withMemoryRebound(to: CChar.self, capacity: b.count) { p in
                        _ = fuse_lowlevel_notify_inval_entry(se, parent, p, b.count)
                    }
                }
            case .inode(let ino):
                _ = fuse_lowlevel_notify_inval_inode(se, ino, 0, 0)
            }
        }
    }
}
