"""Deployment plans: the steps that turn one root group into another.

A plan is data: computed by `marathon.planning` (pure), stored with the root
group versions it connects, executed by the deployments service.  Steps run
strictly one after another; the actions of a step run in parallel.
"""

from __future__ import annotations

from typing import Literal

from msgspec import Struct

ActionName = Literal[
    "StartApplication", "StopApplication", "ScaleApplication", "RestartApplication",
]


class DeploymentAction(Struct, frozen=True, kw_only=True):
    action: ActionName
    app: str
    # ScaleApplication: the target instance count and instances chosen to die.
    scale_to: int | None = None
    to_kill: list[str] = []
    # RestartApplication of these instances only (an agent drain): each is
    # replaced by a new instance elsewhere within the app's upgradeStrategy,
    # the app's other instances are kept.
    instances: list[str] = []


class DeploymentStep(Struct, frozen=True, kw_only=True):
    actions: list[DeploymentAction]


class DeploymentPlan(Struct, frozen=True, kw_only=True):
    """`original_version`/`target_version` name stored root-group versions."""

    id: str
    version: str
    original_version: str
    target_version: str
    steps: list[DeploymentStep]

    @property
    def affected_apps(self) -> list[str]:
        seen: dict[str, None] = {}
        for step in self.steps:
            for a in step.actions:
                seen.setdefault(a.app, None)
        return list(seen)

    @property
    def is_empty(self) -> bool:
        return not self.steps


def steps_json(steps: list[DeploymentStep]) -> list[dict]:
    """Marathon's rendering of steps: `[{"actions":[{"action","app"}]}]`."""
    return [{"actions": [{"action": a.action, "app": a.app} for a in s.actions]} for s in steps]
