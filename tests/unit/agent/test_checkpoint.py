"""What survives the agent process: the journal of task records."""

from __future__ import annotations

import threading

import msgspec
from agent_helpers import make_task

from marathon.agent.cgroups import TaskCgroup
from marathon.agent.checkpoint import (
    Checkpoint,
    TaskCheckpoint,
    load_or_create_agent_id,
    read_records,
)


def _record(i: int = 0, **kw) -> TaskCheckpoint:
    launch = msgspec.structs.replace(make_task("agent-1", command=f"sleep {1000 + i}"), task_id=f"task-{i}")
    return TaskCheckpoint(launch=launch, sandbox=f"/x/{i}", boot_id="b", staged_at=i, **kw)


def _lines(directory) -> list[bytes]:
    return (directory / "journal").read_bytes().splitlines()


def test_records_round_trip_and_are_deleted(tmp_path):
    cp = Checkpoint(tmp_path / "checkpoint")
    cp.ensure()
    launch = make_task("agent-1", argv=["sleep", "1000"], cpus=0.5, mem=64, host_ports=[31001],
                       env={"PORT0": "31001"})
    rec = TaskCheckpoint(launch=launch, sandbox="/x", boot_id="b", staged_at=1, pid=42,
                         start_time=7, pgid=42, running_since=2,
                         cgroup=TaskCgroup(version=1, dirs=["/a", "/b"], mem_limit_mib=64))
    cp.write(rec)
    assert cp.load_all() == [rec]
    assert read_records(tmp_path / "checkpoint") == {launch.task_id: rec}
    cp.delete_many([launch.task_id])
    cp.delete_many([launch.task_id])  # idempotent: nothing more is appended
    assert len(_lines(tmp_path / "checkpoint")) == 2
    cp.close()
    # What a restarted agent reads.
    assert Checkpoint(tmp_path / "checkpoint").load_all() == []


def test_a_share_is_one_append_and_the_last_record_of_a_task_wins(tmp_path):
    cp = Checkpoint(tmp_path)
    share = [_record(i, pid=100 + i) for i in range(5)]
    cp.write_many(share)
    assert len(_lines(tmp_path)) == 5
    healthier = msgspec.structs.replace(share[2], healthy=True, health_succeeded=True)
    cp.write(healthier)
    cp.delete_many([share[0].launch.task_id])
    expected = {r.launch.task_id: r for r in share[1:]} | {healthier.launch.task_id: healthier}
    assert read_records(tmp_path) == expected
    cp.close()
    assert {r.launch.task_id: r for r in Checkpoint(tmp_path).load_all()} == expected


def test_a_torn_last_line_and_damaged_lines_are_skipped_and_the_start_rewrites_the_journal(tmp_path):
    cp = Checkpoint(tmp_path)
    good, other = _record(1), _record(2)
    cp.write(good)
    cp.close()
    with open(tmp_path / "journal", "ab") as f:
        f.write(b"garbage that is not json\n")
        f.write(msgspec.json.encode({"op": "put", "record": msgspec.to_builtins(other)})[:40])  # killed mid-append
    (tmp_path / ".journal.123.tmp").write_bytes(b'{"op": ')  # a crash mid-rewrite
    again = Checkpoint(tmp_path)
    assert again.load_all() == [good]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["journal"]
    assert len(_lines(tmp_path)) == 1
    again.write(other)  # starts on a line of its own
    assert list(read_records(tmp_path).values()) == [good, other]


def test_the_first_layout_one_file_per_task_is_moved_into_the_journal(tmp_path):
    old, newer = _record(1, pid=11), _record(2, pid=12)
    (tmp_path / f"{old.launch.task_id}.json").write_bytes(msgspec.json.encode(old))
    (tmp_path / f"{newer.launch.task_id}.json").write_bytes(msgspec.json.encode(newer))
    (tmp_path / "broken.json").write_bytes(b"not json")
    (tmp_path / ".stale.json.1.2.tmp").write_bytes(b'{"launch": ')
    # Reading while an agent runs changes nothing.
    assert set(read_records(tmp_path)) == {old.launch.task_id, newer.launch.task_id}
    assert len(list(tmp_path.iterdir())) == 4
    cp = Checkpoint(tmp_path)
    assert sorted(cp.load_all(), key=lambda r: r.pid) == [old, newer]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["journal"]
    cp.delete_many([old.launch.task_id])
    assert list(read_records(tmp_path).values()) == [newer]


def test_the_journal_is_rewritten_once_mostly_dropped_records(tmp_path):
    cp = Checkpoint(tmp_path)
    cp.COMPACT_AT = 50
    kept = _record(0)
    cp.write(kept)
    for i in range(1, 40):
        cp.write(_record(i))
        cp.delete_many([_record(i).launch.task_id])
    # 1 + 78 lines were appended; each rewrite left only the live record.
    assert len(_lines(tmp_path)) < 50
    assert list(read_records(tmp_path).values()) == [kept]
    cp.write(_record(99))  # appends go to the rewritten file
    assert len(read_records(tmp_path)) == 2


def test_spawn_threads_and_the_event_loop_may_write_at_once(tmp_path):
    cp = Checkpoint(tmp_path)
    cp.COMPACT_AT = 64  # rewrites happen while others append

    def writer(base: int) -> None:
        for i in range(base, base + 200, 4):
            cp.write_many([_record(i + k) for k in range(4)])
            cp.delete_many([_record(i).launch.task_id])

    threads = [threading.Thread(target=writer, args=(n * 1000,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    expected = {_record(n * 1000 + i + k).launch.task_id
                for n in range(4) for i in range(0, 200, 4) for k in (1, 2, 3)}
    assert set(read_records(tmp_path)) == expected
    for line in _lines(tmp_path):
        msgspec.json.decode(line)  # no two appends interleaved


def test_agent_id_is_stable(tmp_path):
    first = load_or_create_agent_id(tmp_path)
    assert load_or_create_agent_id(tmp_path) == first
    assert (tmp_path / "agent_id").read_text().strip() == first


def test_an_append_that_fails_halfway_does_not_damage_the_next_one(tmp_path, monkeypatch):
    import marathon.agent.checkpoint as checkpoint

    cp = Checkpoint(tmp_path)
    kept = _record(1, pid=101)
    cp.write(kept)
    real_write_all = checkpoint.write_all

    def disk_full(fd: int, data: bytes) -> None:
        real_write_all(fd, data[: len(data) // 2])  # a torn line reaches the file
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint, "write_all", disk_full)
    try:
        cp.write(_record(2, pid=102))
    except OSError:
        pass
    else:
        raise AssertionError("the failed append was not reported")
    monkeypatch.setattr(checkpoint, "write_all", real_write_all)
    later = _record(3, pid=103)
    cp.write(later)
    # The failed record is not there, the others are whole, every line decodes.
    assert read_records(tmp_path) == {kept.launch.task_id: kept, later.launch.task_id: later}
    assert len(_lines(tmp_path)) == 2
    cp.close()
    assert {r.launch.task_id for r in Checkpoint(tmp_path).load_all()} == {"task-1", "task-3"}
