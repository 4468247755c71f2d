"""From (app, instance, placement) to the `TaskLaunch` an agent runs.

Pure (SPEC.md 8.3, 8.5, 8.6): the command or argv, resources and limits, the
kill grace period, the fetch list, and the task environment with Marathon's
variables (`MESOS_TASK_ID`, `MARATHON_APP_*`, `PORT0`, `PORTS`, `PORT_<NAME>`,
`HOST`, label variables) before the user's own `env`, which wins.
"""

from __future__ import annotations

import logging
import random
import re
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import msgspec.structs
from msgspec import UNSET

from .models.app import (
    MESOS_HEALTH_PROTOCOLS,
    AppDefinition,
    Container,
    EnvSecretRef,
    HealthCheck,
    Volume,
)
from .models.instance import Instance
from .models.launch import (
    AgentCheck,
    AgentHealthCheck,
    ContainerSpec,
    FetchUri,
    NetworkSpec,
    PortMappingSpec,
    SecretValue,
    TaskLaunch,
    VolumeMount,
)

DEFAULT_KILL_GRACE_SECONDS = 3.0
_LABEL_KEY_SANITIZE = re.compile(r"[^a-zA-Z0-9_]+")

log = logging.getLogger("marathon.task_builder")


@dataclass(frozen=True, slots=True)
class PortAssignment:
    """One port of a task (SPEC.md 8.3)."""

    name: str | None
    requested: int  # the port asked for: definition port / containerPort
    effective: int  # the port to reach the task on
    host_port: int | None


def port_assignments(app: AppDefinition, host_ports: Sequence[int], *, seed: int = 0) -> list[PortAssignment]:
    """Match allocated host ports (in port order, only for ports that asked
    for one) to the app's port definitions or mappings."""
    out: list[PortAssignment] = []
    hp = iter(host_ports)
    if app.host_networking:
        for d in app.port_definitions or []:  # type: ignore[union-attr]
            host = next(hp, None)
            out.append(PortAssignment(None if d.name is UNSET else d.name, d.port, host or 0, host))  # type: ignore[arg-type]
        return out
    rng = random.Random(seed)
    mappings = (app.container.port_mappings if app.container else UNSET) or []
    for m in mappings:  # type: ignore[union-attr]
        name = None if m.name is UNSET else m.name
        if m.host_port is not UNSET:
            host = next(hp, None)
            out.append(PortAssignment(name, m.container_port, host or 0, host))  # type: ignore[arg-type]
        else:
            effective = m.container_port or rng.randint(1025, 65535)
            out.append(PortAssignment(name, m.container_port, effective, None))  # type: ignore[arg-type]
    return out


def _fmt_double(value: float) -> str:
    """Scala's Double.toString for the values Marathon renders (0.1, 128.0)."""
    return repr(float(value))


def label_variables(labels: dict[str, str]) -> dict[str, str]:
    env: dict[str, str] = {}
    keys = []
    for key, value in labels.items():
        if len(key) >= 512 - 19 or len(value) >= 512:
            continue
        sanitized = _LABEL_KEY_SANITIZE.sub("_", key).upper()
        keys.append(sanitized)
        env[f"MARATHON_APP_LABEL_{sanitized}"] = value
    env["MARATHON_APP_LABELS"] = " ".join(keys)
    return env


_T = TypeVar("_T")
_CACHE_LIMIT = 4096


def _per_version(cache: dict[tuple, tuple[AppDefinition, _T]], key: tuple, app: AppDefinition,
                 build: Callable[[], _T]) -> _T:
    """What `build` makes for this app version, made once per version.  An
    equal definition in another object (a new root) takes the entry over,
    so the next lookup is an identity check again."""
    cached = cache.get(key)
    if cached is not None and cached[0] is not app:
        if cached[0] == app:
            cache[key] = cached = (app, cached[1])
        else:
            cached = None
    if cached is None:
        if len(cache) > _CACHE_LIMIT:
            cache.clear()
        cached = cache[key] = (app, build())
    return cached[1]


_STATIC_ENV: dict[tuple, tuple[AppDefinition, tuple[dict[str, str], dict[str, str]]]] = {}


