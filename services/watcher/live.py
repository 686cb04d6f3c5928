"""The Kubernetes API as the watcher reads it: list each kind, then watch it from the
list's resourceVersion. `informer` keeps these into an up-to-date cache.

Both calls read raw JSON: the client's models cost far more to build than knm reads from
them, and its watch helper hides the ERROR event that says 410 Gone.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from kubernetes import client

from services.watcher.errors import InvalidObjectError
from services.watcher.objects import APPS, CORE, DISCOVERY, NETWORKING, fact_of, parse_object
from services.watcher.source import Change, ObservedObject, deletion_of, observed

log = logging.getLogger("knm.watcher")


@dataclass(frozen=True, slots=True)
class Resource:
    api_version: str
    kind: str
    plural: str


RESOURCES: tuple[Resource, ...] = (
    Resource(CORE, "Namespace", "namespaces"),
    Resource(CORE, "Node", "nodes"),
    Resource(CORE, "Pod", "pods"),
    Resource(CORE, "ReplicationController", "replicationcontrollers"),
    Resource(APPS, "ReplicaSet", "replicasets"),
    Resource(APPS, "Deployment", "deployments"),
    Resource(APPS, "StatefulSet", "statefulsets"),
    Resource(APPS, "DaemonSet", "daemonsets"),
    Resource(CORE, "Service", "services"),
    # Published as facts; nothing consumes them yet (the allocator skips them).
    Resource(DISCOVERY, "EndpointSlice", "endpointslices"),
    Resource(NETWORKING, "NetworkPolicy", "networkpolicies"),
)


@dataclass(frozen=True, slots=True)
class Listing:
    objects: list[ObservedObject]
    # Where a watch picks up from.
    resource_version: str


@dataclass(frozen=True, slots=True)
class WatchEvent:
    resource_version: str
    # None for a bookmark, which only moves the resource version on.
    change: Change | None


class ExpiredError(Exception):
    """410 Gone: the resourceVersion a watch asked for is older than the server keeps."""


class Api(Protocol):
    def list(self, resource: Resource) -> Listing: ...

    def watch(
        self, resource: Resource, *, resource_version: str, timeout_seconds: int
    ) -> Iterator[WatchEvent]: ...

    def close(self) -> None: ...


class LiveSource:
    """The API server behind a kubernetes ApiClient (kubeconfig or in-cluster)."""

    def __init__(self, api_client: Any, *, request_timeout: float = 30.0) -> None:
        core = client.CoreV1Api(api_client)
        apps = client.AppsV1Api(api_client)
        discovery = client.DiscoveryV1Api(api_client)
        networking = client.NetworkingV1Api(api_client)
        self._request_timeout = request_timeout
        # Watches in progress, so that `close` can end them at once.
        self._watches: set[Any] = set()
        self._lock = threading.Lock()
        self._listers: dict[str, Callable[..., Any]] = {
            "namespaces": core.list_namespace,
            "nodes": core.list_node,
            "pods": core.list_pod_for_all_namespaces,
            "replicationcontrollers": core.list_replication_controller_for_all_namespaces,
            "replicasets": apps.list_replica_set_for_all_namespaces,
            "deployments": apps.list_deployment_for_all_namespaces,
            "statefulsets": apps.list_stateful_set_for_all_namespaces,
            "daemonsets": apps.list_daemon_set_for_all_namespaces,
            "services": core.list_service_for_all_namespaces,
            "endpointslices": discovery.list_endpoint_slice_for_all_namespaces,
            "networkpolicies": networking.list_network_policy_for_all_namespaces,
        }

    def list(self, resource: Resource) -> Listing:
        """Every object of the resource, and the resourceVersion to watch from."""
        response = self._listers[resource.plural](
            _preload_content=False, _request_timeout=self._request_timeout
        )
        try:
            body = json.loads(response.data)
        finally:
            response.release_conn()
        objects = [
            found
            for raw in body.get("items") or []
            if (found := observe_item(raw, resource=resource))
        ]
        return Listing(objects, str(body["metadata"]["resourceVersion"]))

    def watch(
        self, resource: Resource, *, resource_version: str, timeout_seconds: int = 300
    ) -> Iterator[WatchEvent]:
        """The resource's changes after `resource_version` until the server ends the watch
        (after about `timeout_seconds`). Raises ExpiredError when that version is too old,
        and the client's errors (urllib3, ApiException) when the connection fails."""
        response = self._listers[resource.plural](
            watch=True,
            resource_version=resource_version,
            allow_watch_bookmarks=True,
            timeout_seconds=timeout_seconds,
            _preload_content=False,
            # A read that waits this long has lost its server: bookmarks come every minute.
            _request_timeout=(self._request_timeout, timeout_seconds + 90),
        )
        with self._lock:
            self._watches.add(response)
        try:
            for line in _lines(response):
                yield from _watch_event(json.loads(line), resource, resource_version)
        finally:
            with self._lock:
                self._watches.discard(response)
            response.release_conn()

    def close(self) -> None:
        """End the watches in progress: a thread blocked reading one gets an error now
        rather than at the server's timeout."""
        with self._lock:
            watches = list(self._watches)
        for response in watches:
            sock = getattr(getattr(response, "connection", None), "sock", None)
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


def _lines(response: Any) -> Iterator[bytes]:
    buffer = b""
    for chunk in response.stream(amt=65536, decode_content=True):
        buffer += chunk
        *complete, buffer = buffer.split(b"\n")
        yield from (line for line in complete if line.strip())
    if buffer.strip():
        yield buffer


def _watch_event(event: dict[str, Any], resource: Resource, since: str) -> Iterator[WatchEvent]:
    kind, raw = event.get("type"), event.get("object") or {}
    if kind == "ERROR":
        if raw.get("code") == 410:
            raise ExpiredError(str(raw.get("message", "resourceVersion too old")))
        raise client.ApiException(status=raw.get("code"), reason=str(raw.get("message")))
    version = str(raw.get("metadata", {}).get("resourceVersion", since))
    if kind == "BOOKMARK":
        yield WatchEvent(version, None)
        return
    found = observe_item(raw, resource=resource)
    if found is None:
        return
    if kind == "DELETED":
        yield WatchEvent(version, deletion_of(found, source_version=version))
    else:
        yield WatchEvent(version, found)


def observe_item(raw: dict[str, Any], *, resource: Resource) -> ObservedObject | None:
    """An object of `resource` as served by the API; None (logged) when knm refuses it."""
    # The API serves list items without their kind.
    typed = {**raw, "apiVersion": resource.api_version, "kind": resource.kind}
    try:
        parsed = parse_object(typed)
        if parsed is None:
            return None
        for note in parsed.ignored:
            log.warning("%s", note, extra={"resource": resource.plural})
        return observed(fact_of(parsed.object), source_version=parsed.object.meta.resource_version)
    except InvalidObjectError as exc:
        # The API server validated it already; what knm refuses, it skips and says so.
        log.warning("skipped: %s", exc.message, extra={"resource": resource.plural})
        return None
