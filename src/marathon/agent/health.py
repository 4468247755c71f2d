"""Mesos-level health checks, run by the agent next to each task.

Marathon's COMMAND, MESOS_HTTP, MESOS_HTTPS and MESOS_TCP checks (SPEC 6.4)
travel in `TaskLaunch.health_check` and are executed here, the way Mesos'
command executor executes them:

* COMMAND: `/bin/sh -c <command>` in the task's sandbox, with the task's
  environment, as the task's user and inside the task's cgroup; exit 0 is
  healthy.  A probe that outlives its timeout is killed (its whole process
  group) and counts as a failure.  Its output goes through a pipe of which
  only the last few KB are kept, in `<sandbox>/health.log`.
* MESOS_HTTP(S): `GET http(s)://127.0.0.1:<port><path>` (no certificate
  verification); healthy iff the status is 200-399.  A tiny HTTP/1.1 client
  on trio sockets: one connection per probe, only the status line is read.
* MESOS_TCP: healthy iff a TCP connection to 127.0.0.1:<port> opens.

`HealthState` holds Mesos' bookkeeping for one task (grace period,
consecutive failures, when to report, when to kill); `Prober` runs single
probes under a global bound on how many run at once.  The per-task loop
lives in the executor, which owns the task's statuses and its kill.
"""

from __future__ import annotations

import os
import pwd
import signal
import ssl
import subprocess
from pathlib import Path
from typing import NamedTuple

import trio

from ..models.instance import CheckStatus
from ..models.launch import AgentCheck, AgentHealthCheck
from . import machine
from .cgroups import Cgroups, TaskCgroup

HEALTH_REASON = "REASON_TASK_HEALTH_CHECK_STATUS_UPDATED"
HEALTH_KILL_MESSAGE = "Task killed because of failed health check"
HEALTH_LOG = "health.log"

DEFAULT_TIMEOUT = 20.0  # when the check asks for no timeout: a hung probe must end
MIN_INTERVAL = 0.05  # an interval of 0 must not spin
OUTPUT_TAIL = 4096  # bytes of a COMMAND probe's output kept in health.log
_MAX_HEAD = 64 * 1024  # an HTTP response head longer than this is not a response
_REAP_SECONDS = 2.0  # how long a SIGKILLed probe may take to die


class Verdict(NamedTuple):
    report: bool  # the health changed: tell Marathon
    kill: bool  # too many failures: kill the task


_IGNORED = Verdict(report=False, kill=False)


class HealthState:
    """Mesos' health-check bookkeeping for one task.

    Failures are ignored (not counted, not reported) while the task has
    never been healthy and is within `grace_period_seconds` of becoming
    RUNNING.  A counted failure adds to the consecutive failures, a success
    resets them; the task is killed once they reach `consecutive_failures`
    (so 0 kills on the first counted failure).  Only changes of the health
    (the first result included) are reported.
    """

    __slots__ = ("check", "running_at", "healthy", "succeeded", "failures")

    def __init__(self, check: AgentHealthCheck, running_at: float, *,
                 healthy: bool | None = None, succeeded: bool = False) -> None:
        self.check = check
        self.running_at = running_at  # trio time the task became RUNNING
        self.healthy = healthy
        self.succeeded = succeeded or healthy is True
        self.failures = 0

    def in_grace(self, now: float) -> bool:
        return not self.succeeded and now - self.running_at < self.check.grace_period_seconds

    def observe(self, ok: bool, now: float) -> Verdict:
        if ok:
            self.succeeded = True
            self.failures = 0
            changed = self.healthy is not True
            self.healthy = True
            return Verdict(report=changed, kill=False)
        if self.in_grace(now):
            return _IGNORED
        self.failures += 1
        changed = self.healthy is not False
        self.healthy = False
        return Verdict(report=changed, kill=self.failures >= self.check.consecutive_failures)


