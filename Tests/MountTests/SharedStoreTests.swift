import Testing
import Foundation
import TestSupport

/// Whether the PostgreSQL tests run: a skip for want of a server fails in CI (AETHERFS_REQUIRE_SERVICES=1).
func postgresAvailable() -> Bool {
    if PostgresServer.available { return true }
    if PostgresServer.required { Issue.record("no PostgreSQL to test with: Scripts/setup installs postgresql") }
    return false
}

/// Two hosts over one store: objects on S3 (SeaweedFS), shared records on PostgreSQL, each host with
/// a store directory of its own (its working layers and cache). Both servers are this test's own.
@Suite(.enabled(if: canMount, "needs /dev/fuse"), .timeLimit(.minutes(30)))
struct SharedStore {
    /// Store directories `TOP/NAME` of one shared store at s3://aether/team and `url`: the first makes
    /// it, the others attach.
    static func initHosts(_ names: [String], _ s3: S3Server, _ url: String, in top: TempDir) throws {
        for name in names {
            let r = run([aetherfsExecutable, "init", "--store", top.path + "/" + name, "--objects", "s3://aether/team",
                         "--s3-endpoint", s3.endpoint, "--meta", url])
            try #require(r.status == 0, "\(r)")
        }
    }

    @Test func twoHostsForkCommitAndTakeOverASessionOverS3AndPostgres() throws {
        guard s3Available(), postgresAvailable() else { return }
        let s3 = try S3Server(); defer { s3.stop() }
        let pg = try PostgresServer(); defer { pg.stop() }
        ObjectStorage.credentials(s3)
        let url = try pg.newDatabase("team")
        let top = TempDir(); defer { top.remove() }
        let env = ["A": aetherfsExecutable, "T": top.path, "E": s3.endpoint, "P": url, "AETHERFS_STORE": top.path + "/none"]
        // The first host makes the store; the second attaches to it; refusals make nothing.
        var r = TestSupport.sh(#"""
        $A init --store $T/a --objects s3://aether/team --s3-endpoint $E --meta $P > $T/a.out
        grep -q "metadata at $P" $T/a.out
        id=$(sed -n 's/.*, id \([0-9a-f]*\)).*/\1/p' $T/a.out); [ -n "$id" ]
        $A init --store $T/b --objects s3://aether/team --s3-endpoint $E --meta $P | grep -q ", id $id)"
        [ ! -e $T/b/objects ]; [ -e $T/b/meta.db ]
        if $A init --store $T/c --meta $P 2>$T/err; then exit 1; fi
        grep -q 'go with --objects' $T/err; [ ! -e $T/c ]
        if $A init --store $T/c --objects s3://aether/elsewhere --s3-endpoint $E --meta $P 2>$T/err; then exit 1; fi
        grep -q "holds no objects of store $id" $T/err; [ ! -e $T/c ]
        if $A init --store $T/c --objects s3://aether/team --s3-endpoint $E --meta postgres://aether@127.0.0.1:1/x 2>$T/err; then exit 1; fi
        grep -q 'cannot be reached' $T/err; [ ! -e $T/c ]
        if $A init --store $T/c --objects s3://aether/team --s3-endpoint $E --meta postgres://aether:pw@127.0.0.1/x 2>$T/err; then exit 1; fi
        grep -q 'PGPASSWORD' $T/err; [ ! -e $T/c ]
        [ "$(wc -l < $T/err)" = 1 ]
        """#, env: env)
        try #require(r.status == 0, "\(r)")

        // Host A checkpoints and forks; host B mounts the fork, edits and commits to main.
        let a = try MountedSession(session: "work", store: top.path + "/a")
        defer { a.close() }
        r = a.sh(#"""
        echo one > f; mkdir d; head -c 3000000 /dev/urandom > d/big; sha256sum d/big > \#(top.path)/big.sum
        echo '{"message":"first","name":"one"}' > .aether/checkpoint
        echo feature > .aether/fork
        """#)
        try #require(r.status == 0, "\(r)")
        let b = try MountedSession(session: "feature", store: top.path + "/b")
        defer { b.close() }
        r = b.sh(#"""
        [ "$(cat f)" = one ]; sha256sum -c \#(top.path)/big.sum > /dev/null
        echo two >> f
        echo "from host b" > .aether/commit
        $A session list | grep -q 'work .*mounted at .* on host '
        """#)
        try #require(r.status == 0, "\(r)")
        // A's commit from the older base is not a fast-forward; both hosts see the same log.
        r = a.sh(#"""
        echo three > g
        if echo "from host a" > .aether/commit 2>$T/err; then echo "a commit from an older base succeeded"; exit 1; fi
        grep -q 'Resource temporarily unavailable' $T/err; grep -q EAGAIN .aether/last
        AETHERFS_STORE=\#(top.path)/a $A log > $T/log.a; AETHERFS_STORE=\#(top.path)/b $A log > $T/log.b
        cmp $T/log.a $T/log.b; grep -q 'from host b' $T/log.a
        echo '{"message":"second","name":"two"}' > .aether/checkpoint
        echo unsaved > h
        """#)
        try #require(r.status == 0, "\(r)")

        // B may not mount the session A serves while A's lease lives; after A dies and its lease lapses,
        // B takes it over from A's last checkpoint.
        let mnt = top.path + "/bm"
        try FileManager.default.createDirectory(atPath: mnt, withIntermediateDirectories: true)
        r = b.sh(#"""
        if $A mount --session work \#(mnt) 2>$T/err; then echo "mounted a session another host serves"; exit 1; fi
        grep -q 'session work is in use by pid .* on host .*lease stands' $T/err
        """#)
        try #require(r.status == 0, "\(r)")
        a.kill9()
        r = b.sh(#"""
        if $A mount --session work \#(mnt) 2>$T/err; then echo "took over before the lease lapsed"; exit 1; fi
        grep -q 'lease stands' $T/err
        for i in $(seq 1 40); do
          if $A mount --session work \#(mnt) 2>$T/err; then break; fi
          grep -q 'lease stands' $T/err; sleep 1.5
        done
        cd \#(mnt)
        [ "$(cat f)" = one ]; [ "$(cat g)" = three ]; [ ! -e h ]; sha256sum -c \#(top.path)/big.sum > /dev/null
        ls .aether/checkpoints | grep -q two
        echo four > g; echo '{"message":"on b","name":"three"}' > .aether/checkpoint
        cd /; $A unmount \#(mnt)
        $A verify --read-data | grep -q 'is clean'
        AETHERFS_STORE=\#(top.path)/a $A checkpoints work | grep -q three
        """#, timeout: 180)
        try #require(r.status == 0, "\(r)")
        _ = run(["fusermount3", "-uz", mnt], timeout: 30)

        // A comes back: its session is B's now, and what A had not checkpointed is a session of its own.
        try a.mount()
        r = a.sh(#"""
        [ "$(cat g)" = four ]; [ ! -e h ]
        $A session list | grep -q 'work-unsaved-1'
        mkdir -p $T/u; $A mount --session work-unsaved-1 $T/u
        [ "$(cat $T/u/h)" = unsaved ]; [ "$(cat $T/u/g)" = three ]
        $A unmount $T/u
        $A audit | grep -q 'session-create.*work-unsaved-1'
        """#)
        try #require(r.status == 0, "\(r)")
    }

    /// Split brain refused: host A still serves a session whose lease lapsed (its database was out of
    /// reach) when host B took it over and checkpointed; A's next checkpoint is refused (EBUSY) and
    /// records nothing over B's, and A's changes come back as a session of their own when A remounts.
    @Test func aHostWhoseLeaseWasTakenOverCannotRecordOverTheNewHolder() throws {
        guard s3Available(), postgresAvailable() else { return }
        let s3 = try S3Server(); defer { s3.stop() }
        let pg = try PostgresServer(); defer { pg.stop() }
        ObjectStorage.credentials(s3)
        let url = try pg.newDatabase("team")
        let top = TempDir(); defer { top.remove() }
        try SharedStore.initHosts(["a", "b"], s3, url, in: top)
        let a = try MountedSession(session: "work", store: top.path + "/a")
        var r: Ran
        defer { a.close() }
        r = a.sh("echo one > f; echo '{\"message\":\"first\",\"name\":\"one\"}' > .aether/checkpoint; echo mine > a-only")
        try #require(r.status == 0, "\(r)")
        // A's lease lapses as if A had lost the database for longer than its term; B takes the session.
        #expect(pg.psql("team", "UPDATE leases SET expires = 0, pid = pid + 1000000").status == 0)
        let b = try MountedSession(session: "work", store: top.path + "/b")
        defer { b.close() }
        r = b.sh("[ \"$(cat f)\" = one ]; [ ! -e a-only ]; echo two > f; echo '{\"message\":\"on b\",\"name\":\"two\"}' > .aether/checkpoint")
        try #require(r.status == 0, "\(r)")
        r = a.sh(#"""
        echo more >> a-only
        if echo '{"message":"stale","name":"three"}' > .aether/checkpoint 2>$T/err; then echo "a stale holder recorded over the new one"; exit 1; fi
        grep -q 'Device or resource busy' $T/err; grep -q 'moved on elsewhere' .aether/last
        [ "$(cat a-only)" = "mine
        more" ]
        """#)
        try #require(r.status == 0, "\(r)")
        b.unmount()
        r = b.sh("[ \"$($A checkpoints work --json | grep -o '\"name\"' | wc -l)\" = 2 ]")
        try #require(r.status == 0, "\(r)")
        a.unmount()
        try a.mount()
        r = a.sh(#"""
        [ "$(cat f)" = two ]; [ ! -e a-only ]
        $A session list | grep -q 'work-unsaved-1'
        """#)
        try #require(r.status == 0, "\(r)")
    }

    /// PostgreSQL going away under a mounted session: files still work (the working layer is local), a
    /// checkpoint fails with EIO and `.aether/last` says why, nothing is recorded; once the server is
    /// back the next checkpoint succeeds and the store verifies. A CLI verb meanwhile fails in one line.
    @Test func aDatabaseThatGoesAwayFailsACheckpointWithEIOAndChangesNothing() throws {
        guard s3Available(), postgresAvailable() else { return }
        let s3 = try S3Server(); defer { s3.stop() }
        let pg = try PostgresServer(); defer { pg.stop() }
        ObjectStorage.credentials(s3)
        let url = try pg.newDatabase("team")
        let top = TempDir(); defer { top.remove() }
        try SharedStore.initHosts(["a"], s3, url, in: top)
        let m = try MountedSession(session: "work", store: top.path + "/a")
        var r: Ran
        defer { m.close() }
        r = m.sh(#"""
        echo one > f; echo '{"message":"first","name":"one"}' > .aether/checkpoint
        """#)
        try #require(r.status == 0, "\(r)")
        pg.kill()
        r = m.sh(#"""
        echo two > f; mkdir d; echo x > d/x; [ "$(cat f)" = two ]
        if echo '{"message":"cut off","name":"two"}' > .aether/checkpoint 2>$T/err; then echo "a checkpoint without its database succeeded"; exit 1; fi
        grep -q 'Input/output error' $T/err
        grep -q 'EIO' .aether/last; grep -q 'PostgreSQL at 127.0.0.1' .aether/last
        if $A checkpoints work 2>$T/err; then exit 1; fi
        [ "$(wc -l < $T/err)" = 1 ]; grep -q 'cannot be reached' $T/err
        """#, timeout: 180)
        try #require(r.status == 0, "\(r)")
        try pg.start()
        r = m.sh(#"""
        ls .aether/checkpoints | grep -q one; ! ls .aether/checkpoints | grep -q two
        echo '{"message":"back","name":"two"}' > .aether/checkpoint
        [ "$(cat .aether/checkpoints/two/f)" = two ]; [ "$(cat .aether/checkpoints/two/d/x)" = x ]
        [ "$($A checkpoints work --json | grep -o '"name"' | wc -l)" = 2 ]
        """#, timeout: 180)
        try #require(r.status == 0, "\(r)")
        m.unmount()
        r = m.sh("$A verify --read-data | grep -q 'is clean'")
        try #require(r.status == 0, "\(r)")
    }
}
