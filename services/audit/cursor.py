"""Cursors of the change log: where a page ended, opaque to clients.

A cursor is the last line's `seq` as 8 big-endian bytes in unpadded base64url: exactly
11 characters, the first below 'g' (the sign bit is clear) and the last one of the 16
whose low bits base64 leaves empty. The pattern below admits exactly the strings that
decode, so the OpenAPI document describes every cursor the API accepts and no other.

Pages are stable under concurrent writes because the allocators write history lines
under one lock per batch (services/allocator/journal.py): a batch takes its `seq` values
and commits while holding it, so lines become visible in `seq` order and none can appear
later below a cursor already handed out.
"""

from __future__ import annotations

import base64
import re

from services.audit.parsing import InvalidValueError

PATTERN = r"^[A-Za-f][A-Za-z0-9_-]{9}[AEIMQUYcgkosw048]$"
_COMPILED = re.compile(PATTERN)
_WIDTH = 8


def encode(seq: int) -> str:
    return base64.urlsafe_b64encode(seq.to_bytes(_WIDTH, "big")).rstrip(b"=").decode()


def decode(text: str) -> int:
    if _COMPILED.fullmatch(text) is None:
        raise InvalidValueError(
            f"{text!r} is not a cursor of this API: pass back a `next_cursor` unchanged"
        )
    return int.from_bytes(base64.urlsafe_b64decode(text + "="), "big")
