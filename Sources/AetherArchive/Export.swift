#if canImport(Glibc)
import Glibc
#endif
import CArchive
import AetherModel
import AetherCore
import AetherStore

/// The archive formats an export writes: pax tar, bare or compressed.
public enum ArchiveFormat: String, CaseIterable, Sendable {
    case tar, tarZstd = "tar.zst", tarGzip = "tar.gz"
}

/// What an export wrote.
public struct ExportSummary: Codable, Equatable, Sendable {
    public var entries: Int
    /// Bytes of file content written (before compression).
    public var bytes: UInt64
    /// Paths a tar archive cannot hold (sockets), left out.
    public var skipped: [String]
    /// Entries the policy's never-persist rules left out.
    public var withheld: Int = 0
}

/// Writes a snapshot's tree as a pax tar archive: modes, owners (ids and names), mtimes with
/// nanoseconds, symlinks, hard links as links, FIFOs and devices, extended attributes (one
/// `SCHILY.xattr` record each), files with holes as sparse entries. Deterministic: entries in name order, no export-time fields (no
/// atime or ctime, gzip without a timestamp), so a snapshot exports to the same bytes every time.
/// File content streams from the chunk store a chunk at a time, each verified as it is read.
public final class SnapshotExporter {
    let repo: Repository
    let archive: OpaquePointer
    var summary = ExportSummary(entries: 0, bytes: 0, skipped: [])
    /// The first path written of each hard-link group.
    var linkPaths: [UInt64: [UInt8]] = [:]
    var userNames: [UInt32: String?] = [:]
    var groupNames: [UInt32: String?] = [:]
    /// Hears of the bytes written so far; what it throws ends the export.
    public var progress: ((UInt64) throws(AetherError) -> Void)?

    /// An exporter writing `format` to the open descriptor `fd` (not closed here).
    public init(repo: Repository, format: ArchiveFormat, fd: Int32) throws(AetherError) {
        self.repo = repo
        guard let a = archive_write_new() else { throw .failed("libarchive could not make a writer") }
        archive = a
        var ok = archive_write_set_format_pax(a) == ARCHIVE_OK
            && archive_write_set_format_option(a, "pax", "xattrheader", "SCHILY") == ARCHIVE_OK
        switch format {
        case .tar: break
        case .tarZstd: ok = ok && archive_write_add_filter_zstd(a) == ARCHIVE_OK
        case .tarGzip:
            ok = ok && archive_write_add_filter_gzip(a) == ARCHIVE_OK
                && archive_write_set_filter_option(a, "gzip", "timestamp", nil) == ARCHIVE_OK
        }
        // The last block unpadded whatever the output is (libarchive pads it to 10 KiB on pipes and
        // devices only): a file and a pipe get the same bytes.
        ok = ok && archive_write_set_bytes_in_last_block(a, 1) == ARCHIVE_OK
        ok = ok && archive_write_open_fd(a, fd) == ARCHIVE_OK
        // On failure the writer is freed by deinit, which runs for a class whose init throws.
        if !ok { throw .failed("cannot start a \(format.rawValue) archive: \(SnapshotExporter.message(a))") }
    }

    deinit { archive_write_free(archive) }

    static func message(_ a: OpaquePointer) -> String {
        archive_error_string(a).map { String(cString: $0) } ?? "libarchive error \(archive_errno(a))"
    }

    /// Writes the tree `root` (or its subdirectory `path`, a relative path) and ends the archive.
    public func export(root: ObjectID, path: String? = nil) throws(AetherError) -> ExportSummary {
        var tree = try repo.tree(root)
        if let path, !path.isEmpty {
            for part in path.split(separator: "/") where part != "." {
                guard let e = tree.entries.first(where: { $0.name == Array(part.utf8) }) else { throw .notFound("\(path) in the snapshot") }
                guard e.kind == .directory, let id = e.content else { throw .invalid("\(path) is not a directory of the snapshot") }
                tree = try repo.tree(id)
            }
        }
        let top = TreeEntry(name: [], kind: .directory, mode: tree.mode, uid: tree.uid, gid: tree.gid, mtime: tree.mtime, xattrs: tree.xattrs)
        try write(top, path: Array("./".utf8))
        try walk(tree, prefix: Array("./".utf8))
        guard archive_write_close(archive) == ARCHIVE_OK else { throw .failed("cannot finish the archive: \(SnapshotExporter.message(archive))") }
        return summary
    }

    private func walk(_ tree: Tree, prefix: [UInt8]) throws(AetherError) {
        // A tree's entries are sorted by their name bytes: the archive's order is the same every time.
        for e in tree.entries {
            let path = prefix + e.name
            if e.kind == .socket {
                summary.skipped.append(String(decoding: path, as: UTF8.self))
                continue
            }
            if e.kind == .directory {
                guard let id = e.content else { throw .damaged("directory \(String(decoding: path, as: UTF8.self)) has no tree") }
                let sub = try repo.tree(id)
                var dir = e
                dir.mode = sub.mode; dir.uid = sub.uid; dir.gid = sub.gid; dir.mtime = sub.mtime; dir.xattrs = sub.xattrs
                try write(dir, path: path + [47])
                try walk(sub, prefix: path + [47])
            } else {
                try write(e, path: path)
            }
        }
    }

