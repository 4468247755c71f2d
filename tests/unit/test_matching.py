"""Offer matching: resources, host ports, roles, strategies, reject summaries, offers."""

from __future__ import annotations

import os

import pytest

from marathon import matching
from marathon.matching import MatchConfig, PlacementRequest, match
from marathon.models import AppDefinition, Instance, InstanceState, Offer, PortRange, Resources
from marathon.models import RejectReason as R
from marathon.models.app import Container, Network, PortDefinition, PortMapping


def offer(i: int, *, cpus=4000, mem=8192, disk=10000, gpus=0, ports=((31000, 31009),),
          role="*", draining=False, total: Resources | None = None, **attributes) -> Offer:
    free = Resources(cpus=cpus, mem=mem, disk=disk, gpus=gpus)
    return Offer(agent_id=f"agent-{i}", hostname=f"host-{i}", free=free,
                 total=total or free, port_ranges=[PortRange(b, e) for b, e in ports],
                 role=role, draining=draining, attributes=attributes)


def app(app_id="/web", *, ports: int = 0, **kw) -> AppDefinition:
    kw.setdefault("cpus", 1.0)
    kw.setdefault("mem", 1024)
    if ports:
        kw["port_definitions"] = [PortDefinition(port=0) for _ in range(ports)]
    return AppDefinition(id=app_id, cmd="serve", **kw)


def request(a: AppDefinition, n: int, *, existing=(), role=None) -> PlacementRequest:
    prefix = a.id.strip("/").replace("/", "_")
    return PlacementRequest(app=a, instance_ids=[f"{prefix}.instance-{j}" for j in range(n)],
                            existing=list(existing), role=role)


def agents_of(result) -> list[str]:
    return [p.agent_id for p in result.placements]


def by_agent(result) -> dict[str, Offer]:
    return {o.agent_id: o for o in result.offers}


# -- the backend -------------------------------------------------------------------------------


def test_backend_is_the_one_the_environment_asks_for():
    pure = os.environ.get("MARATHON_PUREPYTHON", "") in ("1", "true", "yes")
    assert matching.BACKEND == ("reference" if pure else "compiled")


# -- resources --------------------------------------------------------------------------------


@pytest.mark.parametrize("huge", [{"cpus": 1e16}, {"mem": 1e300}, {"disk": 1e300}, {"cpus": 9.3e15, "mem": 1e12}])
def test_an_app_asking_for_more_than_any_machine_waits_and_breaks_nothing(huge):
    r = match([request(app(**huge), 2), request(app("/small", cpus=0.5, mem=64), 1)], [offer(1), offer(2)])
    assert agents_of(r) in (["agent-1"], ["agent-2"]), "the small app is placed"
    assert "/web" in r.unplaced


def test_an_instance_takes_its_resources_from_the_agent():
    r = match([request(app(cpus=0.25, mem=100.5, disk=64, gpus=1), 1)],
              [offer(1, gpus=2)])
    assert r.offers[0].free == Resources(cpus=3750, mem=8091, disk=9936, gpus=1, ports=10)
    assert r.offers[0].total == Resources(cpus=4000, mem=8192, disk=10000, gpus=2)


@pytest.mark.parametrize(
    ("kw", "reason"),
    [({"cpus": 5.0}, R.INSUFFICIENT_CPUS), ({"mem": 9000}, R.INSUFFICIENT_MEMORY),
     ({"disk": 20000}, R.INSUFFICIENT_DISK), ({"gpus": 1}, R.INSUFFICIENT_GPUS)],
)
def test_each_resource_kind_that_does_not_fit_is_its_reject_reason(kw, reason):
    r = match([request(app(**kw), 2)], [offer(1), offer(2)])
    assert not r.placements
    assert r.unplaced == {"/web": ["web.instance-0", "web.instance-1"]}
    summary = r.rejects["/web"]
    assert summary.processed == 2
    assert summary.declined == [2 if k == reason else 0 for k in range(R.COUNT)]


