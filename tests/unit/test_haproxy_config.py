"""The built-in haproxy generator and the `marathon lb` sync logic, without processes.

Rendering is a pure function of apps, tasks and options; the sync logic is
driven with a fake target (a config is "invalid" when it contains a marker)
and a fake Marathon under trio's MockClock.  When haproxy is installed,
rendered configs are also run through `haproxy -c`.
"""

from __future__ import annotations

import random
import re
import shutil
import subprocess
from contextlib import asynccontextmanager
from pathlib import Path

import msgspec
import pytest
import trio

from marathon.builtin import haproxy
from marathon.cli import lb
from marathon.hookspecs import BackendTask, hookimpl
from marathon.models.app import AppDefinition
from marathon.plugins import plugin_manager


def app(app_id: str, *ports: int, labels: dict | None = None, checks: list | None = None, **extra) -> AppDefinition:
    body = {"id": app_id, "portDefinitions": [{"port": p} for p in ports], "labels": labels or {},
            "healthChecks": checks or [], **extra}
    return msgspec.convert(body, AppDefinition)


def task(task_id: str, *ports: int, host: str = "127.0.0.1", healthy: bool | None = None) -> BackendTask:
    return BackendTask(task_id=task_id, host=host, ports=ports, healthy=healthy)


def render(apps, tasks=None, **options) -> str:
    return haproxy.render(apps, tasks or {}, options)


def section(text: str, header: str) -> list[str]:
    """The lines of one section (`frontend x`, `backend x`), stripped."""
    lines = text.splitlines()
    start = lines.index(header)
    out = []
    for line in lines[start + 1:]:
        if not line.startswith("    "):
            break
        out.append(line.strip())
    return out


HAPROXY = shutil.which("haproxy")


def haproxy_accepts(text: str, tmp_path: Path) -> tuple[bool, str]:
    path = tmp_path / "candidate.cfg"
    path.write_text(text)
    r = subprocess.run([HAPROXY, "-c", "-f", str(path)], capture_output=True, text=True)
    return r.returncode == 0, r.stdout + r.stderr


# -- frontends, backends, names ---------------------------------------------------------------


def test_each_service_port_becomes_a_frontend_with_its_tasks_as_servers():
    text = render([app("/a/b", 10000, 10001)], {"/a/b": [task("t1", 31000, 31001), task("t2", 31002, 31003)]})
    assert section(text, "frontend a_b_10000") == ["bind 127.0.0.1:10000", "mode tcp", "default_backend a_b_10000"]
    assert section(text, "backend a_b_10000") == [
        "mode tcp", "balance roundrobin", "server t1 127.0.0.1:31000", "server t2 127.0.0.1:31002",
    ]
    assert "server t1 127.0.0.1:31001" in section(text, "backend a_b_10001")
    assert text.startswith("# Generated") and "\nglobal\n" in text and "\ndefaults\n" in text


def test_bind_address_from_options_and_labels_override_port_and_address():
    text = render([app("/web", 10000, labels={"HAPROXY_0_PORT": "8081"})], bind="0.0.0.0")
    assert "frontend web_8081" in text and "bind 0.0.0.0:8081" in text and "10000" not in text
    text = render([app("/web", 10000, labels={"HAPROXY_0_BIND_ADDR": "10.0.0.42"})])
    assert "bind 10.0.0.42:10000" in text


def test_bad_port_label_is_ignored_with_a_comment():
    text = render([app("/web", 10000, labels={"HAPROXY_0_PORT": "eighty"})])
    assert "bind 127.0.0.1:10000" in text
    assert "# ignored HAPROXY_0_PORT 'eighty': not a port" in text


def test_names_are_sanitized_from_app_id_and_port():
    assert haproxy.sanitize("/a/b") == "a_b"
    assert haproxy.sanitize("/prod/web.v2-x") == "prod_web.v2-x"
    text = render([app("/a/b", 10000)], {"/a/b": [task("web.instance-1 x._app.1", 31000)]})
    assert "frontend a_b_10000" in text and "backend a_b_10000" in text
    assert "server web.instance-1_x._app.1 127.0.0.1:31000" in text


def test_app_without_service_ports_is_not_exposed():
    assert "frontend" not in render([app("/worker")])


