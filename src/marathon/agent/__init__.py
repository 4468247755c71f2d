"""The agent: runs Marathon's tasks as processes on this machine.

`executor` supervises task processes (spawn, watch, kill, report), with
limits from `cgroups` (v1 and v2), facts about this machine from `machine`
(resources, free ports, processes) and crash recovery from `checkpoint`.
`marathon.cluster.local.LocalDriver` puts it behind the cluster driver
contract for `marathon serve`; `docs/agent.md` describes the behaviour.
"""

from .executor import Executor as Executor
from .executor import SpawnError as SpawnError
