"""Container networks through CNI plugins (Debian's containernetworking-plugins),
the way Mesos' `network/cni` isolator attaches tasks.

A task on a network other than the host's gets a network namespace of its
own (`ip netns add`), attached by running the network's plugin chain (ADD,
each plugin given the previous one's result), with its port mappings handed
to plugins that declare the `portMappings` capability (portmap: hostPort to
containerPort, from other machines and from the agent itself).  Its address
is the first IP of the result; the task (plain process through `nsenter`,
or container through its OCI spec) runs in that namespace.  At its end the
chain runs DEL in reverse order and the namespace goes.  What was attached
is recorded under `<work dir>/cni/attachments/` first, so an agent that
restarts can still detach a task that ended meanwhile.

Networks:

- `mesos-bridge`: what `container/bridge` networking (Marathon's BRIDGE)
  means, as in DC/OS: a bridge `mesos-cni0` on this agent with host-local
  addresses from `bridge_subnet` (172.31.254.0/24 as Mesos' default),
  masquerade for outgoing traffic, hairpin, and portmap;
- every network defined in the agent's CNI configuration directory
  (`--network_cni_config_dir`: `*.conf` single-plugin and `*.conflist`
  files), attached to by `container` networking with that `name`.

Blocking (subprocesses): runs in worker threads.  Failures are `CniError`s
whose message is what the user reads in `lastTaskFailure`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("marathon.agent.cni")

BRIDGE_NETWORK = "mesos-bridge"
DEFAULT_PLUGINS_DIR = Path("/usr/lib/cni")
DEFAULT_BRIDGE_SUBNET = "172.31.254.0/24"
IFNAME = "eth0"


class CniError(Exception):
    """A task could not be attached to (or detached from) a network."""


@dataclass(frozen=True, slots=True)
class PortMap:
    host_port: int
    container_port: int
    protocol: str = "tcp"


@dataclass(frozen=True, slots=True)
class Attachment:
    netns: str  # the name under /run/netns
    ip: str | None

    @property
    def netns_path(self) -> str:
        return f"/run/netns/{self.netns}"


class CniNetworks:
    """The networks of one agent (see the module docstring).  Thread-safe
    per task: each task is attached and detached by one thread at a time."""

    def __init__(self, work_dir: Path, *, config_dir: Path | None = None,
                 plugins_dir: Path = DEFAULT_PLUGINS_DIR, bridge_subnet: str = DEFAULT_BRIDGE_SUBNET) -> None:
        self.state = work_dir / "cni"
        self.plugins_dir = plugins_dir
        self.config_dir = config_dir
        self.bridge_subnet = bridge_subnet
        # Names in /run/netns are machine-wide: this agent's are prefixed by
        # a hash of its work dir, so that two agents on one machine differ.
        self._prefix = "mt" + hashlib.sha256(str(work_dir.resolve()).encode()).hexdigest()[:6]
        self.networks: dict[str, dict] = {BRIDGE_NETWORK: self._bridge_conf()}
        if config_dir is not None:
            self.networks.update(load_configs(config_dir))

    def _bridge_conf(self) -> dict:
        return {
            "cniVersion": "1.0.0", "name": BRIDGE_NETWORK,
            "plugins": [
                {"type": "bridge", "bridge": "mesos-cni0", "isGateway": True, "ipMasq": True, "hairpinMode": True,
                 # host-local's own (machine-wide) store: every agent of this
                 # machine hands out addresses of the one bridge from it.
                 "ipam": {"type": "host-local", "subnet": self.bridge_subnet, "routes": [{"dst": "0.0.0.0/0"}]}},
                {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True},
            ],
        }

    def names(self) -> frozenset[str]:
        return frozenset(self.networks)

    # -- attaching -------------------------------------------------------------------

    def attach(self, task_id: str, network: str, ports: Sequence[PortMap] = ()) -> Attachment:
        conf = self.networks.get(network)
        if conf is None:
            raise CniError(f"Failed to attach the task to network '{network}': no such network on this agent")
        netns = self._netns_name(task_id)
        record = self.state / "attachments" / f"{netns}.json"
        if record.exists() or os.path.exists(f"/run/netns/{netns}"):
            self.detach(task_id)  # what an earlier attempt left
        record.parent.mkdir(parents=True, exist_ok=True)
        runtime = {"portMappings": [{"hostPort": p.host_port, "containerPort": p.container_port,
                                     "protocol": p.protocol} for p in ports]}
        # Recorded before anything exists, so that a crash halfway is undone.
        record.write_text(json.dumps({"task_id": task_id, "network": network, "conf": conf,
                                      "runtime": runtime, "results": []}))
        _run(["ip", "netns", "add", netns], f"Failed to attach the task to network '{network}'")
        _run(["ip", "-n", netns, "link", "set", "lo", "up"], f"Failed to attach the task to network '{network}'")
        results: list[dict] = []
        prev: dict | None = None
        try:
            for plugin in conf["plugins"]:
                prev = self._call("ADD", plugin, conf, netns, task_id, prev, runtime)
                results.append(prev)
                record.write_text(json.dumps({"task_id": task_id, "network": network, "conf": conf,
                                              "runtime": runtime, "results": results}))
        except CniError as e:
            self.detach(task_id)
            raise CniError(f"Failed to attach the task to network '{network}': {e}") from None
        ip = None
        for entry in (prev or {}).get("ips", []):
            ip = entry.get("address", "").split("/")[0] or None
            if ip:
                break
        log.info("task_attached task_id=%s network=%s netns=%s ip=%s", task_id, network, netns, ip)
        return Attachment(netns=netns, ip=ip)

    def current(self, task_id: str) -> Attachment | None:
        """The recorded attachment of `task_id` (a re-adopted task's)."""
        netns = self._netns_name(task_id)
        try:
            saved = json.loads((self.state / "attachments" / f"{netns}.json").read_text())
        except (OSError, ValueError):
            return None
        ip = None
        for entry in (saved["results"][-1] if saved["results"] else {}).get("ips", []):
            ip = entry.get("address", "").split("/")[0] or None
            if ip:
                break
        return Attachment(netns=netns, ip=ip)

    def detach(self, task_id: str) -> None:
        """Undo `attach` (idempotent; after a restart too)."""
        netns = self._netns_name(task_id)
        record = self.state / "attachments" / f"{netns}.json"
        try:
            saved = json.loads(record.read_text())
        except (OSError, ValueError):
            saved = None
        if saved is not None:
            conf, results = saved["conf"], saved["results"]
            plugins = conf["plugins"]
            # DEL in reverse, each plugin given the result it was added with.
            for i in reversed(range(len(plugins))):
                prev = results[-1] if results else None
                try:
                    self._call("DEL", plugins[i], conf, netns, saved["task_id"], prev, saved["runtime"])
                except CniError as e:
                    log.warning("cni_del_failed task_id=%s plugin=%s error=%s", task_id, plugins[i]["type"], e)
        if os.path.exists(f"/run/netns/{netns}"):
            subprocess.run(["ip", "netns", "delete", netns], capture_output=True)
        record.unlink(missing_ok=True)

    def _netns_name(self, task_id: str) -> str:
        return f"{self._prefix}-{hashlib.sha256(task_id.encode()).hexdigest()[:16]}"

    def _call(self, command: str, plugin: dict, conf: dict, netns: str, task_id: str, prev: dict | None,
              runtime: dict) -> dict:
        body = {"cniVersion": conf.get("cniVersion", "1.0.0"), "name": conf["name"], **plugin}
        if prev is not None:
            body["prevResult"] = prev
        caps = plugin.get("capabilities") or {}
        if caps.get("portMappings"):
            body["runtimeConfig"] = {"portMappings": runtime["portMappings"]}
        env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "CNI_COMMAND": command, "CNI_CONTAINERID": netns, "CNI_NETNS": f"/run/netns/{netns}",
            "CNI_IFNAME": IFNAME, "CNI_PATH": str(self.plugins_dir),
        }
        exe = self.plugins_dir / plugin["type"]
        if not exe.exists():
            raise CniError(f"the CNI plugin '{plugin['type']}' is not installed in {self.plugins_dir}")
        done = subprocess.run([str(exe)], input=json.dumps(body), env=env, capture_output=True, text=True,
                              timeout=60)
        if done.returncode != 0:
            try:
                err = json.loads(done.stdout)
                message = err.get("msg", "") + (f": {err['details']}" if err.get("details") else "")
            except ValueError:
                message = (done.stderr or done.stdout).strip()
            raise CniError(f"{plugin['type']} {command}: {message or 'failed'}")
        if command == "DEL" or not done.stdout.strip():
            return prev or {}
        return json.loads(done.stdout)


