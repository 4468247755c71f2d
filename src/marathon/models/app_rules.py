"""App definition rules: Marathon's normalization and validation pipeline.

`normalize_app` turns a decoded `AppDefinition` (the create body, RAML
defaults applied) into the canonical definition Marathon would store and
render, or refuses it with every violation Marathon would report, in the
order of SPEC.md 2.1:

2. deprecated-API checks (`ports`, `uris`, `ipAddress`, `docker.network`, ...);
3. migration of deprecated fields and field defaults that other fields decide;
4. the default `role`;
5. canonical validation, collecting every violation (SPEC.md 2.6);
6. post-validation defaults (network names, default container, bridge host
   ports, unreachable/upgrade strategies, `requirePorts`);
7. model validation (roles, resident apps, strategies).

Each stage that finds violations raises `ValidationFailed` (422 "Object is not
valid") with Marathon's messages and JSON paths; later stages do not run, as in
Marathon.  Partial updates are merged with `merge_update` and then normalized
as complete apps (SPEC.md 2.7).

Decoding (step 1) and the deprecated API (steps 2-3) live in `app_decode`;
its entry points are re-exported here.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import msgspec
from msgspec import UNSET, structs

from ..errors import IllegalArgument, ValidationFailed, Violation
from . import pathid
from .app import (
    MARATHON_HEALTH_PROTOCOLS,
    MESOS_HEALTH_PROTOCOLS,
    AppDefinition,
    AppUpdate,
    Container,
    EnvSecretRef,
    HealthCheck,
    Network,
    UnreachableEnabled,
    UpgradeStrategy,
    set_fields,
)
from .app_decode import (
    DEFAULT_PORT_MAPPING,
    bridge_host_ports,
    decode_app,
    decode_app_update,
    decode_json,
    deprecated_violations,
    given,
    has_duplicates,
    host_networking,
    items,
    migrate_app,
    migrate_update,
    uri_is_valid,
)
from .constraint import compile_java_regex, validate_constraint

__all__ = [
    "MAX_ID_DEPTH",
    "AppContext",
    "app_json",
    "check_rollback_only",
    "decode_app",
    "decode_app_update",
    "decode_json",
    "instances_over_limit",
    "is_rollback",
    "merge_update",
    "normalize",
    "normalize_app",
    "too_deep",
]

_replace = structs.replace


@dataclass(frozen=True, slots=True)
class AppContext:
    """What normalization/validation needs to know beyond the body."""

    mesos_role: str = "*"
    # The app's top-level group enforces its role (or would, for a new group,
    # per --new_group_enforce_role).
    enforce_role: bool = False
    # Role of the stored app being updated, if any.
    existing_role: str | None = None
    default_network_name: str | None = None
    mesos_bridge_name: str = "mesos-bridge"
    # --enable_features: vips, task_killing, external_volumes, secrets, gpu_resources
    features: frozenset[str] = frozenset()
    # Relative ids are resolved against this (apps API: "/", groups API: the enclosing group).
    base: str = "/"
    # `?force=true`: allows changing the role of an existing resident app.
    force: bool = False
    # --max_instances_per_app (None: only Marathon's 32-bit bound).
    max_instances: int | None = None


# -- messages (Marathon's wording) ------------------------------------------------

CMD_ARGS_OR_CONTAINER = (
    "AppDefinition must either contain one of 'cmd' or 'args', and/or a 'container'."
)
HEALTH_PORT_INDEX = (
    "Health check port indices must address an element of the ports array "
    "or container port mappings."
)
HEALTH_IPV6 = (
    "IPv6 can only be used for container type DOCKER and Mesos http/https/tcp health checks"
)
NETWORK_NAME_REQUIRED_FOR_MULTIPLE = (
    "networkNames must be a single item list when hostPort is specified and more than 1 "
    "container network is defined"
)
DOCKER_SINGLE_CONTAINER_NETWORK = (
    "may only specify a single container network when using the Docker container engine"
)
NETWORK_NAME_MUST_BE_SPECIFIED = (
    "Network name must be specified when container network is selected."
)
NETWORK_COMBINATIONS = (
    "May specify a single host network, single bridge network, or else 1-to-n container networks"
)
MIGRATION_API = (
    "DCOS_PACKAGE_FRAMEWORK_NAME and DCOS_MIGRATION_API_PATH must be defined when using "
    "DCOS_MIGRATION_API_VERSION"
)
RESIDENT_ACCEPTED_ROLES = 'A resident app must have `acceptedResourceRoles = ["*"]`.'
ROLE_CHANGE_NEEDS_FORCE = (
    "It is not possible to change the role for existing reservations. If you proceed with "
    "this change, all existing instances will continue to under the previous role, {old}. "
    "Only new instances will be allocated with the new role, {new}. In order to continue, "
    "retry your request with ?force=true"
)
ROLLBACK_ONLY = "The 'version' field may only be combined with the 'id' field."
# Our wording where Marathon's exact text is not known (docs/compatibility.md).
CHECK_WITH_DOCKER = "Mesos checks are not supported with the Docker containerizer"
CHECK_PORT_INDEX = (
    "Check port indices must address an element of the ports array or container port mappings."
)
CHECK_ONE_KIND = "exactly one of http, tcp or exec must be specified"
COMMAND_REQUIRED = "command is required for COMMAND health checks"
COMMAND_ONLY_FOR_COMMAND = "command may only be given for COMMAND health checks"
LINUX_INFO_WITH_DOCKER = "linuxInfo is not supported with Docker containerizer"


# Ours: every walk of the group tree (rendering, planning, storing) recurses
# once or more per level, and Python's stack is about 1,000 frames; at 300
# levels `GET /v2/groups` failed.  Nobody nests groups this deep.
MAX_ID_DEPTH = 100


def too_deep(resolved_id: str) -> str:
    return f"must not be more than {MAX_ID_DEPTH} levels deep (is {len(pathid.segments(resolved_id))})"


def instances_over_limit(instances: int | str, limit: int) -> str:
    """Ours: an app asks for more instances than the server allows (accord's wording)."""
    return f"got {instances}, expected {limit} or less (the server's --max_instances_per_app)"


def feature_disabled(feature: str) -> str:
    # The unbalanced parenthesis is Marathon's.
    return f"Feature {feature} is not enabled. Enable with --enable_features {feature})"


# -- small helpers -------------------------------------------------------------------------

_SINGLE_INSTANCE_LABEL = "MARATHON_SINGLE_INSTANCE_APP"
_PROTO_OPERATORS = ("UNIQUE", "LIKE", "CLUSTER", "GROUP_BY", "MAX_PER", "UNLIKE", "IS")


def _dedupe(values: Iterable[Any]) -> list[Any]:
    """Marathon stores these collections as sets: duplicates collapse (first wins)."""
    out, seen = [], set()
    for v in values:
        key = msgspec.json.encode(v)
        if key not in seen:
            seen.add(key)
            out.append(v)
    return out


def _num(x: float | int) -> str:
    """A number as the JVM prints a Double (`1.0`, `0.5`)."""
    return repr(float(x))


def _port_count(app: AppDefinition) -> int:
    """Number of addressable ports: the port mappings if the container declares
    them (even `[]`), else the port definitions (Marathon's `portIndices`)."""
    c = app.container
    if given(c) and c.port_mappings is not UNSET:
        return len(c.port_mappings)
    return len(items(app.port_definitions))


def _port_index_ok(port_index: Any, port: Any, count: int) -> bool:
    if port_index is not UNSET:
        return 0 <= port_index < count
    return port is not UNSET or count == 1


class _Report:
    """Collects violations in the order they are found."""

    def __init__(self) -> None:
        self.violations: list[Violation] = []

    def add(self, path: str, message: str) -> None:
        self.violations.append(Violation(path, message))

    def raise_if_any(self) -> None:
        if self.violations:
            raise ValidationFailed(self.violations)


# -- roles (SPEC.md 2.4) ------------------------------------------------------------------


def _group_role(app_id: str) -> str | None:
    top = pathid.top_level(app_id)
    return top[1:] if top else None


def default_role(app_id: str, ctx: AppContext) -> str:
    """The role of an app that names none: its group's if the group enforces it."""
    group_role = _group_role(app_id)
    return group_role if group_role and ctx.enforce_role else ctx.mesos_role


def valid_roles(app_id: str, ctx: AppContext) -> list[str]:
    """The roles an app at `app_id` may use, in Marathon's order."""
    group_role = _group_role(app_id)
    if group_role is None:
        roles = [ctx.mesos_role]
    elif ctx.enforce_role:
        roles = [group_role]
    else:
        roles = [ctx.mesos_role, group_role]
    if group_role is not None and ctx.existing_role is not None:
        roles.append(ctx.existing_role)
    return list(dict.fromkeys(roles))


_ROLE_CHAR_NAMES = {
    "\t": "horizontal tab (\\x09)",
    "\n": "line feed (\\x0a)",
    "\x0b": "vertical tab (\\x0b)",
    "\x0c": "form feed (\\x0c)",
    "\r": "carriage return (\\x0d)",
    " ": "space (\\x20)",
    "/": "slash (\\x2f)",
    "\x7f": "backspace (\\x7f)",
}


def role_name_errors(role: str) -> list[str]:
    """Messages for a resource role name Mesos would refuse."""
    errors = [f'A role name must not be "{bad}".' for bad in ("", ".", "..") if role == bad]
    if role.startswith("-"):
        errors.append("A role name must not start with a '-'.")
    for ch, name in _ROLE_CHAR_NAMES.items():
        if ch in role:
            errors.append(f"A role name must not include a {name} character.")
    return errors


# -- step 5: canonical validation -----------------------------------------------------------


def _validate_ids(raw_id: str, raw_deps: list[str], resolved_id: str, r: _Report) -> None:
    for msg in pathid.segment_errors(raw_id):
        r.add("/id", msg)
    if len(pathid.segments(resolved_id)) > MAX_ID_DEPTH:
        r.add("/id", too_deep(resolved_id))
    if pathid.is_root(resolved_id):
        r.add("/id", "Path must contain at least one path element")
        r.add("/", "must not be root")
    for i, dep in enumerate(raw_deps):
        for msg in pathid.segment_errors(dep):
            r.add(f"/dependencies({i})", msg)


def _validate_networks(networks: list[Network], ctx: AppContext, r: _Report) -> None:
    p = "/networks"
    if any(
        (given(n.name) and n.name) or (given(n.labels) and n.labels)
        for n in networks
        if n.mode == "host"
    ):
        r.add(p, "Host networks may not have names or labels")
    if any(given(n.name) and n.name for n in networks if n.mode == "container/bridge"):
        r.add(p, "Bridge networks may not have names")
    unnamed = sum(1 for n in networks if n.mode == "container" and n.name is UNSET)
    if unnamed > 1 or has_duplicates(n.name for n in networks if n.name is not UNSET):
        r.add(p, "Duplicate networks are not allowed")
    hosts = sum(1 for n in networks if n.mode == "host")
    bridges = sum(1 for n in networks if n.mode == "container/bridge")
    containers = sum(1 for n in networks if n.mode == "container")
    if not (
        (hosts <= 1 and bridges == 0 and containers == 0)
        or (hosts == 0 and bridges <= 1 and containers == 0)
        or (hosts == 0 and bridges == 0 and containers > 0)
    ):
        r.add(p, NETWORK_COMBINATIONS)
    if ctx.default_network_name is None and unnamed:
        r.add(p, NETWORK_NAME_MUST_BE_SPECIFIED)


def _volume_constraint_error(c: list[str]) -> str | None:
    if not c:
        return "Missing field and operator"
    if len(c) >= 3 and c[0] == "path":
        op, value = c[1], c[2]
        if op not in _PROTO_OPERATORS:
            return f"unknown constraint operator {op}"
        if op not in ("LIKE", "UNLIKE"):
            return "Operator must be one of LIKE, UNLIKE"
        try:
            compile_java_regex(value)
        except re.error:
            return "Invalid regular expression"
        return None
    return f"Unsupported constraint {','.join(c)}"


def _validate_volumes(
    container: Container, app: AppDefinition, ctx: AppContext, r: _Report
) -> None:
    vols = container.volumes
    external_names = [v.external.name for v in vols if v.external is not UNSET]
    if has_duplicates(external_names):
        r.add("/container/volumes", "Volume names must be unique")
    if any(v.secret is not UNSET for v in vols) and "secrets" not in ctx.features:
        r.add("/container/volumes", feature_disabled("secrets"))
    for i, vol in enumerate(vols):
        p = f"/container/volumes({i})"
        if vol.persistent is not UNSET:
            cp = vol.container_path
            if cp in (".", ".."):
                r.add(p + "/containerPath", "can not be one of (.,..)")
            if "/" in cp:
                r.add(p + "/containerPath", 'value must not contain "/"')
            if vol.mode is not UNSET and vol.mode != "RW":
                r.add(p + "/mode", "does not equal RW")
            info = vol.persistent
            kind = info.type if info.type is not UNSET else "root"
            if kind == "root" and info.constraints:
                r.add(p + "/persistent", "Constraints on root volumes are not supported")
            if info.max_size is not UNSET and info.type != "mount":
                r.add(p + "/persistent", "Only mount volumes can have maxSize")
            if info.max_size is not UNSET and info.max_size <= info.size:
                r.add(p + "/persistent", "Max size must be larger than size")
            for j, cons in enumerate(info.constraints):
                msg = _volume_constraint_error(cons)
                if msg:
                    r.add(f"{p}/persistent/constraints({j})", msg)
        elif vol.external is not UNSET:
            if "external_volumes" not in ctx.features:
                r.add(p, feature_disabled("external_volumes"))
            if vol.external.provider not in ("dvdi", "csi"):
                r.add(p + "/external/provider", "is unknown provider")
        elif vol.secret is not UNSET:
            if vol.secret not in app.secrets:
                r.add(p, "volume.secret must refer to an existing secret")
        elif given(vol.host_path) and not vol.host_path:
            r.add(p + "/hostPath", "must not be empty")
        elif given(vol.host_path) and not vol.host_path.startswith("/"):
            r.add(p + "/hostPath", "must be an absolute path")
        if vol.persistent is UNSET and _leaves_sandbox(vol.container_path):
            r.add(p + "/containerPath", "must not lead out of the sandbox")
    seen: set[str] = set()
    for i, vol in enumerate(vols):
        point = posixpath.normpath(vol.container_path) if vol.container_path else vol.container_path
        if point in seen:
            r.add(f"/container/volumes({i})/containerPath", "is already the mount point of another volume")
        seen.add(point)


def _leaves_sandbox(path: str) -> bool:
    """A relative path (inside the sandbox) that leads out of it."""
    if not path or path.startswith("/"):
        return False
    return posixpath.normpath(path).split("/")[0] == ".."


def _validate_container(
    container: Container, app: AppDefinition, ctx: AppContext, r: _Report
) -> None:
    networks: list[Network] = app.networks  # type: ignore[assignment]
    mappings = items(container.port_mappings)
    if has_duplicates(pm.name for pm in mappings if pm.name is not UNSET):
        r.add("/container/portMappings", "Port names must be unique.")
    container_nets = sum(1 for n in networks if n.mode == "container")
    net_names = [n.name for n in networks if n.name is not UNSET]
    for i, pm in enumerate(mappings):
        p = f"/container/portMappings({i})"
        names = items(pm.network_names)
        if container_nets > 1 and pm.host_port is not UNSET and len(names) != 1:
            r.add(p, NETWORK_NAME_REQUIRED_FOR_MULTIPLE)
        for j, name in enumerate(names):
            if name not in net_names:
                r.add(f"{p}/networkNames({j})", f"is not one of ({','.join(net_names)})")

    _validate_volumes(container, app, ctx, r)

    docker = container.docker
    if container.type == "DOCKER":
        if docker is UNSET:
            r.add("/container/docker", "not defined")
        elif docker.pull_config is not UNSET:
            r.add(
                "/container/docker/pullConfig",
                "pullConfig is not supported with Docker containerizer",
            )
        if container.linux_info is not UNSET:
            r.add("/container/linuxInfo", LINUX_INFO_WITH_DOCKER)
        return

    if docker is not UNSET and docker.pull_config is not UNSET:
        if "secrets" not in ctx.features:
            r.add("/container/docker/pullConfig", feature_disabled("secrets"))
        if docker.pull_config.secret not in app.secrets:
            r.add(
                "/container/docker/pullConfig", "pullConfig.secret must refer to an existing secret"
            )
    linux = container.linux_info
    if linux is UNSET:
        return
    seccomp = linux.seccomp
    if seccomp is not UNSET:
        p = "/container/linuxInfo/seccomp"
        if seccomp.unconfined and seccomp.profile_name is not UNSET:
            r.add(p, "Seccomp unconfined can NOT be true when Seccomp profile is set")
        if not seccomp.unconfined and seccomp.profile_name is UNSET:
            r.add(p, "Seccomp unconfined must be true when Seccomp profile is NOT set")
    ipc = linux.ipc_info
    if ipc is not UNSET and ipc.mode == "SHARE_PARENT" and ipc.shm_size is not UNSET:
        r.add(
            "/container/linuxInfo/ipcInfo",
            "ipcInfo shmSize can NOT be set when mode is SHARE_PARENT",
        )


def _validate_health(app: AppDefinition, container: Container | None, r: _Report) -> None:
    count = _port_count(app)
    is_docker = container is not None and container.type == "DOCKER"
    mesos_checks = commands = 0
    for i, hc in enumerate(app.health_checks):
        p = f"/healthChecks({i})"
        has_command = hc.command is not UNSET
        if hc.protocol == "COMMAND" and not has_command:
            r.add(p, COMMAND_REQUIRED)
        if hc.protocol != "COMMAND" and has_command:
            r.add(p, COMMAND_ONLY_FOR_COMMAND)
        if not has_command and hc.protocol in MARATHON_HEALTH_PROTOCOLS:
            if not _port_index_ok(hc.port_index, hc.port, count):
                r.add(p, HEALTH_PORT_INDEX)
        if hc.ip_protocol != "IPv4" and not (hc.protocol in MESOS_HEALTH_PROTOCOLS and is_docker):
            r.add(p, HEALTH_IPV6)
        commands += has_command
        mesos_checks += (
            has_command or hc.protocol == "COMMAND" or hc.protocol in MESOS_HEALTH_PROTOCOLS
        )
    if mesos_checks - commands > 1:
        r.add("/", "AppDefinition can contain at most one Mesos health check")

    check = app.check
    if check is UNSET:
        return
    kinds = [k for k in (check.http, check.tcp, check.exec) if k is not UNSET]
    if len(kinds) != 1:
        r.add("/check", CHECK_ONE_KIND)
    if is_docker:
        r.add("/check", CHECK_WITH_DOCKER)
    for probe in (check.http, check.tcp):
        if probe is not UNSET and not _port_index_ok(probe.port_index, probe.port, count):
            r.add("/check", CHECK_PORT_INDEX)


def _validate_readiness(app: AppDefinition, r: _Report) -> None:
    checks = app.readiness_checks
    if len(checks) > 1:
        r.add("/readinessChecks", f"got {len(checks)}, expected 1 or less")
    c = app.container
    if given(c) and c.port_mappings is not UNSET:
        port_names = {pm.name for pm in c.port_mappings if pm.name is not UNSET}
    else:
        port_names = {pd.name for pd in items(app.port_definitions) if pd.name is not UNSET}
    for i, rc in enumerate(checks):
        p = f"/readinessChecks({i})"
        if not rc.name:
            r.add(p + "/name", "must not be empty")
        if not rc.path:
            r.add(p + "/path", "must not be empty")
        if rc.port_name not in port_names:
            r.add(p + "/portName", f"No port definition reference for portName {rc.port_name}")
        if rc.timeout_seconds <= 0:
            r.add(p + "/timeoutSeconds", f"got {rc.timeout_seconds}, expected more than 0")
        if rc.timeout_seconds >= rc.interval_seconds:
            r.add(
                p + "/timeoutSeconds",
                f"got {rc.timeout_seconds}, expected less than {rc.interval_seconds}",
            )


def _validate_env_and_secrets(app: AppDefinition, ctx: AppContext, r: _Report) -> None:
    secrets_on = "secrets" in ctx.features
    if app.secrets and not secrets_on:
        r.add("/secrets", feature_disabled("secrets"))
    if secrets_on:
        for i, name in enumerate(app.secrets):
            if not name:
                r.add(f"/secrets/keys({i})", "must not be empty")
    for i, name in enumerate(app.env):
        if not name:
            r.add(f"/env/keys({i})", "must not be empty")
    refs = [(k, v) for k, v in app.env.items() if isinstance(v, EnvSecretRef)]
    if refs and not secrets_on:
        r.add(
            "/env",
            "use of secret-references in the environment requires the secrets feature to be enabled",
        )
    for name, ref in refs:
        if ref.secret not in app.secrets:
            r.add(f"/env/{name}/secret", "references an undefined secret")


def _canonical_violations(app: AppDefinition, ctx: AppContext, r: _Report) -> None:
    container = app.container if given(app.container) else None
    networks: list[Network] = app.networks  # type: ignore[assignment]
    labels = app.labels

    has_cmd, has_args = given(app.cmd), bool(app.args)
    has_container = container is not None and not (
        container.type == "DOCKER" and container.docker is UNSET
    )
    if not ((has_cmd != has_args) or (not (has_cmd and has_args) and has_container)):
        r.add("/", CMD_ARGS_OR_CONTAINER)
    if has_cmd and len(app.cmd) <= 1:  # ⚠ Marathon tests `length > 1`
        r.add("/", "must not be an empty string")
    if any(n.mode == "host" for n in networks) and container and items(container.port_mappings):
        r.add("/", "portMappings are not allowed with host-networking")
    if not host_networking(networks) and items(app.port_definitions):
        r.add("/", "portDefinitions are only allowed with host-networking")

    if container is not None:
        _validate_container(container, app, ctx, r)

    pds = items(app.port_definitions)
    if has_duplicates(pd.name for pd in pds if pd.name is not UNSET):
        r.add("/portDefinitions", "Port names must be unique.")
    if has_duplicates(pd.port for pd in pds if pd.port != 0):
        r.add("/portDefinitions", "Ports must be unique.")

    _validate_health(app, container, r)

    for i, f in enumerate(app.fetch):
        if not uri_is_valid(f.uri):
            r.add(f"/fetch({i})/uri", "URI has invalid syntax.")
        if given(f.dest_path) and (f.dest_path.startswith("/") or _leaves_sandbox(f.dest_path)):
            r.add(f"/fetch({i})/destPath", "must be a relative path inside the sandbox")

    _validate_env_and_secrets(app, ctx, r)

    roles = app.accepted_resource_roles
    if roles is not UNSET:
        if not roles:
            r.add("/acceptedResourceRoles", "must not be empty")
        for i, role in enumerate(roles):
            for msg in role_name_errors(role):
                r.add(f"/acceptedResourceRoles({i})", msg)
        if app.residency is not UNSET and set(roles) != {"*"}:
            r.add("/acceptedResourceRoles", RESIDENT_ACCEPTED_ROLES)

    if app.gpus > 0:
        if container is not None and container.type == "DOCKER":
            r.add("/", "GPU resources only work with the Mesos containerizer")
        if "gpu_resources" not in ctx.features:
            r.add("/", feature_disabled("gpu_resources"))

    if labels.get("DCOS_MIGRATION_API_VERSION"):
        if not (
            labels["DCOS_MIGRATION_API_VERSION"] == "v1"
            and labels.get("DCOS_PACKAGE_FRAMEWORK_NAME")
            and labels.get("DCOS_MIGRATION_API_PATH")
        ):
            r.add("/", MIGRATION_API)

    _validate_readiness(app, r)

    if (app.residency is not UNSET) != app.is_resident:
        r.add("/", "App must contain persistent volumes and define residency")
    if labels.get(_SINGLE_INSTANCE_LABEL) == "true" and app.instances > 1:
        r.add("/", "Single instance app may only have one instance")
    if ctx.max_instances is not None and app.instances > ctx.max_instances:
        r.add("/instances", instances_over_limit(app.instances, ctx.max_instances))
    if container is not None and container.type == "DOCKER":
        if sum(1 for n in networks if n.mode == "container") > 1:
            r.add("/", DOCKER_SINGLE_CONTAINER_NETWORK)
    unreachable = app.unreachable_strategy
    if app.residency is not UNSET and unreachable is not UNSET and unreachable != "disabled":
        r.add("/", "unreachableStrategy must be disabled for resident tasks")
    if isinstance(unreachable, UnreachableEnabled):
        if unreachable.inactive_after_seconds > unreachable.expunge_after_seconds:
            r.add(
                "/unreachableStrategy",
                "inactiveAfterSeconds must be less than or equal to expungeAfterSeconds",
            )

    for i, constraint in enumerate(app.constraints):
        for msg in validate_constraint(constraint):
            r.add(f"/constraints({i})", msg)

    _validate_networks(networks, ctx, r)

    limits = app.resource_limits
    if limits is not UNSET:
        for name, requested in (("cpus", app.cpus), ("mem", app.mem)):
            limit = getattr(limits, name)
            if isinstance(limit, int | float) and limit < requested:
                r.add(
                    f"/resourceLimits/{name}",
                    f"resource limit must be greater than or equal to the requested amount ({_num(requested)})",
                )


# -- step 6: post-validation defaults -----------------------------------------------------


def _canonical_health_check(hc: HealthCheck) -> HealthCheck:
    """Keep only the fields Marathon's model keeps for the check's protocol."""
    proto = hc.protocol
    changes: dict[str, Any] = {}
    if proto == "COMMAND":
        changes.update(port_index=UNSET, port=UNSET, path=UNSET)
    else:
        changes["command"] = UNSET
    if proto in ("TCP", "MESOS_TCP"):
        changes["path"] = UNSET
    if proto in ("HTTP", "HTTPS"):
        changes["ignore_http1xx"] = hc.ignore_http1xx if hc.ignore_http1xx is not UNSET else False
    else:
        changes["ignore_http1xx"] = UNSET
    return _replace(hc, **changes)


def _canonical_container(container: Container, networks: list[Network]) -> Container:
    if any(n.mode == "container/bridge" for n in networks):
        container = bridge_host_ports(container)
    volumes = []
    for vol in container.volumes:
        if vol.persistent is not UNSET:
            info = vol.persistent
            if info.type is UNSET:
                info = _replace(info, type="mount" if info.profile_name is not UNSET else "root")
            vol = _replace(vol, persistent=info, mode=vol.mode if vol.mode is not UNSET else "RW")
        elif vol.external is not UNSET and vol.mode is UNSET:
            vol = _replace(vol, mode="RW")
        volumes.append(vol)
    return _replace(container, volumes=volumes)


def _post_normalize(app: AppDefinition, ctx: AppContext, resolved_deps: list[str]) -> AppDefinition:
    networks = []
    for n in app.networks or [Network(mode="host")]:
        if n.mode == "container" and n.name is UNSET and ctx.default_network_name is not None:
            n = _replace(n, name=ctx.default_network_name)
        if n.labels is not UNSET and not n.labels:
            n = _replace(n, labels=UNSET)
        networks.append(n)
    non_host = not host_networking(networks)

    container = app.container if given(app.container) else None
    if container is None and non_host:
        container = Container(type="MESOS", port_mappings=[DEFAULT_PORT_MAPPING])
    if container is not None:
        container = _canonical_container(container, networks)

    resident = app.is_resident
    unreachable = app.unreachable_strategy
    if unreachable is UNSET:
        unreachable = "disabled" if resident else UnreachableEnabled()
    upgrade = app.upgrade_strategy
    if upgrade is UNSET:
        external = container is not None and any(v.external is not UNSET for v in container.volumes)
        if resident or external:
            upgrade = UpgradeStrategy(minimum_health_capacity=0.5, maximum_over_capacity=0.0)
        else:
            upgrade = UpgradeStrategy(minimum_health_capacity=1.0, maximum_over_capacity=1.0)

    constraints = [
        [c[0], c[1].upper(), *c[2:]] if len(c) >= 2 else list(c) for c in app.constraints
    ]
    roles = app.accepted_resource_roles
    return _replace(
        app,
        cmd=app.cmd if given(app.cmd) else UNSET,
        user=app.user if given(app.user) else UNSET,
        networks=networks,
        container=container if container is not None else UNSET,
        require_ports=False if non_host else app.require_ports,
        unreachable_strategy=unreachable,
        upgrade_strategy=upgrade,
        health_checks=_dedupe(_canonical_health_check(hc) for hc in app.health_checks),
        constraints=_dedupe(constraints),
        accepted_resource_roles=_dedupe(roles) if roles is not UNSET else UNSET,
        dependencies=_dedupe(resolved_deps),
    )


# -- step 7: model validation -------------------------------------------------------------


def _model_violations(app: AppDefinition, ctx: AppContext, r: _Report) -> None:
    role = app.role
    roles = valid_roles(app.id, ctx)
    if role not in roles:
        r.add("/role", f"got {role}, expected one of: [{', '.join(roles)}]")
    if app.is_resident:
        if role == "*":
            r.add("/role", "Resident apps cannot have the role *")
        old = ctx.existing_role
        if old is not None and old != role and not ctx.force:
            r.add("/role", ROLE_CHANGE_NEEDS_FORCE.format(old=old, new=role))
    accepted = app.accepted_resource_roles
    if accepted is not UNSET and not set(accepted) <= {"*", role}:
        r.add("/acceptedResourceRoles", f"acceptedResourceRoles can only contain * and {role}")

    strategy = app.upgrade_strategy
    assert strategy is not UNSET
    min_p, max_p = "/upgradeStrategy/minimumHealthCapacity", "/upgradeStrategy/maximumOverCapacity"
    if app.labels.get(_SINGLE_INSTANCE_LABEL) == "true":
        if strategy.minimum_health_capacity != 0:
            r.add(min_p, f"got {_num(strategy.minimum_health_capacity)}, expected 0.0")
        if strategy.maximum_over_capacity != 0:
            r.add(max_p, f"got {_num(strategy.maximum_over_capacity)}, expected 0.0")
    if app.is_resident and strategy.maximum_over_capacity != 0:
        r.add(max_p, f"got {_num(strategy.maximum_over_capacity)}, expected 0.0")


# -- the pipeline ---------------------------------------------------------------------------


def normalize_app(app: AppDefinition, ctx: AppContext | None = None) -> AppDefinition:
    """Normalize and validate a full app (create, full replace, or a merged update).

    Returns the canonical definition: deprecated fields migrated away, every
    default that depends on other fields filled in, `None` fields unset.
    `version`/`versionInfo` are left as given.  Service ports `0` are left for
    the deployment planner (SPEC.md 8.4).

    Raises `ValidationFailed` (Marathon's messages and paths, every violation
    of the failing stage) or `IllegalArgument` (contradictory deprecated
    fields Marathon refuses while migrating them).
    """
    ctx = ctx or AppContext()
    deprecated = deprecated_violations(app)
    if deprecated:
        raise ValidationFailed(deprecated)

    raw_id, raw_deps = app.id, list(app.dependencies)
    resolved_id = pathid.resolve(raw_id, ctx.base)
    resolved_deps = [pathid.resolve(d, ctx.base) for d in raw_deps]
    app = migrate_app(_replace(app, id=resolved_id), ctx.mesos_bridge_name)
    if app.role is UNSET:
        app = _replace(app, role=default_role(resolved_id, ctx))

    report = _Report()
    _validate_ids(raw_id, raw_deps, resolved_id, report)
    _canonical_violations(app, ctx, report)
    report.raise_if_any()

    app = _post_normalize(app, ctx, resolved_deps)
    _model_violations(app, ctx, report)
    report.raise_if_any()
    return app


normalize = normalize_app


# -- partial updates (SPEC.md 2.7) ----------------------------------------------------------


def is_rollback(update: AppUpdate) -> bool:
    """A `version` in an update body asks for a rollback to that version."""
    return given(update.version)


def check_rollback_only(update: AppUpdate) -> None:
    """Refuse a rollback that also tries to change something (only `id` may accompany it)."""
    if is_rollback(update) and set(set_fields(update)) - {"id", "version"}:
        raise IllegalArgument(ROLLBACK_ONLY)


def _update_violations(update: AppUpdate) -> list[Violation]:
    r = _Report()
    r.violations.extend(deprecated_violations(update))
    networks = update.networks if given(update.networks) else None
    container = update.container if given(update.container) else None
    if given(update.id) and pathid.is_root(pathid.resolve(update.id)):
        r.add("/", "must not be root")
    if given(update.cmd) and len(update.cmd) <= 1:
        r.add("/", "must not be an empty string")
    if networks and any(n.mode == "host" for n in networks):
        if container is not None and items(container.port_mappings):
            r.add("/", "portMappings are not allowed with host-networking")
    if networks and any(n.mode != "host" for n in networks) and items(update.port_definitions):
        r.add("/", "portDefinitions are only allowed with host-networking")
    return r.violations


# Fields an update never changes here: the id comes from the URL and a
# version means rollback (handled by the caller before merging).
_NOT_MERGED = ("id", "version", "versionInfo")
# ⚠ Marathon takes these from the update as-is: absent means cleared.
_REPLACED_EVEN_IF_ABSENT = ("executorResources", "resourceLimits")


def merge_update(
    current: AppDefinition, update: AppUpdate, ctx: AppContext | None = None
) -> AppDefinition:
    """Apply a partial update to the current (canonical) app (SPEC.md 2.7).

    Every field present in the update replaces the whole field; absent fields
    keep their value, except `executorResources` and `resourceLimits`, which
    are taken from the update as-is.  Deprecated update fields are checked
    (`ValidationFailed`) and migrated first.  The result keeps the current
    `version`/`versionInfo` and must then go through `normalize_app`.
    """
    ctx = ctx or AppContext()
    problems = _update_violations(update)
    if problems:
        raise ValidationFailed(problems)
    patch = msgspec.to_builtins(migrate_update(update, ctx.mesos_bridge_name))
    merged = msgspec.to_builtins(current)
    for key in _REPLACED_EVEN_IF_ABSENT:
        merged.pop(key, None)
    for key, value in patch.items():
        if key not in _NOT_MERGED:
            merged[key] = value
    return decode_app(merged)


# -- output -----------------------------------------------------------------------------------


def app_json(app: AppDefinition) -> bytes:
    """Canonical JSON of an app, in the model's (stable) field order.

    Port definitions omit empty `labels` as Marathon does (RAML omitEmpty).
    """
    data = msgspec.to_builtins(app)
    for pd in data.get("portDefinitions") or ():
        if not pd.get("labels"):
            pd.pop("labels", None)
    return msgspec.json.encode(data)
