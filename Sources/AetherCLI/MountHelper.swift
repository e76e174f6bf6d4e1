#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser

/// `mount -t fuse.aetherfs SESSION DIR -o OPTIONS` and fstab lines run the binary as
/// `mount.fuse.aetherfs SESSION DIR [-o OPTIONS] [-n] [-s] [-v] [-f]`: its arguments become
/// `aetherfs mount`'s. Options: `store=PATH`, `allow_other`, `nonempty`, `writeback_cache`, `dev`,
/// `suid`, `show_control`, `snapshots` (SESSION is then ignored); what mount(8), systemd and fstab
/// add (`rw`, `defaults`, `auto`, `noauto`, `nofail`, `user`, `users`, `exec`, `nodev`, `nosuid`,
/// `_netdev`, `x-…`, `comment=…`) is theirs and left alone; anything else is refused, naming it.
enum MountHelper {
    static let names = ["mount.fuse.aetherfs", "mount.aetherfs"]

    /// The `aetherfs mount` arguments of a helper's command line, or a one-line reason it is wrong.
    static func translate(_ args: [String]) -> Result<[String], HelperError> {
        var positional: [String] = []
        var options: [String] = []
        var i = 0
        while i < args.count {
            let a = args[i]
            switch a {
            case "-o":
                guard i + 1 < args.count else { return .failure(HelperError("-o needs options")) }
                options += args[i + 1].split(separator: ",").map(String.init)
                i += 1
            case "-n", "-s", "-v", "-f": break  // no mtab, sloppy, verbose, fake: mount(8)'s own
            case "-t":
                i += 1  // the type (fuse.aetherfs), when a helper passes it on
            default:
                if a.hasPrefix("-o") && a.count > 2 { options += a.dropFirst(2).split(separator: ",").map(String.init) }
                else if a.hasPrefix("-") { return .failure(HelperError("unknown argument \(a)")) }
                else { positional.append(a) }
            }
            i += 1
        }
        guard positional.count == 2 else { return .failure(HelperError("expected SESSION DIR, got \(positional.count) argument(s)")) }
        var out = ["mount"]
        var snapshots = false
        for o in options {
            let (key, value) = o.firstIndex(of: "=").map { (String(o[..<$0]), String(o[o.index(after: $0)...])) } ?? (o, "")
            switch key {
            case "store": out += ["--store", value]
            case "allow_other": out.append("--allow-other")
            case "nonempty": out.append("--nonempty")
            case "writeback_cache": out.append("--writeback-cache")
            case "dev": out.append("--dev")
            case "suid": out.append("--suid")
            case "show_control": out.append("--show-control")
            case "snapshots": snapshots = true
            case "ro": return .failure(HelperError("ro: a session mounts read-write (read-only views: -o snapshots, or .aether/checkpoints)"))
            case "rw", "defaults", "auto", "noauto", "nofail", "user", "users", "nouser", "exec", "noexec", "nodev", "nosuid", "_netdev",
                 "atime", "noatime", "relatime", "comment":
                break
            default:
                if key.hasPrefix("x-") { break }
                return .failure(HelperError("unknown mount option \(o)"))
            }
        }
        out += snapshots ? ["--snapshots"] : ["--session", positional[0]]
        out.append(positional[1])
        return .success(out)
    }

    struct HelperError: Error {
        let message: String
        init(_ message: String) { self.message = message }
    }
}
