"""Constraint semantics (SPEC.md 7.2-7.3), through `accepts` and through placement."""

from __future__ import annotations

import re

import pytest

from marathon import constraints as cons
from marathon.matching import MatchConfig, PlacementRequest, match
from marathon.models import (
    AppDefinition,
    Attribute,
    Instance,
    InstanceState,
    Offer,
    PortRange,
    Resources,
)
from marathon.models import RejectReason as R
from marathon.models.app import VersionInfo
from marathon.models.constraint import Constraint, parse_constraint


def offer(i: int, *, host: str | None = None, region: str | None = None,
          zone: str | None = None, **attributes: str) -> Offer:
    return Offer(
        agent_id=f"agent-{i}", hostname=host or f"host-{i}",
        free=Resources(cpus=8000, mem=32768, disk=10000),
        total=Resources(cpus=8000, mem=32768, disk=10000),
        port_ranges=[PortRange(31000, 31100)], region=region, zone=zone,
        attributes=attributes)


def app(*constraints: list[str], instances: int = 5, **kw) -> AppDefinition:
    return AppDefinition(id="/web", cmd="serve", cpus=0.5, mem=256, instances=instances,
                         constraints=list(constraints), **kw)


def running(a: AppDefinition, o: Offer, n: int = 0, *, condition: str = "Running",
            version: str = "2026-01-01T00:00:00.000Z") -> Instance:
    return Instance(
        instance_id=f"web.instance-existing-{o.agent_id}-{n}", run_spec_id=a.id,
        run_spec_version=version, state=InstanceState(condition=condition, since=0),
        agent_id=o.agent_id, hostname=o.hostname, region=o.region, zone=o.zone)


def place(a: AppDefinition, offers: list[Offer], n: int, existing=(), config=MatchConfig(),
          **kw):
    ids = [f"web.instance-{j}" for j in range(n)]
    return match([PlacementRequest(app=a, instance_ids=ids, existing=list(existing))],
                 offers, config, **kw)


def agents_of(result) -> list[str]:
    return [p.agent_id for p in result.placements]


def values_of(result, offers, attr) -> list[str]:
    by_id = {o.agent_id: o for o in offers}
    return [by_id[p.agent_id].attributes[attr] for p in result.placements]


C = parse_constraint

# -- field readers ----------------------------------------------------------------------------


def test_hostname_and_at_hostname_read_the_agent_hostname():
    o = offer(1, host="10.0.0.1", region="eu", zone="eu-a", rack="r1")
    assert cons.offer_value(o, "hostname") == "10.0.0.1"
    assert cons.offer_value(o, "@hostname") == "10.0.0.1"
    assert cons.offer_value(o, "@region") == "eu"
    assert cons.offer_value(o, "@zone") == "eu-a"
    assert cons.offer_value(o, "rack") == "r1"
    assert cons.offer_value(o, "missing") is None
    assert cons.offer_value(offer(2), "@region") is None


def test_instances_read_their_agent_and_its_attributes():
    o = offer(1, host="h1", region="eu", zone="eu-a", rack="r1")
    inst = running(app(), o)
    attrs = {o.agent_id: o.attributes}
    assert cons.instance_value(inst, "hostname", attrs) == "h1"
    assert cons.instance_value(inst, "@zone", attrs) == "eu-a"
    assert cons.instance_value(inst, "rack", attrs) == "r1"
    assert cons.instance_value(inst, "rack", {}) is None


@pytest.mark.parametrize(
    ("attribute", "rendered"),
    [
        (Attribute(name="a", text="ssd"), "ssd"),
        (Attribute(name="a", scalar=0.8), "0.8"),
        (Attribute(name="a", scalar=1.0005), "1"),  # half-even at 3 decimals
        (Attribute(name="a", scalar=2.0), "2"),
        (Attribute(name="a", ranges=[PortRange(5, 6), PortRange(1, 2)]), "[1-2,5-6]"),
        (Attribute(name="a", items=["c", "a", "b"]), "{a,b,c}"),
    ],
)
def test_attribute_kinds_are_compared_as_marathon_renders_them(attribute, rendered):
    assert attribute.render() == rendered
    o = offer(1, a=attribute.render())
    assert place(app(["a", "LIKE", re.escape(rendered)]), [o], 1).placements
    assert place(app(["a", "CLUSTER", rendered]), [o], 1).placements
    assert not place(app(["a", "CLUSTER", rendered + "x"]), [o], 1).placements


