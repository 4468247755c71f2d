# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False
"""The compiled offer-matching core: `_core_ref.py` in C, bit for bit.

`_core_ref.py` is the specification (read its docstring for the algorithm and
the arrays); this module implements the same `place` function with the same
input checks, the same exceptions and the same tie-breaking.  The main loop
runs without the GIL and without Python objects: typed memoryviews in,
C arrays inside, memoryviews out.  The one difference is memory layout: each
agent's scan state is copied into one `Agent` struct (a visit then touches one
or two cache lines, not a dozen columns) and the free resources are written
back at the end.
"""

from libc.stdint cimport int32_t, int64_t, uint64_t
from libc.stdlib cimport calloc, free as c_free, malloc

# -- the same public constants as _core_ref.py ------------------------------------------

cdef enum:
    _R_ROLE = 0
    _R_CONSTRAINT = 1
    _R_RESERVATION = 2
    _R_MAINTENANCE = 3
    _R_CPUS = 4
    _R_MEM = 5
    _R_DISK = 6
    _R_GPUS = 7
    _R_PORTS = 8
    _R_SCARCE = 9
    _N_REASONS = 10
    _SUMMARY_FIELDS = 11
    _BINPACK = 0
    _SPREAD = 1
    _FIRSTFIT = 2
    _OP_TABLE = 0
    _OP_UNIQUE = 1
    _OP_CLUSTER = 2
    _OP_MAX_PER = 3
    _OP_GROUP_BY = 4
    _OP_GROUP_BY_TARGET = 5
    _N_OPS = 6
    _AGENT_DRAINING = 1
    _AGENT_REMOTE = 2
    _APP_REGION_AWARE = 1
    _APP_DECLINE_GPU = 2
    _DIMS = 5
    _A_COUNT = 0
    _A_STRATEGY = 1
    _A_FLAGS = 2
    _A_TARGET = 3
    _A_ROLES = 4
    _A_ROLES_END = 5
    _A_PORTS = 6
    _A_PORTS_END = 7
    _A_CONS = 8
    _A_CONS_END = 9
    _APP_FIELDS = 10
    _C_OP = 0
    _C_FIELD = 1
    _C_ARG = 2
    _C_TABLE = 3
    _C_EXIST = 4
    _C_EXIST_END = 5
    _CONS_FIELDS = 6
    _MAX_PORT = 65535
    _K_SLACK = 4
    _K_MAX = 64
    _N_BUCKETS = 1024

cdef int64_t _MAX_AGENTS = (1 << 24) - 1
cdef int64_t _SCORE_MAX = (<int64_t>4) << 32
cdef int64_t _KEY_INF = (<int64_t>1) << 62
cdef int64_t _BUCKET_WIDTH = _SCORE_MAX // _N_BUCKETS + 1

REASON_ROLE = _R_ROLE
REASON_CONSTRAINT = _R_CONSTRAINT
REASON_RESERVATION = _R_RESERVATION
REASON_MAINTENANCE = _R_MAINTENANCE
REASON_CPUS = _R_CPUS
REASON_MEM = _R_MEM
REASON_DISK = _R_DISK
REASON_GPUS = _R_GPUS
REASON_PORTS = _R_PORTS
REASON_SCARCE = _R_SCARCE
N_REASONS = _N_REASONS
SUMMARY_FIELDS = _SUMMARY_FIELDS
STRATEGY_BINPACK = _BINPACK
STRATEGY_SPREAD = _SPREAD
STRATEGY_FIRSTFIT = _FIRSTFIT
OP_TABLE = _OP_TABLE
OP_UNIQUE = _OP_UNIQUE
OP_CLUSTER = _OP_CLUSTER
OP_MAX_PER = _OP_MAX_PER
OP_GROUP_BY = _OP_GROUP_BY
OP_GROUP_BY_TARGET = _OP_GROUP_BY_TARGET
N_OPS = _N_OPS
AGENT_DRAINING = _AGENT_DRAINING
AGENT_REMOTE = _AGENT_REMOTE
APP_REGION_AWARE = _APP_REGION_AWARE
APP_DECLINE_GPU = _APP_DECLINE_GPU
DIMS = _DIMS
A_COUNT, A_STRATEGY, A_FLAGS, A_TARGET = _A_COUNT, _A_STRATEGY, _A_FLAGS, _A_TARGET
A_ROLES, A_ROLES_END, A_PORTS, A_PORTS_END = _A_ROLES, _A_ROLES_END, _A_PORTS, _A_PORTS_END
A_CONS, A_CONS_END = _A_CONS, _A_CONS_END
APP_FIELDS = _APP_FIELDS
C_OP, C_FIELD, C_ARG, C_TABLE = _C_OP, _C_FIELD, _C_ARG, _C_TABLE
C_EXIST, C_EXIST_END = _C_EXIST, _C_EXIST_END
CONS_FIELDS = _CONS_FIELDS
MAX_AGENTS = _MAX_AGENTS
MAX_PORT = _MAX_PORT
SCORE_MAX = _SCORE_MAX
KEY_INF = _KEY_INF
K_SLACK = _K_SLACK
K_MAX = _K_MAX
N_BUCKETS = _N_BUCKETS
BUCKET_WIDTH = _BUCKET_WIDTH


