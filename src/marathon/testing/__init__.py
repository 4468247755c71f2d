"""A harness for tests and plugin authors: a real `marathon serve` in a subprocess.

    with MarathonProcess(tmp_path) as m:
        r = m.client.post("/v2/apps", json={...})
        m.wait_for(lambda: len(m.tasks("/web")) == 2)

The server listens on 127.0.0.1 on a free port, keeps its state in the
given directory, and is stopped by PID when the block ends (SIGTERM, then
SIGKILL if it does not go).  `kill()` is a `kill -9` for crash tests;
`start()` again reuses the same data directory.  Waiting is on conditions
(polled), never on fixed sleeps.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Container
from pathlib import Path
from typing import Any, TypeVar

import httpx

from ..agent.machine import ephemeral_port_range

T = TypeVar("T")

__all__ = ["MarathonProcess", "free_low_port", "free_port", "private_port_range", "wait_for", "pid_alive",
           "terminate"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def private_port_range(width: int = 40) -> str:
    """A host-port range for one test server's agent, below the ephemeral range.

    A task port inside the kernel's ephemeral range can be taken as the
    *source* port of a connection to it while the task is still starting, and
    that connection then reaches itself (TCP self-connect): a proxy's request
    comes back to it as the answer (`marathon serve` warns about such ranges).
    """
    low = ephemeral_port_range().begin
    base = random.randrange(10000, max(low - width, 10001))
    return f"{base}-{base + width - 1}"


def free_low_port(avoid: Container[int] = ()) -> int:
    """A free port below the ephemeral range (see `private_port_range`), not in `avoid`."""
    low = ephemeral_port_range().begin
    while True:
        port = random.randrange(10000, low)
        if port in avoid:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port


def wait_for(condition: Callable[[], T], timeout: float = 60.0, interval: float = 0.05, message: str = "") -> T:
    """Poll `condition` until it returns a truthy value; return that value.

    Raises TimeoutError with `message` (and the last exception, if the
    condition kept raising) after `timeout` seconds.
    """
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        try:
            value = condition()
            if value:
                return value
            last_exc = None
        except Exception as exc:  # the condition may fail while a server starts
            last_exc = exc
        if time.monotonic() > deadline:
            detail = f" (last error: {last_exc!r})" if last_exc else ""
            raise TimeoutError(f"timed out after {timeout}s waiting for {message or condition}{detail}")
        time.sleep(interval)


def terminate(proc: subprocess.Popen[Any], timeout: float = 30.0) -> int | None:
    """SIGTERM, SIGKILL if it has not gone after `timeout`; its exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


