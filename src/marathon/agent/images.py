"""Container images on an agent: pulled with `skopeo`, unpacked with `umoci`
(both from Debian), kept in a content-addressed store under the agent's work
dir and shared by every task that runs them.

    <work dir>/images/layout/           one OCI image layout: blobs by digest
                                        (shared between images), one tag per
                                        image reference pulled
    <work dir>/images/rootfs/<digest>/  an image unpacked once (by manifest
                                        digest), read-only lower layer of
                                        every container of that image

Why these tools rather than a Python library: skopeo speaks every registry
flavour (Docker Registry v2 and OCI manifests, manifest lists, token and
basic auth, docker config files, docker-archive tarballs) and umoci applies
layers with whiteouts, hard links and ownership the way runtimes expect;
both are packaged by Debian beside runc, so an agent needs nothing that is
not already there for containers.  No Python registry client on PyPI covers
pulling and unpacking to a rootfs with that care.

An image reference is what the app's `container.docker.image` says:

- `name[:tag]`, `host[:port]/name[:tag]`, `...@sha256:<digest>`: from a
  registry (Docker Hub when no host is named, as Docker resolves it);
  plain HTTP only for loopback registries and those named in
  `insecure_registries` (Docker's rule), TLS with verification otherwise;
- `file:///path/image.tar`: a `docker save` / docker-archive tarball on the
  agent.

A reference is pulled once and then used from the store, unless the task
asks for `forcePullImage` (the tag is resolved again).  Everything here
blocks and runs in worker threads; failures are `ImageError`s whose message
is what the user reads in `lastTaskFailure`.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("marathon.agent.images")

SKOPEO = "skopeo"
UMOCI = "umoci"
_PULL_TIMEOUT = 1800.0
_UNPACK_TIMEOUT = 1800.0


class ImageError(Exception):
    """An image could not be had: the message names it and says why."""


@dataclass(frozen=True, slots=True)
class ImageConfig:
    """What the image says about running it (its OCI config's `config`)."""

    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    env: tuple[str, ...] = ()  # "NAME=value"
    working_dir: str = ""
    user: str = ""


@dataclass(frozen=True, slots=True)
class Image:
    reference: str
    digest: str  # the manifest's, "sha256:..."
    rootfs: Path  # unpacked, read-only by convention
    config: ImageConfig


def is_loopback_registry(reference: str) -> bool:
    host = registry_host(reference)
    if host is None:
        return False
    if host.startswith("["):  # [v6]:port
        name = host[1:host.find("]")]
    else:
        name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def registry_host(reference: str) -> str | None:
    """The registry named by `reference`, or None for Docker Hub."""
    first, sep, _ = reference.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return first
    return None


def tools_missing() -> list[str]:
    """The tools an image runtime needs that this machine lacks."""
    return [t for t in (SKOPEO, UMOCI) if shutil.which(t) is None]


class ImageStore:
    """The agent's images (see the module docstring).  Thread-safe."""

    def __init__(self, root: Path, *, insecure_registries: Sequence[str] = (),
                 auth_file: Path | None = None) -> None:
        self.root = root
        self.layout = root / "layout"
        self.rootfs_dir = root / "rootfs"
        self.insecure = frozenset(insecure_registries)
        self.auth_file = auth_file
        self._lock = threading.Lock()  # the layout (skopeo and umoci rewrite its index.json)
        self._pulling: dict[str, threading.Lock] = {}  # one pull per reference at a time
        self._unpacking: dict[str, threading.Lock] = {}

    # -- getting an image ------------------------------------------------------------

    def get(self, reference: str, *, force_pull: bool = False, auth_file: Path | None = None) -> Image:
        """The image, pulled (and unpacked) if it is not here yet; with
        `auth_file` (a docker config.json) instead of the agent's own."""
        with self._lock:
            ref_lock = self._pulling.setdefault(reference, threading.Lock())
        with ref_lock:
            tag = _tag(reference)
            digest = None if force_pull else self._digest_of(tag)
            if digest is None:
                started = time.monotonic()
                self._pull(reference, tag, auth_file or self.auth_file)
                digest = self._digest_of(tag)
                if digest is None:
                    raise ImageError(f"Failed to pull image '{reference}': the pulled image has no manifest")
                log.info("image_pulled reference=%s digest=%s seconds=%.2f", reference, digest,
                         time.monotonic() - started)
            config = self._config_of(digest)
            rootfs = self._unpacked(reference, tag, digest)
        return Image(reference=reference, digest=digest, rootfs=rootfs, config=config)

    def _pull(self, reference: str, tag: str, auth_file: Path | None) -> None:
        self.layout.parent.mkdir(parents=True, exist_ok=True)
        if reference.startswith("file://"):
            source = f"docker-archive:{reference[len('file://'):]}"
        else:
            source = f"docker://{reference}"
        argv = [SKOPEO, "copy", "--quiet"]
        host = registry_host(reference)
        if not reference.startswith("file://"):
            if is_loopback_registry(reference) or (host is not None and host in self.insecure):
                argv.append("--src-tls-verify=false")
            if auth_file is not None:
                argv += ["--src-authfile", str(auth_file)]
        argv += [source, f"oci:{self.layout}:{tag}"]
        with self._lock:
            self._run(argv, f"Failed to pull image '{reference}'", _PULL_TIMEOUT)

    def _unpacked(self, reference: str, tag: str, digest: str) -> Path:
        """The rootfs of `digest`, unpacked once."""
        final = self.rootfs_dir / digest.replace(":", "-")
        with self._lock:
            lock = self._unpacking.setdefault(digest, threading.Lock())
        with lock:
            if (final / "rootfs").is_dir():
                os.utime(final)  # last used, for the garbage collection
                return final / "rootfs"
            self.rootfs_dir.mkdir(parents=True, exist_ok=True)
            partial = final.with_name(final.name + ".unpacking")
            shutil.rmtree(partial, ignore_errors=True)
            with self._lock:
                self._run([UMOCI, "unpack", "--image", f"{self.layout}:{tag}", str(partial)],
                          f"Failed to unpack image '{reference}'", _UNPACK_TIMEOUT)
            os.replace(partial, final)
            log.info("image_unpacked reference=%s digest=%s", reference, digest)
            return final / "rootfs"

    @staticmethod
    def _run(argv: list[str], what: str, timeout: float) -> None:
        try:
            done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                  timeout=timeout)
        except FileNotFoundError:
            raise ImageError(f"{what}: {argv[0]} is not installed on this agent") from None
        except subprocess.TimeoutExpired:
            raise ImageError(f"{what}: gave up after {timeout:.0f} s") from None
        if done.returncode != 0:
            raise ImageError(f"{what}: {_last_words(done.stderr or done.stdout)}")

    # -- reading the layout ----------------------------------------------------------

    def _index(self) -> list[dict]:
        try:
            return json.loads((self.layout / "index.json").read_text()).get("manifests", [])
        except FileNotFoundError:
            return []

    def _digest_of(self, tag: str) -> str | None:
        for m in self._index():
            if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag:
                return m["digest"]
        return None

    def _blob(self, digest: str) -> dict:
        algo, _, hexdigest = digest.partition(":")
        return json.loads((self.layout / "blobs" / algo / hexdigest).read_text())

    def _config_of(self, digest: str) -> ImageConfig:
        try:
            manifest = self._blob(digest)
            config = self._blob(manifest["config"]["digest"]).get("config") or {}
        except (OSError, KeyError, ValueError) as e:
            raise ImageError(f"The image {digest} in the store is unreadable: {e}") from None
        return ImageConfig(
            entrypoint=tuple(config.get("Entrypoint") or ()), cmd=tuple(config.get("Cmd") or ()),
            env=tuple(config.get("Env") or ()), working_dir=config.get("WorkingDir") or "",
            user=config.get("User") or "",
        )

    # -- garbage collection ----------------------------------------------------------

    def collect(self, in_use: Iterable[Path], *, max_age: float) -> int:
        """Remove unpacked images no live task uses and none used for
        `max_age` seconds, with their tags and blobs.  Returns how many."""
        keep = {p.parent for p in in_use}
        now = time.time()
        removed = 0
        if not self.rootfs_dir.is_dir():
            return 0
        by_digest = {m["digest"].replace(":", "-"): m.get("annotations", {}).get("org.opencontainers.image.ref.name")
                     for m in self._index()}
        for entry in self.rootfs_dir.iterdir():
            if entry in keep or entry.name.endswith(".unpacking"):
                continue
            try:
                if now - entry.stat().st_mtime < max_age:
                    continue
            except FileNotFoundError:
                continue
            with self._lock:
                shutil.rmtree(entry, ignore_errors=True)
                tag = by_digest.get(entry.name)
                if tag:
                    subprocess.run([UMOCI, "rm", "--image", f"{self.layout}:{tag}"], capture_output=True)
            removed += 1
            log.info("image_removed digest=%s tag=%s", entry.name, tag)
        if removed:
            with self._lock:
                subprocess.run([UMOCI, "gc", "--layout", str(self.layout)], capture_output=True)
        return removed


def _tag(reference: str) -> str:
    """A tag for `reference` in the layout (references hold characters tags may not)."""
    return "ref-" + hashlib.sha256(reference.encode()).hexdigest()[:40]


def _last_words(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return "no message"
    last = lines[-1]
    # skopeo prefixes its messages with a log header: keep what it says.
    for marker in ('msg="', "Error: "):
        if marker in last:
            last = last.split(marker, 1)[1]
            if marker == 'msg="' and last.endswith('"'):
                last = last[:-1]
    return last.replace('\\"', '"')[:1000]
