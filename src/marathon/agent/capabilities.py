"""What an agent can give a task, and the one check of a launch against it.

A launch carries everything its definition asks for (`TaskLaunch`: an
image, volumes, networks, port mappings, artifacts to fetch, secrets,
GPUs, a TTY, a custom executor).  The agent runs a task only when it can
provide every one of those; otherwise it starts nothing and reports
TASK_FAILED with a message naming what was asked and why it cannot be done
here.  Running the command on the host without what was asked would be
worse than failing: an app asking for `alpine` would see the host's Debian,
a "persistent" volume would silently be the sandbox, a secret would be an
unset variable.

`refusal()` is the only place that decides this, for every agent (the
embedded one, `marathon agent`, the simulator): a runtime or sandbox
feature is turned on by setting its flag in `Capabilities` where the agent
builds them, and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..models.launch import TaskLaunch

# Mesos' reason for a launch the containerizer could not carry out.
LAUNCH_FAILED_REASON = "REASON_CONTAINER_LAUNCH_FAILED"


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What this agent can provide beyond a plain process on its host."""

    # Container types ("MESOS", "DOCKER") whose images it can run.
    image_runtimes: frozenset[str] = frozenset()
    fetch: bool = False  # downloads `fetch` URIs into the sandbox
    # Volume kinds it mounts: "host", "persistent", "secret", "external";
    # and those it mounts only into a container with an image.
    volume_kinds: frozenset[str] = frozenset()
    image_volume_kinds: frozenset[str] = frozenset()
    secrets: bool = False  # resolves secret env vars itself
    secret_files: bool = False  # writes secret volumes' values (resolved by the leader) for the task
    # Container networks (by name) it can attach tasks to, and whether it
    # does bridge networking with port mappings.
    networks: frozenset[str] = frozenset()
    bridge: bool = False
    privileged: bool = False  # runs privileged containers (the agent's --allow_privileged)
    gpus: int = 0
    tty: bool = False
    executors: frozenset[str] = field(default_factory=frozenset)  # custom executors it runs


PLAIN_PROCESSES = Capabilities()
"""An agent that runs commands as processes on its host, and nothing more."""

IMAGE_RUNTIMES = frozenset({"MESOS", "DOCKER"})  # one OCI runtime runs both (agent/oci.py)


def agent_capabilities(*, images: bool, networks: frozenset[str] = frozenset(), gpus: int = 0,
                       privileged: bool = False) -> Capabilities:
    """What a real agent (embedded or `marathon agent`) gives today:
    processes with their artifacts, images when it has a runtime, the CNI
    networks it has (`mesos-bridge` among them: BRIDGE networking)."""
    return Capabilities(image_runtimes=IMAGE_RUNTIMES if images else frozenset(), fetch=True, gpus=gpus,
                        image_volume_kinds=frozenset({"host"}) if images else frozenset(),
                        networks=networks, bridge="mesos-bridge" in networks, secret_files=True,
                        privileged=privileged and images)


def refusal(launch: TaskLaunch, caps: Capabilities) -> str | None:
    """Why this agent cannot run `launch` as asked, or None if it can.

    Every unmet need is named (a user fixing one should not discover the
    next only at the next failure).  Cheap for the common case: a plain
    command with none of these needs is a handful of attribute reads.
    """
    c = launch.container
    if (c is None and not launch.fetch and not launch.networks and not launch.secret_env
            and not launch.gpus and not launch.tty and not launch.executor):
        return None
    needs: list[str] = []
    if c is not None:
        if c.image is not None and c.type not in caps.image_runtimes:
            needs.append(f"the container image '{c.image}' ({c.type} containerizer): "
                         "this agent has no image runtime")
        elif c.image is None and c.type == "DOCKER":
            needs.append("a DOCKER container without an image")
        if c.pull_config and c.image is not None and c.pull_config not in launch.secret_values:
            needs.append(f"the pull credentials in the secret '{c.pull_config}': the secret could not be "
                         "resolved (--secrets_dir, or a plugin's marathon_secret_resolve)")
        if c.privileged and not (caps.privileged and c.image is not None):
            needs.append("a privileged container: this agent does not allow privileged containers"
                         if not caps.privileged else "a privileged container without an image")
        for v in c.volumes:
            if v.kind == "secret" and caps.secret_files:
                if v.secret not in launch.secret_values:
                    needs.append(f"the secret volume of '{v.secret}' at '{v.container_path}': its secret could "
                                 "not be resolved (--secrets_dir, or a plugin's marathon_secret_resolve)")
                elif c.image is None and v.container_path.startswith("/"):
                    needs.append(f"the secret volume of '{v.secret}' at '{v.container_path}': an absolute "
                                 "path needs a container with an image (or make it relative to the sandbox)")
                continue
            if v.kind in caps.volume_kinds or (c.image is not None and v.kind in caps.image_volume_kinds
                                               and c.type in caps.image_runtimes):
                continue
            what = f"the {_describe_volume(v.kind, v.host_path, v.secret, v.provider)} at '{v.container_path}'"
            if v.kind in caps.image_volume_kinds:
                needs.append(f"{what}: this agent mounts {v.kind} volumes only into containers with an image")
            else:
                needs.append(f"{what}: this agent does not mount {v.kind} volumes")
    if launch.fetch and not caps.fetch:
        uris = ", ".join(f.uri for f in launch.fetch)
        needs.append(f"artifacts to fetch ({uris}): this agent does not fetch URIs")
    if sum(1 for net in launch.networks if net.mode != "host") > 1:
        needs.append("several container networks: this agent attaches a task to one network")
    for net in launch.networks:
        if net.mode == "container/bridge":
            if not caps.bridge:
                needs.append("bridge networking (container/bridge) with its port mappings: "
                             "this agent has no bridge network")
        elif net.mode == "container" and (net.name or "") not in caps.networks:
            needs.append(f"the container network '{net.name or ''}': "
                         "this agent has no container network of that name")
    if launch.secret_env and not caps.secrets:
        # A plugin may have delivered them (it set the variables).
        missing = sorted(name for name in launch.secret_env
                         if name not in launch.env and name not in launch.secret_env_values)
        if missing:
            needs.append(f"secrets for the environment variables {', '.join(missing)}: "
                         "they could not be resolved (--secrets_dir, or a plugin's marathon_secret_resolve)")
    if launch.gpus > caps.gpus:
        needs.append(f"{launch.gpus} GPU(s): this agent has {caps.gpus}")
    if launch.tty and not caps.tty:
        needs.append("a TTY: this agent does not allocate terminals to tasks")
    if launch.executor and launch.executor not in caps.executors:
        needs.append(f"the custom executor '{launch.executor}': this agent runs tasks with "
                     "its own executor only")
    if not needs:
        return None
    return "Cannot launch the task: it asks for " + "; and ".join(needs)


def _describe_volume(kind: str, host_path: str | None, secret: str | None, provider: str | None) -> str:
    if kind == "host":
        return f"host volume '{host_path}'"
    if kind == "secret":
        return f"secret volume of '{secret}'"
    if kind == "external":
        return f"external volume (provider '{provider}')"
    return "persistent volume"
