import Testing
import Foundation
import TestSupport

/// Checkpoints, restore, crash safety and bad input, through a real mount.
@Suite(.enabled(if: canMount, "needs /dev/fuse"), .timeLimit(.minutes(30)))
struct CheckpointsThroughTheMount {
    @Test func storeGrowsByTheChangeAndASecondSessionAddsAlmostNothing() throws {
        let m = try MountedSession()
        defer { m.close() }
        let r = m.sh(#"""
        python3 - <<'PY'
        import os, random
        random.seed(1)
        os.makedirs("data", exist_ok=True)
        total = 0
        for i in range(200):
            size = random.randrange(300_000, 800_000)
            if i % 3 == 0:   # text-like, compressible
                words = [b"alpha", b"beta", b"gamma", b"delta", b"%d" % i]
                body = b" ".join(random.choice(words) for _ in range(size // 5))[:size]
            else:
                body = os.urandom(size)
            open("data/f%03d" % i, "wb").write(body)
            total += size
        assert total >= 100_000_000, total
        print(total)
        PY
        echo "all data" > .aether/checkpoint
        before=$(du -sb $S/objects | cut -f1)
        # change 1% of the files: a small insertion in the middle of two of them
        python3 - <<'PY'
        for name in ["data/f010", "data/f111"]:
            b = open(name, "rb").read()
            open(name, "wb").write(b[:len(b)//2] + b"INSERTED" + b[len(b)//2:])
        PY
        echo "one percent" > .aether/checkpoint
        after=$(du -sb $S/objects | cut -f1)
        grow=$((after - before))
        echo "store: $before bytes, grew by $grow after changing 2 of 200 files"
        [ "$before" -gt 60000000 ]
        [ "$grow" -gt 0 ] && [ "$grow" -lt 2000000 ]
        # a second session on the same store holding the same files
        mkdir $T/m2
        $A mount --session second $T/m2 >/dev/null
        trap '$A unmount $T/m2 >/dev/null 2>&1 || fusermount3 -uz $T/m2 2>/dev/null || true; true' EXIT
        cp -a data $T/m2/
        echo "copy" > $T/m2/.aether/checkpoint
        again=$(du -sb $S/objects | cut -f1)
        echo "second session added $((again - after)) bytes"
        [ $((again - after)) -lt 1000000 ]
        cmp data/f010 $T/m2/data/f010
        """#, timeout: 600)
        #expect(r.status == 0, "\(r)")
        print(r.out)
    }

    @Test func killNineLosesNothingFsyncedOrCheckpointed() throws {
        let m = try MountedSession()
        defer { m.close() }
        var r = m.sh(#"""
        python3 - <<'PY'
        import os
        for i in range(20):
            fd = os.open("synced%d" % i, os.O_WRONLY | os.O_CREAT, 0o644)
            os.write(fd, (b"fsynced %d\n" % i) * 1000); os.fsync(fd); os.close(fd)
        PY
        mkdir -p dir/sub && echo kept > dir/sub/file
        echo '{"message":"before the crash","name":"pre"}' > .aether/checkpoint
        python3 - <<'PY'
        import os
        fd = os.open("after", os.O_WRONLY | os.O_CREAT, 0o644)
        os.write(fd, b"written after the checkpoint\n"); os.fsync(fd)
        os.pwrite(fd, b"X", 100000); os.fsync(fd); os.close(fd)
        fd = os.open("synced3", os.O_WRONLY); os.pwrite(fd, b"CHANGED", 0); os.fsync(fd); os.close(fd)
        os.rename("synced4", "renamed4"); d = os.open(".", os.O_RDONLY); os.fsync(d); os.close(d)
        PY
        """#)
        #expect(r.status == 0, "\(r)")
        m.kill9()
        try m.mount()
        r = m.sh(#"""
        for i in $(seq 0 19); do
          [ $i = 3 ] || [ $i = 4 ] || [ "$(head -c 10 synced$i)" = "fsynced $i" ]
        done
        [ "$(head -c 7 synced3)" = CHANGED ]; [ -e renamed4 ] && [ ! -e synced4 ]
        [ "$(head -n1 after)" = "written after the checkpoint" ]; [ "$(stat -c %s after)" = 100001 ]
        [ "$(cat dir/sub/file)" = kept ]
        $A checkpoints s | has 'pre  before the crash'
        echo pre > .aether/restore
        [ ! -e after ] && [ "$(head -c 7 synced3)" = "fsynced" ] && [ -e synced4 ] && [ "$(cat dir/sub/file)" = kept ]
        """#)
        #expect(r.status == 0, "\(r)")
    }

    @Test func restoreBringsBackTheExactTreeEvenForOpenFiles() throws {
        try inMount(#"""
        mkdir -p a/b c; echo one > a/b/f; echo two > c/g; echo keep > keep.txt; ln -s a/b/f sym
        head -c 200000 /dev/urandom > bin; chmod 751 bin; setfattr -n user.x -v 1 keep.txt
        cp -a . $T/snap
        ino=$(stat -c %i keep.txt)
        echo '{"message":"the base","name":"base"}' > .aether/checkpoint
        [ "$(stat -c %i keep.txt)" = "$ino" ]   # inode numbers survive a checkpoint
        exec 3<keep.txt
        echo changed > keep.txt; rm -r a; mv c/g c/h; mkdir new; echo n > new/x; chmod 600 bin
        head -c 1000 /dev/zero >> bin; setfattr -n user.x -v 2 keep.txt; rm sym
        echo base > .aether/restore
        diff -r --no-dereference $T/snap .
        [ "$(stat -c %a bin)" = 751 ]; [ "$(getfattr --only-values -n user.x keep.txt)" = 1 ]
        [ "$(cat <&3)" = keep ]; [ "$(stat -c %i keep.txt)" = "$ino" ]
        [ "$(readlink sym)" = a/b/f ]
        (cd $T/snap && find . -type f -exec sha256sum {} + | sort) > $T/a.sum
        find . -type f -exec sha256sum {} + | sort > $T/b.sum
        cmp $T/a.sum $T/b.sum
        # the restored tree can change again and be checkpointed
        echo again > a/b/f && echo next > .aether/checkpoint && [ "$(cat a/b/f)" = again ]
        """#)
    }

    @Test func badInputGetsAnErrnoAndALineAndChangesNothing() throws {
        let m = try MountedSession()
        defer { m.close() }
        let r = m.sh(#"""
        echo data > f
        python3 - <<'PY'
        import os, errno
        def request(name, payload):
            fd = os.open(".aether/" + name, os.O_WRONLY)
            try:
                if payload is None:
                    os.close(fd); return 0
                os.write(fd, payload); return 0
            except OSError as e:
                return e.errno
            finally:
                try: os.close(fd)
                except OSError: pass
        def last(): return open(".aether/last").read()
        assert request("checkpoint", None) == errno.EINVAL and "empty" in last(), last()
        assert request("checkpoint", b"\n") == errno.EINVAL and "message" in last(), last()
        assert request("checkpoint", b"{not json") == errno.EINVAL and "JSON" in last(), last()
        assert request("checkpoint", b'{"message":"m","bogus":1}') == errno.EINVAL and "bogus" in last(), last()
        assert request("checkpoint", b'{"message":"m","name":"../x"}') == errno.EINVAL, last()
        assert request("checkpoint", b"\x00\x01\xffgarbage") == errno.EINVAL and "not text" in last(), last()
        assert request("checkpoint", b"x" * (2 << 20)) == errno.EINVAL, last()
        assert request("restore", b"no-such-checkpoint\n") == errno.ENOENT and "no-such-checkpoint" in last(), last()
        assert request("checkpoint", b'{"message":"good","name":"g1"}') == 0 and '"name":"g1"' in last(), last()
        assert request("checkpoint", b'{"message":"dup","name":"g1"}') == errno.EEXIST, last()
        try:
            os.open(".aether/status", os.O_WRONLY); raise SystemExit("status opened for writing")
        except OSError as e:
            assert e.errno == errno.EACCES
        PY
        [ "$($A checkpoints s --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')" = 1 ]
        [ "$(cat f)" = data ]
        # a second mount of a mounted session is refused with one line
        mkdir $T/other
        if $A mount --session s $T/other 2>$T/err; then fusermount3 -u $T/other; exit 1; fi
        grep -q 'already mounted' $T/err; [ "$(wc -l < $T/err)" = 1 ]
        # unknown session, unknown checkpoint through the CLI
        if $A restore s nope 2>$T/err; then exit 1; fi; grep -q 'not found' $T/err
        if $A checkpoints ghost 2>$T/err; then exit 1; fi; grep -q 'session ghost' $T/err
        """#)
        #expect(r.status == 0, "\(r)")
    }

    @Test func aCorruptChunkIsAnIOErrorNamingTheObject() throws {
        let m = try MountedSession()
        defer { m.close() }
        var r = m.sh(#"""
        head -c 300000 /dev/urandom > precious
        echo '{"message":"c","name":"c1"}' > .aether/checkpoint
        """#)
        #expect(r.status == 0, "\(r)")
        m.unmount()   // the bytes now live only in the chunk store
        r = TestSupport.sh(#"""
        python3 - "$S/objects" <<'PY'
        import os, sys
        hit = 0
        for root, _, files in os.walk(sys.argv[1]):
            for f in files:
                p = os.path.join(root, f)
                b = bytearray(open(p, "rb").read())
                if b[4] == 1 and len(b) > 1000:   # a chunk
                    b[-100] ^= 0xFF; open(p, "wb").write(bytes(b)); hit += 1
        assert hit > 0
        PY
        """#, env: ["S": m.store])
        #expect(r.status == 0, "\(r)")
        try m.mount()
        r = m.sh(#"""
        if cat precious > /dev/null 2>$T/err; then exit 1; fi
        grep -q 'Input/output error' $T/err
        grep -q 'object [0-9a-f]\{64\} is damaged' $S/sessions/*.log
        [ "$(stat -c %s precious)" = 300000 ]
        """#)
        #expect(r.status == 0, "\(r)")
    }
}
