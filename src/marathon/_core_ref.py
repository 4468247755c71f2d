"""The offer-matching core in plain Python: the readable spec of `_core.pyx`.

Primitive arrays in, placements out.  This module imports nothing from
`marathon`; `marathon.matching` is its only user and turns the models into the
arrays described below once per pass.  `_core.pyx` implements the same
function with the same checks, the same exceptions and the same tie-breaking;
the equivalence suite compares the two bit for bit.  Change this file first,
then port the change.

What one call does (`place`)
----------------------------
Apps are served in order; the instances of one app are placed one at a time.
Each instance goes to the *feasible* agent with the smallest *key*:

* feasible = the agent passes, for this app, every check of the funnel below
  (role, constraints, maintenance, cpus, mem, disk, gpus, ports, scarce GPUs),
  evaluated against the agent's free resources *now* (earlier placements of
  this call have been subtracted) and against the app's placed instances
  *now* (existing ones plus those placed earlier in this call);
* key (unique per agent, integers only):
    score    = sum over cpus, mem, disk, gpus of
               (free - demand) * floor(2**32 / total)   (0 when total == 0)
               i.e. the agent's normalised free capacity after the placement;
    binpack  : key = score * n + rank          (tightest fit first)
    spread   : key = (SCORE_MAX - score) * n + rank   (least allocated first)
    firstfit : key = rank                      (first agent in seeded order)
  where `rank` is the agent's position in a permutation of the agents drawn
  from `seed` (Fisher-Yates over splitmix64).

When no agent is feasible the instance (and every later instance of the same
app, which would meet the same state) is a miss; the app's summary row then
gets, for every agent, the *first* funnel reason it fails.

How it is fast without changing the answer
------------------------------------------
Agents are kept in NB buckets by their normalised free capacity
S = sum of free * floor(2**32 / total) over cpus, mem, disk, gpus (updated on
every placement).  An agent's score for an app is S - D, where
D = sum of demand * floor(2**32 / total) lies between the app's Dmin and Dmax
(computed from the smallest and largest inverse totals of the pass), so every
key in a bucket has a lower bound.  Bin-pack scans buckets from the fullest
agents up, spread from the emptiest down, and both stop at the first bucket
whose bound exceeds everything they still need (exact, not sampled), and skip
buckets whose (upper-bounded) free resources cannot hold the app.  First fit
scans agents in rank order and stops at the first feasible one.

Before a scan, a dynamic constraint that accepts no value at all (every
GROUP_BY group full, every UNIQUE value used) ends the app at once.  A scan
finds the best feasible agent and also remembers the K
best keys among agents that pass every check except the dynamic constraints
(UNIQUE, CLUSTER without value, MAX_PER, GROUP_BY).  Those checks are the only
ones that can turn an agent from infeasible back to feasible during an app's
placement (GROUP_BY); everything else either never changes (role, static
constraints, maintenance, scarce GPUs) or only gets worse (resources, ports).
So as long as every agent outside the remembered list has a key >= the list's
bound T, the first remembered agent that is feasible now *is* the argmin, and
the next instance needs no scan.  An agent that received an instance is
re-keyed and re-inserted (or dropped if its new key exceeds T).  When the list
has nothing feasible left, a fresh scan runs.  With bin-packing the chosen
agent only gets better, so 100,000 identical instances cost one scan per
agent that fills up.

Host ports
----------
`app_ports` lists, per app, one entry per host port in port-index order:
0 = any free port, >0 = exactly that port.  Specific ports are taken first,
then each dynamic port is the r-th free port of the agent (ascending order),
with r = next_random() % number_of_free_ports: a seeded pseudo-random pick,
like Marathon's random choice.

Arrays (all flat; "n" agents, "A" apps, "C" constraints)
---------------------------------------------------------
free         int64[5n]   in/out, dimension-major: free[k*n + i] for k = cpus (milli),
                         mem, disk (MiB), gpus, ports; free >= 0.  The ports entry
                         is set from the agent's ranges on entry (the input value
                         is ignored) and is the remaining count on return.
total        int64[5n]   capacity, same layout; scoring uses max(total, free)
agent_role   int32[n]    role id of the agent's resources
agent_flags  int32[n]    AGENT_DRAINING | AGENT_REMOTE
port_off     int32[n+1]  agent i's free ranges are port_lo/hi[port_off[i]:port_off[i+1]],
port_lo/hi   int32[R]    sorted, disjoint, within 0..65535
field_values int32[F*n]  value id of field f on agent i (-1: the agent lacks it)
field_card   int32[F]    number of value ids of field f
app_res      int64[5A]   demand per instance
app_int      int32[A*APP_FIELDS]  see A_* below
app_roles    int32[]     accepted role ids, sliced by A_ROLES..A_ROLES_END
app_ports    int32[]     host-port requests, sliced by A_PORTS..A_PORTS_END
cons_int     int32[C*CONS_FIELDS] see C_* below; an app owns cons A_CONS..A_CONS_END
tables       uint8[]     OP_TABLE: accept flag per value id, then one for "missing"
exist_vals   int32[]     per constraint, the value ids of the app's placed
                         instances (-1 missing), in placement order
veto         uint8[0 or A*n]  1 = a plugin vetoed agent i for app a
out_agent    int32[sum count]          agent per instance, -1 = miss
out_ports    int32[sum count*nports]   host ports per instance (port-index order)
out_summary  int32[A*SUMMARY_FIELDS]   [processed, declined per reason...]
Returns the number of instances placed.
"""

