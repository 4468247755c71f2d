"""marathon-python (the `marathon` package on PyPI), unmodified, against our server.

Its import name is ours too, so it is installed into a directory of its own
and driven from a child interpreter started with `-S` (no site-packages, so
our editable install cannot shadow it).  Its last release predates Python
3.10: the child puts back the `collections` aliases 3.10 removed.  The scenarios are those of its own
integration tests (itests/marathon_apps.feature).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

CLIENT_VERSION = "0.13.0"


@pytest.fixture(scope="session")
def client_dir() -> Path:
    target = Path(sys.prefix) / "clients" / f"marathon-python-{CLIENT_VERSION}"
    if not (target / "marathon" / "client.py").exists():
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check",
             "--target", str(target), f"marathon=={CLIENT_VERSION}"],
            check=True, timeout=300,
        )
    return target


def run_client(client_dir: Path, url: str, body: str) -> dict:
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(client_dir)!r})
        import collections, collections.abc, json, time
        # The client predates Python 3.10, which removed these aliases.
        for name in ("Iterable", "Mapping", "MutableMapping", "Sequence"):
            setattr(collections, name, getattr(collections.abc, name))
        import marathon
        assert marathon.__file__.startswith({str(client_dir)!r}), marathon.__file__
        client = marathon.MarathonClient({url!r})
    """) + textwrap.dedent(body)
    done = subprocess.run([sys.executable, "-S", "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


COMPLEX = """
    app_config = {
        'container': {
            'type': 'DOCKER',
            'docker': {
                'portMappings': [{'protocol': 'tcp', 'containerPort': 8888, 'hostPort': 0}],
                'image': 'localhost/fake_docker_url',
                'network': 'BRIDGE',
                'parameters': [{'key': 'add-host', 'value': 'google-public-dns-a.google.com:8.8.8.8'}],
            },
            'volumes': [{'hostPath': '/etc/stuff', 'containerPath': '/etc/stuff', 'mode': 'RO'}],
        },
        'instances': 1, 'mem': 30, 'args': [], 'backoff_factor': 2, 'cpus': 0.25,
        'uris': ['file:///root/.dockercfg'], 'backoff_seconds': 1, 'constraints': None,
        'cmd': '/bin/true',
        'health_checks': [{'protocol': 'HTTP', 'path': '/health', 'gracePeriodSeconds': 3,
                           'intervalSeconds': 10, 'portIndex': 0, 'timeoutSeconds': 10,
                           'maxConsecutiveFailures': 3}],
    }
    client.create_app('test-complex-app', marathon.MarathonApp(**app_config))
    app = client.get_app('test-complex-app')
    deadline = time.monotonic() + 60
    while app.last_task_failure is None and time.monotonic() < deadline:
        time.sleep(0.2)
        app = client.get_app('test-complex-app')
    failure = app.last_task_failure
    print(json.dumps({
        'apps': [a.id for a in client.list_apps()],
        'image': app.container.docker.image,
        'network': app.networks[0]['mode'],
        'failure': None if failure is None else {'state': failure.state, 'message': failure.message},
    }))
"""


def test_complex_app_is_accepted_and_its_failure_to_launch_reported(marathon, client_dir):
    out = run_client(client_dir, marathon.url, COMPLEX)
    assert out["apps"] == ["/test-complex-app"]
    assert out["image"] == "localhost/fake_docker_url"
    assert out["network"] == "container/bridge"
    failure = out["failure"]
    assert failure is not None and failure["state"] == "TASK_FAILED"
    message = failure["message"]
    # Everything it asks for this agent gives (docs/containers.md): its
    # fake image is pulled, and that failure is what the user reads.
    assert message.startswith("Failed to pull image 'localhost/fake_docker_url': "), message
    # `/bin/true` never ran: the agent made no sandbox for any of its tasks.
    tasks = marathon.client.get("/v2/apps/test-complex-app/tasks").json()["tasks"]
    assert {t["state"] for t in tasks} <= {"TASK_FAILED"}
    sandboxes = marathon.data_dir / "agent" / "sandboxes"
    assert not any((sandboxes / t["id"]).exists() for t in tasks)
    assert not any(p.name.startswith("test-complex-app.") for p in sandboxes.glob("*"))


def test_trivial_app_runs_and_its_task_can_be_killed(marathon, client_dir):
    out = run_client(client_dir, marathon.url, """
        client.create_app('test-trivial-app', marathon.MarathonApp(cmd='sleep 3600', mem=16, cpus=0.1, instances=5))
        deadline = time.monotonic() + 60
        app = client.get_app('test-trivial-app')
        while app.tasks_running < 5 and time.monotonic() < deadline:
            time.sleep(0.2)
            app = client.get_app('test-trivial-app')
        tasks = client.list_tasks('test-trivial-app')
        client.kill_task(app_id='test-trivial-app', task_id=tasks[0].id, scale=True)
        app = client.get_app('test-trivial-app')
        print(json.dumps({'running': len(tasks), 'instances': app.instances}))
    """)
    assert out == {"running": 5, "instances": 4}
