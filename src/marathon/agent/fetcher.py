"""Artifacts: the app's `fetch` (and legacy `uris`) put into a task's sandbox
before its command runs, as Mesos' fetcher does.

Each URI is downloaded (http, https) or copied (file://, or a plain
absolute path on the agent) into the sandbox under the last segment of its
path, or under `destPath` (relative to the sandbox, never outside it).
Then, in Mesos' order of precedence:

- `executable`: the file is made executable (and not extracted);
- `extract` and a name ending in .tar, .tar.gz, .tgz, .tar.bz2, .tbz2,
  .tar.xz, .txz or .zip: the archive is unpacked into the sandbox (or into
  `destPath`'s directory), and kept.  Members that would land outside the
  sandbox (absolute names, `..`, links pointing out) are refused;
- otherwise the file is left as it is.

`cache`: the download is kept in the agent's fetcher cache, keyed by the
URI, and later tasks asking for the same URI with `cache` get a copy of it
without a download.  The cache holds at most `cache_bytes`; the least
recently used entries go first.  A URI without `cache` is always downloaded
afresh (Mesos' semantics: `cache` is a promise that the URI's content does
not change).

Everything here is blocking and runs in a worker thread; a failure is a
`FetchError` whose message is what the user reads in `lastTaskFailure`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import stat
import tarfile
import threading
import time
import zipfile
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlsplit

import httpx

from ..models.launch import FetchUri

log = logging.getLogger("marathon.agent.fetcher")

ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".zip")
DEFAULT_CACHE_BYTES = 2 * 1024**3  # Mesos' --fetcher_cache_size
_CHUNK = 1 << 20


class FetchError(Exception):
    """A URI could not be fetched: the message names it and says why."""


def output_name(item: FetchUri) -> str:
    """The path, relative to the sandbox, that `item` is saved under."""
    if item.dest_path:
        return item.dest_path
    path = urlsplit(item.uri).path if "://" in item.uri else item.uri
    name = PurePosixPath(unquote(path)).name
    if not name or name in (".", ".."):
        raise FetchError(f"Failed to fetch '{item.uri}': its path names no file (use destPath)")
    return name


def inside(root: Path, relative: str) -> Path:
    """`root / relative`, refused when it would lie outside `root`."""
    if PurePosixPath(relative).is_absolute():
        raise FetchError(f"'{relative}' is not relative to the sandbox")
    target = Path(os.path.normpath(root / relative))
    if target != root and root not in target.parents:
        raise FetchError(f"'{relative}' lies outside the sandbox")
    return target


class Fetcher:
    """Fetches URIs into sandboxes, with one cache shared by every task of
    this agent (see the module docstring)."""

    def __init__(self, cache_dir: Path, *, cache_bytes: int = DEFAULT_CACHE_BYTES,
                 timeout: float = 300.0, client: httpx.Client | None = None) -> None:
        self.cache_dir = cache_dir
        self.cache_bytes = cache_bytes
        self.timeout = timeout
        self._client = client
        self._lock = threading.Lock()  # the cache's index: entries and their sizes
        self._inflight: dict[str, threading.Lock] = {}  # one download per cached URI at a time

    def _http(self) -> httpx.Client:
        if self._client is None:
            self._client = httpx.Client(timeout=httpx.Timeout(self.timeout, connect=30.0), follow_redirects=True)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    # -- the whole job ---------------------------------------------------------------

    def fetch_all(self, items: Sequence[FetchUri], sandbox: Path) -> None:
        sandbox.mkdir(parents=True, exist_ok=True)
        for item in items:
            started = time.monotonic()
            self.fetch(item, sandbox)
            log.debug("fetched uri=%s seconds=%.3f", item.uri, time.monotonic() - started)

    def fetch(self, item: FetchUri, sandbox: Path) -> Path:
        try:
            target = inside(sandbox, output_name(item))
        except FetchError as e:
            raise FetchError(f"Failed to fetch '{item.uri}': {e}") from None
        target.parent.mkdir(parents=True, exist_ok=True)
        if item.cache:
            self._from_cache(item.uri, target)
        else:
            self._download(item.uri, target)
        if item.executable:
            mode = target.stat().st_mode
            target.chmod(mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        elif item.extract and target.name.lower().endswith(ARCHIVE_SUFFIXES):
            try:
                extract(target, target.parent, sandbox)
            except FetchError as e:
                raise FetchError(f"Failed to extract '{item.uri}': {e}") from None
            except (OSError, tarfile.TarError, zipfile.BadZipFile, EOFError) as e:
                raise FetchError(f"Failed to extract '{item.uri}': {e}") from None
        return target

    # -- getting the bytes -----------------------------------------------------------

    def _download(self, uri: str, target: Path) -> None:
        """The content of `uri` into `target` (via a temporary name)."""
        partial = target.with_name(target.name + ".fetching")
        try:
            scheme = urlsplit(uri).scheme.lower() if "://" in uri else ""
            if scheme in ("http", "https"):
                self._http_get(uri, partial)
            elif scheme == "file" or (not scheme and uri.startswith("/")):
                source = Path(unquote(urlsplit(uri).path)) if scheme else Path(uri)
                try:
                    shutil.copyfile(source, partial)
                except OSError as e:
                    raise FetchError(f"Failed to fetch '{uri}': {e.strerror or e}") from None
            else:
                raise FetchError(f"Failed to fetch '{uri}': unsupported URI scheme "
                                 f"'{scheme or uri}' (http, https and file are fetched)")
            os.replace(partial, target)
        finally:
            if partial.exists():
                partial.unlink()

    def _http_get(self, uri: str, out: Path) -> None:
        try:
            with self._http().stream("GET", uri) as r:
                if r.status_code != 200:
                    raise FetchError(f"Failed to fetch '{uri}': HTTP {r.status_code} {r.reason_phrase}")
                with open(out, "wb") as f:
                    for chunk in r.iter_bytes(_CHUNK):
                        f.write(chunk)
        except httpx.HTTPError as e:
            raise FetchError(f"Failed to fetch '{uri}': {type(e).__name__}: {e}") from None
        except OSError as e:
            raise FetchError(f"Failed to fetch '{uri}': cannot write it: {e.strerror or e}") from None

    # -- the cache -------------------------------------------------------------------

    def _entry(self, uri: str) -> Path:
        return self.cache_dir / hashlib.sha256(uri.encode()).hexdigest()

    def _from_cache(self, uri: str, target: Path) -> None:
        entry = self._entry(uri)
        with self._lock:
            inflight = self._inflight.setdefault(uri, threading.Lock())
        with inflight:  # a second task asking for the same URI waits for the first download
            if not entry.exists():
                self.cache_dir.mkdir(parents=True, exist_ok=True)
                self._download(uri, entry)
                log.info("fetcher_cache_added uri=%s bytes=%d", uri, entry.stat().st_size)
                self._evict(keep=entry)
            else:
                log.debug("fetcher_cache_hit uri=%s", uri)
            os.utime(entry)  # most recently used
            # A copy, not a link: a task that changes its file must not
            # change the cache's.
            shutil.copyfile(entry, target)

    def _evict(self, *, keep: Path) -> None:
        """Drop the least recently used entries beyond the size limit."""
        with self._lock:
            entries = []
            for p in self.cache_dir.iterdir():
                if p.name.endswith(".fetching"):
                    continue
                try:
                    st = p.stat()
                except FileNotFoundError:
                    continue
                entries.append((st.st_mtime, st.st_size, p))
            total = sum(size for _, size, _ in entries)
            for _, size, p in sorted(entries):
                if total <= self.cache_bytes:
                    break
                if p == keep:
                    continue
                p.unlink(missing_ok=True)
                total -= size
                log.info("fetcher_cache_evicted entry=%s bytes=%d", p.name, size)


def extract(archive: Path, into: Path, sandbox: Path) -> None:
    """Unpack `archive` into `into`, refusing members that would leave `sandbox`."""
    name = archive.name.lower()
    if name.endswith(".zip"):
        with zipfile.ZipFile(archive) as z:
            for member in z.infolist():
                target = inside(sandbox, os.path.relpath(into / member.filename, sandbox))
                if member.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with z.open(member) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst, _CHUNK)
                mode = (member.external_attr >> 16) & 0o777
                if mode:
                    target.chmod(mode)
        return
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            inside(sandbox, os.path.relpath(into / member.name, sandbox))
        try:
            # The 'data' filter also refuses links out of the tree, device
            # files and absolute names, and drops setuid bits.
            tar.extractall(into, filter="data")
        except tarfile.FilterError as e:
            raise FetchError(str(e)) from None
