"""What the local agent offers: its resources minus its tasks, its free ports."""

from __future__ import annotations

import os
import socket

from agent_helpers import make_task

from marathon.agent import machine
from marathon.cluster.local import LocalDriver
from marathon.models.agent import Attribute, PortRange
from marathon.models.resources import Resources

TOTAL = Resources(cpus=4000, mem=8192, disk=10240, gpus=0)
RANGE = [PortRange(41000, 41099)]


def _listening_port_in(lo: int, hi: int, kind: int) -> socket.socket:
    """A socket bound (and listening, for TCP) to some free port in [lo, hi]."""
    for port in range(lo, hi + 1):
        s = socket.socket(socket.AF_INET, kind)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            s.close()
            continue
        if kind == socket.SOCK_STREAM:
            s.listen()
        return s
    raise RuntimeError("no free port to bind")


async def test_offer_shrinks_on_launch_and_grows_back_after_exit(start_agent):
    driver, rec = await start_agent(resources=TOTAL, port_ranges=RANGE)
    before = driver.offers()[0]
    assert before.total == Resources(cpus=4000, mem=8192, disk=10240, gpus=0, ports=100)
    assert before.free.cpus == 4000 and before.free.mem == 8192
    t = make_task(driver.agent_id, argv=["sleep", "1000"], cpus=1.5, mem=1024, disk=100,
                  host_ports=[41010, 41011])
    driver.launch([t])
    # Taken at once, before the process even exists.
    during = driver.offers()[0]
    assert (during.free.cpus, during.free.mem, during.free.disk) == (2500, 7168, 10140)
    assert 41010 not in _ports(during.port_ranges) and 41011 not in _ports(during.port_ranges)
    assert during.free.ports == before.free.ports - 2
    await rec.wait(t.task_id, "TASK_RUNNING")
    driver.kill([t.task_id])
    await rec.terminal(t.task_id)
    after = driver.offers()[0]
    assert after.free == before.free
    assert after.port_ranges == before.port_ranges


async def test_ports_bound_on_the_machine_are_not_offered(start_agent):
    driver, _ = await start_agent(resources=TOTAL, port_ranges=RANGE)
    tcp = _listening_port_in(41000, 41099, socket.SOCK_STREAM)
    udp = _listening_port_in(41000, 41099, socket.SOCK_DGRAM)
    try:
        driver._bound_ports.invalidate()  # the 1 s cache would hide them for a moment
        offer = driver.offers()[0]
        free = _ports(offer.port_ranges)
        assert tcp.getsockname()[1] not in free
        assert udp.getsockname()[1] not in free
        assert offer.free.ports == len(free)
    finally:
        tcp.close()
        udp.close()


async def test_offer_and_agent_info_describe_this_agent(start_agent):
    attrs = [Attribute(name="rack", text="r1"), Attribute(name="weight", scalar=0.8),
             Attribute(name="slots", items=["b", "a"])]
    driver, _ = await start_agent(resources=TOTAL, port_ranges=RANGE, attributes=attrs,
                                  region="eu", zone="eu-1", agent_id="agent-7")
    offer = driver.offers()[0]
    assert offer.agent_id == "agent-7" and offer.hostname == "127.0.0.1"
    assert (offer.region, offer.zone) == ("eu", "eu-1")
    assert offer.attributes == {"rack": "r1", "weight": "0.8", "slots": "{a,b}"}
    [info] = driver.agents()
    assert info.id == "agent-7" and info.total == offer.total and info.port_ranges == RANGE


def test_agent_id_is_generated_once_and_kept(tmp_path):
    first = LocalDriver(tmp_path / "a").agent_id
    assert first.endswith("-S0")
    assert LocalDriver(tmp_path / "a").agent_id == first
    assert LocalDriver(tmp_path / "b").agent_id != first


def test_detected_resources_follow_the_machine(tmp_path):
    res = LocalDriver(tmp_path / "a", port_ranges=[PortRange(31000, 32000)]).offers()[0].total
    assert res.cpus == (os.cpu_count() or 1) * 1000
    assert res.mem == machine.mem_total_mib() - 256
    assert 0 <= res.disk <= machine.disk_free_mib(tmp_path)
    assert res.ports == 1001


def _ports(ranges: list[PortRange]) -> set[int]:
    return {p for r in ranges for p in range(r.begin, r.end + 1)}
