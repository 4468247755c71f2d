"""S6-oci (BENCHMARKS.md): 1 app x 200 busybox containers on one agent
against raw `runc run --detach` of the same image in the same run, and the
pull + unpack of a ~5 MB image cold and cached.  Plain functions over real
processes (a Docker Registry v2 on 127.0.0.1, `marathon serve` with its
embedded agent, runc), each returning a dict of figures and asserting
correctness only, never a speed.

    python benchmarks/oci_scenarios.py s6oci --instances 200
    python benchmarks/oci_scenarios.py pull

* Images: `marathon.testing.registry.build_busybox` (busybox-static and its
  applets), pushed with skopeo to a `Registry` on 127.0.0.1; the pull image
  is the same with 5 MB of random hex text added (`/data/random.hex`).
* Raw baseline (`raw_runc`): the image pulled and unpacked once by
  `ImageStore` (as the agent does), then for each of N containers, one
  after the other: a sandbox directory with stdout/stderr files, an
  overlay mount over the unpacked rootfs (`upper/`, `work/`, `rootfs/`, as
  `agent.oci.OciRuntime.prepare`), a config.json from `agent.oci.build_spec`
  (process `/bin/sleep 600`, terminal false, the same limits our agent
  writes when it has no cgroups) and `runc --root <dir> run --detach`.
  Window: from the first container's mkdir to the last `runc run`'s exit;
  `runc_only_s` is the sum of the `runc run` calls alone; *up* until /proc
  shows every container's `sleep 600` (the last exec may follow runc's exit).
  The baseline is that sequential loop; the same loop on 8 threads (the
  embedded agent's `--agent_spawn_threads` default) is measured after it,
  as a second yardstick (`raw_parallel`).
* Ours (`ours`): `marathon serve` (embedded agent, `--agent_cgroups off`),
  a warm-up app of 1 instance first (its time from the POST to running
  includes the agent's pull and unpack), deleted; then one app of N
  instances, `exec sleep 600` in the image.  Windows, from the POST:
  *running* when the API counts N running (`scenarios._burst`, polling
  `/v2/apps` every 20 ms); *up* when /proc shows N `sleep 600` processes
  whose root is a container rootfs under the data dir (scanned every 50 ms
  once the API counts them: the agent reports RUNNING when it has spawned
  `runc run`, before the container's process is there).
* Pull (`pull`): `ImageStore(<fresh dir>).get(ref)` (skopeo copy to an OCI
  layout, umoci unpack), `cold` times; then `get` again on the same store
  (`cached`: the tag found in the layout, the rootfs already unpacked).

Everything started here is stopped by PID; runc containers are deleted
and overlay mounts unmounted even on failure (`sweep`).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import os
import secrets
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from remote_scenarios import machine_busy_s

from marathon.agent.images import Image, ImageStore
from marathon.agent.oci import build_spec
from marathon.models.launch import TaskLaunch
from marathon.testing import pid_alive, scenarios, wait_for
from marathon.testing.measure import filesystem_of, peak_rss_mib
from marathon.testing.registry import Registry, build_busybox

RUNC = shutil.which("runc") or "runc"
SLEEP_ARGV = ("sleep", "600")


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# -- images -----------------------------------------------------------------------------------------


def random_hex(size: int) -> str:
    """`size` characters of random hex (a text file for `build_busybox`)."""
    return secrets.token_hex(size // 2)


def image_bytes(layout: Path) -> dict[str, int]:
    """The image's blob sizes in its OCI layout: compressed layers and all blobs."""
    blobs = layout / "blobs" / "sha256"
    index = json.loads((layout / "index.json").read_text())
    manifest = json.loads((blobs / index["manifests"][0]["digest"].split(":", 1)[1]).read_text())
    layers = sum(layer["size"] for layer in manifest["layers"])
    return {"layers_bytes": layers, "blobs_bytes": sum(p.stat().st_size for p in blobs.iterdir())}


def tree_bytes(root: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(root):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, f)).st_size
    return total


# -- /proc and cleaning up ------------------------------------------------------------------------------