def test_range_and_set_attributes_match_regexes_on_their_rendering():
    o1 = offer(1, ports="[1-2,5-6]", disks="{a,b}")
    o2 = offer(2, ports="[7-9]", disks="{c}")
    r = place(app([r"ports", "LIKE", r"\[1-2,.*"]), [o1, o2], 1)
    assert agents_of(r) == ["agent-1"]
    r = place(app(["disks", "LIKE", r"\{.*b.*\}"]), [o1, o2], 1)
    assert agents_of(r) == ["agent-1"]


# -- missing fields -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "c",
    [["rack", "UNIQUE"], ["rack", "CLUSTER"], ["rack", "CLUSTER", "r1"], ["rack", "GROUP_BY"],
     ["rack", "GROUP_BY", "2"], ["rack", "MAX_PER", "5"], ["rack", "LIKE", ".*"],
     ["rack", "IS", "r1"], ["@zone", "UNIQUE"], ["@region", "GROUP_BY"]],
)
def test_a_missing_field_rejects_every_operator_but_unlike(c):
    assert not cons.accepts(C(c), None, [], 5)
    r = place(app(c), [offer(1)], 1)
    assert not r.placements
    assert r.rejects["/web"].declined[R.UNFULFILLED_CONSTRAINT] == 1


def test_unlike_accepts_a_missing_field():
    assert cons.accepts(C(["rack", "UNLIKE", "r1"]), None, [], 5)
    assert place(app(["rack", "UNLIKE", "r1"]), [offer(1)], 1).placements


# -- UNIQUE ------------------------------------------------------------------------------------


def test_unique_rejects_values_already_used_by_running_instances():
    offers = [offer(i) for i in range(3)]
    a = app(["hostname", "UNIQUE"])
    r = place(a, offers, 3, existing=[running(a, offers[0])])
    assert sorted(agents_of(r)) == ["agent-1", "agent-2"]
    assert r.unplaced == {"/web": ["web.instance-2"]}
    assert r.rejects["/web"].declined[R.UNFULFILLED_CONSTRAINT] == 3


def test_unique_holds_across_the_instances_of_one_batch():
    offers = [offer(i, rack=f"r{i % 2}") for i in range(6)]
    r = place(app(["rack", "UNIQUE"]), offers, 5)
    assert sorted(values_of(r, offers, "rack")) == ["r0", "r1"]
    assert len(r.unplaced["/web"]) == 3


def test_unique_ignores_placed_instances_whose_agent_lacks_the_field():
    assert cons.accepts(C(["rack", "UNIQUE"]), "r1", [None, "r2"], 5)
    assert not cons.accepts(C(["rack", "UNIQUE"]), "r1", [None, "r1"], 5)


# -- CLUSTER ------------------------------------------------------------------------------------


def test_cluster_with_a_value_accepts_only_that_value():
    offers = [offer(i, rack=f"r{i}") for i in range(3)]
    r = place(app(["rack", "CLUSTER", "r2"]), offers, 3)
    assert set(values_of(r, offers, "rack")) == {"r2"}
    assert len(r.placements) == 3


def test_cluster_without_a_value_pins_to_the_first_running_instance():
    offers = [offer(i, rack=f"r{i % 3}") for i in range(6)]
    a = app(["rack", "CLUSTER"])
    r = place(a, offers, 4, existing=[running(a, offers[4]), running(a, offers[0])])
    assert set(values_of(r, offers, "rack")) == {"r1"}


def test_cluster_without_a_value_pins_to_the_first_instance_placed_in_the_batch():
    offers = [offer(i, rack=f"r{i % 3}") for i in range(9)]
    for strategy in ("binpack", "spread", "firstfit"):
        r = place(app(["rack", "CLUSTER"]), offers, 6, config=MatchConfig(strategy=strategy))
        assert len(set(values_of(r, offers, "rack"))) == 1, strategy
        assert len(r.placements) == 6


