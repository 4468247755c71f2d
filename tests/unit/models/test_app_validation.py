"""Validation: every rule with Marathon's message and JSON path, reported
together per stage (SPEC.md 1.2, 2.2-2.6, 6.1, 6.5, 7.1)."""

from __future__ import annotations

import pytest

from marathon.errors import ValidationFailed
from marathon.models import constraint
from marathon.models.app import AppDefinition
from marathon.models.app_rules import AppContext, decode_app, normalize_app
from marathon.models.pathid import ID_SEGMENT_REGEX

SECRETS = frozenset({"secrets"})


def details(body: dict | AppDefinition, **ctx) -> list[dict]:
    """The `details` of the 422 "Object is not valid" a body is refused with."""
    app = body if isinstance(body, AppDefinition) else decode_app(body)
    with pytest.raises(ValidationFailed) as err:
        normalize_app(app, AppContext(**ctx))
    payload = err.value.body()
    assert err.value.status == 422
    assert payload["message"] == "Object is not valid"
    return payload["details"]


def errors(body: dict | AppDefinition, path: str, **ctx) -> list[str]:
    """The messages at one path (the body must be refused)."""
    found = [d["errors"] for d in details(body, **ctx) if d["path"] == path]
    return found[0] if found else []


def only(body: dict | AppDefinition, path: str, message: str, **ctx) -> None:
    assert details(body, **ctx) == [{"path": path, "errors": [message]}]


def valid(body: dict, **ctx) -> AppDefinition:
    return normalize_app(decode_app(body), AppContext(**ctx))


def app(**fields) -> dict:
    return {"id": "/app", "cmd": "sleep 100", **fields}


def docker(**extra) -> dict:
    return {"type": "DOCKER", "docker": {"image": "nginx"}, **extra}


def resident_volume(**persistent) -> dict:
    return {"containerPath": "data", "mode": "RW", "persistent": {"size": 10, **persistent}}


# -- command, args, container --------------------------------------------------------------

CMD_OR_CONTAINER = "AppDefinition must either contain one of 'cmd' or 'args', and/or a 'container'."


@pytest.mark.parametrize(
    "body",
    [
        {"id": "/app"},
        {"id": "/app", "cmd": "sleep 100", "args": ["sleep", "100"]},
        {"id": "/app", "container": {"type": "DOCKER"}},
        {"id": "/app", "cmd": "sleep 100", "args": ["x"], "container": docker()},
    ],
)
def test_an_app_needs_exactly_one_of_cmd_and_args_or_a_container(body):
    assert CMD_OR_CONTAINER in errors(body, "/")


@pytest.mark.parametrize(
    "body",
    [
        app(),
        {"id": "/app", "args": ["sleep", "100"]},
        {"id": "/app", "container": docker()},
        {"id": "/app", "args": ["x"], "container": docker()},
        {"id": "/app", "container": {"type": "MESOS"}},
        {"id": "/app", "container": {"type": "MESOS", "docker": {"image": "nginx"}}},
    ],
)
def test_valid_command_forms(body):
    valid(body)


def test_a_one_character_cmd_is_refused():
    # ⚠ Marathon's rule tests `length > 1`.
    only(app(cmd="x"), "/", "must not be an empty string")
    valid(app(cmd="ls"))


# -- ids ---------------------------------------------------------------------------------------


def test_an_app_may_not_be_the_root():
    assert details({"id": "/", "cmd": "sleep 1"}) == [
        {"path": "/id", "errors": ["Path must contain at least one path element"]},
        {"path": "/", "errors": ["must not be root"]},
    ]


def test_an_id_may_not_end_with_a_reserved_keyword():
    only(
        app(id="/app/tasks"),
        "/id",
        "must not end with any of the following reserved keywords: restart, tasks, versions, ., ..",
    )
    assert (
        "must not end with any of the following reserved keywords: restart, tasks, versions, ., .."
        in errors(app(id="/a/.."), "/id")
    )


def test_ids_built_outside_the_raml_are_checked_against_the_segment_regex():
    only(
        AppDefinition(id="bad_id", cmd="sleep 1"),
        "/id",
        f"must fully match regular expression '{ID_SEGMENT_REGEX}'",
    )


def test_dependencies_must_be_valid_path_ids():
    only(
        app(dependencies=["/ok", "/x/restart"]),
        "/dependencies(1)",
        "must not end with any of the following reserved keywords: restart, tasks, versions, ., ..",
    )


