"""Built-in health-check protocols run by Marathon: HTTP, HTTPS and TCP.

Registered through the `marathon_health_checkers` hook like any plugin's.
Probes are plain trio sockets with h11 parsing the response: a probe costs a
connect, one request and a status line, so thousands of checks a second fit
on one core.  HTTPS does not verify certificates or hostnames (SPEC.md 6.2).
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
from dataclasses import dataclass

import h11
import trio

from ..hookspecs import CheckResult, CheckTarget, hookimpl
from ..models.app import HealthCheck

MAX_BODY = 64 * 1024


@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int
    reason: str
    content_type: str
    body: bytes


def _insecure_context() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


_TLS = _insecure_context()


_RESOLVED: dict[str, tuple[float, tuple[int, str]]] = {}
RESOLVE_TTL_SECONDS = 60.0


async def resolve(host: str) -> tuple[int, str]:
    """(address family, address) of `host`, cached for a minute.

    Probes connect to the same few hosts thousands of times a second: resolving
    each time (in a worker thread, as name lookups must) would cost more than
    the probe itself.
    """
    try:
        addr = ipaddress.ip_address(host)
        return (socket.AF_INET6 if addr.version == 6 else socket.AF_INET, host)
    except ValueError:
        pass
    now = trio.current_time()
    cached = _RESOLVED.get(host)
    if cached is not None and now - cached[0] < RESOLVE_TTL_SECONDS:
        return cached[1]
    infos = await trio.socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    family, _, _, _, sockaddr = infos[0]
    result = (int(family), str(sockaddr[0]))
    _RESOLVED[host] = (now, result)
    return result


async def connect(host: str, port: int) -> trio.SocketStream:
    """A TCP connection on a plain socket (no happy-eyeballs machinery: one
    address, one attempt; the caller bounds the time)."""
    family, address = await resolve(host)
    sock = trio.socket.socket(family, socket.SOCK_STREAM)
    try:
        await sock.connect((address, port))
    except BaseException:
        sock.close()
        raise
    return trio.SocketStream(sock)


async def http_get(host: str, port: int, path: str, *, tls: bool = False, want_body: bool = False) -> HttpResponse:
    """One `GET` over a fresh connection; the caller bounds the time.

    Raises OSError/h11 errors on connection or protocol failures.  Returns the
    first final response (1xx informational responses are returned too, as
    their own status, so callers can apply `ignoreHttp1xx`).
    """
    stream: trio.abc.Stream = await connect(host, port)
    if tls:
        stream = trio.SSLStream(stream, _TLS, server_hostname=host)
    try:
        conn = h11.Connection(h11.CLIENT)
        request = h11.Request(
            method="GET",
            target=path or "/",
            headers=[("Host", f"{host}:{port}"), ("User-Agent", "marathon-health"), ("Connection", "close")],
        )
        await stream.send_all(conn.send(request) + conn.send(h11.EndOfMessage()))
        response: h11.Response | h11.InformationalResponse | None = None
        body = bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await stream.receive_some(16384)
                conn.receive_data(data)
                continue
            if isinstance(event, h11.InformationalResponse):
                return HttpResponse(event.status_code, event.reason.decode(errors="replace"), "", b"")
            if isinstance(event, h11.Response):
                response = event
                if not want_body:
                    break
            elif isinstance(event, h11.Data):
                if len(body) < MAX_BODY:
                    body += event.data[: MAX_BODY - len(body)]
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                break
        assert response is not None
        ctype = next((v.decode(errors="replace") for k, v in response.headers if k == b"content-type"), "")
        return HttpResponse(response.status_code, response.reason.decode(errors="replace"), ctype, bytes(body))
    finally:
        with trio.CancelScope(shield=True):
            await stream.aclose()


class HttpChecker:
    """HTTP(S): healthy on 200-399; 1xx ignored when `ignoreHttp1xx`."""

    def __init__(self, tls: bool) -> None:
        self.tls = tls

    async def check(self, target: CheckTarget, check: HealthCheck) -> CheckResult:
        if target.port is None:
            return CheckResult(False, "no port to check")
        path = check.path if isinstance(check.path, str) else "/"
        try:
            with trio.fail_after(check.timeout_seconds):
                r = await http_get(target.host, target.port, path, tls=self.tls)
        except trio.TooSlowError:
            return CheckResult(False, f"Request timed out after {check.timeout_seconds} seconds")
        except (OSError, h11.ProtocolError, trio.BrokenResourceError, ssl.SSLError) as exc:
            return CheckResult(False, f"{type(exc).__name__}: {exc}")
        if 100 <= r.status < 200 and check.ignore_http1xx is True:
            return CheckResult(None)
        if 200 <= r.status < 400:
            return CheckResult(True)
        return CheckResult(False, f"{r.status} {r.reason}".strip())


class TcpChecker:
    """TCP: healthy iff a connection opens within the timeout."""

    async def check(self, target: CheckTarget, check: HealthCheck) -> CheckResult:
        if target.port is None:
            return CheckResult(False, "no port to check")
        try:
            with trio.fail_after(check.timeout_seconds):
                stream = await connect(target.host, target.port)
                await stream.aclose()
        except trio.TooSlowError:
            return CheckResult(False, f"Connection timed out after {check.timeout_seconds} seconds")
        except OSError as exc:
            return CheckResult(False, f"{type(exc).__name__}: {exc}")
        return CheckResult(True)


@hookimpl
def marathon_health_checkers() -> dict[str, object]:
    return {"HTTP": HttpChecker(tls=False), "HTTPS": HttpChecker(tls=True), "TCP": TcpChecker()}
