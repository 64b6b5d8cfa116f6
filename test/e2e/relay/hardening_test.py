#!/usr/bin/env python3
"""Hostile clients and faults against uvctx-relay: real processes on
loopback only, every count and every wait bounded.

    hardening_test.py --relay PATH --gen-certs PATH [--sanitize MODE] CASE

CASE is one of the functions named case_* below. The plumbing (relays,
upstreams, logs, bounded waits) is relay_test.py's, imported. Timing
windows are asserted only in the plain build (--sanitize empty); the relay
must exit 0 after its drain, which under ASan also proves it leaked
nothing.

Exit status: 0 passed, 1 failed, 77 skipped (a tool is missing and
UVCTX_REQUIRE_PEERS is not set).
"""
import os
import re
import resource
import socket
import ssl
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import relay_test as rt  # noqa: E402
from relay_test import Fail, check, log, timed  # noqa: E402


# ---- a TLS client whose records we control ------------------------------------

class RawTLS:
    """A TLS client over a plain socket through memory BIOs, so that the
    test can also put raw bytes on the wire after the handshake (a hostile
    record) or close without close_notify."""

    def __init__(self, port, cafile, timeout=10):
        self.sock = socket.create_connection(("127.0.0.1", port),
                                             timeout=timeout)
        ctx = ssl.create_default_context(cafile=cafile)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        self.inc = ssl.MemoryBIO()
        self.out = ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.inc, self.out,
                                server_hostname="localhost")
        self._run(self.obj.do_handshake)

    def _flush(self):
        data = self.out.read()
        if data:
            self.sock.sendall(data)

    def _feed(self):
        d = self.sock.recv(65536)
        if not d:
            self.inc.write_eof()
            return False
        self.inc.write(d)
        return True

    def _run(self, fn, *a):
        while True:
            try:
                r = fn(*a)
                self._flush()
                return r
            except ssl.SSLWantReadError:
                self._flush()
                if not self._feed():
                    raise Fail("peer closed during a TLS operation")

    def send(self, data):
        self._run(self.obj.write, data)

    def recv_exactly(self, n):
        got = b""
        while len(got) < n:
            got += self._run(self.obj.read, n - len(got))
        return got

    def raw(self, data):
        """Bytes on the wire, outside the TLS session."""
        self.sock.sendall(data)

    def close_without_notify(self):
        self.sock.close()


def tls_relay(name):
    d = rt.certs()
    echo = rt.EchoServer()
    relay = rt.Relay(echo.port, "--tls-cert", d + "/chain.pem", "--tls-key",
                     d + "/server.key", "--idle-timeout", "20s", name=name)
    return d, relay


def one_close(relay):
    rt.wait_until(lambda: len(relay.closes()) == 1, 15, "close line")
    return relay.closes()[0]


# ---- cases ---------------------------------------------------------------------

