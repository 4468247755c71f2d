"""The app definition: Marathon's `App` JSON as msgspec Structs.

One Struct, `AppDefinition`, is both the request body of a create (RAML
`App`, with its defaults) and, after `marathon.models.app_rules.normalize`,
the canonical stored and rendered form.  Fields whose default depends on
other fields (port definitions, strategies, role, ...) start as `UNSET` and are
filled in by normalization; fields Marathon omits from its output when absent
stay `UNSET`, which msgspec never encodes.  Deprecated input fields (`ports`,
`uris`, `ipAddress`, `container.docker.network`, ...) are migrated away by
normalization and therefore never rendered.

`AppUpdate` (RAML `AppUpdate`: the same fields, all optional, no defaults) is
derived from `AppDefinition` programmatically so the two never drift apart.

Attribute names are snake_case; the wire names are camelCase (`rename="camel"`).
Unknown JSON properties are ignored, as Marathon ignores them.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType, field

# Integers a body may carry are 64-bit (what the store and msgspec bounds
# hold), so a number like 10**400 is a 422 at its path, never a failed write;
# `instances` is 32-bit, as Marathon's.  An app stored before these bounds
# existed is brought within them when it is read (`storage.repository`).
_STORABLE_MIN = -(2**63)
_STORABLE_MAX = 2**63 - 1
MAX_INSTANCES = 2**31 - 1

Port = Annotated[int, Meta(ge=0, le=65535)]
NonNegInt = Annotated[int, Meta(ge=0, le=_STORABLE_MAX)]
StorableInt = Annotated[int, Meta(ge=_STORABLE_MIN, le=_STORABLE_MAX)]
Instances = Annotated[int, Meta(ge=0, le=MAX_INSTANCES)]
Fraction = Annotated[float, Meta(ge=0.0, le=1.0)]
Protocol = Literal["tcp", "udp", "udp,tcp"]
Labels = dict[str, str]


class _Model(Struct, rename="camel", kw_only=True, frozen=True):
    """Common options: camelCase on the wire, immutable, keyword-only."""


class PortDefinition(_Model):
    port: Port = 0
    protocol: Protocol = "tcp"
    name: str | UnsetType = UNSET
    labels: Labels = {}


class PortMapping(_Model):
    container_port: Port = 0
    host_port: Port | UnsetType = UNSET
    service_port: Port = 0
    protocol: Protocol = "tcp"
    name: str | UnsetType = UNSET
    labels: Labels = {}
    network_names: list[str] | UnsetType = UNSET


class Network(_Model):
    mode: Literal["container", "container/bridge", "host"] = "container"
    name: str | UnsetType = UNSET
    labels: Labels | UnsetType = UNSET


class DockerParameter(_Model):
    key: str
    value: str


class PullConfig(_Model):
    secret: str


class DockerContainer(_Model):
    image: Annotated[str, Meta(min_length=1)]
    force_pull_image: bool = False
    privileged: bool = False
    parameters: list[DockerParameter] = []
    pull_config: PullConfig | UnsetType = UNSET
    # Deprecated input-only fields, migrated by normalization.
    network: Literal["BRIDGE", "HOST", "USER", "NONE"] | UnsetType = UNSET
    port_mappings: list[PortMapping] | UnsetType = UNSET
    credential: dict[str, Any] | UnsetType = UNSET


class PersistentVolumeInfo(_Model):
    size: Annotated[int, Meta(gt=0, le=_STORABLE_MAX)]
    type: Literal["root", "path", "mount"] | UnsetType = UNSET
    max_size: StorableInt | UnsetType = UNSET
    profile_name: str | UnsetType = UNSET
    constraints: list[list[str]] = []


class ExternalVolumeInfo(_Model):
    name: Annotated[str, Meta(min_length=1)]
    provider: Annotated[str, Meta(min_length=1)]
    options: dict[str, str] = {}
    size: StorableInt | UnsetType = UNSET
    shared: bool = False


class Volume(_Model):
    """Host (`hostPath`), persistent, external or secret volume."""

    container_path: Annotated[str, Meta(min_length=1)]
    host_path: str | UnsetType = UNSET
    mode: Literal["RO", "RW"] | UnsetType = UNSET
    persistent: PersistentVolumeInfo | UnsetType = UNSET
    external: ExternalVolumeInfo | UnsetType = UNSET
    secret: str | UnsetType = UNSET


class Seccomp(_Model):
    profile_name: str | UnsetType = UNSET
    unconfined: bool = False


class IpcInfo(_Model):
    mode: Literal["PRIVATE", "SHARE_PARENT"]
    shm_size: NonNegInt | UnsetType = UNSET


class LinuxInfo(_Model):
    seccomp: Seccomp | UnsetType = UNSET
    ipc_info: IpcInfo | UnsetType = UNSET


class Container(_Model):
    type: Literal["DOCKER", "MESOS"] = "DOCKER"
    docker: DockerContainer | UnsetType = UNSET
    volumes: list[Volume] = []
    port_mappings: list[PortMapping] | UnsetType = UNSET
    linux_info: LinuxInfo | UnsetType = UNSET


class CommandValue(_Model):
    value: Annotated[str, Meta(min_length=1)]


# Marathon's protocols, plus any a plugin registers (`marathon_health_checkers`):
# whether a checker exists is checked when a change is made, not here.
BUILTIN_HEALTH_PROTOCOLS = frozenset({"HTTP", "HTTPS", "TCP", "COMMAND", "MESOS_HTTP", "MESOS_HTTPS", "MESOS_TCP"})
HealthProtocol = Annotated[str, Meta(pattern=r"^[A-Z][A-Z0-9_]*$")]
MARATHON_HEALTH_PROTOCOLS = frozenset({"HTTP", "HTTPS", "TCP"})
MESOS_HEALTH_PROTOCOLS = frozenset({"MESOS_HTTP", "MESOS_HTTPS", "MESOS_TCP"})


class HealthCheck(_Model):
    protocol: HealthProtocol = "HTTP"
    path: str | UnsetType = UNSET
    port_index: NonNegInt | UnsetType = UNSET
    port: Port | UnsetType = UNSET
    command: CommandValue | UnsetType = UNSET
    grace_period_seconds: NonNegInt = 300
    interval_seconds: NonNegInt = 60
    timeout_seconds: NonNegInt = 20
    max_consecutive_failures: NonNegInt = 3
    delay_seconds: NonNegInt = 15
    # camelCase would give `ignoreHttp1Xx`: Marathon's name is spelled out.
    ignore_http1xx: bool | UnsetType = field(default=UNSET, name="ignoreHttp1xx")
    ip_protocol: Literal["IPv4", "IPv6"] = "IPv4"


class CheckHttp(_Model):
    port_index: NonNegInt | UnsetType = UNSET
    port: Port | UnsetType = UNSET
    path: str | UnsetType = UNSET
    scheme: Literal["HTTP", "HTTPS"] | UnsetType = UNSET


class CheckTcp(_Model):
    port_index: NonNegInt | UnsetType = UNSET
    port: Port | UnsetType = UNSET


class CheckExec(_Model):
    command: CommandValue


class Check(_Model):
    """A Mesos check (informational; results in `Task.checkResult`)."""

    http: CheckHttp | UnsetType = UNSET
    tcp: CheckTcp | UnsetType = UNSET
    exec: CheckExec | UnsetType = UNSET
    interval_seconds: NonNegInt = 60
    timeout_seconds: NonNegInt = 20
    delay_seconds: NonNegInt = 15


class ReadinessCheck(_Model):
    name: str = "readinessCheck"
    protocol: Literal["HTTP", "HTTPS"] = "HTTP"
    path: Annotated[str, Meta(max_length=1024)] = "/"
    port_name: str = "http-api"
    interval_seconds: NonNegInt = 30
    timeout_seconds: NonNegInt = 10
    http_status_codes_for_ready: list[Annotated[int, Meta(ge=100, le=999)]] = field(
        default_factory=lambda: [200]
    )
    preserve_last_response: bool = False


class UpgradeStrategy(_Model):
    minimum_health_capacity: Fraction
    maximum_over_capacity: Fraction


class UnreachableEnabled(_Model):
    inactive_after_seconds: NonNegInt = 0
    expunge_after_seconds: NonNegInt = 0


UnreachableStrategy = Literal["disabled"] | UnreachableEnabled


class Fetch(_Model):
    uri: Annotated[str, Meta(min_length=1, max_length=1024)]
    extract: bool = True
    executable: bool = False
    cache: bool = False
    dest_path: str | UnsetType = UNSET


class Residency(_Model):
    relaunch_escalation_timeout_seconds: NonNegInt = 3600
    task_lost_behavior: Literal["WAIT_FOREVER", "RELAUNCH_AFTER_TIMEOUT"] = "WAIT_FOREVER"


class ResourceLimits(_Model):
    cpus: float | Literal["unlimited"] | UnsetType = UNSET
    mem: float | Literal["unlimited"] | UnsetType = UNSET


class ExecutorResources(_Model):
    cpus: Annotated[float, Meta(ge=0.1)] = 0.1
    mem: Annotated[float, Meta(ge=32)] = 32.0
    disk: Annotated[float, Meta(ge=10)] = 10.0


class SecretDef(_Model):
    source: Annotated[str, Meta(min_length=1)]


class EnvSecretRef(_Model):
    secret: str


EnvValue = str | EnvSecretRef


class IpDiscovery(_Model):
    ports: list[dict[str, Any]] = []


class IpAddress(_Model):
    """Deprecated `ipAddress` (input only; translated into `networks`)."""

    discovery: IpDiscovery | UnsetType = UNSET
    groups: list[str] = []
    labels: Labels = {}
    network_name: str | UnsetType = UNSET


class VersionInfo(_Model):
    last_scaling_at: str
    last_config_change_at: str


KillSelection = Literal["YOUNGEST_FIRST", "OLDEST_FIRST"]


class AppDefinition(_Model):
    """A Marathon app: the create body (with RAML defaults) and the canonical form."""

    id: str
    cmd: str | None | UnsetType = UNSET
    args: list[str] = []
    user: str | None | UnsetType = UNSET
    env: dict[str, EnvValue] = {}
    secrets: dict[str, SecretDef] = {}
    instances: Instances = 1
    cpus: Annotated[float, Meta(ge=0.001)] = 1.0
    mem: Annotated[float, Meta(ge=0.0)] = 128.0
    disk: Annotated[float, Meta(ge=0.0)] = 0.0
    gpus: NonNegInt = 0
    resource_limits: ResourceLimits | UnsetType = UNSET
    executor: Annotated[str, Meta(pattern=r"^(//cmd)|(/?[^/]+(/[^/]+)*)|$")] = ""
    executor_resources: ExecutorResources | UnsetType = UNSET
    constraints: list[list[str]] = []
    accepted_resource_roles: list[str] | UnsetType = UNSET
    role: str | UnsetType = UNSET
    fetch: list[Fetch] = []
    port_definitions: list[PortDefinition] | UnsetType = UNSET
    require_ports: bool = False
    backoff_seconds: NonNegInt = 1
    backoff_factor: Annotated[float, Meta(ge=1.0)] = 1.15
    max_launch_delay_seconds: NonNegInt = 300
    container: Container | None | UnsetType = UNSET
    networks: list[Network] | UnsetType = UNSET
    health_checks: list[HealthCheck] = []
    check: Check | UnsetType = UNSET
    readiness_checks: list[ReadinessCheck] = []
    dependencies: list[str] = []
    upgrade_strategy: UpgradeStrategy | UnsetType = UNSET
    labels: Labels = {}
    task_kill_grace_period_seconds: NonNegInt | UnsetType = UNSET
    unreachable_strategy: UnreachableStrategy | UnsetType = UNSET
    kill_selection: KillSelection = "YOUNGEST_FIRST"
    residency: Residency | UnsetType = UNSET
    tty: bool | UnsetType = UNSET
    version: str | UnsetType = UNSET
    version_info: VersionInfo | UnsetType = UNSET
    # Deprecated input-only fields (never rendered; see module docstring).
    ports: list[Port] | UnsetType = UNSET
    uris: list[str] | UnsetType = UNSET
    ip_address: IpAddress | None | UnsetType = UNSET

    # -- derived facts used across the program -------------------------------

    @property
    def is_resident(self) -> bool:
        """Apps with persistent volumes keep reservations across restarts."""
        c = self.container
        return bool(c) and any(v.persistent is not UNSET for v in c.volumes)  # type: ignore[union-attr]

    @property
    def host_networking(self) -> bool:
        nets = self.networks
        return nets is UNSET or not nets or nets[0].mode == "host"

    @property
    def port_names(self) -> list[str | None]:
        """Names of the app's ports in port-index order (None when unnamed)."""
        if self.host_networking:
            defs = self.port_definitions or []
            return [None if d.name is UNSET else d.name for d in defs]  # type: ignore[union-attr]
        mappings = (self.container.port_mappings if self.container else UNSET) or []
        return [None if m.name is UNSET else m.name for m in mappings]  # type: ignore[union-attr]

    @property
    def port_count(self) -> int:
        return len(self.port_names)

    @property
    def service_ports(self) -> list[int]:
        if self.host_networking:
            return [d.port for d in (self.port_definitions or [])]  # type: ignore[union-attr]
        mappings = (self.container.port_mappings if self.container else UNSET) or []
        return [m.service_port for m in mappings]  # type: ignore[union-attr]


