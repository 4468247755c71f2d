"""`marathon lb <generator>`: load-balancer configs from Marathon's state.

    marathon lb haproxy --marathon http://127.0.0.1:8080                # print once
    marathon lb haproxy --marathon URL --config-file /etc/haproxy/haproxy.cfg --watch

Generators come from the `marathon_lb_generators` hook (`haproxy` is built
in; a plugin loaded with `--plugin-conf`/`--plugin-dir` can add others).
Each sync reads `GET /v2/apps?embed=apps.tasks`, keeps the running tasks
(and only the healthy ones of apps with health checks), and renders.

Without `--config-file` the text is printed.  With it, a changed text is
written next to the live file, validated (`haproxy -c -f`, or
`--check-command`), and only then moved over the live file (atomically) and
haproxy started (`-D -p pidfile`) or reloaded seamlessly (`-x socket -sf
<pids read from the pidfile>`), or `--reload-command` run.  An invalid config
is never applied: the apps that make it invalid are found by bisection and
left out (reported by id), so one bad app does not freeze every later update
(RELIABILITY.md item 29); if no app is to blame nothing changes.  A reload
that fails puts the previous file back.

`--watch` follows `/v2/events` (SSE) for the events that change routing,
coalesces bursts (`--debounce-seconds`), reconnects with backoff when the
stream drops or goes silent, resyncs after every reconnect (events were
missed) and every `--resync-seconds` regardless (items 10, 26, 27).

Exit status: 0 when the config was applied (or unchanged), 1 when something
was rejected, could not be applied or Marathon could not be read, 2 for
usage errors (an unknown generator lists the known ones).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import fcntl
import logging
import os
import re
import shlex
import socket
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx
import msgspec
import trio

from ..hookspecs import BackendTask, LoadBalancerGenerator
from ..models.app import AppDefinition

log = logging.getLogger("marathon.lb")

# Events after which routing may differ (SPEC.md 9.2).
WATCHED_EVENTS = (
    "status_update_event",
    "health_status_changed_event",
    "instance_health_changed_event",
    "deployment_success",
    "api_post_event",
    "app_terminated_event",
    "group_change_success",
)
# Marathon sends a keep-alive line every 10 s: a stream silent for longer
# than this is dead (a partitioned or deadlocked node never closes it).
STREAM_IDLE_TIMEOUT = 35.0
BACKOFF_INITIAL = 0.5
BACKOFF_MAX = 30.0
# haproxy -c and -D answer in well under a second; a hung one must not stall syncs forever.
COMMAND_TIMEOUT = 60.0


# -- reading Marathon ------------------------------------------------------------------


class _HealthResult(msgspec.Struct):
    alive: bool = False


class _TaskJson(msgspec.Struct, rename="camel"):
    id: str
    host: str = ""
    state: str = ""
    ports: list[int] = []
    health_check_results: list[_HealthResult] = []


class _AppTasks(msgspec.Struct):
    id: str
    tasks: list[_TaskJson] = []


class _AppsBody(msgspec.Struct):
    apps: list[msgspec.Raw]


@dataclass(frozen=True)
class State:
    apps: list[AppDefinition]
    tasks: dict[str, list[BackendTask]]


def parse_apps(body: bytes) -> State:
    """`GET /v2/apps?embed=apps.tasks` -> apps and their routable tasks.

    Routable: `TASK_RUNNING` on a known host, and, for an app with health
    checks, with at least one result and every result alive.  An app that
    does not decode is logged and left out rather than stopping every app.
    """
    apps: list[AppDefinition] = []
    tasks: dict[str, list[BackendTask]] = {}
    for raw in msgspec.json.decode(body, type=_AppsBody).apps:
        try:
            app = msgspec.json.decode(raw, type=AppDefinition)
            listed = msgspec.json.decode(raw, type=_AppTasks).tasks
        except msgspec.ValidationError as exc:
            log.error("app left out: cannot read it: %s", exc)
            continue
        apps.append(app)
        checked = bool(app.health_checks)
        routable = []
        for t in listed:
            if t.state != "TASK_RUNNING" or not t.host:
                continue
            healthy = None
            if checked:
                healthy = bool(t.health_check_results) and all(r.alive for r in t.health_check_results)
                if not healthy:
                    continue
            routable.append(BackendTask(task_id=t.id, host=t.host, ports=tuple(t.ports), healthy=healthy))
        tasks[app.id] = routable
    return State(apps, tasks)


class Marathon:
    """The Marathon endpoints to read, tried in turn when one fails."""

    def __init__(self, urls: Sequence[str], auth: tuple[str, str] | None = None) -> None:
        self.urls = [u.rstrip("/") for u in urls]
        self.index = 0
        self.client = httpx.AsyncClient(auth=auth, follow_redirects=True, timeout=httpx.Timeout(30.0, connect=5.0))

    @property
    def url(self) -> str:
        return self.urls[self.index]

    def next(self) -> None:
        self.index = (self.index + 1) % len(self.urls)

    async def state(self) -> State:
        try:
            r = await self.client.get(f"{self.url}/v2/apps", params={"embed": "apps.tasks"})
            r.raise_for_status()
            return parse_apps(r.content)
        except (httpx.HTTPError, msgspec.DecodeError):
            self.next()
            raise

    def events(self) -> Any:
        """The SSE stream (an httpx streaming context) of WATCHED_EVENTS."""
        return self.client.stream(
            "GET",
            f"{self.url}/v2/events",
            params=[("event_type", t) for t in WATCHED_EVENTS],
            headers={"Accept": "text/event-stream"},
            timeout=httpx.Timeout(10.0, read=STREAM_IDLE_TIMEOUT),
        )

    async def aclose(self) -> None:
        await self.client.aclose()


# -- where configs go --------------------------------------------------------------------


class Target(Protocol):
    """Where a rendered config is validated and applied."""

    def current(self) -> str | None:
        """The text in effect (None: nothing is, e.g. haproxy is not running)."""
        ...

    async def validate(self, text: str) -> str | None:
        """None if `text` is acceptable, else the reason."""
        ...

    async def apply(self, text: str) -> str | None:
        """Validate, install and activate `text`; None on success, else the reason
        (and what was in effect stays in effect)."""
        ...


class PrintTarget:
    """No file: print each config to stdout."""

    def __init__(self) -> None:
        self.printed: str | None = None

    def current(self) -> str | None:
        return self.printed

    async def validate(self, text: str) -> str | None:
        return None

    async def apply(self, text: str) -> str | None:
        sys.stdout.write(text)
        sys.stdout.flush()
        self.printed = text
        return None


async def _run(cmd: Sequence[str]) -> tuple[int, str]:
    """Run a command; (exit status, its output).  127: not found; 124: timed out."""
    timeout = COMMAND_TIMEOUT
    try:
        with trio.move_on_after(timeout) as scope:
            done = await trio.run_process(list(cmd), capture_stdout=True, capture_stderr=True, check=False)
    except OSError as exc:
        return 127, f"{cmd[0]}: {exc.strerror or exc}"
    if scope.cancelled_caught:
        return 124, f"{cmd[0]}: no answer after {timeout:.0f}s"
    output = (done.stdout + done.stderr).decode(errors="replace").strip()
    return done.returncode, output


def _one_line(output: str) -> str:
    """haproxy's alerts and warnings as one log line, without its version banner."""
    return " | ".join(line.strip() for line in output.splitlines() if line.strip() and "[NOTICE]" not in line)


