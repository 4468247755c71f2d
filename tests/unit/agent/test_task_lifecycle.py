"""Tasks as real processes: start, output, environment, exit codes, kills."""

from __future__ import annotations

import logging
import os
import pwd
import sys

import pytest
import trio
from agent_helpers import Recorder, make_task, pid_alive, sandbox_of, task_pids, wait_until

from marathon.agent.checkpoint import read_records
from marathon.cluster.local import LocalDriver


async def test_shell_task_runs_and_its_output_lands_in_the_sandbox(start_agent, tmp_path):
    driver, rec = await start_agent()
    t = make_task(driver.agent_id, command="echo hello; echo oops >&2")
    driver.launch([t])
    final = await rec.terminal(t.task_id)
    assert rec.states(t.task_id) == ["TASK_STAGING", "TASK_STARTING", "TASK_RUNNING", "TASK_FINISHED"]
    assert final.exit_code == 0
    sandbox = sandbox_of(tmp_path / "agent", t.task_id)
    assert (sandbox / "stdout").read_text() == "hello\n"
    assert (sandbox / "stderr").read_text() == "oops\n"


async def test_argv_task_is_executed_without_a_shell(start_agent, tmp_path):
    driver, rec = await start_agent()
    t = make_task(driver.agent_id, argv=["printf", "%s|", "a b", "$HOME", "*"])
    driver.launch([t])
    assert (await rec.terminal(t.task_id)).state == "TASK_FINISHED"
    assert (sandbox_of(tmp_path / "agent", t.task_id) / "stdout").read_text() == "a b|$HOME|*|"


async def test_environment_is_exactly_the_tasks_plus_mesos_vars(start_agent, tmp_path, monkeypatch):
    monkeypatch.setenv("AGENT_ONLY_SECRET", "must-not-leak")
    driver, rec = await start_agent()
    env = {"PORT0": "31001", "PORT": "31001", "PORTS": "31001,31002", "HOST": "127.0.0.1",
           "MARATHON_APP_ID": "/test/app", "LANG": "C"}
    t = make_task(driver.agent_id, command="env", env=env)
    driver.launch([t])
    await rec.terminal(t.task_id)
    sandbox = sandbox_of(tmp_path / "agent", t.task_id)
    seen = dict(line.split("=", 1) for line in (sandbox / "stdout").read_text().splitlines())
    for key, value in env.items():
        assert seen[key] == value
    assert seen["MESOS_SANDBOX"] == str(sandbox)
    assert seen["MESOS_TASK_ID"] == t.task_id
    assert seen["PATH"] == os.environ["PATH"]
    assert "AGENT_ONLY_SECRET" not in seen
    assert seen["PWD"] == str(sandbox)


async def test_exit_status_decides_finished_or_failed(start_agent):
    driver, rec = await start_agent()
    ok = make_task(driver.agent_id, command="exit 0")
    bad = make_task(driver.agent_id, command="exit 3")
    sig = make_task(driver.agent_id, command="kill -USR1 $$")
    driver.launch([ok, bad, sig])
    assert (await rec.terminal(ok.task_id)).state == "TASK_FINISHED"
    failed = await rec.terminal(bad.task_id)
    assert (failed.state, failed.exit_code, failed.message) == (
        "TASK_FAILED", 3, "Command exited with status 3")
    signalled = await rec.terminal(sig.task_id)
    assert signalled.state == "TASK_FAILED"
    assert signalled.message == "Command terminated with signal SIGUSR1"


async def test_missing_executable_fails_the_launch_clearly(start_agent):
    driver, rec = await start_agent()
    before = driver.offers()[0].free  # (ports other processes use are not offered)
    t = make_task(driver.agent_id, argv=["no-such-program-anywhere", "x"])
    driver.launch([t])
    final = await rec.terminal(t.task_id)
    assert final.state == "TASK_FAILED"
    assert "no-such-program-anywhere" in final.message and "not found" in final.message
    assert driver.offers()[0].free == before, "the failed launch gave its resources back"


