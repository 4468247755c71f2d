"""Apps with an image, run for real: busybox images built here (umoci),
served by Debian's docker-registry on 127.0.0.1 or given as a
docker-archive tarball, pulled by the embedded agent (skopeo), run with
runc.  What runs is read from /proc and the sandbox, not only the API."""

from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path

import pytest

from marathon.agent.cgroups import detect
from marathon.testing import wait_for
from marathon.testing.registry import Registry, build_busybox, docker_archive, images_installed

from .conftest import pids_matching

pytestmark = [
    pytest.mark.integration,
    pytest.mark.containers,
    pytest.mark.skipif(os.geteuid() != 0, reason="containers need root"),
    pytest.mark.skipif(bool(images_installed()), reason=f"missing: {images_installed()}"),
]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """(registry address, busybox ref, entrypoint-image ref, docker-archive path)."""
    d = tmp_path_factory.mktemp("images")
    plain = build_busybox(d / "plain", env={"GREETING": "from-the-image"}, workdir="/root")
    entry = build_busybox(d / "entry", entrypoint=["/bin/echo", "entrypoint says"], cmd=["the default cmd"])
    with Registry(d / "registry") as reg:
        yield (reg.address, reg.push(plain, "test/busybox:1"), reg.push(entry, "test/echo:1"),
               docker_archive(plain, d / "busybox.tar", "test/busybox:1"))


def _marker() -> str:
    return f"3600.{random.randrange(10**8, 10**9)}"


def _sandbox(m, app_id: str) -> Path:
    (task,) = m.tasks(app_id)
    return m.data_dir / "agent" / "sandboxes" / task["id"]


def _mounted(text: str) -> bool:
    with open("/proc/self/mountinfo") as f:
        return text in f.read()


def test_an_app_with_an_image_sees_the_image_and_not_the_host(marathon, images):
    _, ref, _, _ = images
    marker = _marker()
    c = marathon.client
    r = c.post("/v2/apps", json={
        "id": "/img/plain", "cpus": 0.1, "mem": 64,
        "cmd": f"cat /etc/os-release; echo greeting=$GREETING sandbox=$MESOS_SANDBOX cwd=$(pwd); "
               f"echo written > $MESOS_SANDBOX/out.txt; exec sleep {marker}",
        "container": {"type": "MESOS", "docker": {"image": ref}}})
    assert r.status_code == 201, r.text
    wait_for(lambda: len(pids_matching(f"sleep {marker}")) == 1, timeout=60, message="the container's sleep")
    wait_for(lambda: [t["state"] for t in marathon.tasks("/img/plain")] == ["TASK_RUNNING"], timeout=30,
             message="TASK_RUNNING")
    sandbox = _sandbox(marathon, "/img/plain")
    wait_for(lambda: (sandbox / "out.txt").exists(), timeout=30, message="the file written in the sandbox")
    stdout = (sandbox / "stdout").read_text()
    assert 'NAME="Marathon test busybox"' in stdout and "Debian" not in stdout
    assert "greeting=from-the-image sandbox=/mnt/mesos/sandbox cwd=/root" in stdout
    (pid,) = pids_matching(f"sleep {marker}")
    with open(f"/proc/{pid}/status") as f:
        nspid = [line for line in f if line.startswith("NSpid:")][0].split()
    assert nspid[-1] == "1", "the command is the container's first process, in its own pid namespace"
    task_id = marathon.tasks("/img/plain")[0]["id"]
    assert _mounted(f"/containers/{task_id}/rootfs")
    # Scaled to zero: runc passes the SIGTERM on; the container and its mount go.
    assert c.put("/v2/apps/img/plain", json={"instances": 0}).status_code == 200
    wait_for(lambda: not pids_matching(f"sleep {marker}"), timeout=60, message="the container to stop")
    wait_for(lambda: not _mounted(f"/containers/{task_id}/rootfs"), timeout=30, message="the overlay unmounted")


