"""Deployment planning: service ports, versioning, plan order, scaling, restart arithmetic."""

from __future__ import annotations

import pytest
from msgspec import structs

from marathon import planning
from marathon.errors import ValidationFailed
from marathon.models.app import AppDefinition, PortDefinition
from marathon.models.group import Group, empty_root, put_app
from marathon.models.instance import Instance, InstanceState, Task

V0 = "2024-01-01T00:00:00.000Z"
V1 = "2024-01-01T00:00:01.000Z"
V2 = "2024-01-01T00:00:02.000Z"


def app(app_id: str, **kw) -> AppDefinition:
    kw.setdefault("cmd", "sleep 1000")
    kw.setdefault("port_definitions", [PortDefinition(port=0, name="default")])
    return AppDefinition(id=app_id, **kw)


def root_of(*apps: AppDefinition, version: str = V0) -> Group:
    root = empty_root(version)
    for a in apps:
        root = put_app(root, a, version=version)
    return root


def deploy(original: Group, target: Group, version: str, **kw) -> tuple[Group, planning.DeploymentPlan]:
    target = planning.assign_service_ports(original, target)
    target = planning.stamp_versions(original, target, version, restart=kw.pop("restart", ()))
    target = structs.replace(target, version=version)
    planning.validate_root(target, original)
    plan = planning.compute_plan(
        original, target, plan_id="p", version=version, original_version=original.version, target_version=version, **kw
    )
    return target, plan


def actions(plan) -> list[list[tuple[str, str]]]:
    return [[(a.action, a.app) for a in s.actions] for s in plan.steps]


def test_new_app_gets_start_then_scale_steps():
    _, plan = deploy(empty_root(V0), root_of(app("/web")), V1)
    assert actions(plan) == [[("StartApplication", "/web")], [("ScaleApplication", "/web")]]


def test_service_ports_assigned_lowest_first_and_written_back():
    target, _ = deploy(empty_root(V0), root_of(app("/a"), app("/b")), V1)
    assert target.app("/a").port_definitions[0].port == 10000
    assert target.app("/b").port_definitions[0].port == 10001


def test_service_port_of_changed_app_reused_and_explicit_port_kept():
    first, _ = deploy(empty_root(V0), root_of(app("/a"), app("/b", port_definitions=[PortDefinition(port=12345)])), V1)
    changed = put_app(first, app("/a", cmd="sleep 2000"), version=V2)
    second, _ = deploy(first, changed, V2)
    assert second.app("/a").port_definitions[0].port == 10000
    assert second.app("/b").port_definitions[0].port == 12345


def test_unchanged_redeploy_gives_empty_plan_and_keeps_version():
    first, _ = deploy(empty_root(V0), root_of(app("/a")), V1)
    again = put_app(first, app("/a"), version=V2)
    second, plan = deploy(first, again, V2)
    assert plan.steps == []
    assert second.app("/a").version == V1


def test_scale_only_change_is_a_scale_and_keeps_last_config_change():
    first, _ = deploy(empty_root(V0), root_of(app("/a")), V1)
    scaled = put_app(first, structs.replace(first.app("/a"), instances=5), version=V2)
    second, plan = deploy(first, scaled, V2)
    assert actions(plan) == [[("ScaleApplication", "/a")]]
    info = second.app("/a").version_info
    assert (second.app("/a").version, info.last_scaling_at, info.last_config_change_at) == (V2, V2, V1)


def test_config_change_is_a_restart():
    first, _ = deploy(empty_root(V0), root_of(app("/a")), V1)
    changed = put_app(first, structs.replace(first.app("/a"), cmd="sleep 5"), version=V2)
    second, plan = deploy(first, changed, V2)
    assert actions(plan) == [[("RestartApplication", "/a")]]
    assert second.app("/a").version_info.last_config_change_at == V2


def test_config_change_to_zero_instances_is_a_scale():
    first, _ = deploy(empty_root(V0), root_of(app("/a")), V1)
    changed = put_app(first, structs.replace(first.app("/a"), cmd="sleep 5", instances=0), version=V2)
    _, plan = deploy(first, changed, V2)
    assert actions(plan) == [[("ScaleApplication", "/a")]]


def test_restart_request_without_change_restarts():
    first, _ = deploy(empty_root(V0), root_of(app("/a")), V1)
    second, plan = deploy(first, first, V2, restart=["/a"])
    assert actions(plan) == [[("RestartApplication", "/a")]]
    info = second.app("/a").version_info
    assert (info.last_config_change_at, info.last_scaling_at) == (V2, V1)


def test_removals_first_then_dependency_layers():
    first, _ = deploy(empty_root(V0), root_of(app("/old")), V1)
    target = empty_root(V2)
    for a in [app("/db"), app("/api", dependencies=["/db"]), app("/web", dependencies=["/api"]), app("/other")]:
        target = put_app(target, a, version=V2)
    _, plan = deploy(first, target, V2)
    assert actions(plan) == [
        [("StopApplication", "/old")],
        [("StartApplication", "/api"), ("StartApplication", "/db"), ("StartApplication", "/other"), ("StartApplication", "/web")],
        [("ScaleApplication", "/db"), ("ScaleApplication", "/other")],
        [("ScaleApplication", "/api")],
        [("ScaleApplication", "/web")],
    ]


