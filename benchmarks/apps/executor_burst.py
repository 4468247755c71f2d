"""The embedded agent's executor alone: N `sleep 3600` launched at once, no server.

    python benchmarks/apps/executor_burst.py [N]     (env: SC=spawn threads,
                                                       BASE=where the work dir goes)

Prints the raw posix_spawn rate before and after, the executor's launch rate
(from `launch()` to the last TASK_RUNNING), its CPU (user/sys) and the kill
rate.  Used to profile S6 without the rest of the pipeline.
"""

from __future__ import annotations

import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import trio

from marathon.agent.executor import Executor
from marathon.models.launch import TaskLaunch
from marathon.testing.measure import raw_spawn_rate

N = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
TERMINAL = ("TASK_KILLED", "TASK_FAILED", "TASK_FINISHED")


async def main() -> None:
    send, recv = trio.open_memory_channel(10 * N)
    threads = int(os.environ.get("SC", "8"))
    with tempfile.TemporaryDirectory(dir=os.environ.get("BASE")) as d:
        ex = Executor(Path(d), agent_id="bench", send=send, cgroups="off", spawn_concurrency=threads)
        async with trio.open_nursery() as nursery:
            await nursery.start(ex.run)
            launches = [TaskLaunch(task_id=f"t{i}", instance_id=f"i{i}", app_id="/bench", agent_id="bench",
                                   shell=True, command="sleep 3600") for i in range(N)]
            r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
            ex.launch(launches)
            running = 0
            async for st in recv:
                running += st.state == "TASK_RUNNING"
                if running == N:
                    break
            wall, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
            print(f"executor ({threads} threads): {N / wall:.0f}/s, {wall:.2f} s, "
                  f"user {r1.ru_utime - r0.ru_utime:.2f} s, sys {r1.ru_stime - r0.ru_stime:.2f} s")
            t1 = time.perf_counter()
            ex.kill([launch.task_id for launch in launches], grace_seconds=3)
            ended = 0
            async for st in recv:
                ended += st.state in TERMINAL
                if ended == N:
                    break
            print(f"kill: {N / (time.perf_counter() - t1):.0f}/s")
            nursery.cancel_scope.cancel()


if __name__ == "__main__":
    print("raw posix_spawn: {spawn_per_s:.0f}/s".format(**raw_spawn_rate(N)))
    trio.run(main)
    print("raw posix_spawn: {spawn_per_s:.0f}/s".format(**raw_spawn_rate(N)))
