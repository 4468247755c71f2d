"""`marathon.testing.netns`: several hosts on one machine, and the faults between them."""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
import textwrap
import time
import urllib.request

import pytest

from marathon.testing import wait_for
from marathon.testing.netns import Host, TestNetwork, available

pytestmark = pytest.mark.integration

# Fetch a URL, bypassing any proxy from the environment; a partition shows
# up as "timed out", a closed port as "refused".
FETCH = (
    "import sys, urllib.request as u\n"
    "o = u.build_opener(u.ProxyHandler({}))\n"
    "print(o.open(sys.argv[1], timeout=float(sys.argv[2])).read().decode())\n"
)
PORT = 8000  # every host has its own port space


def fetch_here(url: str, timeout: float = 2.0) -> str:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=timeout) as r:
        return r.read().decode()


def fetch_from(host: Host, url: str, timeout: float = 2.0) -> str:
    argv = [sys.executable, "-c", FETCH, url, str(timeout)]
    return host.check_output(argv, stderr=subprocess.STDOUT, timeout=timeout + 10)


def fetch_fails_from(host: Host, url: str, timeout: float = 0.5) -> str:
    with pytest.raises(subprocess.CalledProcessError) as err:
        fetch_from(host, url, timeout)
    return err.value.output


def names_on_machine() -> str:
    return subprocess.check_output(["ip", "netns", "list"], text=True) + subprocess.check_output(
        ["ip", "-o", "link"], text=True
    )


@pytest.fixture(autouse=True)
def _needs_netns(request):
    if request.function is test_this_machine_can_build_test_networks:
        return  # that one reports the reason as a failure
    if reason := available():
        pytest.skip(reason)


@pytest.fixture
def net():
    with TestNetwork() as network:
        yield network


@pytest.fixture
def web(net, tmp_path):
    """Hosts a and b; a serves "hello from a" on a.ip:8000."""
    (tmp_path / "index.html").write_text("hello from a")
    a, b = net.add_host("a"), net.add_host("b")
    argv = [sys.executable, "-m", "http.server", str(PORT), "--bind", a.ip, "-d", str(tmp_path)]
    server = a.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://{a.ip}:{PORT}/"
    wait_for(lambda: fetch_here(url) == "hello from a", timeout=10, message="http.server in a")
    yield a, b, url
    server.kill()
    server.wait()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
def test_this_machine_can_build_test_networks():
    # CI runs as root: there, a missing package must fail, not skip every test.
    assert available() is None, available()


def test_hosts_reach_each_other_and_the_test_process_reaches_them(net, web):
    a, b, url = web
    assert fetch_from(b, url).strip() == "hello from a"
    assert fetch_here(url) == "hello from a"
    assert ipaddress.IPv4Address(a.ip) in net.subnet and ipaddress.IPv4Address(b.ip) in net.subnet
    assert net.gateway == str(net.subnet[1]) and a.ip != b.ip


def test_hosts_know_each_other_by_name_and_dns_fails_fast(net, web):
    a, b, _ = web
    assert fetch_from(b, f"http://a:{PORT}/").strip() == "hello from a"
    assert fetch_from(b, f"http://{a.name}:{PORT}/").strip() == "hello from a"
    c = net.add_host("c")  # a host added later is known to those already running
    assert a.ip in b.check_output(["getent", "hosts", "a"])
    assert c.ip in a.check_output(["getent", "hosts", "c"])
    started = time.monotonic()
    lookup = subprocess.run(b.command(["getent", "hosts", "no-such.example"]), capture_output=True)
    assert lookup.returncode != 0 and time.monotonic() - started < 1


def test_partition_drops_silently_and_heal_restores(net, web):
    a, b, url = web
    a.partition([b.ip])
    assert "timed out" in fetch_fails_from(b, url)
    assert fetch_here(url) == "hello from a"  # only b is cut off

    a.partition()  # now from everything
    with pytest.raises(OSError, match="timed out"):
        fetch_here(url, timeout=0.5)

    a.heal()
    assert fetch_from(b, url).strip() == "hello from a"
    assert fetch_here(url) == "hello from a"
    assert "DROP" not in a.check_output(["iptables", "-S"])