# -- input checks (the same order and messages as _core_ref._check) ----------------------

cdef Py_ssize_t _check(
    const int64_t[::1] free, const int64_t[::1] total, const int32_t[::1] agent_role,
    const int32_t[::1] agent_flags,
    const int32_t[::1] port_off, const int32_t[::1] port_lo, const int32_t[::1] port_hi,
    const int32_t[::1] field_values, const int32_t[::1] field_card,
    const int64_t[::1] app_res, const int32_t[::1] app_int, const int32_t[::1] app_roles,
    const int32_t[::1] app_ports, const int32_t[::1] cons_int,
    const unsigned char[::1] tables, const int32_t[::1] exist_vals,
    const unsigned char[::1] veto, Py_ssize_t n_out_agent, Py_ssize_t n_out_ports,
    Py_ssize_t n_out_summary,
) except -1:
    cdef Py_ssize_t n = agent_role.shape[0]
    cdef Py_ssize_t i, r, k, f, a, b, c, cb, q, e
    cdef int64_t count, prev, instances, ports_out
    cdef int32_t lo_i, hi_i, v, r0, r1, p0, p1, c0, c1, op, fld, t, e0, e1
    if agent_flags.shape[0] != n:
        raise ValueError("agent_role and agent_flags must have one entry per agent")
    if n > _MAX_AGENTS:
        raise ValueError("too many agents")
    if free.shape[0] != _DIMS * n or total.shape[0] != _DIMS * n:
        raise ValueError("free and total must hold 5 entries per agent")
    if port_off.shape[0] != n + 1 or port_off[0] != 0:
        raise ValueError("port_off must hold n+1 offsets starting at 0")
    if port_off[n] != port_lo.shape[0] or port_hi.shape[0] != port_lo.shape[0]:
        raise ValueError("port_off must end at the number of port ranges")
    for i in range(n):
        lo_i = port_off[i]
        hi_i = port_off[i + 1]
        if hi_i < lo_i:
            raise ValueError("port_off must be non-decreasing")
        prev = -1
        for r in range(lo_i, hi_i):
            if port_lo[r] <= prev or port_hi[r] < port_lo[r] or port_hi[r] > _MAX_PORT:
                raise ValueError("port ranges must be sorted, disjoint and within 0..65535")
            prev = port_hi[r]
        for k in range(4):
            if free[k * n + i] < 0:
                raise ValueError("free resources must be non-negative")
    cdef Py_ssize_t nf = field_card.shape[0]
    if field_values.shape[0] != nf * n:
        raise ValueError("field_values must hold one entry per field and agent")
    for f in range(nf):
        if field_card[f] < 0:
            raise ValueError("field_card must be non-negative")
        for i in range(n):
            v = field_values[f * n + i]
            if v < -1 or v >= field_card[f]:
                raise ValueError("field value id out of range")
    cdef Py_ssize_t na = app_int.shape[0] // _APP_FIELDS
    if app_int.shape[0] != _APP_FIELDS * na or app_res.shape[0] != _DIMS * na:
        raise ValueError("app_int and app_res must describe the same apps")
    cdef Py_ssize_t nc = cons_int.shape[0] // _CONS_FIELDS
    if cons_int.shape[0] != _CONS_FIELDS * nc:
        raise ValueError("cons_int must hold CONS_FIELDS entries per constraint")
    if veto.shape[0] != 0 and veto.shape[0] != na * n:
        raise ValueError("veto must be empty or hold one entry per app and agent")
    instances = 0
    ports_out = 0
    for a in range(na):
        b = a * _APP_FIELDS
        count = app_int[b + _A_COUNT]
        if count < 0:
            raise ValueError("instance count must be non-negative")
        if app_int[b + _A_STRATEGY] < 0 or app_int[b + _A_STRATEGY] > _FIRSTFIT:
            raise ValueError("unknown strategy")
        if app_int[b + _A_TARGET] < 0:
            raise ValueError("target instances must be non-negative")
        for k in range(_DIMS):
            if app_res[a * _DIMS + k] < 0:
                raise ValueError("demand must be non-negative")
        r0 = app_int[b + _A_ROLES]
        r1 = app_int[b + _A_ROLES_END]
        if r0 < 0 or r1 < r0 or r1 > app_roles.shape[0]:
            raise ValueError("app role slice out of range")
        p0 = app_int[b + _A_PORTS]
        p1 = app_int[b + _A_PORTS_END]
        if p0 < 0 or p1 < p0 or p1 > app_ports.shape[0]:
            raise ValueError("app port slice out of range")
        if app_res[a * _DIMS + 4] != p1 - p0:
            raise ValueError("port demand must equal the number of host-port requests")
        for q in range(p0, p1):
            if app_ports[q] < 0 or app_ports[q] > _MAX_PORT:
                raise ValueError("host port out of range")
        c0 = app_int[b + _A_CONS]
        c1 = app_int[b + _A_CONS_END]
        if c0 < 0 or c1 < c0 or c1 > nc:
            raise ValueError("app constraint slice out of range")
        for c in range(c0, c1):
            cb = c * _CONS_FIELDS
            op = cons_int[cb + _C_OP]
            fld = cons_int[cb + _C_FIELD]
            if op < 0 or op >= _N_OPS:
                raise ValueError("unknown constraint operation")
            if fld < 0 or fld >= nf:
                raise ValueError("constraint field out of range")
            if op == _OP_TABLE:
                t = cons_int[cb + _C_TABLE]
                if t < 0 or t + <Py_ssize_t>field_card[fld] + 1 > tables.shape[0]:
                    raise ValueError("constraint table out of range")
            if op == _OP_GROUP_BY_TARGET and cons_int[cb + _C_ARG] <= 0:
                raise ValueError("GROUP_BY target needs a positive number of groups")
            e0 = cons_int[cb + _C_EXIST]
            e1 = cons_int[cb + _C_EXIST_END]
            if e0 < 0 or e1 < e0 or e1 > exist_vals.shape[0]:
                raise ValueError("constraint placed-instance slice out of range")
            for e in range(e0, e1):
                if exist_vals[e] < -1 or exist_vals[e] >= field_card[fld]:
                    raise ValueError("field value id out of range")
        instances += count
        ports_out += count * (p1 - p0)
    if n_out_agent < instances or n_out_ports < ports_out:
        raise ValueError("output arrays are too small")
    if n_out_summary < na * _SUMMARY_FIELDS:
        raise ValueError("output arrays are too small")
    return n


