"""Normalization: deprecated-field migration and the defaults that depend on
other fields, ending in Marathon's canonical app JSON (SPEC.md 2.1-2.5, 2.8,
6.1, 6.5, appendix A)."""

from __future__ import annotations

import json

import msgspec
import pytest
from msgspec import UNSET

from marathon.errors import IllegalArgument
from marathon.models.app_rules import AppContext, app_json, decode_app, decode_json, normalize_app

CMD = "python3 -m http.server $PORT0"


def canonical(body: dict, **ctx) -> dict:
    """The canonical JSON Marathon would render for a create body."""
    return json.loads(app_json(normalize_app(decode_app(body), AppContext(**ctx))))


def docker(image: str = "nginx") -> dict:
    return {"type": "DOCKER", "docker": {"image": image}}


# -- the whole canonical form -------------------------------------------------------


def test_a_minimal_app_renders_exactly_like_marathon_appendix_a():
    body = decode_json(
        b'{"id": "web", "cmd": "python3 -m http.server $PORT0", "cpus": 0.1, "mem": 32, "instances": 2}'
    )
    app = normalize_app(decode_app(body), AppContext())
    # Appendix A's response body, minus status fields (AppInfo), with no health
    # check and no version stamped yet (the caller stamps it).
    expected = {
        "id": "/web",
        "cmd": CMD,
        "args": [],
        "env": {},
        "instances": 2,
        "cpus": 0.1,
        "mem": 32.0,
        "disk": 0.0,
        "gpus": 0,
        "executor": "",
        "constraints": [],
        "fetch": [],
        "dependencies": [],
        "labels": {},
        "secrets": {},
        "backoffSeconds": 1,
        "backoffFactor": 1.15,
        "maxLaunchDelaySeconds": 300,
        "portDefinitions": [{"port": 0, "protocol": "tcp", "name": "default"}],
        "requirePorts": False,
        "networks": [{"mode": "host"}],
        "healthChecks": [],
        "readinessChecks": [],
        "upgradeStrategy": {"minimumHealthCapacity": 1.0, "maximumOverCapacity": 1.0},
        "unreachableStrategy": {"inactiveAfterSeconds": 0, "expungeAfterSeconds": 0},
        "killSelection": "YOUNGEST_FIRST",
        "role": "*",
    }
    assert json.loads(app_json(app)) == expected
    # Numbers render as Marathon renders doubles.
    assert b'"mem":32.0' in app_json(app) and b'"disk":0.0' in app_json(app)


def test_appendix_a_health_check_gets_port_index_zero_and_every_default():
    body = {"id": "web", "cmd": CMD, "healthChecks": [{"protocol": "MESOS_HTTP", "path": "/"}]}
    assert canonical(body)["healthChecks"] == [
        {
            "protocol": "MESOS_HTTP",
            "path": "/",
            "portIndex": 0,
            "gracePeriodSeconds": 300,
            "intervalSeconds": 60,
            "timeoutSeconds": 20,
            "maxConsecutiveFailures": 3,
            "delaySeconds": 15,
            "ipProtocol": "IPv4",
        }
    ]


def test_the_canonical_field_order_is_stable():
    out = app_json(normalize_app(decode_app({"id": "a", "cmd": "sleep 1"})))
    assert list(json.loads(out)) == list(
        json.loads(app_json(normalize_app(decode_app({"cmd": "sleep 1", "id": "a"}))))
    )


def test_version_and_version_info_are_left_as_given():
    body = {
        "id": "a",
        "cmd": "sleep 1",
        "version": "2021-07-27T12:00:00.000Z",
        "versionInfo": {
            "lastScalingAt": "2021-07-27T12:00:00.000Z",
            "lastConfigChangeAt": "2021-07-26T12:00:00.000Z",
        },
    }
    out = canonical(body)
    assert out["version"] == body["version"] and out["versionInfo"] == body["versionInfo"]
    assert "version" not in canonical({"id": "a", "cmd": "sleep 1"})


