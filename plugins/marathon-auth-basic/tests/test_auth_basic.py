"""marathon-auth-basic without a server: hooks called as Marathon calls them."""

from __future__ import annotations

import base64
import json
import subprocess
import sys

import pytest
from argon2 import PasswordHasher, Type
from marathon_auth_basic import BasicAuth, covers, hash_password, normalize_prefix
from marathon_auth_basic._limiter import FailureLimiter

from marathon.hookspecs import AuthResource, Identity, RequestInfo

HASHES = {name: hash_password(f"{name}-pw") for name in ("dev", "prod", "admin")}
USERS = [
    {"user": "dev", "password_hash": HASHES["dev"],
     "permissions": [{"allowed": k, "on": "/dev/"} for k in ("create", "update", "delete", "view")]},
    {"user": "prod", "password_hash": HASHES["prod"], "permissions": [{"allowed": "view", "on": "/prod"}]},
    {"user": "admin", "password_hash": HASHES["admin"], "permissions": [{"allowed": "admin", "on": "/"}]},
]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def plugin(clock: Clock | None = None, **extra) -> BasicAuth:
    p = BasicAuth(clock=clock or Clock())
    p.marathon_configure(plugin_id="auth", configuration={"users": USERS, **extra}, marathon_info={})
    return p


def request(authorization: str | list[str] | None = None, addr: str = "10.0.0.1") -> RequestInfo:
    values = [authorization] if isinstance(authorization, str) else (authorization or [])
    return RequestInfo(method="GET", path="/v2/apps", headers={"authorization": values} if values else {},
                       query={}, remote_addr=addr, remote_port=1234)


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_valid_credentials_give_the_identity_and_are_remembered():
    p = plugin()
    assert p.marathon_auth_authenticate(request=request(basic("dev", "dev-pw"))) == Identity(name="dev")
    assert p.marathon_auth_authenticate(request=request(basic("dev", "dev-pw"))) == Identity(name="dev")
    assert p.marathon_auth_authenticate(request=request(basic("dev", "dev-px"))) is None


@pytest.mark.parametrize("header", [
    basic("dev", "wrong"), basic("nobody", "dev-pw"), basic("dev", ""), "Basic !!!notbase64",
    "Basic " + base64.b64encode(b"no-colon").decode(), "Basic " + base64.b64encode(b"\xff:\xfe").decode(),
    [basic("dev", "dev-pw"), basic("dev", "dev-pw")],
])
def test_bad_credentials_are_refused_and_counted(header):
    p = plugin()
    assert p.marathon_auth_authenticate(request=request(header)) is None
    assert p._limiter._failures["10.0.0.1"]


@pytest.mark.parametrize("header", [None, "Bearer abc", "Digest x"])
def test_no_basic_credentials_is_a_plain_401_not_a_failure(header):
    p = plugin()
    assert p.marathon_auth_authenticate(request=request(header)) is None
    assert "10.0.0.1" not in p._limiter._failures
    answer = p.marathon_auth_not_authenticated(request=request(header))
    assert answer.status == 401
    assert answer.headers["WWW-Authenticate"] == 'Basic realm="Marathon", charset="UTF-8"'
    assert json.loads(answer.body) == {"message": "Not Authenticated!"}


def test_ten_failures_in_a_minute_block_the_address_until_the_minute_is_over():
    clock = Clock()
    p = plugin(clock)
    for i in range(9):
        clock.now += 1
        assert p.marathon_auth_authenticate(request=request(basic("dev", f"guess{i}"))) is None
        assert p.marathon_auth_not_authenticated(request=request()).status == 401
    clock.now += 1
    p.marathon_auth_authenticate(request=request(basic("dev", "guess9")))
    answer = p.marathon_auth_not_authenticated(request=request())
    assert answer.status == 429 and answer.headers["Retry-After"] == "51"  # the first failure was 9 s ago
    # Blocked: even the right password is not checked; other addresses are not affected.
    assert p.marathon_auth_authenticate(request=request(basic("dev", "dev-pw"))) is None
    assert p.marathon_auth_authenticate(request=request(basic("dev", "dev-pw"), addr="10.0.0.2")) == Identity(name="dev")
    clock.now += 51
    assert p.marathon_auth_authenticate(request=request(basic("dev", "dev-pw"))) == Identity(name="dev")


