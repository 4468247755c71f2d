"""The S5 baseline: the barest HTTP/1.1 server on trio + h11 (keep-alive, one
fixed answer), so the API's rate can be compared with the stack's ceiling on
the same machine in the same run.  `python bare_h11.py PORT`."""

import sys

import h11
import trio

BODY = b"pong"


async def handle(stream: trio.SocketStream) -> None:
    conn = h11.Connection(h11.SERVER)
    try:
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await stream.receive_some(65536)
                conn.receive_data(data)
                continue
            if isinstance(event, h11.Request):
                continue
            if isinstance(event, h11.EndOfMessage):
                out = conn.send(h11.Response(status_code=200, headers=[("content-type", "text/plain"), ("content-length", "4")]))
                out += conn.send(h11.Data(data=BODY)) + conn.send(h11.EndOfMessage())
                await stream.send_all(out)
                conn.start_next_cycle()
                continue
            return
    except (trio.BrokenResourceError, h11.RemoteProtocolError):
        return


async def main(port: int) -> None:
    print("listening", flush=True)
    await trio.serve_tcp(handle, port, host="127.0.0.1")


if __name__ == "__main__":
    trio.run(main, int(sys.argv[1]))