def test_app_without_tasks_keeps_its_port_with_an_empty_backend():
    text = render([app("/web", 10000)])
    assert section(text, "backend web_10000") == ["mode tcp", "balance roundrobin"]


def test_enabled_false_hides_one_port():
    text = render([app("/web", 10000, 10001, labels={"HAPROXY_1_ENABLED": "false"})])
    assert "web_10000" in text and "web_10001" not in text


def test_balance_label_and_sticky_cookies_in_http_mode():
    labels = {"HAPROXY_0_BALANCE": "leastconn", "HAPROXY_0_MODE": "http", "HAPROXY_0_STICKY": "true"}
    text = render([app("/web", 10000, labels=labels)], {"/web": [task("t1", 31000)]})
    backend = section(text, "backend web_10000")
    assert "balance leastconn" in backend and "option forwardfor" in backend
    assert "cookie MARATHON_LB_SERVER insert indirect nocache" in backend
    assert "server t1 127.0.0.1:31000 cookie t1" in backend


# -- modes --------------------------------------------------------------------------------------


def test_mode_is_tcp_by_default():
    assert "mode tcp" in section(render([app("/web", 10000)]), "frontend web_10000")


def test_http_health_check_makes_the_port_http_like_marathon_lb():
    checks = [{"protocol": "HTTP", "path": "/health", "portIndex": 1}]
    text = render([app("/web", 10000, 10001, checks=checks)])
    assert "mode tcp" in section(text, "frontend web_10000")
    assert "mode http" in section(text, "frontend web_10001")
    assert "option httpchk GET /health" in section(text, "backend web_10001")


def test_vhost_makes_the_port_http():
    text = render([app("/web", 10000, labels={"HAPROXY_0_VHOST": "web.example.com"})])
    assert "mode http" in section(text, "frontend web_10000")


def test_explicit_mode_label_wins_and_bad_values_are_ignored():
    checks = [{"protocol": "HTTP", "portIndex": 0}]
    text = render([app("/web", 10000, labels={"HAPROXY_0_MODE": "TCP"}, checks=checks)])
    assert "mode tcp" in section(text, "frontend web_10000")
    text = render([app("/web", 10000, labels={"HAPROXY_0_MODE": "udp"})])
    assert "mode tcp" in section(text, "frontend web_10000")
    assert "# ignored HAPROXY_0_MODE 'udp': use http or tcp" in text


# -- virtual hosts ------------------------------------------------------------------------------


def test_vhosts_route_on_a_shared_http_frontend_by_host_header():
    apps = [
        app("/web", 10000, labels={"HAPROXY_0_VHOST": "Web.Example.com, www.example.com"}),
        app("/api", 10001, labels={"HAPROXY_0_VHOST": "api.example.com", "HAPROXY_0_PATH": "/v1 /v2"}),
    ]
    text = render(apps, http_port=8080)
    front = section(text, "frontend marathon_http_in")
    assert front[:3] == [
        "bind 127.0.0.1:8080", "mode http", "http-request set-var(txn.vhost) req.hdr(host),field(1,:),lower",
    ]
    assert "acl host_web_10000 var(txn.vhost) -m str web.example.com www.example.com" in front
    assert "acl path_api_10001 path_beg /v1 /v2" in front
    rules = [line for line in front if line.startswith("use_backend")]
    # Rules with a path are more specific: they come first.
    assert rules == ["use_backend api_10001 if host_api_10001 path_api_10001", "use_backend web_10000 if host_web_10000"]
    # The app keeps its own service-port frontend too.
    assert "frontend web_10000" in text


def test_backend_weight_orders_vhost_rules():
    apps = [
        app("/a", 10000, labels={"HAPROXY_0_VHOST": "x.example.com"}),
        app("/b", 10001, labels={"HAPROXY_0_VHOST": "x.example.com", "HAPROXY_0_BACKEND_WEIGHT": "5"}),
    ]
    rules = [line for line in section(render(apps), "frontend marathon_http_in") if line.startswith("use_backend")]
    assert rules == ["use_backend b_10001 if host_b_10001", "use_backend a_10000 if host_a_10000"]


