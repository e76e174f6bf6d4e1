#if canImport(Glibc)
import Glibc
#endif

/// How a store's files are made. A store is private to its owner (files 0600, directories 0700)
/// unless it was made shared with a group (`aetherfs init --shared GROUP`): its directory is then
/// group-writable and setgid, and every file and directory in it is made for the group too (0660,
/// 2770), so that the group's members (reviewers, several agents' uids) can use it.
public enum StoreFiles {
    /// Set once, when the store is opened (one store per process).
    nonisolated(unsafe) public static var shared = false
    public static var fileMode: mode_t { shared ? 0o660 : 0o600 }
    public static var directoryMode: mode_t { shared ? 0o2770 : 0o700 }

    /// Whether the store directory at `path` is shared with its group.
    public static func isShared(_ path: String) -> Bool {
        var st = stat()
        return stat(path, &st) == 0 && st.st_mode & 0o070 == 0o070
    }

    /// Gives a file just made the store's mode (the umask may have taken group bits away).
    public static func settle(fd: Int32) { if shared { _ = fchmod(fd, fileMode) } }

    /// Makes a directory of the store; true when it was made (false: it existed).
    public static func makeDirectory(_ path: String) -> Bool {
        guard mkdir(path, directoryMode) == 0 else { return false }
        if shared { _ = chmod(path, directoryMode) }
        return true
    }
}
