"""Running a task from an image: an OCI bundle per task, run by `runc`.

A container task is the process `runc run <id>` in the foreground: it is
the task's process for the executor (spawned, watched by pidfd, its exit
status the container's, its stdout and stderr the sandbox files), so
supervision, re-adoption after an agent restart and the kill with grace are
the executor's, the same as for a plain process.  runc passes the signals
it receives on to the container's first process; a SIGKILL, which it cannot
pass on, is sent with `runc kill` as well.

Each container has, under `<work dir>/containers/<task id>/`:

- `rootfs/`: an overlay mount with the image's unpacked rootfs (shared,
  `images.py`) as the lower layer and `upper/` as the container's own
  writable layer (cheaper than a copy per container; RECIPES.md);
- `config.json`: the OCI runtime spec, built here (never the image's
  defaults): the process, mounts, namespaces, capabilities and limits.

How the image and the definition combine is Mesos' rule (its Mesos
containerizer with a Docker image):

- `cmd` (a shell command): `/bin/sh -c <cmd>`, the image's ENTRYPOINT and
  CMD ignored;
- `args`: the image's ENTRYPOINT followed by `args` (`args` alone when the
  image has no ENTRYPOINT);
- neither: ENTRYPOINT followed by CMD;
- the environment: the image's, then the task's (Marathon's variables win);
  `MESOS_SANDBOX` is `/mnt/mesos/sandbox`, where the sandbox is mounted;
- the working directory: the image's WorkingDir, else the sandbox;
- the user: the definition's `user`, else the image's User, else root;
  names are looked up in the image's own /etc/passwd and /etc/group.

The container shares the agent's network (host networking, Mesos' default)
and hostname, and has its own pid, ipc and mount namespaces.  Limits: when
the agent gave the task a cgroup, runc runs inside it and the container's
cgroup nests below it, so the task cgroup's cpu and memory limits hold (and
its OOM counter says whether the kernel killed something); without agent
cgroups the limits are written into config.json for runc to apply.
"""

from __future__ import annotations

import json
import logging
import os
import re
import resource
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..models.launch import TaskLaunch
from .images import Image, ImageStore
from .process import DEFAULT_PATH, Plan, secret_env

log = logging.getLogger("marathon.agent.oci")

SANDBOX_IN_CONTAINER = "/mnt/mesos/sandbox"
_ID_OK = re.compile(r"[^A-Za-z0-9_.+-]")

# Docker's default set: what most images expect their root to be able to do.
DEFAULT_CAPS = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW", "CAP_SETGID",
    "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL",
    "CAP_AUDIT_WRITE",
]
ALL_CAPS = DEFAULT_CAPS + [
    "CAP_DAC_READ_SEARCH", "CAP_LINUX_IMMUTABLE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_IPC_LOCK",
    "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT", "CAP_SYS_NICE", "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_LEASE",
    "CAP_AUDIT_CONTROL", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ",
]
_MASKED = ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
           "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi"]
_READONLY = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]


class ContainerError(Exception):
    """The container could not be prepared: the message says why."""


@dataclass(frozen=True, slots=True)
class Container:
    id: str
    dir: Path  # <work dir>/containers/<task id>
    argv: list[str]  # what the executor spawns


def container_id(task_id: str) -> str:
    return _ID_OK.sub("_", task_id)


