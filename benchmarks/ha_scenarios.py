"""The high-availability benchmarks (BENCHMARKS.md S1-zk, S2 on ZooKeeper, S7,
and the failover / abdication times of CLUSTER.md 3.11) as plain functions
over real processes: ZooKeeper ensembles (`marathon.testing.zookeeper`) and
`marathon serve --zk` masters, every process started and stopped here by
PID.  Each returns a dict of figures and asserts correctness only, never a
speed.

    python benchmarks/ha_scenarios.py failover --trials 10
    python benchmarks/ha_scenarios.py s7 --instances 100000
    python benchmarks/ha_scenarios.py s1zk --instances 100000 --agents 2000
    python benchmarks/ha_scenarios.py s2zk --apps 1000

* `failover`: `testing.ha.HACluster` (a 3-node ensemble, 3 masters and 2
  `marathon agent` machines, each in a network namespace) with Marathon's
  default 10 s sessions; `sleep` tasks run on the agents.  Each trial kills
  the leader with SIGKILL (or asks it to abdicate, DELETE /v2/leader) and
  measures, from that moment, until a write (PUT of a probe app) is
  accepted through any live master: one thread per master, each trying
  every 20 ms.  Then it checks that the new leader lists the same task ids
  and that /proc in the agents' namespaces shows the same pids.  The
  successor's own log says where the time went: `elected ... epoch=`
  (marathon.election), `instances loaded`, `leading epoch=`
  (marathon.leadership).
* `s7`: 100,000 instances stored in ZooKeeper by a leader on simulated
  agents (`--master sim://...`), then kill -9 of that leader and
  abdications; on each successor, from its `elected` line to `leading` and
  to its first accepted write.  The successors run `--master agents`
  without agents: the stored instances' agents are RECOVERING (their tasks
  counted as running) as after a real failover before the agents
  re-subscribe, so the successor shows the same 100,000 tasks.  (A
  successor on `sim://` would have fresh simulated agents in its own
  process that know none of the tasks: its start-up reconciliation turns
  all 100,000 into TASK_LOST and relaunches them, which is a burst, not a
  failover; `successor="sim"` measures that too.)
* `s1zk` / `s2zk`: S1 and S2 with a 3-node ensemble on loopback as the
  store, a leader and a standby; `/v2/apps` is polled through the standby
  (forwarded to the leader) during the S1 burst.

Clock windows: *scheduled* and *running* from the POST (S1's poller,
`scenarios._Stamps`); *failover* / *abdication* from the SIGKILL / the
DELETE to the first accepted write; *load* from the successor's `elected`
line to its `leading` line (same machine, the wall clock of both).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import random
import re
import socket
import statistics
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import remote_scenarios
from remote_scenarios import machine_busy_s, status_kib

from marathon.testing import MarathonProcess, scenarios, wait_for
from marathon.testing.measure import cpu_seconds, peak_rss_mib
from marathon.testing.zookeeper import Ensemble

SECRET = remote_scenarios.SECRET
PROBE_APP = "/bench/probe"


# -- reading the masters' logs ---------------------------------------------------------------

_STAMP = re.compile(rb"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ", re.M)

# What a successor logs on its way to serving (leadership.py, election.py,
# services/instances.py, services/reconciler.py).
SUCCESSOR_EVENTS = {
    "elected": rb"INFO marathon\.election elected id=\S+ epoch=(\d+)",
    "instances_loaded": rb"INFO marathon\.instances instances loaded count=(\d+)",
    "reconciling": rb"INFO marathon\.reconciler reconciling tasks count=(\d+)",
    "leading": rb"INFO marathon\.leadership leading epoch=(\d+)",
}


def _wall(stamp: bytes) -> float:
    """A log line's `asctime` (local time, ms) as seconds since the epoch."""
    return datetime.datetime.strptime(stamp.decode(), "%Y-%m-%d %H:%M:%S,%f").timestamp()


