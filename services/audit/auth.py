"""Bearer tokens, checked against SHA-256 digests: the configuration holds no token, and
the comparison takes the same time whichever digest, if any, matches."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

from fastapi import HTTPException, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.requests import HTTPConnection

from services.audit.strict import DeclaredQueries

UNAUTHORIZED = "a valid bearer token is required (Authorization: Bearer <token>)"
CHALLENGE = {"WWW-Authenticate": "Bearer"}


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


class Guard(HTTPBearer):
    """The one dependency every /v1 route has, documented as the `bearer` scheme: 401
    unless a configured token is presented, then 422 for a query parameter the route does
    not take (see strict.py).

    It runs before the route's parameters are checked, so a caller without a token
    learns nothing, not even whether its request was well formed. One dependency, not
    one per check: FastAPI's cost per request grows with each.
    """

    def __init__(self, tokens: Tokens, declared: DeclaredQueries) -> None:
        super().__init__(
            auto_error=False,
            scheme_name="bearer",
            description="A token whose SHA-256 digest is in KNM_AUDIT_TOKEN_HASHES.",
        )
        self._tokens = tokens
        self._declared = declared

    async def __call__(self, request: HTTPConnection) -> HTTPAuthorizationCredentials | None:
        credentials = await super().__call__(request)
        found = self._tokens.fingerprint(credentials.credentials) if credentials else None
        if found is None:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, UNAUTHORIZED, headers=CHALLENGE)
        request.state.token = found
        self._declared.check(request)
        return credentials
