"""The composition root: builds every service from the config and runs them.

Start order (each service reports readiness through `nursery.start`):
the cluster driver (which recovers tasks that outlived a previous process),
state loaded from the store, the instance tracker, the status pump, the
deployments service, the scheduler, reconciliation (before anything is
replaced), the stored deployments resumed, and finally the HTTP API.  The
root nursery owns them all; cancelling it (SIGINT/SIGTERM) stops everything,
and the embedded agent stops its tasks.
"""

from __future__ import annotations

import functools
import logging
import signal
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import trio
from msgspec import UNSET

from . import httpserver, matching
from .agent.daemon import read_secret
from .agent.files import read_sandbox_file
from .agent.machine import ephemeral_port_range, overlapping
from .api import build_app, build_front
from .api._auth import Auth
from .api._context import ApiContext
from .cluster import ClusterDriver
from .cluster.composite import CompositeDriver
from .cluster.local import LocalDriver
from .cluster.remote import RemoteConfig, RemoteDriver
from .cluster.sim import SimDriver, parse_sim_master
from .config import Config, ConfigError, parse_zk_url
from .errors import Violation
from .hookspecs import TaskAdjustment
from .instance_update import StatusUpdate
from .leadership import Leadership, run_local_terms, run_zk_terms
from .models.agent import parse_attributes, parse_port_ranges, parse_resources
from .models.app import UnreachableEnabled
from .models.instance import Instance, TaskStatus, parse_task_id
from .planning import RootChanges
from .plugins import Plugins, health_checkers, load_plugins
from .services._pacing import YIELD_EVERY
from .services.deployments import DeploymentManager
from .services.events import EventBus
from .services.groups import GroupManager, GroupsConfig
from .services.health import AGENT_PROTOCOLS, HealthService
from .services.instances import InstanceTracker, Submitted
from .services.launch_queue import LaunchQueue
from .services.metrics import MetricsRegistry, MetricsService, collect_sinks
from .services.metrics import install as install_metrics
from .services.readiness import ReadinessService
from .services.reconciler import Reconciler, ReconcilerConfig
from .services.scheduler import Scheduler
from .storage import Store, open_store
from .storage.election import Election, cluster_id_of
from .storage.leader_watch import LeaderWatch
from .storage.repository import StateRepository
from .storage.zk import ZooKeeperStore
from .task_builder import resolve_secrets

log = logging.getLogger("marathon.server")

STATUS_BATCH = 5000


def wall_ms() -> int:
    return int(time.time() * 1000)




@dataclass
class Services:
    """Everything `serve` builds, for tests and embedding."""

    config: Config
    driver: ClusterDriver
    tracker: InstanceTracker
    groups: GroupManager
    deployments: DeploymentManager
    launch_queue: LaunchQueue
    scheduler: Scheduler
    bus: EventBus
    repo: StateRepository
    health: HealthService
    readiness: ReadinessService
    api_context: ApiContext
    reconciler: Reconciler
    metrics: MetricsRegistry | None = None


async def _pump_status_updates(
    driver: ClusterDriver, tracker: InstanceTracker, groups: GroupManager, time_ms: Callable[[], int], task_killing: bool
) -> None:
    """Agent status updates -> instance tracker, in batches."""
    updates = driver.updates
    # The batch before this one, still being applied: the next batch is
    # parsed and queued meanwhile, so the tracker can resolve it while the
    # first one is stored.
    previous: Submitted | None = None
    previous_batch: list[TaskStatus] = []
    # Remote agents resend an update until it is acknowledged, and it is
    # acknowledged only once committed: an ACK sent before the commit would
    # lose the update for good if this process died in between.
    acknowledge = getattr(driver, "acknowledge", None)
    while True:
        batch: list[TaskStatus] = [await updates.receive()]
        while len(batch) < STATUS_BATCH:
            try:
                batch.append(updates.receive_nowait())
            except trio.WouldBlock:
                break
        now = time_ms()
        ops = []
        inactive_after_of: dict[str, int | None] = {}
        for n, status in enumerate(batch):
            if n % YIELD_EVERY == YIELD_EVERY - 1:
                await trio.lowlevel.checkpoint()
            try:
                parsed = parse_task_id(status.task_id)
            except ValueError:
                log.warning("status for unparsable task id ignored task_id=%s", status.task_id)
                continue
            if parsed.run_spec_id in inactive_after_of:
                inactive_after = inactive_after_of[parsed.run_spec_id]
            else:
                app = groups.app(parsed.run_spec_id)
                inactive_after = 0
                if app is not None and app.unreachable_strategy is not UNSET:
                    strategy = app.unreachable_strategy
                    inactive_after = (
                        strategy.inactive_after_seconds * 1000 if isinstance(strategy, UnreachableEnabled) else None
                    )
                inactive_after_of[parsed.run_spec_id] = inactive_after
            ops.append(
                StatusUpdate(
                    instance_id=parsed.instance_id,
                    status=status,
                    now=now,
                    inactive_after_ms=inactive_after,
                    task_killing=task_killing,
                )
            )
        submitted = await tracker.submit(ops)
        if previous is not None and await _applied(previous) and acknowledge is not None:
            acknowledge(previous_batch)
        previous, previous_batch = submitted, batch
        if acknowledge is not None and not updates.statistics().current_buffer_used:
            # Nothing more is coming now: finish this batch, so that its
            # ACKs go out without waiting for the next update.
            if await _applied(submitted):
                acknowledge(batch)
            previous = None


