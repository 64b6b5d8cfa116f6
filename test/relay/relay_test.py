#!/usr/bin/env python3
"""End-to-end tests of uvctx-relay: real processes on loopback only.

    relay_test.py --relay PATH --gen-certs PATH [--sanitize MODE] CASE

CASE is one of the functions named case_* below (cli, plain, tls,
upstream_tls, slow, deadlines, drain, workers, emfile). Each starts its own
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

    def __init__(self, upstream_port, *extra, limit_fds=None, name="relay"):
        self.log_path = os.path.join(TMP, name + ".log")
        self.log_file = open(self.log_path, "wb")
        argv = [ARGS.relay, "--listen", "127.0.0.1:0",
                "--connect", "127.0.0.1:%d" % upstream_port] + list(extra)
        pre = None
        if limit_fds is not None:
            def pre():
                resource.setrlimit(resource.RLIMIT_NOFILE,
                                   (limit_fds, limit_fds))
        self.proc = spawn(argv, stdout=subprocess.PIPE,
                          stderr=self.log_file, preexec_fn=pre)
        RELAYS.append(self)
        line = read_line(self.proc.stdout, 20 if timed() else 60)
        m = re.match(r"listening on 127\.0\.0\.1:(\d+)$", line or "")
        check(m is not None, "relay did not print its port, got %r" % line)
        self.port = int(m.group(1))
        self.pid = self.proc.pid

    def signal(self, sig=signal.SIGTERM):
        self.proc.send_signal(sig)

    def wait(self, timeout):
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise Fail("relay did not exit within %.1fs" % timeout)

    def stop(self, timeout=30):
        """SIGTERM, then demand exit status 0 (and no leak report)."""
        self.signal()
        rc = self.wait(timeout)
        check(rc == 0, "relay exit status %d, log:\n%s" % (rc, self.text()))

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


class EchoServer:
    """A threaded echo server on 127.0.0.1:0."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(512)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        t = threading.Thread(target=self._accept, daemon=True)
        t.start()

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._echo, args=(c,), daemon=True).start()

    @staticmethod
    def _echo(c):
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


def reasons(relay):
    return [c.get("reason") for c in relay.closes()]


def client_done(reason):
    """How a connection whose client closed on its own may end: "eof", or
    "reset" when the client hung up before our FIN or TLS close_notify
    reached it (an HTTPS client with its whole body does not wait)."""
    return reason in ("eof", "reset")


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
        (["--listen", "127.0.0.1:0", "--frobnicate", "1"] + base,
         "unknown option"),
        (["--connect", "127.0.0.1:9"], "required"),
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
    """Idle and lifetime deadlines, and a refused upstream."""
    echo = EchoServer()
    # Idle: one exchange, then silence.
    relay = Relay(echo.port, "--idle-timeout", "500ms", name="idle")
    s = socket.create_connection(("127.0.0.1", relay.port), timeout=10)
    s.sendall(b"ping")
    check(s.recv(100) == b"ping", "echo")
    t0 = time.monotonic()
    t1 = wait_closed(s, 10)
    s.close()
    log("idle connection closed after %.3fs" % (t1 - t0))
    if timed():
        check(0.45 <= t1 - t0 <= 1.5, "idle close at %.3fs" % (t1 - t0))
    wait_until(lambda: len(relay.closes()) == 1, 10, "close line")
    relay.stop()
    check(reasons(relay) == ["idle-timeout"], "reasons %r" % reasons(relay))

    # Lifetime: a busy connection is cut at --max-lifetime.
    relay = Relay(echo.port, "--idle-timeout", "10s", "--max-lifetime",
                  "700ms", name="lifetime")
    s = socket.create_connection(("127.0.0.1", relay.port), timeout=10)
    t0 = time.monotonic()
    gone = False
    while time.monotonic() - t0 < 10 and not gone:
        try:
            s.sendall(b"tick")
            if s.recv(100) == b"":
                gone = True
        except OSError:
            gone = True
        time.sleep(0.05)
    t1 = time.monotonic()
    s.close()
    check(gone, "lifetime did not end the connection")
    log("busy connection cut after %.3fs" % (t1 - t0))
    if timed():
        check(0.65 <= t1 - t0 <= 1.5, "lifetime cut at %.3fs" % (t1 - t0))
    wait_until(lambda: len(relay.closes()) == 1, 10, "close line")
    relay.stop()
    check(reasons(relay) == ["lifetime"], "reasons %r" % reasons(relay))
    check(int(relay.closes()[0]["bytes_up"]) > 0, "no bytes counted")

    # Nobody at the upstream port.
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    dead_port = dead.getsockname()[1]
    dead.close()
    relay = Relay(dead_port, name="refused")
    s = socket.create_connection(("127.0.0.1", relay.port), timeout=10)
    wait_closed(s, 10)
    s.close()
    wait_until(lambda: len(relay.closes()) == 1, 10, "close line")
    relay.stop()
    check(reasons(relay) == ["upstream-refused"], "reasons %r" %
          reasons(relay))

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
    relay = Relay(up, "--drain-timeout", "10s", name="drain")
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


def main():
    global ARGS, TMP
    ap = argparse.ArgumentParser()
    ap.add_argument("--relay", required=True)
    ap.add_argument("--gen-certs", required=True)
    ap.add_argument("--sanitize", default="")
    ap.add_argument("case")
    ARGS = ap.parse_args()
    for tool in ("curl", "openssl"):
        if shutil.which(tool) is None:
            print("SKIP: %s is not installed" % tool)
            return SKIP
    fn = globals().get("case_" + ARGS.case)
    if fn is None:
        print("unknown case %r" % ARGS.case)
        return 1
    TMP = tempfile.mkdtemp(prefix="relay-test-")
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
