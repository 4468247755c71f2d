"""`/v2/deployments`: the running deployments and where each one is."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .. import planning
from ..errors import DeploymentNotFound
from ..models.deployment import steps_json
from ..models.group import Group
from ..services.deployments import RunningDeployment
from ._context import ApiContext
from ._http import deployment_result, flag, json_response


def deployment_json(ctx: ApiContext, run: RunningDeployment) -> dict:
    plan = run.plan
    readiness = ctx.readiness
    out = {
        "id": plan.id,
        "version": plan.version,
        "affectedApps": plan.affected_apps,
        "affectedPods": [],
        "steps": steps_json(plan.steps),
        "currentActions": [
            {
                "action": a.action,
                "app": a.app,
                "readinessCheckResults": readiness.results_for(a.app) if readiness is not None else [],
            }
            for a in run.current_actions
        ],
        "currentStep": run.current_step,
        "totalSteps": len(plan.steps),
    }
    if run.stalled:
        # Ours (RELIABILITY.md AG-7): no progress within --deployment_progress_deadline_seconds.
        out["status"] = "ProgressDeadlineExceeded"
    return out


async def list_deployments(request: Request) -> Response:
    ctx: ApiContext = request.app.state.ctx
    runs = sorted(ctx.deployments.running(), key=lambda r: r.plan.version)
    return json_response([deployment_json(ctx, r) for r in runs])


async def delete_deployment(request: Request) -> Response:
    """`force=true`: stop where it is (202, nothing undone).  Otherwise deploy
    the revert of the plan against the current state, with force (SPEC.md 4.7)."""
    ctx: ApiContext = request.app.state.ctx
    plan_id = request.path_params["deployment_id"]
    force = flag(request, "force", False)
    run = ctx.deployments.get(plan_id)
    if run is None:
        raise DeploymentNotFound(plan_id)
    if force:
        await ctx.repo.commit([ctx.repo.deployment_delete(plan_id)])
        await ctx.deployments.cancel(plan_id)
        return Response(status_code=202)

    def change(root: Group, version: str) -> Group:
        return planning.revert(run.original, run.target, root, version=version)

    plan = await ctx.groups.update(change, force=True)
    return deployment_result(plan.id, plan.version)


routes = [
    Route("/v2/deployments", list_deployments, methods=["GET"]),
    Route("/v2/deployments/{deployment_id}", delete_deployment, methods=["DELETE"]),
]
