"""The agent of one node: wire its pods, run the newest vrouter program on its dataplane.

It reads its commands and the vrouter topic from the beginning on every start, so a
restarted agent converges from the desired state whatever its dataplane held. Until it
has read up to where both topics ended at start it only folds what it reads (the newest
command per pod, the newest program), so a replay wires the final state without the
history's churn. Dataplane operations are idempotent, so replaying onto a dataplane that
already holds the state changes nothing. A failure propagates: the supervisor's restart
is the retry.
"""

from __future__ import annotations

import logging
import threading

from knm.core.bus.protocol import Bus, Consumer, Record, TopicPartition, from_beginning
from knm.core.deadletters import dead_letter
from knm.core.events.base import Envelope
from knm.core.events.codec import UndecodableError, decode
from knm.core.events.commands import AttachRequested, DetachRequested
from knm.core.events.vrouter import OverlayConfigured, VrouterConfigured
from knm.core.topics import OVERLAY_KEY, Topics
from services.agent.dataplane import Dataplane, PodInterface

log = logging.getLogger("knm.agent")


class Agent:
    def __init__(
        self,
        *,
        node: str,
        bus: Bus,
        topics: Topics,
        dataplane: Dataplane,
        group_prefix: str = "knm-agent",
        batch_size: int = 1000,
    ) -> None:
        self.node = node
        self._bus = bus
        self._topics = topics
        self._dataplane = dataplane
        # Every agent reads every partition: one group per node.
        self._group = f"{group_prefix}-{node}"
        self._batch_size = batch_size
        self._consumer: Consumer | None = None
        self._dead_letters = bus.publisher()
        self._horizon: dict[TopicPartition, int] = {}
        self._read: dict[TopicPartition, int] = {}
        self.replaying = True
        self.undecodable = 0
        # Commands read but not yet executed, the newest per pod, in arrival order.
        self._commands: dict[str, Envelope] = {}
        # The newest VrouterConfigured for this node, in its envelope (for the logs).
        self._config: Envelope | None = None
        self.overlay = OverlayConfigured(revision="")
        self._programmed: tuple[str, str] | None = None

    def start(self) -> None:
        topics = [self._topics.node_commands, self._topics.vrouter]
        self._horizon = {
            tp: end for topic in topics for tp, end in self._bus.end_offsets(topic).items()
        }
        self._consumer = self._bus.consumer(
            group=self._group, topics=topics, positions=from_beginning
        )

    def step(self, *, timeout: float = 0.0) -> int:
        """Apply one batch of commands and programs; returns the records consumed."""
        assert self._consumer is not None, "start() first"
        records = self._consumer.poll(max_records=self._batch_size, timeout=timeout)
        positions: dict[TopicPartition, int] = {}
        # A program replaces the one before it: only the newest of a batch is decoded.
        newest = {
            record.key: index
            for index, record in enumerate(records)
            if record.topic == self._topics.vrouter
        }
        for index, record in enumerate(records):
            positions[record.position] = record.offset + 1
            if record.topic == self._topics.vrouter and newest[record.key] != index:
                continue
            message = self._decode(record)
            if message is not None:
                self._take(message)
        self._read.update(positions)
        if self.replaying and self._replayed():
            self.replaying = False
            log.info("node state replayed", extra={"node": self.node, "pods": len(self._commands)})
        if not self.replaying:
            commands, self._commands = self._commands, {}
            for message in commands.values():
                self._execute(message)
            self._program()
        if positions:
            self._consumer.commit(positions)
        return len(records)

    def _take(self, message: Envelope) -> None:
        payload = message.payload
        match payload:
            case AttachRequested() | DetachRequested() if payload.node == self.node:
                # Only a pod's newest command counts: a pod created and deleted within
                # one batch (or one replay) is never wired.
                self._commands.pop(payload.pod_uid, None)
                self._commands[payload.pod_uid] = message
            case VrouterConfigured() if payload.node == self.node:
                self._config = message
            case OverlayConfigured():
                self.overlay = payload
            case _:
                pass

    def _replayed(self) -> bool:
        return all(self._read.get(tp, 0) >= end for tp, end in self._horizon.items())

    @property
    def config(self) -> VrouterConfigured | None:
        if self._config is None:
            return None
        assert isinstance(self._config.payload, VrouterConfigured)
        return self._config.payload

    def _decode(self, record: Record) -> Envelope | None:
        # Both topics are keyed by node: skip other nodes' messages without decoding them.
        if record.key not in (self.node, OVERLAY_KEY):
            return None
        try:
            return decode(record.value)
        except UndecodableError as error:
            self.undecodable += 1
            # A replay meets the poison of earlier runs again: it was dead-lettered then.
            if not self.replaying:
                self._dead_letters.publish(
                    [
                        dead_letter(
                            record, reason=error.reason, consumer=self._group, topics=self._topics
                        )
                    ]
                )
            return None

    def _execute(self, message: Envelope) -> None:
        command = message.payload
        extra = {"event_id": str(message.id), "key": message.key, "node": self.node}
        if isinstance(command, AttachRequested):
            self._dataplane.attach(PodInterface.of(command), None)
            log.info("interface attached", extra={**extra, "ip": command.ip})
        elif isinstance(command, DetachRequested):
            self._dataplane.detach(command.pod_uid)
            log.info("interface detached", extra=extra)

    def _program(self) -> None:
        # Without a program for this node there is nothing to route for; the applier
        # sends one as soon as the node has a pod.
        message, config = self._config, self.config
        if message is None or config is None:
            return
        revisions = (config.revision, self.overlay.revision)
        if revisions == self._programmed:
            return
        self._dataplane.program(config, self.overlay)
        self._programmed = revisions
        log.info(
            "vrouter programmed",
            extra={
                "event_id": str(message.id),
                "key": message.key,
                "node": self.node,
                "revision": config.revision,
                "overlay_revision": self.overlay.revision,
            },
        )

    def run(self, stop: threading.Event, *, poll_timeout: float = 0.5) -> None:
        while not stop.is_set():
            self.step(timeout=poll_timeout)

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
        self._dataplane.close()
        self._dead_letters.close()
