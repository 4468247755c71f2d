"""Partial updates (PATCH, PUT with partialUpdate=true) and rollbacks (SPEC.md 2.7)."""

from __future__ import annotations

import json

import pytest
from msgspec import UNSET

from marathon.errors import IllegalArgument, ValidationFailed
from marathon.models.app import AppDefinition, config_differs
from marathon.models.app_rules import (
    AppContext,
    app_json,
    check_rollback_only,
    decode_app,
    decode_app_update,
    is_rollback,
    merge_update,
    normalize_app,
)

V1 = "2021-07-27T12:00:00.000Z"
V0 = "2021-07-26T12:00:00.000Z"


def stored(**fields) -> AppDefinition:
    """A canonical stored app, as the apps API would keep it."""
    body = {
        "id": "/app",
        "cmd": "sleep 100",
        "env": {"A": "1", "B": "2"},
        "labels": {"team": "x"},
        "portDefinitions": [{"port": 10000, "name": "http"}],
        "version": V1,
        "versionInfo": {"lastScalingAt": V1, "lastConfigChangeAt": V0},
        **fields,
    }
    return normalize_app(decode_app(body), AppContext())


def patch(current: AppDefinition, update: dict, **ctx) -> dict:
    """PATCH semantics end to end: merge, then normalize the result as a full app."""
    merged = merge_update(current, decode_app_update(update), AppContext(**ctx))
    return json.loads(app_json(normalize_app(merged, AppContext(**ctx))))


# -- merge semantics --------------------------------------------------------------------------


def test_fields_absent_from_the_update_keep_their_value():
    out = patch(stored(), {"instances": 3})
    assert out["instances"] == 3
    assert (out["cmd"], out["env"], out["labels"]) == (
        "sleep 100",
        {"A": "1", "B": "2"},
        {"team": "x"},
    )
    assert out["portDefinitions"] == [{"port": 10000, "protocol": "tcp", "name": "http"}]


def test_a_field_in_the_update_replaces_the_whole_field():
    out = patch(stored(), {"env": {"C": "3"}, "labels": {}, "portDefinitions": [{"port": 0}]})
    assert out["env"] == {"C": "3"}  # no deep merge of maps
    assert out["labels"] == {}
    assert out["portDefinitions"] == [{"port": 0, "protocol": "tcp"}]  # nor of arrays


def test_executor_resources_and_resource_limits_are_cleared_when_absent():
    # ⚠ Marathon quirk, kept: these two are taken from the update as they are.
    current = stored(executorResources={"cpus": 0.5}, resourceLimits={"cpus": "unlimited"})
    out = patch(current, {"instances": 2})
    assert "executorResources" not in out and "resourceLimits" not in out


def test_executor_resources_and_resource_limits_in_the_update_are_taken():
    out = patch(
        stored(executorResources={"cpus": 0.5}),
        {"executorResources": {"mem": 64}, "resourceLimits": {"mem": 256}},
    )
    assert out["executorResources"] == {"cpus": 0.1, "mem": 64.0, "disk": 10.0}
    assert out["resourceLimits"] == {"mem": 256.0}


def test_the_current_version_info_is_kept():
    merged = merge_update(
        stored(),
        decode_app_update(
            {"cmd": "sleep 200", "versionInfo": {"lastScalingAt": V0, "lastConfigChangeAt": V0}}
        ),
    )
    assert merged.version == V1
    assert (merged.version_info.last_scaling_at, merged.version_info.last_config_change_at) == (
        V1,
        V0,
    )


def test_the_id_of_the_current_app_is_kept():
    merged = merge_update(stored(), decode_app_update({"id": "/other", "instances": 2}))
    assert merged.id == "/app"


def test_null_fields_in_the_update_are_absent():
    current = stored(container={"type": "DOCKER", "docker": {"image": "nginx"}})
    out = patch(current, {"cmd": None, "container": None, "instances": 2})
    assert out["cmd"] == "sleep 100"
    assert out["container"]["docker"]["image"] == "nginx"


def test_the_merge_result_is_a_full_app_for_normalization():
    merged = merge_update(stored(), decode_app_update({"instances": 4}))
    assert isinstance(merged, AppDefinition)
    assert merged.instances == 4 and merged.cpus == 1.0


