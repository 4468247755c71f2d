"""How a task's command becomes a process on the agent's host: its
environment, its argv (a lone simple command is executed without the shell
in between, as `bash -c` does), the user it runs as, and the spawn itself
(glibc's `posix_spawn` through the compiled `_spawn` module, or Popen).

The executor (`executor.py`) supervises what is started here; a container
(`oci.py`) is started the same way, its process being `runc run`.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import NamedTuple

from ..models.launch import TaskLaunch
from .health import user_options as probe_user_options

try:
    if os.environ.get("MARATHON_PUREPYTHON", "") in ("1", "true", "yes"):
        raise ImportError("MARATHON_PUREPYTHON")
    from ._spawn import spawn as _posix_spawn
    from ._spawn import spawn_many
except ImportError:  # not compiled, or the pure-Python run: Popen does the job
    _posix_spawn = None
    spawn_many = None

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_PASSTHROUGH_ENV = ("PATH", "HOME", "LANG", "TZ")


class SpawnError(Exception):
    """The task could not be started; the message is the TASK_FAILED message."""


class Plan(NamedTuple):
    """How one task is to be started (`Executor._plan`): argv, environment and user."""

    argv: list[str]
    executable: str | None
    env: dict[str, str]
    user_kw: dict[str, object]
    shell: bool  # a shell command run without the shell: /bin/sh may still run it

    def shell_may_run_it(self, error: OSError) -> bool:
        """A script without `#!` (ENOEXEC): the shell runs those itself."""
        return error.errno == errno.ENOEXEC and self.shell and self.argv[0] != "/bin/sh"


def shell_argv(launch: TaskLaunch) -> tuple[list[str], str]:
    return ["/bin/sh", "-c", launch.command or ""], "/bin/sh"


def exec_task(argv: list[str], executable: str | None, env: dict[str, str], sandbox: Path,
          user_kw: dict[str, object]) -> tuple[int, subprocess.Popen[bytes] | None]:
    """Start the process: (pid, Popen or None when spawned without Popen)."""
    if _posix_spawn is not None and not user_kw:
        return _posix_spawn(executable or argv[0], argv, env, sandbox,
                            sandbox / "stdout", sandbox / "stderr"), None
    with open(sandbox / "stdout", "ab") as out, open(sandbox / "stderr", "ab") as err:
        popen = subprocess.Popen(
            argv, executable=executable, cwd=sandbox, env=env, stdin=subprocess.DEVNULL,
            stdout=out, stderr=err, start_new_session=True, close_fds=True, **user_kw,
        )
    return popen.pid, popen


def task_env(launch: TaskLaunch, sandbox: Path) -> dict[str, str]:
    """The task's environment: exactly what Marathon built, plus what Mesos adds.

    PATH, HOME, LANG and TZ come from the agent only if Marathon did not set
    them; the agent's own environment is otherwise not inherited.
    """
    env = dict(launch.env)
    env.update(secret_env(launch))
    for key in _PASSTHROUGH_ENV:
        if key not in env and key in os.environ:
            env[key] = os.environ[key]
    env.setdefault("PATH", DEFAULT_PATH)
    env["MESOS_SANDBOX"] = str(sandbox)
    env["MESOS_TASK_ID"] = launch.task_id
    return env


def secret_env(launch: TaskLaunch) -> dict[str, str]:
    """The task's secret environment variables, as the leader resolved them."""
    out = {}
    for name, v in launch.secret_env_values.items():
        text = v.text()
        if text is not None:
            out[name] = text
    return out


def command_argv(launch: TaskLaunch, env: dict[str, str], sandbox: Path) -> tuple[list[str], str | None]:
    """(argv, executable) for Popen; SpawnError if there is nothing to run."""
    if launch.shell:
        if not launch.command:
            raise SpawnError("Failed to launch task: the task has no command")
        words = plain_command(launch.command)
        if words is not None:
            found = which(words[0], env["PATH"])
            if found is not None:
                # What `bash -c` does (and Mesos on most hosts): exec a lone
                # simple command in place of the shell, with PWD exported.
                env["PWD"] = str(sandbox)
                return words, found
        return ["/bin/sh", "-c", launch.command], "/bin/sh"
    if not launch.argv:
        raise SpawnError("Failed to launch task: the task has no arguments to run")
    exe = launch.argv[0]
    if "/" in exe:
        path = exe if os.path.isabs(exe) else str(sandbox / exe)
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            raise SpawnError(f"Failed to launch task: '{exe}' is not an executable file")
        return list(launch.argv), path
    found = lookup(exe, env["PATH"])
    if found is None:
        raise SpawnError(f"Failed to launch task: executable '{exe}' not found in PATH ({env['PATH']})")
    return list(launch.argv), found


# Words the shell passes through unchanged: no quoting, expansion,
# globbing, redirection, comments or operators.
_PLAIN_WORD = re.compile(r"[A-Za-z0-9_./:,@%+=-]+")
# dash's builtins and reserved words: these are not looked up in PATH.
_SHELL_WORDS = frozenset(
    ". : [ alias bg break cd chdir command continue echo eval exec exit export false fc fg getopts "
    "hash jobs kill local printf pwd read readonly return set shift test times trap true type "
    "ulimit umask unalias unset wait ! case do done elif else esac fi for if in then until while"
    .split()
)


def plain_command(command: str) -> list[str] | None:
    """The words of a shell command that is one plain external command, else None.

    `bash -c "sleep 3600"` parses the words and execs `sleep` in its own
    place, so running those words directly gives the same process with one
    exec fewer (half the cost of a launch; Debian's dash would instead keep
    a shell waiting as the parent).  Anything the shell would interpret
    (quotes, `$`, globs, `~`, redirections, `;`, assignments, builtins)
    returns None and the command goes to `/bin/sh -c` as Mesos runs it.
    """
    words = command.split(" ")
    words = [w for w in words if w]
    if not words or not all(_PLAIN_WORD.fullmatch(w) for w in words):
        return None
    first = words[0]
    if "=" in first or "/" in first or first in _SHELL_WORDS:
        return None
    return words


def which(name: str, path: str) -> str | None:
    """`name` looked up in `path` like the shell does; None if any entry is
    relative (it would depend on the working directory) or nothing matches."""
    if any(not entry.startswith("/") for entry in path.split(":")):
        return None
    return lookup(name, path)


# Programs found on a PATH, for a second: the tasks of a burst share one
# lookup (nine stat calls on Debian's PATH) instead of repeating it, as the
# shell's own hash table would.  Only hits are kept, so a program installed
# meanwhile is found at once; one removed is missed for at most a second.
_LOOKUP_SECONDS = 1.0
_found: dict[tuple[str, str], tuple[float, str]] = {}


def lookup(name: str, path: str) -> str | None:
    key = (name, path)
    now = time.monotonic()
    hit = _found.get(key)
    if hit is not None and now - hit[0] < _LOOKUP_SECONDS:
        return hit[1]
    found = shutil.which(name, path=path)
    if found is not None:
        if len(_found) >= 256:
            _found.clear()
        _found[key] = (now, found)
    return found


def user_options(user: str | None, sandbox: Path) -> dict[str, object]:
    """Popen options to run as `user` (which costs the vfork fast path),
    the sandbox and its output files handed to that user."""
    try:
        options = probe_user_options(user)
    except ValueError as e:
        raise SpawnError(f"Failed to launch task: {e}") from None
    if options:
        for path in (sandbox, sandbox / "stdout", sandbox / "stderr"):
            if not path.exists():
                path.touch()
            os.chown(path, options["user"], options["group"])  # type: ignore[arg-type]
    return options
