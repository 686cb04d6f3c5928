"""The native backend: compile dirty nodes, publish the pieces of their programs that
changed, withdraw the pieces no longer wanted.

What the agents were sent is the vrouter topic itself: on start the service replays it
into `recall`, so a restarted applier publishes only what differs from it (nothing, when
nothing changed while it was away) and withdraws what nobody wants any more.
"""

from __future__ import annotations

import logging

from knm.core.bus.protocol import OutgoingMessage, Publisher
from knm.core.events.base import Event, envelope
from knm.core.events.codec import encode
from knm.core.events.vrouter import (
    NetworkMembersConfigured,
    NetworkMembersWithdrawn,
    OverlayConfigured,
    VipConfigured,
    VipWithdrawn,
    VrouterConfigured,
    VrouterNodeConfigured,
    VrouterPiece,
)
from knm.core.topics import OVERLAY_KEY, Topics, piece_of_key
from services.applier.backend import Cause
from services.applier.model import DesiredModel, Dirty
from services.applier.native import (
    SharedParts,
    build_node,
    compile_overlay,
    node_pieces,
    withdrawal,
)

log = logging.getLogger("knm.applier")

# A piece an earlier version sent inside a whole program: the agents hold it, but the
# topic will not once the node's own piece replaces that program, so it is sent again.
_RESEND = None


class NativeBackend:
    def __init__(self, *, publisher: Publisher, topics: Topics, gateway: str) -> None:
        self._publisher = publisher
        self._topics = topics
        self._gateway = gateway
        # Per node, per bus key: the piece the agents were last sent.
        self._published: dict[str, dict[str, VrouterPiece | None]] = {}
        self._overlay_revision: str | None = None
        self._shared: SharedParts | None = None
        # Nodes known only from the topic: looked at once, in the first sync.
        self._recalled: set[str] = set()

    def recall(self, key: str, payload: Event) -> None:
        """What an earlier run published under `key` (the newest per key wins)."""
        match payload:
            case OverlayConfigured():
                self._overlay_revision = payload.revision
            case VrouterConfigured():
                self._published[payload.node] = dict.fromkeys(node_pieces(payload), _RESEND)
                self._recalled.add(payload.node)
            case NetworkMembersWithdrawn() | VipWithdrawn():
                self._published.get(payload.node, {}).pop(key, None)
            case VrouterNodeConfigured() | NetworkMembersConfigured() | VipConfigured():
                self._published.setdefault(payload.node, {})[key] = payload
                self._recalled.add(payload.node)
            case _:
                pass

    def sync(self, model: DesiredModel, dirty: Dirty, *, cause: Cause) -> None:
        if self._shared is None:
            self._shared = SharedParts(model)
        shared = self._shared
        shared.forget_members()
        nodes = sorted(dirty.nodes | self._recalled)
        outgoing: list[tuple[str, VrouterPiece | OverlayConfigured]] = []
        updates: dict[str, dict[str, VrouterPiece | None]] = {}
        for node in nodes:
            pieces = node_pieces(build_node(model, node, gateway=self._gateway, shared=shared))
            before = self._published.get(node, {})
            for key, piece in pieces.items():
                if before.get(key) != piece:
                    outgoing.append((key, piece))
            outgoing += [(key, withdrawal(key)) for key in sorted(before.keys() - pieces.keys())]
            updates[node] = dict(pieces)
        overlay = compile_overlay(model) if dirty.overlay else None
        if overlay is not None and overlay.revision == self._overlay_revision:
            overlay = None
        if overlay is not None:
            outgoing.append((OVERLAY_KEY, overlay))
        if outgoing:
            self._publisher.publish(
                [
                    OutgoingMessage(
                        topic=self._topics.vrouter,
                        key=key,
                        # A node's pieces travel together and in order: one partition.
                        partition_key=None if key == OVERLAY_KEY else piece_of_key(key)[0],
                        value=encode(
                            envelope(
                                payload,
                                key=key if key == OVERLAY_KEY else f"vrouter/{key}",
                                occurred_at=cause.occurred_at,
                                causation_id=cause.event_id,
                            )
                        ),
                    )
                    for key, payload in outgoing
                ]
            )
        # Remembered only once the bus accepted them, so that a failed publish is
        # published again when the service retries the sync.
        self._published.update(updates)
        self._recalled.clear()
        if overlay is not None:
            self._overlay_revision = overlay.revision
        if outgoing:
            log.info(
                "vrouter pieces published",
                extra={
                    "nodes": len({key.split("/", 1)[0] for key, _ in outgoing} - {OVERLAY_KEY}),
                    "pieces": len(outgoing),
                    "overlay": overlay is not None,
                    "causation_id": str(cause.event_id),
                },
            )

    def close(self) -> None:
        self._publisher.close()