# -- deprecated-API checks (reported before anything else) ----------------------------------


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"ports": [80, 80]}, "ports must be unique"),
        ({"ports": [80], "ipAddress": {}}, "cannot specify both an IP address and port"),
        (
            {"portDefinitions": [{"port": 1}], "ipAddress": {}},
            "cannot specify both an IP address and port",
        ),
        (
            {"ports": [80], "portDefinitions": [{"port": 81}]},
            "cannot specify both ports and port definitions",
        ),
        (
            {"networks": [{"mode": "host"}], "ipAddress": {}},
            "must not specify both networks and ipAddress",
        ),
        (
            {
                "networks": [{"mode": "host"}],
                "container": {"type": "DOCKER", "docker": {"image": "x", "network": "HOST"}},
            },
            "must not specify both container.docker.network and networks",
        ),
    ],
)
def test_contradictory_deprecated_fields_are_refused_at_the_root(fields, message):
    only(app(**fields), "/", message)


def test_zero_ports_may_repeat():
    valid(app(ports=[0, 0]))


def test_deprecated_violations_are_reported_alone():
    # The missing command would be a canonical violation; it is not reached.
    only({"id": "/app", "ports": [1, 1]}, "/", "ports must be unique")


def test_uris_must_be_uris_and_not_combined_with_fetch():
    assert details(app(uris=["http://x/a b", "http://ok/"], fetch=[{"uri": "http://y/"}])) == [
        {"path": "/uris(0)", "errors": ["URI has invalid syntax."]},
        {"path": "/uris", "errors": ["may not be set in conjunction with fetch"]},
    ]


@pytest.mark.parametrize(
    ("docker_fields", "path"),
    [
        ({"network": "USER"}, "/container/docker/network"),
        ({"parameters": [{"key": "k", "value": "v"}]}, "/container/docker/parameters"),
        ({"portMappings": []}, "/container/docker/portMappings"),
        ({"credential": {"principal": "p"}}, "/container/docker/credential"),
    ],
)
def test_mesos_containers_may_not_use_docker_only_fields(docker_fields, path):
    body = app(container={"type": "MESOS", "docker": {"image": "x", **docker_fields}})
    only(body, path, "must be empty")


def test_docker_credentials_are_no_longer_supported():
    body = app(
        container={"type": "DOCKER", "docker": {"image": "x", "credential": {"principal": "p"}}}
    )
    only(body, "/container/docker/credential", "must be empty")


def test_ip_discovery_is_not_for_docker_containers():
    body = app(container=docker(), ipAddress={"discovery": {"ports": []}})
    only(body, "/ipAddress", "ipAddress/discovery is not allowed for Docker containers")


def test_docker_port_mapping_names_must_be_unique():
    body = app(
        container={
            "type": "DOCKER",
            "docker": {"image": "x", "portMappings": [{"name": "a"}, {"name": "a"}]},
        }
    )
    only(body, "/container/docker/portMappings", "Port names must be unique.")


# -- ports ------------------------------------------------------------------------------------


def test_port_definition_names_and_nonzero_ports_are_unique():
    body = app(
        portDefinitions=[
            {"port": 80, "name": "a"},
            {"port": 80, "name": "a"},
            {"port": 0},
            {"port": 0},
        ]
    )
    assert details(body) == [
        {
            "path": "/portDefinitions",
            "errors": ["Port names must be unique.", "Ports must be unique."],
        }
    ]


def test_port_mapping_names_are_unique():
    body = app(
        networks=[{"mode": "container/bridge"}],
        container=docker(portMappings=[{"name": "web"}, {"name": "web"}]),
    )
    only(body, "/container/portMappings", "Port names must be unique.")


def test_port_mapping_network_names_must_be_declared():
    body = app(
        networks=[{"name": "a"}, {"name": "b"}],
        container={
            "type": "MESOS",
            "portMappings": [{"containerPort": 80, "networkNames": ["a", "c"]}],
        },
    )
    only(body, "/container/portMappings(0)/networkNames(1)", "is not one of (a,b)")


def test_host_ports_with_several_container_networks_need_one_network_name():
    message = (
        "networkNames must be a single item list when hostPort is specified and more than 1 "
        "container network is defined"
    )
    nets = [{"name": "a"}, {"name": "b"}]
    only(
        app(networks=nets, container={"type": "MESOS", "portMappings": [{"hostPort": 0}]}),
        "/container/portMappings(0)",
        message,
    )
    only(
        app(
            networks=nets,
            container={
                "type": "MESOS",
                "portMappings": [{"hostPort": 0, "networkNames": ["a", "b"]}],
            },
        ),
        "/container/portMappings(0)",
        message,
    )
    valid(
        app(
            networks=nets,
            container={
                "type": "MESOS",
                "portMappings": [{"hostPort": 0, "networkNames": ["a"]}, {"containerPort": 80}],
            },
        )
    )


