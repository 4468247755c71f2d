"""The agent side of the epoch rule: a command of a lower epoch than the
highest seen is refused (nothing runs), a higher one is checkpointed before
it is acted on.  A deposed leader can never act through an agent."""

from __future__ import annotations

import json

import trio

from marathon.agent.daemon import AgentDaemon, DaemonConfig, load_meta, save_meta
from marathon.agent.simulated import SimulatedExecutor
from marathon.models import agent_protocol as proto
from marathon.models.launch import TaskLaunch
from marathon.models.resources import Resources


def task(agent_id: str, n: int) -> TaskLaunch:
    return TaskLaunch(task_id=f"a.instance-{n}._app.1", instance_id=f"a.instance-{n}", app_id="/a",
                      agent_id=agent_id, shell=True, command="sleep 1")


async def test_lower_epochs_are_refused_and_higher_ones_checkpointed_first(tmp_path, caplog):
    caplog.set_level("INFO", logger="marathon.agent")
    meta = load_meta(tmp_path)
    meta.max_epoch = 5
    save_meta(tmp_path, meta)
    send, statuses = trio.open_memory_channel(100)
    answers_send, answers = trio.open_memory_channel(100)
    executor = SimulatedExecutor(tmp_path, agent_id=meta.agent_id, send=send, answers=answers_send)
    daemon = AgentDaemon(DaemonConfig(masters=["http://127.0.0.1:9"], secret=b"x" * 16, work_dir=tmp_path,
                                      hostname="h", endpoint="http://h:5051", resources=Resources(),
                                      port_ranges=[], attributes=[]),
                         executor, statuses, answers)
    async with trio.open_nursery() as nursery:
        await nursery.start(executor.run)
        daemon._stream_id = "stream"
        scope = trio.CancelScope()  # the session's: cancelling it drops the stream
        daemon._apply(proto.Launch(epoch=4, tasks=[task(meta.agent_id, 1)]), nursery_stub(scope))
        assert scope.cancel_called, "a deposed leader's stream is dropped"
        assert executor.live_tasks() == []
        assert "command_refused type=Launch epoch=4 max_epoch=5" in caplog.text

        scope = trio.CancelScope()
        daemon._apply(proto.Launch(epoch=6, tasks=[task(meta.agent_id, 2), task("other", 3)]),
                      nursery_stub(scope))
        assert not scope.cancel_called
        assert json.loads((tmp_path / "meta.json").read_text())["max_epoch"] == 6
        assert [t[0].task_id for t in executor.live_tasks()] == ["a.instance-2._app.1"], "only its own tasks"
        assert "command_accepted type=LAUNCH epoch=6 tasks=1" in caplog.text
        nursery.cancel_scope.cancel()


class nursery_stub:
    """What `_apply` uses of the session's nursery: its cancel scope."""

    def __init__(self, scope: trio.CancelScope) -> None:
        self.cancel_scope = scope

    def start_soon(self, *args) -> None:
        raise AssertionError("nothing is started by a LAUNCH")
