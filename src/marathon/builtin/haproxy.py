"""The built-in haproxy config generator, in the spirit of marathon-lb.

Registered through the `marathon_lb_generators` hook as `"haproxy"`, exactly
as a plugin would register `"nginx"`; `marathon lb haproxy` (cli/lb.py) feeds
it and applies what it renders.

What becomes what (docs/loadbalancer.md is the user-facing version):

* Every service port `n` of an app in the selected group becomes a frontend
  bound to `<bind>:<service port>` (`HAPROXY_{n}_BIND_ADDR` and
  `HAPROXY_{n}_PORT` override) with a backend of one `server` per task, at the
  task's host and its host port `n`.  Both are named after the app id and the
  port: `/a/b` on 10000 -> `a_b_10000`.
* Groups: `HAPROXY_GROUP` (comma-separated; `HAPROXY_{n}_GROUP` per port)
  against `options["group"]` (default "external"; `*` selects every app).  An
  app without the label is in `options["default_group"]` (default
  "external"), so plain apps with a service port are exposed by default.
  marathon-lb leaves unlabelled apps out unless `--group '*'`; an empty
  `default_group` gives that behaviour.
* `HAPROXY_{n}_MODE` (`http` | `tcp`).  Without it: `http` when the port has
  a `HAPROXY_{n}_VHOST` or an HTTP/HTTPS/MESOS_HTTP/MESOS_HTTPS health check,
  else `tcp` (marathon-lb's choice; an explicit label wins, as in its code).
* `HAPROXY_{n}_VHOST` (comma-separated host names) in http mode adds the app
  to one shared frontend on `<bind>:<http_port>` (default 80) that routes on
  the Host header (case-insensitive, any `:port` suffix ignored), optionally
  narrowed by `HAPROXY_{n}_PATH` (space-separated path prefixes).  Rules with
  a path come first, then higher `HAPROXY_{n}_BACKEND_WEIGHT`, then by name.
* `HAPROXY_{n}_BALANCE` (default `roundrobin`; passed to haproxy as is, so a
  wrong value makes the config invalid and `marathon lb` leaves that app out),
  `HAPROXY_{n}_STICKY=true` (cookie stickiness, http mode),
  `HAPROXY_{n}_ENABLED=false` (do not expose this port).
* A Marathon HTTP or TCP health check on port index `n` becomes an haproxy
  check on the servers (`option httpchk GET <path>` for HTTP), so haproxy
  stops routing to a failing task between two renders.

The tasks handed in are running (and healthy, for apps with health checks);
a task marked `healthy=False` is left out all the same.  A backend without
tasks is still rendered: its port stays bound and answers 503 (http) or
closes connections (tcp) instead of refusing them.

Output is deterministic (apps by id, ports by index, servers by address) so
"did the config change?" is a string comparison.  Values from labels and task
hosts go into the config only when they cannot break out of their directive
(no control characters, names restricted); an ignored label leaves a comment.
Two services claiming the same port: the first app id (sorted) keeps it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from msgspec import UNSET

from ..hookspecs import BackendTask, hookimpl
from ..models.app import AppDefinition, HealthCheck

NAME = "haproxy"
HTTP_FRONTEND = "marathon_http_in"
STATS_URI = "/haproxy?stats"

DEFAULT_OPTIONS: Mapping[str, Any] = {
    "bind": "127.0.0.1",
    "group": "external",
    "default_group": "external",
    "http_port": 80,
    "stats_socket": None,  # path: adds `stats socket ... expose-fd listeners` (seamless reload)
    "stats_port": None,  # port: adds a stats page at STATS_URI
    "maxconn": 4096,
    "timeout_connect": "5s",
    "timeout_client": "50s",
    "timeout_server": "50s",
    # Old processes left by a reload close their remaining connections after
    # this long, so no stale haproxy lingers (RELIABILITY.md item 29).
    "hard_stop_after": "60s",
}

# Health-check protocols that make a port default to http mode (as in marathon-lb).
HTTP_HEALTH_PROTOCOLS = frozenset({"HTTP", "HTTPS", "MESOS_HTTP", "MESOS_HTTPS"})
# Those haproxy can re-run itself (HTTPS would need TLS settings: not mirrored).
MIRRORED_CHECKS = frozenset({"HTTP", "MESOS_HTTP", "TCP", "MESOS_TCP"})
_FALSE = frozenset({"false", "0", "no", "off"})
_TRUE = frozenset({"true", "1", "yes", "on"})

_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")
_HOST_OK = re.compile(r"^[A-Za-z0-9._:-]+$")
_VHOST_OK = re.compile(r"^[A-Za-z0-9._-]+$")
_PATH_OK = re.compile(r"^/[^\s#\\]*$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f#]")


def sanitize(text: str) -> str:
    """An haproxy-safe name: `/a/b.c-d` -> `a_b.c-d`."""
    return _NAME_UNSAFE.sub("_", text.strip("/")) or "_"


@dataclass(frozen=True, slots=True)
class Server:
    name: str
    host: str
    port: int

    @property
    def address(self) -> str:
        # haproxy splits host and port at the last colon; the prefix makes an
        # IPv6 literal unambiguous.
        return f"ipv6@{self.host}:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Service:
    """One exposed service port of one app: a frontend and its backend."""

    app_id: str
    index: int
    name: str
    bind: str
    port: int
    mode: str
    balance: str
    vhosts: tuple[str, ...]
    paths: tuple[str, ...]
    sticky: bool
    weight: int
    check: HealthCheck | None  # a Marathon HTTP or TCP check on this port
    servers: tuple[Server, ...]
    notes: tuple[str, ...]


def options_with_defaults(options: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(DEFAULT_OPTIONS)
    merged.update({k: v for k, v in options.items() if v is not None})
    return merged


def _groups(value: Any) -> frozenset[str]:
    if isinstance(value, str):
        value = value.split(",")
    return frozenset(g.strip() for g in value or () if g and g.strip())


def _label(app: AppDefinition, key: str, notes: list[str]) -> str | None:
    """A label's value, or None when absent or unsafe to put in a config."""
    value = app.labels.get(key)
    if value is None:
        return None
    value = value.strip()
    if _CONTROL.search(value):
        notes.append(f"ignored {key}: control characters or '#'")
        return None
    return value


