"""`marathon lb haproxy` end to end: a real Marathon, real tasks, a real haproxy.

Each test starts `marathon serve` (private data dir and host-port range), an
app of `python3 -m http.server` tasks bound to 127.0.0.1, and `marathon lb
haproxy --watch` as a subprocess that writes the config and starts/reloads
haproxy.  Traffic goes through haproxy on 127.0.0.1:<service port>; every
task serves a file `whoami` holding its port, so we can tell which task
answered.  Teardown stops the lb process and every haproxy it started by PID
(re-reading the pidfile, which haproxy rewrites on each reload).
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from marathon.testing import free_low_port, pid_alive, wait_for

pytestmark = pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed (scripts/install-system-deps.sh)")

CMD = "echo $PORT0 > whoami && exec python3 -m http.server $PORT0 --bind 127.0.0.1"


def get(port: int, path: str = "/whoami", host: str | None = None, timeout: float = 2.0) -> tuple[int, str]:
    """One request on a new connection (so haproxy balances each one)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Host": host} if host else {})
        r = conn.getresponse()
        return r.status, r.read().decode().strip()
    finally:
        conn.close()


def answers(port: int, **kw) -> str | None:
    try:
        status, body = get(port, **kw)
    except (OSError, http.client.HTTPException):
        return None
    return body if status == 200 else None


def service_ports(n: int, avoid: str) -> list[int]:
    """Free ports below the ephemeral range and outside the server's agent port range.

    Below the ephemeral range so that a connection to a port nobody listens on
    (an app left out of the config) is refused rather than connected to itself.
    """
    low, high = map(int, avoid.split("-"))
    out: list[int] = []
    while len(out) < n:
        out.append(free_low_port(avoid={*range(low, high + 1), *out}))
    return out


class LoadBalancer:
    """`marathon lb haproxy --watch` and the haproxy it manages, stopped by PID."""

    def __init__(self, work: Path, marathon_url: str, http_port: int) -> None:
        self.work = work
        self.work.mkdir(parents=True, exist_ok=True)
        self.config = work / "haproxy.cfg"
        self.pidfile = work / "haproxy.pid"
        self.socket = work / "admin.sock"
        self.log_path = work / "lb.log"
        self.marathon_url = marathon_url
        self.http_port = http_port
        self.proc: subprocess.Popen | None = None
        self.seen_pids: set[int] = set()

    def args(self) -> list[str]:
        return ["--marathon", self.marathon_url, "--config-file", str(self.config), "--bind", "127.0.0.1",
                "--http-port", str(self.http_port), "--pidfile", str(self.pidfile), "--socket", str(self.socket)]

    def start(self) -> LoadBalancer:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "marathon", "lb", "haproxy", "--watch", "--debounce-seconds", "0.2",
                 "--resync-seconds", "5", *self.args()],
                stdout=log, stderr=subprocess.STDOUT,
            )
        return self

    def haproxy_pids(self) -> list[int]:
        """Re-read every time: haproxy rewrites its pidfile on each reload."""
        try:
            pids = [int(w) for w in self.pidfile.read_text().split()]
        except (FileNotFoundError, ValueError):
            return []
        self.seen_pids.update(pids)
        return [p for p in pids if pid_alive(p)]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def servers(self) -> list[str]:
        try:
            return [line.split()[2] for line in self.config.read_text().splitlines() if line.strip().startswith("server ")]
        except FileNotFoundError:
            return []

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.haproxy_pids()
        for pid in self.seen_pids:
            if pid_alive(pid):
                os.kill(pid, signal.SIGTERM)
        for pid in self.seen_pids:
            try:
                wait_for(lambda p=pid: not pid_alive(p), timeout=5, message=f"haproxy {pid} to stop")
            except TimeoutError:
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def lb_env(marathon_factory, tmp_path) -> Iterator:
    m = marathon_factory()
    m.start()
    names = ("web", "site", "bad", "busy", "http")
    ports = dict(zip(names, service_ports(len(names), m.agent_ports), strict=True))
    balancer = LoadBalancer(tmp_path / "lb", m.url, ports["http"])
    try:
        yield m, balancer, ports
    finally:
        balancer.stop()
        if os.environ.get("MARATHON_TEST_SHOW_LOG"):
            print(balancer.log())


def post_app(m, app_id: str, port: int, instances: int, labels: dict | None = None) -> None:
    body = {"id": app_id, "cmd": CMD, "cpus": 0.1, "mem": 32, "instances": instances,
            "portDefinitions": [{"port": port}], "labels": labels or {}}
    r = m.client.post("/v2/apps", json=body)
    assert r.status_code == 201, r.text


def task_ports(m, app_id: str, n: int) -> set[str]:
    def ready() -> set[str] | None:
        tasks = m.running_tasks(app_id)
        ports = {str(t["ports"][0]) for t in tasks}
        return ports if len(tasks) == n and all(answers(int(p)) == p for p in ports) else None

    return wait_for(ready, timeout=120, message=f"{n} serving tasks of {app_id}")