async def test_kill_reports_killing_then_killed_and_the_process_is_gone(start_agent):
    driver, rec = await start_agent()
    t = make_task(driver.agent_id, argv=["sleep", "1000"], kill_grace_seconds=10)
    driver.launch([t])
    await rec.wait(t.task_id, "TASK_RUNNING")
    pid = driver.executor.task_pid(t.task_id)
    assert pid is not None and pid_alive(pid)
    start = trio.current_time()
    driver.kill([t.task_id])
    final = await rec.terminal(t.task_id)
    assert trio.current_time() - start < 5  # sleep obeys SIGTERM: no need for the grace
    assert final.state == "TASK_KILLED"
    assert rec.states(t.task_id)[-2:] == ["TASK_KILLING", "TASK_KILLED"]
    assert not pid_alive(pid)


async def test_task_ignoring_sigterm_is_sigkilled_after_its_grace(start_agent, tmp_path):
    driver, rec = await start_agent()
    t = make_task(driver.agent_id, command="trap '' TERM; touch ready; sleep 1000",
                  kill_grace_seconds=0.5)
    driver.launch([t])
    ready = sandbox_of(tmp_path / "agent", t.task_id) / "ready"
    await wait_until(ready.exists)
    start = trio.current_time()
    driver.kill([t.task_id])
    final = await rec.terminal(t.task_id)
    elapsed = trio.current_time() - start
    assert final.state == "TASK_KILLED"
    assert final.message == "Command terminated with signal SIGKILL"
    assert 0.5 <= elapsed < 5
    assert task_pids(t.task_id) == []


async def test_kill_grace_override_escalates_at_once(start_agent, tmp_path):
    driver, rec = await start_agent()
    t = make_task(driver.agent_id, command="trap '' TERM; touch ready; sleep 1000",
                  kill_grace_seconds=60)
    driver.launch([t])
    await wait_until((sandbox_of(tmp_path / "agent", t.task_id) / "ready").exists)
    driver.kill([t.task_id])
    driver.kill([t.task_id], grace_seconds=0)
    with trio.fail_after(10):
        assert (await rec.terminal(t.task_id)).state == "TASK_KILLED"
    assert rec.states(t.task_id).count("TASK_KILLING") == 1


async def test_grandchildren_die_with_a_killed_task(start_agent):
    driver, rec = await start_agent()
    t = make_task(driver.agent_id, command="sleep 1000 & sleep 1000")
    driver.launch([t])
    await wait_until(lambda: len(task_pids(t.task_id)) == 3)  # sh + two sleeps
    pids = task_pids(t.task_id)
    driver.kill([t.task_id])
    await rec.terminal(t.task_id)
    assert task_pids(t.task_id) == []
    assert not any(pid_alive(p) for p in pids)


async def test_what_a_task_leaves_behind_dies_when_it_exits(start_agent, tmp_path):
    driver, rec = await start_agent()
    # The background sleep outlives the shell: it must not outlive the task.
    t = make_task(driver.agent_id, command="sleep 1000 & echo $! > bg; exit 0")
    driver.launch([t])
    assert (await rec.terminal(t.task_id)).state == "TASK_FINISHED"
    bg = int((sandbox_of(tmp_path / "agent", t.task_id) / "bg").read_text())
    assert not pid_alive(bg)
    assert task_pids(t.task_id) == []


@pytest.mark.parametrize("cgroups", ["auto", "off"])
async def test_daemonized_grandchild_is_killed_too(start_agent, tmp_path, cgroups):
    driver, rec = await start_agent(cgroups=cgroups)
    # setsid + double fork: leaves the task's process group and session.
    daemon = f"{sys.executable} -c 'import os,time\nif os.fork()==0:\n os.setsid()\n " \
             "open(\"d\",\"w\").write(str(os.getpid()))\n time.sleep(1000)'"
    t = make_task(driver.agent_id, command=f"{daemon}; sleep 1000")
    driver.launch([t])
    pidfile = sandbox_of(tmp_path / "agent", t.task_id) / "d"
    await wait_until(lambda: pidfile.exists() and pidfile.read_text())
    pid = int(pidfile.read_text())
    assert pid_alive(pid)
    driver.kill([t.task_id])
    await rec.terminal(t.task_id)
    with trio.fail_after(5):
        await wait_until(lambda: not pid_alive(pid))


