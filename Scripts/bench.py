#!/usr/bin/env python3
"""AetherFS benchmarks, side by side with native and libfuse's C passthrough_ll, in one run.

Each workload runs on (a) a native directory on the same disk, (b) passthrough_ll built from the source
that Debian's libfuse3-dev ships, mounted with -o writeback -o cache=always, (c) an AetherFS session
(release build). Rounds interleave a b c a b c ...; the table shows medians and the ratios
AetherFS/native and AetherFS/passthrough; then AetherFS-only figures (checkpoint, fork, restore, first
write after a fork, cold reads from the chunk store, chunker speed) and ingest beside `restic backup`.
Usage: Scripts/bench [--quick | --smoke] [--json FILE] [--only NAME,...] [--binary PATH]
"""
from concurrent.futures import ThreadPoolExecutor
import argparse, json, os, shutil, socket, threading, signal, statistics, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = "/usr/share/doc/libfuse3-dev/examples/passthrough_ll.c"


def sh(cmd, check=True, capture=False, timeout=1800, cwd=None):
    r = subprocess.run(cmd, shell=True, check=False, cwd=cwd, timeout=timeout,
                       stdout=subprocess.PIPE if capture else subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"{cmd!r} failed ({r.returncode}): {r.stderr.strip()[-500:]}")
    return r.stdout if capture else r.returncode


def drop_caches():
    sh("sync")
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def timed(cmd, cwd=None):
    t = time.perf_counter()
    sh(cmd, cwd=cwd)
    return time.perf_counter() - t


def fio(directory, rw, size, bs, runtime=None, warm=True, fsync_end=False):
    """Every job works on the one file `data` of `directory` (laid out by the sequential write)."""
    name = f"fio-{rw}"
    args = [f"fio --name={name} --filename={directory}/data --rw={rw} --bs={bs} --size={size}",
            "--ioengine=psync --numjobs=1 --output-format=json --group_reporting",
            f"--invalidate={0 if warm else 1}"]
    if runtime:
        args.append(f"--time_based --runtime={runtime}")
    if fsync_end:
        args.append("--end_fsync=1")
    out = json.loads(sh(" ".join(args), capture=True))
    job = out["jobs"][0]
    side = job["read"] if "read" in rw else job["write"]
    return side["bw_bytes"] / 1e6  # MB/s


class Setup:
    def __init__(self, name, work):
        self.name, self.work = name, work
        self.dir = os.path.join(work, name)
        os.makedirs(self.dir, exist_ok=True)

    def start(self):
        pass

    def stop(self):
        pass

    def fresh(self, label):
        d = os.path.join(self.dir, label)
        if os.path.exists(d):
            sh(f"rm -rf {d}")
        os.makedirs(d)
        return d


class Native(Setup):
    pass


class Passthrough(Setup):
    def __init__(self, work, binary):
        super().__init__("passthrough", work)
        self.binary = binary
        self.backing = os.path.join(work, "passthrough-backing")
        os.makedirs(self.backing, exist_ok=True)

    def start(self):
        # passthrough_ll keeps a descriptor per inode it knows (git add of 50,000 files needs over
        # 100,000): raise the limit as far as allowed (root may raise the hard limit to nr_open).
        sh(f"ulimit -n $(cat /proc/sys/fs/nr_open) 2>/dev/null || ulimit -n $(ulimit -Hn); {self.binary} -o source={self.backing} -o writeback -o cache=always {self.dir}")
        wait_mount(self.dir)

    def stop(self):
        sh(f"fusermount3 -u {self.dir}", check=False) == 0 or sh(f"fusermount3 -uz {self.dir}", check=False)


class Aether(Setup):
    def __init__(self, work, binary):
        super().__init__("aetherfs", work)
        self.binary = binary
        self.store = os.path.join(work, "store")

    def start(self):
        sh(f"{self.binary} mount --store {self.store} --session bench {self.dir}")

    def stop(self):
        sh(f"{self.binary} unmount {self.dir}", check=False) == 0 or sh(f"fusermount3 -uz {self.dir}", check=False)

    def pid(self):
        """The daemon's pid, from its session's lease."""
        r = subprocess.run([self.binary, "session", "list", "--json", "--store", self.store],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        for s in json.loads(r.stdout or "[]") if r.returncode == 0 else []:
            if s.get("mountpoint") == self.dir:
                return s.get("pid")
        return None

    def rss_mib(self):
        pid = self.pid()
        if not pid:
            return None
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return None


def wait_mount(path, seconds=20):
    end = time.time() + seconds
    while time.time() < end:
        if any(l.split()[1] == path for l in open("/proc/mounts")):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{path} did not mount")


def make_tree(path, files, seed=1):
    """A source-like tree of small files (a stand-in for /usr/include), as a tarball."""
    import random
    random.seed(seed)
    src = tempfile.mkdtemp(prefix="aetherfs-bench-src-", dir=os.path.dirname(path))
    for i in range(files):
        d = os.path.join(src, "tree", f"d{i % 97:02d}", f"s{i % 7}")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, f"f{i}.h"), "w") as f:
            f.write(f"/* file {i} */\n" + "".join(f"#define NAME_{i}_{k} {random.randrange(1 << 30)}\n" for k in range(random.randrange(5, 60))))
    sh(f"tar -C {src} -cf {path} tree")
    shutil.rmtree(src)


