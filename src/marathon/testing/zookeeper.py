"""Real ZooKeeper servers for tests and scripts, from Debian's `zookeeper`
package (scripts/install-system-deps.sh installs it): a standalone server,
or an ensemble of n nodes that elect a leader, lose their quorum and get it
back for real.

    with Ensemble(tmp_path / "zk", size=3) as ens:   # returns once a quorum serves
        client = KazooClient(hosts=ens.hosts)        # "127.0.0.1:p1,127.0.0.1:p2,..."
        ens.kill(ens.leader_index())                 # kill -9 ZooKeeper's leader
        ens.wait_quorum()                            # the other two elect a new one
        ens.start_node(i)                            # back, with the same data

    proc, hosts = start_zookeeper(tmp_path)          # one standalone server
    stop_zookeeper(proc)

Every server listens on 127.0.0.1 only (or, given a network namespace the
test made, on that namespace's address: `Ensemble(..., host=)`), on free ports (an ensemble's
below the ephemeral range, see `free_low_port`, so that no connection
between its nodes can take a port one of them is about to bind), and is a
child process of this one, stopped by its PID: `close()` (or the end of the
`with` block, or this process's exit) stops every node the ensemble
started, whatever happened.  Each server's log is kept in its directory
(`zk.log`, appended to across restarts) for a failing run; nothing else is
written outside the given directory.

Settings: tickTime=500 ms (the shortest session is 2 ticks, 1 s), an
ensemble's initLimit 10 and syncLimit 5 ticks (a follower cut off from its
leader for 2.5 s drops out), forceSync=no (no fsync: nothing here must
survive a power cut), only the `srvr` four-letter word, which is how
"serving" and "leader" are told (its `Mode:` line), no admin server.  The
JVMs run with the serial GC and a capped heap (256 MB per ensemble node,
about 70 MB resident), and slf4j-simple on the classpath, without which
ZooKeeper logs nothing at all.

Waiting is on conditions (a process's exit, `srvr`'s answer), polled, with
generous bounds; a server that exits or does not come up raises
`RuntimeError` naming its log.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import free_low_port, free_port

__all__ = ["CLASSPATH", "ZK_JAR", "Ensemble", "start_zookeeper", "stop_zookeeper", "zookeeper_installed"]

ZK_JAR = "/usr/share/java/zookeeper.jar"
# The jar's manifest pulls in its dependencies from /usr/share/java.
CLASSPATH = f"{ZK_JAR}:/usr/share/java/slf4j-simple.jar"
_NOT_INSTALLED = "ZooKeeper is not installed: run scripts/install-system-deps.sh"


def zookeeper_installed() -> bool:
    """Whether java and Debian's ZooKeeper jar are there."""
    return bool(shutil.which("java")) and os.path.exists(ZK_JAR)


def _require_zookeeper() -> None:
    if not zookeeper_installed():
        raise RuntimeError(_NOT_INSTALLED)


def _srvr(port: int, address: str = "127.0.0.1") -> str | None:
    """The `Mode:` of the server on `port` ("leader", "follower",
    "standalone", ...), or None if it does not serve (not running, starting,
    or looking for a leader)."""
    # `ruok` answers before the server serves; `srvr` prints a Mode only then.
    try:
        with socket.create_connection((address, port), timeout=0.5) as s:
            s.sendall(b"srvr")
            data = b""
            while chunk := s.recv(4096):
                data += chunk
    except OSError:
        return None
    for line in data.decode(errors="replace").splitlines():
        if line.startswith("Mode:"):
            return line.partition(":")[2].strip()
    return None


def _java(main: str, config: Path, log: Path, *, heap_mb: int, log_level: str,
          wrap: Callable[[list[str]], list[str]] = list) -> subprocess.Popen[bytes]:
    """Start ZooKeeper's `main` class on `config`, its output appended to
    `log`; `wrap` prefixes the command (`ip netns exec ...`)."""
    with open(log, "ab") as out:
        return subprocess.Popen(
            wrap([
                "java", f"-Xmx{heap_mb}m", "-XX:+UseSerialGC", "-cp", CLASSPATH,
                f"-Dorg.slf4j.simpleLogger.defaultLogLevel={log_level}",
                main, str(config),
            ]),
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=config.parent,
        )


def _end(proc: subprocess.Popen[bytes], sig: int, timeout: float) -> None:
    """Send `sig` to `proc` unless it has exited; wait for it, with SIGKILL
    after `timeout` seconds."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_until(condition: Callable[[], Any], timeout: float, failed: Callable[[], str | None]) -> Any:
    """Poll `condition` until truthy (its value); `failed()` is a reason to
    stop early (RuntimeError), TimeoutError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        reason = failed()
        if reason:
            raise RuntimeError(reason)
        if time.monotonic() > deadline:
            return None
        time.sleep(0.05)


# -- standalone --------------------------------------------------------------


