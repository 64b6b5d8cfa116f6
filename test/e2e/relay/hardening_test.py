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
import argparse
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import relay_test as rt  # noqa: E402
from relay_test import Fail, check, log  # noqa: E402


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
    detail = rec.get("detail", "")
    check(detail.startswith("client EPROTO: ") and
          len(detail) > len("client EPROTO: "),
          "detail %r: no side or no OpenSSL reason" % detail)

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
          rec.get("detail", "").startswith("client EPROTO: "),
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
    detail = rec.get("detail", "")
    check(detail.startswith("client ") and ": " in detail,
          "detail %r: no side or no OpenSSL reason" % detail)

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
    check(rec.get("detail", "").startswith("client ECONNABORTED: "),
          "detail %r" % rec.get("detail"))
    check(rec.get("bytes_down") == "10" or rec.get("bytes_down") == 10,
          "bytes_down %r" % rec.get("bytes_down"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--relay", required=True)
    ap.add_argument("--gen-certs", required=True)
    ap.add_argument("--sanitize", default="")
    ap.add_argument("case")
    rt.ARGS = ap.parse_args()
    fn = globals().get("case_" + rt.ARGS.case)
    if fn is None:
        print("unknown case %r" % rt.ARGS.case)
        return 1
    need = getattr(fn, "tools", ("openssl",))
    for tool in need:
        if shutil.which(tool) is None:
            if os.environ.get("UVCTX_REQUIRE_PEERS"):
                print("FAIL: %s is not installed (UVCTX_REQUIRE_PEERS is set)"
                      % tool)
                return 1
            print("SKIP: %s is not installed" % tool)
            return rt.SKIP
    rt.TMP = tempfile.mkdtemp(prefix="relay-hard-")
    t0 = time.monotonic()
    try:
        fn()
    except Fail as e:
        print("FAIL: %s" % e, flush=True)
        for r in rt.RELAYS:
            print("--- last lines of %s" % os.path.basename(r.log_path))
            print("\n".join(r.text().splitlines()[-25:]), flush=True)
        return 1
    finally:
        rt.kill_all()
        shutil.rmtree(rt.TMP, ignore_errors=True)
    print("PASS %s in %.1fs" % (rt.ARGS.case, time.monotonic() - t0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
