"""`fetch` through the whole pipeline: an app's tgz is downloaded from an
HTTP server on 127.0.0.1 and extracted in the sandbox before its `cmd`
runs; a 404 fails the task with the fetcher's message in
`lastTaskFailure` (and in /v2/queue), and its command never runs."""

from __future__ import annotations

import io
import random
import subprocess
import tarfile

import pytest

from marathon.testing import wait_for
from marathon.testing.http_files import serve_bytes

pytestmark = pytest.mark.integration


@pytest.fixture
def artifacts():
    with serve_bytes() as served:
        yield served.url, served.content


def _tgz(name: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo(name)
        info.size, info.mode = len(data), 0o755
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _ps(marker: str) -> int:
    out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    return sum(1 for line in out.splitlines() if marker in line and "ps -eo" not in line)


def test_an_artifact_is_extracted_before_the_command_and_a_404_fails_the_task(marathon, artifacts):
    base, content = artifacts
    marker = f"3600.{random.randrange(10**8, 10**9)}"
    content["/svc.tgz"] = _tgz("svc/run.sh", f"#!/bin/sh\nexec sleep {marker}\n".encode())
    c = marathon.client
    r = c.post("/v2/apps", json={"id": "/fetched", "cmd": "svc/run.sh", "cpus": 0.01, "mem": 8,
                                 "fetch": [{"uri": f"{base}/svc.tgz"}]})
    assert r.status_code == 201, r.text
    r = c.post("/v2/apps", json={"id": "/missing", "cmd": f"sleep {marker}.1", "cpus": 0.01, "mem": 8,
                                 "backoffSeconds": 1, "fetch": [{"uri": f"{base}/gone.tgz"}]})
    assert r.status_code == 201, r.text
    wait_for(lambda: _ps(f"sleep {marker}") == 1, timeout=60, message="the fetched script to run")
    task = wait_for(lambda: (c.get("/v2/apps/fetched/tasks").json()["tasks"] or [None])[0], timeout=30,
                    message="the task listed")
    assert task["state"] == "TASK_RUNNING"
    failure = wait_for(lambda: c.get("/v2/apps/missing").json()["app"].get("lastTaskFailure"), timeout=60,
                       message="the failed fetch reported")
    assert failure["state"] == "TASK_FAILED"
    assert failure["message"] == f"Failed to fetch '{base}/gone.tgz': HTTP 404 Not Found"
    queued = {q["app"]["id"]: q for q in c.get("/v2/queue").json()["queue"]}
    assert queued["/missing"]["app"]["lastTaskFailure"]["message"] == failure["message"]
    assert _ps(f"sleep {marker}.1") == 0