def case_tls_reasons():
    """TLS failures after the handshake are logged with their side and
    OpenSSL's reason, like those during it; a client that leaves without
    close_notify after its whole response is a truncation, not a reset."""
    d, relay = tls_relay("reasons-record")
    # An oversized application record (2^14 + 2049 bytes announced, past
    # what RFC 8446 allows) after a healthy exchange.
    c = RawTLS(relay.port, d + "/ca.pem")
    c.send(b"ping\n")
    check(c.recv_exactly(5) == b"ping\n", "echo before the bad record")
    c.raw(b"\x17\x03\x03\x48\x01" + b"\x00" * 64)
    rt.wait_closed(c.sock, 15)
    rec = one_close(relay)
    relay.stop()
    log("oversized record: reason=%s detail=%r" %
        (rec.get("reason"), rec.get("detail")))
    check(rec.get("reason") == "tls-error", "reason %r" % rec.get("reason"))
    check(re.match(r"client read EPROTO: .+", rec.get("detail", "")),
          "detail %r: no side or no OpenSSL reason" % rec.get("detail"))

    # The same record before the handshake: the same shape of detail.
    d, relay = tls_relay("reasons-early")
    s = socket.create_connection(("127.0.0.1", relay.port), timeout=10)
    s.sendall(b"\x16\x03\x01\x48\x01" + b"\x00" * 64)
    rt.wait_closed(s, 15)
    s.close()
    rec = one_close(relay)
    relay.stop()
    log("oversized first record: reason=%s detail=%r" %
        (rec.get("reason"), rec.get("detail")))
    check(rec.get("reason") == "tls-error" and
          re.match(r"client EPROTO: .+", rec.get("detail", "")),
          "handshake-phase close %r" % rec)

    # A renegotiation attempt (TLS 1.2; the relay refuses renegotiation).
    d, relay = tls_relay("reasons-reneg")
    p = rt.spawn(["openssl", "s_client", "-connect",
                  "127.0.0.1:%d" % relay.port, "-tls1_2", "-CAfile",
                  d + "/ca.pem", "-servername", "localhost"],
                 stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                 stderr=subprocess.STDOUT)
    p.stdin.write(b"hello\n")
    p.stdin.flush()
    line = None
    end = time.monotonic() + 15
    while time.monotonic() < end:
        line = rt.read_line(p.stdout, 15)
        if line is None or line == "hello":
            break
    check(line == "hello", "s_client echo before renegotiating: %r" % line)
    p.stdin.write(b"R\n")
    p.stdin.flush()
    rec = one_close(relay)
    p.kill()
    p.wait(timeout=10)
    relay.stop()
    log("renegotiation: reason=%s detail=%r" %
        (rec.get("reason"), rec.get("detail")))
    check(rec.get("reason") == "tls-error", "reason %r" % rec.get("reason"))
    check(re.match(r"client (read|write|shutdown) E[A-Z]+: .+",
                   rec.get("detail", "")),
          "detail %r: no side or no OpenSSL reason" % rec.get("detail"))

    # The whole response received, then a close without close_notify.
    d, relay = tls_relay("reasons-truncated")
    c = RawTLS(relay.port, d + "/ca.pem")
    c.send(b"all of it\n")
    check(c.recv_exactly(10) == b"all of it\n", "echo")
    c.close_without_notify()
    rec = one_close(relay)
    relay.stop()
    log("no close_notify: reason=%s detail=%r" %
        (rec.get("reason"), rec.get("detail")))
    check(rec.get("reason") == "truncated", "reason %r" % rec.get("reason"))
    check(re.match(r"client read ECONNABORTED: .*close_notify",
                   rec.get("detail", "")), "detail %r" % rec.get("detail"))
    check(rec.get("bytes_down") == "10" or rec.get("bytes_down") == 10,
          "bytes_down %r" % rec.get("bytes_down"))


# ---- HTTP backends -------------------------------------------------------------

BACKEND = r"""
import http.server, socketserver, sys, os, struct, socket
mode, port, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
body = b"x" * size
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a):
        pass
    def handle_one_request(self):
        try:
            super().handle_one_request()
        except ValueError:  # reset() closed the files already
            self.close_connection = True
    def finish(self):
        try:
            super().finish()
        except (ValueError, OSError):
            pass
    def reset(self):
        # RST now: linger 0, and every reference to the socket closed (the
        # handler's files hold it open otherwise).
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                   struct.pack("ii", 1, 0))
        self.close_connection = True
        self.wfile.flush()
        self.rfile.close()
        self.wfile.close()
        self.connection.close()
    def reply(self):
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if mode == "reset-mid":
            self.wfile.write(body[:len(body) // 2])
            self.wfile.flush()
            self.reset()
            return
        self.wfile.write(body)
    def do_GET(self):
        if mode == "reset-read":
            self.reset()
            return
        self.reply()
    def do_POST(self):
        # A backend that reads bodies: the whole Content-Length.
        n = int(self.headers.get("Content-Length") or 0)
        while n > 0:
            d = self.rfile.read(min(n, 65536))
            if not d:
                return
            n -= len(d)
        self.reply()
class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    def handle_error(self, request, client_address):
        pass  # peers cut by the relay: expected here
    allow_reuse_address = True
    request_queue_size = 1024
    def get_request(self):
        c, a = self.socket.accept()
        if mode == "reset-accept":
            c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                         struct.pack("ii", 1, 0))
            c.close()
            raise OSError("reset at accept")
        return c, a
srv = S(("127.0.0.1", port), H)
print("port %d" % srv.server_address[1], flush=True)
srv.serve_forever()
"""


