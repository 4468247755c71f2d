"""Several "hosts" on one Linux machine: a bridge and one network namespace each.

    with TestNetwork() as net:
        a, b = net.add_host("a1"), net.add_host("a2")
        server = a.run(["python3", "-m", "http.server", "8000", "--bind", a.ip])
        b.check_output(["curl", "-sm", "1", "http://a1:8000/"])  # hosts know each other's names
        a.partition([b.ip])        # b <-/-> a, silently (DROP both ways)
        a.heal()
        a.link_down()              # a's cable is pulled
        server.kill()              # by PID: `ip netns exec` execs the command

The layout is the one of CLUSTER.md section 4, with names and a subnet chosen
per run so that concurrent test runs on one machine do not collide:

* a bridge ``mtn<id>`` (``<id>``: 6 random hex digits) holding ``10.77.X.1/24``,
  where ``10.77.X.0/24`` overlaps no route or address of the machine;
* per host, a netns ``mtn<id>-<name>`` and a veth pair: ``mtn<id>h<n>`` on the
  bridge, ``eth0`` inside with ``10.77.X.<n+2>/24``, ``lo`` up, and a default
  route via the bridge.  The test process (the root namespace) reaches every
  host directly through the bridge address.
* per host, ``/etc/netns/<netns>/hosts`` and ``resolv.conf``, which
  ``ip netns exec`` mounts over ``/etc/hosts`` and ``/etc/resolv.conf``: the
  hosts of the network resolve by name (short and netns name) and by address,
  and DNS fails at once.  The machine's nameserver is unreachable from a
  namespace (nothing routes or NATs for it), so without this every lookup
  waits for the resolver's timeouts: ``http.server``, which looks up the name
  of its bind address, starts 10 s late.

Faults are made inside the host's own namespace (its iptables tables are its
own), so the machine's ruleset is not touched, with one exception: when bridged
traffic passes the machine's iptables FORWARD chain
(``net.bridge.bridge-nf-call-iptables=1``) and that chain could drop it (policy
not ACCEPT, or any rule in it), one ``-i <bridge> -o <bridge> -j ACCEPT`` rule
is inserted for this bridge only, and removed again by `TestNetwork.close`.

Everything needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN), ``ip`` (iproute2) and
``iptables`` (``scripts/install-system-deps.sh`` installs them); `available`
says why not, for ``pytest.skip``.  IPv4 only.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import functools
import ipaddress
import json
import logging
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from typing import Any

__all__ = ["Host", "NetnsError", "TestNetwork", "available"]

log = logging.getLogger(__name__)

# Every name this module creates starts with this, so a leak is easy to spot
# (`ip netns list | grep ^mtn`, `ip link | grep mtn`).
_PREFIX = "mtn"
_POOL = "10.77.{}.0/24"
_SBIN = ":/usr/local/sbin:/usr/sbin:/sbin:/usr/bin:/bin"
_HOST_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}")
# Held while choosing a subnet and assigning it, so that two runs starting at
# the same moment cannot both take the same free /24.
_LOCK_DIRS = ("/run/lock", tempfile.gettempdir())
_ETC_NETNS = "/etc/netns"
_IGNORE_LINKDOWN = "/proc/sys/net/ipv4/conf/eth0/ignore_routes_with_linkdown"
_VETH_PEER = ("type", "veth", "peer", "name", "eth0", "netns")  # + the namespace
# glibc tries 127.0.0.1:53, gets ICMP port unreachable, gives up in a few ms.
_RESOLV_CONF = (
    "# marathon.testing.netns: no DNS inside a test host; names are in /etc/hosts\n"
    "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n"
)


class NetnsError(RuntimeError):
    """A command that builds or tears down the test network failed."""


def _tool(name: str) -> str | None:
    # sbin is not on every PATH (sudo -E, minimal CI images), but root has it.
    return shutil.which(name, path=os.environ.get("PATH", "") + _SBIN)


def _cmd(argv: Sequence[str], *, input: str | None = None, check: bool = True) -> str:
    """Run a setup command; its stdout, or `NetnsError` with its stderr."""
    log.debug("netns: %s", " ".join(argv))
    stdin = None if input is not None else subprocess.DEVNULL
    proc = subprocess.run(argv, input=input, stdin=stdin, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise NetnsError(f"{' '.join(argv)!r} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def _ip() -> str:
    path = _tool("ip")
    if path is None:
        raise NetnsError("no `ip` command (Debian package iproute2)")
    return path


def _iptables(restore: bool = False) -> str:
    path = _tool("iptables-restore" if restore else "iptables")
    if path is None:
        raise NetnsError("no `iptables` command (Debian package iptables)")
    return path


@functools.cache
def available() -> str | None:
    """Why this machine cannot build a `TestNetwork`, or None if it can.

    Checks root, the ``ip`` and ``iptables`` commands, and then really creates
    (and deletes) a namespace with a veth and lists iptables inside it, since
    a root without CAP_NET_ADMIN or without nf_tables fails only there.  The
    answer is computed once per process.

        if reason := netns.available():
            pytest.skip(reason)
    """
    if not sys.platform.startswith("linux"):
        return f"network namespaces need Linux, not {sys.platform}"
    if os.geteuid() != 0:
        return "network namespaces need root (CAP_NET_ADMIN, CAP_SYS_ADMIN)"
    tools = (("ip", "iproute2"), ("iptables", "iptables"), ("iptables-restore", "iptables"))
    for tool, package in tools:
        if _tool(tool) is None:
            return f"no `{tool}` command (Debian package {package}; scripts/install-system-deps.sh)"
    ip = _ip()
    probe = f"{_PREFIX}{secrets.token_hex(3)}"
    ns = f"{probe}-probe"
    try:
        _cmd([ip, "netns", "add", ns])
        try:
            _cmd([ip, "link", "add", f"{probe}h0", *_VETH_PEER, ns])
            _cmd([ip, "netns", "exec", ns, _iptables(), "-w", "-S", "INPUT"])
        finally:
            _cmd([ip, "link", "del", f"{probe}h0"], check=False)
            _cmd([ip, "netns", "del", ns], check=False)
    except NetnsError as exc:
        return f"cannot create a network namespace with a veth: {exc}"
    return None


def _used_networks(ip: str) -> list[ipaddress.IPv4Network]:
    """Every IPv4 network the root namespace routes or has an address in (default route aside)."""
    used = []
    for route in json.loads(_cmd([ip, "-j", "-4", "route", "show", "table", "all"]) or "[]"):
        with contextlib.suppress(ValueError):  # "default", or anything else not a network
            used.append(ipaddress.IPv4Network(route.get("dst", "default"), strict=False))
    for link in json.loads(_cmd([ip, "-j", "-4", "addr", "show"]) or "[]"):
        for a in link.get("addr_info", []):
            used.append(ipaddress.IPv4Network(f"{a['local']}/{a['prefixlen']}", strict=False))
    return used


@contextlib.contextmanager
def _allocation_lock() -> Iterator[None]:
    for directory in _LOCK_DIRS:
        if os.path.isdir(directory) and os.access(directory, os.W_OK):
            break
    with open(os.path.join(directory, "marathon-testnet.lock"), "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _bridge_forwarding_may_drop(iptables: str) -> bool:
    """True if bridged frames go through the machine's FORWARD chain and it might drop them.

    With br_netfilter on (``bridge-nf-call-iptables=1``; built into Debian's
    kernel), frames between two ports of one bridge traverse the iptables
    FORWARD chain; Docker, for one, sets its policy to DROP.  A chain with the
    ACCEPT policy and no rules cannot drop anything.
    """
    try:
        with open("/proc/sys/net/bridge/bridge-nf-call-iptables") as f:
            if f.read().strip() == "0":
                return False
    except FileNotFoundError:  # br_netfilter not loaded: bridged frames skip iptables
        return False
    return _cmd([iptables, "-w", "-S", "FORWARD"]).split() != ["-P", "FORWARD", "ACCEPT"]


class TestNetwork:
    """A bridge with a fresh /24 and the hosts (network namespaces) attached to it.

    Created on construction; `close` (also on leaving the ``with`` block, and
    at interpreter exit if forgotten) removes everything this object made:
    processes started with `Host.run`, namespaces, veths, the bridge and the
    FORWARD rule, even when the test failed.  `close` is idempotent.

    ``subnet`` forces a /24 (``"10.77.5.0/24"``) instead of picking a free one
    at random from ``10.77.0.0/16``.
    """

    __test__ = False  # a harness, not a pytest test class, despite its name

    def __init__(self, *, subnet: str | None = None) -> None:
        self.run_id = secrets.token_hex(3)
        self.bridge = f"{_PREFIX}{self.run_id}"
        self.subnet: ipaddress.IPv4Network  # set by _create, under the allocation lock
        self.gateway = ""  # the bridge's address: the root namespace, as seen from the hosts
        self._hosts: list[Host] = []
        self._bridge_made = False
        self._forward_rule: list[str] | None = None
        self._closed = False
        self._pid = os.getpid()
        self._ip = _ip()
        atexit.register(self._close_at_exit)
        try:
            self._create(subnet)
        except BaseException:
            self.close()
            raise

    # -- building ------------------------------------------------------------------

    def _create(self, subnet: str | None) -> None:
        ip = self._ip
        _cmd([ip, "link", "add", self.bridge, "type", "bridge"])
        self._bridge_made = True
        with _allocation_lock():
            self.subnet = self._choose_subnet(subnet)
            self.gateway = str(self.subnet[1])
            _cmd([ip, "addr", "add", f"{self.gateway}/{self.subnet.prefixlen}", "dev", self.bridge])
        _cmd([ip, "link", "set", self.bridge, "up"])
        iptables = _iptables()
        if _bridge_forwarding_may_drop(iptables):
            rule = ["FORWARD", "-i", self.bridge, "-o", self.bridge, "-m", "comment",
                    "--comment", f"marathon test network {self.bridge}", "-j", "ACCEPT"]
            _cmd([iptables, "-w", "-I", *rule])
            self._forward_rule = rule

    def _choose_subnet(self, forced: str | None) -> ipaddress.IPv4Network:
        used = _used_networks(self._ip)
        if forced is not None:
            net = ipaddress.IPv4Network(forced)
            if net.prefixlen != 24:
                raise ValueError(f"subnet must be a /24, not {forced}")
            if any(net.overlaps(u) for u in used):
                raise NetnsError(f"subnet {net} overlaps a route or address of this machine")
            return net
        # Random order: a run that crashed without cleaning up leaves its /24
        # taken, and concurrent runs spread out instead of queueing on 10.77.0.
        for x in secrets.SystemRandom().sample(range(256), 256):
            net = ipaddress.IPv4Network(_POOL.format(x))
            if not any(net.overlaps(u) for u in used):
                return net
        raise NetnsError("no free /24 in 10.77.0.0/16 (leaked bridges? `ip link | grep mtn`)")

    def add_host(self, name: str) -> Host:
        """A new namespace on the bridge, with the next free address.

        ``name`` (letters, digits, ``_.-``; unique in this network) becomes
        part of the namespace name, ``mtn<id>-<name>``.
        """
        if self._closed:
            raise NetnsError("this TestNetwork is closed")
        if not _HOST_NAME.fullmatch(name):
            raise ValueError(f"bad host name {name!r}: use letters, digits and _.- (max 32)")
        if any(h.short_name == name for h in self._hosts):
            raise ValueError(f"host {name!r} already exists in this network")
        index = len(self._hosts)
        if index + 2 >= self.subnet.num_addresses - 1:
            raise NetnsError(f"no address left in {self.subnet}")
        host = Host(self, name, index, str(self.subnet[index + 2]))
        self._hosts.append(host)  # before creating anything: close() undoes a half-made host
        host._create()
        self._write_hosts_files()
        return host

    def _write_hosts_files(self) -> None:
        # Rewritten in place (same inode) for every host, so that processes
        # already running, whose /etc/hosts is a bind mount of the old file,
        # learn the new host's name too.
        try:
            with open("/etc/hosts") as f:
                machine = f.read()
        except FileNotFoundError:
            machine = "127.0.0.1 localhost\n"
        lines = [machine.rstrip("\n"), f"# marathon.testing.netns {self.bridge}"]
        lines.append(f"{self.gateway} {self.bridge}")
        lines += [f"{h.ip} {h.short_name} {h.name}" for h in self._hosts]
        text = "\n".join(lines) + "\n"
        for host in self._hosts:
            with open(os.path.join(host._etc, "hosts"), "w") as f:
                f.write(text)

    @property
    def hosts(self) -> tuple[Host, ...]:
        return tuple(self._hosts)

    # -- tearing down --------------------------------------------------------------

    def close(self) -> None:
        """Stop what `Host.run` started, delete namespaces, veths, the FORWARD rule, the bridge.

        Every step is tried even if an earlier one failed; the failures are
        raised together afterwards as one `NetnsError`.
        """
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self._close_at_exit)
        errors: list[str] = []
        for host in self._hosts:
            host._stop_processes(errors)
        for host in reversed(self._hosts):
            host._destroy(errors)
        if self._forward_rule is not None:
            self._undo(errors, [_iptables(), "-w", "-D", *self._forward_rule])
            self._forward_rule = None
        if self._bridge_made:
            self._undo(errors, [self._ip, "link", "del", self.bridge])
            self._bridge_made = False
        with contextlib.suppress(OSError):  # not empty: another run is using it
            os.rmdir(_ETC_NETNS)
        if errors:
            raise NetnsError("test network cleanup incomplete: " + "; ".join(errors))

    @staticmethod
    def _undo(errors: list[str], argv: list[str], gone: str = "") -> None:
        try:
            _cmd(argv)
        except NetnsError as exc:
            if not (gone and gone in str(exc)):
                errors.append(str(exc))

    def _close_at_exit(self) -> None:
        # A forked child that exits through sys.exit runs the parent's atexit
        # hooks too; it must not tear down the parent's network.
        if os.getpid() == self._pid:
            try:
                self.close()
            except NetnsError as exc:
                log.warning("%s", exc)

    def __enter__(self) -> TestNetwork:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            self.close()
        except NetnsError:
            if exc_type is None:
                raise
            # Do not hide the test's own failure behind a cleanup error.
            log.warning("test network cleanup after a failure", exc_info=True)

    def __repr__(self) -> str:
        return f"<TestNetwork {self.bridge} {getattr(self, 'subnet', None)} hosts={[h.name for h in self._hosts]}>"


class Host:
    """One network namespace on a `TestNetwork`: a machine of its own as far as IP goes.

    ``name`` is the namespace (for ``ip netns exec``), ``ip`` its address on
    the bridge, ``veth`` the host-side end of its cable.  Made by
    `TestNetwork.add_host`.
    """

    __test__ = False

    def __init__(self, network: TestNetwork, short_name: str, index: int, ip: str) -> None:
        self.network = network
        self.short_name = short_name
        self.name = f"{network.bridge}-{short_name}"
        self.veth = f"{network.bridge}h{index}"
        self.ip = ip
        self._ipcmd = network._ip
        self._etc = os.path.join(_ETC_NETNS, self.name)
        self._made_ns = False
        self._made_veth = False
        self._made_etc = False
        self._procs: list[subprocess.Popen[Any]] = []
        self._drop_rules: list[str] = []

    def _create(self) -> None:
        ip, ns, net = self._ipcmd, self.name, self.network
        for attempt in range(3):  # a concurrent close() may rmdir /etc/netns under us
            try:
                os.makedirs(self._etc)
                break
            except FileNotFoundError:
                if attempt == 2:
                    raise
        self._made_etc = True
        with open(os.path.join(self._etc, "resolv.conf"), "w") as f:
            f.write(_RESOLV_CONF)
        _cmd([ip, "netns", "add", ns])
        self._made_ns = True
        _cmd([ip, "link", "add", self.veth, *_VETH_PEER, ns])
        self._made_veth = True
        _cmd([ip, "link", "set", self.veth, "master", net.bridge, "up"])
        _cmd([ip, "-n", ns, "addr", "add", f"{self.ip}/{net.subnet.prefixlen}", "dev", "eth0"])
        _cmd([ip, "-n", ns, "link", "set", "lo", "up"])
        _cmd([ip, "-n", ns, "link", "set", "eth0", "up"])
        _cmd([ip, "-n", ns, "route", "add", "default", "via", net.gateway])
        # Without this, a host whose cable is pulled (link_down) keeps routing
        # into the dead link and its connects hang until ARP gives up (~3 s);
        # with it they fail at once with ENETUNREACH.  Per namespace.
        self.check_output(["sh", "-c", f"echo 1 > {_IGNORE_LINKDOWN}"])

    # -- running things inside -----------------------------------------------------

    def command(self, argv: Sequence[str]) -> list[str]:
        """``argv`` prefixed to run inside this namespace (``ip netns exec <name> ...``)."""
        return [self._ipcmd, "netns", "exec", self.name, *argv]

    def run(self, argv: Sequence[str], **popen_kw: Any) -> subprocess.Popen[Any]:
        """Start ``argv`` inside this namespace; ``popen_kw`` go to `subprocess.Popen`.

        ``ip netns exec`` execs the command, so ``.pid`` is the command's own
        PID: signal it as usual.  Whatever is still running when the network
        closes gets SIGTERM, then SIGKILL.
        """
        proc = subprocess.Popen(self.command(argv), **popen_kw)
        self._procs = [p for p in self._procs if p.poll() is None]
        self._procs.append(proc)
        return proc

    def check_output(self, argv: Sequence[str], **kw: Any) -> str:
        """`subprocess.check_output` of ``argv`` inside this namespace, as text by default.

        Pass ``timeout=`` for anything that might hang on a partition.
        """
        kw.setdefault("text", True)
        kw.setdefault("stdin", subprocess.DEVNULL)
        return subprocess.check_output(self.command(argv), **kw)

    def pids(self) -> list[int]:
        """Every process in this namespace, however it got there (``ip netns pids``)."""
        return [int(p) for p in _cmd([self._ipcmd, "netns", "pids", self.name]).split()]

    # -- faults --------------------------------------------------------------------

    def partition(self, from_ips: Sequence[str] | None = None) -> None:
        """Drop, silently, all traffic between this host and ``from_ips`` (both ways).

        ``None`` cuts this host off from everything but its own loopback.
        The rules (iptables DROP in INPUT and OUTPUT) live in this host's own
        namespace and are applied at once; peers see timeouts, never a reset.
        Use ``network.gateway`` to cut the host off from the root namespace
        (the test process).  Repeated calls add to the partition.
        """
        if from_ips is None:
            specs = ["INPUT ! -i lo -j DROP", "OUTPUT ! -o lo -j DROP"]
        else:
            specs = []
            for peer in from_ips:
                addr = ipaddress.IPv4Address(peer)  # rejects anything that is not an IPv4 address
                specs += [f"INPUT -s {addr} -j DROP", f"OUTPUT -d {addr} -j DROP"]
        new = [s for s in dict.fromkeys(specs) if s not in self._drop_rules]
        if new:
            self._iptables_restore([f"-I {s}" for s in new])
            self._drop_rules += new

    def heal(self) -> None:
        """Remove the rules `partition` added (and only those)."""
        if self._drop_rules:
            self._iptables_restore([f"-D {s}" for s in self._drop_rules])
            self._drop_rules = []

    def link_down(self) -> None:
        """Pull this host's cable: its veth end on the bridge goes down.

        Inside, ``eth0`` loses carrier and the host's own connects fail at once
        (ENETUNREACH).  Peers get silence: their connects time out, or fail
        with EHOSTUNREACH once ARP gives up (~3 s).  Established connections
        are not told; they see it at their next retransmission timeout.
        """
        _cmd([self._ipcmd, "link", "set", self.veth, "down"])

    def link_up(self) -> None:
        """Plug the cable back in; routes inside come back by themselves."""
        _cmd([self._ipcmd, "link", "set", self.veth, "up"])

    def _iptables_restore(self, lines: list[str]) -> None:
        # One iptables-restore per change: the INPUT and OUTPUT halves of a
        # partition appear (and disappear) together, and it costs one exec.
        script = "*filter\n" + "".join(line + "\n" for line in lines) + "COMMIT\n"
        _cmd(self.command([_iptables(restore=True), "-w", "--noflush"]), input=script)

    # -- tearing down --------------------------------------------------------------

    def _stop_processes(self, errors: list[str], grace: float = 2.0) -> None:
        running = [p for p in self._procs if p.poll() is None]
        for p in running:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for p in running:
            try:
                p.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self._procs = []
        if not self._made_ns:
            return
        # Anything else left inside (children of those, or processes started
        # some other way) would keep the namespace alive, unseen, after
        # `ip netns del`.
        try:
            leftovers = self.pids()
        except NetnsError as exc:
            errors.append(str(exc))
            return
        for pid in leftovers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def _destroy(self, errors: list[str]) -> None:
        # Delete the veth explicitly: namespace destruction is asynchronous,
        # and its eth0 (hence our end) can linger for a second or two after
        # `ip netns del`.  Deleting one end of a pair deletes both.
        if self._made_veth:
            argv = [self._ipcmd, "link", "del", self.veth]
            TestNetwork._undo(errors, argv, gone="Cannot find device")
            self._made_veth = False
        if self._made_ns:
            TestNetwork._undo(errors, [self._ipcmd, "netns", "del", self.name], gone="No such file")
            self._made_ns = False
        if self._made_etc:
            try:
                shutil.rmtree(self._etc)
            except FileNotFoundError:
                pass
            except OSError as exc:
                errors.append(f"cannot remove {self._etc}: {exc}")
            self._made_etc = False

    def __repr__(self) -> str:
        return f"<Host {self.name} {self.ip}>"
