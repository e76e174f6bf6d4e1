#!/usr/bin/env python3
"""One file, many ways of changing it: buffered writes, writes through a shared mmap, truncates (down
and up), copy_file_range from another file and within the file, hole punches, fsyncs and checkpoints,
checked against a model of the file's bytes.

Every --check-every operations the whole file is read back and compared; every --checkpoint-every
operations a checkpoint is taken and its view of the file is compared with the model as it was at that
instant. A failure prints the seed, the operation number and the first differing offset, and exits 1.

  python3 Scripts/mix.py --mount MNT --seed N --ops N [--size BYTES]
"""
import argparse, ctypes, errno, json, mmap, os, random, sys

FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE = 1, 2
libc = ctypes.CDLL(None, use_errno=True)
libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--mount", required=True)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--ops", type=int, default=10000)
    p.add_argument("--size", type=int, default=10 << 20, help="largest size the file reaches")
    p.add_argument("--check-every", type=int, default=1000)
    p.add_argument("--checkpoint-every", type=int, default=2500)
    a = p.parse_args()
    r = random.Random(a.seed)
    path, src_path = os.path.join(a.mount, "mix"), os.path.join(a.mount, "mix-src")
    source = r.randbytes(1 << 20)
    with open(src_path, "wb") as f:
        f.write(source)
    model = bytearray()
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    src = os.open(src_path, os.O_RDONLY)
    counts = {}
    checkpoints = 0

    def fail(i, what):
        sys.exit(f"mix: seed {a.seed}, operation {i}: {what}")

    def compare(i, got, label):
        if bytes(got) == bytes(model):
            return
        if len(got) != len(model):
            fail(i, f"{label}: size {len(got)}, model {len(model)}")
        at = next(k for k in range(len(got)) if got[k] != model[k])
        fail(i, f"{label}: first difference at offset {at}")

    def read_all(f):
        out, at = bytearray(), 0
        while True:
            b = os.pread(f, 1 << 20, at)
            if not b:
                return out
            out += b
            at += len(b)

    def copy_range(src_fd, piece, so, off):
        # copy_file_range of `piece` (the bytes at `so` of `src_fd`) to `off`, and the same in the model
        done = 0
        while done < len(piece):
            c = os.copy_file_range(src_fd, fd, len(piece) - done, so + done, off + done)
            if c == 0:
                break
            done += c
        if off > len(model):
            model.extend(bytes(off - len(model)))
        model[off:off + done] = piece[:done]

    for i in range(1, a.ops + 1):
        op = r.choices(["write", "mmap", "truncate", "copy", "copy-self", "punch", "fsync"],
                       [30, 25, 15, 10, 8, 7, 5])[0]
        counts[op] = counts.get(op, 0) + 1
        size = len(model)
        try:
            if op == "write":
                off = r.randrange(0, max(1, min(a.size, size + 65536)))
                data = r.randbytes(r.choice([1, 100, 4096, 65536, r.randrange(1, 262144)]))
                data = data[:max(0, a.size - off)] or b"x"
                os.pwrite(fd, data, off)
                if off > size:
                    model.extend(bytes(off - size))
                model[off:off + len(data)] = data
            elif op == "mmap" and size > 0:
                off = r.randrange(0, size)
                n = min(size - off, r.choice([1, 4096, 20000, 131072]))
                data = r.randbytes(n)
                with mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE) as m:
                    m[off:off + n] = data
                    if r.random() < 0.3:
                        m.flush()
                model[off:off + n] = data
            elif op == "truncate":
                new = r.choice([0, r.randrange(0, a.size), size // 2, min(a.size, size + r.randrange(1, 1 << 20))])
                os.ftruncate(fd, new)
                if new < size:
                    del model[new:]
                else:
                    model.extend(bytes(new - size))
            elif op == "copy":
                so = r.randrange(0, len(source))
                n = min(len(source) - so, r.randrange(1, 262144))
                off = r.randrange(0, max(1, min(a.size - n, size + 4096)))
                copy_range(src, source[so:so + n], so, off)
            elif op == "copy-self" and size > 2:
                half = size // 2
                n = r.randrange(1, min(half, 262144) + 1)
                so = r.randrange(0, half - n + 1)
                off = r.randrange(half, max(half + 1, min(a.size - n, size + 4096)))
                if off < so + n:
                    continue
                copy_range(fd, bytes(model[so:so + n]), so, off)
            elif op == "punch" and size > 0:
                off = r.randrange(0, size)
                n = min(size - off, r.choice([4096, 65536, r.randrange(1, 1 << 20)]))
                if libc.fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, n) != 0:
                    fail(i, f"fallocate: {os.strerror(ctypes.get_errno())}")
                model[off:off + n] = bytes(n)
            elif op == "fsync":
                os.fsync(fd)
        except OSError as e:
            fail(i, f"{op}: {os.strerror(e.errno)} ({errno.errorcode.get(e.errno, e.errno)})")
        if i % a.check_every == 0:
            compare(i, read_all(fd), "read back")
        if a.checkpoint_every and i % a.checkpoint_every == 0:
            checkpoints += 1
            name = f"mix-{checkpoints}"
            with open(os.path.join(a.mount, ".aether", "checkpoint"), "w") as f:
                f.write(json.dumps({"message": f"operation {i}", "name": name}))
            view = os.open(os.path.join(a.mount, ".aether", "checkpoints", name, "mix"), os.O_RDONLY)
            compare(i, read_all(view), f"checkpoint {name}")
            os.close(view)
    compare(a.ops, read_all(fd), "read back")
    os.close(fd)
    os.close(src)
    print(f"mix: seed {a.seed}: {a.ops} operations agree, {checkpoints} checkpoints ("
          + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) + ")")


if __name__ == "__main__":
    main()
