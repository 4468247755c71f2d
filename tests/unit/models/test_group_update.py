"""Group updates: decoding, the three modes, structural replacement semantics,
relative ids, enforceRole rules, scaleBy and rollback (SPEC.md 1.5, 3.1-3.3)."""

from __future__ import annotations

import pytest
from msgspec import structs

from marathon import planning
from marathon.errors import GroupNotFound, IllegalArgument, InvalidJson, ValidationFailed
from marathon.models.app_rules import AppContext, decode_app, normalize_app
from marathon.models.group import Group, empty_root, put_app
from marathon.models.group_update import (
    ENFORCE_ROLE_CHANGE,
    NOT_ALONE,
    GroupUpdate,
    apply_group_update,
    apply_update,
    decode_group_partial_update,
    decode_group_update,
    remove_group,
    rollback_group,
    scale_group,
    update_mode,
)

V0 = "2024-01-01T00:00:00.000Z"
V1 = "2024-01-01T00:00:01.000Z"
V2 = "2024-01-01T00:00:02.000Z"


def app_body(app_id: str, **kw) -> dict:
    return {"id": app_id, "cmd": "sleep 1000", "cpus": 0.01, "mem": 8, **kw}


def new_group_factory(top: bool = False):
    def make(gid: str) -> Group:
        return Group(id=gid, version="made", enforce_role=top and len(gid.strip("/").split("/")) == 1)

    return make


def apply(root: Group, gid: str, body: dict, *, version: str = V1, top: bool = False, **ctx) -> Group:
    def context_for(app_id: str, base: str) -> AppContext:
        existing = root.app(app_id)
        return AppContext(existing_role=existing.role if existing is not None else None, **ctx)

    return apply_update(
        root, gid, decode_group_update(body), version=version,
        app_context_for=context_for, new_group=new_group_factory(top),
    )


def stored_app(app_id: str, version: str = V0, **kw):
    return structs.replace(normalize_app(decode_app(app_body(app_id, **kw))), version=version)


def root_with(*apps, version: str = V0) -> Group:
    root = empty_root(version)
    for a in apps:
        root = put_app(root, a, version=version)
    return root


def details(exc: pytest.ExceptionInfo) -> dict[str, list[str]]:
    return {d["path"]: d["errors"] for d in exc.value.body()["details"]}


# -- decoding ---------------------------------------------------------------------------


def test_decode_reads_every_field_and_treats_null_as_absent():
    u = decode_group_update(
        {"id": "g", "apps": [app_body("a")], "groups": [{"id": "c"}], "dependencies": ["../x"],
         "enforceRole": False, "scaleBy": None, "version": None, "unknown": 1}
    )
    assert u.id == "g" and len(u.apps) == 1 and u.groups == [GroupUpdate(id="c")]
    assert u.dependencies == ["../x"] and u.enforce_role is False
    assert u.scale_by is GroupUpdate().scale_by and u.version is GroupUpdate().version


def test_decode_collects_every_shape_error_with_nested_paths():
    with pytest.raises(InvalidJson) as exc:
        decode_group_update(
            {"id": 5, "apps": [app_body("a", cmd=5)], "groups": [{"apps": 3}, 7],
             "dependencies": ["ok", 1, "Bad_Dep"], "scaleBy": -1, "version": "yesterday", "enforceRole": "yes"}
        )
    assert exc.value.body()["message"] == "Invalid JSON"
    assert details(exc) == {
        "/id": ["error.expected.jsstring"],
        "/apps(0)/cmd": ["error.expected.jsstring"],
        "/groups(0)/id": ["error.path.missing"],
        "/groups(0)/apps": ["error.expected.jsarray"],
        "/groups(1)": ["error.expected.jsobject"],
        "/dependencies(1)": ["error.expected.jsstring"],
        "/dependencies(2)": ["error.pattern"],
        "/scaleBy": ["error.min"],
        "/version": ["error.expected.date.isoformat"],
        "/enforceRole": ["error.expected.jsboolean"],
    }


def test_decode_refuses_a_body_that_is_not_an_object_and_bad_group_ids():
    with pytest.raises(InvalidJson) as exc:
        decode_group_update([1])
    assert details(exc) == {"/": ["error.expected.jsobject"]}
    with pytest.raises(InvalidJson) as exc:
        decode_group_update({"id": "Bad_Id", "groups": [{"id": ""}]})
    assert details(exc) == {"/id": ["error.pattern"], "/groups(0)/id": ["error.minLength"]}


