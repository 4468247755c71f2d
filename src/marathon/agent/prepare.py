"""Everything a task needs before its process starts, in the order Mesos
prepares a container: its image pulled (`images.py`), its artifacts in its
sandbox (`fetcher.py`), its secret files written, its network namespace
attached (`cni.py`).  Persistent volumes will join here.

Preparation runs in worker threads while the task is TASK_STAGING (so its
time counts against the launch timeout) and stops when the task is killed.
A failure is a `PrepareError` whose message the user reads in the task's
`lastTaskFailure`.
"""

from __future__ import annotations

import functools
import os
import pwd
import shutil
from pathlib import Path

import trio

from ..models.launch import TaskLaunch
from .cni import BRIDGE_NETWORK, Attachment, CniError, CniNetworks, PortMap
from .fetcher import DEFAULT_CACHE_BYTES, Fetcher, FetchError
from .images import Image, ImageError, ImageStore


class PrepareError(Exception):
    """The task cannot start: the message says why."""


def needs_preparing(launch: TaskLaunch) -> bool:
    return bool(launch.fetch or image_of(launch) or network_of(launch) or launch.secret_values)


def network_of(launch: TaskLaunch) -> str | None:
    """The CNI network the task joins (None: the host's)."""
    for net in launch.networks:
        if net.mode == "container/bridge":
            return BRIDGE_NETWORK
        if net.mode == "container":
            return net.name or ""
    return None


def port_maps(launch: TaskLaunch) -> list[PortMap]:
    """hostPort -> containerPort of the launch's mappings that took a host
    port (in order: the launch's `host_ports`); containerPort 0 means the
    host port itself, as Marathon has it."""
    out: list[PortMap] = []
    hosts = iter(launch.host_ports)
    for m in launch.port_mappings:
        if not m.takes_host_port:
            continue
        host = next(hosts, None)
        if host is None:
            break
        for proto in (m.protocol or "tcp").split(","):
            out.append(PortMap(host_port=host, container_port=m.container_port or host, protocol=proto.strip()))
    return out


def image_of(launch: TaskLaunch) -> str | None:
    c = launch.container
    return None if c is None else c.image


class Preparer:
    """The agent's fetcher and image store, shared by its tasks (at most
    `concurrency` preparations at once)."""

    def __init__(self, work_dir: Path, *, images: ImageStore | None = None, networks: CniNetworks | None = None,
                 fetcher_cache_bytes: int = DEFAULT_CACHE_BYTES, concurrency: int = 8) -> None:
        self.secrets = work_dir / "secrets"
        self.fetcher = Fetcher(work_dir / "fetcher-cache", cache_bytes=fetcher_cache_bytes)
        self.images = images
        self.networks = networks
        self._limiter = trio.CapacityLimiter(concurrency)

    async def prepare(self, launch: TaskLaunch, sandbox: Path) -> tuple[Image | None, Attachment | None]:
        """Pull the task's image, fetch its artifacts, attach its network
        (the image and the attachment are returned)."""
        image: Image | None = None
        attachment: Attachment | None = None
        try:
            reference = image_of(launch)
            if reference is not None:
                if self.images is None:  # refusal() keeps these from an agent without images
                    raise PrepareError(f"Cannot run the image '{reference}': this agent has no image runtime")
                force = bool(launch.container and launch.container.force_pull_image)
                image = await trio.to_thread.run_sync(
                    functools.partial(self._pull, launch, reference, force),
                    abandon_on_cancel=True, limiter=self._limiter)
            if launch.fetch:
                await trio.to_thread.run_sync(self.fetcher.fetch_all, launch.fetch, sandbox,
                                              abandon_on_cancel=True, limiter=self._limiter)
            if launch.secret_values:
                await trio.to_thread.run_sync(self._write_secrets, launch, sandbox)
            network = network_of(launch)
            if network is not None:
                if self.networks is None:
                    raise PrepareError(f"Cannot attach the task to network '{network}': this agent has no "
                                       "container networks")
                # Not abandoned on a kill: a half-made attachment is undone first.
                attachment = await trio.to_thread.run_sync(
                    self.networks.attach, launch.task_id, network, port_maps(launch), limiter=self._limiter)
        except (FetchError, ImageError, CniError) as e:
            raise PrepareError(str(e)) from None
        except OSError as e:
            raise PrepareError(f"Failed to prepare the task: {e}") from None
        return image, attachment

    def _pull(self, launch: TaskLaunch, reference: str, force: bool) -> Image:
        """The image, with the app's pull credentials (`pullConfig`: a docker
        config.json held in a secret) in a file only for this pull."""
        assert self.images is not None
        secret = launch.container.pull_config if launch.container else None
        if not secret or secret not in launch.secret_values:
            return self.images.get(reference, force_pull=force)
        auth = self.secrets / launch.task_id / ".pull-config.json"
        _write_private(auth, launch.secret_values[secret].value)
        try:
            return self.images.get(reference, force_pull=force, auth_file=auth)
        finally:
            auth.unlink(missing_ok=True)

    def _write_secrets(self, launch: TaskLaunch, sandbox: Path) -> None:
        """Each secret volume's value as a file only its owner reads: under
        the agent's work dir for a container (bind-mounted read-only where
        the app says), in the sandbox for a plain process."""
        for v in launch.container.volumes if launch.container else ():
            if v.kind != "secret" or v.secret not in launch.secret_values:
                continue  # (the pull config is not a volume)
            if image_of(launch) is not None:
                path = secret_file(self.secrets, launch.task_id, v.secret)
            else:
                path = sandbox / v.container_path
            owner = None
            if launch.user and image_of(launch) is None:
                # A plain process of another user reads its own file.
                try:
                    pw = pwd.getpwnam(launch.user)
                    owner = (pw.pw_uid, pw.pw_gid)
                except KeyError:
                    pass  # the spawn fails on the unknown user, with that reason
            _write_private(path, launch.secret_values[v.secret].value, owner)

    def close(self) -> None:
        self.fetcher.close()

    async def release(self, launch: TaskLaunch) -> None:
        """Undo what outlives the task's process (its network attachment,
        its secret files)."""
        if self.networks is not None and network_of(launch) is not None:
            await trio.to_thread.run_sync(self.networks.detach, launch.task_id)
        if launch.secret_values or (self.secrets / launch.task_id).exists():  # (re-adopted: values not kept)
            await trio.to_thread.run_sync(shutil.rmtree, self.secrets / launch.task_id, True)


def _write_private(path: Path, data: bytes, owner: tuple[int, int] | None = None) -> None:
    """`data` in a file only its owner reads (0400), in a 0700 directory."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o400)
    try:
        os.write(fd, data)
        if owner is not None:
            os.fchown(fd, *owner)
    finally:
        os.close(fd)


def secret_file(root: Path, task_id: str, name: str) -> Path:
    """Where a container's secret volume value is kept on the agent."""
    return root / task_id / name
