"""High availability for real (CLUSTER.md 3.1-3.3, 3.9-3.10; docs/ha.md): a
3-node ZooKeeper ensemble, three `marathon serve --zk` masters and
`marathon agent` machines (one finding the leader in ZooKeeper, one
through the list of masters and the standbys' 307s), each in a network
namespace of its own.  Tasks
are counted with /proc in the agents' namespaces, and the commands each
agent accepted or refused are read from its log, never only from the API.

Sessions are 4 s here (10 s by default) so a kill -9 costs seconds; the
timings themselves are benchmarks (benchmarks/test_ha_failover.py).
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time

import httpx
import pytest

from marathon.testing import wait_for
from marathon.testing.ha import HACluster
from marathon.testing.netns import TestNetwork, available

pytestmark = [pytest.mark.integration, pytest.mark.failover]


@pytest.fixture
def ha(tmp_path):
    why = available()
    if why is not None:
        pytest.skip(f"network namespaces: {why}")
    with TestNetwork() as net:
        c = HACluster(tmp_path, net, master_args=["--launch_tokens", "1000"])
        try:
            c.start()
            c.add_agent("a1")
            c.add_agent("a2", by_list=True)  # follows 307s from standbys
            c.wait_registered(2)
            yield c
        finally:
            c.close()


def marker() -> str:
    return f"{random.randrange(10**8, 10**9)}"


def sleeper(app_id: str, mark: str, n: int, **kw) -> dict:
    return {"id": app_id, "cmd": "sleep 3600", "env": {"TEST_MARK": mark}, "cpus": 0.01, "mem": 4,
            "instances": n, "portDefinitions": [], **kw}


def settled(ha: HACluster, app_id: str, n: int, mark: str) -> bool:
    return len(ha.running(app_id)) == n and ha.count(mark) == n and not ha.deployments()


def test_every_master_agrees_and_standbys_forward(ha: HACluster) -> None:
    leader = ha.leader()
    standby = ha.standby()
    assert set(ha.leaders().values()) == {leader}
    info = ha.client(standby).get("/v2/info").json()
    assert info["elected"] is False and info["leader"] == f"{ha.master_hosts[leader].ip}:8080"
    assert info["marathon_config"]["ha"] is True
    assert info["zookeeper_config"]["zk"] == ha.zk_url

    # A write to a standby lands on the leader, which runs it.
    mark = marker()
    r = ha.client(standby).post("/v2/apps", json=sleeper("/ha/fwd", mark, 3))
    assert r.status_code == 201, r.text
    assert r.headers["x-marathon-via"] == f"1.1 {ha.master_hosts[standby].ip}:8080"
    assert r.headers["x-marathon-leader"] == ha.url(leader)
    wait_for(lambda: settled(ha, "/ha/fwd", 3, mark), timeout=60, message="3 tasks via the standby")
    assert ha.client(leader).get("/v2/apps/ha/fwd").status_code == 200

    # Marathon's answers: a proxy loop, the event stream redirected.
    r = ha.client(standby).get("/v2/apps", headers={"X-Marathon-Via": f"1.1 {ha.master_hosts[standby].ip}:8080"})
    assert (r.status_code, r.json()) == (502, {"message": "Detected proxying loop."})
    r = ha.client(standby).get("/v2/events", headers={"Accept": "text/event-stream"})
    assert r.status_code == 302 and r.headers["location"] == ha.url(leader) + "/v2/events"
    assert ha.client(standby).get("/ping").text == "pong"


def test_dead_leader_without_successor_gives_502(tmp_path) -> None:
    """One master of three left with no ZooKeeper quorum for a successor is
    tested below; here: the only other master is dead, so a standby whose
    leader died answers Marathon's 502s until it wins itself."""
    why = available()
    if why is not None:
        pytest.skip(f"network namespaces: {why}")
    with TestNetwork() as net:
        c = HACluster(tmp_path, net, masters=2, session_ms=20000)
        try:
            c.start()
            leader, standby = c.leader(), c.standby()
            c.masters[leader].kill9()
            # The leader node still names the dead leader for the 20 s session.
            r = c.client(standby).get("/v2/apps")
            assert (r.status_code, r.json()) == (502, {"message": "Connection to leader refused."})
            c.wait_leader(timeout=90)
            assert c.serving_leader() == standby
        finally:
            c.close()


