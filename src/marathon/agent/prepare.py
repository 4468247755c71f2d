"""Everything a task needs before its process starts, in the order Mesos
prepares a container: its image pulled (`images.py`), its artifacts in its
sandbox (`fetcher.py`).  Volumes, secrets and networks will join here.

Preparation runs in worker threads while the task is TASK_STAGING (so its
time counts against the launch timeout) and stops when the task is killed.
A failure is a `PrepareError` whose message the user reads in the task's
`lastTaskFailure`.
"""

from __future__ import annotations

import functools
from pathlib import Path

import trio

from ..models.launch import TaskLaunch
from .fetcher import DEFAULT_CACHE_BYTES, Fetcher, FetchError
from .images import Image, ImageError, ImageStore


class PrepareError(Exception):
    """The task cannot start: the message says why."""


def needs_preparing(launch: TaskLaunch) -> bool:
    return bool(launch.fetch or image_of(launch))


def image_of(launch: TaskLaunch) -> str | None:
    c = launch.container
    return None if c is None else c.image


class Preparer:
    """The agent's fetcher and image store, shared by its tasks (at most
    `concurrency` preparations at once)."""

    def __init__(self, work_dir: Path, *, images: ImageStore | None = None,
                 fetcher_cache_bytes: int = DEFAULT_CACHE_BYTES, concurrency: int = 8) -> None:
        self.fetcher = Fetcher(work_dir / "fetcher-cache", cache_bytes=fetcher_cache_bytes)
        self.images = images
        self._limiter = trio.CapacityLimiter(concurrency)

    async def prepare(self, launch: TaskLaunch, sandbox: Path) -> Image | None:
        """Pull the task's image (returned) and fetch its artifacts."""
        image: Image | None = None
        try:
            reference = image_of(launch)
            if reference is not None:
                if self.images is None:  # refusal() keeps these from an agent without images
                    raise PrepareError(f"Cannot run the image '{reference}': this agent has no image runtime")
                force = bool(launch.container and launch.container.force_pull_image)
                image = await trio.to_thread.run_sync(
                    functools.partial(self.images.get, reference, force_pull=force),
                    abandon_on_cancel=True, limiter=self._limiter)
            if launch.fetch:
                await trio.to_thread.run_sync(self.fetcher.fetch_all, launch.fetch, sandbox,
                                              abandon_on_cancel=True, limiter=self._limiter)
        except (FetchError, ImageError) as e:
            raise PrepareError(str(e)) from None
        except OSError as e:
            raise PrepareError(f"Failed to prepare the task: {e}") from None
        return image

    def close(self) -> None:
        self.fetcher.close()