    private func write(_ e: TreeEntry, path: [UInt8]) throws(AetherError) {
        guard let entry = archive_entry_new() else { throw .failed("libarchive could not make an entry") }
        defer { archive_entry_free(entry) }
        path.withUnsafeBufferPointer { p in
            p.withMemoryRebound(to: CChar.self) { c in
                var z = Array(c) + [0]
                archive_entry_copy_pathname(entry, &z)
            }
        }
        archive_entry_set_mode(entry, e.kind.typeBits | (e.mode & 0o7777))
        archive_entry_set_uid(entry, Int64(e.uid))
        archive_entry_set_gid(entry, Int64(e.gid))
        if let u = userName(e.uid) { archive_entry_copy_uname(entry, u) }
        if let g = groupName(e.gid) { archive_entry_copy_gname(entry, g) }
        archive_entry_set_mtime(entry, Int(e.mtime / 1_000_000_000), Int(e.mtime % 1_000_000_000))
        for name in e.xattrs.keys.sorted() {
            let value = e.xattrs[name]!
            value.withUnsafeBytes { archive_entry_xattr_add_entry(entry, name, $0.baseAddress, $0.count) }
        }
        var content: ObjectID?
        switch e.kind {
        case .file:
            if e.linkGroup != 0, let first = linkPaths[e.linkGroup] {
                var z = first.map { CChar(bitPattern: $0) } + [0]
                archive_entry_copy_hardlink(entry, &z)
                archive_entry_set_size(entry, 0)
            } else {
                if e.linkGroup != 0 { linkPaths[e.linkGroup] = path }
                archive_entry_set_size(entry, Int64(e.size))
                content = e.content
                if let id = e.content, e.size > 0 { try sparseMap(of: id, size: e.size, into: entry) }
            }
        case .symlink:
            var z = e.target.map { CChar(bitPattern: $0) } + [0]
            archive_entry_copy_symlink(entry, &z)
        case .charDevice, .blockDevice:
            archive_entry_set_rdev(entry, dev_t(e.rdev))
        case .directory, .fifo, .socket:
            break
        }
        guard archive_write_header(archive, entry) >= ARCHIVE_WARN else {
            throw .failed("cannot write \(String(decoding: path, as: UTF8.self)) into the archive: \(SnapshotExporter.message(archive))")
        }
        summary.entries += 1
        if let content, e.size > 0 {
            let sink = ArchiveSink(archive: archive, size: e.size, written: summary.bytes, progress: progress)
            do {
                try repo.content.copy(manifest: content, to: sink)
            } catch {
                throw AetherError.from(error)
            }
            summary.bytes += e.size
        }
    }

    /// A file with holes goes out as a sparse entry (GNU sparse 1.0 in pax): its map is the
    /// manifest's data ranges, so readers make it sparse again and an import cuts the same chunks.
    private func sparseMap(of id: ObjectID, size: UInt64, into entry: OpaquePointer) throws(AetherError) {
        let manifest = try domain { try repo.content.manifest(id).manifest }
        guard manifest.chunks.contains(where: { $0.id == Manifest.hole }) else { return }
        let ranges = manifest.dataRanges
        for r in ranges { archive_entry_sparse_add_entry(entry, Int64(r.lowerBound), Int64(r.upperBound - r.lowerBound)) }
        // A file of holes only still needs a map: one empty range at its end.
        if ranges.isEmpty { archive_entry_sparse_add_entry(entry, Int64(size), 0) }
    }

    private func userName(_ uid: UInt32) -> String? {
        if let known = userNames[uid] { return known }
        let name = getpwuid(uid).map { String(cString: $0.pointee.pw_name) }
        userNames[uid] = name
        return name
    }

    private func groupName(_ gid: UInt32) -> String? {
        if let known = groupNames[gid] { return known }
        let name = getgrgid(gid).map { String(cString: $0.pointee.gr_name) }
        groupNames[gid] = name
        return name
    }
}

/// A file's content into the archive, in order: holes the manifest skips are written as zeros (the
/// writer leaves out those of a sparse entry)
/// (the archive holds the file's whole length).
final class ArchiveSink: ByteSink {
    let archive: OpaquePointer
    let size: UInt64
    var at: UInt64 = 0
    let written: UInt64
    let progress: ((UInt64) throws(AetherError) -> Void)?
    static let zeros = [UInt8](repeating: 0, count: 64 * 1024)

    init(archive: OpaquePointer, size: UInt64, written: UInt64, progress: ((UInt64) throws(AetherError) -> Void)?) {
        self.archive = archive; self.size = size; self.written = written; self.progress = progress
    }

    func write(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws {
        try zeros(to: offset)
        try put(bytes)
        try progress?(written + at)
    }

    func setSize(_ size: UInt64) throws {
        guard size == self.size else { throw AetherError.damaged("a file's manifest holds \(size) bytes where its entry says \(self.size)") }
        try zeros(to: size)
    }

    private func zeros(to offset: UInt64) throws {
        while at < offset {
            let n = Int(min(UInt64(ArchiveSink.zeros.count), offset - at))
            try ArchiveSink.zeros.withUnsafeBytes { try put(UnsafeRawBufferPointer(rebasing: $0[..<n])) }
        }
    }

    private func put(_ bytes: UnsafeRawBufferPointer) throws {
        guard !bytes.isEmpty else { return }
        let n = archive_write_data(archive, bytes.baseAddress, bytes.count)
        guard n == bytes.count else {
            throw AetherError.failed("writing the archive failed: \(SnapshotExporter.message(archive))")
        }
        at += UInt64(bytes.count)
    }
}