def test_decode_missing_app_id_is_reported_under_the_app():
    with pytest.raises(InvalidJson) as exc:
        decode_group_update({"groups": [{"id": "g", "apps": [{"cmd": "sleep 1"}]}]})
    assert details(exc) == {"/groups(0)/apps(0)/id": ["error.path.missing"]}


def test_decode_version_is_canonical_and_scale_by_is_a_float():
    u = decode_group_update({"version": "2024-01-01T01:00:00+01:00", "scaleBy": 2})
    assert u.version == V0 and u.scale_by == 2.0 and isinstance(u.scale_by, float)
    with pytest.raises(InvalidJson) as exc:
        decode_group_update({"scaleBy": True})
    assert details(exc) == {"/scaleBy": ["error.expected.jsnumber"]}


def test_decode_partial_update():
    assert decode_group_partial_update({"enforceRole": True}).enforce_role is True
    assert decode_group_partial_update({}) == decode_group_partial_update({"enforceRole": None})
    with pytest.raises(InvalidJson) as exc:
        decode_group_partial_update({"enforceRole": 1})
    assert details(exc) == {"/enforceRole": ["error.expected.jsboolean"]}


# -- modes -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body,mode",
    [
        ({}, "structural"),
        ({"id": "/g", "apps": []}, "structural"),
        ({"scaleBy": 2}, "scale"),
        ({"id": "/g", "scaleBy": 2}, "scale"),
        ({"version": V0}, "rollback"),
        ({"version": V0, "scaleBy": 2}, "rollback"),  # both: only the rollback applies
    ],
)
def test_update_mode(body, mode):
    assert update_mode(decode_group_update(body)) == mode


@pytest.mark.parametrize(
    "body,paths",
    [
        ({"scaleBy": 2, "apps": []}, ["/scaleBy"]),
        ({"version": V0, "groups": []}, ["/version"]),
        ({"scaleBy": 1, "dependencies": []}, ["/scaleBy"]),
        ({"scaleBy": 1, "enforceRole": True}, ["/scaleBy"]),
        ({"version": V0, "scaleBy": 2, "apps": []}, ["/version", "/scaleBy"]),
    ],
)
def test_version_and_scale_by_are_not_combined_with_other_properties(body, paths):
    with pytest.raises(ValidationFailed) as exc:
        update_mode(decode_group_update(body))
    assert exc.value.body() == {
        "message": "Object is not valid",
        "details": [{"path": p, "errors": [NOT_ALONE]} for p in paths],
    }


def test_nested_groups_may_not_scale_or_roll_back():
    with pytest.raises(ValidationFailed) as exc:
        apply(empty_root(V0), "/g", {"groups": [{"id": "c", "scaleBy": 2}]})
    assert details(exc) == {"/groups(0)/scaleBy": [NOT_ALONE]}


# -- structural updates ----------------------------------------------------------------------


def test_new_group_tree_with_relative_ids_and_dependencies():
    root = apply(
        empty_root(V0),
        "/product",
        {
            "groups": [
                {"id": "database", "apps": [app_body("pg")]},
                {
                    "id": "service",
                    "dependencies": ["../database"],
                    "apps": [app_body("api", dependencies=["../database/pg", "sidecar"]), app_body("sidecar")],
                },
            ]
        },
    )
    assert set(root.app_map()) == {"/product/database/pg", "/product/service/api", "/product/service/sidecar"}
    service = root.group("/product/service")
    assert service.dependencies == ["/product/database"]
    assert root.app("/product/service/api").dependencies == ["/product/database/pg", "/product/service/sidecar"]
    assert root.version == V1 and root.group("/product").version == V1 and service.version == V1
    deps = planning.app_dependencies(root)
    assert deps["/product/service/api"] == {"/product/database/pg", "/product/service/sidecar"}
    assert deps["/product/service/sidecar"] == {"/product/database/pg"}


def test_absolute_ids_inside_a_group_are_allowed_when_they_are_children():
    root = apply(empty_root(V0), "/g", {"apps": [app_body("/g/a")], "groups": [{"id": "/g/c"}]})
    assert root.app("/g/a") is not None and root.group("/g/c") is not None