# -- health checks -----------------------------------------------------------------------------

PORT_INDEX = "Health check port indices must address an element of the ports array or container port mappings."


def test_marathon_health_checks_must_address_a_port():
    only(app(healthChecks=[{"protocol": "HTTP", "portIndex": 1}]), "/healthChecks(0)", PORT_INDEX)
    only(
        app(portDefinitions=[], healthChecks=[{"protocol": "TCP"}]), "/healthChecks(0)", PORT_INDEX
    )
    valid(app(portDefinitions=[], healthChecks=[{"protocol": "TCP", "port": 8080}]))
    valid(
        app(
            portDefinitions=[{}, {}],
            healthChecks=[{"protocol": "HTTPS", "portIndex": 1}, {"protocol": "HTTP"}],
        )
    )


def test_health_checks_address_port_mappings_for_container_networking():
    body = app(
        networks=[{"mode": "container/bridge"}],
        container=docker(portMappings=[{"containerPort": 80}]),
        healthChecks=[{"protocol": "HTTP", "portIndex": 1}],
    )
    only(body, "/healthChecks(0)", PORT_INDEX)


def test_at_most_one_mesos_health_check():
    body = app(healthChecks=[{"protocol": "MESOS_HTTP"}, {"protocol": "MESOS_TCP"}])
    only(body, "/", "AppDefinition can contain at most one Mesos health check")


def test_several_command_health_checks_are_tolerated():
    valid(
        app(
            healthChecks=[
                {"protocol": "COMMAND", "command": {"value": "true"}},
                {"protocol": "COMMAND", "command": {"value": "false"}},
                {"protocol": "MESOS_TCP"},
            ]
        )
    )


def test_ipv6_only_for_mesos_network_checks_on_docker():
    message = (
        "IPv6 can only be used for container type DOCKER and Mesos http/https/tcp health checks"
    )
    only(
        app(healthChecks=[{"protocol": "MESOS_HTTP", "ipProtocol": "IPv6"}]),
        "/healthChecks(0)",
        message,
    )
    only(
        app(container=docker(), healthChecks=[{"protocol": "HTTP", "ipProtocol": "IPv6"}]),
        "/healthChecks(0)",
        message,
    )
    valid(app(container=docker(), healthChecks=[{"protocol": "MESOS_TCP", "ipProtocol": "IPv6"}]))


def test_command_goes_with_the_command_protocol_only():
    only(
        app(healthChecks=[{"protocol": "COMMAND"}]),
        "/healthChecks(0)",
        "command is required for COMMAND health checks",
    )
    only(
        app(healthChecks=[{"protocol": "HTTP", "command": {"value": "true"}}]),
        "/healthChecks(0)",
        "command may only be given for COMMAND health checks",
    )


# -- Mesos checks -------------------------------------------------------------------------------


def test_mesos_checks_are_not_for_docker_containers():
    only(
        app(container=docker(), check={"exec": {"command": {"value": "true"}}}),
        "/check",
        "Mesos checks are not supported with the Docker containerizer",
    )


def test_mesos_checks_must_address_a_port_and_name_one_kind():
    only(
        app(check={"http": {"portIndex": 3}}),
        "/check",
        "Check port indices must address an element of the ports array or container port mappings.",
    )
    only(app(check={}), "/check", "exactly one of http, tcp or exec must be specified")
    valid(app(check={"tcp": {}}))


# -- fetch, env, secrets -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "uri", ["http://x/a b", "http://x/%zz", "ht tp://x", ":nothing", "a#b#c", "http://x/{y}"]
)
def test_fetch_uris_must_parse(uri):
    only(
        app(fetch=[{"uri": "http://fine/"}, {"uri": uri}]),
        "/fetch(1)/uri",
        "URI has invalid syntax.",
    )


@pytest.mark.parametrize(
    "uri",
    ["http://x/a.tgz", "file:///bin/bash", "hdfs://nn/a?b=c#d", "relative/path", "s3://b/k%20y"],
)
def test_fetch_uris_that_parse(uri):
    valid(app(fetch=[{"uri": uri}]))


def test_secrets_need_the_secrets_feature():
    body = app(secrets={"pw": {"source": "/a"}})
    only(body, "/secrets", "Feature secrets is not enabled. Enable with --enable_features secrets)")
    valid(body, features=SECRETS)


