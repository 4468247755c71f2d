"""A change's difference between two roots, found without walking what they share.

Every pass over a change (service ports, versions, validation, the plan, what
authorization sees) works from `diff`, which never enters a subtree both
roots hold as the same object.  These tests build random trees, change them
the way the API does (the changed root shares everything else), and check
each diff-based answer against one computed from the whole trees.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from msgspec import structs

from marathon import planning
from marathon.models.app_rules import decode_app
from marathon.models.group import (
    Group,
    carry_app_map,
    diff,
    empty_root,
    map_changed_apps,
    put_app,
    remove_app,
    update_group,
)

GROUPS = ["/a", "/a/b", "/c", "/c/d/e"]
NAMES = ["x", "y", "z"]


def app(group: str, name: str, *, instances: int = 1, deps: tuple[str, ...] = (), cmd: str = "sleep 1") -> object:
    return decode_app({"id": f"{group}/{name}", "cmd": cmd, "cpus": 0.1, "mem": 8, "instances": instances,
                       "dependencies": list(deps)})


ops = st.lists(
    st.tuples(
        st.sampled_from(["put", "scale", "edit", "remove_app", "remove_group", "group_deps"]),
        st.sampled_from(GROUPS),
        st.sampled_from(NAMES),
        st.integers(0, 3),
    ),
    max_size=8,
)


def apply(root: Group, operations, version: str) -> Group:
    for op, group, name, n in operations:
        app_id = f"{group}/{name}"
        current = root.app(app_id)
        if op == "put" and root.group(app_id) is None:
            root = put_app(root, app(group, name, deps=("/zz/w",) if n == 3 else ()), version=version)
        elif op in ("scale", "edit") and current is not None:
            changed = structs.replace(current, instances=n) if op == "scale" else structs.replace(current, cmd=f"run {n}")
            root = put_app(root, changed, version=version)
        elif op == "remove_app" and current is not None:
            root = remove_app(root, app_id, version=version)
        elif op == "remove_group" and root.group(group) is not None:
            root = update_group(root, group, lambda g: None, version=version)
        elif op == "group_deps" and root.group(group) is not None:
            root = update_group(root, group, lambda g, n=n: structs.replace(g, dependencies=["/zz"] if n else []),
                                version=version)
    return root


def whole_tree_diff(original: Group, target: Group) -> tuple[set, set, set, set]:
    o_apps, t_apps = original.app_map(), target.app_map()
    o_groups = {g.id: g for g in original.transitive_groups()}
    t_groups = {g.id: g for g in target.transitive_groups()}
    return (
        {i for i, a in t_apps.items() if o_apps.get(i) is not a},
        o_apps.keys() - t_apps.keys(),
        {i for i, g in t_groups.items() if o_groups.get(i) is not g},
        o_groups.keys() - t_groups.keys(),
    )


@settings(max_examples=300, deadline=None)
@given(ops, ops)
def test_diff_finds_what_a_walk_of_both_whole_trees_finds(setup, change):
    original = apply(empty_root("v0"), setup, "v1")
    target = apply(original, change, "v2")
    d = diff(original, target)
    changed, removed, changed_groups, removed_groups = whole_tree_diff(original, target)
    assert {a.id for _, a in d.changed_apps} == changed
    assert all(old is original.app(a.id) for old, a in d.changed_apps)
    assert {a.id for a in d.removed_apps} == removed
    assert {g.id for _, g in d.changed_groups} == changed_groups
    assert {g.id for g in d.removed_groups} == removed_groups
    # Nothing shared is entered: an unchanged root has an empty diff.
    assert diff(target, target) == ([], [], [], [])


@settings(max_examples=300, deadline=None)
@given(ops, ops)
def test_answers_made_from_the_diff_equal_those_made_from_the_whole_trees(setup, change):
    original = apply(empty_root("v0"), setup, "v1")
    original.app_map()
    target = apply(original, change, "v2")
    d = diff(original, target)
    o_apps = original.app_map()

    # The app index carried over by the change alone.
    carry_app_map(original, target, d)
    assert target.app_map() == {a.id: a for a in target.transitive_apps()}

    # Dependency counts carried over by the change alone.
    planning.dependency_count(original)
    counted = planning.dependency_count(target, original, d)
    assert counted == (sum(1 for g in target.transitive_groups() if g.dependencies)
                       + sum(1 for a in target.transitive_apps() if a.dependencies))

    # Mapping only what changed = mapping every app and leaving the shared ones alone.
    def mark(old, a):
        return structs.replace(a, instances=a.instances + 10)

    mapped = map_changed_apps(original, target, mark)
    assert mapped.app_map() == {
        i: a if o_apps.get(i) is a else mark(o_apps.get(i), a) for i, a in target.app_map().items()
    }

    # The plan: every app of the target considered against its old definition.
    plan = planning.compute_plan(original, target, plan_id="p", version="v2", original_version="v1",
                                 target_version="v2", change=d)
    t_apps = target.app_map()
    acted = {a.app for s in plan.steps for a in s.actions if a.action in ("ScaleApplication", "RestartApplication")}
    assert acted == {i for i, a in t_apps.items() if planning._action_for(o_apps.get(i), a, []) is not None}
    stopped = {a.app for s in plan.steps for a in s.actions if a.action == "StopApplication"}
    assert stopped == o_apps.keys() - t_apps.keys()

    # What authorization and policies see.
    rc = planning.root_changes(original, target, d)
    assert [a.id for a in rc.created_apps] == sorted(t_apps.keys() - o_apps.keys())
    assert [a.id for a in rc.updated_apps] == sorted(i for i, a in t_apps.items() if i in o_apps and o_apps[i] != a)
    assert [a.id for a in rc.removed_apps] == sorted(o_apps.keys() - t_apps.keys())


def test_kills_of_an_app_the_change_did_not_touch_are_still_planned():
    original = planning.stamp_versions(empty_root("v0"), put_app(empty_root("v0"), app("/a", "x", instances=3), version="v1"), "v1")
    plan = planning.compute_plan(original, original, plan_id="p", version="v2", original_version="v1",
                                 target_version="v2", to_kill={"/a/x": ["i1"], "/a/gone": ["i2"]})
    (step,) = plan.steps
    (action,) = step.actions
    assert (action.action, action.app, action.scale_to, action.to_kill) == ("ScaleApplication", "/a/x", 3, ["i1"])


def test_a_restart_reaches_an_app_in_a_subtree_the_change_shares():
    root = put_app(empty_root("v0"), app("/a/b", "x"), version="v1")
    root = planning.stamp_versions(empty_root("v0"), root, "v1")
    restarted = planning.stamp_versions(root, root, "v2", restart=["/a/b/x"])
    info = restarted.app("/a/b/x").version_info
    assert (restarted.app("/a/b/x").version, info.last_config_change_at, info.last_scaling_at) == ("v2", "v2", "v1")
    assert planning.stamp_versions(root, root, "v2") is root  # nothing changed, nothing rebuilt