def test_a_scale_only_update_is_not_a_config_change():
    current = stored()
    updated = normalize_app(
        merge_update(current, decode_app_update({"instances": 7})), AppContext()
    )
    assert updated.instances == 7
    assert not config_differs(current, updated)
    changed = normalize_app(
        merge_update(current, decode_app_update({"cmd": "sleep 1"})), AppContext()
    )
    assert config_differs(current, changed)


def test_an_empty_update_changes_nothing():
    current = stored()
    assert app_json(
        normalize_app(merge_update(current, decode_app_update({})), AppContext())
    ) == app_json(current)


# -- deprecated fields in updates --------------------------------------------------------------


def test_uris_in_an_update_become_fetch():
    out = patch(stored(), {"uris": ["http://x/a.tgz", "http://x/run.sh"]})
    assert [(f["uri"], f["extract"]) for f in out["fetch"]] == [
        ("http://x/a.tgz", True),
        ("http://x/run.sh", False),
    ]


def test_ports_in_an_update_become_port_definitions():
    out = patch(stored(), {"ports": [0, 0]})
    assert out["portDefinitions"] == [
        {"port": 0, "protocol": "tcp"},
        {"port": 0, "protocol": "tcp"},
    ]


def test_ip_address_in_an_update_moves_the_app_to_a_container_network():
    out = patch(stored(), {"ipAddress": {"networkName": "dcos"}})
    assert out["networks"] == [{"mode": "container", "name": "dcos"}]
    assert out["container"]["type"] == "MESOS"
    assert "portDefinitions" not in out
    # The old port definition turned into a port mapping (Marathon's migration).
    assert len(out["container"]["portMappings"]) == 1


def test_docker_network_and_port_mappings_in_an_update_are_migrated():
    update = {
        "container": {
            "type": "DOCKER",
            "docker": {
                "image": "nginx",
                "network": "BRIDGE",
                "portMappings": [{"containerPort": 80, "name": "web"}],
            },
        }
    }
    out = patch(stored(), update)
    assert out["networks"] == [{"mode": "container/bridge"}]
    assert out["container"]["portMappings"] == [
        {
            "containerPort": 80,
            "hostPort": 0,
            "servicePort": 0,
            "protocol": "tcp",
            "name": "web",
            "labels": {},
        }
    ]
    assert (
        "network" not in out["container"]["docker"]
        and "portMappings" not in out["container"]["docker"]
    )


@pytest.mark.parametrize(
    ("update", "message"),
    [
        ({"ports": [80, 80]}, "ports must be unique"),
        (
            {"ports": [80], "portDefinitions": [{"port": 81}]},
            "cannot specify both ports and port definitions",
        ),
        (
            {"ipAddress": {}, "networks": [{"mode": "host"}]},
            "must not specify both networks and ipAddress",
        ),
        (
            {
                "networks": [{"mode": "host"}],
                "container": {
                    "type": "DOCKER",
                    "docker": {"image": "x"},
                    "portMappings": [{"containerPort": 80}],
                },
            },
            "portMappings are not allowed with host-networking",
        ),
        (
            {"networks": [{"mode": "container/bridge"}], "portDefinitions": [{"port": 0}]},
            "portDefinitions are only allowed with host-networking",
        ),
        ({"cmd": "x"}, "must not be an empty string"),
        ({"id": "/"}, "must not be root"),
    ],
)
def test_update_level_rules_are_checked_before_merging(update, message):
    with pytest.raises(ValidationFailed) as err:
        merge_update(stored(), decode_app_update(update))
    assert err.value.body() == {
        "message": "Object is not valid",
        "details": [{"path": "/", "errors": [message]}],
    }


def test_uris_and_fetch_together_in_an_update_are_refused():
    with pytest.raises(ValidationFailed) as err:
        merge_update(
            stored(), decode_app_update({"uris": ["http://x/y"], "fetch": [{"uri": "http://x/z"}]})
        )
    assert err.value.body()["details"] == [
        {"path": "/uris", "errors": ["may not be set in conjunction with fetch"]}
    ]


# -- networking changes ------------------------------------------------------------------------


def test_moving_from_host_to_bridge_networking():
    update = {
        "networks": [{"mode": "container/bridge"}],
        "container": {
            "type": "DOCKER",
            "docker": {"image": "nginx"},
            "portMappings": [{"containerPort": 80}],
        },
    }
    out = patch(stored(), update)
    assert "portDefinitions" not in out
    assert out["container"]["portMappings"] == [
        {"containerPort": 80, "hostPort": 0, "servicePort": 0, "protocol": "tcp", "labels": {}}
    ]