def load_configs(directory: Path) -> dict[str, dict]:
    """Network name -> conflist, from `*.conf` and `*.conflist` files."""
    out: dict[str, dict] = {}
    try:
        files = sorted(directory.iterdir())
    except OSError as e:
        log.warning("cni_config_dir_unreadable dir=%s error=%s", directory, e)
        return out
    for f in files:
        if f.suffix not in (".conf", ".conflist", ".json"):
            continue
        try:
            data = json.loads(f.read_text())
        except (OSError, ValueError) as e:
            log.warning("cni_config_unreadable file=%s error=%s", f, e)
            continue
        if "plugins" not in data:
            plugin = {k: v for k, v in data.items() if k not in ("cniVersion", "name")}
            data = {"cniVersion": data.get("cniVersion", "1.0.0"), "name": data.get("name"), "plugins": [plugin]}
        name = data.get("name")
        if isinstance(name, str) and name and name not in out:
            out[name] = data
    return out


def _run(argv: list[str], what: str) -> None:
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        raise CniError(f"{what}: {' '.join(argv[:3])}: {(done.stderr or done.stdout).strip()}")


def network_support(work_dir: Path, *, config_dir: Path | None = None,
                    plugins_dir: Path = DEFAULT_PLUGINS_DIR) -> CniNetworks | None:
    """The agent's networks, or None with a warning saying why it has none."""
    why = available(plugins_dir)
    if why is not None:
        log.warning("container networks unavailable: %s (apps on BRIDGE or container networks fail to "
                    "launch here)", why)
        return None
    return CniNetworks(work_dir, config_dir=config_dir, plugins_dir=plugins_dir)


def available(plugins_dir: Path = DEFAULT_PLUGINS_DIR) -> str | None:
    """Why this machine cannot attach tasks to networks, or None."""
    if os.geteuid() != 0:
        return "the agent does not run as root"
    for p in ("bridge", "host-local", "portmap"):
        if not (plugins_dir / p).exists():
            return f"the CNI plugin '{p}' is not installed in {plugins_dir}"
    if subprocess.run(["ip", "-V"], capture_output=True).returncode != 0:
        return "iproute2 is not installed"
    return None
