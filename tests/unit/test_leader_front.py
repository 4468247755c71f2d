"""The HTTP front of a master (api/leader_proxy.py) as the leader while its
term is SUSPENDED: writes are refused with Retry-After, reads and the agent
protocol go on."""

from __future__ import annotations

import httpx
import trio

from marathon.api.leader_proxy import LeaderFront
from marathon.config import Config
from marathon.leadership import Leadership


async def _term_app(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": scope["path"].encode(), "more_body": False})


async def test_a_suspended_leader_refuses_writes_but_keeps_agent_streams():
    lead = Leadership(self_id="127.0.0.1:8080", self_url="http://127.0.0.1:8080", ha=True)
    lead.app = _term_app
    lead.suspended = True
    front = LeaderFront(Config(), lead, standby=_term_app)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=front), base_url="http://m") as client:
        r = await client.put("/v2/apps/a", json={"instances": 2})
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert "ZooKeeper" in r.json()["message"]
        assert r.headers["x-marathon-leader"] == "http://127.0.0.1:8080"
        assert (await client.get("/v2/apps")).status_code == 200
        r = await client.post("/internal/agents/a1/calls", content=b"")
        assert r.status_code == 200 and r.text == "/internal/agents/a1/calls"
        lead.suspended = False
        assert (await client.put("/v2/apps/a", json={"instances": 2})).status_code == 200
    await front.aclose()
    await trio.lowlevel.checkpoint()


async def test_a_request_the_end_of_a_term_breaks_is_a_503_not_a_500():
    lead = Leadership(self_id="127.0.0.1:8080", self_url="http://127.0.0.1:8080", ha=True)

    async def dying_term(scope, receive, send):
        lead.app = None  # the term ends (an abdication) while the request is served
        await send({"type": "http.response.start", "status": 500, "headers": []})
        await send({"type": "http.response.body", "body": b"Internal Server Error", "more_body": False})

    async def raising_term(scope, receive, send):
        lead.app = None
        raise RuntimeError("the store was closed under the request")

    front = LeaderFront(Config(), lead, standby=_term_app)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=front), base_url="http://m") as client:
        for term in (dying_term, raising_term):
            lead.app = term
            r = await client.post("/v2/apps", json={"id": "/a"})
            assert r.status_code == 503 and r.headers["retry-after"] == "1", r.text
            assert "Leadership changed" in r.json()["message"]
        lead.app = _term_app
        assert (await client.post("/v2/apps", json={"id": "/a"})).status_code == 200
    await front.aclose()


async def test_a_request_still_waiting_when_its_term_ends_is_answered_503(autojump_clock):
    lead = Leadership(self_id="127.0.0.1:8080", self_url="http://127.0.0.1:8080", ha=True)

    async def stuck_term(scope, receive, send):
        await trio.sleep_forever()  # e.g. waiting on a deployment service the term took down

    lead.app = stuck_term
    front = LeaderFront(Config(), lead, standby=_term_app)

    async def end_term_soon():
        await trio.sleep(5)
        lead.app = None
        lead._notify()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(end_term_soon)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=front), base_url="http://m") as client:
            r = await client.post("/v2/apps", json={"id": "/a"})
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    await front.aclose()
