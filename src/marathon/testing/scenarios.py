"""The benchmark scenarios of ../shared/BENCHMARKS.md as plain functions over
a real `marathon serve` subprocess, so `benchmarks/` runs them full size and
the test suite runs them smoke-sized.  Each returns a dict of figures; none
asserts a speed (that is the reader's job), only correctness.

    python -m marathon.testing.scenarios s1 --instances 100000 --agents 2000

Clock windows (BENCHMARKS.md): *scheduled* is when the API first counts
every instance as staged or running (the tracker counts an instance only
after its placement is persisted), *running* when it counts every instance
running, both from the moment the POST is sent.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import os
import statistics
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from ..agent.checkpoint import read_records
from . import MarathonProcess, pid_alive, wait_for
from .measure import (
    Poller,
    cpu_seconds,
    filesystem_of,
    peak_rss_mib,
    percentile,
    raw_spawn_rate,
    wrk,
)


def _server(data_dir: Path, master: str | None, extra: list[str] | None = None, **kwargs: Any) -> MarathonProcess:
    args = ["--logging_level", "info"]
    if master:
        args += ["--master", master]
    return MarathonProcess(data_dir, args=args + list(extra or []), **kwargs)


class _Stamps:
    """Observes `/v2/apps` answers and stamps when the counts reach a goal."""

    def __init__(self, app_id: str, goal: int) -> None:
        self.app_id = app_id
        self.goal = goal
        self.scheduled: float | None = None
        self.running: float | None = None
        self.last: dict[str, int] = {}

    def __call__(self, now: float, body: Any) -> None:
        for app in body.get("apps", []):
            if app["id"] != self.app_id:
                continue
            self.last = {k: app[k] for k in ("tasksStaged", "tasksRunning", "tasksHealthy", "tasksUnhealthy")}
            if self.scheduled is None and app["tasksStaged"] + app["tasksRunning"] >= self.goal:
                self.scheduled = now
            if self.running is None and app["tasksRunning"] >= self.goal:
                self.running = now


def s1(
    data_dir: Path,
    *,
    instances: int = 100_000,
    agents: int = 2000,
    agent_cpus: int = 64,
    agent_mem: int = 262144,
    timeout: float = 600.0,
    extra_args: list[str] | None = None,
    check: bool = True,
    progress: bool = False,
) -> dict[str, Any]:
    """One app of `instances` on `agents` simulated agents; then scale to 0."""
    master = f"sim://{agents}?cpus={agent_cpus}&mem={agent_mem}"
    app = {"id": "/s1/burst", "cmd": "sleep 3600", "cpus": 1.0, "mem": 128, "instances": instances,
           "portDefinitions": [{"port": 0}]}
    out: dict[str, Any] = {"instances": instances, "agents": agents}
    # Marathon's launch throttle (100 tokens) would meter the burst out at the
    # pace tasks come up; the scenario measures the pipeline, so it gives one
    # token per instance unless the caller sets --launch_tokens itself.
    extra = list(extra_args or [])
    if "--launch_tokens" not in extra:
        extra += ["--launch_tokens", str(instances)]
    # The periodic reconciliation first comes due 15 s after the start, in
    # the middle of the burst: with 100,000 tasks it is 100,000 status
    # updates (200,000 before it became one round), which added ~3 s to
    # *running* whenever the burst was not done by then (RESULTS.md).  The scenario measures the burst, so that one is
    # moved out of the window (the one at start, with nothing to reconcile,
    # still runs).
    if "--reconciliation_initial_delay" not in extra:
        extra += ["--reconciliation_initial_delay", "600000"]
    with _server(data_dir, master, extra) as m:
        out.update(_burst(m, app, interval=0.05, timeout=timeout))
        out["scheduled_per_s"] = round(instances / out["scheduled_s"])
        m.wait_deployments_done(timeout=timeout)
        if progress:
            print(json.dumps(out), flush=True)
        if check:
            out["check"] = check_placement(m, app["id"], instances, agent_cpus, agent_mem, app)
        out["scale_to_zero_s"] = round(_scale_to_zero(m, app["id"], timeout), 2)
        remaining = m.tasks(app["id"])
        assert remaining == [], f"{len(remaining)} tasks left after scaling to 0"
    return out


def _burst(m: MarathonProcess, app: dict[str, Any], *, interval: float, timeout: float,
           watch: MarathonProcess | None = None) -> dict[str, Any]:
    """POST `app` and watch `/v2/apps` every `interval` until all its
    instances run: the clocks, the server's CPU and memory, and the API's
    latency meanwhile.  `watch`: poll through that master instead (a
    standby, which forwards to `m`)."""
    assert m.proc is not None
    pid = m.proc.pid
    stamps = _Stamps(app["id"], app["instances"])
    poller = Poller(f"{(watch or m).url}/v2/apps", interval=interval, observe=stamps).start()
    cpu0 = cpu_seconds(pid)
    t0 = time.perf_counter()
    try:
        r = m.client.post("/v2/apps", json=app, timeout=120)
        assert r.status_code == 201, r.text
        post_ms = round((time.perf_counter() - t0) * 1000, 1)
        wait_for(lambda: stamps.running is not None, timeout=timeout, interval=min(0.1, interval),
                 message=f"{app['instances']} instances of {app['id']} running (last counts {stamps.last})")
    finally:
        poller.stop()
    assert stamps.scheduled is not None and stamps.running is not None
    return {
        "post_ms": post_ms,
        "scheduled_s": round(stamps.scheduled - t0, 2),
        "running_s": round(stamps.running - t0, 2),
        "cpu_s": round(cpu_seconds(pid) - cpu0, 1),
        "peak_rss_mib": round(peak_rss_mib(pid)),
        "api_during_burst": poller.summary(),
        "api_errors": poller.errors[:5],
    }


def _scale_to_zero(m: MarathonProcess, app_id: str, timeout: float) -> float:
    """PUT instances=0; seconds until the API counts none running."""
    t0 = time.perf_counter()
    r = m.client.put(f"/v2/apps{app_id}", json={"instances": 0})
    assert r.status_code == 200, r.text
    wait_for(lambda: m.client.get(f"/v2/apps{app_id}").json()["app"]["tasksRunning"] == 0,
             timeout=timeout, interval=0.02, message=f"{app_id} scaled to zero")
    seconds = time.perf_counter() - t0
    m.wait_deployments_done(timeout=timeout)
    return seconds


def check_placement(m: MarathonProcess, app_id: str, instances: int, agent_cpus: float, agent_mem: float,
                    app: dict[str, Any]) -> dict[str, int]:
    """Exactly `instances` tasks, no duplicate ids, no agent over its resources,
    no host port given twice on one agent."""
    started = time.perf_counter()
    r = httpx.get(f"{m.url}/v2/apps{app_id}/tasks", timeout=300)
    r.raise_for_status()
    tasks = r.json()["tasks"]
    took = time.perf_counter() - started
    assert len(tasks) == instances, f"{len(tasks)} tasks, expected {instances}"
    ids = [t["id"] for t in tasks]
    assert len(set(ids)) == instances, "duplicate task ids"
    per_agent = Counter(t["slaveId"] for t in tasks)
    fits = min(agent_cpus // app["cpus"], agent_mem // app["mem"])
    assert max(per_agent.values()) <= fits, f"an agent holds {max(per_agent.values())} > {fits}"
    ports = Counter((t["slaveId"], p) for t in tasks for p in t["ports"])
    assert max(ports.values()) == 1, "a host port was given twice on one agent"
    assert all(t["state"] == "TASK_RUNNING" for t in tasks)
    return {"tasks": len(tasks), "agents_used": len(per_agent), "most_on_one_agent": max(per_agent.values()),
            "get_tasks_ms": round(took * 1000)}


def s2_flags(apps: int, group_apps: int) -> list[str]:
    """Each POST is a deployment of its own, and they arrive faster than
    they finish: Marathon's default limit (100 at once) would refuse the
    burst with 403s, so the scenario raises it, as an operator expecting one
    would.  Likewise the launch throttle: one token per instance."""
    return ["--max_running_deployments", str(max(100, apps)), "--launch_tokens", str(max(apps, group_apps, 100))]


def s2(
    data_dir: Path,
    *,
    apps: int = 1000,
    concurrency: int = 32,
    group_apps: int = 10_000,
    agents: int = 2000,
    timeout: float = 600.0,
) -> dict[str, Any]:
    """`apps` apps by `concurrency` concurrent POSTs, then `group_apps` apps in
    one group POST, each app one instance on simulated agents."""
    master = f"sim://{agents}?cpus=64&mem=262144"
    out: dict[str, Any] = {"apps": apps, "concurrency": concurrency, "group_apps": group_apps}
    with _server(data_dir, master, s2_flags(apps, group_apps)) as m:
        out.update(s2_on(m, apps=apps, concurrency=concurrency, group_apps=group_apps, timeout=timeout))
    return out


def s2_on(m: MarathonProcess, *, apps: int, concurrency: int, group_apps: int, timeout: float,
          extra_cpu: Callable[[], float] | None = None) -> dict[str, Any]:
    """S2 against a running server `m` (see `s2`).  `extra_cpu`: another
    clock of CPU seconds to report beside the server's (ZooKeeper's, say),
    as `extra_cpu_s` and `group_extra_cpu_s`."""
    assert m.proc is not None
    pid = m.proc.pid
    out: dict[str, Any] = {}
    # Per-app deployment time: from the POST to the deployment gone from
    # /v2/deployments; watched in one poller, stamped per id.
    done_at: dict[str, float] = {}
    pending: dict[str, str] = {}  # deployment id -> app id
    lock = threading.Lock()

    def observe(now: float, body: Any) -> None:
        active = {d["id"] for d in body}
        with lock:
            for dep_id in list(pending):
                if dep_id not in active:
                    done_at[pending.pop(dep_id)] = now

    started_at: dict[str, float] = {}
    poller = Poller(f"{m.url}/v2/deployments", interval=0.02, observe=observe).start()
    cpu0, extra0 = cpu_seconds(pid), extra_cpu() if extra_cpu else 0.0
    t0 = time.perf_counter()

    def post(i: int, client: httpx.Client) -> None:
        app_id = f"/s2/app-{i:05d}"
        started_at[app_id] = time.perf_counter()
        r = client.post("/v2/apps", json={"id": app_id, "cmd": "sleep 3600", "cpus": 0.1, "mem": 32, "instances": 1})
        assert r.status_code == 201, r.text
        with lock:
            pending[r.headers["Marathon-Deployment-Id"]] = app_id

    try:
        with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
            clients = [httpx.Client(base_url=m.url, timeout=120) for _ in range(concurrency)]
            futures = [pool.submit(post, i, clients[i % concurrency]) for i in range(apps)]
            for f in futures:
                f.result()
            posted = time.perf_counter()
            for c in clients:
                c.close()
        wait_for(lambda: _running(m, "/s2") >= apps, timeout=timeout, interval=0.05, message=f"{apps} apps running")
        all_running = time.perf_counter()
        wait_for(lambda: not pending, timeout=timeout, message="every deployment done")
    finally:
        poller.stop()
    per_app = [done_at[a] - started_at[a] for a in done_at]
    out["posts_s"] = round(posted - t0, 2)
    out["running_s"] = round(all_running - t0, 2)
    out["deployment_p50_ms"] = round(percentile(per_app, 50) * 1000)
    out["deployment_p99_ms"] = round(percentile(per_app, 99) * 1000)
    out["cpu_s"] = round(cpu_seconds(pid) - cpu0, 1)
    if extra_cpu:
        out["extra_cpu_s"] = round(extra_cpu() - extra0, 1)
    if group_apps:
        # One group POST of `group_apps` apps.
        group = {"id": "/s2big", "apps": [
            {"id": f"app-{i:05d}", "cmd": "sleep 3600", "cpus": 0.01, "mem": 8, "instances": 1, "portDefinitions": []}
            for i in range(group_apps)
        ]}
        cpu1, extra1 = cpu_seconds(pid), extra_cpu() if extra_cpu else 0.0
        t1 = time.perf_counter()
        r = httpx.post(f"{m.url}/v2/groups", json=group, timeout=timeout)
        assert r.status_code == 201, r.text
        out["group_post_ms"] = round((time.perf_counter() - t1) * 1000)
        wait_for(lambda: _running(m, "/s2big") >= group_apps, timeout=timeout, interval=0.1,
                 message=f"{group_apps} group apps running")
        out["group_running_s"] = round(time.perf_counter() - t1, 2)
        m.wait_deployments_done(timeout=timeout)
        out["group_cpu_s"] = round(cpu_seconds(pid) - cpu1, 1)
        if extra_cpu:
            out["group_extra_cpu_s"] = round(extra_cpu() - extra1, 1)
    out["peak_rss_mib"] = round(peak_rss_mib(pid))
    tasks = m.client.get("/v2/tasks", timeout=120).json()["tasks"]
    assert len(tasks) == apps + group_apps and len({t["id"] for t in tasks}) == len(tasks)
    return out


def _running(m: MarathonProcess, prefix: str) -> int:
    apps = m.client.get("/v2/apps", params={"id": prefix}).json()["apps"]
    return sum(1 for a in apps if a["tasksRunning"] >= a["instances"] > 0)


def s5_small_gets(data_dir: Path, *, seconds: int = 5, connections: int = 8, bare_server: Path | None = None,
                  http_servers: tuple[str, ...] = ("builtin", "hypercorn"), rounds: int = 3) -> dict[str, Any]:
    """Small GETs under wrk, against a bare trio+h11 server in the same run.

    On a shared machine the rate of one 5-second window swings by a third
    from one minute to the next, so the bare server and the default server
    are measured alternately, `rounds` times, each ratio against the bare
    rate of its own round; the result keeps every round and the medians.
    Other servers (hypercorn) are measured once, as a yardstick.
    """
    out: dict[str, Any] = {}
    paths = ("/ping", "/v2/info", "/v2/apps")
    for n, name in enumerate(http_servers):
        with contextlib.ExitStack() as stack:
            bare_url = None
            if bare_server is not None and n == 0:
                bare_url = stack.enter_context(_bare_server(bare_server))
            m = stack.enter_context(_server(data_dir / name, None, ["--http_server", name]))
            for _ in range(rounds if n == 0 else 1):
                bare = None
                if bare_url is not None:
                    bare = wrk(bare_url, seconds=seconds, connections=connections)
                    out.setdefault("bare_h11 rounds", []).append(bare["req_per_s"])
                for path in paths:
                    rate = wrk(m.url + path, seconds=seconds, connections=connections)["req_per_s"]
                    out.setdefault(f"{name} {path} rounds", []).append(rate)
                    if bare is not None:
                        out.setdefault(f"{name} {path} vs bare rounds", []).append(
                            round(rate / bare["req_per_s"], 2))
    for key in list(out):
        if key.endswith(" rounds"):
            out[key[: -len(" rounds")]] = statistics.median(out[key])
    return out


@contextlib.contextmanager
def _bare_server(script: Path) -> Iterator[str]:
    import subprocess
    import sys

    from . import free_port

    port = free_port()
    proc = subprocess.Popen([sys.executable, str(script), str(port)], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"listening"
        yield f"http://127.0.0.1:{port}/ping"
    finally:
        proc.terminate()
        proc.wait(30)


def s6(data_dir: Path, *, instances: int = 1000, timeout: float = 600.0) -> dict[str, Any]:
    """`instances` real `sleep` processes through the embedded agent, against
    this machine's raw posix_spawn rate measured just before (bare, and with
    the sandbox files on `data_dir`'s file system); then scale to 0."""
    out: dict[str, Any] = {"instances": instances, "data_dir_fs": filesystem_of(data_dir)}
    raw = raw_spawn_rate(instances)
    out["raw_spawn_per_s"] = round(raw["spawn_per_s"])
    out["raw_kill_per_s"] = round(raw["kill_per_s"])
    out["raw_sandbox_spawn_per_s"] = round(raw_spawn_rate(instances, sandboxes=data_dir)["spawn_per_s"])
    resources = f"cpus:{max(64, instances)};mem:{max(65536, instances * 64)};disk:100000"
    app = {"id": "/s6/sleepers", "cmd": "sleep 3600", "cpus": 0.01, "mem": 8, "disk": 0, "instances": instances,
           "portDefinitions": []}
    with _server(data_dir, None, ["--agent_resources", resources, "--agent_cgroups", "off",
                                  "--launch_tokens", str(max(100, instances))]) as m:
        burst = _burst(m, app, interval=0.02, timeout=timeout)
        out["running_s"] = burst["running_s"]
        out["spawn_per_s"] = round(instances / burst["running_s"])
        out["vs_raw"] = round(out["spawn_per_s"] / out["raw_spawn_per_s"], 3)
        out["vs_raw_sandbox"] = round(out["spawn_per_s"] / out["raw_sandbox_spawn_per_s"], 3)
        out["cpu_s"] = burst["cpu_s"]
        tasks = m.running_tasks(app["id"])
        assert len(tasks) == instances
        pids = _task_pids(m.data_dir)
        assert len(pids) == instances, f"{len(pids)} checkpointed pids for {instances} tasks"
        m.wait_deployments_done(timeout=timeout)

        killed = _scale_to_zero(m, app["id"], timeout)
        out["scale_to_zero_s"] = round(killed, 2)
        out["kills_per_s"] = round(instances / killed)
        wait_for(lambda: not any(pid_alive(p) for p in pids), timeout=timeout, message="every sleep process gone")
        out["processes_checked"] = len(pids)
    return out