def _port_check(app: AppDefinition, index: int) -> HealthCheck | None:
    """The app's first health check aimed at port index `index`, if any."""
    for check in app.health_checks:
        target = check.port_index if check.port_index is not UNSET else (0 if check.port is UNSET else None)
        if target == index:
            return check
    return None


def _in_group(app: AppDefinition, index: int, wanted: frozenset[str], default_group: str) -> bool:
    if "*" in wanted:
        return True
    raw = app.labels.get(f"HAPROXY_{index}_GROUP", app.labels.get("HAPROXY_GROUP"))
    groups = _groups(raw) if raw is not None else _groups(default_group)
    return bool(groups & wanted)


def collect(apps: Sequence[AppDefinition], tasks: Mapping[str, Sequence[BackendTask]], options: Mapping[str, Any]) -> list[Service]:
    """The services to expose, apps by id and ports by index (collisions not yet resolved)."""
    opts = options_with_defaults(options)
    wanted = _groups(opts["group"])
    default_group = str(opts.get("default_group") or "")
    out: list[Service] = []
    for app in sorted(apps, key=lambda a: a.id):
        app_tasks = sorted(
            (t for t in tasks.get(app.id, ()) if t.healthy is not False),
            key=lambda t: (t.host, tuple(t.ports), t.task_id),
        )
        for index, service_port in enumerate(app.service_ports):
            if _in_group(app, index, wanted, default_group):
                service = _service(app, index, service_port, app_tasks, opts)
                if service is not None:
                    out.append(service)
    return out


class _Labels:
    """Reads `HAPROXY_{n}_<KEY>` labels of one port, noting the ones ignored."""

    def __init__(self, app: AppDefinition, index: int) -> None:
        self.app = app
        self.index = index
        self.notes: list[str] = []

    def __call__(self, key: str) -> str | None:
        return _label(self.app, f"HAPROXY_{self.index}_{key}", self.notes)

    def ignored(self, key: str, value: str, why: str = "") -> None:
        self.notes.append(f"ignored HAPROXY_{self.index}_{key} {value!r}{': ' + why if why else ''}")


def _service(app: AppDefinition, index: int, service_port: int, tasks: Sequence[BackendTask], opts: Mapping[str, Any]) -> Service | None:
    label = _Labels(app, index)
    if (label("ENABLED") or "").lower() in _FALSE:
        return None
    port = service_port
    override = label("PORT")
    if override is not None:
        if override.isdigit() and 0 < int(override) < 65536:
            port = int(override)
        else:
            label.ignored("PORT", override, "not a port")
    if not port:
        return None  # no service port: nothing to bind
    bind = label("BIND_ADDR") or str(opts["bind"])
    if not _HOST_OK.match(bind):
        label.ignored("BIND_ADDR", bind)
        bind = str(opts["bind"])
    vhosts: list[str] = []
    for host in (label("VHOST") or "").split(","):
        host = host.strip().lower()
        if host and _VHOST_OK.match(host):
            vhosts.append(host)
        elif host:
            label.ignored("VHOST", host, "not a host name")
    paths = []
    for path in (label("PATH") or "").split():
        if _PATH_OK.match(path):
            paths.append(path)
        else:
            label.ignored("PATH", path, "not a path")
    check = _port_check(app, index)
    mode = (label("MODE") or "").lower()
    if mode not in ("http", "tcp"):
        if mode:
            label.ignored("MODE", mode, "use http or tcp")
        http_check = check is not None and check.protocol in HTTP_HEALTH_PROTOCOLS
        mode = "http" if vhosts or http_check else "tcp"
    if vhosts and mode != "http":
        label.notes.append("virtual hosts need http mode: not routed on the HTTP frontend")
        vhosts = []
    weight_text = label("BACKEND_WEIGHT") or "0"
    if not re.fullmatch(r"-?\d+", weight_text):
        label.ignored("BACKEND_WEIGHT", weight_text, "not an integer")
        weight_text = "0"
    servers = tuple(
        Server(sanitize(task.task_id), task.host, task.ports[index])
        for task in tasks
        if index < len(task.ports) and _HOST_OK.match(task.host)
    )
    return Service(
        app_id=app.id,
        index=index,
        name=f"{sanitize(app.id)}_{port}",
        bind=bind,
        port=port,
        mode=mode,
        balance=label("BALANCE") or "roundrobin",
        vhosts=tuple(vhosts),
        paths=tuple(paths) if vhosts else (),
        sticky=(label("STICKY") or "").lower() in _TRUE and mode == "http",
        weight=int(weight_text),
        check=check if check is not None and check.protocol in MIRRORED_CHECKS else None,
        servers=servers,
        notes=tuple(label.notes),
    )


