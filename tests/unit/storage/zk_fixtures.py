"""A real ZooKeeper for the storage tests: one standalone server per test
session (`marathon.testing.zookeeper.start_zookeeper`: Debian's
`zookeeper` package, scripts/install-system-deps.sh), on a free port of
127.0.0.1, with its data in a temporary directory, and `ZkProxy` to cut
clients off it.

The server is the fixture's own child process: it is stopped by its PID
when the session ends, whatever happened, and its log is kept beside its
data for a failing run.  tickTime=500 lets tests ask for sessions of 1 s;
forceSync=no because a test does not need the fsync.

Imports here are absolute: tests/unit/agent loads this file by its path.
For a 3-node ensemble (leader elections, lost quorums), see
tests/zookeeper_fixtures.py.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import trio

from marathon.testing.zookeeper import start_zookeeper, stop_zookeeper

__all__ = ["ZkProxy", "start_zookeeper", "stop_zookeeper", "zk_server"]


@pytest.fixture(scope="session")
def zk_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """"127.0.0.1:port" of a ZooKeeper that lives for the test session."""
    proc, hosts = start_zookeeper(tmp_path_factory.mktemp("zookeeper"))
    try:
        yield hosts
    finally:
        stop_zookeeper(proc)

class ZkProxy:
    """A TCP proxy in front of ZooKeeper, run in the test's nursery, so a
    test can cut a client's connection (a partition), refuse new ones for
    a while (so its session expires), or let requests through while their
    replies are lost.

    `await nursery.start(proxy.run)`; clients connect to `proxy.hosts`.
    """

    def __init__(self, target: str) -> None:
        host, _, port = target.rpartition(":")
        self._target = (host, int(port))
        self.port = 0
        self.refusing = False
        # Replies from ZooKeeper are dropped while this is set.
        self.swallow_replies = False
        self._scopes: set[trio.CancelScope] = set()

    @property
    def hosts(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            await nursery.start(trio.serve_listeners, self._serve, listeners)
            task_status.started()

    def cut(self, *, refuse: bool = True) -> None:
        """Drop every connection; with `refuse`, new ones are closed at once
        until `restore()`."""
        self.refusing = refuse
        for scope in list(self._scopes):
            scope.cancel()

    def restore(self) -> None:
        self.refusing = False
        self.swallow_replies = False

    async def _serve(self, client: trio.SocketStream) -> None:
        with trio.CancelScope() as scope:
            if self.refusing:
                await trio.aclose_forcefully(client)
                return
            self._scopes.add(scope)
            try:
                server = await trio.open_tcp_stream(*self._target)
            except OSError:
                server = None
            if server is not None:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._pump, client, server, False, nursery.cancel_scope)
                    nursery.start_soon(self._pump, server, client, True, nursery.cancel_scope)
                await trio.aclose_forcefully(server)
        self._scopes.discard(scope)
        await trio.aclose_forcefully(client)

    async def _pump(
        self, source: trio.SocketStream, sink: trio.SocketStream, replies: bool, both: trio.CancelScope
    ) -> None:
        try:
            async for data in source:
                if replies and self.swallow_replies:
                    continue
                await sink.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        both.cancel()  # one side is gone: end the other
