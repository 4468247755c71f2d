"""A `kill -9` of the agent's process, then a restart: tasks are re-adopted, not duplicated."""

from __future__ import annotations

import os
import signal

import msgspec
import pytest
import trio
from agent_helpers import crash_after_launch, make_task, pid_alive, task_pids, wait_until

from marathon.agent.checkpoint import EXIT_UNKNOWN_MESSAGE, LAUNCH_INTERRUPTED_MESSAGE, read_records
from marathon.models.resources import Resources

TOTAL = Resources(cpus=2000, mem=4096, disk=1000)


async def test_task_survives_an_agent_crash_and_is_readopted(start_agent, tmp_path):
    work_dir = tmp_path / "agent"
    task_id = make_task("x", argv=["sleep", "1000"]).task_id
    pid = await crash_after_launch(work_dir, task_id)
    assert pid_alive(pid)  # the crash did not take the task with it

    driver, rec = await start_agent(resources=TOTAL)
    driver.reconcile([task_id])
    running = await rec.wait(task_id, "TASK_RUNNING")
    assert running.agent_id == driver.agent_id
    offer = driver.offers()[0]
    assert (offer.free.cpus, offer.free.mem) == (1500, 4032)
    assert 31007 not in {p for r in offer.port_ranges for p in range(r.begin, r.end + 1)}
    # No duplicate was started.  (Polled: the task's shell may still be
    # exec'ing `sleep`, and mid-exec its environment reads as empty.)
    await wait_until(lambda: task_pids(task_id) == [pid])

    driver.kill([task_id])
    killed = await rec.terminal(task_id)
    assert killed.state == "TASK_KILLED"
    assert not pid_alive(pid)
    assert driver.offers()[0].free.cpus == 2000
    # Written by the agent's journal writer, a batch at a time.
    await wait_until(lambda: read_records(work_dir / "checkpoint") == {})


async def test_a_task_recorded_in_the_first_one_file_per_task_layout_is_readopted(start_agent, tmp_path):
    # An agent of the earlier layout crashed: its record is a file of its own.
    work_dir = tmp_path / "agent"
    task_id = make_task("x", argv=["sleep", "1000"]).task_id
    pid = await crash_after_launch(work_dir, task_id)
    checkpoint = work_dir / "checkpoint"
    (record,) = read_records(checkpoint).values()
    (checkpoint / "journal").unlink()
    (checkpoint / f"{task_id}.json").write_bytes(msgspec.json.encode(record))

    driver, rec = await start_agent(resources=TOTAL)
    driver.reconcile([task_id])
    await rec.wait(task_id, "TASK_RUNNING")
    await wait_until(lambda: task_pids(task_id) == [pid])  # re-adopted, not started again
    assert sorted(os.listdir(checkpoint)) == ["journal"]
    assert read_records(checkpoint) == {task_id: record}
    driver.kill([task_id])
    assert (await rec.terminal(task_id)).state == "TASK_KILLED"
    assert not pid_alive(pid)
    await wait_until(lambda: read_records(checkpoint) == {})


async def test_readopted_task_exit_is_detected(start_agent, tmp_path):
    work_dir = tmp_path / "agent"
    task_id = make_task("x", argv=["sleep", "1000"]).task_id
    pid = await crash_after_launch(work_dir, task_id)
    driver, rec = await start_agent(resources=TOTAL)
    driver.reconcile([task_id])
    await rec.wait(task_id, "TASK_RUNNING")
    os.kill(pid, signal.SIGTERM)  # not through the agent: the task ends "by itself"
    final = await rec.terminal(task_id)
    # Its exit status is unknowable unless this process happened to become
    # its parent (as the subreaper an earlier test in this process set up).
    assert final.state == "TASK_FAILED"
    assert final.message in (EXIT_UNKNOWN_MESSAGE, "Command terminated with signal SIGTERM")
    assert driver.offers()[0].free.cpus == 2000


async def test_task_that_died_while_the_agent_was_down_is_reported_failed(start_agent, tmp_path):
    work_dir = tmp_path / "agent"
    task_id = make_task("x", command="x").task_id
    pid = await crash_after_launch(work_dir, task_id, "sleep 1000 & sleep 1000")
    await wait_until(lambda: len(task_pids(task_id)) == 3)
    os.kill(pid, signal.SIGKILL)  # the task's shell dies; its background sleep lives on
    await wait_until(lambda: not pid_alive(pid))

    driver, rec = await start_agent(resources=TOTAL)
    final = await rec.terminal(task_id)  # reported on its own at start...
    assert final.state == "TASK_FAILED"
    # Unknowable exit status, unless this process is the subreaper the shell
    # was re-parented to (an earlier test's driver made it one): then its
    # zombie is re-adopted and reaped with its real status.
    assert final.message in (EXIT_UNKNOWN_MESSAGE, "Command terminated with signal SIGKILL")
    assert task_pids(task_id) == []  # ...and what it left behind was killed
    n = len(rec.statuses)
    driver.reconcile([task_id])  # ...and again when asked
    assert (await rec.wait(task_id, "TASK_FAILED", after=n)).message == final.message
    assert driver.offers()[0].free.cpus == 2000


async def test_process_of_a_task_without_a_record_is_killed_at_start(start_agent, tmp_path):
    # What a crash between a spawn and its checkpoint leaves: a task process
    # the new agent has no record of.
    work_dir = tmp_path / "agent"
    task_id = make_task("x", command="x").task_id
    sandbox = work_dir / "sandboxes" / task_id
    sandbox.mkdir(parents=True)
    env = {"PATH": os.environ["PATH"], "MESOS_SANDBOX": str(sandbox), "MESOS_TASK_ID": task_id}
    stray = await trio.lowlevel.open_process(["sleep", "1000"], env=env, cwd=sandbox,
                                             start_new_session=True)
    try:
        # Until it has exec'd, the child's /proc environ is still ours, and
        # the agent's scan would not see a task process in it.
        await wait_until(lambda: _cmdline(stray.pid).startswith(b"sleep"))
        driver, rec = await start_agent(resources=TOTAL)
        final = await rec.terminal(task_id)
        assert (final.state, final.message) == ("TASK_FAILED", LAUNCH_INTERRUPTED_MESSAGE)
        with trio.fail_after(10):
            assert await stray.wait() == -signal.SIGKILL
        n = len(rec.statuses)
        driver.reconcile([task_id])
        assert (await rec.wait(task_id, "TASK_FAILED", after=n)).message == LAUNCH_INTERRUPTED_MESSAGE
    finally:
        stray.kill()
        with trio.CancelScope(shield=True):
            await stray.wait()


async def test_a_second_agent_on_the_same_work_dir_is_refused(start_agent, tmp_path):
    from marathon.agent.executor import WorkDirInUse

    driver, rec = await start_agent()
    t = make_task(driver.agent_id, command="sleep 1000")
    driver.launch([t])
    await rec.wait(t.task_id, "TASK_RUNNING")
    with pytest.raises(WorkDirInUse, match=rf"in use by another agent \(pid {os.getpid()}\)"):
        await start_agent()  # same name, same work dir
    assert pid_alive(driver.executor.task_pid(t.task_id)), "the first agent's task was left alone"
    assert read_records(tmp_path / "agent" / "checkpoint").keys() == {t.task_id}
    driver.kill([t.task_id])
    assert (await rec.terminal(t.task_id)).state == "TASK_KILLED"


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""