def test_docker_args_go_to_the_entrypoint_and_an_archive_runs_too(marathon, images):
    _, _, echo_ref, archive = images
    c = marathon.client
    marker = _marker()
    assert c.post("/v2/apps", json={
        "id": "/img/args", "cpus": 0.1, "mem": 32, "args": ["hello", "args"],
        "container": {"type": "DOCKER", "docker": {"image": echo_ref}}}).status_code == 201
    assert c.post("/v2/apps", json={
        "id": "/img/default", "cpus": 0.1, "mem": 32,
        "container": {"type": "DOCKER", "docker": {"image": echo_ref}}}).status_code == 201
    assert c.post("/v2/apps", json={
        "id": "/img/archive", "cpus": 0.1, "mem": 32, "cmd": f"cat /etc/os-release; exec sleep {marker}",
        "container": {"type": "MESOS", "docker": {"image": f"file://{archive}"}}}).status_code == 201

    def said(app_id: str, text: str) -> bool:
        tasks = marathon.tasks(app_id)
        if tasks:
            path = marathon.data_dir / "agent" / "sandboxes" / tasks[0]["id"] / "stdout"
            return path.exists() and text in path.read_text()
        failure = c.get(f"/v2/apps{app_id}").json()["app"].get("lastTaskFailure")
        return bool(failure and failure["state"] == "TASK_FINISHED" and text in
                    (marathon.data_dir / "agent" / "sandboxes" / failure["taskId"] / "stdout").read_text())

    wait_for(lambda: said("/img/args", "entrypoint says hello args"), timeout=60, message="entrypoint + args")
    wait_for(lambda: said("/img/default", "entrypoint says the default cmd"), timeout=60,
             message="entrypoint + CMD")
    # (The shell's own command line names the marker too, before its exec:
    # the output is what says the image's command ran.)
    wait_for(lambda: said("/img/archive", "Marathon test busybox"), timeout=60, message="the archive's container")
    wait_for(lambda: len(pids_matching(f"sleep {marker}")) == 1, timeout=30, message="its sleep")


def test_a_missing_image_fails_with_the_registrys_answer_and_runs_nothing(marathon, images):
    address, _, _, _ = images
    marker = _marker()
    c = marathon.client
    assert c.post("/v2/apps", json={
        "id": "/img/missing", "cpus": 0.1, "mem": 32, "cmd": f"sleep {marker}", "backoffSeconds": 1,
        "container": {"type": "DOCKER", "docker": {"image": f"{address}/test/nothing:1"}}}).status_code == 201
    failure = wait_for(lambda: c.get("/v2/apps/img/missing").json()["app"].get("lastTaskFailure"), timeout=60,
                       message="the failed pull reported")
    assert failure["state"] == "TASK_FAILED"
    assert failure["message"].startswith(f"Failed to pull image '{address}/test/nothing:1': ")
    assert "manifest unknown" in failure["message"]
    assert not pids_matching(f"sleep {marker}")


def test_the_memory_limit_holds_and_an_oom_says_so(marathon, images):
    cg, why = detect("marathon-probe")
    if cg is None:
        pytest.skip(f"no cgroups here: {why}")
    cg.remove_bases()
    _, ref, _, _ = images
    c = marathon.client
    assert c.post("/v2/apps", json={
        "id": "/img/oom", "cpus": 0.1, "mem": 32, "backoffSeconds": 60,
        "cmd": "dd if=/dev/zero of=/dev/null bs=100M count=1",
        "container": {"type": "MESOS", "docker": {"image": ref}}}).status_code == 201
    failure = wait_for(lambda: c.get("/v2/apps/img/oom").json()["app"].get("lastTaskFailure"), timeout=60,
                       message="the OOM reported")
    assert failure["state"] == "TASK_FAILED"
    assert failure["message"].startswith("Memory limit exceeded: Requested: 32MB"), failure


