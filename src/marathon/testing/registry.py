"""Container images for tests, with no network and no Docker: images built
here with `umoci` (a busybox one from Debian's busybox-static), served by a
real Docker Registry v2 (Debian's `docker-registry`) on 127.0.0.1, pushed
with `skopeo`; or written as docker-archive tarballs.

    with Registry(tmp_path / "reg") as reg:              # stopped by its PID at the end
        layout = build_busybox(tmp_path / "img", env={"GREETING": "hi"})
        ref = reg.push(layout, "test/busybox:1")          # "127.0.0.1:<port>/test/busybox:1"
        archive = docker_archive(layout, tmp_path / "bb.tar", "test/busybox:1")

RECIPES.md ("Container images without Docker") has the verified commands
and their gotchas: Debian's own registry config enables htpasswd auth, so
the registry here gets a config of its own; OCI manifests need an OCI
Accept header; the layer's applet links are made from the host.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import httpx

from . import free_port

BUSYBOX = "/bin/busybox"


def images_installed() -> str:
    """Empty if every tool these images need is here, else what is missing."""
    missing = [t for t in ("umoci", "skopeo", "docker-registry", "runc") if shutil.which(t) is None]
    if not os.path.exists(BUSYBOX):
        missing.append("busybox-static")
    return ", ".join(missing)


def _run(argv: Sequence[str]) -> None:
    subprocess.run(list(argv), check=True, capture_output=True, text=True)


def build_busybox(layout: Path, *, tag: str = "busybox", entrypoint: Sequence[str] = (),
                  cmd: Sequence[str] = ("/bin/sh",), env: Mapping[str, str] | None = None,
                  workdir: str = "", user: str = "", files: Mapping[str, str] | None = None) -> Path:
    """An OCI image layout at `layout` with one image `tag`: busybox and its
    applets in /bin, an /etc/passwd with root and `nobody`, an
    /etc/os-release naming it, and `files` (path in the image -> text)."""
    bundle = layout.with_name(layout.name + "-bundle")
    _run(["umoci", "init", "--layout", str(layout)])
    _run(["umoci", "new", "--image", f"{layout}:{tag}"])
    _run(["umoci", "unpack", "--image", f"{layout}:{tag}", str(bundle)])
    root = bundle / "rootfs"
    for d in ("bin", "etc", "tmp", "proc", "sys", "dev", "root", "home/nobody"):
        (root / d).mkdir(parents=True, exist_ok=True)
    shutil.copy2(BUSYBOX, root / "bin/busybox")
    applets = subprocess.run([BUSYBOX, "--list"], check=True, capture_output=True, text=True).stdout.split()
    for a in applets:
        if a != "busybox" and not (root / "bin" / a).exists():
            os.symlink("busybox", root / "bin" / a)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home/nobody:/bin/sh\n")
    (root / "etc/group").write_text("root:x:0:\nnogroup:x:65534:\n")
    (root / "etc/os-release").write_text('NAME="Marathon test busybox"\nID=busybox\n')
    (root / "tmp").chmod(0o1777)
    for path, text in (files or {}).items():
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        target.chmod(0o755)
    _run(["umoci", "repack", "--image", f"{layout}:{tag}", str(bundle)])
    config = ["umoci", "config", "--image", f"{layout}:{tag}"]
    if entrypoint:
        config += [f"--config.entrypoint={e}" for e in entrypoint]
    else:
        config.append("--clear=config.entrypoint")
    config += [f"--config.cmd={c}" for c in cmd]
    config += ["--config.env=PATH=/bin"] + [f"--config.env={k}={v}" for k, v in (env or {}).items()]
    if workdir:
        config.append(f"--config.workingdir={workdir}")
    if user:
        config.append(f"--config.user={user}")
    _run(config)
    _run(["umoci", "gc", "--layout", str(layout)])
    shutil.rmtree(bundle)
    return layout


def docker_archive(layout: Path, tarball: Path, name: str, *, tag: str = "busybox") -> Path:
    """The image as a `docker save` tarball (what `file://` images name)."""
    _run(["skopeo", "copy", "--quiet", f"oci:{layout}:{tag}", f"docker-archive:{tarball}:{name}"])
    return tarball


class Registry:
    """A Docker Registry v2 on 127.0.0.1 (plain HTTP), a child process of
    this one, stopped by its PID."""

    def __init__(self, directory: Path, *, users: Mapping[str, str] | None = None) -> None:
        """`users`: name -> password for htpasswd (basic) auth; none: open."""
        self.dir = directory
        self.users = dict(users or {})
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Registry:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        config = self.dir / "config.yml"
        config.write_text(
            "version: 0.1\n"
            "log: {level: warn}\n"
            f"storage:\n  filesystem: {{rootdirectory: {self.dir / 'data'}}}\n  delete: {{enabled: true}}\n"
            f"http:\n  addr: {self.address}\n  secret: marathon-tests\n"
        )
        if self.users:
            import warnings

            with warnings.catch_warnings():  # bcrypt hashes, as the registry's htpasswd wants;
                warnings.simplefilter("ignore", DeprecationWarning)  # `crypt` is still in 3.11
                import crypt

            htpasswd = self.dir / "htpasswd"
            htpasswd.write_text("".join(f"{u}:{crypt.crypt(p, crypt.mksalt(crypt.METHOD_BLOWFISH))}\n"
                                        for u, p in self.users.items()))
            with open(config, "a") as f:
                f.write(f"auth:\n  htpasswd:\n    realm: tests\n    path: {htpasswd}\n")
        log = open(self.dir / "registry.log", "ab")
        self.proc = subprocess.Popen(["docker-registry", "serve", str(config)], stdin=subprocess.DEVNULL,
                                     stdout=log, stderr=log, start_new_session=True)
        log.close()
        atexit.register(self.stop)
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"docker-registry exited: see {self.dir / 'registry.log'}")
            try:
                if httpx.get(f"http://{self.address}/v2/", timeout=2).status_code in (200, 401):
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"docker-registry did not come up: see {self.dir / 'registry.log'}")
            time.sleep(0.05)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(15)

    def push(self, layout: Path, name: str, *, tag: str = "busybox") -> str:
        """Push the layout's image `tag` as `name` ("repo:tag"); its reference."""
        ref = f"{self.address}/{name}"
        creds = []
        if self.users:
            user, password = next(iter(self.users.items()))
            creds = ["--dest-creds", f"{user}:{password}"]
        _run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", *creds, f"oci:{layout}:{tag}",
              f"docker://{ref}"])
        return ref

    def docker_config(self, user: str, password: str) -> str:
        """A docker config.json that logs in to this registry."""
        import base64
        import json

        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        return json.dumps({"auths": {self.address: {"auth": token}}})
