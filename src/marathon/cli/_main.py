"""Entry point of the `marathon` console script."""

import sys


def main(argv: list[str] | None = None) -> int:
    from .._version import __version__

    args = sys.argv[1:] if argv is None else argv
    if args and args[0] == "--version":
        print(f"marathon {__version__}")
        return 0
    print("usage: marathon serve ...", file=sys.stderr)
    return 2
