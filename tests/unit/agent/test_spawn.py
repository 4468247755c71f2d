"""How a task's process is started: the compiled posix_spawn path next to Popen.

Both paths must leave the process in the same state (working directory,
session, descriptors, signal dispositions, environment), a plain command
must run without a shell in between, and anything the shell would
interpret must still go through `/bin/sh -c`.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import trio
from agent_helpers import make_task, pid_alive, sandbox_of, task_pids, wait_until

from marathon.agent import executor, machine, process
from marathon.agent.process import plain_command
from marathon.agent.spawner import Spawner
from marathon.config import LOG_EACH_TASK_UP_TO

PURE = os.environ.get("MARATHON_PUREPYTHON", "") in ("1", "true", "yes")

# What the child reports about itself: cwd, session and group ids, open
# descriptors, ignored and blocked signals, and its environment.
_PROBE = (
    'echo "cwd=$(pwd -P)"; '
    'echo "ids=$(ps -o sid=,pgid= -p $$ | tr -s " ")"; '
    'echo "fds=$(ls /proc/$$/fd | sort -n | tr "\\n" " ")"; '
    'echo "stdin=$(readlink /proc/$$/fd/0)"; '
    # Read by the shell itself: while it forks a child (grep, say) dash
    # blocks every signal for a moment, and a child reading /proc/<shell>
    # then would see that, not what the task was started with.
    'while read -r k v; do case $k in SigIgn:|SigBlk:) echo "$k$v";; esac; done < /proc/$$/status; '
    'env | grep -v "^_=" | sort'
)


def test_the_compiled_spawn_is_loaded_unless_the_reference_is_forced():
    if PURE:
        assert process._posix_spawn is None
    else:
        assert process._posix_spawn is not None, (
            "marathon.agent._spawn did not load; build it with `pip install -e .`")
        assert process._posix_spawn.__module__ == "marathon.agent._spawn"


def _probe(tmp_path: Path, name: str, spawn) -> dict[str, str]:
    sandbox = tmp_path / name
    sandbox.mkdir()
    (sandbox / "stdout").write_bytes(b"kept\n")  # appended to, never truncated
    env = {"PATH": os.environ["PATH"], "MESOS_SANDBOX": str(sandbox), "ODD": "a b=c"}
    leak_r, leak_w = os.pipe()  # not close-on-exec: must not reach the task
    os.set_inheritable(leak_r, True)
    old = signal.signal(signal.SIGPIPE, signal.SIG_IGN)  # as Python has it
    try:
        pid, _ = spawn(["/bin/sh", "-c", _PROBE], "/bin/sh", env, sandbox, {})
    finally:
        signal.signal(signal.SIGPIPE, old)
        os.close(leak_r)
        os.close(leak_w)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    lines = (sandbox / "stdout").read_text().splitlines()
    assert lines[0] == "kept"
    out = dict(line.split("=", 1) if "=" in line else line.split(":", 1) for line in lines[1:])
    out = {k: v.strip() for k, v in out.items()}
    sid, pgid = out.pop("ids").split()
    assert sid == pgid == str(pid), "the task leads its own session and group"
    assert out.pop("cwd") == str(sandbox.resolve())
    out.pop("MESOS_SANDBOX")
    out.pop("PWD")
    return out


@pytest.mark.skipif(PURE, reason="the compiled spawn is not used in the pure-Python run")
def test_compiled_spawn_leaves_the_process_as_popen_does(tmp_path, monkeypatch):
    compiled = _probe(tmp_path, "compiled", process.exec_task)
    monkeypatch.setattr(process, "_posix_spawn", None)
    popen = _probe(tmp_path, "popen", process.exec_task)
    assert compiled["fds"] == popen["fds"] == "0 1 2 3", "stdio and the pipe of $(...) only"
    assert compiled["stdin"] == "/dev/null"
    # The compiled spawn starts the task with no signal blocked and every
    # signal a program can catch at its default, SIGPIPE included (glibc's
    # posix_spawn leaves its two internal signals, 32 and 33, ignored),
    # whatever the agent inherited.  Popen passes on the calling thread's
    # mask and ignored signals other than SIGPIPE/SIGXFSZ, so its values
    # depend on how the test run was started: not compared.
    assert int(compiled.pop("SigBlk"), 16) == 0
    assert int(compiled.pop("SigIgn"), 16) & ~((1 << 31) | (1 << 32)) == 0
    popen.pop("SigBlk")
    popen.pop("SigIgn")
    assert compiled == popen


def _spawn_many_one(argv, executable, env, sandbox, user_kw):  # type: ignore[no-untyped-def]
    """One job through `spawn_many`, the path a burst's shares take."""
    ((pid, pidfd, start_time, error),) = process.spawn_many(
        [(executable, argv, env, str(sandbox), str(sandbox / "stdout"), str(sandbox / "stderr"))])
    assert error is None and start_time is not None
    os.close(pidfd)
    return pid, None