def test_moving_from_bridge_back_to_host_networking():
    current = stored(
        networks=[{"mode": "container/bridge"}],
        container={"type": "DOCKER", "docker": {"image": "nginx"}},
        portDefinitions=None,
    )
    out = patch(current, {"networks": [{"mode": "host"}]})
    assert "portMappings" not in out["container"]
    assert out["portDefinitions"] == [{"port": 0, "protocol": "tcp", "name": "default"}]


def test_changing_only_networks_keeps_the_existing_container():
    # ⚠ Marathon would replace the container with an empty Mesos one.
    current = stored(container={"type": "DOCKER", "docker": {"image": "nginx"}})
    out = patch(current, {"networks": [{"mode": "container/bridge"}]})
    assert out["container"]["type"] == "DOCKER" and out["container"]["docker"]["image"] == "nginx"
    assert out["container"]["portMappings"][0]["hostPort"] == 0


# -- health checks in updates ---------------------------------------------------------------------


def test_update_health_checks_get_port_index_zero():
    merged = merge_update(
        stored(),
        decode_app_update(
            {
                "healthChecks": [
                    {"protocol": "HTTP"},
                    {"protocol": "COMMAND", "command": {"value": "true"}},
                ]
            }
        ),
    )
    assert [hc.port_index for hc in merged.health_checks] == [0, UNSET]


def test_update_health_checks_on_an_app_without_ports_fail_validation():
    current = stored(portDefinitions=[])
    merged = merge_update(current, decode_app_update({"healthChecks": [{"protocol": "TCP"}]}))
    with pytest.raises(ValidationFailed) as err:
        normalize_app(merged, AppContext())
    assert err.value.body()["details"] == [
        {
            "path": "/healthChecks(0)",
            "errors": [
                "Health check port indices must address an element of the ports array or container port mappings."
            ],
        }
    ]


def test_the_merged_app_is_fully_revalidated():
    with pytest.raises(ValidationFailed) as err:
        normalize_app(merge_update(stored(), decode_app_update({"args": ["run"]})), AppContext())
    assert err.value.body()["details"] == [
        {
            "path": "/",
            "errors": [
                "AppDefinition must either contain one of 'cmd' or 'args', and/or a 'container'."
            ],
        }
    ]


# -- full replace ------------------------------------------------------------------------------------


def test_a_full_replace_reapplies_create_defaults():
    current = stored(
        instances=5, upgradeStrategy={"minimumHealthCapacity": 0.5, "maximumOverCapacity": 0.5}
    )
    replaced = normalize_app(decode_app({"id": "/app", "cmd": "sleep 100"}), AppContext())
    assert replaced.instances == 1
    assert (
        replaced.upgrade_strategy.minimum_health_capacity,
        replaced.upgrade_strategy.maximum_over_capacity,
    ) == (1.0, 1.0)
    merged = normalize_app(
        merge_update(current, decode_app_update({"cmd": "sleep 100"})), AppContext()
    )
    assert merged.instances == 5 and merged.upgrade_strategy.maximum_over_capacity == 0.5


# -- rollback --------------------------------------------------------------------------------------


def test_a_version_in_the_update_means_rollback():
    assert is_rollback(decode_app_update({"version": V0}))
    assert is_rollback(decode_app_update({"id": "/app", "version": V0}))
    assert not is_rollback(decode_app_update({"cmd": "sleep 1"}))
    assert not is_rollback(decode_app_update({"version": None, "cmd": "sleep 1"}))


def test_a_rollback_may_only_name_the_id():
    check_rollback_only(decode_app_update({"version": V0}))
    check_rollback_only(decode_app_update({"version": V0, "id": "/app"}))
    check_rollback_only(decode_app_update({"cmd": "sleep 1"}))  # not a rollback at all
    with pytest.raises(IllegalArgument) as err:
        check_rollback_only(decode_app_update({"version": V0, "instances": 2}))
    assert err.value.status == 422
    assert err.value.body() == {
        "message": "The 'version' field may only be combined with the 'id' field."
    }


def test_nulls_do_not_count_against_a_rollback():
    check_rollback_only(decode_app_update({"version": V0, "cmd": None}))
