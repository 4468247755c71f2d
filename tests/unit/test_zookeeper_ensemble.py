"""`marathon.testing.zookeeper.Ensemble`: three real ZooKeeper servers that
elect a leader, keep serving when it is killed, stop serving without a
quorum and serve again when it is back, and leave no process behind."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from kazoo.client import KazooClient
from kazoo.exceptions import ConnectionLoss

from marathon.testing import pid_alive, wait_for, zookeeper
from marathon.testing.zookeeper import Ensemble
from zookeeper_fixtures import zk_ensemble, zk_ensemble_factory  # noqa: F401

BOUND = 30  # seconds: a generous bound on every wait; each takes a few at most
_FAST = {"max_tries": -1, "delay": 0.05, "backoff": 2, "max_delay": 0.5}


@contextlib.contextmanager
def _client(hosts: str) -> Iterator[KazooClient]:
    client = KazooClient(
        hosts=hosts, timeout=10.0, connection_retry=_FAST, command_retry={**_FAST, "deadline": BOUND}
    )
    client.start(timeout=BOUND)
    try:
        yield client
    finally:
        client.stop()
        client.close()


def _runs_java_of(pid: int | None, ensemble: Ensemble) -> bool:
    """Whether `pid` is a live JVM of `ensemble` (its command line names the
    ensemble's directory, which a reused PID's does not)."""
    if pid is None or not pid_alive(pid):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return False
    return str(ensemble.workdir).encode() in cmdline


def test_the_shared_ensemble_serves_with_one_leader(zk_ensemble):  # noqa: F811
    assert len(zk_ensemble.hosts.split(",")) == 3
    assert sorted(zk_ensemble.mode(i) for i in range(3)) == ["follower", "follower", "leader"]
    with _client(zk_ensemble.hosts) as client:
        client.ensure_path("/shared")
        assert client.exists("/shared")


def test_a_write_reads_back_after_the_zookeeper_leader_is_killed(zk_ensemble_factory):  # noqa: F811
    ensemble = zk_ensemble_factory()
    leader = ensemble.leader_index()
    assert leader is not None
    with _client(ensemble.hosts) as client:
        client.create("/survives", b"written")
        pid = ensemble.pid(leader)
        ensemble.kill(leader)
        assert not pid_alive(pid) and not ensemble.serving(leader)
        new_leader = ensemble.wait_quorum(BOUND)
        assert new_leader != leader
        assert client.retry(client.get, "/survives")[0] == b"written"
        client.retry(client.set, "/survives", b"after")
        # The killed node comes back on its data, as a follower.
        ensemble.start_node(leader)
        assert ensemble.wait_quorum(BOUND, all_running=True) == new_leader
        assert ensemble.mode(leader) == "follower"
    with _client(ensemble.host(leader)) as alone:
        alone.sync("/survives")
        assert alone.get("/survives")[0] == b"after"


def test_without_a_quorum_nothing_serves_until_the_nodes_come_back(zk_ensemble_factory):  # noqa: F811
    ensemble = zk_ensemble_factory()
    leader = ensemble.leader_index()
    assert leader is not None
    down, left = [leader, (leader + 1) % 3], (leader + 2) % 3
    with _client(ensemble.hosts) as client:
        client.create("/kept", b"before")
        for i in down:
            ensemble.kill(i)
        wait_for(lambda: not ensemble.serving(left), timeout=BOUND, message="the last node to stop serving")
        assert ensemble.leader_index() is None
        with pytest.raises(RuntimeError, match="only 1 of 3 ZooKeeper nodes run"):
            ensemble.wait_quorum(BOUND)
        # A write cannot be answered.  (kazoo keeps it queued: it may still
        # be applied once the quorum is back, so it goes to a node of its own.)
        with pytest.raises((ConnectionLoss, client.handler.timeout_exception)):
            client.create_async("/during", b"x").get(timeout=2)
        for i in down:
            ensemble.start_node(i)
        ensemble.wait_quorum(BOUND, all_running=True)
        assert client.retry(client.get, "/kept")[0] == b"before"
        client.retry(client.set, "/kept", b"after")
        assert client.get("/kept")[0] == b"after"


class _Boom(Exception):
    pass


def test_close_leaves_no_process_of_the_ensemble_whatever_happened(tmp_path):
    ensemble = Ensemble(tmp_path / "zk", size=3)
    with pytest.raises(_Boom), ensemble:
        pids = [ensemble.pid(i) for i in range(3)]
        assert all(_runs_java_of(pid, ensemble) for pid in pids)
        ensemble.kill(0)  # one dead already
        raise _Boom()
    assert not any(_runs_java_of(pid, ensemble) for pid in pids)
    assert [ensemble.pid(i) for i in range(3)] == [None, None, None]
    ensemble.close()  # again: nothing left to do
    assert all(ensemble.log_path(i).stat().st_size > 0 for i in range(3))  # kept for a failing run


def test_a_missing_zookeeper_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(zookeeper, "ZK_JAR", str(tmp_path / "absent.jar"))
    with pytest.raises(RuntimeError, match="ZooKeeper is not installed: run scripts/install-system-deps.sh"):
        Ensemble(tmp_path / "zk", size=3).start()
    with pytest.raises(RuntimeError, match="ZooKeeper is not installed"):
        zookeeper.start_zookeeper(tmp_path)