def test_dot_dot_in_app_id_that_leaves_the_group_is_not_a_child():
    with pytest.raises(ValidationFailed) as exc:
        apply(empty_root(V0), "/g/h", {"apps": [app_body("../x"), app_body("sub/y"), app_body("/other/z")]})
    assert details(exc) == {
        "/apps(0)/id": ["Identifier is not child of '/g/h'"],
        "/apps(1)/id": ["Identifier is not child of '/g/h'"],
        "/apps(2)/id": ["Identifier is not child of '/g/h'"],
    }


def test_child_group_ids_must_be_direct_children():
    with pytest.raises(ValidationFailed) as exc:
        apply(empty_root(V0), "/g", {"groups": [{"id": "a/b"}, {"id": ".."}]})
    d = details(exc)
    assert d["/groups(0)/id"] == ["Identifier is not child of '/g'"]
    assert "must not end with any of the following reserved keywords" in d["/groups(1)/id"][0]


def test_listed_apps_replace_the_app_set_and_absent_keys_leave_things_alone():
    root = root_with(stored_app("/g/a"), stored_app("/g/b"), stored_app("/g/sub/c"))
    root = structs.replace(root, groups={"/g": structs.replace(root.group("/g"), dependencies=["/x"])})
    new = apply(root, "/g", {"apps": [app_body("b", instances=3), app_body("d")]})
    assert set(new.app_map()) == {"/g/b", "/g/d", "/g/sub/c"}  # /g/a removed, /g/sub untouched
    assert new.app("/g/b").instances == 3
    assert new.group("/g").dependencies == ["/x"]
    assert new.group("/g/sub") == root.group("/g/sub")


def test_listed_groups_replace_the_child_set_recursively():
    root = root_with(stored_app("/g/keep/a"), stored_app("/g/gone/b"), stored_app("/g/keep/deep/c"))
    new = apply(root, "/g", {"groups": [{"id": "keep", "groups": []}, {"id": "fresh"}]})
    assert set(new.group("/g").groups) == {"/g/keep", "/g/fresh"}
    assert set(new.app_map()) == {"/g/keep/a"}  # /g/gone removed; /g/keep/deep removed by its empty list
    assert new.group("/g/fresh").apps == {} and new.group("/g/fresh").groups == {}


def test_empty_update_keeps_everything_and_creates_missing_groups_with_ancestors():
    root = root_with(stored_app("/g/a"))
    same = apply(root, "/g", {})
    assert same.app_map() == root.app_map()
    made = apply(empty_root(V0), "/a/b/c", {}, top=True)
    assert made.group("/a/b/c") is not None
    assert made.group("/a").enforce_role is True  # new top-level group: --new_group_enforce_role=top
    assert made.group("/a/b").enforce_role is False


def test_dependencies_are_replaced_only_when_given_and_deduplicated():
    root = apply(empty_root(V0), "/g", {"dependencies": ["/x", "../x", "y"]})
    assert root.group("/g").dependencies == ["/x", "/g/y"]
    root = apply(root, "/g", {"apps": []})
    assert root.group("/g").dependencies == ["/x", "/g/y"]
    root = apply(root, "/g", {"dependencies": []})
    assert root.group("/g").dependencies == []


def test_app_violations_are_reported_under_their_path():
    with pytest.raises(ValidationFailed) as exc:
        apply(empty_root(V0), "/g", {"groups": [{"id": "c", "apps": [{"id": "x"}]}], "apps": [app_body("a/tasks")]})
    d = details(exc)
    assert "reserved keywords" in d["/apps(0)/id"][0]
    assert d["/groups(0)/apps(0)"] == ["AppDefinition must either contain one of 'cmd' or 'args', and/or a 'container'."]


def test_identical_re_put_keeps_app_versions_through_planning():
    first = apply(empty_root(V0), "/g", {"apps": [app_body("a"), app_body("b")]})
    first = planning.stamp_versions(empty_root(V0), planning.assign_service_ports(empty_root(V0), first), V1)
    again = apply(first, "/g", {"apps": [app_body("a"), app_body("b", instances=2)]}, version=V2)
    again = planning.stamp_versions(first, planning.assign_service_ports(first, again), V2)
    assert again.app("/g/a") == first.app("/g/a")  # same definition, same version
    assert again.app("/g/b").version == V2
    plan = planning.compute_plan(first, again, plan_id="p", version=V2, original_version=V1, target_version=V2)
    assert [[(a.action, a.app) for a in s.actions] for s in plan.steps] == [[("ScaleApplication", "/g/b")]]