def container_sleeps(under: Path, argv: tuple[str, ...] = SLEEP_ARGV) -> list[int]:
    """PIDs of processes running `argv` (the program by name or path) whose
    root is an overlay with its upper layer below `under` (a container
    bundle there)."""
    prefix = str(under.resolve()) + "/"
    want = [a.encode() for a in argv]
    out = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                args = f.read().split(b"\0")[:-1]
            if len(args) != len(want) or os.path.basename(args[0]) != want[0] or args[1:] != want[1:]:
                continue
            if _root_upperdir(entry.name).startswith(prefix):
                out.append(int(entry.name))
        except OSError:
            continue
    return out


def _root_upperdir(pid: str) -> str:
    """The upper directory of the overlay mounted as `pid`'s root ("" if
    its root is not an overlay): a container's own writable layer, below
    the bundle of that container.  (`/proc/PID/root` reads "/" from outside
    the container's mount namespace.)"""
    with open(f"/proc/{pid}/mountinfo") as f:
        for line in f:
            fields = line.split()
            if fields[4] == "/" and " - overlay " in line:
                for option in fields[-1].split(","):
                    if option.startswith("upperdir="):
                        return option[len("upperdir="):]
    return ""


def mounts_under(base: Path) -> list[str]:
    """Mount points below `base` (deepest first)."""
    prefix = str(base.resolve()) + "/"
    points = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4].replace("\\040", " ")
            if point.startswith(prefix):
                points.append(point)
    return sorted(points, key=len, reverse=True)


def runc_ids(state: Path) -> list[str]:
    if not state.is_dir():
        return []
    done = subprocess.run([RUNC, "--root", str(state), "list", "-q"], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=60)
    return done.stdout.split()


def sweep(base: Path, states: list[Path]) -> dict[str, int]:
    """Delete every runc container recorded under `states` (killing it) and
    unmount everything mounted below `base`: the cleanup for any failure."""
    removed = 0
    for state in states:
        for cid in runc_ids(state):
            subprocess.run([RUNC, "--root", str(state), "delete", "--force", cid], capture_output=True,
                           stdin=subprocess.DEVNULL, timeout=60)
            removed += 1
    unmounted = 0
    for point in mounts_under(base):
        if subprocess.run(["umount", point], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", point], capture_output=True)
        unmounted += 1
    for pid in container_sleeps(base):  # only if runc's records were lost
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 9)
    return {"containers_deleted": removed, "unmounted": unmounted}


# -- the raw baseline ---------------------------------------------------------------------------------


def _launch(task_id: str, argv: list[str]) -> TaskLaunch:
    """What our agent receives for one instance of the benchmark app."""
    return TaskLaunch(task_id=task_id, instance_id=task_id, app_id="/raw/runc", agent_id="raw", shell=False,
                      argv=argv, cpus=0.01, mem=8)


def _start_raw(image: Image, state: Path, d: Path, sandbox: Path, cid: str) -> float:
    """Prepare and `runc run --detach` one container; the runc call's seconds."""
    for sub in ("upper", "work", "rootfs"):
        (d / sub).mkdir(parents=True)
    sandbox.mkdir(parents=True)
    options = f"lowerdir={image.rootfs},upperdir={d / 'upper'},workdir={d / 'work'}"
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", options, str(d / "rootfs")], check=True,
                   capture_output=True)
    spec = build_spec(_launch(cid, ["/bin/sleep", "600"]), image, d / "rootfs", sandbox, {}, limits=True)
    (d / "config.json").write_text(json.dumps(spec, indent=1))
    with open(sandbox / "stdout", "wb") as so, open(sandbox / "stderr", "wb") as se:
        r0 = time.perf_counter()
        done = subprocess.run([RUNC, "--root", str(state), "run", "--detach", "--bundle", str(d), cid],
                              stdin=subprocess.DEVNULL, stdout=so, stderr=se)
        took = time.perf_counter() - r0
    if done.returncode != 0:
        raise RuntimeError(f"runc run {cid} failed ({done.returncode}): {(sandbox / 'stderr').read_text()}")
    return took


