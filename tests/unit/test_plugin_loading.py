"""Plugin loading (descriptor, --plugin_dir, entry points) and every hook seen from a running server."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import trio

from marathon.plugins import PluginError, load_plugins
from marathon.testing import InProcess

PLUGIN_MODULE = '''
import trio
from marathon.hookspecs import PluginResponse, PolicyViolation, hookimpl

SEEN = {"configured": None, "events": [], "service_started": False}


class Hello:
    async def handle(self, request):
        return PluginResponse(status=200, body=b"hello " + request.path.encode(), content_type="text/plain")


class Service:
    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED):
        SEEN["service_started"] = True
        task_status.started()
        await trio.sleep_forever()


class Everything:
    @hookimpl
    def marathon_configure(self, plugin_id, configuration, marathon_info):
        if configuration.get("refuse"):
            raise ValueError("refused on purpose")
        SEEN["configured"] = (plugin_id, dict(configuration), dict(marathon_info))

    @hookimpl
    def marathon_validate_app(self, app):
        if app.cmd and "forbidden" in app.cmd:
            return [PolicyViolation("/cmd", "commands containing 'forbidden' are not allowed")]
        return []

    @hookimpl
    def marathon_task_adjust(self, app, task):
        task.env["INJECTED_BY_PLUGIN"] = "yes"
        task.labels["audited"] = "true"

    @hookimpl
    def marathon_event_observe(self, event):
        SEEN["events"].append(event.event_type)

    @hookimpl
    def marathon_background_services(self):
        return [Service()]

    @hookimpl
    def marathon_http_handlers(self):
        return {"everything": Hello()}
'''


@pytest.fixture
def plugin_dir(tmp_path):
    d = tmp_path / "plugins"
    d.mkdir()
    (d / "everything_plugin.py").write_text(PLUGIN_MODULE)
    yield d
    sys.modules.pop("everything_plugin", None)


def descriptor(tmp_path, plugins: dict) -> str:
    path = tmp_path / "plugins.json"
    path.write_text(json.dumps({"plugins": plugins}))
    return str(path)


EVERYTHING = {"everything": {"plugin": "everything", "implementation": "everything_plugin:Everything",
                             "configuration": {"greeting": "hi"}, "tags": ["test"], "info": {"v": 1}}}


def test_descriptor_plugin_is_loaded_and_configured(tmp_path, plugin_dir):
    loaded = load_plugins(descriptor=descriptor(tmp_path, EVERYTHING), plugin_dir=str(plugin_dir), framework_name="mara")
    import everything_plugin

    assert everything_plugin.SEEN["configured"] == ("everything", {"greeting": "hi"}, {"frameworkName": "mara"})
    assert loaded.has("marathon_validate_app") and [e.id for e in loaded.entries] == ["everything"]
    assert loaded.entries[0].json() == {"id": "everything", "plugin": "everything",
                                        "implementation": "everything_plugin:Everything", "tags": ["test"], "info": {"v": 1}}


def test_disabled_plugin_is_not_loaded(tmp_path, plugin_dir):
    spec = {"everything": dict(EVERYTHING["everything"], enabled=False)}
    loaded = load_plugins(descriptor=descriptor(tmp_path, spec), plugin_dir=str(plugin_dir))
    assert loaded.entries == [] and not loaded.has("marathon_validate_app")


@pytest.mark.parametrize(
    "module,spec,message",
    [
        ("from marathon.hookspecs import hookimpl\nclass P:\n    @hookimpl\n    def marathon_validate_ap(self, app):\n        return []\n",
         {"implementation": "bad_plugin:P"}, "unknown hook 'marathon_validate_ap'"),
        ("from marathon.hookspecs import hookimpl\nclass P:\n    @hookimpl\n    def marathon_validate_app(self, application):\n        return []\n",
         {"implementation": "bad_plugin:P"}, "can not be found in the hookspec"),
        ("raise RuntimeError('broken at import')\n", {"implementation": "bad_plugin:P"}, "broken at import"),
        ("class P: pass\n", {"plugin": "no-such-entry-point"}, "Plugin not found: 'no-such-entry-point'"),
        ("class P: pass\n", {"implementation": "bad_plugin:Missing"}, "Missing"),
    ],
    ids=["misspelled hook", "wrong argument", "import error", "unknown entry point", "missing attribute"],
)
def test_broken_plugins_stop_start_up_with_a_clear_message(tmp_path, module, spec, message):
    d = tmp_path / "broken"
    d.mkdir()
    (d / "bad_plugin.py").write_text(module)
    try:
        with pytest.raises(PluginError, match=message.replace("(", r"\(").replace("'", ".")):
            load_plugins(descriptor=descriptor(tmp_path, {"bad": spec}), plugin_dir=str(d))
    finally:
        sys.modules.pop("bad_plugin", None)


def test_refused_configuration_stops_start_up(tmp_path, plugin_dir):
    spec = {"everything": dict(EVERYTHING["everything"], configuration={"refuse": True})}
    with pytest.raises(PluginError, match="refused its configuration: refused on purpose"):
        load_plugins(descriptor=descriptor(tmp_path, spec), plugin_dir=str(plugin_dir))


def test_at_most_one_authenticator(tmp_path):
    d = tmp_path / "auths"
    d.mkdir()
    (d / "two_auths.py").write_text(textwrap.dedent('''
        from marathon.hookspecs import hookimpl
        class A:
            @hookimpl
            def marathon_auth_authenticate(self, request):
                return None
        class B(A):
            pass
    '''))
    spec = {"a": {"implementation": "two_auths:A"}, "b": {"implementation": "two_auths:B"}}
    try:
        with pytest.raises(PluginError, match="at most one plugin may implement marathon_auth_authenticate"):
            load_plugins(descriptor=descriptor(tmp_path, spec), plugin_dir=str(d))
    finally:
        sys.modules.pop("two_auths", None)


def test_server_exits_102_for_a_broken_plugin(tmp_path):
    d = tmp_path / "broken"
    d.mkdir()
    (d / "bad_plugin.py").write_text("from marathon.hookspecs import hookimpl\nclass P:\n    @hookimpl\n    def marathon_nope(self):\n        pass\n")
    conf = descriptor(tmp_path, {"bad": {"implementation": "bad_plugin:P"}})
    r = subprocess.run(
        [sys.executable, "-m", "marathon", "serve", "--store", "memory", "--data_dir", str(tmp_path / "d"),
         "--http_port", "0", "--plugin_dir", str(d), "--plugin_conf", conf],
        capture_output=True, text=True, timeout=60,
    )
    assert r.returncode == 102, r.stderr
    assert "plugin initialization failed" in r.stderr and "marathon_nope" in r.stderr


async def test_every_hook_reaches_a_running_server(autojump_clock, tmp_path, plugin_dir):
    conf = descriptor(tmp_path, EVERYTHING)
    async with InProcess.start(agents=2, plugin_conf=conf, plugin_dir=str(plugin_dir)) as m:
        import everything_plugin

        seen = everything_plugin.SEEN
        assert seen["service_started"]
        r = await m.client.get("/v2/plugins")
        assert r.json()["plugins"][0]["id"] == "everything"
        r = await m.client.get("/v2/plugins/everything/some/path")
        assert (r.status_code, r.text) == (200, "hello some/path")
        r = await m.client.get("/v2/plugins/nobody/x")
        assert r.status_code == 404 and r.json()["message"] == "No plugin with this pluginId: nobody"

        r = await m.client.post("/v2/apps", json={"id": "/bad", "cmd": "run forbidden things", "cpus": 0.1, "mem": 8})
        assert r.status_code == 422
        assert r.json() == {"message": "Object is not valid",
                            "details": [{"path": "/cmd", "errors": ["commands containing 'forbidden' are not allowed"]}]}
        assert m.services.groups.app("/bad") is None

        r = await m.client.post("/v2/apps", json={"id": "/ok", "cmd": "sleep 1000", "cpus": 0.1, "mem": 8,
                                                  "env": {"OWN": "1"}})
        assert r.status_code == 201
        with trio.fail_after(60):
            await m.settle()
        (task_id,) = m.driver.live_task_ids()
        launch = m.driver._tasks[task_id].launch
        assert launch.env["INJECTED_BY_PLUGIN"] == "yes" and launch.env["OWN"] == "1"
        assert launch.labels["audited"] == "true"
        assert "deployment_success" in seen["events"] and "api_post_event" in seen["events"]