class Backend:
    """An HTTP/1.1 backend process: GET answers `size` bytes; POST reads
    the whole body first; modes reset at accept, after reading the request,
    or mid-response."""

    def __init__(self, mode="ok", port=0, size=100000):
        self.mode, self.size = mode, size
        self.proc = rt.spawn([sys.executable, "-c", BACKEND, mode, str(port),
                              str(size)], stdout=subprocess.PIPE)
        line = rt.read_line(self.proc.stdout, 20)
        check(line is not None and line.startswith("port "),
              "backend did not start: %r" % line)
        self.port = int(line.split()[1])

    def kill(self):
        self.proc.kill()
        self.proc.wait(timeout=10)


def get(port, path="/", tls_ca=None, timeout=10, rc=None):
    """One HTTP request through the relay; returns (status, body length,
    seconds). `rc`, a list, receives curl's exit status."""
    scheme = "https" if tls_ca else "http"
    argv = ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} "
            "%{size_download} %{time_total}", "--max-time", str(timeout),
            "%s://localhost:%d%s" % (scheme, port, path),
            "--resolve", "localhost:%d:127.0.0.1" % port]
    if tls_ca:
        argv += ["--cacert", tls_ca]
    r = subprocess.run(argv, capture_output=True, timeout=timeout + 10)
    if rc is not None:
        rc.append(r.returncode)
    parts = r.stdout.decode().split()
    if r.returncode != 0 or len(parts) != 3:
        return 0, 0, float(timeout)
    return int(parts[0]), int(parts[1]), float(parts[2])


def active(relay):
    _, samples = rt.scrape(relay)
    return rt.metric(samples, "uvctx_relay_connections_active")


def live(relay):
    """What the relay holds: open connections, and the library's live
    contexts and pending watches over every loop (from /metrics)."""
    _, samples = rt.scrape(relay)
    return (rt.metric(samples, "uvctx_relay_connections_active"),
            rt.metric(samples, "uvctx_contexts"),
            rt.metric(samples, "uvctx_watches"))


# ---- slowhttptest ----------------------------------------------------------------

# Each attack: (name, slowhttptest flags, the reasons the relay may give
# when it cuts an attacker, and the deadline, in seconds from the open,
# by which it must). Slow senders (headers, body, range headers) go quiet
# for longer than --idle-timeout between their pieces; a slow reader stalls
# the relay's writes, so nothing moves and the idle timeout cuts it too, or
# --max-lifetime at the latest.
ATTACKS = [
    ("slowloris", ["-H", "-i", "10"], ("idle-timeout",), "idle"),
    ("slow-body", ["-B", "-i", "10", "-s", "100000"], ("idle-timeout",),
     "idle"),
    ("slow-read", ["-X", "-k", "4", "-n", "1", "-w", "16", "-y", "32",
                   "-z", "16"], ("idle-timeout", "lifetime"), "lifetime"),
    # Range requests are quick to send: the backend answers them, and the
    # connections end however the attacker ends them, within the lifetime.
    ("range", ["-R", "-a", "10", "-b", "3000", "-i", "10"], None,
     "lifetime"),
]
IDLE_S = 2.0
LIFETIME_S = 4.0
CONNS = 120


