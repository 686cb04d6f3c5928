"""Query parameters a route does not take are refused (422), not ignored: a misspelt
`?form=` would otherwise answer a different question than the one asked. So is a
parameter given twice: every one is a single value, and FastAPI would silently answer
for one of the two."""

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
        given = request.query_params
        unknown = sorted(set(given) - names)
        accepted = ", ".join(sorted(names)) or "none"
        errors = [
            {
                "type": "unknown_parameter",
                "loc": ("query", name),
                "msg": f"unknown query parameter {name!r}; this route takes: {accepted}",
                "input": given[name],
            }
            for name in unknown
        ]
        errors += [
            {
                "type": "repeated_parameter",
                "loc": ("query", name),
                "msg": f"query parameter {name!r} is given more than once; give it once",
                "input": given.getlist(name),
            }
            for name in sorted(set(given) & names)
            if len(given.getlist(name)) > 1
        ]
        if errors:
            raise RequestValidationError(errors)