from __future__ import annotations

from bisect import insort

# Reject reasons, in funnel order (the values of marathon.models.resources.RejectReason).
REASON_ROLE = 0
REASON_CONSTRAINT = 1
REASON_RESERVATION = 2
REASON_MAINTENANCE = 3
REASON_CPUS = 4
REASON_MEM = 5
REASON_DISK = 6
REASON_GPUS = 7
REASON_PORTS = 8
REASON_SCARCE = 9
N_REASONS = 10
SUMMARY_FIELDS = 1 + N_REASONS

STRATEGY_BINPACK = 0
STRATEGY_SPREAD = 1
STRATEGY_FIRSTFIT = 2

# Constraint operations the core evaluates (marathon.constraints encodes them).
OP_TABLE = 0  # static: accept iff tables[C_TABLE + value] (last slot: missing)
OP_UNIQUE = 1  # no placed instance has the agent's value
OP_CLUSTER = 2  # no placed instance yet, or the first placed one has the agent's value
OP_MAX_PER = 3  # fewer than C_ARG placed instances have the agent's value
OP_GROUP_BY = 4  # Marathon 1.9 rule, C_ARG = minimum number of groups
OP_GROUP_BY_TARGET = 5  # Marathon 1.10 rule, C_ARG = number of groups G > 0
N_OPS = 6

AGENT_DRAINING = 1
AGENT_REMOTE = 2  # outside the local region (fault domain)

APP_REGION_AWARE = 1  # the app has @region/@zone constraints: remote agents allowed
APP_DECLINE_GPU = 2  # GPU scheduling "restricted": avoid agents with free GPUs

DIMS = 5
A_COUNT, A_STRATEGY, A_FLAGS, A_TARGET = 0, 1, 2, 3
A_ROLES, A_ROLES_END, A_PORTS, A_PORTS_END, A_CONS, A_CONS_END = 4, 5, 6, 7, 8, 9
APP_FIELDS = 10
C_OP, C_FIELD, C_ARG, C_TABLE, C_EXIST, C_EXIST_END = 0, 1, 2, 3, 4, 5
CONS_FIELDS = 6

