"""How an image and a definition combine into an OCI runtime spec (Mesos'
rules), and how image references are read: pure functions, no runc."""

from __future__ import annotations

from pathlib import Path

import pytest

from marathon.agent.images import (
    Image,
    ImageConfig,
    _last_words,
    is_loopback_registry,
    registry_host,
)
from marathon.agent.oci import SANDBOX_IN_CONTAINER, ContainerError, build_spec, resolve_user
from marathon.models.launch import ContainerSpec, TaskLaunch


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\nweb:x:33:33::/var/www:/bin/sh\n")
    (tmp_path / "etc/group").write_text("root:x:0:\nwww:x:33:\nlogs:x:4:web,other\n")
    return tmp_path


def _image(rootfs: Path, **config) -> Image:
    return Image(reference="r/img:1", digest="sha256:ab", rootfs=rootfs, config=ImageConfig(**config))


def _launch(**kw) -> TaskLaunch:
    kw.setdefault("shell", False)
    kw.setdefault("container", ContainerSpec(type="MESOS", image="r/img:1"))
    return TaskLaunch(task_id="a.instance-1._app.1", instance_id="a.instance-1", app_id="/a", agent_id="ag",
                      mem=64, cpus=0.5, **kw)


def test_cmd_goes_through_the_images_shell_and_ignores_its_entrypoint(rootfs):
    img = _image(rootfs, entrypoint=("/entry",), cmd=("default",))
    spec = build_spec(_launch(shell=True, command="echo $HOME"), img, rootfs, Path("/sb"), {}, limits=False)
    assert spec["process"]["args"] == ["/bin/sh", "-c", "echo $HOME"]


@pytest.mark.parametrize("entrypoint, cmd, argv, expected", [
    (("/entry", "-x"), ("default",), ["a", "b"], ["/entry", "-x", "a", "b"]),
    ((), ("default",), ["a"], ["a"]),
    (("/entry",), ("default", "c"), [], ["/entry", "default", "c"]),
    ((), ("/bin/sh",), [], ["/bin/sh"]),
])
def test_args_follow_the_entrypoint_and_replace_cmd(rootfs, entrypoint, cmd, argv, expected):
    img = _image(rootfs, entrypoint=entrypoint, cmd=cmd)
    assert build_spec(_launch(argv=argv), img, rootfs, Path("/sb"), {}, limits=False)["process"]["args"] == expected


def test_nothing_to_run_is_an_error_that_says_so(rootfs):
    with pytest.raises(ContainerError, match="no ENTRYPOINT or CMD"):
        build_spec(_launch(), _image(rootfs), rootfs, Path("/sb"), {}, limits=False)


def test_environment_workdir_user_sandbox_and_limits(rootfs):
    img = _image(rootfs, cmd=("run",), env=("PATH=/img/bin", "A=image", "B=image"), working_dir="/app", user="web")
    spec = build_spec(_launch(), img, rootfs, Path("/host/sandbox"), {"B": "task", "PORT0": "31000"}, limits=True)
    env = dict(e.split("=", 1) for e in spec["process"]["env"])
    assert env["PATH"] == "/img/bin" and env["A"] == "image" and env["B"] == "task" and env["PORT0"] == "31000"
    assert env["MESOS_SANDBOX"] == SANDBOX_IN_CONTAINER and env["MESOS_TASK_ID"] == "a.instance-1._app.1"
    assert spec["process"]["cwd"] == "/app"
    assert spec["process"]["user"] == {"uid": 33, "gid": 33, "additionalGids": [4]}
    sandbox = [m for m in spec["mounts"] if m["destination"] == SANDBOX_IN_CONTAINER]
    assert sandbox == [{"destination": SANDBOX_IN_CONTAINER, "type": "bind", "source": "/host/sandbox",
                        "options": ["rbind", "rw"]}]
    assert spec["linux"]["resources"]["memory"]["limit"] == 64 * 1024 * 1024
    assert spec["linux"]["resources"]["cpu"]["shares"] == 512
    assert "network" not in [n["type"] for n in spec["linux"]["namespaces"]], "host networking"
    no_limits = build_spec(_launch(user="root"), img, rootfs, Path("/sb"), {}, limits=False)
    assert "resources" not in no_limits["linux"], "the task's cgroup holds the limits"
    assert no_limits["process"]["user"]["uid"] == 0 and no_limits["process"]["cwd"] == "/app"


