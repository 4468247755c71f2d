"""The local cluster driver: this machine as Marathon's one agent.

`LocalDriver` implements the `ClusterDriver` contract (see `__init__.py`) on
top of the embedded agent (`marathon.agent.executor`): tasks run as real
processes here, offers are this machine's resources minus what the live
tasks hold, and free ports are the configured ranges minus the ports our
tasks hold minus the ports something on this machine is bound to right now.

Tasks launched with a `health_check` (Marathon's Mesos-level checks) are
probed here, next to them; results arrive as the `healthy` flag of
TASK_RUNNING statuses, and too many failures kill the task (TASK_KILLED,
reason REASON_TASK_HEALTH_CHECK_STATUS_UPDATED).

It is what `marathon serve` uses by default.  Everything it needs lives
under `work_dir`: the agent id, the sandboxes and the checkpoint that lets a
restarted `marathon serve` re-adopt the tasks that outlived it.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

import trio

from ..agent import machine
from ..agent.capabilities import agent_capabilities
from ..agent.checkpoint import load_or_create_agent_id
from ..agent.cni import network_support
from ..agent.executor import Executor, now_ms
from ..agent.oci import image_support
from ..models.agent import AgentInfo, Attribute, Offer, PortRange, ports_in
from ..models.instance import TaskStatus
from ..models.launch import TaskLaunch
from ..models.resources import Resources

log = logging.getLogger("marathon.agent")

# The Mesos agent's default port resource.
DEFAULT_PORT_RANGES = (PortRange(31000, 32000),)


class LocalDriver:
    """An in-process agent running tasks on this machine.

    Constructor arguments:

    * `work_dir` -- agent id, sandboxes (`sandboxes/<task id>/`), checkpoint.
    * `hostname` -- what tasks and health checks reach us by (default: this
      machine's hostname).
    * `agent_id` -- default: generated once and kept in `work_dir/agent_id`.
    * `resources` -- override the detected totals (all CPUs, MemTotal minus
      256 MiB, free disk of work_dir minus 1 GiB, no GPUs); its `ports` is
      ignored, the port count comes from `port_ranges`.
    * `port_ranges`, `attributes`, `region`, `zone`, `role` -- as offered.
    * `cgroups` -- "auto" (use them if usable, else warn once) or "off".
    * `kill_tasks_on_exit` -- on a clean stop, kill every task (each with its
      grace period) so none outlives the server.  With False they keep
      running and the next start re-adopts them.
    * `time_ms` -- wall clock for status timestamps (ms since the epoch).
    * `sandbox_max_age` (s), `sandbox_max_count` -- sandbox garbage collection.
    * `update_buffer` -- capacity of `updates`.
    * `spawn_concurrency` -- processes spawned in parallel (worker threads).
    * `health_check_concurrency` -- health-check probes (COMMAND, MESOS_HTTP,
      MESOS_HTTPS, MESOS_TCP) in flight at once, across all tasks.
    """

    def __init__(
        self,
        work_dir: Path,
        *,
        hostname: str | None = None,
        agent_id: str | None = None,
        resources: Resources | None = None,
        port_ranges: Sequence[PortRange] = DEFAULT_PORT_RANGES,
        attributes: Sequence[Attribute] = (),
        region: str | None = None,
        zone: str | None = None,
        role: str = "*",
        cgroups: Literal["auto", "off"] = "auto",
        kill_tasks_on_exit: bool = True,
        time_ms: Callable[[], int] = now_ms,
        sandbox_max_age: float = 3600.0,
        sandbox_max_count: int = 1000,
        update_buffer: int = 100_000,
        spawn_concurrency: int = 8,
        health_check_concurrency: int = 256,
        oci_runtime: str = "runc",
        insecure_registries: tuple[str, ...] = (),
        docker_config: Path | None = None,
        cni_config_dir: Path | None = None,
        allow_privileged: bool = False,
    ) -> None:
        self.work_dir = Path(work_dir)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.agent_id = agent_id or load_or_create_agent_id(self.work_dir)
        self.hostname = hostname or socket.gethostname()
        self._port_ranges = sorted(port_ranges, key=lambda r: r.begin)
        base = resources or machine.detect_resources(self.work_dir)
        self._total = Resources(
            cpus=base.cpus, mem=base.mem, disk=base.disk, gpus=base.gpus,
            ports=ports_in(self._port_ranges),
        )
        self._info = AgentInfo(
            id=self.agent_id, hostname=self.hostname, region=region, zone=zone,
            attributes=list(attributes), role=role, total=self._total,
            port_ranges=list(self._port_ranges),
        )
        self._attributes = {a.name: a.render() for a in attributes}
        self._bound_ports = machine.ListeningPorts(ttl=1.0)
        send, self.updates = trio.open_memory_channel[TaskStatus](update_buffer)
        images, oci = image_support(self.work_dir, runtime=oci_runtime, insecure_registries=insecure_registries,
                                    auth_file=docker_config)
        networks = network_support(self.work_dir, config_dir=cni_config_dir)
        self.executor = Executor(
            self.work_dir, agent_id=self.agent_id, send=send, time_ms=time_ms, cgroups=cgroups,
            kill_tasks_on_exit=kill_tasks_on_exit, sandbox_max_age=sandbox_max_age,
            sandbox_max_count=sandbox_max_count, spawn_concurrency=spawn_concurrency,
            health_check_concurrency=health_check_concurrency,
            capabilities=agent_capabilities(images=oci is not None, gpus=int(self._total.gpus),
                                            privileged=allow_privileged,
                                            networks=networks.names() if networks else frozenset()),
            images=images, oci=oci, networks=networks,
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Recover tasks from a previous run, report ready, supervise until cancelled."""
        # Name resolution can block for seconds: never on the trio thread.
        self.executor.ip_addresses = await trio.to_thread.run_sync(_addresses_of, self.hostname)
        await self.executor.run(task_status=task_status)

    def agents(self) -> list[AgentInfo]:
        return [self._info]

    def offers(self) -> list[Offer]:
        used = self.executor.allocated
        taken = self.executor.held_ports()
        taken.update(self._bound_ports.get())
        ranges = machine.subtract_ports(self._port_ranges, taken)
        free = Resources(
            cpus=max(0, self._total.cpus - used.cpus),
            mem=max(0, self._total.mem - used.mem),
            disk=max(0, self._total.disk - used.disk),
            gpus=max(0, self._total.gpus - used.gpus),
            ports=ports_in(ranges),
        )
        return [Offer(
            agent_id=self.agent_id, hostname=self.hostname, free=free, port_ranges=ranges,
            total=self._total, region=self._info.region, zone=self._info.zone,
            attributes=dict(self._attributes), role=self._info.role,
        )]

    def launch(self, tasks: Sequence[TaskLaunch]) -> None:
        self.executor.launch(tasks)

    def kill(self, task_ids: Sequence[str], *, grace_seconds: float | None = None) -> None:
        self.executor.kill(task_ids, grace_seconds=grace_seconds)

    def reconcile(self, task_ids: Sequence[str] | None, *, others: bool = False) -> None:
        self.executor.reconcile(task_ids, others=others)


def _addresses_of(hostname: str) -> list[str]:
    """The IPv4 address tasks report (host networking: the agent's), resolved
    once when the agent starts, never on a request path."""
    try:
        return [str(ipaddress.ip_address(hostname))]
    except ValueError:
        pass
    try:
        return [socket.gethostbyname(hostname)]
    except OSError:
        log.warning("cannot resolve the agent hostname=%s; tasks report no ipAddresses", hostname)
        return []
