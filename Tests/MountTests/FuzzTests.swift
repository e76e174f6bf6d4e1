import Testing
import Foundation
import TestSupport

/// The repository's root, from this file's place in it.
let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path

/// The seeded random workload against a mount and a plain directory (Scripts/fuzz runs longer ones).
@Suite(.enabled(if: canMount, "needs /dev/fuse"), .timeLimit(.minutes(30)))
struct RandomWorkload {
    @Test(arguments: [1, 2, 3])
    func mountAgreesWithAPlainDirectory(seed: Int) throws {
        let m = try MountedSession()
        defer { m.close() }
        let r = m.sh("""
            mkdir -p "$T/native"
            python3 \(repositoryRoot)/Scripts/fuzz.py --mount "$M" --native "$T/native" --aetherfs "$A" --store "$S" \
              --seed \(seed) --ops 7000 --check-every 250
            """, timeout: 1100)
        #expect(r.status == 0, "\(r)")
        print(r.out)
    }

    /// One file changed by buffered and mmap writes, truncates, copy_file_range and hole punches at once,
    /// with checkpoints between, agrees with a model of its bytes (Scripts/mix runs millions of these).
    @Test func oneFileChangedEveryWayAgreesWithItsModel() throws {
        let m = try MountedSession()
        defer { m.close() }
        let r = m.sh("python3 \(repositoryRoot)/Scripts/mix.py --mount \"$M\" --seed 7 --ops 8000 --checkpoint-every 2000", timeout: 1100)
        #expect(r.status == 0, "\(r)")
        print(r.out)
    }
}
