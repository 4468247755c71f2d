"""Leadership on one machine (no ZooKeeper): Marathon's pseudo election.
`DELETE /v2/leader` ends the leader term and a new one starts from the
store, while the embedded agent (the process's, not the term's) keeps every
task: same ids, same pids, counted in /proc.  A `backup=file:///...` is
written between the terms and restores into another store."""

from __future__ import annotations

import tarfile

import pytest
import trio

from marathon.storage import open_store
from marathon.storage.backup import restore_backup
from marathon.testing import wait_for

from .conftest import descendants

pytestmark = pytest.mark.integration


def test_abdication_restarts_the_term_and_keeps_every_task(marathon, tmp_path) -> None:
    c = marathon.client
    app = {"id": "/keep", "cmd": "sleep 3600", "cpus": 0.01, "mem": 8, "instances": 3, "portDefinitions": []}
    assert c.post("/v2/apps", json=app).status_code == 201
    wait_for(lambda: len(marathon.running_tasks("/keep")) == 3, timeout=60, message="3 tasks")
    ids = {t["id"] for t in marathon.running_tasks("/keep")}
    pids = {p for p in descendants(marathon.proc.pid) if "sleep 3600" in open(f"/proc/{p}/cmdline", "rb").read()
            .replace(b"\0", b" ").decode()}
    assert len(pids) == 3

    backup = tmp_path / "backup.tar"
    r = c.delete("/v2/leader", params={"backup": f"file://{backup}"})
    assert (r.status_code, r.json()) == (200, {"message": "Leadership abdicated"})
    wait_for(lambda: "leading epoch=1" in marathon.log().split("leadership_ended", 1)[-1],
             timeout=60, message="a new term")
    assert c.get("/v2/leader").json() == {"leader": f"127.0.0.1:{marathon.port}"}
    wait_for(lambda: {t["id"] for t in marathon.running_tasks("/keep")} == ids, timeout=60,
             message="the same tasks in the new term")
    assert pids <= descendants(marathon.proc.pid)
    # The new term acts: a scale-up starts one more task.
    assert c.put("/v2/apps/keep", json={"instances": 4}).status_code == 200
    wait_for(lambda: len(marathon.running_tasks("/keep")) == 4, timeout=60, message="4 tasks")

    wait_for(backup.exists, timeout=30, message="the backup file")
    with tarfile.open(backup) as tar:
        assert tar.getnames()[0] == "manifest.json"

    async def restore() -> int:
        store = open_store("memory://")
        summary = await restore_backup(backup, store)
        assert [k async for k in _keys(store) if k.startswith("apps/")]
        return summary.keys

    assert trio.run(restore) > 0


async def _keys(store):  # type: ignore[no-untyped-def]
    for key in await store.list(""):
        yield key


def test_abdication_refuses_an_unsupported_backup_uri(marathon) -> None:
    r = marathon.client.delete("/v2/leader", params={"backup": "s3://bucket/key"})
    assert r.status_code == 422
    assert r.json()["details"][0]["path"] == "/backup"
    # Nothing happened: the same term still leads.
    assert "leadership_ended" not in marathon.log()
