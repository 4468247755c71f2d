"""The fetcher against a real HTTP server on 127.0.0.1 and real files."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import pytest

from marathon.agent.fetcher import Fetcher, FetchError, output_name
from marathon.models.launch import FetchUri
from marathon.testing.http_files import serve_bytes


def _tgz(files: dict[str, bytes], *, evil: str | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o755
            tar.addfile(info, io.BytesIO(data))
        if evil:
            info = tarfile.TarInfo(evil)
            info.size = 1
            tar.addfile(info, io.BytesIO(b"x"))
    return buf.getvalue()


def _zip(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    return buf.getvalue()


@pytest.fixture
def server():
    """(base URL, {path: body}, hits): a threaded HTTP server on 127.0.0.1."""
    with serve_bytes() as served:
        yield served


def test_a_tgz_is_extracted_and_kept_a_binary_made_executable(server, tmp_path):
    base, content, _ = server
    content["/app.tgz"] = _tgz({"bin/run.sh": b"#!/bin/sh\necho hi\n"})
    content["/tool"] = b"#!/bin/sh\n"
    content["/notes.zip"] = _zip({"docs/a.txt": b"a"})
    sandbox = tmp_path / "sandbox"
    f = Fetcher(tmp_path / "cache")
    f.fetch_all([FetchUri(uri=f"{base}/app.tgz"), FetchUri(uri=f"{base}/tool", executable=True),
                 FetchUri(uri=f"{base}/notes.zip", dest_path="extra/notes.zip")], sandbox)
    assert (sandbox / "bin/run.sh").read_bytes() == b"#!/bin/sh\necho hi\n"
    assert (sandbox / "app.tgz").exists(), "the archive is kept, as Mesos does"
    assert (sandbox / "tool").stat().st_mode & 0o111
    assert (sandbox / "extra/docs/a.txt").read_bytes() == b"a"
    f.close()


def test_extract_false_leaves_the_archive_packed(server, tmp_path):
    base, content, _ = server
    content["/app.tgz"] = _tgz({"x": b"1"})
    Fetcher(tmp_path / "cache").fetch(FetchUri(uri=f"{base}/app.tgz", extract=False), tmp_path / "s")
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["app.tgz"]


def test_a_404_names_the_uri_and_the_answer(server, tmp_path):
    base, _, _ = server
    with pytest.raises(FetchError) as e:
        Fetcher(tmp_path / "cache").fetch(FetchUri(uri=f"{base}/missing.tgz"), tmp_path / "s")
    assert str(e.value) == f"Failed to fetch '{base}/missing.tgz': HTTP 404 Not Found"
    assert not (tmp_path / "s" / "missing.tgz").exists()


def test_file_uris_and_paths_and_unsupported_schemes(tmp_path):
    src = tmp_path / "data.txt"
    src.write_text("payload")
    f = Fetcher(tmp_path / "cache")
    f.fetch(FetchUri(uri=f"file://{src}"), tmp_path / "s1")
    f.fetch(FetchUri(uri=str(src)), tmp_path / "s2")
    assert (tmp_path / "s1/data.txt").read_text() == (tmp_path / "s2/data.txt").read_text() == "payload"
    with pytest.raises(FetchError, match="unsupported URI scheme 'hdfs'"):
        f.fetch(FetchUri(uri="hdfs://nn/x.jar"), tmp_path / "s3")
    with pytest.raises(FetchError, match="No such file"):
        f.fetch(FetchUri(uri=f"file://{tmp_path}/absent"), tmp_path / "s4")


def test_nothing_lands_outside_the_sandbox(server, tmp_path):
    base, content, _ = server
    content["/evil.tgz"] = _tgz({"ok": b"1"}, evil="../../escaped")
    f = Fetcher(tmp_path / "cache")
    with pytest.raises(FetchError, match="outside the sandbox"):
        f.fetch(FetchUri(uri=f"{base}/evil.tgz"), tmp_path / "s")
    assert not (tmp_path / "escaped").exists()
    with pytest.raises(FetchError, match="outside the sandbox"):
        f.fetch(FetchUri(uri=f"{base}/evil.tgz", dest_path="../x.tgz"), tmp_path / "s")
    with pytest.raises(FetchError, match="not relative"):
        f.fetch(FetchUri(uri=f"{base}/evil.tgz", dest_path="/etc/x.tgz"), tmp_path / "s")


def test_cached_uris_are_downloaded_once_and_evicted_oldest_first(server, tmp_path):
    base, content, hits = server
    content["/a.bin"] = b"a" * 600
    content["/b.bin"] = b"b" * 600
    f = Fetcher(tmp_path / "cache", cache_bytes=1000)
    for i in range(3):
        f.fetch(FetchUri(uri=f"{base}/a.bin", cache=True), tmp_path / f"s{i}")
    assert hits.count("/a.bin") == 1
    assert (tmp_path / "s2/a.bin").read_bytes() == b"a" * 600
    (tmp_path / "s2/a.bin").write_bytes(b"changed")  # a task's copy is its own
    f.fetch(FetchUri(uri=f"{base}/a.bin", cache=True), tmp_path / "s3")
    assert (tmp_path / "s3/a.bin").read_bytes() == b"a" * 600
    f.fetch(FetchUri(uri=f"{base}/b.bin", cache=True), tmp_path / "s4")  # over the limit: a goes
    f.fetch(FetchUri(uri=f"{base}/a.bin", cache=True), tmp_path / "s5")
    assert hits.count("/a.bin") == 2 and hits.count("/b.bin") == 1
    f.fetch(FetchUri(uri=f"{base}/a.bin"), tmp_path / "s6")  # no cache: always downloaded
    assert hits.count("/a.bin") == 3


def test_output_names():
    assert output_name(FetchUri(uri="http://h/p/app%201.tgz?x=1")) == "app 1.tgz"
    assert output_name(FetchUri(uri="http://h/p/a.tgz", dest_path="d/b.tgz")) == "d/b.tgz"
    with pytest.raises(FetchError, match="destPath"):
        output_name(FetchUri(uri="http://h/"))


def test_a_task_fetches_before_its_command_and_a_failed_fetch_fails_it(server, tmp_path: Path):
    """Through the executor: the command sees the extracted files; a 404
    is TASK_FAILED with the fetcher's message."""
    import dataclasses

    import trio

    from marathon.agent.capabilities import PLAIN_PROCESSES
    from marathon.agent.executor import Executor
    from marathon.models.instance import TaskStatus
    from marathon.models.launch import TaskLaunch

    base, content, _ = server
    content["/app.tgz"] = _tgz({"run.sh": b"#!/bin/sh\necho fetched-and-ran > out.txt\n"})

    async def main() -> dict[str, TaskStatus]:
        send, recv = trio.open_memory_channel[TaskStatus](100)
        ex = Executor(tmp_path / "agent", agent_id="a1", send=send, cgroups="off",
                      capabilities=dataclasses.replace(PLAIN_PROCESSES, fetch=True))
        final: dict[str, TaskStatus] = {}
        async with trio.open_nursery() as nursery:
            await nursery.start(ex.run)
            ex.launch([
                TaskLaunch(task_id="ok.1", instance_id="ok", app_id="/ok", agent_id="a1", shell=True,
                           command="./run.sh", fetch=[FetchUri(uri=f"{base}/app.tgz")]),
                TaskLaunch(task_id="bad.1", instance_id="bad", app_id="/bad", agent_id="a1", shell=True,
                           command="true", fetch=[FetchUri(uri=f"{base}/nope.tgz")]),
            ])
            with trio.fail_after(30):
                async for s in recv:
                    if s.state in ("TASK_FINISHED", "TASK_FAILED"):
                        final[s.task_id] = s
                        if len(final) == 2:
                            break
            nursery.cancel_scope.cancel()
        return final

    final = trio.run(main)
    assert final["ok.1"].state == "TASK_FINISHED"
    assert (tmp_path / "agent/sandboxes/ok.1/out.txt").read_text() == "fetched-and-ran\n"
    assert final["bad.1"].state == "TASK_FAILED"
    assert final["bad.1"].message == f"Failed to fetch '{base}/nope.tgz': HTTP 404 Not Found"
    assert final["bad.1"].reason == "REASON_CONTAINER_LAUNCH_FAILED"