def attack(relay, url, flags, length, ca=None):
    """Runs one slowhttptest attack of CONNS connections for `length`
    seconds while a healthy client keeps asking; returns the healthy
    requests' (status, size, seconds)."""
    p = rt.spawn(["slowhttptest", "-c", str(CONNS), "-r", "200", "-l",
                  str(length), "-p", "3", "-u", url] + flags,
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    healthy = []
    t_end = time.monotonic() + length
    time.sleep(1.0)  # the attackers are connected
    while time.monotonic() < t_end - 0.5:
        healthy.append(get(relay.port, "/", tls_ca=ca))
        time.sleep(0.3)
    try:
        p.wait(timeout=length + 30)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
    return healthy


def case_slowhttp():
    """slowhttptest (slowloris, slow body against a backend that reads
    bodies, slow read, range) against the plain and the TLS relay: every
    attacker is closed by its deadline (plus a margin, plain build only),
    healthy requests are served during each attack, and descriptors and
    open connections come back to their baseline; the relay exits 0 (under
    ASan: nothing leaked)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4 * CONNS:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192), hard))
    d = rt.certs()
    backend = Backend(size=256 * 1024)
    margin = 1.0 if timed() else None
    for tls in (False, True):
        extra = ["--tls-cert", d + "/chain.pem", "--tls-key",
                 d + "/server.key"] if tls else []
        relay = rt.Relay(backend.port, "--metrics", "127.0.0.1:0",
                         "--idle-timeout", "%dms" %
                         (IDLE_S * 1000), "--max-lifetime", "%dms" %
                         (LIFETIME_S * 1000), *extra, metrics=True,
                         name="slowhttp-%s" % ("tls" if tls else "plain"))
        ca = d + "/ca.pem" if tls else None
        scheme = "https" if tls else "http"
        # Warm up (libuv keeps one spare descriptor per loop once used).
        check(get(relay.port, "/", tls_ca=ca)[0] == 200, "warm-up request")
        time.sleep(0.2)
        fds0 = relay.fds()
        live0 = live(relay)
        for name, flags, why, deadline in ATTACKS:
            before = len(relay.closes())
            healthy = attack(relay, "%s://localhost:%d/" % (scheme,
                             relay.port), flags, 8, ca=ca)
            ok = [h for h in healthy if h[0] == 200 and h[1] == 256 * 1024]
            worst = max(h[2] for h in healthy) if healthy else -1
            log("%s %s: %d/%d healthy requests served, slowest %.3fs" %
                ("tls" if tls else "plain", name, len(ok), len(healthy),
                 worst))
            check(len(healthy) > 0 and len(ok) == len(healthy),
                  "%s: healthy requests failed: %r" % (name, healthy))
            rt.wait_until(lambda: live(relay) == live0, 30,
                          "%s: connections, contexts and watches back to %r "
                          "(now %r)" % (name, live0, live(relay)))
            ended = relay.closes()[before:]
            cut = [c for c in ended if why is None or c.get("reason") in why]
            log("  reasons: %r" % sorted(set(c.get("reason") for c in ended)))
            limit = IDLE_S if deadline == "idle" else LIFETIME_S
            durs = sorted(int(c["duration_ms"]) / 1000.0 for c in cut)
            log("  %d attackers cut (%s), after %.3fs (min) %.3fs (max)" %
                (len(cut), "/".join(why or ("any",)), durs[0] if durs else -1,
                 durs[-1] if durs else -1))
            check(len(cut) >= CONNS // 2, "%s: only %d closes for %s" %
                  (name, len(cut), "/".join(why or ("any",))))
            if margin is not None:
                check(durs[-1] <= limit + margin,
                      "%s: an attacker lasted %.3fs (deadline %.1fs)" %
                      (name, durs[-1], limit))
                check(why is None or durs[0] >= IDLE_S - 0.05,
                      "%s: cut early at %.3fs" % (name, durs[0]))
            rt.wait_until(lambda: relay.fds() <= fds0, 10,
                          "%s: fds back to %d (now %d)" %
                          (name, fds0, relay.fds()))
        relay.stop()
        log("%s relay: fds back to %d, exit 0" %
            ("tls" if tls else "plain", fds0))


case_slowhttp.tools = ("openssl", "curl", "slowhttptest")


def case_backend_faults():
    """A backend killed and restarted under wrk load, and backends that
    reset at accept, after reading the request, and mid-response: the relay
    keeps serving, logs each close with its reason, and holds no more
    descriptors or connections than before."""
    backend = Backend(size=4096)
    port = backend.port
    relay = rt.Relay(port, "--connect-timeout", "1s", "--metrics",
                     "127.0.0.1:0", metrics=True,
                     name="faults")
    check(get(relay.port)[0] == 200, "warm-up request")
    time.sleep(0.2)
    fds0 = relay.fds()
    live0 = live(relay)
    load = rt.spawn(["wrk", "-t1", "-c16", "-d6s", "--timeout", "2s",
                     "http://127.0.0.1:%d/" % relay.port],
                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    time.sleep(2)
    backend.kill()
    time.sleep(1)
    down = get(relay.port, timeout=5)
    backend = Backend(size=4096, port=port)
    out = load.communicate(timeout=30)[0].decode()
    check(load.returncode == 0, "wrk failed: %s" % out)
    m = re.search(r"(\d+) requests in", out)
    log("wrk: %s requests; while the backend was down: %r" %
        (m.group(1) if m else "?", down))
    check(m is not None and int(m.group(1)) > 0, "wrk moved nothing")
    check(get(relay.port)[0] == 200, "served after the restart")
    rt.wait_until(lambda: live(relay) == live0, 20,
                  "connections, contexts and watches back to %r (now %r)" %
                  (live0, live(relay)))
    rs = [c.get("reason") for c in relay.closes()]
    counts = {r: rs.count(r) for r in set(rs)}
    log("close reasons under load: %r" % counts)
    check(counts.get("upstream-refused", 0) >= 1,
          "no upstream-refused while the backend was down")
    check(set(counts) <= {"eof", "reset", "upstream-refused", "client-gone",
                          "upstream-error"}, "unexpected reasons %r" % counts)
    rt.wait_until(lambda: relay.fds() <= fds0, 10,
                  "fds back to %d (now %d)" % (fds0, relay.fds()))
    relay.stop()
    backend.kill()

    for mode in ("reset-accept", "reset-read", "reset-mid"):
        backend = Backend(mode, size=1 << 20)
        relay = rt.Relay(backend.port, "--metrics", "127.0.0.1:0",
                         metrics=True, name=mode)
        # Warm up (libuv's spare descriptor), then the baseline.
        get(relay.port, timeout=5)
        rt.wait_until(lambda: len(relay.closes()) == 1, 10, "warm-up close")
        fds0 = relay.fds()
        n = 20
        for _ in range(n - 1):
            rc = []
            status, size, _ = get(relay.port, timeout=10, rc=rc)
            check(status != 200 or size < 1 << 20,
                  "%s: a whole response came through" % mode)
            # The end came from the backend's reset, through the relay,
            # not from curl giving up (28: timeout).
            check(rc[0] != 28, "%s: the client timed out" % mode)
        check(backend.proc.poll() is None, "%s: backend died" % mode)
        rt.wait_until(lambda: len(relay.closes()) == n, 10,
                      "%s: %d close lines" % (mode, n))
        rt.wait_until(lambda: active(relay) == 0, 10,
                      "%s: every connection closed" % mode)
        rs = [(c.get("reason"), c.get("detail")) for c in relay.closes()]
        log("%s: %r" % (mode, sorted(set(rs))))
        check(all(r == "reset" for r, _ in rs), "%s: reasons %r" % (mode, rs))
        mid = [int(c["bytes_down"]) for c in relay.closes()]
        if mode == "reset-mid":
            check(all(0 < b < 1 << 20 for b in mid),
                  "%s: bytes_down %r" % (mode, mid))
        if timed():
            slow = max(int(c["duration_ms"]) for c in relay.closes())
            check(slow < 2000, "%s: a close took %d ms" % (mode, slow))
        rt.wait_until(lambda: relay.fds() <= fds0, 10,
                      "%s: fds back to %d (now %d)" % (mode, fds0,
                                                      relay.fds()))
        relay.stop()
        backend.kill()


case_backend_faults.tools = ("curl", "wrk")


if __name__ == "__main__":
    sys.exit(rt.main(globals(), ("openssl", "curl"), "relay-hard-"))
