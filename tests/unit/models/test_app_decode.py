"""Parsing app bodies: bytes -> JSON -> AppDefinition / AppUpdate, with Marathon's
400/422 bodies and play-json error keys (SPEC.md 1.2, 2.1 step 1)."""

from __future__ import annotations

import json

import msgspec
import pytest
from msgspec import UNSET

from marathon.errors import EmptyBody, InvalidJson, MalformedJson
from marathon.models.app import AppDefinition
from marathon.models.app_rules import decode_app, decode_app_update, decode_json


def invalid(body: dict | list | str | int | None, *, update: bool = False) -> list[dict]:
    """The `details` of the 422 `Invalid JSON` a body is refused with."""
    decode = decode_app_update if update else decode_app
    with pytest.raises(InvalidJson) as err:
        decode(body)
    payload = err.value.body()
    assert err.value.status == 422
    assert payload["message"] == "Invalid JSON"
    return payload["details"]


def one(path: str, key: str) -> list[dict]:
    return [{"path": path, "errors": [key]}]


# -- raw bytes -------------------------------------------------------------------


@pytest.mark.parametrize("body", [b"", b"   ", b"\n\t  \r\n"])
def test_an_empty_body_asks_for_json(body):
    with pytest.raises(EmptyBody) as err:
        decode_json(body)
    assert err.value.status == 400
    assert err.value.body()["message"] == "Please specify data in JSON format"
    assert isinstance(err.value.body()["details"], str)


@pytest.mark.parametrize(
    "body", [b"{", b"{'id': 'a'}", b'{"id": "a",}', b"not json", b'{"id": "a"} x']
)
def test_malformed_json_is_400_with_a_string_detail(body):
    with pytest.raises(MalformedJson) as err:
        decode_json(body)
    payload = err.value.body()
    assert err.value.status == 400
    assert payload["message"] == "Invalid JSON"
    assert isinstance(payload["details"], str) and payload["details"]


def test_decode_json_reads_any_json_value():
    assert decode_json(b' {"id": "a", "n": [1, 2.5, null, true]} ') == {
        "id": "a",
        "n": [1, 2.5, None, True],
    }
    assert decode_json(bytearray(b"[]")) == []
    assert decode_json('"x"') == "x"


# -- shape errors ---------------------------------------------------------------------


@pytest.mark.parametrize("body", [[], "app", 1, None, True])
def test_a_body_that_is_not_an_object_is_refused_at_the_root(body):
    assert invalid(body) == one("/", "error.expected.jsobject")


def test_a_missing_id_is_error_path_missing():
    assert invalid({"cmd": "sleep 1"}) == one("/id", "error.path.missing")


@pytest.mark.parametrize(
    ("body", "path", "key"),
    [
        ({"id": 1}, "/id", "error.expected.jsstring"),
        ({"id": "a", "cmd": 5}, "/cmd", "error.expected.jsstring"),
        ({"id": "a", "instances": "2"}, "/instances", "error.expected.jsnumber"),
        ({"id": "a", "instances": 1.5}, "/instances", "error.expected.jsnumber"),
        ({"id": "a", "instances": True}, "/instances", "error.expected.jsnumber"),
        ({"id": "a", "cpus": "x"}, "/cpus", "error.expected.jsnumber"),
        ({"id": "a", "requirePorts": "yes"}, "/requirePorts", "error.expected.jsboolean"),
        ({"id": "a", "container": []}, "/container", "error.expected.jsobject"),
        ({"id": "a", "healthChecks": {}}, "/healthChecks", "error.expected.jsarray"),
        ({"id": "a", "args": ["x", 1]}, "/args(1)", "error.expected.jsstring"),
        ({"id": "a", "constraints": [["a", 1]]}, "/constraints(0)(1)", "error.expected.jsstring"),
        (
            {"id": "a", "resourceLimits": {"cpus": True}},
            "/resourceLimits/cpus",
            "error.expected.jsnumber",
        ),
        ({"id": "a", "unreachableStrategy": 5}, "/unreachableStrategy", "error.expected.jsstring"),
    ],
)
def test_wrong_types_map_to_play_json_expected_keys(body, path, key):
    assert invalid(body) == one(path, key)


