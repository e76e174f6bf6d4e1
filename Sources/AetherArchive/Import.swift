#if canImport(Glibc)
import Glibc
#endif
import CArchive
import AetherModel
import AetherCore
import AetherStore

/// What an import may take in and keep. The limits stop a compression bomb before it fills the store.
public struct ImportOptions: Sendable {
    /// The most bytes of file content (their logical sizes, holes included) the archive may hold.
    public var maxBytes: UInt64 = ImportOptions.defaultMaxBytes
    /// The most entries the archive may hold.
    public var maxEntries: Int = ImportOptions.defaultMaxEntries
    /// Device nodes are taken in (root only); otherwise an archive holding one is refused.
    public var allowDevices = false
    /// Setuid and setgid bits and file capabilities are kept (root only); otherwise they are dropped.
    public var keepSetid = false
    /// Who imports: a caller other than root owns every entry, as GNU tar's `--no-same-owner`.
    public var uid: UInt32
    public var gid: UInt32

    public static let defaultMaxBytes: UInt64 = 16 << 30
    public static let defaultMaxEntries = 1_000_000

    public init(uid: UInt32, gid: UInt32) { self.uid = uid; self.gid = gid }
}

/// What an import took in.
public struct ImportSummary: Codable, Equatable, Sendable {
    public var entries: Int
    /// Bytes of file content (logical sizes).
    public var bytes: UInt64
    /// Chunks the store did not hold before, and the bytes they take.
    public var chunksAdded: Int
    public var bytesAdded: Int64
    /// Bytes written to the store (chunks, manifests and trees as stored, compressed).
    public var bytesStored: Int64
    /// The imported tree's root.
    public var root: String
    /// What was left out by the rules (setuid bits, privileged attributes), one line each.
    public var dropped: [String]

    enum CodingKeys: String, CodingKey {
        case entries, bytes, chunksAdded = "chunks_added", bytesAdded = "bytes_added", bytesStored = "bytes_stored", root, dropped
    }
}

/// Builds a snapshot's tree straight into the chunk store from an archive's entries (tar in every
/// dialect libarchive reads — ustar, pax, GNU long names and sparse files — bare or compressed by
/// gzip, bzip2, xz or zstd, and zip). Nothing is extracted onto the host: a symlink in the archive is
/// data, never followed. A hostile archive is refused whole, with the member and the reason: what it
/// stored until then is unreferenced (no session, checkpoint or reference names it).
public final class ArchiveImporter {
    let repo: Repository
    let options: ImportOptions
    let archive: OpaquePointer
    var summary = ImportSummary(entries: 0, bytes: 0, chunksAdded: 0, bytesAdded: 0, bytesStored: 0, root: "", dropped: [])
    let top: ImportDirectory
    var leaves: [ImportLeaf] = []
    /// Each hard-link group's number of names, by its first path.
    var groupSizes: [[[UInt8]]: UInt32] = [:]
    /// Hears of the archive's bytes read so far (compressed) and the content bytes taken in; what it
    /// throws ends the import.
    public var progress: ((_ read: Int64, _ summary: ImportSummary) throws(AetherError) -> Void)?
    let now = nanosecondsNow()

    /// An importer reading the archive on the open descriptor `fd` (not closed here).
    public init(repo: Repository, options: ImportOptions, fd: Int32) throws(AetherError) {
        self.repo = repo
        self.options = options
        guard let a = archive_read_new() else { throw .failed("libarchive could not make a reader") }
        archive = a
        top = ImportDirectory(mode: 0o755, uid: options.uid, gid: options.gid, mtime: now)
        let ok = archive_read_support_format_tar(a) == ARCHIVE_OK
            && archive_read_support_format_zip(a) == ARCHIVE_OK
            && archive_read_support_filter_gzip(a) >= ARCHIVE_WARN
            && archive_read_support_filter_bzip2(a) >= ARCHIVE_WARN
            && archive_read_support_filter_xz(a) >= ARCHIVE_WARN
            && archive_read_support_filter_lzma(a) >= ARCHIVE_WARN
            && archive_read_support_filter_zstd(a) >= ARCHIVE_WARN
            && archive_read_open_fd(a, fd, 256 << 10) == ARCHIVE_OK
        // On failure the reader is freed by deinit, which runs for a class whose init throws.
        if !ok { throw .invalid("import refused: not an archive libarchive reads: \(SnapshotExporter.message(a))") }
    }

    deinit { archive_read_free(archive) }

    var privileged: Bool { options.uid == 0 }

