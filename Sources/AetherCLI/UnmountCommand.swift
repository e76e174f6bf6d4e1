#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import AetherCore
import AetherMeta
import AetherStore
import AetherVFS

struct UnmountCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "unmount", abstract: "Unmount a session's mount and wait for its filesystem to stop.", discussion: "Examples:\n  aetherfs unmount ~/work\n  aetherfs unmount --lazy ~/work")

    @OptionGroup var global: GlobalOptions

    @Argument(help: "The mount point.")
    var directory: String

    @Flag(name: .long, help: "Detach lazily even while files are open.")
    var lazy = false

    func run() throws {
        let path = realpath(directory, nil).map { p in defer { free(p) }; return String(cString: p) } ?? directory
        guard MountTable.isMounted(path, type: "fuse.aetherfs") else {
            printError("\(directory) is not an aetherfs mount")
            throw ExitCode(1)
        }
        // The daemon names its store and session in .aether/status; after the unmount it still saves
        // what is pending, holding the session's lock until it is done.
        let status = (try? FileIO.readFile(path + "/.aether/status")).map { String(decoding: $0, as: UTF8.self) } ?? ""
        let rc = try fail { () throws(AetherError) in try Spawn.wait(["fusermount3", lazy ? "-uz" : "-u", path]) }
        if rc != 0 {
            printError("fusermount3 could not unmount \(path) (busy? try --lazy)")
            throw ExitCode(1)
        }
        let storePath = field(status, "path"), sessionName = field(status, "session")
        if let repo = try? Repository(path: storePath, create: false), let s = try? repo.session(named: sessionName) {
            let deadline = nanosecondsNow() + 30_000_000_000
            while nanosecondsNow() < deadline, repo.mountpoint(of: s) != nil { usleep(20_000) }
        }
        say(global.json ? "{\"unmounted\":\(jsonString(path))}" : "unmounted \(path)")
    }
}