class CommandContext(NamedTuple):
    """How a task's COMMAND probes run: as the task runs (computed once per task)."""

    env: dict[str, str]
    sandbox: Path
    cgroup: TaskCgroup | None
    user_options: dict[str, object]
    error: str | None  # why no probe can run (an unknown user, ...)


def user_options(user: str | None) -> dict[str, object]:
    """Popen options to run probes as the task's `user`; ValueError if impossible."""
    if not user:
        return {}
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        raise ValueError(f"unknown user '{user}'") from None
    if pw.pw_uid == os.geteuid():
        return {}
    if os.geteuid() != 0:
        raise ValueError(f"cannot run as '{user}': the agent is not root")
    return {"user": pw.pw_uid, "group": pw.pw_gid,
            "extra_groups": os.getgrouplist(user, pw.pw_gid)}


def command_context(env: dict[str, str], sandbox: Path, cgroup: TaskCgroup | None,
                    user: str | None) -> CommandContext:
    try:
        return CommandContext(env, sandbox, cgroup, user_options(user), None)
    except ValueError as e:
        return CommandContext(env, sandbox, cgroup, {}, str(e))


async def check_status(check: AgentCheck, ctx: CommandContext | None, limiter: trio.CapacityLimiter,
                       spawn_limiter: trio.CapacityLimiter) -> CheckStatus:
    """One run of a Mesos check (the app's `check`): what it found, never
    a verdict (checks are informational)."""
    timeout = check.timeout_seconds if check.timeout_seconds > 0 else DEFAULT_TIMEOUT
    async with limiter:
        if check.protocol == "COMMAND":
            if not check.command or ctx is None or ctx.error:
                return CheckStatus(command_exit_code=-1)
            rc, _ = await command_exit(check.command, ctx, timeout, spawn_limiter)
            return CheckStatus(command_exit_code=-1 if rc is None else rc)
        if check.port is None or not 0 < check.port < 65536:
            return CheckStatus(tcp_succeeded=False) if check.protocol == "TCP" else CheckStatus(http_status_code=0)
        if check.protocol == "TCP":
            ok, _ = await tcp_probe(check.port, timeout)
            return CheckStatus(tcp_succeeded=ok)
        code, _ = await http_status(check.port, check.path, tls=check.https, time_limit=timeout)
        return CheckStatus(http_status_code=code or 0)


class Prober:
    """Runs single probes, at most `concurrency` at a time across all tasks.

    COMMAND probes are spawned in worker threads under `spawn_limiter` (the
    agent's, shared with task spawns); every other part of a probe is a trio
    task waiting on a socket, a pipe or a pidfd.
    """

    def __init__(self, *, concurrency: int, spawn_limiter: trio.CapacityLimiter) -> None:
        self.limiter = trio.CapacityLimiter(concurrency)
        self._spawn_limiter = spawn_limiter

    async def probe(self, check: AgentHealthCheck,
                    ctx: CommandContext | None = None) -> tuple[bool, str]:
        """(healthy, why not) for one probe of `check`."""
        timeout = check.timeout_seconds if check.timeout_seconds > 0 else DEFAULT_TIMEOUT
        async with self.limiter:
            if check.protocol == "COMMAND":
                if not check.command:
                    return False, "the health check has no command"
                if ctx is None or ctx.error:
                    return False, ctx.error if ctx else "no task to run the command for"
                return await command_probe(check.command, ctx, timeout, self._spawn_limiter)
            if check.port is None or not 0 < check.port < 65536:
                return False, f"no port to probe ({check.port})"
            if check.protocol == "MESOS_TCP":
                return await tcp_probe(check.port, timeout)
            return await http_probe(check.port, check.path, tls=check.protocol == "MESOS_HTTPS",
                                    time_limit=timeout)


# -- TCP and HTTP(S) ---------------------------------------------------------------


