"""`refusal`: the one place an agent decides it cannot run a launch as asked."""

from __future__ import annotations

import msgspec

from marathon.agent.capabilities import PLAIN_PROCESSES, agent_capabilities, refusal
from marathon.models.launch import (
    ContainerSpec,
    FetchUri,
    NetworkSpec,
    SecretValue,
    TaskLaunch,
    VolumeMount,
)


def _launch(**kw) -> TaskLaunch:
    return TaskLaunch(task_id="a.1", instance_id="a", app_id="/a", agent_id="ag", shell=True, command="x", **kw)


HOST_VOL = VolumeMount(kind="host", container_path="/data", host_path="/srv", mode="RO")


def test_what_each_agent_gives():
    full = agent_capabilities(images=True)
    bare = agent_capabilities(images=False)
    assert refusal(_launch(), PLAIN_PROCESSES) is None
    assert refusal(_launch(fetch=[FetchUri(uri="http://h/a")]), bare) is None
    image = _launch(container=ContainerSpec(type="DOCKER", image="busybox", volumes=[HOST_VOL]))
    assert refusal(image, full) is None
    why = refusal(image, bare)
    assert why is not None and "container image 'busybox'" in why and "host volume '/srv'" in why
    plain = _launch(container=ContainerSpec(type="MESOS", volumes=[HOST_VOL]))
    assert "mounts host volumes only into containers with an image" in (refusal(plain, full) or "")
    bridge = _launch(container=ContainerSpec(type="DOCKER", image="busybox"),
                     networks=[NetworkSpec(mode="container/bridge")])
    assert "bridge networking" in (refusal(bridge, full) or "")
    secret = _launch(container=ContainerSpec(type="MESOS", image="busybox", volumes=[
        VolumeMount(kind="secret", container_path="pw", secret="pw", mode="RO")]))
    assert "its secret could not be resolved" in (refusal(secret, full) or "")
    resolved = msgspec.structs.replace(secret, secret_values={"pw": SecretValue(b"s3")})
    assert refusal(resolved, full) is None
    assert "does not mount secret volumes" in (refusal(resolved, PLAIN_PROCESSES) or "")
    plain = _launch(container=ContainerSpec(type="MESOS", volumes=[
        VolumeMount(kind="secret", container_path="/etc/pw", secret="pw", mode="RO")]),
        secret_values={"pw": SecretValue(b"s3")})
    assert "an absolute path needs a container with an image" in (refusal(plain, full) or "")
    env = _launch(secret_env={"DB_PW": "/db/pw"})
    assert "DB_PW: they could not be resolved" in (refusal(env, full) or "")
    assert refusal(msgspec.structs.replace(env, secret_env_values={"DB_PW": SecretValue(b"x")}), full) is None
    assert "hunter2" not in repr(msgspec.structs.replace(env, secret_env_values={"DB_PW": SecretValue(b"hunter2")}))


def test_privileged_containers_only_where_the_agent_allows_them():
    priv = _launch(container=ContainerSpec(type="DOCKER", image="busybox", privileged=True))
    assert "does not allow privileged containers" in (refusal(priv, agent_capabilities(images=True)) or "")
    assert refusal(priv, agent_capabilities(images=True, privileged=True)) is None
    no_image = _launch(container=ContainerSpec(type="MESOS", privileged=True))
    assert "privileged container without an image" in (
        refusal(no_image, agent_capabilities(images=True, privileged=True)) or "")