def start_zookeeper(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Start a standalone ZooKeeper in `workdir`; (process, "127.0.0.1:port")
    once it serves.  The caller stops the process (`stop_zookeeper`)."""
    _require_zookeeper()
    workdir = Path(workdir).resolve()  # the JVM runs in it: paths must not be relative
    port = free_port()
    config = workdir / "zoo.cfg"
    config.write_text(
        f"tickTime=500\ndataDir={workdir}/data\nclientPort={port}\nclientPortAddress=127.0.0.1\n"
        "maxClientCnxns=0\nadmin.enableServer=false\n4lw.commands.whitelist=srvr\nforceSync=no\n"
    )
    log = workdir / "zk.log"
    proc = _java("org.apache.zookeeper.server.ZooKeeperServerMain", config, log, heap_mb=512, log_level="warn")
    try:
        served = _wait_until(
            lambda: _srvr(port),
            30,
            lambda: f"ZooKeeper exited with {proc.returncode}; see {log}" if proc.poll() is not None else None,
        )
        if not served:
            raise RuntimeError(f"ZooKeeper did not start in 30 s; see {log}")
    except BaseException:
        stop_zookeeper(proc)
        raise
    return proc, f"127.0.0.1:{port}"


def stop_zookeeper(proc: subprocess.Popen[bytes]) -> None:
    """Stop the server by its PID: SIGTERM, then SIGKILL after 10 s."""
    _end(proc, signal.SIGTERM, 10)


# -- ensemble ----------------------------------------------------------------


class _Node:
    """One server of an ensemble: its directory, ports and process."""

    def __init__(self, index: int, workdir: Path, ports: tuple[int, int, int]) -> None:
        self.index = index
        self.myid = index + 1
        self.dir = workdir / f"n{self.myid}"
        self.client_port, self.quorum_port, self.election_port = ports
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def config(self) -> Path:
        return self.dir / "zoo.cfg"

    @property
    def log(self) -> Path:
        return self.dir / "zk.log"

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class Ensemble:
    """`size` ZooKeeper servers on 127.0.0.1 forming one ensemble, each in
    `workdir`/n<myid> (node i has myid i+1).  Nothing runs until `start()`
    or `with`; see the module docstring.

    Nodes are numbered from 0.  `kill(i)` is a `kill -9`; `stop(i)` a
    SIGTERM (the JVM takes a few seconds to exit); `start_node(i)` starts
    node i again on its data and ports.
    """

    def __init__(
        self,
        workdir: Path | str,
        size: int = 3,
        *,
        tick_ms: int = 500,
        init_limit: int = 10,
        sync_limit: int = 5,
        heap_mb: int = 256,
        log_level: str = "info",
        address: str = "127.0.0.1",
        host: Any = None,
    ) -> None:
        """`address` is where every node listens; `host` (a
        `testing.netns.Host`) runs the nodes in that network namespace, on
        its address."""
        if size < 1:
            raise ValueError(f"an ensemble needs at least one node, got {size}")
        self.workdir = Path(workdir).resolve()  # each JVM runs in its node's directory
        self.size = size
        self.tick_ms = tick_ms
        self.init_limit = init_limit
        self.sync_limit = sync_limit
        self.heap_mb = heap_mb
        self.log_level = log_level
        self.address = address
        self._wrap: Callable[[list[str]], list[str]] = host.command if host is not None else list
        taken: set[int] = set()
        self._nodes = []
        for i in range(size):
            ports = []
            for _ in range(3):
                ports.append(free_low_port(taken))
                taken.add(ports[-1])
            self._nodes.append(_Node(i, self.workdir, (ports[0], ports[1], ports[2])))
        self._at_exit = False

    def __repr__(self) -> str:
        states = "".join("+" if node.running() else "-" for node in self._nodes)
        return f"<Ensemble {self.hosts} [{states}] in {self.workdir}>"

    @property
    def hosts(self) -> str:
        """kazoo's (and zk:// URLs') "127.0.0.1:p1,127.0.0.1:p2,..."."""
        return ",".join(f"{self.address}:{node.client_port}" for node in self._nodes)

    @property
    def quorum(self) -> int:
        """How many nodes must serve for the ensemble to: a majority."""
        return self.size // 2 + 1

    def host(self, i: int) -> str:
        """"127.0.0.1:port" of node `i` alone."""
        return f"{self.address}:{self._nodes[i].client_port}"

    def pid(self, i: int) -> int | None:
        """The PID of node `i`'s JVM while it runs, else None."""
        node = self._nodes[i]
        return node.proc.pid if node.proc is not None and node.running() else None

    def log_path(self, i: int) -> Path:
        return self._nodes[i].log

    # -- starting and stopping --

    def start(self, timeout: float = 60.0) -> Ensemble:
        """Start every node that is not running; return once they all
        serve (a quorum with its leader, and the others synced to it), so a
        test can kill any one at once.  On failure every node is stopped
        and RuntimeError or TimeoutError says which logs to read."""
        try:
            for i, node in enumerate(self._nodes):
                if not node.running():
                    self.start_node(i)
            self.wait_quorum(timeout, all_running=True)
        except BaseException:
            self.close()
            raise
        return self

    def start_node(self, i: int) -> None:
        """Start node `i` (on the data it had, if it ran before); returns
        at once: `serving(i)` or `wait_quorum()` tell when it serves."""
        _require_zookeeper()
        node = self._nodes[i]
        if node.running():
            raise RuntimeError(f"ZooKeeper node {i} is running already (pid {node.proc.pid})")
        self._write_config(node)
        node.proc = _java(
            "org.apache.zookeeper.server.quorum.QuorumPeerMain",
            node.config,
            node.log,
            heap_mb=self.heap_mb,
            log_level=self.log_level,
            wrap=self._wrap,
        )
        if not self._at_exit:
            atexit.register(self.close)
            self._at_exit = True

    def _write_config(self, node: _Node) -> None:
        data = node.dir / "data"
        data.mkdir(parents=True, exist_ok=True)
        (data / "myid").write_text(f"{node.myid}\n")
        servers = "".join(
            f"server.{n.myid}={self.address}:{n.quorum_port}:{n.election_port}\n" for n in self._nodes
        )
        node.config.write_text(
            f"tickTime={self.tick_ms}\ninitLimit={self.init_limit}\nsyncLimit={self.sync_limit}\n"
            f"dataDir={data}\nclientPort={node.client_port}\nclientPortAddress={self.address}\n"
            "maxClientCnxns=0\nadmin.enableServer=false\n4lw.commands.whitelist=srvr\nforceSync=no\n"
            + servers
        )

    def kill(self, i: int) -> None:
        """SIGKILL node `i` and wait for its PID (a crash, `kill -9`)."""
        node = self._nodes[i]
        if node.proc is not None:
            _end(node.proc, signal.SIGKILL, 10)

    def stop(self, i: int, timeout: float = 10.0) -> None:
        """SIGTERM node `i`, wait for its PID; SIGKILL after `timeout`."""
        node = self._nodes[i]
        if node.proc is not None:
            _end(node.proc, signal.SIGTERM, timeout)

    def close(self) -> None:
        """Stop every node this ensemble started, by PID: SIGTERM to all at
        once, then SIGKILL to any still there after 10 s.  Idempotent."""
        procs = [node.proc for node in self._nodes if node.proc is not None]
        for proc in procs:
            if proc.poll() is None:
                try:
                    proc.terminate()
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 10
        for proc in procs:
            _end(proc, signal.SIGTERM, max(0.0, deadline - time.monotonic()))
        if self._at_exit:
            atexit.unregister(self.close)
            self._at_exit = False

    def __enter__(self) -> Ensemble:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- what ZooKeeper says --

    def mode(self, i: int) -> str | None:
        """Node `i`'s `srvr` Mode ("leader", "follower", "standalone" for
        an ensemble of one), or None if it does not serve."""
        if not self._nodes[i].running():
            return None
        return _srvr(self._nodes[i].client_port, self.address)

    def serving(self, i: int) -> bool:
        """Whether node `i` serves clients (it is in a quorum)."""
        return self.mode(i) is not None

    def leader_index(self) -> int | None:
        """Which node is ZooKeeper's leader now, or None."""
        for i in range(self.size):
            if self.mode(i) in ("leader", "standalone"):
                return i
        return None

    def wait_quorum(self, timeout: float = 30.0, *, all_running: bool = False) -> int:
        """Wait until a majority of the nodes serve, one of them as leader
        (with `all_running`, also every node that runs: a restarted one has
        rejoined); the leader's index.  TimeoutError after `timeout`
        seconds; RuntimeError if too few nodes run for a quorum."""

        def ready() -> tuple[int] | None:
            modes = [self.mode(i) for i in range(self.size)]
            leaders = [i for i, mode in enumerate(modes) if mode in ("leader", "standalone")]
            serving = sum(mode is not None for mode in modes)
            needed = sum(node.running() for node in self._nodes) if all_running else 0
            return (leaders[0],) if len(leaders) == 1 and serving >= max(self.quorum, needed) else None

        def failed() -> str | None:
            running = sum(node.running() for node in self._nodes)
            if running >= self.quorum:
                return None
            exited = [f"{node.log}" for node in self._nodes if node.proc is not None and not node.running()]
            return f"only {running} of {self.size} ZooKeeper nodes run; see {', '.join(exited) or 'start_node()'}"

        found = _wait_until(ready, timeout, failed)
        if found is None:
            logs = ", ".join(str(node.log) for node in self._nodes)
            raise TimeoutError(f"no ZooKeeper quorum in {timeout:g} s at {self.hosts}; see {logs}")
        return found[0]
