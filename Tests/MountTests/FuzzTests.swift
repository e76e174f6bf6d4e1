import Testing
import Foundation
import TestSupport

/// The repository's root, from this file's place in it.
let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path

/// The seeded random workload against a mount and a plain directory (Scripts/fuzz runs longer ones).
@Suite(.enabled(if: canMount, "needs /dev/fuse"), .timeLimit(.minutes(20)))
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
}
