#!/usr/bin/env python3
"""Helpers for bench/relay/relay-bench.sh (loopback only).

    connrate.py echo            asyncio echo server on 127.0.0.1:0; prints
                                "port N", serves until killed
    connrate.py client PORT N C N tiny requests (connect, 5 bytes each way,
                                close) with C in flight; prints
                                "conns=N seconds=S rate=R failed=F"
"""
import asyncio
import sys
import time


async def echo_main():
    async def handle(reader, writer):
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=4096)
    print("port %d" % server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


async def client_main(port, n, concurrency):
    failed = 0
    left = n

    async def one():
        nonlocal failed, left
        while left > 0:
            left -= 1
            try:
                r, w = await asyncio.open_connection("127.0.0.1", port)
                w.write(b"ping\n")
                await w.drain()
                got = await asyncio.wait_for(r.readexactly(5), 10)
                if got != b"ping\n":
                    failed += 1
                w.close()
            except (ConnectionError, OSError, asyncio.TimeoutError,
                    asyncio.IncompleteReadError):
                failed += 1

    t0 = time.monotonic()
    await asyncio.gather(*(one() for _ in range(concurrency)))
    dt = time.monotonic() - t0
    print("conns=%d seconds=%.3f rate=%.1f failed=%d" %
          (n, dt, n / dt, failed), flush=True)


def main():
    if sys.argv[1] == "echo":
        asyncio.run(echo_main())
    elif sys.argv[1] == "client":
        asyncio.run(client_main(int(sys.argv[2]), int(sys.argv[3]),
                                int(sys.argv[4])))
    else:
        sys.exit("usage: connrate.py echo | client PORT N CONCURRENCY")


if __name__ == "__main__":
    main()
