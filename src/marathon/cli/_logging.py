"""How every `marathon` command logs: one line per event on stderr."""

from __future__ import annotations

import logging
import sys

_LEVELS = {
    "off": logging.CRITICAL + 10,
    "error": logging.ERROR,
    "warn": logging.WARNING,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "debug": logging.DEBUG,
    "trace": logging.DEBUG,
    "all": logging.DEBUG,
}


def setup_logging(level: str) -> None:
    """One line per event: `time level logger key=value ...`; quiet libraries."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("marathon").setLevel(_LEVELS.get(level.lower(), logging.INFO))
