"""Encoding envelopes to bytes and back, refusing what this reader cannot understand."""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import ValidationError

from knm.core.events.base import Envelope, Event, typed_envelope
from knm.core.events.commands import COMMANDS
from knm.core.events.facts import FACTS
from knm.core.events.intents import INTENTS
from knm.core.events.vrouter import VROUTER

SCHEMAS: dict[str, type[Event]] = {
    schema.TYPE: schema for schema in (*FACTS, *INTENTS, *COMMANDS, *VROUTER)
}


class UndecodableError(Exception):
    """A message this reader cannot use; `reason` says why in one line."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class MalformedMessageError(UndecodableError):
    pass


class UnknownEventTypeError(UndecodableError):
    pass


class UnsupportedVersionError(UndecodableError):
    pass


def encode(message: Envelope) -> bytes:
    return message.model_dump_json().encode()


_TYPE_FIELD = re.compile(rb'^\{"id":"[^"]*","type":"([A-Za-z]+)","version":(\d+),')
_TYPED = {name: typed_envelope(schema) for name, schema in SCHEMAS.items()}


def decode(raw: bytes) -> Envelope:
    """The message, with its payload typed; raises an UndecodableError saying why not."""
    # Fast path for what knm itself wrote: the type is read off the front, and pydantic
    # parses the rest straight from the bytes. Anything else takes the careful path.
    head = _TYPE_FIELD.match(raw)
    if head is not None:
        typed = _TYPED.get(head.group(1).decode())
        schema = SCHEMAS.get(head.group(1).decode())
        if typed is not None and schema is not None and int(head.group(2)) <= schema.VERSION:
            try:
                return typed.model_validate_json(raw)
            except ValidationError:
                pass
    return _decode_carefully(raw)


def _decode_carefully(raw: bytes) -> Envelope:
    try:
        document: Any = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MalformedMessageError(f"not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise MalformedMessageError("not a JSON object")
    kind = document.get("type")
    schema = SCHEMAS.get(kind) if isinstance(kind, str) else None
    if schema is None:
        raise UnknownEventTypeError(f"unknown event type {kind!r}")
    version = document.get("version")
    if not isinstance(version, int) or version < 1:
        raise MalformedMessageError(f"{kind}: version {version!r} is not a positive integer")
    if version > schema.VERSION:
        raise UnsupportedVersionError(
            f"{kind} version {version} is newer than this reader's {schema.VERSION}"
        )
    try:
        return _TYPED[schema.TYPE].model_validate(document)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "message"
        raise MalformedMessageError(f"{kind}: {where}: {first['msg']}") from None