def _delete_raw(state: Path, d: Path, cid: str) -> None:
    subprocess.run([RUNC, "--root", str(state), "delete", "--force", cid], check=True, capture_output=True,
                   stdin=subprocess.DEVNULL, timeout=60)
    subprocess.run(["umount", str(d / "rootfs")], check=True, capture_output=True)


def raw_runc(image: Image, work: Path, *, instances: int = 200, threads: int = 1) -> dict[str, Any]:
    """`instances` containers of `image`, each prepared (sandbox, overlay,
    config.json) and started with `runc run --detach`: one after the other
    (`threads` 1, the baseline), or by `threads` threads at once; then
    deleted (`runc delete --force`) and unmounted the same way."""
    state = work / "runc"
    cdir = work / "containers"
    sboxes = work / "sandboxes"
    state.mkdir(parents=True, exist_ok=True)
    out: dict[str, Any] = {"instances": instances, "threads": threads, "fs": filesystem_of(work),
                           "load_before": load_average()}
    ids = [f"raw-{i:04d}" for i in range(instances)]
    try:
        with concurrent.futures.ThreadPoolExecutor(threads) as pool:
            cpu0, busy0 = _children_cpu_s(), machine_busy_s()
            t0 = time.perf_counter()
            if threads == 1:
                runc_s = [_start_raw(image, state, cdir / cid, sboxes / cid, cid) for cid in ids]
            else:
                runc_s = list(pool.map(lambda cid: _start_raw(image, state, cdir / cid, sboxes / cid, cid), ids))
            window = time.perf_counter() - t0
            out["cpu_s"] = round(_children_cpu_s() - cpu0, 1)  # the runc calls (containers' own not reaped)
            out["machine_busy_s"] = round(machine_busy_s() - busy0, 1)
            out["load_after_start"] = load_average()
            out["window_s"] = round(window, 2)
            out["per_s"] = round(instances / window, 1)
            if threads == 1:
                out["runc_only_s"] = round(sum(runc_s), 2)
                out["runc_only_per_s"] = round(instances / sum(runc_s), 1)
            out["runc_run_p50_ms"] = round(statistics.median(runc_s) * 1000)
            # `runc run --detach` returns once the container is started: its
            # process's exec may still be under way.
            pids = wait_for(lambda: (p := container_sleeps(cdir)) and len(p) >= instances and p, timeout=60,
                            interval=0.01, message=f"{instances} raw container sleeps in /proc")
            out["up_s"] = round(time.perf_counter() - t0, 2)
            out["up_per_s"] = round(instances / out["up_s"], 1)
            assert len(pids) == instances, f"{len(pids)} container sleeps in /proc for {instances} containers"
            assert len(runc_ids(state)) == instances
            out["processes_checked"] = len(pids)
            t1 = time.perf_counter()
            list(pool.map(lambda cid: _delete_raw(state, cdir / cid, cid), ids))
            out["delete_s"] = round(time.perf_counter() - t1, 2)
        wait_for(lambda: not any(pid_alive(p) for p in pids), timeout=60, message="the raw containers gone")
    finally:
        out["sweep"] = sweep(work, [state])
        shutil.rmtree(cdir, ignore_errors=True)
        shutil.rmtree(sboxes, ignore_errors=True)
    assert not container_sleeps(work) and not mounts_under(work)
    return out


def _children_cpu_s() -> float:
    t = os.times()
    return t.children_user + t.children_system


# -- ours ------------------------------------------------------------------------------------------------


