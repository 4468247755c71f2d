"""Offer matching: pending launches x current offers -> placements, in one pass.

The scheduler hands `match` every app with instances waiting for placement
and every agent's current offer; it gets back where each instance goes, which
instances found no agent (with a reject summary per app for `/v2/queue`), and
the offers as they are after the pass.  This module is the only importer of
the placement core (`_core`, compiled, or `_core_ref`, its pure-Python
reference); it turns the models into primitive arrays once per pass (never
per instance x agent in Python) and the core's arrays back into models.

The pipeline for one pass (Nomad's feasibility -> scoring -> selection):

1. Feasibility inputs, built here once per pass: each agent's free resources,
   free port ranges, role, maintenance and fault-domain flags, and the value
   id of every constraint field the pass needs; for each app its demand
   vector, host-port requests, accepted roles, constraint encoding
   (`marathon.constraints`) and the values of its placed instances.  Plugin
   vetoes run here too, as a mask, because they need the models.
2. Scoring and selection, in the core, per instance: the feasible agent with
   the best strategy key (bin-pack, spread, first fit; seeded tie-break).
3. Results, built here: placements, unplaced instances, reject summaries and
   the offers with the placed resources and ports removed.  Plugin scores
   would re-rank here (a seam: see `docs/placement.md`).

Backend: `MARATHON_PUREPYTHON=1` forces the reference; otherwise the compiled
core is used, falling back to the reference with a warning if it is missing.
`BACKEND` says which one is in use ("compiled" or "reference").
"""

from __future__ import annotations

import gc
import logging
import operator
import os
from array import array
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import accumulate, repeat

import msgspec
from msgspec import UNSET

from . import constraints as cons
from .models.agent import Offer, PortRange
from .models.app import AppDefinition
from .models.constraint import Constraint
from .models.instance import Instance
from .models.resources import RejectReason, Resources

log = logging.getLogger(__name__)

# -- backend: chosen here, and only here ---------------------------------------------------

if os.environ.get("MARATHON_PUREPYTHON", "") in ("1", "true", "yes"):
    from . import _core_ref as _core

    BACKEND: str = "reference"
else:
    try:
        from . import _core  # type: ignore[no-redef]

        BACKEND = "compiled"
    except ImportError:  # pragma: no cover - exercised only without a build
        log.warning("marathon._core is not built; placing with the pure-Python reference")
        from . import _core_ref as _core  # type: ignore[no-redef]

        BACKEND = "reference"


def _check_codes() -> None:
    """The core's closed sets must be the models' (they cannot import each other)."""
    reasons = [
        _core.REASON_ROLE, _core.REASON_CONSTRAINT, _core.REASON_RESERVATION,
        _core.REASON_MAINTENANCE, _core.REASON_CPUS, _core.REASON_MEM, _core.REASON_DISK,
        _core.REASON_GPUS, _core.REASON_PORTS, _core.REASON_SCARCE,
    ]
    if reasons != list(range(RejectReason.COUNT)) or _core.N_REASONS != RejectReason.COUNT:
        raise ImportError("placement core reject reasons disagree with RejectReason")
    ops = [_core.OP_TABLE, _core.OP_UNIQUE, _core.OP_CLUSTER, _core.OP_MAX_PER,
           _core.OP_GROUP_BY, _core.OP_GROUP_BY_TARGET]
    if ops != [cons.OP_TABLE, cons.OP_UNIQUE, cons.OP_CLUSTER, cons.OP_MAX_PER,
               cons.OP_GROUP_BY, cons.OP_GROUP_BY_TARGET]:
        raise ImportError("placement core constraint operations disagree with constraints.py")


_check_codes()

STRATEGIES = {"binpack": _core.STRATEGY_BINPACK, "spread": _core.STRATEGY_SPREAD,
              "firstfit": _core.STRATEGY_FIRSTFIT}