async def tcp_probe(port: int, time_limit: float, host: str = "127.0.0.1") -> tuple[bool, str]:
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_STREAM)
    try:
        with trio.fail_after(time_limit):
            await sock.connect((host, port))
        return True, ""
    except trio.TooSlowError:
        return False, f"TCP connection to {host}:{port} timed out after {time_limit:g}s"
    except OSError as e:
        return False, f"TCP connection to {host}:{port} failed: {e.strerror or e}"
    finally:
        sock.close()


_tls: ssl.SSLContext | None = None


def _tls_context() -> ssl.SSLContext:
    """One client context for every HTTPS probe: no certificate or name checks."""
    global _tls
    if _tls is None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        _tls = ctx
    return _tls


async def http_probe(port: int, path: str, *, tls: bool, time_limit: float,
                     host: str = "127.0.0.1") -> tuple[bool, str]:
    code, why = await http_status(port, path, tls=tls, time_limit=time_limit, host=host)
    if code is None:
        return False, why
    if 200 <= code < 400:
        return True, ""
    return False, why


async def http_status(port: int, path: str, *, tls: bool, time_limit: float,
                      host: str = "127.0.0.1") -> tuple[int | None, str]:
    """(the status of GET path, None when there was no answer; and why it
    is not a success)."""
    scheme = "https" if tls else "http"
    path = path if path.startswith("/") else "/" + path
    url = f"{scheme}://{host}:{port}{path}"
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: marathon-agent-health-check"
        "\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    ).encode("latin-1", "replace")
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_STREAM)
    stream: trio.abc.Stream | None = None
    try:
        with trio.fail_after(time_limit):
            await sock.connect((host, port))
            stream = trio.SocketStream(sock)
            if tls:
                stream = trio.SSLStream(stream, _tls_context())
                await stream.do_handshake()
            await stream.send_all(request)
            code = await _status_code(stream)
    except trio.TooSlowError:
        return None, f"GET {url} timed out after {time_limit:g}s"
    except (OSError, trio.BrokenResourceError, ValueError) as e:
        # ssl.SSLError is an OSError; trio wraps TLS failures in BrokenResourceError.
        cause = e.__cause__ if isinstance(e, trio.BrokenResourceError) and e.__cause__ else e
        return None, f"GET {url} failed: {cause}"
    finally:
        if stream is not None:
            await trio.aclose_forcefully(stream)
        else:
            sock.close()
    return code, f"GET {url} answered {code}"


async def _status_code(stream: trio.abc.ReceiveStream) -> int:
    """The status of the final response (interim 1xx responses skipped)."""
    buf = b""
    while True:
        chunk = await stream.receive_some(4096)
        if not chunk:
            raise ValueError("connection closed before a complete status line")
        buf += chunk
        while True:
            end = buf.find(b"\r\n")
            if end < 0:
                break
            parts = buf[:end].split(None, 2)
            if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not (
                    len(parts[1]) == 3 and parts[1].isdigit()):
                raise ValueError(f"not an HTTP response: {buf[:min(end, 80)]!r}")
            code = int(parts[1])
            if code >= 200:
                return code
            head_end = buf.find(b"\r\n\r\n")
            if head_end < 0:
                break  # the rest of the interim response is still coming
            buf = buf[head_end + 4:]
        if len(buf) > _MAX_HEAD:
            raise ValueError("response head too long")


# -- COMMAND -----------------------------------------------------------------------


def _spawn(argv: list[str], ctx: CommandContext, out: int) -> subprocess.Popen[bytes]:
    """Start a probe (in a worker thread: a spawn can block for a while)."""
    user = ctx.user_options
    if ctx.cgroup is not None:
        if user:
            # Join as root, then become the user (as the task itself does).
            argv = machine.as_user_argv(user["user"], user["group"],  # type: ignore[arg-type]
                                        user["extra_groups"], argv)  # type: ignore[arg-type]
            user = {}
        argv = Cgroups.join_argv(ctx.cgroup, argv)
    return subprocess.Popen(
        argv, cwd=ctx.sandbox, env=ctx.env, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
        start_new_session=True, close_fds=True, **user,  # type: ignore[arg-type]
    )