    /// Reads every entry, stores the tree and returns its root (its objects synced).
    public func run() throws(AetherError) -> (root: ObjectID, summary: ImportSummary) {
        let storedBefore = repo.objects.written
        var entry: OpaquePointer?
        var shown = ""
        while true {
            let r = archive_read_next_header(archive, &entry)
            if r == ARCHIVE_EOF { break }
            guard r == ARCHIVE_OK, let entry else {
                // Damage shows at the header after the member whose data was longer or cut short.
                let at = summary.entries == 0 ? "the archive" : "after member \"\(shown)\", the archive"
                throw .invalid("import refused: \(at) is damaged or not one libarchive reads: \(SnapshotExporter.message(archive))")
            }
            summary.entries += 1
            let raw = archive_entry_pathname(entry).map { Array(UnsafeRawBufferPointer(start: $0, count: strlen($0))) } ?? []
            shown = String(decoding: raw, as: UTF8.self)
            if shown.count > 200 { shown = shown.prefix(200) + "…" }
            do throws(ImportRefusal) {
                guard summary.entries <= options.maxEntries else {
                    throw ImportRefusal("the archive holds more than \(options.maxEntries) entries (--max-entries)")
                }
                try take(entry, path: raw)
            } catch {
                throw .invalid("import refused: member \"\(shown)\": \(error.reason)")
            }
            try progress?(archive_filter_bytes(archive, -1), summary)
        }
        for leaf in leaves { if let g = leaf.group { groupSizes[g, default: 0] += 1 } }
        let root = try storeTree(top)
        try domain { try repo.objects.sync() }
        summary.root = root.hex
        summary.bytesStored = repo.objects.written - storedBefore
        return (root, summary)
    }

    // MARK: entries

    private func take(_ entry: OpaquePointer, path raw: [UInt8]) throws(ImportRefusal) {
        let type = UInt32(archive_entry_filetype(entry))
        let hardlink = archive_entry_hardlink(entry)
        let isDirectory = hardlink == nil && type == NodeKind.directory.typeBits
        let parts = try ImportPath.components(raw, directory: isDirectory)
        if parts.count >= 1 && parts[0] == Workspace.controlDirectoryName {
            throw ImportRefusal("\".aether\" at the top is the control directory of every mount")
        }
        let (dir, name) = try parent(of: parts)
        if let hardlink {
            let targetRaw = Array(UnsafeRawBufferPointer(start: hardlink, count: strlen(hardlink)))
            let target = try ImportPath.components(targetRaw, directory: false)
            guard let index = leafIndex(target), leaves[index].entry.kind == .file else {
                throw ImportRefusal("a hard link to \"\(String(decoding: targetRaw, as: UTF8.self))\", which is not an earlier regular file of the archive")
            }
            guard let name, dir.children[name] == nil else { throw ImportRefusal("more than one entry for this path") }
            if leaves[index].group == nil { leaves[index].group = leaves[index].path }
            var link = leaves[index]
            link.path = parts
            leaves.append(link)
            dir.children[name] = .leaf(leaves.count - 1)
            return
        }
        guard let kind = NodeKind(typeBits: type) else { throw ImportRefusal("an entry of unknown type \(String(type, radix: 8))") }
        var mode = UInt32(archive_entry_perm(entry)) & 0o7777
        let path = String(decoding: Array(parts.joined(separator: [47])), as: UTF8.self)
        if mode & 0o6000 != 0 && !(privileged && options.keepSetid) {
            mode &= ~0o6000
            summary.dropped.append("\(path): setuid/setgid bits")
        }
        let owned = privileged
        let uid = owned ? UInt32(truncatingIfNeeded: archive_entry_uid(entry)) : options.uid
        let gid = owned ? UInt32(truncatingIfNeeded: archive_entry_gid(entry)) : options.gid
        let mtime = archive_entry_mtime_is_set(entry) != 0
            ? Int64(archive_entry_mtime(entry)) * 1_000_000_000 + Int64(archive_entry_mtime_nsec(entry)) : now
        let xattrs = try attributes(entry, path: path)
        if kind == .directory {
            let d: ImportDirectory
            if let name {
                switch dir.children[name] {
                case nil:
                    d = ImportDirectory(mode: mode, uid: uid, gid: gid, mtime: mtime)
                    dir.children[name] = .directory(d)
                case .directory(let existing) where !existing.explicit:
                    d = existing
                default:
                    throw ImportRefusal("more than one entry for this path")
                }
            } else {
                d = top
                guard !d.explicit else { throw ImportRefusal("more than one entry for this path") }
            }
            d.explicit = true
            d.mode = mode; d.uid = uid; d.gid = gid; d.mtime = mtime; d.xattrs = xattrs
            return
        }
        guard let name else { throw ImportRefusal("the archive's top is not a directory") }
        guard dir.children[name] == nil else { throw ImportRefusal("more than one entry for this path") }
        var e = TreeEntry(name: name, kind: kind, mode: mode, uid: uid, gid: gid, mtime: mtime, xattrs: xattrs)
        switch kind {
        case .file:
            let size = archive_entry_size_is_set(entry) != 0 ? UInt64(max(0, archive_entry_size(entry))) : 0
            guard summary.bytes + size <= options.maxBytes else {
                throw ImportRefusal("its content would take the archive past \(options.maxBytes) bytes (--max-bytes)")
            }
            let ingested = try content(of: entry, size: size)
            e.size = size
            e.content = ingested.manifest
            summary.bytes += size
            summary.chunksAdded += ingested.newChunks
            summary.bytesAdded += ingested.newBytes
        case .symlink:
            guard let t = archive_entry_symlink(entry), strlen(t) > 0 else { throw ImportRefusal("a symlink with no target") }
            e.target = Array(UnsafeRawBufferPointer(start: t, count: strlen(t)))
            guard e.target.count < 4096 else { throw ImportRefusal("a symlink target over 4,095 bytes") }
            e.size = UInt64(e.target.count)
        case .charDevice, .blockDevice:
            guard privileged && options.allowDevices else {
                throw ImportRefusal("a device node (taken in only by root with --allow-devices)")
            }
            e.rdev = UInt64(archive_entry_rdev(entry))
        case .fifo:
            break
        case .socket:
            throw ImportRefusal("a socket, which a snapshot can hold but an import does not make")
        case .directory:
            preconditionFailure("directories are taken above")
        }
        leaves.append(ImportLeaf(entry: e, path: parts))
        dir.children[name] = .leaf(leaves.count - 1)
    }

