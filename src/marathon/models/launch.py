"""What Marathon sends an agent to start one task (its "TaskInfo").

Built by `marathon.task_builder` from the app, the instance and the placement;
carried by the cluster driver to the agent, which runs it.  Everything the
agent needs is here: the agent never looks at app definitions.
"""

from __future__ import annotations

from typing import Literal

from msgspec import Struct

Limit = float | Literal["unlimited"] | None


class FetchUri(Struct, frozen=True, kw_only=True):
    uri: str
    extract: bool = True
    executable: bool = False
    cache: bool = False
    dest_path: str | None = None


class TaskLaunch(Struct, frozen=True, kw_only=True):
    task_id: str
    instance_id: str
    app_id: str
    agent_id: str
    # Either a shell command (run with `/bin/sh -c`) or an argv (no shell).
    shell: bool
    command: str | None = None
    argv: list[str] = []
    env: dict[str, str] = {}
    cpus: float = 0.0
    mem: float = 0.0  # MiB
    disk: float = 0.0  # MiB
    gpus: int = 0
    # Hard limits; None means "same as the request", "unlimited" means none.
    cpu_limit: Limit = None
    mem_limit: Limit = None
    host_ports: list[int] = []
    # SIGTERM -> SIGKILL delay when the task is killed.
    kill_grace_seconds: float = 3.0
    user: str | None = None
    fetch: list[FetchUri] = []
    labels: dict[str, str] = {}
