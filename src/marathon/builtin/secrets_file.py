"""The built-in secret store: one file per secret under `--secrets_dir`.

An app's `secrets: {"pw": {"source": "/db/password"}}` is the file
`<secrets_dir>/db/password`; its bytes are the value.  The store is asked
last (`trylast`), after any plugin's `marathon_secret_resolve`, so a plugin
(a vault, a KMS) may hold some sources and leave the rest to the files.
A source that names no file, or a path leading out of the directory, is
not resolved (the task then fails to launch with the secret named).

Values are read from disk at each launch batch's first use (a change of
the file is seen by the next launch) and never kept.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ..hookspecs import hookimpl

log = logging.getLogger("marathon.secrets")

MAX_SECRET_BYTES = 1024 * 1024


class FileSecrets:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def path_of(self, source: str) -> Path | None:
        relative = source.lstrip("/")
        if not relative:
            return None
        path = Path(os.path.normpath(self.root / relative))
        if self.root not in path.parents:
            return None
        return path

    @hookimpl(trylast=True)
    def marathon_secret_resolve(self, source: str, app_id: str) -> bytes | None:
        path = self.path_of(source)
        if path is None:
            return None
        try:
            if path.stat().st_size > MAX_SECRET_BYTES:
                log.warning("secret_too_large source=%s app=%s", source, app_id)
                return None
            return path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as e:
            log.warning("secret_unreadable source=%s app=%s error=%s", source, app_id, e.strerror)
            return None
