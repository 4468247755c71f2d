"""`marathon agent`: run tasks on this machine for a Marathon master elsewhere.

    marathon agent --master http://10.0.0.1:8080 --secret_file /etc/marathon/agent.secret \\
        --work_dir /var/lib/marathon-agent --attributes "rack:r1;zone:a" \\
        --resources "cpus:8;mem:16384" --ports 31000-32000

With several masters, `--master zk://zk1:2181,zk2:2181/marathon` finds the
leader in ZooKeeper (the masters' --zk), and `--master
http://m1:8080,http://m2:8080` asks the masters in turn (a standby redirects
to the leader).

Every flag is also read from `MARATHON_AGENT_<FLAG>`.  Tasks outlive the
agent process: stopping it (or its crash) leaves them running, and the next
start re-adopts them.  Exit codes: 0 on a clean stop, 2 for bad flags, 113
when the work dir cannot be written, 114 when the master will never take
this agent (it belongs to another cluster, or was marked gone).
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
from pathlib import Path
from urllib.parse import urlsplit

import platformdirs

from ._exits import EXIT_REFUSED, EXIT_STORAGE, first_leaf, storage_failure
from ._logging import setup_logging

log = logging.getLogger("marathon.agent")

EXIT_BAD_FLAG = 2  # argparse's own code for bad flags

_FLAGS: list[tuple[str, dict]] = [
    ("master", {"required": True, "help": "Where the leader is: zk://[user:pass@]host:port[,host:port...]/path, "
                                         "the masters' --zk (ZooKeeper names the leader), or the masters' "
                                         "http://host:port, comma-separated (tried in order; a standby "
                                         "redirects to the leader)."}),
    ("secret_file", {"required": True, "help": "File holding the agent secret (the masters' --agent_secret_file)."}),
    ("work_dir", {"default": str(Path(platformdirs.user_data_dir("marathon")) / "agent"),
                  "help": "Sandboxes, checkpoints and the agent's identity."}),
    ("hostname", {"default": None, "help": "What tasks and the masters reach this machine by (default: the address "
                                           "this machine uses to reach the first master)."}),
    ("http_address", {"default": None, "help": "Address of the agent's endpoint (sandbox files; default: --hostname)."}),
    ("http_port", {"default": 5051, "type": int, "help": "Port of the agent's endpoint (Mesos' agent port)."}),
    ("resources", {"default": None, "help": "Mesos style 'cpus:8;mem:16384;disk:100000' (default: detected)."}),
    ("ports", {"default": "31000-32000", "help": "Host port ranges for tasks, e.g. '31000-32000,33000-33100'."}),
    ("attributes", {"default": None, "help": "Attributes for constraints, 'rack:r1;zone:a'."}),
    ("region", {"default": None, "help": "Fault domain region."}),
    ("zone", {"default": None, "help": "Fault domain zone."}),
    ("cgroups", {"default": "auto", "choices": ["auto", "off"], "help": "cpu/memory limits of tasks through cgroups."}),
    ("spawn_threads", {"default": 8, "type": int, "help": "Worker threads that start tasks."}),
    ("oci_runtime", {"default": "runc", "help": "The OCI runtime that runs tasks with an image (runc; crun needs "
                                              "cgroups without controllers on cgroup2); none: run no images."}),
    ("insecure_registries", {"default": None, "help": "host:port of registries spoken to in plain HTTP, "
                                                    "comma-separated (loopback registries always are)."}),
    ("network_cni_config_dir", {"default": None, "help": "Directory of CNI network configurations (*.conf, "
                                                       "*.conflist): the networks tasks may join by name."}),
    ("network_cni_plugins_dir", {"default": "/usr/lib/cni", "help": "Where the CNI plugins are."}),
    ("allow_privileged", {"action": "store_true", "default": False,
                          "help": "Run containers that ask for `privileged` (every capability, no masked "
                                  "paths); refused otherwise."}),
    ("docker_config", {"default": None, "help": "A docker config.json with registry credentials for pulls."}),
    ("fetcher_cache_size", {"default": 2 * 1024**3, "type": int,
                            "help": "Bytes of fetched URIs (those with cache: true) kept for later tasks "
                                    "(Mesos' --fetcher_cache_size)."}),
    ("logging_level", {"default": "info", "help": "off, error, warn, info, debug."}),
    ("simulate", {"action": "store_true", "default": False,
                  "help": "Run no process: tasks are simulated (RUNNING at once), for benchmarks of the protocol."}),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="marathon agent", description=__doc__.split("\n\n")[0])
    for name, kw in _FLAGS:
        kw = dict(kw)
        env = os.environ.get(f"MARATHON_AGENT_{name.upper()}")
        if env is not None:
            if kw.get("action") == "store_true":
                kw["default"] = env.lower() in ("1", "true", "yes")
            else:
                kw["default"] = env if kw.get("type") is not int else int(env)
            kw["required"] = False
        parser.add_argument(f"--{name}", f"--{name.replace('_', '-')}", dest=name, **kw)
    return parser


def _route_address(master: str) -> str:
    """The local address this machine reaches `master` from (for zk://, its
    first ZooKeeper server)."""
    if master.startswith("zk://"):
        from ..config import parse_zk_url

        master = "tcp://" + parse_zk_url(master)[0].split(",")[0]
    parts = urlsplit(master)
    host = parts.hostname or "127.0.0.1"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect((host, parts.port or 8080))
        return s.getsockname()[0]


def _masters(flag: str) -> list[str] | None:
    """--master as DaemonConfig.masters (one zk:// URL, or http URLs), or
    None if it is neither."""
    if flag.strip().startswith("zk://"):
        from ..config import parse_zk_url

        try:
            parse_zk_url(flag.strip())
        except ValueError:
            return None
        return [flag.strip()]
    masters = [m.strip() for m in flag.split(",") if m.strip()]
    if not masters or not all(m.startswith(("http://", "https://")) for m in masters):
        return None
    return masters


def main(argv: list[str]) -> int:
    ns = build_parser().parse_args(argv)
    setup_logging(ns.logging_level)
    from ..agent.daemon import read_secret
    from ..models.agent import parse_attributes, parse_port_ranges, parse_resources

    masters = _masters(ns.master)
    if masters is None:
        print("marathon agent: --master takes zk://host:port[,host:port...]/path, or http://host:port URLs, "
              "comma-separated", file=sys.stderr)
        return EXIT_BAD_FLAG
    try:
        secret = read_secret(ns.secret_file)
        ports = parse_port_ranges(ns.ports)
        attributes = parse_attributes(ns.attributes) if ns.attributes else []
        resources = parse_resources(ns.resources) if ns.resources else None
    except (OSError, ValueError) as e:
        print(f"marathon agent: {e}", file=sys.stderr)
        return EXIT_BAD_FLAG
    hostname = ns.hostname or _route_address(masters[0])
    import trio

    from ..agent import machine
    from ..agent.daemon import AgentFatal
    from ..agent.executor import WorkDirInUse

    code = 0
    try:
        work_dir = Path(ns.work_dir)
        work_dir.mkdir(parents=True, exist_ok=True)
        resources = resources or machine.detect_resources(work_dir)
        trio.run(_run, ns, masters, secret, hostname, ports, attributes, resources)
    except* KeyboardInterrupt:
        code = 0
    except* WorkDirInUse as group:
        print(f"marathon agent: {first_leaf(group)}", file=sys.stderr)
        code = EXIT_BAD_FLAG
    except* AgentFatal as group:
        print(f"marathon agent: the master refuses this agent: {first_leaf(group)}", file=sys.stderr)
        code = EXIT_REFUSED
    except* OSError as group:
        exc = first_leaf(group)
        if not storage_failure(exc):
            raise
        print(f"marathon agent: cannot write to {ns.work_dir}: {exc}; running tasks were left alone",
              file=sys.stderr)
        code = EXIT_STORAGE
    return code


async def _run(ns, masters, secret, hostname, ports, attributes, resources) -> None:  # type: ignore[no-untyped-def]
    import signal

    import trio

    from .. import httpserver
    from ..agent.capabilities import agent_capabilities
    from ..agent.cni import network_support
    from ..agent.daemon import AgentDaemon, DaemonConfig, load_meta
    from ..agent.executor import Executor
    from ..agent.files import files_app
    from ..agent.oci import image_support
    from ..agent.simulated import SimulatedExecutor
    from ..models.agent import ports_in
    from ..models.instance import TaskStatus
    from ..models.resources import Resources
    from ..storage.leader_watch import LeaderWatch

    work_dir = Path(ns.work_dir)
    meta = load_meta(work_dir)
    total = Resources(cpus=resources.cpus, mem=resources.mem, disk=resources.disk, gpus=resources.gpus,
                      ports=ports_in(ports))
    status_send, statuses = trio.open_memory_channel[TaskStatus](100_000)
    answer_send, answers = trio.open_memory_channel[TaskStatus](100_000)
    executor: Executor | SimulatedExecutor
    if ns.simulate:
        executor = SimulatedExecutor(work_dir, agent_id=meta.agent_id, send=status_send, answers=answer_send)
    else:
        images, oci = image_support(
            work_dir, runtime=ns.oci_runtime,
            insecure_registries=tuple(r.strip() for r in (ns.insecure_registries or "").split(",") if r.strip()),
            auth_file=Path(ns.docker_config) if ns.docker_config else None)
        networks = network_support(
            work_dir, config_dir=Path(ns.network_cni_config_dir) if ns.network_cni_config_dir else None,
            plugins_dir=Path(ns.network_cni_plugins_dir))
        executor = Executor(
            work_dir, agent_id=meta.agent_id, send=status_send, answers=answer_send, cgroups=ns.cgroups,
            kill_tasks_on_exit=False, spawn_concurrency=ns.spawn_threads, ip_addresses=[hostname],
            capabilities=agent_capabilities(images=oci is not None, privileged=ns.allow_privileged,
                                            networks=networks.names() if networks else frozenset()),
            fetcher_cache_bytes=ns.fetcher_cache_size, images=images, oci=oci, networks=networks,
        )
    address = ns.http_address or hostname
    endpoint = f"http://{address}:{ns.http_port}"
    daemon = AgentDaemon(
        DaemonConfig(masters=masters, secret=secret, work_dir=work_dir, hostname=hostname, endpoint=endpoint,
                     resources=total, port_ranges=ports, attributes=attributes, region=ns.region,
                     zone=ns.zone),
        executor, statuses, answers, open_leader_watch=LeaderWatch.open,
    )
    async with trio.open_nursery() as nursery:

        async def stop_on_signal() -> None:
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for _ in signals:
                    log.info("agent stopping (tasks keep running)")
                    nursery.cancel_scope.cancel()
                    return

        nursery.start_soon(stop_on_signal)
        await nursery.start(executor.run)
        await nursery.start(httpserver.serve, files_app(executor.sandboxes, secret, stats=daemon.updates.stats),
                            address, ns.http_port)
        log.info("agent started agent_id=%s hostname=%s endpoint=%s masters=%s", meta.agent_id, hostname,
                 endpoint, ",".join(masters))
        await daemon.run()
