"""What the API handlers are given: the services, and the config they need."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ..cluster.remote import RemoteDriver
from ..config import Config
from ..leadership import Leadership
from ..plugins import Plugins
from ..services.deployments import DeploymentManager
from ..services.events import EventBus
from ..services.groups import GroupManager
from ..services.health import HealthService
from ..services.instances import InstanceTracker
from ..services.launch_queue import LaunchQueue
from ..services.metrics import MetricsRegistry
from ..services.readiness import ReadinessService
from ..storage.repository import StateRepository
from ._auth import Auth


@dataclass
class ApiContext:
    config: Config
    groups: GroupManager
    tracker: InstanceTracker
    deployments: DeploymentManager
    launch_queue: LaunchQueue
    bus: EventBus
    repo: StateRepository
    time_ms: Callable[[], int]
    health: HealthService | None = None
    readiness: ReadinessService | None = None
    auth: Auth = field(default_factory=lambda: Auth(None))
    plugins: Plugins | None = None
    started_ms: int = 0
    # (app id, version) -> canonical app JSON; apps are immutable per version.
    app_json_cache: dict[tuple[str, str], bytes] = field(default_factory=dict)
    metrics: MetricsRegistry | None = None
    # Remote agents (None: this master runs none), the embedded agent as
    # `GET /v2/agents` shows it, the headers that authenticate the master
    # to an agent's files endpoint, and the embedded agent's sandbox reader.
    agents: RemoteDriver | None = None
    local_agent: dict | None = None
    agent_auth_headers: dict[str, str] = field(default_factory=dict)
    read_sandbox_file: Callable[[str, str, int, int], dict | None] | None = None
    # Who leads (GET/DELETE /v2/leader, /v2/info); None: an API built alone, which leads.
    leadership: Leadership | None = None
