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