def test_group_dependencies_are_inherited():
    target = empty_root(V1)
    target = put_app(target, app("/prod/db/pg"), version=V1)
    target = put_app(target, app("/prod/svc/api"), version=V1)
    svc = structs.replace(target.group("/prod/svc"), dependencies=["/prod/db"])
    prod = structs.replace(target.group("/prod"), groups={**target.group("/prod").groups, "/prod/svc": svc})
    target = structs.replace(target, groups={"/prod": prod})
    deps = planning.app_dependencies(target)
    assert deps["/prod/svc/api"] == {"/prod/db/pg"}
    assert planning.dependency_depths(deps) == {"/prod/db/pg": 1, "/prod/svc/api": 2}


def test_cyclic_dependencies_rejected():
    target = root_of(app("/a", dependencies=["/b"]), app("/b", dependencies=["/a"]))
    with pytest.raises(ValidationFailed) as err:
        planning.validate_root(target)
    assert err.value.body()["details"][0]["errors"] == ["Dependency graph has cyclic dependencies."]


def _violations(target: Group, original: Group | None = None) -> list[tuple[str, tuple[str, ...]]]:
    try:
        planning.validate_root(target, original)
    except ValidationFailed as e:
        return sorted((d["path"], tuple(d["errors"])) for d in e.body()["details"])
    return []


def test_validating_only_the_change_finds_what_a_full_check_finds():
    base = root_of(app("/g/a"), app("/g/b"), app("/h/x"))
    clash_app = put_app(base, app("/h"), version=V1)  # a new app where a group is
    clash_group = structs.replace(  # a new group where an app is
        base, groups={**base.groups, "/g": structs.replace(base.groups["/g"], groups={"/g/a": Group(id="/g/a")})}
    )
    misplaced = structs.replace(  # an app filed under the wrong group
        base, groups={**base.groups, "/h": structs.replace(base.groups["/h"], apps={**base.groups["/h"].apps, "/g/z": app("/g/z")})}
    )
    for target in (clash_app, clash_group, misplaced):
        full = _violations(target)
        assert full, target
        assert _violations(target, base) == full
    fine = put_app(base, app("/g/c"), version=V1)
    assert _violations(fine) == _violations(fine, base) == []


# -- scaling proposition (SPEC.md 4.6) ---------------------------------------------


def inst(iid: str, cond: str = "Running", *, active_since: int | None = 100, goal: str = "Running") -> Instance:
    return Instance(
        instance_id=iid,
        run_spec_id="/a",
        run_spec_version=V1,
        state=InstanceState(condition=cond, since=active_since or 0, goal=goal, active_since=active_since),
        task=Task(task_id=iid + "._app.1", condition=cond, staged_at=active_since),
    )


def test_scale_down_kills_youngest_first_by_default():
    insts = [inst("a", active_since=1), inst("b", active_since=3), inst("c", active_since=2)]
    victims, to_start = planning.scaling_proposition(insts, 1)
    assert [v.instance_id for v in victims] == ["b", "c"] and to_start == 0


def test_scale_down_oldest_first_when_asked():
    insts = [inst("a", active_since=1), inst("b", active_since=3), inst("c", active_since=2)]
    victims, _ = planning.scaling_proposition(insts, 2, kill_selection="OLDEST_FIRST")
    assert [v.instance_id for v in victims] == ["a"]


def test_scale_down_prefers_unreachable_then_staging():
    insts = [inst("run"), inst("stage", "Staging"), inst("lost", "Unreachable")]
    victims, _ = planning.scaling_proposition(insts, 1)
    assert [v.instance_id for v in victims] == ["lost", "stage"]


def test_sentenced_instances_die_first_and_are_replaced_only_if_below_target():
    insts = [inst("a"), inst("b"), inst("c")]
    victims, to_start = planning.scaling_proposition(insts, 3, sentenced=["a"])
    assert [v.instance_id for v in victims] == ["a"] and to_start == 1


def test_scale_up_counts_only_goal_running():
    insts = [inst("a"), inst("b", goal="Decommissioned"), inst("c", "UnreachableInactive")]
    victims, to_start = planning.scaling_proposition(insts, 3)
    assert victims == [] and to_start == 2


# -- rolling restart arithmetic: every row of SPEC.md 4.4's table ----------------------


@pytest.mark.parametrize(
    "n,min_health,max_over,resident,kill_now,max_capacity,initial_starts",
    [
        (10, 1.0, 1.0, False, 0, 20, 10),
        (10, 1.0, 0.0, False, 0, 11, 1),
        (10, 0.5, 0.0, False, 5, 10, 0),
        (10, 0.1, 1.0, False, 9, 20, 10),
        (10, 0.0, 0.0, False, 10, 10, 0),
        (1, 0.5, 0.0, False, 0, 2, 1),
        (3, 0.7, 0.0, False, 0, 4, 1),
        (5, 0.5, 0.0, True, 2, 5, 0),
        (5, 1.0, 0.0, True, 1, 5, 0),
    ],
)
def test_restart_capacity_matches_spec_table(n, min_health, max_over, resident, kill_now, max_capacity, initial_starts):
    got_kill, got_cap = planning.restart_capacity(
        instances=n, minimum_health_capacity=min_health, maximum_over_capacity=max_over,
        healthy=n, current=n, resident=resident,
    )
    assert (got_kill, got_cap) == (kill_now, max_capacity)
    assert planning.restart_starts(instances=n, max_capacity=got_cap, old_active=n, started=0) == initial_starts


def test_restart_sheds_surplus_left_by_an_aborted_deployment():
    kill, _ = planning.restart_capacity(
        instances=3, minimum_health_capacity=1.0, maximum_over_capacity=1.0, healthy=5, current=5
    )
    assert kill == 2
