"""What every `knm` command shares: one-line errors with exit codes, settings, options."""

from __future__ import annotations

import sys
from collections.abc import Callable
from enum import StrEnum
from functools import wraps
from typing import Annotated, Any, ParamSpec, TypeVar

import typer
from pydantic import ValidationError

from knm.core.settings import Settings
from knm.core.store.database import SchemaMismatchError
from knm.runtime.process import ConfigurationError
from services.watcher.errors import BadManifestError

P = ParamSpec("P")
R = TypeVar("R")

BAD_INPUT = 2
FAILURE = 1


class BadInputError(Exception):
    """The user's input cannot be honoured: one line, exit code 2."""


class OutputFormat(StrEnum):
    TABLE = "table"
    JSON = "json"


def fail(code: int, message: str) -> typer.Exit:
    print(f"knm: {message}", file=sys.stderr)
    return typer.Exit(code)


def reported(command: Callable[P, R]) -> Callable[P, R]:
    """One line on stderr instead of a traceback; 2 for bad input, 1 for our failures."""

    @wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except typer.Exit:
            raise
        except (BadManifestError, BadInputError, ConfigurationError, SchemaMismatchError) as error:
            raise fail(BAD_INPUT, str(error).splitlines()[0]) from None
        except ValidationError as error:
            first = error.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            raise fail(BAD_INPUT, f"invalid setting {where}: {first['msg']}") from None
        except Exception as error:
            raise fail(FAILURE, f"{type(error).__name__}: {error}".splitlines()[0]) from None

    return wrapper


def settings(**overrides: Any) -> Settings:
    """KNM_ environment variables, with what flags said on top."""
    return Settings(**{key: value for key, value in overrides.items() if value is not None})


FormatOption = Annotated[OutputFormat, typer.Option("--format", help="table or json.")]
DatabaseOption = Annotated[
    str | None, typer.Option("--database-url", help="Default: KNM_DATABASE_URL.")
]
KafkaOption = Annotated[
    str | None, typer.Option("--kafka-bootstrap", help="Default: KNM_KAFKA_BOOTSTRAP.")
]
PrefixOption = Annotated[
    str | None, typer.Option("--topic-prefix", help="Default: KNM_TOPIC_PREFIX (knm.).")
]
HealthPortOption = Annotated[
    int | None,
    typer.Option(
        "--health-port",
        envvar="KNM_HEALTH_PORT",
        help="Serve /healthz, /readyz, /metrics on this port (0: any free port).",
    ),
]
HealthHostOption = Annotated[
    str, typer.Option("--health-host", envvar="KNM_HEALTH_HOST", help="Address to serve on.")
]
