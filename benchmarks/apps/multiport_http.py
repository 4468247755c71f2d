"""A tiny HTTP responder on a whole port range (for health-check load benchmarks).

`python multiport_http.py 31000 32000 COUNT_FILE` listens on 127.0.0.1 on
every port of the range and answers every request `200 ok`, closing the
connection; the number of requests answered so far is rewritten to
COUNT_FILE twice a second.  One
trio process stands in for the thousand task processes a benchmark would
otherwise need, so the measured cost is Marathon's, not the machine's.
"""

import os
import sys

import trio

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"


answered = 0


async def handle(stream: trio.SocketStream) -> None:
    global answered
    try:
        async with stream:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = await stream.receive_some(4096)
                if not chunk:
                    return
                data += chunk
            await stream.send_all(RESPONSE)
            answered += 1
    except (trio.BrokenResourceError, OSError):
        pass


async def report(path: str) -> None:
    while True:
        await trio.Path(path + ".tmp").write_text(str(answered))
        os.replace(path + ".tmp", path)
        await trio.sleep(0.5)


async def main(lo: int, hi: int, count_file: str) -> None:
    listeners = []
    for port in range(lo, hi + 1):
        listeners.extend(await trio.open_tcp_listeners(port, host="127.0.0.1"))
    print(f"listening {lo}-{hi}", flush=True)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(report, count_file)
        await trio.serve_listeners(handle, listeners)


if __name__ == "__main__":
    trio.run(main, int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
