"""The agent protocol: every message between a leader and a `marathon agent`.

The wire format is read here and nowhere else (CLUSTER.md 3.4-3.5).  An
agent opens two HTTP/1.1 connections to the leader:

* `POST /internal/v1/agents/subscribe` with a `Subscribe` body; the answer
  is an endless stream of `ToAgent` records (RecordIO framing: the decimal
  length of a record, a newline, the record's JSON).
* `POST /internal/v1/agents/{agent_id}/calls` with a JSON list of `ToLeader`
  calls (updates, heartbeats), header `Marathon-Stream-Id`: 202, or 403 for
  an unknown or stale stream (the agent subscribes again).

Every leader-to-agent command carries the leader's epoch; an agent never
applies a command of an epoch lower than the highest it has seen
(`max_epoch`, checkpointed before it is acted on), which is what keeps a
deposed leader from acting through it.
"""

from __future__ import annotations

from typing import Literal

import msgspec
from msgspec import Struct

from .agent import Attribute, PortRange
from .instance import TaskStatus
from .launch import TaskLaunch
from .resources import Resources

PROTOCOL_VERSION = 1
# A record larger than this closes the stream (a LAUNCH is cut to fit).
MAX_RECORD_BYTES = 4 * 1024 * 1024
# A LAUNCH carries at most this many tasks (CLUSTER.md 3.5).
LAUNCH_BATCH = 500

SUBSCRIBE_PATH = "/internal/v1/agents/subscribe"
CALLS_PATH = "/internal/v1/agents/{agent_id}/calls"
STREAM_HEADER = "Marathon-Stream-Id"

ErrorCode = Literal["STALE_EPOCH", "UNKNOWN_AGENT", "CLUSTER_MISMATCH", "GONE", "LEADERSHIP_LOST",
                    "BAD_MESSAGE", "UNAUTHORIZED"]
AgentState = Literal["REGISTERED", "DISCONNECTED", "RECOVERING", "UNREACHABLE", "GONE", "DRAINING"]


class TaskReport(Struct, frozen=True, kw_only=True):
    """One task an agent runs, as it reports it when it subscribes."""

    task_id: str
    state: str
    healthy: bool | None = None
    last_uuid: str | None = None  # of the last update sent for it
    # What it holds, so that a leader that never launched it (a new one)
    # books it on the agent.
    resources: Resources = Resources()
    host_ports: list[int] = []


# -- agent -> leader --------------------------------------------------------------


class Subscribe(Struct, frozen=True, kw_only=True, tag="SUBSCRIBE", tag_field="type"):
    agent_id: str
    cluster_id: str | None  # None: never joined a cluster yet
    boot_id: str
    hostname: str
    endpoint: str  # the agent's own HTTP endpoint (sandbox files), http://host:port
    resources: Resources
    port_ranges: list[PortRange]
    attributes: list[Attribute] = []
    region: str | None = None
    zone: str | None = None
    role: str = "*"
    version: str = ""
    protocol: int = PROTOCOL_VERSION
    max_epoch: int = 0
    capabilities: list[str] = []
    tasks: list[TaskReport] = []


class Update(Struct, frozen=True, kw_only=True, tag="UPDATE", tag_field="type"):
    """Status updates; each with a `uuid` the leader acknowledges after commit
    (a `uuid` of None answers a reconciliation and is never acknowledged)."""

    updates: list[TaskStatus]


class AgentHeartbeat(Struct, frozen=True, kw_only=True, tag="HEARTBEAT", tag_field="type"):
    ts: int
    max_epoch: int = 0


ToLeader = Update | AgentHeartbeat


# -- leader -> agent --------------------------------------------------------------


class Subscribed(Struct, frozen=True, kw_only=True, tag="SUBSCRIBED", tag_field="type"):
    agent_id: str
    cluster_id: str
    epoch: int
    stream_id: str
    heartbeat_interval_s: float
    disconnect_after_s: float
    expected_task_ids: list[str] = []


class Launch(Struct, frozen=True, kw_only=True, tag="LAUNCH", tag_field="type"):
    epoch: int
    tasks: list[TaskLaunch]


class Kill(Struct, frozen=True, kw_only=True, tag="KILL", tag_field="type"):
    epoch: int
    task_ids: list[str]
    grace_s: float | None = None


class Ack(Struct, frozen=True, kw_only=True, tag="ACK", tag_field="type"):
    epoch: int
    acks: list[tuple[str, str]]  # (task id, update uuid)


class Reconcile(Struct, frozen=True, kw_only=True, tag="RECONCILE", tag_field="type"):
    epoch: int
    task_ids: list[str] | None  # None: every task the agent runs
    others: bool = False


class LeaderHeartbeat(Struct, frozen=True, kw_only=True, tag="HEARTBEAT", tag_field="type"):
    epoch: int
    ts: int
    agent_state: AgentState = "REGISTERED"


class Error(Struct, frozen=True, kw_only=True, tag="ERROR", tag_field="type"):
    code: ErrorCode
    message: str = ""


ToAgent = Subscribed | Launch | Kill | Ack | Reconcile | LeaderHeartbeat | Error
# Commands an agent checks the epoch of before applying them.
EPOCH_COMMANDS = (Launch, Kill, Ack, Reconcile, LeaderHeartbeat)


# -- encoding ------------------------------------------------------------------------

_encoder = msgspec.json.Encoder()
_to_agent = msgspec.json.Decoder(ToAgent)
_subscribe = msgspec.json.Decoder(Subscribe)
_calls = msgspec.json.Decoder(list[ToLeader])


def encode(message: Struct | list) -> bytes:
    return _encoder.encode(message)


def record(message: Struct) -> bytes:
    """One RecordIO record: `<length>\\n<json>`."""
    data = _encoder.encode(message)
    return b"%d\n%s" % (len(data), data)


def decode_to_agent(data: bytes) -> ToAgent:
    return _to_agent.decode(data)


def decode_subscribe(data: bytes) -> Subscribe:
    return _subscribe.decode(data)


def decode_calls(data: bytes) -> list[ToLeader]:
    return _calls.decode(data)


class RecordReader:
    """Splits a byte stream into RecordIO records (`feed`, then `records`)."""

    def __init__(self, max_bytes: int = MAX_RECORD_BYTES) -> None:
        self._buf = bytearray()
        self._max = max_bytes

    def feed(self, data: bytes) -> list[bytes]:
        """The complete records `data` finishes; raises ValueError on a
        malformed or oversized record (the stream cannot be trusted after)."""
        self._buf += data
        out: list[bytes] = []
        while True:
            nl = self._buf.find(b"\n", 0, 24)
            if nl < 0:
                if len(self._buf) >= 24:
                    raise ValueError("malformed record length")
                return out
            head = bytes(self._buf[:nl])
            if not head.isdigit():
                raise ValueError(f"malformed record length {head[:24]!r}")
            size = int(head)
            if size > self._max:
                raise ValueError(f"record of {size} bytes is over the {self._max}-byte limit")
            if len(self._buf) < nl + 1 + size:
                return out
            out.append(bytes(self._buf[nl + 1:nl + 1 + size]))
            del self._buf[:nl + 1 + size]
