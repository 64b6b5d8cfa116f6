#!/usr/bin/env python3
"""Helpers for bench/relay/relay-bench.sh's observability figures
(loopback only; every socket has a timeout, every loop a bound).

    obs-load.py scrape MPORT SECONDS
        GET /metrics on 127.0.0.1:MPORT every second over one keep-alive
        connection, as Prometheus does, for at most SECONDS; prints
        "scrapes=N failed=F"
    obs-load.py burst MPORT N
        N GET /metrics back to back over one keep-alive connection; prints
        "scrapes=N bytes=B" (B: the last exposition's size)
    obs-load.py contexts PORT MPORT CONNS ROUNDS
        opens CONNS connections through the relay on PORT (each echoes one
        byte, so each is in its pipe), keeps 8 of them busy with echoes,
        then ROUNDS times: 2 s without a request, then 2 s of back-to-back
        GET /debug/contexts on MPORT. From /debug/loops before and after
        each period it takes the workers' busy time per loop iteration
        (the delta histogram of each period), and prints per round
        "round=R quiet_p99_ns=A busy_p99_ns=B quiet_max_bucket_ns=C
        busy_max_bucket_ns=D requests=N wall_ms=W copy_us=X contexts=K"
        (p99 and max over the workers' iterations of the period; wall_ms
        the median request; copy_us the longest copy a worker reported).
"""
import http.client
import json
import selectors
import socket
import statistics
import sys
import threading
import time


def get(hc, path):
    hc.request("GET", path)
    r = hc.getresponse()
    body = r.read()
    if r.status != 200:
        raise RuntimeError("%s: %d" % (path, r.status))
    return body


def scrape_main(mport, seconds):
    hc = http.client.HTTPConnection("127.0.0.1", mport, timeout=10)
    n = failed = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t0 = time.monotonic()
        try:
            get(hc, "/metrics")
            n += 1
        except (OSError, RuntimeError, http.client.HTTPException):
            failed += 1
            hc.close()
            hc = http.client.HTTPConnection("127.0.0.1", mport, timeout=10)
        time.sleep(max(0.0, 1.0 - (time.monotonic() - t0)))
    print("scrapes=%d failed=%d" % (n, failed), flush=True)


def burst_main(mport, n):
    hc = http.client.HTTPConnection("127.0.0.1", mport, timeout=10)
    body = b""
    for _ in range(n):
        body = get(hc, "/metrics")
    hc.close()
    print("scrapes=%d bytes=%d" % (n, len(body)), flush=True)


def open_many(port, n):
    """n connections, each with one byte echoed back (so the relay holds
    both sides and a running pipe for each)."""
    socks = []
    sel = selectors.DefaultSelector()
    pending = {}
    for i in range(n):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        socks.append(s)
        sel.register(s, selectors.EVENT_WRITE)
        pending[s.fileno()] = s
        if len(pending) >= 256 or i == n - 1:
            end = time.monotonic() + 60
            while pending and time.monotonic() < end:
                for key, ev in sel.select(1):
                    s = key.fileobj
                    if ev & selectors.EVENT_WRITE:
                        s.send(b"x")
                        sel.modify(s, selectors.EVENT_READ)
                    elif s.recv(1) == b"x":
                        sel.unregister(s)
                        del pending[s.fileno()]
            if pending:
                raise RuntimeError("%d connections not echoed" % len(pending))
    return socks


def busy(socks, stop):
    """Echo round trips on a few connections, so the workers iterate."""
    for s in socks:
        s.setblocking(True)
        s.settimeout(10)
    while not stop.is_set():
        for s in socks:
            s.sendall(b"p")
            if s.recv(1) != b"p":
                raise RuntimeError("busy echo failed")


def delta(h0, h1):
    """Per worker, the bucket counts of the period between two samples."""
    out = []
    for a, b in zip(h0["loops"], h1["loops"]):
        out.append([y - x for x, y in zip(a["buckets"], b["buckets"])])
    return out


def bound(bounds, i):
    return bounds[i] if i < len(bounds) else float("inf")


def quantile(bounds, counts, q):
    total = sum(counts)
    if total == 0:
        return 0
    rank = q * total
    seen = 0
    for i, c in enumerate(counts):
        seen += c
        if seen >= rank:
            return bound(bounds, i)
    return bound(bounds, len(counts) - 1)


def period_stats(bounds, per_worker):
    merged = [sum(x) for x in zip(*per_worker)]
    top = max((i for i, c in enumerate(merged) if c), default=0)
    return quantile(bounds, merged, 0.99), bound(bounds, top)


def loops(hc):
    return json.loads(get(hc, "/debug/loops"))


def contexts_main(port, mport, conns, rounds):
    socks = open_many(port, conns)
    stop = threading.Event()
    t = threading.Thread(target=busy, args=(socks[:8], stop), daemon=True)
    t.start()
    hc = http.client.HTTPConnection("127.0.0.1", mport, timeout=60)
    pub = 0.1  # /debug/loops publishes every 100 ms: wait that out
    try:
        for r in range(rounds):
            h0 = loops(hc)
            time.sleep(2.0)
            time.sleep(pub)
            h1 = loops(hc)
            walls, copies, count = [], [], 0
            end = time.monotonic() + 2.0
            while time.monotonic() < end:
                t0 = time.monotonic()
                doc = json.loads(get(hc, "/debug/contexts?format=json"))
                walls.append((time.monotonic() - t0) * 1000)
                copies.append(doc["longest_copy_us"])
                count = doc["contexts"]
            time.sleep(pub)
            h2 = loops(hc)
            bounds = h0["bounds_ns"]
            qp99, qmax = period_stats(bounds, delta(h0, h1))
            bp99, bmax = period_stats(bounds, delta(h1, h2))
            print("round=%d quiet_p99_ns=%s busy_p99_ns=%s "
                  "quiet_max_bucket_ns=%s busy_max_bucket_ns=%s requests=%d "
                  "wall_ms=%.2f copy_us=%.1f contexts=%d" %
                  (r, qp99, bp99, qmax, bmax, len(walls),
                   statistics.median(walls), max(copies), count), flush=True)
    finally:
        stop.set()
        t.join(10)
        for s in socks:
            s.close()


def main():
    if sys.argv[1] == "scrape":
        scrape_main(int(sys.argv[2]), float(sys.argv[3]))
    elif sys.argv[1] == "burst":
        burst_main(int(sys.argv[2]), int(sys.argv[3]))
    elif sys.argv[1] == "contexts":
        contexts_main(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]),
                      int(sys.argv[5]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
