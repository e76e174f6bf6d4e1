import ArgumentParser
import AetherStoreS3
import AetherMetaPostgres
import AetherVFS
import AetherModel
import AetherCore
import Logging
#if canImport(Glibc)
import Glibc
#endif

/// The `aetherfs` command: one subcommand per file.
public struct AetherCommand: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "aetherfs",
        abstract: "A copy-on-write FUSE filesystem with checkpoints, over a deduplicating chunk store.",
        discussion: """
        Zero-config: `aetherfs mount DIR` creates the default store and a session and mounts it.
        Inside a mount, .aether/checkpoint, .aether/restore, .aether/status, .aether/log and .aether/last
        are the control surface.
        """,
        version: "aetherfs \(Repository.softwareVersion) (store format \(Repository.formatVersion), metadata schema \(Repository.schemaVersion))",
        subcommands: [InitCommand.self, MountCommand.self, UnmountCommand.self, SessionCommand.self,
                      CheckpointCommand.self, CheckpointsCommand.self, RestoreCommand.self, ForkCommand.self,
                      CommitCommand.self, BranchCommand.self, LogCommand.self, ShowCommand.self, DiffCommand.self,
                      VerifyCommand.self, ExportCommand.self, ImportCommand.self,
                      ProposeCommand.self, ProposalsCommand.self, ProposalCommand.self, ReviewCommand.self, PolicyCommand.self, AuditCommand.self, PromoteCommand.self, KeyCommand.self, StatsCommand.self, McpCommand.self, UsageCommand.self, GCCommand.self, PruneCommand.self, TokenCommand.self, ServeCommand.self, SyncCommand.self])

    public init() {}

    /// Runs the command line; the executable's whole `main`.
    public static func run() {
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = getenv("AETHERFS_DEBUG") != nil ? .debug : .notice
            return handler
        }
        S3Backend.register()
        PostgresMetadata.register()
        let invoked = CommandLine.arguments.first.map { String($0.split(separator: "/").last ?? "") } ?? ""
        if MountHelper.names.contains(invoked) {
            switch MountHelper.translate(Array(CommandLine.arguments.dropFirst())) {
            case .success(let args): main(args); return
            case .failure(let e):
                printError("\(invoked): \(e.message) (usage: mount -t fuse.aetherfs SESSION DIR -o store=PATH[,allow_other,…])", code: "invalid")
                Glibc.exit(1)
            }
        }
        main()
    }
}

/// Options every command takes.
struct GlobalOptions: ParsableArguments {
    @Option(name: .long, help: "The store directory (default: $AETHERFS_STORE, else ~/.local/share/aetherfs).")
    var store: String?

    @Flag(name: .long, help: "Print JSON instead of text (errors too: {\"error\":{\"code\",\"message\"}} on standard error).")
    var json = false

    func validate() throws { CLIOutput.json = json }

    /// The store's absolute path (a daemon runs from `/`).
    var storePath: String {
        let path = store ?? Repository.defaultPath
        if path.hasPrefix("/") { return path }
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX))
        guard getcwd(&buffer, buffer.count) != nil else { return path }
        return String(cString: buffer) + "/" + path
    }

    /// Opens the store; only `init`, `mount` and `session create` may create it (`create`).
    func open(create: Bool) throws -> Repository {
        try fail { () throws(AetherError) in try Repository(path: storePath, create: create) }
    }
}

/// How this run prints (set from `--json` when the options are parsed).
enum CLIOutput {
    nonisolated(unsafe) static var json = false
}

/// An error as `--json` prints it.
struct ErrorBody: Encodable {
    struct Detail: Encodable { var code: String; var message: String }
    var error: Detail
}

/// Runs domain code; a domain error becomes one line on standard error (a JSON object under `--json`)
/// and exit status 1.
func fail<T>(_ body: () throws(AetherError) -> T) throws -> T {
    do {
        return try body()
    } catch {
        printError(error.description, code: errorCode(for: error))
        throw ExitCode(1)
    }
}

/// Progress on standard error, overwriting one line, only when it is a terminal.
func printProgress(_ line: String) {
    guard isatty(2) != 0 else { return }
    var text = "\r\u{1B}[K" + String(line.prefix(100))
    text.withUTF8 { _ = Glibc.write(2, $0.baseAddress, $0.count) }
}

/// The progress of a long operation on standard error: on a terminal one line redrawn at most ten
/// times a second; when forced (`--progress`) elsewhere, a line a second; otherwise nothing.
final class ProgressMeter {
    let verb: String
    let start = secondsNow()
    let shown: Bool
    let terminal = isatty(2) != 0
    var last = 0.0

    init(verb: String, forced: Bool? = nil) {
        self.verb = verb
        shown = forced ?? terminal
    }

    var elapsed: Double { max(secondsNow() - start, 0.001) }

    /// Shows `line` (after the verb) unless one was shown just before; `final` always shows.
    func emit(_ line: @autoclosure () -> String, final: Bool = false) {
        guard shown else { return }
        let now = secondsNow()
        guard final || now - last >= (terminal ? 0.1 : 1) else { return }
        last = now
        let text = "\(verb): " + line()
        if terminal {
            printProgress(text)
        } else {
            var out = text + "\n"
            out.withUTF8 { _ = Glibc.write(2, $0.baseAddress, $0.count) }
        }
    }

    /// Done of total, the bytes so far with their rate, and the time left (from the share done).
    func show(done: Int, total: Int, what: String, bytes: Int64) {
        emit({ () -> String in
            let elapsed = self.elapsed
            var line = "\(done) of \(total) \(what)"
            if bytes > 0 { line += ", \(bytes >> 20) MiB at \(Int(Double(bytes) / elapsed) >> 20) MiB/s" }
            if done > 0 && done < total { line += ", \(Int(elapsed * Double(total - done) / Double(done))) s left" }
            return line
        }(), final: done == total)
    }

    func end() { if shown && terminal { clearProgress() } }
}

func clearProgress() {
    guard isatty(2) != 0 else { return }
    var text = "\r\u{1B}[K"
    text.withUTF8 { _ = Glibc.write(2, $0.baseAddress, $0.count) }
}

/// One line on standard error: `aetherfs: error: …`, or under `--json` an `ErrorBody` object.
func printError(_ message: String, code: String = "failed") {
    var line = "aetherfs: error: " + message + "\n"
    if CLIOutput.json {
        line = JSONText.encode(ErrorBody(error: .init(code: code, message: message))) + "\n"
    }
    line.withUTF8 { _ = Glibc.write(2, $0.baseAddress, $0.count) }
}

/// One line on standard error that something was left out or changed, and the command went on.
func warn(_ message: String) { note("warning: " + message) }

/// One line on standard error, beside what standard output carries.
func note(_ message: String) {
    var line = "aetherfs: " + message + "\n"
    line.withUTF8 { _ = Glibc.write(2, $0.baseAddress, $0.count) }
}

func say(_ text: String) {
    var text = text
    if !text.hasSuffix("\n") { text += "\n" }
    text.withUTF8 { _ = Glibc.write(1, $0.baseAddress, $0.count) }
}
