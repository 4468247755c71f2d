"""Status updates a remote agent never loses: its outbox to the leader (CLUSTER.md 3.6).

Each change the executor observes becomes an update with a fresh uuid, which
the agent resends, across reconnections and restarts, until the leader
acknowledges that uuid (it does so only after committing the update).  This
module owns the journal that survives a crash (`UpdateJournal`) and the
service that sends, retries and pops on acknowledgement (`StatusUpdateManager`).

    updates/journal     one JSON line per change: {"op":"update","status":...}
                        (a `TaskStatus` with its uuid) or
                        {"op":"ack","task_id":...,"uuid":...}

The journal follows `checkpoint.py`: single `write` calls on an O_APPEND
file, a torn last line skipped, rewritten to the pending updates at every
start and once it is four times their size, no fsync (the page cache
survives the process; a machine crash changes the boot id).

Rules, and the fault each closes:

* Journal before send: the leader never commits an update that a restarted
  agent forgot, so every update is resent, same uuid, until acknowledged.
  (An update waits in memory for at most one flush; a crash then loses it
  unsent, and the restarted executor reports the task afresh.)
* One FIFO per task, only its head in flight: the leader applies a task's
  updates in order, across retries and restarts.
* An ack is journalled before the next update of its task is sent: a restart
  never resends an acknowledged update after a newer one was committed.
* Retry from 2 s doubling to 60 s, and resend everything on SUBSCRIBED: a
  lost message, a dropped connection or a new leader delays, never loses.
* Acks that match no head (duplicate, stale, unknown) are ignored: a late
  ack never pops an update the leader has not committed.
* Reconciliation answers carry no uuid, are sent once, never journalled:
  the leader asks again if it missed one.

Memory is bounded by tasks times the changes each made since its last ack:
a handful of states (staging, starting, running, health flips, terminal);
a task is forgotten once its terminal update is acknowledged.  While the
leader is unreachable, a task whose health flaps adds one update per flip.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import msgspec
import trio
from msgspec import Struct

from ..models.instance import TERMINAL, TaskStatus, condition_of
from .checkpoint import rewrite_journal, write_all

log = logging.getLogger("marathon.agent")

_JOURNAL = "journal"
MAX_BATCH = 1000  # updates and answers per `send` call; the rest go at the next flush
ACK_SAMPLES = 200_000
# Heads due again (retries) are looked for at least this often, besides
# every flush that something new asks for.
RETRY_CHECK_SECONDS = 0.25  # ack latencies kept for `stats` (the newest)

_Key = tuple[str, str]  # (task id, update uuid)


class _Update(Struct, tag="update", tag_field="op"):
    status: TaskStatus


class _Ack(Struct, tag="ack", tag_field="op"):
    task_id: str
    uuid: str


_encoder = msgspec.json.Encoder()
_line_decoder = msgspec.json.Decoder(_Update | _Ack)


def read_pending(directory: Path) -> list[TaskStatus]:
    """The pending updates under `directory`, in order, read without changing
    anything (so safe while an agent runs on it)."""
    return [status for status, _ in _read(directory / _JOURNAL).values()]


def _read(path: Path) -> dict[_Key, tuple[TaskStatus, bytes]]:
    """{(task id, uuid): (update, its journal line)} of the pending updates, in order."""
    pending: dict[_Key, tuple[TaskStatus, bytes]] = {}
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return pending
    for number, line in enumerate(data.split(b"\n"), 1):
        if not line:
            continue
        try:
            op = _line_decoder.decode(line)
        except msgspec.DecodeError as err:
            # A torn last line (the agent killed mid-append): that update was
            # never sent, or that ack is simply received again.
            log.warning("update_journal_line_unreadable path=%s line=%d error=%s", path, number, err)
            continue
        if isinstance(op, _Update):
            if op.status.uuid is not None:
                pending.setdefault((op.status.task_id, op.status.uuid), (op.status, line + b"\n"))
        else:
            pending.pop((op.task_id, op.uuid), None)
    return pending


class UpdateJournal:
    """The journal of pending status updates (safe to call from worker threads).

    Opening it (`load`, or the first call that changes it) reads what is
    there and rewrites it with the pending updates only.  One instance (one
    agent) owns a directory at a time; others may only `read_pending`.
    """

    # Rewrite once the journal has this many lines and four times the pending updates.
    COMPACT_AT = 1024

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._pending: dict[_Key, bytes] = {}  # in journal order
        self._lines = 0  # in the journal file

    def load(self) -> list[TaskStatus]:
        """The pending updates in their original order, read afresh; the
        journal is rewritten with them only."""
        with self._lock:
            self._close()
            return self._open_and_read()

    def append(self, statuses: Sequence[TaskStatus]) -> None:
        """Journal `statuses` (each with a uuid) in one append.  An update
        already pending (a retry after a failed append) is not written twice."""
        lines = []
        for s in statuses:
            if s.uuid is None:
                raise ValueError(f"update of task {s.task_id} has no uuid")
            lines.append(((s.task_id, s.uuid), _encoder.encode(_Update(status=s)) + b"\n"))
        with self._lock:
            fd = self._open()
            out = []
            for key, line in lines:
                if key not in self._pending:
                    self._pending[key] = line
                    out.append(line)
            self._write(fd, out)

    def ack(self, pairs: Sequence[tuple[str, str]]) -> None:
        """Record the acks of (task id, uuid) pairs in one append; a pair that
        is not pending writes nothing."""
        with self._lock:
            fd = self._open()
            out = [_encoder.encode(_Ack(task_id=tid, uuid=u)) + b"\n"
                   for tid, u in pairs if self._pending.pop((tid, u), None) is not None]
            self._write(fd, out)

    def close(self) -> None:
        with self._lock:
            self._close()

    def _write(self, fd: int, out: list[bytes]) -> None:
        if not out:
            return
        try:
            write_all(fd, b"".join(out))
        except BaseException:
            # A part may be on disk (disk full): the next append must not be
            # glued to it.  Reopening reads the journal (the torn last line is
            # skipped), takes what it holds as pending and rewrites it whole.
            self._close()
            raise
        self._lines += len(out)
        if self._lines >= self.COMPACT_AT and self._lines >= 4 * len(self._pending):
            self._rewrite()

    def _open(self) -> int:
        if self._fd is None:
            self._open_and_read()
        assert self._fd is not None
        return self._fd

    def _open_and_read(self) -> list[TaskStatus]:
        self.directory.mkdir(parents=True, exist_ok=True)
        pending = _read(self.directory / _JOURNAL)
        self._pending = {key: line for key, (_, line) in pending.items()}
        self._rewrite()
        for e in os.scandir(self.directory):
            if e.name.startswith("."):
                # Left by a crash mid-rewrite: the rename never happened, so
                # the journal it would have replaced is the valid one.
                try:
                    os.unlink(e.path)
                except FileNotFoundError:
                    pass
        return [status for status, _ in pending.values()]

    def _rewrite(self) -> None:
        """The journal replaced by one holding the pending updates only."""
        self._close()
        self._fd = rewrite_journal(self.directory / _JOURNAL, list(self._pending.values()))
        self._lines = len(self._pending)

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _latency_summary(values: deque[float]) -> dict:
    if not values:
        return {"count": 0}
    ordered = sorted(values)
    n = len(ordered)

    def rank(q: float) -> float:  # nearest rank
        return round(ordered[max(0, math.ceil(n * q) - 1)] * 1000, 1)

    return {"count": n, "p50": rank(0.5), "p99": rank(0.99), "max": round(ordered[-1] * 1000, 1)}


def _is_terminal(status: TaskStatus) -> bool:
    return condition_of(status.state, status.reason, status.message) in TERMINAL


class _Stream:
    """One task's FIFO of journalled updates; only the head is in flight."""

    __slots__ = ("queue", "delay", "deadline", "acks_unjournalled")

    def __init__(self) -> None:
        self.queue: deque[TaskStatus] = deque()
        self.delay = 0.0  # the head's last retry delay; 0: not sent since it became head
        self.deadline = -math.inf  # when the head is due (again)
        self.acks_unjournalled = 0  # popped, not yet journalled: the new head waits


