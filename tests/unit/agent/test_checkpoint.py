"""What survives the agent process: task records written atomically."""

from __future__ import annotations

from agent_helpers import make_task

from marathon.agent.cgroups import TaskCgroup
from marathon.agent.checkpoint import Checkpoint, TaskCheckpoint, load_or_create_agent_id


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
    cp.delete(launch.task_id)
    cp.delete(launch.task_id)  # idempotent
    assert cp.load_all() == []


def test_half_written_and_corrupt_records_are_discarded(tmp_path):
    cp = Checkpoint(tmp_path)
    launch = make_task("agent-1", command="true")
    good = TaskCheckpoint(launch=launch, sandbox="/x", boot_id="b", staged_at=1)
    cp.write(good)
    (tmp_path / ".other.json.123.tmp").write_bytes(b'{"launch": ')  # a crash mid-write
    (tmp_path / "broken.json").write_bytes(b"not json")
    assert cp.load_all() == [good]
    assert sorted(p.name for p in tmp_path.iterdir()) == [launch.task_id + ".json"]


def test_agent_id_is_stable(tmp_path):
    first = load_or_create_agent_id(tmp_path)
    assert load_or_create_agent_id(tmp_path) == first
    assert (tmp_path / "agent_id").read_text().strip() == first