# Fields whose change is a scale, not an upgrade (SPEC.md 2.9).
SCALE_ONLY_FIELDS = frozenset({"instances"})
# Fields never compared when deciding whether a definition changed.
BOOKKEEPING_FIELDS = frozenset({"version", "version_info"})
# Deprecated input-only fields.
DEPRECATED_FIELDS = frozenset({"ports", "uris", "ip_address"})


def _derive_update_struct() -> type[Struct]:
    fields = []
    for f in msgspec.structs.fields(AppDefinition):
        tp = f.type
        fields.append((f.name, tp | UnsetType, UNSET))
    return msgspec.defstruct(
        "AppUpdate",
        fields,
        bases=(_Model,),
        module=__name__,
        rename="camel",
        kw_only=True,
        frozen=True,
    )


AppUpdate: type[Struct] = _derive_update_struct()
AppUpdate.__doc__ = """A partial app (RAML `AppUpdate`): every field optional, no defaults."""


def set_fields(update: Struct) -> dict[str, Any]:
    """The wire-named fields present in an `AppUpdate` (or any Struct)."""
    return msgspec.to_builtins(update)


def config_differs(a: AppDefinition, b: AppDefinition) -> bool:
    """True if anything other than `instances` and bookkeeping differs (an upgrade)."""
    skip = SCALE_ONLY_FIELDS | BOOKKEEPING_FIELDS
    for f in AppDefinition.__struct_fields__:
        if f in skip:
            continue
        if getattr(a, f) != getattr(b, f):
            return True
    return False