def make_c_project(path, units):
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "Makefile"), "w") as f:
        f.write("SRCS=$(wildcard *.c)\nOBJS=$(SRCS:.c=.o)\nall: prog\nprog: $(OBJS)\n\t$(CC) -o $@ $^\n%.o: %.c\n\t$(CC) -O1 -c $< -o $@\n")
    for i in range(units):
        with open(os.path.join(path, f"u{i}.c"), "w") as f:
            f.write(f"int u{i}(int x) {{ int s = 0; for (int k = 0; k < x; k++) s += k * {i}; return s; }}\n")
    with open(os.path.join(path, "main.c"), "w") as f:
        f.write("".join(f"int u{i}(int);\n" for i in range(units)) + "int main(void) { return " + " + ".join(f"u{i}(1)" for i in range(units)) + "; }\n")


# Each workload: (name, unit, better, function(setup, ctx) -> value). better: "higher" or "lower".
def workloads(ctx):
    seq, rnd_time = ctx["seq"], ctx["rnd_time"]
    out = []

    def seq_write(s, ctx):
        d = s.fresh("seq")
        return fio(d, "write", seq, "1M", fsync_end=True)

    def seq_read_warm(s, ctx):
        d = os.path.join(s.dir, "seq")
        sh(f"cat {d}/data > /dev/null")  # warm the cache
        return fio(d, "read", seq, "1M")

    def seq_read_cold(s, ctx):
        d = os.path.join(s.dir, "seq")
        drop_caches()
        return fio(d, "read", seq, "1M", warm=False)

    def rand_read(s, ctx):
        d = os.path.join(s.dir, "seq")
        sh(f"cat {d}/data > /dev/null")  # warm: the cold read before dropped the page cache
        return fio(d, "randread", seq, "4k", runtime=rnd_time)

    def rand_write(s, ctx):
        d = os.path.join(s.dir, "seq")
        return fio(d, "randwrite", seq, "4k", runtime=rnd_time)

    def extract(s, ctx):
        d = s.fresh("tree")
        return timed(f"tar -xf {ctx['tarball']}", cwd=d)

    def find_stat(s, ctx):
        drop_caches()
        return timed(f"find {s.dir}/tree -printf '%s %T@\\n' > /dev/null")

    def find_stat_warm(s, ctx):
        sh(f"find {s.dir}/tree -printf '%s %T@\\n' > /dev/null")
        return timed(f"find {s.dir}/tree -printf '%s %T@\\n' > /dev/null")

    def rm_tree(s, ctx):
        return timed(f"rm -rf {s.dir}/tree")

    def git_work_tree(s):
        """The repository's files, extracted once per setup (through FUSE that takes minutes); each round
        adds them into a git directory of its own beside them, so every round writes every object."""
        d, done = os.path.join(s.dir, "repo"), os.path.join(s.dir, "repo.extracted")
        if getattr(s, "repo_failure", None):
            raise RuntimeError(f"the repository could not be extracted here: {s.repo_failure}")
        if not os.path.exists(done):
            d = s.fresh("repo")
            try:
                sh(f"tar -xf {ctx['repo_tarball']}", cwd=d)
            except RuntimeError as e:  # passthrough_ll runs out of descriptors (EMFILE): not again
                s.repo_failure = str(e).splitlines()[-1][-200:]
                raise
            open(done, "w").close()
        return d

    def git_add(s, ctx):
        d = git_work_tree(s)
        s.git_rounds = getattr(s, "git_rounds", 0) + 1
        git_dir = os.path.join(s.dir, f"git-{s.git_rounds}")
        sh(f"rm -rf {git_dir}")
        s.git = f"GIT_DIR={git_dir} GIT_WORK_TREE={d} git"
        sh(f"{s.git} init -q && {s.git} config user.email b@x && {s.git} config user.name b", cwd=d)
        return timed(f"{s.git} add -A", cwd=d)

    def git_status(s, ctx):
        d = os.path.join(s.dir, "repo")
        sh(f"{s.git} commit -qm base", cwd=d)
        sh(f"{s.git} status --porcelain > /dev/null", cwd=d)
        return timed(f"{s.git} status --porcelain > /dev/null", cwd=d)

    def make_build(s, ctx):
        d = s.fresh("build")
        sh(f"cp -r {ctx['cproject']}/. {d}/")
        return timed("make -s -j2", cwd=d)

    out += [("seq write " + seq, "MB/s", "higher", seq_write),
            ("seq read warm", "MB/s", "higher", seq_read_warm),
            ("seq read cold", "MB/s", "higher", seq_read_cold),
            ("rand 4k read warm", "MB/s", "higher", rand_read),
            ("rand 4k write", "MB/s", "higher", rand_write),
            (f"extract {ctx['tree_files']} files", "s", "lower", extract),
            ("find+stat cold", "s", "lower", find_stat),
            ("find+stat warm", "s", "lower", find_stat_warm),
            ("rm -rf tree", "s", "lower", rm_tree),
            (f"git add -A ({ctx['repo_files']} files)", "s", "lower", git_add),
            ("git status warm", "s", "lower", git_status),
            ("make -j2", "s", "lower", make_build)]
    return out


def control(d, name, payload):
    """Writes one request to a control file of the session mounted at d; returns the seconds it took."""
    t = time.perf_counter()
    with open(os.path.join(d, ".aether", name), "w") as f:
        f.write(payload)
    return time.perf_counter() - t


