"""Output shapes: AppInfo (SPEC.md 2.8) and Task (SPEC.md 1.7) JSON.

An app's canonical JSON never changes for a given (id, version), so it is
encoded once and cached; AppInfo splices the live fields (counts, tasks,
deployments, ...) onto those bytes instead of re-encoding the definition for
every request.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from functools import lru_cache
from typing import Any

import msgspec
from msgspec import UNSET

from ..models.app import AppDefinition
from ..models.app_rules import app_json
from ..models.instance import TERMINAL, CheckStatus, Instance
from ..models.timestamp import format_ms
from ._context import ApiContext

_encoder = msgspec.json.Encoder()

APP_EMBEDS = ("tasks", "counts", "deployments", "readiness", "lastTaskFailure", "failures", "taskStats")
_EMBED_PREFIXES = ("group.apps.", "apps.", "app.")


def parse_embeds(values: Iterable[str]) -> set[str]:
    """`embed` query values -> app embed names (prefixes stripped, unknown ignored)."""
    out: set[str] = set()
    for v in values:
        for p in _EMBED_PREFIXES:
            if v.startswith(p):
                v = v[len(p):]
                break
        if v in APP_EMBEDS:
            out.add(v)
    if "failures" in out:
        out |= {"tasks", "lastTaskFailure", "deployments"}
    if "tasks" in out:
        out.add("deployments")
    return out


def app_bytes(ctx: ApiContext, app: AppDefinition) -> bytes:
    key = (app.id, app.version if app.version is not UNSET else "")
    data = ctx.app_json_cache.get(key)
    if data is None:
        data = app_json(app)
        if len(ctx.app_json_cache) > 50000:
            ctx.app_json_cache.clear()
        ctx.app_json_cache[key] = data  # type: ignore[index]
    return data


def splice(base: bytes, extra: dict[str, Any]) -> bytes:
    """`{...base}` + extra fields, without decoding base."""
    if not extra:
        return base
    tail = _encoder.encode(extra)
    return base[:-1] + b"," + tail[1:]


@lru_cache(maxsize=4096)
def _ip_of(hostname: str) -> str | None:
    """`hostname` when it is an address literal.  Never a DNS lookup: that
    would block the event loop for every unknown name."""
    try:
        return str(ipaddress.ip_address(hostname))
    except ValueError:
        return None


def counts(instances: Iterable[Instance], health: Callable[[Instance], bool | None] | None = None) -> dict[str, int]:
    staged = running = healthy = unhealthy = 0
    for inst in instances:
        task = inst.task
        if task is None or inst.condition == "Scheduled":
            continue
        state = task.mesos_state
        if state == "TASK_RUNNING":
            running += 1
        elif state in ("TASK_STAGING",) or inst.condition == "Provisioned":
            staged += 1
        if health is not None:
            h = health(inst)
            if h is True:
                healthy += 1
            elif h is False:
                unhealthy += 1
    return {"tasksStaged": staged, "tasksRunning": running, "tasksHealthy": healthy, "tasksUnhealthy": unhealthy}


def counts_from_tracker(by_state: dict[tuple[str, str], int]) -> dict[str, int]:
    """`counts` without looking at each instance (apps without health checks):
    staged = a task not yet confirmed running, running = TASK_RUNNING."""
    staged = running = 0
    for (_, condition), n in by_state.items():
        if condition in ("Provisioned", "Staging"):
            staged += n
        elif condition == "Running":
            running += n
    return {"tasksStaged": staged, "tasksRunning": running, "tasksHealthy": 0, "tasksUnhealthy": 0}


def check_json(c: CheckStatus) -> dict[str, Any]:
    """Mesos' CheckStatusInfo as Marathon renders it."""
    if c.http_status_code is not None:
        return {"http": {"statusCode": c.http_status_code}}
    if c.tcp_succeeded is not None:
        return {"tcp": {"succeeded": c.tcp_succeeded}}
    return {"command": {"exitCode": c.command_exit_code if c.command_exit_code is not None else -1}}


def task_json(ctx: ApiContext, inst: Instance, app: AppDefinition | None) -> dict[str, Any]:
    task = inst.task
    assert task is not None
    out: dict[str, Any] = {
        "appId": inst.run_spec_id,
        "id": task.task_id,
        "host": inst.hostname or "",
        "slaveId": inst.agent_id or "",
        "state": task.mesos_state if inst.condition != "Provisioned" else "TASK_STAGING",
    }
    if inst.condition not in TERMINAL:
        if task.staged_at is not None:
            out["stagedAt"] = format_ms(task.staged_at)
        if task.started_at is not None:
            out["startedAt"] = format_ms(task.started_at)
        out["version"] = inst.run_spec_version
        out["ports"] = list(task.host_ports)
    out["servicePorts"] = app.service_ports if app is not None else []
    ips = list(task.ip_addresses)
    if not ips and inst.hostname:
        ip = _ip_of(inst.hostname)
        if ip:
            ips = [ip]
    out["ipAddresses"] = [{"ipAddress": ip, "protocol": "IPv6" if ":" in ip else "IPv4"} for ip in ips]
    out["healthCheckResults"] = ctx.health.results_of(app, inst) if ctx.health is not None and app is not None else []
    if task.check_result is not None and inst.condition not in TERMINAL:
        out["checkResult"] = check_json(task.check_result)
    out["localVolumes"] = []
    if inst.region:
        out["region"] = inst.region
    if inst.zone:
        out["zone"] = inst.zone
    out["role"] = inst.role
    return out


def placed(instances: Iterable[Instance]) -> list[Instance]:
    """Instances that have a task on an agent (scheduled ones are not shown)."""
    return [i for i in instances if i.task is not None and i.condition != "Scheduled"]


def task_failure_json(ctx: ApiContext, app_id: str) -> dict[str, Any] | None:
    f = ctx.tracker.task_failure(app_id)
    if f is None:
        return None
    out = {
        "appId": f.app_id,
        "host": f.host,
        "message": f.message,
        "state": f.state,
        "taskId": f.task_id,
        "timestamp": f.timestamp,
        "version": f.version,
    }
    if f.slave_id:
        out["slaveId"] = f.slave_id
    return out


def app_info(ctx: ApiContext, app: AppDefinition, embeds: set[str], *, stored: bool = True) -> bytes:
    """AppInfo JSON; `stored=False` for a definition that is not the stored one
    (the POST response), which must not enter the cache."""
    extra: dict[str, Any] = {}
    if "counts" in embeds:
        if ctx.health is not None and app.health_checks:
            extra.update(counts(ctx.tracker.of_app(app.id), lambda i: ctx.health.health_of(app, i)))
        else:
            extra.update(counts_from_tracker(ctx.tracker.counts(app.id)))
    if "deployments" in embeds:
        extra["deployments"] = [{"id": d} for d in ctx.deployments.deployments_of(app.id)]
    if "readiness" in embeds:
        extra["readinessCheckResults"] = ctx.readiness.results_for(app.id) if ctx.readiness is not None else []
    if "tasks" in embeds:
        extra["tasks"] = [task_json(ctx, i, app) for i in placed(ctx.tracker.of_app(app.id))]
    if "lastTaskFailure" in embeds:
        failure = task_failure_json(ctx, app.id)
        if failure is not None:
            extra["lastTaskFailure"] = failure
    if "taskStats" in embeds:
        extra["tasksStats"] = {}
    return splice(app_bytes(ctx, app) if stored else app_json(app), extra)


def join_array(items: Iterable[bytes]) -> bytes:
    return b"[" + b",".join(items) + b"]"