def test_a_container_outlives_a_crash_of_the_server_and_is_adopted_again(marathon_factory, images):
    """kill -9 of `marathon serve`: the container runs on (its runc is the
    task's process); the restarted server re-adopts it (same task, same
    pid), and stopping it later cleans the container up."""
    _, ref, _, _ = images
    m = marathon_factory("crash").start()
    marker = _marker()
    assert m.client.post("/v2/apps", json={
        "id": "/img/crash", "cpus": 0.1, "mem": 32, "cmd": f"exec sleep {marker}",
        "container": {"type": "MESOS", "docker": {"image": ref}}}).status_code == 201
    wait_for(lambda: len(pids_matching(f"sleep {marker}")) == 1, timeout=60, message="the container")
    wait_for(lambda: [t["state"] for t in m.tasks("/img/crash")] == ["TASK_RUNNING"], timeout=30,
             message="TASK_RUNNING")
    (task,) = m.tasks("/img/crash")
    before = pids_matching(f"sleep {marker}")
    m.kill()
    assert pids_matching(f"sleep {marker}") == before, "the container runs on without the server"
    m.start()
    wait_for(lambda: [t["id"] for t in m.running_tasks("/img/crash")] == [task["id"]], timeout=60,
             message="the same task running after the restart")
    assert pids_matching(f"sleep {marker}") == before
    assert m.client.put("/v2/apps/img/crash", json={"instances": 0}).status_code == 200
    wait_for(lambda: not pids_matching(f"sleep {marker}"), timeout=60, message="the container to stop")
    wait_for(lambda: not _mounted(f"/containers/{task['id']}/rootfs"), timeout=30, message="the overlay unmounted")


def test_host_volumes_are_mounted_read_only_when_asked(marathon, images, tmp_path):
    _, ref, _, _ = images
    ro, rw = tmp_path / "ro", tmp_path / "rw"
    ro.mkdir()
    rw.mkdir()
    (ro / "hello").write_text("from the host\n")
    marker = _marker()
    c = marathon.client
    r = c.post("/v2/apps", json={
        "id": "/img/volumes", "cpus": 0.1, "mem": 32,
        "cmd": "cat /data/hello; touch /data/new 2>/dev/null && echo ro-broken || echo ro-held; "
               f"echo from-the-container > $MESOS_SANDBOX/out/file; exec sleep {marker}",
        "container": {"type": "MESOS", "docker": {"image": ref}, "volumes": [
            {"containerPath": "/data", "hostPath": str(ro), "mode": "RO"},
            {"containerPath": "out", "hostPath": str(rw), "mode": "RW"}]}})
    assert r.status_code == 201, r.text
    wait_for(lambda: len(pids_matching(f"sleep {marker}")) == 1, timeout=60, message="the container")
    wait_for(lambda: (rw / "file").exists(), timeout=30, message="the write through the RW volume")
    assert (rw / "file").read_text() == "from-the-container\n"
    stdout = (_sandbox(marathon, "/img/volumes") / "stdout").read_text()
    assert "from the host" in stdout and "ro-held" in stdout, stdout
    assert not (ro / "new").exists()


@pytest.fixture(scope="module")
def bridges():
    """Bridges the tests' networks make, deleted at the end unless they were
    there before (the CNI bridge plugin leaves its bridge behind)."""
    import subprocess

    names = ("mesos-cni0", "mt-test0")
    before = {n for n in names if subprocess.run(["ip", "link", "show", n], capture_output=True).returncode == 0}
    yield
    for n in names:
        if n not in before:
            subprocess.run(["ip", "link", "delete", n], capture_output=True)


def _get(url: str) -> str | None:
    import httpx

    try:
        r = httpx.get(url, timeout=2)
    except httpx.HTTPError:
        return None
    return r.text if r.status_code == 200 else None


