"""What ZooKeeper says about the leader (CLUSTER.md 3.2).

`<zk root>/leader` is a persistent node holding a `LeaderRecord`; its
dataVersion is the fence every leader write checks.  The winner of an
election sets it in the same multi that checks its candidate node, with
`epoch` one above the previous record's.  Standbys and agents read it
(with a watch) to find the leader's URL and epoch.
"""

from __future__ import annotations

import msgspec


class LeaderRecord(msgspec.Struct, kw_only=True, frozen=True):
    epoch: int
    id: str  # host:port, Marathon's participant id
    url: str  # http://host:port
    since: int = 0  # ms since the epoch, when this leader won

    @property
    def address(self) -> str:
        """host:port, as `/v2/leader` answers."""
        return self.id


_decode = msgspec.json.Decoder(LeaderRecord).decode
_encode = msgspec.json.Encoder().encode


def decode_leader(data: bytes) -> LeaderRecord | None:
    """The record in the leader node, or None if it is empty (no leader
    yet) or not one (ValueError is never raised: a stranger's bytes mean
    "unknown")."""
    if not data:
        return None
    try:
        return _decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


def encode_leader(record: LeaderRecord) -> bytes:
    return _encode(record)