async def _applied(submitted: Submitted) -> bool:
    try:
        await submitted.effects()
    except Exception:
        log.exception("applying status updates failed count=%d", submitted.count)
        return False
    return True


def make_driver(config: Config, time_ms: Callable[[], int], *, epoch: int = 1,
                cluster_id: str | None = None) -> ClusterDriver:
    """The cluster driver named by `--master` (and `--agent_secret_file`);
    `epoch` is the leader term's, which every command to an agent carries;
    `cluster_id` defaults to the one in --data_dir."""
    if config.master.startswith("sim://"):
        return SimDriver(parse_sim_master(config.master), time_ms=time_ms)
    remote = _remote_driver(config, time_ms, epoch, cluster_id) if config.agent_secret_file else None
    if config.master == "agents":
        assert remote is not None  # Config.validate
        return remote
    local = _local_driver(config, time_ms)
    return local if remote is None else CompositeDriver(local, remote)


def _remote_driver(config: Config, time_ms: Callable[[], int], epoch: int, cluster_id: str | None) -> RemoteDriver:
    assert config.agent_secret_file is not None
    try:
        secret = read_secret(config.agent_secret_file)
    except (OSError, ValueError) as e:
        raise ConfigError(f"--agent_secret_file: {e}") from None
    return RemoteDriver(RemoteConfig(
        cluster_id=cluster_id or _cluster_id(Path(config.data_dir)), secret=secret, epoch=epoch,
        heartbeat_interval=config.agent_heartbeat_interval / 1000.0,
        unreachable_timeout=config.agent_unreachable_timeout / 1000.0,
        reregister_timeout=config.agent_reregister_timeout / 1000.0,
    ), time_ms=time_ms)


def _cluster_id(data_dir: Path) -> str:
    """This cluster's id, made once: agents checkpoint it and are refused by
    any other cluster (which would kill their tasks as unknown)."""
    path = data_dir / "cluster_id"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        data_dir.mkdir(parents=True, exist_ok=True)
        cid = str(uuid.uuid4())
        path.write_text(cid + "\n")
        return cid


def _remote_of(driver: ClusterDriver) -> RemoteDriver | None:
    if isinstance(driver, RemoteDriver):
        return driver
    if isinstance(driver, CompositeDriver):
        return driver.remote
    return None


def _local_of(driver: ClusterDriver) -> LocalDriver | None:
    if isinstance(driver, LocalDriver):
        return driver
    if isinstance(driver, CompositeDriver):
        return driver.local
    return None


def _local_driver(config: Config, time_ms: Callable[[], int]) -> LocalDriver:
    port_ranges = parse_port_ranges(config.agent_ports)
    ephemeral = ephemeral_port_range()
    if clash := overlapping(port_ranges, ephemeral):
        log.warning(
            "agent ports %s fall inside the kernel's ephemeral port range %d-%d (net.ipv4.ip_local_port_range): "
            "a connection to a task that is still starting can connect to itself; keep --agent_ports below %d",
            ",".join(f"{r.begin}-{r.end}" for r in clash), ephemeral.begin, ephemeral.end, ephemeral.begin,
        )
    return LocalDriver(
        Path(config.data_dir) / "agent",
        hostname=config.hostname,
        resources=parse_resources(config.agent_resources) if config.agent_resources else None,
        port_ranges=port_ranges,
        attributes=parse_attributes(config.agent_attributes) if config.agent_attributes else [],
        cgroups=config.agent_cgroups,
        spawn_concurrency=config.agent_spawn_threads,
        time_ms=time_ms,
        oci_runtime=config.agent_oci_runtime,
        insecure_registries=tuple(r.strip() for r in (config.agent_insecure_registries or "").split(",")
                                  if r.strip()),
        docker_config=Path(config.agent_docker_config) if config.agent_docker_config else None,
        cni_config_dir=Path(config.agent_network_cni_config_dir) if config.agent_network_cni_config_dir else None,
        allow_privileged=config.agent_allow_privileged,
    )


