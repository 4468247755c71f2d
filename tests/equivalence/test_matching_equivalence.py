"""`matching.match` gives identical results on either core, over random models.

Random clusters (roles, regions, zones, attributes, draining agents, port
ranges), random apps (resources, host and container ports, accepted roles,
strategy labels, constraints of every operator) and random existing
instances; the whole MatchResult is compared, offers included.
"""

from __future__ import annotations

import random
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from placement_problems import EQUIVALENCE, reference

from marathon import matching
from marathon.models import AppDefinition, Instance, InstanceState, Offer, PortRange, Resources
from marathon.models.app import Container, Network, PortDefinition, PortMapping

HOSTS = [f"10.0.0.{i}" for i in range(12)]
RACKS = ["r1", "r2", "r3"]
CONSTRAINTS = [
    ["hostname", "UNIQUE"], ["@hostname", "UNIQUE"], ["rack", "UNIQUE"],
    ["rack", "CLUSTER"], ["rack", "CLUSTER", "r2"], ["@zone", "CLUSTER", "z1"],
    ["rack", "GROUP_BY"], ["rack", "GROUP_BY", "2"], ["rack", "GROUP_BY", "3"],
    ["@zone", "GROUP_BY", "2"], ["hostname", "GROUP_BY"],
    ["rack", "MAX_PER", "2"], ["hostname", "MAX_PER", "1"], ["@region", "MAX_PER", "3"],
    ["hostname", "LIKE", r"10\.0\.0\.[0-5]"], ["rack", "UNLIKE", "r[12]"],
    ["gen", "IS", "2"], ["gen", "IS", "2.0"], ["ssd", "IS", "true"], ["ssd", "LIKE", "t.*"],
    ["missing", "UNLIKE", "x"], ["missing", "UNIQUE"], ["@region", "GROUP_BY"],
]


