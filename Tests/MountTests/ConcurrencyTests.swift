import Testing
import Foundation
import TestSupport

/// Eight writers, renamers and listers in one mount while another process loops checkpoints and forks.
@Suite(.enabled(if: canMount, "needs /dev/fuse"), .timeLimit(.minutes(30)))
struct Concurrency {
    /// Every checkpoint is the session's content at one instant (Scripts/instant.py): an appender and a
    /// rewriter write without fsync while 200 checkpoints are taken; each block of each checkpoint is
    /// checked against the writers' logs (no zeros where a write had returned, no passes out of order).
    /// A checkpoint cuts written files into the store without the session lock: reads of other files,
    /// lookups, opens and listings finish while it runs; a write waits for it and is not in it.
    @Test func aLargeCheckpointStallsNoRead() throws {
        try inMount(#"""
        python3 - <<'PY'
        import os, subprocess, threading, time
        os.makedirs("small", exist_ok=True)
        for i in range(20):
            open("small/f%d" % i, "wb").write(b"small %d\n" % i)
        open(".aether/checkpoint", "w").write("small files")
        with open("big", "wb") as f:
            for _ in range(96):
                f.write(os.urandom(1 << 20))
        done = {}
        def checkpoint():
            t0 = time.monotonic()
            open(".aether/checkpoint", "w").write('{"message":"big","name":"big"}')
            done["checkpoint"] = (t0, time.monotonic())
        t = threading.Thread(target=checkpoint); t.start()
        time.sleep(0.5)
        reads = []
        for i in range(20):
            r0 = time.monotonic()
            assert open("small/f%d" % i, "rb").read() == b"small %d\n" % i
            assert sorted(os.listdir("small"))[0] == "f0"
            os.stat("small/f%d" % i)
            reads.append(time.monotonic())
        w0 = time.monotonic()
        with open("small/after", "w") as f:
            f.write("written during the checkpoint")
        wrote = time.monotonic()
        t.join()
        c0, c1 = done["checkpoint"]
        print("checkpoint %.2fs; 20 reads done %.2fs after it started; the write returned %.2fs after it ended"
              % (c1 - c0, reads[-1] - c0, wrote - c1))
        assert reads[-1] < c1, "reads waited for the checkpoint"
        assert wrote >= c1 - 0.05, "a write did not wait for the checkpoint"
        assert not os.path.exists(".aether/checkpoints/big/small/after"), "a write during the checkpoint is in it"
        PY
        """#, timeout: 600)
    }

    @Test func everyCheckpointIsOneInstantUnderWriters() throws {
        try inMount(#"""
        python3 \#(repositoryRoot)/Scripts/instant.py --mount "$M" --checkpoints 200 --block-kib 256 --rewrite-blocks 16
        """#, timeout: 900)
    }

    @Test func checkpointsAreConsistentUnderLoad() throws {
        try inMount(#"""
        python3 - <<'PY'
        import hashlib, os, random, subprocess, sys, time, multiprocessing as mp

        DURATION = 12

        def writer(w, log):
            r = random.Random(w); end = time.time() + DURATION; n = 0
            with open(log, "w") as out:
                while time.time() < end:
                    n += 1
                    name = "w%d-%d" % (w, r.randrange(6))
                    body = (b"writer %d write %d " % (w, n)) * r.choice([1, 100, 5000])
                    out.write(hashlib.sha256(body).hexdigest() + "\n"); out.flush()
                    tmp = ".tmp-%d-%d" % (w, n)
                    with open(tmp, "wb") as f:
                        f.write(body)
                    os.rename(tmp, name)                       # whole-file replace, as editors do
                    if n % 7 == 0:
                        os.makedirs("dir%d" % w, exist_ok=True)
                        os.rename(name, "dir%d/%s" % (w, name)) # move into a directory and back
                        os.rename("dir%d/%s" % (w, name), name)
                    if n % 5 == 0:
                        os.listdir(".")

        def snapshots(names):
            end = time.time() + DURATION; i = 0
            while time.time() < end:
                i += 1
                with open(".aether/checkpoint", "w") as f:
                    f.write('{"message":"load","name":"load%d"}' % i)
                names.append("load%d" % i)
                if i % 3 == 0:
                    with open(".aether/fork", "w") as f:
                        f.write("loadfork%d" % i)

        logs = ["/tmp/aetherfs-conc-%d-%d.log" % (os.getpid(), w) for w in range(8)]
        procs = [mp.Process(target=writer, args=(w, logs[w])) for w in range(8)]
        manager = mp.Manager(); names = manager.list()
        procs.append(mp.Process(target=snapshots, args=(names,)))
        for p in procs: p.start()
        for p in procs:
            p.join(120)
            assert p.exitcode == 0, "a worker failed or hung"
        written = set()
        for l in logs:
            written.update(open(l).read().split()); os.unlink(l)
        assert len(names) >= 5, names
        checked = 0
        for cp in names:
            base = os.path.join(".aether/checkpoints", cp)
            for entry in os.listdir(base):
                path = os.path.join(base, entry)
                if entry.startswith("w") and os.path.isfile(path):
                    digest = hashlib.sha256(open(path, "rb").read()).hexdigest()
                    assert digest in written, f"{cp}/{entry} holds no whole write"
                    checked += 1
        print(f"{len(names)} checkpoints under load, {checked} files each equal to a whole write")
        PY
        """#, timeout: 400)
    }
}
