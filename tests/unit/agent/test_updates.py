"""Status updates that are never lost: the journal and the agent's outbox (CLUSTER.md 3.6)."""

from __future__ import annotations

import errno
import os

import msgspec
import pytest
import trio

from marathon.agent import updates
from marathon.agent.updates import StatusUpdateManager, UpdateJournal, read_pending
from marathon.models.instance import TaskStatus


def _status(task_id: str, state: str = "TASK_RUNNING", **kw) -> TaskStatus:
    return TaskStatus(task_id=task_id, state=state, agent_id="agent-1", **kw)


def _stamped(task_id: str, n: int, state: str = "TASK_RUNNING") -> TaskStatus:
    return _status(task_id, state, uuid=f"{task_id}-{n}")


def _lines(directory) -> list[bytes]:
    return (directory / "journal").read_bytes().splitlines()


class Leader:
    """A fake leader: records every batch; `down` makes `send` fail.  It also
    checks, at every send, that each update is journalled and is the first
    pending one of its task (so the acks of those before it are journalled)."""

    def __init__(self, directory) -> None:
        self.directory = directory
        self.batches: list[tuple[float, list[TaskStatus]]] = []
        self.down = False
        self.violations: list[TaskStatus] = []

    async def send(self, batch: list[TaskStatus]) -> None:
        heads: dict[str, str | None] = {}
        for s in read_pending(self.directory):
            heads.setdefault(s.task_id, s.uuid)
        self.violations += [s for s in batch if s.uuid is not None and heads.get(s.task_id) != s.uuid]
        self.batches.append((trio.current_time(), list(batch)))
        if self.down:
            raise ConnectionError("leader unreachable")

    def times(self) -> list[float]:
        return [t for t, _ in self.batches]


@pytest.fixture
def make_leader(tmp_path):
    """`Leader(tmp_path)`; the test fails if it was ever sent an update not journalled first."""
    made = []

    def make() -> Leader:
        made.append(Leader(tmp_path))
        return made[-1]

    yield make
    assert [v for one in made for v in one.violations] == []


# -- the journal ------------------------------------------------------------------------


def test_journal_round_trip_keeps_pending_updates_in_order(tmp_path):
    journal = UpdateJournal(tmp_path)
    assert journal.load() == []
    a1, b1, a2 = _stamped("a", 1, "TASK_STARTING"), _stamped("b", 1), _stamped("a", 2)
    journal.append([a1, b1, a2])
    assert len(_lines(tmp_path)) == 3  # one append, one line each
    journal.ack([("a", "a-1"), ("a", "a-1"), ("x", "nope")])  # a duplicate and an unknown: nothing
    assert len(_lines(tmp_path)) == 4
    assert read_pending(tmp_path) == [b1, a2]
    journal.close()
    # What a restarted agent reads: and the journal is rewritten to the pending ones.
    assert UpdateJournal(tmp_path).load() == [b1, a2]
    assert len(_lines(tmp_path)) == 2


def test_an_update_without_uuid_is_refused(tmp_path):
    with pytest.raises(ValueError):
        UpdateJournal(tmp_path).append([_status("a")])


def test_a_torn_last_line_is_skipped_and_the_start_rewrites_the_journal(tmp_path):
    journal = UpdateJournal(tmp_path)
    good, torn = _stamped("a", 1), _stamped("b", 1)
    journal.append([good])
    journal.close()
    with open(tmp_path / "journal", "ab") as f:
        f.write(msgspec.json.encode({"op": "update", "status": torn})[:40])  # killed mid-append
    (tmp_path / ".journal.123.tmp").write_bytes(b'{"op": ')  # a crash mid-rewrite
    again = UpdateJournal(tmp_path)
    assert again.load() == [good]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["journal"]
    assert len(_lines(tmp_path)) == 1
    again.append([torn])  # starts on a line of its own
    assert read_pending(tmp_path) == [good, torn]