STRATEGY_LABEL = "MARATHON_PLACEMENT_STRATEGY"
GPU_LABEL = "GPU_SCHEDULING_BEHAVIOR"
_DIMS = _core.DIMS
_AF = _core.APP_FIELDS
_CF = _core.CONS_FIELDS
_SF = _core.SUMMARY_FIELDS


# -- the API ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PlacementRequest:
    """Instances of one app waiting for placement."""

    app: AppDefinition  # normalized (ports, role, networks filled in)
    instance_ids: Sequence[str]  # scheduled instances to place, in order
    # ALL current instances of the app; `constraints.placed_instances` picks the
    # ones constraints count (SPEC.md 4.8).
    existing: Sequence[Instance] = ()
    role: str | None = None  # role of these instances (defaults to app.role)


@dataclass(frozen=True, slots=True)
class Placement:
    instance_id: str
    app_id: str
    agent_id: str
    hostname: str
    region: str | None
    zone: str | None
    # Allocated host ports in port-index order, only for ports that request one (SPEC.md 8.2).
    host_ports: tuple[int, ...]


def _placement_factory() -> Callable[..., Placement]:
    """A constructor for Placement without the frozen dataclass __init__ overhead
    (object.__setattr__ per field): it sets the slots directly.  S1 creates
    100,000 of them in one pass."""
    s0, s1, s2, s3, s4, s5, s6 = (getattr(Placement, f).__set__ for f in Placement.__slots__)
    new = object.__new__

    def make(instance_id, app_id, agent_id, hostname, region, zone, host_ports):
        p = new(Placement)
        s0(p, instance_id)
        s1(p, app_id)
        s2(p, agent_id)
        s3(p, hostname)
        s4(p, region)
        s5(p, zone)
        s6(p, host_ports)
        return p

    return make


_new_placement = _placement_factory()


@dataclass(slots=True)
class RejectSummary:
    """Why an app's first unplaced instance found no agent (funnel form, SPEC.md 1.8)."""

    processed: int  # agents considered
    declined: list[int]  # index = RejectReason code: agents rejected first for that reason


@dataclass(slots=True)
class MatchResult:
    placements: list[Placement]
    unplaced: dict[str, list[str]]  # app id -> instance ids not placed in this pass
    rejects: dict[str, RejectSummary]  # app id -> summary of its first miss
    offers: list[Offer]  # the offers with free resources/ports after this pass


@dataclass(frozen=True, slots=True)
class MatchConfig:
    strategy: str = "binpack"  # "binpack" | "spread" | "firstfit"
    seed: int = 0
    accepted_resource_roles_default_behavior: str = "any"  # any | unreserved | reserved
    local_region: str | None = None  # SPEC.md 7.3 fault-domain default
    # A plugin's veto: False rejects the agent for the app (reason UnfulfilledConstraint,
    # as Marathon reports a SchedulerPlugin that does not match).
    veto: Callable[[Offer, AppDefinition], bool] | None = None
    # --gpu_scheduling_behavior: "restricted" keeps apps without GPUs off agents with
    # free GPUs (reason DeclinedScarceResources); per-app label GPU_SCHEDULING_BEHAVIOR.
    gpu_scheduling_behavior: str = "restricted"


# -- per-app inputs ---------------------------------------------------------------------


def strategy_of(app: AppDefinition, config: MatchConfig) -> int:
    """The app's label overrides the server's strategy; an unknown value is ignored."""
    label = app.labels.get(STRATEGY_LABEL)
    if label is not None:
        code = STRATEGIES.get(label.strip().lower())
        if code is not None:
            return code
    return STRATEGIES.get(config.strategy, _core.STRATEGY_BINPACK)


def host_port_requests(app: AppDefinition) -> list[int]:
    """One entry per port that needs a host port, in port-index order: 0 = any, >0 = exact."""
    if app.host_networking:
        defs = app.port_definitions if app.port_definitions is not UNSET else []
        if app.require_ports:
            return [d.port for d in defs]  # type: ignore[union-attr]
        return [0 for _ in defs]  # type: ignore[union-attr]
    container = app.container
    mappings = container.port_mappings if container else UNSET
    if mappings is UNSET or not mappings:
        return []
    return [m.host_port for m in mappings if m.host_port is not UNSET]  # type: ignore