MAX_AGENTS = (1 << 24) - 1
MAX_PORT = 65535
SCORE_MAX = 4 << 32
KEY_INF = 1 << 62
N_BUCKETS = 1024
BUCKET_WIDTH = SCORE_MAX // N_BUCKETS + 1
# Remembered candidates per scan: enough for the app's remaining instances plus
# some slack for dynamic-constraint rejections, bounded to keep inserts cheap.
K_SLACK = 4
K_MAX = 64

_MASK64 = (1 << 64) - 1


def _splitmix64(state: int) -> tuple[int, int]:
    """One step of splitmix64: (new state, output)."""
    state = (state + 0x9E3779B97F4A7C15) & _MASK64
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return state, z ^ (z >> 31)


def _check(free, total, agent_role, agent_flags, port_off, port_lo, port_hi, field_values,
           field_card, app_res, app_int, app_roles, app_ports, cons_int, tables, exist_vals,
           veto, out_agent, out_ports, out_summary) -> int:
    """Validate shapes and ranges; returns the number of agents.  Raises ValueError."""
    n = len(agent_role)
    if len(agent_flags) != n:
        raise ValueError("agent_role and agent_flags must have one entry per agent")
    if n > MAX_AGENTS:
        raise ValueError("too many agents")
    if len(free) != DIMS * n or len(total) != DIMS * n:
        raise ValueError("free and total must hold 5 entries per agent")
    if len(port_off) != n + 1 or port_off[0] != 0:
        raise ValueError("port_off must hold n+1 offsets starting at 0")
    if port_off[n] != len(port_lo) or len(port_hi) != len(port_lo):
        raise ValueError("port_off must end at the number of port ranges")
    for i in range(n):
        lo_i, hi_i = port_off[i], port_off[i + 1]
        if hi_i < lo_i:
            raise ValueError("port_off must be non-decreasing")
        prev = -1
        for r in range(lo_i, hi_i):
            if port_lo[r] <= prev or port_hi[r] < port_lo[r] or port_hi[r] > MAX_PORT:
                raise ValueError("port ranges must be sorted, disjoint and within 0..65535")
            prev = port_hi[r]
        for k in range(4):
            if free[k * n + i] < 0:
                raise ValueError("free resources must be non-negative")
    nf = len(field_card)
    if len(field_values) != nf * n:
        raise ValueError("field_values must hold one entry per field and agent")
    for f in range(nf):
        if field_card[f] < 0:
            raise ValueError("field_card must be non-negative")
        for i in range(n):
            v = field_values[f * n + i]
            if v < -1 or v >= field_card[f]:
                raise ValueError("field value id out of range")
    na = len(app_int) // APP_FIELDS
    if len(app_int) != APP_FIELDS * na or len(app_res) != DIMS * na:
        raise ValueError("app_int and app_res must describe the same apps")
    nc = len(cons_int) // CONS_FIELDS
    if len(cons_int) != CONS_FIELDS * nc:
        raise ValueError("cons_int must hold CONS_FIELDS entries per constraint")
    if len(veto) != 0 and len(veto) != na * n:
        raise ValueError("veto must be empty or hold one entry per app and agent")
    instances = 0
    ports_out = 0
    for a in range(na):
        b = a * APP_FIELDS
        count = app_int[b + A_COUNT]
        if count < 0:
            raise ValueError("instance count must be non-negative")
        if app_int[b + A_STRATEGY] < 0 or app_int[b + A_STRATEGY] > STRATEGY_FIRSTFIT:
            raise ValueError("unknown strategy")
        if app_int[b + A_TARGET] < 0:
            raise ValueError("target instances must be non-negative")
        for k in range(DIMS):
            if app_res[a * DIMS + k] < 0:
                raise ValueError("demand must be non-negative")
        r0, r1 = app_int[b + A_ROLES], app_int[b + A_ROLES_END]
        if r0 < 0 or r1 < r0 or r1 > len(app_roles):
            raise ValueError("app role slice out of range")
        p0, p1 = app_int[b + A_PORTS], app_int[b + A_PORTS_END]
        if p0 < 0 or p1 < p0 or p1 > len(app_ports):
            raise ValueError("app port slice out of range")
        if app_res[a * DIMS + 4] != p1 - p0:
            raise ValueError("port demand must equal the number of host-port requests")
        for q in range(p0, p1):
            if app_ports[q] < 0 or app_ports[q] > MAX_PORT:
                raise ValueError("host port out of range")
        c0, c1 = app_int[b + A_CONS], app_int[b + A_CONS_END]
        if c0 < 0 or c1 < c0 or c1 > nc:
            raise ValueError("app constraint slice out of range")
        for c in range(c0, c1):
            cb = c * CONS_FIELDS
            op, f = cons_int[cb + C_OP], cons_int[cb + C_FIELD]
            if op < 0 or op >= N_OPS:
                raise ValueError("unknown constraint operation")
            if f < 0 or f >= nf:
                raise ValueError("constraint field out of range")
            if op == OP_TABLE:
                t = cons_int[cb + C_TABLE]
                if t < 0 or t + field_card[f] + 1 > len(tables):
                    raise ValueError("constraint table out of range")
            if op == OP_GROUP_BY_TARGET and cons_int[cb + C_ARG] <= 0:
                raise ValueError("GROUP_BY target needs a positive number of groups")
            e0, e1 = cons_int[cb + C_EXIST], cons_int[cb + C_EXIST_END]
            if e0 < 0 or e1 < e0 or e1 > len(exist_vals):
                raise ValueError("constraint placed-instance slice out of range")
            for e in range(e0, e1):
                if exist_vals[e] < -1 or exist_vals[e] >= field_card[f]:
                    raise ValueError("field value id out of range")
        instances += count
        ports_out += count * (p1 - p0)
    if len(out_agent) < instances or len(out_ports) < ports_out:
        raise ValueError("output arrays are too small")
    if len(out_summary) < na * SUMMARY_FIELDS:
        raise ValueError("output arrays are too small")
    return n