def test_nested_paths_use_slashes_and_parenthesized_indexes():
    body = {
        "id": "a",
        "container": {
            "type": "DOCKER",
            "docker": {"image": "x"},
            "portMappings": [{"containerPort": 80}, {"hostPort": "80"}],
        },
    }
    assert invalid(body) == one("/container/portMappings(1)/hostPort", "error.expected.jsnumber")


def test_map_values_are_addressed_by_their_key():
    assert invalid({"id": "a", "labels": {"A": "x", "B": 5}}) == one(
        "/labels/B", "error.expected.jsstring"
    )
    assert invalid({"id": "a", "env": {"OK": "1", "BAD": [1]}}) == one(
        "/env/BAD", "error.expected.jsstring"
    )
    assert invalid({"id": "a", "env": {"S": {"secret": 1}}}) == one(
        "/env/S/secret", "error.expected.jsstring"
    )


def test_a_missing_field_of_a_map_value_names_the_key():
    body = {"id": "a", "secrets": {"good": {"source": "x"}, "bad": {}}}
    assert invalid(body) == one("/secrets/bad/source", "error.path.missing")


def test_a_missing_nested_required_field_is_error_path_missing():
    body = {"id": "a", "container": {"docker": {}}}
    assert invalid(body) == one("/container/docker/image", "error.path.missing")


def test_upgrade_strategy_needs_both_fields():
    body = {"id": "a", "upgradeStrategy": {"minimumHealthCapacity": 0.5}}
    assert invalid(body) == one("/upgradeStrategy/maximumOverCapacity", "error.path.missing")


@pytest.mark.parametrize(
    ("body", "path", "key"),
    [
        ({"id": "a", "instances": -1}, "/instances", "error.min"),
        ({"id": "a", "cpus": 0.0001}, "/cpus", "error.min"),
        ({"id": "a", "backoffFactor": 0.5}, "/backoffFactor", "error.min"),
        (
            {
                "id": "a",
                "upgradeStrategy": {"minimumHealthCapacity": 1.5, "maximumOverCapacity": 0},
            },
            "/upgradeStrategy/minimumHealthCapacity",
            "error.max",
        ),
        (
            {"id": "a", "portDefinitions": [{"port": 70000}]},
            "/portDefinitions(0)/port",
            "error.max",
        ),
        (
            {
                "id": "a",
                "container": {"docker": {"image": "x"}, "portMappings": [{"hostPort": -1}]},
            },
            "/container/portMappings(0)/hostPort",
            "error.min",
        ),
        (
            {"id": "a", "container": {"docker": {"image": ""}}},
            "/container/docker/image",
            "error.minLength",
        ),
        ({"id": "a", "fetch": [{"uri": "x" * 1025}]}, "/fetch(0)/uri", "error.maxLength"),
        ({"id": "a", "fetch": [{"uri": ""}]}, "/fetch(0)/uri", "error.minLength"),
        (
            {"id": "a", "readinessChecks": [{"httpStatusCodesForReady": [200, 99]}]},
            "/readinessChecks(0)/httpStatusCodesForReady(1)",
            "error.min",
        ),
        ({"id": "a", "killSelection": "RANDOM"}, "/killSelection", "error.unknown.enum.literal"),
        (
            {"id": "a", "portDefinitions": [{"protocol": "sctp"}]},
            "/portDefinitions(0)/protocol",
            "error.unknown.enum.literal",
        ),
        (
            {"id": "a", "networks": [{"mode": "bridge"}]},
            "/networks(0)/mode",
            "error.unknown.enum.literal",
        ),
        (
            {"id": "a", "unreachableStrategy": "never"},
            "/unreachableStrategy",
            "error.unknown.enum.literal",
        ),
    ],
)
def test_raml_ranges_lengths_and_enums_are_invalid_json(body, path, key):
    assert invalid(body) == one(path, key)


def test_only_the_first_shape_error_is_reported():
    # ⚠ documented limitation: play-json would list both.
    assert invalid({"id": 1, "instances": -1}) == one("/id", "error.expected.jsstring")


# -- play-json reading conventions ------------------------------------------------------