def test_normalizing_a_canonical_app_changes_nothing():
    bodies = [
        {"id": "a", "cmd": "sleep 1", "healthChecks": [{"protocol": "HTTP"}]},
        {
            "id": "b",
            "cmd": "sleep 1",
            "container": docker(),
            "networks": [{"mode": "container/bridge"}],
        },
        {"id": "c", "cmd": "sleep 1", "networks": [{"mode": "container"}]},
        {
            "id": "/dev/d",
            "cmd": "sleep 1",
            "role": "dev",
            "container": {
                "type": "MESOS",
                "volumes": [{"containerPath": "data", "mode": "RW", "persistent": {"size": 10}}],
            },
        },
        {
            "id": "e",
            "cmd": "sleep 1",
            "uris": ["http://x/a.tgz"],
            "ports": [0, 8080],
            "constraints": [["hostname", "unique"]],
        },
    ]
    for body in bodies:
        once = normalize_app(decode_app(body), AppContext(default_network_name="dcos"))
        twice = normalize_app(
            decode_app(json.loads(app_json(once))), AppContext(default_network_name="dcos")
        )
        assert app_json(twice) == app_json(once), body["id"]


def test_null_fields_are_unset_and_deprecated_fields_never_rendered():
    app = normalize_app(
        decode_app(
            {
                "id": "a",
                "cmd": "sleep 1",
                "user": None,
                "ports": [0],
                "uris": ["http://x/y"],
                "container": {
                    "type": "DOCKER",
                    "docker": {"image": "x", "network": "HOST", "portMappings": []},
                },
            }
        )
    )
    assert (
        app.user is UNSET and app.ports is UNSET and app.uris is UNSET and app.ip_address is UNSET
    )
    assert app.container.docker.network is UNSET and app.container.docker.port_mappings is UNSET
    out = canonical(
        {"id": "a", "cmd": "sleep 1", "ports": [0], "uris": ["http://x/y"], "ipAddress": None}
    )
    for field in ("ports", "uris", "ipAddress", "user", "container", "tty", "residency", "check"):
        assert field not in out


# -- ids -----------------------------------------------------------------------------------


def test_relative_ids_and_dependencies_are_resolved_against_the_base():
    out = canonical(
        {"id": "web", "cmd": "sleep 1", "dependencies": ["db", "../shared/cache", "/abs"]},
        base="/prod",
    )
    assert out["id"] == "/prod/web"
    assert out["dependencies"] == ["/prod/db", "/shared/cache", "/abs"]


def test_apps_api_resolves_against_the_root():
    assert canonical({"id": "a/b", "cmd": "sleep 1", "dependencies": ["c"]})["dependencies"] == [
        "/c"
    ]
    assert canonical({"id": "a/b", "cmd": "sleep 1"})["id"] == "/a/b"


def test_duplicate_dependencies_collapse():
    out = canonical({"id": "a", "cmd": "sleep 1", "dependencies": ["/b", "b", "/b"]})
    assert out["dependencies"] == ["/b"]


# -- networking ---------------------------------------------------------------------------


def test_default_network_is_host_with_one_default_port():
    out = canonical({"id": "a", "cmd": "sleep 1"})
    assert out["networks"] == [{"mode": "host"}]
    assert out["portDefinitions"] == [{"port": 0, "protocol": "tcp", "name": "default"}]
    assert "container" not in out


def test_an_empty_port_definitions_array_means_no_ports():
    assert canonical({"id": "a", "cmd": "sleep 1", "portDefinitions": []})["portDefinitions"] == []


def test_port_definitions_keep_given_values_and_labels():
    out = canonical(
        {
            "id": "a",
            "cmd": "sleep 1",
            "portDefinitions": [
                {"port": 8080, "name": "http", "labels": {"VIP_0": "/a:80"}},
                {"protocol": "udp"},
            ],
        }
    )
    assert out["portDefinitions"] == [
        {"port": 8080, "protocol": "tcp", "name": "http", "labels": {"VIP_0": "/a:80"}},
        {"port": 0, "protocol": "udp"},
    ]


def test_bridge_networking_gets_a_default_port_mapping_with_host_port_zero():
    out = canonical(
        {
            "id": "a",
            "cmd": "sleep 1",
            "container": docker(),
            "networks": [{"mode": "container/bridge"}],
        }
    )
    assert "portDefinitions" not in out
    assert out["container"]["portMappings"] == [
        {
            "containerPort": 0,
            "hostPort": 0,
            "servicePort": 0,
            "protocol": "tcp",
            "name": "default",
            "labels": {},
        }
    ]