def test_no_http_frontend_without_vhosts_and_none_for_tcp_mode_vhosts():
    assert "marathon_http_in" not in render([app("/web", 10000)])
    text = render([app("/web", 10000, labels={"HAPROXY_0_VHOST": "web.example.com", "HAPROXY_0_MODE": "tcp"})])
    assert "marathon_http_in" not in text
    assert "# virtual hosts need http mode" in text


# -- groups -------------------------------------------------------------------------------------


GROUPED = [
    app("/plain", 10000),
    app("/ext", 10001, labels={"HAPROXY_GROUP": "external"}),
    app("/int", 10002, labels={"HAPROXY_GROUP": "internal, other"}),
    app("/mixed", 10003, 10004, labels={"HAPROXY_GROUP": "internal", "HAPROXY_1_GROUP": "external"}),
]


def exposed(text: str) -> set[str]:
    return set(re.findall(r"^frontend (\S+)$", text, re.M))


def test_default_group_external_includes_unlabelled_apps():
    assert exposed(render(GROUPED)) == {"plain_10000", "ext_10001", "mixed_10004"}


def test_other_group_selects_only_apps_labelled_with_it():
    assert exposed(render(GROUPED, group="internal")) == {"int_10002", "mixed_10003"}
    assert exposed(render(GROUPED, group="other,external")) == {"plain_10000", "ext_10001", "int_10002", "mixed_10004"}


def test_star_selects_every_app_and_empty_default_group_is_marathon_lb_strict():
    assert len(exposed(render(GROUPED, group="*"))) == 5
    assert exposed(render(GROUPED, default_group="")) == {"ext_10001", "mixed_10004"}


# -- tasks --------------------------------------------------------------------------------------


def test_unhealthy_tasks_and_tasks_without_the_port_are_left_out():
    tasks = {"/web": [task("ok", 31000, 31001, healthy=True), task("sick", 31002, 31003, healthy=False), task("one", 31004)]}
    text = render([app("/web", 10000, 10001)], tasks)
    assert [line.split()[1] for line in section(text, "backend web_10000") if line.startswith("server")] == ["ok", "one"]
    assert [line.split()[1] for line in section(text, "backend web_10001") if line.startswith("server")] == ["ok"]


def test_ipv6_hosts_and_unsafe_hosts():
    tasks = {"/web": [task("v6", 31000, host="::1"), task("evil", 31001, host="a b\n    server x")]}
    backend = section(render([app("/web", 10000)], tasks), "backend web_10000")
    assert backend[-1] == "server v6 ipv6@::1:31000" and not any("evil" in line for line in backend)


def test_marathon_tcp_check_is_mirrored_as_an_haproxy_check():
    checks = [{"protocol": "TCP", "intervalSeconds": 5, "maxConsecutiveFailures": 2}]
    text = render([app("/web", 10000, checks=checks)], {"/web": [task("t1", 31000, healthy=True)]})
    assert "server t1 127.0.0.1:31000 check inter 5s fall 2" in text
    assert "httpchk" not in text and "mode tcp" in text


# -- safety and determinism -------------------------------------------------------------------------


def test_labels_cannot_inject_directives():
    labels = {"HAPROXY_0_BALANCE": "roundrobin\n    server rogue 1.2.3.4:80", "HAPROXY_0_VHOST": "a.com,b.com#x"}
    text = render([app("/web", 10000, labels=labels)])
    assert "rogue" not in text.replace("# ignored", "")
    assert "balance roundrobin" in text
    assert "# ignored HAPROXY_0_BALANCE: control characters or '#'" in text


def test_port_collisions_keep_the_first_app_id():
    text = render([app("/b", 10000), app("/a", 10000), app("/v", 10001, labels={"HAPROXY_0_PORT": "80"}),
                   app("/w", 10002, labels={"HAPROXY_0_VHOST": "w.example.com"})])
    assert exposed(text) == {"a_10000", "w_10002", "marathon_http_in"}
    assert "# /b port index 0: port 10000 already used by a_10000; skipped" in text
    assert "# /v port index 0: port 80 already used by marathon_http_in; skipped" in text


