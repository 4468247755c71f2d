"""One exception hierarchy for everything a request can be refused for.

Every error that reaches the HTTP layer is a `MarathonError`; the API maps it
to a status code and body in exactly one place (`marathon.api._http`), using
the `status` and `body()` defined here.  Expected "no" answers inside the
system (no offer fits, an app is backing off) are values, not exceptions.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass


class MarathonError(Exception):
    """Base of all errors with a defined HTTP status and body."""

    status: int = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def body(self) -> dict:
        return {"message": self.message}


@dataclass(frozen=True, slots=True)
class Violation:
    """One validation failure: a JSON path (`/container/portMappings(0)/hostPort`)
    and the message Marathon writes for it."""

    path: str
    message: str


def group_violations(violations: Iterable[Violation]) -> list[dict]:
    """Marathon's `details` list: one entry per path, messages in order."""
    by_path: dict[str, list[str]] = {}
    for v in violations:
        msgs = by_path.setdefault(v.path, [])
        if v.message not in msgs:
            msgs.append(v.message)
    return [{"path": p, "errors": m} for p, m in by_path.items()]


class MalformedJson(MarathonError):
    """The body is not JSON text at all (400, `details` is a string)."""

    status = 400

    def __init__(self, details: str, message: str = "Invalid JSON") -> None:
        super().__init__(message)
        self.details = details

    def body(self) -> dict:
        return {"message": self.message, "details": self.details}


class EmptyBody(MalformedJson):
    def __init__(self) -> None:
        super().__init__("No content to map due to end-of-input", "Please specify data in JSON format")


class InvalidJson(MarathonError):
    """Well-formed JSON of the wrong shape or type (422 `Invalid JSON`)."""

    status = 422

    def __init__(self, violations: Sequence[Violation]) -> None:
        super().__init__("Invalid JSON")
        self.violations = list(violations)

    def body(self) -> dict:
        return {"message": self.message, "details": group_violations(self.violations)}


class ValidationFailed(MarathonError):
    """A semantic rule is broken (422 `Object is not valid`)."""

    status = 422

    def __init__(self, violations: Sequence[Violation]) -> None:
        super().__init__("Object is not valid")
        self.violations = list(violations)

    def body(self) -> dict:
        return {"message": self.message, "details": group_violations(self.violations)}


class IllegalArgument(MarathonError):
    """Marathon's IllegalArgumentException: 422 with a message only."""

    status = 422


class BadRequest(MarathonError):
    status = 400


class Unauthenticated(MarathonError):
    status = 401


class Forbidden(MarathonError):
    status = 403


class NotFound(MarathonError):
    status = 404


class AppNotFound(NotFound):
    def __init__(self, app_id: str, version: str | None = None) -> None:
        suffix = f" in version {version}" if version else ""
        super().__init__(f"App '{app_id}' does not exist{suffix}")


class GroupNotFound(NotFound):
    def __init__(self, group_id: str, version: str | None = None) -> None:
        suffix = f" in version {version}" if version else ""
        super().__init__(f"Group '{group_id}' does not exist{suffix}")


class TaskNotFound(NotFound):
    def __init__(self, task_id: str) -> None:
        super().__init__(f"Task '{task_id}' does not exist")


class DeploymentNotFound(NotFound):
    def __init__(self, deployment_id: str) -> None:
        super().__init__(f"DeploymentPlan {deployment_id} does not exist")


class Conflict(MarathonError):
    status = 409


class AppLocked(Conflict):
    """The run spec is part of a running deployment (409 with `deployments`)."""

    def __init__(self, deployment_ids: Sequence[str]) -> None:
        first = deployment_ids[0] if deployment_ids else ""
        super().__init__(
            "App is locked by one or more deployments. Override with the option "
            f"'?force=true'. View details at '/v2/deployments/{first}'."
        )
        self.deployment_ids = list(deployment_ids)

    def body(self) -> dict:
        return {"message": self.message, "deployments": [{"id": d} for d in self.deployment_ids]}


class TooManyDeployments(MarathonError):
    status = 403

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"Max number ({limit}) of running deployments is achieved. "
            "Wait for existing deployments to complete."
        )


class Unavailable(MarathonError):
    """The system cannot answer now (no leader, store timeout): 503."""

    status = 503


class Busy(Unavailable):
    """Too much is in flight to take this request now; the same request may
    well succeed a moment later (503 with `Retry-After: <retry_after>`)."""

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RequestTimeout(MarathonError):
    """The client took too long to send its request (408)."""

    status = 408


class StorageError(MarathonError):
    """The store refused or failed a write; nothing was changed."""

    status = 503


class TooLargeToStore(StorageError):
    """A value is over the store's size limit (--zk_max_node_size): nothing
    was changed, and sending the same request again cannot help, so it is a
    413 naming the limit, not a 503 that clients retry."""

    status = 413


class PayloadTooLarge(MarathonError):
    status = 413


class HeadersTooLarge(MarathonError):
    status = 431
