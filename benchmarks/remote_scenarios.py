"""The remote-agent benchmarks (BENCHMARKS.md S8, S6-remote, the status round
trip, agent memory) as plain functions over real processes, so `benchmarks/`
runs them full size and `tests/integration/test_remote_scale_smoke.py` runs
them smoke-sized.  Each returns a dict of figures and asserts correctness
only, never a speed.

    python benchmarks/remote_scenarios.py s8 --instances 100000 --agents 20
    python benchmarks/remote_scenarios.py roundtrip --rate 5000
    python benchmarks/remote_scenarios.py s6remote --instances 1000
    python benchmarks/remote_scenarios.py agentmem --instances 1000

* `LoopbackCluster`: `marathon serve --master agents` and N `marathon agent`
  processes on this machine's loopback (each its own 127.0.0.x, work dir and
  port), every process started and stopped here, by PID.  S8 and the round
  trip run on it with `--simulate` agents (tasks RUNNING at once, behind the
  real protocol, journal and acks).
* S6-remote and the agent's memory run real `sleep` processes on agents in
  network namespaces (`marathon.testing.netns` + `marathon.testing.cluster`).

Clock windows are S1's (`scenarios._burst`, the same poller of `/v2/apps`
every 50 ms): *scheduled* and *running* from the POST.  The status round
trip is read from each agent's `GET /stats` (the outbox's ack latency
record): *ack* from an update's first send to its ACK (the master received,
committed and acknowledged it), *observed* from when the executor observed
the change (adds the agent's flush interval, its journal write, and the
wait for the task's previous update to be acknowledged: one in flight per
task).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from marathon.testing import MarathonProcess, free_port, scenarios, wait_for
from marathon.testing.measure import cpu_seconds, filesystem_of, percentile, raw_spawn_rate

SECRET = "benchmark-agent-secret-0123456789"


def status_kib(pid: int) -> dict[str, int]:
    """VmHWM and VmRSS of `pid` in KiB (/proc/PID/status)."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key = line.split(":", 1)[0]
            if key in ("VmHWM", "VmRSS"):
                out[key] = int(line.split()[1])
    return out


_TICK = os.sysconf("SC_CLK_TCK")


