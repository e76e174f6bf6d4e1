import Testing
import Foundation
import TestSupport

/// SIGKILL of the daemon at random moments (Scripts/crash runs hundreds).
@Suite(.enabled(if: canMount, "needs /dev/fuse"), .timeLimit(.minutes(30)))
struct CrashSafety {
    @Test func twentyKillPointsLoseNothingAcknowledged() throws {
        let dir = TempDir("aetherfs-mount")
        defer {
            _ = run(["fusermount3", "-uz", dir.path + "/mnt"], timeout: 30)
            dir.remove()
        }
        let r = run(["python3", repositoryRoot + "/Scripts/crash.py", "--aetherfs", aetherfsExecutable,
                     "--work", dir.path, "--rounds", "20", "--seed", "7"], timeout: 800)
        #expect(r.status == 0, "\(r)")
        print(r.out)
    }
}