def test_limit_is_configurable():
    clock = Clock()
    p = plugin(clock, max_failures_per_minute=2)
    p.marathon_auth_authenticate(request=request(basic("dev", "x")))
    assert p.marathon_auth_not_authenticated(request=request()).status == 401
    p.marathon_auth_authenticate(request=request(basic("dev", "y")))
    assert p.marathon_auth_not_authenticated(request=request()).status == 429


def test_limiter_forgets_idle_addresses_under_a_flood():
    limiter = FailureLimiter(limit=3, max_addresses=100)
    for i in range(1000):
        limiter.record(f"10.1.{i // 256}.{i % 256}", now=float(i))
    assert len(limiter._failures) <= 100


@pytest.mark.parametrize(("prefix", "path", "expected"), [
    ("/dev", "/dev", True), ("/dev", "/dev/x", True), ("/dev", "/dev/x/y", True),
    ("/dev", "/devx", False), ("/dev", "/development", False), ("/dev", "/", False), ("/dev", "/prod/dev", False),
    ("/", "/anything", True), ("/", "/", True),
])
def test_prefixes_match_on_segment_boundaries(prefix, path, expected):
    assert covers(prefix, path) is expected


@pytest.mark.parametrize(("on", "normalized"), [("/dev/", "/dev"), ("/dev", "/dev"), ("/", "/"), ("/a/b/", "/a/b")])
def test_prefix_normalization(on, normalized):
    assert normalize_prefix(on) == normalized


@pytest.mark.parametrize("on", ["dev", "", "/a//b", "/a/../b", "/./a", None])
def test_bad_prefixes_are_refused(on):
    with pytest.raises(ValueError):
        normalize_prefix(on)


def allowed(p: BasicAuth, user: str, action: str, kind: str, rid: str) -> bool:
    return p.marathon_auth_authorize(identity=Identity(name=user), action=action, resource=AuthResource(kind=kind, id=rid))


def test_permissions_by_kind_and_prefix():
    p = plugin()
    for action in ("CreateRunSpec", "UpdateRunSpec", "DeleteRunSpec", "ViewRunSpec"):
        assert allowed(p, "dev", action, "app", "/dev/web")
        assert not allowed(p, "dev", action, "app", "/development/web")
        assert not allowed(p, "dev", action, "app", "/prod/web")
        assert allowed(p, "admin", action, "app", "/prod/web")
    for action in ("CreateGroup", "UpdateGroup", "DeleteGroup", "ViewGroup"):
        assert allowed(p, "dev", action, "group", "/dev")
        assert not allowed(p, "dev", action, "group", "/devx")
    assert allowed(p, "prod", "ViewRunSpec", "app", "/prod/db")
    assert not allowed(p, "prod", "UpdateRunSpec", "app", "/prod/db")
    assert not allowed(p, "prod", "CreateGroup", "group", "/prod/new")


def test_groups_above_a_viewable_prefix_are_viewable_but_nothing_else():
    p = plugin()
    assert allowed(p, "dev", "ViewGroup", "group", "/")
    assert not allowed(p, "dev", "UpdateGroup", "group", "/")
    assert not allowed(p, "dev", "DeleteGroup", "group", "/")
    assert not allowed(p, "dev", "ViewGroup", "group", "/prod")
    assert not allowed(p, "dev", "ViewRunSpec", "app", "/top-level-app")


