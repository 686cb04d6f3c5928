"""The services as separate processes on Kafka and PostgreSQL: how each is put together."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from knm.core.bus.kafka import KafkaBus
from knm.core.bus.protocol import from_beginning
from knm.core.clock import utcnow
from knm.core.settings import Settings
from knm.core.store.database import create_engine
from knm.runtime.health import Health
from knm.runtime.process import ConfigurationError
from services.agent.cni.server import CniServer
from services.agent.dataplane import Dataplane
from services.agent.recording import RecordingDataplane
from services.agent.service import Agent
from services.allocator.service import Allocator
from services.applier.contrail.backend import ContrailBackend
from services.applier.contrail.client import VncClient
from services.applier.service import Applier
from services.watcher.errors import BadManifestError
from services.watcher.informer import Informer
from services.watcher.published import Published
from services.watcher.service import Source, Watcher
from services.watcher.source import ManifestSource
from services.watcher.writeback import PodAnnotator, ServiceIngress, WriteBack

log = logging.getLogger("knm.process")


def kafka_bus(settings: Settings, *, client_id: str) -> KafkaBus:
    if not settings.kafka_bootstrap:
        raise ConfigurationError(
            "KNM_KAFKA_BOOTSTRAP is not set: a service process talks to Kafka "
            "(for a local one: `knm dev services up`; `knm demo` runs without)"
        )
    return KafkaBus(bootstrap=settings.kafka_bootstrap, client_id=client_id)


def database(settings: Settings) -> Engine:
    return create_engine(settings.database_url)


class WatcherProcess:
    """Publishes the source's changes now, then every `interval` seconds."""

    def __init__(
        self, *, source: Source, settings: Settings, interval: float, settle: bool = False
    ) -> None:
        self._bus = kafka_bus(settings, client_id="knm-watcher")
        self._publisher = self._bus.publisher()
        self._watcher = Watcher(
            source=source,
            publisher=self._publisher,
            topics=settings.topics(),
            clock=utcnow,
            settle=settle,
        )
        self._interval = interval
        self._next = 0.0
        self._read_once = False
        self._last_error: str | None = None
        self.published = 0

    def start(self) -> None:
        return None

    def step(self, *, timeout: float = 0.0) -> int:
        wait = self._next - time.monotonic()
        if wait > 0:
            time.sleep(min(wait, timeout))
            return 0
        self._next = time.monotonic() + self._interval
        try:
            published = self._watcher.publish_changes()
        except BadManifestError as error:
            if not self._read_once:
                raise  # bad input at start: the process says so and exits 2
            if error.message != self._last_error:
                log.error("manifests unreadable; keeping the last snapshot: %s", error.message)
            self._last_error = error.message
            return 0
        self._read_once = True
        self._last_error = None
        self.published += published
        return published

    def close(self) -> None:
        self._publisher.close()

    def health(self) -> Health:
        return Health(
            service="watcher",
            ready=lambda: self._read_once,
            counters=lambda: {"facts_published_total": self.published},
        )


# Named for the broker's logs; never joined (see read_published).
RESTORE_GROUP = "knm-watcher-restore"


def read_published(bus: KafkaBus, topic: str, *, timeout: float = 120.0) -> Published:
    """The facts topic folded per key, read from its beginning to its end as of now."""
    ends = {tp: end for tp, end in bus.end_offsets(topic).items() if end > 0}
    published = Published()
    if not ends:
        return published
    # Every partition assigned to this reader alone (no keys named): it reads, it does not
    # consume, so it joins no group and commits nothing. A group of its own cost a join
    # (the broker's initial rebalance delay, 3 s by default) at every start, and left
    # an empty group behind.
    consumer = bus.consumer(group=RESTORE_GROUP, topics=[topic], positions=from_beginning, keys={})
    deadline = time.monotonic() + timeout
    try:
        while ends:
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not read {topic} to its end in {timeout:.0f} s")
            records = consumer.poll(max_records=5000, timeout=0.5)
            published.add(record for record in records if record.position in ends)
            for record in records:
                if record.offset + 1 >= ends.get(record.position, 0):
                    ends.pop(record.position, None)
    finally:
        consumer.close()
    log.info(
        "read back what was published",
        extra={"facts": published.records, "objects": len(published.objects)},
    )
    return published


