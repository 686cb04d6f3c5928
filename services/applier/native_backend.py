"""The native backend: compile dirty nodes, publish the programs that changed."""

from __future__ import annotations

import logging

from knm.core.bus.protocol import OutgoingMessage, Publisher
from knm.core.events.base import Envelope, envelope
from knm.core.events.codec import encode
from knm.core.events.vrouter import OverlayConfigured, VrouterConfigured
from knm.core.topics import OVERLAY_KEY, Topics
from services.applier.backend import Cause
from services.applier.model import DesiredModel, Dirty
from services.applier.native import SharedParts, compile_node, compile_overlay

log = logging.getLogger("knm.applier")


class NativeBackend:
    def __init__(self, *, publisher: Publisher, topics: Topics, gateway: str) -> None:
        self._publisher = publisher
        self._topics = topics
        self._gateway = gateway
        # What the agents were last sent. A restart forgets it and republishes every
        # program once; agents skip a revision they already run.
        self._published: dict[str, str] = {}
        self._overlay_revision: str | None = None
        self._shared: SharedParts | None = None

    def sync(self, model: DesiredModel, dirty: Dirty, *, cause: Cause) -> None:
        if self._shared is None:
            self._shared = SharedParts(model)
        shared = self._shared
        shared.forget_members()
        programs = [
            program
            for program in (
                compile_node(model, node, gateway=self._gateway, shared=shared)
                for node in sorted(dirty.nodes)
            )
            if self._published.get(program.node) != program.revision
        ]
        overlay = compile_overlay(model) if dirty.overlay else None
        if overlay is not None and overlay.revision == self._overlay_revision:
            overlay = None
        outgoing: list[tuple[str, Envelope]] = [
            (
                program.node,
                envelope(
                    program,
                    key=f"vrouter/{program.node}",
                    occurred_at=cause.occurred_at,
                    causation_id=cause.event_id,
                ),
            )
            for program in programs
        ]
        if overlay is not None:
            outgoing.append(
                (
                    OVERLAY_KEY,
                    envelope(
                        overlay,
                        key=OVERLAY_KEY,
                        occurred_at=cause.occurred_at,
                        causation_id=cause.event_id,
                    ),
                )
            )
        if not outgoing:
            return
        self._publisher.publish(
            [
                OutgoingMessage(topic=self._topics.vrouter, key=bus_key, value=encode(message))
                for bus_key, message in outgoing
            ]
        )
        # Remembered only once the bus accepted them, so that a failed publish is
        # published again when the service retries the sync.
        for program in programs:
            self._published[program.node] = program.revision
        if overlay is not None:
            self._overlay_revision = overlay.revision
        log.info(
            "vrouter programs published",
            extra={
                "nodes": len(programs),
                "overlay": overlay is not None,
                "causation_id": str(cause.event_id),
            },
        )
        for _, message in outgoing:
            payload = message.payload
            assert isinstance(payload, VrouterConfigured | OverlayConfigured)
            log.debug(
                "vrouter program published",
                extra={
                    "event_id": str(message.id),
                    "key": message.key,
                    "type": message.type,
                    "revision": payload.revision,
                    "causation_id": str(cause.event_id),
                },
            )

    def close(self) -> None:
        self._publisher.close()
