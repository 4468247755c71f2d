"""Resources in integer units, and the closed set of placement reject reasons.

Placement works on integers only (milli-cpus, MiB of memory and disk, whole
GPUs, a count of ports) so the compiled core and its reference agree exactly.
The API's floating-point `cpus`/`mem`/`disk` are converted here, rounding up:
an app never gets less than it asked for.
"""

from __future__ import annotations

import math

from msgspec import Struct

# Index of each dimension in the resource vectors handed to the core.
CPUS, MEM, DISK, GPUS, PORTS = range(5)
DIMENSIONS = ("cpus", "mem", "disk", "gpus", "ports")


def milli(value: float) -> int:
    """0.1 -> 100, rounding up but immune to binary noise (1.1 * 1000 = 1100.0000000000002)."""
    return math.ceil(round(value * 1000.0, 3))


def whole(value: float) -> int:
    return math.ceil(round(value, 3))


class Resources(Struct, frozen=True, kw_only=True, array_like=True):
    """A resource vector: milli-cpus, MiB mem, MiB disk, gpus, ports."""

    cpus: int = 0
    mem: int = 0
    disk: int = 0
    gpus: int = 0
    ports: int = 0

    def as_tuple(self) -> tuple[int, int, int, int, int]:
        return (self.cpus, self.mem, self.disk, self.gpus, self.ports)

    def __add__(self, other: Resources) -> Resources:
        return Resources(
            cpus=self.cpus + other.cpus,
            mem=self.mem + other.mem,
            disk=self.disk + other.disk,
            gpus=self.gpus + other.gpus,
            ports=self.ports + other.ports,
        )

    def __sub__(self, other: Resources) -> Resources:
        return Resources(
            cpus=self.cpus - other.cpus,
            mem=self.mem - other.mem,
            disk=self.disk - other.disk,
            gpus=self.gpus - other.gpus,
            ports=self.ports - other.ports,
        )

    def fits_in(self, other: Resources) -> bool:
        return (
            self.cpus <= other.cpus
            and self.mem <= other.mem
            and self.disk <= other.disk
            and self.gpus <= other.gpus
            and self.ports <= other.ports
        )

    @classmethod
    def of(cls, *, cpus: float = 0.0, mem: float = 0.0, disk: float = 0.0, gpus: int = 0, ports: int = 0) -> Resources:
        """From the API's units (cpus as a float, MiB as floats)."""
        return cls(cpus=milli(cpus), mem=whole(mem), disk=whole(disk), gpus=int(gpus), ports=ports)


class RejectReason:
    """Why an agent was not used for an instance (SPEC.md 1.8), in funnel order.

    An agent that fails several checks is attributed to the first of them in
    this order, so `/v2/queue`'s `processedOffersSummary` reads as a funnel.
    """

    UNFULFILLED_ROLE = 0
    UNFULFILLED_CONSTRAINT = 1
    NO_CORRESPONDING_RESERVATION_FOUND = 2
    AGENT_MAINTENANCE = 3
    INSUFFICIENT_CPUS = 4
    INSUFFICIENT_MEMORY = 5
    INSUFFICIENT_DISK = 6
    INSUFFICIENT_GPUS = 7
    INSUFFICIENT_PORTS = 8
    DECLINED_SCARCE_RESOURCES = 9

    NAMES = (
        "UnfulfilledRole",
        "UnfulfilledConstraint",
        "NoCorrespondingReservationFound",
        "AgentMaintenance",
        "InsufficientCpus",
        "InsufficientMemory",
        "InsufficientDisk",
        "InsufficientGpus",
        "InsufficientPorts",
        "DeclinedScarceResources",
    )
    COUNT = len(NAMES)
