"""marathon-auth-basic without a server: hooks called as Marathon calls them."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import threading

import pytest
import trio
import trio.testing
from argon2 import PasswordHasher, Type
from marathon_auth_basic import BasicAuth, covers, hash_password, normalize_prefix
from marathon_auth_basic._limiter import FailureLimiter

from marathon.hookspecs import AuthResource, Identity, PluginResponse, RequestInfo

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


async def test_valid_credentials_give_the_identity_and_are_remembered():
    p = plugin()
    assert await p.marathon_auth_authenticate(request=request(basic("dev", "dev-pw"))) == Identity(name="dev")
    assert await p.marathon_auth_authenticate(request=request(basic("dev", "dev-pw"))) == Identity(name="dev")
    assert await p.marathon_auth_authenticate(request=request(basic("dev", "dev-px"))) is None
    assert p.checks == 2  # the second login was remembered: no argon2 check


@pytest.mark.parametrize("header", [
    basic("dev", "wrong"), basic("nobody", "dev-pw"), basic("dev", ""), "Basic !!!notbase64",
    "Basic " + base64.b64encode(b"no-colon").decode(), "Basic " + base64.b64encode(b"\xff:\xfe").decode(),
    [basic("dev", "dev-pw"), basic("dev", "dev-pw")],
])
async def test_bad_credentials_are_refused_and_counted(header):
    p = plugin()
    assert await p.marathon_auth_authenticate(request=request(header)) is None
    assert p._limiter._failures["10.0.0.1"]


@pytest.mark.parametrize("header", [None, "Bearer abc", "Digest x"])
async def test_no_basic_credentials_is_a_plain_401_not_a_failure(header):
    p = plugin()
    assert await p.marathon_auth_authenticate(request=request(header)) is None
    assert "10.0.0.1" not in p._limiter._failures
    answer = p.marathon_auth_not_authenticated(request=request(header))
    assert answer.status == 401
    assert answer.headers["WWW-Authenticate"] == 'Basic realm="Marathon", charset="UTF-8"'
    assert json.loads(answer.body) == {"message": "Not Authenticated!"}


async def test_ten_failures_in_a_minute_block_the_address_until_the_minute_is_over():
    clock = Clock()
    p = plugin(clock)
    for i in range(9):
        clock.now += 1
        assert await p.marathon_auth_authenticate(request=request(basic("dev", f"guess{i}"))) is None
        assert p.marathon_auth_not_authenticated(request=request()).status == 401
    clock.now += 1
    await p.marathon_auth_authenticate(request=request(basic("dev", "guess9")))
    answer = p.marathon_auth_not_authenticated(request=request())
    assert answer.status == 429 and answer.headers["Retry-After"] == "51"  # the first failure was 9 s ago
    # Blocked: even the right password is not checked; other addresses are not affected.
    assert await p.marathon_auth_authenticate(request=request(basic("dev", "dev-pw"))) is None
    assert await p.marathon_auth_authenticate(request=request(basic("dev", "dev-pw"), addr="10.0.0.2")) == Identity(name="dev")
    clock.now += 51
    assert await p.marathon_auth_authenticate(request=request(basic("dev", "dev-pw"))) == Identity(name="dev")


async def test_limit_is_configurable():
    clock = Clock()
    p = plugin(clock, max_failures_per_minute=2)
    await p.marathon_auth_authenticate(request=request(basic("dev", "x")))
    assert p.marathon_auth_not_authenticated(request=request()).status == 401
    await p.marathon_auth_authenticate(request=request(basic("dev", "y")))
    assert p.marathon_auth_not_authenticated(request=request()).status == 429


async def answer(p: BasicAuth, req: RequestInfo) -> Identity | PluginResponse:
    """What Marathon does with a request: the identity, or the refusal."""
    identity = await p.marathon_auth_authenticate(request=req)
    return identity if identity is not None else p.marathon_auth_not_authenticated(request=req)


def held_checks(p: BasicAuth) -> threading.Event:
    """Make `p`'s argon2 checks wait (in their worker thread) until the event is set."""
    release = threading.Event()
    real = p._passwords.check

    def check(user: str, password: str) -> bool:
        release.wait(60)
        return real(user, password)

    p._passwords.check = check
    return release