def test_link_down_fails_the_host_fast_and_link_up_restores(net, web):
    a, b, url = web
    a.link_down()
    started = time.monotonic()
    out = fetch_fails_from(a, f"http://{net.gateway}:9/", timeout=5)
    assert "Network is unreachable" in out and time.monotonic() - started < 4
    with pytest.raises(OSError):
        fetch_here(url, timeout=0.5)

    a.link_up()
    wait_for(lambda: fetch_here(url, timeout=0.5) == "hello from a", timeout=10, message="a back")
    assert fetch_from(b, url).strip() == "hello from a"


def test_run_returns_the_command_itself_so_it_can_be_killed_by_pid(net):
    a = net.add_host("a")
    proc = a.run(
        [sys.executable, "-c", "import os, time; print(os.getpid(), flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert int(proc.stdout.readline()) == proc.pid
    assert a.pids() == [proc.pid]
    os.kill(proc.pid, 9)
    assert proc.wait(5) == -9
    proc.stdout.close()
    assert a.pids() == []


class Boom(Exception):
    pass


def test_close_removes_everything_even_when_the_test_fails():
    with pytest.raises(Boom):
        with TestNetwork() as net:
            a, b = net.add_host("a"), net.add_host("b")
            sleeper = a.run(["sleep", "60"])
            a.partition([b.ip])
            b.link_down()
            names = [net.bridge, a.name, b.name, a.veth, b.veth]
            assert all(n in names_on_machine() for n in names)
            raise Boom
    left = names_on_machine()
    assert [n for n in names if n in left] == []
    assert not os.path.exists(f"/etc/netns/{a.name}") and not os.path.exists(f"/etc/netns/{b.name}")
    assert sleeper.returncode == -15  # stopped by close(), by PID
    net.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        net.add_host("c")


def test_concurrent_networks_get_their_own_bridge_and_subnet():
    with TestNetwork() as one, TestNetwork() as two:
        assert one.bridge != two.bridge and len(one.bridge) <= 15
        assert not one.subnet.overlaps(two.subnet)
        a1, a2 = one.add_host("a"), two.add_host("a")  # same short name, different namespaces
        assert a1.name != a2.name and len(a1.veth) <= 15



def test_a_subnet_already_routed_is_refused_and_nothing_is_left():
    with TestNetwork() as one:
        before = names_on_machine()
        with pytest.raises(RuntimeError, match="overlaps"):
            TestNetwork(subnet=str(one.subnet))
        assert names_on_machine() == before


OUTER_SCRIPT = textwrap.dedent(
    """
    import subprocess, sys
    from marathon.testing.netns import TestNetwork
    FETCH = sys.argv[1]
    with TestNetwork() as net:
        a, b = net.add_host("a"), net.add_host("b")
        server = a.run([sys.executable, "-m", "http.server", "8000", "--bind", a.ip],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            try:
                b.check_output([sys.executable, "-c", FETCH, f"http://{a.ip}:8000/", "2"],
                               stderr=subprocess.DEVNULL, timeout=10)
                break
            except subprocess.CalledProcessError:
                import time; time.sleep(0.1)
        else:
            raise SystemExit("b could not reach a")
        print("during:", subprocess.check_output(["iptables", "-S", "FORWARD"], text=True))
        print("bridge:", net.bridge)
    print("after:", subprocess.check_output(["iptables", "-S", "FORWARD"], text=True))
    """
)


def test_forward_drop_policy_is_opened_for_our_bridge_only_and_restored():
    # The machine's FORWARD policy is ACCEPT here; Docker hosts have DROP.  Try
    # that in a scratch namespace standing in for the machine, not on the machine.
    with TestNetwork() as scratch:
        machine = scratch.add_host("machine")
        machine.check_output(["iptables", "-P", "FORWARD", "DROP"])
        out = machine.check_output([sys.executable, "-c", OUTER_SCRIPT, FETCH], timeout=60)
    during = out.split("during:")[1].split("bridge:")[0]
    bridge = out.split("bridge:")[1].split()[0]
    after = out.split("after:")[1]
    assert f"-A FORWARD -i {bridge} -o {bridge}" in during and "-j ACCEPT" in during
    assert "-P FORWARD DROP" in during
    assert after.split() == ["-P", "FORWARD", "DROP"]


def test_root_namespace_ruleset_is_untouched_when_forward_accepts(net, web):
    forward = subprocess.check_output(["iptables", "-S", "FORWARD"], text=True)
    if forward.split() != ["-P", "FORWARD", "ACCEPT"]:
        pytest.skip("this machine's FORWARD chain is not a bare ACCEPT")
    a, _, _ = web
    a.partition()
    assert net.bridge not in subprocess.check_output(["iptables", "-S"], text=True)
