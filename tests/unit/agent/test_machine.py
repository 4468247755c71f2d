"""This machine's facts: port arithmetic, bound ports, process identity."""

from __future__ import annotations

import os
import pwd
import socket
import subprocess
import sys

import pytest

from marathon.agent import machine
from marathon.agent.machine import ListeningPorts, subtract_ports
from marathon.models.agent import PortRange


def test_subtract_ports_splits_ranges_around_taken_ports():
    ranges = [PortRange(100, 110), PortRange(200, 201)]
    assert subtract_ports(ranges, [100, 105, 106, 110, 201, 5000]) == [
        PortRange(101, 104), PortRange(107, 109), PortRange(200, 200)]
    assert subtract_ports(ranges, []) == ranges
    assert subtract_ports([PortRange(1, 1)], [1]) == []


def test_bound_ports_include_listening_tcp_and_bound_udp_only():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    udp = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    udp.bind(("::1", 0))
    connected = socket.create_connection(listener.getsockname())
    try:
        ports = machine.read_bound_ports()
        assert listener.getsockname()[1] in ports
        assert udp.getsockname()[1] in ports
        # An outgoing connection's ephemeral port is not a listening one.
        assert connected.getsockname()[1] not in ports
    finally:
        for s in (listener, udp, connected):
            s.close()


def test_listening_ports_are_cached_for_their_ttl():
    now = [0.0]
    cache = ListeningPorts(ttl=1.0, clock=lambda: now[0])
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    assert port not in cache.get()
    s.listen()
    now[0] = 0.5
    assert port not in cache.get()  # still the cached scan
    now[0] = 1.0
    assert port in cache.get()
    s.close()


def test_process_identity_is_pid_plus_start_time():
    st = machine.proc_stat(os.getpid())
    assert st is not None and st.state in "RS" and st.ppid == os.getppid()
    assert machine.proc_start_time(os.getpid()) == st.start_time > 0
    assert machine.proc_stat(2**22 + 1) is None  # above pid_max: never exists
    assert len(machine.boot_id()) == 36


@pytest.mark.skipif(os.geteuid() != 0, reason="drops privileges: needs root")
@pytest.mark.parametrize("setpriv", [True, False])
def test_as_user_argv_runs_the_program_as_that_user(monkeypatch, setpriv):
    if not setpriv:
        monkeypatch.setattr(machine, "_setpriv", lambda: None)  # the Python fallback
    elif machine._setpriv() is None:
        pytest.skip("no setpriv here")
    nobody = pwd.getpwnam("nobody")
    argv = machine.as_user_argv(nobody.pw_uid, nobody.pw_gid, [], ["id", "-u"])
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    assert out.strip() == str(nobody.pw_uid)


def test_ephemeral_port_range_is_read_from_the_kernel_setting(tmp_path):
    setting = tmp_path / "ip_local_port_range"
    setting.write_text("40000\t50000\n")
    assert machine.ephemeral_port_range(str(setting)) == PortRange(40000, 50000)
    assert machine.ephemeral_port_range(str(tmp_path / "missing")) == PortRange(32768, 60999)


def test_overlapping_keeps_only_the_parts_inside_the_other_range():
    ranges = [PortRange(31000, 32000), PortRange(32500, 33000), PortRange(61000, 61010)]
    assert machine.overlapping(ranges, PortRange(32768, 60999)) == [PortRange(32768, 33000)]
    assert machine.overlapping([PortRange(31000, 32000)], PortRange(32768, 60999)) == []


def test_serve_warns_when_agent_ports_reach_into_the_ephemeral_range(tmp_path, caplog):
    from marathon.config import Config
    from marathon.server import make_driver

    low = machine.ephemeral_port_range().begin
    with caplog.at_level("WARNING", logger="marathon.server"):
        make_driver(Config(data_dir=str(tmp_path / "a"), agent_ports=f"{low - 10}-{low + 5}"), time_ms=lambda: 0)
    assert f"agent ports {low}-{low + 5} fall inside the kernel's ephemeral port range" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="marathon.server"):
        make_driver(Config(data_dir=str(tmp_path / "b"), agent_ports=f"{low - 100}-{low - 1}"), time_ms=lambda: 0)
    assert "ephemeral" not in caplog.text


def test_the_embedded_agent_spawns_with_the_threads_it_is_given(tmp_path):
    from marathon.config import Config, ConfigError
    from marathon.server import make_driver

    driver = make_driver(Config(data_dir=str(tmp_path), agent_spawn_threads=3), time_ms=lambda: 0)
    assert driver.executor._limiter.total_tokens == 3
    with pytest.raises(ConfigError, match="--agent_spawn_threads must be at least 1"):
        Config(agent_spawn_threads=0).validate()


PEEK = """
import os, time
from marathon.agent.machine import exited_child
assert exited_child() is None                      # no children at all
running = os.posix_spawn("/bin/sleep", ["sleep", "30"], {})
assert exited_child() is None                      # a child, none exited
done = os.posix_spawn("/bin/true", ["true"], {})
deadline = time.monotonic() + 30
while exited_child() is None and time.monotonic() < deadline:
    time.sleep(0.01)                               # nothing to wait on but the peek itself
assert exited_child() == done
assert exited_child() == done                      # a peek: still there to be reaped
assert os.waitpid(done, 0)[0] == done
os.kill(running, 9); os.waitpid(running, 0)
print("ok")
"""


def test_exited_child_peeks_without_reaping():
    # In a fresh interpreter: this test process may hold other tests' zombies.
    out = subprocess.run([sys.executable, "-c", PEEK], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "ok", out.stderr