def log_events(path: Path, since: float, events: dict[str, bytes] = SUCCESSOR_EVENTS,
               offset: int = 0) -> dict[str, tuple[float, str]]:
    """The first line of each event at or after `since` (wall clock, the
    log's ms resolution): event -> (time, its first group)."""
    data = path.read_bytes()[offset:]
    found: dict[str, tuple[float, str]] = {}
    for name, pattern in events.items():
        for m in re.finditer(rb"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) [^\n]*?" + pattern, data, re.M):
            at = _wall(m.group(1))
            if at >= since - 0.001:
                found[name] = (at, m.group(2).decode())
                break
    return found


def _rel(events: dict[str, tuple[float, str]], t0: float) -> dict[str, float]:
    return {name: round(at - t0, 3) for name, (at, _) in events.items()}


# -- writes through any master -----------------------------------------------------------------


class FirstWrite:
    """Until one is accepted by a leader other than `old_leader` (a URL,
    matched against the answer's X-Marathon-Leader): a PUT of the probe app
    (its label changed, so each is a real write: a new version stored)
    through each of `urls`, one thread per URL, one try every `interval` (a
    try waits for its answer).  Writes the old leader still accepted (an
    abdicating leader serves for ABDICATION_DELAY) are counted apart, the
    last one's time kept: the gap is when no leader accepted writes."""

    def __init__(self, urls: Sequence[str], *, old_leader: str | None = None, interval: float = 0.02,
                 request_timeout: float = 10.0, app_id: str = PROBE_APP) -> None:
        self.urls = list(urls)
        self.old_leader = old_leader
        self.interval = interval
        self.request_timeout = request_timeout
        self.app_id = app_id
        self.accepted: tuple[float, str] | None = None
        self.last_old: float | None = None
        self.statuses: Counter[str] = Counter()
        self._done = threading.Event()
        self._lock = threading.Lock()

    def _loop(self, url: str) -> None:
        n = 0
        with httpx.Client(base_url=url, timeout=self.request_timeout) as client:
            while not self._done.is_set():
                n += 1
                started = time.perf_counter()
                served_by = None
                try:
                    r = client.put(f"/v2/apps{self.app_id}", params={"force": "true"},
                                   json={"instances": 0, "labels": {"probe": f"{url}-{n}-{time.time()}"}})
                    status = str(r.status_code)
                    served_by = r.headers.get("x-marathon-leader")
                except httpx.HTTPError as e:
                    status = type(e).__name__
                at = time.time()
                with self._lock:
                    if status in ("200", "201") and served_by == self.old_leader:
                        status = f"{status} old leader"
                        self.last_old = max(self.last_old or at, at)
                    self.statuses[status] += 1
                    if status in ("200", "201") and self.accepted is None:
                        self.accepted = (at, served_by or url)
                        self._done.set()
                self._done.wait(max(0.0, self.interval - (time.perf_counter() - started)))

    def wait(self, timeout: float) -> tuple[float, str]:
        threads = [threading.Thread(target=self._loop, args=(u,), daemon=True, name=f"write {u}") for u in self.urls]
        for t in threads:
            t.start()
        try:
            if not self._done.wait(timeout):
                raise TimeoutError(f"no write accepted in {timeout} s through {self.urls}: {dict(self.statuses)}")
        finally:
            self._done.set()
            for t in threads:
                t.join(self.request_timeout + 5)
        assert self.accepted is not None
        return self.accepted


def first_write(urls: Sequence[str], old_leader: str | None = None,
                timeout: float = 120.0) -> tuple[float, str, dict[str, int], float | None]:
    """(when, the leader that accepted it, every answer counted, when the old
    leader last accepted one) of the first write a new leader accepted."""
    fw = FirstWrite(urls, old_leader=old_leader)
    at, by = fw.wait(timeout)
    return at, by, dict(fw.statuses), fw.last_old


def _summary(values: Sequence[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 2), "max": round(max(values), 2),
            "min": round(min(values), 2), "n": len(values)}


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# -- failover and abdication on HACluster --------------------------------------------------------


