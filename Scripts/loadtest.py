#!/usr/bin/env python3
"""Load test of `aetherfs serve` on loopback: readers and uploaders at once for a while.

Readers loop over GETs of sessions, branches, a log and a snapshot's export; uploaders import small
archives as new sessions. Prints one JSON line: requests, requests per second, latency percentiles,
statuses, and the server's resident memory before and at its peak. Exits 1 when any answer is not the
one expected, or the server's peak memory passes --max-rss-mib.
"""
import argparse, http.client, io, json, os, tarfile, threading, time, urllib.parse


def rss_kib(pid, field):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def archive(worker, n):
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as t:
        for i in range(3):
            data = f"worker {worker} request {n} file {i}\n".encode() * 50
            info = tarfile.TarInfo(f"d/f{i}")
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return out.getvalue()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--url", required=True)
    ap.add_argument("--read-token", required=True)
    ap.add_argument("--write-token", required=True)
    ap.add_argument("--export", required=True, help="a snapshot reference to export")
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--readers", type=int, default=32)
    ap.add_argument("--uploaders", type=int, default=8)
    ap.add_argument("--pid", type=int, help="the server's pid, for its memory")
    ap.add_argument("--max-rss-mib", type=float, default=0)
    args = ap.parse_args()
    u = urllib.parse.urlparse(args.url)
    reads = ["/v1/sessions", "/v1/branches", "/v1/sessions/s", "/v1/log/main",
             f"/v1/snapshots/{urllib.parse.quote(args.export)}/export"]
    lock = threading.Lock()
    latencies, statuses, unexpected = [], {}, []
    rss_before = rss_kib(args.pid, "VmRSS") if args.pid else 0
    end = time.monotonic() + args.seconds

    def record(what, status, expected, seconds):
        with lock:
            latencies.append(seconds)
            statuses[status] = statuses.get(status, 0) + 1
            if status != expected and len(unexpected) < 20:
                unexpected.append(f"{what}: {status}")

    def reader(k):
        c = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
        n = 0
        while time.monotonic() < end:
            path = reads[(k + n) % len(reads)]
            n += 1
            t = time.monotonic()
            try:
                c.request("GET", path, headers={"Authorization": f"Bearer {args.read_token}"})
                r = c.getresponse()
                r.read()
                record(path, r.status, 200, time.monotonic() - t)
            except Exception as e:  # a dropped connection is an error too
                record(path, f"error {type(e).__name__}", 200, time.monotonic() - t)
                c = http.client.HTTPConnection(u.hostname, u.port, timeout=60)

    def uploader(k):
        c = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
        n = 0
        while time.monotonic() < end:
            n += 1
            body = archive(k, n)
            path = f"/v1/import?session=load-{k}-{n}"
            t = time.monotonic()
            try:
                c.request("POST", path, body=body, headers={"Authorization": f"Bearer {args.write_token}",
                                                            "Content-Type": "application/x-tar"})
                r = c.getresponse()
                r.read()
                record(path, r.status, 201, time.monotonic() - t)
            except Exception as e:
                record(path, f"error {type(e).__name__}", 201, time.monotonic() - t)
                c = http.client.HTTPConnection(u.hostname, u.port, timeout=60)

    started = time.monotonic()
    threads = [threading.Thread(target=reader, args=(k,)) for k in range(args.readers)]
    threads += [threading.Thread(target=uploader, args=(k,)) for k in range(args.uploaders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    latencies.sort()
    pct = lambda p: latencies[min(len(latencies) - 1, int(len(latencies) * p))] * 1e3 if latencies else None
    peak = rss_kib(args.pid, "VmHWM") if args.pid else 0
    summary = {"requests": len(latencies), "requests_per_second": round(len(latencies) / elapsed, 1),
               "p50_ms": pct(0.5), "p99_ms": pct(0.99), "statuses": {str(k): v for k, v in statuses.items()},
               "unexpected": unexpected, "rss_before_mib": round(rss_before / 1024, 1), "rss_peak_mib": round(peak / 1024, 1)}
    print(json.dumps(summary))
    bad = bool(unexpected) or (args.max_rss_mib and peak / 1024 > args.max_rss_mib)
    raise SystemExit(1 if bad else 0)


if __name__ == "__main__":
    main()