def _read_available(fd: int, tail: bytearray) -> bool:
    """Read what the pipe holds (bounded), keeping only the tail; False at EOF."""
    for _ in range(16):
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            return True
        if not chunk:
            return False
        tail += chunk
        if len(tail) > 2 * OUTPUT_TAIL:
            del tail[:-OUTPUT_TAIL]
    return True


async def _drain(fd: int, tail: bytearray) -> None:
    while True:
        await trio.lowlevel.wait_readable(fd)
        if not _read_available(fd, tail):
            return


def describe_exit(rc: int) -> str:
    """How Mesos words a command's end: exit status N, or terminated with signal SIGX."""
    if rc >= 0:
        return f"Command exited with status {rc}"
    try:
        name = signal.Signals(-rc).name
    except ValueError:
        name = f"signal {-rc}"
    return f"Command terminated with signal {name}"


async def command_probe(command: str, ctx: CommandContext, time_limit: float,
                        spawn_limiter: trio.CapacityLimiter) -> tuple[bool, str]:
    rc, why = await command_exit(command, ctx, time_limit, spawn_limiter)
    if rc == 0:
        return True, ""
    return False, why


async def command_exit(command: str, ctx: CommandContext, time_limit: float,
                       spawn_limiter: trio.CapacityLimiter) -> tuple[int | None, str]:
    """(the exit code of `command` run for the task, None when it could
    not be known; and why it is not 0)."""
    argv = ["/bin/sh", "-c", command]
    r, w = os.pipe2(os.O_CLOEXEC)
    try:
        try:
            popen = await trio.to_thread.run_sync(_spawn, argv, ctx, w, limiter=spawn_limiter)
        finally:
            os.close(w)
    except (OSError, ValueError, subprocess.SubprocessError) as e:
        os.close(r)
        return None, f"cannot run the health check command: {e}"
    except BaseException:
        os.close(r)
        raise
    # From here on the probe must be killed and reaped whatever happens
    # (a cancellation after the spawn is delivered at the next checkpoint).
    pid = popen.pid
    pidfd: int | None = None
    tail = bytearray()
    exited = False
    rc: int | None = None
    try:
        pidfd = os.pidfd_open(pid)
        os.set_blocking(r, False)
        with trio.move_on_after(time_limit):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_drain, r, tail)
                await trio.lowlevel.wait_readable(pidfd)
                nursery.cancel_scope.cancel()
            exited = True
            _read_available(r, tail)  # what it wrote just before exiting
    except OSError as e:
        return None, f"cannot watch the health check command: {e}"
    finally:
        # Kill what is left: the probe itself on timeout or cancellation,
        # its children otherwise.  The leader is not reaped yet, so its pid
        # (the group id) cannot have been reused: this reaches only the probe's.
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if not exited and pidfd is not None:
            with trio.CancelScope(shield=True), trio.move_on_after(_REAP_SECONDS):
                await trio.lowlevel.wait_readable(pidfd)
        rc = _reap(pid)
        popen.returncode = -signal.SIGKILL if rc is None else rc  # reaped here, not by Popen
        # Its children were re-parented to us (the subreaper): reap those dead already.
        machine.reap_group(pid)
        if pidfd is not None:
            os.close(pidfd)
        os.close(r)
    _keep_output(ctx.sandbox, tail)
    if not exited:
        return None, f"Command timed out after {time_limit:g}s"
    if rc is None:
        return None, "Command ended with an unknown exit status"
    return rc, "" if rc == 0 else describe_exit(rc)


def _reap(pid: int) -> int | None:
    """Exit code of our exited child (negative: signal); None if not exited or not ours."""
    try:
        done, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return None
    return os.waitstatus_to_exitcode(status) if done else None


def _keep_output(sandbox: Path, tail: bytearray) -> None:
    try:
        with open(sandbox / HEALTH_LOG, "wb") as f:
            f.write(tail[-OUTPUT_TAIL:])
    except OSError:
        pass