class _Dyn:
    """State of one dynamic constraint: placed-instance counts per value group."""

    __slots__ = ("op", "field", "arg", "card", "counts", "hist", "groups", "mincount",
                 "extra", "per", "rem", "first")

    def __init__(self, op: int, field: int, arg: int, card: int, target: int, capacity: int):
        self.op = op
        self.field = field
        self.arg = arg
        self.card = card
        self.counts = [0] * (card + 1)  # slot `card` is the "missing value" group
        self.hist = [0] * (capacity + 2)  # number of groups with a given count
        self.groups = 0
        self.mincount = 0
        self.extra = 0  # instances above `per`, summed over groups (GROUP_BY target)
        self.per = target // arg if op == OP_GROUP_BY_TARGET else 0
        self.rem = target % arg if op == OP_GROUP_BY_TARGET else 0
        self.first = -2  # CLUSTER: slot of the first placed instance, -2 = none yet

    def add(self, v: int) -> None:
        slot = self.card if v < 0 else v
        c = self.counts[slot]
        self.counts[slot] = c + 1
        if self.first == -2:
            self.first = slot
        if c == 0:
            self.groups += 1
            self.mincount = 1
        else:
            self.hist[c] -= 1
            if c == self.mincount and self.hist[c] == 0:
                self.mincount = c + 1
        self.hist[c + 1] += 1
        if c >= self.per:
            self.extra += 1

    def accepts_any(self) -> bool:
        """Could any value be accepted now?  (False: no agent can pass; a true miss.)"""
        for v in range(self.card):
            if self.accepts(v):
                return True
        return False

    def accepts(self, v: int) -> bool:
        if v < 0:
            return False  # only UNLIKE accepts a missing value, and UNLIKE is static
        op = self.op
        c = self.counts[v]
        if op == OP_UNIQUE:
            return c == 0
        if op == OP_CLUSTER:
            return self.first == -2 or self.first == v
        if op == OP_MAX_PER:
            return c < self.arg
        if op == OP_GROUP_BY:
            return c == 0 or (self.groups >= self.arg and c == self.mincount)
        # OP_GROUP_BY_TARGET
        if c > 0:
            return c < self.per or (c == self.per and self.extra < self.rem)
        return self.groups < self.arg