def _task_pids(data_dir: Path) -> list[int]:
    """PIDs of the embedded agent's tasks, from its checkpoint journal."""
    records = read_records(data_dir / "agent" / "checkpoint")
    return [r.pid for r in records.values() if r.pid is not None]


def main() -> None:
    parser = argparse.ArgumentParser(description="Run one benchmark scenario against a fresh marathon serve.")
    parser.add_argument("scenario", choices=["s1", "s2", "s6"])
    parser.add_argument("--instances", type=int)
    parser.add_argument("--agents", type=int)
    parser.add_argument("--apps", type=int)
    parser.add_argument("--group-apps", type=int)
    parser.add_argument("--data-dir-base", help="where the temporary data dir goes (e.g. /dev/shm)")
    ns = parser.parse_args()
    kwargs = {k: v for k, v in (("instances", ns.instances), ("agents", ns.agents), ("apps", ns.apps),
                                ("group_apps", ns.group_apps)) if v is not None}
    with tempfile.TemporaryDirectory(prefix=f"marathon-{ns.scenario}-", dir=ns.data_dir_base) as tmp:
        if ns.scenario == "s1":
            kwargs["progress"] = True
        result = {"s1": s1, "s2": s2, "s6": s6}[ns.scenario](Path(tmp), **kwargs)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