def test_secret_names_may_not_be_empty():
    only(
        app(secrets={"": {"source": "/a"}}),
        "/secrets/keys(0)",
        "must not be empty",
        features=SECRETS,
    )


def test_env_secret_references_need_the_feature_and_a_declared_secret():
    body = app(env={"A": "1", "PW": {"secret": "pw"}})
    assert details(body) == [
        {
            "path": "/env",
            "errors": [
                "use of secret-references in the environment requires the secrets feature to be enabled"
            ],
        },
        {"path": "/env/PW/secret", "errors": ["references an undefined secret"]},
    ]
    only(body, "/env/PW/secret", "references an undefined secret", features=SECRETS)
    valid(app(env={"PW": {"secret": "pw"}}, secrets={"pw": {"source": "/a"}}), features=SECRETS)


def test_env_names_may_be_anything_but_empty():
    valid(app(env={" ": "x", "9": "x", "a-b": "x"}))
    only(app(env={"A": "1", "": "x"}), "/env/keys(1)", "must not be empty")


# -- roles -----------------------------------------------------------------------------------------


def test_accepted_resource_roles_may_not_be_empty():
    only(app(acceptedResourceRoles=[]), "/acceptedResourceRoles", "must not be empty")


@pytest.mark.parametrize(
    ("role", "message"),
    [
        ("", 'A role name must not be "".'),
        (".", 'A role name must not be ".".'),
        ("..", 'A role name must not be "..".'),
        ("-x", "A role name must not start with a '-'."),
        ("a b", "A role name must not include a space (\\x20) character."),
        ("a/b", "A role name must not include a slash (\\x2f) character."),
        ("a\tb", "A role name must not include a horizontal tab (\\x09) character."),
        ("a\x7fb", "A role name must not include a backspace (\\x7f) character."),
    ],
)
def test_accepted_resource_roles_must_be_valid_role_names(role, message):
    assert errors(app(acceptedResourceRoles=["*", role]), "/acceptedResourceRoles(1)") == [message]


def test_accepted_resource_roles_may_only_name_star_and_the_app_role():
    only(
        app(acceptedResourceRoles=["*", "other"]),
        "/acceptedResourceRoles",
        "acceptedResourceRoles can only contain * and *",
    )
    valid(app(id="/dev/app", role="dev", acceptedResourceRoles=["*", "dev"]))
    only(
        app(id="/dev/app", role="dev", acceptedResourceRoles=["prod"]),
        "/acceptedResourceRoles",
        "acceptedResourceRoles can only contain * and dev",
    )


def test_the_role_must_be_the_mesos_role_at_the_root():
    only(app(role="NotTheDefaultRole"), "/role", "got NotTheDefaultRole, expected one of: [*]")
    valid(app(role="marathon"), mesos_role="marathon")


def test_the_role_of_a_grouped_app_is_the_mesos_or_the_group_role():
    only(app(id="/dev/app", role="prod"), "/role", "got prod, expected one of: [*, dev]")
    valid(app(id="/dev/sub/app", role="dev"))
    only(app(id="/dev/sub/app", role="sub"), "/role", "got sub, expected one of: [*, dev]")


def test_an_enforcing_group_allows_only_its_role():
    only(app(id="/dev/app", role="*"), "/role", "got *, expected one of: [dev]", enforce_role=True)


def test_an_existing_role_stays_valid():
    valid(app(id="/dev/app", role="legacy"), existing_role="legacy")
    only(
        app(id="/dev/app", role="differentCustomRole"),
        "/role",
        "got differentCustomRole, expected one of: [*, dev, NotTheDefaultRole]",
        existing_role="NotTheDefaultRole",
    )


def test_resident_apps_need_a_reserved_role():
    body = app(id="/dev/app", container={"type": "MESOS", "volumes": [resident_volume()]})
    only(body, "/role", "Resident apps cannot have the role *")
    valid({**body, "role": "dev"})


def test_changing_the_role_of_a_resident_app_needs_force():
    body = app(
        id="/dev/app", role="dev", container={"type": "MESOS", "volumes": [resident_volume()]}
    )
    assert errors(body, "/role", existing_role="old")[0].startswith(
        "It is not possible to change the role for existing reservations."
    )
    valid(body, existing_role="old", force=True)
    valid(body, existing_role="dev")