def _running_ids(client: httpx.Client, app_id: str) -> set[str]:
    r = client.get(f"/v2/apps{app_id}/tasks", timeout=10)
    r.raise_for_status()
    return {t["id"] for t in r.json()["tasks"] if t["state"] == "TASK_RUNNING"}


def failover(data_dir: Path, *, trials: int = 10, tasks: int = 20, agents: int = 2, session_ms: int = 10000,
             kinds: Sequence[str] = ("kill", "abdicate"), timeout: float = 120.0) -> dict[str, Any]:
    """`trials` kill -9s of the leader and `trials` abdications (alternating
    kinds trial by trial), each timed from the signal / the DELETE to the
    first write accepted through any live master; tasks checked untouched."""
    from marathon.testing.ha import HACluster
    from marathon.testing.netns import TestNetwork

    mark = f"fo{os.getpid()}{random.randrange(10**6)}"
    app_id = "/bench/sleepers"
    out: dict[str, Any] = {"session_ms": session_ms, "masters": 3, "agents": agents, "tasks": tasks,
                           "load_before": load_average()}
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in kinds}
    with TestNetwork() as net:
        ha = HACluster(data_dir, net, masters=3, session_ms=session_ms,
                       master_args=["--launch_tokens", "1000", "--logging_level", "info"])
        try:
            ha.start()
            for i in range(agents):
                ha.add_agent(f"a{i + 1}", extra=["--logging_level", "info", "--cgroups", "off"])
            ha.wait_registered(agents)
            leader = ha.leader()
            app = {"id": app_id, "cmd": "sleep 3600", "env": {"TEST_MARK": mark}, "cpus": 0.01, "mem": 4,
                   "instances": tasks, "portDefinitions": []}
            assert ha.client(leader).post("/v2/apps", json=app).status_code == 201
            probe = {"id": PROBE_APP, "cmd": "sleep 3600", "cpus": 0.01, "mem": 4, "instances": 0,
                     "portDefinitions": []}
            assert ha.client(leader).post("/v2/apps", json=probe).status_code == 201

            def steady() -> bool:
                return (len(ha.running(app_id)) == tasks and ha.count(mark) == tasks and not ha.deployments()
                        and all(v is not None for v in ha.leaders().values()))

            wait_for(steady, timeout=timeout, message=f"{tasks} tasks running")
            order = [k for _ in range(trials) for k in kinds]
            for n, kind in enumerate(order):
                # A steady state first: one leader every master knows, every
                # agent registered with it, every task running.
                leader = ha.wait_leader(timeout=timeout)
                wait_for(lambda leader=leader: set(ha.leaders().values()) == {leader}
                         and len(ha.leaders()) == len(ha.masters), timeout=timeout, message="every master agrees")
                ha.wait_registered(agents, timeout=timeout)
                wait_for(steady, timeout=timeout, message="steady state")
                ids_before = _running_ids(ha.client(leader), app_id)
                pids_before = ha.task_pids(mark)
                assert len(pids_before) == tasks and set(pids_before) == ids_before
                offsets = {name: p.log_path.stat().st_size for name, p in ha.masters.items()}
                load = load_average()
                t0 = time.time()
                if kind == "kill":
                    ha.masters[leader].kill9()
                else:
                    r = ha.client(leader).delete("/v2/leader")
                    assert r.status_code == 200, r.text
                live = [name for name, p in ha.masters.items() if p.alive()]
                at, by, statuses, last_old = first_write([ha.url(name) for name in live], ha.url(leader), timeout)
                successor = ha.wait_leader(other_than=leader, timeout=timeout)
                events = log_events(ha.masters[successor].log_path, t0, offset=offsets[successor])
                # The tasks: the successor lists the same ids, /proc the same pids.
                wait_for(lambda s=successor, ids=ids_before: _running_ids(ha.client(s), app_id) == ids,
                         timeout=timeout, message="the successor to list the same running tasks")
                listed = time.time()
                pids_after = ha.task_pids(mark)
                ha.wait_registered(agents, timeout=timeout)
                registered = time.time()
                run = {
                    "kind": kind, "from": leader, "to": successor, "load_avg": load,
                    "write_s": round(at - t0, 3), "write_served_by": ha.name_of(by.split("//", 1)[1]),
                    "old_leader_last_write_s": None if last_old is None else round(last_old - t0, 3),
                    "no_write_gap_s": round(at - (last_old if last_old is not None else t0), 3),
                    **{f"{k}_s": v for k, v in _rel(events, t0).items()},
                    "tasks_listed_s": round(listed - t0, 2), "agents_registered_s": round(registered - t0, 2),
                    "same_ids": True, "same_pids": pids_after == pids_before,
                    "write_statuses": statuses,
                }
                if "elected" in events:
                    run["epoch"] = int(events["elected"][1])
                    run["elected_to_write_s"] = round(at - events["elected"][0], 3)
                assert pids_after == pids_before, f"trial {n}: tasks changed {pids_before} -> {pids_after}"
                runs[kind].append(run)
                print(json.dumps(run), flush=True)
                if kind == "kill":
                    ha.masters[leader].start()
                    wait_for(lambda name=leader: ha._up(name), timeout=60, message=f"{leader} back")
            for agent in ha.agents.values():
                assert agent.alive(), "an agent exited"
        finally:
            ha.close()
    for kind, rs in runs.items():
        out[kind] = {
            "write_s": _summary([r["write_s"] for r in rs]),
            "elected_s": _summary([r["elected_s"] for r in rs if "elected_s" in r]),
            "elected_to_leading_s": _summary([r["leading_s"] - r["elected_s"] for r in rs
                                              if "leading_s" in r and "elected_s" in r]),
            "leading_to_write_s": _summary([r["write_s"] - r["leading_s"] for r in rs if "leading_s" in r]),
            "no_write_gap_s": _summary([r["no_write_gap_s"] for r in rs]),
            "agents_registered_s": _summary([r["agents_registered_s"] for r in rs]),
            "tasks_unchanged": f"{sum(r['same_pids'] for r in rs)}/{len(rs)}",
        }
    out["trials"] = runs
    out["load_after"] = load_average()
    return out