def test_resources_are_rounded_up_to_whole_units():
    # 0.0011 cpus -> 2 milli-cpus; the agent has exactly 1.
    r = match([request(app(cpus=0.0011, mem=0), 1)], [offer(1, cpus=1)])
    assert r.rejects["/web"].declined[R.INSUFFICIENT_CPUS] == 1


def test_free_resources_are_shared_by_instances_of_one_batch():
    r = match([request(app(cpus=1.5), 5)], [offer(1), offer(2)])
    assert len(r.placements) == 4
    assert r.unplaced == {"/web": ["web.instance-4"]}
    assert all(o.free.cpus == 1000 for o in r.offers)


def test_one_pass_serves_many_apps_in_order():
    a, b = app("/a", cpus=3.0), app("/b", cpus=3.0)
    r = match([request(a, 1), request(b, 2)], [offer(1), offer(2)])
    assert [p.app_id for p in r.placements] == ["/a", "/b"]
    assert r.unplaced == {"/b": ["b.instance-1"]}
    assert "/a" not in r.rejects


def test_summary_attributes_each_agent_to_its_first_reason_in_funnel_order():
    offers = [
        offer(1, role="prod"),  # role first
        offer(2, draining=True, cpus=0),  # maintenance before cpus
        offer(3, cpus=0, mem=0),  # cpus before memory
        offer(4, mem=0),  # memory
        offer(5, ports=()),  # ports
        offer(6, gpus=1),  # scarce GPUs (restricted): last
        offer(7, rack="r2"),  # constraint
    ]
    r = match([request(app(ports=1, constraints=[["rack", "UNLIKE", "r2"]]), 1)], offers)
    declined = r.rejects["/web"].declined
    assert r.rejects["/web"].processed == 7
    assert declined[R.UNFULFILLED_ROLE] == 1
    assert declined[R.UNFULFILLED_CONSTRAINT] == 1
    assert declined[R.AGENT_MAINTENANCE] == 1
    assert declined[R.INSUFFICIENT_CPUS] == 1
    assert declined[R.INSUFFICIENT_MEMORY] == 1
    assert declined[R.INSUFFICIENT_PORTS] == 1
    assert declined[R.DECLINED_SCARCE_RESOURCES] == 1
    assert sum(declined) == 7


def test_the_summary_describes_the_first_miss_of_the_pass():
    r = match([request(app(cpus=3.0), 3)], [offer(1), offer(2)])
    assert r.unplaced == {"/web": ["web.instance-2"]}
    assert r.rejects["/web"].declined[R.INSUFFICIENT_CPUS] == 2


# -- host ports --------------------------------------------------------------------------------


def test_dynamic_host_ports_are_distinct_free_ports_of_the_agent():
    r = match([request(app(ports=3, cpus=0.1, mem=1), 3)], [offer(1)])
    ports = [p for pl in r.placements for p in pl.host_ports]
    assert len(ports) == 9 and len(set(ports)) == 9
    assert all(31000 <= p <= 31009 for p in ports)
    assert r.offers[0].free.ports == 1
    left = [p for rg in r.offers[0].port_ranges for p in range(rg.begin, rg.end + 1)]
    assert sorted(left + ports) == list(range(31000, 31010))


def test_dynamic_ports_follow_the_seed():
    a = app(ports=1, cpus=0.1, mem=1)
    picks = {match([request(a, 1)], [offer(1, ports=((31000, 32000),))],
                   MatchConfig(seed=s)).placements[0].host_ports for s in range(8)}
    assert len(picks) > 4


def test_required_ports_are_taken_literally_and_once_per_agent():
    a = app(port_definitions=[PortDefinition(port=31005), PortDefinition(port=31007)],
            require_ports=True, cpus=0.1, mem=1)
    r = match([request(a, 3)], [offer(1), offer(2, ports=((31000, 31006),))])
    assert agents_of(r) == ["agent-1"]
    assert r.placements[0].host_ports == (31005, 31007)
    assert r.rejects["/web"].declined[R.INSUFFICIENT_PORTS] == 2
    assert r.offers[0].port_ranges == [PortRange(31000, 31004), PortRange(31006, 31006),
                                       PortRange(31008, 31009)]


