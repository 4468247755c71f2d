"""What a task's network and port mappings become, and how CNI network
files are read (no plugins run here)."""

from __future__ import annotations

import json

from marathon.agent.cni import BRIDGE_NETWORK, PortMap, load_configs
from marathon.agent.prepare import network_of, port_maps
from marathon.models.launch import NetworkSpec, PortMappingSpec, TaskLaunch


def _launch(**kw) -> TaskLaunch:
    return TaskLaunch(task_id="a.1", instance_id="a", app_id="/a", agent_id="ag", shell=True, command="x", **kw)


def test_the_network_a_task_joins():
    assert network_of(_launch()) is None
    assert network_of(_launch(networks=[NetworkSpec(mode="container/bridge")])) == BRIDGE_NETWORK
    assert network_of(_launch(networks=[NetworkSpec(mode="container", name="dcos")])) == "dcos"


def test_host_ports_map_to_container_ports_in_order():
    launch = _launch(host_ports=[31000, 31001], port_mappings=[
        PortMappingSpec(container_port=80, takes_host_port=True),
        PortMappingSpec(container_port=9000),  # no host port: not mapped
        PortMappingSpec(container_port=0, takes_host_port=True, protocol="udp,tcp"),
    ])
    assert port_maps(launch) == [PortMap(31000, 80, "tcp"), PortMap(31001, 31001, "udp"),
                                 PortMap(31001, 31001, "tcp")]


def test_conf_and_conflist_files(tmp_path):
    (tmp_path / "10-a.conf").write_text(json.dumps({"cniVersion": "0.4.0", "name": "a", "type": "bridge",
                                                    "bridge": "br-a"}))
    (tmp_path / "20-b.conflist").write_text(json.dumps({"cniVersion": "1.0.0", "name": "b",
                                                       "plugins": [{"type": "macvlan"}, {"type": "portmap"}]}))
    (tmp_path / "30-a-again.conf").write_text(json.dumps({"name": "a", "type": "ipvlan"}))
    (tmp_path / "broken.conf").write_text("{")
    (tmp_path / "notes.txt").write_text("ignored")
    nets = load_configs(tmp_path)
    assert set(nets) == {"a", "b"}
    assert nets["a"]["plugins"] == [{"type": "bridge", "bridge": "br-a"}], "the first file of a name wins"
    assert [p["type"] for p in nets["b"]["plugins"]] == ["macvlan", "portmap"]