async def start_services(
    config: Config,
    nursery: trio.Nursery,
    *,
    time_ms: Callable[[], int] = wall_ms,
    driver: ClusterDriver | None = None,
    driver_running: bool = False,
    store: Store | None = None,
    plugins: Sequence[tuple[str, object]] = (),
    loaded: Plugins | None = None,
    leadership: Leadership | None = None,
) -> Services:
    """Build and start every service in `nursery`; `driver`/`store` override the
    config's (`driver_running`: it already runs, in the process's nursery);
    `plugins` are registered after the built-ins (`loaded`: plugins the
    process loaded already)."""
    if store is None:
        store = await open_local_store(config)
    repo = StateRepository(
        store, max_versions=config.zk_max_versions,
        compression_threshold=config.zk_compression_threshold if config.zk_compression else 1 << 62,
        max_instances_per_app=config.max_instances_per_app,
    )
    bus = EventBus(time_ms=time_ms, max_outstanding=config.event_stream_max_outstanding_messages)
    driver = driver or make_driver(config, time_ms)
    tracker = InstanceTracker(repo, bus, time_ms=time_ms, kill=lambda ids: driver.kill(ids), kill_retry_ms=config.kill_retry_timeout)
    groups_ref: list[GroupManager] = []
    scheduler_ref: list[Scheduler] = []
    launch_queue = LaunchQueue(
        tracker,
        app_lookup=lambda app_id: groups_ref[0].app(app_id),
        time_ms=time_ms,
        on_change=lambda: scheduler_ref[0].wake() if scheduler_ref else None,
        repo=repo,
    )
    if loaded is None:
        loaded = load_plugins(
            plugins, descriptor=config.plugin_conf, plugin_dir=config.plugin_dir, framework_name=config.framework_name,
            secrets_dir=config.secrets_dir,
        )
    pm = loaded.pm
    checkers = health_checkers(pm)
    _check_exposure(config, loaded)
    if loaded.has("marathon_event_observe"):
        bus.add_observer(lambda event: pm.hook.marathon_event_observe(event=event))
    health = HealthService(
        tracker,
        bus,
        root=lambda: groups_ref[0].root,
        app_at=repo.app_at,
        checkers=checkers,
        time_ms=time_ms,
        max_concurrent=config.max_concurrent_marathon_health_checks,
    )
    readiness = ReadinessService(tracker, time_ms=time_ms)
    deployments = DeploymentManager(
        repo,
        tracker,
        launch_queue,
        bus,
        time_ms=time_ms,
        health=health,
        readiness=readiness,
        progress_deadline_seconds=config.deployment_progress_deadline_seconds,
    )
    groups = GroupManager(
        repo,
        deployments,
        bus,
        time_ms=time_ms,
        config=GroupsConfig(
            max_running_deployments=config.max_running_deployments,
            local_port_min=config.local_port_min,
            local_port_max=config.local_port_max,
            new_group_enforce_role=config.new_group_enforce_role,
        ),
        policy=_policy(pm, health_protocols=set(checkers) | AGENT_PROTOCOLS),
    )
    groups_ref.append(groups)
    scheduler = Scheduler(
        tracker,
        launch_queue,
        driver,
        root=lambda: groups.root,
        app_at=repo.app_at,
        time_ms=time_ms,
        match_config=matching.MatchConfig(
            strategy=config.placement_strategy,
            accepted_resource_roles_default_behavior=config.accepted_resource_roles_default_behavior,
        ),
        batch_size=config.launch_batch_size,
        launch_tokens=config.launch_tokens,
        launch_token_refresh_ms=config.launch_token_refresh_interval,
        env_vars_prefix=config.env_vars_prefix,
        adjust=_launch_adjuster(pm, loaded.has("marathon_task_adjust"), loaded.has("marathon_secret_resolve")),
    )
    scheduler_ref.append(scheduler)
    reconciler = Reconciler(
        tracker,
        driver,
        deployments,
        launch_queue,
        root=lambda: groups.root,
        time_ms=time_ms,
        config=ReconcilerConfig(
            reconciliation_initial_delay_ms=config.reconciliation_initial_delay,
            reconciliation_interval_ms=config.reconciliation_interval,
            scale_apps_initial_delay_ms=config.scale_apps_initial_delay,
            scale_apps_interval_ms=config.scale_apps_interval,
            task_launch_timeout_ms=config.task_launch_timeout,
            task_launch_confirm_timeout_ms=config.task_launch_confirm_timeout,
        ),
    )

    remote = _remote_of(driver)
    if remote is not None:
        remote.set_known_task(lambda tid: _instance_of(tracker, tid) is not None)
        remote.set_expected_tasks(lambda agent_id: [
            i.task.task_id for i in tracker.all()
            if i.agent_id == agent_id and i.task is not None and i.is_active])
    if isinstance(driver, CompositeDriver):
        driver.set_agent_of(lambda tid: getattr(_instance_of(tracker, tid), "agent_id", None))
    if not driver_running:
        await nursery.start(driver.run)
    await tracker.load()
    if remote is not None:
        remote.expect(_remote_agents_of(tracker, _local_of(driver)))
    await groups.load()
    await launch_queue.load()
    await nursery.start(tracker.run)
    await nursery.start(launch_queue.run)
    nursery.start_soon(
        _pump_status_updates, driver, tracker, groups, time_ms, "task_killing" in config.features
    )
    await nursery.start(readiness.run)
    await nursery.start(deployments.run)
    await nursery.start(scheduler.run)
    await nursery.start(health.run)
    await nursery.start(groups.run)
    await nursery.start(reconciler.run)
    await groups.resume_deployments()
    scheduler.wake()
    for service in [s for provided in pm.hook.marathon_background_services() for s in (provided or [])]:
        await nursery.start(service.run)

    api_context = ApiContext(
        config=config,
        groups=groups,
        tracker=tracker,
        deployments=deployments,
        launch_queue=launch_queue,
        bus=bus,
        repo=repo,
        time_ms=time_ms,
        health=health,
        readiness=readiness,
        auth=Auth(pm),
        plugins=loaded,
        started_ms=time_ms(),
        leadership=leadership,
    )
    _agent_views(api_context, driver)
    metrics = api_context.metrics = MetricsRegistry(prefix=config.metrics_name_prefix)
    services = Services(
        config=config,
        driver=driver,
        tracker=tracker,
        groups=groups,
        deployments=deployments,
        launch_queue=launch_queue,
        scheduler=scheduler,
        bus=bus,
        repo=repo,
        health=health,
        readiness=readiness,
        api_context=api_context,
        metrics=metrics,
        reconciler=reconciler,
    )
    install_metrics(services, metrics, time_ms=time_ms)
    await nursery.start(MetricsService(metrics, collect_sinks(pm, config.as_flags())).run)
    return services