class OciRuntime:
    """Bundles, runs and cleans up the containers of one agent."""

    def __init__(self, work_dir: Path, *, runtime: str = "runc") -> None:
        self.root = work_dir / "containers"
        self.state = work_dir / "runc"  # runc's --root: its own record of containers
        self.secrets = work_dir / "secrets"  # secret volumes' files (prepare.py writes them)
        self.runtime = runtime

    def _base(self) -> list[str]:
        return [self.runtime, "--root", str(self.state)]

    # -- before the start ------------------------------------------------------------

    def prepare(self, launch: TaskLaunch, sandbox: Path, image: Image, env: dict[str, str], *,
                limits: bool, netns: str | None = None) -> Container:
        """The bundle of `launch` (blocking: runs in a worker thread)."""
        cid = container_id(launch.task_id)
        d = self.root / launch.task_id
        if d.exists():
            self.cleanup(launch.task_id)
        rootfs = d / "rootfs"
        for sub in ("upper", "work", "rootfs"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        sandbox.mkdir(parents=True, exist_ok=True)
        options = f"lowerdir={image.rootfs},upperdir={d / 'upper'},workdir={d / 'work'}"
        try:
            subprocess.run(["mount", "-t", "overlay", "overlay", "-o", options, str(rootfs)],
                           check=True, capture_output=True, text=True)
        except subprocess.CalledProcessError as e:
            shutil.rmtree(d, ignore_errors=True)
            raise ContainerError(f"Failed to launch the container: cannot mount its root filesystem: "
                                 f"{(e.stderr or e.stdout).strip()}") from None
        try:
            spec = build_spec(launch, image, rootfs, sandbox, env, limits=limits, netns=netns,
                              secrets=self.secrets)
            (d / "config.json").write_text(json.dumps(spec, indent=1))
        except BaseException:
            self.cleanup(launch.task_id)
            raise
        self.state.mkdir(parents=True, exist_ok=True)
        return Container(id=cid, dir=d, argv=[*self._base(), "run", "--bundle", str(d), cid])

    def plan(self, launch: TaskLaunch, sandbox: Path, image: Image, *, limits: bool,
             netns: str | None = None) -> Plan:
        """How the executor starts the container: `runc run` with an
        environment of its own (the container's is in config.json)."""
        container = self.prepare(launch, sandbox, image, {**launch.env, **secret_env(launch)}, limits=limits,
                                 netns=netns)
        env = {"PATH": DEFAULT_PATH, "MESOS_TASK_ID": launch.task_id, "MESOS_SANDBOX": str(sandbox)}
        return Plan(container.argv, None, env, {}, False)

    # -- while it runs ---------------------------------------------------------------

    def kill(self, task_id: str, signal_name: str = "KILL") -> None:
        """Signal every process of the container (blocking, short)."""
        subprocess.run([*self._base(), "kill", "--all", container_id(task_id), signal_name],
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=30)

    # -- after its end ---------------------------------------------------------------

    def cleanup(self, task_id: str) -> None:
        """Forget the container (runc's state, its cgroup), unmount and
        remove its root filesystem.  The sandbox stays (it is the task's)."""
        cid = container_id(task_id)
        if self.state.exists():
            subprocess.run([*self._base(), "delete", "--force", cid], stdin=subprocess.DEVNULL,
                           capture_output=True, timeout=60)
        d = self.root / task_id
        rootfs = d / "rootfs"
        if os.path.ismount(rootfs):
            done = subprocess.run(["umount", str(rootfs)], capture_output=True)
            if done.returncode != 0:
                subprocess.run(["umount", "-l", str(rootfs)], capture_output=True)
        shutil.rmtree(d, ignore_errors=True)

    def live_rootfs(self) -> list[Path]:
        """The image rootfs under every prepared container (for the image GC)."""
        out = []
        if not self.root.is_dir():
            return out
        for d in self.root.iterdir():
            try:
                spec = json.loads((d / "config.json").read_text())
                out.append(Path(spec["annotations"]["marathon.image.rootfs"]))
            except (OSError, KeyError, ValueError):
                continue
        return out


def build_spec(launch: TaskLaunch, image: Image, rootfs: Path, sandbox: Path, env: dict[str, str], *,
               limits: bool, netns: str | None = None, secrets: Path | None = None) -> dict:
    """The OCI runtime spec of a task (see the module docstring)."""
    c = image.config
    if launch.shell:
        if not launch.command:
            raise ContainerError("Failed to launch the container: the task has an empty command")
        args = ["/bin/sh", "-c", launch.command]
    elif launch.argv:
        args = [*c.entrypoint, *launch.argv]
    else:
        args = [*c.entrypoint, *c.cmd]
    if not args:
        raise ContainerError(f"Failed to launch the container: the image '{image.reference}' has no "
                             "ENTRYPOINT or CMD, and the app no cmd or args")
    full_env: dict[str, str] = {}
    for item in c.env:
        name, _, value = item.partition("=")
        full_env[name] = value
    full_env.update(env)
    full_env.setdefault("PATH", DEFAULT_PATH)
    full_env["MESOS_SANDBOX"] = SANDBOX_IN_CONTAINER
    full_env["MESOS_TASK_ID"] = launch.task_id
    uid, gid, groups = resolve_user(launch.user or c.user or "0", rootfs)
    privileged = bool(launch.container and launch.container.privileged)
    caps = ALL_CAPS if privileged else DEFAULT_CAPS
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    mounts = [
        {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs",
         "options": ["nosuid", "noexec", "nodev", "ro"]},
        {"destination": SANDBOX_IN_CONTAINER, "type": "bind", "source": str(sandbox), "options": ["rbind", "rw"]},
    ]
    mounts += volume_mounts(launch, secrets)
    # Host networking: the host's name resolution, read-only.
    for f in ("/etc/resolv.conf", "/etc/hosts"):
        if os.path.exists(f):
            mounts.append({"destination": f, "type": "bind", "source": f, "options": ["rbind", "ro"]})
    linux: dict = {
        "namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "mount"},
                       *([{"type": "network", "path": netns}] if netns else [])],
        "cgroupsPath": container_id(launch.task_id),
    }
    if not privileged:
        linux["maskedPaths"] = _MASKED
        linux["readonlyPaths"] = _READONLY
    if limits:
        res: dict = {}
        mem = launch.mem_limit if isinstance(launch.mem_limit, (int, float)) else launch.mem
        if mem and mem > 0:
            res["memory"] = {"limit": int(mem * 1024 * 1024), "swap": int(mem * 1024 * 1024)}
        cpu: dict = {"shares": max(2, int(launch.cpus * 1024))}
        cpus = launch.cpu_limit if isinstance(launch.cpu_limit, (int, float)) else None
        if cpus:
            cpu.update(quota=int(cpus * 100_000), period=100_000)
        res["cpu"] = cpu
        linux["resources"] = res
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {"uid": uid, "gid": gid, **({"additionalGids": groups} if groups else {})},
            "args": args,
            "env": [f"{k}={v}" for k, v in full_env.items()],
            "cwd": c.working_dir or SANDBOX_IN_CONTAINER,
            "capabilities": {k: caps for k in ("bounding", "effective", "permitted")},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": hard, "soft": soft}],
            "noNewPrivileges": False,
        },
        "root": {"path": str(rootfs), "readonly": False},
        "mounts": mounts,
        "linux": linux,
        "annotations": {"marathon.task.id": launch.task_id, "marathon.image": image.reference,
                        "marathon.image.rootfs": str(image.rootfs)},
    }


