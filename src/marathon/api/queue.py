"""`/v2/queue`: what waits to be launched, why, and for how long (SPEC.md 1.8)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..errors import NotFound
from ..models import pathid
from ..models.instance import Condition, Instance
from ..models.resources import RejectReason
from ..models.timestamp import format_ms
from ._auth import app_resource
from ._context import ApiContext
from ._http import json_response
from ._render import app_bytes, splice, task_failure_json


def _waiting(inst: Instance) -> bool:
    return inst.is_scheduled or inst.condition == Condition.PROVISIONED


def _summary(ctx: ApiContext, app_id: str) -> dict:
    entry = ctx.launch_queue.rejects.get(app_id)
    if entry is None:
        return {"processedOffersCount": 0, "unusedOffersCount": 0, "rejectSummaryLastOffers": [], "rejectSummaryLaunchAttempt": []}
    at, summary = entry
    declined = list(summary.declined)  # type: ignore[attr-defined]
    processed = summary.processed  # type: ignore[attr-defined]
    funnel = []
    remaining = processed
    for code, name in enumerate(RejectReason.NAMES):
        count = declined[code] if code < len(declined) else 0
        funnel.append({"reason": name, "declined": count, "processed": remaining})
        remaining -= count
    unused = sum(declined)
    out = {
        "processedOffersCount": processed,
        "unusedOffersCount": unused,
        "rejectSummaryLastOffers": funnel,
        "rejectSummaryLaunchAttempt": funnel,
    }
    if unused:
        out["lastUnusedOfferAt"] = format_ms(at)
    return out


async def queue(request: Request) -> Response:
    ctx: ApiContext = request.app.state.ctx
    now = ctx.time_ms()
    embed_offers = "lastUnusedOffers" in request.query_params.getlist("embed")
    items = []
    visible = ctx.auth.can_view_app(request)
    for app in sorted(ctx.groups.root.transitive_apps(), key=lambda a: a.id):
        if not visible(app):
            continue
        waiting = [i for i in ctx.tracker.of_app(app.id) if _waiting(i)]
        by_role: dict[str, list[Instance]] = {}
        for inst in waiting:
            by_role.setdefault(inst.role, []).append(inst)
        delay = ctx.launch_queue.delay(app)
        # Why the last launch failed (a launch the agent refused names what
        # it cannot provide): the first thing to read when something waits.
        failure = task_failure_json(ctx, app.id) if by_role else None
        app_json = app_bytes(ctx, app)
        if failure is not None:
            app_json = splice(app_json, {"lastTaskFailure": failure})
        for role, insts in sorted(by_role.items()):
            entry = {
                "count": len(insts),
                "role": role,
                "delay": {
                    "timeLeftSeconds": delay.time_left_seconds(now) if delay else 0,
                    "overdue": delay is None or delay.overdue(now),
                },
                "since": format_ms(min(i.state.since for i in insts)),
                "processedOffersSummary": _summary(ctx, app.id),
            }
            if embed_offers:
                entry["lastUnusedOffers"] = []
            items.append(splice(b'{"app":' + app_json + b"}", entry))
    return json_response(b'{"queue":[' + b",".join(items) + b"]}")


async def reset_delay(request: Request) -> Response:
    ctx: ApiContext = request.app.state.ctx
    app_id = pathid.resolve(request.path_params["app_id"], "/")
    app = ctx.groups.app(app_id)
    if app is None or not any(_waiting(i) for i in ctx.tracker.of_app(app_id)):
        raise NotFound(f"Application {app_id} not found in tasks queue.")
    ctx.auth.check(request, "UpdateRunSpec", app_resource(app))
    ctx.launch_queue.reset_delay(app)
    return Response(status_code=204)


routes = [
    Route("/v2/queue", queue, methods=["GET"]),
    Route("/v2/queue/{app_id:path}/delay", reset_delay, methods=["DELETE"]),
]