def test_cluster_with_an_empty_value_behaves_as_without_a_value():
    assert cons.accepts(C(["rack", "CLUSTER", ""]), "r1", [], 3)
    assert not cons.accepts(C(["rack", "CLUSTER", ""]), "r1", ["r2"], 3)
    assert cons.accepts(C(["rack", "CLUSTER", ""]), "r2", ["r2", "r1"], 3)


# -- GROUP_BY ------------------------------------------------------------------------------------


def test_group_by_with_a_value_spreads_evenly_over_that_many_groups():
    offers = [offer(i, rack=f"r{i % 3}") for i in range(9)]
    r = place(app(["rack", "GROUP_BY", "3"], instances=6), offers, 6)
    racks = values_of(r, offers, "rack")
    assert sorted(racks) == ["r0", "r0", "r1", "r1", "r2", "r2"]


def test_group_by_with_a_value_allows_the_remainder_once():
    offers = [offer(i, rack=f"r{i % 3}") for i in range(9)]
    r = place(app(["rack", "GROUP_BY", "3"], instances=7), offers, 7)
    counts = sorted(values_of(r, offers, "rack").count(v) for v in ("r0", "r1", "r2"))
    assert counts == [2, 2, 3]


def test_group_by_with_a_value_waits_for_missing_groups_instead_of_overfilling():
    # 1.10+ rule: 3 groups wanted, only 2 racks exist: each rack takes its share only.
    offers = [offer(i, rack=f"r{i % 2}") for i in range(6)]
    r = place(app(["rack", "GROUP_BY", "3"], instances=6), offers, 6)
    assert sorted(values_of(r, offers, "rack")) == ["r0", "r0", "r1", "r1"]
    assert len(r.unplaced["/web"]) == 2
    assert r.rejects["/web"].declined[R.UNFULFILLED_CONSTRAINT] == 6


def test_group_by_with_a_value_counts_running_instances():
    offers = [offer(i, rack=f"r{i % 3}") for i in range(9)]
    a = app(["rack", "GROUP_BY", "3"], instances=6)
    existing = [running(a, offers[0], 0), running(a, offers[3], 1)]  # two on r0
    r = place(a, offers, 4, existing=existing)
    assert sorted(values_of(r, offers, "rack")) == ["r1", "r1", "r2", "r2"]


def test_group_by_1_10_rule_by_the_numbers():
    g = C(["rack", "GROUP_BY", "3"])  # instances 7: per = 2, rem = 1
    assert cons.accepts(g, "r1", ["r1"], 7)  # c=1 < per
    assert cons.accepts(g, "r1", ["r1", "r1"], 7)  # c == per, no extra yet
    assert not cons.accepts(g, "r1", ["r1", "r1", "r2", "r2", "r2"], 7)  # extra used
    assert not cons.accepts(g, "r4", ["r1", "r2", "r3"], 7)  # G values already used
    assert cons.accepts(g, "r3", ["r1", "r2"], 7)


def test_group_by_without_a_value_uses_the_1_9_rule():
    # Marathon 1.10+ divides by zero here; we use 1.9's: a new value is always fine,
    # an existing one only if it is (one of) the smallest groups.
    g = C(["rack", "GROUP_BY"])
    assert cons.encode(g) == (cons.OP_GROUP_BY, 0)
    assert cons.accepts(g, "r3", ["r1", "r1", "r2"], 10)  # new value
    assert cons.accepts(g, "r2", ["r1", "r1", "r2"], 10)  # smallest group
    assert not cons.accepts(g, "r1", ["r1", "r1", "r2"], 10)  # not the smallest
    # Instances whose agent lacks the field form a group of their own.
    assert cons.accepts(g, "r1", ["r1", None], 10)
    assert not cons.accepts(g, "r1", ["r1", "r1", None], 10)


