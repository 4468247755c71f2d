"""Bad input is a 4xx at its JSON path, never a 500: integers beyond what
can be stored, `instances` beyond 32 bits or `--max_instances_per_app`, and
JSON nested deeper than `MAX_JSON_DEPTH`."""

from __future__ import annotations

import msgspec
import pytest

from marathon.errors import InvalidJson, MalformedJson, ValidationFailed
from marathon.models.app_decode import MAX_JSON_DEPTH, json_depth_exceeds
from marathon.models.app_rules import (
    MAX_ID_DEPTH,
    AppContext,
    decode_app,
    decode_app_update,
    decode_json,
    merge_update,
    normalize_app,
)
from marathon.models.group import Group, empty_root, put_app
from marathon.models.group_update import apply_update, decode_group_update

V0 = "2024-01-01T00:00:00.000Z"
V1 = "2024-01-01T00:00:01.000Z"


def details(exc: pytest.ExceptionInfo) -> list[dict]:
    return exc.value.body()["details"]


def app_body(app_id: str = "/a", **kw) -> dict:
    return {"id": app_id, "cmd": "sleep 1000", **kw}


# -- integers ------------------------------------------------------------------------


@pytest.mark.parametrize("raw", [b"2147483648", b"9223372036854775808", b"1" + b"0" * 400])
def test_instances_beyond_32_bits_is_error_max_at_instances(raw):
    obj = decode_json(b'{"id": "/a", "cmd": "sleep 1", "instances": ' + raw + b"}")
    with pytest.raises(InvalidJson) as exc:
        decode_app(obj)
    assert details(exc) == [{"path": "/instances", "errors": ["error.max"]}]
    with pytest.raises(InvalidJson) as exc:
        decode_app_update({"instances": int(raw)})
    assert details(exc) == [{"path": "/instances", "errors": ["error.max"]}]


def test_the_largest_32_bit_instances_is_still_a_valid_body():
    assert decode_app(app_body(instances=2**31 - 1)).instances == 2**31 - 1


@pytest.mark.parametrize("field,path", [
    ({"backoffSeconds": 10**400}, "/backoffSeconds"),
    ({"maxLaunchDelaySeconds": 2**64}, "/maxLaunchDelaySeconds"),
    ({"healthChecks": [{"protocol": "HTTP", "gracePeriodSeconds": 10**30}]}, "/healthChecks(0)/gracePeriodSeconds"),
])
def test_any_integer_that_could_not_be_stored_is_error_max_at_its_path(field, path):
    with pytest.raises(InvalidJson) as exc:
        decode_app(app_body(**field))
    assert details(exc) == [{"path": path, "errors": ["error.max"]}]


def test_a_decoded_definition_can_always_be_encoded_for_the_store():
    app = normalize_app(decode_app(app_body(instances=2**31 - 1, backoffSeconds=2**63 - 1)))
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(app), type=type(app)) == app


# -- --max_instances_per_app ---------------------------------------------------------

LIMITED = AppContext(max_instances=10)
OVER = [{"path": "/instances", "errors": ["got 11, expected 10 or less (the server's --max_instances_per_app)"]}]


def test_more_instances_than_the_server_allows_is_422_at_instances():
    assert normalize_app(decode_app(app_body(instances=10)), LIMITED).instances == 10
    with pytest.raises(ValidationFailed) as exc:
        normalize_app(decode_app(app_body(instances=11)), LIMITED)
    assert exc.value.status == 422 and details(exc) == OVER


def test_a_partial_update_to_more_instances_is_refused_too():
    current = normalize_app(decode_app(app_body(instances=1)), LIMITED)
    merged = merge_update(current, decode_app_update({"instances": 11}), LIMITED)
    with pytest.raises(ValidationFailed) as exc:
        normalize_app(merged, LIMITED)
    assert details(exc) == OVER


def _group_change(body: dict, root=None):
    return apply_update(
        root or empty_root(V0), "/g", decode_group_update(body), version=V1,
        app_context_for=lambda app_id, base: LIMITED, new_group=lambda gid: Group(id=gid, version=V1),
        max_instances=10,
    )


def test_an_app_of_a_group_body_over_the_limit_is_reported_at_its_path():
    body = {"groups": [{"id": "sub", "apps": [app_body("ok", instances=3), app_body("big", instances=11)]}]}
    with pytest.raises(ValidationFailed) as exc:
        _group_change(body)
    assert details(exc) == [{"path": "/groups(0)/apps(1)/instances", "errors": OVER[0]["errors"]}]