def ours(data_dir: Path, reference: str, *, instances: int = 200, timeout: float = 600.0) -> dict[str, Any]:
    """A warm-up app of 1 instance (the pull and unpack in its window),
    deleted; then one app of `instances` containers through the embedded
    agent; then scaled to 0."""
    resources = f"cpus:{max(64, instances)};mem:{max(65536, instances * 64)};disk:100000"
    flags = ["--agent_resources", resources, "--agent_cgroups", "off",
             "--launch_tokens", str(max(1000, instances))]
    agent = data_dir / "agent"
    containers = agent / "containers"
    out: dict[str, Any] = {"instances": instances, "fs": filesystem_of(data_dir)}
    container = {"type": "MESOS", "docker": {"image": reference}}
    try:
        with scenarios._server(data_dir, None, flags) as m:
            assert m.proc is not None
            # Warm-up: the agent pulls and unpacks the image for this one.
            warm = {"id": "/s6oci/warmup", "cmd": "exec sleep 600", "instances": 1, "cpus": 0.01, "mem": 8,
                    "portDefinitions": [], "container": container}
            burst = scenarios._burst(m, warm, interval=0.02, timeout=timeout)
            out["warmup_running_s"] = burst["running_s"]
            wait_for(lambda: len(container_sleeps(containers)) == 1, timeout=120, message="the warm-up container")
            assert m.client.delete("/v2/apps/s6oci/warmup").status_code == 200
            wait_for(lambda: not container_sleeps(containers) and not mounts_under(containers), timeout=120,
                     message="the warm-up container gone")
            m.wait_deployments_done(timeout=timeout)

            app = {"id": "/s6oci/sleepers", "cmd": "exec sleep 600", "instances": instances, "cpus": 0.01,
                   "mem": 8, "portDefinitions": [], "container": container}
            out["load_before"] = load_average()
            busy0 = machine_busy_s()
            t0 = time.perf_counter()
            burst = scenarios._burst(m, app, interval=0.02, timeout=timeout)
            out["running_s"] = burst["running_s"]
            out["per_s"] = round(instances / burst["running_s"], 1)
            out["cpu_s"] = burst["cpu_s"]  # the server process (its runc children not counted)
            out["machine_busy_s"] = round(machine_busy_s() - busy0, 1)  # the whole machine, to *running*
            out["api_during_burst"] = burst["api_during_burst"]
            pids = wait_for(lambda: (p := container_sleeps(containers)) and len(p) >= instances and p,
                            timeout=timeout, interval=0.05, message=f"{instances} container sleeps in /proc")
            out["up_s"] = round(time.perf_counter() - t0, 2)
            out["up_per_s"] = round(instances / out["up_s"], 1)
            out["load_after_start"] = load_average()
            assert len(pids) == instances, f"{len(pids)} container sleeps for {instances} instances"
            assert len(m.running_tasks(app["id"])) == instances
            out["processes_checked"] = len(pids)
            out["server_peak_rss_mib"] = round(peak_rss_mib(m.proc.pid))
            m.wait_deployments_done(timeout=timeout)
            t1 = time.perf_counter()
            out["scale_to_zero_s"] = round(scenarios._scale_to_zero(m, app["id"], timeout), 2)
            wait_for(lambda: not container_sleeps(containers) and not mounts_under(containers), timeout=timeout,
                     interval=0.05, message="every container and overlay gone")
            out["all_gone_s"] = round(time.perf_counter() - t1, 2)
            assert not any(pid_alive(p) for p in pids)
    finally:
        out["sweep"] = sweep(data_dir, [agent / "runc"])
    assert not container_sleeps(data_dir) and not mounts_under(data_dir)
    return out


# -- the scenarios -----------------------------------------------------------------------------------------


@contextlib.contextmanager
def registry_with_busybox(tmp: Path, *, extra_mb: float = 0) -> Iterator[tuple[Registry, str, Path]]:
    """A Registry on 127.0.0.1 holding a busybox image (plus `extra_mb` MB
    of random hex at /data/random.hex): (registry, reference, layout)."""
    files = {"/data/random.hex": random_hex(int(extra_mb * 1_000_000))} if extra_mb else None
    name = f"bench/busybox{'-' + str(extra_mb) + 'mb' if extra_mb else ''}:1"
    layout = build_busybox(tmp / ("layout-" + name.split("/")[1].replace(":", "-")), files=files)
    with Registry(tmp / "registry") as reg:
        yield reg, reg.push(layout, name), layout