def render(apps: Sequence[AppDefinition], tasks: Mapping[str, Sequence[BackendTask]], options: Mapping[str, Any]) -> str:
    """The whole haproxy.cfg for `apps` (see the module docstring)."""
    opts = options_with_defaults(options)
    services = collect(apps, tasks, opts)
    http_port = int(opts["http_port"])
    stats_port = int(opts["stats_port"]) if opts.get("stats_port") else None
    claimed: dict[int, str] = {}
    if any(s.vhosts for s in services):
        claimed[http_port] = HTTP_FRONTEND
    if stats_port:
        claimed[stats_port] = "stats"
    kept: list[Service] = []
    skipped: list[str] = []
    for s in services:
        owner = claimed.get(s.port)
        if owner is not None:
            skipped.append(f"# {s.app_id} port index {s.index}: port {s.port} already used by {owner}; skipped")
            continue
        claimed[s.port] = s.name
        kept.append(s)

    lines = [
        "# Generated by `marathon lb haproxy`; edits are overwritten.",
        "global",
        f"    maxconn {int(opts['maxconn'])}",
        f"    hard-stop-after {opts['hard_stop_after']}",
    ]
    if opts.get("stats_socket"):
        lines.append(f"    stats socket {opts['stats_socket']} mode 600 level admin expose-fd listeners")
        lines.append("    stats timeout 2m")
    lines += [
        "",
        "defaults",
        "    mode tcp",
        f"    timeout connect {opts['timeout_connect']}",
        f"    timeout client {opts['timeout_client']}",
        f"    timeout server {opts['timeout_server']}",
        "    retries 3",
        "    option redispatch",
    ]
    if skipped:
        lines += ["", *skipped]
    if stats_port:
        lines += ["", "listen stats", f"    bind {opts['bind']}:{stats_port}", "    mode http", "    stats enable",
                  f"    stats uri {STATS_URI}"]
    routed = sorted((s for s in kept if s.vhosts), key=lambda s: (not s.paths, -s.weight, s.name))
    if routed:
        lines += [
            "",
            f"frontend {HTTP_FRONTEND}",
            f"    bind {opts['bind']}:{http_port}",
            "    mode http",
            "    http-request set-var(txn.vhost) req.hdr(host),field(1,:),lower",
        ]
        for s in routed:
            lines.append(f"    acl host_{s.name} var(txn.vhost) -m str {' '.join(s.vhosts)}")
            if s.paths:
                lines.append(f"    acl path_{s.name} path_beg {' '.join(s.paths)}")
        for s in routed:
            condition = f"host_{s.name} path_{s.name}" if s.paths else f"host_{s.name}"
            lines.append(f"    use_backend {s.name} if {condition}")
    for s in kept:
        lines += ["", f"# {s.app_id} port index {s.index}", *(f"# {note}" for note in s.notes)]
        lines += [f"frontend {s.name}", f"    bind {s.bind}:{s.port}", f"    mode {s.mode}", f"    default_backend {s.name}"]
        lines += ["", f"backend {s.name}", f"    mode {s.mode}", f"    balance {s.balance}"]
        if s.mode == "http":
            lines.append("    option forwardfor")
        if s.sticky:
            lines.append("    cookie MARATHON_LB_SERVER insert indirect nocache")
        server_opts = ""
        if s.check is not None:
            if s.check.protocol.endswith("HTTP"):
                path = s.check.path if isinstance(s.check.path, str) and _PATH_OK.match(s.check.path) else "/"
                lines.append(f"    option httpchk GET {path}")
            inter = max(1, s.check.interval_seconds)
            server_opts = f" check inter {inter}s fall {max(1, s.check.max_consecutive_failures)}"
        for srv in s.servers:
            cookie = f" cookie {srv.name}" if s.sticky else ""
            lines.append(f"    server {srv.name} {srv.address}{cookie}{server_opts}")
    return "\n".join(lines) + "\n"


class HaproxyGenerator:
    """The `LoadBalancerGenerator` registered as "haproxy"."""

    name = NAME

    def render(self, apps: Sequence[AppDefinition], tasks: Mapping[str, Sequence[BackendTask]], options: Mapping[str, Any]) -> str:
        return render(apps, tasks, options)


GENERATOR = HaproxyGenerator()


@hookimpl
def marathon_lb_generators() -> Mapping[str, HaproxyGenerator]:
    return {NAME: GENERATOR}
