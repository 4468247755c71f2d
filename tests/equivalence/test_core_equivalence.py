"""The compiled core, the reference and a naive oracle agree on random problems.

Full outputs are compared: the return value, every instance's agent, every
host port, the reject summaries and the free resources left on every agent.
"""

from __future__ import annotations

import random
from array import array

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from placement_problems import EQUIVALENCE, generate, oracle, reference

seeds = st.integers(min_value=0, max_value=2**32 - 1)


@EQUIVALENCE
@given(seed=seeds, n_agents=st.integers(0, 12), n_apps=st.integers(0, 5))
def test_compiled_matches_reference_on_small_clusters(core, seed, n_agents, n_apps):
    p = generate(random.Random(seed), n_agents, n_apps)
    assert p.run(core) == p.run(reference)


@settings(EQUIVALENCE, max_examples=150)
@given(seed=seeds, n_agents=st.integers(40, 120), n_apps=st.integers(1, 3))
def test_compiled_matches_reference_on_many_instances(core, seed, n_agents, n_apps):
    # Beyond the remembered-candidate limit (K_MAX), with wide port ranges.
    p = generate(random.Random(seed), n_agents, n_apps, big=True)
    assert p.run(core) == p.run(reference)


@settings(EQUIVALENCE, max_examples=600)
@given(seed=seeds, n_agents=st.integers(0, 10), n_apps=st.integers(0, 4))
def test_reference_matches_the_naive_oracle(seed, n_agents, n_apps):
    p = generate(random.Random(seed), n_agents, n_apps)
    assert p.run(reference) == oracle(p)


@settings(EQUIVALENCE, max_examples=40)
@given(seed=seeds, n_agents=st.integers(40, 90), n_apps=st.integers(1, 2))
def test_reference_matches_the_naive_oracle_with_many_instances(seed, n_agents, n_apps):
    p = generate(random.Random(seed), n_agents, n_apps, big=True)
    assert p.run(reference) == oracle(p)


@settings(EQUIVALENCE, max_examples=300)
@given(seed=seeds, n_agents=st.integers(8, 40), n_apps=st.integers(1, 3))
def test_reference_matches_the_naive_oracle_when_candidates_run_out(seed, n_agents, n_apps):
    p = generate(random.Random(seed), n_agents, n_apps, crowded=True)
    assert p.run(reference) == oracle(p)


@settings(EQUIVALENCE, max_examples=300)
@given(seed=seeds, n_agents=st.integers(8, 40), n_apps=st.integers(1, 3))
def test_compiled_matches_reference_when_candidates_run_out(core, seed, n_agents, n_apps):
    p = generate(random.Random(seed), n_agents, n_apps, crowded=True)
    assert p.run(core) == p.run(reference)


# -- identical checks and exceptions -------------------------------------------------------

CORRUPTIONS = [
    ("agent_flags", lambda p: p.agent_flags.append(0)),
    ("port_off", lambda p: p.port_off.append(p.port_off[-1])),
    ("port_off", lambda p: p.port_off.__setitem__(0, 1)),
    ("port_lo", lambda p: p.port_lo.append(1)),
    ("port_hi", lambda p: p.port_hi.__setitem__(0, 70000) if len(p.port_hi) else None),
    ("port_lo", lambda p: p.port_lo.__setitem__(0, p.port_hi[0] + 1) if len(p.port_lo) else None),
    ("free", lambda p: p.free.__setitem__(0, -1) if len(p.free) else None),
    ("free", lambda p: p.free.append(0)),
    ("field_values", lambda p: p.field_values.append(0)),
    ("field_values", lambda p: p.field_values.__setitem__(0, 99) if len(p.field_values) else None),
    ("field_card", lambda p: p.field_card.__setitem__(0, -1) if len(p.field_card) else None),
    ("app_int", lambda p: p.app_int.append(0)),
    ("app_int", lambda p: p.app_int.__setitem__(0, -1) if len(p.app_int) else None),
    ("app_int", lambda p: p.app_int.__setitem__(1, 3) if len(p.app_int) else None),
    ("app_int", lambda p: p.app_int.__setitem__(3, -7) if len(p.app_int) else None),
    ("app_int", lambda p: p.app_int.__setitem__(5, 10**6) if len(p.app_int) else None),
    ("app_int", lambda p: p.app_int.__setitem__(7, 10**6) if len(p.app_int) else None),
    ("app_int", lambda p: p.app_int.__setitem__(9, 10**6) if len(p.app_int) else None),
    ("app_res", lambda p: p.app_res.__setitem__(0, -5) if len(p.app_res) else None),
    ("app_res", lambda p: p.app_res.__setitem__(4, 9) if len(p.app_res) else None),
    ("app_ports", lambda p: p.app_ports.__setitem__(0, 70000) if len(p.app_ports) else None),
    ("cons_int", lambda p: p.cons_int.__setitem__(0, 9) if len(p.cons_int) else None),
    ("cons_int", lambda p: p.cons_int.__setitem__(1, 9) if len(p.cons_int) else None),
    ("cons_int", lambda p: p.cons_int.append(0)),
    ("exist_vals", lambda p: p.exist_vals.__setitem__(0, 99) if len(p.exist_vals) else None),
    ("veto", lambda p: setattr(p, "veto", b"\x00")),
]


def _outcome(core, p):
    try:
        return ("ok", p.run(core))
    except ValueError as e:
        return ("ValueError", str(e))


@pytest.mark.parametrize("index", range(len(CORRUPTIONS)))
def test_invalid_inputs_raise_the_same_errors(core, index):
    name, corrupt = CORRUPTIONS[index]
    raised = 0
    for seed in range(30):
        p = generate(random.Random(seed), random.Random(seed).randint(1, 8), 3)
        corrupt(p)
        got, want = _outcome(core, p), _outcome(reference, p)
        assert got == want, name
        raised += got[0] == "ValueError"
    assert raised, f"corrupting {name} never raised"


def test_output_arrays_too_small_raise_the_same_error(core):
    p = generate(random.Random(3), 6, 3)
    inst, ports = p.sizes()
    for core_mod in (core, reference):
        with pytest.raises(ValueError, match="output arrays are too small"):
            core_mod.place(
                array("q", p.free), p.total, p.agent_role, p.agent_flags, p.port_off,
                p.port_lo, p.port_hi, p.field_values, p.field_card, p.app_res, p.app_int,
                p.app_roles, p.app_ports, p.cons_int, p.tables, p.exist_vals, p.veto, p.seed,
                array("i", [0] * inst), array("i", [0] * ports), array("i"))


def test_both_cores_expose_the_same_constants(core):
    names = [n for n in dir(reference) if n.isupper() and not n.startswith("_")]
    assert names
    for name in names:
        assert getattr(core, name) == getattr(reference, name), name
