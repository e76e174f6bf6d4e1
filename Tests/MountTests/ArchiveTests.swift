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
            assert os.stat(os.path.join(got, "d/sparse")).st_blocks < 64, "a sparse file extracts sparse"
        PY
        # Export, import, export: the same bytes, and the same root hash, hard links and all (a group's
        # id comes from its first name, as an import derives it).
        $A import one.tar --session back --json > imported.json
        $A export back@import -o back.tar; cmp one.tar back.tar
        [ "$($A show s@one --json | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["root"])')" = \
          "$(/usr/bin/python3 -c 'import json; print(json.load(open("imported.json"))["root"])')" ]
        rm $M/d/hard; echo '{"message":"m","name":"two"}' > $M/.aether/checkpoint
        $A export s@two -o two.tar
        $A import two.tar --session back2 -m "round trip" > /dev/null
        want=$($A show s@two --json | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["root"])')
        got=$($A show back2@import --json | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["root"])')
        [ "$want" = "$got" ]
        """#)
    }

    /// Every hostile archive is refused whole: exit 1, one line naming the member and the reason, and
    /// no session, checkpoint or branch made or moved (also through a mounted session's daemon).
    @Test func everyHostileArchiveIsRefusedWhole() throws {
        try inMount(#"""
        echo kept > kept; echo '{"message":"m","name":"one"}' > .aether/checkpoint
        cd $T; mkdir bad
        /usr/bin/python3 - bad <<'PY'
        import io, os, sys, tarfile, zipfile
        out = sys.argv[1]
        def tar(name, members, fmt=tarfile.PAX_FORMAT):
            with tarfile.open(os.path.join(out, name + ".tar"), "w", format=fmt) as t:
                for m in members:
                    info = tarfile.TarInfo(m["name"])
                    for k, v in m.items():
                        if k not in ("name", "data"): setattr(info, k, v)
                    data = m.get("data", b"")
                    if info.type == tarfile.REGTYPE: info.size = len(data)
                    t.addfile(info, io.BytesIO(data) if info.type == tarfile.REGTYPE else None)
        f = lambda n, d=b"x": {"name": n, "data": d}
        tar("absolute", [f("/etc/evil")])
        tar("dotdot", [f("a/../../evil")])
        tar("symlink-then-file", [{"name": "l", "type": tarfile.SYMTYPE, "linkname": "/tmp"}, f("l/evil")])
        tar("link-to-nothing", [{"name": "h", "type": tarfile.LNKTYPE, "linkname": "missing"}])
        tar("link-to-later", [{"name": "h", "type": tarfile.LNKTYPE, "linkname": "later"}, f("later")])
        tar("link-to-directory", [{"name": "d", "type": tarfile.DIRTYPE, "mode": 0o755}, {"name": "h", "type": tarfile.LNKTYPE, "linkname": "d"}])
        tar("device", [{"name": "dev", "type": tarfile.CHRTYPE, "devmajor": 1, "devminor": 3}])
        tar("control-directory", [f("./.aether/checkpoint", b"pwned")])
        tar("empty-component", [f("a//b")])
        tar("dot-component", [f("a/./b")])
        tar("long-component", [f("x" * 256)])
        tar("long-path", [f("d/" * 2048 + "x")])
        tar("duplicate", [f("a", b"one"), f("a", b"two")])
        tar("duplicate-directory", [{"name": "d", "type": tarfile.DIRTYPE}, f("d/x"), {"name": "d/", "type": tarfile.DIRTYPE}])
        # A NUL ends a name in every tar and zip reader (libarchive too): these two are one name.
        t = [f("placeholder1"), f("placeholder2")]
        t[0]["pax_headers"] = {"path": "x\x00a"}; t[1]["pax_headers"] = {"path": "x\x00b"}
        tar("nul", t)
        tar("max-bytes", [f("big", b"y" * 2_000_000)])
        tar("max-entries", [f("e%d" % i) for i in range(10)])
        # Data shorter than the header says: the archive ends inside it.
        tar("short", [f("cut", os.urandom(100_000))])
        p = os.path.join(out, "short.tar"); os.truncate(p, 50_000)
        # Data longer than the header says: 512 more bytes where the next header should be.
        tar("long", [f("a", b"ten bytes!"), f("b")])
        p = os.path.join(out, "long.tar"); b = open(p, "rb").read()
        at = b.index(b"ten bytes!") + 512
        open(p, "wb").write(b[:at] + b"z" * 512 + b[at:])
        with zipfile.ZipFile(os.path.join(out, "zip-dotdot.zip"), "w") as z: z.writestr("../evil", b"x")
        PY
        while read name reason; do
          file=bad/$name.tar; [ -e $file ] || file=bad/$name.zip
          extra=; case $name in max-bytes) extra="--max-bytes 1000000";; max-entries) extra="--max-entries 5";; esac
          $A session list --json > before-sessions; $A checkpoints s --json > before-cps; $A branch list --json > before-branches
          if $A import $file --session hostile $extra 2>err >out; then echo "$name was taken in" >&2; exit 1; fi
          [ "$(wc -l < err)" = 1 ] || { cat err >&2; exit 1; }
          has "import refused" err; has -F -- "$reason" err || { echo "$name: $(cat err)" >&2; exit 1; }
          [ ! -s out ]
          $A session list --json | cmp - before-sessions; $A checkpoints s --json | cmp - before-cps; $A branch list --json | cmp - before-branches
          # The same through the mounted session's daemon: nothing changes there either.
          if $A import $file --into s $extra 2>err; then exit 1; fi
          has "import refused" err; $A checkpoints s --json | cmp - before-cps; [ "$(cat $M/kept)" = kept ]
        done <<'LIST'
        absolute an absolute path
        dotdot ".." component
        symlink-then-file a symlink the archive made earlier
        link-to-nothing not an earlier regular file
        link-to-later not an earlier regular file
        link-to-directory not an earlier regular file
        device a device node
        control-directory control directory of every mount
        empty-component empty component
        dot-component "." component
        long-component over 255 bytes
        long-path over 4096 bytes
        duplicate more than one entry for this path
        duplicate-directory more than one entry for this path
        nul more than one entry for this path
        max-bytes --max-bytes
        max-entries --max-entries
        short Truncated
        long after member "a"
        zip-dotdot ".." component
        LIST
        # What is not hostile is taken in; root keeps devices and setuid bits only when asked.
        $A import bad/device.tar --session dev --allow-devices > /dev/null
        /usr/bin/python3 - <<'PY'
        import io, tarfile
        with tarfile.open("setid.tar", "w", format=tarfile.PAX_FORMAT) as t:
            i = tarfile.TarInfo("tool"); i.size = 2; i.mode = 0o4755; t.addfile(i, io.BytesIO(b"#!"))
        PY
        $A import setid.tar --session plain 2>err > /dev/null; has "tool: setuid/setgid bits dropped" err
        # Input that is not an archive at all, or nothing: one line, nothing made.
        echo garbage > g.txt; : > empty
        for f in g.txt empty; do if $A import $f --session g 2>err; then exit 1; fi; [ "$(wc -l < err)" = 1 ]; has "import refused" err; done
        ! $A session show g 2>/dev/null
        $A import setid.tar --session keep --keep-setid > /dev/null
        $A export plain@import -o - | tar -tvf - | has -- '-rwxr-xr-x'
        $A export keep@import -o - | tar -tvf - | has -- '-rwsr-xr-x'
        $A export dev@import -o - | tar -tvf - | has '^c'
        """#)
    }

    /// Every dialect libarchive reads makes the same tree of the same files: GNU tar's gnu (long names,
    /// old sparse), posix (pax, sparse 1.0) and ustar formats, bare or through gzip, bzip2, xz and zstd,
    /// all import to one root hash; a zip's files read back as they were.
    @Test func everyTarDialectAndCompressionImportsTheSameTree() throws {
        try inMount(#"""
        cd $T; mkdir -p src/dir
        long=$(printf 'n%.0s' $(seq 150)); printf 'long\n' > src/dir/$long
        printf 'hello\n' > src/a; ln src/a src/dir/hard; ln -s ../a src/dir/sym
        truncate -s 5M src/sparse; printf tail >> src/sparse
        touch -h -d '2021-06-07 08:09:10' src/dir/sym; touch -d '2021-06-07 08:09:10' src/a src/sparse src/dir/$long src/dir src
        roots=()
        for format in gnu posix; do
          tar --format=$format --sparse -C src -cf $format.tar .
          for z in cat gzip bzip2 xz zstd; do
            $z < $format.tar > $format.$z
            $A import $format.$z --session $format-$z --json > out.json
            roots+=("$(/usr/bin/python3 -c 'import json; print(json.load(open("out.json"))["root"])')")
          done
        done
        [ "$(printf '%s\n' "${roots[@]}" | sort -u | wc -l)" = 1 ] || { printf '%s\n' "${roots[@]}" >&2; exit 1; }
        # ustar holds neither a 150-byte name nor holes: it is compared with posix without those two.
        for format in ustar posix; do
          tar --format=$format --exclude=./dir/$long --exclude=./sparse -C src -cf small-$format.tar .
          $A import small-$format.tar --session small-$format --json > $format.json
        done
        /usr/bin/python3 -c 'import json; a, b = (json.load(open(f + ".json"))["root"] for f in ("ustar", "posix")); assert a == b, (a, b)'

        mkdir back; $A export gnu-xz@import -o - | tar -xpf - -C back
        diff -r --no-dereference src back
        [ "$(stat -c %i back/a)" = "$(stat -c %i back/dir/hard)" ] && [ "$(stat -c %b back/sparse)" -lt 64 ]
        /usr/bin/python3 - <<'PY'
        import zipfile
        with zipfile.ZipFile("t.zip", "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr("docs/readme.txt", "words " * 1000)
            z.writestr("docs/empty/", "")
            z.writestr("stored.bin", bytes(range(256)) * 10, compress_type=zipfile.ZIP_STORED)
        PY
        $A import t.zip --session zipped > /dev/null
        mkdir z; $A export zipped@import -o - | tar -xf - -C z
        [ "$(cat z/docs/readme.txt)" = "$(/usr/bin/python3 -c 'print(("words " * 1000), end="")')" ]
        [ -d z/docs/empty ] && cmp z/stored.bin <(/usr/bin/python3 -c 'import sys; sys.stdout.buffer.write(bytes(range(256)) * 10)')
        """#, timeout: 600)
    }

    /// A real tree: /usr/include as tar.zst into a new session, mounted equal to the original; the
    /// same archive again adds nothing; an import into a mounted session shows at once and keeps what
    /// was written there unsaved in a checkpoint of its own.
    @Test func usrIncludeImportsEqualDeduplicatesAndLandsInAMountedSession() throws {
        try inMount(#"""
        echo unsaved > mine
        cd $T
        tar -C /usr -cf - include | zstd -q > inc.tar.zst
        $A import inc.tar.zst --session inc --json --progress 2>progress > first.json
        has '^import: .* entries' progress
        mkdir inc; $A mount --session inc $T/inc > /dev/null
        trap '$A unmount $T/inc >/dev/null 2>&1 || fusermount3 -uz $T/inc 2>/dev/null || true; true' EXIT
        diff -r --no-dereference /usr/include inc/include
        $A import - --session inc2 --json < inc.tar.zst > second.json
        /usr/bin/python3 - first.json second.json <<'PY'
        import json, sys
        a, b = (json.load(open(p)) for p in sys.argv[1:])
        assert a["entries"] == b["entries"] > 1000 and a["bytes"] == b["bytes"], (a, b)
        assert a["bytes_added"] > 0 and a["chunks_added"] > 0, a
        assert b["bytes_added"] == 0 and b["chunks_added"] == 0 and b["bytes_stored"] < 4096, b
        assert set(a) == {"entries", "bytes", "chunks_added", "bytes_added", "bytes_stored", "root", "dropped"}, a
        PY
        $A import inc.tar.zst --into s -m "headers" > /dev/null
        diff -r --no-dereference /usr/include $M/include
        [ ! -e $M/mine ]
        $A checkpoints s --json | has '"message":"before import: headers"'
        $A export s@cp-1 -o - | tar -xOf - ./mine | has unsaved
        """#, timeout: 600)
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
