"""What the applier service drives: a backend that converges a controller to the model.

The native backend publishes vrouter programs for the agents; the Contrail backend (a
later issue) writes the VNC config API. Both get the same model and the same `Dirty`
after every batch, and must be idempotent: the service calls `sync` again with the same
dirty set when a previous call raised.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from knm.core.events.base import Event
from services.applier.model import DesiredModel, Dirty


@dataclass(frozen=True, slots=True)
class Cause:
    """The last intent consumed before a sync: what its results are stamped with."""

    event_id: uuid.UUID
    occurred_at: datetime


class Backend(Protocol):
    def recall(self, key: str, payload: Event) -> None:
        """A message of the vrouter topic, replayed on start: what an earlier run
        published. A backend whose output lives elsewhere ignores it."""

    def sync(self, model: DesiredModel, dirty: Dirty, *, cause: Cause) -> None:
        """Converge what `dirty` names to `model`; raise if that could not be done."""

    def close(self) -> None: ...