_BIND = re.compile(r"^\s*bind\s+(?:ipv[46]@)?\[?([^\s\]]*?)\]?:(\d+)(?:\s|$)", re.M)


def _binds(text: str) -> set[tuple[str, int]]:
    """(address, port) of the `bind` lines of an haproxy config."""
    return {(host or "*", int(port)) for host, port in _BIND.findall(text)}


def _pid_running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


class FileTarget:
    """A config file, written atomically after validation, then activated."""

    def __init__(self, config_file: Path) -> None:
        self.config_file = config_file
        self.lock_file = config_file.with_name(config_file.name + ".lock")

    def current(self) -> str | None:
        try:
            return self.config_file.read_text()
        except FileNotFoundError:
            return None

    def _write_temp(self, text: str) -> Path:
        tmp = self.config_file.with_name(f".{self.config_file.name}.{os.getpid()}.tmp")
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        return tmp

    async def _check(self, path: Path, text: str) -> str | None:
        return None

    async def _activate(self) -> str | None:
        return None

    async def validate(self, text: str) -> str | None:
        tmp = self._write_temp(text)
        try:
            return await self._check(tmp, text)
        finally:
            tmp.unlink(missing_ok=True)

    async def apply(self, text: str) -> str | None:
        self.config_file.parent.mkdir(parents=True, exist_ok=True)
        async with self._locked():
            tmp = self._write_temp(text)
            try:
                problem = await self._check(tmp, text)
                if problem is not None:
                    return problem
                previous = self.current()
                os.replace(tmp, self.config_file)
            finally:
                tmp.unlink(missing_ok=True)
            problem = await self._activate()
            if problem is not None:
                # The running process still has the old config: make the file say so.
                if previous is None:
                    self.config_file.unlink(missing_ok=True)
                else:
                    os.replace(self._write_temp(previous), self.config_file)
            return problem

    @contextlib.asynccontextmanager
    async def _locked(self) -> Any:
        """One writer at a time per config file (several `marathon lb` may share one)."""
        fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            with trio.move_on_after(60) as waiting:
                while True:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except OSError as exc:
                        if exc.errno not in (errno.EAGAIN, errno.EACCES):
                            raise
                        await trio.sleep(0.05)
            if waiting.cancelled_caught:
                raise OSError(errno.EAGAIN, f"{self.lock_file} stayed locked by another process for 60 s")
            yield
        finally:
            os.close(fd)  # releases the lock