def test_bridge_mappings_without_host_port_default_to_zero():
    body = {
        "id": "a",
        "cmd": "sleep 1",
        "networks": [{"mode": "container/bridge"}],
        "container": {
            **docker(),
            "portMappings": [{"containerPort": 80}, {"containerPort": 443, "hostPort": 8443}],
        },
    }
    assert [pm["hostPort"] for pm in canonical(body)["container"]["portMappings"]] == [0, 8443]


def test_container_mode_mappings_without_host_port_stay_without():
    body = {
        "id": "a",
        "cmd": "sleep 1",
        "networks": [{"mode": "container", "name": "dcos"}],
        "container": {**docker(), "portMappings": [{"containerPort": 80}]},
    }
    assert "hostPort" not in canonical(body)["container"]["portMappings"][0]


def test_explicit_empty_port_mappings_stay_empty():
    body = {
        "id": "a",
        "cmd": "sleep 1",
        "networks": [{"mode": "container/bridge"}],
        "container": {**docker(), "portMappings": []},
    }
    assert canonical(body)["container"]["portMappings"] == []


def test_non_host_networking_without_container_gets_a_default_mesos_container():
    out = canonical({"id": "a", "cmd": "sleep 1", "networks": [{"mode": "container/bridge"}]})
    assert out["container"] == {
        "type": "MESOS",
        "volumes": [],
        "portMappings": [
            {
                "containerPort": 0,
                "hostPort": 0,
                "servicePort": 0,
                "protocol": "tcp",
                "name": "default",
                "labels": {},
            }
        ],
    }


def test_container_networks_get_the_default_network_name():
    out = canonical(
        {"id": "a", "cmd": "sleep 1", "networks": [{"mode": "container"}]},
        default_network_name="dcos",
    )
    assert out["networks"] == [{"mode": "container", "name": "dcos"}]
    named = canonical(
        {"id": "a", "cmd": "sleep 1", "networks": [{"name": "other"}]}, default_network_name="dcos"
    )
    assert named["networks"] == [{"mode": "container", "name": "other"}]


def test_empty_network_labels_are_omitted_and_others_kept():
    out = canonical(
        {
            "id": "a",
            "cmd": "sleep 1",
            "networks": [{"name": "n1", "labels": {}}, {"name": "n2", "labels": {"a": "b"}}],
        }
    )
    assert out["networks"] == [
        {"mode": "container", "name": "n1"},
        {"mode": "container", "name": "n2", "labels": {"a": "b"}},
    ]


def test_require_ports_is_forced_off_without_host_networking():
    assert canonical({"id": "a", "cmd": "sleep 1", "requirePorts": True})["requirePorts"] is True
    body = {
        "id": "a",
        "cmd": "sleep 1",
        "requirePorts": True,
        "networks": [{"mode": "container/bridge"}],
    }
    assert canonical(body)["requirePorts"] is False


def test_port_mappings_are_dropped_with_host_networking():
    body = {
        "id": "a",
        "cmd": "sleep 1",
        "container": {**docker(), "portMappings": [{"containerPort": 80}]},
    }
    out = canonical(body)
    assert "portMappings" not in out["container"]
    assert out["portDefinitions"] == [{"port": 0, "protocol": "tcp", "name": "default"}]


def test_port_definitions_with_container_networking_become_extra_mappings():
    # Marathon quirk: definitions are dropped, the container gets as many mappings.
    body = {
        "id": "a",
        "cmd": "sleep 1",
        "networks": [{"mode": "container/bridge"}],
        "container": docker(),
        "portDefinitions": [{"port": 0}, {"port": 0}, {"port": 0}],
    }
    out = canonical(body)
    assert "portDefinitions" not in out
    assert [pm.get("name") for pm in out["container"]["portMappings"]] == ["default", None, None]


def test_service_ports_zero_are_left_for_the_planner():
    out = canonical({"id": "a", "cmd": "sleep 1", "portDefinitions": [{"port": 0}, {"port": 0}]})
    assert [pd["port"] for pd in out["portDefinitions"]] == [0, 0]
    bridge = canonical({"id": "a", "cmd": "sleep 1", "networks": [{"mode": "container/bridge"}]})
    assert bridge["container"]["portMappings"][0]["servicePort"] == 0


