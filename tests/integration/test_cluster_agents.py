"""`marathon agent` on several "machines": a master and agents, each in a network
namespace of its own, tasks counted with /proc inside each namespace.

What CLUSTER.md 3.9 says each fault must do, produced for real: agents
spread by constraints, kill -9 of an agent and of the master (zero task
changes), partitions shorter and longer than the unreachable timeout, and
agents the master must refuse.
"""

from __future__ import annotations

import json
import random
import sys
import time

import pytest

from marathon.testing import wait_for
from marathon.testing.cluster import Cluster
from marathon.testing.netns import TestNetwork, available

pytestmark = pytest.mark.integration


@pytest.fixture
def cluster(tmp_path):
    why = available()
    if why is not None:
        pytest.skip(f"network namespaces: {why}")
    with TestNetwork() as net:
        c = Cluster(tmp_path, net)
        try:
            c.start_master()
            yield c
        finally:
            c.close()


def marker() -> str:
    return f"{random.randrange(10**8, 10**9)}"


def web(app_id: str, mark: str, **kw) -> dict:
    # A real HTTP server per task (health checks cross namespaces); the marker
    # in its environment lets /proc count it.
    # (The interpreter by its path: a version manager's `python3` shim would
    # run helper processes of its own in the task.)
    return {"id": app_id, "cmd": f"exec {sys.executable} -m http.server $PORT0 --bind $HOST",
            "env": {"TEST_MARK": mark}, "cpus": 0.1, "mem": 32, "instances": 1,
            "healthChecks": [{"protocol": "HTTP", "intervalSeconds": 1, "gracePeriodSeconds": 30,
                              "maxConsecutiveFailures": 3}], **kw}


def sleeper(app_id: str, mark: str, **kw) -> dict:
    return {"id": app_id, "cmd": "sleep 3600", "env": {"TEST_MARK": mark}, "cpus": 0.05, "mem": 16,
            "portDefinitions": [], **kw}


def settled(c: Cluster, app_id: str, n: int, mark: str, healthy: bool = False) -> bool:
    if c.count(mark) != n or c.deployments():
        return False
    tasks = c.running(app_id)
    if len(tasks) != n:
        return False
    return not healthy or all(r["alive"] for t in tasks for r in t.get("healthCheckResults", [None]) if r) and all(
        t.get("healthCheckResults") for t in tasks)


def test_agents_spread_by_constraints_with_health_checks_across_namespaces(cluster):
    for i, zone in enumerate("abc", 1):
        cluster.add_agent(f"a{i}", attributes=f"zone:{zone};rack:r{i}")
    cluster.wait_registered(3)
    m1, m2 = marker(), marker()
    assert cluster.client.post("/v2/apps", json=web("/unique", m1, instances=3,
                                                      constraints=[["hostname", "UNIQUE"]])).status_code == 201
    assert cluster.client.post("/v2/apps", json=sleeper("/zoned", m2, instances=6,
                                                          constraints=[["zone", "GROUP_BY", "3"]])).status_code == 201
    wait_for(lambda: settled(cluster, "/unique", 3, m1, healthy=True), timeout=120,
             message="3 healthy web tasks")
    wait_for(lambda: settled(cluster, "/zoned", 6, m2), timeout=120, message="6 zoned tasks")
    assert sorted(len(p) for p in cluster.processes(m1).values()) == [1, 1, 1], "one per agent"
    assert sorted(len(p) for p in cluster.processes(m2).values()) == [2, 2, 2], "two per zone"
    hosts = {t["host"] for t in cluster.tasks("/unique")}
    assert hosts == {a.host.ip for a in cluster.agents.values()}, "each task's host is its agent's address"

    # A rolling upgrade: every task replaced, health-checked across namespaces.
    before = {t["id"] for t in cluster.tasks("/unique")}
    r = cluster.client.put("/v2/apps/unique", json={"env": {"TEST_MARK": m1, "RELEASE": "2"}})
    assert r.status_code == 200
    wait_for(lambda: settled(cluster, "/unique", 3, m1, healthy=True)
             and not before & {t["id"] for t in cluster.tasks("/unique")}, timeout=120,
             message="the upgrade to replace every task")
    # Scaling down kills exactly the surplus, on the agents that run it.
    assert cluster.client.put("/v2/apps/zoned", json={"instances": 3}).status_code == 200
    wait_for(lambda: settled(cluster, "/zoned", 3, m2), timeout=60, message="scaled down to 3")
    # The logs of a task, read from its agent through the master.
    task = cluster.running("/unique")[0]
    wait_for(lambda: "GET / HTTP" in cluster.client.get(f"/v2/tasks/{task['id']}/logs",
                                                         params={"stream": "stderr"}).json()["data"],
             timeout=30, message="the health checks' requests in the task's stderr")
    agents = cluster.agent_views()
    assert {a["state"] for a in agents} == {"REGISTERED"} and sum(a["tasks"] for a in agents) == 6