def test_duplicate_entries_collapse_when_identical_and_are_refused_otherwise():
    root = apply(empty_root(V0), "/g", {"apps": [app_body("a"), app_body("a")]})
    assert list(root.app_map()) == ["/g/a"]
    with pytest.raises(ValidationFailed) as exc:
        apply(empty_root(V0), "/g", {"apps": [app_body("a"), app_body("a", instances=2)],
                                     "groups": [{"id": "c"}, {"id": "c", "dependencies": ["/x"]}]})
    assert set(details(exc)) == {"/apps(1)/id", "/groups(1)/id"}


def test_root_update_puts_apps_at_the_root():
    root = apply(empty_root(V0), "/", {"apps": [app_body("a")], "groups": [{"id": "t", "apps": [app_body("b")]}]})
    assert set(root.app_map()) == {"/a", "/t/b"}
    assert root.id == "/" and root.version == V1 and root.enforce_role is False


def test_pods_are_untouched_and_app_role_defaults_follow_the_top_level_group():
    root = apply(empty_root(V0), "/dev", {"enforceRole": True, "groups": [{"id": "team", "apps": [app_body("a")]}]})
    assert root.group("/dev").enforce_role is True
    assert root.app("/dev/team/a").role == "dev"
    other = apply(empty_root(V0), "/ops", {"groups": [{"id": "t", "apps": [app_body("a")]}]})
    assert other.app("/ops/t/a").role == "*"


def test_apps_below_an_existing_enforcing_top_level_group_get_its_role():
    root = apply(empty_root(V0), "/dev", {"enforceRole": True})
    root = apply(root, "/dev/team", {"apps": [app_body("a")]})
    assert root.app("/dev/team/a").role == "dev"
    with pytest.raises(ValidationFailed) as exc:
        apply(root, "/dev/team", {"apps": [app_body("b", role="*")]})
    assert details(exc) == {"/apps(0)/role": ["got *, expected one of: [dev]"]}


# -- enforceRole ---------------------------------------------------------------------------------


def test_enforce_role_only_on_top_level_groups():
    with pytest.raises(ValidationFailed) as exc:
        apply(empty_root(V0), "/a", {"groups": [{"id": "b", "enforceRole": True}]})
    assert details(exc) == {
        "/groups(0)/enforceRole": ["enforceRole can only be set for top-level groups, and /a/b is not top-level"]
    }
    with pytest.raises(ValidationFailed) as exc:
        apply(empty_root(V0), "/", {"enforceRole": True})
    assert details(exc) == {"/enforceRole": ["enforceRole can only be set for top-level groups, and / is not top-level"]}
    ok = apply(empty_root(V0), "/a/b", {"enforceRole": False})
    assert ok.group("/a/b").enforce_role is False


def test_omitted_enforce_role_keeps_the_stored_value():
    root = apply(empty_root(V0), "/dev", {"enforceRole": True})
    root = apply(root, "/dev", {"apps": [app_body("a")]})
    assert root.group("/dev").enforce_role is True
    root = apply(root, "/", {"groups": [{"id": "dev"}, {"id": "new"}]}, top=True)
    assert root.group("/dev").enforce_role is True and root.group("/new").enforce_role is True


def test_enforce_role_cannot_change_with_services():
    root = apply(empty_root(V0), "/dev", {})
    with pytest.raises(ValidationFailed) as exc:
        apply(root, "/dev", {"enforceRole": True, "apps": [app_body("a")]})
    assert details(exc) == {"/enforceRole": [ENFORCE_ROLE_CHANGE]}
    with pytest.raises(ValidationFailed) as exc:
        apply(root, "/", {"groups": [{"id": "dev", "enforceRole": True, "groups": [{"id": "x", "apps": []}]}]})
    assert details(exc) == {"/groups(0)/enforceRole": [ENFORCE_ROLE_CHANGE]}
    # Alone (or with the same value) it is fine; so is a new group with apps.
    assert apply(root, "/dev", {"enforceRole": True}).group("/dev").enforce_role is True
    assert apply(root, "/dev", {"enforceRole": False, "apps": [app_body("a")]}).app("/dev/a") is not None
    assert apply(root, "/prod", {"enforceRole": True, "apps": [app_body("a")]}).app("/prod/a").role == "prod"


