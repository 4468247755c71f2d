"""Every server flag, parsed once into a frozen `Config`.

Flags use Marathon's names (`--http_port`, `--zk`, `--mesos_role`, ...); each
is also accepted in dashed form (`--http-port`) and as an environment variable
`MARATHON_<FLAG>` (SPEC.md 10).  Boolean toggles are `--x` / `--disable_x`.
Durations keep Marathon's units (milliseconds for flags).  Flags of our own
(data directory, embedded agent resources, placement strategy) follow the
same conventions.  Services are handed only the part they need.
"""

from __future__ import annotations

import argparse
import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any
from urllib.parse import unquote

import platformdirs

FEATURES = frozenset({"vips", "task_killing", "external_volumes", "secrets", "gpu_resources"})

# A batch of more task changes than this (the instance tracker's, or a
# launch or kill of the embedded agent) logs one summary line at info and
# each task's own line at debug: per-task lines cost more CPU than placing
# a burst, and each write gives the GIL up to busy worker threads.
LOG_EACH_TASK_UP_TO = 50

# The default per-app instance limit leaves room for the 100,000-instance
# benchmark (S1) and keeps one app's instance records well inside a small
# machine.  Marathon's `instances` is a 32-bit int: no limit can be above it.
MAX_INSTANCES_PER_APP = 200_000
_INT32_MAX = 2**31 - 1
# One request body is at most this long (marathon.httpserver and the API
# enforce it); all bodies in flight together at most the budget: room for one
# body of the largest size and smaller ones beside it.  A body becomes 5-25
# times its size in objects while it is decoded and checked (measured:
# docs/configuration.md), so the budget bounds the memory requests take.
HTTP_MAX_REQUEST_BODY = 10 * 1024 * 1024
HTTP_MAX_BODY_BYTES_IN_FLIGHT = 16 * 1024 * 1024


class ConfigError(ValueError):
    """An invalid flag value; the CLI exits with 112 (Marathon's code)."""


def _default_hostname() -> str:
    name = socket.gethostname()
    try:
        socket.getaddrinfo(name, None)
    except OSError:
        return "127.0.0.1"
    return name


def parse_zk_url(url: str) -> tuple[str, str, tuple[str, str] | None]:
    """`zk://[user:pass@]host:port[,host:port...]/path` as (hosts, root
    path, credentials or None); ValueError says what is wrong."""
    scheme, sep, rest = url.partition("://")
    if scheme != "zk" or not sep:
        raise ValueError(f"not a zk:// url: {url!r}")
    netloc, slash, path = rest.partition("/")
    auth = None
    if "@" in netloc:
        userinfo, _, netloc = netloc.rpartition("@")
        user, colon, password = userinfo.partition(":")
        if not colon or not user:
            raise ValueError(f"zk url credentials must be user:password in {url!r}")
        auth = (unquote(user), unquote(password))
    if not netloc or any(not host for host in netloc.split(",")):
        raise ValueError(f"zk url needs host:port[,host:port...] in {url!r}")
    root = "/" + path.rstrip("/")
    if not slash or root == "/" or any(seg in ("", ".", "..") for seg in root[1:].split("/")):
        raise ValueError(f"zk url needs a path such as /marathon in {url!r}")
    return netloc, root, auth


