"""A TLS echo client for the peer tests: sends LEN patterned bytes, reads
them back, checks them, then closes with close_notify and waits for the
server's. Usage: peer_client.py PORT CAFILE VERSION(1.2|1.3) LEN INFILE"""
import socket
import ssl
import sys

port, cafile, version, length, infile = sys.argv[1:6]
length = int(length)
data = open(infile, "rb").read()[:length]
ctx = ssl.create_default_context(cafile=cafile)
v = ssl.TLSVersion.TLSv1_3 if version == "1.3" else ssl.TLSVersion.TLSv1_2
ctx.minimum_version = v
ctx.maximum_version = v
raw = socket.create_connection(("127.0.0.1", int(port)), timeout=20)
s = ctx.wrap_socket(raw, server_hostname="localhost",
                    suppress_ragged_eofs=False)
s.sendall(data)
got = bytearray()
while len(got) < length:
    chunk = s.recv(65536)
    if not chunk:
        break
    got += chunk
if bytes(got) != data:
    print("python: echo mismatch: %d bytes" % len(got), file=sys.stderr)
    sys.exit(2)
# The server sends close_notify after the echo: recv() sees a clean end
# (a ragged EOF would raise), then unwrap() answers it.
if s.recv(1) != b"":
    print("python: data after the echo", file=sys.stderr)
    sys.exit(3)
s.unwrap()
raw.close()
print("python: ok %s %s" % (s.version() if hasattr(s, "version") else "",
                            length))
