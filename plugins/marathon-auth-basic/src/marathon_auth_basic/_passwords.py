"""Password hashes: argon2id only, checked without revealing which users exist.

* Passwords are stored only as argon2id hashes (PHC strings,
  `$argon2id$v=19$m=...,t=...,p=...$salt$hash`).  `hash_password` makes them
  with `HASH_PARAMETERS`; the parameters of a stored hash travel inside it, so
  hashes made with other parameters keep working.
* `PasswordBook.check` runs one argon2 verification: against the user's
  hash, or against a dummy hash with the same parameters when the user does
  not exist, so the answer takes as long either way.  libargon2 compares the
  computed tag in constant time.  `check` touches no mutable state, so it may
  run in any thread (the plugin runs it in worker threads, see `_budget`).
* A successful check is remembered (`remember`) for `REMEMBER_SECONDS` as an
  HMAC of (user, password) under a random per-process key, so a client
  sending the same credentials with every request pays the argon2 cost once,
  not on every call (`remembered` is the cheap test, made on the event loop).
  Only the keyed digest is kept, never the password; a wrong password never
  matches a remembered digest and always needs a full check.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections import OrderedDict
from collections.abc import Mapping

from argon2 import PasswordHasher, Type, extract_parameters
from argon2.exceptions import InvalidHashError, VerificationError

# OWASP's minimum for argon2id (2023): 19 MiB, 2 passes, 1 lane.  About 30 ms
# per check on one core: slow enough to make offline guessing expensive, and
# expensive enough online that checks need a budget (`_budget`).
HASH_PARAMETERS = {"time_cost": 2, "memory_cost": 19456, "parallelism": 1, "hash_len": 32, "salt_len": 16}
REMEMBER_SECONDS = 300.0
REMEMBER_MAX = 4096


def hash_password(password: str, **parameters: int) -> str:
    """The argon2id hash (PHC string) to put in the configuration."""
    return PasswordHasher(type=Type.ID, **{**HASH_PARAMETERS, **parameters}).hash(password)


def check_hash(stored: str) -> None:
    """Raise ValueError unless `stored` is an argon2id PHC string."""
    try:
        parameters = extract_parameters(stored)
    except (InvalidHashError, ValueError) as exc:
        raise ValueError("not an argon2 hash (make one with `python -m marathon_auth_basic hash`)") from exc
    if parameters.type is not Type.ID:
        raise ValueError(f"argon2{parameters.type.name.lower()} hashes are not accepted: use argon2id")


class PasswordBook:
    """user -> argon2id hash, and the constant-time check of a login."""

    def __init__(self, hashes: Mapping[str, str]) -> None:
        for stored in hashes.values():
            check_hash(stored)
        self._hashes = dict(hashes)
        self._hasher = PasswordHasher(type=Type.ID)
        # The dummy hash has the parameters of the first real one, so checking
        # an unknown user costs what checking a real one costs.
        first = next(iter(self._hashes.values()), None)
        if first is not None:
            p = extract_parameters(first)
            like = {"time_cost": p.time_cost, "memory_cost": p.memory_cost, "parallelism": p.parallelism,
                    "hash_len": p.hash_len, "salt_len": p.salt_len}
        else:
            like = {}
        self._dummy = hash_password(secrets.token_urlsafe(32), **like)
        self._key = secrets.token_bytes(32)
        self._remembered: OrderedDict[bytes, float] = OrderedDict()

    def __contains__(self, user: str) -> bool:
        return user in self._hashes

    def remembered(self, user: str, password: str, now: float) -> bool:
        """Whether (user, password) passed a check less than `REMEMBER_SECONDS`
        before monotonic time `now`.  Cheap: one HMAC."""
        expires = self._remembered.get(self._digest(user, password))
        return expires is not None and expires > now

    def check(self, user: str, password: str) -> bool:
        """Whether `password` is `user`'s: one full argon2 verification, for an
        unknown user too.  Thread-safe; remembers nothing."""
        stored = self._hashes.get(user)
        try:
            ok = self._hasher.verify(stored if stored is not None else self._dummy, password)
        except (VerificationError, InvalidHashError):  # VerificationError includes VerifyMismatchError
            ok = False
        return ok and stored is not None

    def remember(self, user: str, password: str, now: float) -> None:
        """Remember a successful `check` until `now + REMEMBER_SECONDS`."""
        self._remember(self._digest(user, password), now + REMEMBER_SECONDS, now)

    def _digest(self, user: str, password: str) -> bytes:
        u = user.encode("utf-8", "surrogatepass")
        # Length-prefixed, so ("a:", "b") and ("a", ":b") never collide.
        message = len(u).to_bytes(4, "big") + u + password.encode("utf-8", "surrogatepass")
        return hmac.new(self._key, message, hashlib.sha256).digest()

    def _remember(self, digest: bytes, expires: float, now: float) -> None:
        self._remembered[digest] = expires
        self._remembered.move_to_end(digest)
        # Entries expire in insertion order (fixed lifetime): drop from the front.
        while self._remembered:
            oldest, oldest_expiry = next(iter(self._remembered.items()))
            if oldest_expiry > now and len(self._remembered) <= REMEMBER_MAX:
                break
            del self._remembered[oldest]