class HaproxyTarget(FileTarget):
    """haproxy's config file and the haproxy daemon that serves it."""

    def __init__(self, config_file: Path, *, haproxy: str, pidfile: Path, socket: Path | None) -> None:
        super().__init__(config_file)
        self.haproxy = haproxy
        self.pidfile = pidfile
        self.socket = socket

    def pids(self) -> list[int]:
        """The haproxy processes in the pidfile still running.

        Read anew every time: with -D haproxy rewrites the pidfile.
        """
        try:
            words = self.pidfile.read_text().split()
        except FileNotFoundError:
            return []
        return [int(w) for w in words if w.isdigit() and _pid_running(int(w))]

    def current(self) -> str | None:
        return super().current() if self.pids() else None

    async def _check(self, path: Path, text: str) -> str | None:
        code, output = await _run([self.haproxy, "-c", "-f", str(path)])
        if code != 0:
            return _one_line(output).replace(str(path), str(self.config_file)) or f"haproxy -c exited with {code}"
        return self._ports_in_use(text)

    def _ports_in_use(self, text: str) -> str | None:
        """`haproxy -c` does not bind: check that ports new to this config are free.

        A port another process holds would make the reload fail, again and
        again, for every later config; as a validation failure it only
        leaves out the app that wants the port.  Ports the running haproxy
        binds are its own (handed over with -x).
        """
        held = {port for _, port in _binds(self.current() or "")}
        busy = []
        for host, port in sorted(_binds(text)):
            if port in held:
                continue
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            with socket.socket(family, socket.SOCK_STREAM) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    probe.bind(("" if host in ("*", "0.0.0.0", "::") else host, port))
                except OSError as exc:
                    if exc.errno == errno.EADDRINUSE:
                        busy.append(f"{host}:{port}")
        return f"cannot bind: address already in use: {', '.join(busy)}" if busy else None

    async def _activate(self) -> str | None:
        old = self.pids()
        cmd = [self.haproxy, "-D", "-f", str(self.config_file), "-p", str(self.pidfile)]
        if old:
            if self.socket is not None and self.socket.exists():
                cmd += ["-x", str(self.socket)]  # take over the listening sockets: no connection refused
            else:
                log.warning("reloading haproxy without -x (no stats socket): connections may be refused meanwhile")
            cmd += ["-sf", *map(str, old)]  # -sf takes every remaining argument
        code, output = await _run(cmd)
        if code != 0:
            return f"haproxy {'reload' if old else 'start'} failed ({code}): {_one_line(output)}"
        new = self.pids()
        if not new:
            return f"haproxy exited right after {'reload' if old else 'start'}: {_one_line(output)}"
        log.info("haproxy %s pids=%s", "reloaded" if old else "started", ",".join(map(str, new)))
        return None


class CommandTarget(FileTarget):
    """Any other server: `--check-command` and `--reload-command` ({file} is replaced)."""

    def __init__(self, config_file: Path, *, check: str | None, reload: str | None) -> None:
        super().__init__(config_file)
        self.check = check
        self.reload = reload

    def _command(self, template: str, path: Path) -> list[str]:
        return [word.replace("{file}", str(path)) for word in shlex.split(template)]

    async def _check(self, path: Path, text: str) -> str | None:
        if not self.check:
            return None
        code, output = await _run(self._command(self.check, path))
        return None if code == 0 else (output or f"check command exited with {code}")

    async def _activate(self) -> str | None:
        if not self.reload:
            return None
        code, output = await _run(self._command(self.reload, self.config_file))
        return None if code == 0 else f"reload command failed ({code}): {output}"