def test_group_by_without_a_value_keeps_groups_within_one_of_each_other():
    offers = [offer(i, rack=f"r{i % 3}") for i in range(9)]
    for strategy in ("binpack", "spread", "firstfit"):
        r = place(app(["rack", "GROUP_BY"], instances=8), offers, 8,
                  config=MatchConfig(strategy=strategy))
        racks = values_of(r, offers, "rack")
        counts = [racks.count(v) for v in {*racks}]
        assert len(r.placements) == 8
        assert max(counts) - min(counts) <= 1 or len(counts) == 1, (strategy, racks)


def test_group_by_zero_or_negative_falls_back_to_the_1_9_rule():
    assert cons.encode(C(["rack", "GROUP_BY", "0"])) == (cons.OP_GROUP_BY, 0)
    assert cons.encode(C(["rack", "GROUP_BY", "-2"])) == (cons.OP_GROUP_BY, 0)
    assert cons.encode(C(["rack", "GROUP_BY", "4"])) == (cons.OP_GROUP_BY_TARGET, 4)


# -- MAX_PER -------------------------------------------------------------------------------------


def test_max_per_counts_instances_per_value_group():
    offers = [offer(i, rack=f"r{i % 2}") for i in range(6)]
    r = place(app(["rack", "MAX_PER", "2"]), offers, 5)
    racks = values_of(r, offers, "rack")
    assert sorted(racks) == ["r0", "r0", "r1", "r1"]
    assert r.unplaced["/web"] == ["web.instance-4"]


def test_max_per_counts_running_instances_in_the_group():
    offers = [offer(i, rack=f"r{i % 2}") for i in range(6)]
    a = app(["rack", "MAX_PER", "2"])
    r = place(a, offers, 3, existing=[running(a, offers[0]), running(a, offers[2])])
    assert values_of(r, offers, "rack") == ["r1", "r1"]


def test_max_per_hostname_limits_instances_per_agent():
    offers = [offer(i) for i in range(2)]
    r = place(app(["hostname", "MAX_PER", "3"]), offers, 8)
    assert sorted(agents_of(r)) == ["agent-0"] * 3 + ["agent-1"] * 3


# -- LIKE / UNLIKE / IS ----------------------------------------------------------------------------


def test_like_is_a_full_match():
    offers = [offer(1, host="host-1"), offer(2, host="host-10")]
    r = place(app(["hostname", "LIKE", "host-1"]), offers, 3)
    assert set(agents_of(r)) == {"agent-1"}


def test_unlike_is_a_full_non_match():
    offers = [offer(1, host="host-1"), offer(2, host="host-10")]
    r = place(app(["hostname", "UNLIKE", "host-1"]), offers, 3)
    assert set(agents_of(r)) == {"agent-2"}


def test_like_and_unlike_with_an_empty_pattern_reject_agents_that_have_the_field():
    assert not cons.accepts(C(["rack", "LIKE", ""]), "r1", [], 1)
    assert not cons.accepts(C(["rack", "UNLIKE", ""]), "r1", [], 1)
    assert cons.accepts(C(["rack", "UNLIKE", ""]), None, [], 1)


@pytest.mark.parametrize(("value", "ok"), [("0.8", True), ("0.80", True), ("0.8001", True),
                                           ("0.9", False), ("1", False)])
def test_is_compares_scalars_as_marathon_formats_them(value, ok):
    o = offer(1, gen=Attribute(name="gen", scalar=0.8).render())
    assert bool(place(app(["gen", "IS", value]), [o], 1).placements) is ok


def test_is_compares_text_literally():
    offers = [offer(1, tier="gold"), offer(2, tier="gold-plus")]
    assert agents_of(place(app(["tier", "IS", "gold"]), offers, 2)) == ["agent-1", "agent-1"]


def test_constraints_are_anded():
    offers = [offer(i, rack=f"r{i % 2}") for i in range(6)]
    r = place(app(["rack", "IS", "r1"], ["hostname", "UNIQUE"]), offers, 5)
    assert sorted(agents_of(r)) == ["agent-1", "agent-3", "agent-5"]


# -- which instances count ------------------------------------------------------------------------


