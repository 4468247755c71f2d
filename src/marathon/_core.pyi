"""Type stub of the compiled placement core (same API as `marathon._core_ref`).

`place` takes flat buffers (array.array / bytes / bytearray); the layouts are
documented in `marathon._core_ref`.  int64 buffers are typecode "q", int32 "i",
bytes are uint8.
"""

from typing_extensions import Buffer  # collections.abc.Buffer from Python 3.12

REASON_ROLE: int
REASON_CONSTRAINT: int
REASON_RESERVATION: int
REASON_MAINTENANCE: int
REASON_CPUS: int
REASON_MEM: int
REASON_DISK: int
REASON_GPUS: int
REASON_PORTS: int
REASON_SCARCE: int
N_REASONS: int
SUMMARY_FIELDS: int

STRATEGY_BINPACK: int
STRATEGY_SPREAD: int
STRATEGY_FIRSTFIT: int

OP_TABLE: int
OP_UNIQUE: int
OP_CLUSTER: int
OP_MAX_PER: int
OP_GROUP_BY: int
OP_GROUP_BY_TARGET: int
N_OPS: int

AGENT_DRAINING: int
AGENT_REMOTE: int
APP_REGION_AWARE: int
APP_DECLINE_GPU: int

DIMS: int
A_COUNT: int
A_STRATEGY: int
A_FLAGS: int
A_TARGET: int
A_ROLES: int
A_ROLES_END: int
A_PORTS: int
A_PORTS_END: int
A_CONS: int
A_CONS_END: int
APP_FIELDS: int
C_OP: int
C_FIELD: int
C_ARG: int
C_TABLE: int
C_EXIST: int
C_EXIST_END: int
CONS_FIELDS: int

MAX_AGENTS: int
MAX_PORT: int
SCORE_MAX: int
KEY_INF: int
N_BUCKETS: int
BUCKET_WIDTH: int
K_SLACK: int
K_MAX: int

def place(
    free: Buffer,  # int64[5n], in/out (dimension-major)
    total: Buffer,  # int64[5n]
    agent_role: Buffer,  # int32[n]
    agent_flags: Buffer,  # int32[n]
    port_off: Buffer,  # int32[n+1]
    port_lo: Buffer,  # int32[R]
    port_hi: Buffer,  # int32[R]
    field_values: Buffer,  # int32[F*n]
    field_card: Buffer,  # int32[F]
    app_res: Buffer,  # int64[5A]
    app_int: Buffer,  # int32[A*APP_FIELDS]
    app_roles: Buffer,  # int32[]
    app_ports: Buffer,  # int32[]
    cons_int: Buffer,  # int32[C*CONS_FIELDS]
    tables: Buffer,  # uint8[]
    exist_vals: Buffer,  # int32[]
    veto: Buffer,  # uint8[0 or A*n]
    seed: int,
    out_agent: Buffer,  # int32[sum count], out
    out_ports: Buffer,  # int32[sum count*nports], out
    out_summary: Buffer,  # int32[A*SUMMARY_FIELDS], out
) -> int:
    """Place every app's instances; returns the number placed.  Raises ValueError."""