# -- deprecated fields ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "extract"),
    [
        ("http://x/a.tar", True),
        ("http://x/a.tar.gz", True),
        ("http://x/a.tar.bz2", True),
        ("http://x/a.tar.xz", True),
        ("http://x/a.gz", True),
        ("http://x/a.tgz", True),
        ("http://x/a.tbz2", True),
        ("http://x/a.txz", True),
        ("http://x/a.zip", True),
        ("http://x/a.jar", False),
        ("http://x/script.sh", False),
        ("http://x/zip", False),
    ],
)
def test_uris_become_fetch_with_extract_by_suffix(uri, extract):
    out = canonical({"id": "a", "cmd": "sleep 1", "uris": [uri]})
    assert out["fetch"] == [{"uri": uri, "extract": extract, "executable": False, "cache": False}]


def test_empty_uris_leave_fetch_alone():
    out = canonical(
        {"id": "a", "cmd": "sleep 1", "uris": [], "fetch": [{"uri": "http://x/y", "cache": True}]}
    )
    assert out["fetch"] == [
        {"uri": "http://x/y", "extract": True, "executable": False, "cache": True}
    ]


def test_ports_become_port_definitions_without_names():
    out = canonical({"id": "a", "cmd": "sleep 1", "ports": [0, 8080]})
    assert out["portDefinitions"] == [
        {"port": 0, "protocol": "tcp"},
        {"port": 8080, "protocol": "tcp"},
    ]


def test_ports_equal_to_port_definitions_are_accepted():
    out = canonical(
        {
            "id": "a",
            "cmd": "sleep 1",
            "ports": [80],
            "portDefinitions": [{"port": 80, "name": "http"}],
        }
    )
    assert out["portDefinitions"] == [{"port": 80, "protocol": "tcp", "name": "http"}]


def test_ip_address_alone_asks_for_a_container_network_and_a_mesos_container():
    out = canonical(
        {
            "id": "a",
            "cmd": "sleep 1",
            "ipAddress": {"networkName": "dcos", "labels": {"k": "v"}, "groups": ["g"]},
        }
    )
    assert out["networks"] == [{"mode": "container", "name": "dcos", "labels": {"k": "v"}}]
    assert out["container"]["type"] == "MESOS"
    assert out["container"]["portMappings"] == [
        {"containerPort": 0, "servicePort": 0, "protocol": "tcp", "name": "default", "labels": {}}
    ]
    assert "portDefinitions" not in out


def test_ip_address_without_a_name_uses_the_default_network():
    out = canonical({"id": "a", "cmd": "sleep 1", "ipAddress": {}}, default_network_name="dcos")
    assert out["networks"] == [{"mode": "container", "name": "dcos"}]


def test_ip_address_named_like_the_mesos_bridge_asks_for_the_bridge():
    out = canonical({"id": "a", "cmd": "sleep 1", "ipAddress": {"networkName": "mesos-bridge"}})
    assert out["networks"] == [{"mode": "container/bridge"}]
    custom = canonical(
        {"id": "a", "cmd": "sleep 1", "ipAddress": {"networkName": "br0"}}, mesos_bridge_name="br0"
    )
    assert custom["networks"] == [{"mode": "container/bridge"}]


@pytest.mark.parametrize(
    ("network", "expected"),
    [
        ("USER", [{"mode": "container", "name": "dcos"}]),
        ("BRIDGE", [{"mode": "container/bridge"}]),
        ("HOST", [{"mode": "host"}]),
    ],
)
def test_ip_address_with_docker_network_picks_the_mode(network, expected):
    body = {
        "id": "a",
        "cmd": "sleep 1",
        "ipAddress": {"networkName": "dcos"},
        "container": {"type": "DOCKER", "docker": {"image": "x", "network": network}},
    }
    out = canonical(body)
    assert out["networks"] == expected
    assert "network" not in out["container"]["docker"]


@pytest.mark.parametrize(
    ("network", "expected"),
    [
        ("USER", [{"mode": "container", "name": "dcos"}]),
        ("BRIDGE", [{"mode": "container/bridge"}]),
        ("HOST", [{"mode": "host"}]),
    ],
)
def test_docker_network_alone_picks_the_mode(network, expected):
    body = {
        "id": "a",
        "cmd": "sleep 1",
        "container": {"type": "DOCKER", "docker": {"image": "x", "network": network}},
    }
    assert canonical(body, default_network_name="dcos")["networks"] == expected