@dataclass(frozen=True)
class Config:
    """The server's configuration.  Field names are the flag names."""

    # -- core -----------------------------------------------------------------
    master: str = field(default="local", metadata={"help": "Where tasks run: 'local' (the embedded agent on this machine, plus `marathon agent` machines once --agent_secret_file is set), 'agents' (only `marathon agent` machines: the cluster shape), or 'sim://<agents>[?cpus=..&mem=..&start_delay=..]' (simulated agents, for benchmarks)."})
    hostname: str = field(default_factory=_default_hostname, metadata={"help": "Advertised hostname (leader info, the embedded agent's HOST)."})
    framework_name: str = field(default="marathon", metadata={"help": "Framework name reported in /v2/info."})
    mesos_role: str = field(default="*", metadata={"help": "Default role of services outside role-enforcing groups."})
    new_group_enforce_role: str = field(default="off", metadata={"help": "off | top: whether new top-level groups enforce their role."})
    accepted_resource_roles_default_behavior: str = field(default="any", metadata={"help": "any | unreserved | reserved: offers accepted when an app sets no acceptedResourceRoles."})
    local_port_min: int = field(default=10000, metadata={"help": "Lowest service port assigned to apps."})
    local_port_max: int = field(default=20000, metadata={"help": "Highest service port assigned to apps."})
    secrets_dir: str | None = field(default=None, metadata={"help": "The built-in secret store: an app's secret with source '/db/password' is the file <dir>/db/password (plugins' marathon_secret_resolve are asked first). Needs --enable_features secrets for apps to name secrets."})
    enable_features: str = field(default="", metadata={"help": "Comma-separated features: vips, task_killing, external_volumes, secrets, gpu_resources."})
    default_network_name: str | None = field(default=None, metadata={"help": "Network name given to container networks that name none."})
    mesos_bridge_name: str = field(default="mesos-bridge", metadata={"help": "Name of the bridge network."})
    env_vars_prefix: str | None = field(default=None, metadata={"help": "Prefix for the PORT*/HOST variables of tasks."})
    max_running_deployments: int = field(default=100, metadata={"help": "More deployments than this at once are refused with 403."})
    max_instances_per_app: int = field(default=MAX_INSTANCES_PER_APP, metadata={"help": "Most instances one app may ask for (more: 422 at /instances). An app stored with more (before this limit, or under a higher one) is loaded with this many, and a warning is logged."})
    task_launch_timeout: int = field(default=300000, metadata={"help": "ms a task may stay STAGING/STARTING before it is killed."})
    task_launch_confirm_timeout: int = field(default=300000, metadata={"help": "ms a launched task may stay without any status before it is killed."})
    reconciliation_initial_delay: int = field(default=15000, metadata={"help": "ms before the first reconciliation with the agents."})
    reconciliation_interval: int = field(default=600000, metadata={"help": "ms between reconciliations with the agents."})
    scale_apps_initial_delay: int = field(default=15000, metadata={"help": "ms before the first periodic scale check."})
    scale_apps_interval: int = field(default=300000, metadata={"help": "ms between periodic scale checks."})
    kill_retry_timeout: int = field(default=30000, metadata={"help": "ms after which an unconfirmed kill is sent again."})
    event_stream_max_outstanding_messages: int = field(default=1024, metadata={"help": "Events buffered per /v2/events client before it is disconnected."})
    max_concurrent_marathon_health_checks: int = field(default=256, metadata={"help": "Marathon-level health probes in flight at once."})
    deployment_progress_deadline_seconds: float = field(default=600.0, metadata={"help": "Seconds without progress after which a deployment is reported stalled (it keeps trying)."})
    webui_url: str | None = field(default=None, metadata={"help": "URL of the web UI reported in /v2/info."})

    # -- storage -----------------------------------------------------------------
    data_dir: str = field(default_factory=lambda: platformdirs.user_data_dir("marathon"), metadata={"help": "Directory of durable local state (the SQLite store, the embedded agent's sandboxes)."})
    store: str = field(default="sqlite", metadata={"help": "State backend: sqlite (in --data_dir) | memory (nothing survives a restart)."})
    zk_max_versions: int = field(default=50, metadata={"help": "Versions kept per app and root group."})
    zk_compression: bool = field(default=True, metadata={"help": "Compress stored values above --zk_compression_threshold (zlib; --disable_zk_compression stores them as they are)."})
    zk_compression_threshold: int = field(default=65536, metadata={"help": "Stored values above this many bytes are compressed."})
    zk_max_node_size: int = field(default=1024000, metadata={"help": "Stored values above this many bytes are refused."})

    # -- high availability (CLUSTER.md 3.1-3.3, 3.10; docs/ha.md) ----------------
    zk: str | None = field(default=None, metadata={"help": "zk://[user:pass@]host:port[,host:port...]/path: keep the state in ZooKeeper and elect one leader among every master given the same URL (the others stand by and forward). Unset: one machine, state in --data_dir."})
    zk_session_timeout: int = field(default=10000, metadata={"help": "ms of ZooKeeper session: a leader silent this long is replaced."})
    zk_timeout: int = field(default=10000, metadata={"help": "ms a request may wait for ZooKeeper before it is answered 503."})
    zk_connection_timeout: int = field(default=10000, metadata={"help": "ms to wait for the first ZooKeeper connection at start-up (then exit 100)."})
    leader_proxy_connection_timeout: int = field(default=5000, metadata={"help": "ms a standby waits to connect to the leader when it forwards a request."})
    leader_proxy_read_timeout: int = field(default=10000, metadata={"help": "ms a standby waits for the leader's next bytes when it forwards a request."})
    exit_on_leadership_loss: bool = field(default=False, metadata={"help": "Exit (103, Marathon's behaviour) when leadership is lost or abdicated, for installations whose supervisor restarts the process; by default the process stands by and runs for leadership again."})

    # -- http -----------------------------------------------------------------
    http_address: str = field(default="127.0.0.1", metadata={"help": "Address the HTTP API binds to."})
    http_port: int = field(default=8080, metadata={"help": "Port of the HTTP API."})
    http_max_concurrent_requests: int | None = field(default=None, metadata={"help": "Requests beyond this many being answered at once get 503 with Retry-After (event streams and agent subscriptions do not count). Default: no limit."})
    http_max_body_bytes_in_flight: int = field(default=HTTP_MAX_BODY_BYTES_IN_FLIGHT, metadata={"help": "Request body bytes all requests together may hold at once; a request whose body does not fit waits up to 10 s for room, then gets 503 with Retry-After. At least the 10 MiB body limit."})
    http_server: str = field(default="builtin", metadata={"help": "builtin (trio + h11, the fast default) | hypercorn: which HTTP server runs the API."})
    access_control_allow_origin: str | None = field(default=None, metadata={"help": "Comma-separated CORS origins."})

    # -- embedded agent and placement (ours) ----------------------------------
    agent_resources: str | None = field(default=None, metadata={"help": "Embedded agent resources, Mesos style 'cpus:4;mem:8192;disk:10000' (default: detected)."})
    agent_ports: str = field(default="31000-32000", metadata={"help": "Embedded agent host port ranges, e.g. '31000-32000,33000-33100'."})
    agent_attributes: str | None = field(default=None, metadata={"help": "Embedded agent attributes 'rack:r1;zone_id:3' (used by constraints)."})
    agent_cgroups: str = field(default="auto", metadata={"help": "auto | off: cpu/memory limits of tasks through cgroups."})
    agent_oci_runtime: str = field(default="runc", metadata={"help": "The OCI runtime that runs the embedded agent's tasks with an image (runc); none: run no images."})
    agent_insecure_registries: str | None = field(default=None, metadata={"help": "host:port of registries the embedded agent pulls from in plain HTTP, comma-separated (loopback registries always are)."})
    agent_network_cni_config_dir: str | None = field(default=None, metadata={"help": "Directory of CNI network configurations (*.conf, *.conflist) the embedded agent's tasks may join by name; BRIDGE networking needs none."})
    agent_allow_privileged: bool = field(default=False, metadata={"help": "Let the embedded agent run containers that ask for `privileged` (every capability, no masked paths); refused otherwise."})
    agent_docker_config: str | None = field(default=None, metadata={"help": "A docker config.json with registry credentials for the embedded agent's pulls."})
    agent_spawn_threads: int = field(default=8, metadata={"help": "Worker threads that start the embedded agent's tasks (a burst goes to them in shares of up to 32)."})
    # -- remote agents (ours; CLUSTER.md 3.4-3.8) ------------------------------
    agent_secret_file: str | None = field(default=None, metadata={"help": "File holding the shared secret `marathon agent` processes present (at least 16 bytes). Without it no remote agent is accepted."})
    agent_heartbeat_interval: int = field(default=5000, metadata={"help": "ms between heartbeats on each agent connection, both ways; 3 missed: the agent is disconnected (its offers withdrawn, its tasks untouched)."})
    agent_unreachable_timeout: int = field(default=75000, metadata={"help": "ms without contact after which a disconnected agent's tasks are unreachable (each app's unreachableStrategy then applies)."})
    agent_reregister_timeout: int = field(default=120000, metadata={"help": "ms a restarted master waits for the agents its instances name to subscribe before their tasks count as unreachable."})
    placement_strategy: str = field(default="binpack", metadata={"help": "binpack | spread | firstfit (an app may override it with the label MARATHON_PLACEMENT_STRATEGY)."})
    launch_batch_size: int = field(default=20000, metadata={"help": "Most instances placed and launched in one scheduling pass."})
    launch_tokens: int = field(default=100, metadata={"help": "Launch throttle: launches allowed before more tokens arrive (reset to this every refresh interval; every instance that becomes running gives one back)."})
    launch_token_refresh_interval: int = field(default=30000, metadata={"help": "Milliseconds between resets of the launch tokens to --launch_tokens."})

    # -- plugins ------------------------------------------------------------
    plugin_dir: str | None = field(default=None, metadata={"help": "Directory of plugin modules (with --plugin_conf)."})
    plugin_conf: str | None = field(default=None, metadata={"help": "Plugin descriptor (JSON): which plugins to load and their configuration."})
    insecure_no_auth: bool = field(default=False, metadata={"help": "Allow binding a non-loopback address without an authentication plugin (anyone who can reach the port controls the cluster)."})

    # -- logging ------------------------------------------------------------
    logging_level: str = field(default="info", metadata={"help": "off | error | warn | info | debug | trace."})

    # -- metrics (SPEC.md 10.6 and 13; docs/metrics.md) ---------------------------
    metrics_name_prefix: str = field(default="marathon", metadata={"help": "Prefix of every metric name: <prefix>.<name>.<type>[.<unit>]."})
    metrics_prometheus: bool = field(default=True, metadata={"help": "Serve /metrics/prometheus (on by default; --disable_metrics_prometheus turns it off)."})
    metrics_statsd: bool = field(default=False, metadata={"help": "Send metrics to a StatsD server over UDP (counters are sent as gauges)."})
    metrics_statsd_host: str = field(default="localhost", metadata={"help": "StatsD server host."})
    metrics_statsd_port: int = field(default=8125, metadata={"help": "StatsD server UDP port."})
    metrics_statsd_transmission_interval_ms: int = field(default=10000, metadata={"help": "ms between two StatsD flushes."})
    metrics_datadog: bool = field(default=False, metadata={"help": "Send metrics to a DataDog agent (DogStatsD over UDP, with tags)."})
    metrics_datadog_host: str = field(default="localhost", metadata={"help": "DataDog agent host."})
    metrics_datadog_port: int = field(default=8125, metadata={"help": "DataDog agent DogStatsD UDP port."})
    metrics_datadog_transmission_interval_ms: int = field(default=10000, metadata={"help": "ms between two DataDog flushes."})
    metrics_datadog_tags: str = field(default="", metadata={"help": "Ours: extra DogStatsD tags 'key:value,...' added to framework:<framework_name>."})
    reporter_graphite: str | None = field(default=None, metadata={"help": "Graphite receiver 'tcp://host:port[?prefix=p&interval=seconds]' (or udp://), plaintext protocol; Marathon 1.7's flag (removed in Marathon 1.8, kept here)."})
    metrics_graphite_transmission_interval_ms: int = field(default=10000, metadata={"help": "ms between two Graphite flushes (an 'interval' in --reporter_graphite wins)."})

    # -- derived views ----------------------------------------------------------

    @property
    def features(self) -> frozenset[str]:
        return frozenset(f.strip() for f in self.enable_features.split(",") if f.strip())

    @property
    def binds_loopback_only(self) -> bool:
        import ipaddress

        if self.http_address in ("localhost",):
            return True
        try:
            return ipaddress.ip_address(self.http_address).is_loopback
        except ValueError:
            return False

    @property
    def leader_address(self) -> str:
        return f"{self.hostname}:{self.http_port}"

    def validate(self) -> None:
        unknown = self.features - FEATURES
        if unknown:
            raise ConfigError(f"Unknown features specified: {', '.join(sorted(unknown))}")
        if self.new_group_enforce_role not in ("off", "top"):
            raise ConfigError("--new_group_enforce_role must be off or top")
        if self.accepted_resource_roles_default_behavior not in ("any", "unreserved", "reserved"):
            raise ConfigError("--accepted_resource_roles_default_behavior must be any, unreserved or reserved")
        if self.placement_strategy not in ("binpack", "spread", "firstfit"):
            raise ConfigError("--placement_strategy must be binpack, spread or firstfit")
        if self.http_server not in ("builtin", "hypercorn"):
            raise ConfigError("--http_server must be builtin or hypercorn")
        if self.store not in ("sqlite", "memory"):
            raise ConfigError("--store must be sqlite or memory")
        if not 1 <= self.max_instances_per_app <= _INT32_MAX:
            raise ConfigError(f"--max_instances_per_app must be between 1 and {_INT32_MAX}")
        if self.http_max_body_bytes_in_flight < HTTP_MAX_REQUEST_BODY:
            raise ConfigError(
                f"--http_max_body_bytes_in_flight must be at least {HTTP_MAX_REQUEST_BODY} (the limit of one body)"
            )
        if self.http_max_concurrent_requests is not None and self.http_max_concurrent_requests < 1:
            raise ConfigError("--http_max_concurrent_requests must be at least 1")
        if self.agent_spawn_threads < 1:
            raise ConfigError("--agent_spawn_threads must be at least 1")
        if self.launch_tokens < 1 or self.launch_token_refresh_interval < 1:
            raise ConfigError("--launch_tokens and --launch_token_refresh_interval must be positive")
        if not 0 < self.local_port_min <= self.local_port_max <= 65535:
            raise ConfigError("--local_port_min/--local_port_max must form a port range")
        if self.plugin_dir and not self.plugin_conf:
            raise ConfigError("--plugin_dir needs --plugin_conf (the descriptor names the plugins to load)")
        if self.master not in ("local", "agents") and not self.master.startswith("sim://"):
            raise ConfigError(
                f"--master {self.master}: use 'local' (the embedded agent), 'agents' (remote agents only) "
                "or 'sim://<agents>' (simulated agents)"
            )
        if self.zk is not None:
            self._validate_zk()
        if self.master == "agents" and not self.agent_secret_file:
            raise ConfigError("--master agents needs --agent_secret_file (the secret remote agents present)")
        if min(self.agent_heartbeat_interval, self.agent_unreachable_timeout, self.agent_reregister_timeout) <= 0:
            raise ConfigError("--agent_heartbeat_interval and the agent timeouts must be positive")

    def _validate_zk(self) -> None:
        assert self.zk is not None
        try:
            parse_zk_url(self.zk)
        except ValueError as e:
            raise ConfigError(f"--zk: {e}") from None
        if self.master == "local":
            raise ConfigError(
                "--zk runs several masters, and tasks must outlive whichever one leads: they run on "
                "`marathon agent` machines. Use --master agents with --agent_secret_file "
                "(docs/ha.md), or leave --zk unset for one machine with its embedded agent."
            )
        if min(self.zk_session_timeout, self.zk_timeout, self.zk_connection_timeout,
               self.leader_proxy_connection_timeout, self.leader_proxy_read_timeout) <= 0:
            raise ConfigError("--zk_* and --leader_proxy_* timeouts must be positive")
        if not 0 < self.zk_max_node_size <= 1024000:
            # ZooKeeper refuses a request above jute.maxbuffer (1 MiB with its header).
            raise ConfigError(f"--zk_max_node_size must be between 1 and 1024000 with --zk "
                              f"(ZooKeeper's jute.maxbuffer), got {self.zk_max_node_size}")

    @property
    def ha(self) -> bool:
        return self.zk is not None

    @property
    def redacted_zk(self) -> str | None:
        """--zk with its credentials replaced, as /v2/info shows it."""
        if self.zk is None:
            return None
        scheme, sep, rest = self.zk.partition("://")
        if "@" in rest.split("/", 1)[0]:
            rest = "xxxxxxxx:xxxxxxxx@" + rest.split("@", 1)[1]
        return f"{scheme}{sep}{rest}"

    def as_flags(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _bool_fields() -> set[str]:
    return {f.name for f in fields(Config) if f.type in ("bool", bool)}


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """Add every Config flag (both spellings) to `parser`."""
    parser = parser or argparse.ArgumentParser(prog="marathon serve")
    for f in fields(Config):
        names = [f"--{f.name}"]
        if "_" in f.name:
            names.append(f"--{f.name.replace('_', '-')}")
        help_text = f.metadata.get("help", "")
        if f.name in _bool_fields():
            parser.add_argument(*names, dest=f.name, action="store_true", default=None, help=help_text)
            parser.add_argument(f"--disable_{f.name}", dest=f.name, action="store_false", help=argparse.SUPPRESS)
        else:
            default = f.default if not callable(f.default_factory) else "(computed)"  # type: ignore[misc]
            parser.add_argument(*names, dest=f.name, default=None, metavar=f.name.upper(), help=f"{help_text} [default: {default}]")
    return parser


def _convert(name: str, raw: Any) -> Any:
    f = next(f for f in fields(Config) if f.name == name)
    tp = str(f.type)
    if raw is None or isinstance(raw, bool):
        return raw
    if tp.startswith("float"):
        try:
            return float(raw)
        except ValueError:
            raise ConfigError(f"--{name}: '{raw}' is not a number") from None
    if tp.startswith("int"):
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(f"--{name}: '{raw}' is not an integer") from None
    return str(raw)


def from_args(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Parse flags and `MARATHON_*` environment variables into a validated Config."""
    environ = os.environ if environ is None else environ
    ns = build_parser().parse_args(argv)
    values: dict[str, Any] = {}
    for f in fields(Config):
        cli = getattr(ns, f.name)
        env_name = f"MARATHON_{f.name.upper()}"
        env = environ.get(env_name)
        if cli is not None and env is not None:
            raise ConfigError(f"--{f.name} is given both as a flag and as {env_name}")
        if cli is not None:
            values[f.name] = _convert(f.name, cli)
        elif env is not None:
            if f.name in _bool_fields():
                values[f.name] = env.lower() not in ("false", "0", "no")
            else:
                values[f.name] = _convert(f.name, env)
    config = Config(**values)
    config.validate()
    return config