def _check_exposure(config: Config, loaded: Plugins) -> None:
    if not config.binds_loopback_only and not loaded.has("marathon_auth_authenticate") and not config.insecure_no_auth:
        raise ConfigError(
            f"refusing to serve on {config.http_address} without an authentication plugin: anyone who can "
            "reach the port could run commands on this machine. Bind 127.0.0.1, configure an auth plugin "
            "(--plugin_conf), or pass --insecure_no_auth."
        )


def _instance_of(tracker: InstanceTracker, task_id: str) -> Instance | None:
    try:
        return tracker.get(parse_task_id(task_id).instance_id)
    except ValueError:
        return None


def _remote_agents_of(tracker: InstanceTracker, local: LocalDriver | None) -> dict[str, tuple[str, list[str]]]:
    """Agents other than the embedded one that stored instances run on."""
    here = local.agent_id if local is not None else None
    agents: dict[str, tuple[str, list[str]]] = {}
    for inst in tracker.all():
        if inst.agent_id is None or inst.agent_id == here or inst.task is None or not inst.is_active:
            continue
        agents.setdefault(inst.agent_id, (inst.hostname or "", []))[1].append(inst.task.task_id)
    return agents


def _agent_views(ctx: ApiContext, driver: ClusterDriver) -> None:
    """What the API needs of the agents: remote ones, the embedded one, logs."""
    remote = _remote_of(driver)
    local = _local_of(driver)
    ctx.agents = remote
    if remote is not None and remote.config.secret is not None:
        ctx.agent_auth_headers = {"Authorization": f"Bearer {remote.config.secret.decode()}"}
    if local is not None:
        info = local.agents()[0]
        ctx.local_agent = {
            "id": info.id, "hostname": info.hostname, "endpoint": None, "state": "REGISTERED",
            "embedded": True, "draining": False, "region": info.region, "zone": info.zone,
            "role": info.role, "attributes": {a.name: a.render() for a in info.attributes},
        }
        ctx.read_sandbox_file = functools.partial(read_sandbox_file, local.executor.sandboxes)