def demand_of(app: AppDefinition, nports: int) -> Resources:
    return Resources.of(cpus=app.cpus, mem=app.mem, disk=app.disk, gpus=app.gpus, ports=nports)


def accepted_roles(app: AppDefinition, role: str, behavior: str) -> set[str]:
    """Offer roles the app's instances may use (SPEC.md 2.4, 10.1)."""
    explicit = app.accepted_resource_roles
    if explicit is not UNSET and explicit:
        return set(explicit)  # type: ignore[arg-type]
    if behavior == "unreserved":
        return {"*"}
    if behavior == "reserved":
        return {role}
    return {role, "*"}


def instance_role(req: PlacementRequest) -> str:
    if req.role is not None:
        return req.role
    return req.app.role if req.app.role is not UNSET else "*"  # type: ignore[return-value]


def declines_gpu_agents(app: AppDefinition, config: MatchConfig) -> bool:
    if app.gpus > 0:
        return False
    behavior = app.labels.get(GPU_LABEL, config.gpu_scheduling_behavior)
    return behavior.strip().lower() == "restricted"


# -- agents -> arrays ----------------------------------------------------------------------


def _normalize_ranges(ranges: list[PortRange]) -> list[tuple[int, int]]:
    """Sorted, disjoint ranges within 0..65535 (offers usually already are)."""
    rs = sorted((max(r.begin, 0), min(r.end, 65535)) for r in ranges)
    out: list[tuple[int, int]] = []
    for b, e in rs:
        if e < b:
            continue
        if out and b <= out[-1][1] + 1:
            if e > out[-1][1]:
                out[-1] = (out[-1][0], e)
        else:
            out.append((b, e))
    return out


class _Agents:
    """The per-pass arrays describing the offers (one comprehension per column)."""

    def __init__(self, offers: Sequence[Offer], config: MatchConfig) -> None:
        self.offers = offers
        self.n = n = len(offers)
        frees = [o.free for o in offers]
        totals = [o.total for o in offers]
        zeros = bytes(8 * n)
        free = array("q", [f.cpus for f in frees])
        free.extend(array("q", [f.mem for f in frees]))
        free.extend(array("q", [f.disk for f in frees]))
        free.extend(array("q", [f.gpus for f in frees]))
        free.frombytes(zeros)  # ports: the core counts them from the ranges
        total = array("q", [t.cpus for t in totals])
        total.extend(array("q", [t.mem for t in totals]))
        total.extend(array("q", [t.disk for t in totals]))
        total.extend(array("q", [t.gpus for t in totals]))
        total.frombytes(zeros)
        self.free, self.total = free, total
        self.port_off, self.port_lo, self.port_hi = _port_arrays(offers)
        roles = [o.role for o in offers]
        self.role_ids = {r: k for k, r in enumerate(dict.fromkeys(roles))}
        self.agent_role = array("i", map(self.role_ids.__getitem__, roles))
        flags = array("i", bytes(4 * n))
        if any([o.draining for o in offers]):
            for i, o in enumerate(offers):
                if o.draining:
                    flags[i] |= _core.AGENT_DRAINING
        local = config.local_region
        if local is not None:
            for i, o in enumerate(offers):
                if o.region is not None and o.region != local:
                    flags[i] |= _core.AGENT_REMOTE
        self.agent_flags = flags
        self._attributes: dict[str, Mapping[str, str]] | None = None

    @property
    def attributes(self) -> dict[str, Mapping[str, str]]:
        """Agent id -> rendered attributes (built on first use)."""
        if self._attributes is None:
            self._attributes = {o.agent_id: o.attributes for o in self.offers}
        return self._attributes


