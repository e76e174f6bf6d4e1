#!/usr/bin/env python3
"""Checks that every checkpoint is the session's content at one instant (DESIGN, invariant 2).

Inside a mount, two writers run without fsync while the main thread takes checkpoints one after
another:
  - an appender adds 1 MiB blocks to a file (a new file every APPEND_FILE_BLOCKS blocks), each block
    stamped with its file and index;
  - a rewriter overwrites a file of REWRITE_BLOCKS blocks in passes, block 0 to the last, each block
    stamped with its pass and index.
Each writer logs, for every block, when its write() was called and when it returned. Then every
checkpoint's view (.aether/checkpoints/NAME/) is checked block by block against the logs:
  - appender: the file holds blocks 0..k-1 exactly, where every block whose write returned before the
    checkpoint request is in (k >= done) and none whose write started after the request's reply is
    (k <= started); no zeros, no torn blocks;
  - rewriter: there is one point g in the write sequence (between the last write done before the
    request and the last started before its reply) such that every block holds what the writes up to g
    left there: never blocks of passes out of order.

Usage: instant.py --mount DIR [--checkpoints N] [--block-kib N] [--rewrite-blocks N]
Exit status 0 when every block of every checkpoint is right; 1 with one line per wrong block.
"""
import argparse, os, struct, sys, threading, time

p = argparse.ArgumentParser()
p.add_argument("--mount", required=True)
p.add_argument("--checkpoints", type=int, default=200)
p.add_argument("--block-kib", type=int, default=1024)
p.add_argument("--rewrite-blocks", type=int, default=48)
p.add_argument("--append-file-blocks", type=int, default=24)
args = p.parse_args()

B = args.block_kib * 1024
REWRITE_BLOCKS = args.rewrite_blocks
APPEND_FILE_BLOCKS = args.append_file_blocks
os.chdir(args.mount)
os.makedirs("instant", exist_ok=True)


