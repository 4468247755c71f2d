"""Mesos-level health checks run by the agent next to each task (SPEC 6.4):
COMMAND, MESOS_HTTP(S) and MESOS_TCP probes against real processes, health
changes reported on TASK_RUNNING statuses, kills after N failures."""

from __future__ import annotations

import os
import shutil
import socket
import sys
import time
from pathlib import Path

import pytest
import trio
from agent_helpers import (
    crash_after_launch,
    make_task,
    pid_alive,
    sandbox_of,
    task_pids,
    wait_until,
)

from marathon.agent.health import HEALTH_KILL_MESSAGE, HEALTH_REASON, HealthState
from marathon.models.launch import AgentHealthCheck
from marathon.models.resources import Resources

SERVER = str(Path(__file__).with_name("health_server.py"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check(protocol: str = "MESOS_HTTP", **kw) -> AgentHealthCheck:
    kw.setdefault("delay_seconds", 0)
    kw.setdefault("interval_seconds", 0.2)
    kw.setdefault("timeout_seconds", 5)
    kw.setdefault("grace_period_seconds", 30)
    return AgentHealthCheck(protocol=protocol, **kw)  # type: ignore[arg-type]


def server_task(agent_id: str, hc: AgentHealthCheck, *extra: str, **kw):
    """The health server on the check's port."""
    return make_task(agent_id, argv=[sys.executable, SERVER, str(hc.port), *extra],
                     health_check=hc, kill_grace_seconds=2, **kw)


def answers(sandbox: Path, code: int) -> int:
    """How many probes the health server answered with `code`."""
    try:
        lines = (sandbox / "requests").read_text().splitlines()
    except FileNotFoundError:
        return 0
    return sum(1 for line in lines if line.startswith(f"{code} "))


# -- the bookkeeping alone -------------------------------------------------------------


def test_state_ignores_failures_in_grace_until_a_first_success():
    st = HealthState(check(consecutive_failures=2, grace_period_seconds=10), running_at=100.0)
    assert st.observe(False, 105.0) == (False, False)  # in grace: ignored
    assert st.failures == 0 and st.healthy is None
    assert st.observe(True, 106.0) == (True, False)  # first result: reported
    assert st.observe(True, 106.5) == (False, False)  # no change: not reported
    assert st.observe(False, 107.0) == (True, False)  # counted (succeeded once): reported
    assert st.observe(False, 107.5) == (False, True)  # second in a row: kill
    st = HealthState(check(consecutive_failures=2, grace_period_seconds=10), running_at=100.0)
    assert st.observe(False, 110.0) == (True, False)  # grace over: counted at once


def test_state_success_resets_the_count_and_zero_kills_at_once():
    st = HealthState(check(consecutive_failures=2, grace_period_seconds=0), running_at=0.0)
    assert st.observe(False, 1.0) == (True, False)
    assert st.observe(True, 2.0) == (True, False)
    assert st.observe(False, 3.0) == (True, False)
    assert st.observe(False, 4.0) == (False, True)
    st = HealthState(check(consecutive_failures=0, grace_period_seconds=0), running_at=0.0)
    assert st.observe(False, 1.0) == (True, True)


# -- real probes -----------------------------------------------------------------------


async def test_http_check_reports_healthy_once(start_agent, tmp_path):
    driver, rec = await start_agent()
    port = free_port()
    t = make_task(driver.agent_id, command=f"touch probe; exec {sys.executable} -m http.server {port} "
                  "--bind 127.0.0.1", health_check=check(port=port, path="/probe"))
    driver.launch([t])
    healthy = await rec.health(t.task_id, True)
    assert healthy.reason == HEALTH_REASON
    stderr = sandbox_of(tmp_path / "agent", t.task_id) / "stderr"
    await wait_until(lambda: stderr.read_text().count("GET /probe ") >= 4)
    assert rec.healths(t.task_id) == [True]  # four probes, one report
    n = len(rec.statuses)
    driver.reconcile([t.task_id])
    assert (await rec.wait(t.task_id, "TASK_RUNNING", after=n)).healthy is True
    driver.kill([t.task_id])
    final = await rec.terminal(t.task_id)
    assert (final.state, final.healthy) == ("TASK_KILLED", None)
    assert final.message != HEALTH_KILL_MESSAGE


async def test_failing_http_check_kills_after_exactly_n_failures(start_agent, tmp_path):
    driver, rec = await start_agent()
    t = server_task(driver.agent_id, check(port=free_port(), consecutive_failures=3))
    driver.launch([t])
    await rec.health(t.task_id, True)
    sandbox = sandbox_of(tmp_path / "agent", t.task_id)
    (sandbox / "sick").touch()
    final = await rec.terminal(t.task_id)
    assert answers(sandbox, 500) == 3
    assert (final.state, final.healthy, final.message, final.reason) == (
        "TASK_KILLED", False, HEALTH_KILL_MESSAGE, HEALTH_REASON)
    assert [(s.state, s.healthy) for s in rec.of(t.task_id)] == [
        ("TASK_STAGING", None), ("TASK_STARTING", None), ("TASK_RUNNING", None),
        ("TASK_RUNNING", True), ("TASK_RUNNING", False), ("TASK_KILLING", False),
        ("TASK_KILLED", False)]
    unhealthy = [s for s in rec.of(t.task_id) if s.healthy is False][0]
    assert "500" in unhealthy.message
    n = len(rec.statuses)
    driver.reconcile([t.task_id])
    assert (await rec.wait(t.task_id, "TASK_KILLED", after=n)).healthy is False
    assert task_pids(t.task_id) == []


async def test_zero_consecutive_failures_kills_on_the_first_failure(start_agent, tmp_path):
    driver, rec = await start_agent()
    t = server_task(driver.agent_id, check(port=free_port(), consecutive_failures=0))
    driver.launch([t])
    await rec.health(t.task_id, True)
    sandbox = sandbox_of(tmp_path / "agent", t.task_id)
    (sandbox / "sick").touch()
    final = await rec.terminal(t.task_id)
    assert final.message == HEALTH_KILL_MESSAGE
    assert answers(sandbox, 500) == 1


async def test_failures_during_the_grace_period_are_ignored(start_agent, tmp_path):
    driver, rec = await start_agent()
    port = free_port()
    grace = 1.0
    t = make_task(driver.agent_id, command=f"touch sick; exec {sys.executable} {SERVER} {port}",
                  health_check=check(port=port, consecutive_failures=0,
                                     grace_period_seconds=grace))
    launched = time.monotonic()
    driver.launch([t])
    await rec.wait(t.task_id, "TASK_KILLING")
    assert time.monotonic() - launched >= grace
    final = await rec.terminal(t.task_id)
    assert final.message == HEALTH_KILL_MESSAGE
    # With 0 the first counted failure kills: all but the last were ignored.
    assert answers(sandbox_of(tmp_path / "agent", t.task_id), 500) >= 3
    assert rec.healths(t.task_id) == [False]


async def test_command_check_runs_in_the_sandbox_with_the_task_env(start_agent, tmp_path):
    driver, rec = await start_agent()
    hc = check("COMMAND", consecutive_failures=100,
               command='test -f "$MESOS_SANDBOX/ok" && test "$PORT0" = 31234 && echo probe-ok')
    t = make_task(driver.agent_id, argv=["sleep", "1000"], env={"PORT0": "31234"},
                  health_check=hc)
    driver.launch([t])
    await rec.wait(t.task_id, "TASK_RUNNING")
    sandbox = sandbox_of(tmp_path / "agent", t.task_id)
    log = sandbox / "health.log"
    await wait_until(log.exists)  # a probe failed (ignored: in grace)
    (sandbox / "ok").touch()
    await rec.health(t.task_id, True)
    assert log.read_text() == "probe-ok\n"
    (sandbox / "ok").unlink()
    unhealthy = await rec.health(t.task_id, False)
    assert unhealthy.message == "Health check failed: Command exited with status 1"
    (sandbox / "ok").touch()
    await rec.health(t.task_id, True, after=rec.statuses.index(unhealthy))
    assert rec.healths(t.task_id) == [True, False, True]
    driver.kill([t.task_id])
    assert (await rec.terminal(t.task_id)).state == "TASK_KILLED"
    assert task_pids(t.task_id) == []  # neither the task nor a probe


async def test_tcp_check(start_agent, tmp_path):
    driver, rec = await start_agent()
    port = free_port()
    up = make_task(driver.agent_id, argv=[sys.executable, SERVER, str(port)],
                   health_check=check("MESOS_TCP", port=port))
    down = make_task(driver.agent_id, argv=["sleep", "1000"],
                     health_check=check("MESOS_TCP", port=free_port(), grace_period_seconds=0,
                                        consecutive_failures=0))
    driver.launch([up, down])
    await rec.health(up.task_id, True)
    final = await rec.terminal(down.task_id)
    assert (final.state, final.message) == ("TASK_KILLED", HEALTH_KILL_MESSAGE)
    assert "refused" in [s for s in rec.of(down.task_id) if s.healthy is False][0].message
    driver.kill([up.task_id])
    await rec.terminal(up.task_id)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl for a certificate")
async def test_https_check_does_not_verify_the_certificate(start_agent, tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    await trio.run_process(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=elsewhere.example", "-keyout", str(key), "-out", str(cert)],
        capture_stdout=True, capture_stderr=True)
    driver, rec = await start_agent()
    t = server_task(driver.agent_id, check("MESOS_HTTPS", port=free_port(), path="/secure"),
                    str(cert), str(key))
    driver.launch([t])
    await rec.health(t.task_id, True)
    assert "200 /secure" in (sandbox_of(tmp_path / "agent", t.task_id) / "requests").read_text()
    driver.kill([t.task_id])
    await rec.terminal(t.task_id)


@pytest.mark.skipif(os.geteuid() != 0, reason="runs a task as another user: needs root")
async def test_command_check_runs_as_the_tasks_user(start_agent, tmp_path):
    driver, rec = await start_agent()
    hc = check("COMMAND", grace_period_seconds=0, consecutive_failures=0,
               command='test "$(id -un)" = nobody')
    t = make_task(driver.agent_id, argv=["sleep", "1000"], user="nobody", health_check=hc)
    driver.launch([t])
    await rec.health(t.task_id, True)
    driver.kill([t.task_id])
    assert (await rec.terminal(t.task_id)).message != HEALTH_KILL_MESSAGE


async def test_a_probe_that_hangs_beyond_its_timeout_fails_and_is_killed(start_agent, tmp_path):
    driver, rec = await start_agent()
    hc = check("COMMAND", command='echo $$ >> "$MESOS_SANDBOX/probes"; exec sleep 1000',
               timeout_seconds=0.3, grace_period_seconds=0, consecutive_failures=1)
    t = make_task(driver.agent_id, argv=["sleep", "1000"], health_check=hc)
    driver.launch([t])
    final = await rec.terminal(t.task_id)
    assert final.message == HEALTH_KILL_MESSAGE
    unhealthy = [s for s in rec.of(t.task_id) if s.healthy is False][0]
    assert unhealthy.message == "Health check failed: Command timed out after 0.3s"
    probes = sandbox_of(tmp_path / "agent", t.task_id) / "probes"
    pids = [int(p) for p in probes.read_text().split()]
    assert len(pids) == 1 and not pid_alive(pids[0])


async def test_an_http_server_that_never_answers_fails_by_timeout(start_agent, nursery):
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    listener.listen()  # accepts (in the backlog) and never answers
    port = listener.getsockname()[1]
    try:
        driver, rec = await start_agent()
        t = make_task(driver.agent_id, argv=["sleep", "1000"],
                      health_check=check(port=port, timeout_seconds=0.3,
                                         grace_period_seconds=0, consecutive_failures=0))
        driver.launch([t])
        final = await rec.terminal(t.task_id)
        assert final.message == HEALTH_KILL_MESSAGE
        unhealthy = [s for s in rec.of(t.task_id) if s.healthy is False][0]
        assert unhealthy.message.endswith("timed out after 0.3s")
    finally:
        listener.close()


async def test_checks_stop_when_the_task_ends(start_agent, tmp_path):
    driver, rec = await start_agent()
    # Probes that take their time: one is in flight when the task exits.
    hc = check("COMMAND", interval_seconds=0.05, timeout_seconds=60,
               command='echo $$ >> "$MESOS_SANDBOX/probes"; sleep 0.2')
    t = make_task(driver.agent_id, command="while [ ! -f stop ]; do sleep 0.02; done",
                  health_check=hc)
    driver.launch([t])
    await rec.health(t.task_id, True)
    sandbox = sandbox_of(tmp_path / "agent", t.task_id)
    probes = sandbox / "probes"
    await wait_until(lambda: len(probes.read_text().split()) >= 3)
    (sandbox / "stop").touch()
    final = await rec.terminal(t.task_id)
    assert (final.state, final.healthy) == ("TASK_FINISHED", None)
    await wait_until(lambda: task_pids(t.task_id) == [])  # the last probe was killed
    seen = probes.read_text().split()
    assert not any(pid_alive(int(p)) for p in seen)
    await trio.sleep(0.5)  # ten intervals: no probe may start any more
    assert probes.read_text().split() == seen
    assert rec.healths(t.task_id) == [True]


async def test_checks_resume_after_an_agent_crash(start_agent, tmp_path):
    work_dir = tmp_path / "agent"
    task_id = make_task("x", argv=["sleep", "1000"]).task_id
    # Healthy before the crash (the driver process waits for that).
    pid = await crash_after_launch(work_dir, task_id, "", 'test ! -f "$MESOS_SANDBOX/sick"')
    driver, rec = await start_agent(resources=Resources(cpus=2000, mem=4096, disk=1000))
    driver.reconcile([task_id])
    # The health known before the crash, from the checkpoint.
    assert (await rec.wait(task_id, "TASK_RUNNING")).healthy is True
    (sandbox_of(work_dir, task_id) / "sick").touch()
    unhealthy = await rec.health(task_id, False)  # the checks go on
    assert unhealthy.reason == HEALTH_REASON
    assert task_pids(task_id)[0] == pid
    driver.kill([task_id])
    assert (await rec.terminal(task_id)).state == "TASK_KILLED"
    assert task_pids(task_id) == []


async def test_many_checked_tasks_share_a_bounded_number_of_probes(start_agent, tmp_path):
    driver, rec = await start_agent(health_check_concurrency=2, cgroups="off")
    hc = check("COMMAND", interval_seconds=0.1,
               command='test -d "$MESOS_SANDBOX"')
    tasks = [make_task(driver.agent_id, argv=["sleep", "1000"], health_check=hc)
             for _ in range(20)]
    driver.launch(tasks)
    limiter = driver.executor._prober.limiter
    peak = 0
    with trio.fail_after(30):
        while not all(rec.healths(t.task_id) == [True] for t in tasks):
            peak = max(peak, limiter.borrowed_tokens)
            await trio.sleep(0.005)
    assert 1 <= peak <= 2
    driver.kill([t.task_id for t in tasks])
    for t in tasks:
        await rec.terminal(t.task_id)