@pytest.mark.skipif(PURE, reason="the compiled spawn is not used in the pure-Python run")
def test_a_share_spawns_its_processes_as_the_single_spawn_does(tmp_path):
    assert process.spawn_many is not None and process.spawn_many.__module__ == "marathon.agent._spawn"
    share = _probe(tmp_path, "share", _spawn_many_one)
    single = _probe(tmp_path, "single", process.exec_task)
    assert share["fds"] == "0 1 2 3" and share["stdin"] == "/dev/null"
    assert int(share["SigBlk"], 16) == 0
    assert share == single


@pytest.mark.skipif(PURE, reason="the compiled spawn is not used in the pure-Python run")
def test_compiled_spawn_reports_what_went_wrong(tmp_path):
    with pytest.raises(FileNotFoundError):
        process.exec_task(["x"], str(tmp_path / "missing"), {}, tmp_path, {})
    with pytest.raises(FileNotFoundError):
        process.exec_task(["true"], "/bin/true", {}, tmp_path / "no-such-sandbox", {})
    with pytest.raises(ValueError):
        process.exec_task(["true"], "/bin/true", {"A": "nul\0byte"}, tmp_path, {})


@pytest.mark.parametrize("command, words", [
    ("sleep 3600", ["sleep", "3600"]),
    ("  python3 -m http.server  8080 ", ["python3", "-m", "http.server", "8080"]),
    ("java -Dx=y -Xmx512m -jar app.jar", ["java", "-Dx=y", "-Xmx512m", "-jar", "app.jar"]),
    ("curl user@host:80/a,b%2F+c", ["curl", "user@host:80/a,b%2F+c"]),
])
def test_plain_commands_are_words(command, words):
    assert plain_command(command) == words


@pytest.mark.parametrize("command", [
    "echo hi",  # a builtin
    "cd /tmp",
    "exit 3",
    "FOO=1 env",  # an assignment
    "./run.sh",  # a path: relative to the sandbox, let the shell resolve it
    "sleep $DELAY",
    "sleep 1; sleep 2",
    "sleep 1 && true",
    "cat *.txt",
    "ls ~",
    "echo 'a b'",
    'echo "a"',
    "sleep 1 > out",
    "sleep 1 # comment",
    "sleep\t1",
    "sleep 1\nsleep 2",
    "(sleep 1)",
    "{ sleep 1; }",
    "sleep 1 &",
    "if true",
    "",
])
def test_anything_the_shell_would_interpret_is_not_plain(command):
    assert plain_command(command) is None


def _proc(pid: int, name: str) -> bytes:
    with open(f"/proc/{pid}/{name}", "rb") as f:
        return f.read()


async def test_a_plain_command_runs_without_a_shell_in_between(start_agent, tmp_path):
    driver, rec = await start_agent()
    plain = make_task(driver.agent_id, command="sleep 1000")
    shell = make_task(driver.agent_id, command="sleep 1000; true")
    driver.launch([plain, shell])
    for t in (plain, shell):
        await rec.wait(t.task_id, "TASK_RUNNING")
    await wait_until(lambda: len(task_pids(plain.task_id)) == 1 and len(task_pids(shell.task_id)) == 2)
    leader = driver.executor.task_pid(plain.task_id)
    assert task_pids(plain.task_id) == [leader]
    assert _proc(leader, "cmdline") == b"sleep\x001000\x00"
    environ = _proc(leader, "environ").split(b"\0")
    assert f"PWD={sandbox_of(tmp_path / 'agent', plain.task_id)}".encode() in environ
    driver.kill([plain.task_id, shell.task_id])
    for t in (plain, shell):
        assert (await rec.terminal(t.task_id)).state == "TASK_KILLED"
    assert not pid_alive(leader)


