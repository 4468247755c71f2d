"""Several masters on a ZooKeeper ensemble, with `marathon agent` machines,
each in its own network namespace (CLUSTER.md 4, docs/ha.md).

    with TestNetwork() as net:
        ha = HACluster(tmp_path, net, masters=3)
        ha.start()                      # the ensemble, then the masters
        ha.add_agent("a1")
        ha.wait_registered(1)
        leader = ha.leader()            # "m2"
        ha.masters[leader].kill9()
        ...
        ha.close()

The ensemble runs in a namespace of its own ("zk"), so a master can be cut
off from ZooKeeper alone (`Host.partition`).  Agents find the leader
through ZooKeeper (`--master zk://...`).  Every process is started here and
stopped here by PID; tasks are counted in the agents' namespaces from
/proc, as in `testing.cluster`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from . import wait_for
from .cluster import SECRET, Proc, live_marked
from .netns import Host, TestNetwork
from .zookeeper import Ensemble

MASTER_PORT = 8080
_EPOCH = re.compile(r"command_(accepted|refused) type=(\w+) epoch=(\d+)")


class HACluster:
    def __init__(self, tmp: Path, net: TestNetwork, *, masters: int = 3, zk_nodes: int = 3,
                 session_ms: int = 4000, heartbeat_ms: int = 500, unreachable_ms: int = 30000,
                 master_args: Sequence[str] = ()) -> None:
        self.tmp, self.net = tmp, net
        self.secret_file = tmp / "agent.secret"
        self.secret_file.write_text(SECRET + "\n")
        os.chmod(self.secret_file, 0o600)
        self.zk_host = net.add_host("zk")
        self.ensemble = Ensemble(tmp / "zk", size=zk_nodes, address=self.zk_host.ip, host=self.zk_host)
        self.zk_url = f"zk://{self.ensemble.hosts}/marathon"
        self.session_ms = session_ms
        self.masters: dict[str, Proc] = {}
        self.master_hosts: dict[str, Host] = {}
        for i in range(1, masters + 1):
            name = f"m{i}"
            host = self.master_hosts[name] = net.add_host(name)
            self.masters[name] = Proc(host, [
                "serve", "--http_address", host.ip, "--http_port", str(MASTER_PORT), "--hostname", host.ip,
                "--data_dir", str(tmp / name), "--master", "agents", "--zk", self.zk_url,
                "--zk_session_timeout", str(session_ms), "--agent_secret_file", str(self.secret_file),
                "--insecure_no_auth", "--logging_level", "debug",
                "--agent_heartbeat_interval", str(heartbeat_ms), "--agent_unreachable_timeout", str(unreachable_ms),
                "--reconciliation_initial_delay", "3600000", "--scale_apps_initial_delay", "3600000",
                *master_args,
            ], tmp / f"{name}.log")
        self.agents: dict[str, Proc] = {}
        self._clients: dict[str, httpx.Client] = {}

    # -- processes --

    def start(self) -> None:
        self.ensemble.start()
        for proc in self.masters.values():
            proc.start()
        for name in self.masters:
            wait_for(lambda name=name: self._up(name), timeout=60, message=f"master {name} to answer /ping")
        self.wait_leader()

    def _up(self, name: str) -> bool:
        proc = self.masters[name]
        if not proc.alive():
            raise RuntimeError(f"master {name} exited:\n{proc.log()[-5000:]}")
        try:
            return self.client(name).get("/ping").status_code == 200
        except httpx.HTTPError:
            return False

    def add_agent(self, name: str, *, resources: str = "cpus:8;mem:4096;disk:1000",
                  ports: str = "21000-21999", by_list: bool = False, extra: Sequence[str] = ()) -> Proc:
        """An agent that finds the leader in ZooKeeper, or (`by_list`) by
        trying every master's URL and following the standbys' 307s."""
        host = self.net.add_host(name)
        master = ",".join(self.url(m) for m in self.masters) if by_list else self.zk_url
        argv = ["agent", "--master", master, "--secret_file", str(self.secret_file),
                "--work_dir", str(self.tmp / name), "--hostname", host.ip, "--http_port", "5051",
                "--resources", resources, "--ports", ports, "--logging_level", "debug", *extra]
        agent = Proc(host, argv, self.tmp / f"{name}.log")
        self.agents[name] = agent
        return agent.start()

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        for agent in self.agents.values():
            agent.stop()
        for master in self.masters.values():
            master.stop()
        self.ensemble.close()

    # -- the API --

    def url(self, name: str) -> str:
        return f"http://{self.master_hosts[name].ip}:{MASTER_PORT}"

    def client(self, name: str) -> httpx.Client:
        if name not in self._clients:
            self._clients[name] = httpx.Client(base_url=self.url(name), timeout=30.0)
        return self._clients[name]

    def name_of(self, address: str) -> str | None:
        for name, host in self.master_hosts.items():
            if address == f"{host.ip}:{MASTER_PORT}":
                return name
        return None

    def leaders(self) -> dict[str, str | None]:
        """What each live master says leads (its name), None when it knows none."""
        out: dict[str, str | None] = {}
        for name, proc in self.masters.items():
            if not proc.alive():
                continue
            try:
                r = self.client(name).get("/v2/leader", timeout=5)
            except httpx.HTTPError:
                out[name] = None
                continue
            out[name] = self.name_of(r.json()["leader"]) if r.status_code == 200 else None
        return out

    def serving_leader(self) -> str | None:
        """The master whose /v2/info says it is elected, if exactly one does."""
        elected = []
        for name, proc in self.masters.items():
            if not proc.alive():
                continue
            try:
                if self.client(name).get("/v2/info", timeout=5).json().get("elected"):
                    elected.append(name)
            except (httpx.HTTPError, ValueError):
                pass
        return elected[0] if len(elected) == 1 else None

    def wait_leader(self, *, other_than: str | None = None, timeout: float = 60) -> str:
        def found() -> str | None:
            leader = self.serving_leader()
            return leader if leader is not None and leader != other_than else None

        return wait_for(found, timeout=timeout, message="one serving leader")

    def leader(self) -> str:
        return self.wait_leader()

    def standby(self) -> str:
        leader = self.leader()
        return next(n for n, p in self.masters.items() if n != leader and p.alive())

    def any_client(self) -> httpx.Client:
        return self.client(self.leader())

    def agent_views(self) -> list[dict[str, Any]]:
        return self.any_client().get("/v2/agents").json()["agents"]

    def wait_registered(self, count: int, timeout: float = 60) -> None:
        wait_for(lambda: sum(1 for a in self.agent_views() if a["state"] == "REGISTERED") == count,
                 timeout=timeout, message=f"{count} agents registered")

    def tasks(self, app_id: str) -> list[dict[str, Any]]:
        return self.any_client().get(f"/v2/apps{app_id}/tasks").json()["tasks"]

    def running(self, app_id: str) -> list[dict[str, Any]]:
        return [t for t in self.tasks(app_id) if t["state"] == "TASK_RUNNING"]

    def deployments(self) -> list[dict[str, Any]]:
        return self.any_client().get("/v2/deployments").json()

    # -- what really happened --

    def processes(self, marker: str) -> dict[str, set[int]]:
        """Agent name -> pids of live processes whose env has TEST_MARK=<marker>."""
        return {name: live_marked(agent, marker) for name, agent in self.agents.items()}

    def count(self, marker: str) -> int:
        return sum(len(p) for p in self.processes(marker).values())

    def task_pids(self, marker: str) -> dict[str, int]:
        """Task id -> the pid of its process as /proc shows it (by the
        task's MESOS_TASK_ID): the session leader, since a task runs in a
        session of its own and its children (a shell's `sleep`) carry the
        same environment."""
        out: dict[str, int] = {}
        for pids in self.processes(marker).values():
            for pid in pids:
                try:
                    with open(f"/proc/{pid}/environ", "rb") as f:
                        env = f.read().split(b"\0")
                    with open(f"/proc/{pid}/stat") as f:
                        session = int(f.read().rsplit(")", 1)[1].split()[3])
                except (OSError, ValueError, IndexError):
                    continue
                if session != pid:
                    continue
                for entry in env:
                    if entry.startswith(b"MESOS_TASK_ID="):
                        out[entry.split(b"=", 1)[1].decode()] = pid
        return out

    def agent_commands(self) -> list[tuple[str, str, str, int]]:
        """(agent, accepted|refused, type, epoch) of every command each agent logged."""
        out = []
        for name, agent in self.agents.items():
            for m in _EPOCH.finditer(agent.log()):
                out.append((name, m.group(1), m.group(2), int(m.group(3))))
        return out