def test_resident_apps_accept_only_unreserved_resources():
    body = app(
        id="/dev/app",
        role="dev",
        acceptedResourceRoles=["dev"],
        container={"type": "MESOS", "volumes": [resident_volume()]},
    )
    only(
        body, "/acceptedResourceRoles", 'A resident app must have `acceptedResourceRoles = ["*"]`.'
    )


# -- features and labels -------------------------------------------------------------------------


def test_gpus_need_the_feature_and_the_mesos_containerizer():
    assert details(app(gpus=1, container=docker())) == [
        {
            "path": "/",
            "errors": [
                "GPU resources only work with the Mesos containerizer",
                "Feature gpu_resources is not enabled. Enable with --enable_features gpu_resources)",
            ],
        }
    ]
    valid(app(gpus=1), features=frozenset({"gpu_resources"}))


MIGRATION = (
    "DCOS_PACKAGE_FRAMEWORK_NAME and DCOS_MIGRATION_API_PATH must be defined when using "
    "DCOS_MIGRATION_API_VERSION"
)


@pytest.mark.parametrize(
    "labels",
    [
        {"DCOS_MIGRATION_API_VERSION": "v1"},
        {
            "DCOS_MIGRATION_API_VERSION": "v2",
            "DCOS_PACKAGE_FRAMEWORK_NAME": "f",
            "DCOS_MIGRATION_API_PATH": "/p",
        },
        {
            "DCOS_MIGRATION_API_VERSION": "v1",
            "DCOS_PACKAGE_FRAMEWORK_NAME": "",
            "DCOS_MIGRATION_API_PATH": "/p",
        },
    ],
)
def test_the_migration_api_labels_come_together(labels):
    only(app(labels=labels), "/", MIGRATION)


def test_complete_migration_api_labels_are_fine():
    valid(
        app(
            labels={
                "DCOS_MIGRATION_API_VERSION": "v1",
                "DCOS_PACKAGE_FRAMEWORK_NAME": "f",
                "DCOS_MIGRATION_API_PATH": "/p",
            }
        )
    )
    valid(app(labels={"DCOS_MIGRATION_API_VERSION": ""}))


# -- readiness checks ------------------------------------------------------------------------------


def ready(**fields) -> dict:
    return {"portName": "http", **fields}


def test_at_most_one_readiness_check():
    only(
        app(portDefinitions=[{"name": "http"}], readinessChecks=[ready(), ready()]),
        "/readinessChecks",
        "got 2, expected 1 or less",
    )


def test_readiness_port_name_must_name_a_port():
    only(
        app(readinessChecks=[ready()]),
        "/readinessChecks(0)/portName",
        "No port definition reference for portName http",
    )
    valid(
        app(
            networks=[{"mode": "container/bridge"}],
            container=docker(portMappings=[{"name": "http"}]),
            readinessChecks=[ready()],
        )
    )


def test_readiness_timeout_must_be_positive_and_below_the_interval():
    pds = [{"name": "http"}]
    only(
        app(portDefinitions=pds, readinessChecks=[ready(timeoutSeconds=30, intervalSeconds=30)]),
        "/readinessChecks(0)/timeoutSeconds",
        "got 30, expected less than 30",
    )
    only(
        app(portDefinitions=pds, readinessChecks=[ready(timeoutSeconds=0)]),
        "/readinessChecks(0)/timeoutSeconds",
        "got 0, expected more than 0",
    )


def test_readiness_name_may_not_be_empty():
    only(
        app(portDefinitions=[{"name": "http"}], readinessChecks=[ready(name="")]),
        "/readinessChecks(0)/name",
        "must not be empty",
    )


# -- residency, single instance, strategies ------------------------------------------------------


def test_residency_needs_persistent_volumes():
    only(app(residency={}), "/", "App must contain persistent volumes and define residency")


def test_resident_apps_must_disable_unreachable_handling():
    body = app(
        id="/dev/app",
        role="dev",
        container={"type": "MESOS", "volumes": [resident_volume()]},
        unreachableStrategy={"inactiveAfterSeconds": 0, "expungeAfterSeconds": 0},
    )
    only(body, "/", "unreachableStrategy must be disabled for resident tasks")


def test_resident_apps_may_not_over_provision():
    body = app(
        id="/dev/app",
        role="dev",
        container={"type": "MESOS", "volumes": [resident_volume()]},
        upgradeStrategy={"minimumHealthCapacity": 0.5, "maximumOverCapacity": 0.5},
    )
    only(body, "/upgradeStrategy/maximumOverCapacity", "got 0.5, expected 0.0")


