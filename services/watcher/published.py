"""What the watcher published before it restarted, read back from its own facts.

The facts topic is the watcher's log: folded per key, it says which objects the watcher
last reported and how (and the id of each key's last fact, which the next one chains
from). A restarted watcher diffs the cluster against this instead of against nothing,
so it publishes only what changed while it was away, not every object again.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field

from knm.core.bus.protocol import Record
from knm.core.events.codec import UndecodableError, decode
from services.watcher.objects import ObservedFact
from services.watcher.source import ObservedObject

log = logging.getLogger("knm.watcher")


@dataclass
class Published:
    """The last fact per key: objects still observed, and each key's last event id."""

    objects: dict[str, ObservedObject] = field(default_factory=dict)
    last_ids: dict[str, uuid.UUID] = field(default_factory=dict)
    records: int = 0

    def add(self, records: Iterable[Record]) -> None:
        """Fold these records (in offset order per partition) into the state."""
        for record in records:
            self.records += 1
            try:
                message = decode(record.value)
            except UndecodableError as error:
                # Not the watcher's (or from a newer one): it cannot be what we published.
                log.warning("skipped an undecodable fact", extra={"reason": error.reason})
                continue
            key = message.key
            self.last_ids[key] = message.id
            if isinstance(message.payload, ObservedFact):
                self.objects[key] = ObservedObject(
                    key, record.key or "", message.payload, message.source_version
                )
            else:
                self.objects.pop(key, None)
