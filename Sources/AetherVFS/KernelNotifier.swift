import AetherCore

/// The kernel's side of a mount, as the VFS sees it: the FUSE adapter's session, or a recorder in
/// tests. The VFS never calls it while holding its lock.
public protocol KernelNotifier: AnyObject, Sendable {
    /// Tells the kernel to forget names, attributes and pages that changed behind it.
    func invalidate(_ items: [Invalidation])
    /// Makes the kernel send every page written into its cache and not yet to us (the writes arrive as
    /// requests of their own).
    func flushWrites()
}
