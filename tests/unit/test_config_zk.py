"""The --zk flags: what a master on ZooKeeper needs, refused before it starts."""

from __future__ import annotations

import pytest

from marathon.config import ConfigError, from_args, parse_zk_url

ZK = "zk://u:p@h1:2181,h2:2181/marathon"


def _args(*extra: str) -> list[str]:
    return ["--zk", ZK, "--master", "agents", "--agent_secret_file", "/dev/null", *extra]


def test_a_zk_master_with_its_agents():
    c = from_args(_args(), environ={})
    assert c.ha and c.redacted_zk == "zk://xxxxxxxx:xxxxxxxx@h1:2181,h2:2181/marathon"
    assert parse_zk_url(ZK) == ("h1:2181,h2:2181", "/marathon", ("u", "p"))


@pytest.mark.parametrize("argv, words", [
    (["--zk", ZK], "--master agents"),
    (_args()[:2] + ["--master", "agents"], "--agent_secret_file"),
    (["--zk", "zk://h1:2181", "--master", "agents", "--agent_secret_file", "/dev/null"], "path"),
    (["--zk", "http://h1:2181/m", "--master", "agents", "--agent_secret_file", "/dev/null"], "zk://"),
    (_args("--zk_session_timeout", "0"), "positive"),
    (_args("--zk_max_node_size", "2000000"), "jute.maxbuffer"),
])
def test_bad_zk_settings_are_refused_with_what_to_do(argv, words):
    with pytest.raises(ConfigError) as e:
        from_args(argv, environ={})
    assert words in str(e.value)