def test_kill_9_of_an_agent_and_of_the_master_changes_no_task(cluster):
    agent = cluster.add_agent("a1")
    cluster.wait_registered(1)
    mark = marker()
    assert cluster.client.post("/v2/apps", json=sleeper("/steady", mark, instances=5)).status_code == 201
    wait_for(lambda: settled(cluster, "/steady", 5, mark), timeout=60, message="5 tasks")
    ids = {t["id"] for t in cluster.tasks("/steady")}
    pids = cluster.processes(mark)["a1"]

    agent.kill9()
    assert cluster.processes(mark)["a1"] == pids, "tasks outlive their agent"
    # One task ends while its agent is down: its end must reach the master once.
    victim = sorted(pids)[0]
    import os
    import signal
    os.kill(victim, signal.SIGKILL)
    agent.start()
    wait_for(lambda: settled(cluster, "/steady", 5, mark), timeout=60, message="5 tasks again")
    now = {t["id"] for t in cluster.tasks("/steady")}
    assert len(ids & now) == 4 and len(now - ids) == 1, "the four survivors re-adopted, one replacement"
    assert pids - {victim} <= cluster.processes(mark)["a1"]
    failure = cluster.client.get("/v2/apps/steady").json()["app"]["lastTaskFailure"]
    assert failure["state"] == "TASK_FAILED" and "while the agent was down" in failure["message"]

    ids, pids = now, cluster.processes(mark)["a1"]
    cluster.master.kill9()
    cluster.start_master()
    wait_for(lambda: cluster.agent_views() and cluster.agent_views()[0]["state"] == "REGISTERED", timeout=60,
             message="the agent to subscribe to the restarted master")
    wait_for(lambda: settled(cluster, "/steady", 5, mark), timeout=60, message="5 tasks after the restart")
    assert {t["id"] for t in cluster.tasks("/steady")} == ids
    assert cluster.processes(mark)["a1"] == pids, "not one task was restarted"
    assert "command_accepted type=KILL" not in agent.log()
    assert "command_accepted type=LAUNCH epoch=1 tasks=1" in agent.log()  # the one replacement


def test_a_short_partition_changes_nothing_and_a_long_one_replaces_per_unreachable_strategy(cluster):
    a1 = cluster.add_agent("a1", attributes="zone:a")
    cluster.add_agent("a2", attributes="zone:b")
    cluster.wait_registered(2)
    mark = marker()
    app = sleeper("/survivor", mark, instances=2, constraints=[["hostname", "UNIQUE"]],
                  unreachableStrategy={"inactiveAfterSeconds": 1, "expungeAfterSeconds": 3600})
    assert cluster.client.post("/v2/apps", json=app).status_code == 201
    wait_for(lambda: settled(cluster, "/survivor", 2, mark), timeout=60, message="2 tasks")
    ids = {t["id"] for t in cluster.tasks("/survivor")}

    # Shorter than the unreachable timeout (5 s here): nothing changes.
    a1.host.partition([cluster.master_host.ip])
    wait_for(lambda: any(a["state"] == "DISCONNECTED" for a in cluster.agent_views()), timeout=30,
             message="a1 disconnected")
    time.sleep(1.0)  # the fault's length is the scenario
    a1.host.heal()
    wait_for(lambda: all(a["state"] == "REGISTERED" for a in cluster.agent_views()), timeout=60,
             message="a1 back")
    assert {t["id"] for t in cluster.tasks("/survivor")} == ids
    assert cluster.count(mark) == 2

    # Longer: unreachable, then replaced (a third agent gives it room).
    cluster.add_agent("a3", attributes="zone:c")
    cluster.wait_registered(3)
    a1.host.partition([cluster.master_host.ip])
    wait_for(lambda: any(a["state"] == "UNREACHABLE" for a in cluster.agent_views()), timeout=60,
             message="a1 unreachable")
    wait_for(lambda: len(cluster.processes(mark)["a3"]) == 1, timeout=60, message="a replacement on a3")
    a1.host.heal()
    # Back before expunge: its task runs again, and the surplus is killed,
    # leaving exactly the target.
    wait_for(lambda: settled(cluster, "/survivor", 2, mark), timeout=120, message="exactly 2 tasks after healing")
    assert cluster.count(mark) == 2


