"""The event catalogue (SPEC.md 9.2): what the event bus carries.

Every event is a Struct tagged by `eventType` and carries a `timestamp`; the
bus encodes each event once and hands the same bytes to every subscriber.
"""

from __future__ import annotations

from typing import Any

import msgspec
from msgspec import Struct


class Event(Struct, frozen=True, kw_only=True, tag_field="eventType", rename="camel"):
    timestamp: str

    @property
    def event_type(self) -> str:
        return self.__struct_config__.tag  # type: ignore[return-value]


class ApiPostEvent(Event, tag="api_post_event"):
    client_ip: str
    uri: str
    app_definition: Any


class EventStreamAttached(Event, tag="event_stream_attached"):
    remote_address: str


class EventStreamDetached(Event, tag="event_stream_detached"):
    remote_address: str


class GroupChangeSuccess(Event, tag="group_change_success"):
    group_id: str
    version: str


class GroupChangeFailed(Event, tag="group_change_failed"):
    group_id: str
    version: str
    reason: str


class DeploymentInfo(Event, tag="deployment_info"):
    plan: Any
    current_step: Any


class DeploymentStepSuccess(Event, tag="deployment_step_success"):
    plan: Any
    current_step: Any


class DeploymentStepFailure(Event, tag="deployment_step_failure"):
    plan: Any
    current_step: Any


class DeploymentSuccess(Event, tag="deployment_success"):
    id: str
    plan: Any


class DeploymentFailed(Event, tag="deployment_failed"):
    id: str
    plan: Any
    reason: str | None = None


class DeploymentProgressDeadlineExceeded(Event, tag="deployment_progress_deadline_exceeded_event"):
    """Ours, not Marathon's: a deployment made no progress for its deadline (it keeps trying)."""

    id: str
    plan: Any
    current_step: int
    deadline_seconds: float


class AppTerminatedEvent(Event, tag="app_terminated_event"):
    app_id: str


class StatusUpdateEvent(Event, tag="status_update_event"):
    slave_id: str
    task_id: str
    task_status: str
    message: str
    app_id: str
    host: str
    ip_addresses: list[dict[str, str]]
    ports: list[int]
    version: str


class InstanceChangedEvent(Event, tag="instance_changed_event"):
    instance_id: str
    condition: str
    run_spec_id: str
    agent_id: str
    host: str
    run_spec_version: str
    goal: str


class InstanceHealthChangedEvent(Event, tag="instance_health_changed_event"):
    instance_id: str
    run_spec_id: str
    healthy: bool | None
    run_spec_version: str


class UnknownInstanceTerminatedEvent(Event, tag="unknown_instance_terminated_event"):
    instance_id: str
    run_spec_id: str
    condition: str


class AddHealthCheckEvent(Event, tag="add_health_check_event"):
    app_id: str
    version: str
    health_check: Any


class RemoveHealthCheckEvent(Event, tag="remove_health_check_event"):
    app_id: str


class FailedHealthCheckEvent(Event, tag="failed_health_check_event"):
    app_id: str
    task_id: str
    health_check: Any


class HealthStatusChangedEvent(Event, tag="health_status_changed_event"):
    app_id: str
    instance_id: str
    version: str
    alive: bool


class UnhealthyInstanceKillEvent(Event, tag="unhealthy_instance_kill_event"):
    app_id: str
    task_id: str
    instance_id: str
    version: str
    reason: str
    host: str
    slave_id: str | None = None


class HealthKillsSuppressedEvent(Event, tag="health_check_kills_suppressed_event"):
    """Ours, not Marathon's: health kills held back to protect capacity (RELIABILITY.md AG-6)."""

    app_id: str
    reason: str
    failed: int
    probed: int


def encode(event: Event) -> bytes:
    return msgspec.json.encode(event)