def test_output_is_deterministic():
    apps = [app(f"/g{i % 3}/app{i}", 10000 + i, labels={"HAPROXY_0_VHOST": f"h{i}.example.com"} if i % 2 else {})
            for i in range(12)]
    tasks = {a.id: [task(f"{a.id[1:]}.t{j}", 31000 + 10 * j + k, host=f"10.0.0.{j}") for j in range(4)]
             for k, a in enumerate(apps)}
    first = render(apps, tasks)
    rng = random.Random(7)
    for _ in range(5):
        shuffled_apps = rng.sample(apps, len(apps))
        shuffled_tasks = {k: rng.sample(v, len(v)) for k, v in rng.sample(sorted(tasks.items()), len(tasks))}
        assert render(shuffled_apps, shuffled_tasks) == first


def test_stats_socket_and_page_from_options():
    text = render([app("/web", 10000)], stats_socket="/run/hap.sock", stats_port=9090)
    assert "    stats socket /run/hap.sock mode 600 level admin expose-fd listeners" in text
    assert section(text, "listen stats")[0] == "bind 127.0.0.1:9090"
    assert "stats socket" not in render([app("/web", 10000)])


@pytest.mark.skipif(HAPROXY is None, reason="haproxy is not installed (scripts/install-system-deps.sh)")
def test_haproxy_accepts_a_config_using_every_label(tmp_path):
    labels = {"HAPROXY_GROUP": "external", "HAPROXY_0_VHOST": "a.example.com,b.example.com", "HAPROXY_0_PATH": "/api",
              "HAPROXY_0_STICKY": "true", "HAPROXY_0_BALANCE": "leastconn", "HAPROXY_0_BACKEND_WEIGHT": "3",
              "HAPROXY_1_MODE": "tcp", "HAPROXY_1_PORT": "18001", "HAPROXY_1_BIND_ADDR": "127.0.0.2"}
    apps = [app("/a/web", 18000, 18002, labels=labels, checks=[{"protocol": "HTTP", "path": "/h"}, {"protocol": "TCP", "portIndex": 1}]),
            app("/b", 18003, labels={"HAPROXY_0_VHOST": "c.example.com"})]
    tasks = {"/a/web": [task("t1", 31000, 31001, healthy=True), task("t2", 31002, 31003, host="::1", healthy=True)],
             "/b": [task("t3", 31004)]}
    text = render(apps, tasks, stats_socket=str(tmp_path / "s.sock"), stats_port=18009, http_port=18080)
    ok, output = haproxy_accepts(text, tmp_path)
    assert ok, output + text
    bad = render([app("/x", 18000, labels={"HAPROXY_0_BALANCE": "bogus"})])
    assert not haproxy_accepts(bad, tmp_path)[0]


# -- generators through the hook ---------------------------------------------------------------------


class NginxPlugin:
    class Generator:
        name = "nginx"

        def render(self, apps, tasks, options):
            return "".join(f"upstream {haproxy.sanitize(a.id)} {{}}\n" for a in sorted(apps, key=lambda a: a.id))

    @hookimpl
    def marathon_lb_generators(self):
        return {"nginx": self.Generator()}


class ReplacesHaproxy:
    @hookimpl
    def marathon_lb_generators(self):
        return {"haproxy": NginxPlugin.Generator()}


def test_builtin_and_plugin_generators_come_from_the_hook():
    known = lb.generators(plugin_manager())
    assert set(known) == {"haproxy"} and known["haproxy"] is haproxy.GENERATOR
    known = lb.generators(plugin_manager([("nginx", NginxPlugin())]))
    assert set(known) == {"haproxy", "nginx"}
    assert known["nginx"].render([app("/a/b", 1)], {}, {}) == "upstream a_b {}\n"
    assert lb.generators(plugin_manager([("x", ReplacesHaproxy())]))["haproxy"].name == "nginx"


def test_unknown_generator_is_a_usage_error_listing_known_ones(capsys):
    assert lb.main(["nginx", "--marathon", "http://127.0.0.1:9"]) == 2
    assert "unknown generator 'nginx'; known: haproxy" in capsys.readouterr().err


# -- reading /v2/apps -----------------------------------------------------------------------------


