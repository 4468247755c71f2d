"""`python -m marathon_auth_basic hash`: print the argon2id hash of a password.

The password is read from standard input (its first line; a trailing newline
is not part of it), or asked for twice when standard input is a terminal, so
it never appears in the shell history or the process list:

    $ printf '%s' "$PASSWORD" | python -m marathon_auth_basic hash
    $argon2id$v=19$m=19456,t=2,p=1$...
"""

from __future__ import annotations

import argparse
import getpass
import sys

from ._passwords import HASH_PARAMETERS, hash_password


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m marathon_auth_basic", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    h = sub.add_parser("hash", help="print the argon2id hash of a password read from stdin")
    h.add_argument("--time-cost", type=int, default=HASH_PARAMETERS["time_cost"], help="argon2 passes (default %(default)s)")
    h.add_argument("--memory-cost", type=int, default=HASH_PARAMETERS["memory_cost"], help="KiB of memory (default %(default)s)")
    h.add_argument("--parallelism", type=int, default=HASH_PARAMETERS["parallelism"], help="lanes (default %(default)s)")
    args = parser.parse_args(argv)

    if sys.stdin.isatty():
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            print("the passwords differ", file=sys.stderr)
            return 1
    else:
        line = sys.stdin.readline()
        password = line[:-1] if line.endswith("\n") else line
        password = password[:-1] if password.endswith("\r") else password
    if not password:
        print("refusing to hash an empty password", file=sys.stderr)
        return 1
    print(hash_password(password, time_cost=args.time_cost, memory_cost=args.memory_cost, parallelism=args.parallelism))
    return 0


if __name__ == "__main__":
    sys.exit(main())