def test_traffic_reaches_every_task_and_scaling_reloads_without_failed_requests(lb_env):
    m, balancer, ports = lb_env
    post_app(m, "/web", ports["web"], 2)
    expected = task_ports(m, "/web", 2)
    balancer.start()
    wait_for(lambda: len(balancer.servers()) == 2 and balancer.haproxy_pids(), timeout=20,
             message=f"haproxy running with 2 servers; lb log:\n{balancer.log()}")
    (first_pid,) = balancer.haproxy_pids()
    wait_for(lambda: answers(ports["web"]), timeout=10, message="haproxy to proxy")
    served = Counter(answers(ports["web"]) for _ in range(20))
    assert set(served) == expected and min(served.values()) >= 5, served  # round robin over both tasks

    # Scale to 3 while a client keeps making requests through haproxy.
    results: Counter = Counter()
    errors: list[str] = []
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            try:
                status, body = get(ports["web"])
                results[body if status == 200 else f"HTTP {status}"] += 1
                if status != 200:
                    errors.append(f"HTTP {status}")
            except (OSError, http.client.HTTPException) as exc:  # counted: the thread must not die silently
                results["error"] += 1
                errors.append(repr(exc))

    thread = threading.Thread(target=hammer, daemon=True)
    thread.start()
    try:
        time.sleep(0.3)
        assert m.client.put("/v2/apps/web", json={"instances": 3}).status_code == 200
        expected = task_ports(m, "/web", 3)
        wait_for(lambda: len(balancer.servers()) == 3, timeout=20, message=f"a third server; lb log:\n{balancer.log()}")
        wait_for(lambda: balancer.haproxy_pids() and balancer.haproxy_pids() != [first_pid], timeout=10,
                 message="haproxy to be reloaded")
        wait_for(lambda: all(results[p] for p in expected), timeout=10, message=f"traffic to all 3 tasks: {results}")
        time.sleep(0.5)
    finally:
        stop.set()
        thread.join(10)
    total = sum(results.values())
    print(f"requests during the reload: {total}, failed: {len(errors)}")
    assert errors == [], f"{len(errors)} of {total} requests failed during the reload: {errors[:5]}"
    assert total > 50 and set(results) == expected
    # The old haproxy handed its sockets over and went away: no stale process.
    wait_for(lambda: not pid_alive(first_pid), timeout=10, message=f"old haproxy {first_pid} to exit")
    assert len(balancer.haproxy_pids()) == 1
    assert "balance roundrobin" in balancer.config.read_text()


def test_vhosts_route_by_host_and_invalid_configs_are_never_applied(lb_env, tmp_path, request):
    m, balancer, ports = lb_env
    post_app(m, "/site", ports["site"], 1, labels={"HAPROXY_0_VHOST": "site.example.test"})
    post_app(m, "/web", ports["web"], 1)
    (site_port,) = task_ports(m, "/site", 1)
    (web_port,) = task_ports(m, "/web", 1)
    balancer.start()
    wait_for(lambda: answers(ports["http"], host="Site.Example.Test:80") == site_port, timeout=20,
             message=f"vhost routing through haproxy; lb log:\n{balancer.log()}")
    assert get(ports["http"], host="other.example.test")[0] == 503
    assert answers(ports["site"]) == site_port and answers(ports["web"]) == web_port
    (pid,) = balancer.haproxy_pids()
    good = balancer.config.read_text()

    # An app whose label makes an invalid directive, and one whose service port
    # another process holds (haproxy -c cannot see that; a reload would fail):
    # both reported and left out, nothing applied for them.
    holder = socket.create_server(("127.0.0.1", ports["busy"]))
    request.addfinalizer(holder.close)  # held to the end: freeing it would let /busy in
    post_app(m, "/bad", ports["bad"], 1, labels={"HAPROXY_0_BALANCE": "bogus"})
    post_app(m, "/busy", ports["busy"], 1)
    wait_for(lambda: "left out apps /bad,/busy" in balancer.log(), timeout=20,
             message=f"the rejection; lb log:\n{balancer.log()}")
    assert "bogus" not in balancer.config.read_text() and answers(ports["bad"]) is None
    assert balancer.haproxy_pids() == [pid] and balancer.config.read_text() == good
    assert answers(ports["web"]) == web_port

    # Later valid updates still apply.
    assert m.client.put("/v2/apps/web", json={"instances": 2}).status_code == 200
    web_ports = task_ports(m, "/web", 2)
    wait_for(lambda: {answers(ports["web"]) for _ in range(6)} == web_ports, timeout=20,
             message=f"the second /web task behind haproxy; lb log:\n{balancer.log()}")
    assert "bogus" not in balancer.config.read_text()

    # A plugin generator that renders garbage: rejected by `haproxy -c`, the live
    # config and the running haproxy stay as they are.
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "garbage_lb.py").write_text(
        "from marathon.hookspecs import hookimpl\n\n"
        "class Garbage:\n"
        "    name = 'garbage'\n\n"
        "    def render(self, apps, tasks, options):\n"
        "        return 'frontend !!!\\n    this is not haproxy\\n'\n\n"
        "@hookimpl\n"
        "def marathon_lb_generators():\n"
        "    return {'garbage': Garbage()}\n"
    )
    conf = tmp_path / "plugins.json"
    conf.write_text(json.dumps({"plugins": {"garbage": {"implementation": "garbage_lb"}}}))
    live, live_pids = balancer.config.read_text(), balancer.haproxy_pids()
    r = subprocess.run(
        [sys.executable, "-m", "marathon", "lb", "garbage", *balancer.args(),
         "--plugin-dir", str(plugins), "--plugin-conf", str(conf)],
        capture_output=True, text=True, timeout=60,
    )
    assert r.returncode == 1, r.stderr
    assert "nothing applied" in r.stderr
    assert balancer.config.read_text() == live and balancer.haproxy_pids() == live_pids
    assert answers(ports["http"], host="site.example.test") == site_port

    # Without --config-file the config is only printed (nothing validates it).
    r = subprocess.run([sys.executable, "-m", "marathon", "lb", "haproxy", "--marathon", m.url,
                        "--http-port", str(ports["http"])], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "frontend marathon_http_in" in r.stdout and "balance bogus" in r.stdout