class LiveWatcherProcess:
    """Publishes the cluster's changes as the informer sees them: at start, what changed
    since the facts an earlier run published; then each change as it comes."""

    def __init__(
        self,
        *,
        informer: Informer,
        settings: Settings,
        annotator: PodAnnotator | None = None,
        ingress: ServiceIngress | None = None,
    ) -> None:
        self._bus = kafka_bus(settings, client_id="knm-watcher")
        self._annotator = annotator
        self._ingress = ingress
        self._writeback: WriteBack | None = None
        self._stop_writeback = threading.Event()
        self._publisher = self._bus.publisher()
        self._topics = settings.topics()
        self._informer = informer
        self._watcher: Watcher | None = None
        # A publish that failed leaves changes unpublished: the next step retries them
        # even if the cluster is quiet meanwhile.
        self._pending = False
        self.published = 0

    def start(self) -> None:
        if self._watcher is None:
            published = read_published(self._bus, self._topics.facts)
            self._informer.start()
            self._watcher = Watcher(
                source=self._informer,
                publisher=self._publisher,
                topics=self._topics,
                clock=utcnow,
                published=published,
            )
            self._pending = True
        if self._annotator is not None and self._writeback is None:
            consumer = self._bus.consumer(
                group=f"{self._topics.prefix}writeback", topics=[self._topics.intents]
            )
            self._writeback = WriteBack(
                consumer=consumer, annotator=self._annotator, ingress=self._ingress
            )
            threading.Thread(
                target=self._write_back, args=(self._writeback,), name="writeback", daemon=True
            ).start()

    def _write_back(self, writeback: WriteBack) -> None:
        """Annotate pods with their interfaces until closed; failures wait and retry."""
        delay = 0.5
        while not self._stop_writeback.is_set():
            try:
                writeback.step(timeout=0.5)
                delay = 0.5
            except Exception as error:
                log.warning("write-back failed; retrying", extra={"error": str(error)[:300]})
                self._stop_writeback.wait(delay)
                delay = min(delay * 2, 10.0)

    def step(self, *, timeout: float = 0.0) -> int:
        assert self._watcher is not None, "started first"
        if not self._informer.wait(timeout) and not self._pending:
            return 0
        self._pending = True
        published = self._watcher.publish_changes()
        self._pending = False
        self.published += published
        return published

    def close(self) -> None:
        self._informer.stop()
        self._stop_writeback.set()
        self._publisher.close()

    def health(self) -> Health:
        return Health(
            service="watcher",
            ready=lambda: self._watcher is not None,
            counters=lambda: {
                "facts_published_total": self.published,
                "pods_annotated_total": self._writeback.annotated if self._writeback else 0,
                "ingresses_written_total": self._writeback.ingresses if self._writeback else 0,
                **self._informer.counters.as_dict(),
            },
        )


class AllocatorProcess:
    """The allocator, and beside it in a thread the relay publishing its outbox (their
    waits on the database and the bus overlap)."""

    def __init__(self, *, settings: Settings) -> None:
        self._engine = database(settings)
        self.allocator = Allocator(
            engine=self._engine,
            bus=kafka_bus(settings, client_id="knm-allocator"),
            settings=settings.network(),
            topics=settings.topics(),
            batch_size=settings.batch_size,
        )
        self._stop_relay = threading.Event()
        self._relay = threading.Thread(
            target=self.allocator.relay.run, args=(self._stop_relay,), name="relay", daemon=True
        )

    def start(self) -> None:
        self.allocator.start()
        if not self._relay.is_alive():
            self._relay.start()

    def step(self, *, timeout: float = 0.0) -> int:
        return self.allocator.step(timeout=timeout)

    def close(self) -> None:
        self._stop_relay.set()
        self.allocator.relay.nudge()
        if self._relay.is_alive():
            self._relay.join(timeout=30)
        self.allocator.close()
        self._engine.dispose()

    def health(self) -> Health:
        allocator = self.allocator
        return Health(
            service="allocator",
            ready=lambda: allocator.ready,
            counters=lambda: {
                "facts_applied_total": allocator.applied,
                "facts_skipped_total": allocator.skipped,
                "dead_letters_total": allocator.dead_lettered,
                "messages_relayed_total": allocator.relay.relayed,
            },
        )


APPLIER_BACKENDS = ("native", "contrail")


def contrail_backend(settings: Settings, *, url: str | None = None) -> ContrailBackend:
    """The contrail backend on KNM_CONTRAIL_API_URL (or `url`)."""
    try:
        client = VncClient(url=url or settings.contrail_api_url, token=settings.contrail_auth_token)
    except ValueError as error:
        raise ConfigurationError(str(error)) from None
    return ContrailBackend(
        client=client,
        cluster=settings.contrail_cluster,
        pod_pools=settings.pod_pools,
        service_pools=settings.service_pools,
    )


