import Testing
import Foundation
import TestSupport

/// Real programs on a mount: git, tar, sqlite3, rsync, an editor's atomic save.
@Suite(.enabled(if: canMount, "needs /dev/fuse"), .timeLimit(.minutes(30)))
struct RealPrograms {
    @Test func git() throws {
        try inMount(#"""
        git init -q repo && cd repo
        git config user.email t@example.com && git config user.name t
        for i in $(seq 1 50); do echo "line $i" > "f$i.txt"; done
        mkdir -p src/sub && echo 'int main(){return 0;}' > src/sub/main.c
        git add -A && git commit -qm first
        echo more >> f1.txt && git mv f2.txt renamed.txt && git rm -q f3.txt
        [ "$(git status --porcelain | wc -l)" = 3 ]
        git commit -qam second
        [ -z "$(git status --porcelain)" ]
        [ "$(git log --oneline | wc -l)" = 2 ]
        git fsck --strict 2>&1 | grep -v '^Checking' || true
        git gc -q && [ "$(git log --format=%s -1)" = second ]
        echo ok
        """#)
    }

    @Test func tarExtractOfAThousandFilesIsByteExact() throws {
        try inMount(#"""
        src=$T/src; mkdir -p $src
        python3 - "$src" <<'PY'
        import os, sys, random
        random.seed(11); root = sys.argv[1]
        for i in range(1200):
            d = os.path.join(root, "d%02d" % (i % 37), "e%d" % (i % 5))
            os.makedirs(d, exist_ok=True)
            with open(os.path.join(d, "f%d" % i), "wb") as f:
                f.write(os.urandom(random.randrange(0, 20000)) if i % 3 else b"text %d\n" % i * random.randrange(1, 200))
        os.symlink("d00", os.path.join(root, "link"))
        PY
        tar -C $T -cf $T/src.tar src
        tar -xf $T/src.tar
        diff -r --no-dereference $T/src src
        [ "$(find src -type f | wc -l)" -ge 1000 ]
        (cd $T/src && find . -type f -exec sha256sum {} + | sort) > $T/a.sum
        (cd src && find . -type f -exec sha256sum {} + | sort) > $T/b.sum
        cmp $T/a.sum $T/b.sum
        echo ok
        """#)
    }

    @Test func sqlite() throws {
        try inMount(#"""
        sqlite3 db.sqlite 'PRAGMA journal_mode=WAL; CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);' >/dev/null
        sqlite3 db.sqlite "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x<5000) INSERT INTO t(v) SELECT hex(randomblob(40)) FROM c;"
        [ "$(sqlite3 db.sqlite 'SELECT count(*) FROM t')" = 5000 ]
        sqlite3 db.sqlite 'DELETE FROM t WHERE id % 2 = 0; VACUUM;'
        [ "$(sqlite3 db.sqlite 'SELECT count(*) FROM t')" = 2500 ]
        [ "$(sqlite3 db.sqlite 'PRAGMA integrity_check')" = ok ]
        sqlite3 j.sqlite 'PRAGMA journal_mode=DELETE; CREATE TABLE x(a); INSERT INTO x VALUES(1),(2);' >/dev/null
        [ "$(sqlite3 j.sqlite 'SELECT sum(a) FROM x')" = 3 ]
        echo ok
        """#)
    }

    @Test func rsyncInAndOutWithHardLinksAclsAndXattrs() throws {
        try inMount(#"""
        src=$T/src; mkdir -p $src/dir
        echo one > $src/a; ln $src/a $src/dir/hard; ln -s ../a $src/dir/sym
        head -c 300000 /dev/urandom > $src/dir/bin; chmod 600 $src/dir/bin; touch -d 2010-01-01 $src/dir/bin
        setfattr -n user.note -v kept $src/a
        mkfifo $src/fifo
        rsync -aHAX $src/ in/
        [ "$(stat -c %i in/a)" = "$(stat -c %i in/dir/hard)" ]
        [ "$(getfattr --only-values -n user.note in/a)" = kept ]
        [ "$(stat -c %a in/dir/bin)" = 600 ]; [ "$(stat -c %Y in/dir/bin)" = "$(stat -c %Y $src/dir/bin)" ]
        diff -r --no-dereference -x fifo $src in; [ -p in/fifo ]
        rsync -aHAX in/ $T/out/
        diff -r --no-dereference -x fifo $src $T/out; [ -p $T/out/fifo ]
        [ "$(stat -c %h $T/out/a)" = 2 ]
        [ "$(getfattr --only-values -n user.note $T/out/a)" = kept ]
        # an unchanged tree transfers nothing the second time
        [ -z "$(rsync -aHAX --itemize-changes $src/ in/)" ]
        echo ok
        """#)
    }

    @Test func editorStyleAtomicSave() throws {
        try inMount(#"""
        echo original > doc.txt
        exec 3<doc.txt
        python3 - <<'PY'
        import os
        fd = os.open(".doc.txt.swp", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.write(fd, b"edited\n"); os.fsync(fd); os.close(fd)
        os.rename(".doc.txt.swp", "doc.txt")
        d = os.open(".", os.O_RDONLY); os.fsync(d); os.close(d)
        PY
        [ "$(cat doc.txt)" = edited ]
        [ "$(cat <&3)" = original ]   # the old file stays readable through the open descriptor
        [ ! -e .doc.txt.swp ]
        echo ok
        """#)
    }
}
