"""Messages a consumer cannot read go to the dead-letter topic, with the reason."""

from __future__ import annotations

import logging

from knm.core.bus.protocol import OutgoingMessage, Record
from knm.core.topics import Topics

log = logging.getLogger("knm.deadletters")


def dead_letter(record: Record, *, reason: str, consumer: str, topics: Topics) -> OutgoingMessage:
    """The record as it came, headed with why it was refused, where from, and by whom."""
    log.warning(
        "message sent to dead letters",
        extra={
            "reason": reason,
            "consumer": consumer,
            "topic": record.topic,
            "partition": record.partition,
            "offset": record.offset,
            "key": record.key,
        },
    )
    return OutgoingMessage(
        topic=topics.dead_letters,
        key=record.key or "",
        value=record.value,
        headers=(
            ("knm-reason", reason.encode()),
            ("knm-origin", f"{record.topic}/{record.partition}/{record.offset}".encode()),
            ("knm-consumer", consumer.encode()),
        ),
    )
