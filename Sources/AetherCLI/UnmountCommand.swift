#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import AetherModel
import AetherCore
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
        let status = (try? FileIO.readFile(path + "/.aether/status")).flatMap {
            try? JSONText.decode(StatusInfo.self, String(decoding: $0, as: UTF8.self))
        }
        let rc = try fail { () throws(AetherError) in try Spawn.wait(["fusermount3", lazy ? "-uz" : "-u", path]) }
        if rc != 0 {
            printError("fusermount3 could not unmount \(path) (busy? try --lazy)")
            throw ExitCode(1)
        }
        if let status, let repo = try? Repository(path: status.store.path, create: false),
           let s = try? repo.session(named: status.session) {
            let deadline = nanosecondsNow() + 30_000_000_000
            while nanosecondsNow() < deadline, repo.mountpoint(of: s) != nil { usleep(20_000) }
        }
        say(global.json ? JSONText.encode(["unmounted": path]) : "unmounted \(path)")
    }
}
