#!/usr/bin/env python3
"""Kills the AetherFS daemon with SIGKILL at random moments and checks that nothing acknowledged is lost.

Each round mounts the session, runs a writer that streams files with fsync and interleaves checkpoints,
commits and forks (recording each only after its call returned), kills the daemon after a random delay,
remounts, and checks: every fsync'ed version of every file is there byte for byte; every acknowledged
checkpoint, commit and fork exists and its checkpoint view matches the files acknowledged before it;
`aetherfs verify` reports the store clean.

Usage: crash.py --aetherfs BIN --work DIR [--rounds N] [--seed N]
"""
import argparse, hashlib, json, os, random, signal, subprocess, sys, time

def run(args, **kw):
    return subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def daemon_pid(aetherfs, store, mountpoint):
    """The pid of the process serving `mountpoint`, from its session's lease."""
    r = run([aetherfs, "session", "list", "--json", "--store", store])
    for s in json.loads(r.stdout or "[]") if r.returncode == 0 else []:
        if s.get("mountpoint") == mountpoint:
            return s.get("pid")
    return None


WRITER = r'''
import errno, hashlib, json, os, random, sys
mnt, journal, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
r = random.Random(seed)
j = open(journal, "a", buffering=1)
i = 0
while True:
    i += 1
    try:
        k = r.random()
        if k < 0.80:
            name = "f%d" % r.randrange(40)
            data = os.urandom(r.choice([10, 5000, 70000, 300000]))
            j.write(json.dumps({"intent": name}) + "\n")
            fd = os.open(os.path.join(mnt, name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.write(fd, data); os.fsync(fd); os.close(fd)
            j.write(json.dumps({"file": name, "sha": hashlib.sha256(data).hexdigest()}) + "\n")
        elif k < 0.90:
            name = "c%d_%d" % (seed, i)
            with open(os.path.join(mnt, ".aether/checkpoint"), "w") as f:
                f.write('{"message":"crash","name":"%s"}' % name)
            j.write(json.dumps({"checkpoint": name}) + "\n")
        elif k < 0.96:
            with open(os.path.join(mnt, ".aether/commit"), "w") as f:
                f.write("crash %d %d" % (seed, i))
            j.write(json.dumps({"commit": "crash %d %d" % (seed, i)}) + "\n")
        else:
            name = "k%d_%d" % (seed, i)
            with open(os.path.join(mnt, ".aether/fork"), "w") as f:
                f.write(name)
            j.write(json.dumps({"fork": name}) + "\n")
    except OSError as e:
        # The daemon is gone; any other refusal (a commit with nothing new) is acknowledged as such.
        if e.errno in (errno.ENOTCONN, errno.ECONNABORTED, errno.ENODEV, errno.EIO):
            break
'''


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--aetherfs", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    r = random.Random(a.seed)
    store, mnt = os.path.join(a.work, "store"), os.path.join(a.work, "mnt")
    os.makedirs(mnt, exist_ok=True)
    journal = os.path.join(a.work, "journal")
    env = dict(os.environ, AETHERFS_STORE=store)
    files, checkpoints, commits, forks, unknown = {}, {}, [], [], set()
    try:
        rounds(a, r, store, mnt, journal, env, files, checkpoints, commits, forks, unknown)
    finally:
        if any(l.split()[1] == mnt for l in open("/proc/mounts")):
            run(["fusermount3", "-uz", mnt])
    v = run([a.aetherfs, "verify", "--read-data"], env=env)
    if v.returncode != 0:
        sys.exit("the store is not clean after the kills:\n" + v.stdout + v.stderr)
    print(f"{a.rounds} kill points: {len(files)} files, {len(checkpoints)} checkpoints, {len(commits)} commits, "
          f"{len(forks)} forks all intact; verify: {v.stdout.strip().splitlines()[-1]}")


def rounds(a, r, store, mnt, journal, env, files, checkpoints, commits, forks, unknown):
    for round_ in range(1, a.rounds + 2):   # the last pass only checks the last kill
        m = run([a.aetherfs, "mount", "--session", "crash", mnt], env=env)
        if m.returncode != 0:
            sys.exit(f"round {round_}: remount failed: {m.stderr.strip()}")
        # A file the writer was rewriting when the daemon died may hold either version (or a part of the
        # new one, as on any filesystem): take what is there as its state from now on.
        for name in unknown:
            try:
                files[name] = hashlib.sha256(open(os.path.join(mnt, name), "rb").read()).hexdigest()
            except OSError:
                files.pop(name, None)
        unknown = set()
        # Check everything acknowledged so far survived the previous kill.
        for name, sha in files.items():
            try:
                got = hashlib.sha256(open(os.path.join(mnt, name), "rb").read()).hexdigest()
            except OSError as e:
                got = f"unreadable ({e})"
            if got != sha:
                sys.exit(f"round {round_}: {name} lost its fsync'ed content ({got} != {sha})")
        listed = run([a.aetherfs, "checkpoints", "crash", "--json"], env=env)
        names = {c["name"] for c in json.loads(listed.stdout)}
        for cp, expected in checkpoints.items():
            if cp not in names:
                sys.exit(f"round {round_}: acknowledged checkpoint {cp} is missing")
        for cp in r.sample(sorted(checkpoints), min(3, len(checkpoints))):
            for name, sha in checkpoints[cp].items():
                got = hashlib.sha256(open(os.path.join(mnt, ".aether/checkpoints", cp, name), "rb").read()).hexdigest()
                if got != sha:
                    sys.exit(f"round {round_}: checkpoint {cp} holds a different {name}")
        log = run([a.aetherfs, "log", "main"], env=env).stdout
        for c in commits:
            if c not in log:
                sys.exit(f"round {round_}: acknowledged commit '{c}' is missing from main's log")
        sessions = run([a.aetherfs, "session", "list", "--json"], env=env).stdout
        for f in forks:
            if f'"name":"{f}"' not in sessions:
                sys.exit(f"round {round_}: acknowledged fork {f} is missing")
        if round_ > a.rounds:
            run([a.aetherfs, "unmount", mnt], env=env)
            return
        # Run a writer, and kill the daemon under it.
        open(journal, "w").close()
        w = subprocess.Popen([sys.executable, "-c", WRITER, mnt, journal, str(a.seed * 1000 + round_)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(r.uniform(0.05, 1.5))
        pid = daemon_pid(a.aetherfs, store, mnt)
        if pid is None:
            w.kill()
            sys.exit(f"round {round_}: no process serves {mnt} (session list --json names none)")
        os.kill(pid, signal.SIGKILL)
        try:
            w.wait(timeout=60)
        except subprocess.TimeoutExpired:
            w.kill()
            sys.exit(f"round {round_}: the writer hung after the daemon was killed")
        run(["fusermount3", "-uz", mnt])
        pending = None
        for line in open(journal):
            e = json.loads(line)
            if "intent" in e:
                pending = e["intent"]
            elif "file" in e:
                files[e["file"]] = e["sha"]
                pending = None
            elif "checkpoint" in e:
                checkpoints[e["checkpoint"]] = dict(files)
            elif "commit" in e:
                commits.append(e["commit"])
            else:
                forks.append(e["fork"])
        if pending:
            unknown.add(pending)
        print(f"round {round_}: killed after {sum(1 for _ in open(journal))} journal lines", flush=True)


if __name__ == "__main__":
    main()