async def test_a_script_without_an_interpreter_line_still_runs_through_the_shell(start_agent, tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "hello-script"
    script.write_text("echo from the script\n")  # no #!: execve says ENOEXEC
    script.chmod(0o755)
    driver, rec = await start_agent()
    t = make_task(driver.agent_id, command="hello-script",
                  env={"PATH": f"{bin_dir}:{os.environ['PATH']}"})
    driver.launch([t])
    final = await rec.terminal(t.task_id)
    assert final.state == "TASK_FINISHED", final.message
    assert (sandbox_of(tmp_path / "agent", t.task_id) / "stdout").read_text() == "from the script\n"


async def test_a_command_not_on_the_path_fails_as_the_shell_says(start_agent, tmp_path):
    driver, rec = await start_agent()
    t = make_task(driver.agent_id, command="no-such-program-here 1")
    driver.launch([t])
    final = await rec.terminal(t.task_id)
    assert final.state == "TASK_FAILED"
    assert final.exit_code == 127
    assert "not found" in (sandbox_of(tmp_path / "agent", t.task_id) / "stderr").read_text()


async def test_a_burst_is_spawned_in_shares_and_every_task_hears_its_verdict(start_agent, tmp_path):
    driver, rec = await start_agent()
    spawner = driver.executor._spawner
    shares: list[int] = []
    spawn_all = spawner._spawn_all

    def recording(batch, errors):
        shares.append(len(batch))
        spawn_all(batch, errors)

    spawner._spawn_all = recording
    good = [make_task(driver.agent_id, command="sleep 1000", cpus=0.001, mem=1) for _ in range(60)]
    bad = [make_task(driver.agent_id, argv=[str(tmp_path / "missing")], cpus=0.001, mem=1)
           for _ in range(5)]
    driver.launch(good[:30] + bad + good[30:])
    for t in good:
        await rec.wait(t.task_id, "TASK_RUNNING")
    for t in bad:
        assert (await rec.terminal(t.task_id)).state == "TASK_FAILED"
    # 65 launches, 8 threads: shares of several tasks each, never over 32.
    assert sum(shares) == 65 and max(shares) <= 32 and len(shares) < 65
    driver.kill([t.task_id for t in good])
    for t in good:
        assert (await rec.terminal(t.task_id)).state == "TASK_KILLED"


async def test_a_spawn_still_queued_when_cancelled_is_withdrawn():
    started: list[str] = []
    limiter = trio.CapacityLimiter(1)
    spawner = Spawner(lambda batch, errors: started.extend(batch), limiter, chunk=1)
    async with trio.open_nursery() as nursery:
        await limiter.acquire_on_behalf_of("holder")  # no share can start yet
        nursery.start_soon(spawner.run)
        async with trio.open_nursery() as waiting:
            waiting.start_soon(spawner.spawn, "withdrawn")
            await trio.testing.wait_all_tasks_blocked()
            assert list(spawner._queue) == ["withdrawn"]
            waiting.cancel_scope.cancel()
        assert not spawner._queue and not spawner._waiting
        limiter.release_on_behalf_of("holder")
        with trio.fail_after(30):
            await spawner.spawn("spawned")
        assert started == ["spawned"]
        nursery.cancel_scope.cancel()


@pytest.mark.skipif(PURE, reason="the compiled spawn is not used in the pure-Python run")
def test_spawn_many_starts_a_share_and_reports_each_failure_in_its_place(tmp_path):
    from marathon.agent._spawn import spawn_many

    def job(name: str, executable: str = "/bin/sleep", argv=("sleep", "1000")):
        sandbox = tmp_path / name
        return (executable, list(argv), {"PATH": "/bin"}, sandbox, sandbox / "stdout", sandbox / "stderr")

    jobs = [job("a"), job("missing-program", str(tmp_path / "nope")), job("b"),
            job("no-parent/c"), job("d", "/bin/sh", ["sh", "-c", "echo hi; exit 3"])]
    (tmp_path / "b").mkdir()  # a sandbox that exists already is fine
    results = spawn_many(jobs)
    assert [r[3] is None for r in results] == [True, False, True, False, True]
    assert isinstance(results[1][3], FileNotFoundError) and results[1][3].filename == jobs[1][0]
    assert isinstance(results[3][3], FileNotFoundError) and results[3][3].filename == jobs[3][3]
    assert results[1][:3] == results[3][:3] == (0, -1, None), "nothing started for those"
    try:
        for pid, pidfd, start_time, _ in (results[0], results[2], results[4]):
            assert pid > 0 and pidfd >= 0
            assert start_time == machine.proc_start_time(pid)
            assert os.get_inheritable(pidfd) is False
        assert (tmp_path / "a").is_dir() and (tmp_path / "a" / "stdout").exists()
        _, status = os.waitpid(results[4][0], 0)
        assert os.waitstatus_to_exitcode(status) == 3
        assert (tmp_path / "d" / "stdout").read_text() == "hi\n"
    finally:
        for pid, _, _, _ in (results[0], results[2]):
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        for _, pidfd, _, _ in (results[0], results[2], results[4]):
            os.close(pidfd)
    with pytest.raises(ValueError):
        spawn_many([job("e"), ("/bin/true", ["true"], {"A": "nul\0byte"}, tmp_path, "/o", "/e")])
    assert not (tmp_path / "e").exists(), "bad arguments raise before anything starts"


async def test_a_bad_environment_fails_only_its_own_task_of_a_share(start_agent):
    driver, rec = await start_agent()
    good = [make_task(driver.agent_id, command="sleep 1000", cpus=0.001, mem=1) for _ in range(3)]
    bad = make_task(driver.agent_id, command="sleep 1000", cpus=0.001, mem=1, env={"X": "nul\0byte"})
    driver.launch([good[0], bad, *good[1:]])
    final = await rec.terminal(bad.task_id)
    assert final.state == "TASK_FAILED" and "null byte" in final.message
    for t in good:
        await rec.wait(t.task_id, "TASK_RUNNING")
    driver.kill([t.task_id for t in good])
    for t in good:
        assert (await rec.terminal(t.task_id)).state == "TASK_KILLED"


async def test_a_process_that_cannot_be_watched_is_not_left_running(start_agent, tmp_path):
    driver, _ = await start_agent()
    ex = driver.executor
    t = executor._Task(make_task(driver.agent_id, command="sleep 1000"), tmp_path / "sb")
    pid = os.posix_spawn("/bin/sleep", ["sleep", "1000"], {}, setsid=True)  # noqa: ASYNC221 - instant
    plan = process.Plan(["sleep", "1000"], "/bin/sleep", {}, {}, True)
    with pytest.raises(process.SpawnError, match="cannot watch its process"):
        ex._spawned(t, plan, pid, -1, None, OSError(24, "Too many open files"))
    assert not pid_alive(pid)
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # noqa: ASYNC222 - WNOHANG; reaped too


async def test_a_burst_logs_one_line_at_info_and_each_task_at_debug(start_agent, caplog):
    driver, rec = await start_agent()
    caplog.set_level("DEBUG", logger="marathon.agent")

    def lines(word: str, level: str) -> int:
        return sum(1 for r in caplog.records if r.levelname == level and r.getMessage().startswith(word))

    burst = [make_task(driver.agent_id, command="sleep 1000", cpus=0.001, mem=1)
             for _ in range(LOG_EACH_TASK_UP_TO + 1)]
    driver.launch(burst)
    for t in burst:
        await rec.wait(t.task_id, "TASK_RUNNING")
    assert lines("tasks_launching count=51", "INFO") == 1
    assert lines("task_launched", "INFO") == 0 and lines("task_launched", "DEBUG") == 51
    single = make_task(driver.agent_id, command="sleep 1000")
    driver.launch([single])
    await rec.wait(single.task_id, "TASK_RUNNING")
    assert lines("task_launched", "INFO") == 1

    driver.kill([t.task_id for t in burst])
    for t in burst:
        await rec.terminal(t.task_id)
    assert lines("tasks_killing count=51", "INFO") == 1
    assert lines("task_exited", "INFO") == 0 and lines("task_exited", "DEBUG") == 51
    driver.kill([single.task_id])
    await rec.terminal(single.task_id)
    assert lines("task_exited", "INFO") == 1
