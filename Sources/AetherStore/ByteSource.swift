#if canImport(Glibc)
import Glibc
#endif
import AetherModel

/// Bytes to cut into the store: a working file today, an archive's entry (imports) later. Reads come in
/// increasing offsets, so a source that can only stream forward may serve them.
public protocol ByteSource {
    /// Reads up to `buffer.count` bytes at `offset`; fewer only at the end of the source.
    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws -> Int
    /// The first range of data at or after `offset` and before `end`, or nil when only holes remain.
    /// A source that knows no holes answers `offset..<end`.
    func data(from offset: UInt64, before end: UInt64) -> Range<UInt64>?
}

/// Where a stored file's bytes are written out (a copy-up into a working file; later an export).
public protocol ByteSink {
    func write(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws
    /// Sets the length (the tail may be a hole that was never written).
    func setSize(_ size: UInt64) throws
}

/// An open file descriptor as a source (holes found with SEEK_DATA/SEEK_HOLE) and a sink. It does not
/// own the descriptor.
public struct FileBytes: ByteSource, ByteSink {
    public let fd: Int32
    public init(fd: Int32) { self.fd = fd }

    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws -> Int {
        try FileIO.pread(fd, into: buffer, at: Int64(offset), "read for checkpoint")
    }

    public func data(from offset: UInt64, before end: UInt64) -> Range<UInt64>? {
        let start = lseek(fd, off_t(offset), FileIO.seekData)
        if start < 0 || UInt64(start) >= end { return errno == ENXIO || start >= 0 ? nil : offset..<end }
        let hole = lseek(fd, off_t(start), FileIO.seekHole)
        return UInt64(start)..<(hole < 0 ? end : min(end, UInt64(hole)))
    }

    public func write(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws {
        try FileIO.pwriteAll(fd, bytes, at: Int64(offset), "copy-up")
    }

    public func setSize(_ size: UInt64) throws {
        if ftruncate(fd, off_t(size)) != 0 { throw StoreError.fromErrno("truncate copy-up") }
    }
}
