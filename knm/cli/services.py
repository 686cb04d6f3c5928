"""`knm watcher|allocator|applier|agent`: each service as its own process."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from kubernetes import client
from kubernetes import config as kube

from knm.cli.common import (
    BadInputError,
    DatabaseOption,
    HealthHostOption,
    HealthPortOption,
    KafkaOption,
    PrefixOption,
    reported,
    settings,
)
from knm.core import logs
from knm.core.settings import Settings
from knm.runtime.distributed import (
    APPLIER_BACKENDS,
    DATAPLANES,
    AgentProcess,
    AllocatorProcess,
    ApplierProcess,
    LiveWatcherProcess,
    WatcherProcess,
    agent_dataplane,
    manifest_source,
)
from knm.runtime.health import Health
from knm.runtime.process import Service, run, stop_on_signals
from services.watcher.informer import Informer
from services.watcher.live import LiveSource
from services.watcher.writeback import KubernetesPodAnnotator, KubernetesServiceIngress


def _serve(
    process: Service,
    *,
    name: str,
    health: Health,
    port: int | None,
    host: str,
) -> None:
    stop = stop_on_signals()
    server = health.serve(host=host, port=port) if port is not None else None
    try:
        run(process, name=name, health=health, stop=stop, freeze_heap=True)
    finally:
        if server is not None:
            server.shutdown()


def _configured(**overrides: object) -> Settings:
    found = settings(**overrides)
    logs.configure(level=found.log_level, format=found.log_format)
    return found


@reported
def watcher(
    *,
    files: Annotated[
        list[Path] | None,
        typer.Option("--file", "-f", help="Publish these manifests (files or folders)."),
    ] = None,
    nodes: Annotated[int, typer.Option("--nodes", "-n", help="Simulated nodes.")] = 2,
    interval: Annotated[float, typer.Option(help="With -f: seconds between reads.")] = 5.0,
    resync: Annotated[
        float, typer.Option(help="Without -f: seconds between full relists of the cluster.")
    ] = 300.0,
    write_back: Annotated[
        bool,
        typer.Option(
            help="Without -f: annotate pods with their interfaces (knm.io/interface), and "
            "give LoadBalancer services their public address (status.loadBalancer.ingress)."
        ),
    ] = True,
    kubeconfig: Annotated[
        str | None, typer.Option(help="Without -f: the cluster (default KNM_KUBECONFIG).")
    ] = None,
    kafka_bootstrap: KafkaOption = None,
    topic_prefix: PrefixOption = None,
    health_port: HealthPortOption = None,
    health_host: HealthHostOption = "127.0.0.1",
) -> None:
    """Publish facts: of manifests with -f, else of the cluster (list, then watch)."""
    config = _configured(
        kafka_bootstrap=kafka_bootstrap, topic_prefix=topic_prefix, kubeconfig=kubeconfig
    )
    process: WatcherProcess | LiveWatcherProcess
    if files:
        source = manifest_source(files, nodes=nodes, settings=config)
        # Files can be caught mid-write: a change counts once two reads agree on it.
        process = WatcherProcess(source=source, settings=config, interval=interval, settle=True)
    else:
        api = _cluster_client(config)
        informer = Informer(LiveSource(api), resync=resync)
        annotator = KubernetesPodAnnotator(api) if write_back else None
        ingress = KubernetesServiceIngress(api) if write_back else None
        process = LiveWatcherProcess(
            informer=informer, settings=config, annotator=annotator, ingress=ingress
        )
    _serve(process, name="watcher", health=process.health(), port=health_port, host=health_host)


def _cluster_client(config: Settings) -> client.ApiClient:
    api: client.ApiClient
    if config.kubeconfig:
        api = kube.new_client_from_config(config_file=config.kubeconfig)  # type: ignore[no-untyped-call]
    else:
        try:
            kube.load_incluster_config()  # type: ignore[no-untyped-call]
        except kube.ConfigException:
            raise BadInputError(
                "no cluster to watch: give -f manifests, or --kubeconfig / KNM_KUBECONFIG"
            ) from None
        api = client.ApiClient()
    return api


@reported
def allocator(
    *,
    database_url: DatabaseOption = None,
    kafka_bootstrap: KafkaOption = None,
    topic_prefix: PrefixOption = None,
    health_port: HealthPortOption = None,
    health_host: HealthHostOption = "127.0.0.1",
) -> None:
    """Consume facts, keep the addresses in the database, emit intents and node commands."""
    config = _configured(
        database_url=database_url, kafka_bootstrap=kafka_bootstrap, topic_prefix=topic_prefix
    )
    process = AllocatorProcess(settings=config)
    _serve(process, name="allocator", health=process.health(), port=health_port, host=health_host)


@reported
def applier(
    *,
    backend: Annotated[
        str,
        typer.Option(
            help="native (vrouter programs for knm's agents) or contrail (the VNC config "
            "API at KNM_CONTRAIL_API_URL)."
        ),
    ] = "native",
    kafka_bootstrap: KafkaOption = None,
    topic_prefix: PrefixOption = None,
    health_port: HealthPortOption = None,
    health_host: HealthHostOption = "127.0.0.1",
) -> None:
    """Converge a controller to the intents: knm's vrouters (native) or Contrail."""
    if backend not in APPLIER_BACKENDS:
        raise BadInputError(
            f"unknown backend {backend!r}: choose from {', '.join(APPLIER_BACKENDS)}"
        )
    config = _configured(kafka_bootstrap=kafka_bootstrap, topic_prefix=topic_prefix)
    process = ApplierProcess(settings=config, backend=backend)
    _serve(process, name="applier", health=process.health(), port=health_port, host=health_host)


@reported
def agent(
    *,
    node: Annotated[str, typer.Option("--node", envvar="KNM_NODE", help="This node's name.")],
    dataplane: Annotated[
        str,
        typer.Option(
            help="recording (records what it would do), linux (wires pods into the node) "
            "or contrail (wires them and registers their ports with the vrouter agent at "
            "KNM_VROUTER_PORT_API_URL)."
        ),
    ] = "recording",
    netns: Annotated[
        str | None,
        typer.Option(
            "--netns", help="linux: the node's network namespace (default: the agent's own)."
        ),
    ] = None,
    cni_socket: Annotated[
        Path | None,
        typer.Option(help="Serve the node's knm-cni on this unix socket (/run/knm/agent.sock)."),
    ] = None,
    kafka_bootstrap: KafkaOption = None,
    topic_prefix: PrefixOption = None,
    health_port: HealthPortOption = None,
    health_host: HealthHostOption = "127.0.0.1",
) -> None:
    """Wire this node's pods and program its vrouter; /state shows what it holds."""
    if dataplane not in DATAPLANES:
        raise BadInputError(f"unknown dataplane {dataplane!r}: choose from {', '.join(DATAPLANES)}")
    if netns is not None and dataplane not in ("linux", "contrail"):
        raise BadInputError(
            "--netns is the node namespace of the linux dataplane (and of the contrail one)"
        )
    config = _configured(kafka_bootstrap=kafka_bootstrap, topic_prefix=topic_prefix)
    process = AgentProcess(
        settings=config,
        node=node,
        dataplane=agent_dataplane(
            dataplane, node=node, netns=netns, vrouter_url=config.vrouter_port_api_url
        ),
        cni_socket=str(cni_socket) if cni_socket is not None else None,
    )
    _serve(process, name="agent", health=process.health(), port=health_port, host=health_host)


def register(app: typer.Typer) -> None:
    for command in (watcher, allocator, applier, agent):
        app.command()(command)