class ApplierProcess:
    def __init__(self, *, settings: Settings, backend: str = "native") -> None:
        if backend not in APPLIER_BACKENDS:
            raise ConfigurationError(
                f"unknown applier backend {backend!r}: choose from {', '.join(APPLIER_BACKENDS)}"
            )
        contrail = backend == "contrail"
        self.applier = Applier(
            bus=kafka_bus(settings, client_id="knm-applier"),
            topics=settings.topics(),
            gateway=str(settings.gateway),
            backend=contrail_backend(settings) if contrail else None,
            resync_interval=settings.contrail_resync_seconds if contrail else None,
            sync_every_intent=contrail,
        )

    def start(self) -> None:
        self.applier.start()

    def step(self, *, timeout: float = 0.0) -> int:
        return self.applier.step(timeout=timeout)

    def close(self) -> None:
        self.applier.close()

    def health(self) -> Health:
        applier = self.applier
        return Health(
            service="applier",
            ready=lambda: not applier.replaying,
            counters=lambda: {
                "intents_applied_total": applier.applied,
                "dead_letters_total": applier.undecodable,
            },
        )


DATAPLANES = ("recording", "linux", "contrail")
# 1500 bytes of underlay less VXLAN's 50 bytes of headers.
OVERLAY_MTU = 1450


def agent_dataplane(
    kind: str, *, node: str, netns: str | None, vrouter_url: str | None = None
) -> Dataplane:
    """The agent's dataplane: `recording` records what it would do; `linux` wires pods
    into the node's namespace (`netns`: a named one, else the agent's own); `contrail`
    wires them the same way and registers their ports with the Contrail vrouter agent at
    `vrouter_url`."""
    if kind == "recording":
        if netns is not None:
            raise ConfigurationError("a node namespace is for the linux dataplane")
        return RecordingDataplane()
    if kind == "linux":
        # Imported here: netlink's library takes half a second to import, which every
        # other knm command would pay.
        from services.agent.linux.dataplane import LinuxDataplane
        from services.agent.linux.vrouter import Vrouter
        from services.agent.linux.wiring import PodWiring

        # Pods' MTU is the overlay's, so a packet to another node fits its encapsulation
        # without depending on path-MTU discovery.
        return LinuxDataplane(
            wiring=PodWiring(node_netns=netns, mtu=OVERLAY_MTU),
            vrouter=Vrouter(node=node, netns=netns, vxlan_mtu=OVERLAY_MTU),
        )
    if kind == "contrail":
        from services.agent.contrail.dataplane import ContrailDataplane
        from services.agent.contrail.ports import HttpPortApi
        from services.agent.linux.wiring import PodWiring

        return ContrailDataplane(
            wiring=PodWiring(node_netns=netns, mtu=OVERLAY_MTU),
            ports=HttpPortApi(url=vrouter_url or "http://127.0.0.1:9091"),
        )
    raise ConfigurationError(f"unknown dataplane {kind!r}: choose from {', '.join(DATAPLANES)}")


class AgentProcess:
    """The agent and, with `cni_socket`, the socket the node's `knm-cni` talks to."""

    def __init__(
        self,
        *,
        settings: Settings,
        node: str,
        dataplane: Dataplane | None = None,
        cni_socket: str | None = None,
    ) -> None:
        self.dataplane = dataplane if dataplane is not None else RecordingDataplane()
        self.agent = Agent(
            node=node,
            bus=kafka_bus(settings, client_id=f"knm-agent-{node}"),
            topics=settings.topics(),
            dataplane=self.dataplane,
        )
        self.cni = CniServer(path=cni_socket, handler=self.agent) if cni_socket else None

    def start(self) -> None:
        self.agent.start()
        if self.cni is not None:
            self.cni.start()

    def step(self, *, timeout: float = 0.0) -> int:
        return self.agent.step(timeout=timeout)

    def close(self) -> None:
        # The agent first: CNI requests still waiting are told to retry, then the
        # socket closes.
        self.agent.close()
        if self.cni is not None:
            self.cni.close()

    def state(self) -> Mapping[str, Any]:
        program = self.agent.program
        return {
            "node": self.agent.node,
            "replaying": self.agent.replaying,
            "interfaces": [
                {
                    "pod_uid": i.pod_uid,
                    "namespace": i.namespace,
                    "name": i.name,
                    "ip": i.ip,
                    "network": i.network,
                }
                for i in sorted(self.agent.interfaces.values(), key=lambda i: i.pod_uid)
            ],
            "sandboxes": len(self.agent.sandboxes),
            "vips": len(program.vips),
            "networks": len(program.networks),
            "overlay_revision": self.agent.overlay.revision,
        }

    def health(self) -> Health:
        agent = self.agent
        return Health(
            service="agent",
            ready=lambda: not agent.replaying,
            counters=lambda: {
                "interfaces": len(agent.interfaces),
                "dead_letters_total": agent.undecodable,
            },
            state=self.state,
        )


def manifest_source(paths: Sequence[Path], *, nodes: int, settings: Settings) -> Source:
    return ManifestSource(list(paths), nodes=nodes, underlay=settings.node_underlay)
