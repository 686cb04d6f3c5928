"""Bearer tokens, checked against SHA-256 digests: the configuration holds no token, and
the comparison takes the same time whichever digest, if any, matches."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable, Sequence
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

UNAUTHORIZED = "a valid bearer token is required (Authorization: Bearer <token>)"
CHALLENGE = {"WWW-Authenticate": "Bearer"}

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    description="A token whose SHA-256 digest is in KNM_AUDIT_TOKEN_HASHES.",
)


class Tokens:
    def __init__(self, digests: Sequence[str]) -> None:
        self._digests = [bytes.fromhex(digest) for digest in digests]

    def fingerprint(self, token: str) -> str | None:
        """The matching digest's first 12 hex digits (what logs may name), or None.

        Every digest is compared, each in constant time, so the time taken says nothing
        about which one matched or how much of one did.
        """
        # Header values arrive decoded as Latin-1: this gives back the bytes sent.
        presented = hashlib.sha256(token.encode("latin-1", errors="replace")).digest()
        found: str | None = None
        for digest in self._digests:
            if hmac.compare_digest(presented, digest) and found is None:
                found = digest.hex()[:12]
        return found


def token_required(tokens: Tokens) -> Callable[..., Awaitable[None]]:
    """The dependency every /v1 route has: 401 unless a configured token is presented.

    It runs before the route's parameters are checked, so a caller without a token
    learns nothing, not even whether its request was well formed.
    """

    async def require(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> None:
        found = tokens.fingerprint(credentials.credentials) if credentials else None
        if found is None:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, UNAUTHORIZED, headers=CHALLENGE)
        request.state.token = found

    return require