def _port_arrays(offers: Sequence[Offer]) -> tuple[array, array, array]:
    """CSR arrays of each agent's free port ranges (sorted, disjoint, within 0..65535)."""
    all_ranges = [o.port_ranges for o in offers]
    counts = list(map(len, all_ranges))
    single = counts.count(1) == len(counts)
    flat = [rs[0] for rs in all_ranges] if single else [r for rs in all_ranges for r in rs]
    lo = array("i", [r.begin for r in flat])
    hi = array("i", [r.end for r in flat])
    clean = not flat or (min(lo) >= 0 and max(hi) <= 65535 and all(map(operator.le, lo, hi)))
    if clean and single:
        return array("i", range(len(counts) + 1)), lo, hi
    if clean and max(counts, default=0) <= 1:
        return array("i", accumulate(counts, initial=0)), lo, hi
    if clean:
        # Several ranges per agent, as free ports become once some are
        # taken: usable as they are if each agent's are sorted and apart.
        off = array("i", accumulate(counts, initial=0))
        starts = set(off)
        if all(hi[k] + 1 < lo[k + 1] for k in range(len(flat) - 1) if k + 1 not in starts):
            return off, lo, hi
    # Some agent has several ranges (or odd ones): sort and merge per agent.
    off = array("i", [0])
    lo_a, hi_a = array("i"), array("i")
    for rs in all_ranges:
        for b, e in _normalize_ranges(rs):
            lo_a.append(b)
            hi_a.append(e)
        off.append(len(lo_a))
    return off, lo_a, hi_a


class _Fields:
    """Value ids of the constraint fields used in a pass (hostname, attributes, ...)."""

    def __init__(self, agents: _Agents) -> None:
        self.agents = agents
        self.index: dict[str, int] = {}
        self.ids: list[dict[str, int]] = []
        self.values: list[list[str]] = []
        self.agent_ids: list[list[int] | range] = []

    def field(self, name: str) -> int:
        name = cons.canonical_field(name)
        f = self.index.get(name)
        if f is not None:
            return f
        offers = self.agents.offers
        column: list[str | None]
        if name == cons.HOSTNAME:
            column = [o.hostname for o in offers]
        elif name == cons.REGION:
            column = [o.region for o in offers]
        elif name == cons.ZONE:
            column = [o.zone for o in offers]
        else:
            column = [o.attributes.get(name) for o in offers]
        agent_ids: list[int] | range
        ids: dict[str, int] = {}
        if name == cons.HOSTNAME:  # usually one agent per hostname: id = agent index
            ids = dict(zip(column, range(len(column)), strict=True))  # type: ignore[arg-type]
        if ids and len(ids) == len(column) and None not in ids:
            agent_ids = range(len(column))
        else:  # few distinct values: map them in C
            distinct = dict.fromkeys(column)
            distinct.pop(None, None)  # type: ignore[call-overload]
            ids = dict(zip(distinct, range(len(distinct)), strict=True))  # type: ignore[arg-type]
            lookup: dict[str | None, int] = {**ids, None: -1}
            agent_ids = list(map(lookup.__getitem__, column))
        f = self.index[name] = len(self.ids)
        self.ids.append(ids)
        self.values.append(list(ids))
        self.agent_ids.append(agent_ids)
        return f

    def value_id(self, f: int, value: str | None) -> int:
        if value is None:
            return -1
        ids = self.ids[f]
        vid = ids.get(value)
        if vid is None:  # a placed instance's value that no current agent has
            vid = ids[value] = len(ids)
            self.values[f].append(value)
        return vid


# -- the pass -----------------------------------------------------------------------------