    /// The directory an entry goes in (made as needed, as extractors do) and its name there (nil for
    /// the archive's top, `.` or `./`). Every component on the way must be a directory the archive
    /// made or implied: never a symlink, never a file.
    private func parent(of parts: [[UInt8]]) throws(ImportRefusal) -> (ImportDirectory, [UInt8]?) {
        guard let last = parts.last else { return (top, nil) }
        var dir = top
        for (i, part) in parts.dropLast().enumerated() {
            switch dir.children[part] {
            case .directory(let d)?:
                dir = d
            case .leaf(let index)?:
                let at = String(decoding: Array(parts[...i].joined(separator: [47])), as: UTF8.self)
                if leaves[index].entry.kind == .symlink {
                    throw ImportRefusal("it would be written through \"\(at)\", a symlink the archive made earlier")
                }
                throw ImportRefusal("\"\(at)\" is not a directory")
            case nil:
                let d = ImportDirectory(mode: 0o755, uid: options.uid, gid: options.gid, mtime: now)
                dir.children[part] = .directory(d)
                dir = d
            }
        }
        return (dir, last)
    }

    private func leafIndex(_ parts: [[UInt8]]) -> Int? {
        guard let last = parts.last else { return nil }
        var dir = top
        for part in parts.dropLast() {
            guard case .directory(let d)? = dir.children[part] else { return nil }
            dir = d
        }
        if case .leaf(let i)? = dir.children[last] { return i }
        return nil
    }

    /// An entry's extended attributes, by the rules: `user.*` and POSIX ACLs (checked) always; file
    /// capabilities only with `--keep-setid` as root; other `security.*` and `trusted.*` only for root.
    private func attributes(_ entry: OpaquePointer, path: String) throws(ImportRefusal) -> XattrMap {
        var out: XattrMap = [:]
        guard archive_entry_xattr_reset(entry) > 0 else { return out }
        var namePointer: UnsafePointer<CChar>?
        var value: UnsafeRawPointer?
        var size = 0
        var listed = 0
        while archive_entry_xattr_next(entry, &namePointer, &value, &size) == ARCHIVE_OK {
            guard let namePointer else { continue }
            let name = String(cString: namePointer)
            let bytes = value.map { Array(UnsafeRawBufferPointer(start: $0, count: size)) } ?? []
            guard !name.isEmpty, name.utf8.count <= 255 else { throw ImportRefusal("an extended attribute name that is empty or over 255 bytes") }
            guard bytes.count <= Workspace.maxXattrValue else {
                throw ImportRefusal("extended attribute \(name) holds over \(Workspace.maxXattrValue) bytes")
            }
            listed += name.utf8.count + 1
            guard listed <= Workspace.maxXattrList else {
                throw ImportRefusal("the names of its extended attributes take over \(Workspace.maxXattrList) bytes")
            }
            if name.hasPrefix("user.") {
                out[name] = bytes
            } else if PosixACL.isACL(name) {
                do { _ = try PosixACL(xattr: bytes) } catch { throw ImportRefusal("\(name) is not a POSIX ACL") }
                out[name] = bytes
            } else if name == "security.capability" {
                if privileged && options.keepSetid { out[name] = bytes } else { summary.dropped.append("\(path): attribute \(name)") }
            } else if name.hasPrefix("security.") || name.hasPrefix("trusted.") {
                if privileged { out[name] = bytes } else { summary.dropped.append("\(path): attribute \(name)") }
            } else {
                summary.dropped.append("\(path): attribute \(name) (an unknown namespace)")
            }
        }
        return out
    }

