"""marathon-env-injector without a server."""

from __future__ import annotations

import msgspec
import pytest
from marathon_env_injector import EnvInjector

from marathon.hookspecs import TaskAdjustment
from marathon.models import AppDefinition


def injector(**configuration) -> EnvInjector:
    p = EnvInjector()
    p.marathon_configure(plugin_id="env", configuration=configuration, marathon_info={})
    return p


def adjust(p: EnvInjector, app_id: str, env: dict | None = None, app_env: dict | None = None,
           labels: dict | None = None) -> TaskAdjustment:
    app = msgspec.convert({"id": app_id, "cmd": "true", "env": app_env or {}}, AppDefinition)
    task = TaskAdjustment(task_id="t", env=dict(env or {}), labels=dict(labels or {}))
    p.marathon_task_adjust(app=app, task=task)
    return task


def test_adds_env_and_labels_to_matching_apps_only():
    p = injector(env={"INJECTED": "yes"}, labels={"team": "platform"}, apps="/dev/*")
    task = adjust(p, "/dev/web", env={"PORT0": "31000"})
    assert task.env == {"PORT0": "31000", "INJECTED": "yes"} and task.labels == {"team": "platform"}
    for other in ("/dev", "/development/web", "/prod/web"):
        assert adjust(p, other).env == {}


def test_the_app_and_marathon_win_over_injected_values():
    p = injector(env={"INJECTED": "plugin", "PORT0": "1", "SECRET": "plugin"}, labels={"team": "plugin"})
    task = adjust(p, "/a", env={"INJECTED": "app", "PORT0": "31000"},
                  app_env={"INJECTED": "app", "SECRET": {"secret": "s1"}}, labels={"team": "app"})
    assert task.env == {"INJECTED": "app", "PORT0": "31000"}
    assert task.labels == {"team": "app"}


def test_default_is_every_app_and_lists_of_globs_work():
    assert adjust(injector(env={"A": "1"}), "/x/y").env == {"A": "1"}
    p = injector(env={"A": "1"}, apps=["/a/*", "/b"])
    assert [bool(adjust(p, i).env) for i in ("/a/x", "/b", "/b/x", "/c")] == [True, True, False, False]


@pytest.mark.parametrize("configuration", [
    {"env": {"1BAD": "x"}}, {"env": {"A": 1}}, {"labels": ["x"]}, {"apps": []}, {"apps": 3}, {"environment": {}},
])
def test_bad_configuration_is_refused(configuration):
    with pytest.raises(ValueError):
        injector(**configuration)
