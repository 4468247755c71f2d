"""Adds environment variables and labels to the tasks of matching apps.

A `RunSpecTaskProcessor` in Marathon's terms (its example `env` plugin):
every task Marathon launches for a matching app gets the configured
variables and labels.

Plugin descriptor (`--plugin_conf`)::

    {"plugins": {"env": {
        "plugin": "env-injector",
        "configuration": {
          "env": {"HTTP_PROXY": "http://proxy.corp:3128", "DATACENTER": "eu-1"},
          "labels": {"injected-by": "env-injector"},
          "apps": "/prod/*"}}}}

* `env`, `labels`: string to string.  They never override what the task
  already has: a variable the app sets itself (`env`, secrets included) or
  that Marathon sets (`PORT0`, `HOST`, `MARATHON_APP_ID`, ...) wins, and so
  does a label the app carries.  A plugin that adds defaults cannot break an
  app that knows better.
* `apps`: a glob (or a list of globs) of app ids, default `*` (every app).
  `*` matches any characters, `/` included (`/prod/*` is every app below
  `/prod`), `?` one character, `[abc]` one of a set (Python's `fnmatch`).
  Matching is on the whole id and case-sensitive.

The values are fixed at start-up; they reach the task's environment when it
launches (running tasks keep theirs until restarted).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from typing import Any

from marathon.hookspecs import TaskAdjustment, hookimpl
from marathon.models import AppDefinition

__all__ = ["EnvInjector"]

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_CONFIG_KEYS = {"env", "labels", "apps"}


def _string_map(configuration: Mapping[str, Any], key: str) -> dict[str, str]:
    value = configuration.get(key, {})
    if not isinstance(value, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise ValueError(f"'{key}' must be an object of strings to strings")
    return dict(value)


class EnvInjector:
    def __init__(self) -> None:
        self._env: dict[str, str] = {}
        self._labels: dict[str, str] = {}
        self._apps: re.Pattern[str] = re.compile(fnmatch.translate("*"))

    @hookimpl
    def marathon_configure(self, plugin_id: str, configuration: Mapping[str, Any], marathon_info: Mapping[str, Any]) -> None:
        unknown = set(configuration) - _CONFIG_KEYS
        if unknown:
            raise ValueError(f"unknown configuration keys: {', '.join(sorted(unknown))} (known: {', '.join(sorted(_CONFIG_KEYS))})")
        env = _string_map(configuration, "env")
        bad = [k for k in env if not _ENV_NAME.fullmatch(k)]
        if bad:
            raise ValueError(f"not valid environment variable names: {', '.join(sorted(bad))}")
        labels = _string_map(configuration, "labels")
        apps = configuration.get("apps", "*")
        globs = [apps] if isinstance(apps, str) else apps
        if not isinstance(globs, list) or not globs or not all(isinstance(g, str) and g for g in globs):
            raise ValueError("'apps' must be a glob of app ids or a non-empty list of them")
        self._env, self._labels = env, labels
        self._apps = re.compile("|".join(f"(?:{fnmatch.translate(g)})" for g in globs))

    def matches(self, app_id: str) -> bool:
        return self._apps.match(app_id) is not None

    @hookimpl
    def marathon_task_adjust(self, app: AppDefinition, task: TaskAdjustment) -> None:
        if not self.matches(app.id):
            return
        for name, value in self._env.items():
            # app.env too: a secret reference is not in task.env yet, and still wins.
            if name not in task.env and name not in app.env:
                task.env[name] = value
        for name, value in self._labels.items():
            task.labels.setdefault(name, value)
