#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import AetherModel
import AetherCore
import AetherVFS
import AetherArchive

struct ImportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "import", abstract: "Build a snapshot from an archive (tar in any dialect, gzip/bzip2/xz/zstd, or zip).",
        discussion: """
        The archive's entries go straight into the chunk store; nothing is extracted onto this machine, so a \
        symlink in the archive is data and never followed. A hostile archive (absolute paths, '..', a member \
        under a symlink it made, a hard link to nothing earlier, devices, duplicate paths, data longer or \
        shorter than its header, more than --max-bytes or --max-entries) is refused whole: one line names the \
        member and the reason, and no session, checkpoint or reference is made.

        Examples:
          aetherfs import release.tar.zst --session review
          curl -s https://example.org/src.tar.gz | aetherfs import - --into work -m "upstream 1.4"
        """)
    @OptionGroup var global: GlobalOptions
    @Argument(help: "The archive ('-': standard input).") var archive: String
    @Option(name: .long, help: "Make a new session with the archive's tree as its first checkpoint.") var session: String?
    @Option(name: .long, help: "Make the archive's tree a new checkpoint of this session, and its tree (as a restore).", completion: Completions.sessions) var into: String?
    @Option(name: .shortAndLong, help: "The checkpoint's message.") var message: String?
    @Option(name: .long, help: "Metadata key=value for the checkpoint (repeatable).") var meta: [String] = []
    @Option(name: .long, help: "The most bytes of file content to take in (default \(ImportOptions.defaultMaxBytes), 16 GiB).")
    var maxBytes: UInt64 = ImportOptions.defaultMaxBytes
    @Option(name: .long, help: "The most entries to take in (default \(ImportOptions.defaultMaxEntries)).")
    var maxEntries: Int = ImportOptions.defaultMaxEntries
    @Flag(name: .long, help: "Take in device nodes (root only).") var allowDevices = false
    @Flag(name: .long, help: "Keep setuid/setgid bits and file capabilities (root only).") var keepSetid = false
    @Flag(inversion: .prefixedNo, help: "Show progress on standard error (default: when it is a terminal).") var progress: Bool?

    func validate() throws {
        guard (session == nil) != (into == nil) else { throw ValidationError("give one of --session NEW or --into SESSION") }
        guard maxEntries > 0 else { throw ValidationError("--max-entries must be at least 1") }
    }

    func run() throws {
        let repo = try global.open(create: false)
        let summary = try fail { () throws(AetherError) -> ImportSummary in
            let text = message ?? "import of \(archive == "-" ? "standard input" : archive)"
            var options = ImportOptions(uid: getuid(), gid: getgid())
            options.maxBytes = maxBytes
            options.maxEntries = maxEntries
            options.allowDevices = allowDevices
            options.keepSetid = keepSetid
            let target: Archives.Target = session.map { .newSession($0) } ?? .into(into ?? "")
            return try readArchive { (fd) throws(AetherError) in
                let size = archiveSize(fd)
                let meter = ProgressMeter(verb: "import", forced: progress)
                defer { meter.end() }
                return try Archives.importArchive(repo, fd: fd, into: target, message: text, meta: try SessionAccess.meta(meta), options: options,
                                                  caller: getuid()) { (read, summary) throws(AetherError) in meter.show(read: read, summary, total: size) }
            }
        }
        for line in summary.dropped.prefix(20) { warn("import: \(line) dropped") }
        if summary.dropped.count > 20 { warn("import: \(summary.dropped.count - 20) more dropped (all of them are in --json's \"dropped\")") }
        if global.json {
            say(JSONText.encode(summary))
        } else {
            let target = session.map { "new session \($0)" } ?? "session \(into ?? "")"
            say("imported \(summary.entries) entries, \(summary.bytes) bytes of content (\(summary.bytesAdded) new, \(summary.bytesStored) stored), into \(target)")
        }
    }

    /// Runs `body` on the archive's descriptor ('-': standard input).
    func readArchive<T>(_ body: (Int32) throws(AetherError) -> T) throws(AetherError) -> T {
        if archive == "-" { return try body(0) }
        let fd = Glibc.open(archive, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw .system(errno, "cannot read \(archive): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        return try body(fd)
    }

    func archiveSize(_ fd: Int32) -> Int64? {
        var st = stat()
        guard fstat(fd, &st) == 0, st.st_mode & S_IFMT == S_IFREG else { return nil }
        return Int64(st.st_size)
    }
}

extension ProgressMeter {
    /// An import's: entries, content, bytes of the archive read and their rate, and the time left
    /// when the archive's size is known.
    func show(read: Int64, _ s: ImportSummary, total: Int64?) {
        emit({ () -> String in
            let rate = Double(read) / self.elapsed
            var line = "\(s.entries) entries, \(s.bytes >> 20) MiB of content, \(read >> 20) MiB read at \(Int(rate / 1_048_576)) MiB/s"
            if let total, total > 0, rate > 0 { line += ", \(Int(Double(max(0, total - read)) / rate)) s left" }
            return line
        }())
    }
}