def test_a_journal_of_mostly_acks_is_compacted(tmp_path):
    journal = UpdateJournal(tmp_path)
    kept = [_stamped(f"k{i}", 1) for i in range(10)]
    journal.append(kept)
    for i in range(600):
        journal.append([_stamped("t", i)])
        journal.ack([("t", f"t-{i}")])
    # 10 + 2 * 507 lines reached COMPACT_AT: rewritten to the 10 pending,
    # then the last 93 updates and acks were appended.
    assert len(_lines(tmp_path)) == 10 + 2 * 93
    assert read_pending(tmp_path) == kept
    journal.close()
    assert UpdateJournal(tmp_path).load() == kept


def test_a_failed_partial_append_leaves_the_journal_readable(tmp_path, monkeypatch):
    journal = UpdateJournal(tmp_path)
    first = _stamped("a", 1)
    journal.append([first])
    real_write = os.write
    calls = []

    def disk_full(fd, data):
        calls.append(len(data))
        if len(calls) == 1:
            return real_write(fd, bytes(data)[:len(data) // 2 + 10])  # a part lands...
        raise OSError(errno.ENOSPC, "No space left on device")  # ...then the disk is full

    batch = [_stamped("b", 1), _stamped("c", 1), _stamped("d", 1)]
    monkeypatch.setattr(updates.os, "write", disk_full)
    with pytest.raises(OSError):
        journal.append(batch)
    monkeypatch.setattr(updates.os, "write", real_write)
    # The torn line is skipped; what fully landed counts.
    on_disk = read_pending(tmp_path)
    assert on_disk[0] == first and on_disk == [first, *batch[:len(on_disk) - 1]]
    # The retry reopens, rewrites and appends the rest once each, in order.
    journal.append(batch)
    journal.append([_stamped("e", 1)])
    assert read_pending(tmp_path) == [first, *batch, _stamped("e", 1)]
    journal.close()
    assert UpdateJournal(tmp_path).load() == [first, *batch, _stamped("e", 1)]


# -- the manager ------------------------------------------------------------------------


async def test_only_the_head_of_each_task_is_in_flight_and_order_is_kept(tmp_path, make_leader):
    leader = make_leader()
    mgr = StatusUpdateManager(UpdateJournal(tmp_path), send=leader.send)
    a1, a2, b1 = mgr.observe([_status("a", "TASK_STARTING"), _status("a", "TASK_RUNNING"),
                              _status("b", "TASK_RUNNING")])
    assert a1.uuid and a2.uuid and a1.uuid != a2.uuid
    assert mgr.pending_count() == 3
    assert mgr.latest_state("a") == "TASK_RUNNING" and mgr.last_uuid("a") == a2.uuid
    await mgr.flush()
    assert leader.batches[-1][1] == [a1, b1]
    await mgr.flush()  # unacked heads are not due again yet
    assert len(leader.batches) == 1
    # An ack for a non-head update pops nothing.
    assert mgr.acknowledge([("a", a2.uuid)]) == []
    assert mgr.ignored_acks == 1
    mgr.acknowledge([("a", a1.uuid)])
    mgr.acknowledge([("a", a1.uuid)])  # a duplicate
    assert mgr.ignored_acks == 2
    assert mgr.pending_count() == 2
    await mgr.flush()
    assert leader.batches[-1][1] == [a2]
    # The ack was journalled before the next update was sent.
    assert read_pending(tmp_path) == [a2, b1]
    mgr.acknowledge([("a", a2.uuid), ("b", b1.uuid)])
    await mgr.flush()
    assert mgr.pending_count() == 0 and read_pending(tmp_path) == []
    assert len(leader.batches) == 2


async def test_the_terminal_ack_closes_a_tasks_stream(tmp_path, make_leader):
    leader = make_leader()
    mgr = StatusUpdateManager(UpdateJournal(tmp_path), send=leader.send)
    running, finished = mgr.observe([_status("a"), _status("a", "TASK_FINISHED")])
    await mgr.flush()
    # The terminal state shows while the older update is still in flight.
    assert mgr.latest_state("a") == "TASK_FINISHED"
    assert mgr.acknowledge([("a", running.uuid)]) == []
    await mgr.flush()
    assert mgr.acknowledge([("a", finished.uuid)]) == ["a"]
    assert mgr.latest_state("a") is None and mgr.last_uuid("a") is None


async def test_retries_back_off_doubling_while_the_leader_is_down(tmp_path, make_leader, autojump_clock):
    leader = make_leader()
    leader.down = True
    mgr = StatusUpdateManager(UpdateJournal(tmp_path), send=leader.send)
    (update,) = mgr.observe([_status("a")])
    # Journal it before the clock autojumps: a write in a worker thread
    # looks idle to MockClock, which would jump to the next deadline.
    await mgr.flush()
    async with trio.open_nursery() as nursery:
        await nursery.start(mgr.run)
        await trio.sleep(200)
        assert mgr.pending_count() == 1 and mgr.send_failures == len(leader.batches)
        gaps = [b - a for a, b in zip(leader.times(), leader.times()[1:], strict=False)]
        # Delays are rounded up to the next look for due retries (0.25 s).
        assert gaps == pytest.approx([2, 4, 8, 16, 32, 60, 60], abs=0.3)
        assert all(batch == [update] for _, batch in leader.batches)
        # Back up, the next retry delivers it; the ack ends the retries.
        leader.down = False
        await trio.sleep(61)
        mgr.acknowledge([("a", update.uuid)])
        sent = len(leader.batches)
        await trio.sleep(300)
        assert len(leader.batches) == sent and mgr.pending_count() == 0
        nursery.cancel_scope.cancel()


async def test_resend_all_sends_every_head_at_once_and_resets_the_backoff(tmp_path, make_leader, autojump_clock):
    leader = make_leader()
    mgr = StatusUpdateManager(UpdateJournal(tmp_path), send=leader.send)
    mgr.observe([_status("a"), _status("b")])
    await mgr.flush()  # journalled outside the autojumping clock's view (see above)
    async with trio.open_nursery() as nursery:
        await nursery.start(mgr.run)
        await trio.sleep(2 + 4 + 8 + 1)  # three retries: the next is 16 s away
        assert len(leader.batches) == 4
        start = trio.current_time()
        mgr.resend_all()  # subscribed again
        await trio.sleep(0.15)
        assert len(leader.batches) == 5 and len(leader.batches[-1][1]) == 2
        await trio.sleep(2.1)
        assert len(leader.batches) == 6  # backoff from 2 s again
        assert leader.times()[-1] - start == pytest.approx(2.1, abs=0.15)
        nursery.cancel_scope.cancel()


async def test_a_failed_send_keeps_updates_and_drops_reconciliation_answers(tmp_path, make_leader):
    leader = make_leader()
    leader.down = True
    mgr = StatusUpdateManager(UpdateJournal(tmp_path), send=leader.send)
    (update,) = mgr.observe([_status("a")])
    mgr.answer([_status("r1", uuid="ignored")])
    await mgr.flush()
    assert leader.batches[-1][1] == [_status("r1"), update]  # answers carry no uuid
    assert read_pending(tmp_path) == [update]  # answers are never journalled
    leader.down = False
    mgr.resend_all()
    mgr.answer([_status("r2")])
    await mgr.flush()
    assert leader.batches[-1][1] == [_status("r2"), update]
    await mgr.flush()
    assert len(leader.batches) == 2  # each answer went once


async def test_a_batch_is_capped_and_the_rest_goes_at_the_next_flush(tmp_path, make_leader):
    leader = make_leader()
    mgr = StatusUpdateManager(UpdateJournal(tmp_path), send=leader.send, max_in_flight=10_000)
    mgr.observe([_status(f"t{i}") for i in range(updates.MAX_BATCH + 5)])
    await mgr.flush()
    await mgr.flush()
    assert [len(b) for _, b in leader.batches] == [updates.MAX_BATCH, 5]


async def test_no_more_than_max_in_flight_updates_await_their_ack(tmp_path, make_leader):
    """Flow control: a leader that commits slowly is not offered more than it
    acknowledges (unbounded, its queue overflowed and every update was sent
    again at its first retry)."""
    leader = make_leader()
    mgr = StatusUpdateManager(UpdateJournal(tmp_path), send=leader.send, max_in_flight=3)
    sent = mgr.observe([_status(f"t{i}") for i in range(5)])
    await mgr.flush()
    await mgr.flush()
    assert [s.task_id for _, b in leader.batches for s in b] == ["t0", "t1", "t2"]
    mgr.acknowledge([("t0", sent[0].uuid), ("t1", sent[1].uuid)])
    await mgr.flush()
    assert [s.task_id for s in leader.batches[-1][1]] == ["t3", "t4"]
    mgr.resend_all()  # a new subscription: everything unacknowledged, up to the cap
    await mgr.flush()
    assert [s.task_id for s in leader.batches[-1][1]] == ["t2", "t3", "t4"]


async def test_a_restarted_agent_resends_exactly_the_unacknowledged_updates_in_order(tmp_path, make_leader):
    leader = make_leader()
    mgr = StatusUpdateManager(UpdateJournal(tmp_path), send=leader.send)
    a1, b1, a2, a3 = mgr.observe([_status("a", "TASK_STARTING"), _status("b"),
                                  _status("a", "TASK_RUNNING"), _status("a", "TASK_KILLED")])
    await mgr.flush()
    mgr.acknowledge([("a", a1.uuid)])
    await mgr.flush()
    mgr.acknowledge([("a", a2.uuid)])  # acked, but the agent dies before journalling it
    mgr.observe([_status("c")])  # observed, never journalled, so never sent
    mgr.journal.close()  # the process is killed: only its descriptors close
    # The new agent process on the same directory.
    leader2 = make_leader()
    again = StatusUpdateManager(UpdateJournal(tmp_path), send=leader2.send)
    assert again.pending_count() == 3
    assert again.last_uuid("a") == a3.uuid and again.latest_state("a") == "TASK_KILLED"
    await again.flush()
    assert leader2.batches[-1][1] == [b1, a2]  # the heads, with their original uuids
    again.acknowledge([("a", a2.uuid), ("b", b1.uuid)])  # the leader re-acks a duplicate
    await again.flush()
    assert leader2.batches[-1][1] == [a3]
    assert again.acknowledge([("a", a3.uuid)]) == ["a"]
    await again.flush()
    assert read_pending(tmp_path) == []


async def test_a_journal_that_cannot_be_written_holds_updates_back(tmp_path, make_leader, monkeypatch):
    leader = make_leader()
    mgr = StatusUpdateManager(UpdateJournal(tmp_path), send=leader.send)
    real_write = os.write
    failures = []

    def disk_full(fd, data):
        if bytes(data[:15]) == b'{"op":"update",' and not failures:
            failures.append(fd)
            real_write(fd, bytes(data)[:len(data) // 2 + 10])
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(updates.os, "write", disk_full)
    sent = mgr.observe([_status("a", "TASK_STARTING"), _status("b"), _status("a")])
    await mgr.flush()
    assert mgr.journal_failures == 1 and leader.batches == []  # not journalled: not sent
    assert mgr.pending_count() == 3
    await mgr.flush()  # the retry reopens and rewrites the journal, then sends
    assert leader.batches[-1][1] == [sent[0], sent[1]]
    assert read_pending(tmp_path) == sent
    mgr.journal.close()
    assert UpdateJournal(tmp_path).load() == sent


async def test_the_next_update_waits_until_the_ack_before_it_is_journalled(tmp_path, make_leader,
                                                                           monkeypatch):
    leader = make_leader()
    mgr = StatusUpdateManager(UpdateJournal(tmp_path), send=leader.send)
    starting, running = mgr.observe([_status("a", "TASK_STARTING"), _status("a")])
    await mgr.flush()
    real_write = os.write

    def disk_full(fd, data):
        if bytes(data[:12]) == b'{"op":"ack",':
            monkeypatch.setattr(updates.os, "write", real_write)  # once
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(updates.os, "write", disk_full)
    mgr.acknowledge([("a", starting.uuid)])
    await mgr.flush()
    # Sending RUNNING now could, after a crash, resend STARTING after it.
    assert mgr.journal_failures == 1 and len(leader.batches) == 1
    await mgr.flush()
    assert leader.batches[-1][1] == [running]
    assert read_pending(tmp_path) == [running]
