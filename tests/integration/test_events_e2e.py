"""`/v2/events` over real HTTP: ordering, fields, filters, slow consumers (issue 5)."""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
from collections import Counter
from pathlib import Path

import httpx

from marathon.testing import MarathonProcess, wait_for

from .conftest import pids_matching

HEALTHSRV = Path(__file__).parent / "apps" / "healthsrv.py"


class SSEReader:
    """Reads an event stream in a thread; `events` is every (type, data) in order.

    The thread only splits frames and counts their types (cheap, so it keeps
    up with bursts of tens of thousands of events); JSON is parsed when
    `events` is read.  While a burst streams, wait on `count()`: parsing
    thousands of events in the test's thread holds the GIL the reader needs,
    and a reader that falls 1,024 events behind is cut off as too slow.
    """

    def __init__(self, url: str, params: list[tuple[str, str]] | None = None) -> None:
        self.frames: list[bytes] = []
        self.counts: Counter[bytes] = Counter()
        self._parsed: list[tuple[str, dict]] = []
        self.closed = threading.Event()
        self.connected = threading.Event()
        self._stop = False
        self._thread = threading.Thread(target=self._run, args=(url, params), daemon=True)
        self._thread.start()
        wait_for(self.connected.is_set, timeout=30, message="the stream to open")

    def _run(self, url: str, params) -> None:
        try:
            with httpx.stream("GET", url, params=params, headers={"Accept": "text/event-stream"}, timeout=None) as r:
                self.connected.set()
                buffer = b""
                for chunk in r.iter_raw():
                    if self._stop:
                        return
                    buffer += chunk
                    *frames, buffer = buffer.split(b"\n\n")
                    for f in frames:
                        if f.strip(b"\n"):
                            self.frames.append(f)
                            self.counts[f.lstrip(b"\n").split(b"\n", 1)[0]] += 1
        except httpx.HTTPError:
            pass
        finally:
            self.closed.set()

    @property
    def events(self) -> list[tuple[str, dict]]:
        for frame in self.frames[len(self._parsed):]:
            fields = dict(line.split(b": ", 1) for line in frame.strip(b"\n").split(b"\n") if b": " in line)
            self._parsed.append((fields[b"event"].decode(), json.loads(fields[b"data"])))
        return self._parsed

    def types(self) -> list[str]:
        return [t for t, _ in self.events]

    def of(self, event_type: str) -> list[dict]:
        return [d for t, d in self.events if t == event_type]

    def count(self, event_type: str) -> int:
        """How many events of this type arrived (nothing is parsed)."""
        return self.counts[b"event: " + event_type.encode()]

    def stop(self) -> None:
        self._stop = True


def in_order(seq: list[str], wanted: list[str]) -> bool:
    it = iter(seq)
    return all(any(x == w for x in it) for w in wanted)