# -- masters on a loopback ensemble --------------------------------------------------------------


def zk_four_letter(address: str, port: int, word: bytes = b"srvr") -> str:
    try:
        with socket.create_connection((address, port), timeout=2) as s:
            s.sendall(word)
            data = b""
            while chunk := s.recv(4096):
                data += chunk
    except OSError:
        return ""
    return data.decode(errors="replace")


class ZkCluster:
    """A ZooKeeper ensemble on 127.0.0.1 and `marathon serve --zk` masters
    on loopback ports (no network namespaces: no real agent is needed with
    `--master sim://...`, and `--master agents` successors run without any).
    """

    def __init__(self, tmp: Path, *, zk_nodes: int = 3, heap_mb: int = 1024, session_ms: int = 10000) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        self.tmp = tmp
        self.ensemble = Ensemble(tmp / "zk", size=zk_nodes, heap_mb=heap_mb, log_level="warn")
        self.url = f"zk://{self.ensemble.hosts}/marathon"
        self.session_ms = session_ms
        self.secret_file = tmp / "agent.secret"
        self.secret_file.write_text(SECRET + "\n")
        os.chmod(self.secret_file, 0o600)
        self.masters: dict[str, MarathonProcess] = {}

    def __enter__(self) -> ZkCluster:
        self.ensemble.start(timeout=120)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        for m in self.masters.values():
            m.stop()
        self.ensemble.close()

    def start_master(self, name: str, master: str, extra: Sequence[str] = ()) -> MarathonProcess:
        """(Re)start master `name` (its data dir kept) with `--master`."""
        old = self.masters.get(name)
        if old is not None and old.proc is not None:
            raise RuntimeError(f"master {name} runs already")
        args = ["--zk", self.url, "--zk_session_timeout", str(self.session_ms), "--master", master,
                "--logging_level", "info", *extra]
        if master == "agents":
            args += ["--agent_secret_file", str(self.secret_file)]
        m = MarathonProcess(self.tmp / name, args=args)
        self.masters[name] = m
        return m.start(timeout=120)

    def info(self, name: str) -> dict[str, Any]:
        return self.masters[name].client.get("/v2/info", timeout=10).json()

    def wait_elected(self, name: str, timeout: float = 120.0) -> None:
        wait_for(lambda: self.info(name)["elected"], timeout=timeout, message=f"{name} to lead")

    def wait_knows(self, name: str, leader: str, timeout: float = 60.0) -> None:
        address = f"127.0.0.1:{self.masters[leader].port}"
        wait_for(lambda: self.info(name)["leader"] == address, timeout=timeout,
                 message=f"{name} to know {leader} leads")

    def leader(self) -> str | None:
        elected = []
        for name, m in self.masters.items():
            if m.proc is None:
                continue
            with contextlib.suppress(httpx.HTTPError, ValueError):
                if self.info(name)["elected"]:
                    elected.append(name)
        return elected[0] if len(elected) == 1 else None

    def zk_pids(self) -> list[int]:
        return [p for i in range(self.ensemble.size) if (p := self.ensemble.pid(i)) is not None]

    def zk_cpu_s(self) -> float:
        return sum(cpu_seconds(p) for p in self.zk_pids())

    def zk_stats(self) -> dict[str, Any]:
        """Node count and each node's peak RSS (MiB)."""
        out: dict[str, Any] = {"peak_rss_mib": [round(peak_rss_mib(p)) for p in self.zk_pids()]}
        for i in range(self.ensemble.size):
            host, _, port = self.ensemble.host(i).rpartition(":")
            text = zk_four_letter(host, int(port))
            m = re.search(r"Node count: (\d+)", text)
            if m:
                out["znodes"] = int(m.group(1))
                break
        return out