# -- the algorithm ------------------------------------------------------------------------

cdef struct Dyn:
    int32_t op
    int32_t field
    int32_t arg
    int32_t card
    int32_t* counts  # card + 1 slots; the last is the "missing value" group
    int32_t* hist
    int64_t groups
    int64_t mincount
    int64_t extra
    int64_t per
    int64_t rem
    int64_t first

cdef struct Agent:
    # Everything a scan reads about one agent, in one place: a visit touches one
    # or two cache lines instead of a dozen scattered columns.
    int64_t f[5]  # free cpus, mem, disk, gpus, ports (written back at the end)
    int64_t inv[4]  # floor(2**32 / max(total, free)) per scored dimension
    int32_t rank
    int32_t role
    int32_t flags
    int32_t nxt  # bucket list
    int32_t prv
    int32_t bucket

cdef struct Tab:
    int32_t field
    int32_t off
    int32_t miss

cdef struct Ctx:
    Py_ssize_t n
    int64_t* free
    const int64_t* total
    Agent* ag
    const int32_t* port_off
    const int32_t* port_lo
    const int32_t* port_hi
    const int32_t* field_values
    const unsigned char* tables
    const unsigned char* veto  # NULL when no plugin vetoes
    int64_t maxinv[4]
    int64_t mininv[4]
    int32_t* head  # buckets by normalised free capacity (doubly linked lists)
    int64_t* bucket_max  # upper bound of each bucket's free resources (5 per bucket)
    int32_t* order
    int32_t* taken_head
    int32_t* pool_next
    int32_t* pool_port
    Py_ssize_t pool_used
    uint64_t rng
    # the app being placed
    Py_ssize_t vbase
    int32_t strategy
    int32_t flags
    const int32_t* roles
    Py_ssize_t nroles
    const int32_t* ports
    Py_ssize_t nports
    int32_t* specific
    Py_ssize_t nspecific
    bint ports_ok
    int64_t d[5]
    Tab* tabs
    Py_ssize_t ntabs
    Dyn* dyns
    Py_ssize_t ndyns


cdef inline uint64_t _splitmix64(uint64_t* state) noexcept nogil:
    state[0] += <uint64_t>0x9E3779B97F4A7C15
    cdef uint64_t z = state[0]
    z = (z ^ (z >> 30)) * <uint64_t>0xBF58476D1CE4E5B9
    z = (z ^ (z >> 27)) * <uint64_t>0x94D049BB133111EB
    return z ^ (z >> 31)


cdef inline void _dyn_add(Dyn* dyn, int32_t v) noexcept nogil:
    cdef int32_t slot = dyn.card if v < 0 else v
    cdef int64_t c = dyn.counts[slot]
    dyn.counts[slot] = <int32_t>(c + 1)
    if dyn.first == -2:
        dyn.first = slot
    if c == 0:
        dyn.groups += 1
        dyn.mincount = 1
    else:
        dyn.hist[c] -= 1
        if c == dyn.mincount and dyn.hist[c] == 0:
            dyn.mincount = c + 1
    dyn.hist[c + 1] += 1
    if c >= dyn.per:
        dyn.extra += 1


