"""Query parameters a route does not take are refused (422), not ignored: a misspelt
`?form=` would otherwise answer a different question than the one asked."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError


def declared_queries_only(app: FastAPI) -> Callable[[Request], Awaitable[None]]:
    """What a route takes is what the OpenAPI document says it takes."""
    taken: dict[str, frozenset[str]] = {}

    async def check(request: Request) -> None:
        if not taken:
            for path, operations in app.openapi()["paths"].items():
                taken[path] = frozenset(
                    parameter["name"]
                    for operation in operations.values()
                    for parameter in operation.get("parameters", ())
                    if parameter["in"] == "query"
                )
        route = getattr(request.scope.get("route"), "path", None)
        names = taken.get(route, frozenset()) if route else frozenset()
        unknown = sorted(set(request.query_params) - names)
        if unknown:
            accepted = ", ".join(sorted(names)) or "none"
            raise RequestValidationError(
                [
                    {
                        "type": "unknown_parameter",
                        "loc": ("query", name),
                        "msg": f"unknown query parameter {name!r}; this route takes: {accepted}",
                        "input": request.query_params[name],
                    }
                    for name in unknown
                ]
            )

    return check
