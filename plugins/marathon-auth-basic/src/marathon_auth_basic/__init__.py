"""HTTP Basic authentication and path-prefix authorization for Marathon.

The Python counterpart of Marathon's example auth plugin, hardened: the
configuration holds argon2id hashes instead of passwords, logins are checked
in constant time whether or not the user exists, and an address with too many
failed logins in a minute is answered 429 until the minute has passed.
Password checks run in worker threads under a server-wide budget (`_budget`),
so no number of wrong logins, from however many addresses, stalls the API.

Plugin descriptor (`--plugin_conf`)::

    {"plugins": {"auth": {
        "plugin": "auth-basic",
        "configuration": {
          "realm": "Marathon",
          "max_failures_per_minute": 10,
          "max_checks_per_second": 20,
          "max_pending_checks": 16,
          "users": [
            {"user": "dev", "password_hash": "$argon2id$v=19$m=19456,t=2,p=1$...",
             "permissions": [{"allowed": "create", "on": "/dev/"},
                             {"allowed": "view", "on": "/dev/"}]},
            {"user": "admin", "password_hash": "$argon2id$...",
             "permissions": [{"allowed": "admin", "on": "/"}]}]}}}}

Make a hash with `python -m marathon_auth_basic hash` (password on stdin).
What each permission grants is documented in `_permissions`.
"""

from __future__ import annotations

import base64
import binascii
import functools
import logging
import math
import time
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from typing import Any

import msgspec

from marathon.hookspecs import AuthResource, Identity, PluginResponse, RequestInfo, hookimpl

from ._budget import CheckBudget
from ._limiter import FailureLimiter
from ._passwords import HASH_PARAMETERS, PasswordBook, check_hash, hash_password
from ._permissions import Grant, Permissions, covers, normalize_prefix, parse_grants

__all__ = [
    "BasicAuth", "Grant", "HASH_PARAMETERS", "Permissions", "covers", "hash_password", "normalize_prefix",
]

log = logging.getLogger("marathon.plugins.auth_basic")

DEFAULT_REALM = "Marathon"
DEFAULT_MAX_FAILURES = 10
# 20 checks of ~30 ms: at most ~0.6 of a core for argon2, whatever the flood,
# and still room for a few dozen clients logging in at once (successful logins
# are remembered, so a client needs one check every few minutes).
DEFAULT_MAX_CHECKS_PER_SECOND = 20
DEFAULT_MAX_PENDING_CHECKS = 16
# At most one "too many authentication attempts" warning per this many seconds.
BUSY_LOG_SECONDS = 10.0
# Longer values are refused without hashing them (a cheap guard, not a policy).
MAX_USER_BYTES = 256
MAX_PASSWORD_BYTES = 1024

_NOT_AUTHENTICATED = msgspec.json.encode({"message": "Not Authenticated!"})
_NOT_AUTHORIZED = PluginResponse(
    status=403, body=msgspec.json.encode({"message": "Not Authorized to perform this action!"})
)
_TOO_MANY_ATTEMPTS = PluginResponse(
    status=429,
    body=msgspec.json.encode({"message": "Too many authentication attempts. Try again later."}),
    headers={"Retry-After": "1"},
)
_CONFIG_KEYS = {"realm", "users", "max_failures_per_minute", "max_checks_per_second", "max_pending_checks"}
_USER_KEYS = {"user", "password_hash", "permissions"}

# Set when this task's last login was refused without a check (no room in the
# budget, or too many checks under way for its address), so the answer is 429
# rather than 401.  Marathon calls marathon_auth_not_authenticated right after
# marathon_auth_authenticate in the same task (one request), and the
# authenticate hook resets it first thing.
_refused_busy: ContextVar[bool] = ContextVar("marathon_auth_basic_refused_busy", default=False)