# -- one sync: read, render, validate, apply -------------------------------------------------


@dataclass
class SyncResult:
    ok: bool
    changed: bool = False
    excluded: list[str] = field(default_factory=list)
    problem: str = ""


class Syncer:
    """Renders Marathon's state with one generator and applies it to a target."""

    def __init__(self, generator: LoadBalancerGenerator, options: Mapping[str, Any], target: Target, *, cleanup: bool = True) -> None:
        self.generator = generator
        self.options = dict(options)
        self.target = target
        self.cleanup = cleanup
        # The last invalid full render and what was made of it, so an
        # unchanged invalid state is not bisected again on every event.
        self._rejected: tuple[str, str | None, list[str], str] | None = None
        self._failed_apply: str | None = None

    def render(self, state: State, apps: Sequence[AppDefinition] | None = None) -> str:
        return self.generator.render(state.apps if apps is None else list(apps), state.tasks, self.options)

    async def _checked(self, text: str) -> str | None:
        try:
            return await self.target.validate(text)
        except OSError as exc:
            return f"cannot validate: {exc}"

    async def _render_checked(self, state: State, apps: Sequence[AppDefinition]) -> tuple[str | None, str | None]:
        try:
            text = self.render(state, apps)
        except Exception as exc:  # a plugin generator's bug: report, apply nothing
            return None, f"generator {self.generator.name!r} failed: {type(exc).__name__}: {exc}"
        return text, await self._checked(text)

    async def _valid_subset(self, state: State, problem: str) -> tuple[str | None, list[str], str]:
        """The config of the largest set of apps that validates, and the apps left out.

        Starts from the apps kept last time when they still validate (so only
        the apps left out before are tried again), then bisects: a chunk that
        validates with the apps already kept is kept whole, one that does not
        is split, so k bad apps among n cost about k*log2(n) checks.
        """
        base, base_problem = await self._render_checked(state, [])
        if base is None or base_problem is not None:
            return None, [a.id for a in state.apps], base_problem or problem
        apps = sorted(state.apps, key=lambda a: a.id)
        good: list[AppDefinition] = []
        candidates = apps
        before = set(self._rejected[2]) if self._rejected is not None else set()
        if before:
            kept = [a for a in apps if a.id not in before]
            if len(kept) < len(apps) and (await self._render_checked(state, kept))[1] is None:
                good, candidates = kept, [a for a in apps if a.id in before]
        bad: list[str] = []

        async def add(chunk: list[AppDefinition], known_bad: bool = False) -> None:
            if not chunk:
                return
            if not known_bad and (await self._render_checked(state, good + chunk))[1] is None:
                good.extend(chunk)
                return
            if len(chunk) == 1:
                bad.append(chunk[0].id)
                return
            mid = len(chunk) // 2
            await add(chunk[:mid])
            await add(chunk[mid:])

        # good + candidates is the full set, known to be invalid.
        await add(candidates, known_bad=True)
        return self.render(state, good), bad, problem

    async def sync(self, state: State, *, force: bool = False) -> SyncResult:
        text, problem = await self._render_checked(state, state.apps)
        excluded: list[str] = []
        if problem is None:
            self._rejected = None
        else:
            # Validity can depend on the machine (a port someone holds), so the
            # periodic resync (force) searches again.
            if not force and self._rejected is not None and self._rejected[0] == text:
                _, text, excluded, problem = self._rejected
            else:
                full = text
                if self.cleanup and text is not None:
                    text, excluded, problem = await self._valid_subset(state, problem)
                else:
                    text = None
                self._rejected = (full or "", text, excluded, problem)
                if text is None:
                    log.error("config rejected, nothing applied: %s", problem)
                else:
                    log.error("config rejected; left out apps %s: %s", ",".join(excluded), problem)
            if text is None:
                return SyncResult(ok=False, problem=problem)
        assert text is not None
        if text == self.target.current():
            return SyncResult(ok=not excluded, excluded=excluded, problem=problem or "")
        if text == self._failed_apply and not force:
            return SyncResult(ok=False, excluded=excluded, problem="the same config failed to apply before")
        try:
            failure = await self.target.apply(text)
        except OSError as exc:
            failure = f"cannot write the config: {exc}"
        if failure is not None:
            self._failed_apply = text
            log.error("config not applied: %s", failure)
            return SyncResult(ok=False, excluded=excluded, problem=failure)
        self._failed_apply = None
        log.info("config applied bytes=%d excluded=%s", len(text), ",".join(excluded) or "-")
        return SyncResult(ok=not excluded, changed=True, excluded=excluded, problem=problem or "")