def test_leader_kill9_mid_rolling_upgrade_changes_no_task(ha: HACluster) -> None:
    """kill -9 the leader while 200 tasks run and a rolling upgrade is half
    done: the next leader changes no task (same ids, same pids), and the
    upgrade finishes with exactly 200 tasks of the new version."""
    mark = marker()
    app = sleeper("/ha/roll", mark, 200)
    assert ha.any_client().post("/v2/apps", json=app).status_code == 201
    wait_for(lambda: settled(ha, "/ha/roll", 200, mark), timeout=120, message="200 tasks")
    before = ha.task_pids(mark)
    assert len(before) == 200

    # Each new task turns healthy 3 s after it starts, 100 at a time: the
    # upgrade is half done for a few seconds.
    new = dict(app, cmd="sleep 3 && touch healthy && exec sleep 3600",
               healthChecks=[{"protocol": "COMMAND", "command": {"value": "test -f healthy"},
                              "intervalSeconds": 1, "gracePeriodSeconds": 60, "maxConsecutiveFailures": 3}],
               upgradeStrategy={"minimumHealthCapacity": 0.5, "maximumOverCapacity": 0})
    leader = ha.leader()
    assert ha.client(leader).put("/v2/apps/ha/roll", json=new).status_code == 200
    wait_for(lambda: 0 < len(set(ha.task_pids(mark)) - set(before)),
             timeout=60, message="the upgrade to start new tasks")
    at_kill = ha.task_pids(mark)
    ha.masters[leader].kill9()

    successor = ha.wait_leader(other_than=leader, timeout=60)
    after = ha.task_pids(mark)
    # Nothing was restarted: every task alive now was alive with that pid
    # before, unless the upgrade started it after the failover.
    for task_id, pid in at_kill.items():
        if task_id in after:
            assert after[task_id] == pid, task_id
    wait_for(lambda: settled(ha, "/ha/roll", 200, mark), timeout=180, message="the upgrade to finish")
    final = ha.task_pids(mark)
    new_at_kill = {t: p for t, p in at_kill.items() if t not in before}
    assert new_at_kill and all(final.get(t) == p for t, p in new_at_kill.items()), "a new-version task was replaced"
    assert not set(final) & set(before), "an old-version task survived the upgrade"
    assert ha.count(mark) == 200
    assert ha.client(successor).get("/v2/apps/ha/roll").json()["app"]["cmd"] == new["cmd"]


def test_abdication_keeps_every_task(ha: HACluster) -> None:
    mark = marker()
    assert ha.any_client().post("/v2/apps", json=sleeper("/ha/abd", mark, 10)).status_code == 201
    wait_for(lambda: settled(ha, "/ha/abd", 10, mark), timeout=60, message="10 tasks")
    before = ha.task_pids(mark)
    leader = ha.leader()
    r = ha.client(leader).delete("/v2/leader")
    assert (r.status_code, r.json()) == (200, {"message": "Leadership abdicated"})
    ha.wait_leader(other_than=leader, timeout=60)
    wait_for(lambda: ha.masters[leader].alive() and ha.leaders().get(leader) not in (None, leader),
             timeout=30, message="the old leader to stand by")
    wait_for(lambda: len(ha.running("/ha/abd")) == 10, timeout=60, message="the tasks known to the new leader")
    assert ha.task_pids(mark) == before
    assert {t["id"] for t in ha.running("/ha/abd")} == set(before)


def test_paused_leader_is_fenced_and_no_agent_obeys_it(ha: HACluster) -> None:
    """SIGSTOP the leader past its session: a successor takes over; SIGCONT
    the old one: no agent accepts a command of its epoch from then on, and
    it rejoins as a standby."""
    mark = marker()
    assert ha.any_client().post("/v2/apps", json=sleeper("/ha/stop", mark, 4)).status_code == 201
    wait_for(lambda: settled(ha, "/ha/stop", 4, mark), timeout=60, message="4 tasks")
    leader = ha.leader()
    old_epoch = max(e for *_, e in ha.agent_commands())
    pid = ha.masters[leader].pid
    os.kill(pid, signal.SIGSTOP)
    try:
        successor = ha.wait_leader(other_than=leader, timeout=60)
        # Work for the successor, so commands of the new epoch are sent.
        assert ha.client(successor).post("/v2/apps/ha/stop/restart").status_code == 200
        wait_for(lambda: any(e > old_epoch for _n, verdict, _t, e in ha.agent_commands() if verdict == "accepted"),
                 timeout=60, message="commands of the new epoch")
        seen = len(ha.agent_commands())
    finally:
        os.kill(pid, signal.SIGCONT)
    wait_for(lambda: ha.leaders().get(leader) == successor, timeout=60, message="the old leader to stand by")
    wait_for(lambda: settled(ha, "/ha/stop", 4, mark), timeout=90, message="the restart to finish")
    commands = ha.agent_commands()
    # The fence as each agent applies it: once it accepted a command of the
    # new epoch, nothing of the old one (an agent that never heard of the
    # new leader may still take the old one's ACKs of what it committed in
    # time: those are not decisions).
    for name in ha.agents:
        mine = [c for c in commands if c[0] == name and c[1] == "accepted"]
        first_new = next((i for i, c in enumerate(mine) if c[3] > old_epoch), len(mine))
        assert not [c for c in mine[first_new:] if c[3] <= old_epoch], mine
    # And the old leader decided nothing after it woke: a launch follows a
    # committed instance, which its fence refuses.
    late = commands[seen:]
    assert not [c for c in late if c[1] == "accepted" and c[2] == "LAUNCH" and c[3] <= old_epoch], late
    assert ha.serving_leader() == successor
    assert ha.count(mark) == 4


