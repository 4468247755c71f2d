"""What Marathon sends an agent to start one task (its "TaskInfo").

Built by `marathon.task_builder` from the app, the instance and the placement;
carried by the cluster driver to the agent, which runs it.  Everything the
agent needs is here: the agent never looks at app definitions.
"""

from __future__ import annotations

from typing import Literal

from msgspec import Struct

Limit = float | Literal["unlimited"] | None


class SecretValue(Struct, frozen=True, gc=False):
    """A secret's bytes, which no repr, log line or error message shows."""

    value: bytes

    def __repr__(self) -> str:
        return "SecretValue(<hidden>)"

    def text(self) -> str | None:
        try:
            return self.value.decode("utf-8")
        except UnicodeDecodeError:
            return None


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


class AgentCheck(Struct, frozen=True, kw_only=True, gc=False):
    """A Mesos check the agent runs next to the task (the app's `check`):
    informational, it never kills the task; each change of its result goes
    out as a TASK_RUNNING status carrying it."""

    protocol: Literal["HTTP", "TCP", "COMMAND"]
    command: str | None = None
    port: int | None = None
    path: str = "/"
    https: bool = False
    interval_seconds: float = 60.0
    timeout_seconds: float = 20.0
    delay_seconds: float = 15.0


class VolumeMount(Struct, frozen=True, kw_only=True, gc=False):
    """A volume the task asks for, as the definition says it (the agent
    decides whether it can provide that kind)."""

    kind: Literal["host", "persistent", "secret", "external"]
    container_path: str
    mode: Literal["RO", "RW"] = "RW"
    host_path: str | None = None  # host
    size_mib: int | None = None  # persistent
    secret: str | None = None  # secret: the name in the app's `secrets` (never its value)
    provider: str | None = None  # external
    name: str | None = None  # external


class ContainerSpec(Struct, frozen=True, kw_only=True, gc=False):
    """The app's `container`: which containerizer, which image, which volumes."""

    type: Literal["MESOS", "DOCKER"]
    image: str | None = None
    force_pull_image: bool = False
    privileged: bool = False
    parameters: list[tuple[str, str]] = []  # Docker CLI parameters (DOCKER only)
    pull_config: str | None = None  # the secret (its name in the app) holding a docker config.json
    volumes: list[VolumeMount] = []


class NetworkSpec(Struct, frozen=True, kw_only=True, gc=False):
    mode: Literal["host", "container/bridge", "container"]
    name: str | None = None


class PortMappingSpec(Struct, frozen=True, kw_only=True, gc=False):
    container_port: int
    # Whether it maps a host port: those are the launch's `host_ports`, in
    # the order of the mappings that take one.
    takes_host_port: bool = False
    protocol: str = "tcp"
    name: str | None = None


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
    check: AgentCheck | None = None
    # What the task needs beyond a process on the agent's host.  The agent
    # checks every one of these against what it can do
    # (`marathon.agent.capabilities`) and refuses the launch with a reason
    # rather than run the command without it.
    container: ContainerSpec | None = None
    networks: list[NetworkSpec] = []  # empty: the host's network
    port_mappings: list[PortMappingSpec] = []
    # Env vars whose value comes from a secret: name -> the secret's source.
    # A plugin may deliver them (it sets the variable); otherwise the agent
    # must resolve them itself.
    secret_env: dict[str, str] = {}
    # Secret values resolved by the leader (`marathon_secret_resolve`): for
    # env vars (env var name -> value) and for secret volumes (the secret's
    # name in the app -> value).  Never logged or shown (their repr hides
    # them); given only to the task.
    secret_env_values: dict[str, SecretValue] = {}
    secret_values: dict[str, SecretValue] = {}
    tty: bool = False
    executor: str = ""  # a custom executor to run the task with ("" or "//cmd": none)