def test_null_in_an_optional_field_means_absent():
    app = decode_app(
        {
            "id": "a",
            "cmd": None,
            "user": None,
            "container": None,
            "instances": None,
            "labels": None,
            "args": ["x"],
        }
    )
    assert app.cmd is UNSET and app.user is UNSET and app.container is UNSET
    assert app.instances == 1 and app.labels == {}


def test_null_in_a_required_field_names_the_expected_type():
    assert invalid({"id": None}) == one("/id", "error.expected.jsstring")
    assert invalid({"id": "a", "labels": {"A": None}}) == one(
        "/labels/A", "error.expected.jsstring"
    )


def test_an_integral_float_is_an_integer():
    app = decode_app(
        {
            "id": "a",
            "instances": 3.0,
            "container": {"docker": {"image": "x"}, "portMappings": [{"containerPort": 80.0}]},
        }
    )
    assert app.instances == 3 and type(app.instances) is int
    assert app.container.port_mappings[0].container_port == 80


def test_integers_are_fine_where_numbers_are_expected():
    app = decode_app({"id": "a", "cpus": 2, "mem": 64})
    assert app.cpus == 2.0 and app.mem == 64.0


def test_unknown_properties_are_ignored():
    app = decode_app({"id": "a", "storeUrls": ["x"], "tasksRunning": 3, "whatever": {"x": 1}})
    assert app.id == "a"


def test_the_caller_object_is_not_modified():
    body = {"id": "a", "cmd": None, "instances": 2.0}
    decode_app(body)
    assert body == {"id": "a", "cmd": None, "instances": 2.0}


def test_a_create_body_gets_the_raml_defaults():
    app = decode_app({"id": "a", "cmd": "sleep 1"})
    assert (app.instances, app.cpus, app.mem, app.disk, app.gpus) == (1, 1.0, 128.0, 0.0, 0)
    assert (app.backoff_seconds, app.backoff_factor, app.max_launch_delay_seconds) == (1, 1.15, 300)
    assert (
        app.kill_selection == "YOUNGEST_FIRST" and app.executor == "" and app.require_ports is False
    )
    # Defaults that depend on other fields are left for normalization.
    assert app.port_definitions is UNSET and app.networks is UNSET and app.role is UNSET
    assert app.upgrade_strategy is UNSET and app.unreachable_strategy is UNSET


def test_nested_objects_get_their_defaults():
    app = decode_app(
        {"id": "a", "healthChecks": [{}], "readinessChecks": [{}], "fetch": [{"uri": "http://x"}]}
    )
    hc = app.health_checks[0]
    assert (hc.protocol, hc.grace_period_seconds, hc.interval_seconds, hc.timeout_seconds) == (
        "HTTP",
        300,
        60,
        20,
    )
    assert (hc.max_consecutive_failures, hc.delay_seconds, hc.ip_protocol) == (3, 15, "IPv4")
    rc = app.readiness_checks[0]
    assert (rc.name, rc.protocol, rc.path, rc.port_name) == (
        "readinessCheck",
        "HTTP",
        "/",
        "http-api",
    )
    assert (rc.interval_seconds, rc.timeout_seconds, rc.http_status_codes_for_ready) == (
        30,
        10,
        [200],
    )
    f = app.fetch[0]
    assert (f.extract, f.executable, f.cache) == (True, False, False)


# -- RAML patterns ------------------------------------------------------------------------


@pytest.mark.parametrize("app_id", ["/My-App", "/a_b", "a b", "/-a", "/a/./b", "/a/b-"])
def test_ids_must_match_the_raml_path_id_pattern(app_id):
    assert invalid({"id": app_id}) == one("/id", "error.pattern")


@pytest.mark.parametrize("app_id", ["/a", "a", "/a/b.c/d-e", "../a", "/a//b/", "/"])
def test_ids_the_raml_lets_through(app_id):
    assert decode_app({"id": app_id}).id == app_id


def test_an_empty_id_is_too_short():
    assert invalid({"id": ""}) == one("/id", "error.minLength")


def test_dependencies_must_be_path_ids():
    assert invalid({"id": "a", "dependencies": ["/ok", "/Not_OK"]}) == one(
        "/dependencies(1)", "error.pattern"
    )


