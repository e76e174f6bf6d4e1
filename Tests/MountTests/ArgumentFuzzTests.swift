import Testing
import Foundation
import TestSupport

/// Random command lines against a store with a session, a checkpoint and a commit, through the real
/// executable (no mount): none may trap, each ends with status 0, 1 (a refused request) or 64 (a usage
/// error), and every failure says why in one line on standard error.
@Suite(.timeLimit(.minutes(5)))
struct ArgumentFuzz {
    @Test func randomCommandLinesNeverTrap() throws {
        let dir = TempDir()
        defer { dir.remove() }
        let store = dir.path + "/store"
        func cli(_ args: [String]) -> Ran { run([aetherfsExecutable] + args, env: ["AETHERFS_STORE": store], timeout: 60) }
        for setup in [["init"], ["session", "create", "w"], ["checkpoint", "w", "-m", "g", "--name", "green"],
                      ["commit", "w", "-m", "c"]] {
            let r = cli(setup)
            try #require(r.status == 0, "\(setup): \(r)")
        }
        // Verbs that do not mount or verify (they have tests of their own).
        let verbs: [[String]] = [["session", "create"], ["session", "list"], ["session", "show"], ["session", "delete"],
                                 ["checkpoint"], ["checkpoints"], ["restore"], ["fork"], ["commit"], ["branch"], ["branch", "create"],
                                 ["branch", "delete"], ["log"], ["show"], ["diff"]]
        let words = ["w", "green", "w@green", "@", "@green", "w@", "@@x", "main", "x@y@z", "-m", "--meta", "=v", "k=", "=", "k=v",
                     "--name", "--at", "--branch", "--from", "-n", "0", "-1", "99999999999999999999", "--json", "--stat",
                     "", " ", ".", "..", "-", "--", "é", "a\nb", String(repeating: "n", count: 101), "deadbeef", "0000", "--allow-empty"]
        var rng = SystemRandomNumberGenerator()
        var seen = Set<Int32>()
        for _ in 0..<250 {
            var args = verbs.randomElement(using: &rng)!
            for _ in 0..<Int.random(in: 0...5, using: &rng) { args.append(words.randomElement(using: &rng)!) }
            let r = cli(args)
            seen.insert(r.status)
            #expect([0, 1, 64].contains(r.status), "\(args.debugDescription): \(r)")
            #expect(!r.err.contains("Fatal error") && !r.err.contains("Crash"), "\(args.debugDescription): \(r)")
            if r.status != 0 { #expect(!r.err.isEmpty, "\(args.debugDescription) failed without a word") }
        }
        #expect(seen.contains(1) && seen.contains(64), "the generator must reach refusals and usage errors: \(seen)")
    }
}