def test_bridge_port_mappings_let_two_instances_serve_container_port_80(marathon, images, bridges):
    """BRIDGE: each task has its own network namespace; hostPort -> 80 by
    portmap, so two instances on one agent no longer collide.  One app runs
    an image (busybox httpd), the other a plain process (no image)."""
    _, ref, _, _ = images
    c = marathon.client
    serve = "mkdir -p /tmp/www && echo $MESOS_TASK_ID > /tmp/www/index.html && exec httpd -f -p 80 -h /tmp/www"
    assert c.post("/v2/apps", json={
        "id": "/net/img", "cpus": 0.1, "mem": 32, "instances": 2, "cmd": serve,
        "networks": [{"mode": "container/bridge"}],
        "container": {"type": "DOCKER", "docker": {"image": ref},
                      "portMappings": [{"containerPort": 80, "hostPort": 0, "name": "http"}]}}).status_code == 201
    assert c.post("/v2/apps", json={
        "id": "/net/plain", "cpus": 0.1, "mem": 64, "instances": 1,
        "cmd": "echo $MESOS_TASK_ID > index.html && exec python3 -m http.server 8080 --bind 0.0.0.0",
        "networks": [{"mode": "container/bridge"}],
        "container": {"type": "MESOS", "portMappings": [{"containerPort": 8080, "hostPort": 0}]}}).status_code == 201

    def serving(app_id: str, n: int) -> dict[str, str] | None:
        tasks = [t for t in marathon.tasks(app_id) if t["state"] == "TASK_RUNNING"]
        if len(tasks) != n:
            return None
        out = {}
        for t in tasks:
            body = _get(f"http://127.0.0.1:{t['ports'][0]}/")
            if body is None:
                return None
            out[t["id"]] = body.strip()
        return out

    img = wait_for(lambda: serving("/net/img", 2), timeout=90, message="both httpd containers serving")
    assert img == {tid: tid for tid in img}, "each host port reaches its own task"
    plain = wait_for(lambda: serving("/net/plain", 1), timeout=90, message="the plain process serving")
    assert plain == {tid: tid for tid in plain}
    for t in marathon.tasks("/net/img"):
        (ip,) = t["ipAddresses"]
        assert ip["ipAddress"].startswith("172.31.254."), t
    # Scaled down: the namespaces go with the tasks.
    import subprocess

    assert c.put("/v2/apps/net/img", json={"instances": 0}).status_code == 200
    assert c.put("/v2/apps/net/plain", json={"instances": 0}).status_code == 200
    wait_for(lambda: not marathon.tasks("/net/img") and not marathon.tasks("/net/plain"), timeout=60,
             message="the tasks gone")
    assert list((marathon.data_dir / "agent" / "cni" / "attachments").glob("*.json")) == [], \
        "every attachment undone"
    ours = "mt" + hashlib.sha256(str((marathon.data_dir / "agent").resolve()).encode()).hexdigest()[:6] + "-"
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
    assert not [n for n in listed if n.startswith(ours)], listed