def test_docker_network_none_cannot_be_translated():
    body = {
        "id": "a",
        "cmd": "sleep 1",
        "container": {"type": "DOCKER", "docker": {"image": "x", "network": "NONE"}},
    }
    with pytest.raises(IllegalArgument) as err:
        normalize_app(decode_app(body))
    assert err.value.body() == {"message": "unsupported docker network type NONE"}


def test_docker_port_mappings_move_to_the_container():
    body = {
        "id": "a",
        "cmd": "sleep 1",
        "container": {
            "type": "DOCKER",
            "docker": {
                "image": "x",
                "network": "BRIDGE",
                "portMappings": [{"containerPort": 80, "name": "http"}],
            },
        },
    }
    out = canonical(body)
    assert "portMappings" not in out["container"]["docker"]
    assert out["container"]["portMappings"] == [
        {
            "containerPort": 80,
            "hostPort": 0,
            "servicePort": 0,
            "protocol": "tcp",
            "name": "http",
            "labels": {},
        }
    ]


def test_empty_docker_port_mappings_defer_to_the_container_ones():
    body = {
        "id": "a",
        "cmd": "sleep 1",
        "networks": [{"mode": "container/bridge"}],
        "container": {
            "type": "DOCKER",
            "docker": {"image": "x", "portMappings": []},
            "portMappings": [{"containerPort": 81}],
        },
    }
    assert [pm["containerPort"] for pm in canonical(body)["container"]["portMappings"]] == [81]


def test_both_port_mapping_fields_cannot_be_migrated():
    body = {
        "id": "a",
        "cmd": "sleep 1",
        "networks": [{"mode": "container/bridge"}],
        "container": {
            "type": "DOCKER",
            "docker": {"image": "x", "portMappings": [{"containerPort": 80}]},
            "portMappings": [{"containerPort": 81}],
        },
    }
    with pytest.raises(
        IllegalArgument, match="cannot specify both portMappings and docker.portMappings"
    ):
        normalize_app(decode_app(body))


def test_discovery_ports_become_port_mappings_of_a_mesos_container():
    body = {
        "id": "a",
        "cmd": "sleep 1",
        "ipAddress": {
            "networkName": "dcos",
            "discovery": {
                "ports": [
                    {"number": 80, "name": "http", "protocol": "tcp", "labels": {"l": "v"}},
                    {"number": 53, "name": "dns", "protocol": "udp"},
                ]
            },
        },
    }
    out = canonical(body)
    assert out["container"]["portMappings"] == [
        {
            "containerPort": 80,
            "servicePort": 0,
            "protocol": "tcp",
            "name": "http",
            "labels": {"l": "v"},
        },
        {"containerPort": 53, "servicePort": 0, "protocol": "udp", "name": "dns", "labels": {}},
    ]


def test_discovery_ports_and_port_mappings_cannot_both_be_migrated():
    body = {
        "id": "a",
        "cmd": "sleep 1",
        "ipAddress": {
            "networkName": "dcos",
            "discovery": {"ports": [{"number": 80, "name": "http"}]},
        },
        "container": {"type": "MESOS", "portMappings": [{"containerPort": 81}]},
    }
    with pytest.raises(
        IllegalArgument,
        match="container.portMappings and ipAddress.discovery.ports must not both be set",
    ):
        normalize_app(decode_app(body))


# -- health and readiness checks -------------------------------------------------------


def test_port_index_zero_is_added_when_the_app_has_ports():
    out = canonical(
        {
            "id": "a",
            "cmd": "sleep 1",
            "healthChecks": [
                {"protocol": "TCP"},
                {"protocol": "HTTP", "port": 8080},
                {"protocol": "MESOS_TCP", "portIndex": 0},
            ],
        }
    )
    assert [(hc.get("portIndex"), hc.get("port")) for hc in out["healthChecks"]] == [
        (0, None),
        (None, 8080),
        (0, None),
    ]


def test_port_index_is_not_added_without_ports():
    out = canonical(
        {
            "id": "a",
            "cmd": "sleep 1",
            "portDefinitions": [],
            "healthChecks": [{"protocol": "MESOS_TCP"}],
        }
    )
    assert "portIndex" not in out["healthChecks"][0]