def test_zookeeper_leader_and_quorum_loss(ha: HACluster) -> None:
    """kill ZooKeeper's leader: the ensemble elects another and Marathon goes
    on.  Lose the quorum: writes answer 503, tasks keep running; back when
    the quorum is."""
    mark = marker()
    assert ha.any_client().post("/v2/apps", json=sleeper("/ha/zk", mark, 5)).status_code == 201
    wait_for(lambda: settled(ha, "/ha/zk", 5, mark), timeout=60, message="5 tasks")
    before = ha.task_pids(mark)
    ens = ha.ensemble
    ens.kill(ens.leader_index())
    ens.wait_quorum()
    leader = ha.leader()

    def write_ok(n: int) -> bool:
        r = ha.client(leader).put("/v2/apps/ha/zk", json={"instances": n})
        return r.status_code == 200

    wait_for(lambda: write_ok(5), timeout=60, message="writes after ZooKeeper's leader died")

    # Two of three down: no quorum.
    down = [i for i in range(3) if ens.serving(i)][0]
    ens.kill(down)
    wait_for(lambda: ha.client(leader).put("/v2/apps/ha/zk", json={"instances": 6}).status_code == 503,
             timeout=60, message="writes to answer 503 without a quorum")
    r = ha.client(leader).put("/v2/apps/ha/zk", json={"instances": 6})
    assert r.status_code == 503 and r.headers.get("retry-after") == "1"
    assert ha.task_pids(mark) == before  # tasks run on
    for i in range(3):
        if ens.pid(i) is None:
            ens.start_node(i)
    ens.wait_quorum()
    leader = ha.wait_leader(timeout=90)
    wait_for(lambda: write_ok(6), timeout=90, message="writes once the quorum is back")
    wait_for(lambda: settled(ha, "/ha/zk", 6, mark), timeout=90, message="6 tasks")
    after = ha.task_pids(mark)
    assert all(after.get(t) == p for t, p in before.items()), "a task was restarted"


def test_acknowledged_creations_survive_a_nemesis(ha: HACluster) -> None:
    """Jepsen-style: create apps in a loop while the leader abdicates or is
    kill -9'd (and restarted) every few seconds.  Every app whose creation
    was acknowledged exists afterwards with its one task, and no app has a
    task too many or too few (counted with ps)."""
    mark = marker()
    acknowledged: list[str] = []
    stop = threading.Event()

    def writer() -> None:
        n = 0
        names = list(ha.masters)
        while not stop.is_set():
            n += 1
            app_id = f"/jep/a{n}"
            name = random.choice([m for m in names if ha.masters[m].alive()] or names)
            try:
                r = ha.client(name).post("/v2/apps", json=sleeper(app_id, mark, 1), timeout=10)
            except httpx.HTTPError:
                continue
            if r.status_code == 201:
                acknowledged.append(app_id)
            time.sleep(0.1)

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    try:
        for round_ in range(4):
            leader = ha.wait_leader(timeout=60)
            if round_ % 2 == 0:
                ha.client(leader).delete("/v2/leader")
                ha.wait_leader(other_than=leader, timeout=60)
            else:
                ha.masters[leader].kill9()
                ha.wait_leader(other_than=leader, timeout=60)
                ha.masters[leader].start()
            time.sleep(2)  # let the writer work under the new leader (pacing, not synchronisation)
    finally:
        stop.set()
        thread.join(30)
    assert acknowledged
    ids = {a["id"] for a in ha.any_client().get("/v2/apps").json()["apps"] if a["id"].startswith("/jep/")}
    assert set(acknowledged) <= ids, sorted(set(acknowledged) - ids)

    def converged() -> bool:
        apps = ha.any_client().get("/v2/apps", params={"embed": "apps.counts"}).json()["apps"]
        mine = [a for a in apps if a["id"].startswith("/jep/")]
        return all(a["tasksRunning"] == 1 for a in mine) and ha.count(mark) == len(mine)

    wait_for(converged, timeout=180, message="one task per created app")