def block(tag, a, b):
    """A block of B bytes stamped (tag, a, b) every 16 bytes: any torn or misplaced piece shows."""
    return struct.pack("<4sIQ", tag, a, b) * (B // 16)


def stamp(data, off):
    tag, a, b = struct.unpack_from("<4sIQ", data, off)
    return tag, a, b


stop = threading.Event()
append_log = []   # (file, index, t_called, t_returned)
rewrite_log = []  # (seq, pass, index, t_called, t_returned)
errors = []


def appender():
    f = 0
    try:
        while not stop.is_set():
            fd = os.open("instant/append-%04d" % f, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            for i in range(APPEND_FILE_BLOCKS):
                if stop.is_set():
                    break
                data = block(b"APND", f, i)
                t0 = time.monotonic()
                n = os.write(fd, data)
                t1 = time.monotonic()
                assert n == B, n
                append_log.append((f, i, t0, t1))
                time.sleep(0.002)
            os.close(fd)
            f += 1
    except Exception as e:  # noqa: BLE001 - reported below
        errors.append("appender: %r" % e)


def rewriter():
    try:
        fd = os.open("instant/rewrite", os.O_WRONLY | os.O_CREAT, 0o644)
        seq = 0
        pas = 0
        while not stop.is_set():
            pas += 1
            for i in range(REWRITE_BLOCKS):
                data = block(b"RWRT", pas, i)
                t0 = time.monotonic()
                n = os.pwrite(fd, data, i * B)
                t1 = time.monotonic()
                assert n == B, n
                rewrite_log.append((seq, pas, i, t0, t1))
                seq += 1
            time.sleep(0.001)
        os.close(fd)
    except Exception as e:  # noqa: BLE001
        errors.append("rewriter: %r" % e)


# The rewritten file exists whole before the first checkpoint (pass 0), so every block has a writer.
with open("instant/rewrite", "wb") as f:
    for i in range(REWRITE_BLOCKS):
        f.write(block(b"RWRT", 0, i))

threads = [threading.Thread(target=appender), threading.Thread(target=rewriter)]
for t in threads:
    t.start()
checkpoints = []  # (name, t_request, t_reply)
try:
    for c in range(args.checkpoints):
        name = "instant-%04d" % c
        t0 = time.monotonic()
        fd = os.open(".aether/checkpoint", os.O_WRONLY)
        try:
            os.write(fd, ('{"message":"instant %d","name":"%s"}' % (c, name)).encode())
        finally:
            os.close(fd)
        t1 = time.monotonic()
        checkpoints.append((name, t0, t1))
finally:
    stop.set()
    for t in threads:
        t.join()
if errors:
    print("\n".join(errors))
    sys.exit(1)

wrong = []


def check_append(name, t_req, t_rep, view):
    files = {}
    for (f, i, c0, c1) in append_log:
        files.setdefault(f, []).append((i, c0, c1))
    for f, blocks in files.items():
        done = sum(1 for (_, c0, c1) in blocks if c1 < t_req)
        started = sum(1 for (_, c0, c1) in blocks if c0 < t_rep)
        path = os.path.join(view, "append-%04d" % f)
        if not os.path.exists(path):
            if done > 0:
                wrong.append("%s: append-%04d missing, %d blocks had been written" % (name, f, done))
            continue
        data = open(path, "rb").read()
        if len(data) % B:
            wrong.append("%s: append-%04d is %d bytes, not whole blocks" % (name, f, len(data)))
        k = len(data) // B
        if not done <= k <= started:
            wrong.append("%s: append-%04d has %d blocks; %d were written before the request, %d started before the reply"
                         % (name, f, k, done, started))
        for i in range(k):
            if data[i * B:(i + 1) * B] != block(b"APND", f, i):
                wrong.append("%s: append-%04d block %d is %r, not block %d" % (name, f, i, stamp(data, i * B), i))
                break


def check_rewrite(name, t_req, t_rep, view):
    data = open(os.path.join(view, "rewrite"), "rb").read()
    if len(data) != REWRITE_BLOCKS * B:
        wrong.append("%s: rewrite is %d bytes, not %d" % (name, len(data), REWRITE_BLOCKS * B))
        return
    got = []
    for i in range(REWRITE_BLOCKS):
        piece = data[i * B:(i + 1) * B]
        tag, pas, idx = stamp(piece, 0)
        if tag != b"RWRT" or idx != i or piece != block(b"RWRT", pas, i):
            wrong.append("%s: rewrite block %d is torn or misplaced (%r)" % (name, i, stamp(piece, 0)))
            return
        got.append(pas)
    # The point in the write sequence: every block i holds the pass of the last write of i at or before it.
    # Blocks are written in order within a pass, so the state after write (pass q, index j) is
    # [q]*(j+1) + [q-1]*(REWRITE_BLOCKS-j-1).
    lo = max((s for (s, _, _, _, c1) in rewrite_log if c1 < t_req), default=-1)
    hi = max((s for (s, _, _, c0, _) in rewrite_log if c0 < t_rep), default=-1)
    for g in range(lo, hi + 1):
        q, j = (g // REWRITE_BLOCKS + 1, g % REWRITE_BLOCKS) if g >= 0 else (0, REWRITE_BLOCKS - 1)
        if got == [q] * (j + 1) + [q - 1] * (REWRITE_BLOCKS - j - 1):
            return
    wrong.append("%s: rewrite holds passes %s: no instant between the request and its reply left that (writes %d..%d)"
                 % (name, compress(got), lo, hi))


def compress(passes):
    out, start = [], 0
    for i in range(1, len(passes) + 1):
        if i == len(passes) or passes[i] != passes[start]:
            out.append("%d:%d-%d" % (passes[start], start, i - 1))
            start = i
    return ",".join(out)


for (name, t_req, t_rep) in checkpoints:
    view = os.path.join(".aether/checkpoints", name, "instant")
    check_append(name, t_req, t_rep, view)
    check_rewrite(name, t_req, t_rep, view)

appended = len(append_log)
print("instant: %d checkpoints, %d appended and %d rewritten blocks of %d KiB, %d wrong"
      % (len(checkpoints), appended, len(rewrite_log), args.block_kib, len(wrong)))
for w in wrong[:40]:
    print(w)
sys.exit(1 if wrong else 0)