def test_a_named_container_network_gives_each_task_its_own_reachable_ip(marathon_factory, images, bridges, tmp_path):
    _, ref, _, _ = images
    conf_dir = tmp_path / "cni"
    conf_dir.mkdir()
    (conf_dir / "test.conflist").write_text(json.dumps({
        "cniVersion": "1.0.0", "name": "testnet", "plugins": [
            {"type": "bridge", "bridge": "mt-test0", "isGateway": True, "ipMasq": False,
             "ipam": {"type": "host-local", "subnet": "10.123.45.0/24", "dataDir": str(tmp_path / "ipam")}}]}))
    m = marathon_factory("named", args=["--agent_network_cni_config_dir", str(conf_dir)]).start()
    c = m.client
    assert c.post("/v2/apps", json={
        "id": "/net/server", "cpus": 0.1, "mem": 32, "networks": [{"mode": "container", "name": "testnet"}],
        "cmd": "mkdir -p /tmp/www && echo reached > /tmp/www/index.html && exec httpd -f -p 8000 -h /tmp/www",
        "container": {"type": "MESOS", "docker": {"image": ref}}}).status_code == 201
    task = wait_for(lambda: next((t for t in m.tasks("/net/server") if t["state"] == "TASK_RUNNING"), None),
                    timeout=60, message="the server running")
    (ip,) = [a["ipAddress"] for a in task["ipAddresses"]]
    assert ip.startswith("10.123.45."), task
    # Serving (the host reaches the network through its gateway address)...
    wait_for(lambda: _get(f"http://{ip}:8000/") == "reached\n", timeout=60, message="the server serving")
    # ...and another task on the same network reaches it by that address.
    assert c.post("/v2/apps", json={
        "id": "/net/client", "cpus": 0.1, "mem": 32, "networks": [{"mode": "container", "name": "testnet"}],
        "cmd": f"until wget -q -O $MESOS_SANDBOX/part http://{ip}:8000/; do sleep 0.2; done; "
               "mv $MESOS_SANDBOX/part $MESOS_SANDBOX/got; exec sleep 3600",
        "container": {"type": "MESOS", "docker": {"image": ref}}}).status_code == 201

    assert wait_for(lambda: m.sandbox_text("/net/client", "got"), timeout=60, message="the client's download") == "reached\n"
    assert c.post("/v2/apps", json={
        "id": "/net/nowhere", "cpus": 0.1, "mem": 32, "cmd": "sleep 3600", "backoffSeconds": 60,
        "networks": [{"mode": "container", "name": "no-such-net"}],
        "container": {"type": "MESOS", "docker": {"image": ref}}}).status_code == 201
    failure = wait_for(lambda: c.get("/v2/apps/net/nowhere").json()["app"].get("lastTaskFailure"), timeout=60,
                       message="the launch refused")
    assert "container network 'no-such-net'" in failure["message"]


def test_pull_credentials_come_from_the_apps_pull_config_secret(marathon_factory, tmp_path):
    """A registry that wants a login: the app's `pullConfig` names a secret
    holding a docker config.json; without it the pull fails with the
    registry's 'unauthorized'."""
    store = tmp_path / "secrets"
    store.mkdir()
    with Registry(tmp_path / "private", users={"deployer": "pa55word"}) as reg:
        ref = reg.push(build_busybox(tmp_path / "img"), "private/busybox:1")
        (store / "pull.json").write_text(reg.docker_config("deployer", "pa55word"))
        m = marathon_factory("pull", args=["--enable_features", "secrets", "--secrets_dir", str(store)]).start()
        c = m.client
        marker = _marker()
        # First without credentials (once pulled, an image is in the agent's store).
        assert c.post("/v2/apps", json={
            "id": "/img/anonymous", "cpus": 0.1, "mem": 32, "cmd": "sleep 3600", "backoffSeconds": 60,
            "container": {"type": "MESOS", "docker": {"image": ref}}}).status_code == 201
        failure = wait_for(lambda: c.get("/v2/apps/img/anonymous").json()["app"].get("lastTaskFailure"),
                           timeout=60, message="the anonymous pull refused")
        assert failure["message"].startswith(f"Failed to pull image '{ref}'") and "unauthorized" in failure["message"]
        assert c.post("/v2/apps", json={
            "id": "/img/private", "cpus": 0.1, "mem": 32, "cmd": f"exec sleep {marker}",
            "secrets": {"creds": {"source": "/pull.json"}},
            "container": {"type": "MESOS", "docker": {"image": ref, "pullConfig": {"secret": "creds"}}}},
        ).status_code == 201
        wait_for(lambda: len(pids_matching(f"sleep {marker}")) == 1, timeout=60, message="the private image running")
        assert not list((m.data_dir / "agent" / "secrets").rglob("*.json")), "the credentials file is gone"