def test_parse_apps_keeps_running_tasks_and_healthy_ones_of_checked_apps():
    body = msgspec.json.encode({"apps": [
        {"id": "/plain", "portDefinitions": [{"port": 10000}], "tasksRunning": 2, "tasks": [
            {"id": "p1", "host": "h1", "state": "TASK_RUNNING", "ports": [31000]},
            {"id": "p2", "host": "h2", "state": "TASK_STAGING", "ports": [31001]},
            {"id": "p3", "host": "", "state": "TASK_RUNNING", "ports": [31002]},
        ]},
        {"id": "/checked", "portDefinitions": [{"port": 10001}], "healthChecks": [{"protocol": "HTTP"}], "tasks": [
            {"id": "c1", "host": "h1", "state": "TASK_RUNNING", "ports": [31003], "healthCheckResults": [{"alive": True}]},
            {"id": "c2", "host": "h1", "state": "TASK_RUNNING", "ports": [31004], "healthCheckResults": [{"alive": False}]},
            {"id": "c3", "host": "h1", "state": "TASK_RUNNING", "ports": [31005], "healthCheckResults": []},
        ]},
        {"id": "/broken", "instances": -1},
    ]})
    state = lb.parse_apps(body)
    assert [a.id for a in state.apps] == ["/plain", "/checked"]
    assert state.tasks["/plain"] == [BackendTask(task_id="p1", host="h1", ports=(31000,), healthy=None)]
    assert state.tasks["/checked"] == [BackendTask(task_id="c1", host="h1", ports=(31003,), healthy=True)]


# -- applying: validation, bisection, no-op on unchanged ----------------------------------------------


class FakeTarget:
    """A config is invalid when it contains `balance bogus` (or all of `broken`)."""

    def __init__(self, broken: str = "balance bogus") -> None:
        self.broken = broken
        self.applied: list[str] = []
        self.validations = 0

    def current(self):
        return self.applied[-1] if self.applied else None

    async def validate(self, text):
        self.validations += 1
        return "invalid: " + self.broken if self.broken in text else None

    async def apply(self, text):
        problem = await self.validate(text)
        if problem is None:
            self.applied.append(text)
        return problem


def state_of(*apps: AppDefinition, tasks=None) -> lb.State:
    return lb.State(list(apps), tasks or {})


async def test_valid_config_is_applied_once_and_unchanged_text_is_not_reapplied():
    target = FakeTarget()
    syncer = lb.Syncer(haproxy.GENERATOR, {}, target)
    state = state_of(app("/web", 10000), tasks={"/web": [task("t1", 31000)]})
    assert (await syncer.sync(state)).changed
    assert not (await syncer.sync(state)).changed
    assert len(target.applied) == 1 and "server t1" in target.applied[0]


async def test_apps_breaking_the_config_are_left_out_and_later_updates_still_apply():
    target = FakeTarget()
    syncer = lb.Syncer(haproxy.GENERATOR, {}, target)
    good = [app(f"/ok{i}", 10000 + i) for i in range(20)]
    bad = app("/bad", 11000, labels={"HAPROXY_0_BALANCE": "bogus"})
    result = await syncer.sync(state_of(*good, bad))
    assert result.changed and not result.ok and result.excluded == ["/bad"]
    assert "ok19_10019" in target.applied[-1] and "bad_11000" not in target.applied[-1]
    assert target.validations < 20, "bisection, not one check per app"

    # A later change (a new task) still gets through, bad app still out, cheaply.
    before = target.validations
    result = await syncer.sync(state_of(*good, bad, tasks={"/ok3": [task("new", 31000)]}))
    assert result.changed and result.excluded == ["/bad"] and "server new" in target.applied[-1]
    assert target.validations - before <= 4

    # Fixed: the app comes back.
    fixed = app("/bad", 11000, labels={"HAPROXY_0_BALANCE": "leastconn"})
    result = await syncer.sync(state_of(*good, fixed))
    assert result.ok and "bad_11000" in target.applied[-1]


async def test_nothing_is_applied_when_no_app_is_to_blame():
    class Garbage:
        name = "garbage"

        def render(self, apps, tasks, options):
            return "this is not a config\n"

    target = FakeTarget(broken="not a config")
    result = await lb.Syncer(Garbage(), {}, target).sync(state_of(app("/web", 10000)))
    assert not result.ok and target.applied == [] and "invalid" in result.problem


async def test_a_generator_that_raises_is_reported_not_applied():
    class Crashing:
        name = "crashing"

        def render(self, apps, tasks, options):
            raise KeyError("boom")

    target = FakeTarget()
    result = await lb.Syncer(Crashing(), {}, target).sync(state_of(app("/web", 10000)))
    assert not result.ok and target.applied == [] and "KeyError" in result.problem