cdef inline bint _dyn_accepts(Dyn* dyn, int32_t v) noexcept nogil:
    if v < 0:
        return False
    cdef int64_t c = dyn.counts[v]
    cdef int32_t op = dyn.op
    if op == _OP_UNIQUE:
        return c == 0
    if op == _OP_CLUSTER:
        return dyn.first == -2 or dyn.first == v
    if op == _OP_MAX_PER:
        return c < dyn.arg
    if op == _OP_GROUP_BY:
        return c == 0 or (dyn.groups >= dyn.arg and c == dyn.mincount)
    if c > 0:
        return c < dyn.per or (c == dyn.per and dyn.extra < dyn.rem)
    return dyn.groups < dyn.arg


cdef inline bint _port_free(Ctx* x, Py_ssize_t i, int32_t p) noexcept nogil:
    cdef Py_ssize_t lo = x.port_off[i]
    cdef Py_ssize_t hi = x.port_off[i + 1]
    cdef Py_ssize_t mid
    while lo < hi:
        mid = (lo + hi) // 2
        if x.port_hi[mid] < p:
            lo = mid + 1
        else:
            hi = mid
    if lo == x.port_off[i + 1] or x.port_lo[lo] > p:
        return False
    cdef int32_t t = x.taken_head[i]
    while t >= 0 and x.pool_port[t] < p:
        t = x.pool_next[t]
    return not (t >= 0 and x.pool_port[t] == p)


cdef inline void _take_port(Ctx* x, Py_ssize_t i, int32_t p) noexcept nogil:
    cdef int32_t node = <int32_t>x.pool_used
    x.pool_used += 1
    x.pool_port[node] = p
    cdef int32_t prev = -1
    cdef int32_t t = x.taken_head[i]
    while t >= 0 and x.pool_port[t] < p:
        prev = t
        t = x.pool_next[t]
    x.pool_next[node] = t
    if prev < 0:
        x.taken_head[i] = node
    else:
        x.pool_next[prev] = node


cdef inline int32_t _rth_free_port(Ctx* x, Py_ssize_t i, int64_t r) noexcept nogil:
    cdef int32_t t = x.taken_head[i]
    cdef int32_t t0, u
    cdef int64_t lo, hi, size, p, inside
    cdef Py_ssize_t q
    for q in range(x.port_off[i], x.port_off[i + 1]):
        lo = x.port_lo[q]
        hi = x.port_hi[q]
        while t >= 0 and x.pool_port[t] < lo:
            t = x.pool_next[t]
        t0 = t
        inside = 0
        while t >= 0 and x.pool_port[t] <= hi:
            inside += 1
            t = x.pool_next[t]
        size = hi - lo + 1 - inside
        if r < size:
            p = lo + r
            u = t0
            while u != t:
                if x.pool_port[u] <= p:
                    p += 1
                u = x.pool_next[u]
            return <int32_t>p
        r -= size
    return -1  # unreachable: callers check the free count first


cdef bint _dyn_accepts_any(Dyn* dyn) noexcept nogil:
    cdef int32_t v
    for v in range(dyn.card):
        if _dyn_accepts(dyn, v):
            return True
    return False


cdef inline int _static_reason(Ctx* x, Py_ssize_t i) noexcept nogil:
    cdef Agent* ag = &x.ag[i]
    cdef int32_t role = ag.role
    cdef Py_ssize_t r
    cdef bint ok = False
    for r in range(x.nroles):
        if x.roles[r] == role:
            ok = True
            break
    if not ok:
        return _R_ROLE
    if x.veto != NULL and x.veto[x.vbase + i]:
        return _R_CONSTRAINT
    cdef int32_t ag_flags = ag.flags
    if (ag_flags & _AGENT_REMOTE) and not (x.flags & _APP_REGION_AWARE):
        return _R_CONSTRAINT
    cdef int32_t v
    for r in range(x.ntabs):
        v = x.field_values[x.tabs[r].field * x.n + i]
        if not x.tables[x.tabs[r].off + (v if v >= 0 else x.tabs[r].miss)]:
            return _R_CONSTRAINT
    if ag_flags & _AGENT_DRAINING:
        return _R_MAINTENANCE
    return -1


cdef inline bint _scarce(Ctx* x, Py_ssize_t i) noexcept nogil:
    return (x.flags & _APP_DECLINE_GPU) != 0 and x.ag[i].f[3] > 0


cdef inline bint _dynamic_ok(Ctx* x, Py_ssize_t i) noexcept nogil:
    cdef Py_ssize_t r
    for r in range(x.ndyns):
        if not _dyn_accepts(&x.dyns[r], x.field_values[x.dyns[r].field * x.n + i]):
            return False
    return True


cdef inline int _resource_reason(Ctx* x, Py_ssize_t i) noexcept nogil:
    cdef int64_t* f = x.ag[i].f
    if f[0] < x.d[0]:
        return _R_CPUS
    if f[1] < x.d[1]:
        return _R_MEM
    if f[2] < x.d[2]:
        return _R_DISK
    if f[3] < x.d[3]:
        return _R_GPUS
    if f[4] < x.nports or not x.ports_ok:
        return _R_PORTS
    cdef Py_ssize_t s
    for s in range(x.nspecific):
        if not _port_free(x, i, x.specific[s]):
            return _R_PORTS
    return -1


