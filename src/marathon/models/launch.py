"""What Marathon sends an agent to start one task (its "TaskInfo").

Built by `marathon.task_builder` from the app, the instance and the placement;
carried by the cluster driver to the agent, which runs it.  Everything the
agent needs is here: the agent never looks at app definitions.
"""

from __future__ import annotations

from typing import Literal

from msgspec import Struct

Limit = float | Literal["unlimited"] | None


class FetchUri(Struct, frozen=True, kw_only=True, gc=False):
    uri: str
    extract: bool = True
    executable: bool = False
    cache: bool = False
    dest_path: str | None = None


class AgentHealthCheck(Struct, frozen=True, kw_only=True, gc=False):
    """A health check the agent runs next to the task (Marathon's Mesos-level
    checks: COMMAND, MESOS_HTTP, MESOS_HTTPS, MESOS_TCP; SPEC.md 6.4).

    Mesos semantics: failures before the first success are ignored during
    `grace_period_seconds`; the task is killed after `consecutive_failures`
    failures in a row, where 0 means on the first failure.
    """

    protocol: Literal["COMMAND", "MESOS_HTTP", "MESOS_HTTPS", "MESOS_TCP"]
    command: str | None = None  # COMMAND: run with /bin/sh -c in the task's sandbox and environment
    port: int | None = None  # MESOS_*: the port to probe on the agent's host
    path: str = "/"  # MESOS_HTTP(S)
    grace_period_seconds: float = 300.0
    interval_seconds: float = 60.0
    timeout_seconds: float = 20.0
    consecutive_failures: int = 3
    delay_seconds: float = 15.0


class TaskLaunch(Struct, frozen=True, kw_only=True, gc=False):
    task_id: str
    instance_id: str
    app_id: str
    agent_id: str
    # Either a shell command (run with `/bin/sh -c`) or an argv (no shell).
    shell: bool
    command: str | None = None
    argv: list[str] = []
    env: dict[str, str] = {}
    cpus: float = 0.0
    mem: float = 0.0  # MiB
    disk: float = 0.0  # MiB
    gpus: int = 0
    # Hard limits; None means "same as the request", "unlimited" means none.
    cpu_limit: Limit = None
    mem_limit: Limit = None
    host_ports: list[int] = []
    # SIGTERM -> SIGKILL delay when the task is killed.
    kill_grace_seconds: float = 3.0
    user: str | None = None
    fetch: list[FetchUri] = []
    labels: dict[str, str] = {}
    health_check: AgentHealthCheck | None = None