def aether_only(aether, sizes, rounds, results):
    """Checkpoint, fork and restore latency as the session grows, through the control files. Each size
    adds its files to the session, so the session holds at least that many files when it is measured."""
    d = aether.dir
    for n in sizes:
        base = os.path.join(d, f"s{n}")
        os.makedirs(base, exist_ok=True)
        for i in range(n):
            with open(os.path.join(base, f"f{i}"), "w") as f:
                f.write(f"{i}\n")
        control(d, "checkpoint", f'{{"message":"size {n}","name":"size-{n}"}}')
        cps, forks = [], []
        for r in range(rounds):
            for i in range(min(10, n)):
                with open(os.path.join(base, f"f{i}"), "a") as f:
                    f.write("x")
            cps.append(control(d, "checkpoint", f"10 changed files, round {r}"))
            forks.append(control(d, "fork", f"fork-{n}-{r}"))
        restore = []
        for r in range(max(3, rounds // 4)):
            with open(os.path.join(base, "f0"), "a") as f:
                f.write("y")
            restore.append(control(d, "restore", f"size-{n}"))
        results.append({"workload": f"checkpoint of 10 changes, {n}+ files", "unit": "ms",
                        "aetherfs": statistics.median(cps) * 1e3, "worst": max(cps) * 1e3})
        results.append({"workload": f"fork, {n}+ files", "unit": "ms", "aetherfs": statistics.median(forks) * 1e3,
                        "worst": max(forks) * 1e3})
        results.append({"workload": f"restore, {n}+ files", "unit": "ms", "aetherfs": statistics.median(restore) * 1e3,
                        "worst": max(restore) * 1e3})
    # Many changed files in the largest session: every file's bytes are cut and stored again.
    n = sizes[-1]
    base = os.path.join(d, f"s{n}")
    for changed in sorted({min(1000, n), n}):
        step = n // changed
        for i in range(0, n, step):
            with open(os.path.join(base, f"f{i}"), "a") as f:
                f.write("z")
        t = control(d, "checkpoint", f"{changed} changed files")
        results.append({"workload": f"checkpoint of {changed} changes, {n}+ files", "unit": "ms", "aetherfs": t * 1e3})


def read_during_checkpoint(aether, mib, results):
    """Reads 40 small files that live in the chunk store (page cache dropped) while a checkpoint of `mib`
    MiB of new data runs, and the same reads with nothing running: the checkpoint must not hold them up."""
    d = os.path.join(aether.dir, "rdcp")
    os.makedirs(d, exist_ok=True)
    for i in range(40):
        with open(os.path.join(d, f"small{i}"), "wb") as f:
            f.write(os.urandom(8192))
    control(aether.dir, "checkpoint", "small files for reads during a checkpoint")
    with open(os.path.join(d, "big"), "wb") as f:
        for _ in range(mib):
            f.write(os.urandom(1 << 20))
    def reads():
        out = []
        for i in range(40):
            t = time.perf_counter()
            with open(os.path.join(d, f"small{i}"), "rb") as f:
                f.read()
            out.append(time.perf_counter() - t)
        return out
    took = {}
    def checkpoint():
        took["cp"] = control(aether.dir, "checkpoint", "a large checkpoint")
    drop_caches()
    t = threading.Thread(target=checkpoint)
    t.start()
    time.sleep(0.1)
    during = reads()
    t.join()
    drop_caches()
    idle = reads()
    results.append({"workload": f"read of a small file during a {mib} MiB checkpoint", "unit": "ms",
                    "aetherfs": statistics.median(during) * 1e3, "worst": max(during) * 1e3})
    results.append({"workload": "  the same read, nothing running", "unit": "ms", "aetherfs": statistics.median(idle) * 1e3,
                    "worst": max(idle) * 1e3})
    results.append({"workload": f"  the {mib} MiB checkpoint", "unit": "ms", "aetherfs": took["cp"] * 1e3})


def first_write_after_fork(native, aether, files, results):
    """Writes 4 KiB over each of `files` 4 KiB files right after a fork (their bytes are in the chunk
    store), against the same writes over native files. Reports the write call alone and open+write+close."""
    block = os.urandom(4096)
    def prepare(root):
        d = os.path.join(root, "fw")
        if os.path.exists(d):
            shutil.rmtree(d)
        os.makedirs(d)
        for i in range(files):
            with open(os.path.join(d, f"f{i}"), "wb") as f:
                f.write(os.urandom(4096))
        return d
    def measure(d):
        writes, whole = [], []
        for i in range(files):
            t0 = time.perf_counter()
            fd = os.open(os.path.join(d, f"f{i}"), os.O_WRONLY)
            t1 = time.perf_counter()
            os.pwrite(fd, block, 0)
            t2 = time.perf_counter()
            os.close(fd)
            t3 = time.perf_counter()
            writes.append(t2 - t1)
            whole.append(t3 - t0)
        return statistics.median(writes) * 1e6, statistics.median(whole) * 1e6
    nd = prepare(native.dir)
    sh("sync")
    ad = prepare(aether.dir)
    control(aether.dir, "fork", "fork-first-write")
    aw, ao = measure(ad)
    nw, no = measure(nd)
    results.append({"workload": "first 4 KiB write after fork", "unit": "us", "native": nw, "aetherfs": aw,
                    "aether/native": aw / nw, "cache": "warm"})
    results.append({"workload": "  open+write+close after fork", "unit": "us", "native": no, "aetherfs": ao,
                    "aether/native": ao / no, "cache": "warm"})


def du(path):
    return int(sh(f"du -sb {path}", capture=True).split()[0])


def make_ingest_data(dirs, total_mib, seed=7):
    """`total_mib` MiB in 4 MiB files, written identically into each of `dirs`: half of every file is
    random bytes, half is text with numbers (compressible about 3-4x)."""
    import random
    rnd = random.Random(seed)
    files = max(1, total_mib // 4)
    for d in dirs:
        os.makedirs(d, exist_ok=True)
    for i in range(files):
        parts = []
        for k in range(64):  # 64 blocks of 64 KiB
            if k % 2:
                parts.append(rnd.randbytes(65536))
            else:
                line = "".join(f"row {rnd.randrange(10**6)} value={rnd.randrange(10**4)} state=ok\n" for _ in range(1600))
                parts.append(line.encode()[:65536].ljust(65536, b"\n"))
        blob = b"".join(parts)
        for d in dirs:
            with open(os.path.join(d, f"data{i:04d}.bin"), "wb") as f:
                f.write(blob)
    return files


def change_one_percent(dirs, files, seed=8):
    """Small insertions (3 x 100 bytes) into 1% of the files, identically in each of `dirs`."""
    import random
    rnd = random.Random(seed)
    chosen = rnd.sample(range(files), max(1, files // 100))
    for i in chosen:
        name = f"data{i:04d}.bin"
        blob = open(os.path.join(dirs[0], name), "rb").read()
        for _ in range(3):
            at = rnd.randrange(len(blob))
            blob = blob[:at] + rnd.randbytes(100) + blob[at:]
        for d in dirs:
            with open(os.path.join(d, name), "wb") as f:
                f.write(blob)


def restic_env(work):
    repo = os.path.join(work, "restic-repo")
    return repo, f"RESTIC_PASSWORD=bench RESTIC_REPOSITORY={repo} RESTIC_CACHE_DIR={work}/restic-cache"


def start_restic_init(work):
    """`restic init` spends seconds deriving its key; it runs while the benchmark builds its inputs."""
    return subprocess.Popen(f"{restic_env(work)[1]} restic init --repository-version 2 -q", shell=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def ingest_vs_restic(native, aether, total_mib, restic_init, results, extra):
    """Checkpointing new data into the chunk store beside `restic backup` of the same data, then the
    same after a 1% change; and a cold read of the checkpointed data from the chunk store."""
    _, err = restic_init.communicate(timeout=300)
    if restic_init.returncode != 0:
        raise RuntimeError(f"restic init failed ({restic_init.returncode}): {err.strip()[-500:]}")
    src = os.path.join(native.dir, "ingest")
    dst = os.path.join(aether.dir, "ingest")
    files = make_ingest_data([src, dst], total_mib)
    total = files * 4 * 2**20
    sh("sync")
    repo, env = restic_env(native.work)
    objects = os.path.join(aether.store, "objects")
    store0 = du(objects)
    ta = control(aether.dir, "checkpoint", '{"message":"ingest","name":"ingest"}')
    store1 = du(objects)
    repo0 = du(repo)
    tr = timed(f"{env} restic backup -q --compression auto {src}")
    repo1 = du(repo)
    change_one_percent([src, dst], files)
    sh("sync")
    ta2 = control(aether.dir, "checkpoint", "one percent changed")
    store2 = du(objects)
    tr2 = timed(f"{env} restic backup -q --compression auto {src}")
    repo2 = du(repo)
    extra.append({"workload": f"ingest {total >> 20} MiB new data", "unit": "MB/s",
                  "aetherfs": total / ta / 1e6, "restic": total / tr / 1e6, "better": "higher"})
    extra.append({"workload": "  bytes stored", "unit": "MB", "aetherfs": (store1 - store0) / 1e6,
                  "restic": (repo1 - repo0) / 1e6, "better": "lower"})
    extra.append({"workload": "after a 1% change: bytes added", "unit": "MB", "aetherfs": (store2 - store1) / 1e6,
                  "restic": (repo2 - repo1) / 1e6, "better": "lower"})
    extra.append({"workload": "  time to save it", "unit": "s", "aetherfs": ta2, "restic": tr2, "better": "lower"})
    # Export of the checkpointed data as a tar archive, beside GNU tar of the same native tree (warm),
    # both into a pipe: GNU tar writing to /dev/null itself skips reading the files.
    tn = timed(f"tar -cf - -C {src} . | cat > /dev/null")
    te = timed(f"{aether.binary} export --store {aether.store} bench@ingest --path ingest -o - | cat > /dev/null")
    results.append({"workload": f"export {total >> 20} MiB as tar", "unit": "MB/s", "native": total / tn / 1e6,
                    "aetherfs": total / te / 1e6, "aether/native": tn / te, "cache": "warm"})
    # Import of the same tree as a tar archive into a new store (all of it new data), beside GNU tar
    # extracting it to a native directory and synced (an import is durable when it returns), and
    # beside the checkpoint's ingest of the same bytes above.
    archive = os.path.join(native.work, "ingest.tar")
    sh(f"tar -cf {archive} -C {src} .")
    untar = os.path.join(native.work, "untar")
    os.makedirs(untar)
    sh("sync")
    tx = timed(f"tar -xf {archive} -C {untar} && sync")
    fresh = os.path.join(native.work, "import-store")
    sh(f"{aether.binary} init --store {fresh} > /dev/null")
    ti = timed(f"{aether.binary} import --store {fresh} {archive} --session imported > /dev/null")
    results.append({"workload": f"import {total >> 20} MiB tar, new store", "unit": "MB/s", "native": total / tx / 1e6,
                    "aetherfs": total / ti / 1e6, "aether/native": tx / ti, "cache": "warm"})
    results.append({"workload": "  beside checkpoint ingest of it", "unit": "MB/s", "aetherfs": total / ta / 1e6, "cache": "warm"})
    shutil.rmtree(untar, ignore_errors=True)
    shutil.rmtree(fresh, ignore_errors=True)
    os.unlink(archive)
    # Cold read of the checkpointed bytes: the checkpoint's view reads the chunk store.
    view = os.path.join(aether.dir, ".aether", "checkpoints", "ingest", "ingest")
    drop_caches()
    t = timed(f"cat {view}/* > /dev/null")
    results.append({"workload": "read cold, from the chunk store", "unit": "MB/s", "aetherfs": total / t / 1e6, "cache": "cold"})


def sync_vs_peers(native, aether, total_mib, extra):
    """A push of the ingest data set (as a session of a store of its own) to an empty store over HTTP on
    loopback, beside `restic copy` of the same snapshot to a new restic repository and `rsync -a` of the
    same tree to a loopback rsync daemon; then the same after a 1% change."""
    src = os.path.join(native.dir, "ingest")
    files = len([n for n in os.listdir(src) if n.startswith("data")])
    total = sum(os.path.getsize(os.path.join(src, n)) for n in os.listdir(src))
    work = os.path.join(native.work, "sync")
    os.makedirs(work)
    a, b = os.path.join(work, "a"), os.path.join(work, "b")
    archive = os.path.join(work, "ingest.tar")
    sh(f"tar -cf {archive} -C {src} . && {aether.binary} init --store {a} > /dev/null && {aether.binary} init --store {b} > /dev/null")
    sh(f"{aether.binary} import --store {a} {archive} --session push > /dev/null")
    token = sh(f"{aether.binary} token create bench --scope write --store {b} 2> /dev/null", capture=True).strip()
    serve = subprocess.Popen([aether.binary, "serve", "--store", b, "--listen", "127.0.0.1:0"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    rsyncd = None
    try:
        url = "http://" + serve.stdout.readline().split()[-1]
        def push():
            t = time.perf_counter()
            out = sh(f"AETHERFS_TOKEN={token} {aether.binary} sync push {url} --store {a} --session push --json", capture=True)
            return time.perf_counter() - t, json.loads(out)
        # restic: a second repository with the first's chunker parameters, and the latest snapshot copied.
        repo, env = restic_env(native.work)
        repo2 = os.path.join(work, "restic-copy")
        env2 = f"RESTIC_PASSWORD=bench RESTIC_REPOSITORY={repo2} RESTIC_FROM_REPOSITORY={repo} RESTIC_FROM_PASSWORD=bench RESTIC_CACHE_DIR={native.work}/restic-cache"
        sh(f"{env2} restic init -q --repository-version 2 --copy-chunker-params")
        # rsync: a daemon on a loopback port, writing into a directory of the same disk.
        module = os.path.join(work, "rsync-dst")
        os.makedirs(module)
        conf = os.path.join(work, "rsyncd.conf")
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        open(conf, "w").write(f"use chroot = no\n[dst]\npath = {module}\nread only = no\nuid = root\ngid = root\n")
        rsyncd = subprocess.Popen(["rsync", "--daemon", "--no-detach", f"--port={port}", f"--config={conf}", "--address=127.0.0.1"])
        time.sleep(0.5)
        sh("sync")
        t1, r1 = push()
        # What arrived is the same tree: the same archive comes out of both stores.
        digest = lambda store: sh(f"{aether.binary} export --store {store} push -o - | sha256sum", capture=True).split()[0]
        if digest(a) != digest(b):
            raise RuntimeError("the pushed session exports differently from its source")
        t2, r2 = push()
        tr1 = timed(f"{env2} restic copy -q latest")
        tq1 = timed(f"rsync -a {src}/ rsync://127.0.0.1:{port}/dst/")
        extra.append({"workload": f"push {total >> 20} MiB over HTTP", "unit": "MB/s", "aetherfs": total / t1 / 1e6, "restic": total / tr1 / 1e6, "better": "higher"})
        extra.append({"workload": "  beside rsync -a to rsyncd", "unit": "MB/s", "aetherfs": total / t1 / 1e6, "restic": None, "rsync": total / tq1 / 1e6, "better": "higher"})
        extra.append({"workload": "  second push (nothing new)", "unit": "ms", "aetherfs": t2 * 1e3, "restic": None, "better": "lower",
                      "note": f"{r2['objects_sent']} objects sent"})
        # After a 1% change: a new checkpoint of the session, a new restic snapshot, rsync's delta.
        change_one_percent([src], files, seed=9)
        sh(f"tar -cf {archive} -C {src} .")
        before = du(os.path.join(a, "objects"))
        sh(f"{aether.binary} import --store {a} {archive} --into push > /dev/null")
        added = du(os.path.join(a, "objects")) - before
        sh(f"{env} restic backup -q --compression auto {src}")
        t3, r3 = push()
        if digest(a) != digest(b):
            raise RuntimeError("the pushed change exports differently from its source")
        r2size = du(repo2)
        tr3 = timed(f"{env2} restic copy -q latest")
        copied = du(repo2) - r2size
        tq3 = timed(f"rsync -a {src}/ rsync://127.0.0.1:{port}/dst/")
        extra.append({"workload": "after a 1% change: push time", "unit": "s", "aetherfs": t3, "restic": tr3, "rsync": tq3, "better": "lower"})
        extra.append({"workload": "  bytes sent (restic: copied)", "unit": "MB", "aetherfs": r3["bytes_sent"] / 1e6, "restic": copied / 1e6, "better": "lower",
                      "note": f"{r3['bytes_sent'] / max(added, 1):.2f}x what the change added to the store ({added / 1e6:.1f} MB)"})
    finally:
        serve.terminate()
        serve.wait(timeout=30)
        if rsyncd:
            rsyncd.terminate()
            rsyncd.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)


def free_port_base(count):
    """A base port with `count` free loopback ports after it."""
    import random, socket
    for _ in range(200):
        base = random.randrange(20000, 60000 - count)
        ok = True
        for port in range(base, base + count):
            with socket.socket() as sock:
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise RuntimeError(f"no {count} free ports in a row")


class S3Server:
    """SeaweedFS (`weed mini`, Scripts/setup's) on loopback ports of its own, in a directory of the run."""
    KEY, SECRET, BUCKET = "AKIDAETHERBENCH", "aether-bench-secret-key", "aether"

    def __init__(self, work):
        self.dir = os.path.join(work, "s3server")
        self.weed = os.environ.get("AETHERFS_WEED", os.path.join(ROOT, ".build/tools/weed/bin/weed"))
        self.proc = None

    def start(self):
        if not os.access(self.weed, os.X_OK):
            raise RuntimeError(f"no weed binary at {self.weed} (run Scripts/setup)")
        os.makedirs(os.path.join(self.dir, "data"), exist_ok=True)
        with open(os.path.join(self.dir, "s3.json"), "w") as f:
            json.dump({"identities": [{"name": "bench", "credentials": [{"accessKey": self.KEY, "secretKey": self.SECRET}],
                                       "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}, f)
        p = free_port_base(11)
        names = ["master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port", "filer.port.grpc",
                 "s3.port", "s3.port.grpc", "admin.port", "admin.port.grpc", "webdav.port"]
        args = [self.weed, "mini", f"-dir={self.dir}/data", "-ip=127.0.0.1", "-ip.bind=127.0.0.1"]
        args += [f"-{n}={p + i}" for i, n in enumerate(names)]
        args += ["-webdav=false", "-admin.ui=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
                 f"-s3.config={self.dir}/s3.json", f"-bucket={self.BUCKET}"]
        self.endpoint = f"http://127.0.0.1:{p + 6}"
        self.proc = subprocess.Popen(args, stdout=open(os.path.join(self.dir, "weed.log"), "w"), stderr=subprocess.STDOUT)
        end = time.time() + 60
        while time.time() < end:
            code = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", f"{self.endpoint}/{self.BUCKET}/"],
                                  stdout=subprocess.PIPE, text=True, timeout=10).stdout
            # The gateway answers before the bucket exists: the filer lists it once it does.
            bucket = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-H", "Accept: application/json",
                                     f"http://127.0.0.1:{p + 4}/buckets/{self.BUCKET}/"],
                                    stdout=subprocess.PIPE, text=True, timeout=10).stdout
            if code not in ("000", "503", "") and bucket == "200":
                return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"weed did not answer on {self.endpoint} within 60 s")

    def stop(self):
        if self.proc:
            self.proc.kill()
            self.proc.wait(timeout=30)
            self.proc = None


def status(d):
    with open(os.path.join(d, ".aether", "status")) as f:
        return json.load(f)


def s3_beside_local(aether, work, total_mib, s3rows):
    """The same new data checkpointed into the local store (the bench session's) and into a store whose
    objects are packs on a SeaweedFS on loopback; the requests the S3 checkpoint made (from the mount's
    `.aether/status`); reads of the checkpoint with the page cache dropped: on S3 first with the disk
    cache empty (after a remount), then again from the disk cache."""
    server = S3Server(work)
    store, mnt = os.path.join(work, "s3store"), os.path.join(work, "s3mnt")
    env = dict(os.environ, AWS_ACCESS_KEY_ID=S3Server.KEY, AWS_SECRET_ACCESS_KEY=S3Server.SECRET)
    os.makedirs(mnt, exist_ok=True)
    mounted = False
    try:
        server.start()
        subprocess.run([aether.binary, "init", "--store", store, "--objects", f"s3://{S3Server.BUCKET}/bench",
                        "--s3-endpoint", server.endpoint], env=env, check=True, stdout=subprocess.DEVNULL)
        mount = [aether.binary, "mount", "--store", store, "--session", "s3", mnt]
        subprocess.run(mount, env=env, check=True)
        mounted = True
        local = os.path.join(aether.dir, "s3-beside")
        remote = os.path.join(mnt, "data")
        files = make_ingest_data([local, remote], total_mib, seed=11)
        total = files * 4 * 2**20
        sh("sync")
        before = status(mnt)["store"]["requests"]
        tl = control(aether.dir, "checkpoint", '{"message":"beside s3","name":"s3-beside"}')
        ts = control(mnt, "checkpoint", '{"message":"ingest","name":"ingest"}')
        after = status(mnt)["store"]["requests"]
        delta = {k: after[k] - before[k] for k in after}
        reqs = delta["puts"] + delta["gets"] + delta["lists"] + delta["deletes"]
        s3rows.append({"workload": f"checkpoint {total >> 20} MiB new data", "unit": "MB/s", "local": total / tl / 1e6, "s3": total / ts / 1e6})
        s3rows.append({"workload": "  requests of that checkpoint", "unit": "n", "local": None, "s3": reqs,
                       "note": f"{delta['puts']} PUT, {delta['gets']} GET, {delta['lists']} LIST; {reqs / (total / 2**30):.0f} per GiB; {delta['bytes_sent'] / 1e6:.1f} MB sent"})
        # Cold: the daemon starts afresh with the disk cache emptied.
        sh(f"{aether.binary} unmount {mnt}")
        mounted = False
        shutil.rmtree(os.path.join(store, "cache"), ignore_errors=True)
        subprocess.run(mount, env=env, check=True)
        mounted = True
        lview = os.path.join(aether.dir, ".aether", "checkpoints", "s3-beside", "s3-beside")
        sview = os.path.join(mnt, ".aether", "checkpoints", "ingest", "data")
        drop_caches()
        tlc = timed(f"cat {lview}/* > /dev/null")
        tsc = timed(f"cat {sview}/* > /dev/null")
        cold = status(mnt)["store"]["requests"]
        s3rows.append({"workload": "read it, cache empty", "unit": "MB/s", "local": total / tlc / 1e6, "s3": total / tsc / 1e6,
                       "note": f"{cold['gets']} GET, {cold['bytes_received'] / 1e6:.1f} MB received"})
        drop_caches()
        tlw = timed(f"cat {lview}/* > /dev/null")
        tsw = timed(f"cat {sview}/* > /dev/null")
        warm = status(mnt)["store"]["requests"]
        s3rows.append({"workload": "read it again, from the disk cache", "unit": "MB/s", "local": total / tlw / 1e6, "s3": total / tsw / 1e6,
                       "note": f"{warm['gets'] - cold['gets']} GET"})
    finally:
        if mounted:
            sh(f"{aether.binary} unmount {mnt}", check=False) == 0 or sh(f"fusermount3 -uz {mnt}", check=False)
        server.stop()


def chunker_speed(binary, mib, results):
    out = json.loads(sh(f"{binary} {mib}", capture=True))
    results.append({"workload": "chunker alone, one core", "unit": "MB/s", "aetherfs": out["chunker_mb_s"]})
    results.append({"workload": "chunker + SHA-256, one core", "unit": "MB/s", "aetherfs": out["chunker_sha256_mb_s"]})


def run_measured(cmd, timeout=1800):
    """Runs `cmd` (a list); returns its seconds, its own peak resident MiB (wait4's rusage of that one
    child), its standard output and error, and its exit status."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=out, stderr=err, text=True)
        timer = threading.Timer(timeout, p.kill)
        timer.start()
        try:
            _, status, usage = os.wait4(p.pid, 0)
        finally:
            timer.cancel()
        secs = time.perf_counter() - t
        p.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return secs, usage.ru_maxrss / 1024, out.read(), err.read(), p.returncode


def store_maintenance(aether, files, results):
    """usage of the largest session and gc of the whole store, while the session stays mounted."""
    base, store = [aether.binary], ["--store", aether.store]
    for name, cmd in [(f"usage, {files}+-file session", ["usage", "bench", "--json"]),
                      ("gc --dry-run, bench store", ["gc", "--dry-run", "--min-age", "0s", "--json"]),
                      ("gc, bench store", ["gc", "--min-age", "0s", "--json"])]:
        secs, mib, out, err, rc = run_measured(base + cmd + store)
        if rc != 0:
            print(f"  {name}: failed: {err.strip()}", file=sys.stderr)
            continue
        results.append({"workload": name, "unit": "s", "aetherfs": secs})
        results.append({"workload": name + ": peak RSS", "unit": "MiB", "aetherfs": mib})
        if cmd[:2] == ["gc", "--min-age"]:
            results.append({"workload": "gc: reachable objects", "unit": "n", "aetherfs": json.loads(out)["reachable"]})


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes and fewer rounds (under 5 minutes)")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, one round: checks that the benchmark runs (Scripts/test)")
    ap.add_argument("--json", help="also write the results to this file")
    ap.add_argument("--rounds", type=int, help="interleaved rounds (default 3, quick 2, smoke 1)")
    ap.add_argument("--only", help="comma-separated substrings of workload names to run")
    ap.add_argument("--binary", default=os.path.join(ROOT, ".build/release/aetherfs"), help="the aetherfs executable")
    ap.add_argument("--chunkbench", default=os.path.join(ROOT, ".build/release/aetherfs-chunkbench"), help="the aetherfs-chunkbench executable")
    ap.add_argument("--work", default="/var/tmp/aetherfs-bench", help="scratch directory on the disk to measure")
    args = ap.parse_args()
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    rounds = args.rounds or {"smoke": 1, "quick": 2, "full": 3}[mode]
    size = {"smoke": dict(seq="4M", rnd_time="100ms", tree=60, repo=60, units=2, sessions=[10], cp_rounds=2,
                          ingest_mib=4, fork_files=5, chunk_mib=1, cp_mib=8),
            "quick": dict(seq="256M", rnd_time=5, tree=3000, repo=5000, units=60, sessions=[10, 1000, 10_000],
                          cp_rounds=7, ingest_mib=256, fork_files=200, chunk_mib=256, cp_mib=256),
            "full": dict(seq="1G", rnd_time=10, tree=10_000, repo=50_000, units=200, sessions=[10, 1000, 10_000, 100_000],
                         cp_rounds=20, ingest_mib=1024, fork_files=500, chunk_mib=256, cp_mib=700)}[mode]

    work = args.work
    if os.path.exists(work):
        for l in open("/proc/mounts"):
            if l.split()[1].startswith(work):
                sh(f"fusermount3 -uz {l.split()[1]}", check=False)
        # A daemon of an interrupted run may still be writing into its store.
        sh(f"pkill -f 'aetherfs mount .*--store {work}/'", check=False)
        time.sleep(0.5)
        shutil.rmtree(work)
    os.makedirs(work)
    wanted = lambda name: not args.only or any(o in name for o in args.only.split(","))
    restic_init = start_restic_init(work) if wanted("ingest") else None
    pt_bin = os.path.join(work, "passthrough_ll")
    sh(f"gcc -O2 -Wall -o {pt_bin} {EXAMPLE} $(pkg-config --cflags --libs fuse3)")

    ctx = {"tree_files": size["tree"], "repo_files": size["repo"], "seq": size["seq"], "rnd_time": size["rnd_time"]}
    ctx["tarball"] = os.path.join(work, "tree.tar")
    make_tree(ctx["tarball"], ctx["tree_files"])
    ctx["repo_tarball"] = os.path.join(work, "repo.tar")
    make_tree(ctx["repo_tarball"], ctx["repo_files"], seed=2)
    ctx["cproject"] = os.path.join(work, "cproject")
    make_c_project(ctx["cproject"], size["units"])

    native, aether = Native("native", work), Aether(work, args.binary)
    setups = [native, Passthrough(work, pt_bin), aether]
    values = {}
    results, extra, s3rows = [], [], []
    started = time.time()
    elapsed = lambda: f"({time.time() - started:.0f} s)"
    try:
        for s in setups:
            s.start()
        chosen = [w for w in workloads(ctx) if wanted(w[0])]
        def measure(name, fn, s):
            try:
                return fn(s, ctx)
            except Exception as e:  # a failed measurement is reported, never invented
                print(f"  {name} on {s.name}: failed: {e}", file=sys.stderr)
                if isinstance(s, Passthrough):
                    # passthrough_ll holds a descriptor per inode it has seen; past the limit
                    # (EMFILE) it fails everything after, so it starts afresh.
                    s.stop()
                    s.start()
                return None

        for r in range(rounds):
            for name, unit, better, fn in chosen:
                if mode == "smoke":
                    # Its figures mean nothing (it only shows that every workload runs), so the three
                    # setups run side by side: fio alone spends ~0.3 s starting up each time.
                    with ThreadPoolExecutor(len(setups)) as pool:
                        vs = list(pool.map(lambda s: measure(name, fn, s), setups))
                else:
                    vs = [measure(name, fn, s) for s in setups]
                for s, v in zip(setups, vs):
                    values.setdefault((name, s.name), []).append(v)
                print(f"round {r + 1}/{rounds}: {name} done {elapsed()}", file=sys.stderr)
        for name, unit, better, fn in chosen:
            row = {"workload": name, "unit": unit, "better": better,
                   "cache": "cold" if "cold" in name else "warm"}
            for s in setups:
                vs = [v for v in values[(name, s.name)] if v is not None]
                row[s.name] = statistics.median(vs) if vs else None
            a, n, p = row["aetherfs"], row["native"], row["passthrough"]
            if a and n and p:
                # AetherFS over the other, in the workload's unit (see `better` for the direction).
                row["aether/native"] = a / n
                row["aether/passthrough"] = a / p
            results.append(row)
        if wanted("first write"):
            first_write_after_fork(native, aether, size["fork_files"], results)
            print(f"first write after fork done {elapsed()}", file=sys.stderr)
        if wanted("ingest"):
            ingest_vs_restic(native, aether, size["ingest_mib"], restic_init, results, extra)
            print(f"ingest and restic done {elapsed()}", file=sys.stderr)
            # On the ingest data set, so with it.
            sync_vs_peers(native, aether, size["ingest_mib"], extra)
            print(f"push, restic copy and rsync done {elapsed()}", file=sys.stderr)
        if wanted("s3"):
            try:
                s3_beside_local(aether, work, size["ingest_mib"], s3rows)
            except Exception as e:  # reported like any failed measurement; the table still prints
                print(f"  s3 store: failed: {e}", file=sys.stderr)
            print(f"s3 store done {elapsed()}", file=sys.stderr)
        if wanted("checkpoint"):
            read_during_checkpoint(aether, size["cp_mib"], results)
            aether_only(aether, size["sessions"], size["cp_rounds"], results)
            print(f"checkpoint, fork and restore done {elapsed()}", file=sys.stderr)
        if wanted("gc") or wanted("usage"):
            store_maintenance(aether, size["sessions"][-1], results)
            print(f"usage and gc done {elapsed()}", file=sys.stderr)
        rss = aether.rss_mib()
        if rss:
            results.append({"workload": "aetherfs peak resident memory", "unit": "MiB", "aetherfs": rss})
    finally:
        for s in setups:
            s.stop()
    if wanted("chunker"):
        try:
            chunker_speed(args.chunkbench, size["chunk_mib"], results)
        except Exception as e:  # reported like any failed measurement; the table still prints
            print(f"  chunker: failed: {e}", file=sys.stderr)

    def fmt(v):
        return "-" if v is None else (f"{v:.3f}" if v < 10 else f"{v:.1f}")
    print(f"\n{'workload':36} {'unit':5} {'cache':5} {'native':>9} {'passthru':>9} {'aetherfs':>9} {'af/native':>9} {'af/pt':>7}")
    for r in results:
        print(f"{r['workload']:36} {r['unit']:5} {r.get('cache', ''):5} {fmt(r.get('native')):>9} {fmt(r.get('passthrough')):>9} "
              f"{fmt(r.get('aetherfs')):>9} {fmt(r.get('aether/native')):>9} {fmt(r.get('aether/passthrough')):>7}"
              + (f"  worst {r['worst']:.1f}" if 'worst' in r else ""))
    if extra:
        print(f"\n{'against restic and rsync (same data, same run)':36} {'unit':5} {'restic':>9} {'rsync':>9} {'aetherfs':>9} {'af/restic':>9} {'af/rsync':>9}")
        for r in extra:
            ratio = r["aetherfs"] / r["restic"] if r.get("restic") else None
            vs_rsync = r["aetherfs"] / r["rsync"] if r.get("rsync") else None
            print(f"{r['workload']:36} {r['unit']:5} {fmt(r.get('restic')):>9} {fmt(r.get('rsync')):>9} {fmt(r.get('aetherfs')):>9} {fmt(ratio):>9} {fmt(vs_rsync):>9}"
                  + (f"  {r['note']}" if r.get("note") else ""))
    if s3rows:
        print(f"\n{'objects on S3 (SeaweedFS, loopback) beside the local store':60} {'unit':5} {'local':>9} {'s3':>9} {'s3/local':>9}")
        for r in s3rows:
            ratio = r["s3"] / r["local"] if r.get("local") else None
            print(f"{r['workload']:60} {r['unit']:5} {fmt(r.get('local')):>9} {fmt(r.get('s3')):>9} {fmt(ratio):>9}"
                  + (f"  {r['note']}" if r.get("note") else ""))
    print(f"\n{mode} run, {rounds} interleaved round(s). Ratios are AetherFS/other of the unit: for MB/s higher is "
          "better, for seconds, ms and us lower is better.")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"mode": mode, "rounds": rounds, "results": results, "restic": extra, "s3": s3rows}, f, indent=2)


if __name__ == "__main__":
    main()