def test_single_instance_apps_run_one_instance_with_a_zero_strategy():
    labels = {"MARATHON_SINGLE_INSTANCE_APP": "true"}
    only(
        app(
            labels=labels,
            instances=2,
            upgradeStrategy={"minimumHealthCapacity": 0, "maximumOverCapacity": 0},
        ),
        "/",
        "Single instance app may only have one instance",
    )
    assert details(app(labels=labels)) == [
        {"path": "/upgradeStrategy/minimumHealthCapacity", "errors": ["got 1.0, expected 0.0"]},
        {"path": "/upgradeStrategy/maximumOverCapacity", "errors": ["got 1.0, expected 0.0"]},
    ]
    valid(
        app(labels=labels, upgradeStrategy={"minimumHealthCapacity": 0, "maximumOverCapacity": 0})
    )


def test_unreachable_inactive_may_not_exceed_expunge():
    only(
        app(unreachableStrategy={"inactiveAfterSeconds": 600, "expungeAfterSeconds": 60}),
        "/unreachableStrategy",
        "inactiveAfterSeconds must be less than or equal to expungeAfterSeconds",
    )


# -- constraints -----------------------------------------------------------------------------------


def test_each_constraint_is_checked_at_its_index():
    body = app(
        constraints=[
            ["hostname", "UNIQUE"],
            ["hostname"],
            ["rack", "FOO"],
            ["", "UNIQUE"],
            ["rack", "MAX_PER", "x"],
        ]
    )
    assert details(body) == [
        {"path": "/constraints(1)", "errors": ["Each constraint must have either 2 or 3 fields"]},
        {"path": "/constraints(2)", "errors": [constraint.MSG_OPERATOR]},
        {"path": "/constraints(3)", "errors": [constraint.MSG_MISSING_FIELD]},
        {"path": "/constraints(4)", "errors": [constraint.MSG_MAX_PER_VALUE]},
    ]


# -- networks ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("networks", "message"),
    [
        ([{"mode": "host", "name": "x"}], "Host networks may not have names or labels"),
        ([{"mode": "host", "labels": {"a": "b"}}], "Host networks may not have names or labels"),
        ([{"mode": "container/bridge", "name": "x"}], "Bridge networks may not have names"),
        ([{"name": "a"}, {"name": "a"}], "Duplicate networks are not allowed"),
        (
            [{"mode": "host"}, {"mode": "host"}],
            "May specify a single host network, single bridge network, or else 1-to-n container networks",
        ),
        (
            [{"mode": "host"}, {"name": "a"}],
            "May specify a single host network, single bridge network, or else 1-to-n container networks",
        ),
        (
            [{"mode": "container/bridge"}, {"mode": "container/bridge"}],
            "May specify a single host network, single bridge network, or else 1-to-n container networks",
        ),
    ],
)
def test_network_combinations(networks, message):
    assert message in errors(app(networks=networks), "/networks")


def test_container_networks_need_a_name_or_a_default():
    only(
        app(networks=[{"mode": "container"}]),
        "/networks",
        "Network name must be specified when container network is selected.",
    )
    valid(app(networks=[{"mode": "container"}]), default_network_name="dcos")
    assert "Duplicate networks are not allowed" in errors(
        app(networks=[{"mode": "container"}, {"mode": "container"}]), "/networks"
    )


def test_docker_joins_at_most_one_container_network():
    only(
        app(container=docker(), networks=[{"name": "a"}, {"name": "b"}]),
        "/",
        "may only specify a single container network when using the Docker container engine",
    )
    valid(
        app(
            container={"type": "MESOS", "docker": {"image": "x"}},
            networks=[{"name": "a"}, {"name": "b"}],
        )
    )


# -- containers and volumes ----------------------------------------------------------------------


def test_docker_containers_need_docker_and_no_pull_config_or_linux_info():
    assert details(
        {"id": "/app", "cmd": "sleep 100", "container": {"type": "DOCKER", "linuxInfo": {}}}
    ) == [
        {"path": "/container/docker", "errors": ["not defined"]},
        {
            "path": "/container/linuxInfo",
            "errors": ["linuxInfo is not supported with Docker containerizer"],
        },
    ]
    only(
        app(container={"type": "DOCKER", "docker": {"image": "x", "pullConfig": {"secret": "s"}}}),
        "/container/docker/pullConfig",
        "pullConfig is not supported with Docker containerizer",
    )


