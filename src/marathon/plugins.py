"""The plugin manager: built-in behaviour and plugins behind one set of hooks.

Built-in plugins (`marathon.builtin.*`) are always registered.  Other plugins
are loaded from the plugin descriptor (`--plugin_conf`, Marathon's format):

    {"plugins": {
       "<plugin id>": {
         "plugin": "<entry point name in the `marathon.plugins` group>",
         "implementation": "<module>:<attribute>",   (optional with an entry point)
         "enabled": true, "configuration": {...}, "tags": [...], "info": {...}}}}

A plugin is either an entry point of an installed package (`pip install` a
package declaring `[project.entry-points."marathon.plugins"]`) or any module
importable from `--plugin_dir` named by `implementation`.  The loaded object
may be a module, an instance, or a class (instantiated without arguments).
Each plugin gets its `configuration` through `marathon_configure`, then
`check_pending()` makes sure every hook implementation matches a
specification, so a misspelled hook stops start-up loudly.  Any failure here
is a `PluginError`; the server exits with Marathon's code 102.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import json
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pluggy

from . import hookspecs
from .builtin import haproxy as builtin_haproxy
from .builtin import health as builtin_health
from .builtin import metrics_sinks as builtin_metrics_sinks
from .builtin.secrets_file import FileSecrets

ENTRY_POINT_GROUP = "marathon.plugins"
BUILTINS: tuple[tuple[str, object], ...] = (
    ("marathon.builtin.health", builtin_health),
    ("marathon.builtin.haproxy", builtin_haproxy),
    ("marathon.builtin.metrics", builtin_metrics_sinks),
)
# Hooks of which at most one plugin may be active (Marathon: zero or one
# Authenticator and Authorizer).
SINGULAR_HOOKS = ("marathon_auth_authenticate", "marathon_auth_authorize")


class PluginError(Exception):
    """A plugin could not be found, loaded, configured or validated."""


@dataclass(frozen=True)
class PluginEntry:
    """One entry of the plugin descriptor (what `/v2/plugins` lists)."""

    id: str
    plugin: str
    implementation: str
    enabled: bool = True
    configuration: Mapping[str, Any] = field(default_factory=dict)
    tags: list[str] | None = None
    info: Mapping[str, Any] | None = None

    def json(self) -> dict:
        out: dict[str, Any] = {"id": self.id, "plugin": self.plugin, "implementation": self.implementation}
        if self.tags is not None:
            out["tags"] = self.tags
        if self.info is not None:
            out["info"] = dict(self.info)
        return out


def read_descriptor(path: str | Path) -> list[PluginEntry]:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise PluginError(f"cannot read the plugin descriptor {path}: {exc}") from exc
    plugins = data.get("plugins") if isinstance(data, dict) else None
    if not isinstance(plugins, dict):
        raise PluginError(f"plugin descriptor {path}: expected {{\"plugins\": {{<id>: {{...}}}}}}")
    entries = []
    for plugin_id, spec in plugins.items():
        if not isinstance(spec, dict) or not (spec.get("plugin") or spec.get("implementation")):
            raise PluginError(f"plugin descriptor {path}: plugin '{plugin_id}' needs 'plugin' or 'implementation'")
        entries.append(
            PluginEntry(
                id=plugin_id,
                plugin=str(spec.get("plugin") or ""),
                implementation=str(spec.get("implementation") or ""),
                enabled=bool(spec.get("enabled", True)),
                configuration=spec.get("configuration") or {},
                tags=spec.get("tags"),
                info=spec.get("info"),
            )
        )
    return entries


def _entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def _load(entry: PluginEntry, entry_points: Mapping[str, importlib.metadata.EntryPoint]) -> object:
    try:
        if entry.implementation:
            module_name, _, attr = entry.implementation.partition(":")
            if not attr and "." in module_name and module_name not in sys.modules:
                try:
                    importlib.import_module(module_name)
                except ImportError:
                    module_name, _, attr = module_name.rpartition(".")
            obj: Any = importlib.import_module(module_name)
            for part in filter(None, attr.split(".")):
                obj = getattr(obj, part)
        elif entry.plugin in entry_points:
            obj = entry_points[entry.plugin].load()
        else:
            known = ", ".join(sorted(entry_points)) or "none installed"
            raise PluginError(f"Plugin not found: '{entry.plugin}' (plugin '{entry.id}'; installed: {known})")
    except PluginError:
        raise
    except Exception as exc:
        raise PluginError(f"plugin '{entry.id}' failed to load: {type(exc).__name__}: {exc}") from exc
    if inspect.isclass(obj):
        try:
            obj = obj()
        except Exception as exc:
            raise PluginError(f"plugin '{entry.id}': {obj.__name__}() failed: {exc}") from exc
    return obj


@dataclass
class Plugins:
    """The plugin manager and what the descriptor said."""

    pm: pluggy.PluginManager
    entries: list[PluginEntry]

    def has(self, hook: str) -> bool:
        """Whether any registered plugin implements `hook`."""
        return bool(getattr(self.pm.hook, hook).get_hookimpls())


def plugin_manager(
    extra: Iterable[tuple[str, object]] = (),
    *,
    descriptor: str | None = None,
    plugin_dir: str | None = None,
    framework_name: str = "marathon",
) -> pluggy.PluginManager:
    return load_plugins(extra, descriptor=descriptor, plugin_dir=plugin_dir, framework_name=framework_name).pm


def load_plugins(
    extra: Iterable[tuple[str, object]] = (),
    *,
    descriptor: str | None = None,
    plugin_dir: str | None = None,
    framework_name: str = "marathon",
    secrets_dir: str | None = None,
) -> Plugins:
    pm = pluggy.PluginManager("marathon")
    pm.add_hookspecs(hookspecs)
    for name, plugin in BUILTINS:
        pm.register(plugin, name=name)
    if secrets_dir:
        pm.register(FileSecrets(Path(secrets_dir)), name="marathon.builtin.secrets_file")

    if plugin_dir:
        if not Path(plugin_dir).is_dir():
            raise PluginError(f"--plugin_dir {plugin_dir} is not a directory")
        if plugin_dir not in sys.path:
            sys.path.insert(0, plugin_dir)
    entries = read_descriptor(descriptor) if descriptor else []
    entry_points = _entry_points()
    loaded: list[tuple[PluginEntry, object]] = []
    for entry in entries:
        if not entry.enabled:
            continue
        plugin = _load(entry, entry_points)
        try:
            pm.register(plugin, name=entry.id)
        except (ValueError, pluggy.PluginValidationError) as exc:
            raise PluginError(f"plugin '{entry.id}' is invalid: {exc}") from exc
        loaded.append((entry, plugin))
    for name, plugin in extra:
        pm.register(plugin, name=name)

    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"a plugin is invalid: {exc}") from exc
    for hook in SINGULAR_HOOKS:
        impls = getattr(pm.hook, hook).get_hookimpls()
        if len(impls) > 1:
            names = ", ".join(sorted(i.plugin_name for i in impls))
            raise PluginError(f"at most one plugin may implement {hook}; found: {names}")

    info = {"frameworkName": framework_name}
    for entry, plugin in loaded:
        configure = pm.subset_hook_caller(
            "marathon_configure", remove_plugins=[p for p in pm.get_plugins() if p is not plugin]
        )
        try:
            configure(plugin_id=entry.id, configuration=dict(entry.configuration), marathon_info=info)
        except Exception as exc:
            raise PluginError(f"plugin '{entry.id}' refused its configuration: {exc}") from exc
    return Plugins(pm=pm, entries=[e for e, _ in loaded])


def health_checkers(pm: pluggy.PluginManager) -> dict[str, hookspecs.HealthChecker]:
    merged: dict[str, hookspecs.HealthChecker] = {}
    # pluggy calls the most recently registered plugin first: apply in reverse
    # so that later registrations win.
    for provided in reversed(pm.hook.marathon_health_checkers()):
        merged.update(provided or {})
    return merged
