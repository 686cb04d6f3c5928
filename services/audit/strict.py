"""Query parameters a route does not take are refused (422), not ignored: a misspelt
`?form=` would otherwise answer a different question than the one asked."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.requests import HTTPConnection


class DeclaredQueries:
    """What a route takes is what the OpenAPI document says it takes."""

    def __init__(self, app: FastAPI) -> None:
        self._app = app
        self._taken: dict[str, frozenset[str]] = {}

    def check(self, request: HTTPConnection) -> None:
        if not request.scope["query_string"]:
            return
        if not self._taken:
            # Read when first needed: the routes are all registered by then.
            for path, operations in self._app.openapi()["paths"].items():
                self._taken[path] = frozenset(
                    parameter["name"]
                    for operation in operations.values()
                    for parameter in operation.get("parameters", ())
                    if parameter["in"] == "query"
                )
        route = getattr(request.scope.get("route"), "path", None)
        names = self._taken.get(route, frozenset()) if route else frozenset()
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
