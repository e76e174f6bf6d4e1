#!/usr/bin/env python3
"""A seeded random workload run against an AetherFS mount and a plain directory at the same time.

Every operation is applied to both; results (success or errno) must agree, and the two trees are compared
(names, kinds, permission bits, sizes, contents, link counts, symlink targets, user xattrs) every
--check-every steps. Checkpoints, restores to them and forks are interleaved: the plain directory's
state at each checkpoint is kept, a restore must bring the mount back to exactly that state, and a fork
must hold it when mounted. On a mismatch it prints the seed and the failing step range.

Usage: fuzz.py --mount M --native D --aetherfs BIN --store S [--seed N] [--ops N] [--check-every N]
"""
import argparse, errno, os, random, shutil, stat, subprocess, sys, tempfile

NAMES = ["a", "b", "c", "dir", "x.txt", "y", "z.bin", "sub", "n\u00e9", "long" * 10]


class Mismatch(Exception):
    pass


def listing(root):
    """Everything comparable under root, as a dict of relative path -> description."""
    out = {}
    for base, dirs, files in os.walk(root):
        rel = os.path.relpath(base, root)
        for name in dirs + files:
            p = os.path.join(base, name)
            r = os.path.normpath(os.path.join(rel, name))
            st = os.lstat(p)
            d = {"kind": stat.S_IFMT(st.st_mode), "perm": stat.S_IMODE(st.st_mode)}
            if stat.S_ISREG(st.st_mode):
                d.update(size=st.st_size, nlink=st.st_nlink, data=open(p, "rb").read())
            elif stat.S_ISLNK(st.st_mode):
                d.update(target=os.readlink(p))
            try:
                d["xattrs"] = sorted((k, os.getxattr(p, k, follow_symlinks=False)) for k in os.listxattr(p, follow_symlinks=False) if k.startswith("user."))
            except OSError:
                d["xattrs"] = "unsupported"
            out[r] = d
    return out


def compare(a, b, what):
    la, lb = listing(a), listing(b)
    if la.keys() != lb.keys():
        raise Mismatch(f"{what}: names differ: only in mount {sorted(la.keys() - lb.keys())[:5]}, only in model {sorted(lb.keys() - la.keys())[:5]}")
    for k in la:
        if la[k] != lb[k]:
            diff = {f: (la[k].get(f), lb[k].get(f)) for f in set(la[k]) | set(lb[k]) if la[k].get(f) != lb[k].get(f)}
            short = {f: (str(v[0])[:60], str(v[1])[:60]) for f, v in diff.items()}
            raise Mismatch(f"{what}: {k} differs (mount, model): {short}")


