#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import AetherModel
import AetherCore
import AetherVFS
import AetherArchive

struct ExportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export", abstract: "Write a snapshot, or a session's live state, as a pax tar archive.",
        discussion: "REF is a checkpoint or commit id, SESSION@CHECKPOINT, a branch, or a session's name (its live state). The same snapshot always exports to the same bytes.\n\nExamples:\n  aetherfs export main -o release.tar.zst\n  aetherfs export work@green --path src -o - | tar -tvf -")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "What to export.", completion: Completions.refs) var ref: String
    @Option(name: .shortAndLong, help: "The archive to write ('-': standard output; default: standard output).") var output = "-"
    @Option(name: .long, help: "tar, tar.zst or tar.gz (default: from the output's name, else tar).") var format: String?
    @Option(name: .long, help: "Export only this directory of the snapshot.") var path: String?

    func run() throws {
        let repo = try global.open(create: false)
        let summary = try fail { () throws(AetherError) -> ExportSummary in
            let kind = try archiveFormat()
            if output == "-" && isatty(1) != 0 { throw .invalid("standard output is a terminal; give -o FILE or redirect it") }
            return try writeArchive(output) { (fd) throws(AetherError) in
                defer { clearProgress() }
                return try Archives.export(repo, ref: ref, format: kind, path: path, fd: fd) { (bytes) throws(AetherError) in
                    printProgress("export: \(bytes >> 20) MiB")
                }
            }
        }
        for p in summary.skipped { warn("export: \(p) is a socket, which a tar archive cannot hold; left out") }
        if summary.withheld > 0 { warn("export: \(summary.withheld) entries withheld by the policy's never_persist rules") }
        if global.json { say(JSONText.encode(summary)) } else if output != "-" {
            say("exported \(summary.entries) entries, \(summary.bytes) bytes of content, to \(output)")
        }
    }

    func archiveFormat() throws(AetherError) -> ArchiveFormat {
        if let format {
            guard let f = ArchiveFormat(rawValue: format) else {
                throw .invalid("--format \(format): expected \(ArchiveFormat.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            return f
        }
        if output.hasSuffix(".tar.zst") || output.hasSuffix(".tzst") { return .tarZstd }
        if output.hasSuffix(".tar.gz") || output.hasSuffix(".tgz") { return .tarGzip }
        return .tar
    }
}

/// Runs `body` on the descriptor of `output` ('-': standard output). A file is written beside its
/// name and renamed over it only when `body` succeeds: a failed export leaves no partial archive,
/// and an existing file stays as it was. What exists and is not a regular file (`/dev/null`, a FIFO)
/// is written as it is.
func writeArchive<T>(_ output: String, _ body: (Int32) throws(AetherError) -> T) throws(AetherError) -> T {
    if output == "-" { return try body(1) }
    var st = stat()
    if stat(output, &st) == 0 && st.st_mode & S_IFMT != S_IFREG {
        let fd = Glibc.open(output, O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else { throw .system(errno, "cannot write \(output): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        return try body(fd)
    }
    let partial = output + ".aetherfs-partial"
    let fd = Glibc.open(partial, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
    guard fd >= 0 else { throw .system(errno, "cannot write \(output): \(String(cString: strerror(errno)))") }
    var open = true
    do throws(AetherError) {
        let result = try body(fd)
        let failure = { () -> AetherError in .system(errno, "cannot write \(output): \(String(cString: strerror(errno)))") }
        guard fsync(fd) == 0 else { throw failure() }
        open = false
        guard close(fd) == 0, rename(partial, output) == 0 else { throw failure() }
        return result
    } catch {
        if open { close(fd) }
        unlink(partial)
        throw error
    }
}