def _s1_app(instances: int) -> dict[str, Any]:
    return {"id": "/s1/burst", "cmd": "sleep 3600", "cpus": 1.0, "mem": 128, "instances": instances,
            "portDefinitions": [{"port": 0}]}


def _s1_flags(instances: int) -> list[str]:
    # S1's own (scenarios.s1): one launch token per instance; the periodic
    # reconciliation out of the window.
    return ["--launch_tokens", str(instances), "--reconciliation_initial_delay", "600000"]


def _sim(agents: int) -> str:
    return f"sim://{agents}?cpus=64&mem=262144"


# -- S1-zk ------------------------------------------------------------------------------------------


def s1_zk(data_dir: Path, *, instances: int = 100_000, agents: int = 2000, zk_nodes: int = 3, heap_mb: int = 1024,
          baseline: bool = True, check: bool = True, scale_to_zero: bool = True,
          timeout: float = 600.0) -> dict[str, Any]:
    """S1 with the state in a `zk_nodes`-node ensemble on loopback: a
    leader on `sim://<agents>`, a standby through which `/v2/apps` is
    polled.  Then, with `baseline`, S1 itself (SQLite) in the same run."""
    app = _s1_app(instances)
    out: dict[str, Any] = {"instances": instances, "agents": agents, "zk_nodes": zk_nodes,
                           "load_before": load_average()}
    with ZkCluster(data_dir / "zk-run", zk_nodes=zk_nodes, heap_mb=heap_mb) as c:
        leader = c.start_master("m1", _sim(agents), _s1_flags(instances))
        c.wait_elected("m1")
        standby = c.start_master("m2", _sim(agents), _s1_flags(instances))
        c.wait_knows("m2", "m1")
        assert leader.proc is not None
        zk0, busy0, own0 = c.zk_cpu_s(), machine_busy_s(), remote_scenarios._own_cpu_s()
        standby_cpu0 = cpu_seconds(standby.proc.pid) if standby.proc else 0.0
        burst = scenarios._burst(leader, app, interval=0.05, timeout=timeout, watch=standby)
        zk_cpu = c.zk_cpu_s() - zk0
        standby_cpu = (cpu_seconds(standby.proc.pid) if standby.proc else 0.0) - standby_cpu0
        out.update(burst)
        out["load_after_burst"] = load_average()
        out["scheduled_per_s"] = round(instances / burst["scheduled_s"])
        out["zk_cpu_s"] = round(zk_cpu, 1)
        out["standby_cpu_s"] = round(standby_cpu, 1)
        out["others_cpu_s"] = round(machine_busy_s() - busy0 - burst["cpu_s"] - zk_cpu - standby_cpu
                                    - (remote_scenarios._own_cpu_s() - own0), 1)
        leader.wait_deployments_done(timeout=timeout)
        out["zk"] = c.zk_stats()
        if check:
            out["check"] = scenarios.check_placement(leader, app["id"], instances, 64, 262144, app)
        if scale_to_zero:
            out["scale_to_zero_s"] = round(scenarios._scale_to_zero(leader, app["id"], timeout), 2)
        out["leader_peak_rss_mib"] = round(peak_rss_mib(leader.proc.pid))
        out["zk_after"] = c.zk_stats()
    if baseline:
        busy0 = machine_busy_s()
        base = scenarios.s1(data_dir / "sqlite", instances=instances, agents=agents, check=False, timeout=timeout)
        out["sqlite"] = {k: base[k] for k in ("scheduled_s", "running_s", "cpu_s", "peak_rss_mib", "scale_to_zero_s")}
        out["sqlite"]["api_p99_ms"] = base["api_during_burst"].get("p99_ms")
        out["sqlite"]["machine_busy_s"] = round(machine_busy_s() - busy0, 1)
        out["running_vs_sqlite"] = round(out["running_s"] / base["running_s"], 2)
        out["scheduled_vs_sqlite"] = round(out["scheduled_s"] / base["scheduled_s"], 2)
    out["load_after"] = load_average()
    return out


