"""Readiness checks (SPEC.md 6.5): is a new task ready to take traffic?

Only evaluated during deployments, for tasks of the target version once they
are Running: `GET <scheme>://<host>:<port of portName><path>` every
`intervalSeconds` until the status is one of `httpStatusCodesForReady`; from
then on the task is ready for the rest of the deployment and is not checked
again.  Results are shown in `/v2/deployments` and the app's `readiness`
embed.  Deployments ask through `ensure()` and `is_ready()`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import trio

from ..builtin.health import http_get
from ..models.app import AppDefinition, ReadinessCheck
from ..models.instance import Condition, Instance
from ..task_builder import port_assignments
from .instances import InstanceTracker

log = logging.getLogger("marathon.readiness")


@dataclass(slots=True)
class ReadinessResult:
    name: str
    task_id: str
    app_id: str
    ready: bool = False
    last_response: dict | None = None

    def json(self) -> dict:
        out: dict = {"name": self.name, "taskId": self.task_id, "ready": self.ready}
        if self.last_response is not None:
            out["lastResponse"] = self.last_response
        return out


class ReadinessService:
    def __init__(self, tracker: InstanceTracker, *, time_ms: Callable[[], int]) -> None:
        self._tracker = tracker
        self._time_ms = time_ms
        self._results: dict[str, ReadinessResult] = {}  # task id
        self._checking: dict[str, trio.CancelScope] = {}
        self._nursery: trio.Nursery | None = None

    async def run(self, *, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    def is_ready(self, app: AppDefinition, inst: Instance) -> bool:
        """Ready for the deployment; starts checking the task if needed."""
        if not app.readiness_checks:
            return True
        if inst.task is None or inst.condition != Condition.RUNNING:
            return False
        result = self._results.get(inst.task.task_id)
        if result is not None and result.ready:
            return True
        self._ensure(app, inst)
        return False

    def results_for(self, app_id: str) -> list[dict]:
        return [r.json() for r in self._results.values() if r.app_id == app_id]

    def forget(self, app_id: str) -> None:
        """The deployment of `app_id` ended: stop its checks and drop its results."""
        for task_id, result in list(self._results.items()):
            if result.app_id == app_id:
                del self._results[task_id]
                scope = self._checking.pop(task_id, None)
                if scope is not None:
                    scope.cancel()

    def _ensure(self, app: AppDefinition, inst: Instance) -> None:
        task_id = inst.task.task_id  # type: ignore[union-attr]
        if task_id in self._checking or self._nursery is None:
            return
        check = app.readiness_checks[0]
        scope = trio.CancelScope()
        self._checking[task_id] = scope
        self._results[task_id] = ReadinessResult(name=check.name, task_id=task_id, app_id=app.id)
        self._nursery.start_soon(self._check, app, inst, check, scope)

    async def _check(self, app: AppDefinition, inst: Instance, check: ReadinessCheck, scope: trio.CancelScope) -> None:
        task_id = inst.task.task_id  # type: ignore[union-attr]
        port = _port_named(app, inst, check.port_name)
        with scope:
            while True:
                result = self._results.get(task_id)
                if result is None:
                    return
                current = self._tracker.get(inst.instance_id)
                if current is None or current.task is None or current.task.task_id != task_id:
                    self._results.pop(task_id, None)
                    return
                ready, response = False, None
                try:
                    with trio.fail_after(check.timeout_seconds):
                        r = await http_get(
                            inst.hostname or "127.0.0.1", port or 0, check.path,
                            tls=check.protocol == "HTTPS", want_body=check.preserve_last_response,
                        )
                    ready = r.status in check.http_status_codes_for_ready
                    if check.preserve_last_response:
                        response = {"status": r.status, "contentType": r.content_type, "body": r.body.decode(errors="replace")}
                except (trio.TooSlowError, OSError, Exception) as exc:  # not ready; the result is still shown
                    log.debug("readiness probe failed task_id=%s error=%s", task_id, exc)
                result.ready = ready
                result.last_response = response
                if ready:
                    self._checking.pop(task_id, None)
                    self._tracker.notify(app.id)
                    return
                await trio.sleep(max(check.interval_seconds, 0.1))


def _port_named(app: AppDefinition, inst: Instance, name: str) -> int | None:
    ports = port_assignments(app, inst.task.host_ports if inst.task else [])
    for assignment in ports:
        if assignment.name == name:
            return assignment.effective
    return None

