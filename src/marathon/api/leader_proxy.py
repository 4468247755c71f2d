"""The first thing every request meets: the leader serves it, a standby
forwards it (SPEC.md 11.3, CLUSTER.md 3.10).

- This process leads: the term's app answers.  While the term is
  SUSPENDED (ZooKeeper unreachable) a write is answered 503 with
  `Retry-After: 1`; reads are served from memory; the agent protocol
  (`/internal/`) goes on, so agent streams stay open (the driver holds
  what it would do until the term resumes or ends).
- A standby answers `/ping`, `/metrics`, `GET /v2/info` and
  `GET /v2/leader` itself, redirects `/v2/events` (302) and the agents'
  `/internal/` calls (307: the agent subscribes on the leader directly),
  and forwards everything else to the leader: same method, body streamed,
  `X-Marathon-Via: 1.1 <host:port>` added (a request that already carries
  ours is a loop: 502 "Detected proxying loop."), the leader's status,
  headers and streamed body returned.  A refused connection is 502
  "Connection to leader refused."; a request the leader took but did not
  answer (it went away, or the read timed out) is 503 with Retry-After.
- No leader known (an election in progress): wait up to 2.5 s (Marathon
  polls 10 times every 250 ms), then 502 "Could not determine the current
  leader".
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

import httpx
import trio

from ..config import Config
from ..leadership import Leadership
from ._http import json_response

log = logging.getLogger("marathon.api.leader_proxy")

LEADER_WAIT_SECONDS = 2.5
_HOP_HEADERS = frozenset({
    b"connection", b"host", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"te",
    b"trailer", b"transfer-encoding", b"upgrade",
})
_READS = frozenset({"GET", "HEAD", "OPTIONS"})


class LeaderFront:
    """ASGI: dispatch on leadership (see the module docstring).  `standby`
    is the small app of what a standby answers itself."""

    def __init__(self, config: Config, leadership: Leadership, standby: Any) -> None:
        self.config = config
        self.leadership = leadership
        self.standby = standby
        self.via = f"1.1 {leadership.self_id}"
        self._client: httpx.AsyncClient | None = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            cfg = self.config
            read = cfg.leader_proxy_read_timeout / 1000.0
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(read, connect=cfg.leader_proxy_connection_timeout / 1000.0),
                limits=httpx.Limits(max_connections=64, max_keepalive_connections=64),
                follow_redirects=False,
            )
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                await _lifespan(receive, send)
            return
        lead = self.leadership
        app = lead.app
        if app is not None:
            # The agent protocol (/internal/) goes on: agent streams stay
            # open while suspended, and the driver holds what it would do.
            if lead.suspended and scope["method"] not in _READS and not scope["path"].startswith("/internal/"):
                await _answer(send, 503, {"message": "This leader lost its ZooKeeper connection and does not act "
                                          "until it is back (or another master leads); retry"},
                              [(b"retry-after", b"1")], lead)
                return
            if scope["method"] in _READS:
                await app(scope, receive, send)  # served from memory: no guard on the hot path
            else:
                await _serve_term(app, scope, receive, send, lead)
            return
        path = scope["path"]
        if _local(scope["method"], path):
            await self.standby(scope, receive, send)
            return
        url = lead.leader_url()
        if url is None:
            with trio.move_on_after(LEADER_WAIT_SECONDS):
                await lead.wait_settled()
            if lead.app is not None:
                await self(scope, receive, send)
                return
            url = lead.leader_url()
        if url is None:
            await _answer(send, 502, {"message": "Could not determine the current leader"}, [], lead)
            return
        target = url.rstrip("/") + path + (("?" + scope["query_string"].decode("latin-1"))
                                           if scope.get("query_string") else "")
        if path == "/v2/events":
            await _answer(send, 302, {"message": "Redirecting to the leader"}, [(b"location", target.encode())], lead)
            return
        if path.startswith("/internal/"):
            # Agents subscribe on the leader itself; the standby holds no agent state.
            await _answer(send, 307, {"message": "Redirecting to the leader"}, [(b"location", target.encode())], lead)
            return
        await self._forward(scope, receive, send, target)

    async def _forward(self, scope: dict, receive: Any, send: Any, target: str) -> None:
        lead = self.leadership
        headers: list[tuple[bytes, bytes]] = []
        forwarded_for = None
        for name, value in scope["headers"]:
            if name == b"x-marathon-via" and any(v.strip() == self.via for v in value.decode("latin-1").split(",")):
                await _answer(send, 502, {"message": "Detected proxying loop."}, [], lead)
                return
            if name in _HOP_HEADERS:
                continue
            if name == b"x-forwarded-for":
                forwarded_for = value
                continue
            headers.append((name, value))
        client = scope.get("client")
        if client:
            addr = client[0].encode()
            forwarded_for = forwarded_for + b", " + addr if forwarded_for else addr
        if forwarded_for:
            headers.append((b"x-forwarded-for", forwarded_for))
        headers.append((b"x-marathon-via", self.via.encode()))
        headers.append((b"host", urlsplit(target).netloc.encode()))

        async def body() -> Any:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                chunk = message.get("body", b"")
                if chunk:
                    yield chunk
                if not message.get("more_body", False):
                    return

        has_body = any(name in (b"content-length", b"transfer-encoding") for name, _ in scope["headers"])
        http = self._http()
        request = http.build_request(scope["method"], target, headers=headers,
                                     content=body() if has_body else None)
        try:
            response = await http.send(request, stream=True)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError) as e:
            log.info("leader_proxy_refused target=%s error=%r", target, e)
            await _answer(send, 502, {"message": "Connection to leader refused."}, [], lead)
            return
        except httpx.HTTPError as e:
            # Sent, and no answer: the leader went away under it (an
            # abdication, a crash) or is too slow.  Its outcome is unknown
            # to us; the client asks again, of whoever leads then.
            log.info("leader_proxy_failed target=%s error=%r", target, e)
            await _answer(send, 503, {"message": f"The leader did not answer ({type(e).__name__}); retry"},
                          [(b"retry-after", b"1")], lead)
            return
        try:
            out = [(k, v) for k, v in response.headers.raw if k.lower() not in _HOP_HEADERS]
            out.append((b"x-marathon-via", self.via.encode()))
            await send({"type": "http.response.start", "status": response.status_code, "headers": out})
            try:
                async for chunk in response.aiter_raw():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            except httpx.HTTPError as e:  # the leader went away mid-answer: end it here
                log.info("leader_proxy_cut target=%s error=%r", target, e)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            with trio.CancelScope(shield=True):
                await response.aclose()


def _local(method: str, path: str) -> bool:
    """What a standby answers itself (Marathon: mm#5005)."""
    if path == "/ping" or path == "/metrics" or path.startswith("/metrics/"):
        return True
    return method in ("GET", "HEAD") and path in ("/v2/info", "/v2/leader")


async def _serve_term(app: Any, scope: dict, receive: Any, send: Any, lead: Leadership) -> None:
    """The term's app answers.  If the term ends under a request (an
    abdication, a lost session), a request that fails for it, or that still
    waits on the term's services once they are gone, is answered 503 with
    Retry-After (ask again: another master leads, or will) rather than a
    500 or no answer at all."""
    replaced = started = False
    changed = "Leadership changed while this request was served; retry"

    async def guarded_send(message: dict) -> None:
        nonlocal replaced, started
        if replaced:
            return  # the failed request's own body: not sent
        if message["type"] == "http.response.start":
            if message["status"] >= 500 and lead.app is not app:
                replaced = started = True
                await _answer(send, 503, {"message": changed}, [(b"retry-after", b"1")], lead)
                return
            started = True
        await send(message)

    with trio.CancelScope() as request_scope:
        async with trio.open_nursery() as nursery:

            async def term_end() -> None:
                while lead.app is app:
                    await lead.wait_change()
                request_scope.cancel()

            nursery.start_soon(term_end)
            try:
                await app(scope, receive, guarded_send)
            except Exception:
                if lead.app is app or started:
                    raise
                log.info("request_failed_at_term_end path=%s", scope.get("path"))
                replaced = started = True
                await _answer(send, 503, {"message": changed}, [(b"retry-after", b"1")], lead)
            nursery.cancel_scope.cancel()
    if request_scope.cancelled_caught and not started:
        log.info("request_outlived_its_term path=%s", scope.get("path"))
        await _answer(send, 503, {"message": changed}, [(b"retry-after", b"1")], lead)


async def _answer(send: Any, status: int, body: dict, headers: list[tuple[bytes, bytes]],
                  lead: Leadership) -> None:
    response = json_response(body, status)
    raw = list(response.raw_headers) + headers
    leader = lead.leader_url()
    if leader is not None:
        raw.append((b"x-marathon-leader", leader.encode()))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": response.body, "more_body": False})


async def _lifespan(receive: Any, send: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