def machine_busy_s() -> float:
    """CPU seconds the whole machine was busy since boot (/proc/stat), all cores."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal ...
    return (sum(fields[:8]) - fields[3] - fields[4]) / _TICK


def _own_cpu_s() -> float:
    t = os.times()
    return t.user + t.system


def _mib(kib: float) -> float:
    return round(kib / 1024, 1)


@contextlib.contextmanager
def _profiled(pid: int, name: str) -> Iterator[None]:
    """With `REMOTE_BENCH_PYSPY=<py-spy binary>:<dir>`, py-spy samples `pid`
    (all threads, 100 Hz) while the block runs, into `<dir>/<name>.txt`
    (collapsed stacks).  For profiling by hand; off in `make bench`."""
    spec = os.environ.get("REMOTE_BENCH_PYSPY")
    if not spec:
        yield
        return
    binary, _, directory = spec.partition(":")
    Path(directory).mkdir(parents=True, exist_ok=True)
    out = Path(directory) / f"{name}.txt"
    proc = subprocess.Popen([binary, "record", "-p", str(pid), "-r", "100", "-f", "raw", "-o", str(out),
                             "--nonblocking"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class AgentProc:
    """One `marathon agent` subprocess on loopback, its log in its work dir."""

    def __init__(self, master_url: str, secret_file: Path, work_dir: Path, address: str, *,
                 resources: str, ports: str, simulate: bool, extra: list[str]) -> None:
        self.work_dir = work_dir
        self.address = address
        self.port = free_port()
        self.argv = [sys.executable, "-m", "marathon", "agent", "--master", master_url,
                     "--secret_file", str(secret_file), "--work_dir", str(work_dir),
                     "--hostname", address, "--http_port", str(self.port), "--resources", resources,
                     "--ports", ports, "--logging_level", "info", "--cgroups", "off", *extra]
        if simulate:
            self.argv.append("--simulate")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> AgentProc:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        with open(self.work_dir.parent / f"{self.work_dir.name}.log", "ab") as log:
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stats(self, client: httpx.Client, samples: bool = False) -> dict[str, Any]:
        r = client.get(f"http://{self.address}:{self.port}/stats", params={"samples": "1" if samples else "0"},
                       headers={"Authorization": f"Bearer {SECRET}"}, timeout=60)
        r.raise_for_status()
        return r.json()

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


class LoopbackCluster:
    """`marathon serve --master agents` and `agents` `marathon agent` processes on loopback."""

    def __init__(self, tmp: Path, *, agents: int, resources: str, ports: str = "31000-32000",
                 simulate: bool = True, master_args: list[str] | None = None,
                 agent_args: list[str] | None = None) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        self.secret_file = tmp / "agent.secret"
        self.secret_file.write_text(SECRET + "\n")
        os.chmod(self.secret_file, 0o600)
        self.master = MarathonProcess(tmp / "master", args=[
            "--master", "agents", "--agent_secret_file", str(self.secret_file), "--insecure_no_auth",
            "--logging_level", "info", *(master_args or [])])
        # Distinct loopback addresses: each agent looks like a machine of its own.
        self.agents = [AgentProc(self.master.url, self.secret_file, tmp / f"agent-{i:02d}", f"127.0.0.{i + 2}",
                                 resources=resources, ports=ports, simulate=simulate, extra=list(agent_args or []))
                       for i in range(agents)]
        self.client = httpx.Client(timeout=60)

    def __enter__(self) -> LoopbackCluster:
        try:
            self.master.start()
            for a in self.agents:
                a.start()
            wait_for(lambda: self.registered() == len(self.agents), timeout=120,
                     message=f"{len(self.agents)} agents registered")
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def registered(self) -> int:
        for a in self.agents:
            if a.proc is not None and a.proc.poll() is not None:
                raise RuntimeError(f"agent {a.work_dir.name} exited with {a.proc.returncode}")
        views = self.master.client.get("/v2/agents").json()["agents"]
        return sum(1 for v in views if v["state"] == "REGISTERED")

    def agent_cpu_s(self) -> float:
        return sum(cpu_seconds(a.pid) for a in self.agents)

    def close(self) -> None:
        self.client.close()
        for a in self.agents:
            a.stop()
        self.master.stop()


# -- S8 -----------------------------------------------------------------------------------


def _s8_app(instances: int) -> dict[str, Any]:
    # No host port: the in-process baseline's simulated agents have 1,001
    # ports each, 20 of them fewer than 100,000 instances.
    return {"id": "/s8/burst", "cmd": "sleep 3600", "cpus": 0.1, "mem": 16, "disk": 0, "instances": instances,
            "portDefinitions": []}


def _s8_flags(instances: int) -> list[str]:
    # S1's: one launch token per instance, and the periodic reconciliation
    # (first due 15 s after the start) out of the window.
    return ["--launch_tokens", str(instances), "--reconciliation_initial_delay", "600000"]


def _per_agent(instances: int, agents: int) -> tuple[float, int]:
    """Agent cpus and mem that hold exactly their share of `_s8_app`, so
    bin-packing fills every agent alike."""
    share = -(-instances // agents)
    return share * 0.1, share * 16 + 1024


def s8(data_dir: Path, *, instances: int = 100_000, agents: int = 20, timeout: float = 600.0,
       baseline: bool = True, scale_to_zero: bool = True) -> dict[str, Any]:
    """`instances` on `agents` simulated `marathon agent` processes; then the
    same burst on `sim://<agents>` in the master's process (the baseline),
    same flags, same app, same clocks."""
    cpus, mem = _per_agent(instances, agents)
    app = _s8_app(instances)
    out: dict[str, Any] = {"instances": instances, "agents": agents}
    resources = f"cpus:{cpus:g};mem:{mem};disk:100000"
    with LoopbackCluster(data_dir / "remote", agents=agents, resources=resources,
                         master_args=_s8_flags(instances)) as c:
        m = c.master
        assert m.proc is not None
        agent_cpu0, busy0, own0 = c.agent_cpu_s(), machine_busy_s(), _own_cpu_s()
        with _profiled(m.proc.pid, "s8-master"), _profiled(c.agents[0].pid, "s8-agent"):
            burst = scenarios._burst(m, app, interval=0.05, timeout=timeout)
        agent_cpu = c.agent_cpu_s() - agent_cpu0
        # What else this shared machine ran meanwhile (other jobs), in CPU s.
        out["others_cpu_s"] = round(machine_busy_s() - busy0 - burst["cpu_s"] - agent_cpu
                                    - (_own_cpu_s() - own0), 1)
        out.update({k: burst[k] for k in ("post_ms", "scheduled_s", "running_s", "cpu_s", "peak_rss_mib")})
        out["api_during_burst"] = burst["api_during_burst"]
        out["api_errors"] = burst["api_errors"]
        out["running_per_s"] = round(instances / burst["running_s"])
        out["agents_cpu_s"] = round(agent_cpu, 1)
        m.wait_deployments_done(timeout=timeout)
        views = m.client.get("/v2/agents").json()["agents"]
        per_agent = sorted(v["tasks"] for v in views)
        assert sum(per_agent) == instances, per_agent
        assert all(v["state"] == "REGISTERED" for v in views), [v["state"] for v in views]
        out["tasks_per_agent"] = [per_agent[0], per_agent[-1]]
        tasks = m.running_tasks(app["id"])
        assert len(tasks) == instances and len({t["id"] for t in tasks}) == instances
        rss = [status_kib(a.pid) for a in c.agents]
        out["agent_rss_mib"] = {"max_hwm": _mib(max(r["VmHWM"] for r in rss)),
                                "median_rss": _mib(statistics.median(r["VmRSS"] for r in rss))}
        stats = [a.stats(c.client) for a in c.agents]
        out["agent_acks"] = {
            "acked": sum(s["acked"] for s in stats), "pending": sum(s["pending"] for s in stats),
            "ignored": sum(s["ignored_acks"] for s in stats), "send_failures": sum(s["send_failures"] for s in stats),
            "ack_p99_ms_worst_agent": max(s["ack_ms"].get("p99", 0) for s in stats),
            "observed_p99_ms_worst_agent": max(s["ack_observed_ms"].get("p99", 0) for s in stats),
        }
        if scale_to_zero:
            out["scale_to_zero_s"] = round(scenarios._scale_to_zero(m, app["id"], timeout), 2)
            wait_for(lambda: sum(v["tasks"] for v in m.client.get("/v2/agents").json()["agents"]) == 0,
                     timeout=timeout, message="no task booked on any agent")
        out["master_peak_rss_mib"] = round(status_kib(m.proc.pid)["VmHWM"] / 1024)
        # Updates the master dropped because its queue was full (each one
        # logged; the agent resends it after its retry delay).
        out["master_status_dropped"] = m.log_path.read_bytes().count(b"status_dropped")
    if baseline:
        sim = f"sim://{agents}?cpus={cpus:g}&mem={mem}&disk=100000"
        with MarathonProcess(data_dir / "sim", args=["--master", sim, "--logging_level", "info",
                                                     *_s8_flags(instances)]) as m:
            busy0, own0 = machine_busy_s(), _own_cpu_s()
            burst = scenarios._burst(m, app, interval=0.05, timeout=timeout)
            others = machine_busy_s() - busy0 - burst["cpu_s"] - (_own_cpu_s() - own0)
            m.wait_deployments_done(timeout=timeout)
            assert len(m.running_tasks(app["id"])) == instances
        out["sim"] = {k: burst[k] for k in ("scheduled_s", "running_s", "cpu_s", "peak_rss_mib")}
        out["sim"]["others_cpu_s"] = round(others, 1)
        out["running_vs_sim"] = round(out["running_s"] / burst["running_s"], 2)
        out["cpu_vs_sim"] = round(out["cpu_s"] / max(burst["cpu_s"], 0.1), 2)
    return out


# -- the status-update round trip ------------------------------------------------------------


def roundtrip(data_dir: Path, *, rate: int = 5000, agents: int = 1, apps: int = 20, tick: float = 0.1,
              warmup: float = 4.0, seconds: float = 10.0, timeout: float = 120.0) -> dict[str, Any]:
    """Status updates at `rate` per second from simulated agents, and how long
    each takes from the agent to the master's commit and back (its ACK).

    The load: `apps` apps of n instances in a rotating window; every `tick`
    one app scales from 0 to n (2n updates: STAGING, RUNNING) and the one
    half a turn behind scales from n to 0 (n updates: KILLED), so 3n updates
    per tick.  After `warmup` seconds, the acks of the next `seconds` are
    the sample (read from each agent's `/stats` before and after).
    """
    n = max(1, round(rate * tick / 3))
    half = apps // 2
    per_agent = -(-n * (half + 2) // agents)  # instances that can be up at once, per agent
    resources = f"cpus:{per_agent * 0.01 * 2:g};mem:{per_agent * 2 + 1024};disk:100000"
    out: dict[str, Any] = {"target_rate": rate, "agents": agents, "apps": apps, "instances_per_step": n,
                           "tick_s": tick}
    with LoopbackCluster(data_dir, agents=agents, resources=resources,
                         master_args=["--launch_tokens", "1000000", "--reconciliation_initial_delay", "600000",
                                      "--max_running_deployments", "1000"]) as c:
        m = c.master
        assert m.proc is not None
        ids = [f"/rt/app-{i:02d}" for i in range(apps)]
        for app_id in ids:
            r = m.client.post("/v2/apps", json={"id": app_id, "cmd": "sleep 3600", "cpus": 0.01, "mem": 1,
                                                "disk": 0, "instances": 0, "portDefinitions": []})
            assert r.status_code == 201, r.text
        m.wait_deployments_done(timeout=timeout)
        stop = threading.Event()
        errors: list[str] = []
        late: list[float] = []

        def load() -> None:
            # Open loop: each tick at its time, however long the PUTs took.
            with httpx.Client(base_url=m.url, timeout=30) as client:
                start = time.perf_counter()
                t = 0
                while not stop.is_set():
                    up, down = ids[t % apps], ids[(t - half) % apps]
                    for app_id, count in ((up, n), (down, 0)):
                        if t < half and count == 0:
                            continue  # nothing is up yet half a turn behind
                        r = client.put(f"/v2/apps{app_id}", params={"force": "true"}, json={"instances": count})
                        if r.status_code != 200 and len(errors) < 10:
                            errors.append(f"{r.status_code}: {r.text[:200]}")
                    t += 1
                    wait = start + t * tick - time.perf_counter()
                    if wait > 0:
                        stop.wait(wait)
                    else:
                        late.append(-wait)

        loader = threading.Thread(target=load, name="roundtrip-load", daemon=True)
        loader.start()
        try:
            time.sleep(warmup)
            before = [a.stats(c.client) for a in c.agents]
            cpu0, agent_cpu0, t0 = cpu_seconds(m.proc.pid), c.agent_cpu_s(), time.perf_counter()
            busy0, own0 = machine_busy_s(), _own_cpu_s()
            time.sleep(seconds)
            busy, own = machine_busy_s() - busy0, _own_cpu_s() - own0
            cpu, agent_cpu = cpu_seconds(m.proc.pid) - cpu0, c.agent_cpu_s() - agent_cpu0
            elapsed = time.perf_counter() - t0
            after = [a.stats(c.client, samples=True) for a in c.agents]
        finally:
            stop.set()
            loader.join(60)
        acked = sum(a["acked"] - b["acked"] for a, b in zip(after, before, strict=True))
        ack_ms: list[float] = []
        observed_ms: list[float] = []
        for a, b in zip(after, before, strict=True):
            new = a["acked"] - b["acked"]
            assert new <= len(a["ack_ms_samples"]), "more acks in the window than samples kept"
            ack_ms += a["ack_ms_samples"][len(a["ack_ms_samples"]) - new:]
            observed_ms += a["ack_observed_ms_samples"][len(a["ack_observed_ms_samples"]) - new:]
        assert ack_ms, "no update was acknowledged in the window"
        out.update({
            "window_s": round(elapsed, 1),
            "updates_per_s": round(acked / elapsed),
            "ack_p50_ms": round(percentile(ack_ms, 50), 1), "ack_p99_ms": round(percentile(ack_ms, 99), 1),
            "ack_max_ms": round(max(ack_ms), 1),
            "observed_p50_ms": round(percentile(observed_ms, 50), 1),
            "observed_p99_ms": round(percentile(observed_ms, 99), 1),
            "master_cpu_s": round(cpu, 1), "agents_cpu_s": round(agent_cpu, 1),
            "others_cpu_s": round(busy - cpu - agent_cpu - own, 1),
            "ticks_late": len(late), "latest_tick_ms": round(max(late, default=0) * 1000),
            "put_errors": errors,
            "send_failures": sum(a["send_failures"] for a in after),
            "pending_at_end": sum(a["pending"] for a in after),
        })
    return out


# -- real processes on agents in network namespaces ------------------------------------------


@contextlib.contextmanager
def _netns_cluster(tmp: Path, agents: int, resources: str, work_base: Path | None,
                   master_args: list[str]) -> Iterator[Any]:
    from marathon.testing.cluster import Cluster
    from marathon.testing.netns import TestNetwork

    with TestNetwork() as net:
        c = Cluster(tmp, net, heartbeat_ms=5000, unreachable_ms=75000,
                    master_args=["--logging_level", "info", *master_args])
        try:
            c.start_master()
            for i in range(agents):
                name = f"a{i + 1}"
                extra = ["--logging_level", "info", "--cgroups", "off"]
                if work_base is not None:
                    extra += ["--work_dir", str(work_base / name)]
                c.add_agent(name, resources=resources, ports="31000-32000", extra=extra)
            c.wait_registered(agents)
            yield c
        finally:
            c.close()


def _master_view(c: Any) -> Any:
    # What scenarios._burst and _scale_to_zero use of a MarathonProcess.
    return types.SimpleNamespace(client=c.client, url=c.url, proc=c.master.proc,
                                 wait_deployments_done=lambda timeout: wait_for(
                                     lambda: not c.deployments(), timeout=timeout, message="deployments done"))


def _netns_agent_stats(agent: Any) -> dict[str, Any]:
    from marathon.testing.cluster import SECRET as CLUSTER_SECRET

    r = httpx.get(f"http://{agent.host.ip}:5051/stats", headers={"Authorization": f"Bearer {CLUSTER_SECRET}"},
                  timeout=30)
    r.raise_for_status()
    return r.json()


def _sleepers(app_id: str, instances: int, mark: str) -> dict[str, Any]:
    return {"id": app_id, "cmd": "sleep 3600", "cpus": 0.01, "mem": 8, "disk": 0, "instances": instances,
            "portDefinitions": [], "env": {"TEST_MARK": mark}}


def s6_remote(data_dir: Path, *, instances: int = 1000, agents: int = 2, work_base: Path | None = None,
              embedded: bool = True, timeout: float = 300.0) -> dict[str, Any]:
    """`instances` real `sleep` processes on `agents` agents in network
    namespaces, against this machine's raw posix_spawn rate measured just
    before and just after (bare, and with sandbox files on the agents' file
    system)."""
    where = work_base or data_dir
    out: dict[str, Any] = {"instances": instances, "agents": agents, "work_dir_fs": filesystem_of(where)}
    # The raw loop's rate swings by a factor of three within minutes on this
    # shared machine: it is measured before and after the run, and the
    # ratio taken against the mean (each one is reported).
    raw_before = raw_spawn_rate(instances)["spawn_per_s"]
    sandbox_before = raw_spawn_rate(instances, sandboxes=where)["spawn_per_s"]
    share = -(-instances // agents)
    resources = f"cpus:{share * 0.01:g};mem:{share * 8};disk:1000"  # exactly a share each: bin-pack fills both
    mark = f"s6r{os.getpid()}{int(time.time())}"
    app = _sleepers("/s6remote/sleepers", instances, mark)
    with _netns_cluster(data_dir, agents, resources, work_base,
                        ["--launch_tokens", str(max(100, instances))]) as c:
        m = _master_view(c)
        agent_cpu0 = sum(cpu_seconds(a.pid) for a in c.agents.values())
        busy0 = machine_busy_s()
        burst = scenarios._burst(m, app, interval=0.02, timeout=timeout)
        # Busy CPU s of the whole machine in the window: ours (master, agents,
        # the tasks' own exec) and other jobs'.
        out["machine_busy_s"] = round(machine_busy_s() - busy0, 1)
        out["agents_cpu_s"] = round(sum(cpu_seconds(a.pid) for a in c.agents.values()) - agent_cpu0, 1)
        out["running_s"] = burst["running_s"]
        out["spawn_per_s"] = round(instances / burst["running_s"])
        out["master_cpu_s"] = burst["cpu_s"]
        counts = {name: len(p) for name, p in c.processes(mark).items()}
        assert sum(counts.values()) == instances, counts
        out["processes_per_agent"] = sorted(counts.values())
        out["agent_rss_mib"] = [_mib(status_kib(a.pid)["VmHWM"]) for a in c.agents.values()]
        m.wait_deployments_done(timeout)
        # Each task's STAGING, STARTING and RUNNING go one at a time (the
        # next once the last is acknowledged, at the agent's next flush).
        stats = [_netns_agent_stats(a) for a in c.agents.values()]
        out["agent_updates_acked"] = sum(s["acked"] for s in stats)
        out["agent_ack_p99_ms"] = max(s["ack_ms"].get("p99", 0) for s in stats)
        out["agent_observed_p50_ms"] = max(s["ack_observed_ms"].get("p50", 0) for s in stats)
        out["agent_observed_p99_ms"] = max(s["ack_observed_ms"].get("p99", 0) for s in stats)
        killed = scenarios._scale_to_zero(m, app["id"], timeout)
        out["scale_to_zero_s"] = round(killed, 2)
        out["kills_per_s"] = round(instances / killed)
        wait_for(lambda: c.count(mark) == 0, timeout=timeout, message="every sleep process gone")
    raw_after = raw_spawn_rate(instances)["spawn_per_s"]
    sandbox_after = raw_spawn_rate(instances, sandboxes=where)["spawn_per_s"]
    raw = (raw_before + raw_after) / 2
    sandbox = (sandbox_before + sandbox_after) / 2
    out["raw_spawn_per_s"] = round(raw)
    out["raw_spawn_before_after"] = [round(raw_before), round(raw_after)]
    out["raw_sandbox_spawn_per_s"] = round(sandbox)
    out["raw_sandbox_before_after"] = [round(sandbox_before), round(sandbox_after)]
    out["vs_raw"] = round(out["spawn_per_s"] / raw, 3)
    out["vs_raw_sandbox"] = round(out["spawn_per_s"] / sandbox, 3)
    if embedded:
        # S6 itself right after, data dir on the same file system: the price
        # of the remote path against the embedded agent, minutes apart.
        (where / "embedded").mkdir()
        local = scenarios.s6(where / "embedded", instances=instances, timeout=timeout)
        out["embedded"] = {k: local[k] for k in ("spawn_per_s", "raw_spawn_per_s", "vs_raw", "cpu_s")}
        out["vs_embedded"] = round(out["spawn_per_s"] / local["spawn_per_s"], 3)
    return out


def agent_memory(data_dir: Path, *, instances: int = 1000, settle: float = 5.0,
                 timeout: float = 300.0) -> dict[str, Any]:
    """One agent (network namespace, real executor) running `instances`
    `sleep` processes: its resident memory before, at the peak, and after
    `settle` seconds of steady state (heartbeats, the executor's sweeps)."""
    resources = f"cpus:{instances * 0.01 + 1:g};mem:{instances * 8 + 1024};disk:1000"
    mark = f"mem{os.getpid()}{int(time.time())}"
    out: dict[str, Any] = {"instances": instances}
    with _netns_cluster(data_dir, 1, resources, None, ["--launch_tokens", str(max(100, instances))]) as c:
        (agent,) = c.agents.values()
        out["idle_rss_mib"] = _mib(status_kib(agent.pid)["VmRSS"])
        m = _master_view(c)
        burst = scenarios._burst(m, _sleepers("/mem/sleepers", instances, mark), interval=0.05, timeout=timeout)
        out["running_s"] = burst["running_s"]
        assert c.count(mark) == instances
        time.sleep(settle)
        kib = status_kib(agent.pid)
        out["rss_mib"] = _mib(kib["VmRSS"])
        out["peak_rss_mib"] = _mib(kib["VmHWM"])
        out["master_peak_rss_mib"] = burst["peak_rss_mib"]
        m.wait_deployments_done(timeout)
        scenarios._scale_to_zero(m, "/mem/sleepers", timeout)
        wait_for(lambda: c.count(mark) == 0, timeout=timeout, message="every sleep process gone")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description="Run one remote-agent benchmark scenario.")
    parser.add_argument("scenario", choices=["s8", "roundtrip", "s6remote", "agentmem"])
    parser.add_argument("--instances", type=int)
    parser.add_argument("--agents", type=int)
    parser.add_argument("--rate", type=int)
    parser.add_argument("--seconds", type=float)
    parser.add_argument("--no-baseline", action="store_true", help="s8: skip the in-process sim:// run")
    parser.add_argument("--data-dir-base", help="where the temporary data dir goes (e.g. /dev/shm)")
    parser.add_argument("--keep", help="use this (new) directory and keep it: logs, journals")
    ns = parser.parse_args()
    kwargs: dict[str, Any] = {k: v for k, v in (("instances", ns.instances), ("agents", ns.agents),
                                                ("rate", ns.rate), ("seconds", ns.seconds)) if v is not None}
    if ns.no_baseline:
        kwargs["baseline"] = False
    run = {"s8": s8, "roundtrip": roundtrip, "s6remote": s6_remote, "agentmem": agent_memory}[ns.scenario]
    if ns.keep:
        Path(ns.keep).mkdir(parents=True)
        result = run(Path(ns.keep), **kwargs)
    else:
        with tempfile.TemporaryDirectory(prefix=f"marathon-{ns.scenario}-", dir=ns.data_dir_base) as tmp:
            result = run(Path(tmp), **kwargs)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