    /// Cuts a regular file's data into the store as it streams out of the archive.
    private func content(of entry: OpaquePointer, size: UInt64) throws(ImportRefusal) -> ContentStore.Ingested {
        var ranges: [Range<UInt64>] = []
        if archive_entry_sparse_reset(entry) > 0 {
            var offset: la_int64_t = 0, length: la_int64_t = 0
            while archive_entry_sparse_next(entry, &offset, &length) == ARCHIVE_OK {
                guard offset >= 0, length >= 0, UInt64(offset) + UInt64(length) <= size else {
                    throw ImportRefusal("its sparse map reaches past its size")
                }
                if length == 0 { continue }
                let r = UInt64(offset)..<UInt64(offset + length)
                if let last = ranges.last {
                    guard r.lowerBound >= last.upperBound else { throw ImportRefusal("its sparse map is out of order") }
                    if r.lowerBound == last.upperBound { ranges[ranges.count - 1] = last.lowerBound..<r.upperBound; continue }
                }
                ranges.append(r)
            }
        } else if size > 0 {
            ranges = [0..<size]
        }
        let source = ArchiveEntrySource(archive: archive, ranges: ranges, size: size)
        do {
            try repo.ensureRoom(for: Int(min(size, UInt64(Int.max))))
            let ingested = try repo.content.ingest(source, size: size)
            try source.finish()
            return ingested
        } catch let refusal as ImportRefusal {
            throw refusal
        } catch {
            throw ImportRefusal(AetherError.from(error).description)
        }
    }

    // MARK: trees

    private func storeTree(_ dir: ImportDirectory) throws(AetherError) -> ObjectID {
        var entries: [TreeEntry] = []
        entries.reserveCapacity(dir.children.count)
        for (name, child) in dir.children {
            switch child {
            case .directory(let d):
                entries.append(TreeEntry(name: name, kind: .directory, content: try storeTree(d)))
            case .leaf(let i):
                var e = leaves[i].entry
                e.name = name
                if let group = leaves[i].group {
                    e.linkGroup = ImportPath.linkGroup(group)
                    e.nlink = groupSizes[group] ?? 1
                }
                if e.kind == .file && e.content == nil { e.content = try domain { try repo.content.emptyManifest() } }
                entries.append(e)
            }
        }
        let tree = Tree(mode: dir.mode, uid: dir.uid, gid: dir.gid, mtime: dir.mtime, xattrs: dir.xattrs, entries: entries)
        return try domain { try repo.content.putTree(tree) }
    }
}

/// Why a member is refused.
struct ImportRefusal: Error {
    let reason: String
    init(_ reason: String) { self.reason = reason }
}

final class ImportDirectory {
    var mode: UInt32, uid: UInt32, gid: UInt32, mtime: Int64
    var xattrs: XattrMap = [:]
    /// Made by an entry of its own (not only implied by the paths below it).
    var explicit = false
    var children: [[UInt8]: ImportChild] = [:]
    init(mode: UInt32, uid: UInt32, gid: UInt32, mtime: Int64) { self.mode = mode; self.uid = uid; self.gid = gid; self.mtime = mtime }
}

enum ImportChild {
    case directory(ImportDirectory)
    case leaf(Int)
}

struct ImportLeaf {
    var entry: TreeEntry
    var path: [[UInt8]]
    /// The path of the first entry of its hard-link group, when it has one.
    var group: [[UInt8]]?
}

/// The rules for an archive member's name.
public enum ImportPath {
    public static let maxPath = 4096
    public static let maxComponent = 255

