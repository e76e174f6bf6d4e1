import Testing
import Foundation
import TestSupport

@Suite(.enabled(if: canMount, "needs /dev/fuse"), .timeLimit(.minutes(30)))
struct VerifyTests {
    /// Damage of a chunk, a tree and a database row is each reported with what it affects.
    @Test func verifyReportsEachKindOfDamage() throws {
        let m = try MountedSession()
        defer { m.close() }
        var r = m.sh(#"""
        mkdir d; head -c 300000 /dev/urandom > d/big; echo small > s
        echo '{"message":"a","name":"a"}' > .aether/checkpoint; echo c1 > .aether/commit
        """#)
        #expect(r.status == 0, "\(r)")
        m.unmount()
        r = TestSupport.sh(#"""
        $A verify --read-data > $T/verify; grep -q 'is clean' $T/verify
        corrupt() {  # kind, then a python condition on the file's bytes
          python3 - "$S/objects" "$1" <<'PY'
        import os, sys
        for root, _, files in os.walk(sys.argv[1]):
            for f in sorted(files):
                p = os.path.join(root, f); b = bytearray(open(p, "rb").read())
                if b[4] == int(sys.argv[2]) and len(b) > 60:
                    b[-7] ^= 0xFF; open(p, "wb").write(bytes(b)); print(f); raise SystemExit
        raise SystemExit("nothing to corrupt")
        PY
        }
        corrupt 1 >/dev/null
        if $A verify --read-data > $T/out; then exit 1; fi
        grep -q 'problem: object [0-9a-f]\{64\} is damaged: content does not match its hash — affects .*checkpoint a (session s)' $T/out
        grep -q 'problem: object .* — affects .*commit [0-9a-f]\{16\} (session s)' $T/out
        $A verify > /dev/null   # without --read-data chunk contents are not read
        corrupt 3 >/dev/null
        if $A verify > $T/out; then exit 1; fi
        grep -q 'problem: .*affects checkpoint a (session s)' $T/out
        sqlite3 $S/meta.db "UPDATE branches SET head = 4242"
        if $A verify > $T/out; then exit 1; fi
        grep -q 'branch main points at a missing commit #4242' $T/out
        [ "$(grep -c '^problem:' $T/out)" -ge 2 ]
        """#, env: ["A": aetherfsExecutable, "S": m.store, "T": m.dir.path, "AETHERFS_STORE": m.store])
        #expect(r.status == 0, "\(r)")
    }
}
