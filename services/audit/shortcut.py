"""The busiest questions (who held an address at an instant, an address's history, a
pod's history) answered without FastAPI's per-request machinery.

Profiled under load, FastAPI's routing, dependency resolution and parameter validation
cost more CPU than the database and the answer together. This middleware answers a
well-formed, authorized GET of those three routes itself: the same parsers, the same
token check, the same statements and the same JSON as the routes in v1.py. Anything
else (no token or a wrong one, a value that does not parse, a parameter the route does
not take, a repeated one, another method) goes on to FastAPI, whose routes give every
such answer the OpenAPI document describes (401, 422, ...). So this path only ever
gives the answers FastAPI's routes give to the same requests; the tests run the
endpoints' suite both ways.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from urllib.parse import parse_qsl

import psycopg2
from fastapi import FastAPI
from fastapi.routing import APIRoute
from pydantic_core import to_json
from sqlalchemy.exc import DBAPIError
from starlette.types import ASGIApp, Receive, Scope, Send

from services.audit.auth import Tokens
from services.audit.params import HISTORY_LIMIT_DEFAULT, HISTORY_LIMIT_MAX
from services.audit.parsing import (
    InvalidValueError,
    check_label,
    check_subdomain,
    ip_text,
    parse_time,
)
from services.audit.queries.addresses import (
    ADDRESS_LINES,
    HOLDER_AT,
    address_history_fields,
    holder_fields,
    nobody_held,
)
from services.audit.queries.objects import POD_LINES, pod_history_fields
from services.audit.readers import Reader

log = logging.getLogger("knm.audit")

HOLDER = "/v1/ips/{ip}/holder"
ADDRESS_HISTORY = "/v1/ips/{ip}/history"
POD_HISTORY = "/v1/pods/{namespace}/{name}/history"

# (status, JSON body)
Answer = tuple[int, bytes]
Question = Callable[[], Awaitable[Answer]]


class DeclinedError(Exception):
    """Not a request this path answers: FastAPI's routes take it."""


class Shortcut:
    """ASGI middleware in front of FastAPI's routes (inside RequestMetrics, which times
    and logs every request whichever way it is answered)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        fastapi: FastAPI,
        reader: Reader,
        tokens: Tokens,
        unavailable: str,
    ) -> None:
        self._app = app
        self._reader = reader
        self._tokens = tokens
        self._unavailable = unavailable
        # The routes' own objects: the metrics label requests by their template.
        self._routes = {
            route.path: route for route in fastapi.routes if isinstance(route, APIRoute)
        }
        for path in (HOLDER, ADDRESS_HISTORY, POD_HISTORY):
            if path not in self._routes:
                raise ValueError(f"no route {path} to stand in front of")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "GET" or scope.get("root_path"):
            await self._app(scope, receive, send)
            return
        try:
            template, question = self._question(scope)
            token = self._authorized(scope)
        except DeclinedError:
            await self._app(scope, receive, send)
            return
        scope["route"] = self._routes[template]
        state = scope.get("state")
        if state is None:
            state = scope["state"] = {}
        # What the access log names (see auth.Guard).
        state["token"] = token
        try:
            status, body = await question()
        except (psycopg2.Error, DBAPIError) as error:
            # As app.py's exception handlers answer it.
            original = error.orig if isinstance(error, DBAPIError) and error.orig else error
            log.error("database error", extra={"error": type(original).__name__})
            status, body = 503, _detail(self._unavailable)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-length", str(len(body)).encode("ascii")),
                    (b"content-type", b"application/json"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    def _authorized(self, scope: Scope) -> str:
        """The token's digest prefix, as auth.Guard finds it (HTTPBearer's parsing of the
        first Authorization header)."""
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, credentials = value.decode("latin-1").partition(" ")
                credentials = credentials.strip()
                if scheme.lower() != "bearer" or not credentials:
                    raise DeclinedError
                found = self._tokens.fingerprint(credentials)
                if found is None:
                    raise DeclinedError
                return found
        raise DeclinedError

    def _question(self, scope: Scope) -> tuple[str, Question]:
        parts = scope["path"].split("/")
        query = _query(scope["query_string"])
        try:
            if len(parts) == 5 and parts[1] == "v1" and parts[2] == "ips":
                if parts[4] == "holder":
                    return HOLDER, self._holder(parts[3], query)
                if parts[4] == "history":
                    return ADDRESS_HISTORY, self._address_history(parts[3], query)
            if len(parts) == 6 and parts[1:3] == ["v1", "pods"] and parts[5] == "history":
                return POD_HISTORY, self._pod_history(parts[3], parts[4], query)
        except InvalidValueError:
            raise DeclinedError from None
        raise DeclinedError

    def _holder(self, address: str, query: Mapping[str, str]) -> Question:
        if query.keys() != {"at"}:
            raise DeclinedError
        ip = ip_text(address)
        at = parse_time(query["at"])

        async def answer() -> Answer:
            found = holder_fields(await self._reader.rows(HOLDER_AT, ip=ip, at=at), ip=ip, at=at)
            if found is None:
                return 404, _detail(nobody_held(ip=ip, at=at))
            return 200, to_json(found)

        return answer

    def _address_history(self, address: str, query: Mapping[str, str]) -> Question:
        if not query.keys() <= {"from", "to", "limit"}:
            raise DeclinedError
        ip = ip_text(address)
        since = _time(query.get("from"))
        until = _time(query.get("to"))
        limit = _limit(query.get("limit"))

        async def answer() -> Answer:
            found = await self._reader.rows(ADDRESS_LINES, ip=ip)
            fields = address_history_fields(found, ip=ip, since=since, until=until, limit=limit)
            return 200, to_json(fields)

        return answer

    def _pod_history(self, namespace: str, name: str, query: Mapping[str, str]) -> Question:
        if not query.keys() <= {"limit"}:
            raise DeclinedError
        check_label(namespace, what="namespace")
        check_subdomain(name, what="pod name")
        limit = _limit(query.get("limit"))

        async def answer() -> Answer:
            found = await self._reader.rows(POD_LINES, namespace=namespace, name=name)
            fields = pod_history_fields(found, namespace=namespace, name=name, limit=limit)
            return 200, to_json(fields)

        return answer


def _query(raw: bytes) -> dict[str, str]:
    """The query string as Starlette reads it; a name given twice is declined (which of
    its values counts is FastAPI's to decide)."""
    if not raw:
        return {}
    pairs = parse_qsl(raw.decode("latin-1"), keep_blank_values=True)
    found = dict(pairs)
    if len(found) != len(pairs):
        raise DeclinedError
    return found


def _time(text: str | None) -> datetime | None:
    return None if text is None else parse_time(text)


def _limit(text: str | None) -> int:
    """Plain decimal digits within the cap; any other spelling is FastAPI's to judge."""
    if text is None:
        return HISTORY_LIMIT_DEFAULT
    if not (text.isascii() and text.isdigit()) or text[0] == "0":
        raise DeclinedError
    value = int(text)
    if value > HISTORY_LIMIT_MAX:
        raise DeclinedError
    return value


def _detail(text: str) -> bytes:
    """An error's body as FastAPI's handlers write it (Starlette's JSONResponse)."""
    return json.dumps(
        {"detail": text}, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")
    ).encode("utf-8")
