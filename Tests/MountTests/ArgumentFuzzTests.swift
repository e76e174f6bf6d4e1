import Testing
import Foundation
import TestSupport

/// Random command lines against a store with a session, a checkpoint and a commit, through the real
/// executable (no mount): none may trap, each ends with status 0, 1 (a refused request) or 64 (a usage
/// error), and every failure says why in one line on standard error.
@Suite(.timeLimit(.minutes(30)))
struct ArgumentFuzz {
    @Test func randomCommandLinesNeverTrap() throws {
        let dir = TempDir()
        defer { dir.remove() }
        let store = dir.path + "/store"
        // In the temp dir: an export's -o WORD writes there.
        func cli(_ args: [String]) -> Ran { run([aetherfsExecutable] + args, cwd: dir.path, env: ["AETHERFS_STORE": store], timeout: 60) }
        for setup in [["init"], ["session", "create", "w"], ["checkpoint", "w", "-m", "g", "--name", "green"],
                      ["commit", "w", "-m", "c"]] {
            let r = cli(setup)
            try #require(r.status == 0, "\(setup): \(r)")
        }
        // Verbs that do not mount or verify (they have tests of their own).
        let verbs: [[String]] = [["session", "create"], ["session", "list"], ["session", "show"], ["session", "delete"],
                                 ["checkpoint"], ["checkpoints"], ["restore"], ["fork"], ["commit"], ["branch"], ["branch", "create"],
                                 ["branch", "delete"], ["log"], ["show"], ["diff"], ["export"], ["import"]]
        let words = ["w", "green", "w@green", "@", "@green", "w@", "@@x", "main", "x@y@z", "-m", "--meta", "=v", "k=", "=", "k=v",
                     "--name", "--at", "--branch", "--from", "-n", "0", "-1", "99999999999999999999", "--json", "--stat",
                     "", " ", ".", "..", "-", "--", "é", "a\nb", String(repeating: "n", count: 101), "deadbeef", "0000", "--allow-empty",
                     "--session", "--into", "--max-bytes", "--max-entries", "--keep-setid", "--progress", "-o", "--format", "tar.zst",
                     "--path", "/dev/null"]
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

/// What the command line promises: --version, examples in every verb's help, JSON under --json (errors
/// too), one line per error, usage errors exit 64, one limit on messages mounted or not.
@Suite(.enabled(if: canMount, "needs /dev/fuse"), .timeLimit(.minutes(30)))
struct CommandLineContract {
    @Test func versionHelpJSONAndOneLimit() throws {
        let m = try MountedSession()
        defer { m.close() }
        let r = m.sh(#"""
        $A --version | has '^aetherfs [0-9.]* (store format 1, metadata schema [0-9]*)$'
        for verb in init mount unmount "session create" "session list" "session show" "session delete" checkpoint checkpoints \
                    restore fork commit "branch list" "branch create" "branch delete" log show diff verify export import; do
          $A $verb --help | has -i '^Examples*:' || { echo "no example in $verb --help" >&2; exit 1; }
        done
        # usage errors exit 64, refused requests 1, each with one line
        set +e; $A checkpoint 2>$T/err; rc=$?; set -e; [ $rc = 64 ]
        set +e; $A checkpoint s -m x --meta =v 2>$T/err; rc=$?; set -e
        [ $rc = 1 ] && [ "$(wc -l < $T/err)" = 1 ] && has 'key=value' $T/err
        # one message limit, mounted (through the control file) or not
        big=$(head -c 20000 /dev/zero | tr '\0' a)
        if $A checkpoint s -m "$big" 2>$T/mounted; then exit 1; fi
        if echo "$big" > .aether/checkpoint 2>/dev/null; then exit 1; fi
        # (the shell wrote it in two pieces, 16 KiB and the rest: one request all the same)
        cat .aether/last | has 'at most 8192'
        if printf '%s' "${big:0:9000}" > .aether/checkpoint 2>/dev/null; then exit 1; fi
        cat .aether/last | has 'at most 8192'
        cd /; $A unmount $M >/dev/null
        if $A checkpoint s -m "$big" 2>$T/unmounted; then exit 1; fi
        [ "$(cat $T/mounted)" = "$(cat $T/unmounted)" ] || { cat $T/mounted $T/unmounted >&2; exit 1; }
        $A checkpoints s | has '^no checkpoints' || { echo "a piece of a long message became a checkpoint" >&2; exit 1; }
        # --json: every verb answers JSON, errors too (on standard error)
        $A checkpoint s -m one --name one >/dev/null; $A commit s -m c >/dev/null
        $A branch create rel --from main --json | python3 -c 'import json,sys; d=json.load(sys.stdin); assert d["name"]=="rel" and d["head"]["kind"]=="commit", d'
        $A branch delete rel --json | python3 -c 'import json,sys; assert json.load(sys.stdin)=={"deleted":{"branch":"rel"}}'
        $A session create gone --json >/dev/null
        $A session delete gone --json | python3 -c 'import json,sys; assert json.load(sys.stdin)=={"deleted":{"session":"gone"}}'
        if $A restore s nope --json 2>$T/err; then exit 1; fi
        python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["error"]["code"]=="not_found" and "nope" in d["error"]["message"], d' $T/err
        """#)
        #expect(r.status == 0, "\(r)")
    }
}

extension CommandLineContract {
    /// A CLI checkpoint of a large unmounted session shows progress on a terminal and stops cleanly on
    /// SIGINT, changing nothing; the next one succeeds.
    @Test func aLongCheckpointShowsProgressAndCancelsCleanly() throws {
        let m = try MountedSession()
        defer { m.close() }
        let r = m.sh(#"""
        head -c $((192 << 20)) /dev/urandom > big; echo small > small
        cd /; $A unmount $M >/dev/null
        $A checkpoint s -m first 2>$T/err & pid=$!
        sleep 1; kill -INT $pid
        set +e; wait $pid; rc=$?; set -e
        [ $rc = 1 ] || { echo "exit $rc after SIGINT" >&2; cat $T/err >&2; $A checkpoints s >&2; exit 1; }
        has 'cancelled: checkpoint interrupted; nothing changed' $T/err
        $A checkpoints s | has '^no checkpoints'
        # progress on a terminal (script(1) gives the command one)
        script -qec "$A checkpoint s -m second --store $S" /dev/null > $T/tty
        has 'MiB cut into the store' $T/tty
        $A checkpoints s | has 'second'
        $A verify --read-data >/dev/null
        """#, timeout: 600)
        #expect(r.status == 0, "\(r)")
    }
}