def s6_oci(tmp: Path, *, instances: int = 200, parallel_threads: int = 8, timeout: float = 600.0) -> dict[str, Any]:
    """Raw `runc run --detach` (sequential, the baseline; then with
    `parallel_threads` threads, 0 for none: our agent starts its tasks on 8
    spawn threads) and ours, the same image, the same run."""
    out: dict[str, Any] = {"instances": instances, "load_before": load_average()}
    with registry_with_busybox(tmp) as (_, ref, layout):
        out["image"] = {"reference": ref, **image_bytes(layout)}
        image = ImageStore(tmp / "raw" / "images").get(ref)
        raw = raw_runc(image, tmp / "raw", instances=instances)
        out["raw"] = raw
        print(json.dumps({"raw": raw}), flush=True)
        if parallel_threads:
            par = raw_runc(image, tmp / "raw-parallel", instances=instances, threads=parallel_threads)
            out["raw_parallel"] = par
            print(json.dumps({"raw_parallel": par}), flush=True)
        ours_ = ours(tmp / "ours", ref, instances=instances, timeout=timeout)
        out["ours"] = ours_
    out["vs_raw"] = round(ours_["per_s"] / raw["per_s"], 3)
    out["vs_raw_runc_only"] = round(ours_["per_s"] / raw["runc_only_per_s"], 3)
    out["up_vs_raw_up"] = round(ours_["up_per_s"] / raw["up_per_s"], 3)
    if parallel_threads:
        out["vs_raw_parallel"] = round(ours_["per_s"] / out["raw_parallel"]["per_s"], 3)
        out["up_vs_raw_parallel_up"] = round(ours_["up_per_s"] / out["raw_parallel"]["up_per_s"], 3)
    out["load_after"] = load_average()
    return out


def pull(tmp: Path, *, mb: float = 5, rounds: int = 3) -> dict[str, Any]:
    """Pull + unpack of a busybox image with `mb` MB of random hex added:
    cold (a fresh store each round) and cached (`get` again on that store)."""
    out: dict[str, Any] = {"load_before": load_average()}
    cold, cached = [], []
    with registry_with_busybox(tmp, extra_mb=mb) as (_, ref, layout):
        out["image"] = {"reference": ref, **image_bytes(layout)}
        for n in range(rounds):
            store = ImageStore(tmp / f"store-{n}")
            t0 = time.perf_counter()
            image = store.get(ref)
            cold.append(time.perf_counter() - t0)
            assert (image.rootfs / "data/random.hex").stat().st_size == int(mb * 1_000_000)
            assert (image.rootfs / "bin/busybox").exists()
            t1 = time.perf_counter()
            again = store.get(ref)
            cached.append(time.perf_counter() - t1)
            assert again.rootfs == image.rootfs and again.digest == image.digest
            if n == 0:
                out["unpacked_bytes"] = tree_bytes(image.rootfs)
            shutil.rmtree(tmp / f"store-{n}")
    out["cold_s"] = [round(x, 3) for x in cold]
    out["cached_ms"] = [round(x * 1000, 2) for x in cached]
    out["cold_median_s"] = round(statistics.median(cold), 3)
    out["cached_median_ms"] = round(statistics.median(cached) * 1000, 2)
    out["load_after"] = load_average()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description="Run one S6-oci scenario.")
    parser.add_argument("scenario", choices=["s6oci", "pull"])
    parser.add_argument("--instances", type=int, default=200)
    parser.add_argument("--parallel-threads", type=int, default=8, help="s6oci: 0 for no parallel raw loop")
    parser.add_argument("--mb", type=float, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dir-base", help="where the temporary directory goes (e.g. /dev/shm)")
    ns = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix=f"marathon-{ns.scenario}-", dir=ns.dir_base) as tmp:
        if ns.scenario == "s6oci":
            result = s6_oci(Path(tmp), instances=ns.instances, parallel_threads=ns.parallel_threads)
        else:
            result = pull(Path(tmp), mb=ns.mb, rounds=ns.rounds)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
