"""A LocalDriver in a process of its own, for the crash-recovery tests.

    python driver_proc.py WORK_DIR TASK_ID [COMMAND]

Starts a driver on WORK_DIR, launches TASK_ID (`sleep 1000`, or COMMAND run
by the shell), prints `RUNNING <pid>` once the task runs, then waits to be
killed: the test SIGKILLs this process the way an operator's `kill -9` of
`marathon serve` would.
"""

from __future__ import annotations

import sys
from pathlib import Path

import trio

from marathon.cluster.local import LocalDriver
from marathon.models.launch import TaskLaunch


async def main(work_dir: str, task_id: str, command: str | None) -> None:
    driver = LocalDriver(Path(work_dir), hostname="127.0.0.1")
    async with trio.open_nursery() as nursery:
        await nursery.start(driver.run)
        instance_id = task_id.rsplit("._app.", 1)[0]
        driver.launch([TaskLaunch(
            task_id=task_id, instance_id=instance_id, app_id="/test/app",
            agent_id=driver.agent_id, shell=command is not None, command=command,
            argv=[] if command else ["sleep", "1000"], cpus=0.5, mem=64, host_ports=[31007],
        )])
        async for status in driver.updates:
            if status.state == "TASK_RUNNING":
                print("RUNNING", driver.executor.task_pid(task_id), flush=True)
            elif status.state not in ("TASK_STAGING", "TASK_STARTING"):
                print("UNEXPECTED", status, flush=True)


if __name__ == "__main__":
    trio.run(main, sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None)
