"""Agents and their offers: what the cluster has, and what is free right now.

An `AgentInfo` describes a machine (identity, fault domain, attributes, total
resources).  An `Offer` is the cluster driver's answer to "what can be placed
where now": an agent's free resources and free port ranges, plus everything
placement rules read (hostname, region, zone, attributes rendered as Marathon
renders them for constraints, the role its resources belong to, maintenance).
"""

from __future__ import annotations

from msgspec import Struct

from .resources import Resources


class PortRange(Struct, frozen=True, array_like=True):
    """An inclusive range of ports, `[begin, end]`."""

    begin: int
    end: int

    @property
    def size(self) -> int:
        return self.end - self.begin + 1


def ports_in(ranges: list[PortRange]) -> int:
    return sum(r.size for r in ranges)


class Attribute(Struct, frozen=True, kw_only=True):
    """A Mesos-style agent attribute: exactly one of text, scalar, ranges, set."""

    name: str
    text: str | None = None
    scalar: float | None = None
    ranges: list[PortRange] | None = None
    items: list[str] | None = None

    def render(self) -> str:
        """The string constraints compare against (SPEC.md 7.2)."""
        if self.text is not None:
            return self.text
        if self.scalar is not None:
            return render_scalar(self.scalar)
        if self.ranges is not None:
            rs = sorted(self.ranges, key=lambda r: r.begin)
            return "[" + ",".join(f"{r.begin}-{r.end}" for r in rs) + "]"
        if self.items is not None:
            return "{" + ",".join(sorted(self.items)) + "}"
        return ""


def render_scalar(value: float) -> str:
    """At most 3 decimals, half-even rounding, no trailing zeros (`0.8`, `1.001`, `2`)."""
    from decimal import ROUND_HALF_EVEN, Decimal

    d = Decimal(repr(value)).quantize(Decimal("0.001"), rounding=ROUND_HALF_EVEN)
    text = format(d, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


class AgentInfo(Struct, frozen=True, kw_only=True):
    id: str
    hostname: str
    region: str | None = None
    zone: str | None = None
    attributes: list[Attribute] = []
    role: str = "*"
    total: Resources = Resources()
    port_ranges: list[PortRange] = []


class Offer(Struct, frozen=True, kw_only=True):
    """Free resources of one agent at one moment."""

    agent_id: str
    hostname: str
    free: Resources
    port_ranges: list[PortRange]
    total: Resources
    region: str | None = None
    zone: str | None = None
    attributes: dict[str, str] = {}
    role: str = "*"
    draining: bool = False


# -- Mesos-style flag values ------------------------------------------------------


def parse_resources(text: str) -> Resources:
    """Mesos-style `cpus:4;mem:8192;disk:10000;gpus:0`."""
    values: dict[str, float] = {}
    for part in text.split(";"):
        if not part.strip():
            continue
        name, _, value = part.partition(":")
        values[name.strip()] = float(value)
    return Resources.of(
        cpus=values.get("cpus", 0.0), mem=values.get("mem", 0.0), disk=values.get("disk", 0.0), gpus=int(values.get("gpus", 0))
    )


def parse_port_ranges(text: str) -> list[PortRange]:
    ranges = []
    for part in text.strip("[]").split(","):
        if part.strip():
            lo, _, hi = part.strip().partition("-")
            ranges.append(PortRange(int(lo), int(hi or lo)))
    return ranges


def parse_attributes(text: str) -> list[Attribute]:
    attrs = []
    for part in text.split(";"):
        if not part.strip():
            continue
        name, _, value = part.partition(":")
        try:
            attrs.append(Attribute(name=name.strip(), scalar=float(value)))
        except ValueError:
            attrs.append(Attribute(name=name.strip(), text=value.strip()))
    return attrs