# -- S2 on ZooKeeper --------------------------------------------------------------------------------


def s2_zk(data_dir: Path, *, apps: int = 1000, concurrency: int = 32, group_apps: int = 10_000, agents: int = 2000,
          zk_nodes: int = 3, heap_mb: int = 1024, timeout: float = 600.0) -> dict[str, Any]:
    """S2 (`scenarios.s2_on`) with the state in a loopback ensemble: `apps`
    one-instance apps by `concurrency` concurrent POSTs to the leader, then
    (if `group_apps`) one group POST of that many apps.  ZooKeeper's CPU
    is reported as `zk_cpu_s` / `group_zk_cpu_s`."""
    out: dict[str, Any] = {"apps": apps, "concurrency": concurrency, "group_apps": group_apps,
                           "zk_nodes": zk_nodes, "load_before": load_average()}
    with ZkCluster(data_dir, zk_nodes=zk_nodes, heap_mb=heap_mb) as c:
        m = c.start_master("m1", _sim(agents), scenarios.s2_flags(apps, group_apps))
        c.wait_elected("m1")
        result = scenarios.s2_on(m, apps=apps, concurrency=concurrency, group_apps=group_apps, timeout=timeout,
                                 extra_cpu=c.zk_cpu_s)
        for key, name in (("extra_cpu_s", "zk_cpu_s"), ("group_extra_cpu_s", "group_zk_cpu_s")):
            if key in result:
                result[name] = result.pop(key)
        out.update(result)
        out["zk"] = c.zk_stats()
    out["load_after"] = load_average()
    return out


# -- S7 ---------------------------------------------------------------------------------------------


def _counts(m: MarathonProcess, app_id: str) -> dict[str, int]:
    app = m.client.get(f"/v2/apps{app_id}", timeout=60).json()["app"]
    return {k: app[k] for k in ("instances", "tasksStaged", "tasksRunning")}