def test_agents_the_master_must_refuse(cluster, tmp_path):
    # A wrong secret: refused, and nothing registers.
    wrong = tmp_path / "wrong.secret"
    wrong.write_text("not-the-secret-at-all-0000\n")
    bad = cluster.add_agent("bad", extra=["--secret_file", str(wrong)])
    wait_for(lambda: "Wrong or missing agent secret" in cluster.master.log()
             or "agent_refused code=UNAUTHORIZED" in cluster.master.log(), timeout=30,
             message="the wrong secret to be refused")
    assert cluster.agent_views() == []
    bad.stop()
    # Malformed and oversized messages: 400 BAD_MESSAGE, nothing registers.
    auth = {"Authorization": f"Bearer {cluster.secret_file.read_text().strip()}"}
    for body in (b"{not json", b'{"type":"SUBSCRIBE","agent_id":5}', b"[" * 100_000):
        r = cluster.client.post("/internal/v1/agents/subscribe", content=body, headers=auth)
        assert r.status_code == 400 and b"BAD_MESSAGE" in r.content, (body[:20], r.status_code, r.content[:200])
    r = cluster.client.post("/internal/v1/agents/x/calls", content=b"[{}]", headers=auth)
    assert r.status_code == 400 and b"BAD_MESSAGE" in r.content
    r = cluster.client.post("/internal/v1/agents/subscribe", content=b"{}")
    assert r.status_code == 401, "no secret, no agent"
    assert cluster.agent_views() == []
    # An agent that joined another cluster: refused, and it exits (114)
    # rather than have its tasks killed as unknown.
    meta = {"agent_id": "stranger-S0", "cluster_id": "another-cluster", "max_epoch": 1}
    (tmp_path / "stranger").mkdir()
    (tmp_path / "stranger" / "meta.json").write_text(json.dumps(meta))
    stranger = cluster.add_agent("stranger")
    assert stranger.proc is not None
    assert stranger.proc.wait(60) == 114
    assert "CLUSTER_MISMATCH" in stranger.log()
    # An agent that has seen a newer leader epoch refuses this leader.
    meta = {"agent_id": "future-S0", "cluster_id": None, "max_epoch": 7}
    (tmp_path / "future").mkdir()
    (tmp_path / "future" / "meta.json").write_text(json.dumps(meta))
    cluster.add_agent("future")
    wait_for(lambda: "code=STALE_EPOCH" in cluster.master.log(), timeout=30, message="the stale epoch refused")
    assert [a["id"] for a in cluster.agent_views()] == []


def test_draining_an_agent_moves_its_instances_within_the_upgrade_strategy(cluster):
    cluster.add_agent("a1", attributes="zone:a")
    cluster.wait_registered(1)
    mark = marker()
    app = web("/moving", mark, instances=2,
              upgradeStrategy={"minimumHealthCapacity": 1.0, "maximumOverCapacity": 0.5})
    assert cluster.client.post("/v2/apps", json=app).status_code == 201
    wait_for(lambda: settled(cluster, "/moving", 2, mark, healthy=True), timeout=120, message="2 healthy on a1")
    cluster.add_agent("a2", attributes="zone:b")
    cluster.wait_registered(2)
    a1 = next(a["id"] for a in cluster.agent_views() if a["hostname"] == cluster.agents["a1"].host.ip)
    r = cluster.client.post(f"/v2/agents/{a1}/drain")
    assert r.status_code == 200 and r.json()["instances"] == 2 and r.json()["deploymentId"]
    plan_id = r.json()["deploymentId"]
    assert [d["id"] for d in cluster.deployments()] == [plan_id]
    most = 0

    def moved() -> bool:
        nonlocal most
        procs = cluster.processes(mark)
        most = max(most, len(procs["a1"]) + len(procs["a2"]))
        return not procs["a1"] and len(procs["a2"]) == 2 and not cluster.deployments()

    wait_for(moved, timeout=120, message="both instances moved to a2")
    assert most <= 3, "maximumOverCapacity 0.5 of 2: at most one extra instance at a time"
    assert all(t["host"] == cluster.agents["a2"].host.ip for t in cluster.running("/moving"))
    assert next(a for a in cluster.agent_views() if a["id"] == a1)["draining"] is True