def test_http_checks_render_ignore_http1xx_false_and_others_do_not():
    out = canonical(
        {
            "id": "a",
            "cmd": "sleep 1",
            "healthChecks": [
                {"protocol": "HTTP", "path": "/health"},
                {"protocol": "HTTPS", "ignoreHttp1xx": True},
                {"protocol": "TCP"},
            ],
        }
    )
    assert [hc.get("ignoreHttp1xx") for hc in out["healthChecks"]] == [False, True, None]
    assert out["healthChecks"][0]["path"] == "/health"


def test_http_checks_default_ignore_http1xx_to_false_and_others_leave_it_unset():
    app = normalize_app(
        decode_app(
            {
                "id": "a",
                "cmd": "sleep 1",
                "healthChecks": [
                    {"protocol": "HTTP"},
                    {"protocol": "HTTPS"},
                    {"protocol": "TCP"},
                    {"protocol": "MESOS_HTTP"},
                ],
            }
        )
    )
    assert [hc.ignore_http1xx for hc in app.health_checks] == [False, False, UNSET, UNSET]


def test_command_checks_keep_their_command_and_no_port():
    out = canonical(
        {
            "id": "a",
            "cmd": "sleep 1",
            "healthChecks": [{"protocol": "COMMAND", "command": {"value": "true"}, "portIndex": 0}],
        }
    )
    hc = out["healthChecks"][0]
    assert hc["command"] == {"value": "true"}
    assert "portIndex" not in hc and "ignoreHttp1xx" not in hc


def test_tcp_checks_drop_a_path():
    out = canonical(
        {"id": "a", "cmd": "sleep 1", "healthChecks": [{"protocol": "TCP", "path": "/x"}]}
    )
    assert "path" not in out["healthChecks"][0]


def test_duplicate_health_checks_collapse():
    out = canonical(
        {
            "id": "a",
            "cmd": "sleep 1",
            "healthChecks": [{"protocol": "TCP"}, {"protocol": "TCP", "portIndex": 0}],
        }
    )
    assert len(out["healthChecks"]) == 1


def test_readiness_checks_default_their_status_codes():
    body = {
        "id": "a",
        "cmd": "sleep 1",
        "portDefinitions": [{"name": "http-api"}],
        "readinessChecks": [{"httpStatusCodesForReady": []}],
    }
    assert canonical(body)["readinessChecks"] == [
        {
            "name": "readinessCheck",
            "protocol": "HTTP",
            "path": "/",
            "portName": "http-api",
            "intervalSeconds": 30,
            "timeoutSeconds": 10,
            "httpStatusCodesForReady": [200],
            "preserveLastResponse": False,
        }
    ]


# -- roles ------------------------------------------------------------------------------------


def test_role_defaults_to_the_mesos_role_at_the_root():
    assert canonical({"id": "a", "cmd": "sleep 1"}, mesos_role="marathon")["role"] == "marathon"


def test_role_defaults_to_the_group_role_when_the_group_enforces_it():
    assert canonical({"id": "/dev/team/a", "cmd": "sleep 1"}, enforce_role=True)["role"] == "dev"


def test_role_defaults_to_the_mesos_role_when_the_group_does_not_enforce():
    assert canonical({"id": "/dev/a", "cmd": "sleep 1"})["role"] == "*"


def test_a_given_role_is_kept():
    assert canonical({"id": "/dev/a", "cmd": "sleep 1", "role": "dev"})["role"] == "dev"


# -- strategies, residency, volumes --------------------------------------------------------


def persistent(**info) -> dict:
    return {
        "type": "MESOS",
        "volumes": [{"containerPath": "data", "mode": "RW", "persistent": {"size": 10, **info}}],
    }


def test_default_strategies_for_ordinary_apps():
    out = canonical({"id": "a", "cmd": "sleep 1"})
    assert out["upgradeStrategy"] == {"minimumHealthCapacity": 1.0, "maximumOverCapacity": 1.0}
    assert out["unreachableStrategy"] == {"inactiveAfterSeconds": 0, "expungeAfterSeconds": 0}


def test_resident_apps_get_resident_defaults():
    out = canonical({"id": "/dev/a", "cmd": "sleep 1", "role": "dev", "container": persistent()})
    assert out["upgradeStrategy"] == {"minimumHealthCapacity": 0.5, "maximumOverCapacity": 0.0}
    assert out["unreachableStrategy"] == "disabled"
    assert out["residency"] == {
        "relaunchEscalationTimeoutSeconds": 3600,
        "taskLostBehavior": "WAIT_FOREVER",
    }