cdef inline int64_t _key_of(Ctx* x, Py_ssize_t i) noexcept nogil:
    cdef Agent* ag = &x.ag[i]
    if x.strategy == _FIRSTFIT:
        return ag.rank
    cdef int64_t score = ((ag.f[0] - x.d[0]) * ag.inv[0] + (ag.f[1] - x.d[1]) * ag.inv[1]
                          + (ag.f[2] - x.d[2]) * ag.inv[2] + (ag.f[3] - x.d[3]) * ag.inv[3])
    if x.strategy == _BINPACK:
        return score * x.n + ag.rank
    return (_SCORE_MAX - score) * x.n + ag.rank


cdef inline void _kept_insert(int64_t* kkey, int32_t* kagent, Py_ssize_t* m,
                              int64_t key, int32_t agent) noexcept nogil:
    cdef Py_ssize_t pos = m[0]
    while pos > 0 and kkey[pos - 1] > key:
        kkey[pos] = kkey[pos - 1]
        kagent[pos] = kagent[pos - 1]
        pos -= 1
    kkey[pos] = key
    kagent[pos] = agent
    m[0] += 1


cdef inline void _kept_delete(int64_t* kkey, int32_t* kagent, Py_ssize_t* m,
                              Py_ssize_t pos) noexcept nogil:
    cdef Py_ssize_t y
    for y in range(pos, m[0] - 1):
        kkey[y] = kkey[y + 1]
        kagent[y] = kagent[y + 1]
    m[0] -= 1