def test_port_mappings_ask_for_dynamic_fixed_or_no_host_ports():
    a = app(networks=[Network(mode="container/bridge")], cpus=0.1, mem=1,
            container=Container(port_mappings=[
                PortMapping(container_port=80, host_port=0),
                PortMapping(container_port=81),  # no host port
                PortMapping(container_port=82, host_port=31003)]))
    assert matching.host_port_requests(a) == [0, 31003]
    r = match([request(a, 2)], [offer(1), offer(2)])
    assert sorted(agents_of(r)) == ["agent-1", "agent-2"]
    for p in r.placements:
        assert len(p.host_ports) == 2 and p.host_ports[1] == 31003
        assert p.host_ports[0] != 31003


def test_dynamic_ports_never_collide_with_specific_ports_of_later_apps():
    dyn = app("/dyn", ports=9, cpus=0.1, mem=1)
    fixed = app("/fixed", port_definitions=[PortDefinition(port=31004)], require_ports=True,
                cpus=0.1, mem=1)
    r = match([request(dyn, 1), request(fixed, 1)], [offer(1)])
    dyn_ports = r.placements[0].host_ports
    if 31004 in dyn_ports:
        assert r.unplaced == {"/fixed": ["fixed.instance-0"]}
    else:
        assert r.placements[1].host_ports == (31004,)


def test_container_networking_without_host_ports_needs_no_port_resources():
    a = app(networks=[Network(mode="container", name="dcos")], cpus=0.1, mem=1,
            container=Container(port_mappings=[PortMapping(container_port=80)]))
    r = match([request(a, 2)], [offer(1, ports=())])
    assert len(r.placements) == 2 and r.placements[0].host_ports == ()


def test_offers_with_unsorted_or_overlapping_ranges_are_normalised():
    o = offer(1, ports=((31005, 31009), (31000, 31006), (31020, 31019)))
    r = match([request(app(ports=1, cpus=0.1, mem=1), 10)], [o])
    assert len(r.placements) == 10
    assert r.offers[0].port_ranges == [] and r.offers[0].free.ports == 0


# -- roles and maintenance ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("behavior", "agents"),
    [("any", {"agent-1", "agent-2"}), ("unreserved", {"agent-1"}), ("reserved", {"agent-2"})],
)
def test_default_accepted_roles_follow_the_server_flag(behavior, agents):
    offers = [offer(1), offer(2, role="prod"), offer(3, role="dev")]
    r = match([request(app(role="prod", cpus=3.0), 4)], offers,
              MatchConfig(accepted_resource_roles_default_behavior=behavior))
    assert set(agents_of(r)) == agents


def test_accepted_resource_roles_override_the_default():
    offers = [offer(1), offer(2, role="prod")]
    r = match([request(app(role="prod", accepted_resource_roles=["prod"]), 2)], offers)
    assert set(agents_of(r)) == {"agent-2"}
    r = match([request(app(role="prod", accepted_resource_roles=["*"]), 2)], offers)
    assert set(agents_of(r)) == {"agent-1"}


def test_the_request_role_is_the_instances_role():
    offers = [offer(1, role="old"), offer(2, role="prod")]
    r = match([request(app(role="prod"), 1, role="old")], offers,
              MatchConfig(accepted_resource_roles_default_behavior="reserved"))
    assert agents_of(r) == ["agent-1"]


def test_unknown_roles_are_rejected_as_unfulfilled_role():
    r = match([request(app(role="ghost", accepted_resource_roles=["ghost"]), 1)], [offer(1)])
    assert r.rejects["/web"].declined[R.UNFULFILLED_ROLE] == 1


def test_draining_agents_are_declined_for_maintenance():
    r = match([request(app(), 2)], [offer(1, draining=True), offer(2)])
    assert agents_of(r) == ["agent-2"] * 2