def s7_zk(data_dir: Path, *, instances: int = 100_000, agents: int = 2000, zk_nodes: int = 3, heap_mb: int = 1024,
          abdications: int = 3, successor: str = "agents", profile: bool = True,
          timeout: float = 900.0) -> dict[str, Any]:
    """`instances` stored by a leader on `sim://<agents>`; then kill -9 of
    that leader and `abdications` abdications, each successor timed from
    its `elected` line to `leading` and to its first accepted write.
    `successor`: "agents" (`--master agents`, no agent connected: the
    stored agents RECOVERING) or "sim" (fresh simulated agents)."""
    app = _s1_app(instances)
    out: dict[str, Any] = {"instances": instances, "agents": agents, "zk_nodes": zk_nodes, "successor": successor,
                           "load_before": load_average()}
    successor_master = "agents" if successor == "agents" else _sim(agents)
    trials: list[dict[str, Any]] = []
    with ZkCluster(data_dir, zk_nodes=zk_nodes, heap_mb=heap_mb) as c:
        builder = c.start_master("m1", _sim(agents), _s1_flags(instances))
        c.wait_elected("m1")
        r = builder.client.post("/v2/apps", json={"id": PROBE_APP, "cmd": "sleep 3600", "cpus": 0.01, "mem": 4,
                                                  "instances": 0, "portDefinitions": []})
        assert r.status_code == 201, r.text
        builder.wait_deployments_done(timeout=60)
        t0 = time.perf_counter()
        r = builder.client.post("/v2/apps", json=app, timeout=120)
        assert r.status_code == 201, r.text
        wait_for(lambda: _counts(builder, app["id"])["tasksRunning"] >= instances, timeout=timeout, interval=0.5,
                 message=f"{instances} instances running")
        out["build_running_s"] = round(time.perf_counter() - t0, 1)
        builder.wait_deployments_done(timeout=timeout)
        out["zk"] = c.zk_stats()
        # The successors: a standby now; the builder comes back as one after its kill.
        c.start_master("m2", successor_master, _s1_flags(instances))
        c.wait_knows("m2", "m1")
        order = ["kill"] + ["abdicate"] * abdications
        for kind in order:
            leader = c.leader()
            assert leader is not None
            standbys = [n for n, m in c.masters.items() if m.proc is not None and n != leader]
            for name in standbys:
                c.wait_knows(name, leader)
            offsets = {n: c.masters[n].log_path.stat().st_size for n in standbys}
            load = load_average()
            t0w = time.time()
            if kind == "kill":
                c.masters[leader].kill()
            else:
                rr = c.masters[leader].client.delete("/v2/leader")
                assert rr.status_code == 200, rr.text
            urls = [c.masters[n].url for n in standbys]
            at, by, statuses, last_old = first_write(urls, c.masters[leader].url, timeout)
            new = wait_for(lambda leader=leader: (n := c.leader()) not in (None, leader) and n,
                           timeout=timeout, message="a new leader")
            events = log_events(c.masters[new].log_path, t0w, offset=offsets[new])
            m = c.masters[new]
            assert m.proc is not None
            run: dict[str, Any] = {
                "kind": kind, "from": leader, "to": new, "load_avg": load,
                "write_s": round(at - t0w, 3), **{f"{k}_s": v for k, v in _rel(events, t0w).items()},
                "write_served_by": by,
                "no_write_gap_s": round(at - (last_old if last_old is not None else t0w), 3),
                "write_statuses": statuses,
            }
            if "elected" in events:
                el = events["elected"][0]
                run["elected_to_write_s"] = round(at - el, 3)
                for name in ("instances_loaded", "reconciling", "leading"):
                    if name in events:
                        run[f"elected_to_{name}_s"] = round(events[name][0] - el, 3)
                if "instances_loaded" in events:
                    run["loaded_count"] = int(events["instances_loaded"][1])
            run["successor_rss_mib"] = round(status_kib(m.proc.pid)["VmRSS"] / 1024)
            run["successor_counts"] = _counts(m, app["id"])
            trials.append(run)
            print(json.dumps(run), flush=True)
            if kind == "kill":
                # The builder stands again, as a successor would.
                c.masters.pop(leader)
                c.start_master(leader, successor_master, _s1_flags(instances))
                c.wait_knows(leader, new)
        if profile:
            out["load_profile"] = load_profile(c.ensemble.hosts, "/marathon")
    out["trials"] = trials
    writes = [t["elected_to_write_s"] for t in trials if "elected_to_write_s" in t]
    leading = [t["elected_to_leading_s"] for t in trials if "elected_to_leading_s" in t]
    out["elected_to_leading_s"] = _summary(leading) if leading else None
    out["elected_to_write_s"] = _summary(writes) if writes else None
    out["load_after"] = load_average()
    return out


