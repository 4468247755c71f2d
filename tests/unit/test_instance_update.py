"""Instance lifecycle as data: (instance, operation) -> effect."""

from __future__ import annotations

from marathon.instance_update import (
    ChangeGoal,
    Expunged,
    Failure,
    KillTask,
    Noop,
    Provision,
    Schedule,
    StatusUpdate,
    UnknownTerminated,
    Updated,
    resolve,
)
from marathon.models.instance import Instance, InstanceState, TaskStatus, condition_of

IID = "web.instance-11111111-2222-3333-4444-555555555555"


def scheduled() -> Instance:
    return Instance(
        instance_id=IID,
        run_spec_id="/web",
        run_spec_version="2024-01-01T00:00:00.000Z",
        state=InstanceState(condition="Scheduled", since=1),
    )


def provisioned(now: int = 10) -> Instance:
    eff = resolve(scheduled(), Provision(instance_id=IID, agent_id="a1", hostname="h", host_ports=[31000], now=now))
    assert isinstance(eff, Updated)
    return eff.instance


def status(inst: Instance, state: str, now: int = 20, **kw) -> object:
    return resolve(
        inst,
        StatusUpdate(instance_id=IID, status=TaskStatus(task_id=inst.task.task_id, state=state, timestamp=now, **kw), now=now),
    )


def test_schedule_creates_and_refuses_duplicates():
    assert isinstance(resolve(None, Schedule(scheduled())), Updated)
    assert isinstance(resolve(scheduled(), Schedule(scheduled())), Failure)


def test_provision_gives_next_incarnation_task():
    inst = provisioned()
    assert inst.task.task_id == f"{IID}._app.1"
    assert inst.condition == "Provisioned" and inst.agent_id == "a1" and inst.task.host_ports == [31000]


def test_running_sets_started_at_and_active_since():
    eff = status(provisioned(), "TASK_RUNNING", now=42)
    assert isinstance(eff, Updated)
    assert eff.instance.condition == "Running"
    assert eff.instance.task.started_at == 42 and eff.instance.state.active_since == 42


def test_failed_task_with_goal_running_is_scheduled_again_with_next_incarnation():
    running = status(provisioned(), "TASK_RUNNING").instance
    failed = status(running, "TASK_FAILED", now=50).instance
    assert failed.condition == "Failed" and failed.is_scheduled
    again = resolve(failed, Provision(instance_id=IID, agent_id="a1", hostname="h", now=60)).instance
    assert again.task.task_id.endswith("._app.2")


def test_terminal_update_of_decommissioned_instance_expunges():
    running = status(provisioned(), "TASK_RUNNING").instance
    leaving = resolve(running, ChangeGoal(instance_id=IID, goal="Decommissioned", now=30)).instance
    assert leaving.goal == "Decommissioned" and leaving.condition == "Running"
    assert isinstance(status(leaving, "TASK_KILLED"), Expunged)


def test_decommissioning_a_scheduled_instance_expunges_at_once():
    assert isinstance(resolve(scheduled(), ChangeGoal(instance_id=IID, goal="Decommissioned", now=1)), Expunged)


def test_update_for_old_incarnation_is_killed_unless_terminal():
    inst = provisioned()
    old = TaskStatus(task_id=f"{IID}._app.0", state="TASK_RUNNING")
    assert isinstance(resolve(inst, StatusUpdate(instance_id=IID, status=old, now=1)), KillTask)
    old_dead = TaskStatus(task_id=f"{IID}._app.0", state="TASK_FAILED")
    assert isinstance(resolve(inst, StatusUpdate(instance_id=IID, status=old_dead, now=1)), Noop)


def test_unknown_instance_running_is_killed_terminal_is_reported():
    st = TaskStatus(task_id=f"{IID}._app.3", state="TASK_RUNNING")
    assert isinstance(resolve(None, StatusUpdate(instance_id=IID, status=st, now=1)), KillTask)
    st = TaskStatus(task_id=f"{IID}._app.3", state="TASK_FINISHED")
    assert isinstance(resolve(None, StatusUpdate(instance_id=IID, status=st, now=1)), UnknownTerminated)


def test_repeated_running_update_is_a_noop():
    running = status(provisioned(), "TASK_RUNNING", now=5).instance
    assert isinstance(status(running, "TASK_RUNNING", now=5), Noop)


def test_killing_only_tracked_with_feature():
    running = status(provisioned(), "TASK_RUNNING").instance
    assert isinstance(status(running, "TASK_KILLING"), Noop)
    eff = resolve(running, StatusUpdate(instance_id=IID, status=TaskStatus(task_id=running.task.task_id, state="TASK_KILLING"), now=1, task_killing=True))
    assert eff.instance.condition == "Killing"


def test_unreachable_with_zero_inactive_after_is_inactive_at_once():
    running = status(provisioned(), "TASK_RUNNING").instance
    assert status(running, "TASK_UNREACHABLE").instance.condition == "UnreachableInactive"
    eff = resolve(running, StatusUpdate(instance_id=IID, status=TaskStatus(task_id=running.task.task_id, state="TASK_UNREACHABLE"), now=1, inactive_after_ms=60000))
    assert eff.instance.condition == "Unreachable"


def test_task_lost_maps_by_reason():
    assert condition_of("TASK_LOST", "REASON_SLAVE_DISCONNECTED") == "Unreachable"
    assert condition_of("TASK_LOST", None, "Reconciliation: Task is unknown to the agent") == "Unknown"
    assert condition_of("TASK_LOST", "REASON_TASK_UNKNOWN") == "Unknown"
    assert condition_of("TASK_LOST", "REASON_EXECUTOR_TERMINATED") == "Gone"
    assert condition_of("TASK_LOST", None) == "Dropped"
