#!/usr/bin/env python3
"""End-to-end tests of uvctx-relay: real processes on loopback only.

    relay_test.py --relay PATH --gen-certs PATH [--sanitize MODE] CASE

CASE is one of the functions named case_* below (cli, plain, tls,
upstream_tls, slow, deadlines, drain, workers, emfile, metrics, trace,
debug, page, rules, prometheus, logs,
halfclose).
Each starts its own
upstreams and relays, bounds every wait, and kills what it started on the
way out. Timing windows are asserted only when --sanitize is empty (plain
build); sanitizer builds check the same outcomes without the clock. The
relay must exit 0 after a drain: under ASan that also proves it leaked
nothing (LeakSanitizer makes the exit status non-zero otherwise).

Exit status: 0 passed, 1 failed, 77 skipped (a tool is missing).
"""
import argparse
import hashlib
import json
import os
import re
import resource
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

SKIP = 77
ARGS = None
PROCS = []
RELAYS = []
TMP = None


class Fail(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Fail(what)


def log(msg):
    print(msg, flush=True)


def timed():
    """Timing assertions only in the plain build."""
    return not ARGS.sanitize


# ---- processes --------------------------------------------------------------

def spawn(argv, **kw):
    p = subprocess.Popen(argv, **kw)
    PROCS.append(p)
    return p


def kill_all():
    for p in PROCS:
        if p.poll() is None:
            try:
                p.kill()
            except OSError:
                pass
    for p in PROCS:
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass


class Relay:
    """A uvctx-relay process; its stderr (the log) goes to a file."""

    def __init__(self, upstream_port, *extra, limit_fds=None, name="relay",
                 metrics=False, upstream_host="127.0.0.1", env=None):
        self.log_path = os.path.join(TMP, name + ".log")
        self.log_file = open(self.log_path, "wb")
        argv = [ARGS.relay, "--listen", "127.0.0.1:0",
                "--connect", "%s:%d" % (upstream_host, upstream_port)
                ] + list(extra)
        pre = None
        if limit_fds is not None:
            def pre():
                resource.setrlimit(resource.RLIMIT_NOFILE,
                                   (limit_fds, limit_fds))
        self.proc = spawn(argv, stdout=subprocess.PIPE,
                          stderr=self.log_file, preexec_fn=pre, env=env)
        RELAYS.append(self)
        line = read_line(self.proc.stdout, 20 if timed() else 60)
        m = re.match(r"listening on 127\.0\.0\.1:(\d+)$", line or "")
        check(m is not None, "relay did not print its port, got %r" % line)
        self.port = int(m.group(1))
        self.pid = self.proc.pid
        self.metrics_port = None
        if metrics:
            line = read_line(self.proc.stdout, 20 if timed() else 60)
            m = re.match(r"metrics on (\S+):(\d+)$", line or "")
            check(m is not None,
                  "relay did not print its metrics port, got %r" % line)
            self.metrics_host = m.group(1)
            self.metrics_port = int(m.group(2))

    def signal(self, sig=signal.SIGTERM):
        self.proc.send_signal(sig)

    def wait(self, timeout):
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise Fail("relay did not exit within %.1fs" % timeout)

    def stop(self, timeout=30):
        """SIGTERM, then demand exit status 0 (and no leak report), and
        that every close line named its side and phase."""
        self.signal()
        rc = self.wait(timeout)
        check(rc == 0, "relay exit status %d, log:\n%s" % (rc, self.text()))
        check_close_lines(self)

    def text(self):
        self.log_file.flush()
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def events(self, event=None):
        out = []
        for line in self.text().splitlines():
            if line.startswith("{"):
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
            elif line.startswith("ts="):
                rec = parse_logfmt(line)
            else:
                continue
            if event is None or rec.get("event") == event:
                out.append(rec)
        return out

    def closes(self):
        return self.events("close")

    def fds(self):
        return len(os.listdir("/proc/%d/fd" % self.pid))

    def cpu_seconds(self):
        with open("/proc/%d/stat" % self.pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def parse_logfmt(line):
    rec = {}
    for m in re.finditer(r'(\w+)=("(?:[^"\\]|\\.)*"|\S*)', line):
        v = m.group(2)
        if v.startswith('"'):
            v = json.loads(v)
        rec[m.group(1)] = v
    return rec


def read_line(pipe, timeout):
    sel = selectors.DefaultSelector()
    sel.register(pipe, selectors.EVENT_READ)
    buf = b""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if not sel.select(max(0.0, end - time.monotonic())):
            break
        ch = os.read(pipe.fileno(), 1)
        if not ch:
            break
        if ch == b"\n":
            return buf.decode()
        buf += ch
    return buf.decode() if buf else None


def wait_until(cond, timeout, what, step=0.02):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(step)
    raise Fail("timed out after %.1fs waiting for %s" % (timeout, what))


# ---- upstreams --------------------------------------------------------------

def http_upstream(root):
    p = spawn([sys.executable, "-u", "-m", "http.server", "0", "--bind",
               "127.0.0.1", "--directory", root],
              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    line = read_line(p.stdout, 20)
    m = re.search(r"port (\d+)", line or "")
    check(m is not None, "http.server did not start: %r" % line)
    return int(m.group(1))


class LoopbackServer:
    """Listens on 127.0.0.1:0 and runs serve(conn) on a thread of its own
    for every connection."""

    def __init__(self, backlog=64, host="127.0.0.1"):
        self.sock = socket.socket(
            socket.AF_INET6 if ":" in host else socket.AF_INET)
        self.sock.bind((host, 0))
        self.sock.listen(backlog)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        self.accepted = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)
            self.accepted += 1
            threading.Thread(target=self.serve, args=(c,), daemon=True).start()


class EchoServer(LoopbackServer):
    """A threaded echo server on 127.0.0.1:0 (or `host`, e.g. ::1)."""

    def __init__(self, host="127.0.0.1"):
        super().__init__(backlog=512, host=host)

    @staticmethod
    def serve(c):
        try:
            while True:
                d = c.recv(65536)
                if not d:
                    break
                c.sendall(d)
            c.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        finally:
            c.close()


def make_files(root, sizes):
    digests = {}
    for size in sizes:
        name = "f%d" % size
        h = hashlib.sha256()
        with open(os.path.join(root, name), "wb") as f:
            left = size
            block = os.urandom(1 << 20)
            while left > 0:
                chunk = block[:min(left, len(block))]
                f.write(chunk)
                h.update(chunk)
                left -= len(chunk)
        digests[name] = h.hexdigest()
    return digests


def certs():
    out = os.path.join(TMP, "certs")
    r = subprocess.run(["sh", ARGS.gen_certs, out], capture_output=True,
                       timeout=60)
    check(r.returncode == 0, "gen-certs failed: %s" % r.stderr.decode())
    return out


def curl(url, out, *extra, timeout=120):
    argv = ["curl", "-sS", "--fail", "-o", out, "--max-time", str(timeout),
            url] + list(extra)
    return subprocess.run(argv, capture_output=True, timeout=timeout + 10)


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def echo_roundtrip(port, payload, timeout=10):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(payload)
        got = b""
        while len(got) < len(payload):
            d = s.recv(65536)
            if not d:
                break
            got += d
        return got
    finally:
        s.close()


def wait_closed(s, timeout):
    """Blocks until the peer closes s (EOF or reset); returns when."""
    s.settimeout(timeout)
    try:
        while True:
            d = s.recv(65536)
            if not d:
                break
    except (ConnectionResetError, BrokenPipeError):
        pass
    except socket.timeout:
        raise Fail("connection not closed within %.1fs" % timeout)
    return time.monotonic()


def busy_until_cut(port, limit=10):
    """Keeps a connection to `port` busy (an echoed tick every 50 ms) until
    the relay ends it or `limit` seconds pass. Returns (ended, start, end)
    in time.monotonic() seconds."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    t0 = time.monotonic()
    gone = False
    while time.monotonic() - t0 < limit and not gone:
        try:
            s.sendall(b"tick")
            if s.recv(100) == b"":
                gone = True
        except OSError:
            gone = True
        time.sleep(0.05)
    t1 = time.monotonic()
    s.close()
    return gone, t0, t1


def reasons(relay):
    return [c.get("reason") for c in relay.closes()]


def closed_within(s, lo, hi, what, t0=None, timeout=10):
    """Waits until the relay closes s (timed from t0, default now), logs
    the time, and in the plain build checks lo <= time <= hi."""
    if t0 is None:
        t0 = time.monotonic()
    t1 = wait_closed(s, timeout)
    s.close()
    log("%s after %.3fs" % (what, t1 - t0))
    if timed():
        check(lo <= t1 - t0 <= hi, "%s at %.3fs" % (what, t1 - t0))


def stop_after_one_close(relay, reason):
    """Waits for the relay's one close line, stops the relay (exit 0), and
    checks that the connection ended for `reason`."""
    wait_until(lambda: len(relay.closes()) == 1, 10, "close line")
    relay.stop()
    check(reasons(relay) == [reason], "reasons %r" % reasons(relay))


def client_done(reason):
    """How a connection whose client closed on its own may end: "eof", or
    "reset" when the client hung up before our FIN or TLS close_notify
    reached it (an HTTPS client with its whole body does not wait), or
    "truncated" when a TLS client closed without close_notify."""
    return reason in ("eof", "reset", "truncated")


# ---- cases -------------------------------------------------------------------

def case_cli():
    """Bad configurations: exit 2 and one clear line, before serving."""
    d = certs()
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    busy_port = busy.getsockname()[1]
    base = ["--connect", "127.0.0.1:9"]
    cases = [
        (["--listen", "127.0.0.1:0", "--connect", "127.0.0.1:9",
          "--idle-timeout", "10"], "bad duration"),
        (["--listen", "127.0.0.1:0", "--connect", "127.0.0.1:9",
          "--connect-timeout", "5h"], "bad duration"),
        (["--listen", "127.0.0.1:0", "--connect", "127.0.0.1:9",
          "--drain-timeout", "-1s"], "bad duration"),
        (["--listen", "127.0.0.1", "--connect", "127.0.0.1:9"],
         "bad --listen address"),
        (["--listen", "127.0.0.1:99999", "--connect", "127.0.0.1:9"],
         "bad --listen address"),
        (["--listen", "127.0.0.1:0", "--connect", "no.such.host.invalid:80"],
         "bad --connect address"),
        (["--listen", "127.0.0.1:%d" % busy_port] + base,
         "address already in use"),
        (["--listen", "127.0.0.1:0", "--tls-cert", d + "/nope.pem",
          "--tls-key", d + "/server.key"] + base, "cannot use --tls-cert"),
        (["--listen", "127.0.0.1:0", "--tls-cert", d + "/server.pem",
          "--tls-key", d + "/mismatch.key"] + base, "cannot use --tls-cert"),
        (["--listen", "127.0.0.1:0", "--tls-cert", d + "/server.pem"] + base,
         "go together"),
        (["--listen", "127.0.0.1:0", "--connect-tls", "--ca",
          d + "/nope.pem"] + base, "cannot use --ca"),
        (["--listen", "127.0.0.1:0", "--workers", "0"] + base,
         "bad --workers"),
        (["--listen", "127.0.0.1:0", "--max-connections", "x"] + base,
         "bad --max-connections"),
        (["--listen", "127.0.0.1:0", "--log-format", "xml"] + base,
         "bad --log-format"),
        (["--listen", "127.0.0.1:0", "--send-timeout", "5"] + base,
         "bad duration"),
        (["--listen", "127.0.0.1:0", "--max-buffer-memory", "64X"] + base,
         "bad --max-buffer-memory"),
        (["--listen", "127.0.0.1:0", "--max-buffer-memory", "0"] + base,
         "bad --max-buffer-memory"),
        (["--listen", "127.0.0.1:0", "--workers", "2",
          "--max-buffer-memory", "100K"] + base,
         "less than one 64K buffer per worker"),
        (["--listen", "127.0.0.1:0", "--frobnicate", "1"] + base,
         "unknown option"),
        (["--connect", "127.0.0.1:9"], "required"),
        (["--listen", "127.0.0.1:0", "--metrics", "127.0.0.1"] + base,
         "bad --metrics address"),
        (["--listen", "127.0.0.1:0", "--metrics",
          "127.0.0.1:%d" % busy_port] + base, "cannot listen on --metrics"),
        (["--listen", "127.0.0.1:0", "--trace",
          os.path.join(TMP, "no", "such", "dir", "t.json")] + base,
         "cannot write --trace"),
        (["--listen", "127.0.0.1:0", "--trace", ""] + base,
         "--trace needs a file name"),
        (["--listen", "127.0.0.1:0", "--connect-tls", "--alpn",
          ",".join("p%d" % i for i in range(33))] + base,
         "at most 32 protocols"),
        (["--listen", "127.0.0.1:0", "--sni", "example.com"] + base,
         "need --connect-tls"),
        (["--listen", "127.0.0.1:0", "--connect-timeout", "0"] + base,
         "greater than zero"),
    ]
    for argv, want in cases:
        r = subprocess.run([ARGS.relay] + argv, capture_output=True,
                           timeout=30)
        err = r.stderr.decode()
        lines = [x for x in err.splitlines() if x.strip()]
        log("%-60s -> %d %s" % (" ".join(argv)[-60:], r.returncode,
                                 lines[0] if lines else ""))
        check(r.returncode == 2, "exit %d for %s" % (r.returncode, argv))
        check(r.stdout == b"", "printed on stdout for %s" % argv)
        check(len(lines) == 1 and want in lines[0],
              "expected one line with %r, got %r" % (want, err))
    busy.close()
    r = subprocess.run([ARGS.relay, "--help"], capture_output=True, timeout=30)
    check(r.returncode == 0 and b"--listen" in r.stdout, "--help")


def case_plain():
    """curl through a plain relay: byte-exact bodies, 0 B to 100 MiB."""
    root = os.path.join(TMP, "www")
    os.mkdir(root)
    big = 100 << 20 if timed() else 8 << 20
    digests = make_files(root, [0, 1, 65537, (1 << 20) + 3, big])
    up = http_upstream(root)
    relay = Relay(up)
    for name, digest in digests.items():
        out = os.path.join(TMP, "got-" + name)
        t0 = time.monotonic()
        r = curl("http://127.0.0.1:%d/%s" % (relay.port, name), out)
        check(r.returncode == 0, "curl %s: %s" % (name, r.stderr.decode()))
        check(sha256(out) == digest, "body of %s differs" % name)
        log("plain %-10s ok in %.2fs" % (name, time.monotonic() - t0))
        os.unlink(out)
    # A few at once.
    procs = []
    for i in range(8):
        out = os.path.join(TMP, "par%d" % i)
        procs.append((out, subprocess.Popen(
            ["curl", "-sS", "--fail", "-o", out, "--max-time", "60",
             "http://127.0.0.1:%d/f%d" % (relay.port, (1 << 20) + 3)])))
    for out, p in procs:
        check(p.wait(timeout=90) == 0, "parallel curl failed")
        check(sha256(out) == digests["f%d" % ((1 << 20) + 3)],
              "parallel body differs")
    relay.stop()
    closes = relay.closes()
    check(len(closes) == len(digests) + 8,
          "expected %d close lines, got %d" % (len(digests) + 8, len(closes)))
    for c in closes:
        for k in ("conn", "peer", "bytes_up", "bytes_down", "duration_ms",
                  "reason"):
            check(k in c, "close line without %s: %r" % (k, c))
        check(client_done(c["reason"]), "reason %r" % c["reason"])
    check(any(int(c["bytes_down"]) > big for c in closes),
          "no close line counts the big body")


def case_tls():
    """TLS termination: curl https bodies, openssl s_client echo."""
    d = certs()
    root = os.path.join(TMP, "www")
    os.mkdir(root)
    big = 32 << 20 if timed() else 4 << 20
    digests = make_files(root, [0, 1, 65537, big])
    up = http_upstream(root)
    relay = Relay(up, "--tls-cert", d + "/chain.pem", "--tls-key",
                  d + "/server.key")
    for name, digest in digests.items():
        out = os.path.join(TMP, "got-" + name)
        r = curl("https://localhost:%d/%s" % (relay.port, name), out,
                 "--cacert", d + "/ca.pem")
        check(r.returncode == 0, "curl %s: %s" % (name, r.stderr.decode()))
        check(sha256(out) == digest, "body of %s differs" % name)
        log("tls %-10s ok" % name)
    # A client that does not trust us fails; the relay logs tls-error.
    r = curl("https://localhost:%d/f1" % relay.port,
             os.path.join(TMP, "untrusted"), "--cacert", d + "/other-ca.pem")
    check(r.returncode != 0, "curl trusted a stranger's CA")
    relay.stop()

    echo = EchoServer()
    relay = Relay(echo.port, "--tls-cert", d + "/server.pem", "--tls-key",
                  d + "/server.key", name="relay-echo")
    p = spawn(["openssl", "s_client", "-connect", "127.0.0.1:%d" % relay.port,
               "-CAfile", d + "/ca.pem", "-verify_return_error",
               "-verify_hostname", "localhost", "-quiet", "-no_ign_eof"],
              stdin=subprocess.PIPE, stdout=subprocess.PIPE,
              stderr=subprocess.PIPE)
    p.stdin.write(b"hello through the relay\n")
    p.stdin.flush()
    line = read_line(p.stdout, 15)
    check(line == "hello through the relay", "s_client echo: %r" % line)
    p.stdin.close()
    check(p.wait(timeout=15) == 0, "s_client exit status")
    wait_until(lambda: len(relay.closes()) >= 1, 10, "close line")
    relay.stop()
    rs = reasons(relay)
    check(len(rs) == 1 and client_done(rs[0]), "reasons %r" % rs)
    log("s_client echo ok")


def s_server(d, cert, key):
    p = spawn(["openssl", "s_server", "-accept", "127.0.0.1:0", "-cert", cert,
               "-key", key, "-rev", "-naccept", "1"],
              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
              stderr=subprocess.STDOUT)
    end = time.monotonic() + 20
    while time.monotonic() < end:
        line = read_line(p.stdout, 20)
        if line is None:
            break
        m = re.match(r"ACCEPT .*:(\d+)$", line)
        if m:
            # Keep draining its output so that it never blocks on a pipe.
            threading.Thread(target=lambda: p.stdout.read(),
                             daemon=True).start()
            return p, int(m.group(1))
    raise Fail("s_server did not start")


def rev_roundtrip(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=15)
    try:
        s.sendall(b"hello upstream\n")
        got = b""
        while not got.endswith(b"\n"):
            d = s.recv(4096)
            if not d:
                break
            got += d
        return got
    finally:
        s.close()


def case_upstream_tls():
    """--connect-tls to openssl s_server, verification on and off."""
    d = certs()
    # Verification on, trusted CA: works.
    srv, port = s_server(d, d + "/server.pem", d + "/server.key")
    relay = Relay(port, "--connect-tls", "--ca", d + "/ca.pem", "--sni",
                  "localhost", name="verify-on")
    got = rev_roundtrip(relay.port)
    check(got == b"maertspu olleh\n", "reversed echo: %r" % got)
    relay.stop()
    log("verify on, trusted: ok")

    # Verification on, certificate from an untrusted CA: refused.
    srv, port = s_server(d, d + "/stranger.pem", d + "/stranger.key")
    relay = Relay(port, "--connect-tls", "--ca", d + "/ca.pem",
                  name="verify-fail")
    got = rev_roundtrip(relay.port)
    check(got == b"", "untrusted upstream relayed %r" % got)
    wait_until(lambda: len(relay.closes()) >= 1, 10, "close line")
    relay.stop()
    check(reasons(relay) == ["tls-error"], "reasons %r" % reasons(relay))
    log("verify on, untrusted: refused (%s)" %
        relay.closes()[0].get("detail"))
    srv.kill()

    # Verification off: the stranger is accepted.
    srv, port = s_server(d, d + "/stranger.pem", d + "/stranger.key")
    relay = Relay(port, "--connect-tls", "--no-verify", "--alpn",
                  "http/1.1", name="verify-off")
    got = rev_roundtrip(relay.port)
    check(got == b"maertspu olleh\n", "reversed echo: %r" % got)
    relay.stop()
    log("verify off: ok")


def case_slow():
    """1000 silent clients vs --handshake-timeout 1s."""
    d = certs()
    n = 1000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n + 100:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    root = os.path.join(TMP, "www")
    os.mkdir(root)
    digests = make_files(root, [100000])
    up = http_upstream(root)
    relay = Relay(up, "--tls-cert", d + "/server.pem", "--tls-key",
                  d + "/server.key", "--handshake-timeout", "1s")
    # Warm up first: libuv opens one spare descriptor per loop (its EMFILE
    # reserve) at the first connection, and keeps it.
    r = curl("https://localhost:%d/f100000" % relay.port,
             os.path.join(TMP, "warmup"), "--cacert", d + "/ca.pem")
    check(r.returncode == 0, "warm-up request: %s" % r.stderr.decode())
    time.sleep(0.2)
    baseline = relay.fds()

    sel = selectors.DefaultSelector()
    starts = {}
    socks = []
    for i in range(n):
        s = socket.socket()
        s.setblocking(False)
        starts[s] = time.monotonic()
        s.connect_ex(("127.0.0.1", relay.port))
        sel.register(s, selectors.EVENT_READ)
        socks.append(s)
    # A healthy client during the attack.
    out = os.path.join(TMP, "healthy")
    healthy = subprocess.Popen(
        ["curl", "-sS", "--fail", "-o", out, "--max-time", "30", "--cacert",
         d + "/ca.pem", "https://localhost:%d/f100000" % relay.port])
    closed = {}
    end = time.monotonic() + (10 if timed() else 60)
    while len(closed) < n and time.monotonic() < end:
        for key, _ in sel.select(0.5):
            s = key.fileobj
            try:
                data = s.recv(4096)
            except (ConnectionResetError, BrokenPipeError):
                data = b""
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                closed[s] = time.monotonic()
                sel.unregister(s)
    check(healthy.wait(timeout=60) == 0, "healthy client failed")
    check(sha256(out) == digests["f100000"], "healthy body differs")
    check(len(closed) == n, "%d of %d silent clients closed" %
          (len(closed), n))
    lat = sorted(closed[s] - starts[s] for s in closed)
    log("silent clients closed: %d, after %.3fs (min) %.3fs (median) "
        "%.3fs (max)" % (n, lat[0], lat[n // 2], lat[-1]))
    if timed():
        check(lat[0] >= 0.95, "closed early: %.3fs" % lat[0])
        check(lat[-1] <= 1.25, "closed late: %.3fs" % lat[-1])
    for s in socks:
        s.close()
    wait_until(lambda: relay.fds() <= baseline, 10,
               "fd count back to baseline %d (now %d)" %
               (baseline, relay.fds()))
    log("relay fds: baseline %d, after %d" % (baseline, relay.fds()))
    relay.stop()
    rs = reasons(relay)
    log("non-timeout closes: %r" % [(c["reason"], c.get("detail"))
                                    for c in relay.closes()
                                    if c["reason"] != "handshake-timeout"])
    check(rs.count("handshake-timeout") == n,
          "%d handshake-timeout reasons" % rs.count("handshake-timeout"))
    others = [r for r in rs if r != "handshake-timeout"]
    check(len(others) == 2 and all(client_done(r) for r in others),
          "healthy client reasons: %r" % others)


def case_deadlines():
    """Idle, lifetime, send and connect deadlines, and a refused upstream."""
    echo = EchoServer()
    # Idle: one exchange, then silence.
    relay = Relay(echo.port, "--idle-timeout", "500ms", name="idle")
    s = socket.create_connection(("127.0.0.1", relay.port), timeout=10)
    s.sendall(b"ping")
    check(s.recv(100) == b"ping", "echo")
    closed_within(s, 0.45, 1.5, "idle connection closed")
    stop_after_one_close(relay, "idle-timeout")

    # Lifetime: a busy connection is cut at --max-lifetime.
    relay = Relay(echo.port, "--idle-timeout", "10s", "--max-lifetime",
                  "700ms", name="lifetime")
    gone, t0, t1 = busy_until_cut(relay.port)
    check(gone, "lifetime did not end the connection")
    log("busy connection cut after %.3fs" % (t1 - t0))
    if timed():
        check(0.65 <= t1 - t0 <= 1.5, "lifetime cut at %.3fs" % (t1 - t0))
    stop_after_one_close(relay, "lifetime")
    check(int(relay.closes()[0]["bytes_up"]) > 0, "no bytes counted")

    # Send timeout: a client that sends and never reads. Its echo fills
    # the relay's queue towards it; the relay closes it after
    # --send-timeout, logged with its own reason, long before the idle
    # timeout.
    relay = Relay(echo.port, "--idle-timeout", "20s", "--send-timeout",
                  "500ms", name="send-timeout")
    s = socket.create_connection(("127.0.0.1", relay.port), timeout=10)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    s.setblocking(False)
    t0 = time.monotonic()
    chunk = b"x" * 65536
    while time.monotonic() - t0 < 5 and not relay.closes():
        try:
            s.send(chunk)
        except BlockingIOError:
            time.sleep(0.01)
        except OSError:
            break
    wait_until(lambda: len(relay.closes()) == 1, 10, "send-timeout close")
    t1 = time.monotonic()
    s.close()
    log("never-reading client closed after %.3fs" % (t1 - t0))
    if timed():
        check(t1 - t0 <= 5, "send timeout at %.3fs" % (t1 - t0))
    stop_after_one_close(relay, "send-timeout")

    # Nobody at the upstream port.
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    dead_port = dead.getsockname()[1]
    dead.close()
    relay = Relay(dead_port, name="refused")
    s = socket.create_connection(("127.0.0.1", relay.port), timeout=10)
    wait_closed(s, 10)
    s.close()
    stop_after_one_close(relay, "upstream-refused")

    # An upstream whose accept queue is full: Linux drops the SYN, so the
    # connect hangs until --connect-timeout ends it.
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(0)
    filler = socket.create_connection(hole.getsockname(), timeout=10)
    probe = socket.socket()
    probe.settimeout(0.3)
    try:
        probe.connect(hole.getsockname())
        hangs = False
    except socket.timeout:
        hangs = True
    probe.close()
    if hangs:
        relay = Relay(hole.getsockname()[1], "--connect-timeout", "600ms",
                      name="connect-timeout")
        s = socket.create_connection(("127.0.0.1", relay.port), timeout=10)
        closed_within(s, 0.5, 1.6, "hanging connect cut")
        stop_after_one_close(relay, "connect-timeout")
    else:
        log("SKIP hanging connect: a full accept queue did not hold a SYN")
    filler.close()
    hole.close()

    # An upstream that accepts and never answers the TLS ClientHello: the
    # upstream handshake is part of the connect step.
    mute = socket.socket()
    mute.bind(("127.0.0.1", 0))
    mute.listen(8)
    relay = Relay(mute.getsockname()[1], "--connect-tls", "--no-verify",
                  "--connect-timeout", "600ms", name="connect-tls-timeout")
    s = socket.create_connection(("127.0.0.1", relay.port), timeout=10)
    t0 = time.monotonic()
    up, _ = mute.accept()
    closed_within(s, 0.5, 1.6, "mute TLS upstream cut", t0=t0)
    check(len(up.recv(4096)) > 0, "no ClientHello reached the upstream")
    wait_closed(up, 10)  # and the relay closed its upstream side too
    up.close()
    mute.close()
    stop_after_one_close(relay, "connect-timeout")

    # --max-connections 2: a third connection is closed at once.
    relay = Relay(echo.port, "--max-connections", "2", name="maxconn")
    held = [socket.create_connection(("127.0.0.1", relay.port), timeout=10)
            for _ in range(2)]
    for s in held:
        s.sendall(b"z")
        check(s.recv(10) == b"z", "echo")
    s = socket.create_connection(("127.0.0.1", relay.port), timeout=10)
    wait_closed(s, 5)
    s.close()
    wait_until(lambda: len(relay.events("refused")) == 1, 10, "refused line")
    for s in held:
        s.close()
    wait_until(lambda: len(relay.closes()) == 2, 10, "2 close lines")
    relay.stop()
    log("deadlines ok")


def case_drain():
    """SIGTERM: in-flight requests finish, new ones are refused, exit 0;
    a stuck connection is cut at the drain deadline."""
    root = os.path.join(TMP, "www")
    os.mkdir(root)
    size = 24 << 20
    digests = make_files(root, [size])
    up = http_upstream(root)
    relay = Relay(up, "--drain-timeout", "10s", "--log-level", "open",
                  name="drain")
    outs = []
    procs = []
    for i in range(3):
        out = os.path.join(TMP, "inflight%d" % i)
        outs.append(out)
        # ~2.4 s per transfer: still running when the signal comes.
        procs.append(subprocess.Popen(
            ["curl", "-sS", "--fail", "-o", out, "--max-time", "60",
             "--limit-rate", "10M",
             "http://127.0.0.1:%d/f%d" % (relay.port, size)]))
    wait_until(lambda: len(relay.events("open")) == 3, 10, "3 open lines")
    time.sleep(0.3)
    t0 = time.monotonic()
    relay.signal(signal.SIGTERM)
    wait_until(lambda: relay.events("draining"), 5, "draining line")
    time.sleep(0.2)
    refused = False
    try:
        socket.create_connection(("127.0.0.1", relay.port), timeout=5).close()
    except ConnectionRefusedError:
        refused = True
    check(refused, "a new connection was accepted while draining")
    rc = relay.wait(30)
    t1 = time.monotonic()
    check(rc == 0, "exit status %d:\n%s" % (rc, relay.text()))
    for out, p in zip(outs, procs):
        check(p.wait(timeout=30) == 0, "in-flight curl failed")
        check(sha256(out) == digests["f%d" % size], "in-flight body differs")
    log("drain with 3 in flight: exit 0 after %.2fs" % (t1 - t0))
    if timed():
        check(t1 - t0 < 10, "drain took %.2fs" % (t1 - t0))
    rs = reasons(relay)
    check(len(rs) == 3 and all(client_done(r) for r in rs), "reasons %r" % rs)

    # A stuck connection: the drain deadline cuts it.
    echo = EchoServer()
    relay = Relay(echo.port, "--drain-timeout", "1s", name="drain-stuck")
    s = socket.create_connection(("127.0.0.1", relay.port), timeout=10)
    s.sendall(b"x")
    check(s.recv(10) == b"x", "echo")
    t0 = time.monotonic()
    relay.signal(signal.SIGTERM)
    rc = relay.wait(30)
    t1 = time.monotonic()
    check(rc == 0, "exit status %d:\n%s" % (rc, relay.text()))
    wait_closed(s, 5)
    s.close()
    log("drain with a stuck connection: exit 0 after %.2fs" % (t1 - t0))
    if timed():
        check(0.95 <= t1 - t0 <= 2.5, "exit at %.2fs" % (t1 - t0))
    check(reasons(relay) == ["drained"], "reasons %r" % reasons(relay))

    # Second signal: cancel at once.
    relay = Relay(echo.port, "--drain-timeout", "60s", name="drain-twice")
    s = socket.create_connection(("127.0.0.1", relay.port), timeout=10)
    s.sendall(b"x")
    check(s.recv(10) == b"x", "echo")
    relay.signal(signal.SIGINT)
    wait_until(lambda: relay.events("draining"), 5, "draining line")
    relay.signal(signal.SIGINT)
    rc = relay.wait(15)
    check(rc == 0, "exit status %d" % rc)
    s.close()
    check(reasons(relay) == ["drained"], "reasons %r" % reasons(relay))
    log("second signal: exit 0 at once")


def case_workers():
    """--workers 2: both loops serve; SIGTERM drains both."""
    echo = EchoServer()
    relay = Relay(echo.port, "--workers", "2", "--log-format", "json",
                  "--drain-timeout", "2s")
    n = 64
    for i in range(n):
        payload = b"conn %d\n" % i
        check(echo_roundtrip(relay.port, payload) == payload, "echo %d" % i)
    wait_until(lambda: len(relay.closes()) == n, 10, "%d close lines" % n)
    # Two connections held open, then drained.
    held = [socket.create_connection(("127.0.0.1", relay.port), timeout=10)
            for _ in range(8)]
    for s in held:
        s.sendall(b"y")
        check(s.recv(10) == b"y", "echo")
    t0 = time.monotonic()
    relay.signal(signal.SIGTERM)
    rc = relay.wait(20)
    check(rc == 0, "exit status %d:\n%s" % (rc, relay.text()))
    for s in held:
        wait_closed(s, 5)
        s.close()
    closes = relay.closes()
    workers = {}
    for c in closes:
        workers[c["worker"]] = workers.get(c["worker"], 0) + 1
    log("connections per worker: %r; drained in %.2fs" %
        (workers, time.monotonic() - t0))
    check(set(workers) == {0, 1}, "workers used: %r" % workers)
    check(reasons(relay).count("drained") == 8, "reasons %r" %
          reasons(relay))
    check(len(set(c["conn"] for c in closes)) == len(closes),
          "connection ids are not unique")
    # In JSON every count is a number, on server events too.
    start, = relay.events("start")
    draining, = relay.events("draining")
    exit_, = relay.events("exit")
    check(start["workers"] == 2, "start: %r" % start)
    check(draining["drain_timeout_ms"] == 2000, "draining: %r" % draining)
    check(exit_["status"] == 0, "exit: %r" % exit_)


def case_emfile():
    """Out of descriptors on accept: the listener pauses and recovers."""
    d = certs()
    echo = EchoServer()
    relay = Relay(echo.port, "--tls-cert", d + "/server.pem", "--tls-key",
                  d + "/server.key", "--handshake-timeout", "1s",
                  limit_fds=48, name="emfile")
    n = 80
    socks = [socket.create_connection(("127.0.0.1", relay.port), timeout=10)
             for _ in range(n)]
    wait_until(lambda: relay.events("accept-paused"), 10, "accept-paused")
    cpu0 = relay.cpu_seconds()
    time.sleep(0.5)
    cpu1 = relay.cpu_seconds()
    log("cpu while paused: %.3fs over 0.5s" % (cpu1 - cpu0))
    if timed():
        check(cpu1 - cpu0 < 0.25, "listener spins: %.3fs of CPU in 0.5s" %
              (cpu1 - cpu0))
    for s in socks:
        wait_closed(s, 20 if timed() else 60)
        s.close()
    # Recovered: a real exchange through TLS.
    p = spawn(["openssl", "s_client", "-connect", "127.0.0.1:%d" % relay.port,
               "-CAfile", d + "/ca.pem", "-quiet", "-no_ign_eof"],
              stdin=subprocess.PIPE, stdout=subprocess.PIPE,
              stderr=subprocess.DEVNULL)
    p.stdin.write(b"after the storm\n")
    p.stdin.flush()
    line = read_line(p.stdout, 15)
    p.stdin.close()
    p.wait(timeout=15)
    check(line == "after the storm", "echo after recovery: %r" % line)
    wait_until(lambda: len(relay.closes()) >= n + 1, 10, "all close lines")
    relay.stop()
    rs = reasons(relay)
    log("non-timeout closes: %r" % [(c["reason"], c.get("detail"))
                                    for c in relay.closes()
                                    if c["reason"] != "handshake-timeout"])
    check(rs.count("handshake-timeout") == n, "reasons %r" % rs)
    check(relay.events("accept-resumed"), "no accept-resumed line")


# ---- metrics -----------------------------------------------------------------

METRIC_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"'
SAMPLE_RE = re.compile(r"^(%s)(\{(?:%s(?:,%s)*)?,?\})? (\S+)( -?\d+)?$" %
                       (METRIC_NAME, LABEL, LABEL))
LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"')


def parse_exposition(text):
    """Checks every line of a Prometheus text exposition (format 0.0.4) and
    returns {(name, ((label, value), ...)): float}. Fails on anything that
    does not parse, a sample before its family's TYPE, a TYPE given twice,
    a repeated sample, or histogram buckets that are not cumulative."""
    check(text.endswith("\n"), "exposition does not end with a newline")
    types = {}
    samples = {}
    for no, line in enumerate(text.split("\n")[:-1], 1):
        where = "line %d: %r" % (no, line)
        check(line != "", "empty " + where)
        if line.startswith("#"):
            parts = line.split(" ", 3)
            if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                check(re.match("^%s$" % METRIC_NAME, parts[2]) is not None,
                      "bad family name, " + where)
                if parts[1] == "TYPE":
                    check(len(parts) == 4 and parts[3] in (
                        "counter", "gauge", "histogram", "summary",
                        "untyped"), "bad TYPE, " + where)
                    check(parts[2] not in types, "TYPE repeated, " + where)
                    types[parts[2]] = parts[3]
            continue
        m = SAMPLE_RE.match(line)
        check(m is not None, "unparsable sample, " + where)
        name, labels, value = m.group(1), m.group(2) or "", m.group(3)
        try:
            v = float(value)  # accepts +Inf, -Inf, NaN
        except ValueError:
            raise Fail("bad value, " + where)
        fam = name
        for suffix in ("_bucket", "_sum", "_count"):
            if name.endswith(suffix) and \
                    types.get(name[:-len(suffix)]) == "histogram":
                fam = name[:-len(suffix)]
        check(fam in types, "sample before its TYPE, " + where)
        key = (name, tuple(LABEL_RE.findall(labels)))
        check(key not in samples, "repeated sample, " + where)
        samples[key] = v
    # Histograms: cumulative buckets, +Inf equal to _count.
    for fam, typ in types.items():
        if typ != "histogram":
            continue
        series = {}
        for (name, labels), v in samples.items():
            if name == fam + "_bucket":
                rest = tuple(x for x in labels if x[0] != "le")
                le = [x[1] for x in labels if x[0] == "le"][0]
                series.setdefault(rest, []).append((float(le), v))
        for rest, buckets in series.items():
            buckets.sort()
            counts = [b[1] for b in buckets]
            check(counts == sorted(counts), "%s%r not cumulative" %
                  (fam, rest))
            check(buckets[-1][0] == float("inf"), "%s%r has no +Inf" %
                  (fam, rest))
            check(samples.get((fam + "_count", rest)) == counts[-1],
                  "%s%r: +Inf bucket is not _count" % (fam, rest))
    return samples


def promtool_check(text):
    """`promtool check metrics` (parsing and lint). scripts/test.sh installs
    it (package prometheus): missing, it fails under UVCTX_REQUIRE_PEERS."""
    if shutil.which("promtool") is None:
        check(not os.environ.get("UVCTX_REQUIRE_PEERS"),
              "promtool is not installed (UVCTX_REQUIRE_PEERS is set)")
        log("promtool not installed: lint skipped")
        return
    r = subprocess.run(["promtool", "check", "metrics"], input=text.encode(),
                       capture_output=True, timeout=60)
    check(r.returncode == 0, "promtool check metrics: %s%s" %
          (r.stdout.decode(), r.stderr.decode()))


def scrape(relay):
    """curl http://127.0.0.1:PORT/metrics; returns the parsed samples."""
    hdr = os.path.join(TMP, "scrape.headers")
    body = os.path.join(TMP, "scrape.body")
    r = curl("http://127.0.0.1:%d/metrics" % relay.metrics_port, body,
             "-D", hdr, timeout=30)
    check(r.returncode == 0, "curl /metrics: %s" % r.stderr.decode())
    with open(hdr, "rb") as f:
        headers = f.read().decode("latin-1").lower()
    check("content-type: text/plain; version=0.0.4" in headers,
          "content type: %r" % headers)
    with open(body, "rb") as f:
        text = f.read().decode("utf-8")
    return text, parse_exposition(text)


def metric(samples, name, **labels):
    want = tuple(sorted(labels.items()))
    total = 0.0
    found = False
    for (n, ls), v in samples.items():
        if n == name and all(x in ls for x in want):
            total += v
            found = True
    check(found, "no sample %s%r" % (name, labels))
    return total


def http_raw(port, data, timeout=10):
    """Sends raw bytes; returns everything read until the server closes the
    connection. Fails if it does not within the timeout."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        try:
            s.sendall(data)
        except (ConnectionResetError, BrokenPipeError):
            pass  # the server may answer and close before taking it all
        got = b""
        try:
            while True:
                d = s.recv(65536)
                if not d:
                    break
                got += d
        except socket.timeout:
            raise Fail("server kept the connection open: %r" % data[:60])
        except ConnectionResetError:
            pass
        return got
    finally:
        s.close()


def case_metrics():
    """--metrics: valid exposition, counters that move, 404/405/431, idle
    connections closed, scrapes answered during the drain, exit 0."""
    import http.client
    echo = EchoServer()
    # The idle timeout must outlast the wait for sampled bytes below, which
    # sanitizers slow down.
    relay = Relay(echo.port, "--metrics", "127.0.0.1:0", "--workers", "2",
                  "--max-connections", "3",
                  "--idle-timeout", "4s" if timed() else "10s",
                  "--log-format", "json", "--drain-timeout", "5s",
                  metrics=True)
    text, m0 = scrape(relay)
    promtool_check(text)
    for loop in ("worker-0", "worker-1", "control"):
        metric(m0, "uvctx_contexts_created_total", loop=loop)
        metric(m0, "uvctx_cancel_propagation_seconds_count", loop=loop)
    for name in ("uvctx_relay_connections_accepted_total",
                 "uvctx_relay_connections_active",
                 "uvctx_relay_connections_refused_total",
                 "uvctx_relay_connections_closed_total",
                 "uvctx_relay_bytes_total"):
        check(metric(m0, name) == 0, "%s not 0 at start" % name)
    created0 = sum(metric(m0, "uvctx_contexts_created_total", loop=w)
                   for w in ("worker-0", "worker-1"))

    # Connections made and ended: the counters follow the log exactly.
    n = 12
    total = 0
    for i in range(n):
        payload = b"metrics %d " % i * (i + 1)
        total += len(payload)
        check(echo_roundtrip(relay.port, payload) == payload, "echo %d" % i)
        wait_until(lambda: len(relay.closes()) == i + 1, 10,
                   "close line %d" % (i + 1))
    text, m1 = scrape(relay)
    promtool_check(text)
    check(metric(m1, "uvctx_relay_connections_accepted_total") == n,
          "accepted %r" % metric(m1, "uvctx_relay_connections_accepted_total"))
    check(metric(m1, "uvctx_relay_connections_active") == 0, "active")
    check(metric(m1, "uvctx_relay_bytes_total", direction="up") == total,
          "bytes up %r, sent %d" %
          (metric(m1, "uvctx_relay_bytes_total", direction="up"), total))
    check(metric(m1, "uvctx_relay_bytes_total", direction="down") == total,
          "bytes down")
    logged = {}
    for c in relay.closes():
        logged[c["reason"]] = logged.get(c["reason"], 0) + 1
        # Log fields: conn and worker stay JSON numbers, the peer comes
        # from the connection context's loggable value.
        check(isinstance(c["conn"], int) and isinstance(c["worker"], int),
              "conn/worker not numbers: %r" % c)
        check(re.match(r"^127\.0\.0\.1:\d+$", c["peer"]) is not None,
              "peer %r" % c["peer"])
    for reason, count in logged.items():
        got = metric(m1, "uvctx_relay_connections_closed_total",
                     reason=reason)
        check(got == count, "closed{reason=%s} %r, log says %d" %
              (reason, got, count))
    check(metric(m1, "uvctx_relay_connections_closed_total") == n,
          "closed total")

    # An open connection's bytes are counted while it runs (sampled every
    # second), and not twice when it ends.
    s = socket.create_connection(("127.0.0.1", relay.port), timeout=10)
    live = b"l" * 300000
    s.sendall(live)
    got = 0
    while got < len(live):
        d = s.recv(65536)
        check(d, "echo of the open connection")
        got += len(d)

    def counted():
        _, m = scrape(relay)
        return (metric(m, "uvctx_relay_bytes_total", direction="up") ==
                total + len(live) and
                metric(m, "uvctx_relay_bytes_total", direction="down") ==
                total + len(live) and
                metric(m, "uvctx_relay_connections_active") == 1)
    # Within a sampling period or two, well before --idle-timeout ends it.
    wait_until(counted, 3.5 if timed() else 8.5,
               "open connection's bytes in the counters")
    s.close()
    total += len(live)
    n += 1
    wait_until(lambda: len(relay.closes()) == n, 10, "close line %d" % n)
    _, m1 = scrape(relay)
    check(metric(m1, "uvctx_relay_bytes_total", direction="up") == total,
          "bytes up after the close %r, sent %d" %
          (metric(m1, "uvctx_relay_bytes_total", direction="up"), total))
    check(metric(m1, "uvctx_relay_bytes_total", direction="down") == total,
          "bytes down after the close")
    created1 = sum(metric(m1, "uvctx_contexts_created_total", loop=w)
                   for w in ("worker-0", "worker-1"))
    check(created1 >= created0 + 3 * n, "contexts created %r -> %r" %
          (created0, created1))
    log("after %d connections: accepted %d, bytes %d/%d, closed %r" %
        (n, n, total, total, logged))

    # Active, refused (over --max-connections 3), then idle-timeout.
    held = [socket.create_connection(("127.0.0.1", relay.port), timeout=10)
            for _ in range(3)]
    for s in held:
        s.sendall(b"k")
        check(s.recv(10) == b"k", "echo")
    text, m2 = scrape(relay)
    check(metric(m2, "uvctx_relay_connections_active") == 3,
          "active %r with 3 open" %
          metric(m2, "uvctx_relay_connections_active"))
    s = socket.create_connection(("127.0.0.1", relay.port), timeout=10)
    wait_closed(s, 10)
    s.close()
    wait_until(lambda: len(relay.events("refused")) == 1, 10, "refused line")
    for s in held:
        wait_closed(s, 20)
        s.close()
    wait_until(lambda: len(relay.closes()) == n + 3, 10, "idle closes")
    text, m3 = scrape(relay)
    promtool_check(text)
    check(metric(m3, "uvctx_relay_connections_refused_total") == 1,
          "refused")
    check(metric(m3, "uvctx_relay_connections_closed_total",
                 reason="idle-timeout") == 3, "idle-timeout not counted")
    check(metric(m3, "uvctx_relay_connections_active") == 0, "active")
    log("3 held: active 3, a 4th refused, then 3 idle-timeout closes")

    # HTTP: 404, 405, HEAD, keep-alive, pipelining, 400, 431.
    mp = relay.metrics_port
    hc = http.client.HTTPConnection("127.0.0.1", mp, timeout=10)
    hc.request("GET", "/nope")
    r = hc.getresponse()
    r.read()
    check(r.status == 404, "GET /nope: %d" % r.status)
    hc.request("GET", "/metrics")  # same connection: kept alive
    r = hc.getresponse()
    body = r.read().decode()
    check(r.status == 200 and "uvctx_relay_bytes_total" in body,
          "GET /metrics after a 404 on one connection: %d" % r.status)
    hc.request("HEAD", "/metrics")
    r = hc.getresponse()
    check(r.status == 200 and r.read() == b"" and
          int(r.getheader("Content-Length")) > 0, "HEAD /metrics")
    hc.request("HEAD", "/nope")
    r = hc.getresponse()
    check(r.status == 404 and r.read() == b"", "HEAD /nope")
    hc.request("POST", "/metrics", body=b"x=1")
    r = hc.getresponse()
    r.read()
    check(r.status == 405 and "GET" in (r.getheader("Allow") or ""),
          "POST /metrics: %d %r" % (r.status, r.getheader("Allow")))
    hc.close()
    r = subprocess.run(["curl", "-s", "-o", os.devnull, "-w", "%{http_code}",
                        "-X", "DELETE", "http://127.0.0.1:%d/metrics" % mp],
                       capture_output=True, timeout=30)
    check(r.stdout == b"405", "curl -X DELETE: %r" % r.stdout)
    r = subprocess.run(["curl", "-s", "-o", os.devnull, "-w", "%{http_code}",
                        "http://127.0.0.1:%d/nothing" % mp],
                       capture_output=True, timeout=30)
    check(r.stdout == b"404", "curl /nothing: %r" % r.stdout)
    two = (b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
           b"GET /metrics?x=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    got = http_raw(mp, two)
    check(got.count(b"HTTP/1.1 200 OK\r\n") == 2, "pipelined: %r" % got[:200])
    got = http_raw(mp, b"BLAH\r\n\r\n")
    check(got.startswith(b"HTTP/1.1 400 "), "garbage: %r" % got[:100])
    got = http_raw(mp, b"GET /metrics HTTP/1.1\r\nX-Pad: " + b"a" * 20000)
    check(got.startswith(b"HTTP/1.1 431 "), "oversized: %r" % got[:100])
    log("404, 405, HEAD, keep-alive, pipelining, 400 and 431 ok")

    # At most 32 metrics connections: the ones above are closed at once.
    socks = [socket.create_connection(("127.0.0.1", mp), timeout=10)
             for _ in range(35)]
    for s in socks[32:]:
        wait_closed(s, 5)
    still_open = 0
    for s in socks[:32]:
        s.settimeout(0.02)
        try:
            still_open += s.recv(1) != b""
        except socket.timeout:
            still_open += 1
        except OSError:
            pass
    for s in socks:
        s.close()
    check(still_open == 32, "%d of the first 32 still open" % still_open)
    log("35 metrics connections: 32 kept, 3 closed at once")

    # An idle metrics connection is closed (5 s without a request).
    s = socket.create_connection(("127.0.0.1", mp), timeout=10)
    s.sendall(b"GET /metr")
    closed_within(s, 4.5, 8, "idle metrics connection closed", timeout=20)

    # Scrapes while connections come and go, on both workers.
    stop = threading.Event()
    errors = []
    echoed = []

    def traffic():
        i = 0
        while not stop.is_set() and i < 2000:
            i += 1
            p = b"x" * (1 + i % 4000)
            try:
                got = echo_roundtrip(relay.port, p)
            except OSError:
                continue
            # b"": closed at once over --max-connections 3, fine here.
            if got == p:
                echoed.append(1)
            elif got != b"":
                errors.append("echo: %d of %d bytes" % (len(got), len(p)))
    threads = [threading.Thread(target=traffic) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for _ in range(10):
            scrape(relay)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    check(not errors, "errors during scrapes: %r" % errors[:3])
    check(len(echoed) > 0, "no echo went through during the scrapes")
    log("10 scrapes during traffic: %d echoes through" % len(echoed))

    # Drain with one connection still open: the metrics listener stays
    # open (the drain alert needs scrapes), a scrape already connected is
    # answered too (the idle worker has closed its loop by then: its last
    # stats are served), and at exit the relay closes that scrape
    # connection itself. Exit 0 (ASan: no leak).
    held = socket.create_connection(("127.0.0.1", relay.port), timeout=10)
    hc = http.client.HTTPConnection("127.0.0.1", mp, timeout=10)
    hc.request("GET", "/metrics")
    r = hc.getresponse()
    r.read()
    check(r.status == 200, "scrape before the drain: %d" % r.status)
    held.sendall(b"d")
    check(held.recv(10) == b"d", "echo")
    relay.signal(signal.SIGTERM)
    wait_until(lambda: relay.events("draining"), 5, "draining line")
    time.sleep(0.3)
    text, m5 = scrape(relay)
    check(metric(m5, "uvctx_relay_draining") == 1, "new scrape: draining")
    started = metric(m5, "uvctx_relay_drain_started_seconds")
    check(abs(started - time.time()) < 60, "drain started at %r" % started)
    check(metric(m5, "uvctx_relay_drain_deadline_seconds") == 5,
          "drain deadline")
    hc.request("GET", "/metrics")
    r = hc.getresponse()
    text = r.read().decode()
    check(r.status == 200, "scrape while draining: %d" % r.status)
    m4 = parse_exposition(text)
    check(metric(m4, "uvctx_relay_draining") == 1, "draining gauge")
    for loop in ("worker-0", "worker-1"):
        metric(m4, "uvctx_contexts_created_total", loop=loop)
    log("while draining: new and open scrapes answered "
        "(active %d)" % metric(m4, "uvctx_relay_connections_active"))
    held.close()
    rc = relay.wait(30)
    check(rc == 0, "exit status %d:\n%s" % (rc, relay.text()))
    wait_closed(hc.sock, 5)
    hc.close()
    log("drain: exit 0, the open scrape connection closed by the relay")


# ---- trace -------------------------------------------------------------------

def load_trace(path):
    r = subprocess.run([sys.executable, "-m", "json.tool", path],
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                       timeout=60)
    check(r.returncode == 0, "json.tool %s: %s" % (path, r.stderr.decode()))
    with open(path) as f:
        doc = json.load(f)
    meta = doc["metadata"]
    check(meta["uvctx-events-emitted"] == meta["uvctx-events-written"] +
          meta["uvctx-events-dropped"], "trace counts %r" % meta)
    return doc["traceEvents"]


def case_trace():
    """--trace: a valid Chrome trace per worker, holding a connection's
    contexts from creation to free, its cancel and the callback it caused;
    the relay exits 0."""
    echo = EchoServer()
    path = os.path.join(TMP, "relay-trace.json")
    relay = Relay(echo.port, "--trace", path, "--max-lifetime", "600ms",
                  "--idle-timeout", "10s", name="trace")
    check(echo_roundtrip(relay.port, b"traced\n") == b"traced\n", "echo")
    # A busy connection cut by --max-lifetime: a deadline fires, cancels
    # the connection's lifetime context, and the pipe's watch runs.
    gone, _, _ = busy_until_cut(relay.port)
    check(gone, "lifetime did not end the connection")
    wait_until(lambda: len(relay.closes()) == 2, 10, "2 close lines")
    relay.stop()
    check(sorted(reasons(relay)) == ["eof", "lifetime"] or
          sorted(reasons(relay)) == ["lifetime", "reset"],
          "reasons %r" % reasons(relay))
    for c in relay.closes():
        check(re.match(r"^127\.0\.0\.1:\d+$", c.get("peer", "")) is not None,
              "peer from the log fields: %r" % c)
    tr = relay.events("trace")
    check(len(tr) == 1 and tr[0]["file"] == path and tr[0]["dropped"] == "0",
          "trace log line %r" % tr)

    events = load_trace(path)
    created = {}
    freed = set()
    for e in events:
        if e.get("cat") == "uvctx.ctx" and e["ph"] == "b":
            created[e["id"]] = e["args"]
        elif e.get("cat") == "uvctx.ctx" and e["ph"] == "e":
            freed.add(e["id"])
    cancels = [e for e in events if e["name"] == "cancel" and
               e["ph"] == "X"]
    callbacks = [e for e in events if e["name"] == "callback" and
                 e["ph"] == "X"]
    deadlines = [e for e in events if e["name"] == "deadline" and
                 e["ph"] == "X"]

    def conn_chain(ctx):
        """ctx is a deadline under a value (the tag) under a cancel."""
        a = created.get(ctx)
        if a is None or a["kind"] != "deadline":
            return False
        v = created.get(a["parent"])
        if v is None or v["kind"] != "value":
            return False
        c = created.get(v["parent"])
        return c is not None and c["kind"] == "cancel"

    lifetime = [e for e in cancels if e["args"]["err"] == "ETIMEDOUT" and
                conn_chain(e["args"]["ctx"])]
    check(len(lifetime) == 1, "lifetime cancels in the trace: %r" % lifetime)
    op = lifetime[0]["args"]["op"]
    ctx = lifetime[0]["args"]["ctx"]
    check(any(d["args"]["ctx"] == ctx for d in deadlines),
          "no deadline event for the lifetime context")
    check(any(c["args"].get("op") == op for c in callbacks),
          "no callback for the lifetime cancel (op %r)" % op)
    v = created[ctx]["parent"]
    conn = created[v]["parent"]
    for x in (ctx, v, conn):
        check(x in freed, "context %s of the connection never freed" % x)
    check(any(e["args"]["ctx"] == conn for e in cancels),
          "the connection's own cancel is not in the trace")
    log("trace: %d events; connection %s -> tag %s -> lifetime %s: "
        "created, deadline, cancel op %d, callback, freed" %
        (len(events), conn, v, ctx, op))

    tool = os.path.join(os.path.dirname(ARGS.relay), "uvctx-trace")
    if not os.access(tool, os.X_OK):
        # CMake builds it beside the relay; a run that must cover
        # everything fails rather than skip.
        check(not os.environ.get("UVCTX_REQUIRE_PEERS"),
              "uvctx-trace not found beside the relay")
        log("SKIP uvctx-trace summary: no uvctx-trace beside the relay")
    else:
        r = subprocess.run([tool, "summary", path], capture_output=True,
                           timeout=60)
        check(r.returncode == 0, "uvctx-trace summary: %s" %
              r.stderr.decode())
        check(b"contexts never released: 0" in r.stdout,
              "summary:\n%s" % r.stdout.decode())
        log("uvctx-trace summary: ok, nothing left unreleased")

    # Two workers: one file each, FILE.0 and FILE.1.
    path2 = os.path.join(TMP, "two.json")
    relay = Relay(echo.port, "--trace", path2, "--workers", "2",
                  name="trace-two")
    for i in range(16):
        check(echo_roundtrip(relay.port, b"w%d" % i) == b"w%d" % i, "echo")
    wait_until(lambda: len(relay.closes()) == 16, 10, "16 close lines")
    relay.stop()
    check(not os.path.exists(path2), "FILE written with two workers")
    opened = 0
    for i in (0, 1):
        evs = load_trace("%s.%d" % (path2, i))
        opened += sum(1 for e in evs if e.get("cat") == "uvctx.ctx" and
                      e["ph"] == "b" and e["args"]["kind"] == "value")
    check(opened == 16, "%d connection tags over both traces" % opened)
    log("two workers: %s.0 and %s.1, 16 connections between them" %
        (os.path.basename(path2), os.path.basename(path2)))


def preload_env():
    """The environment of a relay whose resolver knows the test names of
    test/uv/gai_gate.h (dual.test: ::1 then 127.0.0.1; dual4.test: the
    reverse), through the preloaded resolver shim."""
    env = dict(os.environ)
    env["LD_PRELOAD"] = ARGS.gai_preload
    # The shim comes before the sanitizer's runtime in the library list.
    env["ASAN_OPTIONS"] = (env.get("ASAN_OPTIONS", "") +
                           ":verify_asan_link_order=0").lstrip(":")
    return env


def case_dial():
    """--connect HOST:PORT by name, dialed per connection: a name with both
    families where only one listens, each way round, and localhost."""
    payload = b"dial me" * 1000
    for host, name in (("127.0.0.1", "dual.test"), ("::1", "dual4.test")):
        up = EchoServer(host)
        relay = Relay(up.port, upstream_host=name, env=preload_env(),
                      name="relay-" + name)
        for _ in range(3):
            got = echo_roundtrip(relay.port, payload)
            check(got == payload,
                  "%s (only %s listening): got %d of %d bytes" %
                  (name, host, len(got), len(payload)))
        relay.stop()
        check(up.accepted == 3, "%s: upstream accepted %d, expected 3" %
              (name, up.accepted))
        for c in relay.closes():
            check(client_done(c["reason"]), "%s: reason %r" %
                  (name, c["reason"]))
        log("dial %s -> %s ok" % (name, host))
    up = EchoServer("127.0.0.1")
    relay = Relay(up.port, upstream_host="localhost", name="relay-localhost")
    check(echo_roundtrip(relay.port, payload) == payload, "localhost dial")
    relay.stop()


# ---- debug endpoints ----------------------------------------------------------

def http_get(port, path, method="GET", timeout=30, host="127.0.0.1"):
    """One request on its own connection; returns (status, headers, body)."""
    import http.client
    hc = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        hc.request(method, path)
        r = hc.getresponse()
        body = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, body
    finally:
        hc.close()


def contexts_text(relay):
    st, hd, body = http_get(relay.metrics_port, "/debug/contexts")
    check(st == 200, "/debug/contexts: %d %r" % (st, body[:200]))
    check(hd["content-type"].startswith("text/plain"), "type %r" % hd)
    return body.decode()


def check_contexts_text(text):
    """The text's own accounting: the total on the first line equals the
    site counts and the listed lines; site counts are sorted, most first.
    Returns (total, {site: count}, [ctx lines])."""
    lines = text.split("\n")
    m = re.match(r"uvctx-relay: (\d+) live context\(s\) on (\d+) worker",
                 lines[0])
    check(m is not None, "first line %r" % lines[0])
    total = int(m.group(1))
    check(lines[2] == "by creation site:", "no site table: %r" % lines[:4])
    sites = {}
    counts = []
    i = 3
    while lines[i].strip():
        mm = re.match(r"\s*(\d+)  (.+)$", lines[i])
        check(mm is not None, "site line %r" % lines[i])
        sites[mm.group(2)] = int(mm.group(1))
        counts.append(int(mm.group(1)))
        i += 1
    check(counts == sorted(counts, reverse=True), "sites not sorted: %r" %
          counts)
    ctx = [ln for ln in lines if ln.startswith("  ctx ")]
    check(sum(counts) == total == len(ctx),
          "total %d, sites %d, lines %d" % (total, sum(counts), len(ctx)))
    for ln in ctx:
        check(re.match(r"  ctx 0x[0-9a-f]+ kind=\w+ parent=(0x[0-9a-f]+|"
                       r"\(nil\)) refs=\d+ state=(live|canceled|timedout)"
                       r"( key=\S+)?( deadline=\d+)? created at .+$", ln)
              is not None, "ctx line %r" % ln)
        site = ln.split(" created at ", 1)[1]
        check(site in sites, "site %r not counted" % site)
    return total, sites, ctx


# An address that is not loopback, for the access rule of the debug
# endpoints: TEST-NET-1 (RFC 5737), put on the lo device of a private
# network namespace, so that nothing leaves it.
NETNS_ADDR = "192.0.2.1"


def case_debug_access():
    """The debug endpoints answer on loopback, or on the one address
    --metrics names; a request that came in on another address of a
    wildcard listener gets 403, while /metrics is served there. Runs in a
    network namespace of its own (unshare -n) where NETNS_ADDR is on lo."""
    if os.environ.get("UVCTX_TEST_NETNS") != "1":
        setup = ("ip link set lo up && ip addr add %s/32 dev lo" % NETNS_ADDR)
        probe = subprocess.run(["unshare", "-n", "sh", "-c", setup],
                               capture_output=True, text=True)
        if probe.returncode != 0:
            # Not a peer the test command installs: a missing privilege.
            print("SKIP: no private network namespace (unshare -n: %s)" %
                  probe.stderr.strip())
            sys.exit(SKIP)
        env = dict(os.environ, UVCTX_TEST_NETNS="1")
        r = subprocess.run(["unshare", "-n", "sh", "-c",
                            setup + ' && exec "$@"', "sh", sys.executable,
                            os.path.abspath(__file__)] + sys.argv[1:],
                           env=env, timeout=170)
        check(r.returncode == 0, "the case in its namespace failed (%d)" %
              r.returncode)
        return
    echo = EchoServer()
    paths = ["/", "/debug/contexts", "/debug/loops",
             "/debug/trace?seconds=1", "/debug/heatmap?seconds=1"]
    relay = Relay(echo.port, "--metrics", "0.0.0.0:0", metrics=True,
                  name="wildcard")
    check(relay.metrics_host == "0.0.0.0", "metrics on %r" %
          relay.metrics_host)
    for path in paths:
        st, _, body = http_get(relay.metrics_port, path, host=NETNS_ADDR)
        check(st == 403 and b"loopback" in body,
              "%s on %s: %d %r" % (path, NETNS_ADDR, st, body[:100]))
    st, _, body = http_get(relay.metrics_port, "/metrics", host=NETNS_ADDR)
    check(st == 200 and b"uvctx_relay_" in body,
          "/metrics on %s: %d" % (NETNS_ADDR, st))
    for path in paths[:3]:
        st, _, _ = http_get(relay.metrics_port, path)
        check(st == 200, "%s on loopback: %d" % (path, st))
    relay.stop()
    # Named explicitly, the address is the operator's choice: served.
    relay = Relay(echo.port, "--metrics", NETNS_ADDR + ":0", metrics=True,
                  name="named")
    for path in paths[:3]:
        st, _, _ = http_get(relay.metrics_port, path, host=NETNS_ADDR)
        check(st == 200, "%s on --metrics %s: %d" % (path, NETNS_ADDR, st))
    relay.stop()
    log("403 on %s through a wildcard listener, 200 on loopback and when "
        "named" % NETNS_ADDR)


def case_debug():
    """/debug/contexts (text and JSON), /debug/trace, /debug/heatmap and
    the index page: what they list follows the connections held, one
    recording at a time (409), bad parameters 400, a recording cut by a
    drain or by its client, exit 0."""
    echo = EchoServer()
    relay = Relay(echo.port, "--metrics", "127.0.0.1:0", "--workers", "2",
                  "--idle-timeout", "60s", metrics=True, name="listing")
    mp = relay.metrics_port
    total0, _, _ = check_contexts_text(contexts_text(relay))

    # 20 connections held open: each has a value context bound to its
    # peer, created at one site of relay_conn_start.
    held = []
    for i in range(20):
        s = socket.create_connection(("127.0.0.1", relay.port), timeout=10)
        s.sendall(b"h")
        check(s.recv(1) == b"h", "echo %d" % i)
        held.append(s)
    total, sites, ctx = check_contexts_text(contexts_text(relay))
    peers = [ln for ln in ctx if " key=peer " in ln]
    check(len(peers) == 20, "%d peer contexts for 20 connections" %
          len(peers))
    top = max(sites.items(), key=lambda kv: kv[1])
    check(top[1] >= 20 and "relay_conn_start" in top[0],
          "top site %r" % (top,))
    check(total > total0 + 20, "total %d, before %d" % (total, total0))
    for w in ("worker-0", "worker-1", "control"):
        check(re.search(r"^%s: \d+ live context" % w, "\n".join(
            [""] + contexts_text(relay).split("\n")), re.M) is not None,
            "no section for %s" % w)

    st, hd, body = http_get(mp, "/debug/contexts?format=json")
    check(st == 200 and hd["content-type"] == "application/json",
          "json: %d %r" % (st, hd))
    doc = json.loads(body)
    listed = [c for lp in doc["loops"] for c in lp["contexts"]]
    check(doc["contexts"] == len(listed) == sum(x["count"] for x in
                                                 doc["sites"]),
          "json totals %d, %d" % (doc["contexts"], len(listed)))
    check([lp["loop"] for lp in doc["loops"]] ==
          ["worker-0", "worker-1", "control"], "loops %r" % doc["loops"])
    check(sum(1 for c in listed if c.get("key") == "peer") == 20,
          "json peer contexts")
    check(all(c["state"] in ("live", "canceled", "timedout") and
              c["ctx"].startswith("0x") and c["site"] for c in listed),
          "json context fields")
    log("/debug/contexts: %d contexts, top site %s x%d; copies %s us" %
        (total, top[0].split(" in ")[0], top[1],
         [lp["copy_us"] for lp in doc["loops"][:2]]))

    for s in held:
        s.close()
    wait_until(lambda: len(relay.closes()) == 20, 10, "20 close lines")
    _, _, ctx = check_contexts_text(contexts_text(relay))
    check(not [ln for ln in ctx if " key=peer " in ln],
          "peer contexts left after the closes")

    # The workers' busy-time histograms: published every 100 ms, each one
    # consistent (buckets add up to the iterations, p50 <= p99 <= max).
    def loops():
        st, hd, body = http_get(mp, "/debug/loops")
        check(st == 200 and hd["content-type"] == "application/json",
              "/debug/loops: %d" % st)
        return json.loads(body)
    wait_until(lambda: all(lp["iterations"] > 0 for lp in loops()["loops"]),
               10, "busy-time histograms published", step=0.1)
    lj = loops()
    check([lp["loop"] for lp in lj["loops"]] == ["worker-0", "worker-1"] and
          len(lj["bounds_ns"]) == 63 and lj["recording"] == "none",
          "loops %r, recording %r" % (lj["loops"], lj.get("recording")))
    for lp in lj["loops"]:
        check(sum(lp["buckets"]) == lp["iterations"] and
              lp["p50_ns"] <= lp["p99_ns"] <= max(lp["max_ns"],
                                                  lp["p99_ns"]),
              "histogram %r" % {k: lp[k] for k in lp if k != "buckets"})
    log("/debug/loops: %r" % [(lp["loop"], lp["iterations"], lp["p99_ns"])
                              for lp in lj["loops"]])

    # Parameters, methods, unknown paths.
    for q in ("seconds=0", "seconds=61", "seconds=x", "seconds=2s"):
        st, _, _ = http_get(mp, "/debug/trace?" + q)
        check(st == 400, "trace?%s: %d" % (q, st))
    check(http_get(mp, "/debug/nothing")[0] == 404, "unknown path")
    check(http_get(mp, "/debug/contexts", method="POST")[0] == 405, "POST")
    st, hd, body = http_get(mp, "/debug/contexts", method="HEAD")
    check(st == 200 and body == b"" and int(hd["content-length"]) > 0,
          "HEAD: %d %r" % (st, hd))

    relay.stop()

    # A trace during traffic that --max-lifetime cuts: deadlines fire and
    # the pipes' watches run. A second recording meanwhile is refused.
    relay = Relay(echo.port, "--metrics", "127.0.0.1:0", "--workers", "2",
                  "--max-lifetime", "400ms" if timed() else "1500ms",
                  "--idle-timeout", "20s", metrics=True, name="recording")
    mp = relay.metrics_port
    stop = threading.Event()

    def traffic():
        while not stop.is_set():
            busy_until_cut(relay.port, limit=5)
    threads = [threading.Thread(target=traffic, daemon=True)
               for _ in range(4)]
    for t in threads:
        t.start()
    res = {}

    def record():
        t0 = time.monotonic()
        res["trace"] = http_get(mp, "/debug/trace?seconds=3", timeout=60)
        res["secs"] = time.monotonic() - t0
    rt = threading.Thread(target=record)
    rt.start()
    time.sleep(0.5)
    for path in ("/debug/trace?seconds=1", "/debug/heatmap?seconds=1"):
        st, _, body = http_get(mp, path)
        check(st == 409, "%s during a recording: %d %r" % (path, st, body))
    rt.join(60)
    st, hd, body = res["trace"]
    check(st == 200 and hd["content-type"] == "application/json",
          "trace: %d %r" % (st, body[:200]))
    check(res["secs"] >= 2.9, "a 3 s trace answered after %.2fs" %
          res["secs"])
    doc = json.loads(body)
    evs = doc["traceEvents"]
    names = {e["pid"]: e["args"]["name"] for e in evs
             if e.get("name") == "process_name"}
    check(names == {0: "uvctx-relay worker 0", 1: "uvctx-relay worker 1"},
          "process tracks %r" % names)
    check({e["pid"] for e in evs} == {0, 1}, "pids %r" %
          {e["pid"] for e in evs})
    meta = doc["metadata"]
    check(meta["uvctx-events-emitted"] == meta["uvctx-events-written"] +
          meta["uvctx-events-dropped"], "counts %r" % meta)
    created = sum(1 for e in evs if e.get("cat") == "uvctx.ctx" and
                  e["ph"] == "b")
    callbacks = sum(1 for e in evs if e.get("name") == "callback")
    check(created > 0 and callbacks > 0, "created %d, callbacks %d" %
          (created, callbacks))
    log("/debug/trace?seconds=3: %d events over 2 tracks (%d contexts, "
        "%d callbacks) in %.2fs" % (len(evs), created, callbacks,
                                    res["secs"]))

    st, hd, body = http_get(mp, "/debug/heatmap?seconds=2", timeout=60)
    stop.set()
    for t in threads:
        t.join(20)
    check(st == 200 and hd["content-type"] == "image/svg+xml",
          "heatmap: %d %r" % (st, body[:200]))
    import xml.etree.ElementTree as ET
    svg = ET.fromstring(body)
    ns = "{http://www.w3.org/2000/svg}"
    title = [t.text for t in svg.iter(ns + "text")][0]
    m = re.match(r"uvctx cancel propagation: (\d+) callbacks", title or "")
    check(m is not None, "heatmap title %r" % title)
    cells = [int(r.find(ns + "title").text) for r in svg.iter(ns + "rect")
             if r.find(ns + "title") is not None]
    check(int(m.group(1)) > 0 and sum(cells) == int(m.group(1)),
          "heatmap: %s callbacks, cells hold %d" % (m.group(1), sum(cells)))
    log("/debug/heatmap?seconds=2: %s callbacks in %d cells" %
        (m.group(1), len(cells)))

    # A recording whose client hangs up is finished and dropped; the next
    # one is accepted once it has ended.
    s = socket.create_connection(("127.0.0.1", mp), timeout=10)
    s.sendall(b"GET /debug/trace?seconds=1 HTTP/1.1\r\nHost: x\r\n\r\n")
    time.sleep(0.2)
    s.close()
    wait_until(lambda: http_get(mp, "/debug/heatmap?seconds=1")[0] == 200,
               15, "a recording after an abandoned one", step=0.2)

    # The index page: every endpoint linked, counters as /metrics has them.
    st, hd, body = http_get(mp, "/")
    check(st == 200 and hd["content-type"].startswith("text/html"),
          "index: %d %r" % (st, hd))
    page = body.decode()
    for link in ('href="/metrics"', 'href="/debug/contexts"',
                 'href="/debug/loops"',
                 'href="/debug/contexts?format=json"',
                 'action="/debug/trace"', 'action="/debug/heatmap"'):
        check(link in page, "index lacks %s" % link)
    check("<script" not in page, "index uses a script")
    _, m1 = scrape(relay)
    acc = int(metric(m1, "uvctx_relay_connections_accepted_total"))
    check(re.search(r"<td>accepted</td><td class=\"n\">%d</td>" % acc, page)
          is not None, "index accepted != %d" % acc)

    # A drain in the middle of a recording ends it early: the client gets
    # what was recorded, and the relay exits 0 (under ASan: nothing
    # leaked).
    res.clear()
    rt = threading.Thread(target=lambda: res.update(
        r=http_raw(mp, b"GET /debug/trace?seconds=30 HTTP/1.1\r\n"
                   b"Host: x\r\n\r\n", timeout=60)))
    rt.start()
    # Once the workers record (/debug/loops says so), not after a guess at
    # how long that takes: a drain before the request is read answers
    # nothing (the listener's connections close with the relay).
    wait_until(lambda: loops()["recording"] == "on", 15,
               "the recording under way", step=0.05)
    time.sleep(0.3)
    relay.stop()
    rt.join(60)
    got = res.get("r", b"")
    check(got.startswith(b"HTTP/1.1 200"), "recording cut by the drain: %r"
          % got[:100])
    doc = json.loads(got.split(b"\r\n\r\n", 1)[1])
    check({e["pid"] for e in doc["traceEvents"]} == {0, 1},
          "drained recording's tracks")
    log("drain during a recording: answered at once (%d events), exit 0" %
        len(doc["traceEvents"]))

    # With --trace, the workers are traced already: 409.
    path = os.path.join(TMP, "t.json")
    r2 = Relay(echo.port, "--metrics", "127.0.0.1:0", "--trace", path,
               metrics=True, name="traced")
    st, _, body = http_get(r2.metrics_port, "/debug/trace?seconds=1")
    check(st == 409 and b"--trace" in body, "with --trace: %d %r" %
          (st, body))
    r2.stop()



# ---- the index page in a browser ----------------------------------------------

def png_pixels(path):
    """Decodes an 8-bit RGB or RGBA PNG (what Chromium writes): returns
    (width, height, rows) with rows[y][x] = (r, g, b)."""
    import struct
    import zlib
    with open(path, "rb") as f:
        data = f.read()
    check(data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG")
    pos, idat, hdr = 8, b"", None
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            hdr = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    w, h, depth, ctype = hdr[0], hdr[1], hdr[2], hdr[3]
    check(depth == 8 and ctype in (2, 6), "PNG depth %d type %d" %
          (depth, ctype))
    bpp = 3 if ctype == 2 else 4
    raw = zlib.decompress(idat)
    stride = w * bpp
    rows, prev, i = [], bytearray(stride), 0
    for _ in range(h):
        ft, line = raw[i], bytearray(raw[i + 1:i + 1 + stride])
        i += 1 + stride
        for x in range(stride):
            a = line[x - bpp] if x >= bpp else 0
            b = prev[x]
            c = prev[x - bpp] if x >= bpp else 0
            if ft == 1:
                line[x] = (line[x] + a) & 255
            elif ft == 2:
                line[x] = (line[x] + b) & 255
            elif ft == 3:
                line[x] = (line[x] + (a + b) // 2) & 255
            elif ft == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pr = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[x] = (line[x] + pr) & 255
        rows.append([tuple(line[x:x + 3]) for x in range(0, stride, bpp)])
        prev = line
    return w, h, rows


def chromium():
    for name in ("chromium", "chromium-browser"):
        if shutil.which(name):
            return name
    return None


def case_page():
    """The index page in headless Chromium (Debian's): a screenshot of the
    size asked for, with the page's header band, cards and text drawn, and
    the rendered DOM holding the live counters; no script involved."""
    browser = chromium()
    if browser is None:
        if os.environ.get("UVCTX_REQUIRE_PEERS"):
            raise Fail("chromium is not installed (UVCTX_REQUIRE_PEERS)")
        log("SKIP: chromium is not installed")
        sys.exit(SKIP)
    echo = EchoServer()
    relay = Relay(echo.port, "--metrics", "127.0.0.1:0", "--workers", "2",
                  metrics=True)
    for i in range(7):
        check(echo_roundtrip(relay.port, b"page %d" % i) == b"page %d" % i,
              "echo")
    wait_until(lambda: len(relay.closes()) == 7, 10, "7 close lines")
    url = "http://127.0.0.1:%d/" % relay.metrics_port
    shot = os.path.join(TMP, "index.png")
    base = [browser, "--headless", "--no-sandbox", "--disable-gpu",
            "--no-first-run", "--user-data-dir=" + os.path.join(TMP, "chr"),
            "--disable-javascript", "--window-size=1200,800"]
    r = subprocess.run(base + ["--dump-dom", url], capture_output=True,
                       timeout=120)
    check(r.returncode == 0, "chromium --dump-dom: %s" % r.stderr[-500:])
    dom = r.stdout.decode()
    check(re.search(r"<td>accepted</td><td class=\"n\">7</td>", dom)
          is not None, "rendered page lacks accepted=7: %r" % dom[:300])
    check(re.search(r"<td>eof</td><td class=\"n\">7</td>", dom) is not None,
          "rendered page lacks eof=7")
    r = subprocess.run(base + ["--screenshot=" + shot, url],
                       capture_output=True, timeout=120)
    check(r.returncode == 0 and os.path.exists(shot),
          "chromium --screenshot: %s" % r.stderr[-500:])
    if os.environ.get("UVCTX_KEEP_SCREENSHOT"):
        shutil.copy(shot, os.environ["UVCTX_KEEP_SCREENSHOT"])
    w, h, px = png_pixels(shot)
    check((w, h) == (1200, 800), "screenshot %dx%d" % (w, h))
    # The header band (#1d2330) across the top, the page background
    # (#f5f6f8) below it, white cards, and text: many distinct colours
    # from anti-aliased glyphs.
    check(px[8][600] == (0x1d, 0x23, 0x30), "header pixel %r" %
          (px[8][600],))
    check(px[790][5] == (0xf5, 0xf6, 0xf8), "background pixel %r" %
          (px[790][5],))
    white = sum(1 for y in range(100, 400, 10) for x in range(0, 1200, 10)
                if px[y][x] == (255, 255, 255))
    colours = {c for row in px[:400] for c in row[::3]}
    check(white > 500 and len(colours) > 40, "white samples %d, colours %d" %
          (white, len(colours)))
    relay.stop()
    log("index page: %dx%d screenshot, %d colours, counters rendered" %
        (w, h, len(colours)))



# ---- Prometheus: the shipped rules, and a real server ------------------------

DEPLOY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                      "..", "deploy", "prometheus")


def need_tool(name):
    if shutil.which(name) is not None:
        return
    if os.environ.get("UVCTX_REQUIRE_PEERS"):
        raise Fail("%s is not installed (UVCTX_REQUIRE_PEERS is set)" % name)
    log("SKIP: %s is not installed" % name)
    sys.exit(SKIP)


def case_rules():
    """deploy/prometheus: the example configuration and the rules pass
    `promtool check`, and the rules' unit tests pass `promtool test
    rules`."""
    need_tool("promtool")
    for argv in (["promtool", "check", "config", "prometheus.yml"],
                 ["promtool", "check", "rules", "uvctx-relay.rules.yml"],
                 ["promtool", "test", "rules",
                  os.path.join("tests", "uvctx-relay.test.yml")]):
        r = subprocess.run(argv, cwd=DEPLOY, capture_output=True, timeout=120)
        out = (r.stdout + r.stderr).decode()
        check(r.returncode == 0, "%s:\n%s" % (" ".join(argv[:3]), out))
        log("%s: %s" % (" ".join(argv[:3]), out.strip().splitlines()[-1]))


def free_port():
    """A port free right now on 127.0.0.1 (for a program that cannot be
    told to bind port 0 and report it)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def prom_query(port, expr):
    import urllib.parse
    import urllib.request
    url = "http://127.0.0.1:%d/api/v1/query?%s" % (
        port, urllib.parse.urlencode({"query": expr}))
    with urllib.request.urlopen(url, timeout=10) as r:
        doc = json.loads(r.read())
    check(doc.get("status") == "success", "query %s: %r" % (expr, doc))
    return [(x["metric"], float(x["value"][1]))
            for x in doc["data"]["result"]]


def case_prometheus():
    """Debian's Prometheus server scrapes a running relay every second
    with the shipped rules loaded: through its query API the relay is up,
    the accepted-connections counter shows the traffic driven, and the
    recording rules yield values."""
    need_tool("prometheus")
    import urllib.request
    echo = EchoServer()
    relay = Relay(echo.port, "--metrics", "127.0.0.1:0", "--workers", "2",
                  metrics=True)
    conf = os.path.join(TMP, "prometheus.yml")
    with open(conf, "w") as f:
        f.write("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                "rule_files:\n  - %s\n"
                "scrape_configs:\n  - job_name: uvctx-relay\n"
                "    static_configs:\n      - targets: ['127.0.0.1:%d']\n" %
                (os.path.join(DEPLOY, "uvctx-relay.rules.yml"),
                 relay.metrics_port))
    port = free_port()
    plog = open(os.path.join(TMP, "prometheus.log"), "wb")
    prom = spawn(["prometheus", "--config.file=" + conf,
                  "--storage.tsdb.path=" + os.path.join(TMP, "tsdb"),
                  "--web.listen-address=127.0.0.1:%d" % port],
                 stdout=plog, stderr=subprocess.STDOUT)

    def ready():
        check(prom.poll() is None, "prometheus exited: %s" %
              open(os.path.join(TMP, "prometheus.log")).read()[-2000:])
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d/-/ready" % port,
                                        timeout=2) as r:
                return r.status == 200
        except OSError:
            return False
    wait_until(ready, 60, "prometheus ready", step=0.2)

    def value(expr):
        got = prom_query(port, expr)
        return got[0][1] if len(got) == 1 else None
    # Scraped once before the traffic, so that a rate sees it move.
    wait_until(lambda: value('up{job="uvctx-relay"}') == 1, 60,
               "up == 1", step=0.5)
    n = 25
    for i in range(n):
        check(echo_roundtrip(relay.port, b"prom %d" % i) == b"prom %d" % i,
              "echo %d" % i)
    wait_until(lambda: len(relay.closes()) == n, 10, "close lines")
    wait_until(lambda: value('sum(uvctx_relay_connections_accepted_total)')
               == n, 60, "accepted == %d in Prometheus" % n, step=0.5)
    wait_until(lambda: (value('sum(instance:uvctx_relay_connections_'
                              'accepted:rate5m)') or 0) > 0, 60,
               "recording rule instance:...accepted:rate5m", step=0.5)
    rate = value('sum(instance:uvctx_relay_connections_accepted:rate5m)')
    wait_until(lambda: (value('sum(loop_reason:uvctx_relay_connections_'
                              'closed:rate5m{reason="eof"})') or 0) > 0, 60,
               "recording rule loop_reason:...closed:rate5m", step=0.5)
    per_loop = prom_query(port, "loop:uvctx_relay_connections_accepted:rate5m")
    check({m["loop"] for m, _ in per_loop} == {"worker-0", "worker-1"},
          "per-worker rule: %r" % per_loop)
    with urllib.request.urlopen("http://127.0.0.1:%d/api/v1/targets" % port,
                                timeout=10) as r:
        targets = json.loads(r.read())["data"]["activeTargets"]
    check(len(targets) == 1 and targets[0]["health"] == "up" and
          targets[0]["lastError"] == "", "targets %r" % targets)
    with urllib.request.urlopen("http://127.0.0.1:%d/api/v1/rules" % port,
                                timeout=10) as r:
        groups = json.loads(r.read())["data"]["groups"]
    bad = [(g["name"], x.get("name"), x.get("lastError")) for g in groups
           for x in g["rules"] if x.get("health") not in ("ok", None) or
           x.get("lastError")]
    check(not bad, "rules with errors: %r" % bad)
    log("prometheus: up, accepted %d, accepted rate %.3f/s over %d rules "
        "without errors" % (n, rate, sum(len(g["rules"]) for g in groups)))
    prom.send_signal(signal.SIGTERM)
    prom.wait(timeout=30)
    relay.stop()



# ---- close lines and log levels ---------------------------------------------

SIDES = ("client", "upstream", "relay", "both")
PHASES = ("accept", "handshake", "connect", "upstream-handshake", "flush",
          "pipe")


def check_close_lines(relay):
    """Every close line names the side that ended the connection and the
    phase it was in; an error's detail starts with that side."""
    for c in relay.closes():
        check(c.get("side") in SIDES and c.get("phase") in PHASES,
              "close line without side/phase: %r" % c)
        if c.get("detail") and c["reason"] in ("reset", "error",
                                               "upstream-error"):
            check(c["detail"].split(" ")[0] in ("client", "upstream"),
                  "detail does not name the side: %r" % c)


class ResetServer(LoopbackServer):
    """Reads `n` bytes, then resets (SO_LINGER 0) the connection."""

    def __init__(self, n):
        self.n = n
        super().__init__()

    def serve(self, c):
        import struct
        got = 0
        while got < self.n:
            d = c.recv(65536)
            if not d:
                break
            got += len(d)
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                     struct.pack("ii", 1, 0))
        c.close()


def reset_client(port):
    """Connects, gets an echo through, then resets the connection."""
    import struct
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(b"x")
    check(s.recv(1) == b"x", "echo before the reset")
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


def case_logs():
    """Close lines name the side and phase of a reset (client or upstream,
    read or write); --log-level open|close|error|summary select the lines;
    summary lines add up to the connections made."""
    echo = EchoServer()
    # Default level: close lines only.
    relay = Relay(echo.port, "--workers", "2", name="close")
    check(echo_roundtrip(relay.port, b"one") == b"one", "echo")
    reset_client(relay.port)
    wait_until(lambda: len(relay.closes()) == 2, 10, "2 close lines")
    check(not relay.events("open"), "open lines at the default level")
    by = {c["reason"]: c for c in relay.closes()}
    check(by["eof"]["side"] == "both" and by["eof"]["phase"] == "pipe",
          "eof line %r" % by["eof"])
    r = by.get("reset")
    check(r is not None and r["side"] == "client" and r["phase"] == "pipe"
          and r["detail"] in ("client read ECONNRESET",
                              "client write EPIPE",
                              "client write ECONNRESET"),
          "client reset line %r" % r)
    relay.stop()

    # The upstream resets in the middle of the pipe.
    rs = ResetServer(1000)
    relay = Relay(rs.port, name="upreset")
    s = socket.create_connection(("127.0.0.1", relay.port), timeout=10)
    try:
        s.sendall(b"u" * 4000)
    except OSError:
        pass
    wait_closed(s, 10)
    s.close()
    wait_until(lambda: len(relay.closes()) == 1, 10, "close line")
    c = relay.closes()[0]
    check(c["reason"] == "reset" and c["side"] == "upstream" and
          c["phase"] == "pipe" and c["detail"].startswith("upstream "),
          "upstream reset line %r" % c)
    log("reset lines: client %r, upstream %r" % (r["detail"], c["detail"]))
    relay.stop()

    # error: the ordinary ends are not logged, the reset is.
    relay = Relay(echo.port, "--log-level", "error", name="error")
    for i in range(3):
        check(echo_roundtrip(relay.port, b"e%d" % i) == b"e%d" % i, "echo")
    reset_client(relay.port)
    wait_until(lambda: len(relay.closes()) == 1, 10, "the reset's line")
    time.sleep(0.3)
    check([c["reason"] for c in relay.closes()] == ["reset"],
          "error level: %r" % relay.closes())
    relay.stop()

    # open: both lines per connection.
    relay = Relay(echo.port, "--log-level", "open", name="open")
    check(echo_roundtrip(relay.port, b"o") == b"o", "echo")
    wait_until(lambda: len(relay.closes()) == 1, 10, "close line")
    check(len(relay.events("open")) == 1, "open level: no open line")
    relay.stop()

    # --log-sample 4: the lines of connections 4, 8 and 12 (open and
    # close), each with sample=4, and the reset of connection 13, which
    # sampling never hides.
    relay = Relay(echo.port, "--log-level", "open", "--log-sample", "4",
                  name="sample")
    for i in range(12):
        check(echo_roundtrip(relay.port, b"p%d" % i) == b"p%d" % i, "echo")
    reset_client(relay.port)
    wait_until(lambda: any(c["reason"] == "reset" for c in relay.closes()),
               10, "the reset's line")
    wait_until(lambda: len(relay.closes()) >= 4, 10, "4 close lines")
    time.sleep(0.3)
    closes = sorted((int(c["conn"]), c["reason"]) for c in relay.closes())
    check(closes == [(4, "eof"), (8, "eof"), (12, "eof"), (13, "reset")],
          "sampled close lines %r" % closes)
    check(sorted(int(e["conn"]) for e in relay.events("open")) == [4, 8, 12],
          "sampled open lines %r" % relay.events("open"))
    check(all(e.get("sample") == "4"
              for e in relay.closes() + relay.events("open")),
          "sample field %r" % relay.closes())
    relay.stop()
    for bad in ("0", "x", "1000001"):
        r = subprocess.run([ARGS.relay, "--listen", "127.0.0.1:0", "--connect",
                            "127.0.0.1:%d" % echo.port, "--log-sample", bad],
                           capture_output=True, text=True, timeout=10)
        check(r.returncode == 2 and "--log-sample" in r.stderr,
              "--log-sample %s: %r" % (bad, r))

    # summary: no per-connection line; per-worker summaries every 300 ms
    # whose counts add up to the connections made, by reason.
    relay = Relay(echo.port, "--log-level", "summary", "--log-interval",
                  "300ms", "--workers", "2", "--log-format", "json",
                  name="summary")
    n = 20
    for i in range(n):
        check(echo_roundtrip(relay.port, b"s%d" % i) == b"s%d" % i, "echo")
    reset_client(relay.port)

    def totals():
        sums = {"accepted": 0, "closed": 0, "eof": 0, "reset": 0}
        for e in relay.events("summary"):
            for k in sums:
                sums[k] += e.get(k, 0)
        return sums
    wait_until(lambda: totals()["closed"] == n + 1, 10, "summaries")
    relay.stop()
    t = totals()
    check(t == {"accepted": n + 1, "closed": n + 1, "eof": n, "reset": 1},
          "summary totals %r" % t)
    check(not relay.closes() and not relay.events("open"),
          "per-connection lines in summary mode")
    workers = {e["worker"] for e in relay.events("summary")}
    check(workers <= {0, 1} and all(isinstance(e["interval_ms"], int)
                                    for e in relay.events("summary")),
          "summary lines %r" % relay.events("summary")[:2])
    log("summary: %d lines over workers %r, totals %r" %
        (len(relay.events("summary")), sorted(workers), t))



class HoldServer(LoopbackServer):
    """Reads everything and never answers; with `bye`, first sends it and
    half-closes."""

    def __init__(self, bye=None):
        self.bye = bye
        super().__init__()

    def serve(self, c):
        try:
            if self.bye is not None:
                c.sendall(self.bye)
                c.shutdown(socket.SHUT_WR)
            while c.recv(65536):
                pass
        except OSError:
            pass


def case_halfclose():
    """--server-fin-timeout and --client-fin-timeout end a half-closed
    connection whose other side stays silent (reason half-close-timeout,
    the silent side named), and a drain waits for such a connection only
    that long, not for the idle timeout."""
    fin = 0.3 if timed() else 1.0
    fin_arg = "%dms" % (fin * 1000)
    # The client half-closes; the upstream reads and stays silent.
    hold = HoldServer()
    relay = Relay(hold.port, "--server-fin-timeout", fin_arg,
                  "--idle-timeout", "30s", name="serverfin")
    s = socket.create_connection(("127.0.0.1", relay.port), timeout=10)
    s.sendall(b"request")
    s.shutdown(socket.SHUT_WR)
    closed_within(s, fin * 0.9, fin + 2, "client half-closed, silent upstream "
                  "cut")
    wait_until(lambda: len(relay.closes()) == 1, 10, "close line")
    c = relay.closes()[0]
    check(c["reason"] == "half-close-timeout" and c["side"] == "upstream" and
          c["phase"] == "pipe" and
          c["detail"] == "client half-closed, upstream silent",
          "server-fin close line %r" % c)
    check(int(c["bytes_up"]) == 7, "bytes up %r" % c["bytes_up"])

    # A drain waits for a half-closed connection only until its half-close
    # timeout, although --drain-timeout and --idle-timeout are far longer.
    s = socket.create_connection(("127.0.0.1", relay.port), timeout=10)
    s.sendall(b"again")
    s.shutdown(socket.SHUT_WR)
    wait_until(lambda: len(hold.conns) == 2, 10, "second upstream connection")
    t0 = time.monotonic()
    relay.signal(signal.SIGTERM)
    rc = relay.wait(30)
    took = time.monotonic() - t0
    check(rc == 0, "exit status %d" % rc)
    check(relay.closes()[1]["reason"] == "half-close-timeout",
          "drained connection ended by %r" % relay.closes()[1])
    log("drain with a half-closed connection: exit 0 after %.2fs" % took)
    if timed():
        check(took < fin + 2, "drain took %.2fs" % took)
    s.close()

    # The upstream says bye and half-closes; the client stays silent.
    bye = HoldServer(bye=b"bye")
    relay = Relay(bye.port, "--client-fin-timeout", fin_arg,
                  "--idle-timeout", "30s", name="clientfin")
    s = socket.create_connection(("127.0.0.1", relay.port), timeout=10)
    got = b""
    while len(got) < 3:
        d = s.recv(10)
        check(d, "bye from the upstream")
        got += d
    check(got == b"bye", "got %r" % got)
    # The relay passed the upstream's FIN on (EOF here at once); the
    # client-fin timeout then ends the connection: its close line says
    # when.
    wait_until(lambda: len(relay.closes()) == 1, fin + 10, "close line")
    c = relay.closes()[0]
    log("upstream half-closed, silent client cut after %sms" %
        c["duration_ms"])
    if timed():
        check(fin * 900 <= int(c["duration_ms"]) <= fin * 1000 + 2000,
              "client-fin cut at %sms" % c["duration_ms"])
    check(c["reason"] == "half-close-timeout" and c["side"] == "client" and
          c["detail"] == "upstream half-closed, client silent",
          "client-fin close line %r" % c)
    relay.stop()


def main(cases=None, tools=("curl", "openssl"), prefix="relay-test-"):
    """Parses the command line and runs the case it names, one of the
    case_* functions of `cases` (a module's globals(); this module's by
    default), after checking that `tools` (or the case's own `tools`
    attribute) are installed. Returns the exit status."""
    global ARGS, TMP
    ap = argparse.ArgumentParser()
    ap.add_argument("--relay", required=True)
    ap.add_argument("--gen-certs", required=True)
    ap.add_argument("--sanitize", default="")
    ap.add_argument("--gai-preload", default="")
    ap.add_argument("case")
    ARGS = ap.parse_args()
    fn = (cases if cases is not None else globals()).get("case_" + ARGS.case)
    if fn is None:
        print("unknown case %r" % ARGS.case)
        return 1
    for tool in getattr(fn, "tools", tools):
        if shutil.which(tool) is None:
            if os.environ.get("UVCTX_REQUIRE_PEERS"):
                print("FAIL: %s is not installed (UVCTX_REQUIRE_PEERS is set)"
                      % tool)
                return 1
            print("SKIP: %s is not installed" % tool)
            return SKIP
    TMP = tempfile.mkdtemp(prefix=prefix)
    t0 = time.monotonic()
    try:
        fn()
    except Fail as e:
        print("FAIL: %s" % e, flush=True)
        for r in RELAYS:
            print("--- last lines of %s" % os.path.basename(r.log_path))
            print("\n".join(r.text().splitlines()[-25:]), flush=True)
        return 1
    finally:
        kill_all()
        shutil.rmtree(TMP, ignore_errors=True)
    print("PASS %s in %.1fs" % (ARGS.case, time.monotonic() - t0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