def _policy(pm, *, health_protocols: set[str]):  # type: ignore[no-untyped-def]
    """Rules over what a change creates or modifies (422 with paths): every
    health check needs a checker for its protocol, then the policy plugins."""
    validate_apps = bool(pm.hook.marathon_validate_app.get_hookimpls())

    def check(changes: RootChanges) -> list[Violation]:
        violations: list[Violation] = []
        single = len(changes.changed_apps) == 1
        for app in changes.changed_apps:
            prefix = "" if single else f"/apps/{app.id}"
            for i, hc in enumerate(app.health_checks):
                if hc.protocol not in health_protocols:
                    known = ", ".join(sorted(health_protocols))
                    violations.append(Violation(f"{prefix}/healthChecks({i})/protocol", f"unknown health check protocol {hc.protocol} (known: {known})"))
            if not validate_apps:
                continue
            for found in pm.hook.marathon_validate_app(app=app):
                for v in found or ():
                    violations.append(Violation(v.path if single else f"/apps/{app.id}{v.path}", v.message))
        for group in changes.created_groups + changes.updated_groups:
            for found in pm.hook.marathon_validate_group(group=group):
                for v in found or ():
                    violations.append(Violation(f"/groups/{group.id}{v.path}", v.message))
        return violations

    return check


def _launch_adjuster(pm, task_adjust: bool, secrets: bool):  # type: ignore[no-untyped-def]
    """What plugins change in every launch: its secrets' values (the
    `marathon_secret_resolve` hooks), then the task processors (env,
    labels).  None when no plugin does either."""
    if not task_adjust and not secrets:
        return None

    def adjust(app, launch):  # type: ignore[no-untyped-def]
        if secrets and (launch.secret_env or (launch.container is not None and (
                launch.container.pull_config or any(v.kind == "secret" for v in launch.container.volumes)))):
            launch = resolve_secrets(app, launch, lambda source: pm.hook.marathon_secret_resolve(
                source=source, app_id=app.id))
        if task_adjust:
            task = TaskAdjustment(task_id=launch.task_id, env=dict(launch.env), labels=dict(launch.labels))
            pm.hook.marathon_task_adjust(app=app, task=task)
            launch = msgspec.structs.replace(launch, env=task.env, labels=task.labels)
        return launch

    return adjust


async def _stop_on_signal(scope: trio.CancelScope) -> None:
    """SIGTERM/SIGINT: a clean shutdown (the embedded agent stops its tasks)."""
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            log.info("shutting down signal=%s", signal.Signals(signum).name)
            scope.cancel()
            return


async def open_local_store(config: Config) -> Store:
    """The one-machine store: SQLite in --data_dir (or memory)."""
    data_dir = Path(config.data_dir)
    await trio.Path(data_dir).mkdir(parents=True, exist_ok=True)
    store_url = "memory://" if config.store == "memory" else str(data_dir / "state.db")
    return open_store(store_url, max_value_size=config.zk_max_node_size)


async def open_zk_store(config: Config) -> ZooKeeperStore:
    """The cluster's store (--zk), connected: failing that, StorageError
    (the process exits 100, as Marathon does)."""
    assert config.zk is not None
    hosts, root, auth = parse_zk_url(config.zk)
    store = ZooKeeperStore(
        hosts, root, auth=auth, max_value_size=config.zk_max_node_size,
        compression_threshold=config.zk_compression_threshold if config.zk_compression else 1 << 62,
        session_timeout=config.zk_session_timeout / 1000.0,
        operation_timeout=config.zk_timeout / 1000.0,
        connect_timeout=config.zk_connection_timeout / 1000.0,
    )
    await store.connect()
    return store