def place(free, total, agent_role, agent_flags, port_off, port_lo, port_hi, field_values,
          field_card, app_res, app_int, app_roles, app_ports, cons_int, tables, exist_vals,
          veto, seed, out_agent, out_ports, out_summary) -> int:
    """Place every app's instances; see the module docstring for the arrays."""
    n = _check(free, total, agent_role, agent_flags, port_off, port_lo, port_hi, field_values,
               field_card, app_res, app_int, app_roles, app_ports, cons_int, tables, exist_vals,
               veto, out_agent, out_ports, out_summary)
    ps = _Pass(n, free, total, agent_role, agent_flags, port_off, port_lo, port_hi,
               field_values, field_card, tables, veto, int(seed) & _MASK64)
    placed_total = 0
    inst_base = 0
    port_base = 0
    for a in range(len(app_int) // APP_FIELDS):
        b = a * APP_FIELDS
        count = app_int[b + A_COUNT]
        for k in range(SUMMARY_FIELDS):
            out_summary[a * SUMMARY_FIELDS + k] = 0
        ps.begin_app(a, app_int, app_res, app_roles, app_ports, cons_int, exist_vals)
        if count > 0:
            placed_total += ps.place_app(count, out_agent, inst_base, out_ports, port_base,
                                         out_summary, a * SUMMARY_FIELDS)
        inst_base += count
        port_base += count * ps.nports
    return placed_total


class _Pass:
    """The state of one call: agents, buckets, taken ports, and the app being placed."""

    def __init__(self, n, free, total, agent_role, agent_flags, port_off, port_lo, port_hi,
                 field_values, field_card, tables, veto, rng) -> None:
        self.n = n
        self.free = free
        self.agent_role = agent_role
        self.agent_flags = agent_flags
        self.port_off, self.port_lo, self.port_hi = port_off, port_lo, port_hi
        self.field_values = field_values
        self.field_card = field_card
        self.tables = tables
        self.veto = veto
        for i in range(n):  # the ranges are the truth for free ports
            count = 0
            for r in range(port_off[i], port_off[i + 1]):
                count += port_hi[r] - port_lo[r] + 1
            free[4 * n + i] = count
        # Seeded tie-break order: rank[i] = position of agent i in a random permutation.
        order = list(range(n))
        for i in range(n - 1, 0, -1):
            rng, z = _splitmix64(rng)
            j = z % (i + 1)
            order[i], order[j] = order[j], order[i]
        self.rng = rng
        self.order = order
        self.rank = [0] * n
        for r in range(n):
            self.rank[order[r]] = r
        # Scores use integer inverses of the capacity: floor(2**32 / max(total, free)).
        self.inv = inv = [0] * (4 * n)
        self.maxinv = [0] * 4
        self.mininv = [KEY_INF] * 4
        for i in range(n):
            for k in range(4):
                t = max(total[k * n + i], free[k * n + i])
                v = (1 << 32) // t if t > 0 else 0
                inv[i * 4 + k] = v
                self.maxinv[k] = max(self.maxinv[k], v)
                self.mininv[k] = min(self.mininv[k], v)
        self.taken: list[list[int]] = [[] for _ in range(n)]  # ports taken in this call, sorted
        # Buckets by normalised free capacity: doubly linked lists of agents.
        self.head = [-1] * N_BUCKETS
        self.nxt = [-1] * n
        self.prv = [-1] * n
        self.bucket_of = [0] * n
        # An upper bound of each bucket's free resources (cpus..ports), so a scan
        # can skip buckets where nothing fits; exact again after a full visit.
        self.bucket_max = [0] * (N_BUCKETS * DIMS)
        for i in range(n):
            self.link(i)

    # -- agents -------------------------------------------------------------------------

    def link(self, i: int) -> None:
        n, free, inv = self.n, self.free, self.inv
        s_i = 0
        for k in range(4):
            s_i += free[k * n + i] * inv[i * 4 + k]
        b = s_i // BUCKET_WIDTH
        self.bucket_of[i] = b
        bm = self.bucket_max
        for k in range(DIMS):
            if free[k * n + i] > bm[b * DIMS + k]:
                bm[b * DIMS + k] = free[k * n + i]
        self.prv[i] = -1
        self.nxt[i] = self.head[b]
        if self.head[b] >= 0:
            self.prv[self.head[b]] = i
        self.head[b] = i

    def unlink(self, i: int) -> None:
        b = self.bucket_of[i]
        if self.prv[i] >= 0:
            self.nxt[self.prv[i]] = self.nxt[i]
        else:
            self.head[b] = self.nxt[i]
        if self.nxt[i] >= 0:
            self.prv[self.nxt[i]] = self.prv[i]

    def port_free(self, i: int, p: int) -> bool:
        port_off, port_lo, port_hi = self.port_off, self.port_lo, self.port_hi
        lo_i, hi_i = port_off[i], port_off[i + 1]
        while lo_i < hi_i:  # binary search for the range that could hold p
            mid = (lo_i + hi_i) // 2
            if port_hi[mid] < p:
                lo_i = mid + 1
            else:
                hi_i = mid
        if lo_i == port_off[i + 1] or port_lo[lo_i] > p:
            return False
        return p not in self.taken[i]

    def rth_free_port(self, i: int, r: int) -> int:
        """The r-th free port of agent i, in ascending order."""
        t = self.taken[i]
        ti = 0
        for q in range(self.port_off[i], self.port_off[i + 1]):
            lo, hi = self.port_lo[q], self.port_hi[q]
            while ti < len(t) and t[ti] < lo:
                ti += 1
            t0 = ti
            while ti < len(t) and t[ti] <= hi:
                ti += 1
            size = hi - lo + 1 - (ti - t0)
            if r < size:
                p = lo + r
                for x in range(t0, ti):
                    if t[x] <= p:
                        p += 1
                return p
            r -= size
        raise AssertionError("no free port")  # callers check the free count first

    # -- the app being placed --------------------------------------------------------------

    def begin_app(self, a, app_int, app_res, app_roles, app_ports, cons_int, exist_vals) -> None:
        b = a * APP_FIELDS
        count = app_int[b + A_COUNT]
        self.strategy = app_int[b + A_STRATEGY]
        self.flags = app_int[b + A_FLAGS]
        target = app_int[b + A_TARGET]
        self.roles = [app_roles[r] for r in range(app_int[b + A_ROLES], app_int[b + A_ROLES_END])]
        self.ports = [app_ports[q] for q in range(app_int[b + A_PORTS], app_int[b + A_PORTS_END])]
        self.nports = len(self.ports)
        self.d = [app_res[a * DIMS + k] for k in range(DIMS)]
        self.specific = [p for p in self.ports if p > 0]
        self.ports_ok = len(set(self.specific)) == len(self.specific)  # a port asked twice never fits
        self.tabs: list[tuple[int, int, int]] = []  # (field, table offset, missing slot)
        self.dyns: list[_Dyn] = []
        for c in range(app_int[b + A_CONS], app_int[b + A_CONS_END]):
            cb = c * CONS_FIELDS
            op, f = cons_int[cb + C_OP], cons_int[cb + C_FIELD]
            e0, e1 = cons_int[cb + C_EXIST], cons_int[cb + C_EXIST_END]
            if op == OP_TABLE:
                self.tabs.append((f, cons_int[cb + C_TABLE], self.field_card[f]))
                continue
            dyn = _Dyn(op, f, cons_int[cb + C_ARG], self.field_card[f], target, (e1 - e0) + count)
            for e in range(e0, e1):
                dyn.add(exist_vals[e])
            self.dyns.append(dyn)
        self.vbase = a * self.n if len(self.veto) else -1

    def static_reason(self, i: int) -> int:
        """First failing funnel reason among the checks fixed for this app, or -1."""
        if self.agent_role[i] not in self.roles:
            return REASON_ROLE
        if self.vbase >= 0 and self.veto[self.vbase + i]:
            return REASON_CONSTRAINT
        ag_flags = self.agent_flags[i]
        if ag_flags & AGENT_REMOTE and not self.flags & APP_REGION_AWARE:
            return REASON_CONSTRAINT
        for f, t, miss in self.tabs:
            v = self.field_values[f * self.n + i]
            if not self.tables[t + (v if v >= 0 else miss)]:
                return REASON_CONSTRAINT
        if ag_flags & AGENT_DRAINING:
            return REASON_MAINTENANCE
        return -1

    def scarce(self, i: int) -> bool:
        return bool(self.flags & APP_DECLINE_GPU) and self.free[3 * self.n + i] > 0

    def dynamic_ok(self, i: int) -> bool:
        for dyn in self.dyns:
            if not dyn.accepts(self.field_values[dyn.field * self.n + i]):
                return False
        return True

    def resource_reason(self, i: int) -> int:
        """First failing resource reason (cpus..ports), or -1."""
        n, free, d = self.n, self.free, self.d
        for k in range(4):
            if free[k * n + i] < d[k]:
                return REASON_CPUS + k
        if free[4 * n + i] < self.nports or not self.ports_ok:
            return REASON_PORTS
        for p in self.specific:
            if not self.port_free(i, p):
                return REASON_PORTS
        return -1

    def key_of(self, i: int) -> int:
        if self.strategy == STRATEGY_FIRSTFIT:
            return self.rank[i]
        n, free, d, inv = self.n, self.free, self.d, self.inv
        score = 0
        for k in range(4):
            score += (free[k * n + i] - d[k]) * inv[i * 4 + k]
        if self.strategy == STRATEGY_BINPACK:
            return score * n + self.rank[i]
        return (SCORE_MAX - score) * n + self.rank[i]

    def scan(self, k_want: int) -> tuple[int, list[tuple[int, int]], int]:
        """Best feasible agent, plus the k_want best keys among agents that pass
        everything but the dynamic constraints, and the bound for all others."""
        best, best_key = -1, KEY_INF
        kept: list[tuple[int, int]] = []  # (key, agent), ascending
        seen = 0
        stopped = False
        for dyn in self.dyns:
            if not dyn.accepts_any():
                return -1, kept, -1  # e.g. every GROUP_BY group is full: nothing to scan

        def visit(i: int) -> None:
            nonlocal best, best_key, seen
            if self.resource_reason(i) >= 0 or self.static_reason(i) >= 0 or self.scarce(i):
                return
            key = self.key_of(i)
            seen += 1
            if k_want > 0 and (len(kept) < k_want or key < kept[-1][0]):
                if len(kept) == k_want:
                    kept.pop()
                insort(kept, (key, i))
            if key < best_key and self.dynamic_ok(i):
                best, best_key = i, key

        if self.strategy == STRATEGY_FIRSTFIT:
            for i in self.order:
                visit(i)
                if best >= 0 and len(kept) == k_want:
                    stopped = True  # later agents have larger keys
                    break
        else:
            binpack = self.strategy == STRATEGY_BINPACK
            dmax = dmin = 0
            for k in range(4):
                dmax += self.d[k] * self.maxinv[k]
                dmin += self.d[k] * self.mininv[k]
            for bi in range(N_BUCKETS):
                b = bi if binpack else N_BUCKETS - 1 - bi
                i = self.head[b]
                if i < 0:
                    continue
                if binpack:
                    lower = (b * BUCKET_WIDTH - dmax) * self.n
                else:
                    lower = (SCORE_MAX - (b + 1) * BUCKET_WIDTH + dmin) * self.n
                if lower > best_key and (
                        k_want == 0 or (len(kept) == k_want and lower > kept[-1][0])):
                    stopped = True  # no agent from here on can change the answer
                    break
                bm = self.bucket_max
                if any(bm[b * DIMS + k] < self.d[k] for k in range(4)) or (
                        bm[b * DIMS + 4] < self.nports):
                    continue  # nothing in this bucket fits
                top = [0] * DIMS
                while i >= 0:
                    visit(i)
                    for k in range(DIMS):
                        top[k] = max(top[k], self.free[k * self.n + i])
                    i = self.nxt[i]
                bm[b * DIMS:(b + 1) * DIMS] = top
        if not stopped and seen <= k_want:
            bound = KEY_INF  # every candidate is remembered
        else:
            bound = kept[-1][0] if kept else -1
        return best, kept, bound

    def explain(self, out_summary, sb: int) -> None:
        """Count, for every agent, the first funnel reason it fails."""
        out_summary[sb] = self.n
        for i in range(self.n):
            reason = self.static_reason(i)
            if reason == REASON_MAINTENANCE or reason < 0:
                if not self.dynamic_ok(i):
                    reason = REASON_CONSTRAINT
            if reason < 0:
                reason = self.resource_reason(i)
            if reason < 0 and self.scarce(i):
                reason = REASON_SCARCE
            if reason >= 0:
                out_summary[sb + 1 + reason] += 1

    def place_app(self, count, out_agent, ib, out_ports, pb, out_summary, sb) -> int:
        """Place `count` instances of the current app; returns how many were placed."""
        n, free, d, ports, nports = self.n, self.free, self.d, self.ports, self.nports
        kept: list[tuple[int, int]] = []
        bound = KEY_INF
        have_list = False
        placed = 0
        for j in range(count):
            chosen = -1
            if have_list:
                x = 0
                while x < len(kept):
                    i = kept[x][1]
                    if self.resource_reason(i) >= 0:
                        del kept[x]  # resources only shrink: gone for this app
                        continue
                    if self.dynamic_ok(i):
                        chosen = i
                        break
                    x += 1
                if chosen < 0 and bound == KEY_INF:
                    have_list = False  # every candidate was remembered: a true miss
                    chosen = -2
            if chosen == -1:
                remaining = count - j
                k_want = min(remaining - 1 + K_SLACK, K_MAX) if remaining > 1 else 0
                chosen, kept, bound = self.scan(k_want)
                have_list = k_want > 0
            if chosen < 0:
                self.explain(out_summary, sb)
                for jj in range(j, count):
                    out_agent[ib + jj] = -1
                    for q in range(nports):
                        out_ports[pb + jj * nports + q] = 0
                break
            # Place one instance on `chosen`: resources, specific ports, then dynamic ones.
            i = chosen
            for k in range(4):
                free[k * n + i] -= d[k]
            ob = pb + j * nports
            for q in range(nports):
                p = ports[q]
                if p > 0:
                    insort(self.taken[i], p)
                    free[4 * n + i] -= 1
                    out_ports[ob + q] = p
            for q in range(nports):
                if ports[q] == 0:
                    self.rng, z = _splitmix64(self.rng)
                    p = self.rth_free_port(i, z % free[4 * n + i])
                    insort(self.taken[i], p)
                    free[4 * n + i] -= 1
                    out_ports[ob + q] = p
            self.unlink(i)
            self.link(i)
            for dyn in self.dyns:
                dyn.add(self.field_values[dyn.field * n + i])
            out_agent[ib + j] = i
            placed += 1
            if have_list:
                for x in range(len(kept)):
                    if kept[x][1] == i:
                        del kept[x]
                        break
                if self.resource_reason(i) < 0:
                    key = self.key_of(i)
                    if key <= bound:
                        insort(kept, (key, i))
                        if len(kept) > K_MAX:
                            bound = kept.pop()[0]  # the largest key becomes the bound
        return placed