async def test_skip_config_cleanup_applies_nothing_when_invalid():
    target = FakeTarget()
    syncer = lb.Syncer(haproxy.GENERATOR, {}, target, cleanup=False)
    result = await syncer.sync(state_of(app("/ok", 10000), app("/bad", 10001, labels={"HAPROXY_0_BALANCE": "bogus"})))
    assert not result.ok and target.applied == []


# -- watching: debounce, reconnect, periodic resync (virtual time) --------------------------------------


class FakeMarathon:
    """Serves one fixed state; each `events()` connection streams what the test sends."""

    url = "http://fake"

    def __init__(self) -> None:
        self.reads = 0
        self.connections = 0
        self.streams: list[trio.MemorySendChannel] = []

    def next(self) -> None:
        pass

    async def state(self) -> lb.State:
        self.reads += 1
        return state_of(app("/web", 10000), tasks={"/web": [task(f"t{self.reads}", 31000)]})

    @asynccontextmanager
    async def events(self):
        self.connections += 1
        send, recv = trio.open_memory_channel(100)
        self.streams.append(send)

        class Response:
            status_code = 200

            async def aiter_lines(self):
                async for line in recv:
                    yield line

        yield Response()


async def test_watcher_debounces_bursts_reconnects_and_resyncs(autojump_clock):
    marathon = FakeMarathon()
    target = FakeTarget()
    watcher = lb.Watcher(marathon, lb.Syncer(haproxy.GENERATOR, {}, target), debounce=0.5, resync=60)
    async with trio.open_nursery() as nursery:
        await nursery.start(watcher.run)
        await trio.sleep(1)
        assert marathon.connections == 1
        reads = marathon.reads  # initial sync + the resync after attaching
        stream = marathon.streams[-1]
        for _ in range(50):
            await stream.send("event: status_update_event")
            await stream.send('data: {"eventType": "status_update_event"}')
            await stream.send("")
        await stream.send("event: event_stream_attached")  # not a watched type
        await trio.sleep(2)
        assert marathon.reads == reads + 1, "a burst of events is one sync"

        await stream.aclose()  # the stream drops: reconnect, and resync (events were missed)
        await trio.sleep(2)
        assert marathon.connections == 2 and marathon.reads == reads + 2

        await trio.sleep(60)  # no events at all: the periodic resync still reads
        assert marathon.reads == reads + 3
        nursery.cancel_scope.cancel()
    assert "server t" in target.applied[-1]


# -- file targets ---------------------------------------------------------------------------------------


async def test_command_target_validates_before_replacing_and_restores_on_failed_reload(tmp_path):
    live = tmp_path / "lb.conf"
    target = lb.CommandTarget(live, check="grep -qv bogus {file}", reload=None)
    assert await target.apply("upstream a {}\n") is None and live.read_text() == "upstream a {}\n"
    assert "exited with 1" in await target.apply("bogus\n")
    assert live.read_text() == "upstream a {}\n"

    failing = lb.CommandTarget(live, check=None, reload="false")
    assert "reload command failed" in await failing.apply("upstream b {}\n")
    assert live.read_text() == "upstream a {}\n", "the file must match what the server still runs"
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


@pytest.mark.skipif(HAPROXY is None, reason="haproxy is not installed (scripts/install-system-deps.sh)")
async def test_haproxy_validation_refuses_ports_another_process_holds(tmp_path):
    import socket

    target = lb.HaproxyTarget(tmp_path / "haproxy.cfg", haproxy=HAPROXY, pidfile=tmp_path / "pid", socket=None)
    with socket.create_server(("127.0.0.1", 0)) as holder:
        port = holder.getsockname()[1]
        problem = await target.validate(render([app("/web", port)]))
        assert problem == f"cannot bind: address already in use: 127.0.0.1:{port}"
    assert await target.validate(render([app("/web", port)])) is None
    assert "balance" in await target.validate(render([app("/web", port, labels={"HAPROXY_0_BALANCE": "bogus"})]))
    assert not (tmp_path / "haproxy.cfg").exists(), "validation never touches the live file"