def test_mesos_pull_config_needs_the_feature_and_a_declared_secret():
    body = app(container={"type": "MESOS", "docker": {"image": "x", "pullConfig": {"secret": "s"}}})
    assert errors(body, "/container/docker/pullConfig") == [
        "Feature secrets is not enabled. Enable with --enable_features secrets)",
        "pullConfig.secret must refer to an existing secret",
    ]
    valid({**body, "secrets": {"s": {"source": "/x"}}}, features=SECRETS)


def test_seccomp_and_ipc_rules():
    base = {"type": "MESOS"}
    only(
        app(container={**base, "linuxInfo": {"seccomp": {"unconfined": True, "profileName": "p"}}}),
        "/container/linuxInfo/seccomp",
        "Seccomp unconfined can NOT be true when Seccomp profile is set",
    )
    only(
        app(container={**base, "linuxInfo": {"seccomp": {}}}),
        "/container/linuxInfo/seccomp",
        "Seccomp unconfined must be true when Seccomp profile is NOT set",
    )
    only(
        app(container={**base, "linuxInfo": {"ipcInfo": {"mode": "SHARE_PARENT", "shmSize": 64}}}),
        "/container/linuxInfo/ipcInfo",
        "ipcInfo shmSize can NOT be set when mode is SHARE_PARENT",
    )
    valid(
        app(
            container={
                **base,
                "linuxInfo": {
                    "seccomp": {"profileName": "p"},
                    "ipcInfo": {"mode": "PRIVATE", "shmSize": 64},
                },
            }
        )
    )


def resident(*volumes) -> dict:
    return app(id="/dev/app", role="dev", container={"type": "MESOS", "volumes": list(volumes)})


def test_persistent_volume_paths_are_one_relative_segment():
    assert errors(
        resident(resident_volume() | {"containerPath": "/data"}),
        "/container/volumes(0)/containerPath",
    ) == ['value must not contain "/"']
    assert errors(
        resident(resident_volume() | {"containerPath": ".."}), "/container/volumes(0)/containerPath"
    ) == ["can not be one of (.,..)"]


def test_persistent_volumes_are_read_write():
    only(
        resident(resident_volume() | {"mode": "RO"}),
        "/container/volumes(0)/mode",
        "does not equal RW",
    )


def test_persistent_volume_size_rules():
    assert errors(resident(resident_volume(maxSize=20)), "/container/volumes(0)/persistent") == [
        "Only mount volumes can have maxSize"
    ]
    assert errors(
        resident(resident_volume(type="mount", maxSize=10)), "/container/volumes(0)/persistent"
    ) == ["Max size must be larger than size"]
    valid(resident(resident_volume(type="mount", maxSize=20)))


def test_persistent_volume_constraints():
    only(
        resident(resident_volume(constraints=[["path", "LIKE", "ssd"]])),
        "/container/volumes(0)/persistent",
        "Constraints on root volumes are not supported",
    )
    assert details(
        resident(
            resident_volume(
                type="path",
                constraints=[
                    ["path", "LIKE", "ssd.*"],
                    ["path", "UNIQUE", "x"],
                    ["path", "FOO", "x"],
                    ["rack", "LIKE", "x"],
                    ["path", "LIKE", "(("],
                    [],
                ],
            )
        )
    ) == [
        {
            "path": "/container/volumes(0)/persistent/constraints(1)",
            "errors": ["Operator must be one of LIKE, UNLIKE"],
        },
        {
            "path": "/container/volumes(0)/persistent/constraints(2)",
            "errors": ["unknown constraint operator FOO"],
        },
        {
            "path": "/container/volumes(0)/persistent/constraints(3)",
            "errors": ["Unsupported constraint rack,LIKE,x"],
        },
        {
            "path": "/container/volumes(0)/persistent/constraints(4)",
            "errors": ["Invalid regular expression"],
        },
        {
            "path": "/container/volumes(0)/persistent/constraints(5)",
            "errors": ["Missing field and operator"],
        },
    ]


def external(name: str = "vol", provider: str = "dvdi", container_path: str = "/data") -> dict:
    return {
        "containerPath": container_path,
        "mode": "RW",
        "external": {"name": name, "provider": provider},
    }