def _static_environment(app: AppDefinition, enforce_role: bool) -> tuple[dict[str, str], dict[str, str]]:
    """(Marathon's variables, the user's string variables) of an app version:
    the same for every task of it, so built once (a burst launches thousands)."""

    def build() -> tuple[dict[str, str], dict[str, str]]:
        user = {k: v for k, v in app.env.items() if not isinstance(v, EnvSecretRef)}  # secrets: a plugin's job
        return _marathon_variables(app, enforce_role), user

    key = (app.id, app.version if app.version is not UNSET else "", enforce_role)
    return _per_version(_STATIC_ENV, key, app, build)


def _marathon_variables(app: AppDefinition, enforce_role: bool) -> dict[str, str]:
    env: dict[str, str] = {
        "MARATHON_APP_ID": app.id,
        "MARATHON_APP_VERSION": app.version if app.version is not UNSET else "",  # type: ignore[dict-item]
        "MARATHON_APP_RESOURCE_CPUS": _fmt_double(app.cpus),
        "MARATHON_APP_RESOURCE_MEM": _fmt_double(app.mem),
        "MARATHON_APP_RESOURCE_DISK": _fmt_double(app.disk),
        "MARATHON_APP_RESOURCE_GPUS": str(int(app.gpus)),
        "MARATHON_APP_ENFORCE_GROUP_ROLE": "TRUE" if enforce_role else "FALSE",
    }
    container = app.container
    if container and container.type == "DOCKER" and container.docker is not UNSET:  # type: ignore[union-attr]
        env["MARATHON_APP_DOCKER_IMAGE"] = container.docker.image  # type: ignore[union-attr]
    env.update(label_variables(app.labels))
    return env


def task_environment(
    app: AppDefinition,
    *,
    task_id: str,
    hostname: str,
    ports: Sequence[PortAssignment],
    env_vars_prefix: str | None = None,
    enforce_role: bool = False,
) -> dict[str, str]:
    marathon_vars, user_vars = _static_environment(app, enforce_role)
    env = {"MESOS_TASK_ID": task_id, **marathon_vars}
    prefix = env_vars_prefix or ""
    if ports:
        effective = [p.effective for p in ports]
        for i, p in enumerate(ports):
            env[f"{prefix}PORT{i}"] = str(p.effective)
            env[f"{prefix}PORT_{p.requested or p.effective}"] = str(p.effective)
            if p.name:
                env[f"{prefix}PORT_{p.name.upper()}"] = str(p.effective)
        env[f"{prefix}PORT"] = str(effective[0])
        env[f"{prefix}PORTS"] = ",".join(str(p) for p in effective)
    env[f"{prefix}HOST"] = hostname
    env.update(user_vars)
    return env


def agent_health_check(app: AppDefinition, ports: Sequence[PortAssignment]) -> AgentHealthCheck | None:
    """The one Mesos-level health check sent with the task (SPEC.md 6.4: at most
    one is sent; the port prefers the container port, else the host port)."""
    check: HealthCheck | None = next(
        (h for h in app.health_checks if h.protocol == "COMMAND" or h.protocol in MESOS_HEALTH_PROTOCOLS), None
    )
    if check is None:
        return None
    port: int | None = None
    if check.protocol != "COMMAND":
        if check.port is not UNSET:
            port = check.port  # type: ignore[assignment]
        elif check.port_index is not UNSET and check.port_index < len(ports):  # type: ignore[operator]
            assignment = ports[check.port_index]  # type: ignore[index]
            port = assignment.effective
    return AgentHealthCheck(
        protocol=check.protocol,  # type: ignore[arg-type]
        command=check.command.value if check.command is not UNSET else None,  # type: ignore[union-attr]
        port=port,
        path=check.path if check.path is not UNSET else "/",  # type: ignore[arg-type]
        grace_period_seconds=float(check.grace_period_seconds),
        interval_seconds=float(check.interval_seconds),
        timeout_seconds=float(check.timeout_seconds),
        consecutive_failures=check.max_consecutive_failures,
        delay_seconds=float(check.delay_seconds),
    )


