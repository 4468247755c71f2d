"""Placement constraints: what each operator means, and how the core evaluates it.

Marathon's operators (SPEC.md 7.2-7.3) are evaluated per agent against the
app's *placed* instances: its counted existing instances (`placed_instances`)
plus the instances placed earlier in the same pass.  This module holds

* the field readers (`hostname`/`@hostname`, `@region`, `@zone`, attributes),
* `accepts`, a direct, readable evaluation of one constraint for one agent
  value against a list of placed values: the specification the compiled core
  is tested against, and
* `encode`, which turns a constraint into what the core evaluates: static
  operators (LIKE, UNLIKE, IS, CLUSTER with a value) become a table of
  accept flags per distinct value, computed once per pass; dynamic ones
  (UNIQUE, CLUSTER without a value, MAX_PER, GROUP_BY) become an operation on
  per-value counts that the core updates as it places instances.

Choices where Marathon is silent or broken (also in docs/placement.md):

* GROUP_BY with a value n > 0 uses the 1.10+ "preemptive" rule with G = n.
  Without a value (or n <= 0, where 1.10 divides by zero) it uses the 1.9
  rule with minimum max(n, 0).
* Placed instances whose agent lacks the field form their own group (Marathon
  groups by an optional value), so they count in GROUP_BY's number of groups
  and minimum; they never block UNIQUE and never match CLUSTER.
* CLUSTER without a value (or with an empty one) pins to the value of the
  first placed instance, in the order `existing` lists them.
* LIKE/UNLIKE use Java's full-match semantics (`re.fullmatch`) with the Java
  syntax translated by `marathon.models.constraint.compile_java_regex`; an
  empty pattern rejects every agent that has the field, as in Marathon.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

from msgspec import UNSET

from .models.agent import Offer, render_scalar
from .models.app import AppDefinition
from .models.constraint import Constraint, compile_java_regex, java_int, parse_constraint
from .models.instance import LOST, Instance
from .models.timestamp import parse_ms

HOSTNAME = "@hostname"
REGION = "@region"
ZONE = "@zone"

_SCALAR = re.compile(r"[0-9]+(\.[0-9]+)?")

# Operations of the core (the same numbers as in _core.pyx and _core_ref.py;
# `marathon.matching`, the core's only importer, checks that they agree).
OP_TABLE = 0  # static: a table of accept flags per value
OP_UNIQUE = 1
OP_CLUSTER = 2  # without a value: pinned to the first placed instance's value
OP_MAX_PER = 3
OP_GROUP_BY = 4  # Marathon 1.9 rule
OP_GROUP_BY_TARGET = 5  # Marathon 1.10+ rule


def canonical_field(field: str) -> str:
    """`hostname` and `@hostname` read the same thing; other names are kept."""
    return HOSTNAME if field in ("hostname", HOSTNAME) else field


def is_builtin_field(field: str) -> bool:
    """Fields read from the agent's identity rather than its attributes."""
    return canonical_field(field) in (HOSTNAME, REGION, ZONE)


def is_fault_domain_field(field: str) -> bool:
    return field in (REGION, ZONE)


def region_aware(constraints: Iterable[Constraint]) -> bool:
    """Apps with @region/@zone constraints may use agents outside the local region."""
    return any(is_fault_domain_field(c.field) for c in constraints)


def offer_value(offer: Offer, field: str) -> str | None:
    """The value constraints compare for `field` on this agent (None: the agent lacks it)."""
    field = canonical_field(field)
    if field == HOSTNAME:
        return offer.hostname
    if field == REGION:
        return offer.region
    if field == ZONE:
        return offer.zone
    return offer.attributes.get(field)


def instance_value(
    instance: Instance, field: str, agent_attributes: Mapping[str, Mapping[str, str]]
) -> str | None:
    """The value of `field` for the agent an instance runs on."""
    field = canonical_field(field)
    if field == HOSTNAME:
        return instance.hostname
    if field == REGION:
        return instance.region
    if field == ZONE:
        return instance.zone
    if instance.agent_id is None:
        return None
    return agent_attributes.get(instance.agent_id, {}).get(field)


def parse_all(app: AppDefinition) -> list[Constraint]:
    """The app's constraints, parsed (they were validated when the app was stored)."""
    return [parse_constraint(c) for c in app.constraints]


def placed_instances(app: AppDefinition, existing: Iterable[Instance]) -> list[Instance]:
    """The instances constraints count (SPEC.md 4.8), in the given order.

    Not lost, not waiting for placement, and not of an older configuration
    (so new instances can co-locate with the ones they replace).
    """
    floor: int | None = None
    vi = app.version_info
    if vi is not UNSET:
        floor = parse_ms(vi.last_config_change_at)  # type: ignore[union-attr]
    versions: dict[str, int] = {}
    out = []
    for inst in existing:
        if inst.condition in LOST or inst.is_scheduled:
            continue
        if floor is not None:
            v = versions.get(inst.run_spec_version)
            if v is None:
                v = versions[inst.run_spec_version] = parse_ms(inst.run_spec_version)
            if v < floor:
                continue
        out.append(inst)
    return out