    /// A member's path as components below the archive's top (empty for the top itself: `.` or
    /// `./`). One leading `./` and, on a directory, one trailing `/` are allowed; refused are absolute
    /// paths, `..`, empty and `.` components, NUL, components over 255 bytes and paths over 4,096.
    static func components(_ raw: [UInt8], directory: Bool) throws(ImportRefusal) -> [[UInt8]] {
        guard !raw.isEmpty else { throw ImportRefusal("an empty name") }
        guard !raw.contains(0) else { throw ImportRefusal("a NUL in its name") }
        guard raw.count <= maxPath else { throw ImportRefusal("a name over \(maxPath) bytes") }
        guard raw.first != 47 else { throw ImportRefusal("an absolute path") }
        var body = raw[...]
        if body == [46] || body == [46, 47] { return [] }
        if body.starts(with: [46, 47]) { body = body.dropFirst(2) }
        if body.last == 47 {
            guard directory else { throw ImportRefusal("a name ending in '/' on an entry that is not a directory") }
            body = body.dropLast()
        }
        var parts: [[UInt8]] = []
        for part in body.split(separator: 47, omittingEmptySubsequences: false) {
            guard !part.isEmpty else { throw ImportRefusal("an empty component (\"//\")") }
            guard part != [46] else { throw ImportRefusal("a \".\" component") }
            guard part != [46, 46] else { throw ImportRefusal("a \"..\" component") }
            guard part.count <= maxComponent else { throw ImportRefusal("a component over \(maxComponent) bytes") }
            parts.append(Array(part))
        }
        return parts
    }

    /// A hard-link group's id in an imported tree: from the path of its first entry, with the top bit
    /// set (as every new group's id), so that the same archive imports to the same tree.
    static func linkGroup(_ first: [[UInt8]]) -> UInt64 { Workspace.linkGroup(firstPath: first) }
}

/// An archive entry's data as a source for the chunker: the data ranges come from its sparse map
/// (or are the whole file), the bytes from libarchive's blocks in order.
final class ArchiveEntrySource: ByteSource {
    let archive: OpaquePointer
    let ranges: [Range<UInt64>]
    let size: UInt64
    var block: UnsafeRawBufferPointer?
    var blockOffset: UInt64 = 0
    var ended = false
    /// Bytes of data libarchive gave.
    var delivered: UInt64 = 0

    init(archive: OpaquePointer, ranges: [Range<UInt64>], size: UInt64) {
        self.archive = archive; self.ranges = ranges; self.size = size
    }

    func data(from offset: UInt64, before end: UInt64) -> Range<UInt64>? {
        guard let r = ranges.first(where: { $0.upperBound > offset && $0.lowerBound < end }) else { return nil }
        return max(r.lowerBound, offset)..<min(r.upperBound, end)
    }

    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws -> Int {
        var filled = 0
        while filled < buffer.count {
            let want = offset + UInt64(filled)
            guard let b = block, blockOffset + UInt64(b.count) > want else {
                guard try next() else { break }
                continue
            }
            if blockOffset > want {
                // A gap libarchive left inside a data range reads as zeros.
                let n = Int(min(blockOffset - want, UInt64(buffer.count - filled)))
                (buffer.baseAddress! + filled).initializeMemory(as: UInt8.self, repeating: 0, count: n)
                filled += n
                continue
            }
            let from = Int(want - blockOffset)
            let n = min(b.count - from, buffer.count - filled)
            (buffer.baseAddress! + filled).copyMemory(from: b.baseAddress! + from, byteCount: n)
            filled += n
        }
        return filled
    }

    /// The next block of data; false at the entry's end.
    private func next() throws -> Bool {
        if ended { return false }
        var pointer: UnsafeRawPointer?
        var count = 0
        var offset: la_int64_t = 0
        let r = archive_read_data_block(archive, &pointer, &count, &offset)
        if r == ARCHIVE_EOF { ended = true; block = nil; return false }
        guard r == ARCHIVE_OK else { throw ImportRefusal("its data cannot be read: \(SnapshotExporter.message(archive))") }
        guard offset >= 0, UInt64(offset) + UInt64(count) <= size else {
            throw ImportRefusal("its data is longer than its header says (\(size) bytes)")
        }
        block = UnsafeRawBufferPointer(start: pointer, count: count)
        blockOffset = UInt64(offset)
        delivered += UInt64(count)
        return true
    }

    /// Reads what is left and checks the data was as long as the header said.
    func finish() throws {
        while try next() {}
        let expected = ranges.reduce(0) { $0 + ($1.upperBound - $1.lowerBound) }
        guard delivered == expected else {
            throw ImportRefusal(delivered < expected ? "its data is shorter than its header says (\(delivered) of \(expected) bytes)"
                                                     : "its data is longer than its header says (\(delivered) bytes, \(expected) expected)")
        }
    }
}