def test_gpu_agents_are_kept_for_gpu_apps_when_restricted():
    offers = [offer(1, gpus=1), offer(2)]
    r = match([request(app(cpus=3.0), 2)], offers)
    assert agents_of(r) == ["agent-2"]
    assert r.rejects["/web"].declined[R.DECLINED_SCARCE_RESOURCES] == 1
    r = match([request(app(cpus=3.0), 2)], offers,
              MatchConfig(gpu_scheduling_behavior="unrestricted"))
    assert sorted(agents_of(r)) == ["agent-1", "agent-2"]
    labelled = app(cpus=3.0, labels={"GPU_SCHEDULING_BEHAVIOR": "unrestricted"})
    assert len(match([request(labelled, 2)], offers).placements) == 2
    assert agents_of(match([request(app(gpus=1), 1)], offers)) == ["agent-1"]


def test_a_plugin_veto_rejects_agents_as_unfulfilled_constraint():
    config = MatchConfig(veto=lambda o, a: o.hostname != "host-1")
    r = match([request(app(cpus=3.0), 2)], [offer(1), offer(2)], config)
    assert agents_of(r) == ["agent-2"]
    assert r.rejects["/web"].declined[R.UNFULFILLED_CONSTRAINT] == 1


# -- strategies --------------------------------------------------------------------------------------


def test_binpack_fills_the_fullest_agent_that_fits():
    offers = [offer(1, cpus=4000, total=Resources(cpus=4000, mem=8192, disk=10000)),
              offer(2, cpus=1500, mem=2048, total=Resources(cpus=4000, mem=8192, disk=10000)),
              offer(3, cpus=3000, mem=6000, total=Resources(cpus=4000, mem=8192, disk=10000))]
    r = match([request(app(), 3)], offers)
    assert agents_of(r) == ["agent-2", "agent-3", "agent-3"]


def test_spread_picks_the_least_allocated_agent():
    offers = [offer(1, cpus=2000), offer(2, cpus=4000), offer(3, cpus=3000)]
    offers = [Offer(**{**{f: getattr(o, f) for f in o.__struct_fields__},
                       "total": Resources(cpus=4000, mem=8192, disk=10000)}) for o in offers]
    r = match([request(app(), 3)], offers, MatchConfig(strategy="spread"))
    assert agents_of(r) == ["agent-2", "agent-3", "agent-2"]


def test_firstfit_follows_the_seeded_agent_order():
    offers = [offer(i) for i in range(6)]
    a = app(cpus=2.0)
    orders = set()
    for seed in range(5):
        r = match([request(a, 12)], offers, MatchConfig(strategy="firstfit", seed=seed))
        got = agents_of(r)
        assert got[0::2] == got[1::2]  # two per agent, one agent after the other
        orders.add(tuple(got))
    assert len(orders) > 1


def test_ties_are_broken_by_the_seed_and_reproducibly():
    offers = [offer(i) for i in range(20)]
    first = {match([request(app(), 1)], offers, MatchConfig(seed=s)).placements[0].agent_id
             for s in range(10)}
    assert len(first) > 3
    again = match([request(app(), 5)], offers, MatchConfig(seed=3))
    assert again == match([request(app(), 5)], offers, MatchConfig(seed=3))


@pytest.mark.parametrize(("label", "spread"), [("spread", True), ("SPREAD ", True),
                                               ("binpack", False), ("nonsense", False)])
def test_the_strategy_label_overrides_the_server_strategy(label, spread):
    a = app(labels={"MARATHON_PLACEMENT_STRATEGY": label})
    r = match([request(a, 3)], [offer(i) for i in range(3)])
    assert (len(set(agents_of(r))) == 3) is spread


def test_an_unknown_server_strategy_falls_back_to_binpack():
    assert matching.strategy_of(app(), MatchConfig(strategy="bogus")) == matching.STRATEGIES[
        "binpack"]


# -- results ------------------------------------------------------------------------------------------


