"""`/v2/deployments`: the running deployments and where each one is."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .. import planning
from ..errors import DeploymentNotFound
from ..hookspecs import AuthResource
from ..models.deployment import steps_json
from ..models.group import Group
from ..services.deployments import RunningDeployment
from ._context import ApiContext
from ._http import deployment_result, flag, json_response


def deployment_json(ctx: ApiContext, run: RunningDeployment, visible=lambda app_id: True) -> dict:  # type: ignore[no-untyped-def]
    """A deployment as the caller may see it: apps they may not view are left out."""
    plan = run.plan
    readiness = ctx.readiness
    steps = [s for s in steps_json(plan.steps) if s["actions"]]
    if ctx.auth.enabled:
        steps = [
            {"actions": [a for a in s["actions"] if visible(a["app"])]} for s in steps
        ]
    out = {
        "id": plan.id,
        "version": plan.version,
        "affectedApps": [a for a in plan.affected_apps if visible(a)],
        "affectedPods": [],
        "steps": steps,
        "currentActions": [
            {
                "action": a.action,
                "app": a.app,
                "readinessCheckResults": readiness.results_for(a.app) if readiness is not None else [],
            }
            for a in run.current_actions
            if visible(a.app)
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
    visible = ctx.auth.can_view_app_id(request)
    runs = sorted(
        (r for r in ctx.deployments.running() if any(visible(a) for a in r.affected_apps)),
        key=lambda r: r.plan.version,
    )
    return json_response([deployment_json(ctx, r, visible) for r in runs])


async def delete_deployment(request: Request) -> Response:
    """`force=true`: stop where it is (202, nothing undone).  Otherwise deploy
    the revert of the plan against the current state, with force (SPEC.md 4.7)."""
    ctx: ApiContext = request.app.state.ctx
    plan_id = request.path_params["deployment_id"]
    force = flag(request, "force", False)
    run = ctx.deployments.get(plan_id)
    if run is None:
        raise DeploymentNotFound(plan_id)
    for app_id in run.affected_apps:
        ctx.auth.check(request, "UpdateRunSpec", AuthResource(kind="app", id=app_id, app=run.target.app(app_id)))
    if force:
        await ctx.repo.commit([ctx.repo.deployment_delete(plan_id)])
        await ctx.deployments.cancel(plan_id)
        return Response(status_code=202)

    def change(root: Group, version: str) -> Group:
        return planning.revert(run.original, run.target, root, version=version)

    plan = await ctx.groups.update(change, force=True, guard=ctx.auth.guard(request))
    return deployment_result(plan.id, plan.version)


routes = [
    Route("/v2/deployments", list_deployments, methods=["GET"]),
    Route("/v2/deployments/{deployment_id}", delete_deployment, methods=["DELETE"]),
]