class StatusUpdateManager:
    """The agent's outbox: journals, sends and retries status updates until
    the leader acknowledges them.  A trio service (`run`); `observe`,
    `answer`, `acknowledge` and `resend_all` are sync and never block: each
    flush (every `flush_interval`) journals what they queued in a worker
    thread, then sends.  The constructor loads the journal's pending updates
    (blocking file I/O, once), in order, ahead of anything observed later.
    """

    def __init__(self, journal: UpdateJournal, *,
                 send: Callable[[list[TaskStatus]], Awaitable[None]],
                 flush_interval: float = 0.02, retry_initial: float = 2.0,
                 retry_max: float = 60.0, max_in_flight: int = 1000) -> None:
        self.journal = journal
        self._send = send
        self.flush_interval = flush_interval
        self.max_in_flight = max_in_flight
        # Tasks whose head was sent and is not acknowledged yet.  At most
        # `max_in_flight` at once: without a bound, 20 agents offered a
        # leader 200,000 updates/s it could commit 40,000/s of, its queue
        # overflowed, and each update waited past its first retry (S8: 41,000
        # to 109,000 duplicates and up to 237,000 drops per 200,000 updates).
        self._in_flight: set[str] = set()
        self._wake = trio.Event()
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self._streams: dict[str, _Stream] = {}  # only tasks with pending updates or acks
        self._last: dict[str, TaskStatus] = {}  # newest observed, until its terminal ack
        self._unjournalled: list[TaskStatus] = []
        self._unjournalled_acks: list[tuple[str, str]] = []
        self._answers: list[TaskStatus] = []
        self._pending = 0
        self._flushing = trio.Lock()  # one flush at a time keeps the journal in order
        self._send_failing = False
        self.ignored_acks = 0
        self.send_failures = 0
        self.journal_failures = 0
        # Ack latency (`stats`, the S8 benchmarks): when each pending update
        # was observed and first sent (monotonic seconds), and on its ack the
        # seconds since each.  Entries live as long as their update is pending.
        self._observed_at: dict[_Key, float] = {}
        self._sent_at: dict[_Key, float] = {}
        self.ack_latencies: deque[float] = deque(maxlen=ACK_SAMPLES)  # first send -> ack
        self.ack_latencies_observed: deque[float] = deque(maxlen=ACK_SAMPLES)  # observed -> ack
        self.acked = 0
        for status in journal.load():
            self._enqueue(status)
            self._last[status.task_id] = status
            self._pending += 1

    # -- the executor's side ------------------------------------------------------

    def observe(self, statuses: Sequence[TaskStatus]) -> list[TaskStatus]:
        """Queue `statuses` (changes from the executor) as updates, each with
        a fresh uuid; returns them as they will be sent."""
        stamped = [msgspec.structs.replace(s, uuid=uuid.uuid4().hex) for s in statuses]
        self._unjournalled.extend(stamped)
        now = time.monotonic()
        for s in stamped:
            self._last[s.task_id] = s
            self._observed_at[(s.task_id, s.uuid)] = now
        self._pending += len(stamped)
        self._wake.set()
        return stamped

    def answer(self, statuses: Sequence[TaskStatus]) -> None:
        """Send reconciliation answers once at the next flush, with uuid None:
        never journalled nor retried, dropped if that send fails."""
        self._answers.extend(msgspec.structs.replace(s, uuid=None) for s in statuses)
        self._wake.set()

    def latest_state(self, task_id: str) -> str | None:
        """The state of the newest update observed for the task (a terminal
        state shows here while older updates still queue)."""
        last = self._last.get(task_id)
        return None if last is None else last.state

    def last_uuid(self, task_id: str) -> str | None:
        """The uuid of the newest update observed for the task (for SUBSCRIBE)."""
        last = self._last.get(task_id)
        return None if last is None else last.uuid

    def pending_count(self) -> int:
        """Updates observed and not yet acknowledged."""
        return self._pending

    # -- the connection's side ----------------------------------------------------

    def acknowledge(self, pairs: Sequence[tuple[str, str]]) -> list[str]:
        """Pop each (task id, uuid) that is the head of its task's FIFO; the
        next update becomes sendable once this ack is journalled (next flush).
        Returns the tasks whose terminal update is now acknowledged, with
        nothing observed after it (their streams are closed)."""
        closed = []
        now = time.monotonic()
        for task_id, update_uuid in pairs:
            stream = self._streams.get(task_id)
            # Only the head's uuid pops: a duplicate or late ack never pops an
            # update the leader has not committed.
            if stream is None or not stream.queue or stream.queue[0].uuid != update_uuid:
                self.ignored_acks += 1
                log.debug("update_ack_ignored task_id=%s uuid=%s", task_id, update_uuid)
                continue
            head = stream.queue.popleft()
            self._in_flight.discard(task_id)
            self._wake.set()
            self._pending -= 1
            self.acked += 1
            sent = self._sent_at.pop((task_id, update_uuid), None)
            if sent is not None:
                self.ack_latencies.append(now - sent)
            observed = self._observed_at.pop((task_id, update_uuid), None)
            if observed is not None:
                self.ack_latencies_observed.append(now - observed)
            stream.acks_unjournalled += 1
            stream.delay, stream.deadline = 0.0, -math.inf
            self._unjournalled_acks.append((task_id, update_uuid))
            last = self._last.get(task_id)
            if last is not None and last.uuid == update_uuid and _is_terminal(head):
                del self._last[task_id]
                closed.append(task_id)
        return closed

    def stats(self, samples: bool = False) -> dict:
        """Counters and ack latencies in ms over the newest `ACK_SAMPLES` acks
        (`GET /stats` of the agent): `ack_ms` from an update's first send,
        `ack_observed_ms` from when the executor observed it.  With `samples`,
        every kept latency too, oldest first (`acked` counts all ever)."""
        out = {
            "pending": self._pending, "acked": self.acked, "ignored_acks": self.ignored_acks,
            "send_failures": self.send_failures, "journal_failures": self.journal_failures,
            "ack_ms": _latency_summary(self.ack_latencies),
            "ack_observed_ms": _latency_summary(self.ack_latencies_observed),
        }
        if samples:
            out["ack_ms_samples"] = [round(x * 1000, 2) for x in self.ack_latencies]
            out["ack_observed_ms_samples"] = [round(x * 1000, 2) for x in self.ack_latencies_observed]
        return out

    def resend_all(self) -> None:
        """Every head is due at the next flush, its backoff reset (on
        SUBSCRIBED), up to `max_in_flight` at once."""
        self._in_flight.clear()
        for stream in self._streams.values():
            stream.delay, stream.deadline = 0.0, -math.inf
        self._wake.set()

    # -- the service --------------------------------------------------------------

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Flush soon after anything is observed, answered or acknowledged
        (`flush_interval` later, so that what comes meanwhile goes along),
        and at least every `RETRY_CHECK_SECONDS` for heads due again."""
        task_status.started()
        while True:
            await self.flush()
            with trio.move_on_after(RETRY_CHECK_SECONDS):
                await self._wake.wait()
            self._wake = trio.Event()
            await trio.sleep(self.flush_interval)

    async def flush(self) -> None:
        """Journal what is queued, then send the due heads and answers."""
        async with self._flushing:
            await self._write_journal()
            await self._send_due()

    def _enqueue(self, status: TaskStatus) -> None:
        stream = self._streams.get(status.task_id)
        if stream is None:
            stream = self._streams[status.task_id] = _Stream()
        stream.queue.append(status)

    def _journal_write(self, statuses: list[TaskStatus], acks: list[tuple[str, str]]) -> None:
        # Updates first: an ack line never precedes its update's line.
        if statuses:
            self.journal.append(statuses)
        if acks:
            self.journal.ack(acks)

    async def _write_journal(self) -> None:
        statuses, acks = self._unjournalled, self._unjournalled_acks
        if not statuses and not acks:
            return
        self._unjournalled, self._unjournalled_acks = [], []
        try:
            await trio.to_thread.run_sync(self._journal_write, statuses, acks)
        except OSError as err:
            # Disk full: nothing new is sent until the journal holds it (kept
            # in order; a retry is safe, the journal skips what it has).  A
            # crash now would lose an update the leader might have committed.
            self._unjournalled[:0] = statuses
            self._unjournalled_acks[:0] = acks
            self.journal_failures += 1
            log.error("update_journal_failed updates=%d acks=%d error=%s",
                      len(statuses), len(acks), err)
            return
        # Journal before send: an update enters its FIFO, so can be sent,
        # only once its line is written; a restarted agent then resends it.
        for status in statuses:
            self._enqueue(status)
        for task_id, _ in acks:
            stream = self._streams[task_id]
            stream.acks_unjournalled -= 1
            if not stream.queue and not stream.acks_unjournalled:
                del self._streams[task_id]

    async def _send_due(self) -> None:
        now = trio.current_time()
        sent_at = time.monotonic()
        batch = self._answers[:MAX_BATCH]
        del self._answers[:len(batch)]
        answers = len(batch)
        for stream in self._streams.values():
            if len(batch) >= MAX_BATCH:
                break
            # Only the head, once the acks before it are journalled: a restart
            # never resends an acknowledged update after a newer one.
            if not stream.queue or stream.acks_unjournalled or stream.deadline > now:
                continue
            task_id = stream.queue[0].task_id
            if task_id not in self._in_flight:
                if len(self._in_flight) >= self.max_in_flight:
                    continue  # a retry of one in flight may still go
                self._in_flight.add(task_id)
            # Set before sending: acks and resend_all may come while `send` awaits.
            stream.delay = (self.retry_initial if stream.delay == 0
                            else min(2 * stream.delay, self.retry_max))
            stream.deadline = now + stream.delay
            head = stream.queue[0]
            self._sent_at.setdefault((head.task_id, head.uuid), sent_at)
            batch.append(head)
        if not batch:
            return
        try:
            await self._send(batch)
        except Exception as err:
            # Not delivered: the updates stay pending (their retry timers
            # run on), the answers are dropped.
            self.send_failures += 1
            level = logging.DEBUG if self._send_failing else logging.WARNING
            log.log(level, "update_send_failed updates=%d answers=%d error=%r",
                    len(batch) - answers, answers, err)
            self._send_failing = True
            return
        if self._send_failing:
            log.info("update_send_resumed pending=%d", self._pending)
            self._send_failing = False