def test_event_sequence_of_deploy_scale_failure_and_health_kill(marathon):
    reader = SSEReader(f"{marathon.url}/v2/events")
    wait_for(lambda: reader.events, timeout=30, message="the attach event")
    assert reader.events[0][0] == "event_stream_attached"
    filtered = SSEReader(f"{marathon.url}/v2/events", [("event_type", "deployment_success"), ("event_type", "app_terminated_event")])

    app = {"id": "/ev", "cmd": f"exec {sys.executable} {HEALTHSRV} $PORT0", "cpus": 0.05, "mem": 32, "instances": 1,
           "healthChecks": [{"protocol": "HTTP", "path": "/health", "intervalSeconds": 1, "timeoutSeconds": 1,
                             "maxConsecutiveFailures": 1, "gracePeriodSeconds": 30}]}
    assert marathon.client.post("/v2/apps", json=app).status_code == 201
    wait_for(lambda: reader.of("deployment_success"), timeout=60, message="deploy finished")
    assert marathon.client.put("/v2/apps/ev", json={"instances": 2}).status_code == 200
    wait_for(lambda: len(reader.of("deployment_success")) == 2, timeout=60, message="scale finished")
    wait_for(lambda: len([e for e in reader.of("health_status_changed_event") if e["alive"]]) == 2, timeout=60, message="both healthy")

    # A task fails on its own ...
    victim, other = marathon.running_tasks("/ev")
    (pid,) = wait_for(lambda: pids_matching(f"{HEALTHSRV} {victim['ports'][0]}"), timeout=30, message="victim pid")
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: [e for e in reader.of("status_update_event") if e["taskStatus"] == "TASK_FAILED"], timeout=60, message="failure event")
    # ... and the other one is killed by its health check.
    (marathon.data_dir / "agent" / "sandboxes" / other["id"] / "fail").touch()
    kill = wait_for(lambda: reader.of("unhealthy_instance_kill_event"), timeout=60, message="health kill")[0]
    assert marathon.client.delete("/v2/apps/ev").status_code == 200
    wait_for(lambda: reader.of("app_terminated_event"), timeout=60, message="app terminated")
    # The app is terminated inside the delete's step; its deployment_success
    # follows once the deployment is removed from the store.
    for stream in (reader, filtered):
        wait_for(lambda s=stream: len(s.of("deployment_success")) >= 3, timeout=60, message="delete deployment finished")

    types = reader.types()
    assert in_order(types, [
        "api_post_event", "group_change_success", "deployment_info", "instance_changed_event",
        "status_update_event", "deployment_step_success", "deployment_success",   # deploy
        "group_change_success", "deployment_info", "deployment_success",          # scale
        "failed_health_check_event", "unhealthy_instance_kill_event",              # health kill
        "group_change_success", "app_terminated_event", "deployment_success",     # delete
    ]), types
    post = reader.of("api_post_event")[0]
    assert post["appDefinition"]["id"] == "/ev" and post["uri"] == "/v2/apps" and post["clientIp"]
    running = next(e for e in reader.of("status_update_event") if e["taskStatus"] == "TASK_RUNNING")
    for field in ("slaveId", "taskId", "message", "appId", "host", "ipAddresses", "ports", "version", "timestamp"):
        assert field in running, field
    changed = reader.of("instance_changed_event")[0]
    for field in ("instanceId", "condition", "runSpecId", "agentId", "host", "runSpecVersion", "timestamp"):
        assert field in changed, field
    failed_check = reader.of("failed_health_check_event")[0]
    assert failed_check["appId"] == "/ev" and ".instance-" in failed_check["taskId"] and failed_check["healthCheck"]["protocol"] == "HTTP"
    assert kill["taskId"] == other["id"] and kill["reason"] == "FailedHealthChecks" and kill["host"]
    info = reader.of("deployment_info")[0]
    assert info["plan"]["steps"][0]["actions"][0] == {"action": "StartApplication", "app": "/ev"}
    assert all(e["timestamp"].endswith("Z") for _, e in reader.events)

    assert set(filtered.types()) <= {"deployment_success", "app_terminated_event"}
    assert filtered.types().count("deployment_success") >= 3
    reader.stop()
    filtered.stop()


def test_slow_consumer_is_cut_off_while_others_keep_streaming(tmp_path):
    m = MarathonProcess(tmp_path, args=["--master", "sim://40"])
    with m:
        good = SSEReader(f"{m.url}/v2/events")
        slow = socket.create_connection(("127.0.0.1", m.port))
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.sendall(b"GET /v2/events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
        wait_for(lambda: len(good.of("event_stream_attached")) >= 2, timeout=30, message="slow consumer attached")

        # Thousands of instances on simulated agents: tens of thousands of events.
        app = {"id": "/flood", "cmd": "sleep 1", "cpus": 0.01, "mem": 1, "instances": 6000}
        assert m.client.post("/v2/apps", json=app).status_code == 201
        wait_for(lambda: good.count("deployment_success"), timeout=120, message="the flood deployed")
        full_log = m.log_path.read_text
        wait_for(lambda: "too slow" in full_log(), timeout=60, message="the slow consumer cut off")
        assert full_log().count("too slow") == 1, "only the slow consumer is cut off"
        # The connection ends while the client is still not reading: a write
        # blocked on it is cancelled, the stream detaches at once.
        wait_for(lambda: good.count("event_stream_detached"), timeout=30, message="the detach event")

        # The slow client gets what was buffered before the cut and then the end
        # of the stream: reading it terminates, far short of the whole flood.
        slow.settimeout(30)
        received = b""
        while chunk := slow.recv(65536):
            received += chunk
        slow.close()
        assert 0 < received.count(b"event: ") < len(good.frames) / 2

        # The good consumer still streams.
        before = len(good.frames)
        assert m.client.put("/v2/apps/flood", json={"instances": 10}).status_code == 200
        wait_for(lambda: good.count("deployment_success") == 2, timeout=120, message="events after the cut")
        assert len(good.frames) > before and not good.closed.is_set()
        assert m.log_path.read_text().count("too slow") == 1, "the good consumer was cut off too"
        good.stop()
