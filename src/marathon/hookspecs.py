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

from typing import Protocol

import pluggy
from msgspec import Struct

from .models.app import HealthCheck
from .models.events import Event

hookspec = pluggy.HookspecMarker("marathon")
hookimpl = pluggy.HookimplMarker("marathon")


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