# -- scaleBy -------------------------------------------------------------------------------------


@pytest.mark.parametrize("instances,factor,expected", [(3, 1.5, 5), (10, 0.7, 7), (1, 0.1, 1), (4, 0, 0), (3, 1.1, 4), (2, 2, 4)])
def test_scale_by_rounds_up(instances, factor, expected):
    root = root_with(stored_app("/g/a", instances=instances))
    assert scale_group(root, "/g", factor, V1).app("/g/a").instances == expected


def test_scale_by_is_transitive_and_stamps_the_subtree():
    root = root_with(stored_app("/g/a", instances=1), stored_app("/g/s/b", instances=2), stored_app("/other", instances=3))
    new = apply(root, "/g", {"scaleBy": 3})
    assert (new.app("/g/a").instances, new.app("/g/s/b").instances, new.app("/other").instances) == (3, 6, 3)
    assert new.group("/g/s").version == V1 and new.version == V1


def test_scale_by_of_a_missing_group_creates_it_empty():
    new = apply(root_with(stored_app("/a")), "/g", {"scaleBy": 2})
    assert new.group("/g") is not None and new.app("/a").instances == 1


# -- rollback ---------------------------------------------------------------------------------------


def test_rollback_replaces_the_subtree_by_the_snapshot():
    old = root_with(stored_app("/g/a", instances=1), stored_app("/g/s/b"), stored_app("/x"))
    current = root_with(stored_app("/g/a", instances=5, version=V1), stored_app("/g/c", version=V1), stored_app("/x", instances=2, version=V1), version=V1)
    new = apply_update(current, "/g", decode_group_update({"version": V0}), version=V2,
                       app_context_for=lambda a, b: AppContext(), new_group=new_group_factory(), snapshot_root=old)
    assert set(new.app_map()) == {"/g/a", "/g/s/b", "/x"}
    assert new.app("/g/a") == old.app("/g/a") and new.app("/x").instances == 2
    assert new.version == V2 and new.group("/g").version == V2


def test_rollback_to_a_version_without_the_group_is_refused():
    with pytest.raises(IllegalArgument) as exc:
        rollback_group(empty_root(V1), "/g", empty_root(V0), V2)
    assert exc.value.body() == {"message": f"Group /g not available in version {V0}"}
    with pytest.raises(IllegalArgument) as exc:
        rollback_group(empty_root(V1), "/g", None, V2, at=V0)
    assert exc.value.status == 422 and exc.value.message == f"Group /g not available in version {V0}"


def test_rollback_keeps_the_current_enforce_role_of_top_level_groups():
    old = apply(empty_root(V0), "/dev", {"apps": [app_body("a")]})
    current = structs.replace(old, groups={"/dev": structs.replace(old.group("/dev"), enforce_role=True)})
    assert rollback_group(current, "/dev", old, V2).group("/dev").enforce_role is True
    assert rollback_group(current, "/", old, V2).group("/dev").enforce_role is True


# -- delete -----------------------------------------------------------------------------------------


def test_remove_group():
    root = root_with(stored_app("/g/a"), stored_app("/g/s/b"), stored_app("/h/c"))
    new = remove_group(root, "/g", V1)
    assert set(new.app_map()) == {"/h/c"} and new.group("/g") is None and new.version == V1
    assert remove_group(root, "/", V1) == empty_root(V1)
    with pytest.raises(GroupNotFound) as exc:
        remove_group(root, "/nope", V1)
    assert exc.value.status == 404 and exc.value.message == "Group '/nope' does not exist"


def test_apply_group_update_refuses_non_structural_updates():
    with pytest.raises(ValueError):
        apply_group_update(empty_root(V0), "/g", GroupUpdate(scale_by=2.0), version=V1,
                           app_context_for=lambda a, b: AppContext(), new_group=new_group_factory())


def test_enforce_role_cannot_change_while_a_listed_group_set_removes_services():
    root = apply(empty_root(V0), "/dev", {"groups": [{"id": "x", "apps": [app_body("a")]}]})
    with pytest.raises(ValidationFailed) as exc:
        apply(root, "/dev", {"enforceRole": True, "groups": []})
    assert details(exc) == {"/enforceRole": [ENFORCE_ROLE_CHANGE]}
    assert apply(root, "/dev", {"enforceRole": True, "groups": [{"id": "x"}]}).group("/dev").enforce_role is True