def test_external_volume_apps_get_the_resident_upgrade_strategy_only():
    body = {
        "id": "a",
        "cmd": "sleep 1",
        "container": {
            "type": "MESOS",
            "volumes": [
                {
                    "containerPath": "/data",
                    "external": {
                        "name": "vol",
                        "provider": "dvdi",
                        "options": {"dvdi/driver": "rexray"},
                    },
                }
            ],
        },
    }
    out = canonical(body, features=frozenset({"external_volumes"}))
    assert out["upgradeStrategy"] == {"minimumHealthCapacity": 0.5, "maximumOverCapacity": 0.0}
    assert out["unreachableStrategy"] == {"inactiveAfterSeconds": 0, "expungeAfterSeconds": 0}
    assert "residency" not in out
    assert out["container"]["volumes"][0]["mode"] == "RW"


def test_given_strategies_are_kept():
    body = {
        "id": "a",
        "cmd": "sleep 1",
        "upgradeStrategy": {"minimumHealthCapacity": 0.25, "maximumOverCapacity": 0.5},
        "unreachableStrategy": {"inactiveAfterSeconds": 60, "expungeAfterSeconds": 120},
    }
    out = canonical(body)
    assert out["upgradeStrategy"] == {"minimumHealthCapacity": 0.25, "maximumOverCapacity": 0.5}
    assert out["unreachableStrategy"] == {"inactiveAfterSeconds": 60, "expungeAfterSeconds": 120}
    assert (
        canonical({"id": "a", "cmd": "sleep 1", "unreachableStrategy": "disabled"})[
            "unreachableStrategy"
        ]
        == "disabled"
    )


def test_persistent_volume_type_and_mode_defaults():
    out = canonical({"id": "/dev/a", "cmd": "sleep 1", "role": "dev", "container": persistent()})
    assert out["container"]["volumes"][0] == {
        "containerPath": "data",
        "mode": "RW",
        "persistent": {"size": 10, "type": "root", "constraints": []},
    }
    mount = canonical(
        {
            "id": "/dev/a",
            "cmd": "sleep 1",
            "role": "dev",
            "container": persistent(profileName="fast"),
        }
    )
    assert mount["container"]["volumes"][0]["persistent"]["type"] == "mount"


# -- other collections ------------------------------------------------------------------------


def test_constraint_operators_are_upper_cased_and_duplicates_collapse():
    body = {
        "id": "a",
        "cmd": "sleep 1",
        "constraints": [["hostname", "unique"], ["hostname", "UNIQUE"], ["rack", "group_by", "2"]],
    }
    assert canonical(body)["constraints"] == [["hostname", "UNIQUE"], ["rack", "GROUP_BY", "2"]]


def test_accepted_resource_roles_are_a_set():
    out = canonical({"id": "a", "cmd": "sleep 1", "acceptedResourceRoles": ["*", "*"]})
    assert out["acceptedResourceRoles"] == ["*"]
    assert "acceptedResourceRoles" not in canonical({"id": "a", "cmd": "sleep 1"})


def test_env_secrets_labels_and_args_are_kept():
    body = {
        "id": "a",
        "args": ["run", "--fast"],
        "env": {"A": "1", "PW": {"secret": "pw"}},
        "secrets": {"pw": {"source": "/db/pw"}},
        "labels": {"team": "x"},
        "user": "nobody",
        "tty": True,
        "taskKillGracePeriodSeconds": 30,
    }
    out = canonical(body, features=frozenset({"secrets"}))
    assert out["args"] == ["run", "--fast"] and "cmd" not in out
    assert out["env"] == {"A": "1", "PW": {"secret": "pw"}}
    assert out["secrets"] == {"pw": {"source": "/db/pw"}}
    assert (out["labels"], out["user"], out["tty"], out["taskKillGracePeriodSeconds"]) == (
        {"team": "x"},
        "nobody",
        True,
        30,
    )


def test_returns_an_app_definition_that_msgspec_renders_like_app_json_except_port_labels():
    app = normalize_app(decode_app({"id": "a", "cmd": "sleep 1", "portDefinitions": []}))
    assert msgspec.json.encode(app) == app_json(app)