async def test_password_checks_run_in_worker_threads_not_on_the_event_loop():
    p = plugin()
    real, threads = p._passwords.check, []

    def check(user: str, password: str) -> bool:
        threads.append(threading.get_ident())
        return real(user, password)

    p._passwords.check = check
    assert await p.marathon_auth_authenticate(request=request(basic("dev", "dev-pw"))) == Identity(name="dev")
    assert await p.marathon_auth_authenticate(request=request(basic("dev", "wrong"))) is None
    assert len(threads) == 2 and threading.get_ident() not in threads


async def test_checks_beyond_the_per_second_budget_are_refused_unchecked_from_any_address():
    clock = Clock()
    p = plugin(clock, max_checks_per_second=3)
    assert await answer(p, request(basic("dev", "dev-pw"))) == Identity(name="dev")
    for i in (2, 3):
        assert (await answer(p, request(basic("dev", "wrong"), addr=f"10.0.0.{i}"))).status == 401
    refused = await answer(p, request(basic("dev", "wrong"), addr="10.0.0.4"))
    assert refused.status == 429 and refused.headers == {"Retry-After": "1"}
    assert json.loads(refused.body) == {"message": "Too many authentication attempts. Try again later."}
    assert p.checks == 3 and "10.0.0.4" not in p._limiter._failures  # not checked, not a failure
    # A remembered login needs no check, so the exhausted budget does not refuse it.
    assert await answer(p, request(basic("dev", "dev-pw"), addr="10.0.0.4")) == Identity(name="dev")
    assert (await answer(p, request(basic("prod", "prod-pw"), addr="10.0.0.4"))).status == 429
    clock.now += 1 / 3  # one check's worth of budget comes back
    assert await answer(p, request(basic("prod", "prod-pw"), addr="10.0.0.4")) == Identity(name="prod")
    assert p.checks == 4
    # The next request of the same task, with no credentials, is a plain 401 again.
    assert (await answer(p, request(None))).status == 401


async def test_logins_beyond_the_pending_checks_are_refused_at_once():
    p = plugin(max_pending_checks=2)
    release = held_checks(p)
    answers = {}

    async def login(addr: str) -> None:
        answers[addr] = await answer(p, request(basic("dev", "wrong"), addr=addr))

    async with trio.open_nursery() as nursery:
        for addr in ("10.0.0.1", "10.0.0.2"):
            nursery.start_soon(login, addr)
        await trio.testing.wait_all_tasks_blocked()  # both checks admitted and held
        refused = await answer(p, request(basic("dev", "dev-pw"), addr="10.0.0.3"))
        assert refused.status == 429 and refused.headers == {"Retry-After": "1"}
        release.set()
    assert [a.status for a in answers.values()] == [401, 401]
    assert p.checks == 2
    assert await answer(p, request(basic("dev", "dev-pw"), addr="10.0.0.3")) == Identity(name="dev")


async def test_checks_under_way_count_against_the_address_limit():
    p = plugin(max_failures_per_minute=2)
    release = held_checks(p)
    answers = []

    async def login(addr: str) -> None:
        answers.append((addr, (await answer(p, request(basic("dev", "wrong"), addr=addr))).status))

    async with trio.open_nursery() as nursery:
        for _ in range(2):
            nursery.start_soon(login, "10.0.0.1")
        await trio.testing.wait_all_tasks_blocked()
        third = await answer(p, request(basic("dev", "wrong"), addr="10.0.0.1"))
        assert third.status == 429 and third.headers == {"Retry-After": "1"}  # not checked
        nursery.start_soon(login, "10.0.0.2")  # other addresses are not affected
        await trio.testing.wait_all_tasks_blocked()
        release.set()
    # The second failure from 10.0.0.1 reaches its limit: 429, as without concurrency.
    assert sorted(answers) == [("10.0.0.1", 401), ("10.0.0.1", 429), ("10.0.0.2", 401)]
    assert p.checks == 3


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
    ({"users": USERS, "max_checks_per_second": 0}, "max_checks_per_second.*positive"),
    ({"users": USERS, "max_pending_checks": "8"}, "max_pending_checks.*positive"),
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
            p._passwords.check(user, f"wrong-{i}")
            times.append(time.perf_counter() - t)
        return statistics.median(times) * 1000

    known, unknown = median_ms("dev"), median_ms("nobody")
    assert 0.5 < unknown / known < 2, (known, unknown)