class Runner:
    def __init__(self, args):
        self.a = args
        self.rng = random.Random(args.seed)
        self.mount, self.model = args.mount, args.native
        self.saved = tempfile.mkdtemp(prefix="aetherfs-fuzz-saved-")
        self.checkpoints = []
        self.cache = None

    def paths(self, root, want_dir=None):
        out = [""]
        for base, dirs, files in os.walk(root):
            rel = os.path.relpath(base, root)
            rel = "" if rel == "." else rel
            out += [os.path.join(rel, d) for d in dirs]
            out += [os.path.join(rel, f) for f in files]
        if want_dir is True:
            out = [p for p in out if p == "" or os.path.isdir(os.path.join(root, p)) and not os.path.islink(os.path.join(root, p))]
        return out

    def both(self, fn):
        """Runs fn(root) on the mount and the model; their outcomes must agree."""
        results = []
        for root in (self.mount, self.model):
            try:
                results.append(("ok", fn(root)))
            except OSError as e:
                results.append(("errno", e.errno))
        if results[0] != results[1]:
            raise Mismatch(f"outcomes differ (mount, model): {results[0]} vs {results[1]}")

    def step(self, i):
        r = self.rng
        # The path lists are refreshed every few steps (a stale path just fails the same way on both sides).
        if i % 20 == 1 or self.cache is None:
            self.cache = (sorted(self.paths(self.model)), sorted(self.paths(self.model, want_dir=True)))
        existing, dirs = self.cache
        target = r.choice(existing)
        newpath = os.path.join(r.choice(dirs), r.choice(NAMES))
        op = r.choices(["create", "write", "overwrite", "truncate", "rename", "link", "unlink", "mkdir", "rmdir", "chmod",
                        "utime", "setxattr", "fsync", "openunlink", "symlink", "checkpoint", "restore", "fork"],
                       weights=[10, 20, 6, 6, 6, 3, 5, 5, 3, 3, 2, 2, 2, 2, 2, 1, 1, 0.2])[0]
        data = bytes(r.getrandbits(8) for _ in range(r.choice([0, 1, 100, 4096, 70000])))
        self.current = f"step {i}: {op} {target!r} {newpath!r}"
        offset = r.choice([0, 1, 4095, 65536, 200000])
        size = r.choice([0, 1, 5000, 300000])
        mode = r.choice([0o600, 0o644, 0o755, 0o700])

        def p(root, rel):
            return os.path.join(root, rel) if rel else root
        if op == "create":
            self.both(lambda root: os.close(os.open(p(root, newpath), os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o644)))
        elif op == "write":
            def w(root):
                fd = os.open(p(root, target), os.O_WRONLY)
                try:
                    os.pwrite(fd, data, offset)
                finally:
                    os.close(fd)
            self.both(w)
        elif op == "overwrite":   # O_TRUNC, as shells and editors write files
            def ow(root):
                fd = os.open(p(root, target), os.O_WRONLY | os.O_TRUNC)
                try:
                    os.write(fd, data)
                finally:
                    os.close(fd)
            self.both(ow)
        elif op == "truncate":
            self.both(lambda root: os.truncate(p(root, target), size))
        elif op == "rename":
            if target and not (newpath + "/").startswith(target + "/"):
                self.both(lambda root: os.rename(p(root, target), p(root, newpath)))
        elif op == "link":
            self.both(lambda root: os.link(p(root, target), p(root, newpath)))
        elif op == "unlink":
            self.both(lambda root: os.unlink(p(root, target)))
        elif op == "mkdir":
            self.both(lambda root: os.mkdir(p(root, newpath), 0o755))
        elif op == "rmdir":
            if target:
                self.both(lambda root: os.rmdir(p(root, target)))
        elif op == "chmod":
            if target and not os.path.isdir(p(self.model, target)):
                self.both(lambda root: os.chmod(p(root, target), mode))
        elif op == "utime":
            ns = r.randrange(0, 2_000_000_000) * 1_000_000_000 + r.randrange(1_000_000_000)
            self.both(lambda root: os.utime(p(root, target), ns=(ns, ns), follow_symlinks=False))
        elif op == "setxattr":
            key = "user.k" + str(r.randrange(3))
            if target and not os.path.islink(p(self.model, target)):
                self.both(lambda root: os.setxattr(p(root, target), key, data[:200]))
        elif op == "fsync":
            def fs(root):
                fd = os.open(p(root, target), os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            self.both(fs)
        elif op == "openunlink":
            def ou(root):
                path = p(root, newpath)
                fd = os.open(path, os.O_CREAT | os.O_RDWR | os.O_EXCL, 0o644)
                try:
                    os.write(fd, data)
                    os.unlink(path)
                    os.lseek(fd, 0, 0)
                    got = os.read(fd, len(data) + 10)
                    if got != data:
                        raise Mismatch(f"open unlinked file read back {len(got)} bytes of {len(data)}")
                finally:
                    os.close(fd)
            self.both(ou)
        elif op == "symlink":
            link_target = r.choice(NAMES)
            self.both(lambda root: os.symlink(link_target, p(root, newpath)))
        elif op == "checkpoint":
            name = f"cp{i}"
            with open(os.path.join(self.mount, ".aether/checkpoint"), "w") as f:
                f.write('{"message":"fuzz %d","name":"%s"}' % (i, name))
            copy = os.path.join(self.saved, name)
            subprocess.run(["cp", "-a", self.model, copy], check=True)   # keeps hard links and xattrs
            self.checkpoints.append(name)
        elif op == "restore" and self.checkpoints:
            name = r.choice(self.checkpoints)
            with open(os.path.join(self.mount, ".aether/restore"), "w") as f:
                f.write(name)
            shutil.rmtree(self.model)
            subprocess.run(["cp", "-a", os.path.join(self.saved, name), self.model], check=True)
            self.cache = None
            compare(self.mount, self.model, f"after restoring {name}")
        elif op == "fork" and self.checkpoints:
            name = r.choice(self.checkpoints)
            fork = f"fork{i}"
            with open(os.path.join(self.mount, ".aether/fork"), "w") as f:
                f.write(f"{fork}@{name}")
            where = tempfile.mkdtemp(prefix="aetherfs-fuzz-fork-")
            subprocess.run([self.a.aetherfs, "mount", "--store", self.a.store, "--session", fork, where], check=True, stdout=subprocess.DEVNULL)
            try:
                compare(where, os.path.join(self.saved, name), f"fork {fork} of {name}")
            finally:
                subprocess.run([self.a.aetherfs, "unmount", where], stdout=subprocess.DEVNULL)
                os.rmdir(where)
        return op

    def run(self):
        last_ok = 0
        counts = {}
        try:
            for i in range(1, self.a.ops + 1):
                op = self.step(i)
                counts[op] = counts.get(op, 0) + 1
                if i % self.a.check_every == 0 or i == self.a.ops:
                    compare(self.mount, self.model, f"after step {i}")
                    last_ok = i
        except Mismatch as e:
            print(f"MISMATCH seed {self.a.seed}, failing step between {last_ok + 1} and {i} ({self.current}): {e}", file=sys.stderr)
            print(f"reproduce: fuzz.py --seed {self.a.seed} --ops {i} --check-every 1", file=sys.stderr)
            return 1
        finally:
            shutil.rmtree(self.saved, ignore_errors=True)
        print(f"seed {self.a.seed}: {self.a.ops} operations agree ({', '.join(f'{k} {v}' for k, v in sorted(counts.items()))})")
        return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mount", required=True)
    ap.add_argument("--native", required=True)
    ap.add_argument("--aetherfs", required=True)
    ap.add_argument("--store", required=True)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--ops", type=int, default=2000)
    ap.add_argument("--check-every", type=int, default=100)
    sys.exit(Runner(ap.parse_args()).run())


if __name__ == "__main__":
    main()