# -- the specification: one constraint, one agent value, the placed values ----------------


def static_accepts(c: Constraint, value: str | None) -> bool:
    """LIKE, UNLIKE, IS and CLUSTER with a value: independent of placed instances."""
    op = c.operator
    if value is None:
        return op == "UNLIKE"
    if op == "LIKE" or op == "UNLIKE":
        if not c.value:
            return False  # Marathon: "value is required" -> no match either way
        matched = compile_java_regex(c.value).fullmatch(value) is not None
        return matched if op == "LIKE" else not matched
    if op == "IS":
        want = c.value or ""
        if _SCALAR.fullmatch(want):
            want = render_scalar(float(want))
        return value == want
    if op == "CLUSTER":
        return value == c.value
    raise ValueError(f"{op} is not a static operator")


def is_static(c: Constraint) -> bool:
    return c.operator in ("LIKE", "UNLIKE", "IS") or (c.operator == "CLUSTER" and bool(c.value))


def group_by_groups(c: Constraint) -> int:
    """G for the 1.10 GROUP_BY rule, or 0 when the 1.9 rule applies (no value, n <= 0)."""
    n = java_int(c.value) if c.value is not None else None
    return n if n is not None and n > 0 else 0


def accepts(c: Constraint, value: str | None, placed: Sequence[str | None], instances: int) -> bool:
    """Does an agent whose field value is `value` meet `c`, given the placed instances'
    values (None: their agent lacks the field) and the app's target instance count?"""
    if is_static(c):
        return static_accepts(c, value)
    if value is None:
        return False
    op = c.operator
    if op == "UNIQUE":
        return value not in placed
    if op == "CLUSTER":
        return not placed or placed[0] == value
    counts: dict[str | None, int] = {}
    for p in placed:
        counts[p] = counts.get(p, 0) + 1
    mine = counts.get(value, 0)
    if op == "MAX_PER":
        return mine < (java_int(c.value or "") or 0)
    # GROUP_BY
    g = group_by_groups(c)
    if g == 0:
        minimum = max(java_int(c.value) or 0, 0) if c.value is not None else 0
        if mine == 0:
            return True
        return len(counts) >= minimum and mine == min(counts.values())
    per, rem = divmod(instances, g)
    if mine > 0:
        extra = sum(max(0, n - per) for n in counts.values())
        return mine < per or (mine == per and extra < rem)
    return len(counts) < g


# -- the encoding the core evaluates ------------------------------------------------------


def encode(c: Constraint) -> tuple[int, int]:
    """(core operation, argument) for one constraint; OP_TABLE needs `table` too."""
    if is_static(c):
        return OP_TABLE, 0
    op = c.operator
    if op == "UNIQUE":
        return OP_UNIQUE, 0
    if op == "CLUSTER":
        return OP_CLUSTER, 0
    if op == "MAX_PER":
        return OP_MAX_PER, java_int(c.value or "") or 0
    if op == "GROUP_BY":
        g = group_by_groups(c)
        if g > 0:
            return OP_GROUP_BY_TARGET, g
        minimum = max(java_int(c.value) or 0, 0) if c.value is not None else 0
        return OP_GROUP_BY, minimum
    raise ValueError(f"unknown operator {op}")


def table(c: Constraint, values: Sequence[str], ids: Mapping[str, int] | None = None) -> bytes:
    """Accept flags of a static constraint for each value id, then for "missing".

    `ids` (value -> id, the inverse of `values`) makes equality operators O(1).
    """
    op = c.operator
    if op in ("LIKE", "UNLIKE") and c.value:
        fullmatch = compile_java_regex(c.value).fullmatch
        hits = bytearray(map(bool, map(fullmatch, values)))
        if op == "UNLIKE":
            hits = hits.translate(_FLIP)
        hits.append(1 if op == "UNLIKE" else 0)
        return bytes(hits)
    if op in ("IS", "CLUSTER") and ids is not None:
        flags = bytearray(len(values) + 1)
        want = c.value or ""
        if op == "IS" and _SCALAR.fullmatch(want):
            want = render_scalar(float(want))
        vid = ids.get(want)
        if vid is not None:
            flags[vid] = 1
        return bytes(flags)
    flags = bytearray(len(values) + 1)
    for vid, v in enumerate(values):
        if static_accepts(c, v):
            flags[vid] = 1
    flags[len(values)] = 1 if static_accepts(c, None) else 0
    return bytes(flags)


_FLIP = bytes([1, 0]) + bytes(254)
