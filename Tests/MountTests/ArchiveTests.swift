import Testing
import Foundation
import TestSupport

/// Exports: pax archives that GNU tar and bsdtar extract equal to the snapshot, the same bytes every
/// time, and no partial file when the store is damaged.
@Suite(.enabled(if: canMount, "needs /dev/fuse"), .timeLimit(.minutes(30)))
struct Archives {
    @Test func anExportHoldsEverythingASnapshotHoldsAndIsDeterministic() throws {
        try inMount(#"""
        mkdir -p d/e
        printf 'hello\n' > d/a; ln d/a d/hard; ln -s a d/sym; mkfifo d/fifo; chmod 640 d/fifo
        setfattr -n user.k -v val d/a; setfattr -n user.dir -v 1 d
        touch -d '2020-01-02 03:04:05.123456789' d/a d/sym 2>/dev/null || touch -h -d '2020-01-02 03:04:05.123456789' d/sym
        touch -d '2020-01-02 03:04:05.123456789' d/a
        truncate -s 3M d/sparse; printf x >> d/sparse
        printf bytes > $'d/bad\xff\xfe'
        chown 1000:1000 d/e; chmod 1777 d/e
        echo '{"message":"m","name":"one"}' > .aether/checkpoint
        cd $T
        $A export one-missing -o never.tar 2>err && exit 1; has 'not found' err; [ ! -e never.tar ] && [ ! -e never.tar.aetherfs-partial ]
        $A export s@one -o one.tar > out; has 'exported 9 entries' out
        $A export s@one -o again.tar; cmp one.tar again.tar
        $A export s@one -o one.tar.gz; sleep 1.1; $A export s@one -o again.tar.gz; cmp one.tar.gz again.tar.gz
        $A export s@one -o one.tar.zst; zstd -dc one.tar.zst | cmp - one.tar
        [ "$($A export s@one -o - | sha256sum)" = "$(sha256sum < one.tar)" ]
        ! tar -tf one.tar | has -F .aether
        mkdir gnu bsd
        tar --xattrs --xattrs-include='user.*' --numeric-owner -xpf one.tar -C gnu 2>/dev/null
        bsdtar --numeric-owner -xpf one.tar -C bsd
        [ "$($A export s@one --path d/e -o - | tar -tf -)" = "./" ]
        $A export s@one --path d/a -o x.tar 2>err && exit 1; has 'not a directory' err
        /usr/bin/python3 - "$M/.aether/checkpoints/one" gnu bsd <<'PY'
        import os, stat, sys
        def walk(top):
            out = {}
            for root, dirs, files in os.walk(top):
                for n in dirs + files:
                    p = os.path.join(root, n); st = os.lstat(p); rel = os.path.relpath(p, top).encode("utf-8", "surrogateescape")
                    x = {k: os.getxattr(p, k, follow_symlinks=False) for k in os.listxattr(p, follow_symlinks=False) if k.startswith("user.")}
                    data = open(p, "rb").read() if stat.S_ISREG(st.st_mode) else os.readlink(p) if stat.S_ISLNK(st.st_mode) else None
                    mtime = None if stat.S_ISLNK(st.st_mode) or stat.S_ISDIR(st.st_mode) else st.st_mtime_ns
                    out[rel] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_nlink if not stat.S_ISDIR(st.st_mode) else 0, mtime, x, data)
            return out
        want = walk(sys.argv[1])
        assert want[b"d/a"][5] == 1577934245123456789 and want[b"d/a"][4] == 2, want[b"d/a"]
        assert b"d/bad\xff\xfe" in want and b"d/fifo" in want and want[b"d/e"][1] == 0o1777
        for got in sys.argv[2:]:
            have = walk(got)
            for k in sorted(set(want) | set(have)):
                assert want.get(k) == have.get(k), (got, k, want.get(k), have.get(k))
            a, h = os.stat(os.path.join(got, "d/a")), os.stat(os.path.join(got, "d/hard"))
            assert (a.st_ino, a.st_dev) == (h.st_ino, h.st_dev), "a hard link extracts as a link"
        PY
        """#)
    }

    /// Damage in the store aborts the export with one line naming the object; no partial archive is
    /// left, and a file already at the path stays as it was.
    @Test func damageAbortsAnExportAndLeavesNoPartialArchive() throws {
        try inMount(#"""
        head -c 300000 /dev/urandom > big
        echo '{"message":"m","name":"one"}' > .aether/checkpoint
        cd $T
        echo old > out.tar
        for f in $(find $S/objects -type f -size +4k); do printf 'XXXX' | dd of=$f bs=1 seek=40 conv=notrunc 2>/dev/null; done
        $A export s@one -o out.tar 2>err && exit 1
        [ "$(wc -l < err)" = 1 ]; has -i damaged err; has -E "[0-9a-f]{16}" err
        [ "$(cat out.tar)" = old ] && [ ! -e out.tar.aetherfs-partial ]
        """#)
    }
}
