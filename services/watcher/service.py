"""The watcher: observe a source, publish what changed as facts."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import uuid
from typing import Protocol

from knm.core.bus.protocol import OutgoingMessage, Publisher
from knm.core.clock import Clock
from knm.core.events.base import Event, envelope
from knm.core.events.codec import encode
from knm.core.topics import Topics
from services.watcher.errors import BadManifestError
from services.watcher.published import Published
from services.watcher.source import Change, ObservedObject, diff

log = logging.getLogger("knm.watcher")

# Fixed forever: event ids derived from it must come out the same after a restart.
EVENT_IDS = uuid.UUID("5d0a8c4b-2e71-5f9a-8b36-c1e4f07d9a52")


class Source(Protocol):
    def snapshot(self) -> list[ObservedObject]:
        """Every object the source sees now; raises BadManifestError when it cannot tell."""


def event_id(*, key: str, event: Event, previous: uuid.UUID | None) -> uuid.UUID:
    """The id of the fact `event` about `key`, published after the fact `previous`.

    A function of the content, so that a restarted watcher publishing what it published
    before produces the same ids, which consumers skip as duplicates. The previous id of
    the same key takes part so that a return to an earlier state (labels changed and
    changed back, an object deleted and made again) gets a new id: the content alone
    would repeat an id consumers have already applied, and they would skip it.
    """
    payload = json.dumps(event.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(payload.encode()).hexdigest()
    chain = str(previous) if previous is not None else ""
    return uuid.uuid5(EVENT_IDS, f"{key}\n{event.TYPE}\n{digest}\n{chain}")


class Watcher:
    def __init__(
        self,
        *,
        source: Source,
        publisher: Publisher,
        topics: Topics,
        clock: Clock,
        settle: bool = False,
        published: Published | None = None,
    ) -> None:
        """With `settle`, a change is published only once two reads in a row agree on it:
        a manifest caught halfway through being written (an editor saving, `cat >`) would
        otherwise be published as the deletion of everything not yet written.

        `published` is what an earlier run published (read back from the facts topic):
        the first read is diffed against it, so a restart publishes only what changed."""
        self._source = source
        self._settle = settle
        self._pending: list[ObservedObject] | None = None
        self._read_once = False
        self._publisher = publisher
        self._topics = topics
        self._clock = clock
        self._published: dict[str, ObservedObject] = dict(published.objects) if published else {}
        # The last event id per key, kept after deletions too: see `event_id`.
        self._last_ids: dict[str, uuid.UUID] = dict(published.last_ids) if published else {}
        self._last_error: str | None = None

    def publish_changes(self) -> int:
        """Publish the facts that changed since the last call; how many were published.

        Raises BadManifestError (having published nothing) when the source cannot be read.
        """
        snapshot = self._source.snapshot()
        changes = diff(self._published, snapshot)
        if changes and self._settle and self._read_once and snapshot != self._pending:
            self._pending = snapshot
            log.debug("%d changes seen, publishing once the next read agrees", len(changes))
            return 0
        self._pending = None
        self._read_once = True
        if changes:
            messages, ids = self._messages(changes)
            self._publisher.publish(messages)
            self._last_ids.update(ids)
        self._published = {obj.key: obj for obj in snapshot}
        log.log(
            logging.INFO if changes else logging.DEBUG,
            "published %d facts",
            len(changes),
            extra={"published": len(changes), "objects": len(snapshot)},
        )
        return len(changes)

    def run(self, stop: threading.Event, *, interval: float) -> None:
        """Publish, then re-read every `interval` seconds until `stop` is set.

        A first read that fails raises; a later one logs why, keeps what was published,
        and tries again at the next interval.
        """
        self.publish_changes()
        while not stop.wait(interval):
            try:
                self.publish_changes()
            except BadManifestError as exc:
                # Once per distinct problem: a file being edited stays broken for a while.
                if exc.message != self._last_error:
                    log.error(
                        "cannot read the manifests, keeping the last snapshot: %s",
                        exc.message,
                        extra={"error": exc.message},
                    )
                self._last_error = exc.message
            else:
                if self._last_error is not None:
                    log.info("the manifests read cleanly again", extra={"error": None})
                self._last_error = None

    def _messages(
        self, changes: list[Change]
    ) -> tuple[list[OutgoingMessage], dict[str, uuid.UUID]]:
        now = self._clock()
        ids: dict[str, uuid.UUID] = {}
        messages: list[OutgoingMessage] = []
        for change in changes:
            previous = ids.get(change.key, self._last_ids.get(change.key))
            ids[change.key] = event_id(key=change.key, event=change.event, previous=previous)
            message = envelope(
                change.event,
                key=change.key,
                occurred_at=now,
                id=ids[change.key],
                source_version=change.source_version,
            )
            messages.append(
                OutgoingMessage(
                    topic=self._topics.facts, key=change.partition_key, value=encode(message)
                )
            )
        return messages, ids
