#!/usr/bin/env python3
"""What each action costs a shared store (objects on S3, metadata on PostgreSQL): S3 requests and bytes
(from the mount's .aether/status) and SQL statements (counted in the server's statement log) per mount,
checkpoint of N changed files, fork, commit and unmount. The figures docs/SCALING.md builds on.

Starts its own SeaweedFS and PostgreSQL (a throwaway cluster) on loopback and stops them.
Usage: Scripts/scaling.py [--binary PATH] [--files 1,100,1000]
"""
import argparse, glob, json, os, shutil, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import S3Server, free_port_base, ROOT  # noqa: E402


class Postgres:
    """A cluster in `work`, every statement logged (log_statement=all), trust auth for `aether`."""

    def __init__(self, work):
        self.dir = os.path.join(work, "pg")
        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))
        if not bins:
            raise RuntimeError("no PostgreSQL server (run Scripts/setup)")
        self.bin = os.path.dirname(bins[-1])
        self.as_user = ["setpriv", "--reuid=postgres", "--regid=postgres", "--clear-groups", "--"] if os.getuid() == 0 else []
        self.proc = None

    def start(self):
        os.makedirs(self.dir)
        if os.getuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        subprocess.run(self.as_user + [f"{self.bin}/initdb", "-D", f"{self.dir}/data", "-U", "aether", "--auth=trust",
                                       "--no-sync", "-E", "UTF8"], check=True, stdout=subprocess.DEVNULL, timeout=120)
        self.port = free_port_base(1)
        self.log = f"{self.dir}/statements.log"
        self.proc = subprocess.Popen(self.as_user + [f"{self.bin}/postgres", "-D", f"{self.dir}/data", "-p", str(self.port),
                                                     "-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=",
                                                     "-c", "log_statement=all", "-c", "fsync=off"],
                                     stdout=subprocess.DEVNULL, stderr=open(self.log, "w"))
        for _ in range(300):
            if subprocess.run([f"{self.bin}/pg_isready", "-q", "-h", "127.0.0.1", "-p", str(self.port)]).returncode == 0:
                subprocess.run([f"{self.bin}/psql", "-q", "-h", "127.0.0.1", "-p", str(self.port), "-U", "aether", "-d", "postgres",
                                "-c", "CREATE DATABASE team"], check=True)
                return
            time.sleep(0.1)
        raise RuntimeError("postgres did not start")

    def statements(self):
        """Statements logged so far (extended-protocol executes and simple statements)."""
        with open(self.log, errors="replace") as f:
            return sum(1 for line in f if "LOG:  execute" in line or "LOG:  statement:" in line)

    def stop(self):
        if self.proc:
            self.proc.terminate()
            self.proc.wait(timeout=30)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default=os.path.join(ROOT, ".build/release/aetherfs"))
    ap.add_argument("--files", default="1,100,1000")
    args = ap.parse_args()
    a = args.binary
    work = tempfile.mkdtemp(prefix="aetherfs-scaling-", dir="/var/tmp")
    os.chmod(work, 0o755)  # the PostgreSQL user reaches its cluster inside
    s3, pg = S3Server(work), Postgres(work)
    mnt = os.path.join(work, "mnt")
    os.makedirs(mnt)
    try:
        s3.start()
        pg.start()
        env = dict(os.environ, AWS_ACCESS_KEY_ID=s3.KEY, AWS_SECRET_ACCESS_KEY=s3.SECRET, AWS_REGION="us-east-1",
                   AETHERFS_STORE=os.path.join(work, "store"))
        run = lambda *cmd: subprocess.run([a, *cmd], env=env, check=True, stdout=subprocess.PIPE, text=True, timeout=600).stdout
        run("init", "--objects", f"s3://{s3.BUCKET}/team", "--s3-endpoint", s3.endpoint,
            "--meta", f"postgres://aether@127.0.0.1:{pg.port}/team")
        rows = []

        def requests():
            with open(os.path.join(mnt, ".aether", "status")) as f:
                return json.load(f)["store"].get("requests", {})

        def measure(what, action, in_mount=True):
            before_sql = pg.statements()
            before = requests() if in_mount else {}
            t = time.perf_counter()
            action()
            seconds = time.perf_counter() - t
            time.sleep(0.3)  # the log is written by the server
            after = requests() if in_mount else {}
            d = {k: after.get(k, 0) - before.get(k, 0) for k in ("puts", "gets", "lists", "deletes", "bytes_sent", "bytes_received")}
            rows.append((what, pg.statements() - before_sql, d, seconds))

        before_sql = pg.statements()
        run("mount", "--session", "work", mnt)
        time.sleep(0.3)
        rows.append(("mount (a new session)", pg.statements() - before_sql, {k: v for k, v in requests().items()}, 0))
        n_prev = 0
        for n in [int(x) for x in args.files.split(",")]:
            d = os.path.join(mnt, f"set{n}")
            os.makedirs(d)
            for i in range(n):
                with open(os.path.join(d, f"f{i}"), "wb") as f:
                    f.write(os.urandom(16384))
            measure(f"checkpoint of {n} new 16 KiB files",
                    lambda n=n: open(os.path.join(mnt, ".aether", "checkpoint"), "w").write(f"{n} files\n"))
        measure("checkpoint, nothing changed", lambda: open(os.path.join(mnt, ".aether", "checkpoint"), "w").write("again\n"))
        measure("fork", lambda: open(os.path.join(mnt, ".aether", "fork"), "w").write("other\n"))
        measure("commit", lambda: open(os.path.join(mnt, ".aether", "commit"), "w").write("ship\n"))
        with open(os.path.join(mnt, "set1", "f0"), "ab") as f:
            f.write(b"x")
        measure("commit of 1 changed file", lambda: open(os.path.join(mnt, ".aether", "commit"), "w").write("ship 2\n"))
        before_sql = pg.statements()
        run("unmount", mnt)
        time.sleep(0.3)
        rows.append(("unmount", pg.statements() - before_sql, {}, 0))
        before_sql = pg.statements()
        t = time.perf_counter()
        run("log")
        rows.append(("aetherfs log (a CLI open)", pg.statements() - before_sql, {}, time.perf_counter() - t))

        print(f"{'action':40} {'SQL':>5} {'PUT':>5} {'GET':>5} {'LIST':>5} {'sent':>10} {'recv':>10} {'s':>6}")
        for what, sql, d, s in rows:
            print(f"{what:40} {sql:5d} {d.get('puts', 0):5d} {d.get('gets', 0):5d} {d.get('lists', 0):5d} "
                  f"{d.get('bytes_sent', 0):10d} {d.get('bytes_received', 0):10d} {s:6.2f}")
    finally:
        subprocess.run(["fusermount3", "-uz", mnt], stderr=subprocess.DEVNULL)
        s3.stop()
        pg.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
