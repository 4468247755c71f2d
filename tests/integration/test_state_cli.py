"""`marathon state export|import` as an operator runs them (docs/state-backup.md):
a single machine's data dir, made by a real `marathon serve`, moved onto a
real ZooKeeper and back, every key, value and the cluster id intact; and
the imports the command refuses (a running Marathon, a target with state,
another cluster id) change nothing.
"""

from __future__ import annotations

import importlib.util
import io
import sqlite3
import subprocess
import sys
import tarfile
import uuid
from pathlib import Path

import msgspec
import pytest
from kazoo.client import KazooClient

from marathon.testing import wait_for


def _zk_fixtures():  # the storage tests' ZooKeeper (tests/unit/storage is a package of its own)
    spec = importlib.util.spec_from_file_location(
        "_state_cli_zk_fixtures", Path(__file__).resolve().parents[1] / "unit" / "storage" / "zk_fixtures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


zk_server = _zk_fixtures().zk_server

APP = {"id": "/shop/web", "cmd": "sleep 600", "cpus": 0.1, "mem": 16, "instances": 2,
       "env": {"RELEASE": "1"}, "labels": {"tier": "web"}}


def state(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "marathon", "state", *args], input=stdin,
                          capture_output=True, timeout=120)


def archive(data: bytes) -> tuple[dict, dict[str, bytes]]:
    """(manifest, member name -> content) of a backup."""
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar}  # type: ignore[union-attr]
    return msgspec.json.decode(members.pop("manifest.json")), members


def sqlite_values(db: Path) -> dict[str, bytes]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return dict(conn.execute("SELECT key, value FROM kv").fetchall())
    finally:
        conn.close()


@pytest.fixture
def zk(zk_server: str):
    client = KazooClient(hosts=zk_server, timeout=5.0)
    client.start(timeout=10)
    yield client
    client.stop()
    client.close()


def test_a_single_machine_moves_onto_zookeeper_and_back(marathon_factory, tmp_path, zk_server, zk):
    secret = tmp_path / "agent.secret"
    secret.write_text("s" * 32)
    single = marathon_factory("single", args=["--agent_secret_file", str(secret)])
    data_dir = single.data_dir
    backup = tmp_path / "single.tar"
    with single:
        r = single.client.post("/v2/apps", json=APP)
        assert r.status_code == 201, r.text
        single.wait_deployments_done()
        wait_for(lambda: len(single.running_tasks("/shop/web")) == 2, message="2 running tasks")
        assert single.client.put("/v2/apps/shop/web", json={"env": {"RELEASE": "2"}}).status_code == 200
        single.wait_deployments_done()

        # An export only reads: it may run beside the server.
        r = state("export", str(tmp_path / "live.tar"), "--data_dir", str(data_dir))
        assert r.returncode == 0, r.stderr
        # An import may not.
        r = state("import", str(tmp_path / "live.tar"), "--data_dir", str(data_dir), "--force")
        assert r.returncode == 1
        assert f"Marathon runs on {data_dir} (pid {single.proc.pid})".encode() in r.stderr

    cluster_id = (data_dir / "cluster_id").read_text().strip()
    stored = sqlite_values(data_dir / "state.db")
    assert any(k.startswith("instances/") for k in stored) and any(k.startswith("apps/") for k in stored)

    r = state("export", str(backup), "--data_dir", str(data_dir))
    assert r.returncode == 0, r.stderr
    line = r.stdout.decode()
    assert f"exported {len(stored)} keys" in line and f"cluster id {cluster_id}" in line
    manifest, members = archive(backup.read_bytes())
    assert manifest["cluster_id"] == cluster_id and manifest["keys"] == len(stored)

    root = f"/state-cli/{uuid.uuid4().hex}"
    url = f"zk://{zk_server}{root}"
    r = state("import", str(backup), "--zk", url)
    assert r.returncode == 0, r.stderr
    assert f"imported {len(stored)} keys" in r.stdout.decode()
    assert zk.get(f"{root}/cluster-id")[0].decode() == cluster_id

    # Back out of ZooKeeper, through stdout: the same keys, values and id.
    r = state("export", "-", "--zk", url)
    assert r.returncode == 0, r.stderr
    assert f"cluster id {cluster_id}" in r.stderr.decode()
    zk_manifest, zk_members = archive(r.stdout)
    assert zk_members == members
    assert zk_manifest["cluster_id"] == cluster_id

    # And into a fresh data dir through stdin: state.db and cluster_id as they were.
    fresh = tmp_path / "fresh"
    r = state("import", "-", "--data_dir", str(fresh), stdin=r.stdout)
    assert r.returncode == 0, r.stderr
    assert sqlite_values(fresh / "state.db") == stored
    assert (fresh / "cluster_id").read_text().strip() == cluster_id


