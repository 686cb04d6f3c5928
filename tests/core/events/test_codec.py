from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from knm.core.events.base import envelope
from knm.core.events.codec import (
    SCHEMAS,
    MalformedMessageError,
    UnknownEventTypeError,
    UnsupportedVersionError,
    decode,
    encode,
)
from knm.core.events.commands import COMMANDS
from knm.core.events.facts import FACTS, OwnerReference, PodObserved
from knm.core.events.intents import INTENTS
from knm.core.events.vrouter import VROUTER

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def pod() -> PodObserved:
    return PodObserved(
        uid="u",
        namespace="default",
        name="web-1",
        node="node-1",
        labels={"name": "web"},
        owners=(OwnerReference(kind="ReplicationController", name="web", uid="rc"),),
    )


def test_an_envelope_round_trips_with_its_typed_payload() -> None:
    message = envelope(pod(), key="Pod/default/web-1", occurred_at=NOW, source_version="7")
    decoded = decode(encode(message))
    assert decoded == message
    assert isinstance(decoded.payload, PodObserved)
    assert decoded.payload.owners[0].name == "web"


def test_events_are_frozen() -> None:
    with pytest.raises(ValidationError):
        pod().name = "other"  # type: ignore[misc]


def test_every_schema_name_is_past_tense_and_unique() -> None:
    # Counted over the schema lists: the registry, a dict, would hide a clash.
    names = [schema.TYPE for schema in (*FACTS, *INTENTS, *COMMANDS, *VROUTER)]
    assert sorted(names) == sorted(set(names))
    assert len(SCHEMAS) == len(names)
    for name in SCHEMAS:
        assert name.endswith(("ed", "wn")), name  # -ed, or Withdrawn


def test_unknown_fields_from_a_newer_writer_are_ignored() -> None:
    document = json.loads(encode(envelope(pod(), key="k", occurred_at=NOW)))
    document["payload"]["added_later"] = {"any": "thing"}
    decoded = decode(json.dumps(document).encode())
    assert isinstance(decoded.payload, PodObserved)


@pytest.mark.parametrize(
    ("raw", "error", "match"),
    [
        (b"\xff\x00", MalformedMessageError, "not JSON"),
        (b"[1, 2]", MalformedMessageError, "not a JSON object"),
        (b'{"type": "PodExploded", "version": 1}', UnknownEventTypeError, "PodExploded"),
        (b'{"type": "PodObserved", "version": 2}', UnsupportedVersionError, "newer"),
        (b'{"type": "PodObserved", "version": "x"}', MalformedMessageError, "version"),
    ],
)
def test_undecodable_messages_say_why(raw: bytes, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        decode(raw)


def test_a_payload_missing_a_field_is_malformed() -> None:
    document = json.loads(encode(envelope(pod(), key="k", occurred_at=NOW)))
    del document["payload"]["uid"]
    document["id"] = str(uuid.uuid4())
    with pytest.raises(MalformedMessageError, match="uid"):
        decode(json.dumps(document).encode())


def test_a_message_from_another_writer_decodes_the_same_as_ours() -> None:
    message = envelope(pod(), key="Pod/default/web-1", occurred_at=NOW)
    document = json.loads(encode(message))
    # Another producer may order fields otherwise and indent: the careful path reads it.
    reordered = {
        "payload": document["payload"],
        **{k: v for k, v in document.items() if k != "payload"},
    }
    foreign = json.dumps(reordered, indent=2).encode()
    assert decode(foreign) == decode(encode(message)) == message


def test_a_newer_version_is_refused_even_when_its_payload_would_parse() -> None:
    document = json.loads(encode(envelope(pod(), key="k", occurred_at=NOW)))
    document["version"] = 2
    with pytest.raises(UnsupportedVersionError):
        decode(json.dumps(document, separators=(",", ":")).encode())
