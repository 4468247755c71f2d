"""The instance tracker stores one batch while it resolves the next against
it: the views only ever show what is stored, the second batch sees the
first one's changes, and when the first fails the second is resolved again
against what really is stored."""

from __future__ import annotations

import trio
import trio.testing

from marathon.errors import StorageError
from marathon.instance_update import ChangeGoal, Failure, Noop, Schedule, Updated
from marathon.models.instance import Goal, Instance, InstanceState, new_instance_ids
from marathon.services.events import EventBus
from marathon.services.instances import InstanceTracker
from marathon.storage.memory import MemoryStore
from marathon.storage.repository import StateRepository


class GatedStore(MemoryStore):
    """Holds each commit until the test lets it through; can fail it."""

    def __init__(self) -> None:
        super().__init__()
        self.arrived: list[list] = []
        self.gates: list[trio.Event] = []
        self.fail: set[int] = set()  # indexes of commits that fail

    async def commit(self, ops):  # type: ignore[no-untyped-def]
        index = len(self.arrived)
        self.arrived.append(list(ops))
        gate = trio.Event()
        self.gates.append(gate)
        await gate.wait()
        if index in self.fail:
            raise StorageError("disk full")
        return await super().commit(ops)


def _instance(instance_id: str) -> Instance:
    return Instance(
        instance_id=instance_id,
        run_spec_id="/app",
        run_spec_version="2026-01-01T00:00:00.000Z",
        state=InstanceState(condition="Scheduled", since=0, goal=Goal.RUNNING),
    )


async def _started(store: GatedStore):  # type: ignore[no-untyped-def]
    repo = StateRepository(store)
    tracker = InstanceTracker(repo, EventBus(time_ms=lambda: 0), time_ms=lambda: 0, kill=lambda ids: None)
    return repo, tracker


async def test_the_next_batch_is_resolved_against_the_one_being_stored():
    store = GatedStore()
    repo, tracker = await _started(store)
    encoded: list[Instance] = []
    instance_put = repo.instance_put
    repo.instance_put = lambda inst: (encoded.append(inst), instance_put(inst))[1]  # type: ignore[method-assign]
    (iid,) = new_instance_ids("/app", 1)
    async with trio.open_nursery() as nursery:
        await nursery.start(tracker.run)
        first = await tracker.submit([Schedule(_instance(iid))])
        await trio.testing.wait_all_tasks_blocked()
        assert len(store.arrived) == 1
        second = await tracker.submit([ChangeGoal(instance_id=iid, goal=Goal.STOPPED, now=1)])
        # Resolved and encoded while the first commit is held, but not stored
        # before it, and nothing of either is visible yet.
        await trio.testing.wait_all_tasks_blocked()
        assert [inst.state.goal for inst in encoded] == [Goal.RUNNING, Goal.STOPPED]
        assert len(store.arrived) == 1
        assert tracker.get(iid) is None
        store.gates[0].set()
        (created,) = await first.effects()
        assert isinstance(created, Updated)
        await trio.testing.wait_all_tasks_blocked()
        assert len(store.arrived) == 2
        # The first batch is applied while the second is being stored.
        assert tracker.get(iid) is not None and tracker.get(iid).state.goal == Goal.RUNNING
        store.gates[1].set()
        (changed,) = await second.effects()
        assert isinstance(changed, Updated) and changed.previous == created.instance
        assert tracker.get(iid).state.goal == Goal.STOPPED
        nursery.cancel_scope.cancel()
    (stored,) = await repo.load_instances()
    assert stored.state.goal == Goal.STOPPED


async def test_a_failed_batch_leaves_nothing_and_the_next_is_resolved_again():
    store = GatedStore()
    store.fail.add(0)
    repo, tracker = await _started(store)
    a, b = new_instance_ids("/app", 2)
    async with trio.open_nursery() as nursery:
        await nursery.start(tracker.run)
        first = await tracker.submit([Schedule(_instance(a))])
        await trio.testing.wait_all_tasks_blocked()
        assert len(store.arrived) == 1
        # Staged against the first batch: `a` exists there.
        second = await tracker.submit([ChangeGoal(instance_id=a, goal=Goal.STOPPED, now=1), Schedule(_instance(b))])
        await trio.testing.wait_all_tasks_blocked()
        early = await second.resolved()
        assert isinstance(early[0], Updated), "resolved against the batch being stored, where `a` exists"
        store.gates[0].set()
        try:
            await first.effects()
        except StorageError as exc:
            assert "disk full" in str(exc)
        else:
            raise AssertionError("the failed commit reached its caller as success")
        await trio.testing.wait_all_tasks_blocked()
        assert len(store.arrived) == 2
        store.gates[1].set()
        final = await second.effects()
        nursery.cancel_scope.cancel()
    # A new list: a caller that built on the early one can tell.
    assert final is not early and len(final) == 2
    goal_change, scheduled = final
    # Resolved again without `a`: it never existed, so there is nothing to change.
    assert isinstance(goal_change, Noop | Failure)
    assert isinstance(scheduled, Updated)
    assert [op.key.rsplit("/", 1)[1] for op in store.arrived[1]] == [b]
    assert tracker.get(a) is None and tracker.get(b) is not None
    assert [i.instance_id for i in await repo.load_instances()] == [b]


async def test_requests_cut_off_by_a_stopping_tracker_get_an_error():
    store = GatedStore()
    _, tracker = await _started(store)
    a, b, c = new_instance_ids("/app", 3)
    outcomes: dict[str, BaseException | None] = {}

    async def wait(name: str, submitted) -> None:  # type: ignore[no-untyped-def]
        try:
            await submitted.effects()
            outcomes[name] = None
        except trio.ClosedResourceError as exc:
            outcomes[name] = exc

    async with trio.open_nursery() as callers:
        async with trio.open_nursery() as nursery:
            await nursery.start(tracker.run)
            first = await tracker.submit([Schedule(_instance(a))])  # being stored (held)
            await trio.testing.wait_all_tasks_blocked()
            second = await tracker.submit([Schedule(_instance(b))])  # resolved, waiting
            await trio.testing.wait_all_tasks_blocked()
            # The tracker waits for `first` to be stored: these stay queued,
            # two batches' worth with a bound of one operation per batch (the
            # stop must let go of all that is queued, not one batch of it).
            tracker._max_batch = 1
            third = await tracker.submit([Schedule(_instance(c))])
            fourth = await tracker.submit([ChangeGoal(instance_id=c, goal=Goal.STOPPED, now=1)])
            for name, sub in (("first", first), ("second", second), ("third", third), ("fourth", fourth)):
                callers.start_soon(wait, name, sub)
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
    assert set(outcomes) == {"first", "second", "third", "fourth"}
    with trio.fail_after(1):
        assert await fourth.resolved() == [], "never resolved: let go all the same"
        assert await second.resolved() == []
    assert all(isinstance(e, trio.ClosedResourceError) for e in outcomes.values())
