"""The `marathon` command line: version, help, flag errors, bind errors."""

from __future__ import annotations

import socket
import subprocess
import sys

from marathon import __version__
from marathon.testing import MarathonProcess


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "marathon", *args], capture_output=True, text=True, timeout=60, env=env)


def test_version():
    r = run("--version")
    assert r.returncode == 0 and __version__ in r.stdout


def test_serve_help_explains_marathon_and_pythonic_flags():
    r = run("serve", "--help")
    assert r.returncode == 0
    for flag in ("--http_port", "--http-port", "--hostname", "--master", "--data_dir", "--mesos_role"):
        assert flag in r.stdout
    assert "Port of the HTTP API" in r.stdout


def test_invalid_flag_value_exits_112():
    r = run("serve", "--http_port", "eighty")
    assert r.returncode == 112 and "not an integer" in r.stderr
    r = run("serve", "--enable_features", "teleport")
    assert r.returncode == 112 and "teleport" in r.stderr
    r = run("serve", "--launch_tokens", "0")
    assert r.returncode == 112 and "--launch_tokens" in r.stderr


def test_flag_given_twice_ways_is_an_error(monkeypatch):
    import os

    env = dict(os.environ, MARATHON_HTTP_PORT="9999")
    r = run("serve", "--http_port", "9998", env=env)
    assert r.returncode == 112 and "MARATHON_HTTP_PORT" in r.stderr


def test_port_in_use_exits_111(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        m = MarathonProcess(tmp_path, port=port)
        proc = subprocess.run(m.command(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 111, proc.stderr
    assert "cannot bind" in proc.stderr


def test_a_second_server_on_the_same_data_dir_exits_112_and_leaves_the_first_alone(tmp_path):
    with MarathonProcess(tmp_path) as first:
        assert first.proc is not None
        second = MarathonProcess(tmp_path)  # its own port, the same data dir
        proc = subprocess.run(second.command(), capture_output=True, text=True, timeout=60)
        assert proc.returncode == 112, proc.stderr
        assert f"in use by another agent (pid {first.proc.pid})" in proc.stderr
        assert "--data_dir" in proc.stderr
        assert first.client.get("/ping").status_code == 200


def test_environment_variables_configure_the_server(tmp_path):
    m = MarathonProcess(tmp_path, env={"MARATHON_MESOS_ROLE": "ops"})
    with m:
        assert m.client.get("/v2/info").json()["marathon_config"]["mesos_role"] == "ops"
