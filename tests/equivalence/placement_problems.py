"""Random placement problems in the core's array form, and an independent oracle.

`generate` builds every array `place` takes from a `random.Random`, so a
hypothesis-drawn integer seed (plus a few drawn sizes, which shrink well)
describes a whole problem.  The port space is tiny on purpose so specific
ports collide and agents run out of ports.

`oracle` is the placement rule written the slow, obvious way: for every
instance it evaluates every agent, computes the constraint operators from the
list of placed values (not from counters), and picks the smallest key.  The
reference core must agree with it exactly; that is what proves the reference's
candidate list and bucket pruning never change an answer.
"""

from __future__ import annotations

import importlib
import os
import random
from array import array
from collections import Counter
from dataclasses import dataclass

from hypothesis import HealthCheck, settings

import marathon._core_ref as ref

PURE = os.environ.get("MARATHON_PUREPYTHON", "") in ("1", "true", "yes")
reference = ref
try:
    compiled = importlib.import_module("marathon._core")
except ImportError:  # pragma: no cover - depends on the build
    compiled = None

# Derandomized and fast: the same cases on every run, thousands of them in seconds.
EQUIVALENCE = settings(
    derandomize=True,
    deadline=None,
    max_examples=1500,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)

PORT_LO = 1000
PORT_HI = 1017
MASK64 = (1 << 64) - 1


@dataclass
class Problem:
    free: array
    total: array
    agent_role: array
    agent_flags: array
    port_off: array
    port_lo: array
    port_hi: array
    field_values: array
    field_card: array
    app_res: array
    app_int: array
    app_roles: array
    app_ports: array
    cons_int: array
    tables: bytes
    exist_vals: array
    veto: bytes
    seed: int

    @property
    def n_apps(self) -> int:
        return len(self.app_int) // ref.APP_FIELDS

    def sizes(self) -> tuple[int, int]:
        """Output sizes (clamped, so corrupted problems do not allocate gigabytes)."""
        inst = ports = 0
        for a in range(self.n_apps):
            b = a * ref.APP_FIELDS
            c = max(0, self.app_int[b + ref.A_COUNT])
            p0 = self.app_int[b + ref.A_PORTS]
            p1 = min(self.app_int[b + ref.A_PORTS_END], len(self.app_ports))
            inst += c
            ports += c * max(0, p1 - p0)
        return inst, ports

    def run(self, core) -> dict:
        """Run `core.place` on fresh copies; everything it returns or writes."""
        inst, ports = self.sizes()
        free = array("q", self.free)
        out_agent = array("i", [7] * inst)  # garbage: the core must write every entry
        out_ports = array("i", [7] * ports)
        out_summary = array("i", [7] * (self.n_apps * ref.SUMMARY_FIELDS))
        placed = core.place(
            free, self.total, self.agent_role, self.agent_flags, self.port_off, self.port_lo,
            self.port_hi, self.field_values, self.field_card, self.app_res, self.app_int,
            self.app_roles, self.app_ports, self.cons_int, self.tables, self.exist_vals,
            self.veto, self.seed, out_agent, out_ports, out_summary)
        return {"placed": placed, "free": list(free), "agent": list(out_agent),
                "ports": list(out_ports), "summary": list(out_summary)}


