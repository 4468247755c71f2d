"""The outbox's ack latency record (`StatusUpdateManager.stats`, the agent's
`GET /stats`), which the S8 round-trip benchmark reads."""

from __future__ import annotations

from marathon.agent.files import files_app
from marathon.agent.updates import StatusUpdateManager, UpdateJournal
from marathon.models.instance import TaskStatus


def _status(task_id: str, state: str = "TASK_RUNNING") -> TaskStatus:
    return TaskStatus(task_id=task_id, state=state, agent_id="agent-1")


async def test_each_acknowledged_update_records_its_latency_once(tmp_path):
    sent: list[list[TaskStatus]] = []

    async def send(batch: list[TaskStatus]) -> None:
        sent.append(batch)

    mgr = StatusUpdateManager(UpdateJournal(tmp_path), send=send)
    staging, running = mgr.observe([_status("a", "TASK_STAGING"), _status("a")])
    assert mgr.stats()["ack_ms"] == {"count": 0}
    await mgr.flush()
    mgr.acknowledge([("a", staging.uuid)])
    mgr.acknowledge([("a", staging.uuid)])  # a duplicate records nothing
    await mgr.flush()
    mgr.acknowledge([("a", running.uuid)])
    stats = mgr.stats(samples=True)
    assert stats["acked"] == 2 and stats["pending"] == 0 and stats["ignored_acks"] == 1
    assert stats["ack_ms"]["count"] == 2 and len(stats["ack_ms_samples"]) == 2
    # From observation it is at least as long as from the first send.
    assert all(o >= s for o, s in zip(stats["ack_observed_ms_samples"], stats["ack_ms_samples"], strict=True))
    assert 0 <= stats["ack_ms"]["p50"] <= stats["ack_ms"]["p99"] <= stats["ack_ms"]["max"]


async def test_the_agent_endpoint_serves_stats_behind_the_secret(tmp_path):
    import httpx

    mgr = StatusUpdateManager(UpdateJournal(tmp_path), send=None)  # type: ignore[arg-type]
    app = files_app(tmp_path, b"0123456789abcdef0123", stats=mgr.stats)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://agent") as client:
        assert (await client.get("/stats")).status_code == 401
        r = await client.get("/stats", headers={"Authorization": "Bearer 0123456789abcdef0123"})
        assert r.status_code == 200 and r.json()["acked"] == 0