# -- following the event stream ----------------------------------------------------------------


class Watcher:
    """Keeps a target in step with Marathon: events, debounce, periodic resync."""

    def __init__(self, marathon: Marathon, syncer: Syncer, *, debounce: float = 0.5, resync: float = 60.0) -> None:
        self.marathon = marathon
        self.syncer = syncer
        self.debounce = debounce
        self.resync = resync
        self._wake_send, self._wake_recv = trio.open_memory_channel[None](1)
        self._force = False

    def trigger(self, force: bool = False) -> None:
        """Ask for a sync; requests made while one is pending merge into it."""
        self._force = self._force or force
        with contextlib.suppress(trio.WouldBlock):
            self._wake_send.send_nowait(None)

    async def sync_once(self, force: bool = False) -> SyncResult:
        try:
            state = await self.marathon.state()
        except (httpx.HTTPError, msgspec.DecodeError) as exc:
            log.warning("cannot read apps from Marathon: %s", exc)
            return SyncResult(ok=False, problem=str(exc))
        return await self.syncer.sync(state, force=force)

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._follow_events)
            nursery.start_soon(self._periodic)
            await self._sync_logged(True)
            task_status.started()
            while True:
                await self._wake_recv.receive()
                # Fixed window (not sliding) so a steady trickle of events
                # cannot postpone the sync forever.
                await trio.sleep(self.debounce)
                with contextlib.suppress(trio.WouldBlock):
                    self._wake_recv.receive_nowait()
                force, self._force = self._force, False
                await self._sync_logged(force)

    async def _sync_logged(self, force: bool) -> None:
        try:
            await self.sync_once(force=force)
        except Exception:
            # Keep watching: the next event or resync tries again, and the
            # load balancer keeps serving the last config meanwhile.
            log.exception("sync failed")

    async def _periodic(self) -> None:
        while True:
            await trio.sleep(self.resync)
            self.trigger(force=True)

    async def _follow_events(self) -> None:
        backoff = BACKOFF_INITIAL
        while True:
            url = self.marathon.url
            try:
                async with self.marathon.events() as response:
                    if response.status_code != 200:
                        raise httpx.HTTPStatusError(
                            f"GET /v2/events answered {response.status_code}", request=response.request, response=response
                        )
                    log.info("event stream attached url=%s", url)
                    backoff = BACKOFF_INITIAL
                    self.trigger()  # events may have been missed while detached
                    async for line in response.aiter_lines():
                        if line.startswith("event:") and line[6:].strip() in WATCHED_EVENTS:
                            self.trigger()
                log.warning("event stream ended url=%s", url)
            except (httpx.HTTPError, httpx.StreamError) as exc:
                log.warning("event stream lost url=%s: %s", url, exc or type(exc).__name__)
                self.marathon.next()
            await trio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX)


# -- the command -----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="marathon lb",
        description="Generate a load-balancer config from Marathon's apps (marathon-lb's labels), print it, "
        "or write it and reload the load balancer when it changes.",
    )
    p.add_argument("generator", help="generator name: haproxy (built in) or one a plugin provides")
    p.add_argument("--marathon", action="append", metavar="URL",
                   help="Marathon URL, repeatable: the next is tried when one fails (default: http://127.0.0.1:8080)")
    p.add_argument("--auth-credentials", metavar="USER:PASSWORD", help="HTTP basic credentials for Marathon")
    p.add_argument("--group", default="external",
                   help="expose apps whose HAPROXY_GROUP lists this group (comma-separated; '*' for all) (default: %(default)s)")
    p.add_argument("--default-group", default="external",
                   help="group of apps without HAPROXY_GROUP ('' to expose only labelled apps, as marathon-lb) (default: %(default)s)")
    p.add_argument("--bind", default="127.0.0.1", help="address frontends bind to (default: %(default)s)")
    p.add_argument("--http-port", type=int, default=80, help="port of the shared HTTP frontend for HAPROXY_{n}_VHOST (default: %(default)s)")
    p.add_argument("--stats-port", type=int, help="serve haproxy's stats page on this port")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="extra generator option (repeatable)")
    p.add_argument("--config-file", type=Path, help="write here (and reload) instead of printing")
    p.add_argument("--haproxy", default="haproxy", help="haproxy executable (default: %(default)s)")
    p.add_argument("--pidfile", type=Path, help="haproxy's pidfile (default: <config-file>.pid)")
    p.add_argument("--socket", type=Path, help="haproxy's admin socket, used for seamless reloads (default: <config-file>.sock)")
    p.add_argument("--check-command", help="validate with this command instead of haproxy -c ({file}: the candidate file)")
    p.add_argument("--reload-command", help="run this after writing instead of managing haproxy ({file}: the config file)")
    p.add_argument("--skip-config-cleanup", action="store_true",
                   help="when the config is invalid apply nothing, instead of leaving out the apps that break it")
    p.add_argument("--watch", action="store_true", help="keep following Marathon's event stream")
    p.add_argument("--resync-seconds", type=float, default=60.0, help="full resync period with --watch (default: %(default)s)")
    p.add_argument("--debounce-seconds", type=float, default=0.5, help="coalesce events over this long (default: %(default)s)")
    p.add_argument("--plugin-dir", "--plugin_dir", dest="plugin_dir", help="directory of plugin modules")
    p.add_argument("--plugin-conf", "--plugin_conf", dest="plugin_conf", help="plugin descriptor (JSON), as for `marathon serve`")
    p.add_argument("--logging-level", "--logging_level", dest="logging_level", default="info", help="(default: %(default)s)")
    return p