def match(
    requests: Sequence[PlacementRequest],
    offers: Sequence[Offer],
    config: MatchConfig = MatchConfig(),  # noqa: B008 - frozen, shared safely
    *,
    agent_attributes: Mapping[str, Mapping[str, str]] | None = None,
) -> MatchResult:
    """Place every request's instances on the offers, in request order.

    `agent_attributes` (agent id -> rendered attributes) is needed only for
    attribute constraints whose placed instances run on agents that are not
    among `offers`; agents among the offers are read from there.

    A request whose app appeared in an earlier request of the same call (the
    same app with instances of another role) is placed in a second round, so
    its constraints also count the earlier request's placements.
    """
    result = MatchResult(placements=[], unplaced={}, rejects={}, offers=list(offers))
    pending = list(requests)
    earlier: dict[str, list[tuple[str, int]]] = {}  # app id -> (agent id, n) placed so far
    # A pass allocates one object per placement and no cycles: pausing the cyclic
    # collector saves it from scanning the heap dozens of times (S1: ~25% of the pass).
    paused = gc.isenabled()
    if paused:
        gc.disable()
    try:
        while pending:
            seen: set[str] = set()
            this_round: list[PlacementRequest] = []
            pending_next: list[PlacementRequest] = []
            for req in pending:
                (pending_next if req.app.id in seen else this_round).append(req)
                seen.add(req.app.id)
            _round(this_round, result, config, agent_attributes, earlier, bool(pending_next))
            pending = pending_next
    finally:
        if paused:
            gc.enable()
    return result


@lru_cache(maxsize=4096)
def _demand(cpus: float, mem: float, disk: float, gpus: int, cap: tuple[int, int, int, int]
            ) -> tuple[int, int, int, int]:
    """An instance's demand, each dimension at most `cap` (one more than the
    largest agent has): an app asking for more than any agent fits nowhere
    either way, and the core's int64 arithmetic stays bounded (cpus of 1e16
    did not fit an int64 at all and stopped the server)."""
    if cpus > _HUGE or mem > _HUGE or disk > _HUGE or gpus > _HUGE:
        cpus, mem, disk, gpus = min(cpus, _HUGE), min(mem, _HUGE), min(disk, _HUGE), min(gpus, _HUGE)
    d = Resources.of(cpus=cpus, mem=mem, disk=disk, gpus=gpus).as_tuple()
    return min(d[0], cap[0]), min(d[1], cap[1]), min(d[2], cap[2]), min(d[3], cap[3])


_HUGE = 2**40  # in the definition's own units: beyond any machine


