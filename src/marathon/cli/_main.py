"""The `marathon` command: `marathon serve [flags]`, `marathon --version`."""

from __future__ import annotations

import argparse
import errno
import gc
import os
import sqlite3
import sys

from .._version import MARATHON_API_VERSION, __version__
from ._exits import (
    EXIT_BAD_FLAG,
    EXIT_HTTP_BIND,
    EXIT_PLUGIN,
    EXIT_STORAGE,
    EXIT_ZK_UNREACHABLE,
    first_leaf,
    storage_failure,
)
from ._logging import setup_logging


def _parser() -> argparse.ArgumentParser:
    from ..config import build_parser

    parser = argparse.ArgumentParser(
        prog="marathon",
        description="Marathon on trio: run long-running services as Marathon apps.",
    )
    parser.add_argument("--version", action="version", version=f"marathon {__version__} (Marathon API {MARATHON_API_VERSION})")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve = sub.add_parser(
        "serve",
        help="run the Marathon server with an embedded agent",
        description="Run the Marathon server: the REST API on --http_address:--http_port, durable "
        "state in --data_dir, and an embedded agent that runs tasks on this machine. Every flag "
        "is also read from MARATHON_<FLAG> (e.g. MARATHON_HTTP_PORT).",
    )
    build_parser(serve)
    # `marathon agent|lb|state ...` are parsed by cli/agent.py, cli/lb.py and
    # cli/state.py (listed here for --help).
    sub.add_parser("agent", help="run tasks on this machine for a Marathon master elsewhere", add_help=False)
    sub.add_parser("lb", help="generate a load-balancer config (haproxy, ...) from Marathon's apps", add_help=False)
    sub.add_parser("state", help="export or import Marathon's state (backup; move onto ZooKeeper)", add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["agent"]:
        from .agent import main as agent_main

        return agent_main(args[1:])
    if args[:1] == ["lb"]:
        from .lb import main as lb_main

        return lb_main(args[1:])
    if args[:1] == ["state"]:
        from .state import main as state_main

        return state_main(args[1:])
    parser = _parser()
    ns, rest = parser.parse_known_args(args)
    if ns.command != "serve":
        parser.print_help()
        return 2
    from ..config import ConfigError, from_args

    try:
        config = from_args(args[args.index("serve") + 1 :])
    except ConfigError as exc:
        print(f"marathon: {exc}", file=sys.stderr)
        return EXIT_BAD_FLAG
    setup_logging(config.logging_level)
    return _serve(config)


# Python's default (700, 10, 10) runs a young collection every 700 net
# allocations and, as the heap grows, full collections that walk every live
# object: during a 100,000-instance burst (~700,000 tracked objects) that was
# a quarter of the server's CPU and pauses of 100 ms and more (S1).  A larger
# young generation makes collections rare without making them long: a young
# collection walks at most 50,000 objects (~10 ms), a middle one at most
# 250,000 (~25 ms; with 20 instead of 5 it was 1,000,000 and a 90 ms pause);
# cycles that live long enough to be old are collected after 5 x 100 young
# collections at the latest (and Python's own rule: when the objects that
# became old since the last full collection are a quarter of all).
GC_THRESHOLDS = (50_000, 5, 100)


def _tune_gc() -> None:
    """Collector thresholds for a long-running server (env MARATHON_GC_THRESHOLDS="a,b,c")."""
    text = os.environ.get("MARATHON_GC_THRESHOLDS", "")
    try:
        thresholds = tuple(int(x) for x in text.split(",")) if text else GC_THRESHOLDS
    except ValueError:
        print(f"marathon: ignoring MARATHON_GC_THRESHOLDS={text!r} (want three integers)", file=sys.stderr)
        thresholds = GC_THRESHOLDS
    gc.set_threshold(*thresholds)
    # What is loaded by now (modules, classes, functions) lives as long as
    # the process: keep it out of every future full collection.
    gc.freeze()


def _serve(config) -> int:  # type: ignore[no-untyped-def]
    import trio

    from ..agent.executor import WorkDirInUse
    from ..config import ConfigError
    from ..errors import StorageError
    from ..leadership import LeadershipEnded
    from ..plugins import PluginError
    from ..server import serve

    code = 0
    _tune_gc()
    try:
        trio.run(serve, config)
    except* KeyboardInterrupt:
        code = 0
    except* PluginError as group:
        print(f"marathon: plugin initialization failed: {first_leaf(group)}", file=sys.stderr)
        code = EXIT_PLUGIN
    except* ConfigError as group:
        print(f"marathon: {first_leaf(group)}", file=sys.stderr)
        code = EXIT_BAD_FLAG
    except* LeadershipEnded as group:
        ended = first_leaf(group)
        print(f"marathon: leadership ended ({ended}); exiting as --exit_on_leadership_loss asks", file=sys.stderr)
        code = ended.code  # type: ignore[attr-defined]
    except* StorageError as group:
        if not config.zk:
            raise
        print(f"marathon: cannot reach ZooKeeper at {config.redacted_zk}: {first_leaf(group)}", file=sys.stderr)
        code = EXIT_ZK_UNREACHABLE
    except* WorkDirInUse as group:
        print(f"marathon: {first_leaf(group)}", file=sys.stderr)
        code = EXIT_BAD_FLAG
    except* (OSError, sqlite3.Error) as group:
        exc = first_leaf(group)
        if getattr(exc, "errno", None) in (errno.EADDRINUSE, errno.EADDRNOTAVAIL):
            print(f"marathon: cannot bind {config.http_address}:{config.http_port}: {exc}", file=sys.stderr)
            code = EXIT_HTTP_BIND
        elif storage_failure(exc):
            print(f"marathon: cannot write to {config.data_dir}: {exc}; nothing was changed and "
                  "running tasks were left alone: free space and start again", file=sys.stderr)
            code = EXIT_STORAGE
        else:
            raise
    return code