@pytest.mark.skipif(os.geteuid() != 0, reason="runs a task as another user: needs root")
@pytest.mark.parametrize("cgroups", ["auto", "off"])
async def test_task_runs_as_its_user(start_agent, tmp_path, cgroups):
    driver, rec = await start_agent(cgroups=cgroups)
    t = make_task(driver.agent_id, command="id -un; id -gn; touch mine", user="nobody")
    driver.launch([t])
    final = await rec.terminal(t.task_id)
    assert final.state == "TASK_FINISHED", final.message
    sandbox = sandbox_of(tmp_path / "agent", t.task_id)
    assert (sandbox / "stdout").read_text().split()[0] == "nobody"
    assert (sandbox / "mine").stat().st_uid == pwd.getpwnam("nobody").pw_uid


async def test_kill_and_reconcile_of_unknown_tasks_answer_task_lost(start_agent):
    driver, rec = await start_agent()
    driver.kill(["ghost.instance-1._app.1"])
    driver.reconcile(["ghost.instance-2._app.1"])
    for tid in ("ghost.instance-1._app.1", "ghost.instance-2._app.1"):
        lost = await rec.wait(tid, "TASK_LOST")
        assert lost.message == "Reconciliation: Task is unknown to the agent"
        assert lost.reason == "REASON_TASK_UNKNOWN"


async def test_a_launch_arriving_after_its_kill_never_starts(start_agent, tmp_path):
    """The kill of a task the agent does not know yet is remembered: when the
    launch meant to be killed comes after it, nothing starts."""
    driver, rec = await start_agent()
    t = make_task(driver.agent_id, command="sleep 3600")
    driver.kill([t.task_id])
    assert (await rec.wait(t.task_id, "TASK_LOST")).reason == "REASON_TASK_UNKNOWN"
    driver.launch([t])
    marker = make_task(driver.agent_id, command="true")  # statuses are ordered
    driver.launch([marker])
    await rec.terminal(marker.task_id)
    assert rec.states(t.task_id) == ["TASK_LOST", "TASK_LOST"]
    assert not sandbox_of(tmp_path / "agent", t.task_id).exists()
    assert t.task_id not in driver.executor.live_task_ids()


async def test_a_launch_asking_for_what_the_agent_cannot_give_starts_nothing(start_agent, tmp_path):
    from marathon.models.launch import ContainerSpec, NetworkSpec

    driver, rec = await start_agent(oci_runtime="none")  # an agent without an image runtime
    t = make_task(driver.agent_id, command="cat /etc/os-release",
                  container=ContainerSpec(type="DOCKER", image="alpine"),
                  networks=[NetworkSpec(mode="container", name="no-such-net")])
    driver.launch([t])
    failed = await rec.terminal(t.task_id)
    assert rec.states(t.task_id) == ["TASK_FAILED"]
    assert failed.reason == "REASON_CONTAINER_LAUNCH_FAILED"
    assert "container image 'alpine'" in failed.message and "'no-such-net'" in failed.message
    assert not sandbox_of(tmp_path / "agent", t.task_id).exists()
    assert driver.executor.allocated.cpus == 0
    driver.reconcile([t.task_id])
    assert (await rec.wait(t.task_id, "TASK_FAILED", after=len(rec.statuses))).message == failed.message


async def test_kill_of_a_finished_task_does_nothing(start_agent):
    driver, rec = await start_agent()
    t = make_task(driver.agent_id, command="true")
    driver.launch([t])
    await rec.terminal(t.task_id)
    n = len(rec.statuses)
    driver.kill([t.task_id])
    marker = make_task(driver.agent_id, command="true")  # statuses are ordered
    driver.launch([marker])
    await rec.terminal(marker.task_id)
    assert [s for s in rec.statuses[n:] if s.task_id == t.task_id] == []