def load_profile(hosts: str, root: str, *, cprofile: bool = False) -> dict[str, Any]:
    """What a successor's load costs, in this process: the store's scan of
    `instances/` (ZooKeeper's multiReads and kazoo's decoding) and the
    records' msgpack decoding, timed apart (CPU and wall)."""
    import trio

    from marathon.models.instance import Instance
    from marathon.storage.repository import Codec
    from marathon.storage.zk import ZooKeeperStore

    out: dict[str, Any] = {}

    async def run() -> None:
        store = ZooKeeperStore(hosts, root)
        await store.connect()
        try:
            t0, c0 = time.perf_counter(), time.process_time()
            entries = await store.scan("instances/")
            t1, c1 = time.perf_counter(), time.process_time()
            codec = Codec()
            decoded = [codec.decode(e.value, Instance) for _, e in entries]
            t2, c2 = time.perf_counter(), time.process_time()
            out.update({"instances": len(decoded), "scan_s": round(t1 - t0, 2), "scan_cpu_s": round(c1 - c0, 2),
                        "decode_s": round(t2 - t1, 2), "decode_cpu_s": round(c2 - c1, 2),
                        "value_bytes_mean": round(statistics.mean(len(e.value) for _, e in entries))
                        if entries else 0})
        finally:
            await store.aclose()

    if cprofile:
        import cProfile
        import io
        import pstats

        prof = cProfile.Profile()
        prof.enable()
        trio.run(run)
        prof.disable()
        text = io.StringIO()
        pstats.Stats(prof, stream=text).sort_stats("cumulative").print_stats(25)
        out["cprofile"] = text.getvalue()
    else:
        trio.run(run)
    return out


# -- the command line ------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description="Run one HA benchmark scenario.")
    parser.add_argument("scenario", choices=["failover", "s7", "s1zk", "s2zk"])
    parser.add_argument("--trials", type=int)
    parser.add_argument("--tasks", type=int)
    parser.add_argument("--instances", type=int)
    parser.add_argument("--agents", type=int)
    parser.add_argument("--apps", type=int)
    parser.add_argument("--group-apps", type=int)
    parser.add_argument("--abdications", type=int)
    parser.add_argument("--successor", choices=["agents", "sim"])
    parser.add_argument("--heap-mb", type=int)
    parser.add_argument("--kinds", help="failover: comma-separated kill,abdicate")
    parser.add_argument("--no-baseline", action="store_true", help="s1zk: skip the SQLite S1 run")
    parser.add_argument("--keep", help="use this (new) directory and keep it: logs, ZooKeeper data")
    ns = parser.parse_args()
    names = {"trials": ns.trials, "tasks": ns.tasks, "instances": ns.instances, "agents": ns.agents,
             "apps": ns.apps, "group_apps": ns.group_apps, "abdications": ns.abdications,
             "successor": ns.successor, "heap_mb": ns.heap_mb}
    kwargs: dict[str, Any] = {k: v for k, v in names.items() if v is not None}
    if ns.kinds:
        kwargs["kinds"] = tuple(ns.kinds.split(","))
    if ns.no_baseline:
        kwargs["baseline"] = False
    run = {"failover": failover, "s7": s7_zk, "s1zk": s1_zk, "s2zk": s2_zk}[ns.scenario]
    if ns.keep:
        Path(ns.keep).mkdir(parents=True)
        result = run(Path(ns.keep), **kwargs)
    else:
        with tempfile.TemporaryDirectory(prefix=f"marathon-{ns.scenario}-") as tmp:
            result = run(Path(tmp), **kwargs)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()