def test_placements_carry_the_agents_identity():
    o = Offer(agent_id="a1", hostname="10.1.1.1", region="eu", zone="eu-b",
              free=Resources(cpus=1000, mem=1024), total=Resources(cpus=1000, mem=1024),
              port_ranges=[])
    r = match([request(app(cpus=1.0), 1)], [o])
    p = r.placements[0]
    assert (p.instance_id, p.app_id, p.agent_id, p.hostname, p.region, p.zone, p.host_ports) == (
        "web.instance-0", "/web", "a1", "10.1.1.1", "eu", "eu-b", ())
    assert p == matching.Placement("web.instance-0", "/web", "a1", "10.1.1.1", "eu", "eu-b", ())


def test_untouched_offers_are_returned_as_they_came():
    offers = [offer(1), offer(2)]
    r = match([request(app(cpus=1.0), 1)], offers)
    untouched = [o for o in r.offers if o.free.cpus == 4000]
    assert len(untouched) == 1 and any(u is o for u in untouched for o in offers)


def test_nothing_to_place_changes_nothing():
    offers = [offer(1)]
    r = match([], offers)
    assert r.placements == [] and r.unplaced == {} and r.rejects == {} and r.offers == offers
    r = match([request(app(), 0)], [])
    assert r.placements == [] and r.unplaced == {}
    r = match([request(app(), 2)], [])
    assert r.unplaced == {"/web": ["web.instance-0", "web.instance-1"]}
    assert r.rejects["/web"].processed == 0


def test_a_second_request_for_the_same_app_sees_the_first_ones_placements():
    a = app(constraints=[["hostname", "UNIQUE"]], role="prod")
    offers = [offer(1), offer(2), offer(3, role="prod")]
    r = match([request(a, 2, role="*"), PlacementRequest(a, ["web.instance-9"], (), "prod")],
              offers)
    assert sorted(agents_of(r)) == ["agent-1", "agent-2", "agent-3"]
    r = match([request(a, 2, role="prod"), PlacementRequest(a, ["web.instance-9"], (), "prod")],
              offers, MatchConfig(accepted_resource_roles_default_behavior="reserved"))
    assert agents_of(r) == ["agent-3"]
    assert r.unplaced == {"/web": ["web.instance-1", "web.instance-9"]}


def test_existing_instances_do_not_consume_resources_twice():
    a = app(cpus=1.0)
    o = offer(1)
    inst = Instance(instance_id="web.instance-x", run_spec_id="/web",
                    run_spec_version="2026-01-01T00:00:00.000Z",
                    state=InstanceState(condition="Running", since=0), agent_id="agent-1",
                    hostname="host-1")
    r = match([request(a, 4, existing=[inst])], [o])
    assert len(r.placements) == 4


# -- scale smoke (the benchmarks measure; this keeps the path working) ----------------------------


def test_many_identical_instances_fill_agents_one_after_another():
    offers = [offer(i, cpus=8000, mem=65536, ports=((31000, 32000),)) for i in range(50)]
    r = match([request(app(cpus=0.5, mem=512, ports=1), 700)], offers)
    assert len(r.placements) == 700
    counts = sorted({a: agents_of(r).count(a) for a in set(agents_of(r))}.values())
    assert counts[-1] == 16 and counts.count(16) == 43  # bin-packed: 43 full agents + 1
    hosts = {}
    for p in r.placements:
        hosts.setdefault(p.agent_id, set()).update(p.host_ports)
    assert sum(map(len, hosts.values())) == 700


def test_many_apps_over_many_agents():
    offers = [offer(i, rack=f"r{i % 10}") for i in range(300)]
    reqs = [request(app(f"/g/a{k}", cpus=0.5, mem=256, ports=1,
                        constraints=[["rack", "GROUP_BY", "3"]] if k % 5 == 0 else []), 3)
            for k in range(200)]
    r = match(reqs, offers)
    assert len(r.placements) == 600 and not r.unplaced
    assert sum(o.free.cpus for o in r.offers) == 300 * 4000 - 600 * 500