def test_without_a_workdir_the_command_starts_in_the_sandbox(rootfs):
    spec = build_spec(_launch(), _image(rootfs, cmd=("x",)), rootfs, Path("/sb"), {}, limits=False)
    assert spec["process"]["cwd"] == SANDBOX_IN_CONTAINER


def test_users_by_name_number_and_group(rootfs):
    assert resolve_user("web", rootfs) == (33, 33, [4])
    assert resolve_user("33:4", rootfs) == (33, 4, [])
    assert resolve_user("1000", rootfs) == (1000, 0, [])
    assert resolve_user("web:www", rootfs) == (33, 33, [4])
    with pytest.raises(ContainerError, match="no user 'ghost'"):
        resolve_user("ghost", rootfs)
    with pytest.raises(ContainerError, match="no group 'nope'"):
        resolve_user("web:nope", rootfs)


def test_registries_and_messages():
    assert registry_host("alpine") is None and registry_host("library/alpine:3") is None
    assert registry_host("127.0.0.1:5000/a/b:1") == "127.0.0.1:5000"
    assert registry_host("localhost/x") == "localhost" and registry_host("quay.io/x/y") == "quay.io"
    assert is_loopback_registry("127.0.0.1:5000/a") and is_loopback_registry("localhost:5000/a")
    assert is_loopback_registry("[::1]:5000/a") and not is_loopback_registry("10.0.0.1:5000/a")
    assert not is_loopback_registry("alpine")
    raw = 'time="2026-12-07T13:00:00Z" level=fatal msg="reading manifest 1: manifest unknown: \\"x\\""\n'
    assert _last_words(raw) == 'reading manifest 1: manifest unknown: "x"'


def test_host_volumes_become_bind_mounts(rootfs, tmp_path):
    from marathon.models.launch import VolumeMount

    vols = [VolumeMount(kind="host", container_path="/data", host_path=str(tmp_path), mode="RO"),
            VolumeMount(kind="host", container_path="logs/", host_path=str(tmp_path), mode="RW")]
    launch = _launch(container=ContainerSpec(type="DOCKER", image="r/img:1", volumes=vols))
    spec = build_spec(launch, _image(rootfs, cmd=("x",)), rootfs, Path("/sb"), {}, limits=False)
    binds = [m for m in spec["mounts"] if m["source"] == str(tmp_path)]
    assert binds == [
        {"destination": "/data", "type": "bind", "source": str(tmp_path), "options": ["rbind", "ro"]},
        {"destination": f"{SANDBOX_IN_CONTAINER}/logs", "type": "bind", "source": str(tmp_path),
         "options": ["rbind", "rw"]},
    ]
    gone = [VolumeMount(kind="host", container_path="/x", host_path=str(tmp_path / "absent"), mode="RO")]
    with pytest.raises(ContainerError, match="does not exist on this agent"):
        build_spec(_launch(container=ContainerSpec(type="DOCKER", image="r/img:1", volumes=gone)),
                   _image(rootfs, cmd=("x",)), rootfs, Path("/sb"), {}, limits=False)


def test_a_privileged_container_has_every_capability_and_nothing_masked(rootfs):
    launch = _launch(container=ContainerSpec(type="DOCKER", image="r/img:1", privileged=True))
    spec = build_spec(launch, _image(rootfs, cmd=("x",)), rootfs, Path("/sb"), {}, limits=False)
    assert "CAP_SYS_ADMIN" in spec["process"]["capabilities"]["bounding"]
    assert "maskedPaths" not in spec["linux"] and "readonlyPaths" not in spec["linux"]
    plain = build_spec(_launch(), _image(rootfs, cmd=("x",)), rootfs, Path("/sb"), {}, limits=False)
    assert "CAP_SYS_ADMIN" not in plain["process"]["capabilities"]["bounding"] and plain["linux"]["maskedPaths"]