def test_system_resources_are_for_admin_on_root_except_viewing_events():
    p = plugin()
    for resource in ("Leader", "SystemConfig", "SystemMetrics", "Plugins"):
        for action in ("ViewResource", "UpdateResource"):
            assert allowed(p, "admin", action, "system", resource)
            assert not allowed(p, "dev", action, "system", resource)
    assert allowed(p, "dev", "ViewResource", "system", "Events")
    assert not allowed(p, "dev", "UpdateResource", "system", "Events")
    scoped = BasicAuth()
    scoped.marathon_configure(plugin_id="a", marathon_info={}, configuration={"users": [
        {"user": "ops", "password_hash": HASHES["dev"], "permissions": [{"allowed": "admin", "on": "/ops"}]}]})
    assert allowed(scoped, "ops", "DeleteRunSpec", "app", "/ops/x")
    assert not allowed(scoped, "ops", "ViewResource", "system", "Leader")


def test_unknown_identity_and_no_identity_are_refused():
    p = plugin()
    assert not allowed(p, "mallory", "ViewRunSpec", "app", "/dev/x")
    assert p.marathon_auth_authorize(identity=None, action="ViewRunSpec", resource=AuthResource(kind="app", id="/x")) is False
    answer = p.marathon_auth_not_authorized(identity=Identity(name="dev"), request=request())
    assert answer.status == 403 and json.loads(answer.body) == {"message": "Not Authorized to perform this action!"}


@pytest.mark.parametrize(("configuration", "message"), [
    ({"users": []}, "non-empty"),
    ({"users": [{"user": "x", "password": "plain", "permissions": []}]}, "plaintext"),
    ({"users": [{"user": "x", "password_hash": "md5:abc"}]}, "argon2"),
    ({"users": [{"user": "x", "password_hash": PasswordHasher(type=Type.I).hash("p")}]}, "argon2id"),
    ({"users": [{"user": "x", "password_hash": HASHES["dev"], "permissions": [{"allowed": "own", "on": "/"}]}]}, "allowed"),
    ({"users": [{"user": "x", "password_hash": HASHES["dev"], "permissions": [{"allowed": "view", "on": "dev"}]}]}, "absolute"),
    ({"users": [{"user": "x", "password_hash": HASHES["dev"], "permisions": []}]}, "unknown keys"),
    ({"users": [{"user": "x", "password_hash": HASHES["dev"]}, {"user": "x", "password_hash": HASHES["dev"]}]}, "twice"),
    ({"users": [{"user": "a:b", "password_hash": HASHES["dev"]}]}, "':'"),
    ({"users": USERS, "realm": 'x"y'}, "realm"),
    ({"users": USERS, "max_failures_per_minute": 0}, "positive"),
    ({"users": USERS, "extra": 1}, "unknown configuration keys"),
])
def test_bad_configuration_is_refused_with_a_clear_message(configuration, message):
    with pytest.raises(ValueError, match=message) as info:
        BasicAuth().marathon_configure(plugin_id="auth", configuration=configuration, marathon_info={})
    assert "plain" not in str(info.value).replace("plaintext", "")  # never echoes a password


def test_hash_command_reads_the_password_from_stdin():
    out = subprocess.run([sys.executable, "-m", "marathon_auth_basic", "hash"], input="s3cret pass\n",
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out.startswith("$argon2id$v=19$m=19456,t=2,p=1$") and "s3cret" not in out
    PasswordHasher().verify(out, "s3cret pass")
    empty = subprocess.run([sys.executable, "-m", "marathon_auth_basic", "hash"], input="\n", capture_output=True, text=True)
    assert empty.returncode == 1


def test_unknown_users_cost_as_much_as_wrong_passwords():
    """The dummy hash has the users' parameters, so timing does not tell
    which users exist (a coarse check: the medians are within a factor 2)."""
    import statistics
    import time

    from argon2 import extract_parameters

    p = plugin()
    assert extract_parameters(p._passwords._dummy) == extract_parameters(HASHES["dev"])

    def median_ms(user: str) -> float:
        times = []
        for i in range(7):
            t = time.perf_counter()
            p._passwords.verify(user, f"wrong-{i}", now=0.0)
            times.append(time.perf_counter() - t)
        return statistics.median(times) * 1000

    known, unknown = median_ms("dev"), median_ms("nobody")
    assert 0.5 < unknown / known < 2, (known, unknown)