class MarathonProcess:
    """One `marathon serve` subprocess with its own data directory and port."""

    def __init__(
        self,
        data_dir: Path,
        *,
        args: list[str] | None = None,
        env: dict[str, str] | None = None,
        port: int | None = None,
        agent_ports: str | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.args = list(args or [])
        self.extra_env = dict(env or {})
        self.agent_ports = agent_ports
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.data_dir / "marathon.log"
        self._client: httpx.Client | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def client(self) -> httpx.Client:
        if self._client is None:
            self._client = httpx.Client(base_url=self.url, timeout=30.0)
        return self._client

    def command(self) -> list[str]:
        cmd = [
            sys.executable, "-m", "marathon", "serve",
            "--http_address", "127.0.0.1",
            "--http_port", str(self.port),
            "--hostname", "127.0.0.1",
            "--data_dir", str(self.data_dir),
            "--logging_level", "debug",
        ]
        if self.agent_ports:
            cmd += ["--agent_ports", self.agent_ports]
        return cmd + self.args

    def start(self, timeout: float = 60.0) -> MarathonProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env.update(self.extra_env)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, env=env)
        log.close()
        try:
            wait_for(self._ready, timeout=timeout, message=f"marathon on port {self.port} to answer /ping")
        except TimeoutError:
            self.stop()
            raise TimeoutError(f"marathon did not start; log:\n{self.log()}") from None
        return self

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"marathon exited with {self.proc.returncode}:\n{self.log()}")
        return self.client.get("/ping").status_code == 200

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-20000:]
        except FileNotFoundError:
            return ""

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM (clean shutdown: tasks are stopped), SIGKILL after `timeout`."""
        if self._client is not None:
            self._client.close()
            self._client = None
        if self.proc is None:
            return None
        code = terminate(self.proc, timeout)
        self.proc = None
        return code

    def kill(self) -> None:
        """`kill -9`: the server dies at once; its tasks keep running."""
        if self._client is not None:
            self._client.close()
            self._client = None
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def __enter__(self) -> MarathonProcess:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- conveniences ------------------------------------------------------------

    def wait_for(self, condition: Callable[[], T], timeout: float = 60.0, message: str = "") -> T:
        return wait_for(condition, timeout=timeout, message=message)

    def tasks(self, app_id: str) -> list[dict[str, Any]]:
        r = self.client.get(f"/v2/apps{app_id}/tasks")
        r.raise_for_status()
        return r.json()["tasks"]

    def sandbox_text(self, app_id: str, name: str) -> str | None:
        """The file `name` in the sandbox of the app's first task (embedded
        agent), or None while there is no task or no such file."""
        tasks = self.tasks(app_id)
        if not tasks:
            return None
        path = self.data_dir / "agent" / "sandboxes" / tasks[0]["id"] / name
        return path.read_text() if path.exists() else None

    def running_tasks(self, app_id: str) -> list[dict[str, Any]]:
        return [t for t in self.tasks(app_id) if t["state"] == "TASK_RUNNING"]

    def deployments(self) -> list[dict[str, Any]]:
        return self.client.get("/v2/deployments").json()

    def wait_deployments_done(self, timeout: float = 60.0) -> None:
        wait_for(lambda: self.deployments() == [], timeout=timeout, message="all deployments to finish")


# -- in-process: real services, simulated agents, virtual time -------------------------


class InProcess:
    """Marathon's services in this trio run, driven through the ASGI app.

        async with InProcess.start(agents=20) as m:
            await m.client.post("/v2/apps", json={...})
            await m.settle()

    State lives in a memory store; agents are `cluster.sim.SimDriver`.  Wall
    clock stamps follow `trio.current_time()`, so under
    `trio.testing.MockClock(autojump_threshold=0)` backoffs, kill grace periods
    and launch delays take no real time.
    """

    def __init__(self, services: Any, client: Any, driver: Any) -> None:
        self.services = services
        self.client = client
        self.driver = driver

    @classmethod
    def start(cls, *, agents: int = 10, sim: Any = None, plugins: Any = (), **flags: Any) -> Any:
        from contextlib import asynccontextmanager

        @asynccontextmanager
        async def run() -> Any:
            import tempfile

            import trio

            from ..api import build_app
            from ..cluster.sim import SimConfig, SimDriver
            from ..config import Config
            from ..server import start_services
            from ..storage.memory import MemoryStore

            base = 1_700_000_000_000

            def time_ms() -> int:
                return base + int(trio.current_time() * 1000)

            driver = SimDriver(sim or SimConfig(agents=agents), time_ms=time_ms)
            flags.setdefault("reconciliation_initial_delay", 3_600_000)
            flags.setdefault("scale_apps_initial_delay", 3_600_000)
            with tempfile.TemporaryDirectory() as tmp:
                config = Config(store="memory", data_dir=tmp, hostname="marathon.test", master="sim://", **flags)
                async with trio.open_nursery() as nursery:
                    services = await start_services(
                        config, nursery, time_ms=time_ms, driver=driver, store=MemoryStore(), plugins=plugins
                    )
                    transport = httpx.ASGITransport(app=build_app(services.api_context))
                    async with httpx.AsyncClient(transport=transport, base_url="http://marathon.test") as client:
                        yield cls(services, client, driver)
                    nursery.cancel_scope.cancel()

        return run()

    async def settle(self) -> None:
        """Wait (in trio time) until no deployment runs and nothing waits for placement.

        Put a bound on it at the call site (`with trio.fail_after(...)`).
        """
        await self.wait_until(lambda: not self.services.deployments.running() and not self.services.tracker.scheduled())

    async def wait_until(self, predicate: Callable[[], Any], interval: float = 0.1) -> Any:
        """Poll `predicate` in trio time until it is truthy; returns its value.

        Polling is deliberate: the conditions tests wait for span several
        services, and under MockClock a poll costs no real time.
        """
        import trio

        while not (value := predicate()):  # noqa: ASYNC110
            await trio.sleep(interval)
        return value

    def instances(self, app_id: str) -> list[Any]:
        return self.services.tracker.of_app(app_id)

    def running(self, app_id: str) -> list[Any]:
        return [i for i in self.instances(app_id) if i.condition == "Running"]