def test_port_names_must_be_legacy_names():
    body = {"id": "a", "portDefinitions": [{"name": "http"}, {"name": "Bad_Name"}]}
    assert invalid(body) == one("/portDefinitions(1)/name", "error.pattern")
    body = {"id": "a", "container": {"docker": {"image": "x"}, "portMappings": [{"name": "-web"}]}}
    assert invalid(body) == one("/container/portMappings(0)/name", "error.pattern")


def test_network_names_allow_underscores_but_at_most_63_characters():
    assert (
        decode_app({"id": "a", "networks": [{"name": "name_with_underscore"}]}).networks[0].name
        == "name_with_underscore"
    )
    assert invalid({"id": "a", "networks": [{"name": "x" * 64}]}) == one(
        "/networks(0)/name", "error.maxLength"
    )
    assert invalid({"id": "a", "networks": [{"name": "Up"}]}) == one(
        "/networks(0)/name", "error.pattern"
    )


def test_every_raml_pattern_violation_is_reported():
    body = {"id": "/A", "dependencies": ["/B"], "portDefinitions": [{"name": "C_"}]}
    assert invalid(body) == [
        {"path": "/id", "errors": ["error.pattern"]},
        {"path": "/dependencies(0)", "errors": ["error.pattern"]},
        {"path": "/portDefinitions(0)/name", "errors": ["error.pattern"]},
    ]


def test_host_volumes_need_a_host_path_and_a_mode():
    body = {
        "id": "a",
        "container": {"docker": {"image": "x"}, "volumes": [{"containerPath": "/data"}]},
    }
    assert invalid(body) == [
        {"path": "/container/volumes(0)/hostPath", "errors": ["error.path.missing"]},
        {"path": "/container/volumes(0)/mode", "errors": ["error.path.missing"]},
    ]


def test_docker_parameter_keys_may_not_be_empty():
    body = {
        "id": "a",
        "container": {"docker": {"image": "x", "parameters": [{"key": "", "value": "v"}]}},
    }
    assert invalid(body) == one("/container/docker/parameters(0)/key", "error.minLength")


def test_discovery_ports_of_the_deprecated_ip_address_are_typed():
    base = {
        "id": "a",
        "ipAddress": {"discovery": {"ports": [{"number": 80, "name": "http", "protocol": "tcp"}]}},
    }
    assert decode_app(base).ip_address.discovery.ports[0]["name"] == "http"
    missing = {"id": "a", "ipAddress": {"discovery": {"ports": [{"number": 80}]}}}
    assert invalid(missing) == one("/ipAddress/discovery/ports(0)/name", "error.path.missing")
    bad = {
        "id": "a",
        "ipAddress": {"discovery": {"ports": [{"number": 80, "name": "x", "protocol": "icmp"}]}},
    }
    assert invalid(bad) == one(
        "/ipAddress/discovery/ports(0)/protocol", "error.unknown.enum.literal"
    )


# -- AppUpdate ----------------------------------------------------------------------------


def test_an_update_has_no_defaults_and_no_required_fields():
    update = decode_app_update({"instances": 3})
    assert update.instances == 3
    assert update.id is UNSET and update.cmd is UNSET and update.cpus is UNSET
    assert msgspec.to_builtins(update) == {"instances": 3}
    assert msgspec.to_builtins(decode_app_update({})) == {}


def test_an_update_is_checked_like_an_app():
    assert invalid({"instances": -1}, update=True) == one("/instances", "error.min")
    assert invalid({"cmd": 1}, update=True) == one("/cmd", "error.expected.jsstring")
    assert invalid({"id": "/Bad"}, update=True) == one("/id", "error.pattern")
    assert invalid([], update=True) == one("/", "error.expected.jsobject")


def test_nulls_in_an_update_are_absent_fields():
    update = decode_app_update({"cmd": None, "container": None, "instances": 2})
    assert msgspec.to_builtins(update) == {"instances": 2}


def test_the_invalid_json_body_is_marathons():
    with pytest.raises(InvalidJson) as err:
        decode_app(decode_json(b'{"id": "a", "instances": "two"}'))
    assert json.loads(msgspec.json.encode(err.value.body())) == {
        "message": "Invalid JSON",
        "details": [{"path": "/instances", "errors": ["error.expected.jsnumber"]}],
    }


def test_decode_returns_the_model_types():
    assert isinstance(decode_app({"id": "a"}), AppDefinition)