def agent_check(app: AppDefinition, ports: Sequence[PortAssignment]) -> AgentCheck | None:
    """The app's Mesos `check` for the agent (the port by index resolves to
    the container port when there is one, else the host port: SPEC.md 6)."""
    c = app.check
    if c is UNSET:
        return None
    common = {"interval_seconds": float(c.interval_seconds), "timeout_seconds": float(c.timeout_seconds),  # type: ignore[union-attr]
              "delay_seconds": float(c.delay_seconds)}  # type: ignore[union-attr]
    if c.exec is not UNSET:  # type: ignore[union-attr]
        return AgentCheck(protocol="COMMAND", command=c.exec.command.value, **common)  # type: ignore[union-attr, arg-type]
    spec = c.http if c.http is not UNSET else c.tcp  # type: ignore[union-attr]
    if spec is UNSET:
        return None
    port: int | None = None
    if spec.port is not UNSET:  # type: ignore[union-attr]
        port = spec.port  # type: ignore[union-attr, assignment]
    elif spec.port_index is not UNSET and spec.port_index < len(ports):  # type: ignore[union-attr, operator]
        port = ports[spec.port_index].effective  # type: ignore[union-attr, index]
    if c.http is not UNSET:  # type: ignore[union-attr]
        return AgentCheck(protocol="HTTP", port=port, path=c.http.path if c.http.path is not UNSET else "/",  # type: ignore[union-attr]
                          https=c.http.scheme == "HTTPS", **common)  # type: ignore[union-attr, arg-type]
    return AgentCheck(protocol="TCP", port=port, **common)  # type: ignore[arg-type]


def container_spec(container: Container | None) -> ContainerSpec | None:
    """The launch's view of the app's `container` (None: a plain command)."""
    if not container:
        return None
    docker = container.docker if container.docker is not UNSET else None
    return ContainerSpec(
        type=container.type,
        image=docker.image if docker is not None else None,  # type: ignore[union-attr]
        force_pull_image=bool(docker and docker.force_pull_image),  # type: ignore[union-attr]
        privileged=bool(docker and docker.privileged),  # type: ignore[union-attr]
        pull_config=docker.pull_config.secret if docker is not None and docker.pull_config is not UNSET  # type: ignore[union-attr]
        else None,
        parameters=[(p.key, p.value) for p in docker.parameters] if docker is not None else [],  # type: ignore[union-attr]
        volumes=[_volume_mount(v) for v in container.volumes],
    )


def _volume_mount(v: Volume) -> VolumeMount:
    mode = "RW" if v.mode is UNSET else v.mode
    if v.persistent is not UNSET:
        return VolumeMount(kind="persistent", container_path=v.container_path, mode=mode,  # type: ignore[arg-type]
                           size_mib=v.persistent.size)  # type: ignore[union-attr]
    if v.external is not UNSET:
        return VolumeMount(kind="external", container_path=v.container_path, mode=mode,  # type: ignore[arg-type]
                           provider=v.external.provider, name=v.external.name)  # type: ignore[union-attr]
    if v.secret is not UNSET:
        return VolumeMount(kind="secret", container_path=v.container_path, mode="RO",
                           secret=v.secret)  # type: ignore[arg-type]
    return VolumeMount(kind="host", container_path=v.container_path, mode=mode,  # type: ignore[arg-type]
                       host_path=None if v.host_path is UNSET else v.host_path)  # type: ignore[arg-type]


def _networks(app: AppDefinition) -> list[NetworkSpec]:
    if app.host_networking:
        return []
    return [NetworkSpec(mode=n.mode, name=None if n.name is UNSET else n.name)  # type: ignore[arg-type]
            for n in app.networks]  # type: ignore[union-attr]


def _port_mappings(app: AppDefinition) -> list[PortMappingSpec]:
    if app.host_networking:
        return []
    mappings = (app.container.port_mappings if app.container else UNSET) or []  # type: ignore[union-attr]
    return [
        PortMappingSpec(
            container_port=m.container_port, takes_host_port=m.host_port is not UNSET,
            protocol=m.protocol, name=None if m.name is UNSET else m.name,  # type: ignore[arg-type]
        )
        for m in mappings  # type: ignore[union-attr]
    ]