def generators(pm: Any) -> dict[str, LoadBalancerGenerator]:
    """Every generator by name; a later registration wins."""
    merged: dict[str, LoadBalancerGenerator] = {}
    # pluggy calls the most recently registered plugin first.
    for provided in reversed(pm.hook.marathon_lb_generators()):
        merged.update(provided or {})
    return merged


def _options(ns: argparse.Namespace, admin_socket: Path | None) -> dict[str, Any]:
    options: dict[str, Any] = {
        "bind": ns.bind,
        "group": ns.group,
        "default_group": ns.default_group,
        "http_port": ns.http_port,
        "stats_port": ns.stats_port,
        "stats_socket": str(admin_socket) if admin_socket else None,
    }
    for item in ns.option:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--option {item!r}: expected KEY=VALUE")
        options[key.strip()] = value
    return options


def _target(ns: argparse.Namespace) -> tuple[Target, Path | None]:
    if ns.config_file is None:
        return PrintTarget(), ns.socket
    config_file = ns.config_file.absolute()
    if ns.check_command or ns.reload_command:
        return CommandTarget(config_file, check=ns.check_command, reload=ns.reload_command), ns.socket
    pidfile = (ns.pidfile or config_file.with_name(config_file.name + ".pid")).absolute()
    admin_socket = (ns.socket or config_file.with_name(config_file.name + ".sock")).absolute()
    return HaproxyTarget(config_file, haproxy=ns.haproxy, pidfile=pidfile, socket=admin_socket), admin_socket


def main(argv: Sequence[str]) -> int:
    from ..plugins import PluginError, plugin_manager
    from ._logging import setup_logging

    ns = build_parser().parse_args(list(argv))
    setup_logging(ns.logging_level)
    try:
        pm = plugin_manager(descriptor=ns.plugin_conf, plugin_dir=ns.plugin_dir)
    except PluginError as exc:
        print(f"marathon lb: {exc}", file=sys.stderr)
        return 2
    known = generators(pm)
    generator = known.get(ns.generator)
    if generator is None:
        print(f"marathon lb: unknown generator {ns.generator!r}; known: {', '.join(sorted(known)) or 'none'}", file=sys.stderr)
        return 2
    target, admin_socket = _target(ns)
    try:
        options = _options(ns, admin_socket)
    except ValueError as exc:
        print(f"marathon lb: {exc}", file=sys.stderr)
        return 2
    auth = None
    if ns.auth_credentials:
        user, _, password = ns.auth_credentials.partition(":")
        auth = (user, password)
    syncer = Syncer(generator, options, target, cleanup=not ns.skip_config_cleanup)

    async def run() -> int:
        marathon = Marathon(ns.marathon or ["http://127.0.0.1:8080"], auth)
        try:
            watcher = Watcher(marathon, syncer, debounce=ns.debounce_seconds, resync=ns.resync_seconds)
            if ns.watch:
                await watcher.run()
                return 0
            result = await watcher.sync_once(force=True)
            return 0 if result.ok else 1
        finally:
            await marathon.aclose()

    try:
        return trio.run(run)
    except KeyboardInterrupt:
        return 0