def _round(
    requests: list[PlacementRequest],
    result: MatchResult,
    config: MatchConfig,
    agent_attributes: Mapping[str, Mapping[str, str]] | None,
    earlier: dict[str, list[tuple[str, int]]],
    more_rounds: bool,
) -> None:
    offers = result.offers
    agents = _Agents(offers, config)
    n = agents.n
    attributes: Mapping[str, Mapping[str, str]] = {}
    fields = _Fields(agents)
    index_of_agent = {o.agent_id: i for i, o in enumerate(offers)} if earlier else {}
    role_ids = agents.role_ids
    behavior = config.accepted_resource_roles_default_behavior
    role_cache: dict[tuple[str, tuple[str, ...] | None], list[int]] = {}

    # Phase 1: what each app needs, and the field values of its placed instances
    # (which may add values no agent has, so tables are built after this loop).
    na = len(requests)
    res_l: list[int] = []
    int_l: list[int] = []
    roles_l: list[int] = []
    ports_l: list[int] = []
    cons_l: list[int] = []
    exist_vals = array("i")
    statics: list[tuple[int, int, Constraint]] = []  # (constraint index, field, c)
    total_instances = 0
    total_ports = 0
    nports_of: list[int] = []
    totals = [o.total for o in offers]
    cap = (max((t.cpus for t in totals), default=0) + 1, max((t.mem for t in totals), default=0) + 1,
           max((t.disk for t in totals), default=0) + 1, max((t.gpus for t in totals), default=0) + 1)
    for req in requests:
        app = req.app
        ports = host_port_requests(app)
        nports = len(ports)
        nports_of.append(nports)
        res_l.extend(_demand(app.cpus, app.mem, app.disk, app.gpus, cap))
        res_l.append(nports)
        r0 = len(roles_l)
        role = instance_role(req)
        explicit = app.accepted_resource_roles
        role_key = (role, None if explicit is UNSET else tuple(explicit))  # type: ignore[arg-type]
        accepted = role_cache.get(role_key)
        if accepted is None:
            accepted = role_cache[role_key] = [
                role_ids[r] for r in sorted(accepted_roles(app, role, behavior)) if r in role_ids]
        roles_l.extend(accepted)
        flags = _core.APP_DECLINE_GPU if declines_gpu_agents(app, config) else 0
        count = len(req.instance_ids)
        c0 = len(cons_l) // _CF
        if app.constraints:
            parsed = cons.parse_all(app)
            if cons.region_aware(parsed):
                flags |= _core.APP_REGION_AWARE
            placed = cons.placed_instances(app, req.existing)
            if placed and not attributes and any(
                    not cons.is_builtin_field(c.field) for c in parsed):
                attributes = agents.attributes
                if agent_attributes:
                    attributes = {**agent_attributes, **attributes}
            extra = earlier.get(app.id, ())
            for c in parsed:
                f = fields.field(c.field)
                op, arg = cons.encode(c)
                e0 = len(exist_vals)
                if op != cons.OP_TABLE:
                    vid = fields.value_id
                    exist_vals.extend([
                        vid(f, cons.instance_value(inst, c.field, attributes)) for inst in placed])
                    for agent_id, times in extra:
                        i = index_of_agent.get(agent_id)
                        v = fields.agent_ids[f][i] if i is not None else -1
                        exist_vals.extend([v] * times)
                else:
                    statics.append((len(cons_l) // _CF, f, c))
                cons_l.extend((op, f, arg, 0, e0, len(exist_vals)))
        # The order of these fields is _core.A_COUNT ... A_CONS_END.
        int_l.extend((count, strategy_of(app, config), flags, app.instances, r0, len(roles_l),
                      len(ports_l), len(ports_l) + nports, c0, len(cons_l) // _CF))
        ports_l.extend(ports)
        total_instances += count
        total_ports += count * nports

    # Phase 2: static constraint tables, over every value id known in this pass.
    tables = bytearray()
    cache: dict[tuple[int, str, str | None], int] = {}
    for ci, f, c in statics:
        key = (f, c.operator, c.value)
        off = cache.get(key)
        if off is None:
            off = cache[key] = len(tables)
            tables += cons.table(c, fields.values[f], fields.ids[f])
        cons_l[ci * _CF + _core.C_TABLE] = off
    field_card = array("i", [len(v) for v in fields.values])
    flat_ids: list[int] = []
    for ids in fields.agent_ids:
        flat_ids.extend(ids)  # lists and ranges extend a list in C
    field_values = array("i", flat_ids)

    veto = bytearray()
    if config.veto is not None:
        veto = bytearray(na * n)
        check = config.veto
        for a, req in enumerate(requests):
            for i, o in enumerate(offers):
                if not check(o, req.app):
                    veto[a * n + i] = 1

    out_agent = array("i", bytes(4 * total_instances))
    out_ports = array("i", bytes(4 * total_ports))
    out_summary = array("i", bytes(4 * _SF * na))
    _core.place(
        agents.free, agents.total, agents.agent_role, agents.agent_flags, agents.port_off,
        agents.port_lo, agents.port_hi, field_values, field_card, array("q", res_l),
        array("i", int_l), array("i", roles_l), array("i", ports_l), array("i", cons_l),
        tables, exist_vals, veto, config.seed, out_agent, out_ports, out_summary,
    )
    _collect(requests, nports_of, agents, out_agent, out_ports, out_summary, result,
             earlier if more_rounds else None)


def _collect(
    requests: list[PlacementRequest],
    nports_of: list[int],
    agents: _Agents,
    out_agent: array,
    out_ports: array,
    out_summary: array,
    result: MatchResult,
    earlier: dict[str, list[tuple[str, int]]] | None,
) -> None:
    """Turn the core's arrays into placements, misses, summaries and updated offers."""
    offers = agents.offers
    chosen_all = out_agent.tolist()
    ports_all = out_ports.tolist()
    touched = set(chosen_all)
    touched.discard(-1)
    agent_id = {i: offers[i].agent_id for i in touched}
    hostname = {i: offers[i].hostname for i in touched}
    region = {i: offers[i].region for i in touched}
    zone = {i: offers[i].zone for i in touched}
    taken: dict[int, list[int]] = {}  # agent index -> host ports taken there
    add_all = result.placements.extend
    make = _new_placement
    inst = 0
    pbase = 0
    for a, req in enumerate(requests):
        app_id = req.app.id
        ids = req.instance_ids
        count = len(ids)
        nports = nports_of[a]
        chosen = chosen_all[inst:inst + count]
        placed = count
        if -1 in chosen:  # the core stops an app at its first miss
            placed = chosen.index(-1)
            del chosen[placed:]
            result.unplaced.setdefault(app_id, []).extend(ids[placed:])
            if app_id not in result.rejects:
                row = out_summary[a * _SF:(a + 1) * _SF]
                result.rejects[app_id] = RejectSummary(processed=row[0], declined=list(row[1:]))
        if nports:
            flat = ports_all[pbase:pbase + placed * nports]
            if nports == 1:
                ports: list[tuple[int, ...]] = [(p,) for p in flat]
            else:
                ports = [tuple(flat[k:k + nports]) for k in range(0, len(flat), nports)]
            for i, pt in zip(chosen, ports, strict=True):
                t = taken.get(i)
                if t is None:
                    taken[i] = list(pt)
                else:
                    t.extend(pt)
        else:
            ports = [()] * placed
        add_all(map(make, ids, repeat(app_id, placed), map(agent_id.__getitem__, chosen),
                    map(hostname.__getitem__, chosen), map(region.__getitem__, chosen),
                    map(zone.__getitem__, chosen), ports))
        if earlier is not None and chosen:
            earlier.setdefault(app_id, []).extend(
                (agent_id[i], times) for i, times in Counter(chosen).items())
        inst += count
        pbase += count * nports
    # The offers after the pass: only touched agents change.
    free = agents.free
    n = agents.n
    new_offers = result.offers
    replace = msgspec.structs.replace
    for i in touched:
        res = Resources(cpus=free[i], mem=free[n + i], disk=free[2 * n + i],
                        gpus=free[3 * n + i], ports=free[4 * n + i])
        ports_taken = taken.get(i)
        if ports_taken:
            ports_taken.sort()
            new_offers[i] = replace(offers[i], free=res,
                                    port_ranges=_subtract_ports(agents, i, ports_taken))
        else:
            new_offers[i] = replace(offers[i], free=res)


def _subtract_ports(agents: _Agents, i: int, ports: list[int]) -> list[PortRange]:
    """Agent i's free ranges minus `ports` (sorted, all inside those ranges)."""
    r0, r1 = agents.port_off[i], agents.port_off[i + 1]
    if r1 == r0 + 1 and len(ports) == 1:  # the common case: one range, one port
        b, e, p = agents.port_lo[r0], agents.port_hi[r0], ports[0]
        if p == b:
            return [PortRange(b + 1, e)] if b < e else []
        if p == e:
            return [PortRange(b, e - 1)]
        return [PortRange(b, p - 1), PortRange(p + 1, e)]
    out: list[PortRange] = []
    add = out.append
    x = 0
    for r in range(r0, r1):
        b, e = agents.port_lo[r], agents.port_hi[r]
        y = bisect_right(ports, e, x)
        for p in ports[x:y]:
            if p > b:
                add(PortRange(b, p - 1))
            b = p + 1
        if b <= e:
            add(PortRange(b, e))
        x = y
    return out


__all__ = [
    "BACKEND", "MatchConfig", "MatchResult", "Placement", "PlacementRequest", "RejectSummary",
    "accepted_roles", "demand_of", "host_port_requests", "match", "strategy_of",
]