def generate(rnd: random.Random, n_agents: int, n_apps: int, big: bool = False,
             crowded: bool = False) -> Problem:
    """A random problem.  `big`: large machines, many instances per app, wide port
    ranges.  `crowded`: most agents fit and share one constraint value, so the best
    candidates all become infeasible together and the core must look further."""
    n = n_agents
    n_roles = 3
    # Agents: a few machine shapes (so bucket bounds differ), random usage.
    shapes = [(1000, 1024, 100, 0), (2000, 4096, 1000, 0), (4000, 8192, 1000, 2),
              (8000, 16384, 0, 0), (0, 512, 10, 0)]
    if big:
        shapes = [(64000, 262144, 10000, 0), (32000, 131072, 10000, 1)]
    cols: list[list[int]] = [[], [], [], [], []]
    tcols: list[list[int]] = [[], [], [], [], []]
    for _ in range(n):
        shape = rnd.choice(shapes)
        for k in range(4):
            t = shape[k]
            if rnd.random() < 0.05:
                t = rnd.randint(0, 5000)  # odd machines
            f = t if rnd.random() < 0.4 else rnd.randint(0, t) if t else 0
            if rnd.random() < 0.03:
                f = t + rnd.randint(1, 50)  # a driver reporting more free than total
            cols[k].append(f)
            tcols[k].append(t)
        cols[4].append(rnd.randint(0, 99))  # ignored: the core counts the ranges
        tcols[4].append(0)
    free = array("q", [v for c in cols for v in c])
    total = array("q", [v for c in tcols for v in c])
    agent_role = array("i", [rnd.randrange(n_roles) for _ in range(n)])
    agent_flags = array("i", [
        (ref.AGENT_DRAINING if rnd.random() < 0.12 else 0)
        | (ref.AGENT_REMOTE if rnd.random() < 0.12 else 0) for _ in range(n)])
    port_off = array("i", [0])
    port_lo, port_hi = array("i"), array("i")
    for _ in range(n):
        p = PORT_LO + rnd.randint(0, 3)
        for _ in range(rnd.choice([0, 1, 1, 1, 2, 3])):
            if p > PORT_HI:
                break
            e = min(PORT_HI, p + rnd.randint(0, 6))
            port_lo.append(p)
            port_hi.append(e)
            p = e + rnd.randint(2, 4)
        port_off.append(len(port_lo))
    if big and rnd.random() < 0.5:
        # Wide ranges so many instances with ports fit on one agent.
        port_lo = array("i", [31000] * n)
        port_hi = array("i", [31000 + rnd.randint(0, 300) for _ in range(n)])
        port_off = array("i", range(n + 1))
    # Constraint fields: value ids per agent; some values only placed instances have.
    nf = rnd.randint(0, 3)
    agent_card = [rnd.randint(1, 5) for _ in range(nf)]
    field_card = array("i", [c + rnd.randint(0, 2) for c in agent_card])
    if crowded:
        nf = 1
        agent_card = [rnd.randint(2, 4)]
        field_card = array("i", agent_card)
        for k in range(4):  # plenty of room everywhere
            for i in range(n):
                free[k * n + i] = total[k * n + i] = 100000
    field_values = array("i")
    for f in range(nf):
        if crowded:
            field_values.extend(0 if rnd.random() < 0.85 else rnd.randrange(1, agent_card[f])
                                for _ in range(n))
            continue
        field_values.extend(
            -1 if rnd.random() < 0.15 else rnd.randrange(agent_card[f]) for _ in range(n))
    # Apps.
    app_res, app_int = array("q"), array("i")
    app_roles, app_ports, cons_int, exist_vals = array("i"), array("i"), array("i"), array("i")
    tables = bytearray()
    for _ in range(n_apps):
        count = rnd.randint(0, 150 if big else 12 if crowded else 7)
        nports = rnd.choice([0, 0, 1, 1, 2, 3])
        ports = [0 if rnd.random() < 0.6 else rnd.randint(PORT_LO - 1, PORT_HI + 1)
                 for _ in range(nports)]
        if big:
            dem = [rnd.choice([100, 500, 1000, 2000]), rnd.choice([128, 1024, 4096]),
                   rnd.choice([0, 100]), 0]
        else:
            dem = [rnd.choice([0, 100, 500, 1000, 2000]), rnd.choice([0, 128, 512, 2048]),
                   rnd.choice([0, 0, 50, 200]), rnd.choice([0, 0, 0, 1])]
        app_res.extend(dem + [nports])
        roles = [r for r in range(n_roles) if rnd.random() < 0.6]
        if crowded:
            roles = list(range(n_roles))
            nports = 0
            app_res[-1] = 0
            ports = []
        c0 = len(cons_int) // ref.CONS_FIELDS
        for _ in range(rnd.randint(0, 3) if nf else 0):
            op = rnd.randrange(ref.N_OPS)
            if crowded:
                op = rnd.choice([ref.OP_UNIQUE, ref.OP_MAX_PER, ref.OP_GROUP_BY_TARGET,
                                 ref.OP_GROUP_BY])
            f = rnd.randrange(nf)
            arg = 0
            t_off = 0
            if op == ref.OP_TABLE:
                t_off = len(tables)
                tables += bytes(rnd.random() < 0.7 for _ in range(field_card[f] + 1))
            elif op == ref.OP_MAX_PER:
                arg = rnd.randint(0, 3)
            elif op == ref.OP_GROUP_BY:
                arg = rnd.randint(0, 3)
            elif op == ref.OP_GROUP_BY_TARGET:
                arg = rnd.randint(1, 4)
            e0 = len(exist_vals)
            if op != ref.OP_TABLE:
                exist_vals.extend(rnd.randint(-1, field_card[f] - 1)
                                  for _ in range(rnd.choice([0, 0, 1, 2, 5])))
            cons_int.extend((op, f, arg, t_off, e0, len(exist_vals)))
        flags = (ref.APP_REGION_AWARE if rnd.random() < 0.3 else 0) | (
            ref.APP_DECLINE_GPU if rnd.random() < 0.3 else 0)
        app_int.extend((count, rnd.randrange(3), flags, rnd.randint(0, 10), len(app_roles),
                        len(app_roles) + len(roles), len(app_ports), len(app_ports) + nports,
                        c0, len(cons_int) // ref.CONS_FIELDS))
        app_roles.extend(roles)
        app_ports.extend(ports)
    veto = bytes(rnd.random() < 0.2 for _ in range(n_apps * n)) if rnd.random() < 0.2 else b""
    if crowded:
        agent_role = array("i", bytes(4 * n))
        agent_flags = array("i", bytes(4 * n))
        veto = b""
    return Problem(free, total, agent_role, agent_flags, port_off, port_lo, port_hi,
                   field_values, field_card, app_res, app_int, app_roles, app_ports, cons_int,
                   bytes(tables), exist_vals, veto, rnd.getrandbits(64))


# -- the oracle ---------------------------------------------------------------------------


def _splitmix64(state: int) -> tuple[int, int]:
    state = (state + 0x9E3779B97F4A7C15) & MASK64
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return state, z ^ (z >> 31)


def _dynamic_ok(op: int, arg: int, target: int, placed: list[int], v: int) -> bool:
    """One dynamic operator, from the list of placed value ids (-1: missing)."""
    if v < 0:
        return False
    counts = Counter(placed)
    mine = counts.get(v, 0)
    if op == ref.OP_UNIQUE:
        return mine == 0
    if op == ref.OP_CLUSTER:
        return not placed or placed[0] == v
    if op == ref.OP_MAX_PER:
        return mine < arg
    if op == ref.OP_GROUP_BY:
        return mine == 0 or (len(counts) >= arg and mine == min(counts.values()))
    per, rem = divmod(target, arg)
    if mine > 0:
        extra = sum(max(0, c - per) for c in counts.values())
        return mine < per or (mine == per and extra < rem)
    return len(counts) < arg


class _App:
    """The oracle's view of one app while it is being placed."""

    def __init__(self, p: Problem, a: int, free: list[int], avail: list[set[int]],
                 rank: dict[int, int], inv: list[list[int]]) -> None:
        b = a * ref.APP_FIELDS
        self.p, self.a, self.n = p, a, len(p.agent_role)
        self.free, self.avail, self.rank, self.inv = free, avail, rank, inv
        self.count = p.app_int[b + ref.A_COUNT]
        self.strategy = p.app_int[b + ref.A_STRATEGY]
        self.flags = p.app_int[b + ref.A_FLAGS]
        self.target = p.app_int[b + ref.A_TARGET]
        self.roles = set(p.app_roles[p.app_int[b + ref.A_ROLES]:p.app_int[b + ref.A_ROLES_END]])
        self.ports = list(p.app_ports[p.app_int[b + ref.A_PORTS]:p.app_int[b + ref.A_PORTS_END]])
        self.d = list(p.app_res[a * 5:a * 5 + 5])
        self.cons = []
        for c in range(p.app_int[b + ref.A_CONS], p.app_int[b + ref.A_CONS_END]):
            op, f, arg, t, e0, e1 = p.cons_int[c * 6:c * 6 + 6]
            self.cons.append([op, f, arg, t, list(p.exist_vals[e0:e1])])

    def value(self, f: int, i: int) -> int:
        return self.p.field_values[f * self.n + i]

    def reason(self, i: int) -> int:
        """The first funnel reason agent i fails now, or -1 if it is feasible."""
        p, n, free, d = self.p, self.n, self.free, self.d
        if p.agent_role[i] not in self.roles:
            return ref.REASON_ROLE
        if p.veto and p.veto[self.a * n + i]:
            return ref.REASON_CONSTRAINT
        if p.agent_flags[i] & ref.AGENT_REMOTE and not self.flags & ref.APP_REGION_AWARE:
            return ref.REASON_CONSTRAINT
        for op, f, arg, t, placed in self.cons:
            v = self.value(f, i)
            if op == ref.OP_TABLE:
                if not p.tables[t + (v if v >= 0 else p.field_card[f])]:
                    return ref.REASON_CONSTRAINT
            elif not _dynamic_ok(op, arg, self.target, placed, v):
                return ref.REASON_CONSTRAINT
        if p.agent_flags[i] & ref.AGENT_DRAINING:
            return ref.REASON_MAINTENANCE
        for k in range(4):
            if free[k * n + i] < d[k]:
                return ref.REASON_CPUS + k
        specific = [x for x in self.ports if x > 0]
        if (free[4 * n + i] < len(self.ports) or len(set(specific)) != len(specific)
                or not all(x in self.avail[i] for x in specific)):
            return ref.REASON_PORTS
        if self.flags & ref.APP_DECLINE_GPU and free[3 * n + i] > 0:
            return ref.REASON_SCARCE
        return -1

    def key(self, i: int) -> int:
        if self.strategy == ref.STRATEGY_FIRSTFIT:
            return self.rank[i]
        n = self.n
        score = sum((self.free[k * n + i] - self.d[k]) * self.inv[i][k] for k in range(4))
        if self.strategy == ref.STRATEGY_BINPACK:
            return score * n + self.rank[i]
        return (ref.SCORE_MAX - score) * n + self.rank[i]


def oracle(p: Problem) -> dict:
    """Every instance to the feasible agent with the smallest key, found the slow way."""
    n = len(p.agent_role)
    free = list(p.free)
    avail: list[set[int]] = []
    for i in range(n):
        ports: set[int] = set()
        for r in range(p.port_off[i], p.port_off[i + 1]):
            ports.update(range(p.port_lo[r], p.port_hi[r] + 1))
        avail.append(ports)
        free[4 * n + i] = len(ports)
    rng = p.seed & MASK64
    order = list(range(n))
    for i in range(n - 1, 0, -1):
        rng, z = _splitmix64(rng)
        j = z % (i + 1)
        order[i], order[j] = order[j], order[i]
    rank = {a: r for r, a in enumerate(order)}
    inv = []
    for i in range(n):
        caps = [max(p.total[k * n + i], free[k * n + i]) for k in range(4)]
        inv.append([(1 << 32) // c if c > 0 else 0 for c in caps])
    inst, nports_total = p.sizes()
    out_agent = [0] * inst
    out_ports = [0] * nports_total
    summary = [0] * (p.n_apps * ref.SUMMARY_FIELDS)
    placed_count = 0
    ib = pb = 0
    for a in range(p.n_apps):
        app = _App(p, a, free, avail, rank, inv)
        nports = len(app.ports)
        for j in range(app.count):
            feasible = [i for i in range(n) if app.reason(i) < 0]
            if not feasible:
                sb = a * ref.SUMMARY_FIELDS
                summary[sb] = n
                for i in range(n):
                    summary[sb + 1 + app.reason(i)] += 1
                for jj in range(j, app.count):
                    out_agent[ib + jj] = -1
                    for q in range(nports):
                        out_ports[pb + jj * nports + q] = 0
                break
            i = min(feasible, key=app.key)
            for k in range(4):
                free[k * n + i] -= app.d[k]
            for q, x in enumerate(app.ports):
                if x > 0:
                    avail[i].remove(x)
                    free[4 * n + i] -= 1
                    out_ports[pb + j * nports + q] = x
            for q, x in enumerate(app.ports):
                if x == 0:
                    rng, z = _splitmix64(rng)
                    pick = sorted(avail[i])[z % len(avail[i])]
                    avail[i].remove(pick)
                    free[4 * n + i] -= 1
                    out_ports[pb + j * nports + q] = pick
            for con in app.cons:
                if con[0] != ref.OP_TABLE:
                    con[4].append(app.value(con[1], i))
            out_agent[ib + j] = i
            placed_count += 1
        ib += app.count
        pb += app.count * nports
    return {"placed": placed_count, "free": free, "agent": out_agent, "ports": out_ports,
            "summary": summary}
