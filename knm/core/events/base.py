"""The envelope every message travels in, and the base of every event schema."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import ClassVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, SerializeAsAny, create_model


class Event(BaseModel):
    """A fact, an intent or a command. Named in the past tense; evolves by adding fields.

    `TYPE` names the schema on the wire; `VERSION` rises only for a change that old
    readers cannot absorb, and a reader refuses a version newer than its own.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    TYPE: ClassVar[str]
    VERSION: ClassVar[int] = 1


class Value(BaseModel):
    """A frozen part of an event."""

    model_config = ConfigDict(frozen=True, extra="ignore")


class Envelope(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: uuid.UUID
    type: str
    version: int
    # The object the event is about, e.g. "Pod/default/frontend-x7k2p".
    key: str
    # The object's version at the source (resourceVersion, manifest generation).
    source_version: str | None = None
    occurred_at: AwareDatetime
    correlation_id: uuid.UUID | None = None
    causation_id: uuid.UUID | None = None
    payload: SerializeAsAny[Event]


_TYPED: dict[type[Event], type[Envelope]] = {}


def typed_envelope(schema: type[Event]) -> type[Envelope]:
    """The Envelope whose payload is exactly `schema`: pydantic then parses a message of
    that type straight from its JSON, without a detour through Python objects."""
    typed = _TYPED.get(schema)
    if typed is None:
        typed = create_model(
            f"{schema.__name__}Envelope",
            __base__=Envelope,
            payload=(schema, ...),
        )
        _TYPED[schema] = typed
    return typed


def envelope(
    payload: Event,
    *,
    key: str,
    occurred_at: datetime,
    id: uuid.UUID | None = None,
    source_version: str | None = None,
    correlation_id: uuid.UUID | None = None,
    causation_id: uuid.UUID | None = None,
) -> Envelope:
    return typed_envelope(type(payload))(
        id=id or uuid.uuid4(),
        type=payload.TYPE,
        version=payload.VERSION,
        key=key,
        source_version=source_version,
        occurred_at=occurred_at,
        correlation_id=correlation_id,
        causation_id=causation_id,
        payload=payload,
    )
