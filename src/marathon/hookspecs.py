"""Every extension point of Marathon, in one documented file.

Plugins implement these hooks with `@hookimpl` (pluggy), are registered with
the plugin manager (`marathon.plugins`), and are called with keyword
arguments only.  Built-in behaviour registers through the same hooks, so a
plugin can add to it or replace it.  Hooks are synchronous; a hook that
provides behaviour with I/O returns objects whose methods are async (run on
the server's trio loop).

Hooks are named `marathon_<area>_<verb>` and grow only by adding parameters
at the end.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal, Protocol

import pluggy
from msgspec import Struct

from .models.app import AppDefinition, HealthCheck
from .models.events import Event
from .models.group import Group

hookspec = pluggy.HookspecMarker("marathon")
hookimpl = pluggy.HookimplMarker("marathon")


# ==============================================================================
# Plugin configuration
# ==============================================================================


@hookspec
def marathon_configure(plugin_id: str, configuration: Mapping[str, Any], marathon_info: Mapping[str, Any]) -> None:
    """Receive this plugin's settings from the plugin descriptor (`--plugin_conf`).

    Called once at start-up, before any other hook, and only on the plugin the
    descriptor entry names (like Marathon's `PluginConfiguration.initialize`).
    `plugin_id`: the descriptor key.  `configuration`: its `configuration`
    object (empty if none).  `marathon_info`: `{"frameworkName": ...}`.
    Raise to refuse the configuration: start-up stops (exit 102) with the
    exception's message.
    """


# ==============================================================================
# Authentication and authorization
# ==============================================================================


class RequestInfo(Struct, frozen=True, kw_only=True):
    """What auth plugins see of an HTTP request (Marathon's request facade)."""

    method: str
    path: str
    headers: Mapping[str, list[str]]  # lower-case names
    query: Mapping[str, list[str]]
    remote_addr: str
    remote_port: int

    def header(self, name: str) -> list[str]:
        return list(self.headers.get(name.lower(), []))


class Identity(Struct, frozen=True, kw_only=True):
    """An authenticated caller."""

    name: str
    attributes: Mapping[str, Any] = {}


class PluginResponse(Struct, frozen=True, kw_only=True):
    """An HTTP answer written by a plugin."""

    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: Mapping[str, str] = {}


# Marathon's authorized actions (SPEC.md 12.2).
Action = Literal[
    "CreateRunSpec", "UpdateRunSpec", "DeleteRunSpec", "ViewRunSpec",
    "CreateGroup", "UpdateGroup", "DeleteGroup", "ViewGroup",
    "CreateResource", "UpdateResource", "DeleteResource", "ViewResource",
]
# System resources of the *Resource actions.
SYSTEM_RESOURCES = ("Leader", "Events", "SystemMetrics", "SystemConfig", "Plugins")


class AuthResource(Struct, frozen=True, kw_only=True):
    """What an action is about.

    `kind` "app": `id` is the app id and `app` its definition (the new one for
    a create or update).  `kind` "group": `id` is the group id.  `kind`
    "system": `id` is one of `SYSTEM_RESOURCES`.
    """

    kind: Literal["app", "group", "system"]
    id: str
    app: AppDefinition | None = None


@hookspec(firstresult=True)
def marathon_auth_authenticate(request: RequestInfo) -> Identity | None:
    """Who is calling?

    Called by the API for every request except `/ping`, when at least one
    plugin implements it (with none, every caller is allowed, anonymously).
    Return the caller's identity, or None if the request carries no valid
    credentials: the request is then refused with 401 (see
    `marathon_auth_not_authenticated`).  First non-None answer wins.
    Raising means the identity provider failed: 503.
    May be a coroutine function (`async def`): the API awaits the answer in
    the request's task, so a slow check (password hashing) can run in a worker
    thread (`trio.to_thread.run_sync`) instead of stalling the event loop.
    """


@hookspec(firstresult=True)
def marathon_auth_authorize(identity: Identity | None, action: Action, resource: AuthResource) -> bool | None:
    """May `identity` do `action` on `resource`?

    Called by the API for every access check (SPEC.md 12.2 lists where), and to
    filter lists and the event stream.  `identity` is None only when no plugin
    authenticates.  Return True or False; None means "no opinion" (the next
    plugin decides; if none has one, the action is allowed).  Must be fast and
    must not do I/O: it runs once per item of a list.
    """


@hookspec(firstresult=True)
def marathon_auth_not_authenticated(request: RequestInfo) -> PluginResponse | None:
    """The 401 answer for a request without valid credentials.

    Return None for the default: 401 `{"message": "Not Authenticated!"}`.
    """


@hookspec(firstresult=True)
def marathon_auth_not_authorized(identity: Identity | None, request: RequestInfo) -> PluginResponse | None:
    """The 403 answer for a refused action.

    Return None for the default: 403
    `{"message": "Not Authorized to perform this action!"}`.
    """


# ==============================================================================
# Validation (policy)
# ==============================================================================


class PolicyViolation(Struct, frozen=True):
    """One broken rule: a JSON path (`/container/docker/image`) and a message."""

    path: str
    message: str


@hookspec
def marathon_validate_app(app: AppDefinition) -> Sequence[PolicyViolation] | None:
    """Extra rules for app definitions (Marathon's `RunSpecValidator`).

    Called for every app a change creates or modifies, after Marathon's own
    validation.  Return the violations (all plugins' are collected); any
    violation refuses the whole change with 422 `Object is not valid`, paths
    relative to the app.  Return None or [] to accept.
    """


@hookspec
def marathon_validate_group(group: Group) -> Sequence[PolicyViolation] | None:
    """Extra rules for the groups a change creates or modifies (same contract)."""


# ==============================================================================
# Tasks
# ==============================================================================


class TaskAdjustment(Struct, kw_only=True):
    """The mutable parts of a task about to launch (Marathon's
    `RunSpecTaskProcessor` gets the TaskInfo builder): change `env` and
    `labels` in place."""

    task_id: str
    env: dict[str, str]
    labels: dict[str, str]


@hookspec
def marathon_task_adjust(app: AppDefinition, task: TaskAdjustment) -> None:
    """Adjust a task before it is launched.

    Called by the scheduler for every task it launches, after Marathon built
    the task's environment (so a plugin sees and may override `PORT0`, ...).
    Mutate `task.env` / `task.labels`; the return value is ignored.  Called on
    the hot path of deploy bursts: no I/O.
    """


@hookspec(firstresult=True)
def marathon_secret_resolve(source: str, app_id: str) -> bytes | None:
    """The value of the secret `source` (an app's `secrets.<name>.source`,
    e.g. "/db/password") for a task of `app_id`, or None if this plugin does
    not hold it (the next plugin is asked; the built-in file store,
    `--secrets_dir`, is asked last).

    Called on the leader as each task is launched, at most once per source
    per launch batch; the value goes to the agent with the launch and is
    delivered as the app asks (an environment variable, a file).  It is
    never stored by Marathon, logged, or shown by the API or in events.
    Called on the hot path of deploy bursts: keep it fast (cache what you
    fetch); raising fails nothing (the launch fails with the secret named
    as unresolved).
    """


# ==============================================================================
# Health checks
# ==============================================================================


class CheckTarget(Struct, frozen=True, kw_only=True):
    """What one probe is aimed at: a task's address and the check's port."""

    app_id: str
    instance_id: str
    task_id: str
    host: str
    port: int | None


class CheckResult(Struct, frozen=True):
    """The outcome of one probe.

    `healthy` True or False records a result; None means "no result" (e.g. an
    HTTP 1xx with `ignoreHttp1xx`): nothing is counted or changed.
    `cause` explains a failure (shown as `lastFailureCause`).
    """

    healthy: bool | None
    cause: str = ""


class HealthChecker(Protocol):
    """A health-check protocol implementation (one per protocol name)."""

    async def check(self, target: CheckTarget, check: HealthCheck) -> CheckResult:
        """Probe `target` once.  Must return within `check.timeout_seconds`
        (the caller also enforces it); must not raise for ordinary failures
        (return `CheckResult(False, cause)` instead)."""
        ...


@hookspec
def marathon_health_checkers() -> dict[str, HealthChecker]:
    """Provide health-check protocols run by Marathon itself (not by agents).

    Called once at start-up by the health service.

    Return: a mapping of protocol name (`"HTTP"`, `"HTTPS"`, `"TCP"`, or a new
    one) to its checker.  The mappings of all plugins are merged; a plugin
    registered later replaces an earlier plugin's (or a built-in's) protocol.
    """


# ==============================================================================
# Events
# ==============================================================================


@hookspec
def marathon_event_observe(event: Event) -> None:
    """Observe every event published on the event bus, in publication order.

    Called by the event bus synchronously, on the server's trio thread, for
    every event (the same ones `/v2/events` streams).
    `event`: the event Struct (`event.event_type` is its `eventType`).
    Must return quickly and never block: a plugin that needs I/O queues the
    event for a background service of its own.  Exceptions are logged and
    ignored.  Return value ignored.
    """


# ==============================================================================
# Metrics
# ==============================================================================


class MetricsSnapshot(Struct, frozen=True, kw_only=True):
    """Every metric at one moment: name -> value (counters and gauges), and
    name -> summary (timers: count, mean, max, p50, p99 in seconds)."""

    timestamp: float  # seconds since the epoch
    counters: Mapping[str, int]
    gauges: Mapping[str, float]
    timers: Mapping[str, Mapping[str, float]]


class MetricsSink(Protocol):
    """A destination for metrics (StatsD, DataDog, Graphite, ...)."""

    name: str
    interval_seconds: float

    async def send(self, snapshot: MetricsSnapshot) -> None:
        """Deliver one snapshot.  Called every `interval_seconds` from the
        metrics service; must not block the loop; a receiver that is down is
        the sink's problem (log and carry on, never raise)."""
        ...


@hookspec
def marathon_metrics_sinks(flags: Mapping[str, Any]) -> Sequence[MetricsSink] | None:
    """Provide metrics sinks.

    Called once at start-up with every server flag by name
    (`--metrics_statsd`, `--metrics_statsd_host`, ...).  Return the sinks to run
    (the results of all plugins are collected); None or [] for none.
    """


# ==============================================================================
# Load balancers
# ==============================================================================


class BackendTask(Struct, frozen=True, kw_only=True):
    """A task a load balancer may send traffic to."""

    task_id: str
    host: str
    ports: Sequence[int]
    healthy: bool | None  # None: the app has no health checks


class LoadBalancerGenerator(Protocol):
    """Turns the current apps and their tasks into a load balancer's config."""

    name: str

    def render(self, apps: Sequence[AppDefinition], tasks: Mapping[str, Sequence[BackendTask]], options: Mapping[str, Any]) -> str:
        """The whole configuration text.  `tasks` holds, per app id, its
        running tasks (and only healthy ones when the app has health checks).
        `options`: the generator's settings (bind address, ...)."""
        ...


@hookspec
def marathon_lb_generators() -> Mapping[str, LoadBalancerGenerator] | None:
    """Provide load-balancer config generators by name (`"haproxy"` is built in).

    Called by `marathon lb <name>`.  Mappings of all plugins are merged; a
    later registration replaces an earlier one of the same name.
    """


# ==============================================================================
# Background services and HTTP routes
# ==============================================================================


class PluginService(Protocol):
    async def run(self, *, task_status: Any = ...) -> None:
        """Run until cancelled; call `task_status.started()` once ready."""
        ...


@hookspec
def marathon_background_services() -> Sequence[PluginService] | None:
    """Long-running trio services a plugin needs (e.g. to ship events).

    Called once at start-up; each service is started in the server's nursery
    with `nursery.start(service.run)`.  Collected from all plugins.
    """


class PluginRequest(Struct, frozen=True, kw_only=True):
    """A request to `/v2/plugins/<id>/<path>` (`path` is the remainder)."""

    method: str
    path: str
    headers: Mapping[str, list[str]]
    query: Mapping[str, list[str]]
    body: bytes
    identity: Identity | None


class HttpHandler(Protocol):
    async def handle(self, request: PluginRequest) -> PluginResponse: ...


@hookspec
def marathon_http_handlers() -> Mapping[str, HttpHandler] | None:
    """Handlers of `/v2/plugins/<plugin id>/...` routes, by plugin id.

    Called once at start-up.  GET/HEAD need ViewResource on "Plugins", PUT
    UpdateResource, POST CreateResource, DELETE DeleteResource.
    """
