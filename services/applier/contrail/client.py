"""The VNC config API through the official client library, with knm's retries.

The library retries by itself, sleeping a whole second per attempt and up to thirty
times, inside the call; knm turns that off (`_Vnc`) and retries with its own backoff on
5xx answers and connection errors, so a flaky server costs milliseconds, not seconds,
and a server that stays down fails the reconcile, which the applier repeats later.
Non-idempotent calls are made safe to repeat here: a create whose answer was lost finds
its object on the retry (409) and returns it; a delete whose answer was lost finds it
gone (404).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

import requests
from vnc_api import vnc_api as vnc
from vnc_api.exceptions import (
    HttpError,
    NoIdError,
    RefsExistError,
    ServiceUnavailableError,
    TimeOutError,
)

log = logging.getLogger("knm.applier.contrail")

T = TypeVar("T")
WRITE_CALLS = frozenset({"create", "update", "delete", "ref-update"})


class _Vnc(vnc.VncApi):  # type: ignore[misc]
    """The library's client without its blocking retries (knm's own wrap every call)."""

    def _request(  # noqa: PLR0917 (the library's signature)
        self,
        op: int,
        url: str,
        data: Any = None,
        retry_on_error: bool = True,
        retry_after_authn: bool = False,
        retry_count: int = 30,
    ) -> Any:
        del retry_on_error, retry_count
        return super()._request(
            op,
            url,
            data=data,
            retry_on_error=False,
            retry_after_authn=retry_after_authn,
            retry_count=0,
        )


class ContrailUnavailableError(Exception):
    """The config API kept failing through every retry."""


def _retryable(error: BaseException) -> bool:
    if isinstance(error, requests.exceptions.RequestException | ServiceUnavailableError):
        return True
    if isinstance(error, TimeOutError):
        return True
    if isinstance(error, HttpError) and not isinstance(error, NoIdError | RefsExistError):
        return int(getattr(error, "status_code", 0) or 0) >= 500
    return False


class VncClient:
    """The calls the reconciler makes; each retried with exponential backoff."""

    def __init__(
        self,
        *,
        url: str,
        token: str | None = None,
        attempts: int = 12,
        backoff: float = 0.02,
        max_backoff: float = 2.0,
        timeout: float = 30.0,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not a VNC API URL: {url!r} (http://host:8082)")
        self._url = url
        self._token = token
        self._attempts = attempts
        self._backoff = backoff
        self._max_backoff = max_backoff
        self._timeout = timeout
        self._api: Any | None = None
        # Calls that reached the server and were answered, by kind.
        self.calls: Counter[str] = Counter()
        self.retries = 0

    @property
    def writes(self) -> int:
        return sum(n for kind, n in self.calls.items() if kind in WRITE_CALLS)

    def _connect(self) -> Any:
        parts = urlsplit(self._url)
        return _Vnc(
            api_server_host=parts.hostname,
            api_server_port=str(parts.port or 8082),
            api_server_use_ssl=parts.scheme == "https",
            auth_type="noauth",
            auth_token=self._token,
            timeout=self._timeout,
            connection_timeout=min(self._timeout, 5.0),
            # No configuration file from the machine: knm's settings say everything.
            conf_file="/dev/null",
        )

    def _retry(self, kind: str, call: Callable[[Any], T]) -> T:
        delay = self._backoff
        for attempt in range(1, self._attempts + 1):
            try:
                if self._api is None:
                    self._api = self._connect()
                result = call(self._api)
            except Exception as error:
                if not _retryable(error) or attempt == self._attempts:
                    if _retryable(error):
                        raise ContrailUnavailableError(
                            f"{kind}: still failing after {attempt} attempts: {error!r}"
                        ) from error
                    raise
                self.retries += 1
                log.debug("retrying %s after %r", kind, error)
                time.sleep(delay)
                delay = min(delay * 2, self._max_backoff)
                continue
            self.calls[kind] += 1
            return result
        raise AssertionError("unreachable")

    # ---- reads ---------------------------------------------------------------------------

    def list(self, type_name: str) -> list[Any]:
        """Every object of the type, with properties and references."""
        return self._retry("list", lambda api: api.resource_list(type_name, detail=True))

    def read(self, type_name: str, fq_name: tuple[str, ...]) -> Any | None:
        def read(api: Any) -> Any | None:
            try:
                return _method(api, type_name, "read")(fq_name=list(fq_name))
            except NoIdError:
                return None

        return self._retry("read", read)

    # ---- writes --------------------------------------------------------------------------

    def create(self, obj: Any) -> Any | None:
        """Create `obj`; if its fq_name exists (a lost answer, or someone else's), return
        what is there instead (None: it vanished meanwhile)."""
        type_name = obj.get_type()

        def create(api: Any) -> Any | None:
            try:
                _method(api, type_name, "create")(obj)
            except RefsExistError:
                try:
                    return _method(api, type_name, "read")(fq_name=obj.get_fq_name())
                except NoIdError:
                    return None
            return None

        return self._retry("create", create)

    def update(self, obj: Any) -> None:
        self._retry("update", lambda api: _method(api, obj.get_type(), "update")(obj))

    def ref_update(  # noqa: PLR0917
        self,
        type_name: str,
        uuid: str,
        ref_type: str,
        ref_fq_name: tuple[str, ...],
        operation: str,
        attr: Any = None,
    ) -> None:
        self._retry(
            "ref-update",
            lambda api: api.ref_update(
                type_name, uuid, ref_type, None, list(ref_fq_name), operation, attr
            ),
        )

    def delete(self, type_name: str, uuid: str) -> bool:
        """Delete; False when the server refuses (children or references remain)."""

        def delete(api: Any) -> bool:
            try:
                _method(api, type_name, "delete")(id=uuid)
            except NoIdError:
                return True
            except RefsExistError as error:
                log.warning("delete of %s %s refused: %s", type_name, uuid, error)
                return False
            return True

        return self._retry("delete", delete)


def _method(api: Any, type_name: str, operation: str) -> Callable[..., Any]:
    """The library's per-type method, e.g. `virtual_network_create`."""
    method: Callable[..., Any] = getattr(api, f"{type_name.replace('-', '_')}_{operation}")
    return method