def test_lost_scheduled_and_old_config_instances_do_not_count():
    offers = [offer(i) for i in range(4)]
    a = app(["hostname", "UNIQUE"],
            version_info=VersionInfo(last_scaling_at="2026-02-01T00:00:00.000Z",
                                     last_config_change_at="2026-02-01T00:00:00.000Z"))
    new = "2026-02-01T00:00:00.000Z"
    existing = [
        running(a, offers[0], version="2026-01-01T00:00:00.000Z"),  # older config
        running(a, offers[1], condition="Unreachable", version=new),  # lost
        running(a, offers[2], condition="Scheduled", version=new),  # not placed
        running(a, offers[3], condition="Staging", version=new),  # counts
    ]
    assert [i.agent_id for i in cons.placed_instances(a, existing)] == ["agent-3"]
    r = place(a, offers, 4, existing=existing)
    assert sorted(agents_of(r)) == ["agent-0", "agent-1", "agent-2"]


def test_without_version_info_every_live_instance_counts():
    offers = [offer(i) for i in range(2)]
    a = app(["hostname", "UNIQUE"])
    existing = [running(a, offers[0], version="2000-01-01T00:00:00.000Z")]
    assert agents_of(place(a, offers, 2, existing=existing)) == ["agent-1"]


def test_attributes_of_agents_outside_the_offers_come_from_agent_attributes():
    offers = [offer(i, rack=f"r{i}") for i in range(2)]
    a = app(["rack", "UNIQUE"])
    gone = Instance(instance_id="web.instance-x", run_spec_id="/web",
                    run_spec_version="2026-01-01T00:00:00.000Z",
                    state=InstanceState(condition="Running", since=0),
                    agent_id="agent-full", hostname="host-full")
    r = place(a, offers, 2, existing=[gone], agent_attributes={"agent-full": {"rack": "r0"}})
    assert agents_of(r) == ["agent-1"]
    r = place(a, offers, 2, existing=[gone])  # unknown agent: its rack is "missing"
    assert sorted(agents_of(r)) == ["agent-0", "agent-1"]


# -- fault domain -----------------------------------------------------------------------------------


def test_only_local_region_offers_are_used_without_region_or_zone_constraints():
    offers = [offer(1, region="east"), offer(2, region="west"), offer(3)]
    config = MatchConfig(local_region="east")
    r = place(app(), offers, 4, config=config)
    assert set(agents_of(r)) <= {"agent-1", "agent-3"}
    assert len(r.placements) == 4


def test_region_and_zone_constraints_open_up_other_regions():
    offers = [offer(1, region="east", zone="e1"), offer(2, region="west", zone="w1")]
    config = MatchConfig(local_region="east")
    r = place(app(["@region", "IS", "west"]), offers, 2, config=config)
    assert agents_of(r) == ["agent-2", "agent-2"]
    r = place(app(["@zone", "GROUP_BY", "2"], instances=2), offers, 2, config=config)
    assert sorted(agents_of(r)) == ["agent-1", "agent-2"]
    r = place(app(["hostname", "UNIQUE"]), offers, 2, config=config)
    assert agents_of(r) == ["agent-1"]
    assert r.rejects["/web"].declined[R.UNFULFILLED_CONSTRAINT] == 2


def test_static_constraint_tables_match_the_specification():
    values = ["r1", "r2", "host-1", "0.8", ""]
    ids = {v: k for k, v in enumerate(values)}
    for c in [["x", "LIKE", "r.*"], ["x", "UNLIKE", "r1"], ["x", "IS", "0.80"],
              ["x", "IS", "r2"], ["x", "CLUSTER", "host-1"], ["x", "LIKE", ""],
              ["x", "IS"], ["x", "UNLIKE", "(?i)R1"]]:
        parsed = C(c)
        want = bytes([cons.static_accepts(parsed, v) for v in values]
                     + [cons.static_accepts(parsed, None)])
        assert cons.table(parsed, values, ids) == want, c
        assert cons.table(parsed, values) == want, c


def test_every_operator_has_an_encoding():
    for op in ["UNIQUE", "CLUSTER", "GROUP_BY", "MAX_PER", "LIKE", "UNLIKE", "IS"]:
        c = Constraint("f", op, "1" if op in ("MAX_PER",) else None
                       if op in ("UNIQUE", "CLUSTER", "GROUP_BY", "IS") else ".*")
        assert cons.encode(c)[0] in range(6)