def resolve_secrets(app: AppDefinition, launch: TaskLaunch,
                    resolve: Callable[[str], bytes | None]) -> TaskLaunch:
    """The launch with its secrets' values: each secret env var's in
    `secret_env_values` (UTF-8 text only), each secret volume's and the
    pull config's (`docker.pullConfig`) in `secret_values`.
    A secret `resolve` does not know (None), cannot give (it raised), or
    that is not text for an env var is left out: the agent then refuses the
    launch naming it.  Each source is asked once per launch."""
    values: dict[str, bytes | None] = {}

    def value(source: str) -> bytes | None:
        if source not in values:
            try:
                values[source] = resolve(source)
            except Exception as e:  # a plugin's failure fails the launch, not the scheduler
                log.warning("secret_resolve_failed app=%s source=%s error=%s", app.id, source, type(e).__name__)
                values[source] = None
        return values[source]

    env: dict[str, SecretValue] = {}
    for name, source in launch.secret_env.items():
        v = value(source)
        if v is not None:
            if SecretValue(v).text() is None:
                log.warning("secret_not_text app=%s env=%s", app.id, name)
            else:
                env[name] = SecretValue(v)
    files: dict[str, SecretValue] = {}
    wanted = [vol.secret for vol in (launch.container.volumes if launch.container else ())
              if vol.kind == "secret" and vol.secret]
    if launch.container is not None and launch.container.pull_config:
        wanted.append(launch.container.pull_config)
    for name in wanted:
        ref = app.secrets.get(name)
        v = value(ref.source) if ref is not None else None
        if v is not None:
            files[name] = SecretValue(v)
    return msgspec.structs.replace(launch, secret_env_values=env, secret_values=files)


def _secret_env(app: AppDefinition) -> dict[str, str]:
    """Env vars that name a secret -> the secret's source (never a value)."""
    out: dict[str, str] = {}
    for name, value in app.env.items():
        if isinstance(value, EnvSecretRef):
            ref = app.secrets.get(value.secret)
            out[name] = ref.source if ref is not None else value.secret
    return out


def build_launch(
    app: AppDefinition,
    instance: Instance,
    *,
    env_vars_prefix: str | None = None,
    enforce_role: bool = False,
) -> TaskLaunch:
    """The launch of `instance`'s current task (the instance must be provisioned)."""
    task = instance.task
    assert task is not None and instance.agent_id is not None
    ports = port_assignments(app, task.host_ports, seed=zlib.crc32(task.task_id.encode()))
    env = task_environment(
        app,
        task_id=task.task_id,
        hostname=instance.hostname or "",
        ports=ports,
        env_vars_prefix=env_vars_prefix,
        enforce_role=enforce_role,
    )
    return msgspec.structs.replace(
        _launch_template(app),
        task_id=task.task_id,
        instance_id=instance.instance_id,
        agent_id=instance.agent_id,
        env=env,
        host_ports=list(task.host_ports),
        health_check=agent_health_check(app, ports),
        check=agent_check(app, ports),
    )


_TEMPLATES: dict[tuple, tuple[AppDefinition, TaskLaunch]] = {}


def _launch_template(app: AppDefinition) -> TaskLaunch:
    """What every launch of an app version has in common, built once: a
    burst builds thousands of launches, each a copy with the task's own
    fields.  The copies share the template's argv, fetch and labels (a
    launch is read-only)."""
    key = (app.id, app.version if app.version is not UNSET else "")
    return _per_version(_TEMPLATES, key, app, lambda: _new_template(app))


def _new_template(app: AppDefinition) -> TaskLaunch:
    limits = app.resource_limits
    cmd = app.cmd if isinstance(app.cmd, str) else None
    return TaskLaunch(
        task_id="",
        instance_id="",
        app_id=app.id,
        agent_id="",
        shell=cmd is not None,
        command=cmd,
        argv=list(app.args) if cmd is None else [],
        cpus=app.cpus,
        mem=app.mem,
        disk=app.disk,
        gpus=app.gpus,
        cpu_limit=None if limits is UNSET or limits.cpus is UNSET else limits.cpus,  # type: ignore[union-attr]
        mem_limit=None if limits is UNSET or limits.mem is UNSET else limits.mem,  # type: ignore[union-attr]
        kill_grace_seconds=float(app.task_kill_grace_period_seconds)
        if app.task_kill_grace_period_seconds is not UNSET
        else DEFAULT_KILL_GRACE_SECONDS,
        user=app.user if isinstance(app.user, str) else None,
        fetch=[
            FetchUri(
                uri=f.uri, extract=f.extract, executable=f.executable, cache=f.cache,
                dest_path=None if f.dest_path is UNSET else f.dest_path,  # type: ignore[arg-type]
            )
            for f in app.fetch
        ],
        labels=dict(app.labels),
        container=container_spec(app.container or None),  # type: ignore[arg-type]
        networks=_networks(app),
        port_mappings=_port_mappings(app),
        secret_env=_secret_env(app),
        tty=app.tty is True,
        executor="" if app.executor in ("", "//cmd") else app.executor,
    )