def volume_mounts(launch: TaskLaunch, secrets: Path | None = None) -> list[dict]:
    """The app's host and secret volumes as bind mounts (secrets read-only,
    from the files `prepare.py` wrote under `secrets`): an absolute
    containerPath is a path in the image, a relative one is under the
    sandbox (Mesos' rule)."""
    out = []
    for v in launch.container.volumes if launch.container else ():
        target = v.container_path if v.container_path.startswith("/") else \
            f"{SANDBOX_IN_CONTAINER}/{v.container_path}"
        if v.kind == "secret" and secrets is not None and v.secret in launch.secret_values:
            out.append({"destination": os.path.normpath(target), "type": "bind",
                        "source": str(secrets / launch.task_id / v.secret), "options": ["rbind", "ro"]})
            continue
        if v.kind != "host":
            continue
        assert v.host_path is not None
        if not os.path.exists(v.host_path):
            raise ContainerError(f"Failed to launch the container: the host path '{v.host_path}' of the "
                                 f"volume at '{v.container_path}' does not exist on this agent")
        out.append({"destination": os.path.normpath(target), "type": "bind", "source": v.host_path,
                    "options": ["rbind", "ro" if v.mode == "RO" else "rw"]})
    return out


def resolve_user(user: str, rootfs: Path) -> tuple[int, int, list[int]]:
    """(uid, gid, extra gids) of `user` ("name", "uid", "name:group",
    "uid:gid") in the image's own /etc/passwd and /etc/group."""
    name, _, group = user.partition(":")
    passwd = _table(rootfs / "etc/passwd")
    groups = _table(rootfs / "etc/group")
    if name.isdigit():
        uid = int(name)
        entry = next((e for e in passwd if e[2] == name), None)
        gid = int(entry[3]) if entry else 0
    else:
        entry = next((e for e in passwd if e[0] == name), None)
        if entry is None:
            raise ContainerError(f"Failed to launch the container: no user '{name}' in the image's /etc/passwd")
        uid, gid = int(entry[2]), int(entry[3])
    if group:
        if group.isdigit():
            gid = int(group)
        else:
            g = next((e for e in groups if e[0] == group), None)
            if g is None:
                raise ContainerError(f"Failed to launch the container: no group '{group}' in the image's /etc/group")
            gid = int(g[2])
    user_name = next((e[0] for e in passwd if e[2] == str(uid)), None)
    extra = sorted({int(g[2]) for g in groups if user_name and len(g) > 3 and user_name in g[3].split(",")
                    and int(g[2]) != gid})
    return uid, gid, extra


def _table(path: Path) -> list[list[str]]:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return []
    return [line.split(":") for line in text.splitlines() if line and not line.startswith("#") and line.count(":") >= 2]


def runtime_problem(runtime: str = "runc") -> str | None:
    """Why this machine cannot run images with `runtime`, or None."""
    if os.geteuid() != 0:
        return "the agent does not run as root (containers need mounts and namespaces)"
    if shutil.which(runtime) is None:
        return f"{runtime} is not installed"
    from .images import tools_missing

    missing = tools_missing()
    if missing:
        return f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not installed"
    try:
        if "overlay" not in Path("/proc/filesystems").read_text():
            return "the kernel has no overlay filesystem"
    except OSError:
        pass
    return None


def image_support(work_dir: Path, *, runtime: str = "runc", insecure_registries: tuple[str, ...] = (),
                  auth_file: Path | None = None) -> tuple[ImageStore | None, OciRuntime | None]:
    """The agent's image store and runtime, or (None, None) with a warning
    saying why it runs no images (`runtime` "none": on purpose)."""
    if runtime == "none":
        return None, None
    why = runtime_problem(runtime)
    if why is not None:
        log.warning("container images unavailable: %s (apps with an image fail to launch here)", why)
        return None, None
    path = shutil.which(runtime)
    assert path is not None
    store = ImageStore(work_dir / "images", insecure_registries=insecure_registries, auth_file=auth_file)
    return store, OciRuntime(work_dir, runtime=path)