class BasicAuth:
    """Authenticator and authorizer in one plugin (Marathon allows one of each)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._realm = DEFAULT_REALM
        self._passwords = PasswordBook({})
        self._permissions: dict[str, Permissions] = {}
        self._limiter = FailureLimiter(DEFAULT_MAX_FAILURES)
        self._budget = CheckBudget(DEFAULT_MAX_CHECKS_PER_SECOND, DEFAULT_MAX_PENDING_CHECKS)
        self._in_flight: dict[str, int] = {}  # address -> checks under way
        self._busy_logged = -math.inf

    @property
    def checks(self) -> int:
        """argon2 verifications run since start-up (remembered logins need none)."""
        return self._budget.checks

    # -- configuration ------------------------------------------------------------

    @hookimpl
    def marathon_configure(self, plugin_id: str, configuration: Mapping[str, Any], marathon_info: Mapping[str, Any]) -> None:
        unknown = set(configuration) - _CONFIG_KEYS
        if unknown:
            raise ValueError(f"unknown configuration keys: {', '.join(sorted(unknown))} (known: {', '.join(sorted(_CONFIG_KEYS))})")
        realm = configuration.get("realm", DEFAULT_REALM)
        if not isinstance(realm, str) or not realm or any(c in realm for c in '"\\') or not realm.isprintable():
            raise ValueError("'realm' must be a non-empty printable string without quotes or backslashes")
        limit = _positive_int(configuration, "max_failures_per_minute", DEFAULT_MAX_FAILURES)
        per_second = _positive_int(configuration, "max_checks_per_second", DEFAULT_MAX_CHECKS_PER_SECOND)
        max_pending = _positive_int(configuration, "max_pending_checks", DEFAULT_MAX_PENDING_CHECKS)
        users = configuration.get("users")
        if not isinstance(users, list) or not users:
            raise ValueError("'users' must be a non-empty list: with no users nobody could log in")

        hashes: dict[str, str] = {}
        permissions: dict[str, Permissions] = {}
        for entry in users:
            if not isinstance(entry, Mapping) or not isinstance(entry.get("user"), str) or not entry["user"]:
                raise ValueError("every user needs a non-empty 'user' name")
            name = entry["user"]
            if "password" in entry:
                # Never accept (or echo) a plaintext password.
                raise ValueError(
                    f"user {name!r}: plaintext 'password' is not accepted; store 'password_hash' "
                    "(make one with `python -m marathon_auth_basic hash`)"
                )
            unknown = set(entry) - _USER_KEYS
            if unknown:
                raise ValueError(f"user {name!r}: unknown keys {', '.join(sorted(unknown))}")
            if ":" in name or len(name.encode()) > MAX_USER_BYTES or not name.isprintable():
                raise ValueError(f"user {name!r}: names are printable, without ':', at most {MAX_USER_BYTES} bytes")
            if name in hashes:
                raise ValueError(f"user {name!r} is listed twice")
            stored = entry.get("password_hash")
            if not isinstance(stored, str):
                raise ValueError(f"user {name!r}: 'password_hash' is required")
            try:
                check_hash(stored)
            except ValueError as exc:
                raise ValueError(f"user {name!r}: 'password_hash' is {exc}") from None
            hashes[name] = stored
            permissions[name] = Permissions(parse_grants(entry.get("permissions", []), name))

        self._realm = realm
        self._passwords = PasswordBook(hashes)
        self._permissions = permissions
        self._limiter = FailureLimiter(limit)
        self._budget = CheckBudget(per_second, max_pending)
        log.info("configured plugin=%s users=%d max_failures_per_minute=%d max_checks_per_second=%d max_pending_checks=%d",
                 plugin_id, len(hashes), limit, per_second, max_pending)

    # -- authentication -----------------------------------------------------------

    @hookimpl
    async def marathon_auth_authenticate(self, request: RequestInfo) -> Identity | None:
        # A coroutine: Marathon awaits it in the request's task, so the argon2
        # check can wait for a worker thread instead of stalling the event loop.
        _refused_busy.set(False)
        now = self._clock()
        address = request.remote_addr
        if self._limiter.retry_after(address, now) is not None:
            return None  # blocked: not even checked, so guessing gets no answers
        credentials = _basic_credentials(request)
        if credentials is None:
            return None  # no Basic credentials: a plain 401, not a failed login
        user, password = credentials
        if user is None or password is None:
            self._failed(address, None, request.path, now)
            return None
        if self._passwords.remembered(user, password, now):
            return Identity(name=user)
        # Checks under way count against the address's limit as if they had
        # failed, or one address could start many guesses before any is counted.
        in_flight = self._in_flight.get(address, 0)
        if self._limiter.recent(address, now) + in_flight >= self._limiter.limit:
            self._refuse_busy(now)
            return None
        self._in_flight[address] = in_flight + 1
        try:
            ok = await self._budget.run(functools.partial(self._passwords.check, user, password), now)
        finally:
            self._in_flight[address] -= 1
            if not self._in_flight[address]:
                del self._in_flight[address]
        if ok is None:
            self._refuse_busy(now)
            return None
        now = self._clock()
        if ok:
            self._passwords.remember(user, password, now)
            return Identity(name=user)
        self._failed(address, user, request.path, now)
        return None

    def _failed(self, address: str, user: str | None, path: str, now: float) -> None:
        self._limiter.record(address, now)
        known = user if user is not None and user in self._passwords else "<unknown>"
        log.info("authentication failed addr=%s user=%s path=%r", address, known, path)
        retry = self._limiter.retry_after(address, now)
        if retry is not None:
            log.warning("too many failed logins addr=%s: answering 429 for %ds", address, math.ceil(retry))

    def _refuse_busy(self, now: float) -> None:
        """Refuse without checking (answered 429 by marathon_auth_not_authenticated);
        not a failed login: nothing was checked."""
        _refused_busy.set(True)
        if now - self._busy_logged >= BUSY_LOG_SECONDS:
            self._busy_logged = now
            log.warning(
                "too many authentication attempts: refusing logins without checking them "
                "(max_checks_per_second=%d, max_pending_checks=%d; %d refused by the budget since start-up)",
                self._budget.per_second, self._budget.max_pending, self._budget.refused,
            )

    @hookimpl
    def marathon_auth_not_authenticated(self, request: RequestInfo) -> PluginResponse:
        retry = self._limiter.retry_after(request.remote_addr, self._clock())
        if retry is not None:
            return PluginResponse(
                status=429,
                body=msgspec.json.encode({"message": "Too many failed logins. Try again later."}),
                headers={"Retry-After": str(max(1, math.ceil(retry)))},
            )
        if _refused_busy.get():
            return _TOO_MANY_ATTEMPTS
        return PluginResponse(
            status=401,
            body=_NOT_AUTHENTICATED,
            headers={"WWW-Authenticate": f'Basic realm="{self._realm}", charset="UTF-8"'},
        )

    # -- authorization ------------------------------------------------------------

    @hookimpl
    def marathon_auth_authorize(self, identity: Identity | None, action: str, resource: AuthResource) -> bool:
        permissions = self._permissions.get(identity.name) if identity is not None else None
        if permissions is None:
            return False
        return permissions.allows(action, resource.kind, resource.id)

    @hookimpl
    def marathon_auth_not_authorized(self, identity: Identity | None, request: RequestInfo) -> PluginResponse:
        return _NOT_AUTHORIZED


def _positive_int(configuration: Mapping[str, Any], key: str, default: int) -> int:
    value = configuration.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"'{key}' must be a positive integer")
    return value


def _basic_credentials(request: RequestInfo) -> tuple[str | None, str | None] | None:
    """(user, password) from a Basic Authorization header; None without one.

    Malformed Basic credentials come back as (None, None): they count as a
    failed login.  Nothing here is ever logged.
    """
    values = request.header("authorization")
    if not values:
        return None
    scheme, _, token = values[0].strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    if len(values) > 1:
        return None, None
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None, None
    user, sep, password = decoded.partition(":")
    if not sep or not user or len(user.encode()) > MAX_USER_BYTES or len(password.encode()) > MAX_PASSWORD_BYTES:
        return None, None
    return user, password