def _empty_backup(cluster_id: str) -> bytes:
    """A backup of one key, as another cluster would have written it."""
    out = io.BytesIO()
    manifest = msgspec.json.encode({"format": "marathon-py-backup", "version": 1, "cluster_id": cluster_id,
                                    "keys": 1, "created": "2024-01-01T00:00:00.000Z"})
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, content in (("manifest.json", manifest), ("state/groups/root", cluster_id.encode())):
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return out.getvalue()


def test_imports_that_would_mix_two_states_are_refused_and_change_nothing(tmp_path, zk_server, zk):
    root = f"/state-cli/{uuid.uuid4().hex}"
    url = f"zk://{zk_server}{root}"
    ours = tmp_path / "ours.tar"
    ours.write_bytes(_empty_backup("our-cluster"))
    assert state("import", str(ours), "--zk", url).returncode == 0
    theirs = tmp_path / "theirs.tar"
    theirs.write_bytes(_empty_backup("another-cluster"))

    def zk_state() -> bytes:
        r = state("export", "-", "--zk", url)
        assert r.returncode == 0, r.stderr
        return r.stdout

    before = archive(zk_state())[1]

    r = state("import", str(theirs), "--zk", url)
    assert r.returncode == 1
    assert b"has cluster id our-cluster, the backup is of cluster another-cluster" in r.stderr
    r = state("import", str(ours), "--zk", url)
    assert r.returncode == 1 and b"holds state already (1 keys)" in r.stderr and b"--force" in r.stderr

    # A master standing for election (storage/election.py's candidates).
    zk.create(f"{root}/leader-election/x__lock__0000000000", b"", ephemeral=True, makepath=True)
    r = state("import", str(theirs), "--zk", url, "--force")
    assert r.returncode == 1 and b"1 Marathon master(s) run against" in r.stderr
    zk.delete(f"{root}/leader-election/x__lock__0000000000")

    r = state("import", str(tmp_path / "missing.tar"), "--zk", url, "--force")
    assert r.returncode == 1 and b"No such file" in r.stderr
    r = state("import", "-", "--zk", url, "--force", stdin=b"not a tar at all" * 100)
    assert r.returncode == 1 and b"not a usable backup" in r.stderr

    assert archive(zk_state())[1] == before
    assert zk.get(f"{root}/cluster-id")[0] == b"our-cluster"

    r = state("import", str(theirs), "--zk", url, "--force")
    assert r.returncode == 0, r.stderr
    assert archive(zk_state())[1] == {"state/groups/root": b"another-cluster"}
    assert zk.get(f"{root}/cluster-id")[0] == b"another-cluster"


def test_bad_flags_exit_2():
    assert state("import", "x.tar").returncode == 2  # no target
    assert state("import", "x.tar", "--zk", "zk://h:1/m", "--data_dir", "d").returncode == 2
    r = state("export", "x.tar", "--zk", "http://h:1/m")
    assert r.returncode == 2 and b"zk://" in r.stderr
    assert state().returncode == 2


def test_exporting_a_data_dir_without_state_creates_nothing(tmp_path):
    r = state("export", str(tmp_path / "b.tar"), "--data_dir", str(tmp_path / "nothing"))
    assert r.returncode == 1 and b"no Marathon state in" in r.stderr
    assert not (tmp_path / "nothing").exists() and not (tmp_path / "b.tar").exists()


def test_exporting_a_zookeeper_path_that_holds_nothing_is_refused(tmp_path, zk_server):
    url = f"zk://{zk_server}/state-cli/{uuid.uuid4().hex}/typo"
    r = state("export", str(tmp_path / "b.tar"), "--zk", url)
    assert r.returncode == 1 and b"no cluster id and no state (is the path right?)" in r.stderr
    assert not (tmp_path / "b.tar").exists()


def test_zookeeper_passwords_stay_out_of_messages(tmp_path, zk_server):
    url = f"zk://ops:s3cret@{zk_server}/state-cli/{uuid.uuid4().hex}"
    r = state("export", str(tmp_path / "b.tar"), "--zk", url)
    assert r.returncode == 1 and b"zk://ops:***@" in r.stderr and b"s3cret" not in r.stderr
