"""Secrets on the leader: the built-in file store and how a launch gets
its secrets' values (tasks/agents deliver them: tests/integration)."""

from __future__ import annotations

from marathon.builtin.secrets_file import FileSecrets
from marathon.models.app import AppDefinition
from marathon.models.app_decode import decode_app
from marathon.models.launch import ContainerSpec, TaskLaunch, VolumeMount
from marathon.task_builder import resolve_secrets


def _app() -> AppDefinition:
    return decode_app({"id": "/db", "cmd": "x", "secrets": {"pw": {"source": "/db/password"},
                                                          "cert": {"source": "/tls/cert"},
                                                          "bin": {"source": "/db/binary"}}})


def _launch(**kw) -> TaskLaunch:
    return TaskLaunch(task_id="db.1", instance_id="db", app_id="/db", agent_id="a", shell=True, command="x", **kw)


def test_the_file_store_reads_files_under_its_directory_only(tmp_path):
    (tmp_path / "db").mkdir()
    (tmp_path / "db/password").write_bytes(b"hunter2")
    (tmp_path.parent / "outside").write_bytes(b"no")
    store = FileSecrets(tmp_path)
    assert store.marathon_secret_resolve(source="/db/password", app_id="/db") == b"hunter2"
    assert store.marathon_secret_resolve(source="db/password", app_id="/db") == b"hunter2"
    assert store.marathon_secret_resolve(source="/db/missing", app_id="/db") is None
    assert store.marathon_secret_resolve(source="/../outside", app_id="/db") is None
    assert store.marathon_secret_resolve(source="/", app_id="/db") is None


def test_a_launch_gets_each_value_once_and_nothing_it_cannot_have():
    asked: list[str] = []
    values = {"/db/password": b"hunter2", "/tls/cert": b"CERT", "/db/binary": b"\xff\xfe"}

    def resolve(source: str) -> bytes | None:
        asked.append(source)
        if source == "/boom":
            raise RuntimeError("vault down")
        return values.get(source)

    launch = _launch(
        secret_env={"DB_PW": "/db/password", "AGAIN": "/db/password", "BIN": "/db/binary", "GONE": "/nope"},
        container=ContainerSpec(type="MESOS", volumes=[
            VolumeMount(kind="secret", container_path="tls/cert", secret="cert", mode="RO"),
            VolumeMount(kind="host", container_path="/x", host_path="/srv", mode="RO")]))
    out = resolve_secrets(_app(), launch, resolve)
    assert {k: v.value for k, v in out.secret_env_values.items()} == {"DB_PW": b"hunter2", "AGAIN": b"hunter2"}
    assert {k: v.value for k, v in out.secret_values.items()} == {"cert": b"CERT"}
    assert sorted(asked) == sorted(["/db/password", "/db/binary", "/nope", "/tls/cert"]), "each source once"
    assert out.env == launch.env, "values never go into the plain environment"
    assert "hunter2" not in repr(out) and "CERT" not in repr(out)
    failing = resolve_secrets(_app(), _launch(secret_env={"X": "/boom"}), resolve)
    assert failing.secret_env_values == {}
