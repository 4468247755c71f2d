"""A LocalDriver in a process of its own, for the crash-recovery tests.

    python driver_proc.py WORK_DIR TASK_ID [COMMAND [HEALTH_COMMAND]]

Starts a driver on WORK_DIR, launches TASK_ID (`sleep 1000`, or COMMAND run
by the shell; an empty COMMAND means `sleep 1000`), prints `RUNNING <pid>`
once the task runs (once it is reported healthy, with a COMMAND health
check HEALTH_COMMAND), then waits to be killed: the test SIGKILLs this
process the way an operator's `kill -9` of `marathon serve` would.
"""

from __future__ import annotations

import sys
from pathlib import Path

import trio

from marathon.cluster.local import LocalDriver
from marathon.models.launch import AgentHealthCheck, TaskLaunch


async def main(work_dir: str, task_id: str, command: str | None, health: str | None) -> None:
    check = None
    if health:
        check = AgentHealthCheck(protocol="COMMAND", command=health, delay_seconds=0,
                                 interval_seconds=0.2, grace_period_seconds=60,
                                 consecutive_failures=1000)
    driver = LocalDriver(Path(work_dir), hostname="127.0.0.1")
    async with trio.open_nursery() as nursery:
        await nursery.start(driver.run)
        instance_id = task_id.rsplit("._app.", 1)[0]
        driver.launch([TaskLaunch(
            task_id=task_id, instance_id=instance_id, app_id="/test/app",
            agent_id=driver.agent_id, shell=command is not None, command=command,
            argv=[] if command else ["sleep", "1000"], cpus=0.5, mem=64, host_ports=[31007],
            health_check=check,
        )])
        async for status in driver.updates:
            if status.state == "TASK_RUNNING" and (check is None or status.healthy is True):
                print("RUNNING", driver.executor.task_pid(task_id), flush=True)
            elif status.state not in ("TASK_STAGING", "TASK_STARTING", "TASK_RUNNING"):
                print("UNEXPECTED", status, flush=True)


if __name__ == "__main__":
    args = sys.argv[1:] + [""] * 2
    trio.run(main, args[0], args[1], args[2] or None, args[3] or None)