async def test_reconcile_reports_current_states(start_agent):
    driver, rec = await start_agent()
    running = make_task(driver.agent_id, argv=["sleep", "1000"])
    done = make_task(driver.agent_id, command="exit 4")
    driver.launch([running, done])
    await rec.wait(running.task_id, "TASK_RUNNING")
    await rec.terminal(done.task_id)
    n = len(rec.statuses)
    driver.reconcile([running.task_id, done.task_id])
    again = await rec.wait(running.task_id, "TASK_RUNNING", after=n)
    assert again.agent_id == driver.agent_id
    assert (await rec.wait(done.task_id, "TASK_FAILED", after=n)).exit_code == 4
    n = len(rec.statuses)
    driver.reconcile(None)
    await rec.wait(running.task_id, "TASK_RUNNING", after=n)
    # Both in one round: the listed ids, then every live task not listed,
    # each once.
    other = make_task(driver.agent_id, argv=["sleep", "1000"])
    driver.launch([other])
    await rec.wait(other.task_id, "TASK_RUNNING")
    n = len(rec.statuses)
    driver.reconcile([running.task_id, done.task_id], others=True)
    marker = make_task(driver.agent_id, command="true")  # statuses are ordered
    driver.launch([marker])
    await rec.terminal(marker.task_id)
    answers = [(s.task_id, s.state) for s in rec.statuses[n:] if s.task_id != marker.task_id]
    assert answers == [
        (running.task_id, "TASK_RUNNING"), (done.task_id, "TASK_FAILED"), (other.task_id, "TASK_RUNNING"),
    ]


async def test_statuses_carry_agent_id_and_injected_time(start_agent):
    clock = iter(range(1_000_000, 2_000_000))
    driver, rec = await start_agent(time_ms=lambda: next(clock))
    t = make_task(driver.agent_id, command="true")
    driver.launch([t])
    await rec.terminal(t.task_id)
    stamps = [s.timestamp for s in rec.of(t.task_id)]
    assert all(1_000_000 <= ts < 2_000_000 for ts in stamps)
    assert stamps == sorted(stamps)
    assert {s.agent_id for s in rec.of(t.task_id)} == {driver.agent_id}


async def test_one_info_line_per_launch_and_per_exit(start_agent, caplog):
    caplog.set_level(logging.INFO, logger="marathon.agent")
    driver, rec = await start_agent(cgroups="off")
    t = make_task(driver.agent_id, command="exit 2")
    driver.launch([t])
    await rec.terminal(t.task_id)
    lines = [r.getMessage() for r in caplog.records
             if r.name == "marathon.agent" and t.task_id in r.getMessage()]
    assert len(lines) == 2
    assert lines[0].startswith(f"task_launched task_id={t.task_id} pid=")
    assert lines[1].startswith(f"task_exited task_id={t.task_id} pid=")
    assert "state=TASK_FAILED exit_code=2" in lines[1]


async def test_clean_shutdown_kills_every_task(tmp_path):
    driver = LocalDriver(tmp_path / "agent", hostname="127.0.0.1")
    t = None
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as inner:
            await inner.start(driver.run)
            rec = Recorder(driver.updates)
            inner.start_soon(rec.run)
            t = make_task(driver.agent_id, command="sleep 1000 & sleep 1000", kill_grace_seconds=1)
            driver.launch([t])
            await rec.wait(t.task_id, "TASK_RUNNING")
            await wait_until(lambda: len(task_pids(t.task_id)) == 3)
            scope.cancel()
    assert task_pids(t.task_id) == []
    assert read_records(tmp_path / "agent" / "checkpoint") == {}


async def test_sandboxes_beyond_the_count_limit_are_collected(start_agent, tmp_path):
    driver, rec = await start_agent(sandbox_max_count=2)
    tasks = [make_task(driver.agent_id, command="true") for _ in range(4)]
    for t in tasks:  # one after the other, so their ages are ordered
        driver.launch([t])
        await rec.terminal(t.task_id)
    live = make_task(driver.agent_id, argv=["sleep", "1000"])
    driver.launch([live])
    await rec.wait(live.task_id, "TASK_RUNNING")
    assert driver.executor.collect_garbage() == 2
    left = {p.name for p in (tmp_path / "agent" / "sandboxes").iterdir()}
    assert left == {tasks[2].task_id, tasks[3].task_id, live.task_id}