def test_external_volumes_need_the_feature_a_known_provider_and_unique_names():
    body = app(
        container={"type": "MESOS", "volumes": [external(), external(name="other", provider="nfs",
                                                                   container_path="/other")]}
    )
    assert details(body) == [
        {
            "path": "/container/volumes(0)",
            "errors": [
                "Feature external_volumes is not enabled. Enable with --enable_features external_volumes)"
            ],
        },
        {
            "path": "/container/volumes(1)",
            "errors": [
                "Feature external_volumes is not enabled. Enable with --enable_features external_volumes)"
            ],
        },
        {"path": "/container/volumes(1)/external/provider", "errors": ["is unknown provider"]},
    ]
    dup = app(container={"type": "MESOS", "volumes": [external(), external(container_path="/data2")]})
    only(
        dup,
        "/container/volumes",
        "Volume names must be unique",
        features=frozenset({"external_volumes"}),
    )


def test_secret_volumes_need_the_feature_and_a_declared_secret():
    body = app(container={"type": "MESOS", "volumes": [{"containerPath": "/s", "secret": "pw"}]})
    assert details(body) == [
        {
            "path": "/container/volumes",
            "errors": ["Feature secrets is not enabled. Enable with --enable_features secrets)"],
        },
        {
            "path": "/container/volumes(0)",
            "errors": ["volume.secret must refer to an existing secret"],
        },
    ]
    valid({**body, "secrets": {"pw": {"source": "/x"}}}, features=SECRETS)


def test_host_volume_paths_may_not_be_empty():
    body = app(container=docker(volumes=[{"containerPath": "/d", "hostPath": "", "mode": "RO"}]))
    only(body, "/container/volumes(0)/hostPath", "must not be empty")


# -- resource limits -------------------------------------------------------------------------------


def test_resource_limits_are_at_least_the_request():
    assert details(app(cpus=2, mem=256, resourceLimits={"cpus": 1, "mem": 128})) == [
        {
            "path": "/resourceLimits/cpus",
            "errors": [
                "resource limit must be greater than or equal to the requested amount (2.0)"
            ],
        },
        {
            "path": "/resourceLimits/mem",
            "errors": [
                "resource limit must be greater than or equal to the requested amount (256.0)"
            ],
        },
    ]
    valid(app(cpus=2, resourceLimits={"cpus": "unlimited", "mem": 128}))


# -- reporting --------------------------------------------------------------------------------------


def test_every_canonical_violation_is_reported_together():
    body = {
        "id": "/app",
        "portDefinitions": [{"name": "a"}, {"name": "a"}],
        "healthChecks": [{"protocol": "HTTP", "portIndex": 5}],
        "gpus": 1,
        "constraints": [["hostname", "BOGUS"]],
        "networks": [{"mode": "host", "name": "h"}],
    }
    assert details(body) == [
        {
            "path": "/",
            "errors": [
                CMD_OR_CONTAINER,
                "Feature gpu_resources is not enabled. Enable with --enable_features gpu_resources)",
            ],
        },
        {"path": "/portDefinitions", "errors": ["Port names must be unique."]},
        {"path": "/healthChecks(0)", "errors": [PORT_INDEX]},
        {"path": "/constraints(0)", "errors": [constraint.MSG_OPERATOR]},
        {"path": "/networks", "errors": ["Host networks may not have names or labels"]},
    ]


def test_role_rules_run_only_once_the_canonical_rules_pass():
    only({"id": "/app", "role": "wrong"}, "/", CMD_OR_CONTAINER)


def test_mount_points_and_fetch_targets_stay_where_they_belong():
    """A relative host path, a containerPath or destPath leading out of the
    sandbox, two volumes on one mount point: 422 with the field's path."""
    def vol(cp, hp="/srv/data", **kw):
        return {"containerPath": cp, "hostPath": hp, "mode": "RO", **kw}

    bad = app(container={"type": "MESOS", "volumes": [
        vol("data", hp="relative/dir"), vol("../escape"), vol("/etc/x"), vol("/etc/x/")]},
        fetch=[{"uri": "http://h/a.tgz", "destPath": "../a.tgz"}, {"uri": "http://h/b", "destPath": "/etc/b"}])
    found = {(d["path"], tuple(d["errors"])) for d in details(bad)}
    assert found == {
        ("/container/volumes(0)/hostPath", ("must be an absolute path",)),
        ("/container/volumes(1)/containerPath", ("must not lead out of the sandbox",)),
        ("/container/volumes(3)/containerPath", ("is already the mount point of another volume",)),
        ("/fetch(0)/destPath", ("must be a relative path inside the sandbox",)),
        ("/fetch(1)/destPath", ("must be a relative path inside the sandbox",)),
    }
    valid(app(container={"type": "MESOS", "volumes": [vol("data"), vol("/etc/x"), vol("sub/../logs")]},
              fetch=[{"uri": "http://h/a.tgz", "destPath": "lib/a.tgz"}]))
