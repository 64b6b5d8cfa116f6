#!/usr/bin/env python3
"""Bulk load for bench/relay/relay-bench.sh (loopback only).

    load.py sink                  listen on 127.0.0.1:0, print "port N",
                                  take one connection, read it to EOF and
                                  print "bytes=N seconds=S" (first byte to
                                  EOF: process start-up and the relay's
                                  connect and handshake are not timed)
    load.py send PORT BYTES [--tls CAFILE]
                                  send BYTES zeros to 127.0.0.1:PORT as
                                  fast as one thread can (1 MiB writes),
                                  over TLS 1.3 when --tls is given (the
                                  server's certificate is verified against
                                  CAFILE, name "localhost"); print
                                  "bytes=N seconds=S [version=V cipher=C]"

Every socket has a timeout (--timeout, 120 s), so a stuck peer ends the
run with an error instead of hanging it.
"""
import argparse
import socket
import ssl
import sys
import time

CHUNK = 1 << 20


def sink(args):
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(4)
    lsock.settimeout(args.timeout)
    print("port %d" % lsock.getsockname()[1], flush=True)
    conn, _ = lsock.accept()
    lsock.close()
    conn.settimeout(args.timeout)
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    total = 0
    t0 = None
    while True:
        n = conn.recv_into(view)
        if n == 0:
            break
        if t0 is None:
            t0 = time.monotonic()
        total += n
    dt = time.monotonic() - t0 if t0 is not None else 0.0
    conn.close()
    print("bytes=%d seconds=%.6f" % (total, dt), flush=True)


def send(args):
    sock = socket.create_connection(("127.0.0.1", args.port),
                                    timeout=args.timeout)
    extra = ""
    if args.tls:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.load_verify_locations(cafile=args.tls)
        sock = ctx.wrap_socket(sock, server_hostname="localhost")
        extra = " version=%s cipher=%s" % (sock.version(), sock.cipher()[0])
    view = memoryview(bytes(CHUNK))
    left = args.bytes
    t0 = time.monotonic()
    while left > 0:
        n = min(left, CHUNK)
        sock.sendall(view[:n])
        left -= n
    dt = time.monotonic() - t0
    if args.tls:
        # close_notify, then the relay's own once the upstream has closed:
        # a clean TLS end, as a real client would leave.
        try:
            sock = sock.unwrap()
        except (ssl.SSLError, OSError):
            pass
    sock.close()
    print("bytes=%d seconds=%.6f%s" % (args.bytes, dt, extra), flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--timeout", type=float, default=120.0)
    sub = p.add_subparsers(dest="mode", required=True)
    sub.add_parser("sink")
    s = sub.add_parser("send")
    s.add_argument("port", type=int)
    s.add_argument("bytes", type=int)
    s.add_argument("--tls", metavar="CAFILE")
    args = p.parse_args()
    if args.mode == "sink":
        sink(args)
    else:
        send(args)


if __name__ == "__main__":
    try:
        main()
    except (OSError, ssl.SSLError) as e:
        sys.exit("load.py: %s" % e)
