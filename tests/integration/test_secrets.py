"""Secrets for real: `marathon serve --secrets_dir` (the built-in store) with
an app that asks for a secret as an env var and as a file, run as a plain
process and as a container.  The value reaches the task and appears nowhere
else: not in any API answer, not in the event stream, not in the logs."""

from __future__ import annotations

import os
import random
import threading

import httpx
import pytest

from marathon.testing import wait_for
from marathon.testing.registry import Registry, build_busybox, images_installed

pytestmark = [pytest.mark.integration, pytest.mark.containers]

VALUE = f"s3cr3t-{random.randrange(10**12, 10**13)}"


def _events(url: str, seen: list[bytes], stop: threading.Event) -> None:
    try:
        with httpx.stream("GET", f"{url}/v2/events", headers={"Accept": "text/event-stream"}, timeout=None) as r:
            for chunk in r.iter_raw():
                seen.append(chunk)
                if stop.is_set():
                    return
    except httpx.HTTPError:
        pass


def _api_dump(c: httpx.Client) -> str:
    paths = ["/v2/apps?embed=apps.tasks&embed=apps.lastTaskFailure", "/v2/tasks", "/v2/deployments",
             "/v2/queue", "/v2/groups?embed=group.apps", "/v2/apps/sec/plain/versions"]
    return "".join(c.get(p).text for p in paths)


def test_a_secret_reaches_its_task_as_env_and_file_and_nowhere_else(marathon_factory, tmp_path):
    store = tmp_path / "secrets"
    (store / "db").mkdir(parents=True)
    (store / "db" / "password").write_text(VALUE)
    m = marathon_factory("sec", args=["--enable_features", "secrets", "--secrets_dir", str(store)]).start()
    seen: list[bytes] = []
    stop = threading.Event()
    watcher = threading.Thread(target=_events, args=(m.url, seen, stop), daemon=True)
    watcher.start()
    c = m.client
    r = c.post("/v2/apps", json={
        "id": "/sec/plain", "cpus": 0.01, "mem": 16,
        "cmd": 'echo "env=$DB_PASSWORD" > seen.txt; echo "file=$(cat creds/pw)" >> seen.txt; exec sleep 3600',
        "secrets": {"pw": {"source": "/db/password"}},
        "env": {"DB_PASSWORD": {"secret": "pw"}},
        "container": {"type": "MESOS", "volumes": [{"containerPath": "creds/pw", "secret": "pw"}]}})
    assert r.status_code == 201, r.text
    r = c.post("/v2/apps", json={
        "id": "/sec/missing", "cpus": 0.01, "mem": 16, "cmd": "sleep 3600", "backoffSeconds": 60,
        "secrets": {"nope": {"source": "/db/absent"}}, "env": {"X": {"secret": "nope"}}})
    assert r.status_code == 201, r.text

    def seen_file() -> str | None:
        text = m.sandbox_text("/sec/plain", "seen.txt") or ""
        return text if text.count("\n") == 2 else None

    assert wait_for(seen_file, timeout=60, message="the task's view") == f"env={VALUE}\nfile={VALUE}\n"
    failure = wait_for(lambda: c.get("/v2/apps/sec/missing").json()["app"].get("lastTaskFailure"), timeout=60,
                       message="the unresolved secret reported")
    assert "secrets for the environment variables X" in failure["message"]
    (task,) = m.tasks("/sec/plain")
    secret_file = m.data_dir / "agent" / "sandboxes" / task["id"] / "creds" / "pw"
    assert oct(secret_file.stat().st_mode & 0o777) == "0o400"

    if not images_installed() and os.geteuid() == 0:
        with Registry(tmp_path / "registry") as reg:
            ref = reg.push(build_busybox(tmp_path / "img"), "test/busybox:1")
            r = c.post("/v2/apps", json={
                "id": "/sec/container", "cpus": 0.01, "mem": 16,
                "cmd": 'echo "env=$DB_PASSWORD file=$(cat /run/secrets/pw)" > $MESOS_SANDBOX/seen.txt; '
                       "exec sleep 3600",
                "secrets": {"pw": {"source": "/db/password"}}, "env": {"DB_PASSWORD": {"secret": "pw"}},
                "container": {"type": "MESOS", "docker": {"image": ref},
                              "volumes": [{"containerPath": "/run/secrets/pw", "secret": "pw"}]}})
            assert r.status_code == 201, r.text

            assert wait_for(lambda: m.sandbox_text("/sec/container", "seen.txt"), timeout=60, message="the container's view") == \
                f"env={VALUE} file={VALUE}\n"
            assert c.put("/v2/apps/sec/container", json={"instances": 0}).status_code == 200
            wait_for(lambda: not m.tasks("/sec/container"), timeout=60, message="the container gone")
            assert not list((m.data_dir / "agent" / "secrets").glob("*")), "its secret files removed"

    # Nowhere else: every API answer, the event stream, the server's log.
    assert c.put("/v2/apps/sec/plain", json={"instances": 2}).status_code == 200
    wait_for(lambda: len(m.tasks("/sec/plain")) == 2, timeout=60, message="a second instance")
    assert VALUE not in _api_dump(c)
    stop.set()
    assert VALUE not in b"".join(seen).decode(errors="replace")
    assert seen, "the event stream was read"
    assert VALUE not in m.log()
    # Nor on disk: the leader's state and the agent's checkpoint (the
    # task's own secret files aside).
    stored = list(m.data_dir.glob("state.db*")) + list((m.data_dir / "agent" / "checkpoint").rglob("*"))
    assert stored
    for path in stored:
        if path.is_file():
            assert VALUE.encode() not in path.read_bytes(), path