def test_scale_by_that_would_pass_the_limit_changes_nothing_and_names_each_app():
    root = empty_root(V0)
    for app_id, n in (("/g/a", 2), ("/g/b", 6), ("/g/c", 1)):
        root = put_app(root, normalize_app(decode_app(app_body(app_id, instances=n))), version=V0)
    assert _group_change({"scaleBy": 1.5}, root).app("/g/b").instances == 9
    with pytest.raises(ValidationFailed) as exc:
        _group_change({"scaleBy": 2}, root)
    assert details(exc) == [
        {"path": "/apps//g/b/instances", "errors": ["got 12, expected 10 or less (the server's --max_instances_per_app)"]}
    ]
    with pytest.raises(ValidationFailed) as exc:
        _group_change({"scaleBy": 1e300}, root)
    assert {d["path"] for d in details(exc)} == {"/apps//g/a/instances", "/apps//g/b/instances", "/apps//g/c/instances"}
    assert "got at least 2147483647" in details(exc)[0]["errors"][0]


def test_scale_by_an_integer_no_float_holds_is_error_max():
    with pytest.raises(InvalidJson) as exc:
        decode_group_update({"scaleBy": 10**400})
    assert details(exc) == [{"path": "/scaleBy", "errors": ["error.max"]}]


# -- JSON nesting --------------------------------------------------------------------


@pytest.mark.parametrize("body", [
    b"[" * 10_000 + b"]" * 10_000,
    b'{"a":' * 10_000 + b"1" + b"}" * 10_000,
    b'{"ids": ' + b"[" * 10_000 + b"]" * 10_000 + b"}",
    b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1),
    # Strings that look like closing brackets do not hide the depth.
    b'["]",' * 5_000 + b"1" + b"]" * 5_000,
    b'["\\"]",' * 5_000 + b"1" + b"]" * 5_000,
])
def test_json_nested_too_deep_is_400_invalid_json(body):
    with pytest.raises(MalformedJson) as exc:
        decode_json(body)
    assert exc.value.status == 400
    assert exc.value.body() == {
        "message": "Invalid JSON", "details": f"Document nesting depth exceeds the maximum allowed ({MAX_JSON_DEPTH})",
    }


def test_json_at_the_depth_limit_and_brackets_in_strings_are_fine():
    assert decode_json(b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH)
    text = '{"cmd": "' + "[[[[{{{{" * 100 + '\\" ]]"}'
    assert decode_json(text.encode()) == {"cmd": "[[[[{{{{" * 100 + '" ]]'}
    many = b"[" + b",".join([b"[[1],[2]]"] * 10_000) + b"]"
    assert not json_depth_exceeds(many) and len(decode_json(many)) == 10_000


def test_depth_is_counted_on_text_that_is_not_json_without_failing():
    assert json_depth_exceeds(b'"unterminated [' + b"[" * 200)
    with pytest.raises(MalformedJson):
        decode_json(b'"unterminated [' + b"[" * 200)


# -- ids nested too deep -------------------------------------------------------------

DEEP_ID = "/" + "/".join(f"l{i}" for i in range(MAX_ID_DEPTH + 1))


def test_an_app_id_deeper_than_the_tree_walks_can_go_is_422_at_id():
    ok = "/" + "/".join(f"l{i}" for i in range(MAX_ID_DEPTH))
    assert normalize_app(decode_app(app_body(ok))).id == ok
    with pytest.raises(ValidationFailed) as exc:
        normalize_app(decode_app(app_body(DEEP_ID)))
    assert details(exc) == [{"path": "/id", "errors": [f"must not be more than {MAX_ID_DEPTH} levels deep (is {MAX_ID_DEPTH + 1})"]}]


def test_groups_and_apps_of_a_group_body_are_held_to_the_same_depth():
    parent = DEEP_ID.rsplit("/", 1)[0]  # MAX_ID_DEPTH levels: its children are one too deep

    def change(group_id: str, body: dict):
        return apply_update(
            empty_root(V0), group_id, decode_group_update(body), version=V1,
            app_context_for=lambda app_id, base: AppContext(), new_group=lambda gid: Group(id=gid, version=V1),
        )

    assert change(parent, {}).group(parent) is not None
    with pytest.raises(ValidationFailed) as exc:
        change(parent, {"apps": [app_body("x")], "groups": [{"id": "g"}]})
    assert [d["path"] for d in details(exc)] == ["/apps(0)/id", "/groups(0)/id"]
    with pytest.raises(ValidationFailed) as exc:
        change(DEEP_ID, {})
    assert [d["path"] for d in details(exc)] == ["/id"]
