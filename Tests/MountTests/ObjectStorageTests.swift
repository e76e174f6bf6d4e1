import Testing
import Foundation
import TestSupport

/// Whether the S3 tests run: a skip for want of weed fails in CI (AETHERFS_REQUIRE_SERVICES=1).
func s3Available() -> Bool {
    if S3Server.available { return true }
    if S3Server.required { Issue.record("no S3 server to test with: Scripts/setup installs weed into .build/tools/weed") }
    return false
}

/// Stores whose objects are on S3 (SeaweedFS on loopback, one per test, started and stopped here).
@Suite(.enabled(if: canMount, "needs /dev/fuse"), .timeLimit(.minutes(30)))
struct ObjectStorage {
    /// The credentials every test server has (they are the same constants): in this process's
    /// environment, so that the daemons the tests start have them too.
    static func credentials(_ server: S3Server) {
        for (k, v) in server.environment { setenv(k, v, 1) }
    }

    /// A store on S3: init claims the prefix (a second store there, or no credentials, is refused in one
    /// line and makes nothing), a mount checkpoints into packs, reads come back with the cache gone,
    /// the server cut off in the middle of a checkpoint fails it with EIO (`.aether/last` says why,
    /// nothing is recorded), after a restart the next one succeeds, gc deletes packs, verify is clean.
    @Test func aStoreOnS3CheckpointsReadsBackAndSurvivesAServerCutOff() throws {
        guard s3Available() else { return }
        let server = try S3Server(); defer { server.stop() }
        ObjectStorage.credentials(server)
        let top = TempDir(); defer { top.remove() }
        let store = top.path + "/store"
        var r = TestSupport.sh(#"""
        if env -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY HOME=$T $A init --store $T/nocreds --objects s3://aether/a --s3-endpoint $E 2>$T/err; then exit 1; fi
        grep -q 'no S3 credentials: set AWS_ACCESS_KEY_ID' $T/err; [ ! -e $T/nocreds ]
        if $A init --store $T/bad --objects s3://aether/a --s3-endpoint http://127.0.0.1:1 2>$T/err; then exit 1; fi
        grep -q 'failed 5 times' $T/err; [ ! -e $T/bad ]
        $A init --store $S --objects s3://aether/a --s3-endpoint $E | grep -q "objects at s3://aether/a$"
        if $A init --store $T/second --objects s3://aether/a --s3-endpoint $E 2>$T/err; then exit 1; fi
        grep -q 'already holds the objects of another store' $T/err; [ ! -e $T/second ]
        [ ! -e $S/objects ]; grep -q '"s3:\\/\\/aether\\/a"\|"s3://aether/a"' $S/objects.json
        """#, env: ["A": aetherfsExecutable, "S": store, "T": top.path, "E": server.endpoint])
        #expect(r.status == 0, "\(r)")
        let m = try MountedSession(store: store)
        defer { m.close() }
        r = m.sh(#"""
        head -c 20000000 /dev/urandom > big; mkdir d; for i in $(seq 1 200); do echo "file $i" > d/f$i; done
        echo '{"message":"first","name":"one"}' > .aether/checkpoint
        sha256sum big d/f7 > $T/sums
        """#)
        #expect(r.status == 0, "\(r)")
        m.unmount()
        r = m.sh(#"""
        rm -rf $S/cache
        $A verify --read-data | has 'is clean'
        """#)
        #expect(r.status == 0, "\(r)")
        try m.mount()
        r = m.sh(#"""
        sha256sum -c $T/sums > /dev/null
        cmp big .aether/checkpoints/one/big
        head -c 5000000 /dev/urandom > more
        """#)
        #expect(r.status == 0, "\(r)")
        server.kill()
        r = m.sh(#"""
        if echo '{"message":"cut off","name":"two"}' > .aether/checkpoint 2>$T/err; then echo "a checkpoint with S3 gone succeeded"; exit 1; fi
        grep -q 'Input/output error' $T/err
        grep -q 'EIO' .aether/last; grep -q 'S3 PUT' .aether/last
        ! ls .aether/checkpoints | grep -q two
        """#, timeout: 120)
        #expect(r.status == 0, "\(r)")
        try server.start()
        r = m.sh(#"""
        echo '{"message":"back","name":"two"}' > .aether/checkpoint
        ls .aether/checkpoints | has two
        cmp more .aether/checkpoints/two/more
        """#)
        #expect(r.status == 0, "\(r)")
        m.unmount()
        r = m.sh(#"""
        $A session create other
        $A verify --read-data | has 'is clean'
        $A session delete s --yes >/dev/null 2>&1 || $A session delete s >/dev/null
        $A gc --min-age 0s > $T/gc; grep -q 'packs deleted' $T/gc
        $A verify --read-data | has 'is clean'
        """#)
        #expect(r.status == 0, "\(r)")
    }
}