async def _hold_commands_while_suspended(leadership: Leadership, driver: ClusterDriver) -> None:
    """SUSPENDED: agents get no command until the fence is verified again
    (CLUSTER.md 3.3); their streams and heartbeats stay."""
    remote = _remote_of(driver)
    if remote is None:
        return
    while True:
        if leadership.suspended:
            remote.pause()
        else:
            remote.resume()
        await leadership.wait_change()


async def _after_term(store: Store, cluster_id: str | None, term) -> None:  # type: ignore[no-untyped-def]
    """An abdication's backup and restore, between two terms (this process
    writes nothing meanwhile, and still holds the fence)."""
    request = term.abdication
    if request is None:
        return
    from .storage import backup

    if request.backup:
        try:
            summary = await backup.backup_to_uri(store, request.backup, cluster_id)
            log.info("backup_done uri=%s summary=%s", request.backup, summary)
        except Exception:
            log.exception("backup_failed uri=%s", request.backup)
            if request.restore:
                # Restoring would replace a state nobody could get back.
                log.error("restore_skipped uri=%s (the backup before it failed)", request.restore)
            return
    if request.restore:
        try:
            summary = await backup.restore_from_uri(store, request.restore)
            log.info("restore_done uri=%s summary=%s", request.restore, summary)
        except Exception:
            log.exception("restore_failed uri=%s", request.restore)


async def serve(config: Config, *, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
    """Run Marathon until cancelled: the HTTP front, and leader terms
    (leadership.py) for as long as this process wins them."""
    leadership = Leadership(self_id=config.leader_address, self_url=f"http://{config.leader_address}", ha=config.ha)
    loaded = load_plugins(
        (), descriptor=config.plugin_conf, plugin_dir=config.plugin_dir, framework_name=config.framework_name,
        secrets_dir=config.secrets_dir,
    )
    _check_exposure(config, loaded)
    front = build_front(config, leadership, loaded)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_stop_on_signal, nursery.cancel_scope)
        if config.ha:
            store: Store = await open_zk_store(config)
            cluster_id = await cluster_id_of(store)  # type: ignore[arg-type]

            async def start_term(term: trio.Nursery, epoch: int) -> Any:
                driver = make_driver(config, wall_ms, epoch=epoch, cluster_id=cluster_id)
                services = await start_services(config, term, driver=driver, store=store, loaded=loaded,
                                                leadership=leadership)
                term.start_soon(_hold_commands_while_suspended, leadership, driver)
                return build_app(services.api_context)

            election = Election(store, participant_id=leadership.self_id, url=leadership.self_url)  # type: ignore[arg-type]
            watch = LeaderWatch(store.kazoo_client, store.root)  # type: ignore[attr-defined]
            await watch.start()
            nursery.start_soon(functools.partial(
                run_zk_terms, leadership, start_term, store, election, watch,
                functools.partial(_after_term, store, cluster_id), exit_on_loss=config.exit_on_leadership_loss))
        else:
            store = await open_local_store(config)
            driver = make_driver(config, wall_ms)
            # The embedded agent is the process's: its tasks outlive a term.
            await nursery.start(driver.run)
            local_cluster_id = _cluster_id(Path(config.data_dir)) if _remote_of(driver) is not None else None

            async def start_term(term: trio.Nursery, epoch: int) -> Any:
                services = await start_services(config, term, driver=driver, driver_running=True, store=store,
                                                loaded=loaded, leadership=leadership)
                return build_app(services.api_context)

            nursery.start_soon(functools.partial(
                run_local_terms, leadership, start_term, functools.partial(_after_term, store, local_cluster_id),
                exit_on_loss=config.exit_on_leadership_loss))
            await leadership.wait_leading()
        await _serve_http(config, front, nursery)
        log.info(
            "marathon serving address=http://%s:%d data_dir=%s placement=%s http=%s zk=%s",
            config.http_address, config.http_port, config.data_dir, matching.BACKEND, config.http_server,
            config.redacted_zk,
        )
        task_status.started(leadership)


async def _serve_http(config: Config, app: Any, nursery: trio.Nursery) -> None:
    if config.http_server == "hypercorn":
        from hypercorn.config import Config as HypercornConfig
        from hypercorn.trio import serve as hypercorn_serve

        hc = HypercornConfig()
        hc.bind = [f"{config.http_address}:{config.http_port}"]
        hc.accesslog = None
        hc.errorlog = logging.getLogger("hypercorn.error")
        hc.graceful_timeout = 2.0
        await nursery.start(hypercorn_serve, app, hc)
    else:
        await nursery.start(httpserver.serve, app, config.http_address, config.http_port)