def cluster(rnd: random.Random, n: int) -> list[Offer]:
    offers = []
    for i in range(n):
        cpus, mem = rnd.choice([(1000, 2048), (2000, 4096), (4000, 8192)])
        b = rnd.choice([31000, 31005, 31010])
        ranges = [PortRange(b, b + rnd.randint(0, 6))]
        if rnd.random() < 0.3:
            ranges.append(PortRange(b + 10, b + 12))
        attrs = {"rack": rnd.choice(RACKS), "gen": rnd.choice(["1", "2", "2.5"])}
        if rnd.random() < 0.5:
            attrs["ssd"] = rnd.choice(["true", "false"])
        offers.append(Offer(
            agent_id=f"agent-{i}", hostname=rnd.choice(HOSTS[: max(2, n)]),
            free=Resources(cpus=rnd.randint(cpus // 4, cpus), mem=rnd.randint(mem // 4, mem),
                           disk=1000, gpus=rnd.choice([0, 0, 0, 1])),
            total=Resources(cpus=cpus, mem=mem, disk=1000, gpus=1),
            port_ranges=ranges, attributes=attrs,
            region=rnd.choice([None, "east", "east", "west"]),
            zone=rnd.choice([None, "z1", "z2"]),
            role=rnd.choice(["*", "*", "*", "prod"]), draining=rnd.random() < 0.1))
    return offers


def app(rnd: random.Random, k: int) -> AppDefinition:
    kw: dict = {}
    if rnd.random() < 0.5:
        kw["port_definitions"] = [PortDefinition(port=rnd.choice([0, 31001, 31011]))
                                  for _ in range(rnd.randint(0, 2))]
        kw["require_ports"] = rnd.random() < 0.3
    else:
        kw["networks"] = [Network(mode="container/bridge")]
        kw["container"] = Container(port_mappings=[
            PortMapping(container_port=80, host_port=rnd.choice([0, 31002, 31003]))
            if rnd.random() < 0.7 else PortMapping(container_port=81)
            for _ in range(rnd.randint(0, 2))])
    labels = {}
    if rnd.random() < 0.4:
        labels["MARATHON_PLACEMENT_STRATEGY"] = rnd.choice(
            ["binpack", "spread", "firstfit", "SPREAD", "bogus"])
    if rnd.random() < 0.2:
        labels["GPU_SCHEDULING_BEHAVIOR"] = rnd.choice(["restricted", "unrestricted"])
    if rnd.random() < 0.3:
        kw["accepted_resource_roles"] = rnd.choice([["*"], ["prod"], ["*", "prod"]])
    return AppDefinition(
        id=f"/app-{k}", cmd="sleep 1", cpus=rnd.choice([0.1, 0.5, 1.0]),
        mem=rnd.choice([32, 512, 1024]), disk=rnd.choice([0, 100]),
        gpus=rnd.choice([0] * 7 + [1]), instances=rnd.randint(1, 8),
        constraints=rnd.sample(CONSTRAINTS, rnd.choice([0, 0, 1, 1, 2])),
        role=rnd.choice(["*", "*", "prod"]), labels=labels, **kw)


def existing(rnd: random.Random, a: AppDefinition, offers: list[Offer]) -> list[Instance]:
    out = []
    for j in range(rnd.choice([0, 0, 1, 3])):
        o = rnd.choice(offers) if offers and rnd.random() < 0.8 else None
        out.append(Instance(
            instance_id=f"{a.id[1:]}.instance-e{j}", run_spec_id=a.id,
            run_spec_version="2026-01-01T00:00:00.000Z",
            state=InstanceState(condition=rnd.choice(["Running", "Running", "Staging",
                                                      "Scheduled", "Unreachable"]), since=0),
            agent_id=o.agent_id if o else "gone-agent", hostname=o.hostname if o else "old",
            region=o.region if o else None, zone=o.zone if o else None))
    return out


def problem(seed: int, n_agents: int, n_apps: int):
    rnd = random.Random(seed)
    offers = cluster(rnd, n_agents)
    reqs = []
    for k in range(n_apps):
        a = app(rnd, k)
        ids = [f"app-{k}.instance-{j}" for j in range(rnd.randint(0, 6))]
        reqs.append(matching.PlacementRequest(
            app=a, instance_ids=ids, existing=existing(rnd, a, offers),
            role=rnd.choice([None, None, "prod"])))
    if reqs and rnd.random() < 0.15:  # the same app again, with instances of another role
        r = reqs[0]
        reqs.append(matching.PlacementRequest(app=r.app, instance_ids=["dup.instance-0"],
                                              existing=r.existing, role="*"))
    config = matching.MatchConfig(
        strategy=rnd.choice(["binpack", "spread", "firstfit"]), seed=rnd.getrandbits(32),
        accepted_resource_roles_default_behavior=rnd.choice(
            ["any", "any", "any", "unreserved", "reserved"]),
        local_region=rnd.choice([None, "east"]),
        gpu_scheduling_behavior=rnd.choice(["restricted", "unrestricted", "unrestricted"]),
        veto=(lambda o, a: not o.hostname.endswith("7")) if rnd.random() < 0.2 else None)
    return reqs, offers, config


def run(core, reqs, offers, config):
    with mock.patch.object(matching, "_core", core):
        return matching.match(reqs, offers, config)


@settings(EQUIVALENCE, max_examples=400)
@given(seed=st.integers(0, 2**32 - 1), n_agents=st.integers(0, 10), n_apps=st.integers(0, 4))
def test_match_is_identical_on_both_cores(core, seed, n_agents, n_apps):
    reqs, offers, config = problem(seed, n_agents, n_apps)
    assert run(core, reqs, offers, config) == run(reference, reqs, offers, config)


@pytest.mark.parametrize("seed", range(5))
def test_match_is_deterministic(seed):
    reqs, offers, config = problem(seed, 10, 4)
    assert matching.match(reqs, offers, config) == matching.match(reqs, offers, config)
