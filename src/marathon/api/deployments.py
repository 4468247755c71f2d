"""`/v2/deployments`: the running deployments and where each one is."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..models.deployment import steps_json
from ..services.deployments import RunningDeployment
from ._context import ApiContext
from ._http import json_response


def deployment_json(run: RunningDeployment) -> dict:
    plan = run.plan
    return {
        "id": plan.id,
        "version": plan.version,
        "affectedApps": plan.affected_apps,
        "affectedPods": [],
        "steps": steps_json(plan.steps),
        "currentActions": [
            {"action": a.action, "app": a.app, "readinessCheckResults": []} for a in run.current_actions
        ],
        "currentStep": run.current_step,
        "totalSteps": len(plan.steps),
    }


async def list_deployments(request: Request) -> Response:
    ctx: ApiContext = request.app.state.ctx
    runs = sorted(ctx.deployments.running(), key=lambda r: r.plan.version)
    return json_response([deployment_json(r) for r in runs])


routes = [Route("/v2/deployments", list_deployments, methods=["GET"])]
