"""The task environment and launch description (SPEC.md 8.5)."""

from __future__ import annotations

from marathon.models.app import AppDefinition, PortDefinition
from marathon.models.instance import Instance, InstanceState, Task
from marathon.task_builder import build_launch

V = "2024-05-06T07:08:09.010Z"


def launch_of(app: AppDefinition, ports=(31001, 31002), prefix=None):
    inst = Instance(
        instance_id="prod_web.instance-1",
        run_spec_id=app.id,
        run_spec_version=V,
        state=InstanceState(condition="Provisioned", since=0),
        agent_id="agent-1",
        hostname="node1",
        task=Task(task_id="prod_web.instance-1._app.1", condition="Provisioned", host_ports=list(ports)),
    )
    return build_launch(app, inst, env_vars_prefix=prefix)


APP = AppDefinition(
    id="/prod/web",
    cmd="serve",
    version=V,
    cpus=0.1,
    mem=32,
    labels={"tier": "front-end", "a.b": "c"},
    env={"PORT0": "user-wins", "X": "1"},
    port_definitions=[PortDefinition(port=10000, name="http"), PortDefinition(port=0)],
)


def test_marathon_variables():
    env = launch_of(APP).env
    assert env["MESOS_TASK_ID"] == "prod_web.instance-1._app.1"
    assert env["MARATHON_APP_ID"] == "/prod/web"
    assert env["MARATHON_APP_VERSION"] == V
    assert env["MARATHON_APP_RESOURCE_CPUS"] == "0.1"
    assert env["MARATHON_APP_RESOURCE_MEM"] == "32.0"
    assert env["MARATHON_APP_RESOURCE_GPUS"] == "0"
    assert env["MARATHON_APP_LABELS"] == "TIER A_B"
    assert env["MARATHON_APP_LABEL_TIER"] == "front-end"
    assert env["HOST"] == "node1"


def test_port_variables_and_user_env_wins():
    env = launch_of(APP).env
    assert env["PORT0"] == "user-wins"  # the user's env is applied last
    assert env["PORT1"] == "31002"
    assert env["PORT_10000"] == "31001"
    assert env["PORT_31002"] == "31002"  # requested 0: named after the effective port
    assert env["PORT_HTTP"] == "31001"
    assert env["PORT"] == "31001" and env["PORTS"] == "31001,31002"


def test_prefix_applies_to_port_and_host_variables():
    env = launch_of(AppDefinition(id="/prod/web", cmd="x", version=V, port_definitions=[PortDefinition(port=0)]), ports=[31000], prefix="MY_").env
    assert env["MY_PORT0"] == "31000" and env["MY_HOST"] == "node1" and "PORT0" not in env


def test_no_port_variables_without_ports():
    env = launch_of(AppDefinition(id="/prod/web", cmd="x", version=V, port_definitions=[]), ports=[]).env
    assert not any(k.startswith("PORT") for k in env)


def test_shell_command_vs_args():
    assert launch_of(APP).shell and launch_of(APP).command == "serve"
    argv = launch_of(AppDefinition(id="/prod/web", args=["/bin/echo", "hi"], version=V, port_definitions=[]), ports=[])
    assert not argv.shell and argv.argv == ["/bin/echo", "hi"]


def test_kill_grace_defaults_to_three_seconds():
    assert launch_of(APP).kill_grace_seconds == 3.0
    app = AppDefinition(id="/prod/web", cmd="x", version=V, port_definitions=[], task_kill_grace_period_seconds=7)
    assert launch_of(app, ports=[]).kill_grace_seconds == 7.0


def test_launches_of_one_version_share_a_template_that_follows_the_definition():
    import msgspec

    first, second = launch_of(APP), launch_of(APP, ports=(31005, 31006))
    assert first.labels is second.labels and first.labels == {"tier": "front-end", "a.b": "c"}
    assert (first.host_ports, second.host_ports) == ([31001, 31002], [31005, 31006])
    assert first.env["PORT0"] == "user-wins" and first.env["HOST"] == "node1"
    # The same id and version in a different definition (a store restored
    # under us, a test) is never served the other one's template.
    other = msgspec.structs.replace(APP, cmd="other", cpus=2.0, labels={})
    changed = launch_of(other)
    assert (changed.command, changed.cpus, changed.labels) == ("other", 2.0, {})
    assert changed.env["MARATHON_APP_RESOURCE_CPUS"] == "2.0"
    # An equal definition in another object gets the same launch.
    again = launch_of(msgspec.structs.replace(APP))
    assert msgspec.structs.asdict(again) == msgspec.structs.asdict(first)


def test_the_mesos_check_goes_with_the_launch_with_its_port_resolved():
    from marathon.models.app_decode import decode_app
    from marathon.models.launch import AgentCheck

    def check_of(check: dict):
        app = decode_app({"id": "/prod/web", "cmd": "serve", "portDefinitions": [{"port": 0}, {"port": 0}],
                          "check": check})
        return launch_of(app).check

    assert check_of({"http": {"portIndex": 1, "path": "/ready", "scheme": "HTTPS"}, "intervalSeconds": 5}) == \
        AgentCheck(protocol="HTTP", port=31002, path="/ready", https=True, interval_seconds=5.0)
    assert check_of({"tcp": {"port": 8080}}) == AgentCheck(protocol="TCP", port=8080)
    assert check_of({"exec": {"command": {"value": "test -f ready"}}, "delaySeconds": 0}) == \
        AgentCheck(protocol="COMMAND", command="test -f ready", delay_seconds=0.0)
    assert launch_of(APP).check is None