async def test_a_full_channel_delays_statuses_but_never_drops_them(tmp_path):
    driver = LocalDriver(tmp_path / "agent", hostname="127.0.0.1", update_buffer=2)
    async with trio.open_nursery() as nursery:
        await nursery.start(driver.run)
        tasks = [make_task(driver.agent_id, command="true") for _ in range(5)]
        driver.launch(tasks)  # nobody reads `updates` meanwhile
        await wait_until(lambda: driver.executor.live_task_ids() == [])
        received = []
        with trio.fail_after(30):
            while len(received) < 20:
                received.append(await driver.updates.receive())
        for t in tasks:
            assert [s.state for s in received if s.task_id == t.task_id] == [
                "TASK_STAGING", "TASK_STARTING", "TASK_RUNNING", "TASK_FINISHED"]
        nursery.cancel_scope.cancel()



async def test_orphan_sweep_reaps_a_zombie_of_ours_at_once(start_agent):
    driver, _ = await start_agent()
    # A zombie child in a process group of ours (as a task's daemon leaves behind).
    pid = os.posix_spawn("/bin/true", ["true"], dict(os.environ), setsid=True)  # noqa: ASYNC221 - instant
    await wait_until(lambda: not pid_alive(pid) and os.path.exists(f"/proc/{pid}"))
    driver.executor._remember_group(pid)
    driver.executor._reap_orphans()
    assert not os.path.exists(f"/proc/{pid}"), "the zombie was not reaped"  # noqa: ASYNC240


async def test_a_scale_down_drops_its_records_in_batches_off_the_event_loop(start_agent, tmp_path):
    import threading

    driver, rec = await start_agent()
    checkpoint = driver.executor.checkpoint
    tasks = [make_task(driver.agent_id, command="sleep 1000", cpus=0.001, mem=1) for _ in range(60)]
    driver.launch(tasks)
    for t in tasks:
        await rec.wait(t.task_id, "TASK_RUNNING")
    drops: list[tuple[int, bool]] = []  # (records dropped, on the event loop's thread)
    apply = checkpoint.apply

    def recording(changes):
        dropped = sum(1 for _, record in changes if record is None)
        if dropped:
            drops.append((dropped, threading.current_thread() is threading.main_thread()))
        apply(changes)

    checkpoint.apply = recording
    driver.kill([t.task_id for t in tasks])
    for t in tasks:
        assert (await rec.terminal(t.task_id)).state == "TASK_KILLED"
    await wait_until(lambda: read_records(tmp_path / "agent" / "checkpoint") == {})
    assert sum(n for n, _ in drops) == 60
    assert len(drops) < 60, "ends are written a batch at a time"
    assert not any(on_loop for _, on_loop in drops), "no checkpoint I/O on the event loop"


async def test_the_sandbox_gc_spares_an_ended_task_whose_end_is_not_yet_stamped(start_agent):
    import os
    import threading

    driver, rec = await start_agent()
    executor = driver.executor
    t = make_task(driver.agent_id, command="echo out")
    release = threading.Event()
    write_journal = executor._write_journal
    executor._write_journal = lambda ended: (release.wait(60), write_journal(ended))[1]
    try:
        driver.launch([t])
        await rec.terminal(t.task_id)
        sandbox = executor.sandboxes / t.task_id
        await wait_until(lambda: t.task_id in executor._writing)  # the writer holds it
        old = sandbox.stat().st_mtime - 3 * 3600  # made long ago: aged only by the writer's stamp
        os.utime(sandbox, (old, old))
        executor._sandbox_max_age = 3600
        assert executor.collect_garbage(executor._gc_spared()) == 0
        assert (sandbox / "stdout").read_text() == "out\n"
        # Launched again under the same id while its end is being written:
        # an ended id is never launched again; its end is reported again.
        before = len(rec.of(t.task_id))
        driver.launch([t])
        await wait_until(lambda: len(rec.of(t.task_id)) > before)
        assert [s.state for s in rec.of(t.task_id)[before:]] == ["TASK_FINISHED"]
        assert (sandbox / "stdout").read_text() == "out\n", "it did not run again"
    finally:
        release.set()
    await wait_until(lambda: not executor._writing)
    assert sandbox.stat().st_mtime > old + 3600  # stamped with its end
    assert executor.collect_garbage(executor._gc_spared()) == 0