cdef inline void _link(Ctx* x, Py_ssize_t i) noexcept nogil:
    cdef Agent* ag = &x.ag[i]
    cdef int64_t s_i = 0
    cdef int k
    for k in range(4):
        s_i += ag.f[k] * ag.inv[k]
    cdef int32_t b = <int32_t>(s_i // _BUCKET_WIDTH)
    ag.bucket = b
    cdef int64_t* bm = x.bucket_max + b * _DIMS
    for k in range(_DIMS):
        if ag.f[k] > bm[k]:
            bm[k] = ag.f[k]
    ag.prv = -1
    ag.nxt = x.head[b]
    if x.head[b] >= 0:
        x.ag[x.head[b]].prv = <int32_t>i
    x.head[b] = <int32_t>i


cdef inline void _unlink(Ctx* x, Py_ssize_t i) noexcept nogil:
    cdef Agent* ag = &x.ag[i]
    if ag.prv >= 0:
        x.ag[ag.prv].nxt = ag.nxt
    else:
        x.head[ag.bucket] = ag.nxt
    if ag.nxt >= 0:
        x.ag[ag.nxt].prv = ag.prv


cdef inline void _visit(Ctx* x, Py_ssize_t i, Py_ssize_t k_want, int64_t* kkey,
                        int32_t* kagent, Py_ssize_t* m, Py_ssize_t* best,
                        int64_t* best_key, Py_ssize_t* seen) noexcept nogil:
    if _resource_reason(x, i) >= 0 or _static_reason(x, i) >= 0 or _scarce(x, i):
        return
    cdef int64_t key = _key_of(x, i)
    seen[0] += 1
    if k_want > 0 and (m[0] < k_want or key < kkey[m[0] - 1]):
        if m[0] == k_want:
            m[0] -= 1
        _kept_insert(kkey, kagent, m, key, <int32_t>i)
    if key < best_key[0] and _dynamic_ok(x, i):
        best[0] = i
        best_key[0] = key


cdef Py_ssize_t _scan(Ctx* x, Py_ssize_t k_want, int64_t* kkey, int32_t* kagent,
                      Py_ssize_t* m, int64_t* bound) noexcept nogil:
    """Best feasible agent (or -1), and the k_want best keys among agents that pass
    everything but the dynamic constraints, with the bound for the others."""
    cdef Py_ssize_t best = -1
    cdef int64_t best_key = _KEY_INF
    cdef Py_ssize_t seen = 0
    cdef bint stopped = False
    cdef Py_ssize_t idx, bi, b
    cdef int32_t i
    cdef int64_t dmax = 0, dmin = 0, lower
    cdef int64_t top[5]
    cdef int64_t* bm
    cdef int k
    m[0] = 0
    for k in range(x.ndyns):
        if not _dyn_accepts_any(&x.dyns[k]):
            bound[0] = -1
            return -1
    if x.strategy == _FIRSTFIT:
        for idx in range(x.n):
            _visit(x, x.order[idx], k_want, kkey, kagent, m, &best, &best_key, &seen)
            if best >= 0 and m[0] == k_want:
                stopped = True
                break
    else:
        for k in range(4):
            dmax += x.d[k] * x.maxinv[k]
            dmin += x.d[k] * x.mininv[k]
        for bi in range(_N_BUCKETS):
            b = bi if x.strategy == _BINPACK else _N_BUCKETS - 1 - bi
            i = x.head[b]
            if i < 0:
                continue
            if x.strategy == _BINPACK:
                lower = (b * _BUCKET_WIDTH - dmax) * x.n
            else:
                lower = (_SCORE_MAX - (b + 1) * _BUCKET_WIDTH + dmin) * x.n
            if lower > best_key and (k_want == 0 or (m[0] == k_want and lower > kkey[m[0] - 1])):
                stopped = True
                break
            bm = x.bucket_max + b * _DIMS
            if (bm[0] < x.d[0] or bm[1] < x.d[1] or bm[2] < x.d[2] or bm[3] < x.d[3]
                    or bm[4] < x.nports):
                continue
            for k in range(_DIMS):
                top[k] = 0
            while i >= 0:
                _visit(x, i, k_want, kkey, kagent, m, &best, &best_key, &seen)
                for k in range(_DIMS):
                    if x.ag[i].f[k] > top[k]:
                        top[k] = x.ag[i].f[k]
                i = x.ag[i].nxt
            for k in range(_DIMS):
                bm[k] = top[k]
    if not stopped and seen <= k_want:
        bound[0] = _KEY_INF
    else:
        bound[0] = kkey[m[0] - 1] if m[0] > 0 else -1
    return best


cdef void _explain(Ctx* x, int32_t* row) noexcept nogil:
    cdef Py_ssize_t i
    cdef int reason
    row[0] = <int32_t>x.n
    for i in range(x.n):
        reason = _static_reason(x, i)
        if reason == _R_MAINTENANCE or reason < 0:
            if not _dynamic_ok(x, i):
                reason = _R_CONSTRAINT
        if reason < 0:
            reason = _resource_reason(x, i)
        if reason < 0 and _scarce(x, i):
            reason = _R_SCARCE
        if reason >= 0:
            row[1 + reason] += 1


cdef int64_t _place_app(Ctx* x, int32_t count, int32_t* out_agent, int32_t* out_ports,
                        int32_t* row, int64_t* kkey, int32_t* kagent) noexcept nogil:
    """Place `count` instances of the current app; returns how many were placed."""
    cdef Py_ssize_t m = 0
    cdef int64_t bound = _KEY_INF
    cdef bint have_list = False
    cdef Py_ssize_t j, jj, y, chosen, remaining, k_want, i, ob, q, r
    cdef int64_t key
    cdef int32_t p
    cdef uint64_t z
    cdef int64_t placed = 0
    for j in range(count):
        chosen = -1
        if have_list:
            y = 0
            while y < m:
                i = kagent[y]
                if _resource_reason(x, i) >= 0:
                    _kept_delete(kkey, kagent, &m, y)
                    continue
                if _dynamic_ok(x, i):
                    chosen = i
                    break
                y += 1
            if chosen < 0 and bound == _KEY_INF:
                have_list = False
                chosen = -2
        if chosen == -1:
            remaining = count - j
            if remaining > 1:
                k_want = remaining - 1 + _K_SLACK
                if k_want > _K_MAX:
                    k_want = _K_MAX
            else:
                k_want = 0
            chosen = _scan(x, k_want, kkey, kagent, &m, &bound)
            have_list = k_want > 0
        if chosen < 0:
            _explain(x, row)
            for jj in range(j, count):
                out_agent[jj] = -1
                for q in range(x.nports):
                    out_ports[jj * x.nports + q] = 0
            break
        i = chosen
        for r in range(4):
            x.ag[i].f[r] -= x.d[r]
        ob = j * x.nports
        for q in range(x.nports):
            p = x.ports[q]
            if p > 0:
                _take_port(x, i, p)
                x.ag[i].f[4] -= 1
                out_ports[ob + q] = p
        for q in range(x.nports):
            if x.ports[q] == 0:
                z = _splitmix64(&x.rng)
                p = _rth_free_port(x, i, <int64_t>(z % <uint64_t>x.ag[i].f[4]))
                _take_port(x, i, p)
                x.ag[i].f[4] -= 1
                out_ports[ob + q] = p
        _unlink(x, i)
        _link(x, i)
        for r in range(x.ndyns):
            _dyn_add(&x.dyns[r], x.field_values[x.dyns[r].field * x.n + i])
        out_agent[j] = <int32_t>i
        placed += 1
        if have_list:
            for y in range(m):
                if kagent[y] == i:
                    _kept_delete(kkey, kagent, &m, y)
                    break
            if _resource_reason(x, i) < 0:
                key = _key_of(x, i)
                if key <= bound:
                    _kept_insert(kkey, kagent, &m, key, <int32_t>i)
                    if m > _K_MAX:
                        m -= 1
                        bound = kkey[m]
    return placed


def place(
    int64_t[::1] free, const int64_t[::1] total, const int32_t[::1] agent_role,
    const int32_t[::1] agent_flags,
    const int32_t[::1] port_off, const int32_t[::1] port_lo, const int32_t[::1] port_hi,
    const int32_t[::1] field_values, const int32_t[::1] field_card,
    const int64_t[::1] app_res, const int32_t[::1] app_int, const int32_t[::1] app_roles,
    const int32_t[::1] app_ports, const int32_t[::1] cons_int,
    const unsigned char[::1] tables, const int32_t[::1] exist_vals,
    const unsigned char[::1] veto, seed,
    int32_t[::1] out_agent, int32_t[::1] out_ports, int32_t[::1] out_summary,
):
    """Place every app's instances; see `_core_ref` for the arrays and the rules."""
    cdef Py_ssize_t n = _check(
        free, total, agent_role, agent_flags, port_off, port_lo, port_hi, field_values, field_card,
        app_res, app_int, app_roles, app_ports, cons_int, tables, exist_vals, veto,
        out_agent.shape[0], out_ports.shape[0], out_summary.shape[0])
    cdef uint64_t rng = <uint64_t>(int(seed) & 0xFFFFFFFFFFFFFFFF)
    cdef Py_ssize_t na = app_int.shape[0] // _APP_FIELDS
    cdef Py_ssize_t a, b, i, j, k, q, c, cb, s, e, nd, nt, npool
    cdef int64_t t, placed_total = 0, inst_base = 0, port_base = 0, cap
    cdef int32_t count, op, fld, e0, e1, tmp
    cdef uint64_t z
    cdef Ctx x
    cdef Dyn* dyn
    cdef int32_t dummy_i32 = 0
    cdef int64_t dummy_i64 = 0
    cdef unsigned char dummy_u8 = 0

    npool = 0
    for a in range(na):
        b = a * _APP_FIELDS
        npool += app_int[b + _A_COUNT] * (app_int[b + _A_PORTS_END] - app_int[b + _A_PORTS])

    x.n = n
    x.free = &free[0] if free.shape[0] else &dummy_i64
    x.total = &total[0] if total.shape[0] else &dummy_i64
    x.port_off = &port_off[0]
    x.port_lo = &port_lo[0] if port_lo.shape[0] else &dummy_i32
    x.port_hi = &port_hi[0] if port_hi.shape[0] else &dummy_i32
    x.field_values = &field_values[0] if field_values.shape[0] else &dummy_i32
    x.tables = &tables[0] if tables.shape[0] else &dummy_u8
    x.veto = &veto[0] if veto.shape[0] else NULL
    x.rng = rng
    x.pool_used = 0
    x.ag = <Agent*>malloc((n + 1) * sizeof(Agent))
    x.order = <int32_t*>malloc((n + 1) * sizeof(int32_t))
    x.taken_head = <int32_t*>malloc((n + 1) * sizeof(int32_t))
    x.head = <int32_t*>malloc(_N_BUCKETS * sizeof(int32_t))
    x.bucket_max = <int64_t*>calloc(_N_BUCKETS * _DIMS, sizeof(int64_t))
    x.pool_next = <int32_t*>malloc((npool + 1) * sizeof(int32_t))
    x.pool_port = <int32_t*>malloc((npool + 1) * sizeof(int32_t))
    x.specific = NULL
    x.tabs = NULL
    x.dyns = NULL
    cdef int64_t* kkey = <int64_t*>malloc((_K_MAX + 2) * sizeof(int64_t))
    cdef int32_t* kagent = <int32_t*>malloc((_K_MAX + 2) * sizeof(int32_t))
    try:
        if (x.ag == NULL or x.order == NULL or x.taken_head == NULL
                or x.pool_next == NULL or x.pool_port == NULL or kkey == NULL
                or kagent == NULL or x.head == NULL or x.bucket_max == NULL):
            raise MemoryError()
        with nogil:
            for i in range(n):
                for k in range(4):
                    x.ag[i].f[k] = x.free[k * n + i]
                t = 0
                for q in range(x.port_off[i], x.port_off[i + 1]):
                    t += x.port_hi[q] - x.port_lo[q] + 1
                x.ag[i].f[4] = t
                x.ag[i].role = agent_role[i]
                x.ag[i].flags = agent_flags[i]
            for i in range(n):
                x.order[i] = <int32_t>i
                x.taken_head[i] = -1
            i = n - 1
            while i > 0:
                z = _splitmix64(&x.rng)
                j = <Py_ssize_t>(z % <uint64_t>(i + 1))
                tmp = x.order[i]
                x.order[i] = x.order[j]
                x.order[j] = tmp
                i -= 1
            for i in range(n):
                x.ag[x.order[i]].rank = <int32_t>i
            for k in range(4):
                x.maxinv[k] = 0
                x.mininv[k] = _KEY_INF
            for i in range(n):
                for k in range(4):
                    t = x.total[k * n + i]
                    if x.ag[i].f[k] > t:
                        t = x.ag[i].f[k]
                    t = ((<int64_t>1) << 32) // t if t > 0 else 0
                    x.ag[i].inv[k] = t
                    if t > x.maxinv[k]:
                        x.maxinv[k] = t
                    if t < x.mininv[k]:
                        x.mininv[k] = t
            for b in range(_N_BUCKETS):
                x.head[b] = -1
            for i in range(n):
                _link(&x, i)
        for a in range(na):
            b = a * _APP_FIELDS
            count = app_int[b + _A_COUNT]
            for k in range(_SUMMARY_FIELDS):
                out_summary[a * _SUMMARY_FIELDS + k] = 0
            x.strategy = app_int[b + _A_STRATEGY]
            x.flags = app_int[b + _A_FLAGS]
            x.nroles = app_int[b + _A_ROLES_END] - app_int[b + _A_ROLES]
            x.roles = &app_roles[app_int[b + _A_ROLES]] if x.nroles else &dummy_i32
            x.nports = app_int[b + _A_PORTS_END] - app_int[b + _A_PORTS]
            x.ports = &app_ports[app_int[b + _A_PORTS]] if x.nports else &dummy_i32
            for k in range(_DIMS):
                x.d[k] = app_res[a * _DIMS + k]
            x.specific = <int32_t*>malloc((x.nports + 1) * sizeof(int32_t))
            nd = 0
            nt = 0
            for c in range(app_int[b + _A_CONS], app_int[b + _A_CONS_END]):
                if cons_int[c * _CONS_FIELDS + _C_OP] == _OP_TABLE:
                    nt += 1
                else:
                    nd += 1
            x.tabs = <Tab*>malloc((nt + 1) * sizeof(Tab))
            x.dyns = <Dyn*>calloc(nd + 1, sizeof(Dyn))
            if x.specific == NULL or x.tabs == NULL or x.dyns == NULL:
                raise MemoryError()
            x.nspecific = 0
            x.ports_ok = True
            for q in range(x.nports):
                if x.ports[q] > 0:
                    for s in range(x.nspecific):
                        if x.specific[s] == x.ports[q]:
                            x.ports_ok = False
                    x.specific[x.nspecific] = x.ports[q]
                    x.nspecific += 1
            x.ntabs = 0
            x.ndyns = 0
            for c in range(app_int[b + _A_CONS], app_int[b + _A_CONS_END]):
                cb = c * _CONS_FIELDS
                op = cons_int[cb + _C_OP]
                fld = cons_int[cb + _C_FIELD]
                e0 = cons_int[cb + _C_EXIST]
                e1 = cons_int[cb + _C_EXIST_END]
                if op == _OP_TABLE:
                    x.tabs[x.ntabs].field = fld
                    x.tabs[x.ntabs].off = cons_int[cb + _C_TABLE]
                    x.tabs[x.ntabs].miss = field_card[fld]
                    x.ntabs += 1
                    continue
                dyn = &x.dyns[x.ndyns]
                x.ndyns += 1
                dyn.op = op
                dyn.field = fld
                dyn.arg = cons_int[cb + _C_ARG]
                dyn.card = field_card[fld]
                cap = (e1 - e0) + count
                dyn.counts = <int32_t*>calloc(dyn.card + 1, sizeof(int32_t))
                dyn.hist = <int32_t*>calloc(cap + 2, sizeof(int32_t))
                if dyn.counts == NULL or dyn.hist == NULL:
                    raise MemoryError()
                dyn.groups = 0
                dyn.mincount = 0
                dyn.extra = 0
                dyn.per = app_int[b + _A_TARGET] // dyn.arg if op == _OP_GROUP_BY_TARGET else 0
                dyn.rem = app_int[b + _A_TARGET] % dyn.arg if op == _OP_GROUP_BY_TARGET else 0
                dyn.first = -2
                for e in range(e0, e1):
                    _dyn_add(dyn, exist_vals[e])
            x.vbase = a * n
            if count > 0:
                with nogil:
                    placed_total += _place_app(
                        &x, count,
                        &out_agent[inst_base],
                        &out_ports[port_base] if x.nports else &dummy_i32,
                        &out_summary[a * _SUMMARY_FIELDS], kkey, kagent)
            for c in range(x.ndyns):
                c_free(x.dyns[c].counts)
                c_free(x.dyns[c].hist)
            c_free(x.dyns)
            c_free(x.tabs)
            c_free(x.specific)
            x.dyns = NULL
            x.tabs = NULL
            x.specific = NULL
            inst_base += count
            port_base += count * x.nports
        with nogil:
            for i in range(n):  # the free resources left, back into the caller's array
                for k in range(_DIMS):
                    x.free[k * n + i] = x.ag[i].f[k]
    finally:
        if x.dyns != NULL:
            for c in range(x.ndyns):
                c_free(x.dyns[c].counts)
                c_free(x.dyns[c].hist)
        c_free(x.dyns)
        c_free(x.tabs)
        c_free(x.specific)
        c_free(x.ag)
        c_free(x.order)
        c_free(x.taken_head)
        c_free(x.head)
        c_free(x.bucket_max)
        c_free(x.pool_next)
        c_free(x.pool_port)
        c_free(kkey)
        c_free(kagent)
    return placed_total
