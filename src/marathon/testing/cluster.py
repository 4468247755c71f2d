"""A master and `marathon agent` processes, each in its own network namespace.

    with TestNetwork() as net:
        c = Cluster(tmp_path, net)
        c.start_master()
        c.add_agent("a1", attributes="zone:a")
        c.wait_registered(1)
        ...
        c.close()

Every process is started by `Cluster` and stopped by it, by PID.  Tasks are
counted inside each agent's namespace from /proc (`processes`, `count`: the
tasks of an app whose `env` has `TEST_MARK=<marker>`), never only through
the API.  Used by the cluster tests and the cluster benchmarks.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from . import terminate, wait_for
from .netns import Host, TestNetwork

SECRET = "cluster-test-secret-0123456789"
MASTER_PORT = 8080


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


class Proc:
    """One process in a namespace, its log in a file."""

    def __init__(self, host: Host, argv: list[str], log: Path) -> None:
        self.host, self.argv, self.log_path = host, argv, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        with open(self.log_path, "ab") as out:
            self.proc = self.host.run([sys.executable, "-m", "marathon", *self.argv], stdout=out,
                                      stderr=subprocess.STDOUT)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc is not None:
            terminate(self.proc, timeout)
        self.proc = None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""


class Cluster:
    def __init__(self, tmp: Path, net: TestNetwork, *, master_args: Sequence[str] = (),
                 heartbeat_ms: int = 500, unreachable_ms: int = 5000) -> None:
        self.tmp, self.net = tmp, net
        self.secret_file = tmp / "agent.secret"
        self.secret_file.write_text(SECRET + "\n")
        os.chmod(self.secret_file, 0o600)
        self.master_host = net.add_host("m1")
        self.master = Proc(self.master_host, [
            "serve", "--http_address", self.master_host.ip, "--http_port", str(MASTER_PORT),
            "--hostname", self.master_host.ip, "--data_dir", str(tmp / "master"), "--master", "agents",
            "--agent_secret_file", str(self.secret_file), "--insecure_no_auth", "--logging_level", "debug",
            "--agent_heartbeat_interval", str(heartbeat_ms), "--agent_unreachable_timeout", str(unreachable_ms),
            "--reconciliation_initial_delay", "3600000", "--scale_apps_initial_delay", "3600000",
            *master_args,
        ], tmp / "master.log")
        self.agents: dict[str, Proc] = {}
        self._client: httpx.Client | None = None

    @property
    def url(self) -> str:
        return f"http://{self.master_host.ip}:{MASTER_PORT}"

    @property
    def client(self) -> httpx.Client:
        if self._client is None:
            self._client = httpx.Client(base_url=self.url, timeout=30.0)
        return self._client

    def start_master(self) -> None:
        self.master.start()
        wait_for(self._master_up, timeout=60, message="the master to answer /ping")

    def _master_up(self) -> bool:
        if not self.master.alive():
            raise RuntimeError(f"the master exited:\n{self.master.log()[-5000:]}")
        try:
            return self.client.get("/ping").status_code == 200
        except httpx.HTTPError:
            return False

    def add_agent(self, name: str, *, attributes: str = "", resources: str = "cpus:4;mem:2048;disk:1000",
                  ports: str = "21000-21099", extra: Sequence[str] = ()) -> Proc:
        host = self.net.add_host(name)
        argv = ["agent", "--master", self.url, "--secret_file", str(self.secret_file),
                "--work_dir", str(self.tmp / name), "--hostname", host.ip, "--http_port", "5051",
                "--resources", resources, "--ports", ports, "--logging_level", "debug", *extra]
        if attributes:
            argv += ["--attributes", attributes]
        agent = Proc(host, argv, self.tmp / f"{name}.log")
        self.agents[name] = agent
        return agent.start()

    def agent_views(self) -> list[dict[str, Any]]:
        return self.client.get("/v2/agents").json()["agents"]

    def wait_registered(self, count: int) -> None:
        wait_for(lambda: sum(1 for a in self.agent_views() if a["state"] == "REGISTERED") == count,
                 timeout=60, message=f"{count} agents registered")

    def tasks(self, app_id: str) -> list[dict[str, Any]]:
        return self.client.get(f"/v2/apps{app_id}/tasks").json()["tasks"]

    def running(self, app_id: str) -> list[dict[str, Any]]:
        return [t for t in self.tasks(app_id) if t["state"] == "TASK_RUNNING"]

    def deployments(self) -> list[dict[str, Any]]:
        return self.client.get("/v2/deployments").json()

    def processes(self, marker: str) -> dict[str, set[int]]:
        """Agent name -> pids of the live processes in its namespace whose
        environment holds `TEST_MARK=<marker>` (set in the app's env)."""
        return {name: live_marked(agent, marker) for name, agent in self.agents.items()}

    def count(self, marker: str) -> int:
        return sum(len(p) for p in self.processes(marker).values())

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
        for agent in self.agents.values():
            agent.stop()
        self.master.stop()


def live_marked(agent: Proc, marker: str) -> set[int]:
    """Live processes in `agent`'s namespace (not the agent itself) whose
    environment holds `TEST_MARK=<marker>`."""
    needle = f"TEST_MARK={marker}".encode()
    own = agent.proc.pid if agent.proc is not None else None
    return {pid for pid in agent.host.pids() if pid != own and needle in _environ(pid) and _alive(pid)}


def _environ(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return f.read()
    except OSError:
        return b""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False
