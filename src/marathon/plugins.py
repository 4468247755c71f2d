"""The plugin manager: built-in behaviour and plugins behind one set of hooks.

`plugin_manager()` registers the hook specifications of `marathon.hookspecs`
and the built-in plugins (`marathon.builtin.*`), then any extra plugins, and
checks that every implementation matches a specification
(`check_pending()`), so a misspelled hook stops start-up loudly.
"""

from __future__ import annotations

from collections.abc import Iterable

import pluggy

from . import hookspecs
from .builtin import health as builtin_health

BUILTINS = (("marathon.builtin.health", builtin_health),)


def plugin_manager(extra: Iterable[tuple[str, object]] = ()) -> pluggy.PluginManager:
    pm = pluggy.PluginManager("marathon")
    pm.add_hookspecs(hookspecs)
    for name, plugin in BUILTINS:
        pm.register(plugin, name=name)
    for name, plugin in extra:
        pm.register(plugin, name=name)
    pm.check_pending()
    return pm


def health_checkers(pm: pluggy.PluginManager) -> dict[str, hookspecs.HealthChecker]:
    merged: dict[str, hookspecs.HealthChecker] = {}
    # pluggy calls the most recently registered plugin first: apply in reverse
    # so that later registrations win.
    for provided in reversed(pm.hook.marathon_health_checkers()):
        merged.update(provided or {})
    return merged
