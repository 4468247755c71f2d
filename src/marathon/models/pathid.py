"""Path ids: `/`-separated, lower-case, absolute once canonicalized.

Marathon's PathId rules (SPEC.md 2.3).  Ids are plain `str` in canonical form
(`/prod/web`, root is `/`) everywhere inside the program; this module parses,
resolves and validates them, and converts to the "safe" form used in Mesos
facing ids (`prod_web`).
"""

from __future__ import annotations

import re

ID_SEGMENT_REGEX = (
    r"^(([a-z0-9]|[a-z0-9][a-z0-9\-]*[a-z0-9])\.)*([a-z0-9]|[a-z0-9][a-z0-9\-]*[a-z0-9])$"
)
_SEGMENT = re.compile(ID_SEGMENT_REGEX)
RESERVED_LAST = ("restart", "tasks", "versions", ".", "..")

ROOT = "/"


def segments(path: str) -> list[str]:
    return [s for s in path.split("/") if s]


def resolve(raw: str, base: str = ROOT) -> str:
    """Resolve `raw` (absolute or relative to `base`) into a canonical id.

    `.` and `..` are resolved; `..` above the root is dropped.
    """
    parts = [] if raw.startswith("/") else segments(base)
    for seg in segments(raw):
        if seg == ".":
            continue
        if seg == "..":
            if parts:
                parts.pop()
            continue
        parts.append(seg)
    return "/" + "/".join(parts)


def segment_errors(raw: str) -> list[str]:
    """Messages for segments of `raw` that break the id grammar (before resolving)."""
    errors: list[str] = []
    segs = segments(raw)
    for seg in segs:
        if seg in (".", ".."):
            continue
        if not _SEGMENT.match(seg):
            msg = f"must fully match regular expression '{ID_SEGMENT_REGEX}'"
            if msg not in errors:
                errors.append(msg)
    if segs and segs[-1] in RESERVED_LAST:
        errors.append(
            "must not end with any of the following reserved keywords: "
            + ", ".join(RESERVED_LAST)
        )
    return errors


def parent(path: str) -> str:
    segs = segments(path)
    return "/" + "/".join(segs[:-1])


def name(path: str) -> str:
    segs = segments(path)
    return segs[-1] if segs else ""


def is_root(path: str) -> bool:
    return path == ROOT


def ancestors(path: str) -> list[str]:
    """All proper ancestors, root first (`/a/b/c` -> `/`, `/a`, `/a/b`)."""
    segs = segments(path)
    return ["/" + "/".join(segs[:i]) for i in range(len(segs))]


def is_ancestor(ancestor: str, path: str) -> bool:
    """True if `path` lies strictly below `ancestor`."""
    if ancestor == ROOT:
        return path != ROOT
    return path.startswith(ancestor + "/")


def top_level(path: str) -> str | None:
    """The top-level group of a service (`/dev/team/app` -> `/dev`), None for `/app`."""
    segs = segments(path)
    return "/" + segs[0] if len(segs) > 1 else None


def safe(path: str) -> str:
    """`/prod/db/mysql` -> `prod_db_mysql` (ids never contain `_`)."""
    return "_".join(segments(path))


def from_safe(safe_id: str) -> str:
    return "/" + safe_id.replace("_", "/")


def reversed_dotted(path: str) -> str:
    """Mesos task name form: `/a/b` -> `b.a`."""
    return ".".join(reversed(segments(path)))
